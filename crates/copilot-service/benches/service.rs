//! Throughput and latency of copilot-service, printed as figures (not asserted).
//!
//! `cargo bench -p copilot-service --bench service` seeds an SQLite database with 100k update
//! records, starts the service on loopback and measures:
//! - `GET /api/recommendations` (rules over the stored records) for one
//!   shop, then for 10,000 distinct shops seen for the first time (cold:
//!   each answer computed) and the same 10,000 again (warm: cached),
//! - `POST /webhooks/shopify` (HMAC, dedupe insert, enqueue),
//! - the same with `If-None-Match` (answered 304),
//! - a trivial axum handler on the same machine, as the ceiling;
//!
//! then webhooks at a fixed rate (500, 1,000 and 2,000 per second for
//! COPILOT_BENCH_SECONDS, default 10), on each queue driver (memory, and
//! bullmq when Redis answers at COPILOT_TEST_REDIS_URL) and each database
//! (SQLite, and PostgreSQL when COPILOT_TEST_DATABASE_URL answers): the rate
//! achieved, acknowledgement latency from the moment each request was due
//! (so a stall counts for every request it delays), and the jobs the worker
//! completed by the end of the sending and after it. COPILOT_BENCH_ONLY
//! (e.g. `bullmq,postgres,1000`) keeps the fixed-rate runs with every word.
//!
//! The load generator runs in the same process and shares the machine's
//! cores with the server. Override sizes with COPILOT_BENCH_RECORDS and
//! COPILOT_BENCH_REQUESTS.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use copilot_db::Pool;
use copilot_service::config::ServiceConfig;
use copilot_service::http::{self, StartOptions};
use copilot_service::records::{self, Platform, Severity, UpdateKind, UpdateRecord, UpdateStatus};
use copilot_service::webhooks;
use hdrhistogram::Histogram;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn seed_records(n: usize) -> Vec<UpdateRecord> {
    let now = Utc::now();
    let kinds = UpdateKind::ALL;
    let platforms = Platform::ALL;
    (0..n)
        .map(|i| {
            // Five years of history; 1 in 1000 from the last 40 days (100
            // records), 5 still ongoing: a busy month of platform news.
            let age_days = if i % 1000 == 0 {
                (i % 40) as i64
            } else {
                50 + (i as i64 * 7919) % 1800
            };
            let started = now - chrono::Duration::days(age_days);
            let ongoing = i % 20_000 == 0;
            let ended = (!ongoing).then(|| started + chrono::Duration::days(3));
            UpdateRecord {
                id: format!("bench:{i}"),
                source: "bench".into(),
                platform: platforms[i % platforms.len()],
                kind: kinds[i % kinds.len()],
                title: format!("Update {i}"),
                url: Some(format!("https://example.com/updates/{i}")),
                summary: Some("A synthetic update for the benchmark.".into()),
                published_at: started,
                updated_at: ended.unwrap_or(started),
                started_at: Some(started),
                ended_at: ended,
                status: if ongoing {
                    UpdateStatus::Ongoing
                } else {
                    UpdateStatus::Resolved
                },
                severity: Severity::Medium,
                surfaces: vec!["Search".into()],
                raw_hash: format!("{i:064x}"),
                revision: 1,
                fetched_at: now,
                parser_version: "bench".into(),
            }
        })
        .collect()
}

struct Figures {
    name: &'static str,
    requests: usize,
    errors: usize,
    elapsed: Duration,
    hist: Histogram<u64>,
}

/// Send `total` requests at `concurrency`, built by `make(i)`.
async fn load<F>(name: &'static str, total: usize, concurrency: usize, make: F) -> Figures
where
    F: Fn(usize) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let make = make.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let t = Instant::now();
                match make(i).send().await {
                    // 304 is the answer a revalidation wants.
                    Ok(r) if r.status().is_success() || r.status() == 304 => {
                        let _ = r.bytes().await;
                    }
                    _ => errors += 1,
                }
                hist.record(t.elapsed().as_micros().max(1) as u64).unwrap();
            }
            (hist, errors)
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let mut errors = 0;
    for t in tasks {
        let (h, e) = t.await.unwrap();
        hist.add(h).unwrap();
        errors += e;
    }
    Figures {
        name,
        requests: total,
        errors,
        elapsed: start.elapsed(),
        hist,
    }
}

