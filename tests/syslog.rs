//! Syslog delivery to a real rsyslog: formats parsed strictly on the receiving side, every transport,
//! TLS verification, hostile field values, a receiver that dies mid-stream, spool eviction and a
//! spool that survives a restart.

mod support;

use std::path::Path;
use std::time::Duration;

use kextwatch::alert::Alert;
use kextwatch::config::{Config, OutputSpec};
use kextwatch::detect::Engine;
use kextwatch::output::Outputs;
use serde_json::Value;
use support::eslogger::{cast, Capture, Proc};
use support::rsyslog::Rsyslog;

const WAIT: Duration = Duration::from_secs(20);

/// Alerts from a realistic capture: csrutil disable, then a hostile file name staged.
fn alerts() -> Vec<Alert> {
    let mut c = Capture::new(9);
    c.in_terminal(
        "/usr/bin/csrutil",
        "com.apple.csrutil",
        &["csrutil", "disable"],
        "/Users/alice",
    );
    c.after_ms(1000);
    let dropper = Proc {
        team_id: Some("EVIL\"]TEAM".into()),
        ..Proc::adhoc(9311, 1, "/private/tmp/x|y=z\\w")
    };
    c.create(
        &dropper,
        "/Library/Extensions",
        "a\nb]\"c\\d|e=f\u{0}g.kext",
    );
    let mut engine = Engine::new(Config::default_config());
    let mut out = Vec::new();
    for line in c.out.lines() {
        engine.process(&support::event(line), &mut out);
    }
    engine.finish(&mut out);
    assert_eq!(out.len(), 2);
    out
}

/// `n` distinct alerts: copies of one with a sequence number in `reasons` and the timestamp.
fn numbered(n: usize) -> Vec<Alert> {
    let base = alerts().remove(0);
    (0..n)
        .map(|i| {
            let mut a = base.clone();
            a.reasons.push(format!("seq {i}"));
            a
        })
        .collect()
}

fn syslog_outputs(toml: &str, state_dir: Option<&Path>) -> Outputs {
    let config = Config::parse(toml, "test").unwrap();
    assert!(config
        .outputs
        .iter()
        .all(|o| matches!(o, OutputSpec::Syslog(_))));
    Outputs::open(&config.outputs, state_dir).unwrap()
}

fn sink(address: &str, extra: &str) -> String {
    format!("[[output]]\ntype = \"syslog\"\naddress = \"{address}\"\n{extra}\n")
}

/// The JSON payload of a strictly parsed RFC 5424 line, after checking the header and SD.
fn parse_5424(line: &str) -> (syslog_rfc5424::SyslogMessage, Value) {
    let m =
        syslog_rfc5424::parse_message(line).unwrap_or_else(|e| panic!("not RFC 5424: {e}: {line}"));
    assert_eq!(m.appname.as_deref(), Some("kextwatch"));
    let body: Value =
        serde_json::from_str(&m.msg).unwrap_or_else(|e| panic!("payload not JSON: {e}: {}", m.msg));
    (m, body)
}

fn seq_of(body: &Value) -> Option<u64> {
    body["reasons"]
        .as_array()?
        .iter()
        .find_map(|r| r.as_str()?.strip_prefix("seq ")?.parse().ok())
}

