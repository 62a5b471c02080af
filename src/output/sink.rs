//! A syslog sink: encoder + transport + spool, with reconnect backoff. Delivery order is the order
//! alerts were offered; what cannot be written goes to the spool and is written first when the
//! receiver is back.

use std::time::{Duration, Instant};

use super::spool::{Spool, SpoolError};
use super::syslog::Encoder;
use super::transport::{Transport, TransportError};
use crate::alert::Alert;
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
    /// Messages neither delivered nor kept: the receiver was down and the spool could not take
    /// them (disk full, spool file unwritable). `last_error` says why.
    #[serde(default)]
    pub lost: u64,
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
    lost: u64,
    /// The spool refuses messages (logged once until it takes one again).
    spool_refusing: bool,
    /// Spooled messages up to this id were written but not yet removed from the spool.
    sent_through: Option<i64>,
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
            lost: 0,
            spool_refusing: false,
            sent_through: None,
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
            lost: self.lost,
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
        let msg = self.encoder.heartbeat(timestamp, body);
        self.deliver(msg)
    }

    fn in_backoff(&self) -> bool {
        self.retry_at.is_some_and(|t| Instant::now() < t)
    }

    /// Put `messages` in the spool (at the back, or the front for ones to resend first). A refusal
    /// (disk full) is logged once per outage and returned.
    fn spool_put(&mut self, messages: &[Vec<u8>], front: bool) -> Result<(), SpoolError> {
        let put = if front {
            self.spool.push_front(messages)
        } else {
            self.spool.push_back(messages)
        };
        match &put {
            Ok(()) => {
                if std::mem::take(&mut self.spool_refusing) {
                    tracing::info!(sink = %self.name, lost = self.lost, "alert spool accepts messages again");
                }
            }
            Err(e) => {
                self.last_error = Some(format!("spool refused messages, lost: {e}"));
                if !std::mem::replace(&mut self.spool_refusing, true) {
                    tracing::error!(sink = %self.name, error = %e, "the alert spool cannot store messages (disk full?): while the receiver is unreachable, alerts are lost and counted");
                }
            }
        }
        put
    }

    /// Keep `messages` in the spool; what it cannot take is lost, and counted.
    fn keep(&mut self, messages: &[Vec<u8>], front: bool) {
        if self.spool_put(messages, front).is_err() {
            self.lost += messages.len() as u64;
        }
    }

    fn deliver(&mut self, msg: Vec<u8>) -> Result<(), SinkError> {
        if !self.spool.is_empty() || self.in_backoff() {
            self.spooled += 1;
            if self.spool_put(std::slice::from_ref(&msg), false).is_err() {
                // The receiver may still take it directly; if it cannot, `failed` keeps it like
                // any unconfirmed message (and so counts it lost).
                if self.in_backoff() {
                    self.lost += 1;
                } else {
                    match self.transport.send(&msg) {
                        Ok(()) => self.written += 1,
                        Err(e) => self.failed(e, &[]),
                    }
                }
            }
            // This alert is handled (spooled, sent or counted); a spool fault while draining
            // is the retry timer's to report.
            if let Err(e) = self.drain() {
                self.last_error = Some(e.to_string());
            }
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
                self.failed(e, &[]);
                Ok(())
            }
        }
    }

    /// The connection failed: what it may have lost goes back to the front of the spool, except
    /// `still_spooled` (messages the spool still holds, so they are not kept twice).
    fn failed(&mut self, e: TransportError, still_spooled: &[(i64, Vec<u8>)]) {
        self.failures += 1;
        if self.retry_at.is_none() {
            tracing::warn!(sink = %self.name, error = %e, "syslog delivery failed; spooling and retrying with backoff");
        }
        self.last_error = Some(e.to_string());
        let mut unconfirmed = self.transport.take_unconfirmed();
        unconfirmed.retain(|m| !still_spooled.iter().any(|(_, s)| s == m));
        self.keep(&unconfirmed, true);
        self.retry_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Retry what is spooled if the backoff allows: called on a timer, so a spool drains once the
    /// receiver is back without waiting for the next alert, and at start for what a previous run
    /// left.
    pub fn retry(&mut self) -> Result<(), SinkError> {
        self.notice_dead_peer();
        if !self.spool.is_empty() {
            self.drain()?;
        }
        Ok(())
    }

    /// A receiver that went away after the last write is noticed now, not at the next alert (which
    /// may be hours away, or never come before a restart): what it may have lost goes back to the
    /// front of the spool, to be resent.
    fn notice_dead_peer(&mut self) {
        if !self.transport.check_alive() {
            let unconfirmed = self.transport.take_unconfirmed();
            if !unconfirmed.is_empty() {
                tracing::warn!(sink = %self.name, resent = unconfirmed.len(), "syslog receiver closed the connection; resending what it may have lost");
                self.keep(&unconfirmed, true);
            }
        }
    }

    /// Write spooled messages, oldest first, until the spool is empty or the receiver fails.
    /// Returns whether the spool is empty.
    pub fn drain(&mut self) -> Result<bool, SinkError> {
        if self.in_backoff() {
            return Ok(self.spool.is_empty());
        }
        loop {
            // Written before, but the spool could not remove them then (its disk was full):
            // removed now, never sent twice.
            if let Some(id) = self.sent_through {
                self.spool
                    .remove_through(id)
                    .map_err(|e| self.spool_err(e))?;
                self.sent_through = None;
            }
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
            for (n, (id, m)) in batch.iter().enumerate() {
                if let Err(e) = self.transport.send(m) {
                    // It is in the transport's unconfirmed list: requeued from there, not twice.
                    // If the spool cannot remove it, it stays there, and only the rest requeue.
                    let kept = match self.spool.remove_through(*id) {
                        Ok(()) => &[][..],
                        Err(_) => &batch[..=n],
                    };
                    self.failed(e, kept);
                    return Ok(false);
                }
                self.written += 1;
            }
            if let Err(e) = self.spool.remove_through(last) {
                self.sent_through = Some(last);
                return Err(self.spool_err(e));
            }
            self.backoff = BACKOFF_MIN;
        }
    }

    /// Deliver what is spooled, retrying for at most `deadline`; what is left stays spooled.
    pub fn finish(&mut self, deadline: Duration) -> Result<(), SinkError> {
        let end = Instant::now() + deadline;
        self.notice_dead_peer();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    /// A TCP port on which nothing listens while the socket lives (bound, never listening).
    fn closed_port() -> (u16, OwnedFd) {
        // SAFETY: plain socket calls on a descriptor this function owns.
        unsafe {
            let fd = OwnedFd::from_raw_fd(libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0));
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            assert_eq!(
                libc::bind(
                    fd.as_raw_fd(),
                    (&addr as *const libc::sockaddr_in).cast(),
                    len
                ),
                0
            );
            let mut len = len;
            libc::getsockname(
                fd.as_raw_fd(),
                (&mut addr as *mut libc::sockaddr_in).cast(),
                &mut len,
            );
            (u16::from_be(addr.sin_port), fd)
        }
    }

    /// A TCP syslog sink to 127.0.0.1:`port`, spooling to `spool` (or memory).
    fn tcp_sink(port: u16, spool: Option<&std::path::Path>) -> SyslogSink {
        let toml = format!("[[output]]\ntype = \"syslog\"\naddress = \"127.0.0.1:{port}\"\n");
        let config = crate::config::Config::parse(&toml, "test").unwrap();
        let crate::config::OutputSpec::Syslog(spec) = &config.outputs[0] else {
            panic!()
        };
        SyslogSink::open(spec, spool).unwrap()
    }

    type Received = std::sync::Arc<std::sync::Mutex<Vec<u8>>>;

    /// Accept connections on `listener` for good, appending all they carry to `got`.
    fn collect(listener: std::net::TcpListener, got: Received) {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let got = got.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while let Ok(n) = std::io::Read::read(&mut conn, &mut buf) {
                    if n == 0 {
                        return;
                    }
                    got.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
    }

    fn alert(n: usize) -> Alert {
        let mut a = crate::alert::test_alert(
            "2026-11-25T14:03:12Z".into(),
            crate::alert::Host::named("mac"),
        );
        a.reasons.push(format!("seq {n}"));
        a
    }

    #[test]
    fn what_the_spool_cannot_keep_is_counted_lost_and_the_spool_recovers() {
        let (port, _closed) = closed_port();
        let dir = tempfile::tempdir().unwrap();
        let mut sink = tcp_sink(port, Some(&dir.path().join("spool.sqlite")));
        for n in 0..5 {
            sink.alert(&alert(n)).unwrap();
        }
        assert_eq!((sink.stats().spool_depth, sink.stats().lost), (5, 0));
        // The disk fills: every alert from now on is counted lost, with the reason.
        sink.spool.refuse_writes(true);
        for n in 5..12 {
            sink.alert(&alert(n)).unwrap();
        }
        let s = sink.stats();
        assert_eq!((s.spool_depth, s.lost, s.written), (5, 7, 0), "{s:?}");
        assert!(
            s.last_error
                .as_deref()
                .unwrap()
                .starts_with("spool refused messages, lost: alert spool:"),
            "{s:?}"
        );
        // Space returns: the spool takes alerts again by itself, and nothing more is lost.
        sink.spool.refuse_writes(false);
        sink.alert(&alert(12)).unwrap();
        let s = sink.stats();
        assert_eq!((s.spool_depth, s.lost), (6, 7), "{s:?}");
    }

    /// Start receiving on `fd`, a socket bound by [`closed_port`] that refused connections so far.
    fn serve(fd: OwnedFd, got: Received) {
        // SAFETY: listen on a bound socket we own.
        assert_eq!(unsafe { libc::listen(fd.as_raw_fd(), 16) }, 0);
        let listener = std::net::TcpListener::from(fd);
        std::thread::spawn(move || collect(listener, got));
    }

    #[test]
    fn a_spool_that_cannot_remove_what_it_sent_does_not_send_it_again() {
        let (port, fd) = closed_port();
        let got = Received::default();
        let dir = tempfile::tempdir().unwrap();
        let mut sink = tcp_sink(port, Some(&dir.path().join("spool.sqlite")));
        for n in 0..5 {
            sink.alert(&alert(n)).unwrap();
        }
        assert_eq!(sink.stats().spool_depth, 5);
        // The receiver comes back while the spool's disk is full: the spool can neither take
        // nor delete anything.
        sink.spool.refuse_writes(true);
        serve(fd, got.clone());
        let start = Instant::now();
        while sink.stats().written < 5 {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{:?}",
                sink.stats()
            );
            let _ = sink.retry();
            std::thread::sleep(Duration::from_millis(20));
        }
        // Retried again and again: what was written is not written twice.
        for _ in 0..5 {
            assert!(sink.retry().is_err());
        }
        // A new alert goes straight to the receiver instead of being lost.
        sink.alert(&alert(5)).unwrap();
        assert_eq!((sink.stats().written, sink.stats().lost), (6, 0));
        // Space returns: the sent ones are removed, nothing is resent.
        sink.spool.refuse_writes(false);
        sink.retry().unwrap();
        assert_eq!(sink.stats().spool_depth, 0);
        sink.alert(&alert(99)).unwrap();
        let start = Instant::now();
        let text = loop {
            let text = String::from_utf8_lossy(&got.lock().unwrap()).into_owned();
            if text.contains("seq 99") {
                break text;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "{text}");
            std::thread::sleep(Duration::from_millis(20));
        };
        for n in [0, 1, 2, 3, 4, 5, 99] {
            assert_eq!(
                text.matches(&format!("\"seq {n}\"")).count(),
                1,
                "seq {n}: {text}"
            );
        }
    }

    #[test]
    fn a_receiver_that_drops_the_connection_after_the_last_alert_gets_it_resent_without_new_alerts()
    {
        // The first connection is accepted and then closed unread (a receiver restarting right
        // after an alert); later ones are read. No alert follows: only the retry timer runs.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let got = Received::default();
        let (drop_tx, drop_rx) = std::sync::mpsc::channel::<()>();
        let (dropped_tx, dropped_rx) = std::sync::mpsc::channel::<()>();
        {
            let got = got.clone();
            std::thread::spawn(move || {
                let (first, _) = listener.accept().unwrap();
                drop_rx.recv().unwrap();
                drop(first);
                dropped_tx.send(()).unwrap();
                collect(listener, got);
            });
        }
        let mut sink = tcp_sink(port, None);
        for n in 0..3 {
            sink.alert(&alert(n)).unwrap();
        }
        assert_eq!(sink.stats().written, 3);
        drop_tx.send(()).unwrap();
        dropped_rx.recv().unwrap();
        let start = Instant::now();
        loop {
            let text = String::from_utf8_lossy(&got.lock().unwrap()).into_owned();
            if (0..3).all(|n| text.contains(&format!("\"seq {n}\""))) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "not resent: {text}"
            );
            sink.retry().unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
