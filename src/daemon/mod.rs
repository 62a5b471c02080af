//! `kextwatch run`: sources → detection → sinks, joined by bounded channels, in the foreground as
//! launchd expects.
//!
//! Threads, not async tasks: every stage is blocking or CPU-bound (the ES callback thread, line
//! decoding, SQLite, synchronous sink writes), so an async runtime would only wrap them in blocking
//! pools. The shape follows the same rules:
//! - sources never block on detection: they `try_send` into a bounded queue and count drops, as the
//!   Endpoint Security callback must;
//! - detection is one thread that owns the engine (and the enrichment, which reads bundles);
//! - the sink thread hands each alert to every output's own worker thread and queue (so one slow
//!   output never holds back another), and writes heartbeats and the status file;
//! - signals arrive on their own thread: SIGHUP reloads the config (a broken one is reported and the
//!   old one kept), SIGTERM/SIGINT stop the sources, drain what is queued through detection into the
//!   sinks (or the spool) within a bounded time, and exit 0.

mod health;
mod instance;
mod integrity;
mod output_workers;
mod sources;
mod staged_store;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use health::{Health, Status, StatusError, STATUS_FILE};
pub use instance::{InstanceError, InstanceLock, LOCK_FILE};

use crate::alert::Alert;
use crate::config::Config;
use crate::detect::Engine;
use crate::enrich::BundleEnricher;
use crate::event::Event;
use crate::kextpolicy::{Snapshot, TimedChange, Watcher};
use crate::output::Outputs;
use crate::wallclock::now_ns;
use output_workers::OutputWorkers;

/// How long a stop waits for sinks to deliver what is queued or spooled.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// How often the status file is rewritten.
const STATUS_EVERY: Duration = Duration::from_secs(2);

/// What reaches the detection thread.
pub(crate) enum Msg {
    /// Events from the source, in order (a busy source sends several at once).
    Events(Vec<Event>),
    Policy(Vec<TimedChange>, Option<Box<Snapshot>>),
    /// A SIP configuration read (macOS), with the time it was read.
    #[cfg_attr(not(target_os = "macos"), allow(dead_code))]
    Sip(u32, i64),
    Reload,
    Stop,
    /// The eslogger source ended by a signal (and was restarted); sent on the event channel,
    /// after the events it read.
    SourceKilled {
        pid: u32,
        signal: i32,
        time_ns: i64,
    },
}

