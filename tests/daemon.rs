//! The daemon on Linux, with a FIFO standing in for Endpoint Security: alerts reach a real rsyslog,
//! SIGHUP reloads (or keeps the old config), SIGTERM drains and exits 0, bursts are counted as drops.

use kextwatch_testkit as support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kextwatch::daemon::Status;
use support::eslogger::{cast, Capture};

const BIN: &str = env!("CARGO_BIN_EXE_kextwatch");
const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/kext-attack.jsonl");

/// A daemon child that is killed if the test ends without stopping it (a failed assertion), so no
/// daemon outlives its test to load the machine the next tests run on.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

impl std::ops::Deref for Reaper {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaper {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

struct Daemon {
    dir: tempfile::TempDir,
    child: Reaper,
    fifo: PathBuf,
    config: PathBuf,
}

use support::mkfifo;

fn config_text(dir: &Path, extra: &str) -> String {
    config_with_daemon(dir, extra, "")
}

/// `extra` goes before the fixed tables, `daemon_extra` inside `[daemon]`.
fn config_with_daemon(dir: &Path, extra: &str, daemon_extra: &str) -> String {
    format!(
        "{extra}\n[kextpolicy]\nenabled = false\n\n[daemon]\nstate_dir = \"{}\"\n{daemon_extra}\n",
        dir.join("state").display()
    )
}

fn file_output(dir: &Path) -> String {
    format!(
        "[[output]]\ntype = \"file\"\npath = \"{}\"\n",
        dir.join("alerts.jsonl").display()
    )
}

impl Daemon {
    fn start(extra: &str) -> Daemon {
        Daemon::start_with(extra, "")
    }

    /// A daemon whose alerts go to the file `alerts_in(d.dir.path())` reads.
    fn with_alert_file() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("kextwatch.toml"),
            config_text(dir.path(), &file_output(dir.path())),
        )
        .unwrap();
        Daemon::launch(dir, &[])
    }

