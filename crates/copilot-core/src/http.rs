//! One HTTP layer for the platforms' APIs (Fly Machines, Render, ...).
//!
//! Every request has a timeout; connection errors, 429 and 5xx answers are
//! retried with jittered exponential backoff, waiting at least what the
//! server asks (`Retry-After`, or a rate-limit reset header), within a
//! bounded total time. Retries follow what an answer means, not the verb:
//! a 429 says the request was refused unread, so every request is sent
//! again after the wait; a 5xx or a lost answer may hide a change that was
//! made, so a request that changes something is retried then only when it
//! carries an idempotency key (or never reached the server), and otherwise
//! the caller resolves it by reading the platform's state. Errors are typed by what the caller can
//! do about them, never by message text. Each request is logged at `-v`
//! with its method, path, status, time and the platform's request id; the
//! token is sent, never logged or shown.

use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::time::Instant;

/// How requests are retried.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// The first backoff; it doubles with every retry, up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// No request, retries and waits included, takes longer than this.
    pub total: Duration,
    /// One attempt's timeout.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 6,
            base_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(8),
            total: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The default, with one attempt's timeout from
    /// `COPILOT_PROVIDER_REQUEST_TIMEOUT` (`10s`, `500ms`) when set: a slow
    /// network, or a test that stalls a platform on purpose.
    pub fn from_env() -> Self {
        let mut p = RetryPolicy::default();
        if let Some(t) = std::env::var("COPILOT_PROVIDER_REQUEST_TIMEOUT")
            .ok()
            .and_then(|t| t.parse::<crate::config::duration::Duration>().ok())
            .filter(|t| !t.as_std().is_zero())
        {
            p.request_timeout = t.as_std();
        }
        p
    }
}

/// What went wrong, as far as the caller's next move is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiErrorKind {
    /// A connection error, a timeout or a 5xx: trying later may work.
    Retryable,
    /// 429: the platform asks to slow down (for `retry_after`, when it says).
    Throttled { retry_after: Option<Duration> },
    /// 401 or 403: the token is missing, wrong or lacks a permission.
    Unauthorised,
    /// 404: the app, service or resource does not exist.
    NotFound,
    /// 409 or 412: someone else holds it, or it changed meanwhile.
    Conflict,
    /// Any other refusal (400, 422, ...): the request itself is wrong.
    Failed,
}

/// A request the platform did not carry out.
#[derive(Clone, Debug)]
pub struct ApiError {
    pub kind: ApiErrorKind,
    /// `GET /v1/apps/x/machines`: the path only, never the query.
    pub request: String,
    pub status: Option<u16>,
    /// What the platform said (its error message), or the transport error.
    pub message: String,
    /// The platform's id of the last attempt, for its support.
    pub request_id: Option<String>,
    pub attempts: u32,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(s) => write!(f, "{} answered {s}: {}", self.request, self.message)?,
            None => write!(f, "{}: {}", self.request, self.message)?,
        }
        if self.attempts > 1 {
            write!(f, " (after {} attempts)", self.attempts)?;
        }
        if let Some(id) = &self.request_id {
            write!(f, " [request id {id}]")?;
        }
        Ok(())
    }
}

impl std::error::Error for ApiError {}

/// A successful answer.
#[derive(Debug)]
pub struct ApiResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub request_id: Option<String>,
}

/// A platform's API: its base URL, its token and how to retry.
#[derive(Clone)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    policy: RetryPolicy,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("base", &self.base)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("policy", &self.policy)
            .finish()
    }
}

/// Headers in which platforms name a request.
const REQUEST_ID_HEADERS: &[&str] = &[
    "fly-request-id",
    "x-request-id",
    "x-amzn-requestid",
    "x-render-request-id",
    "x-github-request-id",
];

/// The header an idempotency key travels in.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

