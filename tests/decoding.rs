//! eslogger decoding: message versions, both audit-token shapes, field placements, and bad input that
//! must be counted and reported without stopping the replay.

use kextwatch_testkit as support;

use kextwatch::config::Config;
use kextwatch::event::AllEvents;
use kextwatch::event::{EventKind, NO_AUDIT_USER};
use kextwatch::source::eslogger::{decode_line, Decoded};
use support::eslogger::{cast, Capture};
use support::{rule, run_with};

fn attack(version: u32) -> String {
    let mut c = Capture::new(version);
    c.in_terminal(
        "/usr/bin/csrutil",
        "com.apple.csrutil",
        &["csrutil", "disable"],
        "/",
    );
    c.after_ms(1000);
    c.kextload(&cast::kernelmanagerd(), "com.evil.driver");
    c.out
}

#[test]
fn every_message_version_gives_the_same_alerts() {
    let reference = run_with(attack(6).as_bytes(), Config::default_config()).0;
    assert_eq!(reference.len(), 2);
    for v in [4, 7, 9, 10, 11] {
        let (alerts, summary) = run_with(attack(v).as_bytes(), Config::default_config());
        assert_eq!(alerts, reference, "message version {v}");
        assert_eq!(summary.input.versions.get(&v), Some(&2));
    }
}

#[test]
fn process_attribution_is_complete() {
    let mut c = Capture::new(10); // array audit tokens
    c.in_terminal(
        "/sbin/kextload",
        "com.apple.kextload",
        &["kextload", "x.kext"],
        "/tmp",
    );
    let Decoded::Event(ev) = decode_line(c.out.trim_end(), &AllEvents).unwrap() else {
        panic!()
    };
    let p = &ev.process;
    assert_eq!(
        (p.pid, p.ppid, p.auid, p.euid, p.asid),
        (4100, 4099, 501, 501, 100_017)
    );
    // No other process is responsible for the shell: ES names the process itself.
    assert_eq!(
        (p.responsible_pid, p.responsible_pidversion),
        (Some(4100), Some(p.pidversion))
    );
    assert_eq!(p.parent_pidversion, Some(4099 * 7 + 100));
    assert_eq!(p.tty.as_deref(), Some("/dev/ttys003"));
    assert_eq!(p.signing_id.as_deref(), Some("com.apple.zsh"));
    assert_eq!(p.team_id, None);
    assert_eq!(p.cdhash.as_ref().map(String::len), Some(40));
    assert!(p.is_platform_binary);
    assert_eq!(p.cs_flags & 0x1, 0x1);
    let EventKind::Exec(e) = &ev.kind else {
        panic!()
    };
    assert_eq!(e.target.executable, "/sbin/kextload");
    assert_eq!(e.args, ["kextload", "x.kext"]);
    assert_eq!(e.cwd.as_deref(), Some("/tmp"));
}

#[test]
fn rename_destination_is_read_from_both_placements() {
    let nested = r#"{"event_type":25,"version":6,"time":"2026-11-20T14:03:12.5Z","process":{"audit_token":{"pid":9,"auid":501}},"event":{"rename":{"source":{"path":"/tmp/a.kext"},"destination_type":1,"destination":{"new_path":{"dir":{"path":"/Library/Extensions/"},"filename":"a.kext"}}}}}"#;
    let flat = r#"{"event_type":25,"version":6,"time":"2026-11-20T14:03:12.5Z","process":{"audit_token":{"pid":9,"auid":501}},"event":{"rename":{"source":{"path":"/tmp/a.kext"},"destination_type":0,"existing_file":{"path":"/Library/Extensions/a.kext"}}}}"#;
    for line in [nested, flat] {
        let Decoded::Event(ev) = decode_line(line, &AllEvents).unwrap() else {
            panic!()
        };
        assert_eq!(
            ev.kind,
            EventKind::Rename {
                source: "/tmp/a.kext".into(),
                destination: "/Library/Extensions/a.kext".into()
            }
        );
    }
}

