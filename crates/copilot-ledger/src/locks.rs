//! Arena locks.
//!
//! A lock is one row per arena. Three kinds share it:
//! - `lease`: held by a running command for a whole promotion; it expires
//!   unless renewed, so a crashed holder cannot block the arena for ever, and
//!   it is taken over only after it has expired;
//! - `manual`: taken by a person with `copilot lock`, held until `unlock`;
//! - `pin`: set by a rollback, held until `unlock`.
//!
//! Acquisition is a single conditional upsert, so of many racing processes
//! exactly one wins on either backend.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Ledger, LedgerError, Result, new_id, on_pool};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LockKind {
    Lease,
    Manual,
    Pin,
}

impl LockKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LockKind::Lease => "lease",
            LockKind::Manual => "manual",
            LockKind::Pin => "pin",
        }
    }

    fn parse(s: &str) -> LockKind {
        match s {
            "lease" => LockKind::Lease,
            "pin" => LockKind::Pin,
            _ => LockKind::Manual,
        }
    }
}

impl fmt::Display for LockKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LockKind::Lease => "promotion",
            LockKind::Manual => "manual lock",
            LockKind::Pin => "rollback pin",
        })
    }
}

/// A lock as stored.
#[derive(Clone, Debug, Serialize)]
pub struct Lock {
    pub arena: String,
    pub kind: LockKind,
    #[serde(skip)]
    pub token: String,
    pub owner: String,
    pub host: String,
    pub pid: i64,
    pub reason: String,
    pub acquired_at: DateTime<Utc>,
    pub renewed_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

impl Lock {
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }
}

pub(super) fn describe_held(lock: &Lock) -> String {
    let since = lock.acquired_at.format("%Y-%m-%d %H:%M:%SZ");
    match lock.kind {
        LockKind::Lease => format!(
            "arena `{}` is locked by {} on {} (pid {}, {} since {since}): {}",
            lock.arena, lock.owner, lock.host, lock.pid, lock.kind, lock.reason
        ),
        LockKind::Manual | LockKind::Pin => format!(
            "arena `{}` is locked by {} ({} since {since}): {}",
            lock.arena, lock.owner, lock.kind, lock.reason
        ),
    }
}

#[derive(sqlx::FromRow)]
struct LockRow {
    arena: String,
    kind: String,
    token: String,
    owner: String,
    host: String,
    pid: i64,
    reason: String,
    acquired_at: DateTime<Utc>,
    renewed_at: DateTime<Utc>,
    expires_at_ms: Option<i64>,
}

impl From<LockRow> for Lock {
    fn from(r: LockRow) -> Self {
        Lock {
            arena: r.arena,
            kind: LockKind::parse(&r.kind),
            token: r.token,
            owner: r.owner,
            host: r.host,
            pid: r.pid,
            reason: r.reason,
            acquired_at: r.acquired_at,
            renewed_at: r.renewed_at,
            expires_at: r.expires_at_ms.and_then(DateTime::from_timestamp_millis),
        }
    }
}

/// What a caller asks for when taking a lock.
#[derive(Clone, Debug)]
pub struct LockRequest {
    pub arena: String,
    pub kind: LockKind,
    pub owner: String,
    pub host: String,
    pub pid: i64,
    pub reason: String,
    /// `None` holds until unlocked.
    pub ttl: Option<Duration>,
}

impl LockRequest {
    /// A request on behalf of this process.
    pub fn here(
        arena: &str,
        kind: LockKind,
        owner: &str,
        reason: &str,
        ttl: Option<Duration>,
    ) -> Self {
        LockRequest {
            arena: arena.to_string(),
            kind,
            owner: owner.to_string(),
            host: gethostname::gethostname().to_string_lossy().into_owned(),
            pid: i64::from(std::process::id()),
            reason: reason.to_string(),
            ttl,
        }
    }
}

