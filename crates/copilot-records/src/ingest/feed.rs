//! Atom and RSS 2.0 feeds.
//!
//! Atom: one entry per update. Status dashboards give entries ids of the
//! form `{incident}.{update}`; entries sharing an incident become one record
//! (started at the first entry, updated at the last, resolved when the last
//! says so). RSS: one record per item (blogs, changelogs).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use quick_xml::Reader;
use quick_xml::events::Event;
use serde_json::json;

use super::{
    Format, IngestError, PARSER_VERSION, Parsed, Rejected, Source, canonical_hash, classify,
    parse_time,
};
use crate::records::{Severity, UpdateKind, UpdateRecord, UpdateStatus};

/// A parsed XML element: enough of a DOM for feeds.
#[derive(Debug, Default)]
struct Element {
    name: String,
    attrs: BTreeMap<String, String>,
    text: String,
    children: Vec<Element>,
}

impl Element {
    fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }
    fn children<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Element> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }
    fn text_of(&self, name: &str) -> String {
        self.child(name)
            .map(|c| c.text.trim().to_string())
            .unwrap_or_default()
    }
    fn to_json(&self) -> serde_json::Value {
        json!({
            "name": self.name,
            "attrs": self.attrs,
            "text": self.text.trim(),
            "children": self.children.iter().map(Element::to_json).collect::<Vec<_>>(),
        })
    }
}

fn local_name(raw: &[u8]) -> String {
    let s = String::from_utf8_lossy(raw);
    match s.rsplit_once(':') {
        Some((_, local)) => local.to_string(),
        None => s.into_owned(),
    }
}

/// An element with its name and attributes, namespaces dropped.
fn element(e: &quick_xml::events::BytesStart<'_>) -> Element {
    let mut el = Element {
        name: local_name(e.name().as_ref()),
        ..Element::default()
    };
    for a in e.attributes().flatten() {
        let v = a
            .unescape_value()
            .map(|v| v.into_owned())
            .unwrap_or_default();
        el.attrs.insert(local_name(a.key.as_ref()), v);
    }
    el
}

fn parse_xml(bytes: &[u8], format: Format) -> Result<Element, IngestError> {
    let err = |m: String| IngestError::Parse { format, message: m };
    let text = std::str::from_utf8(bytes).map_err(|e| err(e.to_string()))?;
    let mut reader = Reader::from_str(text);
    let mut stack: Vec<Element> = vec![Element::default()];
    loop {
        match reader.read_event() {
            Ok(Event::Start(e)) => stack.push(element(&e)),
            Ok(Event::Empty(e)) => stack.last_mut().expect("root").children.push(element(&e)),
            Ok(Event::End(_)) => {
                let el = stack.pop().expect("balanced");
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => return Err(err("unbalanced end tag".into())),
                }
            }
            Ok(Event::Text(t)) => {
                let s = t.decode().map_err(|e| err(e.to_string()))?;
                stack.last_mut().expect("root").text.push_str(&s);
            }
            Ok(Event::CData(t)) => {
                let s = t.decode().map_err(|e| err(e.to_string()))?;
                stack.last_mut().expect("root").text.push_str(&s);
            }
            Ok(Event::GeneralRef(r)) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => {
                        let name = r.decode().map_err(|e| err(e.to_string()))?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .map(str::to_string)
                            .unwrap_or_default()
                    }
                };
                stack.last_mut().expect("root").text.push_str(&resolved);
            }
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => return Err(err(format!("at byte {}: {e}", reader.error_position()))),
        }
    }
    if stack.len() != 1 {
        return Err(err("unexpected end of document".into()));
    }
    stack
        .pop()
        .expect("root")
        .children
        .into_iter()
        .next()
        .ok_or_else(|| err("empty document".into()))
}

/// Words in the newest update of an incident that mean it is over.
fn says_resolved(text: &str) -> bool {
    let t = text.to_lowercase();
    [
        "resolved",
        "has ended",
        "is complete",
        "completed",
        "rollout was complete",
        "fixed",
        "no longer",
    ]
    .iter()
    .any(|w| t.contains(w))
}