    fn start_with(extra: &str, daemon_extra: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("kextwatch.toml"),
            config_with_daemon(dir.path(), extra, daemon_extra),
        )
        .unwrap();
        Daemon::launch(dir, &[])
    }

    /// Run the daemon on `dir/kextwatch.toml`, reading the FIFO `dir/events`.
    fn launch(dir: tempfile::TempDir, extra_args: &[&std::ffi::OsStr]) -> Daemon {
        let fifo = dir.path().join("events");
        mkfifo(&fifo);
        let config = dir.path().join("kextwatch.toml");
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .args(extra_args)
            .arg("--source")
            .arg(format!("replay:{}", fifo.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        let d = Daemon {
            dir,
            child: Reaper(child),
            fifo,
            config,
        };
        // This daemon's status, not the one a killed predecessor left saying "running".
        d.wait_status(|s| s.running && s.pid == pid);
        d
    }

    fn status(&self) -> Option<Status> {
        Status::read(&self.dir.path().join("state/status.json")).ok()
    }

    fn wait_status(&self, ok: impl Fn(&Status) -> bool) -> Status {
        let start = Instant::now();
        loop {
            if let Some(s) = self.status() {
                if ok(&s) {
                    return s;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "daemon status never got there: {:?}",
                self.status()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Write events into the FIFO (one writer session).
    fn feed(&self, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.fifo)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn signal(&self, sig: &str) {
        assert!(Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success());
    }

    /// SIGKILL (what an attacker forcing a restart does): no chance to save anything on the way out.
    fn kill(mut self) -> tempfile::TempDir {
        self.signal("KILL");
        self.child.wait().unwrap();
        std::fs::remove_file(&self.fifo).unwrap();
        self.dir
    }

    /// SIGTERM, and the exit code (within a bounded time).
    fn stop(mut self) -> (i32, tempfile::TempDir) {
        self.signal("TERM");
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st.code().unwrap_or(-1), self.dir);
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "daemon did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The alerts written so far: complete lines only (the daemon may be mid-way through writing an
/// alert larger than one write).
fn alerts_in(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("alerts.jsonl")).unwrap_or_default();
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete.lines().map(support::parse_alert).collect()
}

/// The read end of a FIFO, open now (a read-only open does not wait for a writer when
/// non-blocking), then blocking for reads: the daemon opening its output later always finds a reader.
fn open_fifo_reader(path: &Path) -> std::fs::File {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .unwrap();
    // SAFETY: fcntl on a descriptor this function owns.
    unsafe {
        let flags = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        assert!(
            flags >= 0 && libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) >= 0
        );
    }
    f
}

fn wait_for(mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < Duration::from_secs(60), "timed out");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn fifo_events_reach_a_real_rsyslog_and_sigterm_drains() {
    let Some(r) = support::rsyslog::Rsyslog::start_or_skip(
        "fifo_events_reach_a_real_rsyslog_and_sigterm_drains",
    ) else {
        return;
    };
    let d = Daemon::start(&format!(
        "[[output]]\ntype = \"syslog\"\naddress = \"127.0.0.1:{}\"\n",
        r.tcp
    ));
    d.feed(&std::fs::read_to_string(SAMPLE).unwrap());
    // The alerts arrive while the daemon runs (this config has no allowlist: 10 before the fold
    // follow-up, which only the end of the fold window or shutdown sends).
    let rules = |lines: &[String]| -> Vec<String> {
        lines
            .iter()
            .map(|l| {
                let body = &l[l.find("] {").expect("SD then JSON") + 2..];
                let v: serde_json::Value = serde_json::from_str(body).unwrap();
                v["rule"]["id"].as_str().unwrap().to_string()
            })
            .collect()
    };
    let lines = r.wait_until("the kmutil load (KW-1001)", Duration::from_secs(60), |l| {
        rules(l).iter().any(|id| id == "KW-1001")
    });
    assert!(!lines.iter().any(|l| l.contains("\"folded\":{")));
    let (code, _dir) = d.stop();
    assert_eq!(code, 0);
    // Stopping closed the fold window: its follow-up, the last message on the connection, was
    // delivered before exit, and everything before it too.
    let lines = r.wait_until("the fold follow-up", Duration::from_secs(60), |l| {
        l.iter().any(|x| x.contains("\"folded\":{\"count\":9"))
    });
    assert_eq!(lines.len(), 11, "{:?}", rules(&lines));
}

#[test]
fn sighup_with_a_broken_config_keeps_the_old_one() {
    let dir_out = tempfile::tempdir().unwrap();
    let d = Daemon::start(&file_output(dir_out.path()));
    std::fs::write(&d.config, "[allowlist\nbroken").unwrap();
    d.signal("HUP");
    let s = d.wait_status(|s| s.last_config_error.is_some());
    assert_eq!(s.config_generation, 1);
    assert!(s.last_config_error.unwrap().contains("kextwatch.toml:1:"));
    // Still running, still detecting with the old config.
    d.feed(&std::fs::read_to_string(SAMPLE).unwrap());
    wait_for(|| alerts_in(dir_out.path()).len() >= 10);
    let (code, _) = d.stop();
    assert_eq!(code, 0);
}

fn jamf_loads_virtualbox() -> String {
    let mut c = Capture::new(7);
    let jamf = cast::jamf();
    c.exec(
        &jamf,
        &jamf.exec_into("/usr/bin/kmutil", "com.apple.kmutil"),
        &["kmutil", "load", "-b", "org.virtualbox.kext.VBoxDrv"],
        "/",
    );
    c.out
}

#[test]
fn sighup_with_a_new_allowlist_changes_the_next_decisions() {
    let dir_out = tempfile::tempdir().unwrap();
    let d = Daemon::start(&file_output(dir_out.path()));
    d.feed(&jamf_loads_virtualbox());
    wait_for(|| alerts_in(dir_out.path()).len() == 1);
    assert_eq!(alerts_in(dir_out.path())[0]["rule"]["id"], "KW-1001");

    let allow = "[allowlist]\nteam_ids = [\"VB5E2TV963\"]\ninitiators = [{ signing_id = \"com.jamfsoftware.jamf\", team_id = \"483DWKW443\" }]\n";
    std::fs::write(
        &d.config,
        config_text(
            d.dir.path(),
            &format!("{allow}{}", file_output(dir_out.path())),
        ),
    )
    .unwrap();
    d.signal("HUP");
    d.wait_status(|s| s.config_generation == 2);
    d.feed(&jamf_loads_virtualbox());
    wait_for(|| d.status().is_some_and(|s| s.events_analysed == 2));
    let (code, _) = d.stop();
    assert_eq!(code, 0);
    assert_eq!(
        alerts_in(dir_out.path()).len(),
        1,
        "the allowlisted manager's load no longer alerts: {:#?}",
        alerts_in(dir_out.path())
    );
}

#[test]
fn a_watched_root_added_by_sighup_is_watched_from_the_next_event() {
    let dir_out = tempfile::tempdir().unwrap();
    let roots = |extra: &str| {
        format!(
            "[detection]\nwatched_roots = [\"/Library/Extensions\"{extra}]\nmin_severity = \"info\"\n{}",
            file_output(dir_out.path())
        )
    };
    let d = Daemon::start(&roots(""));
    let stage = || {
        let mut c = Capture::new(8);
        let cp = cast::terminal_zsh().exec_into("/bin/cp", "com.apple.cp");
        c.create(&cp, "/Library/VendorDrivers", "Vendor.kext");
        c.out
    };
    // Not watched: the source does not even decode it.
    d.feed(&stage());
    wait_for(|| d.status().is_some_and(|s| s.lines_read == 1));
    std::fs::write(
        &d.config,
        config_text(d.dir.path(), &roots(", \"/Library/VendorDrivers\"")),
    )
    .unwrap();
    d.signal("HUP");
    d.wait_status(|s| s.config_generation == 2);
    d.feed(&stage());
    wait_for(|| {
        alerts_in(dir_out.path())
            .iter()
            .any(|a| a["rule"]["id"] == "KW-2001")
    });
    let (code, _) = d.stop();
    assert_eq!(code, 0);
    let staged: Vec<_> = alerts_in(dir_out.path())
        .into_iter()
        .filter(|a| a["rule"]["id"] == "KW-2001")
        .collect();
    assert_eq!(
        staged.len(),
        1,
        "only the staging after the reload: {staged:#?}"
    );
    assert_eq!(
        staged[0]["file"]["path"],
        "/Library/VendorDrivers/Vendor.kext"
    );
}

#[test]
fn a_burst_larger_than_every_queue_is_counted_never_a_hang() {
    // Alerts go to a FIFO the test does not read yet, and events come faster than a one-event
    // queue takes them: the source drops (counted) and the stalled output falls behind its own
    // queue and drops (counted), whatever the machine's speed. Every event and every alert must be
    // accounted for: analysed or dropped; written or lost.
    let dir_out = tempfile::tempdir().unwrap();
    let alerts_fifo = dir_out.path().join("alerts.jsonl");
    mkfifo(&alerts_fifo);
    let (go, wait_go) = std::sync::mpsc::channel::<()>();
    let reader = {
        // Open before the daemon starts: a FIFO output with no reader is an error at start.
        let mut f = open_fifo_reader(&alerts_fifo);
        std::thread::spawn(move || {
            wait_go.recv().unwrap();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut f, &mut text).unwrap();
            text
        })
    };
    let d = Daemon::start_with(
        &format!(
            "{}\n[detection]\nmin_severity = \"info\"\n",
            file_output(dir_out.path())
        ),
        "event_queue = 1",
    );
    let mut c = Capture::new(7);
    for i in 0..20_000 {
        c.in_terminal(
            "/usr/bin/csrutil",
            "com.apple.csrutil",
            &["csrutil", "status", &i.to_string()],
            "/",
        );
    }
    d.feed(&c.out);
    d.wait_status(|s| s.events_decoded == 20_000 && s.events_analysed + s.events_dropped == 20_000);
    go.send(()).unwrap();
    let (code, dir) = d.stop();
    assert_eq!(code, 0);
    let done = Status::read(&dir.path().join("state/status.json")).unwrap();
    assert!(!done.running);
    assert_eq!(done.events_analysed + done.events_dropped, 20_000);
    // One alert per analysed event: each was written or counted lost, and what the reader got is
    // exactly what was counted written (the daemon closing its output ends the reader's read).
    let out = &done.outputs[0];
    assert_eq!(out.written + out.lost, done.events_analysed, "{out:?}");
    let written = reader.join().unwrap();
    assert_eq!(written.lines().count() as u64, out.written);
    let first = written.lines().next().unwrap_or_default();
    assert!(
        written.lines().all(|l| l.contains("\"id\":\"KW-1000\"")),
        "{first}"
    );
}

/// The third argument of `csrutil status N` in an alert line (JSON, or syslog with a JSON body).
fn status_arg(line: &str) -> Option<&str> {
    const ARGS: &str = "\"args\":[\"csrutil\",\"status\",\"";
    let rest = &line[line.find(ARGS)? + ARGS.len()..];
    Some(&rest[..rest.find('"')?])
}

#[test]
fn an_output_nobody_reads_does_not_hold_back_the_others() {
    // A FIFO output whose reader never reads (a stuck log shipper) beside a real rsyslog: in the
    // old single sink loop, the first blocked write stopped syslog too.
    let Some(r) = support::rsyslog::Rsyslog::start_or_skip(
        "an_output_nobody_reads_does_not_hold_back_the_others",
    ) else {
        return;
    };
    let dir_out = tempfile::tempdir().unwrap();
    let stuck = dir_out.path().join("alerts.jsonl");
    mkfifo(&stuck);
    let (release, wait_release) = std::sync::mpsc::channel::<()>();
    let reader = {
        // Open before the daemon starts: a FIFO output with no reader is an error at start.
        let mut f = open_fifo_reader(&stuck);
        std::thread::spawn(move || {
            wait_release.recv().unwrap();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut f, &mut text).unwrap();
            text
        })
    };
    let d = Daemon::start(&format!(
        "{}[[output]]\ntype = \"syslog\"\naddress = \"127.0.0.1:{}\"\n\n[detection]\nmin_severity = \"info\"\n",
        file_output(dir_out.path()),
        r.tcp
    ));
    // Far more than a pipe buffer holds: the FIFO output blocks for good after a few dozen.
    let mut c = Capture::new(7);
    for i in 0..500 {
        c.in_terminal(
            "/usr/bin/csrutil",
            "com.apple.csrutil",
            &["csrutil", "status", &format!("n{i}")],
            "/",
        );
    }
    d.feed(&c.out);
    // All 500 reach syslog while the FIFO output is still blocked (nothing has read it).
    let lines = r.wait_until("the 500th alert", Duration::from_secs(60), |l| {
        l.iter().any(|x| x.contains("n499"))
    });
    let got: std::collections::BTreeSet<String> = lines
        .iter()
        .filter_map(|l| status_arg(l).map(str::to_string))
        .collect();
    assert_eq!(got.len(), 500, "every alert reached syslog");
    release.send(()).unwrap();
    let (code, dir) = d.stop();
    assert_eq!(code, 0);
    // Once read, the FIFO output had every alert too, in order.
    let text = reader.join().unwrap();
    let order: Vec<&str> = text.lines().filter_map(status_arg).collect();
    let expected: Vec<String> = (0..500).map(|i| format!("n{i}")).collect();
    assert_eq!(order, expected);
    let done = Status::read(&dir.path().join("state/status.json")).unwrap();
    assert_eq!((done.outputs[0].written, done.outputs[0].lost), (500, 0));
}

/// The daemon on `dir`'s config with `fake` (an executable script) as its eslogger, alerts to
/// `dir/alerts.jsonl`.
fn run_with_eslogger(dir: &Path, fake: &Path) -> Reaper {
    std::fs::set_permissions(fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = dir.join("k.toml");
    std::fs::write(&config, config_text(dir, &file_output(dir))).unwrap();
    Reaper(
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(&config)
            .args(["--source", "eslogger", "--eslogger"])
            .arg(fake)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn eslogger_is_asked_only_for_the_events_its_macos_lists() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("eslogger");
    // As on macOS 14: profile_remove is known, tcc_modify (15.4) is not, and asking for an unknown
    // event makes eslogger refuse to start.
    let mut listed: Vec<&str> = kextwatch::source::eslogger::ESLOGGER_EVENTS.to_vec();
    listed.extend(["profile_remove", "open", "mmap"]);
    std::fs::write(dir.path().join("list.txt"), listed.join("\n") + "\n").unwrap();
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\n\
             if [ \"$1\" = --list-events ]; then cat '{list}'; exit 0; fi\n\
             for e in \"$@\"; do grep -qx \"$e\" '{list}' || {{ echo \"unknown $e\" >&2; exit 64; }}; done\n\
             echo $$ \"$@\" > '{args}'\n\
             exec sleep 600\n",
            list = dir.path().join("list.txt").display(),
            args = dir.path().join("args.txt").display(),
        ),
    )
    .unwrap();
    let mut child = run_with_eslogger(dir.path(), &fake);
    // Written only by an eslogger that accepted every event it was asked for.
    let args_file = dir.path().join("args.txt");
    wait_for(|| std::fs::read_to_string(&args_file).is_ok_and(|a| a.ends_with('\n')));
    let args = std::fs::read_to_string(&args_file).unwrap();
    let (pid, args) = args.split_once(' ').unwrap();
    let args: Vec<&str> = args.split_whitespace().collect();
    for e in kextwatch::source::eslogger::ESLOGGER_EVENTS {
        assert!(args.contains(&e), "{e} missing: {args:?}");
    }
    assert!(args.contains(&"profile_remove"), "{args:?}");
    assert!(!args.contains(&"tcc_modify"), "{args:?}");
    Command::new("kill")
        .args([&child.id().to_string(), pid])
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn eslogger_source_is_restarted_when_it_exits() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("eslogger");
    // A stand-in that prints one kext event and exits, as eslogger does when it loses its client.
    let mut c = Capture::new(9);
    c.kextload(&cast::kernelmanagerd(), "com.evil.driver");
    std::fs::write(dir.path().join("event.jsonl"), &c.out).unwrap();
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\ncat '{}'\nexit 3\n",
            dir.path().join("event.jsonl").display()
        ),
    )
    .unwrap();
    let mut child = run_with_eslogger(dir.path(), &fake);
    let status_path = dir.path().join("state/status.json");
    wait_for(|| {
        Status::read(&status_path).is_ok_and(|s| s.source_restarts >= 2 && s.events_analysed >= 2)
    });
    let s = Status::read(&status_path).unwrap();
    assert!(
        s.source_state.contains("restarting") || s.source_state.contains("running"),
        "{}",
        s.source_state
    );
    assert!(alerts_in(dir.path())
        .iter()
        .any(|a| a["rule"]["id"] == "KW-3001"));
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn a_killed_eslogger_is_restarted_at_once_and_reported_with_its_killer() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("eslogger");
    // A stand-in that reports a root shell sending it SIGKILL (its own pid, as eslogger would),
    // then dies of it.
    let mut c = Capture::new(9);
    // Live: the event is stamped as it happens.
    c.now_ns = kextwatch::wallclock::now_ns();
    let shell = cast::sudo().exec_into("/bin/bash", "com.apple.bash");
    let target = support::eslogger::Proc {
        pid: 999_999,
        ..cast::kextwatch_eslogger()
    };
    c.signal(&shell, &target, 9);
    std::fs::write(dir.path().join("signal.jsonl"), &c.out).unwrap();
    std::fs::write(
        &fake,
        format!(
            "#!/bin/sh\nsed \"s/999999/$$/g\" '{}'\nkill -9 $$\n",
            dir.path().join("signal.jsonl").display()
        ),
    )
    .unwrap();
    let mut child = run_with_eslogger(dir.path(), &fake);
    // Killed again and again, it keeps coming back (how soon is `Restart`'s unit test: at once
    // after a kill, not on the failure backoff).
    let status_path = dir.path().join("state/status.json");
    wait_for(|| Status::read(&status_path).is_ok_and(|s| s.source_restarts >= 3));
    let died_of_kill = |a: &serde_json::Value| {
        a["message"]
            .as_str()
            .unwrap_or("")
            .contains("ended by SIGKILL")
    };
    wait_for(|| alerts_in(dir.path()).iter().any(died_of_kill));
    let died = alerts_in(dir.path())
        .into_iter()
        .find(died_of_kill)
        .unwrap();
    assert_eq!(died["rule"]["id"], "KW-6002");
    let reasons = died["kextwatch"]["reasons"].to_string();
    assert!(
        reasons.contains("the signal was sent by /bin/bash"),
        "{reasons}"
    );
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

#[test]
fn doctor_says_what_is_wrong_and_how_to_fix_it() {
    let Some(r) =
        support::rsyslog::Rsyslog::start_or_skip("doctor_says_what_is_wrong_and_how_to_fix_it")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("k.toml");
    let (dead, _closed) = support::rsyslog::closed_port();
    let outputs = format!(
        "[[output]]\ntype = \"syslog\"\naddress = \"127.0.0.1:{}\"\n\n[[output]]\ntype = \"syslog\"\naddress = \"127.0.0.1:{dead}\"\n",
        r.tcp
    );
    std::fs::write(&config, config_text(dir.path(), &outputs)).unwrap();
    let out = Command::new(BIN)
        .arg("doctor")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "ok   output syslog 127.0.0.1:{}: connected",
            r.tcp
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("FAIL output syslog 127.0.0.1:{dead}")),
        "{text}"
    );
    assert!(text.contains("ok   state directory writable"), "{text}");
    assert!(text.contains("ok   config:"), "{text}");

    std::fs::write(&config, "[daemon\n").unwrap();
    let out = Command::new(BIN)
        .arg("doctor")
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text.contains("FAIL config: ") && text.contains("fix: "),
        "{text}"
    );
}

