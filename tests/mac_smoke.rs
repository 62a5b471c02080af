//! `scripts/mac-smoke.sh` on Linux: the capture its actions make on a Mac (eslogger's events for a
//! root bash script running kmutil, kextstat, csrutil, nvram and a file touched and removed in
//! /Library/Extensions), replayed, meets the script's own expectations (`--check`), and the check
//! fails when an expected alert is missing or an unexpected one appears.

use kextwatch_testkit as support;

use std::path::Path;
use std::process::{Command, Output};

use support::eslogger::{cast, Capture, Proc};

const BIN: &str = env!("CARGO_BIN_EXE_kextwatch");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/mac-smoke.sh");
const MARKER: &str = "kextwatch-smoke-4242";

/// What the smoke script's `actions` do on a Mac, as eslogger reports them: `sudo bash
/// mac-smoke.sh` from a terminal; its bash runs each command as a child (fork, then an exec that
/// keeps the pid); kextstat runs kmutil, as Apple's shim does.
fn smoke_actions(c: &mut Capture, first_pid: i32) {
    let bash = cast::sudo().exec_into("/bin/bash", "com.apple.bash");
    let mut pid = first_pid;
    let mut run = |c: &mut Capture, exe: &str, sid: &str, args: &[&str]| -> Proc {
        pid += 1;
        c.spawn(&bash, pid, exe, sid, args)
    };
    run(
        c,
        "/usr/bin/kmutil",
        "com.apple.kmutil",
        &["kmutil", "showloaded"],
    );
    let kextstat = run(c, "/usr/sbin/kextstat", "com.apple.kextstat", &["kextstat"]);
    c.shim_runs_kmutil(&kextstat, first_pid + 100, &["kmutil", "showloaded"]);
    run(
        c,
        "/usr/bin/csrutil",
        "com.apple.csrutil",
        &["csrutil", "status"],
    );
    run(c, "/usr/sbin/nvram", "com.apple.nvram", &["nvram", "-p"]);
    let file = format!("/Library/Extensions/{MARKER}.txt");
    let touch = run(c, "/usr/bin/touch", "com.apple.touch", &["touch", &file]);
    c.create(&touch, "/Library/Extensions", &format!("{MARKER}.txt"));
    c.utimes(&touch, &file);
    let rm = run(c, "/bin/rm", "com.apple.rm", &["rm", "-f", &file]);
    c.unlink(&rm, &file, "/Library/Extensions");
}

/// Background activity on any Mac during the run: an admin elsewhere listing kexts, and noise.
fn background(c: &mut Capture) {
    let zsh = cast::terminal_zsh();
    c.spawn(
        &zsh,
        9001,
        "/usr/bin/kmutil",
        "com.apple.kmutil",
        &["kmutil", "showloaded"],
    );
    c.spawn(&zsh, 9002, "/bin/ls", "com.apple.ls", &["ls", "/tmp"]);
}

/// `kextwatch replay` as the script runs it, on `capture`; the alerts as text lines.
fn replay(dir: &Path, capture: &[u8]) -> std::path::PathBuf {
    let events = dir.join("events.jsonl");
    std::fs::write(&events, capture).unwrap();
    let out = Command::new(BIN)
        .args([
            "replay",
            "--min-severity",
            "info",
            "--format",
            "text",
            "--quiet",
        ])
        .arg(&events)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let alerts = dir.join("alerts.txt");
    std::fs::write(&alerts, &out.stdout).unwrap();
    alerts
}

fn check(alerts: &Path) -> Output {
    Command::new("bash")
        .arg(SCRIPT)
        .arg("--check")
        .arg(alerts)
        .args(["--marker", MARKER])
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn the_smoke_actions_raise_exactly_what_the_script_expects() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Capture::new(8);
    background(&mut c);
    smoke_actions(&mut c, 7000);
    let alerts = replay(dir.path(), c.out.as_bytes());
    let out = check(&alerts);
    let said = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{said}\n{}",
        std::fs::read_to_string(&alerts).unwrap()
    );
    assert_eq!(
        said.matches("\nok ").count() + usize::from(said.starts_with("ok ")),
        7,
        "{said}"
    );
    assert!(said.ends_with("mac-smoke: passed\n"), "{said}");
}

#[test]
fn the_check_fails_when_an_expected_alert_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Capture::new(8);
    smoke_actions(&mut c, 7000);
    let alerts = replay(dir.path(), c.out.as_bytes());
    // A kextwatch that no longer reports the removal.
    let all = std::fs::read_to_string(&alerts).unwrap();
    let kept: String = all
        .lines()
        .filter(|l| !l.contains(" deleted under "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(kept, all);
    std::fs::write(&alerts, kept).unwrap();
    let out = check(&alerts);
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stdout);
    assert!(said.contains("FAIL the file removed (medium)"), "{said}");
    assert!(said.ends_with("mac-smoke: FAILED\n"), "{said}");
}

#[test]
fn the_check_fails_on_an_alert_benign_work_should_not_raise() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = Capture::new(8);
    smoke_actions(&mut c, 7000);
    // Meanwhile something loads a kext from a terminal: not part of the smoke, and not benign.
    let shell = cast::sudo().exec_into("/bin/bash", "com.apple.bash");
    c.spawn(
        &shell,
        8001,
        "/usr/bin/kmutil",
        "com.apple.kmutil",
        &["kmutil", "load", "-p", "/Library/Extensions/Evil.kext"],
    );
    let alerts = replay(dir.path(), c.out.as_bytes());
    let out = check(&alerts);
    assert_eq!(out.status.code(), Some(1));
    let said = text(&out.stdout);
    assert!(
        said.contains("FAIL alerts nothing here should raise:"),
        "{said}"
    );
    assert!(said.contains("Evil.kext"), "{said}");
}

#[test]
fn the_script_asks_eslogger_for_the_daemons_events() {
    let script = std::fs::read_to_string(SCRIPT).unwrap();
    let start = script.find("EVENTS=(").unwrap() + "EVENTS=(".len();
    let end = start + script[start..].find(')').unwrap();
    let events: Vec<&str> = script[start..end].split_whitespace().collect();
    assert_eq!(events, kextwatch::source::eslogger::ESLOGGER_EVENTS);
    // Its syntax, as bash reads it (shellcheck in .ci/run lints it further).
    assert!(Command::new("bash")
        .arg("-n")
        .arg(SCRIPT)
        .status()
        .unwrap()
        .success());
}
