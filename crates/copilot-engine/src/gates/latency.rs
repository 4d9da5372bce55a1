//! `latency`: endpoints answer with responses that satisfy their JSON Schema,
//! within the latency budget (p50/p95/p99 from an HDR histogram), over at
//! least `min_samples` good samples; fewer samples is inconclusive.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use super::http::{Transport, UNREACHABLE_AFTER, join, unreachable};
use super::{GateContext, Verdict};
use copilot_core::config::params::LatencyParams;
use copilot_core::model::Gate;

/// Whether the target can be reached at all: the workers stop once
/// [`UNREACHABLE_AFTER`] connections in a row have failed.
#[derive(Default)]
struct Reach {
    failures_in_row: AtomicUsize,
    last: std::sync::Mutex<Option<String>>,
}

impl Reach {
    fn failed(&self, message: String) {
        *self.last.lock().expect("reach lock") = Some(message);
        self.failures_in_row.fetch_add(1, Ordering::Relaxed);
    }

    fn answered(&self) {
        self.failures_in_row.store(0, Ordering::Relaxed);
    }

    fn gave_up(&self) -> bool {
        self.failures_in_row.load(Ordering::Relaxed) >= UNREACHABLE_AFTER
    }

    fn cause(&self) -> Option<Transport> {
        if !self.gave_up() {
            return None;
        }
        let message = self.last.lock().expect("reach lock").clone()?;
        Some(Transport {
            message,
            unreachable: true,
        })
    }
}

/// One request: how long its response took to arrive, and what arrived.
struct Sample {
    micros: u64,
    arrived: Arrived,
}

/// What came back for one request, before it is judged.
enum Arrived {
    Body(axum::body::Bytes),
    Status(u16),
    Broken(String),
}

/// What is wrong with a response, if anything: a status that is not a
/// success, a broken transfer, or a body that is not JSON or breaks the schema.
fn judge(arrived: &Arrived, validator: Option<&jsonschema::Validator>) -> Option<String> {
    match arrived {
        Arrived::Body(body) => {
            let v = validator?;
            match serde_json::from_slice::<Value>(body) {
                Ok(doc) => v
                    .iter_errors(&doc)
                    .next()
                    .map(|e| format!("schema: {} at {}", e, e.instance_path())),
                Err(e) => Some(format!("not JSON: {e}")),
            }
        }
        Arrived::Status(code) => Some(format!("HTTP {code}")),
        Arrived::Broken(e) => Some(e.clone()),
    }
}

