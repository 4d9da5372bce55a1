//! Promotions through blue-green on the local provider: traffic shifts as
//! planned with no failed request, a failing release is rolled back by
//! analysis, rollback is instant and pins the arena, and concurrent
//! promotions do not overlap.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde_json::Value;

use crate::common::Project;
pub use crate::common::free_port;

/// The analysis of the production arena, on probes.
pub const PROBE_ANALYSIS: &str = "    interval: 30s\n    min_samples: 20\n    metrics:\n\
     \x20     - { name: error_rate, max: 0.05, window: 5m, on_fail: rollback }\n\
     \x20     - { name: p95_latency, max: 3s, window: 5m, on_fail: alert }\n\
     \x20     - { name: health, path: /health, consecutive_failures: 3, on_fail: remove }\n";

/// `local` (deploy target) and `stage` (promotes from local, blue-green 10 -> 50 -> 100).
pub struct Arenas {
    pub p: Project,
    pub stage_port: u16,
}

impl Arenas {
    pub(crate) fn new() -> Arenas {
        Self::with_analysis(PROBE_ANALYSIS)
    }

    /// `analysis` is the body of stage's `strategy.analysis`, indented by four.
    pub fn with_analysis(analysis: &str) -> Arenas {
        Self::at(analysis, None)
    }

    /// Every command's clock pinned to `now`, for a test that depends on the date.
    pub fn at(analysis: &str, now: Option<&str>) -> Arenas {
        Self::on(Project::init_at(now), analysis)
    }

    /// The arenas in project `p` (its ledger wherever `p` says).
    pub fn on(p: Project, analysis: &str) -> Arenas {
        let local = free_port();
        let stage_port = free_port();
        p.edit("arenas/local.yaml", "port: 7400", &format!("port: {local}"));
        p.edit(
            "arenas/local.yaml",
            "APP_URL: http://127.0.0.1:7400",
            &format!("APP_URL: http://127.0.0.1:{local}"),
        );
        p.write(
            "arenas/stage.yaml",
            &format!(
                "name: stage\ntier: staging\npromotes_from: local\nprovider: {{ kind: local, port: {stage_port} }}\n\
                 strategy:\n  kind: blue-green\n  steps: [{{ weight: 10, bake: 5m }}, {{ weight: 50, bake: 5m }}, {{ weight: 100, bake: 5m }}]\n\
                 \x20 analysis:\n{analysis}\
                 gates:\n  after: [health]\n\
                 env:\n  values: {{ APP_URL: \"http://127.0.0.1:{stage_port}\", SHOPIFY_API_VERSION: \"2026-10\", DATABASE_URL: \"sqlite://.copilot/local/stage.db\" }}\n"
            ),
        );
        p.copilot(["validate"]).assert().success();
        p.copilot(["release", "create", "--image", "copilot-service:v1"])
            .assert()
            .success();
        p.copilot(["release", "create", "--image", "copilot-service:v2"])
            .assert()
            .success();
        p.copilot([
            "release",
            "create",
            "--image",
            "copilot-service:v2-broken",
            "--env",
            "COPILOT_FAULT_5XX_RATE=0.5",
        ])
        .assert()
        .success();
        Arenas { p, stage_port }
    }

    pub fn run(&self, args: &[&str]) -> (i32, Value) {
        self.run_with(args, &[])
    }

    pub fn run_with(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, Value) {
        let out = self
            .p
            .copilot(["--output", "json"])
            .args(args)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let doc = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code().unwrap(), doc)
    }

    /// Deploy `release` to local and promote it to stage with short bakes.
    pub fn promote(&self, release: &str) -> (i32, Value) {
        let (code, _) = self.run(&["deploy", "local", "--release", release]);
        assert_eq!(code, 0);
        self.run(&["promote", "local", "stage", "--yes", "--bake", "1500ms"])
    }
}

impl Drop for Arenas {
    fn drop(&mut self) {
        let _ = self.p.copilot(["down", "stage"]).output();
        let _ = self.p.copilot(["down", "local"]).output();
    }
}

/// Run a future to completion (tests here are synchronous).
pub fn block_on<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// `[{version, reversible}, ...]` as pairs.
fn versions(list: &Value) -> Vec<(i64, bool)> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["version"].as_i64().unwrap(),
                m["reversible"].as_bool().unwrap(),
            )
        })
        .collect()
}

