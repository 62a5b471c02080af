//! Property tests: hostile input never panics the reader, decoder or engine, and every line is
//! accounted for (blank, decoded, skipped or malformed). Longer runs: PROPTEST_CASES=200000.

use kextwatch_testkit as support;

use kextwatch::config::Config;
use kextwatch::offline::Summary;
use proptest::prelude::*;
use serde_json::Value;
use support::eslogger::{cast, Capture, Proc};

/// A capture that exercises every decoded event type, and the real eslogger lines of
/// tests/fixtures/eslogger-public (escaped slashes, `stat` objects, array audit tokens).
fn seed_lines() -> Vec<String> {
    let mut c = Capture::new(9);
    let zsh = cast::terminal_zsh();
    let cp = zsh.exec_into("/bin/cp", "com.apple.cp");
    c.in_terminal(
        "/usr/bin/csrutil",
        "com.apple.csrutil",
        &["csrutil", "disable"],
        "/",
    );
    c.copy_bundle(&cp, "/Library/Extensions", "A");
    c.rename(&cp, "/tmp/B.kext", "/Library/Extensions", "B.kext");
    c.unlink(&cp, "/Library/Extensions/C.kext", "/Library/Extensions");
    c.setmode(&cp, "/Library/Extensions/A.kext", 0o755);
    c.setowner(&cp, "/Library/Extensions/A.kext", 0, 0);
    c.setextattr(&cp, "/Library/Extensions/A.kext", "com.apple.quarantine");
    c.kextload(&cast::kernelmanagerd(), "com.a.A");
    c.kextunload(&cast::kernelmanagerd(), "com.apple.iokit.EndpointSecurity");
    c.fork(
        &cast::launchd(),
        &Proc::apple(5, 1, "/bin/ls", "com.apple.ls"),
    );
    c.exit(&cast::slack());
    let mut c10 = Capture::new(10);
    c10.exec(
        &zsh,
        &zsh.exec_into("/sbin/kextload", "com.apple.kextload"),
        &["kextload", "/tmp/x.kext"],
        "/",
    );
    let public = include_str!("fixtures/eslogger-public/mullvadvpn-app.jsonl");
    c.out
        .lines()
        .chain(c10.out.lines())
        .chain(public.lines())
        .map(String::from)
        .collect()
}

fn replay_bytes(input: &[u8]) -> Summary {
    support::run_with(input, Config::default_config()).1
}

fn accounted(s: &Summary) -> bool {
    let i = &s.input;
    i.lines == i.blank + i.decoded + i.skipped() + i.malformed
}

/// Replace the JSON at a random path of `v` with `new`.
fn replace_at(v: &mut Value, pick: usize, new: Value) {
    let stop = pick % 3 == 0;
    let child = match v {
        Value::Object(m) if !stop && !m.is_empty() => {
            let n = m.len();
            m.values_mut().nth(pick % n)
        }
        Value::Array(a) if !stop && !a.is_empty() => {
            let n = a.len();
            a.get_mut(pick % n)
        }
        _ => None,
    };
    match child {
        Some(c) => replace_at(c, pick / 3, new),
        None => *v = new,
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        Just(Value::from("/Library/Extensions/../x.kext")),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let s = replay_bytes(&bytes);
        prop_assert!(accounted(&s));
    }

    #[test]
    fn mutated_real_lines_never_panic(
        line in 0usize..22,
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..16),
        cut in any::<Option<usize>>(),
    ) {
        let lines = seed_lines();
        let mut bytes = lines[line % lines.len()].clone().into_bytes();
        for (pos, byte, op) in edits {
            if bytes.is_empty() { break; }
            let p = pos % bytes.len();
            match op {
                0 => bytes[p] = byte,
                1 => { bytes.remove(p); }
                _ => bytes.insert(p, byte),
            }
        }
        if let Some(c) = cut {
            if !bytes.is_empty() { bytes.truncate(c % bytes.len()); }
        }
        let mut input = lines.join("\n").into_bytes();
        input.push(b'\n');
        input.extend_from_slice(&bytes);
        let s = replay_bytes(&input);
        prop_assert!(accounted(&s));
        // The intact lines before the mutated one are all still analysed.
        prop_assert!(s.input.decoded + s.input.skipped() >= lines.len() as u64);
    }

    #[test]
    fn wrong_types_anywhere_never_panic(line in 0usize..22, pick in any::<usize>(), new in arb_json()) {
        let lines = seed_lines();
        let mut v: Value = serde_json::from_str(&lines[line % lines.len()]).unwrap();
        replace_at(&mut v, pick, new);
        let input = serde_json::to_string(&v).unwrap();
        let s = replay_bytes(input.as_bytes());
        prop_assert!(accounted(&s));
        prop_assert_eq!(s.input.lines, 1);
    }
}

#[test]
fn seed_lines_all_decode() {
    let lines = seed_lines();
    let s = replay_bytes(lines.join("\n").as_bytes());
    assert_eq!(s.input.malformed, 0);
    assert_eq!(s.input.lines, lines.len() as u64);
}
