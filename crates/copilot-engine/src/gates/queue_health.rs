//! `queue-health`: the job queue stayed healthy over a window.
//!
//! BullMQ queues are read straight from Redis: counts from the `wait`,
//! `active` and `paused` lists and the `delayed`, `prioritized`, `failed` and
//! `completed` sorted sets; the oldest waiting job from the tail of `wait`
//! and its hash's `timestamp`; failures and completions in the window from
//! BullMQ's per-minute metrics when workers record them, else from the
//! sorted-set scores (`finishedOn`); stalled jobs are ids in `active` whose
//! `:lock` key is gone. Depth, age and stalls are only known now, so "held
//! over the window" also uses the samples earlier runs of this gate recorded
//! in the ledger. The memory driver is read through the service's endpoint.

use chrono::Duration;
use serde_json::{Value, json};

use super::http::join;
use super::{GateContext, Resolved, Verdict, resolve_reference};
use copilot_core::config::params::{QueueDriver, QueueHealthParams, Subject};
use copilot_core::model::{Gate, Outcome};
use copilot_db::redact_url;

struct QueueSample {
    queue: String,
    waiting: u64,
    active: u64,
    paused: u64,
    delayed: u64,
    prioritized: u64,
    failed_total: u64,
    completed_total: u64,
    failed_in_window: u64,
    completed_in_window: u64,
    window_source: &'static str,
    oldest_wait_ms: Option<i64>,
    /// Active jobs whose lock is gone.
    stalled: u64,
    /// The first of them, at most [`STALLED_IDS_REPORTED`].
    stalled_ids: Vec<String>,
}

/// How many stalled job ids a summary and its evidence name; the count is
/// always whole.
const STALLED_IDS_REPORTED: usize = 20;

/// Active jobs without a lock, counted in Redis in one round trip however
/// many jobs are active: the count and the first ARGV[2] ids.
const STALLED_SCRIPT: &str = r#"
local ids = redis.call('LRANGE', KEYS[1], 0, -1)
local cap = tonumber(ARGV[2])
local n, sample = 0, {}
for _, id in ipairs(ids) do
  if redis.call('EXISTS', ARGV[1] .. id .. ':lock') == 0 then
    n = n + 1
    if #sample < cap then sample[#sample + 1] = id end
  end
end
return {n, sample}
"#;

async fn sample_bullmq(
    conn: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
    queue: &str,
    now_ms: i64,
    window_ms: i64,
) -> redis::RedisResult<QueueSample> {
    let base = format!("{prefix}:{queue}:");
    let k = |s: &str| format!("{base}{s}");
    let since = now_ms - window_ms;
    #[allow(clippy::type_complexity)]
    let (
        waiting,
        active,
        paused,
        delayed,
        prioritized,
        failed_total,
        completed_total,
        failed_win,
        completed_win,
        wait_tail,
        paused_tail,
    ): (
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        u64,
        Option<String>,
        Option<String>,
    ) = redis::pipe()
        .llen(k("wait"))
        .llen(k("active"))
        .llen(k("paused"))
        .zcard(k("delayed"))
        .zcard(k("prioritized"))
        .zcard(k("failed"))
        .zcard(k("completed"))
        .zcount(k("failed"), since, "+inf")
        .zcount(k("completed"), since, "+inf")
        .lindex(k("wait"), -1)
        .lindex(k("paused"), -1)
        .query_async(conn)
        .await?;

    // BullMQ's metrics: per-minute counts, newest first, when workers collect them.
    let minutes = (window_ms / 60_000).max(1) as isize;
    let (failed_data, completed_data): (Vec<String>, Vec<String>) = redis::pipe()
        .lrange(k("metrics:failed:data"), 0, minutes - 1)
        .lrange(k("metrics:completed:data"), 0, minutes - 1)
        .query_async(conn)
        .await?;
    let sum = |v: &[String]| v.iter().filter_map(|x| x.parse::<u64>().ok()).sum::<u64>();
    let (failed_in_window, completed_in_window, window_source) =
        if failed_data.is_empty() && completed_data.is_empty() {
            (failed_win, completed_win, "sorted-set scores (finishedOn)")
        } else {
            (
                sum(&failed_data),
                sum(&completed_data),
                "BullMQ metrics (per-minute counts)",
            )
        };

    let mut oldest = None;
    for id in [wait_tail, paused_tail].into_iter().flatten() {
        let ts: Option<i64> = redis::cmd("HGET")
            .arg(k(&id))
            .arg("timestamp")
            .query_async(conn)
            .await?;
        if let Some(ts) = ts {
            let age = now_ms - ts;
            oldest = Some(oldest.map_or(age, |o: i64| o.max(age)));
        }
    }
    let (stalled, stalled_ids): (u64, Vec<String>) = redis::Script::new(STALLED_SCRIPT)
        .key(k("active"))
        .arg(&base)
        .arg(STALLED_IDS_REPORTED)
        .invoke_async(conn)
        .await?;
    Ok(QueueSample {
        queue: queue.to_string(),
        waiting,
        active,
        paused,
        delayed,
        prioritized,
        failed_total,
        completed_total,
        failed_in_window,
        completed_in_window,
        window_source,
        oldest_wait_ms: oldest,
        stalled,
        stalled_ids,
    })
}

