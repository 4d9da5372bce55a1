//! What copilot-service stores and how it gets there, shared by the service
//! and the gates that check it: normalized update records and their JSON
//! Schema ([`records`]), the ingestors that turn search and social update
//! feeds into records ([`ingest`]), and the service's reversible migrations
//! for SQLite and PostgreSQL ([`migrate`]).
//!
//! The orchestrator's `ingestion` gate runs these ingestors against the
//! arena's feeds and the `migrations` gate applies and rolls back these
//! migrations on a shadow database, without importing the service itself.

pub mod ingest;
pub mod migrate;
pub mod records;
