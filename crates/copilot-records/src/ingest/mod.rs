//! Ingestion of search and social platform updates into normalized records.
//!
//! Three feed formats: the Google Search Status Dashboard's `incidents.json`,
//! Atom and RSS 2.0. Each item becomes an [`UpdateRecord`] keyed
//! `source:native_id` and is upserted; a changed raw item becomes a new
//! revision.

mod classify;
mod feed;
mod google_status;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

pub use classify::classify;

use crate::records::{self, Platform, UpdateRecord, Upsert};
use copilot_db::Pool;

/// Bumped whenever parsing changes what a record looks like.
pub const PARSER_VERSION: &str = "copilot-ingest/1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    GoogleStatus,
    Atom,
    Rss,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "google-status" => Some(Format::GoogleStatus),
            "atom" => Some(Format::Atom),
            "rss" => Some(Format::Rss),
            _ => None,
        }
    }
}

/// A known source: its format, platform and usual location.
pub struct KnownSource {
    pub name: &'static str,
    pub format: Format,
    pub platform: Platform,
    pub url: &'static str,
}

pub const KNOWN_SOURCES: &[KnownSource] = &[
    KnownSource {
        name: "google-search-status",
        format: Format::GoogleStatus,
        platform: Platform::GoogleSearch,
        url: "https://status.search.google.com/incidents.json",
    },
    KnownSource {
        name: "google-search-status-atom",
        format: Format::Atom,
        platform: Platform::GoogleSearch,
        url: "https://status.search.google.com/en/feed.atom",
    },
    KnownSource {
        name: "google-search-central-blog",
        format: Format::Rss,
        platform: Platform::GoogleSearch,
        url: "https://developers.google.com/search/blog/feeds/posts/default",
    },
    KnownSource {
        name: "google-ads-status",
        format: Format::GoogleStatus,
        platform: Platform::GoogleAds,
        url: "https://ads.google.com/status/publisher/incidents.json",
    },
    KnownSource {
        name: "shopify-changelog",
        format: Format::Rss,
        platform: Platform::Shopify,
        url: "https://shopify.dev/changelog/feed.xml",
    },
];

/// Which source a feed is, resolved from a known name or explicit settings.
#[derive(Clone, Debug)]
pub struct Source {
    pub name: String,
    pub format: Format,
    pub platform: Platform,
}

impl Source {
    pub fn resolve(
        name: &str,
        format: Option<Format>,
        platform: Option<Platform>,
    ) -> Result<Source, IngestError> {
        let known = KNOWN_SOURCES.iter().find(|s| s.name == name);
        let format = format.or(known.map(|k| k.format));
        let platform = platform.or(known.map(|k| k.platform));
        match (format, platform) {
            (Some(format), Some(platform)) => Ok(Source {
                name: name.to_string(),
                format,
                platform,
            }),
            _ => Err(IngestError::UnknownSource(name.to_string())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(
        "unknown source `{0}`: pass --format and --platform, or use one of: google-search-status, google-search-status-atom, google-search-central-blog, google-ads-status, shopify-changelog"
    )]
    UnknownSource(String),
    #[error("cannot read {location}: {message}")]
    Fetch { location: String, message: String },
    #[error("{format:?} feed does not parse: {message}")]
    Parse { format: Format, message: String },
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
}

/// Read a feed from a file path or an http(s) URL.
pub async fn fetch(location: &str) -> Result<Vec<u8>, IngestError> {
    let fail = |message: String| IngestError::Fetch {
        location: location.to_string(),
        message,
    };
    if location.starts_with("http://") || location.starts_with("https://") {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(20))
            .user_agent(concat!("copilot-service/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let resp = client
            .get(location)
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(fail(format!("HTTP {}", resp.status())));
        }
        Ok(resp
            .bytes()
            .await
            .map_err(|e| fail(e.to_string()))?
            .to_vec())
    } else {
        tokio::fs::read(location)
            .await
            .map_err(|e| fail(e.to_string()))
    }
}

/// An item of a feed that could not become a record.
#[derive(Clone, Debug, Serialize)]
pub struct Rejected {
    /// Where in the feed (`/3` for the fourth incident, `item 2`, an incident id).
    pub item: String,
    pub message: String,
}

/// What a feed yielded: records, and the items that could not be read.
#[derive(Clone, Debug, Default)]
pub struct Parsed {
    pub records: Vec<UpdateRecord>,
    pub rejected: Vec<Rejected>,
}

/// Parse a feed into normalized records. A feed that is not of its format at
/// all is an error; a malformed item is rejected and the others are kept.
pub fn parse(
    source: &Source,
    bytes: &[u8],
    fetched_at: DateTime<Utc>,
) -> Result<Parsed, IngestError> {
    match source.format {
        Format::GoogleStatus => google_status::parse(source, bytes, fetched_at),
        Format::Atom => feed::parse_atom(source, bytes, fetched_at),
        Format::Rss => feed::parse_rss(source, bytes, fetched_at),
    }
}

/// What one ingestion run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IngestReport {
    pub source: String,
    pub records: usize,
    pub rejected: Vec<Rejected>,
    pub inserted: usize,
    pub revised: usize,
    pub unchanged: usize,
}

/// Fetch, parse and upsert one feed.
pub async fn ingest(
    pool: &Pool,
    source: &Source,
    location: &str,
    now: DateTime<Utc>,
) -> Result<IngestReport, IngestError> {
    let bytes = fetch(location).await?;
    let parsed = parse(source, &bytes, now)?;
    let mut report = IngestReport {
        source: source.name.clone(),
        records: parsed.records.len(),
        rejected: parsed.rejected,
        ..IngestReport::default()
    };
    for outcome in records::upsert_many(pool, &parsed.records).await? {
        match outcome {
            Upsert::Inserted => report.inserted += 1,
            Upsert::Revised => report.revised += 1,
            Upsert::Unchanged => report.unchanged += 1,
        }
    }
    Ok(report)
}

/// sha256 (hex) of a value's canonical JSON: keys sorted, no whitespace.
pub fn canonical_hash(value: &serde_json::Value) -> String {
    fn canon(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let sorted: BTreeMap<&String, serde_json::Value> =
                    m.iter().map(|(k, v)| (k, canon(v))).collect();
                serde_json::to_value(sorted).expect("map")
            }
            serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(canon).collect()),
            other => other.clone(),
        }
    }
    let text = serde_json::to_string(&canon(value)).expect("json");
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

/// Parse the timestamps feeds use (RFC 3339, RFC 2822), to whole seconds.
pub fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    let t = text.trim();
    if t.is_empty() {
        return None;
    }
    let parsed = DateTime::parse_from_rfc3339(t)
        .or_else(|_| DateTime::parse_from_rfc2822(t))
        .ok()?
        .with_timezone(&Utc);
    DateTime::from_timestamp(parsed.timestamp(), 0)
}
