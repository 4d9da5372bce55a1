//! Turning parsed definition files into a checked [`Project`].
//!
//! Every check reports into one [`Diagnostics`] and carries on, so a single
//! run shows every problem of every file.

use std::collections::{BTreeMap, BTreeSet};

use super::def::{
    ArenaFile, At, FlagSection, GateFileAny, Loc, MetricSection, ProviderSection, Scalar,
    StrategySection,
};
use super::diag::{Diagnostics, SourceFile, did_you_mean};
use super::duration::Duration;
use super::window::{AllowWindow, Freeze, Zone, parse_zone};
use crate::model::*;

/// What the providers layer says of each provider: what it can do, and its
/// own rules for its settings (`providers::RULES`). Definitions are checked
/// against them without this layer knowing any platform.
pub struct ProviderRules {
    pub capabilities: fn(ProviderKind) -> &'static Capabilities,
    /// Check the `provider:` section of an arena (settings common to all
    /// providers and unknown names are checked before) and build its settings.
    pub settings: fn(&SettingsInput<'_>, &mut Diagnostics) -> Option<ProviderSettings>,
    /// Each provider's settings as a JSON Schema (the arena schema has one
    /// branch per `kind`).
    pub schemas: fn() -> Vec<(ProviderKind, schemars::Schema)>,
}

impl ProviderRules {
    pub fn capabilities(&self, kind: ProviderKind) -> &'static Capabilities {
        (self.capabilities)(kind)
    }
}

/// An arena file read for its `provider:` section only, as a provider's
/// own type (other sections are left to `validate`).
#[derive(serde::Deserialize)]
struct ProviderOf<S> {
    provider: S,
}

/// What a provider's rules see of an arena.
pub struct SettingsInput<'a> {
    pub file: &'a SourceFile,
    pub section: &'a ProviderSection,
    /// Where `provider:` is.
    pub at: Loc,
    /// The arena's strategy, when it names one.
    pub strategy: Option<StrategyKind>,
    pub instances: u32,
}

impl SettingsInput<'_> {
    /// The `provider:` section as the provider's own type `S`, each value
    /// with where it is written (`At`); a value of the wrong shape is said
    /// at its place. `S` names the provider's settings only: `kind`,
    /// `instances` and `ready_timeout` are read (and unknown names refused)
    /// before the provider's rules run.
    pub fn section<S: serde::de::DeserializeOwned>(&self, diags: &mut Diagnostics) -> Option<S> {
        super::load::parse_yaml::<ProviderOf<S>>(self.file, diags).map(|p| p.provider)
    }
}

/// The rules [`check`] applies: supplied by the providers layer.
pub type CapabilitiesFn = &'static ProviderRules;

/// Parsed files of a project, before cross-checking.
pub struct Parsed<'a> {
    pub arenas: Vec<(&'a SourceFile, ArenaFile)>,
    pub gates: Vec<(&'a SourceFile, GateFileAny)>,
    /// Names of files that failed to parse, so references to them do not cascade.
    pub unparsed_arenas: BTreeSet<String>,
    pub unparsed_gates: BTreeSet<String>,
}

/// Names look like `canary`, `queue-health`, `pr-42`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_uppercase() || c == '_')
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// Variable names that hold credentials and so must never be written inline.
pub fn looks_secret(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    [
        "TOKEN",
        "SECRET",
        "PASSWORD",
        "PASSWD",
        "API_KEY",
        "PRIVATE",
        "CREDENTIAL",
    ]
    .iter()
    .any(|s| n.contains(s))
        || n.ends_with("_KEY")
}

/// Whether a URL carries a password in its userinfo (`scheme://user:pass@host`).
/// Why a plain variable must not be written where copilot keeps it in
/// clear (`env.values`, a release's `--env`): a secret-like name, or a URL
/// with a password. The value itself is never part of the answer.
pub fn inline_secret(name: &str, value: &str) -> Option<String> {
    if looks_secret(name) {
        Some(format!("`{name}` looks like a secret"))
    } else if url_has_password(value) {
        Some(format!("`{name}` has a password written inline in its URL"))
    } else {
        None
    }
}

/// The longest release version.
pub const MAX_VERSION_LEN: usize = 128;

/// A release version: 1 to 128 characters of letters, digits, `.`, `_`,
/// `+` and `-`, starting with a letter or digit, without `..` (a version
/// names folders and log files, and is shown everywhere).
pub fn check_version(version: &str) -> Result<(), String> {
    let shown = super::diag::clip(version, 40);
    if version.is_empty() || version.chars().count() > MAX_VERSION_LEN {
        return Err(format!(
            "a version is 1 to {MAX_VERSION_LEN} characters; `{shown}` is {}",
            version.chars().count()
        ));
    }
    if !version.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!(
            "version `{}` must start with a letter or a digit",
            shown.escape_debug()
        ));
    }
    if let Some(c) = version
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-')))
    {
        return Err(format!(
            "version `{}` holds `{}`: use letters, digits, `.`, `_`, `+` and `-`",
            shown.escape_debug(),
            c.escape_debug()
        ));
    }
    if version.contains("..") {
        return Err(format!("version `{shown}` holds `..`"));
    }
    Ok(())
}

