//! Wiring the configured source to the daemon: a thread per source, events into the bounded queue
//! (a full queue drops the event and counts it; a source never blocks on detection), counts into
//! the health the status file shows. What each source does is in `crate::source`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;

use super::{Health, Msg};
use crate::config::Config;
use crate::detect::KextInterest;
use crate::event::Event;
use crate::source::{eslogger, follow, Hooks, SourceSpec};

/// What the sources decode, shared with the detection thread, which replaces it on a reload.
pub(super) type SharedInterest = Arc<std::sync::RwLock<KextInterest>>;

/// The daemon's side of a source: its event queue and health counters.
struct Feed {
    tx: SyncSender<Msg>,
    health: Arc<Health>,
}

impl Hooks for Feed {
    fn event(&self, ev: Event) -> bool {
        self.health.decoded.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(Msg::Event(Box::new(ev))) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.health.dropped.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        }
    }
    fn line(&self) {
        self.health.lines.fetch_add(1, Ordering::Relaxed);
    }
    fn malformed(&self, lines: u64) {
        self.health.malformed.fetch_add(lines, Ordering::Relaxed);
    }
    fn sequence_gap(&self, events: u64) {
        self.health
            .seq_gap_events
            .fetch_add(events, Ordering::Relaxed);
    }
    fn state(&self, state: String) {
        self.health.set_source_state(state);
    }
    fn restarted(&self) {
        self.health.source_restarts.fetch_add(1, Ordering::Relaxed);
    }
    fn killed(&self, pid: u32, signal: i32, time_ns: i64) {
        // Never dropped: this send waits for room in the queue.
        let _ = self.tx.send(Msg::SourceKilled {
            pid,
            signal,
            time_ns,
        });
    }
}

pub(super) fn start(
    opts: &super::DaemonOptions,
    config: &Config,
    tx: SyncSender<Msg>,
    health: Arc<Health>,
    stop: Arc<AtomicBool>,
    followers: &super::Followers,
) -> Result<(), super::DaemonError> {
    let super::Followers {
        enforcement,
        interest,
        watched,
    } = followers.clone();
    if enforcement.is_some() && opts.source != SourceSpec::Es {
        tracing::warn!("daemon.mode = \"enforce\" needs --source es; this source only observes");
    }
    // Only the ES source reads the config itself (its kernel muting list).
    #[cfg(not(target_os = "macos"))]
    let _ = config;
    let feed = Feed { tx, health };
    match &opts.source {
        SourceSpec::Replay(path) => {
            let path = path.clone();
            std::thread::Builder::new()
                .name("source-replay".into())
                .spawn(move || follow::follow(&path, &*interest, &feed, &stop))
                .map_err(|e| super::DaemonError::Start("source thread", e))?;
        }
        SourceSpec::Eslogger => {
            let bin = opts.eslogger.clone();
            std::thread::Builder::new()
                .name("source-eslogger".into())
                .spawn(move || eslogger::process::run(&bin, &*interest, &feed, &stop))
                .map_err(|e| super::DaemonError::Start("source thread", e))?;
        }
        #[cfg(target_os = "macos")]
        SourceSpec::Es => {
            use crate::source::es;
            let surface = crate::detect::tamper::Surface::new(config);
            let settings = es::EsSettings {
                interest: Box::new(interest),
                watched_prefixes: watched,
                guarded_paths: surface.guarded_paths(),
                authority: enforcement.map(|policy| {
                    Arc::new(crate::detect::enforce::Enforcer { policy, surface })
                        as Arc<dyn crate::event::Authority>
                }),
            };
            es::start(settings, Arc::new(feed), stop)?;
            tracing::info!(source = %opts.source, "Endpoint Security client subscribed");
        }
        #[cfg(not(target_os = "macos"))]
        SourceSpec::Es => {
            let _ = (enforcement, watched);
            return Err(super::DaemonError::EsNeedsMacos);
        }
    }
    Ok(())
}

/// SIP state (macOS): read at start and every minute; reported when first read and when it changes.
#[cfg(target_os = "macos")]
pub(super) fn start_sip(ctl: std::sync::mpsc::Sender<Msg>, stop: Arc<AtomicBool>) {
    let _ = std::thread::Builder::new()
        .name("sip".into())
        .spawn(move || {
            crate::source::sip::poll(|flags, t| ctl.send(Msg::Sip(flags, t)).is_ok(), &stop)
        });
}
