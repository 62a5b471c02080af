//! Alert sinks: stdout and append-only files (syslog arrives in its own module).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::alert::{write_json, write_text, Alert};
use crate::config::{OutputSpec, TextOrJson};

#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error("cannot open alert file {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot write alerts to {name}: {source}")]
    Write { name: String, source: io::Error },
}

struct Sink {
    name: String,
    format: TextOrJson,
    out: BufWriter<Box<dyn Write>>,
}

impl Sink {
    fn write(&mut self, alert: &Alert) -> io::Result<()> {
        match self.format {
            TextOrJson::Json => write_json(&mut self.out, alert),
            TextOrJson::Text => write_text(&mut self.out, alert),
        }
    }
}

/// Every configured sink; an alert goes to each.
pub struct Outputs {
    sinks: Vec<Sink>,
    pub written: u64,
}

impl Outputs {
    pub fn open(specs: &[OutputSpec]) -> Result<Outputs, OutputError> {
        let mut sinks = Vec::new();
        for spec in specs {
            sinks.push(match spec {
                OutputSpec::Stdout { format } => Sink {
                    name: "stdout".into(),
                    format: *format,
                    out: BufWriter::new(Box::new(io::stdout())),
                },
                OutputSpec::File { path, format } => Sink {
                    name: path.display().to_string(),
                    format: *format,
                    out: BufWriter::new(Box::new(open_append(path)?)),
                },
            });
        }
        Ok(Outputs { sinks, written: 0 })
    }

    /// Sinks over arbitrary writers (tests, embedding).
    pub fn from_writers(writers: Vec<(String, TextOrJson, Box<dyn Write>)>) -> Outputs {
        let sinks = writers
            .into_iter()
            .map(|(name, format, w)| Sink {
                name,
                format,
                out: BufWriter::new(w),
            })
            .collect();
        Outputs { sinks, written: 0 }
    }

    pub fn write(&mut self, alert: &Alert) -> Result<(), OutputError> {
        for s in &mut self.sinks {
            s.write(alert).map_err(|source| OutputError::Write {
                name: s.name.clone(),
                source,
            })?;
        }
        self.written += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), OutputError> {
        for s in &mut self.sinks {
            s.out.flush().map_err(|source| OutputError::Write {
                name: s.name.clone(),
                source,
            })?;
        }
        Ok(())
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
