//! Kind-specific parameters of gate definitions (`params:` in `gates/*.yaml`).
//!
//! Every field has a default taken from the seed runbooks, so a gate file
//! needs to spell out only what differs. Values that point at a dependency
//! (`database`, `redis`, `alertmanager`, ...) are either literal URLs or
//! references such as `env:DATABASE_URL`; they are resolved when the gate
//! runs, never stored.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::duration::Duration;

/// Which arena a gate measures during a promotion FROM -> TO.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Subject {
    /// The arena the release comes from (e.g. staging's queue before canary).
    Source,
    /// The arena being entered.
    #[default]
    Target,
}

/// `migrations`: pending migrations apply, roll back and re-apply on a shadow database.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct MigrationsParams {
    /// Folder of `<version>_<name>.up.sql` / `.down.sql` pairs, relative to the project root.
    pub migrations: String,
    /// The target database (URL or reference, e.g. `env:DATABASE_URL`).
    pub database: String,
    /// Where shadow databases are created; defaults to the target's server.
    pub shadow: Option<String>,
    /// Lint pending migrations for backward compatibility.
    pub lint: bool,
    /// Let irreversible migrations pass with a warning instead of failing.
    pub allow_irreversible: bool,
}

impl Default for MigrationsParams {
    fn default() -> Self {
        MigrationsParams {
            migrations: "migrations/postgres".into(),
            database: "env:DATABASE_URL".into(),
            shadow: None,
            lint: true,
            allow_irreversible: false,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum QueueDriver {
    /// Redis in BullMQ's key layout.
    #[default]
    Bullmq,
    /// The service's in-memory queue, read through its endpoint.
    Memory,
}

/// `queue-health`: the job queue stayed healthy over a window.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct QueueHealthParams {
    pub driver: QueueDriver,
    /// Redis URL or reference (bullmq driver).
    pub redis: String,
    /// BullMQ key prefix.
    pub prefix: String,
    pub queues: Vec<String>,
    /// How long the queue must have been healthy (`24h` in staging).
    pub window: Duration,
    /// Failed / (failed + completed) within the window.
    pub max_failure_rate: f64,
    /// Jobs waiting (wait + paused + prioritized).
    pub max_waiting: u64,
    /// Age of the oldest waiting job.
    pub max_oldest_wait: Duration,
    /// Active jobs whose lock has expired.
    pub max_stalled: u64,
    pub subject: Subject,
}

impl Default for QueueHealthParams {
    fn default() -> Self {
        QueueHealthParams {
            driver: QueueDriver::Bullmq,
            redis: "env:REDIS_URL".into(),
            prefix: "bull".into(),
            queues: vec!["webhooks".into()],
            window: Duration::from_secs(24 * 3600),
            max_failure_rate: 0.01,
            max_waiting: 1000,
            max_oldest_wait: Duration::from_secs(300),
            max_stalled: 0,
            subject: Subject::Source,
        }
    }
}

/// One feed an ingestion gate reads.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FeedSource {
    /// A known source (`google-search-status`, `shopify-changelog`, ...) or a name of your own.
    pub source: String,
    /// `google-status`, `atom` or `rss`; known sources imply it.
    #[serde(default)]
    pub format: Option<String>,
    /// The platform of a source of your own (`google_search`, `meta`, ...).
    #[serde(default)]
    pub platform: Option<String>,
    /// A file path (relative to the project root) or an http(s) URL.
    pub location: String,
}

/// `ingestion`: the service's ingestors produce valid normalized records.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct IngestionParams {
    /// Feeds to run the ingestors on; empty means: check the latest records
    /// the service stored in `database`.
    pub sources: Vec<FeedSource>,
    /// The service's database (URL or reference), read when `sources` is empty.
    pub database: String,
    /// How many of the latest stored records to check.
    pub latest: u32,
    /// JSON Schema of a normalized update record.
    pub schema: String,
    /// Invalid records / all records above which the gate fails.
    pub max_invalid_ratio: f64,
    /// Fewer records than this is inconclusive.
    pub min_records: u64,
    pub subject: Subject,
}

impl Default for IngestionParams {
    fn default() -> Self {
        IngestionParams {
            sources: Vec::new(),
            database: "env:DATABASE_URL".into(),
            latest: 1000,
            schema: "schemas/update-record.schema.json".into(),
            max_invalid_ratio: 0.0,
            min_records: 1,
            subject: Subject::Source,
        }
    }
}

/// One endpoint measured by a latency gate.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LatencyEndpoint {
    pub path: String,
    #[serde(default = "default_get")]
    pub method: String,
    /// JSON Schema every response must satisfy.
    #[serde(default)]
    pub schema: Option<String>,
}

fn default_get() -> String {
    "GET".into()
}

/// `latency`: endpoints meet their response schema and latency budget.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct LatencyParams {
    pub endpoints: Vec<LatencyEndpoint>,
    pub requests: u32,
    pub concurrency: u32,
    /// Fewer successful samples than this is inconclusive, never a pass.
    pub min_samples: u32,
    pub p50: Option<Duration>,
    pub p95: Option<Duration>,
    pub p99: Option<Duration>,
}

impl Default for LatencyParams {
    fn default() -> Self {
        LatencyParams {
            endpoints: Vec::new(),
            requests: 200,
            concurrency: 8,
            min_samples: 100,
            p50: None,
            p95: Some(Duration::from_millis(500)),
            p99: None,
        }
    }
}

