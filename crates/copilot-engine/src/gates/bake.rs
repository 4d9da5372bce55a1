//! `bake`: the release has served the source arena for long enough.

use serde_json::json;

use super::{GateContext, Verdict};
use copilot_core::config::params::BakeParams;
use copilot_core::model::Gate;

pub async fn check(ctx: &GateContext<'_>, _gate: &Gate, p: BakeParams) -> Verdict {
    let Some(source) = ctx.source else {
        return Verdict::inconclusive(
            format!(
                "arena {} promotes from no arena: nothing to have baked in",
                ctx.arena.name
            ),
            json!({}),
        );
    };
    let Some(release) = ctx.release else {
        return Verdict::inconclusive(
            format!("no release: {} has nothing live", source.name),
            json!({ "source_arena": source.name }),
        );
    };
    let history = match ctx.ledger.history(Some(&source.name), 500).await {
        Ok(h) => h,
        Err(e) => return Verdict::unreachable(format!("ledger: {e}"), json!({})),
    };
    // When the release last went live in the source arena, and whether it still is.
    let live = history.iter().find(|d| d.deployment.state == "succeeded");
    let since = history
        .iter()
        .filter(|d| d.deployment.release_id == release.id && d.deployment.state == "succeeded")
        .filter_map(|d| d.deployment.finished_at)
        .max();
    let still_live = live.is_some_and(|d| d.deployment.release_id == release.id);
    let evidence = json!({
        "source": "ledger",
        "arena": source.name,
        "release": release.version,
        "live_since": since,
        "still_live": still_live,
        "required": p.min.to_string(),
    });
    match since {
        None => Verdict::fail(
            format!("{} never went live in {}", release.version, source.name),
            evidence,
        ),
        Some(_) if !still_live => Verdict::fail(
            format!("{} is no longer live in {}", release.version, source.name),
            evidence,
        ),
        Some(t) => {
            let baked = ctx.now - t;
            let needed = p.min.as_chrono();
            if baked >= needed {
                Verdict::pass(
                    format!(
                        "{} live in {} for {}h (need {})",
                        release.version,
                        source.name,
                        baked.num_hours(),
                        p.min
                    ),
                    evidence,
                )
            } else {
                Verdict::fail(
                    format!(
                        "{} live in {} for {}m, needs {} (until {})",
                        release.version,
                        source.name,
                        baked.num_minutes(),
                        p.min,
                        p.min.after(t).format("%Y-%m-%d %H:%M UTC")
                    ),
                    evidence,
                )
            }
        }
    }
}
