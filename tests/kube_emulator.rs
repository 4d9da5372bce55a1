//! An emulated Kubernetes API server for the Kubernetes provider's tests,
//! held to the official OpenAPI description of release 1.35 by Stoplight
//! Prism.
//!
//! - The API: namespaced Deployments, ReplicaSets, Pods, Services, Secrets
//!   and Events, read, listed (label and field selectors), created,
//!   replaced, merge-patched, deleted, and written with **server-side
//!   apply**: every object carries `managedFields`; an apply that sets a
//!   field another manager owns to another value is a `409` with
//!   `FieldManagerConflict` causes unless `force=true`; fields a manager
//!   stops applying are removed when no one else owns them. `resourceVersion`
//!   moves on every write, a Deployment's `generation` on every change of its
//!   spec. Discovery (`/api`, `/apis`, `/version`) and watch are there for
//!   kubectl.
//! - The Deployment controller: a ReplicaSet per pod template (named by its
//!   hash), the new one scaled up while the old ones go as new pods become
//!   available (`maxUnavailable: 0`), the status kubectl and copilot read
//!   (observed generation, updated/ready/available replicas), and the
//!   `Progressing` condition with its deadline (`ProgressDeadlineExceeded`).
//! - The kubelet: each pod is a real `copilot-service` process on loopback
//!   with the container's environment (`secretKeyRef` read from the
//!   namespace's Secrets), ready once its readiness probe answers; a
//!   container that exits is restarted after a back-off and shows
//!   `CrashLoopBackOff`; an image that cannot be pulled shows
//!   `ImagePullBackOff`; a missing Secret `CreateContainerConfigError`.
//!   Events say so, as the kubelet's do.
//! - The data plane: each Service the tests expose has an address on
//!   loopback that spreads requests over the ready pods its selector
//!   matches; a pod being deleted leaves the endpoints before it stops.
//!
//! copilot talks to Prism (`prism proxy --errors`) with
//! `tests/specs/kubernetes-1.35.prism.json`; discovery and watch, which that
//! part of the description does not hold, go to the server directly.
//!
//! Faults are injected as an API server produces them: 429 with
//! `Retry-After` (and `details.retryAfterSeconds`), 5xx, answers lost after
//! the change was made, and a 409 of an object changed meanwhile.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::common::{PASSED_THROUGH, free_port};

/// The bearer token the emulated cluster accepts.
const TOKEN: &str = "emulated-cluster-token";

/// How long a crashed container waits before it is started again.
const BACKOFF: Duration = Duration::from_secs(2);

/// What the next API request of a kind gets instead of its answer.
#[derive(Clone, Debug)]
pub enum Fault {
    /// An error status; a 429 carries `Retry-After` seconds.
    Status(u16, Option<u64>),
    /// The request is carried out, then its answer is held this long.
    LostAnswer(Duration),
}

/// A field's path in an object: keys, and `[name=x]` for the item of a
/// list keyed by name.
type FieldPath = Vec<String>;

struct Obj {
    v: Value,
    /// (manager, operation) -> the fields it owns.
    owners: BTreeMap<(String, String), BTreeSet<FieldPath>>,
    /// When each manager last wrote.
    times: BTreeMap<(String, String), String>,
}

/// What runs a pod.
struct PodRt {
    child: Option<Child>,
    port: u16,
    ready: bool,
    restarts: u32,
    next_start: Option<Instant>,
    last_exit: Option<i32>,
    /// Why the container is waiting, when it is.
    waiting: Option<(String, String)>,
    deleting: Option<Instant>,
    dir: PathBuf,
}

/// Per Deployment: when it last made progress, for the deadline.
struct Progress {
    at: Instant,
    mark: (i64, i64, String),
}

struct World {
    closed: bool,
    rv: u64,
    uid: u64,
    /// (resource, namespace, name) -> object.
    objs: BTreeMap<(String, String, String), Obj>,
    pods: BTreeMap<(String, String), PodRt>,
    progress: BTreeMap<(String, String), Progress>,
    aimed: Vec<(String, Fault)>,
    /// `METHOD /path` of every API request.
    requests: Vec<String>,
    /// Services the tests reach: (namespace, name) -> port.
    exposed: BTreeMap<(String, String), u16>,
    root: PathBuf,
    service_bin: PathBuf,
    /// Each kind's schema in the 1.35 description, which every object a
    /// client writes must satisfy once written (as the API server validates
    /// the result of a patch, not the patch).
    schemas: BTreeMap<&'static str, jsonschema::Validator>,
    /// What clients wrote that their kind's schema refused.
    invalid: Vec<String>,
    /// Every change, in order, for watches: (resourceVersion, resource,
    /// namespace, `ADDED`/`MODIFIED`/`DELETED`, the object as it became).
    log: std::collections::VecDeque<(u64, String, String, &'static str, Value)>,
    /// The port that asks for no credentials (the old API server's
    /// insecure port): kubectl sends no token over plain HTTP.
    insecure_port: u16,
    /// Namespaces by name: objects are written only into one that exists.
    namespaces: BTreeMap<String, Value>,
}

type Shared = Arc<Mutex<World>>;

pub struct KubeEmulator {
    world: Shared,
    /// A kubeconfig whose context `emulated` reaches the cluster through
    /// Prism with the token.
    pub kubeconfig: PathBuf,
    prism: Child,
    prism_log: PathBuf,
    runtime: Option<tokio::runtime::Runtime>,
    _dir: tempfile::TempDir,
}

fn now_text() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `(apiVersion, kind)` of a resource.
fn kind_of_resource(res: &str) -> Option<(&'static str, &'static str)> {
    Some(match res {
        "deployments" => ("apps/v1", "Deployment"),
        "replicasets" => ("apps/v1", "ReplicaSet"),
        "pods" => ("v1", "Pod"),
        "services" => ("v1", "Service"),
        "secrets" => ("v1", "Secret"),
        "events" => ("v1", "Event"),
        "configmaps" => ("v1", "ConfigMap"),
        _ => return None,
    })
}

/// A refusal, answered as a `Status`.
struct Refusal(Box<Response>);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        *self.0
    }
}

fn refusal(code: u16, reason: &str, message: &str, details: Option<Value>) -> Refusal {
    Refusal(Box::new(status(code, reason, message, details)))
}

/// A `Status` answer, as the API server gives one.
fn status(code: u16, reason: &str, message: &str, details: Option<Value>) -> Response {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(d) = details {
        body["details"] = d;
    }
    (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
}

fn not_found(res: &str, name: &str) -> Response {
    let group = if kind_of_resource(res).map(|k| k.0) == Some("apps/v1") {
        "apps"
    } else {
        ""
    };
    status(
        404,
        "NotFound",
        &format!(
            "{res}{} \"{name}\" not found",
            if group.is_empty() {
                String::new()
            } else {
                format!(".{group}")
            }
        ),
        Some(json!({ "name": name, "group": group, "kind": res })),
    )
}

// ---------------------------------------------------------------- fields

fn is_keyed(items: &[Value]) -> bool {
    !items.is_empty()
        && items
            .iter()
            .all(|i| i.get("name").is_some_and(Value::is_string))
}

/// Every leaf of `v` under `prefix`, in order.
fn leaves(v: &Value, prefix: &mut FieldPath, out: &mut Vec<(FieldPath, Value)>) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, child) in m {
                prefix.push(k.clone());
                leaves(child, prefix, out);
                prefix.pop();
            }
        }
        Value::Array(items) if is_keyed(items) => {
            for item in items {
                let name = item["name"].as_str().unwrap_or_default();
                prefix.push(format!("[name={name}]"));
                leaves(item, prefix, out);
                prefix.pop();
            }
        }
        _ => out.push((prefix.clone(), v.clone())),
    }
}

/// The fields of an object that server-side apply tracks: everything but
/// its identity, its status and the server's own metadata.
fn fields(v: &Value) -> Vec<(FieldPath, Value)> {
    let mut out = Vec::new();
    leaves(v, &mut Vec::new(), &mut out);
    out.retain(|(p, _)| {
        let first = p.first().map(String::as_str);
        let second = p.get(1).map(String::as_str);
        let identity = first == Some("metadata")
            && matches!(
                second,
                Some(
                    "name"
                        | "namespace"
                        | "uid"
                        | "resourceVersion"
                        | "generation"
                        | "creationTimestamp"
                        | "managedFields"
                        | "deletionTimestamp"
                )
            );
        !matches!(first, Some("apiVersion" | "kind" | "status")) && !identity
    });
    out
}

fn set_path(root: &mut Value, path: &[String], value: Value) {
    let mut node = root;
    for seg in path {
        if let Some(name) = seg.strip_prefix("[name=").and_then(|s| s.strip_suffix(']')) {
            if !node.is_array() {
                *node = json!([]);
            }
            let items = node.as_array_mut().unwrap();
            let i = match items.iter().position(|i| i["name"] == name) {
                Some(i) => i,
                None => {
                    items.push(json!({ "name": name }));
                    items.len() - 1
                }
            };
            node = &mut items[i];
        } else {
            if !node.is_object() {
                *node = json!({});
            }
            node = node
                .as_object_mut()
                .unwrap()
                .entry(seg.clone())
                .or_insert(Value::Null);
        }
    }
    *node = value;
}

