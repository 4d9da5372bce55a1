//! `copilot evidence DEPLOYMENT` (the release ticket) and `copilot plan FROM TO`.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::{CliError, CmdResult, Context, Report, arena, when};
use copilot_engine::views;
use copilot_engine::views::evidence::GateRunView;

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
    let Some(view) = views::evidence::evidence(&root, &ledger, &args.deployment).await? else {
        return Err(
            CliError::invalid(format!("no deployment matches `{}`", args.deployment))
                .with_hint("`copilot history` lists deployments"),
        );
    };
    let doc = serde_json::to_value(&view).expect("json");
    let (d, steps) = (&view.deployment, &view.steps);
    let dep = &d.deployment;
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
            for s in steps {
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
            analysis_section(&mut m, steps);
            schema_section(&mut m, steps);
            for GateRunView { run: r, results } in &view.gate_runs {
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
            for l in &view.logs {
                let _ = writeln!(m, "\n## Log excerpt: {}\n\n```\n{}\n```", l.slot, l.excerpt);
            }
            m
        }
    };
    Ok(Report::new(doc, text))
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
    let view = views::plan::plan(&ledger, from, to).await?;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Plan: {} -> {} ({} on {})",
        view.from, view.to, view.strategy, view.provider
    );
    let _ = writeln!(
        t,
        "  release   {} replaces {}",
        view.release
            .as_ref()
            .map_or("nothing live in the source", |r| r.version.as_str()),
        view.replaces
            .as_ref()
            .map_or("nothing", |r| r.version.as_str())
    );
    for e in &view.env_diff {
        let _ = writeln!(
            t,
            "  env       {}: {} -> {}",
            e.name,
            json!(e.from),
            json!(e.to)
        );
    }
    for f in &view.flag_diff {
        let _ = writeln!(t, "  flag      {}: {} -> {}", f.flag, json!(f.from), f.to);
    }
    let listed = |names: &[String]| {
        if names.is_empty() {
            "-".to_string()
        } else {
            names.join(", ")
        }
    };
    let _ = writeln!(t, "  before    {}", listed(&view.gates.before));
    let _ = writeln!(
        t,
        "  deploy    the idle colour, then after gates: {}",
        listed(&view.gates.after)
    );
    let _ = writeln!(
        t,
        "  traffic   {}",
        if view.steps.is_empty() {
            "switch".into()
        } else {
            view.steps.join(" -> ")
        }
    );
    if let Some(note) = &view.swap {
        let _ = writeln!(t, "  note      {note}");
    }
    if let Some(a) = &view.analysis {
        let metrics = view.analysis_text();
        let _ = writeln!(
            t,
            "  analysis  every {}, at least {} samples: {}",
            a.interval,
            a.min_samples,
            if metrics.is_empty() {
                "no metrics".into()
            } else {
                metrics.join("; ")
            }
        );
    }
    if let Some(schema) = &view.schema {
        let irreversible: Vec<String> = schema
            .adds
            .iter()
            .filter(|m| !m.reversible)
            .map(|m| format!("{} {}", m.version, m.description))
            .collect();
        let _ = writeln!(
            t,
            "  schema    {} new migration(s){}{}",
            schema.adds.len(),
            if schema.compared_with_live {
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
    Ok(Report::new(serde_json::to_value(&view).expect("json"), t))
}
