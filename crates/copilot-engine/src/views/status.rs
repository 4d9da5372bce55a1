//! `status`: what runs where, from the ledger and from the platform.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use copilot_core::model::{Arena, ProviderKind, StrategyKind, Tier};
use copilot_core::provider::{ArenaStatus, Drift, Provider};
use copilot_ledger::{DeploymentRow, Incident, Ledger, LedgerError, Lock, Step};

use crate::platform;

/// Every arena's status at one instant.
#[derive(Clone, Debug, Serialize)]
pub struct StatusView {
    pub at: DateTime<Utc>,
    /// The ledger's URL, without its password.
    pub ledger: String,
    pub arenas: Vec<ArenaStatusView>,
}

/// One arena: what the ledger says, what the platform says, and whether
/// they agree.
#[derive(Clone, Debug, Serialize)]
pub struct ArenaStatusView {
    pub arena: String,
    pub tier: Tier,
    pub provider: ProviderKind,
    pub strategy: StrategyKind,
    /// The release of the latest succeeded deployment.
    pub live: Option<DeploymentRow>,
    /// The deployment in progress, with its latest step.
    pub deployment: Option<InProgress>,
    /// The split the ledger recorded last.
    pub traffic: Option<Value>,
    /// The split the platform reports, by slot (`null` when not asked).
    pub observed: Option<Value>,
    /// Why the platform was not asked (no credentials, not built in...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_observed: Option<String>,
    /// The platform serves a different split than the ledger recorded, or
    /// runs something copilot did not start (`platform_drift`).
    pub drift: bool,
    /// What runs on the platform that copilot did not start.
    pub platform_drift: Vec<Drift>,
    /// Whether the platform deploys on its own on a push (Render's
    /// autodeploy), where it has that switch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub autodeploy: Option<bool>,
    pub lock: Option<Lock>,
    /// The arena's open incidents, newest first.
    pub incidents: Vec<OpenIncident>,
    pub window: WindowView,
    /// The platform's account of each slot (instances, health, regions).
    #[serde(skip)]
    pub slots: Vec<copilot_core::provider::SlotStatus>,
}

/// An open incident, and for a SEV2 without a decision the time left to take one.
#[derive(Clone, Debug, Serialize)]
pub struct OpenIncident {
    #[serde(flatten)]
    pub incident: Incident,
    /// Seconds until the decision is due (negative: overdue); only while
    /// a SEV2 has neither been rolled back nor resolved.
    pub decision_in_s: Option<i64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct InProgress {
    pub deployment: DeploymentRow,
    pub step: Option<Step>,
}

#[derive(Clone, Debug, Serialize)]
pub struct WindowView {
    /// Inside an allowed window (or the arena has none).
    pub open: bool,
    /// The freezes in force.
    pub freezes: Vec<String>,
}

/// What the provider said when asked.
#[derive(Clone, Debug)]
pub enum Observation {
    /// It runs something (or reports drift).
    Seen(ArenaStatus),
    /// It runs nothing for the arena, or there was nothing to ask.
    Nothing,
    /// It could not be asked, and why.
    NotAsked(String),
}

/// The status of `arenas` (in that order) at `now`.
pub async fn status(
    root: &Path,
    ledger: &Ledger,
    arenas: &[&Arena],
    now: DateTime<Utc>,
) -> Result<StatusView, LedgerError> {
    let mut views = Vec::new();
    for a in arenas {
        let observed = observe(root, ledger, a).await;
        views.push(arena_status(ledger, a, observed, now).await?);
    }
    Ok(StatusView {
        at: now,
        ledger: ledger.display_url().to_string(),
        arenas: views,
    })
}

/// What the provider itself reports, where copilot can ask it (a provider
/// built in, with its credentials, that runs something for the arena). A
/// lane is reported with the arena it deploys into.
pub async fn observe(root: &Path, ledger: &Ledger, a: &Arena) -> Observation {
    if a.deploys_into() != a.name {
        return Observation::Nothing;
    }
    // The local provider starts nothing until something is deployed.
    if a.provider.kind == ProviderKind::Local && !copilot_provider_local::has_state(root, &a.name) {
        return Observation::Nothing;
    }
    let provider = match platform::open(root, a) {
        Ok(p) => p,
        Err(e) => return Observation::NotAsked(e.message),
    };
    match ledger.handles(a.deploys_into()).await {
        Ok(handles) => provider.recall(&handles),
        Err(e) => return Observation::NotAsked(e.to_string()),
    }
    match provider.status().await {
        Ok(status) if status.slots.is_empty() && status.drift.is_empty() => Observation::Nothing,
        Ok(mut status) => {
            if let Err(e) = crate::rollout::executor::name_adopted(ledger, &mut status).await {
                return Observation::NotAsked(e.to_string());
            }
            Observation::Seen(status)
        }
        Err(e) => Observation::NotAsked(e.message),
    }
}

/// Slot -> (release, weight) of the slots carrying traffic.
fn carrying(split: Option<&Value>) -> BTreeMap<String, (String, u64)> {
    split
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(slot, v)| {
            let w = v.get("weight").and_then(Value::as_u64).unwrap_or(0);
            let r = v.get("release").and_then(Value::as_str).unwrap_or("?");
            (w > 0).then(|| (slot.clone(), (r.to_string(), w)))
        })
        .collect()
}

