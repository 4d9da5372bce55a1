//! `alerts`: alerting is green. No alert matching the arena's label matchers
//! is firing in Alertmanager (`GET /api/v2/alerts`), and optional PromQL
//! conditions hold in Prometheus (`GET /api/v1/query`).

use std::time::Duration;

use serde_json::{Value, json};

use super::http::join;
use super::{GateContext, Resolved, Verdict, resolve_reference};
use copilot_core::config::params::AlertsParams;
use copilot_core::model::Gate;
use copilot_db::redact_url;

pub async fn check(ctx: &GateContext<'_>, _gate: &Gate, p: AlertsParams) -> Verdict {
    let arena = ctx.arena;
    let base = match resolve_reference(arena, &p.alertmanager) {
        Resolved::Value(v) => v,
        Resolved::Unresolvable(why) => {
            return Verdict::unreachable(
                format!("Alertmanager: {why}"),
                json!({ "alertmanager": p.alertmanager }),
            );
        }
    };
    let matchers: Vec<String> = p
        .matchers
        .iter()
        .map(|m| m.replace("{arena}", &arena.name))
        .collect();
    let mut query: Vec<(&str, String)> = vec![
        ("active", "true".into()),
        ("silenced", "false".into()),
        ("inhibited", "false".into()),
        ("unprocessed", "false".into()),
    ];
    query.extend(matchers.iter().map(|m| ("filter", m.clone())));
    let url = join(&base, "/api/v2/alerts");
    let shown = redact_url(&base);
    let resp = ctx
        .http
        .get(&url)
        .query(&query)
        .timeout(Duration::from_secs(10))
        .send()
        .await;
    let alerts: Vec<Value> = match resp {
        Ok(r) if r.status().is_success() => match r.json().await {
            Ok(Value::Array(a)) => a,
            Ok(other) => {
                return Verdict::unreachable(
                    format!(
                        "Alertmanager at {shown} answered something other than a list: {}",
                        other.to_string().chars().take(100).collect::<String>()
                    ),
                    json!({}),
                );
            }
            Err(e) => {
                return Verdict::unreachable(format!("Alertmanager at {shown}: {e}"), json!({}));
            }
        },
        Ok(r) if r.status().as_u16() == 400 => {
            let body = r.text().await.unwrap_or_default();
            return Verdict::fail(
                format!("Alertmanager rejected the matchers {matchers:?}: {body}"),
                json!({ "matchers": matchers }),
            );
        }
        Ok(r) => {
            return Verdict::unreachable(
                format!("Alertmanager at {shown} answered {}", r.status()),
                json!({}),
            );
        }
        Err(e) => {
            return Verdict::unreachable(
                format!(
                    "cannot reach Alertmanager at {shown}: {}",
                    super::http::describe(e)
                ),
                json!({ "alertmanager": shown }),
            );
        }
    };
    let firing: Vec<Value> = alerts
        .iter()
        .filter(|a| a["status"]["state"].as_str().unwrap_or("active") == "active")
        .map(|a| {
            json!({
                "alertname": a["labels"]["alertname"],
                "labels": a["labels"],
                "startsAt": a["startsAt"],
                "summary": a["annotations"]["summary"],
            })
        })
        .collect();

    let mut failures = Vec::new();
    if !firing.is_empty() {
        let names: Vec<String> = firing
            .iter()
            .map(|a| a["alertname"].as_str().unwrap_or("?").to_string())
            .collect();
        failures.push(format!(
            "{} alert(s) firing: {}",
            firing.len(),
            names.join(", ")
        ));
    }
    let mut queries = Vec::new();
    if !p.queries.is_empty() {
        let Some(prom) = &p.prometheus else {
            return Verdict::fail("`queries` need `prometheus`", json!({}));
        };
        let prom = match resolve_reference(arena, prom) {
            Resolved::Value(v) => v,
            Resolved::Unresolvable(why) => {
                return Verdict::unreachable(format!("Prometheus: {why}"), json!({}));
            }
        };
        for q in &p.queries {
            let expr = q.query.replace("{arena}", &arena.name);
            let values = match crate::prometheus::instant_query(
                &ctx.http,
                &prom,
                &expr,
                Duration::from_secs(10),
            )
            .await
            {
                Ok(v) => v,
                Err(why) => return Verdict::unreachable(why, json!({})),
            };
            let worst = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let ok = values.is_empty() || worst <= q.max;
            if !ok {
                failures.push(format!("{expr} = {worst} > {}", q.max));
            }
            queries.push(json!({ "query": expr, "values": values, "max": q.max, "ok": ok }));
        }
    }
    let evidence = json!({ "source": format!("{shown}/api/v2/alerts"), "matchers": matchers, "firing": firing, "queries": queries });
    if failures.is_empty() {
        Verdict::pass(
            format!("no alerts firing for {}", matchers.join(", ")),
            evidence,
        )
    } else {
        Verdict::fail(failures.join("; "), evidence)
    }
}
