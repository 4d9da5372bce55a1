//! Plain data types shared by every layer: the resolved form of arena and
//! gate definitions, and the small vocabulary (tiers, providers, strategies,
//! gate kinds and outcomes) used in the ledger, the CLI and JSON output.
//!
//! Nothing here does I/O. `config` produces these types from YAML; everything
//! above `config` consumes them.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::config::duration::Duration;
use crate::config::window::{AllowWindow, Freeze};

macro_rules! word_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident { $( $(#[$vmeta:meta])* $variant:ident => $word:literal ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
        pub enum $name { $( $(#[$vmeta])* #[serde(rename = $word)] $variant ),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The word used in YAML, JSON, the ledger and the CLI.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $word),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($word => Ok($name::$variant),)+
                    _ => Err(format!(
                        "`{s}` is not one of: {}",
                        [$($word),+].join(", ")
                    )),
                }
            }
        }
    };
}

word_enum! {
    /// The role an arena plays in the promotion path.
    pub enum Tier {
        Local => "local",
        Preview => "preview",
        Staging => "staging",
        Canary => "canary",
        Production => "production",
        /// A lane into another arena with a reduced gate set.
        Hotfix => "hotfix",
    }
}

word_enum! {
    /// The platform an arena runs on.
    pub enum ProviderKind {
        Local => "local",
        Fly => "fly",
        Render => "render",
        Ecs => "ecs",
        Kubernetes => "kubernetes",
    }
}

word_enum! {
    /// How a release replaces the live one in an arena.
    pub enum StrategyKind {
        Rolling => "rolling",
        Immediate => "immediate",
        BlueGreen => "blue-green",
        Canary => "canary",
    }
}

word_enum! {
    /// Every kind of promotion gate.
    pub enum GateKind {
        Migrations => "migrations",
        QueueHealth => "queue-health",
        Ingestion => "ingestion",
        Latency => "latency",
        Health => "health",
        Alerts => "alerts",
        Window => "window",
        Env => "env",
        Smoke => "smoke",
        Backup => "backup",
        Bake => "bake",
        Approval => "approval",
        Command => "command",
    }
}

word_enum! {
    /// When a gate runs relative to the traffic switch.
    pub enum Phase {
        Before => "before",
        After => "after",
    }
}

word_enum! {
    /// The verdict of one gate.
    pub enum Outcome {
        Pass => "pass",
        Fail => "fail",
        Warn => "warn",
        Inconclusive => "inconclusive",
        /// What the gate measures could not be reached (exit 3).
        Error => "error",
        Skipped => "skipped",
    }
}

word_enum! {
    /// What analysis does when a metric breaks its limit.
    pub enum OnFail {
        Rollback => "rollback",
        Alert => "alert",
        Remove => "remove",
    }
}

word_enum! {
    /// Where an analysis metric is measured.
    pub enum MetricSource {
        /// Synthetic requests sent by copilot itself.
        Probe => "probe",
        /// The service's own `/metrics` endpoint.
        Metrics => "metrics",
        /// A PromQL query against Prometheus.
        Prometheus => "prometheus",
        /// The load balancer's per-target-group metrics in CloudWatch (ECS behind an ALB).
        Cloudwatch => "cloudwatch",
    }
}

word_enum! {
    /// What a running rollout does when its process gets SIGINT or SIGTERM.
    pub enum OnInterrupt {
        /// Stop where it stands, traffic left where it is, resumable.
        Pause => "pause",
        /// Put all traffic back on the previous release and stop the new one.
        Rollback => "rollback",
    }
}

// `word_enum!` derives a fixed set of traits, Default not among them.
#[allow(clippy::derivable_impls)]
impl Default for OnInterrupt {
    fn default() -> Self {
        OnInterrupt::Pause
    }
}

word_enum! {
    /// Whether deploy windows may be bypassed.
    pub enum WindowBypass {
        Never => "never",
        /// Allowed when the operator records a reason (hotfix lane).
        WithReason => "with-reason",
    }
}

/// How finely a provider can split traffic between two versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TrafficSplit {
    /// Only all-or-nothing switches.
    None,
    /// Any percentage (a weighted router or load balancer).
    Exact,
    /// Approximated by the ratio of instances (machines, replicas).
    ByInstanceCount,
}

