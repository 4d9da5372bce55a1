//! The `local` provider: `copilot-service` processes on loopback, one per
//! colour, each with its own port and log file under
//! `.copilot/local/<arena>/`, behind the weighted router on the arena's port.
//! Everything keeps running after the command exits; `copilot down ARENA`
//! stops it.

pub mod router;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use copilot_core::config::def::At;
use copilot_core::config::{Diagnostics, SettingsInput};
use copilot_core::model::{
    Capabilities, ProviderKind, ProviderSettings, StrategyKind, TrafficSplit,
};
use copilot_core::provider::{
    ArenaStatus, Counts, ErrorKind, Handle, Op, Provider, ProviderError, ReleaseSpec, Secret, Slot,
    SlotStatus,
};
use router::{Backend, Routes};
use schemars::JsonSchema;

/// Where the local provider keeps an arena's state, logs and routes.
pub fn state_dir(root: &Path, arena: &str) -> PathBuf {
    root.join(".copilot").join("local").join(arena)
}

/// Whether anything was ever deployed into `arena` on this machine.
pub fn has_state(root: &Path, arena: &str) -> bool {
    state_dir(root, arena).is_dir()
}

/// The log of `version` started in `slot` (one per start).
pub fn log_file(root: &Path, arena: &str, slot: Slot, version: &str) -> PathBuf {
    state_dir(root, arena).join(format!("{slot}-{}.log", version.replace(['/', ' '], "_")))
}

/// The router's port when an arena names none.
pub const DEFAULT_PORT: u16 = 7400;

/// The `provider:` settings of a local arena, as written.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct Section {
    /// The loopback port of the arena's router [default: 7400].
    #[serde(default)]
    pub port: Option<At<u32>>,
}

/// The settings of an arena on this provider, checked.
#[derive(Clone, Debug, Serialize)]
pub struct LocalSettings {
    /// The loopback port of the arena's router.
    pub port: u16,
}

/// What this provider can do; `copilot validate` holds arena strategies to it.
pub static CAPABILITIES: Capabilities = Capabilities {
    strategies: &[
        StrategyKind::Rolling,
        StrategyKind::Immediate,
        StrategyKind::BlueGreen,
        StrategyKind::Canary,
    ],
    traffic_split: TrafficSplit::Exact,
    instant_rollback: true,
    live_on_ready: false,
    routes_by_header: true,
    settings: &["port"],
    required_settings: &[],
    secret_stores: &[],
    templates: &[],
};

/// The local provider's rules: a port for the router, not a privileged one.
pub fn settings(input: &SettingsInput<'_>, diags: &mut Diagnostics) -> Option<ProviderSettings> {
    let p: Section = input.section(diags)?;
    let port = match &p.port {
        Some(p) if !(1024..=65535).contains(&p.value) => {
            diags.error(
                input.file,
                p.loc,
                format!("port {} is out of range", p.value),
                "use a port from 1024 to 65535",
            );
            return None;
        }
        Some(p) => p.value as u16,
        None => DEFAULT_PORT,
    };
    Some(ProviderSettings::new(LocalSettings { port }))
}

