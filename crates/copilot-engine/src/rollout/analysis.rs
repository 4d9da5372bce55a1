//! Analysis during a bake. Copilot probes the new colour itself (error rate,
//! latency percentiles, consecutive failed health checks), scrapes the
//! service's `/metrics`, or asks Prometheus; every `interval` each metric is
//! measured over its window and judged:
//!
//! - a measurement above the limit is a failure; more failures than the
//!   metric's `failure_limit` make its `on_fail` act;
//! - a source that cannot be read (unreachable, malformed, ambiguous) is an
//!   error; more errors in a row than `consecutive_error_limit` stop the bake
//!   as inconclusive, because a broken source must never pass;
//! - too few samples, or no data, is inconclusive: it never passes, and a
//!   bake whose last measurement of a metric was not conclusive pauses;
//! - dry-run metrics are measured and recorded but never act.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::gates::resolve::{Resolved, resolve_reference};
use crate::prometheus::instant_query;
use copilot_core::model::{Arena, Metric, MetricLimit, MetricSource, OnFail};
use copilot_core::promql::{Expr, Sample, parse_exposition, promql_duration};
use copilot_core::provider::Slot;

use super::Progress;

/// What a bake concluded.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum BakeVerdict {
    Healthy,
    /// A metric broke its limit more often than it may; `action` says what to do.
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

/// How one measurement of a metric came out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Measure {
    Pass,
    Fail,
    /// Too few samples or no data: not a pass.
    Inconclusive,
    /// The source could not be read.
    Error,
}

#[derive(Clone, Debug, Serialize)]
pub struct Measurement {
    /// Milliseconds into the bake.
    pub at_ms: u64,
    pub outcome: Measure,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One metric's record over a bake.
#[derive(Clone, Debug, Serialize)]
pub struct MetricReport {
    pub name: String,
    pub source: MetricSource,
    pub limit: String,
    pub on_fail: OnFail,
    pub dry_run: bool,
    /// The last value measured.
    pub measured: String,
    /// More failures than the failure limit.
    pub breached: bool,
    pub failures: u32,
    pub failure_limit: u32,
    pub errors: u32,
    pub consecutive_error_limit: u32,
    pub measurements: Vec<Measurement>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BakeReport {
    pub verdict: BakeVerdict,
    /// Probe requests sent to the new colour, and how many failed.
    pub samples: usize,
    pub errors: usize,
    pub p95_ms: Option<f64>,
    pub metrics: Vec<MetricReport>,
}

/// What a source gave for one measurement.
#[derive(Clone, Debug, PartialEq)]
pub enum Reading {
    /// `observations`: the samples the value rests on, when known.
    Value {
        value: f64,
        observations: Option<f64>,
    },
    NoData(String),
    Error(String),
}

/// A metric's counters as measurements come in.
#[derive(Clone, Debug)]
pub struct MetricState {
    failures: u32,
    errors: u32,
    errors_in_row: u32,
    last_error: Option<String>,
    last_failed_value: Option<String>,
    measured: String,
    measurements: Vec<Measurement>,
}

/// A metric's limit as people read it (`5.0%`, `3s`, `3 in a row`).
pub fn limit_text(m: &Metric) -> String {
    match &m.limit {
        MetricLimit::Max { max } if m.name == "error_rate" => format!("{:.1}%", max * 100.0),
        MetricLimit::Max { max } => format!("{max}"),
        MetricLimit::MaxDuration { max } => max.to_string(),
        MetricLimit::ConsecutiveFailures { count } => format!("{count} in a row"),
    }
}

fn value_text(m: &Metric, v: f64) -> String {
    match &m.limit {
        MetricLimit::Max { .. } if m.name == "error_rate" => format!("{:.1}%", v * 100.0),
        MetricLimit::Max { .. } => format!("{v:.4}"),
        MetricLimit::MaxDuration { .. } => format!("{v:.1}ms"),
        MetricLimit::ConsecutiveFailures { .. } => format!("{v} in a row"),
    }
}

impl MetricState {
    pub fn new() -> Self {
        Self {
            failures: 0,
            errors: 0,
            errors_in_row: 0,
            last_error: None,
            last_failed_value: None,
            measured: "not measured".into(),
            measurements: Vec::new(),
        }
    }

