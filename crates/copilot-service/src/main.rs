//! `copilot-service`: the SEM/SMM copilot for Shopify merchants.
//!
//! ```text
//! copilot-service serve [--no-migrate]
//! copilot-service migrate up | down [--steps N] | status
//! copilot-service ingest --source NAME [--format F] [--platform P] PATH|URL...
//! copilot-service schema record | recommendations
//! ```

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use copilot_db::Pool;
use copilot_service::config::ServiceConfig;
use copilot_service::http::{self, StartOptions};
use copilot_service::ingest::{self, Format, Source};
use copilot_service::records::Platform;
use copilot_service::{migrate, recommend, records};

#[derive(Parser)]
#[command(
    name = "copilot-service",
    version,
    about = "SEM/SMM copilot for Shopify merchants"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP and run the queue worker (configuration from the environment)
    Serve {
        /// Do not apply pending migrations at start
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply, revert or list migrations of DATABASE_URL
    #[command(subcommand)]
    Migrate(MigrateCmd),
    /// Ingest update feeds into DATABASE_URL
    Ingest {
        /// A known source name, or a name of your own with --format and --platform
        #[arg(long)]
        source: String,
        /// google-status, atom or rss
        #[arg(long)]
        format: Option<String>,
        /// google_search, google_ads, meta, tiktok, pinterest, microsoft_ads or shopify
        #[arg(long)]
        platform: Option<String>,
        /// Files or http(s) URLs
        #[arg(required = true)]
        locations: Vec<String>,
    },
    /// Print a published JSON Schema
    Schema {
        #[arg(value_parser = ["record", "recommendations"])]
        which: String,
    },
}

#[derive(Subcommand)]
enum MigrateCmd {
    /// Apply every pending migration
    Up,
    /// Revert the newest migrations
    Down {
        #[arg(long, default_value_t = 1)]
        steps: usize,
    },
    /// List migrations and whether they are applied
    Status,
}

fn database_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| "sqlite://copilot-service.db".into())
}

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("copilot-service: {message}");
    ExitCode::from(code)
}

async fn open_pool() -> Result<Pool, ExitCode> {
    Pool::connect(&database_url(), 4)
        .await
        .map_err(|e| fail(3, format!("DATABASE_URL: {e}")))
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { no_migrate } => {
            let config = match ServiceConfig::from_env() {
                Ok(c) => c,
                Err(e) => return fail(2, format!("configuration error: {e}")),
            };
            let running = match http::start(
                config,
                None,
                StartOptions {
                    skip_migrations: no_migrate,
                    ..StartOptions::default()
                },
            )
            .await
            {
                Ok(r) => r,
                Err(e) => return fail(3, e),
            };
            let stop = running.stopper();
            tokio::spawn(async move {
                shutdown_signal().await;
                tracing::info!("shutting down");
                let _ = stop.send(true);
            });
            running.wait().await;
            ExitCode::SUCCESS
        }
        Command::Migrate(cmd) => {
            let pool = match open_pool().await {
                Ok(p) => p,
                Err(code) => return code,
            };
            let result = match cmd {
                MigrateCmd::Up => migrate::up(&pool).await.map(|v| {
                    if v.is_empty() {
                        println!("up to date");
                    }
                    for version in v {
                        println!("applied {version}");
                    }
                }),
                MigrateCmd::Down { steps } => migrate::down(&pool, steps).await.map(|v| {
                    for version in v {
                        println!("reverted {version}");
                    }
                }),
                MigrateCmd::Status => migrate::status(&pool).await.map(|list| {
                    for m in list {
                        let state = match (m.applied, m.changed) {
                            (true, true) => "applied, CHANGED since",
                            (true, false) => "applied",
                            (false, _) => "pending",
                        };
                        println!("{:04} {:<28} {state}", m.version, m.name);
                    }
                }),
            };
            pool.close().await;
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(3, format!("migrations: {e}")),
            }
        }
        Command::Ingest {
            source,
            format,
            platform,
            locations,
        } => {
            let format = match format.as_deref().map(Format::parse) {
                Some(None) => return fail(2, "--format must be google-status, atom or rss"),
                Some(f) => f,
                None => None,
            };
            let platform = match platform.as_deref().map(Platform::parse) {
                Some(None) => {
                    return fail(
                        2,
                        "--platform must be one of google_search, google_ads, meta, tiktok, pinterest, microsoft_ads, shopify",
                    );
                }
                Some(p) => p,
                None => None,
            };
            let source = match Source::resolve(&source, format, platform) {
                Ok(s) => s,
                Err(e) => return fail(2, e),
            };
            let pool = match open_pool().await {
                Ok(p) => p,
                Err(code) => return code,
            };
            if let Err(e) = migrate::up(&pool).await {
                return fail(3, format!("migrations: {e}"));
            }
            let mut code = ExitCode::SUCCESS;
            for location in &locations {
                match ingest::ingest(&pool, &source, location, chrono::Utc::now()).await {
                    Ok(r) => println!("{}", serde_json::to_string(&r).expect("json")),
                    Err(e @ ingest::IngestError::Parse { .. }) => code = fail(2, e),
                    Err(e) => code = fail(3, e),
                }
            }
            pool.close().await;
            code
        }
        Command::Schema { which } => {
            let doc = if which == "record" {
                records::schema()
            } else {
                recommend::schema()
            };
            println!("{}", serde_json::to_string_pretty(&doc).expect("json"));
            ExitCode::SUCCESS
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("signal handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(match std::env::var("RUST_LOG").as_deref() {
            Ok("debug") => tracing::Level::DEBUG,
            Ok("warn") => tracing::Level::WARN,
            Ok("error") => tracing::Level::ERROR,
            _ => tracing::Level::INFO,
        })
        .with_target(false)
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(cli))
}
