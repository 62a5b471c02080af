//! Packaging: every plist the project ships or generates parses (plist crate and Python's plistlib),
//! carries the keys Apple's schemas require with the right types, points at the paths the pkg installs;
//! the profile generator is deterministic and rejects bad input clearly.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use plist::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kextwatch");
const TEAM: &str = "ABCDE12345";
const AGENT: &str = "com.kextwatch.app.agent";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// packaging/scripts/layout.env: KEY="value" lines.
fn layout() -> HashMap<String, String> {
    std::fs::read_to_string(root().join("packaging/scripts/layout.env"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.starts_with("KW_"))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

/// Python's plistlib (an independent parser): the whole plist as typed JSON (see [`typed`]).
const PLISTLIB_TYPED: &str = r#"
import json, plistlib, sys
def typed(v):
    if isinstance(v, dict): return {"dict": {k: typed(x) for k, x in v.items()}}
    if isinstance(v, list): return {"array": [typed(x) for x in v]}
    if isinstance(v, bool): return {"bool": v}
    if isinstance(v, int): return {"integer": v}
    if isinstance(v, float): return {"real": v}
    if isinstance(v, str): return {"string": v}
    raise TypeError(type(v))  # no shipped plist has data or dates
print(json.dumps(typed(plistlib.load(open(sys.argv[1], "rb")))))
"#;

fn plistlib_typed(path: &Path) -> serde_json::Value {
    let out = Command::new("python3")
        .arg("-c")
        .arg(PLISTLIB_TYPED)
        .arg(path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "plistlib rejects {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The plist crate's reading in the same typed JSON as [`PLISTLIB_TYPED`].
fn typed(v: &Value) -> serde_json::Value {
    use serde_json::json;
    match v {
        Value::Dictionary(d) => {
            json!({"dict": d.iter().map(|(k, x)| (k.clone(), typed(x))).collect::<serde_json::Map<_, _>>()})
        }
        Value::Array(a) => json!({"array": a.iter().map(typed).collect::<Vec<_>>()}),
        Value::Boolean(b) => json!({ "bool": b }),
        Value::Integer(i) => {
            json!({"integer": i.as_signed().map(serde_json::Value::from).unwrap_or_else(|| i.as_unsigned().into())})
        }
        Value::Real(r) => json!({ "real": r }),
        Value::String(s) => json!({ "string": s }),
        other => panic!("no shipped plist has data or dates: {other:?}"),
    }
}

fn load(path: &Path) -> plist::Dictionary {
    let v = Value::from_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        typed(&v),
        plistlib_typed(path),
        "plist crate and plistlib disagree on {}",
        path.display()
    );
    v.into_dictionary().unwrap()
}

fn string<'a>(d: &'a plist::Dictionary, k: &str) -> &'a str {
    d.get(k)
        .and_then(Value::as_string)
        .unwrap_or_else(|| panic!("{k} must be a string"))
}

#[test]
fn every_shipped_plist_parses_with_both_parsers() {
    let mut n = 0;
    let mut stack = vec![root().join("packaging")];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if matches!(
                p.extension().and_then(|x| x.to_str()),
                Some("plist" | "entitlements")
            ) {
                load(&p);
                n += 1;
            }
        }
    }
    assert_eq!(
        n, 5,
        "launchd plist, sysext and app Info.plist, two entitlements"
    );
}

#[test]
fn launch_daemon_runs_what_the_pkg_installs() {
    let l = layout();
    let d = load(&root().join("packaging/launchd/com.kextwatch.daemon.plist"));
    assert_eq!(string(&d, "Label"), l["KW_LAUNCHD_LABEL"]);
    let args: Vec<&str> = d["ProgramArguments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_string().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            l["KW_BIN"].as_str(),
            "run",
            "--config",
            l["KW_CONFIG"].as_str(),
            "--source",
            "eslogger"
        ]
    );
    assert_eq!(d["RunAtLoad"].as_boolean(), Some(true));
    assert_eq!(d["KeepAlive"].as_boolean(), Some(true));
    assert!(
        ["Standard", "Interactive", "Adaptive", "Background"].contains(&string(&d, "ProcessType"))
    );
    // Logs go to the unified log and alerts to the rotated alert log: no file launchd would grow
    // without bound, and no key that only restates launchd's default (ThrottleInterval 10).
    for key in ["StandardOutPath", "StandardErrorPath", "ThrottleInterval"] {
        assert!(!d.contains_key(key), "{key}");
    }
    let known = [
        "Label",
        "ProgramArguments",
        "RunAtLoad",
        "KeepAlive",
        "ProcessType",
    ];
    assert!(d.keys().all(|k| known.contains(&k.as_str())), "{d:?}");
    // The daemon must run in the foreground: no self-daemonising flags in its arguments.
    assert!(!args
        .iter()
        .any(|a| a.contains("daemon") || a.contains("background")));
}

