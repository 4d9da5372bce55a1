//! The Fly provider against the emulated Fly (`fly_emulator`): every
//! request copilot makes and every answer it reads passes through Prism with
//! Fly's official Machines API description, and every machine is a real
//! `copilot-service` process carrying real traffic through the emulated proxy.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Project, Traffic, sent_during};
use crate::fly_emulator::{Fault, FlyEmulator};

pub(crate) const PROBE_ANALYSIS: &str = "    interval: 250ms\n    min_samples: 1\n    metrics:\n\
     \x20     - { name: error_rate, max: 0.05, window: 5m, on_fail: rollback }\n\
     \x20     - { name: health, path: /health, consecutive_failures: 3, on_fail: remove }\n";

/// How long the emulated proxy takes to route to a machine put into
/// service, and how long the arenas give it (Fly's is about 10 s).
const PROXY_LAG: Duration = Duration::from_millis(600);
const PROXY_WAIT: &str = "1s";

/// A Fly arena definition on app `app` of `fly`.
fn fly_arena(
    name: &str,
    tier: &str,
    from: Option<&str>,
    app: &str,
    fly: &FlyEmulator,
    body: &str,
) -> String {
    format!(
        "name: {name}\ntier: {tier}\n{from}provider:\n  kind: fly\n  app: {app}\n  url: {url}\n  ready_timeout: 20s\n  proxy_wait: {PROXY_WAIT}\n{body}\
         env:\n  values: {{ SHOPIFY_API_VERSION: \"2026-10\", DATABASE_URL: \"sqlite://copilot.db\", APP_URL: \"{url}\" }}\n\
         \x20 secrets: {{ SHOPIFY_WEBHOOK_SECRET: \"fly:SHOPIFY_WEBHOOK_SECRET\" }}\n",
        from = from
            .map(|f| format!("promotes_from: {f}\n"))
            .unwrap_or_default(),
        url = fly.app_url(app),
    )
}

/// A project whose `staging` (blue-green, 2 machines) and `canary` (canary
/// 25 -> 50 -> 100 over 4 machines) run on two apps of the emulated Fly.
pub(crate) struct FlyArenas {
    pub(crate) p: Project,
    pub(crate) fly: FlyEmulator,
}

pub(crate) const STAGING: &str = "copilot-staging";
const CANARY: &str = "copilot-canary";

fn secrets() -> Vec<(&'static str, &'static str)> {
    vec![("SHOPIFY_WEBHOOK_SECRET", "fly-kept-secret")]
}

const BLUE_GREEN: &str = "strategy:\n  kind: blue-green\n  steps: [{ weight: 100, bake: 5m }]\n";

impl FlyArenas {
    pub(crate) fn new(staging_extra: &str) -> FlyArenas {
        Self::with_strategy(staging_extra, BLUE_GREEN)
    }

    /// Staging with `extra` provider settings and `strategy` (a YAML block).
    fn with_strategy(staging_extra: &str, strategy: &str) -> FlyArenas {
        let s = secrets();
        let fly = FlyEmulator::start(&[(STAGING, &s), (CANARY, &s)]);
        fly.set_proxy_lag(PROXY_LAG);
        let p = Project::init();
        p.write(
            "arenas/staging.yaml",
            &fly_arena(
                "staging",
                "staging",
                Some("local"),
                STAGING,
                &fly,
                &format!(
                    "  region: dfw\n  instances: 2\n{staging_extra}{strategy}  analysis:\n{PROBE_ANALYSIS}gates:\n  after: [health]\n"
                ),
            ),
        );
        p.write(
            "arenas/canary.yaml",
            &fly_arena(
                "canary",
                "canary",
                Some("staging"),
                CANARY,
                &fly,
                &format!(
                    "  regions: [dfw]\n  instances: 4\nstrategy:\n  kind: canary\n  steps: [{{ weight: 25, bake: 5m }}, {{ weight: 50, bake: 5m }}, {{ weight: 100 }}]\n  analysis:\n{PROBE_ANALYSIS}gates:\n  after: [health]\n"
                ),
            ),
        );
        // Production and the hotfix lane are other platforms; out of the way.
        for f in ["production", "hotfix", "preview"] {
            let _ = std::fs::remove_file(p.path(&format!("arenas/{f}.yaml")));
        }
        let out = p.copilot(["validate"]).output().unwrap();
        assert!(out.status.success(), "{}", crate::common::stderr(&out));
        for (image, env) in [
            ("registry.fly.io/copilot:v1", None),
            ("registry.fly.io/copilot:v2", None),
            (
                "registry.fly.io/copilot:v2-broken",
                Some("COPILOT_FAULT_5XX_RATE=0.5"),
            ),
            ("registry.fly.io/copilot:never-starts", None),
            ("registry.fly.io/copilot:unhealthy", None),
            (
                "registry.fly.io/copilot:crashes",
                Some("SHOPIFY_API_VERSION=not-a-version"),
            ),
        ] {
            let mut cmd = p.copilot(["release", "create", "--image", image]);
            if let Some(e) = env {
                cmd.args(["--env", e]);
            }
            cmd.assert().success();
        }
        FlyArenas { p, fly }
    }

