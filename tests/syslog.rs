//! Syslog delivery to a real rsyslog: formats parsed strictly on the receiving side, every transport,
//! TLS verification, hostile field values, a receiver that dies mid-stream, spool eviction and a
//! spool that survives a restart.
//!
//! Expected headers, MSGIDs and severities are written out by hand from RFC 5424 and the README's
//! mapping table, never computed by the encoder under test. Waits are for what each assertion needs
//! (a marker sent last on the same connection, or every sequence number), never for a line count.

use kextwatch_testkit as support;

use std::path::Path;
use std::time::Duration;

use kextwatch::alert::Alert;
use kextwatch::config::{Config, OutputSpec};
use kextwatch::detect::Engine;
use kextwatch::output::Outputs;
use serde_json::Value;
use support::eslogger::{cast, Capture, Proc};
use support::rsyslog::Rsyslog;

const WAIT: Duration = Duration::from_secs(30);

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
    // As the daemon does: the alerts name this machine.
    engine.set_host(kextwatch::host::this_host());
    let mut out = Vec::new();
    for line in c.out.lines() {
        engine.process(&support::event(line), &mut out);
    }
    engine.finish(&mut out);
    assert_eq!(out.len(), 2);
    out
}

/// What the two alerts of [`alerts`] must look like on the wire, by hand: (PRI, MSGID, rule,
/// severity). local4 is facility 20, so PRI = 160 + severity: high 3, critical 2 (RFC 5424 §6.2.1).
const EXPECTED: [(u16, &str, &str, &str); 2] = [
    (163, "policy", "KW-4001", "high"),
    (162, "correlation", "KW-9002", "critical"),
];

/// The staged file's name, exactly as the attacker wrote it.
const HOSTILE_PATH: &str = "/Library/Extensions/a\nb]\"c\\d|e=f\u{0}g.kext";

/// A copy of the first alert, told apart by `tag` (at the head of its message, early in every
/// payload): markers and numbered streams.
fn tagged(tag: &str) -> Alert {
    let mut a = alerts().remove(0);
    a.message = format!("tag {tag}: {}", a.message);
    a
}

/// `n` distinct alerts: copies of one with a sequence number in `reasons`.
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

/// Write `alerts`, then a marker alert on the same connection, and finish; the lines received
/// before the marker (so nothing sent before it can still be on its way).
fn deliver(r: &Rsyslog, out: &mut Outputs, alerts: &[Alert], marker: &str) -> Vec<String> {
    let marker: String = marker
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let before = r.received().len();
    for a in alerts {
        out.write(a).unwrap();
    }
    out.write(&tagged(&marker)).unwrap();
    out.finish(WAIT).unwrap();
    let mut lines = r.wait_marker(&format!("tag {marker}"), WAIT);
    lines.drain(..before);
    lines
}

/// The JSON payload of a strictly parsed RFC 5424 line, after checking the header and SD.
fn parse_5424(line: &str) -> (syslog_rfc5424::SyslogMessage, Value) {
    let m =
        syslog_rfc5424::parse_message(line).unwrap_or_else(|e| panic!("not RFC 5424: {e}: {line}"));
    assert_eq!(m.appname.as_deref(), Some("kextwatch"));
    let body: Value =
        serde_json::from_str(&m.msg).unwrap_or_else(|e| panic!("payload not JSON: {e}: {}", m.msg));
    support::ecs::assert_conforms(&body);
    (m, body)
}

fn seq_of(body: &Value) -> Option<u64> {
    body["kextwatch"]["reasons"]
        .as_array()?
        .iter()
        .find_map(|r| r.as_str()?.strip_prefix("seq ")?.parse().ok())
}

/// The PRI of a raw line, `<PRI>...`.
fn pri(line: &str) -> u16 {
    line[1..line.find('>').unwrap()].parse().unwrap()
}

