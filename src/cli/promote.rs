//! `copilot promote FROM TO`, `hotfix`, `rollback`, `resume` and `abort`.
//!
//! A promotion takes the release live in FROM, runs TO's `before` gates,
//! deploys it into TO's idle colour, runs the `after` gates against that
//! colour, then shifts traffic step by step with a bake and analysis at
//! each, rolling back automatically when a metric says so. A rollback sends
//! traffic back to the standby colour at once and pins the arena until
//! `copilot unlock`. The [`Executor`] does all of it; these commands parse,
//! confirm, call it and print.

use std::io::{IsTerminal, Write as _};

use serde_json::json;

use super::progress::CliProgress;
use super::{CliError, CmdResult, Context, Exit, Report, arena};
use copilot_core::config::duration::Duration as Dur;
use copilot_engine::rollout::executor::{Finished, Promotion};
use copilot_engine::rollout::{End, Refusal};
use copilot_engine::views;

#[derive(Debug, clap::Args)]
pub struct PromoteArgs {
    pub from: String,
    pub to: String,
    /// Promote this release instead of the one live in FROM
    #[arg(long, value_name = "REF")]
    pub release: Option<String>,
    /// Do not ask for confirmation
    #[arg(long)]
    pub yes: bool,
    /// Show what would happen, change nothing
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long)]
    pub reason: Option<String>,
    /// Bake every traffic step this long instead of the arena's bakes (demos)
    #[arg(long, value_name = "DURATION")]
    pub bake: Option<Dur>,
    /// Start from what the platform runs where it differs from the ledger
    /// (a split or release changed by hand) instead of refusing (exit 4)
    #[arg(long)]
    pub adopt_drift: bool,
    /// Set by `hotfix`: the reason also bypasses deploy windows where the lane allows it.
    #[arg(skip)]
    pub hotfix: bool,
}

#[derive(Debug, clap::Args)]
pub struct HotfixArgs {
    /// The arena the hotfix lane deploys into (e.g. production)
    pub arena: String,
    #[arg(long, value_name = "REF")]
    pub release: String,
    /// Why: required, recorded, and used to bypass deploy windows where the lane allows it
    #[arg(long)]
    pub reason: String,
    #[arg(long)]
    pub yes: bool,
    #[arg(long, value_name = "DURATION")]
    pub bake: Option<Dur>,
    /// Start from what the platform runs where it differs from the ledger
    /// (a split or release changed by hand) instead of refusing (exit 4)
    #[arg(long)]
    pub adopt_drift: bool,
}

/// `copilot hotfix ARENA --release REF --reason TEXT`: the hotfix lane into ARENA,
/// with the lane's reduced gates and its window bypass.
pub async fn hotfix(ctx: &Context, args: HotfixArgs) -> CmdResult {
    if args.reason.trim().is_empty() {
        return Err(CliError::invalid("--reason must say why this cannot wait"));
    }
    let (_, loaded) = ctx.project()?;
    let lane = loaded
        .project
        .arenas
        .values()
        .find(|a| {
            a.tier == copilot_core::model::Tier::Hotfix
                && a.target.as_deref() == Some(args.arena.as_str())
        })
        .ok_or_else(|| {
            CliError::invalid(format!("no hotfix lane targets `{}`", args.arena))
                .with_hint("add an arena with `tier: hotfix` and `target:` naming it")
        })?;
    promote(
        ctx,
        PromoteArgs {
            from: args.arena.clone(),
            to: lane.name.clone(),
            release: Some(args.release),
            yes: args.yes,
            dry_run: false,
            reason: Some(args.reason),
            bake: args.bake,
            adopt_drift: args.adopt_drift,
            hotfix: true,
        },
    )
    .await
}

#[derive(Debug, clap::Args)]
pub struct RollbackArgs {
    pub arena: String,
    /// Roll back to this release [default: the one live before the current one]
    #[arg(long, value_name = "REF")]
    pub to: Option<String>,
    #[arg(long)]
    pub reason: Option<String>,
    /// Turn the platform's own deploys on a push off (Render's autodeploy),
    /// so the next push cannot deploy over the rollback
    #[arg(long)]
    pub suspend_autodeploy: bool,
}

