//! The offline jobs: `kextwatch replay` (eslogger JSON in, alerts out, through the same decoder and
//! engine the daemon uses) and `kextwatch policy diff` (two KextPolicy copies in, the alerts their
//! difference raises). Each returns a summary; printing it is the CLI's job.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::Instant;

use crate::alert::{Alert, Severity};
use crate::detect::{Engine, EngineStats, KextInterest};
use crate::enrich::BundleEnricher;
use crate::event::Interest;
use crate::kextpolicy::{change_time, diff, PolicyChange, Snapshot};
use crate::output::{OutputError, Outputs, SinkStats};
use crate::source::lines::{
    classify, decode_in_parallel, Batching, Classified, EventDecoder, InputStats, LineReader,
    MAX_LINE,
};
use crate::wallclock::now_rfc3339;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read input: {0}")]
    Read(#[source] std::io::Error),
    #[error(transparent)]
    Output(#[from] OutputError),
}

/// What one replay did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub input: InputStats,
    pub engine: EngineStats,
    pub alerts_by_severity: BTreeMap<Severity, u64>,
    /// Syslog sinks' counters at the end.
    pub sinks: Vec<SinkStats>,
}

impl Summary {
    pub fn alerts(&self) -> u64 {
        self.alerts_by_severity.values().sum()
    }

    /// What a heartbeat reports of this replay so far. `kextpolicy_readable` is `None` when no
    /// KextPolicy is watched.
    pub fn heartbeat(
        &self,
        source: &str,
        kextpolicy_readable: Option<bool>,
        config_generation: u64,
    ) -> crate::output::HeartbeatCounters {
        let i = &self.input;
        crate::output::HeartbeatCounters {
            source: source.to_string(),
            source_state: None,
            lines: i.lines,
            events_analysed: i.decoded,
            events_skipped: i.skipped(),
            malformed: i.malformed,
            drops_seq_gaps: i.seq_gap_events,
            alerts: self
                .alerts_by_severity
                .iter()
                .map(|(s, n)| (s.as_str().to_string(), *n))
                .collect(),
            folded: self.engine.folded,
            sinks: self.sinks.clone(),
            kextpolicy_readable,
            config_generation,
            ..Default::default()
        }
    }
}

/// How long a replay waits at the end for syslog sinks to deliver what they spooled.
const FINISH_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// A progress display beside the replay (a bar on the terminal).
pub trait Progress {
    /// Bytes consumed so far (called now and then).
    fn position(&mut self, bytes: u64);
    /// Run `write` with the display out of the way: alerts may go to the same terminal, and a bar
    /// drawn between them would leave fragments in the scrollback.
    fn around_output(
        &mut self,
        write: &mut dyn FnMut() -> Result<(), OutputError>,
    ) -> Result<(), OutputError>;
}

/// Replay eslogger lines through `engine` (built from the config, optionally with a KextPolicy
/// snapshot) into `outputs`.
///
/// Line by line on this thread: for standard input and FIFOs, each alert as soon as its line
/// arrives. For a file, [`replay_parallel`] is faster and gives the same alerts and counts.
pub fn replay(
    input: impl BufRead,
    engine: Engine,
    enricher: Option<&mut BundleEnricher>,
    outputs: &mut Outputs,
    progress: Option<&mut dyn Progress>,
) -> Result<Summary, ReplayError> {
    replay_driven(engine, enricher, outputs, progress, |interest, step| {
        let mut reader = LineReader::new(input, MAX_LINE);
        while let Some((line_no, line)) = reader.next_line().map_err(ReplayError::Read)? {
            let line = classify(line, interest);
            step(line_no, line, reader.bytes())?;
        }
        Ok(reader.bytes())
    })
}

/// [`replay`] with lines decoded in batches on other threads (`batching`), and detection in input
/// order on this one: the same alerts and counts, at the speed of several cores.
pub fn replay_parallel(
    input: impl std::io::Read + Send,
    engine: Engine,
    enricher: Option<&mut BundleEnricher>,
    outputs: &mut Outputs,
    progress: Option<&mut dyn Progress>,
    batching: Batching,
) -> Result<Summary, ReplayError> {
    replay_driven(engine, enricher, outputs, progress, |interest, step| {
        let mut bytes_read = 0;
        decode_in_parallel(input, interest, batching, |n, line, bytes| {
            bytes_read = bytes;
            step(n, line, bytes)
        })?
        .map_err(ReplayError::Read)?;
        Ok(bytes_read)
    })
}

