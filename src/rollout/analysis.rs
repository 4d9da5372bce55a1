//! Analysis during a bake: synthetic probes against the new colour, judged
//! by the arena's metrics (error rate, latency percentiles, consecutive
//! health failures). Too few samples is inconclusive, never a pass.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use serde_json::{Value, json};

use crate::model::{Analysis, MetricLimit, OnFail};

/// What a bake concluded.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum BakeVerdict {
    Healthy,
    /// A metric broke its limit; `action` says what to do.
    Breached {
        metric: String,
        action: OnFail,
        measured: String,
        limit: String,
    },
    Inconclusive {
        reason: String,
    },
}

#[derive(Clone, Debug, Serialize)]
pub struct BakeReport {
    pub verdict: BakeVerdict,
    pub samples: usize,
    pub errors: usize,
    pub p95_ms: Option<f64>,
    pub metrics: Vec<Value>,
}

/// Probe `base` for `duration`, judging `analysis` every interval and at the end.
pub async fn bake(
    http: &reqwest::Client,
    base: &str,
    analysis: Option<&Analysis>,
    duration: Duration,
    interval_cap: Duration,
) -> BakeReport {
    let probe = format!("{}/api/flags", base.trim_end_matches('/'));
    let health = format!("{}/health", base.trim_end_matches('/'));
    let start = Instant::now();
    let interval = analysis
        .map_or(duration, |a| a.interval.as_std())
        .min(interval_cap)
        .max(Duration::from_millis(200));
    let mut next_check = start + interval;
    let mut samples: Vec<(bool, f64)> = Vec::new();
    let mut consecutive_health_failures = 0u32;
    let mut worst_health_run = 0u32;
    let mut last_health = Instant::now() - Duration::from_secs(10);
    loop {
        let t = Instant::now();
        let ok = match http
            .get(&probe)
            .timeout(Duration::from_secs(5))
            .send()
            .await
        {
            Ok(r) => !r.status().is_server_error(),
            Err(_) => false,
        };
        samples.push((ok, t.elapsed().as_secs_f64() * 1000.0));
        if last_health.elapsed() >= Duration::from_millis(250) {
            last_health = Instant::now();
            let up = http
                .get(&health)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            consecutive_health_failures = if up {
                0
            } else {
                consecutive_health_failures + 1
            };
            worst_health_run = worst_health_run.max(consecutive_health_failures);
        }
        let done = start.elapsed() >= duration;
        if Instant::now() >= next_check || done {
            next_check += interval;
            let report = judge(analysis, &samples, worst_health_run, done);
            if done || matches!(report.verdict, BakeVerdict::Breached { .. }) {
                return report;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn judge(
    analysis: Option<&Analysis>,
    samples: &[(bool, f64)],
    health_run: u32,
    final_check: bool,
) -> BakeReport {
    let errors = samples.iter().filter(|(ok, _)| !ok).count();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("bounds");
    for (_, ms) in samples {
        let _ = hist.record((ms * 1000.0).max(1.0) as u64);
    }
    let q = |x: f64| (!hist.is_empty()).then(|| hist.value_at_quantile(x) as f64 / 1000.0);
    let n = samples.len();
    let error_rate = if n == 0 {
        0.0
    } else {
        errors as f64 / n as f64
    };
    let mut metrics = Vec::new();
    let mut verdict = BakeVerdict::Healthy;
    if let Some(a) = analysis {
        for m in &a.metrics {
            let (measured, limit, breached) = match (&m.limit, m.name.as_str()) {
                (MetricLimit::Max { max }, "error_rate") => (
                    format!("{:.1}%", error_rate * 100.0),
                    format!("{:.1}%", max * 100.0),
                    error_rate > *max,
                ),
                (MetricLimit::MaxDuration { max }, name) => {
                    let quantile = match name {
                        "p50_latency" => 0.50,
                        "p99_latency" => 0.99,
                        _ => 0.95,
                    };
                    let v = q(quantile).unwrap_or(0.0);
                    (
                        format!("{v:.1}ms"),
                        max.to_string(),
                        v > max.as_millis() as f64,
                    )
                }
                (MetricLimit::ConsecutiveFailures { count }, _) => (
                    format!("{health_run} consecutive"),
                    format!("{count}"),
                    health_run >= *count,
                ),
                _ => ("not measured by probes".into(), String::new(), false),
            };
            metrics.push(json!({ "name": m.name, "measured": measured, "limit": limit, "breached": breached, "on_fail": m.on_fail, "dry_run": m.dry_run }));
            if breached
                && !m.dry_run
                && matches!(verdict, BakeVerdict::Healthy)
                && (n >= a.min_samples as usize || m.name == "health")
            {
                verdict = BakeVerdict::Breached {
                    metric: m.name.clone(),
                    action: m.on_fail,
                    measured,
                    limit,
                };
            }
        }
        if final_check && matches!(verdict, BakeVerdict::Healthy) && n < a.min_samples as usize {
            verdict = BakeVerdict::Inconclusive {
                reason: format!("{n} samples, need {}", a.min_samples),
            };
        }
    }
    BakeReport {
        verdict,
        samples: n,
        errors,
        p95_ms: q(0.95),
        metrics,
    }
}
