//! The Render provider against the emulated Render (`render_emulator`):
//! every request copilot makes and every answer it reads passes through
//! Prism with Render's published API description, and every deploy's
//! instance is a real `copilot-service` process carrying real traffic
//! through the emulated edge.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Project, Traffic};
use crate::render_emulator::{Fault, RenderEmulator};

pub(crate) const STAGING: &str = "copilot-staging";
const WORKER: &str = "copilot-worker";
const REPO: &str = "docker.io/acme/copilot";

const ANALYSIS: &str = "    interval: 250ms\n    min_samples: 1\n    metrics:\n\
     \x20     - { name: error_rate, max: 0.05, window: 5m, on_fail: rollback }\n";

/// A project whose `staging` arena (blue-green, 2 instances) is the web
/// service `copilot-staging` of an emulated Render.
pub(crate) struct RenderArenas {
    pub(crate) p: Project,
    pub(crate) render: RenderEmulator,
}

impl RenderArenas {
    pub(crate) fn new(extra: &str) -> RenderArenas {
        let render = RenderEmulator::start(
            &[STAGING],
            &[WORKER],
            REPO,
            &[
                ("SHOPIFY_WEBHOOK_SECRET", "render-kept-secret"),
                ("SHOPIFY_API_VERSION", "2026-07"),
                ("TEAM_SETTING", "kept"),
            ],
        );
        let p = Project::init();
        p.write(
            "arenas/staging.yaml",
            &format!(
                "name: staging\ntier: staging\npromotes_from: local\nprovider:\n  kind: render\n  service: {STAGING}\n  instances: 2\n  ready_timeout: 30s\n{extra}\
                 strategy:\n  kind: blue-green\n  steps: [{{ weight: 100, bake: 5m }}]\n  analysis:\n{ANALYSIS}gates:\n  after: [health]\n\
                 env:\n  values: {{ SHOPIFY_API_VERSION: \"2026-10\", DATABASE_URL: \"sqlite://copilot.db\" }}\n\
                 \x20 secrets: {{ SHOPIFY_WEBHOOK_SECRET: \"render:SHOPIFY_WEBHOOK_SECRET\" }}\n"
            ),
        );
        for f in ["canary", "production", "hotfix", "preview"] {
            let _ = std::fs::remove_file(p.path(&format!("arenas/{f}.yaml")));
        }
        let out = p.copilot(["validate"]).output().unwrap();
        assert!(out.status.success(), "{}", crate::common::stderr(&out));
        for (tag, env) in [
            ("v1", None),
            ("v2", None),
            ("v2-broken", Some("COPILOT_FAULT_5XX_RATE=0.5")),
            ("unhealthy", None),
            ("build-fails", None),
        ] {
            let image = format!("{REPO}:{tag}");
            let mut cmd = p.copilot(["release", "create", "--image", &image]);
            if let Some(e) = env {
                cmd.args(["--env", e]);
            }
            cmd.assert().success();
        }
        RenderArenas { p, render }
    }

    pub(crate) fn run(&self, args: &[&str]) -> (i32, Value) {
        self.run_with(args, &[])
    }

    fn run_with(&self, args: &[&str], extra: &[(&str, &str)]) -> (i32, Value) {
        let mut cmd = self.p.copilot(["--output", "json"]);
        for (k, v) in self.render.env() {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        let out = cmd.args(args).output().unwrap();
        let code = out.status.code().unwrap_or(-1);
        let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{args:?}: stdout is not JSON ({e}): {}\n{}",
                crate::common::stdout(&out),
                crate::common::stderr(&out)
            )
        });
        (code, doc)
    }

    fn spawn(&self, args: &[&str]) -> std::process::Child {
        let env: Vec<(&str, String)> = self.render.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        self.p.spawn(args, &env)
    }

    fn posts(&self, what: &str) -> usize {
        self.render
            .requests()
            .iter()
            .filter(|r| r.starts_with("POST") && r.ends_with(what))
            .count()
    }
}

fn no_violations(render: &RenderEmulator) {
    assert!(
        render.checked_by_prism() > 0,
        "no request went through Prism"
    );
    let v = render.violations();
    assert!(
        v.is_empty(),
        "Prism found requests or answers off the description:\n{}",
        v.join("\n")
    );
}