/// Why the daemon could not start (once running, failures are logged and counted, not fatal).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("state directory {0}: {1}")]
    StateDir(PathBuf, std::io::Error),
    #[error(transparent)]
    Instance(#[from] InstanceError),
    #[error(transparent)]
    Output(#[from] crate::output::OutputError),
    #[error("the Endpoint Security source needs macOS; use --source replay:PATH here")]
    EsNeedsMacos,
    #[cfg(target_os = "macos")]
    #[error("Endpoint Security: {0}")]
    Es(#[from] crate::source::es::EsError),
    /// A thread or the signal handler could not be set up.
    #[error("cannot start the {0}: {1}")]
    Start(&'static str, std::io::Error),
}

pub struct DaemonOptions {
    pub config_path: PathBuf,
    /// Managed preferences whose `ConfigTOML` takes precedence over `config_path` when present.
    pub managed_prefs: PathBuf,
    pub source: crate::source::SourceSpec,
    /// eslogger binary (`/usr/bin/eslogger`); replaceable for tests.
    pub eslogger: PathBuf,
}

/// Run until SIGTERM/SIGINT. Returns after draining.
pub fn run(opts: DaemonOptions) -> Result<(), DaemonError> {
    let (config, origin) = Config::load_managed_or_file(&opts.managed_prefs, &opts.config_path)?;
    tracing::info!(config = %origin, "configuration loaded");
    let state_dir = config.daemon.state_dir.clone();
    std::fs::create_dir_all(&state_dir).map_err(|e| DaemonError::StateDir(state_dir.clone(), e))?;
    instance::check_state_dir(&state_dir)?;
    // Held until `run` returns; the kernel releases it if the daemon dies.
    let _instance = InstanceLock::acquire(&state_dir)?;
    // Before anything creates state: what the last run left must still be there.
    let start_check = integrity::check(&config, &state_dir);
    let health = Arc::new(Health::new(&opts.source));
    let stop = Arc::new(AtomicBool::new(false));
    let outputs = Outputs::open(&config.daemon_outputs(), Some(&state_dir))?;

    let (tx, rx) = mpsc::sync_channel::<Msg>(config.daemon.event_queue);
    // Control messages must not be dropped when the event queue is full: their own channel.
    let (ctl_tx, ctl_rx) = mpsc::channel::<Msg>();

    let enforcement = config.daemon.enforce.then(|| {
        Arc::new(std::sync::RwLock::new(
            Engine::new(config.clone()).enforcement_policy(),
        ))
    });
    let interest: sources::SharedInterest = Arc::new(std::sync::RwLock::new(
        crate::detect::KextInterest::new(&config),
    ));
    let followers = Followers {
        enforcement,
        interest,
        watched: Arc::new(std::sync::RwLock::new(
            crate::detect::WatchList::new(&config).prefixes,
        )),
    };
    sources::start(
        &opts,
        &config,
        tx.clone(),
        health.clone(),
        stop.clone(),
        &followers,
    )?;
    if config.kextpolicy.enabled {
        start_kextpolicy(
            &config,
            &state_dir,
            ctl_tx.clone(),
            health.clone(),
            stop.clone(),
        );
    }
    // This Mac's SIP state belongs with events from this Mac, not with a replayed capture.
    #[cfg(target_os = "macos")]
    if opts.source.is_live() {
        sources::start_sip(ctl_tx.clone(), stop.clone());
    }
    start_signals(ctl_tx.clone())?;
    drop(tx);

    let host = crate::host::this_host();
    let (alert_tx, alert_rx) = mpsc::sync_channel::<Alert>(4096);
    let sink_thread = {
        let health = health.clone();
        let heartbeat = Heartbeat {
            every: config.daemon.heartbeat_interval,
            host: host.clone(),
            beat: crate::alert::ecs::Beat::new_run(crate::host::boot_session()),
        };
        let status_path = state_dir.join(STATUS_FILE);
        std::thread::Builder::new()
            .name("sinks".into())
            .spawn(move || sinks(outputs, alert_rx, health, heartbeat, &status_path))
            .map_err(|e| DaemonError::Start("sink thread", e))?
    };
    tracing::info!(source = %opts.source, config = %opts.config_path.display(), "kextwatch running");
    let staged = staged_store::StagedStore::new(&state_dir, crate::host::boot_session());
    let mut engine = Engine::new(config);
    engine.set_host(host);
    if start_check.fresh {
        // Routine on every Mac a fleet deploys to; a SIEM sees restarts in the heartbeats.
        tracing::warn!(state_dir = %state_dir.display(), "no record of a previous run: the first start here, or the state was wiped");
    }
    let mut found = Vec::new();
    engine.process_start_check(&start_check.problems, now_ns(), &mut found);
    for a in found {
        tracing::warn!(rule = a.rule.id, message = %a.message, "start-up check");
        health.count_alert(a.severity);
        let _ = alert_tx.send(a);
    }
    detection(
        engine,
        &opts,
        Queues {
            events: rx,
            control: ctl_rx,
            alerts: alert_tx,
        },
        &health,
        &stop,
        &followers,
        staged,
    );
    // The alert channel is closed: the sink thread drains and returns.
    let _ = sink_thread.join();
    tracing::info!("kextwatch stopped");
    Ok(())
}

fn start_signals(ctl: mpsc::Sender<Msg>) -> Result<(), DaemonError> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM])
        .map_err(|e| DaemonError::Start("signal handler", e))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let msg = if sig == SIGHUP {
                    Msg::Reload
                } else {
                    Msg::Stop
                };
                if ctl.send(msg).is_err() {
                    return;
                }
            }
        })
        .map_err(|e| DaemonError::Start("signal thread", e))?;
    Ok(())
}

