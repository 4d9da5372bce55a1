//! Gate reports for people and machines: a terminal table, JUnit XML that
//! GitHub, GitLab and Jenkins render, and GitHub Actions annotations with a
//! Markdown step summary.

use std::borrow::Cow;
use std::fmt::Write as _;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesText, Event};

use super::GateResult;
use super::runner::RunReport;
use copilot_core::model::Outcome;
use copilot_core::table::Table;

/// A table: one row per gate.
pub fn table(report: &RunReport) -> String {
    let mut t = Table::new(["PHASE", "GATE", "KIND", "OUTCOME", "TIME", "SUMMARY"]);
    for r in report.results() {
        t.row([
            r.phase.to_string(),
            r.gate.clone(),
            r.kind.to_string(),
            r.outcome.to_string().to_uppercase(),
            format!("{:.1}s", r.duration_ms as f64 / 1000.0),
            r.summary.clone(),
        ]);
    }
    t.render()
}

/// Text as XML 1.0 can carry it: characters it does not allow (most control
/// characters, even escaped) become U+FFFD. Escaping is the writer's.
fn xml_text(s: &str) -> Cow<'_, str> {
    let allowed = |c: char| {
        matches!(c, '\t' | '\n' | '\r')
            || ('\u{20}'..='\u{D7FF}').contains(&c)
            || ('\u{E000}'..='\u{FFFD}').contains(&c)
            || c >= '\u{10000}'
    };
    if s.chars().all(allowed) {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(
            s.chars()
                .map(|c| if allowed(c) { c } else { '\u{FFFD}' })
                .collect(),
        )
    }
}

/// JUnit XML: one test suite per phase, one test case per gate (the
/// Jenkins/xunit `junit-10.xsd` layout that GitHub, GitLab and Jenkins read).
/// A failed gate is a `<failure>`; one that could not decide (inconclusive,
/// or a dependency out of reach) an `<error>`; a skipped one `<skipped>`.
pub fn junit(report: &RunReport) -> String {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 2);
    write_junit(&mut w, report).expect("writing XML to memory cannot fail");
    let mut out = String::from_utf8(w.into_inner()).expect("the writer writes UTF-8");
    out.push('\n');
    out
}

fn errors(results: &[&GateResult]) -> usize {
    results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Inconclusive | Outcome::Error))
        .count()
}

fn write_junit(w: &mut Writer<Vec<u8>>, report: &RunReport) -> std::io::Result<()> {
    let results: Vec<&GateResult> = report.results().collect();
    let count = |rs: &[&GateResult], o: Outcome| rs.iter().filter(|r| r.outcome == o).count();
    let total_s: f64 = report
        .phases
        .iter()
        .map(|p| p.duration_ms as f64 / 1000.0)
        .sum();
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("UTF-8"), None)))?;
    let name = format!("copilot gates: {}", report.arena);
    w.create_element("testsuites")
        .with_attributes([
            ("name", xml_text(&name).as_ref()),
            ("tests", &results.len().to_string()),
            ("failures", &count(&results, Outcome::Fail).to_string()),
            ("errors", &errors(&results).to_string()),
            ("time", &format!("{total_s:.3}")),
        ])
        .write_inner_content(|w| {
            for phase in &report.phases {
                let rs: Vec<&GateResult> = phase.results.iter().collect();
                let suite = format!("{} {}", report.arena, phase.phase);
                w.create_element("testsuite")
                    .with_attributes([
                        ("name", xml_text(&suite).as_ref()),
                        ("tests", &rs.len().to_string()),
                        ("failures", &count(&rs, Outcome::Fail).to_string()),
                        ("errors", &errors(&rs).to_string()),
                        ("skipped", &count(&rs, Outcome::Skipped).to_string()),
                        ("time", &format!("{:.3}", phase.duration_ms as f64 / 1000.0)),
                        (
                            "timestamp",
                            &phase.started_at.format("%Y-%m-%dT%H:%M:%S").to_string(),
                        ),
                    ])
                    .write_inner_content(|w| {
                        if let Some(release) = &report.release {
                            w.create_element("properties").write_inner_content(|w| {
                                for (name, value) in
                                    [("release", release.as_str()), ("run_id", &phase.run_id)]
                                {
                                    w.create_element("property")
                                        .with_attributes([
                                            ("name", name),
                                            ("value", xml_text(value).as_ref()),
                                        ])
                                        .write_empty()?;
                                }
                                Ok(())
                            })?;
                        }
                        for r in &rs {
                            write_case(w, report, &phase.phase.to_string(), r)?;
                        }
                        Ok(())
                    })?;
            }
            Ok(())
        })?;
    Ok(())
}

