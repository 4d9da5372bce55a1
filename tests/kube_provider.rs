//! The Kubernetes provider against the emulated API server
//! (`kube_emulator`): every request copilot makes passes through Prism with
//! Kubernetes' 1.35 description, and every pod is a real `copilot-service`
//! process carrying real traffic through the emulated Service.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Project, Traffic};
use crate::kube_emulator::{Fault, KubeEmulator};

pub(crate) const NS: &str = "shop-staging";
const APP: &str = "shop";
const REPO: &str = "registry.example.com/acme/shop";

const ANALYSIS: &str = "    interval: 250ms\n    min_samples: 1\n    metrics:\n\
     \x20     - { name: error_rate, max: 0.05, window: 5m, on_fail: rollback }\n";

/// A project whose `staging` arena (2 instances) is Deployment `shop` in
/// namespace `shop-staging` of an emulated cluster.
pub(crate) struct KubeArenas {
    pub(crate) p: Project,
    pub(crate) kube: KubeEmulator,
}

impl KubeArenas {
    pub(crate) fn new(strategy: &str) -> KubeArenas {
        let kube = KubeEmulator::start(NS, &[APP, "shop-blue", "shop-green"]);
        // The team's own Secret, which the arena refers to by key.
        kube.put(
            "secrets",
            NS,
            json!({
                "metadata": { "name": "shop-secrets" },
                "type": "Opaque",
                "data": { "webhook": "a3ViZS1rZXB0LXNlY3JldA==" },
            }),
            "kubectl-client-side-apply",
        );
        let p = Project::init();
        let strategy = if strategy.is_empty() {
            "strategy:\n  kind: blue-green\n  steps: [{ weight: 100, bake: 5m }]\n".to_string()
        } else {
            strategy.to_string()
        };
        p.write(
            "arenas/staging.yaml",
            &format!(
                "name: staging\ntier: staging\npromotes_from: local\nprovider:\n  kind: kubernetes\n  context: emulated\n  namespace: {NS}\n  deployment: {APP}\n\
                 \x20 url: {}\n  colour_urls: {{ blue: \"{}\", green: \"{}\" }}\n  instances: 2\n  ready_timeout: 20s\n\
                 {strategy}  analysis:\n{ANALYSIS}gates:\n  after: [health]\n\
                 env:\n  values: {{ SHOPIFY_API_VERSION: \"2026-10\", DATABASE_URL: \"sqlite://copilot.db\" }}\n\
                 \x20 secrets: {{ SHOPIFY_WEBHOOK_SECRET: \"k8s:shop-secrets/webhook\" }}\n",
                kube.url(NS, APP),
                kube.url(NS, "shop-blue"),
                kube.url(NS, "shop-green"),
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
            ("crashes", Some("SHOPIFY_API_VERSION=not-a-version")),
            ("no-such-image", None),
        ] {
            let image = format!("{REPO}:{tag}");
            let mut cmd = p.copilot(["release", "create", "--image", &image]);
            if let Some(e) = env {
                cmd.args(["--env", e]);
            }
            cmd.assert().success();
        }
        KubeArenas { p, kube }
    }

    pub(crate) fn run(&self, args: &[&str]) -> (i32, Value) {
        let mut cmd = self.p.copilot(["--output", "json"]);
        for (k, v) in self.kube.env() {
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

    /// The releases the arena's Service sends traffic to, once pods settled.
    pub(crate) fn serving(&self) -> Vec<String> {
        self.kube.settle(NS);
        self.kube.serving(NS, APP)
    }

    pub(crate) fn url(&self) -> String {
        self.kube.url(NS, APP)
    }
}

pub(crate) fn no_violations(kube: &KubeEmulator) {
    assert!(kube.checked_by_prism() > 0, "no request went through Prism");
    let v = kube.violations();
    assert!(
        v.is_empty(),
        "Prism found requests or answers off the description:\n{}",
        v.join("\n")
    );
}

/// Every leaf of `v` with its path (keys, and list items by index).
fn leaves(v: &Value, path: Vec<String>, out: &mut Vec<(Vec<String>, Value)>) {
    let deeper = |k: String| {
        let mut p = path.clone();
        p.push(k);
        p
    };
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                leaves(x, deeper(k.clone()), out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, x) in items.iter().enumerate() {
                leaves(x, deeper(i.to_string()), out);
            }
        }
        _ => out.push((path, v.clone())),
    }
}

fn selector(kube: &KubeEmulator) -> Value {
    kube.object("services", NS, APP).unwrap()["spec"]["selector"].clone()
}

#[test]
fn kubernetes_switches_the_selector_with_traffic_flowing_and_rolls_back_by_flipping_it() {
    let a = KubeArenas::new("");
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v1"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(a.serving(), ["v1"]);
    let blue = a.kube.object("deployments", NS, "shop-blue").unwrap();
    assert_eq!(blue["spec"]["replicas"], 2);
    assert_eq!(
        blue["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("{REPO}:v1")
    );
    // The secret is referred to, never read into the Deployment.
    let env = blue["spec"]["template"]["spec"]["containers"][0]["env"].to_string();
    assert!(
        env.contains("secretKeyRef") && !env.contains("kube-kept-secret"),
        "{env}"
    );
    // Written by server-side apply under copilot's managers.
    let managers: Vec<String> = blue["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["manager"].as_str().unwrap(),
                m["operation"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        managers.contains(&"copilot/Apply".to_string()),
        "{managers:?}"
    );
    assert!(
        managers.contains(&"copilot-scale/Apply".to_string()),
        "{managers:?}"
    );
    // `copilot render` writes what the deploy applied.
    let out = a.p.path("rendered");
    let (code, doc) = a.run(&[
        "render",
        "staging",
        "--release",
        "v1",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{doc}");
    let text = std::fs::read_to_string(out.join("kubernetes.yaml")).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_str_multiple(&text).unwrap();
    let rendered = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["spec"].get("template").is_some())
        .unwrap();
    // Every field rendered is the field applied (the server adds its
    // defaults; the launch annotation names the deployment step).
    let mut want = rendered.clone();
    want["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("copilot/launch");
    let mut fields = Vec::new();
    leaves(&want, Vec::new(), &mut fields);
    for (path, value) in fields {
        let mut applied = &blue;
        for part in &path {
            applied = match part.parse::<usize>() {
                Ok(i) => &applied[i],
                Err(_) => &applied[part],
            };
        }
        assert_eq!(applied, &value, "{path:?} as rendered and as applied");
    }

    let traffic = Traffic::start(&a.url());
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v2"]);
    assert_eq!(code, 0, "{doc}");
    let seen = traffic.stop();
    assert!(seen.len() > 20, "{} requests", seen.len());
    let failed: Vec<_> = seen.iter().filter(|(_, _, ok)| !ok).collect();
    assert!(
        failed.is_empty(),
        "failed requests across the switch: {failed:?}"
    );
    assert!(seen.iter().any(|(_, r, _)| r == "v1") && seen.iter().any(|(_, r, _)| r == "v2"));
    assert_eq!(a.serving(), ["v2"]);
    assert_eq!(selector(&a.kube)["copilot/colour"], "green");
    let (_, status) = a.run(&["status", "staging"]);
    assert_eq!(status["arenas"][0]["live"]["version"], "v2", "{status:#}");
    assert_eq!(status["arenas"][0]["drift"], false, "{status:#}");

    // Rollback flips the selector back to the standby, still running.
    let patches_before = a.kube.requests().len();
    let started = Instant::now();
    let (code, doc) = a.run(&["rollback", "staging"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["to"], "v1");
    eprintln!("rollback in {:?}", started.elapsed());
    assert_eq!(a.serving(), ["v1"]);
    assert_eq!(selector(&a.kube)["copilot/colour"], "blue");
    let applies: Vec<String> = a.kube.requests()[patches_before..]
        .iter()
        .filter(|r| r.starts_with("PATCH") && r.contains("/deployments/"))
        .cloned()
        .collect();
    assert!(
        applies.len() <= 1,
        "the standby was not rebuilt: {applies:?}"
    );
    no_violations(&a.kube);
}

#[test]
fn kubernetes_fails_a_crash_looping_release_at_once_and_one_past_its_deadline_with_the_pods_events()
{
    let a = KubeArenas::new("");
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v1"]);
    assert_eq!(code, 0, "{doc}");

    let (code, doc) = a.run(&["deploy", "staging", "--release", "crashes"]);
    assert_eq!(code, 1, "{doc}");
    let message = doc["error"]["message"].as_str().unwrap_or_default();
    // Noticed from the pod's status, before the Deployment controller's
    // deadline (the arena's 20 s) could say anything.
    assert!(message.contains("is in CrashLoopBackOff"), "{doc}");
    assert!(!message.contains("progress deadline"), "{doc}");
    assert!(
        message.contains("Warning BackOff"),
        "the pod's events are in the evidence: {doc}"
    );
    assert_eq!(a.serving(), ["v1"], "the live colour is untouched");
    assert_eq!(
        a.kube.object("deployments", NS, "shop-green").unwrap()["spec"]["replicas"],
        0
    );

    let (code, doc) = a.run(&["deploy", "staging", "--release", "no-such-image"]);
    assert_eq!(code, 1, "{doc}");
    assert!(
        doc["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("ImagePullBackOff"),
        "{doc}"
    );
    assert_eq!(a.serving(), ["v1"]);

    // A release whose pods never pass their readiness probe: the
    // controller marks the rollout past its deadline.
    let (code, doc) = a.run(&["deploy", "staging", "--release", "unhealthy"]);
    assert_eq!(code, 1, "{doc}");
    let message = doc["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("progress deadline"), "{doc}");
    assert!(message.contains("Started"), "the pods' events: {doc}");
    assert_eq!(a.serving(), ["v1"]);
    let (_, status) = a.run(&["status", "staging"]);
    assert_eq!(status["arenas"][0]["live"]["version"], "v1", "{status:#}");
    no_violations(&a.kube);
}

#[test]
fn kubernetes_canary_turns_weights_into_replica_ratios() {
    let a = KubeArenas::new(
        "strategy:\n  kind: canary\n  steps: [{ weight: 50, bake: 4s }, { weight: 100 }]\n",
    );
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v1"]);
    assert_eq!(code, 0, "{doc}");
    let mut child = a.p.spawn(
        [
            "--output",
            "json",
            "promote",
            "local",
            "staging",
            "--release",
            "v2",
            "--yes",
            "--bake",
            "4s",
        ],
        &a.kube
            .env()
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect::<Vec<_>>(),
    );
    // During the 50% step both colours are selected, one pod each.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut split = Vec::new();
    while Instant::now() < deadline {
        split = a.kube.serving(NS, APP);
        if split.len() == 2 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(split, ["v1", "v2"], "both colours serve during the step");
    let sel = selector(&a.kube);
    assert!(sel.get("copilot/colour").is_none(), "{sel}");
    let traffic = Traffic::start(&a.url());
    std::thread::sleep(Duration::from_secs(2));
    let seen = traffic.stop();
    let v2 = seen.iter().filter(|(_, r, _)| r == "v2").count() as f64;
    let share = v2 / seen.len() as f64;
    assert!(
        (0.35..=0.65).contains(&share),
        "{share} of {} requests",
        seen.len()
    );
    let status = child.wait().unwrap();
    assert!(status.success());
    assert_eq!(a.serving(), ["v2"]);
    assert_eq!(selector(&a.kube)["copilot/colour"], "green");
    // A canary retires the old colour: scaled to nothing, kept.
    let blue = a.kube.object("deployments", NS, "shop-blue").unwrap();
    assert_eq!(blue["spec"]["replicas"], 0, "{blue:#}");
    // Rollback scales it back up, waits for it, then moves the selector.
    let (code, doc) = a.run(&["rollback", "staging"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["to"], "v1");
    assert_eq!(a.serving(), ["v1"]);
    assert_eq!(selector(&a.kube)["copilot/colour"], "blue");
    assert_eq!(
        a.kube.object("deployments", NS, "shop-blue").unwrap()["spec"]["replicas"],
        2
    );
    no_violations(&a.kube);
}

#[test]
fn kubernetes_reports_hand_edits_as_drift_and_conflicts() {
    let a = KubeArenas::new("");
    for v in ["v1", "v2"] {
        let (code, doc) = a.run(&["deploy", "staging", "--release", v]);
        assert_eq!(code, 0, "{doc}");
    }
    // Someone scales the live colour by hand.
    a.kube.patch(
        "deployments",
        NS,
        "shop-green",
        json!({ "spec": { "replicas": 3 } }),
        "kubectl-scale",
    );
    let (_, status) = a.run(&["status", "staging"]);
    assert_eq!(status["arenas"][0]["drift"], true, "{status:#}");
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v1"]);
    assert_eq!(code, 4, "{doc}");
    // Put back by hand, it deploys again.
    a.kube.patch(
        "deployments",
        NS,
        "shop-green",
        json!({ "spec": { "replicas": 2 } }),
        "kubectl-scale",
    );
    // The standby's image changed by hand: copilot's apply conflicts and
    // says so rather than overwriting it.
    a.kube.patch(
        "deployments",
        NS,
        "shop-blue",
        json!({ "spec": { "template": { "spec": { "containers": [{ "name": "service", "image": format!("{REPO}:hotfix-by-hand") }] } } } }),
        "kubectl-edit",
    );
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v1", "--adopt-drift"]);
    assert_ne!(code, 0, "{doc}");
    let message = doc["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("conflict"), "{doc}");
    assert!(
        doc["error"]["hint"]
            .as_str()
            .unwrap_or_default()
            .contains("--force-conflicts"),
        "{doc}"
    );
    assert_eq!(a.serving(), ["v2"]);
    // Told to, copilot takes the field back.
    let (code, doc) = a.run(&[
        "deploy",
        "staging",
        "--release",
        "v1",
        "--adopt-drift",
        "--force-conflicts",
    ]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(a.serving(), ["v1"]);
    let blue = a.kube.object("deployments", NS, "shop-blue").unwrap();
    assert_eq!(
        blue["spec"]["template"]["spec"]["containers"][0]["image"],
        format!("{REPO}:v1")
    );
    assert!(
        !blue["metadata"]["managedFields"]
            .to_string()
            .contains("kubectl-edit"),
        "kubectl-edit owns nothing any more: {:#}",
        blue["metadata"]["managedFields"]
    );
    no_violations(&a.kube);
}

#[test]
fn kubernetes_adopts_what_a_namespace_already_runs() {
    let a = KubeArenas::new("");
    // The team's own Deployment and Service, applied before copilot.
    a.kube.put(
        "deployments",
        NS,
        json!({
            "metadata": { "name": "shop", "labels": { "app": "shop" } },
            "spec": {
                "replicas": 1,
                "selector": { "matchLabels": { "app": "shop" } },
                "template": {
                    "metadata": { "labels": { "app": "shop" } },
                    "spec": { "containers": [{
                        "name": "web", "image": format!("{REPO}:2026-11"), "args": ["serve"],
                        "env": [{ "name": "COPILOT_RELEASE", "value": "by-hand" },
                                { "name": "SHOPIFY_WEBHOOK_SECRET", "value": "team-secret" },
                                { "name": "SHOPIFY_API_VERSION", "value": "2026-10" },
                                { "name": "DATABASE_URL", "value": "sqlite://copilot.db" }],
                        "readinessProbe": { "httpGet": { "path": "/health", "port": 8080 } },
                    }] },
                },
            },
        }),
        "kubectl-client-side-apply",
    );
    a.kube.put(
        "services",
        NS,
        json!({
            "metadata": { "name": "shop" },
            "spec": { "selector": { "app": "shop" }, "ports": [{ "port": 80, "targetPort": 8080 }] },
        }),
        "kubectl-client-side-apply",
    );
    a.kube.settle(NS);
    assert_eq!(a.serving(), ["by-hand"]);
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v1"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(a.serving(), ["v1"]);
    let (_, history) = a.run(&["release", "list"]);
    assert!(history.to_string().contains("adopted-2026-11"), "{history}");
    // The first rollback goes back to what ran before copilot.
    let (code, doc) = a.run(&["rollback", "staging"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["to"], "adopted-2026-11");
    assert_eq!(a.serving(), ["by-hand"]);
    let (_, status) = a.run(&["status", "staging"]);
    assert_eq!(status["arenas"][0]["drift"], false, "{status:#}");
    no_violations(&a.kube);
}

#[test]
fn kubernetes_waits_out_a_throttled_apply() {
    let a = KubeArenas::new("");
    a.kube.inject_on(
        "PATCH /apis/apps/v1/namespaces/{namespace}/deployments/{name}",
        Fault::Status(429, Some(1)),
    );
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v1"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(a.kube.pending_faults(), 0);
    assert_eq!(a.serving(), ["v1"]);
}

/// Credentials from an exec plugin, run as kubectl runs them (the way EKS's
/// `aws eks get-token` and GKE's `gke-gcloud-auth-plugin` hand out tokens).
#[test]
fn kubernetes_takes_its_token_from_an_exec_credential_plugin() {
    let a = KubeArenas::new("");
    let plugin = a.p.path("get-token");
    std::fs::write(
        &plugin,
        "#!/bin/sh\necho \"$KUBERNETES_EXEC_INFO\" > \"$(dirname \"$0\")/exec-info.json\"\n\
         printf '{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{\"token\":\"emulated-cluster-token\"}}'\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&plugin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let given = std::fs::read_to_string(&a.kube.kubeconfig).unwrap();
    let config = given.replace(
        "  user:\n    token: emulated-cluster-token\n",
        &format!(
            "  user:\n    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {}\n      interactiveMode: Never\n",
            plugin.display()
        ),
    );
    assert_ne!(config, given, "the kubeconfig names a token to replace");
    let kubeconfig = a.p.path("kubeconfig-exec");
    std::fs::write(&kubeconfig, config).unwrap();
    let out =
        a.p.copilot(["--output", "json", "deploy", "staging", "--release", "v1"])
            .env("KUBECONFIG", &kubeconfig)
            .env("COPILOT_PROVIDER_REQUEST_TIMEOUT", "3s")
            .output()
            .unwrap();
    assert!(out.status.success(), "{}", crate::common::stdout(&out));
    assert_eq!(a.serving(), ["v1"]);
    let info = std::fs::read_to_string(a.p.path("exec-info.json")).unwrap();
    assert!(info.contains("ExecCredential"), "{info}");
}

/// The Python client of the `kubernetes` PyPI package (its 35.x release
/// speaks 1.35), in the virtualenv `scripts/test.sh` makes.
fn python_client() -> std::path::PathBuf {
    let py = std::path::absolute("target/kube-client/bin/python").unwrap();
    assert!(
        py.exists(),
        "the Kubernetes Python client is not installed: run `COPILOT_TEST_SETUP_ONLY=1 bash scripts/test.sh`"
    );
    py
}

/// Reads through the official Python client: every Deployment and the
/// Service, deserialised into its typed models (which refuse what the 1.35
/// types do not hold), then a server-side apply of its own that takes a
/// field copilot owns, which the server must refuse as a conflict.
const PY_READS: &str = r#"
import json, sys
from kubernetes import client, config
from kubernetes.client.rest import ApiException
config.load_kube_config(config_file=sys.argv[1], context="emulated")
ns = sys.argv[2]
apps, core = client.AppsV1Api(), client.CoreV1Api()
out = {"deployments": {}}
for d in apps.list_namespaced_deployment(ns).items:
    out["deployments"][d.metadata.name] = {
        "image": d.spec.template.spec.containers[0].image,
        "replicas": d.spec.replicas,
        "ready": d.status.ready_replicas or 0,
        "managers": sorted({f"{m.manager}/{m.operation}" for m in d.metadata.managed_fields or []}),
        "release": (d.metadata.annotations or {}).get("copilot/version"),
    }
svc = core.read_namespaced_service("shop", ns)
out["selector"] = svc.spec.selector
body = {"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "shop-green", "namespace": ns},
        "spec": {"replicas": 5}}
try:
    apps.api_client.call_api(
        f"/apis/apps/v1/namespaces/{ns}/deployments/shop-green", "PATCH",
        query_params=[("fieldManager", "team-tool")],
        header_params={"Content-Type": "application/apply-patch+yaml", "Accept": "application/json"},
        body=body, response_type="V1Deployment", auth_settings=["BearerToken"])
    out["apply"] = "accepted"
except ApiException as e:
    out["apply"] = e.status
    out["conflict"] = json.loads(e.body)["details"]["causes"][0]["message"]
print(json.dumps(out))
"#;

fn kubectl(a: &KubeArenas, args: &[&str]) -> Option<std::process::Output> {
    let which = std::process::Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output();
    if which.is_err() {
        eprintln!("kubectl is not on this machine: its checks are left out");
        return None;
    }
    Some(
        std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&a.kube.kubeconfig)
            // Discovery and watch, which the description holds no part of,
            // go to the server itself.
            .args(["--context", "direct", "-n", NS])
            .args(args)
            .output()
            .unwrap(),
    )
}

#[test]
fn independent_clients_see_what_copilot_wrote_and_kubectl_agrees_with_its_wait() {
    let a = KubeArenas::new("");
    for v in ["v1", "v2"] {
        let (code, doc) = a.run(&["deploy", "staging", "--release", v]);
        assert_eq!(code, 0, "{doc}");
    }
    let out = std::process::Command::new(python_client())
        .args(["-c", PY_READS])
        .arg(&a.kube.kubeconfig)
        .arg(NS)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", crate::common::stderr(&out));
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (_, status) = a.run(&["status", "staging"]);
    let observed = &status["arenas"][0]["observed"];
    for (colour, release) in [("blue", "v1"), ("green", "v2")] {
        let d = &seen["deployments"][format!("shop-{colour}")];
        assert_eq!(d["image"], format!("{REPO}:{release}"), "{seen:#}");
        assert_eq!(d["release"], release);
        assert_eq!(observed[colour]["release"], release, "{status:#}");
        assert_eq!(d["replicas"], observed[colour]["instances"]["desired"]);
        assert_eq!(d["ready"], observed[colour]["instances"]["healthy"]);
        assert_eq!(
            d["managers"],
            json!(["copilot-scale/Apply", "copilot/Apply"])
        );
    }
    assert_eq!(seen["selector"]["copilot/colour"], "green");
    assert_eq!(
        seen["apply"], 409,
        "another manager's apply of copilot's field: {seen:#}"
    );
    assert!(
        seen["conflict"].as_str().unwrap().contains("copilot-scale"),
        "{seen:#}"
    );

    if let Some(out) = kubectl(&a, &["get", "deployments", "-o", "json"]) {
        assert!(out.status.success(), "{}", crate::common::stderr(&out));
        let list: Value = serde_json::from_slice(&out.stdout).unwrap();
        let names: Vec<&str> = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["shop-blue", "shop-green"]);
        let out = kubectl(
            &a,
            &[
                "rollout",
                "status",
                "deployment/shop-green",
                "--timeout=20s",
            ],
        )
        .unwrap();
        assert!(out.status.success(), "{}", crate::common::stderr(&out));
        assert!(crate::common::stdout(&out).contains("successfully rolled out"));
        // kubectl's own server-side apply of a field copilot owns conflicts too.
        let manifest = format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: shop-blue\n  namespace: {NS}\nspec:\n  replicas: 7\n"
        );
        let path = a.p.path("team-scale.yaml");
        std::fs::write(&path, manifest).unwrap();
        let out = kubectl(
            &a,
            &[
                "apply",
                "--server-side",
                "--field-manager=team",
                "-f",
                path.to_str().unwrap(),
            ],
        )
        .unwrap();
        assert!(!out.status.success(), "{}", crate::common::stdout(&out));
        assert!(
            crate::common::stderr(&out).contains("conflict"),
            "{}",
            crate::common::stderr(&out)
        );

        // A release that never becomes ready: kubectl's wait and copilot's
        // end the same way, at the progress deadline.
        let env: Vec<(&str, String)> = a.kube.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let copilot = a.p.spawn(
            [
                "--output",
                "json",
                "deploy",
                "staging",
                "--release",
                "unhealthy",
            ],
            &env,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while a.kube.object("deployments", NS, "shop-blue").unwrap()["spec"]["template"]["spec"]["containers"]
            [0]["image"]
            != format!("{REPO}:unhealthy")
        {
            assert!(
                Instant::now() < deadline,
                "copilot never applied the release"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = kubectl(
            &a,
            &["rollout", "status", "deployment/shop-blue", "--timeout=60s"],
        )
        .unwrap();
        assert!(!out.status.success(), "{}", crate::common::stdout(&out));
        assert!(
            crate::common::stderr(&out).contains("exceeded its progress deadline"),
            "{}",
            crate::common::stderr(&out)
        );
        let done = copilot.wait_with_output().unwrap();
        assert_eq!(done.status.code(), Some(1));
        let doc: Value = serde_json::from_slice(&done.stdout).unwrap();
        assert!(
            doc["error"]["message"]
                .as_str()
                .unwrap()
                .contains("progress deadline"),
            "{doc}"
        );
    }
    no_violations(&a.kube);
}

#[test]
fn a_preview_is_a_namespace_of_its_own_and_down_deletes_only_it() {
    let a = KubeArenas::new("");
    let ns = "shop-pr-7";
    let url = a.kube.expose(ns, APP);
    a.p.write(
        "arenas/preview.yaml",
        &format!(
            "name: preview\ntier: preview\nprovider:\n  kind: kubernetes\n  context: emulated\n  namespace: previews\n  deployment: {APP}\n\
             \x20 url: {url}\n  instances: 1\n  ready_timeout: 20s\n\
             strategy: {{ kind: immediate }}\n\
             preview:\n  ttl: 72h\n  name: shop-pr-{{pr}}\n  seed:\n    google-search-status: fixtures/feeds/google-search-incidents.json\n\
             gates:\n  after: [health]\n\
             env:\n  values: {{ SHOPIFY_API_VERSION: \"2026-10\", DATABASE_URL: \"sqlite://copilot.db\", COPILOT_NOW: \"2026-11-20T12:00:00Z\" }}\n\
             \x20 secrets: {{ SHOPIFY_WEBHOOK_SECRET: \"env:PREVIEW_WEBHOOK_SECRET\" }}\n"
        ),
    );
    // The preview's secret comes from copilot's environment into a Secret
    // of the preview's namespace.
    let preview = |args: &[&str]| {
        let mut cmd = a.p.copilot(["--output", "json"]);
        for (k, v) in a.kube.env() {
            cmd.env(k, v);
        }
        let out = cmd
            .env("PREVIEW_WEBHOOK_SECRET", "preview-webhook-secret")
            .args(args)
            .output()
            .unwrap();
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code().unwrap_or(-1), doc)
    };
    let (code, doc) = a.run(&["deploy", "staging", "--release", "v1"]);
    assert_eq!(code, 0, "{doc}");
    assert!(a.kube.namespace(ns).is_none());

    let (code, up) = preview(&["preview", "up", "--pr", "7", "--release", "v2"]);
    assert_eq!(code, 0, "{up}");
    assert_eq!(up["url"], url.as_str());
    let made = a.kube.namespace(ns).expect("the preview's namespace");
    assert_eq!(
        made["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "copilot"
    );
    assert_eq!(made["metadata"]["labels"]["copilot/arena"], "preview-pr-7");
    // The preview serves v2 from the seeded data; staging still serves v1.
    let (_, body) = crate::previews::get(&format!(
        "{url}/api/recommendations?shop=review.myshopify.com"
    ))
    .expect("the preview answers");
    assert!(body.contains("November 2026 core update"), "{body}");
    assert_eq!(a.kube.serving(ns, APP), ["v2"]);
    assert!(a.serving().iter().all(|r| r == "v1"));

    let (code, down) = preview(&["preview", "down", "--pr", "7"]);
    assert_eq!(code, 0, "{down}");
    assert!(a.kube.namespace(ns).is_none(), "the namespace is gone");
    a.kube.settle(ns);
    assert_eq!(a.kube.objects_in(ns), 0);
    assert!(a.kube.objects_in(NS) > 0);
    assert!(a.serving().iter().all(|r| r == "v1"), "staging untouched");
    no_violations(&a.kube);
}
