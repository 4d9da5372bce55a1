//! The `copilot` command line: argument parsing, one module per command,
//! output and exit codes.

mod approve;
mod arenas;
mod completions;
mod deploy;
mod drill;
mod evidence;
mod gate;
#[cfg(feature = "github")]
mod github;
mod history;
mod incident;
mod init;
mod lock;
mod preview;
mod progress;
mod promote;
mod release;
mod render;
mod schema;
mod signals;
mod status;
mod validate;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

use copilot_core::config::{self, ConfigError, Diagnostic, Loaded};
use copilot_engine::platform;
use copilot_engine::rollout::events::JsonLines;
use copilot_engine::rollout::executor::Executor;
use copilot_ledger::{self as ledger, Ledger, LedgerError};

pub use copilot_core::table::Table;

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  a gate failed, or the rollout was aborted and rolled back
  2  invalid input: arguments, arena/gate/template definitions
  3  provider or dependency failure (API error, database unreachable)
  4  blocked: lock held, freeze window, approval missing
  5  inconclusive or timed out: not enough data to decide, or a wait ran out";

#[derive(Debug, Parser)]
#[command(
    name = "copilot",
    version,
    about = "Release orchestration for arena promotion: gates, rollouts and a ledger of every release",
    after_long_help = EXIT_CODES,
    after_help = EXIT_CODES,
)]
pub struct Cli {
    /// Project root holding arenas/ and gates/ [default: the nearest parent that has arenas/]
    #[arg(long, global = true, value_name = "DIR", env = "COPILOT_ROOT")]
    pub root: Option<PathBuf>,
    /// Ledger database URL (sqlite://PATH or postgres://...) [default: sqlite://<root>/.copilot/ledger.db]
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "COPILOT_LEDGER_URL",
        hide_env_values = true
    )]
    pub ledger: Option<String>,
    /// How long a ledger that does not answer (a PostgreSQL failover) is
    /// waited for before a command gives up; traffic stays where it is
    #[arg(
        long,
        global = true,
        value_name = "DURATION",
        env = "COPILOT_LEDGER_OUTAGE",
        default_value = "60s"
    )]
    pub ledger_outage: copilot_core::config::duration::Duration,
    /// Output format: human tables, or one JSON document on stdout
    #[arg(long, global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// Print only results and errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// More log output on stderr (-v, -vv)
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Never colour output (also: NO_COLOR)
    #[arg(long, global = true)]
    pub no_color: bool,
    /// Append a rollout's lifecycle events to FILE as JSON lines (deployment
    /// and step started and finished, gates, traffic, analysis samples, end)
    #[arg(long, global = true, value_name = "FILE", env = "COPILOT_EVENTS")]
    pub events: Option<PathBuf>,
    /// Take over fields someone else changed since copilot wrote them
    /// (Kubernetes server-side apply conflicts) instead of refusing
    #[arg(long, global = true)]
    pub force_conflicts: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Scaffold arenas/, gates/, templates/ with the six default arenas
    Init(init::Args),
    /// Check every arena, gate and template; all problems at once, with file:line:col
    Validate(validate::Args),
    /// Print the JSON Schema of a definition format
    Schema(schema::Args),
    /// List or show resolved arena definitions (secrets are references only)
    #[command(subcommand)]
    Arenas(arenas::Command),
    /// Render the provider configuration and Dockerfile of an arena
    Render(render::Args),
    /// Register and list releases
    #[command(subcommand)]
    Release(release::Command),
    /// List and run promotion gates
    #[command(subcommand)]
    Gate(gate::Command),
    /// Put a release into an arena (local provider): idle colour, health, switch
    Deploy(deploy::DeployArgs),
    /// Stop everything an arena runs, or only its blue-green standby (--standby)
    Down(deploy::DownArgs),
    /// Move the release live in FROM into TO: gates, idle colour, weighted steps with analysis
    Promote(promote::PromoteArgs),
    /// Send traffic back to the standby colour now, and pin the arena
    Rollback(promote::RollbackArgs),
    /// The hotfix lane into ARENA: reduced gates, windows bypassed with a recorded reason
    Hotfix(promote::HotfixArgs),
    /// Continue an interrupted or paused deployment from where it stood
    Resume(promote::ArenaArgs),
    /// Stop the deployment in progress and put traffic back on the previous release
    Abort(promote::AbortArgs),
    /// What `promote FROM TO` would do: release, env and flag diff, gates, steps
    Plan(evidence::PlanArgs),
    /// The release ticket of a deployment: steps, gates with figures, log excerpts
    Evidence(evidence::EvidenceArgs),
    /// The local provider's traffic router (started by `deploy`)
    #[command(hide = true)]
    LocalRouter(deploy::RouterArgs),
    /// Live release, deployment in progress, traffic split and lock per arena
    Status(status::Args),
    /// Past deployments, newest first
    History(history::Args),
    /// Record an approval of a release for an arena
    Approve(approve::Args),
    /// Lock an arena: nothing is deployed into it until `unlock`
    Lock(lock::LockArgs),
    /// Remove an arena's lock
    Unlock(lock::UnlockArgs),
    /// Print a shell completion script
    Completions(completions::Args),
    /// Previews per pull request: up, list, down, gc
    #[command(subcommand)]
    Preview(preview::Command),
    /// Incidents by severity: open (SEV1 rolls back), update, resolve, list, report
    #[command(subcommand)]
    Incident(incident::Command),
    /// Drills: a rollback against seed 003's time targets, chaos (an instance stopped)
    #[command(subcommand)]
    Drill(drill::Command),
    /// GitHub deployments, statuses and comments copilot still owes
    #[cfg(feature = "github")]
    #[command(subcommand)]
    Github(github::Command),
}

