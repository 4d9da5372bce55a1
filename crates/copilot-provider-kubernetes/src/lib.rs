//! The `kubernetes` provider: an arena is a namespace where each colour is a
//! Deployment (`<deployment>-blue`, `<deployment>-green`) and the arena's
//! Service selects the live one.
//!
//! - Objects are written with server-side apply under copilot's own field
//!   manager, so a field someone else changed since (`kubectl scale`,
//!   `kubectl set image`) is a conflict copilot reports instead of
//!   overwriting (unless told to force).
//! - A rollout is waited for as `kubectl rollout status` waits: the
//!   observed generation caught up, every replica updated, ready and
//!   available, and the `Progressing` condition not past its deadline. A
//!   pod that crash-loops, cannot pull its image or cannot find its
//!   configuration fails the wait at once, with its events.
//! - Blue-green switches the Service's selector from one colour to the
//!   other; canary selects the app across both colours and turns weights
//!   into replica counts.
//!
//! The settings and their rules are always built (`copilot validate` checks
//! a Kubernetes arena on any build); the client is behind the `kubernetes`
//! feature.

#[cfg(feature = "client")]
mod cluster;
pub mod manifest;

#[cfg(feature = "client")]
pub use cluster::KubernetesProvider;

use std::collections::BTreeMap;

use copilot_core::config::def::At;
use copilot_core::config::{Diagnostics, SettingsInput};
use copilot_core::model::{
    Capabilities, ProviderSettings, SecretStore, StrategyKind, TrafficSplit,
};
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
    /// The Service whose selector picks the live colour [default: the
    /// deployment's name]. copilot creates it when it does not exist.
    #[serde(default)]
    pub service: Option<At<String>>,
    /// Where the arena's traffic enters (an Ingress or load balancer
    /// address) [default: the Service's in-cluster address].
    #[serde(default)]
    pub url: Option<At<String>>,
    /// Where each colour answers on its own, for gates against the idle
    /// colour (`{ blue: https://blue.staging.example.com, green: ... }`)
    /// [default: the colour's own Service, `<service>-<colour>`, in-cluster].
    #[serde(default)]
    pub colour_urls: Option<BTreeMap<String, At<String>>>,
    /// The port the service listens on in its container [default: 8080].
    #[serde(default)]
    pub port: Option<At<u16>>,
}

/// The settings of an arena on this provider, checked.
#[derive(Clone, Debug, Serialize)]
pub struct KubernetesSettings {
    pub namespace: String,
    pub deployment: String,
    pub context: Option<String>,
    pub service: Option<String>,
    pub url: Option<String>,
    pub colour_urls: BTreeMap<String, String>,
    pub port: u16,
    /// The namespace is the arena's own (a preview's): copilot creates it
    /// before the first deploy and deletes it with everything in it on
    /// `down`. Never set from a definition.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub own_namespace: bool,
}

impl KubernetesSettings {
    /// The Service that carries the arena's traffic.
    pub fn service_name(&self) -> &str {
        self.service.as_deref().unwrap_or(&self.deployment)
    }
}

/// A Kubernetes object name (RFC 1123 DNS label, at most 63 characters,
/// leaving room for a colour suffix where `suffix` is set).
fn valid_name(name: &str, suffix: usize) -> bool {
    !name.is_empty()
        && name.len() + suffix <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
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
    routes_by_header: false,
    settings: &[
        "namespace",
        "context",
        "deployment",
        "service",
        "url",
        "colour_urls",
        "port",
    ],
    required_settings: &["namespace", "deployment"],
    secret_stores: &[SecretStore::Kubernetes],
    // `copilot render` writes the objects the provider applies
    // (`manifest`), not a template: what it shows is what a deploy applies.
    templates: &[],
};

/// A name setting that must be a Kubernetes object name.
fn name(
    input: &SettingsInput<'_>,
    at: &Option<At<String>>,
    what: &str,
    suffix: usize,
    diags: &mut Diagnostics,
) -> Result<Option<String>, copilot_core::provider::Refused> {
    let Some(at) = at else {
        return Ok(None);
    };
    if valid_name(&at.value, suffix) {
        return Ok(Some(at.value.clone()));
    }
    diags.error(
        input.file,
        at.loc,
        format!("`{}` is not a Kubernetes {what} name", at.value),
        format!(
            "lower-case letters, digits and `-`, starting and ending with a letter or digit, at most {} characters",
            63 - suffix
        ),
    );
    Err(copilot_core::provider::Refused)
}

pub fn settings(input: &SettingsInput<'_>, diags: &mut Diagnostics) -> Option<ProviderSettings> {
    let p: Section = input.section(diags)?;
    let namespace = name(input, &p.namespace, "namespace", 0, diags);
    // `-green` is appended for the colours.
    let deployment = name(input, &p.deployment, "Deployment", 6, diags);
    let service = name(input, &p.service, "Service", 6, diags);
    let url = copilot_core::provider::url_setting(input, &p.url, diags);
    let mut colour_urls = BTreeMap::new();
    let mut refused = false;
    for (colour, at) in p.colour_urls.iter().flatten() {
        if !matches!(colour.as_str(), "blue" | "green") {
            diags.error(
                input.file,
                at.loc,
                format!("`{colour}` is not a colour"),
                "name `blue` and `green`",
            );
            refused = true;
            continue;
        }
        match copilot_core::provider::url_setting(input, &Some(at.clone()), diags) {
            Ok(Some(u)) => {
                colour_urls.insert(colour.clone(), u);
            }
            _ => refused = true,
        }
    }
    let port = match &p.port {
        Some(at) if at.value == 0 => {
            diags.error(
                input.file,
                at.loc,
                "port 0 cannot be listened on",
                "the service's port, e.g. 8080",
            );
            refused = true;
            8080
        }
        Some(at) => at.value,
        None => 8080,
    };
    if refused {
        return None;
    }
    Some(ProviderSettings::new(KubernetesSettings {
        namespace: namespace.ok()?.unwrap_or_default(),
        deployment: deployment.ok()?.unwrap_or_default(),
        context: copilot_core::provider::opt_text(&p.context),
        service: service.ok()?,
        url: url.ok()?,
        colour_urls,
        port,
        own_namespace: false,
    }))
}