#[test]
fn config_delivered_by_mdm_takes_precedence_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(
        dir.path().join("kextwatch.toml"),
        config_text(dir.path(), &file_output(&out)),
    )
    .unwrap();
    // The managed preferences plist a `kextwatch profile --config` payload produces on the Mac.
    let managed = dir.path().join("com.kextwatch.plist");
    let allow = "[allowlist]\nteam_ids = [\"VB5E2TV963\"]\ninitiators = [{ signing_id = \"com.jamfsoftware.jamf\", team_id = \"483DWKW443\" }]\n";
    let write_managed = |toml: &str| {
        let mut d = plist::Dictionary::new();
        d.insert("ConfigTOML".into(), plist::Value::String(toml.into()));
        plist::Value::Dictionary(d).to_file_xml(&managed).unwrap();
    };
    write_managed(&config_text(
        dir.path(),
        &format!("{allow}{}", file_output(&out)),
    ));
    let state = dir.path().to_path_buf();
    let d = Daemon::launch(dir, &["--managed-prefs".as_ref(), managed.as_os_str()]);
    // The MDM config allowlists the manager: no alert.
    d.feed(&jamf_loads_virtualbox());
    d.wait_status(|s| s.events_analysed == 1);
    assert!(alerts_in(&out).is_empty());
    // MDM replaces it with one without the allowlist; SIGHUP picks it up.
    write_managed(&config_text(&state, &file_output(&out)));
    d.signal("HUP");
    d.wait_status(|s| s.config_generation == 2);
    d.feed(&jamf_loads_virtualbox());
    wait_for(|| alerts_in(&out).len() == 1);
    let (code, _) = d.stop();
    assert_eq!(code, 0);
}

