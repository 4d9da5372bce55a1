//! `copilot history [ARENA] [--limit N]`.

use serde_json::json;

use super::{CmdResult, Context, Report, Table, arena, when};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One arena [default: all]
    pub arena: Option<String>,
    #[arg(long, default_value_t = 20)]
    pub limit: i64,
}

pub async fn run(ctx: &Context, args: Args) -> CmdResult {
    let (root, loaded) = ctx.project()?;
    if let Some(name) = &args.arena {
        arena(&loaded.project, name)?;
    }
    let ledger = ctx.ledger(Some(&root)).await?;
    let rows = ledger
        .history(args.arena.as_deref(), args.limit.max(1))
        .await?;
    let mut t = Table::new([
        "STARTED",
        "ARENA",
        "KIND",
        "RELEASE",
        "STATE",
        "BY",
        "DEPLOYMENT",
        "REASON",
    ]);
    for r in &rows {
        let d = &r.deployment;
        t.row([
            when(d.started_at),
            d.arena.clone(),
            d.kind.clone(),
            r.version.clone(),
            d.state.clone(),
            d.created_by.clone(),
            d.id.clone(),
            d.reason.clone().unwrap_or_default(),
        ]);
    }
    let text = if rows.is_empty() {
        "No deployments yet.\n".to_string()
    } else {
        t.render()
    };
    Ok(Report::new(json!({ "deployments": rows }), text))
}