/// What a provider can do, declared by the provider and checked by `validate`.
#[derive(Clone, Debug, Serialize)]
pub struct Capabilities {
    pub strategies: &'static [StrategyKind],
    pub traffic_split: TrafficSplit,
    /// A rollback that only moves traffic (no new instances started).
    pub instant_rollback: bool,
    /// A new release takes all of the traffic as soon as it passes the
    /// platform's own health check (Render): there is no idle colour to run
    /// `after` gates against first, so they run against the live release
    /// and a failure goes back through the platform's rollback.
    pub live_on_ready: bool,
    /// Provider-specific settings accepted under `provider:`.
    pub settings: &'static [&'static str],
    /// Settings that must be present.
    pub required_settings: &'static [&'static str],
    /// The secret stores whose references the platform attaches itself.
    pub secret_stores: &'static [SecretStore],
    /// Routes requests by a header or query parameter (a merchant cohort's
    /// `X-Shopify-Shop-Domain`), for cohort steps.
    pub routes_by_header: bool,
    /// The platform configuration `copilot render` writes for an arena.
    #[serde(skip)]
    pub templates: &'static [crate::render::TemplateSpec],
}

impl Capabilities {
    pub fn supports(&self, strategy: StrategyKind) -> bool {
        self.strategies.contains(&strategy)
    }
}

/// A resolved arena definition.
#[derive(Clone, Debug, Serialize)]
pub struct Arena {
    pub name: String,
    pub tier: Tier,
    pub description: Option<String>,
    pub promotes_from: Option<String>,
    /// For a hotfix lane: the arena whose live slot it deploys into.
    pub target: Option<String>,
    pub provider: Provider,
    pub strategy: Strategy,
    pub preview: Option<PreviewSettings>,
    pub cohort: Option<Cohort>,
    /// Named merchant cohorts: name -> shop domains.
    pub cohorts: BTreeMap<String, Vec<String>>,
    pub gates: PhaseGates,
    pub env: EnvSpec,
    /// Flags on or off for everyone (a cohort flag is off here).
    pub flags: BTreeMap<String, bool>,
    /// Flags on for a cohort's shops only: flag -> cohort.
    pub flag_cohorts: BTreeMap<String, String>,
    pub windows: Windows,
    pub rollback: RollbackPolicy,
}

impl Arena {
    /// The arena whose infrastructure this arena deploys into (itself unless a lane).
    pub fn deploys_into(&self) -> &str {
        self.target.as_deref().unwrap_or(&self.name)
    }
}

/// The provider an arena runs on, with its settings.
#[derive(Clone, Debug, Serialize)]
pub struct Provider {
    pub kind: ProviderKind,
    /// The settings of `kind`, checked by that provider's rules.
    pub settings: ProviderSettings,
    /// Number of instances per colour.
    pub instances: u32,
    /// How long a platform operation (instances starting and passing their
    /// checks, a release command) may take before copilot gives up on it.
    pub ready_timeout: Duration,
    /// The platform configuration rendered for the arena (the provider's).
    #[serde(skip)]
    pub templates: &'static [crate::render::TemplateSpec],
}

/// A provider's settings, as its own crate read and checked them. The type
/// is the provider's (`copilot_provider_fly::FlySettings`, ...): this layer
/// only carries it, shows it as JSON, and hands it back by type.
#[derive(Clone)]
pub struct ProviderSettings(std::sync::Arc<dyn AnySettings>);

/// What a provider's settings type offers to the layers that do not know it.
pub trait AnySettings: std::any::Any + fmt::Debug + Send + Sync {
    /// The settings as JSON (`arenas show`, templates, `--output json`).
    fn to_json(&self) -> serde_json::Value;
}

impl<T: Serialize + fmt::Debug + Send + Sync + 'static> AnySettings for T {
    fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

impl ProviderSettings {
    pub fn new<T: AnySettings>(settings: T) -> Self {
        ProviderSettings(std::sync::Arc::new(settings))
    }

    /// The settings as the provider's type `T`; `None` for another provider's.
    pub fn get<T: 'static>(&self) -> Option<&T> {
        let any: &dyn std::any::Any = self.0.as_ref();
        any.downcast_ref()
    }

    /// `name=value` pairs, for people.
    pub fn describe(&self) -> Vec<String> {
        let value = self.0.to_json();
        let Some(map) = value.as_object() else {
            return Vec::new();
        };
        map.iter()
            .filter(|(_, v)| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect()
    }
}

impl fmt::Debug for ProviderSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for ProviderSettings {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.to_json().serialize(s)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Strategy {
    pub kind: StrategyKind,
    pub steps: Vec<TrafficStep>,
    pub analysis: Option<Analysis>,
}

/// One traffic shift: send `weight` percent to the new release, then bake.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrafficStep {
    /// Percent of traffic on the new release; 0 during a cohort step.
    pub weight: u8,
    pub bake: Option<Duration>,
    /// A cohort step: the named cohort's shops go to the new release.
    pub cohort: Option<String>,
}