#[test]
fn a_forced_restart_does_not_forget_a_staged_bundle() {
    let d = Daemon::with_alert_file();
    let mut c = Capture::new(8);
    let cp = cast::terminal_zsh().exec_into("/bin/cp", "com.apple.cp");
    c.copy_bundle(&cp, "/Library/Extensions", "Evil");
    d.feed(&c.out);
    // Saved within a second of the change.
    let saved = d.dir.path().join("state/staged-bundles.json");
    wait_for(|| {
        std::fs::read_to_string(&saved).is_ok_and(|s| s.contains("/Library/Extensions/Evil.kext"))
    });
    let dir = d.kill();

    // Restarted; the load comes three hours (of event time) later.
    let d = Daemon::launch(dir, &[]);
    let mut later = Capture::new(8);
    later.now_ns = c.now_ns + 3 * 3_600_000_000_000;
    let sudo = cast::sudo();
    later.exec(
        &sudo,
        &sudo.exec_into("/sbin/kextload", "com.apple.kextload"),
        &["kextload", "/Library/Extensions/Evil.kext"],
        "/",
    );
    d.feed(&later.out);
    let out = d.dir.path().to_path_buf();
    wait_for(|| alerts_in(&out).iter().any(|a| a["rule"]["id"] == "KW-9001"));
    let alerts = alerts_in(&out);
    let load = alerts
        .iter()
        .find(|a| a["rule"]["id"] == "KW-9001")
        .unwrap();
    assert!(
        load["kextwatch"]["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r
                .as_str()
                .unwrap()
                .contains("was staged by /bin/cp (pid 4100) 3 h earlier")),
        "{load:#}"
    );
    let (code, _dir) = d.stop();
    assert_eq!(code, 0);
}

