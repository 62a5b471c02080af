//! Detection behaviour on eslogger captures: each rule, its benign look-alikes, correlation, folding.
//! Cases follow Atomic Red Team T1547.006, and the Sigma and Elastic macOS kext/SIP rules.

use kextwatch_testkit as support;

use support::eslogger::{cast, Capture, Proc};
use support::{reasons, rule, run, run_min, severity, techniques};

const SOFTRAID: &str = "/Library/Extensions/SoftRAID.kext";

/// `<tool> args...` typed in a terminal.
fn zsh_exec(c: &mut Capture, exe: &str, sid: &str, args: &[&str]) {
    c.in_terminal(exe, sid, args, "/Users/alice");
}

/// `sudo <tool> args...` typed in a terminal: the sudo child execs the tool.
fn sudo_exec(c: &mut Capture, exe: &str, sid: &str, args: &[&str]) {
    let sudo = cast::sudo();
    let target = sudo.exec_into(exe, sid);
    c.exec(&sudo, &target, args, "/Users/alice");
}

#[test]
fn art_kextload_from_terminal_is_medium_with_reasons() {
    let mut c = Capture::new(6);
    sudo_exec(
        &mut c,
        "/sbin/kextload",
        "com.apple.kextload",
        &["kextload", SOFTRAID],
    );
    let alerts = run(&c.out);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let a = &alerts[0];
    assert_eq!(rule(a), "KW-1001");
    assert_eq!(severity(a), "medium");
    assert_eq!(techniques(a), ["T1547.006"]);
    let r = reasons(a);
    assert!(r.contains("not an allowlisted management tool"), "{r}");
    assert!(r.contains("terminal (/dev/ttys003) by user 501"), "{r}");
    assert_eq!(a["process"]["executable"], "/sbin/kextload");
    assert_eq!(a["process"]["args"][1], SOFTRAID);
    assert_eq!(
        a["process"]["parent"]["code_signature"]["signing_id"],
        "com.apple.sudo"
    );
    assert_eq!(a["file"]["path"], SOFTRAID);
    assert_eq!(a["user"]["id"], "501");
    assert_eq!(a["user"]["effective"]["id"], "0");
    assert_eq!(a["@timestamp"], support::eslogger::rfc3339(c.now_ns));
}

#[test]
fn art_kextunload_and_kmutil_forms() {
    let mut c = Capture::new(7);
    sudo_exec(
        &mut c,
        "/sbin/kextunload",
        "com.apple.kextunload",
        &["kextunload", SOFTRAID],
    );
    c.after_ms(1000);
    sudo_exec(
        &mut c,
        "/usr/bin/kmutil",
        "com.apple.kmutil",
        &["kmutil", "load", "-p", SOFTRAID],
    );
    c.after_ms(1000);
    sudo_exec(
        &mut c,
        "/usr/bin/kmutil",
        "com.apple.kmutil",
        &["kmutil", "unload", "-p", SOFTRAID],
    );
    let alerts = run(&c.out);
    let got: Vec<(&str, &str)> = alerts.iter().map(|a| (rule(a), severity(a))).collect();
    assert_eq!(
        got,
        [
            ("KW-1002", "medium"),
            ("KW-1001", "medium"),
            ("KW-1002", "medium")
        ]
    );
}

#[test]
fn api_load_seen_only_as_kextload_event() {
    let mut c = Capture::new(9);
    c.kextload(&cast::kernelmanagerd(), "com.softraid.driver.SoftRAID");
    let alerts = run(&c.out);
    assert_eq!(alerts.len(), 1);
    assert_eq!(rule(&alerts[0]), "KW-3001");
    // Who signed it is unknown (no KextPolicy, no bundle): medium, and the reason says how to check.
    assert_eq!(severity(&alerts[0]), "medium");
    let why = reasons(&alerts[0]);
    assert!(
        why.contains(
            "com.softraid.driver.SoftRAID is not in the allowlist and its Team ID is unknown"
        ) && why.contains("--kext-policy")
            && why.contains("--bundles-root"),
        "{why}"
    );
    assert_eq!(
        alerts[0]["kextwatch"]["kext"]["bundle_id"],
        "com.softraid.driver.SoftRAID"
    );
}

#[test]
fn kextload_event_from_non_system_loader_is_raised() {
    let mut c = Capture::new(9);
    let loader = Proc::adhoc(6000, 1, "/Users/alice/.local/loader");
    c.kextload(&loader, "com.evil.rootkit");
    let alerts = run(&c.out);
    // Unknown identity (medium), raised because an ad-hoc binary, not kernelmanagerd, loaded it.
    assert_eq!(severity(&alerts[0]), "high");
    assert!(reasons(&alerts[0]).contains("not by the system kext daemon"));
}

#[test]
fn apple_kext_loaded_by_a_non_system_process_is_reported() {
    let mut c = Capture::new(9);
    c.kextload(
        &Proc::adhoc(6001, 1, "/Users/alice/loader"),
        "com.apple.driver.VulnerableDriver",
    );
    let alerts = run(&c.out);
    assert_eq!((rule(&alerts[0]), severity(&alerts[0])), ("KW-3001", "low"));
    assert!(reasons(&alerts[0]).contains("not by the system kext daemon"));
}

#[test]
fn csrutil_disable_is_high_and_status_is_discovery() {
    let mut c = Capture::new(6);
    zsh_exec(
        &mut c,
        "/usr/bin/csrutil",
        "com.apple.csrutil",
        &["csrutil", "status"],
    );
    c.after_ms(5000);
    zsh_exec(
        &mut c,
        "/usr/bin/csrutil",
        "com.apple.csrutil",
        &["csrutil", "disable"],
    );
    let alerts = run(&c.out);
    assert_eq!(
        alerts.len(),
        1,
        "csrutil status must not alert: {alerts:#?}"
    );
    assert_eq!(rule(&alerts[0]), "KW-4001");
    assert_eq!(severity(&alerts[0]), "high");
    assert_eq!(techniques(&alerts[0]), ["T1562.001", "T1553.006"]);
    assert!(reasons(&alerts[0]).contains("recoveryOS"));

    let all = run_min(&c.out, "info");
    assert_eq!(all.len(), 2);
    assert_eq!((rule(&all[0]), severity(&all[0])), ("KW-1000", "info"));
}

