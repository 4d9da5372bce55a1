//! Rollouts: a strategy expanded into steps and executed against a provider,
//! each step's intent written to the ledger before it acts and its outcome
//! after; traffic shifts bake under analysis and roll back automatically.

pub mod analysis;
pub mod schema;

use std::time::Duration;

use serde_json::{Value, json};

use crate::ledger::{Ledger, LedgerError};
use crate::model::{Arena, OnFail, StrategyKind};
use crate::providers::{Provider, ProviderError, ReleaseSpec, Slot, SlotStatus};
use analysis::{Bake, BakeVerdict, Target};

/// Where a rollout tells people what it does: lines, and waits of known
/// length (bakes) that a terminal can draw as a bar.
pub trait Progress: Sync {
    /// One thing that happened.
    fn line(&self, text: &str);
    /// A wait begins; `total` when its length is known.
    fn begin(&self, _label: &str, _total: Option<Duration>) {}
    /// Time passes (called often; for bars).
    fn tick(&self, _elapsed: Duration) {}
    /// Where the wait stands after a measurement.
    fn update(&self, _elapsed: Duration, _status: &str) {}
    fn finish(&self) {}
}

/// How a rollout ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    Succeeded,
    /// Analysis or a failed step sent traffic back to the previous release.
    RolledBack(String),
    /// Waiting for a person: an alert, or too little data to decide.
    Paused(String),
}

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    #[error(transparent)]
    Ledger(#[from] LedgerError),
}

/// Everything a rollout needs.
pub struct Rollout<'a, P: Provider> {
    pub ledger: &'a Ledger,
    pub provider: &'a P,
    pub arena: &'a Arena,
    pub deployment_id: &'a str,
    pub release: ReleaseSpec,
    /// Overrides every bake duration (demos, tests).
    pub bake: Option<Duration>,
    pub http: reqwest::Client,
    pub progress: &'a dyn Progress,
}

fn split_json(new: Slot, new_version: &str, old: Option<&SlotStatus>, w: u8) -> Value {
    let mut m = serde_json::Map::new();
    m.insert(
        new.to_string(),
        json!({ "release": new_version, "weight": w }),
    );
    if let Some(o) = old {
        m.insert(
            o.slot.to_string(),
            json!({ "release": o.version, "weight": 100 - w }),
        );
    }
    Value::Object(m)
}