impl ApiClient {
    /// A client of the API at `base`; `token` goes out as `Authorization: Bearer`.
    pub fn new(base: &str, token: Option<String>, policy: RetryPolicy) -> Self {
        let http = reqwest::Client::builder()
            .user_agent(concat!("copilot/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(policy.request_timeout.min(Duration::from_secs(10)))
            .build()
            .expect("an HTTP client with a timeout builds");
        ApiClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
            policy,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Send `method path` with an optional JSON body. `idempotency_key`
    /// (derived by the caller from the deployment and its step) makes a
    /// changing request safe to retry, and is sent as `Idempotency-Key`.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        idempotency_key: Option<&str>,
    ) -> Result<ApiResponse, ApiError> {
        let key = idempotency_key.map(|k| (IDEMPOTENCY_KEY, k));
        self.request(
            method,
            path,
            body,
            key.as_slice(),
            idempotency_key.is_some(),
        )
        .await
    }

    /// The same, with extra headers (a platform's lease nonce), not retried
    /// for a POST unless it never left.
    pub async fn send_with(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<ApiResponse, ApiError> {
        self.request(method, path, body, headers, false).await
    }

    /// The same, for a change that is safe to send twice (it sets a state
    /// rather than adding something: cordon, uncordon): a 5xx or a lost
    /// answer is retried like a read.
    pub async fn send_repeatable(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Result<ApiResponse, ApiError> {
        self.request(method, path, body, headers, true).await
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
        idempotent: bool,
    ) -> Result<ApiResponse, ApiError> {
        let request = format!("{method} {}", path.split('?').next().unwrap_or(path));
        let safe_to_repeat = matches!(
            method,
            Method::GET | Method::HEAD | Method::PUT | Method::DELETE
        ) || idempotent;
        let deadline = Instant::now() + self.policy.total;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let started = Instant::now();
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.base))
                .timeout(self.policy.request_timeout);
            if let Some(token) = &self.token {
                let mut value =
                    HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| ApiError {
                        kind: ApiErrorKind::Unauthorised,
                        request: request.clone(),
                        status: None,
                        message: "the token holds characters a header cannot carry".into(),
                        request_id: None,
                        attempts: attempt,
                    })?;
                value.set_sensitive(true);
                req = req.header(reqwest::header::AUTHORIZATION, value);
            }
            for (name, value) in headers {
                req = req.header(*name, *value);
            }
            if let Some(body) = body {
                req = req.json(body);
            }
            let outcome = req.send().await;
            let (error, wait) = match outcome {
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    let request_id = request_id(&headers);
                    let text = resp.text().await.unwrap_or_default();
                    tracing::info!(
                        "{request} -> {} in {} ms{}",
                        status.as_u16(),
                        started.elapsed().as_millis(),
                        request_id
                            .as_deref()
                            .map(|id| format!(" (request id {id})"))
                            .unwrap_or_default()
                    );
                    if status.is_success() {
                        let body = if text.trim().is_empty() {
                            Value::Null
                        } else {
                            serde_json::from_str(&text).unwrap_or(Value::String(text))
                        };
                        return Ok(ApiResponse {
                            status: status.as_u16(),
                            headers,
                            body,
                            request_id,
                        });
                    }
                    let retry_after = server_wait(&headers);
                    let kind = kind_of(status, retry_after);
                    let error = ApiError {
                        kind,
                        request: request.clone(),
                        status: Some(status.as_u16()),
                        message: platform_message(&text, status),
                        request_id,
                        attempts: attempt,
                    };
                    let retry = match kind {
                        // Refused before it was acted on: always safe to send again.
                        ApiErrorKind::Throttled { .. } => true,
                        ApiErrorKind::Retryable => safe_to_repeat,
                        _ => false,
                    };
                    (error, retry.then_some(retry_after))
                }
                Err(e) => {
                    // A request that never reached the server can always be sent again.
                    let unsent = e.is_connect();
                    tracing::info!(
                        "{request} -> no answer in {} ms: {}",
                        started.elapsed().as_millis(),
                        describe(&e)
                    );
                    let error = ApiError {
                        kind: ApiErrorKind::Retryable,
                        request: request.clone(),
                        status: None,
                        message: describe(&e),
                        request_id: None,
                        attempts: attempt,
                    };
                    let retry = unsent || safe_to_repeat;
                    (error, retry.then_some(None))
                }
            };
            let Some(asked) = wait else {
                return Err(error);
            };
            if attempt >= self.policy.attempts {
                return Err(error);
            }
            let backoff = self.backoff(attempt);
            let pause = asked.map_or(backoff, |a| a.max(backoff.min(a + self.policy.base_delay)));
            if Instant::now() + pause > deadline {
                return Err(error);
            }
            tracing::info!("{request}: retrying in {} ms", pause.as_millis());
            tokio::time::sleep(pause).await;
        }
    }

    /// Exponential backoff with full jitter: a random wait between half and
    /// all of `base * 2^(attempt-1)`, capped.
    fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .policy
            .base_delay
            .saturating_mul(1u32 << (attempt - 1).min(16))
            .min(self.policy.max_delay);
        let unit = (uuid::Uuid::new_v4().as_u128() % 1000) as f64 / 1000.0;
        exp.mul_f64(0.5 + unit / 2.0)
    }
}

