//! `copilot promote FROM TO` and `copilot rollback ARENA` (local provider).
//!
//! A promotion takes the release live in FROM, runs TO's `before` gates,
//! deploys it into TO's idle colour, runs the `after` gates against that
//! colour, then shifts traffic step by step with a bake and analysis at
//! each, rolling back automatically when a metric says so. A rollback sends
//! traffic back to the standby colour at once and pins the arena until
//! `copilot unlock`.

use std::io::{IsTerminal, Write as _};
use std::time::Duration;

use serde_json::json;

use super::deploy::{local_provider, release_spec};
use super::progress::CliProgress;
use super::{CliError, CmdResult, Context, Exit, Report, arena};
use crate::clock;
use crate::config::duration::Duration as Dur;
use crate::gates::{self, GateContext, RunReport, RunVerdict};
use crate::ledger::{LockKind, LockRequest, NewAudit, NewDeployment};
use crate::model::{Gate, Phase};
use crate::providers::Provider;
use crate::rollout::{End, Progress, Rollout, RolloutError};

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
            a.tier == crate::model::Tier::Hotfix && a.target.as_deref() == Some(args.arena.as_str())
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
}

impl From<RolloutError> for CliError {
    fn from(e: RolloutError) -> Self {
        match e {
            RolloutError::Ledger(l) => l.into(),
            RolloutError::Provider(p) => p.into(),
        }
    }
}

fn verdict_exit(report: &RunReport) -> Option<Exit> {
    match gates::exit_for(report, false) {
        RunVerdict::Passed => None,
        RunVerdict::Failed
            if report
                .results()
                .any(|r| r.blocks && r.outcome == crate::model::Outcome::Fail) =>
        {
            Some(Exit::Blocked)
        }
        RunVerdict::Failed => Some(Exit::GateFailed),
        RunVerdict::DependencyFailed => Some(Exit::Dependency),
        RunVerdict::Inconclusive => Some(Exit::Inconclusive),
    }
}

