//! Ingestion of the fixture feeds into normalized records.

use chrono::{DateTime, Utc};
use copilot_db::Pool;
use copilot_service::ingest::{self, Format, Source};
use copilot_service::records::{self, Platform, Severity, UpdateKind, UpdateStatus};
use serde_json::Value;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/feeds");

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!("{FIXTURES}/{name}")).unwrap()
}

fn fetched() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-22T00:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn validator() -> jsonschema::Validator {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schemas/update-record.schema.json"
        ))
        .unwrap(),
    )
    .unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

fn assert_valid(recs: &[records::UpdateRecord]) {
    let v = validator();
    for r in recs {
        let doc = serde_json::to_value(r).unwrap();
        let errors: Vec<String> = v
            .iter_errors(&doc)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        assert!(errors.is_empty(), "{} invalid: {errors:?}", r.id);
    }
}

#[test]
fn google_status_incidents() {
    let src = Source::resolve("google-search-status", None, None).unwrap();
    let parsed = ingest::parse(&src, &fixture("google-search-incidents.json"), fetched()).unwrap();
    assert!(parsed.rejected.is_empty());
    let recs = parsed.records;
    assert_valid(&recs);
    assert_eq!(recs.len(), 5);
    let get = |id: &str| {
        recs.iter()
            .find(|r| r.id == format!("google-search-status:{id}"))
            .unwrap()
    };

    let core = get("ZxRk4b8yQh1mHq2nW3pX");
    assert_eq!(core.kind, UpdateKind::CoreUpdate);
    assert_eq!(core.status, UpdateStatus::Ongoing);
    assert_eq!(core.ended_at, None, "end: null");
    assert_eq!(core.platform, Platform::GoogleSearch);
    assert_eq!(
        core.url.as_deref(),
        Some("https://status.search.google.com/incidents/ZxRk4b8yQh1mHq2nW3pX")
    );
    assert_eq!(core.surfaces, ["Ranking", "Search"]);
    assert!(
        core.summary
            .as_deref()
            .unwrap()
            .contains("rollout is ongoing")
    );
    assert_eq!(
        core.started_at.unwrap().to_rfc3339(),
        "2026-11-11T16:00:00+00:00"
    );

    let indexing = get("Hq7TzVb2KpLm9sNc4dRf");
    assert_eq!(indexing.kind, UpdateKind::SearchIncident);
    assert_eq!(indexing.status, UpdateStatus::Ongoing, "end: empty string");
    assert_eq!(indexing.severity, Severity::Medium);

    let crawling = get("Pc3WvX8nRt5yJk2LmQ6s");
    assert_eq!(crawling.kind, UpdateKind::SearchIncident);
    assert_eq!(crawling.status, UpdateStatus::Ongoing, "end missing");
    assert_eq!(crawling.severity, Severity::Critical, "SERVICE_OUTAGE");

    let spam = get("Aa1Bb2Cc3Dd4Ee5Ff6Gg");
    assert_eq!(spam.kind, UpdateKind::SpamUpdate);
    assert_eq!(spam.status, UpdateStatus::Resolved);
    assert_eq!(
        spam.ended_at.unwrap().to_rfc3339(),
        "2026-09-10T14:30:00+00:00"
    );

    assert_eq!(get("Ju9Ne2026CoreUpdate00").kind, UpdateKind::CoreUpdate);
    assert!(recs.iter().all(|r| r.raw_hash.len() == 64
        && r.revision == 1
        && r.parser_version == ingest::PARSER_VERSION));
}

#[test]
fn atom_entries_are_grouped_by_incident() {
    let src = Source::resolve("google-search-status-atom", None, None).unwrap();
    let recs = ingest::parse(&src, &fixture("google-search-status.atom"), fetched())
        .unwrap()
        .records;
    assert_valid(&recs);
    assert_eq!(recs.len(), 2, "four entries, two incidents");
    let core = recs
        .iter()
        .find(|r| r.id.ends_with(":ZxRk4b8yQh1mHq2nW3pX"))
        .unwrap();
    assert_eq!(core.kind, UpdateKind::CoreUpdate);
    assert_eq!(core.status, UpdateStatus::Ongoing);
    assert_eq!(
        core.started_at.unwrap().to_rfc3339(),
        "2026-11-11T16:24:51+00:00"
    );
    assert_eq!(core.updated_at.to_rfc3339(), "2026-11-18T09:02:13+00:00");
    assert_eq!(
        core.summary.as_deref(),
        Some("The rollout is ongoing & expected to complete within two weeks.")
    );
    let serving = recs
        .iter()
        .find(|r| r.id.ends_with(":Kd8MsServing2026Oct"))
        .unwrap();
    assert_eq!(serving.kind, UpdateKind::SearchIncident);
    assert_eq!(serving.status, UpdateStatus::Resolved);
    assert_eq!(
        serving.ended_at.unwrap().to_rfc3339(),
        "2026-10-02T13:45:00+00:00"
    );
    assert_eq!(
        serving.surfaces,
        ["Serving", "Serving"]
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    );
}

#[test]
fn rss_items_are_classified() {
    let src = Source::resolve("shopify-changelog", None, None).unwrap();
    let recs = ingest::parse(&src, &fixture("shopify-changelog.rss"), fetched())
        .unwrap()
        .records;
    assert_valid(&recs);
    assert_eq!(recs.len(), 3);
    let kinds: Vec<UpdateKind> = recs.iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [
            UpdateKind::ApiVersionRelease,
            UpdateKind::ApiDeprecation,
            UpdateKind::FeatureChange
        ]
    );
    assert_eq!(
        recs[0].id,
        "shopify-changelog:api-version-2027-01-is-now-available"
    );
    assert_eq!(
        recs[0].summary.as_deref(),
        Some("Version 2027-01 of the Admin & Storefront APIs is now the latest stable release.")
    );
    assert_eq!(recs[1].status, UpdateStatus::Scheduled);
    assert_eq!(recs[2].id, "shopify-changelog:changelog-88231");
    assert_eq!(
        recs[2].published_at.to_rfc3339(),
        "2026-11-16T09:00:00+00:00"
    );
}

