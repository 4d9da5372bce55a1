//! One executor for every deployment, on every provider.
//!
//! `deploy`, `promote`, `hotfix`, `rollback`, `resume`, `abort` and `down`
//! are methods here; the commands parse arguments, call one, and print what
//! it returns. The executor holds the arena's lease for the whole operation
//! (a lost lease stops it at the next step), writes every step's intent to
//! the ledger before acting and its outcome after, records the platform's
//! handle of what it started before waiting on it, and leaves traffic and
//! ledger agreeing when something fails.
//!
//! Whatever a provider call does, every command ends with either exactly
//! one release serving and the ledger saying which, or the deployment left
//! `running`/`paused` with the split the platform reports recorded, so that
//! `resume`, `abort` and `rollback` can each finish it. To keep that:
//!
//! - the standby is kept until the new release has taken all traffic;
//! - a failure once traffic may have moved is undone before it is reported
//!   ([`super::Rollout::revert`]: traffic back, the new colour stopped, a
//!   first release taken down), or the deployment is paused with the
//!   platform's split; never `failed` with two releases serving;
//! - the lease is let go on every way out (`Executor::leased`);
//! - what the platform runs without copilot is adopted as a release before
//!   it becomes anyone's previous release (`Executor::observe`), and a
//!   platform that differs from the ledger stops a deploy or promote unless
//!   the caller adopts the drift.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Value, json};

use super::events::{Event, EventSink, Events, GateOutcome};
use super::stop::{Stop, StopAction};
use super::{End, Progress, Refusal, Rollout, RolloutError, client_for, split_json};
use crate::gates::Resolved;
use crate::gates::{self, GateContext, RunReport, RunVerdict, resolve_reference};
use crate::platform::{self, Platform};
use copilot_core::clock;
use copilot_core::model::{Arena, Gate, Outcome, Phase, Project, SecretStore, StrategyKind};
use copilot_core::provider::{ArenaStatus, Op, Provider, ReleaseSpec, Secret, Slot, SlotStatus};
use copilot_ledger::{
    Cancel, Deployment, Lease, Ledger, LedgerError, Lock, LockKind, LockRequest, NewAudit,
    NewDeployment, Release,
};

/// How long an arena's lease lives without renewal: the ledger's ride-out
/// budget and half a minute more, so a holder that waits out a ledger
/// outage still holds the arena when the ledger answers again (it renews
/// every sixth of this, and stops acting once half of it has passed
/// without a renewal).
pub fn lease_ttl(ledger: &Ledger) -> Duration {
    ledger.ride_out_budget() + Duration::from_secs(30)
}

/// How long `abort` waits for a running holder to stop.
const HOLDER_STOP_WAIT: Duration = Duration::from_secs(120);

/// Drives deployments of one arena.
pub struct Executor<'a> {
    pub ledger: &'a Ledger,
    pub project: &'a Project,
    pub root: &'a Path,
    pub arena: &'a Arena,
    pub provider: Platform,
    pub actor: String,
    pub progress: &'a dyn Progress,
    /// Where lifecycle events go (the ledger's journal stays the source of truth).
    pub events: Events,
    /// Asks a running deployment to stop at a safe point: a cancel left on
    /// the lease is passed on to it, and the CLI's signal handler uses it.
    pub stop: Stop,
}

/// A deployment as it ended.
#[derive(Debug, Serialize)]
pub struct Finished {
    pub deployment: String,
    pub release: String,
    /// `succeeded`, `rolled-back`, `paused`, `refused` or `failed`.
    pub state: &'static str,
    pub summary: String,
    #[serde(skip)]
    pub end: End,
    /// What serves where now (deploy).
    pub detail: Value,
}

/// A rollback as it ended.
#[derive(Debug, Serialize)]
pub struct RolledBack {
    pub deployment: String,
    pub from: String,
    pub to: String,
    pub switch_ms: u64,
    pub redeployed: bool,
    pub schema: Option<super::schema::SchemaReport>,
    /// The platform's own deploys on a push (Render's autodeploy): `on`
    /// (a push can undo this rollback), `turned-off` (asked to), or `None`
    /// where the platform has no such switch or it was off.
    pub autodeploy: Option<String>,
}

/// An abort as it ended.
#[derive(Debug, Serialize)]
pub struct Aborted {
    pub deployment: String,
    /// `aborted`, or what a running holder recorded when asked to stop
    /// (`paused` for `abort --leave`).
    pub state: String,
    pub weights: Value,
    /// The release serving all traffic again, if there was one to go back to.
    pub back_to: Option<String>,
}

/// What `promote` and `hotfix` ask for.
pub struct Promotion<'a> {
    /// The arena the release comes from (`None` on the hotfix lane).
    pub from: Option<&'a Arena>,
    pub release: Release,
    pub reason: Option<String>,
    pub bake: Option<Duration>,
    /// The hotfix lane: the reason may bypass deploy windows.
    pub hotfix: bool,
    /// Start from what the platform runs where it differs from the ledger.
    pub adopt_drift: bool,
    /// A rollback drill (`copilot drill rollback`): no gates (the drill
    /// proves the analysis, not the gates), recorded as kind `drill`, and
    /// no incident opened by the rollback it expects.
    pub drill: bool,
}

fn pid_alive(pid: i64) -> bool {
    u32::try_from(pid).is_ok_and(copilot_core::process::alive)
}

/// Take an arena's lease; one whose holder died on this machine is taken over
/// at once (no need to wait for it to expire), and the takeover is audited.
pub async fn take_lease(
    ledger: &Ledger,
    arena: &str,
    actor: &str,
    reason: &str,
) -> Result<Lease, LedgerError> {
    let req = LockRequest::here(
        arena,
        LockKind::Lease,
        actor,
        reason,
        Some(lease_ttl(ledger)),
    );
    // Leases live and expire by the real clock: a pinned `COPILOT_NOW`
    // (for windows and bakes) never makes a live holder's lease look expired.
    match ledger.hold_lease(&req, clock::real_now()).await {
        Err(LedgerError::LockHeld(l))
            if l.kind == LockKind::Lease && l.host == req.host && !pid_alive(l.pid) =>
        {
            ledger.unlock(arena, true, clock::real_now()).await?;
            ledger
                .audit(
                    &NewAudit {
                        actor: actor.to_string(),
                        action: "lock.takeover".into(),
                        arena: Some(arena.to_string()),
                        reason: Some(format!(
                            "holder {} (pid {}) is gone: {}",
                            l.owner, l.pid, l.reason
                        )),
                        ..NewAudit::default()
                    },
                    clock::now(),
                )
                .await?;
            ledger.hold_lease(&req, clock::real_now()).await
        }
        other => other,
    }
}

/// The version an adopted image is recorded as: `adopted-` and its tag
/// (`adopted-latest` when it has none), in the characters a version allows.
fn adopted_version(image: &str) -> String {
    let name = image.rsplit('/').next().unwrap_or(image);
    let name = name.split('@').next().unwrap_or(name);
    let tag = name.split_once(':').map_or("latest", |(_, t)| t);
    let mut tag: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(100)
        .collect();
    while tag.contains("..") {
        tag = tag.replace("..", ".");
    }
    format!("adopted-{tag}")
}

/// A release as [`release_spec_of`] needs it (one `copilot render` names
/// may not be registered).
pub struct ReleaseInfo<'r> {
    pub id: &'r str,
    pub version: &'r str,
    pub image: &'r str,
    pub env: &'r std::collections::BTreeMap<String, String>,
    /// Read the `env:`/`file:` secrets' values; without, each is an empty
    /// value (what `copilot render` shows: the names, never the values).
    pub resolve: bool,
}

