//! Health counters shared by the daemon's threads, and the status file `kextwatch status` reads.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::alert::Severity;
use crate::detect::EngineStats;
use crate::output::{SinkStats, WriterStats};
use crate::text::escape_controls;

/// In the state directory, rewritten every few seconds by the running daemon.
pub const STATUS_FILE: &str = "status.json";

#[derive(Default)]
pub struct Health {
    source: String,
    started: String,
    pub lines: AtomicU64,
    pub decoded: AtomicU64,
    pub dropped: AtomicU64,
    pub malformed: AtomicU64,
    pub seq_gap_events: AtomicU64,
    pub source_restarts: AtomicU64,
    processed: AtomicU64,
    /// Events in the queue to detection (sources add, detection removes).
    queue_depth: AtomicUsize,
    alerts: [AtomicU64; 5],
    config_generation: AtomicU64,
    last_config_error: Mutex<Option<String>>,
    kextpolicy_readable: Mutex<Option<bool>>,
    source_state: Mutex<String>,
    engine: Mutex<EngineStats>,
}

/// Why the status file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("{}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        source: crate::files::ReadError,
    },
    #[error("{}: {source}", path.display())]
    Parse {
        path: std::path::PathBuf,
        source: serde_json::Error,
    },
}

/// A point-in-time view: the status file and the heartbeat body.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub running: bool,
    pub pid: u32,
    pub source: String,
    pub source_state: String,
    pub source_restarts: u64,
    pub started: String,
    pub updated: String,
    pub lines_read: u64,
    pub events_decoded: u64,
    pub events_analysed: u64,
    /// Events the source could not queue (detection behind): lost, counted.
    pub events_dropped: u64,
    pub malformed: u64,
    pub seq_gap_events: u64,
    pub alerts: BTreeMap<String, u64>,
    pub config_generation: u64,
    /// Alerts folded into follow-up counts so far.
    #[serde(default)]
    pub folded: u64,
    pub last_config_error: Option<String>,
    pub kextpolicy_readable: Option<bool>,
    pub outputs: Vec<WriterStats>,
    pub sinks: Vec<SinkStats>,
}

impl Health {
    pub fn new(source: &impl std::fmt::Display) -> Health {
        let h = Health {
            source: source.to_string(),
            started: crate::wallclock::now_rfc3339(),
            ..Default::default()
        };
        h.config_generation.store(1, Relaxed);
        *lock(&h.source_state) = "starting".into();
        h
    }

    /// One queued event analysed.
    pub fn count_processed(&self) {
        self.processed.fetch_add(1, Relaxed);
        self.queue_depth.fetch_sub(1, Relaxed);
    }

    /// How many more events the queue to detection may take. The daemon's one source thread is
    /// the only one adding, and detection only removes, so the room can only grow before
    /// [`Self::queued`] takes it.
    pub fn queue_room(&self, limit: usize) -> usize {
        limit.saturating_sub(self.queue_depth.load(Relaxed))
    }

    pub fn queued(&self, events: usize) {
        self.queue_depth.fetch_add(events, Relaxed);
    }

    /// Events counted by [`Self::queued`] that never reached the queue.
    pub fn release_queue(&self, events: usize) {
        self.queue_depth.fetch_sub(events, Relaxed);
    }

    pub fn count_alert(&self, s: Severity) {
        self.alerts[s as usize].fetch_add(1, Relaxed);
    }

    pub fn config_reloaded(&self) {
        self.config_generation.fetch_add(1, Relaxed);
        *lock(&self.last_config_error) = None;
    }

    pub fn config_rejected(&self, e: &str) {
        *lock(&self.last_config_error) = Some(e.to_string());
    }

    pub fn set_kextpolicy_readable(&self, r: bool) {
        *lock(&self.kextpolicy_readable) = Some(r);
    }

    pub fn set_source_state(&self, s: impl Into<String>) {
        *lock(&self.source_state) = s.into();
    }

    pub fn set_engine(&self, e: EngineStats) {
        *lock(&self.engine) = e;
    }

    pub fn snapshot(&self, (outputs, sinks): crate::output::OutputsReport) -> Status {
        Status {
            running: true,
            pid: std::process::id(),
            source: self.source.clone(),
            source_state: lock(&self.source_state).clone(),
            source_restarts: self.source_restarts.load(Relaxed),
            started: self.started.clone(),
            updated: crate::wallclock::now_rfc3339(),
            lines_read: self.lines.load(Relaxed),
            events_decoded: self.decoded.load(Relaxed),
            events_analysed: self.processed.load(Relaxed),
            events_dropped: self.dropped.load(Relaxed),
            malformed: self.malformed.load(Relaxed),
            seq_gap_events: self.seq_gap_events.load(Relaxed),
            alerts: Severity::ALL
                .iter()
                .map(|s| {
                    (
                        s.as_str().to_string(),
                        self.alerts[*s as usize].load(Relaxed),
                    )
                })
                .collect(),
            config_generation: self.config_generation.load(Relaxed),
            folded: lock(&self.engine).folded,
            last_config_error: lock(&self.last_config_error).clone(),
            kextpolicy_readable: *lock(&self.kextpolicy_readable),
            outputs,
            sinks,
        }
    }
}

