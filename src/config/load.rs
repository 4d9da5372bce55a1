//! Reading definition files from disk and parsing their YAML.
//!
//! `parse_yaml` is the only place that calls the YAML library.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::def::{GateFile, GateFileAny, GateHeader, Loc};
use super::diag::{Diagnostics, SourceFile, suggest};
use super::params::*;
use crate::model::GateKind;

/// Read every `*.yaml` / `*.yml` file directly inside `root/sub`, sorted by name.
pub fn read_definitions(root: &Path, sub: &str) -> std::io::Result<Vec<SourceFile>> {
    let dir = root.join(sub);
    let mut files = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(files),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let is_yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        if !is_yaml || !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        files.push(SourceFile {
            display: format!("{sub}/{name}"),
            path,
            text,
        });
    }
    files.sort_by(|a, b| a.display.cmp(&b.display));
    Ok(files)
}

/// Parse one YAML document into `T`, turning any error into a diagnostic.
pub fn parse_yaml<T: DeserializeOwned>(file: &SourceFile, diags: &mut Diagnostics) -> Option<T> {
    let options = serde_saphyr::options! { with_snippet: false };
    match serde_saphyr::from_str_with_options::<T>(&file.text, options) {
        Ok(v) => Some(v),
        Err(err) => {
            report_yaml_error(file, &err, diags);
            None
        }
    }
}

fn report_yaml_error(file: &SourceFile, err: &serde_saphyr::Error, diags: &mut Diagnostics) {
    use serde_saphyr::Error as E;
    let loc = err
        .location()
        .map(|l| Loc {
            line: l.line(),
            column: l.column(),
        })
        .unwrap_or(Loc { line: 1, column: 1 });
    match err.without_snippet() {
        E::SerdeUnknownField {
            field, expected, ..
        } => diags.error(
            file,
            loc,
            format!("unknown key `{field}`"),
            suggest(field, expected),
        ),
        E::SerdeUnknownVariant {
            variant, expected, ..
        } => diags.error(
            file,
            loc,
            format!("unknown value `{variant}`"),
            suggest(variant, expected),
        ),
        E::SerdeMissingField { field, .. } => diags.error(
            file,
            loc,
            format!("missing required key `{field}`"),
            format!("add `{field}:` to this mapping"),
        ),
        other => {
            let text = other.to_string();
            let message = match text.rfind(" at line ") {
                Some(i) => text[..i].to_string(),
                None => text,
            };
            diags.error(file, loc, message, None);
        }
    }
}

/// Parse a gate file: read its `kind`, then check its `params` against that kind.
pub fn parse_gate(file: &SourceFile, diags: &mut Diagnostics) -> Option<GateFileAny> {
    let header: GateHeader = parse_yaml(file, diags)?;
    let Some(kind_at) = header.kind else {
        diags.error(
            file,
            Loc { line: 1, column: 1 },
            "missing required key `kind`",
            format!(
                "add `kind:` with one of: {}",
                GateKind::ALL
                    .iter()
                    .map(|k| k.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        return None;
    };
    let Ok(kind) = kind_at.value.parse::<GateKind>() else {
        let words: Vec<&str> = GateKind::ALL.iter().map(|k| k.as_str()).collect();
        diags.error(
            file,
            kind_at.loc,
            format!("unknown gate kind `{}`", kind_at.value),
            suggest(&kind_at.value, &words),
        );
        return None;
    };
    fn typed<P: DeserializeOwned + serde::Serialize + Default>(
        file: &SourceFile,
        diags: &mut Diagnostics,
    ) -> Option<GateFileAny> {
        parse_yaml::<GateFile<P>>(file, diags).map(GateFileAny::from)
    }
    match kind {
        GateKind::Migrations => typed::<MigrationsParams>(file, diags),
        GateKind::QueueHealth => typed::<QueueHealthParams>(file, diags),
        GateKind::Ingestion => typed::<IngestionParams>(file, diags),
        GateKind::Latency => typed::<LatencyParams>(file, diags),
        GateKind::Health => typed::<HealthParams>(file, diags),
        GateKind::Alerts => typed::<AlertsParams>(file, diags),
        GateKind::Window => typed::<WindowParams>(file, diags),
        GateKind::Env => typed::<EnvParams>(file, diags),
        GateKind::Smoke => typed::<SmokeParams>(file, diags),
        GateKind::Backup => typed::<BackupParams>(file, diags),
        GateKind::Bake => typed::<BakeParams>(file, diags),
        GateKind::Approval => typed::<ApprovalParams>(file, diags),
    }
}
