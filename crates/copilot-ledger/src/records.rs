//! Releases, deployments, steps, traffic, gate runs, approvals and the audit log.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;

use super::{Ledger, LedgerError, Result, new_id, on_pool, read, write};

/// An immutable artifact that moves from arena to arena.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Release {
    pub id: String,
    pub version: String,
    pub image: String,
    pub digest: Option<String>,
    pub git_sha: Option<String>,
    pub config_hash: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    /// Non-secret variables the release runs with, on top of the arena's.
    pub env: Json<std::collections::BTreeMap<String, String>>,
    /// The schema migrations it was built with, when recorded.
    pub migrations: Option<Json<Vec<MigrationRecord>>>,
}

/// One schema migration as a release knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct MigrationRecord {
    pub version: i64,
    pub description: String,
    /// It has a down migration.
    pub reversible: bool,
    /// SHA-384 of the up migration, hex (as sqlx records it).
    pub checksum: String,
}

#[derive(Clone, Debug)]
pub struct NewRelease {
    pub env: std::collections::BTreeMap<String, String>,
    pub migrations: Option<Vec<MigrationRecord>>,
    pub version: String,
    pub image: String,
    pub digest: Option<String>,
    pub git_sha: Option<String>,
    pub config_hash: String,
    pub created_by: String,
}

/// One attempt to put a release into an arena.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Deployment {
    pub id: String,
    pub arena: String,
    pub release_id: String,
    pub previous_release_id: Option<String>,
    /// `deploy`, `promote`, `hotfix` or `rollback`.
    pub kind: String,
    pub strategy: String,
    pub source_arena: Option<String>,
    /// `running`, `paused`, `succeeded`, `failed`, `rolled-back` or `aborted`.
    pub state: String,
    pub reason: Option<String>,
    pub created_by: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Deployment {
    pub fn is_active(&self) -> bool {
        matches!(self.state.as_str(), "running" | "paused")
    }
}

#[derive(Clone, Debug)]
pub struct NewDeployment {
    pub arena: String,
    pub release_id: String,
    pub previous_release_id: Option<String>,
    pub kind: String,
    pub strategy: String,
    pub source_arena: Option<String>,
    pub reason: Option<String>,
    pub created_by: String,
}

/// A deployment together with its release, for listings.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct DeploymentRow {
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub deployment: Deployment,
    pub version: String,
    pub image: String,
}

/// One step of a deployment: its intent is written before it acts.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Step {
    pub deployment_id: String,
    pub seq: i32,
    pub name: String,
    /// `started`, `done`, `failed` or `skipped`.
    pub state: String,
    pub intent: Json<Value>,
    pub outcome: Option<Json<Value>>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The platform's handle of what the step started, once it took it.
    pub handle: Option<Json<Value>>,
}

/// The traffic split of an arena as last recorded.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Traffic {
    pub arena: String,
    pub split: Json<Value>,
    pub deployment_id: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// One gate's verdict and what it measured.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct GateResult {
    pub gate: String,
    pub kind: String,
    pub outcome: String,
    pub summary: String,
    pub evidence: Json<Value>,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i64,
}

/// A run of an arena's gates for one phase.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct GateRun {
    pub id: String,
    pub arena: String,
    pub release_id: Option<String>,
    pub deployment_id: Option<String>,
    pub phase: String,
    pub outcome: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Approval {
    pub id: String,
    pub arena: String,
    pub release_id: String,
    pub approver: String,
    pub note: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Who did what, when and why. Rows are never updated or deleted.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub arena: Option<String>,
    pub subject: Option<String>,
    pub reason: Option<String>,
    pub detail: Json<Value>,
}

#[derive(Clone, Debug, Default)]
pub struct NewAudit {
    pub actor: String,
    pub action: String,
    pub arena: Option<String>,
    pub subject: Option<String>,
    pub reason: Option<String>,
    pub detail: Value,
}

const RELEASE_COLUMNS: &str =
    "id, version, image, digest, git_sha, config_hash, created_by, created_at, env, migrations";
