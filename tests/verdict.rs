//! The Team ID verdict on every kext load: the identity comes from the bundle on disk (real signed
//! fixtures) or from KextPolicy (the real schema), and every way a load is seen gets the same verdict.

use kextwatch_testkit as support;

use kextwatch::config::Config;
use kextwatch::detect::Engine;
use kextwatch::kextpolicy;
use serde_json::Value;
use std::path::{Path, PathBuf};
use support::eslogger::{cast, Capture, Proc};
use support::kextpolicy as fx;

const DEVELOPER_TEAM: &str = "K3XW9TESTQ";
const DEVELOPER_ID: &str = "com.example.kextwatch.developer";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/kexts/{name}.kext"))
}

/// A Mac as the engine sees it: bundles read from disk at their Mac paths, and a KextPolicy.
struct Mac {
    config: Config,
    /// (path on the Mac, bundle read from this path)
    bundles: Vec<(String, PathBuf)>,
    policy: Option<kextpolicy::Snapshot>,
    tampered: Vec<String>,
    _dir: tempfile::TempDir,
    db: PathBuf,
}

impl Mac {
    fn new() -> Mac {
        let dir = tempfile::tempdir().unwrap();
        Mac {
            config: Config::default_config(),
            bundles: Vec::new(),
            policy: None,
            tampered: Vec::new(),
            db: dir.path().join("KextPolicy"),
            _dir: dir,
        }
    }

    fn allowlist_team(mut self, team: &str) -> Mac {
        self.config.allowlist.team_ids.insert(team.to_string());
        self
    }

    fn bundle(self, mac_path: &str, fixture_name: &str) -> Mac {
        self.bundle_from(mac_path, fixture(fixture_name))
    }

    fn bundle_from(mut self, mac_path: &str, real: PathBuf) -> Mac {
        self.bundles.push((mac_path.into(), real));
        self
    }

    /// A bundle whose signature Security.framework rejected (what macOS reports for code
    /// changed after signing; `read_identity` cannot tell off a Mac).
    fn tampered(mut self, mac_path: &str, fixture_name: &str) -> Mac {
        self.tampered.push(mac_path.to_string());
        self.bundle(mac_path, fixture_name)
    }

    /// A KextPolicy with the realistic rows, plus whatever `more` writes.
    fn kext_policy(mut self, more: impl FnOnce(&rusqlite::Connection)) -> Mac {
        let c = fx::realistic(&self.db, 8);
        more(&c);
        drop(c);
        self.policy = Some(kextpolicy::read_file(&self.db).unwrap());
        self
    }

    fn alerts(&self, capture: &Capture) -> Vec<Value> {
        let mut config = self.config.clone();
        config.detection.min_severity = "info".parse().unwrap();
        let mut engine = Engine::new(config);
        if let Some(p) = &self.policy {
            engine.set_kext_policy(p);
        }
        for (mac_path, real) in &self.bundles {
            let mut id = kextwatch::signing::read_identity(real);
            if self.tampered.contains(mac_path) {
                // errSecCSSignatureFailed
                id.validity = kextwatch::signing::Validity::Invalid(-67061);
            }
            engine.set_bundle_identity(mac_path, &id);
        }
        let mut out = Vec::new();
        for line in capture.out.lines() {
            engine.process(&support::event(line), &mut out);
        }
        engine.finish(&mut out);
        out.iter().map(support::alert_json).collect()
    }
}

fn load_event(id: &str) -> Capture {
    let mut c = Capture::new(9);
    c.kextload(&cast::kernelmanagerd(), id);
    c
}

fn only(alerts: &[Value]) -> (&str, &str, String) {
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    let a = &alerts[0];
    (
        a["rule"]["id"].as_str().unwrap(),
        a["kextwatch"]["severity"].as_str().unwrap(),
        support::reasons(a),
    )
}

#[test]
fn a_load_of_a_kext_signed_by_an_unlisted_team_is_high() {
    let mac = Mac::new().bundle("/Library/Extensions/Developer.kext", "Developer");
    let alerts = mac.alerts(&load_event(DEVELOPER_ID));
    let (rule, severity, why) = only(&alerts);
    assert_eq!((rule, severity), ("KW-3001", "high"));
    assert!(
        why.contains(&format!(
            "kext {DEVELOPER_ID} is signed by team {DEVELOPER_TEAM} (from the bundle at /Library/Extensions/Developer.kext), which is not allowlisted"
        )),
        "{why}"
    );
    assert_eq!(alerts[0]["kextwatch"]["kext"]["team_id"], DEVELOPER_TEAM);
}

