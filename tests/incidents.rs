//! Incidents on the local provider: a SEV1 rolls the arena back at once and
//! pins it, a SEV2 counts down to its decision, an automatic rollback by
//! analysis opens one by itself, and each renders the communication
//! template and a report measured against seed 003's targets.

use serde_json::Value;

use crate::rollouts::{Arenas, reqwest};

/// The analysis of `stage` with the 5xx rule's incidents raised to SEV1.
const SEV1_ANALYSIS: &str = "    interval: 30s\n    min_samples: 20\n    metrics:\n\
     \x20     - { name: error_rate, max: 0.05, window: 5m, on_fail: rollback, severity: 1 }\n";

fn served(a: &Arenas) -> Value {
    reqwest::blocking_get(&format!("http://127.0.0.1:{}/health", a.stage_port))["release"].clone()
}

fn timing<'a>(report: &'a Value, phase: &str) -> &'a Value {
    report["timings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["phase"] == phase)
        .unwrap()
}

#[test]
fn a_sev1_incident_rolls_back_at_once_pins_the_arena_and_reports_against_the_targets() {
    let a = Arenas::new();
    assert_eq!(a.promote("v1").0, 0);
    assert_eq!(a.promote("v2").0, 0);
    assert_eq!(served(&a), "v2");

    let (code, doc) = a.run(&[
        "incident",
        "open",
        "stage",
        "--sev",
        "1",
        "--impact",
        "checkout returns 500 for every shop",
        "--since",
        "3m",
    ]);
    assert_eq!(code, 0, "{doc}");
    // Traffic is back on v1 through the arena's URL, and the arena is pinned.
    assert_eq!(served(&a), "v1");
    assert_eq!(doc["rollback"]["from"], "v2");
    assert_eq!(doc["rollback"]["to"], "v1");
    let id = doc["incident"]["id"].as_str().unwrap().to_string();
    let (_, status) = a.run(&["status", "stage"]);
    let lock = &status["arenas"][0]["lock"];
    assert_eq!(lock["kind"], "pin");
    assert!(lock["reason"].as_str().unwrap().contains(&id), "{lock}");
    assert_eq!(a.promote("v2").0, 4, "pinned until unlock");

    // The communication template, with the real times.
    let text = doc["communication"].as_str().unwrap();
    let started = doc["incident"]["start_time"].as_str().unwrap();
    for line in [
        "Status: Investigating",
        "Severity: SEV1 (immediate rollback)",
        "Impact: checkout returns 500 for every shop",
        &format!("Start Time: {started}"),
        "Resolution: rolled back from v2 to v1",
        "ETA: To be determined",
    ] {
        assert!(text.contains(line), "{line:?} missing from\n{text}");
    }
    assert!(
        started.ends_with(" UTC") && started.len() == 23,
        "{started}"
    );

    let (code, doc) = a.run(&[
        "incident",
        "update",
        &id,
        "--status",
        "identified",
        "--resolution",
        "a bad query in v2's checkout; fix in v2.0.1",
        "--eta",
        "30 minutes",
        "--format",
        "markdown",
    ]);
    assert_eq!(code, 0, "{doc}");
    let md = doc["communication"].as_str().unwrap();
    assert!(md.contains("| **Status** | Identified |"), "{md}");
    assert!(md.contains("| **ETA** | 30 minutes |"), "{md}");
    assert_eq!(a.run(&["incident", "resolve", &id]).0, 0);

    // The report: the timeline from the ledger, and the four spans.
    let out = a.p.root().join("report.md");
    let (code, report) = a.run(&["incident", "report", &id, "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["targets"]["class"], "critical");
    // Impact began three minutes before it was opened: detection missed
    // its two minutes; decision and execution took well under a second.
    let detection = timing(&report, "detection");
    assert!(detection["measured_ms"].as_u64().unwrap() >= 180_000);
    assert_eq!(detection["met"], false);
    for phase in ["decision", "execution"] {
        let t = timing(&report, phase);
        assert_eq!(t["met"], true, "{t}");
        assert!(t["measured_ms"].as_u64().unwrap() < 60_000, "{t}");
    }
    assert_eq!(timing(&report, "total")["met"], true);
    let whats: Vec<&str> = report["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["what"].as_str().unwrap())
        .collect();
    let position = |needle: &str| {
        whats
            .iter()
            .position(|w| w.contains(needle))
            .unwrap_or_else(|| panic!("{needle:?} not in the timeline: {whats:#?}"))
    };
    // In order: v2's promotion, the incident, the rollback, traffic back.
    assert!(position("promote") < position("detected"));
    assert!(position("detected") < position("rollback"));
    assert!(position("rollback") < position("traffic back"));
    assert!(position("traffic back") < position("resolved by"));
    let md = std::fs::read_to_string(&out).unwrap();
    for heading in [
        "## Rollback times against the targets",
        "| detection |",
        "## Timeline",
        "## Post-mortem",
    ] {
        assert!(md.contains(heading), "{heading:?} missing from\n{md}");
    }
    let (_, list) = a.run(&["incident", "list", "--all"]);
    assert_eq!(list["incidents"][0]["status"], "resolved");
    let (_, open) = a.run(&["incident", "list"]);
    assert_eq!(open["incidents"], serde_json::json!([]));
}

#[test]
fn a_sev2_incident_counts_down_to_its_decision_and_a_rollback_decides_it() {
    let a = Arenas::at(
        crate::rollouts::PROBE_ANALYSIS,
        Some("2026-03-10T10:00:00Z"),
    );
    assert_eq!(a.promote("v1").0, 0);
    assert_eq!(a.promote("v2").0, 0);
    let at = |t: &str| [("COPILOT_NOW", format!("2026-03-10T{t}Z"))];
    let run = |t: &str, args: &[&str]| {
        let env = at(t);
        a.run_with(args, &[(env[0].0, env[0].1.as_str())])
    };
    let (code, doc) = run(
        "10:00:00",
        &[
            "incident",
            "open",
            "stage",
            "--sev",
            "2",
            "--impact",
            "checkout broken for some shops",
        ],
    );
    assert_eq!(code, 0, "{doc}");
    let id = doc["incident"]["id"].as_str().unwrap().to_string();
    assert_eq!(doc["incident"]["decision_due"], "2026-03-10 10:15:00 UTC");
    assert!(
        doc["rollback"].is_null(),
        "a SEV2 does not roll back by itself"
    );
    assert_eq!(served(&a), "v2");

    let status_line = |t: &str| {
        let env = at(t);
        let out =
            a.p.copilot(["status", "stage"])
                .env(env[0].0, &env[0].1)
                .output()
                .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        text.lines()
            .find(|l| l.trim_start().starts_with("incident"))
            .unwrap_or_else(|| panic!("no incident line in\n{text}"))
            .to_string()
    };
    let line = status_line("10:05:00");
    assert!(line.contains(&id) && line.contains("SEV2"), "{line}");
    assert!(
        line.contains("decide by 10:15:00 UTC (10m 00s left)"),
        "{line}"
    );
    let (_, json) = run("10:05:00", &["status", "stage"]);
    assert_eq!(json["arenas"][0]["incidents"][0]["decision_in_s"], 600);
    assert!(status_line("10:20:30").contains("decision OVERDUE by 5m 30s"));

    // The on-call decides at 10:07: the rollback is recorded on the incident.
    let (code, doc) = run("10:07:00", &["rollback", "stage", "--reason", "checkout"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["incidents"][0], id.as_str());
    assert_eq!(served(&a), "v1");
    assert!(status_line("10:20:30").ends_with("rolled back"));
    let (_, report) = run("10:30:00", &["incident", "report", &id]);
    assert_eq!(report["targets"]["class"], "high");
    assert_eq!(timing(&report, "decision")["measured_ms"], 420_000);
    assert_eq!(timing(&report, "decision")["met"], true);
    assert_eq!(timing(&report, "execution")["measured_ms"], 0);
}

#[test]
fn a_rollback_by_analysis_opens_an_incident_of_the_metrics_severity_with_its_evidence() {
    let a = Arenas::with_analysis(SEV1_ANALYSIS);
    assert_eq!(a.promote("v1").0, 0);
    let (code, doc) = a.promote("v2-broken");
    assert_eq!(code, 1, "{doc}");
    assert_eq!(served(&a), "v1");

    let (_, list) = a.run(&["incident", "list", "stage"]);
    let incidents = list["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 1, "{list}");
    let i = &incidents[0];
    assert_eq!(i["source"], "analysis");
    assert_eq!(i["severity"], 1);
    assert_eq!(i["status"], "identified");
    assert_eq!(i["deployment_id"], doc["deployment"]);
    assert_eq!(i["rollback_deployment_id"], doc["deployment"]);
    assert!(
        i["impact"].as_str().unwrap().starts_with("error_rate "),
        "{i}"
    );
    assert_eq!(i["resolution"], "rolled back automatically to v1");
    let evidence = &i["evidence"];
    assert_eq!(evidence["metric"], "error_rate");
    assert_eq!(evidence["bake"]["verdict"]["verdict"], "breached");
    // Detection (the first bad measurement), decision and execution are
    // all measured, in order.
    let at = |k: &str| {
        chrono::DateTime::parse_from_rfc3339(i[k].as_str().unwrap_or_else(|| panic!("{k}: {i}")))
            .unwrap()
    };
    assert!(at("started_at") <= at("detected_at"));
    assert!(at("detected_at") <= at("decided_at"));
    assert!(at("decided_at") <= at("mitigated_at"));
    let id = i["id"].as_str().unwrap();
    let (code, report) = a.run(&["incident", "report", id]);
    assert_eq!(code, 0);
    assert!(
        report["timings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["met"] == true),
        "{report}"
    );
    assert!(
        report["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "analysis" && e["what"].as_str().unwrap().contains("breached")),
        "{report}"
    );

    // A severity outside 1-3 is refused where it is written.
    a.p.edit("arenas/stage.yaml", "severity: 1", "severity: 4");
    let out = a.p.copilot(["validate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("arenas/stage.yaml:") && err.contains("severity 4"),
        "{err}"
    );
}