/// Field by field what the receiver must see for the two alerts of [`alerts`], written by hand.
fn assert_expected_payloads(lines: &[String], what: &str) {
    assert_eq!(
        lines.len(),
        2,
        "{what}: exactly one message per alert: {lines:#?}"
    );
    for (line, (p, msgid, rule, severity)) in lines.iter().zip(EXPECTED) {
        assert_eq!(pri(line), p, "{what}: {line}");
        let (m, body) = parse_5424(line);
        assert_eq!(m.facility, syslog_rfc5424::SyslogFacility::LOG_LOCAL4);
        assert_eq!(m.msgid.as_deref(), Some(msgid), "{what}");
        let sd = &m.sd["kextwatch@32473"];
        assert_eq!(
            (sd["rule"].as_str(), sd["severity"].as_str()),
            (rule, severity)
        );
        assert_eq!(body["rule"]["id"], rule);
        assert_eq!(body["kextwatch"]["severity"], severity);
    }
    let (m0, first) = parse_5424(&lines[0]);
    // The event's own time, whole seconds as recorded.
    assert_eq!(
        m0.timestamp,
        Some(1_795_615_392),
        "{what}: 2026-11-25T14:03:12Z"
    );
    assert_eq!(first["@timestamp"], "2026-11-25T14:03:12Z");
    assert_eq!(first["process"]["executable"], "/usr/bin/csrutil");
    assert_eq!(
        first["process"]["args"],
        serde_json::json!(["csrutil", "disable"])
    );
    assert_eq!(m0.sd["kextwatch@32473"]["technique"], "T1562.001,T1553.006");
    // The hostile values survive intact in the payload and escaped in the SD.
    let (m1, second) = parse_5424(&lines[1]);
    assert_eq!(second["file"]["path"], HOSTILE_PATH, "{what}");
    assert_eq!(
        second["process"]["code_signature"]["team_id"],
        "EVIL\"]TEAM"
    );
    assert_eq!(second["process"]["executable"], "/private/tmp/x|y=z\\w");
    let sd = &m1.sd["kextwatch@32473"];
    assert_eq!(
        sd["path"], "/Library/Extensions/a b]\"c\\d|e=f g.kext",
        "{what}"
    );
    assert_eq!(sd["team_id"], "EVIL\"]TEAM");
}

#[test]
fn rfc5424_json_over_tcp_udp_and_lf_round_trips_strictly() {
    let Some(r) = Rsyslog::start_or_skip("rfc5424_json_over_tcp_udp_and_lf_round_trips_strictly")
    else {
        return;
    };
    let alerts = alerts();
    for extra in [
        "transport = \"tcp\"",
        "transport = \"tcp\"\nframing = \"lf\"",
        "transport = \"udp\"\nmax_datagram_bytes = 65000",
    ] {
        let port = if extra.contains("udp") { r.udp } else { r.tcp };
        let mut out = syslog_outputs(&sink(&format!("127.0.0.1:{port}"), extra), None);
        let lines = deliver(&r, &mut out, &alerts, extra);
        assert_expected_payloads(&lines, extra);
        // Nothing lost or altered in transport: the payload is the alert the engine produced.
        for (line, alert) in lines.iter().zip(&alerts) {
            assert_eq!(
                parse_5424(line).1,
                serde_json::to_value(alert).unwrap(),
                "{extra}"
            );
        }
    }
}

#[test]
fn oversized_udp_datagrams_are_truncated_with_a_marker_and_counted() {
    let Some(r) =
        Rsyslog::start_or_skip("oversized_udp_datagrams_are_truncated_with_a_marker_and_counted")
    else {
        return;
    };
    let mut out = syslog_outputs(
        &sink(&format!("127.0.0.1:{}", r.udp), "transport = \"udp\""),
        None,
    );
    let mut a = alerts().remove(0);
    a.reasons.push("x".repeat(100_000));
    // The marker, a whole alert of about 2 kB, is cut too; its tag (early in the JSON) survives.
    let lines = deliver(&r, &mut out, &[a], "after-truncated");
    let (_, stats) = out.report();
    assert_eq!(stats[0].truncated, 2);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    // Exactly max_datagram_bytes (default 1200): one unfragmented packet.
    assert_eq!(lines[0].len(), 1200);
    assert!(
        lines[0].starts_with("<163>1 2026-11-25T14:03:12Z "),
        "{}",
        &lines[0][..60]
    );
    assert!(lines[0].ends_with("...[truncated by kextwatch]"));
}