/// The object made of `fields` over `base` (its identity and status).
fn build(base: &Value, fields: &[(FieldPath, Value)]) -> Value {
    let mut v = json!({});
    for k in ["apiVersion", "kind", "status"] {
        if let Some(x) = base.get(k) {
            v[k] = x.clone();
        }
    }
    let mut meta = json!({});
    for k in [
        "name",
        "namespace",
        "uid",
        "resourceVersion",
        "generation",
        "creationTimestamp",
        "deletionTimestamp",
    ] {
        if let Some(x) = base["metadata"].get(k) {
            meta[k] = x.clone();
        }
    }
    v["metadata"] = meta;
    for (p, val) in fields {
        set_path(&mut v, p, val.clone());
    }
    v
}

/// `managedFields` in the API's FieldsV1 form.
fn managed_fields(o: &Obj, api_version: &str) -> Value {
    let mut out = Vec::new();
    for ((manager, operation), set) in &o.owners {
        if set.is_empty() {
            continue;
        }
        let mut f = json!({});
        for p in set {
            let mut node = &mut f;
            for seg in p {
                let key = match seg.strip_prefix("[name=").and_then(|s| s.strip_suffix(']')) {
                    Some(n) => format!("k:{{\"name\":\"{n}\"}}"),
                    None => format!("f:{seg}"),
                };
                node = node
                    .as_object_mut()
                    .unwrap()
                    .entry(key)
                    .or_insert_with(|| json!({}));
            }
        }
        out.push(json!({
            "manager": manager,
            "operation": operation,
            "apiVersion": api_version,
            "time": o.times.get(&(manager.clone(), operation.clone())).cloned().unwrap_or_else(now_text),
            "fieldsType": "FieldsV1",
            "fieldsV1": f,
        }));
    }
    Value::Array(out)
}

