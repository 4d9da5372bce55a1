//! An emulated Render for the Render provider's tests, held to Render's
//! published API description by Stoplight Prism.
//!
//! - The control plane implements the part of Render's public API copilot
//!   uses: services (listed with cursors, read, updated, scaled, suspended,
//!   resumed), deploys (created from an image, read, listed, cancelled,
//!   rolled back to) and env vars (read, set and removed one key at a
//!   time). A deploy goes through Render's statuses (`created`, `queued`,
//!   `build_in_progress`, `pre_deploy_in_progress`, `update_in_progress`)
//!   to `live`, or fails (`build_failed`, `pre_deploy_failed`,
//!   `update_failed`, `canceled`). Its instance is a real `copilot-service`
//!   process on loopback, given the service's variables as they were when
//!   the deploy started.
//! - The data plane routes a web service's address to its live deploy, and
//!   swaps to a new deploy only once it answers its health check path; the
//!   old instance then gets SIGTERM and finishes what it serves.
//! - copilot never talks to the control plane directly: every request and
//!   every answer passes through `prism proxy --errors` with
//!   `tests/specs/render-openapi.prism.json` (Render's description, with the
//!   six unions no body can satisfy made `anyOf`; `tests/specs/README.md`).
//!
//! Faults are injected behind Prism as Render produces them: 429 with its
//! `Ratelimit-*` headers (and deploys beyond 10 a minute per service),
//! 5xx, answers lost after the change was made; images whose build fails,
//! that never pass their health check; a pre-deploy command that fails;
//! pushes that autodeploy; rollbacks Render does on its own.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde_json::{Value, json};

use crate::common::{PASSED_THROUGH, free_port};

/// The key the emulated Render accepts.
const KEY: &str = "rnd_emulated0123456789";

const OWNER: &str = "tea-emulated0001";

/// How long each status of a deploy lasts before the next.
const PHASE: Duration = Duration::from_millis(250);

/// How long a new instance may take to pass its health check.
const HEALTH_GRACE: Duration = Duration::from_secs(8);

/// What the next API request gets instead of its answer.
#[derive(Clone, Debug)]
pub enum Fault {
    /// An error status; a 429 carries `Ratelimit-Reset` seconds.
    Status(u16, Option<u64>),
    /// The request is carried out, then its answer is held this long.
    LostAnswer(Duration),
}

struct Svc {
    id: String,
    name: String,
    kind: &'static str,
    image: String,
    auto_deploy: bool,
    suspended: bool,
    plan: String,
    instances: u32,
    pre_deploy: Option<String>,
    env: BTreeMap<String, String>,
    created_at: String,
    /// The data plane's address (web services).
    url: String,
}

impl RenderEmulator {
    /// The service named `name`, if Render has one (a preview's).
    pub fn service_named(&self, name: &str) -> Option<Value> {
        let w = self.world.lock().unwrap();
        w.services
            .values()
            .find(|s| s.name == name)
            .map(service_json)
    }

    /// How many instances of service `name` run.
    pub fn running(&self, name: &str) -> usize {
        let w = self.world.lock().unwrap();
        let Some(s) = w.services.values().find(|s| s.name == name) else {
            return 0;
        };
        w.deps
            .iter()
            .filter(|d| d.service == s.id && d.child.is_some())
            .count()
    }
}

struct Dep {
    id: String,
    service: String,
    status: String,
    trigger: &'static str,
    image: String,
    /// The service's variables when the deploy started.
    env: BTreeMap<String, String>,
    pre_deploy: Option<String>,
    created_at: String,
    finished_at: Option<String>,
    /// When it entered its status.
    since: Instant,
    port: u16,
    child: Option<Child>,
    dir: PathBuf,
}

impl Dep {
    fn json(&self) -> Value {
        let mut d = json!({
            "id": self.id,
            "image": { "ref": self.image, "sha": format!("sha256:{:0>64}", self.id.len()) },
            "status": self.status,
            "trigger": self.trigger,
            "createdAt": self.created_at,
            "updatedAt": now_text(),
            "startedAt": self.created_at,
        });
        if let Some(f) = &self.finished_at {
            d["finishedAt"] = json!(f);
        }
        d
    }
    fn in_progress(&self) -> bool {
        matches!(
            self.status.as_str(),
            "created"
                | "queued"
                | "build_in_progress"
                | "update_in_progress"
                | "pre_deploy_in_progress"
        )
    }
}

fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

