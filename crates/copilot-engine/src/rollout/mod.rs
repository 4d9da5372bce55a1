//! Rollouts: a strategy expanded into steps and executed against a provider,
//! each step's intent written to the ledger before it acts and its outcome
//! after; traffic shifts bake under analysis and roll back automatically.
//!
//! [`executor::Executor`] owns a deployment from start to end (the arena's
//! lease, the journal, gates, provider calls, rollback, resume and abort);
//! [`Rollout`] is the part of it that moves one release in.

pub mod analysis;
pub mod events;
pub mod executor;
pub mod schema;
pub mod stop;

use std::time::Duration;

use serde_json::{Value, json};

use crate::platform::Platform;
use analysis::{Bake, BakeVerdict, Target};
use copilot_core::model::{Arena, OnFail, StrategyKind};
pub use copilot_core::progress::Progress;
use copilot_core::provider::{Handle, Op, Provider, ProviderError, ReleaseSpec, Slot, SlotStatus};
use copilot_ledger::{Lease, Ledger, LedgerError};
use stop::{Stop, StopAction, StopRequest};

/// How a rollout ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    Succeeded,
    /// Analysis or failed after gates sent traffic back to the previous release.
    RolledBack(String),
    /// A platform call failed after traffic had started to move; traffic is
    /// back on the previous release (or a first release was taken down).
    Reverted(String),
    /// Waiting for a person: an alert, too little data to decide, or a stop
    /// request that asked to leave traffic where it is.
    Paused(String),
    /// Stopped on request (`copilot abort`, a signal): traffic is back on
    /// the previous release and the new one stopped.
    Aborted(String),
    /// Nothing changed: the `before` gates did not let the release in.
    Refused(String, Refusal),
}

/// Why `before` gates refused a release.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A blocking gate (a window, a freeze, an approval) said no.
    Blocked,
    GateFailed,
    /// A gate could not reach what it measures.
    Dependency,
    Inconclusive,
}

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Ledger(LedgerError),
    /// The request cannot be carried out as asked (nothing live, no earlier release).
    #[error("{message}")]
    Invalid {
        message: String,
        hint: Option<String>,
    },
    /// Refused, nothing changed: the platform runs something other than
    /// the ledger says, or a deployment is in progress.
    #[error("{message}")]
    Blocked { message: String, hint: String },
    /// This process's lease expired or was taken over: it stops without
    /// touching the platform or the ledger again. Says who holds it now.
    #[error("{0}")]
    LeaseLost(String),
    /// Asked to stop (an abort, a signal) at a point where nothing was
    /// half-done; the rollout decides what that leaves.
    #[error("stopped: {}", .0.by)]
    Stopped(StopRequest),
}

impl From<LedgerError> for RolloutError {
    /// A write fenced out by a lost lease is the lease lost.
    fn from(e: LedgerError) -> Self {
        match e {
            e @ LedgerError::Fenced { .. } => RolloutError::LeaseLost(e.to_string()),
            e => RolloutError::Ledger(e),
        }
    }
}

impl RolloutError {
    pub fn invalid(message: impl Into<String>, hint: Option<String>) -> Self {
        RolloutError::Invalid {
            message: message.into(),
            hint,
        }
    }
}

/// Everything a rollout needs.
pub struct Rollout<'a> {
    pub ledger: &'a Ledger,
    pub provider: &'a Platform,
    pub arena: &'a Arena,
    pub deployment_id: &'a str,
    pub release: ReleaseSpec,
    /// Overrides every bake duration (demos, tests).
    pub bake: Option<Duration>,
    pub progress: &'a dyn Progress,
    /// Where lifecycle events go.
    pub events: &'a events::Events,
    /// The arena's lease: every step checks it is still held.
    pub lease: &'a Lease,
    /// Asked between steps, and raced against bakes, waits and gates.
    pub stop: &'a Stop,
}

