//! The Render provider's client of Render's public API
//! (`{RENDER_HOST}/services/...`).
//!
//! A release goes out as a deploy of its image (`POST .../deploys` with
//! `imageUrl`). Render keeps the previous deploy serving until the new one
//! passes its health check, then swaps: the deploy is followed until it is
//! `live` or ends in one of the published failures. Render deploys carry no
//! tags, so copilot names them by the handles the ledger recorded
//! ([`Provider::recall`]): each deploy copilot started is a colour (the one
//! the executor gave it) and a release; the live deploy is the colour that
//! carries the traffic. Going back to a colour is Render's rollback to that
//! colour's deploy. The service's environment is set one key at a time and
//! only where it changes, so what the team set in the dashboard stays.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::RenderSettings;
use copilot_core::http::{ApiClient, ApiError, ApiErrorKind, RetryPolicy, encode};
use copilot_core::model::ProviderKind;
use copilot_core::provider::{
    ArenaStatus, Counts, Drift, ErrorKind, Handle, Op, Provider, ProviderError, ReleaseSpec,
    Secret, Slot, SlotStatus,
};

/// Where Render's API is, unless `RENDER_HOST` says otherwise (as Render's
/// own CLI reads it).
pub const RENDER_API_BASE: &str = "https://api.render.com/v1";

/// How often a deploy is read while copilot waits for it. Render allows
/// 400 reads a minute per key; a deploy of an image takes tens of seconds.
const POLL: Duration = Duration::from_secs(1);

/// How many of a service's latest deploys `status` reads.
const RECENT: usize = 20;

/// Deploy statuses on the way to `live`.
const IN_PROGRESS: &[&str] = &[
    "created",
    "queued",
    "build_in_progress",
    "update_in_progress",
    "pre_deploy_in_progress",
];

/// Deploy statuses that end a deploy that never went live.
const FAILED: &[&str] = &[
    "build_failed",
    "update_failed",
    "pre_deploy_failed",
    "canceled",
];

/// What copilot knows of a deploy it started: the colour and release.
#[derive(Clone, Debug)]
struct Known {
    slot: Slot,
    release_id: String,
    version: String,
    /// The release's plain variables, to put back when Render rolls back
    /// to this deploy (its environment is the service's, not the deploy's).
    env: BTreeMap<String, String>,
    /// The worker's deploy of the same release, when the arena has one.
    worker: Option<String>,
}

/// A service as the API describes it (the fields copilot reads).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Service {
    id: String,
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    auto_deploy: String,
    #[serde(default)]
    suspended: String,
    #[serde(default)]
    image_path: Option<String>,
    #[serde(default)]
    service_details: Value,
}

impl Service {
    fn suspended(&self) -> bool {
        self.suspended == "suspended"
    }
    fn url(&self) -> Option<&str> {
        self.service_details["url"].as_str()
    }
    fn instances(&self) -> u32 {
        self.service_details["numInstances"].as_u64().unwrap_or(1) as u32
    }
    fn autoscaled(&self) -> bool {
        self.service_details["autoscaling"]["enabled"]
            .as_bool()
            .unwrap_or(false)
    }
    fn pre_deploy(&self) -> Option<&str> {
        self.service_details["envSpecificDetails"]["preDeployCommand"]
            .as_str()
            .filter(|c| !c.is_empty())
    }
}

/// A deploy as the API describes it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Deploy {
    id: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    trigger: String,
    #[serde(default)]
    image: Option<DeployImage>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct DeployImage {
    #[serde(default, rename = "ref")]
    reference: String,
}

impl Deploy {
    fn image(&self) -> &str {
        self.image.as_ref().map_or("", |i| i.reference.as_str())
    }
    fn in_progress(&self) -> bool {
        IN_PROGRESS.contains(&self.status.as_str())
    }
}

pub struct RenderProvider {
    api: ApiClient,
    arena: String,
    s: RenderSettings,
    instances: u32,
    /// Deploy id -> what copilot started it as: from the ledger's handles
    /// and from this process's own deploys.
    known: Mutex<BTreeMap<String, Known>>,
    /// A launch asked again with the same key (a retry) -> its handle.
    launched: Mutex<BTreeMap<String, Handle>>,
    /// Secret values this process set, by deploy: kept in memory only.
    secrets: Mutex<BTreeMap<String, BTreeMap<String, String>>>,
    /// Handles of the rollback deploys `set_traffic` made, for the ledger.
    made: Mutex<Vec<Handle>>,
    /// The service's own URL, once read (a preview's is known only once
    /// Render made it).
    service_url: Mutex<Option<String>>,
}

/// An image reference without its tag or digest (`ghcr.io/acme/app`).
fn repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => image,
    }
}

