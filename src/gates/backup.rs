//! `backup`: a database backup newer than `max_age` exists.

use serde_json::json;

use super::{GateContext, Verdict};
use crate::config::params::BackupParams;
use crate::model::Gate;

pub async fn check(ctx: &GateContext<'_>, _gate: &Gate, p: BackupParams) -> Verdict {
    match p.source.as_str() {
        "dump-dir" => {
            let Some(location) = &p.location else {
                return Verdict::fail("`source: dump-dir` needs `location`", json!({}));
            };
            let dir = ctx.project_path(location);
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) => {
                    return Verdict::unreachable(
                        format!("cannot read {}: {e}", dir.display()),
                        json!({ "location": dir }),
                    );
                }
            };
            let newest = entries
                .filter_map(Result::ok)
                .filter(|e| e.path().is_file())
                .filter_map(|e| {
                    Some((
                        e.metadata().ok()?.modified().ok()?,
                        e.file_name().to_string_lossy().into_owned(),
                    ))
                })
                .max();
            let Some((modified, name)) = newest else {
                return Verdict::fail(
                    format!("no backup in {}", dir.display()),
                    json!({ "source": "dump-dir", "location": dir }),
                );
            };
            let modified: chrono::DateTime<chrono::Utc> = modified.into();
            let age = ctx.now - modified;
            let evidence = json!({ "source": "dump-dir", "location": dir, "newest": name, "modified": modified, "age_minutes": age.num_minutes(), "max_age": p.max_age.to_string() });
            if age <= p.max_age.as_chrono() {
                Verdict::pass(
                    format!("newest backup {name} is {}h old", age.num_hours()),
                    evidence,
                )
            } else {
                Verdict::fail(
                    format!(
                        "newest backup {name} is {}h old, more than {}",
                        age.num_hours(),
                        p.max_age
                    ),
                    evidence,
                )
            }
        }
        "provider" => Verdict::unreachable(
            format!(
                "listing {} snapshots needs the {} provider, which this build cannot query yet",
                ctx.arena.provider.kind, ctx.arena.provider.kind
            ),
            json!({ "source": "provider", "provider": ctx.arena.provider.kind }),
        ),
        other => Verdict::fail(
            format!("unknown backup source `{other}` (dump-dir or provider)"),
            json!({}),
        ),
    }
}
