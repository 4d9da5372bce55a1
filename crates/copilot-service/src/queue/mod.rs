//! The job queue behind one interface: in memory for development, or Redis
//! in BullMQ's key layout so Node BullMQ producers and workers interoperate.

mod bullmq;
mod memory;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use bullmq::BullmqQueue;
pub use memory::MemoryQueue;

/// How a job is identified and retried.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobOptions {
    /// Total attempts, the first included (BullMQ `attempts`).
    pub attempts: u32,
    pub backoff: Backoff,
    /// A job id of the producer's choosing (BullMQ `jobId`): adding a job
    /// whose id already exists adds nothing, so an add can be repeated
    /// safely. Not an integer, and without `:`, as BullMQ requires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            attempts: 5,
            backoff: Backoff::Exponential { delay: 1000 },
            job_id: None,
        }
    }
}

impl JobOptions {
    /// The defaults, under a job id of the producer's choosing.
    pub fn with_id(job_id: impl Into<String>) -> Self {
        JobOptions {
            job_id: Some(job_id.into()),
            ..JobOptions::default()
        }
    }
}

/// BullMQ's backoff option: `{"type": "exponential", "delay": 1000}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Backoff {
    Fixed { delay: u64 },
    Exponential { delay: u64 },
}

impl Backoff {
    /// Delay before the next attempt, after `attempts_made` attempts (BullMQ's formula).
    pub fn delay_ms(&self, attempts_made: u32) -> u64 {
        match self {
            Backoff::Fixed { delay } => *delay,
            Backoff::Exponential { delay } => {
                let exp = attempts_made.saturating_sub(1).min(20);
                delay.saturating_mul(1u64 << exp)
            }
        }
    }
}

/// A job taken for processing.
#[derive(Clone, Debug)]
pub struct Job {
    pub id: String,
    pub name: String,
    pub data: Value,
    /// Attempts finished before this one.
    pub attempts_made: u32,
    pub opts: JobOptions,
    /// Lock token (BullMQ) proving this worker holds the job.
    pub(crate) token: String,
}

/// Jobs per state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct QueueCounts {
    pub waiting: u64,
    pub active: u64,
    pub delayed: u64,
    pub paused: u64,
    pub prioritized: u64,
    pub completed: u64,
    pub failed: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("job {0} is no longer held by this worker")]
    LockLost(String),
    #[error("job {id} is malformed: {message}")]
    Malformed { id: String, message: String },
}

/// What happened to a failed job.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailOutcome {
    /// It will run again after a backoff.
    Retrying { delay_ms: u64 },
    /// Attempts exhausted: it is in the failed set.
    Failed,
}

#[derive(Clone)]
pub enum Queue {
    Memory(Arc<MemoryQueue>),
    Bullmq(BullmqQueue),
}

impl Queue {
    pub fn driver(&self) -> &'static str {
        match self {
            Queue::Memory(_) => "memory",
            Queue::Bullmq(_) => "bullmq",
        }
    }

    /// Add a job; with `opts.job_id` set and a job of that id already in the
    /// queue (in any state), nothing is added and that id is returned.
    pub async fn add(
        &self,
        name: &str,
        data: &Value,
        opts: &JobOptions,
    ) -> Result<String, QueueError> {
        match self {
            Queue::Memory(q) => Ok(q.add(name, data, opts)),
            Queue::Bullmq(q) => q.add(name, data, opts).await,
        }
    }

    /// Take the next job, waiting up to `wait` for one.
    pub async fn next(&self, wait: Duration) -> Result<Option<Job>, QueueError> {
        Ok(self.next_batch(1, wait).await?.pop())
    }

    /// Take up to `max` jobs in one step, oldest first, waiting up to
    /// `wait` for one; each is held (locked) by this worker until completed
    /// or failed.
    pub async fn next_batch(&self, max: usize, wait: Duration) -> Result<Vec<Job>, QueueError> {
        match self {
            Queue::Memory(q) => Ok(q.next_batch(max, wait).await),
            Queue::Bullmq(q) => q.next_batch(max, wait).await,
        }
    }

    pub async fn complete(&self, job: &Job, result: &Value) -> Result<(), QueueError> {
        match self.complete_all(&[(job, result)]).await?.pop() {
            Some(true) => Ok(()),
            _ => Err(QueueError::LockLost(job.id.clone())),
        }
    }

    /// Complete jobs in one step; for each, whether this worker still held
    /// it (a job whose lock was lost is left to whoever holds it now).
    pub async fn complete_all(&self, done: &[(&Job, &Value)]) -> Result<Vec<bool>, QueueError> {
        match self {
            Queue::Memory(q) => Ok(done.iter().map(|(job, _)| q.complete(job)).collect()),
            Queue::Bullmq(q) => q.complete_all(done).await,
        }
    }

    pub async fn fail(&self, job: &Job, reason: &str) -> Result<FailOutcome, QueueError> {
        match self {
            Queue::Memory(q) => Ok(q.fail(job, reason)),
            Queue::Bullmq(q) => q.fail(job, reason).await,
        }
    }

    pub async fn counts(&self) -> Result<QueueCounts, QueueError> {
        match self {
            Queue::Memory(q) => Ok(q.counts()),
            Queue::Bullmq(q) => q.counts().await,
        }
    }

    /// Put jobs whose worker died (lock expired) back in line.
    pub async fn recover_stalled(&self) -> Result<usize, QueueError> {
        match self {
            Queue::Memory(_) => Ok(0),
            Queue::Bullmq(q) => q.recover_stalled().await,
        }
    }

    pub async fn ping(&self) -> Result<(), QueueError> {
        match self {
            Queue::Memory(_) => Ok(()),
            Queue::Bullmq(q) => q.ping().await,
        }
    }
}
