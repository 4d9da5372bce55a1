//! An emulated Fly.io for the Fly provider's tests, held to Fly's official
//! Machines API description by Stoplight Prism.
//!
//! - The control plane implements the part of the Machines API copilot uses
//!   (apps, machines, wait, cordon/uncordon, leases with nonces, metadata,
//!   app secrets). Every started machine is a real `copilot-service`
//!   process on loopback, in its own working directory, given the machine
//!   config's `env` and the app's secrets as Fly gives them.
//! - The data plane (a proxy, as fly-proxy) balances requests over machines
//!   that are started, uncordoned and pass their checks, and honours
//!   `fly-force-instance-id`.
//! - copilot never talks to the control plane directly: every request and
//!   every response passes through `prism proxy --errors` with the spec in
//!   `tests/specs/fly-machines-openapi.yaml` (Fly's official description). A request or response that
//!   breaks the spec is refused by Prism (and counted: [`FlyEmulator::violations`]).
//!
//! Faults are injected here, behind Prism, as the platform would produce
//! them: 429 with `Retry-After`, 503s, a stalled answer, leases held by
//! someone else, images that never start or never pass their checks.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::common::{PASSED_THROUGH, free_port};

/// The token the emulated Fly accepts.
const TOKEN: &str = "fo1_emulated-token";

/// Regions the emulated Fly knows.
pub const REGIONS: &[&str] = &["dfw", "iad", "ams", "lhr", "syd"];

/// What the next API request gets instead of its answer.
#[derive(Clone, Debug)]
pub enum Fault {
    /// An error status, with `Retry-After` seconds when given.
    Status(u16, Option<u64>),
    /// The answer comes this late.
    Stall(Duration),
    /// A 200 whose body breaks the spec (to show Prism catches answers too).
    OffSpec,
    /// The request is carried out, then its answer is held this long (past
    /// the client's timeout: a change made whose answer was lost).
    LostAnswer(Duration),
}

struct Lease {
    nonce: String,
    owner: String,
    expires: Instant,
}

struct Vm {
    app: String,
    id: String,
    name: String,
    region: String,
    state: String,
    cordoned: bool,
    config: Value,
    created_at: String,
    port: u16,
    child: Option<Child>,
    /// `passing` or `critical`, once the machine has checks that ran.
    check: Option<&'static str>,
    events: Vec<Value>,
    lease: Option<Lease>,
    dir: PathBuf,
    /// When it was last put into service (uncordoned, or created so).
    in_service_at: Instant,
}

impl Vm {
    fn image(&self) -> &str {
        self.config["image"].as_str().unwrap_or_default()
    }
    fn has_checks(&self) -> bool {
        self.config["services"].as_array().is_some_and(|s| {
            s.iter()
                .any(|s| s["checks"].as_array().is_some_and(|c| !c.is_empty()))
        })
    }
    fn serves(&self) -> bool {
        self.state == "started"
            && !self.cordoned
            && self.check == Some("passing")
            && self.config["services"]
                .as_array()
                .is_some_and(|s| !s.is_empty())
    }
    fn json(&self) -> Value {
        let checks: Vec<Value> = match self.check {
            Some(status) => vec![json!({
                "name": "servicecheck-00-http-8080", "status": status,
                "output": if status == "passing" { "200 OK" } else { "connection refused or 5xx" },
                "updated_at": now_text(),
            })],
            None => vec![],
        };
        json!({
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "region": self.region,
            "cordoned": self.cordoned,
            "config": self.config,
            "checks": checks,
            "events": self.events,
            "created_at": self.created_at,
            "updated_at": now_text(),
            "instance_id": format!("01{:0>24}", self.id),
            "version": format!("01{:0>24}", self.id),
            "private_ip": "fdaa:0:1::2",
            "host_status": "ok",
            "image_ref": { "registry": "registry.fly.io", "repository": self.image(), "tag": "latest", "digest": "sha256:0", "labels": {} },
        })
    }
}

fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