impl TrafficStep {
    /// `25%`, or `cohort pilot`.
    pub fn label(&self) -> String {
        match &self.cohort {
            Some(c) => format!("cohort {c}"),
            None => format!("{}%", self.weight),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Analysis {
    pub interval: Duration,
    pub min_samples: u32,
    /// The Prometheus server metrics with `source: prometheus` query
    /// (a URL or an `env:` reference).
    pub prometheus: Option<String>,
    pub metrics: Vec<Metric>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Metric {
    pub name: String,
    pub source: MetricSource,
    pub query: Option<String>,
    pub path: Option<String>,
    pub limit: MetricLimit,
    pub window: Option<Duration>,
    pub on_fail: OnFail,
    /// Recorded but never acted on.
    pub dry_run: bool,
    /// Failed measurements tolerated before `on_fail` acts (0: the first acts).
    pub failure_limit: u32,
    /// Measurements in a row the source may fail to give (unreachable,
    /// malformed) before the bake stops as inconclusive.
    pub consecutive_error_limit: u32,
    /// The severity of the incident an automatic rollback on it opens (1-3).
    pub severity: u8,
}

/// The threshold a metric is held to.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MetricLimit {
    /// A ratio or count that must not be exceeded (`max: 0.05`).
    Max { max: f64 },
    /// A latency that must not be exceeded (`max: 3s`).
    MaxDuration { max: Duration },
    /// Consecutive failed checks before acting.
    ConsecutiveFailures { count: u32 },
}

#[derive(Clone, Debug, Serialize)]
pub struct PreviewSettings {
    pub ttl: Duration,
    /// Feeds each preview's service ingests at start: (source, location),
    /// a location being a project-relative file or an http(s) URL.
    pub seed: Vec<(String, String)>,
    /// The platform name of each preview (`copilot-pr-{pr}`).
    pub name_template: String,
}

impl PreviewSettings {
    /// The platform name of pull request `pr`'s preview.
    pub fn name(&self, pr: u64) -> String {
        self.name_template.replace("{pr}", &pr.to_string())
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Cohort {
    pub shops: Vec<String>,
    pub percent: Option<u8>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct PhaseGates {
    pub before: Vec<String>,
    pub after: Vec<String>,
}

impl PhaseGates {
    pub fn for_phase(&self, phase: Phase) -> &[String] {
        match phase {
            Phase::Before => &self.before,
            Phase::After => &self.after,
        }
    }
}

/// The environment matrix of an arena. Secrets are references, never values.
#[derive(Clone, Debug, Default, Serialize)]
pub struct EnvSpec {
    pub required: Vec<String>,
    pub values: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, SecretRef>,
}

/// Where a secret lives: `env:NAME`, `file:PATH`, or a provider's store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SecretRef {
    pub store: SecretStore,
    pub key: String,
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.store, self.key)
    }
}

word_enum! {
    /// A secret store a reference can point into.
    pub enum SecretStore {
        Env => "env",
        File => "file",
        Fly => "fly",
        Render => "render",
        AwsSecretsManager => "aws-sm",
        AwsSsm => "aws-ssm",
        Kubernetes => "k8s",
        Vault => "vault",
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Windows {
    pub allow: Vec<AllowWindow>,
    pub freeze: Vec<Freeze>,
    pub bypass: WindowBypass,
}

impl Default for Windows {
    fn default() -> Self {
        Windows {
            allow: Vec::new(),
            freeze: Vec::new(),
            bypass: WindowBypass::Never,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RollbackPolicy {
    /// Blue-green: how long the old colour stays up for an instant rollback.
    pub keep_standby: Option<Duration>,
    /// Roll back automatically when analysis says so.
    pub automatic: bool,
    /// What a rollout does on SIGINT or SIGTERM (default: pause).
    pub on_interrupt: OnInterrupt,
}

/// A resolved gate definition.
#[derive(Clone, Debug, Serialize)]
pub struct Gate {
    pub name: String,
    pub kind: GateKind,
    pub description: Option<String>,
    pub timeout: Duration,
    /// `warn` turns a failure of this gate into a warning.
    pub severity: GateSeverity,
    /// Kind-specific parameters, already checked against the kind's schema.
    pub params: serde_json::Value,
}

word_enum! {
    /// How a failing gate counts.
    pub enum GateSeverity {
        Block => "block",
        Warn => "warn",
    }
}

/// Every arena and gate of a project, resolved and cross-checked.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Project {
    pub arenas: BTreeMap<String, Arena>,
    pub gates: BTreeMap<String, Gate>,
}

impl Project {
    pub fn arena(&self, name: &str) -> Option<&Arena> {
        self.arenas.get(name)
    }
}
