//! Rollback drills on the local provider: a faulty build of the live
//! release goes through the arena's own analysis, and detection, decision
//! and execution are measured through the arena's URL against seed 003's
//! targets.

use crate::rollouts::{Arenas, PROBE_ANALYSIS, reqwest};

#[test]
fn a_rollback_drill_is_caught_by_the_analysis_and_meets_the_critical_targets() {
    let a = Arenas::new();
    assert_eq!(a.promote("v1").0, 0);
    let (code, doc) = a.run(&["drill", "rollback", "stage", "--bake", "2s"]);
    assert_eq!(code, 0, "{doc:#}");
    let d = &doc["drill"];
    assert_eq!(d["outcome"], "rolled-back");
    assert_eq!(d["release"], "v1");
    assert_eq!(d["faulty"], "v1-drill1");
    assert_eq!(d["fault"], "COPILOT_FAULT_5XX_RATE=0.5");
    assert_eq!(d["targets"]["class"], "critical");
    let phases: Vec<&str> = d["timings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            assert_eq!(t["met"], true, "{t}");
            t["phase"].as_str().unwrap()
        })
        .collect();
    assert_eq!(phases, ["detection", "decision", "execution", "total"]);
    // Detection waits for the analysis' first measurement, at most the bake.
    let detection = d["timings"][0]["measured_ms"].as_u64().unwrap();
    assert!(detection <= 2_500, "{detection}");
    assert!(d["seen"]["requests"].as_u64().unwrap() > 10);
    let body = reqwest::blocking_get(&format!("http://127.0.0.1:{}/health", a.stage_port));
    assert_eq!(body["release"], "v1");
    // Stored in the ledger: the deployment of kind `drill`, and the result.
    let (_, history) = a.run(&["history", "stage"]);
    assert_eq!(history["deployments"][0]["kind"], "drill");
    assert_eq!(history["deployments"][0]["state"], "rolled-back");
    let (_, status) = a.run(&["status", "stage"]);
    assert!(status["arenas"][0]["lock"].is_null(), "{status:#}");
    // A second drill builds v1-drill2.
    let (code, doc) = a.run(&["drill", "rollback", "stage", "--bake", "2s"]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["drill"]["faulty"], "v1-drill2");
}

#[test]
fn a_drill_the_analysis_misses_is_rolled_back_by_the_drill_and_fails() {
    // The 5xx limit is far above the fault: the analysis lets it through.
    let lax = PROBE_ANALYSIS.replace("max: 0.05", "max: 0.9");
    let a = Arenas::with_analysis(&lax);
    assert_eq!(a.promote("v1").0, 0);
    let (code, doc) = a.run(&["drill", "rollback", "stage", "--bake", "1s"]);
    assert_eq!(code, 1, "{doc:#}");
    let d = &doc["drill"];
    assert_eq!(d["outcome"], "succeeded");
    assert_eq!(d["timings"][0]["met"], false);
    assert!(d["timings"][0]["measured_ms"].is_null());
    let body = reqwest::blocking_get(&format!("http://127.0.0.1:{}/health", a.stage_port));
    assert_eq!(body["release"], "v1", "the drill put v1 back");
}

#[test]
fn production_is_drilled_only_when_allowed_and_faults_are_fault_switches() {
    let a = Arenas::new();
    let (code, doc) = a.run(&["drill", "rollback", "production"]);
    assert_eq!(code, 4, "{doc}");
    assert!(
        doc["error"]["hint"]
            .as_str()
            .unwrap()
            .contains("--allow-production")
    );
    let (code, _) = a.run(&["drill", "rollback", "stage", "--fault", "RUST_LOG=debug"]);
    assert_eq!(code, 2);
    let (code, doc) = a.run(&["drill", "rollback", "stage"]);
    assert_eq!(code, 4, "nothing live: {doc}");
}

#[test]
fn a_chaos_drill_needs_a_platform_that_replaces_what_stops() {
    let a = Arenas::new();
    assert_eq!(a.promote("v1").0, 0);
    let (code, doc) = a.run(&["drill", "chaos", "stage", "--stop", "1"]);
    assert_eq!(code, 3, "{doc}");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not replace a stopped instance"),
        "{doc}"
    );
    // Nothing was stopped: v1 still answers.
    let body = reqwest::blocking_get(&format!("http://127.0.0.1:{}/health", a.stage_port));
    assert_eq!(body["release"], "v1");
}
