//! How long gates take against peers whose speed is known, printed as
//! figures (not asserted). `cargo bench --bench gates` runs `copilot gate
//! run` as a release engineer would and compares:
//!
//! - the health gate against a service whose four health endpoints each
//!   answer after 250 ms, with the slowest endpoint (250 ms);
//! - the latency gate's p50 and p95 with those of `oha` (when it is on the
//!   PATH) and of a plain closed-loop client in this process, on the same
//!   endpoints, requests and concurrency: copilot-service's cached
//!   recommendations, and an endpoint answering 20 KB of JSON after 5 ms;
//! - the queue-health gate on a BullMQ queue holding 10,000 active jobs,
//!   1,000 of them with an expired lock, when Redis answers at
//!   COPILOT_TEST_REDIS_URL: the gate's time, its round trips, the size of
//!   what it reports, next to BullMQ's own `getJobCounts()` (when the npm
//!   packages of tests/bullmq are installed).
//!
//! COPILOT_BENCH_ROUNDS (default 5) repeats each figure; medians are printed.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use axum::routing::get;
use copilot_service::config::ServiceConfig;
use copilot_service::http::{self, StartOptions};
use serde_json::{Value, json};

fn rounds() -> usize {
    std::env::var("COPILOT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// A project of its own, as `copilot init` writes it.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let ok = Command::new(env!("CARGO_BIN_EXE_copilot"))
        .args(["init"])
        .arg(dir.path())
        .output()
        .unwrap()
        .status
        .success();
    assert!(ok, "copilot init");
    dir
}

/// `copilot gate run canary --gate NAME`; the gate's result and the
/// process's wall time in ms.
fn gate(root: &Path, name: &str, extra: &[&str], env: &[(&str, &str)]) -> (Value, f64) {
    let t = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_copilot"))
        .arg("--root")
        .arg(root)
        .args(["--output", "json", "gate", "run", "canary", "--gate", name])
        .args(extra)
        .env("COPILOT_ACTOR", "bench")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let wall = t.elapsed().as_secs_f64() * 1000.0;
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("gate {name}: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    let result = doc["phases"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["results"].as_array().into_iter().flatten())
        .find(|r| r["gate"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no {name} result in {doc}"));
    (result, wall)
}

async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    base
}

async fn health() {
    const ANSWER_MS: u64 = 250;
    let slow = || async {
        tokio::time::sleep(Duration::from_millis(ANSWER_MS)).await;
        axum::Json(json!({ "status": "ok" }))
    };
    let base = serve(
        axum::Router::new()
            .route("/health", get(slow))
            .route("/health/db", get(slow))
            .route("/health/cache", get(slow))
            .route("/health/external", get(slow)),
    )
    .await;
    let p = project();
    let root = p.path().to_path_buf();
    let mut gate_ms = Vec::new();
    let mut wall_ms = Vec::new();
    for _ in 0..rounds() {
        let root = root.clone();
        let base = base.clone();
        let (r, wall) =
            tokio::task::spawn_blocking(move || gate(&root, "health", &["--url", &base], &[]))
                .await
                .unwrap();
        assert_eq!(r["outcome"], "pass", "{r:#}");
        gate_ms.push(r["duration_ms"].as_f64().unwrap());
        wall_ms.push(wall);
    }
    let g = median(gate_ms);
    println!("\nhealth gate, four endpoints answering in {ANSWER_MS} ms each");
    println!(
        "  gate {g:.0} ms (whole process {:.0} ms); slowest endpoint {ANSWER_MS} ms; ratio {:.2}",
        median(wall_ms),
        g / ANSWER_MS as f64
    );
}

/// p50 and p95 in ms of a closed loop of `requests` GETs over `concurrency`
/// connections, timed from sending to the whole body.
async fn closed_loop(url: &str, requests: usize, concurrency: usize) -> (f64, f64) {
    let client = reqwest::Client::new();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url, next) = (client.clone(), url.to_string(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut micros = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < requests {
                let t = Instant::now();
                let r = client.get(&url).send().await.unwrap();
                let _ = r.bytes().await.unwrap();
                micros.push(t.elapsed().as_micros() as u64);
            }
            micros
        }));
    }
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).unwrap();
    for t in tasks {
        for m in t.await.unwrap() {
            hist.record(m.max(1)).unwrap();
        }
    }
    let q = |x: f64| hist.value_at_quantile(x) as f64 / 1000.0;
    (q(0.5), q(0.95))
}

