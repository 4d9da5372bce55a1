//! `copilot deploy ARENA --release REF` and `copilot down ARENA`, on the
//! `local` provider; and the router process the local provider starts.
//!
//! A deploy puts the release into the idle colour, waits until it is
//! healthy, then moves all traffic to it and keeps the old colour as
//! standby. Each step's intent is recorded before it acts and its outcome
//! after; the arena's lock is held throughout. Rollouts in steps with gates
//! and analysis (`promote`) build on the same pieces.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::{CliError, CmdResult, Context, Exit, Report, arena};
use crate::clock;
use crate::gates::{Resolved, resolve_reference};
use crate::ledger::{Ledger, LockKind, LockRequest, NewAudit, NewDeployment};
use crate::model::{Arena, ProviderKind, StrategyKind};
use crate::providers::local::LocalProvider;
use crate::providers::{Provider, ProviderError, ReleaseSpec, Slot};

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    pub arena: String,
    /// The release to deploy (id, version or image)
    #[arg(long, value_name = "REF")]
    pub release: String,
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct DownArgs {
    pub arena: String,
}

#[derive(Debug, clap::Args)]
pub struct RouterArgs {
    #[arg(long)]
    pub port: u16,
    #[arg(long)]
    pub admin_port: u16,
    #[arg(long)]
    pub routes: std::path::PathBuf,
}

impl From<ProviderError> for CliError {
    fn from(e: ProviderError) -> Self {
        CliError::new(Exit::Dependency, e.to_string())
    }
}

pub(super) fn local_provider(root: &std::path::Path, a: &Arena) -> Result<LocalProvider, CliError> {
    if a.provider.kind != ProviderKind::Local {
        return Err(CliError::new(
            Exit::Dependency,
            format!(
                "the {} provider is not built into this copilot yet; only `local` arenas can be deployed",
                a.provider.kind
            ),
        ));
    }
    let port = a
        .provider
        .settings
        .get("port")
        .and_then(Value::as_u64)
        .unwrap_or(7400) as u16;
    Ok(LocalProvider::new(root, a.deploys_into(), port)?)
}

/// What the provider runs for `release` in arena `a`: the arena's environment
/// with the release's own variables on top.
pub(super) fn release_spec(
    a: &Arena,
    provider: &LocalProvider,
    release: &crate::ledger::Release,
) -> Result<ReleaseSpec, CliError> {
    let mut env = service_env(a, provider)?;
    env.extend(release.env.0.clone());
    Ok(ReleaseSpec {
        release_id: release.id.clone(),
        version: release.version.clone(),
        image: release.image.clone(),
        env,
    })
}

/// The service's environment for an arena: values, resolved secrets, flags.
fn service_env(a: &Arena, provider: &LocalProvider) -> Result<BTreeMap<String, String>, CliError> {
    let mut env: BTreeMap<String, String> = a.env.values.clone();
    for name in a.env.secrets.keys() {
        match resolve_reference(a, &format!("env:{name}")) {
            Resolved::Value(v) => {
                env.insert(name.clone(), v);
            }
            Resolved::Unresolvable(_) if name == "SHOPIFY_WEBHOOK_SECRET" => {
                // A development secret, kept in the arena's local folder.
                env.insert(name.clone(), provider.dev_secret()?);
            }
            Resolved::Unresolvable(why) if a.env.required.contains(name) => {
                return Err(CliError::invalid(format!("cannot start {}: {why}", a.name))
                    .with_hint(format!(
                        "set it, or run `copilot gate run {} --gate env`",
                        a.name
                    )));
            }
            Resolved::Unresolvable(_) => {}
        }
    }
    if !env.contains_key("SHOPIFY_WEBHOOK_SECRET") {
        env.insert("SHOPIFY_WEBHOOK_SECRET".into(), provider.dev_secret()?);
    }
    env.insert(
        "COPILOT_FLAGS".into(),
        serde_json::to_string(&a.flags).expect("flags serialize"),
    );
    Ok(env)
}

async fn step<T, F>(
    ledger: &Ledger,
    deployment: &str,
    name: &str,
    intent: Value,
    act: F,
) -> Result<T, CliError>
where
    F: std::future::Future<Output = Result<(T, Value), CliError>>,
{
    let s = ledger
        .start_step(deployment, name, &intent, clock::now())
        .await?;
    match act.await {
        Ok((v, outcome)) => {
            ledger
                .finish_step(deployment, s.seq, "done", &outcome, clock::now())
                .await?;
            Ok(v)
        }
        Err(e) => {
            ledger
                .finish_step(
                    deployment,
                    s.seq,
                    "failed",
                    &json!({ "error": e.message }),
                    clock::now(),
                )
                .await?;
            Err(e)
        }
    }
}

