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
use crate::config::{OutputSpec, TextOrJson};

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

struct WriterSink {
    name: String,
    format: TextOrJson,
    out: BufWriter<Box<dyn Write + Send>>,
}

impl WriterSink {
    fn write(&mut self, alert: &Alert) -> io::Result<()> {
        match self.format {
            TextOrJson::Json => write_json(&mut self.out, alert),
            TextOrJson::Text => write_text(&mut self.out, alert),
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
                OutputSpec::Stdout { format } => outputs.writers.push(WriterSink {
                    name: "stdout".into(),
                    format: *format,
                    out: BufWriter::new(Box::new(io::stdout())),
                }),
                OutputSpec::File { path, format } => outputs.writers.push(WriterSink {
                    name: path.display().to_string(),
                    format: *format,
                    out: BufWriter::new(Box::new(open_append(path)?)),
                }),
                OutputSpec::Syslog(s) => {
                    let file = spool_file.get_or_insert_with(|| spool_path(state_dir));
                    outputs.syslog.push(SyslogSink::open(s, file.as_deref())?);
                }
            }
        }
        Ok(outputs)
    }

    /// Sinks over arbitrary writers (tests, embedding).
    pub fn from_writers(writers: Vec<(String, TextOrJson, Box<dyn Write + Send>)>) -> Outputs {
        let writers = writers
            .into_iter()
            .map(|(name, format, w)| WriterSink {
                name,
                format,
                out: BufWriter::new(w),
            })
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
        let mut first_error = None;
        for s in &mut self.writers {
            if let Err(source) = s.write(alert) {
                first_error.get_or_insert(OutputError::Write {
                    name: s.name.clone(),
                    source,
                });
            }
        }
        for s in &mut self.syslog {
            if let Err(e) = s.alert(alert) {
                first_error.get_or_insert(e.into());
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Give syslog sinks a chance to deliver what they spooled (their backoff decides whether
    /// they try now). The daemon calls this on a timer and once at start.
    pub fn retry(&mut self) -> Result<(), OutputError> {
        let mut first_error = None;
        for s in &mut self.syslog {
            if let Err(e) = s.retry() {
                first_error.get_or_insert(e.into());
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// A heartbeat to every syslog sink (`body`: the counters as JSON).
    pub fn heartbeat(
        &mut self,
        timestamp: &str,
        body: &serde_json::Value,
    ) -> Result<(), OutputError> {
        let body = body.to_string();
        let mut first_error = None;
        for s in &mut self.syslog {
            if let Err(e) = s.heartbeat(timestamp, &body) {
                first_error.get_or_insert(e.into());
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    pub fn flush(&mut self) -> Result<(), OutputError> {
        let mut first_error = None;
        for s in &mut self.writers {
            if let Err(source) = s.out.flush() {
                first_error.get_or_insert(OutputError::Write {
                    name: s.name.clone(),
                    source,
                });
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Flush, and give syslog sinks up to `deadline` to deliver their spools.
    pub fn finish(&mut self, deadline: Duration) -> Result<(), OutputError> {
        let mut first_error = self.flush().err();
        for s in &mut self.syslog {
            if let Err(e) = s.finish(deadline) {
                first_error.get_or_insert(e.into());
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Where each sink stands: names of writer sinks, and syslog counters.
    pub fn report(&self) -> (Vec<String>, Vec<SinkStats>) {
        (
            self.writers.iter().map(|w| w.name.clone()).collect(),
            self.syslog.iter().map(SyslogSink::stats).collect(),
        )
    }
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

/// Alert files are appended to, never truncated, and not readable by other users.
fn open_append(path: &Path) -> Result<File, OutputError> {
    let mut opts = OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o640);
    }
    opts.open(path).map_err(|source| OutputError::Open {
        path: path.to_path_buf(),
        source,
    })
}
