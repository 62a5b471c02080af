//! Alerts and heartbeats as a SIEM receives them: ECS documents, field by field against the ECS
//! table in `tests/fixtures/ecs/fields.tsv`. (Every other test that reads JSON alerts runs the
//! same check; these cover what no other test produces and show the check itself can fail.)

use kextwatch_testkit as support;

use std::process::Command;

use kextwatch::alert::{ecs, Host};
use kextwatch::config::Config;
use kextwatch::detect::Engine;
use kextwatch::event::{Event, EventKind, Process};
use serde_json::Value;
use support::ecs::{assert_conforms, problems};
use support::eslogger::{cast, Capture};

const BIN: &str = env!("CARGO_BIN_EXE_kextwatch");
const SAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/kext-attack.jsonl");

fn replay_cli(input: &str, extra: &[&str]) -> Vec<Value> {
    let out = Command::new(BIN)
        .args(["replay", "-q", "--min-severity", "info", input])
        .args(extra)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(support::parse_alert)
        .collect()
}

/// A real alert of the sample (an exec: a process with arguments, ATT&CK techniques), as JSON,
/// to break in the tests of the check.
fn sample_alert() -> Value {
    replay_cli(SAMPLE, &["--host-name", "mac-17"])
        .into_iter()
        .find(|a| a["process"]["args"].is_array() && a["threat"].is_object())
        .expect("an exec alert in the sample")
}

#[test]
fn every_alert_of_the_sample_is_ecs_and_names_the_host_given() {
    let sample = replay_cli(SAMPLE, &["--host-name", "mac-17"]);
    assert!(sample.len() >= 9, "{}", sample.len());
    for a in &sample {
        // Named as asked: the Mac the capture came from.
        assert_eq!(
            (a["host"]["name"].as_str(), a["host"]["os"]["type"].as_str()),
            (Some("mac-17"), Some("macos"))
        );
        assert_eq!(a["agent"]["name"], "kextwatch");
        assert_eq!(a["ecs"]["version"], ecs::ECS_VERSION);
        assert_eq!(a["event"]["kind"], "alert");
        assert_eq!(a["event"]["module"], "kextwatch");
        // One readable line: the rule's name first.
        let message = a["message"].as_str().unwrap();
        assert!(
            message.starts_with(a["rule"]["name"].as_str().unwrap()),
            "{message}"
        );
    }
    // Each kind of action the sample raises alerts on has its ECS category.
    let class = |action: &str| {
        let a = sample
            .iter()
            .find(|a| a["event"]["action"] == action)
            .unwrap_or_else(|| panic!("no {action} alert"));
        (a["event"]["category"].clone(), a["event"]["type"].clone())
    };
    assert_eq!(
        class("exec"),
        (serde_json::json!(["process"]), serde_json::json!(["start"]))
    );
    assert_eq!(
        class("create"),
        (serde_json::json!(["file"]), serde_json::json!(["creation"]))
    );
    assert_eq!(
        class("kextload"),
        (serde_json::json!(["driver"]), serde_json::json!(["start"]))
    );
    assert_eq!(
        class("kextunload"),
        (serde_json::json!(["driver"]), serde_json::json!(["end"]))
    );
}

#[test]
fn without_a_host_name_a_replay_names_only_the_os() {
    let a = &replay_cli(SAMPLE, &[])[0];
    assert_eq!(
        a["host"],
        serde_json::json!({"os": {"type": "macos", "family": "macos", "platform": "darwin", "name": "macOS"}})
    );
}

