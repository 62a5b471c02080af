//! Tampering with kextwatch: each way an attacker blinds it raises its own alert, kext activity after
//! it is critical (also after a restart), and everyday maintenance (MDM upgrades and uninstalls
//! through the installer, status checks, log rotation, backups, kextwatch's own work) stays quiet.

use kextwatch_testkit as support;

use kextwatch::config::Config;
use kextwatch::detect::Engine;
use support::eslogger::{cast, Capture, Proc};
use support::{alert_json, reasons, rule, run, run_min, severity};

const KW_DIR: &str = "/Library/Application Support/kextwatch";
const KW_BIN: &str = "/Library/Application Support/kextwatch/kextwatch";
const PLIST: &str = "/Library/LaunchDaemons/com.kextwatch.daemon.plist";

/// A root shell in the attacker's terminal: sudo → bash.
fn root_shell(c: &mut Capture) -> Proc {
    let sudo = cast::sudo();
    c.spawn(&sudo, 4130, "/bin/bash", "com.apple.bash", &["bash"])
}

fn rules_and_severities(alerts: &[serde_json::Value]) -> Vec<(String, String)> {
    alerts
        .iter()
        .map(|a| (rule(a).to_string(), severity(a).to_string()))
        .collect()
}

/// Stage and load an unsigned kext after the tampering: the attacker's real goal.
fn then_load_a_kext(c: &mut Capture, shell: &Proc) {
    c.after_ms(30_000);
    let cp = c.spawn(
        shell,
        4140,
        "/bin/cp",
        "com.apple.cp",
        &["cp", "-R", "/tmp/x/Evil.kext", "/Library/Extensions/"],
    );
    c.copy_bundle(&cp, "/Library/Extensions", "Evil");
    c.after_ms(200_000); // beyond the 120 s correlation window of the staging
    c.spawn(
        shell,
        4141,
        "/usr/bin/kmutil",
        "com.apple.kmutil",
        &["kmutil", "load", "-p", "/Library/Extensions/Evil.kext"],
    );
}

#[test]
fn stopping_the_service_is_high_and_the_kext_load_after_it_critical() {
    let mut c = Capture::new(8);
    let shell = root_shell(&mut c);
    c.spawn(
        &shell,
        4131,
        "/bin/launchctl",
        "com.apple.xpc.launchctl",
        &["launchctl", "bootout", "system/com.kextwatch.daemon"],
    );
    then_load_a_kext(&mut c, &shell);
    let alerts = run(&c.out);
    let first = &alerts[0];
    assert_eq!(
        (rule(first), severity(first)),
        ("KW-6001", "high"),
        "{first:#}"
    );
    assert!(
        reasons(first).contains("launchctl bootout system/com.kextwatch.daemon by /bin/bash"),
        "{}",
        reasons(first)
    );
    assert_eq!(first["event"]["action"], "exec");
    let load = alerts.last().unwrap();
    assert_eq!(
        (rule(load), severity(load)),
        ("KW-9005", "critical"),
        "{load:#}"
    );
    assert!(reasons(load).contains("follows tampering with kextwatch: `launchctl bootout system/com.kextwatch.daemon` by /bin/launchctl"), "{}", reasons(load));
    // The tampering is the first evidence.
    assert_eq!(
        load["kextwatch"]["evidence"][0]["executable"],
        "/bin/launchctl"
    );
    // Every kext event between is critical too: the staging.
    assert!(
        alerts.iter().filter(|a| rule(a) == "KW-9005").count() >= 2,
        "{:?}",
        rules_and_severities(&alerts)
    );
}