/// A process this provider started.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Proc {
    pid: u32,
    port: u16,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct SlotProc {
    #[serde(flatten)]
    proc: Proc,
    release_id: String,
    version: String,
    log: PathBuf,
    /// The operation that started it: launching again with it is a no-op.
    #[serde(default)]
    key: String,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct State {
    router: Option<RouterProc>,
    slots: BTreeMap<Slot, SlotProc>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct RouterProc {
    pid: u32,
    port: u16,
    admin_port: u16,
}

pub struct LocalProvider {
    arena: String,
    dir: PathBuf,
    root: PathBuf,
    port: u16,
    copilot_bin: PathBuf,
    service_bin: PathBuf,
    http: reqwest::Client,
    /// Services started by this process, so that one that exits is reaped
    /// and seen as exited (not a zombie that `kill -0` still finds).
    children: std::sync::Mutex<BTreeMap<u32, std::process::Child>>,
}

use copilot_core::process::alive;

/// Stop process `pid` (SIGTERM, then SIGKILL after 5 s) off the runtime's
/// thread, so what else the command runs (its lease renewal, a drill's
/// prober) goes on meanwhile.
async fn stop_pid(pid: u32) {
    let stopping = tokio::task::spawn_blocking(move || {
        copilot_core::process::stop(pid, Duration::from_secs(5))
    });
    if stopping.await.is_err() {
        copilot_core::process::stop(pid, Duration::ZERO);
    }
}

/// Variables of the CLI's environment a started process keeps: how to find
/// programs, how to log, and a clock faked for the whole process tree
/// (libfaketime); nothing that can hold a secret.
const PASSED_THROUGH: &[&str] = &[
    "PATH",
    "TZ",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "LD_PRELOAD",
    "FAKETIME",
    "FAKETIME_DONT_FAKE_MONOTONIC",
];

/// The Prometheus `file_sd` targets of an arena's running colours, in its directory.
pub const PROMETHEUS_TARGETS: &str = "prometheus-targets.json";

/// Write through a temporary file so readers never see half a file.
fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn failed(action: &str, message: impl Into<String>) -> ProviderError {
    ProviderError::failed(action, message)
}

/// The last lines of a log, for error messages.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl LocalProvider {
    /// The provider of `arena`, rooted in the project at `root`; the service
    /// binary is `copilot-service` next to this executable (or `COPILOT_SERVICE_BIN`).
    pub fn new(root: &Path, arena: &str, port: u16) -> Result<Self, ProviderError> {
        let copilot_bin = std::env::current_exe().map_err(|e| {
            ProviderError::unavailable("find the copilot executable", e.to_string())
        })?;
        let service_bin = std::env::var_os("COPILOT_SERVICE_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| copilot_bin.with_file_name("copilot-service"));
        Self::with_binaries(root, arena, port, copilot_bin, service_bin)
    }

    /// The same, with explicit `copilot` (for the router) and `copilot-service` binaries.
    pub fn with_binaries(
        root: &Path,
        arena: &str,
        port: u16,
        copilot_bin: PathBuf,
        service_bin: PathBuf,
    ) -> Result<Self, ProviderError> {
        if !service_bin.is_file() {
            return Err(ProviderError::unavailable(
                "find copilot-service",
                format!("it is not at {}", service_bin.display()),
            )
            .with_hint(
                "build it with `cargo build --bin copilot-service`, or set COPILOT_SERVICE_BIN",
            ));
        }
        // The router and the services run in the root, not where the caller
        // stands: every path they are given must be absolute.
        let root = std::path::absolute(root)
            .map_err(|e| failed("resolve the project root", e.to_string()))?;
        let dir = state_dir(&root, arena);
        std::fs::create_dir_all(&dir)
            .map_err(|e| failed("create the state folder", e.to_string()))?;
        Ok(LocalProvider {
            arena: arena.to_string(),
            dir,
            root,
            port,
            copilot_bin,
            service_bin,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("client"),
            children: Default::default(),
        })
    }

    fn state_file(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    fn load(&self) -> State {
        std::fs::read_to_string(self.state_file())
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    fn save(&self, s: &State) -> Result<(), ProviderError> {
        write_atomic(
            &self.state_file(),
            &serde_json::to_string_pretty(s).expect("state serializes"),
        )
        .map_err(|e| failed("save the local state", e.to_string()))?;
        // Prometheus file-based discovery of what runs, for analysis with
        // `source: prometheus` (`file_sd_configs` pointing at this file).
        let targets: Vec<serde_json::Value> = s
            .slots
            .iter()
            .map(|(slot, p)| {
                serde_json::json!({
                    "targets": [format!("127.0.0.1:{}", p.proc.port)],
                    "labels": { "arena": self.arena, "slot": slot.to_string(), "release": p.version },
                })
            })
            .collect();
        write_atomic(
            &self.dir.join(PROMETHEUS_TARGETS),
            &serde_json::to_string_pretty(&targets).expect("targets serialize"),
        )
        .map_err(|e| failed("write the Prometheus targets", e.to_string()))
    }

    /// The development webhook secret of this arena, created on first use.
    pub fn dev_secret(&self) -> Result<String, ProviderError> {
        let path = self.dir.join("webhook-secret");
        if let Ok(s) = std::fs::read_to_string(&path) {
            return Ok(s.trim().to_string());
        }
        let secret = uuid::Uuid::new_v4().simple().to_string();
        std::fs::write(&path, &secret)
            .map_err(|e| failed("write the development secret", e.to_string()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        }
        Ok(secret)
    }

    fn spawn(
        &self,
        program: &Path,
        args: &[&str],
        env: &BTreeMap<String, String>,
        log: &Path,
    ) -> Result<std::process::Child, ProviderError> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| failed("open the log", e.to_string()))?;
        let err = out
            .try_clone()
            .map_err(|e| failed("open the log", e.to_string()))?;
        // Only what the process is given: the CLI's own environment holds
        // credentials and secret values that neither the router nor a
        // service may see.
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .env_clear()
            .envs(
                PASSED_THROUGH
                    .iter()
                    .filter_map(|k| std::env::var_os(k).map(|v| (*k, v))),
            )
            .envs(env);
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            // Its own process group: the processes outlive this command and its Ctrl-C.
            cmd.process_group(0);
        }
        cmd.spawn()
            .map_err(|e| failed(&format!("start {}", program.display()), e.to_string()))
    }

    async fn ensure_router(&self, state: &mut State) -> Result<RouterProc, ProviderError> {
        if let Some(r) = &state.router
            && alive(r.pid)
        {
            return Ok(r.clone());
        }
        let admin_port = free_port().map_err(|e| failed("find a port", e.to_string()))?;
        let routes = self.dir.join("routes.json");
        let log = self.dir.join("router.log");
        let mut child = self.spawn(
            &self.copilot_bin,
            &[
                "local-router",
                "--port",
                &self.port.to_string(),
                "--admin-port",
                &admin_port.to_string(),
                "--routes",
                &routes.to_string_lossy(),
            ],
            &BTreeMap::new(),
            &log,
        )?;
        let pid = child.id();
        let r = RouterProc {
            pid,
            port: self.port,
            admin_port,
        };
        let admin = format!("http://127.0.0.1:{admin_port}/routes");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self
                .http
                .get(&admin)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            // try_wait, not kill -0: an exited child is a zombie until reaped.
            if child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                return Err(failed(
                    "start the router",
                    format!("port {}: {}", self.port, tail(&log, 5)),
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        state.router = Some(r.clone());
        self.save(state)?;
        Ok(r)
    }

    /// Hand the router its routes (it persists them before serving them).
    async fn put_routes(
        &self,
        admin_port: u16,
        routes: &Routes,
        action: &str,
    ) -> Result<(), ProviderError> {
        let resp = self
            .http
            .put(format!("http://127.0.0.1:{admin_port}/routes"))
            .json(routes)
            .send()
            .await
            .map_err(|e| failed(action, e.to_string()))?;
        if !resp.status().is_success() {
            return Err(failed(action, format!("router answered {}", resp.status())));
        }
        Ok(())
    }

    async fn routes(&self, state: &State) -> Routes {
        let Some(r) = &state.router else {
            return Routes::default();
        };
        match self
            .http
            .get(format!("http://127.0.0.1:{}/routes", r.admin_port))
            .send()
            .await
        {
            Ok(resp) => resp.json().await.unwrap_or_default(),
            Err(_) => Routes::default(),
        }
    }

    async fn healthy(&self, port: u16) -> bool {
        self.http
            .get(format!("http://127.0.0.1:{port}/health"))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }
}

impl LocalProvider {
    /// Whether the service `pid` still runs; reaps it when this process started it.
    fn running(&self, pid: u32) -> bool {
        let mut children = self.children.lock().expect("children lock");
        match children.get_mut(&pid) {
            Some(child) => match child.try_wait() {
                Ok(None) => true,
                _ => {
                    children.remove(&pid);
                    false
                }
            },
            None => alive(pid),
        }
    }

    fn slot_status(&self, slot: Slot, p: &SlotProc, healthy: bool, weight: u8) -> SlotStatus {
        let n = u32::from(healthy);
        SlotStatus {
            slot,
            release_id: p.release_id.clone(),
            version: p.version.clone(),
            image: String::new(),
            url: format!("http://127.0.0.1:{}", p.proc.port),
            headers: BTreeMap::new(),
            healthy,
            instances: Counts {
                desired: 1,
                started: u32::from(self.running(p.proc.pid)),
                healthy: n,
            },
            regions: Vec::new(),
            weight,
        }
    }
}

impl Provider for LocalProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Local
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn prepare(&self, release: &mut ReleaseSpec) -> Result<(), ProviderError> {
        // A development secret, kept in the arena's local folder, unless one is given.
        if !matches!(
            release.secrets.get("SHOPIFY_WEBHOOK_SECRET"),
            Some(Secret::Value(_))
        ) {
            release.secrets.insert(
                "SHOPIFY_WEBHOOK_SECRET".into(),
                Secret::Value(self.dev_secret()?),
            );
        }
        // Nothing here can read a platform's store: such secrets are left out.
        release.secrets.retain(|_, s| matches!(s, Secret::Value(_)));
        Ok(())
    }

    async fn launch(
        &self,
        op: &Op<'_>,
        slot: Slot,
        release: &ReleaseSpec,
    ) -> Result<Handle, ProviderError> {
        let mut state = self.load();
        self.ensure_router(&mut state).await?;
        if let Some(p) = state.slots.get(&slot)
            && p.key == op.key
            && p.release_id == release.release_id
            && self.running(p.proc.pid)
        {
            return Ok(serde_json::json!({ "pid": p.proc.pid, "port": p.proc.port }));
        }
        // The slot is idle by contract: whatever ran there is replaced.
        if let Some(old) = state.slots.remove(&slot) {
            stop_pid(old.proc.pid).await;
        }
        let port = free_port().map_err(|e| failed("find a port", e.to_string()))?;
        let log = log_file(&self.root, &self.arena, slot, &release.version);
        // One log per start: the evidence of a deployment quotes only its own run.
        let _ = std::fs::remove_file(&log);
        let mut env = release.env.clone();
        for (name, secret) in &release.secrets {
            if let Secret::Value(v) = secret {
                env.insert(name.clone(), v.clone());
            }
        }
        env.insert("PORT".into(), port.to_string());
        env.insert("BIND_ADDRESS".into(), "127.0.0.1".into());
        env.insert("COPILOT_ARENA".into(), self.arena.clone());
        env.insert("COPILOT_RELEASE".into(), release.version.clone());
        let child = self.spawn(&self.service_bin, &["serve"], &env, &log)?;
        let pid = child.id();
        self.children
            .lock()
            .expect("children lock")
            .insert(pid, child);
        // Recorded before waiting: if this command dies now, the next deploy
        // into the slot, or `down`, still finds and stops the process.
        state.slots.insert(
            slot,
            SlotProc {
                proc: Proc { pid, port },
                release_id: release.release_id.clone(),
                version: release.version.clone(),
                log,
                key: op.key.clone(),
            },
        );
        self.save(&state)?;
        Ok(serde_json::json!({ "pid": pid, "port": port }))
    }

    async fn wait_ready(
        &self,
        op: &Op<'_>,
        slot: Slot,
        release: &ReleaseSpec,
        _handle: &Handle,
    ) -> Result<SlotStatus, ProviderError> {
        let mut state = self.load();
        let Some(p) = state.slots.get(&slot).cloned() else {
            return Err(failed(
                &format!("start {} in {slot}", release.version),
                "its process is gone",
            ));
        };
        let deadline = Instant::now() + op.timeout;
        while !self.healthy(p.proc.port).await {
            let exited = !self.running(p.proc.pid);
            if exited || Instant::now() > deadline {
                stop_pid(p.proc.pid).await;
                state.slots.remove(&slot);
                self.save(&state)?;
                let action = format!("start {} in {slot}", release.version);
                return Err(if exited {
                    ProviderError::new(ErrorKind::ReleaseFailed, action, tail(&p.log, 8))
                } else {
                    ProviderError::new(
                        ErrorKind::TimedOut,
                        action,
                        format!("not healthy after {}s", op.timeout.as_secs()),
                    )
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(self.slot_status(slot, &p, true, 0))
    }

    async fn status(&self) -> Result<ArenaStatus, ProviderError> {
        let state = self.load();
        let routes = self.routes(&state).await;
        let total: u32 = routes.backends.iter().map(|b| b.weight).sum();
        let mut slots = Vec::new();
        for (slot, p) in &state.slots {
            let weight = routes
                .backends
                .iter()
                .find(|b| b.slot == slot.as_str())
                .and_then(|b| (b.weight * 100).checked_div(total))
                .map_or(0, |w| w as u8);
            let healthy = self.running(p.proc.pid) && self.healthy(p.proc.port).await;
            slots.push(self.slot_status(*slot, p, healthy, weight));
        }
        Ok(ArenaStatus {
            slots,
            url: state
                .router
                .as_ref()
                .filter(|r| alive(r.pid))
                .map(|_| self.url()),
            drift: Vec::new(),
            autodeploy: None,
        })
    }

    async fn set_traffic(
        &self,
        _op: &Op<'_>,
        weights: &[(Slot, u8)],
    ) -> Result<Vec<(Slot, u8)>, ProviderError> {
        let mut state = self.load();
        let router = self.ensure_router(&mut state).await?;
        let mut backends = Vec::new();
        for (slot, w) in weights {
            let Some(p) = state.slots.get(slot) else {
                if *w > 0 {
                    return Err(failed("set traffic", format!("nothing runs in {slot}")));
                }
                continue;
            };
            backends.push(Backend {
                slot: slot.to_string(),
                addr: SocketAddr::from(([127, 0, 0, 1], p.proc.port)),
                weight: u32::from(*w),
            });
        }
        // A cohort routed meanwhile stays routed.
        let cohort = self.routes(&state).await.cohort;
        self.put_routes(
            router.admin_port,
            &Routes { backends, cohort },
            "set traffic",
        )
        .await?;
        // The router splits exactly.
        Ok(weights.to_vec())
    }

    async fn route_cohort(
        &self,
        _op: &Op<'_>,
        cohort: Option<&copilot_core::provider::CohortRoute>,
    ) -> Result<(), ProviderError> {
        let mut state = self.load();
        let router = self.ensure_router(&mut state).await?;
        let mut routes = self.routes(&state).await;
        routes.cohort = match cohort {
            None => None,
            Some(c) => {
                let Some(p) = state.slots.get(&c.slot) else {
                    return Err(failed(
                        &format!("route cohort {}", c.name),
                        format!("nothing runs in {}", c.slot),
                    ));
                };
                Some(router::CohortBackend {
                    name: c.name.clone(),
                    slot: c.slot.to_string(),
                    addr: SocketAddr::from(([127, 0, 0, 1], p.proc.port)),
                    shops: c.shops.iter().map(|s| s.to_ascii_lowercase()).collect(),
                })
            }
        };
        self.put_routes(router.admin_port, &routes, "route a cohort")
            .await
    }

    async fn remove(&self, _op: &Op<'_>, slot: Slot) -> Result<(), ProviderError> {
        let mut state = self.load();
        let mut routes = self.routes(&state).await;
        // A cohort routed to the slot is routed no more.
        if routes
            .cohort
            .as_ref()
            .is_some_and(|c| c.slot == slot.as_str())
            && let Some(r) = &state.router
        {
            routes.cohort = None;
            self.put_routes(r.admin_port, &routes, &format!("remove {slot}"))
                .await?;
        }
        if routes
            .backends
            .iter()
            .any(|b| b.slot == slot.as_str() && b.weight > 0)
        {
            return Err(failed(
                &format!("remove {slot}"),
                "it still receives traffic; shift it away first",
            ));
        }
        if let Some(p) = state.slots.remove(&slot) {
            stop_pid(p.proc.pid).await;
            self.children
                .lock()
                .expect("children lock")
                .remove(&p.proc.pid);
        }
        self.save(&state)
    }

    async fn down(&self) -> Result<(), ProviderError> {
        let mut state = self.load();
        for (_, p) in std::mem::take(&mut state.slots) {
            stop_pid(p.proc.pid).await;
        }
        if let Some(r) = state.router.take() {
            let _ = self
                .http
                .post(format!("http://127.0.0.1:{}/shutdown", r.admin_port))
                .send()
                .await;
            stop_pid(r.pid).await;
        }
        let _ = std::fs::remove_file(self.dir.join("routes.json"));
        self.save(&state)
    }
}
