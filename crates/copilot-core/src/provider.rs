//! Providers: the platforms an arena runs on.
//!
//! Each provider declares what it can do ([`Capabilities`]); `copilot
//! validate` holds arena strategies to these declarations before anything
//! runs. Every provider is driven through one interface, [`Provider`]: put a
//! release into a slot (a colour), say truthfully what runs where, set the
//! traffic split, switch instantly, bring a previous release back by the
//! platform's own rollback where there is one, take a slot out, and stop
//! everything. `status` reports what the platform runs, not what copilot
//! last did: `copilot status` compares it with the ledger, so a rollback the
//! platform did on its own (or a change by hand) shows up as drift.
//!
//! How the platforms map onto it:
//! - **local**: a slot is a `copilot-service` process on loopback; a small
//!   weighted router on the arena's port splits traffic exactly and switches
//!   instantly ([`local`]).
//! - **fly**: a slot is a group of Machines tagged with the colour
//!   (`/v1/apps/{app}/machines` with metadata); the split is the ratio of
//!   uncordoned machines per colour; a switch cordons the old colour's
//!   machines; rollback re-creates machines from the previous image.
//! - **render**: one slot; `deploy` triggers a deploy of the image, Render
//!   swaps once its health check passes; no weighted split; rollback is
//!   `POST /v1/services/{id}/rollback`; status reads the latest deploys, so a
//!   rollback Render did on its own shows up.
//! - **ecs**: a slot is an ECS service (or task set) behind its own target
//!   group; the split is the ELBv2 listener's weighted forward action; a
//!   switch sets weights 0/100; rollback shifts the listener back or updates
//!   the service to the previous task definition.
//! - **kubernetes**: a slot is a Deployment per colour; the Service selector
//!   points at the live colour; canary weights by replica ratio; rollback
//!   flips the selector back or scales the previous ReplicaSet.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;

use serde::{Deserialize, Serialize};

use crate::config::{Diagnostics, SettingsInput};
use crate::model::{ProviderKind, SecretRef};
pub use crate::progress::Progress;

/// A place a release runs in an arena: a colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Slot {
    Blue,
    Green,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::Blue => Slot::Green,
            Slot::Green => Slot::Blue,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::Blue => "blue",
            Slot::Green => "green",
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A secret a release needs: a value copilot resolved (`env:`, `file:`), or a
/// reference into the platform's own store, which the platform attaches.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Value(String),
    Platform(SecretRef),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Value(_) => f.write_str("Value(<redacted>)"),
            Secret::Platform(r) => write!(f, "Platform({r})"),
        }
    }
}

/// What to run: a release of the service with its environment.
#[derive(Clone, Debug)]
pub struct ReleaseSpec {
    pub release_id: String,
    pub version: String,
    pub image: String,
    /// Plain variables.
    pub env: BTreeMap<String, String>,
    /// Secret variables, by name; values are never logged.
    pub secrets: BTreeMap<String, Secret>,
}

/// How many instances a colour should have, has started, and has passing checks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub desired: u32,
    pub started: u32,
    pub healthy: u32,
}

impl Counts {
    pub fn all_healthy(&self) -> bool {
        self.desired > 0 && self.healthy >= self.desired
    }
}

/// A colour's instances in one region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionCounts {
    pub region: String,
    #[serde(flatten)]
    pub counts: Counts,
}

/// What runs in a slot, as the platform reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlotStatus {
    pub slot: Slot,
    pub release_id: String,
    pub version: String,
    /// What the instances run, as the platform says.
    #[serde(default)]
    pub image: String,
    /// Where the slot answers directly (gates against the idle colour),
    /// with `headers` that pin a request to it where the platform routes by
    /// header (Fly's `fly-force-instance-id`).
    pub url: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Every desired instance is started and passes its checks.
    pub healthy: bool,
    #[serde(default)]
    pub instances: Counts,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<RegionCounts>,
    /// Percent of the arena's traffic this slot receives.
    pub weight: u8,
}