const DEPLOYMENT_COLUMNS: &str = "d.id, d.arena, d.release_id, d.previous_release_id, d.kind, d.strategy, d.source_arena, d.state, d.reason, d.created_by, d.started_at, d.finished_at";

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

impl Ledger {
    // ---- releases -------------------------------------------------------

    pub async fn create_release(&self, r: &NewRelease, now: DateTime<Utc>) -> Result<Release> {
        let id = new_id("rel");
        let sql = format!(
            "INSERT INTO releases ({RELEASE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING {RELEASE_COLUMNS}"
        );
        let res = write!(self, conn => sqlx::query_as::<_, Release>(&sql)
            .bind(&id)
            .bind(&r.version)
            .bind(&r.image)
            .bind(&r.digest)
            .bind(&r.git_sha)
            .bind(&r.config_hash)
            .bind(&r.created_by)
            .bind(now)
            .bind(Json(&r.env))
            .bind(r.migrations.as_ref().map(Json))
            .fetch_one(conn)
            .await?);
        res.map_err(|e| match e {
            LedgerError::Query(q) if is_unique_violation(&q) => {
                LedgerError::ReleaseExists(r.version.clone())
            }
            e => e,
        })
    }

    /// Find a release by id, id prefix (6+ characters), version or image.
    pub async fn find_release(&self, reference: &str) -> Result<Release> {
        let sql = format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE id = $1 OR version = $1 OR image = $1 \
             OR (length($1) >= 6 AND id LIKE $2) ORDER BY created_at DESC"
        );
        let pattern = format!("rel_{}%", reference.trim_start_matches("rel_"));
        let rows = read!(self, pool => sqlx::query_as::<_, Release>(&sql)
            .bind(reference)
            .bind(&pattern)
            .fetch_all(pool)
            .await)?;
        if let Some(exact) = rows
            .iter()
            .find(|r| r.id == reference || r.version == reference)
        {
            return Ok(exact.clone());
        }
        match rows.len() {
            0 => Err(LedgerError::ReleaseNotFound(reference.to_string())),
            1 => Ok(rows.into_iter().next().expect("one row")),
            _ if rows.iter().all(|r| r.image == reference) => {
                Ok(rows.into_iter().next().expect("newest"))
            }
            _ => Err(LedgerError::AmbiguousRelease {
                reference: reference.to_string(),
                candidates: rows.into_iter().map(|r| r.version).collect(),
            }),
        }
    }

    pub async fn release_by_id(&self, id: &str) -> Result<Option<Release>> {
        let sql = format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE id = $1");
        Ok(
            read!(self, pool => sqlx::query_as::<_, Release>(&sql).bind(id).fetch_optional(pool).await)?,
        )
    }

    pub async fn list_releases(&self, limit: i64) -> Result<Vec<Release>> {
        let sql = format!(
            "SELECT {RELEASE_COLUMNS} FROM releases ORDER BY created_at DESC, id DESC LIMIT $1"
        );
        Ok(
            read!(self, pool => sqlx::query_as::<_, Release>(&sql).bind(limit).fetch_all(pool).await)?,
        )
    }

    // ---- deployments ----------------------------------------------------

    pub async fn create_deployment(
        &self,
        d: &NewDeployment,
        now: DateTime<Utc>,
    ) -> Result<Deployment> {
        let id = new_id("dep");
        let sql = "INSERT INTO deployments (id, arena, release_id, previous_release_id, kind, strategy, source_arena, state, reason, created_by, started_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, 'running', $8, $9, $10) \
                   RETURNING id, arena, release_id, previous_release_id, kind, strategy, source_arena, state, reason, created_by, started_at, finished_at";
        Ok(write!(self, conn => sqlx::query_as::<_, Deployment>(sql)
            .bind(&id)
            .bind(&d.arena)
            .bind(&d.release_id)
            .bind(&d.previous_release_id)
            .bind(&d.kind)
            .bind(&d.strategy)
            .bind(&d.source_arena)
            .bind(&d.reason)
            .bind(&d.created_by)
            .bind(now)
            .fetch_one(conn)
            .await?)?)
    }

    /// Move a deployment to a new state; a final state also sets `finished_at`.
    pub async fn set_deployment_state(
        &self,
        id: &str,
        state: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let finished = (!matches!(state, "running" | "paused")).then_some(now);
        write!(self, conn => sqlx::query("UPDATE deployments SET state = $1, finished_at = $2 WHERE id = $3")
            .bind(state)
            .bind(finished)
            .bind(id)
            .execute(conn)
            .await?
            .rows_affected())?;
        Ok(())
    }

    pub async fn deployment(&self, id: &str) -> Result<Option<DeploymentRow>> {
        let sql = format!(
            "SELECT {DEPLOYMENT_COLUMNS}, r.version, r.image FROM deployments d JOIN releases r ON r.id = d.release_id \
             WHERE d.id = $1 OR d.id LIKE $2"
        );
        let pattern = format!("dep_{}%", id.trim_start_matches("dep_"));
        let rows = read!(self, pool => sqlx::query_as::<_, DeploymentRow>(&sql).bind(id).bind(&pattern).fetch_all(pool).await)?;
        Ok(if rows.len() == 1 {
            rows.into_iter().next()
        } else {
            rows.into_iter().find(|r| r.deployment.id == id)
        })
    }

    /// Deployments, newest first (in the order the ledger recorded them, never
    /// by a command's clock, which may be pinned or skewed), optionally of one arena.
    pub async fn history(&self, arena: Option<&str>, limit: i64) -> Result<Vec<DeploymentRow>> {
        let filter = optional_eq("d.arena", 1, arena);
        let sql = format!(
            "SELECT {DEPLOYMENT_COLUMNS}, r.version, r.image FROM deployments d JOIN releases r ON r.id = d.release_id \
             WHERE {filter} ORDER BY d.seq DESC LIMIT $2"
        );
        Ok(
            read!(self, pool => sqlx::query_as::<_, DeploymentRow>(&sql).bind(arena).bind(limit).fetch_all(pool).await)?,
        )
    }

    /// The release serving an arena: that of its latest recorded succeeded
    /// deployment, unless the arena was taken down since (its recorded
    /// split is empty).
    pub async fn live(&self, arena: &str) -> Result<Option<DeploymentRow>> {
        let sql = format!(
            "SELECT {DEPLOYMENT_COLUMNS}, r.version, r.image FROM deployments d JOIN releases r ON r.id = d.release_id \
             WHERE d.arena = $1 AND d.state = 'succeeded' ORDER BY d.seq DESC LIMIT 1"
        );
        let live = read!(self, pool => sqlx::query_as::<_, DeploymentRow>(&sql).bind(arena).fetch_optional(pool).await)?;
        let taken_down = self
            .traffic(arena)
            .await?
            .is_some_and(|t| t.split.0.as_object().is_some_and(|o| o.is_empty()));
        Ok(live.filter(|_| !taken_down))
    }

    /// The deployment in progress in an arena, if any.
    pub async fn active_deployment(&self, arena: &str) -> Result<Option<DeploymentRow>> {
        let sql = format!(
            "SELECT {DEPLOYMENT_COLUMNS}, r.version, r.image FROM deployments d JOIN releases r ON r.id = d.release_id \
             WHERE d.arena = $1 AND d.state IN ('running', 'paused') ORDER BY d.seq DESC LIMIT 1"
        );
        Ok(
            read!(self, pool => sqlx::query_as::<_, DeploymentRow>(&sql).bind(arena).fetch_optional(pool).await)?,
        )
    }

    // ---- steps ----------------------------------------------------------

    /// Record what a step is about to do, before it does it.
    pub async fn start_step(
        &self,
        deployment_id: &str,
        name: &str,
        intent: &Value,
        now: DateTime<Utc>,
    ) -> Result<Step> {
        let sql = "INSERT INTO deployment_steps (deployment_id, seq, name, state, intent, started_at) \
                   VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM deployment_steps WHERE deployment_id = $1), $2, 'started', $3, $4) \
                   RETURNING deployment_id, seq, name, state, intent, outcome, started_at, finished_at, handle";
        write!(self, conn => sqlx::query_as::<_, Step>(sql)
            .bind(deployment_id)
            .bind(name)
            .bind(Json(intent))
            .bind(now)
            .fetch_one(conn)
            .await?)
    }

    /// Record how a step ended.
    pub async fn finish_step(
        &self,
        deployment_id: &str,
        seq: i32,
        state: &str,
        outcome: &Value,
        now: DateTime<Utc>,
    ) -> Result<()> {
        write!(self, conn => sqlx::query("UPDATE deployment_steps SET state = $1, outcome = $2, finished_at = $3 WHERE deployment_id = $4 AND seq = $5")
            .bind(state)
            .bind(Json(outcome))
            .bind(now)
            .bind(deployment_id)
            .bind(seq)
            .execute(conn)
            .await?
            .rows_affected())?;
        Ok(())
    }

    /// Record the platform's handle of what a started step set going, before
    /// the step waits for it.
    pub async fn record_handle(&self, deployment_id: &str, seq: i32, handle: &Value) -> Result<()> {
        write!(self, conn => sqlx::query("UPDATE deployment_steps SET handle = $1 WHERE deployment_id = $2 AND seq = $3")
            .bind(Json(handle))
            .bind(deployment_id)
            .bind(seq)
            .execute(conn)
            .await?
            .rows_affected())?;
        Ok(())
    }

    /// The last handle recorded for `release_id` running in `arena`: what
    /// the platform knows that release as (for a rollback to it). A handle
    /// that names its release (`release_id`) counts for that release, in
    /// whichever deployment it was recorded (a Render rollback deploy made
    /// while another release's deployment undid itself).
    pub async fn last_handle(&self, arena: &str, release_id: &str) -> Result<Option<Value>> {
        Ok(self
            .handles_with_release(arena)
            .await?
            .into_iter()
            .find(
                |(h, deployed)| match h.get("release_id").and_then(Value::as_str) {
                    Some(named) => named == release_id,
                    None => deployed == release_id,
                },
            )
            .map(|(h, _)| h))
    }

    /// Every handle recorded in `arena`, newest first (the last 500): what
    /// the platform knows copilot's operations as.
    pub async fn handles(&self, arena: &str) -> Result<Vec<Value>> {
        Ok(self
            .handles_with_release(arena)
            .await?
            .into_iter()
            .map(|(h, _)| h)
            .collect())
    }

    async fn handles_with_release(&self, arena: &str) -> Result<Vec<(Value, String)>> {
        let sql = "SELECT s.handle, d.release_id FROM deployment_steps s JOIN deployments d ON d.id = s.deployment_id \
                   WHERE d.arena = $1 AND s.handle IS NOT NULL \
                   ORDER BY d.seq DESC, s.seq DESC LIMIT 500";
        let rows: Vec<(Json<Value>, String)> = read!(self, pool => sqlx::query_as(sql)
            .bind(arena)
            .fetch_all(pool)
            .await)?;
        Ok(rows.into_iter().map(|(h, r)| (h.0, r)).collect())
    }

    /// Close the steps a killed command left `started`: they end `interrupted`
    /// (their intent stays; the command that takes over says what it does).
    pub async fn interrupt_steps(
        &self,
        deployment_id: &str,
        by: &str,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let outcome = serde_json::json!({ "interrupted": true, "taken_over_by": by });
        Ok(
            write!(self, conn => sqlx::query("UPDATE deployment_steps SET state = 'interrupted', outcome = $1, finished_at = $2 WHERE deployment_id = $3 AND state = 'started'")
            .bind(Json(&outcome))
            .bind(now)
            .bind(deployment_id)
            .execute(conn)
            .await?
            .rows_affected())?,
        )
    }

    pub async fn steps(&self, deployment_id: &str) -> Result<Vec<Step>> {
        let sql = "SELECT deployment_id, seq, name, state, intent, outcome, started_at, finished_at, handle FROM deployment_steps WHERE deployment_id = $1 ORDER BY seq";
        Ok(
            read!(self, pool => sqlx::query_as::<_, Step>(sql).bind(deployment_id).fetch_all(pool).await)?,
        )
    }

    // ---- traffic --------------------------------------------------------

    pub async fn set_traffic(
        &self,
        arena: &str,
        split: &Value,
        deployment_id: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let sql = "INSERT INTO traffic (arena, split, deployment_id, updated_at) VALUES ($1, $2, $3, $4) \
                   ON CONFLICT (arena) DO UPDATE SET split = excluded.split, deployment_id = excluded.deployment_id, updated_at = excluded.updated_at";
        write!(self, conn => sqlx::query(sql).bind(arena).bind(Json(split)).bind(deployment_id).bind(now).execute(conn).await?.rows_affected())?;
        Ok(())
    }

    pub async fn traffic(&self, arena: &str) -> Result<Option<Traffic>> {
        let sql = "SELECT arena, split, deployment_id, updated_at FROM traffic WHERE arena = $1";
        Ok(
            read!(self, pool => sqlx::query_as::<_, Traffic>(sql).bind(arena).fetch_optional(pool).await)?,
        )
    }

    // ---- gate runs ------------------------------------------------------

    /// Store a gate run and all its results in one transaction.
    pub async fn record_gate_run(&self, run: &GateRun, results: &[GateResult]) -> Result<()> {
        write!(self, conn => {
            sqlx::query("INSERT INTO gate_runs (id, arena, release_id, deployment_id, phase, outcome, started_at, finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                .bind(&run.id)
                .bind(&run.arena)
                .bind(&run.release_id)
                .bind(&run.deployment_id)
                .bind(&run.phase)
                .bind(&run.outcome)
                .bind(run.started_at)
                .bind(run.finished_at)
                .execute(&mut *conn)
                .await?;
            for r in results {
                sqlx::query("INSERT INTO gate_results (gate_run_id, gate, kind, outcome, summary, evidence, started_at, duration_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
                    .bind(&run.id)
                    .bind(&r.gate)
                    .bind(&r.kind)
                    .bind(&r.outcome)
                    .bind(&r.summary)
                    .bind(&r.evidence)
                    .bind(r.started_at)
                    .bind(r.duration_ms)
                    .execute(&mut *conn)
                    .await?;
            }
        })?;
        Ok(())
    }

    pub async fn gate_runs(
        &self,
        arena: Option<&str>,
        deployment_id: Option<&str>,
        limit: i64,
    ) -> Result<Vec<GateRun>> {
        let sql = format!(
            "SELECT id, arena, release_id, deployment_id, phase, outcome, started_at, finished_at FROM gate_runs \
             WHERE {} AND {} ORDER BY started_at DESC, id DESC LIMIT $3",
            optional_eq("arena", 1, arena),
            optional_eq("deployment_id", 2, deployment_id)
        );
        Ok(
            read!(self, pool => sqlx::query_as::<_, GateRun>(&sql).bind(arena).bind(deployment_id).bind(limit).fetch_all(pool).await)?,
        )
    }

    pub async fn gate_results(&self, gate_run_id: &str) -> Result<Vec<GateResult>> {
        let sql = "SELECT gate, kind, outcome, summary, evidence, started_at, duration_ms FROM gate_results WHERE gate_run_id = $1 ORDER BY gate";
        Ok(
            read!(self, pool => sqlx::query_as::<_, GateResult>(sql).bind(gate_run_id).fetch_all(pool).await)?,
        )
    }

    // ---- approvals ------------------------------------------------------

    pub async fn approve(
        &self,
        arena: &str,
        release_id: &str,
        approver: &str,
        note: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Approval> {
        let sql = "INSERT INTO approvals (id, arena, release_id, approver, note, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
                   RETURNING id, arena, release_id, approver, note, created_at";
        Ok(write!(self, conn => sqlx::query_as::<_, Approval>(sql)
            .bind(new_id("apr"))
            .bind(arena)
            .bind(release_id)
            .bind(approver)
            .bind(note)
            .bind(now)
            .fetch_one(conn)
            .await?)?)
    }

    pub async fn approvals(&self, arena: &str, release_id: &str) -> Result<Vec<Approval>> {
        let sql = "SELECT id, arena, release_id, approver, note, created_at FROM approvals WHERE arena = $1 AND release_id = $2 ORDER BY created_at";
        Ok(
            read!(self, pool => sqlx::query_as::<_, Approval>(sql).bind(arena).bind(release_id).fetch_all(pool).await)?,
        )
    }

    // ---- audit ----------------------------------------------------------

    pub async fn audit(&self, entry: &NewAudit, now: DateTime<Utc>) -> Result<()> {
        let sql = "INSERT INTO audit_log (at, actor, action, arena, subject, reason, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)";
        let mut detail = entry.detail.clone();
        if let Some(pinned) = self.pinned_clock {
            let clock = serde_json::json!({ "copilot_now": pinned, "real": Utc::now() });
            match &mut detail {
                Value::Object(map) => {
                    map.insert("clock".into(), clock);
                }
                Value::Null => detail = serde_json::json!({ "clock": clock }),
                other => detail = serde_json::json!({ "value": other.take(), "clock": clock }),
            }
        }
        write!(self, conn => sqlx::query(sql)
            .bind(now)
            .bind(&entry.actor)
            .bind(&entry.action)
            .bind(&entry.arena)
            .bind(&entry.subject)
            .bind(&entry.reason)
            .bind(Json(&detail))
            .execute(conn)
            .await?
            .rows_affected())?;
        Ok(())
    }

    pub async fn audit_log(&self, arena: Option<&str>, limit: i64) -> Result<Vec<AuditEntry>> {
        let sql = format!(
            "SELECT id, at, actor, action, arena, subject, reason, detail FROM audit_log WHERE {} ORDER BY id DESC LIMIT $2",
            optional_eq("arena", 1, arena)
        );
        Ok(
            read!(self, pool => sqlx::query_as::<_, AuditEntry>(&sql).bind(arena).bind(limit).fetch_all(pool).await)?,
        )
    }

    /// Try to change the audit log; the database refuses. Used by tests.
    #[doc(hidden)]
    pub async fn tamper_with_audit_log(&self) -> Result<u64> {
        let r = on_pool!(&self.pool, pool => sqlx::query("UPDATE audit_log SET reason = 'rewritten'").execute(pool).await.map(|r| r.rows_affected()))?;
        Ok(r)
    }
}

/// `column = $n` when filtering by `value`, else a condition that holds and
/// still takes the (NULL) parameter, so placeholders keep their numbers. Two
/// statements rather than `($n IS NULL OR column = $n)`, which neither
/// SQLite nor PostgreSQL can answer from an index on `column`.
pub(crate) fn optional_eq(column: &str, n: usize, value: Option<&str>) -> String {
    match value {
        Some(_) => format!("{column} = ${n}"),
        None => format!("CAST(${n} AS TEXT) IS NULL"),
    }
}

/// One earlier result of a gate, for gates that judge a window.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct GateSample {
    pub started_at: DateTime<Utc>,
    pub outcome: String,
    pub summary: String,
}

impl Ledger {
    /// Results of one gate in one arena since `since`, newest first.
    pub async fn gate_history(
        &self,
        arena: &str,
        gate: &str,
        since: DateTime<Utc>,
    ) -> Result<Vec<GateSample>> {
        let sql = "SELECT r.started_at, r.outcome, r.summary FROM gate_results r JOIN gate_runs g ON g.id = r.gate_run_id \
                   WHERE g.arena = $1 AND r.gate = $2 AND r.started_at >= $3 ORDER BY r.started_at DESC LIMIT 1000";
        Ok(
            read!(self, pool => sqlx::query_as::<_, GateSample>(sql).bind(arena).bind(gate).bind(since).fetch_all(pool).await)?,
        )
    }
}
