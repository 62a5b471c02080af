//! The `kextwatch` binary as users run it: exit codes, stdin, formats, config, summary.

use kextwatch_testkit as support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_kextwatch");
const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/kext-attack.jsonl");

fn kextwatch(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn replay_sample_prints_contract_alerts_and_a_summary() {
    let out = kextwatch(&["replay", SAMPLE], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(support::parse_alert)
        .collect();
    assert_eq!(lines.len(), 9);
    for a in &lines {
        assert!(a["@timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(["info", "low", "medium", "high", "critical"]
            .contains(&a["kextwatch"]["severity"].as_str().unwrap()));
        assert!(a["rule"]["id"].as_str().unwrap().starts_with("KW-"));
        assert!(!a["rule"]["name"].as_str().unwrap().is_empty());
        assert!(!support::techniques(a).is_empty());
        assert!(!a["kextwatch"]["reasons"].as_array().unwrap().is_empty());
        assert!(a["process"]["executable"].is_string());
        assert!(a["user"]["id"].is_string());
    }
    let err = text(&out.stderr);
    assert!(err.contains("read 394 lines"), "{err}");
    assert!(err.contains("alerts: 9 (critical 8, high 1)"), "{err}");
}

#[test]
fn replay_writes_the_same_alerts_as_cef_lines() {
    let json = kextwatch(&["replay", SAMPLE], None);
    let rules: Vec<String> = text(&json.stdout)
        .lines()
        .map(|l| {
            let a: serde_json::Value = support::parse_alert(l);
            a["rule"]["id"].as_str().unwrap().to_string()
        })
        .collect();
    let cef = kextwatch(&["replay", SAMPLE, "--format", "cef"], None);
    assert_eq!(cef.status.code(), Some(0), "{}", text(&cef.stderr));
    let lines: Vec<String> = text(&cef.stdout).lines().map(String::from).collect();
    assert_eq!(lines.len(), rules.len());
    for (line, rule) in lines.iter().zip(&rules) {
        // CEF:0|Vendor|Product|Version|SignatureID|...: the same rule, in the same order.
        let fields: Vec<&str> = line.splitn(8, '|').collect();
        assert_eq!(&fields[..2], ["CEF:0", "kextwatch"], "{line}");
        assert_eq!(fields[4], rule, "{line}");
        assert!(fields[7].contains("cs1Label=reasons"), "{line}");
    }
}

#[test]
fn replay_from_stdin_matches_replay_from_file() {
    let input = std::fs::read(SAMPLE).unwrap();
    let from_stdin = kextwatch(&["replay", "-", "--quiet"], Some(&input));
    let from_file = kextwatch(&["replay", SAMPLE, "--quiet"], None);
    assert_eq!(from_stdin.status.code(), Some(0));
    assert_eq!(from_stdin.stdout, from_file.stdout);
    assert!(from_stdin.stderr.is_empty());
}

#[test]
fn text_format_and_min_severity() {
    let out = kextwatch(
        &[
            "replay",
            SAMPLE,
            "--format",
            "text",
            "--min-severity",
            "high",
            "-q",
        ],
        None,
    );
    let stdout = text(&out.stdout);
    let first = stdout.lines().next().unwrap();
    assert!(
        first.contains(" HIGH     KW-4002 Boot arguments or SIP NVRAM variable changed: "),
        "{first}"
    );
    let all_info = kextwatch(&["replay", SAMPLE, "--min-severity", "info", "-q"], None);
    assert!(text(&all_info.stdout).lines().count() > 9);
    let critical = kextwatch(
        &["replay", SAMPLE, "--min-severity", "critical", "-q"],
        None,
    );
    assert_eq!(text(&critical.stdout).lines().count(), 8);
}

#[test]
fn config_with_file_output_writes_alerts_there() {
    let dir = tempfile::tempdir().unwrap();
    let alerts = dir.path().join("alerts.jsonl");
    let cfg = dir.path().join("k.toml");
    std::fs::write(
        &cfg,
        format!("[detection]\nmin_severity = \"critical\"\n\n[[output]]\ntype = \"file\"\npath = {:?}\n", alerts),
    )
    .unwrap();
    let out = kextwatch(
        &["replay", SAMPLE, "--config", cfg.to_str().unwrap(), "-q"],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(out.stdout.is_empty());
    assert_eq!(std::fs::read_to_string(&alerts).unwrap().lines().count(), 8);
    // Appended, never truncated.
    kextwatch(
        &["replay", SAMPLE, "--config", cfg.to_str().unwrap(), "-q"],
        None,
    );
    assert_eq!(
        std::fs::read_to_string(&alerts).unwrap().lines().count(),
        16
    );
}

#[test]
fn check_config_exit_codes_and_messages() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/kextwatch.toml");
    let ok = kextwatch(&["check-config", shipped], None);
    assert_eq!(ok.status.code(), Some(0));
    assert!(text(&ok.stdout).contains(": ok (1 team ids, 2 kexts, 1 initiators allowlisted"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[allowlist]\nteam_ids = [\"VB5E2TV963\"]\ninitiator = []\n",
    )
    .unwrap();
    let out = kextwatch(&["check-config", bad.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("bad.toml:3:1:") && err.contains("initiator"),
        "{err}"
    );

    // replay refuses to run on a broken config, with the same message.
    let out = kextwatch(&["replay", SAMPLE, "--config", bad.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("bad.toml:3:1:"));
}

#[test]
fn unreadable_input_and_usage_errors() {
    let out = kextwatch(&["replay", "/nonexistent/capture.jsonl"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read /nonexistent/capture.jsonl: No such file"));
    let out = kextwatch(&["replay", SAMPLE, "--min-severity", "urgent"], None);
    assert_eq!(out.status.code(), Some(2));
    let out = kextwatch(&["frobnicate"], None);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn alerts_stream_out_while_stdin_stays_open() {
    use std::io::BufRead;
    // The first two lines of the sample's attack are the nvram weakening; find it and feed only that.
    let sample = std::fs::read_to_string(SAMPLE).unwrap();
    let nvram = sample
        .lines()
        .find(|l| l.contains("amfi_get_out_of_my_way") && l.contains("\"event_type\":9"))
        .unwrap();
    let mut child = Command::new(BIN)
        .args(["replay", "-", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "{nvram}").unwrap();
    stdin.flush().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap();
        tx.send(line).unwrap();
    });
    // stdin is still open: the alert must arrive without waiting for end of input.
    let line = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("alert before end of input");
    assert!(line.contains("\"KW-4002\""), "{line}");
    drop(stdin);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn text_format_escapes_control_characters_from_events() {
    let line = r#"{"event_type":13,"time":"2026-11-20T14:03:12Z","process":{"audit_token":{"pid":5},"executable":{"path":"/bin/cp\u001b]0;owned\u0007"},"tty":{"path":"/dev/ttys001"}},"event":{"create":{"destination_type":1,"destination":{"new_path":{"dir":{"path":"/Library/Extensions"},"filename":"a\u001b[2J\nFAKE ALERT.kext"}}}}}"#;
    let out = kextwatch(
        &["replay", "-", "--format", "text", "-q"],
        Some(line.as_bytes()),
    );
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(
        !stdout.contains('\u{1b}') && !stdout.contains('\u{7}'),
        "{stdout:?}"
    );
    assert!(stdout.contains(r"a\u{1b}[2J\nFAKE ALERT.kext"), "{stdout}");
}

#[test]
fn policy_show_prints_tables_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("KextPolicy");
    drop(support::kextpolicy::realistic(&db, 8));
    let out = kextwatch(&["policy", "show", "--db", db.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(
        table.contains("kext_policy: user approvals (3 rows)"),
        "{table}"
    );
    assert!(table.contains("kext_load_history_v3: loaded kexts (4 rows)"));
    let vbox = table
        .lines()
        .find(|l| l.contains("org.virtualbox.kext.VBoxDrv") && l.contains("Oracle"))
        .unwrap();
    assert!(
        vbox.contains("VB5E2TV963") && vbox.contains("yes"),
        "{vbox}"
    );

    let out = kextwatch(
        &[
            "policy",
            "show",
            "--db",
            db.to_str().unwrap(),
            "--format",
            "json",
        ],
        None,
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kext_load_history_v3"].as_array().unwrap().len(), 4);
    assert_eq!(
        v["kext_policy_mdm"][0]["payload_uuid"],
        "3C1F6F0A-6D0B-4D3E-9E57-0D6B3F0E2A11"
    );

    let out = kextwatch(&["policy", "show", "--db", "/nonexistent/KextPolicy"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/KextPolicy: no such database"));
}

#[test]
fn policy_show_and_diff_leave_a_collected_copy_as_they_found_it() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (dir.path().join("baseline"), dir.path().join("collected"));
    drop(support::kextpolicy::realistic(&old, 8));
    drop(support::kextpolicy::realistic(&new, 8));
    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let before = listing();
    assert_eq!(before, ["baseline", "collected"]);
    let show = kextwatch(&["policy", "show", "--db", new.to_str().unwrap()], None);
    assert_eq!(show.status.code(), Some(0), "{}", text(&show.stderr));
    assert!(text(&show.stdout).contains("kext_policy: user approvals (3 rows)"));
    let diff = kextwatch(
        &[
            "policy",
            "diff",
            old.to_str().unwrap(),
            new.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(diff.status.code(), Some(0), "{}", text(&diff.stderr));
    // The WAL-mode databases got no -wal or -shm files beside them.
    assert_eq!(listing(), before);
}

#[test]
fn policy_diff_prints_the_alerts_of_a_change() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (dir.path().join("baseline"), dir.path().join("collected"));
    drop(support::kextpolicy::realistic(&old, 8));
    let c = support::kextpolicy::realistic(&new, 8);
    support::kextpolicy::approve(&c, "ABCDE12345", "com.evil.driver", "Evil Ltd", true);
    support::kextpolicy::loaded(
        &c,
        "/Library/Extensions/Evil.kext",
        None,
        "com.evil.driver",
        "2026-11-21 03:12:44",
        None,
    );
    drop(c);
    let out = kextwatch(
        &[
            "policy",
            "diff",
            old.to_str().unwrap(),
            new.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let alerts: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(support::parse_alert)
        .collect();
    let got: Vec<(&str, &str)> = alerts
        .iter()
        .map(|a| {
            (
                a["rule"]["id"].as_str().unwrap(),
                a["kextwatch"]["severity"].as_str().unwrap(),
            )
        })
        .collect();
    // The load (timed by its last_seen) comes before the approval (timed by the copy's mtime).
    assert_eq!(got, [("KW-5005", "critical"), ("KW-5001", "high")]);
    assert_eq!(alerts[0]["@timestamp"], "2026-11-21T03:12:44Z");
    assert!(
        text(&out.stderr).contains(": 2 changes; alerts: 2 (critical 1, high 1)"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn replay_with_kext_policy_uses_recorded_team_ids() {
    use support::eslogger::{cast, Capture};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("KextPolicy");
    drop(support::kextpolicy::realistic(&db, 8));
    let mut c = Capture::new(9);
    c.kextload(&cast::kernelmanagerd(), "com.legacy.unsigned");
    let plain = kextwatch(&["replay", "-", "-q"], Some(c.out.as_bytes()));
    let enriched = kextwatch(
        &["replay", "-", "-q", "--kext-policy", db.to_str().unwrap()],
        Some(c.out.as_bytes()),
    );
    let sev = |o: &Output| {
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()["kextwatch"]["severity"]
            .clone()
    };
    assert_eq!(sev(&plain), "medium");
    assert_eq!(sev(&enriched), "critical");
}

fn fixture_kexts() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kexts")
}

#[test]
fn inventory_table_json_and_baseline() {
    let root = fixture_kexts();
    let out = kextwatch(&["inventory", root.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let dev = table
        .lines()
        .find(|l| l.contains("Developer.kext"))
        .unwrap();
    assert!(
        dev.contains("com.example.kextwatch.developer")
            && dev.contains("K3XW9TESTQ")
            && dev.contains("developer"),
        "{dev}"
    );
    assert!(text(&out.stderr).contains("7 kexts (0 with errors)"));

    let out = kextwatch(
        &["inventory", root.to_str().unwrap(), "--format", "json"],
        None,
    );
    let kexts: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(kexts.len(), 7);
    for k in &kexts {
        for field in [
            "path",
            "bundle_id",
            "version",
            "team_id",
            "signature",
            "cdhash",
            "arch",
        ] {
            assert!(k.get(field).is_some(), "{field} missing in {k}");
        }
    }
    let universal = kexts
        .iter()
        .find(|k| k["bundle_id"] == "com.example.kextwatch.universal64")
        .unwrap();
    assert_eq!(universal["arch"], serde_json::json!(["x86_64", "arm64"]));

    // The baseline is a config file check-config accepts.
    let out = kextwatch(&["inventory", root.to_str().unwrap(), "--baseline"], None);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("baseline.toml");
    std::fs::write(&cfg, &out.stdout).unwrap();
    let check = kextwatch(&["check-config", cfg.to_str().unwrap()], None);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}\n{}",
        text(&check.stderr),
        text(&out.stdout)
    );
    assert!(
        text(&check.stdout).contains("3 kexts"),
        "{}",
        text(&check.stdout)
    );

    let missing = kextwatch(&["inventory", "/nonexistent/Extensions"], None);
    assert_eq!(missing.status.code(), Some(1));
}

#[test]
fn replay_with_bundles_root_judges_staged_kexts_by_signature() {
    use support::eslogger::{cast, Capture};
    // A collected copy of the Mac: /Library/Extensions holds an unsigned and a developer kext.
    let dir = tempfile::tempdir().unwrap();
    let ext = dir.path().join("Library/Extensions");
    std::fs::create_dir_all(&ext).unwrap();
    for name in ["Unsigned", "Developer"] {
        let status = Command::new("cp")
            .arg("-R")
            .arg(fixture_kexts().join(format!("{name}.kext")))
            .arg(&ext)
            .status()
            .unwrap();
        assert!(status.success());
    }
    let mut c = Capture::new(9);
    let cp = cast::terminal_zsh().exec_into("/bin/cp", "com.apple.cp");
    c.create(&cp, "/Library/Extensions", "Unsigned.kext");
    c.after_ms(1000);
    c.create(&cp, "/Library/Extensions", "Developer.kext");
    let severities = |extra: &[&str]| -> Vec<String> {
        let mut args = vec!["replay", "-", "-q"];
        args.extend_from_slice(extra);
        let out = kextwatch(&args, Some(c.out.as_bytes()));
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .map(|l| {
                support::parse_alert(l)["kextwatch"]["severity"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(severities(&[]), ["medium", "medium"]);
    let root = dir.path().to_str().unwrap().to_string();
    // The unsigned bundle is critical; the developer one's team is not allowlisted: high.
    assert_eq!(severities(&["--bundles-root", &root]), ["critical", "high"]);

    // A load by path reads the bundle too: the Team ID verdict on the developer kext.
    let mut load = Capture::new(9);
    let sudo = cast::sudo();
    load.exec(
        &sudo,
        &sudo.exec_into("/sbin/kextload", "com.apple.kextload"),
        &["kextload", "/Library/Extensions/Developer.kext"],
        "/",
    );
    let out = kextwatch(
        &["replay", "-", "-q", "--bundles-root", &root],
        Some(load.out.as_bytes()),
    );
    let alert: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(alert["kextwatch"]["severity"], "high", "{alert:#}");
    assert_eq!(alert["kextwatch"]["kext"]["team_id"], "K3XW9TESTQ");

    // Allowlisting the team lowers the developer kext's staging below the default minimum.
    let cfg = dir.path().join("k.toml");
    std::fs::write(&cfg, "[allowlist]\nteam_ids = [\"K3XW9TESTQ\"]\n").unwrap();
    assert_eq!(
        severities(&["--bundles-root", &root, "--config", cfg.to_str().unwrap()]),
        ["critical", "low"]
    );
}

#[test]
fn inventory_survives_a_kext_built_to_crash_a_parser() {
    // Before the nesting bound, this Info.plist overflowed the stack and killed `inventory`.
    let dir = tempfile::tempdir().unwrap();
    let contents = dir.path().join("Deep.kext/Contents");
    std::fs::create_dir_all(contents.join("MacOS")).unwrap();
    let deep = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict><key>CFBundleIdentifier</key><string>com.example.deep</string><key>IOKitPersonalities</key>{}<dict/>{}</dict></plist>\n",
        "<array>".repeat(69_000),
        "</array>".repeat(69_000)
    );
    std::fs::write(contents.join("Info.plist"), deep).unwrap();
    let out = kextwatch(
        &[
            "inventory",
            dir.path().to_str().unwrap(),
            "--format",
            "json",
        ],
        None,
    );
    assert!(out.status.code().is_some(), "killed by a signal: {out:?}");
    let err = text(&out.stderr);
    assert!(err.contains("1 kexts (1 with errors)"), "{err}");
    let kext: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(kext["signature"], "invalid");
    assert!(
        kext["error"]
            .as_str()
            .unwrap()
            .contains("plist nests deeper than 64 levels"),
        "{kext}"
    );
}

#[test]
fn completions_and_the_man_page_come_from_the_same_definitions_as_the_parser() {
    for shell in ["bash", "zsh", "fish"] {
        let out = kextwatch(&["completions", shell], None);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        let script = text(&out.stdout);
        for word in ["replay", "inventory", "policy", "min-severity"] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
    }
    // The bash script is valid bash.
    let bash = kextwatch(&["completions", "bash"], None).stdout;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kextwatch.bash");
    std::fs::write(&file, bash).unwrap();
    let syntax = Command::new("bash").arg("-n").arg(&file).status().unwrap();
    assert!(syntax.success());
    // An unknown shell is a usage error naming the choices.
    let out = kextwatch(&["completions", "cmd.exe"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("possible values"));

    let out = kextwatch(&["man"], None);
    assert_eq!(out.status.code(), Some(0));
    let man = text(&out.stdout);
    assert!(man.contains(".TH kextwatch 1"), "{man}");
    assert!(
        man.contains(".SH SUBCOMMANDS") && man.contains("kextwatch\\-replay"),
        "{man}"
    );
}