#[test]
fn system_extension_and_app_bundles_have_the_required_keys() {
    let l = layout();
    let ext = load(&root().join("packaging/sysext/Info.plist"));
    assert_eq!(string(&ext, "CFBundlePackageType"), "SYSX");
    assert_eq!(string(&ext, "CFBundleIdentifier"), l["KW_SYSEXT_BUNDLE_ID"]);
    assert_eq!(ext["NSEndpointSecurityEarlyBoot"].as_boolean(), Some(true));
    let mach = string(&ext, "NSEndpointSecurityMachServiceName");
    assert!(
        mach.starts_with("__TEAM_ID__.") && mach.ends_with(".xpc"),
        "{mach}: build-pkg.sh puts the Team ID in front"
    );
    let app = load(&root().join("packaging/app/Info.plist"));
    assert_eq!(string(&app, "CFBundlePackageType"), "APPL");
    assert_eq!(string(&app, "CFBundleIdentifier"), l["KW_APP_BUNDLE_ID"]);
    let agent_ent = load(&root().join("packaging/sysext/agent.entitlements"));
    assert_eq!(
        agent_ent["com.apple.developer.endpoint-security.client"].as_boolean(),
        Some(true)
    );
    let app_ent = load(&root().join("packaging/app/app.entitlements"));
    assert_eq!(
        app_ent["com.apple.developer.system-extension.install"].as_boolean(),
        Some(true)
    );
}

fn profile(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .arg("profile")
        .args(args)
        .output()
        .unwrap()
}

/// `kextwatch profile` for our Team ID and extension, with `extra` arguments.
fn our_profile(extra: &[&str]) -> std::process::Output {
    let mut args = vec!["--team-id", TEAM, "--bundle-id", AGENT];
    args.extend_from_slice(extra);
    profile(&args)
}

/// A profile written to stdout, parsed.
fn parsed(out: &std::process::Output) -> plist::Dictionary {
    Value::from_reader_xml(&out.stdout[..])
        .unwrap()
        .into_dictionary()
        .unwrap()
}

fn payloads(p: &plist::Dictionary) -> HashMap<String, plist::Dictionary> {
    p["PayloadContent"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let d = v.as_dictionary().unwrap().clone();
            (string(&d, "PayloadType").to_string(), d)
        })
        .collect()
}

