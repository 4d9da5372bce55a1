//! Every webhook answered 200 is processed exactly once, across a kill -9 of
//! the service at any instant, on both queue drivers.
//!
//! The services here are real `copilot-service` processes, so that a kill is
//! a kill. With the `bullmq` driver the service reaches Redis through a
//! loopback proxy that stalls the connection carrying a given delivery's
//! enqueue: the service is killed exactly between recording the delivery and
//! adding its job, as a crash or a Redis stall at that moment would leave it.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use copilot_db::Pool;
use copilot_service::webhooks::{self, delivery_status, sign};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::common::{free_port, hermetic};
use crate::service_support::{
    SECRET, drop_queue, eventually, get_json, redis_url, unique_queue, webhook,
};

/// A TCP proxy to Redis that, once armed with a byte pattern, stops
/// forwarding the connection on which the client sends it.
struct StallingProxy {
    port: u16,
    pattern: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
    stalled: Arc<Notify>,
    hit: Arc<AtomicBool>,
}

impl StallingProxy {
    async fn start(upstream: String) -> StallingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let pattern = Arc::new(std::sync::Mutex::new(None::<Vec<u8>>));
        let stalled = Arc::new(Notify::new());
        let hit = Arc::new(AtomicBool::new(false));
        let (p, s, h) = (pattern.clone(), stalled.clone(), hit.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(&upstream).await else {
                    continue;
                };
                tokio::spawn(Self::pipe(client, server, p.clone(), s.clone(), h.clone()));
            }
        });
        StallingProxy {
            port,
            pattern,
            stalled,
            hit,
        }
    }

    async fn pipe(
        client: TcpStream,
        server: TcpStream,
        pattern: Arc<std::sync::Mutex<Option<Vec<u8>>>>,
        stalled: Arc<Notify>,
        hit: Arc<AtomicBool>,
    ) {
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut sr, &mut cw).await;
        });
        let mut buf = vec![0u8; 64 * 1024];
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let armed = pattern.lock().unwrap().clone();
            if let Some(pat) = armed {
                // The pattern may straddle two reads.
                let mut window = std::mem::take(&mut tail);
                window.extend_from_slice(&buf[..n]);
                if window.windows(pat.len()).any(|w| w == pat.as_slice()) {
                    *pattern.lock().unwrap() = None;
                    hit.store(true, Ordering::SeqCst);
                    stalled.notify_one();
                    // Hold the connection open and forward nothing more.
                    loop {
                        if matches!(cr.read(&mut buf).await, Ok(0) | Err(_)) {
                            return;
                        }
                    }
                }
                tail = window[window.len().saturating_sub(pat.len())..].to_vec();
            }
            if sw.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    }

    fn arm(&self, pattern: &str) {
        *self.pattern.lock().unwrap() = Some(pattern.as_bytes().to_vec());
    }
}

/// A `copilot-service` process on a port of its own.
struct ServiceProcess {
    child: Child,
    base: String,
}

