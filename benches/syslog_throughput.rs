//! Alerts per second to a real rsyslog over TCP and TLS on loopback, spool write and drain rates,
//! side by side with writing the same framed bytes to a local socket (the limit), in one run.
//!
//! `cargo bench --bench syslog_throughput` (needs rsyslog and rsyslog-gnutls; scripts/test.sh installs
//! them). Alerts: KEXTWATCH_BENCH_ALERTS, default 100,000.

use kextwatch_testkit::rsyslog;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use kextwatch::alert::{test_alert, Alert};
use kextwatch::config::{Config, OutputSpec, SyslogFormat, SyslogPayload};
use kextwatch::output::syslog::Encoder;
use kextwatch::output::Outputs;

fn outputs(toml: &str, state: Option<&std::path::Path>) -> Outputs {
    let c = Config::parse(toml, "bench").unwrap();
    assert!(matches!(c.outputs[0], OutputSpec::Syslog(_)));
    Outputs::open(&c.outputs, state).unwrap()
}

fn sink(addr: &str, extra: &str) -> String {
    format!("[[output]]\ntype = \"syslog\"\naddress = \"{addr}\"\n{extra}\n")
}

/// A local TCP listener that reads and discards everything, for the baseline and the drain.
fn discard_listener(l: TcpListener) {
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut s = s;
                let mut buf = vec![0u8; 1 << 16];
                while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
            });
        }
    });
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn main() {
    let n: usize = std::env::var("KEXTWATCH_BENCH_ALERTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let alert: Alert = {
        let mut a = test_alert(
            "2026-11-26T12:00:00.123456789Z".into(),
            kextwatch::alert::Host::named("bench"),
        );
        a.reasons.push("a realistic reason of about the usual length for a kext alert, with a path /Library/Extensions/X.kext".into());
        a
    };
    let r = rsyslog::Rsyslog::start();

    // Baseline: the same encoded, octet-counted bytes written to a discarding local socket.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    discard_listener(l);
    let enc = Encoder::new(SyslogFormat::Rfc5424, SyslogPayload::Json, 20);
    let msg = enc.alert(&alert);
    let mut framed = format!("{} ", msg.len()).into_bytes();
    framed.extend_from_slice(&msg);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let t = Instant::now();
    for _ in 0..n {
        s.write_all(&framed).unwrap();
    }
    let baseline = t.elapsed();
    drop(s);

    let timed = |toml: &str, state: Option<&std::path::Path>| {
        let mut out = outputs(toml, state);
        let t = Instant::now();
        for _ in 0..n {
            out.write(&alert).unwrap();
        }
        out.finish(Duration::from_secs(60)).unwrap();
        (t.elapsed(), out)
    };
    let (tcp, _) = timed(&sink(&format!("127.0.0.1:{}", r.tcp), ""), None);
    let tls_files = r.tls_files();
    let tls_cfg = format!(
        "transport = \"tls\"\ntls_ca_file = \"{}\"\ntls_server_name = \"localhost\"",
        tls_files.ca.display()
    );
    let (tls, _) = timed(&sink(&format!("127.0.0.1:{}", r.tls), &tls_cfg), None);

    // Spool: nothing listens, so every alert is written to the on-disk spool...
    let state = tempfile::tempdir().unwrap();
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let cfg = sink(
        &format!("127.0.0.1:{dead_port}"),
        "spool_max_bytes = 1099511627776",
    );
    let mut out = outputs(&cfg, Some(state.path()));
    let t = Instant::now();
    for _ in 0..n {
        out.write(&alert).unwrap();
    }
    let spool_write = t.elapsed();
    assert_eq!(out.report().1[0].spool_depth, n as u64);
    drop(out);
    // ...then a receiver appears and a restarted kextwatch drains it.
    discard_listener(TcpListener::bind(("127.0.0.1", dead_port)).unwrap());
    let mut out = outputs(&cfg, Some(state.path()));
    let t = Instant::now();
    out.finish(Duration::from_secs(120)).unwrap();
    let drain = t.elapsed();
    assert_eq!(out.report().1[0].spool_depth, 0);

    println!(
        "{n} alerts of {} bytes (RFC 5424, JSON payload), loopback, one run:",
        msg.len()
    );
    println!(
        "  {:<46} {:>12.0} alerts/s",
        "framed bytes to a local socket (the limit)",
        rate(n, baseline)
    );
    println!(
        "  {:<46} {:>12.0} alerts/s  ({:.0} % of the limit)",
        "kextwatch -> rsyslog, TCP octet counting",
        rate(n, tcp),
        baseline.as_secs_f64() / tcp.as_secs_f64() * 100.0
    );
    println!(
        "  {:<46} {:>12.0} alerts/s",
        "kextwatch -> rsyslog, TLS",
        rate(n, tls)
    );
    println!(
        "  {:<46} {:>12.0} alerts/s",
        "spool write (receiver down)",
        rate(n, spool_write)
    );
    println!(
        "  {:<46} {:>12.0} alerts/s",
        "spool drain after restart",
        rate(n, drain)
    );
}
