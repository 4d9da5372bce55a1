//! The queue worker inside the service: processes webhook jobs with retries
//! and backoff.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;

use super::metrics::Metrics;
use super::queue::{FailOutcome, Job, Queue, QueueError};
use super::webhooks;
use crate::db::{Pool, on_pool};

pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Value, String>> + Send>>;
/// What processing one job means.
pub type Handler = Arc<dyn Fn(Job) -> HandlerFuture + Send + Sync>;

pub type BatchFuture = Pin<Box<dyn Future<Output = Vec<Result<Value, String>>> + Send>>;
/// What processing a batch of jobs means: one result per job, in order.
pub type BatchHandler = Arc<dyn Fn(Vec<Job>) -> BatchFuture + Send + Sync>;

/// Most jobs the worker takes, processes and completes in one step.
pub const BATCH: usize = 64;

/// A handler of one job at a time, applied to a batch in order.
pub fn one_by_one(handler: Handler) -> BatchHandler {
    Arc::new(move |jobs: Vec<Job>| {
        let handler = handler.clone();
        Box::pin(async move {
            let mut results = Vec::with_capacity(jobs.len());
            for job in jobs {
                results.push(handler(job).await);
            }
            results
        })
    })
}

/// A Shopify webhook job: the shop it concerns and what happened to it.
struct ShopEvent<'a> {
    topic: &'a str,
    shop: &'a str,
    api_version: Option<&'a str>,
    event_id: Option<&'a str>,
}

impl<'a> ShopEvent<'a> {
    fn of(job: &'a Job) -> Result<Self, String> {
        if job.name != webhooks::JOB_NAME {
            return Err(format!("unknown job name `{}`", job.name));
        }
        let text = |k: &str| job.data.get(k).and_then(Value::as_str);
        match (text("topic"), text("shop")) {
            (Some(topic), Some(shop)) if !topic.is_empty() && !shop.is_empty() => Ok(ShopEvent {
                topic,
                shop,
                api_version: text("api_version"),
                event_id: text("event_id"),
            }),
            _ => Err("job data lacks `topic` or `shop`".into()),
        }
    }

    fn result(&self) -> Value {
        json!({ "processed": self.topic, "shop": self.shop })
    }
}

/// Apply events in order in one commit: each updates its shop and marks
/// its delivery processed.
async fn apply(pool: &Pool, events: &[&ShopEvent<'_>]) -> Result<(), sqlx::Error> {
    let now = chrono::Utc::now();
    on_pool!(pool, p => async {
        let mut tx = p.begin().await?;
        for e in events {
            sqlx::query(
                "INSERT INTO shops (shop, api_version, installed, last_event_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
                 ON CONFLICT (shop) DO UPDATE SET api_version = COALESCE(excluded.api_version, shops.api_version), \
                 installed = excluded.installed, last_event_at = excluded.last_event_at, updated_at = excluded.updated_at"
            ).bind(e.shop).bind(e.api_version).bind(e.topic != "app/uninstalled").bind(now).execute(&mut *tx).await?;
            if let Some(event_id) = e.event_id {
                sqlx::query(webhooks::FINISH_DELIVERY)
                    .bind("processed")
                    .bind(now)
                    .bind(event_id)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        tx.commit().await
    }.await)
}

/// The service's handler: Shopify webhook jobs update the shop they
/// concern. A batch is one commit; if that commit fails, each job is tried
/// in a commit of its own, so one job's failure is not its neighbours'.
pub fn webhook_handler(pool: Pool) -> BatchHandler {
    Arc::new(move |jobs: Vec<Job>| {
        let pool = pool.clone();
        Box::pin(async move {
            let events: Vec<Result<ShopEvent, String>> = jobs.iter().map(ShopEvent::of).collect();
            let valid: Vec<&ShopEvent> = events.iter().filter_map(|e| e.as_ref().ok()).collect();
            // One commit for the batch; if it fails, or holds one job, each alone.
            let committed = valid.len() > 1
                && match apply(&pool, &valid).await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(
                            "a batch of {} jobs failed ({e}); trying each alone",
                            valid.len()
                        );
                        false
                    }
                };
            let mut results = Vec::with_capacity(events.len());
            for event in &events {
                results.push(match event {
                    Err(reason) => Err(reason.clone()),
                    Ok(e) if committed => Ok(e.result()),
                    Ok(e) => apply(&pool, &[e])
                        .await
                        .map(|()| e.result())
                        .map_err(|err| err.to_string()),
                });
            }
            results
        })
    })
}

/// Take jobs until `stop` turns true; returns when the current batch is done.
pub async fn run(
    queue: Queue,
    handler: BatchHandler,
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
        let jobs = tokio::select! {
            j = queue.next_batch(BATCH, Duration::from_millis(500)) => j,
            _ = stop.changed() => return,
        };
        let jobs = match jobs {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!("queue unavailable: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if jobs.is_empty() {
            continue;
        }
        let results = handler(jobs.clone()).await;
        let mut done = Vec::with_capacity(jobs.len());
        let mut failed = Vec::new();
        for (job, result) in jobs.iter().zip(results) {
            match result {
                Ok(value) => done.push((job, value)),
                Err(reason) => failed.push((job, reason)),
            }
        }
        let completions: Vec<(&Job, &Value)> = done.iter().map(|(j, v)| (*j, v)).collect();
        match queue.complete_all(&completions).await {
            Ok(held) => {
                for ((job, _), held) in done.iter().zip(held) {
                    if held {
                        metrics.job("completed");
                    } else {
                        tracing::warn!("cannot complete: {}", QueueError::LockLost(job.id.clone()));
                    }
                }
            }
            Err(e) => tracing::warn!("cannot complete {} job(s): {e}", done.len()),
        }
        for (job, reason) in failed {
            fail(&queue, job, &reason, &metrics, pool.as_ref()).await;
        }
    }
}

/// Record a job's failure: a retry after its backoff, or failed for good
/// (and its delivery with it).
async fn fail(queue: &Queue, job: &Job, reason: &str, metrics: &Metrics, pool: Option<&Pool>) {
    match queue.fail(job, reason).await {
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
                (pool, job.data.get("event_id").and_then(Value::as_str))
            {
                let _ = webhooks::finish_delivery(pool, event_id, "failed").await;
            }
        }
        Err(e) => tracing::warn!("cannot record failure of job {}: {e}", job.id),
    }
}
