//! KextPolicy polling cost: a poll of an unchanged 10,000-row database versus a full read of it, side
//! by side in one run, and the time to diff two 10,000-row snapshots.
//!
//! `cargo bench --bench kextpolicy_poll`

use kextwatch_testkit::kextpolicy as fixture;

use std::time::{Duration, Instant};

use kextwatch::kextpolicy::{diff, open_read_only, read_snapshot, Poll, Poller};

const ROWS: usize = 10_000;

fn per_call(iterations: u32, mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    for _ in 0..iterations {
        f();
    }
    t.elapsed() / iterations
}

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("KextPolicy");
    let c = fixture::create(&db, 8);
    c.execute_batch("BEGIN").unwrap();
    // 10,000 rows across the three tables, as on a long-lived Mac with many kexts and loads.
    for i in 0..2_000 {
        fixture::approve(
            &c,
            &format!("T{i:09}"),
            &format!("com.vendor{i}.kext"),
            "Vendor, Inc.",
            i % 7 != 0,
        );
    }
    for i in 0..1_000 {
        fixture::mdm(
            &c,
            &format!("M{i:09}"),
            Some(&format!("com.mdm{i}.kext")),
            "3C1F6F0A-6D0B-4D3E-9E57-0D6B3F0E2A11",
        );
    }
    for i in 0..7_000 {
        fixture::loaded(
            &c,
            &format!("/Library/Extensions/K{i}.kext"),
            Some(&format!("T{:09}", i % 2_000)),
            &format!("com.vendor{}.kext", i % 2_000),
            "2026-11-20 09:00:12",
            Some("8d2f0a6b3c1e4f5a6b7c8d9e0f1a2b3c4d5e6f70"),
        );
    }
    c.execute_batch("COMMIT").unwrap();
    // syspolicyd keeps its connection open; so does this writer.

    let mut poller = Poller::new(&db);
    let first = match poller.poll() {
        Poll::Changed(s) => s,
        other => panic!("{other:?}"),
    };
    assert_eq!(first.rows(), ROWS);

    let unchanged = per_call(2_000, || assert!(matches!(poller.poll(), Poll::Unchanged)));
    let conn = open_read_only(&db).unwrap();
    let full = per_call(20, || {
        let s = read_snapshot(&conn, &db).unwrap();
        assert_eq!(s.rows(), ROWS);
    });
    println!("KextPolicy with {ROWS} rows, same run:");
    println!("  unchanged poll (stat + PRAGMA data_version): {unchanged:>10.2?}");
    println!("  full read of all rows:                       {full:>10.2?}");
    println!(
        "  unchanged poll costs {:.4} % of a full read ({:.0}x cheaper)",
        unchanged.as_secs_f64() / full.as_secs_f64() * 100.0,
        full.as_secs_f64() / unchanged.as_secs_f64()
    );

    // A second snapshot with 1 % of rows changed.
    c.execute_batch(
        "UPDATE kext_load_history_v3 SET last_seen = '2026-11-21 10:00:00' WHERE rowid % 100 = 0",
    )
    .unwrap();
    let second = match poller.poll() {
        Poll::Changed(s) => s,
        other => panic!("{other:?}"),
    };
    let mut n = 0;
    let d = per_call(50, || n = diff(&first, &second).len());
    println!("  diff of two {ROWS}-row snapshots ({n} changes): {d:.2?}");
}
