//! `command`: a program run to its exit, as a list of arguments (never a
//! shell string). Exit 0 passes. Its environment is `PATH`, the names
//! `pass_env` lists, the arena's URL and the release (`COPILOT_ARENA`,
//! `COPILOT_URL`, `COPILOT_RELEASE`, `COPILOT_IMAGE`) and its own `env`,
//! whose references are resolved here and never reported: a value that
//! came from a reference is cut out of the output kept as evidence. The
//! gate's timeout stops the program (it is killed with the gate).

use std::collections::BTreeMap;
use std::process::Stdio;

use serde_json::{Value, json};

use super::resolve::{Resolved, resolve_reference};
use super::{GateContext, Verdict};
use copilot_core::config::params::CommandParams;
use copilot_core::model::Gate;

/// Output lines kept as evidence unless `tail` says otherwise.
const TAIL: usize = 20;

pub async fn check(ctx: &GateContext<'_>, _gate: &Gate, p: CommandParams) -> Verdict {
    let Some((program, args)) = p.run.split_first() else {
        return Verdict::fail("`run` names no program", json!({}));
    };
    let dir = match &p.dir {
        Some(d) => ctx.project_path(d),
        None => ctx.root.to_path_buf(),
    };
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    let mut hidden: Vec<String> = Vec::new();
    for (name, text) in &p.env {
        let is_reference = text.starts_with("env:") || text.starts_with("file:");
        match resolve_reference(ctx.arena, text) {
            Resolved::Value(v) => {
                if is_reference && !v.is_empty() {
                    hidden.push(v.clone());
                }
                env.insert(name.clone(), v);
            }
            Resolved::Unresolvable(why) => {
                return Verdict::inconclusive(
                    format!("cannot give {program} {name}: {why}"),
                    json!({ "command": p.run, "variable": name }),
                );
            }
        }
    }
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(&dir)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for name in std::iter::once("PATH").chain(p.pass_env.iter().map(String::as_str)) {
        if let Some(v) = std::env::var_os(name) {
            cmd.env(name, v);
        }
    }
    cmd.env("COPILOT_ARENA", &ctx.arena.name);
    if let Some(url) = ctx.url_for(false) {
        cmd.env("COPILOT_URL", url);
    }
    if let Some(r) = ctx.release {
        cmd.env("COPILOT_RELEASE", &r.version);
        cmd.env("COPILOT_IMAGE", &r.image);
    }
    cmd.envs(&env);
    let started = std::time::Instant::now();
    let out = match cmd.output().await {
        Ok(out) => out,
        Err(e) => {
            return Verdict::unreachable(
                format!("cannot run {program}: {e}"),
                json!({ "command": p.run, "dir": dir }),
            );
        }
    };
    let keep = p.tail.unwrap_or(TAIL);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<String> = text
        .lines()
        .rev()
        .take(keep)
        .map(|l| redact(l, &hidden))
        .collect();
    lines.reverse();
    let mut evidence = json!({
        "command": p.run,
        "dir": dir,
        "exit": out.status.code(),
        "ms": started.elapsed().as_millis() as u64,
        "output": lines,
    });
    let junit = p.junit.as_ref().map(|j| dir.join(j));
    if let Some(path) = &junit {
        evidence["junit"] = match std::fs::read_to_string(path) {
            Ok(xml) => junit_counts(&xml).unwrap_or_else(|e| json!({ "error": e })),
            Err(e) => json!({ "error": format!("cannot read {}: {e}", path.display()) }),
        };
    }
    let counts = match &evidence["junit"]["tests"] {
        Value::Number(n) => format!(
            " ({n} tests, {} failed)",
            evidence["junit"]["failures"].as_u64().unwrap_or(0)
                + evidence["junit"]["errors"].as_u64().unwrap_or(0)
        ),
        _ => String::new(),
    };
    match out.status.code() {
        Some(0) => Verdict::pass(format!("{program} passed{counts}"), evidence),
        Some(code) => Verdict::fail(format!("{program} exited {code}{counts}"), evidence),
        None => Verdict::fail(format!("{program} was killed by a signal"), evidence),
    }
}

/// `line` with every value in `hidden` cut out.
fn redact(line: &str, hidden: &[String]) -> String {
    hidden
        .iter()
        .fold(line.to_string(), |l, h| l.replace(h.as_str(), "[redacted]"))
}

/// The counts of a JUnit XML report: the sum over its `testsuite`
/// elements, or the `testsuites` totals when it has no suite.
fn junit_counts(xml: &str) -> Result<Value, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
    let mut outer: BTreeMap<&str, u64> = BTreeMap::new();
    let mut suites = 0;
    let keys = ["tests", "failures", "errors", "skipped"];
    loop {
        match reader.read_event() {
            Ok(Event::Start(e) | Event::Empty(e)) => {
                let name = e.name();
                let into = match name.as_ref() {
                    b"testsuite" => {
                        suites += 1;
                        &mut totals
                    }
                    b"testsuites" => &mut outer,
                    _ => continue,
                };
                for a in e.attributes().flatten() {
                    if let Some(k) = keys.iter().find(|k| a.key.as_ref() == k.as_bytes())
                        && let Ok(n) = String::from_utf8_lossy(&a.value).parse::<u64>()
                    {
                        *into.entry(k).or_default() += n;
                    }
                }
            }
            Ok(Event::Eof) => break,
            Err(e) => return Err(format!("not JUnit XML: {e}")),
            _ => {}
        }
    }
    let counts = if suites > 0 { totals } else { outer };
    Ok(json!({
        "tests": counts.get("tests").copied().unwrap_or(0),
        "failures": counts.get("failures").copied().unwrap_or(0),
        "errors": counts.get("errors").copied().unwrap_or(0),
        "skipped": counts.get("skipped").copied().unwrap_or(0),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_counts_add_up_the_suites() {
        let xml = r#"<?xml version="1.0"?>
<testsuites tests="9" failures="9">
  <testsuite name="a" tests="3" failures="1" errors="0" skipped="1"><testcase name="x"/></testsuite>
  <testsuite name="b" tests="2" failures="0" errors="1"/>
</testsuites>"#;
        assert_eq!(
            junit_counts(xml).unwrap(),
            json!({ "tests": 5, "failures": 1, "errors": 1, "skipped": 1 })
        );
        assert!(junit_counts("<testsuite tests=").is_err());
    }

    #[test]
    fn secrets_are_cut_out_of_the_output() {
        assert_eq!(
            redact("token=s3cr3t and s3cr3t", &["s3cr3t".into()]),
            "token=[redacted] and [redacted]"
        );
    }
}
