//! Drills: `copilot drill rollback` proves an arena meets seed 003's
//! rollback time targets by putting a deliberately faulty build of its live
//! release through the arena's own rollout and analysis, and measuring, as
//! users see it through the arena's URL, how long until traffic is back.
//!
//! The faulty build is the live release with one of the service's fault
//! switches on (`COPILOT_FAULT_5XX_RATE`: a share of `/api/` requests
//! answer 500). Detection is the analysis' first failed measurement,
//! decision the end of the bake that concluded "roll back", execution the
//! time from there until every request through the arena's URL is served
//! by the good release again. All of it is measured from the deployment's
//! journal and from a prober that asks the arena's URL every
//! [`PROBE_EVERY`] for the whole drill.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;

use crate::incidents::{self, Targets, Timing};
use crate::rollout::executor::{Executor, Promotion};
use crate::rollout::{End, RolloutError};
use copilot_core::clock;
use copilot_ledger::{LedgerError, NewAudit, NewRelease, Release};

/// How often the prober asks the arena's URL.
pub const PROBE_EVERY: Duration = Duration::from_millis(50);

/// What one probe of the arena's URL saw.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    pub at: DateTime<Utc>,
    /// The release `/health` said it was, if it answered.
    pub release: Option<String>,
    /// Whether `/api/flags` answered with a success.
    pub ok: bool,
}

/// Probes the arena's URL until told to stop, on a thread of its own so
/// that nothing the command does meanwhile delays a probe.
pub struct Prober {
    stop: watch::Sender<bool>,
    thread: std::thread::JoinHandle<Vec<Sample>>,
}

impl Prober {
    /// Start asking `url` every `every`: `/health` for the release that
    /// answers, `/api/flags` for whether a user's request succeeds.
    pub fn start(url: &str, every: Duration) -> Prober {
        let (stop, stopped) = watch::channel(false);
        let url = url.trim_end_matches('/').to_string();
        let thread = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|rt| rt.block_on(probe(url, every, stopped)))
                .unwrap_or_default()
        });
        Prober { stop, thread }
    }

    /// Stop and hand over what was seen.
    pub async fn finish(self) -> Vec<Sample> {
        let _ = self.stop.send(true);
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join().unwrap_or_default())
            .await
            .unwrap_or_default()
    }
}

async fn probe(url: String, every: Duration, mut stopped: watch::Receiver<bool>) -> Vec<Sample> {
    let Ok(http) = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
    else {
        return Vec::new();
    };
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.wait_for(|s| *s) => break,
        }
        let (health, api) = tokio::join!(
            http.get(format!("{url}/health")).send(),
            http.get(format!("{url}/api/flags")).send()
        );
        let release = match health {
            Ok(r) => r
                .json::<serde_json::Value>()
                .await
                .ok()
                .and_then(|v| v["release"].as_str().map(str::to_string)),
            Err(_) => None,
        };
        samples.push(Sample {
            at: clock::now(),
            release,
            ok: api.is_ok_and(|r| r.status().is_success()),
        });
    }
    samples
}

/// What users saw through the arena's URL during a drill or chaos.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Seen {
    pub requests: usize,
    pub failed: usize,
    /// Requests `/health` says the faulty release (or the stopped
    /// instance's colour) answered.
    pub served_by_faulty: usize,
}

/// The first instant from which every probe of `samples` at or after
/// `from` is served by `good` and succeeds: traffic is back.
pub fn back_at(samples: &[Sample], from: DateTime<Utc>, good: &str) -> Option<DateTime<Utc>> {
    let after: Vec<&Sample> = samples.iter().filter(|s| s.at >= from).collect();
    let last_bad = after
        .iter()
        .rposition(|s| s.release.as_deref() != Some(good) || !s.ok);
    match last_bad {
        None => after.first().map(|s| s.at),
        Some(i) => after.get(i + 1).map(|s| s.at),
    }
}

/// How a rollback drill came out.
#[derive(Clone, Debug, Serialize)]
pub struct RollbackDrill {
    pub arena: String,
    /// The live release, and the faulty build of it the drill deployed.
    pub release: String,
    pub faulty: String,
    pub fault: String,
    pub deployment: String,
    /// `rolled-back` (the analysis caught it), or how else it ended.
    pub outcome: String,
    pub metric: Option<String>,
    pub targets: Targets,
    pub timings: Vec<Timing>,
    pub seen: Seen,
    /// Whether every target was met.
    pub passed: bool,
}

/// What `copilot drill rollback` asks for.
pub struct RollbackDrillArgs {
    /// The fault switched on in the faulty build (`COPILOT_FAULT_5XX_RATE=0.5`).
    pub fault: (String, String),
    /// Bake every traffic step this long instead of the arena's bakes.
    pub bake: Option<Duration>,
    /// The targets of this severity (seed 003: 1 critical, 2 high, 3 medium).
    pub severity: i64,
}

