//! `ingestion`: the service's ingestors produce valid normalized records.
//!
//! With `sources`, the gate runs the ingestors on them; without, it reads the
//! latest records the service stored. Every record is validated against the
//! published JSON Schema.

use serde_json::{Value, json};

use super::{GateContext, Resolved, Verdict, resolve_reference};
use copilot_core::config::params::{IngestionParams, Subject};
use copilot_core::model::Gate;
use copilot_db::{Pool, redact_url};
use copilot_records::ingest::{self, Format, Source};
use copilot_records::records::{self, Platform};

pub async fn check(ctx: &GateContext<'_>, _gate: &Gate, p: IngestionParams) -> Verdict {
    let schema_file = ctx.project_path(&p.schema);
    let schema: Value = match std::fs::read_to_string(&schema_file)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(s) => s,
        Err(e) => {
            return Verdict::fail(format!("schema {}: {e}", schema_file.display()), json!({}));
        }
    };
    let validator = match jsonschema::validator_for(&schema) {
        Ok(v) => v,
        Err(e) => {
            return Verdict::fail(
                format!("{} is not a JSON Schema: {e}", schema_file.display()),
                json!({}),
            );
        }
    };

    let mut documents: Vec<(String, Value)> = Vec::new();
    let mut rejected: Vec<Value> = Vec::new();
    let mut sources = Vec::new();
    if p.sources.is_empty() {
        let arena = ctx.subject(p.subject == Subject::Source);
        let url = match resolve_reference(arena, &p.database) {
            Resolved::Value(v) => v,
            Resolved::Unresolvable(why) => {
                return Verdict::unreachable(
                    format!("the service database of {}: {why}", arena.name),
                    json!({ "database": p.database }),
                );
            }
        };
        let pool = match Pool::connect(&url, 1).await {
            Ok(p) => p,
            Err(e) => {
                return Verdict::unreachable(
                    format!("cannot open {}: {e}", redact_url(&url)),
                    json!({ "database": redact_url(&url) }),
                );
            }
        };
        let latest = records::latest(&pool, i64::from(p.latest)).await;
        pool.close().await;
        match latest {
            Ok(recs) => documents.extend(recs.iter().map(|r| {
                (
                    r.id.clone(),
                    serde_json::to_value(r).expect("record serializes"),
                )
            })),
            Err(e) => {
                return Verdict::unreachable(
                    format!("cannot read records from {}: {e}", redact_url(&url)),
                    json!({}),
                );
            }
        }
        sources
            .push(json!({ "database": redact_url(&url), "arena": arena.name, "latest": p.latest }));
    } else {
        for s in &p.sources {
            let format = match s.format.as_deref().map(Format::parse) {
                Some(None) => {
                    return Verdict::fail(
                        format!("source {}: unknown format", s.source),
                        json!({}),
                    );
                }
                Some(f) => f,
                None => None,
            };
            let platform = match s.platform.as_deref().map(Platform::parse) {
                Some(None) => {
                    return Verdict::fail(
                        format!("source {}: unknown platform", s.source),
                        json!({}),
                    );
                }
                Some(pl) => pl,
                None => None,
            };
            let source = match Source::resolve(&s.source, format, platform) {
                Ok(src) => src,
                Err(e) => return Verdict::fail(e.to_string(), json!({})),
            };
            let location =
                if s.location.starts_with("http://") || s.location.starts_with("https://") {
                    s.location.clone()
                } else {
                    ctx.project_path(&s.location).to_string_lossy().into_owned()
                };
            let bytes = match ingest::fetch(&location).await {
                Ok(b) => b,
                Err(e) => {
                    return Verdict::unreachable(
                        e.to_string(),
                        json!({ "source": s.source, "location": s.location }),
                    );
                }
            };
            match ingest::parse(&source, &bytes, ctx.now) {
                Ok(parsed) => {
                    sources.push(json!({ "source": s.source, "location": s.location, "records": parsed.records.len(), "rejected": parsed.rejected.len() }));
                    documents.extend(parsed.records.iter().map(|r| {
                        (
                            r.id.clone(),
                            serde_json::to_value(r).expect("record serializes"),
                        )
                    }));
                    rejected.extend(parsed.rejected.iter().map(
                        |r| json!({ "source": s.source, "item": r.item, "error": r.message }),
                    ));
                }
                Err(e) => {
                    return Verdict::fail(
                        format!("{}: {e}", s.source),
                        json!({ "source": s.source, "location": s.location }),
                    );
                }
            }
        }
    }

    let mut invalid = Vec::new();
    for (id, doc) in &documents {
        let errors: Vec<Value> = validator
            .iter_errors(doc)
            .take(3)
            .map(|e| json!({ "pointer": e.instance_path().to_string(), "error": e.to_string() }))
            .collect();
        if !errors.is_empty() {
            invalid.push(json!({ "id": id, "errors": errors }));
        }
    }
    let total = documents.len() + rejected.len();
    let bad = invalid.len() + rejected.len();
    let ratio = if total == 0 {
        0.0
    } else {
        bad as f64 / total as f64
    };
    let evidence = json!({
        "schema": p.schema,
        "sources": sources,
        "records": total,
        "valid": documents.len() - invalid.len(),
        "invalid": bad,
        "invalid_ratio": ratio,
        "max_invalid_ratio": p.max_invalid_ratio,
        "first_errors": invalid.iter().chain(rejected.iter()).take(10).collect::<Vec<_>>(),
    });
    if (total as u64) < p.min_records {
        Verdict::inconclusive(
            format!("{total} records, need at least {}", p.min_records),
            evidence,
        )
    } else if ratio > p.max_invalid_ratio {
        Verdict::fail(
            format!(
                "{bad} of {total} records invalid ({:.1}% > {:.1}%)",
                ratio * 100.0,
                p.max_invalid_ratio * 100.0
            ),
            evidence,
        )
    } else {
        Verdict::pass(
            format!("{} of {total} records valid", total - bad),
            evidence,
        )
    }
}