#[test]
fn an_allowlisted_approved_kext_stays_info_and_without_approval_it_bypassed_consent() {
    let approved = Mac::new()
        .allowlist_team(DEVELOPER_TEAM)
        .bundle("/Library/Extensions/Developer.kext", "Developer")
        .kext_policy(|c| fx::approve(c, DEVELOPER_TEAM, DEVELOPER_ID, "Example", true));
    let alerts = approved.alerts(&load_event(DEVELOPER_ID));
    let (_, severity, why) = only(&alerts);
    assert_eq!(severity, "info", "{why}");
    assert!(
        why.contains("signed by allowlisted team K3XW9TESTQ"),
        "{why}"
    );

    // The same kext when KextPolicy holds no approval for it: the load went around user consent.
    let unapproved = Mac::new()
        .allowlist_team(DEVELOPER_TEAM)
        .bundle("/Library/Extensions/Developer.kext", "Developer")
        .kext_policy(|_| {});
    let alerts = unapproved.alerts(&load_event(DEVELOPER_ID));
    let (_, severity, why) = only(&alerts);
    assert_eq!(severity, "high");
    assert!(
        why.contains("KextPolicy holds no user or MDM approval for com.example.kextwatch.developer (team K3XW9TESTQ): the load bypassed user approval"),
        "{why}"
    );

    // A team-wide MDM approval (AllowedTeamIdentifiers) covers every kext of the team; a denied
    // user approval covers nothing.
    let mdm = Mac::new()
        .allowlist_team(DEVELOPER_TEAM)
        .bundle("/Library/Extensions/Developer.kext", "Developer")
        .kext_policy(|c| {
            fx::mdm(
                c,
                DEVELOPER_TEAM,
                None,
                "6E1D4F0B-0000-4000-8000-000000000001",
            )
        });
    assert_eq!(only(&mdm.alerts(&load_event(DEVELOPER_ID))).1, "info");
    let denied = Mac::new()
        .allowlist_team(DEVELOPER_TEAM)
        .bundle("/Library/Extensions/Developer.kext", "Developer")
        .kext_policy(|c| fx::approve(c, DEVELOPER_TEAM, DEVELOPER_ID, "Example", false));
    assert_eq!(only(&denied.alerts(&load_event(DEVELOPER_ID))).1, "high");
}

#[test]
fn an_unsigned_or_ad_hoc_bundle_is_critical_whatever_the_allowlist_says() {
    for (fixture_name, id, kind) in [
        ("Unsigned", "com.example.kextwatch.unsigned", "unsigned"),
        ("Adhoc", "com.example.kextwatch.adhoc", "adhoc"),
    ] {
        let mut mac = Mac::new().bundle(
            &format!("/Library/Extensions/{fixture_name}.kext"),
            fixture_name,
        );
        // The allowlist names the bundle id: still no developer stands behind the code.
        mac.config.allowlist = toml_allowlist(&format!(
            "kexts = [{{ team_id = \"{DEVELOPER_TEAM}\", bundle_id = \"{id}\" }}]"
        ));
        let alerts = mac.alerts(&load_event(id));
        let (_, severity, why) = only(&alerts);
        assert_eq!(severity, "critical", "{fixture_name}: {why}");
        assert!(
            why.contains(&format!(
                "{fixture_name}.kext is {kind} (no developer identity)"
            )),
            "{why}"
        );
    }
}

fn toml_allowlist(body: &str) -> kextwatch::config::Allowlist {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.toml");
    std::fs::write(&path, format!("[allowlist]\n{body}\n")).unwrap();
    Config::load(&path).unwrap().allowlist
}

#[test]
fn a_bundle_whose_team_differs_from_the_recorded_one_was_replaced() {
    // KextPolicy recorded the path loaded with another team; the bundle now on disk is K3XW9TESTQ's.
    let mac = Mac::new()
        .allowlist_team(DEVELOPER_TEAM)
        .bundle("/Library/Extensions/Developer.kext", "Developer")
        .kext_policy(|c| {
            fx::approve(c, DEVELOPER_TEAM, DEVELOPER_ID, "Example", true);
            fx::loaded(
                c,
                "/Library/Extensions/Developer.kext",
                Some("QQQQ000000"),
                DEVELOPER_ID,
                "2026-11-25 08:00:00",
                Some("0123456789abcdef0123456789abcdef01234567"),
            );
        });
    let alerts = mac.alerts(&load_event(DEVELOPER_ID));
    let (_, severity, why) = only(&alerts);
    assert_eq!(severity, "critical");
    assert!(
        why.contains("signed by team K3XW9TESTQ but KextPolicy recorded com.example.kextwatch.developer with team QQQQ000000"),
        "{why}"
    );
}

