//! The bundled sample (examples/kext-attack.jsonl): generated here, so it stays in the full eslogger
//! format, and checked to raise the alerts the README promises. Regenerate with
//! `KEXTWATCH_BLESS=1 cargo test --test sample`.

use kextwatch_testkit as support;

use support::eslogger::{cast, Capture, Proc};
use support::{rule, run, severity};

const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/kext-attack.jsonl");

fn noise(c: &mut Capture, rounds: usize) {
    let slack = cast::slack();
    let md = cast::mdworker();
    let launchd = cast::launchd();
    let zsh = cast::terminal_zsh();
    for i in 0..rounds {
        c.open(
            &md,
            &format!("/Users/alice/Documents/Quarterly report {i}.numbers"),
        );
        c.after_ms(40);
        c.create(
            &slack,
            "/Users/alice/Library/Application Support/Slack/Cache",
            &format!("f_{i:06x}"),
        );
        c.write(
            &slack,
            &format!("/Users/alice/Library/Application Support/Slack/Cache/f_{i:06x}"),
        );
        c.close(
            &slack,
            &format!("/Users/alice/Library/Application Support/Slack/Cache/f_{i:06x}"),
            true,
        );
        c.after_ms(90);
        let xpc = launchd.exec_into("/usr/libexec/xpcproxy", "com.apple.xpc.proxy");
        c.exec(
            &launchd,
            &xpc,
            &["xpcproxy", "com.apple.mdworker.shared"],
            "/",
        );
        if i % 5 == 0 {
            let git = zsh.exec_into("/usr/bin/git", "com.apple.git");
            c.exec(&zsh, &git, &["git", "status"], "/Users/alice/src/app");
            let ls = zsh.exec_into("/bin/ls", "com.apple.ls");
            c.exec(
                &zsh,
                &ls,
                &["ls", "-la", "/Library/Extensions"],
                "/Users/alice",
            );
        }
        c.after_ms(700);
    }
}

