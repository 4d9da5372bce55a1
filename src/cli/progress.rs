//! What a rollout shows while it runs: a bar per wait on a terminal, a plain
//! line per event in CI and logs (a wait's measurement when it changes, else
//! at most every [`QUIET_FOR`]), nothing with `--quiet` or `--output json`
//! (stdout then carries one document).

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use super::{Context, OutputFormat};
use copilot_engine::rollout::Progress;

/// Without a terminal, an unchanged measurement is repeated at most this often.
const QUIET_FOR: Duration = Duration::from_secs(10);

enum Mode {
    Quiet,
    /// The last measurement printed, and when.
    Lines(Mutex<Option<(Instant, String)>>),
    Bars(Mutex<Option<ProgressBar>>),
}

pub struct CliProgress {
    mode: Mode,
}

impl CliProgress {
    pub fn new(ctx: &Context) -> Self {
        let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false");
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        let mode = if ctx.quiet || ctx.output == OutputFormat::Json {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() && !ci && !dumb {
            Mode::Bars(Mutex::new(None))
        } else {
            Mode::Lines(Mutex::new(None))
        };
        Self { mode }
    }
}

impl Progress for CliProgress {
    fn line(&self, text: &str) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines(_) => eprintln!("  {text}"),
            Mode::Bars(bar) => match bar.lock().expect("progress lock").as_ref() {
                Some(b) => b.println(format!("  {text}")),
                None => eprintln!("  {text}"),
            },
        }
    }

    fn begin(&self, label: &str, total: Option<Duration>) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines(last) => {
                *last.lock().expect("progress lock") = None;
                match total {
                    Some(t) => eprintln!(
                        "  {label} for {}",
                        copilot_core::config::duration::Duration::from_millis(t.as_millis() as u64)
                    ),
                    None => eprintln!("  {label}"),
                }
            }
            Mode::Bars(slot) => {
                let bar = match total {
                    Some(t) => ProgressBar::new(t.as_millis() as u64).with_style(
                        ProgressStyle::with_template(&format!(
                            "  {{prefix}} [{{bar:24}}] {{elapsed}}/{:.0}s {{wide_msg}}",
                            t.as_secs_f64().ceil()
                        ))
                        .expect("template")
                        .progress_chars("=> "),
                    ),
                    None => ProgressBar::new_spinner().with_style(
                        ProgressStyle::with_template("  {spinner} {prefix} {elapsed} {wide_msg}")
                            .expect("template"),
                    ),
                };
                bar.set_prefix(label.to_string());
                bar.enable_steady_tick(Duration::from_millis(120));
                if let Some(old) = slot.lock().expect("progress lock").replace(bar) {
                    old.finish_and_clear();
                }
            }
        }
    }

    fn tick(&self, elapsed: Duration) {
        if let Mode::Bars(slot) = &self.mode
            && let Some(b) = slot.lock().expect("progress lock").as_ref()
        {
            b.set_position(elapsed.as_millis() as u64);
        }
    }

    fn measured(&self, elapsed: Duration, state: &str, status: &str) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines(last) => {
                let mut last = last.lock().expect("progress lock");
                let due = last
                    .as_ref()
                    .is_none_or(|(at, said)| said != state || at.elapsed() >= QUIET_FOR);
                if due {
                    eprintln!("    {:>6.1}s  {status}", elapsed.as_secs_f64());
                    *last = Some((Instant::now(), state.to_string()));
                }
            }
            Mode::Bars(slot) => {
                if let Some(b) = slot.lock().expect("progress lock").as_ref() {
                    b.set_position(elapsed.as_millis() as u64);
                    b.set_message(status.to_string());
                }
            }
        }
    }

    fn finish(&self) {
        if let Mode::Bars(slot) = &self.mode
            && let Some(b) = slot.lock().expect("progress lock").take()
        {
            b.finish_and_clear();
            let status = b.message();
            if !status.is_empty() {
                eprintln!("  {}: {status}", b.prefix());
            }
        }
    }
}