/// The exit code of a deployment that ran to an end.
pub(super) fn exit_of(end: &End) -> Exit {
    match end {
        End::Succeeded => Exit::Success,
        End::RolledBack(_) | End::Aborted(_) => Exit::GateFailed,
        End::Reverted(_) => Exit::Dependency,
        End::Paused(_) => Exit::Inconclusive,
        End::Refused(_, Refusal::Blocked) => Exit::Blocked,
        End::Refused(_, Refusal::GateFailed) => Exit::GateFailed,
        End::Refused(_, Refusal::Dependency) => Exit::Dependency,
        End::Refused(_, Refusal::Inconclusive) => Exit::Inconclusive,
    }
}

fn finished(arena: &str, done: Finished, plan: Option<serde_json::Value>) -> Report {
    let exit = exit_of(&done.end);
    let mut doc = json!({
        "deployment": done.deployment, "state": done.state,
        "summary": done.summary, "exit_code": exit.code(),
    });
    if let Some(plan) = plan {
        doc["plan"] = plan;
    }
    Report {
        json: doc,
        text: format!("{arena}: {} ({})\n", done.summary, done.deployment),
        exit,
    }
}

pub async fn promote(ctx: &Context, args: PromoteArgs) -> CmdResult {
    let (root, loaded) = ctx.project()?;
    let project = &loaded.project;
    let from = arena(project, &args.from)?;
    let to = arena(project, &args.to)?;
    let ledger = ctx.ledger(Some(&root)).await?;
    let Some(release) = views::candidate(&ledger, args.release.as_deref(), Some(from)).await?
    else {
        return Err(
            CliError::invalid(format!("nothing is live in {} to promote", from.name)).with_hint(
                format!("`copilot deploy {} --release REF` first", from.name),
            ),
        );
    };
    let steps: Vec<String> = to.strategy.steps.iter().map(|s| s.label()).collect();
    let plan = json!({
        "from": from.name, "to": to.name, "release": release.version,
        "strategy": to.strategy.kind, "steps": steps,
        "gates": { "before": to.gates.before, "after": to.gates.after },
    });
    if args.dry_run {
        let text = format!(
            "Would promote {} from {} to {}: before gates [{}], deploy into the idle colour, after gates [{}], {} {}\n",
            release.version,
            from.name,
            to.name,
            to.gates.before.join(", "),
            to.gates.after.join(", "),
            to.strategy.kind,
            steps.join(" -> ")
        );
        return Ok(Report::new(json!({ "dry_run": true, "plan": plan }), text));
    }
    let progress = CliProgress::new(ctx);
    let exec = ctx.executor(&ledger, project, &root, to, &progress)?;
    super::signals::stop_rollout_on_signals(&exec.stop, to.rollback.on_interrupt);
    if !args.yes && std::io::stdin().is_terminal() && std::io::stderr().is_terminal() {
        eprint!(
            "Promote {} from {} to {} ({} {})? [y/N] ",
            release.version,
            from.name,
            to.name,
            to.strategy.kind,
            steps.join(" -> ")
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(CliError::new(Exit::Blocked, "not confirmed"));
        }
    }
    let done = exec
        .promote(Promotion {
            from: (!args.hotfix).then_some(from),
            release,
            reason: args.reason,
            bake: args.bake.map(|b| b.as_std()),
            hotfix: args.hotfix,
            adopt_drift: args.adopt_drift,
            drill: false,
        })
        .await?;
    Ok(finished(&to.name, done, Some(plan)))
}

