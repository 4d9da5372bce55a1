//! The local provider: copilot-service processes behind the weighted router,
//! driven by `copilot deploy` and `copilot down`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use copilot_core::provider::{Op, Provider, Slot};
use copilot_provider_local::LocalProvider;
use serde_json::Value;

use crate::common::Project;

/// A project whose local arena listens on a free port; `down` runs on drop.
struct LocalArena {
    p: Project,
    port: u16,
}

impl LocalArena {
    fn new() -> LocalArena {
        let p = Project::init();
        let port = crate::common::free_port();
        p.edit("arenas/local.yaml", "port: 7400", &format!("port: {port}"));
        p.edit(
            "arenas/local.yaml",
            "APP_URL: http://127.0.0.1:7400",
            &format!("APP_URL: http://127.0.0.1:{port}"),
        );
        for v in ["v1", "v2"] {
            p.copilot([
                "release",
                "create",
                "--image",
                &format!("copilot-service:{v}"),
            ])
            .assert()
            .success();
        }
        LocalArena { p, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for LocalArena {
    fn drop(&mut self) {
        let _ = self.p.copilot(["down", "local"]).output();
    }
}

/// A command built from the arena's project, run off the runtime's threads;
/// it must succeed.
async fn run_ok<F>(arena: &Arc<LocalArena>, command: F) -> std::process::Output
where
    F: FnOnce(&Project) -> assert_cmd::Command + Send + 'static,
{
    let a = arena.clone();
    let out = tokio::task::spawn_blocking(move || command(&a.p).output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `copilot deploy local --release RELEASE`; it must succeed.
async fn deploy(arena: &Arc<LocalArena>, release: &'static str) {
    run_ok(arena, move |p| {
        p.copilot(["deploy", "local", "--release", release])
    })
    .await;
}

async fn served_release(url: &str) -> Option<String> {
    let r = reqwest::get(url).await.ok()?;
    r.json::<Value>().await.ok()?["release"]
        .as_str()
        .map(str::to_string)
}

#[tokio::test]
async fn deploy_switches_colours_without_failed_requests() {
    let arena = Arc::new(LocalArena::new());
    deploy(&arena, "v1").await;
    assert_eq!(
        served_release(&arena.url("/health")).await.as_deref(),
        Some("v1")
    );

    // Requests flow through the router during the second deploy.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, ok, failed, url) = (
            stop.clone(),
            ok.clone(),
            failed.clone(),
            arena.url("/health"),
        );
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            while !stop.load(Ordering::Relaxed) {
                match client.get(&url).send().await {
                    Ok(r) if r.status().is_success() => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };
    let out = run_ok(&arena, |p| {
        p.copilot(["--output", "json", "deploy", "local", "--release", "v2"])
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert!(ok.load(Ordering::Relaxed) > 20, "the load ran");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request failed during the switch"
    );
    assert_eq!(
        served_release(&arena.url("/health")).await.as_deref(),
        Some("v2")
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["detail"]["standby"]["release"], "v1",
        "blue-green keeps the old colour"
    );

    // The ledger tells the same story.
    let (_, status) = arena.p.json(["status", "local"]);
    assert_eq!(status["arenas"][0]["live"]["version"], "v2");
    let traffic = &status["arenas"][0]["traffic"];
    assert_eq!(traffic["green"]["weight"], 100);
    assert_eq!(traffic["blue"]["weight"], 0);
    let (_, history) = arena.p.json(["history", "local"]);
    assert_eq!(history["deployments"].as_array().unwrap().len(), 2);

    // `down` leaves nothing running.
    arena.p.copilot(["down", "local"]).assert().success();
    assert!(
        reqwest::get(arena.url("/health")).await.is_err(),
        "router stopped"
    );
    let state: Value =
        serde_json::from_str(&arena.p.read(".copilot/local/local/state.json")).unwrap();
    assert!(
        state["router"].is_null() && state["slots"].as_object().unwrap().is_empty(),
        "{state}"
    );
}

#[tokio::test]
async fn the_router_splits_traffic_exactly() {
    let arena = LocalArena::new();
    let a = arena.p.root().to_path_buf();
    let port = arena.port;
    for (v, _slot) in [("v1", "blue"), ("v2", "green")] {
        // Put v1 in blue, then v2 in green (deploy always fills the idle colour).
        let out = arena
            .p
            .copilot(["deploy", "local", "--release", v])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let provider = LocalProvider::with_binaries(
        &a,
        "local",
        port,
        assert_cmd::cargo::cargo_bin("copilot"),
        crate::common::service_bin(),
    )
    .unwrap();
    provider
        .set_traffic(&Op::by_hand("test"), &[(Slot::Blue, 90), (Slot::Green, 10)])
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let mut green = 0;
    for _ in 0..200 {
        let r = client.get(arena.url("/health")).send().await.unwrap();
        if r.headers()["x-copilot-slot"] == "green" {
            green += 1;
        }
    }
    assert_eq!(green, 20, "10% of 200 requests, exactly");
    let status = provider.status().await.unwrap();
    assert_eq!(status.slot(Slot::Blue).unwrap().weight, 90);
    assert!(status.slots.iter().all(|s| s.healthy));
    // A colour that still takes traffic cannot be removed.
    assert!(
        provider
            .remove(&Op::by_hand("test"), Slot::Green)
            .await
            .is_err()
    );
    provider
        .set_traffic(&Op::by_hand("test"), &[(Slot::Blue, 100), (Slot::Green, 0)])
        .await
        .unwrap();
    provider
        .remove(&Op::by_hand("test"), Slot::Green)
        .await
        .unwrap();
    assert_eq!(provider.status().await.unwrap().slots.len(), 1);
}

#[tokio::test]
async fn a_relative_root_deploys_and_serves() {
    let arena = Arc::new(LocalArena::new());
    // Run from the project's parent with `--root <its name>`: the router and
    // the services run in the project, not where the caller stands.
    run_ok(&arena, |p| {
        let root = p.root();
        let mut cmd = crate::common::copilot();
        cmd.current_dir(root.parent().unwrap())
            .args(["--root", root.file_name().unwrap().to_str().unwrap()])
            .args(["deploy", "local", "--release", "v1"]);
        cmd
    })
    .await;
    assert_eq!(
        served_release(&arena.url("/health")).await.as_deref(),
        Some("v1")
    );
}

#[tokio::test]
async fn a_switch_that_fails_leaves_only_what_the_ledger_shows_serving() {
    let arena = Arc::new(LocalArena::new());
    deploy(&arena, "v1").await;
    // The router can no longer persist its routes: it refuses every change.
    let routes = arena.p.path(".copilot/local/local/routes.json");
    std::fs::remove_file(&routes).unwrap();
    std::fs::create_dir(&routes).unwrap();
    let a = arena.clone();
    let (code, doc) =
        tokio::task::spawn_blocking(move || a.p.json(["deploy", "local", "--release", "v2"]))
            .await
            .unwrap();
    assert_eq!(code, 3, "{doc}");
    // v1 still serves, and the colour v2 was started in is gone again.
    assert_eq!(
        served_release(&arena.url("/health")).await.as_deref(),
        Some("v1")
    );
    let state: Value =
        serde_json::from_str(&arena.p.read(".copilot/local/local/state.json")).unwrap();
    let slots = state["slots"].as_object().unwrap();
    assert_eq!(slots.len(), 1, "{state}");
    assert_eq!(slots.values().next().unwrap()["version"], "v1");
    let a = arena.clone();
    let (_, history) = tokio::task::spawn_blocking(move || a.p.json(["history", "local"]))
        .await
        .unwrap();
    // The switch never moved traffic: the deployment ends rolled back, v1 serving.
    let last = &history["deployments"][0];
    assert_eq!(last["state"], "rolled-back", "{history}");
    std::fs::remove_dir(&routes).unwrap();
}

/// The environment a running process was started with.
fn environ(pid: u64) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap()
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

#[tokio::test]
async fn started_processes_get_only_the_environment_they_are_given() {
    let arena = Arc::new(LocalArena::new());
    run_ok(&arena, |p| {
        let mut cmd = p.copilot(["deploy", "local", "--release", "v1"]);
        cmd.env("AWS_SECRET_ACCESS_KEY", "do-not-leak-0123")
            .env("SOME_TOKEN", "do-not-leak-4567");
        cmd
    })
    .await;
    let state: Value =
        serde_json::from_str(&arena.p.read(".copilot/local/local/state.json")).unwrap();
    let router = state["router"]["pid"].as_u64().unwrap();
    let service = state["slots"].as_object().unwrap().values().next().unwrap()["pid"]
        .as_u64()
        .unwrap();
    for (what, pid) in [("router", router), ("service", service)] {
        let env = environ(pid);
        assert!(
            !env.iter().any(|v| v.contains("do-not-leak")),
            "the {what} inherited the CLI's secrets: {env:?}"
        );
        assert!(
            env.iter().any(|v| v.starts_with("PATH=")),
            "{what}: {env:?}"
        );
    }
    // The service gets what the arena gives it.
    assert!(environ(service).iter().any(|v| v == "COPILOT_RELEASE=v1"));
}
