//! `history`: deployments, newest first.

use serde::Serialize;

use copilot_ledger::{DeploymentRow, Ledger, LedgerError};

#[derive(Clone, Debug, Serialize)]
pub struct HistoryView {
    pub deployments: Vec<DeploymentRow>,
}

/// The latest `limit` deployments (at least one), of one arena or all.
pub async fn history(
    ledger: &Ledger,
    arena: Option<&str>,
    limit: i64,
) -> Result<HistoryView, LedgerError> {
    Ok(HistoryView {
        deployments: ledger.history(arena, limit.max(1)).await?,
    })
}
