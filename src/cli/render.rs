//! `copilot render ARENA [--out DIR]`.

use std::path::PathBuf;

use serde_json::json;

use super::{CliError, CmdResult, Context, Report, arena};
use copilot_core::render::{self, ReleaseInfo};

#[derive(Debug, clap::Args)]
pub struct Args {
    pub arena: String,
    /// Output folder [default: <root>/.copilot/render/<arena>]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Render for a registered release (id, version or image)
    #[arg(long, value_name = "REF", conflicts_with = "image")]
    pub release: Option<String>,
    /// Render for an image reference that is not registered
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
}

pub async fn run(ctx: &Context, args: Args) -> CmdResult {
    let (root, loaded) = ctx.project()?;
    let a = arena(&loaded.project, &args.arena)?;
    let mut registered = None;
    let release = match (&args.release, &args.image) {
        (Some(r), _) => {
            let ledger = ctx.ledger(Some(&root)).await?;
            let rel = ledger.find_release(r).await?;
            registered = Some(rel.clone());
            ReleaseInfo {
                image: rel.image,
                version: rel.version,
            }
        }
        (None, Some(image)) => ReleaseInfo {
            image: image.clone(),
            version: crate::cli::release::version_from_image(image)
                .unwrap_or_else(|| "unversioned".into()),
        },
        (None, None) => ReleaseInfo::unreleased(),
    };
    let mut files = render::render_arena(&root, a, &release)?;
    // A provider that applies objects copilot builds (Kubernetes) renders
    // those very objects.
    let no_env = Default::default();
    let info = copilot_engine::rollout::executor::ReleaseInfo {
        id: registered.as_ref().map_or("", |r| r.id.as_str()),
        version: &release.version,
        image: &release.image,
        env: registered.as_ref().map_or(&no_env, |r| &r.env.0),
        resolve: false,
    };
    let spec = copilot_engine::rollout::executor::release_spec_of(a, &info)?;
    if let Some(m) = copilot_engine::platform::manifests(a, &spec) {
        let content = m.map_err(copilot_engine::rollout::RolloutError::from)?;
        files.insert(
            0,
            render::RenderedFile {
                name: format!("{}.yaml", a.provider.kind),
                template: format!("(the {} provider's objects)", a.provider.kind),
                format: render::Format::Yaml,
                content,
            },
        );
    }
    let out = args
        .out
        .unwrap_or_else(|| root.join(".copilot").join("render").join(&a.name));
    std::fs::create_dir_all(&out).map_err(|e| CliError::io("create", &out, &e))?;
    let mut text = format!(
        "Rendered {} for {} ({})\n",
        a.name, release.version, a.provider.kind
    );
    let mut written = Vec::new();
    for f in &files {
        let path = out.join(&f.name);
        std::fs::write(&path, &f.content).map_err(|e| CliError::io("write", &path, &e))?;
        text.push_str(&format!("  {}  <- {}\n", path.display(), f.template));
        written.push(json!({ "path": path, "template": f.template, "format": f.format }));
    }
    Ok(Report::new(
        json!({ "arena": a.name, "release": release, "out": out, "files": written }),
        text,
    ))
}
