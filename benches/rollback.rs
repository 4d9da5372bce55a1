//! How fast `copilot rollback` puts the previous release back after a
//! completed blue-green deployment: on the local provider, and on the
//! emulated Fly, Render and Kubernetes of the tests (through Prism, like
//! every request to them in the tests) and ECS in moto. Prints figures; no
//! assertion. `cargo bench --bench rollback` (COPILOT_BENCH_ROUNDS, default
//! 5; COPILOT_BENCH_ONLY=kubernetes, or local, fly, ecs, render, runs one).
//!
//! On the local provider and the emulated Fly it then runs `copilot drill
//! rollback` (a build of the live release answering half its API requests
//! with 500, caught by the arena's probe analysis with 2 s bakes) and
//! prints its detection, decision, execution and total against seed 003's
//! critical targets.

use std::process::Command;
use std::time::Instant;

/// What the emulated Fly needs from the test harness.
mod common {
    pub const PASSED_THROUGH: &[&str] = &["PATH"];
    pub fn free_port() -> u16 {
        super::free_port()
    }
    /// `copilot-service`, which the workspace builds beside `copilot`.
    pub fn service_bin() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_BIN_EXE_copilot")).with_file_name("copilot-service")
    }
}

#[allow(dead_code)]
#[path = "../tests/fly_emulator.rs"]
mod fly_emulator;

#[allow(dead_code)]
#[path = "../tests/ecs_emulator.rs"]
mod ecs_emulator;

#[allow(dead_code)]
#[path = "../tests/render_emulator.rs"]
mod render_emulator;

#[allow(dead_code)]
#[path = "../tests/kube_emulator.rs"]
mod kube_emulator;

fn copilot(root: &std::path::Path, args: &[&str]) -> serde_json::Value {
    copilot_with(root, args, &[])
}

