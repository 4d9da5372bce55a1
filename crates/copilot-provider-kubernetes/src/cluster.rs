//! The Kubernetes API client: Deployments per colour, the Service's
//! selector, and waiting for rollouts as kubectl does.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use copilot_core::http::RetryPolicy;
use copilot_core::model::{ProviderKind, SecretStore};
use copilot_core::provider::{
    ArenaStatus, Counts, Drift, ErrorKind, Handle, Op, Provider, ProviderError, ReleaseSpec,
    Secret, Slot, SlotStatus,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Namespace, Pod, Service};
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::config::KubeConfigOptions;
use kube::{Client, Config};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::KubernetesSettings;
use crate::manifest::*;

/// The field manager copilot writes the colours' Deployments, their
/// Secrets and Services with.
pub const MANAGER: &str = "copilot";
/// The field manager of the replica counts, apart: scaling a colour must
/// not give up the fields the main apply owns.
pub const SCALER: &str = "copilot-scale";

/// How often a wait reads the cluster.
const POLL: Duration = Duration::from_millis(500);

/// Waiting reasons of a container that will not get better by waiting.
const STUCK: &[&str] = &[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

pub struct KubernetesProvider {
    m: Manifests,
    arena: String,
    s: KubernetesSettings,
    instances: u32,
    policy: RetryPolicy,
    /// `--force-conflicts`: take fields over from other managers.
    force: bool,
    client: tokio::sync::OnceCell<Client>,
}

/// `a=b,c=d`, for a list's label selector.
fn selector_text(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether every label of `selector` is on `labels` (an empty selector
/// selects nothing, as a Service's does).
fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// What a kube error means for copilot's next move, and what it said.
fn classify(e: &kube::Error) -> (ErrorKind, String) {
    match e {
        kube::Error::Api(s) => {
            let kind = match s.code {
                429 => ErrorKind::Throttled {
                    retry_after_ms: s
                        .details
                        .as_ref()
                        .map(|d| u64::from(d.retry_after_seconds) * 1000)
                        .filter(|ms| *ms > 0),
                },
                401 | 403 => ErrorKind::Unauthorised,
                404 => ErrorKind::NotFound,
                // A conflict of field managers is someone else's change:
                // reported, never retried or forced. Any other 409 is the
                // object changing meanwhile, which a new attempt resolves.
                409 if field_conflict(s) => ErrorKind::Conflict,
                409 => ErrorKind::Retryable,
                500..=599 => ErrorKind::Retryable,
                _ => ErrorKind::Failed,
            };
            let msg = if s.message.is_empty() {
                format!("answered {} {}", s.code, s.reason)
            } else {
                format!("answered {}: {}", s.code, s.message)
            };
            (kind, msg)
        }
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            (ErrorKind::Retryable, copilot_core::http::error_chain(e))
        }
        kube::Error::Auth(_) => (ErrorKind::Unauthorised, copilot_core::http::error_chain(e)),
        _ => (ErrorKind::Failed, copilot_core::http::error_chain(e)),
    }
}

fn field_conflict(s: &kube::core::Status) -> bool {
    s.details
        .as_ref()
        .is_some_and(|d| d.causes.iter().any(|c| c.reason == "FieldManagerConflict"))
}

/// What a colour's Deployment says of itself.
struct Colour {
    slot: Slot,
    d: Deployment,
}

impl Colour {
    fn annotation(&self, key: &str) -> Option<&str> {
        self.d
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
    }
    fn desired(&self) -> u32 {
        desired_of(&self.d)
    }
    fn ready(&self) -> u32 {
        ready_of(&self.d)
    }
    fn started(&self) -> u32 {
        started_of(&self.d)
    }
    fn pod_labels(&self) -> BTreeMap<String, String> {
        pod_labels(&self.d)
    }
    fn image(&self) -> String {
        image_of(&self.d)
    }
}

/// The replicas a Deployment asks for (1 when unset, as the API defaults).
fn desired_of(d: &Deployment) -> u32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0) as u32
}

fn ready_of(d: &Deployment) -> u32 {
    d.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
        .max(0) as u32
}

fn started_of(d: &Deployment) -> u32 {
    d.status
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(0)
        .max(0) as u32
}

/// What a Service selects (nothing when there is none).
fn selector_of(s: Option<Service>) -> BTreeMap<String, String> {
    s.and_then(|s| s.spec)
        .and_then(|s| s.selector)
        .unwrap_or_default()
}

fn pod_labels(d: &Deployment) -> BTreeMap<String, String> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

fn image_of(d: &Deployment) -> String {
    d.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.first())
        .and_then(|c| c.image.clone())
        .unwrap_or_default()
}

fn name_of(d: &Deployment) -> String {
    d.metadata.name.clone().unwrap_or_default()
}

/// Where a rollout stands, as `kubectl rollout status` reads it.
#[derive(Debug, PartialEq, Eq)]
pub enum Rollout {
    Done,
    Waiting(String),
    /// The `Progressing` condition says `ProgressDeadlineExceeded`.
    DeadlineExceeded(String),
}

