//! The file formats, exactly as written in YAML.
//!
//! These types mirror `arenas/*.yaml` and `gates/*.yaml` one to one, keep the
//! source location of every value that validation may complain about, and
//! derive the published JSON Schemas. Values whose parsing can fail for
//! reasons other than structure (durations, windows, references) are kept as
//! text here and parsed by `validate`, so that one run reports all of them.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize};

use crate::model::{
    GateKind, GateSeverity, MetricSource, OnFail, OnInterrupt, ProviderKind, StrategyKind, Tier,
    WindowBypass,
};

/// A position in a definition file (1-based), and how many characters the
/// value written there spans (0 when unknown).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Loc {
    pub line: u64,
    pub column: u64,
    pub len: u64,
}

impl Loc {
    pub const START: Loc = Loc::at(1, 1);

    /// A position without a known length.
    pub const fn at(line: u64, column: u64) -> Loc {
        Loc {
            line,
            column,
            len: 0,
        }
    }
}

/// A value together with where it was written.
#[derive(Clone, Debug)]
pub struct At<T> {
    pub value: T,
    pub loc: Loc,
}

impl<T> At<T> {
    pub fn new(value: T, loc: Loc) -> Self {
        At { value, loc }
    }
}

impl<T> std::ops::Deref for At<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for At<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<T>::deserialize(d)?;
        Ok(At {
            value: spanned.value,
            loc: Loc {
                line: spanned.referenced.line(),
                column: spanned.referenced.column(),
                len: spanned.referenced.span().len(),
            },
        })
    }
}

impl<T: JsonSchema> JsonSchema for At<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

/// A plain YAML scalar: `8080`, `0.05`, `true`, `3s`, `bullmq`.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl fmt::Display for Scalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scalar::Bool(b) => write!(f, "{b}"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Float(x) => write!(f, "{x}"),
            Scalar::Text(s) => f.write_str(s),
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Scalar;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number, a boolean or a string")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Scalar, E> {
                i64::try_from(v)
                    .map(Scalar::Int)
                    .map_err(|_| E::custom("integer too large"))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Scalar {
    fn schema_name() -> Cow<'static, str> {
        "Scalar".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": ["string", "number", "boolean"] })
    }
}

/// `arenas/<name>.yaml`: one environment a release can be promoted into.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "copilot arena definition")]
pub struct ArenaFile {
    /// Arena name; must equal the file name without `.yaml`.
    pub name: At<String>,
    /// The role of the arena in the promotion path.
    pub tier: At<Tier>,
    #[serde(default)]
    pub description: Option<String>,
    /// The arena whose live release is promoted into this one.
    #[serde(default)]
    pub promotes_from: Option<At<String>>,
    /// Hotfix lanes only: the arena whose live slot the lane deploys into.
    /// A lane takes its provider and strategy from its target.
    #[serde(default)]
    pub target: Option<At<String>>,
    #[serde(default)]
    pub provider: Option<At<ProviderSection>>,
    #[serde(default)]
    pub strategy: Option<At<StrategySection>>,
    /// Preview arenas: one short-lived copy per pull request.
    #[serde(default)]
    pub preview: Option<At<PreviewSection>>,
    /// The merchants (shops) that see this arena's release.
    #[serde(default)]
    pub cohort: Option<CohortSection>,
    /// Named merchant cohorts, for cohort steps of the strategy and for
    /// flags on for a cohort: `pilot: { shops: [a.myshopify.com] }`.
    #[serde(default)]
    pub cohorts: BTreeMap<String, At<NamedCohortSection>>,
    #[serde(default)]
    pub gates: GatesSection,
    #[serde(default)]
    pub env: EnvSection,
    /// Feature flags for this arena: flag name -> enabled, or
    /// `{ cohort: pilot }` for on for that cohort's shops only.
    #[serde(default)]
    pub flags: BTreeMap<String, FlagSection>,
    #[serde(default)]
    pub windows: WindowsSection,
    #[serde(default)]
    pub rollback: RollbackSection,
}

/// Where the arena runs: `kind`, the settings every provider shares, and
/// the names (with where they are written) of the provider's own settings.
/// The provider's crate reads those itself, typed and with their spans
/// ([`crate::config::SettingsInput::section`]); `validate` holds each name
/// to the provider's list before it does.
#[derive(Debug)]
pub struct ProviderSection {
    pub kind: At<ProviderKind>,
    /// Instances per colour (machines, tasks, replicas, processes).
    pub instances: Option<At<u32>>,
    /// How long instances may take to start and pass their checks [default: 5m; local 30s].
    pub ready_timeout: Option<At<String>>,
    /// The provider's own settings, by name, in the order written.
    pub settings: Vec<(String, Loc)>,
}

impl ProviderSection {
    /// Every provider setting that is present, by its YAML name, with where it is.
    pub fn present_settings(&self) -> impl Iterator<Item = (&str, Loc)> {
        self.settings.iter().map(|(n, l)| (n.as_str(), *l))
    }
}