impl<P: Provider> Rollout<'_, P> {
    async fn step<T>(
        &self,
        name: &str,
        intent: Value,
        act: impl std::future::Future<Output = Result<(T, Value), RolloutError>>,
    ) -> Result<T, RolloutError> {
        let s = self
            .ledger
            .start_step(self.deployment_id, name, &intent, crate::clock::now())
            .await?;
        match act.await {
            Ok((v, outcome)) => {
                self.ledger
                    .finish_step(
                        self.deployment_id,
                        s.seq,
                        "done",
                        &outcome,
                        crate::clock::now(),
                    )
                    .await?;
                Ok(v)
            }
            Err(e) => {
                self.ledger
                    .finish_step(
                        self.deployment_id,
                        s.seq,
                        "failed",
                        &json!({ "error": e.to_string() }),
                        crate::clock::now(),
                    )
                    .await?;
                Err(e)
            }
        }
    }

    async fn shift(&self, new: Slot, old: Option<&SlotStatus>, w: u8) -> Result<(), RolloutError> {
        let mut weights = vec![(new, w)];
        if let Some(o) = old {
            weights.push((o.slot, 100 - w));
        }
        let split = split_json(new, &self.release.version, old, w);
        self.step(&format!("shift-{w}"), json!({ "weights": split }), async {
            self.provider.set_traffic(&weights).await?;
            self.ledger
                .set_traffic(
                    self.arena.deploys_into(),
                    &split,
                    Some(self.deployment_id),
                    crate::clock::now(),
                )
                .await?;
            Ok(((), json!({ "weights": split })))
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
        let split = split_json(o.slot, &o.version, None, 100);
        let mut full = split.clone();
        if let Some(m) = full.as_object_mut() {
            m.insert(
                new.to_string(),
                json!({ "release": self.release.version, "weight": 0 }),
            );
        }
        self.step(
            "rollback",
            json!({ "reason": why, "weights": full }),
            async {
                self.provider
                    .set_traffic(&[(o.slot, 100), (new, 0)])
                    .await?;
                self.ledger
                    .set_traffic(
                        self.arena.deploys_into(),
                        &full,
                        Some(self.deployment_id),
                        crate::clock::now(),
                    )
                    .await?;
                Ok(((), json!({ "weights": full })))
            },
        )
        .await
    }

    /// Deploy into the idle colour, then shift traffic step by step with analysis.
    pub async fn run(
        &self,
        idle: Slot,
        old: Option<&SlotStatus>,
        after_gates: impl AsyncFnOnce(&str) -> Result<bool, RolloutError>,
    ) -> Result<End, RolloutError> {
        self.progress.begin(
            &format!("deploying {} into {idle}", self.release.version),
            None,
        );
        let started = self
            .step(
                "deploy-idle",
                json!({ "slot": idle, "release": self.release.version }),
                async {
                    let s = self.provider.deploy(idle, &self.release).await?;
                    let outcome = json!({ "slot": s.slot, "url": s.url, "healthy": s.healthy });
                    Ok((s, outcome))
                },
            )
            .await;
        self.progress.finish();
        let started = started?;
        self.progress.line(&format!(
            "{idle} is healthy at {}; running after gates against it",
            started.url
        ));
        if !after_gates(&started.url).await? {
            self.step("retire-new", json!({ "slot": idle }), async {
                self.provider.remove(idle).await?;
                Ok(((), json!({ "stopped": idle })))
            })
            .await?;
            return Ok(End::RolledBack(
                "after gates failed against the new colour".into(),
            ));
        }
        self.advance(idle, &started.url, old, 0).await
    }

    /// Shift traffic to the new colour through the steps above `from` percent,
    /// baking each; `from` is what the new colour already carries (resume).
    pub async fn advance(
        &self,
        idle: Slot,
        new_url: &str,
        old: Option<&SlotStatus>,
        from: u8,
    ) -> Result<End, RolloutError> {
        // A first release has nothing to share traffic with: it takes it all.
        let steps = match (self.arena.strategy.kind, old) {
            (StrategyKind::BlueGreen | StrategyKind::Canary, Some(_)) => {
                self.arena.strategy.steps.clone()
            }
            (StrategyKind::BlueGreen | StrategyKind::Canary, None) => {
                vec![crate::model::TrafficStep {
                    weight: 100,
                    bake: self.arena.strategy.steps.last().and_then(|s| s.bake),
                }]
            }
            (StrategyKind::Rolling | StrategyKind::Immediate, _) => {
                vec![crate::model::TrafficStep {
                    weight: 100,
                    bake: None,
                }]
            }
        };
        for step in steps.iter().filter(|s| s.weight > from) {
            self.progress.line(&format!(
                "shifting {}% of traffic to {}",
                step.weight, self.release.version
            ));
            self.shift(idle, old, step.weight).await?;
            let duration = self.bake.or(step.bake.map(|b| b.as_std()));
            let Some(duration) = duration.filter(|d| !d.is_zero()) else {
                continue;
            };
            let report = self
                .step(
                    &format!("bake-{}", step.weight),
                    json!({ "duration_ms": duration.as_millis() as u64, "weight": step.weight }),
                    async {
                        let r = Bake {
                            http: &self.http,
                            arena: self.arena,
                            target: Target {
                                url: new_url,
                                slot: idle,
                                release: &self.release.version,
                                weight: step.weight,
                            },
                            duration,
                            // Shortened bakes measure at least twice.
                            interval_cap: self.bake.map_or(Duration::MAX, |b| b / 2),
                            progress: self.progress,
                        }
                        .run()
                        .await;
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
                        format!(
                            "{metric} failed {measured} (limit {limit}) at {}%",
                            step.weight
                        )
                    } else {
                        format!("{metric} {measured} > {limit} at {}%", step.weight)
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
                            self.roll_back(idle, old, &why).await?;
                            // The failed release must not stay around as a rollback target.
                            if old.is_some() {
                                self.step("retire-new", json!({ "slot": idle }), async {
                                    self.provider.remove(idle).await?;
                                    Ok(((), json!({ "stopped": idle })))
                                })
                                .await?;
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
                    return Ok(End::Paused(format!(
                        "analysis inconclusive at {}%: {reason}",
                        step.weight
                    )));
                }
            }
        }
        // Blue-green keeps the old colour on standby for an instant rollback.
        if let (Some(o), false) = (old, self.arena.strategy.kind == StrategyKind::BlueGreen) {
            let slot = o.slot;
            self.step("retire-old", json!({ "slot": slot }), async {
                self.provider.remove(slot).await?;
                Ok(((), json!({ "stopped": slot })))
            })
            .await?;
        }
        Ok(End::Succeeded)
    }
}