/// What runs for `release` in arena `a`: the arena's values, the release's
/// own, and its secrets (`env:`/`file:` resolved here, platform stores by
/// reference), before the provider fills in what it supplies itself.
pub fn release_spec_of(a: &Arena, release: &ReleaseInfo<'_>) -> Result<ReleaseSpec, RolloutError> {
    let mut env = a.env.values.clone();
    let mut secrets = std::collections::BTreeMap::new();
    let attachable = platform::capabilities(a.provider.kind).secret_stores;
    for (name, r) in &a.env.secrets {
        match r.store {
            SecretStore::Env | SecretStore::File if !release.resolve => {
                secrets.insert(name.clone(), Secret::Value(String::new()));
            }
            SecretStore::Env | SecretStore::File => {
                match resolve_reference(a, &format!("env:{name}")) {
                    Resolved::Value(v) => {
                        secrets.insert(name.clone(), Secret::Value(v));
                    }
                    // The local provider brings its own development webhook secret.
                    Resolved::Unresolvable(_) if name == "SHOPIFY_WEBHOOK_SECRET" => {}
                    Resolved::Unresolvable(why) if a.env.required.contains(name) => {
                        return Err(RolloutError::invalid(
                            format!("cannot start {}: {why}", a.name),
                            Some(format!(
                                "set it, or run `copilot gate run {} --gate env`",
                                a.name
                            )),
                        ));
                    }
                    Resolved::Unresolvable(_) => {}
                }
            }
            store if attachable.contains(&store) => {
                secrets.insert(name.clone(), Secret::Platform(r.clone()));
            }
            store if a.env.required.contains(name) && name != "SHOPIFY_WEBHOOK_SECRET" => {
                return Err(RolloutError::invalid(
                    format!(
                        "cannot start {}: {name} is kept in {store} ({r}), which the {} provider cannot attach",
                        a.name, a.provider.kind
                    ),
                    Some("keep it where this provider reads secrets, or in env:/file:".into()),
                ));
            }
            _ => {}
        }
    }
    env.insert(
        "COPILOT_FLAGS".into(),
        serde_json::to_string(&a.flags).expect("flags serialize"),
    );
    if !a.flag_cohorts.is_empty() {
        // Flags on for a cohort: the service answers them per shop.
        let rules: serde_json::Map<String, Value> = a
            .flag_cohorts
            .iter()
            .map(|(flag, cohort)| {
                let shops = a.cohorts.get(cohort).cloned().unwrap_or_default();
                (flag.clone(), json!({ "cohort": cohort, "shops": shops }))
            })
            .collect();
        env.insert(
            "COPILOT_FLAG_COHORTS".into(),
            Value::Object(rules).to_string(),
        );
    }
    env.extend(release.env.clone());
    Ok(ReleaseSpec {
        release_id: release.id.to_string(),
        version: release.version.to_string(),
        image: release.image.to_string(),
        env,
        secrets,
    })
}