struct World {
    closed: bool,
    services: BTreeMap<String, Svc>,
    /// Newest last.
    deps: Vec<Dep>,
    seq: u64,
    faults: VecDeque<Fault>,
    aimed: Vec<(String, Fault)>,
    /// `METHOD /path` of every API request.
    requests: Vec<String>,
    /// When each service's deploys were created, for Render's limit.
    deploy_times: BTreeMap<String, Vec<Instant>>,
    /// Answer a created deploy with `202 Queued` and no body.
    queue_answers: bool,
    /// Render's limit of deploys per service in a window, when enforced
    /// (Render's is 10 a minute).
    deploy_limit: Option<(usize, Duration)>,
    retiring: Vec<Child>,
    root: PathBuf,
    service_bin: PathBuf,
}

type Shared = Arc<Mutex<World>>;

pub struct RenderEmulator {
    world: Shared,
    /// Where copilot's `RENDER_HOST` points: Prism in front of the control plane.
    pub api: String,
    pub key: String,
    prism: Child,
    prism_log: PathBuf,
    _dir: tempfile::TempDir,
    runtime: Option<tokio::runtime::Runtime>,
}

fn err(status: StatusCode, msg: &str) -> Response {
    (
        status,
        axum::Json(json!({ "id": format!("{}", status.as_u16()), "message": msg })),
    )
        .into_response()
}

fn ok(v: Value) -> Response {
    axum::Json(v).into_response()
}

impl RenderEmulator {
    /// An emulated Render with the web services `web` and background
    /// workers `workers` (by name), each on image repository `image`, with
    /// the variables `env` set as a team sets them in the dashboard.
    pub fn start(web: &[&str], workers: &[&str], image: &str, env: &[(&str, &str)]) -> Self {
        let prism_bin = std::path::absolute("tests/prism/node_modules/.bin/prism").unwrap();
        assert!(
            prism_bin.exists(),
            "Prism is not installed: run `npm ci --prefix tests/prism` (scripts/test.sh does)"
        );
        let spec = std::path::absolute("tests/specs/render-openapi.prism.json").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let mut services = BTreeMap::new();
        let mut planes = Vec::new();
        for (i, (name, kind)) in web
            .iter()
            .map(|n| (n, "web_service"))
            .chain(workers.iter().map(|n| (n, "background_worker")))
            .enumerate()
        {
            let id = format!("srv-emu{:0>13}", i + 1);
            let port = free_port();
            if kind == "web_service" {
                planes.push((id.clone(), port));
            }
            services.insert(
                id.clone(),
                Svc {
                    id,
                    name: name.to_string(),
                    kind,
                    image: format!("{image}:latest"),
                    auto_deploy: true,
                    suspended: false,
                    plan: "starter".into(),
                    instances: 1,
                    pre_deploy: None,
                    env: env
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    created_at: now_text(),
                    url: format!("http://127.0.0.1:{port}"),
                },
            );
        }
        let world = Arc::new(Mutex::new(World {
            closed: false,
            services,
            deps: Vec::new(),
            seq: 0,
            faults: VecDeque::new(),
            aimed: Vec::new(),
            requests: Vec::new(),
            deploy_times: BTreeMap::new(),
            queue_answers: false,
            deploy_limit: None,
            retiring: Vec::new(),
            root: dir.path().to_path_buf(),
            service_bin: crate::common::service_bin(),
        }));
        let control_port = free_port();
        let prism_port = free_port();
        {
            let w = world.clone();
            let control = Router::new()
                .route("/v1/services", get(list_services))
                .route(
                    "/v1/services/{id}",
                    get(show_service)
                        .patch(update_service)
                        .delete(delete_service),
                )
                .route("/v1/services/{id}/preview", post(create_preview))
                .route(
                    "/v1/services/{id}/deploys",
                    get(list_deploys).post(create_deploy),
                )
                .route("/v1/services/{id}/deploys/{dep}", get(show_deploy))
                .route(
                    "/v1/services/{id}/deploys/{dep}/cancel",
                    post(cancel_deploy),
                )
                .route("/v1/services/{id}/rollback", post(rollback))
                .route("/v1/services/{id}/env-vars", get(list_env))
                .route(
                    "/v1/services/{id}/env-vars/{key}",
                    put(set_env).delete(delete_env),
                )
                .route("/v1/services/{id}/scale", post(scale))
                .route("/v1/services/{id}/suspend", post(suspend))
                .route("/v1/services/{id}/resume", post(resume))
                .layer(axum::middleware::from_fn_with_state(w.clone(), faults))
                .with_state(w);
            runtime.spawn(async move {
                let l = tokio::net::TcpListener::bind(("127.0.0.1", control_port))
                    .await
                    .unwrap();
                axum::serve(l, control).await.unwrap();
            });
            for (id, port) in planes {
                let plane = Router::new().fallback(data_plane).with_state(Plane {
                    world: world.clone(),
                    service: id,
                    http: reqwest::Client::new(),
                });
                runtime.spawn(async move {
                    let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
                        .await
                        .unwrap();
                    axum::serve(l, plane).await.unwrap();
                });
            }
            runtime.spawn(supervise(world.clone()));
        }
        let prism_log = dir.path().join("prism.log");
        let log = std::fs::File::create(&prism_log).unwrap();
        // Prism ignores the description's `/v1` base path: the upstream
        // carries it, and clients speak to Prism without it.
        let prism = Command::new(&prism_bin)
            .args(["proxy", "--errors", "-h", "127.0.0.1", "-p"])
            .arg(prism_port.to_string())
            .arg(&spec)
            .arg(format!("http://127.0.0.1:{control_port}/v1"))
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
        RenderEmulator {
            world,
            api: format!("http://127.0.0.1:{prism_port}"),
            key: KEY.into(),
            prism,
            prism_log,
            _dir: dir,
            runtime: Some(runtime),
        }
    }

