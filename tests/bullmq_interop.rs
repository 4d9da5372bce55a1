//! copilot-service's queue against the real `bullmq` npm package, both ways.
//! Needs `npm ci --prefix tests/bullmq` (done by .ci/run).

use std::path::PathBuf;
use std::process::Command;

use copilot_service::queue::{BullmqQueue, JobOptions, Queue};
use copilot_service::{webhooks, worker};
use serde_json::{Value, json};

use crate::service_support::*;

/// The bullmq versions under test: the npm packages `bullmq` (6) and `bullmq5`.
const VERSIONS: &[&str] = &["bullmq", "bullmq5"];

fn node(package: &str, script: &str, args: &[&str]) -> Value {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/bullmq");
    assert!(
        dir.join("node_modules").join(package).is_dir(),
        "the bullmq npm package is missing: run `npm ci --prefix tests/bullmq`"
    );
    let out = Command::new("node")
        .env("BULLMQ", package)
        .arg(dir.join(script))
        .args(args)
        .output()
        .expect("node is installed");
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or_default())
        .unwrap_or_else(|e| panic!("{script} printed {stdout}: {e}"))
}

async fn node_async(package: &'static str, script: &'static str, args: Vec<String>) -> Value {
    tokio::task::spawn_blocking(move || {
        node(
            package,
            script,
            &args.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn a_job_the_service_enqueues_is_processed_by_a_node_worker() {
    for package in VERSIONS {
        service_to_node(package).await;
    }
}

async fn service_to_node(package: &'static str) {
    let name = unique_queue("to-node");
    let queue = Queue::Bullmq(
        BullmqQueue::connect(&redis_url(), "bull", &name)
            .await
            .unwrap(),
    );
    let data = json!({ "topic": "orders/create", "shop": "dev-hotrod.myshopify.com", "payload": { "id": 42 } });
    let id = queue
        .add(webhooks::JOB_NAME, &data, &JobOptions::default())
        .await
        .unwrap();

    let seen = node_async(
        package,
        "consume.mjs",
        vec![redis_url(), name.clone(), "1".into()],
    )
    .await;
    assert_eq!(seen[0]["id"], id);
    assert_eq!(seen[0]["name"], webhooks::JOB_NAME);
    assert_eq!(seen[0]["data"], data);
    assert_eq!(seen[0]["opts"]["attempts"], 5);
    assert_eq!(seen[0]["opts"]["backoff"]["type"], "exponential");

    let state = node_async(
        package,
        "state.mjs",
        vec![redis_url(), name.clone(), id.clone()],
    )
    .await;
    assert_eq!(state["state"], "completed");
    assert_eq!(state["returnvalue"]["processedBy"], "node-bullmq");
    // And the service reads the queue the Node worker left behind.
    let counts = queue.counts().await.unwrap();
    assert_eq!((counts.completed, counts.waiting, counts.active), (1, 0, 0));
    drop_queue("bull", &name).await;
}

#[tokio::test]
async fn a_job_a_node_producer_adds_is_processed_by_the_service_worker() {
    for package in VERSIONS {
        node_to_service(package).await;
    }
}

async fn node_to_service(package: &'static str) {
    let name = unique_queue("from-node");
    let data = json!({
        "event_id": "node-evt-1",
        "topic": "app/uninstalled",
        "shop": "hotrod-canary.myshopify.com",
        "api_version": "2026-10",
        "payload": { "id": 548380009 }
    });
    let added = node_async(
        package,
        "produce.mjs",
        vec![
            redis_url(),
            name.clone(),
            webhooks::JOB_NAME.into(),
            data.to_string(),
        ],
    )
    .await;
    let id = added["id"].as_str().unwrap().to_string();

    // The service's worker, with the service's webhook handler and database.
    let svc = TestService::start(&[("COPILOT_WORKER", "off")]).await;
    let pool = svc.running.state.pool.clone();
    let queue = Queue::Bullmq(
        BullmqQueue::connect(&redis_url(), "bull", &name)
            .await
            .unwrap(),
    );
    let w = Worker::start(&queue, worker::webhook_handler(pool.clone()), Some(&pool));
    eventually("the service's worker completes the Node job", || {
        let queue = queue.clone();
        async move { queue.counts().await.unwrap().completed == 1 }
    })
    .await;
    w.stop().await;

    let state = node_async(package, "state.mjs", vec![redis_url(), name.clone(), id]).await;
    assert_eq!(state["state"], "completed", "{state}");
    assert_eq!(state["returnvalue"]["processed"], "app/uninstalled");
    assert_eq!(state["attemptsMade"], 1);
    // The handler did its work: the shop is marked uninstalled.
    let installed: (bool,) = match &pool {
        copilot_db::Pool::Sqlite(p) => {
            sqlx::query_as("SELECT installed FROM shops WHERE shop = $1")
                .bind("hotrod-canary.myshopify.com")
                .fetch_one(p)
                .await
                .unwrap()
        }
        copilot_db::Pool::Postgres(p) => {
            sqlx::query_as("SELECT installed FROM shops WHERE shop = $1")
                .bind("hotrod-canary.myshopify.com")
                .fetch_one(p)
                .await
                .unwrap()
        }
    };
    assert!(!installed.0);
    svc.stop().await;
    drop_queue("bull", &name).await;
}
