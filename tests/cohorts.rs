//! Merchant cohorts: a canary step that sends one cohort's shops (by
//! `X-Shopify-Shop-Domain` or `?shop=`) to the new release through the
//! local router while everyone else stays on the old one, flags on for a
//! cohort answered per shop, and providers that cannot route by header
//! refusing cohort steps in `validate`.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::Project;
use crate::rollouts::{Arenas, block_on, ledger_steps};

const PILOT: [&str; 2] = ["pilot-a.myshopify.com", "pilot-b.myshopify.com"];

fn cohort_arenas() -> Arenas {
    let a = Arenas::new();
    a.p.edit(
        "arenas/stage.yaml",
        "steps: [{ weight: 10, bake: 5m }, { weight: 50, bake: 5m }, { weight: 100, bake: 5m }]",
        "steps: [{ cohort: pilot, bake: 5m }, { weight: 100 }]",
    );
    let yaml = std::fs::read_to_string(a.p.path("arenas/stage.yaml")).unwrap();
    a.p.write(
        "arenas/stage.yaml",
        &format!(
            "{yaml}cohorts:\n  pilot: {{ shops: [{}] }}\nflags:\n  aiRecommendations: {{ cohort: pilot }}\n  reviews: true\n",
            PILOT.join(", ")
        ),
    );
    a.p.copilot(["validate"]).assert().success();
    a
}

/// The release and flags `/api/flags` and `/health` answer for a request
/// through the arena's router as `shop` (header or query) or as nobody.
fn ask(port: u16, path: &str, shop: Option<(&str, bool)>) -> Value {
    block_on(async {
        let client = reqwest::Client::new();
        let mut url = format!("http://127.0.0.1:{port}{path}");
        let mut req = client.get(&url);
        match shop {
            Some((shop, true)) => req = req.header("X-Shopify-Shop-Domain", shop),
            Some((shop, false)) => {
                url.push_str(&format!("?shop={shop}"));
                req = client.get(&url);
            }
            None => {}
        }
        req.send().await.unwrap().json().await.unwrap()
    })
}