/// Exit codes of DESIGN.md section 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    GateFailed = 1,
    Invalid = 2,
    Dependency = 3,
    Blocked = 4,
    Inconclusive = 5,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// A failed command: what to tell people, and how to exit.
#[derive(Debug)]
pub struct CliError {
    pub exit: Exit,
    pub message: String,
    pub hint: Option<String>,
    pub diagnostics: Vec<Diagnostic>,
}

impl CliError {
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        CliError {
            exit,
            message: message.into(),
            hint: None,
            diagnostics: Vec::new(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        CliError::new(Exit::Invalid, message)
    }

    /// A file the command must read or write could not be: the filesystem
    /// is a dependency like any other (exit 3), never invalid input.
    pub fn io(action: &str, path: &Path, e: &std::io::Error) -> Self {
        let err = CliError::new(
            Exit::Dependency,
            format!("cannot {action} {}: {e}", path.display()),
        );
        match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                err.with_hint("check the permissions of the folder, or pass another path")
            }
            std::io::ErrorKind::ReadOnlyFilesystem => {
                err.with_hint("the filesystem is read-only: pass a writable path")
            }
            _ => err,
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl From<LedgerError> for CliError {
    fn from(e: LedgerError) -> Self {
        let exit = match &e {
            LedgerError::LockHeld(_)
            | LedgerError::LockInUse { .. }
            | LedgerError::Fenced { .. } => Exit::Blocked,
            LedgerError::ReleaseExists(_)
            | LedgerError::ReleaseNotFound(_)
            | LedgerError::IncidentNotFound(_)
            | LedgerError::AmbiguousRelease { .. }
            | LedgerError::NotLocked(_)
            | LedgerError::UnsupportedUrl(_) => Exit::Invalid,
            LedgerError::Connect { .. }
            | LedgerError::Migrate(_)
            | LedgerError::Query(_)
            | LedgerError::Io { .. }
            | LedgerError::Unavailable { .. } => Exit::Dependency,
        };
        let hint = match &e {
            LedgerError::LockHeld(_) => Some(
                "wait for it to finish, or ask the holder; `copilot status` shows all locks"
                    .to_string(),
            ),
            LedgerError::ReleaseNotFound(_) => {
                Some("`copilot release list` shows known releases".to_string())
            }
            LedgerError::IncidentNotFound(_) => {
                Some("`copilot incident list --all` shows known incidents".to_string())
            }
            LedgerError::UnsupportedUrl(_) => {
                Some("use sqlite://PATH or postgres://USER@HOST/DB".to_string())
            }
            LedgerError::Fenced { .. } => Some(
                "`copilot status` shows who holds the arena and what the deployment recorded"
                    .to_string(),
            ),
            LedgerError::Unavailable { .. } => Some(
                "nothing more was done; once the ledger answers, `copilot status` shows where the deployment stands and `copilot resume` goes on (--ledger-outage waits longer)"
                    .to_string(),
            ),
            e if e.is_unwritable() => Some(
                "the ledger cannot be written (read-only or full); nothing more was done: make it writable, then `copilot status` and `copilot resume`"
                    .to_string(),
            ),
            _ => None,
        };
        CliError {
            exit,
            message: e.to_string(),
            hint,
            diagnostics: Vec::new(),
        }
    }
}

impl From<&clap::Error> for CliError {
    /// An argument error: clap's first paragraph is the message, the rest
    /// (usage, suggestions, the pointer to `--help`) the hint.
    fn from(e: &clap::Error) -> Self {
        use clap::error::ErrorKind;
        let text = e.render().to_string();
        let usage = || {
            text.lines()
                .skip_while(|l| !l.starts_with("Usage:"))
                .take_while(|l| !l.trim().is_empty())
                .collect::<Vec<_>>()
                .join("\n")
        };
        let (message, hint) = match e.kind() {
            ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand => {
                let hint = format!("{}\nSee `--help` for the subcommands.", usage());
                ("a subcommand is required".to_string(), hint)
            }
            _ => {
                let text = text.trim();
                let (first, rest) = text.split_once("\n\n").unwrap_or((text, ""));
                let first = first.strip_prefix("error: ").unwrap_or(first);
                let message = first
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect::<Vec<_>>()
                    .join(" ");
                (message, rest.trim().to_string())
            }
        };
        CliError {
            exit: Exit::Invalid,
            message: if message.is_empty() {
                "invalid arguments".to_string()
            } else {
                message
            },
            hint: (!hint.is_empty()).then_some(hint),
            diagnostics: Vec::new(),
        }
    }
}

/// Whether a command line asks for `--output json`, read without clap, for
/// the arguments clap rejected. The last `--output` wins, as in clap.
pub fn json_requested<I, S>(args: I) -> bool
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut json = false;
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let Some(arg) = arg.as_ref().to_str() else {
            continue;
        };
        if arg == "--" {
            break;
        }
        if let Some(value) = arg.strip_prefix("--output=") {
            json = value == "json";
        } else if arg == "--output" {
            json = args.next().is_some_and(|v| v.as_ref() == "json");
        }
    }
    json
}

