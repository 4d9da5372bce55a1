//! The job queue: retries with backoff, failures, stalled jobs and
//! durability across restarts, in memory and on Redis in BullMQ's layout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use copilot_service::http::StartOptions;
use copilot_service::queue::{Backoff, BullmqQueue, JobOptions, MemoryQueue, Queue, QueueCounts};
use copilot_service::worker::{self, Handler};
use serde_json::{Value, json};

use crate::service_support::*;

/// A handler that fails jobs whose data says `fail_times` until they were tried that often.
fn flaky() -> (Handler, Arc<AtomicU32>) {
    let calls = Arc::new(AtomicU32::new(0));
    let c = calls.clone();
    let handler: Handler = Arc::new(move |job| {
        c.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            let fail_times = job.data["fail_times"].as_u64().unwrap_or(0) as u32;
            if job.attempts_made < fail_times {
                Err(format!("simulated failure {}", job.attempts_made + 1))
            } else {
                Ok(json!({ "ok": true, "attempt": job.attempts_made + 1 }))
            }
        })
    });
    (handler, calls)
}

async fn wait_for_counts(queue: &Queue, what: &str, pred: impl Fn(&QueueCounts) -> bool) {
    eventually(what, || async { pred(&queue.counts().await.unwrap()) }).await;
}