#[test]
fn tampering_before_a_forced_restart_makes_the_kext_load_after_it_critical() {
    let d = Daemon::with_alert_file();
    let mut c = Capture::new(9);
    let sudo = cast::sudo();
    c.spawn(
        &sudo,
        4131,
        "/bin/launchctl",
        "com.apple.xpc.launchctl",
        &["launchctl", "bootout", "system/com.kextwatch.daemon"],
    );
    d.feed(&c.out);
    let saved = d.dir.path().join("state/staged-bundles.json");
    wait_for(|| std::fs::read_to_string(&saved).is_ok_and(|s| s.contains("launchctl bootout")));
    let dir = d.kill();

    let d = Daemon::launch(dir, &[]);
    let mut later = Capture::new(9);
    later.now_ns = c.now_ns + 20 * 60_000_000_000;
    later.kextload(&cast::kernelmanagerd(), "com.evil.rootkit");
    d.feed(&later.out);
    let out = d.dir.path().to_path_buf();
    wait_for(|| alerts_in(&out).iter().any(|a| a["rule"]["id"] == "KW-9005"));
    let load = alerts_in(&out)
        .into_iter()
        .find(|a| a["rule"]["id"] == "KW-9005")
        .unwrap();
    assert_eq!(load["kextwatch"]["severity"], "critical");
    assert_eq!(
        load["kextwatch"]["evidence"][0]["executable"],
        "/bin/launchctl"
    );
    let (code, _dir) = d.stop();
    assert_eq!(code, 0);
}

