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

pub mod http;
pub mod local;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Capabilities, ProviderKind, StrategyKind, TrafficSplit};

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

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What to run: a release of the service with its environment.
#[derive(Clone, Debug)]
pub struct ReleaseSpec {
    pub release_id: String,
    pub version: String,
    pub image: String,
    /// Variables for the service; secret values included, never logged.
    pub env: BTreeMap<String, String>,
}

/// What runs in a slot, as the platform reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlotStatus {
    pub slot: Slot,
    pub release_id: String,
    pub version: String,
    /// Where the slot answers directly (for gates against the idle colour).
    pub url: String,
    pub healthy: bool,
    /// Percent of the arena's traffic this slot receives.
    pub weight: u8,
}

/// Everything a provider reports about an arena.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ArenaStatus {
    pub slots: Vec<SlotStatus>,
    /// Where the arena's traffic enters (the router, load balancer, app URL).
    pub url: Option<String>,
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

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("{0}")]
    Unavailable(String),
    #[error("{action} failed: {message}")]
    Failed { action: String, message: String },
    #[error("the {0} provider is not built into this copilot yet")]
    NotImplemented(ProviderKind),
}

/// The interface every provider implements.
#[allow(async_fn_in_trait)]
pub trait Provider {
    fn capabilities(&self) -> &'static Capabilities;
    /// Start `release` in `slot` without sending it traffic; return once it answers its health check.
    async fn deploy(&self, slot: Slot, release: &ReleaseSpec) -> Result<SlotStatus, ProviderError>;
    /// What runs where, and the current split.
    async fn status(&self) -> Result<ArenaStatus, ProviderError>;
    /// Send `weights` percent of traffic to each slot (summing to 100).
    /// Where the platform can switch at once (a router, a listener, a
    /// selector), `[(new, 100), (old, 0)]` is that instant switch.
    async fn set_traffic(&self, weights: &[(Slot, u8)]) -> Result<(), ProviderError>;
    /// Bring back `release`, which ran here before, into `slot` by the
    /// platform's own rollback where it has one (Render's rollback of a
    /// deploy, an ECS service's previous task definition, a Kubernetes
    /// ReplicaSet scaled back up), without sending it traffic. `Ok(None)`
    /// means there is none, and copilot deploys the release itself.
    async fn restore(
        &self,
        _slot: Slot,
        _release: &ReleaseSpec,
    ) -> Result<Option<SlotStatus>, ProviderError> {
        Ok(None)
    }
    /// Take a slot out: stop it, after moving its traffic away.
    async fn remove(&self, slot: Slot) -> Result<(), ProviderError>;
    /// Stop everything this provider started for the arena.
    async fn down(&self) -> Result<(), ProviderError>;
}

use StrategyKind::{BlueGreen, Canary, Immediate, Rolling};

static LOCAL: Capabilities = Capabilities {
    strategies: &[Rolling, Immediate, BlueGreen, Canary],
    traffic_split: TrafficSplit::Exact,
    instant_rollback: true,
    settings: &["port"],
    required_settings: &[],
};

static FLY: Capabilities = Capabilities {
    strategies: &[Rolling, Immediate, BlueGreen, Canary],
    traffic_split: TrafficSplit::ByInstanceCount,
    instant_rollback: true,
    settings: &["app", "org", "region"],
    required_settings: &["app"],
};

static RENDER: Capabilities = Capabilities {
    // Render swaps to a new deploy once its health check passes; it cannot
    // hold two versions at a weighted split.
    strategies: &[Rolling, Immediate, BlueGreen],
    traffic_split: TrafficSplit::None,
    instant_rollback: false,
    settings: &["service", "region", "plan"],
    required_settings: &["service"],
};

static ECS: Capabilities = Capabilities {
    strategies: &[Rolling, Immediate, BlueGreen, Canary],
    traffic_split: TrafficSplit::Exact,
    instant_rollback: true,
    settings: &[
        "cluster",
        "service",
        "region",
        "listener",
        "target_groups",
        "family",
    ],
    required_settings: &["cluster", "service"],
};

static KUBERNETES: Capabilities = Capabilities {
    strategies: &[Rolling, Immediate, BlueGreen, Canary],
    traffic_split: TrafficSplit::ByInstanceCount,
    instant_rollback: true,
    settings: &["namespace", "context", "deployment", "service"],
    required_settings: &["namespace", "deployment"],
};

/// What the provider of `kind` can do.
pub fn capabilities(kind: ProviderKind) -> &'static Capabilities {
    match kind {
        ProviderKind::Local => &LOCAL,
        ProviderKind::Fly => &FLY,
        ProviderKind::Render => &RENDER,
        ProviderKind::Ecs => &ECS,
        ProviderKind::Kubernetes => &KUBERNETES,
    }
}