#[test]
fn each_way_of_blinding_kextwatch_raises_its_own_alert() {
    let kw = cast::kextwatch();
    let eslogger = cast::kextwatch_eslogger();
    type Act = Box<dyn Fn(&mut Capture, &Proc)>;
    let cases: Vec<(&str, &str, Act)> = vec![
        (
            "SIGKILL to the daemon",
            "KW-6002",
            Box::new(move |c, sh| {
                let kill = c.spawn(
                    sh,
                    4150,
                    "/bin/kill",
                    "com.apple.kill",
                    &["kill", "-9", "300"],
                );
                c.signal(&kill, &kw, 9);
            }),
        ),
        (
            "its eslogger killed in a loop",
            "KW-6002",
            Box::new(move |c, sh| {
                for i in 0..3 {
                    let e = Proc {
                        pid: 301 + i,
                        ..eslogger.clone()
                    };
                    c.signal(sh, &e, 9);
                    c.after_ms(2000);
                }
            }),
        ),
        (
            "killall by name",
            "KW-6002",
            Box::new(|c, sh| {
                c.spawn(
                    sh,
                    4151,
                    "/usr/bin/killall",
                    "com.apple.killall",
                    &["killall", "-9", "kextwatch"],
                );
            }),
        ),
        (
            "config rewritten",
            "KW-6003",
            Box::new(|c, sh| {
                let vim = c.spawn(
                    sh,
                    4152,
                    "/usr/bin/vim",
                    "com.apple.vim",
                    &["vim", "kextwatch.toml"],
                );
                c.write(&vim, &format!("{KW_DIR}/kextwatch.toml"));
            }),
        ),
        (
            "LaunchDaemon plist rewritten",
            "KW-6003",
            Box::new(|c, sh| {
                let plutil = c.spawn(
                    sh,
                    4153,
                    "/usr/bin/plutil",
                    "com.apple.plutil",
                    &["plutil", "-replace", "Disabled", "-bool", "true", PLIST],
                );
                c.rename(
                    &plutil,
                    "/Library/LaunchDaemons/.com.kextwatch.daemon.plist.tmp",
                    "/Library/LaunchDaemons",
                    "com.kextwatch.daemon.plist",
                );
            }),
        ),
        (
            "binary swapped",
            "KW-6003",
            Box::new(|c, sh| {
                let mv = c.spawn(
                    sh,
                    4154,
                    "/bin/mv",
                    "com.apple.mv",
                    &["mv", "/tmp/kw", KW_BIN],
                );
                c.rename(&mv, "/private/tmp/kw", KW_DIR, "kextwatch");
            }),
        ),
        (
            "state and spool wiped",
            "KW-6003",
            Box::new(|c, sh| {
                let rm = c.spawn(
                    sh,
                    4155,
                    "/bin/rm",
                    "com.apple.rm",
                    &["rm", "-rf", "/var/db/kextwatch"],
                );
                c.unlink(&rm, "/var/db/kextwatch/spool.sqlite", "/var/db/kextwatch");
                c.unlink(
                    &rm,
                    "/var/db/kextwatch/kextpolicy-state.sqlite",
                    "/var/db/kextwatch",
                );
            }),
        ),
        (
            "profile removed",
            "KW-6004",
            Box::new(|c, sh| {
                c.spawn(
                    sh,
                    4156,
                    "/usr/bin/profiles",
                    "com.apple.profiles",
                    &[
                        "profiles",
                        "remove",
                        "-identifier",
                        "com.kextwatch.profile.KXWATCH123",
                    ],
                );
            }),
        ),
        (
            "Full Disk Access reset",
            "KW-6004",
            Box::new(|c, sh| {
                c.spawn(
                    sh,
                    4157,
                    "/usr/bin/tccutil",
                    "com.apple.tccutil",
                    &["tccutil", "reset", "SystemPolicyAllFiles"],
                );
            }),
        ),
        (
            "TCC database edited",
            "KW-6004",
            Box::new(|c, sh| {
                let sqlite = c.spawn(
                    sh,
                    4158,
                    "/usr/bin/sqlite3",
                    "com.apple.sqlite3",
                    &[
                        "sqlite3",
                        "/Library/Application Support/com.apple.TCC/TCC.db",
                        "DELETE FROM access",
                    ],
                );
                c.write(&sqlite, "/Library/Application Support/com.apple.TCC/TCC.db");
            }),
        ),
        (
            "clock set back with date",
            "KW-6005",
            Box::new(|c, sh| {
                let date = c.spawn(
                    sh,
                    4159,
                    "/bin/date",
                    "com.apple.date",
                    &["date", "010112002020"],
                );
                c.settime(&date);
            }),
        ),
        (
            "clock set by a dropped tool",
            "KW-6005",
            Box::new(|c, _| {
                c.settime(&Proc::adhoc(4160, 4130, "/private/tmp/.t/settime"));
            }),
        ),
        (
            "system extension uninstalled",
            "KW-6001",
            Box::new(|c, sh| {
                c.spawn(
                    sh,
                    4161,
                    "/usr/bin/systemextensionsctl",
                    "com.apple.systemextensionsctl",
                    &[
                        "systemextensionsctl",
                        "uninstall",
                        "KXWATCH123",
                        "com.kextwatch.app.agent",
                    ],
                );
            }),
        ),
    ];
    for (what, expected, act) in &cases {
        let mut c = Capture::new(9);
        let shell = root_shell(&mut c);
        act(&mut c, &shell);
        let alerts = run(&c.out);
        let got = rules_and_severities(&alerts);
        assert!(!alerts.is_empty(), "{what}: no alert");
        assert!(
            alerts.iter().all(|a| rule(a) == *expected),
            "{what}: {got:?}"
        );
        let want = if *expected == "KW-6005" {
            "medium"
        } else {
            "high"
        };
        assert!(
            alerts
                .iter()
                .all(|a| severity(a) == want || severity(a) == "high"),
            "{what}: {got:?}"
        );
        // The kext load that follows is critical, with the tampering as its first evidence.
        then_load_a_kext(&mut c, &shell);
        let all = run(&c.out);
        let last = all.last().unwrap();
        assert_eq!(
            (rule(last), severity(last)),
            ("KW-9005", "critical"),
            "{what}"
        );
    }
}

