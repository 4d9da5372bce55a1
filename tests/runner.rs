//! The one integration-test binary: every test file is a module here, so the
//! suite links once.

mod common;
mod service_support;

mod analysis_sources;
mod bullmq_interop;
mod cli_basics;
mod cli_snapshots;
mod cli_validate;
mod cohorts;
mod conformance;
mod definition_properties;
mod drills;
#[cfg(feature = "ecs")]
mod ecs_emulator;
#[cfg(feature = "ecs")]
mod ecs_provider;
#[cfg(feature = "fly")]
mod fly_emulator;
#[cfg(feature = "fly")]
mod fly_provider;
mod gates_cli;
mod gates_peers;
#[cfg(feature = "github")]
mod github;
#[cfg(feature = "github")]
mod github_emulator;
mod incidents;
#[cfg(feature = "kubernetes")]
mod kube_emulator;
#[cfg(feature = "kubernetes")]
mod kube_provider;
mod ledger_store;
mod local_provider;
mod lock_race;
mod previews;
#[cfg(feature = "render")]
mod render_emulator;
mod render_output;
#[cfg(feature = "render")]
mod render_provider;
mod rollout_control;
mod rollouts;
mod service_http;
mod service_ingest;
mod service_migrations;
mod service_queue;
mod webhook_durability;
