//! The current time and the current actor, injectable for tests and replays.
//!
//! `COPILOT_NOW` (RFC 3339) pins the clock; `COPILOT_ACTOR` names who acts
//! (default: `$USER@host`, or the CI actor on GitHub Actions).

use chrono::{DateTime, Utc};

/// Now, or the instant pinned by `COPILOT_NOW`.
pub fn now() -> DateTime<Utc> {
    std::env::var("COPILOT_NOW")
        .ok()
        .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
        .map_or_else(Utc::now, |t| t.with_timezone(&Utc))
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