    pub(crate) fn run(&self, args: &[&str]) -> (i32, Value) {
        let mut cmd = self.p.copilot(["--output", "json"]);
        for (k, v) in self.fly.env() {
            cmd.env(k, v);
        }
        let out = cmd.args(args).output().unwrap();
        let code = out.status.code().unwrap_or(-1);
        let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: stdout is not JSON ({e}): {}\n{}",
                crate::common::stdout(&out),
                crate::common::stderr(&out)
            )
        });
        (code, doc)
    }

    fn spawn(&self, args: &[&str]) -> std::process::Child {
        let env: Vec<(&str, String)> = self.fly.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.p.spawn(args, &env)
    }
}

/// Machines of `app` in service, by release version.
pub(crate) fn serving(fly: &FlyEmulator, app: &str) -> Vec<String> {
    let mut v: Vec<String> = fly
        .machines(app)
        .into_iter()
        .filter(|(_, _, _, state, cordoned)| state == "started" && !cordoned)
        .map(|(_, _, version, _, _)| version)
        .collect();
    v.sort();
    v
}

fn no_violations(fly: &FlyEmulator) {
    assert!(fly.checked_by_prism() > 0, "no request went through Prism");
    let v = fly.violations();
    assert!(
        v.is_empty(),
        "Prism found requests or answers off the spec:\n{}",
        v.join("\n")
    );
}

#[test]
fn blue_green_then_canary_on_fly_with_traffic_flowing() {
    let a = FlyArenas::new("");
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v1"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(serving(&a.fly, STAGING), ["v1", "v1"]);
    let (code, doc) = a.run(&["promote", "staging", "canary", "--yes", "--bake", "1s"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(serving(&a.fly, CANARY), ["v1", "v1", "v1", "v1"]);

    // v2: blue-green in staging while its traffic flows.
    let staging_traffic = Traffic::start(a.fly.app_url(STAGING));
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v2"]);
    assert_eq!(code, 0, "{doc}");
    let seen = staging_traffic.stop();
    assert!(seen.len() > 20, "{} requests", seen.len());
    let failed: Vec<_> = seen.iter().filter(|(_, _, ok)| !ok).collect();
    assert!(
        failed.is_empty(),
        "failed requests during the switch: {failed:?}"
    );
    assert_eq!(serving(&a.fly, STAGING), ["v2", "v2"]);
    // The old colour stays as the standby, out of service.
    let standby: Vec<_> = a
        .fly
        .machines(STAGING)
        .into_iter()
        .filter(|m| m.2 == "v1")
        .collect();
    assert_eq!(standby.len(), 2, "{standby:?}");
    assert!(
        standby.iter().all(|m| m.4),
        "the standby is cordoned: {standby:?}"
    );

    // v2: canary 25 -> 50 -> 100 over 4 machines, observed through the proxy.
    let canary_traffic = Traffic::start(a.fly.app_url(CANARY));
    let (code, doc) = a.run(&["promote", "staging", "canary", "--yes", "--bake", "2s"]);
    assert_eq!(code, 0, "{doc}");
    let seen = canary_traffic.stop();
    let failed: Vec<_> = seen.iter().filter(|(_, _, ok)| !ok).collect();
    assert!(
        failed.is_empty(),
        "failed requests during the canary: {failed:?}"
    );
    assert_eq!(serving(&a.fly, CANARY), ["v2", "v2", "v2", "v2"]);
    // The old colour is gone: a canary retires it.
    assert!(a.fly.machines(CANARY).iter().all(|m| m.2 == "v2"));

    // The split seen while each weight baked is the machine ratio.
    let steps = crate::rollouts::ledger_steps(&a.p, doc["deployment"].as_str().unwrap());
    let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "deploy-idle",
            "shift-25",
            "bake-25",
            "shift-50",
            "bake-50",
            "shift-100",
            "bake-100",
            "retire-old"
        ]
    );
    for weight in [25u32, 50] {
        let bake = steps
            .iter()
            .find(|s| s.name == format!("bake-{weight}"))
            .unwrap();
        let window = sent_during(&seen, bake, Duration::from_millis(300));
        let v2 = window.iter().filter(|(_, r, _)| r == "v2").count();
        assert!(window.len() > 20, "{} requests at {weight}%", window.len());
        let share = v2 as f64 * 100.0 / window.len() as f64;
        assert!(
            (share - f64::from(weight)).abs() < 12.0,
            "{share:.0}% of {} requests on v2 at {weight}%",
            window.len()
        );
    }
    // The ledger has the split achieved (one of four machines: 25%).
    let shift = steps.iter().find(|s| s.name == "shift-25").unwrap();
    let outcome = &shift.outcome.as_ref().unwrap().0;
    let mut weights: Vec<u64> = outcome["weights"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v["weight"].as_u64().unwrap())
        .collect();
    weights.sort();
    assert_eq!(weights, [25, 75], "{outcome}");

    let (_, status) = a.run(&["status", "canary"]);
    let arena = &status["arenas"][0];
    assert_eq!(arena["live"]["version"], "v2", "{status:#}");
    assert_eq!(arena["drift"], false, "{status:#}");
    no_violations(&a.fly);
}