fn start_kextpolicy(
    config: &Config,
    state_dir: &Path,
    ctl: mpsc::Sender<Msg>,
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
) {
    let db = config.kextpolicy.path.clone();
    let state = state_dir.join("kextpolicy-state.sqlite");
    let interval = config.kextpolicy.poll_interval;
    let spawned = std::thread::Builder::new()
        .name("kextpolicy".into())
        .spawn(move || {
            let mut watcher = Watcher::open(&db, Some(&state), now_ns());
            watcher.run(interval, &stop, now_ns, |changes, snapshot, readable| {
                health.set_kextpolicy_readable(readable);
                if !changes.is_empty() {
                    let _ = ctl.send(Msg::Policy(changes, snapshot.cloned().map(Box::new)));
                }
            });
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the KextPolicy watcher");
    }
}

/// Snapshots other threads read, which the detection thread replaces when the config or KextPolicy
/// changes: the enforcement answers (ES client) and what the sources decode.
/// What other threads use of the config and KextPolicy; detection keeps it current.
#[derive(Clone)]
pub(super) struct Followers {
    /// Enforce mode's policy snapshot, which the ES source answers AUTH_KEXTLOAD from.
    pub enforcement: Option<Arc<std::sync::RwLock<crate::detect::enforce::EnforcementPolicy>>>,
    /// What the sources decode.
    pub interest: sources::SharedInterest,
    /// The folders whose file events the ES source has the kernel deliver.
    pub watched: Arc<std::sync::RwLock<Vec<String>>>,
}

/// The detection thread's queues: events, control messages (never behind events), alerts out.
struct Queues {
    events: Receiver<Msg>,
    control: Receiver<Msg>,
    alerts: SyncSender<Alert>,
}

/// The detection thread's state: the engine, and where its results go.
struct Detection<'a> {
    engine: Engine,
    followers: &'a Followers,
    health: &'a Health,
    alerts: SyncSender<Alert>,
    enricher: Option<BundleEnricher>,
    out: Vec<Alert>,
}

impl Detection<'_> {
    /// Send what the engine raised to the sink thread. Blocking only while the sink thread is
    /// busy: it never waits for an output (each has its own queue), so a slow output cannot stall
    /// detection.
    fn deliver(&mut self) {
        for a in self.out.drain(..) {
            self.health.count_alert(a.severity);
            let _ = self.alerts.send(a);
        }
    }

    /// What other threads use of the config and KextPolicy follows every change to them.
    fn refresh(&self) {
        let config = self.engine.config();
        if let Some(e) = &self.followers.enforcement {
            if let Ok(mut w) = e.write() {
                *w = self.engine.enforcement_policy();
            }
        }
        *self
            .followers
            .interest
            .write()
            .unwrap_or_else(|p| p.into_inner()) = crate::detect::KextInterest::new(config);
        *self
            .followers
            .watched
            .write()
            .unwrap_or_else(|p| p.into_inner()) = crate::detect::WatchList::new(config).prefixes;
    }

    fn reload(&mut self, opts: &DaemonOptions) {
        match Config::load_managed_or_file(&opts.managed_prefs, &opts.config_path) {
            Ok((c, origin)) => {
                self.engine
                    .reload_reporting(c, &origin.to_string(), now_ns(), &mut self.out);
                self.deliver();
                self.refresh();
                self.health.config_reloaded();
                tracing::info!(config = %origin, "configuration reloaded");
            }
            Err(e) => {
                self.health.config_rejected(&e.to_string());
                tracing::error!(error = %e, "configuration not reloaded: keeping the previous one");
            }
        }
    }

    /// A message from the event queue.
    fn event(&mut self, msg: Msg) {
        match msg {
            Msg::Events(batch) => {
                for ev in batch {
                    if let Some(e) = self.enricher.as_mut() {
                        e.enrich(&mut self.engine, &ev);
                    }
                    self.engine.process(&ev, &mut self.out);
                    self.deliver();
                    // Counted once its alerts are: a status that shows an event analysed shows
                    // them.
                    self.health.count_processed();
                }
            }
            Msg::SourceKilled {
                pid,
                signal,
                time_ns,
            } => {
                self.engine
                    .process_source_killed(pid, signal, time_ns, &mut self.out);
                self.deliver();
            }
            _ => {}
        }
    }

    /// A control message other than a stop.
    fn control(&mut self, msg: Msg, opts: &DaemonOptions) {
        match msg {
            Msg::Reload => self.reload(opts),
            Msg::Policy(changes, snapshot) => {
                if let Some(s) = snapshot {
                    self.engine.set_kext_policy(&s);
                    self.refresh();
                }
                for (c, t) in &changes {
                    self.engine.process_policy(c, *t, &mut self.out);
                }
                self.deliver();
            }
            Msg::Sip(flags, t) => {
                self.engine.process_sip(flags, t, &mut self.out);
                self.deliver();
            }
            Msg::Stop | Msg::Events(_) | Msg::SourceKilled { .. } => {}
        }
    }
}