/// A free version for the `n`th drill build of `live`.
async fn drill_release(
    exec: &Executor<'_>,
    live: &Release,
    fault: &(String, String),
) -> Result<Release, RolloutError> {
    let mut env = live.env.0.clone();
    env.insert(fault.0.clone(), fault.1.clone());
    for n in 1..1000 {
        let version = format!("{}-drill{n}", live.version);
        match exec.ledger.find_release(&version).await {
            Ok(_) => continue,
            Err(LedgerError::ReleaseNotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
        return Ok(exec
            .ledger
            .create_release(
                &NewRelease {
                    env,
                    migrations: live.migrations.as_ref().map(|m| m.0.clone()),
                    version,
                    image: live.image.clone(),
                    digest: live.digest.clone(),
                    git_sha: live.git_sha.clone(),
                    config_hash: live.config_hash.clone(),
                    created_by: exec.actor.clone(),
                },
                clock::now(),
            )
            .await?);
    }
    Err(RolloutError::Blocked {
        message: format!("{} has 999 drill builds already", live.version),
        hint: "drill builds are ordinary releases; nothing needs them after their drill".into(),
    })
}

/// Run a rollback drill on the executor's arena: the faulty build through
/// the arena's own strategy and analysis, measured against `severity`'s
/// targets. The drill leaves the arena as it found it: when the analysis
/// does not roll the build back, the drill does (`rollback`, which pins
/// the arena, as any rollback by hand).
pub async fn rollback(
    exec: &Executor<'_>,
    args: RollbackDrillArgs,
) -> Result<RollbackDrill, RolloutError> {
    use copilot_core::provider::Provider as _;
    let arena = exec.arena.deploys_into().to_string();
    let Some(live) = exec.ledger.live(&arena).await? else {
        return Err(RolloutError::Blocked {
            message: format!("nothing is live in {arena} to drill a rollback to"),
            hint: format!("deploy or promote a release into {arena} first"),
        });
    };
    let good = exec
        .ledger
        .find_release(&live.deployment.release_id)
        .await?;
    let faulty = drill_release(exec, &good, &args.fault).await?;
    let fault = format!("{}={}", args.fault.0, args.fault.1);
    exec.progress.line(&format!(
        "rollback drill: {} is {} with {fault}; the analysis of {arena} must find it",
        faulty.version, good.version
    ));
    let prober = Prober::start(&exec.provider.url(), PROBE_EVERY);
    let done = exec
        .promote(Promotion {
            from: None,
            release: faulty.clone(),
            reason: Some(format!("rollback drill of {} ({fault})", good.version)),
            bake: args.bake,
            hotfix: false,
            adopt_drift: false,
            drill: true,
        })
        .await;
    let done = match done {
        Ok(d) => d,
        Err(e) => {
            prober.finish().await;
            return Err(e);
        }
    };
    // The analysis did not roll it back: put the good release back.
    match &done.end {
        End::RolledBack(_) => {}
        End::Paused(_) => {
            exec.progress
                .line("the analysis paused instead of rolling back; the drill aborts it");
            exec.abort(Some("rollback drill: paused".into()), false)
                .await?;
        }
        End::Succeeded => {
            exec.progress
                .line("the analysis let the faulty build through; the drill rolls it back by hand");
            exec.rollback(
                Some(&good.version),
                format!(
                    "rollback drill: the analysis let {} through",
                    faulty.version
                ),
                false,
            )
            .await?;
        }
        _ => {}
    }
    // A moment more of probes shows traffic staying back.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let samples = prober.finish().await;
    let steps = exec.ledger.steps(&done.deployment).await?;
    let breach = match &done.end {
        End::RolledBack(_) => incidents::breach(&steps),
        _ => None,
    };
    let targets = incidents::targets(args.severity);
    let ms = |a: DateTime<Utc>, b: DateTime<Utc>| (b - a).num_milliseconds().max(0) as u64;
    // A span the drill could not measure (the analysis never acted) is a miss.
    let timing = |phase, measured: Option<u64>, target: Duration| {
        let t = Timing::against(phase, measured, target);
        Timing {
            met: Some(t.met == Some(true)),
            ..t
        }
    };
    let (detection, decision, execution, total) = match &breach {
        Some(b) => {
            let back = back_at(&samples, b.decided, &good.version).or(b.mitigated);
            (
                Some(ms(b.started, b.detected)),
                Some(ms(b.detected, b.decided)),
                back.map(|t| ms(b.decided, t)),
                back.map(|t| ms(b.started, t)),
            )
        }
        None => (None, None, None, None),
    };
    let timings = vec![
        timing("detection", detection, targets.detection),
        timing("decision", decision, targets.decision),
        timing("execution", execution, targets.execution),
        timing("total", total, targets.total),
    ];
    let seen = Seen {
        requests: samples.len(),
        failed: samples.iter().filter(|s| !s.ok).count(),
        served_by_faulty: samples
            .iter()
            .filter(|s| s.release.as_deref() == Some(faulty.version.as_str()))
            .count(),
    };
    let report = RollbackDrill {
        arena: arena.clone(),
        release: good.version.clone(),
        faulty: faulty.version.clone(),
        fault,
        deployment: done.deployment.clone(),
        outcome: done.state.to_string(),
        metric: breach.as_ref().map(|b| b.metric.clone()),
        passed: timings.iter().all(|t| t.met == Some(true)),
        targets,
        timings,
        seen,
    };
    exec.ledger
        .audit(
            &NewAudit {
                actor: exec.actor.clone(),
                action: "drill.rollback".into(),
                arena: Some(arena),
                subject: Some(done.deployment),
                reason: Some(if report.passed {
                    "targets met".into()
                } else {
                    "a target was missed".into()
                }),
                detail: json!(report),
            },
            clock::now(),
        )
        .await?;
    Ok(report)
}

/// How a chaos drill came out.
#[derive(Clone, Debug, Serialize)]
pub struct ChaosDrill {
    pub arena: String,
    /// The live colour and its release.
    pub slot: String,
    pub release: String,
    /// What the platform stopped, and how many instances the colour wants.
    pub stopped: Vec<String>,
    pub desired: u32,
    /// Whether the platform was seen with fewer healthy instances than it wants.
    pub dipped: bool,
    /// The platform replaced what was stopped and the arena's health
    /// check passes again, within the wait.
    pub recovered: bool,
    /// From the stop to the recovery.
    pub recovery_ms: Option<u64>,
    pub wait_ms: u64,
    pub seen: Seen,
}

/// `copilot drill chaos`: stop `n` instances of the live colour through
/// the provider, and measure through the arena's URL what users see until
/// the platform has replaced them and the health check passes again.
pub async fn chaos(
    exec: &Executor<'_>,
    n: usize,
    wait: Duration,
) -> Result<ChaosDrill, RolloutError> {
    use copilot_core::provider::Provider as _;
    let arena = exec.arena.deploys_into().to_string();
    let before = exec.status().await?;
    let Some(live) = before
        .slots
        .iter()
        .filter(|s| s.weight > 0)
        .max_by_key(|s| s.weight)
        .cloned()
    else {
        return Err(RolloutError::Blocked {
            message: format!("nothing serves in {arena} to stop an instance of"),
            hint: format!("deploy or promote a release into {arena} first"),
        });
    };
    let desired = live.instances.desired;
    exec.progress.line(&format!(
        "chaos drill: stopping {n} of the {desired} instance(s) of {} ({}) in {arena}",
        live.slot, live.version
    ));
    let url = exec.provider.url();
    let prober = Prober::start(&url, PROBE_EVERY);
    // Let the prober see the arena as it was first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let op = copilot_core::provider::Op {
        key: format!("drill-chaos/{arena}"),
        progress: exec.progress,
        timeout: wait,
    };
    let stopped = match exec.provider.stop_instances(&op, live.slot, n).await {
        Ok(s) => s,
        Err(e) => {
            prober.finish().await;
            return Err(e.into());
        }
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("an HTTP client");
    let mut dipped = false;
    let mut recovery = None;
    while started.elapsed() < wait {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let Ok(now) = exec.provider.status().await else {
            continue;
        };
        let healthy = now
            .slots
            .iter()
            .find(|s| s.slot == live.slot)
            .map_or(0, |s| s.instances.healthy);
        if healthy < desired {
            dipped = true;
            continue;
        }
        // The platform has not noticed yet: give it a moment before
        // calling what it reports a recovery.
        if !dipped && started.elapsed() < Duration::from_secs(10) {
            continue;
        }
        let health_ok = http
            .get(format!("{}/health", url.trim_end_matches('/')))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if health_ok {
            recovery = Some(started.elapsed());
            break;
        }
    }
    let samples = prober.finish().await;
    let seen = Seen {
        requests: samples.len(),
        failed: samples.iter().filter(|s| !s.ok).count(),
        served_by_faulty: 0,
    };
    let report = ChaosDrill {
        arena: arena.clone(),
        slot: live.slot.to_string(),
        release: live.version.clone(),
        stopped,
        desired,
        dipped,
        recovered: recovery.is_some(),
        recovery_ms: recovery.map(|d| d.as_millis() as u64),
        wait_ms: wait.as_millis() as u64,
        seen,
    };
    exec.ledger
        .audit(
            &NewAudit {
                actor: exec.actor.clone(),
                action: "drill.chaos".into(),
                arena: Some(arena),
                reason: Some(if report.recovered {
                    "recovered".into()
                } else {
                    "not recovered within the wait".into()
                }),
                detail: json!(report),
                ..NewAudit::default()
            },
            clock::now(),
        )
        .await?;
    Ok(report)
}