#[test]
fn an_apple_bundle_id_with_a_team_or_outside_system_is_spoofing() {
    // Recorded by KextPolicy with a Team ID.
    let mac = Mac::new().kext_policy(|c| {
        fx::loaded(
            c,
            "/Library/Extensions/AppleHV.kext",
            Some("ABCDE12345"),
            "com.apple.driver.AppleHVFake",
            "2026-11-25 08:00:00",
            None,
        );
    });
    let alerts = mac.alerts(&load_event("com.apple.driver.AppleHVFake"));
    let (_, severity, why) = only(&alerts);
    assert_eq!(severity, "critical");
    assert!(
        why.contains("com.apple.driver.AppleHVFake claims an Apple bundle id but is signed by team ABCDE12345 (from KextPolicy)"),
        "{why}"
    );

    // A bundle on disk outside /System whose Info.plist says com.apple.*: a copy of the developer
    // fixture with its identifier rewritten (the signature stays the developer's).
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("AppleFake.kext");
    copy_dir(&fixture("Developer"), &copy);
    let plist = copy.join("Contents/Info.plist");
    let text = std::fs::read_to_string(&plist).unwrap();
    std::fs::write(&plist, text.replace(DEVELOPER_ID, "com.apple.driver.Fake")).unwrap();
    let mut mac = Mac::new();
    mac.bundles
        .push(("/Library/Extensions/AppleFake.kext".into(), copy.clone()));
    let alerts = mac.alerts(&load_event("com.apple.driver.Fake"));
    let (_, severity, why) = only(&alerts);
    assert_eq!(severity, "critical");
    assert!(why.contains("claims an Apple bundle id"), "{why}");

    // Staging it is critical too, before any load.
    let mut c = Capture::new(9);
    let cp = cast::terminal_zsh().exec_into("/bin/cp", "com.apple.cp");
    c.create(&cp, "/Library/Extensions", "AppleFake.kext");
    let alerts = mac.alerts(&c);
    let (rule, severity, why) = only(&alerts);
    assert_eq!((rule, severity), ("KW-2001", "critical"));
    assert!(
        why.contains("claims the Apple bundle id com.apple.driver.Fake outside /System"),
        "{why}"
    );

    // Apple's own kexts loading at boot stay quiet.
    let alerts = Mac::new()
        .kext_policy(|_| {})
        .alerts(&load_event("com.apple.iokit.IOAVBFamily"));
    assert_eq!(only(&alerts).1, "info");
}

fn copy_dir(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-R")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(status.success());
}

#[test]
fn a_kext_policy_without_any_record_of_the_kext_means_consent_was_bypassed() {
    // A KextPolicy with no team-wide MDM approvals, and none of the kext.
    let mac = Mac::new().kext_policy(|c| {
        c.execute("DELETE FROM kext_policy_mdm", []).unwrap();
    });
    let alerts = mac.alerts(&load_event("com.evil.rootkit"));
    let (_, severity, why) = only(&alerts);
    assert_eq!(severity, "high");
    assert!(
        why.contains("KextPolicy holds no approval or load record for it"),
        "{why}"
    );
}

#[test]
fn a_tool_load_gets_the_same_verdict_as_the_load_event() {
    let mac = Mac::new().bundle("/Library/Extensions/Developer.kext", "Developer");
    let mut c = Capture::new(9);
    let sudo = cast::sudo();
    c.exec(
        &sudo,
        &sudo.exec_into("/usr/bin/kmutil", "com.apple.kmutil"),
        &["kmutil", "load", "-p", "/Library/Extensions/Developer.kext"],
        "/",
    );
    let alerts = mac.alerts(&c);
    let (rule, severity, why) = only(&alerts);
    assert_eq!((rule, severity), ("KW-1001", "high"));
    assert!(why.contains("signed by team K3XW9TESTQ"), "{why}");
    assert_eq!(alerts[0]["kextwatch"]["kext"]["bundle_id"], DEVELOPER_ID);
    assert_eq!(alerts[0]["kextwatch"]["kext"]["team_id"], DEVELOPER_TEAM);

    // The allowlisted manager loading a kext nobody can identify: stated, not raised.
    let mut c = Capture::new(9);
    let jamf = cast::jamf();
    c.exec(
        &jamf,
        &jamf.exec_into("/usr/bin/kmutil", "com.apple.kmutil"),
        &["kmutil", "load", "-p", "/Library/Extensions/Other.kext"],
        "/",
    );
    let alerts = Mac::new().alerts(&c);
    let (_, severity, why) = only(&alerts);
    assert_eq!(severity, "info", "{why}");
    assert!(
        why.contains("who signed /Library/Extensions/Other.kext is unknown"),
        "{why}"
    );
}

