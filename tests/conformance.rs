//! One conformance suite for the providers: the same scenarios and the same
//! invariants, run against each provider's peer.
//!
//! The **fault matrix** takes every kind of platform call a blue-green
//! deploy makes (found by running one cleanly and reading the calls the
//! peer saw), and for each kind runs a deploy again with that call failing
//! once: a 429 (throttled, with `Retry-After` where the platform sends one),
//! a 5xx, and an answer lost after the change was made (the client times
//! out). After every cell the executor's invariants must hold (README,
//! "What the executor keeps"):
//!
//! - the command exits with a documented code and lets go of the arena;
//! - exactly one release serves, and `status` says which; or the deployment
//!   is left open (`running`/`paused`) and `abort` finishes it to that;
//! - a deployment recorded `failed` or `rolled-back` left the previous
//!   release serving, alone.
//!
//! Fly runs behind Prism with its official description; ECS is moto with
//! the emulated agent and load balancer. The local provider has no remote
//! calls to fail, so it runs the scenarios that need no fault.

// Without a remote provider built in, only the local scenarios run.
#![cfg_attr(
    not(any(
        feature = "fly",
        feature = "ecs",
        feature = "render",
        feature = "kubernetes"
    )),
    allow(dead_code, unused_imports)
)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A fault one call of the matrix suffers.
#[derive(Clone, Copy, Debug)]
pub enum FaultKind {
    Throttled,
    ServerError,
    LostAnswer,
    /// A 409 of an object that changed meanwhile (Kubernetes' optimistic
    /// concurrency), where the platform answers one.
    Conflict,
}

const FAULTS: [FaultKind; 3] = [
    FaultKind::Throttled,
    FaultKind::ServerError,
    FaultKind::LostAnswer,
];

/// A provider's peer, as the suite drives it.
pub trait Peer {
    fn provider(&self) -> &'static str;
    /// The arena under test.
    fn arena(&self) -> &'static str;
    /// The arena it promotes from.
    fn source(&self) -> &'static str;
    /// `copilot --output json ARGS` against the peer.
    fn run(&self, args: &[&str]) -> (i32, Value);
    /// The releases answering through the arena's public address, once the
    /// platform has settled.
    fn serving(&self) -> Vec<String>;
    /// The calls the peer has seen so far, each as its kind.
    fn calls(&self) -> Vec<String>;
    /// Fail the next call of `kind` with `fault`.
    fn inject(&self, kind: &str, fault: FaultKind);
    /// Faults injected and not yet met.
    fn pending(&self) -> usize;
    /// The faults its platform throws.
    fn faults(&self) -> &'static [FaultKind] {
        &FAULTS
    }
}

/// One cell of the matrix, as it ended.
#[derive(Debug)]
pub struct Cell {
    pub call: String,
    pub fault: FaultKind,
    pub exit: i32,
    /// The deployment's state, and what finished it when it stayed open.
    pub ended: String,
}

/// The release live in the arena by `status`.
fn live(peer: &dyn Peer) -> Option<String> {
    let (_, status) = peer.run(&["status", peer.arena()]);
    status["arenas"][0]["live"]["version"]
        .as_str()
        .map(str::to_string)
}

/// Check the invariants after a command that ended with `exit`, finishing an
/// open deployment with `abort`; returns how the deployment ended.
pub fn check_invariants(peer: &dyn Peer, what: &str, exit: i32, before: Option<&str>) -> String {
    let arena = peer.arena();
    assert!(
        [0, 1, 3, 4, 5].contains(&exit),
        "{what}: exit {exit} is not a documented outcome"
    );
    let (_, status) = peer.run(&["status", arena]);
    assert_eq!(
        status["arenas"][0]["lock"],
        Value::Null,
        "{what}: the arena is still held: {status:#}"
    );
    let (_, history) = peer.run(&["history", arena]);
    let last = &history["deployments"][0];
    let state = last["state"].as_str().unwrap_or("none").to_string();
    let version = last["version"].as_str().unwrap_or_default().to_string();
    let ended = match state.as_str() {
        "running" | "paused" => {
            let (code, doc) = peer.run(&["abort", arena]);
            assert_eq!(code, 0, "{what}: abort of a {state} deployment: {doc}");
            format!("{state}, then aborted")
        }
        _ => state.clone(),
    };
    let serving = peer.serving();
    assert_eq!(
        serving.len(),
        1,
        "{what}: exactly one release serves (deployment {state}): {serving:?}"
    );
    match state.as_str() {
        "succeeded" => assert_eq!(serving[0], version, "{what}: the new release serves"),
        "failed" | "rolled-back" | "running" | "paused" => {
            if let Some(b) = before {
                assert_eq!(
                    serving[0], b,
                    "{what}: a deployment that did not succeed ({state}) leaves {b} serving"
                );
            }
        }
        _ => {}
    }
    assert_eq!(
        live(peer).as_deref(),
        Some(serving[0].as_str()),
        "{what}: status names the release that serves"
    );
    ended
}