#[test]
fn a_failing_release_is_rolled_back_by_analysis_on_fly() {
    let a = FlyArenas::new("");
    assert_eq!(a.run(&["deploy", "staging", "--release", "v1"]).0, 0);
    assert_eq!(
        a.run(&["promote", "staging", "canary", "--yes", "--bake", "1s"])
            .0,
        0
    );
    let (code, doc) = a.run(&[
        "promote",
        "staging",
        "canary",
        "--release",
        "v2-broken",
        "--yes",
        "--bake",
        "3s",
    ]);
    assert_eq!(code, 1, "{doc}");
    assert_eq!(doc["state"], "rolled-back", "{doc}");
    assert!(
        doc["summary"].as_str().unwrap().contains("error_rate"),
        "{doc}"
    );
    assert_eq!(serving(&a.fly, CANARY), ["v1", "v1", "v1", "v1"]);
    assert!(
        a.fly.machines(CANARY).iter().all(|m| m.2 == "v1"),
        "v2-broken's machines are gone: {:?}",
        a.fly.machines(CANARY)
    );
    let (_, status) = a.run(&["status", "canary"]);
    assert_eq!(status["arenas"][0]["live"]["version"], "v1", "{status:#}");
    let (_, history) = a.run(&["history", "canary"]);
    assert_eq!(
        history["deployments"][0]["state"], "rolled-back",
        "{history:#}"
    );
    no_violations(&a.fly);
}

