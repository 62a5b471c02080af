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
    /// `daemon.event_queue`: events waiting for detection at most, however they are batched.
    queue_limit: usize,
}

impl Hooks for Feed {
    fn event(&self, ev: Event) -> bool {
        self.events(vec![ev])
    }

    fn events(&self, mut batch: Vec<Event>) -> bool {
        let n = batch.len();
        self.health.decoded.fetch_add(n as u64, Ordering::Relaxed);
        // As if sent one by one: the events beyond the queue's room are the ones dropped.
        let room = self.health.queue_room(self.queue_limit);
        if room < n {
            batch.truncate(room);
            self.health
                .dropped
                .fetch_add((n - room) as u64, Ordering::Relaxed);
        }
        if batch.is_empty() {
            return true;
        }
        let n = batch.len();
        self.health.queued(n);
        match self.tx.try_send(Msg::Events(batch)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.health.release_queue(n);
                self.health.dropped.fetch_add(n as u64, Ordering::Relaxed);
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
    let feed = Feed {
        tx,
        health,
        queue_limit: config.daemon.event_queue,
    };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventKind, Process};

    fn events(n: usize) -> Vec<Event> {
        (0..n)
            .map(|i| Event::at(i as i64, Process::default(), EventKind::Exit { status: 0 }))
            .collect()
    }

    #[test]
    fn the_queue_holds_at_most_its_limit_in_events_however_they_are_batched() {
        let (tx, rx) = std::sync::mpsc::sync_channel(16);
        let health = Arc::new(Health::new(&"test"));
        let feed = Feed {
            tx,
            health: health.clone(),
            queue_limit: 5,
        };
        // 3 fit, then 2 of the next 4: the newest beyond the room are dropped, as one by one.
        assert!(feed.events(events(3)));
        assert!(feed.events(events(4)));
        let sizes = |rx: &std::sync::mpsc::Receiver<Msg>| {
            rx.try_iter()
                .map(|m| match m {
                    Msg::Events(b) => b.len(),
                    _ => 0,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(sizes(&rx), [3, 2]);
        assert_eq!(health.decoded.load(Ordering::Relaxed), 7);
        assert_eq!(health.dropped.load(Ordering::Relaxed), 2);
        // Full: a single event is dropped too, until detection analyses some.
        assert!(feed.event(events(1).pop().unwrap()));
        assert_eq!(health.dropped.load(Ordering::Relaxed), 3);
        for _ in 0..2 {
            health.count_processed();
        }
        assert!(feed.events(events(3)));
        assert_eq!(sizes(&rx), [2]);
        assert_eq!(health.dropped.load(Ordering::Relaxed), 4);
        // A queue that is gone stops the source.
        drop(rx);
        health.count_processed();
        assert!(!feed.events(events(1)));
    }
}