#[test]
fn a_trojanized_allowlisted_bundle_is_critical_on_staging_and_load() {
    // The allowlisted, approved developer kext, but its code no longer matches its signature.
    let mac = Mac::new()
        .allowlist_team(DEVELOPER_TEAM)
        .tampered("/Library/Extensions/Developer.kext", "Developer")
        .kext_policy(|c| fx::approve(c, DEVELOPER_TEAM, DEVELOPER_ID, "Example", true));
    let alerts = mac.alerts(&load_event(DEVELOPER_ID));
    let (_, severity, why) = only(&alerts);
    assert_eq!(severity, "critical");
    assert!(
        why.contains("does not verify (Security.framework status -67061): its code was changed after signing"),
        "{why}"
    );
    // Writing into it is critical at once, before any load.
    let mut c = Capture::new(9);
    let cp = cast::terminal_zsh().exec_into("/bin/cp", "com.apple.cp");
    c.write(
        &cp,
        "/Library/Extensions/Developer.kext/Contents/MacOS/Developer",
    );
    let alerts = mac.alerts(&c);
    let (rule, severity, _) = only(&alerts);
    assert_eq!((rule, severity), ("KW-2001", "critical"));
}

#[test]
fn a_load_by_anything_but_the_kext_daemon_is_raised_whatever_the_verdict() {
    let loader = || {
        let mut c = Capture::new(9);
        c.kextload(
            &Proc::adhoc(6000, 1, "/Users/alice/.local/loader"),
            DEVELOPER_ID,
        );
        c
    };
    // Allowlisted and approved: info when kernelmanagerd loads it, one step up otherwise.
    let allowlisted = Mac::new()
        .allowlist_team(DEVELOPER_TEAM)
        .bundle("/Library/Extensions/Developer.kext", "Developer")
        .kext_policy(|c| fx::approve(c, DEVELOPER_TEAM, DEVELOPER_ID, "Example", true));
    let alerts1 = allowlisted.alerts(&load_event(DEVELOPER_ID));
    let (_, severity, why) = only(&alerts1);
    assert_eq!(severity, "info", "{why}");
    let alerts2 = allowlisted.alerts(&loader());
    let (rule, severity, why) = only(&alerts2);
    assert_eq!((rule, severity), ("KW-3001", "low"), "{why}");
    assert!(
        why.contains("loaded by /Users/alice/.local/loader (")
            && why.contains("not by the system kext daemon"),
        "{why}"
    );
    // An unlisted team is high already; an odd loader makes it critical.
    let unlisted = Mac::new().bundle("/Library/Extensions/Developer.kext", "Developer");
    let alerts3 = unlisted.alerts(&loader());
    let (_, severity, why) = only(&alerts3);
    assert_eq!(severity, "critical", "{why}");
}

#[test]
fn an_allowlisted_vendor_bundle_is_quieter_when_an_admin_stages_it_but_not_when_a_dropper_does() {
    let mac = Mac::new()
        .allowlist_team(DEVELOPER_TEAM)
        .bundle("/Library/Extensions/Developer.kext", "Developer");
    // An admin copies it in from a terminal: medium for an interactive copy, lowered to low.
    let mut c = Capture::new(9);
    let cp = cast::sudo().exec_into("/bin/cp", "com.apple.cp");
    c.copy_bundle(&cp, "/Library/Extensions", "Developer");
    let alerts4 = mac.alerts(&c);
    let (rule, severity, why) = staging(&alerts4);
    assert_eq!((rule, severity), ("KW-2001", "low"), "{why}");
    assert!(
        why.contains(&format!(
            "kext bundle /Library/Extensions/Developer.kext is signed by allowlisted team {DEVELOPER_TEAM}"
        )) && !why.contains("does not excuse"),
        "{why}"
    );
    // An ad-hoc dropper brings the same vendor-signed kext along: the allowlist does not lower it.
    let mut c = Capture::new(9);
    let dropper = Proc::adhoc(5100, 1, "/private/tmp/.x/installer");
    c.copy_bundle(&dropper, "/Library/Extensions", "Developer");
    let alerts5 = mac.alerts(&c);
    let (rule, severity, why) = staging(&alerts5);
    assert_eq!((rule, severity), ("KW-2001", "high"), "{why}");
    assert!(
        why.contains(&format!(
            "is signed by allowlisted team {DEVELOPER_TEAM}, which does not excuse how it arrived"
        )),
        "{why}"
    );
}