/// Deploy the release not live now (v1 or v2) into the arena.
fn deploy_next(peer: &dyn Peer) -> (i32, Value, Option<String>) {
    let before = live(peer);
    let next = if before.as_deref() == Some("v1") {
        "v2"
    } else {
        "v1"
    };
    let (code, doc) = peer.run(&["deploy", peer.arena(), "--release", next]);
    (code, doc, before)
}

/// The fault matrix on `peer`: every kind of call a deploy makes, failed once
/// by each fault.
pub fn fault_matrix(peer: &dyn Peer) -> Vec<Cell> {
    // A release live and one on standby, as an arena in use has.
    for v in ["v1", "v2"] {
        let (code, doc) = peer.run(&["deploy", peer.arena(), "--release", v]);
        assert_eq!(code, 0, "{}: deploy {v}: {doc}", peer.provider());
    }
    let seen = peer.calls().len();
    let (code, doc, _) = deploy_next(peer);
    assert_eq!(code, 0, "{}: a clean deploy: {doc}", peer.provider());
    let mut kinds: Vec<String> = Vec::new();
    for k in peer.calls().split_off(seen) {
        if !kinds.contains(&k) {
            kinds.push(k);
        }
    }
    assert!(
        kinds.len() > 3,
        "{}: calls seen: {kinds:?}",
        peer.provider()
    );
    let mut cells = Vec::new();
    for call in &kinds {
        for &fault in peer.faults() {
            let what = format!("{} {call} {fault:?}", peer.provider());
            peer.inject(call, fault);
            let started = Instant::now();
            let (exit, doc, before) = deploy_next(peer);
            let ended = check_invariants(peer, &what, exit, before.as_deref());
            eprintln!(
                "{what}: exit {exit}, {ended} in {:.1}s{}",
                started.elapsed().as_secs_f64(),
                if exit == 0 {
                    String::new()
                } else {
                    format!(" ({})", doc["error"]["message"].as_str().unwrap_or(""))
                }
            );
            cells.push(Cell {
                call: call.clone(),
                fault,
                exit,
                ended,
            });
            // A call this deploy did not make again (a path taken once)
            // leaves its fault for the next; none may leak past the matrix.
            if peer.pending() > 0 {
                let (exit, _, before) = deploy_next(peer);
                check_invariants(peer, &what, exit, before.as_deref());
            }
        }
    }
    cells
}

/// A first release that analysis rejects, promoted into the empty arena:
/// rolled back (exit 1), and nothing of it serves, as `status` says.
pub fn first_release_rejected(peer: &dyn Peer) {
    let what = format!("{}: a first release analysis rejects", peer.provider());
    let (code, doc) = peer.run(&[
        "promote",
        peer.source(),
        peer.arena(),
        "--release",
        "v2-broken",
        "--yes",
        "--bake",
        "3s",
    ]);
    assert_eq!(code, 1, "{what}: {doc}");
    assert_eq!(doc["state"], "rolled-back", "{what}: {doc}");
    let serving = peer.serving();
    assert!(
        serving.iter().all(|r| r == "none"),
        "{what}: nothing serves: {serving:?}"
    );
    assert_eq!(live(peer), None, "{what}");
    let (_, status) = peer.run(&["status", peer.arena()]);
    assert_eq!(
        status["arenas"][0]["lock"],
        Value::Null,
        "{what}: {status:#}"
    );
}