#[test]
fn render_swaps_on_its_health_check_with_traffic_flowing_and_rolls_back_by_its_own_rollback() {
    let a = RenderArenas::new("");
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v1"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(a.render.serving(STAGING), "v1");
    // The arena's settings reached the service; the team's variables stayed.
    let (_, _, instances, _, _) = a.render.service(STAGING);
    assert_eq!(instances, 2);
    assert_eq!(
        a.render.env_var(STAGING, "TEAM_SETTING").as_deref(),
        Some("kept")
    );
    assert_eq!(
        a.render.env_var(STAGING, "SHOPIFY_API_VERSION").as_deref(),
        Some("2026-10")
    );
    assert!(
        !a.render
            .requests()
            .iter()
            .any(|r| r == &format!("PUT /v1/services/{}/env-vars", a.render.service_id(STAGING))),
        "the replace-all env-vars call is never made"
    );

    let traffic = Traffic::start(&a.render.url(STAGING));
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v2"]);
    assert_eq!(code, 0, "{doc}");
    let seen = traffic.stop();
    assert!(seen.len() > 20, "{} requests", seen.len());
    let failed: Vec<_> = seen.iter().filter(|(_, _, ok)| !ok).collect();
    assert!(
        failed.is_empty(),
        "failed requests across the swap: {failed:?}"
    );
    assert!(seen.iter().any(|(_, r, _)| r == "v1") && seen.iter().any(|(_, r, _)| r == "v2"));
    assert_eq!(a.render.serving(STAGING), "v2");
    let (_, status) = a.run(&["status", "staging"]);
    assert_eq!(status["arenas"][0]["live"]["version"], "v2", "{status:#}");
    assert_eq!(status["arenas"][0]["drift"], false, "{status:#}");
    assert_eq!(status["arenas"][0]["autodeploy"], true, "{status:#}");

    // Rollback goes through Render's rollback to v1's deploy, and warns
    // that autodeploy is on.
    let (code, doc) = a.run(&["rollback", "staging"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["to"], "v1");
    assert_eq!(doc["autodeploy"], "on", "{doc}");
    assert_eq!(a.posts("/rollback"), 1);
    assert_eq!(a.render.serving(STAGING), "v1");
    let (_, status) = a.run(&["status", "staging"]);
    assert_eq!(status["arenas"][0]["drift"], false, "{status:#}");
    a.run(&["unlock", "staging"]);

    // Forward again; a rollback that turns autodeploy off.
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v2"]);
    assert_eq!(code, 0, "{doc}");
    let (code, doc) = a.run(&["rollback", "staging", "--suspend-autodeploy"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["autodeploy"], "turned-off", "{doc}");
    assert!(!a.render.service(STAGING).0);
    let (_, status) = a.run(&["status", "staging"]);
    assert_eq!(status["arenas"][0]["autodeploy"], false, "{status:#}");
    no_violations(&a.render);
}

#[test]
fn a_deploy_that_never_passes_its_health_check_leaves_the_old_one_serving() {
    let a = RenderArenas::new("");
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v1"]);
    assert_eq!(code, 0, "{doc}");
    for (release, status) in [
        ("unhealthy", "update_failed"),
        ("build-fails", "build_failed"),
    ] {
        let (code, doc) = a.run(&["deploy", "staging", "--release", release]);
        assert_eq!(code, 1, "{doc}");
        let message = doc["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(status), "{release}: {doc}");
        assert_eq!(a.render.serving(STAGING), "v1", "{release}");
        let (_, status) = a.run(&["status", "staging"]);
        assert_eq!(status["arenas"][0]["live"]["version"], "v1", "{status:#}");
        assert_eq!(status["arenas"][0]["drift"], false, "{status:#}");
    }
    assert_eq!(a.posts("/rollback"), 0, "nothing else was touched");
    no_violations(&a.render);
}

#[test]
fn a_failing_pre_deploy_command_fails_the_deploy_with_its_status() {
    let a = RenderArenas::new("  release_command: test -n \"$SHOPIFY_API_VERSION\"\n");
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v1"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(
        a.render.service(STAGING).4.as_deref(),
        Some("test -n \"$SHOPIFY_API_VERSION\"")
    );
    a.p.edit(
        "arenas/staging.yaml",
        "release_command: test -n \"$SHOPIFY_API_VERSION\"",
        "release_command: exit 3",
    );
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v2"]);
    assert_eq!(code, 1, "{doc}");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("pre_deploy_failed"),
        "{doc}"
    );
    assert_eq!(a.render.serving(STAGING), "v1");
    // An arena that names no pre-deploy command leaves the service's own.
    a.p.edit("arenas/staging.yaml", "  release_command: exit 3\n", "");
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v2"]);
    assert_eq!(
        code, 1,
        "the service's command (`exit 3`) still runs: {doc}"
    );
    assert_eq!(a.render.service(STAGING).4.as_deref(), Some("exit 3"));
    no_violations(&a.render);
}

#[test]
fn analysis_that_rejects_a_live_release_rolls_back_through_render() {
    let a = RenderArenas::new("");
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v1"]);
    assert_eq!(code, 0, "{doc}");
    let (code, doc) = a.run(&[
        "promote",
        "local",
        "staging",
        "--release",
        "v2-broken",
        "--yes",
        "--bake",
        "3s",
    ]);
    assert_eq!(code, 1, "{doc}");
    assert_eq!(doc["state"], "rolled-back", "{doc}");
    assert_eq!(a.posts("/rollback"), 1);
    assert_eq!(a.render.serving(STAGING), "v1");
    // v1's variables are back: the broken release's own is gone.
    assert_eq!(a.render.env_var(STAGING, "COPILOT_FAULT_5XX_RATE"), None);
    let (_, status) = a.run(&["status", "staging"]);
    assert_eq!(status["arenas"][0]["live"]["version"], "v1", "{status:#}");
    assert_eq!(status["arenas"][0]["drift"], false, "{status:#}");
    no_violations(&a.render);
}

#[test]
fn deploys_made_outside_copilot_are_drift_and_an_existing_service_is_adopted() {
    let a = RenderArenas::new("");
    // The service already runs an image nobody deployed with copilot.
    a.render
        .deploy_by_hand(STAGING, &format!("{REPO}:handmade"));
    a.render.settle(STAGING);
    assert_eq!(a.render.serving(STAGING), format!("{REPO}:handmade"));
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v1"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(a.render.serving(STAGING), "v1");
    let (code, doc) = a.run(&["rollback", "staging"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["to"], "adopted-handmade", "{doc}");
    a.run(&["unlock", "staging"]);
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v1"]);
    assert_eq!(code, 0, "{doc}");

    // A push that autodeploys is drift, named with its trigger.
    a.render
        .push(STAGING, &format!("{REPO}:pushed"))
        .expect("autodeploy is on");
    a.render.settle(STAGING);
    let (_, status) = a.run(&["status", "staging"]);
    let arena = &status["arenas"][0];
    assert_eq!(arena["drift"], true, "{status:#}");
    assert!(
        arena["platform_drift"].to_string().contains("new_commit"),
        "{status:#}"
    );
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v2"]);
    assert_eq!(code, 4, "a deploy over drift is refused: {doc}");
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v2", "--adopt-drift"]);
    assert_eq!(code, 0, "{doc}");

    // Render's own rollback shows too.
    a.render.roll_back_by_itself(STAGING);
    a.render.settle(STAGING);
    let (_, status) = a.run(&["status", "staging"]);
    assert!(
        status["arenas"][0]["platform_drift"]
            .to_string()
            .contains("rollback"),
        "{status:#}"
    );
    no_violations(&a.render);
}

#[test]
fn killed_while_render_deploys_resume_follows_the_same_deploy_and_abort_cancels_it() {
    let a = RenderArenas::new("");
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v1"]);
    assert_eq!(code, 0, "{doc}");
    for finish in ["resume", "abort"] {
        let before = a.posts("/deploys");
        let mut child = a.spawn(&["deploy", "staging", "--release", "v2"]);
        // Killed once the deploy exists and is being followed.
        let deadline = Instant::now() + Duration::from_secs(30);
        while a.posts("/deploys") == before {
            assert!(Instant::now() < deadline, "no deploy was made");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(300));
        child.kill().unwrap();
        child.wait().unwrap();
        let args: &[&str] = match finish {
            "resume" => &["resume", "staging", "--bake", "1s"],
            _ => &["abort", "staging"],
        };
        let (code, doc) = a.run(args);
        assert_eq!(code, 0, "{finish}: {doc}");
        assert_eq!(
            a.posts("/deploys"),
            before + 1,
            "{finish}: one deploy, never a second"
        );
        a.render.settle(STAGING);
        match finish {
            "resume" => assert_eq!(a.render.serving(STAGING), "v2"),
            _ => {
                assert!(a.posts("/cancel") >= 1, "abort cancels the deploy");
                let (_, status, _, image) = a.render.deploys(STAGING).pop().unwrap();
                assert_eq!(
                    (status.as_str(), image.as_str()),
                    ("canceled", "docker.io/acme/copilot:v2")
                );
                assert_eq!(
                    a.render.serving(STAGING),
                    "v1",
                    "the release before the aborted one"
                );
            }
        }
        let (_, status) = a.run(&["status", "staging"]);
        assert_eq!(status["arenas"][0]["lock"], Value::Null, "{status:#}");
        // The next round deploys v2 again over v2: start from v1.
        if finish == "resume" {
            let (code, doc) = a.run(&["deploy", "staging", "--release", "v1"]);
            assert_eq!(code, 0, "{doc}");
        }
    }
    no_violations(&a.render);
}

#[test]
fn render_errors_are_shown_with_their_exit_code_and_a_hint() {
    let a = RenderArenas::new("");
    let (code, doc) = a.run_with(
        &["deploy", "staging", "--release", "v1"],
        &[("RENDER_API_KEY", "rnd_wrong")],
    );
    assert_eq!(code, 3, "{doc}");
    assert!(
        doc["error"]["hint"]
            .as_str()
            .unwrap_or_default()
            .contains("RENDER_API_KEY"),
        "{doc}"
    );
    a.p.edit(
        "arenas/staging.yaml",
        &format!("service: {STAGING}"),
        "service: srv-doesnotexist00",
    );
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v1"]);
    assert_eq!(code, 3, "{doc}");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("service not found"),
        "{doc}"
    );
    // A `render:` secret the service does not have is named, never read.
    a.p.edit(
        "arenas/staging.yaml",
        "service: srv-doesnotexist00",
        &format!("service: {STAGING}"),
    );
    a.p.edit(
        "arenas/staging.yaml",
        "render:SHOPIFY_WEBHOOK_SECRET",
        "render:SHOPIFY_SECRET_NOT_SET",
    );
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v1"]);
    assert_eq!(code, 3, "{doc}");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("SHOPIFY_SECRET_NOT_SET"),
        "{doc}"
    );
    assert_eq!(a.posts("/deploys"), 0, "nothing was deployed");
    a.p.edit(
        "arenas/staging.yaml",
        "render:SHOPIFY_SECRET_NOT_SET",
        "render:SHOPIFY_WEBHOOK_SECRET",
    );
    a.p.edit(
        "arenas/staging.yaml",
        &format!("service: {STAGING}"),
        "service: srv-doesnotexist00",
    );
    // Render's limit on deploys is waited out, from its rate-limit headers.
    a.p.edit(
        "arenas/staging.yaml",
        "service: srv-doesnotexist00",
        &format!("service: {STAGING}"),
    );
    a.render.queue_answers(true);
    a.render.inject_on(
        "POST /v1/services/{serviceId}/deploys",
        Fault::Status(429, Some(2)),
    );
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v1"]);
    assert_eq!(code, 0, "a 429 and a 202 without a body: {doc}");
    assert_eq!(a.render.serving(STAGING), "v1");
    // Render's limit of deploys a service may take in a window: the one
    // over it is refused with a 429, waited out, and sent again.
    a.render.queue_answers(false);
    a.render.limit_deploys(1, Duration::from_secs(4));
    let before = a.posts("/deploys");
    for v in ["v2", "v1"] {
        let (code, doc) = a.run(&["deploy", "staging", "--release", v]);
        assert_eq!(code, 0, "{v}: {doc}");
    }
    assert!(
        a.posts("/deploys") >= before + 3,
        "a deploy refused by the limit was sent again"
    );
    assert_eq!(a.render.serving(STAGING), "v1");
    no_violations(&a.render);
}

