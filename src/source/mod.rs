//! Event sources: everything that turns outside input into the shared event model, and runs it.
//!
//! - `lines`: bounded line reading and decoding with counts (replay, the FIFO and eslogger sources);
//! - `eslogger`: eslogger's JSON (`json`) and eslogger as a child process (`process`);
//! - `follow`: a file read once, or a FIFO followed across writers;
//! - `es` (macOS): the Endpoint Security client; `sip` (macOS): the SIP configuration, polled.
//!
//! A running source reports through [`Hooks`]; it knows nothing of the daemon's queues or health.

pub mod eslogger;
pub mod follow;
pub mod lines;

#[cfg(target_os = "macos")]
pub mod es;

#[cfg(target_os = "macos")]
pub mod sip;

use std::fmt;
use std::io::BufReader;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::event::{Event, Interest};
use lines::{EventDecoder, LineReader, MAX_LINE};

/// What a running source reports to whoever runs it (the daemon: its event queue and health).
/// Called on the source's own thread, or on Apple's ES queue: must not block, except
/// [`Hooks::killed`], which must not be lost.
pub trait Hooks: Send + Sync {
    /// A decoded event. `false` when nobody takes events any more: the source stops.
    fn event(&self, ev: Event) -> bool;
    /// One line read, an event or not.
    fn line(&self) {}
    /// Lines that were not events.
    fn malformed(&self, _lines: u64) {}
    /// Events the producer dropped, from gaps in its sequence numbers.
    fn sequence_gap(&self, _events: u64) {}
    /// What the source is doing, for people (`kextwatch status`).
    fn state(&self, _state: String) {}
    /// The source started again (eslogger ended and was restarted).
    fn restarted(&self) {}
    /// The eslogger child `pid` was ended by `signal`: after its events, in order.
    fn killed(&self, _pid: u32, _signal: i32, _time_ns: i64) {}
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

/// Decode eslogger lines from `input` until its end, `stop`, or nobody taking events, reporting
/// each event and the counts through `hooks`.
pub fn read_lines<R: std::io::Read>(
    input: R,
    interest: &dyn Interest,
    hooks: &dyn Hooks,
    stop: &AtomicBool,
) {
    let mut decoder = EventDecoder::new(interest);
    let mut reader = LineReader::new(BufReader::with_capacity(1 << 20, input), MAX_LINE);
    let mut last_malformed = 0;
    let mut last_gaps = 0;
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let (line_no, line) = match reader.next_line() {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "event source read failed");
                return;
            }
        };
        hooks.line();
        let ev = decoder.decode(line_no, line);
        let s = &decoder.stats;
        if s.malformed != last_malformed {
            hooks.malformed(s.malformed - last_malformed);
            last_malformed = s.malformed;
        }
        if s.seq_gap_events != last_gaps {
            hooks.sequence_gap(s.seq_gap_events - last_gaps);
            last_gaps = s.seq_gap_events;
        }
        if let Some(ev) = ev {
            if !hooks.event(ev) {
                return;
            }
        }
    }
}