#[test]
fn maintenance_stays_quiet() {
    let mut c = Capture::new(9);
    let kw = cast::kextwatch();
    let eslogger = cast::kextwatch_eslogger();
    // kextwatch's own work: status file, spool, its eslogger restarted on a reload.
    c.write(&kw, "/var/db/kextwatch/status.json.tmp");
    c.rename(
        &kw,
        "/var/db/kextwatch/status.json.tmp",
        "/var/db/kextwatch",
        "status.json",
    );
    c.write(&kw, "/var/db/kextwatch/spool.sqlite");
    c.signal(&kw, &eslogger, 15);
    // A reload asked with SIGHUP by an admin, and status checks.
    let sudo = cast::sudo();
    c.spawn(
        &sudo,
        4200,
        "/bin/launchctl",
        "com.apple.xpc.launchctl",
        &["launchctl", "kill", "HUP", "system/com.kextwatch.daemon"],
    );
    c.spawn(
        &sudo,
        4201,
        "/bin/launchctl",
        "com.apple.xpc.launchctl",
        &["launchctl", "print", "system/com.kextwatch.daemon"],
    );
    c.spawn(&sudo, 4202, KW_BIN, "kextwatch", &["kextwatch", "status"]);
    c.signal(&cast::launchd(), &kw, 1);
    // Log rotation, TCC itself, the time daemon, a backup reading the folders.
    let newsyslog = cast::newsyslog();
    c.rename(
        &newsyslog,
        "/var/log/kextwatch/alerts.jsonl",
        "/var/log/kextwatch",
        "alerts.jsonl.0",
    );
    c.create(&newsyslog, "/var/log/kextwatch", "alerts.jsonl");
    c.write(
        &cast::tccd(),
        "/Library/Application Support/com.apple.TCC/TCC.db",
    );
    c.settime(&cast::timed());
    let backupd = cast::backupd();
    c.open(&backupd, &format!("{KW_DIR}/kextwatch.toml"));
    c.close(&backupd, &format!("{KW_DIR}/kextwatch.toml"), false);
    // An MDM upgrade: Jamf runs installer; Apple's installer writes the payload and its postinstall
    // restarts the service.
    let jamf = cast::jamf();
    c.spawn(
        &jamf,
        5000,
        "/usr/sbin/installer",
        "com.apple.installer",
        &[
            "installer",
            "-pkg",
            "/Library/Application Support/JAMF/Downloads/kextwatch.pkg",
            "-target",
            "/",
        ],
    );
    let installd = cast::system_installd();
    c.fork(&cast::launchd(), &installd);
    c.write(&installd, &format!("{KW_DIR}/.kextwatch.new"));
    c.rename(
        &installd,
        &format!("{KW_DIR}/.kextwatch.new"),
        KW_DIR,
        "kextwatch",
    );
    let script = c.spawn(
        &installd,
        5010,
        "/bin/bash",
        "com.apple.bash",
        &["bash", "/tmp/PKInstallSandbox/Scripts/postinstall"],
    );
    c.spawn(
        &script,
        5011,
        "/bin/launchctl",
        "com.apple.xpc.launchctl",
        &["launchctl", "bootout", "system/com.kextwatch.daemon"],
    );
    c.spawn(
        &script,
        5012,
        "/bin/launchctl",
        "com.apple.xpc.launchctl",
        &["launchctl", "bootstrap", "system", PLIST],
    );
    c.signal(&cast::launchd(), &kw, 15);
    // An MDM uninstall: Jamf runs the uninstall script.
    let sh = c.spawn(
        &jamf,
        5020,
        "/bin/sh",
        "com.apple.sh",
        &[
            "sh",
            "-c",
            "/Library/Application Support/kextwatch/uninstall.sh",
        ],
    );
    c.spawn(
        &sh,
        5021,
        "/bin/launchctl",
        "com.apple.xpc.launchctl",
        &["launchctl", "bootout", "system", PLIST],
    );
    let rm = c.spawn(&sh, 5022, "/bin/rm", "com.apple.rm", &["rm", "-rf", KW_DIR]);
    c.unlink(&rm, KW_BIN, KW_DIR);
    c.unlink(&rm, PLIST, "/Library/LaunchDaemons");

    let alerts = run(&c.out);
    assert!(alerts.is_empty(), "{:#?}", rules_and_severities(&alerts));
    // At info, what was maintenance says so (and nothing is a tampering).
    let info = run_min(&c.out, "info");
    for a in &info {
        assert_eq!(severity(a), "info", "{a:#}");
    }
    assert!(
        info.iter()
            .any(|a| rule(a) == "KW-6001" && reasons(a).contains("maintenance")),
        "{:?}",
        rules_and_severities(&info)
    );
}

