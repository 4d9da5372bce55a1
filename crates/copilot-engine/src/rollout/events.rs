//! Lifecycle events of a deployment, for whoever follows it: a file of JSON
//! lines for CI, GitHub deployment statuses, a live page.
//!
//! The ledger's step journal stays the source of truth; events say the same
//! things as they happen, typed. Any number of [`EventSink`]s receive each
//! event in order; a sink that fails is said once in the log and never fails
//! the deployment.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use copilot_core::model::{Outcome, Phase};
use copilot_core::provider::Slot;

use super::analysis::Measurement;

/// One thing that happened to a deployment.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// The deployment is recorded and about to act.
    DeploymentStarted {
        deployment: String,
        arena: String,
        release: String,
        /// `deploy`, `promote`, `hotfix`, `rollback`.
        kind: String,
        strategy: String,
        at: DateTime<Utc>,
    },
    /// A step's intent is recorded; it acts next.
    StepStarted {
        deployment: String,
        seq: i32,
        name: String,
        intent: Value,
        at: DateTime<Utc>,
    },
    /// A step ended (`done` or `failed`) with its outcome.
    StepFinished {
        deployment: String,
        seq: i32,
        name: String,
        state: String,
        outcome: Value,
        at: DateTime<Utc>,
    },
    /// A phase of gates ran.
    GatesFinished {
        deployment: String,
        phase: Phase,
        results: Vec<GateOutcome>,
        at: DateTime<Utc>,
    },
    /// The platform carries a new split: what was asked and what it achieved.
    TrafficSet {
        deployment: String,
        requested: Vec<(Slot, u8)>,
        achieved: Vec<(Slot, u8)>,
        at: DateTime<Utc>,
    },
    /// Analysis measured a metric during a bake: how it came out (`pass`,
    /// `fail`, `inconclusive`, `error`), the value as people read it, why.
    AnalysisSample {
        deployment: String,
        step: String,
        metric: String,
        measurement: Measurement,
        at: DateTime<Utc>,
    },
    /// The deployment waits for a person (`copilot resume` or `abort`).
    Paused {
        deployment: String,
        reason: String,
        at: DateTime<Utc>,
    },
    /// Traffic went back to the previous release.
    RolledBack {
        deployment: String,
        reason: String,
        at: DateTime<Utc>,
    },
    /// The deployment ended: `succeeded`, `rolled-back`, `refused`,
    /// `failed`, `aborted`.
    Finished {
        deployment: String,
        state: String,
        summary: String,
        at: DateTime<Utc>,
    },
}

/// A gate's result as events carry it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GateOutcome {
    pub gate: String,
    pub outcome: Outcome,
    pub summary: String,
}

impl Event {
    /// The deployment the event is about.
    pub fn deployment(&self) -> &str {
        match self {
            Event::DeploymentStarted { deployment, .. }
            | Event::StepStarted { deployment, .. }
            | Event::StepFinished { deployment, .. }
            | Event::GatesFinished { deployment, .. }
            | Event::TrafficSet { deployment, .. }
            | Event::AnalysisSample { deployment, .. }
            | Event::Paused { deployment, .. }
            | Event::RolledBack { deployment, .. }
            | Event::Finished { deployment, .. } => deployment,
        }
    }
}

/// Where events go. `emit` is called in order, on the rollout's task; a
/// sink with slow work (HTTP) queues it and returns.
pub trait EventSink: Send + Sync {
    /// Take one event; an error is said in the log and otherwise ignored.
    fn emit(&self, event: &Event) -> Result<(), String>;
    /// A name for messages.
    fn name(&self) -> String;
}

/// The sinks of one executor.
#[derive(Default)]
pub struct Events {
    sinks: Vec<Box<dyn EventSink>>,
}

impl Events {
    pub fn add(&mut self, sink: Box<dyn EventSink>) {
        self.sinks.push(sink);
    }

    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// Hand `event` to every sink; a sink that fails is said and skipped.
    pub fn emit(&self, event: Event) {
        for sink in &self.sinks {
            if let Err(e) = sink.emit(&event) {
                tracing::warn!("event sink {} failed: {e}", sink.name());
            }
        }
    }
}

/// Events as JSON lines appended to a file (`--events FILE`), flushed one by
/// one so a follower (`tail -f`, a CI step) sees each as it happens.
pub struct JsonLines {
    path: PathBuf,
    file: Mutex<Option<std::fs::File>>,
}

impl JsonLines {
    /// Opens (or creates) `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(JsonLines {
            path: path.to_path_buf(),
            file: Mutex::new(Some(file)),
        })
    }
}

impl EventSink for JsonLines {
    fn emit(&self, event: &Event) -> Result<(), String> {
        let mut line = serde_json::to_string(event).map_err(|e| e.to_string())?;
        line.push('\n');
        let mut guard = self.file.lock().map_err(|_| "poisoned".to_string())?;
        let Some(file) = guard.as_mut() else {
            return Ok(());
        };
        if let Err(e) = file.write_all(line.as_bytes()).and_then(|()| file.flush()) {
            // Said once: later events are dropped rather than failing again.
            *guard = None;
            return Err(format!("cannot write {}: {e}", self.path.display()));
        }
        Ok(())
    }

    fn name(&self) -> String {
        format!("events file {}", self.path.display())
    }
}

/// Collects events in memory (tests, embedding callers).
#[derive(Default)]
pub struct Recorder {
    pub events: Mutex<Vec<Event>>,
}

impl EventSink for Recorder {
    fn emit(&self, event: &Event) -> Result<(), String> {
        self.events
            .lock()
            .map_err(|_| "poisoned".to_string())?
            .push(event.clone());
        Ok(())
    }

    fn name(&self) -> String {
        "recorder".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Broken;
    impl EventSink for Broken {
        fn emit(&self, _: &Event) -> Result<(), String> {
            Err("the page is gone".into())
        }
        fn name(&self) -> String {
            "broken".into()
        }
    }

    fn finished() -> Event {
        Event::Finished {
            deployment: "dep_1".into(),
            state: "succeeded".into(),
            summary: "v2 serves".into(),
            at: DateTime::parse_from_rfc3339("2026-11-24T11:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
        }
    }

    #[test]
    fn a_failing_sink_does_not_keep_events_from_the_others() {
        let recorder = std::sync::Arc::new(Recorder::default());
        struct Shared(std::sync::Arc<Recorder>);
        impl EventSink for Shared {
            fn emit(&self, e: &Event) -> Result<(), String> {
                self.0.emit(e)
            }
            fn name(&self) -> String {
                self.0.name()
            }
        }
        let mut events = Events::default();
        events.add(Box::new(Broken));
        events.add(Box::new(Shared(recorder.clone())));
        events.emit(finished());
        let seen = recorder.events.lock().unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].deployment(), "dep_1");
    }

    #[test]
    fn json_lines_are_tagged_by_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let sink = JsonLines::open(&path).unwrap();
        sink.emit(&finished()).unwrap();
        sink.emit(&finished()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["event"], "finished");
        assert_eq!(lines[0]["state"], "succeeded");
        assert_eq!(lines[0]["at"], "2026-11-24T11:00:00Z");
    }
}
