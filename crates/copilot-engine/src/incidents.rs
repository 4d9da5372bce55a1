//! Incidents: severities and what each prescribes (seed 004), the rollback
//! time targets they are held to (seed 003), the communication template,
//! and the post-incident report drawn from the ledger.
//!
//! An incident records four instants: impact began (`started_at`), it was
//! detected (`detected_at`: opened by a person, or the first bad
//! measurement of an analysis), the decision to roll back was taken
//! (`decided_at`: the rollback started) and traffic was back on the good
//! release (`mitigated_at`). Detection, decision and execution are the
//! spans between them, total the span from start to traffic back.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};

use copilot_core::model::Arena;
use copilot_core::render::{RenderError, render_document};
use copilot_ledger::{Incident, IncidentChange, Ledger, LedgerError, NewIncident, Step};

/// Where a project's communication template lives (`init` writes it).
pub const TEMPLATE: &str = "templates/incident.md.j2";

/// How long a SEV2 has before someone decides (seed 004: "assess within 15 min").
pub const SEV2_DECISION: Duration = Duration::from_secs(15 * 60);

/// Seed 003's rollback time targets of one severity.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Targets {
    /// Seed 003's name for the severity: critical, high, medium.
    pub class: &'static str,
    pub detection: Duration,
    pub decision: Duration,
    pub execution: Duration,
    pub total: Duration,
}

const fn minutes(m: u64) -> Duration {
    Duration::from_secs(m * 60)
}

/// The targets of severity 1 (critical), 2 (high) or 3 (medium).
pub fn targets(severity: i64) -> Targets {
    match severity {
        1 => Targets {
            class: "critical",
            detection: minutes(2),
            decision: minutes(3),
            execution: minutes(5),
            total: minutes(10),
        },
        2 => Targets {
            class: "high",
            detection: minutes(5),
            decision: minutes(10),
            execution: minutes(5),
            total: minutes(20),
        },
        _ => Targets {
            class: "medium",
            detection: minutes(15),
            decision: minutes(30),
            execution: minutes(5),
            total: minutes(50),
        },
    }
}

/// What a severity prescribes, in seed 004's words.
pub fn response(severity: i64) -> &'static str {
    match severity {
        1 => "immediate rollback",
        2 => "assess within 15 min",
        _ => "fix in next deploy",
    }
}

/// One span measured against its target.
#[derive(Clone, Debug, Serialize)]
pub struct Timing {
    /// detection, decision, execution, total.
    pub phase: &'static str,
    /// Not measured yet (no rollback yet) when `None`.
    pub measured_ms: Option<u64>,
    pub target_ms: u64,
    pub met: Option<bool>,
}

impl Timing {
    /// `measured` against `target`; not judged while not measured.
    pub fn against(phase: &'static str, measured: Option<u64>, target: Duration) -> Timing {
        let target_ms = target.as_millis() as u64;
        Timing {
            phase,
            measured_ms: measured,
            target_ms,
            met: measured.map(|m| m < target_ms),
        }
    }
}

/// The four spans of `i` against its severity's targets.
pub fn timings(i: &Incident) -> Vec<Timing> {
    let t = targets(i.severity);
    let span = |from: Option<DateTime<Utc>>, to: Option<DateTime<Utc>>| match (from, to) {
        (Some(a), Some(b)) => Some((b - a).num_milliseconds().max(0) as u64),
        _ => None,
    };
    let timing = Timing::against;
    vec![
        timing(
            "detection",
            span(Some(i.started_at), Some(i.detected_at)),
            t.detection,
        ),
        timing(
            "decision",
            span(Some(i.detected_at), i.decided_at),
            t.decision,
        ),
        timing("execution", span(i.decided_at, i.mitigated_at), t.execution),
        timing("total", span(Some(i.started_at), i.mitigated_at), t.total),
    ]
}

