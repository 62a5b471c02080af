//! A real rsyslog receiver (Debian's `rsyslog` + `rsyslog-gnutls`), unprivileged on loopback,
//! writing every message it receives, as received, one per line, to a file.
//!
//! Determinism rules, because a flaky delivery test throws away a whole CI run:
//! - Ports come from [`reserve_port`]: below the kernel's ephemeral range, so no `bind(0)` or outgoing
//!   connection of any process can take one between our probe and rsyslogd's bind, or while a stopped
//!   receiver waits to be restarted on the same ports; a per-process counter never hands one out twice.
//! - [`Rsyslog::start`]/[`Rsyslog::resume`] return only after a probe sent through the TCP and the UDP
//!   input has been written by rsyslogd (probes go to their own file, never mixed with received lines).
//! - The ruleset runs on a direct queue: the messages of one connection are written in the order they
//!   were sent, so "the last message arrived" means "everything before it arrived".
//! - Tests wait for what their assertion needs ([`Rsyslog::wait_until`]), never for a line count that
//!   duplicates could satisfy, and check that nothing more arrived by waiting for a marker sent after
//!   the messages on the same connection.
use std::io::Write;
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

pub struct Tls {
    pub ca: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

pub struct Rsyslog {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    pub udp: u16,
    pub tcp: u16,
    pub tls: u16,
    /// TLS with client certificates required (mutual TLS).
    pub mtls: u16,
    pub received: PathBuf,
    conf: PathBuf,
    probes: PathBuf,
    generation: u32,
}

/// First port handed out; ports stay below Linux's (32768) and macOS's (49152) ephemeral ranges.
const PORT_BASE: u16 = 20_000;
const PORT_SPAN: u16 = 12_000;
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// A loopback port free for both TCP and UDP, never handed out twice by this process. Processes
/// start at different offsets (by pid) so test binaries run side by side rarely meet; when they do,
/// the probe bind here or rsyslogd's readiness probe notices and another port is taken.
pub fn reserve_port() -> u16 {
    let offset = (std::process::id() % u32::from(PORT_SPAN)) as u16;
    loop {
        let n = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
        assert!(n < PORT_SPAN, "test ports exhausted");
        let port = PORT_BASE + (offset + n) % PORT_SPAN;
        let tcp = TcpListener::bind(("127.0.0.1", port));
        let udp = UdpSocket::bind(("127.0.0.1", port));
        if tcp.is_ok() && udp.is_ok() {
            return port;
        }
    }
}

/// A TCP port on which nothing listens, for as long as the returned socket lives: the socket is
/// bound but never listens, so no other process can bind the port and connections are refused.
pub fn closed_port() -> (u16, OwnedFd) {
    loop {
        let port = reserve_port();
        // SAFETY: plain socket calls on a descriptor this function owns.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let owned = OwnedFd::from_raw_fd(fd);
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            addr.sin_family = libc::AF_INET as libc::sa_family_t;
            addr.sin_port = port.to_be();
            addr.sin_addr.s_addr = u32::from(std::net::Ipv4Addr::LOCALHOST).to_be();
            let rc = libc::bind(
                owned.as_raw_fd(),
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            );
            if rc == 0 {
                return (port, owned);
            }
        }
    }
}

/// A CA, a server certificate for localhost/127.0.0.1 and a client certificate, made now.
pub fn make_tls(dir: &Path) -> Tls {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "kextwatch test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf = |names: Vec<String>, cn: &str| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names).unwrap();
        p.distinguished_name.push(DnType::CommonName, cn);
        let cert = p.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server, server_key) = leaf(vec!["localhost".into(), "127.0.0.1".into()], "localhost");
    let (client, client_key) = leaf(vec!["kextwatch-client".into()], "kextwatch-client");
    let write = |name: &str, s: &str| {
        let p = dir.join(name);
        std::fs::write(&p, s).unwrap();
        p
    };
    write("server.pem", &server);
    write("server.key", &server_key);
    Tls {
        ca: write("ca.pem", &ca_cert.pem()),
        client_cert: write("client.pem", &client),
        client_key: write("client.key", &client_key),
    }
}

/// APP-NAME of readiness probes; the receiver files them apart from everything else.
const PROBE_APP: &str = "kextwatch-probe";

