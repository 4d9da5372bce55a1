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
use copilot_db::{Pool, on_pool, placeholders};

pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Value, String>> + Send>>;
/// What processing one job means.
pub type Handler = Arc<dyn Fn(Job) -> HandlerFuture + Send + Sync>;

pub type BatchFuture = Pin<Box<dyn Future<Output = Vec<Result<Value, String>>> + Send>>;
/// What processing a batch of jobs means: one result per job, in order.
/// The batch is shared, not copied: the worker still completes or fails
/// each job after the handler is done.
pub type BatchHandler = Arc<dyn Fn(Arc<[Job]>) -> BatchFuture + Send + Sync>;

/// Most jobs the worker takes, processes and completes in one step.
pub const BATCH: usize = 64;

/// A handler of one job at a time, applied to a batch in order.
pub fn one_by_one(handler: Handler) -> BatchHandler {
    Arc::new(move |jobs: Arc<[Job]>| {
        let handler = handler.clone();
        Box::pin(async move {
            let mut results = Vec::with_capacity(jobs.len());
            for job in jobs.iter() {
                results.push(handler(job.clone()).await);
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

/// Where a shop stands after events applied in order: installed unless the
/// last one was `app/uninstalled`, and the last API version any of them
/// named (or the one it had).
#[derive(Debug, PartialEq)]
struct ShopState<'a> {
    shop: &'a str,
    api_version: Option<&'a str>,
    installed: bool,
}

/// Fold events into one state per shop, in the order shops first appear.
fn fold<'a>(events: &[&ShopEvent<'a>]) -> Vec<ShopState<'a>> {
    let mut states: Vec<ShopState<'a>> = Vec::new();
    for e in events {
        let installed = e.topic != "app/uninstalled";
        match states.iter_mut().find(|s| s.shop == e.shop) {
            Some(s) => {
                s.installed = installed;
                s.api_version = e.api_version.or(s.api_version);
            }
            None => states.push(ShopState {
                shop: e.shop,
                api_version: e.api_version,
                installed,
            }),
        }
    }
    states
}

/// `($1, $2, $3, $T, $T), ($4, ...)`: three values per shop and the time `$T`.
fn shop_rows(n: usize) -> String {
    let at = 3 * n + 1;
    (0..n)
        .map(|i| format!("({}, ${at}, ${at})", placeholders(3 * i + 1, 3)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Apply events in one commit, as if one after another: two statements
/// whatever their number, one upserting each shop to where the events
/// leave it, one marking their deliveries processed.
async fn apply(pool: &Pool, events: &[&ShopEvent<'_>]) -> Result<(), sqlx::Error> {
    let now = chrono::Utc::now();
    let shops = fold(events);
    let upsert = format!(
        "INSERT INTO shops (shop, api_version, installed, last_event_at, updated_at) VALUES {} \
         ON CONFLICT (shop) DO UPDATE SET api_version = COALESCE(excluded.api_version, shops.api_version), \
         installed = excluded.installed, last_event_at = excluded.last_event_at, updated_at = excluded.updated_at",
        shop_rows(shops.len())
    );
    let delivered: Vec<&str> = events.iter().filter_map(|e| e.event_id).collect();
    let processed = format!(
        "UPDATE webhook_deliveries SET status = 'processed', processed_at = $1 WHERE event_id IN ({})",
        placeholders(2, delivered.len())
    );
    on_pool!(pool, p => async {
        let mut tx = p.begin().await?;
        let mut query = sqlx::query(&upsert);
        for s in &shops {
            query = query.bind(s.shop).bind(s.api_version).bind(s.installed);
        }
        query.bind(now).execute(&mut *tx).await?;
        if !delivered.is_empty() {
            let mut query = sqlx::query(&processed).bind(now);
            for id in &delivered {
                query = query.bind(*id);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await
    }.await)
}

/// The service's handler: Shopify webhook jobs update the shop they
/// concern. A batch is one commit; if that commit fails, each job is tried
/// in a commit of its own, so one job's failure is not its neighbours'.
pub fn webhook_handler(pool: Pool) -> BatchHandler {
    Arc::new(move |jobs: Arc<[Job]>| {
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
        let jobs: Arc<[Job]> = jobs.into();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn event<'a>(topic: &'a str, shop: &'a str, api_version: Option<&'a str>) -> ShopEvent<'a> {
        ShopEvent {
            topic,
            shop,
            api_version,
            event_id: None,
        }
    }

    #[test]
    fn a_batch_leaves_each_shop_where_its_last_event_does() {
        let events = [
            event("shop/update", "a", Some("2026-07")),
            event("shop/update", "b", None),
            event("app/uninstalled", "a", None),
            event("shop/update", "b", Some("2026-10")),
            event("shop/update", "a", None),
        ];
        let refs: Vec<&ShopEvent> = events.iter().collect();
        assert_eq!(
            fold(&refs),
            [
                ShopState {
                    shop: "a",
                    api_version: Some("2026-07"),
                    installed: true
                },
                ShopState {
                    shop: "b",
                    api_version: Some("2026-10"),
                    installed: true
                },
            ]
        );
        let uninstalled = [
            event("shop/update", "c", None),
            event("app/uninstalled", "c", None),
        ];
        let refs: Vec<&ShopEvent> = uninstalled.iter().collect();
        assert!(!fold(&refs)[0].installed);
    }

    #[test]
    fn shop_rows_number_their_values_and_share_the_time() {
        assert_eq!(shop_rows(1), "($1, $2, $3, $4, $4)");
        assert_eq!(shop_rows(2), "($1, $2, $3, $7, $7), ($4, $5, $6, $7, $7)");
    }
}