/// A CEF extension as (key, value) pairs: a key is letters and digits before an unescaped `=`, and
/// a value runs to the space before the next key (ArcSight's CEF rules).
fn cef_extension(ext: &str) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for token in ext.split(' ') {
        let key_len = token
            .find('=')
            .filter(|&i| i > 0 && token[..i].chars().all(|c| c.is_ascii_alphanumeric()));
        match (key_len, pairs.last_mut()) {
            (Some(i), _) => pairs.push((token[..i].to_string(), token[i + 1..].to_string())),
            (None, Some((_, v))) => {
                v.push(' ');
                v.push_str(token);
            }
            (None, None) => panic!("extension does not start with a key: {ext:?}"),
        }
    }
    pairs
}

#[test]
fn cef_and_rfc3164_payloads() {
    let Some(r) = Rsyslog::start_or_skip("cef_and_rfc3164_payloads") else {
        return;
    };
    let addr = format!("127.0.0.1:{}", r.tcp);
    let mut out = syslog_outputs(
        &sink(&addr, "payload = \"cef\"\nformat = \"rfc3164\""),
        None,
    );
    let lines = deliver(&r, &mut out, &alerts(), "cef");
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let mut extensions = Vec::new();
    // By hand from the README's mapping: high is CEF 8, critical 10; syslog PRI as in RFC 5424.
    let expected = [
        (
            163,
            "KW-4001",
            "System Integrity Protection change attempted",
            "8",
        ),
        (
            162,
            "KW-9002",
            "Kext activity after SIP or boot policy weakening",
            "10",
        ),
    ];
    for (line, (p, rule, name, cef_severity)) in lines.iter().zip(expected) {
        assert_eq!(pri(line), p, "{line}");
        // RFC 3164: `<PRI>Mmm dd hh:mm:ss HOST TAG[PID]: ` and the event's time.
        assert!(
            line[line.find('>').unwrap() + 1..].starts_with("Nov 25 14:03:1"),
            "{line}"
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
            fields[1..7],
            [
                "kextwatch",
                "kextwatch",
                env!("CARGO_PKG_VERSION"),
                rule,
                name,
                cef_severity
            ]
        );
        assert!(cur.contains("cs1Label=reasons"), "{cur}");
        extensions.push(cef_extension(&cur));
    }
    // The first alert's extension, key by key as the README's mapping lists them: event time in
    // milliseconds (2026-11-25T14:03:12Z), the reporting host, action, message, process and parent, signing
    // ids, user, reasons, techniques. No Team ID (Apple code), no file, no kext, not folded.
    let keys: Vec<&str> = extensions[0].iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "rt", "dvchost", "act", "msg", "dproc", "dpid", "sproc", "spid", "cs4Label", "cs4",
            "cs6Label", "cs6", "suid", "cs1Label", "cs1", "cs2Label", "cs2"
        ]
    );
    // dvchost is the host the alert names (the daemon's Mac), which is also the HOSTNAME of the
    // RFC 3164 header (`<PRI>Mmm dd hh:mm:ss HOST ...`).
    let header_host = lines[0][lines[0].find('>').unwrap() + 17..]
        .split(' ')
        .next()
        .unwrap();
    assert_eq!(extensions[0][1].1, header_host);
    let get = |k: &str| {
        extensions[0]
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
            .unwrap()
    };
    assert_eq!(get("rt"), "1795615392000");
    assert_eq!(get("act"), "exec");
    assert!(
        get("msg").starts_with("System Integrity Protection change attempted"),
        "{}",
        get("msg")
    );
    assert_eq!(get("dproc"), "/usr/bin/csrutil");
    assert_eq!(get("sproc"), "/bin/zsh");
    assert_eq!(
        (get("cs4"), get("cs6")),
        ("com.apple.csrutil", "com.apple.zsh")
    );
    assert_eq!(get("suid"), "501");
    assert_eq!(get("cs2"), "T1562.001,T1553.006");
    // The hostile path: '=' and '\' escaped, the newline as \n, still one message.
    assert!(
        lines[1].contains("filePath=/Library/Extensions/a\\nb]\"c\\\\d|e\\=f g.kext"),
        "{}",
        lines[1]
    );

    // A CEF sink's heartbeat is CEF too: SignatureID heartbeat, severity 0, counters in cs1.
    let mut out = syslog_outputs(
        &sink(&addr, "payload = \"cef\"\nformat = \"rfc3164\""),
        None,
    );
    out.heartbeat(
        "2026-11-26T12:00:00Z",
        &serde_json::json!({"kextwatch": {"version": "9.9.9"}}),
    )
    .unwrap();
    out.write(&tagged("after-cef-heartbeat")).unwrap();
    out.finish(WAIT).unwrap();
    let got = r.wait_marker("tag after-cef-heartbeat", WAIT);
    let hb = got
        .iter()
        .find(|l| l.contains("|heartbeat|"))
        .expect("a heartbeat line");
    let cef = &hb[hb.find("CEF:0|").unwrap()..];
    assert!(
        cef.starts_with(&format!(
            "CEF:0|kextwatch|kextwatch|{}|heartbeat|kextwatch heartbeat|0|rt=1795694400000 dvchost=",
            env!("CARGO_PKG_VERSION")
        )),
        "{cef}"
    );
    assert!(
        cef.ends_with("cs1Label=counters cs1={\"kextwatch\":{\"version\":\"9.9.9\"}}"),
        "{cef}"
    );
}

