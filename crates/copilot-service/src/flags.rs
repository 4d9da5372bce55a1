//! Feature flags per arena, stored in the database and read through a cache
//! with a five-minute TTL. A flag whose lookup fails reads as false.
//!
//! A flag may also be on for a merchant cohort of the arena
//! (`COPILOT_FLAG_COHORTS`): asked for a shop (`/api/flags?shop=`), it is on
//! when the shop is in the cohort, and otherwise what the database says.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::RwLock;

use copilot_db::{Pool, on_pool};

pub const TTL: Duration = Duration::from_secs(300);

/// When the cache was filled, and what with.
type Cached = Option<(Instant, BTreeMap<String, bool>)>;

#[derive(Clone)]
pub struct Flags {
    pool: Pool,
    arena: String,
    cache: Arc<RwLock<Cached>>,
    ttl: Duration,
    /// Flag -> (cohort, its shops).
    cohorts: Arc<BTreeMap<String, (String, Vec<String>)>>,
}

/// Flags as served, and where they came from.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FlagSnapshot {
    pub arena: String,
    pub flags: BTreeMap<String, bool>,
    /// `database`, `cache`, or `fallback` (lookup failed: everything off).
    pub source: &'static str,
    /// The shop the flags were evaluated for, and the cohorts it is in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shop: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cohorts: Vec<String>,
}

impl Flags {
    pub fn new(pool: Pool, arena: &str, ttl: Duration) -> Self {
        Flags {
            pool,
            arena: arena.to_string(),
            cache: Arc::new(RwLock::new(None)),
            ttl,
            cohorts: Arc::default(),
        }
    }

    /// Flags on for a cohort: flag -> (cohort, shops).
    pub fn with_cohorts(mut self, cohorts: BTreeMap<String, (String, Vec<String>)>) -> Self {
        self.cohorts = Arc::new(cohorts);
        self
    }

    /// The flags as `shop` sees them: a flag on for a cohort the shop is
    /// in is on.
    pub async fn for_shop(&self, shop: &str) -> FlagSnapshot {
        let shop = shop.trim().to_ascii_lowercase();
        let mut snap = self.snapshot().await;
        let mut cohorts = Vec::new();
        for (flag, (cohort, shops)) in self.cohorts.iter() {
            if shops.contains(&shop) {
                snap.flags.insert(flag.clone(), true);
                if !cohorts.contains(cohort) {
                    cohorts.push(cohort.clone());
                }
            }
        }
        snap.shop = Some(shop);
        snap.cohorts = cohorts;
        snap
    }

    /// Insert defaults for flags the database does not have yet.
    pub async fn seed(
        &self,
        defaults: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), sqlx::Error> {
        let now = chrono::Utc::now();
        for (name, v) in defaults {
            let enabled = v.as_bool().unwrap_or(false);
            on_pool!(&self.pool, p => sqlx::query(
                "INSERT INTO feature_flags (arena, name, enabled, updated_at) VALUES ($1, $2, $3, $4) ON CONFLICT (arena, name) DO NOTHING"
            ).bind(&self.arena).bind(name).bind(enabled).bind(now).execute(p).await.map(drop))?;
        }
        Ok(())
    }

    /// Set a flag (admin and tests); the cache is dropped.
    pub async fn set(&self, name: &str, enabled: bool) -> Result<(), sqlx::Error> {
        on_pool!(&self.pool, p => sqlx::query(
            "INSERT INTO feature_flags (arena, name, enabled, updated_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (arena, name) DO UPDATE SET enabled = excluded.enabled, updated_at = excluded.updated_at"
        ).bind(&self.arena).bind(name).bind(enabled).bind(chrono::Utc::now()).execute(p).await.map(drop))?;
        *self.cache.write().await = None;
        Ok(())
    }

    async fn load(&self) -> Result<BTreeMap<String, bool>, sqlx::Error> {
        let rows: Vec<(String, bool)> = on_pool!(&self.pool, p => sqlx::query_as(
            "SELECT name, enabled FROM feature_flags WHERE arena = $1"
        ).bind(&self.arena).fetch_all(p).await)?;
        Ok(rows.into_iter().collect())
    }

    /// Every flag of the arena.
    pub async fn snapshot(&self) -> FlagSnapshot {
        if let Some((at, flags)) = self.cache.read().await.as_ref()
            && at.elapsed() < self.ttl
        {
            return FlagSnapshot {
                arena: self.arena.clone(),
                flags: flags.clone(),
                source: "cache",
                shop: None,
                cohorts: Vec::new(),
            };
        }
        match self.load().await {
            Ok(flags) => {
                *self.cache.write().await = Some((Instant::now(), flags.clone()));
                FlagSnapshot {
                    arena: self.arena.clone(),
                    flags,
                    source: "database",
                    shop: None,
                    cohorts: Vec::new(),
                }
            }
            Err(e) => {
                tracing::warn!("feature flag lookup failed, serving all flags off: {e}");
                FlagSnapshot {
                    arena: self.arena.clone(),
                    flags: BTreeMap::new(),
                    source: "fallback",
                    shop: None,
                    cohorts: Vec::new(),
                }
            }
        }
    }

    /// One flag; false when unknown or when the lookup fails.
    pub async fn enabled(&self, name: &str) -> bool {
        self.snapshot()
            .await
            .flags
            .get(name)
            .copied()
            .unwrap_or(false)
    }
}
