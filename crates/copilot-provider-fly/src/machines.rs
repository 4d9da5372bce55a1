//! The Fly provider's client of the Machines API (`/v1/apps/{app}/...`).
//!
//! A colour is a group of Machines carrying copilot's metadata (arena,
//! colour, release, deployment, launch id); `instances` machines per colour
//! in each region. New machines are created without service registration
//! (cordoned), waited for `started`, then for passing checks. Traffic is the
//! ratio of uncordoned machines per colour: a switch uncordons the new colour
//! and cordons the old one, which stays as the standby until the next
//! deployment or `copilot down` destroys it. Every mutation of an existing
//! machine holds its lease (`fly-machine-lease-nonce`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::FlySettings;
use copilot_core::http::{ApiClient, ApiError, ApiErrorKind, RetryPolicy};
use copilot_core::model::{ProviderKind, StrategyKind};
use copilot_core::provider::{
    ArenaStatus, Counts, Drift, ErrorKind, Handle, Op, Provider, ProviderError, RegionCounts,
    ReleaseSpec, Secret, Slot, SlotStatus,
};

/// Where the Machines API is, unless `FLY_FLAPS_BASE_URL` says otherwise.
pub const FLY_API_BASE: &str = "https://api.machines.dev";

/// The metadata keys copilot tags its machines with.
const ARENA: &str = "copilot_arena";
const COLOUR: &str = "copilot_colour";
const RELEASE: &str = "copilot_release";
const VERSION: &str = "copilot_version";
const IMAGE: &str = "copilot_image";
const DEPLOYMENT: &str = "copilot_deployment";
const LAUNCH: &str = "copilot_launch";
/// `service` for a colour's machines, `release-command` for the one-off.
const ROLE: &str = "copilot_role";

/// A lease is held around one call: a copilot killed while holding one
/// leaves it for this long at most.
const LEASE_TTL_SECS: u64 = 10;

/// How long a lease held by someone else is waited for before giving up
/// (longer than [`LEASE_TTL_SECS`], so one left by a killed copilot expires first).
const LEASE_PATIENCE: Duration = Duration::from_secs(20);

pub struct FlyProvider {
    api: ApiClient,
    arena: String,
    s: FlySettings,
    instances: u32,
    /// Rolling and immediate update the live machines in place, as `fly
    /// deploy` does; blue-green and canary start a second colour beside them.
    strategy: StrategyKind,
    /// The configs machines had before this process updated them in place,
    /// to put back when the update fails. Kept in memory only: configs
    /// hold the values of `env:`/`file:` secrets.
    replaced: std::sync::Mutex<BTreeMap<String, Value>>,
}

