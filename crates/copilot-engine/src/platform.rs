//! The provider factory: every provider this copilot was built with, behind
//! one type, and every provider's rules for its settings. Adding a provider
//! is a crate of its own, an arm in [`open`], [`settings`] and
//! [`capabilities`], and a feature line.

use std::path::Path;

use copilot_core::config::{Diagnostics, ProviderRules, SettingsInput};
use copilot_core::model::{Arena, Capabilities, Metric, ProviderKind, ProviderSettings};
use copilot_core::provider::{
    ArenaStatus, Handle, Op, Provider, ProviderError, ReleaseSpec, Slot, SlotStatus,
};

/// Every provider this copilot was built with, behind one type.
pub enum Platform {
    Local(copilot_provider_local::LocalProvider),
    #[cfg(feature = "fly")]
    Fly(copilot_provider_fly::FlyProvider),
    #[cfg(feature = "ecs")]
    Ecs(Box<copilot_provider_ecs::EcsProvider>),
    #[cfg(feature = "render")]
    Render(copilot_provider_render::RenderProvider),
    #[cfg(feature = "kubernetes")]
    Kubernetes(copilot_provider_kubernetes::KubernetesProvider),
}

macro_rules! each {
    ($self:ident, $p:ident => $e:expr) => {
        match $self {
            Platform::Local($p) => $e,
            #[cfg(feature = "fly")]
            Platform::Fly($p) => $e,
            #[cfg(feature = "ecs")]
            Platform::Ecs($p) => $e,
            #[cfg(feature = "render")]
            Platform::Render($p) => $e,
            #[cfg(feature = "kubernetes")]
            Platform::Kubernetes($p) => $e,
        }
    };
}

impl Provider for Platform {
    fn kind(&self) -> ProviderKind {
        each!(self, p => p.kind())
    }
    fn url(&self) -> String {
        each!(self, p => p.url())
    }
    fn prepare(&self, release: &mut ReleaseSpec) -> Result<(), ProviderError> {
        each!(self, p => p.prepare(release))
    }
    fn recall(&self, handles: &[Handle]) {
        each!(self, p => p.recall(handles))
    }
    fn made(&self) -> Vec<Handle> {
        each!(self, p => p.made())
    }
    async fn suspend_autodeploy(&self) -> Result<(), ProviderError> {
        each!(self, p => p.suspend_autodeploy().await)
    }
    async fn status(&self) -> Result<ArenaStatus, ProviderError> {
        each!(self, p => p.status().await)
    }
    async fn launch(
        &self,
        op: &Op<'_>,
        slot: Slot,
        release: &ReleaseSpec,
    ) -> Result<Handle, ProviderError> {
        each!(self, p => p.launch(op, slot, release).await)
    }
    async fn wait_ready(
        &self,
        op: &Op<'_>,
        slot: Slot,
        release: &ReleaseSpec,
        handle: &Handle,
    ) -> Result<SlotStatus, ProviderError> {
        each!(self, p => p.wait_ready(op, slot, release, handle).await)
    }
    async fn set_traffic(
        &self,
        op: &Op<'_>,
        weights: &[(Slot, u8)],
    ) -> Result<Vec<(Slot, u8)>, ProviderError> {
        each!(self, p => p.set_traffic(op, weights).await)
    }
    async fn restore(
        &self,
        op: &Op<'_>,
        slot: Slot,
        release: &ReleaseSpec,
        recorded: Option<&Handle>,
    ) -> Result<Option<Handle>, ProviderError> {
        each!(self, p => p.restore(op, slot, release, recorded).await)
    }
    async fn platform_metric(
        &self,
        slot: Slot,
        metric: &Metric,
        window: std::time::Duration,
    ) -> Result<Option<(f64, f64)>, String> {
        each!(self, p => p.platform_metric(slot, metric, window).await)
    }
    async fn route_cohort(
        &self,
        op: &Op<'_>,
        cohort: Option<&copilot_core::provider::CohortRoute>,
    ) -> Result<(), ProviderError> {
        each!(self, p => p.route_cohort(op, cohort).await)
    }
    async fn stop_instances(
        &self,
        op: &Op<'_>,
        slot: Slot,
        n: usize,
    ) -> Result<Vec<String>, ProviderError> {
        each!(self, p => p.stop_instances(op, slot, n).await)
    }
    async fn remove(&self, op: &Op<'_>, slot: Slot) -> Result<(), ProviderError> {
        each!(self, p => p.remove(op, slot).await)
    }
    async fn down(&self) -> Result<(), ProviderError> {
        each!(self, p => p.down().await)
    }
}