#[test]
fn a_kext_loaded_after_a_restart_still_follows_the_tampering_before_it() {
    let mut c = Capture::new(9);
    let shell = root_shell(&mut c);
    c.spawn(
        &shell,
        4131,
        "/bin/launchctl",
        "com.apple.xpc.launchctl",
        &[
            "launchctl",
            "kill",
            "SIGKILL",
            "system/com.kextwatch.daemon",
        ],
    );
    let before = c.out.clone();
    c.out.clear();
    c.after_ms(10 * 60_000);
    c.kextload(&cast::kernelmanagerd(), "com.evil.rootkit");
    let after = c.out.clone();
    c.out.clear();
    c.after_ms(61 * 60_000);
    c.kextload(&cast::kernelmanagerd(), "com.evil.rootkit2");
    let much_later = c.out.clone();

    let config = Config::default_config();
    let feed = |engine: &mut Engine, lines: &str| -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        for l in lines.lines() {
            engine.process(&support::event(l), &mut out);
        }
        out.iter().map(alert_json).collect()
    };
    let mut first_run = Engine::new(config.clone());
    let tamper = feed(&mut first_run, &before);
    assert_eq!(rule(&tamper[0]), "KW-6001");
    // The daemon persists this; the attacker's restart starts a new engine from it.
    let saved = serde_json::to_string(&first_run.durable_memory()).unwrap();
    let mut second_run = Engine::new(config.clone());
    second_run.restore_durable_memory(serde_json::from_str(&saved).unwrap());
    let load = feed(&mut second_run, &after);
    assert_eq!(
        (rule(&load[0]), severity(&load[0])),
        ("KW-9005", "critical"),
        "{:#}",
        load[0]
    );
    assert!(
        reasons(&load[0]).contains("10 min 0 s earlier"),
        "{}",
        reasons(&load[0])
    );
    // Past tamper.memory_minutes (60) a load is judged on its own.
    let later = feed(&mut second_run, &much_later);
    assert_eq!(rule(&later[0]), "KW-3001", "{:#}", later[0]);

    // Without the saved memory the same load is not tied to the tampering.
    let mut forgetful = Engine::new(config);
    let alone = feed(&mut forgetful, &after);
    assert_eq!(rule(&alone[0]), "KW-3001");
}

/// What a Mac does every second anyway: launchd starting processes (a stream is never silent, and
/// detection sees every fork and exec for lineage).
fn everyday_noise(c: &mut Capture, seconds: i64) {
    let launchd = cast::launchd();
    for i in 0..seconds * 4 {
        c.after_ms(250);
        c.fork(&launchd, &launchd.forked(20_000 + i as i32));
    }
}

