//! `copilot preview up | list | down | gc`: one instance of a preview arena
//! per pull request.
//!
//! A preview is an arena instance (`preview-pr-7`) made from the preview
//! arena's definition: its own resources on the arena's provider, its own
//! row in the ledger (written before the platform is touched, so that
//! whatever a failed `up` left is still known), its deployments, gates and
//! evidence recorded like any arena's. Removing one is claimed in the
//! ledger first, so that two removers (two `gc` on a schedule) remove each
//! preview once, and only what a row says copilot created is removed.

use serde_json::json;

use super::progress::CliProgress;
use super::promote::exit_of;
use super::{CliError, CmdResult, Context, Exit, Report, Table, arena, when};
use copilot_core::clock;
use copilot_core::config::duration::Duration;
use copilot_core::model::{Arena, Gate, Phase, Project, Tier};
use copilot_engine::gates::{self, GateContext, RunReport, RunVerdict};
use copilot_engine::platform;
use copilot_ledger::{Ledger, NewPreview, Preview};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create or update the preview of a pull request: deploy, seed, gates, URL
    Up(UpArgs),
    /// Previews: pull request, release, URL, age, expiry
    List(ListArgs),
    /// Remove the preview of a pull request
    Down(DownArgs),
    /// Remove previews past their TTL, and those whose pull request is closed or merged
    Gc(GcArgs),
}

#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// The pull request
    #[arg(long)]
    pub pr: u64,
    /// The release to deploy (id, version or image) [default: the newest]
    #[arg(long, value_name = "REF")]
    pub release: Option<String>,
    /// How long it lives after this deploy [default: the arena's `preview.ttl`]
    #[arg(long)]
    pub ttl: Option<Duration>,
    /// The preview arena [default: the only arena with `tier: preview`]
    #[arg(long)]
    pub arena: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Also the removed ones
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, clap::Args)]
pub struct DownArgs {
    #[arg(long)]
    pub pr: u64,
    #[arg(long)]
    pub arena: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct GcArgs {
    /// Say what would be removed, remove nothing
    #[arg(long)]
    pub dry_run: bool,
}

pub async fn run(ctx: &Context, cmd: Command) -> CmdResult {
    match cmd {
        Command::Up(args) => up(ctx, args).await,
        Command::List(args) => list(ctx, args).await,
        Command::Down(args) => down(ctx, args).await,
        Command::Gc(args) => gc(ctx, args).await,
    }
}

/// The preview arena: the one named, or the only one with `tier: preview`.
fn preview_arena<'a>(project: &'a Project, name: Option<&str>) -> Result<&'a Arena, CliError> {
    let a = match name {
        Some(name) => arena(project, name)?,
        None => {
            let previews: Vec<&Arena> = project
                .arenas
                .values()
                .filter(|a| a.tier == Tier::Preview)
                .collect();
            match previews.as_slice() {
                [one] => *one,
                [] => {
                    return Err(CliError::invalid("no arena has `tier: preview`")
                        .with_hint("add arenas/preview.yaml (`copilot init` writes one)"));
                }
                many => {
                    let names: Vec<&str> = many.iter().map(|a| a.name.as_str()).collect();
                    return Err(CliError::invalid(format!(
                        "several preview arenas ({}): name one with --arena",
                        names.join(", ")
                    )));
                }
            }
        }
    };
    if a.preview.is_none() {
        return Err(CliError::invalid(format!(
            "`{}` is not a preview arena (`tier: preview` with a `preview:` section)",
            a.name
        )));
    }
    Ok(a)
}

fn instance_name(a: &Arena, pr: u64) -> String {
    format!("{}-pr-{pr}", a.name)
}

