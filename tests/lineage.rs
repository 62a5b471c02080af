//! Detection that follows the actor: fork/exec chains as macOS emits them (a fork makes an image of
//! the parent with a new pid; an exec keeps the pid, bumps the pidversion, and its event's
//! `process` is the image before it), so the program behind a shell is the one judged.

use kextwatch_testkit as support;

use support::eslogger::{cast, Capture, Proc};
use support::{reasons, rule, run, run_min, severity};

const KEXT: &str = "/Library/Extensions/Vendor.kext";

/// Jamf runs a policy script: jamf → sh -c script → kmutil load, and cp into /Library/Extensions.
fn jamf_policy(c: &mut Capture, jamf: &Proc) {
    let sh = c.spawn(
        jamf,
        5100,
        "/bin/sh",
        "com.apple.sh",
        &[
            "sh",
            "-c",
            "/Library/Application Support/JAMF/tmp/install-vendor.sh",
        ],
    );
    let cp = c.spawn(
        &sh,
        5101,
        "/bin/cp",
        "com.apple.cp",
        &[
            "cp",
            "-R",
            "/private/tmp/Vendor.kext",
            "/Library/Extensions/",
        ],
    );
    c.create(&cp, "/Library/Extensions", "Vendor.kext");
    c.exit(&cp);
    c.spawn(
        &sh,
        5102,
        "/usr/bin/kmutil",
        "com.apple.kmutil",
        &["kmutil", "load", "-p", KEXT],
    );
}

#[test]
fn an_allowlisted_manager_vouches_for_the_shell_and_tools_it_runs() {
    let mut c = Capture::new(8);
    let launchd = cast::launchd();
    let jamf = cast::jamf();
    c.exec(&launchd.forked(2210), &jamf, &["jamf", "policy"], "/");
    jamf_policy(&mut c, &jamf);
    let alerts = run_min(&c.out, "info");
    let got: Vec<(&str, &str)> = alerts.iter().map(|a| (rule(a), severity(a))).collect();
    assert_eq!(
        got,
        [("KW-2001", "info"), ("KW-1001", "info")],
        "{alerts:#?}"
    );
    let why = reasons(&alerts[1]);
    assert!(
        why.contains("initiated by allowlisted management tool /usr/local/jamf/bin/jamf (com.jamfsoftware.jamf, team 483DWKW443) through sh ← sh ← jamf"),
        "{why}"
    );
    // The alert carries the chain, acting process first, up to the initiator.
    let lineage: Vec<&str> = alerts[1]["kextwatch"]["lineage"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["executable"].as_str().unwrap())
        .collect();
    assert_eq!(lineage, ["/bin/sh", "/bin/sh", "/usr/local/jamf/bin/jamf"]);
    assert_eq!(
        alerts[1]["kextwatch"]["lineage"][2]["team_id"],
        "483DWKW443"
    );
}

#[test]
fn the_same_script_run_by_an_unlisted_program_is_judged_by_that_program() {
    let mut c = Capture::new(8);
    let other = Proc::developer(
        2300,
        1,
        "/Applications/Tool.app/Contents/MacOS/Tool",
        "com.example.tool",
        "EXAMPLE123",
    );
    jamf_policy(&mut c, &other);
    let alerts = run(&c.out);
    // The load follows the staging: one correlated alert.
    let load = alerts.last().unwrap();
    assert_eq!(rule(load), "KW-9001");
    let why = reasons(load);
    assert!(
        why.contains("initiator /Applications/Tool.app/Contents/MacOS/Tool (com.example.tool, team EXAMPLE123) is not an allowlisted management tool"),
        "{why}"
    );
    assert_ne!(severity(load), "info");
}

#[test]
fn unsigned_code_behind_a_shell_makes_the_load_high() {
    let mut c = Capture::new(8);
    let dropper = Proc::adhoc(6100, 1, "/private/tmp/.x/updater");
    let sh = c.spawn(
        &dropper,
        6101,
        "/bin/sh",
        "com.apple.sh",
        &["sh", "-c", "kmutil load -p /Library/Extensions/Vendor.kext"],
    );
    c.spawn(
        &sh,
        6102,
        "/usr/bin/kmutil",
        "com.apple.kmutil",
        &["kmutil", "load", "-p", KEXT],
    );
    let alerts = run(&c.out);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(
        (rule(&alerts[0]), severity(&alerts[0])),
        ("KW-1001", "high")
    );
    let why = reasons(&alerts[0]);
    assert!(
        why.contains(
            "started by unsigned or ad-hoc code /private/tmp/.x/updater (sh ← sh ← updater)"
        ),
        "{why}"
    );
}

#[test]
fn apples_installer_runs_package_scripts_quietly() {
    // system_installd → package_script_service → bash postinstall → kmutil load.
    let mut c = Capture::new(9);
    let installd = Proc::apple(640, 1, "/System/Library/PrivateFrameworks/PackageKit.framework/Versions/A/Resources/system_installd", "com.apple.system_installd");
    let pss = c.spawn(&installd, 7100, "/System/Library/PrivateFrameworks/PackageKit.framework/Versions/A/Resources/package_script_service", "com.apple.package_script_service", &["package_script_service"]);
    let bash = c.spawn(
        &pss,
        7101,
        "/bin/bash",
        "com.apple.bash",
        &[
            "/bin/bash",
            "/private/tmp/PKInstallSandbox.abc/Scripts/com.vendor.pkg.xyz/postinstall",
            "/",
            "/",
        ],
    );
    c.spawn(
        &bash,
        7102,
        "/usr/bin/kmutil",
        "com.apple.kmutil",
        &["kmutil", "load", "-p", KEXT],
    );
    let alerts = run_min(&c.out, "info");
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(severity(&alerts[0]), "info");
    assert!(reasons(&alerts[0]).contains("run on behalf of Apple's /System/Library/PrivateFrameworks/PackageKit.framework/Versions/A/Resources/system_installd"));
}

#[test]
fn a_capture_started_mid_way_judges_what_it_can_see() {
    // Only the last exec is in the capture: nothing is known above the shell.
    let mut full = Capture::new(8);
    let jamf = cast::jamf();
    jamf_policy(&mut full, &jamf);
    let last = full.out.lines().last().unwrap().to_string();
    let alerts = run(&(last + "\n"));
    assert_eq!(alerts.len(), 1);
    let why = reasons(&alerts[0]);
    assert!(
        why.contains(
            "initiator /bin/sh (com.apple.sh, Apple) is not an allowlisted management tool"
        ),
        "{why}"
    );
    assert!(alerts[0]["kextwatch"].get("lineage").is_none());
}
