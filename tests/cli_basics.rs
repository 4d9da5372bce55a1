//! The provider-free commands: init, arenas, release, status, history,
//! approve, lock/unlock, schema, completions, and their exit codes.

use crate::common::{Project, copilot, stderr, stdout};

#[test]
fn init_into_a_new_directory_then_validate() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("x");
    copilot().arg("init").arg(&dir).assert().success();
    for f in [
        "arenas/production.yaml",
        "gates/queue-health.yaml",
        "templates/fly.toml.j2",
        "Dockerfile.tmpl",
        "schemas/arena.schema.json",
    ] {
        assert!(dir.join(f).is_file(), "{f} missing");
    }
    copilot()
        .arg("--root")
        .arg(&dir)
        .arg("validate")
        .assert()
        .success();
}

#[test]
fn init_keeps_existing_files_unless_forced() {
    let p = Project::init();
    p.write("arenas/local.yaml", "# mine\n");
    let out = p.copilot(["init", "."]).output().unwrap();
    assert!(out.status.success());
    assert!(stdout(&out).contains("kept  arenas/local.yaml"));
    assert_eq!(p.read("arenas/local.yaml"), "# mine\n");
    p.copilot(["init", ".", "--force"]).assert().success();
    assert!(p.read("arenas/local.yaml").contains("name: local"));
}

#[test]
fn arenas_list_json_has_the_six_arenas() {
    let p = Project::init();
    let (code, doc) = p.json(["arenas", "list"]);
    assert_eq!(code, 0);
    let arenas = doc["arenas"].as_array().unwrap();
    let summary: Vec<(String, String, String)> = arenas
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_string(),
                a["provider"].as_str().unwrap().to_string(),
                a["strategy"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expect = [
        ("local", "local", "blue-green"),
        ("preview", "render", "immediate"),
        ("staging", "fly", "blue-green"),
        ("canary", "fly", "canary"),
        ("production", "ecs", "blue-green"),
        ("hotfix", "ecs", "blue-green"),
    ];
    assert_eq!(summary.len(), 6);
    for (name, provider, strategy) in expect {
        assert!(
            summary.contains(&(name.into(), provider.into(), strategy.into())),
            "{name} missing or wrong in {summary:?}"
        );
    }
}

#[test]
fn arenas_show_gives_references_not_secret_values() {
    let p = Project::init();
    let out = p
        .copilot(["arenas", "show", "canary"])
        .env("CANARY_SHOPIFY_ACCESS_TOKEN", "shpat_must_not_appear")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("SHOPIFY_ACCESS_TOKEN=<secret from env:CANARY_SHOPIFY_ACCESS_TOKEN>"),
        "{text}"
    );
    assert!(!text.contains("shpat_must_not_appear"));
    let (_, doc) = p.json(["arenas", "show", "production"]);
    assert_eq!(doc["strategy"]["kind"], "blue-green");
    let weights: Vec<u64> = doc["strategy"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["weight"].as_u64().unwrap())
        .collect();
    assert_eq!(weights, [10, 50, 100]);
    assert_eq!(doc["env"]["secrets"]["DATABASE_URL"]["store"], "aws-sm");
    let metrics = doc["strategy"]["analysis"]["metrics"].as_array().unwrap();
    assert_eq!(metrics[0]["on_fail"], "rollback");
    assert_eq!(metrics[0]["limit"]["max"], 0.05);
    assert_eq!(metrics[1]["limit"]["max"], "3s");
    assert_eq!(metrics[2]["limit"]["count"], 3);
    assert_eq!(doc["windows"]["allow"][0], "Tue-Thu 10:00-14:00");
    assert_eq!(doc["windows"]["freeze"][0], "black-friday-week");
}

