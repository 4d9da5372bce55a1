//! Arena and gate definitions: reading, parsing, validating and resolving.
//!
//! The entry point is [`load_project`]: it reads `arenas/*.yaml` and
//! `gates/*.yaml` under a project root and returns a checked
//! [`Project`](crate::model::Project), or every problem it found.

pub mod def;
pub mod diag;
pub mod duration;
pub mod load;
pub mod params;
pub mod schema;
pub mod validate;
pub mod window;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub use diag::{Diagnostic, Diagnostics, Severity};
pub use validate::{CapabilitiesFn, ProviderRules, SettingsInput};

use crate::model::Project;

/// Why a project could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{} problem(s) in the definitions", .diagnostics.iter().filter(|d| d.severity == Severity::Error).count())]
    Invalid { diagnostics: Vec<Diagnostic> },
    #[error("no arena definitions under {}", .root.display())]
    NoArenas { root: PathBuf },
    #[error("cannot read {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// A checked project and the warnings found on the way.
#[derive(Debug)]
pub struct Loaded {
    pub project: Project,
    pub warnings: Vec<Diagnostic>,
}

/// Read, parse and check every definition under `root`.
///
/// With `strict`, warnings count as errors.
pub fn load_project(
    root: &Path,
    caps: CapabilitiesFn,
    strict: bool,
) -> Result<Loaded, ConfigError> {
    let io = |sub: &str| {
        load::read_definitions(root, sub).map_err(|source| ConfigError::Io {
            path: root.join(sub),
            source,
        })
    };
    let load::Definitions {
        files: arena_files,
        refused: arenas_refused,
    } = io("arenas")?;
    let load::Definitions {
        files: gate_files,
        refused: gates_refused,
    } = io("gates")?;
    if arena_files.is_empty() && arenas_refused.is_empty() {
        return Err(ConfigError::NoArenas {
            root: root.to_path_buf(),
        });
    }
    let mut diags = diag::Diagnostics::default();
    for (file, problem) in arenas_refused.iter().chain(&gates_refused) {
        diags.error(
            file,
            def::Loc::START,
            format!("{} {problem}", file.display),
            "a definition is a UTF-8 YAML file; remove or rename what is not",
        );
    }
    let mut parsed = validate::Parsed {
        arenas: Vec::new(),
        gates: Vec::new(),
        unparsed_arenas: BTreeSet::new(),
        unparsed_gates: BTreeSet::new(),
    };
    for f in &arena_files {
        match load::parse_yaml::<def::ArenaFile>(f, &mut diags) {
            Some(a) => parsed.arenas.push((f, a)),
            None => {
                parsed.unparsed_arenas.insert(f.stem().to_string());
            }
        }
    }
    for f in &gate_files {
        match load::parse_gate(f, &mut diags) {
            Some(g) => parsed.gates.push((f, g)),
            None => {
                parsed.unparsed_gates.insert(f.stem().to_string());
            }
        }
    }
    let project = validate::check(&parsed, caps, &mut diags);
    let failed = diags.has_errors() || (strict && !diags.items.is_empty());
    if failed {
        return Err(ConfigError::Invalid {
            diagnostics: diags.items,
        });
    }
    Ok(Loaded {
        project,
        warnings: diags.items,
    })
}

/// A hash of everything that shapes a deployment's configuration: the
/// definitions, the templates and the Dockerfile template.
pub fn definitions_hash(root: &Path) -> std::io::Result<String> {
    use sha2::{Digest, Sha256};
    let mut files = Vec::new();
    for sub in ["arenas", "gates", "templates"] {
        match std::fs::read_dir(root.join(sub)) {
            Ok(entries) => {
                for e in entries {
                    let path = e?.path();
                    if path.is_file() {
                        files.push(path);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let dockerfile = root.join("Dockerfile.tmpl");
    if dockerfile.is_file() {
        files.push(dockerfile);
    }
    files.sort();
    let mut hasher = Sha256::new();
    for f in files {
        let rel = f.strip_prefix(root).unwrap_or(&f);
        hasher.update(rel.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(std::fs::read(&f)?);
        hasher.update([0]);
    }
    Ok(format!("sha256:{:x}", hasher.finalize()))
}
