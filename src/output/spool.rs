//! The durable spool: messages a sink could not deliver, in order, in kextwatch's own SQLite file in
//! the state directory. Bounded per sink by bytes; past the cap the oldest are evicted and counted.
//! A message leaves the spool only after it was written to the connection, so a crash can repeat
//! messages but not lose them (at-least-once).

use std::path::Path;

use rusqlite::{params, Connection, OptionalExtension};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS spool (id INTEGER PRIMARY KEY, sink TEXT NOT NULL, message BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS spool_sink ON spool (sink, id);
CREATE TABLE IF NOT EXISTS evictions (sink TEXT PRIMARY KEY, count INTEGER NOT NULL);
";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("alert spool: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("alert spool {0}: {1}")]
    File(std::path::PathBuf, std::io::Error),
}

pub struct Spool {
    conn: Connection,
    sink: String,
    max_bytes: u64,
    /// Cached depth, kept in step with every change.
    count: u64,
    bytes: u64,
    evicted: u64,
}

impl Spool {
    /// Make every write fail (or work again), as a full disk does: tests of what a sink does then.
    #[cfg(test)]
    pub(super) fn refuse_writes(&self, refuse: bool) {
        self.conn.pragma_update(None, "query_only", refuse).unwrap();
    }

    /// Open the spool of `sink` in the file at `path` (shared by all sinks), or in memory.
    pub fn open(path: Option<&Path>, sink: &str, max_bytes: u64) -> Result<Spool, SpoolError> {
        let conn = match path {
            Some(p) => {
                // Alerts are for the SIEM, not for every local user.
                crate::files::ensure_private(p).map_err(|e| SpoolError::File(p.into(), e))?;
                Connection::open(p)?
            }
            None => Connection::open_in_memory()?,
        };
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL in WAL mode: a power loss can drop the last transactions, never corrupt the file.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        let (count, bytes): (i64, i64) = conn.query_row(
            "SELECT count(*), coalesce(sum(length(message)), 0) FROM spool WHERE sink = ?1",
            params![sink],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let evicted: i64 = conn
            .query_row(
                "SELECT count FROM evictions WHERE sink = ?1",
                params![sink],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        Ok(Spool {
            conn,
            sink: sink.to_string(),
            max_bytes,
            count: count as u64,
            bytes: bytes as u64,
            evicted: evicted as u64,
        })
    }

    pub fn depth(&self) -> (u64, u64) {
        (self.count, self.bytes)
    }

    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Append messages after the newest.
    pub fn push_back(&mut self, messages: &[Vec<u8>]) -> Result<(), SpoolError> {
        self.insert(messages, false)
    }

    /// Put messages back before the oldest (they were sent but not confirmed), keeping their order.
    pub fn push_front(&mut self, messages: &[Vec<u8>]) -> Result<(), SpoolError> {
        self.insert(messages, true)
    }

    fn insert(&mut self, messages: &[Vec<u8>], front: bool) -> Result<(), SpoolError> {
        if messages.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        {
            let first: i64 = if front {
                let min: Option<i64> =
                    tx.query_row("SELECT min(id) FROM spool", [], |r| r.get(0))?;
                min.unwrap_or(0) - messages.len() as i64
            } else {
                let max: Option<i64> =
                    tx.query_row("SELECT max(id) FROM spool", [], |r| r.get(0))?;
                max.unwrap_or(0) + 1
            };
            let mut ins =
                tx.prepare_cached("INSERT INTO spool (id, sink, message) VALUES (?1, ?2, ?3)")?;
            for (i, m) in messages.iter().enumerate() {
                ins.execute(params![first + i as i64, self.sink, m])?;
            }
        }
        tx.commit()?;
        self.count += messages.len() as u64;
        self.bytes += messages.iter().map(|m| m.len() as u64).sum::<u64>();
        self.evict()
    }

    /// Drop the oldest messages until the spool fits its cap.
    fn evict(&mut self) -> Result<(), SpoolError> {
        if self.bytes <= self.max_bytes {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        let mut dropped = 0u64;
        let mut freed = 0u64;
        {
            let mut stmt =
                tx.prepare("SELECT id, length(message) FROM spool WHERE sink = ?1 ORDER BY id")?;
            let mut rows = stmt.query(params![self.sink])?;
            let mut last = None;
            while self.bytes - freed > self.max_bytes {
                let Some(r) = rows.next()? else { break };
                let (id, len): (i64, i64) = (r.get(0)?, r.get(1)?);
                freed += len as u64;
                dropped += 1;
                last = Some(id);
            }
            drop(rows);
            if let Some(id) = last {
                tx.execute(
                    "DELETE FROM spool WHERE sink = ?1 AND id <= ?2",
                    params![self.sink, id],
                )?;
            }
        }
        tx.execute(
            "INSERT INTO evictions (sink, count) VALUES (?1, ?2)
             ON CONFLICT (sink) DO UPDATE SET count = count + excluded.count",
            params![self.sink, dropped as i64],
        )?;
        tx.commit()?;
        self.count -= dropped;
        self.bytes -= freed;
        let before = self.evicted;
        self.evicted += dropped;
        // The first eviction of an outage, then every thousandth: not one log line per alert.
        if before == 0 || before / 1000 != self.evicted / 1000 {
            tracing::warn!(sink = %self.sink, evicted = self.evicted, "alert spool full: oldest alerts evicted (counted in status and heartbeats)");
        }
        Ok(())
    }

    /// The oldest `n` messages with their ids.
    pub fn peek(&self, n: usize) -> Result<Vec<(i64, Vec<u8>)>, SpoolError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, message FROM spool WHERE sink = ?1 ORDER BY id LIMIT ?2")?;
        let rows = stmt.query_map(params![self.sink, n as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Remove messages up to and including `id` (they were written).
    pub fn remove_through(&mut self, id: i64) -> Result<(), SpoolError> {
        let (n, bytes): (i64, i64) = self.conn.query_row(
            "SELECT count(*), coalesce(sum(length(message)), 0) FROM spool WHERE sink = ?1 AND id <= ?2",
            params![self.sink, id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        self.conn.execute(
            "DELETE FROM spool WHERE sink = ?1 AND id <= ?2",
            params![self.sink, id],
        )?;
        self.count -= n as u64;
        self.bytes -= bytes as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eviction_stops_exactly_at_the_cap_and_keeps_the_newest() {
        let mut s = Spool::open(None, "siem", 300).unwrap();
        let msg = |i: u8| vec![i; 100];
        s.push_back(&[msg(1), msg(2), msg(3)]).unwrap();
        // 300 bytes is the cap itself: nothing goes.
        assert_eq!((s.depth(), s.evicted()), ((3, 300), 0));
        assert!(!s.is_empty());
        s.push_back(&[msg(4)]).unwrap();
        // 400 > 300: the oldest one goes, and only it.
        assert_eq!((s.depth(), s.evicted()), ((3, 300), 1));
        let kept: Vec<u8> = s.peek(10).unwrap().iter().map(|(_, m)| m[0]).collect();
        assert_eq!(kept, [2, 3, 4]);
        let last = s.peek(10).unwrap().last().unwrap().0;
        s.remove_through(last).unwrap();
        assert!(s.is_empty());
        assert_eq!(s.depth(), (0, 0));
    }
}
