//! `copilot evidence DEPLOYMENT` (the release ticket) and `copilot plan FROM TO`.

use std::fmt::Write as _;

use copilot_ledger::MigrationRecord;
use serde_json::{Value, json};

use super::{CliError, CmdResult, Context, Report, arena, when};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EvidenceFormat {
    Markdown,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct EvidenceArgs {
    /// Deployment id (or a unique prefix)
    pub deployment: String,
    #[arg(long, value_enum, default_value_t = EvidenceFormat::Markdown)]
    pub format: EvidenceFormat,
}

#[derive(Debug, clap::Args)]
pub struct PlanArgs {
    pub from: String,
    pub to: String,
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

pub async fn evidence(ctx: &Context, args: EvidenceArgs) -> CmdResult {
    let root = ctx.root()?;
    let ledger = ctx.ledger(Some(&root)).await?;
    let Some(d) = ledger.deployment(&args.deployment).await? else {
        return Err(
            CliError::invalid(format!("no deployment matches `{}`", args.deployment))
                .with_hint("`copilot history` lists deployments"),
        );
    };
    let dep = &d.deployment;
    let steps = ledger.steps(&dep.id).await?;
    let runs = ledger.gate_runs(None, Some(&dep.id), 50).await?;
    let mut gate_runs = Vec::new();
    for r in runs.iter().rev() {
        let results = ledger.gate_results(&r.id).await?;
        gate_runs.push((r.clone(), results));
    }
    // Log excerpts of the colours this deployment started (local provider).
    let mut logs = Vec::new();
    for s in steps
        .iter()
        .filter(|s| s.name == "deploy-idle" || s.name == "redeploy-previous")
    {
        if let Some(slot) = s.intent.0.get("slot").and_then(Value::as_str) {
            let file = root
                .join(".copilot/local")
                .join(&dep.arena)
                .join(format!("{slot}-{}.log", d.version.replace(['/', ' '], "_")));
            if let Ok(text) = std::fs::read_to_string(&file) {
                let lines: Vec<&str> = text.lines().collect();
                let excerpt = lines[lines.len().saturating_sub(15)..].join("\n");
                logs.push(json!({ "slot": slot, "file": file, "excerpt": excerpt }));
            }
        }
    }
    let doc = json!({
        "deployment": d,
        "steps": steps,
        "gate_runs": gate_runs.iter().map(|(r, res)| json!({ "run": r, "results": res })).collect::<Vec<_>>(),
        "logs": logs,
    });
    let text = match args.format {
        EvidenceFormat::Json => serde_json::to_string_pretty(&doc).expect("json") + "\n",
        EvidenceFormat::Markdown => {
            let mut m = String::new();
            let _ = writeln!(m, "# Release evidence: {} to {}\n", d.version, dep.arena);
            let _ = writeln!(m, "| | |\n| --- | --- |");
            let _ = writeln!(m, "| deployment | `{}` |", dep.id);
            let _ = writeln!(m, "| kind | {} ({}) |", dep.kind, dep.strategy);
            let _ = writeln!(m, "| release | {} (`{}`) |", d.version, d.image);
            if let Some(src) = &dep.source_arena {
                let _ = writeln!(m, "| from | {src} |");
            }
            let _ = writeln!(m, "| state | **{}** |", dep.state);
            let _ = writeln!(m, "| by | {} |", dep.created_by);
            let _ = writeln!(m, "| started | {} |", when(dep.started_at));
            if let Some(f) = dep.finished_at {
                let _ = writeln!(
                    m,
                    "| finished | {} ({}s) |",
                    when(f),
                    (f - dep.started_at).num_seconds()
                );
            }
            if let Some(r) = &dep.reason {
                let _ = writeln!(m, "| reason | {} |", cell(r));
            }
            let _ = writeln!(
                m,
                "\n## Steps\n\n| # | step | state | started | took | outcome |\n| --- | --- | --- | --- | --- | --- |"
            );
            for s in &steps {
                let took = s
                    .finished_at
                    .map(|f| {
                        format!(
                            "{:.1}s",
                            (f - s.started_at).num_milliseconds() as f64 / 1000.0
                        )
                    })
                    .unwrap_or_else(|| "-".into());
                let outcome = s
                    .outcome
                    .as_ref()
                    .map(|o| o.0.to_string())
                    .unwrap_or_default();
                let _ = writeln!(
                    m,
                    "| {} | {} | {} | {} | {took} | {} |",
                    s.seq,
                    s.name,
                    s.state,
                    when(s.started_at),
                    cell(&copilot_engine::gates::report_excerpt(&outcome, 160))
                );
            }
            analysis_section(&mut m, &steps);
            schema_section(&mut m, &steps);
            for (r, results) in &gate_runs {
                let _ = writeln!(
                    m,
                    "\n## Gates: {} ({})\n\n| gate | outcome | took | summary |\n| --- | --- | --- | --- |",
                    r.phase, r.outcome
                );
                for g in results {
                    let _ = writeln!(
                        m,
                        "| {} | {} | {:.1}s | {} |",
                        g.gate,
                        g.outcome,
                        g.duration_ms as f64 / 1000.0,
                        cell(&g.summary)
                    );
                }
            }
            for l in &logs {
                let _ = writeln!(
                    m,
                    "\n## Log excerpt: {}\n\n```\n{}\n```",
                    l["slot"].as_str().unwrap_or(""),
                    l["excerpt"].as_str().unwrap_or("")
                );
            }
            m
        }
    };
    Ok(Report::new(doc, text))
}

/// `error_rate > 5.0% (probe, over 5m): rollback`.
fn describe_metric(m: &copilot_core::model::Metric) -> String {
    let shown = copilot_engine::rollout::analysis::limit_text(m);
    let limit = match &m.limit {
        copilot_core::model::MetricLimit::ConsecutiveFailures { .. } => format!("fails {shown}"),
        _ => format!("> {shown}"),
    };
    let window = m.window.map(|w| format!(", over {w}")).unwrap_or_default();
    let dry = if m.dry_run { ", dry run" } else { "" };
    format!(
        "{} {limit} ({}{window}{dry}): {}",
        m.name, m.source, m.on_fail
    )
}

/// Each bake's metrics: what was measured, against what, how often it failed.
fn analysis_section(m: &mut String, steps: &[copilot_ledger::Step]) {
    let bakes: Vec<(&str, &Value)> = steps
        .iter()
        .filter(|s| s.name.starts_with("bake-"))
        .filter_map(|s| s.outcome.as_ref().map(|o| (s.name.as_str(), &o.0)))
        .collect();
    if bakes.is_empty() {
        return;
    }
    let _ = writeln!(m, "\n## Analysis");
    for (name, bake) in bakes {
        let verdict = bake["verdict"]["verdict"].as_str().unwrap_or("?");
        let _ = writeln!(
            m,
            "\n### {name}: {verdict} ({} probe requests, {} failed; p95 {})\n",
            bake["samples"],
            bake["errors"],
            bake["p95_ms"]
                .as_f64()
                .map_or("-".into(), |v| format!("{v:.1} ms"))
        );
        if let Some(reason) = bake["verdict"]["reason"].as_str() {
            let _ = writeln!(m, "{}\n", cell(reason));
        }
        let _ = writeln!(
            m,
            "| metric | source | limit | last measured | measurements | failures (limit) | errors | on fail |\n| --- | --- | --- | --- | --- | --- | --- | --- |"
        );
        for x in bake["metrics"].as_array().into_iter().flatten() {
            let count = x["measurements"].as_array().map_or(0, Vec::len);
            let _ = writeln!(
                m,
                "| {}{} | {} | {} | {} | {count} | {} ({}) | {} | {} |",
                x["name"].as_str().unwrap_or(""),
                if x["dry_run"] == true {
                    " (dry run)"
                } else {
                    ""
                },
                x["source"].as_str().unwrap_or(""),
                cell(x["limit"].as_str().unwrap_or("")),
                cell(x["measured"].as_str().unwrap_or("")),
                x["failures"],
                x["failure_limit"],
                x["errors"],
                x["on_fail"].as_str().unwrap_or(""),
            );
        }
    }
}

/// What a rollback left applied in the database.
fn schema_section(m: &mut String, steps: &[copilot_ledger::Step]) {
    for s in steps.iter().filter(|s| s.name == "schema-check") {
        let Some(o) = &s.outcome else { continue };
        let _ = writeln!(m, "\n## Schema after the rollback\n");
        let left = o.0["left_applied"].as_array().cloned().unwrap_or_default();
        if left.is_empty() {
            let _ = writeln!(m, "No applied migration the target release lacks.");
        } else {
            let _ = writeln!(
                m,
                "| version | migration | reversible |\n| --- | --- | --- |"
            );
            for x in &left {
                let reversible = match x["reversible"].as_bool() {
                    Some(true) => "yes",
                    Some(false) => "**no**",
                    None => "unknown",
                };
                let _ = writeln!(
                    m,
                    "| {} | {} | {reversible} |",
                    x["version"],
                    cell(x["description"].as_str().unwrap_or(""))
                );
            }
        }
        if let Some(note) = o.0["note"].as_str() {
            let _ = writeln!(m, "\n{}", cell(note));
        }
    }
}

pub async fn plan(ctx: &Context, args: PlanArgs) -> CmdResult {
    let (root, loaded) = ctx.project()?;
    let p = &loaded.project;
    let from = arena(p, &args.from)?;
    let to = arena(p, &args.to)?;
    let ledger = ctx.ledger(Some(&root)).await?;
    let candidate = ledger.live(&from.name).await?;
    let current = ledger.live(to.deploys_into()).await?;
    // What changes for the service: values by name and value, secrets and flags by name.
    let mut env_diff = Vec::new();
    let keys: std::collections::BTreeSet<&String> =
        from.env.values.keys().chain(to.env.values.keys()).collect();
    for k in keys {
        let (a, b) = (from.env.values.get(k), to.env.values.get(k));
        if a != b {
            env_diff.push(json!({ "name": k, "from": a, "to": b }));
        }
    }
    let secrets_only_in_to: Vec<&String> = to
        .env
        .secrets
        .keys()
        .filter(|k| !from.env.secrets.contains_key(*k))
        .collect();
    let flag_diff: Vec<Value> = to
        .flags
        .iter()
        .filter(|(k, v)| from.flags.get(*k) != Some(*v))
        .map(|(k, v)| json!({ "flag": k, "from": from.flags.get(k), "to": v }))
        .collect();
    let steps: Vec<String> = to
        .strategy
        .steps
        .iter()
        .map(|s| match &s.bake {
            Some(b) => format!("{}% bake {b}", s.weight),
            None => format!("{}%", s.weight),
        })
        .collect();
    // The schema: what the candidate's recorded migrations add to the live release's.
    let recorded = async |id: Option<&String>| -> Result<Option<Vec<MigrationRecord>>, CliError> {
        Ok(match id {
            Some(id) => ledger
                .release_by_id(id)
                .await?
                .and_then(|r| r.migrations.map(|m| m.0)),
            None => None,
        })
    };
    let schema = match (
        recorded(candidate.as_ref().map(|c| &c.deployment.release_id)).await?,
        recorded(current.as_ref().map(|c| &c.deployment.release_id)).await?,
    ) {
        (Some(new), old) => {
            let known: std::collections::BTreeSet<i64> =
                old.iter().flatten().map(|m| m.version).collect();
            let added: Vec<&MigrationRecord> =
                new.iter().filter(|m| !known.contains(&m.version)).collect();
            json!({ "adds": added, "compared_with_live": old.is_some() })
        }
        (None, _) => Value::Null,
    };
    let analysis: Vec<String> = to
        .strategy
        .analysis
        .iter()
        .flat_map(|a| &a.metrics)
        .map(describe_metric)
        .collect();
    let doc = json!({
        "from": from.name,
        "to": to.name,
        "schema": schema,
        "analysis": to.strategy.analysis,
        "release": candidate.as_ref().map(|c| json!({ "version": c.version, "image": c.image })),
        "replaces": current.as_ref().map(|c| json!({ "version": c.version, "image": c.image })),
        "env_diff": env_diff,
        "secrets_only_in_target": secrets_only_in_to,
        "flag_diff": flag_diff,
        "gates": to.gates,
        "strategy": to.strategy.kind,
        "steps": steps,
        "provider": to.provider.kind,
    });
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Plan: {} -> {} ({} on {})",
        from.name, to.name, to.strategy.kind, to.provider.kind
    );
    let _ = writeln!(
        t,
        "  release   {} replaces {}",
        candidate
            .as_ref()
            .map_or("nothing live in the source".to_string(), |c| c
                .version
                .clone()),
        current
            .as_ref()
            .map_or("nothing".to_string(), |c| c.version.clone())
    );
    for e in &env_diff {
        let _ = writeln!(
            t,
            "  env       {}: {} -> {}",
            e["name"].as_str().unwrap_or(""),
            e["from"],
            e["to"]
        );
    }
    for f in &flag_diff {
        let _ = writeln!(
            t,
            "  flag      {}: {} -> {}",
            f["flag"].as_str().unwrap_or(""),
            f["from"],
            f["to"]
        );
    }
    let _ = writeln!(
        t,
        "  before    {}",
        if to.gates.before.is_empty() {
            "-".into()
        } else {
            to.gates.before.join(", ")
        }
    );
    let _ = writeln!(
        t,
        "  deploy    the idle colour, then after gates: {}",
        if to.gates.after.is_empty() {
            "-".into()
        } else {
            to.gates.after.join(", ")
        }
    );
    let _ = writeln!(
        t,
        "  traffic   {}",
        if steps.is_empty() {
            "switch".into()
        } else {
            steps.join(" -> ")
        }
    );
    if let Some(a) = &to.strategy.analysis {
        let _ = writeln!(
            t,
            "  analysis  every {}, at least {} samples: {}",
            a.interval,
            a.min_samples,
            if analysis.is_empty() {
                "no metrics".into()
            } else {
                analysis.join("; ")
            }
        );
    }
    if let Some(added) = schema["adds"].as_array() {
        let irreversible: Vec<String> = added
            .iter()
            .filter(|m| m["reversible"] == false)
            .map(|m| {
                format!(
                    "{} {}",
                    m["version"],
                    m["description"].as_str().unwrap_or("")
                )
            })
            .collect();
        let _ = writeln!(
            t,
            "  schema    {} new migration(s){}{}",
            added.len(),
            if schema["compared_with_live"] == true {
                ""
            } else {
                " (the live release recorded none)"
            },
            if irreversible.is_empty() {
                String::new()
            } else {
                format!("; without a down migration: {}", irreversible.join(", "))
            }
        );
    }
    Ok(Report::new(doc, t))
}