impl From<ConfigError> for CliError {
    fn from(e: ConfigError) -> Self {
        match e {
            ConfigError::Invalid { diagnostics } => CliError {
                exit: Exit::Invalid,
                message: format!(
                    "the definitions have {} error(s)",
                    diagnostics
                        .iter()
                        .filter(|d| d.severity == config::Severity::Error)
                        .count()
                ),
                hint: None,
                diagnostics,
            },
            ConfigError::NoArenas { .. } => CliError::invalid(e.to_string())
                .with_hint("run `copilot init` to create the default arenas"),
            ConfigError::Io { path, source } => CliError::io("read", &path, &source),
        }
    }
}

impl From<copilot_core::render::RenderError> for CliError {
    fn from(e: copilot_core::render::RenderError) -> Self {
        CliError::invalid(e.to_string())
    }
}

/// What a command produced: one JSON document, and its human rendering.
pub struct Report {
    pub json: Value,
    pub text: String,
    pub exit: Exit,
}

impl Report {
    pub fn new(json: Value, text: impl Into<String>) -> Self {
        Report {
            json,
            text: text.into(),
            exit: Exit::Success,
        }
    }
}

pub type CmdResult = Result<Report, CliError>;

/// Global settings every command sees.
pub struct Context {
    pub root_arg: Option<PathBuf>,
    pub ledger_arg: Option<String>,
    /// `--ledger-outage`.
    pub ledger_outage: std::time::Duration,
    pub output: OutputFormat,
    pub quiet: bool,
    /// `--events FILE`.
    pub events: Option<PathBuf>,
    /// `--force-conflicts`.
    pub force_conflicts: bool,
    /// GitHub, when `GITHUB_TOKEN` is set: told of every deployment.
    #[cfg(feature = "github")]
    pub github: Option<std::sync::Arc<copilot_github::GitHub>>,
}

