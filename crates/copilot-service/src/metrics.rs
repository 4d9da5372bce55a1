//! Prometheus metrics: requests by route and status, latency histograms,
//! webhook outcomes, worker outcomes; queue depth is read at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use super::queue::QueueCounts;

const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, String, u16), u64>,
    latency: BTreeMap<String, Histogram>,
    webhooks: BTreeMap<&'static str, u64>,
    jobs: BTreeMap<&'static str, u64>,
}

#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    pub fn request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        let mut m = self.inner.lock().expect("metrics lock");
        *m.requests
            .entry((route.to_string(), method.to_string(), status))
            .or_default() += 1;
        let h = m
            .latency
            .entry(route.to_string())
            .or_insert_with(|| Histogram {
                counts: vec![0; BUCKETS.len()],
                ..Histogram::default()
            });
        let secs = elapsed.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    pub fn webhook(&self, outcome: &'static str) {
        *self
            .inner
            .lock()
            .expect("metrics lock")
            .webhooks
            .entry(outcome)
            .or_default() += 1;
    }

    pub fn job(&self, outcome: &'static str) {
        *self
            .inner
            .lock()
            .expect("metrics lock")
            .jobs
            .entry(outcome)
            .or_default() += 1;
    }

    /// The Prometheus text exposition.
    pub fn render(
        &self,
        queue: Option<(&str, &QueueCounts)>,
        release: &str,
        arena: &str,
    ) -> String {
        let m = self.inner.lock().expect("metrics lock");
        let mut out = String::new();
        let _ = writeln!(out, "# HELP copilot_service_info The running release.");
        let _ = writeln!(out, "# TYPE copilot_service_info gauge");
        let _ = writeln!(
            out,
            "copilot_service_info{{release=\"{}\",arena=\"{}\"}} 1",
            esc(release),
            esc(arena)
        );
        let _ = writeln!(
            out,
            "# HELP http_requests_total HTTP requests by route, method and status."
        );
        let _ = writeln!(out, "# TYPE http_requests_total counter");
        for ((route, method, status), n) in &m.requests {
            let _ = writeln!(
                out,
                "http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                esc(route)
            );
        }
        let _ = writeln!(
            out,
            "# HELP http_request_duration_seconds HTTP request latency by route."
        );
        let _ = writeln!(out, "# TYPE http_request_duration_seconds histogram");
        for (route, h) in &m.latency {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "http_request_duration_seconds_bucket{{route=\"{}\",le=\"{b}\"}} {}",
                    esc(route),
                    h.counts[i]
                );
            }
            let _ = writeln!(
                out,
                "http_request_duration_seconds_bucket{{route=\"{}\",le=\"+Inf\"}} {}",
                esc(route),
                h.count
            );
            let _ = writeln!(
                out,
                "http_request_duration_seconds_sum{{route=\"{}\"}} {}",
                esc(route),
                h.sum
            );
            let _ = writeln!(
                out,
                "http_request_duration_seconds_count{{route=\"{}\"}} {}",
                esc(route),
                h.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP webhook_deliveries_total Shopify webhook deliveries by outcome."
        );
        let _ = writeln!(out, "# TYPE webhook_deliveries_total counter");
        for (outcome, n) in &m.webhooks {
            let _ = writeln!(out, "webhook_deliveries_total{{outcome=\"{outcome}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP queue_jobs_processed_total Jobs finished by the service's worker."
        );
        let _ = writeln!(out, "# TYPE queue_jobs_processed_total counter");
        for (outcome, n) in &m.jobs {
            let _ = writeln!(
                out,
                "queue_jobs_processed_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        if let Some((driver, c)) = queue {
            let _ = writeln!(out, "# HELP queue_jobs Jobs in the webhook queue by state.");
            let _ = writeln!(out, "# TYPE queue_jobs gauge");
            for (state, n) in [
                ("waiting", c.waiting),
                ("active", c.active),
                ("delayed", c.delayed),
                ("paused", c.paused),
                ("prioritized", c.prioritized),
                ("completed", c.completed),
                ("failed", c.failed),
            ] {
                let _ = writeln!(
                    out,
                    "queue_jobs{{driver=\"{driver}\",state=\"{state}\"}} {n}"
                );
            }
        }
        out
    }
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
