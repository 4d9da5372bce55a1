//! The current time and the current actor, injectable for tests and replays.
//!
//! `COPILOT_NOW` (RFC 3339) pins the clock; `COPILOT_ACTOR` names who acts
//! (default: `$USER@host`, or the CI actor on GitHub Actions).

use chrono::{DateTime, Utc};

/// Now, or the instant pinned by `COPILOT_NOW`.
/// A `COPILOT_NOW` that is not RFC 3339 is said once on stderr and ignored.
pub fn now() -> DateTime<Utc> {
    let Ok(text) = std::env::var("COPILOT_NOW") else {
        return Utc::now();
    };
    match DateTime::parse_from_rfc3339(text.trim()) {
        Ok(at) => at.with_timezone(&Utc),
        Err(e) => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::warn!("COPILOT_NOW is not an RFC 3339 instant ({e}); using the real clock")
            });
            Utc::now()
        }
    }
}

/// The instant `COPILOT_NOW` pins the clock to, when it does.
pub fn pinned() -> Option<DateTime<Utc>> {
    let text = std::env::var("COPILOT_NOW").ok()?;
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

/// The real time, whatever `COPILOT_NOW` says: what a guard that must not
/// be weakened by a pinned clock reads (when a lease expires).
pub fn real_now() -> DateTime<Utc> {
    Utc::now()
}

/// Who is acting, for the ledger and the audit log.
pub fn actor() -> String {
    if let Ok(a) = std::env::var("COPILOT_ACTOR")
        && !a.trim().is_empty()
    {
        return a;
    }
    if let Ok(a) = std::env::var("GITHUB_ACTOR")
        && !a.is_empty()
    {
        return format!("github:{a}");
    }
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into());
    format!("{user}@{}", gethostname::gethostname().to_string_lossy())
}
