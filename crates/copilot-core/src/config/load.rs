//! Reading definition files from disk and parsing their YAML.
//!
//! `parse_yaml` is the only place that calls the YAML library.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::def::{GateFile, GateFileAny, GateHeader, Loc};
use super::diag::{Diagnostics, SourceFile, suggest};
use super::params::*;
use crate::model::GateKind;

/// Every `*.yaml` / `*.yml` entry directly inside `root/sub`, sorted by
/// name: the files read, and each entry that cannot be one (a folder, a
/// FIFO, a broken or looping link, text that is not UTF-8) as a file with
/// no text and what is wrong with it, so every other file is still checked.
pub fn read_definitions(root: &Path, sub: &str) -> std::io::Result<Definitions> {
    let dir = root.join(sub);
    let (mut files, mut refused) = (Vec::new(), Vec::new());
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Definitions { files, refused });
        }
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let is_yaml = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        if !is_yaml {
            continue;
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let file = |text: String| SourceFile {
            display: format!("{sub}/{name}"),
            path: path.clone(),
            text,
        };
        let problem = match std::fs::metadata(&path) {
            Err(e) => Some(format!("cannot be read: {e}")),
            Ok(m) if m.is_dir() => Some("is a folder, not a definition file".to_string()),
            Ok(m) if !m.is_file() => {
                Some("is not a regular file (a FIFO, socket or device)".to_string())
            }
            Ok(_) => match std::fs::read(&path) {
                Err(e) => Some(format!("cannot be read: {e}")),
                Ok(bytes) => match String::from_utf8(bytes) {
                    Ok(text) => {
                        files.push(file(text));
                        None
                    }
                    Err(e) => Some(format!(
                        "is not UTF-8 text (byte {} is not valid UTF-8)",
                        e.utf8_error().valid_up_to()
                    )),
                },
            },
        };
        if let Some(problem) = problem {
            refused.push((file(String::new()), problem));
        }
    }
    files.sort_by(|a, b| a.display.cmp(&b.display));
    refused.sort_by(|a, b| a.0.display.cmp(&b.0.display));
    Ok(Definitions { files, refused })
}

/// What [`read_definitions`] found in one folder.
pub struct Definitions {
    pub files: Vec<SourceFile>,
    /// Entries that cannot be definitions, with what is wrong with each.
    pub refused: Vec<(SourceFile, String)>,
}

/// The largest definition file read: the defaults are a few hundred bytes each.
pub const MAX_DEFINITION_BYTES: usize = 1024 * 1024;

/// Parse one YAML document into `T`, turning any error into a diagnostic.
pub fn parse_yaml<T: DeserializeOwned>(file: &SourceFile, diags: &mut Diagnostics) -> Option<T> {
    if file.text.len() > MAX_DEFINITION_BYTES {
        diags.error(
            file,
            Loc::START,
            format!(
                "the file is {:.1} MiB; a definition is at most 1 MiB",
                file.text.len() as f64 / (1024.0 * 1024.0)
            ),
            "definitions are small, hand-written files: this one looks generated or pasted by mistake",
        );
        return None;
    }
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
        .map(|l| Loc::at(l.line(), l.column()))
        .unwrap_or(Loc::START);
    // Through the wrappers (snippets, aliases) to what actually went wrong.
    let mut inner = err;
    while let E::AliasError { error, .. } | E::WithSnippet { error, .. } = inner {
        inner = error;
    }
    match inner {
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
        E::Budget { breach, .. } => diags.error(
            file,
            loc,
            budget_message(breach),
            "definitions are small, hand-written files: this one looks generated or pasted by mistake",
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

/// What a YAML budget limit says, in words: which limit, and how far the file went.
fn budget_message(breach: &serde_saphyr::budget::BudgetBreach) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    let (what, n) = match breach {
        B::Events { events } => ("parser events", *events),
        B::Aliases { aliases } => ("aliases (`*name`)", *aliases),
        B::Anchors { anchors } => ("anchors (`&name`)", *anchors),
        B::Depth { depth } => ("levels of nesting", *depth),
        B::InclusionDepth { depth } => ("levels of included files", *depth as usize),
        B::Documents { documents } => ("YAML documents (`---`)", *documents),
        B::Nodes { nodes } => ("nodes (mappings, sequences and values)", *nodes),
        B::ScalarBytes { total_scalar_bytes } => ("bytes of values", *total_scalar_bytes),
        B::MergeKeys { merge_keys } => ("merge keys (`<<`)", *merge_keys),
        B::AliasAnchorRatio { aliases, anchors } => {
            return format!(
                "the file expands {aliases} aliases from {anchors} anchors: too many references per anchor (an alias bomb?)"
            );
        }
        B::SequenceUnbalanced => return "the file's structure is unbalanced (truncated?)".into(),
        B::InputBytes { input_bytes } => ("bytes", *input_bytes),
        B::RecordedAnchorEvents {
            recorded_anchor_events,
        } => ("events recorded for anchors", *recorded_anchor_events),
        B::RecordedAnchorBytes {
            recorded_anchor_bytes,
        } => ("bytes recorded for anchors", *recorded_anchor_bytes),
        B::PropertyExpansionDepth { depth, max_depth } => {
            return format!("properties nest {depth} deep, more than the limit of {max_depth}");
        }
        B::PropertyInterpolationWork { work, max_work } => {
            return format!(
                "interpolating properties takes {work} steps, more than the limit of {max_work}"
            );
        }
        #[allow(unreachable_patterns)]
        _ => return "the file exceeds a limit of the YAML reader".into(),
    };
    format!("the file has more {what} than the YAML reader allows (stopped at {n})")
}

/// Parse a gate file: read its `kind`, then check its `params` against that kind.
pub fn parse_gate(file: &SourceFile, diags: &mut Diagnostics) -> Option<GateFileAny> {
    let header: GateHeader = parse_yaml(file, diags)?;
    let Some(kind_at) = header.kind else {
        diags.error(
            file,
            Loc::START,
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
        GateKind::Command => typed::<CommandParams>(file, diags),
    }
}
