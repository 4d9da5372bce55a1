//! The ledger: every release, deployment, step, gate result, approval, lock
//! and audit entry.
//!
//! One store with two backends: a SQLite file (the default, at
//! `<root>/.copilot/ledger.db`) and PostgreSQL for teams. Each backend has
//! its own embedded migrations; the queries are written once in portable SQL
//! and run against whichever pool is open (see [`copilot_db`]).
//!
//! Two things hold for every query:
//!
//! - **A ledger that blinks is ridden out.** A query that fails because the
//!   database cannot be reached, or is restarting or failing over, is asked
//!   again for up to [`Ledger::ride_out`] (60 s by default: a managed
//!   PostgreSQL failover) before [`LedgerError::Unavailable`] is returned.
//! - **Writes are fenced.** While this process holds an arena's lease
//!   through a ledger handle, every write through it (or a clone of it) runs
//!   in a transaction that first proves the lease is still its own and
//!   unexpired; a holder that lost its lease (a stalled process woken after
//!   someone took the arena over) gets [`LedgerError::Fenced`] and writes
//!   nothing.

mod incidents;
mod locks;
mod previews;
mod records;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::migrate::{Migration, MigrationType, Migrator};

pub(crate) use copilot_db::on_pool;
pub use copilot_db::{Backend, redact_url};
use copilot_db::{ConnectError, Pool};

pub use incidents::*;
pub use locks::{Cancel, CancelAction, Lease, Lock, LockKind, LockRequest, this_host};
pub use previews::*;
pub use records::*;
pub use sqlx::types::Json;

/// Why a ledger operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot open the ledger at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("unsupported ledger URL `{0}`")]
    UnsupportedUrl(String),
    #[error("cannot migrate the ledger: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("ledger query failed: {0}")]
    Query(#[from] sqlx::Error),
    #[error("ledger I/O failed at {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("release `{0}` already exists")]
    ReleaseExists(String),
    #[error("no release matches `{0}`")]
    ReleaseNotFound(String),
    #[error("no incident `{0}`")]
    IncidentNotFound(String),
    #[error("`{reference}` matches several releases: {}", .candidates.join(", "))]
    AmbiguousRelease {
        reference: String,
        candidates: Vec<String>,
    },
    #[error("{}", locks::describe_held(.0))]
    LockHeld(Box<Lock>),
    #[error("arena `{0}` is not locked")]
    NotLocked(String),
    #[error(
        "the lock on `{arena}` is held by a running {kind} ({owner}); pass --force to break it"
    )]
    LockInUse {
        arena: String,
        kind: LockKind,
        owner: String,
    },
    /// This process's lease on `arena` expired or was taken over: the write
    /// was refused, and the holder must stop acting.
    #[error("{}", locks::describe_lost(.arena, .holder.as_deref()))]
    Fenced {
        arena: String,
        holder: Option<Box<Lock>>,
    },
    /// The ledger did not answer for the whole ride-out budget.
    #[error("the ledger at {url} did not answer for {}s: {source}", .waited.as_secs())]
    Unavailable {
        url: String,
        waited: Duration,
        #[source]
        source: sqlx::Error,
    },
}

impl LedgerError {
    /// Whether asking again may succeed: the database could not be reached,
    /// or was shutting down, starting, failing over or busy.
    pub fn is_transient(&self) -> bool {
        match self {
            LedgerError::Query(e) | LedgerError::Connect { source: e, .. } => transient(e),
            _ => false,
        }
    }

    /// Whether the ledger cannot take writes at all (a SQLite file made
    /// read-only, a full disk): waiting does not help.
    pub fn is_unwritable(&self) -> bool {
        let LedgerError::Query(sqlx::Error::Database(db)) = self else {
            return false;
        };
        // SQLITE_READONLY (8), SQLITE_IOERR (10), SQLITE_FULL (13),
        // SQLITE_CANTOPEN (14) and their extended codes; PostgreSQL's
        // disk_full (53100).
        db.code().is_some_and(|c| {
            c.parse::<i32>()
                .is_ok_and(|n| matches!(n & 0xff, 8 | 10 | 13 | 14))
                || c == "53100"
        })
    }
}

fn transient(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            // PostgreSQL: connection exceptions (class 08), the server
            // shutting down or starting (57P01-57P03), too many connections,
            // a read-only transaction on a primary just demoted by a
            // failover, serialization failures and deadlocks. SQLite: busy
            // and locked.
            code.starts_with("08")
                || matches!(
                    &*code,
                    "57P01" | "57P02" | "57P03" | "53300" | "25006" | "40001" | "40P01"
                )
                || code.parse::<i32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6))
        }),
        _ => false,
    }
}