/// `health`: the health endpoints answer in time.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct HealthParams {
    pub endpoints: Vec<String>,
    /// Per-request timeout.
    pub request_timeout: Duration,
    /// Endpoints whose `degraded` answer is a warning, not a failure.
    pub degraded_warns: Vec<String>,
}

impl Default for HealthParams {
    fn default() -> Self {
        HealthParams {
            endpoints: ["/health", "/health/db", "/health/cache", "/health/external"]
                .map(String::from)
                .to_vec(),
            request_timeout: Duration::from_secs(2),
            degraded_warns: vec!["/health/external".into()],
        }
    }
}

/// A PromQL condition: the query's value must not exceed `max`.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromQuery {
    pub query: String,
    pub max: f64,
}

/// `alerts`: nothing is firing for the arena.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsParams {
    /// Alertmanager base URL or reference.
    pub alertmanager: String,
    /// Label matchers (`severity=~"critical|warning"`); `{arena}` is replaced by the arena name.
    pub matchers: Vec<String>,
    pub prometheus: Option<String>,
    pub queries: Vec<PromQuery>,
}

impl Default for AlertsParams {
    fn default() -> Self {
        AlertsParams {
            alertmanager: "env:ALERTMANAGER_URL".into(),
            matchers: vec!["arena=\"{arena}\"".into()],
            prometheus: None,
            queries: Vec::new(),
        }
    }
}

/// `window`: the arena's deploy windows and freezes allow a deploy now.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct WindowParams {
    /// Warn instead of fail outside the allowed windows (freezes still block).
    pub outside_window_warns: bool,
}

/// `env`: the arena's variables and secret references are complete and well formed.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct EnvParams {
    /// Variables whose value must be a `rediss://` URL.
    pub require_tls: Vec<String>,
    /// Variables whose value must be a `postgres://` or `postgresql://` URL.
    pub postgres_urls: Vec<String>,
    /// `SHOPIFY_API_VERSION` older than this warns.
    pub api_version_warn_after: Duration,
    /// `SHOPIFY_API_VERSION` older than this fails.
    pub api_version_max_age: Duration,
}

impl Default for EnvParams {
    fn default() -> Self {
        EnvParams {
            require_tls: Vec::new(),
            postgres_urls: vec!["DATABASE_URL".into()],
            api_version_warn_after: Duration::from_secs(274 * 86_400),
            api_version_max_age: Duration::from_secs(365 * 86_400),
        }
    }
}

/// One request of a smoke journey.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SmokeStep {
    pub name: String,
    #[serde(default = "default_get")]
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub body: Option<serde_json::Value>,
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    #[serde(default = "default_status")]
    pub status: u16,
    /// JSON pointer -> expected value.
    #[serde(default)]
    pub json: std::collections::BTreeMap<String, serde_json::Value>,
}

fn default_status() -> u16 {
    200
}

/// `smoke`: scripted journeys, run in order.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct SmokeParams {
    pub steps: Vec<SmokeStep>,
}

/// `command`: a program run to its exit (unit, integration or E2E tests, a
/// benchmark, a security scan); exit 0 passes.
#[derive(Clone, Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CommandParams {
    /// The program and its arguments, as a list: never a shell string, so
    /// no value is ever interpreted by a shell.
    pub run: Vec<String>,
    /// Where it runs, relative to the project root [default: the root].
    pub dir: Option<String>,
    /// Variables it gets: literal values or references (`env:NAME`,
    /// `file:PATH`), whose values are never printed or recorded.
    pub env: std::collections::BTreeMap<String, String>,
    /// Variables of copilot's own environment passed through by name
    /// (beside `PATH`, which it always gets); nothing else is.
    pub pass_env: Vec<String>,
    /// A JUnit XML report it writes (relative to `dir`): its counts become
    /// the evidence.
    pub junit: Option<String>,
    /// How many of the output's last lines are kept as evidence [default: 20].
    pub tail: Option<usize>,
}

/// `backup`: a recent database backup exists.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BackupParams {
    /// `dump-dir` (newest file in `location`), `rds-snapshots` (the newest
    /// automated or manual snapshot of `db_instance` or `db_cluster`), or
    /// `provider` (the provider's snapshot list).
    pub source: String,
    pub location: Option<String>,
    /// rds-snapshots: the RDS DB instance identifier.
    pub db_instance: Option<String>,
    /// rds-snapshots: the Aurora DB cluster identifier.
    pub db_cluster: Option<String>,
    /// rds-snapshots: the region [default: the arena's].
    pub region: Option<String>,
    pub max_age: Duration,
}

impl Default for BackupParams {
    fn default() -> Self {
        BackupParams {
            source: "provider".into(),
            location: None,
            db_instance: None,
            db_cluster: None,
            region: None,
            max_age: Duration::from_secs(24 * 3600),
        }
    }
}

/// `bake`: the release has run in the source arena for long enough.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BakeParams {
    pub min: Duration,
}

impl Default for BakeParams {
    fn default() -> Self {
        BakeParams {
            min: Duration::from_secs(24 * 3600),
        }
    }
}

/// `approval`: people recorded `copilot approve` for this release and arena.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalParams {
    pub min_approvals: u32,
}

impl Default for ApprovalParams {
    fn default() -> Self {
        ApprovalParams { min_approvals: 1 }
    }
}
