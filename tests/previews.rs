//! Previews per pull request on the local provider: `preview up` deploys
//! the release into an arena instance of its own, the service ingests the
//! seed feeds, the preview arena's gates run; `preview down` removes what
//! `up` made and nothing else; `preview gc` removes expired previews, and
//! those whose pull request GitHub reports closed or merged, once each
//! however many run at once.

use serde_json::Value;

use crate::common::Project;

/// When every command of these tests runs: the seed feeds' core update is
/// rolling out then, so the recommendations say so.
const T0: &str = "2026-11-20T12:00:00Z";

/// A project whose preview arena runs on the local provider.
pub(crate) fn preview_project() -> Project {
    let p = Project::init_at(Some(T0));
    p.write(
        "arenas/preview.yaml",
        "name: preview\ntier: preview\nprovider: { kind: local }\nstrategy: { kind: immediate }\n\
         preview:\n  ttl: 72h\n  name: shop-pr-{pr}\n  seed:\n\
         \x20   google-search-status: fixtures/feeds/google-search-incidents.json\n\
         \x20   shopify-changelog: fixtures/feeds/shopify-changelog.rss\n\
         gates:\n  before: [env]\n  after: [health]\n\
         env:\n  required: [APP_URL, DATABASE_URL]\n  values:\n\
         \x20   APP_URL: http://127.0.0.1:{port}\n\
         \x20   DATABASE_URL: sqlite://.copilot/local/{arena}/service.db\n\
         \x20   WEBHOOK_QUEUE_DRIVER: memory\n\
         \x20   SHOPIFY_SHOP: dev-hotrod.myshopify.com\n\
         \x20   SHOPIFY_API_VERSION: \"2026-10\"\n\
         \x20   COPILOT_NOW: \"2026-11-20T12:00:00Z\"\n",
    );
    p.copilot(["validate"]).assert().success();
    p.copilot([
        "release",
        "create",
        "--image",
        "copilot-service:v1",
        "--git-sha",
        "4f2c1a9",
    ])
    .assert()
    .success();
    p
}

pub(crate) fn get(url: &str) -> Option<(u16, String)> {
    let out = std::process::Command::new("curl")
        .args(["-s", "-m", "5", "-w", "\n%{http_code}", url])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n')?;
    let code: u16 = code.trim().parse().ok()?;
    (code != 0).then(|| (code, body.to_string()))
}

fn previews(p: &Project) -> Vec<Value> {
    let (code, doc) = p.json(["preview", "list", "--all"]);
    assert_eq!(code, 0);
    doc["previews"].as_array().unwrap().clone()
}

fn state_of(p: &Project, pr: i64) -> String {
    previews(p)
        .iter()
        .find(|v| v["pr"] == pr)
        .map(|v| v["state"].as_str().unwrap().to_string())
        .unwrap_or_default()
}

