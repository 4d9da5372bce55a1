//! `approval`: someone recorded `copilot approve` for this release and arena.

use serde_json::json;

use super::{GateContext, Verdict};
use copilot_core::config::params::ApprovalParams;
use copilot_core::model::Gate;

pub async fn check(ctx: &GateContext<'_>, _gate: &Gate, p: ApprovalParams) -> Verdict {
    let Some(release) = ctx.release else {
        return Verdict::inconclusive(
            "no release to look for approvals of",
            json!({ "source": "ledger" }),
        );
    };
    let approvals = match ctx.ledger.approvals(&ctx.arena.name, &release.id).await {
        Ok(a) => a,
        Err(e) => return Verdict::unreachable(format!("ledger: {e}"), json!({})),
    };
    let approvers: Vec<&str> = approvals.iter().map(|a| a.approver.as_str()).collect();
    let evidence = json!({
        "source": "ledger",
        "release": release.version,
        "approvals": approvals.iter().map(|a| json!({ "approver": a.approver, "note": a.note, "at": a.created_at })).collect::<Vec<_>>(),
        "required": p.min_approvals,
    });
    let n = approvers.len() as u32;
    if n >= p.min_approvals {
        Verdict::pass(format!("approved by {}", approvers.join(", ")), evidence)
    } else {
        Verdict::fail(
            format!(
                "{n} of {} approval(s) for {} in {}: run `copilot approve {} --release {}`",
                p.min_approvals, release.version, ctx.arena.name, ctx.arena.name, release.version
            ),
            evidence,
        )
        .blocking()
    }
}