#[test]
fn policy_weakening_commands() {
    let zsh = cast::terminal_zsh();
    let cases: &[(&str, &str, &[&str], &str, &str)] = &[
        (
            "/usr/sbin/nvram",
            "com.apple.nvram",
            &["nvram", "boot-args=amfi_get_out_of_my_way=1"],
            "KW-4002",
            "high",
        ),
        (
            "/usr/sbin/nvram",
            "com.apple.nvram",
            &["nvram", "csr-active-config=%7f%00%00%00"],
            "KW-4002",
            "high",
        ),
        (
            "/usr/bin/bputil",
            "com.apple.bputil",
            &["bputil", "-k"],
            "KW-4003",
            "high",
        ),
        (
            "/usr/sbin/spctl",
            "com.apple.spctl",
            &["spctl", "kext-consent", "add", "ABCDE12345"],
            "KW-4004",
            "high",
        ),
        (
            "/usr/sbin/spctl",
            "com.apple.spctl",
            &["spctl", "kext-consent", "disable"],
            "KW-4004",
            "high",
        ),
        (
            "/usr/sbin/spctl",
            "com.apple.spctl",
            &["spctl", "--master-disable"],
            "KW-4005",
            "high",
        ),
        (
            "/usr/bin/systemextensionsctl",
            "com.apple.systemextensionsctl",
            &["systemextensionsctl", "developer", "on"],
            "KW-4006",
            "high",
        ),
        (
            "/usr/bin/systemextensionsctl",
            "com.apple.systemextensionsctl",
            &["systemextensionsctl", "reset"],
            "KW-4006",
            "high",
        ),
        (
            "/usr/bin/csrutil",
            "com.apple.csrutil",
            &["csrutil", "enable", "--without", "kext"],
            "KW-4001",
            "high",
        ),
        (
            "/usr/bin/csrutil",
            "com.apple.csrutil",
            &["csrutil", "enable", "--without", "dtrace"],
            "KW-4001",
            "medium",
        ),
        (
            "/usr/sbin/nvram",
            "com.apple.nvram",
            &["nvram", "-c"],
            "KW-4002",
            "medium",
        ),
        (
            "/usr/sbin/nvram",
            "com.apple.nvram",
            &["nvram", "-f", "/private/tmp/vars"],
            "KW-4002",
            "medium",
        ),
        (
            "/usr/bin/csrutil",
            "com.apple.csrutil",
            &["csrutil", "authenticated-root", "disable"],
            "KW-4001",
            "high",
        ),
    ];
    for (exe, sid, args, want_rule, want_sev) in cases {
        let mut c = Capture::new(7);
        c.exec(&zsh, &zsh.exec_into(exe, sid), args, "/Users/alice");
        let alerts = run(&c.out);
        assert_eq!(alerts.len(), 1, "{args:?}");
        assert_eq!(
            (rule(&alerts[0]), severity(&alerts[0])),
            (*want_rule, *want_sev),
            "{args:?}"
        );
    }
    // Discovery and read-only forms are not alerts.
    for (exe, sid, args) in [
        (
            "/usr/sbin/kextstat",
            "com.apple.kextstat",
            &["kextstat"][..],
        ),
        (
            "/usr/bin/kmutil",
            "com.apple.kmutil",
            &["kmutil", "showloaded"][..],
        ),
        (
            "/usr/sbin/kextfind",
            "com.apple.kextfind",
            &["kextfind", "-b", "com.apple.driver.AppleHDA"][..],
        ),
        ("/usr/sbin/nvram", "com.apple.nvram", &["nvram", "-p"][..]),
        (
            "/usr/sbin/spctl",
            "com.apple.spctl",
            &["spctl", "kext-consent", "list"][..],
        ),
        (
            "/usr/bin/systemextensionsctl",
            "com.apple.systemextensionsctl",
            &["systemextensionsctl", "list"][..],
        ),
        ("/usr/bin/bputil", "com.apple.bputil", &["bputil", "-d"][..]),
    ] {
        let mut c = Capture::new(7);
        c.exec(&zsh, &zsh.exec_into(exe, sid), args, "/Users/alice");
        assert!(run(&c.out).is_empty(), "{args:?} should not alert");
    }
}

#[test]
fn unloading_endpoint_security_is_high() {
    let mut c = Capture::new(6);
    sudo_exec(
        &mut c,
        "/sbin/kextunload",
        "com.apple.kextunload",
        &["kextunload", "-b", "com.apple.iokit.EndpointSecurity"],
    );
    c.after_ms(200);
    c.kextunload(&cast::kernelmanagerd(), "com.apple.iokit.EndpointSecurity");
    c.after_ms(200);
    c.kextunload(&cast::kernelmanagerd(), "com.apple.driver.AppleHDA");
    let alerts = run(&c.out);
    let got: Vec<(&str, &str)> = alerts.iter().map(|a| (rule(a), severity(a))).collect();
    assert_eq!(got, [("KW-1002", "high"), ("KW-3002", "high")]);
    for a in &alerts {
        assert!(techniques(a).contains(&"T1562.001"));
        assert!(
            reasons(a).contains("com.apple.iokit.EndpointSecurity turns off a security control")
        );
    }
}

#[test]
fn copy_into_extensions_then_kextload_within_20s_is_one_correlated_alert() {
    let mut c = Capture::new(6);
    let zsh = cast::terminal_zsh();
    let cp = zsh.exec_into("/bin/cp", "com.apple.cp");
    c.exec(
        &zsh,
        &cp,
        &[
            "cp",
            "-R",
            "/Users/alice/Downloads/Evil.kext",
            "/Library/Extensions/",
        ],
        "/Users/alice",
    );
    c.copy_bundle(&cp, "/Library/Extensions", "Evil");
    c.after_ms(12_000);
    sudo_exec(
        &mut c,
        "/sbin/kextload",
        "com.apple.kextload",
        &["kextload", "/Library/Extensions/Evil.kext"],
    );
    let alerts = run(&c.out);
    let got: Vec<(&str, &str)> = alerts.iter().map(|a| (rule(a), severity(a))).collect();
    // The staging alert (its file events folded), the correlated load, then the fold follow-up.
    assert_eq!(
        got,
        [
            ("KW-2001", "medium"),
            ("KW-9001", "high"),
            ("KW-2001", "medium")
        ],
        "{alerts:#?}"
    );
    let load = &alerts[1];
    let r = reasons(load);
    assert!(
        r.contains("/Library/Extensions/Evil.kext was staged by /bin/cp"),
        "{r}"
    );
    assert!(r.contains("12 s earlier, in the same login session"), "{r}");
    let evidence = load["kextwatch"]["evidence"].as_array().unwrap();
    assert_eq!(evidence.len(), 2);
    assert_eq!(evidence[0]["executable"], "/bin/cp");
    assert_eq!(evidence[1]["executable"], "/sbin/kextload");
    // cp -R of a bundle with two files: 3 directories created, 2 files created, written and closed.
    assert_eq!(alerts[2]["kextwatch"]["folded"]["count"], 9);
}

#[test]
fn a_load_long_after_the_staging_is_tied_to_it_by_the_durable_memory() {
    let mut c = Capture::new(6);
    let zsh = cast::terminal_zsh();
    let cp = zsh.exec_into("/bin/cp", "com.apple.cp");
    c.copy_bundle(&cp, "/Library/Extensions", "Evil");
    // Three hours later: far outside the 120 s window, still one story.
    c.after_ms(3 * 3_600_000);
    sudo_exec(
        &mut c,
        "/sbin/kextload",
        "com.apple.kextload",
        &["kextload", "/Library/Extensions/Evil.kext"],
    );
    let alerts = run(&c.out);
    let load = alerts.last().unwrap();
    assert_eq!(
        (rule(load), severity(load)),
        ("KW-9001", "high"),
        "{alerts:#?}"
    );
    let why = reasons(load);
    assert!(
        why.contains("/Library/Extensions/Evil.kext was staged by /bin/cp (pid 4100) 3 h earlier (9 changes since), beyond the correlation window"),
        "{why}"
    );
    // The staging is the evidence, before the load itself.
    let evidence = load["kextwatch"]["evidence"].as_array().unwrap();
    assert_eq!(evidence[0]["executable"], "/bin/cp");
    assert_eq!(evidence.last().unwrap()["executable"], "/sbin/kextload");

    // Loaded once, forgotten: a second load of it is judged on its own.
    sudo_exec(
        &mut c,
        "/sbin/kextload",
        "com.apple.kextload",
        &["kextload", "/Library/Extensions/Evil.kext"],
    );
    let alerts = run_min(&c.out, "info");
    assert_eq!(rule(alerts.last().unwrap()), "KW-1001");
}

#[test]
fn a_bundle_removed_before_any_load_is_forgotten() {
    let mut c = Capture::new(8);
    let cp = cast::terminal_zsh().exec_into("/bin/cp", "com.apple.cp");
    c.copy_bundle(&cp, "/Library/Extensions", "Evil");
    c.after_ms(600_000);
    let rm = cast::terminal_zsh().exec_into("/bin/rm", "com.apple.rm");
    c.unlink(&rm, "/Library/Extensions/Evil.kext", "/Library/Extensions");
    c.after_ms(600_000);
    sudo_exec(
        &mut c,
        "/sbin/kextload",
        "com.apple.kextload",
        &["kextload", "/Library/Extensions/Evil.kext"],
    );
    let alerts = run(&c.out);
    assert_eq!(rule(alerts.last().unwrap()), "KW-1001", "{alerts:#?}");
}

