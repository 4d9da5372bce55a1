//! `migrations`: pending migrations apply on a shadow database, roll back to
//! the schema before them, and apply again to the same schema; migrations
//! already applied to the target are unchanged (checksums); pending ones pass
//! a backward-compatibility lint on PostgreSQL; irreversible ones are named.
//!
//! Migrations are sqlx's layout (`<version>_<name>.up.sql` / `.down.sql`),
//! the layout of copilot-service's own migrations.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use sqlx::migrate::{Migration, Migrator};

use super::{GateContext, Resolved, Verdict, resolve_reference};
use copilot_core::config::params::MigrationsParams;
use copilot_core::model::{Arena, Gate, GateKind, Project};
use copilot_db::{Pool, on_pool, redact_url};
use copilot_ledger::MigrationRecord;
use copilot_records::migrate::schema_dump;

/// A backward-compatibility problem in a pending migration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub version: i64,
    pub rule: &'static str,
    pub blocking: bool,
    pub message: String,
    pub statement: String,
}

fn normalize(sql: &str) -> String {
    sql.lines()
        .map(|l| l.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_uppercase()
}

fn table_after(stmt: &str, keyword: &str) -> Option<String> {
    let rest = stmt.split_once(keyword)?.1.trim_start();
    let rest = rest
        .strip_prefix("IF NOT EXISTS ")
        .or_else(|| rest.strip_prefix("IF EXISTS "))
        .unwrap_or(rest);
    let rest = rest.strip_prefix("ONLY ").unwrap_or(rest);
    rest.split([' ', '('])
        .next()
        .map(|t| t.trim_matches('"').to_string())
}

/// Lint one migration's SQL for changes that break the running release or
/// lock tables (PostgreSQL).
pub fn lint(version: i64, sql: &str) -> Vec<Finding> {
    let mut out = Vec::new();
    let statements: Vec<String> = sql
        .split(';')
        .map(normalize)
        .filter(|s| !s.is_empty())
        .collect();
    let created: BTreeSet<String> = statements
        .iter()
        .filter(|s| s.starts_with("CREATE TABLE"))
        .filter_map(|s| table_after(s, "CREATE TABLE"))
        .collect();
    let mut push = |rule: &'static str, blocking: bool, message: String, stmt: &str| {
        out.push(Finding {
            version,
            rule,
            blocking,
            message,
            statement: stmt.chars().take(160).collect(),
        })
    };
    for s in &statements {
        let altered = table_after(s, "ALTER TABLE");
        let new_table = altered.as_ref().is_some_and(|t| created.contains(t));
        if s.starts_with("ALTER TABLE") && !new_table {
            let t = altered.clone().unwrap_or_default();
            if s.contains("ADD COLUMN") && s.contains("NOT NULL") && !s.contains("DEFAULT") {
                push(
                    "add-not-null-column",
                    true,
                    format!(
                        "adds a NOT NULL column to {t} without a default: inserts by the running release fail"
                    ),
                    s,
                );
            }
            if s.contains("DROP COLUMN") {
                push(
                    "drop-column",
                    true,
                    format!(
                        "drops a column of {t}: the running release still reads it; deprecate first, drop in a later release"
                    ),
                    s,
                );
            }
            if s.contains("RENAME COLUMN") || s.contains(" RENAME TO ") {
                push(
                    "rename",
                    true,
                    format!(
                        "renames {t} or one of its columns: the running release still uses the old name"
                    ),
                    s,
                );
            }
            if s.contains("ALTER COLUMN") && (s.contains(" TYPE ") || s.contains("SET DATA TYPE")) {
                push(
                    "change-column-type",
                    true,
                    format!(
                        "changes a column type of {t}: rewrites the table under an exclusive lock"
                    ),
                    s,
                );
            }
            if (s.contains("FOREIGN KEY") || s.contains("REFERENCES")) && !s.contains("NOT VALID") {
                push(
                    "foreign-key-without-not-valid",
                    true,
                    format!(
                        "adds a foreign key to {t} without NOT VALID: validates every row under lock"
                    ),
                    s,
                );
            }
            if s.contains("SET NOT NULL") {
                push(
                    "set-not-null",
                    false,
                    format!("sets NOT NULL on a column of {t}: scans the table under lock"),
                    s,
                );
            }
        }
        if s.starts_with("DROP TABLE") {
            push(
                "drop-table",
                true,
                "drops a table the running release may still use; deprecate first".into(),
                s,
            );
        }
        if (s.starts_with("CREATE INDEX") || s.starts_with("CREATE UNIQUE INDEX"))
            && !s.contains("CONCURRENTLY")
        {
            let on = table_after(s, " ON ").unwrap_or_default();
            if !created.contains(&on) {
                push(
                    "index-without-concurrently",
                    true,
                    format!(
                        "builds an index on {on} without CONCURRENTLY: blocks writes while it builds"
                    ),
                    s,
                );
            }
        }
    }
    out
}

