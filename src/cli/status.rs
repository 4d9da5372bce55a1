//! `copilot status [ARENA]`: what runs where, right now.

use serde_json::Value;

use super::{CmdResult, Context, Report, arena, when};
use copilot_core::clock;
use copilot_core::model::Arena;
use copilot_engine::views::status::{ArenaStatusView, status};

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
    let view = status(&root, &ledger, &arenas, clock::now()).await?;
    let text: String = view.arenas.iter().map(render).collect();
    Ok(Report::new(
        serde_json::to_value(&view).expect("json"),
        text,
    ))
}

/// One arena as lines of text.
fn render(v: &ArenaStatusView) -> String {
    let mut s = format!(
        "{} ({}, {} on {})\n",
        v.arena, v.tier, v.strategy, v.provider
    );
    match &v.live {
        Some(l) => s.push_str(&format!(
            "  live      {} since {} ({})\n",
            l.version,
            l.deployment.finished_at.map(when).unwrap_or_default(),
            l.deployment.kind
        )),
        None => s.push_str("  live      nothing deployed yet\n"),
    }
    if let Some(p) = &v.deployment {
        let d = &p.deployment;
        let step_text = p
            .step
            .as_ref()
            .map(|st| format!(", step {} `{}` {}", st.seq, st.name, st.state))
            .unwrap_or_default();
        s.push_str(&format!(
            "  deploying {} ({} {}, {}{step_text})\n",
            d.version, d.deployment.kind, d.deployment.id, d.deployment.state
        ));
    }
    if let Some(t) = &v.traffic {
        s.push_str(&format!("  traffic   {}\n", describe_split(t)));
    }
    // The provider's own account: where it differs from the ledger (a step
    // interrupted between acting and recording, or a change made outside
    // copilot), or a serving slot is down, say so.
    if let (true, Some(o)) = (v.drift, &v.observed) {
        let advice = match &v.deployment {
            Some(_) => format!(
                "`copilot resume {name}` or `copilot abort {name}` finishes the deployment in progress",
                name = v.arena
            ),
            None => format!(
                "`copilot rollback {name}` puts the previous release back; a deploy or promote with --adopt-drift starts from what runs",
                name = v.arena
            ),
        };
        s.push_str(&format!(
            "  observed  {split} (the ledger says otherwise: {advice})\n",
            split = describe_split(o),
        ));
    }
    if let Some(why) = &v.not_observed {
        s.push_str(&format!("  platform  not asked ({why})\n"));
    }
    for x in &v.slots {
        if x.weight > 0 && !x.healthy {
            s.push_str(&format!(
                "  unhealthy {} {} carries {}% and does not answer its health check\n",
                x.slot, x.version, x.weight
            ));
        }
    }
    for x in &v.slots {
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
    for d in &v.platform_drift {
        s.push_str(&format!("  drift     {}: {}\n", d.instance, d.what));
    }
    match v.autodeploy {
        Some(true) => s.push_str("  autodeploy on: a push deploys without copilot\n"),
        Some(false) => s.push_str("  autodeploy off\n"),
        None => {}
    }
    if let Some(l) = &v.lock {
        s.push_str(&format!(
            "  locked    by {} ({}): {}\n",
            l.owner, l.kind, l.reason
        ));
    }
    for o in &v.incidents {
        let i = &o.incident;
        s.push_str(&format!(
            "  incident  {} SEV{} {} since {}: {}{}\n",
            i.id,
            i.severity,
            i.status,
            when(i.started_at),
            i.impact,
            decision(o.decision_in_s, i)
        ));
    }
    if !v.window.freezes.is_empty() {
        s.push_str(&format!("  frozen    {}\n", v.window.freezes.join(", ")));
    } else if !v.window.open {
        s.push_str("  window    outside the deploy windows now\n");
    }
    s
}

/// What an open incident waits for: a SEV2's decision, counting down.
fn decision(left: Option<i64>, i: &copilot_ledger::Incident) -> String {
    if i.mitigated_at.is_some() {
        return "; rolled back".into();
    }
    match (left, i.decision_due_at) {
        (Some(s), Some(due)) if s >= 0 => format!(
            "; decide by {} ({}m {:02}s left): `copilot rollback {}` or `copilot incident update {} --status identified`",
            due.format("%H:%M:%S UTC"),
            s / 60,
            s % 60,
            i.arena,
            i.id
        ),
        (Some(s), Some(due)) => format!(
            "; decision OVERDUE by {}m {:02}s (was due {})",
            -s / 60,
            -s % 60,
            due.format("%H:%M:%S UTC")
        ),
        _ => String::new(),
    }
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
