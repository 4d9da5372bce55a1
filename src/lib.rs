//! `copilot`: release orchestration for arena promotion.
//!
//! This crate is the command line on top of the workspace's layers (see the
//! README's architecture section): [`cli`] parses arguments, calls into
//! `copilot-engine`, and renders what it returns as a table or as JSON.

pub mod cli;