impl Rsyslog {
    /// Start a receiver with UDP, TCP, TLS and mutual-TLS inputs, ready when this returns.
    /// Whether rsyslogd is installed (on PATH or in /usr/sbin).
    pub fn installed() -> bool {
        let on_path = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("rsyslogd").is_file()));
        on_path || Path::new("/usr/sbin/rsyslogd").is_file()
    }

    /// A running receiver, or `None` with a line on stderr when rsyslogd is not installed, so plain
    /// `cargo test` on a Mac or a fresh machine skips the delivery tests instead of failing them.
    /// `scripts/test.sh` (and so CI) installs rsyslog and sets `KEXTWATCH_REQUIRE_RSYSLOG=1`, under
    /// which a missing rsyslogd fails the test.
    pub fn start_or_skip(test: &str) -> Option<Rsyslog> {
        if Rsyslog::installed() {
            return Some(Rsyslog::start());
        }
        assert!(
            std::env::var_os("KEXTWATCH_REQUIRE_RSYSLOG").is_none(),
            "{test}: rsyslogd is not installed (apt-get install rsyslog rsyslog-gnutls)"
        );
        eprintln!("SKIPPED {test}: rsyslogd is not installed; scripts/test.sh installs it");
        None
    }

    pub fn start() -> Rsyslog {
        let dir = tempfile::tempdir().unwrap();
        make_tls(dir.path());
        let mut r = Rsyslog {
            udp: 0,
            tcp: 0,
            tls: 0,
            mtls: 0,
            received: dir.path().join("received.log"),
            conf: dir.path().join("rsyslog.conf"),
            probes: dir.path().join("probes.log"),
            child: None,
            generation: 0,
            dir,
        };
        // A port taken by another process between our probe and rsyslogd's bind shows as a probe
        // that never arrives: start again on fresh ports.
        for attempt in 1..=3 {
            r.udp = reserve_port();
            r.tcp = reserve_port();
            r.tls = reserve_port();
            r.mtls = reserve_port();
            r.write_conf();
            match r.launch() {
                Ok(()) => return r,
                Err(e) if attempt < 3 => {
                    eprintln!("rsyslog: attempt {attempt} not ready ({e}); new ports");
                    r.kill();
                }
                Err(e) => panic!("rsyslogd never became ready: {e}"),
            }
        }
        unreachable!()
    }

    fn write_conf(&self) {
        let d = self.dir.path().display().to_string();
        let conf = format!(
            r#"global(workDirectory="{d}" maxMessageSize="256k"
       defaultNetstreamDriverCAFile="{d}/ca.pem"
       defaultNetstreamDriverCertFile="{d}/server.pem"
       defaultNetstreamDriverKeyFile="{d}/server.key")
module(load="imudp")
module(load="imtcp" maxSessions="200")
template(name="raw" type="string" string="%rawmsg%\n")
ruleset(name="out" queue.type="Direct") {{
  if $app-name == "{PROBE_APP}" then {{
    action(type="omfile" file="{d}/probes.log" template="raw" flushOnTXEnd="on" asyncWriting="off")
    stop
  }}
  action(type="omfile" file="{d}/received.log" template="raw" flushOnTXEnd="on" asyncWriting="off")
}}
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="out")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="out")
input(type="imtcp" address="127.0.0.1" port="{tls}" ruleset="out"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" address="127.0.0.1" port="{mtls}" ruleset="out"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")
"#,
            udp = self.udp,
            tcp = self.tcp,
            tls = self.tls,
            mtls = self.mtls
        );
        std::fs::write(&self.conf, conf).unwrap();
    }

    pub fn tls_files(&self) -> Tls {
        let d = self.dir.path();
        Tls {
            ca: d.join("ca.pem"),
            client_cert: d.join("client.pem"),
            client_key: d.join("client.key"),
        }
    }

    /// Restart rsyslogd on the same ports after [`Rsyslog::stop`]; ready when this returns.
    pub fn resume(&mut self) {
        if let Err(e) = self.launch() {
            panic!("rsyslogd did not come back on its ports: {e}");
        }
    }

    /// Spawn rsyslogd and wait until every input accepts and a probe through TCP and UDP was written.
    fn launch(&mut self) -> Result<(), String> {
        let pid = self.dir.path().join("rsyslogd.pid");
        let _ = std::fs::remove_file(&pid);
        let log = self.dir.path().join("rsyslogd.stderr");
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&self.conf)
            .arg("-i")
            .arg(&pid)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("rsyslogd (apt-get install rsyslog rsyslog-gnutls; .ci/run installs them)");
        self.child = Some(child);
        self.generation += 1;
        let tcp_probe = format!("tcp-ready-{}", self.generation);
        let udp_probe = format!("udp-ready-{}", self.generation);
        let probe = |tag: &str| format!("<14>1 - localhost {PROBE_APP} - - - {tag}\n");
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let start = Instant::now();
        let mut tcp_sent = false;
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(format!("rsyslogd exited ({status}): {}", self.stderr()));
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(format!("no probe back within 30 s: {}", self.stderr()));
            }
            let listening = [self.tcp, self.tls, self.mtls]
                .iter()
                .all(|p| TcpStream::connect(("127.0.0.1", *p)).is_ok());
            if listening {
                if !tcp_sent {
                    if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.tcp)) {
                        tcp_sent = s.write_all(probe(&tcp_probe).as_bytes()).is_ok();
                    }
                }
                // A datagram sent before imudp binds is lost: resend until one is written.
                let _ = udp.send_to(probe(&udp_probe).as_bytes(), ("127.0.0.1", self.udp));
                let seen = std::fs::read_to_string(&self.probes).unwrap_or_default();
                if seen.contains(&tcp_probe) && seen.contains(&udp_probe) {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("rsyslogd.stderr")).unwrap_or_default()
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Stop the receiver (SIGTERM, then wait for it to exit and release its ports).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    /// The lines received so far: complete lines only (rsyslog may be mid-way through writing a
    /// long message).
    pub fn received(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.received).unwrap_or_default();
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        complete.lines().map(String::from).collect()
    }

    /// The received lines once `done` holds for them; panics naming `what` after `timeout`.
    pub fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[String]) -> bool,
    ) -> Vec<String> {
        let start = Instant::now();
        loop {
            let lines = self.received();
            if done(&lines) {
                return lines;
            }
            assert!(
                start.elapsed() < timeout,
                "rsyslog: timed out after {timeout:?} waiting for {what}; {} lines received",
                lines.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The received lines once one contains `marker`, with that line and anything after it removed.
    /// Send the marker after the messages on the same connection: when it is there, everything sent
    /// before it is too, so the count that comes back is final.
    pub fn wait_marker(&self, marker: &str, timeout: Duration) -> Vec<String> {
        let mut lines = self.wait_until(&format!("marker {marker:?}"), timeout, |l| {
            l.iter().any(|x| x.contains(marker))
        });
        let at = lines.iter().position(|x| x.contains(marker)).unwrap();
        lines.truncate(at);
        lines
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        self.kill();
    }
}
