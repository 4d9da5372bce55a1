//! The HTTP surface: router, shared state, metrics middleware, and start-up.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::config::{ClientLimits, QueueDriver, ServiceConfig};
use super::flags::{self, Flags};
use super::metrics::Metrics;
use super::queue::{BullmqQueue, JobOptions, MemoryQueue, Queue, QueueError};
use super::recommend::{self, ShopContext};
use super::recommend_cache::{Answer, RecommendationCache};
use super::{migrate, webhooks, worker};
use copilot_db::{ConnectError, Pool};

/// Everything a request handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<ServiceConfig>,
    pub pool: Pool,
    pub queue: Queue,
    pub flags: Flags,
    pub metrics: Arc<Metrics>,
    pub redis: Option<redis::Client>,
    pub http: reqwest::Client,
    pub started: Instant,
    pub fault_counter: Arc<AtomicU64>,
    pub recommendations: Arc<RecommendationCache>,
    pub deliveries: webhooks::Recorder,
}

pub fn router(state: AppState) -> Router {
    let webhook_limit = state.config.max_webhook_bytes;
    Router::new()
        .route("/health", get(health))
        .route("/health/db", get(health_db))
        .route("/health/cache", get(health_cache))
        .route("/health/external", get(health_external))
        .route("/metrics", get(metrics))
        .route("/api/recommendations", get(recommendations))
        .route("/api/flags", get(get_flags))
        .route("/api/queue", get(queue_counts))
        .route(
            "/webhooks/shopify",
            post(webhooks::receive).layer(DefaultBodyLimit::max(webhook_limit)),
        )
        .fallback(|| async { (StatusCode::NOT_FOUND, Json(json!({ "error": "not found" }))) })
        .layer(middleware::from_fn_with_state(state.clone(), bounded_body))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// A request body is read whole, within the body timeout (408 past it),
/// and never past the size limit: a declared `Content-Length` over it is
/// refused (413) before a byte of the body is read.
async fn bounded_body(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let limit = state.config.max_webhook_bytes;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let webhook = req.uri().path().starts_with("/webhooks/");
    let too_large = || {
        if webhook {
            state.metrics.webhook("too_large");
        }
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            [(header::CONNECTION, "close")],
            Json(json!({ "error": format!("body is larger than {limit} bytes") })),
        )
            .into_response()
    };
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    if declared.unwrap_or(0) == 0 && !chunked {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let read = tokio::time::timeout(
        state.config.limits.body_timeout,
        axum::body::to_bytes(body, limit),
    )
    .await;
    match read {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Ok(Err(_)) => too_large(),
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            [(header::CONNECTION, "close")],
            Json(json!({ "error": format!(
                "the request body did not arrive within {}s",
                state.config.limits.body_timeout.as_secs()
            ) })),
        )
            .into_response(),
    }
}

/// Serve `app` on `listener` until `stop` turns true: at most
/// `max_connections` at once (more wait to be accepted), each closed when
/// its request headers take longer than the header timeout; on stop,
/// requests in flight finish.
async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ClientLimits,
    mut stop: watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    use hyper_util::service::TowerToHyperService;

    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            () = stopped(&mut stop) => break,
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before
                    // it was accepted: wait a moment rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        let _ = stream.set_nodelay(true);
        let conn =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A client that goes away or is too slow is its own business.
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Count and time every request; inject faults when asked to.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |m| m.as_str().to_string());
    let method = req.method().to_string();
    let start = Instant::now();
    let rate = state.config.fault_5xx_rate;
    let resp = if rate > 0.0 && route.starts_with("/api/") && {
        // An exact fraction: fail when n * rate crosses an integer.
        let n = state.fault_counter.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * rate).floor() > (n * rate).floor()
    } {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": "injected fault" })),
        )
            .into_response()
    } else {
        next.run(req).await
    };
    state
        .metrics
        .request(&route, &method, resp.status().as_u16(), start.elapsed());
    resp
}

async fn health(State(s): State<AppState>) -> Json<Value> {
    Json(json!({
        "status": "ok",
        "arena": s.config.arena,
        "release": s.config.release,
        "uptime_seconds": s.started.elapsed().as_secs(),
    }))
}

fn check(ok: bool, detail: Value) -> Response {
    let mut body = json!({ "status": if ok { "ok" } else { "error" } });
    if let (Some(b), Some(d)) = (body.as_object_mut(), detail.as_object()) {
        b.extend(d.clone());
    }
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

async fn health_db(State(s): State<AppState>) -> Response {
    let start = Instant::now();
    match tokio::time::timeout(Duration::from_secs(2), s.pool.ping()).await {
        Ok(Ok(())) => check(
            true,
            json!({ "backend": s.pool.backend(), "latency_ms": start.elapsed().as_millis() as u64 }),
        ),
        Ok(Err(e)) => check(
            false,
            json!({ "backend": s.pool.backend(), "error": e.to_string() }),
        ),
        Err(_) => check(
            false,
            json!({ "backend": s.pool.backend(), "error": "timed out after 2s" }),
        ),
    }
}

async fn health_cache(State(s): State<AppState>) -> Response {
    let Some(client) = &s.redis else {
        return check(
            true,
            json!({ "cache": "none configured", "queue": s.queue.driver() }),
        );
    };
    let start = Instant::now();
    let ping = async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    };
    match tokio::time::timeout(Duration::from_secs(2), ping).await {
        Ok(Ok(_)) => check(
            true,
            json!({ "cache": "redis", "latency_ms": start.elapsed().as_millis() as u64 }),
        ),
        Ok(Err(e)) => check(false, json!({ "cache": "redis", "error": e.to_string() })),
        Err(_) => check(
            false,
            json!({ "cache": "redis", "error": "timed out after 2s" }),
        ),
    }
}

