//! Change detection that costs next to nothing when nothing changed, and the watcher that turns
//! changes into policy-change events with "alert once" handling of an unavailable database.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rusqlite::Connection;

use super::read::{open_read_only, read_snapshot, ReadError};
use super::state::StateStore;
use super::wake::FileWaker;
use super::{diff, parse_policy_time, PolicyChange, Snapshot};
use crate::files::FileId;

/// The file's identity (a replaced file has a new inode), and whether it is an empty regular file.
fn file_id(path: &Path) -> std::io::Result<(FileId, bool)> {
    let m = std::fs::metadata(path)?;
    Ok((FileId::of(&m), m.is_file() && m.len() == 0))
}

fn wal_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push("-wal");
    PathBuf::from(p)
}

/// Outcome of one poll.
#[derive(Debug)]
pub enum Poll {
    /// Nothing changed: no rows were read.
    Unchanged,
    /// The database changed (or was opened): a fresh snapshot.
    Changed(Snapshot),
    Failed(ReadError),
}

/// Polls one database. Keeps its connection open so `PRAGMA data_version` can tell whether another
/// connection committed since the last read; the database file's identity (device, inode) catches a
/// replaced file.
pub struct Poller {
    path: PathBuf,
    conn: Option<Connection>,
    data_version: i64,
    db_file: Option<FileId>,
    /// Polls made, and how many of them read rows.
    pub polls: u64,
    pub reads: u64,
}

impl Poller {
    pub fn new(path: &Path) -> Poller {
        Poller {
            path: path.to_path_buf(),
            conn: None,
            data_version: 0,
            db_file: None,
            polls: 0,
            reads: 0,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn poll(&mut self) -> Poll {
        self.polls += 1;
        let db = match file_id(&self.path) {
            // Truncated in place keeps the inode, and a connection open on it may not notice.
            Ok((_, true)) => {
                self.conn = None;
                return Poll::Failed(ReadError::Emptied(self.path.clone()));
            }
            Ok((id, _)) => id,
            Err(e) => {
                self.conn = None;
                return Poll::Failed(ReadError::from_io(&self.path, e));
            }
        };
        if self.db_file != Some(db) {
            self.conn = None;
        }
        if let Some(conn) = &self.conn {
            match data_version(conn) {
                // Same file, no commit by another connection: nothing to read.
                Ok(v) if v == self.data_version => return Poll::Unchanged,
                Ok(_) => {}
                Err(_) => self.conn = None,
            }
        }
        if self.conn.is_none() {
            match open_read_only(&self.path) {
                Ok(c) => self.conn = Some(c),
                Err(e) => return Poll::Failed(e),
            }
        }
        let Some(conn) = &self.conn else {
            return Poll::Failed(ReadError::Other(self.path.clone(), "no connection".into()));
        };
        self.reads += 1;
        // Taken before the read: a commit landing during the read then shows as a new version at
        // the next poll (a harmless extra read). Taken after, it would be missed until the next commit.
        let version_before = data_version(conn).unwrap_or(self.data_version);
        match read_snapshot(conn, &self.path) {
            Ok(snap) => {
                self.data_version = version_before;
                self.db_file = Some(db);
                Poll::Changed(snap)
            }
            Err(e) => {
                // A failed read is retried on a fresh connection: kept, its unchanged
                // data_version would make the next poll report "unchanged" without reading.
                self.conn = None;
                Poll::Failed(e)
            }
        }
    }
}

fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0))
}

/// A change and the time detection should give it (ns since the epoch).
pub type TimedChange = (PolicyChange, i64);

