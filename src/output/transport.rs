//! Syslog transports: UDP (one message per datagram, RFC 5426), TCP with RFC 6587 octet counting or
//! LF framing, and TLS (RFC 5425) through rustls, verifying the server by default.
//!
//! TCP gives no delivery receipt: bytes accepted by the kernel are lost if the receiver dies before
//! reading them. So the transport keeps the messages written on the current connection (up to a
//! window larger than the socket buffers) and hands them back when the connection fails; the sink
//! resends them first. Receivers may see duplicates around a failure, never a gap.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::{TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::config::{Framing, SyslogSpec, SyslogTransport, TlsSpec};

/// Marker appended to a datagram cut to fit `max_datagram_bytes`.
pub const TRUNCATION_MARKER: &[u8] = b"...[truncated by kextwatch]";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Unconfirmed bytes kept for resending: what can sit in our send buffer and the receiver's unread
/// receive buffer when it dies. Duplicates after a failure are bounded by it. TCP acknowledges
/// bytes the receiver has not read, and a busy receiver's autotuned buffer grows to several MiB
/// (the soak lost alerts past a 2 MiB window on a loaded Linux machine); alerts are rare, so the
/// window is seldom full outside a flood.
const RESEND_WINDOW: usize = 16 * 1024 * 1024;
/// How often (in messages) the connection is checked for a peer that closed.
const LIVENESS_EVERY: u64 = 64;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("{0}: {1}")]
    Io(String, io::Error),
    #[error("TLS setup: {0}")]
    Tls(String),
}

enum Conn {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            Conn::Udp(_) => None,
            Conn::Tcp(s) => Some(s),
            Conn::Tls(s) => Some(&s.sock),
        }
    }
}

/// A message too long for one datagram, cut on a UTF-8 boundary to fit `max` with a marker.
fn truncate_datagram(msg: &[u8], max: usize) -> std::borrow::Cow<'_, [u8]> {
    if msg.len() <= max {
        return std::borrow::Cow::Borrowed(msg);
    }
    let mut cut = max.saturating_sub(TRUNCATION_MARKER.len());
    // Back over UTF-8 continuation bytes (10xxxxxx) to the start of the character.
    while cut > 0 && (msg[cut] & 0xc0) == 0x80 {
        cut -= 1;
    }
    let mut d = msg[..cut].to_vec();
    d.extend_from_slice(TRUNCATION_MARKER);
    std::borrow::Cow::Owned(d)
}

/// What was written on the current connection and may not have arrived, bounded in bytes (the
/// oldest go first: a receiver that took that much without closing has them).
struct ResendWindow {
    messages: VecDeque<Vec<u8>>,
    bytes: usize,
    max: usize,
}

impl ResendWindow {
    fn new(max: usize) -> ResendWindow {
        ResendWindow {
            messages: VecDeque::new(),
            bytes: 0,
            max,
        }
    }

    fn push(&mut self, msg: &[u8]) {
        self.bytes += msg.len();
        self.messages.push_back(msg.to_vec());
        while self.bytes > self.max {
            let Some(m) = self.messages.pop_front() else {
                break;
            };
            self.bytes -= m.len();
        }
    }

    fn take(&mut self) -> Vec<Vec<u8>> {
        self.bytes = 0;
        self.messages.drain(..).collect()
    }
}

pub struct Transport {
    spec: SyslogSpec,
    tls: Option<Arc<ClientConfig>>,
    conn: Option<Conn>,
    /// Messages written on the current connection, oldest first, for resending after a failure.
    unconfirmed: ResendWindow,
    written: u64,
    pub truncated: u64,
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> TransportError {
    let what = what.into();
    move |e| TransportError::Io(what, e)
}

/// Accepts any server certificate: only with `tls_danger_accept_invalid_certs = true`.
#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The rustls client configuration for a TLS sink.
pub fn tls_config(spec: &TlsSpec) -> Result<Arc<ClientConfig>, TransportError> {
    let tls = |e: &dyn std::fmt::Display| TransportError::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?;
    let builder = if spec.danger_accept_invalid_certs {
        tracing::warn!("TLS certificate verification is OFF for a syslog sink (tls_danger_accept_invalid_certs)");
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
    } else {
        let mut roots = RootCertStore::empty();
        match &spec.ca_file {
            Some(path) => {
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(|e| TransportError::Tls(format!("{}: {e}", path.display())))?;
                for c in certs {
                    let c =
                        c.map_err(|e| TransportError::Tls(format!("{}: {e}", path.display())))?;
                    roots
                        .add(c)
                        .map_err(|e| TransportError::Tls(format!("{}: {e}", path.display())))?;
                }
            }
            None => {
                for c in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(c);
                }
            }
        }
        if roots.is_empty() {
            return Err(TransportError::Tls(
                "no trusted CA certificates (set tls_ca_file)".into(),
            ));
        }
        builder.with_root_certificates(roots)
    };
    let config = match (&spec.client_cert, &spec.client_key) {
        (Some(cert), Some(key)) => {
            let certs = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| TransportError::Tls(format!("{}: {e}", cert.display())))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| TransportError::Tls(format!("{}: {e}", key.display())))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| tls(&e))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