impl RenderProvider {
    /// A client from `RENDER_API_KEY` and, when set, `RENDER_HOST`.
    pub fn from_env(
        arena: &str,
        s: &RenderSettings,
        instances: u32,
    ) -> Result<Self, ProviderError> {
        let key = std::env::var("RENDER_API_KEY")
            .ok()
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| {
                ProviderError::unavailable(
                    format!("reach Render for service {}", s.service),
                    "no Render API key",
                )
                .with_hint("set RENDER_API_KEY (Render Dashboard > Account Settings > API Keys)")
            })?;
        let base = std::env::var("RENDER_HOST")
            .ok()
            .filter(|b| !b.trim().is_empty())
            .unwrap_or_else(|| RENDER_API_BASE.to_string());
        Ok(RenderProvider {
            api: ApiClient::new(&base, Some(key), RetryPolicy::from_env()),
            arena: arena.to_string(),
            s: s.clone(),
            instances,
            known: Default::default(),
            launched: Default::default(),
            secrets: Default::default(),
            made: Default::default(),
            service_url: Default::default(),
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        action: &str,
    ) -> Result<copilot_core::http::ApiResponse, ProviderError> {
        self.api
            .send(method, path, body, None)
            .await
            .map_err(|e| self.explain(e, action))
    }

    /// An API error, with what to do about the ones a person can fix.
    fn explain(&self, e: ApiError, action: &str) -> ProviderError {
        let kind = e.kind;
        let err = ProviderError::from(e).during(action);
        match kind {
            ApiErrorKind::Unauthorised => err.with_hint(
                "RENDER_API_KEY is not accepted: create a key under Account Settings > API Keys in the Render Dashboard",
            ),
            ApiErrorKind::NotFound => err.with_hint(format!(
                "check `service:` in arena {} (a `srv-...` id or the service's name) and that the key's workspace owns it",
                self.arena
            )),
            _ => err,
        }
    }

    /// The service named by `which` (`srv-...` or a name; names go through
    /// the services list, page by page).
    async fn find(&self, which: &str) -> Result<Service, ProviderError> {
        let action = format!("find Render service {which}");
        if which.starts_with("srv-") {
            let r = self
                .call(
                    Method::GET,
                    &format!("/services/{}", encode(which)),
                    None,
                    &action,
                )
                .await?;
            return parse(r.body, &action);
        }
        let mut found = Vec::new();
        let path = format!("/services?name={}&limit=100", encode(which));
        for item in self.pages(&path, &action).await? {
            let s: Service = parse(item["service"].clone(), &action)?;
            if s.name == which {
                found.push(s);
            }
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(ProviderError::new(
                ErrorKind::NotFound,
                action,
                format!("there is no service named `{which}` (or the key cannot see it)"),
            )
            .with_hint(format!(
                "check `service:` in arena {}, or name the service by its id (`srv-...`)",
                self.arena
            ))),
            n => Err(ProviderError::failed(
                action,
                format!(
                    "{n} services are named `{which}`: {}",
                    found
                        .iter()
                        .map(|s| s.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .with_hint("name the service by its id (`srv-...`) in `service:`")),
        }
    }

    /// A preview arena's own service: made from its base service by
    /// Render's service preview, running `image`, the first time.
    async fn ensure_preview(&self, base: &str, image: &str) -> Result<(), ProviderError> {
        match self.find(&self.s.service).await {
            Ok(_) => return Ok(()),
            Err(e) if e.kind == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let base = self.find(base).await?;
        let action = format!("create the preview {} of {}", self.s.service, base.name);
        let mut body = json!({ "imagePath": image, "name": self.s.service });
        if let Some(plan) = &self.s.plan {
            body["plan"] = json!(plan);
        }
        let r = self
            .call(
                Method::POST,
                &format!("/services/{}/preview", encode(&base.id)),
                Some(&body),
                &action,
            )
            .await?;
        let made: Service = parse(r.body["service"].clone(), &action)?;
        tracing::info!("{action}: {}", made.id);
        Ok(())
    }

    /// Delete a preview arena's own service, when it is there.
    async fn delete_preview(&self) -> Result<(), ProviderError> {
        let service = match self.find(&self.s.service).await {
            Ok(s) => s,
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        for d in self.deploys(&service.id, RECENT).await? {
            if d.in_progress() {
                self.cancel(&service, &d.id).await;
            }
        }
        let action = format!("delete the preview service {}", service.name);
        match self
            .call(
                Method::DELETE,
                &format!("/services/{}", encode(&service.id)),
                None,
                &action,
            )
            .await
        {
            Err(e) if e.kind != ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The arena's web service, checked against the settings.
    async fn service(&self) -> Result<Service, ProviderError> {
        let s = self.find(&self.s.service).await?;
        if let Some(url) = s.url() {
            *self.service_url.lock().expect("service url") = Some(url.to_string());
        }
        if s.kind != "web_service" {
            return Err(ProviderError::failed(
                format!("use Render service {}", self.s.service),
                format!("{} is a {}, not a web service", s.name, s.kind),
            )
            .with_hint(
                "name the web service in `service:`, and a background worker in `worker:`",
            ));
        }
        if let (Some(want), Some(have)) = (&self.s.region, s.service_details["region"].as_str())
            && want != have
        {
            return Err(ProviderError::failed(
                format!("use Render service {}", s.name),
                format!("it runs in {have}, the arena says {want}"),
            )
            .with_hint("Render cannot move a service between regions: correct `region:`, or create the service in that region"));
        }
        Ok(s)
    }

    async fn worker(&self) -> Result<Option<Service>, ProviderError> {
        let Some(w) = &self.s.worker else {
            return Ok(None);
        };
        let s = self.find(w).await?;
        if s.kind != "background_worker" {
            return Err(ProviderError::failed(
                format!("use Render service {w} as the worker"),
                format!("{} is a {}, not a background worker", s.name, s.kind),
            ));
        }
        Ok(Some(s))
    }

    /// The latest deploys of `service`, newest first.
    async fn deploys(&self, service: &str, limit: usize) -> Result<Vec<Deploy>, ProviderError> {
        let action = "list the service's deploys";
        let page = self
            .call(
                Method::GET,
                &format!("/services/{}/deploys?limit={limit}", encode(service)),
                None,
                action,
            )
            .await?
            .body;
        page.as_array()
            .into_iter()
            .flatten()
            .map(|d| parse(d["deploy"].clone(), action))
            .collect()
    }

    async fn deploy(&self, service: &str, id: &str) -> Result<Deploy, ProviderError> {
        let action = format!("read deploy {id}");
        let r = self
            .call(
                Method::GET,
                &format!("/services/{}/deploys/{}", encode(service), encode(id)),
                None,
                &action,
            )
            .await?;
        parse(r.body, &action)
    }

    fn remember(&self, deploy: &str, slot: Slot, release: &ReleaseSpec, worker: Option<&str>) {
        self.known.lock().expect("known").insert(
            deploy.to_string(),
            Known {
                slot,
                release_id: release.release_id.clone(),
                version: release.version.clone(),
                env: release.env.clone(),
                worker: worker.map(str::to_string),
            },
        );
        let secrets: BTreeMap<String, String> = release
            .secrets
            .iter()
            .filter_map(|(k, s)| match s {
                Secret::Value(v) => Some((k.clone(), v.clone())),
                Secret::Platform(_) => None,
            })
            .collect();
        self.secrets
            .lock()
            .expect("secrets")
            .insert(deploy.to_string(), secrets);
    }

    fn known(&self, deploy: &str) -> Option<Known> {
        self.known.lock().expect("known").get(deploy).cloned()
    }

    /// The handle a deploy is recorded under.
    fn handle(
        &self,
        service: &str,
        deploy: &str,
        slot: Slot,
        release: &ReleaseSpec,
        worker: Option<(&str, &str)>,
    ) -> Handle {
        let mut h = json!({
            "provider": "render",
            "service": service,
            "deploy": deploy,
            "slot": slot,
            "release_id": release.release_id,
            "version": release.version,
            "image": release.image,
            // Plain variables only: secret values never reach the ledger.
            "env": release.env,
        });
        if let Some((service, deploy)) = worker {
            h["worker"] = json!({ "service": service, "deploy": deploy });
        }
        h
    }

    /// The variables a deploy of `release` needs on the service: its plain
    /// values, the secret values copilot resolved, and the aliases of
    /// secrets kept in Render under another name.
    fn wanted_env(&self, release: &ReleaseSpec) -> (BTreeMap<String, String>, BTreeSet<String>) {
        let mut env = release.env.clone();
        let mut secret_names = BTreeSet::new();
        let mut aliases = Vec::new();
        for (name, s) in &release.secrets {
            match s {
                Secret::Value(v) => {
                    env.insert(name.clone(), v.clone());
                    secret_names.insert(name.clone());
                }
                Secret::Platform(r) if &r.key != name => aliases.push(format!("{name}={}", r.key)),
                Secret::Platform(_) => {}
            }
        }
        if !aliases.is_empty() {
            env.insert("COPILOT_SECRET_ALIASES".into(), aliases.join(","));
        }
        env.insert("COPILOT_ARENA".into(), self.arena.clone());
        env.insert("COPILOT_RELEASE".into(), release.version.clone());
        (env, secret_names)
    }

    /// The service's variables, by name (values are compared, never shown).
    async fn env_of(&self, service: &str) -> Result<BTreeMap<String, String>, ProviderError> {
        let action = "read the service's environment";
        let path = format!("/services/{}/env-vars?limit=100", encode(service));
        let out = self
            .pages(&path, action)
            .await?
            .iter()
            .filter_map(|i| {
                let v = &i["envVar"];
                Some((
                    v["key"].as_str()?.to_string(),
                    v["value"].as_str()?.to_string(),
                ))
            })
            .collect();
        Ok(out)
    }

    /// Set `wanted` on `service`, one key at a time and only where it
    /// differs; `drop` are keys copilot set before that `wanted` no longer
    /// has. Names are said; values never.
    async fn set_env(
        &self,
        op: &Op<'_>,
        service: &Service,
        wanted: &BTreeMap<String, String>,
        secret_names: &BTreeSet<String>,
        drop: &BTreeSet<String>,
        platform_secrets: &[&str],
    ) -> Result<(), ProviderError> {
        let have = self.env_of(&service.id).await?;
        let missing: Vec<&str> = platform_secrets
            .iter()
            .copied()
            .filter(|k| !have.contains_key(*k))
            .collect();
        if !missing.is_empty() {
            return Err(ProviderError::failed(
                format!("attach the secrets of service {}", service.name),
                format!("the service has no variable {}", missing.join(", ")),
            )
            .with_hint(
                "set it in the Render Dashboard (Environment) or an environment group; copilot never reads its value",
            ));
        }
        let changed: Vec<(&String, &String)> = wanted
            .iter()
            .filter(|(k, v)| have.get(*k) != Some(*v))
            .collect();
        for (k, v) in &changed {
            self.call(
                Method::PUT,
                &format!("/services/{}/env-vars/{}", encode(&service.id), encode(k)),
                Some(&json!({ "value": v })),
                &format!("set {k} on service {}", service.name),
            )
            .await?;
        }
        let dropped: Vec<&String> = drop
            .iter()
            .filter(|k| !wanted.contains_key(*k) && have.contains_key(*k))
            .collect();
        for k in &dropped {
            self.call(
                Method::DELETE,
                &format!("/services/{}/env-vars/{}", encode(&service.id), encode(k)),
                None,
                &format!("remove {k} from service {}", service.name),
            )
            .await?;
        }
        if !changed.is_empty() || !dropped.is_empty() {
            let names: Vec<String> = changed
                .iter()
                .map(|(k, _)| {
                    if secret_names.contains(*k) {
                        format!("{k} (secret)")
                    } else {
                        k.to_string()
                    }
                })
                .chain(dropped.iter().map(|k| format!("-{k}")))
                .collect();
            op.progress.line(&format!(
                "render: set on {}: {}",
                service.name,
                names.join(", ")
            ));
        }
        Ok(())
    }

    /// Make the service what the arena says: its plan, pre-deploy command,
    /// instance count and variables for `release`; a suspended service is
    /// resumed.
    async fn configure(
        &self,
        op: &Op<'_>,
        service: &Service,
        release: &ReleaseSpec,
        web: bool,
    ) -> Result<(), ProviderError> {
        let (wanted, secret_names) = self.wanted_env(release);
        let platform: Vec<&str> = release
            .secrets
            .values()
            .filter_map(|s| match s {
                Secret::Platform(r) => Some(r.key.as_str()),
                Secret::Value(_) => None,
            })
            .collect();
        self.set_env(
            op,
            service,
            &wanted,
            &secret_names,
            &BTreeSet::new(),
            &platform,
        )
        .await?;
        let mut details = serde_json::Map::new();
        if let Some(plan) = &self.s.plan
            && service.service_details["plan"].as_str() != Some(plan)
        {
            details.insert("plan".into(), json!(plan));
        }
        // Only an arena that names a pre-deploy command sets it: one the team
        // set in the dashboard stays when the arena says nothing.
        if web
            && let Some(cmd) = &self.s.release_command
            && Some(cmd.as_str()) != service.pre_deploy()
        {
            details.insert("preDeployCommand".into(), json!(cmd));
        }
        if !details.is_empty() {
            let what: Vec<&str> = details.keys().map(String::as_str).collect();
            op.progress.line(&format!(
                "render: set {} of {}",
                what.join(", "),
                service.name
            ));
            self.call(
                Method::PATCH,
                &format!("/services/{}", encode(&service.id)),
                Some(&json!({ "serviceDetails": details })),
                &format!("update service {}", service.name),
            )
            .await?;
        }
        if web && !service.autoscaled() && service.instances() != self.instances {
            op.progress.line(&format!(
                "render: scaling {} from {} to {} instances",
                service.name,
                service.instances(),
                self.instances
            ));
            self.call(
                Method::POST,
                &format!("/services/{}/scale", encode(&service.id)),
                Some(&json!({ "numInstances": self.instances })),
                &format!("scale service {}", service.name),
            )
            .await?;
        }
        if service.suspended() {
            op.progress
                .line(&format!("render: resuming {}", service.name));
            self.service_action(service, "resume").await?;
        }
        Ok(())
    }

    /// `POST /services/{id}/{verb}`: `suspend` or `resume` the service.
    async fn service_action(&self, service: &Service, verb: &str) -> Result<(), ProviderError> {
        self.call(
            Method::POST,
            &format!("/services/{}/{verb}", encode(&service.id)),
            None,
            &format!("{verb} service {}", service.name),
        )
        .await
        .map(|_| ())
    }

    /// Every item of a listing that pages with cursors (`path` carries its
    /// query, `limit=100` among it).
    async fn pages(&self, path: &str, action: &str) -> Result<Vec<Value>, ProviderError> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut page_path = path.to_string();
            if let Some(c) = &cursor {
                page_path.push_str(&format!("&cursor={}", encode(c)));
            }
            let page = self.call(Method::GET, &page_path, None, action).await?.body;
            let items = page.as_array().cloned().unwrap_or_default();
            let next = items
                .last()
                .and_then(|i| i["cursor"].as_str())
                .map(str::to_string);
            let full = items.len() >= 100;
            all.extend(items);
            match next {
                Some(c) if full && cursor.as_deref() != Some(c.as_str()) => cursor = Some(c),
                _ => return Ok(all),
            }
        }
    }

    /// Ask for a deploy (`path` is `deploys` or `rollback`) whose image will
    /// be `image`, and return it. Render takes no idempotency key, so a
    /// request whose answer is lost (or that is only `202 Queued`) is
    /// resolved by reading the deploys: one that was not there before, of
    /// the same image, is this one; when there is none, nothing was made
    /// and the request is sent again.
    async fn create_deploy(
        &self,
        service: &Service,
        path: &str,
        body: &Value,
        image: &str,
        action: &str,
    ) -> Result<Deploy, ProviderError> {
        let before: BTreeSet<String> = self
            .deploys(&service.id, RECENT)
            .await?
            .into_iter()
            .map(|d| d.id)
            .collect();
        let url = format!("/services/{}/{path}", encode(&service.id));
        let mut last = None;
        for _ in 0..3 {
            match self.api.send(Method::POST, &url, Some(body), None).await {
                Ok(r) if r.body.get("id").is_some() => return parse(r.body, action),
                Ok(_) => {}
                Err(e) if e.kind == ApiErrorKind::Retryable => {
                    tracing::info!("{e}; reading the deploys to see whether it was made");
                    last = Some(e);
                }
                Err(e) => return Err(self.explain(e, action)),
            }
            // Queued, or the answer lost: find it among the deploys.
            for _ in 0..5 {
                let made = self
                    .deploys(&service.id, RECENT)
                    .await?
                    .into_iter()
                    .find(|d| !before.contains(&d.id) && (image.is_empty() || d.image() == image));
                if let Some(d) = made {
                    return Ok(d);
                }
                if last.is_some() {
                    break;
                }
                tokio::time::sleep(POLL).await;
            }
        }
        Err(match last {
            Some(e) => self.explain(e, action),
            None => ProviderError::failed(action, "Render queued the deploy but does not list it"),
        })
    }

    /// Follow deploy `id` of `service` until it is live, saying each status
    /// it passes; a failure names the status. A deploy still in progress at
    /// the deadline is cancelled.
    async fn follow(&self, op: &Op<'_>, service: &Service, id: &str) -> Result<(), ProviderError> {
        let deadline = Instant::now() + op.timeout;
        let mut said = String::new();
        loop {
            let d = self.deploy(&service.id, id).await?;
            if d.status != said {
                op.progress.line(&format!(
                    "render: {} deploy {id} {}",
                    service.name, d.status
                ));
                said = d.status.clone();
            }
            match d.status.as_str() {
                "live" => return Ok(()),
                s if FAILED.contains(&s) => {
                    let mut e = ProviderError::new(
                        ErrorKind::ReleaseFailed,
                        format!("deploy to {}", service.name),
                        format!("deploy {id} ended {s}; the previous deploy keeps serving"),
                    );
                    e = match s {
                        "pre_deploy_failed" => e.with_hint(
                            "the pre-deploy command (`release_command`) failed: its output is in the deploy's logs in the Render Dashboard",
                        ),
                        "update_failed" => e.with_hint(
                            "the new instances did not pass the health check: the deploy's logs in the Render Dashboard say why",
                        ),
                        "build_failed" => e.with_hint(
                            "Render could not pull or build the image: check it exists and the registry credential",
                        ),
                        _ => e,
                    };
                    return Err(e);
                }
                "deactivated" => {
                    return Err(ProviderError::failed(
                        format!("deploy to {}", service.name),
                        format!("deploy {id} was replaced by a later deploy before it went live"),
                    )
                    .with_hint(format!(
                        "`copilot status {}` shows what runs now",
                        self.arena
                    )));
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                self.cancel(service, id).await;
                return Err(ProviderError::new(
                    ErrorKind::TimedOut,
                    format!("deploy to {}", service.name),
                    format!(
                        "deploy {id} was still {} after {:?}; it was cancelled and the previous deploy keeps serving",
                        d.status, op.timeout
                    ),
                )
                .with_hint("raise the arena's `ready_timeout` if the deploy needs longer"));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Cancel deploy `id`; one that already ended is left as it is.
    async fn cancel(&self, service: &Service, id: &str) {
        let path = format!(
            "/services/{}/deploys/{}/cancel",
            encode(&service.id),
            encode(id)
        );
        match self.api.send(Method::POST, &path, None, None).await {
            Ok(_) => tracing::info!("cancelled deploy {id}"),
            Err(e) => tracing::warn!("cancel deploy {id}: {e}"),
        }
    }

    /// Render's rollback of `service` to deploy `to` (which ran `release`),
    /// its environment put back first. Returns the new deploy.
    async fn roll_back_to(
        &self,
        op: &Op<'_>,
        service: &Service,
        to: &str,
        known: &Known,
        secrets: Option<BTreeMap<String, String>>,
    ) -> Result<Deploy, ProviderError> {
        let target = self.deploy(&service.id, to).await?;
        // Render's rollback reuses the deploy's image with the service's
        // current variables: the older release's are put back first, and
        // what copilot set for a newer one and the older lacks is removed.
        let mut wanted = known.env.clone();
        wanted.insert("COPILOT_ARENA".into(), self.arena.clone());
        wanted.insert("COPILOT_RELEASE".into(), known.version.clone());
        let secret_names: BTreeSet<String> = secrets
            .as_ref()
            .map(|s| s.keys().cloned().collect())
            .unwrap_or_default();
        if let Some(s) = secrets {
            wanted.extend(s);
        }
        let copilot_set: BTreeSet<String> = self
            .known
            .lock()
            .expect("known")
            .values()
            .flat_map(|k| k.env.keys().cloned())
            .collect();
        self.set_env(op, service, &wanted, &secret_names, &copilot_set, &[])
            .await?;
        op.progress.line(&format!(
            "render: rolling {} back to deploy {to} ({})",
            service.name, known.version
        ));
        self.create_deploy(
            service,
            "rollback",
            &json!({ "deployId": to }),
            target.image(),
            &format!("roll service {} back to deploy {to}", service.name),
        )
        .await
    }
}

impl RenderProvider {
    /// Render's rollback of the worker to its deploy of the release
    /// `known` names, when the arena has a worker and that deploy is
    /// recorded; the new deploy is not waited for.
    async fn roll_back_worker(
        &self,
        op: &Op<'_>,
        known: &Known,
        secrets: Option<BTreeMap<String, String>>,
    ) -> Result<Option<(Service, String)>, ProviderError> {
        let (Some(w), Some(to)) = (self.worker().await?, &known.worker) else {
            return Ok(None);
        };
        let d = self.roll_back_to(op, &w, to, known, secrets).await?;
        Ok(Some((w, d.id)))
    }
}

/// A body read as `T`, or a clear error naming what did not fit.
fn parse<T: serde::de::DeserializeOwned>(v: Value, action: &str) -> Result<T, ProviderError> {
    serde_json::from_value(v).map_err(|e| {
        ProviderError::failed(action, format!("Render answered something unexpected: {e}"))
    })
}

impl Provider for RenderProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Render
    }

    fn url(&self) -> String {
        self.s
            .url
            .clone()
            .or_else(|| self.service_url.lock().expect("service url").clone())
            .unwrap_or_default()
    }

    fn made(&self) -> Vec<Handle> {
        std::mem::take(&mut *self.made.lock().expect("made"))
    }

    fn recall(&self, handles: &[Handle]) {
        let mut known = self.known.lock().expect("known");
        for h in handles {
            let (Some(deploy), Some(slot)) = (
                h["deploy"].as_str(),
                serde_json::from_value::<Slot>(h["slot"].clone()).ok(),
            ) else {
                continue;
            };
            known.entry(deploy.to_string()).or_insert_with(|| Known {
                slot,
                release_id: h["release_id"].as_str().unwrap_or_default().to_string(),
                version: h["version"].as_str().unwrap_or_default().to_string(),
                env: serde_json::from_value(h["env"].clone()).unwrap_or_default(),
                worker: h["worker"]["deploy"].as_str().map(str::to_string),
            });
        }
    }

    async fn suspend_autodeploy(&self) -> Result<(), ProviderError> {
        let mut services = vec![self.service().await?];
        services.extend(self.worker().await?);
        for s in services {
            self.call(
                Method::PATCH,
                &format!("/services/{}", encode(&s.id)),
                Some(&json!({ "autoDeploy": "no" })),
                &format!("turn autodeploy off for {}", s.name),
            )
            .await?;
        }
        Ok(())
    }

    async fn status(&self) -> Result<ArenaStatus, ProviderError> {
        let service = match self.service().await {
            // A preview not made yet runs nothing.
            Err(e) if e.kind == ErrorKind::NotFound && self.s.preview_of.is_some() => {
                return Ok(ArenaStatus {
                    url: self.s.url.clone(),
                    ..ArenaStatus::default()
                });
            }
            other => other?,
        };
        let url = self
            .s
            .url
            .clone()
            .or_else(|| service.url().map(str::to_string));
        let mut status = ArenaStatus {
            url: url.clone(),
            autodeploy: Some(service.auto_deploy == "yes"),
            ..ArenaStatus::default()
        };
        if service.suspended() {
            return Ok(status);
        }
        let recent = self.deploys(&service.id, RECENT).await?;
        let n = service.instances();
        let live_at = recent.iter().position(|d| d.status == "live");
        let mut taken = BTreeSet::new();
        if let Some(i) = live_at {
            let d = &recent[i];
            let known = self.known(&d.id);
            // A deploy copilot did not start takes the colour of the one it
            // replaced (Render's own rollback, an autodeploy, the dashboard).
            let slot = known.as_ref().map(|k| k.slot).unwrap_or_else(|| {
                recent[i..]
                    .iter()
                    .find_map(|d| self.known(&d.id))
                    .map_or(Slot::Blue, |k| k.slot)
            });
            if known.is_none() {
                status.drift.push(Drift {
                    instance: d.id.clone(),
                    what: format!(
                        "deploy of {} is live; copilot did not start it (trigger: {})",
                        if d.image().is_empty() {
                            "a commit"
                        } else {
                            d.image()
                        },
                        d.trigger
                    ),
                });
                // Named so a rollback can come back to it by its id.
                self.known.lock().expect("known").insert(
                    d.id.clone(),
                    Known {
                        slot,
                        release_id: String::new(),
                        version: String::new(),
                        env: BTreeMap::new(),
                        worker: None,
                    },
                );
            }
            let k = known.unwrap_or(Known {
                slot,
                release_id: String::new(),
                version: String::new(),
                env: BTreeMap::new(),
                worker: None,
            });
            taken.insert(slot);
            status.slots.push(SlotStatus {
                slot,
                release_id: k.release_id,
                version: k.version,
                image: d.image().to_string(),
                url: url.clone().unwrap_or_default(),
                headers: BTreeMap::new(),
                healthy: true,
                instances: Counts {
                    desired: n,
                    started: n,
                    healthy: n,
                },
                regions: Vec::new(),
                weight: 100,
            });
        }
        // Deploys newer than the live one, still on their way.
        for d in recent[..live_at.unwrap_or(recent.len())]
            .iter()
            .filter(|d| d.in_progress())
        {
            match self.known(&d.id) {
                Some(k) if !taken.contains(&k.slot) => {
                    taken.insert(k.slot);
                    status.slots.push(SlotStatus {
                        slot: k.slot,
                        release_id: k.release_id,
                        version: k.version,
                        image: d.image().to_string(),
                        url: String::new(),
                        headers: BTreeMap::new(),
                        healthy: false,
                        instances: Counts {
                            desired: n,
                            started: 0,
                            healthy: 0,
                        },
                        regions: Vec::new(),
                        weight: 0,
                    });
                }
                Some(_) => {}
                None => status.drift.push(Drift {
                    instance: d.id.clone(),
                    what: format!(
                        "a deploy copilot did not start is {} (trigger: {})",
                        d.status, d.trigger
                    ),
                }),
            }
        }
        Ok(status)
    }

    async fn launch(
        &self,
        op: &Op<'_>,
        slot: Slot,
        release: &ReleaseSpec,
    ) -> Result<Handle, ProviderError> {
        if let Some(h) = self.launched.lock().expect("launched").get(&op.key) {
            return Ok(h.clone());
        }
        if let Some(base) = &self.s.preview_of {
            self.ensure_preview(base, &release.image).await?;
        }
        let service = self.service().await?;
        let worker = self.worker().await?;
        for s in std::iter::once(&service).chain(worker.as_ref()) {
            if let Some(configured) = &s.image_path
                && repository(configured) != repository(&release.image)
            {
                return Err(ProviderError::failed(
                    format!("deploy {} to {}", release.version, s.name),
                    format!(
                        "Render deploys only images of the service's own repository ({}), not {}",
                        repository(configured),
                        release.image
                    ),
                )
                .with_hint("create the release from an image of that repository, or change the service's image in the Render Dashboard"));
            }
        }
        self.configure(op, &service, release, true).await?;
        if let Some(w) = &worker {
            self.configure(op, w, release, false).await?;
        }
        op.progress.line(&format!(
            "render: deploying {} to {}",
            release.image, service.name
        ));
        let action = format!("deploy {} to service {}", release.version, service.name);
        let d = self
            .create_deploy(
                &service,
                "deploys",
                &json!({ "imageUrl": release.image }),
                &release.image,
                &action,
            )
            .await?;
        self.remember(&d.id, slot, release, None);
        let wd = match &worker {
            Some(w) => {
                let action = format!("deploy {} to worker {}", release.version, w.name);
                let wd = self
                    .create_deploy(
                        w,
                        "deploys",
                        &json!({ "imageUrl": release.image }),
                        &release.image,
                        &action,
                    )
                    .await?;
                Some((w.id.clone(), wd.id))
            }
            None => None,
        };
        if let Some((_, wd)) = &wd {
            self.remember(&d.id, slot, release, Some(wd));
        }
        let h = self.handle(
            &service.id,
            &d.id,
            slot,
            release,
            wd.as_ref().map(|(s, d)| (s.as_str(), d.as_str())),
        );
        self.launched
            .lock()
            .expect("launched")
            .insert(op.key.clone(), h.clone());
        Ok(h)
    }

    async fn wait_ready(
        &self,
        op: &Op<'_>,
        slot: Slot,
        release: &ReleaseSpec,
        handle: &Handle,
    ) -> Result<SlotStatus, ProviderError> {
        let service = self.service().await?;
        let id = handle["deploy"].as_str().ok_or_else(|| {
            ProviderError::failed(
                "follow a Render deploy",
                "the recorded handle names no deploy",
            )
        })?;
        if self.known(id).is_none() {
            self.remember(id, slot, release, handle["worker"]["deploy"].as_str());
        }
        self.follow(op, &service, id).await?;
        if let (Some(w), Some(wd)) = (self.worker().await?, handle["worker"]["deploy"].as_str()) {
            self.follow(op, &w, wd).await?;
        }
        let n = service.instances();
        let url = self
            .s
            .url
            .clone()
            .or_else(|| service.url().map(str::to_string))
            .unwrap_or_default();
        Ok(SlotStatus {
            slot,
            release_id: release.release_id.clone(),
            version: release.version.clone(),
            image: release.image.clone(),
            url,
            headers: BTreeMap::new(),
            healthy: true,
            instances: Counts {
                desired: n,
                started: n,
                healthy: n,
            },
            regions: Vec::new(),
            weight: 100,
        })
    }

    async fn set_traffic(
        &self,
        op: &Op<'_>,
        weights: &[(Slot, u8)],
    ) -> Result<Vec<(Slot, u8)>, ProviderError> {
        if let Some((s, w)) = weights.iter().find(|(_, w)| !matches!(w, 0 | 100)) {
            return Err(ProviderError::failed(
                format!("send {w}% to {s}"),
                "Render cannot split traffic between deploys",
            ));
        }
        let Some((target, _)) = weights.iter().find(|(_, w)| *w == 100).copied() else {
            // Nothing asked to serve: `remove` takes the live deploy down.
            return Ok(weights.to_vec());
        };
        let service = self.service().await?;
        let recent = self.deploys(&service.id, RECENT).await?;
        let live = recent.iter().find(|d| d.status == "live");
        if live.and_then(|d| self.known(&d.id)).map(|k| k.slot) == Some(target) {
            return Ok(weights.to_vec());
        }
        // The colour's newest deploy that went live before: Render's rollback to it.
        let Some((to, known)) = recent
            .iter()
            .filter(|d| matches!(d.status.as_str(), "deactivated" | "live"))
            .find_map(|d| {
                self.known(&d.id)
                    .filter(|k| k.slot == target)
                    .map(|k| (d.clone(), k))
            })
        else {
            return Err(ProviderError::failed(
                format!("send all traffic to {target}"),
                format!(
                    "service {} has no earlier deploy of {target} to roll back to",
                    service.name
                ),
            ));
        };
        let secrets = self.secrets.lock().expect("secrets").get(&to.id).cloned();
        let d = self
            .roll_back_to(op, &service, &to.id, &known, secrets.clone())
            .await?;
        let spec = ReleaseSpec {
            release_id: known.release_id.clone(),
            version: known.version.clone(),
            image: to.image().to_string(),
            env: known.env.clone(),
            secrets: Default::default(),
        };
        // Recorded at once, so a later command knows the deploy as copilot's.
        let record = |worker: Option<(&str, &str)>| {
            let mut made = self.made.lock().expect("made");
            made.clear();
            made.push(self.handle(&service.id, &d.id, target, &spec, worker));
        };
        record(None);
        let mut now = known.clone();
        now.worker = None;
        self.known
            .lock()
            .expect("known")
            .insert(d.id.clone(), now.clone());
        if let Some(s) = &secrets {
            self.secrets
                .lock()
                .expect("secrets")
                .insert(d.id.clone(), s.clone());
        }
        self.follow(op, &service, &d.id).await?;
        if let Some((w, wd)) = self.roll_back_worker(op, &known, secrets).await? {
            record(Some((&w.id, &wd)));
            now.worker = Some(wd.clone());
            self.known.lock().expect("known").insert(d.id.clone(), now);
            self.follow(op, &w, &wd).await?;
        }
        Ok(weights.to_vec())
    }

    async fn restore(
        &self,
        op: &Op<'_>,
        slot: Slot,
        release: &ReleaseSpec,
        recorded: Option<&Handle>,
    ) -> Result<Option<Handle>, ProviderError> {
        let Some(to) = recorded.and_then(|h| h["deploy"].as_str()) else {
            return Ok(None);
        };
        let service = self.service().await?;
        let (env, _) = self.wanted_env(release);
        let known = Known {
            slot,
            release_id: release.release_id.clone(),
            version: release.version.clone(),
            env: release.env.clone(),
            worker: recorded
                .and_then(|h| h["worker"]["deploy"].as_str())
                .map(str::to_string),
        };
        let secrets: BTreeMap<String, String> = env
            .into_iter()
            .filter(|(k, _)| matches!(release.secrets.get(k), Some(Secret::Value(_))))
            .collect();
        let d = match self
            .roll_back_to(op, &service, to, &known, Some(secrets.clone()))
            .await
        {
            Ok(d) => d,
            // The deploy is too old for Render to keep: deploy the image anew.
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let worker = self.roll_back_worker(op, &known, Some(secrets)).await?;
        let wd = worker.as_ref().map(|(w, wd)| (w.id.as_str(), wd.as_str()));
        self.remember(&d.id, slot, release, wd.map(|(_, d)| d));
        Ok(Some(self.handle(&service.id, &d.id, slot, release, wd)))
    }

    async fn remove(&self, op: &Op<'_>, slot: Slot) -> Result<(), ProviderError> {
        let service = self.service().await?;
        let recent = self.deploys(&service.id, RECENT).await?;
        for d in recent.iter().filter(|d| d.in_progress()) {
            if self.known(&d.id).is_some_and(|k| k.slot == slot) {
                op.progress.line(&format!(
                    "render: cancelling deploy {} of {}",
                    d.id, service.name
                ));
                self.cancel(&service, &d.id).await;
            }
        }
        let live_here = recent
            .iter()
            .find(|d| d.status == "live")
            .and_then(|d| self.known(&d.id))
            .is_some_and(|k| k.slot == slot);
        // A colour that is not live runs nothing on Render: only the live
        // deploy serves. Taking the live one out is suspending the service.
        if live_here && !service.suspended() {
            op.progress
                .line(&format!("render: suspending {}", service.name));
            self.service_action(&service, "suspend").await?;
        }
        Ok(())
    }

    async fn down(&self) -> Result<(), ProviderError> {
        if self.s.preview_of.is_some() {
            return self.delete_preview().await;
        }
        let mut services = vec![self.service().await?];
        services.extend(self.worker().await?);
        for s in services {
            for d in self.deploys(&s.id, RECENT).await? {
                if d.in_progress() {
                    self.cancel(&s, &d.id).await;
                }
            }
            if !s.suspended() {
                self.service_action(&s, "suspend").await?;
            }
        }
        Ok(())
    }
}
