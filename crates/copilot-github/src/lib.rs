//! GitHub, told what copilot does: a GitHub Deployment per deployment with
//! its statuses as the lifecycle events arrive, one comment per pull
//! request kept up to date, a check run per gate run, and whether a pull
//! request is still open (for `preview gc`).
//!
//! Nothing here ever fails or blocks a deployment. Everything copilot tells
//! GitHub is first written to the ledger's outbox, then sent in order. A
//! GitHub that does not answer, or asks copilot to slow down (403 or 429
//! with `Retry-After` or `x-ratelimit-reset`), is asked again within
//! bounds; past them the items stay in the outbox with a warning, and the
//! next command that reaches GitHub sends them, oldest first. An item
//! GitHub refuses (a 4xx that is not a rate limit) is recorded as refused
//! and never sent again, so it cannot hold up the ones behind it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, StatusCode, header};
use octocrab::Octocrab;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use copilot_core::clock;
use copilot_core::http::RetryPolicy;
use copilot_core::model::{Arena, Tier};
use copilot_engine::rollout::events::{Event, EventSink};
use copilot_ledger::{Ledger, NewOutboxItem, OutboxItem};

/// The marker that finds copilot's comment on a pull request again.
pub const COMMENT_MARKER: &str = "<!-- copilot:preview -->";

/// Where GitHub is, which repository, and the token copilot uses.
#[derive(Clone)]
pub struct Settings {
    /// The REST API's base (`https://api.github.com`, or a GitHub
    /// Enterprise server's `https://HOST/api/v3`), without a trailing `/`.
    pub api: String,
    /// `owner/name`.
    pub repository: String,
    token: String,
    /// Where a deployment's evidence is read (a status's `log_url`): a
    /// template with `{deployment}`, or the GitHub Actions run.
    pub log_url: Option<String>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("api", &self.api)
            .field("repository", &self.repository)
            .field("token", &"<redacted>")
            .field("log_url", &self.log_url)
            .finish()
    }
}

impl Settings {
    /// From the variables GitHub Actions sets: `GITHUB_TOKEN`,
    /// `GITHUB_REPOSITORY`, `GITHUB_API_URL`; `COPILOT_EVIDENCE_URL` (with
    /// `{deployment}`) for the log URL, else the Actions run
    /// (`GITHUB_SERVER_URL`, `GITHUB_RUN_ID`). `None` without a token.
    pub fn from_env() -> Result<Option<Settings>, String> {
        Self::from_lookup(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Settings>, String> {
        let Some(token) = get("GITHUB_TOKEN") else {
            return Ok(None);
        };
        let repository = get("GITHUB_REPOSITORY")
            .ok_or("GITHUB_TOKEN is set but GITHUB_REPOSITORY (owner/name) is not")?;
        let valid = |part: &str| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        };
        match repository.split_once('/') {
            Some((owner, name)) if valid(owner) && valid(name) => {}
            _ => {
                return Err(format!(
                    "GITHUB_REPOSITORY `{repository}` is not `owner/name`"
                ));
            }
        }
        let api = get("GITHUB_API_URL")
            .unwrap_or_else(|| "https://api.github.com".into())
            .trim_end_matches('/')
            .to_string();
        if !(api.starts_with("https://") || api.starts_with("http://")) {
            return Err(format!("GITHUB_API_URL `{api}` is not an http(s) URL"));
        }
        let actions_run = match (get("GITHUB_SERVER_URL"), get("GITHUB_RUN_ID")) {
            (Some(server), Some(run)) => Some(format!(
                "{}/{repository}/actions/runs/{run}",
                server.trim_end_matches('/')
            )),
            _ => None,
        };
        Ok(Some(Settings {
            api,
            repository,
            token,
            log_url: get("COPILOT_EVIDENCE_URL").or(actions_run),
        }))
    }

    fn log_url(&self, deployment: &str) -> Option<String> {
        self.log_url
            .as_ref()
            .map(|t| t.replace("{deployment}", deployment))
    }
}

/// Why a request did not get through.
#[derive(Debug)]
enum Failure {
    /// GitHub did not answer, failed, or rate-limited past our bounds:
    /// the item stays pending.
    Unreachable(String),
    /// GitHub answered that it will not do it: sending again will not help.
    Refused(String),
}

/// One attempt's outcome.
enum Once {
    Done(Value),
    Again {
        after: Option<Duration>,
        why: String,
    },
    Refused(String),
}

/// What a flush of the outbox did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flushed {
    pub sent: usize,
    pub refused: usize,
    /// Still in the outbox (GitHub unreachable).
    pub pending: usize,
}