struct World {
    /// The emulator is being dropped: no machine's process starts any more
    /// (a request still in flight on the runtime must not start one after
    /// the processes were stopped).
    closed: bool,
    /// App name -> its secrets (name -> value).
    apps: BTreeMap<String, BTreeMap<String, String>>,
    vms: BTreeMap<String, Vm>,
    seq: u64,
    faults: VecDeque<Fault>,
    /// Faults kept for the first requests whose `METHOD /path` contains a text.
    aimed: Vec<(String, Fault)>,
    /// Every lease of every machine, created from now on, belongs to someone else until then.
    foreign_leases_until: Option<Instant>,
    /// `METHOD /path` of every API request.
    requests: Vec<String>,
    /// Processes of replaced machines, asked to stop and finishing what they serve.
    retiring: Vec<Child>,
    root: PathBuf,
    service_bin: PathBuf,
    /// What `Authorization: Bearer` must carry.
    token: String,
    /// How long the proxy takes to route to a machine put into service.
    proxy_lag: Duration,
}

type Shared = Arc<Mutex<World>>;

pub struct FlyEmulator {
    world: Shared,
    /// Where copilot's `FLY_FLAPS_BASE_URL` points: Prism in front of the control plane.
    pub api: String,
    /// Each app's public address: its data plane.
    urls: BTreeMap<String, String>,
    pub token: String,
    prism: Child,
    prism_log: PathBuf,
    _dir: tempfile::TempDir,
    runtime: Option<tokio::runtime::Runtime>,
}

fn err(status: StatusCode, msg: &str) -> Response {
    (status, axum::Json(json!({ "error": msg }))).into_response()
}

fn ok(v: Value) -> Response {
    axum::Json(v).into_response()
}

