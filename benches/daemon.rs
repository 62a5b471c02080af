//! The running daemon (`kextwatch run --source replay:FIFO`, file output): sustained events/s beside
//! the replay command on the same events, event-to-alert latency (p50/p99), and peak RSS at 1x and 4x
//! the stream. Linux (FIFO, /proc).
//!
//! `cargo bench --bench daemon` (events: KEXTWATCH_BENCH_EVENTS, default 500,000).

use kextwatch_testkit::eslogger;
use kextwatch_testkit::stream;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kextwatch");

fn config(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("k.toml");
    std::fs::write(
        &p,
        format!(
            "[kextpolicy]\nenabled = false\n[daemon]\nstate_dir = \"{0}/state\"\nevent_queue = 65536\n[[output]]\ntype = \"file\"\npath = \"{0}/alerts.jsonl\"\n",
            dir.display()
        ),
    )
    .unwrap();
    p
}

fn start(dir: &Path) -> (Child, std::path::PathBuf) {
    let fifo = dir.join("events");
    let _ = std::fs::remove_file(&fifo);
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(config(dir))
        .arg("--source")
        .arg(format!("replay:{}", fifo.display()))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    (child, fifo)
}

fn hwm_kb(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:").map(|v| v.trim().to_string()))
        })
        .unwrap_or_else(|| "n/a".into())
}

fn status(dir: &Path) -> serde_json::Value {
    std::fs::read_to_string(dir.join("state/status.json"))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// Wait for `child` to exit; the CPU time (user + system) it used, in seconds.
fn wait_cpu(child: std::process::Child) -> f64 {
    let mut status = 0;
    // SAFETY: a zeroed rusage is valid, and wait4 fills it for our own child, which is then reaped
    // (the Child is dropped without waiting again).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as libc::pid_t;
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(rc, pid, "wait4");
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Feed the stream through the daemon; (seconds from the first byte to a drained exit, peak RSS,
/// dropped, CPU seconds). The stream is generated beforehand so only the daemon is timed.
fn through_daemon(data: &str) -> (f64, String, u64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let (child, fifo) = start(dir.path());
    let t = Instant::now();
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
        f.write_all(data.as_bytes()).unwrap();
    }
    let rss = hwm_kb(child.id());
    // SIGTERM drains the queue through detection and the sinks, then exits.
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let cpu = wait_cpu(child);
    let secs = t.elapsed().as_secs_f64();
    let s = status(dir.path());
    (secs, rss, s["events_dropped"].as_u64().unwrap_or(0), cpu)
}

fn main() {
    let n: u64 = std::env::var("KEXTWATCH_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().unwrap();

    let mut data = String::new();
    stream::generate(n, |chunk| data.push_str(chunk));
    // The replay command on the same events, as the baseline.
    let file = dir.path().join("stream.jsonl");
    std::fs::write(&file, &data).unwrap();
    let t = Instant::now();
    let out = Command::new(BIN)
        .args(["replay", "-q", "--config"])
        .arg(config(dir.path()))
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let replay_secs = t.elapsed().as_secs_f64();
    drop(std::fs::remove_file(&file));

    let (secs, rss1, dropped, cpu) = through_daemon(&data);
    let data4 = data.repeat(4);
    drop(data);
    let (_, rss4, _, _) = through_daemon(&data4);
    drop(data4);

    // Latency: one relevant event at a time, stamped with the wall clock as it is written; the time
    // the alert line appears in the file minus that stamp.
    let ldir = tempfile::tempdir().unwrap();
    let (mut child, fifo) = start(ldir.path());
    let alerts = ldir.path().join("alerts.jsonl");
    let mut writer = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let mut latencies = Vec::new();
    let zsh = eslogger::cast::terminal_zsh();
    for i in 0..300 {
        let mut c = eslogger::Capture::new(7);
        c.now_ns = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64;
        c.exec(
            &zsh,
            &zsh.exec_into("/usr/bin/csrutil", "com.apple.csrutil"),
            &["csrutil", "disable", &i.to_string()],
            "/",
        );
        let sent = Instant::now();
        writer.write_all(c.out.as_bytes()).unwrap();
        writer.flush().unwrap();
        loop {
            let lines = std::fs::read_to_string(&alerts)
                .map(|t| t.lines().count())
                .unwrap_or(0);
            if lines > i {
                latencies.push(sent.elapsed());
                break;
            }
            assert!(
                sent.elapsed() < Duration::from_secs(10),
                "no alert for event {i}"
            );
            std::hint::spin_loop();
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(writer);
    Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    child.wait().unwrap();
    latencies.sort();
    let p = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];

    println!("{n} events (full process objects, 99.9 % noise), same events, one run:");
    println!(
        "  kextwatch replay FILE (file output)       {:>10.0} events/s",
        n as f64 / replay_secs
    );
    println!(
        "  kextwatch run, replay:FIFO (file output)  {:>10.0} events/s  ({dropped} dropped)",
        n as f64 / secs
    );
    println!(
        "  daemon CPU (user + system): {:.2} s per 100,000 events",
        cpu * 100_000.0 / n as f64
    );
    println!(
        "  event to alert written: p50 {:.2?}, p99 {:.2?} (300 alerts, one at a time)",
        p(0.5),
        p(0.99)
    );
    println!(
        "  daemon peak RSS: {rss1} at {n} events, {rss4} at {} events",
        4 * n
    );
}