pub async fn check(ctx: &GateContext<'_>, _gate: &Gate, p: LatencyParams) -> Verdict {
    let Some(base) = ctx.url_for(false) else {
        return Verdict::inconclusive(
            "no URL for the service: set APP_URL in the arena or pass --url",
            json!({}),
        );
    };
    if p.endpoints.is_empty() {
        return Verdict::skipped("no endpoints to measure");
    }
    let mut endpoints = Vec::new();
    let mut failures = Vec::new();
    let mut short = Vec::new();
    for ep in &p.endpoints {
        let validator = match &ep.schema {
            Some(path) => {
                let file = ctx.project_path(path);
                let schema: Value = match std::fs::read_to_string(&file)
                    .map_err(|e| e.to_string())
                    .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
                {
                    Ok(s) => s,
                    Err(e) => {
                        return Verdict::fail(format!("schema {}: {e}", file.display()), json!({}));
                    }
                };
                match jsonschema::validator_for(&schema) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        return Verdict::fail(
                            format!("schema {} is not a JSON Schema: {e}", file.display()),
                            json!({}),
                        );
                    }
                }
            }
            None => None,
        };
        let url = join(&base, &ep.path);
        let method = reqwest::Method::from_bytes(ep.method.to_uppercase().as_bytes())
            .unwrap_or(reqwest::Method::GET);
        let next = Arc::new(AtomicUsize::new(0));
        let reach = Arc::new(Reach::default());
        let total = p.requests as usize;
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..p.concurrency.max(1) {
            let (client, url, method, next, reach) = (
                ctx.http.clone(),
                url.clone(),
                method.clone(),
                next.clone(),
                reach.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut samples = Vec::new();
                while !reach.gave_up() && next.fetch_add(1, Ordering::Relaxed) < total {
                    let t = Instant::now();
                    let res = client.request(method.clone(), &url).send().await;
                    match &res {
                        Err(e) if e.is_connect() => reach.failed(super::http::describe_ref(e)),
                        _ => reach.answered(),
                    }
                    // The timer stops when the whole response has arrived,
                    // as a load generator's does: checking it against the
                    // schema is the gate's time, not the service's, and
                    // waits until the load is over (the bodies are kept
                    // until then: `requests` of them).
                    let arrived = match res {
                        Ok(r) if r.status().is_success() => match r.bytes().await {
                            Ok(body) => Arrived::Body(body),
                            Err(e) => Arrived::Broken(super::http::describe(e)),
                        },
                        Ok(r) => {
                            let code = r.status().as_u16();
                            let _ = r.bytes().await;
                            Arrived::Status(code)
                        }
                        Err(e) => Arrived::Broken(super::http::describe(e)),
                    };
                    let micros = t.elapsed().as_micros().max(1) as u64;
                    samples.push(Sample { micros, arrived });
                }
                samples
            }));
        }
        let mut samples = Vec::new();
        for t in tasks {
            samples.extend(t.await.unwrap_or_default());
        }
        if let Some(cause) = reach.cause() {
            let evidence = json!({
                "source": base,
                "path": ep.path,
                "requests": samples.len(),
                "error": cause.message,
                "stopped_after": format!("{UNREACHABLE_AFTER} connection failures in a row"),
            });
            return unreachable(&base, &cause, evidence);
        }
        let wall = start.elapsed();
        let mut hist =
            Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds");
        // Responses are judged once the load is over, so that parsing and
        // schema checks take no time from the requests still in flight.
        let mut bad = 0usize;
        let mut first_problems: Vec<String> = Vec::new();
        for s in &samples {
            match judge(&s.arrived, validator.as_ref()) {
                None => {
                    let _ = hist.record(s.micros);
                }
                Some(problem) => {
                    bad += 1;
                    if first_problems.len() < 5 && !first_problems.contains(&problem) {
                        first_problems.push(problem);
                    }
                }
            }
        }
        let q = |x: f64| {
            if hist.is_empty() {
                None
            } else {
                Some(hist.value_at_quantile(x) as f64 / 1000.0)
            }
        };
        let (p50, p95, p99) = (q(0.50), q(0.95), q(0.99));
        let good = hist.len();
        let mut ep_fail = Vec::new();
        if bad > 0 {
            ep_fail.push(format!(
                "{bad} of {} responses were errors or broke the schema",
                samples.len()
            ));
        }
        for (name, measured, budget) in [
            ("p50", p50, p.p50),
            ("p95", p95, p.p95),
            ("p99", p99, p.p99),
        ] {
            if let (Some(m), Some(b)) = (measured, budget)
                && m > b.as_millis() as f64
            {
                ep_fail.push(format!("{name} {m:.1}ms > {b}"));
            }
        }
        if (good as u32) < p.min_samples && ep_fail.is_empty() {
            short.push(format!(
                "{}: {good} good samples, need {}",
                ep.path, p.min_samples
            ));
        }
        for f in &ep_fail {
            failures.push(format!("{}: {f}", ep.path));
        }
        endpoints.push(json!({
            "path": ep.path,
            "method": ep.method,
            "schema": ep.schema,
            "requests": samples.len(),
            "good": good,
            "bad": bad,
            "first_problems": first_problems,
            "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
            "max_ms": (!hist.is_empty()).then(|| hist.max() as f64 / 1000.0),
            "budget": { "p50": p.p50.map(|d| d.to_string()), "p95": p.p95.map(|d| d.to_string()), "p99": p.p99.map(|d| d.to_string()) },
            "requests_per_second": samples.len() as f64 / wall.as_secs_f64().max(1e-9),
        }));
    }
    let evidence = json!({ "source": base, "concurrency": p.concurrency, "min_samples": p.min_samples, "histogram": "HDR, 3 significant digits", "endpoints": endpoints });
    if !failures.is_empty() {
        Verdict::fail(failures.join("; "), evidence)
    } else if !short.is_empty() {
        Verdict::inconclusive(short.join("; "), evidence)
    } else {
        let summary = endpoints
            .iter()
            .map(|e| {
                format!(
                    "{} p95 {:.1}ms",
                    e["path"].as_str().unwrap_or(""),
                    e["p95_ms"].as_f64().unwrap_or(0.0)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        Verdict::pass(summary, evidence)
    }
}
