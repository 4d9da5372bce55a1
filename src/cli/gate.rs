//! `copilot gate list [ARENA]` and `copilot gate run ARENA`.

use std::io::Write as _;
use std::path::PathBuf;

use serde_json::json;

use super::{CliError, CmdResult, Context, Exit, Report, Table, arena};
use copilot_core::clock;
use copilot_core::model::{Gate, Phase};
use copilot_engine::gates::{self, GateContext, RunReport, RunVerdict};
use copilot_engine::views;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// The gates of each arena, by phase
    List {
        /// One arena [default: all]
        arena: Option<String>,
    },
    /// Run an arena's gates; the exit code says how they went
    Run(RunArgs),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PhaseArg {
    Before,
    After,
    All,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The arena being entered
    pub arena: String,
    /// Run only these gates (repeatable)
    #[arg(long = "gate", value_name = "NAME")]
    pub gates: Vec<String>,
    /// Which phase to run
    #[arg(long, value_enum, default_value_t = PhaseArg::All)]
    pub phase: PhaseArg,
    /// The release being promoted [default: the one live in the source arena]
    #[arg(long, value_name = "REF")]
    pub release: Option<String>,
    /// The arena the release comes from [default: the arena's promotes_from]
    #[arg(long, value_name = "ARENA")]
    pub from: Option<String>,
    /// Base URL of the service under test [default: the arena's APP_URL]
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Base URL of the source arena's service [default: its APP_URL]
    #[arg(long, value_name = "URL")]
    pub source_url: Option<String>,
    /// Bypass deploy windows where the arena allows it; recorded in the audit log
    #[arg(long)]
    pub reason: Option<String>,
    /// Write a JUnit XML report
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Exit 0 when gates are inconclusive but none failed
    #[arg(long)]
    pub allow_inconclusive: bool,
    /// Report the run as a GitHub check run on the release's commit, one
    /// annotation per gate that did not pass (GITHUB_TOKEN, GITHUB_REPOSITORY)
    #[cfg(feature = "github")]
    #[arg(long)]
    pub github_check: bool,
}

pub async fn run(ctx: &Context, cmd: Command) -> CmdResult {
    match cmd {
        Command::List { arena: name } => list(ctx, name),
        Command::Run(args) => run_gates(ctx, args).await,
    }
}

fn list(ctx: &Context, name: Option<String>) -> CmdResult {
    let (_, loaded) = ctx.project()?;
    let p = &loaded.project;
    let arenas: Vec<_> = match &name {
        Some(n) => vec![arena(p, n)?],
        None => {
            let mut all: Vec<_> = p.arenas.values().collect();
            all.sort_by_key(|a| (a.tier, a.name.clone()));
            all
        }
    };
    let mut t = Table::new(["ARENA", "PHASE", "GATE", "KIND", "TIMEOUT", "SEVERITY"]);
    let mut items = Vec::new();
    for a in arenas {
        for phase in Phase::ALL {
            for g in a.gates.for_phase(*phase) {
                let gate = &p.gates[g];
                t.row([
                    a.name.clone(),
                    phase.to_string(),
                    g.clone(),
                    gate.kind.to_string(),
                    gate.timeout.to_string(),
                    gate.severity.to_string(),
                ]);
                items.push(json!({ "arena": a.name, "phase": phase, "gate": g, "kind": gate.kind, "timeout": gate.timeout, "severity": gate.severity }));
            }
        }
    }
    Ok(Report::new(json!({ "gates": items }), t.render()))
}