fn judge(s: &QueueSample, p: &QueueHealthParams) -> Vec<String> {
    let mut problems = Vec::new();
    let finished = s.failed_in_window + s.completed_in_window;
    if finished > 0 {
        let rate = s.failed_in_window as f64 / finished as f64;
        if rate > p.max_failure_rate {
            problems.push(format!(
                "{}: failure rate {:.1}% over {} ({} failed, {} completed) > {:.1}%",
                s.queue,
                rate * 100.0,
                p.window,
                s.failed_in_window,
                s.completed_in_window,
                p.max_failure_rate * 100.0
            ));
        }
    }
    let depth = s.waiting + s.paused + s.prioritized;
    if depth > p.max_waiting {
        problems.push(format!(
            "{}: {depth} jobs waiting > {}",
            s.queue, p.max_waiting
        ));
    }
    if let Some(age) = s.oldest_wait_ms
        && age > p.max_oldest_wait.as_millis() as i64
    {
        problems.push(format!(
            "{}: oldest waiting job is {}s old > {}",
            s.queue,
            age / 1000,
            p.max_oldest_wait
        ));
    }
    if s.stalled > p.max_stalled {
        let more = s.stalled.saturating_sub(s.stalled_ids.len() as u64);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        problems.push(format!(
            "{}: {} stalled job(s) (active without a lock): {}{more}",
            s.queue,
            s.stalled,
            s.stalled_ids.join(", ")
        ));
    }
    problems
}

fn sample_json(s: &QueueSample) -> Value {
    json!({
        "queue": s.queue,
        "waiting": s.waiting, "active": s.active, "paused": s.paused, "delayed": s.delayed, "prioritized": s.prioritized,
        "failed_total": s.failed_total, "completed_total": s.completed_total,
        "failed_in_window": s.failed_in_window, "completed_in_window": s.completed_in_window,
        "window_counts_from": s.window_source,
        "oldest_wait_seconds": s.oldest_wait_ms.map(|m| m / 1000),
        "stalled": s.stalled,
        "stalled_ids": s.stalled_ids,
    })
}