#[test]
fn rfc5424_json_over_tcp_udp_and_lf_round_trips_strictly() {
    let r = Rsyslog::start();
    let alerts = alerts();
    for (i, extra) in [
        (0, "transport = \"tcp\""),
        (1, "transport = \"tcp\"\nframing = \"lf\""),
        (2, "transport = \"udp\"\nmax_datagram_bytes = 65000"),
    ] {
        let port = if i == 2 { r.udp } else { r.tcp };
        let mut out = syslog_outputs(&sink(&format!("127.0.0.1:{port}"), extra), None);
        for a in &alerts {
            out.write(a).unwrap();
        }
        out.finish(WAIT).unwrap();
        let lines = r.wait_lines(2 * (i + 1), WAIT);
        assert_eq!(lines.len(), 2 * (i + 1), "{extra}: {lines:#?}");
        for (line, alert) in lines[2 * i..].iter().zip(&alerts) {
            let (m, body) = parse_5424(line);
            // PRI: local4 (20) * 8 + severity (high 3, medium 4 ...).
            assert_eq!(m.facility, syslog_rfc5424::SyslogFacility::LOG_LOCAL4);
            assert_eq!(
                m.msgid.as_deref(),
                Some(kextwatch::output::syslog::msgid(alert.rule.id))
            );
            let sd = &m.sd["kextwatch@32473"];
            assert_eq!(sd["rule"], alert.rule.id);
            assert_eq!(sd["severity"], alert.severity.as_str());
            // The payload is the alert, field for field, hostile characters included.
            assert_eq!(body, serde_json::to_value(alert).unwrap());
        }
    }
    // The hostile values survived intact in the payload and escaped in the SD.
    let lines = r.wait_lines(6, WAIT);
    let (m, body) = parse_5424(&lines[1]);
    assert_eq!(
        body["file"]["path"],
        "/Library/Extensions/a\nb]\"c\\d|e=f\u{0}g.kext"
    );
    assert_eq!(
        m.sd["kextwatch@32473"]["path"],
        "/Library/Extensions/a b]\"c\\d|e=f g.kext"
    );
    assert_eq!(lines.len(), 6, "no forged extra messages");
}

#[test]
fn oversized_udp_datagrams_are_truncated_with_a_marker_and_counted() {
    let r = Rsyslog::start();
    let mut out = syslog_outputs(
        &sink(&format!("127.0.0.1:{}", r.udp), "transport = \"udp\""),
        None,
    );
    let mut a = alerts().remove(0);
    a.reasons.push("x".repeat(100_000));
    out.write(&a).unwrap();
    out.finish(WAIT).unwrap();
    let (_, stats) = out.report();
    assert_eq!(stats[0].truncated, 1);
    let lines = r.wait_lines(1, WAIT);
    assert_eq!(lines.len(), 1);
    assert!(lines[0].len() <= 1200, "{}", lines[0].len());
    assert!(lines[0].ends_with("...[truncated by kextwatch]"));
}

#[test]
fn cef_and_rfc3164_payloads() {
    let r = Rsyslog::start();
    let addr = format!("127.0.0.1:{}", r.tcp);
    let mut out = syslog_outputs(
        &sink(&addr, "payload = \"cef\"\nformat = \"rfc3164\""),
        None,
    );
    let alerts = alerts();
    for a in &alerts {
        out.write(a).unwrap();
    }
    out.finish(WAIT).unwrap();
    let lines = r.wait_lines(2, WAIT);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    for (line, a) in lines.iter().zip(&alerts) {
        let pri_end = line.find('>').unwrap();
        let pri: u16 = line[1..pri_end].parse().unwrap();
        assert_eq!(
            pri % 8,
            u16::from(kextwatch::output::syslog::syslog_severity(a.severity))
        );
        let cef = &line[line.find("CEF:0|").expect("CEF payload")..];
        // Split the header on unescaped pipes: exactly 7 fields then the extension.
        let mut fields = Vec::new();
        let (mut cur, mut esc) = (String::new(), false);
        for ch in cef.chars() {
            match (esc, ch) {
                (false, '\\') => esc = true,
                (false, '|') if fields.len() < 7 => fields.push(std::mem::take(&mut cur)),
                (_, c) => {
                    if esc && c != '|' && c != '\\' {
                        cur.push('\\');
                    }
                    cur.push(c);
                    esc = false;
                }
            }
        }
        assert_eq!(fields.len(), 7, "{cef}");
        assert_eq!(
            &fields[1..5],
            [
                "kextwatch",
                "kextwatch",
                env!("CARGO_PKG_VERSION"),
                a.rule.id
            ]
        );
        let cef_severity = match a.severity.as_str() {
            "critical" => "10",
            "high" => "8",
            "medium" => "5",
            "low" => "3",
            _ => "1",
        };
        assert_eq!(fields[6], cef_severity);
        assert!(cur.contains("cs1Label=reasons"), "{cur}");
    }
    // The hostile path: '=' and '\' escaped, the newline as \n, still one message.
    assert!(
        lines[1].contains("filePath=/Library/Extensions/a\\nb]\"c\\\\d|e\\=f g.kext"),
        "{}",
        lines[1]
    );
}

