//! `plan FROM TO`: what a promotion would change, changing nothing: the
//! release it moves, the environment and flags that differ, the gates and
//! steps it runs, the analysis it applies, and the migrations it adds.

use std::collections::BTreeSet;

use serde::Serialize;

use copilot_core::model::{
    Analysis, Arena, Metric, MetricLimit, PhaseGates, ProviderKind, StrategyKind,
};
use copilot_ledger::{DeploymentRow, Ledger, LedgerError, MigrationRecord};

#[derive(Clone, Debug, Serialize)]
pub struct PlanView {
    pub from: String,
    pub to: String,
    pub provider: ProviderKind,
    pub strategy: StrategyKind,
    /// The release live in FROM, which the promotion moves.
    pub release: Option<ReleaseRef>,
    /// The release live in TO, which it replaces.
    pub replaces: Option<ReleaseRef>,
    pub env_diff: Vec<EnvChange>,
    /// Secrets TO needs that FROM does not have, by name.
    pub secrets_only_in_target: Vec<String>,
    pub flag_diff: Vec<FlagChange>,
    pub gates: PhaseGates,
    /// The traffic steps: `10% bake 5m`, ..., `100%`.
    pub steps: Vec<String>,
    /// What the steps mean on a platform that swaps by itself (Render).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swap: Option<String>,
    pub analysis: Option<Analysis>,
    /// What the candidate's recorded migrations add to the live release's;
    /// `null` when the candidate recorded none.
    pub schema: Option<SchemaChange>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReleaseRef {
    pub version: String,
    pub image: String,
}

impl From<&DeploymentRow> for ReleaseRef {
    fn from(d: &DeploymentRow) -> Self {
        ReleaseRef {
            version: d.version.clone(),
            image: d.image.clone(),
        }
    }
}

/// A plain variable whose value differs (`null`: not set on that side).
#[derive(Clone, Debug, Serialize)]
pub struct EnvChange {
    pub name: String,
    pub from: Option<String>,
    pub to: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct FlagChange {
    pub flag: String,
    pub from: Option<bool>,
    pub to: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct SchemaChange {
    pub adds: Vec<MigrationRecord>,
    /// Whether the live release recorded its migrations to compare with.
    pub compared_with_live: bool,
}

impl PlanView {
    /// Each metric as a sentence: `error_rate > 5.0% (probe, over 5m): rollback`.
    pub fn analysis_text(&self) -> Vec<String> {
        self.analysis
            .iter()
            .flat_map(|a| &a.metrics)
            .map(describe_metric)
            .collect()
    }
}

/// `error_rate > 5.0% (probe, over 5m): rollback`.
pub fn describe_metric(m: &Metric) -> String {
    let shown = crate::rollout::analysis::limit_text(m);
    let limit = match &m.limit {
        MetricLimit::ConsecutiveFailures { .. } => format!("fails {shown}"),
        _ => format!("> {shown}"),
    };
    let window = m.window.map(|w| format!(", over {w}")).unwrap_or_default();
    let dry = if m.dry_run { ", dry run" } else { "" };
    format!(
        "{} {limit} ({}{window}{dry}): {}",
        m.name, m.source, m.on_fail
    )
}

/// What promoting from `from` to `to` would do.
pub async fn plan(ledger: &Ledger, from: &Arena, to: &Arena) -> Result<PlanView, LedgerError> {
    let candidate = ledger.live(&from.name).await?;
    let current = ledger.live(to.deploys_into()).await?;
    // What changes for the service: values by name and value, secrets and flags by name.
    let names: BTreeSet<&String> = from.env.values.keys().chain(to.env.values.keys()).collect();
    let env_diff = names
        .into_iter()
        .filter_map(|k| {
            let (a, b) = (from.env.values.get(k), to.env.values.get(k));
            (a != b).then(|| EnvChange {
                name: k.clone(),
                from: a.cloned(),
                to: b.cloned(),
            })
        })
        .collect();
    let secrets_only_in_target = to
        .env
        .secrets
        .keys()
        .filter(|k| !from.env.secrets.contains_key(*k))
        .cloned()
        .collect();
    let flag_diff = to
        .flags
        .iter()
        .filter(|(k, v)| from.flags.get(*k) != Some(*v))
        .map(|(k, v)| FlagChange {
            flag: k.clone(),
            from: from.flags.get(k).copied(),
            to: *v,
        })
        .collect();
    let steps = to
        .strategy
        .steps
        .iter()
        .map(|s| match &s.bake {
            Some(b) => format!("{} bake {b}", s.label()),
            None => s.label(),
        })
        .collect();
    let recorded =
        async |row: Option<&DeploymentRow>| -> Result<Option<Vec<MigrationRecord>>, LedgerError> {
            Ok(match row {
                Some(d) => ledger
                    .release_by_id(&d.deployment.release_id)
                    .await?
                    .and_then(|r| r.migrations.map(|m| m.0)),
                None => None,
            })
        };
    let schema = match (
        recorded(candidate.as_ref()).await?,
        recorded(current.as_ref()).await?,
    ) {
        (Some(new), old) => {
            let known: BTreeSet<i64> = old.iter().flatten().map(|m| m.version).collect();
            Some(SchemaChange {
                adds: new
                    .into_iter()
                    .filter(|m| !known.contains(&m.version))
                    .collect(),
                compared_with_live: old.is_some(),
            })
        }
        (None, _) => None,
    };
    Ok(PlanView {
        from: from.name.clone(),
        to: to.name.clone(),
        provider: to.provider.kind,
        strategy: to.strategy.kind,
        release: candidate.as_ref().map(ReleaseRef::from),
        replaces: current.as_ref().map(ReleaseRef::from),
        env_diff,
        secrets_only_in_target,
        flag_diff,
        gates: to.gates.clone(),
        steps,
        swap: crate::platform::swap_note(to.provider.kind),
        analysis: to.strategy.analysis.clone(),
        schema,
    })
}