#[test]
fn setting_the_clock_forward_does_not_expire_the_correlation_window() {
    // boot-args weakened, then the wall clock jumps a day ahead (however it was done), then a kext
    // is staged 30 s later: event time runs on the kernel's ticks, so the two are 30 s apart.
    let mut c = Capture::new(9);
    c.in_terminal(
        "/usr/sbin/nvram",
        "com.apple.nvram",
        &["nvram", "boot-args=amfi_get_out_of_my_way=1"],
        "/",
    );
    everyday_noise(&mut c, 3);
    c.after_ms(27_000);
    c.wall_skew_ns = 86_400_000_000_000;
    let cp = cast::terminal_zsh().exec_into("/bin/cp", "com.apple.cp");
    c.copy_bundle(&cp, "/Library/Extensions", "Evil");
    let alerts = run(&c.out);
    let staged = alerts
        .iter()
        .find(|a| a["file"]["path"] == "/Library/Extensions/Evil.kext")
        .unwrap();
    assert_eq!(
        (rule(staged), severity(staged)),
        ("KW-9002", "critical"),
        "{staged:#}"
    );
    assert!(
        reasons(staged).contains("30 s earlier"),
        "{}",
        reasons(staged)
    );
    // The alert still shows the (wrong) wall time the Mac recorded.
    assert!(
        staged["@timestamp"]
            .as_str()
            .unwrap()
            .starts_with("2026-11-26T"),
        "{}",
        staged["@timestamp"]
    );

    // And set back an hour: a staging an hour "before" the weakening still follows it.
    let mut c = Capture::new(9);
    c.in_terminal(
        "/usr/sbin/nvram",
        "com.apple.nvram",
        &["nvram", "boot-args=amfi_get_out_of_my_way=1"],
        "/",
    );
    everyday_noise(&mut c, 3);
    c.after_ms(2_000);
    c.wall_skew_ns = -3_600_000_000_000;
    c.copy_bundle(&cp, "/Library/Extensions", "Evil");
    let alerts = run(&c.out);
    assert!(
        alerts.iter().any(|a| rule(a) == "KW-9002"),
        "{:?}",
        rules_and_severities(&alerts)
    );
}

#[test]
fn profile_and_tcc_events_name_who_took_kextwatch_s_permissions() {
    let profiles = cast::sudo().exec_into("/usr/bin/profiles", "com.apple.profiles");
    let tccd = cast::tccd();
    let tccutil = cast::sudo().exec_into("/usr/bin/tccutil", "com.apple.tccutil");
    let mdmclient = Proc::apple(512, 1, "/usr/libexec/mdmclient", "com.apple.mdmclient");
    let mut c = Capture::new(10);
    // By hand: kextwatch's profile removed, its Full Disk Access deleted.
    c.profile_remove(&profiles, "com.kextwatch.profile.KXWATCH123", true, None);
    c.tcc_modify(
        &tccd,
        "kTCCServiceSystemPolicyAllFiles",
        "com.kextwatch.app.agent",
        3,
        0,
        Some(&tccutil),
    );
    let alerts = run(&c.out);
    assert_eq!(
        rules_and_severities(&alerts),
        vec![("KW-6004".to_string(), "high".to_string()); 2]
    );
    assert!(
        reasons(&alerts[1])
            .contains("Full Disk Access of com.kextwatch.app.agent removed by /usr/bin/tccutil"),
        "{}",
        reasons(&alerts[1])
    );

    // MDM taking back its profile; another app's permission; kextwatch granted access.
    let mut c = Capture::new(10);
    c.profile_remove(&mdmclient, "com.kextwatch.profile.KXWATCH123", true, None);
    c.profile_remove(&profiles, "com.example.wifi", false, None);
    c.tcc_modify(
        &tccd,
        "kTCCServiceSystemPolicyAllFiles",
        "com.example.backup",
        3,
        0,
        Some(&tccutil),
    );
    c.tcc_modify(
        &tccd,
        "kTCCServiceSystemPolicyAllFiles",
        "com.kextwatch.app.agent",
        1,
        2,
        None,
    );
    assert!(run(&c.out).is_empty());
}

#[test]
fn kill_by_pid_is_tampering_when_lineage_knows_the_pid_is_kextwatch() {
    // A capture without signal events: only the kill command shows it.
    let kw = cast::kextwatch();
    let mut c = Capture::new(9);
    c.write(&kw, "/var/db/kextwatch/status.json.tmp");
    let shell = root_shell(&mut c);
    c.spawn(
        &shell,
        4170,
        "/bin/kill",
        "com.apple.kill",
        &["kill", "-HUP", "300"],
    );
    c.spawn(
        &shell,
        4171,
        "/bin/kill",
        "com.apple.kill",
        &["kill", "-9", "4242"],
    );
    assert!(
        run(&c.out).is_empty(),
        "a reload, and a pid that is not kextwatch"
    );
    c.spawn(
        &shell,
        4172,
        "/bin/kill",
        "com.apple.kill",
        &["kill", "-9", "300"],
    );
    let alerts = run(&c.out);
    assert_eq!(
        rules_and_severities(&alerts),
        [("KW-6002".to_string(), "high".to_string())]
    );
    assert!(
        reasons(&alerts[0]).contains("SIGKILL sent to kextwatch (pid 300) (kill -9 300)"),
        "{}",
        reasons(&alerts[0])
    );
}
