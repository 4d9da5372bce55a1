//! `copilot init [DIR]`: write the default project.

use std::path::PathBuf;

use serde_json::json;

use super::{CliError, CmdResult, Context, Report};
use copilot_core::config::schema;
use copilot_core::templates::DEFAULT_FILES;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to create the project [default: the current directory]
    pub dir: Option<PathBuf>,
    /// Overwrite files that already exist
    #[arg(long)]
    pub force: bool,
}

pub fn run(_ctx: &Context, args: Args) -> CmdResult {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from("."));
    let pretty = |v: serde_json::Value| serde_json::to_string_pretty(&v).expect("json") + "\n";
    let generated = [
        (
            "schemas/arena.schema.json",
            pretty(schema::arena(&copilot_engine::platform::RULES)),
        ),
        ("schemas/gate.schema.json", pretty(schema::gate())),
        (
            ".gitignore",
            "# copilot's ledger, rendered files and local processes\n.copilot/\n".to_string(),
        ),
    ];
    // The service's migrations come from where the service embeds them, so a
    // new project's `migrations` gate checks what the service applies.
    let migrations = copilot_records::migrate::files();
    let files = DEFAULT_FILES
        .iter()
        .map(|f| (f.path.to_string(), f.content.to_string()))
        .chain(migrations.into_iter().map(|(p, c)| (p, c.into_owned())))
        .chain(generated.map(|(p, c)| (p.to_string(), c)));
    let (mut written, mut kept) = (Vec::new(), Vec::new());
    for (path, content) in files {
        let target = dir.join(&path);
        if target.exists() && !args.force {
            kept.push(path);
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| CliError::io("create", parent, &e))?;
        }
        std::fs::write(&target, content).map_err(|e| CliError::io("write", &target, &e))?;
        written.push(path);
    }
    let mut text = format!("Initialised a copilot project in {}\n", dir.display());
    for p in &written {
        text.push_str(&format!("  wrote {p}\n"));
    }
    for p in &kept {
        text.push_str(&format!("  kept  {p} (exists; --force overwrites)\n"));
    }
    text.push_str("Next: `copilot validate`, then `copilot arenas list`.\n");
    Ok(Report::new(
        json!({ "root": dir, "written": written, "kept": kept }),
        text,
    ))
}