#[test]
fn killed_at_each_step_of_a_fly_blue_green_promotion_resume_or_rollback_finish_it() {
    let a = FlyArenas::new("");
    assert_eq!(a.run(&["deploy", "staging", "--release", "v1"]).0, 0);
    // deploy-idle, shift-100, bake-100.
    for (k, recover) in (1..=3).zip(["resume", "rollback", "resume"]) {
        let live = a.run(&["status", "staging"]).1["arenas"][0]["live"]["version"]
            .as_str()
            .unwrap()
            .to_string();
        let next = if live == "v1" { "v2" } else { "v1" };
        let mut child = a.spawn(&[
            "promote",
            "local",
            "staging",
            "--release",
            next,
            "--yes",
            "--bake",
            "3s",
        ]);
        crate::rollouts::wait_for_step(&a.p, "staging", k, &mut child);
        // At step 1, kill it while it waits for machines it already created.
        if k == 1 {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !a.fly.machines(STAGING).iter().any(|m| m.2 == next) {
                assert!(
                    Instant::now() < deadline,
                    "no machine of {next} was created"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let args: Vec<&str> = if recover == "resume" {
            vec!["resume", "staging", "--bake", "1s"]
        } else {
            vec!["rollback", "staging"]
        };
        let (code, doc) = a.run(&args);
        assert_eq!(code, 0, "{recover} after a kill at step {k}: {doc}");
        let expected = if recover == "resume" {
            next
        } else {
            live.as_str()
        };
        assert_eq!(
            serving(&a.fly, STAGING),
            [expected, expected],
            "after {recover} at step {k}"
        );
        // No duplicate or orphan machines: two per colour at most, one release per colour.
        let ms = a.fly.machines(STAGING);
        for colour in ["blue", "green"] {
            let here: Vec<_> = ms.iter().filter(|m| m.1 == colour).collect();
            assert!(here.len() <= 2, "{colour}: {here:?}");
            assert!(
                here.windows(2).all(|w| w[0].2 == w[1].2),
                "{colour} runs two releases: {here:?}"
            );
        }
        let (_, status) = a.run(&["status", "staging"]);
        let s = &status["arenas"][0];
        assert_eq!(s["live"]["version"], expected, "{status:#}");
        assert_eq!(s["drift"], false, "ledger and Fly agree: {status:#}");
        if recover == "rollback" {
            a.p.copilot(["unlock", "staging"]).assert().success();
        }
    }
    no_violations(&a.fly);
}

#[test]
fn platform_faults_are_retried_or_end_with_their_exit_code_and_nothing_half_done() {
    let a = FlyArenas::new("");
    // 429 with Retry-After, a burst of 503s and an answer too late: retried, done.
    a.fly.inject(&[
        Fault::Status(429, Some(1)),
        Fault::Status(503, None),
        Fault::Status(503, None),
        Fault::Stall(Duration::from_secs(5)),
    ]);
    let started = Instant::now();
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v1"]);
    assert_eq!(code, 0, "{doc}");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After was honoured"
    );
    assert_eq!(a.fly.pending_faults(), 0);
    assert_eq!(serving(&a.fly, STAGING), ["v1", "v1"]);

    // A lease someone holds briefly is waited for.
    a.fly.hold_leases_for(Duration::from_secs(2));
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v2"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(serving(&a.fly, STAGING), ["v2", "v2"]);

    // One held for longer than the arena waits: blocked (4), naming a machine; v2 serves.
    a.fly.hold_leases_for(Duration::from_secs(600));
    a.p.edit(
        "arenas/staging.yaml",
        "ready_timeout: 20s",
        "ready_timeout: 5s",
    );
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v1"]);
    a.p.edit(
        "arenas/staging.yaml",
        "ready_timeout: 5s",
        "ready_timeout: 20s",
    );
    assert_eq!(code, 4, "{doc}");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("lease on machine"),
        "{doc}"
    );
    assert_eq!(serving(&a.fly, STAGING), ["v2", "v2"]);
    a.fly.hold_leases_for(Duration::ZERO);

    // An image that never starts, and one whose checks never pass: the wait
    // runs out (5), its machines are destroyed, v2 keeps serving.
    for image in ["never-starts", "unhealthy"] {
        let before = a.fly.machines(STAGING).len();
        let (code, doc) = a.deploy_with_short_timeout(image);
        assert_eq!(code, 5, "{image}: {doc}");
        assert_eq!(serving(&a.fly, STAGING), ["v2", "v2"], "{image}");
        assert_eq!(
            a.fly.machines(STAGING).len(),
            before,
            "{image}: nothing left behind"
        );
    }
    // One that exits: the release failed (1), with the exit code.
    let (code, doc) = a.run(&["deploy", "staging", "--release", "crashes"]);
    assert_eq!(code, 1, "{doc}");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exit code"),
        "{doc}"
    );
    assert_eq!(serving(&a.fly, STAGING), ["v2", "v2"]);
    let (_, history) = a.run(&["history", "staging"]);
    assert_eq!(history["deployments"][0]["state"], "failed", "{history:#}");
    no_violations(&a.fly);
}

impl FlyArenas {
    /// Deploy `image`'s release into staging with a short `ready_timeout`.
    fn deploy_with_short_timeout(&self, image: &str) -> (i32, Value) {
        self.p.edit(
            "arenas/staging.yaml",
            "ready_timeout: 20s",
            "ready_timeout: 3s",
        );
        let out = self.run(&["deploy", "staging", "--release", image]);
        self.p.edit(
            "arenas/staging.yaml",
            "ready_timeout: 3s",
            "ready_timeout: 20s",
        );
        out
    }
}

