//! Shared test harness: a temporary project per test, the `copilot` binary
//! run hermetically, and throwaway PostgreSQL databases.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tempfile::TempDir;

/// A temporary project initialised with the default arenas.
pub struct Project {
    pub dir: TempDir,
    pub ledger_url: Option<String>,
    /// `COPILOT_NOW` for every command run in the project, when its test
    /// depends on the date.
    pub now: Option<String>,
}

impl Drop for Project {
    /// Whatever the local provider started for this project (routers and
    /// service processes, as its state files record them) stops with it,
    /// also when a test failed half-way or never took its arenas down.
    fn drop(&mut self) {
        let Ok(arenas) = std::fs::read_dir(self.path(".copilot/local")) else {
            return;
        };
        let mut pids = Vec::new();
        for arena in arenas.flatten() {
            let Ok(text) = std::fs::read_to_string(arena.path().join("state.json")) else {
                continue;
            };
            let Ok(state) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            pids.push(state["router"]["pid"].as_u64());
            if let Some(slots) = state["slots"].as_object() {
                pids.extend(slots.values().map(|s| s["pid"].as_u64()));
            }
        }
        let pids: Vec<String> = pids.into_iter().flatten().map(|p| p.to_string()).collect();
        if pids.is_empty() {
            return;
        }
        let alive = |pids: &[String]| -> Vec<String> {
            pids.iter()
                .filter(|p| Path::new(&format!("/proc/{p}")).exists())
                .cloned()
                .collect()
        };
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .args(&pids)
            .output();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while !alive(&pids).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let left = alive(&pids);
        if !left.is_empty() {
            let _ = std::process::Command::new("kill")
                .arg("-KILL")
                .args(&left)
                .output();
        }
    }
}

impl Project {
    /// `copilot init` into a fresh temporary directory.
    pub fn init() -> Project {
        Project::init_at(None)
    }

    /// The same, with every command's clock pinned to `now` (RFC 3339).
    pub fn init_at(now: Option<&str>) -> Project {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = Project {
            dir,
            ledger_url: None,
            now: now.map(str::to_string),
        };
        p.copilot(["init", "."]).assert().success();
        p
    }

    /// The same, with the ledger in a PostgreSQL database of its own.
    pub fn init_with_ledger(url: &str) -> Project {
        let mut p = Project::init();
        p.ledger_url = Some(url.to_string());
        p
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).expect("read")
    }

    pub fn write(&self, rel: &str, text: &str) {
        let path = self.path(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).expect("write");
    }

    /// Replace `from` by `to` in a file; the text must be there.
    pub fn edit(&self, rel: &str, from: &str, to: &str) {
        let text = self.read(rel);
        assert!(text.contains(from), "{rel} does not contain {from:?}");
        self.write(rel, &text.replacen(from, to, 1));
    }

    /// `copilot` with a clean environment, run in the project.
    pub fn copilot<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = copilot();
        cmd.current_dir(self.root());
        if let Some(url) = &self.ledger_url {
            cmd.env("COPILOT_LEDGER_URL", url);
        }
        if let Some(now) = &self.now {
            cmd.env("COPILOT_NOW", now);
        }
        cmd.args(args);
        cmd
    }

    /// The same as a `std::process::Command`, for spawning without waiting.
    pub fn spawn<I, S>(&self, args: I, envs: &[(&str, &str)]) -> std::process::Child
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("copilot"));
        hermetic(&mut cmd)
            .env("COPILOT_ACTOR", "tester")
            .current_dir(self.root())
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(url) = &self.ledger_url {
            cmd.env("COPILOT_LEDGER_URL", url);
        }
        if let Some(now) = &self.now {
            cmd.env("COPILOT_NOW", now);
        }
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.spawn().expect("spawn copilot")
    }

    /// Run with `--output json` and parse stdout.
    pub fn json<I, S>(&self, args: I) -> (i32, serde_json::Value)
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let out = self
            .copilot(["--output", "json"])
            .args(args)
            .output()
            .expect("run");
        let code = out.status.code().unwrap_or(-1);
        let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (code, doc)
    }
}

/// Variables a hermetic command keeps: `PATH`, and a clock faked for the
/// whole process tree by libfaketime, so that the suite can be run at another
/// date (`LD_PRELOAD=.../libfaketime.so.1 FAKETIME=+165628800 target/debug/deps/integration-*`).
pub const PASSED_THROUGH: &[&str] = &[
    "PATH",
    "LD_PRELOAD",
    "FAKETIME",
    "FAKETIME_DONT_FAKE_MONOTONIC",
];

/// `cmd` with an empty environment but for [`PASSED_THROUGH`].
pub fn hermetic(cmd: &mut std::process::Command) -> &mut std::process::Command {
    cmd.env_clear().envs(
        PASSED_THROUGH
            .iter()
            .filter_map(|k| std::env::var_os(k).map(|v| (*k, v))),
    )
}