/// `url` with its database name replaced.
fn with_database(url: &str, name: &str) -> String {
    let (head, query) = match url.split_once('?') {
        Some((h, q)) => (h, format!("?{q}")),
        None => (url, String::new()),
    };
    let scheme_end = head.find("://").map_or(0, |i| i + 3);
    match head[scheme_end..].find('/') {
        Some(i) => format!("{}/{name}{query}", &head[..scheme_end + i]),
        None => format!("{head}/{name}{query}"),
    }
}

/// The migrations in a folder, as a release records them.
pub async fn migration_set(dir: &Path) -> Result<Vec<MigrationRecord>, String> {
    let migrator = Migrator::new(dir)
        .await
        .map_err(|e| format!("cannot read migrations in {}: {e}", dir.display()))?;
    let downs: BTreeSet<i64> = migrator
        .iter()
        .filter(|m| m.migration_type.is_down_migration())
        .map(|m| m.version)
        .collect();
    Ok(migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| MigrationRecord {
            version: m.version,
            description: m.description.to_string(),
            reversible: downs.contains(&m.version),
            checksum: m.checksum.iter().map(|b| format!("{b:02x}")).collect(),
        })
        .collect())
}

/// The versions applied to a database (none when it was never migrated).
pub async fn applied_versions(url: &str) -> Result<BTreeSet<i64>, String> {
    let shown = redact_url(url);
    let pool = tokio::time::timeout(Duration::from_secs(5), Pool::connect(url, 1))
        .await
        .map_err(|_| format!("{shown} did not answer within 5 s"))?
        .map_err(|e| format!("cannot reach {shown}: {e}"))?;
    let applied = applied_on(&pool)
        .await
        .map_err(|e| format!("cannot read the migrations applied to {shown}: {e}"));
    pool.close().await;
    Ok(applied?.into_keys().collect())
}

/// The parameters of the migrations gate that guards `arena` (or, failing
/// that, of the project's first migrations gate).
pub fn params_for(project: &Project, arena: Option<&Arena>) -> Option<MigrationsParams> {
    let is_migrations = |g: &&Gate| g.kind == GateKind::Migrations;
    let gate = arena
        .into_iter()
        .flat_map(|a| a.gates.before.iter().chain(&a.gates.after))
        .filter_map(|name| project.gates.get(name))
        .find(is_migrations)
        .or_else(|| project.gates.values().find(is_migrations))?;
    super::params::<MigrationsParams>(gate).ok()
}