/// RFC 7386; `strategic`, lists of named items merge by name, as a
/// strategic merge patch does for containers, env and ports.
fn merge_patch(target: &mut Value, patch: &Value, strategic: bool) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            let t = target.as_object_mut().unwrap();
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v, strategic);
                }
            }
        }
        Value::Array(items)
            if strategic && is_keyed(items) && target.as_array().is_some_and(|t| is_keyed(t)) =>
        {
            let t = target.as_array_mut().unwrap();
            for item in items {
                match t.iter_mut().find(|x| x["name"] == item["name"]) {
                    Some(x) => merge_patch(x, item, true),
                    None => t.push(item.clone()),
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// What the server fills in on a write.
fn defaults(res: &str, v: &mut Value) {
    if res == "deployments" {
        let spec = &mut v["spec"];
        if spec.get("replicas").is_none_or(Value::is_null) {
            spec["replicas"] = json!(1);
        }
        if spec
            .get("progressDeadlineSeconds")
            .is_none_or(Value::is_null)
        {
            spec["progressDeadlineSeconds"] = json!(600);
        }
        if spec.get("revisionHistoryLimit").is_none_or(Value::is_null) {
            spec["revisionHistoryLimit"] = json!(10);
        }
    }
    if res == "services" {
        let spec = &mut v["spec"];
        if spec.get("type").is_none_or(Value::is_null) {
            spec["type"] = json!("ClusterIP");
        }
        if spec.get("clusterIP").is_none_or(Value::is_null) {
            spec["clusterIP"] = json!("10.96.0.10");
        }
    }
}

/// The validators of the kinds clients write, from the description.
fn schemas(spec: &Value) -> BTreeMap<&'static str, jsonschema::Validator> {
    [
        ("deployments", "io.k8s.api.apps.v1.Deployment"),
        ("services", "io.k8s.api.core.v1.Service"),
        ("secrets", "io.k8s.api.core.v1.Secret"),
        ("pods", "io.k8s.api.core.v1.Pod"),
    ]
    .into_iter()
    .map(|(res, name)| {
        let schema = json!({
            "$ref": format!("#/components/schemas/{name}"),
            "components": spec["components"],
        });
        (
            res,
            jsonschema::validator_for(&schema).expect("a schema of the description"),
        )
    })
    .collect()
}

// ---------------------------------------------------------------- the world

impl World {
    /// Refuse (422, as the API server does) an object its kind's schema does
    /// not hold.
    fn check(&mut self, res: &str, v: &Value) -> Result<(), Refusal> {
        let Some(validator) = self.schemas.get(res) else {
            return Ok(());
        };
        let (api_version, kind) = kind_of_resource(res).unwrap();
        let mut v = v.clone();
        v["apiVersion"] = json!(api_version);
        v["kind"] = json!(kind);
        let errors: Vec<String> = validator
            .iter_errors(&v)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect();
        if errors.is_empty() {
            return Ok(());
        }
        let what = format!("{kind} {}: {}", v["metadata"]["name"], errors.join("; "));
        self.invalid.push(what.clone());
        Err(refusal(422, "Invalid", &what, None))
    }

    fn next_rv(&mut self) -> String {
        self.rv += 1;
        self.rv.to_string()
    }

    fn get(&self, res: &str, ns: &str, name: &str) -> Option<&Obj> {
        self.objs.get(&(res.into(), ns.into(), name.into()))
    }

    /// The object as the API returns it.
    fn render(&self, res: &str, o: &Obj) -> Value {
        let mut v = o.v.clone();
        let (api_version, kind) = kind_of_resource(res).unwrap();
        v["apiVersion"] = json!(api_version);
        v["kind"] = json!(kind);
        v["metadata"]["managedFields"] = managed_fields(o, api_version);
        v
    }

    /// Store `v` as written by `manager` with `operation` (`Update`): the
    /// fields it changed become its own.
    fn write(
        &mut self,
        res: &str,
        ns: &str,
        name: &str,
        mut v: Value,
        (manager, operation): (&str, &str),
        owned: Option<BTreeSet<FieldPath>>,
    ) -> Value {
        defaults(res, &mut v);
        let key = (res.to_string(), ns.to_string(), name.to_string());
        let old = self.objs.remove(&key);
        let rv = self.next_rv();
        let uid = match old.as_ref().and_then(|o| o.v["metadata"]["uid"].as_str()) {
            Some(u) => u.to_string(),
            None => {
                self.uid += 1;
                format!("00000000-0000-4000-8000-{:012}", self.uid)
            }
        };
        let created = old
            .as_ref()
            .and_then(|o| {
                o.v["metadata"]["creationTimestamp"]
                    .as_str()
                    .map(str::to_string)
            })
            .unwrap_or_else(now_text);
        let mut generation = old
            .as_ref()
            .and_then(|o| o.v["metadata"]["generation"].as_i64())
            .unwrap_or(0);
        if old.as_ref().is_none_or(|o| o.v["spec"] != v["spec"]) {
            generation += 1;
        }
        v["metadata"]["name"] = json!(name);
        v["metadata"]["namespace"] = json!(ns);
        v["metadata"]["uid"] = json!(uid);
        v["metadata"]["resourceVersion"] = json!(rv);
        v["metadata"]["creationTimestamp"] = json!(created);
        if res == "deployments" || res == "replicasets" {
            v["metadata"]["generation"] = json!(generation);
        }
        if v.get("status").is_none()
            && let Some(s) = old.as_ref().and_then(|o| o.v.get("status"))
        {
            v["status"] = s.clone();
        }
        let mut owners = old.as_ref().map(|o| o.owners.clone()).unwrap_or_default();
        let mut times = old.as_ref().map(|o| o.times.clone()).unwrap_or_default();
        let new_fields = fields(&v);
        let me = (manager.to_string(), operation.to_string());
        match owned {
            // An apply: the manager owns exactly what it applied.
            Some(set) => {
                owners.insert(me.clone(), set);
            }
            None => {
                let old_fields: BTreeMap<FieldPath, Value> = old
                    .as_ref()
                    .map(|o| fields(&o.v).into_iter().collect())
                    .unwrap_or_default();
                let changed: BTreeSet<FieldPath> = new_fields
                    .iter()
                    .filter(|(p, val)| old_fields.get(p) != Some(val))
                    .map(|(p, _)| p.clone())
                    .collect();
                for (who, set) in owners.iter_mut() {
                    if *who != me {
                        set.retain(|p| !changed.contains(p));
                    }
                }
                owners.entry(me.clone()).or_default().extend(changed);
            }
        }
        // Fields that are gone belong to no one.
        let present: BTreeSet<FieldPath> = new_fields.iter().map(|(p, _)| p.clone()).collect();
        for set in owners.values_mut() {
            set.retain(|p| present.contains(p));
        }
        owners.retain(|_, s| !s.is_empty());
        times.insert(me, now_text());
        let obj = Obj { v, owners, times };
        let out = self.render(res, &obj);
        self.objs.insert(key, obj);
        let kind = if old.is_none() { "ADDED" } else { "MODIFIED" };
        self.record(res, ns, kind, out.clone());
        out
    }

    /// A change, for watches (the last 20000 are kept).
    fn record(&mut self, res: &str, ns: &str, kind: &'static str, object: Value) {
        let rv = object["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(self.rv);
        self.log
            .push_back((rv, res.into(), ns.into(), kind, object));
        if self.log.len() > 20_000 {
            self.log.pop_front();
        }
    }

    /// Delete an object.
    fn remove(&mut self, res: &str, ns: &str, name: &str) -> Option<Obj> {
        let o = self.objs.remove(&(res.into(), ns.into(), name.into()))?;
        let rv = self.next_rv();
        let mut gone = self.render(res, &o);
        gone["metadata"]["resourceVersion"] = json!(rv);
        self.record(res, ns, "DELETED", gone);
        Some(o)
    }

    /// A write by a controller to an object's status: no fields change hands.
    fn set_status(&mut self, res: &str, ns: &str, name: &str, s: Value) {
        let rv = self.next_rv();
        let key = (res.to_string(), ns.to_string(), name.to_string());
        if let Some(o) = self.objs.get_mut(&key)
            && o.v["status"] != s
        {
            o.v["status"] = s;
            o.v["metadata"]["resourceVersion"] = json!(rv);
            let now = self.render(res, &self.objs[&key]);
            self.record(res, ns, "MODIFIED", now);
        }
    }

    /// Server-side apply of `body` by `manager`.
    fn apply(
        &mut self,
        res: &str,
        ns: &str,
        name: &str,
        body: &Value,
        manager: &str,
        force: bool,
    ) -> Result<(Value, bool), Refusal> {
        let applied = fields(body);
        let me = (manager.to_string(), "Apply".to_string());
        let Some(old) = self.get(res, ns, name) else {
            let set = applied.iter().map(|(p, _)| p.clone()).collect();
            let mut v = build(body, &applied);
            v["metadata"]["name"] = json!(name);
            self.check(res, &v)?;
            return Ok((
                self.write(res, ns, name, v, (manager, "Apply"), Some(set)),
                true,
            ));
        };
        let current: Vec<(FieldPath, Value)> = fields(&old.v);
        let cur: BTreeMap<&FieldPath, &Value> = current.iter().map(|(p, v)| (p, v)).collect();
        let mut conflicts = Vec::new();
        for (p, v) in &applied {
            if cur.get(p).is_some_and(|c| *c != v) {
                for (who, set) in &old.owners {
                    if *who != me && set.contains(p) {
                        conflicts.push((who.0.clone(), p.clone()));
                    }
                }
            }
        }
        let mut owners = old.owners.clone();
        if !conflicts.is_empty() {
            if !force {
                let causes: Vec<Value> = conflicts
                    .iter()
                    .map(|(who, p)| {
                        json!({
                            "reason": "FieldManagerConflict",
                            "message": format!("conflict with \"{who}\""),
                            "field": format!(".{}", p.join(".")),
                        })
                    })
                    .collect();
                let list: Vec<String> = conflicts
                    .iter()
                    .map(|(who, p)| format!("conflict with \"{who}\": .{}", p.join(".")))
                    .collect();
                return Err(refusal(
                    409,
                    "Conflict",
                    &format!(
                        "Apply failed with {} conflict(s): {}",
                        list.len(),
                        list.join(", ")
                    ),
                    Some(json!({ "name": name, "kind": res, "causes": causes })),
                ));
            }
            for (who, p) in &conflicts {
                if let Some(set) = owners.get_mut(&(who.clone(), "Update".into())) {
                    set.remove(p);
                }
                if let Some(set) = owners.get_mut(&(who.clone(), "Apply".into())) {
                    set.remove(p);
                }
            }
        }
        let previous = owners.get(&me).cloned().unwrap_or_default();
        let applied_set: BTreeSet<FieldPath> = applied.iter().map(|(p, _)| p.clone()).collect();
        let others: BTreeSet<&FieldPath> = owners
            .iter()
            .filter(|(who, _)| **who != me)
            .flat_map(|(_, s)| s.iter())
            .collect();
        // What the manager applied before and no longer does goes, unless
        // someone else owns it too.
        let mut merged: Vec<(FieldPath, Value)> = current
            .iter()
            .filter(|(p, _)| {
                !(previous.contains(p) && !applied_set.contains(p) && !others.contains(p))
            })
            .cloned()
            .collect();
        for (p, v) in &applied {
            match merged.iter_mut().find(|(q, _)| q == p) {
                Some(slot) => slot.1 = v.clone(),
                None => merged.push((p.clone(), v.clone())),
            }
        }
        // A path applied as a whole replaces what was under it.
        merged.retain(|(p, _)| {
            !applied
                .iter()
                .any(|(a, _)| p.len() > a.len() && p.starts_with(a))
        });
        let base = old.v.clone();
        let v = build(&base, &merged);
        self.check(res, &v)?;
        let key = (res.to_string(), ns.to_string(), name.to_string());
        if let Some(o) = self.objs.get_mut(&key) {
            o.owners = owners;
        }
        let unchanged = fields(&base) == fields(&v);
        Ok((
            self.write(res, ns, name, v, (manager, "Apply"), Some(applied_set)),
            !unchanged,
        ))
    }

    fn list(&self, res: &str, ns: &str) -> Vec<&Obj> {
        self.objs
            .iter()
            .filter(|((r, n, _), _)| r == res && n == ns)
            .map(|(_, o)| o)
            .collect()
    }

    fn event(&mut self, ns: &str, pod: &str, kind: &str, reason: &str, message: &str) {
        self.uid += 1;
        let name = format!("{pod}.{:x}", self.uid);
        let now = now_text();
        let v = json!({
            "metadata": { "name": name },
            "involvedObject": { "kind": "Pod", "name": pod, "namespace": ns, "apiVersion": "v1" },
            "type": kind,
            "reason": reason,
            "message": message,
            "source": { "component": "kubelet" },
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        });
        self.write("events", ns, &name, v, ("kubelet", "Update"), None);
    }
}

fn labels_of(v: &Value) -> BTreeMap<String, String> {
    v["metadata"]["labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn matches_selector(sel: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !sel.is_empty() && sel.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// `a=b,c!=d` against labels.
fn matches_label_query(q: &str, labels: &BTreeMap<String, String>) -> bool {
    q.split(',').filter(|t| !t.is_empty()).all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            labels.get(k.trim()).map(String::as_str) != Some(v.trim())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            labels.get(k.trim()).map(String::as_str) == Some(v.trim())
        } else {
            labels.contains_key(term.trim())
        }
    })
}

fn matches_field_query(q: &str, v: &Value) -> bool {
    q.split(',').filter(|t| !t.is_empty()).all(|term| {
        let Some((k, want)) = term.split_once("==").or_else(|| term.split_once('=')) else {
            return true;
        };
        let mut node = v;
        for part in k.split('.') {
            node = &node[part];
        }
        node.as_str() == Some(want)
    })
}

// ---------------------------------------------------------------- start

impl KubeEmulator {
    /// An emulated cluster with namespace `ns`; `services` are the names of
    /// the Services whose traffic the tests reach (they need not exist yet).
    pub fn start(ns: &str, services: &[&str]) -> Self {
        let prism_bin = std::path::absolute("tests/prism/node_modules/.bin/prism").unwrap();
        assert!(
            prism_bin.exists(),
            "Prism is not installed: run `npm ci --prefix tests/prism` (scripts/test.sh does)"
        );
        let spec = std::path::absolute("tests/specs/kubernetes-1.35.prism.json").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let exposed: BTreeMap<(String, String), u16> = services
            .iter()
            .map(|s| ((ns.to_string(), s.to_string()), free_port()))
            .collect();
        let world = Arc::new(Mutex::new(World {
            closed: false,
            rv: 1000,
            uid: 0,
            objs: BTreeMap::new(),
            pods: BTreeMap::new(),
            progress: BTreeMap::new(),
            aimed: Vec::new(),
            requests: Vec::new(),
            exposed: exposed.clone(),
            root: dir.path().to_path_buf(),
            service_bin: crate::common::service_bin(),
            schemas: schemas(
                &serde_json::from_str(&std::fs::read_to_string(&spec).unwrap()).unwrap(),
            ),
            invalid: Vec::new(),
            namespaces: [ns, "default"]
                .iter()
                .map(|n| (n.to_string(), namespace_object(n, &json!({}), 1)))
                .collect(),
            insecure_port: 0,
            log: Default::default(),
        }));
        let server_port = free_port();
        let insecure_port = free_port();
        world.lock().unwrap().insecure_port = insecure_port;
        let prism_port = free_port();
        {
            let w = world.clone();
            let api = Router::new()
                .route("/version", axum::routing::get(version))
                .route("/openapi/v3", axum::routing::get(openapi_index))
                .route("/openapi/v3/{*gv}", axum::routing::get(openapi_doc))
                .route("/api", axum::routing::get(api_versions))
                .route("/apis", axum::routing::get(api_groups))
                .route("/api/v1", axum::routing::get(core_resources))
                .route("/apis/apps/v1", axum::routing::get(apps_resources))
                .route("/api/v1/namespaces/{ns}", axum::routing::any(namespace))
                .route(
                    "/api/v1/namespaces/{ns}/{res}",
                    axum::routing::any(collection),
                )
                .route(
                    "/api/v1/namespaces/{ns}/{res}/{name}",
                    axum::routing::any(item),
                )
                .route(
                    "/apis/apps/v1/namespaces/{ns}/{res}",
                    axum::routing::any(collection),
                )
                .route(
                    "/apis/apps/v1/namespaces/{ns}/{res}/{name}",
                    axum::routing::any(item),
                )
                .route(
                    "/apis/apps/v1/namespaces/{ns}/{res}/{name}/scale",
                    axum::routing::any(scale),
                )
                .layer(axum::middleware::from_fn_with_state(w.clone(), faults))
                .with_state(w);
            let insecure = api.clone();
            runtime.spawn(async move {
                let l = tokio::net::TcpListener::bind(("127.0.0.1", server_port))
                    .await
                    .unwrap();
                axum::serve(l, api).await.unwrap();
            });
            runtime.spawn(async move {
                let l = tokio::net::TcpListener::bind(("127.0.0.1", insecure_port))
                    .await
                    .unwrap();
                axum::serve(l, insecure).await.unwrap();
            });
            for ((ns, name), port) in exposed {
                let plane = Router::new().fallback(data_plane).with_state(Plane {
                    world: world.clone(),
                    ns,
                    service: name,
                    http: reqwest::Client::new(),
                    next: Arc::new(Mutex::new(0)),
                });
                runtime.spawn(async move {
                    let l = tokio::net::TcpListener::bind(("127.0.0.1", port))
                        .await
                        .unwrap();
                    axum::serve(l, plane).await.unwrap();
                });
            }
            runtime.spawn(controllers(world.clone()));
        }
        let prism_log = dir.path().join("prism.log");
        let log = std::fs::File::create(&prism_log).unwrap();
        let prism = Command::new(&prism_bin)
            .args(["proxy", "--errors", "-h", "127.0.0.1", "-p"])
            .arg(prism_port.to_string())
            .arg(&spec)
            .arg(format!("http://127.0.0.1:{server_port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start prism");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", prism_port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "Prism did not start: {}",
                std::fs::read_to_string(&prism_log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let api = format!("http://127.0.0.1:{prism_port}");
        let direct = format!("http://127.0.0.1:{insecure_port}");
        let kubeconfig = dir.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: emulated\n\
                 clusters:\n- name: emulated\n  cluster:\n    server: {api}\n\
                 - name: direct\n  cluster:\n    server: {direct}\n\
                 users:\n- name: ci\n  user:\n    token: {TOKEN}\n\
                 contexts:\n- name: emulated\n  context:\n    cluster: emulated\n    user: ci\n    namespace: {ns}\n\
                 - name: direct\n  context:\n    cluster: direct\n    user: ci\n    namespace: {ns}\n"
            ),
        )
        .unwrap();
        KubeEmulator {
            world,
            kubeconfig,
            prism,
            prism_log,
            runtime: Some(runtime),
            _dir: dir,
        }
    }

    /// The variables a copilot command needs to reach this cluster.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("KUBECONFIG", self.kubeconfig.display().to_string()),
            ("COPILOT_PROVIDER_REQUEST_TIMEOUT", "3s".into()),
        ]
    }

    /// Where Service `name`'s traffic enters.
    pub fn url(&self, ns: &str, name: &str) -> String {
        let w = self.world.lock().unwrap();
        format!(
            "http://127.0.0.1:{}",
            w.exposed[&(ns.to_string(), name.to_string())]
        )
    }

    /// Where Service `service` of namespace `ns` takes traffic, for a
    /// namespace made after the cluster started (a preview's).
    pub fn expose(&self, ns: &str, service: &str) -> String {
        let port = free_port();
        self.world
            .lock()
            .unwrap()
            .exposed
            .insert((ns.to_string(), service.to_string()), port);
        let plane = Router::new().fallback(data_plane).with_state(Plane {
            world: self.world.clone(),
            ns: ns.to_string(),
            service: service.to_string(),
            http: reqwest::Client::new(),
            next: Arc::new(Mutex::new(0)),
        });
        let listener = self
            .runtime
            .as_ref()
            .unwrap()
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .unwrap();
        self.runtime
            .as_ref()
            .unwrap()
            .spawn(async move { axum::serve(listener, plane).await.unwrap() });
        format!("http://127.0.0.1:{port}")
    }

    /// Namespace `ns` as the API server holds it, if it does.
    pub fn namespace(&self, ns: &str) -> Option<Value> {
        self.world.lock().unwrap().namespaces.get(ns).cloned()
    }

    /// How many objects (pods included) namespace `ns` holds.
    pub fn objects_in(&self, ns: &str) -> usize {
        self.world
            .lock()
            .unwrap()
            .objs
            .keys()
            .filter(|(_, n, _)| n == ns)
            .count()
    }

    /// Answer the first request of `kind` (`PATCH /apis/apps/v1/namespaces/{namespace}/deployments/{name}`) with `fault`.
    pub fn inject_on(&self, kind: &str, fault: Fault) {
        self.world
            .lock()
            .unwrap()
            .aimed
            .push((kind.to_string(), fault));
    }

    pub fn pending_faults(&self) -> usize {
        self.world.lock().unwrap().aimed.len()
    }

    /// The API requests made so far, as `METHOD /path`.
    pub fn requests(&self) -> Vec<String> {
        self.world.lock().unwrap().requests.clone()
    }

    /// An object as the API returns it.
    pub fn object(&self, res: &str, ns: &str, name: &str) -> Option<Value> {
        let w = self.world.lock().unwrap();
        w.get(res, ns, name).map(|o| w.render(res, o))
    }

    /// Write `v` as someone else would (`kubectl apply` of a team's
    /// manifests, `kubectl edit`): an update by `manager`.
    pub fn put(&self, res: &str, ns: &str, v: Value, manager: &str) {
        let name = v["metadata"]["name"].as_str().unwrap().to_string();
        let mut w = self.world.lock().unwrap();
        let mut v = v;
        if let Some(o) = w.get(res, ns, &name)
            && v.get("status").is_none()
        {
            v["status"] = o.v["status"].clone();
        }
        w.write(res, ns, &name, v, (manager, "Update"), None);
    }

    /// Change an object as `manager` would with a strategic merge patch
    /// (`kubectl edit`, `kubectl set image`, `kubectl scale`).
    pub fn patch(&self, res: &str, ns: &str, name: &str, patch: Value, manager: &str) {
        let mut w = self.world.lock().unwrap();
        let mut v = w.get(res, ns, name).expect("the object").v.clone();
        merge_patch(&mut v, &patch, true);
        w.write(res, ns, name, v, (manager, "Update"), None);
    }

    /// The releases (`COPILOT_RELEASE`) of the ready pods Service `name` selects.
    pub fn serving(&self, ns: &str, name: &str) -> Vec<String> {
        let w = self.world.lock().unwrap();
        let mut out: Vec<String> = endpoints(&w, ns, name)
            .into_iter()
            .map(|(_, release)| release)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Wait until no Deployment of `ns` is rolling out and no pod is going.
    pub fn settle(&self, ns: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let busy = {
                let w = self.world.lock().unwrap();
                w.pods.values().any(|p| p.deleting.is_some())
                    || w.list("deployments", ns).iter().any(|d| {
                        let s = &d.v["status"];
                        let want = d.v["spec"]["replicas"].as_i64().unwrap_or(1);
                        s["replicas"].as_i64().unwrap_or(0) != want
                            || s["readyReplicas"].as_i64().unwrap_or(0) != want
                                && !d.v["status"]["conditions"]
                                    .as_array()
                                    .into_iter()
                                    .flatten()
                                    .any(|c| c["reason"] == "ProgressDeadlineExceeded")
                    })
            };
            if !busy || Instant::now() > deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn checked_by_prism(&self) -> usize {
        std::fs::read_to_string(&self.prism_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("Forwarding"))
            .count()
    }

    /// What Prism reported as breaking the description, and the objects
    /// clients wrote that their kind's schema refused.
    pub fn violations(&self) -> Vec<String> {
        let invalid = self.world.lock().unwrap().invalid.clone();
        std::fs::read_to_string(&self.prism_log)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                (l.contains("Violation") || l.contains("✖"))
                    && !l.contains("Unable to match the returned status code")
            })
            .map(str::to_string)
            .chain(invalid)
            .collect()
    }
}

