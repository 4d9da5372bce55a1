//! The `render` provider's settings. Driving Render's API is not built yet;
//! an arena on Render validates, and `deploy` says the provider is missing.

use copilot_core::config::{Diagnostics, SettingsInput};
use copilot_core::model::{
    Capabilities, ProviderSettings, RenderSettings, SecretStore, StrategyKind, TrafficSplit,
};

/// What this provider can do; `copilot validate` holds arena strategies to it.
pub static CAPABILITIES: Capabilities = Capabilities {
    // Render swaps to a new deploy once its health check passes; it cannot
    // hold two versions at a weighted split.
    strategies: &[
        StrategyKind::Rolling,
        StrategyKind::Immediate,
        StrategyKind::BlueGreen,
    ],
    traffic_split: TrafficSplit::None,
    instant_rollback: false,
    settings: &["service", "region", "plan"],
    required_settings: &["service"],
    secret_stores: &[SecretStore::Render],
};

pub fn settings(input: &SettingsInput<'_>, _diags: &mut Diagnostics) -> Option<ProviderSettings> {
    let p = input.section;
    Some(ProviderSettings::Render(RenderSettings {
        service: copilot_core::provider::text(&p.service),
        region: copilot_core::provider::opt_text(&p.region),
        plan: copilot_core::provider::opt_text(&p.plan),
    }))
}