/// Applied migrations on the target: version -> checksum. Reads only; an
/// unmigrated database has none.
async fn applied_on(pool: &Pool) -> Result<BTreeMap<i64, Vec<u8>>, sqlx::Error> {
    let exists: bool = match pool {
        Pool::Sqlite(p) => sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
        )
        .fetch_one(p)
        .await?
            > 0,
        Pool::Postgres(p) => {
            sqlx::query_scalar::<_, bool>("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
                .fetch_one(p)
                .await?
        }
    };
    if !exists {
        return Ok(BTreeMap::new());
    }
    let rows: Vec<(i64, Vec<u8>)> = on_pool!(pool, p => sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations WHERE success ORDER BY version").fetch_all(p).await)?;
    Ok(rows.into_iter().collect())
}

fn subset(all: &Migrator, keep: impl Fn(&Migration) -> bool) -> Migrator {
    Migrator {
        migrations: Cow::Owned(all.iter().filter(|m| keep(m)).cloned().collect()),
        ..Migrator::DEFAULT
    }
}

/// A throwaway database next to the target.
struct Shadow {
    pool: Pool,
    drop: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl Shadow {
    async fn create(target_url: &str, shadow_url: Option<&str>) -> Result<Shadow, String> {
        if target_url.starts_with("sqlite:") {
            let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
            let url = format!("sqlite://{}", dir.path().join("shadow.db").display());
            let pool = Pool::connect(&url, 1).await.map_err(|e| e.to_string())?;
            return Ok(Shadow {
                pool,
                drop: None,
                _dir: Some(dir),
            });
        }
        let server = shadow_url.unwrap_or(target_url);
        let name = format!("copilot_shadow_{}", uuid::Uuid::new_v4().simple());
        let admin = Pool::connect(server, 1)
            .await
            .map_err(|e| format!("shadow server {}: {e}", redact_url(server)))?;
        on_pool!(&admin, p => sqlx::query(&format!("CREATE DATABASE {name}")).execute(p).await.map(drop)).map_err(|e| format!("cannot create a shadow database on {}: {e}", redact_url(server)))?;
        admin.close().await;
        let url = with_database(server, &name);
        let pool = Pool::connect(&url, 1).await.map_err(|e| e.to_string())?;
        Ok(Shadow {
            pool,
            drop: Some((server.to_string(), name)),
            _dir: None,
        })
    }

    async fn remove(self) {
        self.pool.close().await;
        if let Some((server, name)) = self.drop
            && let Ok(admin) = Pool::connect(&server, 1).await
        {
            let _ = on_pool!(&admin, p => sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(p).await.map(drop));
            admin.close().await;
        }
    }
}

pub async fn check(ctx: &GateContext<'_>, _gate: &Gate, p: MigrationsParams) -> Verdict {
    let started = Instant::now();
    let dir = ctx.project_path(&p.migrations);
    let migrator = match Migrator::new(dir.as_path()).await {
        Ok(m) => m,
        Err(e) => {
            return Verdict::fail(
                format!("cannot read migrations in {}: {e}", dir.display()),
                json!({ "migrations": p.migrations }),
            );
        }
    };
    let ups: BTreeMap<i64, &Migration> = migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration())
        .map(|m| (m.version, m))
        .collect();
    let downs: BTreeSet<i64> = migrator
        .iter()
        .filter(|m| m.migration_type.is_down_migration())
        .map(|m| m.version)
        .collect();

    let url = match resolve_reference(ctx.arena, &p.database) {
        Resolved::Value(v) => copilot_db::anchor_sqlite(&v, ctx.root),
        Resolved::Unresolvable(why) => {
            return Verdict::unreachable(
                format!("target database of {}: {why}", ctx.arena.name),
                json!({ "database": p.database }),
            );
        }
    };
    let shown = redact_url(&url);
    let target = match Pool::connect(&url, 1).await {
        Ok(pool) => pool,
        Err(e) => {
            return Verdict::unreachable(
                format!("cannot reach the target database {shown}: {e}"),
                json!({ "database": shown }),
            );
        }
    };
    let applied = applied_on(&target).await;
    let backend = target.backend();
    target.close().await;
    let applied = match applied {
        Ok(a) => a,
        Err(e) => {
            return Verdict::unreachable(
                format!("cannot read applied migrations from {shown}: {e}"),
                json!({ "database": shown }),
            );
        }
    };

    let changed: Vec<i64> = applied
        .iter()
        .filter(|(v, sum)| {
            ups.get(v)
                .is_some_and(|m| m.checksum.as_ref() != sum.as_slice())
        })
        .map(|(v, _)| *v)
        .collect();
    let unknown: Vec<i64> = applied
        .keys()
        .filter(|v| !ups.contains_key(v))
        .copied()
        .collect();
    let pending: Vec<i64> = ups
        .keys()
        .filter(|v| !applied.contains_key(v))
        .copied()
        .collect();
    let irreversible: Vec<i64> = pending
        .iter()
        .filter(|v| !downs.contains(v))
        .copied()
        .collect();
    let base = applied
        .keys()
        .copied()
        .filter(|v| ups.contains_key(v))
        .max()
        .unwrap_or(0);

    let mut failures = Vec::new();
    let mut warnings = Vec::new();
    if !changed.is_empty() {
        failures.push(format!(
            "applied migration(s) {changed:?} changed since they ran on {shown}"
        ));
    }
    if !unknown.is_empty() {
        failures.push(format!(
            "{shown} has migration(s) {unknown:?} that are not in {}",
            p.migrations
        ));
    }

    // The shadow database: base schema, all applied, rolled back, applied again.
    let mut shadow_evidence = json!(null);
    if !pending.is_empty() {
        let shadow = match Shadow::create(&url, p.shadow.as_deref()).await {
            Ok(s) => s,
            Err(e) => return Verdict::unreachable(e, json!({ "database": shown })),
        };
        let result: Result<serde_json::Value, String> = async {
            let base_migrator = subset(&migrator, |m| m.version <= base);
            on_pool!(&shadow.pool, sp => base_migrator.run(sp).await).map_err(|e| format!("applying the already-applied migrations: {e}"))?;
            let before = schema_dump(&shadow.pool).await.map_err(|e| e.to_string())?;
            let t = Instant::now();
            on_pool!(&shadow.pool, sp => migrator.run(sp).await).map_err(|e| format!("applying pending migrations: {e}"))?;
            let apply_ms = t.elapsed().as_millis() as u64;
            let first = schema_dump(&shadow.pool).await.map_err(|e| e.to_string())?;
            let reversible_from = irreversible.iter().max().copied().unwrap_or(base).max(base);
            on_pool!(&shadow.pool, sp => migrator.undo(sp, reversible_from).await).map_err(|e| format!("rolling back: {e}"))?;
            let rolled_back = schema_dump(&shadow.pool).await.map_err(|e| e.to_string())?;
            on_pool!(&shadow.pool, sp => migrator.run(sp).await).map_err(|e| format!("applying again after the rollback: {e}"))?;
            let again = schema_dump(&shadow.pool).await.map_err(|e| e.to_string())?;
            Ok(json!({
                "apply_ms": apply_ms,
                "rolled_back_to": reversible_from,
                "rollback_restores_schema": irreversible.is_empty().then_some(rolled_back == before),
                "reapply_gives_same_schema": again == first,
            }))
        }
        .await;
        shadow.remove().await;
        match result {
            Ok(ev) => {
                if ev["rollback_restores_schema"] == json!(false) {
                    failures.push("rolling back the pending migrations does not restore the schema before them".into());
                }
                if ev["reapply_gives_same_schema"] == json!(false) {
                    failures
                        .push("applying again after the rollback gives a different schema".into());
                }
                shadow_evidence = ev;
            }
            Err(e) => failures.push(e),
        }
    }
    if !irreversible.is_empty() {
        let msg =
            format!("pending migration(s) {irreversible:?} cannot be rolled back (no .down.sql)");
        if p.allow_irreversible {
            warnings.push(msg)
        } else {
            failures.push(msg)
        }
    }

    let mut findings = Vec::new();
    if p.lint && backend == copilot_db::Backend::Postgres {
        for v in &pending {
            if let Some(m) = ups.get(v) {
                findings.extend(lint(*v, &m.sql));
            }
        }
    }
    for f in &findings {
        let msg = format!("{} ({}): {}", f.version, f.rule, f.message);
        if f.blocking {
            failures.push(msg)
        } else {
            warnings.push(msg)
        }
    }

    let evidence = json!({
        "source": format!("{} against {shown} ({backend:?})", p.migrations),
        "applied": applied.keys().collect::<Vec<_>>(),
        "pending": pending,
        "changed": changed,
        "unknown": unknown,
        "irreversible": irreversible,
        "shadow": shadow_evidence,
        "lint": findings,
        "elapsed_ms": started.elapsed().as_millis() as u64,
    });
    if !failures.is_empty() {
        Verdict::fail(failures.join("; "), evidence)
    } else if !warnings.is_empty() {
        Verdict::warn(warnings.join("; "), evidence)
    } else if pending.is_empty() {
        Verdict::pass(
            format!("no pending migrations; {} applied unchanged", applied.len()),
            evidence,
        )
    } else {
        Verdict::pass(
            format!(
                "{} pending migration(s) apply, roll back and re-apply cleanly",
                pending.len()
            ),
            evidence,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lint_catches_blocking_changes() {
        let rules = |sql: &str| lint(1, sql).into_iter().map(|f| f.rule).collect::<Vec<_>>();
        assert_eq!(
            rules("ALTER TABLE shops ADD COLUMN plan TEXT NOT NULL;"),
            ["add-not-null-column"]
        );
        assert!(
            rules("ALTER TABLE shops ADD COLUMN plan TEXT NOT NULL DEFAULT 'basic';").is_empty()
        );
        assert_eq!(rules("alter table shops drop column plan"), ["drop-column"]);
        assert_eq!(
            rules("ALTER TABLE shops RENAME COLUMN plan TO tier"),
            ["rename"]
        );
        assert_eq!(
            rules("ALTER TABLE shops ALTER COLUMN plan TYPE varchar(10)"),
            ["change-column-type"]
        );
        assert_eq!(
            rules("CREATE INDEX shops_plan ON shops (plan)"),
            ["index-without-concurrently"]
        );
        assert!(rules("CREATE INDEX CONCURRENTLY shops_plan ON shops (plan)").is_empty());
        assert!(
            rules("CREATE TABLE t (id int); CREATE INDEX t_id ON t (id)").is_empty(),
            "new tables may be indexed"
        );
        assert_eq!(
            rules(
                "ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (shop) REFERENCES shops (shop)"
            ),
            ["foreign-key-without-not-valid"]
        );
        assert!(rules("ALTER TABLE orders ADD CONSTRAINT fk FOREIGN KEY (shop) REFERENCES shops (shop) NOT VALID").is_empty());
        assert_eq!(rules("DROP TABLE legacy"), ["drop-table"]);
        assert_eq!(
            lint(1, "ALTER TABLE t ALTER COLUMN c SET NOT NULL")
                .iter()
                .map(|f| f.blocking)
                .collect::<Vec<_>>(),
            [false]
        );
        assert!(
            rules("-- DROP TABLE x\nCREATE TABLE y (id int)").is_empty(),
            "comments are ignored"
        );
    }

    #[test]
    fn database_names_are_swapped() {
        assert_eq!(
            with_database("postgres://u@h:5432/app?sslmode=require", "s"),
            "postgres://u@h:5432/s?sslmode=require"
        );
        assert_eq!(with_database("postgres://u@h", "s"), "postgres://u@h/s");
    }
}