    /// Judge one reading (latencies in milliseconds) against the metric's limit.
    pub fn record(&mut self, m: &Metric, min_samples: u32, at: Duration, reading: Reading) {
        let (outcome, value, note) = match reading {
            Reading::Value {
                value,
                observations,
            } => {
                let shown = value_text(m, value);
                let breached = match &m.limit {
                    MetricLimit::Max { max } => value > *max,
                    MetricLimit::MaxDuration { max } => value > max.as_millis() as f64,
                    MetricLimit::ConsecutiveFailures { count } => value >= f64::from(*count),
                };
                match observations {
                    Some(n) if n < f64::from(min_samples) => (
                        Measure::Inconclusive,
                        Some(shown),
                        Some(format!("{n} samples, need {min_samples}")),
                    ),
                    _ if breached => (Measure::Fail, Some(shown), None),
                    _ => (Measure::Pass, Some(shown), None),
                }
            }
            Reading::NoData(why) => (Measure::Inconclusive, None, Some(why)),
            Reading::Error(why) => (Measure::Error, None, Some(why)),
        };
        match outcome {
            Measure::Fail => {
                self.failures += 1;
                self.errors_in_row = 0;
                self.last_failed_value.clone_from(&value);
            }
            Measure::Error => {
                self.errors += 1;
                self.errors_in_row += 1;
                self.last_error.clone_from(&note);
            }
            Measure::Pass | Measure::Inconclusive => self.errors_in_row = 0,
        }
        if let Some(v) = &value {
            self.measured.clone_from(v);
        }
        self.measurements.push(Measurement {
            at_ms: at.as_millis() as u64,
            outcome,
            value,
            note,
        });
    }

    fn last(&self) -> Option<&Measurement> {
        self.measurements.last()
    }