/// Upstream feeds: unreachable ones make the service degraded, never failed.
async fn health_external(State(s): State<AppState>) -> Response {
    let mut results = Vec::new();
    let mut degraded = false;
    for url in &s.config.feeds {
        let outcome = s.http.get(url).timeout(Duration::from_secs(3)).send().await;
        let (ok, detail) = match outcome {
            Ok(r) if r.status().is_success() => (true, json!({ "status": r.status().as_u16() })),
            Ok(r) => (false, json!({ "status": r.status().as_u16() })),
            Err(e) => (false, json!({ "error": e.without_url().to_string() })),
        };
        degraded |= !ok;
        results.push(json!({ "url": url, "ok": ok, "detail": detail }));
    }
    let status = if degraded { "degraded" } else { "ok" };
    (
        StatusCode::OK,
        Json(json!({ "status": status, "feeds": results })),
    )
        .into_response()
}

async fn metrics(State(s): State<AppState>) -> Response {
    let counts = s.queue.counts().await.ok();
    let text = s.metrics.render(
        counts.as_ref().map(|c| (s.queue.driver(), c)),
        &s.config.release,
        &s.config.arena,
    );
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[derive(Deserialize)]
struct ShopQuery {
    shop: Option<String>,
}

async fn recommendations(
    State(s): State<AppState>,
    Query(q): Query<ShopQuery>,
    headers: HeaderMap,
) -> Response {
    let Some(shop) = q.shop.map(|s| s.trim().to_ascii_lowercase()) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "query parameter `shop` is required" })),
        )
            .into_response();
    };
    if !recommend::valid_shop(&shop) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "`shop` must be a *.myshopify.com domain" })),
        )
            .into_response();
    }
    let now = s.config.clock.now();
    let answer = match s.recommendations.revision(&s.pool).await {
        Ok(revision) => match s.recommendations.get(&shop, revision, now) {
            Some(answer) => Ok(answer),
            None => compute_recommendations(&s, shop.clone(), revision, now)
                .await
                .map(|answer| {
                    let answer = Arc::new(answer);
                    s.recommendations.put(shop, answer.clone(), now);
                    answer
                }),
        },
        Err(e) => Err(e),
    };
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            tracing::error!("recommendations failed: {e}");
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "error": "storage unavailable" })),
            )
                .into_response();
        }
    };
    let etag = HeaderValue::from_str(&answer.etag).expect("hex in quotes");
    let revalidated = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| answer.matches(v));
    if revalidated {
        return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
    }
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, etag),
        ],
        answer.body.clone(),
    )
        .into_response()
}

