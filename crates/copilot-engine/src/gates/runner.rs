//! Running the gates of a phase concurrently, each under its timeout, and
//! recording the run in the ledger.

use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;

use super::{GateContext, GateResult, Verdict, check};
use copilot_core::model::{Gate, GateSeverity, Outcome, Phase};
use copilot_ledger::{self as ledger, LedgerError};

/// One phase's results, as recorded.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseReport {
    pub run_id: String,
    pub phase: Phase,
    pub outcome: Outcome,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub results: Vec<GateResult>,
}

/// Every phase run for an arena.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    pub arena: String,
    pub release: Option<String>,
    pub phases: Vec<PhaseReport>,
}

impl RunReport {
    pub fn results(&self) -> impl Iterator<Item = &GateResult> {
        self.phases.iter().flat_map(|p| p.results.iter())
    }
}

/// How a run ends, from which the CLI picks its exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunVerdict {
    Passed,
    Failed,
    DependencyFailed,
    Inconclusive,
}

/// Fail beats an unreachable dependency, which beats inconclusive.
pub fn exit_for(report: &RunReport, allow_inconclusive: bool) -> RunVerdict {
    let results: Vec<&GateResult> = report.results().collect();
    if results.iter().any(|r| r.outcome == Outcome::Fail) {
        RunVerdict::Failed
    } else if results.iter().any(|r| r.dependency_failed) {
        RunVerdict::DependencyFailed
    } else if !allow_inconclusive && results.iter().any(|r| r.outcome == Outcome::Inconclusive) {
        RunVerdict::Inconclusive
    } else {
        RunVerdict::Passed
    }
}

fn rank(o: Outcome) -> u8 {
    match o {
        Outcome::Skipped => 0,
        Outcome::Pass => 1,
        Outcome::Warn => 2,
        Outcome::Inconclusive => 3,
        Outcome::Error => 4,
        Outcome::Fail => 5,
    }
}

async fn one(ctx: &GateContext<'_>, gate: &Gate, phase: Phase) -> GateResult {
    let started = Instant::now();
    let mut v = match tokio::time::timeout(gate.timeout.as_std(), check(ctx, gate)).await {
        Ok(v) => v,
        Err(_) => Verdict::inconclusive(
            format!("timed out after {}", gate.timeout),
            json!({ "timeout": gate.timeout.to_string() }),
        ),
    };
    if v.outcome == Outcome::Fail && gate.severity == GateSeverity::Warn {
        v.outcome = Outcome::Warn;
        v.summary = format!("{} (severity: warn)", v.summary);
    }
    GateResult {
        gate: gate.name.clone(),
        kind: gate.kind,
        phase,
        outcome: v.outcome,
        summary: v.summary,
        evidence: v.evidence,
        dependency_failed: v.dependency_failed,
        blocks: v.blocks,
        bypassed: v.bypassed,
        started_at: ctx.now,
        duration_ms: started.elapsed().as_millis() as u64,
    }
}

/// Run `gates` concurrently as one phase and record the run.
pub async fn run(
    ctx: &GateContext<'_>,
    phase: Phase,
    gates: &[&Gate],
    deployment_id: Option<&str>,
) -> Result<PhaseReport, LedgerError> {
    let started = Instant::now();
    let results = futures_util::future::join_all(gates.iter().map(|g| one(ctx, g, phase))).await;
    let outcome = results
        .iter()
        .map(|r| r.outcome)
        .max_by_key(|o| rank(*o))
        .unwrap_or(Outcome::Skipped);
    let duration_ms = started.elapsed().as_millis() as u64;
    let run_id = ledger::new_id("gr");
    let record = ledger::GateRun {
        id: run_id.clone(),
        arena: ctx.arena.name.clone(),
        release_id: ctx.release.map(|r| r.id.clone()),
        deployment_id: deployment_id.map(str::to_string),
        phase: phase.to_string(),
        outcome: outcome.to_string(),
        started_at: ctx.now,
        finished_at: ctx.now + chrono::Duration::milliseconds(duration_ms as i64),
    };
    let rows: Vec<ledger::GateResult> = results
        .iter()
        .map(|r| ledger::GateResult {
            gate: r.gate.clone(),
            kind: r.kind.to_string(),
            outcome: r.outcome.to_string(),
            summary: r.summary.clone(),
            evidence: sqlx::types::Json(r.evidence.clone()),
            started_at: r.started_at,
            duration_ms: r.duration_ms as i64,
        })
        .collect();
    ctx.ledger.record_gate_run(&record, &rows).await?;
    Ok(PhaseReport {
        run_id,
        phase,
        outcome,
        started_at: ctx.now,
        duration_ms,
        results,
    })
}
