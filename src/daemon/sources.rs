//! Daemon event sources. Each decodes into the shared event model and `try_send`s: a full queue drops
//! the event and counts it, it never blocks the source.

use std::fmt;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use super::{Health, Msg};
use crate::config::Config;
use crate::detect::KextInterest;

/// What the sources decode, shared with the detection thread, which replaces it on a reload.
pub(super) type SharedInterest = Arc<std::sync::RwLock<KextInterest>>;
use crate::source::replay::{EventDecoder, Line, LineReader, MAX_LINE};

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// Endpoint Security (macOS, entitlement and Full Disk Access needed).
    Es,
    /// `/usr/bin/eslogger` as a subprocess (no entitlement needed).
    Eslogger,
    /// eslogger JSON from a file or FIFO (a FIFO is reopened after each writer: follow mode).
    Replay(PathBuf),
}

impl SourceSpec {
    /// Whether events come from this Mac as they happen (not a capture replayed into it).
    pub fn is_live(&self) -> bool {
        matches!(self, SourceSpec::Es | SourceSpec::Eslogger)
    }
}

impl std::str::FromStr for SourceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "es" => Ok(SourceSpec::Es),
            "eslogger" => Ok(SourceSpec::Eslogger),
            _ => match s.strip_prefix("replay:") {
                Some(p) if !p.is_empty() => Ok(SourceSpec::Replay(PathBuf::from(p))),
                _ => Err(format!(
                    "unknown source {s:?}: expected es, eslogger or replay:PATH"
                )),
            },
        }
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            SourceSpec::Es => f.write_str("es"),
            SourceSpec::Eslogger => f.write_str("eslogger"),
            SourceSpec::Replay(p) => write!(f, "replay:{}", p.display()),
        }
    }
}

/// Decodes lines and queues events, keeping the health counters.
struct Feeder {
    /// Replaced by the detection thread on a reload.
    interest: SharedInterest,
    tx: SyncSender<Msg>,
    health: Arc<Health>,
}

impl Feeder {
    fn read_all<R: std::io::Read>(&self, input: R, stop: &AtomicBool) {
        let mut decoder = EventDecoder::new(&*self.interest);
        let mut reader = LineReader::new(BufReader::with_capacity(1 << 20, input), MAX_LINE);
        let mut last_malformed = 0;
        let mut last_gaps = 0;
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let (line_no, line) = match reader.next_line() {
                Ok(Some((n, l))) => (n, l),
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "event source read failed");
                    return;
                }
            };
            let line: Line<'_> = line;
            self.health.lines.fetch_add(1, Ordering::Relaxed);
            let ev = decoder.decode(line_no, line);
            let s = &decoder.stats;
            if s.malformed != last_malformed {
                self.health
                    .malformed
                    .fetch_add(s.malformed - last_malformed, Ordering::Relaxed);
                last_malformed = s.malformed;
            }
            if s.seq_gap_events != last_gaps {
                self.health
                    .seq_gap_events
                    .fetch_add(s.seq_gap_events - last_gaps, Ordering::Relaxed);
                last_gaps = s.seq_gap_events;
            }
            if let Some(ev) = ev {
                self.health.decoded.fetch_add(1, Ordering::Relaxed);
                match self.tx.try_send(Msg::Event(Box::new(ev))) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        self.health.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(TrySendError::Disconnected(_)) => return,
                }
            }
        }
    }
}

