//! One database handle for SQLite and PostgreSQL, shared by the ledger and
//! the bundled service.
//!
//! Queries are written once in portable SQL (`$1` placeholders, `RETURNING`,
//! `ON CONFLICT`) and run against whichever pool is open with [`on_pool!`];
//! each backend keeps its own migrations.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

/// An open connection pool to either backend.
#[derive(Clone, Debug)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Run the same query code against whichever pool is open.
///
/// The body is expanded once per backend, so `sqlx` infers the database
/// type from the pool it is given; both arms must produce the same type.
#[macro_export]
macro_rules! on_pool {
    ($pool:expr, $p:ident => $body:expr) => {
        match $pool {
            $crate::Pool::Sqlite($p) => $body,
            $crate::Pool::Postgres($p) => $body,
        }
    };
}

/// `count` numbered placeholders from `$first`: `placeholders(3, 2)` is
/// `$3, $4`, for statements whose number of values is known at run time
/// (multi-row inserts, `IN` lists).
pub fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Which database a pool talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("unsupported database URL `{0}` (use sqlite://PATH or postgres://...)")]
    Unsupported(String),
    #[error("cannot create {}: {source}", .path.display())]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
}

impl Pool {
    /// Open a pool; for SQLite, create the file (and its folder) if needed.
    /// Every SQLite commit is synced to disk before it returns.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Pool, ConnectError> {
        Self::open(
            url,
            max_connections,
            SqliteJournalMode::Wal,
            SqliteSynchronous::Full,
        )
        .await
    }

    /// The same for a store that must fail cleanly when its file stops
    /// taking writes (the ledger): SQLite keeps a rollback journal instead
    /// of a write-ahead log, so no shared-memory file is mapped, and a file
    /// made read-only or a full disk mid-command is an error to report,
    /// never a SIGBUS. Writers take turns (`busy_timeout`); readers never
    /// see a half-written transaction. PostgreSQL is opened as by
    /// [`Pool::connect`].
    pub async fn connect_journaled(url: &str, max_connections: u32) -> Result<Pool, ConnectError> {
        Self::open(
            url,
            max_connections,
            SqliteJournalMode::Truncate,
            SqliteSynchronous::Full,
        )
        .await
    }

    /// The same, for a write-heavy queue (the service's webhook deliveries):
    /// SQLite in WAL mode with `synchronous=NORMAL`, which syncs at
    /// checkpoints rather than at every commit. A commit survives the
    /// process being killed (it is in the WAL, which the next open
    /// replays); only the last commits before a power loss or an OS crash
    /// can be lost. PostgreSQL is opened as by [`Pool::connect`].
    pub async fn connect_write_heavy(
        url: &str,
        max_connections: u32,
    ) -> Result<Pool, ConnectError> {
        Self::open(
            url,
            max_connections,
            SqliteJournalMode::Wal,
            SqliteSynchronous::Normal,
        )
        .await
    }

    async fn open(
        url: &str,
        max_connections: u32,
        journal: SqliteJournalMode,
        synchronous: SqliteSynchronous,
    ) -> Result<Pool, ConnectError> {
        if url.starts_with("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(journal)
                .synchronous(synchronous)
                .busy_timeout(Duration::from_secs(30))
                .foreign_keys(true);
            let path = options.get_filename().to_path_buf();
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|source| ConnectError::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections)
                .connect_with(options)
                .await?;
            Ok(Pool::Sqlite(pool))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await?;
            Ok(Pool::Postgres(pool))
        } else {
            Err(ConnectError::Unsupported(redact_url(url)))
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// The SQLite file, if this is SQLite.
    pub fn sqlite_path(&self) -> Option<std::path::PathBuf> {
        match self {
            Pool::Sqlite(p) => Some(p.connect_options().get_filename().to_path_buf()),
            Pool::Postgres(_) => None,
        }
    }

    pub async fn close(&self) {
        on_pool!(self, p => p.close().await);
    }

    /// A cheap round trip, for health checks.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        on_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(drop))
    }
}

/// A SQLite URL with a relative path, made relative to `root` (where the
/// services of a local arena run); other URLs unchanged.
pub fn anchor_sqlite(url: &str, root: &std::path::Path) -> String {
    let Some(rest) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        return url.to_string();
    };
    if rest.starts_with('/') || rest.starts_with(":memory:") || rest.is_empty() {
        return url.to_string();
    }
    format!("sqlite://{}", root.join(rest).display())
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
        let root = std::path::Path::new("/srv/app");
        assert_eq!(
            anchor_sqlite("sqlite://.copilot/x.db", root),
            "sqlite:///srv/app/.copilot/x.db"
        );
        assert_eq!(
            anchor_sqlite("sqlite:///tmp/x.db", root),
            "sqlite:///tmp/x.db"
        );
        assert_eq!(anchor_sqlite("postgres://h/db", root), "postgres://h/db");
        assert_eq!(
            redact_url("redis://:secret@cache:6379/0"),
            "redis://:***@cache:6379/0"
        );
    }
}
