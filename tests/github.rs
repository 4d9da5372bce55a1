//! GitHub told of what copilot does, against the emulated GitHub behind
//! Prism: deployments and their statuses through a promotion, a failed one
//! and an automatic rollback; the pull request comment created once and
//! then edited; `preview gc` asking GitHub which pull requests are merged;
//! GitHub down or rate limiting never failing a deployment, and what it
//! missed arriving later, in order.

use serde_json::Value;

use crate::common::{Project, free_port};
use crate::github_emulator::{Fault, GitHubEmulator};

const REPO: &str = "acme/shop";

/// `copilot` in `p` with GitHub's variables.
fn run(p: &Project, gh: &GitHubEmulator, args: &[&str]) -> std::process::Output {
    let mut cmd = p.copilot(args);
    for (k, v) in gh.env() {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn ok(p: &Project, gh: &GitHubEmulator, args: &[&str]) -> std::process::Output {
    let out = run(p, gh, args);
    assert!(
        out.status.success(),
        "copilot {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The GitHub deployments of `environment`, oldest first, with their
/// statuses' states.
fn of_environment(gh: &GitHubEmulator, environment: &str) -> Vec<(Value, Vec<String>)> {
    gh.deployments()
        .into_iter()
        .filter(|d| d["environment"] == environment)
        .map(|d| {
            let states = gh.states(d["id"].as_i64().unwrap());
            (d, states)
        })
        .collect()
}

/// Two local arenas: `local`, and `stage` promoting from it in two steps
/// with analysis of the error rate.
fn promotion_project() -> Project {
    let p = Project::init();
    let (port, stage_port) = (free_port(), free_port());
    p.edit("arenas/local.yaml", "port: 7400", &format!("port: {port}"));
    p.edit(
        "arenas/local.yaml",
        "APP_URL: http://127.0.0.1:7400",
        &format!("APP_URL: http://127.0.0.1:{port}"),
    );
    p.write(
        "arenas/stage.yaml",
        &format!(
            "name: stage\ntier: staging\npromotes_from: local\nprovider: {{ kind: local, port: {stage_port} }}\n\
             strategy:\n  kind: blue-green\n  steps: [{{ weight: 50, bake: 5m }}, {{ weight: 100, bake: 5m }}]\n\
             \x20 analysis:\n    interval: 30s\n    min_samples: 20\n    metrics:\n\
             \x20     - {{ name: error_rate, max: 0.05, window: 5m, on_fail: rollback }}\n\
             gates:\n  after: [health]\n\
             env:\n  values: {{ APP_URL: \"http://127.0.0.1:{stage_port}\", SHOPIFY_API_VERSION: \"2026-10\", DATABASE_URL: \"sqlite://.copilot/local/stage.db\" }}\n"
        ),
    );
    for (image, sha, env) in [
        ("copilot-service:v1", "1111111", None),
        ("copilot-service:v2", "2222222", None),
        (
            "copilot-service:v3-broken",
            "3333333",
            Some("COPILOT_FAULT_5XX_RATE=0.5"),
        ),
    ] {
        let mut cmd = p.copilot(["release", "create", "--image", image, "--git-sha", sha]);
        if let Some(env) = env {
            cmd.args(["--env", env]);
        }
        cmd.assert().success();
    }
    p
}

struct Down<'a>(&'a Project);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        for a in ["stage", "local"] {
            let _ = self.0.copilot(["down", a, "--force"]).output();
        }
    }
}

#[test]
fn a_promotion_its_failure_and_its_rollback_are_github_deployments_with_statuses() {
    let gh = GitHubEmulator::start(REPO);
    let p = promotion_project();
    let _down = Down(&p);
    let promote = ["promote", "local", "stage", "--yes", "--bake", "1s"];

    ok(&p, &gh, &["deploy", "local", "--release", "v1"]);
    ok(&p, &gh, &promote);
    ok(&p, &gh, &["deploy", "local", "--release", "v2"]);
    ok(&p, &gh, &promote);
    let stage = of_environment(&gh, "stage");
    assert_eq!(stage.len(), 2, "{stage:?}");
    let (first, first_states) = &stage[0];
    let (second, second_states) = &stage[1];
    // The deployment names the release's commit and the arena.
    assert_eq!(first["ref"], "1111111");
    assert_eq!(second["ref"], "2222222");
    assert_eq!(second["payload"]["copilot"]["kind"], "promote");
    assert_eq!(second["transient_environment"], false);
    assert_eq!(second["production_environment"], false);
    assert_eq!(*second_states, ["queued", "in_progress", "success"]);
    // The release it replaced: inactive.
    assert_eq!(
        *first_states,
        ["queued", "in_progress", "success", "inactive"]
    );
    let success = &gh.statuses(second["id"].as_i64().unwrap())[2];
    assert!(
        success["environment_url"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:"),
        "{success}"
    );
    assert!(
        success["log_url"]
            .as_str()
            .unwrap()
            .starts_with("https://ci.example/evidence/dep_"),
        "{success}"
    );

    // A broken release: analysis rolls it back. Its deployment fails with
    // the log URL, and v2's serves again.
    ok(&p, &gh, &["deploy", "local", "--release", "v3-broken"]);
    let out = run(&p, &gh, &promote);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stage = of_environment(&gh, "stage");
    assert_eq!(stage.len(), 3, "{stage:?}");
    let (broken, broken_states) = &stage[2];
    assert_eq!(broken["ref"], "3333333");
    assert_eq!(broken_states.last().map(String::as_str), Some("failure"));
    assert_eq!(broken_states.first().map(String::as_str), Some("queued"));
    let failure = gh.statuses(broken["id"].as_i64().unwrap()).pop().unwrap();
    assert!(
        failure["log_url"]
            .as_str()
            .unwrap()
            .contains("/evidence/dep_")
    );
    assert_eq!(
        stage[1].1,
        ["queued", "in_progress", "success", "success"],
        "v2 serves again"
    );

    // A rollback by hand is a deployment of the release it goes back to.
    ok(&p, &gh, &["unlock", "stage", "--reason", "test"]);
    ok(
        &p,
        &gh,
        &["rollback", "stage", "--to", "v1", "--reason", "test"],
    );
    let stage = of_environment(&gh, "stage");
    let (back, back_states) = stage.last().unwrap();
    assert_eq!(back["ref"], "1111111");
    assert_eq!(back["payload"]["copilot"]["kind"], "rollback");
    assert_eq!(back_states.last().map(String::as_str), Some("success"));
    assert_eq!(
        stage[1].1.last().map(String::as_str),
        Some("inactive"),
        "v2 was replaced"
    );

    assert!(gh.checked_by_prism() > 20);
    assert_eq!(gh.violations(), Vec::<String>::new());
}

#[test]
fn github_down_or_rate_limiting_never_fails_a_deployment_and_hears_later_in_order() {
    let gh = GitHubEmulator::start(REPO);
    let p = promotion_project();
    let _down = Down(&p);

    // Down: the deploy succeeds with a warning; nothing reached GitHub.
    gh.set_fault(Some(Fault::Down));
    let out = run(&p, &gh, &["deploy", "local", "--release", "v1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("GitHub is not told for now") && stderr.contains("copilot github sync"),
        "{stderr}"
    );
    assert!(gh.faulted() > 0);
    assert!(gh.deployments().is_empty());

    // Back: the next command sends what was missed first, in order.
    gh.set_fault(None);
    let out = ok(&p, &gh, &["--output", "json", "github", "sync"]);
    let sync: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(sync["pending"], 0, "{sync}");
    assert_eq!(sync["sent"], 4, "a deployment and three statuses: {sync}");
    let local = of_environment(&gh, "local");
    assert_eq!(local.len(), 1);
    assert_eq!(local[0].1, ["queued", "in_progress", "success"]);

    // Rate limited for a second (403 with x-ratelimit-reset): waited out.
    gh.set_fault(Some(Fault::RateLimited { secs: 1 }));
    // Lift the limit when GitHub says it resets, as GitHub does.
    let lifted = std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(std::time::Duration::from_millis(1200));
            gh.set_fault(None);
        });
        run(&p, &gh, &["deploy", "local", "--release", "v2"])
    });
    assert!(
        lifted.status.success(),
        "{}",
        String::from_utf8_lossy(&lifted.stderr)
    );
    let local = of_environment(&gh, "local");
    assert_eq!(local.len(), 2, "{local:?}");
    assert_eq!(local[1].1, ["queued", "in_progress", "success"]);
    assert_eq!(local[0].1, ["queued", "in_progress", "success", "inactive"]);

    // 429 with Retry-After past copilot's bounds: the deploy succeeds, the
    // statuses wait in the ledger, and go out once GitHub answers.
    gh.set_fault(Some(Fault::TooMany { secs: 120 }));
    let out = run(&p, &gh, &["deploy", "local", "--release", "v1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(of_environment(&gh, "local").len(), 2);
    gh.set_fault(None);
    ok(&p, &gh, &["github", "sync"]);
    let local = of_environment(&gh, "local");
    assert_eq!(local.len(), 3);
    assert_eq!(local[2].1, ["queued", "in_progress", "success"]);
    assert_eq!(local[1].1.last().map(String::as_str), Some("inactive"));

    assert_eq!(gh.violations(), Vec::<String>::new());
}

#[test]
fn a_preview_comments_once_then_edits_and_gc_asks_github_which_pull_requests_are_merged() {
    let gh = GitHubEmulator::start(REPO);
    let p = crate::previews::preview_project();
    for pr in ["7", "8"] {
        ok(&p, &gh, &["preview", "up", "--pr", pr]);
    }
    ok(&p, &gh, &["preview", "up", "--pr", "7"]);
    let comments = gh.comments(7);
    assert_eq!(comments.len(), 1, "one comment, edited: {comments:?}");
    let body = comments[0]["body"].as_str().unwrap();
    assert!(body.contains("<!-- copilot:preview -->"), "{body}");
    assert!(body.contains("http://127.0.0.1:"), "{body}");
    assert!(body.contains("`v1`"), "{body}");
    assert!(body.contains("| after | health |"), "{body}");
    assert_eq!(gh.comments(8).len(), 1);
    // Previews are transient environments.
    let previews = of_environment(&gh, "preview-pr-7");
    assert_eq!(previews.len(), 2);
    assert_eq!(previews[0].0["transient_environment"], true);

    // GitHub says 7 is open and 8 was merged: gc removes 8 only.
    gh.set_pull(7, "open", false);
    gh.set_pull(8, "closed", true);
    let out = ok(&p, &gh, &["--output", "json", "preview", "gc"]);
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let removed: Vec<(&str, &str)> = doc["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["preview"].as_str().unwrap(), r["why"].as_str().unwrap()))
        .collect();
    assert_eq!(
        removed,
        [("preview-pr-8", "pull request #8 was merged")],
        "{doc}\n{}\n{:?}",
        String::from_utf8_lossy(&out.stderr),
        gh.violations()
    );
    let list = p.json(["preview", "list"]).1;
    let left: Vec<i64> = list["previews"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["pr"].as_i64().unwrap())
        .collect();
    assert_eq!(left, [7]);
    ok(&p, &gh, &["preview", "down", "--pr", "7"]);
    assert_eq!(gh.violations(), Vec::<String>::new());
}

#[test]
fn a_gate_run_is_a_check_run_on_the_release_commit_with_an_annotation_per_failed_gate() {
    let gh = GitHubEmulator::start(REPO);
    let p = promotion_project();
    // Nothing serves there: the health gate cannot pass.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let out = run(
        &p,
        &gh,
        &[
            "gate",
            "run",
            "local",
            "--gate",
            "health",
            "--release",
            "v2",
            "--url",
            &dead,
            "--github-check",
        ],
    );
    assert_ne!(out.status.code(), Some(0));
    let runs = gh.check_runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    let sent = &runs[0]["request"];
    assert_eq!(sent["head_sha"], "2222222");
    assert_eq!(sent["status"], "completed");
    assert_eq!(sent["conclusion"], "failure");
    assert_eq!(sent["name"], "copilot gates: local");
    let annotations = sent["output"]["annotations"].as_array().unwrap();
    assert_eq!(annotations.len(), 1, "{sent}");
    assert_eq!(annotations[0]["path"], "gates/health.yaml");
    assert_eq!(annotations[0]["annotation_level"], "failure");
    assert!(
        sent["output"]["summary"]
            .as_str()
            .unwrap()
            .contains("| after | health |")
    );
    assert_eq!(gh.violations(), Vec::<String>::new());
}