/// What the matrix did, for the log: cells per exit and end.
fn summary(peer: &dyn Peer, cells: &[Cell]) {
    let calls: BTreeSet<&str> = cells.iter().map(|c| c.call.as_str()).collect();
    let mut by_end: std::collections::BTreeMap<String, usize> = Default::default();
    for c in cells {
        *by_end
            .entry(format!("exit {} {}", c.exit, c.ended))
            .or_default() += 1;
    }
    eprintln!(
        "{}: {} calls x {} faults = {} cells, every one keeping the invariants: {by_end:?}",
        peer.provider(),
        calls.len(),
        peer.faults().len(),
        cells.len()
    );
}

// ------------------------------------------------------------------ local

mod local {
    use super::*;
    use crate::rollouts::Arenas;

    impl Peer for Arenas {
        fn provider(&self) -> &'static str {
            "local"
        }
        fn arena(&self) -> &'static str {
            "stage"
        }
        fn source(&self) -> &'static str {
            "local"
        }
        fn run(&self, args: &[&str]) -> (i32, Value) {
            Arenas::run(self, args)
        }
        fn serving(&self) -> Vec<String> {
            let url = format!("http://127.0.0.1:{}/health", self.stage_port);
            let mut v: Vec<String> = crate::rollouts::block_on(async {
                let mut out = Vec::new();
                for _ in 0..20 {
                    let release = match reqwest::get(&url).await {
                        Ok(r) if r.status().is_success() => r
                            .json::<Value>()
                            .await
                            .ok()
                            .and_then(|b| b["release"].as_str().map(str::to_string)),
                        _ => None,
                    };
                    out.push(release.unwrap_or_else(|| "none".into()));
                }
                out
            });
            v.sort();
            v.dedup();
            v
        }
        // The local provider makes no remote call a platform could fail.
        fn calls(&self) -> Vec<String> {
            Vec::new()
        }
        fn inject(&self, _kind: &str, _fault: FaultKind) {}
        fn pending(&self) -> usize {
            0
        }
    }

    #[test]
    fn local_takes_down_a_first_release_that_analysis_rejects() {
        first_release_rejected(&Arenas::new());
    }
}

// ------------------------------------------------------------------ Fly

#[cfg(feature = "fly")]
mod fly {
    use super::*;
    use crate::fly_emulator::{Fault, kind_of};
    use crate::fly_provider::{FlyArenas, STAGING, serving};