impl Drop for KubeEmulator {
    fn drop(&mut self) {
        let _ = self.prism.kill();
        let _ = self.prism.wait();
        if let Ok(mut w) = self.world.lock() {
            w.closed = true;
            for p in w.pods.values_mut() {
                if let Some(mut c) = p.child.take() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// What kind of call a request is: `PATCH /apis/apps/v1/namespaces/{namespace}/deployments/{name}`.
pub fn kind_of(request: &str) -> String {
    let (method, path) = request.split_once(' ').unwrap_or(("", request));
    let mut parts: Vec<&str> = path.split('/').collect();
    if let Some(i) = parts.iter().position(|p| *p == "namespaces") {
        if i + 1 < parts.len() {
            parts[i + 1] = "{namespace}";
        }
        if i + 3 < parts.len() {
            parts[i + 3] = "{name}";
        }
    }
    format!("{method} {}", parts.join("/"))
}

// ---------------------------------------------------------------- API

async fn faults(
    State(w): State<Shared>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let insecure = format!("127.0.0.1:{}", w.lock().unwrap().insecure_port);
    let authorised = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(format!("Bearer {TOKEN}").as_str())
        || req.headers().get("host").and_then(|h| h.to_str().ok()) == Some(insecure.as_str());
    if !authorised {
        return status(401, "Unauthorized", "Unauthorized", None);
    }
    let fault = {
        let mut w = w.lock().unwrap();
        let request = format!("{} {}", req.method(), req.uri().path());
        let kind = kind_of(&request);
        let watch = req.uri().query().is_some_and(|q| q.contains("watch=true"));
        let aimed = (!watch)
            .then(|| {
                w.aimed
                    .iter()
                    .position(|(k, _)| *k == kind || *k == request)
            })
            .flatten();
        if !watch {
            w.requests.push(request);
        }
        aimed.map(|i| w.aimed.remove(i).1)
    };
    match fault {
        Some(Fault::Status(429, after)) => {
            let after = after.unwrap_or(1);
            let mut resp = status(
                429,
                "TooManyRequests",
                "the server has received too many requests and has asked us to try again later",
                Some(json!({ "retryAfterSeconds": after })),
            );
            resp.headers_mut()
                .insert("retry-after", after.to_string().parse().unwrap());
            resp
        }
        Some(Fault::Status(409, _)) => status(
            409,
            "Conflict",
            "Operation cannot be fulfilled: the object has been modified; please apply your changes to the latest version and try again",
            None,
        ),
        Some(Fault::Status(code, _)) => status(
            code,
            "ServiceUnavailable",
            "the server is currently unable to handle the request",
            None,
        ),
        Some(Fault::LostAnswer(d)) => {
            let resp = next.run(req).await;
            tokio::time::sleep(d).await;
            resp
        }
        None => next.run(req).await,
    }
}

async fn version() -> Response {
    axum::Json(json!({
        "major": "1", "minor": "35", "gitVersion": "v1.35.0-emulated",
        "gitCommit": "0000000", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.25", "compiler": "gc", "platform": "linux/amd64",
    }))
    .into_response()
}

/// The OpenAPI v3 documents kubectl validates manifests with: the 1.35
/// description the tests hold, for both group versions.
async fn openapi_index() -> Response {
    axum::Json(json!({ "paths": {
        "api/v1": { "serverRelativeURL": "/openapi/v3/api/v1?hash=0135" },
        "apis/apps/v1": { "serverRelativeURL": "/openapi/v3/apis/apps/v1?hash=0135" },
    } }))
    .into_response()
}

async fn openapi_doc() -> Response {
    let spec = std::fs::read("tests/specs/kubernetes-1.35.prism.json").unwrap();
    ([("content-type", "application/json")], spec).into_response()
}

async fn api_versions() -> Response {
    axum::Json(json!({
        "kind": "APIVersions", "versions": ["v1"],
        "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1" }],
    }))
    .into_response()
}

async fn api_groups() -> Response {
    axum::Json(json!({
        "kind": "APIGroupList", "apiVersion": "v1",
        "groups": [{
            "name": "apps",
            "versions": [{ "groupVersion": "apps/v1", "version": "v1" }],
            "preferredVersion": { "groupVersion": "apps/v1", "version": "v1" },
        }],
    }))
    .into_response()
}

fn resource_list(gv: &str, items: &[(&str, &str, &[&str])]) -> Response {
    let verbs = [
        "create", "delete", "get", "list", "patch", "update", "watch",
    ];
    axum::Json(json!({
        "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
        "resources": items.iter().map(|(name, kind, short)| json!({
            "name": name, "singularName": kind.to_lowercase(), "namespaced": true, "kind": kind,
            "verbs": verbs, "shortNames": short,
        })).collect::<Vec<_>>(),
    }))
    .into_response()
}

async fn core_resources() -> Response {
    resource_list(
        "v1",
        &[
            ("pods", "Pod", &["po"]),
            ("services", "Service", &["svc"]),
            ("secrets", "Secret", &[]),
            ("events", "Event", &["ev"]),
            ("configmaps", "ConfigMap", &["cm"]),
        ],
    )
}

async fn apps_resources() -> Response {
    resource_list(
        "apps/v1",
        &[
            ("deployments", "Deployment", &["deploy"]),
            ("replicasets", "ReplicaSet", &["rs"]),
        ],
    )
}

fn body_value(headers: &HeaderMap, body: &Bytes) -> Result<Value, Refusal> {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let parsed = if ct.contains("yaml") {
        serde_saphyr::from_slice::<Value>(body).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice::<Value>(body).map_err(|e| e.to_string())
    };
    parsed.map_err(|e| {
        refusal(
            400,
            "BadRequest",
            &format!("the body is not valid: {e}"),
            None,
        )
    })
}

fn namespace_object(name: &str, labels: &Value, rv: u64) -> Value {
    let mut labels = labels.clone();
    labels["kubernetes.io/metadata.name"] = json!(name);
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "uid": format!("ns-{name}"),
            "resourceVersion": rv.to_string(),
            "creationTimestamp": now_text(),
            "labels": labels,
        },
        "spec": { "finalizers": ["kubernetes"] },
        "status": { "phase": "Active" },
    })
}