#[test]
fn a_collection_rebuild_after_an_untrusted_staging_is_high() {
    let mut c = Capture::new(8);
    let cp = cast::terminal_zsh().exec_into("/bin/cp", "com.apple.cp");
    c.copy_bundle(&cp, "/Library/Extensions", "Evil");
    c.after_ms(2 * 3_600_000);
    // Even Apple's daemon rebuilding the auxiliary collection can pull the bundle in.
    let kmd = cast::kernelmanagerd();
    c.exec(
        &kmd.forked(9000),
        &kmd.forked(9000)
            .exec_into("/usr/bin/kmutil", "com.apple.kmutil"),
        &["kmutil", "create", "-n", "aux", "-r", "/Library/Extensions"],
        "/",
    );
    let alerts = run(&c.out);
    let rebuild = alerts.last().unwrap();
    assert_eq!(
        (rule(rebuild), severity(rebuild)),
        ("KW-1003", "high"),
        "{alerts:#?}"
    );
    assert!(reasons(rebuild)
        .contains("the rebuilt collection can include /Library/Extensions/Evil.kext"));
}

#[test]
fn staged_then_api_load_correlates_host_wide() {
    let mut c = Capture::new(9);
    let installer = Proc {
        asid: 100_021,
        ..Proc::adhoc(5100, 5000, "/private/tmp/.x/installer")
    };
    c.rename(
        &installer,
        "/private/tmp/.x/Evil.kext",
        "/Library/Extensions",
        "Evil.kext",
    );
    c.after_ms(3000);
    c.kextload(&cast::kernelmanagerd(), "com.evil.driver");
    let alerts = run(&c.out);
    let got: Vec<(&str, &str)> = alerts.iter().map(|a| (rule(a), severity(a))).collect();
    assert_eq!(
        got,
        [("KW-2001", "high"), ("KW-9001", "high")],
        "{alerts:#?}"
    );
    let r = reasons(&alerts[0]);
    assert!(
        r.contains("moved in from /private/tmp/.x/Evil.kext, in a temporary folder"),
        "{r}"
    );
    assert!(r.contains("unsigned or ad-hoc"), "{r}");
    assert!(reasons(&alerts[1]).contains("by another session"));
}

#[test]
fn kext_activity_after_sip_weakening_is_critical() {
    let mut c = Capture::new(6);
    zsh_exec(
        &mut c,
        "/usr/bin/csrutil",
        "com.apple.csrutil",
        &["csrutil", "disable"],
    );
    c.after_ms(30_000);
    sudo_exec(
        &mut c,
        "/usr/bin/kmutil",
        "com.apple.kmutil",
        &["kmutil", "load", "-p", SOFTRAID],
    );
    let alerts = run(&c.out);
    let got: Vec<(&str, &str)> = alerts.iter().map(|a| (rule(a), severity(a))).collect();
    assert_eq!(got, [("KW-4001", "high"), ("KW-9002", "critical")]);
    assert!(reasons(&alerts[1]).contains("follows `csrutil disable`"));
    assert_eq!(
        alerts[1]["kextwatch"]["evidence"].as_array().unwrap().len(),
        2
    );
    assert!(techniques(&alerts[1]).contains(&"T1547.006"));
}

#[test]
fn allowlisted_mdm_agent_loading_allowlisted_kext_is_not_an_alert() {
    let mut c = Capture::new(7);
    let jamf = cast::jamf();
    let kmutil = jamf.exec_into("/usr/bin/kmutil", "com.apple.kmutil");
    c.exec(
        &jamf,
        &kmutil,
        &["kmutil", "load", "-b", "org.virtualbox.kext.VBoxDrv"],
        "/",
    );
    c.after_ms(800);
    c.kextload(&cast::kernelmanagerd(), "org.virtualbox.kext.VBoxDrv");
    c.after_ms(800);
    let csr = jamf.exec_into("/usr/bin/csrutil", "com.apple.csrutil");
    c.exec(&jamf, &csr, &["csrutil", "status"], "/");
    assert!(run(&c.out).is_empty());
    // Seen at info, with the reason that made it benign.
    let all = run_min(&c.out, "info");
    assert!(reasons(&all[0]).contains("allowlisted management tool /usr/local/jamf/bin/jamf"));
}

#[test]
fn same_initiator_identity_without_team_is_not_trusted() {
    // A copy of the Jamf binary re-signed ad hoc keeps the signing id but loses the team.
    let mut c = Capture::new(7);
    let fake = Proc {
        signing_id: Some("com.jamfsoftware.jamf".into()),
        ..Proc::adhoc(2300, 1, "/usr/local/jamf/bin/jamf")
    };
    c.exec(
        &fake,
        &fake.exec_into("/usr/bin/kmutil", "com.apple.kmutil"),
        &["kmutil", "load", "-p", SOFTRAID],
        "/",
    );
    let alerts = run(&c.out);
    assert_eq!(severity(&alerts[0]), "high");
    assert!(reasons(&alerts[0]).contains("unsigned or ad-hoc"));
}

#[test]
fn apple_kexts_at_boot_and_system_staging_are_quiet() {
    let mut c = Capture::new(9);
    let kmd = cast::kernelmanagerd();
    for id in [
        "com.apple.driver.AppleHDA",
        "com.apple.iokit.IOUSBFamily",
        "com.apple.filesystems.apfs",
    ] {
        c.kextload(&kmd, id);
        c.after_ms(5);
    }
    c.copy_bundle(
        &kmd,
        "/Library/StagedExtensions/Library/Extensions",
        "VBoxDrv",
    );
    assert!(run(&c.out).is_empty());
}

#[test]
fn noise_outside_watched_roots_is_ignored() {
    let mut c = Capture::new(6);
    let slack = cast::slack();
    for i in 0..50 {
        c.open(
            &cast::mdworker(),
            &format!("/Users/alice/Documents/file{i}.txt"),
        );
        c.create(
            &slack,
            "/Users/alice/Library/Caches/com.tinyspeck.slackmacgap",
            &format!("cache{i}"),
        );
        c.write(&slack, "/Library/ExtensionsBackup/not-a-root.txt");
        c.exec(
            &cast::launchd(),
            &cast::launchd().exec_into("/usr/libexec/xpcproxy", "com.apple.xpc.proxy"),
            &["xpcproxy", "com.apple.x"],
            "/",
        );
    }
    assert!(run(&c.out).is_empty());
}

#[test]
fn path_tricks_do_not_evade_watched_roots() {
    let mut c = Capture::new(6);
    let zsh = cast::terminal_zsh();
    let cp = zsh.exec_into("/bin/cp", "com.apple.cp");
    c.create(&cp, "/library/extensions/../Extensions", "Evil.kext");
    c.after_ms(10);
    c.create(&cp, "/System/Volumes/Data/Library/Extensions", "Other.kext");
    let alerts = run(&c.out);
    let paths: Vec<&str> = alerts
        .iter()
        .map(|a| a["file"]["path"].as_str().unwrap())
        .collect();
    assert_eq!(
        paths,
        [
            "/library/Extensions/Evil.kext",
            "/Library/Extensions/Other.kext"
        ]
    );
}

#[test]
fn masquerading_tool_outside_system_dirs_is_high() {
    let mut c = Capture::new(6);
    let zsh = cast::terminal_zsh();
    let fake = Proc::adhoc(4200, 4100, "/tmp/kextload");
    c.exec(&zsh, &fake, &["kextload", SOFTRAID], "/tmp");
    let alerts = run(&c.out);
    assert_eq!(severity(&alerts[0]), "high");
    assert!(
        reasons(&alerts[0]).contains("executed from /tmp/kextload, not from a system directory")
    );
}

