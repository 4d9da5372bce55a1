//! Resolving the references gate parameters use (`env:DATABASE_URL`,
//! `file:/run/secrets/x`) against the arena's environment matrix and, for
//! `env:` secrets, the process environment. Resolved values are used, never
//! reported: evidence carries only names and redacted URLs.

use copilot_core::model::{Arena, SecretStore};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolved {
    Value(String),
    /// Why it cannot be read from here.
    Unresolvable(String),
}

fn from_env(name: &str) -> Resolved {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => Resolved::Value(v),
        _ => Resolved::Unresolvable(format!("environment variable {name} is not set")),
    }
}

fn from_file(path: &str) -> Resolved {
    match std::fs::read_to_string(path) {
        Ok(v) => Resolved::Value(v.trim().to_string()),
        Err(e) => Resolved::Unresolvable(format!("cannot read {path}: {e}")),
    }
}

/// Resolve `text` for `arena`: a reference, or a literal value.
pub fn resolve_reference(arena: &Arena, text: &str) -> Resolved {
    if let Some(name) = text.strip_prefix("env:") {
        if let Some(v) = arena.env.values.get(name) {
            return Resolved::Value(v.clone());
        }
        if let Some(r) = arena.env.secrets.get(name) {
            return match r.store {
                SecretStore::Env => from_env(&r.key),
                SecretStore::File => from_file(&r.key),
                other => Resolved::Unresolvable(format!(
                    "{name} is kept in {other} ({r}); copilot cannot read it from here"
                )),
            };
        }
        return from_env(name);
    }
    if let Some(path) = text.strip_prefix("file:") {
        return from_file(path);
    }
    Resolved::Value(text.to_string())
}
