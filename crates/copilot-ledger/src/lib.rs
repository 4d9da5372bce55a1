//! The ledger: every release, deployment, step, gate result, approval, lock
//! and audit entry.
//!
//! One store with two backends: a SQLite file (the default, at
//! `<root>/.copilot/ledger.db`) and PostgreSQL for teams. Each backend has
//! its own embedded migrations; the queries are written once in portable SQL
//! and run against whichever pool is open (see [`copilot_db`]).

mod locks;
mod records;

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use sqlx::migrate::{Migration, MigrationType, Migrator};

pub(crate) use copilot_db::on_pool;
pub use copilot_db::{Backend, redact_url};
use copilot_db::{ConnectError, Pool};

pub use locks::{Lease, Lock, LockKind, LockRequest};
pub use records::*;

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
}

pub type Result<T, E = LedgerError> = std::result::Result<T, E>;

/// An open ledger.
#[derive(Clone, Debug)]
pub struct Ledger {
    pool: Pool,
    /// The URL with any password removed, for messages.
    display_url: String,
}

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
    let migrations = migrations!("sqlite": 1 => "0001_ledger", 2 => "0002_release_env", 3 => "0003_release_migrations", 4 => "0004_deployment_order", 5 => "0005_step_handle", 6 => "0006_query_indexes", 7 => "0007_in_progress_index");
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

fn postgres_migrator() -> Migrator {
    let migrations = migrations!("postgres": 1 => "0001_ledger", 2 => "0002_release_env", 3 => "0003_release_migrations", 4 => "0004_deployment_order", 5 => "0005_step_handle", 6 => "0006_query_indexes", 7 => "0007_in_progress_index");
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
        let pool = match Pool::connect(url, 4).await {
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
        Ok(Ledger { pool, display_url })
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