#[test]
fn kext_loaded_from_temporary_folder_is_high() {
    let mut c = Capture::new(6);
    let sudo = cast::sudo();
    let kextutil = sudo.exec_into("/usr/bin/kextutil", "com.apple.kextutil");
    c.exec(&sudo, &kextutil, &["kextutil", "Evil.kext"], "/private/tmp");
    let alerts = run(&c.out);
    assert_eq!(severity(&alerts[0]), "high");
    assert!(
        reasons(&alerts[0]).contains("kext path /private/tmp/Evil.kext is in a temporary folder")
    );
}

#[test]
fn file_events_of_every_kind_under_roots() {
    let mut c = Capture::new(7);
    let zsh = cast::terminal_zsh();
    let p = zsh.exec_into("/usr/sbin/chown", "com.apple.chown");
    let b = "/Library/Extensions/Evil.kext";
    c.setowner(&p, b, 0, 0).after_ms(1);
    c.setmode(&p, "/System/Library/Extensions/Evil2.kext", 0o755)
        .after_ms(1);
    c.setextattr(
        &p,
        "/Library/StagedExtensions/Evil3.kext",
        "com.apple.quarantine",
    )
    .after_ms(1);
    c.unlink(
        &p,
        "/Library/Extensions/Old.kext/Contents/Info.plist",
        "/Library/Extensions/Old.kext/Contents",
    )
    .after_ms(1);
    c.rename(
        &p,
        "/Library/Extensions/Gone.kext",
        "/private/tmp",
        "Gone.kext",
    );
    let alerts = run(&c.out);
    let actions: Vec<&str> = alerts
        .iter()
        .map(|a| a["event"]["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["setowner", "setmode", "setextattr", "unlink", "rename"]
    );
    assert!(alerts
        .iter()
        .all(|a| rule(a) == "KW-2001" && severity(a) == "medium"));
    assert!(reasons(&alerts[4]).contains("moved out"));
}

#[test]
fn repeated_alerts_fold_with_a_count() {
    let mut c = Capture::new(6);
    for _ in 0..50 {
        sudo_exec(
            &mut c,
            "/sbin/kextload",
            "com.apple.kextload",
            &["kextload", SOFTRAID],
        );
        c.after_ms(2000);
    }
    let alerts = run(&c.out);
    assert_eq!(alerts.len(), 2);
    assert!(alerts[0]["kextwatch"].get("folded").is_none());
    assert_eq!(alerts[1]["kextwatch"]["folded"]["count"], 50);
    assert!(reasons(&alerts[1]).contains("49 more identical alerts folded"));
    // Past the fold window, a new alert opens a new fold.
    c.after_ms(400_000);
    sudo_exec(
        &mut c,
        "/sbin/kextload",
        "com.apple.kextload",
        &["kextload", SOFTRAID],
    );
    assert_eq!(run(&c.out).len(), 3);
}

#[test]
fn replay_is_deterministic() {
    let mut c = Capture::new(6);
    let zsh = cast::terminal_zsh();
    c.in_terminal(
        "/usr/bin/csrutil",
        "com.apple.csrutil",
        &["csrutil", "disable"],
        "/",
    );
    c.copy_bundle(
        &zsh.exec_into("/bin/cp", "com.apple.cp"),
        "/Library/Extensions",
        "A",
    );
    c.kextload(&cast::kernelmanagerd(), "com.a.A");
    let first = run(&c.out);
    // What the analyst sees, in order: the weakening, the staging after it, the load of what was
    // staged (attributed to the staging and the weakening), and the folded copy's follow-up.
    let got: Vec<(&str, &str)> = first.iter().map(|a| (rule(a), severity(a))).collect();
    assert_eq!(
        got,
        [
            ("KW-4001", "high"),
            ("KW-9002", "critical"),
            ("KW-9002", "critical"),
            ("KW-9002", "critical"),
        ]
    );
    assert!(reasons(&first[1]).contains("/Library/Extensions/A.kext created"));
    assert!(reasons(&first[2]).contains("was staged by /bin/cp"));
    assert!(reasons(&first[3]).contains("8 more identical alerts folded"));
    // And the same bytes in give the same alerts out, field for field.
    assert_eq!(first, run(&c.out));
}

#[test]
fn correlation_and_fold_state_expire_with_event_time() {
    use kextwatch::config::Config;
    use kextwatch::detect::Engine;

    let mut c = Capture::new(7);
    let zsh = cast::terminal_zsh();
    let cp = zsh.exec_into("/bin/cp", "com.apple.cp");
    for i in 0..3000 {
        c.create(&cp, "/Library/Extensions", &format!("K{i}.kext"));
        c.after_ms(500);
    }
    let mut engine = Engine::new(Config::default_config());
    let mut out = Vec::new();
    let mut peak = (0, 0);
    for line in c.out.lines() {
        engine.process(&support::event(line), &mut out);
        let (signals, folds) = engine.open_state();
        peak = (peak.0.max(signals), peak.1.max(folds));
    }
    // 500 ms apart: a 120 s correlation window holds 240 signals (241 with both ends), a 300 s fold
    // window 600 (601): state is bounded by the windows, and really is that state.
    assert!(
        (240..=241).contains(&peak.0) && (600..=601).contains(&peak.1),
        "{peak:?}"
    );
    assert_eq!(out.len(), 3000);
}

#[test]
fn kext_collection_rebuilds_are_reported() {
    for args in [
        &["kmutil", "create", "-n", "aux", "-r", "/Library/Extensions"][..],
        &["kmutil", "install", "--update-all"][..],
    ] {
        let mut c = Capture::new(9);
        sudo_exec(&mut c, "/usr/bin/kmutil", "com.apple.kmutil", args);
        let alerts = run(&c.out);
        assert_eq!(
            (rule(&alerts[0]), severity(&alerts[0])),
            ("KW-1003", "medium"),
            "{args:?}"
        );
    }
    let mut c = Capture::new(9);
    sudo_exec(
        &mut c,
        "/usr/sbin/kextcache",
        "com.apple.kextcache",
        &["kextcache", "-i", "/"],
    );
    assert_eq!(rule(&run(&c.out)[0]), "KW-1003");
}

#[test]
fn huge_arguments_are_clipped_in_alerts() {
    let mut c = Capture::new(9);
    let big = format!("/tmp/{}", "é".repeat(60_000));
    let many: Vec<String> = (0..1000).map(|i| format!("-x{i}")).collect();
    let mut args: Vec<&str> = vec!["kextload", &big];
    args.extend(many.iter().map(String::as_str));
    sudo_exec(&mut c, "/sbin/kextload", "com.apple.kextload", &args);
    let alerts = run(&c.out);
    let json = serde_json::to_string(&alerts[0]).unwrap();
    assert!(json.len() < 64 * 1024, "{} bytes", json.len());
    let a = alerts[0]["process"]["args"].as_array().unwrap();
    assert_eq!(a.len(), 257);
    assert!(a[1]
        .as_str()
        .unwrap()
        .ends_with("more bytes clipped by kextwatch]"));
    assert_eq!(a[256], "...[746 more arguments clipped by kextwatch]");
}

// ---- Bounds, trust and state the analyst relies on ----

/// `cp` in a terminal, as the staging process of many bundles.
fn terminal_cp() -> Proc {
    cast::terminal_zsh().exec_into("/bin/cp", "com.apple.cp")
}

/// Run the capture through one engine; the alerts and the engine's counters.
fn run_engine(out: &str) -> (Vec<kextwatch::alert::Alert>, kextwatch::detect::EngineStats) {
    let mut engine = kextwatch::detect::Engine::new(kextwatch::config::Config::default_config());
    let mut alerts = Vec::new();
    for line in out.lines() {
        engine.process(&support::event(line), &mut alerts);
    }
    engine.finish(&mut alerts);
    (alerts, engine.stats())
}

#[test]
fn past_4096_staged_bundles_the_oldest_is_forgotten_and_counted() {
    let mut c = Capture::new(7);
    let cp = terminal_cp();
    for i in 0..4097 {
        c.create(&cp, "/Library/Extensions", &format!("K{i}.kext"));
        c.after_ms(1);
    }
    // Both loads are inside the 120 s window; only the first staging was pushed out.
    for k in ["K0", "K1"] {
        sudo_exec(
            &mut c,
            "/usr/bin/kmutil",
            "com.apple.kmutil",
            &[
                "kmutil",
                "load",
                "-p",
                &format!("/Library/Extensions/{k}.kext"),
            ],
        );
    }
    let (alerts, stats) = run_engine(&c.out);
    assert_eq!(stats.signals_evicted, 1);
    let loads: Vec<(&str, String)> = alerts
        .iter()
        .filter(|a| a.event.action == "exec")
        .map(|a| (a.rule.id, a.reasons.join(" | ")))
        .collect();
    assert_eq!(loads.len(), 2, "{loads:#?}");
    assert_eq!(
        loads[0].0, "KW-1001",
        "K0's staging was forgotten: {}",
        loads[0].1
    );
    assert_eq!(loads[1].0, "KW-9001");
    assert!(loads[1]
        .1
        .contains("/Library/Extensions/K1.kext was staged by /bin/cp"));
}

#[test]
fn past_16384_open_folds_new_alerts_go_out_unfolded_and_counted() {
    // Removals: distinct alerts that stage nothing, so only folding holds state.
    let mut c = Capture::new(7);
    let rm = cast::terminal_zsh().exec_into("/bin/rm", "com.apple.rm");
    let remove = |c: &mut Capture, i: usize| {
        c.unlink(
            &rm,
            &format!("/Library/Extensions/K{i}.kext/Contents/Info.plist"),
            &format!("/Library/Extensions/K{i}.kext/Contents"),
        );
    };
    for i in 0..16_385 {
        remove(&mut c, i);
        c.after_ms(1);
    }
    // A repeat of the alert that found no fold slot, and a repeat of the first, which has one.
    remove(&mut c, 16_384);
    remove(&mut c, 0);
    let (alerts, stats) = run_engine(&c.out);
    assert_eq!(stats.unfolded_over_capacity, 2);
    assert_eq!(stats.folded, 1);
    // 16,385 first alerts, the unfolded repeat, and K0's fold follow-up at the end: nothing lost.
    assert_eq!(alerts.len(), 16_387);
    let path = |a: &kextwatch::alert::Alert| a.file.as_ref().unwrap().path.clone();
    assert_eq!(
        path(&alerts[16_385]),
        "/Library/Extensions/K16384.kext/Contents/Info.plist"
    );
    let last = alerts.last().unwrap();
    assert_eq!(
        path(last),
        "/Library/Extensions/K0.kext/Contents/Info.plist"
    );
    assert_eq!(last.kextwatch.folded.as_ref().unwrap().count, 2);
}

#[test]
fn an_initiator_is_trusted_only_with_its_signing_id_and_its_team() {
    // Jamf is allowlisted as (com.jamfsoftware.jamf, 483DWKW443): each half alone is not Jamf.
    for (who, jamf) in [
        (
            "Jamf's signing id under another team",
            Proc::developer(
                2210,
                1,
                "/usr/local/jamf/bin/jamf",
                "com.jamfsoftware.jamf",
                "ZZZZZ99999",
            ),
        ),
        (
            "another program of Jamf's team",
            Proc::developer(
                2210,
                1,
                "/usr/local/jamf/bin/jamfHelper",
                "com.jamfsoftware.jamfHelper",
                "483DWKW443",
            ),
        ),
        ("Jamf itself", cast::jamf()),
    ] {
        let mut c = Capture::new(7);
        c.exec(
            &jamf,
            &jamf.exec_into("/usr/bin/kmutil", "com.apple.kmutil"),
            &["kmutil", "load", "-b", "org.virtualbox.kext.VBoxDrv"],
            "/",
        );
        let alerts = run(&c.out);
        if who == "Jamf itself" {
            assert!(alerts.is_empty(), "{who}: {alerts:#?}");
        } else {
            assert_eq!(alerts.len(), 1, "{who}");
            assert_eq!(rule(&alerts[0]), "KW-1001", "{who}");
            assert!(
                reasons(&alerts[0]).contains("is not an allowlisted management tool"),
                "{who}: {}",
                reasons(&alerts[0])
            );
        }
    }
}

#[test]
fn an_allowlisted_manager_weakening_protection_is_one_step_lower() {
    let mut c = Capture::new(7);
    let jamf = cast::jamf();
    c.exec(
        &jamf,
        &jamf.exec_into("/usr/bin/csrutil", "com.apple.csrutil"),
        &["csrutil", "disable"],
        "/",
    );
    c.exec(
        &jamf,
        &jamf.exec_into("/usr/sbin/spctl", "com.apple.spctl"),
        &["spctl", "kext-consent", "disable"],
        "/",
    );
    c.after_ms(5_000);
    c.kextload(&cast::kernelmanagerd(), "com.evil.driver");
    let alerts = run(&c.out);
    let got: Vec<(&str, &str)> = alerts.iter().map(|a| (rule(a), severity(a))).collect();
    // From a terminal both are high; from the allowlisted manager, medium. A trusted actor's
    // change is an admin workflow: it does not make the next load a KW-9002 (ARCHITECTURE.md,
    // correlation), so the load is judged on its own.
    assert_eq!(
        got,
        [
            ("KW-4001", "medium"),
            ("KW-4004", "medium"),
            ("KW-3001", "medium")
        ],
        "{alerts:#?}"
    );
    assert!(reasons(&alerts[0]).contains("allowlisted management tool /usr/local/jamf/bin/jamf"));
    // The same two commands from a terminal: high, and the load after them critical.
    let mut c = Capture::new(7);
    zsh_exec(
        &mut c,
        "/usr/bin/csrutil",
        "com.apple.csrutil",
        &["csrutil", "disable"],
    );
    c.after_ms(5_000);
    c.kextload(&cast::kernelmanagerd(), "com.evil.driver");
    let got: Vec<(String, String)> = run(&c.out)
        .iter()
        .map(|a| (rule(a).to_string(), severity(a).to_string()))
        .collect();
    assert_eq!(
        got,
        [
            ("KW-4001".to_string(), "high".to_string()),
            ("KW-9002".to_string(), "critical".to_string())
        ]
    );
}

#[test]
fn restoring_protection_never_arms_the_weakening_correlation() {
    for restore in [
        &["csrutil", "enable"][..],
        &["csrutil", "authenticated-root", "enable"][..],
    ] {
        let mut c = Capture::new(7);
        zsh_exec(&mut c, "/usr/bin/csrutil", "com.apple.csrutil", restore);
        c.after_ms(5_000);
        sudo_exec(
            &mut c,
            "/usr/bin/kmutil",
            "com.apple.kmutil",
            &["kmutil", "load", "-p", SOFTRAID],
        );
        let alerts = run_min(&c.out, "info");
        assert!(
            alerts.iter().all(|a| rule(a) != "KW-9002"),
            "{restore:?}: {alerts:#?}"
        );
        assert_eq!(rule(alerts.last().unwrap()), "KW-1001", "{restore:?}");
    }
    // spctl kext-consent enable likewise.
    let mut c = Capture::new(7);
    zsh_exec(
        &mut c,
        "/usr/sbin/spctl",
        "com.apple.spctl",
        &["spctl", "kext-consent", "enable"],
    );
    c.kextload(&cast::kernelmanagerd(), "com.evil.driver");
    assert!(run_min(&c.out, "info").iter().all(|a| rule(a) != "KW-9002"));
}

/// An `AUTH_KEXTLOAD` answer as the ES source reports it: a kext load event with the decision.
fn decision(allowed: bool, reason: &str) -> kextwatch::event::Event {
    let mut c = Capture::new(7);
    c.kextload(&cast::kernelmanagerd(), "com.evil.driver");
    let mut ev = support::event(&c.out);
    ev.kind = kextwatch::event::EventKind::KextLoadDecision {
        identifier: "com.evil.driver".into(),
        allowed,
        reason: reason.into(),
    };
    ev
}

#[test]
fn enforcement_answers_are_reported_by_how_much_they_matter() {
    use kextwatch::detect::enforce::EnforcementPolicy;
    use kextwatch::kextpolicy::KnownTeam;
    let mut policy = EnforcementPolicy::default();
    policy.teams.insert(
        "com.evil.driver".into(),
        KnownTeam::Team("ZZZZZ99999".into()),
    );
    let denied = policy.decide("com.evil.driver");
    let unknown = policy.decide("com.never.seen");
    policy.allowlist.team_ids.insert("ZZZZZ99999".into());
    let allowed = policy.decide("com.evil.driver");
    assert!(!denied.allow && unknown.allow && allowed.allow);

    let alert_for = |d: &kextwatch::event::Answer| {
        let mut engine =
            kextwatch::detect::Engine::new(kextwatch::config::Config::default_config());
        let mut out = Vec::new();
        engine.process(&decision(d.allow, &d.reason), &mut out);
        engine.finish(&mut out);
        out
    };
    // A denial is high, with the reason; an unknown kext let through (fail open) is medium; an
    // allowlisted team's load is informational (below the default minimum).
    let a = alert_for(&denied);
    assert_eq!((a[0].rule.id, a[0].severity.as_str()), ("KW-3003", "high"));
    assert!(a[0].reasons[0]
        .contains("load denied by kextwatch: com.evil.driver: team ZZZZZ99999 is not allowlisted"));
    let a = alert_for(&unknown);
    assert_eq!(
        (a[0].rule.id, a[0].severity.as_str()),
        ("KW-3003", "medium")
    );
    assert!(alert_for(&allowed).is_empty());
}

#[test]
fn a_weakened_sip_configuration_is_reported_and_arms_correlation() {
    use kextwatch::detect::Engine;
    let mut c = Capture::new(7);
    c.kextload(&cast::kernelmanagerd(), "com.evil.driver");
    let load = support::event(&c.out);
    let t = load.time_ns;

    let mut engine = Engine::new(kextwatch::config::Config::default_config());
    let mut out = Vec::new();
    // Fully enabled: nothing at the default minimum severity.
    engine.process_sip(0, t - 60_000_000_000, &mut out);
    assert!(out.is_empty());
    // Unrestricted filesystem only: high. Untrusted kexts allowed: critical, and it says why.
    engine.process_sip(0x2, t - 50_000_000_000, &mut out);
    engine.process_sip(0x201, t - 40_000_000_000, &mut out);
    engine.process(&load, &mut out);
    let got: Vec<(&str, &str)> = out
        .iter()
        .map(|a| (a.rule.id, a.severity.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("KW-4007", "high"),
            ("KW-4007", "critical"),
            ("KW-9002", "critical")
        ]
    );
    // Without a kext flag, no word about kexts.
    assert_eq!(
        out[0].reasons,
        ["System Integrity Protection is weakened (csr-active-config 0x2): ALLOW_UNRESTRICTED_FS"]
    );
    assert_eq!(
        out[1].reasons,
        [
            "System Integrity Protection is weakened (csr-active-config 0x201): ALLOW_UNTRUSTED_KEXTS, ALLOW_UNAPPROVED_KEXTS",
            "kexts can load without Apple's signing and approval checks"
        ]
    );
    assert!(out[2]
        .reasons
        .iter()
        .any(|r| r.starts_with("follows `SIP configuration 0x201`")));
}

#[test]
fn the_correlation_window_is_exact_at_its_edges() {
    let load = |c: &mut Capture| {
        sudo_exec(
            c,
            "/usr/bin/kmutil",
            "com.apple.kmutil",
            &["kmutil", "load", "-p", "/Library/Extensions/Evil.kext"],
        );
    };
    // The window's own correlation says how many seconds earlier; the durable memory (which
    // catches what the window misses) says it was beyond the window.
    let load_rule = |c: &Capture| {
        let (alerts, _) = run_engine(&c.out);
        let a = alerts.iter().find(|a| a.event.action == "exec").unwrap();
        if a.reasons
            .iter()
            .any(|r| r.contains("beyond the correlation window"))
        {
            "memory"
        } else {
            a.rule.id
        }
    };
    let cp = terminal_cp();

    // Exactly 120 s (the window) after the staging: still inside it.
    let mut c = Capture::new(7);
    c.create(&cp, "/Library/Extensions", "Evil.kext");
    c.now_ns += 120_000_000_000;
    load(&mut c);
    assert_eq!(load_rule(&c), "KW-9001");

    // 120.2 s after it, with the last sweep of old state at 119.5 s: the staging is still held but
    // too old, and must not explain the load.
    let mut c = Capture::new(7);
    c.create(&cp, "/Library/Extensions", "Evil.kext");
    c.now_ns += 119_500_000_000;
    c.in_terminal("/bin/ls", "com.apple.ls", &["ls"], "/tmp");
    c.now_ns += 700_000_000;
    load(&mut c);
    assert_eq!(load_rule(&c), "memory");

    // A load stamped 3 s before the staging (events can arrive out of order): what happened later
    // cannot explain it.
    let mut c = Capture::new(7);
    c.now_ns += 10_000_000_000;
    c.create(&cp, "/Library/Extensions", "Evil.kext");
    c.now_ns -= 3_000_000_000;
    load(&mut c);
    assert_eq!(load_rule(&c), "KW-1001");
}

#[test]
fn only_a_real_login_session_is_called_the_same_session() {
    // A kext staged, then loaded 2 s later by another process of the same audit session `asid`.
    let staged_then_loaded = |asid: i32| {
        let tool = |pid| Proc {
            asid,
            ..Proc::developer(
                pid,
                1,
                "/usr/local/bin/tool",
                "com.example.tool",
                "ZZZZZ99999",
            )
        };
        let mut c = Capture::new(7);
        c.create(&tool(700), "/Library/Extensions", "Evil.kext");
        c.after_ms(2_000);
        let loader = tool(701);
        c.exec(
            &loader,
            &loader.exec_into("/usr/bin/kmutil", "com.apple.kmutil"),
            &["kmutil", "load", "-p", "/Library/Extensions/Evil.kext"],
            "/",
        );
        let alerts = run(&c.out);
        reasons(alerts.iter().find(|a| rule(a) == "KW-9001").unwrap())
    };
    // Session 0 (none recorded) is no login session to share.
    let r = staged_then_loaded(0);
    assert!(r.contains("2 s earlier, by another session"), "{r}");
    let r = staged_then_loaded(100_017);
    assert!(r.contains("2 s earlier, in the same login session"), "{r}");
}

#[test]
fn a_kextload_and_the_kmutil_it_runs_are_one_alert() {
    for (tool, sid, args, kmutil_args) in [
        (
            "/sbin/kextload",
            "com.apple.kextload",
            vec!["kextload", SOFTRAID],
            vec!["kmutil", "load", "-p", SOFTRAID],
        ),
        (
            "/usr/bin/kextutil",
            "com.apple.kextutil",
            vec!["kextutil", SOFTRAID],
            vec!["kmutil", "load", "-p", SOFTRAID],
        ),
        (
            "/sbin/kextunload",
            "com.apple.kextunload",
            vec!["kextunload", SOFTRAID],
            vec!["kmutil", "unload", "-p", SOFTRAID],
        ),
    ] {
        let mut c = Capture::new(8);
        let sudo = cast::sudo();
        let shim = sudo.exec_into(tool, sid);
        c.exec(&sudo, &shim, &args, "/Users/alice");
        c.after_ms(3);
        c.shim_runs_kmutil(&shim, 4130, &kmutil_args);
        let alerts = run(&c.out);
        assert_eq!(alerts.len(), 1, "{tool}: {alerts:#?}");
        assert_eq!(alerts[0]["process"]["executable"], tool);
    }

    // kmutil run by a copy of kextload that is not Apple's is its own alert.
    let mut c = Capture::new(8);
    let fake = Proc::adhoc(5000, 4100, "/tmp/kextload");
    c.shim_runs_kmutil(&fake, 5001, &["kmutil", "load", "-p", SOFTRAID]);
    let alerts = run(&c.out);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["process"]["executable"], "/usr/bin/kmutil");
    assert!(reasons(&alerts[0]).contains("initiator /tmp/kextload"));
}