/// One line in input order (its number, what it is, the input bytes read so far): counted,
/// analysed, its alerts written.
type Step<'a> = dyn FnMut(u64, Classified, u64) -> Result<(), ReplayError> + 'a;

/// The replay loop's body as a `Step`, handed to `drive`, which feeds it every line and returns
/// the bytes read in all; then the end of input and the summary.
fn replay_driven(
    mut engine: Engine,
    mut enricher: Option<&mut BundleEnricher>,
    outputs: &mut Outputs,
    progress: Option<&mut dyn Progress>,
    drive: impl FnOnce(&(dyn Interest + Sync), &mut Step<'_>) -> Result<u64, ReplayError>,
) -> Result<Summary, ReplayError> {
    let interest = KextInterest::new(engine.config());
    let mut decoder = EventDecoder::new(&interest);
    let mut alerts: Vec<Alert> = Vec::new();
    let mut by_severity: BTreeMap<Severity, u64> = BTreeMap::new();
    let mut progress = progress;

    let heartbeat_every = engine.config().daemon.heartbeat_interval;
    let mut beat = crate::alert::ecs::Beat::new_run(None);
    let mut next_heartbeat = Instant::now() + heartbeat_every;

    fn emit(
        alerts: &mut Vec<Alert>,
        outputs: &mut Outputs,
        by_severity: &mut BTreeMap<Severity, u64>,
    ) -> Result<(), OutputError> {
        for a in alerts.drain(..) {
            *by_severity.entry(a.severity).or_default() += 1;
            outputs.write(&a)?;
        }
        Ok(())
    }

    // One line, in input order: counted, analysed, its alerts written; heartbeats now and then.
    let mut step = |line_no: u64, line: Classified, bytes: u64| -> Result<(), ReplayError> {
        if let Some(ev) = decoder.account(line_no, line) {
            if let Some(e) = enricher.as_deref_mut() {
                e.enrich(&mut engine, &ev);
            }
            engine.process(&ev, &mut alerts);
            if !alerts.is_empty() {
                // Alerts are rare; flushing each batch lets `eslogger | kextwatch replay -` show
                // them as they happen.
                let mut write = || {
                    emit(&mut alerts, outputs, &mut by_severity)?;
                    outputs.flush()
                };
                match progress.as_mut() {
                    Some(p) => p.around_output(&mut write)?,
                    None => write()?,
                }
            }
        }
        if line_no % 65_536 == 0 {
            if let Some(p) = progress.as_mut() {
                p.position(bytes);
            }
        }
        if line_no % 1024 == 0 && Instant::now() >= next_heartbeat {
            next_heartbeat = Instant::now() + heartbeat_every;
            let summary = Summary {
                input: decoder.stats.clone(),
                engine: engine.stats(),
                alerts_by_severity: by_severity.clone(),
                sinks: outputs.report().1,
            };
            let now = now_rfc3339();
            let body =
                summary
                    .heartbeat("replay", None, 1)
                    .document(&now, engine.host(), beat.advance());
            outputs.heartbeat(&now, &body)?;
        }
        Ok(())
    };
    let bytes_read = drive(&interest, &mut step)?;
    engine.finish(&mut alerts);
    let mut write = || {
        emit(&mut alerts, outputs, &mut by_severity)?;
        outputs.finish(FINISH_DEADLINE)
    };
    match progress.as_mut() {
        Some(p) => p.around_output(&mut write)?,
        None => write()?,
    }
    if let Some(p) = progress.as_mut() {
        p.position(bytes_read);
    }
    Ok(Summary {
        input: decoder.stats,
        engine: engine.stats(),
        alerts_by_severity: by_severity,
        sinks: outputs.report().1,
    })
}

/// What `kextwatch policy diff` did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyDiffSummary {
    pub changes: usize,
    pub alerts_by_severity: BTreeMap<Severity, u64>,
}

/// Run the changes from `old` to `new` through `engine`, as the daemon would have seen them.
/// `observed_ns` stamps changes with no time of their own (approvals carry none).
pub fn policy_diff(
    old: &Snapshot,
    new: &Snapshot,
    mut engine: Engine,
    observed_ns: i64,
    outputs: &mut Outputs,
) -> Result<PolicyDiffSummary, OutputError> {
    let mut changes: Vec<(PolicyChange, i64)> = diff(old, new)
        .into_iter()
        .map(|c| {
            let t = change_time(&c).unwrap_or(observed_ns);
            (c, t)
        })
        .collect();
    changes.sort_by_key(|(_, t)| *t);
    engine.set_kext_policy(new);
    let mut alerts = Vec::new();
    for (c, t) in &changes {
        engine.process_policy(c, *t, &mut alerts);
    }
    engine.finish(&mut alerts);
    let mut summary = PolicyDiffSummary {
        changes: changes.len(),
        ..Default::default()
    };
    for a in &alerts {
        *summary.alerts_by_severity.entry(a.severity).or_default() += 1;
        outputs.write(a)?;
    }
    outputs.flush()?;
    Ok(summary)
}