#[test]
fn state_removed_while_kextwatch_was_stopped_is_reported_at_the_next_start() {
    let d = Daemon::with_alert_file();
    let mut c = Capture::new(9);
    let cp = cast::terminal_zsh().exec_into("/bin/cp", "com.apple.cp");
    c.copy_bundle(&cp, "/Library/Extensions", "Evil");
    d.feed(&c.out);
    let ledger = d.dir.path().join("state/run-ledger.json");
    wait_for(|| std::fs::read_to_string(&ledger).is_ok_and(|s| s.contains("staged-bundles.json")));
    let (code, dir) = d.stop();
    assert_eq!(code, 0);
    // While it is stopped, someone removes its memory of the staged bundle.
    std::fs::remove_file(dir.path().join("state/staged-bundles.json")).unwrap();
    std::fs::remove_file(dir.path().join("events")).unwrap();
    let before = alerts_in(dir.path()).len();
    let d = Daemon::launch(dir, &[]);
    let out = d.dir.path().to_path_buf();
    wait_for(|| alerts_in(&out).len() > before);
    let a = alerts_in(&out).pop().unwrap();
    assert_eq!(
        (
            a["rule"]["id"].as_str(),
            a["kextwatch"]["severity"].as_str()
        ),
        (Some("KW-6007"), Some("high")),
        "{a:#}"
    );
    assert!(
        a["message"]
            .as_str()
            .unwrap()
            .ends_with("staged-bundles.json was removed since the last run"),
        "{a:#}"
    );
    let (code, _) = d.stop();
    assert_eq!(code, 0);
}

