//! `copilot status [ARENA]`: what runs where, right now.

use serde_json::{Value, json};

use super::{CmdResult, Context, Report, arena, when};
use copilot_core::clock;
use copilot_ledger::Ledger;
use std::collections::BTreeMap;

use copilot_core::model::{Arena, ProviderKind};
use copilot_core::provider::{ArenaStatus, Provider};
use copilot_engine::platform;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One arena [default: all]
    pub arena: Option<String>,
}

pub async fn run(ctx: &Context, args: Args) -> CmdResult {
    let (root, loaded) = ctx.project()?;
    let project = &loaded.project;
    let arenas: Vec<&Arena> = match &args.arena {
        Some(name) => vec![arena(project, name)?],
        None => {
            let mut all: Vec<&Arena> = project.arenas.values().collect();
            all.sort_by_key(|a| (a.tier, a.name.clone()));
            all
        }
    };
    let ledger = ctx.ledger(Some(&root)).await?;
    let now = clock::now();
    let mut items = Vec::new();
    let mut text = String::new();
    for a in arenas {
        let observed = observe(&root, a).await;
        let (json, human) = arena_status(&ledger, a, observed, now).await?;
        items.push(json);
        text.push_str(&human);
    }
    Ok(Report::new(
        json!({ "at": now, "ledger": ledger.display_url(), "arenas": items }),
        text,
    ))
}

/// What the provider itself reports, where copilot can ask it (a provider
/// built in, with its credentials, that runs something for the arena);
/// `None` otherwise. A lane is reported with the arena it deploys into.
async fn observe(root: &std::path::Path, a: &Arena) -> Option<ArenaStatus> {
    if a.deploys_into() != a.name {
        return None;
    }
    // The local provider starts nothing until something is deployed.
    if a.provider.kind == ProviderKind::Local && !root.join(".copilot/local").join(&a.name).is_dir()
    {
        return None;
    }
    let provider = platform::open(root, a).ok()?;
    match provider.status().await {
        Ok(status) => (!status.slots.is_empty() || !status.drift.is_empty()).then_some(status),
        Err(e) => {
            tracing::warn!(
                "cannot ask the {} provider about {}: {e}",
                a.provider.kind,
                a.name
            );
            None
        }
    }
}

/// Slot -> (release, weight) of the slots carrying traffic.
fn carrying(split: Option<&Value>) -> BTreeMap<String, (String, u64)> {
    split
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(slot, v)| {
            let w = v.get("weight").and_then(Value::as_u64).unwrap_or(0);
            let r = v.get("release").and_then(Value::as_str).unwrap_or("?");
            (w > 0).then(|| (slot.clone(), (r.to_string(), w)))
        })
        .collect()
}

