//! Processes on this machine, by pid: whether one runs, and stopping one.
//! Signals go through `rustix` (the `kill(2)` system call), not a spawned
//! `kill` per question.

use std::time::{Duration, Instant};

/// Whether a process with this pid exists (one owned by another user
/// counts: it exists, copilot may just not signal it).
#[cfg(unix)]
pub fn alive(pid: u32) -> bool {
    let Some(pid) = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) => true,
        Err(e) => e == rustix::io::Errno::PERM,
    }
}

#[cfg(not(unix))]
pub fn alive(_pid: u32) -> bool {
    false
}

/// Ask a process to stop (SIGTERM), wait up to `grace` for it to exit, then
/// kill it (SIGKILL). A pid that is gone already is fine.
#[cfg(unix)]
pub fn stop(pid: u32, grace: Duration) {
    use rustix::process::{Pid, Signal, kill_process};
    let Some(target) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
        return;
    };
    let _ = kill_process(target, Signal::TERM);
    let deadline = Instant::now() + grace;
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive(pid) {
        let _ = kill_process(target, Signal::KILL);
    }
}

#[cfg(not(unix))]
pub fn stop(_pid: u32, _grace: Duration) {}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_alive_until_stopped() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        assert!(alive(pid));
        stop(pid, Duration::from_secs(5));
        // Reaped, it no longer exists.
        child.wait().unwrap();
        assert!(!alive(pid));
        assert!(!alive(0x7fff_fff0));
    }
}