pub type Result<T, E = LedgerError> = std::result::Result<T, E>;

/// How long a ledger that does not answer is waited for by default: a
/// managed PostgreSQL failover takes tens of seconds.
pub const DEFAULT_RIDE_OUT: Duration = Duration::from_secs(60);

/// An open ledger.
#[derive(Clone, Debug)]
pub struct Ledger {
    pool: Pool,
    /// The URL with any password removed, for messages.
    display_url: String,
    /// How long a query is asked again while the database does not answer.
    ride_out: Duration,
    /// The leases this process holds through this handle: every write
    /// proves each is still its own (shared by clones).
    fences: Arc<Mutex<Vec<Fence>>>,
    /// The instant this process's clock is pinned to (`COPILOT_NOW`), if it
    /// is: every audit entry then also records it next to the real time.
    pinned_clock: Option<chrono::DateTime<chrono::Utc>>,
}

/// A lease a write must prove it still holds.
#[derive(Clone, Debug, PartialEq)]
struct Fence {
    arena: String,
    token: String,
}

/// Run a write through `$ledger`: in a transaction that first proves every
/// lease the handle holds is still its own (see the crate docs), asked
/// again while the database blinks. The body sees the transaction's
/// connection as `$conn` (pass `&mut *$conn` to use it more than once).
macro_rules! write {
    ($ledger:expr, $conn:ident => $body:expr) => {{
        let ledger: &$crate::Ledger = $ledger;
        ledger
            .ride_out(async || {
                $crate::on_pool!(&ledger.pool, pool => {
                    let mut tx = pool.begin().await?;
                    for fence in ledger.fences() {
                        let held = sqlx::query($crate::locks::FENCE_SQL)
                            .bind(&fence.arena)
                            .bind(&fence.token)
                            .bind(chrono::Utc::now().timestamp_millis())
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                        if held == 0 {
                            drop(tx);
                            return Err(ledger.fenced_out(&fence.arena).await);
                        }
                    }
                    let $conn = &mut *tx;
                    let out = $body;
                    tx.commit().await?;
                    Ok(out)
                })
            })
            .await
    }};
}
pub(crate) use write;

/// Run a read through `$ledger`, asked again while the database blinks.
macro_rules! read {
    ($ledger:expr, $pool:ident => $body:expr) => {{
        let ledger: &$crate::Ledger = $ledger;
        ledger
            .ride_out(async || Ok($crate::on_pool!(&ledger.pool, $pool => $body)?))
            .await
    }};
}
pub(crate) use read;

macro_rules! migrations {
    ($dir:literal: $($version:literal => $file:literal),+ $(,)?) => {
        vec![$(Migration::new(
            $version,
            Cow::Borrowed($file),
            MigrationType::Simple,
            Cow::Borrowed(include_str!(concat!("../migrations/", $dir, "/", $file, ".sql"))),
            false,
        )),+]
    };
}