fn namespace_not_found(ns: &str) -> Response {
    status(
        404,
        "NotFound",
        &format!("namespaces \"{ns}\" not found"),
        Some(json!({ "name": ns, "kind": "namespaces" })),
    )
}

/// A namespace: read, applied (created with its labels, or its labels
/// merged), deleted with everything in it (its pods stop as a kubelet
/// stops them).
async fn namespace(
    State(w): State<Shared>,
    Path(name): Path<String>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut w = w.lock().unwrap();
    match method {
        Method::GET => match w.namespaces.get(&name) {
            Some(v) => axum::Json(v.clone()).into_response(),
            None => namespace_not_found(&name),
        },
        Method::PATCH => {
            let v = match body_value(&headers, &body) {
                Ok(v) => v,
                Err(r) => return r.into_response(),
            };
            let rv = w.next_rv().parse().unwrap();
            let created = !w.namespaces.contains_key(&name);
            let mut labels = w
                .namespaces
                .get(&name)
                .map(|n| n["metadata"]["labels"].clone())
                .unwrap_or(json!({}));
            if let Some(new) = v["metadata"]["labels"].as_object() {
                for (k, l) in new {
                    labels[k] = l.clone();
                }
            }
            let ns = namespace_object(&name, &labels, rv);
            w.namespaces.insert(name, ns.clone());
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (code, axum::Json(ns)).into_response()
        }
        Method::DELETE => {
            let Some(mut ns) = w.namespaces.remove(&name) else {
                return namespace_not_found(&name);
            };
            let inside: Vec<(String, String, String)> = w
                .objs
                .keys()
                .filter(|(_, n, _)| *n == name)
                .cloned()
                .collect();
            for (res, n, obj) in inside {
                if res == "pods" {
                    delete_pod(&mut w, &n, &obj);
                } else {
                    w.remove(&res, &n, &obj);
                }
            }
            // The description answers a namespace's deletion with a Status.
            ns["metadata"]["deletionTimestamp"] = json!(now_text());
            axum::Json(json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": { "name": name, "kind": "namespaces", "uid": ns["metadata"]["uid"] } })).into_response()
        }
        _ => status(
            405,
            "MethodNotAllowed",
            "the server does not allow this method",
            None,
        ),
    }
}

async fn collection(
    State(w): State<Shared>,
    Path((ns, res)): Path<(String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((api_version, kind)) = kind_of_resource(&res) else {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
            None,
        );
    };
    if method == Method::GET {
        if q.get("watch").map(String::as_str) == Some("true") {
            return watch(w, ns, res, q).await;
        }
        let w = w.lock().unwrap();
        let items: Vec<Value> = w
            .list(&res, &ns)
            .into_iter()
            .filter(|o| {
                q.get("labelSelector")
                    .is_none_or(|s| matches_label_query(s, &labels_of(&o.v)))
                    && q.get("fieldSelector")
                        .is_none_or(|s| matches_field_query(s, &o.v))
            })
            .map(|o| w.render(&res, o))
            .collect();
        return axum::Json(json!({
            "apiVersion": api_version,
            "kind": format!("{kind}List"),
            "metadata": { "resourceVersion": w.rv.to_string() },
            "items": items,
        }))
        .into_response();
    }
    if method == Method::POST {
        if !w.lock().unwrap().namespaces.contains_key(&ns) {
            return namespace_not_found(&ns);
        }
        let v = match body_value(&headers, &body) {
            Ok(v) => v,
            Err(r) => return r.into_response(),
        };
        let Some(name) = v["metadata"]["name"].as_str().map(str::to_string) else {
            return status(422, "Invalid", "metadata.name: Required value", None);
        };
        let manager = manager_of(&q, &headers);
        let mut w = w.lock().unwrap();
        if w.get(&res, &ns, &name).is_some() {
            return status(
                409,
                "AlreadyExists",
                &format!("{res} \"{name}\" already exists"),
                None,
            );
        }
        if let Err(r) = w.check(&res, &v) {
            return r.into_response();
        }
        let out = w.write(&res, &ns, &name, v, (&manager, "Update"), None);
        return (StatusCode::CREATED, axum::Json(out)).into_response();
    }
    status(
        405,
        "MethodNotAllowed",
        "the server does not allow this method",
        None,
    )
}

/// The manager of an update: `fieldManager`, else the client's name.
fn manager_of(q: &BTreeMap<String, String>, headers: &HeaderMap) -> String {
    q.get("fieldManager").cloned().unwrap_or_else(|| {
        headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .and_then(|u| u.split('/').next())
            .unwrap_or("unknown")
            .to_string()
    })
}

async fn item(
    State(w): State<Shared>,
    Path((ns, res, name)): Path<(String, String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if kind_of_resource(&res).is_none() {
        return status(
            404,
            "NotFound",
            "the server could not find the requested resource",
            None,
        );
    }
    let manager = manager_of(&q, &headers);
    let mut w = w.lock().unwrap();
    if matches!(method, Method::PUT | Method::PATCH) && !w.namespaces.contains_key(&ns) {
        return namespace_not_found(&ns);
    }
    match method {
        Method::GET => match w.get(&res, &ns, &name) {
            Some(o) => axum::Json(w.render(&res, o)).into_response(),
            None => not_found(&res, &name),
        },
        Method::DELETE => {
            if w.remove(&res, &ns, &name).is_none() {
                return not_found(&res, &name);
            }
            axum::Json(json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": { "name": name, "kind": res } })).into_response()
        }
        Method::PUT => {
            let v = match body_value(&headers, &body) {
                Ok(v) => v,
                Err(r) => return r.into_response(),
            };
            let Some(old) = w.get(&res, &ns, &name) else {
                return not_found(&res, &name);
            };
            if let Some(rv) = v["metadata"]["resourceVersion"].as_str()
                && old.v["metadata"]["resourceVersion"].as_str() != Some(rv)
            {
                return status(
                    409,
                    "Conflict",
                    &format!(
                        "Operation cannot be fulfilled on {res} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                    ),
                    None,
                );
            }
            if let Err(r) = w.check(&res, &v) {
                return r.into_response();
            }
            let out = w.write(&res, &ns, &name, v, (&manager, "Update"), None);
            axum::Json(out).into_response()
        }
        Method::PATCH => {
            let ct = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            let patch = match body_value(&headers, &body) {
                Ok(v) => v,
                Err(r) => return r.into_response(),
            };
            if ct.starts_with("application/apply-patch") {
                let Some(manager) = q.get("fieldManager") else {
                    return status(
                        422,
                        "Invalid",
                        "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                        None,
                    );
                };
                let force = q.get("force").map(String::as_str) == Some("true");
                return match w.apply(&res, &ns, &name, &patch, manager, force) {
                    Ok((out, _)) => axum::Json(out).into_response(),
                    Err(r) => r.into_response(),
                };
            }
            if !(ct.starts_with("application/merge-patch+json")
                || ct.starts_with("application/strategic-merge-patch+json"))
            {
                return status(
                    415,
                    "UnsupportedMediaType",
                    &format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml; got {ct}"
                    ),
                    None,
                );
            }
            let Some(old) = w.get(&res, &ns, &name) else {
                return not_found(&res, &name);
            };
            let mut v = old.v.clone();
            merge_patch(
                &mut v,
                &patch,
                ct.starts_with("application/strategic-merge-patch+json"),
            );
            if let Err(r) = w.check(&res, &v) {
                return r.into_response();
            }
            let out = w.write(&res, &ns, &name, v, (&manager, "Update"), None);
            axum::Json(out).into_response()
        }
        _ => status(
            405,
            "MethodNotAllowed",
            "the server does not allow this method",
            None,
        ),
    }
}

/// A Deployment's scale subresource (`kubectl scale`).
async fn scale(
    State(w): State<Shared>,
    Path((ns, res, name)): Path<(String, String, String)>,
    Query(q): Query<BTreeMap<String, String>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let manager = manager_of(&q, &headers);
    let mut w = w.lock().unwrap();
    let Some(o) = w.get(&res, &ns, &name) else {
        return not_found(&res, &name);
    };
    let mut v = o.v.clone();
    if method == Method::PATCH || method == Method::PUT {
        let patch = match body_value(&headers, &body) {
            Ok(v) => v,
            Err(r) => return r.into_response(),
        };
        if let Some(n) = patch["spec"]["replicas"].as_i64() {
            v["spec"]["replicas"] = json!(n);
            v = w.write(&res, &ns, &name, v, (&manager, "Update"), None);
        }
    }
    axum::Json(json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": { "name": name, "namespace": ns, "resourceVersion": v["metadata"]["resourceVersion"] },
        "spec": { "replicas": v["spec"]["replicas"] },
        "status": { "replicas": v["status"]["replicas"].as_i64().unwrap_or(0) },
    }))
    .into_response()
}

/// A watch: the matching objects as `ADDED`, then `MODIFIED`/`DELETED` as
/// they change, one JSON event per line.
async fn watch(w: Shared, ns: String, res: String, q: BTreeMap<String, String>) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let since: u64 = q
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(300u64);
    let matches = move |v: &Value| {
        q.get("labelSelector")
            .is_none_or(|s| matches_label_query(s, &labels_of(v)))
            && q.get("fieldSelector")
                .is_none_or(|s| matches_field_query(s, v))
    };
    tokio::spawn(async move {
        let end = Instant::now() + Duration::from_secs(timeout);
        // Without a resourceVersion, a watch starts with what exists now;
        // then every change after it is sent, in order, none coalesced.
        let (mut cursor, initial) = {
            let w = w.lock().unwrap();
            let initial: Vec<Value> = if since == 0 {
                w.list(&res, &ns)
                    .into_iter()
                    .filter(|o| matches(&o.v))
                    .map(|o| json!({ "type": "ADDED", "object": w.render(&res, o) }))
                    .collect()
            } else {
                Vec::new()
            };
            (if since == 0 { w.rv } else { since }, initial)
        };
        let mut pending = initial;
        while Instant::now() < end {
            for e in std::mem::take(&mut pending) {
                let mut line = serde_json::to_vec(&e).unwrap();
                line.push(b'\n');
                if tx.send(Ok(Bytes::from(line))).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let w = w.lock().unwrap();
            if w.closed {
                return;
            }
            for (rv, r, n, kind, object) in &w.log {
                if *rv > cursor && *r == res && *n == ns && matches(object) {
                    pending.push(json!({ "type": kind, "object": object }));
                }
            }
            cursor = w.log.back().map_or(cursor, |e| e.0.max(cursor));
        }
    });
    Response::builder()
        .header("content-type", "application/json")
        .body(Body::from_stream(futures_util::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|x| (x, rx)) },
        )))
        .unwrap()
}

