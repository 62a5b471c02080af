//! kextwatch's test fixtures, shared by every integration test and bench and compiled once:
//! eslogger captures in the full format (`eslogger`), realistic event streams (`stream`), KextPolicy
//! databases from the real schema (`kextpolicy`), a real rsyslog receiver (`rsyslog`), the ECS field
//! check (`ecs`), and helpers that run captures through the engine.

pub mod ecs;
pub mod eslogger;
pub mod kextpolicy;
pub mod rsyslog;
pub mod stream;

use std::io::Write;
use std::sync::{Arc, Mutex};

use kextwatch::config::{AlertFormat, Config};
use kextwatch::detect::Engine;
use kextwatch::offline::{replay, Summary};
use kextwatch::output::Outputs;
use serde_json::Value;

/// Make a FIFO at `path` (tests of code that must not wait on one).
#[cfg(unix)]
pub fn mkfifo(path: &std::path::Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path we own.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) },
        0,
        "mkfifo {}",
        path.display()
    );
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Replay `input` with `config`; the alerts as JSON values, and the summary.
///
/// Every capture a test replays this way is also replayed with decoding spread over threads in
/// tiny batches (a line or two each, so batch boundaries fall everywhere), and must give the same alerts and counts.
pub fn run_with(input: &[u8], config: Config) -> (Vec<Value>, Summary) {
    let (bytes, summary) = replay_to_bytes(input, config.clone(), None);
    let tiny = kextwatch::source::lines::Batching {
        workers: 3,
        bytes: 256,
    };
    let (parallel_bytes, parallel) = replay_to_bytes(input, config, Some(tiny));
    if parallel_bytes != bytes {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let (seq, par) = (text(&bytes), text(&parallel_bytes));
        let first = seq.lines().zip(par.lines()).position(|(a, b)| a != b);
        panic!(
            "decoding in parallel changed the alerts (first differing alert: {first:?})\nsequential:\n{seq}\nparallel:\n{par}"
        );
    }
    assert_eq!(
        parallel.input, summary.input,
        "decoding in parallel changed the counts"
    );
    assert_eq!(parallel.engine, summary.engine);
    assert_eq!(parallel.alerts_by_severity, summary.alerts_by_severity);
    let alerts = String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(parse_alert)
        .collect();
    (alerts, summary)
}

/// The alerts `replay` (or, with `batching`, `replay_parallel`) writes for `input`, as bytes.
fn replay_to_bytes(
    input: &[u8],
    config: Config,
    batching: Option<kextwatch::source::lines::Batching>,
) -> (Vec<u8>, Summary) {
    let buf = Shared::default();
    let mut outputs = Outputs::from_writers(vec![(
        "test".into(),
        AlertFormat::Json,
        Box::new(buf.clone()),
    )]);
    let engine = Engine::new(config);
    let summary = match batching {
        None => replay(input, engine, None, &mut outputs, None),
        Some(b) => kextwatch::offline::replay_parallel(input, engine, None, &mut outputs, None, b),
    }
    .expect("replay");
    drop(outputs);
    let bytes = buf.0.lock().unwrap().clone();
    (bytes, summary)
}

/// One JSON alert line, checked against ECS: every test that reads alerts checks their fields.
pub fn parse_alert(line: &str) -> Value {
    let v: Value = serde_json::from_str(line).expect("alert line is JSON");
    ecs::assert_conforms(&v);
    v
}

/// An alert as its JSON document, checked against ECS.
pub fn alert_json(a: &kextwatch::alert::Alert) -> Value {
    let v = serde_json::to_value(a).unwrap();
    ecs::assert_conforms(&v);
    v
}

/// Replay with the shipped default config.
pub fn run(input: &str) -> Vec<Value> {
    run_with(input.as_bytes(), Config::default_config()).0
}

/// Replay with the shipped config at a different minimum severity.
pub fn run_min(input: &str, min: &str) -> Vec<Value> {
    let mut c = Config::default_config();
    c.detection.min_severity = min.parse().unwrap();
    run_with(input.as_bytes(), c).0
}

pub fn rule(a: &Value) -> &str {
    a["rule"]["id"].as_str().unwrap()
}

pub fn severity(a: &Value) -> &str {
    a["kextwatch"]["severity"].as_str().unwrap()
}

pub fn reasons(a: &Value) -> String {
    a["kextwatch"]["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect::<Vec<_>>()
        .join(" | ")
}

/// The most specific ATT&CK ids: each sub-technique, and each technique without one.
pub fn techniques(a: &Value) -> Vec<&str> {
    fn ids(v: &Value) -> Vec<&str> {
        v.as_array()
            .map(|a| a.iter().map(|t| t.as_str().unwrap()).collect())
            .unwrap_or_default()
    }
    let technique = &a["threat"]["technique"];
    let subs = ids(&technique["subtechnique"]["id"]);
    let mut out: Vec<&str> = ids(&technique["id"])
        .into_iter()
        .filter(|t| !subs.iter().any(|s| s.starts_with(&format!("{t}."))))
        .collect();
    out.extend(subs);
    out
}

/// Decode one eslogger line (any event type) into an event.
pub fn event(line: &str) -> kextwatch::event::Event {
    use kextwatch::event::AllEvents;
    use kextwatch::source::eslogger::{decode_line, Decoded};
    match decode_line(line.trim_end(), &AllEvents) {
        Ok(Decoded::Event(ev)) => *ev,
        other => panic!("not an event: {other:?}"),
    }
}