fn write_case(
    w: &mut Writer<Vec<u8>>,
    report: &RunReport,
    phase: &str,
    r: &GateResult,
) -> std::io::Result<()> {
    let classname = format!("copilot.{}.{phase}", report.arena);
    let name = format!("{} ({})", r.gate, r.kind);
    let evidence = serde_json::to_string_pretty(&r.evidence).unwrap_or_default();
    let summary = xml_text(&r.summary);
    let case = w.create_element("testcase").with_attributes([
        ("classname", xml_text(&classname).as_ref()),
        ("name", xml_text(&name).as_ref()),
        ("time", &format!("{:.3}", r.duration_ms as f64 / 1000.0)),
    ]);
    let text = |t: &str| BytesText::new(t).into_owned();
    let kind = match r.outcome {
        Outcome::Fail => Some(("failure", "gate-failed")),
        Outcome::Error => Some(("error", "dependency-unreachable")),
        Outcome::Inconclusive => Some(("error", "inconclusive")),
        Outcome::Skipped => Some(("skipped", "skipped")),
        Outcome::Pass | Outcome::Warn => None,
    };
    case.write_inner_content(|w| {
        match kind {
            Some(("skipped", _)) => {
                w.create_element("skipped")
                    .with_attribute(("message", summary.as_ref()))
                    .write_empty()?;
            }
            Some((element, kind)) => {
                w.create_element(element)
                    .with_attributes([("message", summary.as_ref()), ("type", kind)])
                    .write_text_content(text(&xml_text(&evidence)))?;
            }
            None => {
                let out = if r.outcome == Outcome::Warn {
                    format!("warning: {summary}\n{}", xml_text(&evidence))
                } else {
                    summary.to_string()
                };
                w.create_element("system-out")
                    .write_text_content(text(&out))?;
            }
        }
        Ok(())
    })?;
    Ok(())
}

fn gh_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

fn gh_property(s: &str) -> String {
    gh_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// GitHub Actions workflow commands: an error per failed gate, a warning per
/// warning or inconclusive one.
pub fn github_annotations(report: &RunReport) -> String {
    let mut out = String::new();
    for r in report.results() {
        let level = match r.outcome {
            Outcome::Fail => "error",
            Outcome::Error => "error",
            Outcome::Warn | Outcome::Inconclusive => "warning",
            Outcome::Pass | Outcome::Skipped => continue,
        };
        let title = gh_property(&format!(
            "gate {} ({}, {} {})",
            r.gate, r.outcome, report.arena, r.phase
        ));
        let _ = writeln!(out, "::{level} title={title}::{}", gh_data(&r.summary));
    }
    out
}

/// A Markdown summary for `$GITHUB_STEP_SUMMARY`.
pub fn markdown(report: &RunReport) -> String {
    let mut out = format!("### copilot gates: {}", report.arena);
    if let Some(r) = &report.release {
        let _ = write!(out, " ({r})");
    }
    out.push_str(
        "\n\n| phase | gate | outcome | time | summary |\n| --- | --- | --- | --- | --- |\n",
    );
    for r in report.results() {
        let icon = match r.outcome {
            Outcome::Pass => "✅",
            Outcome::Fail => "❌",
            Outcome::Warn => "⚠️",
            Outcome::Inconclusive => "❔",
            Outcome::Error => "🔌",
            Outcome::Skipped => "⏭️",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {icon} {} | {:.1}s | {} |",
            r.phase,
            r.gate,
            r.outcome,
            r.duration_ms as f64 / 1000.0,
            r.summary.replace('|', "\\|").replace('\n', " ")
        );
    }
    out
}

/// The body of a GitHub check run reporting `report` on commit `sha`
/// (`POST /repos/{owner}/{repo}/check-runs`): completed, concluded as the
/// exit code would be, the Markdown table as its summary, and one
/// annotation per gate that did not pass, on the gate's definition
/// (`gate_file` names it; GitHub takes at most 50 per request).
pub fn github_check_run(
    report: &RunReport,
    verdict: super::RunVerdict,
    sha: &str,
    gate_file: impl Fn(&str) -> String,
) -> serde_json::Value {
    use super::RunVerdict;
    let conclusion = match verdict {
        RunVerdict::Passed => "success",
        RunVerdict::Failed => "failure",
        RunVerdict::DependencyFailed => "failure",
        RunVerdict::Inconclusive => "neutral",
    };
    let started = report
        .phases
        .iter()
        .map(|p| p.started_at)
        .min()
        .unwrap_or_else(chrono::Utc::now);
    let annotations: Vec<serde_json::Value> = report
        .results()
        .filter_map(|r| {
            let level = match r.outcome {
                Outcome::Fail | Outcome::Error => "failure",
                Outcome::Warn | Outcome::Inconclusive => "warning",
                Outcome::Pass | Outcome::Skipped => return None,
            };
            Some(serde_json::json!({
                "path": gate_file(&r.gate),
                "start_line": 1,
                "end_line": 1,
                "annotation_level": level,
                "title": format!("gate {} ({}, {} {})", r.gate, r.outcome, report.arena, r.phase),
                "message": r.summary,
            }))
        })
        .take(50)
        .collect();
    let failed = annotations.len();
    serde_json::json!({
        "name": format!("copilot gates: {}", report.arena),
        "head_sha": sha,
        "status": "completed",
        "conclusion": conclusion,
        "started_at": started.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "completed_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "output": {
            "title": match failed {
                0 => format!("{}: gates passed", report.arena),
                n => format!("{}: {n} gate(s) did not pass", report.arena),
            },
            "summary": markdown(report),
            "annotations": annotations,
        },
    })
}
