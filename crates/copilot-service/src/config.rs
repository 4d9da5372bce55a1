//! The service's configuration, read once from the environment.
//!
//! Every variable is checked at start: a missing or malformed one stops the
//! service with one message naming it. Secret values are wrapped in
//! [`Secret`], whose `Debug` and `Display` never show them.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use chrono::{DateTime, Datelike, NaiveDate, Utc};

/// A value that must never be printed or logged.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueDriver {
    Memory,
    Bullmq,
}

/// A Shopify API version: `YYYY-01`, `-04`, `-07` or `-10`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion {
    pub year: i32,
    pub month: u32,
}

impl ApiVersion {
    pub fn parse(s: &str) -> Option<ApiVersion> {
        let (y, m) = s.trim().split_once('-')?;
        if y.len() != 4 || m.len() != 2 {
            return None;
        }
        let (year, month): (i32, u32) = (y.parse().ok()?, m.parse().ok()?);
        matches!(month, 1 | 4 | 7 | 10).then_some(ApiVersion { year, month })
    }

    /// The day the version was released.
    pub fn released(&self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, 1).expect("valid month")
    }

    /// Shopify supports each version for twelve months after its release.
    pub fn supported_until(&self) -> NaiveDate {
        let r = self.released();
        NaiveDate::from_ymd_opt(r.year() + 1, r.month(), 1).expect("valid month")
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// Everything the service reads from its environment.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub bind: IpAddr,
    pub port: u16,
    pub app_url: Option<String>,
    pub database_url: String,
    pub redis_url: Option<Secret>,
    pub queue_driver: QueueDriver,
    pub queue_name: String,
    pub queue_prefix: String,
    /// Current secret first, then the previous one (accepted during rotation).
    pub webhook_secrets: Vec<Secret>,
    pub shopify_api_version: ApiVersion,
    pub arena: String,
    pub release: String,
    /// Default feature flags of the arena (seeded into the database).
    pub flag_defaults: serde_json::Map<String, serde_json::Value>,
    /// `COPILOT_FLAG_COHORTS`: flags that are on for a merchant cohort,
    /// by flag: the cohort's name and its shops' domains.
    pub flag_cohorts: BTreeMap<String, (String, Vec<String>)>,
    /// Upstream feeds checked by `/health/external`.
    pub feeds: Vec<String>,
    /// `COPILOT_SEED_FEEDS`: feeds ingested once at start, before the
    /// service answers (a preview's test data set): `source=location`
    /// pairs, a known source name and a file or http(s) URL.
    pub seed_feeds: Vec<(String, String)>,
    pub max_webhook_bytes: usize,
    /// How clients are bounded (slow headers, slow bodies, connections).
    pub limits: ClientLimits,
    /// Run the queue worker inside the service.
    pub worker: bool,
    /// Fault injection: this fraction of API requests answers 500.
    pub fault_5xx_rate: f64,
    /// The date recommendations are computed for (`COPILOT_NOW` pins it).
    pub clock: Clock,
}

/// Bounds on what a client may hold of the service, so that slow or
/// hostile clients cannot starve `/health` or the webhooks. The defaults
/// suit a Shopify app: Shopify gives a webhook 5 s to be answered, so no
/// honest client takes 10 s to send its headers or its body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientLimits {
    /// `COPILOT_HEADER_TIMEOUT_SECS` (default 10): a connection whose
    /// request headers are not all in by then is closed.
    pub header_timeout: std::time::Duration,
    /// `COPILOT_BODY_TIMEOUT_SECS` (default 10): a request body not all in
    /// by then is answered 408.
    pub body_timeout: std::time::Duration,
    /// `COPILOT_MAX_CONNECTIONS` (default 1024): connections served at
    /// once; more wait to be accepted.
    pub max_connections: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            header_timeout: std::time::Duration::from_secs(10),
            body_timeout: std::time::Duration::from_secs(10),
            max_connections: 1024,
        }
    }
}

