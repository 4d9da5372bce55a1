//! The default project: six arenas, a gate of every kind, provider templates,
//! the Dockerfile template and the JSON Schemas of the service's records and
//! responses (which the `ingestion` and `latency` gates check). `copilot
//! init` writes these files (and the service's migrations, from where the
//! service embeds them); the same files are the repository's own `arenas/`,
//! `gates/`, `templates/` and `schemas/`.

/// A file of the default project: its path under the root and its content.
pub struct DefaultFile {
    pub path: &'static str,
    pub content: &'static str,
}

macro_rules! defaults {
    ($($path:literal),+ $(,)?) => {
        &[$(DefaultFile { path: $path, content: include_str!(concat!("../../../", $path)) }),+]
    };
}

pub static DEFAULT_FILES: &[DefaultFile] = defaults![
    "arenas/local.yaml",
    "arenas/preview.yaml",
    "arenas/staging.yaml",
    "arenas/canary.yaml",
    "arenas/production.yaml",
    "arenas/hotfix.yaml",
    "gates/alerts.yaml",
    "gates/approval.yaml",
    "gates/backup.yaml",
    "gates/bake.yaml",
    "gates/env.yaml",
    "gates/health.yaml",
    "gates/ingestion.yaml",
    "gates/latency.yaml",
    "gates/migrations.yaml",
    "gates/queue-health.yaml",
    "gates/smoke.yaml",
    "gates/window.yaml",
    "templates/fly.toml.j2",
    "templates/render.yaml.j2",
    "templates/ecs-task-definition.json.j2",
    "templates/incident.md.j2",
    "Dockerfile.tmpl",
    "schemas/update-record.schema.json",
    "schemas/recommendations.schema.json",
    "fixtures/feeds/google-search-incidents.json",
    "fixtures/feeds/shopify-changelog.rss",
];

/// The built-in content of a default file, by path.
pub fn default_file(path: &str) -> Option<&'static str> {
    DEFAULT_FILES
        .iter()
        .find(|f| f.path == path)
        .map(|f| f.content)
}
