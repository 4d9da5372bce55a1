//! `copilot incident open | update | resolve | list | report`: incidents
//! with seed 004's severities, each acted on as the runbook prescribes
//! (SEV1 rolls the arena back at once and pins it; SEV2 gets a decision
//! deadline 15 minutes out that `status` counts down; SEV3 is recorded),
//! the communication template filled in, and the post-incident report.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::progress::CliProgress;
use super::{CliError, CmdResult, Context, Exit, Report, arena};
use copilot_core::clock;
use copilot_core::config::duration::Duration as Dur;
use copilot_engine::incidents::{self, SEV2_DECISION, span_text};
use copilot_ledger::{Incident, IncidentChange, Ledger, NewIncident};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Open an incident on ARENA; SEV1 rolls it back at once and pins it
    Open(OpenArgs),
    /// Record what is known now: status, resolution, ETA
    Update(UpdateArgs),
    /// Mark an incident resolved
    Resolve(ResolveArgs),
    /// Open incidents (all with --all), newest first
    List(ListArgs),
    /// The post-incident report: timeline, times against the targets, post-mortem
    Report(ReportArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Markdown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Status {
    Investigating,
    Identified,
    Resolved,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Investigating => "investigating",
            Status::Identified => "identified",
            Status::Resolved => "resolved",
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct OpenArgs {
    pub arena: String,
    /// 1: roll back at once (site down); 2: decide within 15 minutes
    /// (checkout broken); 3: fix in the next deploy (minor bug)
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub sev: u8,
    /// What customers see
    #[arg(long)]
    pub impact: String,
    /// When impact began, if before now: an RFC 3339 instant or how long ago (`10m`)
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
    #[arg(long)]
    pub eta: Option<String>,
    /// The communication template as text or Markdown
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
pub struct UpdateArgs {
    pub id: String,
    #[arg(long, value_enum)]
    pub status: Option<Status>,
    /// The action taken or planned
    #[arg(long)]
    pub resolution: Option<String>,
    /// When it is expected to be resolved
    #[arg(long)]
    pub eta: Option<String>,
    /// A note for the timeline
    #[arg(long)]
    pub note: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
pub struct ResolveArgs {
    pub id: String,
    /// The action that resolved it
    #[arg(long)]
    pub resolution: Option<String>,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// One arena [default: all]
    pub arena: Option<String>,
    /// Resolved incidents too
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    pub id: String,
    /// Write the Markdown report to FILE instead of printing it
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub async fn run(ctx: &Context, cmd: Command) -> CmdResult {
    match cmd {
        Command::Open(args) => open(ctx, args).await,
        Command::Update(args) => {
            let change = IncidentChange {
                status: args.status.map(|s| s.as_str().to_string()),
                resolution: args.resolution,
                eta: args.eta,
                note: args.note,
            };
            if change.status.is_none()
                && change.resolution.is_none()
                && change.eta.is_none()
                && change.note.is_none()
            {
                return Err(CliError::invalid("nothing to update")
                    .with_hint("give --status, --resolution, --eta or --note"));
            }
            update(ctx, &args.id, change, args.format).await
        }
        Command::Resolve(args) => {
            let change = IncidentChange {
                status: Some("resolved".into()),
                resolution: args.resolution,
                ..IncidentChange::default()
            };
            update(ctx, &args.id, change, args.format).await
        }
        Command::List(args) => list(ctx, args).await,
        Command::Report(args) => report(ctx, args).await,
    }
}

/// `--since`: an instant, or a span before `now`.
fn since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, CliError> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let ago: Dur = text.parse().map_err(|_| {
        CliError::invalid(format!("--since `{text}` is neither an instant nor a span"))
            .with_hint("e.g. --since 2026-12-07T03:00:00Z or --since 10m")
    })?;
    Ok(ago.before(now))
}

async fn open(ctx: &Context, args: OpenArgs) -> CmdResult {
    if args.impact.trim().is_empty() {
        return Err(CliError::invalid("--impact must say what customers see"));
    }
    let (root, loaded) = ctx.project()?;
    let a = arena(&loaded.project, &args.arena)?;
    let ledger = ctx.ledger(Some(&root)).await?;
    let now = clock::now();
    let started = match &args.since {
        Some(t) => since(t, now)?,
        None => now,
    };
    if started > now {
        return Err(CliError::invalid("--since is in the future"));
    }
    let live = ledger.live(a.deploys_into()).await?;
    let severity = i64::from(args.sev);
    let mut incident = ledger
        .open_incident(
            &NewIncident {
                arena: a.deploys_into().to_string(),
                severity,
                status: "investigating".into(),
                impact: args.impact.clone(),
                source: "manual".into(),
                release_id: live.as_ref().map(|l| l.deployment.release_id.clone()),
                deployment_id: live.as_ref().map(|l| l.deployment.id.clone()),
                started_at: started,
                detected_at: now,
                decision_due_at: (severity == 2)
                    .then(|| now + chrono::Duration::from_std(SEV2_DECISION).expect("15 min")),
                opened_by: clock::actor(),
                evidence: json!({}),
            },
            now,
        )
        .await?;
    if let Some(eta) = args.eta {
        incident = change(
            &ledger,
            &incident.id,
            IncidentChange {
                eta: Some(eta),
                ..IncidentChange::default()
            },
        )
        .await?;
    }
    let mut text = String::new();
    let mut rollback = serde_json::Value::Null;
    let mut failure = None;
    match severity {
        1 => {
            // SEV1: immediate rollback; the incident is the reason, and
            // the arena stays pinned until someone unlocks it.
            let progress = CliProgress::new(ctx);
            let exec = ctx.executor(&ledger, &loaded.project, &root, a, &progress)?;
            let reason = format!("incident {} (SEV1): {}", incident.id, args.impact);
            let decided = clock::now();
            match exec.rollback(None, reason, false).await {
                Ok(r) => {
                    let mitigated = clock::now();
                    ledger
                        .incident_rolled_back(&incident.arena, &r.deployment, decided, mitigated)
                        .await?;
                    incident = change(&ledger, &incident.id, IncidentChange {
                        resolution: Some(format!(
                            "rolled back from {} to {} ({} ms); {} is pinned until `copilot unlock {}`",
                            r.from, r.to, r.switch_ms, a.name, a.name
                        )),
                        note: Some(format!("rollback {}", r.deployment)),
                        ..IncidentChange::default()
                    })
                    .await?;
                    text.push_str(&format!(
                        "Rolled {} back from {} to {} in {} ms and pinned it (rollback {})\n\n",
                        a.name, r.from, r.to, r.switch_ms, r.deployment
                    ));
                    rollback = serde_json::to_value(&r).expect("json");
                }
                Err(e) => failure = Some(CliError::from(e)),
            }
        }
        2 => text.push_str(&format!(
            "SEV2: decide within 15 minutes, by {} (`copilot status {}` counts down): `copilot rollback {}`, or `copilot incident update {} --status identified --resolution ...` to fix forward\n\n",
            incidents::utc(incident.decision_due_at.unwrap_or(now)),
            a.name,
            a.name,
            incident.id
        )),
        _ => text.push_str("SEV3: recorded; fix in the next deploy\n\n"),
    }
    let release = release_of(&ledger, &incident).await?;
    let communication = incidents::communication(
        &root,
        &incident,
        release.as_deref(),
        args.format == Format::Markdown,
    )?;
    if let Some(mut e) = failure {
        // The incident stands; what could not be done is the error.
        e.message = format!(
            "incident {} is open, but the SEV1 rollback of {} failed: {}",
            incident.id, a.name, e.message
        );
        eprint!("{communication}");
        return Err(e);
    }
    text.push_str(&communication);
    Ok(Report::new(
        json!({
            "incident": incidents::template_fields(&incident, release.as_deref()),
            "rollback": rollback,
            "communication": communication,
        }),
        text,
    ))
}

async fn change(ledger: &Ledger, id: &str, c: IncidentChange) -> Result<Incident, CliError> {
    Ok(ledger
        .update_incident(id, &c, &clock::actor(), clock::now())
        .await?)
}

/// The version of the release an incident is about.
async fn release_of(ledger: &Ledger, i: &Incident) -> Result<Option<String>, CliError> {
    Ok(match &i.release_id {
        Some(id) => ledger.release_by_id(id).await?.map(|r| r.version),
        None => None,
    })
}

async fn update(ctx: &Context, id: &str, c: IncidentChange, format: Format) -> CmdResult {
    let root = ctx.root()?;
    let ledger = ctx.ledger(Some(&root)).await?;
    let incident = change(&ledger, id, c).await?;
    let release = release_of(&ledger, &incident).await?;
    let communication = incidents::communication(
        &root,
        &incident,
        release.as_deref(),
        format == Format::Markdown,
    )?;
    Ok(Report::new(
        json!({
            "incident": incidents::template_fields(&incident, release.as_deref()),
            "communication": communication,
        }),
        communication,
    ))
}

async fn list(ctx: &Context, args: ListArgs) -> CmdResult {
    let root = ctx.root()?;
    let ledger = ctx.ledger(Some(&root)).await?;
    let all = ledger.incidents(args.arena.as_deref(), args.all).await?;
    let mut table = super::Table::new(["ID", "ARENA", "SEV", "STATUS", "STARTED", "IMPACT"]);
    for i in &all {
        table.row([
            i.id.clone(),
            i.arena.clone(),
            format!("SEV{}", i.severity),
            i.status.clone(),
            super::when(i.started_at),
            i.impact.clone(),
        ]);
    }
    let text = if all.is_empty() {
        "No open incidents\n".to_string()
    } else {
        table.render()
    };
    Ok(Report::new(json!({ "incidents": all }), text))
}

async fn report(ctx: &Context, args: ReportArgs) -> CmdResult {
    let root = ctx.root()?;
    let ledger = ctx.ledger(Some(&root)).await?;
    let incident = ledger.incident(&args.id).await?;
    let release = release_of(&ledger, &incident).await?;
    let r = incidents::report(&ledger, &incident, release.as_deref(), clock::now()).await?;
    let communication = incidents::communication(&root, &incident, release.as_deref(), true)?;
    let markdown = incidents::report_markdown(&r, &communication);
    let missed: Vec<String> = r
        .timings
        .iter()
        .filter(|t| t.met == Some(false))
        .map(|t| {
            format!(
                "{} {}",
                t.phase,
                t.measured_ms.map_or("-".into(), span_text)
            )
        })
        .collect();
    let text = match &args.out {
        Some(path) => {
            std::fs::write(path, &markdown).map_err(|e| CliError::io("write", path, &e))?;
            format!(
                "Wrote the report of {} to {} ({} timeline entries)\n",
                incident.id,
                path.display(),
                r.timeline.len()
            )
        }
        None => markdown.clone(),
    };
    let mut doc = serde_json::to_value(&r).expect("json");
    doc["markdown"] = json!(markdown);
    doc["missed"] = json!(missed);
    Ok(Report {
        json: doc,
        text,
        exit: Exit::Success,
    })
}
