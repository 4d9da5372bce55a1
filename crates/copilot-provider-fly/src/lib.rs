//! The `fly` provider: an arena is a Fly app, a colour a group of Machines
//! tagged with metadata, driven through the Machines API.
//!
//! The settings and their rules are always built (`copilot validate` checks
//! a Fly arena on any build); the client is behind the `fly` feature.

#[cfg(feature = "client")]
mod machines;

#[cfg(feature = "client")]
pub use machines::{FLY_API_BASE, FlyProvider};

use copilot_core::config::def::At;
use copilot_core::config::duration::Duration;
use copilot_core::config::{Diagnostics, SettingsInput};
use copilot_core::model::{
    Capabilities, ProviderSettings, SecretStore, StrategyKind, TrafficSplit,
};
use copilot_core::render::{Format, TemplateSpec};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Fly app names: lowercase letters, digits and dashes.
fn valid_app(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Fly region codes are three lowercase letters (`dfw`, `ams`, `syd`).
fn valid_region(code: &str) -> bool {
    code.len() == 3 && code.chars().all(|c| c.is_ascii_lowercase())
}

/// The `provider:` settings of a Fly arena, as written.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct Section {
    /// The Fly app name.
    #[serde(default)]
    pub app: Option<At<String>>,
    /// The organisation slug.
    #[serde(default)]
    pub org: Option<At<String>>,
    /// The region machines run in.
    #[serde(default)]
    pub region: Option<At<String>>,
    /// Several regions (instances per region), instead of `region`.
    #[serde(default)]
    pub regions: Option<At<Vec<At<String>>>>,
    /// Where the arena's traffic enters [default: `https://<app>.fly.dev`].
    #[serde(default)]
    pub url: Option<At<String>>,
    /// A command run once in a machine of the new release before it starts (migrations).
    #[serde(default)]
    pub release_command: Option<At<String>>,
    /// Volumes mounted into each machine, as `volume_name:/path`.
    #[serde(default)]
    pub mounts: Option<At<Vec<At<String>>>>,
    /// The port the service listens on inside a machine [default: 8080].
    #[serde(default)]
    pub internal_port: Option<At<u32>>,
    /// How long Fly's proxy is given to learn about machines put into
    /// service before others are taken out [default: 10s, as flyctl waits].
    #[serde(default)]
    pub proxy_wait: Option<At<Duration>>,
}

/// The settings of an arena on this provider, checked.
#[derive(Clone, Debug, Serialize)]
pub struct FlySettings {
    pub app: String,
    pub org: Option<String>,
    /// Where machines run; `instances` machines per colour in each.
    pub regions: Vec<String>,
    /// Where the app's traffic enters (`https://<app>.fly.dev` unless set).
    pub url: String,
    /// Run once in a temporary machine of the new release before it starts.
    pub release_command: Option<String>,
    /// Volumes mounted into each machine (`name:/path`).
    pub mounts: Vec<FlyMount>,
    /// The port the service listens on inside the machine.
    pub internal_port: u16,
    /// The wait between putting machines into service and taking others out.
    pub proxy_wait: Duration,
}

/// How long flyctl's blue-green lets fly-proxy see new machines before it
/// cordons the old ones (`waitBeforeCordon`).
pub const PROXY_WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug, Serialize)]
pub struct FlyMount {
    pub volume: String,
    pub path: String,
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
        "app",
        "org",
        "region",
        "regions",
        "url",
        "release_command",
        "mounts",
        "internal_port",
        "proxy_wait",
    ],
    required_settings: &["app"],
    secret_stores: &[SecretStore::Fly],
    templates: &[TemplateSpec {
        template: "templates/fly.toml.j2",
        output: "fly.toml",
        format: Format::Toml,
    }],
};