fn kind_of(status: StatusCode, retry_after: Option<Duration>) -> ApiErrorKind {
    match status.as_u16() {
        429 => ApiErrorKind::Throttled { retry_after },
        401 | 403 => ApiErrorKind::Unauthorised,
        404 => ApiErrorKind::NotFound,
        409 | 412 => ApiErrorKind::Conflict,
        500..=599 => ApiErrorKind::Retryable,
        _ => ApiErrorKind::Failed,
    }
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    REQUEST_ID_HEADERS
        .iter()
        .find_map(|h| headers.get(*h)?.to_str().ok().map(str::to_string))
}

/// How long the server asks to wait: `Retry-After` (seconds or an HTTP
/// date), else a rate-limit reset (`RateLimit-Reset`/`X-RateLimit-Reset`,
/// in seconds from now, or a Unix time when it is one).
fn server_wait(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name)?.to_str().ok().map(str::trim);
    if let Some(v) = text("retry-after") {
        if let Ok(secs) = v.parse::<f64>() {
            return Some(Duration::from_secs_f64(secs.clamp(0.0, 3600.0)));
        }
        if let Ok(at) = chrono::DateTime::parse_from_rfc2822(v) {
            let secs = (at.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_milliseconds();
            return Some(Duration::from_millis(secs.clamp(0, 3_600_000) as u64));
        }
    }
    for name in ["ratelimit-reset", "x-ratelimit-reset"] {
        if let Some(n) = text(name).and_then(|v| v.parse::<i64>().ok()) {
            let now = chrono::Utc::now().timestamp();
            // Large values are Unix times (GitHub's style), small ones delays.
            let secs = if n > 1_000_000_000 { n - now } else { n };
            return Some(Duration::from_secs(secs.clamp(0, 3600) as u64));
        }
    }
    None
}

/// The platform's own message out of an error body (`{"error": "..."}`,
/// `{"message": "..."}`), else the status' reason, cut short.
fn platform_message(text: &str, status: StatusCode) -> String {
    let from_json = serde_json::from_str::<Value>(text).ok().and_then(|v| {
        ["error", "message", "detail"]
            .iter()
            .find_map(|k| v.get(*k).and_then(Value::as_str).map(str::to_string))
    });
    let message = from_json.unwrap_or_else(|| {
        if text.trim().is_empty() {
            status.canonical_reason().unwrap_or("error").to_string()
        } else {
            text.trim().to_string()
        }
    });
    crate::config::diag::clip(&message, 300).into_owned()
}

fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    match std::error::Error::source(e) {
        Some(cause) => format!("{what}: {}", error_chain(cause)),
        None => what.to_string(),
    }
}