#[test]
fn malformed_feeds_are_rejected_with_a_reason() {
    let g = Source::resolve("google-search-status", None, None).unwrap();
    let e = ingest::parse(&g, &fixture("broken-incidents.json"), fetched()).unwrap_err();
    assert!(e.to_string().contains("does not parse"), "{e}");
    let r = Source::resolve("blog", Some(Format::Rss), Some(Platform::Meta)).unwrap();
    // A malformed item is rejected, with where and why; the feed still reads.
    let parsed = ingest::parse(&r, &fixture("broken.rss"), fetched()).unwrap();
    assert!(parsed.records.is_empty());
    assert_eq!(parsed.rejected.len(), 1);
    assert!(
        parsed.rejected[0].message.contains("pubDate"),
        "{:?}",
        parsed.rejected
    );
    let text = std::fs::read_to_string(format!("{FIXTURES}/google-search-incidents.json")).unwrap();
    let mut doc: Value = serde_json::from_str(&text).unwrap();
    doc[2].as_object_mut().unwrap().remove("external_desc");
    let parsed = ingest::parse(&g, doc.to_string().as_bytes(), fetched()).unwrap();
    assert_eq!((parsed.records.len(), parsed.rejected.len()), (4, 1));
    assert_eq!(parsed.rejected[0].item, "/2");
    let e = ingest::parse(&r, b"<html><body>not a feed</body></html>", fetched()).unwrap_err();
    assert!(e.to_string().contains("not <rss>"), "{e}");
    assert!(Source::resolve("mystery", None, None).is_err());
}

#[tokio::test]
async fn upserts_count_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let pool = Pool::connect(
        &format!("sqlite://{}", dir.path().join("s.db").display()),
        2,
    )
    .await
    .unwrap();
    copilot_service::migrate::up(&pool).await.unwrap();
    let src = Source::resolve("google-search-status", None, None).unwrap();
    let path = format!("{FIXTURES}/google-search-incidents.json");
    let first = ingest::ingest(&pool, &src, &path, fetched()).await.unwrap();
    assert_eq!((first.inserted, first.revised, first.unchanged), (5, 0, 0));
    let again = ingest::ingest(&pool, &src, &path, fetched()).await.unwrap();
    assert_eq!((again.inserted, again.revised, again.unchanged), (0, 0, 5));

    // The core update ends: a new revision of the same record.
    let changed = tempfile::NamedTempFile::new().unwrap();
    let text = std::fs::read_to_string(&path).unwrap().replacen(
        "\"end\": null",
        "\"end\": \"2026-11-25T10:00:00+00:00\"",
        1,
    );
    std::fs::write(changed.path(), text).unwrap();
    let third = ingest::ingest(&pool, &src, changed.path().to_str().unwrap(), fetched())
        .await
        .unwrap();
    assert_eq!((third.inserted, third.revised, third.unchanged), (0, 1, 4));
    let core = records::get(&pool, "google-search-status:ZxRk4b8yQh1mHq2nW3pX")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(core.revision, 2);
    assert_eq!(core.status, UpdateStatus::Resolved);
    assert_eq!(records::count(&pool).await.unwrap(), 5);
}

#[tokio::test]
async fn ingest_command_reads_files_and_urls() {
    use axum::routing::get;
    // Serve the RSS fixture over HTTP on a loopback port.
    let app = axum::Router::new().route(
        "/feed.xml",
        get(|| async { fixture("shopify-changelog.rss") }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("s.db").display());
    let run = |args: Vec<String>| {
        let db = db.clone();
        tokio::task::spawn_blocking(move || {
            crate::common::copilot_service()
                .env("DATABASE_URL", db)
                .args(args)
                .output()
                .unwrap()
        })
    };
    let out = run(vec![
        "ingest".into(),
        "--source".into(),
        "google-search-status".into(),
        format!("{FIXTURES}/google-search-incidents.json"),
    ])
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["inserted"], 5);
    let out = run(vec![
        "ingest".into(),
        "--source".into(),
        "shopify-changelog".into(),
        format!("http://{addr}/feed.xml"),
    ])
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["inserted"],
        3
    );
    // A malformed item is reported and skipped; a file that is no feed at all is an error.
    let out = run(vec![
        "ingest".into(),
        "--source".into(),
        "shopify-changelog".into(),
        format!("{FIXTURES}/broken.rss"),
    ])
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["rejected"][0]["message"], "no valid <pubDate>");
    let out = run(vec![
        "ingest".into(),
        "--source".into(),
        "shopify-changelog".into(),
        format!("{FIXTURES}/broken-incidents.json"),
    ])
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = run(vec![
        "ingest".into(),
        "--source".into(),
        "mystery".into(),
        "x".into(),
    ])
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn published_schemas_are_current() {
    for (which, file) in [
        ("record", "update-record"),
        ("recommendations", "recommendations"),
    ] {
        let out = crate::common::copilot_service()
            .args(["schema", which])
            .output()
            .unwrap();
        let committed = std::fs::read_to_string(format!(
            "{}/schemas/{file}.schema.json",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            committed,
            "schemas/{file}.schema.json is stale: run `cargo run --bin copilot-service -- schema {which}`"
        );
    }
}
