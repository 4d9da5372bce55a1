//! `smoke`: scripted journeys, run in order, each with an expected status
//! and JSON-pointer assertions.

use serde_json::json;

use super::http::{excerpt, join, send, unreachable};
use super::{GateContext, Verdict};
use copilot_core::config::params::SmokeParams;
use copilot_core::model::Gate;

pub async fn check(ctx: &GateContext<'_>, _gate: &Gate, p: SmokeParams) -> Verdict {
    let Some(base) = ctx.url_for(false) else {
        return Verdict::inconclusive(
            "no URL for the service: set APP_URL in the arena or pass --url",
            json!({}),
        );
    };
    if p.steps.is_empty() {
        return Verdict::skipped("no smoke steps defined");
    }
    let mut results = Vec::new();
    let mut failures = Vec::new();
    for step in &p.steps {
        let method = reqwest::Method::from_bytes(step.method.to_uppercase().as_bytes())
            .unwrap_or(reqwest::Method::GET);
        let mut req = ctx.http.request(method, join(&base, &step.path));
        for (k, v) in &step.headers {
            req = req.header(k, v);
        }
        if let Some(body) = &step.body {
            req = req.json(body);
        }
        let mut problems = Vec::new();
        let entry = match send(req).await {
            Ok(a) => {
                if a.status != step.status {
                    problems.push(format!("status {} (expected {})", a.status, step.status));
                }
                for (pointer, expected) in &step.json {
                    let actual = a.body.as_ref().and_then(|b| b.pointer(pointer));
                    if actual != Some(expected) {
                        problems.push(format!(
                            "{pointer} is {} (expected {expected})",
                            actual.map_or("missing".to_string(), ToString::to_string)
                        ));
                    }
                }
                json!({ "step": step.name, "status": a.status, "ms": a.elapsed.as_millis() as u64, "ok": problems.is_empty(), "problems": problems, "body": excerpt(&a.text, 300) })
            }
            // Out of reach: the journeys after it cannot run either.
            Err(e) if e.unreachable => {
                results.push(json!({ "step": step.name, "ok": false, "error": e.message }));
                return unreachable(&base, &e, json!({ "source": base, "steps": results }));
            }
            Err(e) => {
                problems.push(e.message.clone());
                json!({ "step": step.name, "ok": false, "error": e.message })
            }
        };
        if !problems.is_empty() {
            failures.push(format!("{}: {}", step.name, problems.join(", ")));
        }
        results.push(entry);
    }
    let evidence = json!({ "source": base, "steps": results });
    if failures.is_empty() {
        Verdict::pass(format!("{} steps passed", p.steps.len()), evidence)
    } else {
        Verdict::fail(failures.join("; "), evidence)
    }
}
