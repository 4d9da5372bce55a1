//! Analysis from sources other than copilot's own probes: the service's
//! `/metrics`, and a real Prometheus (Debian's `prometheus`) that discovers
//! the local colours through the provider's `file_sd` targets. A source that
//! cannot be read pauses the rollout after its consecutive-error limit; a
//! dry-run metric never acts.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::rollouts::{Arenas, free_port, ledger_steps};

/// The bake report of a deployment's last bake step.
fn last_bake(a: &Arenas, deployment: &str) -> Value {
    ledger_steps(&a.p, deployment)
        .into_iter()
        .rev()
        .find(|s| s.name.starts_with("bake-"))
        .and_then(|s| s.outcome)
        .expect("a bake step with an outcome")
        .0
}

fn metric<'a>(bake: &'a Value, name: &str) -> &'a Value {
    bake["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap_or_else(|| panic!("no metric {name} in {bake:#}"))
}

#[test]
fn the_services_own_metrics_judge_a_release() {
    let a = Arenas::with_analysis(
        "    interval: 1s\n    min_samples: 20\n    metrics:\n\
         \x20     - { name: error_rate, source: metrics, max: 0.05, window: 5m, on_fail: rollback }\n\
         \x20     - { name: p95_latency, source: metrics, max: 3s, on_fail: alert }\n",
    );
    let (code, doc) = a.promote("v1");
    assert_eq!(code, 0, "{doc}");
    let bake = last_bake(&a, doc["deployment"].as_str().unwrap());
    let rate = metric(&bake, "error_rate");
    assert_eq!(rate["source"], "metrics");
    assert_eq!(rate["measured"], "0.0%", "{rate:#}");
    assert!(
        rate["measurements"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["outcome"] == "pass")
    );
    let p95 = metric(&bake, "p95_latency");
    assert!(p95["measured"].as_str().unwrap().ends_with("ms"), "{p95:#}");

    // Half of v2-broken's API requests fail: its own counters say so.
    let (code, doc) = a.promote("v2-broken");
    assert_eq!(code, 1, "{doc}");
    assert_eq!(doc["state"], "rolled-back");
    let summary = doc["summary"].as_str().unwrap();
    assert!(summary.contains("error_rate"), "{summary}");
    let bake = last_bake(&a, doc["deployment"].as_str().unwrap());
    let rate = metric(&bake, "error_rate");
    assert_eq!(rate["breached"], true, "{rate:#}");
    let measured: f64 = rate["measured"]
        .as_str()
        .unwrap()
        .trim_end_matches('%')
        .parse()
        .unwrap();
    assert!((30.0..=70.0).contains(&measured), "{rate:#}");
    let (_, status) = a.run(&["status", "stage"]);
    assert_eq!(status["arenas"][0]["live"]["version"], "v1");
}

struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Prometheus scraping every second what the local provider of `arena`
/// lists in its `file_sd` targets.
fn prometheus(a: &Arenas, arena: &str) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let targets =
        a.p.root()
            .join(".copilot/local")
            .join(arena)
            .join(copilot_provider_local::PROMETHEUS_TARGETS);
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
             scrape_configs:\n  - job_name: copilot\n    file_sd_configs:\n      - files: ['{}']\n        refresh_interval: 1s\n",
            targets.display()
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("Prometheus is installed (Debian package prometheus)");
    let url = format!("http://127.0.0.1:{port}");
    let prom = Prometheus {
        child,
        url,
        _dir: dir,
    };
    let ready = format!("{}/-/ready", prom.url);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !crate::rollouts::reqwest::get_ok(&ready) {
        assert!(Instant::now() < deadline, "Prometheus did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    prom
}

/// `or vector(0)`: with no 5xx at all the numerator has no series.
const PROM_ERROR_RATE: &str = "(sum(rate(http_requests_total{arena=\"{arena}\",release=\"{release}\",route!~\"/health.*|/metrics\",status=~\"5..\"}[{window}])) or vector(0)) / sum(rate(http_requests_total{arena=\"{arena}\",release=\"{release}\",route!~\"/health.*|/metrics\"}[{window}]))";

#[test]
fn prometheus_queries_judge_a_release() {
    let a = Arenas::with_analysis(&format!(
        "    interval: 2s\n    min_samples: 1\n    prometheus: env:PROMETHEUS_URL\n    metrics:\n\
         \x20     - name: error_rate\n        source: prometheus\n        query: '{PROM_ERROR_RATE}'\n        window: 10s\n        max: 0.05\n        on_fail: rollback\n"
    ));
    let prom = prometheus(&a, "stage");
    let env = [("PROMETHEUS_URL", prom.url.as_str())];
    let (code, _) = a.run(&["deploy", "local", "--release", "v1"]);
    assert_eq!(code, 0);
    let (code, doc) = a.run_with(
        &["promote", "local", "stage", "--yes", "--bake", "12s"],
        &env,
    );
    assert_eq!(code, 0, "{doc}");
    let bake = last_bake(&a, doc["deployment"].as_str().unwrap());
    let rate = metric(&bake, "error_rate");
    assert_eq!(rate["source"], "prometheus");
    assert_eq!(rate["measured"], "0.0%", "{rate:#}");

    let (code, _) = a.run(&["deploy", "local", "--release", "v2-broken"]);
    assert_eq!(code, 0);
    let (code, doc) = a.run_with(
        &["promote", "local", "stage", "--yes", "--bake", "12s"],
        &env,
    );
    assert_eq!(code, 1, "{doc}");
    assert_eq!(doc["state"], "rolled-back", "{doc}");
    let bake = last_bake(&a, doc["deployment"].as_str().unwrap());
    let rate = metric(&bake, "error_rate");
    assert_eq!(rate["breached"], true, "{rate:#}");
    let (_, status) = a.run(&["status", "stage"]);
    assert_eq!(status["arenas"][0]["live"]["version"], "v1");
}

/// A port that takes connections and closes them at once: a Prometheus
/// that cannot be asked, held for the whole run so that no other test's
/// server can come to listen there (a port merely found free can be).
fn closing_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            drop(conn);
        }
    });
    port
}

