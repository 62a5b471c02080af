//! Alert sinks: stdout, append-only files, and syslog (UDP/TCP/TLS, JSON or CEF payload) with a
//! durable spool. Encoding (`syslog`, `cef`) is separate from writing (`transport`, `sink`).

mod cef;
mod sink;
mod spool;
pub mod syslog;
pub mod transport;

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use sink::{SinkError, SinkStats, SyslogSink};

pub use transport::{Transport, TransportError, TRUNCATION_MARKER};

use crate::alert::{write_json, write_text, Alert};
use crate::config::{AlertFormat, OutputSpec};
use crate::files::FileId;

/// Counters of every output: stdout and files, then syslog sinks.
pub type OutputsReport = (Vec<WriterStats>, Vec<SinkStats>);

/// The spool file in the state directory, shared by all syslog sinks.
pub const SPOOL_FILE: &str = "alert-spool.sqlite";

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot open alert file {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot write alerts to {name}: {source}")]
    Write { name: String, source: io::Error },
    #[error(transparent)]
    Syslog(#[from] SinkError),
}

/// What every heartbeat reports, from `kextwatch replay` and from the daemon alike: one document
/// format for the SIEM (`event.kind: metric`, the counters under `kextwatch.`).
#[derive(Debug, Clone, Default)]
pub struct HeartbeatCounters {
    /// The source (`replay`, `eslogger`, `es`, `replay:PATH`) and what it is doing, if it says.
    pub source: String,
    pub source_state: Option<String>,
    pub lines: u64,
    pub events_analysed: u64,
    /// Lines that were not events for detection (other event types, blank lines).
    pub events_skipped: u64,
    /// Events lost because detection was behind (the daemon's full queue).
    pub dropped: u64,
    pub malformed: u64,
    /// Events the producer dropped, from sequence-number gaps.
    pub drops_seq_gaps: u64,
    pub restarts: u64,
    /// Alerts by severity name.
    pub alerts: std::collections::BTreeMap<String, u64>,
    pub folded: u64,
    /// Stdout and files: an alert file on a full disk shows here as lost.
    pub outputs: Vec<WriterStats>,
    pub sinks: Vec<SinkStats>,
    /// `None` when no KextPolicy is watched.
    pub kextpolicy_readable: Option<bool>,
    /// Configs loaded (1 until a reload).
    pub config_generation: u64,
}

impl HeartbeatCounters {
    /// The heartbeat as an ECS document.
    pub fn document(
        &self,
        timestamp: &str,
        host: &crate::alert::Host,
        beat: &crate::alert::ecs::Beat,
    ) -> serde_json::Value {
        let alerts: u64 = self.alerts.values().sum();
        let state = self
            .source_state
            .as_deref()
            .map(|s| format!(" {s}"))
            .unwrap_or_default();
        let message = format!(
            "kextwatch heartbeat: source {}{state}, {} events analysed, {alerts} alerts",
            self.source, self.events_analysed
        );
        let mut source = serde_json::json!({
            "lines": self.lines,
            "events_analysed": self.events_analysed,
            "events_skipped": self.events_skipped,
            "dropped": self.dropped,
            "malformed": self.malformed,
            "drops_seq_gaps": self.drops_seq_gaps,
            "restarts": self.restarts,
        });
        if let Some(state) = &self.source_state {
            source["state"] = state.clone().into();
        }
        crate::alert::ecs::heartbeat(
            timestamp,
            host,
            beat,
            &message,
            serde_json::json!({
                "sources": {self.source.clone(): source},
                "alerts": self.alerts,
                "folded": self.folded,
                "sinks": self.sinks,
                "outputs": self.outputs,
                "kextpolicy_readable": self.kextpolicy_readable,
                "config_generation": self.config_generation,
            }),
        )
    }
}

/// Counters of a stdout or file output (status file, heartbeats).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WriterStats {
    pub name: String,
    pub written: u64,
    /// Alerts that could not be written (full disk, closed pipe, queue full): not in the output.
    pub lost: u64,
    pub last_error: Option<String>,
}

struct WriterSink {
    stats: WriterStats,
    format: AlertFormat,
    out: BufWriter<Box<dyn Write + Send>>,
    /// For an alert file: its path and the file open now, to follow a rotation.
    file: Option<FileIdentity>,
}

