//! How fast `copilot rollback` puts the previous release back after a
//! completed blue-green promotion on the local provider. Prints figures; no
//! assertion. `cargo bench --bench rollback` (COPILOT_BENCH_ROUNDS, default 5).

use std::process::Command;
use std::time::Instant;

fn copilot(root: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_copilot"))
        .arg("--root")
        .arg(root)
        .args(["--output", "json"])
        .args(args)
        .env("COPILOT_ACTOR", "bench")
        .output()
        .expect("copilot runs");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn main() {
    let rounds: usize = std::env::var("COPILOT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    copilot(root, &["init", root.to_str().unwrap()]);
    let (local, stage) = (free_port(), free_port());
    let yaml = std::fs::read_to_string(root.join("arenas/local.yaml")).unwrap();
    std::fs::write(
        root.join("arenas/local.yaml"),
        yaml.replace("port: 7400", &format!("port: {local}"))
            .replace("127.0.0.1:7400", &format!("127.0.0.1:{local}")),
    )
    .unwrap();
    std::fs::write(
        root.join("arenas/stage.yaml"),
        format!(
            "name: stage\ntier: staging\npromotes_from: local\nprovider: {{ kind: local, port: {stage} }}\n\
             strategy:\n  kind: blue-green\n  steps: [{{ weight: 10, bake: 5m }}, {{ weight: 50, bake: 5m }}, {{ weight: 100, bake: 5m }}]\n\
             env:\n  values: {{ APP_URL: \"http://127.0.0.1:{stage}\", SHOPIFY_API_VERSION: \"2026-10\", DATABASE_URL: \"sqlite://.copilot/local/stage.db\" }}\n"
        ),
    )
    .unwrap();
    for v in ["v1", "v2"] {
        copilot(
            root,
            &[
                "release",
                "create",
                "--image",
                &format!("copilot-service:{v}"),
            ],
        );
    }
    let mut wall = Vec::new();
    let mut switch = Vec::new();
    for _ in 0..rounds {
        for v in ["v1", "v2"] {
            copilot(root, &["deploy", "local", "--release", v]);
            copilot(
                root,
                &["promote", "local", "stage", "--yes", "--bake", "100ms"],
            );
        }
        let t = Instant::now();
        let doc = copilot(root, &["rollback", "stage", "--reason", "bench"]);
        wall.push(t.elapsed().as_secs_f64() * 1000.0);
        switch.push(doc["switch_ms"].as_f64().unwrap_or(f64::NAN));
        assert_eq!(doc["redeployed"], false);
        copilot(root, &["unlock", "stage"]);
    }
    copilot(root, &["down", "stage"]);
    copilot(root, &["down", "local"]);
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() / 2], v[v.len() - 1])
    };
    let (wmin, wmed, wmax) = stats(&mut wall);
    let (smin, smed, smax) = stats(&mut switch);
    println!(
        "rollback after a completed blue-green promotion, {rounds} rounds (local provider, SQLite ledger)"
    );
    println!(
        "  whole command (process start to exit): min {wmin:.0} ms, median {wmed:.0} ms, max {wmax:.0} ms"
    );
    println!(
        "  traffic switch at the router:          min {smin:.1} ms, median {smed:.1} ms, max {smax:.1} ms"
    );
}
