//! Gates against their real dependencies: PostgreSQL for migrations, Redis
//! with queues made by the real `bullmq` package, Alertmanager from Debian's
//! `prometheus-alertmanager`, and copilot-service for ingestion, latency,
//! health and smoke.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::{Value, json};

use crate::common::{Project, TestDatabase};
use crate::service_support::*;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// Run `copilot --output json gate run ...` off the async runtime.
async fn gate(p: &Project, args: &[&str], envs: &[(&str, &str)]) -> (i32, Value) {
    let mut cmd = p.copilot(["--output", "json", "gate", "run"]);
    cmd.args(args);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), doc)
}

fn result<'a>(doc: &'a Value, gate: &str) -> &'a Value {
    doc["phases"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["results"].as_array().unwrap())
        .find(|r| r["gate"] == gate)
        .unwrap_or_else(|| panic!("no {gate} in {doc}"))
}

// ---- migrations on PostgreSQL ------------------------------------------------

/// A project whose migrations gate reads `dir` and targets `db`, with `applied` already run there.
async fn migrations_project(set: &str, db: &TestDatabase, applied: i64) -> Project {
    let p = Project::init();
    let dir = p.path("migrations/app");
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(format!("{FIXTURES}/migrations/{set}")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    p.write("gates/migrations.yaml", "name: migrations\nkind: migrations\ntimeout: 2m\nparams:\n  migrations: migrations/app\n  database: env:TARGET_DATABASE_URL\n");
    // The target already runs the first `applied` migrations.
    let migrator = sqlx::migrate::Migrator::new(dir.as_path()).await.unwrap();
    let base = sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(
            migrator
                .iter()
                .filter(|m| m.version <= applied)
                .cloned()
                .collect(),
        ),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    base.run(&pool).await.unwrap();
    pool.close().await;
    p
}

#[tokio::test]
async fn migrations_clean_set_passes_on_a_shadow_database() {
    let db = TestDatabase::create().await;
    let p = migrations_project("clean", &db, 1).await;
    let (code, doc) = gate(
        &p,
        &["canary", "--gate", "migrations"],
        &[("TARGET_DATABASE_URL", &db.url)],
    )
    .await;
    let r = result(&doc, "migrations");
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["evidence"]["pending"], json!([2]));
    assert_eq!(r["evidence"]["shadow"]["rollback_restores_schema"], true);
    assert_eq!(r["evidence"]["shadow"]["reapply_gives_same_schema"], true);
    assert!(r["evidence"]["elapsed_ms"].is_u64());
    // The target itself was not touched: migration 2 is still pending there.
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let versions: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(versions, [1]);
    // And no shadow database was left behind.
    let shadows: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_database WHERE datname LIKE 'copilot_shadow_%'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    let _ = shadows; // other tests may be running their own shadows at the same moment
}

