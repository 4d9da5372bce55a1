//! `copilot gate list | run`: the runner, exit codes, reports, and the gates
//! that need only the clock, the definitions and the ledger.

use std::time::Duration;

use copilot_ledger::{Ledger, NewDeployment};
use serde_json::Value;

use crate::common::{Project, stdout};

fn junit_counts(xml: &str) -> (usize, usize, usize) {
    use quick_xml::Reader;
    use quick_xml::events::Event;
    let mut reader = Reader::from_str(xml);
    let (mut cases, mut failures, mut errors) = (0, 0, 0);
    loop {
        match reader.read_event().expect("JUnit parses as XML") {
            Event::Start(e) | Event::Empty(e) => match e.name().as_ref() {
                b"testcase" => cases += 1,
                b"failure" => failures += 1,
                b"error" => errors += 1,
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    (cases, failures, errors)
}

#[test]
fn gate_list_shows_phases() {
    let p = Project::init();
    let (code, doc) = p.json(["gate", "list", "canary"]);
    assert_eq!(code, 0);
    let gates: Vec<(String, String)> = doc["gates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                g["phase"].as_str().unwrap().into(),
                g["gate"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(gates.contains(&("before".into(), "queue-health".into())));
    assert!(gates.contains(&("after".into(), "latency".into())));
    assert_eq!(gates.len(), 9);
}

#[test]
fn window_freeze_fails_and_bypass_is_recorded() {
    let p = Project::init();
    // Black Friday 2026: production is frozen.
    let out = p
        .copilot(["gate", "run", "production", "--gate", "window"])
        .env("COPILOT_NOW", "2026-11-27T11:00:00Z")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("frozen: black-friday-week"),
        "{}",
        stdout(&out)
    );
    assert!(stdout(&out).contains("next allowed Tue 2026-12-01 10:00 UTC"));
    // Production windows cannot be bypassed, even with a reason.
    let out = p
        .copilot([
            "gate",
            "run",
            "production",
            "--gate",
            "window",
            "--reason",
            "incident 7",
        ])
        .env("COPILOT_NOW", "2026-11-27T11:00:00Z")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("cannot be bypassed"));
    // The hotfix lane can, and the bypass lands in the audit log.
    p.edit(
        "arenas/hotfix.yaml",
        "before: [ingestion]",
        "before: [window]",
    );
    let out = p
        .copilot([
            "gate",
            "run",
            "hotfix",
            "--gate",
            "window",
            "--reason",
            "core update broke parsing",
        ])
        .env("COPILOT_NOW", "2026-11-27T11:00:00Z")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("bypassed with reason: core update broke parsing"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let log = rt.block_on(async {
        let ledger = Ledger::connect(&copilot_ledger::default_url(p.root()))
            .await
            .unwrap();
        ledger.audit_log(Some("hotfix"), 10).await.unwrap()
    });
    assert_eq!(log[0].action, "window.bypass");
    assert_eq!(log[0].reason.as_deref(), Some("core update broke parsing"));
    // Inside the window on a Tuesday: passes.
    let out = p
        .copilot(["gate", "run", "production", "--gate", "window"])
        .env("COPILOT_NOW", "2026-12-01T10:30:00Z")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
}

#[test]
fn env_gate_checks_names_references_and_api_version() {
    let p = Project::init();
    let run = |envs: &[(&str, &str)], now: &str| {
        let mut cmd = p.copilot(["--output", "json", "gate", "run", "canary", "--gate", "env"]);
        cmd.env("COPILOT_NOW", now);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code().unwrap(),
            serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        )
    };
    // The access token is an env: reference; unset, the required secret is missing.
    let (code, doc) = run(&[], "2026-11-24T11:00:00Z");
    assert_eq!(code, 1);
    let r = &doc["phases"][0]["results"][0];
    assert!(
        r["summary"]
            .as_str()
            .unwrap()
            .contains("CANARY_SHOPIFY_ACCESS_TOKEN is not set"),
        "{r}"
    );
    let (code, doc) = run(
        &[("CANARY_SHOPIFY_ACCESS_TOKEN", "shpat_value_never_shown")],
        "2026-11-24T11:00:00Z",
    );
    assert_eq!(code, 0, "{doc}");
    assert!(
        !doc.to_string().contains("shpat_value_never_shown"),
        "secret value in evidence"
    );
    // 2026-10 is more than nine months old in August 2027 (warn), out of support in November 2027 (fail).
    let (code, doc) = run(
        &[("CANARY_SHOPIFY_ACCESS_TOKEN", "x")],
        "2027-08-15T11:00:00Z",
    );
    assert_eq!(code, 0);
    assert_eq!(doc["phases"][0]["results"][0]["outcome"], "warn");
    let (code, _) = run(
        &[("CANARY_SHOPIFY_ACCESS_TOKEN", "x")],
        "2027-11-15T11:00:00Z",
    );
    assert_eq!(code, 1);
    // A version from the future is not released yet.
    let (code, doc) = run(
        &[("CANARY_SHOPIFY_ACCESS_TOKEN", "x")],
        "2026-06-01T11:00:00Z",
    );
    assert_eq!(code, 1);
    assert!(
        doc["phases"][0]["results"][0]["summary"]
            .as_str()
            .unwrap()
            .contains("not released yet")
    );
}

#[test]
fn bake_and_approval_read_the_ledger() {
    let p = Project::init();
    p.copilot([
        "release",
        "create",
        "--image",
        "ghcr.io/acme/copilot-service:v7",
    ])
    .assert()
    .success();
    // v7 went live in canary at 08:00.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let ledger = Ledger::connect(&copilot_ledger::default_url(p.root()))
            .await
            .unwrap();
        let rel = ledger.find_release("v7").await.unwrap();
        let t0 = chrono::DateTime::parse_from_rfc3339("2026-12-01T08:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let d = ledger
            .create_deployment(
                &NewDeployment {
                    arena: "canary".into(),
                    release_id: rel.id.clone(),
                    previous_release_id: None,
                    kind: "promote".into(),
                    strategy: "canary".into(),
                    source_arena: Some("staging".into()),
                    reason: None,
                    created_by: "tester".into(),
                },
                t0,
            )
            .await
            .unwrap();
        ledger
            .set_deployment_state(&d.id, "succeeded", t0)
            .await
            .unwrap();
    });
    let run = |now: &str| {
        let out = p
            .copilot([
                "--output",
                "json",
                "gate",
                "run",
                "production",
                "--gate",
                "bake",
                "--gate",
                "approval",
            ])
            .env("COPILOT_NOW", now)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        )
    };
    let outcome = |doc: &Value, gate: &str| {
        doc["phases"][0]["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["gate"] == gate)
            .unwrap()["outcome"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (code, doc) = run("2026-12-01T12:00:00Z");
    assert_eq!(code, 1);
    assert_eq!(doc["release"], "v7", "the release live in canary");
    assert_eq!(outcome(&doc, "bake"), "fail", "4 hours of 24");
    assert_eq!(outcome(&doc, "approval"), "fail");
    p.copilot(["approve", "production", "--release", "v7", "--note", "ok"])
        .assert()
        .success();
    let (code, doc) = run("2026-12-02T09:00:00Z");
    assert_eq!(code, 0, "{doc}");
    assert_eq!(outcome(&doc, "bake"), "pass");
    assert_eq!(outcome(&doc, "approval"), "pass");
}

#[test]
fn junit_and_github_reports() {
    let p = Project::init();
    let junit = p.path("gates.xml");
    let summary = p.path("summary.md");
    let out = p
        .copilot([
            "gate",
            "run",
            "production",
            "--gate",
            "window",
            "--gate",
            "env",
            "--junit",
            junit.to_str().unwrap(),
        ])
        .env("COPILOT_NOW", "2026-11-27T11:00:00Z")
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", &summary)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let xml = std::fs::read_to_string(&junit).unwrap();
    let (cases, failures, _) = junit_counts(&xml);
    assert_eq!((cases, failures), (2, 1), "{xml}");
    assert!(xml.contains("failures=\"1\""));
    assert!(xml.contains("frozen: black-friday-week"));
    let text = stdout(&out);
    assert!(
        text.contains(
            "::error title=gate window (fail%2C production before)::frozen: black-friday-week"
        ),
        "{text}"
    );
    let md = std::fs::read_to_string(&summary).unwrap();
    assert!(md.contains("| before | window | ❌ fail |"), "{md}");
}

#[test]
fn exit_codes_for_dependencies_and_inconclusive_runs() {
    let p = Project::init();
    // Alertmanager on a closed port: a dependency failure, exit 3.
    let out = p
        .copilot(["gate", "run", "canary", "--gate", "alerts"])
        .env("ALERTMANAGER_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stdout(&out));
    // The bake gate with nothing live in the source: inconclusive, exit 5, unless allowed.
    let out = p
        .copilot(["gate", "run", "production", "--gate", "bake"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stdout(&out));
    let out = p
        .copilot([
            "gate",
            "run",
            "production",
            "--gate",
            "bake",
            "--allow-inconclusive",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let out = p
        .copilot(["gate", "run", "production", "--gate", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn a_phase_takes_as_long_as_its_slowest_gate() {
    use axum::routing::get;
    // A service whose /slow answers after 1 s.
    let app = axum::Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            "{}"
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let p = Project::init();
    for i in 1..=3 {
        p.write(&format!("gates/slow-{i}.yaml"), &format!("name: slow-{i}\nkind: smoke\nparams:\n  steps:\n    - {{ name: slow, path: /slow }}\n"));
    }
    p.edit(
        "arenas/local.yaml",
        "before: [env]",
        "before: [slow-1, slow-2, slow-3]",
    );
    let out = tokio::task::spawn_blocking(move || {
        p.copilot([
            "--output",
            "json",
            "gate",
            "run",
            "local",
            "--phase",
            "before",
            "--url",
            &format!("http://{addr}"),
        ])
        .output()
        .unwrap()
    })
    .await
    .unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{doc}");
    let phase = &doc["phases"][0];
    let slowest = phase["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["duration_ms"].as_u64().unwrap())
        .max()
        .unwrap();
    let total = phase["duration_ms"].as_u64().unwrap();
    assert!(slowest >= 1000);
    // Three 1 s gates run concurrently: the phase takes about 1 s, not 3.
    assert!(
        total < slowest + 800,
        "phase took {total} ms, slowest gate {slowest} ms"
    );
}

#[test]
fn every_run_is_recorded_with_its_evidence() {
    let p = Project::init();
    p.copilot(["gate", "run", "production", "--gate", "window"])
        .env("COPILOT_NOW", "2026-11-27T11:00:00Z")
        .assert()
        .code(1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (runs, results) = rt.block_on(async {
        let ledger = Ledger::connect(&copilot_ledger::default_url(p.root()))
            .await
            .unwrap();
        let runs = ledger
            .gate_runs(Some("production"), None, 10)
            .await
            .unwrap();
        let results = ledger.gate_results(&runs[0].id).await.unwrap();
        (runs, results)
    });
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].outcome, "fail");
    assert_eq!(results[0].gate, "window");
    assert_eq!(
        results[0].evidence.0["active_freezes"][0],
        "black-friday-week"
    );
    assert_eq!(results[0].evidence.0["source"], "clock");
}

#[test]
fn a_target_out_of_reach_is_one_error_naming_the_host_exit_3() {
    let p = Project::init();
    // `.invalid` never resolves (RFC 6761); port 9 on loopback refuses.
    for (url, host) in [
        (
            "http://copilot-nowhere.invalid:8080",
            "copilot-nowhere.invalid:8080",
        ),
        ("http://127.0.0.1:9", "127.0.0.1:9"),
    ] {
        let (code, doc) = p.json([
            "gate", "run", "local", "--gate", "latency", "--gate", "health", "--gate", "smoke",
            "--url", url,
        ]);
        assert_eq!(code, 3, "{doc}");
        let results: Vec<&Value> = doc["phases"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|ph| ph["results"].as_array().unwrap())
            .collect();
        assert_eq!(results.len(), 3, "{doc}");
        for r in results {
            assert_eq!(r["outcome"], "error", "{r}");
            let summary = r["summary"].as_str().unwrap();
            assert!(
                summary.starts_with(&format!("cannot reach {host}: ")),
                "{summary}"
            );
            assert_eq!(summary.matches(host).count(), 1, "reported once: {summary}");
        }
        // The latency gate stopped after a few failed connections instead of
        // sending its whole sample.
        let latency = &doc["phases"][0]["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["gate"] == "latency")
            .unwrap()["evidence"];
        let sent = latency["requests"].as_u64().unwrap();
        assert!(sent < 50, "{sent} requests sent to a host out of reach");
    }
}

/// The JUnit schema CI systems read (Jenkins xunit's `junit-10.xsd`);
/// `scripts/test.sh` takes it from pytest's source distribution on PyPI.
fn junit_xsd() -> std::path::PathBuf {
    let path = std::env::var_os("COPILOT_TEST_JUNIT_XSD")
        .map(std::path::PathBuf::from)
        .expect("COPILOT_TEST_JUNIT_XSD names junit-10.xsd: run the tests with scripts/test.sh");
    assert!(path.is_file(), "{} is missing", path.display());
    path
}

#[tokio::test]
async fn published_junit_validates_against_the_junit_schema() {
    use axum::routing::get;
    // Answers 404 to everything: every smoke step fails with its name in the message.
    let app = axum::Router::new().route(
        "/health",
        get(|| async { (axum::http::StatusCode::NOT_FOUND, "{}") }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let p = Project::init();
    // Markup, entities, quotes and control characters in what ends up in
    // names, messages and text.
    p.write(
        "gates/nasty.yaml",
        "name: nasty\nkind: smoke\nparams:\n  steps:\n    - name: \"<cart> & \\\"quotes\\\" 'single' ]]> \\x01\\x1b[31m bell\\x07\"\n      path: /health\n      status: 200\n",
    );
    p.edit("arenas/local.yaml", "before: [env]", "before: [env, nasty]");
    let junit = p.path("gates.xml");
    let junit_arg = junit.to_str().unwrap().to_string();
    let url = format!("http://{addr}");
    let (_project, out) = tokio::task::spawn_blocking(move || {
        let out = p
            .copilot(["gate", "run", "local", "--url", &url, "--junit", &junit_arg])
            .output()
            .unwrap();
        (p, out)
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("&lt;cart&gt; &amp;"), "{xml}");
    assert!(
        !xml.contains('\u{1}') && !xml.contains('\u{7}'),
        "control characters left in: {xml}"
    );
    let (cases, failures, _) = junit_counts(&xml);
    assert!(cases >= 2 && failures >= 1, "{xml}");
    let check = std::process::Command::new("xmllint")
        .args(["--noout", "--schema"])
        .arg(junit_xsd())
        .arg(&junit)
        .output()
        .expect("xmllint (Debian's libxml2-utils) validates the report");
    assert!(
        check.status.success(),
        "the report breaks junit-10.xsd:\n{}\n{xml}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn windows_in_a_named_time_zone_follow_its_daylight_saving_time() {
    let p = Project::init_at(Some("2026-07-07T13:30:00Z"));
    p.edit(
        "arenas/production.yaml",
        "timezone: UTC",
        "timezone: America/New_York",
    );
    p.edit(
        "arenas/production.yaml",
        "Tue-Thu 10:00-14:00",
        "Tue-Thu 09:00-11:00",
    );
    p.copilot(["validate"]).assert().success();
    let gate = |now: &str| {
        let out = p
            .copilot(["gate", "run", "production", "--gate", "window"])
            .env("COPILOT_NOW", now)
            .output()
            .unwrap();
        (out.status.code().unwrap(), stdout(&out))
    };
    // 09:30 in New York on a Tuesday: 13:30 UTC in summer, 14:30 in winter.
    assert_eq!(gate("2026-07-07T13:30:00Z").0, 0);
    assert_eq!(gate("2027-01-12T14:30:00Z").0, 0);
    let (code, text) = gate("2027-01-12T13:30:00Z");
    assert_eq!(code, 1, "08:30 in New York in January: {text}");
    // A zone that does not exist is refused where it is written.
    p.edit(
        "arenas/production.yaml",
        "timezone: America/New_York",
        "timezone: America/Gotham",
    );
    let out = p.copilot(["validate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("arenas/production.yaml:")
            && err.contains("unknown time zone `America/Gotham`"),
        "{err}"
    );
}

/// Every file under `dir`, read as bytes, holds `needle` somewhere.
fn anywhere_under(dir: &std::path::Path, needle: &str) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            found.extend(anywhere_under(&path, needle));
        } else if std::fs::read(&path)
            .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
        {
            found.push(path);
        }
    }
    found
}

#[test]
fn command_gates_pass_fail_time_out_and_never_show_their_secrets() {
    let secret = "tok-5f1c9a77e2";
    let p = Project::init();
    p.write(
        "gates/unit.yaml",
        "name: unit\nkind: command\nparams:\n  run: [sh, -c, 'echo \"testing $COPILOT_ARENA with $API_TOKEN\"; printf \"<testsuites><testsuite tests=\\\"4\\\" failures=\\\"0\\\"/></testsuites>\" > report.xml']\n  env: { API_TOKEN: \"env:COMMAND_GATE_TOKEN\" }\n  junit: report.xml\n",
    );
    p.write(
        "gates/e2e.yaml",
        "name: e2e\nkind: command\nparams:\n  run: [sh, -c, 'echo \"journey 3 failed: checkout answered 500\" >&2; echo \"token was $API_TOKEN\"; exit 2']\n  env: { API_TOKEN: \"env:COMMAND_GATE_TOKEN\" }\n",
    );
    p.write(
        "gates/scan.yaml",
        "name: scan\nkind: command\ntimeout: 1s\nparams:\n  run: [sleep, '30']\n",
    );
    p.write(
        "gates/leaky.yaml",
        "name: leaky\nkind: command\nparams:\n  run: [sh, -c, 'test -z \"$HOME$COMMAND_GATE_TOKEN\" && test -n \"$PATH\"']\n",
    );
    let run = |gate: &str| {
        let out = p
            .copilot(["--output", "json", "gate", "run", "local", "--gate", gate])
            .env("COMMAND_GATE_TOKEN", secret)
            .output()
            .unwrap();
        assert!(
            !stdout(&out).contains(secret) && !crate::common::stderr(&out).contains(secret),
            "{gate}: the secret was shown"
        );
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        (
            out.status.code().unwrap(),
            doc["phases"][0]["results"][0].clone(),
        )
    };
    let (code, r) = run("unit");
    assert_eq!(code, 0, "{r:#}");
    assert_eq!(r["outcome"], "pass");
    assert_eq!(r["evidence"]["junit"]["tests"], 4, "{r:#}");
    assert!(
        r["evidence"]["output"]
            .to_string()
            .contains("testing local with [redacted]"),
        "{r:#}"
    );
    let (code, r) = run("e2e");
    assert_eq!(code, 1, "{r:#}");
    assert_eq!(r["outcome"], "fail");
    assert_eq!(r["evidence"]["exit"], 2);
    assert!(
        r["evidence"]["output"]
            .to_string()
            .contains("checkout answered 500"),
        "the failure's output is the evidence: {r:#}"
    );
    let started = std::time::Instant::now();
    let (code, r) = run("scan");
    assert_eq!(r["outcome"], "inconclusive", "{r:#}");
    assert_eq!(code, 5, "{r:#}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the program was stopped"
    );
    // Nothing of copilot's environment reaches it unless named.
    let (code, r) = run("leaky");
    assert_eq!(code, 0, "{r:#}");
    let found = anywhere_under(p.root(), secret);
    assert!(found.is_empty(), "the secret is in {found:?}");
}