pub async fn deploy(ctx: &Context, args: DeployArgs) -> CmdResult {
    let (root, loaded) = ctx.project()?;
    let a = arena(&loaded.project, &args.arena)?;
    let provider = local_provider(&root, a)?;
    let ledger = ctx.ledger(Some(&root)).await?;
    let release = ledger.find_release(&args.release).await?;
    let actor = clock::actor();
    let lease = ledger
        .hold_lease(
            &LockRequest::here(
                a.deploys_into(),
                LockKind::Lease,
                &actor,
                &format!("deploy {} to {}", release.version, a.name),
                Some(Duration::from_secs(60)),
            ),
            clock::now(),
        )
        .await?;
    let before = provider.status().await?;
    let live = before.live().cloned();
    let idle = live.as_ref().map_or(Slot::Blue, |l| l.slot.other());
    let d = ledger
        .create_deployment(
            &NewDeployment {
                arena: a.deploys_into().to_string(),
                release_id: release.id.clone(),
                previous_release_id: live.as_ref().map(|l| l.release_id.clone()),
                kind: "deploy".into(),
                strategy: a.strategy.kind.to_string(),
                source_arena: None,
                reason: args.reason.clone(),
                created_by: actor.clone(),
            },
            clock::now(),
        )
        .await?;
    let result: Result<Value, CliError> = async {
        let spec = release_spec(a, &provider, &release)?;
        let started = step(&ledger, &d.id, "deploy-idle", json!({ "slot": idle, "release": release.version }), async {
            let s = provider.deploy(idle, &spec).await?;
            let outcome = json!({ "slot": s.slot, "url": s.url, "healthy": s.healthy });
            Ok((s, outcome))
        })
        .await?;
        let mut weights = vec![(idle, 100u8)];
        if let Some(l) = &live {
            weights.push((l.slot, 0));
        }
        let split: Value = weights
            .iter()
            .map(|(s, w)| {
                let version = if *s == idle { release.version.clone() } else { live.as_ref().map(|l| l.version.clone()).unwrap_or_default() };
                (s.to_string(), json!({ "release": version, "weight": w }))
            })
            .collect::<serde_json::Map<_, _>>()
            .into();
        let switched = step(&ledger, &d.id, "switch", json!({ "weights": split }), async {
            provider.set_traffic(&weights).await?;
            ledger.set_traffic(a.deploys_into(), &split, Some(&d.id), clock::now()).await?;
            Ok(((), json!({ "weights": split })))
        })
        .await;
        if let Err(e) = switched {
            // Nothing may run that the ledger does not show serving: the new
            // colour never took traffic, so it goes, and the live one stays.
            step(&ledger, &d.id, "retire-new", json!({ "slot": idle, "why": e.message }), async {
                provider.remove(idle).await?;
                Ok(((), json!({ "stopped": idle })))
            })
            .await?;
            return Err(e);
        }
        // Blue-green keeps the old colour as a standby; other strategies retire it.
        if let (Some(l), false) = (&live, a.strategy.kind == StrategyKind::BlueGreen) {
            let slot = l.slot;
            step(&ledger, &d.id, "retire-old", json!({ "slot": slot }), async {
                provider.remove(slot).await?;
                Ok(((), json!({ "stopped": slot })))
            })
            .await?;
        }
        Ok(json!({ "slot": started.slot, "url": provider.url(), "standby": live.as_ref().filter(|_| a.strategy.kind == StrategyKind::BlueGreen).map(|l| json!({ "slot": l.slot, "release": l.version })) }))
    }
    .await;
    let state = if result.is_ok() {
        "succeeded"
    } else {
        "failed"
    };
    ledger
        .set_deployment_state(&d.id, state, clock::now())
        .await?;
    ledger
        .audit(
            &NewAudit {
                actor: actor.clone(),
                action: format!("deploy.{state}"),
                arena: Some(a.deploys_into().to_string()),
                subject: Some(d.id.clone()),
                reason: args.reason.clone(),
                detail: json!({ "release": release.version }),
            },
            clock::now(),
        )
        .await?;
    lease.release().await?;
    let detail = result?;
    let text = format!(
        "Deployed {} to {} ({}): {} serves {}\n",
        release.version,
        a.name,
        d.id,
        detail["slot"].as_str().unwrap_or(""),
        provider.url()
    );
    Ok(Report::new(
        json!({ "deployment": d.id, "release": release.version, "arena": a.name, "detail": detail }),
        text,
    ))
}

pub async fn down(ctx: &Context, args: DownArgs) -> CmdResult {
    let (root, loaded) = ctx.project()?;
    let a = arena(&loaded.project, &args.arena)?;
    let provider = local_provider(&root, a)?;
    let ledger = ctx.ledger(Some(&root)).await?;
    provider.down().await?;
    ledger
        .set_traffic(a.deploys_into(), &json!({}), None, clock::now())
        .await?;
    ledger
        .audit(
            &NewAudit {
                actor: clock::actor(),
                action: "down".into(),
                arena: Some(a.deploys_into().to_string()),
                ..NewAudit::default()
            },
            clock::now(),
        )
        .await?;
    Ok(Report::new(
        json!({ "arena": a.name, "stopped": true }),
        format!("Stopped everything running for {}\n", a.name),
    ))
}

pub async fn router(args: RouterArgs) -> CmdResult {
    crate::providers::local::router::serve(args.port, args.admin_port, args.routes)
        .await
        .map_err(|e| CliError::new(Exit::Dependency, format!("router: {e}")))?;
    Ok(Report::new(json!({ "stopped": true }), ""))
}