impl FlyEmulator {
    /// An emulated Fly with `apps`, each holding the secrets given.
    pub fn start(apps: &[(&str, &[(&str, &str)])]) -> FlyEmulator {
        let prism_bin = std::path::absolute("tests/prism/node_modules/.bin/prism").unwrap();
        assert!(
            prism_bin.exists(),
            "Prism is not installed: run `npm ci --prefix tests/prism` (scripts/test.sh does)"
        );
        let spec = std::path::absolute("tests/specs/fly-machines-openapi.yaml").unwrap();
        assert!(
            spec.exists(),
            "the Fly Machines description is missing: {}",
            spec.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let world = Arc::new(Mutex::new(World {
            closed: false,
            apps: apps
                .iter()
                .map(|(app, secrets)| {
                    let s = secrets
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                    (app.to_string(), s)
                })
                .collect(),
            vms: BTreeMap::new(),
            seq: 0,
            faults: VecDeque::new(),
            aimed: Vec::new(),
            foreign_leases_until: None,
            requests: Vec::new(),
            retiring: Vec::new(),
            root: dir.path().to_path_buf(),
            service_bin: crate::common::service_bin(),
            token: TOKEN.into(),
            proxy_lag: Duration::ZERO,
        }));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let control_port = free_port();
        let prism_port = free_port();
        let mut urls = BTreeMap::new();
        {
            let w = world.clone();
            let control = Router::new()
                .route("/v1/apps/{app}", get(show_app))
                .route("/v1/apps/{app}/secrets", get(list_secrets))
                .route(
                    "/v1/apps/{app}/machines",
                    get(list_machines).post(create_machine),
                )
                .route(
                    "/v1/apps/{app}/machines/{id}",
                    get(show_machine)
                        .post(update_machine)
                        .delete(destroy_machine),
                )
                .route("/v1/apps/{app}/machines/{id}/wait", get(wait_machine))
                .route("/v1/apps/{app}/machines/{id}/cordon", post(cordon))
                .route("/v1/apps/{app}/machines/{id}/uncordon", post(uncordon))
                .route(
                    "/v1/apps/{app}/machines/{id}/lease",
                    post(create_lease).delete(release_lease),
                )
                .layer(axum::middleware::from_fn_with_state(w.clone(), faults))
                .with_state(w);
            runtime.spawn(async move {
                let l = tokio::net::TcpListener::bind(("127.0.0.1", control_port))
                    .await
                    .unwrap();
                axum::serve(l, control).await.unwrap();
            });
            for (app, _) in apps {
                let proxy_port = free_port();
                urls.insert(app.to_string(), format!("http://127.0.0.1:{proxy_port}"));
                let proxy = Router::new().fallback(data_plane).with_state(Plane {
                    world: world.clone(),
                    app: app.to_string(),
                    next: Arc::new(AtomicUsize::new(0)),
                    http: reqwest::Client::new(),
                });
                runtime.spawn(async move {
                    let l = tokio::net::TcpListener::bind(("127.0.0.1", proxy_port))
                        .await
                        .unwrap();
                    axum::serve(l, proxy).await.unwrap();
                });
            }
            runtime.spawn(supervise(world.clone()));
        }
        let prism_log = dir.path().join("prism.log");
        let log = std::fs::File::create(&prism_log).unwrap();
        let prism = Command::new(&prism_bin)
            .args(["proxy", "--errors", "-h", "127.0.0.1", "-p"])
            .arg(prism_port.to_string())
            .arg(&spec)
            .arg(format!("http://127.0.0.1:{control_port}"))
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
        FlyEmulator {
            world,
            api: format!("http://127.0.0.1:{prism_port}"),
            urls,
            token: TOKEN.into(),
            prism,
            prism_log,
            _dir: dir,
            runtime: Some(runtime),
        }
    }

    /// Where `app`'s traffic enters.
    pub fn app_url(&self, app: &str) -> &str {
        &self.urls[app]
    }

    /// The variables a copilot command needs to reach this Fly.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("FLY_API_TOKEN", self.token.clone()),
            ("FLY_FLAPS_BASE_URL", self.api.clone()),
            ("COPILOT_PROVIDER_REQUEST_TIMEOUT", "3s".into()),
        ]
    }

    /// Answer the next requests with these faults, one each, in order.
    pub fn inject(&self, faults: &[Fault]) {
        self.world
            .lock()
            .unwrap()
            .faults
            .extend(faults.iter().cloned());
    }

    /// Answer the first request whose `METHOD /path` contains `request`
    /// with `fault` (once per call; several calls fault several requests).
    pub fn inject_on(&self, request: &str, fault: Fault) {
        self.world
            .lock()
            .unwrap()
            .aimed
            .push((request.to_string(), fault));
    }

    /// The proxy routes to a machine put into service only after `lag`.
    pub fn set_proxy_lag(&self, lag: Duration) {
        self.world.lock().unwrap().proxy_lag = lag;
    }

    /// Faults not yet used up.
    pub fn pending_faults(&self) -> usize {
        let w = self.world.lock().unwrap();
        w.faults.len() + w.aimed.len()
    }

    /// Someone else holds the lease of every machine for `d`.
    pub fn hold_leases_for(&self, d: Duration) {
        let mut w = self.world.lock().unwrap();
        let until = Instant::now() + d;
        w.foreign_leases_until = Some(until);
        for vm in w.vms.values_mut() {
            vm.lease = Some(Lease {
                nonce: "someone-elses-nonce".into(),
                owner: "ops@example.com".into(),
                expires: until,
            });
        }
    }

    /// `app`'s machines that exist (not destroyed): (id, colour, release version, state, cordoned).
    pub fn machines(&self, app: &str) -> Vec<(String, String, String, String, bool)> {
        let w = self.world.lock().unwrap();
        w.vms
            .values()
            .filter(|v| v.state != "destroyed" && v.app == app)
            .map(|v| {
                let meta = &v.config["metadata"];
                (
                    v.id.clone(),
                    meta["copilot_colour"].as_str().unwrap_or("").to_string(),
                    meta["copilot_version"].as_str().unwrap_or("").to_string(),
                    v.state.clone(),
                    v.cordoned,
                )
            })
            .collect()
    }

    /// A machine made behind copilot's back (`fly machine run`), serving.
    pub fn run_by_hand(&self, app: &str, image: &str) -> String {
        let mut w = self.world.lock().unwrap();
        let config = json!({
            "image": image,
            "env": { "SHOPIFY_API_VERSION": "2026-10", "SHOPIFY_WEBHOOK_SECRET": "by-hand", "COPILOT_RELEASE": "by-hand" },
            "services": [{ "protocol": "tcp", "internal_port": 8080, "checks": [{ "type": "http", "path": "/health" }] }],
        });
        new_vm(&mut w, app, "dfw", config, false, "by-hand".into())
    }

    /// How many requests Prism checked and passed on.
    pub fn checked_by_prism(&self) -> usize {
        std::fs::read_to_string(&self.prism_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Forwarding"))
            .count()
    }

    /// The API requests made so far, as `METHOD /path`.
    pub fn requests(&self) -> Vec<String> {
        self.world.lock().unwrap().requests.clone()
    }

    /// What Prism reported as breaking the spec (errors; warnings for status
    /// codes the spec does not list are the injected faults and Fly's own 404s).
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

impl Drop for FlyEmulator {
    fn drop(&mut self) {
        let _ = self.prism.kill();
        let _ = self.prism.wait();
        if let Ok(mut w) = self.world.lock() {
            w.closed = true;
            for mut c in std::mem::take(&mut w.retiring) {
                let _ = c.kill();
                let _ = c.wait();
            }
            for vm in w.vms.values_mut() {
                if let Some(mut c) = vm.child.take() {
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

/// The fault layer: sits behind Prism, in front of the handlers.
async fn faults(
    State(w): State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let authorised = {
        let w = w.lock().unwrap();
        req.headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some(format!("Bearer {}", w.token).as_str())
    };
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
        Some(Fault::Status(code, retry_after)) => {
            let mut resp = err(
                StatusCode::from_u16(code).unwrap(),
                "injected by the emulator",
            );
            if let Some(s) = retry_after {
                resp.headers_mut()
                    .insert("retry-after", s.to_string().parse().unwrap());
            }
            resp
        }
        Some(Fault::OffSpec) => ok(json!({ "machines": "not an array" })),
        Some(Fault::Stall(d)) => {
            tokio::time::sleep(d).await;
            next.run(req).await
        }
        Some(Fault::LostAnswer(d)) => {
            let resp = next.run(req).await;
            tokio::time::sleep(d).await;
            resp
        }
        None => next.run(req).await,
    }
}

/// What kind of call a request is: `POST /v1/apps/{app}/machines/{id}/lease`.
pub fn kind_of(request: &str) -> String {
    let mut out = Vec::new();
    let mut after = "";
    for part in request.split('/') {
        out.push(match after {
            "apps" => "{app}",
            "machines" => "{id}",
            _ => part,
        });
        after = part;
    }
    out.join("/")
}

/// Fly's answer to a request about an app it does not have.
fn unknown_app(w: &World, app: &str) -> Option<Response> {
    (!w.apps.contains_key(app)).then(|| err(StatusCode::NOT_FOUND, &format!("app {app} not found")))
}

async fn show_app(State(w): State<Shared>, Path(app): Path<String>) -> Response {
    let w = w.lock().unwrap();
    if let Some(r) = unknown_app(&w, &app) {
        return r;
    }
    ok(json!({
        "id": app, "name": app, "status": "deployed",
        "machine_count": w.vms.values().filter(|v| v.app == app && v.state != "destroyed").count(),
        "organization": { "name": "Copilot", "slug": "copilot" }, "network": "default",
    }))
}

async fn list_secrets(State(w): State<Shared>, Path(app): Path<String>) -> Response {
    let w = w.lock().unwrap();
    if let Some(r) = unknown_app(&w, &app) {
        return r;
    }
    let secrets: Vec<Value> = w.apps[&app]
        .keys()
        .map(|name| json!({ "name": name, "digest": "d1g3st", "created_at": now_text(), "updated_at": now_text() }))
        .collect();
    ok(json!({ "secrets": secrets }))
}

async fn list_machines(
    State(w): State<Shared>,
    Path(app): Path<String>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let w = w.lock().unwrap();
    if let Some(r) = unknown_app(&w, &app) {
        return r;
    }
    let list: Vec<Value> = w
        .vms
        .values()
        .filter(|v| v.state != "destroyed" && v.app == app)
        .filter(|v| {
            q.iter().all(|(k, val)| match k.strip_prefix("metadata.") {
                Some(key) => v.config["metadata"][key].as_str() == Some(val.as_str()),
                None => true,
            })
        })
        .map(Vm::json)
        .collect();
    ok(Value::Array(list))
}

/// Start a machine's process, as flyd boots its VM.
fn new_vm(
    w: &mut World,
    app: &str,
    region: &str,
    config: Value,
    cordoned: bool,
    name: String,
) -> String {
    w.seq += 1;
    let id = format!("{:014x}", 0x3d8d_0000_0000u64 + w.seq * 7919);
    let dir = w.root.join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    let mut vm = Vm {
        app: app.to_string(),
        id: id.clone(),
        name,
        region: region.to_string(),
        state: "created".into(),
        cordoned,
        config,
        created_at: now_text(),
        in_service_at: Instant::now(),
        port: free_port(),
        child: None,
        check: None,
        events: vec![
            json!({ "id": format!("ev{}", w.seq), "type": "launch", "status": "created", "source": "user", "timestamp": chrono::Utc::now().timestamp_millis() }),
        ],
        lease: w.foreign_leases_until.map(|until| Lease {
            nonce: "someone-elses-nonce".into(),
            owner: "ops@example.com".into(),
            expires: until,
        }),
        dir,
    };
    boot(w, &mut vm);
    w.vms.insert(id.clone(), vm);
    id
}

/// Start a machine's process from its config, as flyd boots its VM.
fn boot(w: &World, vm: &mut Vm) {
    if w.closed || vm.image().contains("never-starts") {
        return;
    }
    {
        let mut cmd = Command::new(&w.service_bin);
        let init: Vec<String> = vm.config["init"]["cmd"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        match init.split_first() {
            Some((prog, args)) if prog == "copilot-service" => {
                cmd.args(args);
            }
            Some((prog, args)) => {
                cmd = Command::new(prog);
                cmd.args(args);
            }
            None => {
                cmd.arg("serve");
            }
        }
        cmd.current_dir(&vm.dir)
            .env_clear()
            .envs(
                PASSED_THROUGH
                    .iter()
                    .filter_map(|k| std::env::var_os(k).map(|v| (*k, v))),
            )
            // Fly gives a machine every app secret, under its own name.
            .envs(w.apps[&vm.app].iter())
            .envs(
                vm.config["env"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string()))),
            )
            .env("PORT", vm.port.to_string())
            .env("BIND_ADDRESS", "127.0.0.1")
            .env("FLY_MACHINE_ID", &vm.id)
            .env("FLY_REGION", &vm.region)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(vm.dir.join("out.log")).unwrap())
            .stderr(std::fs::File::create(vm.dir.join("err.log")).unwrap());
        vm.child = Some(cmd.spawn().expect("start a machine's process"));
        vm.state = "starting".into();
    }
}

async fn create_machine(
    State(w): State<Shared>,
    Path(app): Path<String>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut w = w.lock().unwrap();
    if let Some(r) = unknown_app(&w, &app) {
        return r;
    }
    let region = body["region"].as_str().unwrap_or("dfw").to_string();
    if !REGIONS.contains(&region.as_str()) {
        return err(
            StatusCode::UNPROCESSABLE_ENTITY,
            &format!("invalid region {region}"),
        );
    }
    let name = body["name"].as_str().unwrap_or_default().to_string();
    if !name.is_empty()
        && w.vms
            .values()
            .any(|v| v.app == app && v.name == name && v.state != "destroyed")
    {
        return err(StatusCode::CONFLICT, "name_taken");
    }
    let cordoned = body["skip_service_registration"].as_bool().unwrap_or(false);
    let id = new_vm(
        &mut w,
        &app,
        &region,
        body["config"].clone(),
        cordoned,
        name,
    );
    ok(w.vms[&id].json())
}

async fn show_machine(
    State(w): State<Shared>,
    Path((app, id)): Path<(String, String)>,
) -> Response {
    let w = w.lock().unwrap();
    if let Some(r) = unknown_app(&w, &app) {
        return r;
    }
    match w.vms.get(&id).filter(|v| v.app == app) {
        Some(v) => ok(v.json()),
        None => err(StatusCode::NOT_FOUND, "machine not found"),
    }
}

/// Update Machine: the new config replaces the old one and the machine
/// restarts on it (a rolling deploy's step).
async fn update_machine(
    State(w): State<Shared>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut guard = w.lock().unwrap();
    let w = &mut *guard;
    if let Some(r) = unknown_app(w, &app) {
        return r;
    }
    let Some(mut vm) = w.vms.remove(&id) else {
        return err(StatusCode::NOT_FOUND, "machine not found");
    };
    if let Some(r) = lease_refusal(&vm, &headers) {
        w.vms.insert(id, vm);
        return r;
    }
    // As flyd does: the old process gets SIGTERM and finishes what it
    // serves; the machine boots again on the new config.
    if let Some(child) = vm.child.take() {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        w.retiring.push(child);
    }
    vm.config = body["config"].clone();
    vm.state = "created".into();
    vm.check = None;
    vm.port = free_port();
    boot(w, &mut vm);
    let answer = vm.json();
    w.vms.insert(id, vm);
    ok(answer)
}

fn stop_vm(vm: &mut Vm) {
    if let Some(mut c) = vm.child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

async fn destroy_machine(
    State(w): State<Shared>,
    Path((app, id)): Path<(String, String)>,
) -> Response {
    let mut w = w.lock().unwrap();
    if let Some(r) = unknown_app(&w, &app) {
        return r;
    }
    match w.vms.get_mut(&id) {
        Some(v) if v.state != "destroyed" => {
            stop_vm(v);
            v.state = "destroyed".into();
            ok(json!({ "ok": true }))
        }
        _ => err(StatusCode::NOT_FOUND, "machine not found"),
    }
}

async fn wait_machine(
    State(w): State<Shared>,
    Path((app, id)): Path<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
) -> Response {
    let want = q.get("state").cloned().unwrap_or_else(|| "started".into());
    let timeout: u64 = q.get("timeout").and_then(|t| t.parse().ok()).unwrap_or(60);
    let deadline = Instant::now() + Duration::from_secs(timeout.min(60));
    loop {
        {
            let w = w.lock().unwrap();
            if let Some(r) = unknown_app(&w, &app) {
                return r;
            }
            let Some(v) = w.vms.get(&id) else {
                return err(StatusCode::NOT_FOUND, "machine not found");
            };
            if want.split(',').any(|s| s == v.state) {
                return ok(
                    json!({ "ok": true, "state": v.state, "version": format!("01{:0>24}", v.id) }),
                );
            }
        }
        if Instant::now() > deadline {
            return err(
                StatusCode::REQUEST_TIMEOUT,
                "deadline_exceeded: machine did not reach the state",
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A mutation of a leased machine must carry the lease's nonce: Fly's
/// refusal when it does not.
fn lease_refusal(v: &Vm, headers: &HeaderMap) -> Option<Response> {
    let l = v.lease.as_ref().filter(|l| l.expires > Instant::now())?;
    let given = headers
        .get("fly-machine-lease-nonce")
        .and_then(|h| h.to_str().ok());
    (given != Some(l.nonce.as_str())).then(|| {
        err(
            StatusCode::CONFLICT,
            &format!("machine {} is leased by {}", v.id, l.owner),
        )
    })
}

async fn set_cordon(w: Shared, app: String, id: String, headers: HeaderMap, on: bool) -> Response {
    let mut w = w.lock().unwrap();
    if let Some(r) = unknown_app(&w, &app) {
        return r;
    }
    let Some(v) = w.vms.get_mut(&id) else {
        return err(StatusCode::NOT_FOUND, "machine not found");
    };
    if let Some(r) = lease_refusal(v, &headers) {
        return r;
    }
    if v.cordoned && !on {
        v.in_service_at = Instant::now();
    }
    v.cordoned = on;
    ok(json!({ "ok": true }))
}

async fn cordon(
    State(w): State<Shared>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    set_cordon(w, app, id, headers, true).await
}

async fn uncordon(
    State(w): State<Shared>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    set_cordon(w, app, id, headers, false).await
}

async fn create_lease(
    State(w): State<Shared>,
    Path((app, id)): Path<(String, String)>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    let mut w = w.lock().unwrap();
    if let Some(r) = unknown_app(&w, &app) {
        return r;
    }
    w.seq += 1;
    let seq = w.seq;
    let Some(v) = w.vms.get_mut(&id) else {
        return err(StatusCode::NOT_FOUND, "machine not found");
    };
    if let Some(l) = &v.lease
        && l.expires > Instant::now()
    {
        return err(
            StatusCode::CONFLICT,
            &format!("lease currently held by {}", l.owner),
        );
    }
    let ttl = body["ttl"].as_u64().unwrap_or(30);
    let nonce = format!("n{seq:08x}");
    v.lease = Some(Lease {
        nonce: nonce.clone(),
        owner: "copilot@emulated".into(),
        expires: Instant::now() + Duration::from_secs(ttl),
    });
    let expires_at = chrono::Utc::now().timestamp() + ttl as i64;
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "nonce": nonce, "expires_at": expires_at, "owner": "copilot@emulated",
            "description": body["description"], "version": format!("01{:0>24}", v.id),
        })),
    )
        .into_response()
}

async fn release_lease(
    State(w): State<Shared>,
    Path((app, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let mut w = w.lock().unwrap();
    if let Some(r) = unknown_app(&w, &app) {
        return r;
    }
    let Some(v) = w.vms.get_mut(&id) else {
        return err(StatusCode::NOT_FOUND, "machine not found");
    };
    if let Some(r) = lease_refusal(v, &headers) {
        return r;
    }
    v.lease = None;
    ok(json!({ "ok": true }))
}

/// flyd and the health checker: processes that exit stop their machine;
/// a started machine's checks ask its `/health`.
async fn supervise(w: Shared) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(800))
        .build()
        .unwrap();
    loop {
        let probes: Vec<(String, u16, bool, bool)> = {
            let mut w = w.lock().unwrap();
            w.retiring.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
            let mut out = Vec::new();
            for v in w.vms.values_mut() {
                if let Some(c) = &mut v.child
                    && let Ok(Some(status)) = c.try_wait()
                {
                    v.child = None;
                    v.state = "stopped".into();
                    v.check = v.has_checks().then_some("critical");
                    v.events.push(json!({
                        "id": format!("ev-exit-{}", v.id), "type": "exit", "status": "stopped", "source": "flyd",
                        "timestamp": chrono::Utc::now().timestamp_millis(),
                        "request": { "exit_event": { "exit_code": status.code().unwrap_or(-1), "requested_stop": false } },
                    }));
                }
                if v.child.is_some() && matches!(v.state.as_str(), "starting" | "started") {
                    let services = v.config["services"]
                        .as_array()
                        .is_some_and(|s| !s.is_empty());
                    out.push((
                        v.id.clone(),
                        v.port,
                        services,
                        v.image().contains("unhealthy"),
                    ));
                }
            }
            out
        };
        for (id, port, services, unhealthy) in probes {
            // A one-off machine (release command) has no services: it is
            // started while its process runs.
            let answered = if services {
                http.get(format!("http://127.0.0.1:{port}/health"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            } else {
                true
            };
            let mut w = w.lock().unwrap();
            if let Some(v) = w.vms.get_mut(&id) {
                if v.state == "starting" && (answered || !services) {
                    v.state = "started".into();
                }
                if v.state == "started" && v.has_checks() {
                    v.check = Some(if answered && !unhealthy {
                        "passing"
                    } else {
                        "critical"
                    });
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One app's fly-proxy.
#[derive(Clone)]
struct Plane {
    world: Shared,
    app: String,
    next: Arc<AtomicUsize>,
    http: reqwest::Client,
}

/// fly-proxy: round robin over machines in service, or the one a request pins.
async fn data_plane(
    State(Plane {
        world: w,
        app,
        next,
        http,
    }): State<Plane>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let target = {
        let w = w.lock().unwrap();
        let pinned = headers
            .get("fly-force-instance-id")
            .and_then(|h| h.to_str().ok())
            .and_then(|id| w.vms.get(id))
            .filter(|v| v.state == "started" && v.app == app)
            .map(|v| v.port);
        pinned.or_else(|| {
            // Like fly-proxy, it learns about a machine put into service
            // only after `proxy_lag`.
            let serving: Vec<u16> = w
                .vms
                .values()
                .filter(|v| v.app == app && v.serves() && v.in_service_at.elapsed() >= w.proxy_lag)
                .map(|v| v.port)
                .collect();
            (!serving.is_empty())
                .then(|| serving[next.fetch_add(1, Ordering::Relaxed) % serving.len()])
        })
    };
    let Some(port) = target else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no machine in service").into_response();
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