impl Transport {
    pub fn new(spec: &SyslogSpec) -> Result<Transport, TransportError> {
        let tls = match spec.transport {
            SyslogTransport::Tls => Some(tls_config(&spec.tls)?),
            _ => None,
        };
        Ok(Transport {
            spec: spec.clone(),
            tls,
            conn: None,
            unconfirmed: ResendWindow::new(RESEND_WINDOW),
            written: 0,
            truncated: 0,
        })
    }

    fn connect(&mut self) -> Result<Conn, TransportError> {
        let addr = format!("{}:{}", self.spec.host, self.spec.port);
        let addrs: Vec<_> = (self.spec.host.as_str(), self.spec.port)
            .to_socket_addrs()
            .map_err(io_err(format!("resolve {addr}")))?
            .collect();
        if self.spec.transport == SyslogTransport::Udp {
            let bind = if addrs.first().is_some_and(|a| a.is_ipv6()) {
                "[::]:0"
            } else {
                "0.0.0.0:0"
            };
            let s = UdpSocket::bind(bind).map_err(io_err("bind UDP socket"))?;
            s.connect(&addrs[..])
                .map_err(io_err(format!("connect {addr}")))?;
            return Ok(Conn::Udp(s));
        }
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        let mut stream = None;
        for a in &addrs {
            match TcpStream::connect_timeout(a, CONNECT_TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let stream = stream.ok_or_else(|| TransportError::Io(format!("connect {addr}"), last))?;
        // Reads too: a receiver that accepts and never answers the TLS handshake must not hold
        // the sink (and shutdown) forever.
        stream
            .set_write_timeout(Some(WRITE_TIMEOUT))
            .and_then(|()| stream.set_read_timeout(Some(WRITE_TIMEOUT)))
            .map_err(io_err("socket option"))?;
        stream.set_nodelay(false).ok();
        match &self.tls {
            None => Ok(Conn::Tcp(stream)),
            Some(config) => {
                let name = self
                    .spec
                    .tls
                    .server_name
                    .clone()
                    .unwrap_or_else(|| self.spec.host.clone());
                let name =
                    ServerName::try_from(name).map_err(|e| TransportError::Tls(e.to_string()))?;
                let client = ClientConnection::new(config.clone(), name)
                    .map_err(|e| TransportError::Tls(e.to_string()))?;
                let mut tls = StreamOwned::new(client, stream);
                // Complete the handshake now, so a certificate problem is reported as such.
                while tls.conn.is_handshaking() {
                    tls.conn
                        .complete_io(&mut tls.sock)
                        .map_err(|e| TransportError::Tls(format!("handshake with {addr}: {e}")))?;
                }
                Ok(Conn::Tls(Box::new(tls)))
            }
        }
    }

    /// Frame a message for the stream transports (RFC 6587).
    fn frame(framing: Framing, msg: &[u8]) -> Vec<u8> {
        match framing {
            Framing::OctetCounting => {
                let mut f = format!("{} ", msg.len()).into_bytes();
                f.extend_from_slice(msg);
                f
            }
            Framing::Lf => {
                let mut f = msg.to_vec();
                f.push(b'\n');
                f
            }
        }
    }

    /// A stream connection whose peer closed (EOF, reset, or unexpected data) is dead.
    fn peer_gone(conn: &Conn) -> bool {
        let Some(s) = conn.tcp() else { return false };
        if s.set_nonblocking(true).is_err() {
            return true;
        }
        let mut b = [0u8; 1];
        let gone = match s.peek(&mut b) {
            Ok(_) => true,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        };
        let _ = s.set_nonblocking(false);
        gone
    }

    /// Send one message. On failure the connection is dropped and the error returned; the messages
    /// that may not have arrived, this one included, are then in [`Transport::take_unconfirmed`].
    pub fn send(&mut self, msg: &[u8]) -> Result<(), TransportError> {
        let result = self.try_send(msg);
        // Stream transports keep what they wrote for resending; any transport keeps what failed.
        if result.is_err() || self.spec.transport != SyslogTransport::Udp {
            self.remember(msg);
        }
        if result.is_err() {
            self.conn = None;
        }
        result
    }

    fn try_send(&mut self, msg: &[u8]) -> Result<(), TransportError> {
        if self.conn.is_none() {
            self.conn = Some(self.connect()?);
        }
        let framing = self.spec.framing;
        let result = match self.conn.as_mut() {
            Some(Conn::Udp(s)) => {
                let d = truncate_datagram(msg, self.spec.max_datagram_bytes);
                if d.len() != msg.len() {
                    self.truncated += 1;
                }
                s.send(&d).map(|_| ())
            }
            Some(conn) => {
                let res = match conn {
                    Conn::Tcp(s) => s.write_all(&Self::frame(framing, msg)),
                    Conn::Tls(s) => s
                        .write_all(&Self::frame(framing, msg))
                        .and_then(|_| s.flush()),
                    Conn::Udp(_) => Ok(()),
                };
                self.written += 1;
                match res {
                    Ok(()) if self.written % LIVENESS_EVERY == 0 && Self::peer_gone(conn) => {
                        Err(io::Error::new(
                            io::ErrorKind::ConnectionReset,
                            "receiver closed the connection",
                        ))
                    }
                    other => other,
                }
            }
            None => Ok(()),
        };
        result.map_err(|e| TransportError::Io(format!("send to {}", self.spec.address), e))
    }

    fn remember(&mut self, msg: &[u8]) {
        self.unconfirmed.push(msg);
    }

    /// After a failure: the messages written on the dead connection, oldest first.
    pub fn take_unconfirmed(&mut self) -> Vec<Vec<u8>> {
        self.unconfirmed.take()
    }

    /// Check the connection is still alive (a receiver that went away is found before the next
    /// alert, not after it).
    pub fn check_alive(&mut self) -> bool {
        match &self.conn {
            Some(c) if Self::peer_gone(c) => {
                self.conn = None;
                false
            }
            _ => true,
        }
    }

    /// Connect (and for TLS, complete the handshake) without sending anything.
    pub fn probe(&mut self) -> Result<(), TransportError> {
        let conn = self.connect()?;
        self.conn = Some(conn);
        self.close();
        Ok(())
    }

    /// Close the connection cleanly (TLS close_notify).
    pub fn close(&mut self) {
        let conn = self.conn.take();
        if let Some(Conn::Tls(mut s)) = conn {
            s.conn.send_close_notify();
            let _ = s.conn.complete_io(&mut s.sock);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_are_cut_to_fit_on_a_character_boundary() {
        let m = TRUNCATION_MARKER.len();
        let exact = vec![b'a'; 100];
        assert_eq!(&*truncate_datagram(&exact, 100), &exact[..]);
        let over = vec![b'a'; 101];
        let d = truncate_datagram(&over, 100);
        assert_eq!(d.len(), 100);
        assert!(d.ends_with(TRUNCATION_MARKER));
        // "é" is two bytes; a cut that would split it backs up to before it.
        let mut text = vec![b'a'; 100 - m - 1];
        text.extend_from_slice("é".as_bytes());
        text.extend_from_slice(&[b'b'; 50]);
        let d = truncate_datagram(&text, 100);
        assert_eq!(d.len(), 100 - 1);
        assert!(std::str::from_utf8(&d).is_ok());
        assert_eq!(&d[..d.len() - m], &text[..100 - m - 1]);
    }

    #[test]
    fn the_resend_window_keeps_the_newest_within_its_bytes() {
        let mut w = ResendWindow::new(300);
        for i in 1..=3u8 {
            w.push(&[i; 100]);
        }
        // Exactly at the bound: all kept.
        assert_eq!(w.bytes, 300);
        w.push(&[4; 100]);
        assert_eq!(w.bytes, 300);
        let kept: Vec<u8> = w.take().iter().map(|m| m[0]).collect();
        assert_eq!(kept, [2, 3, 4]);
        assert_eq!((w.bytes, w.take().len()), (0, 0));
        // One message larger than the window is not kept at all.
        w.push(&[9; 301]);
        assert_eq!((w.bytes, w.take().len()), (0, 0));
    }
}
