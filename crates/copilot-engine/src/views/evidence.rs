//! `evidence`: one deployment as a release ticket: what it was, every step
//! with its intent and outcome, the gate runs with their results, and the
//! last lines of the logs of what it started.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;

use copilot_core::provider::Slot;
use copilot_ledger::{DeploymentRow, GateResult, GateRun, Ledger, LedgerError, Step};

#[derive(Clone, Debug, Serialize)]
pub struct EvidenceView {
    pub deployment: DeploymentRow,
    pub steps: Vec<Step>,
    /// Oldest first.
    pub gate_runs: Vec<GateRunView>,
    pub logs: Vec<LogExcerpt>,
}

#[derive(Clone, Debug, Serialize)]
pub struct GateRunView {
    pub run: GateRun,
    pub results: Vec<GateResult>,
}

/// The last lines of the log of a colour the deployment started.
#[derive(Clone, Debug, Serialize)]
pub struct LogExcerpt {
    pub slot: Slot,
    pub file: PathBuf,
    pub excerpt: String,
}

/// How many log lines an excerpt keeps.
const EXCERPT_LINES: usize = 15;

/// The evidence of the deployment `reference` (an id or a unique prefix);
/// `None` when none matches.
pub async fn evidence(
    root: &Path,
    ledger: &Ledger,
    reference: &str,
) -> Result<Option<EvidenceView>, LedgerError> {
    let Some(d) = ledger.deployment(reference).await? else {
        return Ok(None);
    };
    let dep = &d.deployment;
    let steps = ledger.steps(&dep.id).await?;
    let runs = ledger.gate_runs(None, Some(&dep.id), 50).await?;
    let mut gate_runs = Vec::new();
    for run in runs.into_iter().rev() {
        let results = ledger.gate_results(&run.id).await?;
        gate_runs.push(GateRunView { run, results });
    }
    // Log excerpts of the colours this deployment started (local provider).
    let mut logs = Vec::new();
    for s in steps
        .iter()
        .filter(|s| s.name == "deploy-idle" || s.name == "redeploy-previous")
    {
        let slot = match s.intent.0.get("slot").and_then(Value::as_str) {
            Some("blue") => Slot::Blue,
            Some("green") => Slot::Green,
            _ => continue,
        };
        let file = copilot_provider_local::log_file(root, &dep.arena, slot, &d.version);
        if let Ok(text) = std::fs::read_to_string(&file) {
            let lines: Vec<&str> = text.lines().collect();
            let excerpt = lines[lines.len().saturating_sub(EXCERPT_LINES)..].join("\n");
            logs.push(LogExcerpt {
                slot,
                file,
                excerpt,
            });
        }
    }
    Ok(Some(EvidenceView {
        deployment: d,
        steps,
        gate_runs,
        logs,
    }))
}
