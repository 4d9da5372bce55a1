//! `copilot validate`: check every arena, gate and template.

use serde_json::json;

use super::{CliError, CmdResult, Context, Exit, Report};
use copilot_core::config::{self, ConfigError, Diagnostic, Severity};
use copilot_core::render::{self, ReleaseInfo};
use copilot_engine::platform;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Treat warnings as errors
    #[arg(long)]
    pub strict: bool,
}

pub fn run(ctx: &Context, args: Args) -> CmdResult {
    let root = ctx.root()?;
    let loaded = match config::load_project(&root, &platform::RULES, args.strict) {
        Ok(l) => l,
        Err(ConfigError::Invalid { diagnostics }) => return Err(failure(diagnostics)),
        Err(e) => return Err(e.into()),
    };
    // Every template must render for every arena that uses it, and parse.
    let mut problems = Vec::new();
    for arena in loaded.project.arenas.values() {
        if let Err(e) = render::render_arena(&root, arena, &ReleaseInfo::unreleased()) {
            problems.push(Diagnostic {
                severity: Severity::Error,
                file: format!("arenas/{}.yaml", arena.name),
                line: 1,
                column: 1,
                message: format!(
                    "cannot render the {} configuration: {e}",
                    arena.provider.kind
                ),
                hint: Some("fix the template, or the arena values it uses".into()),
                source_line: None,
                len: 0,
            });
        }
    }
    // The incident communication template renders every field it names.
    if let Err(e) = copilot_engine::incidents::check_template(&root) {
        let line = e
            .to_string()
            .split_once(": line ")
            .and_then(|(_, rest)| rest.split(':').next()?.parse().ok())
            .unwrap_or(1);
        problems.push(Diagnostic {
            severity: Severity::Error,
            file: copilot_engine::incidents::TEMPLATE.into(),
            line,
            column: 1,
            message: format!("cannot render the incident template: {e}"),
            hint: Some("the fields are listed at the top of the built-in template (`copilot init` in an empty folder writes it)".into()),
            source_line: None,
            len: 0,
        });
    }
    // Two local arenas on one port: the second router could never start.
    // (A hotfix lane deploys into its target, on the target's port; each
    // preview gets a free port of its own when it is made.)
    let mut ports: std::collections::BTreeMap<u16, &str> = Default::default();
    for arena in loaded
        .project
        .arenas
        .values()
        .filter(|a| a.deploys_into() == a.name && a.preview.is_none())
    {
        let Some(local) = arena
            .provider
            .settings
            .get::<copilot_provider_local::LocalSettings>()
        else {
            continue;
        };
        if let Some(first) = ports.insert(local.port, &arena.name) {
            problems.push(Diagnostic {
                severity: Severity::Error,
                file: format!("arenas/{}.yaml", arena.name),
                line: 1,
                column: 1,
                message: format!(
                    "arenas `{first}` and `{}` both route on port {}",
                    arena.name, local.port
                ),
                hint: Some("give each local arena a port of its own (`provider.port`)".into()),
                source_line: None,
                len: 0,
            });
        }
    }
    if !problems.is_empty() {
        problems.extend(loaded.warnings);
        return Err(failure(problems));
    }
    let p = &loaded.project;
    let mut text = String::new();
    for w in &loaded.warnings {
        text.push_str(&w.render());
    }
    text.push_str(&format!(
        "ok: {} arenas, {} gates, templates render for every arena\n",
        p.arenas.len(),
        p.gates.len()
    ));
    let notes = lookups(p);
    for n in &notes {
        text.push_str(&format!("note: {n}\n"));
    }
    Ok(Report::new(
        json!({
            "valid": true,
            "root": root,
            "arenas": p.arenas.keys().collect::<Vec<_>>(),
            "gates": p.gates.keys().collect::<Vec<_>>(),
            "warnings": loaded.warnings,
            "notes": notes,
        }),
        text,
    ))
}

/// What a deploy will look up rather than take as written: an ECS task
/// definition needs a Secrets Manager secret's full ARN, so a name is
/// resolved (`DescribeSecret`) when the task definition is registered.
fn lookups(p: &copilot_core::model::Project) -> Vec<String> {
    p.arenas
        .values()
        .filter(|a| a.provider.kind == copilot_core::model::ProviderKind::Ecs)
        .filter_map(|a| {
            let names: Vec<&str> = a
                .env
                .secrets
                .values()
                .filter(|r| {
                    r.store == copilot_core::model::SecretStore::AwsSecretsManager
                        && !r.key.starts_with("arn:")
                })
                .map(|r| r.key.as_str())
                .collect();
            (!names.is_empty()).then(|| {
                format!(
                    "{}: {} Secrets Manager secret(s) named, not ARNs ({}); each is looked up for its ARN when a deploy registers the task definition, and a missing one stops the deploy",
                    a.name,
                    names.len(),
                    names.join(", ")
                )
            })
        })
        .collect()
}

fn failure(diagnostics: Vec<Diagnostic>) -> CliError {
    let errors = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = diagnostics.len() - errors;
    CliError {
        exit: Exit::Invalid,
        message: format!("validation failed: {errors} error(s), {warnings} warning(s)"),
        hint: None,
        diagnostics,
    }
}