/// The staging alert of a `cp -R` (its follow-up, folding the other file events, says the same).
fn staging(alerts: &[Value]) -> (&str, &str, String) {
    assert_eq!(alerts.len(), 2, "{alerts:#?}");
    assert_eq!(alerts[1]["kextwatch"]["folded"]["count"], 9, "{alerts:#?}");
    assert_eq!(
        alerts[0]["kextwatch"]["severity"],
        alerts[1]["kextwatch"]["severity"]
    );
    only(&alerts[..1])
}

#[test]
fn a_kext_built_to_crash_a_parser_is_critical_when_staged_and_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("Deep.kext");
    copy_dir(&fixture("Developer"), &bundle);
    let deep = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<plist version=\"1.0\"><dict><key>CFBundleIdentifier</key><string>{DEVELOPER_ID}</string><key>IOKitPersonalities</key>{}<dict/>{}</dict></plist>\n",
        "<array>".repeat(69_000),
        "</array>".repeat(69_000)
    );
    std::fs::write(bundle.join("Contents/Info.plist"), deep).unwrap();
    // Even with the developer's team allowlisted, an unreadable bundle vouches for nothing.
    let mac = Mac::new()
        .allowlist_team(DEVELOPER_TEAM)
        .bundle_from("/Library/Extensions/Deep.kext", bundle);
    let mut c = Capture::new(9);
    let cp = cast::sudo().exec_into("/bin/cp", "com.apple.cp");
    c.copy_bundle(&cp, "/Library/Extensions", "Deep");
    let alerts = mac.alerts(&c);
    let (rule, severity, why) = staging(&alerts);
    assert_eq!((rule, severity), ("KW-2001", "critical"), "{why}");
    assert!(
        why.contains("kext bundle /Library/Extensions/Deep.kext is invalid (no developer identity): Info.plist: ")
            && why.contains("plist nests deeper than 64 levels"),
        "{why}"
    );
    let mut c = Capture::new(9);
    c.exec(
        &cast::sudo(),
        &cast::sudo().exec_into("/usr/bin/kmutil", "com.apple.kmutil"),
        &["kmutil", "load", "-p", "/Library/Extensions/Deep.kext"],
        "/",
    );
    let alerts = mac.alerts(&c);
    let (_, severity, why) = only(&alerts);
    assert_eq!(severity, "critical", "{why}");
    assert!(why.contains("plist nests deeper than 64 levels"), "{why}");
}

#[test]
fn a_staged_bundle_loaded_hours_later_by_the_manager_escalates_unless_its_signature_is_allowlisted()
{
    let capture = || {
        let mut c = Capture::new(9);
        let cp = cast::sudo().exec_into("/bin/cp", "com.apple.cp");
        c.copy_bundle(&cp, "/Library/Extensions", "Developer");
        // Far outside the correlation window: only the durable staging memory ties them.
        c.after_ms(3 * 3_600_000);
        let jamf = cast::jamf();
        c.exec(
            &jamf,
            &jamf.exec_into("/usr/bin/kmutil", "com.apple.kmutil"),
            &["kmutil", "load", "-p", "/Library/Extensions/Developer.kext"],
            "/",
        );
        c
    };
    let rules = |mac: &Mac| -> Vec<String> {
        mac.alerts(&capture())
            .iter()
            .map(|a| a["rule"]["id"].as_str().unwrap().to_string())
            .collect()
    };
    let approved =
        |c: &rusqlite::Connection| fx::approve(c, DEVELOPER_TEAM, DEVELOPER_ID, "Example", true);
    // Jamf is an allowlisted manager in the shipped config.
    // The manager loads the allowlisted vendor's kext, read from disk as signed: no story.
    let allowlisted = Mac::new()
        .allowlist_team(DEVELOPER_TEAM)
        .bundle("/Library/Extensions/Developer.kext", "Developer")
        .kext_policy(approved);
    let got = rules(&allowlisted);
    assert!(!got.iter().any(|r| r.starts_with("KW-900")), "{got:?}");
    // The same bundle changed after signing: the manager's trust does not cover it.
    let tampered = Mac::new()
        .allowlist_team(DEVELOPER_TEAM)
        .tampered("/Library/Extensions/Developer.kext", "Developer")
        .kext_policy(approved);
    let got = rules(&tampered);
    assert!(got.iter().any(|r| r == "KW-9001"), "{got:?}");
    // Signed by a team the allowlist does not name.
    let unlisted = Mac::new()
        .bundle("/Library/Extensions/Developer.kext", "Developer")
        .kext_policy(approved);
    let got = rules(&unlisted);
    assert!(got.iter().any(|r| r == "KW-9001"), "{got:?}");
}