pub fn ledger_steps(p: &Project, deployment: &str) -> Vec<copilot_ledger::Step> {
    block_on(async {
        let ledger = copilot_ledger::Ledger::connect(&copilot_ledger::default_url(p.root()))
            .await
            .unwrap();
        ledger.steps(deployment).await.unwrap()
    })
}

#[test]
fn promote_v1_then_v2_shifts_traffic_as_planned_without_failed_requests() {
    let a = Arenas::new();
    let (code, doc) = a.promote("v1");
    assert_eq!(code, 0, "{doc}");

    // Requests flow through stage's router during the whole promotion of v2.
    let seen: Arc<Mutex<Vec<(SystemTime, String, bool)>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (seen, stop, url) = (
            seen.clone(),
            stop.clone(),
            format!("http://127.0.0.1:{}/health", a.stage_port),
        );
        std::thread::spawn(move || {
            block_on(async {
                let client = reqwest::Client::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let at = SystemTime::now();
                    match client.get(&url).send().await {
                        Ok(r) => {
                            let ok = r.status().is_success();
                            let slot = r
                                .headers()
                                .get("x-copilot-slot")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_string();
                            seen.lock().unwrap().push((at, slot, ok));
                        }
                        Err(_) => seen.lock().unwrap().push((at, String::new(), false)),
                    }
                }
            })
        })
    };
    let (code, doc) = a.promote("v2");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().unwrap();
    assert_eq!(code, 0, "{doc}");
    let seen = seen.lock().unwrap().clone();
    assert!(seen.len() > 100, "{} requests", seen.len());
    assert_eq!(
        seen.iter().filter(|(_, _, ok)| !ok).count(),
        0,
        "no request failed"
    );

    // The steps, in order, and the split observed while each weight baked.
    let steps = ledger_steps(&a.p, doc["deployment"].as_str().unwrap());
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "deploy-idle",
            "shift-10",
            "bake-10",
            "shift-50",
            "bake-50",
            "shift-100",
            "bake-100"
        ],
        "{names:?}"
    );
    assert!(steps.iter().all(|s| s.state == "done"));
    let new_slot = steps[0].outcome.as_ref().unwrap().0["slot"]
        .as_str()
        .unwrap()
        .to_string();
    for bake in steps.iter().filter(|s| s.name.starts_with("bake-")) {
        let weight: f64 = bake.name.trim_start_matches("bake-").parse().unwrap();
        let (from, to): (SystemTime, SystemTime) =
            (bake.started_at.into(), bake.finished_at.unwrap().into());
        let window: Vec<_> = seen
            .iter()
            .filter(|(at, _, _)| *at >= from && *at <= to)
            .collect();
        assert!(
            window.len() >= 20,
            "{} requests during {}",
            window.len(),
            bake.name
        );
        let share = window
            .iter()
            .filter(|(_, slot, _)| *slot == new_slot)
            .count() as f64
            * 100.0
            / window.len() as f64;
        assert!(
            (share - weight).abs() <= 6.0,
            "{}: observed {share:.1}% on {new_slot}, planned {weight}%",
            bake.name
        );
    }
    let (_, status) = a.run(&["status", "stage"]);
    assert_eq!(status["arenas"][0]["live"]["version"], "v2");

    // The release ticket: steps with times, gate results with figures, log excerpts.
    let dep = doc["deployment"].as_str().unwrap();
    let out = a.p.copilot(["evidence", dep]).output().unwrap();
    let md = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    for needle in [
        "# Release evidence: v2 to stage",
        "| 2 | shift-10 | done |",
        "bake-50",
        "## Gates: after (pass)",
        "| health | pass |",
        "## Log excerpt:",
    ] {
        assert!(md.contains(needle), "{needle} missing from:\n{md}");
    }
    let (code, ev) = a.run(&["evidence", dep, "--format", "json"]);
    assert_eq!(code, 0);
    assert_eq!(ev["steps"].as_array().unwrap().len(), 7);
    assert_eq!(ev["gate_runs"][0]["results"][0]["gate"], "health");

    // A first promotion into an empty arena takes all traffic at once.
    let (code, first) = a.run(&[
        "promote",
        "local",
        "stage",
        "--yes",
        "--bake",
        "1s",
        "--dry-run",
    ]);
    assert_eq!(code, 0);
    assert_eq!(first["dry_run"], true);
    let (code, plan) = a.run(&["plan", "local", "stage"]);
    assert_eq!(code, 0);
    assert_eq!(plan["release"]["version"], "v2");
    assert_eq!(plan["replaces"]["version"], "v2");
    assert!(
        plan["env_diff"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "DATABASE_URL")
    );
}

