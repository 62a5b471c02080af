//! KextPolicy: reading both layouts read-only, change detection, diff, persisted state, bad databases,
//! and detection on the changes.

use kextwatch_testkit as support;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kextwatch::alert::Alert;
use kextwatch::config::Config;
use kextwatch::detect::Engine;
use kextwatch::kextpolicy::{diff, PolicyChange, Poll, Poller, Watcher};
use support::kextpolicy as fx;

const NOW: i64 = 1_795_615_392_000_000_000;

fn snapshot(path: &Path) -> kextwatch::kextpolicy::Snapshot {
    match Poller::new(path).poll() {
        Poll::Changed(s) => s,
        other => panic!("{other:?}"),
    }
}

fn file_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

#[test]
fn reads_both_history_layouts() {
    let dir = tempfile::tempdir().unwrap();
    for cols in [7, 8] {
        let db = dir.path().join(format!("KextPolicy{cols}"));
        drop(fx::realistic(&db, cols));
        let s = snapshot(&db);
        assert_eq!(
            (s.approvals.len(), s.mdm.len(), s.history.len()),
            (3, 1, 4),
            "{cols} columns"
        );
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        let vbox = &s.history["/Library/Application Support/VirtualBox/VBoxDrv.kext"];
        assert_eq!(vbox.team_id.as_deref(), Some("VB5E2TV963"));
        assert_eq!(vbox.cdhash.is_some(), cols == 8);
        assert_eq!(s.history["/Library/Extensions/Legacy.kext"].team_id, None);
        let sym = &s.approvals[&(
            Some("9PTGMPNXZ2".into()),
            Some("com.symantec.kext.SymAPComm".into()),
        )];
        assert!(!sym.allowed);
        assert_eq!(s.mdm.values().next().unwrap().bundle_id, None);
    }
}

#[test]
fn tolerates_schema_drift_and_skips_badly_typed_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("KextPolicy");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(
        "CREATE TABLE kext_policy ( team_id TEXT, bundle_id TEXT, allowed BOOLEAN, developer_name TEXT, flags INTEGER, extra_future_col TEXT );
         CREATE TABLE kext_load_history_v3 ( path TEXT PRIMARY KEY, team_id TEXT, bundle_id TEXT, created_at TEXT, last_seen TEXT, flags INTEGER, cdhash TEXT, more TEXT );
         CREATE TABLE some_new_table ( x );
         CREATE TABLE kext_policy_mdm ( team_id TEXT, bundle_id TEXT, allowed BOOLEAN, payload_uuid TEXT );
         INSERT INTO kext_policy_mdm VALUES ('483DWKW443', NULL, 'true', '3C1F6F0A-6D0B-4D3E-9E57-0D6B3F0E2A11');
         INSERT INTO kext_policy_mdm VALUES ('ABCDE12345', NULL, 'maybe', NULL);
         INSERT INTO kext_policy VALUES ('VB5E2TV963', 'org.virtualbox.kext.VBoxDrv', 1, 'Oracle', 1, 'x');
         INSERT INTO kext_policy VALUES ('EG7KH642X6', 'com.vmware.kext.vmx86', X'00FF', 'VMware', 1, 'x');
         INSERT INTO kext_load_history_v3 VALUES (X'0102', 'VB5E2TV963', 'b', 'c', 'd', 0, NULL, NULL);
         INSERT INTO kext_load_history_v3 VALUES ('/Library/Extensions/A.kext', 'Z9Y8X7W6V5', 'com.a', '2026-11-01 00:00:00', '2026-11-02 00:00:00', 'not a number', NULL, NULL);
         INSERT INTO kext_load_history_v3 VALUES ('/Library/Extensions/B.kext', 'Z9Y8X7W6V5', 'com.b', '2026-11-01 00:00:00', '2026-11-02 00:00:00', '7', NULL, NULL);",
    )
    .unwrap();
    drop(c);
    let s = snapshot(&db);
    assert_eq!(s.approvals.len(), 1);
    assert_eq!(s.history.len(), 1, "{:?}", s.history);
    assert_eq!(s.history["/Library/Extensions/B.kext"].flags, Some(7));
    // One row of each table: a blob for a boolean, a blob path, text for flags, an unknown boolean.
    assert_eq!(s.skipped_rows, 4);
    assert_eq!(s.mdm.len(), 1);
    assert!(s.mdm[&(Some("483DWKW443".into()), None)].allowed);

    // A table an older macOS lacks is a warning, not an error.
    let older = dir.path().join("KextPolicy-older");
    let c = rusqlite::Connection::open(&older).unwrap();
    c.execute_batch("CREATE TABLE kext_policy ( team_id TEXT, bundle_id TEXT, allowed BOOLEAN, developer_name TEXT, flags INTEGER );")
        .unwrap();
    drop(c);
    let old = snapshot(&older);
    assert!(
        old.warnings
            .contains(&"table kext_policy_mdm is missing".to_string()),
        "{:?}",
        old.warnings
    );
    assert!(s
        .warnings
        .contains(&"column kext_load_history_v3.boot_uuid is missing".to_string()));
}