// ---------------------------------------------------------------- controllers

fn template_hash(template: &Value) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    template.to_string().hash(&mut h);
    format!("{:x}", h.finish())[..10].to_string()
}

fn ready_pods(w: &World, ns: &str, of_rs: &str) -> (i64, i64) {
    let mut total = 0;
    let mut ready = 0;
    for o in w.list("pods", ns) {
        let owner = o.v["metadata"]["ownerReferences"][0]["name"].as_str();
        if owner != Some(of_rs) || o.v["metadata"].get("deletionTimestamp").is_some() {
            continue;
        }
        total += 1;
        let name = o.v["metadata"]["name"].as_str().unwrap_or_default();
        if w.pods
            .get(&(ns.to_string(), name.to_string()))
            .is_some_and(|p| p.ready)
        {
            ready += 1;
        }
    }
    (total, ready)
}

/// The Deployment and ReplicaSet controllers and the kubelet, every 150 ms.
async fn controllers(w: Shared) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_millis(400))
        .build()
        .unwrap();
    loop {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let probes = {
            let mut w = w.lock().unwrap();
            if w.closed {
                return;
            }
            deployments(&mut w);
            replicasets(&mut w);
            kubelet(&mut w)
        };
        // Readiness probes, outside the lock.
        let mut results = Vec::new();
        for (key, port, path, healthy) in probes {
            let ok = healthy
                && http
                    .get(format!("http://127.0.0.1:{port}{path}"))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
            results.push((key, ok));
        }
        let mut w = w.lock().unwrap();
        for ((ns, name), ok) in results {
            let changed = match w.pods.get_mut(&(ns.clone(), name.clone())) {
                Some(p) if p.ready != ok && p.child.is_some() => {
                    p.ready = ok;
                    true
                }
                _ => false,
            };
            if changed {
                pod_status(&mut w, &ns, &name);
            }
        }
    }
}