#[test]
fn minimal_process_objects_get_safe_defaults() {
    let line = r#"{"event_type":17,"time":"2026-11-20T14:03:12Z","process":{},"event":{"kextload":{"identifier":"com.x"}},"some_future_field":[1,2,{"a":null}]}"#;
    let Decoded::Event(ev) = decode_line(line, &AllEvents).unwrap() else {
        panic!()
    };
    assert_eq!(ev.process.auid, NO_AUDIT_USER);
    assert_eq!(ev.process.pid, -1);
    assert_eq!(
        ev.kind,
        EventKind::KextLoad {
            identifier: "com.x".into()
        }
    );
}

#[test]
fn bad_lines_are_counted_with_line_numbers_and_processing_goes_on() {
    let good = attack(6);
    let mut lines: Vec<String> = good.lines().map(String::from).collect();
    lines.insert(1, "{not json".into()); // line 2
    lines.insert(2, r#"{"event_type":"nine","event":{}}"#.into()); // line 3: wrong type
    lines.insert(
        3,
        r#"{"event_type":17,"process":{},"event":{"kextload":{"identifier":"x"}}}"#.into(),
    ); // 4: no time
    lines.insert(4, r#"{"event_type":9999,"version":12,"time":"2027-01-01T00:00:00Z","process":{},"event":{"quantum_flux":{}}}"#.into()); // 5: future type
    lines.insert(5, String::new()); // 6: blank
    lines.insert(6, r#"{"event_type":17,"time":"yesterday","process":{},"event":{"kextload":{"identifier":"x"}}}"#.into()); // 7
    let mut input = lines.join("\n").into_bytes();
    input.extend_from_slice(b"\n{\"event_type\":9,\"time\":\"2026-1"); // truncated last line (line 9)
    let (alerts, s) = run_with(&input, Config::default_config());
    assert_eq!(
        alerts.iter().map(rule).collect::<Vec<_>>(),
        ["KW-4001", "KW-9002"]
    );
    let i = &s.input;
    assert_eq!(i.lines, 9);
    assert_eq!(i.blank, 1);
    assert_eq!(i.malformed, 5);
    let numbers: Vec<u64> = i.malformed_examples.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, [2, 3, 4, 7, 9]);
    assert!(i.malformed_examples[2].1.contains("missing field `time`"));
    assert!(i.malformed_examples[3].1.contains("bad timestamp"));
    assert_eq!(i.unknown_types().collect::<Vec<_>>(), [(9999, 1)]);
    let text = s.to_string();
    assert!(text.contains("malformed line 2:"), "{text}");
    assert!(text.contains("event_type 9999 (unknown) 1"), "{text}");
}

#[test]
fn non_utf8_paths_are_decoded_with_replacement_and_counted() {
    let c = {
        let mut c = Capture::new(6);
        let zsh = cast::terminal_zsh();
        c.create(
            &zsh.exec_into("/bin/cp", "com.apple.cp"),
            "/Library/Extensions",
            "EVILNAME.kext",
        );
        c.out
    };
    let mut bytes = c.into_bytes();
    let pos = bytes.windows(8).position(|w| w == b"EVILNAME").unwrap();
    bytes[pos..pos + 2].copy_from_slice(&[0xff, 0xfe]);
    let (alerts, s) = run_with(&bytes, Config::default_config());
    assert_eq!(s.input.non_utf8, 1);
    assert_eq!(alerts.len(), 1);
    assert_eq!(
        alerts[0]["file"]["path"],
        "/Library/Extensions/\u{fffd}\u{fffd}ILNAME.kext"
    );
}

#[test]
fn escaped_and_control_characters_in_paths_survive_to_the_alert() {
    let line = r#"{"event_type":13,"time":"2026-11-20T14:03:12Z","process":{"audit_token":{"pid":5},"executable":{"path":"/bin/cp"},"tty":{"path":"/dev/ttys001"}},"event":{"create":{"destination_type":1,"destination":{"new_path":{"dir":{"path":"\/Library\/Extensions"},"filename":"a\u001b[31m\nb.kext"}}}}}"#;
    let (alerts, _) = run_with(line.as_bytes(), Config::default_config());
    assert_eq!(
        alerts[0]["file"]["path"],
        "/Library/Extensions/a\u{1b}[31m\nb.kext"
    );
}

#[test]
fn a_10_mb_line_is_handled_and_an_oversized_one_is_skipped() {
    // A real event with a 10 MB environment decodes (exec of a tool).
    let mut c = Capture::new(6);
    c.in_terminal(
        "/usr/bin/csrutil",
        "com.apple.csrutil",
        &["csrutil", "disable"],
        "/",
    );
    let big_env = format!("\"env\":[\"X={}\",", "A".repeat(10 * 1024 * 1024));
    let line = c.out.replacen("\"env\":[", &big_env, 1);
    let (alerts, s) = run_with(line.as_bytes(), Config::default_config());
    assert_eq!((alerts.len(), s.input.malformed), (1, 0));

    // Past the 16 MiB limit: skipped, counted, and the next line still processed.
    let mut input = vec![b'x'; 17 * 1024 * 1024];
    input.push(b'\n');
    input.extend_from_slice(line.as_bytes());
    let (alerts, s) = run_with(&input, Config::default_config());
    assert_eq!(
        (alerts.len(), s.input.too_long, s.input.malformed),
        (1, 1, 1)
    );
}

#[test]
fn sequence_gaps_are_reported_as_drops() {
    let mut c = Capture::new(6);
    c.kextload(&cast::kernelmanagerd(), "com.apple.a");
    c.seq += 41; // the producer dropped 41 messages
    c.kextload(&cast::kernelmanagerd(), "com.apple.b");
    let (_, s) = run_with(c.out.as_bytes(), Config::default_config());
    assert_eq!(s.input.seq_gap_events, 41);
    assert!(s.to_string().contains("41 events missing"));
}

#[test]
fn irrelevant_events_are_skipped_by_type_not_decoded() {
    let mut c = Capture::new(6);
    c.open(&cast::mdworker(), "/etc/hosts");
    c.fork(&cast::launchd(), &cast::slack());
    c.exit(&cast::slack());
    c.write(&cast::slack(), "/Users/alice/x");
    let (_, s) = run_with(c.out.as_bytes(), Config::default_config());
    // A fork feeds lineage; the exit, the open and the write elsewhere are skipped undecoded.
    assert_eq!(s.input.decoded, 1);
    assert_eq!(s.input.skipped(), 3);
    assert_eq!(s.input.skipped_by_type.get(&10), Some(&1));
    assert_eq!(s.input.skipped_by_type.get(&15), Some(&1));
    assert_eq!(s.input.skipped_by_type.get(&33), Some(&1));
}

#[test]
fn invented_event_types_do_not_grow_memory() {
    let mut input = String::new();
    for t in 0..5000u32 {
        input.push_str(&format!(
            "{{\"event_type\":{},\"version\":{},\"time\":\"2026-11-20T14:03:12Z\",\"process\":{{}},\"event\":{{\"x\":{{}}}}}}\n",
            100_000 + t,
            1000 + t
        ));
    }
    let (_, s) = run_with(input.as_bytes(), Config::default_config());
    assert_eq!(s.input.skipped(), 5000);
    assert!(s.input.skipped_by_type.len() <= 512 && s.input.versions.len() <= 512);
    assert_eq!(
        s.input.skipped_other_types,
        5000 - s.input.skipped_by_type.len() as u64
    );
    assert!(s.to_string().contains("other types"));
}

/// Real eslogger output published by others (tests/fixtures/eslogger-public/SOURCES.md): every field
/// detection reads, compared with the values read off each line by hand.
#[test]
fn real_eslogger_lines_from_public_sources_decode_field_for_field() {
    use kextwatch::event::{EventKind, NO_AUDIT_USER};
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/eslogger-public/mullvadvpn-app.jsonl"
    ))
    .unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4);

    // 1. exit of ipconfig (macOS 15, version 9): a root daemon with no audit user.
    let ev = support::event(lines[0]);
    assert_eq!(
        (ev.version, ev.seq_num, ev.global_seq_num),
        (9, Some(362), Some(1103))
    );
    assert_eq!(
        ev.time_ns, 1_754_579_589_811_587_464,
        "2025-08-07T15:13:09.811587464Z"
    );
    let p = &ev.process;
    assert_eq!(
        (p.pid, p.pidversion, p.ppid, p.original_ppid),
        (11221, 170692, 532, 532)
    );
    assert_eq!(
        (p.auid, p.euid, p.ruid, p.asid),
        (NO_AUDIT_USER, 0, 0, 100017)
    );
    assert_eq!(
        (p.session_id, p.group_id, p.responsible_pid),
        (532, 532, Some(532))
    );
    assert_eq!(p.executable, "/usr/sbin/ipconfig");
    assert_eq!(p.signing_id.as_deref(), Some("com.apple.ipconfig"));
    assert_eq!(p.team_id, None);
    assert_eq!(
        p.cdhash.as_deref().map(str::to_ascii_lowercase).as_deref(),
        Some("f988105881118cd77ef87293d97dece8e193fa98")
    );
    assert_eq!(p.cs_flags, 637_623_057);
    assert!(p.is_platform_binary && p.tty.is_none());
    assert_eq!(ev.kind, EventKind::Exit { status: 0 });

    // 2. exec in a terminal (macOS 15): the process is the image before the exec, the target the
    // image after it; same pid, pidversion bumped.
    let ev = support::event(lines[1]);
    assert_eq!((ev.version, ev.global_seq_num), (9, Some(75)));
    let p = &ev.process;
    assert_eq!((p.pid, p.pidversion, p.ppid), (97391, 149091, 58916));
    assert_eq!(p.executable, "/bin/nu");
    assert_eq!(p.signing_id.as_deref(), Some("nu-b9fb5b9dbba2e494"));
    assert_eq!(
        (p.auid, p.euid, p.asid, p.responsible_pid),
        (501, 501, 100019, Some(938))
    );
    assert_eq!(p.tty.as_deref(), Some("/dev/ttys003"));
    let EventKind::Exec(exec) = &ev.kind else {
        panic!("{:?}", ev.kind)
    };
    let t = &exec.target;
    assert_eq!((t.pid, t.pidversion, t.ppid), (97391, 149092, 58916));
    // The exec kept the pid and bumped the pidversion of the image before it.
    assert_eq!((ev.process.pid, ev.process.pidversion), (97391, 149091));
    assert_eq!(
        (
            t.parent_pidversion,
            t.responsible_pid,
            t.responsible_pidversion
        ),
        (Some(87724), Some(938), Some(2424))
    );
    assert_eq!(t.executable, "/bin/connection-checker");
    assert_eq!(
        t.signing_id.as_deref(),
        Some("connection_checker-04fde7bdb8bceee3")
    );
    assert_eq!((t.team_id.as_deref(), t.is_platform_binary), (None, false));
    // 570556931 = 0x22020203: valid, ad hoc, kill, linker-signed, signed: ad hoc code.
    assert_eq!(t.cs_flags, 0x2202_0203);
    assert!(t.is_unsigned_or_adhoc());
    assert_eq!(exec.args, ["/bin/connection-checker"]);
    assert_eq!(exec.cwd.as_deref(), Some("/bin/mullvadvpn-app"));

    // 3. fork (macOS 26, version 10): audit tokens as arrays [auid, euid, egid, ruid, rgid, pid,
    // asid, pidversion].
    let ev = support::event(lines[2]);
    assert_eq!(
        (ev.version, ev.seq_num, ev.global_seq_num),
        (10, Some(0), Some(1))
    );
    let p = &ev.process;
    assert_eq!((p.pid, p.pidversion, p.ppid), (19745, 35165, 1));
    assert_eq!((p.auid, p.euid, p.ruid, p.asid), (501, 501, 501, 100013));
    assert_eq!(
        p.executable,
        "/Applications/Mullvad VPN.app/Contents/MacOS/Mullvad VPN"
    );
    assert_eq!(
        (p.signing_id.as_deref(), p.team_id.as_deref()),
        (Some("net.mullvad.vpn"), Some("CKG9MXH72F"))
    );
    assert!(!p.is_unsigned_or_adhoc());
    assert_eq!(
        (
            p.parent_pidversion,
            p.responsible_pid,
            p.responsible_pidversion
        ),
        (Some(1029), Some(19745), Some(35165))
    );
    assert_eq!(
        ev.kind,
        EventKind::Fork {
            child_pid: 21497,
            child_pidversion: 38282
        }
    );

    // 4. exec (macOS 27 beta, version 11): launchd's xpcproxy turns into the service it starts.
    let ev = support::event(lines[3]);
    assert_eq!((ev.version, ev.global_seq_num), (11, Some(16)));
    assert_eq!(ev.process.executable, "/usr/libexec/xpcproxy");
    assert_eq!(
        ev.process.signing_id.as_deref(),
        Some("com.apple.xpc.proxy")
    );
    assert_eq!((ev.process.pid, ev.process.pidversion), (11085, 25188));
    let EventKind::Exec(exec) = &ev.kind else {
        panic!("{:?}", ev.kind)
    };
    assert_eq!(
        exec.target.executable,
        "/System/Library/PrivateFrameworks/IntlPreferences.framework/Support/localizationswitcherd"
    );
    assert_eq!((exec.target.pid, exec.target.pidversion), (11085, 25189));
    assert_eq!(exec.target.auid, 501);
    assert!(exec.target.is_platform_binary);
    assert_eq!(exec.cwd.as_deref(), Some("/"));

    // None of this everyday activity is an alert, at any severity.
    assert!(support::run_min(&text, "info").is_empty());
}