#[tokio::test]
async fn migrations_irreversible_and_blocking_changes_fail() {
    let db = TestDatabase::create().await;
    let p = migrations_project("risky", &db, 1).await;
    let (code, doc) = gate(
        &p,
        &["canary", "--gate", "migrations"],
        &[("TARGET_DATABASE_URL", &db.url)],
    )
    .await;
    let r = result(&doc, "migrations");
    assert_eq!(code, 1, "{r:#}");
    let summary = r["summary"].as_str().unwrap();
    assert!(summary.contains("[2] cannot be rolled back"), "{summary}");
    assert!(summary.contains("add-not-null-column"), "{summary}");
    assert!(summary.contains("index-without-concurrently"), "{summary}");
    assert_eq!(r["evidence"]["irreversible"], json!([2]));
    let rules: Vec<&str> = r["evidence"]["lint"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rule"].as_str().unwrap())
        .collect();
    assert_eq!(rules, ["add-not-null-column", "index-without-concurrently"]);
}

#[tokio::test]
async fn migrations_changed_after_applying_fail() {
    let db = TestDatabase::create().await;
    let p = migrations_project("clean", &db, 2).await;
    let (code, _) = gate(
        &p,
        &["canary", "--gate", "migrations"],
        &[("TARGET_DATABASE_URL", &db.url)],
    )
    .await;
    assert_eq!(code, 0);
    // Someone edits a migration that already ran.
    let file = p.path("migrations/app/0001_shops.up.sql");
    let text = std::fs::read_to_string(&file).unwrap();
    std::fs::write(
        &file,
        text.replace("shop TEXT PRIMARY KEY", "shop VARCHAR(255) PRIMARY KEY"),
    )
    .unwrap();
    let (code, doc) = gate(
        &p,
        &["canary", "--gate", "migrations"],
        &[("TARGET_DATABASE_URL", &db.url)],
    )
    .await;
    assert_eq!(code, 1);
    assert!(
        result(&doc, "migrations")["summary"]
            .as_str()
            .unwrap()
            .contains("[1] changed"),
        "{doc}"
    );
}

#[tokio::test]
async fn migrations_of_the_bundled_service_pass_on_sqlite() {
    let p = Project::init();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("target.db").display());
    p.write("gates/migrations.yaml", "name: migrations\nkind: migrations\nparams:\n  migrations: migrations/service/sqlite\n  database: env:TARGET_DATABASE_URL\n");
    let (code, doc) = gate(
        &p,
        &["canary", "--gate", "migrations"],
        &[("TARGET_DATABASE_URL", &url)],
    )
    .await;
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(
        result(&doc, "migrations")["evidence"]["pending"],
        json!([1, 2, 3, 4, 5, 6])
    );
}

// ---- queue-health on Redis with the real bullmq -----------------------------

fn scenario(package: &str, queue: &str, which: &str) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/bullmq");
    assert!(
        dir.join("node_modules").join(package).is_dir(),
        "run `npm ci --prefix tests/bullmq`"
    );
    let out = Command::new("node")
        .env("BULLMQ", package)
        .arg(dir.join("scenario.mjs"))
        .args([&redis_url(), queue, which])
        .output()
        .expect("node");
    assert!(
        out.status.success(),
        "{package} {which}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn queue_gate(queue: &str) -> (i32, Value) {
    let p = Project::init();
    p.write(
        "gates/queue-health.yaml",
        &format!("name: queue-health\nkind: queue-health\nparams:\n  redis: env:QUEUE_REDIS_URL\n  queues: [{queue}]\n  window: 1h\n  max_failure_rate: 0.05\n  max_waiting: 100\n  max_oldest_wait: 5m\n  max_stalled: 0\n"),
    );
    let (code, doc) = gate(
        &p,
        &["canary", "--gate", "queue-health"],
        &[("QUEUE_REDIS_URL", &redis_url())],
    )
    .await;
    (code, result(&doc, "queue-health").clone())
}

#[tokio::test]
async fn queue_health_against_bullmq_6_queues() {
    queue_health_against("bullmq").await;
}

#[tokio::test]
async fn queue_health_against_bullmq_5_queues() {
    queue_health_against("bullmq5").await;
}