#[test]
fn reading_never_writes_or_creates() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("KextPolicy");
    let writer = fx::realistic(&db, 8); // kept open: the -wal holds uncheckpointed pages
    let wal = dir.path().join("KextPolicy-wal");
    let (db_before, wal_before) = (file_bytes(&db), file_bytes(&wal));
    assert!(!wal_before.is_empty());
    let mut p = Poller::new(&db);
    assert!(matches!(p.poll(), Poll::Changed(s) if s.history.len() == 4));
    assert!(matches!(p.poll(), Poll::Unchanged));
    drop(p);
    assert_eq!(file_bytes(&db), db_before, "database file changed");
    assert_eq!(file_bytes(&wal), wal_before, "WAL changed (a checkpoint?)");
    drop(writer);

    let missing = dir.path().join("nope/KextPolicy");
    assert!(matches!(
        Poller::new(&missing).poll(),
        Poll::Failed(kextwatch::kextpolicy::ReadError::Missing(_))
    ));
    assert!(!missing.exists());
    let missing = dir.path().join("KextPolicy-missing");
    Poller::new(&missing).poll();
    assert!(!missing.exists());
}

#[test]
fn unchanged_polls_read_no_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("KextPolicy");
    let writer = fx::realistic(&db, 8);
    let mut p = Poller::new(&db);
    for _ in 0..50 {
        p.poll();
    }
    assert_eq!((p.polls, p.reads), (50, 1));
    fx::approve(&writer, "ABCDE12345", "com.new.kext", "New Co", true);
    assert!(matches!(p.poll(), Poll::Changed(s) if s.approvals.len() == 4));
    assert!(matches!(p.poll(), Poll::Unchanged));
    assert_eq!(p.reads, 2);
}

