//! `copilot`: parse arguments, run the command, print, exit with the documented code.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use copilot::cli::{self, Cli, Exit, OutputFormat};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return argument_error(&e),
    };
    if cli.no_color || std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) {
        anstream::ColorChoice::Never.write_global();
    }
    init_logging(cli.verbose, cli.quiet);
    let output = cli.output;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            anstream::eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(Exit::Dependency.code());
        }
    };
    let result = runtime.block_on(cli::run(cli));
    let exit = match result {
        Ok(report) => {
            match output {
                OutputFormat::Json => print_json(&report.json),
                OutputFormat::Table => {
                    let mut out = anstream::stdout();
                    let _ = out.write_all(report.text.as_bytes());
                }
            }
            report.exit
        }
        Err(err) => {
            if output == OutputFormat::Json {
                print_json(&cli::error_json(&err));
            }
            print_error(&err);
            err.exit
        }
    };
    ExitCode::from(exit.code())
}

/// Help and version go out as clap prints them; any other argument error is
/// exit 2, and with `--output json` also the one `{"error": ...}` document
/// every failure prints.
fn argument_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    if cli::json_requested(std::env::args_os().skip(1)) {
        print_json(&cli::error_json(&cli::CliError::from(e)));
    }
    let _ = e.print();
    ExitCode::from(Exit::Invalid.code())
}

fn print_json(doc: &serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = serde_json::to_writer_pretty(&mut out, doc);
    let _ = out.write_all(b"\n");
}

fn print_error(err: &cli::CliError) {
    let mut stderr = anstream::stderr();
    for d in &err.diagnostics {
        let _ = writeln!(stderr, "{}", d.render());
    }
    let red = anstyle::Style::new()
        .bold()
        .fg_color(Some(anstyle::AnsiColor::Red.into()));
    let _ = writeln!(stderr, "{red}error{red:#}: {}", err.message);
    if let Some(hint) = &err.hint {
        let _ = writeln!(stderr, "  hint: {hint}");
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::prelude::*;
    let level = match (quiet, verbose) {
        (true, _) => LevelFilter::ERROR,
        (false, 0) => LevelFilter::WARN,
        (false, 1) => LevelFilter::INFO,
        (false, 2) => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    };
    // Libraries (the AWS SDK, sqlx, hyper) speak at warning level about
    // what copilot says itself in one line (a credential chain that found
    // nothing, a slow statement): their records show from -v on.
    let libraries = if verbose == 0 {
        LevelFilter::ERROR
    } else {
        level
    };
    let filter = Targets::new()
        .with_default(libraries)
        .with_target("copilot", level);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(
            anstream::ColorChoice::global() != anstream::ColorChoice::Never
                && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        )
        .with_target(false);
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .init();
}