#[test]
fn bad_settings_and_credentials_get_clear_errors() {
    let a = FlyArenas::new("");
    // No token: exit 3, the hint names the variable, never a value.
    let out =
        a.p.copilot(["--output", "json", "deploy", "staging", "--release", "v1"])
            .env("FLY_FLAPS_BASE_URL", &a.fly.api)
            .output()
            .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        doc["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("FLY_API_TOKEN"),
        "{doc}"
    );

    // An app Fly does not know: exit 3, naming it.
    a.p.edit(
        "arenas/staging.yaml",
        "app: copilot-staging",
        "app: copilot-nowhere",
    );
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v1"]);
    assert_eq!(code, 3, "{doc}");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("copilot-nowhere"),
        "{doc}"
    );
    a.p.edit(
        "arenas/staging.yaml",
        "app: copilot-nowhere",
        "app: copilot-staging",
    );

    // A region Fly rejects: exit 3, and nothing is left created.
    a.p.edit("arenas/staging.yaml", "region: dfw", "region: xyz");
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v1"]);
    assert_eq!(code, 3, "{doc}");
    assert!(
        doc["error"]["message"].as_str().unwrap().contains("xyz"),
        "{doc}"
    );
    assert!(
        a.fly.machines(STAGING).is_empty(),
        "{:?}",
        a.fly.machines(STAGING)
    );
    a.p.edit("arenas/staging.yaml", "region: xyz", "region: dfw");

    // Volumes cannot take a blue-green rollout: validate says so, where.
    a.p.edit(
        "arenas/staging.yaml",
        "  instances: 2\n",
        "  instances: 2\n  mounts: [\"data:/data\"]\n",
    );
    let out = a.p.copilot(["validate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = crate::common::stderr(&out);
    assert!(
        err.contains("staging.yaml:") && err.contains("volume"),
        "{err}"
    );
    assert!(err.contains("rolling"), "{err}");
    no_violations(&a.fly);
}

#[test]
fn a_machine_made_behind_copilots_back_shows_as_drift() {
    let a = FlyArenas::new("");
    assert_eq!(a.run(&["deploy", "staging", "--release", "v1"]).0, 0);
    let id = a
        .fly
        .run_by_hand(STAGING, "registry.fly.io/someone-else:latest");
    // Once it started and passes its checks.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let (_, status) = a.run(&["status", "staging"]);
        if status.to_string().contains("serves traffic") || Instant::now() > deadline {
            break status;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let arena = &status["arenas"][0];
    let drift = &arena["platform_drift"];
    assert!(
        drift
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["instance"] == id.as_str()
                && d["what"].as_str().unwrap().contains("serves traffic")),
        "{status:#}"
    );
    assert_eq!(arena["drift"], true, "{status:#}");
    // It takes a third of the requests: the colour's weight says so.
    let weight = arena["observed"]
        .as_object()
        .unwrap()
        .values()
        .find(|v| v["release"] == "v1")
        .unwrap()["weight"]
        .as_u64()
        .unwrap();
    assert_eq!(weight, 66, "{status:#}");
    // A promotion stops on it, naming the machine; adopted, it goes on.
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v2"]);
    assert_eq!(code, 4, "{doc}");
    assert!(
        doc["error"]["message"].as_str().unwrap().contains(&id),
        "{doc}"
    );
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v2", "--adopt-drift"]);
    assert_eq!(code, 0, "{doc}");
    no_violations(&a.fly);
}

#[test]
fn the_release_command_runs_once_before_the_new_colour_and_a_failure_stops_it() {
    let a = FlyArenas::new("  release_command: copilot-service migrate up\n");
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v1"]);
    assert_eq!(code, 0, "{doc}");
    let creates = a
        .fly
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST") && r.ends_with("/machines"))
        .count();
    assert_eq!(creates, 3, "one release machine, then two for the colour");
    a.p.edit(
        "arenas/staging.yaml",
        "release_command: copilot-service migrate up",
        "release_command: copilot-service migrate sideways",
    );
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v2"]);
    assert_eq!(code, 1, "{doc}");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("exited with"),
        "{doc}"
    );
    assert_eq!(serving(&a.fly, STAGING), ["v1", "v1"]);
    assert!(a.fly.machines(STAGING).iter().all(|m| m.2 == "v1"));
    no_violations(&a.fly);
}