/// oha's p50 and p95 in ms, when oha is installed.
fn oha(url: &str, requests: usize, concurrency: usize) -> Option<(f64, f64)> {
    let out = Command::new("oha")
        .args(["--no-tui", "--output-format", "json", "-n"])
        .arg(requests.to_string())
        .arg("-c")
        .arg(concurrency.to_string())
        .arg(url)
        .output()
        .ok()?;
    let doc: Value = serde_json::from_slice(&out.stdout).ok()?;
    let p = &doc["latencyPercentiles"];
    Some((p["p50"].as_f64()? * 1000.0, p["p95"].as_f64()? * 1000.0))
}

async fn latency() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("service.db").display());
    let map: HashMap<&str, String> = [
        ("DATABASE_URL", db),
        ("SHOPIFY_WEBHOOK_SECRET", "bench-secret".into()),
        ("SHOPIFY_API_VERSION", "2026-10".into()),
    ]
    .into_iter()
    .collect();
    let config = ServiceConfig::from_lookup(|k| map.get(k).cloned()).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let svc = http::start(config, Some(listener), StartOptions::default())
        .await
        .unwrap();
    let service = format!("http://{}", svc.addr);
    let big: Value = json!({
        "items": (0..200).map(|i| json!({ "id": i, "text": "x".repeat(80) })).collect::<Vec<_>>()
    });
    let slow = serve(axum::Router::new().route(
        "/report",
        get(move || {
            let big = big.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                axum::Json(big)
            }
        }),
    ))
    .await;

    let (requests, concurrency) = (400usize, 8usize);
    let p = project();
    let schema = json!({
        "type": "object", "required": ["items"],
        "properties": { "items": { "type": "array", "items": { "type": "object", "required": ["id", "text"] } } }
    });
    std::fs::write(
        p.path().join("schemas/report.schema.json"),
        schema.to_string(),
    )
    .unwrap();
    println!("\nlatency gate, {requests} requests over {concurrency} connections (p50 / p95 ms)");
    println!(
        "  {:<52} {:>15} {:>15} {:>15} {:>9}",
        "endpoint", "gate", "oha", "closed loop", "p50 ratio"
    );
    for (label, base, path, schema) in [
        (
            "copilot-service /api/recommendations (cached)",
            service.as_str(),
            "/api/recommendations?shop=dev-hotrod.myshopify.com",
            "schemas/recommendations.schema.json",
        ),
        (
            "20 KB of JSON after 5 ms, schema-checked",
            slow.as_str(),
            "/report",
            "schemas/report.schema.json",
        ),
    ] {
        std::fs::write(
            p.path().join("gates/latency.yaml"),
            format!(
                "name: latency\nkind: latency\nparams:\n  endpoints:\n    - path: \"{path}\"\n      schema: {schema}\n  requests: {requests}\n  concurrency: {concurrency}\n  min_samples: {requests}\n  p95: 10s\n"
            ),
        )
        .unwrap();
        let url = format!("{base}{path}");
        let (mut g50, mut g95, mut o50, mut o95, mut c50, mut c95) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for _ in 0..rounds() {
            let root = p.path().to_path_buf();
            let b = base.to_string();
            let (r, _) =
                tokio::task::spawn_blocking(move || gate(&root, "latency", &["--url", &b], &[]))
                    .await
                    .unwrap();
            assert_eq!(r["outcome"], "pass", "{r:#}");
            let ep = &r["evidence"]["endpoints"][0];
            g50.push(ep["p50_ms"].as_f64().unwrap());
            g95.push(ep["p95_ms"].as_f64().unwrap());
            let u = url.clone();
            if let Some((a, b)) =
                tokio::task::spawn_blocking(move || oha(&u, requests, concurrency))
                    .await
                    .unwrap()
            {
                o50.push(a);
                o95.push(b);
            }
            let (a, b) = closed_loop(&url, requests, concurrency).await;
            c50.push(a);
            c95.push(b);
        }
        let pair = |a: Vec<f64>, b: Vec<f64>| {
            if a.is_empty() {
                "not installed".to_string()
            } else {
                format!("{:.3} / {:.3}", median(a), median(b))
            }
        };
        let (gate50, reference50) = (
            median(g50.clone()),
            if o50.is_empty() {
                median(c50.clone())
            } else {
                median(o50.clone())
            },
        );
        println!(
            "  {label:<52} {:>15} {:>15} {:>15} {:>9.2}",
            pair(g50, g95),
            pair(o50, o95),
            pair(c50, c95),
            gate50 / reference50
        );
    }
    println!("  (the ratio is the gate's p50 over oha's, or over the closed loop's without oha)");
    svc.shutdown().await;
}

