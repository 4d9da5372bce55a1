//! What people and pipelines read, pinned: `--help`, and `status`, `plan`,
//! `evidence` and `history` as tables and as JSON, on a fixed ledger (two
//! releases, a blue-green deployment that succeeded in staging, a promotion
//! into canary that analysis rolled back, one in progress in hotfix, gate
//! runs, a lock), with the clock pinned. Ids, the project's path and
//! durations measured at run time are replaced by placeholders; everything
//! else must stay byte for byte, so a refactor cannot change output
//! silently. `cargo insta review` (or `INSTA_UPDATE=always`) accepts an
//! intended change.

use chrono::{DateTime, Utc};
use copilot_ledger::{GateResult, GateRun, Ledger, NewDeployment};
use serde_json::json;

use crate::common::Project;

const NOW: &str = "2026-11-24T11:00:00Z";

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

/// The fixed ledger, and the ids of its staging and canary deployments.
fn fixture() -> (Project, String, String) {
    let p = Project::init_at(Some(NOW));
    for (v, sha) in [("v1.4.0", "4a1b2c3"), ("v1.5.0", "5d6e7f8")] {
        let (code, doc) = p.json([
            "release",
            "create",
            "--image",
            &format!("ghcr.io/acme/copilot-service:{v}"),
            "--version",
            v,
            "--git-sha",
            sha,
        ]);
        assert_eq!(code, 0, "{doc}");
    }
    p.copilot([
        "lock",
        "production",
        "--reason",
        "quarterly audit of the payment flow",
    ])
    .assert()
    .success();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (staging, canary) = rt.block_on(async {
        let ledger = Ledger::connect(&copilot_ledger::default_url(p.root()))
            .await
            .unwrap();
        let v1 = ledger.find_release("v1.4.0").await.unwrap();
        let v2 = ledger.find_release("v1.5.0").await.unwrap();
        let deployment = |arena: &str, release: &str, previous: Option<&str>, kind: &str| {
            NewDeployment {
                arena: arena.into(),
                release_id: release.into(),
                previous_release_id: previous.map(str::to_string),
                kind: kind.into(),
                strategy: "blue-green".into(),
                source_arena: (kind == "promote").then(|| "staging".to_string()),
                reason: None,
                created_by: "tester".into(),
            }
        };
        let step = |name: &str, intent: serde_json::Value| (name.to_string(), intent);

        // staging: v1 deployed blue-green, then v2 over it.
        let mut staging = String::new();
        for (release, previous, start, slot) in [
            (&v1, None, "2026-11-20T09:00:00Z", "blue"),
            (&v2, Some(v1.id.as_str()), "2026-11-23T10:00:00Z", "green"),
        ] {
            let d = ledger
                .create_deployment(&deployment("staging", &release.id, previous, "deploy"), at(start))
                .await
                .unwrap();
            for (i, (name, intent)) in [
                step("deploy", json!({ "slot": slot, "release": release.version })),
                step("switch", json!({ "weights": { slot: 100 } })),
            ]
            .into_iter()
            .enumerate()
            {
                let t = at(start) + chrono::Duration::minutes(i as i64 * 2);
                let s = ledger.start_step(&d.id, &name, &intent, t).await.unwrap();
                ledger
                    .finish_step(&d.id, s.seq, "done", &json!({ "ok": true }), t + chrono::Duration::seconds(40))
                    .await
                    .unwrap();
            }
            let split = json!({ slot: { "release": release.version, "weight": 100 } });
            ledger
                .set_traffic("staging", &split, Some(&d.id), at(start) + chrono::Duration::minutes(3))
                .await
                .unwrap();
            ledger
                .set_deployment_state(&d.id, "succeeded", at(start) + chrono::Duration::minutes(3))
                .await
                .unwrap();
            staging = d.id;
        }

        // canary: v1 live, v2 promoted from staging and rolled back by analysis.
        let d = ledger
            .create_deployment(&deployment("canary", &v1.id, None, "deploy"), at("2026-11-21T09:00:00Z"))
            .await
            .unwrap();
        ledger
            .set_traffic("canary", &json!({ "blue": { "release": "v1.4.0", "weight": 100 } }), Some(&d.id), at("2026-11-21T09:05:00Z"))
            .await
            .unwrap();
        ledger
            .set_deployment_state(&d.id, "succeeded", at("2026-11-21T09:05:00Z"))
            .await
            .unwrap();
        let start = at("2026-11-24T10:00:00Z");
        let d = ledger
            .create_deployment(&deployment("canary", &v2.id, Some(&v1.id), "promote"), start)
            .await
            .unwrap();
        let run = GateRun {
            id: "gr_fixture_before".into(),
            arena: "canary".into(),
            release_id: Some(v2.id.clone()),
            deployment_id: Some(d.id.clone()),
            phase: "before".into(),
            outcome: "pass".into(),
            started_at: start,
            finished_at: start + chrono::Duration::seconds(4),
        };
        let result = |gate: &str, kind: &str, outcome: &str, summary: &str, evidence: serde_json::Value| GateResult {
            gate: gate.into(),
            kind: kind.into(),
            outcome: outcome.into(),
            summary: summary.into(),
            evidence: sqlx::types::Json(evidence),
            started_at: start,
            duration_ms: 1250,
        };
        ledger
            .record_gate_run(
                &run,
                &[
                    result("window", "window", "pass", "inside Tue-Thu 10:00-14:00 UTC", json!({ "now": NOW })),
                    result("env", "env", "pass", "5 required variables present", json!({ "required": 5 })),
                    result("alerts", "alerts", "warn", "1 silenced alert matches", json!({ "firing": 0, "silenced": 1 })),
                ],
            )
            .await
            .unwrap();
        for (i, (name, intent, state, outcome)) in [
            ("deploy", json!({ "slot": "green", "release": "v1.5.0" }), "done", json!({ "ok": true })),
            ("shift-10", json!({ "weights": { "green": 10, "blue": 90 } }), "done", json!({ "achieved": { "green": 10, "blue": 90 } })),
            ("bake-10", json!({ "for": "5m" }), "failed", json!({ "verdict": "rollback", "metric": "error_rate", "value": 0.081, "max": 0.05 })),
            ("rollback", json!({ "weights": { "blue": 100 } }), "done", json!({ "achieved": { "blue": 100 } })),
        ]
        .into_iter()
        .enumerate()
        {
            let t = start + chrono::Duration::minutes(1 + i as i64 * 3);
            let s = ledger.start_step(&d.id, name, &intent, t).await.unwrap();
            ledger
                .finish_step(&d.id, s.seq, state, &outcome, t + chrono::Duration::seconds(90))
                .await
                .unwrap();
        }
        ledger
            .set_traffic("canary", &json!({ "blue": { "release": "v1.4.0", "weight": 100 }, "green": { "release": "v1.5.0", "weight": 0 } }), Some(&d.id), start + chrono::Duration::minutes(11))
            .await
            .unwrap();
        ledger
            .set_deployment_state(&d.id, "rolled-back", start + chrono::Duration::minutes(11))
            .await
            .unwrap();
        let canary = d.id;

        // hotfix: a deployment still running, its second step started.
        let start = at("2026-11-24T10:50:00Z");
        let d = ledger
            .create_deployment(&deployment("hotfix", &v2.id, Some(&v1.id), "hotfix"), start)
            .await
            .unwrap();
        let s = ledger
            .start_step(&d.id, "deploy", &json!({ "slot": "green" }), start)
            .await
            .unwrap();
        ledger
            .finish_step(&d.id, s.seq, "done", &json!({ "ok": true }), start + chrono::Duration::minutes(1))
            .await
            .unwrap();
        ledger
            .start_step(&d.id, "switch", &json!({ "weights": { "green": 100 } }), start + chrono::Duration::minutes(2))
            .await
            .unwrap();
        ledger.close().await;
        (staging, canary)
    });
    (p, staging, canary)
}

