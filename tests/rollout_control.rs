//! Control of a running rollout, on the local provider: a holder that lost
//! its lease writes nothing; `abort` from another process, `down --force`
//! and SIGTERM stop a running promotion at a safe point; a pinned clock
//! cannot lift a freeze nothing may bypass; a PostgreSQL ledger that goes
//! away for ten seconds mid-promotion is ridden out.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{Project, TestDatabase};
use crate::rollouts::{Arenas, block_on, ledger_steps, reqwest, wait_for_step};

const ANALYSIS: &str = "    interval: 30s\n    min_samples: 20\n    metrics:\n\
     \x20     - { name: error_rate, max: 0.05, window: 5m, on_fail: rollback }\n";

/// Deploy v2 to local and start promoting it to stage with `bake` per step;
/// returns once the promotion is baking at 10%.
fn promote_v2_until_baking(a: &Arenas, bake: &str, env: &[(&str, &str)]) -> Child {
    promote_until_baking(a, "v2", bake, env)
}

/// Deploy `release` to local and start promoting it to stage with `bake`
/// per step; returns once the promotion is baking at 10% (deploy-idle,
/// shift-10 and bake-10 begun).
fn promote_until_baking(a: &Arenas, release: &str, bake: &str, env: &[(&str, &str)]) -> Child {
    let (code, doc) = a.run(&["deploy", "local", "--release", release]);
    assert_eq!(code, 0, "{doc}");
    let mut promote = a.p.spawn(
        [
            "--output", "json", "promote", "local", "stage", "--yes", "--bake", bake,
        ],
        env,
    );
    wait_for_step(&a.p, "stage", 3, &mut promote);
    promote
}

/// Wait for `child` to exit within `within`; its exit code and its JSON.
fn exit_of(child: &mut Child, within: Duration) -> (i32, Value) {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut out = String::new();
            child
                .stdout
                .take()
                .unwrap()
                .read_to_string(&mut out)
                .unwrap();
            let doc = serde_json::from_str(&out).unwrap_or(Value::String(out));
            return (status.code().unwrap_or(-1), doc);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "the command did not exit within {within:?}: {}",
                output_of(child)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn output_of(child: &mut Child) -> String {
    let _ = child.wait();
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        o.read_to_string(&mut out).ok();
    }
    if let Some(mut e) = child.stderr.take() {
        e.read_to_string(&mut err).ok();
    }
    format!("stdout: {out}\nstderr: {err}")
}

fn signal(child: &Child, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig}");
}

fn live_version(a: &Arenas) -> Value {
    a.run(&["status", "stage"]).1["arenas"][0]["live"]["version"].clone()
}

/// What the router of stage serves to every one of ten requests.
fn served(a: &Arenas) -> Option<String> {
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let v = reqwest::blocking_get(&format!("http://127.0.0.1:{}/health", a.stage_port));
        seen.insert(v["release"].as_str()?.to_string());
    }
    (seen.len() == 1).then(|| seen.into_iter().next().unwrap())
}

