//! An emulated GitHub REST API for one repository: deployments and their
//! statuses, issue comments, check runs and pull requests, answering only
//! through Stoplight Prism (`prism proxy --errors`) with
//! `tests/specs/github.prism.json` (GitHub's own description, see
//! `tests/specs/github_extract.py`).
//!
//! Its answers are GitHub's own examples from that description with the
//! fields of the object at hand filled in, so that they keep to the
//! description's schemas field for field. Faults are the ones GitHub
//! throws: a GitHub that is down (503), and rate limits, both as a
//! secondary rate limit (403 with `x-ratelimit-remaining: 0` and
//! `x-ratelimit-reset`) and as a 429 with `Retry-After`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use serde_json::{Value, json};

use crate::common::free_port;

pub const TOKEN: &str = "ghs_emulated0123456789";

/// A fault GitHub throws.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// 503 to everything.
    Down,
    /// 403, `x-ratelimit-remaining: 0`, reset in `secs`.
    RateLimited { secs: u64 },
    /// 429 with `Retry-After: secs`.
    TooMany { secs: u64 },
}

#[derive(Default)]
struct World {
    examples: BTreeMap<String, Value>,
    next_id: i64,
    deployments: Vec<Value>,
    statuses: BTreeMap<i64, Vec<Value>>,
    comments: Vec<(u64, Value)>,
    check_runs: Vec<Value>,
    /// number -> (state, merged)
    pulls: BTreeMap<u64, (String, bool)>,
    fault: Option<Fault>,
    /// Requests answered with a fault.
    faulted: usize,
    /// `METHOD /path` of every request that reached the emulator.
    requests: Vec<String>,
}

type Shared = Arc<Mutex<World>>;

pub struct GitHubEmulator {
    world: Shared,
    pub repository: String,
    /// Where copilot reaches it: Prism.
    pub api: String,
    prism: Child,
    prism_log: PathBuf,
    runtime: Option<tokio::runtime::Runtime>,
    _dir: tempfile::TempDir,
}

const SPEC: &str = "tests/specs/github.prism.json";