pub async fn check(ctx: &GateContext<'_>, gate: &Gate, p: QueueHealthParams) -> Verdict {
    let subject = ctx.subject(p.subject == Subject::Source);
    let thresholds = json!({
        "window": p.window.to_string(), "max_failure_rate": p.max_failure_rate, "max_waiting": p.max_waiting,
        "max_oldest_wait": p.max_oldest_wait.to_string(), "max_stalled": p.max_stalled,
    });
    let now_ms = ctx.now.timestamp_millis();
    let window_ms = p.window.as_millis() as i64;
    let (samples, source) = match p.driver {
        QueueDriver::Bullmq => {
            let url = match resolve_reference(subject, &p.redis) {
                Resolved::Value(v) => v,
                Resolved::Unresolvable(why) => {
                    return Verdict::unreachable(
                        format!("Redis of {}: {why}", subject.name),
                        json!({ "redis": p.redis }),
                    );
                }
            };
            let shown = redact_url(&url);
            let conn = async {
                let client = redis::Client::open(url.as_str())?;
                client.get_multiplexed_async_connection().await
            };
            let mut conn = match tokio::time::timeout(std::time::Duration::from_secs(5), conn).await
            {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    return Verdict::unreachable(
                        format!("cannot reach Redis at {shown}: {e}"),
                        json!({ "redis": shown }),
                    );
                }
                Err(_) => {
                    return Verdict::unreachable(
                        format!("Redis at {shown} did not answer in 5s"),
                        json!({ "redis": shown }),
                    );
                }
            };
            let mut samples = Vec::new();
            for q in &p.queues {
                match sample_bullmq(&mut conn, &p.prefix, q, now_ms, window_ms).await {
                    Ok(s) => samples.push(s),
                    Err(e) => {
                        return Verdict::unreachable(
                            format!("reading {}:{q} from {shown}: {e}", p.prefix),
                            json!({ "redis": shown }),
                        );
                    }
                }
            }
            (
                samples,
                format!("redis {shown}, keys {}:<queue>:*", p.prefix),
            )
        }
        QueueDriver::Memory => {
            let Some(base) = ctx.url_for(p.subject == Subject::Source) else {
                return Verdict::inconclusive(
                    format!("no URL for the service of {}", subject.name),
                    json!({}),
                );
            };
            let url = join(&base, "/api/queue");
            let doc: Value = match ctx
                .http
                .get(&url)
                .timeout(std::time::Duration::from_secs(5))
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => r.json().await.unwrap_or(Value::Null),
                Ok(r) => {
                    return Verdict::unreachable(
                        format!("{url} answered {}", r.status()),
                        json!({}),
                    );
                }
                Err(e) => {
                    return Verdict::unreachable(
                        format!("{url}: {}", super::http::describe(e)),
                        json!({}),
                    );
                }
            };
            let c = &doc["counts"];
            let n = |k: &str| c[k].as_u64().unwrap_or(0);
            let s = QueueSample {
                queue: p
                    .queues
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "webhooks".into()),
                waiting: n("waiting"),
                active: n("active"),
                paused: n("paused"),
                delayed: n("delayed"),
                prioritized: n("prioritized"),
                failed_total: n("failed"),
                completed_total: n("completed"),
                failed_in_window: n("failed"),
                completed_in_window: n("completed"),
                window_source: "service counters since start",
                oldest_wait_ms: None,
                stalled: 0,
                stalled_ids: Vec::new(),
            };
            (vec![s], format!("service endpoint {url}"))
        }
    };
    let problems: Vec<String> = samples.iter().flat_map(|s| judge(s, &p)).collect();

    // Earlier samples of this gate, to tell whether health held over the window.
    let since = p.window.before(ctx.now);
    let history = ctx
        .ledger
        .gate_history(&ctx.arena.name, &gate.name, since)
        .await
        .unwrap_or_default();
    let earlier_failures: Vec<String> = history
        .iter()
        .filter(|h| h.outcome == Outcome::Fail.as_str())
        .map(|h| {
            format!(
                "{} at {}",
                h.summary,
                h.started_at.format("%Y-%m-%d %H:%M UTC")
            )
        })
        .collect();
    let observed_since = history.iter().map(|h| h.started_at).min();
    let covered =
        observed_since.is_some_and(|t| ctx.now - t >= p.window.as_chrono() - Duration::minutes(5));
    let evidence = json!({
        "source": source,
        "subject_arena": subject.name,
        "thresholds": thresholds,
        "queues": samples.iter().map(sample_json).collect::<Vec<_>>(),
        "history": {
            "source": "samples recorded by earlier runs of this gate in the ledger",
            "samples": history.len(),
            "observed_since": observed_since,
            "covers_window": covered,
            "failures": earlier_failures,
        },
    });
    if !problems.is_empty() {
        return Verdict::fail(problems.join("; "), evidence);
    }
    if !earlier_failures.is_empty() {
        return Verdict::fail(
            format!(
                "healthy now, but not over the last {}: {}",
                p.window,
                earlier_failures.join("; ")
            ),
            evidence,
        );
    }
    let summary = samples
        .iter()
        .map(|s| {
            format!(
                "{}: {} failed / {} completed in {}, {} waiting",
                s.queue,
                s.failed_in_window,
                s.completed_in_window,
                p.window,
                s.waiting + s.paused + s.prioritized
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    if covered {
        Verdict::pass(summary, evidence)
    } else {
        let seen = observed_since.map_or("only now".to_string(), |t| {
            format!("since {}", t.format("%Y-%m-%d %H:%M UTC"))
        });
        Verdict::warn(
            format!(
                "{summary}; depth and stalls observed {seen}, not yet over the whole {}",
                p.window
            ),
            evidence,
        )
    }
}
