//! Gate reports for people and machines: a terminal table, JUnit XML that
//! GitHub, GitLab and Jenkins render, and GitHub Actions annotations with a
//! Markdown step summary.

use std::fmt::Write as _;

use super::runner::RunReport;
use crate::model::Outcome;

/// A table: one row per gate.
pub fn table(report: &RunReport) -> String {
    let mut rows = vec![[
        "PHASE".to_string(),
        "GATE".into(),
        "KIND".into(),
        "OUTCOME".into(),
        "TIME".into(),
        "SUMMARY".into(),
    ]];
    for r in report.results() {
        rows.push([
            r.phase.to_string(),
            r.gate.clone(),
            r.kind.to_string(),
            r.outcome.to_string().to_uppercase(),
            format!("{:.1}s", r.duration_ms as f64 / 1000.0),
            r.summary.clone(),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in rows {
        for (i, cell) in r.iter().enumerate() {
            if i < 5 {
                let _ = write!(out, "{cell:<w$}  ", w = widths[i]);
            } else {
                out.push_str(cell);
            }
        }
        out.push('\n');
    }
    out
}

fn xml(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .collect::<String>()
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// JUnit XML: one test suite per phase, one test case per gate.
pub fn junit(report: &RunReport) -> String {
    let results: Vec<_> = report.results().collect();
    let count = |o: Outcome| results.iter().filter(|r| r.outcome == o).count();
    let total_s: f64 = report
        .phases
        .iter()
        .map(|p| p.duration_ms as f64 / 1000.0)
        .sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"copilot gates: {}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{total_s:.3}\">",
        xml(&report.arena),
        results.len(),
        count(Outcome::Fail),
        count(Outcome::Inconclusive),
        count(Outcome::Skipped)
    );
    for phase in &report.phases {
        let c = |o: Outcome| phase.results.iter().filter(|r| r.outcome == o).count();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{} {}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\" timestamp=\"{}\">",
            xml(&report.arena),
            phase.phase,
            phase.results.len(),
            c(Outcome::Fail),
            c(Outcome::Inconclusive),
            c(Outcome::Skipped),
            phase.duration_ms as f64 / 1000.0,
            phase.started_at.format("%Y-%m-%dT%H:%M:%S")
        );
        if let Some(rel) = &report.release {
            let _ = writeln!(
                out,
                "    <properties><property name=\"release\" value=\"{}\"/><property name=\"run_id\" value=\"{}\"/></properties>",
                xml(rel),
                xml(&phase.run_id)
            );
        }
        for r in &phase.results {
            let _ = write!(
                out,
                "    <testcase classname=\"copilot.{}.{}\" name=\"{} ({})\" time=\"{:.3}\"",
                xml(&report.arena),
                phase.phase,
                xml(&r.gate),
                r.kind,
                r.duration_ms as f64 / 1000.0
            );
            let evidence = serde_json::to_string_pretty(&r.evidence).unwrap_or_default();
            match r.outcome {
                Outcome::Pass => out.push_str(&format!(
                    "><system-out>{}</system-out></testcase>\n",
                    xml(&r.summary)
                )),
                Outcome::Warn => out.push_str(&format!(
                    "><system-out>warning: {}\n{}</system-out></testcase>\n",
                    xml(&r.summary),
                    xml(&evidence)
                )),
                Outcome::Skipped => out.push_str(&format!(
                    "><skipped message=\"{}\"/></testcase>\n",
                    xml(&r.summary)
                )),
                Outcome::Fail => out.push_str(&format!(
                    "><failure message=\"{}\" type=\"gate-failed\">{}</failure></testcase>\n",
                    xml(&r.summary),
                    xml(&evidence)
                )),
                Outcome::Inconclusive => out.push_str(&format!(
                    "><error message=\"{}\" type=\"{}\">{}</error></testcase>\n",
                    xml(&r.summary),
                    if r.dependency_failed {
                        "dependency-unreachable"
                    } else {
                        "inconclusive"
                    },
                    xml(&evidence)
                )),
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
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
