//! The objects copilot applies for an arena on Kubernetes, built the same
//! way for the cluster and for `copilot render`, so what `render` writes is
//! what a deploy applies.

use std::collections::BTreeMap;

use copilot_core::provider::{ReleaseSpec, Secret, Slot};
use serde_json::{Value, json};

use crate::KubernetesSettings;

/// Labels copilot puts on what it creates.
pub const APP: &str = "app.kubernetes.io/name";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const COLOUR: &str = "copilot/colour";
pub const RELEASE: &str = "copilot/release";
pub const ARENA: &str = "copilot/arena";
/// Annotations: what copilot deployed, exactly.
pub const RELEASE_ID: &str = "copilot/release-id";
pub const VERSION: &str = "copilot/version";
pub const IMAGE: &str = "copilot/image";
pub const LAUNCH: &str = "copilot/launch";
pub const REPLICAS: &str = "copilot/replicas";
/// The colour a Service selects to send traffic nowhere.
pub const NOWHERE: &str = "none";

/// The container's name in the pod template.
pub const CONTAINER: &str = "service";

/// A label value from free text: at most 63 characters of `[A-Za-z0-9._-]`,
/// starting and ending with a letter or digit.
pub fn label_value(v: &str) -> String {
    let mut out: String = v
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(63)
        .collect();
    while out.ends_with(|c: char| !c.is_ascii_alphanumeric()) {
        out.pop();
    }
    while out.starts_with(|c: char| !c.is_ascii_alphanumeric()) {
        out.remove(0);
    }
    out
}

/// The objects of one arena.
#[derive(Clone, Debug)]
pub struct Manifests {
    pub arena: String,
    pub s: KubernetesSettings,
    pub instances: u32,
}

impl Manifests {
    pub fn deployment_name(&self, slot: Slot) -> String {
        format!("{}-{slot}", self.s.deployment)
    }

    pub fn colour_service(&self, slot: Slot) -> String {
        format!("{}-{slot}", self.s.service_name())
    }

    pub fn selector(&self, slot: Option<Slot>) -> BTreeMap<String, String> {
        let mut m = BTreeMap::from([(APP.to_string(), self.s.deployment.clone())]);
        if let Some(slot) = slot {
            m.insert(COLOUR.into(), slot.as_str().into());
        }
        m
    }

    pub fn secret_name(&self, slot: Slot) -> String {
        format!("{}-{slot}-env", self.s.deployment)
    }