#[test]
fn an_api_load_right_after_unsigned_code_ran_as_root_is_tied_to_it() {
    // sudo ./loader (ad hoc), which calls the IOKit API: no kext tool runs, kernelmanagerd loads.
    let mut c = Capture::new(8);
    let sudo = cast::sudo();
    let loader = Proc {
        exe: "/Users/alice/Downloads/loader".into(),
        ..Proc::adhoc(4120, 4100, "/Users/alice/Downloads/loader")
    }
    .in_terminal(501, 0, "/dev/ttys003", 100_017);
    let loader = Proc {
        pidversion: sudo.pidversion + 1,
        ppidversion: sudo.ppidversion,
        ..loader
    };
    c.exec(&sudo, &loader, &["./loader"], "/Users/alice/Downloads");
    c.after_ms(2_000);
    c.kextload(&cast::kernelmanagerd(), "com.evil.rootkit");
    let alerts = run(&c.out);
    let load = alerts.last().unwrap();
    assert_eq!(
        (rule(load), severity(load)),
        ("KW-9004", "high"),
        "{alerts:#?}"
    );
    let why = reasons(load);
    assert!(
        why.contains(
            "unsigned or ad-hoc code /Users/alice/Downloads/loader ran as root 2 s earlier"
        ),
        "{why}"
    );
    assert_eq!(
        load["kextwatch"]["evidence"][0]["executable"],
        "/Users/alice/Downloads/loader"
    );
    assert_eq!(
        load["kextwatch"]["evidence"][0]["args"],
        serde_json::json!(["./loader"])
    );

    // Outside the window, or for a kext the allowlist trusts, nothing is tied.
    let mut far = Capture::new(8);
    far.exec(&sudo, &loader, &["./loader"], "/Users/alice/Downloads");
    far.after_ms(121_000);
    far.kextload(&cast::kernelmanagerd(), "com.evil.rootkit");
    assert_eq!(rule(run(&far.out).last().unwrap()), "KW-3001");
    // The same program run by the user (not root) is not a loader.
    let mut user = Capture::new(8);
    let as_user = Proc {
        euid: 501,
        ..loader.clone()
    };
    user.exec(&sudo, &as_user, &["./loader"], "/Users/alice/Downloads");
    user.after_ms(2_000);
    user.kextload(&cast::kernelmanagerd(), "com.evil.rootkit");
    assert_eq!(rule(run(&user.out).last().unwrap()), "KW-3001");
}