impl Platform {
    /// Take over fields someone else changed since copilot wrote them,
    /// where the platform tracks who owns what (Kubernetes' server-side
    /// apply), instead of refusing. Elsewhere there is nothing to force.
    pub fn force_conflicts(&mut self) {
        #[cfg(feature = "kubernetes")]
        if let Platform::Kubernetes(p) = self {
            p.force_conflicts();
        }
    }
}

/// What a deploy of `release` into arena `a` applies, where the provider
/// applies objects copilot builds itself (Kubernetes): the documents of a
/// YAML file, secret values left out. `None` for other providers.
pub fn manifests(a: &Arena, release: &ReleaseSpec) -> Option<Result<String, ProviderError>> {
    if a.provider.kind != ProviderKind::Kubernetes {
        return None;
    }
    Some(settings_of::<copilot_provider_kubernetes::KubernetesSettings>(a).map(|s| {
        let m = copilot_provider_kubernetes::manifest::Manifests {
            arena: a.deploys_into().to_string(),
            s: s.clone(),
            instances: a.provider.instances.max(1),
        };
        let deadline = a.provider.ready_timeout.as_std().as_secs().max(1);
        let mut out = format!(
            "# What `copilot deploy {}` applies for {} into the blue colour (green is the same\n\
             # with `-green`), by server-side apply: the Deployment under field manager\n\
             # `copilot`, its replica count under `copilot-scale`. Secret values are resolved\n\
             # at deploy and never written here.\n",
            a.name, release.version
        );
        for doc in m.all("render", Slot::Blue, release, deadline, |_| String::new()) {
            out.push_str("---\n");
            out.push_str(&serde_json::to_string_pretty(&doc).expect("a manifest serializes"));
            out.push('\n');
        }
        out
    }))
}

/// The settings of arena `a` as its provider's type.
fn settings_of<T: 'static>(a: &Arena) -> Result<&T, ProviderError> {
    a.provider.settings.get::<T>().ok_or_else(|| {
        ProviderError::failed(
            format!("read the {} settings of {}", a.provider.kind, a.name),
            "they were not checked by that provider's rules",
        )
    })
}

/// The provider of arena `a`, built from its typed settings. `root` is the
/// project (the local provider keeps its state there).
pub fn open(root: &Path, a: &Arena) -> Result<Platform, ProviderError> {
    let arena = a.deploys_into();
    match a.provider.kind {
        ProviderKind::Local => {
            let s = settings_of::<copilot_provider_local::LocalSettings>(a)?;
            Ok(Platform::Local(copilot_provider_local::LocalProvider::new(
                root, arena, s.port,
            )?))
        }
        #[cfg(feature = "fly")]
        ProviderKind::Fly => Ok(Platform::Fly(copilot_provider_fly::FlyProvider::from_env(
            arena,
            settings_of(a)?,
            a.provider.instances,
            a.strategy.kind,
        )?)),
        #[cfg(feature = "ecs")]
        ProviderKind::Ecs => Ok(Platform::Ecs(Box::new(
            copilot_provider_ecs::EcsProvider::new(root, a, settings_of(a)?),
        ))),
        #[cfg(feature = "render")]
        ProviderKind::Render => Ok(Platform::Render(
            copilot_provider_render::RenderProvider::from_env(
                arena,
                settings_of(a)?,
                a.provider.instances,
            )?,
        )),
        #[cfg(feature = "kubernetes")]
        ProviderKind::Kubernetes => Ok(Platform::Kubernetes(
            copilot_provider_kubernetes::KubernetesProvider::new(
                arena,
                settings_of(a)?,
                a.provider.instances,
            ),
        )),
        #[allow(unreachable_patterns)]
        _ => Err(ProviderError::unavailable(
            format!("drive the {} provider", a.provider.kind),
            format!(
                "this copilot was built without the {} provider",
                a.provider.kind
            ),
        )
        .with_hint(format!(
            "build copilot with `--features {}` (all providers are in the default build)",
            a.provider.kind
        ))),
    }
}