fn build() -> String {
    let mut c = Capture::new(7);
    // Boot: the system loads Apple kexts.
    let kmd = cast::kernelmanagerd();
    for id in [
        "com.apple.filesystems.apfs",
        "com.apple.iokit.IOUSBFamily",
        "com.apple.driver.AppleHDA",
    ] {
        c.kextload(&kmd, id);
        c.after_ms(15);
    }
    noise(&mut c, 15);
    // The MDM agent checks SIP and loads VirtualBox's kext (both allowlisted).
    let jamf = cast::jamf();
    c.exec(
        &jamf,
        &jamf.exec_into("/usr/bin/csrutil", "com.apple.csrutil"),
        &["csrutil", "status"],
        "/",
    );
    c.after_ms(300);
    c.exec(
        &jamf,
        &jamf.exec_into("/usr/bin/kmutil", "com.apple.kmutil"),
        &["kmutil", "load", "-b", "org.virtualbox.kext.VBoxDrv"],
        "/",
    );
    c.after_ms(200);
    c.kextload(&kmd, "org.virtualbox.kext.VBoxDrv");
    noise(&mut c, 15);

    // The intrusion, from a terminal: look, weaken boot policy, stage a kext, load it, blind the EDR.
    let sudo = cast::sudo();
    c.in_terminal(
        "/usr/bin/csrutil",
        "com.apple.csrutil",
        &["csrutil", "status"],
        "/Users/alice",
    );
    c.after_ms(4_000);
    c.in_terminal(
        "/usr/sbin/kextstat",
        "com.apple.kextstat",
        &["kextstat"],
        "/Users/alice",
    );
    c.after_ms(9_000);
    c.exec(
        &sudo,
        &sudo.exec_into("/usr/sbin/nvram", "com.apple.nvram"),
        &[
            "nvram",
            "boot-args=kext-dev-mode=1 amfi_get_out_of_my_way=1",
        ],
        "/Users/alice",
    );
    noise(&mut c, 5);
    let cp = sudo.exec_into("/bin/cp", "com.apple.cp");
    c.exec(
        &sudo,
        &cp,
        &[
            "cp",
            "-R",
            "/Users/alice/Downloads/SoftRAID.kext",
            "/Library/Extensions/",
        ],
        "/Users/alice",
    );
    c.copy_bundle(&cp, "/Library/Extensions", "SoftRAID");
    c.after_ms(2_000);
    let chown = sudo.exec_into("/usr/sbin/chown", "com.apple.chown");
    c.exec(
        &sudo,
        &chown,
        &[
            "chown",
            "-R",
            "root:wheel",
            "/Library/Extensions/SoftRAID.kext",
        ],
        "/Users/alice",
    );
    c.setowner(&chown, "/Library/Extensions/SoftRAID.kext", 0, 0);
    c.after_ms(6_000);
    c.exec(
        &sudo,
        &sudo.exec_into("/sbin/kextload", "com.apple.kextload"),
        &["kextload", "/Library/Extensions/SoftRAID.kext"],
        "/Users/alice",
    );
    c.after_ms(400);
    c.kextload(&kmd, "com.softraid.driver.SoftRAID");
    noise(&mut c, 3);
    c.exec(
        &sudo,
        &sudo.exec_into("/sbin/kextunload", "com.apple.kextunload"),
        &["kextunload", "-b", "com.apple.iokit.EndpointSecurity"],
        "/Users/alice",
    );
    c.after_ms(300);
    c.kextunload(&kmd, "com.apple.iokit.EndpointSecurity");
    // A dropper elsewhere in the fleet's habits: ad-hoc binary in /tmp stages through rename.
    noise(&mut c, 20);
    let dropper = Proc {
        asid: 100_044,
        ..Proc::adhoc(9311, 1, "/private/tmp/.cache/updater")
    };
    c.rename(
        &dropper,
        "/private/tmp/.cache/AppleUSBEthernet.kext",
        "/Library/Extensions",
        "AppleUSBEthernet.kext",
    );
    noise(&mut c, 10);
    c.out
}