/// A pull request's state, as `preview gc` needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullState {
    Open,
    Closed,
    Merged,
}

/// A connection to one repository, with the ledger its outbox lives in.
pub struct GitHub {
    octo: Octocrab,
    s: Settings,
    /// The ledger of the outbox, given by the first executor to follow.
    ledger: std::sync::OnceLock<Ledger>,
    policy: RetryPolicy,
    /// GitHub was found unreachable by this process: later flushes wait
    /// for the end of the command instead of waiting out the bounds again.
    unreachable: AtomicBool,
    /// Said once per process.
    warned: AtomicBool,
    /// Flushes one at a time, so that items go out in order.
    flushing: tokio::sync::Mutex<()>,
    /// The sinks' channel to the relay.
    #[allow(clippy::type_complexity)]
    events: (
        Mutex<Option<mpsc::UnboundedSender<Queued>>>,
        Mutex<Option<mpsc::UnboundedReceiver<Queued>>>,
    ),
}

impl GitHub {
    pub fn new(s: Settings) -> Result<GitHub, String> {
        let policy = github_policy();
        let octo = Octocrab::builder()
            .personal_token(s.token.clone())
            .base_uri(s.api.as_str())
            .map_err(|e| format!("GITHUB_API_URL `{}`: {e}", s.api))?
            .set_connect_timeout(Some(policy.request_timeout.min(Duration::from_secs(10))))
            .set_read_timeout(Some(policy.request_timeout))
            .build()
            .map_err(|e| format!("the GitHub client: {e}"))?;
        Ok(GitHub {
            octo,
            s,
            ledger: std::sync::OnceLock::new(),
            policy,
            unreachable: AtomicBool::new(false),
            warned: AtomicBool::new(false),
            flushing: tokio::sync::Mutex::new(()),
            events: {
                let (tx, rx) = mpsc::unbounded_channel();
                (Mutex::new(Some(tx)), Mutex::new(Some(rx)))
            },
        })
    }

    pub fn settings(&self) -> &Settings {
        &self.s
    }

    /// Keep the outbox in `ledger` (the command's; the first one given).
    pub fn attach(&self, ledger: &Ledger) {
        let _ = self.ledger.set(ledger.unfenced());
    }

    fn ledger(&self) -> Option<&Ledger> {
        self.ledger.get()
    }

    fn repo_path(&self, rest: &str) -> String {
        format!("/repos/{}{rest}", self.s.repository)
    }

    // ---- requests -----------------------------------------------------

