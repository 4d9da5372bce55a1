//! Normalized update records: what the ingestors produce and the
//! recommendation rules read.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sqlx::types::Json;

use copilot_db::{Pool, on_pool};

macro_rules! words {
    ($(#[$m:meta])* $name:ident { $($v:ident => $w:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
        pub enum $name { $(#[serde(rename = $w)] $v),+ }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v),+];
            pub fn as_str(self) -> &'static str { match self { $($name::$v => $w),+ } }
            pub fn parse(s: &str) -> Option<$name> { match s { $($w => Some($name::$v),)+ _ => None } }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

words!(
    /// The platform an update is about.
    Platform {
        GoogleSearch => "google_search",
        GoogleAds => "google_ads",
        Meta => "meta",
        Tiktok => "tiktok",
        Pinterest => "pinterest",
        MicrosoftAds => "microsoft_ads",
        Shopify => "shopify",
    }
);

impl Platform {
    /// Paid platforms, where automated bidding can be held.
    pub fn is_ads(self) -> bool {
        matches!(
            self,
            Platform::GoogleAds
                | Platform::Meta
                | Platform::Tiktok
                | Platform::Pinterest
                | Platform::MicrosoftAds
        )
    }
}

words!(
    /// What kind of change or event an update is.
    UpdateKind {
        CoreUpdate => "core_update",
        SpamUpdate => "spam_update",
        RankingUpdateOther => "ranking_update_other",
        SearchIncident => "search_incident",
        PlatformIncident => "platform_incident",
        ApiVersionRelease => "api_version_release",
        ApiDeprecation => "api_deprecation",
        PolicyChange => "policy_change",
        FeatureChange => "feature_change",
    }
);

words!(
    UpdateStatus {
        Ongoing => "ongoing",
        Resolved => "resolved",
        Scheduled => "scheduled",
        Informational => "informational",
    }
);

words!(
    Severity {
        Info => "info",
        Low => "low",
        Medium => "medium",
        High => "high",
        Critical => "critical",
    }
);

/// One normalized update from a search or social platform.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Normalized update record")]
pub struct UpdateRecord {
    /// `source:native_id`, stable across fetches.
    pub id: String,
    /// The ingestion source (`google-search-status`, `shopify-changelog`, ...).
    pub source: String,
    pub platform: Platform,
    pub kind: UpdateKind,
    #[schemars(length(min = 1))]
    pub title: String,
    pub url: Option<String>,
    /// The latest status text, if any.
    pub summary: Option<String>,
    pub published_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    /// `null` while the update is ongoing.
    pub ended_at: Option<DateTime<Utc>>,
    pub status: UpdateStatus,
    pub severity: Severity,
    /// Affected products or services (`Ranking`, `Crawling`, `Search`, `Discover`, ...).
    pub surfaces: Vec<String>,
    /// sha256 (hex) of the canonical raw item; a changed hash is a new revision.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub raw_hash: String,
    /// 1 for the first version seen, incremented on every change.
    #[schemars(range(min = 1))]
    pub revision: u32,
    pub fetched_at: DateTime<Utc>,
    pub parser_version: String,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: String,
    source: String,
    platform: String,
    kind: String,
    title: String,
    url: Option<String>,
    summary: Option<String>,
    published_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    ended_at: Option<DateTime<Utc>>,
    status: String,
    severity: String,
    surfaces: Json<Vec<String>>,
    raw_hash: String,
    revision: i32,
    fetched_at: DateTime<Utc>,
    parser_version: String,
}

impl Row {
    fn into_record(self) -> Option<UpdateRecord> {
        Some(UpdateRecord {
            id: self.id,
            source: self.source,
            platform: Platform::parse(&self.platform)?,
            kind: UpdateKind::parse(&self.kind)?,
            title: self.title,
            url: self.url,
            summary: self.summary,
            published_at: self.published_at,
            updated_at: self.updated_at,
            started_at: self.started_at,
            ended_at: self.ended_at,
            status: UpdateStatus::parse(&self.status)?,
            severity: Severity::parse(&self.severity)?,
            surfaces: self.surfaces.0,
            raw_hash: self.raw_hash,
            revision: u32::try_from(self.revision).unwrap_or(u32::MAX),
            fetched_at: self.fetched_at,
            parser_version: self.parser_version,
        })
    }
}

const COLUMNS: &str = "id, source, platform, kind, title, url, summary, published_at, updated_at, started_at, ended_at, status, severity, surfaces, raw_hash, revision, fetched_at, parser_version";

/// What an upsert did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Upsert {
    Inserted,
    /// The raw item changed: a new revision.
    Revised,
    Unchanged,
}

const UPSERT: &str = "INSERT INTO update_records (id, source, platform, kind, title, url, summary, published_at, updated_at, started_at, ended_at, status, severity, surfaces, raw_hash, revision, fetched_at, parser_version) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, 1, $16, $17) \
     ON CONFLICT (id) DO UPDATE SET source = excluded.source, platform = excluded.platform, kind = excluded.kind, \
     title = excluded.title, url = excluded.url, summary = excluded.summary, published_at = excluded.published_at, \
     updated_at = excluded.updated_at, started_at = excluded.started_at, ended_at = excluded.ended_at, \
     status = excluded.status, severity = excluded.severity, surfaces = excluded.surfaces, raw_hash = excluded.raw_hash, \
     revision = update_records.revision + 1, fetched_at = excluded.fetched_at, parser_version = excluded.parser_version \
     WHERE update_records.raw_hash <> excluded.raw_hash \
     RETURNING revision";

/// Store records in one transaction: insert each, or replace it when its raw hash changed.
pub async fn upsert_many(pool: &Pool, recs: &[UpdateRecord]) -> Result<Vec<Upsert>, sqlx::Error> {
    let mut out = Vec::with_capacity(recs.len());
    on_pool!(pool, p => {
        let mut tx = p.begin().await?;
        for r in recs {
            let revision: Option<(i32,)> = sqlx::query_as(UPSERT)
                .bind(&r.id)
                .bind(&r.source)
                .bind(r.platform.as_str())
                .bind(r.kind.as_str())
                .bind(&r.title)
                .bind(&r.url)
                .bind(&r.summary)
                .bind(r.published_at)
                .bind(r.updated_at)
                .bind(r.started_at)
                .bind(r.ended_at)
                .bind(r.status.as_str())
                .bind(r.severity.as_str())
                .bind(Json(&r.surfaces))
                .bind(&r.raw_hash)
                .bind(r.fetched_at)
                .bind(&r.parser_version)
                .fetch_optional(&mut *tx)
                .await?;
            out.push(match revision {
                None => Upsert::Unchanged,
                Some((1,)) => Upsert::Inserted,
                Some(_) => Upsert::Revised,
            });
        }
        tx.commit().await?;
    });
    Ok(out)
}

/// Store one record.
pub async fn upsert(pool: &Pool, r: &UpdateRecord) -> Result<Upsert, sqlx::Error> {
    Ok(upsert_many(pool, std::slice::from_ref(r)).await?[0])
}

pub async fn get(pool: &Pool, id: &str) -> Result<Option<UpdateRecord>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM update_records WHERE id = $1");
    let row: Option<Row> =
        on_pool!(pool, p => sqlx::query_as(&sql).bind(id).fetch_optional(p).await)?;
    Ok(row.and_then(Row::into_record))
}

/// Records of the given kinds that are ongoing or were updated since `since`, newest first.
pub async fn relevant(
    pool: &Pool,
    kinds: &[UpdateKind],
    since: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<UpdateRecord>, sqlx::Error> {
    // Two index-friendly halves (recent by kind, ongoing by status) instead
    // of one OR that scans the table; kinds of the ongoing half are filtered
    // here so the planner keeps to the status index. Placeholders appear in
    // binding order: SQLite numbers `$N` by first appearance.
    let wanted: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    let n = wanted.len();
    let list = (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {COLUMNS} FROM update_records WHERE kind IN ({list}) AND updated_at >= ${} \
         UNION \
         SELECT {COLUMNS} FROM update_records WHERE status = 'ongoing' \
         ORDER BY updated_at DESC LIMIT ${}",
        n + 1,
        n + 2
    );
    let rows: Vec<Row> = on_pool!(pool, p => {
        let mut q = sqlx::query_as(&sql);
        for k in &wanted {
            q = q.bind(*k);
        }
        q.bind(since).bind(limit).fetch_all(p).await
    })?;
    let rows: Vec<Row> = rows
        .into_iter()
        .filter(|r| wanted.contains(&r.kind.as_str()))
        .collect();
    Ok(rows.into_iter().filter_map(Row::into_record).collect())
}

/// The newest records, for the ingestion gate and people.
pub async fn latest(pool: &Pool, limit: i64) -> Result<Vec<UpdateRecord>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM update_records ORDER BY fetched_at DESC, id LIMIT $1");
    let rows: Vec<Row> = on_pool!(pool, p => sqlx::query_as(&sql).bind(limit).fetch_all(p).await)?;
    Ok(rows.into_iter().filter_map(Row::into_record).collect())
}

pub async fn count(pool: &Pool) -> Result<i64, sqlx::Error> {
    let (n,): (i64,) = on_pool!(pool, p => sqlx::query_as("SELECT COUNT(*) FROM update_records").fetch_one(p).await)?;
    Ok(n)
}

/// The JSON Schema of a record, as published in `schemas/update-record.schema.json`.
pub fn schema() -> serde_json::Value {
    let schema = schemars::generate::SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<UpdateRecord>();
    serde_json::to_value(schema).expect("schema serializes")
}
