//! `copilot history [ARENA] [--limit N]`.

use super::{CmdResult, Context, Report, Table, arena, when};
use copilot_engine::views::history::history;

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
    let view = history(&ledger, args.arena.as_deref(), args.limit).await?;
    let rows = &view.deployments;
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
    for r in rows {
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
    Ok(Report::new(
        serde_json::to_value(&view).expect("json"),
        text,
    ))
}
