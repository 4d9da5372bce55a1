//! Incidents: seed 004's communication fields, the updates given, and the
//! instants seed 003's rollback time targets are measured between.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;

use super::{Ledger, LedgerError, Result, read, write};

/// One incident as recorded.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Incident {
    pub id: String,
    pub arena: String,
    /// 1, 2 or 3.
    pub severity: i64,
    /// `investigating`, `identified` or `resolved`.
    pub status: String,
    pub impact: String,
    pub resolution: Option<String>,
    pub eta: Option<String>,
    /// `manual` or `analysis`.
    pub source: String,
    pub release_id: Option<String>,
    pub deployment_id: Option<String>,
    pub rollback_deployment_id: Option<String>,
    pub started_at: DateTime<Utc>,
    pub detected_at: DateTime<Utc>,
    pub decision_due_at: Option<DateTime<Utc>>,
    pub decided_at: Option<DateTime<Utc>>,
    pub mitigated_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    pub opened_by: String,
    pub evidence: Json<Value>,
    pub updated_at: DateTime<Utc>,
}

impl Incident {
    pub fn is_open(&self) -> bool {
        self.status != "resolved"
    }
}

/// An incident about to be opened.
#[derive(Clone, Debug)]
pub struct NewIncident {
    pub arena: String,
    pub severity: i64,
    pub status: String,
    pub impact: String,
    pub source: String,
    pub release_id: Option<String>,
    pub deployment_id: Option<String>,
    pub started_at: DateTime<Utc>,
    pub detected_at: DateTime<Utc>,
    pub decision_due_at: Option<DateTime<Utc>>,
    pub opened_by: String,
    pub evidence: Value,
}

/// A status update of an incident, as given.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct IncidentUpdate {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub status: String,
    pub resolution: Option<String>,
    pub eta: Option<String>,
    pub note: Option<String>,
}

/// What an update changes; `None` keeps the field as it is.
#[derive(Clone, Debug, Default)]
pub struct IncidentChange {
    pub status: Option<String>,
    pub resolution: Option<String>,
    pub eta: Option<String>,
    pub note: Option<String>,
}

const INCIDENT_COLUMNS: &str = "id, arena, severity, status, impact, resolution, eta, source, release_id, deployment_id, rollback_deployment_id, started_at, detected_at, decision_due_at, decided_at, mitigated_at, resolved_at, opened_by, evidence, updated_at";

impl Ledger {
    /// Open incident `i`; its first update records who opened it.
    pub async fn open_incident(&self, i: &NewIncident, now: DateTime<Utc>) -> Result<Incident> {
        let id = super::new_id("inc");
        let sql = format!(
            "INSERT INTO incidents (id, arena, severity, status, impact, source, release_id, deployment_id, started_at, detected_at, decision_due_at, opened_by, evidence, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING {INCIDENT_COLUMNS}"
        );
        Ok(write!(self, conn => {
            let row = sqlx::query_as::<_, Incident>(&sql)
                .bind(&id)
                .bind(&i.arena)
                .bind(i.severity)
                .bind(&i.status)
                .bind(&i.impact)
                .bind(&i.source)
                .bind(&i.release_id)
                .bind(&i.deployment_id)
                .bind(i.started_at)
                .bind(i.detected_at)
                .bind(i.decision_due_at)
                .bind(&i.opened_by)
                .bind(Json(&i.evidence))
                .bind(now)
                .fetch_one(&mut *conn)
                .await?;
            sqlx::query("INSERT INTO incident_updates (incident_id, at, actor, status, note) VALUES ($1, $2, $3, $4, $5)")
                .bind(&id)
                .bind(now)
                .bind(&i.opened_by)
                .bind(&i.status)
                .bind(format!("opened: {}", i.impact))
                .execute(&mut *conn)
                .await?;
            row
        })?)
    }

    /// Incident `id`, or `IncidentNotFound`.
    pub async fn incident(&self, id: &str) -> Result<Incident> {
        let sql = format!("SELECT {INCIDENT_COLUMNS} FROM incidents WHERE id = $1");
        read!(self, pool => sqlx::query_as::<_, Incident>(&sql).bind(id).fetch_optional(pool).await)?
            .ok_or_else(|| LedgerError::IncidentNotFound(id.to_string()))
    }