/// The figures, each with its rate as a share of the first's (the ceiling).
fn print(figs: &[Figures]) {
    println!();
    println!(
        "{:<44} {:>9} {:>10} {:>8} {:>9} {:>9} {:>9} {:>7}",
        "endpoint", "requests", "req/s", "ceiling", "p50 ms", "p99 ms", "max ms", "errors"
    );
    let rate = |f: &Figures| f.requests as f64 / f.elapsed.as_secs_f64();
    let ceiling = figs.first().map_or(1.0, rate);
    for f in figs {
        println!(
            "{:<44} {:>9} {:>10.0} {:>8.2} {:>9.2} {:>9.2} {:>9.2} {:>7}",
            f.name,
            f.requests,
            rate(f),
            rate(f) / ceiling,
            f.hist.value_at_quantile(0.50) as f64 / 1000.0,
            f.hist.value_at_quantile(0.99) as f64 / 1000.0,
            f.hist.max() as f64 / 1000.0,
            f.errors
        );
    }
}

fn main() {
    let records_n = env_usize("COPILOT_BENCH_RECORDS", 100_000);
    let requests = env_usize("COPILOT_BENCH_REQUESTS", 20_000);
    let concurrency = 32;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite://{}", dir.path().join("bench.db").display());
        let pool = Pool::connect(&db, 4).await.unwrap();
        copilot_service::migrate::up(&pool).await.unwrap();
        let t = Instant::now();
        for chunk in seed_records(records_n).chunks(5_000) {
            records::upsert_many(&pool, chunk).await.unwrap();
        }
        println!(
            "seeded {} update records in {:.1}s",
            records::count(&pool).await.unwrap(),
            t.elapsed().as_secs_f64()
        );
        let shop = copilot_service::recommend::ShopContext {
            shop: "dev-hotrod.myshopify.com".into(),
            platforms: Vec::new(),
            api_version: copilot_service::config::ApiVersion::parse("2026-10").unwrap(),
        };
        let sample = copilot_service::recommend::recommend(&pool, &shop, Utc::now())
            .await
            .unwrap();
        println!(
            "a response carries {} recommendations ({} bytes of JSON)",
            sample.recommendations.len(),
            serde_json::to_vec(&sample).unwrap().len()
        );
        pool.close().await;

        let map: HashMap<&str, String> = [
            ("DATABASE_URL", db.clone()),
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
        let base = format!("http://{}", svc.addr);

        // The ceiling: a handler that does nothing, on the same machine.
        let trivial = axum::Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let tl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let trivial_url = format!("http://{}/", tl.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(tl, trivial).await.unwrap() });

        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            .build()
            .unwrap();
        let mut figs = Vec::new();

        // Warm up.
        let c = client.clone();
        let b = base.clone();
        load("warm-up", 500, concurrency, move |_| {
            c.get(format!(
                "{b}/api/recommendations?shop=dev-hotrod.myshopify.com"
            ))
        })
        .await;

        let c = client.clone();
        let u = trivial_url.clone();
        figs.push(
            load(
                "trivial axum handler (ceiling)",
                requests,
                concurrency,
                move |_| c.get(&u),
            )
            .await,
        );

        let c = client.clone();
        let b = base.clone();
        figs.push(
            load(
                "GET /api/recommendations (100k records)",
                requests,
                concurrency,
                move |_| {
                    c.get(format!(
                        "{b}/api/recommendations?shop=dev-hotrod.myshopify.com"
                    ))
                },
            )
            .await,
        );

        let shops = 10_000;
        for (label, prefix) in [
            ("GET /api/recommendations, 10k shops cold", "cold"),
            ("GET /api/recommendations, 10k shops warm", "cold"),
        ] {
            let c = client.clone();
            let b = base.clone();
            figs.push(
                load(label, shops, concurrency, move |i| {
                    c.get(format!(
                        "{b}/api/recommendations?shop={prefix}-{i}.myshopify.com"
                    ))
                })
                .await,
            );
        }

        let etag = client
            .get(format!(
                "{base}/api/recommendations?shop=dev-hotrod.myshopify.com"
            ))
            .send()
            .await
            .unwrap()
            .headers()
            .get("etag")
            .expect("an ETag")
            .to_str()
            .unwrap()
            .to_string();
        let c = client.clone();
        let b = base.clone();
        figs.push(
            load(
                "GET /api/recommendations If-None-Match (304)",
                requests,
                concurrency,
                move |_| {
                    c.get(format!(
                        "{b}/api/recommendations?shop=dev-hotrod.myshopify.com"
                    ))
                    .header("if-none-match", &etag)
                },
            )
            .await,
        );

        let c = client.clone();
        let b = base.clone();
        let hooks = requests / 4;
        figs.push(
            load(
                "POST /webhooks/shopify (signed, enqueued)",
                hooks,
                concurrency,
                move |i| {
                    let body = format!("{{\"id\":{i},\"email\":\"buyer{i}@example.com\"}}");
                    let sig = webhooks::sign("bench-secret", body.as_bytes());
                    c.post(format!("{b}/webhooks/shopify"))
                        .header("X-Shopify-Hmac-Sha256", sig)
                        .header("X-Shopify-Topic", "orders/create")
                        .header("X-Shopify-Shop-Domain", "dev-hotrod.myshopify.com")
                        .header("X-Shopify-API-Version", "2026-10")
                        .header("X-Shopify-Webhook-Id", format!("wh-{i}"))
                        .header("X-Shopify-Event-Id", format!("evt-{i}"))
                        .body(body)
                },
            )
            .await,
        );
        print(&figs);
        println!(
            "\nconcurrency {concurrency}; client and server share this machine's {} cores",
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        );
        svc.shutdown().await;

        fixed_rate_webhooks(&client).await;
    });
}