/// Each provider's settings, as JSON Schemas of what its `provider:`
/// section may hold (beside `kind`, `instances` and `ready_timeout`).
pub fn schemas() -> Vec<(ProviderKind, schemars::Schema)> {
    vec![
        (
            ProviderKind::Local,
            schemars::schema_for!(copilot_provider_local::Section),
        ),
        (
            ProviderKind::Fly,
            schemars::schema_for!(copilot_provider_fly::Section),
        ),
        (
            ProviderKind::Render,
            schemars::schema_for!(copilot_provider_render::Section),
        ),
        (
            ProviderKind::Ecs,
            schemars::schema_for!(copilot_provider_ecs::Section),
        ),
        (
            ProviderKind::Kubernetes,
            schemars::schema_for!(copilot_provider_kubernetes::Section),
        ),
    ]
}

/// Each provider's rules for its settings.
pub fn settings(input: &SettingsInput<'_>, diags: &mut Diagnostics) -> Option<ProviderSettings> {
    match input.section.kind.value {
        ProviderKind::Local => copilot_provider_local::settings(input, diags),
        ProviderKind::Fly => copilot_provider_fly::settings(input, diags),
        ProviderKind::Render => copilot_provider_render::settings(input, diags),
        ProviderKind::Ecs => copilot_provider_ecs::settings(input, diags),
        ProviderKind::Kubernetes => copilot_provider_kubernetes::settings(input, diags),
    }
}

/// What definitions are checked against.
pub static RULES: ProviderRules = ProviderRules {
    capabilities,
    settings,
    schemas,
};

/// What a rollout on a provider that swaps by itself means, said where
/// the steps are shown (`plan`, `arenas show`); `None` for the others.
pub fn swap_note(kind: ProviderKind) -> Option<String> {
    capabilities(kind).live_on_ready.then(|| {
        format!(
            "{kind} swaps to the new release once it passes {kind}'s own health check (the previous one serves until then); \
             there is no idle colour to test first: after gates and analysis run once the new release is live, \
             and a failure goes back through {kind}'s rollback"
        )
    })
}

/// What the provider of `kind` can do.
pub fn capabilities(kind: ProviderKind) -> &'static Capabilities {
    match kind {
        ProviderKind::Local => &copilot_provider_local::CAPABILITIES,
        ProviderKind::Fly => &copilot_provider_fly::CAPABILITIES,
        ProviderKind::Render => &copilot_provider_render::CAPABILITIES,
        ProviderKind::Ecs => &copilot_provider_ecs::CAPABILITIES,
        ProviderKind::Kubernetes => &copilot_provider_kubernetes::CAPABILITIES,
    }
}

/// What a preview instance is made with beyond its arena's settings, kept
/// in the ledger so that `preview up` run again updates the same instance:
/// the local router's port (a free one, taken once).
pub fn preview_settings(a: &Arena, kept: Option<&serde_json::Value>) -> serde_json::Value {
    match (a.provider.kind, kept) {
        (ProviderKind::Local, Some(kept)) if kept["port"].is_u64() => kept.clone(),
        (ProviderKind::Local, _) => {
            let port = std::net::TcpListener::bind(("127.0.0.1", 0))
                .and_then(|l| l.local_addr())
                .map_or(0, |a| a.port());
            serde_json::json!({ "port": port })
        }
        _ => serde_json::json!({}),
    }
}