pub async fn rollback(ctx: &Context, args: RollbackArgs) -> CmdResult {
    let (root, loaded) = ctx.project()?;
    let a = arena(&loaded.project, &args.arena)?;
    let ledger = ctx.ledger(Some(&root)).await?;
    let progress = CliProgress::new(ctx);
    let exec = ctx.executor(&ledger, &loaded.project, &root, a, &progress)?;
    let reason = args.reason.unwrap_or_else(|| "rollback".into());
    let decided = copilot_core::clock::now();
    let r = exec
        .rollback(args.to.as_deref(), reason, args.suspend_autodeploy)
        .await?;
    // The open incidents of the arena were decided by this rollback, and
    // mitigated once traffic was back.
    let incidents = ledger
        .incident_rolled_back(
            a.deploys_into(),
            &r.deployment,
            decided,
            copilot_core::clock::now(),
        )
        .await?;
    let how = if r.redeployed {
        "redeployed it, then switched traffic"
    } else {
        "switched traffic to the standby colour"
    };
    let mut text = format!(
        "Rolled {} back from {} to {} ({how} in {} ms); the arena is pinned until `copilot unlock {}`\n",
        a.name, r.from, r.to, r.switch_ms, a.name
    );
    match r.autodeploy.as_deref() {
        Some("on") => text.push_str(&format!(
            "warning: {} deploys on its own on a push (autodeploy), which would deploy over this rollback; \
             `copilot rollback {} --suspend-autodeploy` or the platform's settings turn it off\n",
            a.provider.kind, a.name
        )),
        Some(_) => text.push_str("autodeploy is now off: a push no longer deploys over this rollback\n"),
        None => {}
    }
    if let Some(schema) = &r.schema {
        text.push_str(&schema.text(&r.to));
    }
    for id in &incidents {
        text.push_str(&format!(
            "recorded on incident {id}: decided and mitigated by this rollback\n"
        ));
    }
    Ok(Report::new(
        json!({ "deployment": r.deployment, "from": r.from, "to": r.to, "switch_ms": r.switch_ms, "redeployed": r.redeployed, "pinned": true, "schema": r.schema, "autodeploy": r.autodeploy, "incidents": incidents }),
        text,
    ))
}

#[derive(Debug, clap::Args)]
pub struct ArenaArgs {
    pub arena: String,
    #[arg(long)]
    pub reason: Option<String>,
    /// Bake every remaining traffic step this long (resume)
    #[arg(long, value_name = "DURATION")]
    pub bake: Option<Dur>,
}

/// `copilot resume ARENA`: continue an interrupted or paused deployment from where it stood.
pub async fn resume(ctx: &Context, args: ArenaArgs) -> CmdResult {
    let (root, loaded) = ctx.project()?;
    let a = arena(&loaded.project, &args.arena)?;
    let ledger = ctx.ledger(Some(&root)).await?;
    let progress = CliProgress::new(ctx);
    let exec = ctx.executor(&ledger, &loaded.project, &root, a, &progress)?;
    super::signals::stop_rollout_on_signals(&exec.stop, a.rollback.on_interrupt);
    let done = exec.resume(args.bake.map(|b| b.as_std())).await?;
    Ok(finished(&a.name, done, None))
}

#[derive(Debug, clap::Args)]
pub struct AbortArgs {
    pub arena: String,
    #[arg(long)]
    pub reason: Option<String>,
    /// When a command is running the deployment: ask it to pause where it
    /// stands instead of putting traffic back
    #[arg(long)]
    pub leave: bool,
}

/// `copilot abort ARENA`: stop the deployment in progress and put traffic
/// back on the previous release; a command running it is asked to do so
/// itself, through the ledger, and this waits until it has.
pub async fn abort(ctx: &Context, args: AbortArgs) -> CmdResult {
    let (root, loaded) = ctx.project()?;
    let a = arena(&loaded.project, &args.arena)?;
    let ledger = ctx.ledger(Some(&root)).await?;
    let progress = CliProgress::new(ctx);
    let exec = ctx.executor(&ledger, &loaded.project, &root, a, &progress)?;
    let r = exec.abort(args.reason, args.leave).await?;
    let text = match (r.state.as_str(), &r.back_to) {
        ("paused", _) => format!(
            "Paused {} in {} where it stood: traffic {}\n",
            r.deployment, a.name, r.weights
        ),
        (_, Some(v)) => format!(
            "Aborted {} in {}: {v} serves all traffic again\n",
            r.deployment, a.name
        ),
        (_, None) => format!(
            "Aborted {} in {}: nothing to go back to; the new release keeps serving\n",
            r.deployment, a.name
        ),
    };
    Ok(Report::new(
        json!({ "deployment": r.deployment, "state": r.state, "weights": r.weights, "back_to": r.back_to }),
        text,
    ))
}
