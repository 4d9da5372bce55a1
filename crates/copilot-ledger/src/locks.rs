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
//!
//! A lease is a fence: while it is held, every write through the ledger
//! handle first proves, in the write's own transaction, that the lease row
//! still carries the holder's token and has not expired ([`FENCE_SQL`]).
//! The token is new for every holder, and the check and the write commit
//! together in the same database that hands the lease over, so a holder
//! that lost the arena (stalled past its expiry, then taken over) cannot
//! record anything, however late it wakes. A lease is also a channel the
//! other way: `copilot abort` leaves a [`Cancel`] on it, which the holder
//! reads within half a second.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Fence, Ledger, LedgerError, Result, new_id, on_pool};

/// The fence a write passes first: the lease is still the holder's and
/// unexpired (by the real clock). Touching the row also locks it until the
/// write commits, so a takeover waits for the write or the write fails.
pub(crate) const FENCE_SQL: &str = "UPDATE locks SET renewed_at = renewed_at \
     WHERE arena = $1 AND token = $2 AND expires_at_ms IS NOT NULL AND expires_at_ms > $3";

/// What a cancelled rollout does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CancelAction {
    /// Traffic back to the previous release, the new one stopped.
    Rollback,
    /// Stop where it stands, traffic left where it is, resumable.
    Pause,
}

/// A request, left on a lease, that its holder stop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cancel {
    pub action: CancelAction,
    /// Who asked.
    pub by: String,
    pub reason: Option<String>,
}

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
    /// A request that the holder stop, if one was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel: Option<Cancel>,
}

impl Lock {
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|e| e <= now)
    }
}

pub(super) fn describe_lost(arena: &str, holder: Option<&Lock>) -> String {
    match holder {
        Some(l) if l.kind != LockKind::Lease || l.expires_at.is_none_or(|e| e > Utc::now()) => {
            format!(
                "this process lost its lease on `{arena}` and stopped without acting: {}",
                describe_held(l)
            )
        }
        _ => format!(
            "this process's lease on `{arena}` expired before it could renew it (stalled, or the ledger was unreachable); it stopped without acting"
        ),
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
    cancel: Option<String>,
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
            cancel: r.cancel.and_then(|c| serde_json::from_str(&c).ok()),
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
            host: this_host(),
            pid: i64::from(std::process::id()),
            reason: reason.to_string(),
            ttl,
        }
    }
}

/// This machine's name, as locks record their holder's host.
pub fn this_host() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

fn expiry_ms(now: DateTime<Utc>, ttl: Option<Duration>) -> Option<i64> {
    ttl.map(|t| now.timestamp_millis() + i64::try_from(t.as_millis()).unwrap_or(i64::MAX / 2))
}

const LOCK_COLUMNS: &str =
    "arena, kind, token, owner, host, pid, reason, acquired_at, renewed_at, expires_at_ms, cancel";

impl Ledger {
    /// Take the lock on an arena, or report who holds it.
    ///
    /// An existing lock is replaced only when it has an expiry that has passed.
    pub async fn acquire_lock(&self, req: &LockRequest, now: DateTime<Utc>) -> Result<Lock> {
        let token = new_id("lck");
        let sql = format!(
            "INSERT INTO locks ({LOCK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9, NULL) \
             ON CONFLICT (arena) DO UPDATE SET kind = excluded.kind, token = excluded.token, owner = excluded.owner, \
             host = excluded.host, pid = excluded.pid, reason = excluded.reason, acquired_at = excluded.acquired_at, \
             renewed_at = excluded.renewed_at, expires_at_ms = excluded.expires_at_ms, cancel = NULL \
             WHERE locks.expires_at_ms IS NOT NULL AND locks.expires_at_ms <= $10"
        );
        let now_ms = now.timestamp_millis();
        self.ride_out(async || {
            Ok(on_pool!(&self.pool, pool => sqlx::query(&sql)
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
            .map(|r| r.rows_affected()))?)
        })
        .await?;
        // The token is new: finding it proves this call took the lock (also
        // when the first answer was lost and the upsert was asked again).
        let current = self.lock_row(&req.arena).await?;
        match current {
            Some(lock) if lock.token == token => Ok(lock),
            Some(lock) => Err(LedgerError::LockHeld(Box::new(lock))),
            None => Err(LedgerError::NotLocked(req.arena.clone())),
        }
    }

    pub(super) async fn lock_row(&self, arena: &str) -> Result<Option<Lock>> {
        self.ride_out(async || self.lock_row_once(arena).await)
            .await
    }