/// `v` percent-encoded for a URL path segment or query value: every byte of
/// its UTF-8 but unreserved characters (RFC 3986) is `%XX`.
pub fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An error and its causes on one line ("a: b: c"), each cause said once
/// even where an error repeats its source in its own text.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::http::{HeaderMap as AxumHeaders, StatusCode as S};
    use axum::response::IntoResponse;
    use axum::routing::any;

    use super::*;

    /// A server that answers each request with the next of `answers`, then 200.
    async fn server(
        answers: Vec<(u16, Vec<(&'static str, String)>)>,
    ) -> (
        String,
        Arc<AtomicUsize>,
        Arc<std::sync::Mutex<Vec<AxumHeaders>>>,
    ) {
        let count = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (c, s) = (count.clone(), seen.clone());
        let app = axum::Router::new().route(
            "/{*path}",
            any(move |headers: AxumHeaders| {
                let (c, s, answers) = (c.clone(), s.clone(), answers.clone());
                async move {
                    let n = c.fetch_add(1, Ordering::SeqCst);
                    s.lock().unwrap().push(headers);
                    let (code, hs) = answers.get(n).cloned().unwrap_or((200, Vec::new()));
                    let mut resp = (
                        S::from_u16(code).unwrap(),
                        [("x-request-id", format!("req-{n}"))],
                        format!(r#"{{"error": "answer {n}", "n": {n}}}"#),
                    )
                        .into_response();
                    for (k, v) in hs {
                        resp.headers_mut().insert(k, v.parse().unwrap());
                    }
                    resp
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}"), count, seen)
    }

    fn quick() -> RetryPolicy {
        RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(40),
            total: Duration::from_secs(10),
            request_timeout: Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn bursts_of_503_are_retried_until_an_answer() {
        let (base, count, _) = server(vec![(503, vec![]), (502, vec![]), (503, vec![])]).await;
        let api = ApiClient::new(&base, Some("tok".into()), quick());
        let r = api
            .send(Method::GET, "/v1/apps/a/machines", None, None)
            .await
            .unwrap();
        assert_eq!((r.status, count.load(Ordering::SeqCst)), (200, 4));
        assert_eq!(r.body["n"], 3);
        assert_eq!(r.request_id.as_deref(), Some("req-3"));
    }

    #[tokio::test]
    async fn a_429_waits_at_least_what_the_server_asks() {
        let (base, count, _) = server(vec![(429, vec![("retry-after", "1".into())])]).await;
        let api = ApiClient::new(&base, None, quick());
        let started = std::time::Instant::now();
        api.send(Method::GET, "/x", None, None).await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 2);
        // A lower bound: the retry did not come before the server allowed it.
        assert!(started.elapsed() >= Duration::from_secs(1));
    }

    #[tokio::test]
    async fn refusals_are_typed_and_not_retried() {
        for (code, kind) in [
            (401, ApiErrorKind::Unauthorised),
            (403, ApiErrorKind::Unauthorised),
            (404, ApiErrorKind::NotFound),
            (409, ApiErrorKind::Conflict),
            (422, ApiErrorKind::Failed),
        ] {
            let (base, count, _) = server(vec![(code, vec![])]).await;
            let api = ApiClient::new(&base, Some("s3cr3t-token".into()), quick());
            let e = api
                .send(Method::GET, "/v1/apps/a?secret=q", None, None)
                .await
                .unwrap_err();
            assert_eq!((e.kind, e.status), (kind, Some(code)));
            assert_eq!(count.load(Ordering::SeqCst), 1, "{code} is final");
            let shown = e.to_string();
            assert_eq!(e.request, "GET /v1/apps/a");
            assert!(
                shown.contains("answer 0") && shown.contains("req-0"),
                "{shown}"
            );
            assert!(!shown.contains("s3cr3t") && !format!("{api:?}").contains("s3cr3t"));
        }
    }

    #[tokio::test]
    async fn a_change_is_retried_only_under_an_idempotency_key() {
        let (base, count, _) = server(vec![(503, vec![])]).await;
        let api = ApiClient::new(&base, None, quick());
        let e = api
            .send(
                Method::POST,
                "/v1/apps/a/machines",
                Some(&serde_json::json!({})),
                None,
            )
            .await
            .unwrap_err();
        assert_eq!(
            (e.kind, count.load(Ordering::SeqCst)),
            (ApiErrorKind::Retryable, 1)
        );

        let (base, count, seen) = server(vec![(503, vec![]), (500, vec![])]).await;
        let api = ApiClient::new(&base, Some("tok".into()), quick());
        api.send(
            Method::POST,
            "/v1/apps/a/machines",
            Some(&serde_json::json!({})),
            Some("dep_1:deploy-idle:0"),
        )
        .await
        .unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 3);
        for h in seen.lock().unwrap().iter() {
            assert_eq!(h.get(IDEMPOTENCY_KEY).unwrap(), "dep_1:deploy-idle:0");
            assert_eq!(h.get("authorization").unwrap(), "Bearer tok");
        }
    }

    #[tokio::test]
    async fn a_429_is_retried_for_any_request() {
        let (base, count, seen) = server(vec![
            (429, vec![("retry-after", "0".into())]),
            (429, vec![]),
        ])
        .await;
        let api = ApiClient::new(&base, None, quick());
        let r = api
            .send_with(
                Method::POST,
                "/v1/apps/a/machines/m/cordon",
                None,
                &[("fly-machine-lease-nonce", "n1")],
            )
            .await
            .unwrap();
        assert_eq!((r.status, count.load(Ordering::SeqCst)), (200, 3));
        assert!(
            seen.lock()
                .unwrap()
                .iter()
                .all(|h| h.get("fly-machine-lease-nonce").unwrap() == "n1")
        );
    }

    #[tokio::test]
    async fn retries_stop_at_the_attempt_limit_and_the_total_time() {
        let (base, count, _) = server(vec![(503, vec![]); 10]).await;
        let api = ApiClient::new(&base, None, quick());
        let e = api.send(Method::GET, "/x", None, None).await.unwrap_err();
        assert_eq!((e.attempts, count.load(Ordering::SeqCst)), (5, 5));
        assert!(e.to_string().contains("after 5 attempts"), "{e}");
        // A server that asks for longer than the total allows is not waited for.
        let (base, count, _) = server(vec![(429, vec![("retry-after", "60".into())])]).await;
        let api = ApiClient::new(&base, None, quick());
        let e = api.send(Method::GET, "/x", None, None).await.unwrap_err();
        assert_eq!(
            e.kind,
            ApiErrorKind::Throttled {
                retry_after: Some(Duration::from_secs(60))
            }
        );
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_closed_port_is_retryable_and_said_so() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let api = ApiClient::new(&format!("http://127.0.0.1:{port}"), None, quick());
        let e = api.send(Method::POST, "/x", None, None).await.unwrap_err();
        // Never sent, so even an unkeyed POST was tried again.
        assert_eq!(
            (e.kind, e.status, e.attempts),
            (ApiErrorKind::Retryable, None, 5)
        );
        assert!(e.message.starts_with("cannot connect"), "{e}");
    }

    #[test]
    fn server_waits_from_headers() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(server_wait(&h), Some(Duration::from_secs(2)));
        let mut h = HeaderMap::new();
        h.insert("ratelimit-reset", "7".parse().unwrap());
        assert_eq!(server_wait(&h), Some(Duration::from_secs(7)));
        let mut h = HeaderMap::new();
        let soon = chrono::Utc::now().timestamp() + 30;
        h.insert("x-ratelimit-reset", soon.to_string().parse().unwrap());
        let w = server_wait(&h).unwrap();
        assert!(
            w <= Duration::from_secs(30) && w >= Duration::from_secs(28),
            "{w:?}"
        );
        assert_eq!(server_wait(&HeaderMap::new()), None);
    }
}
