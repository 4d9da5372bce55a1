//! `env`: the arena's variables are present (names only), secret references
//! resolve, URLs have the right shape, and `SHOPIFY_API_VERSION` is supported.

use chrono::{Datelike, NaiveDate};
use serde_json::json;

use super::{GateContext, Resolved, Verdict, resolve_reference};
use copilot_core::config::params::EnvParams;
use copilot_core::model::{Gate, SecretStore};

/// The release date of a Shopify API version `YYYY-MM` (quarterly months only).
fn api_version_released(v: &str) -> Option<NaiveDate> {
    let (y, m) = v.trim().split_once('-')?;
    let (y, m): (i32, u32) = (y.parse().ok()?, m.parse().ok()?);
    if y < 2000 || !matches!(m, 1 | 4 | 7 | 10) || v.trim().len() != 7 {
        return None;
    }
    NaiveDate::from_ymd_opt(y, m, 1)
}

pub async fn check(ctx: &GateContext<'_>, _gate: &Gate, p: EnvParams) -> Verdict {
    let a = ctx.arena;
    let mut failures: Vec<String> = Vec::new();
    let mut warnings: Vec<String> = Vec::new();
    let mut missing = Vec::new();
    for name in &a.env.required {
        if !a.env.values.contains_key(name) && !a.env.secrets.contains_key(name) {
            missing.push(name.clone());
        }
    }
    if !missing.is_empty() {
        failures.push(format!("required but not set: {}", missing.join(", ")));
    }

    // Secret references: env and file ones are checked here; provider stores at deploy.
    // A missing secret fails when the variable is required, and warns otherwise.
    let mut secrets = Vec::new();
    for (name, r) in &a.env.secrets {
        let problem = match r.store {
            SecretStore::Env => (!std::env::var(&r.key).is_ok_and(|v| !v.is_empty()))
                .then(|| format!("secret {name}: environment variable {} is not set", r.key)),
            SecretStore::File => (!std::path::Path::new(&r.key).is_file())
                .then(|| format!("secret {name}: file {} does not exist", r.key)),
            _ => None,
        };
        let state = match (&problem, r.store) {
            (Some(_), _) => "missing",
            (None, SecretStore::Env | SecretStore::File) => "resolved",
            (None, _) => "provider",
        };
        if let Some(problem) = problem {
            if a.env.required.contains(name) {
                failures.push(problem);
            } else {
                warnings.push(problem);
            }
        }
        secrets.push(json!({ "name": name, "reference": r.to_string(), "state": state }));
    }

    // URL shapes, for values and secrets we can read.
    let mut urls = Vec::new();
    let mut shape =
        |name: &str, ok: fn(&str) -> bool, expected: &str, failures: &mut Vec<String>| {
            if !a.env.values.contains_key(name) && !a.env.secrets.contains_key(name) {
                return;
            }
            match resolve_reference(a, &format!("env:{name}")) {
                Resolved::Value(v) => {
                    let good = ok(&v);
                    if !good {
                        failures.push(format!("{name} is not a {expected} URL"));
                    }
                    urls.push(json!({ "name": name, "expected": expected, "ok": good }));
                }
                Resolved::Unresolvable(why) => urls
                    .push(json!({ "name": name, "expected": expected, "ok": null, "note": why })),
            }
        };
    for name in &p.require_tls {
        shape(
            name,
            |v| v.starts_with("rediss://"),
            "rediss://",
            &mut failures,
        );
    }
    for name in &p.postgres_urls {
        shape(
            name,
            |v| {
                v.starts_with("postgres://")
                    || v.starts_with("postgresql://")
                    || v.starts_with("sqlite:")
            },
            "postgres:// (or sqlite: for local arenas)",
            &mut failures,
        );
    }

    // Shopify's support window: twelve months from release.
    let mut api = json!(null);
    if let Some(v) = a.env.values.get("SHOPIFY_API_VERSION") {
        match api_version_released(v) {
            None => failures.push(format!(
                "SHOPIFY_API_VERSION `{v}` is not YYYY-01, -04, -07 or -10"
            )),
            Some(released) => {
                let today = ctx.now.date_naive();
                let age = today.signed_duration_since(released);
                let max = p.api_version_max_age.as_chrono();
                let warn = p.api_version_warn_after.as_chrono();
                if released > today {
                    failures.push(format!("SHOPIFY_API_VERSION {v} is not released yet"));
                } else if age > max {
                    failures.push(format!(
                        "SHOPIFY_API_VERSION {v} is {} days old: out of Shopify's support window",
                        age.num_days()
                    ));
                } else if age > warn {
                    warnings.push(format!(
                        "SHOPIFY_API_VERSION {v} is {} days old; upgrade before {}",
                        age.num_days(),
                        NaiveDate::from_ymd_opt(released.year() + 1, released.month(), 1)
                            .unwrap_or(released)
                    ));
                }
                api = json!({ "version": v, "released": released, "age_days": age.num_days(), "warn_after_days": warn.num_days(), "max_age_days": max.num_days() });
            }
        }
    }

    let evidence = json!({
        "source": format!("arenas/{}.yaml and the process environment (names only)", a.name),
        "required": a.env.required,
        "missing": missing,
        "secrets": secrets,
        "urls": urls,
        "shopify_api_version": api,
    });
    if !failures.is_empty() {
        Verdict::fail(failures.join("; "), evidence)
    } else if !warnings.is_empty() {
        Verdict::warn(warnings.join("; "), evidence)
    } else {
        Verdict::pass(
            format!(
                "{} required variables present, {} secret references",
                a.env.required.len(),
                a.env.secrets.len()
            ),
            evidence,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions() {
        assert_eq!(
            api_version_released("2026-10"),
            NaiveDate::from_ymd_opt(2026, 10, 1)
        );
        assert_eq!(api_version_released("2026-11"), None);
        assert_eq!(api_version_released("26-10"), None);
        assert_eq!(api_version_released("2026-1"), None);
    }
}