pub fn url_has_password(value: &str) -> bool {
    let Some((_, rest)) = value.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    match authority.rsplit_once('@') {
        Some((userinfo, _)) => userinfo.split_once(':').is_some_and(|(_, p)| !p.is_empty()),
        None => false,
    }
}

/// Parse a secret reference such as `env:CANARY_SHOPIFY_ACCESS_TOKEN`.
pub fn parse_secret_ref(text: &str) -> Option<SecretRef> {
    let (store, key) = text.split_once(':')?;
    let store: SecretStore = store.parse().ok()?;
    let key = key.trim();
    if key.is_empty() || key.contains(char::is_whitespace) {
        return None;
    }
    if store == SecretStore::Env && !valid_env_name(key) {
        return None;
    }
    Some(SecretRef {
        store,
        key: key.to_string(),
    })
}

const SECRET_REF_HINT: &str = "write a reference instead: env:NAME, file:PATH, fly:NAME, render:NAME, aws-sm:ARN, aws-ssm:NAME, k8s:SECRET/KEY or vault:PATH#KEY";

fn duration(
    file: &SourceFile,
    at: &At<String>,
    what: &str,
    diags: &mut Diagnostics,
) -> Option<Duration> {
    match at.value.parse::<Duration>() {
        Ok(d) => Some(d),
        Err(e) => {
            diags.error(file, at.loc, format!("{what}: {e}"), e.hint());
            None
        }
    }
}

fn opt_duration(
    file: &SourceFile,
    at: &Option<At<String>>,
    what: &str,
    diags: &mut Diagnostics,
) -> Option<Duration> {
    at.as_ref().and_then(|a| duration(file, a, what, diags))
}

/// Check every parsed file and build the project.
pub fn check(parsed: &Parsed<'_>, caps: CapabilitiesFn, diags: &mut Diagnostics) -> Project {
    let mut project = Project::default();

    // Gates first: arenas refer to them.
    for (file, g) in &parsed.gates {
        check_file_name(file, &g.name, diags);
        if g.kind.value == GateKind::Command
            && g.params["run"].as_array().is_none_or(|r| r.is_empty())
        {
            diags.error(
                file,
                g.kind.loc,
                "a command gate names no program",
                "add `params: { run: [PROGRAM, ARG...] }`, e.g. `run: [npm, test]`",
            );
        }
        let timeout =
            opt_duration(file, &g.timeout, "timeout", diags).unwrap_or(Duration::from_secs(300));
        project.gates.insert(
            g.name.value.clone(),
            Gate {
                name: g.name.value.clone(),
                kind: g.kind.value,
                description: g.description.clone(),
                timeout,
                severity: g.severity.unwrap_or(GateSeverity::Block),
                params: g.params.clone(),
            },
        );
    }
    let gate_names: BTreeSet<&str> = project
        .gates
        .keys()
        .map(String::as_str)
        .chain(parsed.unparsed_gates.iter().map(String::as_str))
        .collect();
    let arena_names: BTreeSet<&str> = parsed
        .arenas
        .iter()
        .map(|(_, a)| a.name.value.as_str())
        .chain(parsed.unparsed_arenas.iter().map(String::as_str))
        .collect();

    // Arenas that run on their own provider, then lanes that borrow their target's.
    let mut lanes = Vec::new();
    for (file, a) in &parsed.arenas {
        check_file_name(file, &a.name, diags);
        if a.tier.value == Tier::Hotfix {
            lanes.push((*file, a));
            continue;
        }
        if let Some(t) = &a.target {
            diags.error(
                file,
                t.loc,
                "`target` is only for hotfix lanes",
                "remove it, or set `tier: hotfix`",
            );
        }
        let Some(provider_at) = &a.provider else {
            diags.error(
                file,
                a.name.loc,
                format!("arena `{}` has no `provider`", a.name.value),
                "add `provider:` with `kind: local|fly|render|ecs|kubernetes`",
            );
            continue;
        };
        let strategy_kind = a.strategy.as_ref().map(|s| s.value.kind.value);
        let Some(provider) = check_provider(file, provider_at, strategy_kind, caps, diags) else {
            continue;
        };
        let strategy = match &a.strategy {
            Some(s) => check_strategy(file, s, &provider, &a.cohorts, caps, diags),
            None => {
                diags.error(
                    file,
                    a.name.loc,
                    format!("arena `{}` has no `strategy`", a.name.value),
                    "add `strategy:` with `kind: rolling|immediate|blue-green|canary`",
                );
                None
            }
        };
        let Some(strategy) = strategy else { continue };
        if let Some(arena) = check_arena(file, a, provider, strategy, &gate_names, diags) {
            project.arenas.insert(arena.name.clone(), arena);
        }
    }
    for (file, a) in lanes {
        let Some(target) = &a.target else {
            diags.error(
                file,
                a.tier.loc,
                format!("hotfix lane `{}` has no `target`", a.name.value),
                "add `target:` naming the arena the lane deploys into, e.g. `target: production`",
            );
            continue;
        };
        if let Some(p) = &a.provider {
            diags.error(
                file,
                p.loc,
                "a hotfix lane takes its provider from its target",
                "remove `provider:`",
            );
        }
        let Some(base) = project.arenas.get(&target.value).cloned() else {
            if !arena_names.contains(target.value.as_str()) {
                diags.error(
                    file,
                    target.loc,
                    format!("target arena `{}` does not exist", target.value),
                    suggest_name(&target.value, &arena_names),
                );
            }
            continue;
        };
        let strategy = match &a.strategy {
            Some(s) => check_strategy(file, s, &base.provider, &a.cohorts, caps, diags),
            None => Some(base.strategy.clone()),
        };
        let Some(strategy) = strategy else { continue };
        if let Some(mut arena) =
            check_arena(file, a, base.provider.clone(), strategy, &gate_names, diags)
        {
            arena.target = Some(target.value.clone());
            // A lane that declares no environment or flags runs with its target's.
            if arena.env.required.is_empty()
                && arena.env.values.is_empty()
                && arena.env.secrets.is_empty()
            {
                arena.env = base.env.clone();
            }
            if arena.flags.is_empty() && arena.flag_cohorts.is_empty() {
                arena.flags = base.flags.clone();
                arena.flag_cohorts = base.flag_cohorts.clone();
                arena.cohorts = base.cohorts.clone();
            }
            project.arenas.insert(arena.name.clone(), arena);
        }
    }

    check_promotion_paths(parsed, &arena_names, diags);
    project
}