    pub fn report(&self, m: &Metric) -> MetricReport {
        MetricReport {
            name: m.name.clone(),
            source: m.source,
            limit: limit_text(m),
            on_fail: m.on_fail,
            dry_run: m.dry_run,
            measured: self.measured.clone(),
            breached: self.failures > m.failure_limit,
            failures: self.failures,
            failure_limit: m.failure_limit,
            errors: self.errors,
            consecutive_error_limit: m.consecutive_error_limit,
            measurements: self.measurements.clone(),
        }
    }
}

impl Default for MetricState {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether the bake must stop now: a metric failed more often than its
/// limit allows, or its source broke. Dry-run metrics never stop it.
pub fn decide(metrics: &[Metric], states: &[MetricState]) -> Option<BakeVerdict> {
    for (m, s) in metrics.iter().zip(states).filter(|(m, _)| !m.dry_run) {
        if s.failures > m.failure_limit {
            return Some(BakeVerdict::Breached {
                metric: m.name.clone(),
                action: m.on_fail,
                measured: s.last_failed_value.clone().unwrap_or_default(),
                limit: limit_text(m),
            });
        }
        if s.errors_in_row > m.consecutive_error_limit {
            return Some(BakeVerdict::Inconclusive {
                reason: format!(
                    "`{}` could not be measured {} times in a row ({} source): {}",
                    m.name,
                    s.errors_in_row,
                    m.source,
                    s.last_error.as_deref().unwrap_or("no reason given")
                ),
            });
        }
    }
    None
}

/// The verdict at the end of a bake nothing stopped: every acting metric's
/// last measurement must be conclusive.
pub fn conclude(metrics: &[Metric], states: &[MetricState]) -> BakeVerdict {
    for (m, s) in metrics.iter().zip(states).filter(|(m, _)| !m.dry_run) {
        let reason = match s.last() {
            None => Some("never measured".to_string()),
            Some(x) if x.outcome == Measure::Inconclusive => Some(format!(
                "inconclusive: {}",
                x.note.as_deref().unwrap_or("no data")
            )),
            Some(x) if x.outcome == Measure::Error => Some(format!(
                "its source failed: {}",
                x.note.as_deref().unwrap_or("no reason given")
            )),
            Some(_) => None,
        };
        if let Some(reason) = reason {
            return BakeVerdict::Inconclusive {
                reason: format!("`{}` {reason}", m.name),
            };
        }
    }
    BakeVerdict::Healthy
}

/// The instance being baked.
pub struct Target<'a> {
    pub url: &'a str,
    pub slot: Slot,
    pub release: &'a str,
    /// Percent of traffic it carries.
    pub weight: u8,
    /// The cohort it serves during a cohort step (its weight is then 0).
    pub cohort: Option<&'a str>,
}

/// Routes the built-in metrics leave out of the service's own figures.
const NOT_TRAFFIC: &str = r#"route!~"/health.*|/metrics""#;

/// The expression a metric reads from `/metrics`.
fn scrape_expr(m: &Metric) -> Option<Expr> {
    let text = match (&m.query, m.name.as_str()) {
        (Some(q), _) => q.clone(),
        (None, "error_rate") => format!(
            r#"http_requests_total{{status=~"5..",{NOT_TRAFFIC}}} / http_requests_total{{{NOT_TRAFFIC}}}"#
        ),
        (None, name) => {
            let q = match name {
                "p50_latency" => "0.5",
                "p99_latency" => "0.99",
                _ => "0.95",
            };
            format!("histogram_quantile({q}, http_request_duration_seconds{{{NOT_TRAFFIC}}})")
        }
    };
    text.parse().ok()
}

/// A value read from Prometheus data is in seconds where the limit is a latency.
fn from_seconds(m: &Metric, v: f64) -> f64 {
    if matches!(m.limit, MetricLimit::MaxDuration { .. }) {
        v * 1000.0
    } else {
        v
    }
}

struct Probe {
    at: Instant,
    ok: bool,
    ms: f64,
}

fn probe_reading(m: &Metric, probes: &[Probe], since: Instant, health_run: u32) -> Reading {
    let window: Vec<&Probe> = probes.iter().filter(|p| p.at >= since).collect();
    let n = window.len() as f64;
    match (&m.limit, m.name.as_str()) {
        (MetricLimit::ConsecutiveFailures { .. }, _) => Reading::Value {
            value: f64::from(health_run),
            observations: None,
        },
        (_, _) if window.is_empty() => Reading::NoData("no probe answered in the window".into()),
        (MetricLimit::Max { .. }, "error_rate") => Reading::Value {
            value: window.iter().filter(|p| !p.ok).count() as f64 / n,
            observations: Some(n),
        },
        (MetricLimit::MaxDuration { .. }, name) => {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("bounds");
            for p in &window {
                let _ = hist.record((p.ms * 1000.0).max(1.0) as u64);
            }
            let q = match name {
                "p50_latency" => 0.50,
                "p99_latency" => 0.99,
                _ => 0.95,
            };
            Reading::Value {
                value: hist.value_at_quantile(q) as f64 / 1000.0,
                observations: Some(n),
            }
        }
        _ => Reading::Error(format!("probes cannot measure `{}`", m.name)),
    }
}

async fn scrape(http: &reqwest::Client, base: &str) -> Result<Vec<Sample>, String> {
    let url = format!("{base}/metrics");
    let resp = http
        .get(&url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| format!("cannot scrape {url}: {}", crate::gates::http::describe(e)))?;
    if !resp.status().is_success() {
        return Err(format!("{url} answered {}", resp.status()));
    }
    let text = resp
        .text()
        .await
        .map_err(|e| format!("cannot read {url}: {}", crate::gates::http::describe(e)))?;
    parse_exposition(&text).map_err(|e| format!("{url} is not a Prometheus exposition: {e}"))
}

/// Bake the target for `duration`, measuring every interval and at the end.
pub struct Bake<'a> {
    pub http: &'a reqwest::Client,
    /// The platform, for metrics from its own monitoring (`source: cloudwatch`).
    pub provider: &'a crate::platform::Platform,
    pub arena: &'a Arena,
    pub target: Target<'a>,
    pub duration: Duration,
    /// Caps the analysis interval (demos and tests bake for seconds).
    pub interval_cap: Duration,
    pub progress: &'a dyn Progress,
    /// Where each measurement is announced, as `(deployment, step)`'s.
    pub events: &'a super::events::Events,
    pub deployment: &'a str,
    pub step: &'a str,
}

impl Bake<'_> {
    pub async fn run(&self) -> BakeReport {
        let analysis = self.arena.strategy.analysis.as_ref();
        let metrics: &[Metric] = analysis.map_or(&[], |a| &a.metrics);
        let min_samples = analysis.map_or(0, |a| a.min_samples);
        let interval = analysis
            .map_or(self.duration, |a| a.interval.as_std())
            .min(self.interval_cap)
            .max(Duration::from_millis(200));
        let base = self.target.url.trim_end_matches('/');
        let probe_url = format!("{base}/api/flags");
        // Per metric: the URL its health checks go to (health metrics only).
        let health_urls: Vec<Option<String>> = metrics
            .iter()
            .map(|m| match &m.limit {
                MetricLimit::ConsecutiveFailures { .. } => {
                    let path = m.path.as_deref().unwrap_or("/health");
                    Some(format!("{base}/{}", path.trim_start_matches('/')))
                }
                _ => None,
            })
            .collect();
        let exprs: Vec<Option<Expr>> = metrics
            .iter()
            .map(|m| {
                (m.source == MetricSource::Metrics)
                    .then(|| scrape_expr(m))
                    .flatten()
            })
            .collect();
        let prometheus = analysis
            .and_then(|a| a.prometheus.as_deref())
            .map(|p| resolve_reference(self.arena, p));
        let needs_scrape = exprs.iter().any(Option::is_some);

        let start = Instant::now();
        let mut scrapes: Vec<(Instant, Vec<Sample>)> = Vec::new();
        if needs_scrape && let Ok(s) = scrape(self.http, base).await {
            scrapes.push((Instant::now(), s));
        }
        let mut states: Vec<MetricState> = metrics.iter().map(|_| MetricState::new()).collect();
        let mut probes: Vec<Probe> = Vec::new();
        let mut health_runs = vec![(0u32, 0u32); metrics.len()];
        let mut last_health = start - Duration::from_secs(10);
        let mut next_check = start + interval;
        self.progress.begin(
            &match self
                .step
                .strip_prefix("bake-")
                .filter(|l| l.parse::<u8>().is_err())
            {
                Some(cohort) => format!(
                    "baking {} in {} for cohort {cohort}",
                    self.target.release, self.target.slot
                ),
                None => format!(
                    "baking {} in {} at {}%",
                    self.target.release, self.target.slot, self.target.weight
                ),
            },
            Some(self.duration),
        );
        let verdict = loop {
            let t = Instant::now();
            let ok = match self
                .http
                .get(&probe_url)
                .timeout(Duration::from_secs(5))
                .send()
                .await
            {
                // The service's own endpoint: anything but a 2xx (a 404 from
                // an address with nothing behind it included) is a failure.
                Ok(r) => r.status().is_success(),
                Err(_) => false,
            };
            probes.push(Probe {
                at: t,
                ok,
                ms: t.elapsed().as_secs_f64() * 1000.0,
            });
            if last_health.elapsed() >= Duration::from_millis(250) {
                last_health = Instant::now();
                for (url, run) in health_urls.iter().zip(health_runs.iter_mut()) {
                    let Some(url) = url else { continue };
                    let up = self
                        .http
                        .get(url)
                        .timeout(Duration::from_secs(2))
                        .send()
                        .await
                        .is_ok_and(|r| r.status().is_success());
                    run.0 = if up { 0 } else { run.0 + 1 };
                    run.1 = run.1.max(run.0);
                }
            }
            let now = Instant::now();
            self.progress.tick(now.duration_since(start));
            let done = now.duration_since(start) >= self.duration;
            if now < next_check && !done {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            next_check += interval;
            let elapsed = now.duration_since(start);
            let scraped = if needs_scrape {
                Some(scrape(self.http, base).await)
            } else {
                None
            };
            for (i, m) in metrics.iter().enumerate() {
                let window = m.window.map_or(elapsed, |w| w.as_std());
                let since = now.checked_sub(window).unwrap_or(start);
                let reading = match m.source {
                    MetricSource::Probe => probe_reading(m, &probes, since, health_runs[i].1),
                    MetricSource::Metrics => Self::metrics_reading(
                        m,
                        exprs[i].as_ref(),
                        &scrapes,
                        scraped.as_ref(),
                        since,
                    ),
                    MetricSource::Prometheus => {
                        self.prometheus_reading(m, prometheus.as_ref(), window)
                            .await
                    }
                    MetricSource::Cloudwatch => {
                        use copilot_core::provider::Provider as _;
                        match self
                            .provider
                            .platform_metric(self.target.slot, m, window)
                            .await
                        {
                            Ok(Some((value, observations))) => Reading::Value {
                                value: from_seconds(m, value),
                                observations: Some(observations),
                            },
                            Ok(None) => Reading::NoData(format!(
                                "CloudWatch has no requests to {} in the window",
                                self.target.slot
                            )),
                            Err(e) => Reading::Error(e),
                        }
                    }
                };
                states[i].record(m, min_samples, elapsed, reading);
                health_runs[i].1 = health_runs[i].0;
                if let Some(measurement) = states[i].last() {
                    self.events.emit(super::events::Event::AnalysisSample {
                        deployment: self.deployment.to_string(),
                        step: self.step.to_string(),
                        metric: m.name.clone(),
                        measurement: measurement.clone(),
                        at: copilot_core::clock::now(),
                    });
                }
            }
            if let Some(Ok(s)) = scraped {
                scrapes.push((now, s));
            }
            let (state, status) = summary(metrics, &states);
            self.progress.measured(elapsed, &state, &status);
            if let Some(v) = decide(metrics, &states) {
                break v;
            }
            if done {
                break conclude(metrics, &states);
            }
        };
        self.progress.finish();

        let mut hist = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("bounds");
        for p in &probes {
            let _ = hist.record((p.ms * 1000.0).max(1.0) as u64);
        }
        BakeReport {
            verdict,
            samples: probes.len(),
            errors: probes.iter().filter(|p| !p.ok).count(),
            p95_ms: (!hist.is_empty()).then(|| hist.value_at_quantile(0.95) as f64 / 1000.0),
            metrics: metrics
                .iter()
                .zip(&states)
                .map(|(m, s)| s.report(m))
                .collect(),
        }
    }

    /// The increase between the last scrape at or before the window's start
    /// (or the first one, early in a bake) and the one just taken.
    fn metrics_reading(
        m: &Metric,
        expr: Option<&Expr>,
        history: &[(Instant, Vec<Sample>)],
        scraped: Option<&Result<Vec<Sample>, String>>,
        since: Instant,
    ) -> Reading {
        let Some(expr) = expr else {
            return Reading::Error(format!("`{}` has no expression to read", m.name));
        };
        let current = match scraped {
            Some(Ok(s)) => s,
            Some(Err(e)) => return Reading::Error(e.clone()),
            None => return Reading::Error("nothing was scraped".into()),
        };
        let Some((_, baseline)) = history
            .iter()
            .rev()
            .find(|(t, _)| *t <= since)
            .or_else(|| history.first())
        else {
            return Reading::NoData("no earlier scrape to compare with yet".into());
        };
        let e = expr.eval(baseline, current);
        match e.value {
            Some(v) if v.is_finite() => Reading::Value {
                value: from_seconds(m, v),
                observations: e.observations,
            },
            _ => Reading::NoData(format!("`{expr}` has no data in the window")),
        }
    }

    async fn prometheus_reading(
        &self,
        m: &Metric,
        server: Option<&Resolved>,
        window: Duration,
    ) -> Reading {
        let base = match server {
            Some(Resolved::Value(v)) => v,
            Some(Resolved::Unresolvable(why)) => {
                return Reading::Error(format!("Prometheus: {why}"));
            }
            None => return Reading::Error("the analysis names no Prometheus server".into()),
        };
        let query = m
            .query
            .as_deref()
            .unwrap_or_default()
            .replace("{arena}", &self.arena.name)
            .replace("{slot}", &self.target.slot.to_string())
            .replace("{release}", self.target.release)
            .replace("{window}", &promql_duration(window));
        match instant_query(self.http, base, &query, Duration::from_secs(10)).await {
            Err(e) => Reading::Error(e),
            Ok(values) => match values.as_slice() {
                [] => Reading::NoData(format!("`{query}` matched no series")),
                [v] if v.is_nan() => Reading::NoData(format!("`{query}` is NaN (no traffic?)")),
                [v] => Reading::Value {
                    value: from_seconds(m, *v),
                    observations: None,
                },
                many => Reading::Error(format!(
                    "`{query}` gave {} series; aggregate it to one (e.g. with sum())",
                    many.len()
                )),
            },
        }
    }
}

/// One line of where each metric stands, for progress displays.
/// Each metric's verdict so far (the bake's state), and the same with
/// what was measured.
fn summary(metrics: &[Metric], states: &[MetricState]) -> (String, String) {
    let (state, status): (Vec<String>, Vec<String>) = metrics
        .iter()
        .zip(states)
        .map(|(m, s)| {
            let mark = match s.last().map(|x| x.outcome) {
                Some(Measure::Pass) => "ok",
                Some(Measure::Fail) => "FAIL",
                Some(Measure::Inconclusive) => "?",
                Some(Measure::Error) => "ERR",
                None => "-",
            };
            let dry = if m.dry_run { " (dry run)" } else { "" };
            (
                format!("{} {mark}{dry}", m.name),
                format!("{} {} {mark}{dry}", m.name, s.measured),
            )
        })
        .unzip();
    (state.join(" · "), status.join(" · "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use copilot_core::config::duration::Duration as Dur;

    fn metric(limit: MetricLimit, failure_limit: u32, consecutive_error_limit: u32) -> Metric {
        Metric {
            name: "error_rate".into(),
            source: MetricSource::Prometheus,
            query: Some("q".into()),
            path: None,
            limit,
            window: None,
            on_fail: OnFail::Rollback,
            dry_run: false,
            failure_limit,
            consecutive_error_limit,
            severity: 2,
        }
    }

    fn value(v: f64) -> Reading {
        Reading::Value {
            value: v,
            observations: Some(100.0),
        }
    }

    fn feed(m: &Metric, readings: Vec<Reading>) -> (Vec<Option<BakeVerdict>>, MetricState) {
        let mut s = MetricState::new();
        let mut out = Vec::new();
        for (i, r) in readings.into_iter().enumerate() {
            s.record(m, 50, Duration::from_secs(i as u64), r);
            out.push(decide(std::slice::from_ref(m), std::slice::from_ref(&s)));
        }
        (out, s)
    }

    #[test]
    fn failures_act_only_past_the_failure_limit() {
        let m = metric(MetricLimit::Max { max: 0.05 }, 2, 4);
        let (verdicts, s) = feed(&m, vec![value(0.5), value(0.01), value(0.5), value(0.5)]);
        assert!(verdicts[..3].iter().all(Option::is_none));
        match &verdicts[3] {
            Some(BakeVerdict::Breached {
                measured, action, ..
            }) => {
                assert_eq!(measured, "50.0%");
                assert_eq!(*action, OnFail::Rollback);
            }
            other => panic!("{other:?}"),
        }
        assert!(s.report(&m).breached);
    }

    #[test]
    fn a_broken_source_stops_after_the_consecutive_error_limit() {
        let m = metric(MetricLimit::Max { max: 0.05 }, 0, 2);
        let err = || Reading::Error("connection refused".into());
        // An error run broken by a good measurement starts again.
        let (verdicts, _) = feed(&m, vec![err(), err(), value(0.01), err(), err(), err()]);
        assert!(verdicts[..5].iter().all(Option::is_none), "{verdicts:?}");
        match &verdicts[5] {
            Some(BakeVerdict::Inconclusive { reason }) => {
                assert!(reason.contains("3 times in a row"), "{reason}");
                assert!(reason.contains("connection refused"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn too_few_samples_never_fail_nor_pass() {
        let m = metric(MetricLimit::Max { max: 0.05 }, 0, 4);
        let few = Reading::Value {
            value: 1.0,
            observations: Some(3.0),
        };
        let (verdicts, s) = feed(&m, vec![few]);
        assert!(verdicts[0].is_none());
        assert!(matches!(
            conclude(std::slice::from_ref(&m), std::slice::from_ref(&s)),
            BakeVerdict::Inconclusive { reason } if reason.contains("3 samples, need 50")
        ));
    }

    #[test]
    fn dry_run_metrics_are_recorded_but_never_act() {
        let mut m = metric(MetricLimit::Max { max: 0.05 }, 0, 0);
        m.dry_run = true;
        let (verdicts, s) = feed(&m, vec![value(0.9), Reading::Error("down".into())]);
        assert!(verdicts.iter().all(Option::is_none));
        assert!(matches!(
            conclude(std::slice::from_ref(&m), std::slice::from_ref(&s)),
            BakeVerdict::Healthy
        ));
        let r = s.report(&m);
        assert_eq!((r.failures, r.errors), (1, 1));
    }

    #[test]
    fn latency_limits_compare_milliseconds() {
        let m = metric(
            MetricLimit::MaxDuration {
                max: "3s".parse::<Dur>().unwrap(),
            },
            0,
            4,
        );
        let (verdicts, _) = feed(&m, vec![value(2_900.0), value(3_100.0)]);
        assert!(verdicts[0].is_none());
        assert!(matches!(verdicts[1], Some(BakeVerdict::Breached { .. })));
        assert_eq!(from_seconds(&m, 0.25), 250.0);
    }

    #[test]
    fn built_in_metrics_read_from_the_service_exposition() {
        let mut m = metric(MetricLimit::Max { max: 0.05 }, 0, 4);
        m.source = MetricSource::Metrics;
        m.query = None;
        let e = scrape_expr(&m).unwrap().to_string();
        assert!(e.contains("status=~\"5..\""), "{e}");
        m.name = "p99_latency".into();
        assert!(
            scrape_expr(&m)
                .unwrap()
                .to_string()
                .starts_with("histogram_quantile(0.99")
        );
    }
}