async fn arena_status(
    ledger: &Ledger,
    a: &Arena,
    observed: Option<ArenaStatus>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(Value, String), super::CliError> {
    let live = ledger.live(&a.name).await?;
    let active = ledger.active_deployment(&a.name).await?;
    let traffic = ledger.traffic(&a.name).await?;
    let lock = ledger.current_lock(&a.name, now).await?;
    let step = match &active {
        Some(d) => ledger.steps(&d.deployment.id).await?.pop(),
        None => None,
    };
    let in_freeze: Vec<String> = a
        .windows
        .freeze
        .iter()
        .filter(|f| f.contains(now))
        .map(ToString::to_string)
        .collect();
    let in_window = a.windows.allow.is_empty() || a.windows.allow.iter().any(|w| w.contains(now));

    let mut s = format!(
        "{} ({}, {} on {})\n",
        a.name, a.tier, a.strategy.kind, a.provider.kind
    );
    match &live {
        Some(l) => s.push_str(&format!(
            "  live      {} since {} ({})\n",
            l.version,
            l.deployment.finished_at.map(when).unwrap_or_default(),
            l.deployment.kind
        )),
        None => s.push_str("  live      nothing deployed yet\n"),
    }
    if let Some(d) = &active {
        let step_text = step
            .as_ref()
            .map(|st| format!(", step {} `{}` {}", st.seq, st.name, st.state))
            .unwrap_or_default();
        s.push_str(&format!(
            "  deploying {} ({} {}, {}{step_text})\n",
            d.version, d.deployment.kind, d.deployment.id, d.deployment.state
        ));
    }
    if let Some(t) = &traffic {
        s.push_str(&format!("  traffic   {}\n", describe_split(&t.split.0)));
    }
    // The provider's own account: where it differs from the ledger (a step
    // interrupted between acting and recording, or a change made outside
    // copilot), or a serving slot is down, say so.
    let observed_split = observed.as_ref().map(|o| {
        let m: serde_json::Map<String, Value> = o
            .slots
            .iter()
            .map(|x| {
                (
                    x.slot.to_string(),
                    json!({ "release": x.version, "weight": x.weight, "healthy": x.healthy, "instances": x.instances, "regions": x.regions }),
                )
            })
            .collect();
        Value::Object(m)
    });
    let drift = observed_split
        .as_ref()
        .is_some_and(|o| carrying(Some(o)) != carrying(traffic.as_ref().map(|t| &t.split.0)));
    if let (true, Some(o)) = (drift, &observed_split) {
        s.push_str(&format!(
            "  observed  {split} (the ledger says otherwise: `copilot resume {name}` or `copilot rollback {name}` reconciles)\n",
            split = describe_split(o),
            name = a.name,
        ));
    }
    for x in observed.iter().flat_map(|o| &o.slots) {
        if x.weight > 0 && !x.healthy {
            s.push_str(&format!(
                "  unhealthy {} {} carries {}% and does not answer its health check\n",
                x.slot, x.version, x.weight
            ));
        }
    }
    for x in observed.iter().flat_map(|o| &o.slots) {
        let n = x.instances;
        if n.desired > 1 || n.healthy < n.desired {
            s.push_str(&format!(
                "  {:<9} {} {}/{} instances healthy ({} started)\n",
                x.slot, x.version, n.healthy, n.desired, n.started
            ));
        }
        if x.regions.len() > 1 {
            let per: Vec<String> = x
                .regions
                .iter()
                .map(|r| format!("{} {}/{}", r.region, r.counts.healthy, r.counts.desired))
                .collect();
            s.push_str(&format!("            by region: {}\n", per.join(", ")));
        }
    }
    for d in observed.iter().flat_map(|o| &o.drift) {
        s.push_str(&format!("  drift     {}: {}\n", d.instance, d.what));
    }
    if let Some(l) = &lock {
        s.push_str(&format!(
            "  locked    by {} ({}): {}\n",
            l.owner, l.kind, l.reason
        ));
    }
    if !in_freeze.is_empty() {
        s.push_str(&format!("  frozen    {}\n", in_freeze.join(", ")));
    } else if !in_window {
        s.push_str("  window    outside the deploy windows now\n");
    }
    let json = json!({
        "arena": a.name,
        "tier": a.tier,
        "provider": a.provider.kind,
        "strategy": a.strategy.kind,
        "live": live,
        "deployment": active.map(|d| json!({ "deployment": d, "step": step })),
        "traffic": traffic.map(|t| t.split.0),
        "observed": observed_split,
        "drift": drift,
        "platform_drift": observed.as_ref().map(|o| o.drift.clone()).unwrap_or_default(),
        "lock": lock,
        "window": { "open": in_window, "freezes": in_freeze },
    });
    Ok((json, s))
}

/// `{"blue": {"release": "v1", "weight": 90}, ...}` -> `blue v1 90% | green v2 10%`.
fn describe_split(split: &Value) -> String {
    let Some(obj) = split.as_object() else {
        return split.to_string();
    };
    obj.iter()
        .map(|(slot, v)| {
            let release = v.get("release").and_then(Value::as_str).unwrap_or("?");
            let weight = v.get("weight").and_then(Value::as_u64).unwrap_or(0);
            format!("{slot} {release} {weight}%")
        })
        .collect::<Vec<_>>()
        .join(" | ")
}
