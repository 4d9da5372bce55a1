//! Shopify webhook ingress: `POST /webhooks/shopify`.
//!
//! Order of checks: the raw body (size-limited) -> HMAC-SHA256 with the app
//! secret, base64, compared in constant time with `X-Shopify-Hmac-Sha256`
//! (current or previous secret) -> required headers -> dedupe by
//! `X-Shopify-Event-Id` (fallback `X-Shopify-Webhook-Id`), persisted ->
//! enqueue -> 200. Bad HMAC 401, missing headers 400, oversize 413.
//!
//! A 200 means the delivery will be processed: Shopify stops retrying after
//! one. The record is written before the job is added, and the job's id is
//! derived from the event id, so adding it again never makes a second job.
//! A delivery recorded but not processed is (re-)enqueued by every retry of
//! it and at every start of the service, whichever the queue driver: one
//! killed between the record and the enqueue, or whose enqueue failed
//! (answered 503), is not lost. Processing is at least once (a job whose
//! worker died is run again), so the handler is idempotent.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;

use super::config::Secret;
use super::http::AppState;
use super::queue::JobOptions;
use copilot_db::{Pool, on_pool, placeholders};

/// The job name webhook jobs carry in the queue.
pub const JOB_NAME: &str = "shopify-webhook";

const REQUIRED: &[&str] = &[
    "x-shopify-topic",
    "x-shopify-shop-domain",
    "x-shopify-api-version",
    "x-shopify-webhook-id",
];

/// HMAC-SHA256 of `body` under `secret`, base64-encoded (as Shopify sends it).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Whether `header` is a valid signature of `body` under any of `secrets`.
pub fn verify(secrets: &[Secret], body: &[u8], header: &str) -> bool {
    let Ok(expected) = base64::engine::general_purpose::STANDARD.decode(header.trim()) else {
        return false;
    };
    secrets.iter().any(|s| {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(s.expose().as_bytes()).expect("any key length");
        mac.update(body);
        // `verify_slice` compares in constant time.
        mac.verify_slice(&expected).is_ok()
    })
}

fn reject(status: StatusCode, outcome: &'static str, message: &str, state: &AppState) -> Response {
    state.metrics.webhook(outcome);
    (status, Json(json!({ "error": message }))).into_response()
}

pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    // An oversize or unreadable body is answered in JSON like every other refusal.
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let status = rejection.status();
            let (outcome, message) = if status == StatusCode::PAYLOAD_TOO_LARGE {
                let limit = state.config.max_webhook_bytes;
                ("too_large", format!("body is larger than {limit} bytes"))
            } else {
                ("bad_request", "cannot read the body".to_string())
            };
            return reject(status, outcome, &message, &state);
        }
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let Some(signature) = header("x-shopify-hmac-sha256") else {
        return reject(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing X-Shopify-Hmac-Sha256",
            &state,
        );
    };
    if !verify(&state.config.webhook_secrets, &body, signature) {
        return reject(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "HMAC signature does not match",
            &state,
        );
    }
    let missing: Vec<&str> = REQUIRED
        .iter()
        .copied()
        .filter(|h| header(h).is_none())
        .collect();
    if !missing.is_empty() {
        return reject(
            StatusCode::BAD_REQUEST,
            "bad_request",
            &format!("missing headers: {}", missing.join(", ")),
            &state,
        );
    }
    let webhook_id = header("x-shopify-webhook-id")
        .unwrap_or_default()
        .to_string();
    let event_id = header("x-shopify-event-id").map_or_else(|| webhook_id.clone(), str::to_string);
    let topic = header("x-shopify-topic").unwrap_or_default().to_string();
    let shop = header("x-shopify-shop-domain")
        .unwrap_or_default()
        .to_string();
    let api_version = header("x-shopify-api-version")
        .unwrap_or_default()
        .to_string();
    let Ok(payload) = std::str::from_utf8(&body) else {
        return reject(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "body is not UTF-8",
            &state,
        );
    };
    let payload_json: serde_json::Value = match serde_json::from_str(payload) {
        Ok(v) => v,
        Err(_) => {
            return reject(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "body is not JSON",
                &state,
            );
        }
    };

    let delivery = Delivery {
        event_id: event_id.clone(),
        webhook_id: webhook_id.clone(),
        topic: topic.clone(),
        shop: shop.clone(),
        api_version: api_version.clone(),
        payload: payload.to_string(),
        received_at: chrono::Utc::now(),
    };
    let inserted = match state.deliveries.record(delivery).await {
        Ok(n) => n,
        Err(e) => {
            tracing::error!("cannot record webhook delivery: {e}");
            return storage_unavailable(&state);
        }
    };
    let data = job_data(
        &event_id,
        &webhook_id,
        &topic,
        &shop,
        &api_version,
        payload_json,
    );
    if !inserted {
        // A retry. If what was recorded is still waiting to be processed,
        // its job may never have reached the queue (the first attempt died
        // between the record and the enqueue): make sure it is there before
        // answering 200, since Shopify stops retrying after one.
        match delivery_status(&state.pool, &event_id).await {
            Ok(Some(status)) if status != QUEUED => {
                state.metrics.webhook("duplicate");
                return (
                    StatusCode::OK,
                    Json(json!({ "status": "duplicate", "event_id": event_id })),
                )
                    .into_response();
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!("cannot read webhook delivery {event_id}: {e}");
                return storage_unavailable(&state);
            }
        }
    }
    match enqueue(&state, &event_id, &data).await {
        Ok(job_id) => {
            let status = if inserted { "queued" } else { "duplicate" };
            state.metrics.webhook(status);
            (
                StatusCode::OK,
                Json(json!({ "status": status, "event_id": event_id, "job_id": job_id })),
            )
                .into_response()
        }
        Err(e) => {
            // The record stays: Shopify's retry, or the next start, enqueues it.
            tracing::error!("cannot enqueue webhook {event_id}: {e}");
            reject(
                StatusCode::SERVICE_UNAVAILABLE,
                "error",
                "queue unavailable, retry later",
                &state,
            )
        }
    }
}

