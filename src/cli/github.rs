//! GitHub: the connection every command shares (deployments and statuses
//! from its executors, comments, check runs), and `copilot github sync`.

use std::sync::Arc;

use serde_json::json;

use super::{CliError, CmdResult, Context, Exit, Report};
use copilot_github::{GitHub, Settings};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Send what GitHub has not taken yet (it was down or rate limiting), oldest first
    Sync,
}

/// The repository's GitHub from the environment (`GITHUB_TOKEN`,
/// `GITHUB_REPOSITORY`, `GITHUB_API_URL`); `None` without a token, and
/// for settings that are wrong, with a warning: GitHub never stops a
/// command.
pub fn from_env() -> Option<Arc<GitHub>> {
    match Settings::from_env().and_then(|s| s.map(GitHub::new).transpose()) {
        Ok(g) => g.map(Arc::new),
        Err(e) => {
            tracing::warn!("GitHub is not told: {e}");
            None
        }
    }
}

/// Said once when a deployment starts and GitHub cannot be told: as a
/// line where GitHub is expected (GitHub Actions, a repository named),
/// in the log elsewhere.
pub fn say_not_told() {
    static SAID: std::sync::Once = std::sync::Once::new();
    SAID.call_once(|| {
        let expected = std::env::var_os("GITHUB_ACTIONS").is_some()
            || std::env::var_os("GITHUB_REPOSITORY").is_some();
        if expected {
            tracing::warn!("GITHUB_TOKEN is not set: GitHub is not told of this deployment");
        } else {
            tracing::info!("GITHUB_TOKEN is not set: GitHub is not told of this deployment");
        }
    });
}

pub async fn run(ctx: &Context, cmd: Command) -> CmdResult {
    match cmd {
        Command::Sync => {
            let Some(github) = &ctx.github else {
                return Err(CliError::invalid(
                    "GITHUB_TOKEN is not set: there is no GitHub to send to",
                )
                .with_hint("set GITHUB_TOKEN and GITHUB_REPOSITORY (GitHub Actions sets both)"));
            };
            let root = ctx.root()?;
            let ledger = ctx.ledger(Some(&root)).await?;
            github.attach(&ledger);
            let flushed = github.flush().await;
            let repo = &github.settings().repository;
            let text = format!(
                "{repo}: {} sent, {} refused, {} still waiting\n",
                flushed.sent, flushed.refused, flushed.pending
            );
            let mut report = Report::new(
                json!({ "repository": repo, "sent": flushed.sent, "refused": flushed.refused, "pending": flushed.pending }),
                text,
            );
            if flushed.pending > 0 {
                report.exit = Exit::Dependency;
            }
            Ok(report)
        }
    }
}
