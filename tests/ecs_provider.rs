//! The ECS provider against moto (`ecs_emulator`): copilot speaks to moto's
//! ECS, ELBv2 and CloudWatch through the AWS SDK; the emulated ECS agent
//! runs every task as a real `copilot-service` process, and the emulated ALB
//! carries real traffic with the weights moto's listener holds.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Project, Traffic, free_port, sent_during};
use crate::ecs_emulator::{Aws, CLUSTER, Fault, REJECTED_KEY, SERVICE, WEBHOOK_SECRET_NAME};

pub(crate) const PROBE_ANALYSIS: &str = "    interval: 250ms\n    min_samples: 1\n    metrics:\n\
     \x20     - { name: error_rate, max: 0.05, window: 5m, on_fail: rollback }\n";

const BLUE_GREEN: &str = "strategy:\n  kind: blue-green\n  steps: [{ weight: 10, bake: 5m }, { weight: 50, bake: 5m }, { weight: 100, bake: 5m }]\n";

/// A project whose `canary` runs on the local provider and whose
/// `production` runs on the emulated ECS, promoted from canary.
pub(crate) struct EcsArenas {
    pub(crate) p: Project,
    pub(crate) aws: Aws,
}

impl EcsArenas {
    pub(crate) fn new(analysis: &str) -> EcsArenas {
        Self::with(analysis, false, None)
    }

