//! The `render` provider's settings. Driving Render's API is not built yet;
//! an arena on Render validates, and `deploy` says the provider is missing.

use copilot_core::config::def::At;
use copilot_core::config::{Diagnostics, SettingsInput};
use copilot_core::model::{
    Capabilities, ProviderSettings, SecretStore, StrategyKind, TrafficSplit,
};
use copilot_core::render::{Format, TemplateSpec};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The `provider:` settings of a Render arena, as written.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct Section {
    /// The service name or id (`srv-...`).
    #[serde(default)]
    pub service: Option<At<String>>,
    /// The region.
    #[serde(default)]
    pub region: Option<At<String>>,
    /// The instance plan.
    #[serde(default)]
    pub plan: Option<At<String>>,
}

/// The settings of an arena on this provider, checked.
#[derive(Clone, Debug, Serialize)]
pub struct RenderSettings {
    pub service: String,
    pub region: Option<String>,
    pub plan: Option<String>,
}

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
    templates: &[TemplateSpec {
        template: "templates/render.yaml.j2",
        output: "render.yaml",
        format: Format::Yaml,
    }],
};

pub fn settings(input: &SettingsInput<'_>, diags: &mut Diagnostics) -> Option<ProviderSettings> {
    let p: Section = input.section(diags)?;
    let p = &p;
    Some(ProviderSettings::new(RenderSettings {
        service: copilot_core::provider::text(&p.service),
        region: copilot_core::provider::opt_text(&p.region),
        plan: copilot_core::provider::opt_text(&p.plan),
    }))
}