fn expiry_ms(now: DateTime<Utc>, ttl: Option<Duration>) -> Option<i64> {
    ttl.map(|t| now.timestamp_millis() + i64::try_from(t.as_millis()).unwrap_or(i64::MAX / 2))
}

const LOCK_COLUMNS: &str =
    "arena, kind, token, owner, host, pid, reason, acquired_at, renewed_at, expires_at_ms";

impl Ledger {
    /// Take the lock on an arena, or report who holds it.
    ///
    /// An existing lock is replaced only when it has an expiry that has passed.
    pub async fn acquire_lock(&self, req: &LockRequest, now: DateTime<Utc>) -> Result<Lock> {
        let token = new_id("lck");
        let sql = format!(
            "INSERT INTO locks ({LOCK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9) \
             ON CONFLICT (arena) DO UPDATE SET kind = excluded.kind, token = excluded.token, owner = excluded.owner, \
             host = excluded.host, pid = excluded.pid, reason = excluded.reason, acquired_at = excluded.acquired_at, \
             renewed_at = excluded.renewed_at, expires_at_ms = excluded.expires_at_ms \
             WHERE locks.expires_at_ms IS NOT NULL AND locks.expires_at_ms <= $10"
        );
        let now_ms = now.timestamp_millis();
        let taken = on_pool!(&self.pool, pool => sqlx::query(&sql)
            .bind(&req.arena)
            .bind(req.kind.as_str())
            .bind(&token)
            .bind(&req.owner)
            .bind(&req.host)
            .bind(req.pid)
            .bind(&req.reason)
            .bind(now)
            .bind(expiry_ms(now, req.ttl))
            .bind(now_ms)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        let current = self.lock_row(&req.arena).await?;
        match current {
            Some(lock) if taken == 1 && lock.token == token => Ok(lock),
            Some(lock) => Err(LedgerError::LockHeld(Box::new(lock))),
            None => Err(LedgerError::NotLocked(req.arena.clone())),
        }
    }

    async fn lock_row(&self, arena: &str) -> Result<Option<Lock>> {
        let sql = format!("SELECT {LOCK_COLUMNS} FROM locks WHERE arena = $1");
        let row = on_pool!(&self.pool, pool => sqlx::query_as::<_, LockRow>(&sql).bind(arena).fetch_optional(pool).await)?;
        Ok(row.map(Lock::from))
    }

    /// The lock in force on an arena (an expired lease counts as none).
    pub async fn current_lock(&self, arena: &str, now: DateTime<Utc>) -> Result<Option<Lock>> {
        Ok(self.lock_row(arena).await?.filter(|l| !l.is_expired(now)))
    }

    /// Every lock in force.
    pub async fn locks(&self, now: DateTime<Utc>) -> Result<Vec<Lock>> {
        let sql = format!("SELECT {LOCK_COLUMNS} FROM locks ORDER BY arena");
        let rows =
            on_pool!(&self.pool, pool => sqlx::query_as::<_, LockRow>(&sql).fetch_all(pool).await)?;
        Ok(rows
            .into_iter()
            .map(Lock::from)
            .filter(|l| !l.is_expired(now))
            .collect())
    }

    /// Extend a lease; `false` when it is no longer ours.
    pub async fn renew_lock(
        &self,
        arena: &str,
        token: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let sql = "UPDATE locks SET renewed_at = $1, expires_at_ms = $2 WHERE arena = $3 AND token = $4 AND expires_at_ms IS NOT NULL";
        let n = on_pool!(&self.pool, pool => sqlx::query(sql)
            .bind(now)
            .bind(expiry_ms(now, Some(ttl)))
            .bind(arena)
            .bind(token)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Release a lock we hold; `false` when it was no longer ours.
    pub async fn release_lock(&self, arena: &str, token: &str) -> Result<bool> {
        let n = on_pool!(&self.pool, pool => sqlx::query("DELETE FROM locks WHERE arena = $1 AND token = $2")
            .bind(arena)
            .bind(token)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Remove whatever lock an arena has (`copilot unlock`).
    ///
    /// A live lease belongs to a running command: it is removed only with `force`.
    pub async fn unlock(&self, arena: &str, force: bool, now: DateTime<Utc>) -> Result<Lock> {
        let Some(lock) = self.lock_row(arena).await? else {
            return Err(LedgerError::NotLocked(arena.to_string()));
        };
        if lock.kind == LockKind::Lease && !lock.is_expired(now) && !force {
            return Err(LedgerError::LockInUse {
                arena: arena.to_string(),
                kind: lock.kind,
                owner: lock.owner.clone(),
            });
        }
        if !self.release_lock(arena, &lock.token).await? {
            // Someone replaced it between our read and delete: report theirs.
            return match self.lock_row(arena).await? {
                Some(l) => Err(LedgerError::LockHeld(Box::new(l))),
                None => Err(LedgerError::NotLocked(arena.to_string())),
            };
        }
        Ok(lock)
    }

    /// Take a lease and keep renewing it in the background until dropped.
    pub async fn hold_lease(&self, req: &LockRequest, now: DateTime<Utc>) -> Result<Lease> {
        let ttl = req.ttl.unwrap_or(Duration::from_secs(60));
        let req = LockRequest {
            kind: LockKind::Lease,
            ttl: Some(ttl),
            ..req.clone()
        };
        let lock = self.acquire_lock(&req, now).await?;
        let (lost_tx, lost_rx) = watch::channel(false);
        let ledger = self.clone();
        let (arena, token) = (lock.arena.clone(), lock.token.clone());
        let renewer = tokio::spawn(async move {
            let every = ttl / 3;
            loop {
                tokio::time::sleep(every).await;
                match ledger.renew_lock(&arena, &token, ttl, Utc::now()).await {
                    Ok(true) => {}
                    Ok(false) => {
                        let _ = lost_tx.send(true);
                        break;
                    }
                    Err(e) => tracing::warn!("could not renew the lock on {arena}: {e}"),
                }
            }
        });
        Ok(Lease {
            ledger: self.clone(),
            lock,
            lost: lost_rx,
            renewer: Some(renewer),
        })
    }
}

/// A lease held by this process, renewed in the background.
pub struct Lease {
    ledger: Ledger,
    lock: Lock,
    lost: watch::Receiver<bool>,
    renewer: Option<JoinHandle<()>>,
}

impl Lease {
    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    /// Whether another process took the lock over (after a failed renewal).
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Leave the arena pinned (`copilot unlock` lifts it) when this lease
    /// ends: the lease becomes the pin in one write, so no other command
    /// can take the arena in between. Releasing the lease afterwards leaves
    /// the pin alone.
    pub async fn pin(&self, reason: &str, now: DateTime<Utc>) -> Result<Lock> {
        let token = new_id("lck");
        let sql = "UPDATE locks SET kind = $1, token = $2, reason = $3, acquired_at = $4, renewed_at = $4, \
                   expires_at_ms = NULL WHERE arena = $5 AND token = $6";
        let n = on_pool!(&self.ledger.pool, pool => sqlx::query(sql)
            .bind(LockKind::Pin.as_str())
            .bind(&token)
            .bind(reason)
            .bind(now)
            .bind(&self.lock.arena)
            .bind(&self.lock.token)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        match self.ledger.lock_row(&self.lock.arena).await? {
            Some(lock) if n == 1 && lock.token == token => Ok(lock),
            Some(lock) => Err(LedgerError::LockHeld(Box::new(lock))),
            None => Err(LedgerError::NotLocked(self.lock.arena.clone())),
        }
    }

    /// Stop renewing and delete the lock.
    pub async fn release(mut self) -> Result<bool> {
        if let Some(h) = self.renewer.take() {
            h.abort();
        }
        self.ledger
            .release_lock(&self.lock.arena, &self.lock.token)
            .await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(h) = self.renewer.take() {
            h.abort();
        }
    }
}