impl std::fmt::Display for PolicyDiffSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "{} changes; alerts: {}",
            self.changes,
            severity_counts(&self.alerts_by_severity)
        )
    }
}

/// "12 (critical 2, high 10)": the total, then the count per severity, most severe first.
fn severity_counts(by: &BTreeMap<Severity, u64>) -> String {
    let total = thousands(by.values().sum());
    if by.is_empty() {
        return total;
    }
    let parts: Vec<String> = by.iter().rev().map(|(s, n)| format!("{s} {n}")).collect();
    format!("{total} ({})", parts.join(", "))
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The end-of-run summary a person reads on stderr.
impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        use crate::source::eslogger::event_type;
        let i = &self.input;
        writeln!(
            f,
            "read {} lines ({:.1} MB): {} events analysed, {} skipped as irrelevant, {} malformed",
            thousands(i.lines),
            i.bytes as f64 / 1e6,
            thousands(i.decoded),
            thousands(i.skipped()),
            thousands(i.malformed)
        )?;
        if !i.skipped_by_type.is_empty() {
            let mut parts: Vec<(u64, String)> = i
                .skipped_by_type
                .iter()
                .map(|(t, n)| {
                    (
                        *n,
                        event_type::name(*t)
                            .map_or(format!("event_type {t} (unknown)"), str::to_string),
                    )
                })
                .collect();
            parts.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            if i.skipped_other_types > 0 {
                parts.push((i.skipped_other_types, "other types".to_string()));
            }
            let list: Vec<String> = parts
                .iter()
                .map(|(n, name)| format!("{name} {}", thousands(*n)))
                .collect();
            writeln!(f, "  skipped by type: {}", list.join(", "))?;
        }
        for (line, why) in &i.malformed_examples {
            writeln!(f, "  malformed line {line}: {why}")?;
        }
        if i.malformed > i.malformed_examples.len() as u64 {
            writeln!(
                f,
                "  ... and {} more malformed lines",
                i.malformed - i.malformed_examples.len() as u64
            )?;
        }
        if i.non_utf8 > 0 {
            writeln!(
                f,
                "  {} lines had bytes that are not UTF-8 (decoded with replacement characters)",
                i.non_utf8
            )?;
        }
        if i.seq_gap_events > 0 || i.seq_resets > 0 {
            writeln!(
                f,
                "  drops: {} events missing by global_seq_num gaps; sequence restarted {} times",
                thousands(i.seq_gap_events),
                i.seq_resets
            )?;
        }
        if !i.versions.is_empty() {
            let v: Vec<String> = i
                .versions
                .iter()
                .map(|(v, n)| format!("v{v} {}", thousands(*n)))
                .collect();
            let other = match i.other_versions {
                0 => String::new(),
                n => format!(", other {}", thousands(n)),
            };
            writeln!(f, "  message versions: {}{other}", v.join(", "))?;
        }
        write!(f, "alerts: {}", severity_counts(&self.alerts_by_severity))?;
        let e = &self.engine;
        if e.folded > 0 {
            write!(f, "; {} duplicates folded", thousands(e.folded))?;
        }
        if e.below_min_severity > 0 {
            write!(
                f,
                "; {} findings below the minimum severity",
                thousands(e.below_min_severity)
            )?;
        }
        if e.processes_forgotten > 0 {
            write!(
                f,
                "; {} process images forgotten (lineage table full)",
                thousands(e.processes_forgotten)
            )?;
        }
        writeln!(f)?;
        for k in &self.sinks {
            write!(f, "{}: {} written", k.name, thousands(k.written))?;
            if k.spool_depth > 0 {
                write!(
                    f,
                    ", {} left in the spool (delivered when the receiver is back)",
                    thousands(k.spool_depth)
                )?;
            }
            if k.spool_evicted > 0 {
                write!(
                    f,
                    ", {} evicted from a full spool",
                    thousands(k.spool_evicted)
                )?;
            }
            if k.truncated > 0 {
                write!(
                    f,
                    ", {} truncated to fit a datagram",
                    thousands(k.truncated)
                )?;
            }
            if let Some(e) = &k.last_error {
                write!(f, " (last error: {e})")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
