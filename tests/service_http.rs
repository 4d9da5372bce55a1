//! copilot-service over HTTP: webhooks, recommendations, flags, health, metrics.

use chrono::Duration;
use copilot_service::records::{self, Platform, Severity, UpdateKind, UpdateRecord, UpdateStatus};
use serde_json::Value;

use crate::service_support::*;

// HMAC-SHA256 vectors computed outside this code base (Python's hmac module):
// base64(hmac_sha256(secret, body)).
const BODY: &str = r#"{"id":820982911946154508,"email":"jon@example.com"}"#;
const SIG_HUSH: &str = "D0UMXmhjwBRi4y66TmhJrDlhQABD7zI2fm3p6/QLMo8=";
const SIG_PREVIOUS: &str = "nxd6mqqTbMKRBdvUFG2ZcdKNiY9Wn9WOd2JmPTXhGM0=";

#[test]
fn signatures_match_independent_vectors() {
    assert_eq!(
        copilot_service::webhooks::sign(SECRET, BODY.as_bytes()),
        SIG_HUSH
    );
    assert_eq!(
        copilot_service::webhooks::sign("rotated-previous-secret", BODY.as_bytes()),
        SIG_PREVIOUS
    );
}

#[tokio::test]
async fn webhook_is_verified_deduplicated_and_processed() {
    let svc = TestService::start(&[]).await;
    let r = webhook(&svc.base, BODY, SIG_HUSH, "evt-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "queued");

    // A redelivery is acknowledged but not enqueued twice.
    let r = webhook(&svc.base, BODY, SIG_HUSH, "evt-1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "duplicate");

    let pool = svc.running.state.pool.clone();
    eventually("the worker processes the delivery", || {
        let pool = pool.clone();
        async move {
            copilot_service::webhooks::delivery_status(&pool, "evt-1")
                .await
                .unwrap()
                .as_deref()
                == Some("processed")
        }
    })
    .await;
    let counts: Value = get_json(&svc.url("/api/queue")).await;
    assert_eq!(counts["counts"]["completed"], 1, "{counts}");
    let metrics = client()
        .get(svc.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("webhook_deliveries_total{outcome=\"queued\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("webhook_deliveries_total{outcome=\"duplicate\"} 1"));
    assert!(metrics.contains("queue_jobs_processed_total{outcome=\"completed\"} 1"));
    svc.stop().await;
}

#[tokio::test]
async fn webhook_rejections_are_4xx() {
    let svc = TestService::start(&[("WEBHOOK_MAX_BYTES", "4096")]).await;
    // Wrong signature, missing signature: 401.
    let r = webhook(&svc.base, BODY, SIG_PREVIOUS, "evt-2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .post(svc.url("/webhooks/shopify"))
        .header("X-Shopify-Topic", "orders/create")
        .body(BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Tampered body with a valid-looking signature: 401.
    let r = webhook(&svc.base, &BODY.replace("jon", "eve"), SIG_HUSH, "evt-3")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Signed but missing required headers: 400, naming them.
    let r = client()
        .post(svc.url("/webhooks/shopify"))
        .header("X-Shopify-Hmac-Sha256", SIG_HUSH)
        .header("X-Shopify-Topic", "orders/create")
        .body(BODY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let err = r.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        err.contains("x-shopify-shop-domain") && err.contains("x-shopify-webhook-id"),
        "{err}"
    );
    // Oversize: 413.
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(8000));
    let sig = copilot_service::webhooks::sign(SECRET, big.as_bytes());
    let r = webhook(&svc.base, &big, &sig, "evt-4")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // In JSON, like every other refusal.
    let doc: Value = r.json().await.unwrap();
    assert!(
        doc["error"].as_str().unwrap().contains("larger than"),
        "{doc}"
    );
    // Signed garbage: 400, not 500.
    let sig = copilot_service::webhooks::sign(SECRET, b"not json");
    let r = webhook(&svc.base, "not json", &sig, "evt-5")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let counts: Value = get_json(&svc.url("/api/queue")).await;
    assert_eq!(
        counts["counts"]["completed"].as_u64().unwrap()
            + counts["counts"]["waiting"].as_u64().unwrap(),
        0
    );
    svc.stop().await;
}

#[tokio::test]
async fn previous_secret_is_accepted_during_rotation() {
    let svc = TestService::start(&[
        ("SHOPIFY_WEBHOOK_SECRET", "brand-new"),
        ("SHOPIFY_WEBHOOK_SECRET_PREVIOUS", "rotated-previous-secret"),
    ])
    .await;
    let r = webhook(&svc.base, BODY, SIG_PREVIOUS, "evt-rot")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = webhook(&svc.base, BODY, SIG_HUSH, "evt-old")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    svc.stop().await;
}

#[tokio::test]
async fn webhook_without_event_id_dedupes_on_webhook_id() {
    let svc = TestService::start(&[]).await;
    let send = || {
        client()
            .post(svc.url("/webhooks/shopify"))
            .header("X-Shopify-Hmac-Sha256", SIG_HUSH)
            .header("X-Shopify-Topic", "orders/create")
            .header("X-Shopify-Shop-Domain", "dev-hotrod.myshopify.com")
            .header("X-Shopify-API-Version", "2026-10")
            .header(
                "X-Shopify-Webhook-Id",
                "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
            )
            .body(BODY)
            .send()
    };
    assert_eq!(
        send().await.unwrap().json::<Value>().await.unwrap()["status"],
        "queued"
    );
    assert_eq!(
        send().await.unwrap().json::<Value>().await.unwrap()["status"],
        "duplicate"
    );
    svc.stop().await;
}

fn record(
    id: &str,
    kind: UpdateKind,
    platform: Platform,
    started_days_ago: i64,
    ended_days_ago: Option<i64>,
    surfaces: &[&str],
) -> UpdateRecord {
    let now = crate::service_support::now();
    let started = now - Duration::days(started_days_ago);
    let ended = ended_days_ago.map(|d| now - Duration::days(d));
    UpdateRecord {
        id: format!("test:{id}"),
        source: "test".into(),
        platform,
        kind,
        title: format!("{id} title"),
        url: None,
        summary: None,
        published_at: started,
        updated_at: ended.unwrap_or(started),
        started_at: Some(started),
        ended_at: ended,
        status: if ended.is_some() {
            UpdateStatus::Resolved
        } else {
            UpdateStatus::Ongoing
        },
        severity: Severity::Medium,
        surfaces: surfaces.iter().map(|s| s.to_string()).collect(),
        raw_hash: format!("{:064x}", id.len()),
        revision: 1,
        fetched_at: now,
        parser_version: "test".into(),
    }
}

#[tokio::test]
async fn recommendations_follow_the_rules_and_their_schema() {
    let svc = TestService::start(&[("SHOPIFY_API_VERSION", "2026-01")]).await;
    let pool = &svc.running.state.pool;
    for r in [
        record(
            "core-now",
            UpdateKind::CoreUpdate,
            Platform::GoogleSearch,
            3,
            None,
            &["Ranking"],
        ),
        record(
            "core-done",
            UpdateKind::CoreUpdate,
            Platform::GoogleSearch,
            30,
            Some(10),
            &["Ranking"],
        ),
        record(
            "core-too-fresh",
            UpdateKind::CoreUpdate,
            Platform::GoogleSearch,
            20,
            Some(2),
            &["Ranking"],
        ),
        record(
            "spam",
            UpdateKind::SpamUpdate,
            Platform::GoogleSearch,
            12,
            Some(5),
            &["Ranking"],
        ),
        record(
            "indexing",
            UpdateKind::SearchIncident,
            Platform::GoogleSearch,
            1,
            None,
            &["Indexing"],
        ),
        record(
            "meta-down",
            UpdateKind::PlatformIncident,
            Platform::Meta,
            0,
            None,
            &[],
        ),
        record(
            "meta-old",
            UpdateKind::PlatformIncident,
            Platform::Meta,
            9,
            Some(8),
            &[],
        ),
    ] {
        records::upsert(pool, &r).await.unwrap();
    }
    let resp = client()
        .get(svc.url("/api/recommendations?shop=dev-hotrod.myshopify.com"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let doc: Value = resp.json().await.unwrap();
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/recommendations.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&doc)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:?}\n{doc:#}");

    let recs = doc["recommendations"].as_array().unwrap();
    let by_rule =
        |rule: &str| -> Vec<&Value> { recs.iter().filter(|r| r["rule"] == rule).collect() };
    assert_eq!(by_rule("core_update_in_progress").len(), 1);
    assert_eq!(
        by_rule("core_update_in_progress")[0]["based_on"][0],
        "test:core-now"
    );
    assert_eq!(
        by_rule("core_update_review").len(),
        1,
        "only the update that ended 7+ days ago"
    );
    assert_eq!(
        by_rule("core_update_review")[0]["based_on"][0],
        "test:core-done"
    );
    assert_eq!(by_rule("spam_update_audit").len(), 1);
    assert_eq!(by_rule("search_incident_external").len(), 1);
    assert_eq!(by_rule("ads_platform_incident_hold").len(), 1);
    assert_eq!(
        by_rule("ads_platform_incident_hold")[0]["based_on"][0],
        "test:meta-down"
    );
    // 2026-01 is supported until 2027-01-01: within 90 days of now.
    let expiring = by_rule("api_version_expiring");
    assert_eq!(expiring.len(), 1);
    assert!(matches!(
        expiring[0]["severity"].as_str(),
        Some("high" | "critical")
    ));
    // Most severe first.
    let order: Vec<&str> = recs
        .iter()
        .map(|r| r["severity"].as_str().unwrap())
        .collect();
    let rank = |s: &str| {
        ["info", "low", "medium", "high", "critical"]
            .iter()
            .position(|x| *x == s)
            .unwrap()
    };
    assert!(
        order.windows(2).all(|w| rank(w[0]) >= rank(w[1])),
        "{order:?}"
    );
    // Bad input is 400, never 5xx.
    for q in ["", "?shop=", "?shop=evil.com", "?shop=a%20b.myshopify.com"] {
        let r = client()
            .get(svc.url(&format!("/api/recommendations{q}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{q}");
    }
    svc.stop().await;
}

#[tokio::test]
async fn recommendations_are_cached_until_records_or_settings_change() {
    let svc = TestService::start(&[("SHOPIFY_API_VERSION", "2026-10")]).await;
    let url = svc.url("/api/recommendations?shop=dev-hotrod.myshopify.com");
    let etag_of = |r: &reqwest::Response| {
        r.headers()
            .get("etag")
            .expect("an ETag")
            .to_str()
            .unwrap()
            .to_string()
    };
    let first = client().get(&url).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let e1 = etag_of(&first);
    let body1: Value = first.json().await.unwrap();
    assert!(
        body1["recommendations"].as_array().unwrap().is_empty(),
        "{body1}"
    );

    // The same answer, byte for byte, until something changes; a matching
    // If-None-Match gets 304 with the same validator and no body.
    let again = client().get(&url).send().await.unwrap();
    assert_eq!(etag_of(&again), e1);
    assert_eq!(again.json::<Value>().await.unwrap(), body1);
    let not_modified = client()
        .get(&url)
        .header("if-none-match", &e1)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    assert_eq!(etag_of(&not_modified), e1);
    assert!(not_modified.bytes().await.unwrap().is_empty());

    // An ingestor writes a record (here through its own pool, as another
    // process would): the revision moves and the answer is recomputed.
    let ingestor = copilot_db::Pool::connect(&svc.running.state.config.database_url, 1)
        .await
        .unwrap();
    records::upsert(
        &ingestor,
        &record(
            "cached-core",
            UpdateKind::CoreUpdate,
            Platform::GoogleSearch,
            2,
            None,
            &["Ranking"],
        ),
    )
    .await
    .unwrap();
    let rules = |doc: &Value| -> Vec<String> {
        doc["recommendations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["rule"].as_str().unwrap().to_string())
            .collect()
    };
    let u = url.clone();
    eventually("the new record is recommended on", || {
        let u = u.clone();
        async move { rules(&get_json(&u).await).contains(&"core_update_in_progress".to_string()) }
    })
    .await;
    let changed = client()
        .get(&url)
        .header("if-none-match", &e1)
        .send()
        .await
        .unwrap();
    assert_eq!(
        changed.status(),
        200,
        "an old validator gets the new answer"
    );
    assert_ne!(etag_of(&changed), e1);

    // The shop's settings change (it stops using Google Search): recomputed too.
    on_sqlite(&ingestor, "INSERT INTO shops (shop, platforms, updated_at) VALUES ('dev-hotrod.myshopify.com', '[\"meta\"]', '2026-01-01T00:00:00Z')").await;
    let u = url.clone();
    eventually("the shop's platforms are taken into account", || {
        let u = u.clone();
        async move { rules(&get_json(&u).await).is_empty() }
    })
    .await;
    ingestor.close().await;
    svc.stop().await;
}

async fn on_sqlite(pool: &copilot_db::Pool, sql: &str) {
    let copilot_db::Pool::Sqlite(p) = pool else {
        panic!("an SQLite pool")
    };
    sqlx::query(sql).execute(p).await.unwrap();
}

#[tokio::test]
async fn flags_come_from_the_database_through_a_cache() {
    use copilot_service::flags::Flags;
    let svc =
        TestService::start(&[("COPILOT_FLAGS", r#"{"reviews":true,"darkMode":false}"#)]).await;
    let doc: Value = get_json(&svc.url("/api/flags")).await;
    assert_eq!(doc["flags"]["reviews"], true);
    assert_eq!(doc["flags"]["darkMode"], false);
    assert_eq!(doc["arena"], "test");

    // Another writer changes a flag: the service keeps serving its cache.
    let pool = svc.running.state.pool.clone();
    let writer = Flags::new(pool.clone(), "test", std::time::Duration::from_secs(300));
    writer.set("reviews", false).await.unwrap();
    let doc: Value = get_json(&svc.url("/api/flags")).await;
    assert_eq!(doc["source"], "cache");
    assert_eq!(doc["flags"]["reviews"], true);

    // With a short TTL the change shows up once the entry expires.
    let short = Flags::new(pool.clone(), "test", std::time::Duration::from_millis(100));
    assert!(!short.enabled("reviews").await);
    writer.set("reviews", true).await.unwrap();
    assert!(!short.enabled("reviews").await, "still cached");
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    assert!(short.enabled("reviews").await);
    assert!(!short.enabled("noSuchFlag").await);

    // When the lookup fails, every flag is off.
    pool.close().await;
    let broken = Flags::new(pool.clone(), "test", std::time::Duration::from_millis(1));
    let snap = broken.snapshot().await;
    assert_eq!(snap.source, "fallback");
    assert!(!broken.enabled("reviews").await);
    svc.stop().await;
}

#[tokio::test]
async fn health_endpoints_report_each_dependency() {
    // A feed on a closed port: external is degraded, not failed.
    let svc = TestService::start(&[("COPILOT_FEEDS", "http://127.0.0.1:9/incidents.json")]).await;
    for path in ["/health", "/health/db", "/health/cache"] {
        let r = client().get(svc.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.json::<Value>().await.unwrap()["status"], "ok", "{path}");
    }
    let r = client()
        .get(svc.url("/health/external"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert_eq!(doc["status"], "degraded");
    assert_eq!(doc["feeds"][0]["ok"], false);
    let health: Value = get_json(&svc.url("/health")).await;
    assert_eq!(health["release"], "v-test");
    let metrics = client().get(svc.url("/metrics")).send().await.unwrap();
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = metrics.text().await.unwrap();
    assert!(
        text.contains("http_requests_total{route=\"/health/db\",method=\"GET\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("http_request_duration_seconds_bucket{route=\"/health\",le=\"+Inf\"} 2"),
        "{text}"
    );
    assert!(text.contains("queue_jobs{driver=\"memory\",state=\"waiting\"} 0"));
    assert!(text.contains("copilot_service_info{release=\"v-test\",arena=\"test\"} 1"));
    svc.stop().await;
}

#[tokio::test]
async fn redis_health_and_database_failure() {
    let svc = TestService::start(&[("REDIS_URL", &redis_url())]).await;
    let doc: Value = get_json(&svc.url("/health/cache")).await;
    assert_eq!(doc["cache"], "redis");
    assert_eq!(doc["status"], "ok");
    svc.running.state.pool.close().await;
    let r = client().get(svc.url("/health/db")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    svc.stop().await;
}

#[tokio::test]
async fn fault_injection_fails_an_exact_fraction_of_api_requests() {
    let svc = TestService::start(&[("COPILOT_FAULT_5XX_RATE", "0.25")]).await;
    let mut errors = 0;
    for _ in 0..40 {
        let r = client().get(svc.url("/api/flags")).send().await.unwrap();
        if r.status().is_server_error() {
            errors += 1;
        }
    }
    assert_eq!(errors, 10);
    assert_eq!(
        client()
            .get(svc.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    svc.stop().await;
}

#[tokio::test]
async fn the_service_runs_on_postgresql() {
    let db = crate::common::TestDatabase::create().await;
    let svc = TestService::start(&[
        ("DATABASE_URL", &db.url),
        ("COPILOT_FLAGS", r#"{"reviews":true}"#),
    ])
    .await;
    assert_eq!(
        client()
            .get(svc.url("/health/db"))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()["backend"],
        "postgres"
    );
    let r = webhook(&svc.base, BODY, SIG_HUSH, "evt-pg")
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "queued");
    let r = webhook(&svc.base, BODY, SIG_HUSH, "evt-pg")
        .send()
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "duplicate");
    let pool = svc.running.state.pool.clone();
    eventually("processed on PostgreSQL", || {
        let pool = pool.clone();
        async move {
            copilot_service::webhooks::delivery_status(&pool, "evt-pg")
                .await
                .unwrap()
                .as_deref()
                == Some("processed")
        }
    })
    .await;
    // A cached answer from before the record, which the trigger invalidates.
    let before: Value =
        get_json(&svc.url("/api/recommendations?shop=dev-hotrod.myshopify.com")).await;
    assert!(!before.to_string().contains("core_update_in_progress"));
    records::upsert(
        &svc.running.state.pool,
        &record(
            "pg-core",
            UpdateKind::CoreUpdate,
            Platform::GoogleSearch,
            2,
            None,
            &["Ranking"],
        ),
    )
    .await
    .unwrap();
    tokio::time::sleep(copilot_service::recommend_cache::REVALIDATE * 2).await;
    let doc: Value = get_json(&svc.url("/api/recommendations?shop=dev-hotrod.myshopify.com")).await;
    assert!(
        doc["recommendations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["rule"] == "core_update_in_progress"),
        "{doc}"
    );
    let flags: Value = get_json(&svc.url("/api/flags")).await;
    assert_eq!(flags["flags"]["reviews"], true);
    svc.stop().await;
}

/// Deliveries recorded in one statement: a repeat, in the same batch or a
/// later one, is recorded once and said to be a repeat.
async fn a_batch_of_deliveries_records_each_event_once(pool: &copilot_db::Pool) {
    use copilot_service::webhooks::{Delivery, delivery_status, record_deliveries};
    let delivery = |event_id: &str| Delivery {
        event_id: event_id.into(),
        webhook_id: format!("wh-{event_id}"),
        topic: "shop/update".into(),
        shop: "dev-hotrod.myshopify.com".into(),
        api_version: "2026-10".into(),
        payload: "{}".into(),
        received_at: crate::service_support::now(),
    };
    let (a, b, c) = (delivery("evt-a"), delivery("evt-b"), delivery("evt-c"));
    assert_eq!(
        record_deliveries(pool, &[&a, &b, &a]).await.unwrap(),
        [true, true, false]
    );
    assert_eq!(
        record_deliveries(pool, &[&b, &c]).await.unwrap(),
        [false, true]
    );
    for id in ["evt-a", "evt-b", "evt-c"] {
        assert_eq!(
            delivery_status(pool, id).await.unwrap().as_deref(),
            Some("queued")
        );
    }
}

#[tokio::test]
async fn deliveries_are_recorded_once_per_event_on_sqlite_and_postgresql() {
    let svc = TestService::start(&[("COPILOT_WORKER", "off")]).await;
    a_batch_of_deliveries_records_each_event_once(&svc.running.state.pool).await;
    svc.stop().await;
    let db = crate::common::TestDatabase::create().await;
    let svc = TestService::start(&[("DATABASE_URL", &db.url), ("COPILOT_WORKER", "off")]).await;
    a_batch_of_deliveries_records_each_event_once(&svc.running.state.pool).await;
    svc.stop().await;
}

/// A raw connection to the service that has sent `sent` and waits.
async fn raw(base: &str, sent: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let addr = base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(sent).await.unwrap();
    s
}

/// What the service answers on `s` (until it closes), within `within`.
async fn answer(s: &mut tokio::net::TcpStream, within: std::time::Duration) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    tokio::time::timeout(within, s.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test]
async fn slow_and_lying_clients_are_bounded() {
    let svc = TestService::start(&[
        ("COPILOT_HEADER_TIMEOUT_SECS", "1"),
        ("COPILOT_BODY_TIMEOUT_SECS", "1"),
        ("COPILOT_MAX_CONNECTIONS", "64"),
    ])
    .await;
    let wait = std::time::Duration::from_secs(10);
    // Slowloris: 200 connections that never finish their headers, more than
    // the service serves at once. Each is closed after the header timeout,
    // and /health answers meanwhile.
    let mut slow = Vec::new();
    for _ in 0..200 {
        slow.push(raw(&svc.base, b"GET /health HTTP/1.1\r\nHost: shop\r\nX-Slow: ").await);
    }
    let started = std::time::Instant::now();
    let health = tokio::time::timeout(wait, client().get(svc.url("/health")).send())
        .await
        .expect("/health answers while slow clients wait")
        .unwrap();
    assert_eq!(health.status(), 200);
    for s in &mut slow {
        assert!(
            answer(s, wait).await.is_some(),
            "a connection with unfinished headers is closed"
        );
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(15));
    // A declared body far over the limit is refused before it is read.
    let mut lying = raw(
        &svc.base,
        b"POST /webhooks/shopify HTTP/1.1\r\nHost: shop\r\nContent-Length: 99999999999\r\n\r\nab",
    )
    .await;
    let said = answer(&mut lying, wait).await.expect("an answer");
    assert!(said.starts_with("HTTP/1.1 413"), "{said}");
    // A body that stops arriving is answered 408 after the body timeout.
    let mut stalled = raw(
        &svc.base,
        b"POST /webhooks/shopify HTTP/1.1\r\nHost: shop\r\nContent-Length: 100\r\n\r\n{\"id\":",
    )
    .await;
    let said = answer(&mut stalled, wait).await.expect("an answer");
    assert!(said.starts_with("HTTP/1.1 408"), "{said}");
    // Honest traffic still flows.
    assert_eq!(
        client()
            .get(svc.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    svc.stop().await;
}