/// `1m 05s`, `850 ms`.
pub fn span_text(ms: u64) -> String {
    match ms {
        ms if ms < 10_000 => format!("{ms} ms"),
        ms if ms < 60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        ms => format!("{}m {:02}s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

/// `Investigating`, `Identified`, `Resolved`.
pub fn status_label(status: &str) -> String {
    let mut c = status.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// A timestamp as the template prints it.
pub fn utc(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// Render the communication template (the project's, else the built-in
/// one) for `i`: seed 004's block as text, or as Markdown.
pub fn communication(
    root: &Path,
    i: &Incident,
    release: Option<&str>,
    markdown: bool,
) -> Result<String, RenderError> {
    let ctx = json!({ "markdown": markdown, "incident": template_fields(i, release) });
    render_document(root, TEMPLATE, &ctx)
}

/// Render the communication template for a made-up SEV2 in both forms, as
/// `validate` does: a template that names a field that does not exist, or
/// does not parse, is found before an incident needs it.
pub fn check_template(root: &Path) -> Result<(), RenderError> {
    let at = DateTime::<Utc>::UNIX_EPOCH;
    let sample = Incident {
        id: "inc_validate".into(),
        arena: "production".into(),
        severity: 2,
        status: "investigating".into(),
        impact: "checkout broken".into(),
        resolution: None,
        eta: None,
        source: "manual".into(),
        release_id: None,
        deployment_id: None,
        rollback_deployment_id: None,
        started_at: at,
        detected_at: at,
        decision_due_at: Some(at),
        decided_at: None,
        mitigated_at: None,
        resolved_at: None,
        opened_by: "validate".into(),
        evidence: copilot_ledger::Json(json!({})),
        updated_at: at,
    };
    for markdown in [false, true] {
        communication(root, &sample, Some("v1"), markdown)?;
    }
    Ok(())
}

/// The fields the template sees (also the JSON form of an incident).
pub fn template_fields(i: &Incident, release: Option<&str>) -> Value {
    json!({
        "id": i.id,
        "arena": i.arena,
        "severity": format!("SEV{}", i.severity),
        "response": response(i.severity),
        "status": status_label(&i.status),
        "impact": i.impact,
        "start_time": utc(i.started_at),
        "detected_at": utc(i.detected_at),
        "resolution": i.resolution,
        "eta": i.eta,
        "release": release,
        "source": i.source,
        "decision_due": i.decision_due_at.map(utc),
        "rolled_back_at": i.mitigated_at.map(utc),
        "resolved_at": i.resolved_at.map(utc),
    })
}

/// The breach an analysis rolled back on, read from a deployment's steps:
/// the bake that breached, the metric, and when its first bad
/// measurement came.
#[derive(Clone, Debug)]
pub struct Breach {
    pub metric: String,
    pub measured: String,
    pub limit: String,
    pub step: String,
    /// Where in the rollout: `at 10% of traffic`, `in cohort pilot`.
    pub at: String,
    /// Traffic first reached the new release.
    pub started: DateTime<Utc>,
    /// The metric's first failed measurement in the breaching bake.
    pub detected: DateTime<Utc>,
    /// The bake concluded: the rollback started.
    pub decided: DateTime<Utc>,
    /// Traffic was back on the previous release.
    pub mitigated: Option<DateTime<Utc>>,
    /// The breaching bake's report.
    pub report: Value,
}

/// The breach in `steps`, if an analysis rolled the deployment back.
pub fn breach(steps: &[Step]) -> Option<Breach> {
    let (at, bake) = steps.iter().enumerate().find(|(_, s)| {
        s.name.starts_with("bake-")
            && s.outcome
                .as_ref()
                .is_some_and(|o| o.0["verdict"]["verdict"] == "breached")
    })?;
    let report = bake.outcome.as_ref()?.0.clone();
    let verdict = &report["verdict"];
    let metric = verdict["metric"].as_str()?.to_string();
    let first_bad = report["metrics"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == metric.as_str()))
        .and_then(|m| m["measurements"].as_array())
        .and_then(|ms| ms.iter().find(|x| x["outcome"] == "fail"))
        .and_then(|x| x["at_ms"].as_u64())
        .unwrap_or(0);
    let started = steps
        .iter()
        .find(|s| s.name.starts_with("shift-"))
        .map_or(bake.started_at, |s| s.finished_at.unwrap_or(s.started_at));
    let decided = bake.finished_at.unwrap_or(bake.started_at);
    let mitigated = steps[at..]
        .iter()
        .find(|s| s.name == "rollback" && s.state == "done")
        .and_then(|s| s.finished_at)
        .or_else(|| {
            steps[at..]
                .iter()
                .find(|s| s.name == "take-down" && s.state == "done")
                .and_then(|s| s.finished_at)
        });
    let at = match (
        bake.intent.0["cohort"].as_str(),
        bake.intent.0["weight"].as_u64(),
    ) {
        (Some(cohort), _) => format!("in cohort {cohort}"),
        (None, Some(w)) => format!("at {w}% of traffic"),
        (None, None) => format!("in {}", bake.name),
    };
    Some(Breach {
        at,
        measured: verdict["measured"].as_str().unwrap_or_default().to_string(),
        limit: verdict["limit"].as_str().unwrap_or_default().to_string(),
        metric,
        step: bake.name.clone(),
        started,
        detected: (bake.started_at + chrono::Duration::milliseconds(first_bad as i64)).min(decided),
        decided,
        mitigated,
        report,
    })
}

/// After a deployment of `arena` ended rolled back: when an analysis did it,
/// open an incident of the acting metric's severity with the bake's report
/// as evidence, already decided and mitigated by that rollback. `None`
/// when something else rolled it back (after gates).
pub async fn open_for_analysis(
    ledger: &Ledger,
    arena: &Arena,
    deployment: &str,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<Option<Incident>, LedgerError> {
    let steps = ledger.steps(deployment).await?;
    let Some(b) = breach(&steps) else {
        return Ok(None);
    };
    let d = ledger.deployment(deployment).await?;
    let severity = arena
        .strategy
        .analysis
        .as_ref()
        .and_then(|a| a.metrics.iter().find(|m| m.name == b.metric))
        .map_or(2, |m| i64::from(m.severity));
    let version = d.as_ref().map_or("the new release", |d| d.version.as_str());
    let opened = ledger
        .open_incident(
            &NewIncident {
                arena: arena.deploys_into().to_string(),
                severity,
                status: "identified".into(),
                impact: format!(
                    "{} {} > {} on {version} {}",
                    b.metric, b.measured, b.limit, b.at
                ),
                source: "analysis".into(),
                release_id: d.as_ref().map(|d| d.deployment.release_id.clone()),
                deployment_id: Some(deployment.to_string()),
                started_at: b.started,
                detected_at: b.detected,
                decision_due_at: None,
                opened_by: actor.to_string(),
                evidence: json!({
                    "deployment": deployment, "step": b.step, "metric": b.metric,
                    "measured": b.measured, "limit": b.limit, "bake": b.report,
                }),
            },
            now,
        )
        .await?;
    if let Some(mitigated) = b.mitigated {
        ledger
            .incident_rolled_back(&opened.arena, deployment, b.decided, mitigated)
            .await?;
    }
    let previous = match d
        .as_ref()
        .and_then(|d| d.deployment.previous_release_id.as_deref())
    {
        Some(id) => ledger.release_by_id(id).await?.map(|r| r.version),
        None => None,
    };
    let resolution = match previous {
        Some(v) => format!("rolled back automatically to {v}"),
        None => format!("{version} taken down automatically (nothing to roll back to)"),
    };
    let updated = ledger
        .update_incident(
            &opened.id,
            &IncidentChange {
                resolution: Some(resolution),
                note: Some("analysis rolled back".into()),
                ..IncidentChange::default()
            },
            actor,
            now,
        )
        .await?;
    Ok(Some(updated))
}

/// One line of an incident's timeline.
#[derive(Clone, Debug, Serialize)]
pub struct Entry {
    pub at: DateTime<Utc>,
    /// deployment, step, gate, analysis, audit, incident.
    pub kind: &'static str,
    pub what: String,
}

/// The post-incident report of seed 003's step 4.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub incident: Value,
    pub targets: Targets,
    pub timings: Vec<Timing>,
    pub timeline: Vec<Entry>,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// Everything the ledger holds about `arena` in the incident's window:
/// from an hour before it started (the deployment that may have caused
/// it) to its resolution, or `now` while it is open.
pub async fn report(
    ledger: &Ledger,
    i: &Incident,
    release: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Report, LedgerError> {
    let from = i.started_at - chrono::Duration::hours(1);
    let to = i.resolved_at.unwrap_or(now).max(i.started_at);
    let within = |at: DateTime<Utc>| at >= from && at <= to;
    let mut timeline = Vec::new();
    let mut seen = Vec::new();
    for d in ledger.history(Some(&i.arena), 200).await? {
        let dep = &d.deployment;
        if !within(dep.started_at) && !dep.finished_at.is_some_and(within) {
            continue;
        }
        seen.push(dep.id.clone());
        timeline.push(Entry {
            at: dep.started_at,
            kind: "deployment",
            what: format!(
                "{} {} of {} started{}",
                dep.kind,
                dep.id,
                d.version,
                dep.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ),
        });
        for s in ledger.steps(&dep.id).await? {
            let at = s.finished_at.unwrap_or(s.started_at);
            timeline.push(Entry {
                at,
                kind: "step",
                what: format!("{} step `{}` {}", dep.id, s.name, s.state),
            });
            if let Some(samples) = analysis_line(&s) {
                timeline.push(Entry {
                    at,
                    kind: "analysis",
                    what: samples,
                });
            }
        }
        for run in ledger.gate_runs(Some(&i.arena), Some(&dep.id), 50).await? {
            let results = ledger.gate_results(&run.id).await?;
            let gates: Vec<String> = results
                .iter()
                .map(|r| format!("{} {}", r.gate, r.outcome))
                .collect();
            timeline.push(Entry {
                at: run.finished_at,
                kind: "gate",
                what: format!("{} gates {}: {}", run.phase, run.outcome, gates.join(", ")),
            });
        }
        if let Some(end) = dep.finished_at {
            timeline.push(Entry {
                at: end,
                kind: "deployment",
                what: format!("{} {} {}", dep.kind, dep.id, dep.state),
            });
        }
    }
    for a in ledger.audit_log(Some(&i.arena), 500).await? {
        // A deployment's own closing entry is in the timeline already.
        let of_deployment = a
            .subject
            .as_deref()
            .is_some_and(|s| seen.iter().any(|d| d == s));
        if !within(a.at) || a.action == "clock.override" || of_deployment {
            continue;
        }
        timeline.push(Entry {
            at: a.at,
            kind: "audit",
            what: format!(
                "{} by {}{}",
                a.action,
                a.actor,
                a.reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
        });
    }
    for u in ledger.incident_updates(&i.id).await? {
        let mut what = format!("{} {} by {}", i.id, u.status, u.actor);
        for (label, v) in [
            ("", &u.note),
            ("resolution: ", &u.resolution),
            ("ETA: ", &u.eta),
        ] {
            if let Some(v) = v {
                what.push_str(&format!("; {label}{v}"));
            }
        }
        timeline.push(Entry {
            at: u.at,
            kind: "incident",
            what,
        });
    }
    for (at, what) in [
        (Some(i.started_at), "impact began"),
        (Some(i.detected_at), "detected"),
        (i.decided_at, "decision: roll back"),
        (i.mitigated_at, "traffic back on the previous release"),
    ] {
        if let Some(at) = at {
            timeline.push(Entry {
                at,
                kind: "incident",
                what: format!("{}: {what}", i.id),
            });
        }
    }
    timeline.sort_by_key(|e| e.at);
    Ok(Report {
        incident: template_fields(i, release),
        targets: targets(i.severity),
        timings: timings(i),
        timeline,
        from,
        to,
    })
}

/// A bake's measurements in a line: `bake-10 error_rate: pass 0.0%, fail 48.0%`.
fn analysis_line(s: &Step) -> Option<String> {
    if !s.name.starts_with("bake-") {
        return None;
    }
    let o = &s.outcome.as_ref()?.0;
    let metrics: Vec<String> = o["metrics"]
        .as_array()?
        .iter()
        .map(|m| {
            let samples: Vec<String> = m["measurements"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|x| {
                    let outcome = x["outcome"].as_str().unwrap_or("?");
                    match x["value"].as_str() {
                        Some(v) => format!("{outcome} {v}"),
                        None => outcome.to_string(),
                    }
                })
                .collect();
            format!(
                "{} [{}]",
                m["name"].as_str().unwrap_or("?"),
                samples.join(", ")
            )
        })
        .collect();
    let verdict = o["verdict"]["verdict"].as_str().unwrap_or("?");
    Some(format!("{} {verdict}: {}", s.name, metrics.join("; ")))
}

/// The report as Markdown: the incident, the targets table, the timeline
/// and an empty post-mortem.
pub fn report_markdown(r: &Report, communication: &str) -> String {
    let i = &r.incident;
    let mut s = format!(
        "# Incident report: {} ({}, {})\n\n",
        i["id"].as_str().unwrap_or_default(),
        i["severity"].as_str().unwrap_or_default(),
        i["arena"].as_str().unwrap_or_default()
    );
    s.push_str(communication.trim_end());
    s.push_str("\n\n## Rollback times against the targets\n\n");
    s.push_str(&format!(
        "Seed 003's targets for a {} incident.\n\n| Phase | Measured | Target | Met |\n|---|---|---|---|\n",
        r.targets.class
    ));
    for t in &r.timings {
        s.push_str(&format!(
            "| {} | {} | < {} | {} |\n",
            t.phase,
            t.measured_ms.map_or("not yet".into(), span_text),
            span_text(t.target_ms),
            match t.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "-",
            }
        ));
    }
    s.push_str(&format!(
        "\n## Timeline ({} to {})\n\n| Time (UTC) | Kind | What |\n|---|---|---|\n",
        utc(r.from),
        utc(r.to)
    ));
    for e in &r.timeline {
        s.push_str(&format!(
            "| {} | {} | {} |\n",
            e.at.format("%H:%M:%S%.3f"),
            e.kind,
            e.what.replace('|', "\\|")
        ));
    }
    s.push_str(
        "\n## Post-mortem\n\n### What happened\n\n\n### Why it was not caught before the release\n\n\n\
         ### What went well\n\n\n### What went badly\n\n\n### Action items\n\n| Action | Owner | Due |\n|---|---|---|\n|  |  |  |\n\n\
         ### Runbooks to update\n\n",
    );
    s
}
