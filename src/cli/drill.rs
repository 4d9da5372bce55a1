//! `copilot drill rollback ARENA`: prove the arena meets seed 003's
//! rollback time targets with a deliberately faulty build of its live
//! release, measured through the arena's URL.

use serde_json::json;

use super::progress::CliProgress;
use super::{CliError, CmdResult, Context, Exit, Report, Table, arena};
use copilot_core::config::duration::Duration as Dur;
use copilot_core::model::Tier;
use copilot_engine::drill::{self, RollbackDrillArgs};
use copilot_engine::incidents::span_text;

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Deploy a faulty build of the live release, let the arena's analysis
    /// roll it back, and measure detection, decision and execution
    Rollback(RollbackArgs),
    /// Stop instances of the live colour through the provider and measure
    /// what users see until the platform has replaced them
    Chaos(ChaosArgs),
}

#[derive(Debug, clap::Args)]
pub struct ChaosArgs {
    pub arena: String,
    /// How many instances of the live colour to stop
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub stop: u32,
    /// How long the platform has to replace them and pass the health check
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub wait: Dur,
    /// Drill a production-tier arena too (its users see what the stop does)
    #[arg(long)]
    pub allow_production: bool,
}

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    pub arena: String,
    /// The fault the build carries: one of the service's fault switches
    #[arg(
        long,
        value_name = "NAME=VALUE",
        default_value = "COPILOT_FAULT_5XX_RATE=0.5"
    )]
    pub fault: String,
    /// Bake every traffic step this long instead of the arena's bakes
    #[arg(long, value_name = "DURATION")]
    pub bake: Option<Dur>,
    /// Hold it to the targets of this severity: 1 critical, 2 high, 3 medium
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
    pub severity: u8,
    /// Drill a production-tier arena too (its users see the fault until the analysis acts)
    #[arg(long)]
    pub allow_production: bool,
}

pub async fn run(ctx: &Context, cmd: Command) -> CmdResult {
    match cmd {
        Command::Rollback(args) => rollback(ctx, args).await,
        Command::Chaos(args) => chaos(ctx, args).await,
    }
}

/// A production-tier arena is drilled only when asked to.
fn allowed(a: &copilot_core::model::Arena, allow_production: bool) -> Result<(), CliError> {
    if a.tier == Tier::Production && !allow_production {
        return Err(CliError::new(
            Exit::Blocked,
            format!(
                "{} is a production arena: a drill disturbs its users",
                a.name
            ),
        )
        .with_hint("drill canary or staging, or pass --allow-production"));
    }
    Ok(())
}

async fn chaos(ctx: &Context, args: ChaosArgs) -> CmdResult {
    let (root, loaded) = ctx.project()?;
    let a = arena(&loaded.project, &args.arena)?;
    allowed(a, args.allow_production)?;
    let ledger = ctx.ledger(Some(&root)).await?;
    let progress = CliProgress::new(ctx);
    let exec = ctx.executor(&ledger, &loaded.project, &root, a, &progress)?;
    let r = drill::chaos(&exec, args.stop as usize, args.wait.as_std()).await?;
    let text = format!(
        "Chaos drill of {} in {}: stopped {} of {} instance(s) of {}; {}\nThrough {}: {} requests, {} failed\n",
        r.release,
        r.arena,
        r.stopped.len(),
        r.desired,
        r.slot,
        match r.recovery_ms {
            Some(ms) => format!("replaced and healthy again after {}", span_text(ms)),
            None => format!("NOT replaced within {}", span_text(r.wait_ms)),
        },
        exec_url(&exec),
        r.seen.requests,
        r.seen.failed
    );
    Ok(Report {
        json: json!({ "drill": r }),
        text,
        exit: if r.recovered {
            Exit::Success
        } else {
            Exit::GateFailed
        },
    })
}

async fn rollback(ctx: &Context, args: RollbackArgs) -> CmdResult {
    let (root, loaded) = ctx.project()?;
    let a = arena(&loaded.project, &args.arena)?;
    allowed(a, args.allow_production)?;
    let fault = match args.fault.split_once('=') {
        Some((k, v)) if k.starts_with("COPILOT_FAULT_") && !v.is_empty() => {
            (k.to_string(), v.to_string())
        }
        _ => {
            return Err(CliError::invalid(format!(
                "--fault `{}` is not a fault switch",
                args.fault
            ))
            .with_hint("e.g. --fault COPILOT_FAULT_5XX_RATE=0.5"));
        }
    };
    let ledger = ctx.ledger(Some(&root)).await?;
    let progress = CliProgress::new(ctx);
    let exec = ctx.executor(&ledger, &loaded.project, &root, a, &progress)?;
    let r = drill::rollback(
        &exec,
        RollbackDrillArgs {
            fault,
            bake: args.bake.map(|b| b.as_std()),
            severity: i64::from(args.severity),
        },
    )
    .await?;
    let mut text = format!(
        "Rollback drill of {} in {}: {} ({}) {}{}\n\n",
        r.release,
        r.arena,
        r.faulty,
        r.fault,
        r.outcome,
        r.metric
            .as_deref()
            .map(|m| format!(" by the analysis of {m}"))
            .unwrap_or_default()
    );
    let mut t = Table::new(["PHASE", "MEASURED", "TARGET", "MET"]);
    for x in &r.timings {
        t.row([
            x.phase.to_string(),
            x.measured_ms.map_or("-".into(), span_text),
            format!("< {}", span_text(x.target_ms)),
            if x.met == Some(true) { "yes" } else { "NO" }.to_string(),
        ]);
    }
    text.push_str(&t.render());
    text.push_str(&format!(
        "\nThrough {}: {} requests, {} failed, {} answered by {} ({} targets, seed 003)\n",
        exec_url(&exec),
        r.seen.requests,
        r.seen.failed,
        r.seen.served_by_faulty,
        r.faulty,
        r.targets.class
    ));
    Ok(Report {
        json: json!({ "drill": r }),
        text,
        exit: if r.passed {
            Exit::Success
        } else {
            Exit::GateFailed
        },
    })
}

fn exec_url(exec: &copilot_engine::rollout::executor::Executor<'_>) -> String {
    use copilot_core::provider::Provider as _;
    exec.provider.url()
}
