//! Providers: the platforms an arena runs on.
//!
//! Each provider declares what it can do ([`Capabilities`]); `copilot
//! validate` holds arena strategies to these declarations before anything
//! runs.

use crate::model::{Capabilities, ProviderKind, StrategyKind, TrafficSplit};

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