/// A split as the ledger records it: per colour, its release and weight.
pub fn split_json(parts: &[(Slot, &str, u8)]) -> Value {
    parts
        .iter()
        .map(|(slot, version, w)| (slot.to_string(), json!({ "release": version, "weight": w })))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// The achieved split, with what was asked next to each weight that differs.
fn achieved_json(asked: &[(Slot, &str, u8)], achieved: &[(Slot, u8)]) -> Value {
    asked
        .iter()
        .map(|(slot, version, w)| {
            let got = achieved
                .iter()
                .find(|(s, _)| s == slot)
                .map_or(*w, |(_, g)| *g);
            let mut v = json!({ "release": version, "weight": got });
            if got != *w {
                v["requested"] = json!(w);
            }
            (slot.to_string(), v)
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// An HTTP client that sends `slot`'s pinning headers with every request.
pub fn client_for(slot: &SlotStatus) -> reqwest::Client {
    let mut headers = reqwest::header::HeaderMap::new();
    for (k, v) in &slot.headers {
        if let (Ok(k), Ok(v)) = (
            reqwest::header::HeaderName::from_bytes(k.as_bytes()),
            reqwest::header::HeaderValue::from_str(v),
        ) {
            headers.insert(k, v);
        }
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .build()
        .expect("an HTTP client builds")
}

impl Rollout<'_> {
    /// `work`, unless a stop is requested or the lease is lost first (then
    /// `work` is dropped: only waits, bakes and gates are raced, never a
    /// call that changes the platform).
    pub async fn or_stop<T>(
        &self,
        work: impl Future<Output = Result<T, RolloutError>>,
    ) -> Result<T, RolloutError> {
        tokio::select! {
            r = work => r,
            s = self.stop.wait() => Err(RolloutError::Stopped(s)),
            lost = self.lease.lost() => Err(lost.into()),
        }
    }

    /// Err when a stop was requested: asked before each forward step.
    pub fn check_stop(&self) -> Result<(), RolloutError> {
        match self.stop.requested() {
            Some(s) => Err(RolloutError::Stopped(s)),
            None => Ok(()),
        }
    }

    /// End a rollout stopped on `req` with the new release in `new`:
    /// paused where it stands, or traffic back on `old` and `new` stopped
    /// (a first release taken down).
    pub async fn stopped(
        &self,
        new: Slot,
        old: Option<&SlotStatus>,
        req: &StopRequest,
    ) -> Result<End, RolloutError> {
        let a = &self.arena.name;
        match req.action {
            StopAction::Pause => {
                let split = self.record_observed_split().await;
                self.progress
                    .line(&format!("{}: pausing with traffic at {split}", req.by));
                Ok(End::Paused(format!(
                    "{}: paused with traffic at {split}: `copilot resume {a}`, `copilot abort {a}` or `copilot rollback {a}` finishes it",
                    req.by
                )))
            }
            StopAction::Rollback => Ok(match self.revert(new, old, &req.by).await? {
                End::Reverted(why) => End::Aborted(why),
                other => other,
            }),
        }
    }

    /// The provider operation of step `name`: its idempotency key comes from
    /// the deployment and the step, so a retry or a resume asks for the same one.
    pub fn op(&self, name: &str) -> Op<'_> {
        Op {
            key: format!("{}/{name}", self.deployment_id),
            progress: self.progress,
            timeout: self.arena.provider.ready_timeout.as_std(),
        }
    }

    pub async fn step<T>(
        &self,
        name: &str,
        intent: Value,
        act: impl AsyncFnOnce(i32) -> Result<(T, Value), RolloutError>,
    ) -> Result<T, RolloutError> {
        // A lease that cannot be vouched for stops the step before it
        // records or touches anything.
        self.lease.ensure().await?;
        let s = self
            .ledger
            .start_step(
                self.deployment_id,
                name,
                &intent,
                copilot_core::clock::now(),
            )
            .await?;
        self.events.emit(events::Event::StepStarted {
            deployment: self.deployment_id.to_string(),
            seq: s.seq,
            name: name.to_string(),
            intent,
            at: s.started_at,
        });
        let finished = |state: &str, outcome: Value| events::Event::StepFinished {
            deployment: self.deployment_id.to_string(),
            seq: s.seq,
            name: name.to_string(),
            state: state.to_string(),
            outcome,
            at: copilot_core::clock::now(),
        };
        match act(s.seq).await {
            Ok((v, outcome)) => {
                self.ledger
                    .finish_step(
                        self.deployment_id,
                        s.seq,
                        "done",
                        &outcome,
                        copilot_core::clock::now(),
                    )
                    .await?;
                self.events.emit(finished("done", outcome));
                Ok(v)
            }
            Err(e) => {
                let mut outcome = json!({ "error": e.to_string() });
                if let RolloutError::Provider(p) = &e {
                    outcome["kind"] = serde_json::to_value(p.kind).unwrap_or_default();
                }
                self.ledger
                    .finish_step(
                        self.deployment_id,
                        s.seq,
                        "failed",
                        &outcome,
                        copilot_core::clock::now(),
                    )
                    .await?;
                self.events.emit(finished("failed", outcome));
                Err(e)
            }
        }
    }

    /// Start the release in `slot` as step `name`: the platform's handle is
    /// recorded as soon as it has one, then the step waits for health. With
    /// `recorded`, an earlier command's handle, it only waits (resume);
    /// with `restore`, the handle the older release ran as (rollback).
    pub async fn start_colour(
        &self,
        name: &str,
        slot: Slot,
        recorded: Option<&Handle>,
        restore: Option<&Handle>,
    ) -> Result<SlotStatus, RolloutError> {
        let intent = json!({ "slot": slot, "release": self.release.version });
        self.progress.begin(
            &format!("deploying {} into {slot}", self.release.version),
            None,
        );
        let started = self
            .step(name, intent, async |seq| {
                let op = self.op(name);
                let handle = match recorded {
                    Some(h) => h.clone(),
                    None => {
                        let restored = match restore {
                            Some(r) => {
                                self.provider
                                    .restore(&op, slot, &self.release, Some(r))
                                    .await?
                            }
                            None => None,
                        };
                        match restored {
                            Some(h) => h,
                            None => self.provider.launch(&op, slot, &self.release).await?,
                        }
                    }
                };
                self.ledger
                    .record_handle(self.deployment_id, seq, &handle)
                    .await?;
                let s = self
                    .or_stop(async {
                        Ok(self
                            .provider
                            .wait_ready(&op, slot, &self.release, &handle)
                            .await?)
                    })
                    .await?;
                let outcome = json!({
                    "slot": s.slot, "url": s.url, "healthy": s.healthy,
                    "instances": s.instances, "handle": handle,
                });
                Ok((s, outcome))
            })
            .await;
        self.progress.finish();
        started
    }

    /// Send `w` percent to the new colour (the rest to the old), as step
    /// `name`; the ledger records the split achieved next to the one asked.
    pub async fn shift_as(
        &self,
        name: &str,
        new: Slot,
        old: Option<&SlotStatus>,
        w: u8,
        extra: Value,
    ) -> Result<Vec<(Slot, u8)>, RolloutError> {
        let mut asked = vec![(new, self.release.version.as_str(), w)];
        if let Some(o) = old {
            asked.push((o.slot, o.version.as_str(), 100 - w));
        }
        let requested = split_json(&asked);
        let mut intent = json!({ "weights": requested });
        if let Value::Object(extra) = extra {
            intent.as_object_mut().expect("object").extend(extra);
        }
        self.step(name, intent, async |seq| {
            let (achieved, split) = self.set_traffic(name, seq, &asked).await?;
            Ok((
                achieved,
                json!({ "weights": split, "requested": requested }),
            ))
        })
        .await
    }

    /// Ask the platform for the split `asked` as operation `name` (step
    /// `seq`), announce what it achieved, and record that split in the ledger.
    async fn set_traffic(
        &self,
        name: &str,
        seq: i32,
        asked: &[(Slot, &str, u8)],
    ) -> Result<(Vec<(Slot, u8)>, Value), RolloutError> {
        let requested: Vec<(Slot, u8)> = asked.iter().map(|(s, _, w)| (*s, *w)).collect();
        let achieved = self.provider.set_traffic(&self.op(name), &requested).await;
        self.record_made(seq).await?;
        let achieved = achieved?;
        self.events.emit(events::Event::TrafficSet {
            deployment: self.deployment_id.to_string(),
            requested,
            achieved: achieved.clone(),
            at: copilot_core::clock::now(),
        });
        let split = achieved_json(asked, &achieved);
        self.ledger
            .set_traffic(
                self.arena.deploys_into(),
                &split,
                Some(self.deployment_id),
                copilot_core::clock::now(),
            )
            .await?;
        Ok((achieved, split))
    }

    /// Record with step `seq` what the platform started besides the
    /// step's own operation (a Render rollback's deploy), so later commands
    /// know it as copilot's.
    pub async fn record_made(&self, seq: i32) -> Result<(), RolloutError> {
        if let Some(h) = self.provider.made().pop() {
            self.ledger
                .record_handle(self.deployment_id, seq, &h)
                .await?;
        }
        Ok(())
    }

    async fn shift(&self, new: Slot, old: Option<&SlotStatus>, w: u8) -> Result<(), RolloutError> {
        let achieved = self
            .shift_as(&format!("shift-{w}"), new, old, w, Value::Null)
            .await?;
        if let Some((_, got)) = achieved.iter().find(|(s, _)| *s == new)
            && *got != w
        {
            self.progress.line(&format!(
                "the platform carries {got}% (not {w}%) on {}",
                self.release.version
            ));
        }
        Ok(())
    }

    /// Stop `slot` as step `name` (it carries no traffic).
    pub async fn retire(
        &self,
        name: &str,
        slot: Slot,
        why: Option<&str>,
    ) -> Result<(), RolloutError> {
        let mut intent = json!({ "slot": slot });
        if let Some(why) = why {
            intent["why"] = json!(why);
        }
        self.step(name, intent, async |_| {
            self.provider.remove(&self.op(name), slot).await?;
            Ok(((), json!({ "stopped": slot })))
        })
        .await
    }

    /// Send all traffic back to the old colour.
    pub async fn roll_back(
        &self,
        new: Slot,
        old: Option<&SlotStatus>,
        why: &str,
    ) -> Result<(), RolloutError> {
        let Some(o) = old else {
            return Ok(());
        };
        let asked = [
            (o.slot, o.version.as_str(), 100),
            (new, self.release.version.as_str(), 0),
        ];
        let full = split_json(&asked);
        self.step(
            "rollback",
            json!({ "reason": why, "weights": full }),
            async |seq| {
                let (_, split) = self.set_traffic("rollback", seq, &asked).await?;
                // A cohort sent to the new release comes back too.
                if self.has_cohort_steps() {
                    self.provider
                        .route_cohort(&self.op("rollback"), None)
                        .await?;
                }
                Ok(((), json!({ "weights": split })))
            },
        )
        .await
    }

    fn has_cohort_steps(&self) -> bool {
        self.arena.strategy.steps.iter().any(|s| s.cohort.is_some())
    }

    /// Send cohort `name`'s shops to the new colour in `slot`, as a step.
    async fn route_cohort(&self, slot: Slot, name: &str) -> Result<(), RolloutError> {
        let shops = self.arena.cohorts.get(name).cloned().unwrap_or_default();
        self.progress.line(&format!(
            "sending cohort {name} ({} shop(s)) to {}; everyone else stays on the previous release",
            shops.len(),
            self.release.version
        ));
        let route = copilot_core::provider::CohortRoute {
            name: name.to_string(),
            slot,
            shops,
        };
        let step = format!("cohort-{name}");
        self.step(&step, json!({ "cohort": route }), async |_| {
            self.provider
                .route_cohort(&self.op(&step), Some(&route))
                .await?;
            Ok(((), json!({ "routed": name })))
        })
        .await
    }

    /// The cohort step is over: its shops follow the weights again.
    async fn end_cohort(&self) -> Result<(), RolloutError> {
        self.step("cohort-end", Value::Null, async |_| {
            self.provider
                .route_cohort(&self.op("cohort-end"), None)
                .await?;
            Ok(((), Value::Null))
        })
        .await
    }

    /// Deploy into the idle colour, then shift traffic step by step with analysis.
    /// `recorded`: the handle of an earlier, interrupted start of this deployment.
    pub async fn run(
        &self,
        idle: Slot,
        old: Option<&SlotStatus>,
        recorded: Option<&Handle>,
        after_gates: impl AsyncFnOnce(&SlotStatus) -> Result<bool, RolloutError>,
    ) -> Result<End, RolloutError> {
        let started = async {
            self.check_stop()?;
            let started = self
                .start_colour("deploy-idle", idle, recorded, None)
                .await?;
            self.progress.line(&if self.live_on_ready() {
                format!(
                    "{} is live at {} (the platform swapped on its health check); running after gates against it",
                    self.release.version, started.url
                )
            } else {
                format!(
                    "{idle} is healthy at {}; running after gates against it",
                    started.url
                )
            });
            let passed = self.or_stop(after_gates(&started)).await?;
            Ok((started, passed))
        }
        .await;
        let (started, passed) = match started {
            Err(RolloutError::Stopped(req)) => {
                return self.stopped_before_traffic(idle, old, &req).await;
            }
            other => other?,
        };
        if !passed {
            let why = "after gates failed against the new release";
            if self.live_on_ready() {
                // It serves already: back through the platform's rollback.
                return Ok(match self.revert(idle, old, why).await? {
                    End::Reverted(why) => End::RolledBack(why),
                    other => other,
                });
            }
            self.retire("retire-new", idle, None).await?;
            return Ok(End::RolledBack(
                "after gates failed against the new colour".into(),
            ));
        }
        self.advance(&started, old, 0).await
    }

    /// Shift traffic to the new colour through the steps above `from` percent,
    /// baking each; `from` is what the new colour already carries (resume).
    ///
    /// A step that fails once traffic may have moved is not left half-done:
    /// traffic goes back to the old colour before the failure is reported
    /// ([`End::Reverted`]), or, when even that fails, the deployment is
    /// paused with the split the platform reports, for `resume`, `abort` or
    /// `rollback` to finish.
    pub async fn advance(
        &self,
        new: &SlotStatus,
        old: Option<&SlotStatus>,
        from: u8,
    ) -> Result<End, RolloutError> {
        match self.shift_through(new, old, from).await {
            // Nothing may act without the lease or the ledger's record.
            Err(
                e @ (RolloutError::LeaseLost(_)
                | RolloutError::Ledger(_)
                | RolloutError::Invalid { .. }),
            ) => Err(e),
            Err(RolloutError::Stopped(req)) => self.stopped(new.slot, old, &req).await,
            Err(e) => self.revert(new.slot, old, &e.to_string()).await,
            ended => ended,
        }
    }

    /// Undo a rollout that failed on `e` with traffic possibly split: all of
    /// it back to `old` and the new colour stopped (a first release, with
    /// nothing to go back to, is taken down). When that fails too, the
    /// platform's split is recorded and the deployment paused.
    pub async fn revert(
        &self,
        new: Slot,
        old: Option<&SlotStatus>,
        why: &str,
    ) -> Result<End, RolloutError> {
        let back = match old {
            Some(o) => format!("putting all traffic back on {}", o.version),
            None => format!("taking {} down", self.release.version),
        };
        self.progress.line(&format!("{why}; {back}"));
        let undone = match old {
            Some(_) => match self.roll_back(new, old, why).await {
                // Refused, yet nothing reaches the new colour (the failed
                // switch never moved traffic): what the platform has is the
                // old split, and the ledger is told so.
                Err(e) if self.serves_nothing(new).await => {
                    tracing::info!("{e}; the platform sends nothing to {new}");
                    self.record_observed_split().await;
                    Ok(())
                }
                other => other,
            },
            None => self.take_down(new, why).await,
        };
        match undone {
            Ok(()) => {
                if old.is_some()
                    && let Err(e) = self.retire("retire-new", new, Some(why)).await
                {
                    // It serves nothing; `copilot down --standby` or the next deploy clears it.
                    tracing::warn!("{e}");
                }
                Ok(End::Reverted(match old {
                    Some(o) => format!("{why}; traffic is back on {}", o.version),
                    None => format!("{why}; {} was taken down", self.release.version),
                }))
            }
            Err(undo) => {
                let split = self.record_observed_split().await;
                self.progress.line(&format!(
                    "{back} failed too ({undo}); traffic stands at {split}"
                ));
                Ok(End::Paused(format!(
                    "{why}; {back} failed too ({undo}); traffic stands at {split}: \
                     `copilot rollback {a}`, `copilot abort {a}` or `copilot resume {a}` finishes it",
                    a = self.arena.name
                )))
            }
        }
    }

    /// Whether the provider puts a release live as soon as it is healthy
    /// (Render): there is no moment when it runs without traffic.
    fn live_on_ready(&self) -> bool {
        crate::platform::capabilities(self.arena.provider.kind).live_on_ready
    }

    /// A rollout stopped before any traffic was sent to `idle`: the old
    /// release still serves; the new colour is stopped (rollback) or left
    /// as it is for `resume` (pause). On a platform that put it live on its
    /// own, it is stopped as after a shift (`old` back in service).
    pub async fn stopped_before_traffic(
        &self,
        idle: Slot,
        old: Option<&SlotStatus>,
        req: &StopRequest,
    ) -> Result<End, RolloutError> {
        if self.live_on_ready() {
            return self.stopped(idle, old, req).await;
        }
        let a = &self.arena.name;
        match req.action {
            StopAction::Pause => Ok(End::Paused(format!(
                "{}: paused before any traffic moved to {}: `copilot resume {a}` or `copilot abort {a}` finishes it",
                req.by, self.release.version
            ))),
            StopAction::Rollback => {
                self.retire("retire-new", idle, Some(&req.by)).await?;
                Ok(End::Aborted(format!(
                    "{}: stopped before any traffic moved to {}",
                    req.by, self.release.version
                )))
            }
        }
    }

    /// Whether the platform says `slot` carries no traffic.
    async fn serves_nothing(&self, slot: Slot) -> bool {
        self.provider
            .status()
            .await
            .is_ok_and(|st| st.slots.iter().all(|s| s.slot != slot || s.weight == 0))
    }

    /// Record the split the platform reports now, as the ledger's traffic;
    /// said as text ("blue v1 50%, green v2 50%"), or "unknown" when the
    /// platform cannot be asked.
    async fn record_observed_split(&self) -> String {
        let Ok(status) = self.provider.status().await else {
            return "unknown (the platform did not answer)".into();
        };
        let parts: Vec<(Slot, &str, u8)> = status
            .slots
            .iter()
            .filter(|s| s.instances.desired > 0 || s.weight > 0)
            .map(|s| (s.slot, s.version.as_str(), s.weight))
            .collect();
        let split = split_json(&parts);
        if let Err(e) = self
            .ledger
            .set_traffic(
                self.arena.deploys_into(),
                &split,
                Some(self.deployment_id),
                copilot_core::clock::now(),
            )
            .await
        {
            tracing::warn!("{e}");
        }
        parts
            .iter()
            .map(|(s, v, w)| format!("{s} {v} {w}%"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A first release that must not keep serving: out of traffic and
    /// stopped, the arena left with nothing live, as the ledger then says.
    pub async fn take_down(&self, new: Slot, why: &str) -> Result<(), RolloutError> {
        self.step(
            "take-down",
            json!({ "reason": why, "slot": new }),
            async |_| {
                let op = self.op("take-down");
                self.provider.set_traffic(&op, &[(new, 0)]).await?;
                self.provider.remove(&op, new).await?;
                self.ledger
                    .set_traffic(
                        self.arena.deploys_into(),
                        &json!({}),
                        Some(self.deployment_id),
                        copilot_core::clock::now(),
                    )
                    .await?;
                Ok(((), json!({ "stopped": new })))
            },
        )
        .await
    }

    async fn shift_through(
        &self,
        new: &SlotStatus,
        old: Option<&SlotStatus>,
        from: u8,
    ) -> Result<End, RolloutError> {
        let idle = new.slot;
        let probe = client_for(new);
        // A first release has nothing to share traffic with: it takes it all.
        let steps = match (self.arena.strategy.kind, old) {
            (StrategyKind::BlueGreen | StrategyKind::Canary, Some(_)) => {
                self.arena.strategy.steps.clone()
            }
            (StrategyKind::BlueGreen | StrategyKind::Canary, None) => {
                vec![copilot_core::model::TrafficStep {
                    weight: 100,
                    bake: self.arena.strategy.steps.last().and_then(|s| s.bake),
                    cohort: None,
                }]
            }
            (StrategyKind::Rolling | StrategyKind::Immediate, _) => {
                vec![copilot_core::model::TrafficStep {
                    weight: 100,
                    bake: None,
                    cohort: None,
                }]
            }
        };
        // Cohort steps run before any weight step; a resume past them
        // (traffic moved by weight already) does not go back to them.
        let mut cohort_routed = false;
        for step in steps
            .iter()
            .filter(|s| s.weight > from || (s.cohort.is_some() && from == 0))
        {
            self.check_stop()?;
            let label = match &step.cohort {
                Some(name) => {
                    self.route_cohort(idle, name).await?;
                    cohort_routed = true;
                    name.clone()
                }
                None => {
                    self.progress.line(&format!(
                        "shifting {}% of traffic to {}",
                        step.weight, self.release.version
                    ));
                    self.shift(idle, old, step.weight).await?;
                    if std::mem::take(&mut cohort_routed) {
                        self.end_cohort().await?;
                    }
                    step.weight.to_string()
                }
            };
            let at = match &step.cohort {
                Some(name) => format!("in cohort {name}"),
                None => format!("at {}%", step.weight),
            };
            let duration = self.bake.or(step.bake.map(|b| b.as_std()));
            let Some(duration) = duration.filter(|d| !d.is_zero()) else {
                continue;
            };
            let report = self
                .step(
                    &format!("bake-{label}"),
                    json!({ "duration_ms": duration.as_millis() as u64, "weight": step.weight, "cohort": step.cohort }),
                    async |_| {
                        let bake = Bake {
                            http: &probe,
                            provider: self.provider,
                            arena: self.arena,
                            target: Target {
                                url: &new.url,
                                slot: idle,
                                release: &self.release.version,
                                weight: step.weight,
                                cohort: step.cohort.as_deref(),
                            },
                            duration,
                            // Shortened bakes measure at least twice.
                            interval_cap: self.bake.map_or(Duration::MAX, |b| b / 2),
                            progress: self.progress,
                            events: self.events,
                            deployment: self.deployment_id,
                            step: &format!("bake-{label}"),
                        };
                        let r = self.or_stop(async { Ok(bake.run().await) }).await?;
                        let outcome = serde_json::to_value(&r).expect("report serializes");
                        Ok((r, outcome))
                    },
                )
                .await?;
            match report.verdict {
                BakeVerdict::Healthy => {}
                BakeVerdict::Breached {
                    metric,
                    action,
                    measured,
                    limit,
                } => {
                    let why = if limit.ends_with("in a row") {
                        format!("{metric} failed {measured} (limit {limit}) {at}")
                    } else {
                        format!("{metric} {measured} > {limit} {at}")
                    };
                    match action {
                        OnFail::Rollback | OnFail::Remove
                            if self.arena.rollback.automatic || old.is_none() =>
                        {
                            let what = if action == OnFail::Remove {
                                "taking the new instance out, traffic back to the previous release"
                            } else {
                                "rolling back"
                            };
                            self.progress.line(&format!("analysis: {why}; {what}"));
                            match old {
                                Some(_) => {
                                    self.roll_back(idle, old, &why).await?;
                                    // The failed release must not stay around as a rollback target.
                                    self.retire("retire-new", idle, None).await?;
                                }
                                // A first release has nothing to go back to: it stops serving.
                                None => self.take_down(idle, &why).await?,
                            }
                            return Ok(End::RolledBack(why));
                        }
                        _ => {
                            self.progress
                                .line(&format!("analysis: {why}; paused for a decision"));
                            return Ok(End::Paused(format!(
                                "{why}: `copilot resume {}` to continue or `copilot rollback {}`",
                                self.arena.name, self.arena.name
                            )));
                        }
                    }
                }
                BakeVerdict::Inconclusive { reason } => {
                    return Ok(End::Paused(format!("analysis inconclusive {at}: {reason}")));
                }
            }
        }
        // Blue-green keeps the old colour on standby for an instant rollback.
        if let (Some(o), false) = (old, self.arena.strategy.kind == StrategyKind::BlueGreen) {
            self.retire("retire-old", o.slot, None).await?;
        }
        Ok(End::Succeeded)
    }
}