    impl Peer for FlyArenas {
        fn provider(&self) -> &'static str {
            "fly"
        }
        fn arena(&self) -> &'static str {
            "staging"
        }
        fn source(&self) -> &'static str {
            "local"
        }
        fn run(&self, args: &[&str]) -> (i32, Value) {
            FlyArenas::run(self, args)
        }
        fn serving(&self) -> Vec<String> {
            let deadline = Instant::now() + Duration::from_secs(3);
            loop {
                let mut v = serving(&self.fly, STAGING);
                v.dedup();
                if v.is_empty() {
                    return vec!["none".into()];
                }
                if v.len() == 1 || Instant::now() > deadline {
                    return v;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        fn calls(&self) -> Vec<String> {
            self.fly.requests().iter().map(|r| kind_of(r)).collect()
        }
        fn inject(&self, kind: &str, fault: FaultKind) {
            self.fly.inject_on(
                kind,
                match fault {
                    FaultKind::Throttled => Fault::Status(429, Some(1)),
                    FaultKind::ServerError => Fault::Status(503, None),
                    FaultKind::LostAnswer => Fault::LostAnswer(Duration::from_secs(4)),
                    FaultKind::Conflict => Fault::Status(409, None),
                },
            );
        }
        fn pending(&self) -> usize {
            self.fly.pending_faults()
        }
    }

    #[test]
    fn fly_takes_down_a_first_release_that_analysis_rejects() {
        first_release_rejected(&FlyArenas::new(""));
    }

    #[test]
    fn fly_keeps_the_invariants_whichever_call_fails() {
        let a = FlyArenas::new("");
        let cells = fault_matrix(&a);
        summary(&a, &cells);
        // A 429 is waited out wherever it falls.
        for c in cells
            .iter()
            .filter(|c| matches!(c.fault, FaultKind::Throttled))
        {
            assert_eq!(c.exit, 0, "{c:?}");
        }
        let v = a.fly.violations();
        assert!(v.is_empty(), "Prism: {v:?}");
    }
}

// ------------------------------------------------------------------ Render

#[cfg(feature = "render")]
mod render {
    use super::*;
    use crate::render_emulator::{Fault, kind_of};
    use crate::render_provider::{RenderArenas, STAGING};

    impl Peer for RenderArenas {
        fn provider(&self) -> &'static str {
            "render"
        }
        fn arena(&self) -> &'static str {
            "staging"
        }
        fn source(&self) -> &'static str {
            "local"
        }
        fn run(&self, args: &[&str]) -> (i32, Value) {
            RenderArenas::run(self, args)
        }
        fn serving(&self) -> Vec<String> {
            self.render.settle(STAGING);
            vec![self.render.serving(STAGING)]
        }
        fn calls(&self) -> Vec<String> {
            self.render.requests().iter().map(|r| kind_of(r)).collect()
        }
        fn inject(&self, kind: &str, fault: FaultKind) {
            self.render.inject_on(
                kind,
                match fault {
                    FaultKind::Throttled => Fault::Status(429, Some(1)),
                    FaultKind::ServerError => Fault::Status(503, None),
                    FaultKind::LostAnswer => Fault::LostAnswer(Duration::from_secs(4)),
                    FaultKind::Conflict => Fault::Status(409, None),
                },
            );
        }
        fn pending(&self) -> usize {
            self.render.pending_faults()
        }
    }

    #[test]
    fn render_takes_down_a_first_release_that_analysis_rejects() {
        first_release_rejected(&RenderArenas::new(""));
    }

    #[test]
    fn render_keeps_the_invariants_whichever_call_fails() {
        let a = RenderArenas::new("");
        let cells = fault_matrix(&a);
        summary(&a, &cells);
        for c in cells
            .iter()
            .filter(|c| matches!(c.fault, FaultKind::Throttled))
        {
            assert_eq!(c.exit, 0, "{c:?}");
        }
        let v = a.render.violations();
        assert!(v.is_empty(), "Prism: {v:?}");
    }

    /// A rollback is Render's own rollback call: each fault on it is
    /// resolved (a lost answer by reading the deploys) and the previous
    /// release serves.
    #[test]
    fn render_rollback_keeps_the_invariants_whichever_fault_hits_it() {
        let a = RenderArenas::new("");
        let (code, doc) = a.run(&["deploy", "staging", "--release", "v1"]);
        assert_eq!(code, 0, "{doc}");
        for fault in FAULTS {
            let (code, doc, before) = deploy_next(&a);
            assert_eq!(code, 0, "{doc}");
            let what = format!("render rollback {fault:?}");
            a.inject("POST /v1/services/{serviceId}/rollback", fault);
            let (exit, doc) = a.run(&["rollback", "staging"]);
            assert_eq!(exit, 0, "{what}: {doc}");
            assert_eq!(doc["to"].as_str(), before.as_deref(), "{what}");
            assert_eq!(a.pending(), 0, "{what}: the fault was met");
            // A rollback pins the arena; the invariants are checked without the pin.
            a.run(&["unlock", "staging"]);
            check_invariants(&a, &what, exit, before.as_deref());
        }
        let v = a.render.violations();
        assert!(v.is_empty(), "Prism: {v:?}");
    }
}

// ------------------------------------------------------------------ Kubernetes

#[cfg(feature = "kubernetes")]
mod kubernetes {
    use super::*;
    use crate::kube_emulator::{Fault, kind_of};
    use crate::kube_provider::KubeArenas;