/// Placeholders for what differs from run to run.
fn settings(p: &Project) -> insta::Settings {
    let mut s = insta::Settings::clone_current();
    s.set_prepend_module_to_snapshot(false);
    s.add_filter(&regex_escape(&p.root().display().to_string()), "[root]");
    s.add_filter(r"\b(rel|dep)_[0-9a-f]{32}\b", "[$1]");
    s.add_filter(r#""duration_ms": \d+"#, r#""duration_ms": "[ms]""#);
    // Who holds a lock: this machine and process.
    s.add_filter(r#""pid": \d+"#, r#""pid": "[pid]""#);
    s.add_filter(r#""host": "[^"]*""#, r#""host": "[host]""#);
    // Locks are taken and live by the real clock, not the pinned one.
    s.add_filter(
        r#""(acquired_at|renewed_at)": "[^"]*""#,
        r#""$1": "[real time]""#,
    );
    s
}

fn regex_escape(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$#&-~".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

/// stdout of `copilot ARGS` in the project, with a fixed table width.
fn run(p: &Project, args: &[&str]) -> String {
    let out = p.copilot(args).env("COLUMNS", "160").output().unwrap();
    String::from_utf8(out.stdout).unwrap()
}

/// stdout of `copilot --output json ARGS`, pretty-printed.
fn run_json(p: &Project, args: &[&str]) -> String {
    let (_, doc) = p.json(args);
    serde_json::to_string_pretty(&doc).unwrap()
}

#[test]
fn help_for_people_and_pipelines() {
    let p = Project::init_at(Some(NOW));
    let s = settings(&p);
    s.bind(|| {
        insta::assert_snapshot!("help", run(&p, &["--help"]));
        insta::assert_snapshot!("help_promote", run(&p, &["promote", "--help"]));
        insta::assert_snapshot!("help_gate_run", run(&p, &["gate", "run", "--help"]));
    });
}

#[test]
fn status_plan_evidence_and_history_on_a_fixed_ledger() {
    let (p, staging, canary) = fixture();
    let s = settings(&p);
    s.bind(|| {
        insta::assert_snapshot!("status", run(&p, &["status"]));
        insta::assert_snapshot!("status_json", run_json(&p, &["status"]));
        insta::assert_snapshot!("status_canary", run(&p, &["status", "canary"]));
        insta::assert_snapshot!("plan", run(&p, &["plan", "staging", "canary"]));
        insta::assert_snapshot!("plan_json", run_json(&p, &["plan", "staging", "canary"]));
        insta::assert_snapshot!("evidence", run(&p, &["evidence", &canary]));
        insta::assert_snapshot!(
            "evidence_json",
            run_json(&p, &["evidence", &canary, "--format", "json"])
        );
        insta::assert_snapshot!("evidence_staging", run(&p, &["evidence", &staging]));
        insta::assert_snapshot!("history", run(&p, &["history"]));
        insta::assert_snapshot!("history_json", run_json(&p, &["history"]));
        insta::assert_snapshot!(
            "history_canary",
            run(&p, &["history", "canary", "--limit", "1"])
        );
    });
}
