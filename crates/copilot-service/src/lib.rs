//! `copilot-service`: the SEM/SMM copilot for Shopify merchants that copilot
//! deploys and gates.
//!
//! It ingests search and social platform updates into normalized records,
//! recommends actions to merchants, receives HMAC-verified Shopify webhooks
//! through a job queue (in memory, or Redis in BullMQ's layout), serves
//! feature flags, health checks and Prometheus metrics, and carries its own
//! reversible migrations for SQLite and PostgreSQL.

pub mod config;
pub mod flags;
pub mod http;
pub mod metrics;
pub mod queue;
pub mod recommend;
pub mod recommend_cache;
pub mod webhooks;
pub mod worker;

// The records, their ingestors and migrations are shared with the gates
// that check this service.
pub use copilot_records::{ingest, migrate, records};
