//! The `render` provider: an arena is a Render web service (with,
//! optionally, a background worker deployed with the same release), driven
//! through Render's public API.
//!
//! Render swaps a service to a new deploy once the deploy passes its health
//! check, and keeps the previous deploy serving until then; it cannot hold
//! two releases at a weighted split. So on Render a release is live as soon
//! as its deploy is, `after` gates and analysis run against the live
//! deploy, and a failure goes back through Render's own rollback.
//!
//! The settings and their rules are always built (`copilot validate` checks
//! a Render arena on any build); the client is behind the `render` feature.

#[cfg(feature = "client")]
mod api;

#[cfg(feature = "client")]
pub use api::{RENDER_API_BASE, RenderProvider};

use copilot_core::config::def::At;
use copilot_core::config::{Diagnostics, SettingsInput};
use copilot_core::model::{
    Capabilities, ProviderSettings, SecretStore, StrategyKind, TrafficSplit,
};
use copilot_core::render::{Format, TemplateSpec};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Render's regions, as its API names them.
pub const REGIONS: &[&str] = &["frankfurt", "oregon", "ohio", "singapore", "virginia"];

/// Render's instance types, as its API names them.
pub const PLANS: &[&str] = &[
    "starter",
    "starter_plus",
    "standard",
    "standard_plus",
    "pro",
    "pro_plus",
    "pro_max",
    "pro_ultra",
    "free",
    "custom",
];

/// The `provider:` settings of a Render arena, as written.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct Section {
    /// The web service, by id (`srv-...`) or by name.
    #[serde(default)]
    pub service: Option<At<String>>,
    /// The region the service runs in (Render cannot move a service; a
    /// service elsewhere is refused).
    #[serde(default)]
    pub region: Option<At<String>>,
    /// The instance type; a service on another is changed to it.
    #[serde(default)]
    pub plan: Option<At<String>>,
    /// Where the arena's traffic enters [default: the service's own
    /// `onrender.com` address].
    #[serde(default)]
    pub url: Option<At<String>>,
    /// Render's pre-deploy command: run once per deploy, before the new
    /// release takes traffic (migrations); a failure fails the deploy.
    #[serde(default)]
    pub release_command: Option<At<String>>,
    /// A background worker, by id or name, deployed with the same release
    /// after the web service.
    #[serde(default)]
    pub worker: Option<At<String>>,
}

/// The settings of an arena on this provider, checked.
#[derive(Clone, Debug, Serialize)]
pub struct RenderSettings {
    pub service: String,
    pub region: Option<String>,
    pub plan: Option<String>,
    /// Where traffic enters, when set; else the service's own URL.
    pub url: Option<String>,
    pub release_command: Option<String>,
    pub worker: Option<String>,
    /// This arena is a preview of that service (`preview up`): `service`
    /// is the preview's own, created from it by Render's service preview
    /// (`POST /services/{id}/preview`) on the first deploy and deleted by
    /// `down`. Never set from a definition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preview_of: Option<String>,
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
    live_on_ready: true,
    routes_by_header: false,
    settings: &[
        "service",
        "region",
        "plan",
        "url",
        "release_command",
        "worker",
    ],
    required_settings: &["service"],
    secret_stores: &[SecretStore::Render],
    templates: &[TemplateSpec {
        template: "templates/render.yaml.j2",
        output: "render.yaml",
        format: Format::Yaml,
    }],
};

/// A setting that must be one of Render's names for it.
fn one_of(
    input: &SettingsInput<'_>,
    at: &Option<At<String>>,
    what: &str,
    allowed: &[&str],
    diags: &mut Diagnostics,
) -> Result<Option<String>, copilot_core::provider::Refused> {
    let Some(at) = at else {
        return Ok(None);
    };
    if allowed.contains(&at.value.as_str()) {
        return Ok(Some(at.value.clone()));
    }
    diags.error(
        input.file,
        at.loc,
        format!("`{}` is not a Render {what}", at.value),
        format!("Render's {what}s: {}", allowed.join(", ")),
    );
    Err(copilot_core::provider::Refused)
}

/// A text setting that, when present, must say something.
fn not_empty(
    input: &SettingsInput<'_>,
    at: &Option<At<String>>,
    name: &str,
    diags: &mut Diagnostics,
) -> Result<Option<String>, copilot_core::provider::Refused> {
    match at {
        Some(at) if at.value.trim().is_empty() => {
            diags.error(
                input.file,
                at.loc,
                format!("`{name}` is empty"),
                "remove it, or give it a value",
            );
            Err(copilot_core::provider::Refused)
        }
        other => Ok(copilot_core::provider::opt_text(other)),
    }
}

pub fn settings(input: &SettingsInput<'_>, diags: &mut Diagnostics) -> Option<ProviderSettings> {
    let p: Section = input.section(diags)?;
    let region = one_of(input, &p.region, "region", REGIONS, diags);
    let plan = one_of(input, &p.plan, "plan", PLANS, diags);
    let url = copilot_core::provider::url_setting(input, &p.url, diags);
    let release_command = not_empty(input, &p.release_command, "release_command", diags);
    let worker = not_empty(input, &p.worker, "worker", diags);
    let service = not_empty(input, &p.service, "service", diags);
    Some(ProviderSettings::new(RenderSettings {
        service: service.ok()?.unwrap_or_default(),
        region: region.ok()?,
        plan: plan.ok()?,
        url: url.ok()?,
        release_command: release_command.ok()?,
        worker: worker.ok()?,
        preview_of: None,
    }))
}
