//! Promotion gates: every kind, the concurrent runner, and the reports.
//!
//! A gate checks one thing against its real dependency and returns an
//! [`Outcome`] with evidence: what was measured, against which threshold,
//! from which source. Gates of one phase run concurrently, each under its
//! own timeout; every run is recorded in the ledger.

mod alerts;
mod approval;
mod backup;
mod bake;
mod command;
mod env;
mod health;
pub(crate) mod http;
mod ingestion;
mod latency;
pub mod migrations;
mod queue_health;
pub mod report;
pub(crate) mod resolve;
mod runner;
mod smoke;
mod window;

use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use copilot_core::model::{Arena, Gate, GateKind, Outcome, Phase, Project};
use copilot_ledger::{Ledger, Release};

pub use http::excerpt as report_excerpt;
pub use resolve::{Resolved, resolve_reference};
pub use runner::{PhaseReport, RunReport, RunVerdict, exit_for, run};

/// What every gate can see.
pub struct GateContext<'a> {
    pub project: &'a Project,
    pub root: &'a Path,
    /// The arena being entered.
    pub arena: &'a Arena,
    /// The arena the release comes from, for gates that measure it.
    pub source: Option<&'a Arena>,
    /// The release being promoted, when known.
    pub release: Option<&'a Release>,
    pub ledger: &'a Ledger,
    pub now: DateTime<Utc>,
    /// Base URL of the service under test (after gates, HTTP gates).
    pub target_url: Option<String>,
    /// Base URL of the source arena's service (queue-health on the memory driver).
    pub source_url: Option<String>,
    /// A reason given to bypass deploy windows.
    pub bypass_reason: Option<String>,
    pub actor: String,
    pub http: reqwest::Client,
    /// The gates decide a change that is about to be made (a promotion),
    /// not a report: a freeze that cannot be bypassed is then also read by
    /// the real clock, so a pinned `COPILOT_NOW` cannot lift it.
    pub acting: bool,
}

impl GateContext<'_> {
    /// The arena a gate measures: the source for `subject: source`, else the target.
    pub fn subject(&self, source: bool) -> &Arena {
        match (source, self.source) {
            (true, Some(s)) => s,
            _ => self.arena,
        }
    }

    /// The service URL of the arena a gate measures.
    pub fn url_for(&self, source: bool) -> Option<String> {
        let (explicit, arena) = match (source, self.source) {
            (true, Some(s)) => (self.source_url.clone(), s),
            _ => (self.target_url.clone(), self.arena),
        };
        explicit
            .or_else(|| arena.env.values.get("APP_URL").cloned())
            .map(|u| u.trim_end_matches('/').to_string())
    }

    /// A path in the project, or an absolute one.
    pub fn project_path(&self, p: &str) -> std::path::PathBuf {
        let path = Path::new(p);
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.root.join(path)
        }
    }
}

/// What one gate concluded.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    pub outcome: Outcome,
    pub summary: String,
    pub evidence: Value,
    /// A dependency (database, Redis, Alertmanager...) could not be reached.
    pub dependency_failed: bool,
    /// A failure that means "not allowed now" (window, approval): blocked, not broken.
    pub blocks: bool,
    /// A deploy window or freeze was passed with a reason (recorded in the
    /// audit log by [`audit_bypass`]).
    pub bypassed: bool,
}

impl Verdict {
    fn new(outcome: Outcome, summary: impl Into<String>, evidence: Value) -> Self {
        Verdict {
            outcome,
            summary: summary.into(),
            evidence,
            dependency_failed: false,
            blocks: false,
            bypassed: false,
        }
    }
    pub fn pass(summary: impl Into<String>, evidence: Value) -> Self {
        Self::new(Outcome::Pass, summary, evidence)
    }
    pub fn fail(summary: impl Into<String>, evidence: Value) -> Self {
        Self::new(Outcome::Fail, summary, evidence)
    }
    pub fn warn(summary: impl Into<String>, evidence: Value) -> Self {
        Self::new(Outcome::Warn, summary, evidence)
    }
    pub fn inconclusive(summary: impl Into<String>, evidence: Value) -> Self {
        Self::new(Outcome::Inconclusive, summary, evidence)
    }
    pub fn skipped(summary: impl Into<String>) -> Self {
        Self::new(Outcome::Skipped, summary, Value::Null)
    }
    /// A dependency could not be reached: `error`, and exit 3.
    pub fn unreachable(summary: impl Into<String>, evidence: Value) -> Self {
        Verdict {
            dependency_failed: true,
            ..Self::new(Outcome::Error, summary, evidence)
        }
    }
    fn blocking(mut self) -> Self {
        self.blocks = true;
        self
    }
    fn bypassing(mut self) -> Self {
        self.bypassed = true;
        self
    }
}

/// One gate's result as reported and recorded.
#[derive(Clone, Debug, Serialize)]
pub struct GateResult {
    pub gate: String,
    pub kind: GateKind,
    pub phase: Phase,
    pub outcome: Outcome,
    pub summary: String,
    pub evidence: Value,
    pub dependency_failed: bool,
    pub blocks: bool,
    /// A window passed with a reason; see [`audit_bypass`].
    #[serde(skip)]
    pub bypassed: bool,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
}

/// Record in the audit log a deploy window passed with `reason` in
/// `report`, if one was: who, which arena, which release or deployment
/// (`subject`), the gate and what it said.
pub async fn audit_bypass(
    ledger: &Ledger,
    report: &RunReport,
    actor: &str,
    subject: Option<String>,
    reason: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), copilot_ledger::LedgerError> {
    let Some(w) = report.results().find(|r| r.bypassed) else {
        return Ok(());
    };
    ledger
        .audit(
            &copilot_ledger::NewAudit {
                actor: actor.to_string(),
                action: "window.bypass".into(),
                arena: Some(report.arena.clone()),
                subject,
                reason: reason.map(str::to_string),
                detail: serde_json::json!({ "gate": w.gate, "summary": w.summary }),
            },
            now,
        )
        .await
}

/// Turn a gate's JSON parameters back into their typed form.
fn params<P: serde::de::DeserializeOwned + Default>(gate: &Gate) -> Result<P, Verdict> {
    if gate.params.is_null() {
        return Ok(P::default());
    }
    serde_json::from_value(gate.params.clone()).map_err(|e| {
        Verdict::fail(
            format!("parameters do not fit the {} gate: {e}", gate.kind),
            Value::Null,
        )
    })
}

/// Run one gate (without its timeout; the runner adds it).
pub async fn check(ctx: &GateContext<'_>, gate: &Gate) -> Verdict {
    macro_rules! run {
        ($module:ident) => {
            match params(gate) {
                Ok(p) => $module::check(ctx, gate, p).await,
                Err(v) => v,
            }
        };
    }
    match gate.kind {
        GateKind::Migrations => run!(migrations),
        GateKind::QueueHealth => run!(queue_health),
        GateKind::Ingestion => run!(ingestion),
        GateKind::Latency => run!(latency),
        GateKind::Health => run!(health),
        GateKind::Alerts => run!(alerts),
        GateKind::Window => run!(window),
        GateKind::Env => run!(env),
        GateKind::Smoke => run!(smoke),
        GateKind::Backup => run!(backup),
        GateKind::Bake => run!(bake),
        GateKind::Approval => run!(approval),
        GateKind::Command => run!(command),
    }
}
