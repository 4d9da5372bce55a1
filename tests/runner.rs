//! The one integration-test binary: every test file is a module here, so the
//! suite links once.

mod common;

mod cli_basics;
mod cli_validate;
mod ledger_store;
mod lock_race;
mod render_output;