#[test]
fn a_reload_that_detects_less_is_applied_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let config = dir.path().join("kextwatch.toml");
    std::fs::write(&config, config_text(dir.path(), &file_output(&out))).unwrap();
    let state = dir.path().to_path_buf();
    let d = Daemon::launch(dir, &[]);
    // Someone raises the minimum severity and trusts every zsh script, then asks for a reload.
    let weaker = format!(
        "[allowlist]\ninitiators = [{{ signing_id = \"com.apple.zsh\", team_id = \"ZZZZZZZZZZ\" }}]\n[detection]\nmin_severity = \"critical\"\n{}",
        file_output(&out)
    );
    std::fs::write(&config, config_text(&state, &weaker)).unwrap();
    d.signal("HUP");
    d.wait_status(|s| s.config_generation == 2);
    wait_for(|| !alerts_in(&out).is_empty());
    let a = &alerts_in(&out)[0];
    assert_eq!(a["rule"]["id"], "KW-6006", "{a:#}");
    assert_eq!(a["kextwatch"]["severity"], "high");
    let reasons = a["kextwatch"]["reasons"].to_string();
    assert!(
        reasons.contains("minimum severity raised from low to critical"),
        "{reasons}"
    );
    assert!(
        reasons.contains("allowlisted initiators added: com.apple.zsh (ZZZZZZZZZZ)"),
        "{reasons}"
    );
    // Applied: a high alert is now below the minimum.
    let mut c = Capture::new(9);
    let shell = cast::sudo();
    c.spawn(
        &shell,
        4131,
        "/usr/bin/csrutil",
        "com.apple.csrutil",
        &["csrutil", "disable"],
    );
    d.feed(&c.out);
    d.wait_status(|s| s.events_analysed >= 2);
    assert_eq!(alerts_in(&out).len(), 1);
    let (code, _) = d.stop();
    assert_eq!(code, 0);
}

#[test]
fn status_tells_a_killed_daemon_from_a_running_one_and_one_daemon_owns_a_state_dir() {
    let d = Daemon::start("[[output]]\ntype = \"stdout\"\n");
    let status = |config: &Path| {
        Command::new(BIN)
            .args(["status", "--config"])
            .arg(config)
            .output()
            .unwrap()
    };
    let out = status(&d.config);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("kextwatch running (pid "));
    // A second daemon on the same state directory refuses to start.
    let second = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&d.config)
        .args(["--source", "replay:/dev/null"])
        .output()
        .unwrap();
    assert_ne!(second.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another kextwatch daemon is running"),
        "{second:?}"
    );
    let config = d.config.clone();
    let dir = d.kill();
    // The file still says "running": the lock says otherwise.
    let out = status(&config);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("kextwatch NOT running (killed: the status file was never closed)"),
        "{text}"
    );
    // A state directory others can write is refused before anything is read from it.
    use std::os::unix::fs::PermissionsExt as _;
    let state = dir.path().join("state");
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let refused = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .args(["--source", "replay:/dev/null"])
        .output()
        .unwrap();
    assert_ne!(refused.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is writable by other users (mode 777)"),
        "{refused:?}"
    );
}