/// kubectl's `DeploymentStatusViewer`, word for word in its conditions.
pub fn rollout_status(d: &Deployment) -> Rollout {
    let name = name_of(d);
    let generation = d.metadata.generation.unwrap_or(0);
    let Some(status) = &d.status else {
        return Rollout::Waiting(format!(
            "waiting for deployment {name:?} spec update to be observed"
        ));
    };
    if generation > status.observed_generation.unwrap_or(0) {
        return Rollout::Waiting(format!(
            "waiting for deployment {name:?} spec update to be observed"
        ));
    }
    if let Some(c) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing")
        && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
    {
        return Rollout::DeadlineExceeded(format!(
            "deployment {name:?} exceeded its progress deadline{}",
            c.message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ));
    }
    let want = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let updated = status.updated_replicas.unwrap_or(0);
    let replicas = status.replicas.unwrap_or(0);
    let available = status.available_replicas.unwrap_or(0);
    if updated < want {
        return Rollout::Waiting(format!(
            "{updated} out of {want} new replicas have been updated"
        ));
    }
    if replicas > updated {
        return Rollout::Waiting(format!(
            "{} old replicas are pending termination",
            replicas - updated
        ));
    }
    if available < updated {
        return Rollout::Waiting(format!(
            "{available} of {updated} updated replicas are available"
        ));
    }
    Rollout::Done
}

impl KubernetesProvider {
    pub fn new(arena: &str, settings: &KubernetesSettings, instances: u32) -> Self {
        KubernetesProvider {
            m: Manifests {
                arena: arena.to_string(),
                s: settings.clone(),
                instances: instances.max(1),
            },
            arena: arena.to_string(),
            s: settings.clone(),
            instances: instances.max(1),
            policy: RetryPolicy::from_env(),
            force: false,
            client: tokio::sync::OnceCell::new(),
        }
    }

    /// Apply with `force`: fields other managers changed since copilot
    /// wrote them become copilot's again.
    pub fn force_conflicts(&mut self) {
        self.force = true;
    }

    /// The client, from the arena's context in the kubeconfig (`KUBECONFIG`
    /// or `~/.kube/config`), else the kubeconfig's current context, else the
    /// pod's service account when copilot runs in the cluster. Exec
    /// credential plugins run as kubectl runs them.
    async fn client(&self) -> Result<&Client, ProviderError> {
        self.client
            .get_or_try_init(|| async {
                let action = "read the cluster's configuration";
                let mut config = match &self.s.context {
                    Some(ctx) => Config::from_kubeconfig(&KubeConfigOptions {
                        context: Some(ctx.clone()),
                        ..KubeConfigOptions::default()
                    })
                    .await
                    .map_err(|e| {
                        ProviderError::unavailable(
                            action,
                            format!(
                                "context {ctx}: {}",
                                copilot_core::http::error_chain(&e)
                            ),
                        )
                        .with_hint("`kubectl config get-contexts` lists the contexts of KUBECONFIG (or ~/.kube/config)")
                    })?,
                    None => Config::infer().await.map_err(|e| {
                        ProviderError::unavailable(action, copilot_core::http::error_chain(&e))
                            .with_hint("set KUBECONFIG, or name the arena's `context`")
                    })?,
                };
                config.default_namespace = self.s.namespace.clone();
                config.read_timeout = Some(self.policy.request_timeout);
                config.write_timeout = Some(self.policy.request_timeout);
                config.connect_timeout = Some(self.policy.request_timeout.min(Duration::from_secs(10)));
                // copilot retries as it does on every platform: within
                // bounds, following what the answer means.
                config.default_retry = false;
                Client::try_from(config).map_err(|e| {
                    ProviderError::unavailable(action, copilot_core::http::error_chain(&e))
                })
            })
            .await
    }

