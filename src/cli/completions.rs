//! `copilot completions SHELL`.

use clap::CommandFactory;
use serde_json::json;

use super::{Cli, CmdResult, Context, Report};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

pub fn run(_ctx: &Context, args: Args) -> CmdResult {
    let mut buf = Vec::new();
    clap_complete::generate(args.shell, &mut Cli::command(), "copilot", &mut buf);
    let script = String::from_utf8_lossy(&buf).into_owned();
    Ok(Report::new(
        json!({ "shell": args.shell.to_string(), "script": script }),
        script,
    ))
}