#[test]
fn sip_policy_decision_and_test_alerts_and_heartbeats_are_ecs() {
    let mut config = Config::default_config();
    config.detection.min_severity = "info".parse().unwrap();
    let mut engine = Engine::new(config);
    engine.set_host(kextwatch::host::this_host());
    let mut out = Vec::new();
    // SIP fully off (CSR_ALLOW_UNTRUSTED_KEXTS and more): configuration, info.
    engine.process_sip(0x7f, 1_795_615_392_000_000_000, &mut out);
    // A kext load enforcement denied (an ES authorisation; eslogger has no such event).
    let denied = Event {
        time_ns: 1_795_615_393_000_000_000,
        version: 8,
        seq_num: None,
        global_seq_num: Some(7),
        mach_time: None,
        process: Process {
            executable: "/usr/libexec/kernelmanagerd".into(),
            signing_id: Some("com.apple.kernelmanagerd".into()),
            is_platform_binary: true,
            ..Process::default()
        },
        kind: EventKind::KextLoadDecision {
            identifier: "com.example.unknown".into(),
            allowed: false,
            reason: "not allowlisted".into(),
        },
    };
    engine.process(&denied, &mut out);
    engine.finish(&mut out);
    let docs: Vec<Value> = out.iter().map(support::alert_json).collect();
    let by_action = |action: &str| {
        docs.iter()
            .find(|d| d["event"]["action"] == action)
            .unwrap_or_else(|| panic!("no {action}: {docs:#?}"))
    };
    let sip = by_action("sip-state");
    assert_eq!(
        sip["event"]["category"],
        serde_json::json!(["configuration"])
    );
    assert!(sip.get("process").is_none());
    let decision = by_action("kextload-decision");
    assert_eq!(
        decision["event"]["category"],
        serde_json::json!(["driver", "intrusion_detection"])
    );
    assert_eq!(decision["event"]["type"], serde_json::json!(["denied"]));
    // The daemon's alerts name this machine.
    let hostname = gethostname::gethostname().to_string_lossy().into_owned();
    assert_eq!(decision["host"]["hostname"], hostname.as_str());

    let test = support::alert_json(&kextwatch::alert::test_alert(
        "2026-11-25T14:03:12Z".into(),
        Host::named("mac-17"),
    ));
    assert_eq!(test["kextwatch"]["test"], true);
    assert_eq!(
        test["event"]["category"],
        serde_json::json!(["intrusion_detection"])
    );
    assert!(
        test.get("threat").is_none(),
        "no technique, no threat object"
    );

    let (_, summary) = support::run_with(b"", Config::default_config());
    let mut beat = ecs::Beat::new_run(Some("6F1E2D3C-0000-4000-8000-000000000001".into()));
    beat.advance();
    let hb = summary.heartbeat("replay", Some(true), 1).document(
        "2026-11-25T14:03:12Z",
        &Host::named("mac-17"),
        beat.advance(),
    );
    assert_conforms(&hb);
    assert_eq!(hb["event"]["kind"], "metric");
    // The dead-man switch's fields: which run, which beat of it, which boot.
    assert_eq!(hb["event"]["sequence"], 2);
    assert_eq!(hb["agent"]["ephemeral_id"], beat.run_id.as_str());
    assert_eq!(
        hb["host"]["boot"]["id"],
        "6F1E2D3C-0000-4000-8000-000000000001"
    );
    assert_ne!(
        ecs::Beat::new_run(None).run_id,
        beat.run_id,
        "each run has its own id"
    );
    assert_eq!(hb["host"]["name"], "mac-17");
    assert_eq!(hb["kextwatch"]["sources"]["replay"]["lines"], 0);
}

#[test]
fn every_action_kextwatch_names_has_an_ecs_class_that_fits() {
    let actions = [
        "exec",
        "create",
        "write",
        "close",
        "rename",
        "unlink",
        "setmode",
        "setowner",
        "setextattr",
        "deleteextattr",
        "setflags",
        "setacl",
        "utimes",
        "truncate",
        "link",
        "clone",
        "kextload",
        "kextunload",
        "fork",
        "exit",
        "kextpolicy.approval_added",
        "kextpolicy.approval_removed",
        "kextpolicy.approval_changed",
        "kextpolicy.mdm_approval_added",
        "kextpolicy.mdm_approval_removed",
        "kextpolicy.mdm_approval_changed",
        "kextpolicy.kext_recorded",
        "kextpolicy.kext_loaded",
        "kextpolicy.kext_identity_changed",
        "kextpolicy.database_vanished",
        "kextpolicy.database_unreadable",
        "sip-state",
        "test-alert",
        "signal",
        "settime",
        "config-reload",
        "start-check",
        "profile_remove",
        "tcc_modify",
    ];
    let mut doc = sample_alert();
    for action in actions {
        let c = ecs::class_of(action);
        doc["event"]["action"] = action.into();
        doc["event"]["category"] = serde_json::json!(c.category);
        doc["event"]["type"] = serde_json::json!(c.types);
        assert!(problems(&doc).is_empty(), "{action}: {:?}", problems(&doc));
    }
    for allowed in [true, false] {
        let c = ecs::decision_class(allowed);
        doc["event"]["category"] = serde_json::json!(c.category);
        doc["event"]["type"] = serde_json::json!(c.types);
        assert!(problems(&doc).is_empty(), "{:?}", problems(&doc));
    }
}

