//! The `kubernetes` provider's settings. Driving the Kubernetes API is not
//! built yet; an arena on Kubernetes validates, and `deploy` says the
//! provider is missing.

use copilot_core::config::def::At;
use copilot_core::config::{Diagnostics, SettingsInput};
use copilot_core::model::{
    Capabilities, ProviderSettings, SecretStore, StrategyKind, TrafficSplit,
};
use copilot_core::render::{Format, TemplateSpec};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The `provider:` settings of a Kubernetes arena, as written.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct Section {
    /// The namespace.
    #[serde(default)]
    pub namespace: Option<At<String>>,
    /// The kubeconfig context.
    #[serde(default)]
    pub context: Option<At<String>>,
    /// The Deployment name (colours are suffixed).
    #[serde(default)]
    pub deployment: Option<At<String>>,
    /// The Service.
    #[serde(default)]
    pub service: Option<At<String>>,
}

/// The settings of an arena on this provider, checked.
#[derive(Clone, Debug, Serialize)]
pub struct KubernetesSettings {
    pub namespace: String,
    pub deployment: String,
    pub context: Option<String>,
    pub service: Option<String>,
}

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
    live_on_ready: false,
    settings: &["namespace", "context", "deployment", "service"],
    required_settings: &["namespace", "deployment"],
    secret_stores: &[SecretStore::Kubernetes],
    templates: &[TemplateSpec {
        template: "templates/kubernetes.yaml.j2",
        output: "kubernetes.yaml",
        format: Format::Yaml,
    }],
};

pub fn settings(input: &SettingsInput<'_>, diags: &mut Diagnostics) -> Option<ProviderSettings> {
    let p: Section = input.section(diags)?;
    let p = &p;
    Some(ProviderSettings::new(KubernetesSettings {
        namespace: copilot_core::provider::text(&p.namespace),
        deployment: copilot_core::provider::text(&p.deployment),
        context: copilot_core::provider::opt_text(&p.context),
        service: copilot_core::provider::opt_text(&p.service),
    }))
}
