//! The last snapshot, persisted in kextwatch's own SQLite file in the state directory, so a restart
//! reports what changed while kextwatch was down and does not re-alert on unchanged rows.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection};

use super::{Approval, LoadRecord, MdmApproval, Snapshot};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS saved (id INTEGER PRIMARY KEY CHECK (id = 1), saved_at_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS kext_policy (team_id TEXT, bundle_id TEXT, allowed INTEGER NOT NULL,
    developer_name TEXT, flags INTEGER);
CREATE TABLE IF NOT EXISTS kext_policy_mdm (team_id TEXT, bundle_id TEXT, allowed INTEGER NOT NULL,
    payload_uuid TEXT);
CREATE TABLE IF NOT EXISTS kext_load_history_v3 (path TEXT PRIMARY KEY, team_id TEXT, bundle_id TEXT,
    boot_uuid TEXT, created_at TEXT, last_seen TEXT, flags INTEGER, cdhash TEXT);
";

#[derive(Debug, thiserror::Error)]
#[error("kextwatch state {path}: {source}")]
pub struct StateError {
    path: PathBuf,
    #[source]
    source: StateFault,
}

#[derive(Debug, thiserror::Error)]
pub enum StateFault {
    #[error("{0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    File(#[from] std::io::Error),
}

pub struct StateStore {
    path: PathBuf,
    conn: Connection,
}

impl StateStore {
    /// Open (creating if needed) the state file.
    pub fn open(path: &Path) -> Result<StateStore, StateError> {
        let err = |source: StateFault| StateError {
            path: path.to_path_buf(),
            source,
        };
        // Owner-only: what was approved is nobody else's business, and a symlink there is refused.
        crate::files::ensure_private(path).map_err(|e| err(e.into()))?;
        let conn = Connection::open(path).map_err(|e| err(e.into()))?;
        conn.execute_batch(SCHEMA).map_err(|e| err(e.into()))?;
        Ok(StateStore {
            path: path.to_path_buf(),
            conn,
        })
    }

    fn err(&self, source: rusqlite::Error) -> StateError {
        StateError {
            path: self.path.clone(),
            source: source.into(),
        }
    }

    /// The saved snapshot, or `None` before the first save.
    pub fn load(&self) -> Result<Option<Snapshot>, StateError> {
        self.load_inner().map_err(|e| self.err(e))
    }

    fn load_inner(&self) -> rusqlite::Result<Option<Snapshot>> {
        let saved: i64 = self
            .conn
            .query_row("SELECT count(*) FROM saved", [], |r| r.get(0))?;
        if saved == 0 {
            return Ok(None);
        }
        let mut snap = Snapshot::default();
        let mut stmt = self.conn.prepare(
            "SELECT team_id, bundle_id, allowed, developer_name, flags FROM kext_policy",
        )?;
        for a in stmt.query_map([], |r| {
            Ok(Approval {
                team_id: r.get(0)?,
                bundle_id: r.get(1)?,
                allowed: r.get(2)?,
                developer_name: r.get(3)?,
                flags: r.get(4)?,
            })
        })? {
            let a = a?;
            snap.approvals
                .insert((a.team_id.clone(), a.bundle_id.clone()), a);
        }
        let mut stmt = self
            .conn
            .prepare("SELECT team_id, bundle_id, allowed, payload_uuid FROM kext_policy_mdm")?;
        for a in stmt.query_map([], |r| {
            Ok(MdmApproval {
                team_id: r.get(0)?,
                bundle_id: r.get(1)?,
                allowed: r.get(2)?,
                payload_uuid: r.get(3)?,
            })
        })? {
            let a = a?;
            snap.mdm.insert((a.team_id.clone(), a.bundle_id.clone()), a);
        }
        let mut stmt = self.conn.prepare(
            "SELECT path, team_id, bundle_id, boot_uuid, created_at, last_seen, flags, cdhash FROM kext_load_history_v3",
        )?;
        for r in stmt.query_map([], |r| {
            Ok(LoadRecord {
                path: r.get(0)?,
                team_id: r.get(1)?,
                bundle_id: r.get(2)?,
                boot_uuid: r.get(3)?,
                created_at: r.get(4)?,
                last_seen: r.get(5)?,
                flags: r.get(6)?,
                cdhash: r.get(7)?,
            })
        })? {
            let r = r?;
            snap.history.insert(r.path.clone(), r);
        }
        Ok(Some(snap))
    }

    /// Replace the saved snapshot, atomically.
    pub fn save(&mut self, snap: &Snapshot, now_ns: i64) -> Result<(), StateError> {
        self.save_inner(snap, now_ns).map_err(|e| self.err(e))
    }

    fn save_inner(&mut self, snap: &Snapshot, now_ns: i64) -> rusqlite::Result<()> {
        let tx = self.conn.transaction()?;
        tx.execute_batch("DELETE FROM kext_policy; DELETE FROM kext_policy_mdm; DELETE FROM kext_load_history_v3;")?;
        {
            let mut ins = tx.prepare("INSERT INTO kext_policy VALUES (?1, ?2, ?3, ?4, ?5)")?;
            for a in snap.approvals.values() {
                ins.execute(params![
                    a.team_id,
                    a.bundle_id,
                    a.allowed,
                    a.developer_name,
                    a.flags
                ])?;
            }
            let mut ins = tx.prepare("INSERT INTO kext_policy_mdm VALUES (?1, ?2, ?3, ?4)")?;
            for a in snap.mdm.values() {
                ins.execute(params![a.team_id, a.bundle_id, a.allowed, a.payload_uuid])?;
            }
            let mut ins = tx.prepare(
                "INSERT INTO kext_load_history_v3 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            for r in snap.history.values() {
                ins.execute(params![
                    r.path,
                    r.team_id,
                    r.bundle_id,
                    r.boot_uuid,
                    r.created_at,
                    r.last_seen,
                    r.flags,
                    r.cdhash
                ])?;
            }
        }
        tx.execute(
            "INSERT OR REPLACE INTO saved (id, saved_at_ns) VALUES (1, ?1)",
            params![now_ns],
        )?;
        tx.commit()
    }
}