#[test]
fn a_stalled_holder_that_lost_its_lease_writes_nothing_and_exits_4() {
    let a = Arenas::with_analysis(ANALYSIS);
    assert_eq!(a.promote("v1").0, 0);
    // A ledger outage budget of 2 s makes the lease live 32 s.
    let budget = [("COPILOT_LEDGER_OUTAGE", "2s")];
    let mut promote = promote_v2_until_baking(&a, "60s", &budget);
    let (_, history) = a.run(&["history", "stage"]);
    let deployment = history["deployments"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Stopped as a frozen VM would be, past its lease.
    signal(&promote, "STOP");
    std::thread::sleep(Duration::from_secs(35));
    let (code, doc) = a.run(&["rollback", "stage", "--reason", "on-call"]);
    assert_eq!(code, 0, "{doc}");
    let steps_after_rollback = ledger_steps(&a.p, &deployment).len();
    signal(&promote, "CONT");
    let (code, doc) = exit_of(&mut promote, Duration::from_secs(20));
    assert_eq!(code, 4, "{doc}");
    let message = doc["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("lost its lease"), "{doc}");
    assert!(message.contains("rollback pin"), "{doc}");
    // It wrote nothing: no step, no state, and the rollback stands.
    assert_eq!(ledger_steps(&a.p, &deployment).len(), steps_after_rollback);
    let (_, history) = a.run(&["history", "stage"]);
    let old = history["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == deployment.as_str())
        .unwrap();
    assert_eq!(old["state"], "aborted", "{history:#}");
    let (_, status) = a.run(&["status", "stage"]);
    assert_eq!(status["arenas"][0]["live"]["version"], "v1", "{status:#}");
    assert!(
        status["arenas"][0]["deployment"].is_null(),
        "nothing in progress: {status:#}"
    );
    assert_eq!(served(&a).as_deref(), Some("v1"));
}

#[test]
fn abort_from_another_process_stops_a_running_promotion() {
    let a = Arenas::with_analysis(ANALYSIS);
    assert_eq!(a.promote("v1").0, 0);
    // Put back: the holder rolls back within seconds and exits 1.
    let mut promote = promote_v2_until_baking(&a, "60s", &[]);
    let asked = Instant::now();
    let (code, doc) = a.run(&["abort", "stage", "--reason", "numbers look off"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["state"], "aborted", "{doc}");
    assert_eq!(doc["back_to"], "v1", "{doc}");
    let (code, out) = exit_of(&mut promote, Duration::from_secs(10));
    assert_eq!(code, 1, "{out}");
    assert!(asked.elapsed() < Duration::from_secs(30));
    assert_eq!(live_version(&a), "v1");
    assert_eq!(served(&a).as_deref(), Some("v1"));
    let (_, history) = a.run(&["history", "stage"]);
    assert_eq!(history["deployments"][0]["state"], "aborted", "{history:#}");
    assert!(a.run(&["status", "stage"]).1["arenas"][0]["lock"].is_null());

    // --leave: the holder pauses where it stands (exit 5) and resume finishes.
    let mut promote = promote_v2_until_baking(&a, "60s", &[]);
    let (code, doc) = a.run(&["abort", "stage", "--leave"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(doc["state"], "paused", "{doc}");
    let (code, out) = exit_of(&mut promote, Duration::from_secs(10));
    assert_eq!(code, 5, "{out}");
    let seen: std::collections::BTreeSet<String> = (0..40)
        .filter_map(|_| {
            reqwest::blocking_get(&format!("http://127.0.0.1:{}/health", a.stage_port))["release"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert!(seen.contains("v1"), "traffic stays split: {seen:?}");
    let (code, doc) = a.run(&["resume", "stage", "--bake", "500ms"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(served(&a).as_deref(), Some("v2"));
    // With nothing running, --leave has nothing to leave.
    assert_eq!(a.run(&["abort", "stage", "--leave"]).0, 2);
}

#[test]
fn sigterm_mid_bake_pauses_or_rolls_back_as_the_arena_says() {
    let a = Arenas::with_analysis(ANALYSIS);
    assert_eq!(a.promote("v1").0, 0);
    let mut promote = promote_v2_until_baking(&a, "60s", &[]);
    signal(&promote, "TERM");
    let (code, out) = exit_of(&mut promote, Duration::from_secs(10));
    assert_eq!(code, 5, "{out}");
    let (_, history) = a.run(&["history", "stage"]);
    assert_eq!(history["deployments"][0]["state"], "paused", "{history:#}");
    // The lease was let go: resume takes the arena at once and finishes.
    let (code, doc) = a.run(&["resume", "stage", "--bake", "500ms"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(served(&a).as_deref(), Some("v2"));

    // `rollback.on_interrupt: rollback`: traffic back, exit 1.
    let stage = std::fs::read_to_string(a.p.path("arenas/stage.yaml")).unwrap();
    a.p.write(
        "arenas/stage.yaml",
        &format!("{stage}rollback:\n  on_interrupt: rollback\n"),
    );
    let mut promote = promote_until_baking(&a, "v1", "60s", &[]);
    signal(&promote, "INT");
    let (code, out) = exit_of(&mut promote, Duration::from_secs(10));
    assert_eq!(code, 1, "{out}");
    assert_eq!(served(&a).as_deref(), Some("v2"));
    assert_eq!(live_version(&a), "v2");
}

#[test]
fn down_force_stops_a_running_promotion_first() {
    let a = Arenas::with_analysis(ANALYSIS);
    assert_eq!(a.promote("v1").0, 0);
    let mut promote = promote_v2_until_baking(&a, "60s", &[]);
    let (code, doc) = a.run(&["down", "stage", "--force"]);
    assert_eq!(code, 0, "{doc}");
    let (code, out) = exit_of(&mut promote, Duration::from_secs(10));
    assert_eq!(code, 5, "{out}");
    let (_, history) = a.run(&["history", "stage"]);
    assert_eq!(history["deployments"][0]["state"], "aborted", "{history:#}");
    assert!(!reqwest::get_ok(&format!(
        "http://127.0.0.1:{}/health",
        a.stage_port
    )));
    assert!(live_version(&a).is_null());
}

/// The last 50 audit entries of stage.
fn stage_audit_log(a: &Arenas) -> Vec<copilot_ledger::AuditEntry> {
    block_on(async {
        let ledger = copilot_ledger::Ledger::connect(&copilot_ledger::default_url(a.p.root()))
            .await
            .unwrap();
        ledger.audit_log(Some("stage"), 50).await.unwrap()
    })
}

#[test]
fn a_pinned_clock_cannot_lift_a_freeze_nothing_may_bypass() {
    let a = Arenas::with_analysis(ANALYSIS);
    assert_eq!(a.promote("v1").0, 0);
    // Frozen from yesterday to tomorrow, by the real clock.
    let today = chrono::Utc::now().date_naive();
    let day = chrono::Duration::days(1);
    let stage = std::fs::read_to_string(a.p.path("arenas/stage.yaml")).unwrap();
    a.p.write(
        "arenas/stage.yaml",
        &format!(
            "{}windows:\n  freeze: [\"{}..{}\"]\n  bypass: never\n",
            stage.replace(
                "gates:\n  after: [health]",
                "gates:\n  before: [window]\n  after: [health]"
            ),
            today - day,
            today + day
        ),
    );
    a.p.copilot(["validate"]).assert().success();
    a.run(&["deploy", "local", "--release", "v2"]);
    let pinned = [("COPILOT_NOW", "2020-01-07T11:00:00Z")];
    let (code, doc) = a.run_with(
        &["promote", "local", "stage", "--yes", "--bake", "500ms"],
        &pinned,
    );
    assert_eq!(code, 4, "{doc}");
    assert!(doc.to_string().contains("real clock"), "{doc}");
    assert_eq!(live_version(&a), "v1");
    // The attempt under a pinned clock is in the audit log.
    let log = stage_audit_log(&a);
    let overridden = log
        .iter()
        .find(|e| e.action == "clock.override")
        .expect("the pinned clock is audited");
    assert_eq!(overridden.detail.0["copilot_now"], "2020-01-07T11:00:00Z");
    // Every change made under a pinned clock says so, with the real time.
    let (code, doc) = a.run_with(&["lock", "stage", "--reason", "maintenance"], &pinned);
    assert_eq!(code, 0, "{doc}");
    let log = stage_audit_log(&a);
    let lock = log
        .iter()
        .find(|e| e.action == "lock")
        .expect("the lock is audited");
    assert_eq!(
        lock.detail.0["clock"]["copilot_now"],
        "2020-01-07T11:00:00Z"
    );
    let real: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(lock.detail.0["clock"]["real"].clone()).unwrap();
    assert!((chrono::Utc::now() - real).num_minutes().abs() < 5);
    a.run(&["unlock", "stage"]);
}

/// A TCP path to PostgreSQL that can be cut as a failover cuts it: every
/// connection through it reset, new ones refused, until it is restored.
struct Link {
    port: u16,
    state: Arc<Mutex<LinkState>>,
}

struct LinkState {
    up: bool,
    streams: Vec<TcpStream>,
}

impl Link {
    fn to(target: std::net::SocketAddr) -> Link {
        let port = crate::common::free_port();
        let state = Arc::new(Mutex::new(LinkState {
            up: true,
            streams: Vec::new(),
        }));
        let shared = state.clone();
        std::thread::spawn(move || {
            let mut listener: Option<TcpListener> = None;
            loop {
                if !shared.lock().unwrap().up {
                    listener = None;
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                let l = listener.get_or_insert_with(|| {
                    let l = TcpListener::bind(("127.0.0.1", port)).expect("the link's port");
                    l.set_nonblocking(true).unwrap();
                    l
                });
                match l.accept() {
                    Ok((client, _)) => {
                        client.set_nonblocking(false).unwrap();
                        let Ok(server) = TcpStream::connect(target) else {
                            continue;
                        };
                        let mut st = shared.lock().unwrap();
                        st.streams.push(client.try_clone().unwrap());
                        st.streams.push(server.try_clone().unwrap());
                        drop(st);
                        for (mut from, mut to) in [
                            (client.try_clone().unwrap(), server.try_clone().unwrap()),
                            (server, client),
                        ] {
                            std::thread::spawn(move || {
                                let mut buf = [0u8; 16384];
                                while let Ok(n) = from.read(&mut buf) {
                                    if n == 0 || to.write_all(&buf[..n]).is_err() {
                                        break;
                                    }
                                }
                                let _ = to.shutdown(Shutdown::Both);
                            });
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Link { port, state }
    }

    fn cut(&self) {
        let mut st = self.state.lock().unwrap();
        st.up = false;
        for s in st.streams.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.state.lock().unwrap().up = true;
    }
}

#[test]
fn a_postgres_ledger_gone_for_ten_seconds_mid_promotion_is_ridden_out() {
    let db = block_on(TestDatabase::create());
    // postgres://user@host:port/db: the link stands between host:port and copilot.
    let (head, rest) = db.url.split_once('@').unwrap();
    let (server, name) = rest.split_once('/').unwrap();
    let link = Link::to(server.parse().expect("host:port"));
    let through = format!("{head}@127.0.0.1:{}/{name}", link.port);
    let a = Arenas::on(Project::init_with_ledger(&through), ANALYSIS);
    assert_eq!(a.promote("v1").0, 0);
    let mut promote = promote_v2_until_baking(&a, "4s", &[]);
    link.cut();
    std::thread::sleep(Duration::from_secs(10));
    link.restore();
    let (code, out) = exit_of(&mut promote, Duration::from_secs(120));
    assert_eq!(code, 0, "{out}");
    assert_eq!(live_version(&a), "v2");
    assert_eq!(served(&a).as_deref(), Some("v2"));
}

/// Set or clear the immutable attribute of `path` (root, as the tests run).
fn chattr(flag: &str, path: &std::path::Path) {
    let ok = std::process::Command::new("chattr")
        .arg(flag)
        .arg(path)
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "chattr {flag} {} (the tests run as root)",
        path.display()
    );
}

#[test]
fn a_sqlite_ledger_that_stops_taking_writes_ends_the_command_with_exit_3() {
    let a = Arenas::with_analysis(ANALYSIS);
    assert_eq!(a.promote("v1").0, 0);
    let mut promote = promote_v2_until_baking(&a, "3s", &[]);
    // The file refuses writes from now on, even through open descriptors.
    let db = a.p.path(".copilot/ledger.db");
    chattr("+i", &db);
    let ended = exit_of(&mut promote, Duration::from_secs(60));
    chattr("-i", &db);
    let (code, doc) = ended;
    // An exit code and a message, not a signal.
    assert_eq!(code, 3, "{doc}");
    assert!(
        doc["error"]["hint"]
            .as_str()
            .is_some_and(|h| h.contains("cannot be written")),
        "{doc}"
    );
    // Writable again, the deployment is where its journal says: resume ends it.
    let (code, doc) = a.run(&["resume", "stage", "--bake", "500ms"]);
    assert_eq!(code, 0, "{doc}");
    assert_eq!(served(&a).as_deref(), Some("v2"));
}