#[test]
fn metadata_changes_to_a_bundle_stage_it_and_are_named() {
    let zsh = cast::terminal_zsh();
    let b = "/Library/Extensions/Evil.kext";
    type Act<'a> = Box<dyn Fn(&mut Capture) + 'a>;
    let cases: Vec<(&str, Act)> = vec![
        (
            "quarantine removed",
            Box::new(|c: &mut Capture| {
                let xattr = zsh.exec_into("/usr/bin/xattr", "com.apple.xattr");
                c.deleteextattr(&xattr, b, "com.apple.quarantine");
            }),
        ),
        (
            "extended attribute removed",
            Box::new(|c: &mut Capture| {
                let xattr = zsh.exec_into("/usr/bin/xattr", "com.apple.xattr");
                c.deleteextattr(&xattr, b, "com.apple.FinderInfo");
            }),
        ),
        (
            "file flags changed",
            Box::new(|c: &mut Capture| {
                let chflags = zsh.exec_into("/usr/bin/chflags", "com.apple.chflags");
                c.setflags(&chflags, b, 0x8000);
            }),
        ),
        (
            "access control list changed",
            Box::new(|c: &mut Capture| {
                let chmod = zsh.exec_into("/bin/chmod", "com.apple.chmod");
                c.setacl(&chmod, b);
            }),
        ),
        (
            "timestamps set",
            Box::new(|c: &mut Capture| {
                let touch = zsh.exec_into("/usr/bin/touch", "com.apple.touch");
                c.utimes(&touch, &format!("{b}/Contents/MacOS/Evil"));
            }),
        ),
        (
            "truncated",
            Box::new(|c: &mut Capture| {
                let sh = zsh.exec_into("/bin/sh", "com.apple.sh");
                c.truncate(&sh, &format!("{b}/Contents/Info.plist"));
            }),
        ),
        (
            "hard-linked in",
            Box::new(|c: &mut Capture| {
                let ln = zsh.exec_into("/bin/ln", "com.apple.ln");
                c.link(
                    &ln,
                    "/private/tmp/Evil",
                    &format!("{b}/Contents/MacOS"),
                    "Evil",
                );
            }),
        ),
        (
            "cloned in",
            Box::new(|c: &mut Capture| {
                let cp = zsh.exec_into("/bin/cp", "com.apple.cp");
                c.clone_file(
                    &cp,
                    "/private/tmp/Evil.kext",
                    "/Library/Extensions",
                    "Evil.kext",
                );
            }),
        ),
    ];
    for (verb, act) in cases {
        let mut c = Capture::new(8);
        act(&mut c);
        // Each prepares the bundle: a load within the window is the staged-then-loaded story.
        c.after_ms(5_000);
        c.kextload(&cast::kernelmanagerd(), "com.evil.rootkit");
        let alerts = run(&c.out);
        assert_eq!(rule(&alerts[0]), "KW-2001", "{verb}: {alerts:#?}");
        let why = reasons(&alerts[0]);
        assert!(why.contains(verb), "{verb}: {why}");
        // Quarantine removal is named as such; another attribute is not called quarantine.
        assert_eq!(
            why.contains("quarantine removed"),
            verb == "quarantine removed",
            "{why}"
        );
        assert_eq!(rule(alerts.last().unwrap()), "KW-9001", "{verb}");
    }
}

