//! `copilot validate`: the defaults pass; every kind of broken definition
//! exits 2 and names the file, line and column.

use crate::common::{Project, stderr};

/// Break one file, run `validate`, expect exit 2 and `needle` on stderr.
fn rejects(file: &str, from: &str, to: &str, needles: &[&str]) {
    let p = Project::init();
    p.edit(file, from, to);
    let out = p.copilot(["validate"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in:\n{err}");
    }
}

#[test]
fn defaults_are_valid() {
    let p = Project::init();
    p.copilot(["validate"]).assert().success();
    p.copilot(["validate", "--strict"]).assert().success();
    let (code, doc) = p.json(["validate"]);
    assert_eq!(code, 0);
    assert_eq!(doc["valid"], true);
    assert_eq!(doc["arenas"].as_array().unwrap().len(), 6);
    assert_eq!(doc["gates"].as_array().unwrap().len(), 12);
}

#[test]
fn the_repository_definitions_are_valid() {
    crate::common::copilot()
        .args(["--root", env!("CARGO_MANIFEST_DIR"), "validate", "--strict"])
        .assert()
        .success();
}

#[test]
fn unknown_key_with_did_you_mean() {
    rejects(
        "arenas/canary.yaml",
        "strategy:\n  kind: canary",
        "stratgy:\n  kind: canary",
        &[
            "arenas/canary.yaml:17:1",
            "unknown key `stratgy`",
            "did you mean `strategy`?",
        ],
    );
}

#[test]
fn unknown_key_deep_inside() {
    rejects(
        "arenas/production.yaml",
        "keep_standby: 30m",
        "keep_stanby: 30m",
        &[
            "arenas/production.yaml:",
            "unknown key `keep_stanby`",
            "did you mean `keep_standby`?",
        ],
    );
}

#[test]
fn inline_secret_value() {
    let p = Project::init();
    p.edit(
        "arenas/canary.yaml",
        "SHOPIFY_ACCESS_TOKEN: env:CANARY_SHOPIFY_ACCESS_TOKEN",
        "SHOPIFY_ACCESS_TOKEN: shpat_0123456789abcdef",
    );
    p.edit(
        "arenas/staging.yaml",
        "  values:\n",
        "  values:\n    SHOPIFY_WEBHOOK_SECRET: whsec_topsecret\n    PGURL: postgres://app:hunter2@db/app\n",
    );
    let out = p.copilot(["validate"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("arenas/canary.yaml:"), "{err}");
    assert!(
        err.contains("secret `SHOPIFY_ACCESS_TOKEN` is not a reference"),
        "{err}"
    );
    assert!(
        err.contains("secret `SHOPIFY_WEBHOOK_SECRET` is written inline"),
        "{err}"
    );
    assert!(
        err.contains("`PGURL` has a password written inline"),
        "{err}"
    );
    // The secrets themselves are never echoed.
    for secret in ["shpat_0123456789abcdef", "whsec_topsecret", "hunter2"] {
        assert!(!err.contains(secret), "secret leaked:\n{err}");
    }
    let (_, doc) = p.json(["validate"]);
    let text = doc.to_string();
    assert!(
        !text.contains("hunter2") && !text.contains("shpat_"),
        "{text}"
    );
}

#[test]
fn strategy_the_provider_cannot_do() {
    rejects(
        "arenas/preview.yaml",
        "kind: immediate",
        "kind: canary\n  steps:\n    - { weight: 10 }\n    - { weight: 100 }",
        &[
            "arenas/preview.yaml:16:9",
            "the render provider cannot do a canary rollout",
            "render supports: rolling, immediate, blue-green",
        ],
    );
}

#[test]
fn weighted_blue_green_on_render() {
    rejects(
        "arenas/preview.yaml",
        "kind: immediate",
        "kind: blue-green\n  steps:\n    - { weight: 50 }\n    - { weight: 100 }",
        &["arenas/preview.yaml:18:7", "cannot split traffic by weight"],
    );
}

#[test]
fn promotes_from_cycle() {
    rejects(
        "arenas/staging.yaml",
        "tier: staging\n",
        "tier: staging\npromotes_from: production\n",
        &[
            "`promotes_from` forms a cycle: canary <- staging <- production <- canary",
            "arenas/canary.yaml:9:16",
        ],
    );
}

#[test]
fn promotes_from_missing_arena() {
    rejects(
        "arenas/production.yaml",
        "promotes_from: canary",
        "promotes_from: canry",
        &[
            "arenas/production.yaml:10:16",
            "arena `canry`, which does not exist",
            "did you mean `canary`?",
        ],
    );
}

#[test]
fn missing_gate() {
    rejects(
        "arenas/canary.yaml",
        "before: [window, env, migrations, queue-health, ingestion, alerts]",
        "before: [window, env, migrations, queue-helth, ingestion, alerts]",
        &[
            "arenas/canary.yaml:",
            "gate `queue-helth` does not exist",
            "did you mean `queue-health`?",
        ],
    );
}

#[test]
fn bad_duration() {
    rejects(
        "arenas/production.yaml",
        "{ weight: 10, bake: 5m }",
        "{ weight: 10, bake: 5 minutes }",
        &[
            "arenas/production.yaml:",
            "bake: `5 minutes` is not a duration",
            "hint: write a number and a unit",
        ],
    );
}

#[test]
fn bad_window_and_freeze() {
    let p = Project::init();
    p.edit(
        "arenas/production.yaml",
        "allow: [\"Tue-Thu 10:00-14:00\"]",
        "allow: [\"Tue-Thu 10:00-1400\"]",
    );
    p.edit(
        "arenas/canary.yaml",
        "freeze: [black-friday-week, \"12-20..12-26\"]",
        "freeze: [black-friday-wek, \"12-20..12-26\"]",
    );
    let out = p.copilot(["validate"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(err.contains("arenas/production.yaml:"), "{err}");
    assert!(err.contains("`10:00-1400` is not a time range"), "{err}");
    assert!(err.contains("arenas/canary.yaml:"), "{err}");
    assert!(
        err.contains("`black-friday-wek` is neither a named freeze"),
        "{err}"
    );
}

#[test]
fn missing_required_field() {
    rejects(
        "gates/bake.yaml",
        "name: bake\n",
        "",
        &["gates/bake.yaml:", "missing required key `name`"],
    );
    rejects(
        "arenas/local.yaml",
        "provider:\n  kind: local\n",
        "provider:\n",
        &["arenas/local.yaml:", "missing required key `kind`"],
    );
}

#[test]
fn gate_params_are_checked_per_kind() {
    rejects(
        "gates/latency.yaml",
        "  requests: 400",
        "  request: 400",
        &[
            "gates/latency.yaml:10:3",
            "unknown key `request`",
            "did you mean `requests`?",
        ],
    );
    rejects(
        "gates/queue-health.yaml",
        "kind: queue-health",
        "kind: queue-healthy",
        &[
            "gates/queue-health.yaml:3:7",
            "unknown gate kind `queue-healthy`",
        ],
    );
}

#[test]
fn every_problem_is_reported_in_one_run() {
    let p = Project::init();
    p.edit(
        "arenas/canary.yaml",
        "strategy:\n  kind: canary",
        "stratgy:\n  kind: canary",
    );
    p.edit(
        "arenas/production.yaml",
        "promotes_from: canary",
        "promotes_from: canry",
    );
    p.edit("arenas/staging.yaml", "bake: 10m", "bake: 10x");
    p.edit(
        "arenas/staging.yaml",
        "before: [env, migrations]",
        "before: [env, migration]",
    );
    let (code, doc) = p.json(["validate"]);
    assert_eq!(code, 2);
    let diags = doc["error"]["diagnostics"].as_array().unwrap();
    let files: Vec<&str> = diags.iter().map(|d| d["file"].as_str().unwrap()).collect();
    assert!(diags.len() >= 4, "{diags:#?}");
    for f in [
        "arenas/canary.yaml",
        "arenas/production.yaml",
        "arenas/staging.yaml",
    ] {
        assert!(files.contains(&f), "{files:?}");
    }
    for d in diags {
        assert!(d["line"].as_u64().unwrap() >= 1 && d["column"].as_u64().unwrap() >= 1);
    }
}

#[test]
fn name_must_match_file() {
    rejects(
        "arenas/staging.yaml",
        "name: staging",
        "name: stage",
        &[
            "arenas/staging.yaml:7:7",
            "name `stage` does not match the file name `staging`",
        ],
    );
}

#[test]
fn hotfix_lane_needs_an_existing_target() {
    rejects(
        "arenas/hotfix.yaml",
        "target: production",
        "target: prod",
        &["arenas/hotfix.yaml:", "target arena `prod` does not exist"],
    );
}

#[test]
fn broken_template_is_reported() {
    rejects(
        "templates/fly.toml.j2",
        "app = {{ arena.provider.settings.app | tojson }}",
        "app = {{ arena.provider.settings.app }}",
        &["cannot render the fly configuration", "does not parse"],
    );
}

#[test]
fn strict_turns_warnings_into_errors() {
    let p = Project::init();
    // Fly splits by machine count: 4 machines cannot carry 10%.
    p.edit(
        "arenas/canary.yaml",
        "- { weight: 25, bake: 5m }",
        "- { weight: 10, bake: 5m }",
    );
    let out = p.copilot(["validate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(stderr(&out).is_empty());
    assert!(crate::common::stdout(&out).contains("with 4 instance(s), 10% becomes 0%"));
    let out = p.copilot(["validate", "--strict"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("arenas/canary.yaml:20:17"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn prometheus_metric_without_a_server() {
    rejects(
        "arenas/production.yaml",
        "      - { name: p95_latency, source: probe, max: 3s, window: 5m, on_fail: alert }",
        "      - { name: p95_latency, source: prometheus, query: 'histogram_quantile(0.95, x)', max: 3s, on_fail: alert }",
        &[
            "arenas/production.yaml:37:9",
            "reads Prometheus but the analysis names no server",
            "prometheus: env:PROMETHEUS_URL",
        ],
    );
}

#[test]
fn metrics_query_that_does_not_parse() {
    rejects(
        "arenas/production.yaml",
        "      - { name: p95_latency, source: probe, max: 3s, window: 5m, on_fail: alert }",
        "      - { name: p95_latency, source: metrics, query: 'rate(x[5m])', max: 3s, on_fail: alert }",
        &[
            "arenas/production.yaml:37:",
            "query: column 5: unexpected `(x[5m])`",
        ],
    );
}

#[test]
fn prometheus_url_with_an_inline_password() {
    let p = Project::init();
    p.edit(
        "arenas/production.yaml",
        "    min_samples: 50\n",
        "    min_samples: 50\n    prometheus: https://ops:hunter2@prom.example.com\n",
    );
    let out = p.copilot(["validate"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("arenas/production.yaml:33:17"), "{err}");
    assert!(err.contains("password written inline"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

#[test]
fn durations_beyond_ten_years_are_refused_where_they_are_written() {
    rejects(
        "gates/bake.yaml",
        "min: 24h",
        "min: 100000000d",
        &["gates/bake.yaml:7:8", "longer than 3650d"],
    );
    rejects(
        "gates/queue-health.yaml",
        "window: 24h",
        "window: 100000000d",
        &[
            "gates/queue-health.yaml:",
            "`100000000d` is longer than 3650d",
        ],
    );
    // The gates that computed with them answer instead of panicking.
    let p = Project::init();
    p.edit("gates/bake.yaml", "min: 24h", "min: 100000000d");
    let out = p
        .copilot(["gate", "run", "production", "--gate", "bake"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = p
        .copilot(["promote", "local", "staging", "--bake", "100000000d"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn a_huge_definition_is_refused_quickly_and_briefly() {
    let p = Project::init();
    let name = "g".repeat(50 * 1024 * 1024);
    p.write("gates/huge.yaml", &format!("name: {name}\nkind: bake\n"));
    p.write(
        "gates/long-name.yaml",
        &format!("name: {}\nkind: bake\n", "g".repeat(900 * 1024)),
    );
    let out = p.copilot(["validate"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        err.contains("gates/huge.yaml:1:1") && err.contains("at most 1 MiB"),
        "{}",
        &err[..err.len().min(2000)]
    );
    assert!(
        err.contains("gates/long-name.yaml:1:7"),
        "{}",
        &err[..err.len().min(2000)]
    );
    // Echoed values are cut: the report stays a few lines, whatever the input.
    assert!(err.len() < 10_000, "{} bytes of errors", err.len());
}

#[test]
fn yaml_limits_are_said_in_words() {
    let p = Project::init();
    // A billion-laughs style file trips the YAML reader's limits.
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        text.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n",
            p = i - 1
        ));
    }
    text.push_str("name: bomb\nkind: bake\n");
    p.write("gates/bomb.yaml", &text);
    let out = p.copilot(["validate"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("gates/bomb.yaml:"), "{err}");
    assert!(
        !err.contains("Nodes {") && !err.contains("budget breached"),
        "{err}"
    );
    assert!(
        err.contains("than the YAML reader allows") || err.contains("aliases"),
        "{err}"
    );
}

#[test]
fn every_entry_that_cannot_be_a_definition_is_named_and_the_rest_still_checked() {
    let p = Project::init();
    std::fs::write(p.path("arenas/latin1.yaml"), b"name: caf\xe9\n").unwrap();
    std::fs::create_dir(p.path("arenas/folder.yaml")).unwrap();
    std::os::unix::fs::symlink("loop.yaml", p.path("arenas/loop.yaml")).unwrap();
    let fifo = p.path("gates/pipe.yaml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    // And a real mistake in a readable file, still found.
    p.edit("arenas/canary.yaml", "tier: canary", "tier: canery");
    let out = p.copilot(["validate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    for needle in [
        "arenas/latin1.yaml is not UTF-8 text",
        "arenas/folder.yaml is a folder",
        "arenas/loop.yaml cannot be read",
        "gates/pipe.yaml is not a regular file",
        "arenas/canary.yaml:",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn two_local_arenas_on_one_port_and_a_runaway_template_are_errors() {
    let p = Project::init();
    let local = p.read("arenas/local.yaml");
    p.write(
        "arenas/other.yaml",
        &local.replace("name: local", "name: other"),
    );
    let out = p.copilot(["validate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("both route on port 7400"), "{err}");
    std::fs::remove_file(p.path("arenas/other.yaml")).unwrap();

    // Nested loops of 10,000 each: stopped by the template's budget, at once.
    let t = p.read("templates/fly.toml.j2");
    p.write(
        "templates/fly.toml.j2",
        &format!("{t}{{% for i in range(10000) %}}{{% for j in range(10000) %}}x{{% endfor %}}{{% endfor %}}\n"),
    );
    let out = p
        .copilot(["validate"])
        .timeout(std::time::Duration::from_secs(30))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("ran out of fuel"), "{}", stderr(&out));
}

#[test]
fn a_command_gate_must_name_a_program() {
    let p = Project::init();
    p.write(
        "gates/unit.yaml",
        "name: unit\nkind: command\nparams:\n  run: []\n",
    );
    let out = p.copilot(["validate"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{err}");
    assert!(err.contains("gates/unit.yaml:2:7"), "{err}");
    assert!(err.contains("names no program"), "{err}");
}

#[test]
fn kubernetes_names_and_colour_urls_are_checked_where_written() {
    let p = Project::init();
    p.write(
        "arenas/k8s.yaml",
        "name: k8s\ntier: staging\nprovider:\n  kind: kubernetes\n  namespace: Shop_Staging\n  deployment: shop\n\
         \x20 colour_urls: { blue: \"https://blue.example.com\", purple: \"https://p.example.com\" }\n\
         strategy: { kind: blue-green, steps: [{ weight: 100 }] }\n",
    );
    let out = p.copilot(["validate"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{err}");
    assert!(err.contains("arenas/k8s.yaml:5:14"), "{err}");
    assert!(err.contains("not a Kubernetes namespace name"), "{err}");
    assert!(err.contains("`purple` is not a colour"), "{err}");
}