/// Poller + persisted state + diff: what the daemon runs. Its own state never stops it: a state
/// file that cannot be read is moved aside and the next read becomes a new baseline; a save that
/// fails (disk full) is retried at every poll while detection goes on from memory.
pub struct Watcher {
    poller: Poller,
    store: Option<StateStore>,
    current: Option<Snapshot>,
    /// `current` is newer than what the state file holds.
    unsaved: bool,
    /// The last save failed (logged once until one succeeds).
    save_failing: bool,
    /// The unavailability already reported, so it is reported once.
    reported: Option<std::mem::Discriminant<ReadError>>,
    /// Polls that found the database locked and will retry.
    pub busy: u64,
    /// Saves of the state file that failed.
    pub save_failures: u64,
}

/// Where an unreadable state file is moved: beside it, stamped, kept for inspection.
fn aside(path: &Path, now_ns: i64) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(format!(".unreadable-{}", now_ns / 1_000_000_000));
    PathBuf::from(p)
}

/// The state store and the snapshot saved in it, or a fresh store (and no snapshot) after moving
/// an unreadable file aside; no store at all if even a fresh one cannot be made.
fn open_state(path: &Path, now_ns: i64) -> (Option<StateStore>, Option<Snapshot>) {
    let opened = StateStore::open(path).and_then(|s| s.load().map(|snap| (s, snap)));
    let e = match opened {
        Ok((store, snap)) => return (Some(store), snap),
        Err(e) => e,
    };
    let moved_to = aside(path, now_ns);
    // Its rollback journal goes too: left behind, SQLite would replay it into the fresh file.
    for suffix in ["", "-journal", "-wal", "-shm"] {
        let mut from = path.as_os_str().to_owned();
        from.push(suffix);
        let mut to = moved_to.as_os_str().to_owned();
        to.push(suffix);
        let _ = std::fs::rename(PathBuf::from(from), PathBuf::from(to));
    }
    tracing::error!(
        error = %e,
        moved_to = %moved_to.display(),
        "KextPolicy state unreadable, moved aside: the next read of KextPolicy is a new baseline, so changes made while kextwatch was stopped are not reported"
    );
    match StateStore::open(path) {
        Ok(store) => (Some(store), None),
        Err(e) => {
            tracing::error!(error = %e, "cannot create a KextPolicy state file: watching from memory, a restart re-baselines");
            (None, None)
        }
    }
}

impl Watcher {
    /// Watch `db`; with a state file, start from the snapshot saved there. `now_ns` stamps a
    /// broken state file moved aside.
    pub fn open(db: &Path, state: Option<&Path>, now_ns: i64) -> Watcher {
        let (store, current) = match state {
            Some(p) => open_state(p, now_ns),
            None => (None, None),
        };
        Watcher {
            poller: Poller::new(db),
            store,
            current,
            unsaved: false,
            save_failing: false,
            reported: None,
            busy: 0,
            save_failures: 0,
        }
    }

    pub fn snapshot(&self) -> Option<&Snapshot> {
        self.current.as_ref()
    }

    /// The last poll read the database (a locked database counts as readable: it is retried).
    pub fn readable(&self) -> bool {
        self.reported.is_none()
    }

    pub fn poller(&self) -> &Poller {
        &self.poller
    }

    /// Poll once. `now_ns` stamps changes that carry no time of their own. The first snapshot ever
    /// read is a baseline: it raises nothing.
    pub fn poll(&mut self, now_ns: i64) -> Vec<TimedChange> {
        let changes = self.read(now_ns);
        if self.unsaved {
            self.save(now_ns);
        }
        changes
    }

    fn save(&mut self, now_ns: i64) {
        let (Some(store), Some(snap)) = (&mut self.store, &self.current) else {
            self.unsaved = false;
            return;
        };
        match store.save(snap, now_ns) {
            Ok(()) => {
                if self.save_failing {
                    tracing::info!(
                        failed_saves = self.save_failures,
                        "KextPolicy state saved again"
                    );
                }
                self.unsaved = false;
                self.save_failing = false;
            }
            Err(e) => {
                // Logged once per outage, not at every poll; `unsaved` stays set, so the next
                // poll retries.
                if !self.save_failing {
                    tracing::error!(error = %e, "cannot save KextPolicy state: watching goes on from memory, retrying at every poll");
                }
                self.save_failing = true;
                self.save_failures += 1;
            }
        }
    }