#[test]
fn a_source_that_cannot_be_opened_is_reported_failed_not_finished_and_logged_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kextwatch.toml");
    std::fs::write(&config, config_text(dir.path(), &file_output(dir.path()))).unwrap();
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .args(["--source", "replay:/nonexistent/events.jsonl"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status_file = dir.path().join("state/status.json");
    wait_for(|| Status::read(&status_file).is_ok_and(|s| s.source_state.starts_with("failed: ")));
    let s = Status::read(&status_file).unwrap();
    assert!(
        s.source_state
            .starts_with("failed: cannot open /nonexistent/events.jsonl: "),
        "{s:?}"
    );
    assert!(Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap()
        .success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    // The log says so, without colour codes: stderr here is a pipe (as launchd's log file is).
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("replay source cannot open its input"), "{log}");
    assert!(!log.contains('\u{1b}'), "{log:?}");
}

/// Alerts produced by the daemon run whose status this is (every severity).
fn produced(s: &Status) -> u64 {
    s.alerts.values().sum()
}

/// The accounting soak: alerts through a receiver that restarts every few seconds and a daemon
/// killed and restarted twice. Every alert produced must end delivered or counted (lost, evicted);
/// duplicates are allowed (at-least-once), gaps are not. `KEXTWATCH_SOAK_ALERTS` scales it
/// (`scripts/soak.sh` runs 100,000 and prints the figures the README quotes).
#[test]
fn soak_every_alert_is_delivered_or_counted_through_flapping_receivers_and_kills() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let total: usize = std::env::var("KEXTWATCH_SOAK_ALERTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12_000);
    let Some(r) = support::rsyslog::Rsyslog::start_or_skip("soak") else {
        return;
    };
    let r = Arc::new(Mutex::new(r));
    let port = r.lock().unwrap().tcp;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kextwatch.toml"),
        config_with_daemon(
            dir.path(),
            &format!(
                "[[output]]\ntype = \"syslog\"\naddress = \"127.0.0.1:{port}\"\n\n[detection]\nmin_severity = \"info\"\n"
            ),
            // Every event fits the queue whatever the machine's speed: drops are another test's.
            "event_queue = 262144",
        ),
    )
    .unwrap();
    // The receiver is stopped for about a second every two, unless the test holds it up.
    let (flapping, done) = (
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(false)),
    );
    let restarts = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let flapper = {
        let (r, flapping, done, restarts) =
            (r.clone(), flapping.clone(), done.clone(), restarts.clone());
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(2_000));
                if !flapping.load(Ordering::Relaxed) {
                    continue;
                }
                r.lock().unwrap().stop();
                std::thread::sleep(Duration::from_millis(1_000));
                r.lock().unwrap().resume();
                restarts.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let unique = |r: &Mutex<support::rsyslog::Rsyslog>| -> (usize, usize) {
        let lines = r.lock().unwrap().received();
        let args: Vec<&str> = lines.iter().filter_map(|l| status_arg(l)).collect();
        let set: std::collections::BTreeSet<&str> = args.iter().copied().collect();
        (set.len(), args.len() - set.len())
    };
    let events = |range: std::ops::Range<usize>| {
        let mut c = Capture::new(7);
        for i in range {
            c.in_terminal(
                "/usr/bin/csrutil",
                "com.apple.csrutil",
                &["csrutil", "status", &format!("s{i}")],
                "/",
            );
        }
        c.out
    };
    let mut runs_produced = 0u64;
    let (mut counted, mut kept) = (0u64, 0u64);
    let mut d = Daemon::launch(dir, &[]);
    let thirds = [0, total / 3, 2 * total / 3, total];
    for run in 0..3 {
        let (from, to) = (thirds[run], thirds[run + 1]);
        for chunk in (from..to).step_by(1_000) {
            d.feed(&events(chunk..(chunk + 1_000).min(to)));
        }
        let fed = (to - from) as u64;
        // An event counts as analysed once its alert is counted: this status has them all.
        let s = d.wait_status(|s| s.events_analysed + s.events_dropped == fed);
        if run == 2 {
            // Last run: the receiver comes back for good and a SIGTERM drains everything.
            flapping.store(false, Ordering::Relaxed);
            let (code, dir) = d.stop();
            assert_eq!(code, 0);
            let last = Status::read(&dir.path().join("state/status.json")).unwrap();
            runs_produced += produced(&last);
            counted += last
                .sinks
                .iter()
                .map(|k| k.lost + k.spool_evicted)
                .sum::<u64>();
            // What the drain deadline left in the spool is kept for the next start, not lost.
            kept = last.sinks.iter().map(|k| k.spool_depth).sum::<u64>();
            break;
        }
        // A kill at a quiet moment: the receiver held up until it has everything produced so
        // far, so what a SIGKILL can lose (alerts in memory) is nothing, and the restart must
        // neither lose nor resend what the spool held.
        flapping.store(false, Ordering::Relaxed);
        let so_far = runs_produced + produced(&s);
        let want = so_far as usize;
        let start = Instant::now();
        while unique(&r).0 < want {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "stuck at {:?} of {want}",
                unique(&r)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let status = d.status().unwrap();
        counted += status.sinks.iter().map(|k| k.lost).sum::<u64>();
        runs_produced = so_far;
        let dir = d.kill();
        flapping.store(true, Ordering::Relaxed);
        d = Daemon::launch(dir, &[]);
    }
    done.store(true, Ordering::Relaxed);
    flapper.join().unwrap();
    let start = Instant::now();
    while (unique(&r).0 as u64) + kept + counted < runs_produced {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "delivered {:?} + spooled {kept} + counted {counted} < produced {runs_produced}",
            unique(&r)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (delivered, duplicates) = unique(&r);
    eprintln!(
        "soak: {total} events, {runs_produced} alerts produced, {delivered} delivered ({duplicates} duplicates), {kept} still spooled, {counted} counted lost or evicted; {} receiver restarts, 2 daemon kills",
        restarts.load(Ordering::Relaxed)
    );
    assert_eq!(delivered as u64 + kept + counted, runs_produced);
    assert_eq!(
        runs_produced, total as u64,
        "one alert per event, none dropped"
    );
}