pub async fn arena_status(
    ledger: &Ledger,
    a: &Arena,
    observation: Observation,
    now: DateTime<Utc>,
) -> Result<ArenaStatusView, LedgerError> {
    let live = ledger.live(&a.name).await?;
    let active = ledger.active_deployment(&a.name).await?;
    let traffic = ledger.traffic(&a.name).await?.map(|t| t.split.0);
    let lock = ledger
        .current_lock(&a.name, copilot_core::clock::real_now())
        .await?;
    let incidents = ledger
        .incidents(Some(&a.name), false)
        .await?
        .into_iter()
        .map(|i| OpenIncident {
            decision_in_s: match (i.decision_due_at, i.decided_at) {
                (Some(due), None) => Some((due - now).num_seconds()),
                _ => None,
            },
            incident: i,
        })
        .collect();
    let deployment = match active {
        Some(d) => {
            let step = ledger.steps(&d.deployment.id).await?.pop();
            Some(InProgress {
                deployment: d,
                step,
            })
        }
        None => None,
    };
    let freezes: Vec<String> = a
        .windows
        .freeze
        .iter()
        .filter(|f| f.contains(now))
        .map(ToString::to_string)
        .collect();
    let open = a.windows.allow.is_empty() || a.windows.allow.iter().any(|w| w.contains(now));
    let (observed, not_observed) = match observation {
        Observation::Seen(s) => (Some(s), None),
        Observation::Nothing => (None, None),
        Observation::NotAsked(why) => (None, Some(why)),
    };
    let observed_split = observed.as_ref().map(|o| {
        let m: serde_json::Map<String, Value> = o
            .slots
            .iter()
            .map(|x| {
                (
                    x.slot.to_string(),
                    serde_json::json!({ "release": x.version, "weight": x.weight, "healthy": x.healthy, "instances": x.instances, "regions": x.regions }),
                )
            })
            .collect();
        Value::Object(m)
    });
    // The split differs, or something runs that copilot did not start.
    let drift = observed.as_ref().is_some_and(|o| !o.drift.is_empty())
        || observed_split
            .as_ref()
            .is_some_and(|o| carrying(Some(o)) != carrying(traffic.as_ref()));
    Ok(ArenaStatusView {
        arena: a.name.clone(),
        tier: a.tier,
        provider: a.provider.kind,
        strategy: a.strategy.kind,
        live,
        deployment,
        traffic,
        observed: observed_split,
        not_observed,
        drift,
        platform_drift: observed
            .as_ref()
            .map(|o| o.drift.clone())
            .unwrap_or_default(),
        autodeploy: observed.as_ref().and_then(|o| o.autodeploy),
        lock,
        incidents,
        window: WindowView { open, freezes },
        slots: observed.map(|o| o.slots).unwrap_or_default(),
    })
}