    async fn once(&self, method: &Method, path: &str, body: Option<&Value>) -> Once {
        let what = format!("{method} {path}");
        let builder = http::Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.s.api))
            .header(header::ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28");
        let request = match self.octo.build_request(builder, body) {
            Ok(r) => r,
            Err(e) => return Once::Refused(format!("{what}: {e}")),
        };
        let response =
            match tokio::time::timeout(self.policy.request_timeout, self.octo.execute(request))
                .await
            {
                Err(_) => {
                    return Once::Again {
                        after: None,
                        why: format!(
                            "{what}: no answer within {} s",
                            self.policy.request_timeout.as_secs()
                        ),
                    };
                }
                Ok(Err(e)) => {
                    return Once::Again {
                        after: None,
                        why: format!("{what}: {}", copilot_core::http::error_chain(&e)),
                    };
                }
                Ok(Ok(r)) => r,
            };
        let status = response.status();
        let headers = response.headers().clone();
        let text = match self.octo.body_to_string(response).await {
            Ok(t) => t,
            Err(e) => {
                return Once::Again {
                    after: None,
                    why: format!("{what}: the answer was cut off ({e})"),
                };
            }
        };
        if status.is_success() {
            return Once::Done(serde_json::from_str(&text).unwrap_or(Value::Null));
        }
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| text.chars().take(200).collect());
        let why = format!("{what} answered {}: {message}", status.as_u16());
        let limited = headers
            .get("x-ratelimit-remaining")
            .is_some_and(|v| v == "0")
            || headers.contains_key(header::RETRY_AFTER)
            || message.to_ascii_lowercase().contains("rate limit");
        match status {
            StatusCode::TOO_MANY_REQUESTS => Once::Again {
                after: retry_after(&headers),
                why,
            },
            StatusCode::FORBIDDEN if limited => Once::Again {
                after: retry_after(&headers),
                why,
            },
            s if s.is_server_error() => Once::Again { after: None, why },
            _ => Once::Refused(why),
        }
    }

    /// A request, asked again within the policy's bounds while GitHub may
    /// take it later.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let started = Instant::now();
        let mut delay = self.policy.base_delay;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (after, why) = match self.once(&method, path, body).await {
                Once::Done(v) => return Ok(v),
                Once::Refused(why) => return Err(Failure::Refused(why)),
                Once::Again { after, why } => (after, why),
            };
            let wait = after.unwrap_or(delay).max(delay);
            if attempt >= self.policy.attempts || started.elapsed() + wait > self.policy.total {
                let why = if attempt > 1 {
                    format!("{why} (after {attempt} attempts)")
                } else {
                    why
                };
                return Err(Failure::Unreachable(why));
            }
            tracing::info!("{why}; again in {} ms", wait.as_millis());
            tokio::time::sleep(wait).await;
            delay = (delay * 2).min(self.policy.max_delay);
        }
    }

    // ---- the outbox ---------------------------------------------------

    /// Put `kind` with `payload` in the outbox, behind everything before it.
    pub async fn queue(
        &self,
        kind: &str,
        deployment: Option<&str>,
        arena: Option<&str>,
        release: Option<&str>,
        payload: Value,
    ) {
        let item = NewOutboxItem {
            repository: self.s.repository.clone(),
            kind: kind.to_string(),
            deployment_id: deployment.map(str::to_string),
            arena: arena.map(str::to_string),
            release_id: release.map(str::to_string),
            payload,
        };
        let Some(ledger) = self.ledger() else {
            return;
        };
        if let Err(e) = ledger.queue_github(&item, clock::now()).await {
            tracing::warn!("GitHub is not told of a {kind}: the ledger did not take it ({e})");
        }
    }

    /// Send what the outbox holds for this repository, oldest first,
    /// stopping at the first item GitHub does not take.
    pub async fn flush(&self) -> Flushed {
        let _one = self.flushing.lock().await;
        let mut out = Flushed::default();
        let Some(ledger) = self.ledger() else {
            return out;
        };
        let items = match ledger.pending_github(&self.s.repository).await {
            Ok(items) => items,
            Err(e) => {
                tracing::warn!("cannot read the GitHub outbox: {e}");
                return out;
            }
        };
        let total = items.len();
        let me = format!("{}:{}", clock::actor(), std::process::id());
        for (n, item) in items.into_iter().enumerate() {
            // One sender per item: another process sending it now goes on
            // in order from there, and this one stops.
            let real = chrono::Utc::now();
            let until =
                real + chrono::Duration::from_std(self.policy.total * 2).unwrap_or_default();
            match ledger.claim_github(item.id, &me, until, real).await {
                Ok(true) => {}
                Ok(false) => {
                    out.pending = total - n;
                    return out;
                }
                Err(e) => {
                    tracing::warn!("cannot claim a GitHub update: {e}");
                    out.pending = total - n;
                    return out;
                }
            }
            let now = clock::now();
            match self.send(&item).await {
                Ok(result) => {
                    out.sent += 1;
                    let _ = ledger
                        .github_attempted(item.id, "sent", None, result.as_ref(), now)
                        .await;
                }
                Err(Failure::Refused(why)) => {
                    out.refused += 1;
                    tracing::warn!("GitHub refused a {}: {why}", item.kind);
                    let _ = ledger
                        .github_attempted(item.id, "refused", Some(&why), None, now)
                        .await;
                }
                Err(Failure::Unreachable(why)) => {
                    out.pending = total - n;
                    let _ = ledger
                        .github_attempted(item.id, "pending", Some(&why), None, now)
                        .await;
                    self.unreachable.store(true, Ordering::SeqCst);
                    if !self.warned.swap(true, Ordering::SeqCst) {
                        tracing::warn!(
                            "GitHub is not told for now: {why}; {} update(s) wait in the ledger and go out, in order, with the next command that reaches GitHub (`copilot github sync`)",
                            out.pending
                        );
                    }
                    return out;
                }
            }
        }
        if out.sent > 0 && self.unreachable.swap(false, Ordering::SeqCst) {
            tracing::warn!("GitHub answers again: the updates it missed were sent");
        }
        out
    }

    /// Send one item; what later items need of its answer comes back.
    async fn send(&self, item: &OutboxItem) -> Result<Option<Value>, Failure> {
        let p = &item.payload.0;
        match item.kind.as_str() {
            "deployment" => {
                let created = self
                    .call(
                        Method::POST,
                        &self.repo_path("/deployments"),
                        Some(&p["request"]),
                    )
                    .await?;
                let id = created["id"].as_i64().ok_or_else(|| {
                    Failure::Refused(format!(
                        "GitHub created no deployment: {}",
                        created["message"].as_str().unwrap_or("no id in the answer")
                    ))
                })?;
                Ok(Some(json!({ "id": id })))
            }
            "status" => {
                let repo = &self.s.repository;
                let ledger = self
                    .ledger()
                    .ok_or_else(|| Failure::Unreachable("no ledger".into()))?;
                let target = match (&item.deployment_id, p["of_release"].as_str()) {
                    (_, Some(release)) => {
                        let arena = item.arena.as_deref().unwrap_or_default();
                        ledger
                            .github_deployment_of_release(repo, arena, release)
                            .await
                    }
                    (Some(dep), None) => ledger.github_deployment_of(repo, dep).await,
                    (None, None) => Ok(None),
                }
                .map_err(|e| Failure::Unreachable(format!("the ledger: {e}")))?;
                let Some(id) = target else {
                    // A release deployed before GitHub was told of
                    // anything: there is no GitHub deployment to mark.
                    return Err(Failure::Refused(
                        "no GitHub deployment of that release is known".into(),
                    ));
                };
                self.call(
                    Method::POST,
                    &self.repo_path(&format!("/deployments/{id}/statuses")),
                    Some(&p["request"]),
                )
                .await?;
                Ok(None)
            }
            "comment" => {
                let pr = p["pr"].as_u64().unwrap_or_default();
                let marker = p["marker"].as_str().unwrap_or(COMMENT_MARKER);
                let body = json!({ "body": p["body"] });
                match self.find_comment(pr, marker).await? {
                    Some(id) => {
                        self.call(
                            Method::PATCH,
                            &self.repo_path(&format!("/issues/comments/{id}")),
                            Some(&body),
                        )
                        .await?;
                        Ok(Some(json!({ "id": id, "updated": true })))
                    }
                    None => {
                        let made = self
                            .call(
                                Method::POST,
                                &self.repo_path(&format!("/issues/{pr}/comments")),
                                Some(&body),
                            )
                            .await?;
                        Ok(Some(json!({ "id": made["id"], "updated": false })))
                    }
                }
            }
            "check-run" => {
                let made = self
                    .call(
                        Method::POST,
                        &self.repo_path("/check-runs"),
                        Some(&p["request"]),
                    )
                    .await?;
                Ok(Some(json!({ "id": made["id"] })))
            }
            other => Err(Failure::Refused(format!("unknown outbox item `{other}`"))),
        }
    }

    /// The id of the comment on pull request `pr` that holds `marker`.
    async fn find_comment(&self, pr: u64, marker: &str) -> Result<Option<i64>, Failure> {
        for page in 1..=20 {
            let path = self.repo_path(&format!("/issues/{pr}/comments?per_page=100&page={page}"));
            let list = self.call(Method::GET, &path, None).await?;
            let Some(list) = list.as_array() else {
                return Ok(None);
            };
            if let Some(found) = list
                .iter()
                .find(|c| c["body"].as_str().is_some_and(|b| b.contains(marker)))
            {
                return Ok(found["id"].as_i64());
            }
            if list.len() < 100 {
                break;
            }
        }
        Ok(None)
    }

    /// Whether pull request `pr` is open, closed or merged. Read through
    /// the issue it is (every pull request is one): closed with a
    /// `pull_request.merged_at` is merged.
    pub async fn pull_state(&self, pr: u64) -> Result<PullState, String> {
        let path = self.repo_path(&format!("/pulls/{pr}"));
        let v = self
            .call(Method::GET, &path, None)
            .await
            .map_err(|f| match f {
                Failure::Unreachable(w) | Failure::Refused(w) => w,
            })?;
        Ok(
            match (
                v["state"].as_str(),
                v["merged"].as_bool() == Some(true) || !v["merged_at"].is_null(),
            ) {
                (Some("open"), _) => PullState::Open,
                (_, true) => PullState::Merged,
                _ => PullState::Closed,
            },
        )
    }

    // ---- what copilot says --------------------------------------------

    /// Queue the comment on pull request `pr` (created once, then edited).
    pub async fn comment(&self, pr: u64, body: &str) {
        let body = format!("{COMMENT_MARKER}\n{body}");
        self.queue(
            "comment",
            None,
            None,
            None,
            json!({ "pr": pr, "marker": COMMENT_MARKER, "body": body }),
        )
        .await;
    }

    /// Queue a completed check run on commit `sha`.
    pub async fn check_run(&self, request: Value) {
        self.queue("check-run", None, None, None, json!({ "request": request }))
            .await;
    }

    /// An event sink for the executor of arena `a` (served at `url`): it
    /// queues each event for [`GitHub::relay`] and returns.
    pub fn follow(&self, a: &Arena, url: String) -> Box<dyn EventSink> {
        let facts = Arc::new(ArenaFacts {
            name: a.name.clone(),
            transient: a.tier == Tier::Preview,
            production: a.tier == Tier::Production,
            url,
        });
        let tx = self.events.0.lock().ok().and_then(|tx| tx.clone());
        Box::new(Sink { facts, tx })
    }

    /// Turn the events of the command's executors into outbox items and
    /// send them as they come; ends once [`GitHub::close`] was called and
    /// every sink is gone, with one last flush. Runs beside the command,
    /// on its task.
    pub async fn relay(&self) {
        let rx = self.events.1.lock().ok().and_then(|mut rx| rx.take());
        let Some(mut rx) = rx else {
            return;
        };
        let mut started = std::collections::BTreeSet::new();
        while let Some((facts, event)) = rx.recv().await {
            self.translate(&facts, &event, &mut started).await;
            if !self.unreachable.load(Ordering::SeqCst) {
                self.flush().await;
            }
        }
        self.flush().await;
    }

    /// The command is over: the relay ends once the sinks are gone.
    pub fn close(&self) {
        if let Ok(mut tx) = self.events.0.lock() {
            tx.take();
        }
    }

    /// A deployment status as GitHub takes it.
    fn status_payload(
        &self,
        a: &ArenaFacts,
        dep_id: &str,
        state: &str,
        description: &str,
    ) -> Value {
        let mut request = json!({
            "state": state,
            "description": truncate(description, 140),
            "environment": a.name,
            "auto_inactive": false,
        });
        if matches!(state, "success" | "in_progress" | "queued") && !a.url.is_empty() {
            request["environment_url"] = json!(a.url);
        }
        if let Some(log) = self.s.log_url(dep_id) {
            request["log_url"] = json!(log);
        }
        json!({ "request": request })
    }

    /// The outbox items an event makes.
    async fn translate(
        &self,
        a: &ArenaFacts,
        event: &Event,
        started: &mut std::collections::BTreeSet<String>,
    ) {
        let dep_id = event.deployment().to_string();
        match event {
            Event::DeploymentStarted {
                release,
                kind,
                strategy,
                ..
            } => {
                // The event names the release as people do (its version).
                let release_row = match self.ledger() {
                    Some(l) => l.find_release(release).await.ok(),
                    None => None,
                };
                let (git_ref, version, release_id) = match &release_row {
                    Some(r) => (
                        r.git_sha.clone().unwrap_or_else(|| r.version.clone()),
                        r.version.clone(),
                        r.id.clone(),
                    ),
                    None => (release.clone(), release.clone(), release.clone()),
                };
                let release = &release_id;
                let request = json!({
                    "ref": git_ref,
                    "task": format!("deploy:{kind}"),
                    "environment": a.name,
                    "description": truncate(&format!("copilot {kind} of {version} ({strategy})"), 140),
                    "auto_merge": false,
                    "required_contexts": [],
                    "transient_environment": a.transient,
                    "production_environment": a.production,
                    "payload": { "copilot": { "deployment": dep_id, "release": version, "kind": kind } },
                });
                self.queue(
                    "deployment",
                    Some(&dep_id),
                    Some(&a.name),
                    Some(release),
                    json!({ "request": request }),
                )
                .await;
                self.queue(
                    "status",
                    Some(&dep_id),
                    Some(&a.name),
                    Some(release),
                    self.status_payload(
                        a,
                        &dep_id,
                        "queued",
                        &format!("{version}: recorded, about to start"),
                    ),
                )
                .await;
            }
            Event::StepStarted { name, .. } if started.insert(dep_id.clone()) => {
                self.queue(
                    "status",
                    Some(&dep_id),
                    Some(&a.name),
                    None,
                    self.status_payload(a, &dep_id, "in_progress", &format!("{name} started")),
                )
                .await;
            }
            Event::Finished { state, summary, .. } => {
                let Some(Ok(Some(row))) = (match self.ledger() {
                    Some(l) => Some(l.deployment(&dep_id).await),
                    None => None,
                }) else {
                    return;
                };
                let row = row.deployment;
                let previous = row.previous_release_id.filter(|p| *p != row.release_id);
                let (mine, theirs) = match state.as_str() {
                    "succeeded" => ("success", Some("inactive")),
                    // Traffic went back to the previous release: it serves again.
                    "rolled-back" => ("failure", Some("success")),
                    "aborted" => ("error", Some("success")),
                    // A gate refused it, or it failed before any traffic moved.
                    "failed" | "refused" => ("failure", None),
                    _ => ("error", None),
                };
                self.queue(
                    "status",
                    Some(&dep_id),
                    Some(&a.name),
                    Some(&row.release_id),
                    self.status_payload(a, &dep_id, mine, summary),
                )
                .await;
                if let (Some(prev), Some(theirs)) = (previous, theirs) {
                    let mut payload = self.status_payload(
                        a,
                        &dep_id,
                        theirs,
                        &if theirs == "inactive" {
                            format!("replaced by {}", row.release_id)
                        } else {
                            format!("serves again: {summary}")
                        },
                    );
                    payload["of_release"] = json!(prev);
                    self.queue("status", Some(&dep_id), Some(&a.name), Some(&prev), payload)
                        .await;
                }
            }
            _ => {}
        }
    }
}