impl Context {
    /// The project root, absolute: `--root`, or the nearest directory upwards
    /// with `arenas/`. Processes started for the project (the local
    /// provider's router and services) run elsewhere than the caller, so
    /// every path handed to them derives from this one.
    pub fn root(&self) -> Result<PathBuf, CliError> {
        if let Some(root) = &self.root_arg {
            if !root.is_dir() {
                return Err(CliError::invalid(format!(
                    "--root {} is not a directory",
                    root.display()
                )));
            }
            return std::path::absolute(root).map_err(|e| {
                CliError::invalid(format!("cannot resolve --root {}: {e}", root.display()))
            });
        }
        let cwd = std::env::current_dir()
            .map_err(|e| CliError::invalid(format!("cannot read the current directory: {e}")))?;
        cwd.ancestors()
            .find(|d| d.join("arenas").is_dir())
            .map(Path::to_path_buf)
            .ok_or_else(|| {
                CliError::invalid(format!(
                    "no arenas/ directory in {} or any parent",
                    cwd.display()
                ))
                .with_hint("run `copilot init` here, or pass --root DIR")
            })
    }

    /// Load and check the project's definitions.
    pub fn project(&self) -> Result<(PathBuf, Loaded), CliError> {
        let root = self.root()?;
        let loaded = config::load_project(&root, &platform::RULES, false)?;
        Ok((root, loaded))
    }

    pub fn ledger_url(&self, root: Option<&Path>) -> Result<String, CliError> {
        match (&self.ledger_arg, root) {
            (Some(url), _) => Ok(url.clone()),
            (None, Some(root)) => Ok(ledger::default_url(root)),
            (None, None) => Ok(ledger::default_url(&self.root()?)),
        }
    }

    pub async fn ledger(&self, root: Option<&Path>) -> Result<Ledger, CliError> {
        let url = self.ledger_url(root)?;
        Ok(Ledger::connect(&url)
            .await?
            .with_ride_out(self.ledger_outage)
            .with_pinned_clock(copilot_core::clock::pinned()))
    }

    /// The executor of arena `a`, its events going where `--events` says.
    /// An events file that cannot be opened is said and left out: following
    /// a deployment never stops it.
    pub fn executor<'a>(
        &self,
        ledger: &'a Ledger,
        project: &'a copilot_core::model::Project,
        root: &'a Path,
        a: &'a copilot_core::model::Arena,
        progress: &'a dyn copilot_core::progress::Progress,
    ) -> Result<Executor<'a>, CliError> {
        let mut exec = Executor::new(ledger, project, root, a, progress)?;
        if self.force_conflicts {
            exec.provider.force_conflicts();
        }
        #[cfg(feature = "github")]
        match &self.github {
            Some(github) => {
                use copilot_core::provider::Provider as _;
                github.attach(ledger);
                let url = exec.provider.url();
                exec = exec.with_sink(github.follow(a, url));
            }
            None => github::say_not_told(),
        }
        if let Some(path) = &self.events {
            match JsonLines::open(path) {
                Ok(sink) => exec = exec.with_sink(Box::new(sink)),
                Err(e) => tracing::warn!("cannot open the events file {}: {e}", path.display()),
            }
        }
        Ok(exec)
    }
}