fn suggest_name(word: &str, names: &BTreeSet<&str>) -> String {
    did_you_mean(word, names.iter().copied()).unwrap_or_else(|| {
        format!(
            "known: {}",
            names.iter().copied().collect::<Vec<_>>().join(", ")
        )
    })
}

fn check_file_name(file: &SourceFile, name: &At<String>, diags: &mut Diagnostics) {
    if !valid_name(&name.value) {
        diags.error(
            file,
            name.loc,
            format!("`{}` is not a valid name", name.value),
            "use lowercase letters, digits and dashes (at most 63)",
        );
    } else if name.value != file.stem() {
        diags.error(
            file,
            name.loc,
            format!(
                "name `{}` does not match the file name `{}`",
                name.value,
                file.stem()
            ),
            format!(
                "rename the file to `{}.yaml` or the name to `{}`",
                name.value,
                file.stem()
            ),
        );
    }
}

fn check_provider(
    file: &SourceFile,
    at: &At<ProviderSection>,
    strategy: Option<StrategyKind>,
    caps: CapabilitiesFn,
    diags: &mut Diagnostics,
) -> Option<Provider> {
    let p = &at.value;
    let kind = p.kind.value;
    let cap = caps.capabilities(kind);
    let mut ok = true;
    for (name, loc) in p.present_settings() {
        if !cap.settings.contains(&name) {
            ok = false;
            let takes = format!("{kind} takes: {}", cap.settings.join(", "));
            diags.error(
                file,
                loc,
                format!("`{name}` is not a setting of the {kind} provider"),
                match super::diag::did_you_mean(name, cap.settings.iter().copied()) {
                    Some(hint) => format!("{hint} ({takes})"),
                    None => takes,
                },
            );
        }
    }
    for required in cap.required_settings {
        if !p.present_settings().any(|(n, _)| n == *required) {
            ok = false;
            diags.error(
                file,
                at.loc,
                format!("the {kind} provider needs `{required}`"),
                format!("add `{required}:` under `provider:`"),
            );
        }
    }
    let instances = match &p.instances {
        Some(n) if n.value == 0 => {
            ok = false;
            diags.error(file, n.loc, "`instances` must be at least 1", None);
            1
        }
        Some(n) => n.value,
        None => 1,
    };
    let default_timeout = if kind == ProviderKind::Local {
        Duration::from_secs(30)
    } else {
        Duration::from_secs(300)
    };
    let ready_timeout = match &p.ready_timeout {
        Some(t) => match duration(file, t, "ready_timeout", diags) {
            Some(d) if d.as_std().is_zero() => {
                ok = false;
                diags.error(file, t.loc, "`ready_timeout` must be longer than 0s", None);
                default_timeout
            }
            Some(d) => d,
            None => {
                ok = false;
                default_timeout
            }
        },
        None => default_timeout,
    };
    if !ok {
        return None;
    }
    let input = SettingsInput {
        file,
        section: p,
        at: at.loc,
        strategy,
        instances,
    };
    let settings = (caps.settings)(&input, diags)?;
    Some(Provider {
        kind,
        settings,
        instances,
        ready_timeout,
        templates: cap.templates,
    })
}