/// `source=location,source=location`, each source one the ingestors know.
fn parse_seed_feeds(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (source, location) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}` is not `source=location`"))?;
            let source = source.trim();
            if !copilot_records::ingest::KNOWN_SOURCES
                .iter()
                .any(|k| k.name == source)
            {
                let known: Vec<&str> = copilot_records::ingest::KNOWN_SOURCES
                    .iter()
                    .map(|k| k.name)
                    .collect();
                return Err(format!(
                    "unknown source `{source}` (known: {})",
                    known.join(", ")
                ));
            }
            Ok((source.to_string(), location.trim().to_string()))
        })
        .collect()
}

/// A variable that is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

fn err(var: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        problem: problem.into(),
    }
}

impl ServiceConfig {
    /// Read the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Read the configuration through `get` (tests pass a map).
    ///
    /// `COPILOT_SECRET_ALIASES=NAME=STORED,...` reads `NAME` from the
    /// variable `STORED` when `NAME` itself is unset: a platform that gives
    /// a secret to the process under its own name (Fly's app secrets) can
    /// serve a variable of another name.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let aliases: BTreeMap<String, String> = get("COPILOT_SECRET_ALIASES")
            .unwrap_or_default()
            .split(',')
            .filter_map(|pair| pair.split_once('='))
            .map(|(name, stored)| (name.trim().to_string(), stored.trim().to_string()))
            .collect();
        let get = |k: &str| {
            get(k)
                .or_else(|| aliases.get(k).and_then(|stored| get(stored)))
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };

        let port = match get("PORT") {
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| err("PORT", format!("`{p}` is not a TCP port (1-65535)")))?,
            None => 8080,
        };
        let bind = match get("BIND_ADDRESS") {
            Some(b) => b
                .parse()
                .map_err(|_| err("BIND_ADDRESS", format!("`{b}` is not an IP address")))?,
            None => IpAddr::from([0, 0, 0, 0]),
        };
        let app_url = get("APP_URL");
        if let Some(u) = &app_url
            && !(u.starts_with("http://") || u.starts_with("https://"))
        {
            return Err(err("APP_URL", format!("`{u}` is not an http(s) URL")));
        }
        let database_url =
            get("DATABASE_URL").unwrap_or_else(|| "sqlite://copilot-service.db".into());
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(err(
                "DATABASE_URL",
                "must be sqlite://PATH or postgres://USER@HOST/DB",
            ));
        }
        let queue_driver = match get("WEBHOOK_QUEUE_DRIVER").as_deref() {
            None | Some("memory") => QueueDriver::Memory,
            Some("bullmq") => QueueDriver::Bullmq,
            Some(other) => {
                return Err(err(
                    "WEBHOOK_QUEUE_DRIVER",
                    format!("`{other}` is not `memory` or `bullmq`"),
                ));
            }
        };
        let redis_url = get("REDIS_URL");
        if let Some(r) = &redis_url
            && !(r.starts_with("redis://") || r.starts_with("rediss://"))
        {
            // Do not echo the value: it may carry a password.
            return Err(err("REDIS_URL", "must be a redis:// or rediss:// URL"));
        }
        if queue_driver == QueueDriver::Bullmq && redis_url.is_none() {
            return Err(err(
                "REDIS_URL",
                "is required when WEBHOOK_QUEUE_DRIVER=bullmq",
            ));
        }
        let Some(secret) = get("SHOPIFY_WEBHOOK_SECRET") else {
            return Err(err(
                "SHOPIFY_WEBHOOK_SECRET",
                "is required to verify Shopify webhooks",
            ));
        };
        let mut webhook_secrets = vec![Secret::new(secret)];
        if let Some(prev) = get("SHOPIFY_WEBHOOK_SECRET_PREVIOUS") {
            webhook_secrets.push(Secret::new(prev));
        }
        let Some(version) = get("SHOPIFY_API_VERSION") else {
            return Err(err("SHOPIFY_API_VERSION", "is required, e.g. 2026-10"));
        };
        let shopify_api_version = ApiVersion::parse(&version).ok_or_else(|| {
            err(
                "SHOPIFY_API_VERSION",
                format!("`{version}` is not a Shopify API version (YYYY-01, -04, -07 or -10)"),
            )
        })?;
        let flag_defaults = match get("COPILOT_FLAGS") {
            Some(text) => match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(serde_json::Value::Object(map))
                    if map.values().all(serde_json::Value::is_boolean) =>
                {
                    map
                }
                _ => {
                    return Err(err(
                        "COPILOT_FLAGS",
                        "must be a JSON object of booleans, e.g. {\"reviews\":true}",
                    ));
                }
            },
            None => serde_json::Map::new(),
        };
        let flag_cohorts = match get("COPILOT_FLAG_COHORTS") {
            Some(text) => parse_flag_cohorts(&text).ok_or_else(|| {
                err(
                    "COPILOT_FLAG_COHORTS",
                    "must be a JSON object of {\"cohort\": name, \"shops\": [domains]} by flag",
                )
            })?,
            None => BTreeMap::new(),
        };
        let max_webhook_bytes = match get("WEBHOOK_MAX_BYTES") {
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1024)
                .ok_or_else(|| {
                    err(
                        "WEBHOOK_MAX_BYTES",
                        "must be a number of bytes, at least 1024",
                    )
                })?,
            None => 1024 * 1024,
        };
        let positive = |key: &'static str, default: u64| match get(key) {
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=86_400).contains(n))
                .ok_or_else(|| err(key, "must be a whole number from 1 to 86400")),
            None => Ok(default),
        };
        let defaults = ClientLimits::default();
        let limits = ClientLimits {
            header_timeout: std::time::Duration::from_secs(positive(
                "COPILOT_HEADER_TIMEOUT_SECS",
                defaults.header_timeout.as_secs(),
            )?),
            body_timeout: std::time::Duration::from_secs(positive(
                "COPILOT_BODY_TIMEOUT_SECS",
                defaults.body_timeout.as_secs(),
            )?),
            max_connections: positive("COPILOT_MAX_CONNECTIONS", defaults.max_connections as u64)?
                as usize,
        };
        let worker = match get("COPILOT_WORKER").as_deref() {
            None | Some("on" | "true" | "1") => true,
            Some("off" | "false" | "0") => false,
            Some(_) => return Err(err("COPILOT_WORKER", "must be `on` or `off`")),
        };
        let fault_5xx_rate = match get("COPILOT_FAULT_5XX_RATE") {
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| err("COPILOT_FAULT_5XX_RATE", "must be a ratio from 0 to 1"))?,
            None => 0.0,
        };
        let clock = match get("COPILOT_NOW") {
            Some(text) => Clock::parse(&text).map_err(|e| {
                err(
                    "COPILOT_NOW",
                    format!("`{text}` is not an RFC 3339 instant ({e})"),
                )
            })?,
            None => Clock::System,
        };
        let feeds = get("COPILOT_FEEDS")
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let seed_feeds = match get("COPILOT_SEED_FEEDS") {
            Some(v) => parse_seed_feeds(&v).map_err(|p| err("COPILOT_SEED_FEEDS", p))?,
            None => Vec::new(),
        };
        Ok(ServiceConfig {
            bind,
            port,
            app_url,
            database_url,
            redis_url: redis_url.map(Secret::new),
            queue_driver,
            queue_name: get("WEBHOOK_QUEUE_NAME").unwrap_or_else(|| "webhooks".into()),
            queue_prefix: get("WEBHOOK_QUEUE_PREFIX").unwrap_or_else(|| "bull".into()),
            webhook_secrets,
            shopify_api_version,
            arena: get("COPILOT_ARENA").unwrap_or_else(|| "local".into()),
            release: get("COPILOT_RELEASE").unwrap_or_else(|| env!("CARGO_PKG_VERSION").into()),
            flag_defaults,
            flag_cohorts,
            feeds,
            seed_feeds,
            max_webhook_bytes,
            limits,
            worker,
            fault_5xx_rate,
            clock,
        })
    }
}

/// A clock a component is given rather than one it reads from the process:
/// the system's, or one pinned to an instant (`COPILOT_NOW`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Clock {
    #[default]
    System,
    Pinned(DateTime<Utc>),
}

impl Clock {
    /// A clock pinned to an RFC 3339 instant.
    pub fn parse(text: &str) -> Result<Clock, chrono::ParseError> {
        Ok(Clock::Pinned(
            DateTime::parse_from_rfc3339(text.trim())?.with_timezone(&Utc),
        ))
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Pinned(at) => *at,
        }
    }
}

/// `{"aiRecommendations": {"cohort": "pilot", "shops": ["a.myshopify.com"]}}`.
fn parse_flag_cohorts(text: &str) -> Option<BTreeMap<String, (String, Vec<String>)>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Rule {
        cohort: String,
        shops: Vec<String>,
    }
    let rules: BTreeMap<String, Rule> = serde_json::from_str(text).ok()?;
    Some(
        rules
            .into_iter()
            .map(|(flag, r)| {
                let shops = r.shops.iter().map(|s| s.to_ascii_lowercase()).collect();
                (flag, (r.cohort, shops))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(pairs: &[(&str, &str)]) -> Result<ServiceConfig, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ServiceConfig::from_lookup(|k| map.get(k).cloned())
    }

    const BASE: &[(&str, &str)] = &[
        ("SHOPIFY_WEBHOOK_SECRET", "s3cr3t"),
        ("SHOPIFY_API_VERSION", "2026-10"),
    ];

    #[test]
    fn minimal_configuration() {
        let c = cfg(BASE).unwrap();
        assert_eq!(c.port, 8080);
        assert_eq!(c.queue_driver, QueueDriver::Memory);
        assert_eq!(c.shopify_api_version.to_string(), "2026-10");
        assert!(
            !format!("{c:?}").contains("s3cr3t"),
            "secret in Debug output"
        );
    }

    #[test]
    fn each_problem_names_its_variable() {
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v = BASE.to_vec();
            v.extend_from_slice(extra);
            cfg(&v).unwrap_err().var
        };
        assert_eq!(
            cfg(&[("SHOPIFY_API_VERSION", "2026-10")]).unwrap_err().var,
            "SHOPIFY_WEBHOOK_SECRET"
        );
        assert_eq!(
            cfg(&[("SHOPIFY_WEBHOOK_SECRET", "x")]).unwrap_err().var,
            "SHOPIFY_API_VERSION"
        );
        assert_eq!(
            with(&[("SHOPIFY_API_VERSION", "2026-11")]),
            "SHOPIFY_API_VERSION"
        );
        assert_eq!(with(&[("PORT", "http")]), "PORT");
        assert_eq!(
            with(&[("WEBHOOK_QUEUE_DRIVER", "kafka")]),
            "WEBHOOK_QUEUE_DRIVER"
        );
        assert_eq!(with(&[("WEBHOOK_QUEUE_DRIVER", "bullmq")]), "REDIS_URL");
        assert_eq!(with(&[("REDIS_URL", "http://x")]), "REDIS_URL");
        assert_eq!(with(&[("DATABASE_URL", "mysql://x")]), "DATABASE_URL");
        assert_eq!(with(&[("APP_URL", "ftp://x")]), "APP_URL");
        assert_eq!(with(&[("COPILOT_FLAGS", "{\"a\": 1}")]), "COPILOT_FLAGS");
        assert_eq!(with(&[("COPILOT_NOW", "tomorrow")]), "COPILOT_NOW");
    }

    #[test]
    fn copilot_now_pins_the_date_of_the_answers() {
        assert_eq!(cfg(BASE).unwrap().clock, Clock::System);
        let mut v = BASE.to_vec();
        v.push(("COPILOT_NOW", "2026-11-27T11:00:00+01:00"));
        let at = cfg(&v).unwrap().clock.now();
        assert_eq!(at.to_rfc3339(), "2026-11-27T10:00:00+00:00");
    }

    #[test]
    fn an_alias_reads_a_secret_stored_under_another_name() {
        let mut v: Vec<(&str, &str)> = BASE
            .iter()
            .copied()
            .filter(|(k, _)| *k != "SHOPIFY_WEBHOOK_SECRET")
            .collect();
        v.push((
            "COPILOT_SECRET_ALIASES",
            "SHOPIFY_WEBHOOK_SECRET=DEV_HOOK_SECRET",
        ));
        v.push(("DEV_HOOK_SECRET", "aliased-secret"));
        let c = cfg(&v).unwrap();
        assert_eq!(c.webhook_secrets.len(), 1);
        assert_eq!(c.webhook_secrets[0].expose(), "aliased-secret");
    }

    #[test]
    fn redis_password_is_not_echoed() {
        let mut v = BASE.to_vec();
        v.push(("REDIS_URL", "http://user:hunter2@cache"));
        assert!(!cfg(&v).unwrap_err().to_string().contains("hunter2"));
    }

    #[test]
    fn api_versions() {
        let v = ApiVersion::parse("2025-10").unwrap();
        assert_eq!(
            v.supported_until(),
            NaiveDate::from_ymd_opt(2026, 10, 1).unwrap()
        );
        assert!(ApiVersion::parse("2025-11").is_none());
        assert!(ApiVersion::parse("25-10").is_none());
    }
}