/// The queue-health gate on a queue of 10,000 active jobs, 1,000 stalled.
async fn queue_health() {
    const ACTIVE: usize = 10_000;
    const STALLED: usize = 1_000;
    let url =
        std::env::var("COPILOT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let Ok(client) = redis::Client::open(url.as_str()) else {
        println!("\nqueue-health gate: skipped ({url} is not a Redis URL)");
        return;
    };
    let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
        println!("\nqueue-health gate: skipped (no Redis at {url})");
        return;
    };
    let queue = format!("bench-active-{}", std::process::id());
    let base = format!("bull:{queue}");
    let now = chrono::Utc::now().timestamp_millis();
    for chunk in (0..ACTIVE).collect::<Vec<_>>().chunks(1_000) {
        let mut pipe = redis::pipe();
        for &i in chunk {
            let id = (i + 1).to_string();
            pipe.rpush(format!("{base}:active"), &id).ignore();
            pipe.hset_multiple(
                format!("{base}:{id}"),
                &[
                    ("name", "shopify-webhook".to_string()),
                    ("data", "{}".to_string()),
                    ("opts", "{}".to_string()),
                    ("timestamp", now.to_string()),
                    ("processedOn", now.to_string()),
                ],
            )
            .ignore();
            if i >= STALLED {
                pipe.set_ex(format!("{base}:{id}:lock"), "bench-worker", 600)
                    .ignore();
            }
        }
        let () = pipe.query_async(&mut conn).await.unwrap();
    }
    let () = redis::cmd("SET")
        .arg(format!("{base}:id"))
        .arg(ACTIVE)
        .query_async(&mut conn)
        .await
        .unwrap();

    let p = project();
    std::fs::write(
        p.path().join("gates/queue-health.yaml"),
        format!("name: queue-health\nkind: queue-health\nparams:\n  redis: env:BENCH_REDIS_URL\n  queues: [{queue}]\n  window: 1h\n  max_stalled: 0\n"),
    )
    .unwrap();
    let (mut gate_ms, mut wall_ms) = (Vec::new(), Vec::new());
    let mut last = Value::Null;
    for _ in 0..rounds() {
        let root = p.path().to_path_buf();
        let u = url.clone();
        let (r, wall) = tokio::task::spawn_blocking(move || {
            gate(&root, "queue-health", &[], &[("BENCH_REDIS_URL", &u)])
        })
        .await
        .unwrap();
        gate_ms.push(r["duration_ms"].as_f64().unwrap());
        wall_ms.push(wall);
        last = r;
    }
    let summary = last["summary"].as_str().unwrap_or_default();
    let evidence = serde_json::to_vec(&last["evidence"]).unwrap().len();
    println!("\nqueue-health gate, {ACTIVE} active jobs of which {STALLED} stalled");
    println!(
        "  gate {:.1} ms (whole process {:.0} ms); verdict {}; summary {} bytes, evidence {evidence} bytes",
        median(gate_ms),
        median(wall_ms),
        last["outcome"].as_str().unwrap_or("?"),
        summary.len(),
    );
    println!("  summary: {summary}");
    match bullmq_get_job_counts(&url, &queue) {
        Some(ms) => println!("  BullMQ getJobCounts() on the same queue: {ms:.2} ms"),
        None => {
            println!("  BullMQ getJobCounts(): not measured (run `npm ci --prefix tests/bullmq`)")
        }
    }
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{base}:*"))
        .query_async(&mut conn)
        .await
        .unwrap_or_default();
    for chunk in keys.chunks(1_000) {
        let _: Result<(), _> = redis::cmd("DEL").arg(chunk).query_async(&mut conn).await;
    }
}

/// The median time of BullMQ's `getJobCounts()` in Node, after a warm-up.
fn bullmq_get_job_counts(url: &str, queue: &str) -> Option<f64> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/bullmq");
    if !dir.join("node_modules/bullmq").is_dir() {
        return None;
    }
    let script = r#"
const { Queue } = await import("bullmq");
const { default: IORedis } = await import("ioredis");
const [url, name] = process.argv.slice(1);
const connection = new IORedis(url, { maxRetriesPerRequest: null });
const queue = new Queue(name, { connection });
await queue.getJobCounts();
const ms = [];
for (let i = 0; i < 20; i++) {
  const t = process.hrtime.bigint();
  await queue.getJobCounts();
  ms.push(Number(process.hrtime.bigint() - t) / 1e6);
}
ms.sort((a, b) => a - b);
console.log(ms[10]);
await queue.close();
await connection.quit();
"#;
    let out = Command::new("node")
        .current_dir(&dir)
        .args(["--input-type=module", "-e", script, url, queue])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        health().await;
        latency().await;
        queue_health().await;
    });
}
