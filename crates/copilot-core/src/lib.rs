//! The bottom layer of copilot: plain types and definitions.
//!
//! - [`model`] and [`config`]: arenas and gates as written, read with spans,
//!   checked, and resolved (durations, deploy windows, secret references);
//! - [`provider`]: the interface every provider implements, its error kinds,
//!   and [`http`], the HTTP layer provider clients share (retries by meaning,
//!   `Retry-After`, idempotency keys);
//! - [`render`] and [`templates`]: provider configuration rendered from the
//!   project's templates;
//! - [`promql`]: the PromQL subset analysis evaluates, and the exposition
//!   format;
//! - [`clock`], [`progress`], [`process`] and [`table`]: the current time and
//!   actor, where long operations report, processes by pid, and plain tables.
//!
//! Nothing here talks to a database or a platform; the crates above do.

pub mod clock;
pub mod config;
pub mod http;
pub mod model;
pub mod process;
pub mod progress;
pub mod promql;
pub mod provider;
pub mod render;
pub mod table;
pub mod templates;