    /// The lock row, asked once (the lease's watcher has its own rhythm).
    async fn lock_row_once(&self, arena: &str) -> Result<Option<Lock>> {
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
            super::read!(self, pool => sqlx::query_as::<_, LockRow>(&sql).fetch_all(pool).await)?;
        Ok(rows
            .into_iter()
            .map(Lock::from)
            .filter(|l| !l.is_expired(now))
            .collect())
    }

    /// Extend a lease; `false` when it is no longer ours, or expired (an
    /// expired lease is lost even before anyone takes it over).
    pub async fn renew_lock(
        &self,
        arena: &str,
        token: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let sql = "UPDATE locks SET renewed_at = $1, expires_at_ms = $2 WHERE arena = $3 AND token = $4 \
                   AND expires_at_ms IS NOT NULL AND expires_at_ms > $5";
        let n = on_pool!(&self.pool, pool => sqlx::query(sql)
            .bind(now)
            .bind(expiry_ms(now, Some(ttl)))
            .bind(arena)
            .bind(token)
            .bind(now.timestamp_millis())
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Release a lock we hold; `false` when it was no longer ours.
    pub async fn release_lock(&self, arena: &str, token: &str) -> Result<bool> {
        let n = super::read!(self, pool => sqlx::query("DELETE FROM locks WHERE arena = $1 AND token = $2")
            .bind(arena)
            .bind(token)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        Ok(n == 1)
    }

    /// Ask the holder of `arena`'s live lease to stop (`copilot abort` while
    /// a rollout runs): the request is left on the lease, where the holder
    /// reads it. Returns the lease asked; a lock that is not a live lease is
    /// reported as it is.
    pub async fn request_cancel(
        &self,
        arena: &str,
        cancel: &Cancel,
        now: DateTime<Utc>,
    ) -> Result<Lock> {
        let text = serde_json::to_string(cancel).expect("a cancel request serializes");
        let sql = "UPDATE locks SET cancel = $1 WHERE arena = $2 AND kind = 'lease' AND expires_at_ms > $3";
        let n = super::read!(self, pool => sqlx::query(sql)
            .bind(&text)
            .bind(arena)
            .bind(now.timestamp_millis())
            .execute(pool)
            .await
            .map(|r| r.rows_affected()))?;
        match self.lock_row(arena).await? {
            Some(lock) if n == 1 => Ok(lock),
            Some(lock) => Err(LedgerError::LockHeld(Box::new(lock))),
            None => Err(LedgerError::NotLocked(arena.to_string())),
        }
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

    /// Take a lease and keep it in the background until dropped: renewed
    /// every sixth of its TTL, watched every half second for a takeover or
    /// a cancel request. Writes through this ledger are fenced by it.
    pub async fn hold_lease(&self, req: &LockRequest, now: DateTime<Utc>) -> Result<Lease> {
        let ttl = req.ttl.unwrap_or(Duration::from_secs(60));
        let req = LockRequest {
            kind: LockKind::Lease,
            ttl: Some(ttl),
            ..req.clone()
        };
        let asked = Instant::now();
        let lock = self.acquire_lock(&req, now).await?;
        let fence = Fence {
            arena: lock.arena.clone(),
            token: lock.token.clone(),
        };
        self.add_fence(fence.clone());
        let (standing_tx, standing) = watch::channel(Standing::Held { confirmed: asked });
        let (cancel_tx, cancel) = watch::channel(None);
        let watcher = tokio::spawn(watch_lease(
            self.clone(),
            fence.clone(),
            ttl,
            asked,
            standing_tx,
            cancel_tx,
        ));
        Ok(Lease {
            ledger: self.clone(),
            lock,
            fence,
            ttl,
            standing,
            cancel,
            watcher: Arc::new(Mutex::new(Some(watcher))),
        })
    }
}

/// What this process knows of its lease.
#[derive(Clone, Debug)]
enum Standing {
    /// Ours as of the renewal asked at `confirmed`.
    Held { confirmed: Instant },
    /// Taken over, removed or expired; who holds the arena now, if anyone.
    Lost(Option<Box<Lock>>),
}

/// The lease's background task: renew it on its own schedule (independent
/// of bakes and waits), notice a takeover or a cancel request.
async fn watch_lease(
    ledger: Ledger,
    fence: Fence,
    ttl: Duration,
    mut renewed: Instant,
    standing: watch::Sender<Standing>,
    cancel: watch::Sender<Option<Cancel>>,
) {
    let renew_every = ttl / 6;
    let tick = renew_every.min(Duration::from_millis(500));
    let mut unreachable = false;
    loop {
        tokio::time::sleep(tick).await;
        let lost = if renewed.elapsed() >= renew_every {
            let asked = Instant::now();
            match ledger
                .renew_lock(&fence.arena, &fence.token, ttl, Utc::now())
                .await
            {
                Ok(true) => {
                    renewed = asked;
                    standing.send_replace(Standing::Held { confirmed: asked });
                    None
                }
                Ok(false) => Some(ledger.lock_row_once(&fence.arena).await.ok().flatten()),
                Err(e) => {
                    if !unreachable {
                        tracing::warn!("cannot renew the lease on {}: {e}", fence.arena);
                    }
                    unreachable = true;
                    continue;
                }
            }
        } else {
            match ledger.lock_row_once(&fence.arena).await {
                Ok(Some(l)) if l.token == fence.token => {
                    if l.cancel.is_some() {
                        cancel.send_if_modified(|c| {
                            let changed = *c != l.cancel;
                            *c = l.cancel.clone();
                            changed
                        });
                    }
                    None
                }
                Ok(other) => Some(other),
                Err(_) => continue,
            }
        };
        unreachable = false;
        if let Some(holder) = lost {
            standing.send_replace(Standing::Lost(holder.map(Box::new)));
            return;
        }
    }
}

/// A lease held by this process, kept in the background.
pub struct Lease {
    ledger: Ledger,
    lock: Lock,
    fence: Fence,
    ttl: Duration,
    standing: watch::Receiver<Standing>,
    cancel: watch::Receiver<Option<Cancel>>,
    watcher: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Lease {
    pub fn lock(&self) -> &Lock {
        &self.lock
    }

    /// Whether this process knows it no longer holds the lease.
    pub fn is_lost(&self) -> bool {
        matches!(*self.standing.borrow(), Standing::Lost(_))
    }

    /// Ok while the lease is surely ours: renewed within half its TTL.
    /// Otherwise wait for the next renewal (the ledger may be blinking),
    /// and fail with [`LedgerError::Fenced`] once it is lost or would have
    /// expired, so a holder that cannot renew stops acting before anyone
    /// else can take the arena. Asked before every platform call.
    pub async fn ensure(&self) -> Result<()> {
        let mut standing = self.standing.clone();
        loop {
            let wait = match &*standing.borrow_and_update() {
                Standing::Lost(holder) => {
                    return Err(LedgerError::Fenced {
                        arena: self.lock.arena.clone(),
                        holder: holder.clone(),
                    });
                }
                Standing::Held { confirmed } => {
                    let age = confirmed.elapsed();
                    if age < self.ttl / 2 {
                        return Ok(());
                    }
                    if age >= self.ttl {
                        return Err(LedgerError::Fenced {
                            arena: self.lock.arena.clone(),
                            holder: None,
                        });
                    }
                    self.ttl - age
                }
            };
            match tokio::time::timeout(wait, standing.changed()).await {
                Ok(Ok(())) | Err(_) => {}
                // The watcher stopped (the lease was pinned or released).
                Ok(Err(_)) => return Ok(()),
            }
        }
    }

    /// Resolves once the lease is lost, with who holds the arena now.
    pub async fn lost(&self) -> LedgerError {
        let mut standing = self.standing.clone();
        loop {
            if let Standing::Lost(holder) = &*standing.borrow_and_update() {
                return LedgerError::Fenced {
                    arena: self.lock.arena.clone(),
                    holder: holder.clone(),
                };
            }
            if standing.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// The cancel request left on the lease, as it changes.
    pub fn cancel_watch(&self) -> watch::Receiver<Option<Cancel>> {
        self.cancel.clone()
    }

    fn stop_watching(&self) {
        if let Some(h) = self.watcher.lock().expect("watcher lock").take() {
            h.abort();
        }
        self.ledger.remove_fence(&self.fence);
    }

    /// Leave the arena pinned (`copilot unlock` lifts it) when this lease
    /// ends: the lease becomes the pin in one write, so no other command
    /// can take the arena in between. Releasing the lease afterwards leaves
    /// the pin alone; writes are no longer fenced (the pin holds the arena).
    pub async fn pin(&self, reason: &str, now: DateTime<Utc>) -> Result<Lock> {
        let token = new_id("lck");
        let sql = "UPDATE locks SET kind = $1, token = $2, reason = $3, acquired_at = $4, renewed_at = $4, \
                   expires_at_ms = NULL, cancel = NULL WHERE arena = $5 AND token = $6";
        super::read!(&self.ledger, pool => sqlx::query(sql)
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
            Some(lock) if lock.token == token => {
                self.stop_watching();
                Ok(lock)
            }
            Some(lock) => Err(LedgerError::LockHeld(Box::new(lock))),
            None => Err(LedgerError::NotLocked(self.lock.arena.clone())),
        }
    }

    /// Stop keeping the lease and delete it.
    pub async fn release(self) -> Result<bool> {
        self.stop_watching();
        self.ledger
            .release_lock(&self.lock.arena, &self.lock.token)
            .await
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop_watching();
    }
}