impl<'de> Deserialize<'de> for ProviderSection {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = ProviderSection;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a provider section with `kind`")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut kind = None;
                let mut instances = None;
                let mut ready_timeout = None;
                let mut settings = Vec::new();
                while let Some(key) = map.next_key::<At<String>>()? {
                    match key.value.as_str() {
                        "kind" => kind = Some(map.next_value()?),
                        "instances" => instances = Some(map.next_value()?),
                        "ready_timeout" => ready_timeout = Some(map.next_value()?),
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                            settings.push((key.value, key.loc));
                        }
                    }
                }
                let kind = kind.ok_or_else(|| serde::de::Error::missing_field("kind"))?;
                Ok(ProviderSection {
                    kind,
                    instances,
                    ready_timeout,
                    settings,
                })
            }
        }
        d.deserialize_map(Visit)
    }
}

impl JsonSchema for ProviderSection {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ProviderSection".into()
    }
    /// What every provider shares; `schema::arena` puts each provider's own
    /// settings beside it, one branch per `kind`.
    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let kind = generator.subschema_for::<ProviderKind>();
        let instances = generator.subschema_for::<u32>();
        schemars::json_schema!({
            "description": "Where the arena runs. Which settings apply depends on `kind`.",
            "type": "object",
            "required": ["kind"],
            "properties": {
                "kind": kind,
                "instances": {
                    "description": "Instances per colour (machines, tasks, replicas, processes).",
                    "anyOf": [instances, { "type": "null" }]
                },
                "ready_timeout": {
                    "description": "How long instances may take to start and pass their checks [default: 5m; local 30s].",
                    "type": ["string", "null"]
                }
            }
        })
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StrategySection {
    pub kind: At<StrategyKind>,
    /// Traffic shifts in order; the last must reach 100.
    #[serde(default)]
    pub steps: Vec<At<StepSection>>,
    #[serde(default)]
    pub analysis: Option<At<AnalysisSection>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StepSection {
    /// Percent of traffic on the new release (1-100).
    #[serde(default)]
    pub weight: Option<At<u32>>,
    /// Or a merchant cohort of `cohorts:`: its shops' requests (by
    /// `X-Shopify-Shop-Domain` or the `shop` query parameter) go to the new
    /// release, everyone else's to the old one. Cohort steps come first.
    #[serde(default)]
    pub cohort: Option<At<String>>,
    /// How long to hold this weight while analysis runs (`5m`).
    #[serde(default)]
    pub bake: Option<At<String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnalysisSection {
    /// How often metrics are sampled (`30s`).
    #[serde(default)]
    pub interval: Option<At<String>>,
    /// Fewer samples than this make a step inconclusive, never a pass.
    #[serde(default)]
    pub min_samples: Option<u32>,
    /// Prometheus server for metrics with `source: prometheus` (a URL or `env:NAME`).
    #[serde(default)]
    pub prometheus: Option<At<String>>,
    /// Failed measurements a metric may have before its `on_fail` acts (default 0).
    #[serde(default)]
    pub failure_limit: Option<u32>,
    /// Measurements in a row a metric's source may fail to give before the
    /// step stops as inconclusive (default 4).
    #[serde(default)]
    pub consecutive_error_limit: Option<u32>,
    #[serde(default)]
    pub metrics: Vec<At<MetricSection>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricSection {
    /// `error_rate`, `p95_latency`, `p99_latency`, `health`, or a name of your own with `query`.
    pub name: At<String>,
    #[serde(default)]
    pub source: Option<MetricSource>,
    /// PromQL (source `prometheus`; `{arena}`, `{slot}`, `{release}` and
    /// `{window}` are filled in), or for source `metrics` an expression over
    /// the service's `/metrics`: a selector (increase), a ratio of two, or
    /// `histogram_quantile(q, name{...})`.
    #[serde(default)]
    pub query: Option<At<String>>,
    /// HTTP path probed (health metrics).
    #[serde(default)]
    pub path: Option<String>,
    /// The limit: a ratio (`0.05`) or a latency (`3s`).
    #[serde(default)]
    pub max: Option<At<Scalar>>,
    /// Consecutive failed checks before acting (health metrics).
    #[serde(default)]
    pub consecutive_failures: Option<u32>,
    /// Sliding window the metric is computed over (`5m`).
    #[serde(default)]
    pub window: Option<At<String>>,
    pub on_fail: OnFail,
    /// Record the metric but never act on it.
    #[serde(default)]
    pub dry_run: bool,
    /// Overrides the analysis' `failure_limit` for this metric.
    #[serde(default)]
    pub failure_limit: Option<u32>,
    /// Overrides the analysis' `consecutive_error_limit` for this metric.
    #[serde(default)]
    pub consecutive_error_limit: Option<u32>,
    /// The severity (1, 2 or 3) of the incident an automatic rollback on
    /// this metric opens [default: 2].
    #[serde(default)]
    pub severity: Option<At<u8>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewSection {
    /// How long a preview lives after its last deploy (`72h`).
    pub ttl: At<String>,
    /// The test data set each preview's service ingests when it starts:
    /// update feeds by source name (`google-search-status`,
    /// `shopify-changelog`, ...), each a file of the project or an http(s)
    /// URL.
    #[serde(default)]
    pub seed: BTreeMap<String, At<String>>,
    /// Name of each preview; `{pr}` is replaced by the pull-request number.
    #[serde(default)]
    pub name: Option<At<String>>,
}

/// A flag: on or off for everyone, or on for one cohort.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum FlagSection {
    Enabled(bool),
    Cohort(FlagCohortSection),
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlagCohortSection {
    /// A cohort of `cohorts:`: the flag is on for its shops.
    pub cohort: At<String>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NamedCohortSection {
    /// The shops' `*.myshopify.com` domains, matched exactly.
    pub shops: Vec<At<String>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CohortSection {
    /// Shop domains that get this arena's release.
    #[serde(default)]
    pub shops: Vec<String>,
    /// Or a percentage of shops, chosen by a stable hash of the domain.
    #[serde(default)]
    pub percent: Option<u8>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatesSection {
    /// Gates that must pass before any traffic reaches the release.
    #[serde(default)]
    pub before: Vec<At<String>>,
    /// Gates run against the new release before and while traffic shifts.
    #[serde(default)]
    pub after: Vec<At<String>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EnvSection {
    /// Variables that must be set (as a value or a secret) for the arena.
    #[serde(default)]
    pub required: Vec<At<String>>,
    /// Plain, non-secret values.
    #[serde(default)]
    pub values: BTreeMap<String, At<Scalar>>,
    /// Secrets, as references only: `env:NAME`, `file:PATH`, `fly:NAME`,
    /// `render:NAME`, `aws-sm:ARN`, `aws-ssm:NAME`, `k8s:SECRET/KEY`, `vault:PATH#KEY`.
    #[serde(default)]
    pub secrets: BTreeMap<String, At<String>>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WindowsSection {
    /// Zone for windows that name none: `UTC` or an offset such as `+02:00`.
    #[serde(default)]
    pub timezone: Option<At<String>>,
    /// When deploys may start, e.g. `Tue-Thu 10:00-14:00 UTC`. Empty: any time.
    #[serde(default)]
    pub allow: Vec<At<String>>,
    /// When no deploy may start: `black-friday-week`, `december-holidays`, `12-20..12-26`.
    #[serde(default)]
    pub freeze: Vec<At<String>>,
    /// `with-reason` lets an operator bypass windows by recording a reason.
    #[serde(default)]
    pub bypass: Option<WindowBypass>,
}

#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackSection {
    /// Blue-green: keep the old colour running this long for an instant rollback.
    #[serde(default)]
    pub keep_standby: Option<At<String>>,
    /// Roll back automatically when analysis calls for it (default true).
    #[serde(default)]
    pub automatic: Option<bool>,
    /// What a running rollout does on SIGINT or SIGTERM (a cancelled CI
    /// job): `pause` where it stands (default) or `rollback`.
    #[serde(default)]
    pub on_interrupt: Option<OnInterrupt>,
}

/// The part of a gate file every kind shares; read first to learn the kind.
#[derive(Debug, Deserialize)]
pub struct GateHeader {
    #[serde(default)]
    pub kind: Option<At<String>>,
}

/// `gates/<name>.yaml`: one promotion gate.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GateFile<P: Default + Serialize> {
    /// Gate name; must equal the file name without `.yaml`.
    pub name: At<String>,
    pub kind: At<GateKind>,
    #[serde(default)]
    pub description: Option<String>,
    /// Upper bound on the gate's run time (`2m`); past it the gate is inconclusive.
    #[serde(default)]
    pub timeout: Option<At<String>>,
    /// `warn` reports a failure without blocking the promotion.
    #[serde(default)]
    pub severity: Option<GateSeverity>,
    /// Settings of this kind of gate.
    #[serde(default)]
    pub params: P,
}

/// A gate file with its kind-specific parameters already checked and turned into JSON.
#[derive(Debug)]
pub struct GateFileAny {
    pub name: At<String>,
    pub kind: At<GateKind>,
    pub description: Option<String>,
    pub timeout: Option<At<String>>,
    pub severity: Option<GateSeverity>,
    pub params: serde_json::Value,
}

impl<P: Default + Serialize> From<GateFile<P>> for GateFileAny {
    fn from(f: GateFile<P>) -> Self {
        GateFileAny {
            name: f.name,
            kind: f.kind,
            description: f.description,
            timeout: f.timeout,
            severity: f.severity,
            params: serde_json::to_value(&f.params).unwrap_or(serde_json::Value::Null),
        }
    }
}