fn storage_unavailable(state: &AppState) -> Response {
    reject(
        StatusCode::SERVICE_UNAVAILABLE,
        "error",
        "storage unavailable, retry later",
        state,
    )
}

/// What a delivery's job carries, whether it is enqueued on receipt, on a
/// retry or at start.
fn job_data(
    event_id: &str,
    webhook_id: &str,
    topic: &str,
    shop: &str,
    api_version: &str,
    payload: serde_json::Value,
) -> serde_json::Value {
    json!({
        "event_id": event_id,
        "webhook_id": webhook_id,
        "topic": topic,
        "shop": shop,
        "api_version": api_version,
        "payload": payload,
    })
}

/// The status of a delivery recorded but not processed yet.
const QUEUED: &str = "queued";

/// The queue's job id for a delivery: derived from its event id, so adding
/// the job again (a retry, a restart) never makes a second one. A hash keeps
/// it within what BullMQ accepts (no `:`, not an integer) whatever the sender
/// put in the header.
pub fn job_id(event_id: &str) -> String {
    use sha2::Digest;
    let digest = Sha256::digest(event_id.as_bytes());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("shopify-{hex}")
}

/// Put a recorded delivery's job in the queue (again, harmlessly, if it is
/// there already). Concurrent requests' adds share the queue's connection,
/// so they travel to Redis pipelined.
async fn enqueue(
    state: &AppState,
    event_id: &str,
    data: &serde_json::Value,
) -> Result<String, super::queue::QueueError> {
    state
        .queue
        .add(JOB_NAME, data, &JobOptions::with_id(job_id(event_id)))
        .await
}

/// A delivery to record before it is acknowledged.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub event_id: String,
    pub webhook_id: String,
    pub topic: String,
    pub shop: String,
    pub api_version: String,
    pub payload: String,
    pub received_at: chrono::DateTime<chrono::Utc>,
}

/// Most deliveries one commit records.
const MAX_BATCH: usize = 256;

type Reply = tokio::sync::oneshot::Sender<Result<bool, String>>;

/// Records deliveries with group commit: one task writes whatever
/// deliveries are waiting in one transaction, and each request is answered
/// once the commit that holds its delivery is done. Under load, hundreds of
/// acknowledgements share one commit (and one fsync) instead of queueing for
/// the database's write lock one by one; alone, a delivery is committed at
/// once.
#[derive(Clone, Debug)]
pub struct Recorder {
    tx: tokio::sync::mpsc::Sender<(Delivery, Reply)>,
}

/// Why a delivery could not be recorded.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{0}")]
    Database(String),
    #[error("the delivery recorder has stopped")]
    Stopped,
}

impl Recorder {
    /// Start the recording task on `pool`; it ends when the last handle goes.
    pub fn start(pool: Pool) -> Recorder {
        let (tx, rx) = tokio::sync::mpsc::channel(MAX_BATCH * 8);
        tokio::spawn(record_batches(pool, rx));
        Recorder { tx }
    }

    /// Record a delivery; `false` when its event id was seen before.
    pub async fn record(&self, delivery: Delivery) -> Result<bool, RecordError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.tx
            .send((delivery, reply))
            .await
            .map_err(|_| RecordError::Stopped)?;
        answer
            .await
            .map_err(|_| RecordError::Stopped)?
            .map_err(RecordError::Database)
    }
}

