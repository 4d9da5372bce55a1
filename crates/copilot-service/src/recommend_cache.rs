//! The answers of `GET /api/recommendations`, computed once per change.
//!
//! An answer depends on the update records, the shop's settings and the
//! time. The database keeps one revision for the first two (bumped by
//! triggers on `update_records` and `shops`, whoever writes them: this
//! instance, another one, an ingestor or a person), so an instance keeps
//! each shop's serialised answer until the revision moves, the UTC date
//! changes, or [`MAX_AGE`] passes (time-based rules, like a core update
//! ended a week ago, stay at most that late). The revision is read at most
//! once per [`REVALIDATE`], so a change made elsewhere shows within that.
//! Each answer carries a strong `ETag` (a hash of its bytes) for
//! `If-None-Match`.
//!
//! What depends on the records alone is computed once per revision and
//! shared by every shop ([`Prepared`]): a shop seen for the first time costs
//! a look-up of its settings and a filter, not a pass over the records.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use chrono::{DateTime, NaiveDate, Utc};
use sha2::{Digest, Sha256};

use crate::recommend::Prepared;
use copilot_db::{Pool, on_pool};

/// How long an instance trusts the revision it last read.
pub const REVALIDATE: Duration = Duration::from_millis(250);
/// How long an answer is served however little changed.
pub const MAX_AGE: Duration = Duration::from_secs(60);
/// Shops kept; past this, expired answers go, then all of them. An answer
/// is a few kilobytes, so a full cache holds tens of megabytes.
const CAPACITY: usize = 20_000;

/// What a computed value is good for: the revision and the UTC date it was
/// computed at, and the instant, from which it ages.
#[derive(Clone, Copy, Debug)]
pub struct Stamp {
    revision: i64,
    date: NaiveDate,
    computed: Instant,
}

impl Stamp {
    pub fn new(revision: i64, now: DateTime<Utc>) -> Stamp {
        Stamp {
            revision,
            date: now.date_naive(),
            computed: Instant::now(),
        }
    }

    fn fresh(&self, revision: i64, now: DateTime<Utc>) -> bool {
        self.revision == revision
            && self.date == now.date_naive()
            && self.computed.elapsed() < MAX_AGE
    }
}

/// One shop's answer, ready to send.
#[derive(Debug)]
pub struct Answer {
    pub body: Bytes,
    pub etag: String,
    stamp: Stamp,
}

impl Answer {
    pub fn new(body: Vec<u8>, revision: i64, now: DateTime<Utc>) -> Answer {
        Answer::stamped(body, Stamp::new(revision, now))
    }

    /// An answer good for as long as `stamp` (that of the prepared rules it
    /// came from, so it ages from when they were computed).
    pub fn stamped(body: Vec<u8>, stamp: Stamp) -> Answer {
        let digest = Sha256::digest(&body);
        let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
        Answer {
            body: Bytes::from(body),
            etag: format!("\"{hex}\""),
            stamp,
        }
    }

    fn fresh(&self, revision: i64, now: DateTime<Utc>) -> bool {
        self.stamp.fresh(revision, now)
    }

    /// Whether an `If-None-Match` header names this answer.
    pub fn matches(&self, if_none_match: &str) -> bool {
        if_none_match.trim() == "*"
            || if_none_match
                .split(',')
                .map(|t| t.trim().trim_start_matches("W/"))
                .any(|t| t == self.etag)
    }
}

/// The per-instance cache.
#[derive(Debug, Default)]
pub struct RecommendationCache {
    /// Held by the one request that reads the revision again.
    refresh: tokio::sync::Mutex<()>,
    /// The revision last read, and when.
    current: RwLock<(i64, Option<Instant>)>,
    answers: RwLock<HashMap<String, Arc<Answer>>>,
    /// Held by the one request that prepares the record rules again.
    prepare: tokio::sync::Mutex<()>,
    /// The record rules of the revision last read, shared by every shop.
    prepared: RwLock<Option<PreparedAt>>,
}

/// Rules prepared at a revision, on a date, at an instant.
#[derive(Clone, Debug)]
pub struct PreparedAt {
    pub prepared: Arc<Prepared>,
    pub stamp: Stamp,
}