    /// `now`: every command's clock, pinned.
    fn with(analysis: &str, circuit_breaker: bool, now: Option<&str>) -> EcsArenas {
        let aws = Aws::start(circuit_breaker);
        let p = Project::init_at(now);
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

    pub(crate) fn run(&self, args: &[&str]) -> (i32, Value) {
        self.run_with(args, &self.aws.env())
    }

    /// `version` live in canary, then promoted to production.
    pub(crate) fn release(&self, version: &str, bake: &str) -> (i32, Value) {
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
    served_as(aws, None, n)
}

/// What the ALB serves once it took up the listener's weights (it reads
/// them from moto ten times a second, as a real ALB takes seconds).
pub(crate) fn settled(aws: &Aws) -> Vec<String> {
    aws.alb_caught_up(Duration::from_secs(15));
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        let v = served(aws, 20);
        if v.len() == 1 || Instant::now() > deadline {
            return v;
        }
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
    for weight in [10u32, 50] {
        let bake = steps
            .iter()
            .find(|s| s.name == format!("bake-{weight}"))
            .unwrap();
        // The data plane reads the listener ten times a second.
        let window = sent_during(&seen, bake, Duration::from_millis(300));
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

    // What `copilot render` shows is what was registered.
    let out_dir = a.p.path("rendered");
    a.p.copilot(["render", "production", "--release", "v2", "--out"])
        .arg(&out_dir)
        .assert()
        .success();
    let rendered: Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.join("ecs-task-definition.json")).unwrap(),
    )
    .unwrap();
    let weights = a.aws.weights();
    let live_colour = weights.iter().find(|(_, w)| **w == 100).unwrap().0;
    let live_td = a
        .aws
        .services()
        .into_iter()
        .find(|(s, _, _)| *s == format!("{SERVICE}-{live_colour}"))
        .map(|(_, td, _)| td)
        .unwrap();
    let registered = a.aws.block_on(async {
        a.aws
            .ecs
            .describe_task_definition()
            .task_definition(&live_td)
            .send()
            .await
            .unwrap()
    });
    let td = registered.task_definition().unwrap();
    let c = &td.container_definitions()[0];
    let r = &rendered["containerDefinitions"][0];
    assert_eq!(td.family(), rendered["family"].as_str());
    assert_eq!(td.cpu(), rendered["cpu"].as_str());
    assert_eq!(td.memory(), rendered["memory"].as_str());
    assert_eq!(c.image(), r["image"].as_str());
    assert_eq!(
        c.command(),
        r["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    );
    let env: std::collections::BTreeMap<&str, &str> = c
        .environment()
        .iter()
        .map(|kv| (kv.name().unwrap(), kv.value().unwrap()))
        .collect();
    for kv in r["environment"].as_array().unwrap() {
        assert_eq!(
            env.get(kv["name"].as_str().unwrap()).copied(),
            kv["value"].as_str(),
            "{kv}"
        );
    }
    let secrets: Vec<(&str, &str)> = c
        .secrets()
        .iter()
        .map(|s| (s.name(), s.value_from()))
        .collect();
    // The arena names the secret; the task definition has its ARN.
    assert_eq!(secrets.len(), 1, "{secrets:?}");
    assert_eq!(secrets[0].0, "SHOPIFY_WEBHOOK_SECRET");
    assert!(
        secrets[0]
            .1
            .starts_with("arn:aws:secretsmanager:us-east-1:")
            && secrets[0].1.contains(WEBHOOK_SECRET_NAME),
        "{secrets:?}"
    );
    assert_eq!(
        c.health_check().map(|h| h.command().to_vec()),
        r["healthCheck"]["command"]
            .as_array()
            .map(|a| a.iter().map(|x| x.as_str().unwrap().to_string()).collect())
    );

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

const CLOUDWATCH_ANALYSIS: &str = "    interval: 500ms\n    min_samples: 20\n    metrics:\n\
     \x20     - { name: error_rate, source: cloudwatch, max: 0.05, window: 1m, on_fail: rollback }\n";

#[test]
fn a_release_answering_5xx_is_rolled_back_by_cloudwatch_metrics() {
    let a = EcsArenas::new(CLOUDWATCH_ANALYSIS);
    // Merchants' requests, through the load balancer: what CloudWatch counts.
    let traffic = Traffic::to(&format!("{}/api/flags", a.aws.alb_url));
    let (code, doc) = a.release("v1", "4s");
    assert_eq!(code, 0, "{doc}");
    assert_eq!(a.run(&["deploy", "canary", "--release", "v2-broken"]).0, 0);
    let (code, doc) = a.run(&["promote", "canary", "production", "--yes", "--bake", "20s"]);
    traffic.stop();
    if code != 1 {
        let steps = crate::rollouts::ledger_steps(&a.p, doc["deployment"].as_str().unwrap());
        for s in steps {
            eprintln!("{} {:?}", s.name, s.outcome);
        }
    }
    assert_eq!(code, 1, "{doc}");
    assert_eq!(settled(&a.aws), ["v1"]);
    // The broken colour is scaled to zero; v1 keeps its two tasks.
    assert_eq!(
        running_services(&a.aws)
            .iter()
            .map(|(_, d)| *d)
            .collect::<Vec<_>>(),
        [2]
    );
    let steps = crate::rollouts::ledger_steps(&a.p, doc["deployment"].as_str().unwrap());
    let bake = steps.iter().find(|s| s.name == "bake-10").unwrap();
    let report = &bake.outcome.as_ref().unwrap().0;
    assert_eq!(report["metrics"][0]["source"], "cloudwatch", "{report:#}");
    let verdict = report["verdict"].to_string();
    assert!(verdict.contains("error_rate"), "{report:#}");
    let (_, history) = a.run(&["history", "production"]);
    assert_eq!(
        history["deployments"][0]["state"], "rolled-back",
        "{history:#}"
    );
    // The metrics were read from CloudWatch, put there by the ALB.
    assert!(a.aws.requests().iter().any(|r| r == "GetMetricData"));
}

#[test]
fn a_circuit_breaker_rollback_by_ecs_is_reported_as_such_never_as_success() {
    let a = EcsArenas::with(PROBE_ANALYSIS, true, None);
    assert_eq!(a.release("v1", "1s").0, 0);
    assert_eq!(a.run(&["deploy", "canary", "--release", "v2"]).0, 0);
    assert_eq!(
        a.run(&["promote", "canary", "production", "--yes", "--bake", "1s"])
            .0,
        0
    );
    // A release whose tasks exit at once: ECS's circuit breaker rolls its
    // colour back to the revision it ran before (v1, the standby's).
    let (code, doc) = a.run(&["deploy", "production", "--release", "crashes"]);
    assert_eq!(code, 1, "{doc}");
    let message = doc["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
        + doc["summary"].as_str().unwrap_or_default();
    assert!(
        message.contains("ECS rolled the deployment back"),
        "{doc:#}"
    );
    assert!(message.contains("circuit breaker"), "{doc:#}");
    assert_eq!(settled(&a.aws), ["v2"]);
    let (_, history) = a.run(&["history", "production"]);
    let last = &history["deployments"][0];
    assert_eq!(last["state"], "rolled-back", "{history:#}");
    assert_eq!(last["version"], "crashes", "{history:#}");
    let (_, status) = a.run(&["status", "production"]);
    assert_eq!(status["arenas"][0]["live"]["version"], "v2", "{status:#}");
}

#[test]
fn killed_at_each_step_of_an_ecs_promotion_resume_or_rollback_finish_it() {
    let a = EcsArenas::new(PROBE_ANALYSIS);
    assert_eq!(a.release("v1", "1s").0, 0);
    assert_eq!(a.run(&["deploy", "canary", "--release", "v2"]).0, 0);
    // deploy-idle, shift-10, bake-10, shift-50, bake-50, shift-100, bake-100.
    for (k, recover) in [
        (1, "resume"),
        (3, "rollback"),
        (5, "resume"),
        (7, "rollback"),
    ] {
        let live = a.run(&["status", "production"]).1["arenas"][0]["live"]["version"]
            .as_str()
            .unwrap()
            .to_string();
        let next = if live == "v1" { "v2" } else { "v1" };
        let mut child = a.spawn(&[
            "promote",
            "canary",
            "production",
            "--release",
            next,
            "--yes",
            "--bake",
            "3s",
        ]);
        crate::rollouts::wait_for_step(&a.p, "production", k, &mut child);
        if k == 1 {
            // Killed while ECS starts the tasks it was asked for.
            let deadline = Instant::now() + Duration::from_secs(30);
            while !a
                .aws
                .tasks()
                .iter()
                .any(|t| t.0.ends_with("green") || t.0.ends_with("blue"))
            {
                assert!(Instant::now() < deadline, "no task started");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let args: Vec<&str> = if recover == "resume" {
            vec!["resume", "production", "--bake", "1s"]
        } else {
            vec!["rollback", "production"]
        };
        let (code, doc) = a.run(&args);
        assert_eq!(code, 0, "{recover} after a kill at step {k}: {doc}");
        let expected = if recover == "resume" {
            next
        } else {
            live.as_str()
        };
        assert_eq!(settled(&a.aws), [expected], "after {recover} at step {k}");
        // One release per colour, no service beyond the two, the listener on one.
        let w = a.aws.weights();
        assert_eq!(w.values().copied().max(), Some(100), "{w:?}");
        let (_, status) = a.run(&["status", "production"]);
        let s = &status["arenas"][0];
        assert_eq!(s["live"]["version"], expected, "{status:#}");
        assert_eq!(s["drift"], false, "ledger and ECS agree: {status:#}");
        assert_eq!(s["platform_drift"], serde_json::json!([]), "{status:#}");
        // Every task definition in use is one copilot registered.
        for (service, td, desired) in a.aws.services() {
            if desired == 0 {
                continue;
            }
            let tags = a.aws.block_on(async {
                a.aws
                    .ecs
                    .describe_task_definition()
                    .task_definition(&td)
                    .include(aws_sdk_ecs::types::TaskDefinitionField::Tags)
                    .send()
                    .await
                    .unwrap()
                    .tags()
                    .len()
            });
            assert!(
                tags > 0,
                "{service} runs {td}, which copilot did not register"
            );
        }
        if recover == "rollback" {
            a.p.copilot(["unlock", "production"]).assert().success();
        }
    }
}

#[test]
fn throttling_and_5xx_are_retried_and_credentials_missing_or_rejected_exit_3() {
    let a = EcsArenas::new(PROBE_ANALYSIS);
    a.aws.inject(
        Some("UpdateService"),
        &[Fault::Throttle, Fault::Unavailable],
    );
    a.aws.inject(Some("ModifyListener"), &[Fault::Throttle]);
    a.aws.inject(
        Some("DescribeServices"),
        &[Fault::Unavailable, Fault::Throttle],
    );
    let (code, doc) = a.release("v1", "1s");
    assert_eq!(code, 0, "{doc}");
    assert_eq!(a.aws.pending_faults(), 0);
    assert_eq!(settled(&a.aws), ["v1"]);

    // No credentials anywhere in the chain.
    let env: Vec<(&str, String)> = a
        .aws
        .env()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("AWS_ACCESS") && !k.starts_with("AWS_SECRET"))
        .chain([
            ("AWS_CONFIG_FILE", "/nonexistent/config".to_string()),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                "/nonexistent/credentials".to_string(),
            ),
        ])
        .collect();
    let (code, doc) = a.run_with(&["status", "production"], &env);
    assert_eq!(code, 0, "status still answers from the ledger: {doc}");
    let (code, doc) = a.run_with(&["rollback", "production"], &env);
    assert_eq!(code, 3, "{doc}");
    let hint = doc["error"]["hint"].as_str().unwrap_or_default();
    assert!(hint.contains("AWS_ACCESS_KEY_ID"), "{doc:#}");

    // Credentials AWS does not know.
    let mut env = a.aws.env();
    env.retain(|(k, _)| *k != "AWS_ACCESS_KEY_ID");
    env.push(("AWS_ACCESS_KEY_ID", REJECTED_KEY.to_string()));
    let (code, doc) = a.run_with(&["rollback", "production"], &env);
    assert_eq!(code, 3, "{doc}");
    let text = doc.to_string();
    assert!(
        text.contains("security token included in the request is invalid"),
        "{doc:#}"
    );
    assert!(!text.contains("emulated-secret-access-key"), "{doc:#}");
    assert_eq!(settled(&a.aws), ["v1"], "nothing changed");
}

#[test]
fn the_backup_gate_reads_rds_snapshots_fresh_passes_stale_fails() {
    let a = EcsArenas::new(PROBE_ANALYSIS);
    a.aws.block_on(async {
        a.aws
            .rds
            .create_db_instance()
            .db_instance_identifier("copilot-production")
            .engine("postgres")
            .db_instance_class("db.t3.micro")
            .allocated_storage(20)
            .master_username("copilot")
            .master_user_password("not-a-real-password")
            .send()
            .await
            .unwrap();
        a.aws
            .rds
            .create_db_snapshot()
            .db_instance_identifier("copilot-production")
            .db_snapshot_identifier("before-v2")
            .send()
            .await
            .unwrap();
    });
    a.p.write(
        "gates/backup.yaml",
        "name: backup\nkind: backup\ntimeout: 1m\nparams:\n  source: rds-snapshots\n  db_instance: copilot-production\n  max_age: 24h\n",
    );
    // Pinned a minute after the snapshot, then two days after it.
    let soon = (chrono::Utc::now() + chrono::Duration::minutes(1)).to_rfc3339();
    let later = (chrono::Utc::now() + chrono::Duration::days(2)).to_rfc3339();
    let gate = |now: &str| {
        let mut env = a.aws.env();
        env.push(("COPILOT_NOW", now.to_string()));
        a.run_with(&["gate", "run", "production", "--gate", "backup"], &env)
    };
    let (code, doc) = gate(&soon);
    assert_eq!(code, 0, "{doc:#}");
    assert!(doc.to_string().contains("before-v2"), "{doc:#}");
    let (code, doc) = gate(&later);
    assert_eq!(code, 1, "{doc:#}");
    assert!(
        doc.to_string().contains("48h old, more than 24h"),
        "{doc:#}"
    );
    assert!(!doc.to_string().contains("not-a-real-password"));
    // An instance RDS does not have fails, naming it.
    a.p.edit(
        "gates/backup.yaml",
        "db_instance: copilot-production",
        "db_instance: copilot-typo",
    );
    let (code, doc) = gate(&soon);
    assert_eq!(code, 1, "{doc:#}");
    assert!(doc.to_string().contains("copilot-typo"), "{doc:#}");
}

#[test]
fn a_rollback_after_keep_standby_ran_out_brings_back_the_recorded_revision() {
    let a = EcsArenas::with(PROBE_ANALYSIS, false, Some("2026-12-01T12:00:00Z"));
    assert_eq!(a.release("v1", "1s").0, 0);
    let v1_revision = a
        .aws
        .services()
        .into_iter()
        .find(|(_, _, d)| *d > 0)
        .map(|(_, td, _)| td)
        .unwrap();
    assert_eq!(a.release("v2", "1s").0, 0);
    let standby = a
        .aws
        .services()
        .into_iter()
        .find(|(_, td, _)| *td == v1_revision)
        .map(|(s, _, _)| s)
        .unwrap();
    // The scheduled job: the standby is kept for `keep_standby` (30m) after
    // the switch, then scaled to zero.
    let down_at = |at: &str| {
        let mut env = a.aws.env();
        env.push(("COPILOT_NOW", at.to_string()));
        a.run_with(&["down", "production", "--standby"], &env)
    };
    let (code, doc) = down_at("2026-12-01T12:10:00Z");
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["standby"], "kept", "{doc}");
    assert_eq!(doc["version"], "v1", "{doc}");
    assert!(
        a.aws.tasks().iter().any(|t| t.0 == standby),
        "still running"
    );
    let (code, doc) = down_at("2026-12-01T12:31:00Z");
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["standby"], "retired", "{doc}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.aws.tasks().iter().any(|t| t.0 == standby) {
        assert!(
            Instant::now() < deadline,
            "the standby's tasks did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(settled(&a.aws), ["v2"], "the live colour is untouched");
    let (code, doc) = a.run(&["rollback", "production", "--reason", "v2 drops carts"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["redeployed"], true, "{doc}");
    assert_eq!(settled(&a.aws), ["v1"]);
    // The service runs v1's recorded revision again, not a new one.
    let services = a.aws.services();
    let back = services.iter().find(|(s, _, _)| *s == standby).unwrap();
    assert_eq!(back.1, v1_revision, "{services:?}");
    assert_eq!(back.2, 2, "{services:?}");

    // Without `url`, the arena's address is the load balancer's.
    let url_line = format!("  url: {}\n", a.aws.alb_url);
    a.p.edit("arenas/production.yaml", &url_line, "");
    a.p.copilot(["unlock", "production"]).assert().success();
    let (code, doc) = a.run(&["deploy", "production", "--release", "v2"]);
    assert_eq!(code, 0, "{doc}");
    let url = doc["detail"]["url"].as_str().unwrap_or_default();
    assert!(
        url.starts_with("http://copilot-production") && url.contains(".elb.amazonaws.com"),
        "{doc}"
    );
}

#[test]
fn a_first_promote_adopts_the_service_a_team_already_runs_and_rolls_back_to_it() {
    let a = EcsArenas::new(PROBE_ANALYSIS);
    // The team's service runs its own task definition (carrying copilot's
    // arena tag, as one copied by hand might), with all the listener's traffic.
    let theirs = "123456789012.dkr.ecr.us-east-1.amazonaws.com/shop:2024-11";
    a.aws.run_by_hand("blue", theirs, 2);
    let deadline = Instant::now() + Duration::from_secs(30);
    while served(&a.aws, 10) != ["by-hand"] {
        assert!(Instant::now() < deadline, "{:?}", served(&a.aws, 10));
        std::thread::sleep(Duration::from_millis(300));
    }
    let traffic = Traffic::start(&a.aws.alb_url);
    let (code, doc) = a.release("v2", "1s");
    let seen = traffic.stop();
    assert_eq!(code, 0, "{doc}");
    let failed: Vec<_> = seen.iter().filter(|(_, _, ok)| !ok).collect();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed while the adopted service handed over: {:?}",
        failed.len(),
        seen.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(settled(&a.aws), ["v2"]);
    // The adopted service is the standby, and the first rollback goes back to it.
    let (_, history) = a.run(&["history", "production"]);
    assert_eq!(
        history["deployments"][0]["state"], "succeeded",
        "{history:#}"
    );
    let (code, doc) = a.run(&["rollback", "production", "--reason", "back to theirs"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["to"], "adopted-2024-11", "{doc}");
    assert_eq!(doc["redeployed"], false, "an instant switch: {doc}");
    assert_eq!(settled(&a.aws), ["by-hand"]);
    let (_, releases) = a.run(&["release", "list"]);
    assert!(
        releases.to_string().contains(theirs),
        "the adopted release is in the ledger with its image: {releases:#}"
    );
}

#[test]
fn a_listener_changed_by_hand_stops_a_promote_until_the_drift_is_adopted() {
    let a = EcsArenas::new(PROBE_ANALYSIS);
    let (code, doc) = a.release("v1", "1s");
    assert_eq!(code, 0, "{doc}");
    // Someone sends 10% to the other colour by hand: it runs no tasks.
    let live_colour = a.run(&["status", "production"]).1["arenas"][0]["live"]["slot"]
        .as_str()
        .map(str::to_string);
    let (blue, green) = match live_colour.as_deref() {
        Some("green") => (10, 90),
        _ => (90, 10),
    };
    a.aws.weigh_by_hand(blue, green);
    let (code, doc) = a.run(&["status", "production"]);
    assert_eq!(code, 0, "{doc}");
    let drift = doc["arenas"][0]["platform_drift"].to_string();
    assert!(drift.contains("runs no tasks"), "{doc:#}");

    let (code, _) = a.run(&["deploy", "canary", "--release", "v2"]);
    assert_eq!(code, 0);
    let (code, doc) = a.run(&["promote", "canary", "production", "--yes", "--bake", "1s"]);
    assert_eq!(code, 4, "{doc}");
    let message = doc["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("10%") && message.contains("runs no tasks"),
        "{doc}"
    );
    assert!(
        doc["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("--adopt-drift"),
        "{doc}"
    );
    // Nothing changed, and nothing holds the arena.
    let (_, history) = a.run(&["history", "production"]);
    assert_eq!(
        history["deployments"].as_array().unwrap().len(),
        1,
        "{history:#}"
    );
    assert_eq!(
        a.run(&["status", "production"]).1["arenas"][0]["lock"],
        Value::Null
    );
    // Adopted: the promotion starts from what runs and finishes.
    let (code, doc) = a.run(&[
        "promote",
        "canary",
        "production",
        "--yes",
        "--bake",
        "1s",
        "--adopt-drift",
    ]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(settled(&a.aws), ["v2"]);
}

#[test]
fn secrets_manager_names_become_arns_and_a_missing_secret_is_named() {
    let a = EcsArenas::new(PROBE_ANALYSIS);
    // The arena names its secret (`aws-sm:<name>`); ECS starts tasks only
    // with ARNs, as the emulated agent does: the release runs.
    let (code, doc) = a.release("v1", "1s");
    assert_eq!(code, 0, "{doc}");
    assert_eq!(settled(&a.aws), ["v1"]);
    let out = a.p.copilot(["validate"]).output().unwrap();
    assert!(
        crate::common::stdout(&out).contains("looked up for its ARN"),
        "{}",
        crate::common::stdout(&out)
    );
    // A secret that does not exist stops the deploy before anything is
    // registered, naming it; v1 keeps serving.
    a.p.edit(
        "arenas/production.yaml",
        &format!("aws-sm:{WEBHOOK_SECRET_NAME}"),
        "aws-sm:copilot/production/no-such-secret",
    );
    let (code, _) = a.run(&["deploy", "canary", "--release", "v2"]);
    assert_eq!(code, 0);
    let (code, doc) = a.run(&["promote", "canary", "production", "--yes", "--bake", "1s"]);
    assert_eq!(code, 3, "{doc}");
    let message = doc["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("copilot/production/no-such-secret")
            && message.contains("SHOPIFY_WEBHOOK_SECRET"),
        "{doc}"
    );
    assert_eq!(settled(&a.aws), ["v1"]);
}

#[test]
fn throttling_past_the_retries_during_a_switch_puts_traffic_back_and_keeps_the_standby() {
    let a = EcsArenas::new(PROBE_ANALYSIS);
    for v in ["v1", "v2"] {
        let (code, doc) = a.run(&["deploy", "production", "--release", v]);
        assert_eq!(code, 0, "{doc}");
    }
    // v2 live, v1 the standby. The switch to v1 is throttled past every
    // retry the SDK makes (five tries); the next listener change goes through.
    a.aws.inject(Some("ModifyListener"), &[Fault::Throttle; 5]);
    let (code, doc) = a.run(&["deploy", "production", "--release", "v1"]);
    assert_eq!(code, 3, "{doc}");
    assert_eq!(a.aws.pending_faults(), 0);
    assert_eq!(settled(&a.aws), ["v2"]);
    let (_, history) = a.run(&["history", "production"]);
    assert_eq!(
        history["deployments"][0]["state"], "rolled-back",
        "{history:#}"
    );
    // The failed start is gone from the standby colour: a rollback is
    // instant to a release that runs there, or brings it back.
    let (code, doc) = a.run(&["rollback", "production", "--reason", "back to v1"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["to"], "v1", "{doc}");
    assert_eq!(settled(&a.aws), ["v1"]);
}

/// The releases `n` requests through the emulated ALB got as `shop` (by
/// header, or by query parameter), sorted, without repeats.
fn served_as(aws: &Aws, shop: Option<(&str, bool)>, n: usize) -> Vec<String> {
    let http = reqwest::Client::new();
    let mut v: Vec<String> = aws.block_on(async {
        let mut out = Vec::new();
        for _ in 0..n {
            let mut url = format!("{}/health", aws.alb_url);
            if let Some((shop, false)) = shop {
                url.push_str(&format!("?shop={shop}"));
            }
            let mut req = http.get(&url);
            if let Some((shop, true)) = shop {
                req = req.header("X-Shopify-Shop-Domain", shop);
            }
            let release = match req.send().await {
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

#[test]
fn a_cohort_step_on_ecs_routes_the_cohorts_shops_by_listener_rules_then_removes_them() {
    let a = EcsArenas::new(
        "    interval: 30s\n    min_samples: 20\n    metrics:\n      - { name: error_rate, max: 0.05, window: 5m, on_fail: rollback }\n",
    );
    // Seven shops: two rules on the header and two on the query parameter
    // (at most five values a rule), a rule of someone else's kept.
    let shops: Vec<String> = (1..=7)
        .map(|i| format!("pilot-{i}.myshopify.com"))
        .collect();
    a.p.edit(
        "arenas/production.yaml",
        "steps: [{ weight: 10, bake: 5m }, { weight: 50, bake: 5m }, { weight: 100, bake: 5m }]",
        "steps: [{ cohort: pilot, bake: 5m }, { weight: 100 }]",
    );
    let yaml = std::fs::read_to_string(a.p.path("arenas/production.yaml")).unwrap();
    a.p.write(
        "arenas/production.yaml",
        &format!(
            "{yaml}cohorts:\n  pilot: {{ shops: [{}] }}\n",
            shops.join(", ")
        ),
    );
    let out = a.p.copilot(["validate"]).output().unwrap();
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    assert_eq!(a.release("v1", "1s").0, 0);
    assert_eq!(settled(&a.aws), ["v1"]);

    let (code, doc) = a.run(&["deploy", "canary", "--release", "v2"]);
    assert_eq!(code, 0, "{doc}");
    let env = a.aws.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let promotion = a.p.spawn(
        [
            "--output",
            "json",
            "promote",
            "canary",
            "production",
            "--yes",
            "--bake",
            "8s",
        ],
        &env,
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    while a.aws.rules().len() < 4 {
        assert!(
            Instant::now() < deadline,
            "no cohort rules: {:?}",
            a.aws.rules()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The rules: header and query-string conditions, five values at most,
    // forwarding to the new colour.
    let rules = a.aws.rules();
    let green = rules[0].3.clone();
    let mut headers: Vec<String> = rules.iter().flat_map(|r| r.1.clone()).collect();
    let mut queries: Vec<String> = rules.iter().flat_map(|r| r.2.clone()).collect();
    headers.sort();
    queries.sort();
    assert_eq!(headers, shops, "{rules:?}");
    assert_eq!(queries, shops, "{rules:?}");
    assert!(
        rules
            .iter()
            .all(|r| r.1.len() + r.2.len() <= 5 && r.3 == green),
        "{rules:?}"
    );
    assert!(
        green.ends_with("green") || green.ends_with("blue"),
        "{green}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        served_as(&a.aws, Some(("pilot-1.myshopify.com", true)), 10),
        ["v2"]
    );
    assert_eq!(
        served_as(&a.aws, Some(("PILOT-7.myshopify.com", true)), 10),
        ["v2"]
    );
    assert_eq!(
        served_as(&a.aws, Some(("pilot-6.myshopify.com", false)), 10),
        ["v2"]
    );
    assert_eq!(
        served_as(&a.aws, Some(("other.myshopify.com", true)), 20),
        ["v1"]
    );
    assert_eq!(served_as(&a.aws, None, 20), ["v1"]);

    let out = promotion.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    // The step is over: the rules are gone, everyone is on v2.
    assert!(a.aws.rules().is_empty(), "{:?}", a.aws.rules());
    assert_eq!(settled(&a.aws), ["v2"]);
    assert_eq!(
        served_as(&a.aws, Some(("pilot-1.myshopify.com", true)), 10),
        ["v2"]
    );
}

#[test]
fn a_chaos_drill_stops_a_task_and_measures_until_ecs_has_replaced_it() {
    let a = EcsArenas::new(
        "    interval: 30s\n    min_samples: 20\n    metrics:\n      - { name: error_rate, max: 0.05, window: 5m, on_fail: rollback }\n",
    );
    assert_eq!(a.release("v1", "1s").0, 0);
    assert_eq!(settled(&a.aws), ["v1"]);
    let (code, doc) = a.run(&["drill", "chaos", "production", "--stop", "1"]);
    assert_eq!(code, 4, "production needs --allow-production: {doc}");
    let (code, doc) = a.run(&[
        "drill",
        "chaos",
        "production",
        "--stop",
        "1",
        "--wait",
        "90s",
        "--allow-production",
    ]);
    assert_eq!(code, 0, "{doc:#}");
    let d = &doc["drill"];
    println!("chaos drill on ECS: {d}");
    assert_eq!(d["release"], "v1");
    assert_eq!(d["desired"], 2);
    assert_eq!(d["stopped"].as_array().unwrap().len(), 1, "{d:#}");
    assert_eq!(d["dipped"], true, "ECS was seen one task short: {d:#}");
    assert_eq!(d["recovered"], true);
    assert!(d["recovery_ms"].as_u64().unwrap() < 90_000);
    assert!(d["seen"]["requests"].as_u64().unwrap() > 10, "{d:#}");
    // The task was stopped through ECS's own API, and replaced.
    assert!(a.aws.requests().iter().any(|r| r.starts_with("StopTask ")));
    let running = a.aws.tasks().into_iter().filter(|t| t.2).count();
    assert!(running >= 2, "{:?}", a.aws.tasks());
    assert_eq!(settled(&a.aws), ["v1"]);
}
