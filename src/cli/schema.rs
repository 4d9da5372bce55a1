//! `copilot schema arena|gate`: the JSON Schemas editors use.

use super::{CmdResult, Context, Report};
use copilot_core::config::schema;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// arenas/*.yaml
    Arena,
    /// gates/*.yaml
    Gate,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[arg(value_enum)]
    pub format: Format,
}

pub fn run(_ctx: &Context, args: Args) -> CmdResult {
    let doc = match args.format {
        Format::Arena => schema::arena(&copilot_engine::platform::RULES),
        Format::Gate => schema::gate(),
    };
    let text = serde_json::to_string_pretty(&doc).expect("json") + "\n";
    Ok(Report::new(doc, text))
}