#[test]
fn prism_refuses_requests_and_answers_that_break_the_spec() {
    let fly = FlyEmulator::start(&[(STAGING, &[])]);
    crate::rollouts::block_on(async {
        let http = reqwest::Client::new();
        // A request off the spec (an image that is not a string) never reaches the emulator.
        let r = http
            .post(format!("{}/v1/apps/{STAGING}/machines", fly.api))
            .bearer_auth(&fly.token)
            .json(&serde_json::json!({ "config": { "image": 42 } }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422);
        assert!(fly.requests().is_empty(), "{:?}", fly.requests());
        // An answer off the spec is caught on its way back.
        fly.inject(&[Fault::OffSpec]);
        let r = http
            .get(format!("{}/v1/apps/{STAGING}/machines", fly.api))
            .bearer_auth(&fly.token)
            .send()
            .await
            .unwrap();
        let status = r.status();
        assert_eq!(status, 500, "{}", r.text().await.unwrap_or_default());
    });
    assert!(!fly.violations().is_empty());
}

#[test]
fn rolling_on_fly_updates_the_live_machines_in_place_one_at_a_time() {
    let a = FlyArenas::with_strategy(
        "  mounts: [\"data:/data\"]\n",
        "strategy:\n  kind: rolling\n",
    );
    assert_eq!(a.run(&["deploy", "staging", "--release", "v1"]).0, 0);
    let before: Vec<String> = a.fly.machines(STAGING).into_iter().map(|m| m.0).collect();
    assert_eq!(before.len(), 2);
    let traffic = Traffic::start(a.fly.app_url(STAGING));
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v2"]);
    assert_eq!(code, 0, "{doc}");
    let seen = traffic.stop();
    let failed: Vec<_> = seen.iter().filter(|(_, _, ok)| !ok).collect();
    assert!(
        failed.is_empty(),
        "failed requests during the rolling update: {failed:?}"
    );
    assert!(seen.iter().any(|(_, r, _)| r == "v1") && seen.iter().any(|(_, r, _)| r == "v2"));
    // The same machines (and so their volumes), now on v2; none added.
    let after: Vec<String> = a.fly.machines(STAGING).into_iter().map(|m| m.0).collect();
    assert_eq!(after, before);
    assert_eq!(serving(&a.fly, STAGING), ["v2", "v2"]);
    let updates = a
        .fly
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST") && before.iter().any(|id| r.ends_with(id.as_str())))
        .count();
    assert_eq!(updates, 2, "one update per machine");
    no_violations(&a.fly);
}

/// The arena's lock as `status` reports it (`null` when free).
fn lock_of(a: &FlyArenas, arena: &str) -> Value {
    a.run(&["status", arena]).1["arenas"][0]["lock"].clone()
}

#[test]
fn a_429_on_any_fly_write_is_waited_out() {
    let a = FlyArenas::new("");
    // Machine creation is not idempotent, but a 429 is a refusal: sent again after the wait.
    a.fly.inject_on(
        &format!("POST /v1/apps/{STAGING}/machines"),
        Fault::Status(429, Some(1)),
    );
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v1"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(a.fly.pending_faults(), 0);
    assert_eq!(serving(&a.fly, STAGING), ["v1", "v1"]);
    // The same on a lease and on a cordon while switching.
    a.fly.inject_on("/lease", Fault::Status(429, Some(1)));
    a.fly.inject_on("/cordon", Fault::Status(429, None));
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v2"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(a.fly.pending_faults(), 0);
    assert_eq!(serving(&a.fly, STAGING), ["v2", "v2"]);
    no_violations(&a.fly);
}

#[test]
fn a_fault_in_the_middle_of_a_switch_puts_all_traffic_back() {
    let a = FlyArenas::new("");
    assert_eq!(a.run(&["deploy", "staging", "--release", "v1"]).0, 0);
    // The switch puts v2's machines in service, then takes v1's out; the
    // first cordon fails for good (a 500 on every one of its attempts).
    let fail_a_cordon = || {
        for _ in 0..copilot_core::http::RetryPolicy::default().attempts {
            a.fly.inject_on("/cordon", Fault::Status(500, None));
        }
    };
    for args in [
        &["deploy", "staging", "--release", "v2"][..],
        &[
            "promote",
            "local",
            "staging",
            "--release",
            "v2",
            "--yes",
            "--bake",
            "1s",
        ],
    ] {
        fail_a_cordon();
        let (code, doc) = a.run(args);
        assert_eq!(code, 3, "{args:?}: {doc}");
        assert_eq!(a.fly.pending_faults(), 0);
        assert_eq!(serving(&a.fly, STAGING), ["v1", "v1"], "{args:?}");
        assert!(
            a.fly.machines(STAGING).iter().all(|m| m.2 == "v1"),
            "{args:?}: v2's machines are gone: {:?}",
            a.fly.machines(STAGING)
        );
        let (_, history) = a.run(&["history", "staging"]);
        assert_eq!(
            history["deployments"][0]["state"], "rolled-back",
            "{args:?}: {history:#}"
        );
        let (_, status) = a.run(&["status", "staging"]);
        assert_eq!(status["arenas"][0]["live"]["version"], "v1", "{status:#}");
        assert_eq!(status["arenas"][0]["lock"], Value::Null, "{status:#}");
    }

    // When putting traffic back fails too, the deployment stays open (paused,
    // exit 5) with the split the platform has, and `abort` finishes it.
    fail_a_cordon();
    fail_a_cordon();
    let (code, doc) = a.run(&[
        "promote",
        "local",
        "staging",
        "--release",
        "v2",
        "--yes",
        "--bake",
        "1s",
    ]);
    assert_eq!(code, 5, "{doc}");
    assert_eq!(doc["state"], "paused", "{doc}");
    assert!(
        doc["summary"].as_str().unwrap().contains("copilot abort"),
        "{doc}"
    );
    let (_, status) = a.run(&["status", "staging"]);
    let traffic = &status["arenas"][0]["traffic"];
    assert!(
        traffic.to_string().contains("v1") && traffic.to_string().contains("v2"),
        "the ledger has the split the platform has: {status:#}"
    );
    let (code, doc) = a.run(&["abort", "staging"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(serving(&a.fly, STAGING), ["v1", "v1"]);
    no_violations(&a.fly);
}

#[test]
fn a_first_release_that_analysis_rejects_stops_serving() {
    let a = FlyArenas::new("");
    let (code, doc) = a.run(&[
        "promote",
        "staging",
        "canary",
        "--release",
        "v2-broken",
        "--yes",
        "--bake",
        "3s",
    ]);
    assert_eq!(code, 1, "{doc}");
    assert_eq!(doc["state"], "rolled-back", "{doc}");
    assert!(
        serving(&a.fly, CANARY).is_empty(),
        "{:?}",
        a.fly.machines(CANARY)
    );
    let (_, status) = a.run(&["status", "canary"]);
    let arena = &status["arenas"][0];
    assert_eq!(arena["live"], Value::Null, "{status:#}");
    assert_eq!(arena["drift"], false, "{status:#}");
    no_violations(&a.fly);
}

#[test]
fn a_command_that_fails_before_its_deployment_lets_go_of_the_lease() {
    let a = FlyArenas::new("");
    // A token Fly rejects: exit 3 on the first call, after the lease was taken.
    let out =
        a.p.copilot(["--output", "json", "deploy", "staging", "--release", "v1"])
            .env("FLY_FLAPS_BASE_URL", &a.fly.api)
            .env("FLY_API_TOKEN", "fo1_revoked")
            .output()
            .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        crate::common::stderr(&out)
    );
    assert!(
        !crate::common::stdout(&out).contains("fo1_revoked"),
        "the token is never shown"
    );
    assert_eq!(lock_of(&a, "staging"), Value::Null);
    assert_eq!(a.run(&["deploy", "staging", "--release", "v1"]).0, 0);
    assert_eq!(lock_of(&a, "staging"), Value::Null);
}

#[test]
fn a_machine_creation_whose_answer_is_lost_is_resolved_by_reading_the_app() {
    let a = FlyArenas::new("");
    // The first machine is made but its answer never arrives (past the 3 s
    // request timeout); a 503 on the second says nothing of whether it was made.
    a.fly.inject_on(
        &format!("POST /v1/apps/{STAGING}/machines"),
        Fault::LostAnswer(Duration::from_secs(4)),
    );
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v1"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(a.fly.pending_faults(), 0);
    // Exactly the machines asked for: none twice.
    assert_eq!(
        a.fly.machines(STAGING).len(),
        2,
        "{:?}",
        a.fly.machines(STAGING)
    );
    assert_eq!(serving(&a.fly, STAGING), ["v1", "v1"]);
    a.fly.inject_on(
        &format!("POST /v1/apps/{STAGING}/machines"),
        Fault::Status(503, None),
    );
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v2"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(serving(&a.fly, STAGING), ["v2", "v2"]);
    assert_eq!(a.fly.machines(STAGING).len(), 4, "v1 stays as the standby");
    no_violations(&a.fly);
}

#[test]
fn a_failed_start_keeps_the_standby_for_an_instant_rollback() {
    let a = FlyArenas::new("");
    assert_eq!(a.run(&["deploy", "staging", "--release", "v1"]).0, 0);
    assert_eq!(a.run(&["deploy", "staging", "--release", "v2"]).0, 0);
    // v1 is the standby in the colour the next release starts in; that
    // release never starts.
    let (code, doc) = a.deploy_with_short_timeout("never-starts");
    assert_eq!(code, 5, "{doc}");
    let mut versions: Vec<String> = a.fly.machines(STAGING).into_iter().map(|m| m.2).collect();
    versions.sort();
    assert_eq!(
        versions,
        ["v1", "v1", "v2", "v2"],
        "the standby is still there"
    );
    let (_, status) = a.run(&["status", "staging"]);
    let observed = status["arenas"][0]["observed"].to_string();
    assert!(
        observed.contains("v1") && observed.contains("v2"),
        "{status:#}"
    );
    let (code, doc) = a.run(&["rollback", "staging", "--reason", "v2 is bad"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["to"], "v1", "{doc}");
    assert_eq!(doc["redeployed"], false, "an instant switch: {doc}");
    assert_eq!(serving(&a.fly, STAGING), ["v1", "v1"]);
    no_violations(&a.fly);
}

#[test]
fn machines_leave_service_only_after_fly_proxy_has_seen_their_replacements() {
    // Without the wait, the old machines are cordoned before the proxy routes
    // to the new ones: requests find no machine.
    let a = FlyArenas::new("");
    a.p.edit(
        "arenas/staging.yaml",
        &format!("proxy_wait: {PROXY_WAIT}"),
        "proxy_wait: 0s",
    );
    assert_eq!(a.run(&["deploy", "staging", "--release", "v1"]).0, 0);
    let traffic = Traffic::start(a.fly.app_url(STAGING));
    assert_eq!(a.run(&["deploy", "staging", "--release", "v2"]).0, 0);
    let seen = traffic.stop();
    assert!(
        seen.iter().any(|(_, _, ok)| !ok),
        "the emulated proxy's lag shows without the wait ({} requests)",
        seen.len()
    );
    // With it (the other tests' arenas), a switch loses nothing, once the
    // proxy has caught up with the last one.
    std::thread::sleep(PROXY_LAG * 2);
    a.p.edit(
        "arenas/staging.yaml",
        "proxy_wait: 0s",
        &format!("proxy_wait: {PROXY_WAIT}"),
    );
    let traffic = Traffic::start(a.fly.app_url(STAGING));
    assert_eq!(a.run(&["deploy", "staging", "--release", "v1"]).0, 0);
    let seen = traffic.stop();
    let failed = seen.iter().filter(|(_, _, ok)| !ok).count();
    assert_eq!(failed, 0, "of {} requests", seen.len());
}

#[test]
fn a_rollback_drill_on_fly_is_measured_through_the_apps_url_against_the_targets() {
    let a = FlyArenas::new("");
    assert_eq!(a.run(&["deploy", "staging", "--release", "v1"]).0, 0);
    assert_eq!(
        a.run(&["promote", "staging", "canary", "--yes", "--bake", "1s"])
            .0,
        0
    );
    let (code, doc) = a.run(&["drill", "rollback", "canary", "--bake", "3s"]);
    assert_eq!(code, 0, "{doc:#}");
    let d = &doc["drill"];
    assert_eq!(d["outcome"], "rolled-back", "{d:#}");
    assert_eq!(d["metric"], "error_rate");
    assert_eq!(d["faulty"], "v1-drill1");
    for t in d["timings"].as_array().unwrap() {
        assert!(t["measured_ms"].as_u64().is_some(), "{t}");
        assert_eq!(t["met"], true, "{t}");
    }
    assert!(d["seen"]["requests"].as_u64().unwrap() > 10, "{d:#}");
    // The drill leaves the arena as it found it.
    assert_eq!(serving(&a.fly, CANARY), ["v1", "v1", "v1", "v1"]);
    let (_, history) = a.run(&["history", "canary"]);
    assert_eq!(history["deployments"][0]["kind"], "drill", "{history:#}");
    assert_eq!(history["deployments"][0]["state"], "rolled-back");
    let (_, incidents) = a.run(&["incident", "list"]);
    assert_eq!(
        incidents["incidents"],
        serde_json::json!([]),
        "a drill is no incident"
    );
    no_violations(&a.fly);
}