    impl Peer for KubeArenas {
        fn provider(&self) -> &'static str {
            "kubernetes"
        }
        fn arena(&self) -> &'static str {
            "staging"
        }
        fn source(&self) -> &'static str {
            "local"
        }
        fn run(&self, args: &[&str]) -> (i32, Value) {
            KubeArenas::run(self, args)
        }
        fn serving(&self) -> Vec<String> {
            let v = KubeArenas::serving(self);
            if v.is_empty() { vec!["none".into()] } else { v }
        }
        fn calls(&self) -> Vec<String> {
            self.kube.requests().iter().map(|r| kind_of(r)).collect()
        }
        fn inject(&self, kind: &str, fault: FaultKind) {
            self.kube.inject_on(
                kind,
                match fault {
                    FaultKind::Throttled => Fault::Status(429, Some(1)),
                    FaultKind::ServerError => Fault::Status(503, None),
                    FaultKind::LostAnswer => Fault::LostAnswer(Duration::from_secs(4)),
                    FaultKind::Conflict => Fault::Status(409, None),
                },
            );
        }
        fn pending(&self) -> usize {
            self.kube.pending_faults()
        }
        fn faults(&self) -> &'static [FaultKind] {
            &[
                FaultKind::Throttled,
                FaultKind::ServerError,
                FaultKind::LostAnswer,
                FaultKind::Conflict,
            ]
        }
    }

    #[test]
    fn kubernetes_takes_down_a_first_release_that_analysis_rejects() {
        first_release_rejected(&KubeArenas::new(""));
    }

    /// Every call a deploy makes, failed once by a 429 with `Retry-After`,
    /// a 503, a lost answer and a 409 of an object changed meanwhile: each
    /// is resolved (every call sets a state, so sending it again is safe)
    /// and the deploy succeeds.
    #[test]
    fn kubernetes_keeps_the_invariants_whichever_call_fails() {
        let a = KubeArenas::new("");
        let cells = fault_matrix(&a);
        summary(&a, &cells);
        for c in &cells {
            assert_eq!(c.exit, 0, "{c:?}");
        }
        let v = a.kube.violations();
        assert!(v.is_empty(), "Prism: {v:?}");
    }
}

// ------------------------------------------------------------------ ECS

#[cfg(feature = "ecs")]
mod ecs {
    use super::*;
    use crate::ecs_emulator::Fault;
    use crate::ecs_provider::{EcsArenas, PROBE_ANALYSIS, settled};

    impl Peer for EcsArenas {
        fn provider(&self) -> &'static str {
            "ecs"
        }
        fn arena(&self) -> &'static str {
            "production"
        }
        fn source(&self) -> &'static str {
            "canary"
        }
        fn run(&self, args: &[&str]) -> (i32, Value) {
            EcsArenas::run(self, args)
        }
        fn serving(&self) -> Vec<String> {
            settled(&self.aws)
        }
        fn calls(&self) -> Vec<String> {
            self.aws.requests()
        }
        fn inject(&self, kind: &str, fault: FaultKind) {
            self.aws.inject(
                Some(kind),
                &[match fault {
                    FaultKind::Throttled => Fault::Throttle,
                    FaultKind::ServerError => Fault::Unavailable,
                    FaultKind::LostAnswer => Fault::LostAnswer(Duration::from_secs(4)),
                    FaultKind::Conflict => unreachable!("not among the faults ECS runs"),
                }],
            );
        }
        fn pending(&self) -> usize {
            self.aws.pending_faults()
        }
    }

    #[test]
    fn ecs_takes_down_a_first_release_that_analysis_rejects() {
        let a = EcsArenas::new(PROBE_ANALYSIS);
        let (code, doc) = a.run(&["deploy", "canary", "--release", "v2-broken"]);
        assert_eq!(code, 0, "{doc}");
        first_release_rejected(&a);
    }

    #[test]
    fn ecs_keeps_the_invariants_whichever_call_fails() {
        let a = EcsArenas::new(PROBE_ANALYSIS);
        let cells = fault_matrix(&a);
        summary(&a, &cells);
        // The SDK's retries absorb one throttled or failed call.
        for c in cells
            .iter()
            .filter(|c| !matches!(c.fault, FaultKind::LostAnswer))
        {
            assert_eq!(c.exit, 0, "{c:?}");
        }
    }
}