#[test]
fn tls_verifies_the_server_and_supports_client_certificates() {
    let Some(r) =
        Rsyslog::start_or_skip("tls_verifies_the_server_and_supports_client_certificates")
    else {
        return;
    };
    let tls = r.tls_files();
    let ok = format!(
        "transport = \"tls\"\ntls_ca_file = \"{}\"\ntls_server_name = \"localhost\"",
        tls.ca.display()
    );
    let mut out = syslog_outputs(&sink(&format!("127.0.0.1:{}", r.tls), &ok), None);
    let lines = deliver(&r, &mut out, &alerts(), "tls-verified");
    assert_expected_payloads(&lines, "tls");

    // Against the system roots the test CA is unknown: nothing is sent, the alert is spooled.
    let mut out = syslog_outputs(
        &sink(
            &format!("127.0.0.1:{}", r.tls),
            "transport = \"tls\"\ntls_server_name = \"localhost\"",
        ),
        None,
    );
    out.write(&tagged("unverified")).unwrap();
    out.finish(Duration::from_millis(500)).unwrap();
    let (_, stats) = out.report();
    assert_eq!(stats[0].spool_depth, 1);
    assert_eq!(stats[0].written, 0);
    let err = stats[0].last_error.clone().unwrap();
    assert!(
        err.contains("handshake") || err.contains("certificate"),
        "{err}"
    );

    // A wrong name fails too; turning verification off (loudly named) gets through.
    let mut out = syslog_outputs(&sink(&format!("127.0.0.1:{}", r.tls), "transport = \"tls\"\ntls_danger_accept_invalid_certs = true\ntls_server_name = \"not-the-server\""), None);
    assert!(deliver(&r, &mut out, &[], "insecure").is_empty());

    // Mutual TLS: the receiver requires a client certificate from the test CA.
    let mtls = format!(
        "{ok}\ntls_client_cert = \"{}\"\ntls_client_key = \"{}\"",
        tls.client_cert.display(),
        tls.client_key.display()
    );
    let mut out = syslog_outputs(&sink(&format!("127.0.0.1:{}", r.mtls), &mtls), None);
    assert!(deliver(&r, &mut out, &[], "mutual").is_empty());
    // The unverified alert never reached the receiver.
    assert!(!r.received().iter().any(|l| l.contains("tag unverified")));
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

/// The received lines once every sequence number in `seqs` has arrived at least once.
fn wait_seqs(r: &Rsyslog, seqs: std::ops::Range<u64>) -> Vec<String> {
    r.wait_until(&format!("sequence numbers {seqs:?}"), WAIT, |lines| {
        let got: std::collections::BTreeSet<u64> = lines
            .iter()
            .filter_map(|l| {
                let m = syslog_rfc5424::parse_message(l).ok()?;
                seq_of(&serde_json::from_str(&m.msg).ok()?)
            })
            .collect();
        seqs.clone().all(|s| got.contains(&s))
    })
}

#[test]
fn receiver_stopped_mid_stream_loses_nothing() {
    let Some(mut r) = Rsyslog::start_or_skip("receiver_stopped_mid_stream_loses_nothing") else {
        return;
    };
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
    assert_complete_in_order(&wait_seqs(&r, 0..10_000), 10_000);
}

#[test]
fn full_spool_evicts_oldest_and_counts() {
    // The receiver is down while 100 alerts go into a spool that holds about a quarter of them.
    let Some(mut r) = Rsyslog::start_or_skip("full_spool_evicts_oldest_and_counts") else {
        return;
    };
    r.stop();
    let state = tempfile::tempdir().unwrap();
    let cfg = sink(&format!("127.0.0.1:{}", r.tcp), "spool_max_bytes = 20000");
    let mut out = syslog_outputs(&cfg, Some(state.path()));
    for a in &numbered(100) {
        out.write(a).unwrap();
    }
    let s = out.report().1.remove(0);
    assert!(s.spool_evicted > 0 && s.spool_bytes <= 20_000, "{s:?}");
    assert_eq!(s.spool_depth + s.spool_evicted, 100);
    assert_eq!(s.written, 0);
    // Which ones went: the oldest. Back up, the receiver gets exactly the newest, in order.
    // Every alert went through the spool (the first one failed, the rest queued behind it).
    assert_eq!(s.spooled, 100, "{s:?}");
    assert!(s.failures >= 1, "{s:?}");
    r.resume();
    out.finish(WAIT).unwrap();
    let after = out.report().1.remove(0);
    assert_eq!(after.spool_depth, 0);
    let first_kept = s.spool_evicted;
    // Written once each: the survivors, nothing more (a lost connection would resend).
    assert_eq!(after.written, 100 - first_kept, "{after:?}");
    let lines = wait_seqs(&r, first_kept..100);
    let seqs: Vec<u64> = lines
        .iter()
        .map(|l| seq_of(&parse_5424(l).1).unwrap())
        .collect();
    assert_eq!(seqs, (first_kept..100).collect::<Vec<_>>());
}

#[test]
fn spool_survives_a_restart_and_drains() {
    let Some(mut r) = Rsyslog::start_or_skip("spool_survives_a_restart_and_drains") else {
        return;
    };
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
    assert_complete_in_order(&wait_seqs(&r, 0..500), 500);
}

#[test]
fn a_spool_drains_on_the_retry_timer_without_new_alerts() {
    let Some(mut r) =
        Rsyslog::start_or_skip("a_spool_drains_on_the_retry_timer_without_new_alerts")
    else {
        return;
    };
    r.stop();
    let state = tempfile::tempdir().unwrap();
    let cfg = sink(&format!("127.0.0.1:{}", r.tcp), "");
    let mut out = syslog_outputs(&cfg, Some(state.path()));
    for a in &numbered(300) {
        out.write(a).unwrap();
    }
    assert_eq!(out.report().1[0].spool_depth, 300);
    r.resume();
    // No new alert, no heartbeat, no finish: only the timer the daemon runs calls `retry`.
    let deadline = std::time::Instant::now() + WAIT;
    while out.report().1[0].spool_depth > 0 {
        assert!(std::time::Instant::now() < deadline, "spool never drained");
        out.retry().unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_complete_in_order(&wait_seqs(&r, 0..300), 300);
    // At start, what a killed run left is sent by the first retry alone.
    r.stop();
    {
        let mut out = syslog_outputs(&cfg, Some(state.path()));
        for a in &numbered(350)[300..] {
            out.write(a).unwrap();
        }
    }
    r.resume();
    let mut out = syslog_outputs(&cfg, Some(state.path()));
    out.retry().unwrap();
    assert_eq!(out.report().1[0].spool_depth, 0);
    wait_seqs(&r, 300..350);
}

#[cfg(target_os = "linux")]
#[test]
fn a_file_output_on_a_full_device_does_not_keep_alerts_from_syslog() {
    let Some(r) =
        Rsyslog::start_or_skip("a_file_output_on_a_full_device_does_not_keep_alerts_from_syslog")
    else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    // /dev/full fails every write with ENOSPC, like an alert file on a full disk.
    let toml = format!(
        "[[output]]\ntype = \"file\"\npath = \"/dev/full\"\n{}",
        sink(&format!("127.0.0.1:{}", r.tcp), "")
    );
    let config = Config::parse(&toml, "test").unwrap();
    let mut out = Outputs::open(&config.outputs, Some(state.path())).unwrap();
    let alerts = numbered(11);
    let mut failures = 0;
    for a in &alerts {
        // As the daemon does: write, then flush so files show each alert at once.
        let result = out.write(a).and_then(|()| out.flush());
        let e = result
            .expect_err("/dev/full cannot take an alert")
            .to_string();
        assert!(e.starts_with("cannot write alerts to /dev/full"), "{e}");
        failures += 1;
    }
    assert_eq!(failures, 11);
    out.finish(WAIT).unwrap_err();
    assert_complete_in_order(&wait_seqs(&r, 0..11), 11);
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
    let Some(r) = Rsyslog::start_or_skip("replay_delivers_to_the_siem_through_the_configured_sink")
    else {
        return;
    };
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
    assert!(stderr.contains(": 11 written"), "{stderr}");
    assert!(stderr.contains("syslog tcp://127.0.0.1:"), "{stderr}");
    // The replay exited after delivering: its last alert (the fold follow-up, sent last on the one
    // connection) arriving means all have.
    let lines = r.wait_until("the fold follow-up", WAIT, |l| {
        l.iter().any(|x| x.contains("\"folded\":{"))
    });
    assert_eq!(lines.len(), 11, "{lines:#?}");
    let rules: Vec<String> = lines
        .iter()
        .map(|l| parse_5424(l).1["rule"]["id"].as_str().unwrap().to_string())
        .collect();
    assert!(rules.contains(&"KW-4002".to_string()), "{rules:?}");
}

#[test]
fn test_alert_proves_the_route_or_says_it_failed() {
    let Some(r) = Rsyslog::start_or_skip("test_alert_proves_the_route_or_says_it_failed") else {
        return;
    };
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
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!(
        "test alert delivered to syslog tcp://127.0.0.1:{}",
        r.tcp
    )));
    let lines = r.wait_until("the test alert", WAIT, |l| !l.is_empty());
    // local4 (20) * 8 + low (5) = 165; MSGID `test`.
    assert_eq!(pri(&lines[0]), 165, "{}", lines[0]);
    let (m, body) = parse_5424(&lines[0]);
    assert_eq!(m.msgid.as_deref(), Some("test"));
    assert_eq!(body["kextwatch"]["test"], true);
    assert_eq!(body["rule"]["id"], "KW-0000");

    // Nothing listening: exit 1, and it says so.
    let (port, _closed) = support::rsyslog::closed_port();
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
    let Some(r) = Rsyslog::start_or_skip("heartbeats_carry_counters") else {
        return;
    };
    let mut out = syslog_outputs(&sink(&format!("127.0.0.1:{}", r.tcp), ""), None);
    // A known input: one kext load by a terminal user, one unrelated file open, one malformed line
    // and a sequence gap of 5 before the last event.
    let mut c = Capture::new(9);
    let sudo = cast::sudo();
    c.exec(
        &sudo,
        &sudo.exec_into("/sbin/kextload", "com.apple.kextload"),
        &["kextload", "/tmp/evil.kext"],
        "/tmp",
    );
    c.out.push_str("{\"not\": \"an event\"\n");
    c.seq += 5;
    c.open(&cast::mdworker(), "/etc/hosts");
    let summary = support::run_with(c.out.as_bytes(), Config::default_config()).1;
    out.heartbeat(
        "2026-11-26T12:00:00Z",
        &summary.heartbeat("replay", Some(true), 3).document(
            "2026-11-26T12:00:00Z",
            &kextwatch::alert::Host::named("mac-17"),
            kextwatch::alert::ecs::Beat::new_run(Some("B1".into())).advance(),
        ),
    )
    .unwrap();
    out.write(&tagged("after-heartbeat")).unwrap();
    out.finish(WAIT).unwrap();
    let lines = r.wait_marker("tag after-heartbeat", WAIT);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    // Informational: local4 (20) * 8 + 6.
    assert_eq!(pri(&lines[0]), 166);
    let m = syslog_rfc5424::parse_message(&lines[0]).unwrap();
    assert_eq!(m.msgid.as_deref(), Some("heartbeat"));
    assert_eq!(m.timestamp, Some(1_795_694_400), "2026-11-26T12:00:00Z");
    assert_eq!(m.sd["kextwatch@32473"]["type"], "heartbeat");
    let body: Value = serde_json::from_str(&m.msg).unwrap();
    support::ecs::assert_conforms(&body);
    // An ECS metric document naming the host and kextwatch, with a line a person can read.
    assert_eq!(body["event"]["kind"], "metric");
    assert_eq!(body["event"]["dataset"], "kextwatch.heartbeat");
    assert_eq!(body["host"]["name"], "mac-17");
    assert_eq!(body["agent"]["name"], "kextwatch");
    assert_eq!(body["agent"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        body["message"],
        "kextwatch heartbeat: source replay, 1 events analysed, 1 alerts"
    );
    let k = &body["kextwatch"];
    assert_eq!(
        k["sources"]["replay"],
        serde_json::json!({
            "lines": 3,
            "events_analysed": 1,
            "events_skipped": 1,
            "dropped": 0,
            "malformed": 1,
            "drops_seq_gaps": 5,
            "restarts": 0,
        })
    );
    assert_eq!(k["alerts"], serde_json::json!({"high": 1}));
    assert_eq!(k["kextpolicy_readable"], true);
    assert_eq!(k["config_generation"], 3);
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
    assert_eq!(big.len(), 1);

    for extra in [
        "transport = \"tcp\"",
        "transport = \"tcp\"\nframing = \"lf\"",
        "transport = \"tls\"\ntls_danger_accept_invalid_certs = true",
    ] {
        let Some(r) = Rsyslog::start_or_skip(
            "hostile_values_and_100_kb_arguments_over_every_stream_transport",
        ) else {
            return;
        };
        let port = if extra.contains("tls") { r.tls } else { r.tcp };
        let mut out = syslog_outputs(&sink(&format!("127.0.0.1:{port}"), extra), None);
        let mut all = alerts();
        all.extend(big.clone());
        // Everything sent before the marker is in; a forged second message would be extra lines.
        let lines = deliver(&r, &mut out, &all, extra);
        let short: Vec<String> = lines
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
            lines.len(),
            3,
            "{extra}: exactly one message per alert: {short:#?}"
        );
        assert_expected_payloads(&lines[..2], extra);
        let (_, body) = parse_5424(&lines[2]);
        // The argument is clipped at 4 KiB with a marker saying how much went, its characters intact.
        let arg = body["process"]["args"][1].as_str().unwrap();
        assert_eq!(
            arg,
            format!(
                "{}...[{} more bytes clipped by kextwatch]",
                &hostile[..4096],
                hostile.len() - 4096
            ),
            "{extra}"
        );
        for (line, a) in lines.iter().zip(&all) {
            assert_eq!(
                parse_5424(line).1,
                serde_json::to_value(a).unwrap(),
                "{extra}"
            );
        }
    }
}