    /// The Deployment of `release` in `slot`, as copilot applies it (the
    /// replica count is applied apart, by [`SCALER`]).
    /// `deadline` is the seconds the Deployment controller gives the
    /// rollout before it marks it `ProgressDeadlineExceeded`: the arena's
    /// ready timeout.
    pub fn deployment(&self, key: &str, slot: Slot, release: &ReleaseSpec, deadline: u64) -> Value {
        let mut env: Vec<Value> = Vec::new();
        let mut plain = release.env.clone();
        plain.insert("PORT".into(), self.s.port.to_string());
        plain.insert("BIND_ADDRESS".into(), "0.0.0.0".into());
        plain.insert("COPILOT_ARENA".into(), self.arena.clone());
        plain.insert("COPILOT_RELEASE".into(), release.version.clone());
        for (k, v) in &plain {
            env.push(json!({ "name": k, "value": v }));
        }
        for (k, secret) in &release.secrets {
            let (name, key) = match secret {
                Secret::Value(_) => (self.secret_name(slot), k.clone()),
                Secret::Platform(r) => match r.key.split_once('/') {
                    Some((n, key)) => (n.to_string(), key.to_string()),
                    None => (r.key.clone(), k.clone()),
                },
            };
            env.push(json!({
                "name": k,
                "valueFrom": { "secretKeyRef": { "name": name, "key": key } },
            }));
        }
        let labels = json!({
            APP: self.s.deployment,
            COLOUR: slot.as_str(),
            RELEASE: label_value(&release.version),
        });
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": self.deployment_name(slot),
                "namespace": self.s.namespace,
                "labels": {
                    APP: self.s.deployment,
                    COLOUR: slot.as_str(),
                    ARENA: label_value(&self.arena),
                    MANAGED_BY: "copilot",
                },
                "annotations": {
                    RELEASE_ID: release.release_id,
                    VERSION: release.version,
                    IMAGE: release.image,
                    LAUNCH: key,
                },
            },
            "spec": {
                "selector": { "matchLabels": self.selector(Some(slot)) },
                "progressDeadlineSeconds": deadline,
                "revisionHistoryLimit": 3,
                "strategy": {
                    "type": "RollingUpdate",
                    "rollingUpdate": { "maxSurge": "100%", "maxUnavailable": 0 },
                },
                "template": {
                    "metadata": { "labels": labels },
                    "spec": {
                        "containers": [{
                            "name": CONTAINER,
                            "image": release.image,
                            "args": ["serve"],
                            "ports": [{ "name": "http", "containerPort": self.s.port, "protocol": "TCP" }],
                            "env": env,
                            "readinessProbe": {
                                "httpGet": { "path": "/health", "port": "http" },
                                "periodSeconds": 2,
                                "failureThreshold": 3,
                            },
                        }],
                    },
                },
            },
        })
    }

    /// The Secret carrying the values copilot resolved (`env:`, `file:`)
    /// for `slot`, referred to by key from the pod template. `encode` turns
    /// a value into the Secret's data (base64); `copilot render` gives none.
    pub fn secret(
        &self,
        slot: Slot,
        release: &ReleaseSpec,
        encode: impl Fn(&str) -> String,
    ) -> Option<Value> {
        let data: BTreeMap<&String, String> = release
            .secrets
            .iter()
            .filter_map(|(k, s)| match s {
                Secret::Value(v) => Some((k, encode(v))),
                Secret::Platform(_) => None,
            })
            .collect();
        if data.is_empty() {
            return None;
        }
        Some(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": self.secret_name(slot),
                "namespace": self.s.namespace,
                "labels": { APP: self.s.deployment, COLOUR: slot.as_str(), MANAGED_BY: "copilot" },
            },
            "type": "Opaque",
            "data": data,
        }))
    }

    pub fn service(&self, name: &str, slot: Option<Slot>) -> Value {
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name,
                "namespace": self.s.namespace,
                "labels": { APP: self.s.deployment, MANAGED_BY: "copilot" },
            },
            "spec": {
                "selector": self.selector(slot),
                "ports": [{ "name": "http", "port": 80, "targetPort": "http", "protocol": "TCP" }],
            },
        })
    }

    /// The replica count of `slot`, applied by its own field manager so
    /// scaling never gives up the fields the main apply owns.
    pub fn scale(&self, slot: Slot, replicas: u32) -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": self.deployment_name(slot),
                "namespace": self.s.namespace,
                "annotations": { REPLICAS: replicas.to_string() },
            },
            "spec": { "replicas": replicas },
        })
    }

    /// The selector of a Service that sends traffic nowhere.
    pub fn selector_nowhere(&self) -> BTreeMap<String, String> {
        let mut m = self.selector(None);
        m.insert(COLOUR.into(), NOWHERE.into());
        m
    }

    /// Everything a deploy of `release` into `slot` applies, in order:
    /// its Secret (values as `encode` gives them), its Deployment, its
    /// replica count, its colour's Service, and the arena's Service
    /// pointing at it.
    pub fn all(
        &self,
        key: &str,
        slot: Slot,
        release: &ReleaseSpec,
        deadline: u64,
        encode: impl Fn(&str) -> String,
    ) -> Vec<Value> {
        let mut out: Vec<Value> = self.secret(slot, release, encode).into_iter().collect();
        out.push(self.deployment(key, slot, release, deadline));
        out.push(self.scale(slot, self.instances));
        out.push(self.service(&self.colour_service(slot), Some(slot)));
        out.push(self.service(self.s.service_name(), Some(slot)));
        out
    }
}