#[test]
fn unknown_arena_is_invalid_input() {
    let p = Project::init();
    let out = p.copilot(["arenas", "show", "prod"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("did you mean `production`?"));
    let (code, doc) = p.json(["arenas", "show", "prod"]);
    assert_eq!(code, 2);
    assert_eq!(doc["error"]["exit_code"], 2);
}

#[test]
fn bad_arguments_exit_2() {
    let p = Project::init();
    let out = p.copilot(["promote-everything"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn argument_errors_print_one_json_document_with_output_json() {
    let p = Project::init();
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "--output", "json", "promote", "local", "stage", "--bake", "banana",
            ],
            "banana",
        ),
        (
            &["--output", "json", "status", "--frobnicate"],
            "--frobnicate",
        ),
        (
            &["--output=json", "promote-everything"],
            "promote-everything",
        ),
        (&["--output", "json", "deploy", "local"], "--release"),
        (&["--output", "json", "history", "--limit", "abc"], "abc"),
        // The flag is global: it may follow the subcommand.
        (&["history", "--limit", "abc", "--output", "json"], "abc"),
        (&["--output", "json", "gate"], "subcommand"),
    ];
    for (args, named) in cases {
        let out = p.copilot(*args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let text = stdout(&out);
        let mut docs = serde_json::Deserializer::from_str(&text).into_iter::<serde_json::Value>();
        let doc = docs
            .next()
            .unwrap_or_else(|| panic!("{args:?}: no JSON on stdout"))
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {text}"));
        assert!(docs.next().is_none(), "{args:?}: more than one document");
        assert_eq!(doc["error"]["exit_code"], 2, "{args:?}");
        let message = doc["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(named),
            "{args:?}: the message names {named}: {message}"
        );
        assert!(!message.starts_with("error:"), "{message}");
        // People still get clap's own text on stderr.
        assert!(!stderr(&out).trim().is_empty(), "{args:?}");
    }
    // Without --output json, stdout stays empty; help is not an error.
    let out = p.copilot(["history", "--limit", "abc"]).output().unwrap();
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(2), ""));
    let out = p.copilot(["--output", "json", "--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn no_project_found() {
    let tmp = tempfile::tempdir().unwrap();
    let out = copilot()
        .current_dir(tmp.path())
        .arg("validate")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no arenas/ directory"));
}

#[test]
fn release_create_list_and_history() {
    let p = Project::init();
    let digest = format!("sha256:{}", "ab".repeat(32));
    let image = format!("ghcr.io/acme/copilot-service:v1.4.0@{digest}");
    let (code, doc) = p.json([
        "release",
        "create",
        "--image",
        &image,
        "--git-sha",
        "0a1b2c3d",
    ]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["release"]["version"], "v1.4.0");
    assert_eq!(doc["release"]["digest"], digest);
    assert!(
        doc["release"]["config_hash"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    // Same version twice: invalid input.
    let (code, _) = p.json(["release", "create", "--image", &image]);
    assert_eq!(code, 2);
    // No tag and no --version.
    let (code, doc) = p.json([
        "release",
        "create",
        "--image",
        "ghcr.io/acme/copilot-service",
    ]);
    assert_eq!(code, 2);
    assert!(doc["error"]["hint"].as_str().unwrap().contains("--version"));
    let (code, doc) = p.json(["release", "list"]);
    assert_eq!(code, 0);
    assert_eq!(doc["releases"].as_array().unwrap().len(), 1);
    let (code, doc) = p.json(["history"]);
    assert_eq!(code, 0);
    assert_eq!(doc["deployments"].as_array().unwrap().len(), 0);
}

#[test]
fn approve_records_an_approval() {
    let p = Project::init();
    p.copilot(["release", "create", "--image", "copilot-service:v2"])
        .assert()
        .success();
    let (code, doc) = p.json([
        "approve",
        "production",
        "--release",
        "v2",
        "--note",
        "QA signed off",
    ]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["approvals"], 1);
    assert_eq!(doc["approval"]["approver"], "tester");
    let (code, _) = p.json(["approve", "production", "--release", "v9"]);
    assert_eq!(code, 2);
}

#[test]
fn lock_blocks_and_unlock_releases() {
    let p = Project::init();
    p.copilot(["lock", "production", "--reason", "incident 42"])
        .assert()
        .success();
    let out = p
        .copilot(["lock", "production", "--reason", "second"])
        .env("COPILOT_ACTOR", "someone-else")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    let err = stderr(&out);
    assert!(
        err.contains("locked by tester") && err.contains("incident 42"),
        "{err}"
    );

    let (code, doc) = p.json(["status", "production"]);
    assert_eq!(code, 0);
    assert_eq!(doc["arenas"][0]["lock"]["reason"], "incident 42");
    assert_eq!(doc["arenas"][0]["lock"]["kind"], "manual");

    let (code, doc) = p.json(["unlock", "production", "--reason", "resolved"]);
    assert_eq!(code, 0);
    assert_eq!(doc["unlocked"], true);
    let (code, doc) = p.json(["unlock", "production"]);
    assert_eq!(code, 0);
    assert_eq!(doc["unlocked"], false);
    p.copilot(["lock", "production", "--reason", "again"])
        .assert()
        .success();
}

#[test]
fn status_shows_windows_and_freezes() {
    let p = Project::init();
    // Black Friday 2026 is November 27.
    let out = p
        .copilot(["status", "production"])
        .env("COPILOT_NOW", "2026-11-27T11:00:00Z")
        .output()
        .unwrap();
    assert!(
        stdout(&out).contains("frozen    black-friday-week"),
        "{}",
        stdout(&out)
    );
    let (_, doc) = p.json(["status", "production"]);
    assert!(doc["arenas"][0]["window"].is_object());
    let out = p
        .copilot(["--output", "json", "status", "canary"])
        .env("COPILOT_NOW", "2026-12-01T11:00:00Z") // a Tuesday, in the window
        .output()
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["arenas"][0]["window"]["open"], true);
    assert_eq!(
        doc["arenas"][0]["window"]["freezes"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn unreachable_ledger_is_a_dependency_failure() {
    let p = Project::init();
    let out = p
        .copilot(["status"])
        .env(
            "COPILOT_LEDGER_URL",
            "postgres://nobody:pw@127.0.0.1:1/none?connect_timeout=1",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains(":pw@"),
        "password leaked: {}",
        stderr(&out)
    );
}

#[test]
fn schema_and_completions() {
    let p = Project::init();
    let (code, doc) = p.json(["schema", "arena"]);
    assert_eq!(code, 0);
    assert_eq!(doc["title"], "copilot arena definition");
    assert!(doc["properties"]["strategy"].is_object());
    let (code, doc) = p.json(["schema", "gate"]);
    assert_eq!(code, 0);
    assert_eq!(doc["oneOf"].as_array().unwrap().len(), 13);
    let out = p.copilot(["completions", "bash"]).output().unwrap();
    assert!(out.status.success());
    assert!(stdout(&out).contains("_copilot()"));
}

#[test]
fn published_schemas_are_current() {
    let root = env!("CARGO_MANIFEST_DIR");
    for (kind, file) in [
        ("arena", "schemas/arena.schema.json"),
        ("gate", "schemas/gate.schema.json"),
    ] {
        let out = copilot()
            .args(["--root", root, "schema", kind])
            .output()
            .unwrap();
        let committed = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        assert_eq!(
            stdout(&out),
            committed,
            "{file} is stale: run `cargo run -- schema {kind} > {file}`"
        );
    }
}

#[test]
fn no_colour_when_not_a_terminal() {
    let p = Project::init();
    p.edit(
        "arenas/canary.yaml",
        "strategy:\n  kind: canary",
        "stratgy:\n  kind: canary",
    );
    let out = p.copilot(["validate"]).output().unwrap();
    assert!(
        !stderr(&out).contains('\u{1b}'),
        "escape codes in piped output"
    );
}

#[test]
fn help_documents_exit_codes() {
    let out = copilot().arg("--help").output().unwrap();
    let text = stdout(&out);
    for line in [
        "0  success",
        "1  a gate failed",
        "2  invalid input",
        "3  provider or dependency failure",
        "4  blocked",
        "5  inconclusive",
    ] {
        assert!(text.contains(line), "{line} missing from --help");
    }
}

#[test]
fn release_create_refuses_secrets_and_versions_that_are_not_names() {
    let p = Project::init();
    let create = |args: &[&str]| {
        let out = p
            .copilot(["--output", "json", "release", "create"])
            .args(args)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap(), text)
    };
    let image = ["--image", "ghcr.io/acme/copilot-service:v1"];
    // A URL with a password, or a secret-like name: refused, the value never echoed.
    let (code, text) = create(
        &[
            &image[..],
            &["--env", "DATABASE_URL=postgres://u:hunter2@db/app"],
        ]
        .concat(),
    );
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("password written inline") && !text.contains("hunter2"),
        "{text}"
    );
    let (code, text) = create(&[&image[..], &["--env", "STRIPE_SECRET=sk_live_abc"]].concat());
    assert_eq!(code, 2, "{text}");
    assert!(
        text.contains("looks like a secret") && !text.contains("sk_live_abc"),
        "{text}"
    );
    // Versions are names: no slashes, dots in a row, control characters or 5,000 characters.
    let long = "v".repeat(5_000);
    for bad in ["a/b", "..", "v1\nrm", long.as_str()] {
        let (code, text) = create(&[&image[..], &["--version", bad]].concat());
        assert_eq!(code, 2, "{bad:?}: {text}");
        assert!(text.len() < 2_000, "the long version is not echoed whole");
    }
    let (_, list) = p.json(["release", "list"]);
    assert_eq!(list["releases"].as_array().map(Vec::len), Some(0), "{list}");
    // What is a name and a plain value is kept.
    let (code, text) = create(
        &[
            &image[..],
            &[
                "--version",
                "v1.4.0-rc.1+build.7",
                "--env",
                "LOG_LEVEL=debug",
            ],
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{text}");
}