#[test]
fn the_first_promotion_takes_all_traffic_at_once() {
    let a = Arenas::new();
    let (code, doc) = a.promote("v1");
    assert_eq!(code, 0, "{doc}");
    let steps = ledger_steps(&a.p, doc["deployment"].as_str().unwrap());
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["deploy-idle", "shift-100", "bake-100"]);
}

#[test]
fn a_failing_release_is_rolled_back_by_analysis() {
    let a = Arenas::new();
    assert_eq!(a.promote("v1").0, 0);
    let (code, doc) = a.promote("v2-broken");
    assert_eq!(code, 1, "{doc}");
    assert!(doc["error"].is_null());
    assert_eq!(doc["state"], "rolled-back");
    assert!(
        doc["summary"].as_str().unwrap().contains("error_rate"),
        "{doc}"
    );
    // Status and history say so; v1 serves all traffic.
    let (_, status) = a.run(&["status", "stage"]);
    assert_eq!(status["arenas"][0]["live"]["version"], "v1");
    let traffic = &status["arenas"][0]["traffic"];
    let v1_weight = traffic
        .as_object()
        .unwrap()
        .values()
        .find(|v| v["release"] == "v1")
        .unwrap()["weight"]
        .clone();
    assert_eq!(v1_weight, 100);
    let (_, history) = a.run(&["history", "stage"]);
    assert_eq!(history["deployments"][0]["state"], "rolled-back");
    assert_eq!(history["deployments"][0]["version"], "v2-broken");
    let body: Value = reqwest::blocking_get(&format!("http://127.0.0.1:{}/health", a.stage_port));
    assert_eq!(body["release"], "v1");
}