async fn retries_then_completes_or_fails(queue: Queue) {
    let (handler, calls) = flaky();
    let worker = Worker::start(&queue, worker::one_by_one(handler), None);
    let opts = JobOptions {
        attempts: 3,
        backoff: Backoff::Exponential { delay: 20 },
        ..JobOptions::default()
    };
    queue
        .add("work", &json!({ "fail_times": 2 }), &opts)
        .await
        .unwrap();
    queue
        .add("work", &json!({ "fail_times": 5 }), &opts)
        .await
        .unwrap();
    wait_for_counts(&queue, "one completed and one failed", |c| {
        c.completed == 1 && c.failed == 1
    })
    .await;
    let c = queue.counts().await.unwrap();
    assert_eq!((c.waiting, c.active, c.delayed), (0, 0, 0), "{c:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 6, "3 attempts each");
    worker.stop().await;
}

#[tokio::test]
async fn memory_queue_retries_with_backoff() {
    retries_then_completes_or_fails(Queue::Memory(Arc::new(MemoryQueue::new()))).await;
}

#[tokio::test]
async fn bullmq_queue_retries_with_backoff() {
    let name = unique_queue("retry");
    let q = BullmqQueue::connect(&redis_url(), "bull", &name)
        .await
        .unwrap();
    retries_then_completes_or_fails(Queue::Bullmq(q)).await;

    // The job hashes say what happened, as BullMQ would.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let done: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(format!("bull:{name}:1"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let get =
        |f: &[(String, String)], k: &str| f.iter().find(|(a, _)| a == k).map(|(_, v)| v.clone());
    assert_eq!(get(&done, "atm").as_deref(), Some("3"));
    assert_eq!(
        serde_json::from_str::<Value>(&get(&done, "returnvalue").unwrap()).unwrap()["attempt"],
        3
    );
    assert!(get(&done, "finishedOn").is_some());
    let failed: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(format!("bull:{name}:2"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        get(&failed, "failedReason").as_deref(),
        Some("simulated failure 3")
    );
    let in_failed: Option<f64> = redis::cmd("ZSCORE")
        .arg(format!("bull:{name}:failed"))
        .arg("2")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(in_failed.is_some());
    let events: Value = redis::cmd("XLEN")
        .arg(format!("bull:{name}:events"))
        .query_async::<i64>(&mut conn)
        .await
        .map(Value::from)
        .unwrap();
    assert!(events.as_i64().unwrap() >= 10, "events stream: {events}");
    drop_queue("bull", &name).await;
}

/// Adding a job under an id that is taken adds nothing, before and after it ran.
async fn custom_ids_add_once(queue: Queue) {
    let opts = JobOptions::with_id("shopify-0123abcd");
    let first = queue.add("work", &json!({ "n": 1 }), &opts).await.unwrap();
    let again = queue.add("work", &json!({ "n": 2 }), &opts).await.unwrap();
    assert_eq!(
        (first.as_str(), again.as_str()),
        ("shopify-0123abcd", "shopify-0123abcd")
    );
    assert_eq!(queue.counts().await.unwrap().waiting, 1);
    let job = queue.next(Duration::from_secs(1)).await.unwrap().unwrap();
    assert_eq!(
        (job.id.as_str(), job.data["n"].as_i64()),
        ("shopify-0123abcd", Some(1))
    );
    queue.complete(&job, &json!({})).await.unwrap();
    queue.add("work", &json!({ "n": 3 }), &opts).await.unwrap();
    let c = queue.counts().await.unwrap();
    assert_eq!((c.waiting, c.active, c.completed), (0, 0, 1), "{c:?}");
    // Without an id, every add is a job of its own.
    queue
        .add("work", &json!({}), &JobOptions::default())
        .await
        .unwrap();
    queue
        .add("work", &json!({}), &JobOptions::default())
        .await
        .unwrap();
    assert_eq!(queue.counts().await.unwrap().waiting, 2);
}

#[tokio::test]
async fn memory_queue_adds_a_custom_id_once() {
    custom_ids_add_once(Queue::Memory(Arc::new(MemoryQueue::new()))).await;
}

#[tokio::test]
async fn bullmq_queue_adds_a_custom_id_once() {
    let name = unique_queue("custom-id");
    let q = BullmqQueue::connect(&redis_url(), "bull", &name)
        .await
        .unwrap();
    custom_ids_add_once(Queue::Bullmq(q)).await;
    drop_queue("bull", &name).await;
}

#[tokio::test]
async fn bullmq_stalled_jobs_go_back_in_line() {
    let name = unique_queue("stalled");
    let q = BullmqQueue::connect(&redis_url(), "bull", &name)
        .await
        .unwrap();
    let queue = Queue::Bullmq(q);
    queue
        .add("work", &json!({}), &JobOptions::default())
        .await
        .unwrap();
    // A worker takes the job and dies: its lock expires.
    let job = queue.next(Duration::from_secs(1)).await.unwrap().unwrap();
    assert_eq!(queue.counts().await.unwrap().active, 1);
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("DEL")
        .arg(format!("bull:{name}:{}:lock", job.id))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(queue.recover_stalled().await.unwrap(), 1);
    let c = queue.counts().await.unwrap();
    assert_eq!((c.waiting, c.active), (1, 0));
    // The dead worker cannot complete it any more; a new one can.
    assert!(queue.complete(&job, &json!({})).await.is_err());
    let again = queue.next(Duration::from_secs(1)).await.unwrap().unwrap();
    assert_eq!(again.id, job.id);
    queue
        .complete(&again, &json!({ "ok": true }))
        .await
        .unwrap();
    assert_eq!(queue.counts().await.unwrap().completed, 1);
    drop_queue("bull", &name).await;
}

/// Jobs waiting together are taken, written and completed together: one
/// commit for the batch. A job the database refuses, or one that is
/// malformed, fails alone; its neighbours complete.
async fn a_batch_commits_once_and_a_refused_job_fails_alone(queue: Queue) {
    let svc = TestService::start(&[("COPILOT_WORKER", "off")]).await;
    let pool = svc.running.state.pool.clone();
    let copilot_db::Pool::Sqlite(sqlite) = &pool else {
        panic!("an SQLite pool")
    };
    sqlx::query(
        "CREATE TRIGGER refuse BEFORE INSERT ON shops WHEN NEW.shop = 'refused.myshopify.com' \
         BEGIN SELECT RAISE(ABORT, 'refused by a trigger'); END",
    )
    .execute(sqlite)
    .await
    .unwrap();
    let once = JobOptions {
        attempts: 1,
        ..JobOptions::default()
    };
    let job_name = copilot_service::webhooks::JOB_NAME;
    for i in 0..20 {
        let shop = if i == 7 {
            "refused.myshopify.com".to_string()
        } else {
            format!("batch-{i:02}.myshopify.com")
        };
        let data = json!({ "topic": "shop/update", "shop": shop });
        queue.add(job_name, &data, &once).await.unwrap();
    }
    queue
        .add(job_name, &json!({ "topic": "shop/update" }), &once)
        .await
        .unwrap();

    let worker = Worker::start(&queue, worker::webhook_handler(pool.clone()), Some(&pool));
    wait_for_counts(&queue, "19 completed and 2 failed", |c| {
        c.completed == 19 && c.failed == 2
    })
    .await;
    worker.stop().await;

    let shops: Vec<(String, String)> =
        sqlx::query_as("SELECT shop, updated_at FROM shops ORDER BY shop")
            .fetch_all(sqlite)
            .await
            .unwrap();
    assert_eq!(shops.len(), 19, "{shops:?}");
    assert!(
        shops.iter().all(|(s, _)| s.starts_with("batch-")),
        "{shops:?}"
    );
    // After the batch's commit was refused, each job was written alone.
    let instants: std::collections::BTreeSet<&str> =
        shops.iter().map(|(_, at)| at.as_str()).collect();
    assert_eq!(instants.len(), 19, "one commit each after the refusal");

    // Without the refused job, the next batch is one commit.
    sqlx::query("DELETE FROM shops")
        .execute(sqlite)
        .await
        .unwrap();
    for i in 0..20 {
        let data = json!({ "topic": "shop/update", "shop": format!("again-{i:02}.myshopify.com"), "api_version": "2026-10" });
        queue.add(job_name, &data, &once).await.unwrap();
    }
    // The same shop twice in one batch: left where its last event leaves it.
    let last = json!({ "topic": "app/uninstalled", "shop": "again-03.myshopify.com" });
    queue.add(job_name, &last, &once).await.unwrap();
    let worker = Worker::start(&queue, worker::webhook_handler(pool.clone()), Some(&pool));
    wait_for_counts(&queue, "40 completed", |c| c.completed == 40).await;
    worker.stop().await;
    let (n, instants): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(DISTINCT updated_at) FROM shops")
            .fetch_one(sqlite)
            .await
            .unwrap();
    assert_eq!((n, instants), (20, 1), "twenty shops, one commit");
    let shops: Vec<(String, Option<String>, bool)> =
        sqlx::query_as("SELECT shop, api_version, installed FROM shops ORDER BY shop")
            .fetch_all(sqlite)
            .await
            .unwrap();
    for (shop, api_version, installed) in &shops {
        assert_eq!(api_version.as_deref(), Some("2026-10"), "{shop}");
        assert_eq!(*installed, shop != "again-03.myshopify.com", "{shop}");
    }
    svc.stop().await;
}

#[tokio::test]
async fn memory_batch_commits_once_and_a_refused_job_fails_alone() {
    a_batch_commits_once_and_a_refused_job_fails_alone(Queue::Memory(Arc::new(MemoryQueue::new())))
        .await;
}

#[tokio::test]
async fn bullmq_batch_commits_once_and_a_refused_job_fails_alone() {
    let name = unique_queue("batch");
    let q = BullmqQueue::connect(&redis_url(), "bull", &name)
        .await
        .unwrap();
    a_batch_commits_once_and_a_refused_job_fails_alone(Queue::Bullmq(q)).await;
    drop_queue("bull", &name).await;
}

/// Accept a webhook with no worker running, restart, and see it processed.
async fn survives_restart(pairs: &[(&str, &str)]) {
    let mut off: Vec<(&str, &str)> = pairs.to_vec();
    off.push(("COPILOT_WORKER", "off"));
    let a = TestService::start(&off).await;
    let body = r#"{"shop_id":548380009,"shop_domain":"dev-hotrod.myshopify.com"}"#;
    let sig = "FOJ8IRjwcUIZc7mL/pBafmHlsYQh4mjGRaugIUXumXY=";
    let r = webhook(&a.base, body, sig, "evt-restart")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        copilot_service::webhooks::delivery_status(&a.running.state.pool, "evt-restart")
            .await
            .unwrap()
            .as_deref(),
        Some("queued")
    );
    let dir = a.stop().await;

    let b = TestService::start_in(dir, pairs, StartOptions::default()).await;
    let pool = b.running.state.pool.clone();
    eventually("the restarted service processes the delivery", || {
        let pool = pool.clone();
        async move {
            copilot_service::webhooks::delivery_status(&pool, "evt-restart")
                .await
                .unwrap()
                .as_deref()
                == Some("processed")
        }
    })
    .await;
    b.stop().await;
}

#[tokio::test]
async fn memory_driver_jobs_survive_a_restart() {
    survives_restart(&[]).await;
}

#[tokio::test]
async fn bullmq_driver_jobs_survive_a_restart() {
    let name = unique_queue("restart");
    let url = redis_url();
    survives_restart(&[
        ("WEBHOOK_QUEUE_DRIVER", "bullmq"),
        ("REDIS_URL", &url),
        ("WEBHOOK_QUEUE_NAME", &name),
    ])
    .await;
    drop_queue("bull", &name).await;
}