#[test]
fn profile_grants_what_the_daemon_needs() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("kextwatch.mobileconfig");
    let out = our_profile(&["--output", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = load(&file);
    assert_eq!(string(&p, "PayloadType"), "Configuration");
    assert_eq!(string(&p, "PayloadScope"), "System");
    assert_eq!(p["PayloadVersion"].as_signed_integer(), Some(1));
    let all = payloads(&p);
    for (kind, d) in &all {
        for k in ["PayloadIdentifier", "PayloadUUID", "PayloadDisplayName"] {
            assert!(d.get(k).and_then(Value::as_string).is_some(), "{kind}: {k}");
        }
        assert_eq!(d["PayloadVersion"].as_signed_integer(), Some(1), "{kind}");
        assert_eq!(string(d, "PayloadUUID").len(), 36);
    }

    let sx = &all["com.apple.system-extension-policy"];
    let team_list = |k: &str| -> Vec<String> {
        sx[k].as_dictionary().unwrap()[TEAM]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_string().unwrap().to_string())
            .collect()
    };
    assert_eq!(team_list("AllowedSystemExtensions"), [AGENT]);
    assert_eq!(
        team_list("AllowedSystemExtensionTypes"),
        ["EndpointSecurityExtension"]
    );
    assert_eq!(team_list("NonRemovableSystemExtensions"), [AGENT]);

    let tcc = &all["com.apple.TCC.configuration-profile-policy"];
    let fda = tcc["Services"].as_dictionary().unwrap()["SystemPolicyAllFiles"]
        .as_array()
        .unwrap();
    let ext = fda[0].as_dictionary().unwrap();
    assert_eq!(
        (string(ext, "Identifier"), string(ext, "IdentifierType")),
        (AGENT, "bundleID")
    );
    assert!(string(ext, "CodeRequirement")
        .contains(&format!("certificate leaf[subject.OU] = \"{TEAM}\"")));
    assert_eq!(ext["StaticCode"].as_boolean(), Some(false));
    assert_eq!(string(ext, "Authorization"), "Allow");
    let daemon = fda[1].as_dictionary().unwrap();
    assert_eq!(
        (
            string(daemon, "Identifier"),
            string(daemon, "IdentifierType")
        ),
        (layout()["KW_BIN"].as_str(), "path")
    );

    let sm = &all["com.apple.servicemanagement"];
    let rules: Vec<&plist::Dictionary> = sm["Rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_dictionary().unwrap())
        .collect();
    assert_eq!(
        (string(rules[0], "RuleType"), string(rules[0], "RuleValue")),
        ("TeamIdentifier", TEAM)
    );
    // The daemon's label is managed only when your Team ID signed the program: another plist
    // claiming the label is not.
    assert_eq!(
        (
            string(rules[1], "RuleType"),
            string(rules[1], "RuleValue"),
            string(rules[1], "TeamIdentifier")
        ),
        ("Label", layout()["KW_LAUNCHD_LABEL"].as_str(), TEAM)
    );
    // Apple's default: users can still approve other vendors' extensions (a VPN, say).
    assert_eq!(sx["AllowUserOverrides"].as_boolean(), Some(true));
}

#[test]
fn profile_can_forbid_users_approving_other_extensions() {
    for (arg, want) in [("false", Some(false)), ("true", Some(true))] {
        let out = our_profile(&["--allow-user-overrides", arg]);
        assert!(out.status.success(), "{out:?}");
        let d = parsed(&out);
        let sx = &payloads(&d)["com.apple.system-extension-policy"];
        assert_eq!(sx["AllowUserOverrides"].as_boolean(), want, "{arg}");
    }
    let out = our_profile(&["--allow-user-overrides", "no"]);
    assert_eq!(out.status.code(), Some(2), "a usage error, not a guess");
    assert!(out.stdout.is_empty());
}

#[test]
fn profile_is_deterministic_and_per_team() {
    let a = our_profile(&[]).stdout;
    let b = our_profile(&[]).stdout;
    assert_eq!(
        a, b,
        "same inputs, same bytes: MDM updates replace the profile"
    );
    let other = profile(&["--team-id", "ZYXWV98765", "--bundle-id", AGENT]).stdout;
    let uuids = |x: &[u8]| -> Vec<String> {
        let v = Value::from_reader_xml(x).unwrap();
        let d = v.as_dictionary().unwrap().clone();
        payloads(&d)
            .values()
            .map(|p| string(p, "PayloadUUID").to_string())
            .collect()
    };
    let (ua, uo) = (uuids(&a), uuids(&other));
    assert!(ua.iter().all(|u| !uo.contains(u)));
}

#[test]
fn profile_can_carry_a_validated_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("k.toml");
    std::fs::write(&cfg, "[allowlist]\nteam_ids = [\"VB5E2TV963\"]\n").unwrap();
    let out = our_profile(&["--config", cfg.to_str().unwrap()]);
    assert!(out.status.success());
    let d = parsed(&out);
    let c = &payloads(&d)["com.kextwatch"];
    assert_eq!(
        string(c, "ConfigTOML"),
        "[allowlist]\nteam_ids = [\"VB5E2TV963\"]\n"
    );

    std::fs::write(&cfg, "[allowlist]\nteam_ids = [\"bad\"]\n").unwrap();
    let out = our_profile(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("allowlist.team_ids[0]"));
}

#[test]
fn profile_rejects_bad_identifiers_clearly() {
    for (team, bundle, want) in [
        ("abcde12345", AGENT, "is not an Apple Team ID"),
        ("ABCDE1234", AGENT, "is not an Apple Team ID"),
        (TEAM, "", "is not a bundle identifier"),
        (TEAM, "no dots or spaces", "is not a bundle identifier"),
        (TEAM, "com.example.\"inject\"", "is not a bundle identifier"),
    ] {
        let out = profile(&["--team-id", team, "--bundle-id", bundle]);
        assert_eq!(out.status.code(), Some(1), "{team} {bundle}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{err}");
        assert!(out.stdout.is_empty());
    }
}