/// The instance of preview arena `a` for pull request `pr`: the arena named
/// `<arena>-pr-<pr>`, its provider pointed at the preview's own resources
/// (its own router port on the local provider, a namespace of its own on
/// Kubernetes), `{pr}`, `{name}` (the platform name), `{arena}` (the
/// instance's name) and `{port}` (its local port) replaced in its variables,
/// and the seed feeds handed to the service in `COPILOT_SEED_FEEDS`.
pub fn preview_instance(
    root: &Path,
    a: &Arena,
    pr: u64,
    extra: &serde_json::Value,
) -> Result<Arena, ProviderError> {
    let Some(preview) = &a.preview else {
        return Err(ProviderError::failed(
            format!("make a preview of {}", a.name),
            "it is not a preview arena (`tier: preview` with a `preview:` section)",
        ));
    };
    let name = preview.name(pr);
    let mut out = a.clone();
    out.name = format!("{}-pr-{pr}", a.name);
    let port = extra["port"].as_u64().map(|p| p.to_string());
    let fill = |text: &str| {
        let text = text
            .replace("{pr}", &pr.to_string())
            .replace("{name}", &name)
            .replace("{arena}", &out.name);
        match &port {
            Some(p) => text.replace("{port}", p),
            None => text,
        }
    };
    for value in out.env.values.values_mut() {
        *value = fill(value);
    }
    if !preview.seed.is_empty() {
        let feeds: Vec<String> = preview
            .seed
            .iter()
            .map(|(source, location)| {
                let remote = location.starts_with("http://") || location.starts_with("https://");
                let location = if remote {
                    location.clone()
                } else {
                    root.join(location).display().to_string()
                };
                format!("{source}={location}")
            })
            .collect();
        out.env
            .values
            .insert("COPILOT_SEED_FEEDS".into(), feeds.join(","));
    }
    out.provider.settings = match a.provider.kind {
        ProviderKind::Local => {
            let mut s = settings_of::<copilot_provider_local::LocalSettings>(a)?.clone();
            s.port = extra["port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| {
                    ProviderError::failed(
                        format!("make the preview {}", out.name),
                        "no free port was recorded for its router",
                    )
                })?;
            ProviderSettings::new(s)
        }
        #[cfg(feature = "kubernetes")]
        ProviderKind::Kubernetes => {
            let mut s = settings_of::<copilot_provider_kubernetes::KubernetesSettings>(a)?.clone();
            s.namespace = name.clone();
            s.own_namespace = true;
            s.url = s.url.as_deref().map(fill);
            for url in s.colour_urls.values_mut() {
                *url = fill(url);
            }
            ProviderSettings::new(s)
        }
        #[cfg(feature = "render")]
        ProviderKind::Render => {
            let mut s = settings_of::<copilot_provider_render::RenderSettings>(a)?.clone();
            s.preview_of = Some(s.service.clone());
            s.service = name.clone();
            s.url = s.url.as_deref().map(fill);
            // The preview runs no copy of the base service's worker.
            s.worker = None;
            ProviderSettings::new(s)
        }
        other => {
            return Err(ProviderError::failed(
                format!("make the preview {}", out.name),
                format!("previews on the {other} provider are not built yet"),
            )
            .with_hint("previews run on the local, Render and Kubernetes providers"));
        }
    };
    Ok(out)
}

/// What is left of preview instance `a` once its provider stopped it and
/// that only copilot made: the local provider's folder (its logs, state,
/// and whatever the arena's variables put there).
pub fn preview_removed(root: &Path, a: &Arena) -> std::io::Result<()> {
    if a.provider.kind == ProviderKind::Local {
        let dir = copilot_provider_local::state_dir(root, &a.name);
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_provider_lists_the_settings_its_section_reads() {
        for (kind, schema) in schemas() {
            let schema = serde_json::to_value(schema).unwrap();
            let mut read: Vec<&str> = schema["properties"]
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            let mut listed = capabilities(kind).settings.to_vec();
            read.sort_unstable();
            listed.sort_unstable();
            assert_eq!(read, listed, "{kind}");
            for required in capabilities(kind).required_settings {
                assert!(listed.contains(required), "{kind}: {required}");
            }
        }
    }
}
