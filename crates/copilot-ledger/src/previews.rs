//! Preview arenas (one instance of a preview arena per pull request) and
//! what copilot owes GitHub (the outbox).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::types::Json;

use super::{Ledger, Result, read, write};

/// One preview as `copilot preview up` recorded it.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct Preview {
    /// The arena instance (`preview-pr-7`).
    pub name: String,
    /// The preview arena it is an instance of.
    pub arena: String,
    pub pr: i64,
    /// The platform name (`copilot-pr-7`).
    pub platform_name: String,
    /// What the instance was made with (the local router's port).
    pub settings: Json<Value>,
    pub release_id: Option<String>,
    pub url: Option<String>,
    /// `up`, `removing` (claimed by one remover) or `removed`.
    pub state: String,
    pub claimed_by: Option<String>,
    pub removed_reason: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub removed_at: Option<DateTime<Utc>>,
}

/// A preview about to be created or updated.
#[derive(Clone, Debug)]
pub struct NewPreview {
    pub name: String,
    pub arena: String,
    pub pr: i64,
    pub platform_name: String,
    pub settings: Value,
    pub created_by: String,
    pub expires_at: DateTime<Utc>,
}

const PREVIEW_COLUMNS: &str = "name, arena, pr, platform_name, settings, release_id, url, state, claimed_by, removed_reason, created_by, created_at, updated_at, expires_at, removed_at";

impl Ledger {
    /// Record that preview `p` is (about to be) up: a new row, or the
    /// removed one of the same name brought back, or the live one with a
    /// new expiry. Written before the platform is touched.
    pub async fn upsert_preview(&self, p: &NewPreview, now: DateTime<Utc>) -> Result<Preview> {
        let sql = format!(
            "INSERT INTO previews (name, arena, pr, platform_name, settings, state, created_by, created_at, updated_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, 'up', $6, $7, $7, $8) \
             ON CONFLICT (name) DO UPDATE SET settings = excluded.settings, platform_name = excluded.platform_name, \
               state = 'up', claimed_by = NULL, removed_reason = NULL, removed_at = NULL, \
               updated_at = excluded.updated_at, expires_at = excluded.expires_at \
             RETURNING {PREVIEW_COLUMNS}"
        );
        Ok(write!(self, conn => sqlx::query_as::<_, Preview>(&sql)
            .bind(&p.name)
            .bind(&p.arena)
            .bind(p.pr)
            .bind(&p.platform_name)
            .bind(Json(&p.settings))
            .bind(&p.created_by)
            .bind(now)
            .bind(p.expires_at)
            .fetch_one(conn)
            .await?)?)
    }

    /// The release and URL a preview serves after a deploy.
    pub async fn preview_deployed(
        &self,
        name: &str,
        release_id: &str,
        url: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        write!(self, conn => sqlx::query("UPDATE previews SET release_id = $1, url = $2, updated_at = $3 WHERE name = $4")
            .bind(release_id)
            .bind(url)
            .bind(now)
            .bind(name)
            .execute(conn)
            .await?
            .rows_affected())?;
        Ok(())
    }

    pub async fn preview(&self, name: &str) -> Result<Option<Preview>> {
        let sql = format!("SELECT {PREVIEW_COLUMNS} FROM previews WHERE name = $1");
        Ok(
            read!(self, pool => sqlx::query_as::<_, Preview>(&sql).bind(name).fetch_optional(pool).await)?,
        )
    }

    /// Previews by pull request; the removed ones too with `all`.
    pub async fn previews(&self, all: bool) -> Result<Vec<Preview>> {
        let sql = format!(
            "SELECT {PREVIEW_COLUMNS} FROM previews WHERE $1 OR state <> 'removed' ORDER BY arena, pr"
        );
        Ok(read!(self, pool => sqlx::query_as::<_, Preview>(&sql).bind(all).fetch_all(pool).await)?)
    }

    /// Claim preview `name` for removal: true for exactly one claimant of a
    /// live preview, however many ask at once. A claim older than `stale`
    /// (its remover died) may be taken over.
    pub async fn claim_preview(
        &self,
        name: &str,
        claimant: &str,
        reason: &str,
        stale: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let claimed = write!(self, conn => sqlx::query(
            "UPDATE previews SET state = 'removing', claimed_by = $1, removed_reason = $2, updated_at = $3 \
             WHERE name = $4 AND (state = 'up' OR (state = 'removing' AND updated_at < $5))")
            .bind(claimant)
            .bind(reason)
            .bind(now)
            .bind(name)
            .bind(stale)
            .execute(conn)
            .await?
            .rows_affected())?;
        Ok(claimed == 1)
    }

    /// The platform no longer runs the claimed preview.
    pub async fn preview_removed(
        &self,
        name: &str,
        claimant: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        write!(self, conn => sqlx::query(
            "UPDATE previews SET state = 'removed', removed_at = $1, updated_at = $1 WHERE name = $2 AND claimed_by = $3")
            .bind(now)
            .bind(name)
            .bind(claimant)
            .execute(conn)
            .await?
            .rows_affected())?;
        Ok(())
    }

    /// A removal that failed gives its claim back: the preview is live again.
    pub async fn unclaim_preview(
        &self,
        name: &str,
        claimant: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        write!(self, conn => sqlx::query(
            "UPDATE previews SET state = 'up', claimed_by = NULL, removed_reason = NULL, updated_at = $1 WHERE name = $2 AND claimed_by = $3 AND state = 'removing'")
            .bind(now)
            .bind(name)
            .bind(claimant)
            .execute(conn)
            .await?
            .rows_affected())?;
        Ok(())
    }
}