    fn read(&mut self, now_ns: i64) -> Vec<TimedChange> {
        match self.poller.poll() {
            Poll::Unchanged => Vec::new(),
            Poll::Failed(ReadError::Busy(_)) => {
                self.busy += 1;
                Vec::new()
            }
            Poll::Failed(e) => {
                let kind = std::mem::discriminant(&e);
                if self.reported == Some(kind) {
                    return Vec::new();
                }
                self.reported = Some(kind);
                tracing::warn!(error = %e, "KextPolicy unavailable");
                let path = self.poller.path().display().to_string();
                let change = match e {
                    ReadError::Missing(_) => PolicyChange::DatabaseVanished {
                        path,
                        emptied: false,
                    },
                    ReadError::Emptied(_) => PolicyChange::DatabaseVanished {
                        path,
                        emptied: true,
                    },
                    other => PolicyChange::DatabaseUnreadable {
                        path,
                        reason: other.to_string(),
                    },
                };
                vec![(change, now_ns)]
            }
            Poll::Changed(snap) => {
                self.reported = None;
                if snap.skipped_rows > 0 || !snap.warnings.is_empty() {
                    tracing::warn!(skipped_rows = snap.skipped_rows, warnings = ?snap.warnings, "KextPolicy read with surprises");
                }
                let changes = match &self.current {
                    Some(old) => diff(old, &snap),
                    None => Vec::new(),
                };
                if self.current.as_ref() != Some(&snap) {
                    self.current = Some(snap);
                    self.unsaved = true;
                }
                changes
                    .into_iter()
                    .map(|c| {
                        let t = change_time(&c).unwrap_or(now_ns);
                        (c, t)
                    })
                    .collect()
            }
        }
    }

    /// Poll every `interval` (sooner when the database files change, on macOS) until `stop` is set,
    /// handing changes to `deliver` with the snapshot they came from and whether the database is
    /// readable. Runs on a blocking thread;
    /// `now` is the only clock.
    pub fn run(
        &mut self,
        interval: Duration,
        stop: &AtomicBool,
        now: impl Fn() -> i64,
        mut deliver: impl FnMut(Vec<TimedChange>, Option<&Snapshot>, bool),
    ) {
        let files = [self.poller.path.clone(), wal_path(&self.poller.path)];
        let mut readable = true;
        while !stop.load(Ordering::Relaxed) {
            // Re-armed each round: the files may have been replaced since the last one.
            let mut waker = FileWaker::new(&files).ok();
            let changes = self.poll(now());
            // Also when the database became readable again with nothing changed: whoever shows
            // its readability must hear that it is back.
            if !changes.is_empty() || readable != self.readable() {
                readable = self.readable();
                deliver(changes, self.current.as_ref(), readable);
            }
            let mut waited = Duration::ZERO;
            while waited < interval && !stop.load(Ordering::Relaxed) {
                // Short steps so `stop` is seen promptly.
                let step = (interval - waited).min(Duration::from_millis(100));
                let woken = match waker.as_mut() {
                    Some(w) => w.wait(step).unwrap_or(false),
                    None => {
                        std::thread::sleep(step);
                        false
                    }
                };
                if woken {
                    break;
                }
                waited += step;
            }
        }
    }
}

/// A load-history change happened at its `last_seen` (or `created_at`).
pub fn change_time(c: &PolicyChange) -> Option<i64> {
    let rec = match c {
        PolicyChange::KextRecorded { record } | PolicyChange::KextLoaded { record, .. } => record,
        PolicyChange::KextIdentityChanged { new, .. } => new,
        _ => return None,
    };
    rec.last_seen
        .as_deref()
        .or(rec.created_at.as_deref())
        .and_then(parse_policy_time)
}