/// An alert file's path and the file open for it.
struct FileIdentity {
    path: PathBuf,
    open: Option<FileId>,
}

impl FileIdentity {
    /// Whether the path no longer names the open file: newsyslog (or an admin) renamed or removed
    /// it, and writing on would put alerts where nobody rotates or reads them.
    fn moved(&self) -> bool {
        self.open.is_some() && identity(&std::fs::metadata(&self.path)) != self.open
    }
}

fn identity(m: &io::Result<std::fs::Metadata>) -> Option<FileId> {
    m.as_ref().ok().map(FileId::of)
}

impl WriterSink {
    fn new(name: String, format: AlertFormat, out: Box<dyn Write + Send>) -> WriterSink {
        WriterSink {
            stats: WriterStats {
                name,
                ..WriterStats::default()
            },
            format,
            out: BufWriter::new(out),
            file: None,
        }
    }

    fn file(path: &Path, format: AlertFormat) -> Result<WriterSink, OutputError> {
        let file = open_append(path)?;
        let open = identity(&file.metadata());
        let mut sink = WriterSink::new(path.display().to_string(), format, Box::new(file));
        sink.file = Some(FileIdentity {
            path: path.to_path_buf(),
            open,
        });
        Ok(sink)
    }

    /// After a rotation, continue in a new file at the path. If it cannot be opened, alerts keep
    /// going to the old file (not lost), and the error is recorded.
    fn follow_rotation(&mut self) {
        let Some(f) = self.file.as_mut().filter(|f| f.moved()) else {
            return;
        };
        match open_append(&f.path) {
            Ok(file) => {
                // What is buffered belongs to the old file, written before the rotation.
                let _ = self.out.flush();
                f.open = identity(&file.metadata());
                self.out = BufWriter::new(Box::new(file));
                tracing::info!(path = %f.path.display(), "alert file rotated: writing a new one");
            }
            Err(e) => {
                tracing::warn!(error = %e, "alert file rotated and cannot be reopened: writing on to the old one");
                // Tried again at the next alert.
                self.stats.last_error = Some(e.to_string());
            }
        }
    }

    /// Write one alert; with `now`, also flush, so it is counted only once it left the buffer.
    fn write(&mut self, alert: &Alert, now: bool) -> Result<(), OutputError> {
        self.follow_rotation();
        let written = match self.format {
            AlertFormat::Json => write_json(&mut self.out, alert),
            AlertFormat::Text => write_text(&mut self.out, alert),
            AlertFormat::Cef => writeln!(self.out, "{}", cef::alert(alert)),
        }
        .and_then(|()| if now { self.out.flush() } else { Ok(()) });
        match written {
            Ok(()) => {
                self.stats.written += 1;
                Ok(())
            }
            Err(source) => {
                self.stats.lost += 1;
                self.stats.last_error = Some(source.to_string());
                Err(OutputError::Write {
                    name: self.stats.name.clone(),
                    source,
                })
            }
        }
    }
}

/// Every configured sink; an alert goes to each.
pub struct Outputs {
    writers: Vec<WriterSink>,
    syslog: Vec<SyslogSink>,
}

impl Outputs {
    /// Open the sinks. Syslog sinks spool into `state_dir` (created if needed); without one, or if it
    /// cannot be created, the spool lives in memory and does not survive a restart (logged).
    pub fn open(specs: &[OutputSpec], state_dir: Option<&Path>) -> Result<Outputs, OutputError> {
        let mut outputs = Outputs {
            writers: Vec::new(),
            syslog: Vec::new(),
        };
        let mut spool_file: Option<Option<PathBuf>> = None;
        for spec in specs {
            match spec {
                OutputSpec::Stdout { format } => outputs.writers.push(WriterSink::new(
                    "stdout".into(),
                    *format,
                    Box::new(io::stdout()),
                )),
                OutputSpec::File { path, format } => {
                    outputs.writers.push(WriterSink::file(path, *format)?)
                }
                OutputSpec::Syslog(s) => {
                    let file = spool_file.get_or_insert_with(|| spool_path(state_dir));
                    outputs.syslog.push(SyslogSink::open(s, file.as_deref())?);
                }
            }
        }
        Ok(outputs)
    }