pub async fn promote(ctx: &Context, args: PromoteArgs) -> CmdResult {
    let (root, loaded) = ctx.project()?;
    let project = &loaded.project;
    let from = arena(project, &args.from)?;
    let to = arena(project, &args.to)?;
    let ledger = ctx.ledger(Some(&root)).await?;
    let release = match &args.release {
        Some(r) => ledger.find_release(r).await?,
        None => {
            let Some(live) = ledger.live(&from.name).await? else {
                return Err(CliError::invalid(format!(
                    "nothing is live in {} to promote",
                    from.name
                ))
                .with_hint(format!(
                    "`copilot deploy {} --release REF` first",
                    from.name
                )));
            };
            ledger
                .release_by_id(&live.deployment.release_id)
                .await?
                .ok_or_else(|| CliError::invalid("the live release is missing from the ledger"))?
        }
    };
    let steps: Vec<String> = to
        .strategy
        .steps
        .iter()
        .map(|s| format!("{}%", s.weight))
        .collect();
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
    let provider = local_provider(&root, to)?;
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
    let actor = clock::actor();
    let lease = take_lease(
        &ledger,
        to.deploys_into(),
        &actor,
        &format!("promote {} from {}", release.version, from.name),
    )
    .await?;
    let progress = CliProgress::new(ctx);
    let before = provider.status().await?;
    let live = before.live().cloned();
    let idle = live
        .as_ref()
        .map_or(crate::providers::Slot::Blue, |l| l.slot.other());
    let d = ledger
        .create_deployment(
            &NewDeployment {
                arena: to.deploys_into().to_string(),
                release_id: release.id.clone(),
                previous_release_id: live.as_ref().map(|l| l.release_id.clone()),
                kind: if args.hotfix {
                    "hotfix".into()
                } else {
                    "promote".into()
                },
                strategy: to.strategy.kind.to_string(),
                source_arena: (!args.hotfix).then(|| from.name.clone()),
                reason: args.reason.clone(),
                created_by: actor.clone(),
            },
            clock::now(),
        )
        .await?;
    let http = reqwest::Client::new();
    let gctx = |url: Option<String>| GateContext {
        project,
        root: &root,
        arena: to,
        source: (!args.hotfix).then_some(from),
        release: Some(&release),
        ledger: &ledger,
        now: clock::now(),
        target_url: url,
        source_url: None,
        bypass_reason: args.hotfix.then(|| args.reason.clone()).flatten(),
        actor: actor.clone(),
        http: http.clone(),
    };
    let gates_of = |phase: Phase| -> Vec<&Gate> {
        to.gates
            .for_phase(phase)
            .iter()
            .map(|g| &project.gates[g])
            .collect()
    };

    let outcome: Result<(End, Option<Exit>), CliError> = async {
        // Before gates: nothing changes when they do not pass.
        let before_gates = gates_of(Phase::Before);
        if !before_gates.is_empty() {
            progress.line(&format!("before gates: {}", to.gates.before.join(", ")));
            let phase = gates::run(&gctx(None), Phase::Before, &before_gates, Some(&d.id)).await?;
            let report = RunReport {
                arena: to.name.clone(),
                release: Some(release.version.clone()),
                phases: vec![phase],
            };
            // A window bypassed on the hotfix lane is recorded with its reason.
            if let Some(w) = report.results().find(|r| {
                r.kind == crate::model::GateKind::Window && r.summary.contains("bypassed")
            }) {
                ledger
                    .audit(
                        &NewAudit {
                            actor: actor.clone(),
                            action: "window.bypass".into(),
                            arena: Some(to.name.clone()),
                            subject: Some(d.id.clone()),
                            reason: args.reason.clone(),
                            detail: json!({ "gate": w.gate, "summary": w.summary }),
                        },
                        clock::now(),
                    )
                    .await?;
            }
            if let Some(exit) = verdict_exit(&report) {
                let failed: Vec<String> = report
                    .results()
                    .filter(|r| {
                        r.outcome != crate::model::Outcome::Pass
                            && r.outcome != crate::model::Outcome::Warn
                            && r.outcome != crate::model::Outcome::Skipped
                    })
                    .map(|r| format!("{}: {}", r.gate, r.summary))
                    .collect();
                return Ok((
                    End::RolledBack(format!("before gates did not pass: {}", failed.join("; "))),
                    Some(exit),
                ));
            }
        }
        let rollout = Rollout {
            ledger: &ledger,
            provider: &provider,
            arena: to,
            deployment_id: &d.id,
            release: release_spec(to, &provider, &release)?,
            bake: args.bake.map(|b| b.as_std()),
            http: http.clone(),
            progress: &progress,
        };
        let after = gates_of(Phase::After);
        let end = rollout
            .run(idle, live.as_ref(), async |url: &str| {
                if after.is_empty() {
                    return Ok(true);
                }
                let phase = gates::run(
                    &gctx(Some(url.to_string())),
                    Phase::After,
                    &after,
                    Some(&d.id),
                )
                .await?;
                let report = RunReport {
                    arena: to.name.clone(),
                    release: Some(release.version.clone()),
                    phases: vec![phase],
                };
                Ok(verdict_exit(&report).is_none())
            })
            .await?;
        let exit = match &end {
            End::Succeeded => None,
            End::RolledBack(_) => Some(Exit::GateFailed),
            End::Paused(_) => Some(Exit::Inconclusive),
        };
        Ok((end, exit))
    }
    .await;

    let (state, summary, exit) = match &outcome {
        Ok((End::Succeeded, _)) => (
            "succeeded",
            format!("{} is live in {}", release.version, to.name),
            Exit::Success,
        ),
        Ok((End::RolledBack(why), e)) => {
            ("rolled-back", why.clone(), e.unwrap_or(Exit::GateFailed))
        }
        Ok((End::Paused(why), e)) => ("paused", why.clone(), e.unwrap_or(Exit::Inconclusive)),
        Err(e) => ("failed", e.message.clone(), e.exit),
    };
    ledger
        .set_deployment_state(&d.id, state, clock::now())
        .await?;
    ledger
        .audit(&NewAudit { actor, action: format!("{}.{state}", if args.hotfix { "hotfix" } else { "promote" }), arena: Some(to.name.clone()), subject: Some(d.id.clone()), reason: args.reason.clone(), detail: json!({ "release": release.version, "from": from.name, "summary": summary }) }, clock::now())
        .await?;
    lease.release().await?;
    outcome?;
    Ok(Report {
        json: json!({ "deployment": d.id, "state": state, "summary": summary, "plan": plan, "exit_code": exit.code() }),
        text: format!("{}: {summary} ({})\n", to.name, d.id),
        exit,
    })
}