fn check_strategy(
    file: &SourceFile,
    at: &At<StrategySection>,
    provider: &Provider,
    cohorts: &BTreeMap<String, At<super::def::NamedCohortSection>>,
    caps: CapabilitiesFn,
    diags: &mut Diagnostics,
) -> Option<Strategy> {
    let s = &at.value;
    let kind = s.kind.value;
    let cap = caps.capabilities(provider.kind);
    let mut ok = true;
    if !cap.supports(kind) {
        ok = false;
        diags.error(
            file,
            s.kind.loc,
            format!("the {} provider cannot do a {kind} rollout", provider.kind),
            format!(
                "{} supports: {}",
                provider.kind,
                cap.strategies
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }
    let mut steps = Vec::new();
    match kind {
        StrategyKind::Rolling | StrategyKind::Immediate => {
            if let Some(first) = s.steps.first() {
                ok = false;
                diags.error(
                    file,
                    first.loc,
                    format!("a {kind} rollout has no traffic steps"),
                    "remove `steps:`, or use `kind: blue-green` or `kind: canary`",
                );
            }
        }
        StrategyKind::BlueGreen | StrategyKind::Canary => {
            let mut last = 0;
            for step in &s.steps {
                let bake = opt_duration(file, &step.value.bake, "bake", diags);
                let (w, c) = (&step.value.weight, &step.value.cohort);
                let w = match (w, c) {
                    (Some(_), Some(_)) | (None, None) => {
                        ok = false;
                        diags.error(
                            file,
                            step.loc,
                            "a traffic step has either a `weight` or a `cohort`",
                            "e.g. `{ weight: 50, bake: 10m }` or `{ cohort: pilot, bake: 1h }`",
                        );
                        continue;
                    }
                    (None, Some(c)) => {
                        if !cohorts.contains_key(&c.value) {
                            ok = false;
                            let known: Vec<&str> = cohorts.keys().map(String::as_str).collect();
                            diags.error(
                                file,
                                c.loc,
                                format!("cohort `{}` is not defined", c.value),
                                if known.is_empty() {
                                    "define it under `cohorts:`, e.g. `cohorts: { pilot: { shops: [a.myshopify.com] } }`".to_string()
                                } else {
                                    format!("defined: {}", known.join(", "))
                                },
                            );
                        }
                        if !cap.routes_by_header {
                            ok = false;
                            diags.error(
                                file,
                                c.loc,
                                format!(
                                    "the {} provider cannot route a cohort's requests by header",
                                    provider.kind
                                ),
                                "cohort steps run on providers that route by `X-Shopify-Shop-Domain` (local, ecs); use weight steps here",
                            );
                        }
                        if last > 0 {
                            ok = false;
                            diags.error(
                                file,
                                c.loc,
                                "a cohort step comes after a weight step",
                                "put cohort steps first: the cohort, then percentages of everyone",
                            );
                        }
                        steps.push(TrafficStep {
                            weight: 0,
                            bake,
                            cohort: Some(c.value.clone()),
                        });
                        continue;
                    }
                    (Some(w), None) => w,
                };
                let loc = w.loc;
                let w = w.value;
                if w == 0 || w > 100 {
                    ok = false;
                    diags.error(
                        file,
                        loc,
                        format!("weight {w} is not a percentage from 1 to 100"),
                        None,
                    );
                } else if w <= last {
                    ok = false;
                    diags.error(
                        file,
                        loc,
                        format!("weight {w} does not increase (previous step: {last})"),
                        "list traffic steps in increasing order, ending at 100",
                    );
                }
                last = w.max(last);
                steps.push(TrafficStep {
                    weight: u8::try_from(w.min(100)).unwrap_or(100),
                    bake,
                    cohort: None,
                });
            }
            match s.steps.last() {
                None if kind == StrategyKind::Canary => {
                    ok = false;
                    diags.error(
                        file,
                        s.kind.loc,
                        "a canary rollout needs traffic steps",
                        "add e.g. `steps: [{ weight: 10, bake: 5m }, { weight: 50, bake: 10m }, { weight: 100 }]`",
                    );
                }
                None => steps.push(TrafficStep {
                    weight: 100,
                    bake: None,
                    cohort: None,
                }),
                Some(l) if l.value.weight.as_ref().map(|w| w.value) != Some(100) => {
                    ok = false;
                    diags.error(
                        file,
                        l.value.weight.as_ref().map_or(l.loc, |w| w.loc),
                        "the last traffic step must reach weight 100",
                        None,
                    );
                }
                Some(_) => {}
            }
            let partial = steps
                .iter()
                .find(|st| st.weight < 100 && st.cohort.is_none());
            if let (Some(_), TrafficSplit::None) = (partial, cap.traffic_split) {
                ok = false;
                let loc = s.steps.first().map_or(s.kind.loc, |f| f.loc);
                diags.error(
                    file,
                    loc,
                    format!("the {} provider cannot split traffic by weight", provider.kind),
                    format!(
                        "use a single `{{ weight: 100 }}` step on {}, or a provider with weighted routing (local, ecs, fly, kubernetes)",
                        provider.kind
                    ),
                );
            }
        }
    }
    if cap.traffic_split == TrafficSplit::ByInstanceCount {
        let n = provider.instances;
        for (step, raw) in steps.iter().zip(&s.steps) {
            let Some(weight) = &raw.value.weight else {
                continue;
            };
            let wanted = f64::from(step.weight);
            let moved = (wanted * f64::from(n) / 100.0).round();
            let actual = moved * 100.0 / f64::from(n);
            if step.weight < 100 && (actual - wanted).abs() >= 1.0 {
                diags.warning(
                    file,
                    weight.loc,
                    format!(
                        "{} splits traffic by instance count: with {n} instance(s), {}% becomes {actual:.0}%",
                        provider.kind, step.weight
                    ),
                    "choose weights that are multiples of 100 / instances, or change `instances`",
                );
            }
        }
    }
    let analysis = match &s.analysis {
        Some(a) => check_analysis(file, a, diags).filter(|analysis| {
            let mut ok = true;
            for (m, def) in analysis.metrics.iter().zip(&a.value.metrics) {
                if m.source == MetricSource::Cloudwatch && provider.kind != ProviderKind::Ecs {
                    ok = false;
                    diags.error(
                        file,
                        def.loc,
                        format!(
                            "metric `{}` reads CloudWatch, which has the load balancer's metrics of ECS arenas only",
                            m.name
                        ),
                        format!(
                            "on {} use `source: probe`, `metrics` or `prometheus`",
                            provider.kind
                        ),
                    );
                }
            }
            ok
        }),
        None => None,
    };
    if s.analysis.is_some() && analysis.is_none() {
        ok = false;
    }
    ok.then_some(Strategy {
        kind,
        steps,
        analysis,
    })
}

const KNOWN_METRICS: &[&str] = &[
    "error_rate",
    "p50_latency",
    "p95_latency",
    "p99_latency",
    "health",
];

fn check_analysis(
    file: &SourceFile,
    at: &At<super::def::AnalysisSection>,
    diags: &mut Diagnostics,
) -> Option<Analysis> {
    let a = &at.value;
    let before = diags.items.len();
    let interval =
        opt_duration(file, &a.interval, "interval", diags).unwrap_or(Duration::from_secs(30));
    let mut metrics = Vec::new();
    for m in &a.metrics {
        if let Some(metric) = check_metric(file, a, m, diags) {
            metrics.push(metric);
        }
    }
    if let Some(m) = metrics
        .iter()
        .zip(&a.metrics)
        .find(|(m, _)| m.source == MetricSource::Prometheus)
        .filter(|_| a.prometheus.is_none())
    {
        diags.error(
            file,
            m.1.loc,
            format!(
                "metric `{}` reads Prometheus but the analysis names no server",
                m.0.name
            ),
            "add `prometheus: env:PROMETHEUS_URL` (or a URL) under `analysis`",
        );
    }
    if let Some(p) = &a.prometheus
        && url_has_password(&p.value)
    {
        diags.error_redacted(
            file,
            p.loc,
            "`prometheus` has a password written inline in its URL",
            "name a variable instead: `prometheus: env:PROMETHEUS_URL` (kept in `env.secrets` or the environment)",
        );
    }
    (diags.items.len() == before).then_some(Analysis {
        interval,
        min_samples: a.min_samples.unwrap_or(50),
        prometheus: a.prometheus.as_ref().map(|p| p.value.clone()),
        metrics,
    })
}

fn check_metric(
    file: &SourceFile,
    analysis: &super::def::AnalysisSection,
    at: &At<MetricSection>,
    diags: &mut Diagnostics,
) -> Option<Metric> {
    let m = &at.value;
    let name = m.name.value.as_str();
    let source = m.source.unwrap_or(MetricSource::Probe);
    let window = opt_duration(file, &m.window, "window", diags);
    let severity = match &m.severity {
        None => 2,
        Some(sev) if (1..=3).contains(&sev.value) => sev.value,
        Some(sev) => {
            diags.error(
                file,
                sev.loc,
                format!("severity {} is not one of 1, 2, 3", sev.value),
                "1: roll back at once (site down), 2: decide within 15 minutes, 3: fix in the next deploy",
            );
            return None;
        }
    };
    if source == MetricSource::Cloudwatch
        && (m.query.is_some()
            || !matches!(
                name,
                "error_rate" | "p50_latency" | "p95_latency" | "p99_latency"
            ))
    {
        diags.error(
            file,
            at.loc,
            format!("CloudWatch has no `{name}` copilot can read"),
            "with `source: cloudwatch` use error_rate (HTTPCode_Target_5XX_Count / RequestCount) or p50/p95/p99_latency (TargetResponseTime), without `query`",
        );
        return None;
    }
    if name == "health" && source != MetricSource::Probe {
        diags.error(
            file,
            at.loc,
            "`health` is measured by copilot's own checks",
            "drop `source`, or give the metric another name and a `query`",
        );
        return None;
    }
    if let (MetricSource::Metrics, Some(q)) = (source, &m.query)
        && let Err(e) = q.value.parse::<crate::promql::Expr>()
    {
        diags.error(
            file,
            q.loc,
            format!("query: {e}"),
            "a selector such as `name{label=\"v\"}`, a ratio `a{..} / b{..}`, or `histogram_quantile(0.95, name{..})`",
        );
        return None;
    }
    let limit = if name == "health" {
        if m.max.is_some() {
            diags.error(
                file,
                at.loc,
                "`health` counts consecutive failures, it has no `max`",
                "use `consecutive_failures: 3`",
            );
            return None;
        }
        MetricLimit::ConsecutiveFailures {
            count: m.consecutive_failures.unwrap_or(3),
        }
    } else {
        if source == MetricSource::Prometheus && m.query.is_none() {
            diags.error(
                file,
                at.loc,
                format!("metric `{name}` reads Prometheus but has no `query`"),
                "write the PromQL; `{arena}`, `{slot}`, `{release}` and `{window}` are filled in",
            );
            return None;
        }
        if !KNOWN_METRICS.contains(&name) && m.query.is_none() {
            diags.error(
                file,
                m.name.loc,
                format!("unknown metric `{name}` without a `query`"),
                did_you_mean(name, KNOWN_METRICS.iter().copied())
                    .unwrap_or_else(|| "built-in metrics: error_rate, p50_latency, p95_latency, p99_latency, health; others need a `query` (source `metrics` or `prometheus`)".into()),
            );
            return None;
        }
        let Some(max) = &m.max else {
            diags.error(
                file,
                at.loc,
                format!("metric `{name}` has no `max`"),
                "add `max:` (a ratio such as 0.05, or a latency such as 3s)",
            );
            return None;
        };
        match (&max.value, name.ends_with("_latency")) {
            (Scalar::Text(t), true) => match t.parse::<Duration>() {
                Ok(d) => MetricLimit::MaxDuration { max: d },
                Err(e) => {
                    diags.error(file, max.loc, format!("max: {e}"), e.hint());
                    return None;
                }
            },
            (Scalar::Int(_) | Scalar::Float(_), true) => {
                diags.error(
                    file,
                    max.loc,
                    format!("`{name}` needs a duration"),
                    "write the unit, e.g. `max: 3s` or `max: 800ms`",
                );
                return None;
            }
            (Scalar::Int(i), false) => MetricLimit::Max { max: *i as f64 },
            (Scalar::Float(x), false) => {
                if name == "error_rate" && !(0.0..=1.0).contains(x) {
                    diags.error(
                        file,
                        max.loc,
                        format!("error_rate max {x} is not a ratio"),
                        "write a ratio from 0 to 1, e.g. `0.05` for 5%",
                    );
                    return None;
                }
                MetricLimit::Max { max: *x }
            }
            (other, false) => {
                diags.error(file, max.loc, format!("`{other}` is not a number"), None);
                return None;
            }
            (Scalar::Bool(_), true) => {
                diags.error(
                    file,
                    max.loc,
                    format!("`{name}` needs a duration"),
                    "e.g. `max: 3s`",
                );
                return None;
            }
        }
    };
    Some(Metric {
        name: name.to_string(),
        source,
        query: m.query.as_ref().map(|q| q.value.clone()),
        path: m.path.clone(),
        limit,
        window,
        on_fail: m.on_fail,
        dry_run: m.dry_run,
        failure_limit: m.failure_limit.or(analysis.failure_limit).unwrap_or(0),
        consecutive_error_limit: m
            .consecutive_error_limit
            .or(analysis.consecutive_error_limit)
            .unwrap_or(4),
        severity,
    })
}

fn check_arena(
    file: &SourceFile,
    a: &ArenaFile,
    provider: Provider,
    strategy: Strategy,
    gate_names: &BTreeSet<&str>,
    diags: &mut Diagnostics,
) -> Option<Arena> {
    let before = diags.error_count();
    let tier = a.tier.value;
    for (flag, v) in &a.flags {
        if let FlagSection::Cohort(c) = v
            && !a.cohorts.contains_key(&c.cohort.value)
        {
            diags.error(
                file,
                c.cohort.loc,
                format!("flag `{flag}` names cohort `{}`, which is not defined", c.cohort.value),
                "define it under `cohorts:`, e.g. `cohorts: { pilot: { shops: [a.myshopify.com] } }`",
            );
        }
    }
    for (name, c) in &a.cohorts {
        if c.value.shops.is_empty() {
            diags.error(
                file,
                c.loc,
                format!("cohort `{name}` has no shops"),
                "list its shops' domains: `shops: [a.myshopify.com]`",
            );
        }
        for shop in &c.value.shops {
            let host = &shop.value;
            let valid = !host.is_empty()
                && host.contains('.')
                && host.chars().all(|ch| {
                    ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '.'
                });
            if !valid {
                diags.error(
                    file,
                    shop.loc,
                    format!("`{host}` is not a shop domain"),
                    "write the shop's domain as Shopify sends it, lowercase: `acme.myshopify.com`",
                );
            }
        }
    }

    // Gates.
    let mut gates = PhaseGates::default();
    for (phase, list) in [
        (Phase::Before, &a.gates.before),
        (Phase::After, &a.gates.after),
    ] {
        let mut seen = BTreeSet::new();
        for g in list {
            if !gate_names.contains(g.value.as_str()) {
                diags.error(
                    file,
                    g.loc,
                    format!("gate `{}` does not exist", g.value),
                    suggest_name(&g.value, gate_names),
                );
            } else if !seen.insert(g.value.as_str()) {
                diags.error(
                    file,
                    g.loc,
                    format!("gate `{}` is listed twice in `{phase}`", g.value),
                    None,
                );
            }
            match phase {
                Phase::Before => gates.before.push(g.value.clone()),
                Phase::After => gates.after.push(g.value.clone()),
            }
        }
    }

    // Environment matrix.
    let mut env = EnvSpec::default();
    for r in &a.env.required {
        if !valid_env_name(&r.value) {
            diags.error(
                file,
                r.loc,
                format!("`{}` is not a valid variable name", r.value),
                "use UPPER_SNAKE_CASE",
            );
        }
        env.required.push(r.value.clone());
    }
    for (name, value) in &a.env.values {
        let text = value.value.to_string();
        if !valid_env_name(name) {
            diags.error(
                file,
                value.loc,
                format!("`{name}` is not a valid variable name"),
                "use UPPER_SNAKE_CASE",
            );
        }
        if looks_secret(name) {
            diags.error_redacted(
                file,
                value.loc,
                format!("secret `{name}` is written inline in `env.values`"),
                format!(
                    "move it to `env.secrets` as a reference, e.g. `{name}: env:{}_{name}`",
                    a.name.value.to_ascii_uppercase()
                ),
            );
            continue;
        }
        if url_has_password(&text) {
            diags.error_redacted(
                file,
                value.loc,
                format!("`{name}` has a password written inline in its URL"),
                format!("move `{name}` to `env.secrets` as a reference"),
            );
            continue;
        }
        env.values.insert(name.clone(), text);
    }
    for (name, value) in &a.env.secrets {
        if !valid_env_name(name) {
            diags.error(
                file,
                value.loc,
                format!("`{name}` is not a valid variable name"),
                "use UPPER_SNAKE_CASE",
            );
        }
        if env.values.contains_key(name) {
            diags.error(
                file,
                value.loc,
                format!("`{name}` is both a value and a secret"),
                "keep one of them",
            );
        }
        match parse_secret_ref(&value.value) {
            Some(r) => {
                env.secrets.insert(name.clone(), r);
            }
            None => diags.error_redacted(
                file,
                value.loc,
                format!("secret `{name}` is not a reference (a secret value written inline?)"),
                SECRET_REF_HINT,
            ),
        }
    }
    for r in &a.env.required {
        if !a.env.values.contains_key(&r.value) && !a.env.secrets.contains_key(&r.value) {
            diags.warning(
                file,
                r.loc,
                format!(
                    "required variable `{}` is neither a value nor a secret reference here",
                    r.value
                ),
                "it must then be set on the platform itself; `--strict` treats this as an error",
            );
        }
    }

    // Windows.
    let zone = match &a.windows.timezone {
        Some(tz) => match parse_zone(&tz.value) {
            Ok(z) => z,
            Err(e) => {
                diags.error(file, tz.loc, e.message, e.hint);
                Zone::UTC
            }
        },
        None => Zone::UTC,
    };
    let mut windows = Windows {
        bypass: a.windows.bypass.unwrap_or(if tier == Tier::Hotfix {
            WindowBypass::WithReason
        } else {
            WindowBypass::Never
        }),
        ..Windows::default()
    };
    for w in &a.windows.allow {
        match AllowWindow::parse(&w.value, zone) {
            Ok(p) => windows.allow.push(p),
            Err(e) => diags.error(file, w.loc, e.message, e.hint),
        }
    }
    for f in &a.windows.freeze {
        match Freeze::parse(&f.value, zone) {
            Ok(p) => windows.freeze.push(p),
            Err(e) => diags.error(file, f.loc, e.message, e.hint),
        }
    }

    // Preview.
    let preview = match (&a.preview, tier) {
        (Some(p), Tier::Preview) => {
            let ttl = duration(file, &p.value.ttl, "ttl", diags);
            let name_template = p.value.name.as_ref().map_or_else(
                || format!("{}-pr-{{pr}}", a.name.value),
                |n| n.value.clone(),
            );
            if !name_template.contains("{pr}") {
                let loc = p.value.name.as_ref().map_or(p.loc, |n| n.loc);
                diags.error(
                    file,
                    loc,
                    "preview name must contain `{pr}`",
                    "e.g. `name: copilot-pr-{pr}`",
                );
            }
            for (source, location) in &p.value.seed {
                if location.value.trim().is_empty() {
                    diags.error(
                        file,
                        location.loc,
                        format!("seed feed `{source}` has no location"),
                        "a project file (`fixtures/feeds/incidents.json`) or an http(s) URL",
                    );
                }
            }
            ttl.map(|ttl| PreviewSettings {
                ttl,
                seed: p
                    .value
                    .seed
                    .iter()
                    .map(|(k, v)| (k.clone(), v.value.clone()))
                    .collect(),
                name_template,
            })
        }
        (Some(p), _) => {
            diags.error(
                file,
                p.loc,
                "`preview` is only for arenas with `tier: preview`",
                None,
            );
            None
        }
        (None, Tier::Preview) => {
            diags.error(
                file,
                a.tier.loc,
                "a preview arena needs a `preview:` section with a `ttl`",
                "e.g. `preview: { ttl: 72h, name: copilot-pr-{pr} }`",
            );
            None
        }
        (None, _) => None,
    };

    // Rollback.
    let keep_standby = opt_duration(file, &a.rollback.keep_standby, "keep_standby", diags);
    if let (Some(ks), false) = (
        &a.rollback.keep_standby,
        strategy.kind == StrategyKind::BlueGreen,
    ) {
        diags.warning(
            file,
            ks.loc,
            "`keep_standby` only applies to blue-green rollouts",
            None,
        );
    }

    if diags.error_count() > before {
        return None;
    }
    Some(Arena {
        name: a.name.value.clone(),
        tier,
        description: a.description.clone(),
        promotes_from: a.promotes_from.as_ref().map(|p| p.value.clone()),
        target: None,
        provider,
        strategy,
        preview,
        cohort: a.cohort.as_ref().map(|c| Cohort {
            shops: c.shops.clone(),
            percent: c.percent,
        }),
        cohorts: a
            .cohorts
            .iter()
            .map(|(name, c)| {
                (
                    name.clone(),
                    c.value.shops.iter().map(|s| s.value.clone()).collect(),
                )
            })
            .collect(),
        gates,
        env,
        flags: a
            .flags
            .iter()
            .map(|(k, v)| (k.clone(), matches!(v, FlagSection::Enabled(true))))
            .collect(),
        flag_cohorts: a
            .flags
            .iter()
            .filter_map(|(k, v)| match v {
                FlagSection::Cohort(c) => Some((k.clone(), c.cohort.value.clone())),
                FlagSection::Enabled(_) => None,
            })
            .collect(),
        windows,
        rollback: RollbackPolicy {
            keep_standby,
            automatic: a.rollback.automatic.unwrap_or(true),
            on_interrupt: a.rollback.on_interrupt.unwrap_or(OnInterrupt::Pause),
        },
    })
}

/// `promotes_from` must name an existing arena and must not loop.
fn check_promotion_paths(parsed: &Parsed<'_>, names: &BTreeSet<&str>, diags: &mut Diagnostics) {
    let edges: BTreeMap<&str, (&SourceFile, &At<String>)> = parsed
        .arenas
        .iter()
        .filter_map(|(f, a)| {
            a.promotes_from
                .as_ref()
                .map(|p| (a.name.value.as_str(), (*f, p)))
        })
        .collect();
    for (name, (file, from)) in &edges {
        if !names.contains(from.value.as_str()) {
            diags.error(
                file,
                from.loc,
                format!(
                    "`promotes_from` names arena `{}`, which does not exist",
                    from.value
                ),
                suggest_name(&from.value, names),
            );
        } else if from.value == *name {
            diags.error(
                file,
                from.loc,
                format!("arena `{name}` promotes from itself"),
                None,
            );
        }
    }
    // Report each cycle once, at its alphabetically first member.
    let mut reported = BTreeSet::new();
    for start in edges.keys() {
        let mut path = vec![*start];
        let mut cur = *start;
        while let Some((_, next)) = edges.get(cur) {
            let next = next.value.as_str();
            if next == cur {
                break;
            }
            if let Some(pos) = path.iter().position(|p| *p == next) {
                let cycle: Vec<&str> = path[pos..].to_vec();
                let first = *cycle.iter().min().expect("non-empty cycle");
                if cycle.len() > 1 && reported.insert(first) {
                    let (file, at) = edges[first];
                    let mut shown = cycle.clone();
                    let i = shown.iter().position(|p| *p == first).expect("member");
                    shown.rotate_left(i);
                    shown.push(first);
                    diags.error(
                        file,
                        at.loc,
                        format!("`promotes_from` forms a cycle: {}", shown.join(" <- ")),
                        "promotion must flow one way, e.g. local -> staging -> canary -> production",
                    );
                }
                break;
            }
            path.push(next);
            cur = next;
        }
    }
}

impl Diagnostics {
    pub fn error_count(&self) -> usize {
        self.items
            .iter()
            .filter(|d| d.severity == super::diag::Severity::Error)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_names_not_paths() {
        for ok in [
            "v1",
            "1.2.3",
            "v1.4.0-rc.1",
            "2026.11.24+build.7",
            "v2-broken",
            "sha_4f2c1a9",
        ] {
            assert_eq!(check_version(ok), Ok(()), "{ok}");
        }
        let long = "v".repeat(MAX_VERSION_LEN + 1);
        for bad in [
            "",
            "a/b",
            "..",
            "v1..2",
            "v1\nrm",
            "-v1",
            ".hidden",
            "v 1",
            long.as_str(),
        ] {
            assert!(check_version(bad).is_err(), "{bad:?}");
        }
        assert!(inline_secret("DATABASE_URL", "postgres://u:hunter2@db/app").is_some());
        assert!(
            !inline_secret("DATABASE_URL", "postgres://u:hunter2@db/app")
                .unwrap()
                .contains("hunter2")
        );
        assert!(inline_secret("STRIPE_SECRET", "x").is_some());
        assert!(inline_secret("LOG_LEVEL", "debug").is_none());
    }

    #[test]
    fn secret_names_and_urls() {
        assert!(looks_secret("SHOPIFY_ACCESS_TOKEN"));
        assert!(looks_secret("OPENAI_API_KEY"));
        assert!(looks_secret("SHOPIFY_WEBHOOK_SECRET"));
        assert!(!looks_secret("SHOPIFY_API_VERSION"));
        assert!(!looks_secret("APP_URL"));
        assert!(url_has_password("postgres://app:hunter2@db:5432/app"));
        assert!(!url_has_password("postgres://app@db:5432/app"));
        assert!(!url_has_password("https://example.com/a@b"));
    }

    #[test]
    fn secret_references() {
        assert_eq!(
            parse_secret_ref("env:CANARY_TOKEN"),
            Some(SecretRef {
                store: SecretStore::Env,
                key: "CANARY_TOKEN".into()
            })
        );
        assert!(parse_secret_ref("shpat_0123456789abcdef").is_none());
        assert!(parse_secret_ref("env:").is_none());
        assert!(parse_secret_ref("env:lower case").is_none());
        assert!(parse_secret_ref("vault:secret/data/shopify#token").is_some());
    }
}
