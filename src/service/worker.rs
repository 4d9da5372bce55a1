//! The queue worker inside the service: processes webhook jobs with retries
//! and backoff.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use super::metrics::Metrics;
use super::queue::{FailOutcome, Job, Queue};
use super::webhooks;
use crate::db::{Pool, on_pool};

pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Value, String>> + Send>>;
/// What processing a job means.
pub type Handler = Arc<dyn Fn(Job) -> HandlerFuture + Send + Sync>;

/// The service's handler: Shopify webhook jobs update the shop they concern.
pub fn webhook_handler(pool: Pool) -> Handler {
    Arc::new(move |job: Job| {
        let pool = pool.clone();
        Box::pin(async move {
            if job.name != webhooks::JOB_NAME {
                return Err(format!("unknown job name `{}`", job.name));
            }
            let topic = job
                .data
                .get("topic")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let shop = job
                .data
                .get("shop")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            if topic.is_empty() || shop.is_empty() {
                return Err("job data lacks `topic` or `shop`".into());
            }
            let now = chrono::Utc::now();
            let installed = topic != "app/uninstalled";
            let api_version = job
                .data
                .get("api_version")
                .and_then(Value::as_str)
                .map(str::to_string);
            // The shop and the delivery's status change in one commit.
            let event_id = job.data.get("event_id").and_then(Value::as_str);
            let result: Result<(), sqlx::Error> = on_pool!(&pool, p => async {
                let mut tx = p.begin().await?;
                sqlx::query(
                    "INSERT INTO shops (shop, api_version, installed, last_event_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
                     ON CONFLICT (shop) DO UPDATE SET api_version = COALESCE(excluded.api_version, shops.api_version), \
                     installed = excluded.installed, last_event_at = excluded.last_event_at, updated_at = excluded.updated_at"
                ).bind(&shop).bind(&api_version).bind(installed).bind(now).execute(&mut *tx).await?;
                if let Some(event_id) = event_id {
                    sqlx::query(webhooks::FINISH_DELIVERY)
                        .bind("processed")
                        .bind(now)
                        .bind(event_id)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await
            }.await);
            result.map_err(|e| e.to_string())?;
            Ok(json!({ "processed": topic, "shop": shop }))
        })
    })
}

/// Take jobs until `stop` turns true; returns when the current job is done.
pub async fn run(
    queue: Queue,
    handler: Handler,
    metrics: Arc<Metrics>,
    pool: Option<Pool>,
    mut stop: watch::Receiver<bool>,
) {
    let mut last_stall_check = tokio::time::Instant::now();
    loop {
        if *stop.borrow() {
            return;
        }
        if last_stall_check.elapsed() > Duration::from_secs(30) {
            last_stall_check = tokio::time::Instant::now();
            match queue.recover_stalled().await {
                Ok(0) => {}
                Ok(n) => tracing::warn!("put {n} stalled job(s) back in the queue"),
                Err(e) => tracing::warn!("stalled-job check failed: {e}"),
            }
        }
        let job = tokio::select! {
            j = queue.next(Duration::from_millis(500)) => j,
            _ = stop.changed() => return,
        };
        let job = match job {
            Ok(Some(job)) => job,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!("queue unavailable: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        match handler(job.clone()).await {
            Ok(result) => match queue.complete(&job, &result).await {
                Ok(()) => metrics.job("completed"),
                Err(e) => tracing::warn!("cannot complete job {}: {e}", job.id),
            },
            Err(reason) => match queue.fail(&job, &reason).await {
                Ok(FailOutcome::Retrying { delay_ms }) => {
                    metrics.job("retried");
                    tracing::info!(
                        "job {} failed ({reason}); retrying in {delay_ms} ms",
                        job.id
                    );
                }
                Ok(FailOutcome::Failed) => {
                    metrics.job("failed");
                    tracing::warn!("job {} failed for good: {reason}", job.id);
                    if let (Some(pool), Some(event_id)) =
                        (&pool, job.data.get("event_id").and_then(Value::as_str))
                    {
                        let _ = webhooks::finish_delivery(pool, event_id, "failed").await;
                    }
                }
                Err(e) => tracing::warn!("cannot record failure of job {}: {e}", job.id),
            },
        }
    }
}
