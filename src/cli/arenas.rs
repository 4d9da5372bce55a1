//! `copilot arenas list | show ARENA`.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::{CmdResult, Context, Report, Table, arena};
use copilot_core::model::{Arena, MetricLimit};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Every arena with its provider, strategy and promotion path
    List,
    /// One arena, resolved: provider, strategy, gates, environment, flags, windows
    Show { arena: String },
}

pub fn run(ctx: &Context, cmd: Command) -> CmdResult {
    let (_, loaded) = ctx.project()?;
    let project = &loaded.project;
    match cmd {
        Command::List => {
            let mut t = Table::new([
                "ARENA",
                "TIER",
                "PROVIDER",
                "STRATEGY",
                "PROMOTES FROM",
                "GATES",
            ]);
            let mut items = Vec::new();
            let mut arenas: Vec<&Arena> = project.arenas.values().collect();
            arenas.sort_by_key(|a| (a.tier, a.name.clone()));
            for a in arenas {
                let from = a
                    .promotes_from
                    .clone()
                    .or_else(|| a.target.as_ref().map(|t| format!("(lane into {t})")))
                    .unwrap_or_else(|| "-".into());
                t.row([
                    a.name.clone(),
                    a.tier.to_string(),
                    a.provider.kind.to_string(),
                    a.strategy.kind.to_string(),
                    from,
                    format!(
                        "{} before, {} after",
                        a.gates.before.len(),
                        a.gates.after.len()
                    ),
                ]);
                items.push(summary(a));
            }
            Ok(Report::new(json!({ "arenas": items }), t.render()))
        }
        Command::Show { arena: name } => {
            let a = arena(project, &name)?;
            Ok(Report::new(
                serde_json::to_value(a).expect("arena serializes"),
                describe(a),
            ))
        }
    }
}

fn summary(a: &Arena) -> Value {
    json!({
        "name": a.name,
        "tier": a.tier,
        "provider": a.provider.kind,
        "strategy": a.strategy.kind,
        "swap": copilot_engine::platform::swap_note(a.provider.kind),
        "promotes_from": a.promotes_from,
        "target": a.target,
        "gates": a.gates,
    })
}

fn describe(a: &Arena) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "arena       {} ({})", a.name, a.tier);
    if let Some(d) = &a.description {
        let _ = writeln!(s, "            {d}");
    }
    if let Some(f) = &a.promotes_from {
        let _ = writeln!(s, "from        {f}");
    }
    if let Some(t) = &a.target {
        let _ = writeln!(s, "lane into   {t}");
    }
    let settings = a.provider.settings.describe();
    let _ = writeln!(
        s,
        "provider    {} x{} {}",
        a.provider.kind,
        a.provider.instances,
        settings.join(" ")
    );
    let steps: Vec<String> = a
        .strategy
        .steps
        .iter()
        .map(|st| match &st.bake {
            Some(b) => format!("{} bake {b}", st.label()),
            None => st.label(),
        })
        .collect();
    let _ = writeln!(s, "strategy    {} {}", a.strategy.kind, steps.join(" -> "));
    if let Some(note) = copilot_engine::platform::swap_note(a.provider.kind) {
        let _ = writeln!(s, "            {note}");
    }
    if let Some(an) = &a.strategy.analysis {
        let _ = writeln!(
            s,
            "analysis    every {}, at least {} samples",
            an.interval, an.min_samples
        );
        for m in &an.metrics {
            let limit = match &m.limit {
                MetricLimit::Max { max } => format!("> {max}"),
                MetricLimit::MaxDuration { max } => format!("> {max}"),
                MetricLimit::ConsecutiveFailures { count } => {
                    format!("{count} consecutive failures")
                }
            };
            let window = m.window.map(|w| format!(" over {w}")).unwrap_or_default();
            let _ = writeln!(s, "            {} {limit}{window} -> {}", m.name, m.on_fail);
        }
    }
    let _ = writeln!(s, "gates       before: {}", list(&a.gates.before));
    let _ = writeln!(s, "            after:  {}", list(&a.gates.after));
    let _ = writeln!(s, "env         required: {}", list(&a.env.required));
    for (k, v) in &a.env.values {
        let _ = writeln!(s, "            {k}={v}");
    }
    for (k, r) in &a.env.secrets {
        let _ = writeln!(s, "            {k}=<secret from {r}>");
    }
    let on: Vec<&str> = a
        .flags
        .iter()
        .filter(|(_, v)| **v)
        .map(|(k, _)| k.as_str())
        .collect();
    let off: Vec<&str> = a
        .flags
        .iter()
        .filter(|(_, v)| !**v)
        .map(|(k, _)| k.as_str())
        .collect();
    let _ = writeln!(s, "flags       on: {}", list(&on));
    let _ = writeln!(s, "            off: {}", list(&off));
    if !a.windows.allow.is_empty() || !a.windows.freeze.is_empty() {
        let allow: Vec<String> = a.windows.allow.iter().map(ToString::to_string).collect();
        let freeze: Vec<String> = a.windows.freeze.iter().map(ToString::to_string).collect();
        let _ = writeln!(s, "windows     allow: {}", list(&allow));
        let _ = writeln!(s, "            freeze: {}", list(&freeze));
        let _ = writeln!(s, "            bypass: {}", a.windows.bypass);
    }
    if let Some(ks) = &a.rollback.keep_standby {
        let _ = writeln!(
            s,
            "rollback    keep standby {ks}, automatic: {}",
            a.rollback.automatic
        );
    }
    s
}

fn list<S: AsRef<str>>(items: &[S]) -> String {
    if items.is_empty() {
        "-".into()
    } else {
        items
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(", ")
    }
}