pub fn settings(input: &SettingsInput<'_>, diags: &mut Diagnostics) -> Option<ProviderSettings> {
    let p: Section = input.section(diags)?;
    let p = &p;
    let file = input.file;
    let mut ok = true;
    let app = copilot_core::provider::text(&p.app);
    if let Some(at) = &p.app
        && !valid_app(&app)
    {
        ok = false;
        diags.error(
            file,
            at.loc,
            format!("`{app}` is not a Fly app name"),
            "Fly app names hold lowercase letters, digits and dashes",
        );
    }
    let mut regions = Vec::new();
    match (&p.region, &p.regions) {
        (Some(one), Some(many)) => {
            ok = false;
            diags.error(
                file,
                many.loc,
                "both `region` and `regions` are set",
                format!("keep one: `regions: [{}]` lists every region", one.value),
            );
        }
        (Some(one), None) => regions.push((one.value.clone(), one.loc)),
        (None, Some(many)) => {
            if many.value.is_empty() {
                ok = false;
                diags.error(
                    file,
                    many.loc,
                    "`regions` is empty",
                    "list at least one region, e.g. `[dfw]`",
                );
            }
            regions.extend(many.value.iter().map(|r| (r.value.clone(), r.loc)));
        }
        (None, None) => {}
    }
    let mut seen = std::collections::BTreeSet::new();
    for (code, loc) in &regions {
        if !valid_region(code) {
            ok = false;
            diags.error(
                file,
                *loc,
                format!("`{code}` is not a Fly region code"),
                "Fly regions are three lowercase letters, e.g. dfw, iad, ams (`fly platform regions`)",
            );
        } else if !seen.insert(code.clone()) {
            ok = false;
            diags.error(file, *loc, format!("region `{code}` is listed twice"), None);
        }
    }
    let url = match copilot_core::provider::url_setting(input, &p.url, diags) {
        Ok(u) => u.unwrap_or_else(|| format!("https://{app}.fly.dev")),
        Err(copilot_core::provider::Refused) => {
            ok = false;
            String::new()
        }
    };
    let release_command = match &p.release_command {
        Some(at) if at.value.trim().is_empty() => {
            ok = false;
            diags.error(
                file,
                at.loc,
                "`release_command` is empty",
                "remove it, or name a command",
            );
            None
        }
        other => copilot_core::provider::opt_text(other),
    };
    let mut mounts = Vec::new();
    if let Some(list) = &p.mounts {
        for m in &list.value {
            match m.value.split_once(':') {
                Some((volume, path)) if !volume.is_empty() && path.starts_with('/') => {
                    mounts.push(FlyMount {
                        volume: volume.to_string(),
                        path: path.to_string(),
                    });
                }
                _ => {
                    ok = false;
                    diags.error(
                        file,
                        m.loc,
                        format!("`{}` is not a mount", m.value),
                        "write `volume_name:/path/in/machine`",
                    );
                }
            }
        }
        if !list.value.is_empty()
            && let Some(kind @ (StrategyKind::BlueGreen | StrategyKind::Canary)) = input.strategy
        {
            ok = false;
            diags.error(
                file,
                list.loc,
                format!("a {kind} rollout on Fly cannot use volumes"),
                "a Fly volume attaches to one machine, so two colours cannot run side by side on it; use `strategy: { kind: rolling }`",
            );
        }
    }
    let internal_port = match &p.internal_port {
        Some(at) if !(1..=65535).contains(&at.value) => {
            ok = false;
            diags.error(
                file,
                at.loc,
                format!("port {} is out of range", at.value),
                None,
            );
            8080
        }
        Some(at) => at.value as u16,
        None => 8080,
    };
    ok.then(|| {
        ProviderSettings::new(FlySettings {
            app,
            org: copilot_core::provider::opt_text(&p.org),
            regions: regions.into_iter().map(|(r, _)| r).collect(),
            url,
            release_command,
            mounts,
            internal_port,
            proxy_wait: p.proxy_wait.as_ref().map_or(PROXY_WAIT, |w| w.value),
        })
    })
}
