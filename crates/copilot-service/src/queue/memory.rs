//! The in-memory queue for development: same semantics as BullMQ's (retries
//! with backoff, counts per state), nothing shared between processes.
//! Webhook deliveries are also kept in the database, so the service
//! re-enqueues unprocessed ones after a restart.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Notify;

use super::{FailOutcome, Job, JobOptions, QueueCounts};

#[derive(Default)]
struct State {
    next_id: u64,
    /// Every job id this queue has held, so that adding a custom id again
    /// adds nothing (as BullMQ does while the job is kept).
    known: HashSet<String>,
    waiting: VecDeque<Job>,
    delayed: Vec<(Instant, Job)>,
    active: HashMap<String, Job>,
    completed: u64,
    failed: u64,
}

#[derive(Default)]
pub struct MemoryQueue {
    state: Mutex<State>,
    notify: Notify,
}

impl MemoryQueue {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&self, name: &str, data: &Value, opts: &JobOptions) -> String {
        let mut s = self.state.lock().expect("queue lock");
        s.next_id += 1;
        let id = opts.job_id.clone().unwrap_or_else(|| s.next_id.to_string());
        if !s.known.insert(id.clone()) {
            return id;
        }
        s.waiting.push_back(Job {
            id: id.clone(),
            name: name.to_string(),
            data: data.clone(),
            attempts_made: 0,
            opts: opts.clone(),
            token: String::new(),
        });
        drop(s);
        self.notify.notify_one();
        id
    }

    fn take(&self, max: usize) -> Vec<Job> {
        let mut s = self.state.lock().expect("queue lock");
        let now = Instant::now();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut s.delayed)
            .into_iter()
            .partition(|(t, _)| *t <= now);
        s.delayed = later;
        s.waiting.extend(due.into_iter().map(|(_, j)| j));
        let n = max.min(s.waiting.len());
        let jobs: Vec<Job> = s.waiting.drain(..n).collect();
        for job in &jobs {
            s.active.insert(job.id.clone(), job.clone());
        }
        jobs
    }

    /// Take up to `max` jobs, oldest first, waiting up to `wait` for one.
    pub async fn next_batch(&self, max: usize, wait: Duration) -> Vec<Job> {
        let deadline = Instant::now() + wait;
        loop {
            let jobs = self.take(max);
            if !jobs.is_empty() {
                return jobs;
            }
            let now = Instant::now();
            if now >= deadline {
                return jobs;
            }
            // Wake for a new job, a delayed job coming due, or the deadline.
            let next_due = {
                let s = self.state.lock().expect("queue lock");
                s.delayed.iter().map(|(t, _)| *t).min()
            };
            let until = next_due.map_or(deadline, |d| d.min(deadline));
            let _ =
                tokio::time::timeout(until.saturating_duration_since(now), self.notify.notified())
                    .await;
        }
    }

    /// Whether the job was active (and now is completed).
    pub fn complete(&self, job: &Job) -> bool {
        let mut s = self.state.lock().expect("queue lock");
        let held = s.active.remove(&job.id).is_some();
        if held {
            s.completed += 1;
        }
        held
    }

    pub fn fail(&self, job: &Job, _reason: &str) -> FailOutcome {
        let mut s = self.state.lock().expect("queue lock");
        let Some(mut j) = s.active.remove(&job.id) else {
            return FailOutcome::Failed;
        };
        j.attempts_made += 1;
        if j.attempts_made < j.opts.attempts {
            let delay_ms = j.opts.backoff.delay_ms(j.attempts_made);
            s.delayed
                .push((Instant::now() + Duration::from_millis(delay_ms), j));
            drop(s);
            self.notify.notify_one();
            FailOutcome::Retrying { delay_ms }
        } else {
            s.failed += 1;
            FailOutcome::Failed
        }
    }

    pub fn counts(&self) -> QueueCounts {
        let s = self.state.lock().expect("queue lock");
        QueueCounts {
            waiting: s.waiting.len() as u64,
            active: s.active.len() as u64,
            delayed: s.delayed.len() as u64,
            completed: s.completed,
            failed: s.failed,
            ..QueueCounts::default()
        }
    }
}