/// Name the colours that run what copilot adopted before (a platform that
/// carries no release id on them, such as a Kubernetes Deployment taken
/// over from a team's manifests) by the adopted release of their image,
/// without adopting anything new: what `status` shows.
pub async fn name_adopted(ledger: &Ledger, status: &mut ArenaStatus) -> Result<(), LedgerError> {
    for slot in &mut status.slots {
        if !slot.release_id.is_empty() || slot.image.is_empty() {
            continue;
        }
        let base = adopted_version(&slot.image);
        for n in 1..10 {
            let version = match n {
                1 => base.clone(),
                n => format!("{base}-{n}"),
            };
            match ledger.find_release(&version).await {
                Ok(r) if r.image == slot.image => {
                    slot.release_id = r.id;
                    slot.version = r.version;
                    break;
                }
                Ok(_) => continue,
                Err(LedgerError::ReleaseNotFound(_)) => break,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

/// How the platform's account differs from the split the ledger recorded:
/// a colour carrying another release or a weight more than 5 points off,
/// and everything the platform reports that copilot did not start.
fn drift_between(recorded: &Value, observed: &ArenaStatus) -> Vec<String> {
    let ledger: std::collections::BTreeMap<String, (String, u64)> = recorded
        .as_object()
        .into_iter()
        .flatten()
        .map(|(slot, v)| {
            (
                slot.clone(),
                (
                    v["release"].as_str().unwrap_or("?").to_string(),
                    v["weight"].as_u64().unwrap_or(0),
                ),
            )
        })
        .filter(|(_, (_, w))| *w > 0)
        .collect();
    let mut out = Vec::new();
    for s in &observed.slots {
        let weight = u64::from(s.weight);
        match ledger.get(s.slot.as_str()) {
            None if weight > 0 => out.push(format!(
                "{} {} carries {weight}% where the ledger sends it nothing",
                s.slot, s.version
            )),
            Some((release, _)) if *release != s.version && weight > 0 => out.push(format!(
                "{} runs {} where the ledger says {release}",
                s.slot, s.version
            )),
            Some((release, w)) if weight.abs_diff(*w) > 5 => out.push(format!(
                "{} {release} carries {weight}% where the ledger says {w}%",
                s.slot
            )),
            _ => {}
        }
    }
    for (slot, (release, w)) in &ledger {
        if !observed.slots.iter().any(|s| s.slot.as_str() == slot) {
            out.push(format!(
                "{slot} {release} should carry {w}% but runs nothing"
            ));
        }
    }
    out.extend(
        observed
            .drift
            .iter()
            .map(|d| format!("{}: {}", d.instance, d.what)),
    );
    out
}

/// How `before` gates ended, as a refusal when they did not pass.
fn refusal(report: &RunReport) -> Option<Refusal> {
    match gates::exit_for(report, false) {
        RunVerdict::Passed => None,
        RunVerdict::Failed
            if report
                .results()
                .any(|r| r.blocks && r.outcome == Outcome::Fail) =>
        {
            Some(Refusal::Blocked)
        }
        RunVerdict::Failed => Some(Refusal::GateFailed),
        RunVerdict::DependencyFailed => Some(Refusal::Dependency),
        RunVerdict::Inconclusive => Some(Refusal::Inconclusive),
    }
}

/// Whether `e` leaves this process unable to act: its lease is lost, or the
/// ledger cannot record what it would do. Nothing more is done or written;
/// the deployment stays as the journal last says, for `resume`, `abort` or
/// `rollback` to finish.
fn stops_acting(e: &RolloutError) -> bool {
    matches!(e, RolloutError::LeaseLost(_) | RolloutError::Ledger(_))
}

fn state_of(end: &Result<End, RolloutError>) -> (&'static str, Option<String>) {
    match end {
        Ok(End::Succeeded) => ("succeeded", None),
        Ok(End::RolledBack(why) | End::Reverted(why)) => ("rolled-back", Some(why.clone())),
        Ok(End::Aborted(why)) => ("aborted", Some(why.clone())),
        Ok(End::Paused(why)) => ("paused", Some(why.clone())),
        Ok(End::Refused(why, _)) => ("rolled-back", Some(why.clone())),
        Err(e) => (failed_state(e), Some(e.to_string())),
    }
}

/// How a rollout that stopped on `e` is recorded: a release the platform
/// rolled back on its own (ECS's circuit breaker) is rolled back, not
/// merely failed, and never succeeded.
fn failed_state(e: &RolloutError) -> &'static str {
    match e {
        RolloutError::Provider(p) if p.kind == copilot_core::provider::ErrorKind::RolledBack => {
            "rolled-back"
        }
        _ => "failed",
    }
}

impl<'a> Executor<'a> {
    /// The executor of arena `a`, with its provider built from the arena's settings.
    pub fn new(
        ledger: &'a Ledger,
        project: &'a Project,
        root: &'a Path,
        arena: &'a Arena,
        progress: &'a dyn Progress,
    ) -> Result<Self, RolloutError> {
        Ok(Executor {
            ledger,
            project,
            root,
            arena,
            provider: platform::open(root, arena)?,
            actor: clock::actor(),
            progress,
            events: Events::default(),
            stop: Stop::default(),
        })
    }

    /// Send lifecycle events to `sink` too.
    pub fn with_sink(mut self, sink: Box<dyn EventSink>) -> Self {
        self.events.add(sink);
        self
    }

    /// A phase of gates that ran for `deployment` of `release`: announced,
    /// and as the report refusals and audits read.
    fn gates_ran(
        &self,
        deployment: &str,
        release: &Release,
        phase: gates::PhaseReport,
    ) -> RunReport {
        self.gates_finished(deployment, &phase);
        RunReport {
            arena: self.arena.name.clone(),
            release: Some(release.version.clone()),
            phases: vec![phase],
        }
    }

    /// Announce a phase of gates that ran for `deployment`.
    fn gates_finished(&self, deployment: &str, phase: &gates::PhaseReport) {
        self.events.emit(Event::GatesFinished {
            deployment: deployment.to_string(),
            phase: phase.phase,
            results: phase
                .results
                .iter()
                .map(|r| GateOutcome {
                    gate: r.gate.clone(),
                    outcome: r.outcome,
                    summary: r.summary.clone(),
                })
                .collect(),
            at: clock::now(),
        });
    }

    fn target(&self) -> &str {
        self.arena.deploys_into()
    }

    /// What the provider runs for `release`: the arena's values, flags and
    /// secrets (values for `env:`/`file:`, references for the platform's
    /// store), with the release's own variables on top.
    pub fn release_spec(&self, release: &Release) -> Result<ReleaseSpec, RolloutError> {
        let mut spec = release_spec_of(
            self.arena,
            &ReleaseInfo {
                id: &release.id,
                version: &release.version,
                image: &release.image,
                env: &release.env.0,
                resolve: true,
            },
        )?;
        self.provider.prepare(&mut spec)?;
        Ok(spec)
    }

    fn rollout<'r>(
        &'r self,
        deployment: &'r str,
        release: ReleaseSpec,
        bake: Option<Duration>,
        lease: &'r Lease,
    ) -> Rollout<'r> {
        self.rollout_stopped_by(deployment, release, bake, lease, &self.stop)
    }

    /// A rollout that only `stop` can stop: rollbacks, aborts and `down`
    /// finish what they start whatever is asked meanwhile (a second
    /// signal still exits).
    fn rollout_stopped_by<'r>(
        &'r self,
        deployment: &'r str,
        release: ReleaseSpec,
        bake: Option<Duration>,
        lease: &'r Lease,
        stop: &'r Stop,
    ) -> Rollout<'r> {
        Rollout {
            ledger: self.ledger,
            provider: &self.provider,
            arena: self.arena,
            deployment_id: deployment,
            release,
            bake,
            progress: self.progress,
            events: &self.events,
            lease,
            stop,
        }
    }

    /// Run `act` holding the arena's lease, taken to do `what`; the lease
    /// is let go on every way out, an error included.
    async fn leased<T>(
        &self,
        what: &str,
        act: impl AsyncFnOnce(&Lease) -> Result<T, RolloutError>,
    ) -> Result<T, RolloutError> {
        let lease = take_lease(self.ledger, self.target(), &self.actor, what).await?;
        if let Some(pinned) = clock::pinned() {
            // A change made under a pinned clock says so in the audit log.
            let audited = self
                .ledger
                .audit(
                    &NewAudit {
                        actor: self.actor.clone(),
                        action: "clock.override".into(),
                        arena: Some(self.target().to_string()),
                        reason: Some(what.to_string()),
                        detail: json!({ "copilot_now": pinned, "real": clock::real_now() }),
                        ..NewAudit::default()
                    },
                    clock::real_now(),
                )
                .await;
            if let Err(e) = audited {
                tracing::warn!("cannot audit the pinned clock: {e}");
            }
        }
        let follow = tokio::spawn(self.stop.follow(&lease));
        let result = act(&lease).await;
        follow.abort();
        // A holder that lost the lease has nothing to let go.
        if let Err(e @ RolloutError::LeaseLost(_)) = result {
            return Err(e);
        }
        match (result, lease.release().await) {
            (Ok(v), Ok(_)) => Ok(v),
            (Ok(_), Err(e)) => Err(e.into()),
            (Err(e), Err(r)) => {
                tracing::warn!("could not let go of the lease on {}: {r}", self.target());
                Err(e)
            }
            (Err(e), Ok(_)) => Err(e),
        }
    }

    async fn new_deployment(
        &self,
        release: &Release,
        previous: Option<&SlotStatus>,
        kind: &str,
        strategy: &str,
        source: Option<&str>,
        reason: Option<String>,
    ) -> Result<Deployment, RolloutError> {
        let d = self
            .ledger
            .create_deployment(
                &NewDeployment {
                    arena: self.target().to_string(),
                    release_id: release.id.clone(),
                    previous_release_id: previous.map(|l| l.release_id.clone()),
                    kind: kind.into(),
                    strategy: strategy.into(),
                    source_arena: source.map(str::to_string),
                    reason,
                    created_by: self.actor.clone(),
                },
                clock::now(),
            )
            .await?;
        self.events.emit(Event::DeploymentStarted {
            deployment: d.id.clone(),
            arena: d.arena.clone(),
            release: release.version.clone(),
            kind: d.kind.clone(),
            strategy: d.strategy.clone(),
            at: d.started_at,
        });
        Ok(d)
    }

    /// Record how a deployment ended and audit it.
    async fn close(
        &self,
        deployment: &str,
        state: &str,
        action: &str,
        reason: Option<String>,
        detail: Value,
    ) -> Result<(), RolloutError> {
        self.ledger
            .set_deployment_state(deployment, state, clock::now())
            .await?;
        let summary = detail["summary"]
            .as_str()
            .map_or_else(|| format!("{action} {state}"), str::to_string);
        let (id, at) = (deployment.to_string(), clock::now());
        match state {
            "rolled-back" => self.events.emit(Event::RolledBack {
                deployment: id.clone(),
                reason: summary.clone(),
                at,
            }),
            "paused" => self.events.emit(Event::Paused {
                deployment: id.clone(),
                reason: summary.clone(),
                at,
            }),
            _ => {}
        }
        if state != "paused" && state != "running" {
            self.events.emit(Event::Finished {
                deployment: id,
                state: state.to_string(),
                summary,
                at,
            });
        }
        self.ledger
            .audit(
                &NewAudit {
                    actor: self.actor.clone(),
                    action: format!("{action}.{state}"),
                    arena: Some(self.target().to_string()),
                    subject: Some(deployment.to_string()),
                    reason,
                    detail,
                },
                clock::now(),
            )
            .await?;
        if state == "rolled-back" && action != "drill" {
            self.open_incident(deployment).await;
        }
        Ok(())
    }

    /// A rollback by analysis opens an incident of the acting metric's
    /// severity, already mitigated, with the bake's report as evidence.
    /// The rollback stands whether or not the incident can be recorded.
    async fn open_incident(&self, deployment: &str) {
        let opened = crate::incidents::open_for_analysis(
            self.ledger,
            self.arena,
            deployment,
            &self.actor,
            clock::now(),
        )
        .await;
        match opened {
            Ok(Some(i)) => self.progress.line(&format!(
                "opened incident {} (SEV{}): {}; `copilot incident report {}` writes its report",
                i.id, i.severity, i.impact, i.id
            )),
            Ok(None) => {}
            Err(e) => tracing::warn!("the rollback of {deployment} opened no incident: {e}"),
        }
    }

    /// A deployment that cannot go on: recorded as failed, and the error
    /// passed on.
    async fn give_up<T>(&self, deployment: &str, e: RolloutError) -> Result<T, RolloutError> {
        let state = failed_state(&e);
        self.ledger
            .set_deployment_state(deployment, state, clock::now())
            .await?;
        self.events.emit(Event::Finished {
            deployment: deployment.to_string(),
            state: state.to_string(),
            summary: e.to_string(),
            at: clock::now(),
        });
        Err(e)
    }

    /// What the platform runs now.
    pub async fn status(&self) -> Result<ArenaStatus, RolloutError> {
        self.recall().await?;
        Ok(self.provider.status().await?)
    }

    /// Tell the provider what copilot started in the arena before (the
    /// handles the ledger recorded), for platforms that cannot carry
    /// copilot's tags themselves.
    async fn recall(&self) -> Result<(), RolloutError> {
        let handles = self.ledger.handles(self.target()).await?;
        self.provider.recall(&handles);
        Ok(())
    }

    /// What the platform runs now, every colour named by a release of this
    /// ledger. A colour copilot did not start, or started for a release
    /// this ledger does not know (an ECS service's own task definition), is
    /// adopted: recorded as a release of the image it runs, so it stays
    /// serving until the new release is healthy, becomes the standby, and is
    /// what the first `rollback` goes back to.
    async fn observe(&self) -> Result<ArenaStatus, RolloutError> {
        self.recall().await?;
        let mut status = self.provider.status().await?;
        for slot in &mut status.slots {
            let known = !slot.release_id.is_empty()
                && self.ledger.release_by_id(&slot.release_id).await?.is_some();
            if known || slot.image.is_empty() {
                continue;
            }
            let adopted = self.adopt(slot).await?;
            slot.release_id = adopted.id;
            slot.version = adopted.version;
        }
        Ok(status)
    }

    /// Before a rollout changes anything, the platform must run what the
    /// ledger last recorded: the same releases carrying traffic (within 5
    /// points) and nothing copilot did not start. A difference stops it
    /// (exit 4, each difference named) unless `adopt`, which takes what
    /// runs as the starting point and audits it. An arena the ledger never
    /// recorded traffic for has nothing to differ from (a first deploy
    /// adopts what runs).
    async fn check_drift(&self, observed: &ArenaStatus, adopt: bool) -> Result<(), RolloutError> {
        let Some(recorded) = self.ledger.traffic(self.target()).await? else {
            return Ok(());
        };
        let serving = recorded
            .split
            .0
            .as_object()
            .is_some_and(|m| m.values().any(|v| v["weight"].as_u64() > Some(0)));
        if !serving {
            // Nothing serves by the ledger's account (taken down): what
            // runs is replaced as on a first deploy.
            return Ok(());
        }
        let differences = drift_between(&recorded.split.0, observed);
        if differences.is_empty() {
            return Ok(());
        }
        let a = &self.arena.name;
        if adopt {
            self.progress.line(&format!(
                "starting from what {a} runs: {}",
                differences.join("; ")
            ));
            self.ledger
                .audit(
                    &NewAudit {
                        actor: self.actor.clone(),
                        action: "drift.adopt".into(),
                        arena: Some(self.target().to_string()),
                        detail: json!({ "differences": differences }),
                        ..NewAudit::default()
                    },
                    clock::now(),
                )
                .await?;
            return Ok(());
        }
        Err(RolloutError::Blocked {
            message: format!(
                "{a} does not run what the ledger says: {}",
                differences.join("; ")
            ),
            hint: format!(
                "`copilot status {a}` shows both; put it back by hand, or run the command again with --adopt-drift to start from what runs"
            ),
        })
    }

    /// The release that names what `slot` runs without copilot: the one
    /// adopted before for the same image, else a new `adopted-<tag>`.
    async fn adopt(&self, slot: &SlotStatus) -> Result<Release, RolloutError> {
        let base = adopted_version(&slot.image);
        for n in 1..10 {
            let version = match n {
                1 => base.clone(),
                n => format!("{base}-{n}"),
            };
            match self.ledger.find_release(&version).await {
                Ok(r) if r.image == slot.image => return Ok(r),
                Ok(_) => continue,
                Err(LedgerError::ReleaseNotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
            let r = self
                .ledger
                .create_release(
                    &copilot_ledger::NewRelease {
                        env: Default::default(),
                        migrations: None,
                        version,
                        image: slot.image.clone(),
                        digest: None,
                        git_sha: None,
                        config_hash: String::new(),
                        created_by: self.actor.clone(),
                    },
                    clock::now(),
                )
                .await?;
            let why = format!(
                "{} runs {} in {}, which copilot did not start",
                self.arena.name, slot.image, slot.slot
            );
            self.ledger
                .audit(
                    &NewAudit {
                        actor: self.actor.clone(),
                        action: "release.adopt".into(),
                        arena: Some(self.target().to_string()),
                        subject: Some(r.id.clone()),
                        reason: Some(why.clone()),
                        detail: json!({ "slot": slot.slot, "image": slot.image, "version": r.version }),
                    },
                    clock::now(),
                )
                .await?;
            self.progress
                .line(&format!("{why}: adopted as release {}", r.version));
            return Ok(r);
        }
        Err(RolloutError::invalid(
            format!(
                "cannot name what {} runs in {} ({}): releases {base} to {base}-9 name other images",
                self.arena.name, slot.slot, slot.image
            ),
            None,
        ))
    }

    /// `copilot deploy`: the release into the idle colour, then all traffic
    /// to it at once; blue-green keeps the old colour as the standby.
    pub async fn deploy(
        &self,
        release: &Release,
        reason: Option<String>,
        adopt_drift: bool,
    ) -> Result<Finished, RolloutError> {
        let what = format!("deploy {} to {}", release.version, self.arena.name);
        self.leased(&what, async |lease| {
            self.deploy_leased(lease, release, reason, adopt_drift)
                .await
        })
        .await
    }

    async fn deploy_leased(
        &self,
        lease: &Lease,
        release: &Release,
        reason: Option<String>,
        adopt_drift: bool,
    ) -> Result<Finished, RolloutError> {
        let before = self.observe().await?;
        self.check_drift(&before, adopt_drift).await?;
        let live = before.live().cloned();
        let idle = live.as_ref().map_or(Slot::Blue, |l| l.slot.other());
        let d = self
            .new_deployment(
                release,
                live.as_ref(),
                "deploy",
                self.arena.strategy.kind.as_str(),
                None,
                reason.clone(),
            )
            .await?;
        let mut reverted = None;
        let result: Result<Value, RolloutError> = async {
            let spec = self.release_spec(release)?;
            let r = self.rollout(&d.id, spec, None, lease);
            let started = match r.start_colour("deploy-idle", idle, None, None).await {
                Err(RolloutError::Stopped(req)) => {
                    reverted = Some(r.stopped_before_traffic(idle, live.as_ref(), &req).await?);
                    return Err(RolloutError::Stopped(req));
                }
                started => started?,
            };
            if let Err(e) = r.shift_as("switch", idle, live.as_ref(), 100, Value::Null).await {
                // Nothing may run that the ledger does not show serving: a
                // switch that failed part-way is put back and the new colour
                // goes; failing that, the deployment stays open (paused) for
                // `rollback`, `abort` or `resume`.
                if !stops_acting(&e) {
                    reverted = Some(r.revert(idle, live.as_ref(), &e.to_string()).await?);
                }
                return Err(e);
            }
            let blue_green = self.arena.strategy.kind == StrategyKind::BlueGreen;
            if let (Some(l), false) = (&live, blue_green) {
                r.retire("retire-old", l.slot, None).await?;
            }
            Ok(json!({
                "slot": started.slot,
                "url": self.provider.url(),
                "instances": started.instances,
                "standby": live.as_ref().filter(|_| blue_green).map(|l| json!({ "slot": l.slot, "release": l.version })),
            }))
        }
        .await;
        if let Err(e) = &result
            && stops_acting(e)
        {
            return Err(result.expect_err("an error"));
        }
        let (state, summary) = match (&result, &reverted) {
            (Ok(_), _) => ("succeeded", None),
            (Err(_), Some(End::Paused(why))) => ("paused", Some(why.clone())),
            (Err(_), Some(End::Aborted(why))) => ("aborted", Some(why.clone())),
            (Err(_), Some(End::Reverted(why))) => ("rolled-back", Some(why.clone())),
            (Err(_), Some(_)) => ("rolled-back", None),
            (Err(e), None) => (failed_state(e), None),
        };
        self.close(
            &d.id,
            state,
            "deploy",
            reason,
            json!({ "release": release.version, "summary": summary }),
        )
        .await?;
        let detail = result?;
        Ok(Finished {
            deployment: d.id,
            release: release.version.clone(),
            state,
            summary: format!("{} is live in {}", release.version, self.arena.name),
            end: End::Succeeded,
            detail,
        })
    }

    fn gates_of(&self, phase: Phase) -> Vec<&'a Gate> {
        let project = self.project;
        self.arena
            .gates
            .for_phase(phase)
            .iter()
            .map(|g| &project.gates[g])
            .collect()
    }

    /// `copilot promote` and `copilot hotfix`: before gates, the idle
    /// colour, after gates against it, then the strategy's traffic steps
    /// with a bake and analysis at each.
    pub async fn promote(&self, p: Promotion<'_>) -> Result<Finished, RolloutError> {
        let release = &p.release;
        let origin = p
            .from
            .map_or("the hotfix lane".to_string(), |f| f.name.clone());
        let what = format!("promote {} from {origin}", release.version);
        self.leased(&what, async |lease| {
            self.promote_leased(lease, &p, &origin).await
        })
        .await
    }

    async fn promote_leased(
        &self,
        lease: &Lease,
        p: &Promotion<'_>,
        origin: &str,
    ) -> Result<Finished, RolloutError> {
        let to = self.arena;
        let release = &p.release;
        let before = self.observe().await?;
        self.check_drift(&before, p.adopt_drift).await?;
        let live = before.live().cloned();
        let idle = live.as_ref().map_or(Slot::Blue, |l| l.slot.other());
        let kind = match (p.hotfix, p.drill) {
            (_, true) => "drill",
            (true, false) => "hotfix",
            (false, false) => "promote",
        };
        let d = self
            .new_deployment(
                release,
                live.as_ref(),
                kind,
                to.strategy.kind.as_str(),
                p.from.map(|f| f.name.as_str()),
                p.reason.clone(),
            )
            .await?;
        let http = reqwest::Client::new();
        let gctx = |url: Option<String>, http: reqwest::Client| GateContext {
            project: self.project,
            root: self.root,
            arena: to,
            source: p.from,
            release: Some(release),
            ledger: self.ledger,
            now: clock::now(),
            target_url: url,
            source_url: None,
            bypass_reason: if p.hotfix { p.reason.clone() } else { None },
            actor: self.actor.clone(),
            http,
            acting: true,
        };
        let end: Result<End, RolloutError> = async {
            // Before gates: nothing changes when they do not pass.
            let before_gates = if p.drill {
                Vec::new()
            } else {
                self.gates_of(Phase::Before)
            };
            if !before_gates.is_empty() {
                self.progress
                    .line(&format!("before gates: {}", to.gates.before.join(", ")));
                let ctx = gctx(None, http.clone());
                let phase = tokio::select! {
                    phase = gates::run(
                        &ctx,
                        Phase::Before,
                        &before_gates,
                        Some(&d.id),
                    ) => phase?,
                    req = self.stop.wait() => {
                        return Ok(End::Aborted(format!("{}: stopped before anything changed", req.by)));
                    }
                };
                let report = self.gates_ran(&d.id, release, phase);
                // A window bypassed on the hotfix lane is recorded with its reason.
                gates::audit_bypass(
                    self.ledger,
                    &report,
                    &self.actor,
                    Some(d.id.clone()),
                    p.reason.as_deref(),
                    clock::now(),
                )
                .await?;
                if let Some(why) = refusal(&report) {
                    let failed: Vec<String> = report
                        .results()
                        .filter(|r| {
                            !matches!(r.outcome, Outcome::Pass | Outcome::Warn | Outcome::Skipped)
                        })
                        .map(|r| format!("{}: {}", r.gate, r.summary))
                        .collect();
                    return Ok(End::Refused(
                        format!("before gates did not pass: {}", failed.join("; ")),
                        why,
                    ));
                }
            }
            let spec = self.release_spec(release)?;
            let rollout = self.rollout(&d.id, spec, p.bake, lease);
            let after = if p.drill {
                Vec::new()
            } else {
                self.gates_of(Phase::After)
            };
            rollout
                .run(idle, live.as_ref(), None, async |new: &SlotStatus| {
                    if after.is_empty() {
                        return Ok(true);
                    }
                    let phase = gates::run(
                        &gctx(Some(new.url.clone()), client_for(new)),
                        Phase::After,
                        &after,
                        Some(&d.id),
                    )
                    .await?;
                    Ok(refusal(&self.gates_ran(&d.id, release, phase)).is_none())
                })
                .await
        }
        .await;
        if let Err(e) = &end
            && stops_acting(e)
        {
            return Err(end.expect_err("an error"));
        }
        let (state, why) = state_of(&end);
        let summary = why.unwrap_or_else(|| format!("{} is live in {}", release.version, to.name));
        self.close(
            &d.id,
            state,
            kind,
            p.reason.clone(),
            json!({ "release": release.version, "from": origin, "summary": summary }),
        )
        .await?;
        Ok(Finished {
            deployment: d.id,
            release: release.version.clone(),
            state,
            summary,
            end: end?,
            detail: Value::Null,
        })
    }

    /// `copilot rollback`: traffic back to the standby colour at once when
    /// it still runs the target; else the target is brought back (by the
    /// platform's own means where it has them) and then switched to. The
    /// arena is pinned until `copilot unlock`.
    /// `copilot rollback`; `suspend_autodeploy` turns the platform's own
    /// deploys on a push off once traffic is back, so a push cannot undo it.
    pub async fn rollback(
        &self,
        to: Option<&str>,
        reason: String,
        suspend_autodeploy: bool,
    ) -> Result<RolledBack, RolloutError> {
        self.leased(&format!("rollback: {reason}"), async |lease| {
            self.rollback_leased(lease, to, reason.clone(), suspend_autodeploy)
                .await
        })
        .await
    }

    async fn rollback_leased(
        &self,
        lease: &Lease,
        to: Option<&str>,
        reason: String,
        suspend_autodeploy: bool,
    ) -> Result<RolledBack, RolloutError> {
        let a = self.arena;
        let status = self.observe().await?;
        // An interrupted deployment is what is rolled back: its new release is
        // "live", its previous release the target.
        let interrupted = self
            .ledger
            .active_deployment(self.target())
            .await?
            .map(|d| d.deployment);
        let live = match &interrupted {
            Some(d) => status
                .slots
                .iter()
                .find(|s| s.release_id == d.release_id)
                .cloned()
                .or_else(|| status.live().cloned()),
            None => status.live().cloned(),
        };
        let Some(live) = live else {
            return Err(RolloutError::invalid(
                format!("nothing is live in {} to roll back", a.name),
                None,
            ));
        };
        if let Some(d) = &interrupted {
            self.ledger
                .interrupt_steps(&d.id, "rollback", clock::now())
                .await?;
            self.ledger
                .set_deployment_state(&d.id, "aborted", clock::now())
                .await?;
        }
        // The target: --to, else the release that was live before the current one.
        let target = match (
            to,
            interrupted
                .as_ref()
                .and_then(|d| d.previous_release_id.clone()),
        ) {
            (Some(r), _) => Some(self.ledger.find_release(r).await?),
            (None, Some(previous)) => self.ledger.release_by_id(&previous).await?,
            (None, None) => {
                let history = self.ledger.history(Some(self.target()), 200).await?;
                let succeeded = || history.iter().filter(|d| d.deployment.state == "succeeded");
                // The release live before the current one; for a first
                // release that replaced one copilot adopted, that one.
                let previous = succeeded()
                    .find(|d| d.deployment.release_id != live.release_id)
                    .or_else(|| succeeded().find(|d| d.deployment.release_id == live.release_id))
                    .and_then(|d| {
                        if d.deployment.release_id == live.release_id {
                            d.deployment.previous_release_id.clone()
                        } else {
                            Some(d.deployment.release_id.clone())
                        }
                    });
                match previous {
                    Some(id) => self.ledger.release_by_id(&id).await?,
                    None => None,
                }
            }
        };
        let Some(target) = target else {
            return Err(RolloutError::invalid(
                format!("{} has no earlier release to roll back to", a.name),
                Some("name one with --to".into()),
            ));
        };
        let d = self
            .new_deployment(
                &target,
                Some(&live),
                "rollback",
                "switch",
                None,
                Some(reason.clone()),
            )
            .await?;
        let spec = self.release_spec(&target)?;
        let keep_going = Stop::default();
        let r = self.rollout_stopped_by(&d.id, spec, None, lease, &keep_going);
        // Instant when the standby colour still runs the target; else bring it back first.
        let instant = status
            .slots
            .iter()
            .find(|s| s.slot != live.slot && s.healthy && s.release_id == target.id)
            .cloned();
        let redeployed = instant.is_none();
        let standby = match instant {
            Some(s) => s,
            None => {
                let recorded = self.ledger.last_handle(self.target(), &target.id).await?;
                match r
                    .start_colour(
                        "redeploy-previous",
                        live.slot.other(),
                        None,
                        recorded.as_ref(),
                    )
                    .await
                {
                    Ok(s) => s,
                    Err(e) => return self.give_up(&d.id, e).await,
                }
            }
        };
        let started = Instant::now();
        let asked = [
            (standby.slot, standby.version.as_str(), 100u8),
            (live.slot, live.version.as_str(), 0u8),
        ];
        let split = split_json(&asked);
        let switched = r
            .step(
                "switch-to-standby",
                json!({ "weights": split }),
                async |seq| {
                    let op = r.op("switch-to-standby");
                    let achieved = self
                        .provider
                        .set_traffic(&op, &[(standby.slot, 100), (live.slot, 0)])
                        .await;
                    r.record_made(seq).await?;
                    let achieved = achieved?;
                    let switch_ms = started.elapsed().as_millis() as u64;
                    let split = super::achieved_json(&asked, &achieved);
                    self.ledger
                        .set_traffic(self.target(), &split, Some(&d.id), clock::now())
                        .await?;
                    Ok((
                        switch_ms,
                        json!({ "weights": split, "switch_ms": switch_ms }),
                    ))
                },
            )
            .await;
        let switch_ms = match switched {
            Ok(ms) => ms,
            Err(e) => return self.give_up(&d.id, e).await,
        };
        self.ledger
            .set_deployment_state(&d.id, "succeeded", clock::now())
            .await?;
        self.events.emit(Event::Finished {
            deployment: d.id.clone(),
            state: "succeeded".into(),
            summary: format!(
                "rolled back from {} to {}: {reason}",
                live.version, standby.version
            ),
            at: clock::now(),
        });
        // Pin the arena: no promotion into it until someone unlocks it.
        lease
            .pin(
                &format!(
                    "rolled back from {} to {}: {reason}",
                    live.version, standby.version
                ),
                clock::now(),
            )
            .await?;
        // Traffic is back and the rollback complete (a crash from here on leaves
        // nothing to undo); now say what the database keeps that the target lacks.
        let from_release = self.ledger.release_by_id(&live.release_id).await?;
        let schema = match &from_release {
            Some(from) => {
                let s = self
                    .ledger
                    .start_step(
                        &d.id,
                        "schema-check",
                        &json!({ "to": target.version }),
                        clock::now(),
                    )
                    .await?;
                let report =
                    super::schema::after_rollback(self.root, self.project, a, from, &target).await;
                let outcome = serde_json::to_value(&report).expect("report serializes");
                self.ledger
                    .finish_step(&d.id, s.seq, "done", &outcome, clock::now())
                    .await?;
                Some(report)
            }
            None => None,
        };
        self.ledger
            .audit(
                &NewAudit {
                    actor: self.actor.clone(),
                    action: "rollback".into(),
                    arena: Some(self.target().to_string()),
                    subject: Some(d.id.clone()),
                    reason: Some(reason.clone()),
                    detail: json!({ "from": live.version, "to": standby.version, "switch_ms": switch_ms, "schema": schema }),
                },
                clock::now(),
            )
            .await?;
        let autodeploy = match status.autodeploy {
            Some(true) if suspend_autodeploy => {
                self.provider.suspend_autodeploy().await?;
                self.ledger
                    .audit(
                        &NewAudit {
                            actor: self.actor.clone(),
                            action: "autodeploy.suspend".into(),
                            arena: Some(self.target().to_string()),
                            subject: Some(d.id.clone()),
                            reason: Some(format!("rollback to {}", standby.version)),
                            detail: json!({}),
                        },
                        clock::now(),
                    )
                    .await?;
                Some("turned-off".to_string())
            }
            Some(true) => Some("on".to_string()),
            _ => None,
        };
        Ok(RolledBack {
            deployment: d.id,
            from: live.version,
            to: standby.version,
            switch_ms,
            redeployed,
            schema,
            autodeploy,
        })
    }

    /// Run `act` on the deployment in progress, holding the arena's lease
    /// taken to `what` it.
    async fn with_active<T>(
        &self,
        what: &str,
        act: impl AsyncFnOnce(&Lease, Deployment) -> Result<T, RolloutError>,
    ) -> Result<T, RolloutError> {
        let Some(active) = self.ledger.active_deployment(self.target()).await? else {
            return Err(RolloutError::invalid(
                format!("no deployment in progress in {}", self.arena.name),
                None,
            ));
        };
        let dep = active.deployment;
        self.leased(&format!("{what} {}", dep.id), async |lease| {
            act(lease, dep).await
        })
        .await
    }

    /// `copilot resume`: continue an interrupted or paused deployment from
    /// where it stood; a start that was under way is waited on again by the
    /// handle its step recorded.
    pub async fn resume(&self, bake: Option<Duration>) -> Result<Finished, RolloutError> {
        self.with_active("resume", async |lease, dep| {
            self.resume_leased(lease, dep, bake).await
        })
        .await
    }

    async fn resume_leased(
        &self,
        lease: &Lease,
        dep: Deployment,
        bake: Option<Duration>,
    ) -> Result<Finished, RolloutError> {
        let a = self.arena;
        // What a killed command was waiting on, before its steps are closed.
        let steps = self.ledger.steps(&dep.id).await?;
        let waiting = steps
            .iter()
            .rev()
            .find(|s| s.name == "deploy-idle" && s.state == "started")
            .and_then(|s| s.handle.as_ref().map(|h| h.0.clone()));
        // With the lease ours, a step still `started` belongs to a dead command.
        self.ledger
            .interrupt_steps(&dep.id, "resume", clock::now())
            .await?;
        let release = self
            .ledger
            .release_by_id(&dep.release_id)
            .await?
            .ok_or_else(|| RolloutError::invalid("the deployment's release is missing", None))?;
        let status = self.observe().await?;
        let new = status
            .slots
            .iter()
            .find(|s| s.release_id == dep.release_id && s.healthy)
            .cloned();
        let old = status
            .slots
            .iter()
            .find(|s| Some(&s.release_id) == dep.previous_release_id.as_ref() && s.healthy)
            .cloned();
        self.ledger
            .set_deployment_state(&dep.id, "running", clock::now())
            .await?;
        let end = async {
            let spec = self.release_spec(&release)?;
            let rollout = self.rollout(&dep.id, spec, bake, lease);
            match &new {
                Some(n) => {
                    // A weight whose bake never finished (the command died during
                    // it, or before it began) is baked again; one whose bake ended in
                    // a pause was decided on by whoever resumes.
                    let baked = steps
                        .iter()
                        .any(|s| s.name == format!("bake-{}", n.weight) && s.state == "done");
                    let has_bake = bake.is_some()
                        || a.strategy.steps.iter().any(|s| {
                            s.weight == n.weight && s.bake.is_some_and(|b| !b.as_std().is_zero())
                        });
                    let from = if has_bake && !baked && n.weight > 0 {
                        n.weight - 1
                    } else {
                        n.weight
                    };
                    self.progress.line(&format!(
                        "{} runs in {} with {}% of traffic; continuing{}",
                        release.version,
                        n.slot,
                        n.weight,
                        if from < n.weight {
                            " with its bake"
                        } else {
                            ""
                        }
                    ));
                    rollout.advance(n, old.as_ref(), from).await
                }
                None => {
                    let idle = old.as_ref().map_or(Slot::Blue, |o| o.slot.other());
                    self.progress.line(&if waiting.is_some() {
                        format!("{} was starting; waiting for it again", release.version)
                    } else {
                        format!("{} is not running yet; deploying it again", release.version)
                    });
                    rollout
                        .run(idle, old.as_ref(), waiting.as_ref(), async |_| Ok(true))
                        .await
                }
            }
        }
        .await;
        if let Err(e) = &end
            && stops_acting(e)
        {
            return Err(end.expect_err("an error"));
        }
        let (state, why) = state_of(&end);
        let summary = why.unwrap_or_else(|| format!("{} is live in {}", release.version, a.name));
        self.close(
            &dep.id,
            state,
            "resume",
            None,
            json!({ "release": release.version, "summary": summary }),
        )
        .await?;
        Ok(Finished {
            deployment: dep.id,
            release: release.version,
            state,
            summary,
            end: end?,
            detail: Value::Null,
        })
    }

    /// `copilot abort`: stop the deployment in progress and put traffic back
    /// on the previous release. When a command is running it (it holds the
    /// lease), it is asked through the ledger to do so itself (`leave`: to
    /// pause where it stands instead), and this waits until it has.
    pub async fn abort(
        &self,
        reason: Option<String>,
        leave: bool,
    ) -> Result<Aborted, RolloutError> {
        if let Some((holder, dep)) = self.running_holder().await? {
            let action = if leave {
                StopAction::Pause
            } else {
                StopAction::Rollback
            };
            let ended = self.stop_holder(&holder, &dep, action, reason).await?;
            let weights = self
                .ledger
                .traffic(self.target())
                .await?
                .map_or(Value::Null, |t| t.split.0);
            let back_to = match (ended.deployment.state.as_str(), &dep.previous_release_id) {
                ("aborted" | "rolled-back", Some(p)) => {
                    self.ledger.release_by_id(p).await?.map(|r| r.version)
                }
                _ => None,
            };
            return Ok(Aborted {
                deployment: dep.id,
                state: ended.deployment.state,
                weights,
                back_to,
            });
        }
        if leave {
            return Err(RolloutError::invalid(
                format!(
                    "no command is running a deployment in {}: there is nothing to leave where it stands",
                    self.arena.name
                ),
                Some(format!(
                    "`copilot abort {}` puts traffic back on the previous release",
                    self.arena.name
                )),
            ));
        }
        self.with_active("abort", async |lease, dep| {
            self.abort_leased(lease, dep, reason).await
        })
        .await
    }

    /// The live lease of a command running a deployment of this arena, and
    /// the deployment, when there is one (a lease whose holder died on
    /// this machine does not count: `abort` takes it over).
    async fn running_holder(&self) -> Result<Option<(Lock, Deployment)>, RolloutError> {
        let Some(lock) = self
            .ledger
            .current_lock(self.target(), clock::real_now())
            .await?
        else {
            return Ok(None);
        };
        if lock.kind != LockKind::Lease
            || (lock.host == copilot_ledger::this_host() && !pid_alive(lock.pid))
        {
            return Ok(None);
        }
        let Some(active) = self.ledger.active_deployment(self.target()).await? else {
            return Ok(None);
        };
        if active.deployment.kind == "rollback" {
            return Err(RolloutError::Blocked {
                message: format!(
                    "{} is rolling {} back; a rollback finishes what it starts",
                    lock.owner, self.arena.name
                ),
                hint: "`copilot status` shows it when it is done".into(),
            });
        }
        Ok(Some((lock, active.deployment)))
    }

    /// Ask `holder`, running `dep`, to stop (through the ledger, where it
    /// looks every half second) and wait until it has let go of the arena.
    async fn stop_holder(
        &self,
        holder: &Lock,
        dep: &Deployment,
        action: StopAction,
        reason: Option<String>,
    ) -> Result<copilot_ledger::DeploymentRow, RolloutError> {
        let cancel = Cancel {
            action,
            by: self.actor.clone(),
            reason: reason.clone(),
        };
        let asked = self
            .ledger
            .request_cancel(self.target(), &cancel, clock::real_now())
            .await?;
        self.ledger
            .audit(
                &NewAudit {
                    actor: self.actor.clone(),
                    action: "deployment.cancel".into(),
                    arena: Some(self.target().to_string()),
                    subject: Some(dep.id.clone()),
                    reason,
                    detail: json!({
                        "action": action,
                        "holder": { "owner": holder.owner, "host": holder.host, "pid": holder.pid },
                    }),
                },
                clock::now(),
            )
            .await?;
        let what = match action {
            StopAction::Rollback => "stop and put traffic back",
            StopAction::Pause => "pause where it stands",
        };
        self.progress.line(&format!(
            "asked {} (pid {} on {}) to {what}",
            holder.owner, holder.pid, holder.host
        ));
        let started = Instant::now();
        loop {
            match self
                .ledger
                .current_lock(self.target(), clock::real_now())
                .await?
            {
                Some(l) if l.token == asked.token => {}
                _ => break,
            }
            if started.elapsed() > HOLDER_STOP_WAIT {
                return Err(RolloutError::Blocked {
                    message: format!(
                        "{} (pid {} on {}) has not stopped within {}s",
                        holder.owner,
                        holder.pid,
                        holder.host,
                        HOLDER_STOP_WAIT.as_secs()
                    ),
                    hint: "it stops at its next step; `copilot status` shows when it has".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.ledger
            .deployment(&dep.id)
            .await?
            .ok_or_else(|| RolloutError::invalid("the deployment is missing", None))
    }

    async fn abort_leased(
        &self,
        lease: &Lease,
        dep: Deployment,
        reason: Option<String>,
    ) -> Result<Aborted, RolloutError> {
        self.ledger
            .interrupt_steps(&dep.id, "abort", clock::now())
            .await?;
        let status = self.observe().await?;
        let new = status
            .slots
            .iter()
            .find(|s| s.release_id == dep.release_id)
            .cloned();
        let old = status
            .slots
            .iter()
            .find(|s| Some(&s.release_id) == dep.previous_release_id.as_ref() && s.healthy)
            .cloned();
        let release = self
            .ledger
            .release_by_id(&dep.release_id)
            .await?
            .ok_or_else(|| RolloutError::invalid("the deployment's release is missing", None))?;
        let spec = ReleaseSpec {
            release_id: release.id.clone(),
            version: release.version.clone(),
            image: release.image.clone(),
            env: Default::default(),
            secrets: Default::default(),
        };
        let keep_going = Stop::default();
        let r = self.rollout_stopped_by(&dep.id, spec, None, lease, &keep_going);
        let weights = r
            .step(
                "abort",
                json!({ "reason": reason, "back_to": old.as_ref().map(|o| &o.version) }),
                async |seq| {
                    let op: Op<'_> = r.op("abort");
                    let split = match (&old, &new) {
                        (Some(o), n) => {
                            let mut asked = vec![(o.slot, o.version.as_str(), 100u8)];
                            let mut weights = vec![(o.slot, 100u8)];
                            if let Some(n) = n {
                                asked.push((n.slot, n.version.as_str(), 0));
                                weights.push((n.slot, 0));
                            }
                            let achieved = self.provider.set_traffic(&op, &weights).await;
                            r.record_made(seq).await?;
                            let achieved = achieved?;
                            if let Some(n) = n {
                                self.provider.remove(&op, n.slot).await?;
                            }
                            super::achieved_json(&asked, &achieved)
                        }
                        // Nothing to go back to: the new colour keeps serving; only the deployment stops.
                        (None, Some(n)) => split_json(&[(n.slot, n.version.as_str(), n.weight)]),
                        (None, None) => json!({}),
                    };
                    self.ledger
                        .set_traffic(self.target(), &split, Some(&dep.id), clock::now())
                        .await?;
                    Ok((split.clone(), json!({ "weights": split })))
                },
            )
            .await;
        let weights = match weights {
            Ok(w) => w,
            Err(e) => return self.give_up(&dep.id, e).await,
        };
        self.ledger
            .set_deployment_state(&dep.id, "aborted", clock::now())
            .await?;
        self.ledger
            .audit(
                &NewAudit {
                    actor: self.actor.clone(),
                    action: "abort".into(),
                    arena: Some(self.target().to_string()),
                    subject: Some(dep.id.clone()),
                    reason,
                    detail: json!({ "weights": weights }),
                },
                clock::now(),
            )
            .await?;
        Ok(Aborted {
            deployment: dep.id,
            state: "aborted".into(),
            weights,
            back_to: old.map(|o| o.version),
        })
    }

    /// `copilot down`: stop everything the provider runs for the arena,
    /// holding its lease like every command that changes it (a running
    /// rollout holds it: exit 4). A deployment left in progress (paused, or
    /// its command killed) is not stopped under it unless `force`, which
    /// records it aborted first.
    pub async fn down(&self, force: bool) -> Result<(), RolloutError> {
        if force && let Some((holder, dep)) = self.running_holder().await? {
            self.stop_holder(
                &holder,
                &dep,
                StopAction::Pause,
                Some("down --force".into()),
            )
            .await?;
        }
        self.leased("take the arena down", async |_| {
            self.down_leased(force).await
        })
        .await
    }

    async fn down_leased(&self, force: bool) -> Result<(), RolloutError> {
        if let Some(active) = self.ledger.active_deployment(self.target()).await? {
            let d = active.deployment;
            if !force {
                return Err(RolloutError::Blocked {
                    message: format!(
                        "{} has a deployment in progress ({} of {}, {})",
                        self.arena.name, d.kind, active.version, d.state
                    ),
                    hint: format!(
                        "`copilot resume {a}` or `copilot abort {a}` finishes it; `copilot down {a} --force` records it aborted and stops everything",
                        a = self.arena.name
                    ),
                });
            }
            self.ledger
                .interrupt_steps(&d.id, "down", clock::now())
                .await?;
            self.ledger
                .set_deployment_state(&d.id, "aborted", clock::now())
                .await?;
        }
        self.provider.down().await?;
        self.ledger
            .set_traffic(self.target(), &json!({}), None, clock::now())
            .await?;
        self.ledger
            .audit(
                &NewAudit {
                    actor: self.actor.clone(),
                    action: "down".into(),
                    arena: Some(self.target().to_string()),
                    ..NewAudit::default()
                },
                clock::now(),
            )
            .await?;
        Ok(())
    }

    /// `copilot down --standby`: scale the blue-green standby to zero once
    /// it has been kept for the arena's `keep_standby` since it stopped
    /// serving (at once with `force`). A rollback afterwards brings the
    /// release back from its recorded revision before it switches.
    pub async fn retire_standby(&self, force: bool) -> Result<Standby, RolloutError> {
        self.leased("retire the standby", async |_| {
            let status = self.observe().await?;
            let Some(live) = status.live() else {
                return Ok(Standby::None);
            };
            let Some(standby) = status
                .slots
                .iter()
                .find(|s| s.slot != live.slot && s.weight == 0 && s.instances.desired > 0)
                .cloned()
            else {
                return Ok(Standby::None);
            };
            let since = self
                .ledger
                .history(Some(self.target()), 50)
                .await?
                .into_iter()
                .find(|d| d.deployment.state == "succeeded")
                .and_then(|d| d.deployment.finished_at);
            let keep = self.arena.rollback.keep_standby.map(|d| d.as_chrono());
            if let (false, Some(since), Some(keep)) = (force, since, keep) {
                let until = since + keep;
                if clock::now() < until {
                    return Ok(Standby::Kept {
                        slot: standby.slot,
                        version: standby.version,
                        until,
                    });
                }
            }
            let op = Op {
                key: format!("{}/retire-standby/{}", self.target(), standby.slot),
                progress: self.progress,
                timeout: self.arena.provider.ready_timeout.as_std(),
            };
            self.provider.remove(&op, standby.slot).await?;
            self.ledger
                .audit(
                    &NewAudit {
                        actor: self.actor.clone(),
                        action: "retire-standby".into(),
                        arena: Some(self.target().to_string()),
                        detail: json!({ "slot": standby.slot, "release": standby.version, "forced": force }),
                        ..NewAudit::default()
                    },
                    clock::now(),
                )
                .await?;
            Ok(Standby::Retired {
                slot: standby.slot,
                version: standby.version,
            })
        })
        .await
    }
}

/// What `retire_standby` found and did.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "standby", rename_all = "kebab-case")]
pub enum Standby {
    /// No colour besides the live one runs.
    None,
    /// Kept: `keep_standby` has not run out.
    Kept {
        slot: Slot,
        version: String,
        until: chrono::DateTime<chrono::Utc>,
    },
    /// Scaled to zero.
    Retired { slot: Slot, version: String },
}

#[cfg(test)]
mod tests {
    #[test]
    fn adopted_images_are_named_by_their_tag() {
        for (image, version) in [
            (
                "123.dkr.ecr.us-east-1.amazonaws.com/shop:2024-11",
                "adopted-2024-11",
            ),
            ("registry:5000/shop", "adopted-latest"),
            ("shop@sha256:abc", "adopted-latest"),
            ("shop:a...b", "adopted-a.b"),
            ("shop:a b", "adopted-a-b"),
        ] {
            assert_eq!(super::adopted_version(image), version, "{image}");
            copilot_core::config::validate::check_version(version).unwrap();
        }
    }
}
