//! What a rollback leaves in the database: the applied migrations that the
//! release rolled back to does not have. A rollback never runs down
//! migrations (the older release has to run on the expanded schema, and
//! reverting data is a decision for a person); it names them, and says which
//! of them cannot be reversed at all.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::gates::migrations::{applied_versions, migration_set, params_for};
use crate::gates::resolve::{Resolved, resolve_reference};
use copilot_core::model::{Arena, Project};
use copilot_db::anchor_sqlite;
use copilot_ledger::{MigrationRecord, Release};

/// An applied migration the target release does not know.
#[derive(Clone, Debug, Serialize)]
pub struct LeftApplied {
    pub version: i64,
    pub description: String,
    /// Whether a down migration exists; `None` when nothing on record says.
    pub reversible: Option<bool>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SchemaReport {
    /// Where the applied set was read: `database`, or `releases` (what the
    /// newer release brought) when the database could not be read, or
    /// `unknown`.
    pub source: &'static str,
    pub left_applied: Vec<LeftApplied>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl SchemaReport {
    pub fn irreversible(&self) -> impl Iterator<Item = &LeftApplied> {
        self.left_applied
            .iter()
            .filter(|m| m.reversible == Some(false))
    }

    /// Lines for people, naming the release rolled back to: one `Schema:`
    /// summary (with how it was read when that is not the database), then
    /// the migrations left applied.
    pub fn text(&self, to: &str) -> String {
        let mut out = String::new();
        let basis = self
            .note
            .as_deref()
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        if self.left_applied.is_empty() {
            let summary = match self.source {
                "unknown" => "what stays applied is unknown".to_string(),
                _ => format!("no applied migration that {to} lacks"),
            };
            let _ = writeln!(out, "Schema: {summary}{basis}.");
            return out;
        }
        let _ = writeln!(
            out,
            "Schema: {} applied migration(s) that {to} lacks stay in place (a rollback runs no down migration){basis}:",
            self.left_applied.len()
        );
        for m in &self.left_applied {
            let how = match m.reversible {
                Some(true) => "reversible",
                Some(false) => "CANNOT BE REVERSED: no down migration",
                None => "reversibility unknown",
            };
            let _ = writeln!(out, "  {:<16} {:<32} {how}", m.version, m.description);
        }
        out
    }
}

fn left(
    versions: impl IntoIterator<Item = i64>,
    known: &BTreeSet<i64>,
    records: &[&[MigrationRecord]],
) -> Vec<LeftApplied> {
    versions
        .into_iter()
        .filter(|v| !known.contains(v))
        .map(|version| {
            let rec = records
                .iter()
                .flat_map(|set| set.iter())
                .find(|m| m.version == version);
            LeftApplied {
                version,
                description: rec.map(|m| m.description.clone()).unwrap_or_default(),
                reversible: rec.map(|m| m.reversible),
            }
        })
        .collect()
}

/// Compare what is applied to `arena`'s database (through its migrations
/// gate) with the migrations `to` was built with; `from` is the release
/// rolled back from.
pub async fn after_rollback(
    root: &Path,
    project: &Project,
    arena: &Arena,
    from: &Release,
    to: &Release,
) -> SchemaReport {
    let Some(to_set) = &to.migrations else {
        return SchemaReport {
            source: "unknown",
            left_applied: Vec::new(),
            note: Some(format!(
                "{} recorded no migrations (`copilot release create --migrations DIR`), so what it lacks is unknown",
                to.version
            )),
        };
    };
    let known: BTreeSet<i64> = to_set.0.iter().map(|m| m.version).collect();
    let from_set: &[MigrationRecord] = from.migrations.as_ref().map_or(&[], |m| &m.0);
    let params = params_for(project, Some(arena));
    // What the project's folder says today, for versions neither release records.
    let on_disk = match &params {
        Some(p) => migration_set(&root.join(&p.migrations))
            .await
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let applied = match &params {
        None => Err("no migrations gate names the database".to_string()),
        Some(p) => match resolve_reference(arena, &p.database) {
            Resolved::Value(url) => applied_versions(&anchor_sqlite(&url, root)).await,
            Resolved::Unresolvable(why) => Err(why),
        },
    };
    match applied {
        Ok(applied) => SchemaReport {
            source: "database",
            left_applied: left(applied, &known, &[from_set, &on_disk]),
            note: None,
        },
        Err(why) if from.migrations.is_some() => SchemaReport {
            source: "releases",
            left_applied: left(
                from_set.iter().map(|m| m.version),
                &known,
                &[from_set, &on_disk],
            ),
            note: Some(format!(
                "could not read the applied migrations ({why}); listed: what {} brought",
                from.version
            )),
        },
        Err(why) => SchemaReport {
            source: "unknown",
            left_applied: Vec::new(),
            note: Some(format!(
                "could not read the applied migrations ({why}) and {} recorded none",
                from.version
            )),
        },
    }
}