fn strip_tags(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    decode_entities(&out.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Decode the HTML entities left in feed text once its markup is stripped.
fn decode_entities(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let decoded = tail.find(';').filter(|end| *end <= 10).and_then(|end| {
            let name = &tail[1..end];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some(' '),
                _ => name
                    .strip_prefix("#x")
                    .or_else(|| name.strip_prefix("#X"))
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| name.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, end))
        });
        match decoded {
            Some((c, end)) => {
                out.push(c);
                rest = &tail[end + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

fn severity_for(kind: UpdateKind, ongoing: bool) -> Severity {
    match (kind, ongoing) {
        (UpdateKind::CoreUpdate | UpdateKind::SpamUpdate, true) => Severity::High,
        (UpdateKind::SearchIncident | UpdateKind::PlatformIncident, true) => Severity::High,
        (UpdateKind::ApiDeprecation, _) => Severity::Medium,
        (UpdateKind::CoreUpdate | UpdateKind::SpamUpdate | UpdateKind::RankingUpdateOther, _) => {
            Severity::Medium
        }
        (UpdateKind::SearchIncident | UpdateKind::PlatformIncident, false) => Severity::Low,
        _ => Severity::Info,
    }
}

pub fn parse_atom(
    source: &Source,
    bytes: &[u8],
    fetched_at: DateTime<Utc>,
) -> Result<Parsed, IngestError> {
    let root = parse_xml(bytes, Format::Atom)?;
    if root.name != "feed" {
        return Err(IngestError::Parse {
            format: Format::Atom,
            message: format!("root element is <{}>, not <feed>", root.name),
        });
    }
    // Group entries by incident: `{incident}.{update}` -> incident.
    let mut out = Parsed::default();
    let mut groups: BTreeMap<String, Vec<&Element>> = BTreeMap::new();
    for (i, entry) in root.children("entry").enumerate() {
        let id = entry.text_of("id");
        if id.is_empty() {
            out.rejected.push(Rejected {
                item: format!("entry {}", i + 1),
                message: "no <id>".into(),
            });
            continue;
        }
        let tail = id.rsplit(['/', ':']).next().unwrap_or(&id);
        let incident = match tail.split_once('.') {
            Some((inc, upd)) if !inc.is_empty() && upd.chars().all(|c| c.is_ascii_digit()) => {
                inc.to_string()
            }
            _ => tail.to_string(),
        };
        groups.entry(incident).or_default().push(entry);
    }
    for (incident, mut entries) in groups {
        let time = |e: &Element| {
            parse_time(&e.text_of("updated")).or_else(|| parse_time(&e.text_of("published")))
        };
        entries.sort_by_key(|e| time(e));
        let first = entries[0];
        let last = entries[entries.len() - 1];
        let (Some(started), Some(updated)) = (time(first), time(last)) else {
            out.rejected.push(Rejected {
                item: incident.clone(),
                message: "no <updated> or <published> time".into(),
            });
            continue;
        };
        let published = parse_time(&first.text_of("published")).unwrap_or(started);
        // The incident's title is its first entry's; the summary its latest.
        let title = strip_tags(&first.text_of("title"));
        let latest_text = strip_tags(&{
            let s = last.text_of("summary");
            if s.is_empty() {
                last.text_of("content")
            } else {
                s
            }
        });
        let categories: Vec<String> = entries
            .iter()
            .flat_map(|e| {
                e.children("category")
                    .filter_map(|c| c.attrs.get("term").cloned())
            })
            .collect();
        let link = last
            .children("link")
            .find(|l| l.attrs.get("rel").is_none_or(|r| r == "alternate"))
            .and_then(|l| l.attrs.get("href").cloned());
        let kind = classify(source.platform, &title, &latest_text, &categories);
        let is_event = matches!(
            kind,
            UpdateKind::CoreUpdate
                | UpdateKind::SpamUpdate
                | UpdateKind::RankingUpdateOther
                | UpdateKind::SearchIncident
                | UpdateKind::PlatformIncident
        );
        let resolved =
            says_resolved(&latest_text) || says_resolved(&strip_tags(&last.text_of("title")));
        let (status, ended) = match (is_event, resolved) {
            (true, true) => (UpdateStatus::Resolved, Some(updated)),
            (true, false) => (UpdateStatus::Ongoing, None),
            (false, _) => (UpdateStatus::Informational, None),
        };
        let raw = serde_json::Value::Array(entries.iter().map(|e| e.to_json()).collect());
        out.records.push(UpdateRecord {
            id: format!("{}:{incident}", source.name),
            source: source.name.clone(),
            platform: source.platform,
            kind,
            title: if title.is_empty() {
                incident.clone()
            } else {
                title
            },
            url: link,
            summary: (!latest_text.is_empty()).then_some(latest_text),
            published_at: published,
            updated_at: updated,
            started_at: is_event.then_some(started),
            ended_at: ended,
            status,
            severity: severity_for(kind, ended.is_none() && is_event),
            surfaces: categories,
            raw_hash: canonical_hash(&raw),
            revision: 1,
            fetched_at,
            parser_version: PARSER_VERSION.into(),
        });
    }
    Ok(out)
}

pub fn parse_rss(
    source: &Source,
    bytes: &[u8],
    fetched_at: DateTime<Utc>,
) -> Result<Parsed, IngestError> {
    let root = parse_xml(bytes, Format::Rss)?;
    let Some(channel) = (root.name == "rss")
        .then(|| root.child("channel"))
        .flatten()
    else {
        return Err(IngestError::Parse {
            format: Format::Rss,
            message: format!(
                "root element is <{}>, not <rss> with a <channel>",
                root.name
            ),
        });
    };
    let mut out = Parsed::default();
    for (i, item) in channel.children("item").enumerate() {
        let title = strip_tags(&item.text_of("title"));
        let link = item.text_of("link");
        let guid = item.text_of("guid");
        let native = if !guid.is_empty() { guid } else { link.clone() };
        if native.is_empty() || title.is_empty() {
            out.rejected.push(Rejected {
                item: format!("item {}", i + 1),
                message: "no <guid>/<link> or no <title>".into(),
            });
            continue;
        }
        let Some(published) = parse_time(&item.text_of("pubDate")) else {
            out.rejected.push(Rejected {
                item: format!("item {} ({title})", i + 1),
                message: "no valid <pubDate>".into(),
            });
            continue;
        };
        let description = strip_tags(&item.text_of("description"));
        let categories: Vec<String> = item
            .children("category")
            .map(|c| c.text.trim().to_string())
            .collect();
        let kind = classify(source.platform, &title, &description, &categories);
        let is_event = matches!(
            kind,
            UpdateKind::SearchIncident | UpdateKind::PlatformIncident
        );
        let status = match kind {
            UpdateKind::ApiDeprecation => UpdateStatus::Scheduled,
            _ if is_event && !says_resolved(&description) => UpdateStatus::Ongoing,
            _ if is_event => UpdateStatus::Resolved,
            _ => UpdateStatus::Informational,
        };
        // A short native id: the last path segment of a URL guid.
        let short = native
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(&native)
            .to_string();
        out.records.push(UpdateRecord {
            id: format!("{}:{short}", source.name),
            source: source.name.clone(),
            platform: source.platform,
            kind,
            title,
            url: (!link.is_empty()).then_some(link),
            summary: (!description.is_empty()).then_some(description),
            published_at: published,
            updated_at: published,
            started_at: is_event.then_some(published),
            ended_at: (status == UpdateStatus::Resolved).then_some(published),
            status,
            severity: severity_for(kind, status == UpdateStatus::Ongoing),
            surfaces: categories,
            raw_hash: canonical_hash(&item.to_json()),
            revision: 1,
            fetched_at,
            parser_version: PARSER_VERSION.into(),
        });
    }
    Ok(out)
}
