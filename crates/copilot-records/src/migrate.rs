//! The service's reversible migrations, embedded for SQLite and PostgreSQL:
//! `copilot-service migrate up | down [--steps N] | status`.

use std::borrow::Cow;

use serde::Serialize;
use sqlx::migrate::{Migrate, Migration, MigrationType, Migrator};

use copilot_db::{Backend, Pool, on_pool};

macro_rules! reversible {
    ($dir:literal: $($version:literal => $name:literal),+ $(,)?) => {
        vec![$(
            Migration::new(
                $version,
                Cow::Borrowed($name),
                MigrationType::ReversibleUp,
                Cow::Borrowed(include_str!(concat!("../migrations/", $dir, "/", $name, ".up.sql"))),
                false,
            ),
            Migration::new(
                $version,
                Cow::Borrowed($name),
                MigrationType::ReversibleDown,
                Cow::Borrowed(include_str!(concat!("../migrations/", $dir, "/", $name, ".down.sql"))),
                false,
            ),
        )+]
    };
}

/// The embedded migrations of a backend.
pub fn migrator(backend: Backend) -> Migrator {
    let migrations = match backend {
        Backend::Sqlite => reversible!("sqlite":
            1 => "0001_update_records",
            2 => "0002_webhook_deliveries",
            3 => "0003_feature_flags",
            4 => "0004_shops",
            5 => "0005_update_records_by_status",
            6 => "0006_recommendation_revision",
        ),
        Backend::Postgres => reversible!("postgres":
            1 => "0001_update_records",
            2 => "0002_webhook_deliveries",
            3 => "0003_feature_flags",
            4 => "0004_shops",
            5 => "0005_update_records_by_status",
            6 => "0006_recommendation_revision",
        ),
    };
    Migrator {
        migrations: Cow::Owned(migrations),
        ..Migrator::DEFAULT
    }
}

/// Every embedded migration as a project file: its path under the project
/// root (`migrations/service/<backend>/<version>_<name>.<up|down>.sql`) and
/// its text. `copilot init` writes these, so a new project's `migrations`
/// gate checks exactly what the service applies.
pub fn files() -> Vec<(String, Cow<'static, str>)> {
    let mut files = Vec::new();
    for (backend, dir) in [(Backend::Sqlite, "sqlite"), (Backend::Postgres, "postgres")] {
        for m in migrator(backend).iter() {
            let suffix = match m.migration_type {
                MigrationType::ReversibleDown => "down",
                _ => "up",
            };
            files.push((
                format!("migrations/service/{dir}/{}.{suffix}.sql", m.description),
                m.sql.clone(),
            ));
        }
    }
    files
}

/// One migration and whether it is applied.
#[derive(Clone, Debug, Serialize)]
pub struct MigrationStatus {
    pub version: i64,
    pub name: String,
    pub applied: bool,
    /// An applied migration whose embedded text no longer matches what ran.
    pub changed: bool,
}

pub async fn applied_versions(pool: &Pool) -> Result<Vec<i64>, sqlx::migrate::MigrateError> {
    let applied = on_pool!(pool, p => {
        let mut conn = p.acquire().await?;
        conn.ensure_migrations_table().await?;
        conn.list_applied_migrations().await?
    });
    let mut v: Vec<i64> = applied.into_iter().map(|m| m.version).collect();
    v.sort_unstable();
    Ok(v)
}

/// Apply every pending migration; returns the versions applied.
pub async fn up(pool: &Pool) -> Result<Vec<i64>, sqlx::migrate::MigrateError> {
    let before = applied_versions(pool).await?;
    let m = migrator(pool.backend());
    on_pool!(pool, p => m.run(p).await)?;
    let after = applied_versions(pool).await?;
    Ok(after.into_iter().filter(|v| !before.contains(v)).collect())
}

/// Revert the newest `steps` applied migrations; returns the versions reverted.
pub async fn down(pool: &Pool, steps: usize) -> Result<Vec<i64>, sqlx::migrate::MigrateError> {
    let applied = applied_versions(pool).await?;
    let keep = applied.len().saturating_sub(steps);
    let target = if keep == 0 { 0 } else { applied[keep - 1] };
    let m = migrator(pool.backend());
    on_pool!(pool, p => m.undo(p, target).await)?;
    let after = applied_versions(pool).await?;
    Ok(applied
        .into_iter()
        .filter(|v| !after.contains(v))
        .rev()
        .collect())
}

/// Every embedded migration and its state in the database.
pub async fn status(pool: &Pool) -> Result<Vec<MigrationStatus>, sqlx::migrate::MigrateError> {
    let applied = on_pool!(pool, p => {
        let mut conn = p.acquire().await?;
        conn.ensure_migrations_table().await?;
        conn.list_applied_migrations().await?
    });
    let m = migrator(pool.backend());
    Ok(m.iter()
        .filter(|mig| mig.migration_type.is_up_migration())
        .map(|mig| {
            let ran = applied.iter().find(|a| a.version == mig.version);
            MigrationStatus {
                version: mig.version,
                name: mig.description.to_string(),
                applied: ran.is_some(),
                changed: ran.is_some_and(|a| a.checksum != mig.checksum),
            }
        })
        .collect())
}

/// A textual dump of the schema (tables, columns, indexes), for comparing
/// two databases; sqlx's own bookkeeping table is left out.
pub async fn schema_dump(pool: &Pool) -> Result<String, sqlx::Error> {
    let rows: Vec<(String,)> = match pool {
        Pool::Sqlite(p) => {
            sqlx::query_as(
                "SELECT type || ' ' || name || ': ' || COALESCE(sql, '') FROM sqlite_master \
                 WHERE name NOT LIKE '\\_sqlx%' ESCAPE '\\' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY type, name",
            )
            .fetch_all(p)
            .await?
        }
        Pool::Postgres(p) => {
            sqlx::query_as(
                "SELECT 'column ' || table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' ' || COALESCE(column_default, '') \
                   FROM information_schema.columns WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations' \
                 UNION ALL \
                 SELECT 'index ' || indexname || ': ' || indexdef FROM pg_indexes \
                   WHERE schemaname = current_schema() AND tablename <> '_sqlx_migrations' \
                 ORDER BY 1",
            )
            .fetch_all(p)
            .await?
        }
    };
    Ok(rows
        .into_iter()
        .map(|(r,)| r)
        .collect::<Vec<_>>()
        .join("\n"))
}