fn deployments(w: &mut World) {
    let keys: Vec<(String, String)> = w
        .objs
        .keys()
        .filter(|(r, _, _)| r == "deployments")
        .map(|(_, n, name)| (n.clone(), name.clone()))
        .collect();
    for (ns, name) in keys {
        let d = w.get("deployments", &ns, &name).unwrap().v.clone();
        let template = d["spec"]["template"].clone();
        let hash = template_hash(&template);
        let rs_name = format!("{name}-{hash}");
        let replicas = d["spec"]["replicas"].as_i64().unwrap_or(1);
        if w.get("replicasets", &ns, &rs_name).is_none() {
            let mut t = template.clone();
            t["metadata"]["labels"]["pod-template-hash"] = json!(hash);
            let mut sel = d["spec"]["selector"].clone();
            sel["matchLabels"]["pod-template-hash"] = json!(hash);
            let revision = w
                .list("replicasets", &ns)
                .iter()
                .filter(|o| o.v["metadata"]["ownerReferences"][0]["name"] == name.as_str())
                .count()
                + 1;
            let rs = json!({
                "metadata": {
                    "name": rs_name,
                    "labels": t["metadata"]["labels"],
                    "annotations": { "deployment.kubernetes.io/revision": revision.to_string() },
                    "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                        "uid": d["metadata"]["uid"], "controller": true }],
                },
                "spec": { "replicas": 0, "selector": sel, "template": t },
            });
            w.write(
                "replicasets",
                &ns,
                &rs_name,
                rs,
                ("kube-controller-manager", "Update"),
                None,
            );
        }
        let owned: Vec<String> = w
            .list("replicasets", &ns)
            .iter()
            .filter(|o| o.v["metadata"]["ownerReferences"][0]["name"] == name.as_str())
            .filter_map(|o| o.v["metadata"]["name"].as_str().map(str::to_string))
            .collect();
        let (new_total, new_ready) = ready_pods(w, &ns, &rs_name);
        // New up at once (maxSurge 100%); the old ones down as the new
        // become available (maxUnavailable 0).
        let mut old_budget = (replicas - new_ready).max(0);
        let mut total = new_total;
        let mut ready = new_ready;
        for rs in &owned {
            let want = if *rs == rs_name {
                replicas
            } else {
                let (t, _) = ready_pods(w, &ns, rs);
                let keep = t.min(old_budget);
                old_budget -= keep;
                keep
            };
            let o = w.get("replicasets", &ns, rs).unwrap();
            if o.v["spec"]["replicas"].as_i64() != Some(want) {
                let mut v = o.v.clone();
                v["spec"]["replicas"] = json!(want);
                w.write(
                    "replicasets",
                    &ns,
                    rs,
                    v,
                    ("kube-controller-manager", "Update"),
                    None,
                );
            }
            if *rs != rs_name {
                let (t, r) = ready_pods(w, &ns, rs);
                total += t;
                ready += r;
            }
        }
        let generation = d["metadata"]["generation"].as_i64().unwrap_or(1);
        let deadline = d["spec"]["progressDeadlineSeconds"].as_u64().unwrap_or(600);
        let key = (ns.clone(), name.clone());
        let mark = (new_total, new_ready, rs_name.clone());
        let now = Instant::now();
        let progress = w.progress.entry(key).or_insert(Progress {
            at: now,
            mark: mark.clone(),
        });
        if progress.mark != mark {
            progress.mark = mark;
            progress.at = now;
        }
        let stalled = now.duration_since(progress.at) > Duration::from_secs(deadline);
        let complete = new_total == replicas && new_ready == replicas && total == replicas;
        let (p_status, p_reason, p_message) = if complete {
            (
                "True",
                "NewReplicaSetAvailable",
                format!("ReplicaSet \"{rs_name}\" has successfully progressed."),
            )
        } else if stalled {
            (
                "False",
                "ProgressDeadlineExceeded",
                format!("ReplicaSet \"{rs_name}\" has timed out progressing."),
            )
        } else {
            (
                "True",
                "ReplicaSetUpdated",
                format!("ReplicaSet \"{rs_name}\" is progressing."),
            )
        };
        let old_status = &d["status"];
        let keep_time = |kind: &str, st: &str, reason: &str| {
            old_status["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == kind && c["status"] == st && c["reason"] == reason)
                .map(|c| c["lastTransitionTime"].clone())
                .unwrap_or_else(|| json!(now_text()))
        };
        let available = ready >= replicas;
        let mut s = json!({
            "observedGeneration": generation,
            "replicas": total,
            "updatedReplicas": new_total,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": [
                {
                    "type": "Available",
                    "status": if available { "True" } else { "False" },
                    "reason": if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
                    "message": if available { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." },
                    "lastUpdateTime": keep_time("Available", if available { "True" } else { "False" }, if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" }),
                    "lastTransitionTime": keep_time("Available", if available { "True" } else { "False" }, if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" }),
                },
                {
                    "type": "Progressing",
                    "status": p_status,
                    "reason": p_reason,
                    "message": p_message,
                    "lastUpdateTime": keep_time("Progressing", p_status, p_reason),
                    "lastTransitionTime": keep_time("Progressing", p_status, p_reason),
                },
            ],
        });
        if total > ready {
            s["unavailableReplicas"] = json!(total - ready);
        }
        w.set_status("deployments", &ns, &name, s);
    }
}

fn replicasets(w: &mut World) {
    let keys: Vec<(String, String)> = w
        .objs
        .keys()
        .filter(|(r, _, _)| r == "replicasets")
        .map(|(_, n, name)| (n.clone(), name.clone()))
        .collect();
    for (ns, name) in keys {
        let rs = w.get("replicasets", &ns, &name).unwrap().v.clone();
        // A ReplicaSet whose Deployment is gone goes with its pods.
        let owner = rs["metadata"]["ownerReferences"][0]["name"]
            .as_str()
            .unwrap_or_default();
        let want = if w.get("deployments", &ns, owner).is_some() {
            rs["spec"]["replicas"].as_i64().unwrap_or(0)
        } else {
            w.remove("replicasets", &ns, &name);
            0
        };
        let mut pods: Vec<(String, bool)> = w
            .list("pods", &ns)
            .iter()
            .filter(|o| o.v["metadata"]["ownerReferences"][0]["name"] == name.as_str())
            .filter(|o| o.v["metadata"].get("deletionTimestamp").is_none())
            .map(|o| {
                let n = o.v["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                let ready = w
                    .pods
                    .get(&(ns.clone(), n.clone()))
                    .is_some_and(|p| p.ready);
                (n, ready)
            })
            .collect();
        let have = pods.len() as i64;
        for _ in have..want {
            w.uid += 1;
            let pod_name = format!("{name}-{:05x}", w.uid);
            let mut spec = rs["spec"]["template"]["spec"].clone();
            if spec.get("restartPolicy").is_none() {
                spec["restartPolicy"] = json!("Always");
            }
            let pod = json!({
                "metadata": {
                    "name": pod_name,
                    "labels": rs["spec"]["template"]["metadata"]["labels"],
                    "ownerReferences": [{ "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": name,
                        "uid": rs["metadata"]["uid"], "controller": true }],
                },
                "spec": spec,
                "status": { "phase": "Pending" },
            });
            w.write(
                "pods",
                &ns,
                &pod_name,
                pod,
                ("kube-controller-manager", "Update"),
                None,
            );
            let dir = w.root.join(&pod_name);
            std::fs::create_dir_all(&dir).unwrap();
            w.pods.insert(
                (ns.clone(), pod_name.clone()),
                PodRt {
                    child: None,
                    port: free_port(),
                    ready: false,
                    restarts: 0,
                    next_start: Some(Instant::now()),
                    last_exit: None,
                    waiting: Some(("ContainerCreating".into(), String::new())),
                    deleting: None,
                    dir,
                },
            );
            w.event(
                &ns,
                &pod_name,
                "Normal",
                "Scheduled",
                &format!("Successfully assigned {ns}/{pod_name} to emulated-node"),
            );
        }
        if have > want {
            // Not-ready pods go first.
            pods.sort_by_key(|(_, ready)| *ready);
            for (pod, _) in pods.into_iter().take((have - want) as usize) {
                delete_pod(w, &ns, &pod);
            }
        }
    }
}

/// A pod leaves the endpoints at once and stops a moment later, as a
/// kubelet's graceful termination does.
fn delete_pod(w: &mut World, ns: &str, pod: &str) {
    if let Some(o) = w.objs.get_mut(&("pods".into(), ns.into(), pod.into())) {
        o.v["metadata"]["deletionTimestamp"] = json!(now_text());
    }
    if let Some(p) = w.pods.get_mut(&(ns.into(), pod.into())) {
        p.ready = false;
        p.deleting = Some(Instant::now() + Duration::from_millis(800));
    }
}

/// Start, restart and stop the pods' processes; the readiness probes to make.
fn kubelet(w: &mut World) -> Vec<((String, String), u16, String, bool)> {
    let now = Instant::now();
    let keys: Vec<(String, String)> = w.pods.keys().cloned().collect();
    let mut probes = Vec::new();
    for key in keys {
        let (ns, name) = key.clone();
        // Graceful stop of a pod being deleted.
        if w.pods[&key].deleting.is_some_and(|t| now >= t) {
            let mut p = w.pods.remove(&key).unwrap();
            if let Some(mut c) = p.child.take() {
                let _ = Command::new("kill")
                    .arg("-TERM")
                    .arg(c.id().to_string())
                    .output();
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_secs(3));
                    let _ = c.kill();
                    let _ = c.wait();
                });
            }
            w.remove("pods", &ns, &name);
            continue;
        }
        if w.get("pods", &ns, &name).is_none() {
            if let Some(mut p) = w.pods.remove(&key)
                && let Some(mut c) = p.child.take()
            {
                let _ = c.kill();
                let _ = c.wait();
            }
            continue;
        }
        // A process that exited: restarted after a back-off.
        let exited = w
            .pods
            .get_mut(&key)
            .and_then(|p| p.child.as_mut())
            .and_then(|c| c.try_wait().ok().flatten())
            .map(|s| s.code().unwrap_or(137));
        if let Some(code) = exited {
            let p = w.pods.get_mut(&key).unwrap();
            p.child = None;
            p.ready = false;
            p.restarts += 1;
            p.last_exit = Some(code);
            p.next_start = Some(now + BACKOFF);
            p.waiting = Some((
                "CrashLoopBackOff".into(),
                format!(
                    "back-off {}s restarting failed container={} pod={name}",
                    BACKOFF.as_secs(),
                    "service"
                ),
            ));
            w.event(
                &ns,
                &name,
                "Warning",
                "BackOff",
                "Back-off restarting failed container service",
            );
            pod_status(w, &ns, &name);
            continue;
        }
        let due = w.pods[&key].next_start.is_some_and(|t| now >= t) && w.pods[&key].child.is_none();
        let spec = w.get("pods", &ns, &name).unwrap().v["spec"].clone();
        let c = &spec["containers"][0];
        let image = c["image"].as_str().unwrap_or_default().to_string();
        if due {
            start_container(w, &ns, &name, c, &image);
        }
        if let Some(p) = w.pods.get(&key)
            && p.child.is_some()
            && p.deleting.is_none()
        {
            let path = c["readinessProbe"]["httpGet"]["path"]
                .as_str()
                .unwrap_or("/health")
                .to_string();
            probes.push((key.clone(), p.port, path, !image.contains("unhealthy")));
        }
    }
    probes
}

fn start_container(w: &mut World, ns: &str, name: &str, c: &Value, image: &str) {
    let key = (ns.to_string(), name.to_string());
    if image.contains("no-such-image") {
        let p = w.pods.get_mut(&key).unwrap();
        p.next_start = Some(Instant::now() + BACKOFF);
        let fresh = p
            .waiting
            .as_ref()
            .is_none_or(|(r, _)| r != "ImagePullBackOff");
        p.waiting = Some((
            "ImagePullBackOff".into(),
            format!("Back-off pulling image \"{image}\""),
        ));
        if fresh {
            w.event(
                ns,
                name,
                "Warning",
                "Failed",
                &format!("Failed to pull image \"{image}\": not found"),
            );
            pod_status(w, ns, name);
        }
        return;
    }
    let mut env: Vec<(String, String)> = Vec::new();
    for e in c["env"].as_array().into_iter().flatten() {
        let k = e["name"].as_str().unwrap_or_default().to_string();
        if let Some(v) = e["value"].as_str() {
            env.push((k, v.to_string()));
        } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
            let secret = r["name"].as_str().unwrap_or_default();
            let key_name = r["key"].as_str().unwrap_or_default();
            let value = w
                .get("secrets", ns, secret)
                .and_then(|s| s.v["data"][key_name].as_str().map(str::to_string));
            match value {
                Some(b64) => {
                    use base64::Engine as _;
                    let raw = base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .unwrap_or_default();
                    env.push((k, String::from_utf8_lossy(&raw).into_owned()));
                }
                None => {
                    let why = if w.get("secrets", ns, secret).is_none() {
                        format!("secret \"{secret}\" not found")
                    } else {
                        format!("couldn't find key {key_name} in Secret {ns}/{secret}")
                    };
                    let p = w.pods.get_mut(&key).unwrap();
                    p.next_start = Some(Instant::now() + BACKOFF);
                    let fresh = p
                        .waiting
                        .as_ref()
                        .is_none_or(|(r, _)| r != "CreateContainerConfigError");
                    p.waiting = Some(("CreateContainerConfigError".into(), why.clone()));
                    if fresh {
                        w.event(ns, name, "Warning", "Failed", &format!("Error: {why}"));
                        pod_status(w, ns, name);
                    }
                    return;
                }
            }
        }
    }
    let bin = w.service_bin.clone();
    let p = w.pods.get_mut(&key).unwrap();
    let args: Vec<String> = c["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str().map(str::to_string))
        .collect();
    let child = Command::new(&bin)
        .args(if args.is_empty() {
            vec!["serve".to_string()]
        } else {
            args
        })
        .current_dir(&p.dir)
        .env_clear()
        .envs(
            PASSED_THROUGH
                .iter()
                .filter_map(|k| std::env::var_os(k).map(|v| (*k, v))),
        )
        .envs(env)
        .env("PORT", p.port.to_string())
        .env("BIND_ADDRESS", "127.0.0.1")
        .env("KUBERNETES_SERVICE_HOST", "10.96.0.1")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(p.dir.join("out.log")).unwrap())
        .stderr(std::fs::File::create(p.dir.join("err.log")).unwrap())
        .spawn()
        .expect("start a pod's container");
    p.child = Some(child);
    p.next_start = None;
    p.waiting = None;
    let first = p.restarts == 0;
    if first {
        w.event(
            ns,
            name,
            "Normal",
            "Pulled",
            &format!("Container image \"{image}\" already present on machine"),
        );
    }
    w.event(ns, name, "Normal", "Started", "Started container service");
    pod_status(w, ns, name);
}