/// A poisoned lock only means another thread panicked while holding it; the value is still usable.
pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Status {
    /// Replace the status file atomically, readable by its owner and group only, like alert files.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        serde_json::to_vec_pretty(self)
            .map_err(std::io::Error::other)
            .and_then(|b| {
                crate::files::replace_file(path, &b, 0o640, crate::files::Durability::Cached)
            })
    }

    pub fn read(path: &Path) -> Result<Status, StatusError> {
        // Our own file, in a folder only root writes: a symlink, a FIFO or a huge file there was
        // planted, and must neither hang `kextwatch status` nor be followed.
        let text = crate::files::read_regular_text(path, 1 << 20, crate::files::Links::Refuse)
            .map_err(|source| StatusError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        serde_json::from_str(&text).map_err(|source| StatusError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// For a terminal: every string from the file has its control characters escaped. `stale`:
    /// the file says running, but no daemon holds the instance lock (it was killed).
    pub fn render(&self, stale: bool) -> String {
        let s = self;
        let e = |x: &str| escape_controls(x).into_owned();
        let mut out = format!(
            "kextwatch {} (pid {}), since {}, updated {}\n",
            match (s.running, stale) {
                (true, _) => "running",
                (false, true) => "NOT running (killed: the status file was never closed)",
                (false, false) => "stopped",
            },
            s.pid,
            e(&s.started),
            e(&s.updated)
        );
        out += &format!(
            "source {}: {} (restarts {})\n",
            e(&s.source),
            e(&s.source_state),
            s.source_restarts
        );
        out += &format!(
            "events: {} lines, {} analysed, {} dropped (queue full), {} malformed, {} missing by sequence gaps\n",
            s.lines_read, s.events_analysed, s.events_dropped, s.malformed, s.seq_gap_events
        );
        let alerts: Vec<String> = Severity::ALL
            .iter()
            .rev()
            .map(|sev| format!("{sev} {}", s.alerts.get(sev.as_str()).copied().unwrap_or(0)))
            .collect();
        out += &format!("alerts: {}\n", alerts.join(", "));
        out += &format!("config generation {}", s.config_generation);
        if let Some(err) = &s.last_config_error {
            out += &format!(" (last reload rejected: {})", e(err));
        }
        out += "\n";
        match s.kextpolicy_readable {
            Some(true) => out += "KextPolicy: readable\n",
            Some(false) => out += "KextPolicy: NOT readable\n",
            None => {}
        }
        let last_error = |err: &Option<String>| {
            err.as_deref()
                .map(|x| format!(", last error: {}", e(x)))
                .unwrap_or_default()
        };
        for o in &s.outputs {
            out += &format!(
                "output {}: {} written, {} lost{}\n",
                e(&o.name),
                o.written,
                o.lost,
                last_error(&o.last_error)
            );
        }
        for k in &s.sinks {
            out += &format!(
                "output {}: {} written, {} spooled now, {} evicted, {} lost{}\n",
                e(&k.name),
                k.written,
                k.spool_depth,
                k.spool_evicted,
                k.lost,
                last_error(&k.last_error)
            );
        }
        out
    }

    /// The heartbeat sent to each syslog sink: an ECS metric document naming `host`.
    /// What a heartbeat reports of the daemon now.
    pub fn heartbeat(&self) -> crate::output::HeartbeatCounters {
        crate::output::HeartbeatCounters {
            source: self.source.clone(),
            source_state: Some(self.source_state.clone()),
            lines: self.lines_read,
            events_analysed: self.events_analysed,
            events_skipped: self
                .lines_read
                .saturating_sub(self.events_decoded)
                .saturating_sub(self.malformed),
            dropped: self.events_dropped,
            malformed: self.malformed,
            drops_seq_gaps: self.seq_gap_events,
            restarts: self.source_restarts,
            alerts: self.alerts.clone(),
            folded: self.folded,
            outputs: self.outputs.clone(),
            sinks: self.sinks.clone(),
            kextpolicy_readable: self.kextpolicy_readable,
            config_generation: self.config_generation,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_text_escapes_what_came_from_outside() {
        let h = Health::new(&"replay:/dev/null");
        let mut s = h.snapshot((
            vec![WriterStats {
                name: "/var/log/evil\nkextwatch running (pid 1)".into(),
                last_error: Some("\u{1b}[2J".into()),
                ..WriterStats::default()
            }],
            Vec::new(),
        ));
        s.source_state = "finished\r".into();
        let text = s.render(false);
        assert!(!text.contains('\u{1b}') && !text.contains('\r'), "{text:?}");
        // Every line is one the renderer wrote: a newline in a name cannot forge another.
        assert_eq!(
            text.lines().filter(|l| l.starts_with("kextwatch ")).count(),
            1
        );
        assert!(text.contains("output /var/log/evil\\nkextwatch running (pid 1): 0 written, 0 lost, last error: \\u{1b}[2J"), "{text}");
        assert!(
            text.contains("source replay:/dev/null: finished\\r"),
            "{text}"
        );
    }

    #[test]
    fn heartbeats_carry_every_output_s_losses() {
        let h = Health::new(&"eslogger");
        let status = h.snapshot((
            vec![WriterStats {
                name: "/var/log/kextwatch/alerts.jsonl".into(),
                written: 7,
                lost: 3,
                last_error: Some("No space left on device (os error 28)".into()),
            }],
            vec![SinkStats {
                name: "syslog tcp://siem:6514".into(),
                lost: 2,
                ..SinkStats::default()
            }],
        ));
        let mut beat = crate::alert::ecs::Beat::new_run(Some("B1".into()));
        let hb = status.heartbeat().document(
            "2026-11-26T12:00:00Z",
            &crate::alert::Host::named("mac-17"),
            beat.advance(),
        );
        assert_eq!(hb["event"]["sequence"], 1);
        assert_eq!(hb["host"]["boot"]["id"], "B1");
        assert_eq!(hb["agent"]["ephemeral_id"], beat.run_id.as_str());
        let k = &hb["kextwatch"];
        assert_eq!(k["outputs"][0]["written"], 7);
        assert_eq!(k["outputs"][0]["lost"], 3);
        assert_eq!(k["sinks"][0]["lost"], 2);
    }
}