#[test]
fn profile_organization_is_escaped_or_refused_never_invalid_xml() {
    // XML metacharacters are escaped: the profile parses and says exactly what was given.
    let for_org = |org: &str| our_profile(&["--organization", org]);
    let org = "Acme & Sons <IT> \"Mac\" 'Team'";
    let out = for_org(org);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let p: plist::Dictionary = plist::from_bytes(&out.stdout).unwrap();
    assert_eq!(string(&p, "PayloadOrganization"), org);
    // Characters XML cannot hold (control characters, U+FFFE) are refused, nothing printed.
    for org in ["Acme\u{1}", "Acme\u{FFFE}", "Acme\nIT"] {
        let out = for_org(org);
        assert_eq!(out.status.code(), Some(1), "{org:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("contains a control character"));
        assert!(out.stdout.is_empty());
    }
    // What is accepted parses with an independent parser too, unchanged.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.mobileconfig");
    let org = "Ärzte ]]> <!-- 🚀 -->";
    let out = our_profile(&["--organization", org, "--output", file.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(string(&load(&file), "PayloadOrganization"), org);
}

#[test]
fn a_config_xml_cannot_hold_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("k.toml");
    // Valid TOML (a comment may hold U+FFFF), but no XML document can.
    std::fs::write(&cfg, "[allowlist]\n# note \u{FFFF}\nteam_ids = []\n").unwrap();
    let out = our_profile(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 2: character U+FFFF cannot be written in an XML profile"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn the_shipped_tamper_settings_name_what_the_pkg_installs() {
    let l = layout();
    let config = kextwatch::config::Config::default_config();
    let t = &config.tamper;
    let sysext_exe = format!(
        "{}/Contents/Library/SystemExtensions/{id}.systemextension/Contents/MacOS/{id}",
        l["KW_APP"],
        id = l["KW_SYSEXT_BUNDLE_ID"]
    );
    assert_eq!(t.executables, [l["KW_BIN"].clone(), sysext_exe]);
    assert_eq!(t.launchd_label, l["KW_LAUNCHD_LABEL"]);
    assert_eq!(t.launchd_plist, l["KW_LAUNCHD_PLIST"]);
    assert_eq!(t.system_extension, l["KW_SYSEXT_BUNDLE_ID"]);
    let protected = config.protected_paths();
    let config_dir = Path::new(&l["KW_CONFIG"]).parent().unwrap();
    for installed in [
        l["KW_BIN"].as_str(),
        l["KW_CONFIG"].as_str(),
        l["KW_LAUNCHD_PLIST"].as_str(),
        l["KW_APP"].as_str(),
        l["KW_STATE_DIR"].as_str(),
        l["KW_LOG_DIR"].as_str(),
    ] {
        assert!(
            protected
                .iter()
                .any(|p| kextwatch::path::is_under(installed, p)),
            "{installed} is not protected: {protected:?}"
        );
    }
    assert!(protected.contains(&config_dir.display().to_string()));
    // The profile `kextwatch profile` writes is one tamper rules recognise.
    assert!("com.kextwatch.profile.ABCDE12345".starts_with(&t.profile_identifier));
}

#[test]
fn the_binarys_install_paths_are_the_packages() {
    use kextwatch::layout;
    let l = layout();
    for (key, rust) in [
        ("KW_BIN", layout::BINARY),
        ("KW_BIN_SIGNING_ID", layout::BINARY_SIGNING_ID),
        ("KW_CONFIG", layout::CONFIG),
        ("KW_STATE_DIR", layout::STATE_DIR),
        ("KW_LOG_DIR", layout::LOG_DIR),
        ("KW_ALERT_LOG", layout::ALERT_LOG),
        ("KW_LAUNCHD_LABEL", layout::LAUNCHD_LABEL),
        ("KW_LAUNCHD_PLIST", layout::LAUNCHD_PLIST),
        ("KW_APP", layout::APP),
        ("KW_APP_BUNDLE_ID", layout::APP_BUNDLE_ID),
        ("KW_SYSEXT_BUNDLE_ID", layout::SYSEXT_BUNDLE_ID),
    ] {
        assert_eq!(l.get(key).map(String::as_str), Some(rust), "{key}");
    }
    assert_eq!(
        layout::SYSEXT_EXECUTABLE,
        format!(
            "{}/Contents/Library/SystemExtensions/{id}.systemextension/Contents/MacOS/{id}",
            l["KW_APP"],
            id = l["KW_SYSEXT_BUNDLE_ID"]
        )
    );
    assert!(layout::ALERT_LOG.starts_with(&format!("{}/", l["KW_LOG_DIR"])));
    // build-pkg.sh names the extension's executable after its bundle id, as sysextd expects.
    let info = load(&root().join("packaging/sysext/Info.plist"));
    assert_eq!(
        string(&info, "CFBundleExecutable"),
        layout::SYSEXT_BUNDLE_ID
    );
}

#[test]
fn the_binary_inside_a_system_extension_bundle_runs_the_daemon_not_the_cli() {
    // sysextd starts the extension's executable with no arguments; as the CLI it would print usage
    // and exit 2. Inside a `.systemextension` bundle it runs the daemon with the Endpoint Security
    // source and the installed config (neither exists here, so it stops and says why).
    let dir = tempfile::tempdir().unwrap();
    let macos = dir
        .path()
        .join("Kextwatch.app/Contents/Library/SystemExtensions")
        .join(format!("{AGENT}.systemextension/Contents/MacOS"));
    std::fs::create_dir_all(&macos).unwrap();
    let exe = macos.join(AGENT);
    if std::fs::hard_link(BIN, &exe).is_err() {
        std::fs::copy(BIN, &exe).unwrap();
    }
    for args in [&[][..], &["--help"][..]] {
        let out = Command::new(&exe)
            .args(args)
            .env("KEXTWATCH_LOG", "info")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "no usage text: {args:?}");
        assert!(
            err.contains("starting as the system extension") && err.contains(AGENT),
            "{err}"
        );
        assert!(err.contains("system extension stopped"), "{err}");
        if !Path::new(&layout()["KW_CONFIG"]).exists() {
            assert!(
                err.contains(&layout()["KW_CONFIG"]),
                "the reason it could not run: {err}"
            );
        }
    }
    // The same binary anywhere else is the CLI.
    let out = Command::new(BIN).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn newsyslog_rotates_every_file_the_daemon_writes_by_default() {
    let l = layout();
    assert!(l["KW_NEWSYSLOG_CONF"].starts_with("/etc/newsyslog.d/"));
    let conf =
        std::fs::read_to_string(root().join("packaging/newsyslog/com.kextwatch.conf")).unwrap();
    let rules: Vec<Vec<&str>> = conf
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    // The daemon's only file by default is the alert log (logs go to the unified log).
    assert_eq!(rules.len(), 1, "{rules:?}");
    let r = &rules[0];
    // newsyslog.conf(5): path, owner:group, mode, count, size (KiB), when, flags.
    assert_eq!(r.len(), 7, "{r:?}");
    assert_eq!(r[0], kextwatch::layout::ALERT_LOG);
    assert_eq!(r[1], "root:wheel");
    assert_eq!(r[2], "640", "as the daemon creates it");
    let count: u32 = r[3].parse().unwrap();
    let size_kib: u64 = r[4].parse().unwrap();
    assert!(count >= 1 && size_kib > 0, "bounded: {r:?}");
    // No signal (N): the daemon follows the new file itself; it writes no pid file to signal.
    assert!(r[6].contains('N'), "{r:?}");
}

#[test]
fn every_script_a_workflow_runs_is_in_the_repo_and_executable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = root().join(".github/workflows");
    let mut scripts = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap();
        for line in text.lines() {
            let Some(cmd) = line.trim().strip_prefix("run:") else {
                continue;
            };
            scripts.extend(
                cmd.split_whitespace()
                    .filter(|w| w.starts_with(".ci/") || w.contains(".sh"))
                    .map(str::to_string),
            );
        }
    }
    for s in [
        ".ci/run",
        "scripts/mac-smoke.sh",
        "scripts/mac-install-check.sh",
        "packaging/build-pkg.sh",
    ] {
        assert!(
            scripts.iter().any(|x| x == s),
            "no workflow runs {s}: {scripts:?}"
        );
    }
    for s in &scripts {
        let mode = std::fs::metadata(root().join(s))
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .permissions()
            .mode();
        assert!(mode & 0o111 != 0, "{s} is not executable");
    }
}