    /// One `Outputs` per configured sink, so each can run on its own thread (the daemon: a slow
    /// or dead output must not delay another's deliveries).
    pub fn into_each(self) -> Vec<Outputs> {
        let writers = self.writers.into_iter().map(|w| Outputs {
            writers: vec![w],
            syslog: Vec::new(),
        });
        let syslog = self.syslog.into_iter().map(|s| Outputs {
            writers: Vec::new(),
            syslog: vec![s],
        });
        writers.chain(syslog).collect()
    }

    /// Sinks over arbitrary writers (tests, embedding).
    pub fn from_writers(writers: Vec<(String, AlertFormat, Box<dyn Write + Send>)>) -> Outputs {
        let writers = writers
            .into_iter()
            .map(|(name, format, w)| WriterSink::new(name, format, w))
            .collect();
        Outputs {
            writers,
            syslog: Vec::new(),
        }
    }

    /// Offer `alert` to every sink. One failing sink does not keep the alert from the others
    /// (a full disk under an alert file must not silence syslog); the first failure is returned
    /// once all were tried.
    pub fn write(&mut self, alert: &Alert) -> Result<(), OutputError> {
        self.offer(alert, false)
    }

    /// As `write`, and stdout and files are flushed at once, so each alert is visible, and
    /// counted written or lost, as it comes (the daemon; alerts are rare there).
    pub fn write_now(&mut self, alert: &Alert) -> Result<(), OutputError> {
        self.offer(alert, true)
    }

    fn offer(&mut self, alert: &Alert, now: bool) -> Result<(), OutputError> {
        let writers = self.writers.iter_mut().map(|s| s.write(alert, now));
        let syslog = self.syslog.iter_mut().map(|s| Ok(s.alert(alert)?));
        first_error(writers.chain(syslog))
    }

    /// Give syslog sinks a chance to deliver what they spooled (their backoff decides whether
    /// they try now). The daemon calls this on a timer and once at start.
    pub fn retry(&mut self) -> Result<(), OutputError> {
        first_error(self.syslog.iter_mut().map(|s| Ok(s.retry()?)))
    }

    /// A heartbeat to every syslog sink (`body`: the counters as JSON).
    pub fn heartbeat(
        &mut self,
        timestamp: &str,
        body: &serde_json::Value,
    ) -> Result<(), OutputError> {
        let body = body.to_string();
        first_error(
            self.syslog
                .iter_mut()
                .map(|s| Ok(s.heartbeat(timestamp, &body)?)),
        )
    }

    pub fn flush(&mut self) -> Result<(), OutputError> {
        first_error(self.writers.iter_mut().map(|s| {
            s.out.flush().map_err(|source| {
                s.stats.last_error = Some(source.to_string());
                OutputError::Write {
                    name: s.stats.name.clone(),
                    source,
                }
            })
        }))
    }

    /// Flush, and give syslog sinks up to `deadline` to deliver their spools.
    pub fn finish(&mut self, deadline: Duration) -> Result<(), OutputError> {
        let flushed = self.flush();
        let syslog = self.syslog.iter_mut().map(|s| Ok(s.finish(deadline)?));
        first_error(std::iter::once(flushed).chain(syslog))
    }

    /// Where each sink stands: stdout/file counters, and syslog counters.
    pub fn report(&self) -> OutputsReport {
        (
            self.writers.iter().map(|w| w.stats.clone()).collect(),
            self.syslog.iter().map(SyslogSink::stats).collect(),
        )
    }
}

/// Run every result to the end (one failing sink must not keep the others from their turn) and
/// return the first failure.
fn first_error(results: impl Iterator<Item = Result<(), OutputError>>) -> Result<(), OutputError> {
    let mut first = Ok(());
    for r in results {
        if first.is_ok() {
            first = r;
        }
    }
    first
}

fn spool_path(state_dir: Option<&Path>) -> Option<PathBuf> {
    let dir = state_dir?;
    match std::fs::create_dir_all(dir) {
        Ok(()) => Some(dir.join(SPOOL_FILE)),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "state directory unusable: the alert spool is in memory and will not survive a restart");
            None
        }
    }
}