#[test]
fn bundled_sample_is_current_and_raises_the_documented_alerts() {
    let generated = build();
    if std::env::var_os("KEXTWATCH_BLESS").is_some() {
        std::fs::write(SAMPLE, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(SAMPLE)
        .expect("examples/kext-attack.jsonl (KEXTWATCH_BLESS=1 to create)");
    assert!(
        on_disk == generated,
        "examples/kext-attack.jsonl is stale: run KEXTWATCH_BLESS=1 cargo test --test sample"
    );

    let alerts = run(&on_disk);
    let got: Vec<(&str, &str)> = alerts.iter().map(|a| (rule(a), severity(a))).collect();
    assert_eq!(
        got,
        [
            ("KW-4002", "high"),     // nvram boot-args weakening
            ("KW-9002", "critical"), // kext bundle copied into /Library/Extensions after the weakening
            ("KW-9002", "critical"), // chown root:wheel of the bundle
            ("KW-9002", "critical"), // kextload of the staged kext
            ("KW-9002", "critical"), // the kernel's load event of it
            ("KW-9002", "critical"), // kextunload of EndpointSecurity
            ("KW-9002", "critical"), // the kernel's unload event
            ("KW-9002", "critical"), // ad-hoc dropper moves a kext in from /tmp, still in the window
            ("KW-9002", "critical"), // end of input: the folded copy events, with their count
        ],
        "{alerts:#?}"
    );
    // Nothing from the allowlisted MDM agent, Apple's kexts at boot, or everyday noise.
    for a in &alerts {
        let exe = a["process"]["parent"]["executable"].as_str().unwrap_or("");
        assert!(!exe.contains("jamf"), "{a:#}");
    }
}

#[test]
fn alerts_are_written_only_while_the_progress_bar_is_hidden() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    // A terminal shared by the bar and the alerts: every alert byte must land while the bar is
    // out of the way, or the scrollback keeps fragments of it.
    struct Fake {
        hidden: Arc<AtomicBool>,
        positions: usize,
    }
    impl kextwatch::offline::Progress for Fake {
        fn position(&mut self, _: u64) {
            self.positions += 1;
        }
        fn around_output(
            &mut self,
            write: &mut dyn FnMut() -> Result<(), kextwatch::output::OutputError>,
        ) -> Result<(), kextwatch::output::OutputError> {
            self.hidden.store(true, Ordering::SeqCst);
            let r = write();
            self.hidden.store(false, Ordering::SeqCst);
            r
        }
    }
    struct Terminal {
        hidden: Arc<AtomicBool>,
        bytes: Arc<AtomicUsize>,
        while_shown: Arc<AtomicUsize>,
    }
    impl std::io::Write for Terminal {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.bytes.fetch_add(b.len(), Ordering::SeqCst);
            if !self.hidden.load(Ordering::SeqCst) {
                self.while_shown.fetch_add(b.len(), Ordering::SeqCst);
            }
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let hidden = Arc::new(AtomicBool::new(false));
    let (bytes, while_shown) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut outputs = kextwatch::output::Outputs::from_writers(vec![(
        "stdout".into(),
        kextwatch::config::AlertFormat::Text,
        Box::new(Terminal {
            hidden: hidden.clone(),
            bytes: bytes.clone(),
            while_shown: while_shown.clone(),
        }),
    )]);
    let mut bar = Fake {
        hidden,
        positions: 0,
    };
    let sample = std::fs::read(SAMPLE).unwrap();
    let summary = kextwatch::offline::replay(
        &sample[..],
        kextwatch::detect::Engine::new(kextwatch::config::Config::default_config()),
        None,
        &mut outputs,
        Some(&mut bar),
    )
    .unwrap();
    drop(outputs);
    assert!(summary.alerts_by_severity.values().sum::<u64>() > 0);
    assert!(bytes.load(Ordering::SeqCst) > 0);
    assert_eq!(while_shown.load(Ordering::SeqCst), 0);
    assert!(bar.positions > 0, "the bar is told where the replay is");
}

/// Alerts without the times they were made at, which differ between two runs.
fn without_clock(mut alerts: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    for a in &mut alerts {
        if let Some(event) = a["event"].as_object_mut() {
            event.remove("ingested");
            event.remove("created");
        }
    }
    alerts
}

#[test]
fn the_sample_with_slashes_unescaped_raises_the_same_alerts() {
    // eslogger writes `\/`; other producers of the same format (and older captures) write `/`.
    // Both are the same JSON, so the alerts must be too, whichever decoding tier reads a line.
    let on_disk = std::fs::read_to_string(SAMPLE).unwrap();
    assert!(on_disk.contains(r"\/Library\/Extensions"));
    let plain = on_disk.replace(r"\/", "/");
    let escaped = without_clock(run(&on_disk));
    assert_eq!(escaped.len(), 9);
    assert_eq!(escaped, without_clock(run(&plain)));
}

#[test]
fn the_sample_with_every_objects_keys_sorted_raises_the_same_alerts() {
    // eslogger writes each object's keys in an order of its own (testkit does too, so that no
    // decoding shortcut can depend on one order); the same objects with keys sorted are the same
    // events.
    let on_disk = std::fs::read_to_string(SAMPLE).unwrap();
    let sorted: String = on_disk
        .lines()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            serde_json::to_string(&value).unwrap() + "\n"
        })
        .collect();
    assert_ne!(
        sorted,
        on_disk.replace(r"\/", "/"),
        "the sample's keys are shuffled"
    );
    let shuffled = without_clock(run(&on_disk));
    assert_eq!(shuffled.len(), 9);
    assert_eq!(shuffled, without_clock(run(&sorted)));
}