/// What the statuses of an arena's deployments carry.
struct ArenaFacts {
    name: String,
    transient: bool,
    production: bool,
    url: String,
}

type Queued = (Arc<ArenaFacts>, Event);

/// The executor's end of the channel: queues and returns.
struct Sink {
    facts: Arc<ArenaFacts>,
    tx: Option<mpsc::UnboundedSender<Queued>>,
}

impl EventSink for Sink {
    fn emit(&self, event: &Event) -> Result<(), String> {
        if let Some(tx) = &self.tx {
            tx.send((self.facts.clone(), event.clone()))
                .map_err(|_| "the GitHub relay has stopped".to_string())?;
        }
        Ok(())
    }

    fn name(&self) -> String {
        "GitHub".into()
    }
}

/// How GitHub is asked again: a few times within half a minute, so that a
/// GitHub that is down costs a command seconds, never its deployment.
fn github_policy() -> RetryPolicy {
    let mut p = RetryPolicy::from_env();
    p.attempts = std::env::var("COPILOT_GITHUB_ATTEMPTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    p.total = Duration::from_secs(30);
    p.request_timeout = p.request_timeout.min(Duration::from_secs(10));
    p
}

/// How long GitHub asks to be left alone: `Retry-After` seconds, else
/// until `x-ratelimit-reset` (epoch seconds).
fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(secs) = text("retry-after").and_then(|v| v.trim().parse::<u64>().ok()) {
        return Some(Duration::from_secs(secs));
    }
    let reset = text("x-ratelimit-reset").and_then(|v| v.trim().parse::<i64>().ok())?;
    let now = chrono::Utc::now().timestamp();
    Some(Duration::from_secs(u64::try_from(reset - now).unwrap_or(0)))
}