/// The pod's status, from what runs it.
fn pod_status(w: &mut World, ns: &str, name: &str) {
    let Some(p) = w.pods.get(&(ns.to_string(), name.to_string())) else {
        return;
    };
    let Some(o) = w.get("pods", ns, name) else {
        return;
    };
    let image = o.v["spec"]["containers"][0]["image"].clone();
    let state = match (&p.waiting, &p.child) {
        (Some((reason, message)), _) => {
            json!({ "waiting": { "reason": reason, "message": message } })
        }
        (None, Some(_)) => json!({ "running": { "startedAt": now_text() } }),
        (None, None) => json!({ "waiting": { "reason": "ContainerCreating" } }),
    };
    let mut cs = json!({
        "name": "service",
        "image": image,
        "imageID": "",
        "ready": p.ready,
        "started": p.child.is_some(),
        "restartCount": p.restarts,
        "state": state,
    });
    if let Some(code) = p.last_exit {
        cs["lastState"] = json!({ "terminated": {
            "exitCode": code,
            "reason": if code == 137 { "OOMKilled" } else { "Error" },
            "finishedAt": now_text(),
        } });
    }
    let running = p.child.is_some();
    let ready = if p.ready { "True" } else { "False" };
    let s = json!({
        "phase": if running || p.restarts > 0 { "Running" } else { "Pending" },
        "podIP": "127.0.0.1",
        "hostIP": "127.0.0.1",
        "conditions": [
            { "type": "PodScheduled", "status": "True" },
            { "type": "Ready", "status": ready },
            { "type": "ContainersReady", "status": ready },
        ],
        "containerStatuses": [cs],
    });
    w.set_status("pods", ns, name, s);
}

// ---------------------------------------------------------------- data plane

/// The ready pods Service `name` selects: (port, release).
fn endpoints(w: &World, ns: &str, name: &str) -> Vec<(u16, String)> {
    let Some(svc) = w.get("services", ns, name) else {
        return Vec::new();
    };
    let sel = svc.v["spec"]["selector"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect::<BTreeMap<_, _>>()
        })
        .unwrap_or_default();
    w.list("pods", ns)
        .into_iter()
        .filter(|o| matches_selector(&sel, &labels_of(&o.v)))
        .filter_map(|o| {
            let pod = o.v["metadata"]["name"].as_str()?;
            let p = w.pods.get(&(ns.to_string(), pod.to_string()))?;
            if !p.ready || p.deleting.is_some() {
                return None;
            }
            let release = o.v["spec"]["containers"][0]["env"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|e| e["name"] == "COPILOT_RELEASE")
                .and_then(|e| e["value"].as_str())
                .unwrap_or("?")
                .to_string();
            Some((p.port, release))
        })
        .collect()
}

#[derive(Clone)]
struct Plane {
    world: Shared,
    ns: String,
    service: String,
    http: reqwest::Client,
    next: Arc<Mutex<usize>>,
}

/// kube-proxy: the Service's address spreads requests over its endpoints.
async fn data_plane(
    State(plane): State<Plane>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let port = {
        let w = plane.world.lock().unwrap();
        let eps = endpoints(&w, &plane.ns, &plane.service);
        if eps.is_empty() {
            None
        } else {
            let mut n = plane.next.lock().unwrap();
            *n = n.wrapping_add(1);
            Some(eps[*n % eps.len()].0)
        }
    };
    let Some(port) = port else {
        return (StatusCode::SERVICE_UNAVAILABLE, "no endpoints").into_response();
    };
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut req = plane
        .http
        .request(method, format!("http://127.0.0.1:{port}{path}"));
    for (k, v) in &headers {
        if k != "host" && k != "content-length" {
            req = req.header(k, v);
        }
    }
    match req.body(body).send().await {
        Ok(r) => {
            let status = r.status();
            let mut out = Response::builder().status(status);
            for (k, v) in r.headers() {
                if k != "transfer-encoding" && k != "content-length" {
                    out = out.header(k, v);
                }
            }
            out.body(Body::from(r.bytes().await.unwrap_or_default()))
                .unwrap()
        }
        Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    }
}
