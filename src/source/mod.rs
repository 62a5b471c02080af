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
    /// Events decoded one after the other, handed over together (see [`read_lines`]).
    fn events(&self, batch: Vec<Event>) -> bool {
        batch.into_iter().all(|ev| self.event(ev))
    }
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
    // Events go over together while more lines are already read, so a busy source wakes the
    // detection thread once per batch, not per event; they are handed over before any read that
    // could wait, so no event ever waits for the next one to arrive.
    let mut batch = Vec::new();
    loop {
        if !batch.is_empty()
            && (batch.len() >= EVENT_BATCH || !reader.line_ready())
            && !hooks.events(std::mem::take(&mut batch))
        {
            return;
        }
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let (line_no, line) = match reader.next_line() {
            Ok(Some(l)) => l,
            Ok(None) => break,
            Err(e) => {
                tracing::warn!(error = %e, "event source read failed");
                break;
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
        batch.extend(ev);
    }
    if !batch.is_empty() {
        hooks.events(batch);
    }
}

/// At most this many events go to [`Hooks::events`] at once.
const EVENT_BATCH: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Recorder {
        batches: Mutex<Vec<usize>>,
    }
    impl Hooks for Recorder {
        fn event(&self, _: Event) -> bool {
            panic!("read_lines hands events over with `events`")
        }
        fn events(&self, batch: Vec<Event>) -> bool {
            self.batches.lock().unwrap().push(batch.len());
            true
        }
    }
    impl Recorder {
        fn handed_over(&self) -> usize {
            self.batches.lock().unwrap().iter().sum()
        }
    }

    /// A pipe whose writer sends one chunk at a time: each read returns the next chunk, and notes
    /// how many events had been handed over when the read began (a FIFO reader would wait there).
    struct Chunks {
        chunks: std::vec::IntoIter<Vec<u8>>,
        recorder: Arc<Recorder>,
        seen_at_read: Arc<Mutex<Vec<usize>>>,
    }
    impl std::io::Read for Chunks {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let handed = self.recorder.handed_over();
            self.seen_at_read.lock().unwrap().push(handed);
            let Some(chunk) = self.chunks.next() else {
                return Ok(0);
            };
            assert!(chunk.len() <= buf.len());
            buf[..chunk.len()].copy_from_slice(&chunk);
            Ok(chunk.len())
        }
    }

    #[test]
    fn events_are_batched_but_handed_over_before_any_read_that_could_wait() {
        // Three writes of the sample's first 150 lines twice over: more than a batch of events
        // each, less than the reader's buffer.
        let sample: String = include_str!("../../examples/kext-attack.jsonl")
            .lines()
            .take(150)
            .map(|l| format!("{l}\n"))
            .collect();
        let chunks = vec![sample.repeat(2).into_bytes(); 3];
        let events_in = |chunk: &[u8]| {
            std::str::from_utf8(chunk)
                .unwrap()
                .lines()
                .filter(|l| {
                    matches!(
                        eslogger::decode_line(l, &crate::event::AllEvents),
                        Ok(eslogger::Decoded::Event(_))
                    )
                })
                .count()
        };
        let per_chunk: Vec<usize> = chunks.iter().map(|c| events_in(c)).collect();
        assert!(per_chunk.iter().all(|n| *n > EVENT_BATCH), "{per_chunk:?}");

        let recorder = Arc::new(Recorder::default());
        let seen_at_read = Arc::new(Mutex::new(Vec::new()));
        let input = Chunks {
            chunks: chunks.into_iter(),
            recorder: recorder.clone(),
            seen_at_read: seen_at_read.clone(),
        };
        read_lines(
            input,
            &crate::event::AllEvents,
            &*recorder,
            &AtomicBool::new(false),
        );

        // Before each read, everything the chunks before it held was handed over.
        let expected: Vec<usize> = std::iter::once(0)
            .chain(per_chunk.iter().scan(0, |sum, n| {
                *sum += n;
                Some(*sum)
            }))
            .collect();
        assert_eq!(*seen_at_read.lock().unwrap(), expected);
        // Together, but never more than a batch at once.
        let batches = recorder.batches.lock().unwrap().clone();
        assert!(
            batches.iter().all(|n| (1..=EVENT_BATCH).contains(n)),
            "{batches:?}"
        );
        assert!(
            batches.len() < per_chunk.iter().sum::<usize>() / 8,
            "{batches:?}"
        );
    }
}
