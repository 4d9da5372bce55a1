//! Provider configuration rendered from `templates/` and `Dockerfile.tmpl`
//! with minijinja, and checked by parsing it back in its own format.

use std::path::Path;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::model::Arena;
use crate::templates;

/// The service every template packages.
pub const SERVICE_NAME: &str = "copilot-service";
pub const SERVICE_PORT: u16 = 8080;

/// The format of a rendered file, by which it is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Toml,
    Yaml,
    Json,
    Dockerfile,
}

/// A template and the file it renders to; each provider lists its own
/// (`Capabilities::templates`).
#[derive(Debug)]
pub struct TemplateSpec {
    /// Under the project root, or built in (`templates/fly.toml.j2`).
    pub template: &'static str,
    /// The rendered file's name.
    pub output: &'static str,
    pub format: Format,
}

const DOCKERFILE: TemplateSpec = TemplateSpec {
    template: "Dockerfile.tmpl",
    output: "Dockerfile",
    format: Format::Dockerfile,
};

/// The release a rendering is for.
#[derive(Clone, Debug, Serialize)]
pub struct ReleaseInfo {
    pub image: String,
    pub version: String,
}

impl ReleaseInfo {
    /// A stand-in used when no release is named.
    pub fn unreleased() -> Self {
        ReleaseInfo {
            image: format!("{SERVICE_NAME}:unreleased"),
            version: "unreleased".into(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct RenderedFile {
    /// File name in the output folder.
    pub name: String,
    /// The template it came from, relative to the root (`(built-in)` if the project has none).
    pub template: String,
    pub format: Format,
    #[serde(skip)]
    pub content: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{template}: {message}")]
    Template { template: String, message: String },
    #[error("{template} renders a {format:?} file that does not parse: {message}")]
    Unparseable {
        template: String,
        format: Format,
        message: String,
    },
}

fn template_source(root: &Path, path: &str) -> (String, String) {
    match std::fs::read_to_string(root.join(path)) {
        Ok(text) => (text, path.to_string()),
        Err(_) => (
            templates::default_file(path)
                .unwrap_or_default()
                .to_string(),
            format!("{path} (built-in)"),
        ),
    }
}

/// The instructions a template may run: the default ones use a few
/// thousand; a million is far above any configuration file.
pub const TEMPLATE_FUEL: u64 = 1_000_000;

/// The environment every template renders in: undefined values are
/// errors, trailing newlines kept, and a budget of instructions.
fn environment() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    // A template is a page of text: one that runs away (nested loops over
    // large ranges) stops with an error instead of holding a command.
    env.set_fuel(Some(TEMPLATE_FUEL));
    env
}

/// The error of template `shown`, with its line.
fn template_error(shown: &str, e: &minijinja::Error) -> RenderError {
    RenderError::Template {
        template: shown.to_string(),
        message: match e.line() {
            Some(line) => format!("line {line}: {}", e.detail().unwrap_or(&e.to_string())),
            None => e.to_string(),
        },
    }
}

/// Render a document template of the project (`templates/incident.md.j2`),
/// or its built-in default when the project has none. Fields not known
/// yet (an ETA) are `none`, which `{{ eta or "..." }}` reads; a name that
/// is not a field is an error.
pub fn render_document<S: Serialize>(
    root: &Path,
    path: &str,
    ctx: &S,
) -> Result<String, RenderError> {
    let (source, shown) = template_source(root, path);
    environment()
        .render_str(&source, ctx)
        .map_err(|e| template_error(&shown, &e))
}

/// Render the provider configuration and Dockerfile of an arena.
pub fn render_arena(
    root: &Path,
    arena: &Arena,
    release: &ReleaseInfo,
) -> Result<Vec<RenderedFile>, RenderError> {
    let env = environment();
    let ctx = minijinja::context! {
        arena => arena,
        release => release,
        service => minijinja::context! {
            name => SERVICE_NAME,
            binary => SERVICE_NAME,
            port => SERVICE_PORT,
            health_path => "/health",
        },
        rust_version => "1.89",
        live_colour => "blue",
    };
    let mut out = Vec::new();
    for spec in arena.provider.templates.iter().chain([&DOCKERFILE]) {
        let (source, shown) = template_source(root, spec.template);
        let content = env
            .render_str(&source, &ctx)
            .map_err(|e| template_error(&shown, &e))?;
        check_parses(spec.format, &content).map_err(|message| RenderError::Unparseable {
            template: shown.clone(),
            format: spec.format,
            message,
        })?;
        out.push(RenderedFile {
            name: spec.output.to_string(),
            template: shown,
            format: spec.format,
            content,
        });
    }
    Ok(out)
}

/// Parse rendered text in its own format.
pub fn check_parses(format: Format, text: &str) -> Result<(), String> {
    match format {
        Format::Toml => toml::from_str::<toml::Table>(text)
            .map(drop)
            .map_err(|e| e.to_string()),
        Format::Json => serde_json::from_str::<serde_json::Value>(text)
            .map(drop)
            .map_err(|e| e.to_string()),
        Format::Yaml => serde_saphyr::from_str_multiple::<serde_json::Value, Vec<_>>(text)
            .map(drop)
            .map_err(|e| e.to_string()),
        Format::Dockerfile => check_dockerfile(text),
    }
}

/// A Dockerfile must start (after comments and ARGs) with FROM and use known instructions.
fn check_dockerfile(text: &str) -> Result<(), String> {
    const INSTRUCTIONS: &[&str] = &[
        "FROM",
        "RUN",
        "CMD",
        "LABEL",
        "EXPOSE",
        "ENV",
        "ADD",
        "COPY",
        "ENTRYPOINT",
        "VOLUME",
        "USER",
        "WORKDIR",
        "ARG",
        "ONBUILD",
        "STOPSIGNAL",
        "HEALTHCHECK",
        "SHELL",
    ];
    let mut continued = false;
    let mut seen_from = false;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        let was_continued = continued;
        continued = trimmed.ends_with('\\');
        if was_continued || trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let word = trimmed
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        if !INSTRUCTIONS.contains(&word.as_str()) {
            return Err(format!("line {}: unknown instruction `{word}`", i + 1));
        }
        if word == "FROM" {
            seen_from = true;
        } else if !seen_from && word != "ARG" {
            return Err(format!("line {}: `{word}` before the first FROM", i + 1));
        }
    }
    if seen_from {
        Ok(())
    } else {
        Err("no FROM instruction".into())
    }
}