impl RecommendationCache {
    /// The revision of what answers are computed from, read again from the
    /// database when the one held is older than [`REVALIDATE`].
    pub async fn revision(&self, pool: &Pool) -> Result<i64, sqlx::Error> {
        if let Some(value) = self.recent() {
            return Ok(value);
        }
        // One request reads it; the others arriving meanwhile wait for that.
        let _refresh = self.refresh.lock().await;
        if let Some(value) = self.recent() {
            return Ok(value);
        }
        let (value,): (i64,) = on_pool!(pool, p => sqlx::query_as(
            "SELECT revision FROM revisions WHERE name = 'recommendations'"
        ).fetch_one(p).await)?;
        if let Ok(mut cur) = self.current.write() {
            *cur = (value, Some(Instant::now()));
        }
        Ok(value)
    }

    /// The revision held, if it was read less than [`REVALIDATE`] ago.
    fn recent(&self) -> Option<i64> {
        match *self.current.read().ok()? {
            (value, Some(read)) if read.elapsed() < REVALIDATE => Some(value),
            _ => None,
        }
    }

    /// The record rules at `revision`, prepared once for every shop while
    /// they are good (the same revision, day and [`MAX_AGE`] as answers).
    pub async fn prepared(
        &self,
        pool: &Pool,
        revision: i64,
        now: DateTime<Utc>,
    ) -> Result<PreparedAt, sqlx::Error> {
        if let Some(p) = self.fresh_prepared(revision, now) {
            return Ok(p);
        }
        // One request prepares them; the others arriving meanwhile wait.
        let _prepare = self.prepare.lock().await;
        if let Some(p) = self.fresh_prepared(revision, now) {
            return Ok(p);
        }
        let p = PreparedAt {
            prepared: Arc::new(Prepared::load(pool, now).await?),
            stamp: Stamp::new(revision, now),
        };
        if let Ok(mut slot) = self.prepared.write() {
            *slot = Some(p.clone());
        }
        Ok(p)
    }

    fn fresh_prepared(&self, revision: i64, now: DateTime<Utc>) -> Option<PreparedAt> {
        self.prepared
            .read()
            .ok()?
            .as_ref()
            .filter(|p| p.stamp.fresh(revision, now))
            .cloned()
    }

    /// The shop's answer, if it is still good at `revision` and `now`.
    pub fn get(&self, shop: &str, revision: i64, now: DateTime<Utc>) -> Option<Arc<Answer>> {
        let answers = self.answers.read().ok()?;
        answers
            .get(shop)
            .filter(|a| a.fresh(revision, now))
            .cloned()
    }

    pub fn put(&self, shop: String, answer: Arc<Answer>, now: DateTime<Utc>) {
        let Ok(mut answers) = self.answers.write() else {
            return;
        };
        if answers.len() >= CAPACITY && !answers.contains_key(&shop) {
            let revision = answer.stamp.revision;
            answers.retain(|_, a| a.fresh(revision, now));
            if answers.len() >= CAPACITY {
                answers.clear();
            }
        }
        answers.insert(shop, answer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etag_matching_follows_rfc_9110() {
        let now = Utc::now();
        let a = Answer::new(b"{}".to_vec(), 1, now);
        assert!(a.etag.starts_with('"') && a.etag.ends_with('"'));
        assert!(a.matches(&a.etag));
        assert!(a.matches(&format!("\"other\", {}", a.etag)));
        assert!(a.matches(&format!("W/{}", a.etag)), "weak comparison");
        assert!(a.matches("*"));
        assert!(!a.matches("\"other\""));
        assert_eq!(a.etag, Answer::new(b"{}".to_vec(), 2, now).etag);
        assert_ne!(a.etag, Answer::new(b"[]".to_vec(), 1, now).etag);
    }

    #[test]
    fn answers_go_stale_with_the_revision_and_the_date() {
        let now = Utc::now();
        let cache = RecommendationCache::default();
        cache.put(
            "a".into(),
            Arc::new(Answer::new(b"{}".to_vec(), 7, now)),
            now,
        );
        assert!(cache.get("a", 7, now).is_some());
        assert!(cache.get("a", 8, now).is_none(), "a newer revision");
        assert!(
            cache.get("a", 7, now + chrono::Duration::days(1)).is_none(),
            "another day"
        );
        assert!(cache.get("b", 7, now).is_none());
    }
}
