//! `backup`: a database backup newer than `max_age` exists.

use serde_json::json;

use super::{GateContext, Verdict};
use copilot_core::config::params::BackupParams;
use copilot_core::model::Gate;

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
            judge(
                ctx,
                &p,
                &name,
                modified,
                json!({ "source": "dump-dir", "location": dir }),
            )
        }
        "rds-snapshots" => rds_snapshots(ctx, &p).await,
        "provider" => Verdict::unreachable(
            format!(
                "listing {} snapshots needs the {} provider, which this build cannot query yet",
                ctx.arena.provider.kind, ctx.arena.provider.kind
            ),
            json!({ "source": "provider", "provider": ctx.arena.provider.kind }),
        ),
        other => Verdict::fail(
            format!("unknown backup source `{other}` (dump-dir, rds-snapshots or provider)"),
            json!({}),
        ),
    }
}

/// The age verdict on the newest backup, `name` taken at `taken`.
fn judge(
    ctx: &GateContext<'_>,
    p: &BackupParams,
    name: &str,
    taken: chrono::DateTime<chrono::Utc>,
    mut evidence: serde_json::Value,
) -> Verdict {
    let age = ctx.now - taken;
    evidence["newest"] = json!(name);
    evidence["taken"] = json!(taken);
    evidence["age_minutes"] = json!(age.num_minutes());
    evidence["max_age"] = json!(p.max_age.to_string());
    let old = age_like(age, &p.max_age);
    if age <= p.max_age.as_chrono() {
        Verdict::pass(format!("newest backup {name} is {old} old"), evidence)
    } else {
        Verdict::fail(
            format!("newest backup {name} is {old} old, more than {}", p.max_age),
            evidence,
        )
    }
}

/// `age` said in the smallest unit `like` is written in (`max_age: 30s`
/// gives `42s`, `24h` gives `48h`), rounded down; under one unit, `under 1h`.
fn age_like(age: chrono::Duration, like: &copilot_core::config::duration::Duration) -> String {
    let text = like.to_string();
    let (unit, unit_ms): (&str, i64) = if text.ends_with("ms") {
        ("ms", 1)
    } else {
        match text.chars().last() {
            Some('s') => ("s", 1_000),
            Some('m') => ("m", 60_000),
            Some('h') => ("h", 3_600_000),
            _ => ("d", 86_400_000),
        }
    };
    match age.num_milliseconds().max(0) / unit_ms {
        0 => format!("under 1{unit}"),
        n => format!("{n}{unit}"),
    }
}

#[cfg(not(feature = "aws"))]
async fn rds_snapshots(_ctx: &GateContext<'_>, _p: &BackupParams) -> Verdict {
    Verdict::unreachable(
        "reading RDS snapshots needs the AWS clients, left out of this copilot (build it with `--features ecs`)",
        json!({ "source": "rds-snapshots" }),
    )
}

/// The newest available snapshot (automated or manual) of the DB instance
/// or cluster, from RDS.
#[cfg(feature = "aws")]
async fn rds_snapshots(ctx: &GateContext<'_>, p: &BackupParams) -> Verdict {
    let region = p.region.clone().or_else(|| {
        ctx.arena
            .provider
            .settings
            .get::<copilot_provider_ecs::EcsSettings>()
            .and_then(|s| s.region.clone())
    });
    let (kind, id) = match (&p.db_instance, &p.db_cluster) {
        (Some(i), None) => ("instance", i.clone()),
        (None, Some(c)) => ("cluster", c.clone()),
        _ => {
            return Verdict::fail(
                "`source: rds-snapshots` needs one of `db_instance` or `db_cluster`",
                json!({}),
            );
        }
    };
    let evidence = json!({ "source": "rds-snapshots", "region": region, kind: id });
    let conf = match copilot_aws::config(region.as_deref()).await {
        Ok(c) => c,
        Err(e) => return Verdict::unreachable(e.to_string(), evidence),
    };
    let rds = aws_sdk_rds::Client::new(&conf);
    // (identifier, taken) of every available snapshot.
    let mut snapshots: Vec<(String, aws_sdk_rds::primitives::DateTime)> = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = if kind == "instance" {
            rds.describe_db_snapshots()
                .db_instance_identifier(&id)
                .set_marker(marker.clone())
                .send()
                .await
                .map(|o| {
                    let found: Vec<_> = o
                        .db_snapshots()
                        .iter()
                        .filter(|s| s.status() == Some("available"))
                        .filter_map(|s| {
                            Some((
                                s.db_snapshot_identifier()?.to_string(),
                                *s.snapshot_create_time()?,
                            ))
                        })
                        .collect();
                    (found, o.marker().map(str::to_string))
                })
                .map_err(|e| {
                    copilot_aws::error(format!("list the snapshots of DB instance {id}"), e)
                })
        } else {
            rds.describe_db_cluster_snapshots()
                .db_cluster_identifier(&id)
                .set_marker(marker.clone())
                .send()
                .await
                .map(|o| {
                    let found: Vec<_> = o
                        .db_cluster_snapshots()
                        .iter()
                        .filter(|s| s.status() == Some("available"))
                        .filter_map(|s| {
                            Some((
                                s.db_cluster_snapshot_identifier()?.to_string(),
                                *s.snapshot_create_time()?,
                            ))
                        })
                        .collect();
                    (found, o.marker().map(str::to_string))
                })
                .map_err(|e| {
                    copilot_aws::error(format!("list the snapshots of DB cluster {id}"), e)
                })
        };
        match page {
            Ok((found, next)) => {
                snapshots.extend(found);
                match next {
                    Some(m) => marker = Some(m),
                    None => break,
                }
            }
            Err(e) if e.kind == copilot_core::provider::ErrorKind::NotFound => {
                return Verdict::fail(
                    format!("RDS has no DB {kind} `{id}`: {}", e.message),
                    evidence,
                );
            }
            Err(e) => return Verdict::unreachable(e.to_string(), evidence),
        }
    }
    let newest = snapshots
        .into_iter()
        .filter_map(|(name, t)| {
            chrono::DateTime::from_timestamp(t.secs(), t.subsec_nanos()).map(|t| (t, name))
        })
        .max();
    match newest {
        Some((taken, name)) => judge(ctx, p, &name, taken, evidence),
        None => Verdict::fail(
            format!("DB {kind} `{id}` has no available snapshot"),
            evidence,
        ),
    }
}

#[cfg(test)]
mod tests {
    use copilot_core::config::duration::Duration;

    #[test]
    fn ages_are_said_in_the_unit_the_limit_was_written_in() {
        let secs = |s| chrono::Duration::seconds(s);
        for (age, limit, said) in [
            (secs(42), "30s", "42s"),
            (secs(3 * 3600 + 59), "26h", "3h"),
            (secs(48 * 3600), "24h", "48h"),
            (secs(20), "26h", "under 1h"),
            (secs(90 * 60), "2h30m", "90m"),
            (secs(3 * 86_400 + 5), "7d", "3d"),
        ] {
            let limit: Duration = limit.parse().unwrap();
            assert_eq!(super::age_like(age, &limit), said, "{limit}");
        }
    }
}
