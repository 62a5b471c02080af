//! eslogger as a child process: asked for the events detection uses (those its macOS lists), its
//! output decoded as it comes, and started again when it ends — at once after a kill (the kill is
//! the attack; it is reported), on a backoff after failures.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::event::Interest;
use crate::source::{read_lines, Hooks};

/// The events eslogger is asked for: those detection uses.
pub const ESLOGGER_EVENTS: [&str; 21] = [
    "exec",
    "fork",
    "deleteextattr",
    "setflags",
    "setacl",
    "utimes",
    "truncate",
    "link",
    "clone",
    "create",
    "write",
    "close",
    "rename",
    "unlink",
    "setmode",
    "setowner",
    "setextattr",
    "kextload",
    "kextunload",
    "signal",
    "settime",
];

/// Events newer than eslogger itself (macOS 13), asked for only where eslogger lists them:
/// `profile_remove` (macOS 14), `tcc_modify` (macOS 15.4). eslogger refuses to start at all when
/// asked for an event it does not know.
pub const ESLOGGER_EVENTS_WHERE_KNOWN: [&str; 2] = ["profile_remove", "tcc_modify"];

/// The events to ask of an eslogger whose `--list-events` printed `listed` (one name per line):
/// every wanted event it lists. Without a list (an older or unusual eslogger), the base events.
/// Also returns the wanted events it cannot give.
pub fn eslogger_events(listed: Option<&str>) -> (Vec<&'static str>, Vec<&'static str>) {
    let names: Vec<&str> = listed.map_or_else(Vec::new, |l| l.lines().map(str::trim).collect());
    let wanted = ESLOGGER_EVENTS.iter().chain(&ESLOGGER_EVENTS_WHERE_KNOWN);
    if !names.contains(&"exec") {
        return (
            ESLOGGER_EVENTS.to_vec(),
            ESLOGGER_EVENTS_WHERE_KNOWN.to_vec(),
        );
    }
    wanted.partition(|e| names.contains(e))
}

/// Ask `bin --list-events`; a failing eslogger, or one still silent after 10 s, gives no list.
fn eslogger_list(bin: &Path) -> Option<String> {
    use std::io::Read;
    let mut child = Command::new(bin)
        .arg("--list-events")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let mut out = child.stdout.take()?;
    // The list is a few KiB: read on a helper thread, so a hung eslogger cannot hold the source.
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        out.read_to_string(&mut text).map(|_| text)
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    };
    let text = reader.join().ok()?.ok()?;
    status.success().then_some(text)
}

/// When to start eslogger again after it ended. At once after a kill: the kill is the attack, and
/// waiting would widen the blind gap it made (a kill loop must not stretch it). With a doubling
/// backoff after quick failures (a missing binary, no Full Disk Access), reset once it ran for a
/// healthy period.
#[derive(Debug)]
struct Restart {
    backoff: Duration,
}

const RESTART_AFTER_KILL: Duration = Duration::from_millis(100);
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Running this long means the last failure is behind it.
const HEALTHY: Duration = Duration::from_secs(60);

impl Restart {
    fn new() -> Restart {
        Restart {
            backoff: FIRST_BACKOFF,
        }
    }

    /// The wait before the next start, for a run that lasted `ran` and ended by a signal or not.
    fn after(&mut self, ran: Duration, killed: bool) -> Duration {
        if ran >= HEALTHY {
            self.backoff = FIRST_BACKOFF;
        }
        if killed {
            return RESTART_AFTER_KILL;
        }
        let wait = self.backoff;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        wait
    }
}

/// The signal that ended a child, if one did.
fn ending_signal(status: &std::io::Result<std::process::ExitStatus>) -> Option<i32> {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        status.as_ref().ok().and_then(|s| s.signal())
    }
    #[cfg(not(unix))]
    {
        let _ = status;
        None
    }
}

/// Run eslogger and read its output; start it again when it ends (see `Restart`). A kill is
/// reported through `hooks` after the events eslogger printed before it.
pub fn run(bin: &Path, interest: &dyn Interest, hooks: &dyn Hooks, stop: &AtomicBool) {
    let mut restart = Restart::new();
    let (events, unavailable) = eslogger_events(eslogger_list(bin).as_deref());
    if !unavailable.is_empty() {
        tracing::info!(
            ?unavailable,
            "this macOS's eslogger cannot report these events; detection that needs them is off"
        );
    }
    loop {
        let started = std::time::Instant::now();
        let child = Command::new(bin)
            .args(&events)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn();
        let mut killed = false;
        match child {
            Ok(mut child) => {
                let pid = child.id();
                hooks.state(format!("running {} (pid {pid})", bin.display()));
                if let Some(out) = child.stdout.take() {
                    read_lines(out, interest, hooks, stop);
                }
                let _ = child.kill();
                let status = child.wait();
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                if let Some(signal) = ending_signal(&status) {
                    killed = true;
                    tracing::warn!(pid, signal, "eslogger was killed; restarting at once");
                    // After its events, in order: detection may then name the sender from the
                    // signal event eslogger reported.
                    hooks.killed(pid, signal, crate::wallclock::now_ns());
                } else {
                    tracing::warn!(?status, "eslogger exited; restarting");
                }
                hooks.state(format!(
                    "eslogger (pid {pid}) ended ({status:?}); restarting"
                ));
            }
            Err(e) => {
                tracing::error!(bin = %bin.display(), error = %e, "cannot start eslogger");
                hooks.state(format!("cannot start {}: {e}", bin.display()));
            }
        }
        hooks.restarted();
        let wait = restart.after(started.elapsed(), killed);
        let mut slept = Duration::ZERO;
        while slept < wait && !stop.load(Ordering::Relaxed) {
            let step = Duration::from_millis(100).min(wait - slept);
            std::thread::sleep(step);
            slept += step;
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
    }
}

#[cfg(test)]
mod restart_tests {
    use super::*;

    #[test]
    fn eslogger_is_asked_only_for_events_it_lists() {
        // macOS 14: profile_remove exists, tcc_modify does not yet.
        let mut listed: Vec<&str> = ESLOGGER_EVENTS.to_vec();
        listed.extend(["profile_remove", "open", "mmap"]);
        let (asked, missing) = eslogger_events(Some(&listed.join("\n")));
        assert!(ESLOGGER_EVENTS.iter().all(|e| asked.contains(e)));
        assert!(asked.contains(&"profile_remove"));
        assert!(!asked.contains(&"open"), "only what detection uses");
        assert_eq!(missing, ["tcc_modify"]);
        // No usable list (the call failed, or printed something else): the base events, which
        // every eslogger has.
        for listed in [None, Some(""), Some("{\"event_type\": 9}\n")] {
            let (asked, missing) = eslogger_events(listed);
            assert_eq!(asked, ESLOGGER_EVENTS, "{listed:?}");
            assert_eq!(missing, ESLOGGER_EVENTS_WHERE_KNOWN);
        }
    }

    #[test]
    fn a_kill_restarts_at_once_failures_back_off_and_a_healthy_run_resets() {
        let mut r = Restart::new();
        let quick = Duration::from_millis(200);
        // Quick failures double the wait, up to the cap.
        let waits: Vec<u64> = (0..8).map(|_| r.after(quick, false).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        // A kill loop does not wait on that backoff.
        for _ in 0..5 {
            assert_eq!(r.after(quick, true), RESTART_AFTER_KILL);
        }
        // A healthy run forgets the failures before it.
        assert_eq!(r.after(HEALTHY, false), FIRST_BACKOFF);
        assert_eq!(r.after(quick, false), FIRST_BACKOFF * 2);
    }
}