async fn up(ctx: &Context, args: UpArgs) -> CmdResult {
    let (root, loaded) = ctx.project()?;
    let base = preview_arena(&loaded.project, args.arena.as_deref())?;
    let settings = base.preview.as_ref().expect("checked");
    let ledger = ctx.ledger(Some(&root)).await?;
    let release = match &args.release {
        Some(r) => ledger.find_release(r).await?,
        None => ledger
            .list_releases(1)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                CliError::invalid("no release is registered")
                    .with_hint("`copilot release create VERSION --image IMAGE`, or pass --release")
            })?,
    };
    let name = instance_name(base, args.pr);
    let kept = ledger.preview(&name).await?;
    if let Some(p) = &kept
        && p.state == "removing"
    {
        return Err(CliError::new(
            Exit::Blocked,
            format!(
                "the preview of pull request #{} is being removed (by {})",
                args.pr,
                p.claimed_by.as_deref().unwrap_or("someone")
            ),
        )
        .with_hint("run `copilot preview up` again once it is gone"));
    }
    let extra = platform::preview_settings(
        base,
        kept.as_ref()
            .filter(|p| p.state == "up")
            .map(|p| &p.settings.0),
    );
    let ttl = args.ttl.map_or(settings.ttl.as_std(), |t| t.as_std());
    let now = clock::now();
    let instance = platform::preview_instance(&root, base, args.pr, &extra)?;
    ledger
        .upsert_preview(
            &NewPreview {
                name: name.clone(),
                arena: base.name.clone(),
                pr: i64::try_from(args.pr).unwrap_or(i64::MAX),
                platform_name: settings.name(args.pr),
                settings: extra,
                created_by: clock::actor(),
                expires_at: now + chrono::Duration::from_std(ttl).unwrap_or_default(),
            },
            now,
        )
        .await?;
    let project = &loaded.project;
    let http = reqwest::Client::builder()
        .user_agent(concat!("copilot/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| CliError::new(Exit::Dependency, format!("HTTP client: {e}")))?;
    let gate_context = |url: Option<String>| GateContext {
        acting: true,
        project,
        root: &root,
        arena: &instance,
        source: None,
        release: Some(&release),
        ledger: &ledger,
        now: clock::now(),
        target_url: url,
        source_url: None,
        bypass_reason: None,
        actor: clock::actor(),
        http: http.clone(),
    };
    let mut report = RunReport {
        arena: instance.name.clone(),
        release: Some(release.version.clone()),
        phases: Vec::new(),
    };
    let gates_of = |phase: Phase| -> Vec<&Gate> {
        instance
            .gates
            .for_phase(phase)
            .iter()
            .map(|g| &project.gates[g])
            .collect()
    };

    // The before gates hold the release back; then the deploy; then the
    // after gates judge the preview as it serves.
    let before = gates_of(Phase::Before);
    if !before.is_empty() {
        report
            .phases
            .push(gates::run(&gate_context(None), Phase::Before, &before, None).await?);
    }
    let mut outcome = Outcome {
        deployment: None,
        url: String::new(),
        summary: String::new(),
        exit: verdict_exit(gates::exit_for(&report, false)),
    };
    if outcome.exit == Exit::Success {
        let progress = CliProgress::new(ctx);
        let exec = ctx.executor(&ledger, project, &root, &instance, &progress)?;
        super::signals::stop_rollout_on_signals(&exec.stop, instance.rollback.on_interrupt);
        let done = exec
            .deploy(
                &release,
                Some(format!("preview of pull request #{}", args.pr)),
                true,
            )
            .await?;
        outcome.exit = exit_of(&done.end);
        outcome.url = done.detail["url"].as_str().unwrap_or_default().to_string();
        outcome.summary = done.summary.clone();
        outcome.deployment = Some(done.deployment.clone());
        if outcome.exit == Exit::Success {
            ledger
                .preview_deployed(&name, &release.id, &outcome.url, clock::now())
                .await?;
            let after = gates_of(Phase::After);
            if !after.is_empty() {
                let ctx = gate_context(Some(outcome.url.clone()));
                report
                    .phases
                    .push(gates::run(&ctx, Phase::After, &after, Some(&done.deployment)).await?);
                outcome.exit = verdict_exit(gates::exit_for(&report, false));
                if outcome.exit != Exit::Success {
                    outcome.summary = format!(
                        "{} serves, but its after gates did not pass",
                        release.version
                    );
                }
            }
        }
    } else {
        outcome.summary = format!("{} was held back by its before gates", release.version);
    }

    #[cfg(feature = "github")]
    if let Some(github) = &ctx.github {
        github.attach(&ledger);
        github
            .comment(
                args.pr,
                &comment(&name, &release.version, &outcome, &report),
            )
            .await;
    }
    let url = &outcome.url;
    let mut text = if outcome.exit == Exit::Success {
        format!(
            "Preview of pull request #{} ({name}): {} serves {url}\n",
            args.pr, release.version
        )
    } else {
        format!(
            "Preview of pull request #{} ({name}): {}\n",
            args.pr, outcome.summary
        )
    };
    if !report.phases.is_empty() {
        text.push_str(&gates::report::table(&report));
    }
    let expires_at = now + chrono::Duration::from_std(ttl).unwrap_or_default();
    Ok(Report {
        json: json!({
            "preview": name, "pr": args.pr, "release": release.version, "url": outcome.url,
            "deployment": outcome.deployment, "summary": outcome.summary,
            "exit_code": outcome.exit.code(), "gates": report.phases, "expires_at": expires_at,
        }),
        text,
        exit: outcome.exit,
    })
}

/// How a preview's `up` came out.
struct Outcome {
    deployment: Option<String>,
    url: String,
    summary: String,
    exit: Exit,
}

fn verdict_exit(v: RunVerdict) -> Exit {
    match v {
        RunVerdict::Passed => Exit::Success,
        RunVerdict::Failed => Exit::GateFailed,
        RunVerdict::DependencyFailed => Exit::Dependency,
        RunVerdict::Inconclusive => Exit::Inconclusive,
    }
}

/// The pull request comment: the preview's URL, release and gate table.
#[cfg(feature = "github")]
fn comment(name: &str, version: &str, outcome: &Outcome, report: &RunReport) -> String {
    let mut body = if outcome.exit == Exit::Success {
        format!(
            "### Preview `{name}`\n\n**{}** serves release `{version}`.\n\n",
            outcome.url
        )
    } else {
        format!(
            "### Preview `{name}`\n\nRelease `{version}`: {}\n\n",
            outcome.summary
        )
    };
    if !report.phases.is_empty() {
        body.push_str(&gates::report::markdown(report));
    }
    body.push_str(&format!(
        "\n<sub>Updated by copilot at {}.</sub>\n",
        when(clock::now())
    ));
    body
}

async fn list(ctx: &Context, args: ListArgs) -> CmdResult {
    let root = ctx.root()?;
    let ledger = ctx.ledger(Some(&root)).await?;
    let previews = ledger.previews(args.all).await?;
    let now = clock::now();
    let mut releases = std::collections::BTreeMap::new();
    for p in &previews {
        if let Some(id) = &p.release_id
            && !releases.contains_key(id)
            && let Some(r) = ledger.release_by_id(id).await?
        {
            releases.insert(id.clone(), r.version);
        }
    }
    let version = |p: &Preview| {
        p.release_id
            .as_ref()
            .and_then(|id| releases.get(id).cloned())
            .unwrap_or_else(|| "-".into())
    };
    let mut t = Table::new(["PR", "PREVIEW", "RELEASE", "URL", "AGE", "EXPIRES", "STATE"]);
    let mut docs = Vec::new();
    for p in &previews {
        let age = human(now - p.created_at);
        let expires = if p.expires_at <= now {
            "expired".to_string()
        } else {
            format!("in {}", human(p.expires_at - now))
        };
        t.row([
            format!("#{}", p.pr),
            p.name.clone(),
            version(p),
            p.url.clone().unwrap_or_else(|| "-".into()),
            age,
            expires,
            p.state.clone(),
        ]);
        let mut doc = serde_json::to_value(p).expect("json");
        doc["release"] = json!(version(p));
        doc["expired"] = json!(p.expires_at <= now);
        docs.push(doc);
    }
    let text = if previews.is_empty() {
        "No previews.\n".to_string()
    } else {
        t.render()
    };
    Ok(Report::new(json!({ "previews": docs }), text))
}

/// `3d 4h`, `2h 5m`, `40s`: how long, for people.
fn human(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    let (days, hours, mins) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, m) => format!("{m}m"),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

async fn down(ctx: &Context, args: DownArgs) -> CmdResult {
    let (root, loaded) = ctx.project()?;
    let base = preview_arena(&loaded.project, args.arena.as_deref())?;
    let ledger = ctx.ledger(Some(&root)).await?;
    let name = instance_name(base, args.pr);
    let Some(p) = ledger
        .preview(&name)
        .await?
        .filter(|p| p.state != "removed")
    else {
        return Ok(Report::new(
            json!({ "preview": name, "removed": false }),
            format!("Pull request #{} has no preview\n", args.pr),
        ));
    };
    let removed = remove(
        ctx,
        &ledger,
        &loaded.project,
        &root,
        base,
        &p,
        "preview down",
    )
    .await?;
    Ok(Report::new(
        json!({ "preview": name, "removed": removed }),
        if removed {
            format!(
                "Removed the preview of pull request #{} ({name})\n",
                args.pr
            )
        } else {
            format!(
                "The preview of pull request #{} is being removed by someone else\n",
                args.pr
            )
        },
    ))
}

/// Remove preview `p`: claimed first (false: another remover has it),
/// then stopped on its platform, then recorded removed. A removal that
/// fails gives the claim back, so a later `gc` tries again.
async fn remove(
    ctx: &Context,
    ledger: &Ledger,
    project: &Project,
    root: &std::path::Path,
    base: &Arena,
    p: &Preview,
    reason: &str,
) -> Result<bool, CliError> {
    let claimant = format!("{}:{}", clock::actor(), std::process::id());
    let now = clock::now();
    // A remover that died an hour ago no longer holds its claim.
    let stale = now - chrono::Duration::hours(1);
    if !ledger
        .claim_preview(&p.name, &claimant, reason, stale, now)
        .await?
    {
        return Ok(false);
    }
    let pr = u64::try_from(p.pr).unwrap_or_default();
    let result = async {
        let instance = platform::preview_instance(root, base, pr, &p.settings.0)?;
        let progress = CliProgress::new(ctx);
        let exec = ctx.executor(ledger, project, root, &instance, &progress)?;
        exec.down(true).await?;
        drop(exec);
        platform::preview_removed(root, &instance).map_err(|e| {
            CliError::new(
                Exit::Dependency,
                format!("remove what {} left: {e}", instance.name),
            )
        })?;
        Ok::<(), CliError>(())
    }
    .await;
    match result {
        Ok(()) => {
            ledger
                .preview_removed(&p.name, &claimant, clock::now())
                .await?;
            Ok(true)
        }
        Err(e) => {
            let _ = ledger
                .unclaim_preview(&p.name, &claimant, clock::now())
                .await;
            Err(e)
        }
    }
}

async fn gc(ctx: &Context, args: GcArgs) -> CmdResult {
    let (root, loaded) = ctx.project()?;
    let ledger = ctx.ledger(Some(&root)).await?;
    let now = clock::now();
    let mut removed = Vec::new();
    let mut kept = Vec::new();
    let mut failed = Vec::new();
    for p in ledger.previews(false).await? {
        if p.state != "up" {
            continue;
        }
        let Some(base) = loaded.project.arena(&p.arena) else {
            kept.push(json!({ "preview": p.name, "why": format!("its arena `{}` is no longer defined", p.arena) }));
            continue;
        };
        let why = if p.expires_at <= now {
            Some(format!("expired at {}", when(p.expires_at)))
        } else {
            pull_request_gone(ctx, &p).await
        };
        let Some(why) = why else {
            kept.push(json!({ "preview": p.name, "why": "live" }));
            continue;
        };
        if args.dry_run {
            removed.push(json!({ "preview": p.name, "pr": p.pr, "why": why, "dry_run": true }));
            continue;
        }
        match remove(ctx, &ledger, &loaded.project, &root, base, &p, &why).await {
            Ok(true) => removed.push(json!({ "preview": p.name, "pr": p.pr, "why": why })),
            Ok(false) => kept.push(json!({ "preview": p.name, "why": "removed by another gc" })),
            Err(e) => failed.push(json!({ "preview": p.name, "pr": p.pr, "error": e.message })),
        }
    }
    let mut text = String::new();
    for r in &removed {
        text.push_str(&format!(
            "{} {} (#{}): {}\n",
            if args.dry_run {
                "Would remove"
            } else {
                "Removed"
            },
            r["preview"].as_str().unwrap_or_default(),
            r["pr"],
            r["why"].as_str().unwrap_or_default()
        ));
    }
    for f in &failed {
        text.push_str(&format!(
            "Could not remove {}: {}\n",
            f["preview"].as_str().unwrap_or_default(),
            f["error"].as_str().unwrap_or_default()
        ));
    }
    if removed.is_empty() && failed.is_empty() {
        text.push_str("Nothing to remove.\n");
    }
    let mut report = Report::new(
        json!({ "removed": removed, "kept": kept, "failed": failed }),
        text,
    );
    if !failed.is_empty() {
        report.exit = Exit::Dependency;
    }
    Ok(report)
}

/// Why the pull request of `p` no longer needs it (closed or merged), as
/// GitHub says; `None` when it is open, or GitHub cannot be asked.
async fn pull_request_gone(ctx: &Context, p: &Preview) -> Option<String> {
    #[cfg(feature = "github")]
    if let Some(github) = &ctx.github {
        use copilot_github::PullState;
        let pr = u64::try_from(p.pr).ok()?;
        return match github.pull_state(pr).await {
            Ok(PullState::Open) => None,
            Ok(PullState::Merged) => Some(format!("pull request #{pr} was merged")),
            Ok(PullState::Closed) => Some(format!("pull request #{pr} was closed")),
            Err(e) => {
                tracing::warn!(
                    "cannot ask GitHub about pull request #{pr}: {e}; kept until it expires"
                );
                None
            }
        };
    }
    let _ = (ctx, p);
    None
}