/// A loopback port nothing listens on (yet), for a listener started later
/// (a router, an emulator). Taken below the kernel's ephemeral range
/// (`ip_local_port_range`, 32768 up by default), where the outgoing
/// connections and `bind(0)` listeners of the tests running meanwhile take
/// theirs, and never the same twice in this process: a port handed out
/// stays free until its listener starts.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    const LOW: u16 = 20_000;
    const SPAN: u16 = 12_000;
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Each test process starts at its own place in the range.
    let _ = NEXT.compare_exchange(
        0,
        1 + (std::process::id() % u32::from(SPAN)) as u16,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    loop {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = LOW + n % SPAN;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn pass_through(cmd: &mut Command) {
    for k in PASSED_THROUGH {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
}

/// The `copilot` binary with an empty environment but for a fixed actor.
pub fn copilot() -> Command {
    let mut cmd = Command::cargo_bin("copilot").expect("binary");
    cmd.env_clear().env("COPILOT_ACTOR", "tester");
    pass_through(&mut cmd);
    cmd
}

/// Where the `copilot-service` binary is: beside `copilot` (the workspace
/// builds both into one target folder; it is another package's binary, so
/// cargo gives this test no `CARGO_BIN_EXE_` for it), as the local provider
/// finds it.
pub fn service_bin() -> std::path::PathBuf {
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_copilot"))
        .with_file_name(format!("copilot-service{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p copilot-service`",
        bin.display()
    );
    bin
}

/// The `copilot-service` binary with an empty environment.
pub fn copilot_service() -> Command {
    let mut cmd = Command::new(service_bin());
    cmd.env_clear();
    pass_through(&mut cmd);
    cmd
}

/// The PostgreSQL server tests use.
pub fn postgres_admin_url() -> String {
    std::env::var("COPILOT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A PostgreSQL database that exists for one test and is dropped after it.
pub struct TestDatabase {
    pub url: String,
    name: String,
}

impl TestDatabase {
    pub async fn create() -> TestDatabase {
        use sqlx::Connection;
        let admin = postgres_admin_url();
        let name = format!("copilot_test_{}", uuid_like());
        let mut conn = sqlx::PgConnection::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is required for this test: {e}"));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .expect("create database");
        conn.close().await.ok();
        let url = match admin.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => panic!("COPILOT_TEST_DATABASE_URL needs a database path"),
        };
        TestDatabase { url, name }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = postgres_admin_url();
        let name = self.name.clone();
        // Drop may run inside a runtime: use a thread with its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                use sqlx::Connection;
                if let Ok(mut conn) = sqlx::PgConnection::connect(&admin).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&mut conn)
                        .await;
                }
            });
        })
        .join();
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One request of [`Traffic`]: when it was sent (wall clock, comparable
/// with the ledger's step times), what answered (the `release` of a
/// `/health` body, or the error), and whether it succeeded.
pub type Sent = (chrono::DateTime<chrono::Utc>, String, bool);

/// Requests sent one after another to a URL, from a thread of their own,
/// while a rollout runs.
pub struct Traffic {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Sent>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Traffic {
    /// Requests to `url`/health, whose body names the release that answered.
    pub fn start(url: &str) -> Traffic {
        Self::to(&format!("{url}/health"))
    }

    /// Requests to `url` (the release of each is known only for `/health`).
    pub fn to(url: &str) -> Traffic {
        use std::sync::atomic::Ordering;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (s, v, url) = (stop.clone(), seen.clone(), url.to_string());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let http = reqwest::Client::new();
                while !s.load(Ordering::Relaxed) {
                    let sent = chrono::Utc::now();
                    let (release, ok) = match http.get(&url).send().await {
                        Ok(r) if r.status().is_success() => {
                            let body: serde_json::Value = r.json().await.unwrap_or_default();
                            (body["release"].as_str().unwrap_or("?").to_string(), true)
                        }
                        Ok(r) => (format!("status {}", r.status()), false),
                        Err(e) => (e.to_string(), false),
                    };
                    v.lock().unwrap().push((sent, release, ok));
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                }
            });
        });
        Traffic {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    pub fn stop(mut self) -> Vec<Sent> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        self.seen.lock().unwrap().clone()
    }
}

/// The requests sent while `step` ran, leaving its first `settle` to the
/// data plane to take the new weights.
pub fn sent_during<'a>(
    seen: &'a [Sent],
    step: &copilot_ledger::Step,
    settle: std::time::Duration,
) -> Vec<&'a Sent> {
    let from = step.started_at + chrono::Duration::from_std(settle).unwrap();
    let to = step.finished_at.expect("the step finished");
    seen.iter()
        .filter(|(t, _, _)| *t >= from && *t <= to)
        .collect()
}