/// Alert files are appended to, never truncated, and not readable by other users. Opened without
/// blocking, so a FIFO nobody reads is an error at start, not a daemon that never starts; writes
/// then block as usual (a FIFO's reader sets the pace for that output only).
fn open_append(path: &Path) -> Result<File, OutputError> {
    let err = |source| OutputError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut opts = OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o640).custom_flags(libc::O_NONBLOCK);
    }
    let file = opts.open(path).map_err(err)?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: fcntl on a descriptor this function owns.
        let fd = file.as_raw_fd();
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
            return Err(err(io::Error::last_os_error()));
        }
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer whose bytes the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);
    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A disk that is full.
    struct Full;
    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::from_raw_os_error(28))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::from_raw_os_error(28))
        }
    }

    #[test]
    fn an_alert_file_rotated_or_removed_is_followed_to_a_new_file_at_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("alerts.jsonl");
        let spec = OutputSpec::File {
            path: path.clone(),
            format: AlertFormat::Json,
        };
        let mut out = Outputs::open(&[spec], None).unwrap();
        let alert = |host: &str| {
            crate::alert::test_alert(
                "2026-11-25T14:03:12Z".into(),
                crate::alert::Host::named(host),
            )
        };
        let lines = |p: &Path| -> Vec<String> {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(|l| {
                    let v: serde_json::Value = serde_json::from_str(l).unwrap();
                    v["host"]["name"].as_str().unwrap().to_string()
                })
                .collect()
        };
        out.write_now(&alert("a")).unwrap();
        out.write_now(&alert("b")).unwrap();
        // newsyslog renames the file (and creates an empty one, or not).
        let rotated = dir.path().join("alerts.jsonl.0");
        std::fs::rename(&path, &rotated).unwrap();
        out.write_now(&alert("c")).unwrap();
        assert_eq!(lines(&rotated), ["a", "b"]);
        assert_eq!(lines(&path), ["c"]);
        // Removed outright: a new file, not an unlinked one nobody can read.
        std::fs::remove_file(&path).unwrap();
        out.write_now(&alert("d")).unwrap();
        assert_eq!(lines(&path), ["d"]);
        // The folder gone: alerts stay in the file still open, and the error is recorded.
        let moved = tempfile::tempdir().unwrap();
        std::fs::rename(dir.path(), moved.path().join("d")).unwrap();
        out.write_now(&alert("e")).unwrap();
        assert_eq!(lines(&moved.path().join("d/alerts.jsonl")), ["d", "e"]);
        let (writers, _) = out.report();
        assert_eq!((writers[0].written, writers[0].lost), (5, 0));
        assert!(writers[0].last_error.is_some());
    }

    #[test]
    fn each_writer_counts_what_it_wrote_and_lost_and_one_failing_keeps_nothing_from_another() {
        let good = Shared::default();
        let mut out = Outputs::from_writers(vec![
            ("full".into(), AlertFormat::Json, Box::new(Full)),
            ("good".into(), AlertFormat::Json, Box::new(good.clone())),
        ]);
        let alert = crate::alert::test_alert(
            "2026-11-25T14:03:12Z".into(),
            crate::alert::Host::named("mac"),
        );
        for _ in 0..3 {
            let e = out.write_now(&alert).unwrap_err().to_string();
            assert!(e.starts_with("cannot write alerts to full:"), "{e}");
        }
        let (writers, syslog) = out.report();
        assert!(syslog.is_empty());
        assert_eq!(
            writers
                .iter()
                .map(|w| (w.name.as_str(), w.written, w.lost))
                .collect::<Vec<_>>(),
            [("full", 0, 3), ("good", 3, 0)]
        );
        assert!(writers[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("No space left"));
        // Flushed at once: all three are in the good writer already.
        let text = String::from_utf8(good.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 3);

        // One Outputs per sink, in order, each reporting only itself.
        let each = out.into_each();
        let names: Vec<Vec<String>> = each
            .iter()
            .map(|o| o.report().0.into_iter().map(|w| w.name).collect())
            .collect();
        assert_eq!(names, [vec!["full".to_string()], vec!["good".to_string()]]);
    }

    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;

    #[cfg(unix)]
    #[test]
    fn a_fifo_output_opens_without_waiting_and_then_writes_blocking() {
        use std::os::fd::AsRawFd as _;
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("alerts");
        crate::files::make_fifo(&fifo);
        // Nobody reads: an error at once (ENXIO), not a daemon that never starts.
        assert!(open_append(&fifo).is_err());
        // With a reader, it opens; its writes then block like any file's (a full pipe waits for
        // the reader instead of failing with EAGAIN and losing alerts).
        let _reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let f = open_append(&fifo).unwrap();
        let flags = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0);
    }
}