#[test]
fn concurrent_wal_writer_while_polling() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("KextPolicy");
    drop(fx::realistic(&db, 8));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, done) = (db.clone(), done.clone());
        std::thread::spawn(move || {
            let c = rusqlite::Connection::open(&db).unwrap();
            c.busy_timeout(Duration::from_secs(5)).unwrap();
            for i in 0..200 {
                // One transaction per load, as syspolicyd records them.
                fx::loaded(
                    &c,
                    &format!("/Library/Extensions/W{i}.kext"),
                    Some("Z9Y8X7W6V5"),
                    &format!("com.w.{i}"),
                    "2026-11-21 10:00:00",
                    None,
                );
                if i % 20 == 0 {
                    c.pragma_update(None, "wal_checkpoint", "PASSIVE").ok();
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut w = Watcher::open(&db, None, NOW);
    assert!(w.poll(NOW).is_empty(), "first poll is the baseline");
    let baseline = w.snapshot().unwrap().history.len();
    let mut recorded = 0;
    let mut last_len = baseline;
    loop {
        // Read the flag before polling: the poll then sees every commit made before it was set.
        let finished = done.load(Ordering::SeqCst);
        for (c, _) in w.poll(NOW) {
            match c {
                PolicyChange::KextRecorded { .. } => recorded += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        let len = w.snapshot().unwrap().history.len();
        assert!(len >= last_len, "snapshots never go backwards");
        last_len = len;
        if finished {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    writer.join().unwrap();
    // Every row written after the baseline is reported exactly once, and none is missed.
    assert_eq!(last_len, 204);
    assert_eq!(
        baseline + recorded,
        204,
        "baseline {baseline}, recorded {recorded}"
    );
    assert!(
        w.poller().reads < w.poller().polls,
        "unchanged polls read nothing"
    );
    assert_eq!(w.busy, 0);
}

#[test]
fn diff_reports_each_kind_of_change() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("KextPolicy");
    let c = fx::realistic(&db, 8);
    let old = snapshot(&db);
    fx::approve(&c, "ABCDE12345", "com.new.kext", "New Co", true); // added
    c.execute(
        "UPDATE kext_policy SET allowed = 1 WHERE team_id = '9PTGMPNXZ2'",
        [],
    )
    .unwrap(); // flipped
    c.execute(
        "UPDATE kext_policy SET flags = 9 WHERE team_id = 'EG7KH642X6'",
        [],
    )
    .unwrap(); // flags
    c.execute("DELETE FROM kext_policy WHERE team_id = 'VB5E2TV963'", [])
        .unwrap(); // removed
    fx::mdm(
        &c,
        "Q1W2E3R4T5",
        Some("com.q.kext"),
        "AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE",
    );
    fx::loaded(
        &c,
        "/Library/Extensions/New.kext",
        Some("ABCDE12345"),
        "com.new.kext",
        "2026-11-21 10:00:00",
        Some("00"),
    );
    c.execute("UPDATE kext_load_history_v3 SET last_seen = '2026-11-21 11:00:00' WHERE path LIKE '%vmx86%'", []).unwrap();
    c.execute(
        "UPDATE kext_load_history_v3 SET team_id = 'ZZZZZZZZZZ' WHERE path LIKE '%Unknown%'",
        [],
    )
    .unwrap();
    let new = snapshot(&db);
    let kinds: Vec<String> = diff(&old, &new)
        .iter()
        .map(|c| {
            serde_json::to_value(c).unwrap()["change"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        kinds,
        // Each table in key order (team id, bundle id / path).
        [
            "approval_changed",
            "approval_added",
            "approval_changed",
            "approval_removed",
            "mdm_approval_added",
            "kext_recorded",
            "kext_identity_changed",
            "kext_loaded",
        ]
    );
    assert!(diff(&new, &new).is_empty());
}

#[test]
fn restart_reports_what_changed_while_down_and_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("KextPolicy");
    let state = dir.path().join("kextpolicy-state.sqlite");
    let c = fx::realistic(&db, 8);
    {
        let mut w = Watcher::open(&db, Some(&state), NOW);
        assert!(w.poll(NOW).is_empty(), "first run is a baseline");
    }
    fx::approve(&c, "ABCDE12345", "com.new.kext", "New Co", true); // while kextwatch is down
    {
        let mut w = Watcher::open(&db, Some(&state), NOW);
        let changes = w.poll(NOW);
        assert_eq!(changes.len(), 1);
        assert!(
            matches!(&changes[0].0, PolicyChange::ApprovalAdded { approval } if approval.team_id.as_deref() == Some("ABCDE12345"))
        );
        assert!(w.poll(NOW).is_empty());
    }
    let mut w = Watcher::open(&db, Some(&state), NOW);
    assert!(
        w.poll(NOW).is_empty(),
        "no re-alert on unchanged rows after a restart"
    );
}

#[test]
fn a_corrupt_state_file_is_moved_aside_and_watching_goes_on_from_a_new_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("KextPolicy");
    let state = dir.path().join("kextpolicy-state.sqlite");
    let c = fx::realistic(&db, 8);
    std::fs::write(&state, b"garbage where kextwatch's state was".repeat(200)).unwrap();
    let mut w = Watcher::open(&db, Some(&state), NOW);
    // Kept for inspection, stamped with the time (seconds) it was found broken.
    let aside = dir.path().join(format!(
        "kextpolicy-state.sqlite.unreadable-{}",
        NOW / 1_000_000_000
    ));
    assert!(std::fs::read(&aside).unwrap().starts_with(b"garbage"));
    assert!(w.poll(NOW).is_empty(), "a new baseline");
    fx::approve(&c, "ABCDE12345", "com.new.kext", "New Co", true);
    let changes = w.poll(NOW);
    assert!(
        matches!(&changes[..], [(PolicyChange::ApprovalAdded { .. }, _)]),
        "{changes:?}"
    );
    // The fresh state file works: a restart does not report it again.
    drop(w);
    let mut w = Watcher::open(&db, Some(&state), NOW);
    assert!(w.poll(NOW).is_empty());
    assert_eq!(w.save_failures, 0);
}

#[test]
fn a_state_file_that_cannot_be_saved_does_not_stop_detection() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("KextPolicy");
    let state = dir.path().join("kextpolicy-state.sqlite");
    let c = fx::realistic(&db, 8);
    let mut w = Watcher::open(&db, Some(&state), NOW);
    assert!(w.poll(NOW).is_empty());
    // Its disk fails under it: the file it holds open turns to garbage.
    std::fs::write(&state, b"not SQLite any more".repeat(500)).unwrap();
    fx::approve(&c, "ABCDE12345", "com.new.kext", "New Co", true);
    let changes = w.poll(NOW);
    assert!(
        matches!(&changes[..], [(PolicyChange::ApprovalAdded { .. }, _)]),
        "{changes:?}"
    );
    assert_eq!(w.save_failures, 1);
    // Retried at each poll; the next change is still seen.
    fx::approve(&c, "FGHIJ67890", "com.other.kext", "Other Co", true);
    assert_eq!(w.poll(NOW).len(), 1);
    assert_eq!(w.save_failures, 2);
}

#[test]
fn vanished_and_corrupt_databases_are_reported_once_and_polling_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("KextPolicy");
    drop(fx::realistic(&db, 8));
    let mut w = Watcher::open(&db, None, NOW);
    assert!(w.poll(NOW).is_empty());

    std::fs::rename(&db, dir.path().join("moved")).unwrap();
    let first = w.poll(NOW);
    assert!(
        matches!(&first[..], [(PolicyChange::DatabaseVanished { .. }, NOW)]),
        "{first:?}"
    );
    assert!(w.poll(NOW).is_empty(), "reported once");

    // Back, with one more approval: reported against the last snapshot seen.
    std::fs::rename(dir.path().join("moved"), &db).unwrap();
    let c = rusqlite::Connection::open(&db).unwrap();
    fx::approve(&c, "ABCDE12345", "com.new.kext", "New Co", true);
    drop(c);
    let back = w.poll(NOW);
    assert!(
        matches!(&back[..], [(PolicyChange::ApprovalAdded { .. }, _)]),
        "{back:?}"
    );

    std::fs::write(
        &db,
        b"this is not a SQLite database, just some bytes that look nothing like one".repeat(100),
    )
    .unwrap();
    let bad = w.poll(NOW);
    match &bad[..] {
        [(PolicyChange::DatabaseUnreadable { reason, .. }, _)] => {
            assert!(reason.contains("not a SQLite database"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(w.poll(NOW).is_empty(), "reported once");
}

#[test]
fn an_emptied_database_is_tampering_like_a_deleted_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("KextPolicy");
    drop(fx::realistic(&db, 8));
    let mut w = Watcher::open(&db, None, NOW);
    assert!(w.poll(NOW).is_empty());
    // Truncated in place (same inode), while the watcher holds a connection on it.
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&db)
        .unwrap();
    let changes = w.poll(NOW);
    let [(change @ PolicyChange::DatabaseVanished { emptied: true, .. }, NOW)] = &changes[..]
    else {
        panic!("{changes:?}")
    };
    assert!(w.poll(NOW).is_empty(), "reported once");
    // Not a row-by-row "approvals removed" story at low severity: one high alert.
    let alerts = alerts_for(std::slice::from_ref(change), Config::default_config());
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(
        (
            alerts[0]["rule"]["id"].as_str(),
            alerts[0]["kextwatch"]["severity"].as_str()
        ),
        (Some("KW-5007"), Some("high"))
    );
    assert!(support::reasons(&alerts[0]).contains("was emptied to 0 bytes"));
    // `policy show` on an empty copy says so instead of showing an empty policy.
    let e = kextwatch::kextpolicy::read_file(&db)
        .unwrap_err()
        .to_string();
    assert!(e.ends_with("KextPolicy: emptied (0 bytes)"), "{e}");
}

#[cfg(unix)]
#[test]
fn a_fifo_in_place_of_the_database_is_reported_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("KextPolicy");
    support::mkfifo(&db);
    let mut w = Watcher::open(&db, None, NOW);
    // A blocking open would hang here: no writer ever opens the FIFO.
    let changes = w.poll(NOW);
    match &changes[..] {
        [(PolicyChange::DatabaseUnreadable { reason, .. }, NOW)] => {
            assert!(reason.ends_with("not a regular file (a FIFO)"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_collected_copy_with_its_wal_is_read_with_what_the_wal_holds() {
    // syspolicyd keeps KextPolicy in WAL mode: recent approvals may live only in KextPolicy-wal.
    // A responder who copies both must see them (read as immutable, the WAL would be ignored).
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("KextPolicy");
    let c = fx::realistic(&live, 8);
    c.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
    fx::approve(&c, "ABCDE12345", "com.new.kext", "New Co", true);
    let copy = tempfile::tempdir().unwrap();
    for f in ["KextPolicy", "KextPolicy-wal"] {
        std::fs::copy(dir.path().join(f), copy.path().join(f)).unwrap();
    }
    drop(c);
    let snap = kextwatch::kextpolicy::read_file(&copy.path().join("KextPolicy")).unwrap();
    assert!(
        snap.approvals
            .values()
            .any(|a| a.bundle_id.as_deref() == Some("com.new.kext")),
        "{:?}",
        snap.approvals.keys()
    );
}

#[test]
fn locked_database_is_retried_not_reported() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("KextPolicy");
    let c = rusqlite::Connection::open(&db).unwrap();
    c.execute_batch(fx::DDL_COMMON).unwrap();
    c.execute_batch(fx::DDL_HISTORY_8).unwrap();
    // Rollback-journal mode: an exclusive lock blocks readers (WAL never does).
    c.execute_batch("BEGIN EXCLUSIVE; INSERT INTO settings VALUES ('x', 'y');")
        .unwrap();
    let mut w = Watcher::open(&db, None, NOW);
    assert!(w.poll(NOW).is_empty());
    assert_eq!(w.busy, 1);
    c.execute_batch("COMMIT").unwrap();
    assert!(w.poll(NOW).is_empty());
    assert!(w.snapshot().is_some());
}

fn alerts_for(changes: &[PolicyChange], config: Config) -> Vec<serde_json::Value> {
    let mut engine = Engine::new(config);
    let mut out: Vec<Alert> = Vec::new();
    for c in changes {
        engine.process_policy(c, NOW, &mut out);
    }
    engine.finish(&mut out);
    out.iter().map(support::alert_json).collect()
}

#[test]
fn policy_changes_raise_alerts_by_team_trust() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("KextPolicy");
    drop(fx::create(&db, 8));
    let empty = snapshot(&db);
    let db = dir.path().join("KextPolicy-full");
    drop(fx::realistic(&db, 8));
    let full = snapshot(&db);
    let alerts = alerts_for(&diff(&empty, &full), Config::default_config());
    let got: Vec<(&str, &str, &str)> = alerts
        .iter()
        .map(|a| {
            (
                a["rule"]["id"].as_str().unwrap(),
                a["kextwatch"]["severity"].as_str().unwrap(),
                a["event"]["action"].as_str().unwrap(),
            )
        })
        .collect();
    // Allowlisted VirtualBox and VMware approvals and loads raise nothing; Symantec's approval is a
    // denial; the MDM entry's payload is unknown and its team not allowlisted; an unknown team's load
    // is high; no team is critical.
    assert_eq!(
        got,
        [
            ("KW-5004", "high", "kextpolicy.mdm_approval_added"),
            ("KW-5005", "critical", "kextpolicy.kext_recorded"),
            ("KW-5005", "high", "kextpolicy.kext_recorded"),
        ],
        "{alerts:#?}"
    );
    assert!(alerts[1]["kextwatch"]["reasons"]
        .to_string()
        .contains("unsigned"));
    assert_eq!(
        alerts[2]["file"]["path"],
        "/Library/Extensions/Unknown.kext"
    );
    assert_eq!(alerts[2]["kextwatch"]["kext"]["team_id"], "Z9Y8X7W6V5");
    assert!(alerts[0].get("process").is_none());

    // Listing the payload and allowlisting the team makes the MDM entry expected.
    let mut cfg = Config::default_config();
    cfg.kextpolicy
        .known_mdm_payloads
        .push("3C1F6F0A-6D0B-4D3E-9E57-0D6B3F0E2A11".into());
    cfg.allowlist.team_ids.insert("483DWKW443".into());
    let alerts = alerts_for(&diff(&empty, &full), cfg);
    assert!(
        alerts.iter().all(|a| a["rule"]["id"] != "KW-5004"),
        "{alerts:#?}"
    );
}

#[test]
fn new_user_approval_of_unlisted_team_is_high_and_correlates_with_staging() {
    use support::eslogger::{cast, Capture};
    let approval = PolicyChange::ApprovalAdded {
        approval: kextwatch::kextpolicy::Approval {
            team_id: Some("ABCDE12345".into()),
            bundle_id: Some("com.evil.driver".into()),
            allowed: true,
            developer_name: Some("Evil Ltd".into()),
            flags: Some(1),
        },
    };
    let alone = alerts_for(std::slice::from_ref(&approval), Config::default_config());
    assert_eq!(
        (
            alone[0]["rule"]["id"].as_str(),
            alone[0]["kextwatch"]["severity"].as_str()
        ),
        (Some("KW-5001"), Some("high"))
    );

    // A bundle copied into /Library/Extensions 30 s before the approval: one correlated alert.
    let mut c = Capture::new(9);
    let cp = cast::terminal_zsh().exec_into("/bin/cp", "com.apple.cp");
    c.create(&cp, "/Library/Extensions", "Evil.kext");
    let ev = support::event(&c.out);
    let mut engine = Engine::new(Config::default_config());
    let mut out = Vec::new();
    engine.process(&ev, &mut out);
    engine.process_policy(&approval, ev.time_ns + 30_000_000_000, &mut out);
    let last = serde_json::to_value(out.last().unwrap()).unwrap();
    assert_eq!(last["rule"]["id"], "KW-9003");
    assert!(last["kextwatch"]["reasons"]
        .to_string()
        .contains("/Library/Extensions/Evil.kext was staged by /bin/cp"));
    assert_eq!(last["kextwatch"]["evidence"].as_array().unwrap().len(), 2);
}

#[test]
fn snapshot_enriches_kext_load_events_with_team_ids() {
    use support::eslogger::{cast, Capture};
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("KextPolicy");
    drop(fx::realistic(&db, 8));
    let snap = snapshot(&db);
    let mut c = Capture::new(9);
    let kmd = cast::kernelmanagerd();
    for id in [
        "com.vmware.kext.vmx86",
        "com.unknown.driver",
        "com.legacy.unsigned",
        "com.never.seen",
    ] {
        c.kextload(&kmd, id);
        c.after_ms(10);
    }
    let run = |with_snapshot: bool| -> Vec<(String, String)> {
        let mut engine = Engine::new(Config::default_config());
        if with_snapshot {
            engine.set_kext_policy(&snap);
        }
        let mut out = Vec::new();
        for line in c.out.lines() {
            engine.process(&support::event(line), &mut out);
        }
        out.iter()
            .map(|a| {
                (
                    a.kextwatch.kext.as_ref().unwrap().bundle_id.clone(),
                    a.severity.to_string(),
                )
            })
            .collect()
    };
    let with = run(true);
    assert_eq!(
        with,
        [
            // Recorded with a team that is neither allowlisted nor approved.
            ("com.unknown.driver".to_string(), "high".to_string()),
            ("com.legacy.unsigned".to_string(), "critical".to_string()),
            // No record, but MDM approves a whole team (483DWKW443): it may be one of theirs.
            ("com.never.seen".to_string(), "medium".to_string()),
        ]
    );
    // Without the snapshot, VMware's kext is only a bundle-id match (not an alert) and the others
    // are of unknown identity: medium, saying how to find out.
    let without = run(false);
    assert_eq!(
        without,
        [
            ("com.unknown.driver".to_string(), "medium".to_string()),
            ("com.legacy.unsigned".to_string(), "medium".to_string()),
            ("com.never.seen".to_string(), "medium".to_string()),
        ]
    );
}

#[test]
fn run_loop_delivers_changes_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("KextPolicy");
    let c = fx::realistic(&db, 8);
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = {
        let (db, stop) = (db.clone(), stop.clone());
        // The baseline is read before the loop starts, so the approval below is always a change
        // (written before the baseline, it would be part of it and never reported).
        let mut w = Watcher::open(&db, None, NOW);
        assert!(w.poll(NOW).is_empty(), "the first read is a baseline");
        std::thread::spawn(move || {
            w.run(
                Duration::from_millis(20),
                &stop,
                || NOW,
                |changes, snap, readable| {
                    tx.send((changes, snap.map(|s| s.rows()), readable))
                        .unwrap();
                },
            )
        })
    };
    fx::approve(&c, "ABCDE12345", "com.new.kext", "New Co", true);
    let (changes, rows, readable) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("change delivered");
    assert!(matches!(
        &changes[..],
        [(PolicyChange::ApprovalAdded { .. }, NOW)]
    ));
    assert_eq!((rows, readable), (Some(9), true));
    // Gone, then back unchanged: both are told, the second with no change at all, so a status
    // showing "NOT readable" clears.
    drop(c);
    std::fs::rename(&db, dir.path().join("away")).unwrap();
    let (changes, _, readable) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(matches!(
        &changes[..],
        [(PolicyChange::DatabaseVanished { .. }, NOW)]
    ));
    assert!(!readable);
    std::fs::rename(dir.path().join("away"), &db).unwrap();
    let (changes, _, readable) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(changes.is_empty() && readable, "{changes:?}");
    stop.store(true, Ordering::SeqCst);
    handle.join().unwrap();
}

#[test]
fn approval_after_sip_weakening_is_critical() {
    use support::eslogger::Capture;
    let mut c = Capture::new(9);
    c.in_terminal(
        "/usr/bin/csrutil",
        "com.apple.csrutil",
        &["csrutil", "disable"],
        "/",
    );
    let ev = support::event(&c.out);
    let approval = PolicyChange::ApprovalAdded {
        approval: kextwatch::kextpolicy::Approval {
            team_id: Some("ABCDE12345".into()),
            bundle_id: Some("com.evil.driver".into()),
            allowed: true,
            developer_name: None,
            flags: None,
        },
    };
    let mut engine = Engine::new(Config::default_config());
    let mut out = Vec::new();
    engine.process(&ev, &mut out);
    engine.process_policy(&approval, ev.time_ns + 60_000_000_000, &mut out);
    let last = serde_json::to_value(out.last().unwrap()).unwrap();
    assert_eq!(
        (
            last["rule"]["id"].as_str(),
            last["kextwatch"]["severity"].as_str()
        ),
        (Some("KW-9002"), Some("critical"))
    );
    assert!(last["kextwatch"]["reasons"]
        .to_string()
        .contains("follows `csrutil disable`"));
}

/// One poll's changes, without their times.
fn poll_changes(w: &mut Watcher) -> Vec<PolicyChange> {
    w.poll(NOW).into_iter().map(|c| c.0).collect()
}

/// (rule, severity, event.action) of each alert, for comparing with a table written by hand.
fn summary(alerts: &[serde_json::Value]) -> Vec<(String, String, String)> {
    alerts
        .iter()
        .map(|a| {
            (
                a["rule"]["id"].as_str().unwrap().to_string(),
                a["kextwatch"]["severity"].as_str().unwrap().to_string(),
                a["event"]["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn row(rule: &str, severity: &str, action: &str) -> (String, String, String) {
    (rule.into(), severity.into(), format!("kextpolicy.{action}"))
}

#[test]
fn every_kind_of_policy_change_is_reported_as_the_rule_table_says() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("KextPolicy");
    let c = fx::realistic(&db, 8);
    let mut w = Watcher::open(&db, None, NOW);
    assert!(w.poll(NOW).is_empty(), "baseline");

    // Approvals: Symantec's (denied) flags edited, VMware's revoked, VirtualBox's deleted. MDM: the
    // payload behind Jamf's team approval replaced. History: a new cdhash under the same team for
    // VirtualBox (allowlisted) and the unknown team's kext.
    c.execute_batch(
        "UPDATE kext_policy SET flags = 3 WHERE team_id = '9PTGMPNXZ2';
         UPDATE kext_policy SET allowed = 0 WHERE team_id = 'EG7KH642X6';
         DELETE FROM kext_policy WHERE team_id = 'VB5E2TV963';
         UPDATE kext_policy_mdm SET payload_uuid = '11111111-2222-3333-4444-555555555555';
         UPDATE kext_load_history_v3 SET cdhash = 'ffffffffffffffffffffffffffffffffffffffff'
           WHERE team_id IN ('VB5E2TV963', 'Z9Y8X7W6V5');",
    )
    .unwrap();
    let changes = poll_changes(&mut w);
    let alerts = alerts_for(&changes, Config::default_config());
    assert_eq!(
        summary(&alerts),
        [
            row("KW-5003", "low", "approval_changed"),
            row("KW-5002", "low", "approval_changed"),
            row("KW-5002", "low", "approval_removed"),
            // Unknown payload, team not allowlisted: two steps up from low.
            row("KW-5004", "high", "mdm_approval_changed"),
            // Same team, new cdhash: an update or a swap; unlisted team one step up.
            row("KW-5006", "low", "kext_identity_changed"),
            row("KW-5006", "medium", "kext_identity_changed"),
        ],
        "{alerts:#?}"
    );
    let reason = |i: usize| alerts[i]["kextwatch"]["reasons"].to_string();
    assert!(
        reason(0).contains("flags Some(1) -> Some(3)"),
        "{}",
        reason(0)
    );
    assert!(
        reason(1).contains("approval revoked (allowed changed to false): com.vmware.kext.vmx86")
    );
    assert!(reason(2).contains("approval removed from KextPolicy: org.virtualbox.kext.VBoxDrv"));
    assert!(reason(3).contains("payload 11111111-2222-3333-4444-555555555555"));
    assert!(reason(4).contains(
        "cdhash changed from 8d2f0a6b3c1e4f5a6b7c8d9e0f1a2b3c4d5e6f70 to ffffffffffffffffffffffffffffffffffffffff (same team"
    ));
    assert_eq!(
        alerts[5]["file"]["path"],
        "/Library/Extensions/Unknown.kext"
    );

    // The MDM entry removed; then the database vanishes; then it comes back unreadable.
    c.execute_batch("DELETE FROM kext_policy_mdm;").unwrap();
    drop(c);
    let mut changes = poll_changes(&mut w);
    // Deleted with its WAL (which still holds every page: our reader kept it from checkpointing).
    for suffix in ["", "-wal", "-shm"] {
        let from = dir.path().join(format!("KextPolicy{suffix}"));
        std::fs::rename(&from, dir.path().join(format!("moved{suffix}"))).unwrap();
    }
    changes.extend(poll_changes(&mut w));
    std::fs::write(&db, b"not a database".repeat(100)).unwrap();
    changes.extend(poll_changes(&mut w));
    let alerts = alerts_for(&changes, Config::default_config());
    assert_eq!(
        summary(&alerts),
        [
            row("KW-5004", "low", "mdm_approval_removed"),
            row("KW-5007", "high", "database_vanished"),
            row("KW-5007", "medium", "database_unreadable"),
        ],
        "{alerts:#?}"
    );
    assert!(alerts[1]["kextwatch"]["reasons"]
        .to_string()
        .contains("SIP-protected"));
}

#[test]
fn a_denied_approval_turned_allowed_is_a_new_approval() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("KextPolicy");
    let c = fx::realistic(&db, 8);
    let mut w = Watcher::open(&db, None, NOW);
    assert!(w.poll(NOW).is_empty(), "baseline");
    // Symantec's kext was recorded as not allowed; someone allows it.
    c.execute_batch("UPDATE kext_policy SET allowed = 1 WHERE team_id = '9PTGMPNXZ2';")
        .unwrap();
    let changes = poll_changes(&mut w);
    let alerts = alerts_for(&changes, Config::default_config());
    assert_eq!(
        summary(&alerts),
        [row("KW-5001", "high", "approval_changed")],
        "{alerts:#?}"
    );
    assert!(alerts[0]["kextwatch"]["reasons"].to_string().contains(
        "changed to allowed: approval of com.symantec.kext.SymAPComm by Symantec (team 9PTGMPNXZ2); the team is not allowlisted"
    ));
}

#[test]
fn an_mdm_approval_is_expected_only_from_a_known_payload_for_an_allowlisted_team() {
    let entry = |team: &str, payload: &str| PolicyChange::MdmApprovalAdded {
        approval: kextwatch::kextpolicy::MdmApproval {
            team_id: Some(team.into()),
            bundle_id: None,
            allowed: true,
            payload_uuid: Some(payload.into()),
        },
    };
    const KNOWN: &str = "3C1F6F0A-6D0B-4D3E-9E57-0D6B3F0E2A11";
    let mut cfg = Config::default_config();
    cfg.kextpolicy.known_mdm_payloads.push(KNOWN.into());
    let alerts = alerts_for(
        &[
            // Known payload, allowlisted team (VirtualBox): expected, no alert.
            entry("VB5E2TV963", KNOWN),
            // Known payload, team nobody allowlisted: one step up.
            entry("Z9Y8X7W6V5", KNOWN),
            // Unknown payload for the allowlisted team: one step up.
            entry("VB5E2TV963", "11111111-2222-3333-4444-555555555555"),
        ],
        cfg,
    );
    assert_eq!(
        summary(&alerts),
        [
            row("KW-5004", "medium", "mdm_approval_added"),
            row("KW-5004", "medium", "mdm_approval_added"),
        ],
        "{alerts:#?}"
    );
    assert!(alerts[0]["kextwatch"]["reasons"]
        .to_string()
        .contains("the team is not allowlisted"));
    assert!(alerts[1]["kextwatch"]["reasons"]
        .to_string()
        .contains("the payload is not one of the known MDM payloads"));
}

#[test]
fn a_recorded_load_of_a_staged_kext_is_one_correlated_alert() {
    use support::eslogger::{cast, Capture};
    let mut c = Capture::new(9);
    let cp = cast::terminal_zsh().exec_into("/bin/cp", "com.apple.cp");
    c.create(&cp, "/Library/Extensions", "Unknown.kext");
    let staged = support::event(&c.out);
    let record = |path: &str, team: &str, bundle: &str| PolicyChange::KextRecorded {
        record: kextwatch::kextpolicy::LoadRecord {
            path: path.into(),
            team_id: Some(team.into()),
            bundle_id: Some(bundle.into()),
            boot_uuid: Some(fx::BOOT.into()),
            created_at: Some("2026-11-25 14:03:42".into()),
            last_seen: Some("2026-11-25 14:03:42".into()),
            flags: Some(0),
            cdhash: None,
        },
    };
    let mut engine = Engine::new(Config::default_config());
    let mut out = Vec::new();
    engine.process(&staged, &mut out);
    let later = staged.time_ns + 30_000_000_000;
    engine.process_policy(
        &record(
            "/Library/Extensions/Unknown.kext",
            "Z9Y8X7W6V5",
            "com.unknown.driver",
        ),
        later,
        &mut out,
    );
    let got: Vec<(&str, &str)> = out
        .iter()
        .map(|a| (a.rule.id, a.severity.as_str()))
        .collect();
    assert_eq!(got, [("KW-2001", "medium"), ("KW-9001", "high")]);
    assert!(out[1]
        .reasons
        .iter()
        .any(|r| r.contains("/Library/Extensions/Unknown.kext was staged by /bin/cp")));
}
