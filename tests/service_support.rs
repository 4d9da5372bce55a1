//! Helpers for tests of copilot-service: a service in-process on a loopback
//! port, signed webhook requests, and Redis queues of their own.

#![allow(dead_code)]

use std::collections::HashMap;

use copilot_service::config::ServiceConfig;
use copilot_service::http::{self, Running, StartOptions};
use tempfile::TempDir;

pub const SECRET: &str = "hush";

/// The instant every test service computes its recommendations at
/// (`COPILOT_NOW`), so that what they say does not depend on the date.
pub const NOW: &str = "2026-11-27T11:00:00Z";

pub fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339(NOW)
        .unwrap()
        .with_timezone(&chrono::Utc)
}

/// A service on 127.0.0.1 with an SQLite database in a temporary folder.
pub struct TestService {
    pub running: Running,
    pub dir: TempDir,
    pub base: String,
}

pub fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    let mut map: HashMap<String, String> = [
        ("SHOPIFY_WEBHOOK_SECRET", SECRET),
        ("SHOPIFY_API_VERSION", "2026-10"),
        ("COPILOT_ARENA", "test"),
        ("COPILOT_RELEASE", "v-test"),
        ("COPILOT_NOW", NOW),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in pairs {
        map.insert(k.to_string(), v.to_string());
    }
    map
}

pub fn config(map: &HashMap<String, String>) -> ServiceConfig {
    ServiceConfig::from_lookup(|k| map.get(k).cloned()).expect("test configuration")
}

impl TestService {
    pub async fn start(pairs: &[(&str, &str)]) -> TestService {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, pairs, StartOptions::default()).await
    }

    /// Start with the database of `dir` (reused across restarts).
    pub async fn start_in(dir: TempDir, pairs: &[(&str, &str)], opts: StartOptions) -> TestService {
        let db = format!("sqlite://{}", dir.path().join("service.db").display());
        let mut map = env(&[("DATABASE_URL", &db)]);
        for (k, v) in pairs {
            map.insert(k.to_string(), v.to_string());
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let running = http::start(config(&map), Some(listener), opts)
            .await
            .expect("service starts");
        let base = format!("http://{}", running.addr);
        TestService { running, dir, base }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn stop(self) -> TempDir {
        self.running.shutdown().await;
        self.dir
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// `GET url`, its body as JSON.
pub async fn get_json(url: &str) -> serde_json::Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// A webhook request with every required header, signed with `signature`.
pub fn webhook(base: &str, body: &str, signature: &str, event_id: &str) -> reqwest::RequestBuilder {
    client()
        .post(format!("{base}/webhooks/shopify"))
        .header("Content-Type", "application/json")
        .header("X-Shopify-Hmac-Sha256", signature)
        .header("X-Shopify-Topic", "orders/create")
        .header("X-Shopify-Shop-Domain", "dev-hotrod.myshopify.com")
        .header("X-Shopify-API-Version", "2026-10")
        .header("X-Shopify-Webhook-Id", format!("wh-{event_id}"))
        .header("X-Shopify-Event-Id", event_id)
        .body(body.to_string())
}

pub fn redis_url() -> String {
    std::env::var("COPILOT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A queue name no other test uses.
pub fn unique_queue(tag: &str) -> String {
    format!("{tag}-{}", uuid::Uuid::new_v4().simple())
}

/// Delete every key of a BullMQ queue.
pub async fn drop_queue(prefix: &str, queue: &str) {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}:{queue}:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// Poll until `f` is true or the deadline passes.
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::time::Instant::now() < deadline {
        if f().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// A queue worker running on its own task until [`Worker::stop`].
pub struct Worker {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Worker {
    /// `handler` on `queue`; with `pool`, a job failed for good marks its
    /// delivery failed there.
    pub fn start(
        queue: &copilot_service::queue::Queue,
        handler: copilot_service::worker::BatchHandler,
        pool: Option<&copilot_db::Pool>,
    ) -> Worker {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let task = tokio::spawn(copilot_service::worker::run(
            queue.clone(),
            handler,
            std::sync::Arc::new(copilot_service::metrics::Metrics::default()),
            pool.cloned(),
            stop_rx,
        ));
        Worker { stop, task }
    }

    /// Stop taking jobs; returns once the current batch is done.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        self.task.await.unwrap();
    }
}
