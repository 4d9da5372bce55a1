//! `copilot lock ARENA --reason TEXT` and `copilot unlock ARENA`.

use serde_json::json;

use super::{CliError, CmdResult, Context, Report, arena};
use copilot_core::clock;
use copilot_ledger::{LedgerError, LockKind, LockRequest, NewAudit};

#[derive(Debug, clap::Args)]
pub struct LockArgs {
    pub arena: String,
    /// Why the arena is locked; shown to anyone who tries to deploy
    #[arg(long)]
    pub reason: String,
}

#[derive(Debug, clap::Args)]
pub struct UnlockArgs {
    pub arena: String,
    /// Also break a lease held by a running promotion
    #[arg(long)]
    pub force: bool,
    #[arg(long)]
    pub reason: Option<String>,
}

pub async fn lock(ctx: &Context, args: LockArgs) -> CmdResult {
    if args.reason.trim().is_empty() {
        return Err(CliError::invalid(
            "--reason must say why the arena is locked",
        ));
    }
    let (root, loaded) = ctx.project()?;
    let a = arena(&loaded.project, &args.arena)?;
    let ledger = ctx.ledger(Some(&root)).await?;
    let now = clock::now();
    let actor = clock::actor();
    let lock = ledger
        .acquire_lock(
            &LockRequest::here(&a.name, LockKind::Manual, &actor, &args.reason, None),
            clock::real_now(),
        )
        .await?;
    ledger
        .audit(
            &NewAudit {
                actor: actor.clone(),
                action: "lock".into(),
                arena: Some(a.name.clone()),
                reason: Some(args.reason.clone()),
                ..NewAudit::default()
            },
            now,
        )
        .await?;
    Ok(Report::new(
        json!({ "lock": lock }),
        format!("Locked {} as {actor}: {}\n", a.name, args.reason),
    ))
}

pub async fn unlock(ctx: &Context, args: UnlockArgs) -> CmdResult {
    let (root, loaded) = ctx.project()?;
    let a = arena(&loaded.project, &args.arena)?;
    let ledger = ctx.ledger(Some(&root)).await?;
    let now = clock::now();
    let actor = clock::actor();
    // Whether a lease has expired is the real clock's to say.
    match ledger.unlock(&a.name, args.force, clock::real_now()).await {
        Ok(old) => {
            ledger
                .audit(
                    &NewAudit {
                        actor: actor.clone(),
                        action: "unlock".into(),
                        arena: Some(a.name.clone()),
                        reason: args.reason.clone(),
                        detail: json!({ "removed": { "kind": old.kind, "owner": old.owner, "reason": old.reason }, "forced": args.force }),
                        ..NewAudit::default()
                    },
                    now,
                )
                .await?;
            Ok(Report::new(
                json!({ "unlocked": true, "removed": old }),
                format!(
                    "Unlocked {} (was: {} by {}: {})\n",
                    a.name, old.kind, old.owner, old.reason
                ),
            ))
        }
        Err(LedgerError::NotLocked(_)) => Ok(Report::new(
            json!({ "unlocked": false, "removed": null }),
            format!("{} was not locked\n", a.name),
        )),
        Err(e) => Err(e.into()),
    }
}