impl GitHubEmulator {
    pub fn start(repository: &str) -> Self {
        let prism_bin = std::path::absolute("tests/prism/node_modules/.bin/prism").unwrap();
        assert!(
            prism_bin.exists(),
            "Prism is not installed: run `npm ci --prefix tests/prism` (scripts/test.sh does)"
        );
        let spec_path = std::path::absolute(SPEC).unwrap();
        let spec: Value = serde_json::from_slice(&std::fs::read(&spec_path).unwrap()).unwrap();
        let examples = spec["components"]["examples"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v["value"].clone()))
            .collect();
        let world = Arc::new(Mutex::new(World {
            examples,
            next_id: 1000,
            ..World::default()
        }));
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let port = free_port();
        let app = Router::new()
            .route(
                "/repos/{owner}/{repo}/deployments",
                post(create_deployment).get(list_deployments),
            )
            .route(
                "/repos/{owner}/{repo}/deployments/{id}/statuses",
                post(create_status).get(list_statuses),
            )
            .route(
                "/repos/{owner}/{repo}/issues/{n}/comments",
                get(list_comments).post(create_comment),
            )
            .route(
                "/repos/{owner}/{repo}/issues/comments/{id}",
                patch(update_comment),
            )
            .route("/repos/{owner}/{repo}/check-runs", post(create_check_run))
            .route("/repos/{owner}/{repo}/pulls/{n}", get(get_pull))
            .layer(axum::middleware::from_fn_with_state(world.clone(), gate))
            .with_state(world.clone());
        {
            let listener = runtime
                .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
                .unwrap();
            runtime.spawn(async move { axum::serve(listener, app).await.unwrap() });
        }
        let prism_port = free_port();
        let prism_log = dir.path().join("prism.log");
        let log = std::fs::File::create(&prism_log).unwrap();
        let prism = Command::new(&prism_bin)
            .args(["proxy", "--errors", "-h", "127.0.0.1", "-p"])
            .arg(prism_port.to_string())
            .arg(&spec_path)
            .arg(format!("http://127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prism");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", prism_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "Prism did not start: {}",
                std::fs::read_to_string(&prism_log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        GitHubEmulator {
            world,
            repository: repository.to_string(),
            api: format!("http://127.0.0.1:{prism_port}"),
            prism,
            prism_log,
            runtime: Some(runtime),
            _dir: dir,
        }
    }

    /// What a copilot command needs to tell this GitHub.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("GITHUB_TOKEN", TOKEN.to_string()),
            ("GITHUB_REPOSITORY", self.repository.clone()),
            ("GITHUB_API_URL", self.api.clone()),
            (
                "COPILOT_EVIDENCE_URL",
                "https://ci.example/evidence/{deployment}".into(),
            ),
        ]
    }

    pub fn set_fault(&self, fault: Option<Fault>) {
        self.world.lock().unwrap().fault = fault;
    }

    pub fn faulted(&self) -> usize {
        self.world.lock().unwrap().faulted
    }

    pub fn set_pull(&self, number: u64, state: &str, merged: bool) {
        self.world
            .lock()
            .unwrap()
            .pulls
            .insert(number, (state.to_string(), merged));
    }

    pub fn deployments(&self) -> Vec<Value> {
        self.world.lock().unwrap().deployments.clone()
    }

    /// The states of deployment `id`'s statuses, oldest first.
    pub fn states(&self, id: i64) -> Vec<String> {
        self.world
            .lock()
            .unwrap()
            .statuses
            .get(&id)
            .map(|s| {
                s.iter()
                    .map(|s| s["state"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn statuses(&self, id: i64) -> Vec<Value> {
        self.world
            .lock()
            .unwrap()
            .statuses
            .get(&id)
            .cloned()
            .unwrap_or_default()
    }

    pub fn comments(&self, pr: u64) -> Vec<Value> {
        self.world
            .lock()
            .unwrap()
            .comments
            .iter()
            .filter(|(n, _)| *n == pr)
            .map(|(_, c)| c.clone())
            .collect()
    }

    pub fn check_runs(&self) -> Vec<Value> {
        self.world.lock().unwrap().check_runs.clone()
    }

    pub fn requests(&self) -> Vec<String> {
        self.world.lock().unwrap().requests.clone()
    }

    /// Requests Prism passed on, checked against the description.
    pub fn checked_by_prism(&self) -> usize {
        std::fs::read_to_string(&self.prism_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Forwarding"))
            .count()
    }

    /// What Prism found breaking the description. The rate-limit and
    /// outage statuses GitHub sends are not in the description of each
    /// operation (GitHub documents them once, for every endpoint), so
    /// those are not counted.
    pub fn violations(&self) -> Vec<String> {
        std::fs::read_to_string(&self.prism_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                (l.contains("Violation") || l.contains("✖"))
                    && !l.contains("Unable to match the returned status code")
            })
            .map(str::to_string)
            .collect()
    }
}

impl Drop for GitHubEmulator {
    fn drop(&mut self) {
        let _ = self.prism.kill();
        let _ = self.prism.wait();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

// ---------------------------------------------------------------- server

/// The token, the faults, the request log.
async fn gate(
    State(w): State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let line = format!("{} {}", req.method(), req.uri().path());
    let fault = {
        let mut w = w.lock().unwrap();
        w.requests.push(line);
        if w.fault.is_some() {
            w.faulted += 1;
        }
        w.fault
    };
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth != format!("Bearer {TOKEN}") && auth != format!("token {TOKEN}") {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({ "message": "Bad credentials", "documentation_url": "https://docs.github.com/rest" })),
        )
            .into_response();
    }
    match fault {
        None => next.run(req).await,
        Some(Fault::Down) => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "message": "Service Unavailable" })),
        )
            .into_response(),
        Some(Fault::RateLimited { secs }) => {
            let reset = chrono::Utc::now().timestamp() + i64::try_from(secs).unwrap();
            (
                StatusCode::FORBIDDEN,
                [
                    ("x-ratelimit-limit", "5000".to_string()),
                    ("x-ratelimit-remaining", "0".to_string()),
                    ("x-ratelimit-reset", reset.to_string()),
                ],
                axum::Json(json!({
                    "message": "API rate limit exceeded for installation.",
                    "documentation_url": "https://docs.github.com/rest/using-the-rest-api/rate-limits-for-the-rest-api"
                })),
            )
                .into_response()
        }
        Some(Fault::TooMany { secs }) => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", secs.to_string())],
            axum::Json(json!({ "message": "You have exceeded a secondary rate limit." })),
        )
            .into_response(),
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn example(w: &World, name: &str) -> Value {
    w.examples
        .get(name)
        .cloned()
        .unwrap_or_else(|| panic!("the description has no example `{name}`"))
}

fn next_id(w: &mut World) -> i64 {
    w.next_id += 1;
    w.next_id
}

fn json_body(body: &axum::body::Bytes) -> Value {
    serde_json::from_slice(body).unwrap_or(Value::Null)
}

fn created(v: Value) -> Response {
    (StatusCode::CREATED, axum::Json(v)).into_response()
}

async fn create_deployment(
    State(w): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let b = json_body(&body);
    let mut w = w.lock().unwrap();
    let id = next_id(&mut w);
    let mut d = example(&w, "deployment");
    let base = format!("https://api.github.com/repos/{owner}/{repo}");
    d["id"] = json!(id);
    d["node_id"] = json!(format!("DE_{id}"));
    d["url"] = json!(format!("{base}/deployments/{id}"));
    d["statuses_url"] = json!(format!("{base}/deployments/{id}/statuses"));
    d["repository_url"] = json!(base);
    d["ref"] = b["ref"].clone();
    d["sha"] = json!(b["ref"].as_str().unwrap_or_default());
    d["task"] = b.get("task").cloned().unwrap_or(json!("deploy"));
    d["environment"] = b.get("environment").cloned().unwrap_or(json!("production"));
    d["original_environment"] = d["environment"].clone();
    d["description"] = b.get("description").cloned().unwrap_or(Value::Null);
    d["payload"] = b.get("payload").cloned().unwrap_or(json!({}));
    d["transient_environment"] = b
        .get("transient_environment")
        .cloned()
        .unwrap_or(json!(false));
    d["production_environment"] = b
        .get("production_environment")
        .cloned()
        .unwrap_or(json!(d["environment"] == "production"));
    d["created_at"] = json!(now());
    d["updated_at"] = json!(now());
    w.deployments.push(d.clone());
    created(d)
}

async fn list_deployments(State(w): State<Shared>) -> Response {
    let w = w.lock().unwrap();
    axum::Json(json!(w.deployments.iter().rev().collect::<Vec<_>>())).into_response()
}

async fn create_status(
    State(w): State<Shared>,
    Path((owner, repo, id)): Path<(String, String, i64)>,
    body: axum::body::Bytes,
) -> Response {
    let b = json_body(&body);
    let mut w = w.lock().unwrap();
    if !w.deployments.iter().any(|d| d["id"] == id) {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "message": "Not Found", "documentation_url": "https://docs.github.com/rest" })),
        )
            .into_response();
    }
    let sid = next_id(&mut w);
    let base = format!("https://api.github.com/repos/{owner}/{repo}");
    let mut s = example(&w, "deployment-status");
    s["id"] = json!(sid);
    s["node_id"] = json!(format!("DES_{sid}"));
    s["url"] = json!(format!("{base}/deployments/{id}/statuses/{sid}"));
    s["deployment_url"] = json!(format!("{base}/deployments/{id}"));
    s["repository_url"] = json!(base);
    s["state"] = b["state"].clone();
    s["description"] = json!(b["description"].as_str().unwrap_or_default());
    s["environment"] = b.get("environment").cloned().unwrap_or(json!(""));
    // The URLs a status was given, and no other (`format: uri`).
    let o = s.as_object_mut().unwrap();
    for key in ["environment_url", "log_url"] {
        match b[key].as_str() {
            Some(url) => o.insert(key.into(), json!(url)),
            None => o.remove(key),
        };
    }
    s["target_url"] = json!(b["log_url"].as_str().unwrap_or_default());
    s["created_at"] = json!(now());
    s["updated_at"] = json!(now());
    w.statuses.entry(id).or_default().push(s.clone());
    created(s)
}