impl ServiceProcess {
    async fn start(dir: &Path, extra: &[(&str, &str)]) -> ServiceProcess {
        let port = free_port();
        let db = format!("sqlite://{}", dir.join("service.db").display());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("service.log"))
            .unwrap();
        let mut cmd = std::process::Command::new(crate::common::service_bin());
        hermetic(&mut cmd)
            .env("PORT", port.to_string())
            .env("BIND_ADDRESS", "127.0.0.1")
            .env("DATABASE_URL", &db)
            .env("SHOPIFY_WEBHOOK_SECRET", SECRET)
            .env("SHOPIFY_API_VERSION", "2026-10")
            .env("COPILOT_ARENA", "test")
            .env("COPILOT_RELEASE", "v-test")
            .env("RUST_LOG", "info")
            .args(["serve"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("copilot-service starts");
        let svc = ServiceProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let health = format!("{}/health", svc.base);
        eventually("the service answers /health", || {
            let health = health.clone();
            async move {
                reqwest::get(&health)
                    .await
                    .is_ok_and(|r| r.status().is_success())
            }
        })
        .await;
        svc
    }

    fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn body(event: &str) -> String {
    format!(r#"{{"id":"{event}","shop_domain":"dev-hotrod.myshopify.com"}}"#)
}

/// Deliver `event` once; the status code, or `None` when no answer came.
async fn deliver(base: &str, event: &str, timeout: Duration) -> Option<u16> {
    let b = body(event);
    webhook(base, &b, &sign(SECRET, b.as_bytes()), event)
        .timeout(timeout)
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

async fn pool(dir: &Path) -> Pool {
    Pool::connect(&format!("sqlite://{}", dir.join("service.db").display()), 2)
        .await
        .unwrap()
}

async fn processed(pool: &Pool, events: &[String]) -> usize {
    let mut n = 0;
    for e in events {
        if delivery_status(pool, e).await.unwrap().as_deref() == Some("processed") {
            n += 1;
        }
    }
    n
}

async fn hash(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> Vec<(String, String)> {
    redis::cmd("HGETALL")
        .arg(key)
        .query_async(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn bullmq_a_delivery_killed_between_record_and_enqueue_is_processed_once() {
    let dir = tempfile::tempdir().unwrap();
    let queue = unique_queue("durable");
    let upstream = redis_url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .to_string();
    let proxy = StallingProxy::start(upstream).await;
    let redis_via_proxy = format!("redis://127.0.0.1:{}/", proxy.port);
    let env = [
        ("WEBHOOK_QUEUE_DRIVER", "bullmq"),
        ("REDIS_URL", redis_via_proxy.as_str()),
        ("WEBHOOK_QUEUE_NAME", queue.as_str()),
    ];
    let svc = ServiceProcess::start(dir.path(), &env).await;
    let db = pool(dir.path()).await;
    // One delivery goes through before anything breaks.
    assert_eq!(
        deliver(&svc.base, "evt-before", Duration::from_secs(5)).await,
        Some(200)
    );
    // Processed, so that no job is in a worker's hands at the kill (one would
    // only come back when its lock expires: BullMQ's stalled-job recovery).
    let before = vec!["evt-before".to_string()];
    eventually("the first delivery is processed", || async {
        processed(&db, &before).await == 1
    })
    .await;
    // The next one's enqueue never reaches Redis: the proxy holds it.
    proxy.arm("evt-killed");
    let base = svc.base.clone();
    let first_attempt =
        tokio::spawn(async move { deliver(&base, "evt-killed", Duration::from_secs(30)).await });
    tokio::time::timeout(Duration::from_secs(10), proxy.stalled.notified())
        .await
        .expect("the service sends the enqueue");
    assert!(proxy.hit.load(Ordering::SeqCst));
    // Recorded, not enqueued: now the process dies.
    assert_eq!(
        delivery_status(&db, "evt-killed").await.unwrap().as_deref(),
        Some("queued")
    );
    svc.kill9();
    assert_eq!(
        first_attempt.await.unwrap(),
        None,
        "the first attempt got no answer"
    );

    // Shopify retries the unanswered delivery after the service is back.
    let svc = ServiceProcess::start(dir.path(), &env).await;
    assert_eq!(
        deliver(&svc.base, "evt-killed", Duration::from_secs(5)).await,
        Some(200)
    );
    // And, being Shopify, retries the one that was answered too.
    assert_eq!(
        deliver(&svc.base, "evt-before", Duration::from_secs(5)).await,
        Some(200)
    );
    let events = vec!["evt-before".to_string(), "evt-killed".to_string()];
    eventually("both deliveries are processed", || async {
        processed(&db, &events).await == 2
    })
    .await;

    // Exactly one job per delivery, run once, completed; nothing left over.
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let completed: Vec<String> = redis::cmd("ZRANGE")
        .arg(format!("bull:{queue}:completed"))
        .arg(0)
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let expected: BTreeSet<String> = events.iter().map(|e| webhooks::job_id(e)).collect();
    assert_eq!(
        completed.iter().cloned().collect::<BTreeSet<_>>(),
        expected,
        "{completed:?}"
    );
    assert_eq!(completed.len(), 2);
    for id in &completed {
        let job = hash(&mut conn, &format!("bull:{queue}:{id}")).await;
        let get = |k: &str| job.iter().find(|(f, _)| f == k).map(|(_, v)| v.clone());
        assert_eq!(get("atm").as_deref(), Some("1"), "{id} ran once: {job:?}");
        let data: Value = serde_json::from_str(&get("data").unwrap()).unwrap();
        assert_eq!(webhooks::job_id(data["event_id"].as_str().unwrap()), *id);
    }
    for list in ["wait", "active"] {
        let n: usize = redis::cmd("LLEN")
            .arg(format!("bull:{queue}:{list}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 0, "{list}");
    }
    drop(svc);
    drop_queue("bull", &queue).await;
}

#[tokio::test]
async fn memory_every_delivery_answered_200_is_processed_once_after_a_kill_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let svc = ServiceProcess::start(dir.path(), &[]).await;
    let events: Vec<String> = (0..300).map(|i| format!("evt-load-{i:03}")).collect();
    // Eight senders at once; the service is killed when about half are answered.
    let answered = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let next = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for _ in 0..8 {
        let (base, events, answered, next) = (
            svc.base.clone(),
            events.clone(),
            answered.clone(),
            next.clone(),
        );
        senders.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(e) = events.get(i) else { return };
                match deliver(&base, e, Duration::from_secs(5)).await {
                    Some(200) => {
                        answered.lock().unwrap().insert(e.clone());
                    }
                    Some(code) => panic!("{e}: {code}"),
                    None => return, // the service is gone
                }
            }
        }));
    }
    eventually("half the deliveries are answered", || async {
        answered.lock().unwrap().len() >= events.len() / 2
    })
    .await;
    svc.kill9();
    for s in senders {
        s.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    assert!(answered.len() < events.len(), "the kill came mid-stream");

    // What the dead process left: processed, and recorded but not processed.
    let db = pool(dir.path()).await;
    let done_before = processed(&db, &events).await;
    let svc = ServiceProcess::start(dir.path(), &[]).await;
    // Shopify retries every delivery that got no 200 (and may repeat others).
    for e in &events {
        assert_eq!(
            deliver(&svc.base, e, Duration::from_secs(5)).await,
            Some(200),
            "{e}"
        );
    }
    eventually("every delivery is processed", || async {
        processed(&db, &events).await == events.len()
    })
    .await;
    // The restarted queue ran each delivery not processed before the kill
    // exactly once: its count of completed jobs is that number, no more.
    let counts = get_json(&format!("{}/api/queue", svc.base)).await;
    assert_eq!(
        counts["counts"]["completed"].as_u64(),
        Some((events.len() - done_before) as u64),
        "{counts} ({done_before} processed before the kill, {} answered)",
        answered.len()
    );
    drop(svc);
}