/// The defects the check exists for, each put into a conforming alert: each is reported.
#[test]
fn the_check_rejects_what_is_not_ecs() {
    let good = sample_alert();
    assert_conforms(&good);
    type Breaker = Box<dyn Fn(&mut Value)>;
    let broken: Vec<(&str, Breaker)> = vec![
        (
            "top-level severity",
            Box::new(|d| d["severity"] = "high".into()),
        ),
        (
            "top-level reasons",
            Box::new(|d| d["reasons"] = serde_json::json!(["x"])),
        ),
        (
            "tty as a string",
            Box::new(|d| d["process"]["tty"] = "/dev/ttys003".into()),
        ),
        (
            "cdhash under code_signature",
            Box::new(|d| d["process"]["code_signature"]["cdhash"] = "ab".into()),
        ),
        (
            "file.source_path",
            Box::new(|d| d["file"]["source_path"] = "/tmp/a".into()),
        ),
        (
            "a sub-technique as a technique",
            Box::new(|d| d["threat"]["technique"]["id"][0] = "T1547.006".into()),
        ),
        (
            "names not parallel to ids",
            Box::new(|d| d["threat"]["tactic"]["name"] = serde_json::json!([])),
        ),
        (
            "event.kind heartbeat",
            Box::new(|d| d["event"]["kind"] = "heartbeat".into()),
        ),
        (
            "a type the category does not expect",
            Box::new(|d| {
                d["event"]["category"] = serde_json::json!(["file"]);
                d["event"]["type"] = serde_json::json!(["start"]);
            }),
        ),
        (
            "a category ECS does not allow",
            Box::new(|d| d["event"]["category"] = serde_json::json!(["kext"])),
        ),
        (
            "a label as event.severity",
            Box::new(|d| d["event"]["severity"] = "high".into()),
        ),
        (
            "event.severity not the label's number",
            Box::new(|d| d["event"]["severity"] = 5.into()),
        ),
        (
            "a scalar where ECS wants an array",
            Box::new(|d| d["event"]["category"] = "process".into()),
        ),
        (
            "an array where ECS wants one value",
            Box::new(|d| d["process"]["pid"] = serde_json::json!([1, 2])),
        ),
        (
            "a pid as a string",
            Box::new(|d| d["process"]["pid"] = "4120".into()),
        ),
        (
            "a null ECS field",
            Box::new(|d| d["process"]["code_signature"]["team_id"] = Value::Null),
        ),
        (
            "no message",
            Box::new(|d| {
                d.as_object_mut().unwrap().remove("message");
            }),
        ),
        (
            "an unparsable @timestamp",
            Box::new(|d| d["@timestamp"] = "yesterday".into()),
        ),
    ];
    for (what, break_it) in broken {
        let mut doc = good.clone();
        break_it(&mut doc);
        assert!(!problems(&doc).is_empty(), "{what} passed the check");
    }
}

#[test]
fn a_cef_line_names_the_host_a_replay_was_given() {
    let mut c = Capture::new(9);
    c.kextload(&cast::kernelmanagerd(), "com.example.unknown");
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("capture.jsonl");
    std::fs::write(&input, &c.out).unwrap();
    let out = Command::new(BIN)
        .args(["replay", "-q", "--format", "cef", "--host-name", "mac-17"])
        .arg(&input)
        .output()
        .unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(line.contains(" dvchost=mac-17 "), "{line}");
    // The reason names the kext, so the message does not repeat it.
    assert!(
        line.contains(
            " msg=Kernel extension loaded: kext com.example.unknown is not in the allowlist"
        ),
        "{line}"
    );
}
