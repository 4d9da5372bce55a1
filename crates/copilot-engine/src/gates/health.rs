//! `health`: `/health`, `/health/db`, `/health/cache`, `/health/external`
//! answer in time; a `degraded` answer from a listed endpoint is a warning.

use serde_json::{Value, json};

use super::http::{excerpt, join, send, unreachable};
use super::{GateContext, Verdict};
use copilot_core::config::params::HealthParams;
use copilot_core::model::Gate;

pub async fn check(ctx: &GateContext<'_>, _gate: &Gate, p: HealthParams) -> Verdict {
    let Some(base) = ctx.url_for(false) else {
        return Verdict::inconclusive(
            "no URL for the service: set APP_URL in the arena or pass --url",
            json!({}),
        );
    };
    // The endpoints are asked at once: the gate takes as long as the slowest.
    let answers = futures_util::future::join_all(p.endpoints.iter().map(|path| {
        let url = join(&base, path);
        send(ctx.http.get(url).timeout(p.request_timeout.as_std()))
    }))
    .await;
    if let Some(Err(cause)) = answers.first()
        && answers
            .iter()
            .all(|a| a.as_ref().is_err_and(|e| e.unreachable))
    {
        let evidence = json!({ "source": base, "endpoints": p.endpoints, "error": cause.message });
        return unreachable(&base, cause, evidence);
    }
    let mut checks = Vec::new();
    let (mut failed, mut degraded) = (Vec::new(), Vec::new());
    for (path, answer) in p.endpoints.iter().zip(answers) {
        let entry = match answer {
            Ok(a) => {
                let status = a
                    .body
                    .as_ref()
                    .and_then(|b| b.get("status"))
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                let warns = p.degraded_warns.contains(path);
                if a.status == 200 && status == "degraded" && warns {
                    degraded.push(path.clone());
                } else if a.status != 200 || (status != "ok" && status != "degraded") {
                    failed.push(format!("{path} answered {} {status}", a.status));
                } else if status == "degraded" {
                    failed.push(format!("{path} is degraded"));
                }
                json!({ "path": path, "status": a.status, "body_status": status, "ms": a.elapsed.as_millis() as u64, "body": excerpt(&a.text, 300) })
            }
            Err(e) => {
                failed.push(format!("{path}: {e}"));
                json!({ "path": path, "error": e.message })
            }
        };
        checks.push(entry);
    }
    let evidence =
        json!({ "source": base, "timeout": p.request_timeout.to_string(), "checks": checks });
    if !failed.is_empty() {
        Verdict::fail(failed.join("; "), evidence)
    } else if !degraded.is_empty() {
        Verdict::warn(format!("degraded: {}", degraded.join(", ")), evidence)
    } else {
        Verdict::pass(format!("{} endpoints healthy", p.endpoints.len()), evidence)
    }
}