async fn record_batches(pool: Pool, mut rx: tokio::sync::mpsc::Receiver<(Delivery, Reply)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let deliveries: Vec<&Delivery> = batch.iter().map(|(d, _)| d).collect();
        match record_deliveries(&pool, &deliveries).await {
            Ok(inserted) => {
                for ((_, reply), inserted) in batch.drain(..).zip(inserted) {
                    let _ = reply.send(Ok(inserted));
                }
            }
            Err(e) => {
                let message = e.to_string();
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(message.clone()));
                }
            }
        }
    }
}

/// Columns a delivery is recorded with, eight values each.
const DELIVERY_COLUMNS: usize = 8;

/// Record deliveries in one statement; for each, `false` when its event id
/// was seen before (in an earlier commit or earlier in this batch). The job
/// id is known before the job is added: it derives from the event id.
pub async fn record_deliveries(
    pool: &Pool,
    deliveries: &[&Delivery],
) -> Result<Vec<bool>, sqlx::Error> {
    if deliveries.is_empty() {
        return Ok(Vec::new());
    }
    // Six values, the status, then the time received and the job id.
    let rows: Vec<String> = (0..deliveries.len())
        .map(|i| {
            let first = i * DELIVERY_COLUMNS + 1;
            format!(
                "({}, 'queued', {})",
                placeholders(first, 6),
                placeholders(first + 6, 2)
            )
        })
        .collect();
    let sql = format!(
        "INSERT INTO webhook_deliveries (event_id, webhook_id, topic, shop, api_version, payload, status, received_at, job_id) \
         VALUES {} ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
        rows.join(", ")
    );
    let inserted: Vec<(String,)> = on_pool!(pool, p => {
        let mut query = sqlx::query_as(&sql);
        for d in deliveries {
            query = query
                .bind(&d.event_id)
                .bind(&d.webhook_id)
                .bind(&d.topic)
                .bind(&d.shop)
                .bind(&d.api_version)
                .bind(&d.payload)
                .bind(d.received_at)
                .bind(job_id(&d.event_id));
        }
        query.fetch_all(p).await
    })?;
    // A row comes back for each event id written; the first delivery that
    // carries it is the one written, any later one in the batch is a repeat.
    let mut fresh: std::collections::HashSet<String> =
        inserted.into_iter().map(|(id,)| id).collect();
    Ok(deliveries
        .iter()
        .map(|d| fresh.remove(&d.event_id))
        .collect())
}

/// Sets a delivery's final status (`$1`) and time (`$2`) by event id (`$3`).
pub const FINISH_DELIVERY: &str =
    "UPDATE webhook_deliveries SET status = $1, processed_at = $2 WHERE event_id = $3";

/// Mark a delivery processed (or failed for good).
pub async fn finish_delivery(pool: &Pool, event_id: &str, status: &str) -> Result<(), sqlx::Error> {
    on_pool!(pool, p => sqlx::query(FINISH_DELIVERY)
        .bind(status)
        .bind(chrono::Utc::now())
        .bind(event_id)
        .execute(p)
        .await
        .map(drop))
}

/// Deliveries accepted but not processed yet, oldest first: put back in the
/// queue at start (a no-op for those whose job is there).
pub async fn pending_deliveries(pool: &Pool) -> Result<Vec<serde_json::Value>, sqlx::Error> {
    let rows: Vec<(String, String, String, String, String, String)> = on_pool!(pool, p => sqlx::query_as(
        "SELECT event_id, webhook_id, topic, shop, api_version, payload FROM webhook_deliveries WHERE status = 'queued' ORDER BY received_at"
    ).fetch_all(p).await)?;
    Ok(rows
        .into_iter()
        .map(
            |(event_id, webhook_id, topic, shop, api_version, payload)| {
                let payload = serde_json::from_str(&payload).unwrap_or(serde_json::Value::Null);
                job_data(&event_id, &webhook_id, &topic, &shop, &api_version, payload)
            },
        )
        .collect())
}

/// Status of a delivery, for tests and support.
pub async fn delivery_status(pool: &Pool, event_id: &str) -> Result<Option<String>, sqlx::Error> {
    let row: Option<(String,)> = on_pool!(pool, p => sqlx::query_as("SELECT status FROM webhook_deliveries WHERE event_id = $1").bind(event_id).fetch_optional(p).await)?;
    Ok(row.map(|r| r.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_accepts_current_and_previous_secret() {
        let body = br#"{"id":1}"#;
        let current = Secret::new("new-secret");
        let previous = Secret::new("old-secret");
        let both = [current.clone(), previous.clone()];
        assert!(verify(&both, body, &sign("new-secret", body)));
        assert!(verify(&both, body, &sign("old-secret", body)));
        assert!(!verify(&[current], body, &sign("old-secret", body)));
        assert!(!verify(&both, body, &sign("other", body)));
        assert!(!verify(&both, body, "not base64!"));
        assert!(!verify(&both, b"{\"id\":2}", &sign("new-secret", body)));
    }
}
