//! The ECS provider against moto (`ecs_emulator`): copilot speaks to moto's
//! ECS, ELBv2 and CloudWatch through the AWS SDK; the emulated ECS agent
//! runs every task as a real `copilot-service` process, and the emulated ALB
//! carries real traffic with the weights moto's listener holds.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Project, free_port};
use crate::ecs_emulator::{Aws, CLUSTER, Fault, REJECTED_KEY, SERVICE, WEBHOOK_SECRET_NAME};

const PROBE_ANALYSIS: &str = "    interval: 250ms\n    min_samples: 1\n    metrics:\n\
     \x20     - { name: error_rate, max: 0.05, window: 5m, on_fail: rollback }\n";

const BLUE_GREEN: &str = "strategy:\n  kind: blue-green\n  steps: [{ weight: 10, bake: 5m }, { weight: 50, bake: 5m }, { weight: 100, bake: 5m }]\n";

/// A project whose `canary` runs on the local provider and whose
/// `production` runs on the emulated ECS, promoted from canary.
struct EcsArenas {
    p: Project,
    aws: Aws,
}

impl EcsArenas {
    fn new(analysis: &str) -> EcsArenas {
        Self::with(analysis, false)
    }

    fn with(analysis: &str, circuit_breaker: bool) -> EcsArenas {
        let aws = Aws::start(circuit_breaker);
        let p = Project::init();
        let url = aws.alb_url.clone();
        p.write(
            "arenas/canary.yaml",
            &format!(
                "name: canary\ntier: canary\npromotes_from: local\nprovider:\n  kind: local\n  port: {}\n\
                 strategy:\n  kind: immediate\n\
                 env:\n  values: {{ SHOPIFY_API_VERSION: \"2026-10\", DATABASE_URL: \"sqlite://copilot.db\" }}\n",
                free_port()
            ),
        );
        p.write(
            "arenas/production.yaml",
            &format!(
                "name: production\ntier: production\npromotes_from: canary\n\
                 provider:\n  kind: ecs\n  region: us-east-1\n  cluster: {CLUSTER}\n  service: {SERVICE}\n  family: {SERVICE}\n\
                 \x20 listener: {listener}\n  target_groups: {{ blue: {CLUSTER}-blue, green: {CLUSTER}-green }}\n\
                 \x20 url: {url}\n  instances: 2\n  ready_timeout: 30s\n\
                 {BLUE_GREEN}  analysis:\n{analysis}\
                 gates:\n  after: [health]\n\
                 env:\n  values: {{ SHOPIFY_API_VERSION: \"2026-10\", DATABASE_URL: \"sqlite://copilot.db\", APP_URL: \"{url}\" }}\n\
                 \x20 secrets: {{ SHOPIFY_WEBHOOK_SECRET: \"aws-sm:{WEBHOOK_SECRET_NAME}\" }}\n\
                 rollback:\n  keep_standby: 30m\n  automatic: true\n",
                listener = aws.listener_arn,
            ),
        );
        for f in ["staging", "hotfix", "preview"] {
            let _ = std::fs::remove_file(p.path(&format!("arenas/{f}.yaml")));
        }
        let out = p.copilot(["validate"]).output().unwrap();
        assert!(out.status.success(), "{}", crate::common::stderr(&out));
        for (image, env) in [
            (
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/copilot:v1",
                None,
            ),
            (
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/copilot:v2",
                None,
            ),
            (
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/copilot:v2-broken",
                Some("COPILOT_FAULT_5XX_RATE=0.5"),
            ),
            (
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/copilot:never-starts",
                None,
            ),
            (
                "123456789012.dkr.ecr.us-east-1.amazonaws.com/copilot:crashes",
                Some("SHOPIFY_API_VERSION=not-a-version"),
            ),
        ] {
            let mut cmd = p.copilot(["release", "create", "--image", image]);
            if let Some(e) = env {
                cmd.args(["--env", e]);
            }
            cmd.assert().success();
        }
        EcsArenas { p, aws }
    }

    fn run_with(&self, args: &[&str], env: &[(&str, String)]) -> (i32, Value) {
        let mut cmd = self.p.copilot(["--output", "json"]);
        for (k, v) in env {
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

    fn run(&self, args: &[&str]) -> (i32, Value) {
        self.run_with(args, &self.aws.env())
    }

    /// `version` live in canary, then promoted to production.
    fn release(&self, version: &str, bake: &str) -> (i32, Value) {
        let (code, doc) = self.run(&["deploy", "canary", "--release", version]);
        assert_eq!(code, 0, "{doc}");
        self.run(&["promote", "canary", "production", "--yes", "--bake", bake])
    }

    fn spawn(&self, args: &[&str]) -> std::process::Child {
        let env = self.aws.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.p.spawn(args, &env)
    }
}

/// What the ALB answers for `/health`, by release, over `n` requests.
fn served(aws: &Aws, n: usize) -> Vec<String> {
    let http = reqwest::Client::new();
    let url = format!("{}/health", aws.alb_url);
    let mut v: Vec<String> = aws.block_on(async {
        let mut out = Vec::new();
        for _ in 0..n {
            let release = match http.get(&url).send().await {
                Ok(r) if r.status().is_success() => r
                    .json::<Value>()
                    .await
                    .ok()
                    .and_then(|b| b["release"].as_str().map(str::to_string)),
                _ => None,
            };
            out.push(release.unwrap_or_else(|| "none".into()));
        }
        out
    });
    v.sort();
    v.dedup();
    v
}

/// What the ALB serves once it took up the listener's weights (it reads
/// them from moto ten times a second, as a real ALB takes seconds).
fn settled(aws: &Aws) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let v = served(aws, 20);
        if v.len() == 1 || Instant::now() > deadline {
            return v;
        }
    }
}