/// The detection loop: owns the engine. Control messages first, then events.
fn detection(
    mut engine: Engine,
    opts: &DaemonOptions,
    queues: Queues,
    health: &Health,
    stop: &AtomicBool,
    followers: &Followers,
    mut staged: staged_store::StagedStore,
) {
    let remembered = staged.load();
    if !remembered.is_empty() {
        tracing::info!(
            bundles = remembered.stagings.len(),
            tampering = remembered.tampers.len(),
            "staged bundles and tampering remembered from before the restart"
        );
    }
    engine.restore_durable_memory(remembered);
    // Saved when it changed, at most once a second: a forced restart loses at most that second.
    let mut next_staged_save = Instant::now();
    let mut saved_generation = engine.durable_generation();
    let mut save_staged = |engine: &Engine| {
        // Exported (a copy of every staging) only when something changed since the last save.
        if engine.durable_generation() == saved_generation {
            return;
        }
        match staged.save_if_changed(engine.durable_memory()) {
            Ok(_) => saved_generation = engine.durable_generation(),
            Err(e) => tracing::warn!(error = %e, "staged-bundle memory not saved"),
        }
    };
    let mut d = Detection {
        engine,
        followers,
        health,
        alerts: queues.alerts,
        enricher: BundleEnricher::new(Path::new("/")).ok(),
        out: Vec::new(),
    };
    let mut stopping: Option<Instant> = None;
    loop {
        // Control first: a reload or stop is never stuck behind a full event queue.
        while let Ok(m) = queues.control.try_recv() {
            if matches!(m, Msg::Stop) {
                if stopping.is_none() {
                    tracing::info!("stopping: draining queued events");
                    stop.store(true, Ordering::SeqCst);
                    stopping = Some(Instant::now());
                }
            } else {
                d.control(m, opts);
            }
        }
        let wait = if stopping.is_some() {
            Duration::from_millis(50)
        } else {
            Duration::from_millis(200)
        };
        match queues.events.recv_timeout(wait) {
            Ok(msg) => d.event(msg),
            Err(RecvTimeoutError::Timeout) => {
                // Drained (or the bounded drain time passed): finish.
                if stopping.is_some_and(|t| t.elapsed() > Duration::from_millis(100)) {
                    break;
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                if stopping.is_some() {
                    break;
                }
                std::thread::sleep(wait);
            }
        }
        if Instant::now() >= next_staged_save {
            save_staged(&d.engine);
            next_staged_save = Instant::now() + Duration::from_secs(1);
        }
        if stopping.is_some_and(|t| t.elapsed() > DRAIN_DEADLINE) {
            tracing::warn!("stop: drain deadline reached with events still queued");
            break;
        }
    }
    save_staged(&d.engine);
    d.engine.finish(&mut d.out);
    d.deliver();
    health.set_engine(d.engine.stats());
}

/// How often heartbeats go out, and the host they name.
struct Heartbeat {
    every: Duration,
    host: crate::alert::Host,
    beat: crate::alert::ecs::Beat,
}

/// The sink loop: hands each alert to every output's worker; heartbeats and the status file on a
/// timer.
fn sinks(
    outputs: Outputs,
    rx: Receiver<Alert>,
    health: Arc<Health>,
    mut heartbeat: Heartbeat,
    status_path: &Path,
) {
    let mut workers = match OutputWorkers::start(outputs, DRAIN_DEADLINE) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the alert outputs");
            return;
        }
    };
    let mut next_heartbeat = Instant::now() + heartbeat.every;
    let mut next_status = Instant::now();
    let mut status_failing = output_workers::RepeatedError::new("writing the status file");
    let mut ledger = integrity::LedgerWriter::default();
    let mut ledger_failing = output_workers::RepeatedError::new("writing the run ledger");
    let state_dir = status_path.parent().unwrap_or(Path::new("."));
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(a) => workers.alert(a),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        if now >= next_heartbeat {
            next_heartbeat = now + heartbeat.every;
            let ts = crate::wallclock::now_rfc3339();
            let status = health.snapshot(workers.report());
            let body = status
                .heartbeat()
                .document(&ts, &heartbeat.host, heartbeat.beat.advance());
            workers.heartbeat(ts, body);
        }
        if now >= next_status {
            next_status = now + STATUS_EVERY;
            // Every 2 s: a full disk is logged when it starts and when it clears, not each time.
            let written = health.snapshot(workers.report()).write(status_path);
            status_failing.note(written.map_err(|e| format!("{}: {e}", status_path.display())));
            // What state exists now, for the next start to check it is still there.
            let recorded = ledger.record_if_changed(state_dir).map(drop);
            ledger_failing.note(recorded.map_err(|e| format!("{}: {e}", state_dir.display())));
        }
    }
    let mut final_status = health.snapshot(workers.finish(DRAIN_DEADLINE + Duration::from_secs(2)));
    final_status.running = false;
    if let Err(e) = final_status.write(status_path) {
        tracing::warn!(path = %status_path.display(), error = %e, "cannot write the final status file");
    }
}