    async fn api<K>(&self) -> Result<Api<K>, ProviderError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Ok(Api::namespaced(
            self.client().await?.clone(),
            &self.s.namespace,
        ))
    }

    /// One call, retried within the policy's bounds when the answer says
    /// it may work later. Every call copilot makes sets a state (an apply,
    /// a merge patch) or reads, so sending it again is safe.
    async fn call<T, F, Fut>(&self, action: &str, f: F) -> Result<T, ProviderError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, kube::Error>>,
    {
        let deadline = Instant::now() + self.policy.total;
        let mut delay = self.policy.base_delay;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let e = match f().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let (kind, message) = classify(&e);
            let wait = match kind {
                ErrorKind::Throttled { retry_after_ms } => Some(
                    retry_after_ms
                        .map_or(delay, Duration::from_millis)
                        .max(delay),
                ),
                ErrorKind::Retryable => Some(delay),
                _ => None,
            };
            let give_up = wait
                .is_none_or(|w| attempt >= self.policy.attempts || Instant::now() + w > deadline);
            if give_up {
                let mut err = ProviderError::new(kind, action, message);
                if attempt > 1 {
                    err.message = format!("{} (after {attempt} attempts)", err.message);
                }
                if kind == ErrorKind::Conflict {
                    err = err.with_hint(
                        "someone changed these fields since copilot wrote them (`kubectl get -o yaml --show-managed-fields` names who); put them back, or run again with --force-conflicts to take them over",
                    );
                }
                return Err(err);
            }
            let wait = wait.unwrap_or(delay);
            tracing::info!("{action}: {message}; again in {} ms", wait.as_millis());
            tokio::time::sleep(wait).await;
            delay = (delay * 2).min(self.policy.max_delay);
        }
    }

    /// Server-side apply of `body` under `manager`.
    async fn apply<K>(&self, manager: &str, body: &Value, what: &str) -> Result<K, ProviderError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        let api = self.api::<K>().await?;
        let name = body["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut params = PatchParams::apply(manager);
        if self.force {
            params = params.force();
        }
        self.call(what, || {
            let patch = Patch::Apply(body);
            let (api, name, params) = (&api, &name, &params);
            async move { api.patch(name, params, &patch).await }
        })
        .await
    }

    /// The arena's own namespace, applied (created the first time) with
    /// copilot's labels.
    async fn ensure_namespace(&self) -> Result<(), ProviderError> {
        let api: Api<Namespace> = Api::all(self.client().await?.clone());
        let labels: BTreeMap<&str, String> = [
            ("app.kubernetes.io/managed-by", "copilot".to_string()),
            (ARENA, label_value(&self.arena)),
        ]
        .into();
        let body = json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": { "name": self.s.namespace, "labels": labels },
        });
        let mut params = PatchParams::apply("copilot");
        if self.force {
            params = params.force();
        }
        let what = format!("create namespace {}", self.s.namespace);
        self.call(&what, || {
            let patch = Patch::Apply(&body);
            let (api, params) = (&api, &params);
            async move { api.patch(&self.s.namespace, params, &patch).await }
        })
        .await?;
        Ok(())
    }

    /// Delete the arena's own namespace and everything in it, only when
    /// copilot made it for this arena (its labels say so).
    async fn delete_namespace(&self) -> Result<(), ProviderError> {
        let api: Api<Namespace> = Api::all(self.client().await?.clone());
        let name = self.s.namespace.clone();
        let found = self
            .call(&format!("read namespace {name}"), || api.get_opt(&name))
            .await?;
        let Some(ns) = found else {
            return Ok(());
        };
        let labels = ns.metadata.labels.unwrap_or_default();
        let ours = labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str)
            == Some("copilot")
            && labels.get(ARENA).map(String::as_str) == Some(label_value(&self.arena).as_str());
        if !ours {
            return Err(ProviderError::failed(
                format!("delete namespace {name}"),
                "copilot did not create it for this arena (its labels do not say so)",
            )
            .with_hint("delete it yourself if it should go"));
        }
        let params = kube::api::DeleteParams::background();
        match self
            .call(&format!("delete namespace {name}"), || {
                api.delete(&name, &params)
            })
            .await
        {
            // Gone already (an answer lost after the deletion): done.
            Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
            other => other.map(|_| ()),
        }
    }

    async fn deployments(&self) -> Result<Vec<Deployment>, ProviderError> {
        let api = self.api::<Deployment>().await?;
        let list = self
            .call(
                &format!("list the Deployments of namespace {}", self.s.namespace),
                || {
                    let lp = ListParams::default();
                    let api = &api;
                    async move { api.list(&lp).await }
                },
            )
            .await?;
        Ok(list.items)
    }

    async fn deployment(&self, slot: Slot) -> Result<Option<Deployment>, ProviderError> {
        let api = self.api::<Deployment>().await?;
        let name = self.m.deployment_name(slot);
        self.call(&format!("read Deployment {name}"), || api.get_opt(&name))
            .await
    }

    async fn service(&self) -> Result<Option<Service>, ProviderError> {
        let api = self.api::<Service>().await?;
        let name = self.s.service_name().to_string();
        self.call(&format!("read Service {name}"), || api.get_opt(&name))
            .await
    }

    /// Copilot's colours, and the Deployments of the app it did not create.
    async fn colours(&self) -> Result<(Vec<Colour>, Vec<Deployment>), ProviderError> {
        let mut colours = Vec::new();
        let mut foreign = Vec::new();
        for d in self.deployments().await? {
            let name = name_of(&d);
            let ours = d
                .metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.get(MANAGED_BY).map(String::as_str) == Some("copilot"));
            let slot = [Slot::Blue, Slot::Green]
                .into_iter()
                .find(|s| name == self.m.deployment_name(*s));
            match slot {
                Some(slot) if ours => colours.push(Colour { slot, d }),
                _ if name == self.s.deployment
                    || pod_labels(&d).get(APP) == Some(&self.s.deployment) =>
                {
                    foreign.push(d)
                }
                _ => {}
            }
        }
        Ok((colours, foreign))
    }

    /// Set `slot`'s replica count, under the scaler's field manager.
    async fn scale(&self, slot: Slot, replicas: u32) -> Result<(), ProviderError> {
        let body = self.m.scale(slot, replicas);
        self.apply::<Deployment>(
            SCALER,
            &body,
            &format!("scale {} to {replicas}", self.m.deployment_name(slot)),
        )
        .await
        .map(|_| ())
    }

    /// Point the Service at `slot` (or, with `None`, at the app across
    /// colours).
    async fn select(&self, slot: Option<Slot>) -> Result<(), ProviderError> {
        let what = match slot {
            Some(s) => format!("point Service {{}} at {s}"),
            None => "point Service {} at both colours".to_string(),
        };
        self.select_labels(self.m.selector(slot), &what).await
    }

    /// Set the Service's selector to `wanted` (`what` names the change, `{}`
    /// the Service). A merge patch: the selector becomes copilot's whatever
    /// selected before (the Service of an app copilot adopts).
    async fn select_labels(
        &self,
        wanted: BTreeMap<String, String>,
        what: &str,
    ) -> Result<(), ProviderError> {
        let name = self.s.service_name().to_string();
        let what = what.replace("{}", &name);
        let current = self.service().await?;
        let Some(current) = current else {
            let mut body = self.m.service(&name, None);
            body["spec"]["selector"] = json!(wanted);
            self.apply::<Service>(MANAGER, &body, &format!("create Service {name}"))
                .await?;
            return Ok(());
        };
        let mut selector: serde_json::Map<String, Value> = current
            .spec
            .and_then(|s| s.selector)
            .unwrap_or_default()
            .into_keys()
            .map(|k| (k, Value::Null))
            .collect();
        for (k, v) in wanted {
            selector.insert(k, Value::String(v));
        }
        self.merge::<Service>(&name, &json!({ "spec": { "selector": selector } }), &what)
            .await
    }

    /// A JSON merge patch of object `name` under copilot's field manager
    /// (an update: the fields it sets become copilot's).
    async fn merge<K>(&self, name: &str, patch: &Value, what: &str) -> Result<(), ProviderError>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        let api = self.api::<K>().await?;
        let params = PatchParams {
            field_manager: Some(MANAGER.into()),
            ..PatchParams::default()
        };
        self.call(what, || {
            let patch = Patch::Merge(patch);
            let (api, params) = (&api, &params);
            async move { api.patch(name, params, &patch).await }
        })
        .await?;
        Ok(())
    }

    /// The pods of `slot`.
    async fn pods(&self, slot: Slot) -> Result<Vec<Pod>, ProviderError> {
        let api = self.api::<Pod>().await?;
        let lp = ListParams::default().labels(&selector_text(&self.m.selector(Some(slot))));
        Ok(self
            .call(&format!("list the pods of {slot}"), || api.list(&lp))
            .await?
            .items)
    }

    /// What the pods of `slot` say of themselves, with their last events:
    /// the evidence of a rollout that fails.
    async fn pod_report(&self, slot: Slot) -> String {
        let Ok(pods) = self.pods(slot).await else {
            return String::new();
        };
        let events = match self.api::<Event>().await {
            Ok(api) => self
                .call("list the namespace's events", || {
                    let lp = ListParams::default();
                    let api = &api;
                    async move { api.list(&lp).await }
                })
                .await
                .map(|l| l.items)
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let mut out = Vec::new();
        for p in pods.iter().take(3) {
            let name = p.metadata.name.clone().unwrap_or_default();
            let states: Vec<String> = p
                .status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
                .map(|c| {
                    let state = c.state.as_ref();
                    let now = if let Some(w) = state.and_then(|s| s.waiting.as_ref()) {
                        format!(
                            "waiting: {}{}",
                            w.reason.as_deref().unwrap_or("?"),
                            w.message
                                .as_deref()
                                .map(|m| format!(" ({m})"))
                                .unwrap_or_default()
                        )
                    } else if let Some(t) = state.and_then(|s| s.terminated.as_ref()) {
                        format!(
                            "terminated: {} (exit {})",
                            t.reason.as_deref().unwrap_or("?"),
                            t.exit_code
                        )
                    } else if c.ready {
                        "ready".to_string()
                    } else {
                        "running, not ready".to_string()
                    };
                    let last = c
                        .last_state
                        .as_ref()
                        .and_then(|s| s.terminated.as_ref())
                        .map(|t| {
                            format!(
                                "; last terminated: {} (exit {})",
                                t.reason.as_deref().unwrap_or("?"),
                                t.exit_code
                            )
                        })
                        .unwrap_or_default();
                    format!("{}: {now}, {} restarts{last}", c.name, c.restart_count)
                })
                .collect();
            let mut line = format!("pod {name}: {}", states.join("; "));
            let mut mine: Vec<&Event> = events
                .iter()
                .filter(|e| e.involved_object.name.as_deref() == Some(name.as_str()))
                .collect();
            mine.sort_by_key(|e| e.last_timestamp.as_ref().map(|t| t.0));
            for e in mine.iter().rev().take(3).rev() {
                line.push_str(&format!(
                    "\n    {} {}: {}",
                    e.type_.as_deref().unwrap_or(""),
                    e.reason.as_deref().unwrap_or(""),
                    e.message.as_deref().unwrap_or("")
                ));
            }
            out.push(line);
        }
        out.join("\n  ")
    }

    /// A container of `slot` that will not start however long copilot
    /// waits (crash-looping, no image, no configuration).
    async fn stuck(
        &self,
        slot: Slot,
        release: &ReleaseSpec,
    ) -> Result<Option<String>, ProviderError> {
        let want = label_value(&release.version);
        for p in self.pods(slot).await? {
            let of_release = p
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(RELEASE))
                .is_some_and(|r| *r == want);
            // A pod of another template (changed by hand) is not this
            // release's, whatever its labels say.
            let image = p
                .spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.as_deref());
            if !of_release || image != Some(release.image.as_str()) {
                continue;
            }
            for c in p
                .status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
            {
                if let Some(reason) = c
                    .state
                    .as_ref()
                    .and_then(|s| s.waiting.as_ref())
                    .and_then(|w| w.reason.as_deref())
                    .filter(|r| STUCK.contains(r))
                {
                    return Ok(Some(format!(
                        "pod {} is in {reason}",
                        p.metadata.name.as_deref().unwrap_or("?")
                    )));
                }
            }
        }
        Ok(None)
    }

    /// Wait for `slot`'s rollout as `kubectl rollout status` does, failing
    /// at once on a container that will not start.
    async fn wait_rollout(
        &self,
        op: &Op<'_>,
        slot: Slot,
        release: Option<&ReleaseSpec>,
    ) -> Result<Deployment, ProviderError> {
        let name = self.m.deployment_name(slot);
        let action = format!("wait for Deployment {name}");
        // The controller's own deadline is the same length: it speaks first.
        let deadline = Instant::now() + op.timeout + Duration::from_secs(10);
        let mut said = String::new();
        loop {
            let Some(d) = self.deployment(slot).await? else {
                return Err(ProviderError::new(
                    ErrorKind::Failed,
                    action,
                    "it was deleted while copilot waited",
                ));
            };
            let fail = |kind: ErrorKind, why: String, report: String| {
                let mut e = ProviderError::new(kind, action.clone(), why);
                if !report.is_empty() {
                    e.message = format!("{}\n  {report}", e.message);
                }
                e.with_hint(format!(
                    "`kubectl -n {} describe deployment {name}` and `kubectl -n {} get events` say more",
                    self.s.namespace, self.s.namespace
                ))
            };
            match rollout_status(&d) {
                Rollout::Done => return Ok(d),
                Rollout::DeadlineExceeded(why) => {
                    return Err(fail(
                        ErrorKind::ReleaseFailed,
                        why,
                        self.pod_report(slot).await,
                    ));
                }
                Rollout::Waiting(why) => {
                    if why != said {
                        op.progress.line(&format!("{name}: {why}"));
                        said = why;
                    }
                }
            }
            if let Some(r) = release
                && let Some(why) = self.stuck(slot, r).await?
            {
                return Err(fail(
                    ErrorKind::ReleaseFailed,
                    why,
                    self.pod_report(slot).await,
                ));
            }
            if Instant::now() >= deadline {
                return Err(fail(
                    ErrorKind::TimedOut,
                    format!("not rolled out within {}s: {said}", op.timeout.as_secs()),
                    self.pod_report(slot).await,
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn slot_status(&self, c: &Colour, weight: u8) -> SlotStatus {
        let url = self
            .s
            .colour_urls
            .get(c.slot.as_str())
            .cloned()
            .unwrap_or_else(|| {
                format!(
                    "http://{}.{}.svc.cluster.local",
                    self.m.colour_service(c.slot),
                    self.s.namespace
                )
            });
        let desired = c.desired();
        let ready = c.ready();
        SlotStatus {
            slot: c.slot,
            release_id: c.annotation(RELEASE_ID).unwrap_or_default().to_string(),
            version: c.annotation(VERSION).unwrap_or_default().to_string(),
            image: c.image(),
            url,
            headers: BTreeMap::new(),
            healthy: desired > 0 && ready >= desired,
            instances: Counts {
                desired,
                started: c.started(),
                healthy: ready,
            },
            regions: Vec::new(),
            weight,
        }
    }

    /// The arena's own address.
    fn arena_url(&self) -> String {
        self.s.url.clone().unwrap_or_else(|| {
            format!(
                "http://{}.{}.svc.cluster.local",
                self.s.service_name(),
                self.s.namespace
            )
        })
    }

    /// Bring the Deployment of an app copilot did not create into `slot`:
    /// its pod template, with copilot's labels, applied as that colour.
    async fn adopt(&self, op: &Op<'_>, slot: Slot, d: &Deployment) -> Result<(), ProviderError> {
        let mut template = serde_json::to_value(
            d.spec
                .as_ref()
                .map(|s| s.template.clone())
                .unwrap_or_default(),
        )
        .unwrap_or_default();
        let labels = &mut template["metadata"]["labels"];
        if !labels.is_object() {
            *labels = json!({});
        }
        labels[APP] = json!(self.s.deployment);
        labels[COLOUR] = json!(slot.as_str());
        let image = image_of(d);
        let body = json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": self.m.deployment_name(slot),
                "namespace": self.s.namespace,
                "labels": { APP: self.s.deployment, COLOUR: slot.as_str(), ARENA: label_value(&self.arena), MANAGED_BY: "copilot" },
                "annotations": { RELEASE_ID: "", VERSION: "", IMAGE: image, LAUNCH: op.key },
            },
            "spec": {
                "selector": { "matchLabels": self.m.selector(Some(slot)) },
                "progressDeadlineSeconds": op.timeout.as_secs().max(1),
                "template": template,
            },
        });
        let name = name_of(d);
        op.progress.line(&format!(
            "{}: taking over Deployment {name} ({image}) as {}",
            self.s.namespace,
            self.m.deployment_name(slot)
        ));
        self.apply::<Deployment>(MANAGER, &body, &format!("take over Deployment {name}"))
            .await?;
        self.scale(slot, self.instances).await?;
        self.wait_rollout(op, slot, None).await?;
        Ok(())
    }

    /// Scale what copilot adopted to nothing once a colour of its own serves
    /// in its place (the Deployment stays: copilot did not create it).
    async fn retire_foreign(&self, foreign: &[Deployment]) -> Result<(), ProviderError> {
        for d in foreign {
            if d.spec.as_ref().and_then(|s| s.replicas) == Some(0) {
                continue;
            }
            let name = name_of(d);
            let patch = json!({
                "metadata": { "annotations": { "copilot/retired-by": self.arena } },
                "spec": { "replicas": 0 },
            });
            self.merge::<Deployment>(
                &name,
                &patch,
                &format!("scale Deployment {name} (taken over) to 0"),
            )
            .await?;
        }
        Ok(())
    }

    /// The slot an app copilot did not create counts as: the colour copilot
    /// does not hold yet.
    fn foreign_slot(colours: &[Colour]) -> Option<Slot> {
        [Slot::Blue, Slot::Green]
            .into_iter()
            .find(|s| !colours.iter().any(|c| c.slot == *s))
    }
}

impl Provider for KubernetesProvider {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Kubernetes
    }

    fn url(&self) -> String {
        self.arena_url()
    }

    fn prepare(&self, release: &mut ReleaseSpec) -> Result<(), ProviderError> {
        for (name, s) in &release.secrets {
            if let Secret::Platform(r) = s
                && r.store != SecretStore::Kubernetes
            {
                return Err(ProviderError::failed(
                    format!("attach secret {name}"),
                    format!("{r} is not a Kubernetes Secret"),
                )
                .with_hint("on Kubernetes, refer to `k8s:SECRET/KEY`, or to a value copilot resolves (`env:`, `file:`)"));
            }
        }
        Ok(())
    }

    async fn status(&self) -> Result<ArenaStatus, ProviderError> {
        let (colours, foreign) = self.colours().await?;
        let service = self.service().await?;
        let has_service = service.is_some();
        let selector = selector_of(service);
        let mut drift = Vec::new();
        let ours_both = self.m.selector(None);
        let copilots = selector == ours_both
            || selector == self.m.selector_nowhere()
            || [Slot::Blue, Slot::Green]
                .into_iter()
                .any(|s| selector == self.m.selector(Some(s)));
        // Who the Service sends traffic to: every ready pod it selects.
        let served = |labels: &BTreeMap<String, String>, ready: u32| {
            if selects(&selector, labels) { ready } else { 0 }
        };
        let foreign_serving: u32 = foreign
            .iter()
            .map(|d| served(&pod_labels(d), ready_of(d)))
            .sum();
        let ours_serving: Vec<(Slot, u32)> = colours
            .iter()
            .map(|c| (c.slot, served(&c.pod_labels(), c.ready())))
            .collect();
        let total: u32 = ours_serving.iter().map(|(_, n)| n).sum::<u32>() + foreign_serving;
        let weight_of = |n: u32| ((n * 100).checked_div(total).unwrap_or(0)) as u8;
        let mut slots: Vec<SlotStatus> = colours
            .iter()
            .zip(&ours_serving)
            .map(|(c, (_, n))| self.slot_status(c, weight_of(*n)))
            .collect();
        for c in &colours {
            let name = name_of(&c.d);
            if let Some(img) = c.annotation(IMAGE)
                && !img.is_empty()
                && img != c.image()
            {
                drift.push(Drift {
                    instance: name.clone(),
                    what: format!(
                        "runs {} where copilot deployed {img} (changed outside copilot, e.g. `kubectl set image`)",
                        c.image()
                    ),
                });
            }
            if let Some(n) = c.annotation(REPLICAS).and_then(|n| n.parse::<u32>().ok())
                && n != c.desired()
            {
                drift.push(Drift {
                    instance: name,
                    what: format!(
                        "is scaled to {} where copilot set {n} (changed outside copilot, e.g. `kubectl scale`)",
                        c.desired()
                    ),
                });
            }
        }
        if has_service && !copilots && !colours.is_empty() {
            drift.push(Drift {
                instance: format!("service/{}", self.s.service_name()),
                what: format!(
                    "selects {} where copilot selects a colour of {} (changed outside copilot)",
                    selector_text(&selector),
                    self.s.deployment
                ),
            });
        }
        // An app copilot did not create: while it serves it stands in the
        // colour copilot does not hold, to be adopted; once copilot's own
        // colours serve, it is retired, and one that still serves is drift.
        let spare = Self::foreign_slot(&colours);
        for d in &foreign {
            let ready = ready_of(d);
            let serving = served(&pod_labels(d), ready);
            let desired = desired_of(d);
            match spare {
                Some(slot) if desired > 0 && !slots.iter().any(|s| s.slot == slot) => {
                    slots.push(SlotStatus {
                        slot,
                        release_id: String::new(),
                        version: String::new(),
                        image: image_of(d),
                        url: self.arena_url(),
                        headers: BTreeMap::new(),
                        healthy: ready >= desired,
                        instances: Counts {
                            desired,
                            started: started_of(d),
                            healthy: ready,
                        },
                        regions: Vec::new(),
                        weight: weight_of(serving),
                    });
                }
                _ if serving > 0 => drift.push(Drift {
                    instance: format!("deployment/{}", name_of(d)),
                    what: format!(
                        "Deployment {} ({}) was not created by copilot and serves traffic",
                        name_of(d),
                        image_of(d)
                    ),
                }),
                _ => {}
            }
        }
        slots.sort_by_key(|s| s.slot);
        Ok(ArenaStatus {
            slots,
            url: Some(self.arena_url()),
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
        if self.s.own_namespace {
            self.ensure_namespace().await?;
        }
        let (colours, foreign) = self.colours().await?;
        let selector = selector_of(self.service().await?);
        if let Some(c) = colours.iter().find(|c| c.slot == slot)
            && selects(&selector, &c.pod_labels())
            && c.ready() > 0
            && c.annotation(LAUNCH) != Some(op.key.as_str())
        {
            return Err(ProviderError::failed(
                format!("deploy into {slot}"),
                format!("{slot} still serves traffic"),
            ));
        }
        // The app copilot took over stands in this colour: copilot's
        // own Deployment takes its place, and it is scaled to nothing.
        if Self::foreign_slot(&colours) == Some(slot) {
            let idle: Vec<Deployment> = foreign
                .into_iter()
                .filter(|d| !selects(&selector, &pod_labels(d)) || ready_of(d) == 0)
                .collect();
            self.retire_foreign(&idle).await?;
        }
        if let Some(secret) = self.m.secret(slot, release, |v| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(v)
        }) {
            self.apply::<k8s_openapi::api::core::v1::Secret>(
                MANAGER,
                &secret,
                &format!("apply Secret {}", self.m.secret_name(slot)),
            )
            .await?;
        }
        let body = self
            .m
            .deployment(&op.key, slot, release, op.timeout.as_secs().max(1));
        let name = self.m.deployment_name(slot);
        let d: Deployment = self
            .apply(MANAGER, &body, &format!("apply Deployment {name}"))
            .await?;
        self.scale(slot, self.instances).await?;
        let colour_service = self.m.colour_service(slot);
        self.apply::<Service>(
            MANAGER,
            &self.m.service(&colour_service, Some(slot)),
            &format!("apply Service {colour_service}"),
        )
        .await?;
        op.progress.line(&format!(
            "{}: Deployment {name} at generation {} for {} ({} replicas)",
            self.s.namespace,
            d.metadata.generation.unwrap_or(0),
            release.version,
            self.instances
        ));
        Ok(json!({
            "provider": "kubernetes",
            "namespace": self.s.namespace,
            "deployment": name,
            "generation": d.metadata.generation,
            "slot": slot,
            "release_id": release.release_id,
            "launch": op.key,
        }))
    }

    async fn wait_ready(
        &self,
        op: &Op<'_>,
        slot: Slot,
        release: &ReleaseSpec,
        _handle: &Handle,
    ) -> Result<SlotStatus, ProviderError> {
        match self.wait_rollout(op, slot, Some(release)).await {
            Ok(d) => Ok(self.slot_status(&Colour { slot, d }, 0)),
            Err(e) => {
                // Nothing of a failed start keeps running; the live colour
                // is untouched.
                let _ = self.scale(slot, 0).await;
                Err(e)
            }
        }
    }

    async fn set_traffic(
        &self,
        op: &Op<'_>,
        weights: &[(Slot, u8)],
    ) -> Result<Vec<(Slot, u8)>, ProviderError> {
        let (colours, foreign) = self.colours().await?;
        let spare = Self::foreign_slot(&colours);
        let on: Vec<(Slot, u8)> = weights.iter().copied().filter(|(_, w)| *w > 0).collect();
        if on.is_empty() {
            // Nothing serves (a first release taken down): the Service
            // selects a colour no pod has.
            self.select_labels(self.m.selector_nowhere(), "point Service {} at no colour")
                .await?;
            return Ok(weights.iter().map(|(s, _)| (*s, 0)).collect());
        }
        // Going back to an app copilot took over: its template becomes a
        // colour of copilot's first, and once the selector moved the app's
        // own Deployment is scaled to nothing.
        let mut adopted = false;
        for (slot, _) in &on {
            if Some(*slot) == spare {
                let Some(d) = foreign.first() else {
                    return Err(ProviderError::failed(
                        "set traffic",
                        format!("nothing runs in {slot}"),
                    ));
                };
                self.adopt(op, *slot, d).await?;
                adopted = true;
            }
        }
        let (colours, foreign) = if adopted {
            self.colours().await?
        } else {
            (colours, foreign)
        };
        let find = |s: Slot| colours.iter().find(|c| c.slot == s);
        if let [(slot, _)] = on.as_slice() {
            // All to one colour: it must have ready pods before the selector
            // moves; a standby scaled down is scaled up and waited for.
            let c = find(*slot).ok_or_else(|| {
                ProviderError::failed("set traffic", format!("nothing runs in {slot}"))
            })?;
            if c.desired() < self.instances {
                self.scale(*slot, self.instances).await?;
            }
            if c.ready() == 0 {
                self.wait_rollout(op, *slot, None).await?;
            }
            self.select(Some(*slot)).await?;
            if adopted {
                self.retire_foreign(&foreign).await?;
            }
            return Ok(weights
                .iter()
                .map(|(s, _)| (*s, if s == slot { 100 } else { 0 }))
                .collect());
        }
        // A split: weights become replica counts out of the arena's
        // instances (at least one each), the Service selects both colours.
        let n = self.instances;
        let mut counts: Vec<(Slot, u32)> = Vec::new();
        for (slot, w) in &on {
            let k = ((f64::from(*w) * f64::from(n)) / 100.0).round() as u32;
            counts.push((*slot, k.clamp(1, n)));
        }
        // Up first, then the selector, then down: never fewer pods serving.
        for (slot, k) in &counts {
            let c = find(*slot).ok_or_else(|| {
                ProviderError::failed("set traffic", format!("nothing runs in {slot}"))
            })?;
            if c.desired() < *k {
                self.scale(*slot, *k).await?;
                self.wait_rollout(op, *slot, None).await?;
            }
        }
        self.select(None).await?;
        if adopted {
            self.retire_foreign(&foreign).await?;
        }
        for (slot, k) in &counts {
            if find(*slot).is_some_and(|c| c.desired() > *k) {
                self.scale(*slot, *k).await?;
            }
        }
        let total: u32 = counts.iter().map(|(_, k)| k).sum();
        Ok(weights
            .iter()
            .map(|(s, _)| {
                let k = counts.iter().find(|(c, _)| c == s).map_or(0, |(_, k)| *k);
                (*s, ((k * 100).checked_div(total).unwrap_or(0)) as u8)
            })
            .collect())
    }

    async fn restore(
        &self,
        op: &Op<'_>,
        slot: Slot,
        release: &ReleaseSpec,
        _recorded: Option<&Handle>,
    ) -> Result<Option<Handle>, ProviderError> {
        // The colour still holds the release, scaled down: scale it back.
        if let Some(d) = self.deployment(slot).await? {
            let c = Colour { slot, d };
            if c.annotation(RELEASE_ID) == Some(release.release_id.as_str())
                && c.image() == release.image
            {
                op.progress.line(&format!(
                    "{}: scaling {} ({}) back to {}",
                    self.s.namespace,
                    self.m.deployment_name(slot),
                    release.version,
                    self.instances
                ));
                self.scale(slot, self.instances).await?;
                return Ok(Some(json!({
                    "provider": "kubernetes",
                    "namespace": self.s.namespace,
                    "deployment": self.m.deployment_name(slot),
                    "slot": slot,
                    "release_id": release.release_id,
                    "restored": true,
                })));
            }
        }
        Ok(None)
    }

    async fn remove(&self, _op: &Op<'_>, slot: Slot) -> Result<(), ProviderError> {
        let Some(d) = self.deployment(slot).await? else {
            return Ok(());
        };
        let selector = selector_of(self.service().await?);
        let c = Colour { slot, d };
        if selects(&selector, &c.pod_labels()) && c.ready() > 0 {
            // The only colour selected: nothing else could take its traffic.
            let others = self.colours().await?.0;
            if !others
                .iter()
                .any(|o| o.slot != slot && selects(&selector, &o.pod_labels()) && o.ready() > 0)
            {
                return Err(ProviderError::failed(
                    format!("remove {slot}"),
                    "it still receives traffic; shift it away first",
                ));
            }
        }
        self.scale(slot, 0).await
    }

    async fn down(&self) -> Result<(), ProviderError> {
        if self.s.own_namespace {
            return self.delete_namespace().await;
        }
        let (colours, _) = self.colours().await?;
        for c in colours {
            self.scale(c.slot, 0).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_keep_to_what_kubernetes_allows() {
        assert_eq!(label_value("v1.2.3"), "v1.2.3");
        assert_eq!(label_value("2026-12-06 build+7"), "2026-12-06-build-7");
        assert_eq!(label_value("-x-"), "x");
        assert_eq!(label_value(&"a".repeat(80)).len(), 63);
    }

    fn deployment(v: Value) -> Deployment {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn rollout_status_reads_a_deployment_as_kubectl_does() {
        let base = json!({
            "metadata": { "name": "shop-blue", "generation": 2 },
            "spec": { "replicas": 2, "selector": {}, "template": {} },
        });
        let with = |status: Value| {
            let mut v = base.clone();
            v["status"] = status;
            rollout_status(&deployment(v))
        };
        assert!(
            matches!(with(json!({ "observedGeneration": 1 })), Rollout::Waiting(w) if w.contains("spec update"))
        );
        assert_eq!(
            with(json!({ "observedGeneration": 2, "replicas": 2, "updatedReplicas": 1 })),
            Rollout::Waiting("1 out of 2 new replicas have been updated".into())
        );
        assert_eq!(
            with(json!({ "observedGeneration": 2, "replicas": 3, "updatedReplicas": 2 })),
            Rollout::Waiting("1 old replicas are pending termination".into())
        );
        assert_eq!(
            with(
                json!({ "observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 1 })
            ),
            Rollout::Waiting("1 of 2 updated replicas are available".into())
        );
        assert_eq!(
            with(
                json!({ "observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2 })
            ),
            Rollout::Done
        );
        assert!(matches!(
            with(json!({ "observedGeneration": 2, "conditions": [{
                "type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded",
                "message": "ReplicaSet \"shop-blue-5d\" has timed out progressing." }] })),
            Rollout::DeadlineExceeded(m) if m.contains("timed out progressing")
        ));
    }
}