fn release_for(port: u16, shop: Option<(&str, bool)>) -> String {
    ask(port, "/health", shop)["release"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_cohort_step_sends_only_the_cohorts_shops_to_the_new_release() {
    let a = cohort_arenas();
    assert_eq!(a.promote("v1").0, 0);
    a.run(&["deploy", "local", "--release", "v2"]);
    let promotion = a.p.spawn(
        [
            "--output", "json", "promote", "local", "stage", "--yes", "--bake", "6s",
        ],
        &[],
    );
    let port = a.stage_port;
    // Wait for the cohort step.
    let deadline = Instant::now() + Duration::from_secs(60);
    while release_for(port, Some((PILOT[0], true))) != "v2" {
        assert!(Instant::now() < deadline, "the cohort never reached v2");
        std::thread::sleep(Duration::from_millis(100));
    }
    for _ in 0..10 {
        assert_eq!(release_for(port, Some((PILOT[0], true))), "v2");
        assert_eq!(release_for(port, Some((PILOT[1], false))), "v2", "?shop=");
        assert_eq!(
            release_for(port, Some(("PILOT-A.myshopify.com", true))),
            "v2"
        );
        assert_eq!(release_for(port, Some(("other.myshopify.com", true))), "v1");
        assert_eq!(
            release_for(port, Some(("other.myshopify.com", false))),
            "v1"
        );
        assert_eq!(release_for(port, None), "v1");
    }
    // Flags on for the cohort are on for its shops only, and per shop.
    let pilot = ask(port, "/api/flags", Some((PILOT[1], false)));
    assert_eq!(pilot["flags"]["aiRecommendations"], true, "{pilot}");
    assert_eq!(pilot["flags"]["reviews"], true);
    assert_eq!(pilot["cohorts"], serde_json::json!(["pilot"]));
    assert_eq!(pilot["shop"], PILOT[1]);
    let other = ask(port, "/api/flags", Some(("other.myshopify.com", false)));
    assert_eq!(other["flags"]["aiRecommendations"], false, "{other}");

    let out = promotion.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["plan"]["steps"],
        serde_json::json!(["cohort pilot", "100%"])
    );
    let names: Vec<String> = ledger_steps(&a.p, doc["deployment"].as_str().unwrap())
        .into_iter()
        .map(|s| s.name)
        .collect();
    // In order: the cohort routed, baked, then everyone shifted and the
    // cohort's route removed.
    let order: Vec<usize> = ["cohort-pilot", "bake-pilot", "shift-100", "cohort-end"]
        .iter()
        .map(|n| {
            names
                .iter()
                .position(|x| x == n)
                .unwrap_or_else(|| panic!("{n} missing from {names:?}"))
        })
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{names:?}");
    for shop in [
        Some((PILOT[0], true)),
        Some(("other.myshopify.com", true)),
        None,
    ] {
        assert_eq!(release_for(port, shop), "v2");
    }
}

#[test]
fn a_release_the_cohorts_analysis_rejects_is_rolled_back_for_the_cohort_too() {
    let a = cohort_arenas();
    assert_eq!(a.promote("v1").0, 0);
    let (code, doc) = a.promote("v2-broken");
    assert_eq!(code, 1, "{doc:#}");
    assert!(
        doc["summary"].as_str().unwrap().contains("in cohort pilot"),
        "{doc:#}"
    );
    for shop in [Some((PILOT[0], true)), Some((PILOT[1], false)), None] {
        assert_eq!(release_for(a.stage_port, shop), "v1");
    }
    let (_, list) = a.run(&["incident", "list", "stage"]);
    let impact = list["incidents"][0]["impact"].as_str().unwrap();
    assert!(impact.ends_with("in cohort pilot"), "{impact}");
}

#[test]
fn cohort_steps_are_refused_where_they_cannot_run() {
    let p = Project::init();
    let validate = |p: &Project| {
        let out = p.copilot(["validate"]).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // Fly cannot route by header.
    p.edit(
        "arenas/canary.yaml",
        "- { weight: 25, bake: 5m }",
        "- { cohort: pilot, bake: 5m }",
    );
    p.edit(
        "arenas/canary.yaml",
        "cohort:\n",
        "cohorts:\n  pilot: { shops: [dev-hotrod.myshopify.com] }\ncohort:\n",
    );
    let (code, err) = validate(&p);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("arenas/canary.yaml:")
            && err.contains("cannot route a cohort's requests by header"),
        "{err}"
    );
    // An undefined cohort, and a cohort after a weight step.
    p.edit(
        "arenas/canary.yaml",
        "{ cohort: pilot, bake: 5m }",
        "{ cohort: beta, bake: 5m }",
    );
    let (_, err) = validate(&p);
    assert!(
        err.contains("cohort `beta` is not defined") && err.contains("defined: pilot"),
        "{err}"
    );
    p.edit(
        "arenas/canary.yaml",
        "{ cohort: beta, bake: 5m }",
        "{ weight: 25, bake: 5m }",
    );
    p.edit(
        "arenas/canary.yaml",
        "- { weight: 50, bake: 10m }",
        "- { cohort: pilot }",
    );
    let (_, err) = validate(&p);
    assert!(
        err.contains("a cohort step comes after a weight step"),
        "{err}"
    );
    // A flag for an undefined cohort, and a shop that is no domain.
    p.edit(
        "arenas/canary.yaml",
        "- { cohort: pilot }",
        "- { weight: 50, bake: 10m }",
    );
    p.edit(
        "arenas/canary.yaml",
        "aiRecommendations: false",
        "aiRecommendations: { cohort: nope }",
    );
    p.edit(
        "arenas/canary.yaml",
        "[dev-hotrod.myshopify.com]",
        "[\"Not A Shop\"]",
    );
    let (code, err) = validate(&p);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("flag `aiRecommendations` names cohort `nope`"),
        "{err}"
    );
    assert!(err.contains("`Not A Shop` is not a shop domain"), "{err}");
}