#[test]
fn rollback_switches_to_the_standby_and_pins_the_arena() {
    let a = Arenas::new();
    assert_eq!(a.promote("v1").0, 0);
    assert_eq!(a.promote("v2").0, 0);
    let (code, doc) = a.run(&["rollback", "stage", "--reason", "checkout errors"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(
        (doc["from"].as_str(), doc["to"].as_str()),
        (Some("v2"), Some("v1"))
    );
    let body: Value = reqwest::blocking_get(&format!("http://127.0.0.1:{}/health", a.stage_port));
    assert_eq!(body["release"], "v1");
    // Pinned: no promotion until unlock.
    let (code, _) = a.promote("v2");
    assert_eq!(code, 4);
    a.p.copilot(["unlock", "stage"]).assert().success();
    assert_eq!(a.promote("v2").0, 0);
}

#[test]
fn two_concurrent_promotions_one_runs_the_other_is_blocked() {
    let a = Arenas::new();
    assert_eq!(a.promote("v1").0, 0);
    a.run(&["deploy", "local", "--release", "v2"]);
    let spawn = || {
        a.p.spawn(
            ["promote", "local", "stage", "--yes", "--bake", "1500ms"],
            &[],
        )
    };
    let (first, second) = (spawn(), spawn());
    let codes = [
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    ]
    .map(|o| {
        (
            o.status.code().unwrap(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    });
    let mut exit: Vec<i32> = codes.iter().map(|(c, _)| *c).collect();
    exit.sort();
    assert_eq!(exit, [0, 4], "{codes:?}");
    assert!(
        codes
            .iter()
            .any(|(c, e)| *c == 4 && e.contains("locked by")),
        "{codes:?}"
    );
}

#[test]
fn down_is_refused_while_a_rollout_runs_or_waits() {
    let a = Arenas::new();
    assert_eq!(a.promote("v1").0, 0);
    a.run(&["deploy", "local", "--release", "v2"]);
    let mut promote =
        a.p.spawn(["promote", "local", "stage", "--yes", "--bake", "4s"], &[]);
    // Once the promotion holds the arena and has moved traffic.
    wait_for_step(&a.p, "stage", 2, &mut promote);
    let (code, doc) = a.run(&["down", "stage"]);
    assert_eq!(code, 4, "{doc}");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("locked by"),
        "{doc}"
    );
    // The promotion was not disturbed: it finishes, v2 live.
    let out = promote.wait().unwrap();
    assert_eq!(out.code(), Some(0));
    assert_eq!(
        a.run(&["status", "stage"]).1["arenas"][0]["live"]["version"],
        "v2"
    );
    // A deployment left in progress (its command killed) is not stopped
    // under it without --force, which records it aborted.
    a.run(&["deploy", "local", "--release", "v1"]);
    let mut promote =
        a.p.spawn(["promote", "local", "stage", "--yes", "--bake", "30s"], &[]);
    wait_for_step(&a.p, "stage", 2, &mut promote);
    promote.kill().unwrap();
    promote.wait().unwrap();
    let (code, doc) = a.run(&["down", "stage"]);
    assert_eq!(code, 4, "{doc}");
    assert!(
        doc["error"]["hint"].as_str().unwrap().contains("--force"),
        "{doc}"
    );
    let (code, doc) = a.run(&["down", "stage", "--force"]);
    assert_eq!(code, 0, "{doc}");
    let (_, history) = a.run(&["history", "stage"]);
    assert_eq!(history["deployments"][0]["state"], "aborted", "{history:#}");
    assert!(!reqwest::get_ok(&format!(
        "http://127.0.0.1:{}/health",
        a.stage_port
    )));
}

#[test]
fn a_pinned_clock_never_makes_a_live_lease_look_expired() {
    let a = Arenas::new();
    assert_eq!(a.promote("v1").0, 0);
    a.run(&["deploy", "local", "--release", "v2"]);
    let mut promote =
        a.p.spawn(["promote", "local", "stage", "--yes", "--bake", "4s"], &[]);
    wait_for_step(&a.p, "stage", 2, &mut promote);
    let ahead = [("COPILOT_NOW", "2099-01-01T00:00:00Z")];
    // unlock without --force, a manual lock and a second promotion, each
    // with the clock far ahead: the lease is live by the real clock.
    for args in [
        &["unlock", "stage"][..],
        &["lock", "stage", "--reason", "maintenance"],
        &["promote", "local", "stage", "--yes", "--bake", "1s"],
    ] {
        let (code, doc) = a.run_with(args, &ahead);
        assert_eq!(code, 4, "{args:?}: {doc}");
    }
    assert!(promote.wait().unwrap().success());
    assert_eq!(
        a.run(&["status", "stage"]).1["arenas"][0]["live"]["version"],
        "v2"
    );
}

/// Blocking GETs (tests here are synchronous).
pub mod reqwest {
    pub use ::reqwest::*;

    use super::block_on;

    /// A JSON document.
    pub fn blocking_get(url: &str) -> serde_json::Value {
        block_on(async { ::reqwest::get(url).await.unwrap().json().await.unwrap() })
    }

    /// Whether `url` answers with a success status.
    pub fn get_ok(url: &str) -> bool {
        block_on(async {
            ::reqwest::get(url)
                .await
                .is_ok_and(|r| r.status().is_success())
        })
    }
}

/// The release every one of `n` requests through the router gets, if they agree.
fn served_by_router(port: u16, n: usize) -> Option<String> {
    block_on(async {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..n {
            let v: Value = ::reqwest::get(format!("http://127.0.0.1:{port}/health"))
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            seen.insert(v["release"].as_str()?.to_string());
        }
        (seen.len() == 1).then(|| seen.into_iter().next().unwrap())
    })
}

/// Wait until `child`, running a deployment of `arena`, has begun its
/// `k`th step (recorded its intent); it must not end before.
pub fn wait_for_step(p: &Project, arena: &str, k: usize, child: &mut std::process::Child) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while active_steps_in(p, arena).unwrap_or(0) < k {
        assert!(
            std::time::Instant::now() < deadline,
            "step {k} of the deployment in {arena} never started"
        );
        if let Some(status) = child.try_wait().unwrap() {
            use std::io::Read;
            let mut said = String::new();
            for out in [
                child.stdout.take().map(|o| Box::new(o) as Box<dyn Read>),
                child.stderr.take().map(|e| Box::new(e) as Box<dyn Read>),
            ]
            .into_iter()
            .flatten()
            {
                let mut out = out;
                out.read_to_string(&mut said).ok();
            }
            panic!("the command ended ({status}) before step {k}: {said}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How many steps the deployment in progress in `arena` has begun.
pub fn active_steps_in(p: &Project, arena: &str) -> Option<usize> {
    block_on(async {
        let url = p
            .ledger_url
            .clone()
            .unwrap_or_else(|| copilot_ledger::default_url(p.root()));
        let ledger = copilot_ledger::Ledger::connect(&url).await.ok()?;
        let d = ledger.active_deployment(arena).await.ok()??;
        Some(ledger.steps(&d.deployment.id).await.ok()?.len())
    })
}

#[test]
fn killing_the_cli_at_every_step_leaves_a_state_resume_or_rollback_can_finish() {
    let a = Arenas::new();
    assert_eq!(a.promote("v1").0, 0);
    // A promotion of v2 has 7 steps: deploy-idle, then shift and bake at 10, 50 and 100.
    for (k, recover) in (1..=7).zip(["resume", "rollback"].into_iter().cycle()) {
        let (_, status) = a.run(&["status", "stage"]);
        let live = status["arenas"][0]["live"]["version"]
            .as_str()
            .unwrap()
            .to_string();
        let next = if live == "v1" { "v2" } else { "v1" };
        assert_eq!(a.run(&["deploy", "local", "--release", next]).0, 0);
        let mut child = a.p.spawn(
            ["promote", "local", "stage", "--yes", "--bake", "1500ms"],
            &[],
        );
        // Kill -9 once step k has recorded its intent.
        wait_for_step(&a.p, "stage", k, &mut child);
        child.kill().unwrap();
        child.wait().unwrap();

        let args: &[&str] = if recover == "resume" {
            &["resume", "stage", "--bake", "1s"]
        } else {
            &["rollback", "stage"]
        };
        let (code, doc) = a.run(args);
        assert_eq!(code, 0, "{recover} after a kill at step {k}: {doc}");
        let expected = if recover == "resume" {
            next
        } else {
            live.as_str()
        };
        let served = served_by_router(a.stage_port, 20);
        assert_eq!(
            served.as_deref(),
            Some(expected),
            "after {recover} at step {k} the router serves one known release"
        );
        let (_, status) = a.run(&["status", "stage"]);
        let arena = &status["arenas"][0];
        assert_eq!(
            arena["live"]["version"], expected,
            "the ledger agrees (step {k}, {recover})"
        );
        assert!(arena["deployment"].is_null(), "nothing left in progress");
        let full: Vec<&Value> = arena["traffic"]
            .as_object()
            .unwrap()
            .values()
            .filter(|v| v["weight"] == 100)
            .collect();
        assert_eq!(full.len(), 1);
        assert_eq!(full[0]["release"], expected);
        assert_eq!(arena["drift"], false, "router and ledger agree (step {k})");
        // The killed command's step is closed as interrupted, none left running.
        let (_, history) = a.run(&["history", "stage", "--limit", "2"]);
        for d in history["deployments"].as_array().unwrap() {
            let steps = ledger_steps(&a.p, d["id"].as_str().unwrap());
            assert!(
                steps.iter().all(|s| s.state != "started"),
                "step {k}, {recover}: {:?}",
                steps
                    .iter()
                    .map(|s| (&s.name, &s.state))
                    .collect::<Vec<_>>()
            );
        }
        if recover == "resume" {
            let steps = ledger_steps(&a.p, history["deployments"][0]["id"].as_str().unwrap());
            // A bake the kill cut short is baked again.
            if let Some(w) = [None, None, Some(10), None, Some(50), None, Some(100)][k - 1] {
                let bake = format!("bake-{w}");
                assert!(
                    steps.iter().any(|s| s.name == bake && s.state == "done"),
                    "step {k}: {:?}",
                    steps
                        .iter()
                        .map(|s| (&s.name, &s.state))
                        .collect::<Vec<_>>()
                );
            }
            assert!(
                steps.iter().any(|s| s.state == "interrupted"),
                "step {k}: {:?}",
                steps
                    .iter()
                    .map(|s| (&s.name, &s.state))
                    .collect::<Vec<_>>()
            );
        }
        if recover == "rollback" {
            a.p.copilot(["unlock", "stage"]).assert().success();
        }
    }
}

#[test]
fn hotfix_bypasses_a_freeze_with_a_recorded_reason() {
    // Black Friday for every command: frozen, but the lane lets a recorded
    // reason through.
    let a = Arenas::at(PROBE_ANALYSIS, Some("2026-11-27T11:00:00Z"));
    assert_eq!(a.promote("v1").0, 0);
    a.p.write(
        "arenas/stage-hotfix.yaml",
        "name: stage-hotfix\ntier: hotfix\ntarget: stage\nstrategy: { kind: blue-green, steps: [{ weight: 100 }] }\n\
         gates:\n  before: [window]\nwindows:\n  freeze: [black-friday-week]\n  bypass: with-reason\n",
    );
    a.p.copilot(["validate"]).assert().success();
    let out =
        a.p.copilot([
            "--output",
            "json",
            "hotfix",
            "stage",
            "--release",
            "v2",
            "--reason",
            "parser broke on the core update",
            "--yes",
            "--bake",
            "500ms",
        ])
        .output()
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{doc}");
    assert_eq!(served_by_router(a.stage_port, 5).as_deref(), Some("v2"));
    let (_, history) = a.run(&["history", "stage"]);
    assert_eq!(history["deployments"][0]["kind"], "hotfix");
    let log = block_on(async {
        let ledger = copilot_ledger::Ledger::connect(&copilot_ledger::default_url(a.p.root()))
            .await
            .unwrap();
        ledger.audit_log(None, 20).await.unwrap()
    });
    let bypass = log
        .iter()
        .find(|e| e.action == "window.bypass")
        .expect("the bypass is audited");
    assert_eq!(
        bypass.reason.as_deref(),
        Some("parser broke on the core update")
    );
    // A hotfix needs a reason.
    let out =
        a.p.copilot(["hotfix", "stage", "--release", "v2", "--reason", " "])
            .output()
            .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn rollback_names_the_applied_migrations_the_older_release_lacks() {
    let a = Arenas::new();
    // v1 was built with the service's first three migrations; v3 with the
    // first five, the last of which has no down migration. The service
    // itself carries one more, which neither release recorded; the project
    // has it (`init` writes every migration the service embeds), so its
    // reversibility is known.
    let service = a.p.root().join("migrations/service/sqlite");
    for (dir, upto, drop_down) in [("schema/v1", 3, None), ("schema/v3", 5, Some(5))] {
        let to = a.p.root().join(dir);
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(&service).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let version: u32 = name[..4].parse().unwrap();
            let is_dropped_down = Some(version) == drop_down && name.ends_with(".down.sql");
            if version <= upto && !is_dropped_down {
                std::fs::copy(service.join(&name), to.join(&name)).unwrap();
            }
        }
    }
    for (version, dir) in [("v1-schema", "schema/v1"), ("v3-schema", "schema/v3")] {
        let out =
            a.p.copilot([
                "release",
                "create",
                "--image",
                &format!("copilot-service:{version}"),
                "--migrations",
                dir,
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("schema"));
    }
    assert_eq!(a.promote("v1-schema").0, 0);
    // The plan shows what v3 adds to the schema before anything moves.
    assert_eq!(a.run(&["deploy", "local", "--release", "v3-schema"]).0, 0);
    let (_, plan) = a.run(&["plan", "local", "stage"]);
    let adds = versions(&plan["schema"]["adds"]);
    assert_eq!(adds, [(4, true), (5, false)], "{plan:#}");
    // The service migrates its database to all it carries when it starts.
    let (code, doc) = a.run(&["promote", "local", "stage", "--yes", "--bake", "1500ms"]);
    assert_eq!(code, 0, "{doc}");

    let out = a.p.copilot(["rollback", "stage"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("3 applied migration(s) that v1-schema lacks"),
        "{text}"
    );
    let line = |v: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(v))
            .unwrap_or_default()
    };
    assert!(line("4 ").contains("reversible"), "{text}");
    assert!(line("5 ").contains("CANNOT BE REVERSED"), "{text}");
    assert!(
        line("6 ").contains("reversible") && !line("6 ").contains("unknown"),
        "{text}"
    );

    // The ledger keeps the same finding with the rollback.
    let (_, history) = a.run(&["history", "stage"]);
    let rollback = &history["deployments"][0];
    assert_eq!(rollback["kind"], "rollback");
    let steps = ledger_steps(&a.p, rollback["id"].as_str().unwrap());
    let schema = steps
        .iter()
        .find(|s| s.name == "schema-check")
        .and_then(|s| s.outcome.as_ref())
        .expect("a schema-check step")
        .0
        .clone();
    assert_eq!(schema["source"], "database", "{schema:#}");
    let left: Vec<(i64, Value)> = schema["left_applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["version"].as_i64().unwrap(), m["reversible"].clone()))
        .collect();
    assert_eq!(
        left,
        [
            (4, Value::Bool(true)),
            (5, Value::Bool(false)),
            (6, Value::Bool(true))
        ],
        "{schema:#}"
    );
}

#[test]
fn status_reports_a_split_the_ledger_does_not_show() {
    use copilot_core::provider::{Op, Provider};
    use copilot_provider_local::LocalProvider;
    let a = Arenas::new();
    assert_eq!(a.promote("v1").0, 0);
    assert_eq!(a.promote("v2").0, 0);
    let (_, status) = a.run(&["status", "stage"]);
    assert_eq!(status["arenas"][0]["drift"], false, "{status:#}");

    // Traffic changed behind the ledger's back (as a kill between the
    // router's switch and the ledger's write would leave it).
    let provider = LocalProvider::with_binaries(
        a.p.root(),
        "stage",
        a.stage_port,
        assert_cmd::cargo::cargo_bin("copilot"),
        crate::common::service_bin(),
    )
    .unwrap();
    block_on(async {
        let s = provider.status().await.unwrap();
        let weights: Vec<_> = s.slots.iter().map(|x| (x.slot, 50)).collect();
        provider
            .set_traffic(&Op::by_hand("test"), &weights)
            .await
            .unwrap();
    });
    let (_, status) = a.run(&["status", "stage"]);
    let arena = &status["arenas"][0];
    assert_eq!(arena["drift"], true, "{status:#}");
    let observed: Vec<u64> = arena["observed"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v["weight"].as_u64().unwrap())
        .collect();
    assert_eq!(observed, [50, 50]);
    let text = a.p.copilot(["status", "stage"]).output().unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("observed"), "{text}");
    assert!(text.contains("the ledger says otherwise"), "{text}");

    // A rollback puts the router and the ledger back in agreement.
    let (code, doc) = a.run(&["rollback", "stage"]);
    assert_eq!(code, 0, "{doc}");
    let (_, status) = a.run(&["status", "stage"]);
    assert_eq!(status["arenas"][0]["drift"], false, "{status:#}");
}

#[test]
fn a_promotion_tells_its_lifecycle_as_events_and_a_broken_events_file_stops_nothing() {
    let a = Arenas::new();
    let (code, _) = a.run(&["deploy", "local", "--release", "v1"]);
    assert_eq!(code, 0);
    let (code, _) = a.run(&["deploy", "stage", "--release", "v1"]);
    assert_eq!(code, 0);
    let file = a.p.path("events.jsonl");
    let (code, doc) = a.run(&[
        "--events",
        file.to_str().unwrap(),
        "promote",
        "local",
        "stage",
        "--release",
        "v2",
        "--yes",
        "--bake",
        "1s",
    ]);
    assert_eq!(code, 0, "{doc}");
    let deployment = doc["deployment"].as_str().unwrap();
    let events: Vec<Value> = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.iter().all(|e| e["deployment"] == deployment));
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds.first(), Some(&"deployment-started"), "{kinds:?}");
    assert_eq!(kinds.last(), Some(&"finished"), "{kinds:?}");
    assert_eq!(events.last().unwrap()["state"], "succeeded");
    assert_eq!(events[0]["release"], "v2");
    // Every step that started finished, in order, as the ledger recorded them.
    let steps = ledger_steps(&a.p, deployment);
    let started: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "step-started")
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    let finished: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "step-finished")
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    let recorded: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(started, recorded);
    assert_eq!(finished, recorded);
    // The after gates, the traffic the platform achieved at each weight, and
    // analysis samples during the bakes.
    assert!(kinds.contains(&"gates-finished"), "{kinds:?}");
    let achieved: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "traffic-set")
        .map(|e| &e["achieved"])
        .collect();
    assert_eq!(
        achieved,
        [
            &serde_json::json!([["green", 10], ["blue", 90]]),
            &serde_json::json!([["green", 50], ["blue", 50]]),
            &serde_json::json!([["green", 100], ["blue", 0]]),
        ]
    );
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "analysis-sample" && e["metric"] == "error_rate"),
        "{kinds:?}"
    );

    // An events file that cannot be written leaves the rollout alone.
    let (code, doc) = a.run(&[
        "--events",
        a.p.path("no/such/folder/events.jsonl").to_str().unwrap(),
        "rollback",
        "stage",
    ]);
    assert_eq!(code, 0, "{doc}");
}
