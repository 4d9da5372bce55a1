//! The default project: six arenas, a gate of every kind, provider templates,
//! the Dockerfile template and the bundled service's migrations (which the
//! `migrations` gate checks). `copilot init` writes these files; the same
//! files are the repository's own `arenas/`, `gates/` and `templates/`.

/// A file of the default project: its path under the root and its content.
pub struct DefaultFile {
    pub path: &'static str,
    pub content: &'static str,
}

macro_rules! defaults {
    ($($path:literal),+ $(,)?) => {
        &[$(DefaultFile { path: $path, content: include_str!(concat!("../", $path)) }),+]
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
    "templates/kubernetes.yaml.j2",
    "Dockerfile.tmpl",
    "migrations/service/sqlite/0001_update_records.up.sql",
    "migrations/service/sqlite/0001_update_records.down.sql",
    "migrations/service/sqlite/0002_webhook_deliveries.up.sql",
    "migrations/service/sqlite/0002_webhook_deliveries.down.sql",
    "migrations/service/sqlite/0003_feature_flags.up.sql",
    "migrations/service/sqlite/0003_feature_flags.down.sql",
    "migrations/service/sqlite/0004_shops.up.sql",
    "migrations/service/sqlite/0004_shops.down.sql",
    "migrations/service/sqlite/0005_update_records_by_status.up.sql",
    "migrations/service/sqlite/0005_update_records_by_status.down.sql",
    "migrations/service/postgres/0001_update_records.up.sql",
    "migrations/service/postgres/0001_update_records.down.sql",
    "migrations/service/postgres/0002_webhook_deliveries.up.sql",
    "migrations/service/postgres/0002_webhook_deliveries.down.sql",
    "migrations/service/postgres/0003_feature_flags.up.sql",
    "migrations/service/postgres/0003_feature_flags.down.sql",
    "migrations/service/postgres/0004_shops.up.sql",
    "migrations/service/postgres/0004_shops.down.sql",
    "migrations/service/postgres/0005_update_records_by_status.up.sql",
    "migrations/service/postgres/0005_update_records_by_status.down.sql",
];

/// The built-in content of a default file, by path.
pub fn default_file(path: &str) -> Option<&'static str> {
    DEFAULT_FILES
        .iter()
        .find(|f| f.path == path)
        .map(|f| f.content)
}
