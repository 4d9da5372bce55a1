//! The Google Search Status Dashboard's `incidents.json`.
//!
//! An array of incidents: `id`, `number`, `begin`, `created`, `end` (null,
//! empty or missing while ongoing), `modified`, `external_desc`, `updates[]`,
//! `most_recent_update`, `status_impact` (SERVICE_INFORMATION |
//! SERVICE_DISRUPTION | SERVICE_OUTAGE), `severity` (low | medium | high),
//! `service_key`, `service_name` (Ranking, Crawling, Indexing, Serving, ...),
//! `affected_products[]` and `uri`.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{
    Format, IngestError, PARSER_VERSION, Parsed, Rejected, Source, canonical_hash, classify,
    parse_time,
};
use crate::records::{Severity, UpdateKind, UpdateRecord, UpdateStatus};

const BASE: &str = "https://status.search.google.com/";

fn text<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

pub fn parse(
    source: &Source,
    bytes: &[u8],
    fetched_at: DateTime<Utc>,
) -> Result<Parsed, IngestError> {
    let doc: Value = serde_json::from_slice(bytes).map_err(|e| IngestError::Parse {
        format: Format::GoogleStatus,
        message: e.to_string(),
    })?;
    let Some(incidents) = doc.as_array() else {
        return Err(IngestError::Parse {
            format: Format::GoogleStatus,
            message: "expected an array of incidents".into(),
        });
    };
    let mut out = Parsed::default();
    for (i, inc) in incidents.iter().enumerate() {
        let mut reject = |m: &str| {
            out.rejected.push(Rejected {
                item: format!("/{i}"),
                message: m.to_string(),
            })
        };
        let native_id = match inc.get("id") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                reject("no `id`");
                continue;
            }
        };
        let title = text(inc, "external_desc").trim().to_string();
        if title.is_empty() {
            reject("no `external_desc`");
            continue;
        }
        let begin = parse_time(text(inc, "begin"));
        let created = parse_time(text(inc, "created")).or(begin);
        let modified = parse_time(text(inc, "modified")).or(created);
        // `end` may be null, empty or missing for an ongoing incident.
        let end = parse_time(text(inc, "end"));
        let (Some(published), Some(updated)) = (created, modified) else {
            reject("no `created` or `begin` timestamp");
            continue;
        };
        let summary = inc
            .get("most_recent_update")
            .map(|u| text(u, "text"))
            .filter(|t| !t.is_empty())
            .map(str::to_string);
        let service = text(inc, "service_name").to_string();
        let mut surfaces: Vec<String> = inc
            .get("affected_products")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.get("title").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if !service.is_empty() && !surfaces.contains(&service) {
            surfaces.insert(0, service.clone());
        }
        let impact = text(inc, "status_impact");
        let kind = match classify(
            source.platform,
            &title,
            summary.as_deref().unwrap_or(""),
            &[],
        ) {
            // Status dashboards report incidents; a ranking service with an
            // unrecognised title is still a ranking update.
            UpdateKind::FeatureChange | UpdateKind::PolicyChange if service == "Ranking" => {
                UpdateKind::RankingUpdateOther
            }
            UpdateKind::FeatureChange | UpdateKind::PolicyChange
                if impact != "SERVICE_INFORMATION" =>
            {
                if source.platform == crate::records::Platform::GoogleSearch {
                    UpdateKind::SearchIncident
                } else {
                    UpdateKind::PlatformIncident
                }
            }
            k => k,
        };
        let severity = match (text(inc, "severity"), impact) {
            (_, "SERVICE_OUTAGE") => Severity::Critical,
            ("high", _) => Severity::High,
            ("medium", _) => Severity::Medium,
            ("low", _) => Severity::Low,
            _ => Severity::Info,
        };
        let status = match (end, impact) {
            (Some(_), _) => UpdateStatus::Resolved,
            (None, _) => UpdateStatus::Ongoing,
        };
        let uri = text(inc, "uri");
        out.records.push(UpdateRecord {
            id: format!("{}:{native_id}", source.name),
            source: source.name.clone(),
            platform: source.platform,
            kind,
            title,
            url: (!uri.is_empty()).then(|| {
                if uri.starts_with("http") {
                    uri.to_string()
                } else {
                    format!("{BASE}{uri}")
                }
            }),
            summary,
            published_at: published,
            updated_at: updated.max(published),
            started_at: begin.or(Some(published)),
            ended_at: end,
            status,
            severity,
            surfaces,
            raw_hash: canonical_hash(inc),
            revision: 1,
            fetched_at,
            parser_version: PARSER_VERSION.into(),
        });
    }
    Ok(out)
}