async fn run_gates(ctx: &Context, args: RunArgs) -> CmdResult {
    let (root, loaded) = ctx.project()?;
    let project = &loaded.project;
    let target = arena(project, &args.arena)?;
    let source = match args.from.as_deref().or(target.promotes_from.as_deref()) {
        Some(name) => Some(arena(project, name)?),
        None => None,
    };
    for g in &args.gates {
        if !project.gates.contains_key(g) {
            let names: Vec<&str> = project.gates.keys().map(String::as_str).collect();
            return Err(CliError::invalid(format!("no gate named `{g}`"))
                .with_hint(copilot_core::config::diag::suggest(g, &names)));
        }
    }
    if args.reason.as_deref().is_some_and(|r| r.trim().is_empty()) {
        return Err(CliError::invalid("--reason must say why"));
    }
    let ledger = ctx.ledger(Some(&root)).await?;
    let release = views::candidate(&ledger, args.release.as_deref(), source).await?;
    let now = clock::now();
    let gctx = GateContext {
        acting: false,
        project,
        root: &root,
        arena: target,
        source,
        release: release.as_ref(),
        ledger: &ledger,
        now,
        target_url: args.url.clone(),
        source_url: args.source_url.clone(),
        bypass_reason: args.reason.clone(),
        actor: clock::actor(),
        http: reqwest::Client::builder()
            .user_agent(concat!("copilot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| CliError::new(Exit::Dependency, format!("HTTP client: {e}")))?,
    };

    // Which gates, in which phase.
    let phases: Vec<Phase> = match args.phase {
        PhaseArg::Before => vec![Phase::Before],
        PhaseArg::After => vec![Phase::After],
        PhaseArg::All => vec![Phase::Before, Phase::After],
    };
    let mut report = RunReport {
        arena: target.name.clone(),
        release: release.as_ref().map(|r| r.version.clone()),
        phases: Vec::new(),
    };
    for phase in phases {
        let names: Vec<&String> = if args.gates.is_empty() {
            target.gates.for_phase(phase).iter().collect()
        } else {
            // Named gates run in the phase the arena lists them in (before, if it does not).
            args.gates
                .iter()
                .filter(|g| {
                    let in_after = target.gates.after.contains(g);
                    match phase {
                        Phase::After => in_after,
                        Phase::Before => !in_after,
                    }
                })
                .collect()
        };
        if names.is_empty() {
            continue;
        }
        let gates: Vec<&Gate> = names.iter().map(|n| &project.gates[n.as_str()]).collect();
        if !ctx.quiet && ctx.output == super::OutputFormat::Table {
            eprintln!(
                "running {} {phase} gate(s) for {}: {}",
                gates.len(),
                target.name,
                names
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        report
            .phases
            .push(gates::run(&gctx, phase, &gates, None).await?);
    }

    // A window bypass is recorded with its reason.
    if args.reason.is_some() {
        gates::audit_bypass(
            &ledger,
            &report,
            &gctx.actor,
            report.release.clone(),
            args.reason.as_deref(),
            now,
        )
        .await?;
    }

    if let Some(path) = &args.junit {
        std::fs::write(path, gates::report::junit(&report))
            .map_err(|e| CliError::io("write", path, &e))?;
    }
    if std::env::var("GITHUB_ACTIONS").is_ok_and(|v| v == "true") {
        // Workflow commands go to stdout, unless stdout carries the JSON document.
        let annotations = gates::report::github_annotations(&report);
        if ctx.output == super::OutputFormat::Json {
            eprint!("{annotations}");
        } else {
            print!("{annotations}");
        }
        if let Ok(summary) = std::env::var("GITHUB_STEP_SUMMARY")
            && let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&summary)
        {
            let _ = writeln!(f, "{}", gates::report::markdown(&report));
        }
    }

    let verdict = gates::exit_for(&report, args.allow_inconclusive);
    #[cfg(feature = "github")]
    if args.github_check {
        check_run(ctx, &ledger, &root, &report, verdict, release.as_ref()).await;
    }
    let exit = match verdict {
        RunVerdict::Passed => Exit::Success,
        RunVerdict::Failed => Exit::GateFailed,
        RunVerdict::DependencyFailed => Exit::Dependency,
        RunVerdict::Inconclusive => Exit::Inconclusive,
    };
    let mut text = gates::report::table(&report);
    if report.phases.is_empty() {
        text = format!("{} has no gates to run\n", target.name);
    }
    text.push_str(&format!(
        "{}: {}\n",
        target.name,
        match verdict {
            RunVerdict::Passed => "gates passed",
            RunVerdict::Failed => "a gate failed",
            RunVerdict::DependencyFailed => "a dependency could not be reached",
            RunVerdict::Inconclusive => "inconclusive (use --allow-inconclusive to accept)",
        }
    ));
    Ok(Report {
        json: json!({ "arena": report.arena, "release": report.release, "verdict": verdict, "exit_code": exit.code(), "phases": report.phases }),
        text,
        exit,
    })
}

/// The gate run as a check run on the release's commit: queued in the
/// ledger and sent now; GitHub being away only delays it.
#[cfg(feature = "github")]
async fn check_run(
    ctx: &Context,
    ledger: &copilot_ledger::Ledger,
    root: &std::path::Path,
    report: &RunReport,
    verdict: RunVerdict,
    release: Option<&copilot_ledger::Release>,
) {
    let Some(github) = &ctx.github else {
        tracing::warn!("--github-check: GITHUB_TOKEN is not set: no check run");
        return;
    };
    let Some(sha) = release.and_then(|r| r.git_sha.as_deref()) else {
        tracing::warn!(
            "--github-check: the release has no git sha (`release create --git-sha`): no check run"
        );
        return;
    };
    let arena_file = format!("arenas/{}.yaml", report.arena);
    let gate_file = |gate: &str| {
        let file = format!("gates/{gate}.yaml");
        if root.join(&file).exists() {
            file
        } else {
            arena_file.clone()
        }
    };
    github.attach(ledger);
    github
        .check_run(gates::report::github_check_run(
            report, verdict, sha, gate_file,
        ))
        .await;
    github.flush().await;
}