async fn queue_health_against(package: &'static str) {
    let healthy = unique_queue("qh-healthy");
    let failing = unique_queue("qh-failing");
    let old = unique_queue("qh-old");
    let stalled = unique_queue("qh-stalled");
    let many = unique_queue("qh-stalled-many");
    for (q, s) in [
        (&healthy, "healthy"),
        (&failing, "failing"),
        (&old, "old-waiting"),
        (&stalled, "stalled"),
        (&many, "stalled-many"),
    ] {
        let (q, s) = (q.clone(), s.to_string());
        tokio::task::spawn_blocking(move || scenario(package, &q, &s))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(800)).await; // the dead worker's lock lapses

    let (code, r) = queue_gate(&healthy).await;
    // Healthy now; the window has not been observed yet, so a warning, not a failure.
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["outcome"], "warn");
    assert_eq!(r["evidence"]["queues"][0]["completed_in_window"], 20);
    assert_eq!(r["evidence"]["queues"][0]["failed_in_window"], 0);

    let (code, r) = queue_gate(&failing).await;
    assert_eq!(code, 1, "{r:#}");
    assert!(
        r["summary"]
            .as_str()
            .unwrap()
            .contains("failure rate 50.0%"),
        "{r}"
    );

    let (code, r) = queue_gate(&old).await;
    assert_eq!(code, 1, "{r:#}");
    assert!(
        r["summary"]
            .as_str()
            .unwrap()
            .contains("oldest waiting job is 360"),
        "{r}"
    );

    let (code, r) = queue_gate(&stalled).await;
    assert_eq!(code, 1, "{r:#}");
    assert!(
        r["summary"].as_str().unwrap().contains("1 stalled job(s)"),
        "{r}"
    );

    // Fifty stalled jobs: all counted, twenty named.
    let (code, r) = queue_gate(&many).await;
    assert_eq!(code, 1, "{r:#}");
    let summary = r["summary"].as_str().unwrap();
    assert!(summary.contains("50 stalled job(s)"), "{r}");
    assert!(summary.ends_with("and 30 more"), "{summary}");
    let q = &r["evidence"]["queues"][0];
    assert_eq!(q["active"], 50, "{q}");
    assert_eq!(q["stalled"], 50, "{q}");
    assert_eq!(q["stalled_ids"].as_array().unwrap().len(), 20, "{q}");

    for q in [healthy, failing, old, stalled, many] {
        drop_queue("bull", &q).await;
    }
}

#[tokio::test]
async fn queue_health_unreachable_redis_is_a_dependency_failure() {
    let p = Project::init();
    p.write(
        "gates/queue-health.yaml",
        "name: queue-health\nkind: queue-health\nparams:\n  redis: redis://127.0.0.1:9\n",
    );
    let (code, doc) = gate(&p, &["canary", "--gate", "queue-health"], &[]).await;
    assert_eq!(code, 3, "{doc}");
}

// ---- alerts against a real Alertmanager --------------------------------------