#[test]
fn tls_verifies_the_server_and_supports_client_certificates() {
    let r = Rsyslog::start();
    let tls = r.tls_files();
    let ok = format!(
        "transport = \"tls\"\ntls_ca_file = \"{}\"\ntls_server_name = \"localhost\"",
        tls.ca.display()
    );
    let mut out = syslog_outputs(&sink(&format!("127.0.0.1:{}", r.tls), &ok), None);
    for a in &alerts() {
        out.write(a).unwrap();
    }
    out.finish(WAIT).unwrap();
    assert_eq!(r.wait_lines(2, WAIT).len(), 2);
    parse_5424(&r.wait_lines(2, WAIT)[0]);

    // Against the system roots the test CA is unknown: nothing is sent, the alert is spooled.
    let mut out = syslog_outputs(
        &sink(
            &format!("127.0.0.1:{}", r.tls),
            "transport = \"tls\"\ntls_server_name = \"localhost\"",
        ),
        None,
    );
    out.write(&alerts()[0]).unwrap();
    out.finish(Duration::from_millis(500)).unwrap();
    let (_, stats) = out.report();
    assert_eq!(stats[0].spool_depth, 1);
    let err = stats[0].last_error.clone().unwrap();
    assert!(
        err.contains("handshake") || err.contains("certificate"),
        "{err}"
    );

    // A wrong name fails too; turning verification off (loudly named) gets through.
    let mut out = syslog_outputs(&sink(&format!("127.0.0.1:{}", r.tls), "transport = \"tls\"\ntls_danger_accept_invalid_certs = true\ntls_server_name = \"not-the-server\""), None);
    out.write(&alerts()[0]).unwrap();
    out.finish(WAIT).unwrap();
    assert_eq!(r.wait_lines(3, WAIT).len(), 3);

    // Mutual TLS: the receiver requires a client certificate from the test CA.
    let mtls = format!(
        "{ok}\ntls_client_cert = \"{}\"\ntls_client_key = \"{}\"",
        tls.client_cert.display(),
        tls.client_key.display()
    );
    let mut out = syslog_outputs(&sink(&format!("127.0.0.1:{}", r.mtls), &mtls), None);
    out.write(&alerts()[0]).unwrap();
    out.finish(WAIT).unwrap();
    assert_eq!(r.wait_lines(4, WAIT).len(), 4);
}

