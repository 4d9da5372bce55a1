//! Stopping a running rollout at a safe point.
//!
//! Three things ask a rollout to stop: `copilot abort` from another process
//! (a [`Cancel`] left on the lease, which the holder reads within half a
//! second), a signal to the holder (SIGINT, SIGTERM: a CI job cancelled),
//! and the loss of the lease. The first request wins. A rollout looks at
//! its [`Stop`] between steps and races it against bakes, waits for a new
//! colour and gates, never against a call that changes the platform, so it
//! always stops with the journal saying where it stood.

use std::sync::Arc;

use tokio::sync::watch;

pub use copilot_ledger::CancelAction as StopAction;
use copilot_ledger::{Cancel, Lease};

/// Why a rollout was asked to stop, and what it does then.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StopRequest {
    pub action: StopAction,
    /// Who or what asked: "abort by alice: bad numbers", "SIGTERM".
    pub by: String,
}

impl StopRequest {
    pub fn from_cancel(c: &Cancel) -> Self {
        let by = match &c.reason {
            Some(r) => format!("abort by {}: {r}", c.by),
            None => format!("abort by {}", c.by),
        };
        StopRequest {
            action: c.action,
            by,
        }
    }
}

/// A rollout's stop switch, shared by whoever may ask and the rollout.
#[derive(Clone, Debug)]
pub struct Stop(Arc<watch::Sender<Option<StopRequest>>>);

impl Default for Stop {
    fn default() -> Self {
        Stop(Arc::new(watch::channel(None).0))
    }
}

impl Stop {
    /// Ask the rollout to stop; `false` when it was already asked (the first
    /// request stands).
    pub fn request(&self, r: StopRequest) -> bool {
        self.0.send_if_modified(|current| {
            if current.is_some() {
                return false;
            }
            *current = Some(r);
            true
        })
    }

    /// The request made, if any.
    pub fn requested(&self) -> Option<StopRequest> {
        self.0.borrow().clone()
    }

    /// Resolves once a stop is requested.
    pub async fn wait(&self) -> StopRequest {
        let mut rx = self.0.subscribe();
        loop {
            if let Some(r) = &*rx.borrow_and_update() {
                return r.clone();
            }
            // The sender lives in `self`: it cannot close while we wait.
            let _ = rx.changed().await;
        }
    }

    /// Pass a cancel request left on `lease` on to this switch, for as long
    /// as the returned task runs (abort it when the lease is let go).
    pub fn follow(&self, lease: &Lease) -> impl Future<Output = ()> + use<> {
        let stop = self.clone();
        let cancelled = lease.cancel_watch();
        async move {
            let mut cancelled = cancelled;
            loop {
                if let Some(c) = &*cancelled.borrow_and_update() {
                    stop.request(StopRequest::from_cancel(c));
                    return;
                }
                if cancelled.changed().await.is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_request_stands() {
        let stop = Stop::default();
        assert!(stop.requested().is_none());
        let waiter = tokio::spawn({
            let stop = stop.clone();
            async move { stop.wait().await }
        });
        assert!(stop.request(StopRequest {
            action: StopAction::Pause,
            by: "SIGTERM".into()
        }));
        assert!(!stop.request(StopRequest {
            action: StopAction::Rollback,
            by: "abort by alice".into()
        }));
        let got = waiter.await.unwrap();
        assert_eq!(got.by, "SIGTERM");
        assert_eq!(stop.requested().unwrap().action, StopAction::Pause);
    }
}