    /// The variables a copilot command needs to reach this Render.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("RENDER_API_KEY", self.key.clone()),
            ("RENDER_HOST", self.api.clone()),
            ("COPILOT_PROVIDER_REQUEST_TIMEOUT", "3s".into()),
        ]
    }

    fn id_of(&self, name: &str) -> String {
        let w = self.world.lock().unwrap();
        w.services
            .values()
            .find(|s| s.name == name)
            .map(|s| s.id.clone())
            .unwrap_or_else(|| panic!("no service {name}"))
    }

    /// Where web service `name`'s traffic enters.
    pub fn url(&self, name: &str) -> String {
        let id = self.id_of(name);
        self.world.lock().unwrap().services[&id].url.clone()
    }

    /// Service `name`'s id (`srv-...`).
    pub fn service_id(&self, name: &str) -> String {
        self.id_of(name)
    }

    /// Answer the first request whose `METHOD /path` (or kind) matches
    /// `request` with `fault`.
    pub fn inject_on(&self, request: &str, fault: Fault) {
        self.world
            .lock()
            .unwrap()
            .aimed
            .push((request.to_string(), fault));
    }

    pub fn pending_faults(&self) -> usize {
        let w = self.world.lock().unwrap();
        w.faults.len() + w.aimed.len()
    }

    /// Answer created deploys with `202 Queued` and no body, as Render may.
    pub fn queue_answers(&self, on: bool) {
        self.world.lock().unwrap().queue_answers = on;
    }

    /// Enforce a limit of `n` deploys per service in `window` (Render's is
    /// 10 a minute).
    pub fn limit_deploys(&self, n: usize, window: Duration) {
        self.world.lock().unwrap().deploy_limit = Some((n, window));
    }

    /// A push to the service's image: Render deploys it when autodeploy is
    /// on (trigger `new_commit`). Returns the deploy id, if one started.
    pub fn push(&self, name: &str, image: &str) -> Option<String> {
        let id = self.id_of(name);
        let mut w = self.world.lock().unwrap();
        if !w.services[&id].auto_deploy {
            return None;
        }
        Some(new_deploy(&mut w, &id, image.to_string(), "new_commit"))
    }

    /// Render's own rollback (the dashboard's): to the deploy before the live one.
    pub fn roll_back_by_itself(&self, name: &str) -> String {
        let id = self.id_of(name);
        let mut w = self.world.lock().unwrap();
        let image = w
            .deps
            .iter()
            .rev()
            .filter(|d| d.service == id && d.status == "deactivated")
            .map(|d| d.image.clone())
            .next()
            .expect("an earlier deploy");
        w.services.get_mut(&id).unwrap().auto_deploy = false;
        new_deploy(&mut w, &id, image, "rollback")
    }

    /// A service already serving `image` before copilot ever deployed it.
    pub fn deploy_by_hand(&self, name: &str, image: &str) -> String {
        let id = self.id_of(name);
        let mut w = self.world.lock().unwrap();
        new_deploy(&mut w, &id, image.to_string(), "manual")
    }

    /// Wait until service `name` has no deploy in progress.
    pub fn settle(&self, name: &str) {
        let id = self.id_of(name);
        let deadline = Instant::now() + Duration::from_secs(30);
        while self
            .world
            .lock()
            .unwrap()
            .deps
            .iter()
            .any(|d| d.service == id && d.in_progress())
        {
            assert!(Instant::now() < deadline, "deploys of {name} never settled");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The release (its `COPILOT_RELEASE`) service `name`'s address serves,
    /// or `none`.
    pub fn serving(&self, name: &str) -> String {
        let id = self.id_of(name);
        let w = self.world.lock().unwrap();
        if w.services[&id].suspended {
            return "none".into();
        }
        w.deps
            .iter()
            .rev()
            .find(|d| d.service == id && d.status == "live" && d.child.is_some())
            .map_or("none".into(), |d| {
                d.env
                    .get("COPILOT_RELEASE")
                    .cloned()
                    .unwrap_or_else(|| d.image.clone())
            })
    }

    /// Service `name`'s deploys, oldest first: (id, status, trigger, image).
    pub fn deploys(&self, name: &str) -> Vec<(String, String, String, String)> {
        let id = self.id_of(name);
        let w = self.world.lock().unwrap();
        w.deps
            .iter()
            .filter(|d| d.service == id)
            .map(|d| {
                (
                    d.id.clone(),
                    d.status.clone(),
                    d.trigger.to_string(),
                    d.image.clone(),
                )
            })
            .collect()
    }

    /// Service `name`: (autodeploy, suspended, instances, plan, pre-deploy command).
    pub fn service(&self, name: &str) -> (bool, bool, u32, String, Option<String>) {
        let id = self.id_of(name);
        let w = self.world.lock().unwrap();
        let s = &w.services[&id];
        (
            s.auto_deploy,
            s.suspended,
            s.instances,
            s.plan.clone(),
            s.pre_deploy.clone(),
        )
    }

    /// Service `name`'s variable `key`.
    pub fn env_var(&self, name: &str, key: &str) -> Option<String> {
        let id = self.id_of(name);
        self.world.lock().unwrap().services[&id]
            .env
            .get(key)
            .cloned()
    }

    /// The API requests made so far, as `METHOD /path`.
    pub fn requests(&self) -> Vec<String> {
        self.world.lock().unwrap().requests.clone()
    }

    pub fn checked_by_prism(&self) -> usize {
        std::fs::read_to_string(&self.prism_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Forwarding"))
            .count()
    }

    /// What Prism reported as breaking the description.
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

impl Drop for RenderEmulator {
    fn drop(&mut self) {
        let _ = self.prism.kill();
        let _ = self.prism.wait();
        if let Ok(mut w) = self.world.lock() {
            w.closed = true;
            for mut c in std::mem::take(&mut w.retiring) {
                let _ = c.kill();
                let _ = c.wait();
            }
            for d in &mut w.deps {
                if let Some(mut c) = d.child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// What kind of call a request is: `POST /v1/services/{serviceId}/deploys/{deployId}/cancel`.
pub fn kind_of(request: &str) -> String {
    let mut out = Vec::new();
    let mut after = "";
    for part in request.split('/') {
        out.push(match after {
            "services" => "{serviceId}",
            "deploys" => "{deployId}",
            "env-vars" => "{envVarKey}",
            _ => part,
        });
        after = part;
    }
    out.join("/")
}

async fn faults(
    State(w): State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let authorised = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(format!("Bearer {KEY}").as_str());
    if !authorised {
        return err(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let fault = {
        let mut w = w.lock().unwrap();
        let request = format!("{} {}", req.method(), req.uri().path());
        let kind = kind_of(&request);
        let aimed = w
            .aimed
            .iter()
            .position(|(r, _)| request.contains(r.as_str()) || *r == kind);
        w.requests.push(request);
        match aimed {
            Some(i) => Some(w.aimed.remove(i).1),
            None => w.faults.pop_front(),
        }
    };
    match fault {
        Some(Fault::Status(code, reset)) => {
            let mut resp = err(
                StatusCode::from_u16(code).unwrap(),
                "injected by the emulator",
            );
            if code == 429 {
                rate_limited(&mut resp, reset.unwrap_or(1));
            }
            resp
        }
        Some(Fault::LostAnswer(d)) => {
            let resp = next.run(req).await;
            tokio::time::sleep(d).await;
            resp
        }
        None => next.run(req).await,
    }
}

/// Render's rate-limit headers on a 429.
fn rate_limited(resp: &mut Response, reset: u64) {
    let h = resp.headers_mut();
    h.insert("ratelimit-limit", "10".parse().unwrap());
    h.insert("ratelimit-remaining", "0".parse().unwrap());
    h.insert("ratelimit-reset", reset.to_string().parse().unwrap());
}

fn service_json(s: &Svc) -> Value {
    let mut env_specific =
        json!({ "dockerCommand": "", "dockerContext": ".", "dockerfilePath": "./Dockerfile" });
    if let Some(c) = &s.pre_deploy {
        env_specific["preDeployCommand"] = json!(c);
    }
    let mut details = json!({
        "env": "image",
        "runtime": "image",
        "envSpecificDetails": env_specific,
        "plan": s.plan,
        "region": "oregon",
        "numInstances": s.instances,
        "buildPlan": "starter",
        "maxShutdownDelaySeconds": 30,
    });
    if s.kind == "web_service" {
        details["healthCheckPath"] = json!("/health");
        details["openPorts"] = json!([{ "port": 10000, "protocol": "TCP" }]);
        details["url"] = json!(s.url);
    }
    json!({
        "id": s.id,
        "name": s.name,
        "ownerId": OWNER,
        "type": s.kind,
        "autoDeploy": if s.auto_deploy { "yes" } else { "no" },
        "createdAt": s.created_at,
        "updatedAt": now_text(),
        "dashboardUrl": format!("https://dashboard.render.com/web/{}", s.id),
        "imagePath": s.image,
        "notifyOnFail": "default",
        "rootDir": "",
        "slug": s.name,
        "suspended": if s.suspended { "suspended" } else { "not_suspended" },
        "suspenders": if s.suspended { json!(["user"]) } else { json!([]) },
        "serviceDetails": details,
    })
}

fn unknown(w: &World, id: &str) -> Option<Response> {
    (!w.services.contains_key(id)).then(|| err(StatusCode::NOT_FOUND, "service not found"))
}

async fn list_services(
    State(w): State<Shared>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let w = w.lock().unwrap();
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(20);
    let mut list: Vec<&Svc> = w
        .services
        .values()
        .filter(|s| {
            q.get("name")
                .is_none_or(|n| n.split(',').any(|n| n == s.name))
        })
        .collect();
    if let Some(c) = q.get("cursor") {
        list.retain(|s| s.id.as_str() > c.as_str());
    }
    let page: Vec<Value> = list
        .into_iter()
        .take(limit)
        .map(|s| json!({ "service": service_json(s), "cursor": s.id }))
        .collect();
    ok(Value::Array(page))
}

async fn show_service(State(w): State<Shared>, Path(id): Path<String>) -> Response {
    let w = w.lock().unwrap();
    if let Some(r) = unknown(&w, &id) {
        return r;
    }
    ok(service_json(&w.services[&id]))
}

async fn update_service(
    State(w): State<Shared>,
    Path(id): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut w = w.lock().unwrap();
    if let Some(r) = unknown(&w, &id) {
        return r;
    }
    let s = w.services.get_mut(&id).unwrap();
    if let Some(a) = body["autoDeploy"].as_str() {
        s.auto_deploy = a == "yes";
    }
    if let Some(p) = body["serviceDetails"]["plan"].as_str() {
        s.plan = p.to_string();
    }
    if let Some(c) = body["serviceDetails"]["preDeployCommand"].as_str() {
        s.pre_deploy = (!c.is_empty()).then(|| c.to_string());
    }
    ok(service_json(s))
}

async fn list_deploys(
    State(w): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let w = w.lock().unwrap();
    if let Some(r) = unknown(&w, &id) {
        return r;
    }
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(20);
    let page: Vec<Value> = w
        .deps
        .iter()
        .rev()
        .filter(|d| d.service == id)
        .take(limit)
        .map(|d| json!({ "deploy": d.json(), "cursor": d.id }))
        .collect();
    ok(Value::Array(page))
}

/// A deploy of `image` for service `id`, starting now; its id.
fn new_deploy(w: &mut World, id: &str, image: String, trigger: &'static str) -> String {
    w.seq += 1;
    let dep = format!("dep-emu{:0>13}", w.seq);
    let dir = w.root.join(&dep);
    std::fs::create_dir_all(&dir).unwrap();
    let s = &w.services[id];
    let d = Dep {
        id: dep.clone(),
        service: id.to_string(),
        status: "created".into(),
        trigger,
        image,
        env: s.env.clone(),
        pre_deploy: s.pre_deploy.clone().filter(|_| s.kind == "web_service"),
        created_at: now_text(),
        finished_at: None,
        since: Instant::now(),
        port: free_port(),
        child: None,
        dir,
    };
    // A newer deploy supersedes one still on its way, as Render does.
    for old in w
        .deps
        .iter_mut()
        .filter(|o| o.service == id && o.in_progress())
    {
        old.status = "canceled".into();
        old.finished_at = Some(now_text());
        if let Some(mut c) = old.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    w.deps.push(d);
    w.deploy_times
        .entry(id.to_string())
        .or_default()
        .push(Instant::now());
    dep
}

/// A service preview (image-backed): a new web service with the base
/// service's settings, running `imagePath`, deployed at once.
async fn create_preview(
    State(w): State<Shared>,
    Path(id): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let (service, dep, port) = {
        let mut w = w.lock().unwrap();
        if let Some(r) = unknown(&w, &id) {
            return r;
        }
        let base = &w.services[&id];
        if base.kind != "web_service" {
            return err(StatusCode::BAD_REQUEST, "previews are for web services");
        }
        let image = body["imagePath"].as_str().unwrap_or_default().to_string();
        let repo = |i: &str| {
            i.rsplit_once(':')
                .map_or(i.to_string(), |(r, _)| r.to_string())
        };
        if repo(&image) != repo(&base.image) {
            return err(
                StatusCode::BAD_REQUEST,
                "imagePath must match the path of the base service's image (only the tag or SHA can vary)",
            );
        }
        let name = body["name"].as_str().map_or_else(
            || {
                format!(
                    "{}-{}",
                    base.name,
                    image.rsplit(':').next().unwrap_or("preview")
                )
            },
            str::to_string,
        );
        if w.services.values().any(|s| s.name == name) {
            return err(StatusCode::CONFLICT, "a service with this name exists");
        }
        w.seq += 1;
        let new_id = format!("srv-emp{:0>13}", w.seq);
        let port = free_port();
        let base = &w.services[&id];
        let svc = Svc {
            id: new_id.clone(),
            name,
            kind: "web_service",
            image: image.clone(),
            auto_deploy: false,
            suspended: false,
            plan: body["plan"].as_str().unwrap_or(&base.plan).to_string(),
            instances: 1,
            pre_deploy: base.pre_deploy.clone(),
            env: base.env.clone(),
            created_at: now_text(),
            url: format!("http://127.0.0.1:{port}"),
        };
        w.services.insert(new_id.clone(), svc);
        let dep = new_deploy(&mut w, &new_id, image, "api");
        (new_id, dep, port)
    };
    let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let plane = Router::new().fallback(data_plane).with_state(Plane {
        world: w.clone(),
        service: service.clone(),
        http: reqwest::Client::new(),
    });
    tokio::spawn(async move {
        let l = tokio::net::TcpListener::from_std(listener).unwrap();
        axum::serve(l, plane).await.unwrap();
    });
    let w = w.lock().unwrap();
    ok(json!({ "service": service_json(&w.services[&service]), "deployId": dep }))
}

/// Delete a service: its instances stop, it is gone.
async fn delete_service(State(w): State<Shared>, Path(id): Path<String>) -> Response {
    let mut w = w.lock().unwrap();
    if let Some(r) = unknown(&w, &id) {
        return r;
    }
    w.services.remove(&id);
    let mut stopped = Vec::new();
    for d in w.deps.iter_mut().filter(|d| d.service == id) {
        if d.in_progress() {
            d.status = "canceled".into();
            d.finished_at = Some(now_text());
        }
        stopped.extend(d.child.take());
    }
    for mut c in stopped {
        let _ = c.kill();
        let _ = c.wait();
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn create_deploy(
    State(w): State<Shared>,
    Path(id): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut w = w.lock().unwrap();
    if let Some(r) = unknown(&w, &id) {
        return r;
    }
    // Render's limit of deploys per service.
    if let Some((limit, window)) = w.deploy_limit {
        let within: Vec<Instant> = w
            .deploy_times
            .get(&id)
            .into_iter()
            .flatten()
            .filter(|t| t.elapsed() < window)
            .copied()
            .collect();
        if within.len() >= limit {
            let oldest = within.iter().min().copied().unwrap();
            let reset = (window - oldest.elapsed()).as_secs_f64().ceil() as u64;
            let mut r = err(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
            rate_limited(&mut r, reset.max(1));
            return r;
        }
    }
    let configured = w.services[&id].image.clone();
    let image = body["imageUrl"].as_str().unwrap_or(&configured).to_string();
    let repo = |i: &str| {
        i.rsplit_once(':')
            .map_or(i.to_string(), |(r, _)| r.to_string())
    };
    if repo(&image) != repo(&configured) {
        return err(
            StatusCode::BAD_REQUEST,
            "imageUrl must match the host, repository and name of the service's image",
        );
    }
    let dep = new_deploy(&mut w, &id, image, "api");
    if w.queue_answers {
        return StatusCode::ACCEPTED.into_response();
    }
    let d = w.deps.iter().find(|d| d.id == dep).unwrap();
    (StatusCode::CREATED, axum::Json(d.json())).into_response()
}

async fn show_deploy(State(w): State<Shared>, Path((id, dep)): Path<(String, String)>) -> Response {
    let w = w.lock().unwrap();
    if let Some(r) = unknown(&w, &id) {
        return r;
    }
    match w.deps.iter().find(|d| d.id == dep && d.service == id) {
        Some(d) => ok(d.json()),
        None => err(StatusCode::NOT_FOUND, "deploy not found"),
    }
}

async fn cancel_deploy(
    State(w): State<Shared>,
    Path((id, dep)): Path<(String, String)>,
) -> Response {
    let mut w = w.lock().unwrap();
    if let Some(r) = unknown(&w, &id) {
        return r;
    }
    let Some(d) = w.deps.iter_mut().find(|d| d.id == dep && d.service == id) else {
        return err(StatusCode::NOT_FOUND, "deploy not found");
    };
    if !d.in_progress() {
        return err(StatusCode::BAD_REQUEST, "deploy is not in progress");
    }
    d.status = "canceled".into();
    d.finished_at = Some(now_text());
    if let Some(mut c) = d.child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    ok(d.json())
}

async fn rollback(
    State(w): State<Shared>,
    Path(id): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut w = w.lock().unwrap();
    if let Some(r) = unknown(&w, &id) {
        return r;
    }
    let to = body["deployId"].as_str().unwrap_or_default();
    let Some(target) = w.deps.iter().find(|d| {
        d.id == to && d.service == id && matches!(d.status.as_str(), "live" | "deactivated")
    }) else {
        return err(StatusCode::NOT_FOUND, "no successful deploy with that id");
    };
    let image = target.image.clone();
    let dep = new_deploy(&mut w, &id, image, "rollback");
    let d = w.deps.iter().find(|d| d.id == dep).unwrap();
    (StatusCode::CREATED, axum::Json(d.json())).into_response()
}

async fn list_env(
    State(w): State<Shared>,
    Path(id): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let w = w.lock().unwrap();
    if let Some(r) = unknown(&w, &id) {
        return r;
    }
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(20);
    let page: Vec<Value> = w.services[&id]
        .env
        .iter()
        .filter(|(k, _)| q.get("cursor").is_none_or(|c| k.as_str() > c.as_str()))
        .take(limit)
        .map(|(k, v)| json!({ "envVar": { "key": k, "value": v }, "cursor": k }))
        .collect();
    ok(Value::Array(page))
}

async fn set_env(
    State(w): State<Shared>,
    Path((id, key)): Path<(String, String)>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut w = w.lock().unwrap();
    if let Some(r) = unknown(&w, &id) {
        return r;
    }
    let Some(value) = body["value"].as_str() else {
        return err(StatusCode::BAD_REQUEST, "value is required");
    };
    w.services
        .get_mut(&id)
        .unwrap()
        .env
        .insert(key.clone(), value.to_string());
    ok(json!({ "key": key, "value": value }))
}

async fn delete_env(State(w): State<Shared>, Path((id, key)): Path<(String, String)>) -> Response {
    let mut w = w.lock().unwrap();
    if let Some(r) = unknown(&w, &id) {
        return r;
    }
    match w.services.get_mut(&id).unwrap().env.remove(&key) {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => err(StatusCode::NOT_FOUND, "env var not found"),
    }
}

async fn scale(
    State(w): State<Shared>,
    Path(id): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut w = w.lock().unwrap();
    if let Some(r) = unknown(&w, &id) {
        return r;
    }
    let Some(n) = body["numInstances"].as_u64() else {
        return err(StatusCode::BAD_REQUEST, "numInstances is required");
    };
    w.services.get_mut(&id).unwrap().instances = n as u32;
    StatusCode::ACCEPTED.into_response()
}

async fn suspend(State(w): State<Shared>, Path(id): Path<String>) -> Response {
    let mut guard = w.lock().unwrap();
    let w = &mut *guard;
    if let Some(r) = unknown(w, &id) {
        return r;
    }
    w.services.get_mut(&id).unwrap().suspended = true;
    for d in w.deps.iter_mut().filter(|d| d.service == id) {
        if let Some(mut c) = d.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
    StatusCode::ACCEPTED.into_response()
}

async fn resume(State(w): State<Shared>, Path(id): Path<String>) -> Response {
    let mut guard = w.lock().unwrap();
    let w = &mut *guard;
    if let Some(r) = unknown(w, &id) {
        return r;
    }
    w.services.get_mut(&id).unwrap().suspended = false;
    // The live deploy's instance starts again.
    let (closed, bin) = (w.closed, w.service_bin.clone());
    if let Some(d) = w
        .deps
        .iter_mut()
        .rev()
        .find(|d| d.service == id && d.status == "live")
        && !closed
    {
        d.port = free_port();
        d.child = Some(start_instance(&bin, d));
    }
    StatusCode::ACCEPTED.into_response()
}

/// Start a deploy's instance: `copilot-service serve` with the variables
/// the deploy was made with.
fn start_instance(bin: &std::path::Path, d: &Dep) -> Child {
    Command::new(bin)
        .arg("serve")
        .current_dir(&d.dir)
        .env_clear()
        .envs(
            PASSED_THROUGH
                .iter()
                .filter_map(|k| std::env::var_os(k).map(|v| (*k, v))),
        )
        .envs(d.env.iter())
        .env("PORT", d.port.to_string())
        .env("BIND_ADDRESS", "127.0.0.1")
        .env("RENDER", "true")
        .env("RENDER_SERVICE_ID", &d.service)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(d.dir.join("out.log")).unwrap())
        .stderr(std::fs::File::create(d.dir.join("err.log")).unwrap())
        .spawn()
        .expect("start a deploy's instance")
}

/// Render's deploy pipeline: each in-progress deploy moves one status on
/// per phase; a web deploy goes live once its instance answers `/health`,
/// and the one it replaces is deactivated and stopped gracefully.
async fn supervise(w: Shared) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(800))
        .build()
        .unwrap();
    loop {
        let probes: Vec<(String, u16)> = {
            let mut guard = w.lock().unwrap();
            let w = &mut *guard;
            w.retiring.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
            let mut probes = Vec::new();
            let (closed, bin) = (w.closed, w.service_bin.clone());
            let kinds: BTreeMap<String, &'static str> = w
                .services
                .iter()
                .map(|(k, s)| (k.clone(), s.kind))
                .collect();
            let mut went_live = Vec::new();
            for d in w.deps.iter_mut().filter(|d| d.in_progress()) {
                if d.since.elapsed() < PHASE {
                    continue;
                }
                let next = match d.status.as_str() {
                    "created" => "queued",
                    "queued" => "build_in_progress",
                    "build_in_progress" if d.image.contains("build-fails") => "build_failed",
                    "build_in_progress" if d.pre_deploy.is_some() => "pre_deploy_in_progress",
                    "build_in_progress" => "update_in_progress",
                    "pre_deploy_in_progress" => {
                        let cmd = d.pre_deploy.clone().unwrap_or_default();
                        let ran = Command::new("sh")
                            .args(["-c", &cmd])
                            .current_dir(&d.dir)
                            .envs(d.env.iter())
                            .stdin(Stdio::null())
                            .stdout(Stdio::null())
                            .stderr(Stdio::null())
                            .status()
                            .is_ok_and(|s| s.success());
                        if ran {
                            "update_in_progress"
                        } else {
                            "pre_deploy_failed"
                        }
                    }
                    "update_in_progress" => {
                        if d.child.is_none() && !closed && !d.image.contains("never-starts") {
                            d.child = Some(start_instance(&bin, d));
                        }
                        let exited = d
                            .child
                            .as_mut()
                            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
                        if exited || d.since.elapsed() > HEALTH_GRACE {
                            "update_failed"
                        } else if kinds.get(&d.service) == Some(&"background_worker") {
                            went_live.push(d.id.clone());
                            "update_in_progress"
                        } else {
                            if !d.image.contains("unhealthy") {
                                probes.push((d.id.clone(), d.port));
                            }
                            "update_in_progress"
                        }
                    }
                    other => other,
                }
                .to_string();
                if next != d.status {
                    d.status = next;
                    d.since = Instant::now();
                    if !d.in_progress() {
                        d.finished_at = Some(now_text());
                        if let Some(mut c) = d.child.take() {
                            let _ = c.kill();
                            let _ = c.wait();
                        }
                    }
                }
            }
            for id in went_live {
                go_live(w, &id);
            }
            probes
        };
        for (id, port) in probes {
            let healthy = http
                .get(format!("http://127.0.0.1:{port}/health"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if healthy {
                let mut guard = w.lock().unwrap();
                let w = &mut *guard;
                if w.deps
                    .iter()
                    .any(|d| d.id == id && d.status == "update_in_progress")
                {
                    go_live(w, &id);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deploy `id` becomes the live one; the previous live deploy is
/// deactivated and its instance asked to stop (it finishes what it serves).
fn go_live(w: &mut World, id: &str) {
    let service = w.deps.iter().find(|d| d.id == id).unwrap().service.clone();
    for d in w.deps.iter_mut().filter(|d| d.service == service) {
        if d.id == id {
            d.status = "live".into();
            d.finished_at = Some(now_text());
            d.since = Instant::now();
        } else if d.status == "live" {
            d.status = "deactivated".into();
            if let Some(child) = d.child.take() {
                let _ = Command::new("kill")
                    .args(["-TERM", &child.id().to_string()])
                    .status();
                w.retiring.push(child);
            }
        }
    }
}

#[derive(Clone)]
struct Plane {
    world: Shared,
    service: String,
    http: reqwest::Client,
}

/// Render's edge: the service's address goes to its live deploy.
async fn data_plane(
    State(Plane {
        world: w,
        service,
        http,
    }): State<Plane>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let port = {
        let w = w.lock().unwrap();
        if w.services.get(&service).is_none_or(|s| s.suspended) {
            None
        } else {
            w.deps
                .iter()
                .rev()
                .find(|d| d.service == service && d.status == "live" && d.child.is_some())
                .map(|d| d.port)
        }
    };
    let Some(port) = port else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no live deploy").into_response();
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = http.request(method, format!("http://127.0.0.1:{port}{path}"));
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            req = req.header(k, v);
        }
    }
    match req.body(body).send().await {
        Ok(r) => {
            let status = r.status();
            let mut out = Response::builder().status(status);
            for (k, v) in r.headers() {
                if k != "transfer-encoding" && k != "content-length" {
                    out = out.header(k, v);
                }
            }
            out.body(Body::from(r.bytes().await.unwrap_or_default()))
                .unwrap()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}
