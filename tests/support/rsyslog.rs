//! A real rsyslog receiver (Debian's `rsyslog` + `rsyslog-gnutls`), unprivileged on loopback high
//! ports, writing every message it receives, as received, one per line, to a file.
#![allow(dead_code)]

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
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
}

fn free_port() -> u16 {
    // A port free for both TCP and UDP on loopback.
    loop {
        let t = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = t.local_addr().unwrap().port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
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

impl Rsyslog {
    /// Start a receiver with UDP, TCP, TLS and mutual-TLS inputs.
    pub fn start() -> Rsyslog {
        let dir = tempfile::tempdir().unwrap();
        make_tls(dir.path());
        let mut r = Rsyslog {
            udp: free_port(),
            tcp: free_port(),
            tls: free_port(),
            mtls: free_port(),
            received: dir.path().join("received.log"),
            conf: dir.path().join("rsyslog.conf"),
            child: None,
            dir,
        };
        let d = r.dir.path().display().to_string();
        let conf = format!(
            r#"global(workDirectory="{d}" maxMessageSize="256k"
       defaultNetstreamDriverCAFile="{d}/ca.pem"
       defaultNetstreamDriverCertFile="{d}/server.pem"
       defaultNetstreamDriverKeyFile="{d}/server.key")
module(load="imudp")
module(load="imtcp" maxSessions="200")
template(name="raw" type="string" string="%rawmsg%\n")
ruleset(name="out") {{
  action(type="omfile" file="{d}/received.log" template="raw" flushOnTXEnd="on" asyncWriting="off")
}}
input(type="imudp" address="127.0.0.1" port="{udp}" ruleset="out")
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="out")
input(type="imtcp" address="127.0.0.1" port="{tls}" ruleset="out"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" address="127.0.0.1" port="{mtls}" ruleset="out"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="x509/certvalid")
"#,
            udp = r.udp,
            tcp = r.tcp,
            tls = r.tls,
            mtls = r.mtls
        );
        std::fs::write(&r.conf, conf).unwrap();
        r.resume();
        r
    }

    pub fn tls_files(&self) -> Tls {
        let d = self.dir.path();
        Tls {
            ca: d.join("ca.pem"),
            client_cert: d.join("client.pem"),
            client_key: d.join("client.key"),
        }
    }

    /// (Re)start rsyslogd on the same ports and wait until it accepts connections.
    pub fn resume(&mut self) {
        let pid = self.dir.path().join("rsyslogd.pid");
        let _ = std::fs::remove_file(&pid);
        let child = Command::new("rsyslogd")
            .arg("-n")
            .arg("-f")
            .arg(&self.conf)
            .arg("-i")
            .arg(&pid)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("rsyslogd (apt-get install rsyslog rsyslog-gnutls; .ci/run installs them)");
        self.child = Some(child);
        let start = Instant::now();
        for port in [self.tcp, self.tls, self.mtls] {
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "rsyslogd did not start"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Stop the receiver (SIGTERM, then wait).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let _ = c.wait();
        }
    }

    /// Received lines, waiting until at least `n` arrived (or the timeout passed).
    pub fn wait_lines(&self, n: usize, timeout: Duration) -> Vec<String> {
        let start = Instant::now();
        loop {
            let text = std::fs::read_to_string(&self.received).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(String::from).collect();
            if lines.len() >= n || start.elapsed() > timeout {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