/// Something the platform runs that copilot did not put there, or that
/// differs from what copilot put there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    /// The instance (machine id, task, pod).
    pub instance: String,
    pub what: String,
}

/// Everything a provider reports about an arena.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ArenaStatus {
    pub slots: Vec<SlotStatus>,
    /// Where the arena's traffic enters (the router, load balancer, app URL).
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<Drift>,
    /// Whether the platform deploys on its own when the source changes
    /// (Render's autodeploy), where it has such a switch: a push can then
    /// undo a rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autodeploy: Option<bool>,
}

impl ArenaStatus {
    pub fn slot(&self, s: Slot) -> Option<&SlotStatus> {
        self.slots.iter().find(|x| x.slot == s)
    }
    /// The slot carrying most of the traffic.
    pub fn live(&self) -> Option<&SlotStatus> {
        self.slots
            .iter()
            .filter(|s| s.weight > 0)
            .max_by_key(|s| s.weight)
    }
}

/// The platform's own name for an operation it carries out (machine ids and
/// a launch id, a deploy id, a task definition revision, a ReplicaSet
/// revision). The ledger records it before copilot waits, so a command
/// killed while waiting resumes waiting on the same operation.
pub type Handle = serde_json::Value;

/// What the executor decides from, not from message text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum ErrorKind {
    /// A connection error, a timeout of one request or a 5xx: it may work later.
    Retryable,
    /// The platform asked to slow down (and said for how long, when it did).
    Throttled { retry_after_ms: Option<u64> },
    /// The credentials are missing, wrong, or lack a permission.
    Unauthorised,
    /// The app, service or resource does not exist.
    NotFound,
    /// Someone else holds it (a lease, a lock), or it changed meanwhile.
    Conflict,
    /// The platform rolled the release back on its own.
    RolledBack,
    /// A wait ran out: instances never started or never passed their checks.
    TimedOut,
    /// The release itself failed on the platform: its instances exit, or
    /// its release command did not succeed.
    ReleaseFailed,
    /// The platform carried the operation out and it failed (an image that
    /// exits, a release command that fails, a request the platform refuses).
    Failed,
    /// Not usable from here: configuration, credentials or binaries missing.
    Unavailable,
}

/// A provider operation that did not succeed.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{action}: {message}")]
pub struct ProviderError {
    pub kind: ErrorKind,
    /// What copilot was doing (`create machine 3 of 4 in green`).
    pub action: String,
    pub message: String,
    pub hint: Option<String>,
}

impl ProviderError {
    pub fn new(kind: ErrorKind, action: impl Into<String>, message: impl Into<String>) -> Self {
        ProviderError {
            kind,
            action: action.into(),
            message: message.into(),
            hint: None,
        }
    }
    pub fn failed(action: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Failed, action, message)
    }
    pub fn unavailable(action: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, action, message)
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    /// The same error, said of a larger action.
    pub fn during(mut self, action: impl fmt::Display) -> Self {
        self.action = format!("{action}: {}", self.action);
        self
    }
}

impl From<crate::http::ApiError> for ProviderError {
    fn from(e: crate::http::ApiError) -> Self {
        use crate::http::ApiErrorKind as A;
        let kind = match e.kind {
            A::Retryable => ErrorKind::Retryable,
            A::Throttled { retry_after } => ErrorKind::Throttled {
                retry_after_ms: retry_after.map(|d| d.as_millis() as u64),
            },
            A::Unauthorised => ErrorKind::Unauthorised,
            A::NotFound => ErrorKind::NotFound,
            A::Conflict => ErrorKind::Conflict,
            A::Failed => ErrorKind::Failed,
        };
        let request = e.request.clone();
        let mut message = e.to_string();
        if let Some(rest) = message.strip_prefix(&format!("{request} ")) {
            message = rest.to_string();
        }
        ProviderError::new(kind, request, message)
    }
}