/// Every sequence number 0..n present, first occurrences in order (duplicates allowed).
fn assert_complete_in_order(lines: &[String], n: usize) {
    let mut seen = vec![false; n];
    let mut next_new = 0;
    for l in lines {
        let (_, body) = parse_5424(l);
        let s = seq_of(&body).unwrap() as usize;
        if !seen[s] {
            assert_eq!(s, next_new, "first occurrences must be in order");
            seen[s] = true;
            next_new += 1;
        }
    }
    let missing: Vec<usize> = (0..n).filter(|i| !seen[*i]).collect();
    assert!(
        missing.is_empty(),
        "{} missing, first {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
}

#[test]
fn receiver_stopped_mid_stream_loses_nothing() {
    let mut r = Rsyslog::start();
    let state = tempfile::tempdir().unwrap();
    let mut out = syslog_outputs(
        &sink(&format!("127.0.0.1:{}", r.tcp), ""),
        Some(state.path()),
    );
    let alerts = numbered(10_000);
    for (i, a) in alerts.iter().enumerate() {
        if i == 3_000 {
            r.stop();
        }
        if i == 7_000 {
            r.resume();
        }
        out.write(a).unwrap();
    }
    out.finish(Duration::from_secs(60)).unwrap();
    let (_, stats) = out.report();
    assert_eq!(stats[0].spool_depth, 0, "{stats:?}");
    assert!(stats[0].failures > 0);
    let lines = r.wait_lines(10_000, WAIT);
    assert_complete_in_order(&lines, 10_000);
}

#[test]
fn full_spool_evicts_oldest_and_counts() {
    let state = tempfile::tempdir().unwrap();
    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut out = syslog_outputs(
        &sink(&format!("127.0.0.1:{port}"), "spool_max_bytes = 20000"),
        Some(state.path()),
    );
    for a in &numbered(100) {
        out.write(a).unwrap();
    }
    let (_, stats) = out.report();
    let s = &stats[0];
    assert!(s.spool_evicted > 0 && s.spool_bytes <= 20_000, "{s:?}");
    assert_eq!(s.spool_depth + s.spool_evicted, 100);
}

#[test]
fn spool_survives_a_restart_and_drains() {
    let mut r = Rsyslog::start();
    r.stop();
    let state = tempfile::tempdir().unwrap();
    let cfg = sink(&format!("127.0.0.1:{}", r.tcp), "");
    {
        let mut out = syslog_outputs(&cfg, Some(state.path()));
        for a in &numbered(500) {
            out.write(a).unwrap();
        }
        let (_, stats) = out.report();
        assert_eq!(stats[0].spool_depth, 500);
        // Dropped without finish(), as when kextwatch is killed.
    }
    r.resume();
    let mut out = syslog_outputs(&cfg, Some(state.path()));
    out.finish(WAIT).unwrap();
    assert_eq!(out.report().1[0].spool_depth, 0);
    assert_complete_in_order(&r.wait_lines(500, WAIT), 500);
}

const BIN: &str = env!("CARGO_BIN_EXE_kextwatch");

fn config_file(dir: &Path, outputs: &str) -> std::path::PathBuf {
    let p = dir.join("kextwatch.toml");
    std::fs::write(
        &p,
        format!(
            "[daemon]\nstate_dir = \"{}\"\n\n{outputs}",
            dir.join("state").display()
        ),
    )
    .unwrap();
    p
}

#[test]
fn replay_delivers_to_the_siem_through_the_configured_sink() {
    let r = Rsyslog::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(
        dir.path(),
        &sink(&format!("127.0.0.1:{}", r.tcp), "payload = \"json\""),
    );
    let sample = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/kext-attack.jsonl");
    let out = std::process::Command::new(BIN)
        .args(["replay", sample, "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.is_empty(),
        "alerts go to the configured sink only"
    );
    // This config has no allowlist, so the MDM agent's kmutil is reported too: 11 alerts.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("alerts: 11 "), "{stderr}");
    let lines = r.wait_lines(11, WAIT);
    assert_eq!(lines.len(), 11);
    let rules: Vec<String> = lines
        .iter()
        .map(|l| parse_5424(l).1["rule"]["id"].as_str().unwrap().to_string())
        .collect();
    assert!(rules.contains(&"KW-4002".to_string()), "{rules:?}");
    assert!(stderr.contains(": 11 written"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("syslog tcp://127.0.0.1:"));
}

#[test]
fn test_alert_proves_the_route_or_says_it_failed() {
    let r = Rsyslog::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_file(dir.path(), &sink(&format!("127.0.0.1:{}", r.tcp), ""));
    let out = std::process::Command::new(BIN)
        .args(["test-alert", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("test alert delivered to syslog tcp://127.0.0.1:"));
    let lines = r.wait_lines(1, WAIT);
    let (m, body) = parse_5424(&lines[0]);
    assert_eq!(m.msgid.as_deref(), Some("test"));
    assert_eq!(body["kextwatch"]["test"], true);
    assert_eq!(body["rule"]["id"], "KW-0000");

    // Nothing listening: exit 1, and it says so.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = config_file(dir.path(), &sink(&format!("127.0.0.1:{port}"), ""));
    let out = std::process::Command::new(BIN)
        .args(["test-alert", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("NOT delivered"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn heartbeats_carry_counters() {
    let r = Rsyslog::start();
    let mut out = syslog_outputs(&sink(&format!("127.0.0.1:{}", r.tcp), ""), None);
    let summary = support::run_with(b"", Config::default_config()).1;
    out.heartbeat(
        "2026-11-26T12:00:00Z",
        &summary.heartbeat("2026-11-26T12:00:00Z", "replay", Some(true), 3),
    )
    .unwrap();
    out.finish(WAIT).unwrap();
    let lines = r.wait_lines(1, WAIT);
    let m = syslog_rfc5424::parse_message(&lines[0]).unwrap();
    assert_eq!(m.msgid.as_deref(), Some("heartbeat"));
    assert_eq!(m.sd["kextwatch@32473"]["type"], "heartbeat");
    let body: Value = serde_json::from_str(&m.msg).unwrap();
    assert_eq!(body["event"]["kind"], "heartbeat");
    assert!(body["kextwatch"]["sources"]["replay"]["malformed"].is_u64());
    assert_eq!(
        (
            body["kextwatch"]["kextpolicy_readable"].clone(),
            body["kextwatch"]["config_generation"].clone()
        ),
        (Value::Bool(true), Value::from(3))
    );
    assert!(body["kextwatch"]["sinks"].is_array());
}

#[test]
fn hostile_values_and_100_kb_arguments_over_every_stream_transport() {
    // An exec whose argument is 100 kB with every character that could break framing or fields.
    let mut c = Capture::new(9);
    let sudo = cast::sudo();
    let hostile = format!(
        "/tmp/x\n<13>1 - forged - - - - second message\r]\"\\|={}",
        "A".repeat(100_000)
    );
    c.exec(
        &sudo,
        &sudo.exec_into("/sbin/kextload", "com.apple.kextload"),
        &["kextload", &hostile],
        "/tmp",
    );
    let mut engine = Engine::new(Config::default_config());
    let mut big = Vec::new();
    engine.process(&support::event(&c.out), &mut big);
    let mut all = alerts();
    all.extend(big);
    assert_eq!(all.len(), 3);

    for extra in [
        "transport = \"tcp\"",
        "transport = \"tcp\"\nframing = \"lf\"",
        "transport = \"tls\"\ntls_danger_accept_invalid_certs = true",
    ] {
        let r = Rsyslog::start();
        let port = if extra.contains("tls") { r.tls } else { r.tcp };
        let mut out = syslog_outputs(&sink(&format!("127.0.0.1:{port}"), extra), None);
        for a in &all {
            out.write(a).unwrap();
        }
        out.finish(WAIT).unwrap();
        let lines = r.wait_lines(3, WAIT);
        std::thread::sleep(Duration::from_millis(200));
        let lines_after = r.wait_lines(3, WAIT);
        let short: Vec<String> = lines_after
            .iter()
            .map(|l| {
                format!(
                    "{}..{} ({} bytes)",
                    &l[..l.len().min(120)],
                    &l[l.len().saturating_sub(60)..],
                    l.len()
                )
            })
            .collect();
        assert_eq!(
            (lines.len(), lines_after.len()),
            (3, 3),
            "{extra}: exactly one message per alert: {short:#?}"
        );
        for (line, a) in lines.iter().zip(&all) {
            let (_, body) = parse_5424(line);
            assert_eq!(body, serde_json::to_value(a).unwrap(), "{extra}");
        }
    }
}
