//! SIGINT and SIGTERM during a rollout (Ctrl-C, a cancelled CI job).
//!
//! The first signal asks the rollout to stop at its next safe point, doing
//! what the arena's `rollback.on_interrupt` says (pause where it stands, or
//! put traffic back); the command then records that, lets go of the lease
//! and exits 5 (paused) or 1 (rolled back). A second signal exits at once
//! (130 for SIGINT, 143 for SIGTERM), leaving the deployment as the journal
//! last recorded it, for `resume`, `abort` or `rollback`.

use copilot_core::model::OnInterrupt;
use copilot_engine::rollout::stop::{Stop, StopAction, StopRequest};
use tokio::signal::unix::{SignalKind, signal};

/// Listen for the signals while the command runs.
pub fn stop_rollout_on_signals(stop: &Stop, on_interrupt: OnInterrupt) {
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot listen for SIGINT and SIGTERM; they end the command at once");
        return;
    };
    let stop = stop.clone();
    tokio::spawn(async move {
        let name = |int: bool| if int { "SIGINT" } else { "SIGTERM" };
        let first = tokio::select! {
            _ = int.recv() => true,
            _ = term.recv() => false,
        };
        let (action, what) = match on_interrupt {
            OnInterrupt::Pause => (StopAction::Pause, "pausing where it stands"),
            OnInterrupt::Rollback => (StopAction::Rollback, "putting traffic back"),
        };
        eprintln!(
            "{}: stopping the rollout at its next safe point, {what} (rollback.on_interrupt); \
             a second signal exits at once, leaving it resumable",
            name(first)
        );
        stop.request(StopRequest {
            action,
            by: name(first).to_string(),
        });
        let second = tokio::select! {
            _ = int.recv() => true,
            _ = term.recv() => false,
        };
        eprintln!(
            "{}: exiting now; `copilot status` shows where the deployment stands",
            name(second)
        );
        std::process::exit(if second { 130 } else { 143 });
    });
}
