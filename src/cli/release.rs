//! `copilot release create | list`.

use serde_json::json;

use super::{CliError, CmdResult, Context, Report, Table, when};
use copilot_core::clock;
use copilot_core::config;
use copilot_ledger::{NewAudit, NewRelease};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Register an immutable release of an image
    Create {
        /// Image reference, ideally with its digest (`repo/name:tag@sha256:...`)
        #[arg(long, value_name = "REF")]
        image: String,
        /// Version label [default: the image tag]
        #[arg(long)]
        version: Option<String>,
        /// Commit the image was built from
        #[arg(long, value_name = "SHA")]
        git_sha: Option<String>,
        /// A non-secret variable the release runs with (repeatable), e.g. `--env LOG_LEVEL=debug`
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// The schema migrations the release was built with, recorded so a rollback can
        /// name what the older release does not know [default: the migrations gate's folder]
        #[arg(long, value_name = "DIR")]
        migrations: Option<std::path::PathBuf>,
    },
    /// Registered releases, newest first
    List {
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
}

/// The tag of an image reference (`ghcr.io/acme/app:v1.2@sha256:...` -> `v1.2`).
pub fn version_from_image(image: &str) -> Option<String> {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split_once(':')
        .map(|(_, tag)| tag.to_string())
        .filter(|t| !t.is_empty())
}

/// The digest of an image reference, when it carries one.
pub fn digest_from_image(image: &str) -> Option<String> {
    image
        .split_once('@')
        .map(|(_, d)| d.to_string())
        .filter(|d| d.starts_with("sha256:") && d.len() == 71)
}

/// The folder of the project's migrations gate, when the definitions load
/// and it exists: what a release records unless told otherwise.
async fn default_migrations(
    root: &std::path::Path,
) -> Option<Vec<copilot_ledger::MigrationRecord>> {
    let loaded = config::load_project(root, &copilot_engine::platform::RULES, false).ok()?;
    let params = copilot_engine::gates::migrations::params_for(&loaded.project, None)?;
    let dir = root.join(params.migrations);
    if !dir.is_dir() {
        return None;
    }
    copilot_engine::gates::migrations::migration_set(&dir)
        .await
        .ok()
}

pub async fn run(ctx: &Context, cmd: Command) -> CmdResult {
    let root = ctx.root()?;
    let ledger = ctx.ledger(Some(&root)).await?;
    match cmd {
        Command::Create {
            image,
            version,
            git_sha,
            env,
            migrations,
        } => {
            let mut vars = std::collections::BTreeMap::new();
            for pair in &env {
                let Some((k, v)) = pair.split_once('=') else {
                    return Err(CliError::invalid(format!(
                        "--env `{pair}` is not KEY=VALUE"
                    )));
                };
                if k.is_empty()
                    || !k
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                {
                    return Err(CliError::invalid(format!(
                        "--env `{k}` is not an UPPER_SNAKE_CASE name"
                    )));
                }
                if let Some(why) = copilot_core::config::validate::inline_secret(k, v) {
                    return Err(CliError::invalid(format!(
                        "--env {why}; a release carries configuration in clear"
                    ))
                    .with_hint(format!(
                        "keep {k} in the arena's env.secrets as a reference (env:, file: or the platform's store)"
                    )));
                }
                vars.insert(k.to_string(), v.to_string());
            }
            if image.trim().is_empty() || image.contains(char::is_whitespace) {
                return Err(CliError::invalid(format!(
                    "`{image}` is not an image reference"
                )));
            }
            if image.contains('@') && digest_from_image(&image).is_none() {
                return Err(
                    CliError::invalid(format!("`{image}` has a malformed digest"))
                        .with_hint("a digest is `sha256:` followed by 64 hex digits"),
                );
            }
            if let Some(sha) = &git_sha
                && (!(7..=40).contains(&sha.len()) || !sha.chars().all(|c| c.is_ascii_hexdigit()))
            {
                return Err(CliError::invalid("--git-sha must be 7 to 40 hex digits"));
            }
            let Some(version) = version.or_else(|| version_from_image(&image)) else {
                return Err(CliError::invalid(format!(
                    "`{image}` has no tag to use as the version"
                ))
                .with_hint("pass --version"));
            };
            copilot_core::config::validate::check_version(&version).map_err(|why| {
                CliError::invalid(why).with_hint(
                    "a version is 1 to 128 letters, digits, `.`, `_`, `+` or `-`, starting with a letter or digit",
                )
            })?;
            let migrations = match migrations {
                Some(dir) => Some(
                    copilot_engine::gates::migrations::migration_set(&root.join(dir))
                        .await
                        .map_err(CliError::invalid)?,
                ),
                None => default_migrations(&root).await,
            };
            let config_hash = config::definitions_hash(&root)
                .map_err(|e| CliError::io("read the definitions in", &root, &e))?;
            let now = clock::now();
            let actor = clock::actor();
            let release = ledger
                .create_release(
                    &NewRelease {
                        env: vars,
                        migrations,
                        version: version.clone(),
                        digest: digest_from_image(&image),
                        image,
                        git_sha,
                        config_hash,
                        created_by: actor.clone(),
                    },
                    now,
                )
                .await?;
            ledger
                .audit(
                    &NewAudit {
                        actor,
                        action: "release.create".into(),
                        subject: Some(release.id.clone()),
                        detail: json!({ "version": release.version, "image": release.image }),
                        ..NewAudit::default()
                    },
                    now,
                )
                .await?;
            let mut text = format!(
                "Registered release {} ({})\n  image   {}\n  config  {}\n",
                release.version, release.id, release.image, release.config_hash
            );
            if let Some(set) = &release.migrations {
                let irreversible = set.iter().filter(|m| !m.reversible).count();
                text.push_str(&format!(
                    "  schema  {} migration(s), latest {}{}\n",
                    set.len(),
                    set.last().map_or("none".into(), |m| format!(
                        "{} {}",
                        m.version, m.description
                    )),
                    if irreversible > 0 {
                        format!(", {irreversible} without a down migration")
                    } else {
                        String::new()
                    }
                ));
            }
            Ok(Report::new(json!({ "release": release }), text))
        }
        Command::List { limit } => {
            let releases = ledger.list_releases(limit).await?;
            let mut t = Table::new(["VERSION", "ID", "IMAGE", "GIT SHA", "CREATED", "BY"]);
            for r in &releases {
                t.row([
                    r.version.clone(),
                    r.id.clone(),
                    r.image.clone(),
                    r.git_sha.clone().unwrap_or_else(|| "-".into()),
                    when(r.created_at),
                    r.created_by.clone(),
                ]);
            }
            let text = if releases.is_empty() {
                "No releases yet.\n".into()
            } else {
                t.render()
            };
            Ok(Report::new(json!({ "releases": releases }), text))
        }
    }
}
