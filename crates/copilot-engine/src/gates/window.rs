//! `window`: deploy windows and freeze periods allow a deploy now.

use chrono::{Duration, DurationRound};
use serde_json::json;

use super::{GateContext, Verdict};
use copilot_core::config::params::WindowParams;
use copilot_core::model::{Gate, WindowBypass};

pub async fn check(ctx: &GateContext<'_>, _gate: &Gate, p: WindowParams) -> Verdict {
    let w = &ctx.arena.windows;
    let now = ctx.now;
    let mut freezes: Vec<String> = w
        .freeze
        .iter()
        .filter(|f| f.contains(now))
        .map(ToString::to_string)
        .collect();
    // A pinned clock (`COPILOT_NOW`) cannot lift a freeze that nothing may
    // bypass: before a change, freezes are read by the real clock too.
    let real = copilot_core::clock::real_now();
    if ctx.acting && w.bypass == WindowBypass::Never && copilot_core::clock::pinned().is_some() {
        for f in w
            .freeze
            .iter()
            .filter(|f| f.contains(real) && !f.contains(now))
        {
            freezes.push(format!(
                "{f} (by the real clock; COPILOT_NOW does not lift it)"
            ));
        }
    }
    let open = w.allow.is_empty() || w.allow.iter().any(|a| a.contains(now));
    // The next moment a deploy would be allowed, scanning ahead in 15-minute steps.
    let next_open = (!open || !freezes.is_empty())
        .then(|| {
            let start = now.duration_trunc(Duration::minutes(15)).unwrap_or(now);
            (1..=(60 * 24 * 4))
                .map(|i| start + Duration::minutes(15 * i))
                .find(|t| {
                    (w.allow.is_empty() || w.allow.iter().any(|a| a.contains(*t)))
                        && !w.freeze.iter().any(|f| f.contains(*t))
                })
        })
        .flatten();
    let evidence = json!({
        "now": now,
        "allow": w.allow.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "freeze": w.freeze.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "in_window": open,
        "active_freezes": freezes,
        "next_allowed": next_open,
        "bypass": w.bypass,
        "bypass_reason": ctx.bypass_reason,
        "source": "clock",
    });
    let problem = if !freezes.is_empty() {
        Some(format!("frozen: {}", freezes.join(", ")))
    } else if !open {
        Some(format!(
            "outside the deploy windows ({})",
            w.allow
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        ))
    } else {
        None
    };
    let Some(problem) = problem else {
        return Verdict::pass(
            if w.allow.is_empty() {
                "no windows restrict this arena".to_string()
            } else {
                "inside a deploy window".to_string()
            },
            evidence,
        );
    };
    let next = next_open
        .map(|t| format!("; next allowed {}", t.format("%a %Y-%m-%d %H:%M UTC")))
        .unwrap_or_default();
    match (&ctx.bypass_reason, w.bypass) {
        (Some(reason), WindowBypass::WithReason) => Verdict::warn(
            format!("{problem}; bypassed with reason: {reason}"),
            evidence,
        )
        .bypassing(),
        (Some(_), WindowBypass::Never) => Verdict::fail(
            format!("{problem}{next}; this arena's windows cannot be bypassed"),
            evidence,
        )
        .blocking(),
        (None, _) if freezes.is_empty() && p.outside_window_warns => {
            Verdict::warn(format!("{problem}{next}"), evidence)
        }
        (None, _) => Verdict::fail(format!("{problem}{next}"), evidence).blocking(),
    }
}