pub(super) fn start(
    opts: &super::DaemonOptions,
    config: &Config,
    tx: SyncSender<Msg>,
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
    enforcement: Option<Arc<std::sync::RwLock<crate::detect::enforce::EnforcementPolicy>>>,
    interest: SharedInterest,
) -> anyhow::Result<()> {
    if enforcement.is_some() && opts.source != SourceSpec::Es {
        tracing::warn!("daemon.mode = \"enforce\" needs --source es; this source only observes");
    }
    // Only the ES source reads the config itself (its kernel muting list).
    #[cfg(not(target_os = "macos"))]
    let _ = config;
    let feeder = Feeder {
        interest,
        tx,
        health: health.clone(),
    };
    match &opts.source {
        SourceSpec::Replay(path) => {
            let path = path.clone();
            std::thread::Builder::new()
                .name("source-replay".into())
                .spawn(move || replay(&feeder, &path, &stop))?;
        }
        SourceSpec::Eslogger => {
            let bin = opts.eslogger.clone();
            std::thread::Builder::new()
                .name("source-eslogger".into())
                .spawn(move || eslogger(&feeder, &bin, &stop))?;
        }
        #[cfg(target_os = "macos")]
        SourceSpec::Es => {
            use crate::source::es;
            let Feeder {
                interest,
                tx,
                health,
            } = feeder;
            let gap_health = health.clone();
            let settings = es::EsSettings {
                interest: Box::new(interest),
                watch: crate::detect::WatchList::new(config),
                guard: enforcement
                    .is_some()
                    .then(|| crate::detect::tamper::Surface::new(config)),
                enforcement,
            };
            let hooks = es::EsHooks {
                on_event: Box::new(move |ev| {
                    health.decoded.fetch_add(1, Ordering::Relaxed);
                    if let Err(TrySendError::Full(_)) = tx.try_send(Msg::Event(Box::new(ev))) {
                        health.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }),
                on_gap: Box::new(move |n| {
                    gap_health.seq_gap_events.fetch_add(n, Ordering::Relaxed);
                }),
            };
            es::start(settings, hooks, stop).map_err(anyhow::Error::msg)?;
            gap_health_state(&opts.source);
        }
        #[cfg(not(target_os = "macos"))]
        SourceSpec::Es => {
            let _ = enforcement;
            anyhow::bail!("the Endpoint Security source needs macOS; use --source replay:PATH here")
        }
    }
    Ok(())
}

#[cfg(target_os = "macos")]
fn gap_health_state(source: &SourceSpec) {
    tracing::info!(%source, "Endpoint Security client subscribed");
}

fn is_fifo(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

/// A file is read once; a FIFO is reopened after each writer closes it (follow mode).
fn replay(feeder: &Feeder, path: &Path, stop: &AtomicBool) {
    loop {
        feeder
            .health
            .set_source_state(format!("reading {}", path.display()));
        match std::fs::File::open(path) {
            Ok(f) => feeder.read_all(f, stop),
            Err(e) => {
                // Said as a failure, and kept: not "finished", which reads as all went well.
                feeder
                    .health
                    .set_source_state(format!("failed: cannot open {}: {e}", path.display()));
                tracing::error!(path = %path.display(), error = %e, "replay source cannot open its input");
                if !is_fifo(path) {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if !is_fifo(path) {
            feeder
                .health
                .set_source_state(format!("finished {}", path.display()));
            return;
        }
    }
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

/// Run eslogger and read its output; start it again when it ends (see [`Restart`]). A kill is
/// reported to detection, which raises it as tampering.
fn eslogger(feeder: &Feeder, bin: &Path, stop: &AtomicBool) {
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
                feeder
                    .health
                    .set_source_state(format!("running {} (pid {pid})", bin.display()));
                if let Some(out) = child.stdout.take() {
                    feeder.read_all(out, stop);
                }
                let _ = child.kill();
                let status = child.wait();
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                if let Some(signal) = ending_signal(&status) {
                    killed = true;
                    tracing::warn!(pid, signal, "eslogger was killed; restarting at once");
                    // After its events, in order (detection may then name the sender from the
                    // signal event eslogger reported), and never dropped: this send waits.
                    let _ = feeder.tx.send(Msg::SourceKilled {
                        pid,
                        signal,
                        time_ns: crate::wallclock::now_ns(),
                    });
                } else {
                    tracing::warn!(?status, "eslogger exited; restarting");
                }
                feeder.health.set_source_state(format!(
                    "eslogger (pid {pid}) ended ({status:?}); restarting"
                ));
            }
            Err(e) => {
                tracing::error!(bin = %bin.display(), error = %e, "cannot start eslogger");
                feeder
                    .health
                    .set_source_state(format!("cannot start {}: {e}", bin.display()));
            }
        }
        feeder
            .health
            .source_restarts
            .fetch_add(1, Ordering::Relaxed);
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

/// SIP state (macOS): read at start and every minute; reported when first read and when it changes.
#[cfg(target_os = "macos")]
pub(super) fn start_sip(ctl: std::sync::mpsc::Sender<Msg>, stop: Arc<AtomicBool>) {
    let _ = std::thread::Builder::new()
        .name("sip".into())
        .spawn(move || {
            let mut last: Option<u32> = None;
            while !stop.load(Ordering::Relaxed) {
                if let Ok(flags) = crate::source::sip::active_config() {
                    if last != Some(flags) {
                        last = Some(flags);
                        if ctl
                            .send(Msg::Sip(flags, crate::wallclock::now_ns()))
                            .is_err()
                        {
                            return;
                        }
                    }
                }
                for _ in 0..600 {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        });
}