fn copilot_with(
    root: &std::path::Path,
    args: &[&str],
    env: &[(&'static str, String)],
) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_copilot"))
        .arg("--root")
        .arg(root)
        .args(["--output", "json"])
        .args(args)
        .env("COPILOT_ACTOR", "bench")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
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

fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn report(what: &str, wall: &mut [f64], switch: &mut [f64]) {
    let (wmin, wmed, wmax) = stats(wall);
    let (smin, smed, smax) = stats(switch);
    println!("{what}");
    println!(
        "  whole command (process start to exit): min {wmin:.0} ms, median {wmed:.0} ms, max {wmax:.0} ms"
    );
    println!(
        "  traffic switch:                        min {smin:.1} ms, median {smed:.1} ms, max {smax:.1} ms"
    );
}

/// The analysis a drill is caught by: probes, the 5xx rule of seed 003.
const DRILL_ANALYSIS: &str = "  analysis:\n    interval: 30s\n    min_samples: 20\n    metrics:\n      - { name: error_rate, max: 0.05, window: 5m, on_fail: rollback }\n";

/// Run `rounds` rollback drills on `arena` (something live in it, its
/// analysis in place) and print the medians of each phase.
fn drills(
    root: &std::path::Path,
    arena: &str,
    env: &[(&'static str, String)],
    rounds: usize,
    what: &str,
) {
    let mut phases: [(&str, Vec<f64>); 4] = [
        ("detection", Vec::new()),
        ("decision", Vec::new()),
        ("execution", Vec::new()),
        ("total", Vec::new()),
    ];
    let mut targets = [0.0; 4];
    let (mut requests, mut failed) = (0, 0);
    for _ in 0..rounds {
        let doc = copilot_with(root, &["drill", "rollback", arena, "--bake", "2s"], env);
        let d = &doc["drill"];
        for (i, (_, v)) in phases.iter_mut().enumerate() {
            v.push(d["timings"][i]["measured_ms"].as_f64().unwrap_or(f64::NAN));
            targets[i] = d["timings"][i]["target_ms"].as_f64().unwrap_or(f64::NAN);
        }
        requests += d["seen"]["requests"].as_u64().unwrap_or(0);
        failed += d["seen"]["failed"].as_u64().unwrap_or(0);
    }
    println!("rollback drill, {rounds} rounds ({what}; seed 003's critical targets)");
    for (i, (phase, v)) in phases.iter_mut().enumerate() {
        let (min, med, max) = stats(v);
        println!(
            "  {phase:<10} min {min:>7.0} ms, median {med:>7.0} ms, max {max:>7.0} ms  (target < {:.0} s)",
            targets[i] / 1000.0
        );
    }
    println!("  through the arena's URL: {requests} probes, {failed} failed");
}

/// A provider's bench, by name, taking the number of rounds.
type Bench = (&'static str, fn(usize));

fn main() {
    let rounds: usize = std::env::var("COPILOT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    // COPILOT_BENCH_ONLY=kubernetes (or local, fly, ecs, render) runs one.
    let only = std::env::var("COPILOT_BENCH_ONLY").ok();
    let runs = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let providers: [Bench; 5] = [
        ("local", local),
        ("fly", fly),
        ("ecs", ecs),
        ("render", render),
        ("kubernetes", kubernetes),
    ];
    for (name, bench) in providers {
        if runs(name) {
            bench(rounds);
        }
    }
}

/// Blue-green on the emulated Kubernetes API server (through Prism): the
/// standby Deployment still runs, so the rollback is one merge patch of
/// the Service's selector.
fn kubernetes(rounds: usize) {
    let ns = "bench";
    let kube = kube_emulator::KubeEmulator::start(ns, &["shop"]);
    let mut env = kube.env();
    env.push(("BENCH_WEBHOOK_SECRET", "bench".into()));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    copilot(root, &["init", root.to_str().unwrap()]);
    for f in ["staging", "canary", "production", "hotfix", "preview"] {
        let _ = std::fs::remove_file(root.join(format!("arenas/{f}.yaml")));
    }
    std::fs::write(
        root.join("arenas/k8s.yaml"),
        format!(
            "name: k8s\ntier: staging\nprovider: {{ kind: kubernetes, context: emulated, namespace: {ns}, deployment: shop, url: \"{}\", instances: 2 }}\n\
             strategy:\n  kind: blue-green\n  steps: [{{ weight: 100 }}]\n\
             env:\n  values: {{ SHOPIFY_API_VERSION: \"2026-10\", DATABASE_URL: \"sqlite://copilot.db\" }}\n  secrets: {{ SHOPIFY_WEBHOOK_SECRET: \"env:BENCH_WEBHOOK_SECRET\" }}\n",
            kube.url(ns, "shop")
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
                &format!("registry.example.com/shop:{v}"),
            ],
        );
    }
    let (mut wall, mut switch) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for v in ["v1", "v2"] {
            copilot_with(root, &["deploy", "k8s", "--release", v], &env);
        }
        let t = Instant::now();
        let doc = copilot_with(root, &["rollback", "k8s", "--reason", "bench"], &env);
        wall.push(t.elapsed().as_secs_f64() * 1000.0);
        switch.push(doc["switch_ms"].as_f64().unwrap_or(f64::NAN));
        copilot(root, &["unlock", "k8s"]);
    }
    copilot_with(root, &["down", "k8s"], &env);
    report(
        &format!(
            "rollback after a completed deployment, {rounds} rounds (emulated Kubernetes API server through Prism: the Service's selector flipped to the standby Deployment)"
        ),
        &mut wall,
        &mut switch,
    );
}

/// Blue-green on the emulated Render: the rollback is Render's own
/// (`POST /services/{id}/rollback`), which starts the older deploy's image
/// again and swaps once it passes its health check.
fn render(rounds: usize) {
    let render = render_emulator::RenderEmulator::start(
        &["copilot-bench"],
        &[],
        "docker.io/acme/copilot",
        &[("SHOPIFY_WEBHOOK_SECRET", "bench")],
    );
    let env = render.env();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    copilot(root, &["init", root.to_str().unwrap()]);
    for f in ["staging", "canary", "production", "hotfix", "preview"] {
        let _ = std::fs::remove_file(root.join(format!("arenas/{f}.yaml")));
    }
    std::fs::write(
        root.join("arenas/render.yaml"),
        "name: render\ntier: staging\nprovider: { kind: render, service: copilot-bench, instances: 1 }\n\
         strategy:\n  kind: blue-green\n  steps: [{ weight: 100 }]\n\
         env:\n  values: { SHOPIFY_API_VERSION: \"2026-10\", DATABASE_URL: \"sqlite://copilot.db\" }\n\
         \x20 secrets: { SHOPIFY_WEBHOOK_SECRET: \"render:SHOPIFY_WEBHOOK_SECRET\" }\n",
    )
    .unwrap();
    for v in ["v1", "v2"] {
        copilot(
            root,
            &[
                "release",
                "create",
                "--image",
                &format!("docker.io/acme/copilot:{v}"),
            ],
        );
    }
    let (mut wall, mut switch) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for v in ["v1", "v2"] {
            copilot_with(root, &["deploy", "render", "--release", v], &env);
        }
        let t = Instant::now();
        let doc = copilot_with(root, &["rollback", "render", "--reason", "bench"], &env);
        wall.push(t.elapsed().as_secs_f64() * 1000.0);
        switch.push(doc["switch_ms"].as_f64().unwrap_or(f64::NAN));
        copilot(root, &["unlock", "render"]);
    }
    copilot_with(root, &["down", "render"], &env);
    report(
        &format!(
            "rollback after a completed deployment, {rounds} rounds (emulated Render through Prism: Render's rollback, followed to live; each status lasts 250 ms there)"
        ),
        &mut wall,
        &mut switch,
    );
}

/// Blue-green on ECS in moto: 2 tasks per colour, the standby's still running;
/// the switch is one `ModifyListener` and the weights read back.
fn ecs(rounds: usize) {
    use ecs_emulator::{Aws, CLUSTER, SERVICE, WEBHOOK_SECRET_NAME};
    let aws = Aws::start(false);
    let env = aws.env();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    copilot(root, &["init", root.to_str().unwrap()]);
    for f in ["staging", "canary", "production", "hotfix", "preview"] {
        let _ = std::fs::remove_file(root.join(format!("arenas/{f}.yaml")));
    }
    std::fs::write(
        root.join("arenas/ecs.yaml"),
        format!(
            "name: ecs\ntier: staging\n\
             provider:\n  kind: ecs\n  region: us-east-1\n  cluster: {CLUSTER}\n  service: {SERVICE}\n\
             \x20 listener: {listener}\n  target_groups: {{ blue: {CLUSTER}-blue, green: {CLUSTER}-green }}\n\
             \x20 url: {url}\n  instances: 2\n\
             strategy:\n  kind: blue-green\n  steps: [{{ weight: 100 }}]\n\
             env:\n  values: {{ SHOPIFY_API_VERSION: \"2026-10\", DATABASE_URL: \"sqlite://copilot.db\" }}\n\
             \x20 secrets: {{ SHOPIFY_WEBHOOK_SECRET: \"aws-sm:{WEBHOOK_SECRET_NAME}\" }}\n",
            listener = aws.listener_arn,
            url = aws.alb_url,
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
                &format!("123456789012.dkr.ecr.us-east-1.amazonaws.com/copilot:{v}"),
            ],
        );
    }
    let (mut wall, mut switch) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for v in ["v1", "v2"] {
            copilot_with(root, &["deploy", "ecs", "--release", v], &env);
        }
        let t = Instant::now();
        let doc = copilot_with(root, &["rollback", "ecs", "--reason", "bench"], &env);
        wall.push(t.elapsed().as_secs_f64() * 1000.0);
        switch.push(doc["switch_ms"].as_f64().unwrap_or(f64::NAN));
        assert_eq!(doc["redeployed"], false);
        copilot(root, &["unlock", "ecs"]);
    }
    report(
        &format!(
            "rollback after a completed blue-green deployment, {rounds} rounds (ECS in moto: one ModifyListener, the weights read back)"
        ),
        &mut wall,
        &mut switch,
    );
}

/// Blue-green on the emulated Fly: 2 machines per colour, the standby cordoned.
fn fly(rounds: usize) {
    let fly = fly_emulator::FlyEmulator::start(&[(
        "copilot-bench",
        &[("SHOPIFY_WEBHOOK_SECRET", "bench")],
    )]);
    let env = fly.env();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    copilot(root, &["init", root.to_str().unwrap()]);
    for f in ["staging", "canary", "production", "hotfix", "preview"] {
        let _ = std::fs::remove_file(root.join(format!("arenas/{f}.yaml")));
    }
    std::fs::write(
        root.join("arenas/fly.yaml"),
        format!(
            "name: fly\ntier: staging\nprovider: {{ kind: fly, app: copilot-bench, region: dfw, instances: 2, url: \"{url}\" }}\n\
             strategy:\n  kind: blue-green\n  steps: [{{ weight: 100 }}]\n\
             env:\n  values: {{ SHOPIFY_API_VERSION: \"2026-10\", DATABASE_URL: \"sqlite://copilot.db\" }}\n\
             \x20 secrets: {{ SHOPIFY_WEBHOOK_SECRET: \"fly:SHOPIFY_WEBHOOK_SECRET\" }}\n",
            url = fly.app_url("copilot-bench"),
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
                &format!("registry.fly.io/copilot:{v}"),
            ],
        );
    }
    let (mut wall, mut switch) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for v in ["v1", "v2"] {
            copilot_with(root, &["deploy", "fly", "--release", v], &env);
        }
        let t = Instant::now();
        let doc = copilot_with(root, &["rollback", "fly", "--reason", "bench"], &env);
        wall.push(t.elapsed().as_secs_f64() * 1000.0);
        switch.push(doc["switch_ms"].as_f64().unwrap_or(f64::NAN));
        assert_eq!(doc["redeployed"], false);
        copilot(root, &["unlock", "fly"]);
    }
    let yaml = std::fs::read_to_string(root.join("arenas/fly.yaml")).unwrap();
    std::fs::write(
        root.join("arenas/fly.yaml"),
        yaml.replace(
            "  steps: [{ weight: 100 }]\n",
            &format!("  steps: [{{ weight: 100 }}]\n{DRILL_ANALYSIS}"),
        ),
    )
    .unwrap();
    drills(
        root,
        "fly",
        &env,
        rounds,
        "emulated Fly through Prism, 2 machines a colour",
    );
    copilot_with(root, &["down", "fly"], &env);
    report(
        &format!(
            "rollback after a completed blue-green deployment, {rounds} rounds (emulated Fly through Prism: uncordon 2 machines, cordon 2, each under its lease)"
        ),
        &mut wall,
        &mut switch,
    );
}

fn local(rounds: usize) {
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
    let yaml = std::fs::read_to_string(root.join("arenas/stage.yaml")).unwrap();
    std::fs::write(
        root.join("arenas/stage.yaml"),
        yaml.replace("bake: 5m }]\n", &format!("bake: 5m }}]\n{DRILL_ANALYSIS}")),
    )
    .unwrap();
    drills(
        root,
        "stage",
        &[],
        rounds,
        "local provider, blue-green 10 -> 50 -> 100",
    );
    copilot(root, &["down", "stage"]);
    copilot(root, &["down", "local"]);
    report(
        &format!(
            "rollback after a completed blue-green promotion, {rounds} rounds (local provider, SQLite ledger)"
        ),
        &mut wall,
        &mut switch,
    );
}