/// One thing copilot tells GitHub.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct OutboxItem {
    pub id: i64,
    pub repository: String,
    /// `deployment`, `status`, `comment`, `check-run`.
    pub kind: String,
    pub deployment_id: Option<String>,
    pub arena: Option<String>,
    pub release_id: Option<String>,
    pub payload: Json<Value>,
    /// `pending`, `sent`, `refused`.
    pub state: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub result: Option<Json<Value>>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// An item for the outbox.
#[derive(Clone, Debug)]
pub struct NewOutboxItem {
    pub repository: String,
    pub kind: String,
    pub deployment_id: Option<String>,
    pub arena: Option<String>,
    pub release_id: Option<String>,
    pub payload: Value,
}

const OUTBOX_COLUMNS: &str = "id, repository, kind, deployment_id, arena, release_id, payload, state, attempts, last_error, result, created_at, sent_at";

impl Ledger {
    /// Queue `item`; it is sent after everything queued before it.
    pub async fn queue_github(&self, item: &NewOutboxItem, now: DateTime<Utc>) -> Result<i64> {
        Ok(write!(self, conn => sqlx::query_scalar::<_, i64>(
            "INSERT INTO github_outbox (repository, kind, deployment_id, arena, release_id, payload, state, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7) RETURNING id")
            .bind(&item.repository)
            .bind(&item.kind)
            .bind(&item.deployment_id)
            .bind(&item.arena)
            .bind(&item.release_id)
            .bind(Json(&item.payload))
            .bind(now)
            .fetch_one(conn)
            .await?)?)
    }

    /// What is still to be sent to `repository`, oldest first.
    pub async fn pending_github(&self, repository: &str) -> Result<Vec<OutboxItem>> {
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM github_outbox WHERE repository = $1 AND state = 'pending' ORDER BY id"
        );
        Ok(
            read!(self, pool => sqlx::query_as::<_, OutboxItem>(&sql).bind(repository).fetch_all(pool).await)?,
        )
    }

    /// Every item of `repository`, oldest first (tests, `--output json`).
    pub async fn github_outbox(&self, repository: &str) -> Result<Vec<OutboxItem>> {
        let sql =
            format!("SELECT {OUTBOX_COLUMNS} FROM github_outbox WHERE repository = $1 ORDER BY id");
        Ok(
            read!(self, pool => sqlx::query_as::<_, OutboxItem>(&sql).bind(repository).fetch_all(pool).await)?,
        )
    }

    /// Claim pending item `id` for sending until `until`: true for one
    /// process at a time (a claim past its time may be taken over).
    pub async fn claim_github(
        &self,
        id: i64,
        claimant: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let n = write!(self, conn => sqlx::query(
            "UPDATE github_outbox SET claimed_by = $1, claimed_until = $2 \
             WHERE id = $3 AND state = 'pending' AND (claimed_until IS NULL OR claimed_until < $4)")
            .bind(claimant)
            .bind(until)
            .bind(id)
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected())?;
        Ok(n == 1)
    }

    /// Item `id` was taken (`sent`, with what later items need) or refused
    /// for good (`refused`), or failed once more (`pending`).
    pub async fn github_attempted(
        &self,
        id: i64,
        state: &str,
        error: Option<&str>,
        result: Option<&Value>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let sent = (state != "pending").then_some(now);
        write!(self, conn => sqlx::query(
            "UPDATE github_outbox SET state = $1, attempts = attempts + 1, last_error = $2, result = COALESCE($3, result), sent_at = $4, claimed_by = NULL, claimed_until = NULL WHERE id = $5")
            .bind(state)
            .bind(error)
            .bind(result.map(Json))
            .bind(sent)
            .bind(id)
            .execute(conn)
            .await?
            .rows_affected())?;
        Ok(())
    }

    /// The GitHub deployment created for copilot deployment `deployment_id`.
    pub async fn github_deployment_of(
        &self,
        repository: &str,
        deployment_id: &str,
    ) -> Result<Option<i64>> {
        let sql = "SELECT result FROM github_outbox WHERE repository = $1 AND kind = 'deployment' AND deployment_id = $2 AND state = 'sent' ORDER BY id DESC LIMIT 1";
        let found: Option<Option<Json<Value>>> = read!(self, pool => sqlx::query_scalar(sql).bind(repository).bind(deployment_id).fetch_optional(pool).await)?;
        Ok(found.flatten().and_then(|r| r.0["id"].as_i64()))
    }

    /// The newest GitHub deployment of `release_id` in `arena`.
    pub async fn github_deployment_of_release(
        &self,
        repository: &str,
        arena: &str,
        release_id: &str,
    ) -> Result<Option<i64>> {
        let sql = "SELECT result FROM github_outbox WHERE repository = $1 AND kind = 'deployment' AND arena = $2 AND release_id = $3 AND state = 'sent' ORDER BY id DESC LIMIT 1";
        let found: Option<Option<Json<Value>>> = read!(self, pool => sqlx::query_scalar(sql).bind(repository).bind(arena).bind(release_id).fetch_optional(pool).await)?;
        Ok(found.flatten().and_then(|r| r.0["id"].as_i64()))
    }
}