pub async fn rollback(ctx: &Context, args: RollbackArgs) -> CmdResult {
    let (root, loaded) = ctx.project()?;
    let a = arena(&loaded.project, &args.arena)?;
    let provider = local_provider(&root, a)?;
    let ledger = ctx.ledger(Some(&root)).await?;
    let actor = clock::actor();
    let reason = args.reason.clone().unwrap_or_else(|| "rollback".into());
    let lease = take_lease(
        &ledger,
        a.deploys_into(),
        &actor,
        &format!("rollback: {reason}"),
    )
    .await?;
    let status = provider.status().await?;
    // An interrupted deployment is what is rolled back: its new release is
    // "live", its previous release the target.
    let interrupted = ledger
        .active_deployment(a.deploys_into())
        .await?
        .map(|d| d.deployment);
    let live = match &interrupted {
        Some(d) => status
            .slots
            .iter()
            .find(|s| s.release_id == d.release_id)
            .cloned()
            .or_else(|| status.live().cloned()),
        None => status.live().cloned(),
    };
    let Some(live) = live else {
        lease.release().await?;
        return Err(CliError::invalid(format!(
            "nothing is live in {} to roll back",
            a.name
        )));
    };
    if let Some(d) = &interrupted {
        ledger
            .interrupt_steps(&d.id, "rollback", clock::now())
            .await?;
        ledger
            .set_deployment_state(&d.id, "aborted", clock::now())
            .await?;
    }
    // The target: --to, else the release that was live before the current one.
    let target = match (
        &args.to,
        interrupted
            .as_ref()
            .and_then(|d| d.previous_release_id.clone()),
    ) {
        (Some(r), _) => Some(ledger.find_release(r).await?),
        (None, Some(previous)) => ledger.release_by_id(&previous).await?,
        (None, None) => {
            let history = ledger.history(Some(a.deploys_into()), 200).await?;
            let previous = history
                .iter()
                .filter(|d| {
                    d.deployment.state == "succeeded" && d.deployment.release_id != live.release_id
                })
                .map(|d| d.deployment.release_id.clone())
                .next();
            match previous {
                Some(id) => ledger.release_by_id(&id).await?,
                None => None,
            }
        }
    };
    let Some(target) = target else {
        lease.release().await?;
        return Err(CliError::invalid(format!(
            "{} has no earlier release to roll back to",
            a.name
        ))
        .with_hint("name one with --to"));
    };
    let d = ledger
        .create_deployment(
            &NewDeployment {
                arena: a.deploys_into().to_string(),
                release_id: target.id.clone(),
                previous_release_id: Some(live.release_id.clone()),
                kind: "rollback".into(),
                strategy: "switch".into(),
                source_arena: None,
                reason: Some(reason.clone()),
                created_by: actor.clone(),
            },
            clock::now(),
        )
        .await?;
    // Instant when the standby colour still runs the target; else redeploy it first.
    let instant = status
        .slots
        .iter()
        .find(|s| s.slot != live.slot && s.healthy && s.release_id == target.id)
        .cloned();
    let redeployed = instant.is_none();
    let standby = match instant {
        Some(s) => s,
        None => {
            let spec = release_spec(a, &provider, &target)?;
            let idle = live.slot.other();
            let s = ledger
                .start_step(
                    &d.id,
                    "redeploy-previous",
                    &json!({ "slot": idle, "release": target.version }),
                    clock::now(),
                )
                .await?;
            let restored = match provider.restore(idle, &spec).await {
                Ok(Some(slot)) => Ok(slot),
                Ok(None) => provider.deploy(idle, &spec).await,
                Err(e) => Err(e),
            };
            match restored {
                Ok(slot) => {
                    ledger
                        .finish_step(
                            &d.id,
                            s.seq,
                            "done",
                            &json!({ "slot": idle, "url": slot.url }),
                            clock::now(),
                        )
                        .await?;
                    slot
                }
                Err(e) => {
                    ledger
                        .finish_step(
                            &d.id,
                            s.seq,
                            "failed",
                            &json!({ "error": e.to_string() }),
                            clock::now(),
                        )
                        .await?;
                    ledger
                        .set_deployment_state(&d.id, "failed", clock::now())
                        .await?;
                    lease.release().await?;
                    return Err(e.into());
                }
            }
        }
    };
    let started = std::time::Instant::now();
    let split = json!({ standby.slot.to_string(): { "release": standby.version, "weight": 100 }, live.slot.to_string(): { "release": live.version, "weight": 0 } });
    let s = ledger
        .start_step(
            &d.id,
            "switch-to-standby",
            &json!({ "weights": split }),
            clock::now(),
        )
        .await?;
    provider
        .set_traffic(&[(standby.slot, 100), (live.slot, 0)])
        .await?;
    let switch_ms = started.elapsed().as_millis() as u64;
    ledger
        .set_traffic(a.deploys_into(), &split, Some(&d.id), clock::now())
        .await?;
    ledger
        .finish_step(
            &d.id,
            s.seq,
            "done",
            &json!({ "weights": split, "switch_ms": switch_ms }),
            clock::now(),
        )
        .await?;
    ledger
        .set_deployment_state(&d.id, "succeeded", clock::now())
        .await?;
    lease.release().await?;
    // Pin the arena: no promotion into it until someone unlocks it.
    ledger
        .acquire_lock(
            &LockRequest::here(
                a.deploys_into(),
                LockKind::Pin,
                &actor,
                &format!(
                    "rolled back from {} to {}: {reason}",
                    live.version, standby.version
                ),
                None,
            ),
            clock::now(),
        )
        .await?;
    // Traffic is back and the rollback complete (a crash from here on leaves
    // nothing to undo); now say what the database keeps that the target lacks.
    let from_release = ledger.release_by_id(&live.release_id).await?;
    let schema = match &from_release {
        Some(from) => {
            let s = ledger
                .start_step(
                    &d.id,
                    "schema-check",
                    &json!({ "to": target.version }),
                    clock::now(),
                )
                .await?;
            let report =
                crate::rollout::schema::after_rollback(&root, &loaded.project, a, from, &target)
                    .await;
            let outcome = serde_json::to_value(&report).expect("report serializes");
            ledger
                .finish_step(&d.id, s.seq, "done", &outcome, clock::now())
                .await?;
            Some(report)
        }
        None => None,
    };
    ledger
        .audit(
            &NewAudit {
                actor: actor.clone(),
                action: "rollback".into(),
                arena: Some(a.deploys_into().to_string()),
                subject: Some(d.id.clone()),
                reason: Some(reason.clone()),
                detail: json!({ "from": live.version, "to": standby.version, "switch_ms": switch_ms, "schema": schema }),
            },
            clock::now(),
        )
        .await?;
    let how = if redeployed {
        "redeployed it, then switched traffic"
    } else {
        "switched traffic to the standby colour"
    };
    let mut text = format!(
        "Rolled {} back from {} to {} ({how} in {switch_ms} ms); the arena is pinned until `copilot unlock {}`\n",
        a.name, live.version, standby.version, a.name
    );
    if let Some(schema) = &schema {
        text.push_str(&schema.text(&standby.version));
    }
    Ok(Report::new(
        json!({ "deployment": d.id, "from": live.version, "to": standby.version, "switch_ms": switch_ms, "redeployed": redeployed, "pinned": true, "schema": schema }),
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

fn pid_alive(pid: i64) -> bool {
    std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Take an arena's lease; one whose holder died on this machine is taken over
/// at once (no need to wait for it to expire), and the takeover is audited.
pub(super) async fn take_lease(
    ledger: &crate::ledger::Ledger,
    arena: &str,
    actor: &str,
    reason: &str,
) -> Result<crate::ledger::Lease, CliError> {
    let req = LockRequest::here(
        arena,
        LockKind::Lease,
        actor,
        reason,
        Some(Duration::from_secs(60)),
    );
    match ledger.hold_lease(&req, clock::now()).await {
        Err(crate::ledger::LedgerError::LockHeld(l))
            if l.kind == LockKind::Lease && l.host == req.host && !pid_alive(l.pid) =>
        {
            ledger.unlock(arena, true, clock::now()).await?;
            ledger
                .audit(
                    &NewAudit {
                        actor: actor.to_string(),
                        action: "lock.takeover".into(),
                        arena: Some(arena.to_string()),
                        reason: Some(format!(
                            "holder {} (pid {}) is gone: {}",
                            l.owner, l.pid, l.reason
                        )),
                        ..NewAudit::default()
                    },
                    clock::now(),
                )
                .await?;
            Ok(ledger.hold_lease(&req, clock::now()).await?)
        }
        other => Ok(other?),
    }
}

/// The deployment in progress in an arena, with the arena's lease taken to `what` it.
async fn take_active(
    ledger: &crate::ledger::Ledger,
    a: &crate::model::Arena,
    actor: &str,
    what: &str,
) -> Result<(crate::ledger::Deployment, crate::ledger::Lease), CliError> {
    let Some(active) = ledger.active_deployment(a.deploys_into()).await? else {
        return Err(CliError::invalid(format!(
            "no deployment in progress in {}",
            a.name
        )));
    };
    let dep = active.deployment;
    let lease = take_lease(
        ledger,
        a.deploys_into(),
        actor,
        &format!("{what} {}", dep.id),
    )
    .await?;
    // With the lease ours, a step still `started` belongs to a dead command.
    ledger.interrupt_steps(&dep.id, what, clock::now()).await?;
    Ok((dep, lease))
}

/// `copilot resume ARENA`: continue an interrupted or paused deployment from where it stood.
pub async fn resume(ctx: &Context, args: ArenaArgs) -> CmdResult {
    let (root, loaded) = ctx.project()?;
    let a = arena(&loaded.project, &args.arena)?;
    let provider = local_provider(&root, a)?;
    let ledger = ctx.ledger(Some(&root)).await?;
    let actor = clock::actor();
    let (dep, lease) = take_active(&ledger, a, &actor, "resume").await?;
    let release = ledger
        .release_by_id(&dep.release_id)
        .await?
        .ok_or_else(|| CliError::invalid("the deployment's release is missing"))?;
    let status = provider.status().await?;
    let new = status
        .slots
        .iter()
        .find(|s| s.release_id == dep.release_id && s.healthy)
        .cloned();
    let old = status
        .slots
        .iter()
        .find(|s| Some(&s.release_id) == dep.previous_release_id.as_ref() && s.healthy)
        .cloned();
    let progress = CliProgress::new(ctx);
    let rollout = Rollout {
        ledger: &ledger,
        provider: &provider,
        arena: a,
        deployment_id: &dep.id,
        release: release_spec(a, &provider, &release)?,
        bake: args.bake.map(|b| b.as_std()),
        http: reqwest::Client::new(),
        progress: &progress,
    };
    ledger
        .set_deployment_state(&dep.id, "running", clock::now())
        .await?;
    let end = match &new {
        Some(n) => {
            // A weight whose bake never finished (the command died during
            // it, or before it began) is baked again; one whose bake ended in
            // a pause was decided on by whoever resumes.
            let steps = ledger.steps(&dep.id).await?;
            let baked = steps
                .iter()
                .any(|s| s.name == format!("bake-{}", n.weight) && s.state == "done");
            let has_bake = args.bake.is_some()
                || a.strategy
                    .steps
                    .iter()
                    .any(|s| s.weight == n.weight && s.bake.is_some_and(|b| !b.as_std().is_zero()));
            let from = if has_bake && !baked && n.weight > 0 {
                n.weight - 1
            } else {
                n.weight
            };
            progress.line(&format!(
                "{} runs in {} with {}% of traffic; continuing{}",
                release.version,
                n.slot,
                n.weight,
                if from < n.weight {
                    " with its bake"
                } else {
                    ""
                }
            ));
            rollout.advance(n.slot, &n.url, old.as_ref(), from).await
        }
        None => {
            let idle = old
                .as_ref()
                .map_or(crate::providers::Slot::Blue, |o| o.slot.other());
            progress.line(&format!(
                "{} is not running yet; deploying it again",
                release.version
            ));
            rollout
                .run(idle, old.as_ref(), async |_url: &str| Ok(true))
                .await
        }
    };
    finish(&ledger, a, &dep.id, &release.version, &actor, end, lease).await
}

/// Record how a resumed rollout ended, release the lease, and pick the exit code.
async fn finish(
    ledger: &crate::ledger::Ledger,
    a: &crate::model::Arena,
    deployment: &str,
    version: &str,
    actor: &str,
    end: Result<End, RolloutError>,
    lease: crate::ledger::Lease,
) -> CmdResult {
    let (state, summary, exit) = match &end {
        Ok(End::Succeeded) => (
            "succeeded",
            format!("{version} is live in {}", a.name),
            Exit::Success,
        ),
        Ok(End::RolledBack(why)) => ("rolled-back", why.clone(), Exit::GateFailed),
        Ok(End::Paused(why)) => ("paused", why.clone(), Exit::Inconclusive),
        Err(e) => ("failed", e.to_string(), Exit::Dependency),
    };
    ledger
        .set_deployment_state(deployment, state, clock::now())
        .await?;
    ledger
        .audit(
            &NewAudit {
                actor: actor.to_string(),
                action: format!("resume.{state}"),
                arena: Some(a.deploys_into().to_string()),
                subject: Some(deployment.to_string()),
                detail: json!({ "release": version, "summary": summary }),
                ..NewAudit::default()
            },
            clock::now(),
        )
        .await?;
    lease.release().await?;
    end?;
    Ok(Report {
        json: json!({ "deployment": deployment, "state": state, "summary": summary, "exit_code": exit.code() }),
        text: format!("{}: {summary} ({deployment})\n", a.name),
        exit,
    })
}

/// `copilot abort ARENA`: stop the deployment in progress and put traffic back on the previous release.
pub async fn abort(ctx: &Context, args: ArenaArgs) -> CmdResult {
    let (root, loaded) = ctx.project()?;
    let a = arena(&loaded.project, &args.arena)?;
    let provider = local_provider(&root, a)?;
    let ledger = ctx.ledger(Some(&root)).await?;
    let actor = clock::actor();
    let (dep, lease) = take_active(&ledger, a, &actor, "abort").await?;
    let status = provider.status().await?;
    let new = status
        .slots
        .iter()
        .find(|s| s.release_id == dep.release_id)
        .cloned();
    let old = status
        .slots
        .iter()
        .find(|s| Some(&s.release_id) == dep.previous_release_id.as_ref() && s.healthy)
        .cloned();
    let s = ledger
        .start_step(
            &dep.id,
            "abort",
            &json!({ "reason": args.reason, "back_to": old.as_ref().map(|o| &o.version) }),
            clock::now(),
        )
        .await?;
    let mut split = json!({});
    if let Some(o) = &old {
        let mut weights = vec![(o.slot, 100u8)];
        split[o.slot.as_str()] = json!({ "release": o.version, "weight": 100 });
        if let Some(n) = &new {
            weights.push((n.slot, 0));
            split[n.slot.as_str()] = json!({ "release": n.version, "weight": 0 });
        }
        provider.set_traffic(&weights).await?;
    } else if let Some(n) = &new {
        // Nothing to go back to: the new colour keeps serving; only the deployment stops.
        split[n.slot.as_str()] = json!({ "release": n.version, "weight": n.weight });
    }
    if let (Some(n), Some(_)) = (&new, &old) {
        provider.remove(n.slot).await?;
    }
    ledger
        .set_traffic(a.deploys_into(), &split, Some(&dep.id), clock::now())
        .await?;
    ledger
        .finish_step(
            &dep.id,
            s.seq,
            "done",
            &json!({ "weights": split }),
            clock::now(),
        )
        .await?;
    ledger
        .set_deployment_state(&dep.id, "aborted", clock::now())
        .await?;
    ledger
        .audit(
            &NewAudit {
                actor: actor.clone(),
                action: "abort".into(),
                arena: Some(a.deploys_into().to_string()),
                subject: Some(dep.id.clone()),
                reason: args.reason.clone(),
                detail: json!({ "weights": split }),
            },
            clock::now(),
        )
        .await?;
    lease.release().await?;
    let back = old.as_ref().map_or(
        "nothing to go back to; the new release keeps serving".to_string(),
        |o| format!("{} serves all traffic again", o.version),
    );
    Ok(Report::new(
        json!({ "deployment": dep.id, "state": "aborted", "weights": split }),
        format!("Aborted {} in {}: {back}\n", dep.id, a.name),
    ))
}
