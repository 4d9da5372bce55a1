//! What copilot shows, computed once as typed, serializable values: the CLI
//! renders them as tables or JSON, and a dashboard or GitHub can take the
//! same structs.
//!
//! - [`status`]: what runs where, the ledger and the platform side by side;
//! - [`history`]: deployments, newest first;
//! - [`evidence`]: one deployment's steps, gate runs and log excerpts;
//! - [`plan`]: what a promotion would change;
//! - [`candidate`]: which release a promotion or a gate run is about.

pub mod evidence;
pub mod history;
pub mod plan;
pub mod status;

use copilot_core::model::Arena;
use copilot_ledger::{Ledger, LedgerError, Release};

/// The release a promotion into an arena (or a gate run for it) is about:
/// the one named, else the one live in the source arena; `None` when
/// neither names one.
pub async fn candidate(
    ledger: &Ledger,
    named: Option<&str>,
    source: Option<&Arena>,
) -> Result<Option<Release>, LedgerError> {
    match (named, source) {
        (Some(reference), _) => Ok(Some(ledger.find_release(reference).await?)),
        (None, Some(s)) => match ledger.live(&s.name).await? {
            Some(live) => ledger.release_by_id(&live.deployment.release_id).await,
            None => Ok(None),
        },
        (None, None) => Ok(None),
    }
}