/// Requests sent through the ALB while a test runs: (time, release, ok).
struct Traffic {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<(Instant, String, bool)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    fn start(url: &str) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, v, url) = (stop.clone(), seen.clone(), format!("{url}/health"));
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let http = reqwest::Client::new();
                while !s.load(Ordering::Relaxed) {
                    let (release, ok) = match http.get(&url).send().await {
                        Ok(r) if r.status().is_success() => {
                            let body: Value = r.json().await.unwrap_or_default();
                            (body["release"].as_str().unwrap_or("?").to_string(), true)
                        }
                        Ok(r) => (format!("status {}", r.status()), false),
                        Err(e) => (e.to_string(), false),
                    };
                    v.lock().unwrap().push((Instant::now(), release, ok));
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
        });
        Traffic {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn stop(mut self) -> Vec<(Instant, String, bool)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.seen.lock().unwrap().clone()
    }
}

/// Services with tasks, and task definitions they run, per moto and the agent.
fn running_services(aws: &Aws) -> Vec<(String, i32)> {
    let mut v: Vec<(String, i32)> = aws
        .services()
        .into_iter()
        .filter(|(_, _, d)| *d > 0)
        .map(|(s, _, d)| (s, d))
        .collect();
    v.sort();
    v
}

#[test]
fn blue_green_on_ecs_shifts_the_listener_with_traffic_flowing_and_rolls_back() {
    let a = EcsArenas::new(PROBE_ANALYSIS);
    let (code, doc) = a.release("v1", "1s");
    assert_eq!(code, 0, "{doc}");
    assert_eq!(settled(&a.aws), ["v1"]);

    assert_eq!(a.run(&["deploy", "canary", "--release", "v2"]).0, 0);
    let traffic = Traffic::start(&a.aws.alb_url);
    let (code, doc) = a.run(&["promote", "canary", "production", "--yes", "--bake", "3s"]);
    let seen = traffic.stop();
    assert_eq!(code, 0, "{doc}");
    let failed: Vec<_> = seen.iter().filter(|(_, _, ok)| !ok).collect();
    assert!(
        failed.is_empty(),
        "failed requests: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert_eq!(settled(&a.aws), ["v2"]);

    // The split seen while each weight baked is the listener's.
    let steps = crate::rollouts::ledger_steps(&a.p, doc["deployment"].as_str().unwrap());
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
        ]
    );
    let t0 = seen.first().unwrap().0;
    let wall0 = steps[0].started_at;
    for weight in [10u32, 50] {
        let bake = steps
            .iter()
            .find(|s| s.name == format!("bake-{weight}"))
            .unwrap();
        // The data plane reads the listener ten times a second.
        let from = t0 + (bake.started_at - wall0).to_std().unwrap() + Duration::from_millis(300);
        let to = t0 + (bake.finished_at.unwrap() - wall0).to_std().unwrap();
        let window: Vec<_> = seen
            .iter()
            .filter(|(t, _, _)| *t >= from && *t <= to)
            .collect();
        let v2 = window.iter().filter(|(_, r, _)| r == "v2").count();
        assert!(window.len() > 50, "{} requests at {weight}%", window.len());
        let share = v2 as f64 * 100.0 / window.len() as f64;
        // Four standard deviations of a binomial share at this sample size.
        let n = window.len() as f64;
        let p = f64::from(weight) / 100.0;
        let tolerance = 400.0 * (p * (1.0 - p) / n).sqrt() + 1.0;
        assert!(
            (share - f64::from(weight)).abs() < tolerance,
            "{share:.1}% of {n} requests on v2 at {weight}% (tolerance {tolerance:.1})"
        );
    }
    // The ledger has the weights read back from the listener.
    let shift = steps.iter().find(|s| s.name == "shift-10").unwrap();
    let outcome = &shift.outcome.as_ref().unwrap().0;
    let mut weights: Vec<u64> = outcome["weights"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v["weight"].as_u64().unwrap())
        .collect();
    weights.sort();
    assert_eq!(weights, [10, 90], "{outcome}");
    // The old colour stays up as the standby, out of traffic.
    assert_eq!(running_services(&a.aws).len(), 2);
    let w = a.aws.weights();
    assert_eq!(w.values().copied().max(), Some(100), "{w:?}");

    let (_, status) = a.run(&["status", "production"]);
    let arena = &status["arenas"][0];
    assert_eq!(arena["live"]["version"], "v2", "{status:#}");
    assert_eq!(arena["drift"], false, "{status:#}");
    assert_eq!(arena["platform_drift"], serde_json::json!([]), "{status:#}");

    // On-call: the standby takes the traffic back at once.
    let (code, doc) = a.run(&["rollback", "production", "--reason", "checkout errors"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["redeployed"], false, "{doc}");
    assert!(doc["switch_ms"].as_u64().is_some(), "{doc}");
    assert_eq!(settled(&a.aws), ["v1"]);

    // Weights changed by hand show as drift.
    let w = a.aws.weights();
    let (blue, green) = (w["blue"], w["green"]);
    a.aws.weigh_by_hand(green, blue);
    let (_, status) = a.run(&["status", "production"]);
    assert_eq!(status["arenas"][0]["drift"], true, "{status:#}");
}
