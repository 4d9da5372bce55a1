//! `copilot deploy ARENA --release REF` and `copilot down ARENA`; and the
//! router process the local provider starts.
//!
//! A deploy puts the release into the idle colour, waits until it is
//! healthy, then moves all traffic to it and keeps the old colour as
//! standby; the [`Executor`] does it, on whichever provider the arena names.

use serde_json::json;

use super::progress::CliProgress;
use super::{CliError, CmdResult, Context, Exit, Report, arena};
use copilot_core::provider::{ErrorKind, ProviderError};
use copilot_engine::rollout::RolloutError;

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    pub arena: String,
    /// The release to deploy (id, version or image)
    #[arg(long, value_name = "REF")]
    pub release: String,
    #[arg(long)]
    pub reason: Option<String>,
    /// Start from what the platform runs where it differs from the ledger
    /// (a split or release changed by hand) instead of refusing (exit 4)
    #[arg(long)]
    pub adopt_drift: bool,
}

#[derive(Debug, clap::Args)]
pub struct DownArgs {
    pub arena: String,
    /// Only the blue-green standby, once `rollback.keep_standby` has run out
    /// since it stopped serving (for a scheduled job)
    #[arg(long)]
    pub standby: bool,
    /// With --standby: now, whatever `keep_standby` says; without: also when
    /// a deployment is in progress (it is recorded aborted)
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, clap::Args)]
pub struct RouterArgs {
    #[arg(long)]
    pub port: u16,
    #[arg(long)]
    pub admin_port: u16,
    #[arg(long)]
    pub routes: std::path::PathBuf,
}

impl From<ProviderError> for CliError {
    /// The exit code follows the kind of failure, never its text.
    fn from(e: ProviderError) -> Self {
        let exit = match e.kind {
            ErrorKind::Conflict => Exit::Blocked,
            ErrorKind::TimedOut => Exit::Inconclusive,
            ErrorKind::ReleaseFailed | ErrorKind::RolledBack => Exit::GateFailed,
            ErrorKind::Retryable
            | ErrorKind::Throttled { .. }
            | ErrorKind::Unauthorised
            | ErrorKind::NotFound
            | ErrorKind::Failed
            | ErrorKind::Unavailable => Exit::Dependency,
        };
        let hint = e.hint.clone();
        let err = CliError::new(exit, e.to_string());
        match hint {
            Some(h) => err.with_hint(h),
            None => err,
        }
    }
}

impl From<RolloutError> for CliError {
    fn from(e: RolloutError) -> Self {
        match e {
            RolloutError::Ledger(l) => l.into(),
            RolloutError::Provider(p) => p.into(),
            RolloutError::Invalid { message, hint } => {
                let err = CliError::invalid(message);
                match hint {
                    Some(h) => err.with_hint(h),
                    None => err,
                }
            }
            e @ RolloutError::LeaseLost(_) => CliError::new(Exit::Blocked, e.to_string())
                .with_hint("`copilot status` shows who holds the arena now"),
            RolloutError::Stopped(req) => {
                use copilot_engine::rollout::stop::StopAction;
                let (exit, hint) = match req.action {
                    StopAction::Pause => (
                        Exit::Inconclusive,
                        "paused where it stood: `copilot resume`, `copilot abort` or `copilot rollback` finishes it",
                    ),
                    StopAction::Rollback => {
                        (Exit::GateFailed, "stopped; the previous release serves")
                    }
                };
                CliError::new(exit, format!("stopped: {}", req.by)).with_hint(hint)
            }
            RolloutError::Blocked { message, hint } => {
                CliError::new(Exit::Blocked, message).with_hint(hint)
            }
        }
    }
}

pub async fn deploy(ctx: &Context, args: DeployArgs) -> CmdResult {
    let (root, loaded) = ctx.project()?;
    let a = arena(&loaded.project, &args.arena)?;
    let ledger = ctx.ledger(Some(&root)).await?;
    let progress = CliProgress::new(ctx);
    let exec = ctx.executor(&ledger, &loaded.project, &root, a, &progress)?;
    super::signals::stop_rollout_on_signals(&exec.stop, a.rollback.on_interrupt);
    let release = ledger.find_release(&args.release).await?;
    let done = exec.deploy(&release, args.reason, args.adopt_drift).await?;
    let text = format!(
        "Deployed {} to {} ({}): {} serves {}\n",
        done.release,
        a.name,
        done.deployment,
        done.detail["slot"].as_str().unwrap_or(""),
        done.detail["url"].as_str().unwrap_or("")
    );
    Ok(Report::new(
        json!({ "deployment": done.deployment, "release": done.release, "arena": a.name, "detail": done.detail }),
        text,
    ))
}

pub async fn down(ctx: &Context, args: DownArgs) -> CmdResult {
    let (root, loaded) = ctx.project()?;
    let a = arena(&loaded.project, &args.arena)?;
    let ledger = ctx.ledger(Some(&root)).await?;
    let progress = CliProgress::new(ctx);
    let exec = ctx.executor(&ledger, &loaded.project, &root, a, &progress)?;
    if args.standby {
        use copilot_engine::rollout::executor::Standby;
        let outcome = exec.retire_standby(args.force).await?;
        let text = match &outcome {
            Standby::None => format!("{} has no standby\n", a.name),
            Standby::Kept {
                slot,
                version,
                until,
            } => format!(
                "Keeping {version} in {slot} as the standby of {} until {} (rollback.keep_standby)\n",
                a.name,
                until.format("%F %T UTC")
            ),
            Standby::Retired { slot, version } => format!(
                "Scaled the standby of {} ({version} in {slot}) to zero; a rollback brings it back first\n",
                a.name
            ),
        };
        let mut doc = serde_json::to_value(&outcome).expect("outcome serializes");
        doc["arena"] = json!(a.name);
        return Ok(Report::new(doc, text));
    }
    exec.down(args.force).await?;
    Ok(Report::new(
        json!({ "arena": a.name, "stopped": true }),
        format!("Stopped everything running for {}\n", a.name),
    ))
}

pub async fn router(args: RouterArgs) -> CmdResult {
    copilot_provider_local::router::serve(args.port, args.admin_port, args.routes)
        .await
        .map_err(|e| CliError::new(Exit::Dependency, format!("router: {e}")))?;
    Ok(Report::new(json!({ "stopped": true }), ""))
}
