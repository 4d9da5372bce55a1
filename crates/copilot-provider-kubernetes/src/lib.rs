//! The `kubernetes` provider's settings. Driving the Kubernetes API is not
//! built yet; an arena on Kubernetes validates, and `deploy` says the
//! provider is missing.

use copilot_core::config::{Diagnostics, SettingsInput};
use copilot_core::model::{
    Capabilities, KubernetesSettings, ProviderSettings, SecretStore, StrategyKind, TrafficSplit,
};

/// What this provider can do; `copilot validate` holds arena strategies to it.
pub static CAPABILITIES: Capabilities = Capabilities {
    strategies: &[
        StrategyKind::Rolling,
        StrategyKind::Immediate,
        StrategyKind::BlueGreen,
        StrategyKind::Canary,
    ],
    traffic_split: TrafficSplit::ByInstanceCount,
    instant_rollback: true,
    settings: &["namespace", "context", "deployment", "service"],
    required_settings: &["namespace", "deployment"],
    secret_stores: &[SecretStore::Kubernetes],
};

pub fn settings(input: &SettingsInput<'_>, _diags: &mut Diagnostics) -> Option<ProviderSettings> {
    let p = input.section;
    Some(ProviderSettings::Kubernetes(KubernetesSettings {
        namespace: copilot_core::provider::text(&p.namespace),
        deployment: copilot_core::provider::text(&p.deployment),
        context: copilot_core::provider::opt_text(&p.context),
        service: copilot_core::provider::opt_text(&p.service),
    }))
}