#[test]
fn the_worker_is_deployed_and_rolled_back_with_the_web_service() {
    let a = RenderArenas::new(&format!("  worker: {WORKER}\n"));
    for v in ["v1", "v2"] {
        let (code, doc) = a.run(&["deploy", "staging", "--release", v]);
        assert_eq!(code, 0, "{v}: {doc}");
        assert_eq!(a.render.serving(STAGING), v);
        assert_eq!(
            a.render.serving(WORKER),
            v,
            "the worker runs the same release"
        );
    }
    let (code, doc) = a.run(&["rollback", "staging"]);
    assert_eq!(code, 0, "{doc}");
    a.render.settle(WORKER);
    assert_eq!(a.render.serving(STAGING), "v1");
    assert_eq!(
        a.render.serving(WORKER),
        "v1",
        "the worker is rolled back too"
    );
    let rollbacks = a.posts("/rollback");
    assert_eq!(rollbacks, 2, "one Render rollback per service");
    no_violations(&a.render);
}

/// Prism's copy of the description accepts a service body of any type's
/// details (`anyOf`); the emulator's bodies are held to their own type's
/// branch of the published description here.
#[test]
fn the_emulated_services_match_their_own_branch_of_the_description() {
    let render = RenderEmulator::start(&[STAGING], &[WORKER], REPO, &[]);
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string("tests/specs/render-openapi.prism.json").unwrap(),
    )
    .unwrap();
    let branch = |name: &str| {
        let schema = serde_json::json!({
            "$ref": format!("#/components/schemas/{name}"),
            "components": spec["components"],
            "paths": spec["paths"],
        });
        jsonschema::validator_for(&schema).unwrap()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let list: Value = rt.block_on(async {
        reqwest::Client::new()
            .get(format!("{}/services?limit=20", render.api))
            .bearer_auth(&render.key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    let services = list.as_array().unwrap();
    assert_eq!(services.len(), 2, "{list:#}");
    // The branches are strict: a worker's details are not a web service's.
    let worker = services
        .iter()
        .find(|s| s["service"]["type"] == "background_worker")
        .unwrap();
    assert!(!branch("webServiceDetails").is_valid(&worker["service"]["serviceDetails"]));
    for item in services {
        let s = &item["service"];
        let details = match s["type"].as_str().unwrap() {
            "web_service" => "webServiceDetails",
            "background_worker" => "backgroundWorkerDetails",
            other => panic!("unexpected type {other}"),
        };
        let errors: Vec<String> = branch(details)
            .iter_errors(&s["serviceDetails"])
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", s["name"]);
        let errors: Vec<String> = branch("envSpecificDetails")
            .iter_errors(&s["serviceDetails"]["envSpecificDetails"])
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{}: {errors:?}", s["name"]);
    }
    no_violations(&render);
}

#[test]
fn a_preview_is_a_render_service_preview_and_down_deletes_only_it() {
    let a = RenderArenas::new("");
    a.p.write(
        "arenas/preview.yaml",
        &format!(
            "name: preview\ntier: preview\nprovider:\n  kind: render\n  service: {STAGING}\n  ready_timeout: 30s\n\
             strategy: {{ kind: immediate }}\n\
             preview:\n  ttl: 72h\n  name: copilot-pr-{{pr}}\n  seed:\n    google-search-status: fixtures/feeds/google-search-incidents.json\n\
             gates:\n  after: [health]\n\
             env:\n  values: {{ SHOPIFY_API_VERSION: \"2026-10\", DATABASE_URL: \"sqlite://copilot.db\", COPILOT_NOW: \"2026-11-20T12:00:00Z\" }}\n"
        ),
    );
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v1"]);
    assert_eq!(code, 0, "{doc}");

    let (code, up) = a.run(&["preview", "up", "--pr", "7", "--release", "v2"]);
    assert_eq!(code, 0, "{up}");
    // Made by Render's service preview of the staging service.
    assert_eq!(a.posts("/preview"), 1);
    let made = a
        .render
        .service_named("copilot-pr-7")
        .expect("the preview service");
    assert_eq!(made["type"], "web_service");
    let url = up["url"].as_str().unwrap().to_string();
    assert_eq!(made["serviceDetails"]["url"], url.as_str());
    let (_, body) = crate::previews::get(&format!(
        "{url}/api/recommendations?shop=review.myshopify.com"
    ))
    .expect("the preview answers");
    assert!(body.contains("November 2026 core update"), "{body}");

    // Up again: the same service, a new deploy; no second preview.
    let (code, again) = a.run(&["preview", "up", "--pr", "7", "--release", "v2"]);
    assert_eq!(code, 0, "{again}");
    assert_eq!(again["url"], up["url"]);
    assert_eq!(a.posts("/preview"), 1);

    let (code, down) = a.run(&["preview", "down", "--pr", "7"]);
    assert_eq!(code, 0, "{down}");
    assert!(a.render.service_named("copilot-pr-7").is_none());
    assert_eq!(a.render.running("copilot-pr-7"), 0);
    assert!(
        a.render.service_named(STAGING).is_some(),
        "the base service stays"
    );
    assert!(a.render.running(STAGING) > 0);
    let v = a.render.violations();
    assert!(v.is_empty(), "{}", v.join("\n"));
}