/// A machine as the API describes it (the fields copilot reads).
#[derive(Clone, Debug, Default, Deserialize)]
struct Machine {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    region: String,
    #[serde(default)]
    cordoned: bool,
    #[serde(default)]
    config: MachineConfig,
    #[serde(default)]
    checks: Vec<CheckStatus>,
    #[serde(default)]
    events: Vec<Value>,
    #[serde(default)]
    created_at: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct MachineConfig {
    #[serde(default)]
    image: String,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct CheckStatus {
    #[serde(default)]
    status: String,
}

impl Machine {
    fn meta(&self, key: &str) -> Option<&str> {
        self.config.metadata.get(key).map(String::as_str)
    }
    fn started(&self) -> bool {
        self.state == "started"
    }
    /// Started, with every check passing (a machine without checks has none failing).
    fn healthy(&self) -> bool {
        self.started() && self.checks.iter().all(|c| c.status == "passing")
    }
    fn colour(&self) -> Option<Slot> {
        match self.meta(COLOUR)? {
            "blue" => Some(Slot::Blue),
            "green" => Some(Slot::Green),
            _ => None,
        }
    }
    /// The exit code of the machine's main process, from its events.
    fn exit_code(&self) -> Option<i64> {
        self.events.iter().find_map(|e| {
            e.pointer("/request/exit_event/exit_code")
                .and_then(Value::as_i64)
        })
    }
}

fn api_err(action: impl std::fmt::Display) -> impl FnOnce(ApiError) -> ProviderError {
    move |e| ProviderError::from(e).during(action)
}

/// A short, stable tag of an operation key, for machine names.
fn short(key: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(key.as_bytes());
    d.iter().take(4).map(|b| format!("{b:02x}")).collect()
}

/// Query values and path segments, percent-encoded.
fn q(v: &str) -> String {
    copilot_core::http::encode(v)
}

impl FlyProvider {
    /// The provider of `arena` on the app the settings name, with the token
    /// from `FLY_API_TOKEN` and the API at `FLY_FLAPS_BASE_URL` (as flyctl).
    pub fn from_env(
        arena: &str,
        s: &FlySettings,
        instances: u32,
        strategy: StrategyKind,
    ) -> Result<Self, ProviderError> {
        let token = std::env::var("FLY_API_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| {
                ProviderError::unavailable(
                    format!("reach Fly for app {}", s.app),
                    "no Fly API token",
                )
                .with_hint("set FLY_API_TOKEN (`fly tokens create deploy -a APP` makes one)")
            })?;
        let base = std::env::var("FLY_FLAPS_BASE_URL")
            .ok()
            .filter(|b| !b.trim().is_empty())
            .unwrap_or_else(|| FLY_API_BASE.to_string());
        Ok(FlyProvider {
            api: ApiClient::new(&base, Some(token), RetryPolicy::from_env()),
            arena: arena.to_string(),
            s: s.clone(),
            instances,
            strategy,
            replaced: Default::default(),
        })
    }

    fn path(&self, rest: &str) -> String {
        format!("/v1/apps/{}{rest}", q(&self.s.app))
    }

    async fn call(
        &self,
        method: Method,
        rest: &str,
        body: Option<&Value>,
        action: &str,
    ) -> Result<Value, ProviderError> {
        self.api
            .send(method, &self.path(rest), body, None)
            .await
            .map(|r| r.body)
            .map_err(api_err(action))
    }

    fn no_such_app(&self) -> ProviderError {
        ProviderError::new(
            ErrorKind::NotFound,
            format!("find Fly app {}", self.s.app),
            format!(
                "there is no app `{}` (or the token cannot see it)",
                self.s.app
            ),
        )
        .with_hint("check `app:` in the arena, or create it with `fly apps create`")
    }

    /// The app exists and the token can see it.
    async fn check_app(&self) -> Result<(), ProviderError> {
        match self.api.send(Method::GET, &self.path(""), None, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind == ApiErrorKind::NotFound => Err(self.no_such_app()),
            Err(e) => Err(ProviderError::from(e).during(format!("find Fly app {}", self.s.app))),
        }
    }

    /// Every machine of the app, page by page.
    async fn machines(&self) -> Result<Vec<Machine>, ProviderError> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = self.path("/machines?limit=1000");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={}", q(c)));
            }
            let resp = match self.api.send(Method::GET, &path, None, None).await {
                Ok(r) => r,
                Err(e) if e.kind == ApiErrorKind::NotFound => return Err(self.no_such_app()),
                Err(e) => return Err(ProviderError::from(e).during("list machines")),
            };
            let page: Vec<Machine> = serde_json::from_value(resp.body).map_err(|e| {
                ProviderError::failed("list machines", format!("unexpected answer: {e}"))
            })?;
            let empty = page.is_empty();
            all.extend(page);
            cursor = resp
                .headers
                .get("fly-next-cursor")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            if cursor.is_none() || empty {
                break;
            }
        }
        Ok(all
            .into_iter()
            .filter(|m| m.state != "destroyed" && m.state != "destroying")
            .collect())
    }

    /// This arena's service machines.
    async fn ours(&self) -> Result<Vec<Machine>, ProviderError> {
        Ok(self
            .machines()
            .await?
            .into_iter()
            .filter(|m| {
                m.meta(ARENA) == Some(self.arena.as_str()) && m.meta(ROLE) == Some("service")
            })
            .collect())
    }

    async fn machine(&self, id: &str) -> Result<Machine, ProviderError> {
        let body = self
            .call(
                Method::GET,
                &format!("/machines/{}", q(id)),
                None,
                "read a machine",
            )
            .await?;
        serde_json::from_value(body)
            .map_err(|e| ProviderError::failed("read a machine", format!("unexpected answer: {e}")))
    }

    /// Hold `id`'s lease for `f`; a lease someone else holds is waited for,
    /// then reported as a conflict naming the machine.
    async fn with_lease<T>(
        &self,
        patience: Duration,
        id: &str,
        why: &str,
        f: impl AsyncFnOnce(&str) -> Result<T, ProviderError>,
    ) -> Result<T, ProviderError> {
        let started = Instant::now();
        let mut pause = Duration::from_millis(250);
        let nonce = loop {
            match self
                .api
                .send(
                    Method::POST,
                    &self.path(&format!("/machines/{}/lease", q(id))),
                    Some(
                        &json!({ "ttl": LEASE_TTL_SECS, "description": format!("copilot: {why}") }),
                    ),
                    None,
                )
                .await
            {
                Ok(r) => {
                    break r.body["nonce"].as_str().unwrap_or_default().to_string();
                }
                Err(e) if e.kind == ApiErrorKind::Conflict => {
                    if started.elapsed() + pause > patience {
                        return Err(ProviderError::new(
                            ErrorKind::Conflict,
                            format!("lease machine {id}"),
                            format!(
                                "someone else holds the lease on machine {id} ({})",
                                e.message
                            ),
                        )
                        .with_hint(format!(
                            "wait for them, or see `fly machine leases view {id} -a {}`",
                            self.s.app
                        )));
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(4));
                }
                Err(e) => return Err(ProviderError::from(e).during(format!("lease machine {id}"))),
            }
        };
        let result = f(&nonce).await;
        // Released whatever happened; a lease left behind expires on its own.
        if let Err(e) = self.release_lease(id, &nonce).await {
            tracing::warn!("{e}");
        }
        result
    }

    async fn release_lease(&self, id: &str, nonce: &str) -> Result<(), ProviderError> {
        self.api
            .send_with(
                Method::DELETE,
                &self.path(&format!("/machines/{}/lease", q(id))),
                None,
                &[("fly-machine-lease-nonce", nonce)],
            )
            .await
            .map(|_| ())
            .map_err(api_err(format!("release the lease on machine {id}")))
    }

    /// Cordon or uncordon under the lease: it sets a state, so a 5xx or a
    /// lost answer is asked again.
    async fn leased_post(&self, id: &str, verb: &str, nonce: &str) -> Result<(), ProviderError> {
        self.api
            .send_repeatable(
                Method::POST,
                &self.path(&format!("/machines/{}/{verb}", q(id))),
                None,
                &[("fly-machine-lease-nonce", nonce)],
            )
            .await
            .map(|_| ())
            .map_err(api_err(format!("{verb} machine {id}")))
    }

    /// Create machine `name` of launch `op.key`. Creation is not idempotent:
    /// when its answer is lost or the platform fails (a timeout, a 5xx),
    /// whether the machine exists is read from the app (by its name, among
    /// the launch's machines) before it is asked for again.
    async fn create(&self, op: &Op<'_>, name: &str, body: &Value) -> Result<String, ProviderError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let e = match self
                .api
                .send(Method::POST, &self.path("/machines"), Some(body), None)
                .await
            {
                Ok(r) => return Ok(r.body["id"].as_str().unwrap_or_default().to_string()),
                Err(e) if e.kind == ApiErrorKind::Retryable && attempts < 3 => e,
                Err(e) => return Err(e.into()),
            };
            if let Some(m) = self
                .machines_of_launch(&op.key, true)
                .await?
                .into_iter()
                .find(|m| m.name == name)
            {
                tracing::info!("machine {name} was created though its answer was lost ({e})");
                return Ok(m.id);
            }
            tracing::info!("machine {name} was not created ({e}); asking again");
        }
    }

    async fn destroy(&self, id: &str) -> Result<(), ProviderError> {
        let path = self.path(&format!("/machines/{}?force=true", q(id)));
        match self.api.send(Method::DELETE, &path, None, None).await {
            Ok(_) => Ok(()),
            // Already gone: what was asked is done.
            Err(e) if e.kind == ApiErrorKind::NotFound => Ok(()),
            Err(e) => Err(ProviderError::from(e).during(format!("destroy machine {id}"))),
        }
    }

    async fn destroy_all(&self, ms: &[Machine]) -> Result<(), ProviderError> {
        for m in ms {
            self.destroy(&m.id).await?;
        }
        Ok(())
    }

    fn regions(&self) -> Vec<Option<String>> {
        if self.s.regions.is_empty() {
            vec![None]
        } else {
            self.s.regions.iter().cloned().map(Some).collect()
        }
    }

    /// The machine config of `release` in `slot`.
    fn config(&self, op: &Op<'_>, slot: Slot, release: &ReleaseSpec) -> Value {
        let port = self.s.internal_port;
        let mut env: BTreeMap<String, String> = release.env.clone();
        let mut aliases = Vec::new();
        for (name, secret) in &release.secrets {
            match secret {
                Secret::Value(v) => {
                    env.insert(name.clone(), v.clone());
                }
                // Fly gives a machine each app secret under its own name.
                Secret::Platform(r) if &r.key != name => aliases.push(format!("{name}={}", r.key)),
                Secret::Platform(_) => {}
            }
        }
        if !aliases.is_empty() {
            env.insert("COPILOT_SECRET_ALIASES".into(), aliases.join(","));
        }
        env.insert("PORT".into(), port.to_string());
        env.insert("BIND_ADDRESS".into(), "0.0.0.0".into());
        env.insert("COPILOT_ARENA".into(), self.arena.clone());
        env.insert("COPILOT_RELEASE".into(), release.version.clone());
        let deployment = op.key.split('/').next().unwrap_or_default();
        json!({
            "image": release.image,
            "env": env,
            "metadata": {
                ARENA: self.arena,
                COLOUR: slot.as_str(),
                RELEASE: release.release_id,
                VERSION: release.version,
                IMAGE: release.image,
                DEPLOYMENT: deployment,
                LAUNCH: op.key,
                ROLE: "service",
            },
            "services": [{
                "protocol": "tcp",
                "internal_port": port,
                "autostop": "off",
                "autostart": true,
                "ports": [
                    { "port": 80, "handlers": ["http"], "force_https": true },
                    { "port": 443, "handlers": ["tls", "http"] },
                ],
                "checks": [{
                    "type": "http", "port": port, "method": "get", "path": "/health",
                    "protocol": "http", "interval": "5s", "timeout": "2s", "grace_period": "5s",
                }],
            }],
            "restart": { "policy": "on-failure", "max_retries": 3 },
            "mounts": self.s.mounts.iter().map(|m| json!({ "volume": m.volume, "path": m.path })).collect::<Vec<_>>(),
        })
    }

    /// App secrets the release refers to must exist (by name; never read).
    async fn check_secrets(&self, release: &ReleaseSpec) -> Result<(), ProviderError> {
        let wanted: Vec<&str> = release
            .secrets
            .values()
            .filter_map(|s| match s {
                Secret::Platform(r) => Some(r.key.as_str()),
                Secret::Value(_) => None,
            })
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        let body = self
            .call(Method::GET, "/secrets", None, "list the app's secrets")
            .await?;
        let have: Vec<&str> = body["secrets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["name"].as_str())
            .collect();
        let missing: Vec<&str> = wanted.into_iter().filter(|w| !have.contains(w)).collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ProviderError::failed(
                format!("attach secrets of app {}", self.s.app),
                format!("the app has no secret {}", missing.join(", ")),
            )
            .with_hint(format!(
                "`fly secrets set NAME=... -a {}` (copilot never reads their values)",
                self.s.app
            )))
        }
    }

    /// Run the release command once in a temporary machine of the new release.
    async fn release_command(
        &self,
        op: &Op<'_>,
        cmd: &str,
        release: &ReleaseSpec,
    ) -> Result<(), ProviderError> {
        let action = format!("run the release command of {}", release.version);
        let launch = format!("{}/release-command", op.key);
        // Asked again (a resume): one that already succeeded is not run twice.
        let earlier = self
            .machines_of_launch(&launch, true)
            .await?
            .into_iter()
            .next();
        let id = match earlier {
            Some(m) if m.exit_code() == Some(0) => return Ok(()),
            Some(m) if m.state != "stopped" => m.id,
            _ => {
                let mut config = self.config(op, Slot::Blue, release);
                config["metadata"][ROLE] = json!("release-command");
                config["metadata"][LAUNCH] = json!(launch);
                config["metadata"]
                    .as_object_mut()
                    .expect("metadata")
                    .remove(COLOUR);
                config["services"] = json!([]);
                config["restart"] = json!({ "policy": "no" });
                config["init"] = json!({ "cmd": shell_words(cmd) });
                let body = json!({
                    "name": format!("{}-release-{}", self.arena, short(&launch)),
                    "region": self.s.regions.first(),
                    "config": config,
                });
                let created = self
                    .call(Method::POST, "/machines", Some(&body), &action)
                    .await?;
                created["id"].as_str().unwrap_or_default().to_string()
            }
        };
        op.progress
            .line(&format!("release command: {cmd} (machine {id})"));
        let deadline = Instant::now() + op.timeout;
        let m = loop {
            let m = self.machine(&id).await?;
            if matches!(m.state.as_str(), "stopped" | "failed" | "destroyed") {
                break m;
            }
            if Instant::now() > deadline {
                let _ = self.destroy(&id).await;
                return Err(ProviderError::new(
                    ErrorKind::TimedOut,
                    action,
                    format!("still running after {}s", op.timeout.as_secs()),
                ));
            }
            let _ = self
                .api
                .send(
                    Method::GET,
                    &self.path(&format!(
                        "/machines/{}/wait?state=stopped&timeout=10",
                        q(&id)
                    )),
                    None,
                    None,
                )
                .await;
        };
        let code = m.exit_code();
        let _ = self.destroy(&id).await;
        match code {
            Some(0) => Ok(()),
            code => Err(ProviderError::new(
                ErrorKind::ReleaseFailed,
                action,
                format!(
                    "`{cmd}` exited with {} on machine {id}",
                    code.map_or("no exit code".into(), |c| c.to_string())
                ),
            )
            .with_hint(format!("its output: `fly logs -a {} -i {id}`", self.s.app))),
        }
    }

    async fn machines_of_launch(
        &self,
        launch: &str,
        include_stopped: bool,
    ) -> Result<Vec<Machine>, ProviderError> {
        Ok(self
            .machines()
            .await?
            .into_iter()
            .filter(|m| m.meta(LAUNCH) == Some(launch))
            .filter(|m| include_stopped || m.state != "stopped")
            .collect())
    }

    /// Rolling (one machine at a time, each started and passing its checks
    /// before the next) or immediate (all at once): the live machines take
    /// the new config where they are, volumes and all, and are re-tagged
    /// with the new colour. Machines this key already updated are skipped.
    async fn update_in_place(
        &self,
        op: &Op<'_>,
        slot: Slot,
        release: &ReleaseSpec,
        mut live: Vec<Machine>,
    ) -> Result<Handle, ProviderError> {
        live.sort_by(|a, b| a.id.cmp(&b.id));
        let config = self.config(op, slot, release);
        let ids: Vec<String> = live.iter().map(|m| m.id.clone()).collect();
        for m in &live {
            if m.meta(LAUNCH) == Some(op.key.as_str()) {
                continue;
            }
            let previous = self
                .call(
                    Method::GET,
                    &format!("/machines/{}", q(&m.id)),
                    None,
                    "read a machine",
                )
                .await?["config"]
                .clone();
            // Rolling: out of service while it restarts (the others carry
            // the traffic), back in once it passes its checks.
            let drain = self.strategy == StrategyKind::Rolling && !m.cordoned && live.len() > 1;
            self.with_lease(
                op.timeout.min(LEASE_PATIENCE),
                &m.id,
                &format!("update for {}", self.arena),
                async |nonce| {
                    if drain {
                        self.leased_post(&m.id, "cordon", nonce).await?;
                    }
                    self.api
                        .send_with(
                            Method::POST,
                            &self.path(&format!("/machines/{}", q(&m.id))),
                            Some(&json!({ "config": config, "region": m.region })),
                            &[("fly-machine-lease-nonce", nonce)],
                        )
                        .await
                        .map(|_| ())
                        .map_err(api_err(format!("update machine {}", m.id)))
                },
            )
            .await?;
            self.replaced
                .lock()
                .expect("replaced lock")
                .insert(m.id.clone(), previous);
            op.progress.line(&format!(
                "{}: machine {} updated to {}",
                self.s.app, m.id, release.version
            ));
            if self.strategy == StrategyKind::Rolling {
                let one = json!({ "machines": [m.id], "in_place": true });
                self.wait_for(
                    op,
                    &format!("update machine {} to {}", m.id, release.version),
                    &one,
                )
                .await?;
                if drain {
                    self.with_lease(
                        op.timeout.min(LEASE_PATIENCE),
                        &m.id,
                        &format!("uncordon for {}", self.arena),
                        async |nonce| self.leased_post(&m.id, "uncordon", nonce).await,
                    )
                    .await?;
                    // The next machine leaves service once the proxy routes to this one.
                    tokio::time::sleep(self.s.proxy_wait.as_std()).await;
                }
            }
        }
        Ok(json!({ "app": self.s.app, "launch": op.key, "machines": ids, "in_place": true }))
    }

    /// Put machines updated in place back on the config they had.
    async fn revert(&self, ids: &[String]) {
        let previous: Vec<(String, Value)> = {
            let mut replaced = self.replaced.lock().expect("replaced lock");
            ids.iter()
                .filter_map(|id| replaced.remove(id).map(|c| (id.clone(), c)))
                .collect()
        };
        for (id, config) in previous {
            let path = self.path(&format!("/machines/{}", q(&id)));
            if let Err(e) = self
                .api
                .send(
                    Method::POST,
                    &path,
                    Some(&json!({ "config": config })),
                    None,
                )
                .await
            {
                tracing::warn!("could not put machine {id} back on its previous config: {e}");
            }
        }
    }

    /// Wait, within `op.timeout`, until the machines of `handle` are
    /// started and pass their checks.
    async fn wait_for(
        &self,
        op: &Op<'_>,
        action: &str,
        handle: &Handle,
    ) -> Result<(), ProviderError> {
        let ids = machine_ids(handle);
        let started_at = Instant::now();
        let deadline = started_at + op.timeout;
        op.progress.begin(action, Some(op.timeout));
        let outcome: Result<(), ProviderError> = async {
            loop {
                let mut ms = Vec::new();
                for id in &ids {
                    ms.push(self.machine(id).await?);
                }
                let started = ms.iter().filter(|m| m.started()).count();
                let healthy = ms.iter().filter(|m| m.healthy()).count();
                op.progress.update(
                    started_at.elapsed(),
                    &format!(
                        "{started}/{} started, {healthy}/{} passing checks",
                        ids.len(),
                        ids.len()
                    ),
                );
                if let Some(dead) = ms
                    .iter()
                    .find(|m| matches!(m.state.as_str(), "stopped" | "failed" | "destroyed"))
                {
                    return Err(ProviderError::new(
                        ErrorKind::ReleaseFailed,
                        action.to_string(),
                        format!(
                            "machine {} is {}{}",
                            dead.id,
                            dead.state,
                            dead.exit_code()
                                .map(|c| format!(" (exit code {c})"))
                                .unwrap_or_default()
                        ),
                    )
                    .with_hint(format!(
                        "its output: `fly logs -a {} -i {}`",
                        self.s.app, dead.id
                    )));
                }
                if healthy == ids.len() {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    let what = if started < ids.len() {
                        format!("{started} of {} machines started", ids.len())
                    } else {
                        format!("{healthy} of {} machines pass their checks", ids.len())
                    };
                    return Err(ProviderError::new(
                        ErrorKind::TimedOut,
                        action.to_string(),
                        format!("{what} after {}s", op.timeout.as_secs()),
                    )
                    .with_hint("raise `ready_timeout` under `provider:` if starts are slow"));
                }
                // Block on the first machine not yet started, else poll the
                // checks. A wait for `started` does not end when the machine
                // exits instead, so it is kept short: a machine that stops
                // during its start is seen from its state within seconds.
                match ms.iter().find(|m| !m.started()) {
                    Some(m) => {
                        let wait = deadline
                            .saturating_duration_since(Instant::now())
                            .as_secs()
                            .clamp(1, START_WAIT_SECS);
                        let _ = self
                            .api
                            .send(
                                Method::GET,
                                &self.path(&format!(
                                    "/machines/{}/wait?state=started&timeout={wait}",
                                    q(&m.id)
                                )),
                                None,
                                None,
                            )
                            .await;
                    }
                    None => tokio::time::sleep(Duration::from_millis(250)).await,
                }
            }
        }
        .await;
        op.progress.finish();
        outcome
    }

    fn slot_status(&self, slot: Slot, ms: &[&Machine], total_in_service: usize) -> SlotStatus {
        let first = ms.first();
        let in_service = ms.iter().filter(|m| !m.cordoned && m.healthy()).count();
        let weight = (in_service * 100)
            .checked_div(total_in_service)
            .unwrap_or(0) as u8;
        let desired = self.instances * self.regions().len() as u32;
        let counts = |ms: &[&Machine], desired: u32| Counts {
            desired,
            started: ms.iter().filter(|m| m.started()).count() as u32,
            healthy: ms.iter().filter(|m| m.healthy()).count() as u32,
        };
        let mut regions = Vec::new();
        for r in self.regions().into_iter().flatten() {
            let here: Vec<&Machine> = ms.iter().copied().filter(|m| m.region == r).collect();
            regions.push(RegionCounts {
                region: r,
                counts: counts(&here, self.instances),
            });
        }
        let instances = counts(ms, desired.max(ms.len() as u32));
        let pinned = ms.iter().find(|m| m.healthy()).or(first);
        SlotStatus {
            slot,
            release_id: first
                .and_then(|m| m.meta(RELEASE))
                .unwrap_or_default()
                .to_string(),
            version: first
                .and_then(|m| m.meta(VERSION))
                .unwrap_or_default()
                .to_string(),
            image: first.map(|m| m.config.image.clone()).unwrap_or_default(),
            url: self.s.url.clone(),
            headers: pinned
                .map(|m| BTreeMap::from([("fly-force-instance-id".to_string(), m.id.clone())]))
                .unwrap_or_default(),
            healthy: instances.all_healthy(),
            instances,
            regions,
            weight,
        }
    }
}