fn truncate(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_come_from_the_actions_variables() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(Settings::from_lookup(env(&[])).unwrap().is_none());
        let s = Settings::from_lookup(env(&[
            ("GITHUB_TOKEN", "t0ken"),
            ("GITHUB_REPOSITORY", "acme/shop"),
            ("GITHUB_SERVER_URL", "https://github.com"),
            ("GITHUB_RUN_ID", "42"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(s.api, "https://api.github.com");
        assert_eq!(
            s.log_url("dep_1").as_deref(),
            Some("https://github.com/acme/shop/actions/runs/42")
        );
        assert!(!format!("{s:?}").contains("t0ken"));
        let e = Settings::from_lookup(env(&[("GITHUB_TOKEN", "t")])).unwrap_err();
        assert!(e.contains("GITHUB_REPOSITORY"), "{e}");
        let e = Settings::from_lookup(env(&[
            ("GITHUB_TOKEN", "t"),
            ("GITHUB_REPOSITORY", "no-slash"),
        ]))
        .unwrap_err();
        assert!(e.contains("owner/name"), "{e}");
    }

    #[test]
    fn rate_limits_say_how_long_to_wait() {
        let mut h = http::HeaderMap::new();
        h.insert("retry-after", "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        let mut h = http::HeaderMap::new();
        let reset = chrono::Utc::now().timestamp() + 3;
        h.insert("x-ratelimit-reset", reset.to_string().parse().unwrap());
        assert!(retry_after(&h).is_some_and(|d| d <= Duration::from_secs(3)));
        assert_eq!(retry_after(&http::HeaderMap::new()), None);
    }
}