/// A signed webhook delivery, `i` its event.
fn webhook(client: &reqwest::Client, base: &str, run: &str, i: usize) -> reqwest::RequestBuilder {
    let body = format!("{{\"id\":{i},\"email\":\"buyer{i}@example.com\"}}");
    let sig = webhooks::sign("bench-secret", body.as_bytes());
    client
        .post(format!("{base}/webhooks/shopify"))
        .header("X-Shopify-Hmac-Sha256", sig)
        .header("X-Shopify-Topic", "orders/create")
        .header("X-Shopify-Shop-Domain", "dev-hotrod.myshopify.com")
        .header("X-Shopify-API-Version", "2026-10")
        .header("X-Shopify-Webhook-Id", format!("wh-{run}-{i}"))
        .header("X-Shopify-Event-Id", format!("evt-{run}-{i}"))
        .body(body)
}

struct RateFigures {
    label: String,
    rate: usize,
    sent: usize,
    achieved: f64,
    errors: usize,
    hist: Histogram<u64>,
    done_during: u64,
    done_after: u64,
    drain: Duration,
}

/// Send `rate` deliveries a second for `seconds`, each due at its own
/// instant whatever the answers to the earlier ones; then let the worker
/// finish (at most 60 s).
async fn at_rate(
    client: &reqwest::Client,
    svc: &http::Running,
    label: String,
    rate: usize,
    seconds: usize,
) -> RateFigures {
    let base = format!("http://{}", svc.addr);
    let run = uuid::Uuid::new_v4().simple().to_string();
    let total = rate * seconds;
    let start = tokio::time::Instant::now();
    let mut answers = Vec::with_capacity(total);
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due).await;
        let req = webhook(client, &base, &run, i);
        answers.push(tokio::spawn(async move {
            let ok = matches!(req.send().await, Ok(r) if r.status().is_success());
            (due.elapsed(), ok, start.elapsed())
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).unwrap();
    let (mut errors, mut last) = (0, Duration::ZERO);
    for a in answers {
        let (latency, ok, at) = a.await.unwrap();
        hist.record(latency.as_micros().max(1) as u64).unwrap();
        errors += usize::from(!ok);
        last = last.max(at);
    }
    let completed = || async { svc.state.queue.counts().await.map_or(0, |c| c.completed) };
    let done_during = completed().await;
    let mut done_after = done_during;
    while done_after < (total - errors) as u64 && start.elapsed() < last + Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        done_after = completed().await;
    }
    RateFigures {
        label,
        rate,
        sent: total,
        achieved: (total - errors) as f64 / last.as_secs_f64(),
        errors,
        hist,
        done_during,
        done_after,
        drain: start.elapsed().saturating_sub(last),
    }
}

fn print_rates(figs: &[RateFigures]) {
    println!();
    println!(
        "{:<22} {:>6} {:>7} {:>9} {:>8} {:>8} {:>8} {:>7} {:>13} {:>12} {:>9}",
        "webhooks at a rate",
        "rate/s",
        "sent",
        "achieved",
        "p50 ms",
        "p99 ms",
        "max ms",
        "errors",
        "worker during",
        "worker after",
        "drain s"
    );
    for f in figs {
        println!(
            "{:<22} {:>6} {:>7} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>7} {:>13} {:>12} {:>9.1}",
            f.label,
            f.rate,
            f.sent,
            f.achieved,
            f.hist.value_at_quantile(0.50) as f64 / 1000.0,
            f.hist.value_at_quantile(0.99) as f64 / 1000.0,
            f.hist.max() as f64 / 1000.0,
            f.errors,
            f.done_during,
            f.done_after,
            f.drain.as_secs_f64()
        );
    }
    println!(
        "latency counted from when each request was due; `worker during`: jobs completed when the last answer arrived"
    );
}