fn sqlite_migrator() -> Migrator {
    let migrations = migrations!("sqlite": 1 => "0001_ledger", 2 => "0002_release_env", 3 => "0003_release_migrations", 4 => "0004_deployment_order", 5 => "0005_step_handle", 6 => "0006_query_indexes", 7 => "0007_in_progress_index", 8 => "0008_lock_cancel", 9 => "0009_previews", 10 => "0010_incidents");
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

fn postgres_migrator() -> Migrator {
    let migrations = migrations!("postgres": 1 => "0001_ledger", 2 => "0002_release_env", 3 => "0003_release_migrations", 4 => "0004_deployment_order", 5 => "0005_step_handle", 6 => "0006_query_indexes", 7 => "0007_in_progress_index", 8 => "0008_lock_cancel", 9 => "0009_previews", 10 => "0010_incidents");
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

/// The default ledger of a project root.
pub fn default_url(root: &Path) -> String {
    format!(
        "sqlite://{}",
        root.join(".copilot").join("ledger.db").display()
    )
}

impl Ledger {
    /// Open (creating if needed) and migrate the ledger at `url`.
    pub async fn connect(url: &str) -> Result<Ledger> {
        let display_url = redact_url(url);
        let pool = match Pool::connect_journaled(url, 4).await {
            Ok(pool) => pool,
            Err(ConnectError::Unsupported(u)) => return Err(LedgerError::UnsupportedUrl(u)),
            Err(ConnectError::Io { path, source }) => return Err(LedgerError::Io { path, source }),
            Err(ConnectError::Sqlx(source)) => {
                return Err(LedgerError::Connect {
                    url: display_url,
                    source,
                });
            }
        };
        match &pool {
            Pool::Sqlite(p) => {
                // SQLite has no advisory locks: serialise migrations across
                // processes with a lock file next to the database.
                let path = pool.sqlite_path().unwrap_or_default();
                let guard = migration_lock(&path)?;
                sqlite_migrator().run(p).await?;
                drop(guard);
            }
            Pool::Postgres(p) => postgres_migrator().run(p).await?,
        }
        Ok(Ledger {
            pool,
            display_url,
            ride_out: DEFAULT_RIDE_OUT,
            fences: Arc::default(),
            pinned_clock: None,
        })
    }

    /// The same ledger, for a process whose clock is pinned to `at`: each
    /// audit entry's detail gets `clock: {copilot_now, real}`, so the audit
    /// log shows which changes were made under an overridden clock and when
    /// they really happened.
    pub fn with_pinned_clock(mut self, at: Option<chrono::DateTime<chrono::Utc>>) -> Ledger {
        self.pinned_clock = at;
        self
    }

    /// The same ledger, waiting up to `budget` for a database that does not
    /// answer before giving up.
    pub fn with_ride_out(mut self, budget: Duration) -> Ledger {
        self.ride_out = budget;
        self
    }

    /// The same ledger for records that are not the rollout's (what is
    /// owed to GitHub): its writes prove no lease, so they neither wait
    /// for one nor fail when the rollout's lease has just been let go.
    pub fn unfenced(&self) -> Ledger {
        Ledger {
            fences: Arc::default(),
            ..self.clone()
        }
    }

    /// How long a query is asked again while the database does not answer.
    pub fn ride_out_budget(&self) -> Duration {
        self.ride_out
    }

    /// Run `attempt`, again while it fails for a reason that may pass (the
    /// database unreachable, restarting, failing over, busy), for up to the
    /// ride-out budget; traffic stays where it is meanwhile, since nothing
    /// acts until the ledger has recorded the intent.
    pub(crate) async fn ride_out<T>(
        &self,
        mut attempt: impl AsyncFnMut() -> Result<T>,
    ) -> Result<T> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(100);
        let mut said = false;
        loop {
            match attempt().await {
                Err(e) if e.is_transient() => {
                    let waited = started.elapsed();
                    if waited >= self.ride_out {
                        let source = match e {
                            LedgerError::Query(s) | LedgerError::Connect { source: s, .. } => s,
                            _ => unreachable!("only query and connection errors are transient"),
                        };
                        return Err(LedgerError::Unavailable {
                            url: self.display_url.clone(),
                            waited,
                            source,
                        });
                    }
                    if !said {
                        tracing::warn!(
                            "the ledger at {} does not answer ({e}); asking again for up to {}s",
                            self.display_url,
                            self.ride_out.as_secs()
                        );
                        said = true;
                    }
                    tokio::time::sleep(pause.min(self.ride_out - waited)).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                other => {
                    if said && other.is_ok() {
                        tracing::warn!("the ledger at {} answers again", self.display_url);
                    }
                    return other;
                }
            }
        }
    }

    fn fences(&self) -> Vec<Fence> {
        self.fences.lock().expect("fences lock").clone()
    }

    fn add_fence(&self, fence: Fence) {
        self.fences.lock().expect("fences lock").push(fence);
    }

    fn remove_fence(&self, fence: &Fence) {
        self.fences
            .lock()
            .expect("fences lock")
            .retain(|f| f != fence);
    }

    /// The error a fenced-out write returns: who holds `arena` now.
    async fn fenced_out(&self, arena: &str) -> LedgerError {
        let holder = self.lock_row(arena).await.ok().flatten().map(Box::new);
        LedgerError::Fenced {
            arena: arena.to_string(),
            holder,
        }
    }

    pub fn backend(&self) -> Backend {
        self.pool.backend()
    }

    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn migration_lock(db: &Path) -> Result<std::fs::File> {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".migrate.lock");
    let path = db.with_file_name(name);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| LedgerError::Io {
            path: path.clone(),
            source,
        })?;
    file.lock()
        .map_err(|source| LedgerError::Io { path, source })?;
    Ok(file)
}

/// A new identifier: time-ordered, so ids sort by creation.
pub fn new_id(prefix: &str) -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    format!("{prefix}_{id}")
}
