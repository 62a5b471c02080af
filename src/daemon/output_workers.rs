//! One thread and one bounded queue per configured output, so a slow, dead or failing output never
//! delays, drops or reorders another's deliveries. Each worker retries its own spool on a timer and
//! publishes its counters; a full queue drops for that output only, counted.

use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::health::lock;
use crate::alert::Alert;
use crate::output::{Outputs, OutputsReport};

/// Alerts an output may fall behind by before its own alerts are dropped (and counted).
const QUEUE: usize = 10_000;
/// How often a worker with nothing to write retries its spool (its backoff decides whether a
/// retry actually connects).
const RETRY_TICK: Duration = Duration::from_millis(250);

enum Job {
    Alert(Arc<Alert>),
    Heartbeat(Arc<(String, serde_json::Value)>),
}

struct Worker {
    name: String,
    tx: SyncSender<Job>,
    report: Arc<Mutex<OutputsReport>>,
    /// Alerts dropped because this output's queue was full.
    queue_dropped: u64,
    handle: JoinHandle<()>,
}

pub struct OutputWorkers {
    workers: Vec<Worker>,
}

/// Logs a failure that repeats (an alert output, the status file) when it starts or changes, not
/// every time; says how many times it repeated when it clears.
pub(super) struct RepeatedError {
    what: &'static str,
    last: Option<String>,
    repeats: u64,
}

impl RepeatedError {
    pub(super) fn new(what: &'static str) -> RepeatedError {
        RepeatedError {
            what,
            last: None,
            repeats: 0,
        }
    }

    pub(super) fn note<E: std::fmt::Display>(&mut self, result: Result<(), E>) {
        match result {
            Err(e) => {
                let e = e.to_string();
                if self.last.as_deref() == Some(e.as_str()) {
                    self.repeats += 1;
                } else {
                    tracing::error!(error = %e, "{} failed", self.what);
                    self.last = Some(e);
                    self.repeats = 0;
                }
            }
            Ok(()) => {
                if let Some(e) = self.last.take() {
                    tracing::info!(error = %e, repeats = self.repeats, "{} recovered", self.what);
                }
            }
        }
    }
}

fn publish(out: &Outputs, report: &Mutex<OutputsReport>) {
    *lock(report) = out.report();
}

fn work(
    mut out: Outputs,
    rx: mpsc::Receiver<Job>,
    report: &Mutex<OutputsReport>,
    deadline: Duration,
) {
    let mut write_failing = RepeatedError::new("alert output");
    let mut retry_failing = RepeatedError::new("alert output retry");
    // What a previous run spooled goes out at start, not with the first new alert.
    retry_failing.note(out.retry());
    publish(&out, report);
    loop {
        match rx.recv_timeout(RETRY_TICK) {
            Ok(Job::Alert(a)) => {
                // Alerts are rare: each is flushed, so files and stdout show it at once.
                write_failing.note(out.write_now(&a));
            }
            Ok(Job::Heartbeat(hb)) => {
                if let Err(e) = out.heartbeat(&hb.0, &hb.1) {
                    tracing::warn!(error = %e, "heartbeat failed");
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        // Spooled alerts go out once the receiver is back, without waiting for new ones.
        retry_failing.note(out.retry());
        publish(&out, report);
    }
    if let Err(e) = out.finish(deadline) {
        tracing::error!(error = %e, "alert output could not finish");
    }
    publish(&out, report);
}

impl OutputWorkers {
    /// Start one worker per output; each gets up to `deadline` to deliver at stop.
    pub fn start(outputs: Outputs, deadline: Duration) -> std::io::Result<OutputWorkers> {
        let mut workers = Vec::new();
        for out in outputs.into_each() {
            let report = out.report();
            let name = report
                .0
                .first()
                .map(|w| w.name.clone())
                .or_else(|| report.1.first().map(|s| s.name.clone()))
                .unwrap_or_default();
            let report = Arc::new(Mutex::new(report));
            let (tx, rx) = mpsc::sync_channel(QUEUE);
            let shared = report.clone();
            let handle = std::thread::Builder::new()
                .name(format!("output {name}"))
                .spawn(move || work(out, rx, &shared, deadline))?;
            workers.push(Worker {
                name,
                tx,
                report,
                queue_dropped: 0,
                handle,
            });
        }
        Ok(OutputWorkers { workers })
    }

    /// Hand `alert` to every output without waiting for any of them.
    pub fn alert(&mut self, alert: Alert) {
        let alert = Arc::new(alert);
        for w in &mut self.workers {
            match w.tx.try_send(Job::Alert(alert.clone())) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    if w.queue_dropped == 0 {
                        tracing::error!(output = %w.name, "alert output is {QUEUE} alerts behind: dropping its alerts (counted) until it catches up");
                    }
                    w.queue_dropped += 1;
                }
                Err(TrySendError::Disconnected(_)) => w.queue_dropped += 1,
            }
        }
    }

    /// A heartbeat to every output (syslog outputs send it; others ignore it). Never blocks: a
    /// heartbeat an output has no room for is skipped.
    pub fn heartbeat(&self, timestamp: String, body: serde_json::Value) {
        let hb = Arc::new((timestamp, body));
        for w in &self.workers {
            let _ = w.tx.try_send(Job::Heartbeat(hb.clone()));
        }
    }

    /// Every output's report, as the status file and heartbeats show them.
    pub fn report(&self) -> OutputsReport {
        merged(self.workers.iter().map(|w| (&*w.report, w.queue_dropped)))
    }

    /// Close every queue and wait for the workers to deliver, all at once, for at most `wait`
    /// (their own deadline, plus a margin); the final report. A worker still blocked then (an
    /// output that hangs on write) is left behind and named, so a stop never hangs on one output.
    pub fn finish(self, wait: Duration) -> OutputsReport {
        let (mut handles, mut parts) = (Vec::new(), Vec::new());
        for w in self.workers {
            drop(w.tx);
            handles.push((w.name, w.handle));
            parts.push((w.report, w.queue_dropped));
        }
        let end = std::time::Instant::now() + wait;
        while handles.iter().any(|(_, h)| !h.is_finished()) && std::time::Instant::now() < end {
            std::thread::sleep(Duration::from_millis(20));
        }
        for (name, h) in handles {
            if h.is_finished() {
                // A worker that panicked published what it had; its output is done either way.
                let _ = h.join();
            } else {
                tracing::error!(output = %name, "alert output still blocked at stop: leaving it");
            }
        }
        merged(parts.iter().map(|(r, dropped)| (&**r, *dropped)))
    }
}

/// Reports side by side; alerts an output's queue had no room for count as lost for it.
fn merged<'a>(parts: impl Iterator<Item = (&'a Mutex<OutputsReport>, u64)>) -> OutputsReport {
    let (mut writers, mut syslog) = (Vec::new(), Vec::new());
    for (report, dropped) in parts {
        let (w, s) = lock(report).clone();
        writers.extend(w.into_iter().map(|mut w| {
            w.lost += dropped;
            w
        }));
        syslog.extend(s.into_iter().map(|mut s| {
            s.lost += dropped;
            s
        }));
    }
    (writers, syslog)
}