#[test]
fn preview_up_serves_the_seeded_data_and_down_removes_only_what_up_made() {
    let p = preview_project();
    let (code, up) = p.json(["preview", "up", "--pr", "7"]);
    assert_eq!(code, 0, "{up}");
    assert_eq!(up["preview"], "preview-pr-7");
    let url = up["url"].as_str().unwrap().to_string();
    // The preview arena's gates ran: env before the deploy, health after.
    let gates: Vec<(String, String, String)> = up["gates"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|phase| {
            phase["results"].as_array().unwrap().iter().map(|r| {
                (
                    r["phase"].as_str().unwrap().to_string(),
                    r["gate"].as_str().unwrap().to_string(),
                    r["outcome"].as_str().unwrap().to_string(),
                )
            })
        })
        .collect();
    assert_eq!(
        gates,
        [
            ("before".into(), "env".into(), "pass".into()),
            ("after".into(), "health".into(), "pass".into())
        ],
        "{up}"
    );
    // The URL answers, and recommendations come from the seed feeds.
    let (status, _) = get(&format!("{url}/health")).expect("the preview answers");
    assert_eq!(status, 200);
    let (status, body) = get(&format!(
        "{url}/api/recommendations?shop=review.myshopify.com"
    ))
    .unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("November 2026 core update"),
        "recommendations do not come from the seeded feeds: {body}"
    );

    // A second pull request's preview, and `up` again for the first: the
    // same instance, updated in place.
    let (code, eight) = p.json(["preview", "up", "--pr", "8"]);
    assert_eq!(code, 0, "{eight}");
    let url8 = eight["url"].as_str().unwrap().to_string();
    assert_ne!(url8, url);
    let (code, again) = p.json(["preview", "up", "--pr", "7"]);
    assert_eq!(code, 0, "{again}");
    assert_eq!(again["url"], up["url"], "updated in place");
    assert_ne!(again["deployment"], up["deployment"]);
    let list = previews(&p);
    assert_eq!(list.len(), 2, "{list:?}");
    let seven = list.iter().find(|v| v["pr"] == 7).unwrap();
    assert_eq!(seven["release"], "v1");
    assert_eq!(seven["url"], up["url"]);
    // Recorded like any arena: its history shows both deployments.
    let (_, history) = p.json(["history", "--limit", "10"]);
    let of_seven = history["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["arena"] == "preview-pr-7")
        .count();
    assert_eq!(of_seven, 2);

    // Down: pull request 7's processes and folder are gone, 8's are not.
    p.copilot(["preview", "down", "--pr", "7"])
        .assert()
        .success();
    assert!(get(&format!("{url}/health")).is_none(), "still answers");
    assert!(!p.path(".copilot/local/preview-pr-7").exists());
    assert_eq!(state_of(&p, 7), "removed");
    assert_eq!(get(&format!("{url8}/health")).map(|r| r.0), Some(200));
    assert_eq!(state_of(&p, 8), "up");
    // Down again: nothing to do.
    let out = p
        .copilot(["preview", "down", "--pr", "7"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("has no preview"));
    p.copilot(["preview", "down", "--pr", "8"])
        .assert()
        .success();
    assert!(!p.path(".copilot/local/preview-pr-8").exists());
}

#[test]
fn preview_gc_removes_expired_previews_once_however_many_run() {
    let p = preview_project();
    let (code, doc) = p.json(["preview", "up", "--pr", "7", "--ttl", "1h"]);
    assert_eq!(code, 0, "{doc}");
    for pr in ["8", "9"] {
        let (code, doc) = p.json(["preview", "up", "--pr", pr, "--ttl", "3h"]);
        assert_eq!(code, 0, "{doc}");
    }
    // Two hours on: 7 has expired, 8 and 9 have not.
    let later = "2026-11-20T14:00:00Z";
    let out = p
        .copilot(["--output", "json", "preview", "gc"])
        .env("COPILOT_NOW", later)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let removed: Vec<&str> = doc["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["preview"].as_str().unwrap())
        .collect();
    assert_eq!(removed, ["preview-pr-7"], "{doc}");
    assert_eq!(state_of(&p, 7), "removed");
    assert_eq!(state_of(&p, 8), "up");

    // Four hours on, two gc at once: 8 and 9 each removed exactly once.
    let later = "2026-11-20T16:00:00Z";
    let gcs: Vec<_> = (0..2)
        .map(|_| {
            p.spawn(
                ["--output", "json", "preview", "gc"],
                &[("COPILOT_NOW", later)],
            )
        })
        .collect();
    let mut all_removed = Vec::new();
    for gc in gcs {
        let out = gc.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(doc["failed"].as_array().unwrap().is_empty(), "{doc}");
        for r in doc["removed"].as_array().unwrap() {
            all_removed.push(r["preview"].as_str().unwrap().to_string());
        }
    }
    all_removed.sort();
    assert_eq!(all_removed, ["preview-pr-8", "preview-pr-9"]);
    for pr in [8, 9] {
        assert_eq!(state_of(&p, pr), "removed");
        assert!(!p.path(&format!(".copilot/local/preview-pr-{pr}")).exists());
    }
    // Idempotent: nothing is left to remove.
    let out = p
        .copilot(["preview", "gc"])
        .env("COPILOT_NOW", later)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("Nothing to remove"));
}
