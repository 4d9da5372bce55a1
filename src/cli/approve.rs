//! `copilot approve ARENA --release REF [--note TEXT]`.

use serde_json::json;

use super::{CmdResult, Context, Report, arena};
use copilot_core::clock;
use copilot_ledger::NewAudit;

#[derive(Debug, clap::Args)]
pub struct Args {
    pub arena: String,
    /// The release approved (id, version or image)
    #[arg(long, value_name = "REF")]
    pub release: String,
    #[arg(long)]
    pub note: Option<String>,
}

pub async fn run(ctx: &Context, args: Args) -> CmdResult {
    let (root, loaded) = ctx.project()?;
    let a = arena(&loaded.project, &args.arena)?;
    let ledger = ctx.ledger(Some(&root)).await?;
    let release = ledger.find_release(&args.release).await?;
    let now = clock::now();
    let actor = clock::actor();
    let approval = ledger
        .approve(&a.name, &release.id, &actor, args.note.as_deref(), now)
        .await?;
    ledger
        .audit(
            &NewAudit {
                actor: actor.clone(),
                action: "approve".into(),
                arena: Some(a.name.clone()),
                subject: Some(release.id.clone()),
                reason: args.note.clone(),
                detail: json!({ "version": release.version }),
            },
            now,
        )
        .await?;
    let total = ledger.approvals(&a.name, &release.id).await?.len();
    let text = format!(
        "Approved {} for {} as {actor} ({total} approval(s) in total)\n",
        release.version, a.name
    );
    Ok(Report::new(
        json!({ "approval": approval, "approvals": total }),
        text,
    ))
}