#[test]
fn only_what_detection_needs_is_decoded() {
    use kextwatch::detect::KextInterest;
    use kextwatch::source::eslogger::{decode_line, Decoded};
    let interest = KextInterest::new(&kextwatch::config::Config::default_config());
    let zsh = support::eslogger::cast::terminal_zsh();
    let mut c = support::eslogger::Capture::new(8);
    c.exec(
        &zsh,
        &zsh.exec_into("/bin/ls", "com.apple.ls"),
        &["ls", "-l"],
        "/",
    );
    c.exec(
        &zsh,
        &zsh.exec_into("/sbin/kextload", "com.apple.kextload"),
        &["kextload", "/Library/Extensions/A.kext"],
        "/",
    );
    c.write(&zsh, "/Users/alice/notes.txt");
    c.write(&zsh, "/Library/Extensions/A.kext/Contents/Info.plist");
    let kinds: Vec<String> = c
        .out
        .lines()
        .map(|l| match decode_line(l, &interest).unwrap() {
            Decoded::Event(ev) => match ev.kind {
                EventKind::Exec(e) => format!("exec {} {:?}", e.target.executable, e.args),
                other => format!("{other:?}"),
            },
            Decoded::Skipped(_) => "skipped".into(),
        })
        .collect();
    // Every exec reaches lineage, but only a tool's arguments are decoded.
    assert_eq!(
        kinds,
        [
            "exec /bin/ls []",
            r#"exec /sbin/kextload ["kextload", "/Library/Extensions/A.kext"]"#,
            "skipped",
            r#"Write { path: "/Library/Extensions/A.kext/Contents/Info.plist" }"#
        ]
    );
}

#[test]
fn the_events_asked_of_eslogger_are_the_ones_decoded_and_documented() {
    use kextwatch::source::eslogger::event_type;
    // Every event the daemon asks eslogger for is one the decoder knows by that name.
    let known: Vec<&str> = (0..200).filter_map(event_type::name).collect();
    for e in kextwatch::source::eslogger::ESLOGGER_EVENTS {
        assert!(known.contains(&e), "{e}");
    }
    // The README's capture command asks for the same events, so a replay sees what the daemon sees.
    let readme = include_str!("../README.md");
    let wanted = kextwatch::source::eslogger::ESLOGGER_EVENTS.join(" ");
    let commands: Vec<&str> = readme
        .lines()
        .filter_map(|l| l.trim().strip_prefix("sudo eslogger "))
        .collect();
    assert_eq!(commands.len(), 2, "{commands:?}");
    for c in commands {
        let events: Vec<&str> = c
            .split_whitespace()
            .take_while(|w| !w.starts_with(['>', '|']))
            .collect();
        let mut a = events.clone();
        let mut b: Vec<&str> = wanted.split(' ').collect();
        a.sort_unstable();
        b.sort_unstable();
        assert_eq!(a, b, "README: sudo eslogger {c}");
    }
}