#[test]
fn writes_to_kext_approvals_or_collections_outside_apples_daemons() {
    let zsh = cast::terminal_zsh();
    // sqlite3 run as root editing KextPolicy: approving a kext behind the user's back.
    let sqlite = zsh.exec_into("/usr/bin/sqlite3", "com.apple.sqlite3");
    let mut c = Capture::new(8);
    c.write(
        &sqlite,
        "/private/var/db/SystemPolicyConfiguration/KextPolicy-wal",
    );
    c.write(&sqlite, "/var/db/SystemPolicyConfiguration/KextPolicy");
    // A replaced auxiliary kernel collection, and kernelmanagerd's own state.
    let cp = zsh.exec_into("/bin/cp", "com.apple.cp");
    c.rename(
        &cp,
        "/private/tmp/aux.kc",
        "/Library/KernelCollections",
        "AuxiliaryKernelExtensions.kc",
    );
    c.write(
        &cp,
        "/private/var/db/KernelExtensionManagement/AuxKC/CurrentAuxKC/x",
    );
    // Apple's daemons writing the same places: their job.
    c.write(
        &Proc::apple(210, 1, "/usr/libexec/syspolicyd", "com.apple.syspolicyd"),
        "/private/var/db/SystemPolicyConfiguration/KextPolicy-wal",
    );
    c.write(
        &cast::kernelmanagerd(),
        "/Library/KernelCollections/AuxiliaryKernelExtensions.kc",
    );
    // Reading is not writing.
    c.open(
        &sqlite,
        "/private/var/db/SystemPolicyConfiguration/KextPolicy",
    );
    let alerts = run_min(&c.out, "info");
    let got: Vec<(&str, &str, &str)> = alerts
        .iter()
        .map(|a| (rule(a), severity(a), a["file"]["path"].as_str().unwrap()))
        .collect();
    // The second KextPolicy write (through the /var symlink) is the same store: folded into the
    // first, reported with its count when the input ends.
    let want = [
        (
            "critical",
            "/private/var/db/SystemPolicyConfiguration/KextPolicy-wal",
        ),
        (
            "high",
            "/Library/KernelCollections/AuxiliaryKernelExtensions.kc",
        ),
        (
            "high",
            "/private/var/db/KernelExtensionManagement/AuxKC/CurrentAuxKC/x",
        ),
        ("critical", "/var/db/SystemPolicyConfiguration/KextPolicy"),
    ];
    let want: Vec<(&str, &str, &str)> = want.iter().map(|(s, p)| ("KW-2002", *s, *p)).collect();
    assert_eq!(got, want, "{alerts:#?}");
    assert_eq!(alerts[3]["kextwatch"]["folded"]["count"], 2);
    assert!(reasons(&alerts[0]).contains("only syspolicyd write it"));
}

