//! `copilot`: release orchestration for arena promotion.
//!
//! Layers, from the bottom up: [`model`] and [`config`] (definitions),
//! [`ledger`] and [`providers`], then [`render`], and [`cli`] on top. Imports
//! only point downwards.

#[cfg(feature = "aws")]
pub mod aws;
pub mod cli;
pub mod clock;
pub mod config;
pub mod db;
pub mod gates;
pub mod ledger;
pub mod model;
pub mod progress;
pub mod prometheus;
pub mod providers;
pub mod render;
pub mod rollout;
pub mod scaffold;
pub mod service;
pub mod table;