    /// Incidents newest first: of one arena, and only the open ones unless `all`.
    pub async fn incidents(&self, arena: Option<&str>, all: bool) -> Result<Vec<Incident>> {
        let sql = format!(
            "SELECT {INCIDENT_COLUMNS} FROM incidents WHERE {} AND ($2 OR status <> 'resolved') \
             ORDER BY started_at DESC, id DESC",
            super::records::optional_eq("arena", 1, arena)
        );
        Ok(read!(self, pool => sqlx::query_as::<_, Incident>(&sql)
            .bind(arena)
            .bind(all)
            .fetch_all(pool)
            .await)?)
    }

    /// Apply `change` to incident `id` and record it as an update by `actor`.
    /// Moving it out of `investigating` is a decision (to fix forward, or
    /// the rollback already recorded), which a SEV2's deadline waits for.
    pub async fn update_incident(
        &self,
        id: &str,
        change: &IncidentChange,
        actor: &str,
        now: DateTime<Utc>,
    ) -> Result<Incident> {
        let sql = format!(
            "UPDATE incidents SET status = COALESCE(CAST($1 AS TEXT), status), resolution = COALESCE(CAST($2 AS TEXT), resolution), \
               eta = COALESCE(CAST($3 AS TEXT), eta), \
               resolved_at = CASE WHEN CAST($1 AS TEXT) = 'resolved' THEN COALESCE(resolved_at, $4) \
                 WHEN CAST($1 AS TEXT) IS NULL THEN resolved_at ELSE NULL END, \
               decided_at = CASE WHEN decided_at IS NULL AND CAST($1 AS TEXT) IN ('identified', 'resolved') THEN $4 ELSE decided_at END, \
               updated_at = $4 \
             WHERE id = $5 RETURNING {INCIDENT_COLUMNS}"
        );
        let row = write!(self, conn => {
            let row = sqlx::query_as::<_, Incident>(&sql)
                .bind(&change.status)
                .bind(&change.resolution)
                .bind(&change.eta)
                .bind(now)
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
            if let Some(r) = &row {
                sqlx::query("INSERT INTO incident_updates (incident_id, at, actor, status, resolution, eta, note) VALUES ($1, $2, $3, $4, $5, $6, $7)")
                    .bind(id)
                    .bind(now)
                    .bind(actor)
                    .bind(&r.status)
                    .bind(&change.resolution)
                    .bind(&change.eta)
                    .bind(&change.note)
                    .execute(&mut *conn)
                    .await?;
            }
            row
        })?;
        row.ok_or_else(|| LedgerError::IncidentNotFound(id.to_string()))
    }

    /// The rollback `deployment` of the open incidents of `arena` that have
    /// none yet: decided at `decided`, traffic back at `mitigated`.
    /// Returns the incidents it was recorded on.
    pub async fn incident_rolled_back(
        &self,
        arena: &str,
        deployment: &str,
        decided: DateTime<Utc>,
        mitigated: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        Ok(write!(self, conn => sqlx::query_scalar::<_, String>(
            "UPDATE incidents SET rollback_deployment_id = $1, decided_at = COALESCE(decided_at, $2), mitigated_at = $3, updated_at = $3 \
             WHERE arena = $4 AND status <> 'resolved' AND rollback_deployment_id IS NULL RETURNING id")
            .bind(deployment)
            .bind(decided)
            .bind(mitigated)
            .bind(arena)
            .fetch_all(conn)
            .await?)?)
    }

    /// The updates of incident `id`, oldest first.
    pub async fn incident_updates(&self, id: &str) -> Result<Vec<IncidentUpdate>> {
        Ok(read!(self, pool => sqlx::query_as::<_, IncidentUpdate>(
            "SELECT at, actor, status, resolution, eta, note FROM incident_updates WHERE incident_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(pool)
            .await)?)
    }
}