#[test]
fn sqlite3_naming_the_kextpolicy_database_is_high_and_other_uses_are_nothing() {
    let mut c = Capture::new(8);
    sudo_exec(
        &mut c,
        "/usr/bin/sqlite3",
        "com.apple.sqlite3",
        &[
            "sqlite3",
            "/var/db/SystemPolicyConfiguration/KextPolicy",
            "INSERT INTO kext_policy VALUES ('ABCDE12345','com.evil.rootkit',1,'Evil',1)",
        ],
    );
    sudo_exec(
        &mut c,
        "/usr/bin/sqlite3",
        "com.apple.sqlite3",
        &[
            "sqlite3",
            "/Users/alice/Library/Messages/chat.db",
            ".tables",
        ],
    );
    let alerts = run_min(&c.out, "info");
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(
        (rule(&alerts[0]), severity(&alerts[0])),
        ("KW-4004", "high")
    );
    assert!(reasons(&alerts[0])
        .contains("opens the KextPolicy database, which only syspolicyd maintains"));
}

#[test]
fn alerts_describe_the_code_signature_of_the_actor() {
    let mut c = Capture::new(8);
    let dropper = Proc::adhoc(6100, 1, "/private/tmp/.x/updater");
    c.rename(
        &dropper,
        "/private/tmp/.x/E.kext",
        "/Library/Extensions",
        "E.kext",
    );
    let cp = cast::terminal_zsh().exec_into("/bin/cp", "com.apple.cp");
    c.create(&cp, "/Library/Extensions", "F.kext");
    let unsigned = Proc {
        flags: 0,
        signing_id: None,
        ..Proc::adhoc(6200, 1, "/private/tmp/.y/dropper")
    };
    c.create(&unsigned, "/Library/Extensions", "G.kext");
    let alerts = run(&c.out);
    // ECS's code-signature fields, and what ECS has no field for under kextwatch.
    let sig = |a: &serde_json::Value| a["process"]["code_signature"].clone();
    let apple = |a: &serde_json::Value| a["kextwatch"]["process"]["code_signature"].clone();
    assert_eq!(sig(&alerts[2])["valid"], false);
    assert_eq!(sig(&alerts[2])["exists"], false);
    assert_eq!(apple(&alerts[2])["adhoc"], false);
    assert_eq!(apple(&alerts[0])["adhoc"], true);
    assert_eq!(sig(&alerts[0])["valid"], true);
    assert_eq!(sig(&alerts[0])["exists"], true);
    assert_eq!(apple(&alerts[0])["platform_binary"], false);
    assert_eq!(apple(&alerts[1])["adhoc"], false);
    assert_eq!(sig(&alerts[1])["valid"], true);
    assert_eq!(apple(&alerts[1])["platform_binary"], true);
    assert_eq!(sig(&alerts[1])["signing_id"], "com.apple.cp");
    assert!(sig(&alerts[1]).get("adhoc").is_none());
}

#[test]
fn an_unload_from_a_terminal_is_raised_only_for_kexts_the_allowlist_does_not_name() {
    let unload = |id: &str| {
        let mut c = Capture::new(8);
        sudo_exec(
            &mut c,
            "/sbin/kextunload",
            "com.apple.kextunload",
            &["kextunload", "-b", id],
        );
        let alerts = run_min(&c.out, "info");
        (severity(&alerts[0]).to_string(), reasons(&alerts[0]))
    };
    // Untrusted initiator and terminal: medium; a kext nobody allowlisted: one step more.
    let (sev, why) = unload("com.unknown.driver");
    assert_eq!(sev, "high", "{why}");
    assert!(
        why.contains("kext com.unknown.driver is not in the allowlist"),
        "{why}"
    );
    for listed in ["org.virtualbox.kext.VBoxDrv", "com.apple.driver.AppleHV"] {
        let (sev, why) = unload(listed);
        assert_eq!(sev, "medium", "{listed}: {why}");
        assert!(!why.contains("is not in the allowlist"), "{why}");
    }
    // The allowlisted manager unloading an unknown kext is not raised for it either.
    let mut c = Capture::new(8);
    let jamf = cast::jamf();
    c.exec(
        &jamf,
        &jamf.exec_into("/sbin/kextunload", "com.apple.kextunload"),
        &["kextunload", "-b", "com.unknown.driver"],
        "/",
    );
    let alerts = run_min(&c.out, "info");
    assert_eq!(severity(&alerts[0]), "info", "{}", reasons(&alerts[0]));
}

#[test]
fn the_allowlisted_manager_lowers_each_policy_change_exactly_one_step() {
    let severity_of = |by_jamf: bool, exe: &str, sid: &str, args: &[&str]| {
        let mut c = Capture::new(8);
        if by_jamf {
            let jamf = cast::jamf();
            c.exec(&jamf, &jamf.exec_into(exe, sid), args, "/");
        } else {
            sudo_exec(&mut c, exe, sid, args);
        }
        let alerts = run_min(&c.out, "info");
        severity(&alerts[0]).to_string()
    };
    for (exe, sid, args, from_terminal, from_jamf) in [
        // Consent for a team nobody allowlisted.
        (
            "/usr/sbin/spctl",
            "com.apple.spctl",
            &["spctl", "kext-consent", "add", "ABCDE12345"][..],
            "high",
            "medium",
        ),
        // A partial weakening.
        (
            "/usr/bin/csrutil",
            "com.apple.csrutil",
            &["csrutil", "clear"][..],
            "medium",
            "low",
        ),
        // Restoring: info either way, never lowered below what it is.
        (
            "/usr/sbin/nvram",
            "com.apple.nvram",
            &["nvram", "-d", "boot-args"][..],
            "info",
            "info",
        ),
    ] {
        assert_eq!(
            severity_of(false, exe, sid, args),
            from_terminal,
            "{args:?}"
        );
        assert_eq!(severity_of(true, exe, sid, args), from_jamf, "{args:?}");
    }
}
