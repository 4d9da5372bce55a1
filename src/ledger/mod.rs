//! The ledger: every release, deployment, step, gate result, approval, lock
//! and audit entry.
//!
//! One store with two backends: a SQLite file (the default, at
//! `<root>/.copilot/ledger.db`) and PostgreSQL for teams. Each backend has
//! its own embedded migrations; the queries are written once in portable SQL
//! and run against whichever pool is open (see [`on_pool!`]).

mod locks;
mod records;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration as StdDuration;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

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

/// Which database a ledger lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone, Debug)]
enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Run the same query code against whichever pool is open.
///
/// The body is expanded once per backend, so `sqlx` infers the database
/// type from the pool it is given.
macro_rules! on_pool {
    ($ledger:expr, $pool:ident => $body:expr) => {
        match &$ledger.pool {
            $crate::ledger::Pool::Sqlite($pool) => $body,
            $crate::ledger::Pool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use on_pool;

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
            Cow::Borrowed(include_str!(concat!("../../migrations/ledger/", $dir, "/", $file, ".sql"))),
            false,
        )),+]
    };
}

fn sqlite_migrator() -> Migrator {
    let migrations = migrations!("sqlite": 1 => "0001_ledger");
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

fn postgres_migrator() -> Migrator {
    let migrations = migrations!("postgres": 1 => "0001_ledger");
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

/// Remove the password from a database URL.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_string(),
        },
        None => url.to_string(),
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
        let connect_err = |source| LedgerError::Connect {
            url: display_url.clone(),
            source,
        };
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(connect_err)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(StdDuration::from_secs(30))
                .foreign_keys(true);
            let path = options.get_filename().to_path_buf();
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| LedgerError::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options)
                .await
                .map_err(connect_err)?;
            // SQLite has no advisory locks: serialise migrations across
            // processes with a lock file next to the database.
            let guard = migration_lock(&path)?;
            sqlite_migrator().run(&pool).await?;
            drop(guard);
            Ok(Ledger {
                pool: Pool::Sqlite(pool),
                display_url,
            })
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(4)
                .acquire_timeout(StdDuration::from_secs(10))
                .connect(url)
                .await
                .map_err(connect_err)?;
            postgres_migrator().run(&pool).await?;
            Ok(Ledger {
                pool: Pool::Postgres(pool),
                display_url,
            })
        } else {
            Err(LedgerError::UnsupportedUrl(display_url))
        }
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    pub fn display_url(&self) -> &str {
        &self.display_url
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("postgres://app:hunter2@db:5432/ledger?sslmode=require"),
            "postgres://app:***@db:5432/ledger?sslmode=require"
        );
        assert_eq!(
            redact_url("postgres://app@db/ledger"),
            "postgres://app@db/ledger"
        );
        assert_eq!(redact_url("sqlite:///tmp/x.db"), "sqlite:///tmp/x.db");
    }
}