/// One provider operation as the executor asks for it.
pub struct Op<'a> {
    /// Derived from the deployment and its step: the same operation asked
    /// again (a retry, a resume) carries the same key, so the platform (or
    /// the provider, by what it tagged) does it once.
    pub key: String,
    pub progress: &'a dyn Progress,
    /// How long waits on the platform may take.
    pub timeout: std::time::Duration,
}

impl Op<'static> {
    /// An operation outside any deployment (tools, tests), said nowhere.
    pub fn by_hand(key: &str) -> Self {
        Op {
            key: key.to_string(),
            progress: &crate::progress::Silent,
            timeout: std::time::Duration::from_secs(60),
        }
    }
}

/// A merchant cohort routed to one slot during a cohort step.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CohortRoute {
    pub name: String,
    pub slot: Slot,
    /// Shop domains, lowercase, matched exactly.
    pub shops: Vec<String>,
}

/// The interface every provider implements. Futures are `Send`, so a
/// rollout can run on any runtime thread; the one [`Platform`] enum puts
/// every provider behind one type.
pub trait Provider: Send + Sync {
    fn kind(&self) -> ProviderKind;
    /// Where the arena's traffic enters.
    fn url(&self) -> String;
    /// Fill in what the platform supplies itself (the local provider's
    /// development webhook secret); refuse secrets it cannot attach.
    fn prepare(&self, _release: &mut ReleaseSpec) -> Result<(), ProviderError> {
        Ok(())
    }
    /// Learn what copilot started before, from the handles the ledger
    /// recorded for the arena (newest first), where the platform itself
    /// cannot carry copilot's tags (a Render deploy): `status` then names
    /// those by colour and release. Asked before `status` by every command.
    fn recall(&self, _handles: &[Handle]) {}
    /// Handles of what the calls since the last ask started besides their
    /// own result (the deploy a Render rollback makes when `set_traffic`
    /// goes back to a colour), for the ledger to record with the step.
    fn made(&self) -> Vec<Handle> {
        Vec::new()
    }
    /// Turn off the platform's own deploys on a source change (Render's
    /// autodeploy), so they cannot undo a rollback.
    fn suspend_autodeploy(&self) -> impl Future<Output = Result<(), ProviderError>> + Send {
        let kind = self.kind();
        async move {
            Err(ProviderError::unavailable(
                "turn autodeploy off",
                format!("the {kind} provider does not deploy on its own"),
            ))
        }
    }
    /// What runs where, the split, and what runs that copilot did not start.
    fn status(&self) -> impl Future<Output = Result<ArenaStatus, ProviderError>> + Send;
    /// Start `release` in `slot` without sending it traffic, and return the
    /// platform's handle of the operation as soon as the platform took it.
    /// Asked again with the same key, it returns the same operation.
    fn launch(
        &self,
        op: &Op<'_>,
        slot: Slot,
        release: &ReleaseSpec,
    ) -> impl Future<Output = Result<Handle, ProviderError>> + Send;
    /// Wait, within `op.timeout`, until what `handle` started is healthy.
    /// On failure nothing of it is left running.
    fn wait_ready(
        &self,
        op: &Op<'_>,
        slot: Slot,
        release: &ReleaseSpec,
        handle: &Handle,
    ) -> impl Future<Output = Result<SlotStatus, ProviderError>> + Send;
    /// Send `weights` percent of traffic to each slot (summing to 100) and
    /// return the split achieved (a number of machines cannot always carry
    /// 10%). `[(new, 100), (old, 0)]` is the instant switch.
    fn set_traffic(
        &self,
        op: &Op<'_>,
        weights: &[(Slot, u8)],
    ) -> impl Future<Output = Result<Vec<(Slot, u8)>, ProviderError>> + Send;
    /// Bring back `release`, which ran here before under the `recorded`
    /// handle, into `slot` by the platform's own means (Render's rollback,
    /// an ECS task definition revision, a ReplicaSet scaled back up), out of
    /// service. `Ok(None)`: there is none, and copilot launches it anew.
    fn restore(
        &self,
        _op: &Op<'_>,
        _slot: Slot,
        _release: &ReleaseSpec,
        _recorded: Option<&Handle>,
    ) -> impl Future<Output = Result<Option<Handle>, ProviderError>> + Send {
        async { Ok(None) }
    }
    /// `metric` of `slot` from the platform's own monitoring (CloudWatch for
    /// ECS behind an ALB) over the `window` up to now: the value and the
    /// number of requests it rests on, or `None` when the window has no data.
    fn platform_metric(
        &self,
        _slot: Slot,
        _metric: &crate::model::Metric,
        _window: std::time::Duration,
    ) -> impl Future<Output = Result<Option<(f64, f64)>, String>> + Send {
        let kind = self.kind();
        async move { Err(format!("the {kind} provider has no platform metrics")) }
    }
    /// Send the requests of a merchant cohort's shops (matched exactly by
    /// `X-Shopify-Shop-Domain` or the `shop` query parameter) to
    /// `cohort.slot` whatever the weights say, until called with `None`.
    /// Providers whose capabilities say `routes_by_header` implement it.
    fn route_cohort(
        &self,
        _op: &Op<'_>,
        _cohort: Option<&CohortRoute>,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send {
        let kind = self.kind();
        async move {
            Err(ProviderError::unavailable(
                "route a cohort",
                format!("the {kind} provider cannot route requests by header"),
            ))
        }
    }
    /// Stop `n` running instances of `slot` as a failure would (a chaos
    /// drill), leaving the platform to replace them as it does when one
    /// dies; what was stopped is returned. Platforms that replace nothing
    /// by themselves keep the default, which refuses.
    fn stop_instances(
        &self,
        _op: &Op<'_>,
        _slot: Slot,
        _n: usize,
    ) -> impl Future<Output = Result<Vec<String>, ProviderError>> + Send {
        let kind = self.kind();
        async move {
            Err(ProviderError::unavailable(
                "stop an instance",
                format!(
                    "the {kind} provider does not replace a stopped instance, so there is no recovery to measure"
                ),
            ))
        }
    }
    /// Take a slot out: stop it; it must carry no traffic.
    fn remove(
        &self,
        op: &Op<'_>,
        slot: Slot,
    ) -> impl Future<Output = Result<(), ProviderError>> + Send;
    /// Stop everything this provider started for the arena.
    fn down(&self) -> impl Future<Output = Result<(), ProviderError>> + Send;
}

/// A required text setting (its presence is checked before the rules run).
pub fn text(v: &Option<crate::config::def::At<String>>) -> String {
    v.as_ref().map(|v| v.value.clone()).unwrap_or_default()
}

/// A setting that was refused; the diagnostic has been said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refused;

/// The `url` setting: where the arena's traffic enters, without a trailing
/// slash. [`Refused`] once the error is said.
pub fn url_setting(
    input: &SettingsInput<'_>,
    url: &Option<crate::config::def::At<String>>,
    diags: &mut Diagnostics,
) -> Result<Option<String>, Refused> {
    let Some(at) = url else {
        return Ok(None);
    };
    match reqwest::Url::parse(&at.value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => {
            Ok(Some(at.value.trim_end_matches('/').to_string()))
        }
        _ => {
            diags.error(
                input.file,
                at.loc,
                format!("`{}` is not an http(s) URL", at.value),
                "write the address the arena's traffic enters, e.g. https://shop.example.com",
            );
            Err(Refused)
        }
    }
}

pub fn opt_text(v: &Option<crate::config::def::At<String>>) -> Option<String> {
    v.as_ref().map(|v| v.value.clone())
}