async fn list_statuses(
    State(w): State<Shared>,
    Path((_, _, id)): Path<(String, String, i64)>,
) -> Response {
    let w = w.lock().unwrap();
    axum::Json(json!(w.statuses.get(&id).cloned().unwrap_or_default())).into_response()
}

fn comment_object(w: &mut World, owner: &str, repo: &str, pr: u64, id: i64, body: &str) -> Value {
    let base = format!("https://api.github.com/repos/{owner}/{repo}");
    let mut c = example(w, "issue-comment");
    c["id"] = json!(id);
    c["node_id"] = json!(format!("IC_{id}"));
    c["url"] = json!(format!("{base}/issues/comments/{id}"));
    c["html_url"] = json!(format!(
        "https://github.com/{owner}/{repo}/pull/{pr}#issuecomment-{id}"
    ));
    c["issue_url"] = json!(format!("{base}/issues/{pr}"));
    c["body"] = json!(body);
    c["updated_at"] = json!(now());
    c
}

async fn list_comments(
    State(w): State<Shared>,
    Path((_, _, n)): Path<(String, String, u64)>,
    uri: Uri,
) -> Response {
    let w = w.lock().unwrap();
    let page: usize = uri
        .query()
        .and_then(|q| q.split('&').find_map(|p| p.strip_prefix("page=")))
        .and_then(|p| p.parse().ok())
        .unwrap_or(1);
    let all: Vec<Value> = w
        .comments
        .iter()
        .filter(|(pr, _)| *pr == n)
        .map(|(_, c)| c.clone())
        .collect();
    let page: Vec<Value> = all.into_iter().skip((page - 1) * 100).take(100).collect();
    axum::Json(json!(page)).into_response()
}