impl FlyProvider {
    /// After machines were put into service: the app's public address
    /// answers its health check (Fly's proxy routes to them), within the
    /// proxy wait three times over (at least 10 s).
    async fn confirm_public(&self) -> Result<(), ProviderError> {
        let url = format!("{}/health", self.s.url.trim_end_matches('/'));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("an HTTP client builds");
        let patience = (self.s.proxy_wait.as_std() * 3).max(Duration::from_secs(10));
        let deadline = Instant::now() + patience;
        loop {
            let last = match http.get(&url).send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => format!("it answered {}", r.status()),
                Err(e) => copilot_core::http::error_chain(&e),
            };
            if Instant::now() > deadline {
                return Err(ProviderError::new(
                    ErrorKind::TimedOut,
                    "check the app's public address",
                    format!(
                        "{url} did not answer its health check within {}s of the switch ({last})",
                        patience.as_secs()
                    ),
                )
                .with_hint(format!(
                    "see `fly status -a {}`; raise `proxy_wait` if Fly's proxy is slow to see new machines",
                    self.s.app
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// The longest single `/wait` for a machine to start, in seconds.
const START_WAIT_SECS: u64 = 5;

/// Of a colour's machines, those of the launch that describes it: one
/// whose machines all pass before one still starting, the older first.
fn established(ms: Vec<&Machine>) -> Vec<&Machine> {
    let mut launches: BTreeMap<&str, Vec<&Machine>> = BTreeMap::new();
    for m in ms {
        launches
            .entry(m.meta(LAUNCH).unwrap_or(""))
            .or_default()
            .push(m);
    }
    launches
        .into_values()
        .min_by_key(|group| {
            let all_pass = group.iter().all(|m| m.healthy());
            let oldest = group.iter().map(|m| m.created_at.clone()).min();
            (!all_pass, oldest)
        })
        .unwrap_or_default()
}

/// The machine ids a launch handle names.
fn machine_ids(handle: &Handle) -> Vec<String> {
    handle["machines"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

/// A command line split as a shell would on spaces and simple quotes.
fn shell_words(cmd: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for c in cmd.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => quote = Some(c),
            (None, c) if c.is_whitespace() => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

impl Provider for FlyProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Fly
    }

    fn url(&self) -> String {
        self.s.url.clone()
    }

    async fn status(&self) -> Result<ArenaStatus, ProviderError> {
        let all = self.machines().await?;
        let mut drift = Vec::new();
        let mut foreign_serving = 0usize;
        let mut by_colour: BTreeMap<Slot, Vec<&Machine>> = BTreeMap::new();
        for m in &all {
            match (m.meta(ARENA), m.meta(ROLE), m.colour()) {
                (Some(a), Some("service"), Some(slot)) if a == self.arena => {
                    if let Some(img) = m.meta(IMAGE)
                        && img != m.config.image
                    {
                        drift.push(Drift {
                            instance: m.id.clone(),
                            what: format!(
                                "runs {} where copilot deployed {img} (changed outside copilot, e.g. `fly deploy`)",
                                m.config.image
                            ),
                        });
                    }
                    by_colour.entry(slot).or_default().push(m);
                }
                (Some(a), _, _) if a != self.arena => {}
                (Some(_), Some("release-command"), _) => {}
                _ => {
                    let serving = !m.cordoned && m.healthy();
                    foreign_serving += usize::from(serving);
                    drift.push(Drift {
                        instance: m.id.clone(),
                        what: format!(
                            "machine {} ({}, {}) was not created by copilot{}",
                            if m.name.is_empty() { &m.id } else { &m.name },
                            m.config.image,
                            m.state,
                            if serving { " and serves traffic" } else { "" }
                        ),
                    });
                }
            }
        }
        // A colour holding machines of two launches is being replaced: the
        // established ones (all passing, the older launch) describe it
        // until the new ones pass and the old ones go.
        let by_colour: BTreeMap<Slot, Vec<&Machine>> = by_colour
            .into_iter()
            .map(|(slot, ms)| (slot, established(ms)))
            .collect();
        // Fly's proxy balances over every machine in service, copilot's or
        // not: a colour's weight is its share of all of them.
        let total: usize = by_colour
            .values()
            .flatten()
            .filter(|m| !m.cordoned && m.healthy())
            .count()
            + foreign_serving;
        let slots = by_colour
            .iter()
            .map(|(slot, ms)| self.slot_status(*slot, ms, total))
            .collect();
        Ok(ArenaStatus {
            slots,
            url: Some(self.s.url.clone()),
            drift,
            autodeploy: None,
        })
    }

    async fn launch(
        &self,
        op: &Op<'_>,
        slot: Slot,
        release: &ReleaseSpec,
    ) -> Result<Handle, ProviderError> {
        self.check_app().await?;
        self.check_secrets(release).await?;
        // The idle colour is idle by contract. What an earlier release left
        // there that cannot serve (a failed start) goes now; a healthy
        // standby stays, for an instant rollback, until the new machines
        // pass their checks (`wait_ready`), so a failed start keeps it.
        let here = self.ours().await?;
        let stale: Vec<Machine> = here
            .iter()
            .filter(|m| m.colour() == Some(slot) && m.meta(LAUNCH) != Some(op.key.as_str()))
            .cloned()
            .collect();
        if stale.iter().any(|m| !m.cordoned) {
            return Err(ProviderError::failed(
                format!("deploy into {slot}"),
                format!("{slot} still serves traffic"),
            ));
        }
        let broken: Vec<Machine> = stale.iter().filter(|m| !m.healthy()).cloned().collect();
        self.destroy_all(&broken).await?;
        if let Some(cmd) = &self.s.release_command {
            self.release_command(op, cmd, release).await?;
        }
        let live: Vec<Machine> = here
            .iter()
            .filter(|m| m.colour() == Some(slot.other()) || m.meta(LAUNCH) == Some(op.key.as_str()))
            .cloned()
            .collect();
        if matches!(
            self.strategy,
            StrategyKind::Rolling | StrategyKind::Immediate
        ) && !live.is_empty()
        {
            return self.update_in_place(op, slot, release, live).await;
        }
        // Asked again with the same key, the machines it made are kept.
        let mine: Vec<Machine> = here
            .into_iter()
            .filter(|m| m.meta(LAUNCH) == Some(op.key.as_str()))
            .collect();
        let config = self.config(op, slot, release);
        let mut ids: Vec<String> = mine.iter().map(|m| m.id.clone()).collect();
        for region in self.regions() {
            let have = mine
                .iter()
                .filter(|m| region.as_ref().is_none_or(|r| &m.region == r))
                .count() as u32;
            for i in have..self.instances {
                let name = format!(
                    "{}-{slot}-{}-{}{i}",
                    self.arena,
                    short(&op.key),
                    region
                        .as_deref()
                        .map(|r| format!("{r}-"))
                        .unwrap_or_default()
                );
                let body = json!({
                    "name": name,
                    "region": region,
                    "config": config,
                    "skip_service_registration": true,
                });
                let where_ = region.as_deref().unwrap_or("the nearest region");
                match self.create(op, &name, &body).await {
                    Ok(id) => ids.push(id),
                    Err(e) => {
                        // Nothing half-done: what this launch made goes again.
                        let made = self
                            .machines_of_launch(&op.key, true)
                            .await
                            .unwrap_or_default();
                        let _ = self.destroy_all(&made).await;
                        return Err(e.during(format!(
                            "create machine {} of {} in {where_}",
                            i + 1,
                            self.instances
                        )));
                    }
                }
            }
        }
        op.progress.line(&format!(
            "{}: {} machine(s) for {} in {slot}: {}",
            self.s.app,
            ids.len(),
            release.version,
            ids.join(", ")
        ));
        Ok(json!({ "app": self.s.app, "launch": op.key, "machines": ids }))
    }

    async fn wait_ready(
        &self,
        op: &Op<'_>,
        slot: Slot,
        release: &ReleaseSpec,
        handle: &Handle,
    ) -> Result<SlotStatus, ProviderError> {
        let ids = machine_ids(handle);
        let action = format!("start {} in {slot}", release.version);
        if let Err(e) = self.wait_for(op, &action, handle).await {
            // Nothing of a failed start stays: the live colour is untouched.
            if handle["in_place"].as_bool() == Some(true) {
                self.revert(&ids).await;
            } else {
                let made = self
                    .machines_of_launch(&op.key, true)
                    .await
                    .unwrap_or_default();
                let _ = self.destroy_all(&made).await;
            }
            return Err(e);
        }
        let mut ms = self.ours().await?;
        if handle["in_place"].as_bool() != Some(true) {
            // The new machines pass: the standby they replace in this colour goes.
            let replaced: Vec<Machine> = ms
                .iter()
                .filter(|m| m.colour() == Some(slot) && !ids.contains(&m.id))
                .cloned()
                .collect();
            self.destroy_all(&replaced).await?;
            ms.retain(|m| !replaced.iter().any(|r| r.id == m.id));
        }
        let mine: Vec<&Machine> = ms.iter().filter(|m| ids.contains(&m.id)).collect();
        let total = ms.iter().filter(|m| !m.cordoned && m.healthy()).count();
        Ok(self.slot_status(slot, &mine, total))
    }

    async fn set_traffic(
        &self,
        op: &Op<'_>,
        weights: &[(Slot, u8)],
    ) -> Result<Vec<(Slot, u8)>, ProviderError> {
        let ms = self.ours().await?;
        let mut plan: Vec<(&Machine, bool)> = Vec::new();
        let mut counts: Vec<(Slot, usize)> = Vec::new();
        for (slot, w) in weights {
            let mut colour: Vec<&Machine> =
                ms.iter().filter(|m| m.colour() == Some(*slot)).collect();
            colour.sort_by(|a, b| a.id.cmp(&b.id));
            if colour.is_empty() {
                if *w > 0 {
                    return Err(ProviderError::failed(
                        "set traffic",
                        format!("no machines run in {slot}"),
                    ));
                }
                continue;
            }
            let n = colour.len();
            let mut k = ((f64::from(*w) * n as f64) / 100.0).round() as usize;
            // A weight above 0 keeps at least one machine in service.
            if *w > 0 {
                k = k.max(1);
            }
            counts.push((*slot, k));
            for (i, m) in colour.into_iter().enumerate() {
                plan.push((m, i < k));
            }
        }
        // Into service first, then out: never a moment with nothing serving.
        // Fly's proxy learns about machines put into service after a while:
        // the old ones leave only once it has had `proxy_wait` to see them.
        plan.sort_by_key(|(_, on)| !on);
        let (mut put_in, mut put_in_any) = (false, false);
        for (m, on) in &plan {
            if *on != m.cordoned {
                continue;
            }
            if !*on && put_in {
                put_in = false;
                let wait = self.s.proxy_wait.as_std();
                if !wait.is_zero() {
                    op.progress.line(&format!(
                        "{}: giving Fly's proxy {} to see the machines put into service",
                        self.s.app, self.s.proxy_wait
                    ));
                    tokio::time::sleep(wait).await;
                }
            }
            put_in |= *on;
            put_in_any |= *on;
            let verb = if *on { "uncordon" } else { "cordon" };
            self.with_lease(
                op.timeout.min(LEASE_PATIENCE),
                &m.id,
                &format!("{verb} for {}", self.arena),
                async |nonce| self.leased_post(&m.id, verb, nonce).await,
            )
            .await?;
        }
        if put_in_any {
            self.confirm_public().await?;
        }
        let total: usize = counts.iter().map(|(_, k)| k).sum();
        Ok(counts
            .into_iter()
            .map(|(slot, k)| (slot, (k * 100).checked_div(total).unwrap_or(0) as u8))
            .collect())
    }

    async fn remove(&self, _op: &Op<'_>, slot: Slot) -> Result<(), ProviderError> {
        let ms: Vec<Machine> = self
            .ours()
            .await?
            .into_iter()
            .filter(|m| m.colour() == Some(slot))
            .collect();
        if ms.iter().any(|m| !m.cordoned && m.healthy()) {
            return Err(ProviderError::failed(
                format!("remove {slot}"),
                "it still receives traffic; shift it away first",
            ));
        }
        self.destroy_all(&ms).await
    }

    async fn down(&self) -> Result<(), ProviderError> {
        let ms: Vec<Machine> = self
            .machines()
            .await?
            .into_iter()
            .filter(|m| m.meta(ARENA) == Some(self.arena.as_str()))
            .collect();
        self.destroy_all(&ms).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_commands_split_like_a_shell() {
        assert_eq!(
            shell_words("copilot-service migrate --to 'latest one'"),
            ["copilot-service", "migrate", "--to", "latest one"]
        );
    }
}