#[test]
fn a_broken_source_pauses_after_its_error_limit_and_dry_run_never_acts() {
    let closed = closing_port();
    let analysis = |dry_run: bool| {
        format!(
            "    interval: 500ms\n    min_samples: 5\n    prometheus: http://127.0.0.1:{closed}\n    consecutive_error_limit: 2\n    metrics:\n\
             \x20     - {{ name: error_rate, max: 0.05, on_fail: rollback }}\n\
             \x20     - {{ name: error_rate_prom, source: prometheus, query: 'vector(0)', max: 0.05, on_fail: rollback, dry_run: {dry_run} }}\n"
        )
    };
    let a = Arenas::with_analysis(&analysis(true));
    // Dry run: the unreachable Prometheus is recorded, never acted on.
    let (code, _) = a.run(&["deploy", "local", "--release", "v1"]);
    assert_eq!(code, 0);
    let (code, doc) = a.run(&["promote", "local", "stage", "--yes", "--bake", "3s"]);
    assert_eq!(code, 0, "{doc}");
    let bake = last_bake(&a, doc["deployment"].as_str().unwrap());
    let prom = metric(&bake, "error_rate_prom");
    assert!(prom["errors"].as_u64().unwrap() >= 3, "{prom:#}");
    assert_eq!(prom["dry_run"], true);

    // Acting: three failed reads in a row (limit 2) pause the rollout, exit 5.
    a.p.edit("arenas/stage.yaml", "dry_run: true", "dry_run: false");
    let (code, _) = a.run(&["deploy", "local", "--release", "v2"]);
    assert_eq!(code, 0);
    let (code, doc) = a.run(&["promote", "local", "stage", "--yes", "--bake", "20s"]);
    assert_eq!(code, 5, "{doc}");
    assert_eq!(doc["state"], "paused", "{doc}");
    let summary = doc["summary"].as_str().unwrap();
    assert!(summary.contains("3 times in a row"), "{summary}");
    assert!(summary.contains("cannot reach Prometheus"), "{summary}");
    let bake = last_bake(&a, doc["deployment"].as_str().unwrap());
    assert_eq!(metric(&bake, "error_rate_prom")["errors"], 3, "{bake:#}");
    // The pause leaves a deployment `rollback` can undo.
    let (code, doc) = a.run(&["rollback", "stage"]);
    assert_eq!(code, 0, "{doc}");
    let (_, status) = a.run(&["status", "stage"]);
    assert_eq!(status["arenas"][0]["live"]["version"], "v1");
}

#[test]
fn failed_health_checks_take_the_new_instance_out() {
    let analysis = |dry_run: bool| {
        format!(
            "    interval: 1s\n    min_samples: 5\n    metrics:\n\
             \x20     - {{ name: health, path: /no-such-health-check, consecutive_failures: 3, on_fail: remove, dry_run: {dry_run} }}\n"
        )
    };
    let a = Arenas::with_analysis(&analysis(true));
    assert_eq!(a.promote("v1").0, 0);
    a.p.edit("arenas/stage.yaml", "dry_run: true", "dry_run: false");
    let (code, _) = a.run(&["deploy", "local", "--release", "v2"]);
    assert_eq!(code, 0);
    let (code, doc) = a.run(&["promote", "local", "stage", "--yes", "--bake", "4s"]);
    assert_eq!(code, 1, "{doc}");
    assert_eq!(doc["state"], "rolled-back", "{doc}");
    let summary = doc["summary"].as_str().unwrap();
    assert!(summary.contains("health failed"), "{summary}");
    let steps = ledger_steps(&a.p, doc["deployment"].as_str().unwrap());
    assert!(
        steps
            .iter()
            .any(|s| s.name == "retire-new" && s.state == "done")
    );
    let (_, status) = a.run(&["status", "stage"]);
    assert_eq!(status["arenas"][0]["live"]["version"], "v1");
}