/// A shop's recommendations at `now`, serialised.
async fn compute_recommendations(
    s: &AppState,
    shop: String,
    revision: i64,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Answer, sqlx::Error> {
    let rules = s.recommendations.prepared(&s.pool, revision, now).await?;
    let settings = rules.prepared.shop(&shop);
    let ctx = ShopContext {
        shop,
        platforms: settings.platforms,
        api_version: settings.api_version.unwrap_or(s.config.shopify_api_version),
    };
    let body = rules.prepared.answer(&ctx);
    Ok(Answer::stamped(body, rules.stamp))
}

#[derive(serde::Deserialize)]
struct FlagsQuery {
    shop: Option<String>,
}

/// `/api/flags`, or `/api/flags?shop=` for one shop (cohort flags included);
/// `X-Shopify-Shop-Domain` names the shop too.
async fn get_flags(
    State(s): State<AppState>,
    headers: axum::http::HeaderMap,
    axum::extract::Query(q): axum::extract::Query<FlagsQuery>,
) -> Json<flags::FlagSnapshot> {
    let header = headers
        .get("x-shopify-shop-domain")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match q.shop.or(header).filter(|s| !s.trim().is_empty()) {
        Some(shop) => Json(s.flags.for_shop(&shop).await),
        None => Json(s.flags.snapshot().await),
    }
}

async fn queue_counts(State(s): State<AppState>) -> Response {
    match s.queue.counts().await {
        Ok(c) => Json(json!({ "driver": s.queue.driver(), "counts": c })).into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "driver": s.queue.driver(), "error": e.to_string() })),
        )
            .into_response(),
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("DATABASE_URL: {0}")]
    Database(#[from] ConnectError),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    #[error("REDIS_URL: {0}")]
    Queue(#[from] QueueError),
    #[error("COPILOT_SEED_FEEDS: {0}")]
    Seed(#[from] copilot_records::ingest::IngestError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Ingest the seed feeds (a preview's data set) before the service answers,
/// so its first recommendations already come from them. Ingestion upserts:
/// a restart adds nothing twice.
async fn seed_feeds(pool: &Pool, config: &ServiceConfig) -> Result<(), StartError> {
    use copilot_records::ingest;
    for (name, location) in &config.seed_feeds {
        let source = ingest::Source::resolve(name, None, None)?;
        let report = ingest::ingest(pool, &source, location, config.clock.now()).await?;
        tracing::info!(
            "seeded {} records from {name} ({} new, {} rejected)",
            report.records,
            report.inserted,
            report.rejected.len()
        );
    }
    Ok(())
}

/// A running service.
pub struct Running {
    pub addr: SocketAddr,
    pub state: AppState,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stop accepting requests, let the worker finish its job, and return.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        self.state.pool.close().await;
    }

    /// Wait until the service stops by itself (it does not, unless asked).
    pub async fn wait(mut self) {
        for t in self.tasks.drain(..) {
            let _ = t.await;
        }
    }

    pub fn stopper(&self) -> watch::Sender<bool> {
        self.stop.clone()
    }
}

/// Options for [`start`] that do not come from the environment.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// Apply pending migrations before serving.
    pub skip_migrations: bool,
    /// Flag cache TTL (default five minutes).
    pub flag_ttl: Option<Duration>,
}

/// Connect, migrate, start the worker and serve on `listener` (or the configured address).
pub async fn start(
    config: ServiceConfig,
    listener: Option<TcpListener>,
    opts: StartOptions,
) -> Result<Running, StartError> {
    let pool = Pool::connect_write_heavy(&config.database_url, 16).await?;
    if !opts.skip_migrations {
        migrate::up(&pool).await?;
    }
    let queue = match config.queue_driver {
        QueueDriver::Memory => Queue::Memory(Arc::new(MemoryQueue::new())),
        QueueDriver::Bullmq => {
            let url = config
                .redis_url
                .as_ref()
                .map(|s| s.expose().to_string())
                .unwrap_or_default();
            Queue::Bullmq(
                BullmqQueue::connect(&url, &config.queue_prefix, &config.queue_name).await?,
            )
        }
    };
    let redis = match &config.redis_url {
        Some(url) => Some(redis::Client::open(url.expose()).map_err(QueueError::from)?),
        None => None,
    };
    let flags = Flags::new(
        pool.clone(),
        &config.arena,
        opts.flag_ttl.unwrap_or(flags::TTL),
    )
    .with_cohorts(config.flag_cohorts.clone());
    flags.seed(&config.flag_defaults).await?;
    seed_feeds(&pool, &config).await?;
    // Whatever was accepted but not processed goes (back) into the queue: all
    // of it for the memory queue, which starts empty; for Redis, the jobs of
    // deliveries whose first attempt died before its enqueue (the others
    // exist, and adding them again adds nothing).
    let pending = webhooks::pending_deliveries(&pool).await?;
    for data in &pending {
        let event_id = data["event_id"].as_str().unwrap_or_default();
        queue
            .add(
                webhooks::JOB_NAME,
                data,
                &JobOptions::with_id(webhooks::job_id(event_id)),
            )
            .await?;
    }
    if !pending.is_empty() {
        tracing::info!(
            "{} webhook deliveries accepted but not processed are in the queue",
            pending.len()
        );
    }
    let metrics = Arc::new(Metrics::default());
    let state = AppState {
        config: Arc::new(config.clone()),
        pool: pool.clone(),
        queue: queue.clone(),
        flags,
        metrics: metrics.clone(),
        redis,
        http: reqwest::Client::builder()
            .user_agent(concat!("copilot-service/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("http client"),
        started: Instant::now(),
        fault_counter: Arc::new(AtomicU64::new(0)),
        recommendations: Arc::default(),
        deliveries: webhooks::Recorder::start(pool.clone()),
    };
    let listener = match listener {
        Some(l) => l,
        None => {
            let addr = SocketAddr::new(config.bind, config.port);
            TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })?
        }
    };
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: SocketAddr::new(config.bind, config.port),
        source,
    })?;
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    if config.worker {
        tasks.push(tokio::spawn(worker::run(
            queue.clone(),
            worker::webhook_handler(pool.clone()),
            metrics,
            Some(pool.clone()),
            stop_rx.clone(),
        )));
    }
    let app = router(state.clone());
    let limits = config.limits;
    tasks.push(tokio::spawn(serve(listener, app, limits, stop_rx)));
    tracing::info!(
        "copilot-service {} ({}) listening on {addr}",
        config.release,
        config.arena
    );
    Ok(Running {
        addr,
        state,
        stop,
        tasks,
    })
}
