//! The engine: what copilot does with definitions, a ledger and providers.
//!
//! - [`gates`]: every gate kind, run concurrently per phase, with evidence
//!   and reports (table, JSON, JUnit);
//! - [`rollout`]: the executor that owns a deployment from start to end
//!   (lease, step journal, provider calls, traffic, analysis, rollback,
//!   resume, abort), and the analysis it runs at each step;
//! - [`platform`]: the provider factory, every provider this copilot was
//!   built with behind one type;
//! - [`prometheus`]: instant queries against Prometheus's HTTP API;
//! - [`views`]: what `status`, `history`, `evidence` and `plan` show, as
//!   typed values the CLI renders.
//!
//! The CLI parses, calls into the engine and prints.

pub mod drill;
pub mod gates;
pub mod incidents;
pub mod platform;
pub mod prometheus;
pub mod rollout;
pub mod views;