async fn create_comment(
    State(w): State<Shared>,
    Path((owner, repo, n)): Path<(String, String, u64)>,
    body: axum::body::Bytes,
) -> Response {
    let b = json_body(&body);
    let mut w = w.lock().unwrap();
    let id = next_id(&mut w);
    let c = comment_object(
        &mut w,
        &owner,
        &repo,
        n,
        id,
        b["body"].as_str().unwrap_or_default(),
    );
    w.comments.push((n, c.clone()));
    created(c)
}

async fn update_comment(
    State(w): State<Shared>,
    Path((owner, repo, id)): Path<(String, String, i64)>,
    body: axum::body::Bytes,
) -> Response {
    let b = json_body(&body);
    let mut w = w.lock().unwrap();
    let Some(pos) = w.comments.iter().position(|(_, c)| c["id"] == id) else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "message": "Not Found", "documentation_url": "https://docs.github.com/rest" })),
        )
            .into_response();
    };
    let pr = w.comments[pos].0;
    let c = comment_object(
        &mut w,
        &owner,
        &repo,
        pr,
        id,
        b["body"].as_str().unwrap_or_default(),
    );
    w.comments[pos].1 = c.clone();
    axum::Json(c).into_response()
}

async fn create_check_run(
    State(w): State<Shared>,
    Path((owner, repo)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let b = json_body(&body);
    let mut w = w.lock().unwrap();
    let id = next_id(&mut w);
    let mut c = example(&w, "check-run-example-of-completed-conclusion");
    c["id"] = json!(id);
    c["node_id"] = json!(format!("CR_{id}"));
    c["url"] = json!(format!(
        "https://api.github.com/repos/{owner}/{repo}/check-runs/{id}"
    ));
    c["head_sha"] = b["head_sha"].clone();
    c["name"] = b["name"].clone();
    c["status"] = b.get("status").cloned().unwrap_or(json!("completed"));
    c["conclusion"] = b.get("conclusion").cloned().unwrap_or(Value::Null);
    c["started_at"] = b.get("started_at").cloned().unwrap_or(json!(now()));
    c["completed_at"] = b.get("completed_at").cloned().unwrap_or(json!(now()));
    c["output"]["title"] = b["output"]["title"].clone();
    c["output"]["summary"] = b["output"]["summary"].clone();
    c["output"]["annotations_count"] =
        json!(b["output"]["annotations"].as_array().map_or(0, Vec::len));
    c["request"] = b.clone();
    w.check_runs.push(c.clone());
    c.as_object_mut().unwrap().remove("request");
    created(c)
}

async fn get_pull(
    State(w): State<Shared>,
    Path((_, _, n)): Path<(String, String, u64)>,
    _method: Method,
    _headers: HeaderMap,
) -> Response {
    let w = w.lock().unwrap();
    let Some((state, merged)) = w.pulls.get(&n).cloned() else {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({ "message": "Not Found", "documentation_url": "https://docs.github.com/rest" })),
        )
            .into_response();
    };
    let mut p = example(&w, "pull-request");
    // The description's own example names a team without the `type` its
    // schema requires; this pull request asks no team for a review.
    p["requested_teams"] = json!([]);
    p["number"] = json!(n);
    p["state"] = json!(state);
    p["merged"] = json!(merged);
    p["merged_at"] = if merged { json!(now()) } else { Value::Null };
    p["closed_at"] = if state == "closed" {
        json!(now())
    } else {
        Value::Null
    };
    axum::Json(p).into_response()
}