async fn answers(url: &str) -> bool {
    match Pool::connect(url, 1).await {
        Ok(p) => {
            p.close().await;
            true
        }
        Err(_) => false,
    }
}

async fn postgres_exec(url: &str, sql: &str) {
    if let Pool::Postgres(p) = Pool::connect(url, 1).await.unwrap() {
        sqlx::query(sql).execute(&p).await.unwrap();
        p.close().await;
    }
}

async fn fixed_rate_webhooks(client: &reqwest::Client) {
    let seconds = env_usize("COPILOT_BENCH_SECONDS", 10);
    let redis =
        std::env::var("COPILOT_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let redis_up = match redis::Client::open(redis.as_str()) {
        Ok(c) => c.get_multiplexed_async_connection().await.is_ok(),
        Err(_) => false,
    };
    let pg_admin = std::env::var("COPILOT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let pg_up = answers(&pg_admin).await;
    // COPILOT_BENCH_ONLY=bullmq,postgres runs only the runs with every word.
    let only: Vec<String> = std::env::var("COPILOT_BENCH_ONLY")
        .unwrap_or_default()
        .split(',')
        .map(|w| w.trim().to_string())
        .filter(|w| !w.is_empty())
        .collect();
    let wanted = |labels: &[&str]| only.iter().all(|w| labels.contains(&w.as_str()));
    let mut figs = Vec::new();
    for database in ["sqlite", "postgres"] {
        if database == "postgres" && !pg_up {
            println!("\nPostgreSQL at {pg_admin} does not answer: its webhook figures are skipped");
            continue;
        }
        for driver in ["memory", "bullmq"] {
            if driver == "bullmq" && !redis_up {
                println!("\nRedis at {redis} does not answer: the bullmq figures are skipped");
                continue;
            }
            for rate in [500, 1_000, 2_000] {
                if !wanted(&[driver, database, &rate.to_string()]) {
                    continue;
                }
                let dir = tempfile::tempdir().unwrap();
                let pg_name = format!("copilot_bench_hooks_{}", uuid::Uuid::new_v4().simple());
                let db = if database == "sqlite" {
                    format!("sqlite://{}", dir.path().join("hooks.db").display())
                } else {
                    postgres_exec(&pg_admin, &format!("CREATE DATABASE {pg_name}")).await;
                    format!("{}/{pg_name}", pg_admin.rsplit_once('/').unwrap().0)
                };
                let queue = format!("bench-{}", uuid::Uuid::new_v4().simple());
                let map: HashMap<&str, String> = [
                    ("DATABASE_URL", db),
                    ("SHOPIFY_WEBHOOK_SECRET", "bench-secret".into()),
                    ("SHOPIFY_API_VERSION", "2026-10".into()),
                    ("WEBHOOK_QUEUE_DRIVER", driver.into()),
                    ("REDIS_URL", redis.clone()),
                    ("WEBHOOK_QUEUE_NAME", queue.clone()),
                ]
                .into_iter()
                .collect();
                let config = ServiceConfig::from_lookup(|k| map.get(k).cloned()).unwrap();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let svc = http::start(config, Some(listener), StartOptions::default())
                    .await
                    .unwrap();
                figs.push(
                    at_rate(client, &svc, format!("{driver}, {database}"), rate, seconds).await,
                );
                svc.shutdown().await;
                if driver == "bullmq" {
                    let c = redis::Client::open(redis.as_str()).unwrap();
                    let mut conn = c.get_multiplexed_async_connection().await.unwrap();
                    let keys: Vec<String> = redis::cmd("KEYS")
                        .arg(format!("bull:{queue}:*"))
                        .query_async(&mut conn)
                        .await
                        .unwrap_or_default();
                    if !keys.is_empty() {
                        let _: () = redis::cmd("DEL")
                            .arg(&keys)
                            .query_async(&mut conn)
                            .await
                            .unwrap();
                    }
                }
                if database == "postgres" {
                    postgres_exec(&pg_admin, &format!("DROP DATABASE {pg_name} WITH (FORCE)"))
                        .await;
                }
            }
        }
    }
    print_rates(&figs);
}
