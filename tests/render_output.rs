//! `copilot render`: every arena's provider configuration parses in its own format.

use crate::common::Project;

#[test]
fn render_production_writes_parseable_configuration() {
    let p = Project::init();
    let out = p.path("out");
    let (code, doc) = p.json([
        "render",
        "production",
        "--out",
        out.to_str().unwrap(),
        "--image",
        "ghcr.io/acme/copilot-service:v1.2.3",
    ]);
    assert_eq!(code, 0, "{doc}");
    let task: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("ecs-task-definition.json")).unwrap(),
    )
    .unwrap();
    let container = &task["containerDefinitions"][0];
    assert_eq!(container["image"], "ghcr.io/acme/copilot-service:v1.2.3");
    let env: Vec<&str> = container["environment"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(env.contains(&"SHOPIFY_API_VERSION") && env.contains(&"WEBHOOK_QUEUE_DRIVER"));
    let secrets: Vec<&str> = container["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(secrets.contains(&"SHOPIFY_ACCESS_TOKEN"));
    assert!(
        !env.contains(&"SHOPIFY_ACCESS_TOKEN"),
        "secret rendered as a plain value"
    );
    let dockerfile = std::fs::read_to_string(out.join("Dockerfile")).unwrap();
    assert!(dockerfile.contains("HEALTHCHECK"), "{dockerfile}");
    assert!(dockerfile.contains("USER 10001"));
}

#[test]
fn every_arena_renders_in_its_own_format() {
    let p = Project::init();
    // The defaults cover local, render, fly and ecs; add a Kubernetes arena.
    p.write(
        "arenas/k8s.yaml",
        "name: k8s\ntier: staging\nprovider: { kind: kubernetes, namespace: copilot, deployment: copilot-service, instances: 3 }\n\
         strategy: { kind: canary, steps: [{ weight: 33 }, { weight: 100 }] }\n\
         env:\n  values: { APP_URL: \"https://k8s.example.com\" }\n  secrets: { SHOPIFY_ACCESS_TOKEN: \"k8s:shopify/token\", OPENAI_API_KEY: \"vault:kv/openai#key\" }\n",
    );
    p.copilot(["validate"]).assert().success();
    let mut seen = std::collections::BTreeSet::new();
    for arena in [
        "local",
        "preview",
        "staging",
        "canary",
        "production",
        "hotfix",
        "k8s",
    ] {
        let out = p.path(&format!("out/{arena}"));
        let (code, doc) = p.json(["render", arena, "--out", out.to_str().unwrap()]);
        assert_eq!(code, 0, "{arena}: {doc}");
        for f in doc["files"].as_array().unwrap() {
            let path = f["path"].as_str().unwrap();
            let text = std::fs::read_to_string(path).unwrap();
            let format = f["format"].as_str().unwrap();
            seen.insert(format.to_string());
            match format {
                "toml" => {
                    let t: toml::Table =
                        toml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}\n{text}"));
                    assert!(t.contains_key("app"));
                }
                "json" => {
                    serde_json::from_str::<serde_json::Value>(&text)
                        .unwrap_or_else(|e| panic!("{path}: {e}\n{text}"));
                }
                "yaml" => {
                    let docs: Vec<serde_json::Value> = serde_saphyr::from_str_multiple(&text)
                        .unwrap_or_else(|e| panic!("{path}: {e}\n{text}"));
                    assert!(!docs.is_empty());
                    if arena == "k8s" {
                        let kinds: Vec<&str> =
                            docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
                        // What a deploy applies: the Deployment, its replica
                        // count (another field manager), the colour's
                        // Service and the arena's.
                        assert_eq!(kinds, ["Deployment", "Deployment", "Service", "Service"]);
                        assert_eq!(docs[1]["spec"]["replicas"], 3);
                        let env = docs[0]["spec"]["template"]["spec"]["containers"][0]["env"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .find(|e| e["name"] == "SHOPIFY_ACCESS_TOKEN")
                            .unwrap();
                        assert_eq!(env["valueFrom"]["secretKeyRef"]["name"], "shopify");
                        assert_eq!(env["valueFrom"]["secretKeyRef"]["key"], "token");
                        assert_eq!(docs[3]["spec"]["selector"]["copilot/colour"], "blue");
                    }
                }
                "dockerfile" => assert!(text.contains("FROM ")),
                other => panic!("unexpected format {other}"),
            }
        }
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["dockerfile", "json", "toml", "yaml"]
    );
}

#[test]
fn dockerfile_builds_the_service_from_files_that_exist() {
    let p = Project::init();
    let out = p.path("out");
    let (code, _) = p.json([
        "render",
        "local",
        "--out",
        out.to_str().unwrap(),
        "--image",
        "copilot-service:v1",
    ]);
    assert_eq!(code, 0);
    let dockerfile = std::fs::read_to_string(out.join("Dockerfile")).unwrap();
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut copied = 0;
    for line in dockerfile.lines().map(str::trim) {
        let Some(args) = line.strip_prefix("COPY ") else {
            continue;
        };
        if args.starts_with("--from") {
            continue;
        }
        let parts: Vec<&str> = args.split_whitespace().collect();
        for src in &parts[..parts.len() - 1] {
            assert!(
                repo.join(src).exists(),
                "the Dockerfile copies {src}, which the repository does not have"
            );
            copied += 1;
        }
    }
    assert!(copied >= 5, "{dockerfile}");
    // It builds and runs the service binary its package declares, as a non-root user, with a health check.
    let manifest: toml::Table = toml::from_str(
        &std::fs::read_to_string(repo.join("crates/copilot-service/Cargo.toml")).unwrap(),
    )
    .unwrap();
    let bins: Vec<&str> = manifest["bin"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    assert!(bins.contains(&"copilot-service"));
    assert!(dockerfile.contains(
        "cargo build --release --locked --package copilot-service --bin copilot-service"
    ));
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/copilot-service\"]"));
    assert!(dockerfile.contains("USER 10001"));
    assert!(dockerfile.contains("HEALTHCHECK") && dockerfile.contains("/health"));
    assert!(dockerfile.matches("\nFROM ").count() >= 2, "multi-stage");
    assert!(repo.join(".dockerignore").is_file());
}

#[test]
fn a_folder_that_cannot_be_written_is_a_dependency_failure() {
    let p = Project::init();
    // A path below a regular file cannot be created, whoever runs the test.
    p.write("not-a-folder", "");
    let out = p.path("not-a-folder/render");
    let (code, doc) = p.json(["render", "production", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 3, "{doc}");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("cannot create"),
        "{doc}"
    );
}

#[test]
fn settings_left_out_take_the_templates_defaults() {
    let p = Project::init();
    p.edit("arenas/production.yaml", "  family: copilot-service\n", "");
    p.edit("arenas/production.yaml", "  region: us-east-1\n", "");
    let out = p.path("out");
    let (code, doc) = p.json(["render", "production", "--out", out.to_str().unwrap()]);
    assert_eq!(code, 0, "{doc}");
    let task: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("ecs-task-definition.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(task["family"], "copilot-service", "{task:#}");
    assert_eq!(
        task["containerDefinitions"][0]["logConfiguration"]["options"]["awslogs-region"],
        "us-east-1"
    );
}