struct Alertmanager {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn alertmanager() -> Alertmanager {
    let bin = ["prometheus-alertmanager", "alertmanager"]
        .into_iter()
        .find(|b| {
            Command::new("sh")
                .args(["-c", &format!("command -v {b}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("Alertmanager is installed (Debian package prometheus-alertmanager)");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("am.yml"),
        "route:\n  receiver: 'null'\nreceivers:\n  - name: 'null'\n",
    )
    .unwrap();
    let port = crate::common::free_port();
    let child = Command::new(bin)
        .arg(format!(
            "--config.file={}",
            dir.path().join("am.yml").display()
        ))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let am = Alertmanager {
        child,
        url,
        _dir: dir,
    };
    let status = format!("{}/api/v2/status", am.url);
    eventually("Alertmanager starts", || {
        let status = status.clone();
        async move {
            client()
                .get(&status)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    am
}

async fn post_alert(am: &Alertmanager, labels: Value) {
    let r = client()
        .post(format!("{}/api/v2/alerts", am.url))
        .json(&json!([{ "labels": labels, "annotations": { "summary": "test" } }]))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

#[tokio::test]
async fn alerts_gate_against_alertmanager() {
    let am = alertmanager().await;
    let p = Project::init();
    // An alert for another arena does not block canary.
    post_alert(
        &am,
        json!({ "alertname": "HighErrorRate", "arena": "production", "severity": "critical" }),
    )
    .await;
    let (code, doc) = gate(
        &p,
        &["canary", "--gate", "alerts"],
        &[("ALERTMANAGER_URL", &am.url)],
    )
    .await;
    assert_eq!(code, 0, "{doc:#}");

    // One for canary does.
    post_alert(
        &am,
        json!({ "alertname": "QueueBacklog", "arena": "canary", "severity": "warning" }),
    )
    .await;
    eventually("the alert is active", || {
        let url = format!("{}/api/v2/alerts?filter=arena%3D%22canary%22", am.url);
        async move {
            client()
                .get(&url)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
                .as_array()
                .is_some_and(|a| !a.is_empty())
        }
    })
    .await;
    let (code, doc) = gate(
        &p,
        &["canary", "--gate", "alerts"],
        &[("ALERTMANAGER_URL", &am.url)],
    )
    .await;
    assert_eq!(code, 1, "{doc:#}");
    let r = result(&doc, "alerts");
    assert!(r["summary"].as_str().unwrap().contains("QueueBacklog"));
    assert_eq!(r["evidence"]["firing"][0]["labels"]["arena"], "canary");

    // Silenced, it no longer blocks. The silence starts by Alertmanager's
    // clock (when it says the alert started), whatever this process's is.
    let active: Value = get_json(&format!(
        "{}/api/v2/alerts?filter=arena%3D%22canary%22",
        am.url
    ))
    .await;
    let now = chrono::DateTime::parse_from_rfc3339(active[0]["startsAt"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let silence = json!({
        "matchers": [{ "name": "alertname", "value": "QueueBacklog", "isRegex": false, "isEqual": true }],
        "startsAt": now.to_rfc3339(), "endsAt": (now + chrono::Duration::hours(1)).to_rfc3339(),
        "createdBy": "copilot tests", "comment": "known backlog",
    });
    let r = client()
        .post(format!("{}/api/v2/silences", am.url))
        .json(&silence)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let mut last = (0, Value::Null);
    for _ in 0..40 {
        last = gate(
            &p,
            &["canary", "--gate", "alerts"],
            &[("ALERTMANAGER_URL", &am.url)],
        )
        .await;
        if last.0 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(last.0, 0, "{:#}", last.1);
}

// ---- the bundled service: ingestion, latency, health, smoke ------------------

#[tokio::test]
async fn service_gates_pass_against_a_running_service() {
    let svc = TestService::start(&[]).await;
    let p = Project::init();
    // Ingest the fixture feeds so recommendations have records to read.
    let pool = svc.running.state.pool.clone();
    let src = copilot_service::ingest::Source::resolve("google-search-status", None, None).unwrap();
    copilot_service::ingest::ingest(
        &pool,
        &src,
        &format!("{FIXTURES}/feeds/google-search-incidents.json"),
        now(),
    )
    .await
    .unwrap();
    p.write(
        "gates/ingestion.yaml",
        &format!("name: ingestion\nkind: ingestion\nparams:\n  sources:\n    - {{ source: google-search-status, location: {FIXTURES}/feeds/google-search-incidents.json }}\n    - {{ source: shopify-changelog, location: {FIXTURES}/feeds/shopify-changelog.rss }}\n    - {{ source: google-search-status-atom, location: {FIXTURES}/feeds/google-search-status.atom }}\n"),
    );
    let (code, doc) = gate(
        &p,
        &[
            "canary",
            "--gate",
            "ingestion",
            "--gate",
            "health",
            "--gate",
            "smoke",
            "--gate",
            "latency",
            "--url",
            &svc.base,
        ],
        &[],
    )
    .await;
    for g in ["ingestion", "health", "smoke", "latency"] {
        let r = result(&doc, g);
        assert_eq!(r["outcome"], "pass", "{g}: {r:#}");
    }
    assert_eq!(code, 0);
    let lat = &result(&doc, "latency")["evidence"]["endpoints"][0];
    assert_eq!(lat["good"], 400);
    assert!(lat["p95_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(result(&doc, "ingestion")["evidence"]["records"], 10);
    svc.stop().await;
}

#[tokio::test]
async fn service_gates_catch_problems() {
    // A dead upstream feed: health warns (degraded); a 25% fault rate: latency and smoke fail.
    let svc = TestService::start(&[
        ("COPILOT_FEEDS", "http://127.0.0.1:9/feed"),
        ("COPILOT_FAULT_5XX_RATE", "0.25"),
    ])
    .await;
    let p = Project::init();
    let (code, doc) = gate(
        &p,
        &[
            "canary", "--gate", "health", "--gate", "latency", "--url", &svc.base,
        ],
        &[],
    )
    .await;
    assert_eq!(code, 1, "{doc:#}");
    assert_eq!(result(&doc, "health")["outcome"], "warn");
    let lat = result(&doc, "latency");
    assert_eq!(lat["outcome"], "fail");
    assert!(
        lat["summary"]
            .as_str()
            .unwrap()
            .contains("100 of 400 responses"),
        "{lat}"
    );

    // Too few samples is inconclusive, never a pass.
    p.edit("gates/latency.yaml", "requests: 400", "requests: 20");
    let svc2 = TestService::start(&[]).await;
    let (code, doc) = gate(
        &p,
        &["canary", "--gate", "latency", "--url", &svc2.base],
        &[],
    )
    .await;
    assert_eq!(code, 5, "{doc:#}");
    assert_eq!(result(&doc, "latency")["outcome"], "inconclusive");

    // Invalid records fail ingestion with JSON pointers.
    let bad = p.path("bad.json");
    let mut feed: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{FIXTURES}/feeds/google-search-incidents.json")).unwrap(),
    )
    .unwrap();
    feed[0]["external_desc"] = json!("");
    std::fs::write(&bad, feed.to_string()).unwrap();
    p.write("gates/ingestion.yaml", &format!("name: ingestion\nkind: ingestion\nparams:\n  max_invalid_ratio: 0.1\n  sources:\n    - {{ source: google-search-status, location: {} }}\n", bad.display()));
    let (code, doc) = gate(&p, &["canary", "--gate", "ingestion"], &[]).await;
    assert_eq!(code, 1, "{doc:#}");
    let r = result(&doc, "ingestion");
    assert!(
        r["summary"]
            .as_str()
            .unwrap()
            .contains("1 of 5 records invalid"),
        "{r}"
    );
    assert_eq!(r["evidence"]["first_errors"][0]["item"], "/0");
    svc.stop().await;
    svc2.stop().await;
}

#[tokio::test]
async fn queue_health_reads_the_memory_driver_through_the_service() {
    let svc = TestService::start(&[]).await;
    let p = Project::init();
    p.write("gates/queue-health.yaml", "name: queue-health\nkind: queue-health\nparams:\n  driver: memory\n  subject: target\n  window: 1h\n");
    let (code, doc) = gate(
        &p,
        &["canary", "--gate", "queue-health", "--url", &svc.base],
        &[],
    )
    .await;
    let r = result(&doc, "queue-health");
    assert_eq!(code, 0, "{r:#}");
    assert!(
        r["evidence"]["source"]
            .as_str()
            .unwrap()
            .contains("/api/queue")
    );
    svc.stop().await;
}

#[tokio::test]
async fn backup_gate_reads_a_dump_folder() {
    let p = Project::init();
    std::fs::create_dir_all(p.path("backups")).unwrap();
    p.write("gates/backup.yaml", "name: backup\nkind: backup\nparams:\n  source: dump-dir\n  location: backups\n  max_age: 24h\n");
    let (code, _) = gate(&p, &["production", "--gate", "backup"], &[]).await;
    assert_eq!(code, 1, "an empty folder has no backup");
    p.write("backups/prod-2026-11-22.dump", "PGDMP");
    // Dated by this process's clock, which the gate shares (the kernel's may
    // differ when the suite runs under a faked clock).
    let f = std::fs::File::options()
        .write(true)
        .open(p.path("backups/prod-2026-11-22.dump"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now()).unwrap();
    let (code, doc) = gate(&p, &["production", "--gate", "backup"], &[]).await;
    assert_eq!(code, 0, "{doc}");
    // Two days old: too old.
    let f = std::fs::File::options()
        .write(true)
        .open(p.path("backups/prod-2026-11-22.dump"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(48 * 3600))
        .unwrap();
    let (code, doc) = gate(&p, &["production", "--gate", "backup"], &[]).await;
    assert_eq!(code, 1, "{doc}");
    assert!(
        result(&doc, "backup")["summary"]
            .as_str()
            .unwrap()
            .contains("48h old")
    );
}