/// Look up an arena by name with a "did you mean".
pub fn arena<'a>(
    project: &'a copilot_core::model::Project,
    name: &str,
) -> Result<&'a copilot_core::model::Arena, CliError> {
    project.arena(name).ok_or_else(|| {
        let names: Vec<&str> = project.arenas.keys().map(String::as_str).collect();
        CliError::invalid(format!("no arena named `{name}`"))
            .with_hint(config::diag::suggest(name, &names))
    })
}

/// Run a parsed command line.
pub async fn run(cli: Cli) -> CmdResult {
    let ctx = Context {
        root_arg: cli.root,
        ledger_arg: cli.ledger,
        ledger_outage: cli.ledger_outage.as_std(),
        output: cli.output,
        quiet: cli.quiet,
        events: cli.events,
        force_conflicts: cli.force_conflicts,
        #[cfg(feature = "github")]
        github: github::from_env(),
    };
    // GitHub hears of what the command does as it happens, on the
    // command's own task, and what is left is sent as it ends.
    #[cfg(feature = "github")]
    if let Some(github) = ctx.github.clone() {
        let command = async {
            let result = Box::pin(dispatch(&ctx, cli.command)).await;
            github.close();
            result
        };
        return tokio::join!(command, github.relay()).0;
    }
    Box::pin(dispatch(&ctx, cli.command)).await
}

async fn dispatch(ctx: &Context, command: Command) -> CmdResult {
    match command {
        Command::Init(args) => init::run(ctx, args),
        Command::Validate(args) => validate::run(ctx, args),
        Command::Schema(args) => schema::run(ctx, args),
        Command::Arenas(cmd) => arenas::run(ctx, cmd),
        Command::Render(args) => render::run(ctx, args).await,
        Command::Release(cmd) => release::run(ctx, cmd).await,
        Command::Gate(cmd) => gate::run(ctx, cmd).await,
        Command::Deploy(args) => deploy::deploy(ctx, args).await,
        Command::Down(args) => deploy::down(ctx, args).await,
        Command::Promote(args) => promote::promote(ctx, args).await,
        Command::Rollback(args) => promote::rollback(ctx, args).await,
        Command::Hotfix(args) => promote::hotfix(ctx, args).await,
        Command::Resume(args) => promote::resume(ctx, args).await,
        Command::Abort(args) => promote::abort(ctx, args).await,
        Command::Plan(args) => evidence::plan(ctx, args).await,
        Command::Evidence(args) => evidence::evidence(ctx, args).await,
        Command::LocalRouter(args) => deploy::router(args).await,
        Command::Status(args) => status::run(ctx, args).await,
        Command::History(args) => history::run(ctx, args).await,
        Command::Approve(args) => approve::run(ctx, args).await,
        Command::Lock(args) => lock::lock(ctx, args).await,
        Command::Unlock(args) => lock::unlock(ctx, args).await,
        Command::Completions(args) => completions::run(ctx, args),
        Command::Preview(cmd) => preview::run(ctx, cmd).await,
        Command::Incident(cmd) => incident::run(ctx, cmd).await,
        Command::Drill(cmd) => drill::run(ctx, cmd).await,
        #[cfg(feature = "github")]
        Command::Github(cmd) => github::run(ctx, cmd).await,
    }
}

/// The JSON document printed for a failed command.
pub fn error_json(e: &CliError) -> Value {
    json!({
        "error": {
            "exit_code": e.exit.code(),
            "message": e.message,
            "hint": e.hint,
            "diagnostics": e.diagnostics,
        }
    })
}

/// Format an instant for people.
pub fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}
