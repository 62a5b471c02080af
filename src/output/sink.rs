//! A syslog sink: encoder + transport + spool, with reconnect backoff. Delivery order is the order
//! alerts were offered; what cannot be written goes to the spool and is written first when the
//! receiver is back.

use std::time::{Duration, Instant};

use super::spool::{Spool, SpoolError};
use super::syslog::{Encoder, SD_ID};
use super::transport::{Transport, TransportError};
use crate::alert::{Alert, Severity};
use crate::config::SyslogSpec;

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const DRAIN_BATCH: usize = 512;

/// Counters a sink reports (summary, heartbeat, test-alert).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SinkStats {
    pub name: String,
    /// Messages written to a connection (resends included).
    pub written: u64,
    /// Messages that went through the spool.
    pub spooled: u64,
    pub failures: u64,
    pub truncated: u64,
    pub spool_depth: u64,
    pub spool_bytes: u64,
    pub spool_evicted: u64,
    pub last_error: Option<String>,
}

pub struct SyslogSink {
    name: String,
    encoder: Encoder,
    transport: Transport,
    spool: Spool,
    retry_at: Option<Instant>,
    backoff: Duration,
    written: u64,
    spooled: u64,
    failures: u64,
    last_error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("syslog sink {0}: {1}")]
    Transport(String, TransportError),
    #[error("syslog sink {0}: {1}")]
    Spool(String, SpoolError),
}

impl SyslogSink {
    pub fn open(
        spec: &SyslogSpec,
        spool_file: Option<&std::path::Path>,
    ) -> Result<SyslogSink, SinkError> {
        let name = format!("syslog {}://{}", transport_name(spec), spec.address);
        let transport = Transport::new(spec).map_err(|e| SinkError::Transport(name.clone(), e))?;
        let spool = Spool::open(spool_file, &name, spec.spool_max_bytes)
            .map_err(|e| SinkError::Spool(name.clone(), e))?;
        Ok(SyslogSink {
            encoder: Encoder::new(spec.format, spec.payload, spec.facility),
            name,
            transport,
            spool,
            retry_at: None,
            backoff: BACKOFF_MIN,
            written: 0,
            spooled: 0,
            failures: 0,
            last_error: None,
        })
    }

    pub fn stats(&self) -> SinkStats {
        let (depth, bytes) = self.spool.depth();
        SinkStats {
            name: self.name.clone(),
            written: self.written,
            spooled: self.spooled,
            failures: self.failures,
            truncated: self.transport.truncated,
            spool_depth: depth,
            spool_bytes: bytes,
            spool_evicted: self.spool.evicted(),
            last_error: self.last_error.clone(),
        }
    }

    fn spool_err(&self, e: SpoolError) -> SinkError {
        SinkError::Spool(self.name.clone(), e)
    }

    pub fn alert(&mut self, a: &Alert) -> Result<(), SinkError> {
        let msg = self.encoder.alert(a);
        self.deliver(msg)
    }

    /// A heartbeat: `body` is the counters as JSON.
    pub fn heartbeat(&mut self, timestamp: &str, body: &str) -> Result<(), SinkError> {
        let sd = format!("[{SD_ID} type=\"heartbeat\"]");
        let msg = self
            .encoder
            .message(Severity::Info, timestamp, "heartbeat", &sd, body);
        self.deliver(msg)
    }

    fn in_backoff(&self) -> bool {
        self.retry_at.is_some_and(|t| Instant::now() < t)
    }

    fn deliver(&mut self, msg: Vec<u8>) -> Result<(), SinkError> {
        if !self.spool.is_empty() || self.in_backoff() {
            self.spooled += 1;
            self.spool
                .push_back(&[msg])
                .map_err(|e| self.spool_err(e))?;
            self.drain()?;
            return Ok(());
        }
        match self.transport.send(&msg) {
            Ok(()) => {
                self.written += 1;
                self.backoff = BACKOFF_MIN;
                Ok(())
            }
            Err(e) => {
                self.spooled += 1;
                self.failed(e)
            }
        }
    }

    /// The connection failed: what it may have lost goes back to the front of the spool.
    fn failed(&mut self, e: TransportError) -> Result<(), SinkError> {
        self.failures += 1;
        if self.retry_at.is_none() {
            tracing::warn!(sink = %self.name, error = %e, "syslog delivery failed; spooling and retrying with backoff");
        }
        self.last_error = Some(e.to_string());
        let unconfirmed = self.transport.take_unconfirmed();
        self.spool
            .push_front(&unconfirmed)
            .map_err(|e| self.spool_err(e))?;
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        Ok(())
    }

    /// Write spooled messages, oldest first, until the spool is empty or the receiver fails.
    /// Returns whether the spool is empty.
    pub fn drain(&mut self) -> Result<bool, SinkError> {
        if self.in_backoff() {
            return Ok(self.spool.is_empty());
        }
        loop {
            let batch = self
                .spool
                .peek(DRAIN_BATCH)
                .map_err(|e| self.spool_err(e))?;
            let Some(&(last, _)) = batch.last() else {
                if self.retry_at.take().is_some() {
                    tracing::info!(sink = %self.name, "syslog delivery recovered; spool drained");
                }
                return Ok(true);
            };
            for (id, m) in &batch {
                if let Err(e) = self.transport.send(m) {
                    // It is in the transport's unconfirmed list: requeued from there, not twice.
                    self.spool
                        .remove_through(*id)
                        .map_err(|e| self.spool_err(e))?;
                    self.failed(e)?;
                    return Ok(false);
                }
                self.written += 1;
            }
            self.spool
                .remove_through(last)
                .map_err(|e| self.spool_err(e))?;
            self.backoff = BACKOFF_MIN;
        }
    }

    /// Deliver what is spooled, retrying for at most `deadline`; what is left stays spooled.
    pub fn finish(&mut self, deadline: Duration) -> Result<(), SinkError> {
        let end = Instant::now() + deadline;
        // A receiver that went away since the last write is noticed here, not never.
        if !self.transport.check_alive() {
            let unconfirmed = self.transport.take_unconfirmed();
            self.spool
                .push_front(&unconfirmed)
                .map_err(|e| self.spool_err(e))?;
        }
        while !self.drain()? {
            let Some(at) = self.retry_at else { break };
            if at >= end {
                break;
            }
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
        }
        self.transport.close();
        Ok(())
    }
}

fn transport_name(spec: &SyslogSpec) -> &'static str {
    match spec.transport {
        crate::config::SyslogTransport::Udp => "udp",
        crate::config::SyslogTransport::Tcp => "tcp",
        crate::config::SyslogTransport::Tls => "tls",
    }
}
