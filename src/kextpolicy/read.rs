//! Reading KextPolicy: strictly read-only, consistent across tables, tolerant of schema drift.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::{Approval, LoadRecord, MdmApproval, Snapshot};

/// How long a read waits for syspolicyd's write lock before giving up until the next poll.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    #[error("{0}: no such database")]
    Missing(PathBuf),
    /// Zero bytes: syspolicyd never leaves it so; someone truncated it.
    #[error("{0}: emptied (0 bytes)")]
    Emptied(PathBuf),
    #[error(
        "{0}: permission denied; kextwatch needs root and Full Disk Access (TCC SystemPolicyAllFiles) to read KextPolicy"
    )]
    PermissionDenied(PathBuf),
    #[error("{0}: not a SQLite database, or corrupt: {1}")]
    NotADatabase(PathBuf, String),
    #[error("{0}: locked by another process; will retry")]
    Busy(PathBuf),
    #[error("{0}: {1}")]
    Other(PathBuf, String),
}

impl ReadError {
    fn from_sqlite(path: &Path, e: rusqlite::Error) -> ReadError {
        let p = path.to_path_buf();
        match &e {
            rusqlite::Error::SqliteFailure(f, _) => match f.code {
                ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt => {
                    ReadError::NotADatabase(p, e.to_string())
                }
                ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked => ReadError::Busy(p),
                ErrorCode::PermissionDenied | ErrorCode::AuthorizationForStatementDenied => {
                    ReadError::PermissionDenied(p)
                }
                ErrorCode::CannotOpen => match std::fs::symlink_metadata(path) {
                    Err(io) => ReadError::from_io(path, io),
                    Ok(_) => ReadError::Other(p, e.to_string()),
                },
                _ => ReadError::Other(p, e.to_string()),
            },
            _ => ReadError::Other(p, e.to_string()),
        }
    }

    pub(super) fn from_io(path: &Path, e: io::Error) -> ReadError {
        let p = path.to_path_buf();
        match e.kind() {
            io::ErrorKind::NotFound => ReadError::Missing(p),
            // EACCES, and EPERM: how macOS reports a TCC (Full Disk Access) refusal.
            io::ErrorKind::PermissionDenied => ReadError::PermissionDenied(p),
            _ => ReadError::Other(p, e.to_string()),
        }
    }
}

/// Open the database read-only, for repeated reads while syspolicyd writes it. SQLite never
/// writes the database in this mode; the explicit checks first give clear errors for a missing,
/// emptied or non-regular file and for a Full Disk Access refusal.
pub fn open_read_only(path: &Path) -> Result<Connection, ReadError> {
    open(path, false)
}

/// Open the database for one read (`policy show`/`diff`, `doctor`, `replay --kextpolicy`), often
/// of a collected copy: leave its folder as found. A read-only connection to a WAL database
/// creates `-wal` and `-shm` beside it; when neither exists, no writer is attached and nothing is
/// waiting in a WAL, so the file is read as immutable, which creates nothing.
pub fn open_once(path: &Path) -> Result<Connection, ReadError> {
    let beside = |suffix: &str| {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        std::fs::symlink_metadata(PathBuf::from(p)).is_ok()
    };
    open(path, !beside("-wal") && !beside("-shm"))
}

fn open(path: &Path, immutable: bool) -> Result<Connection, ReadError> {
    // Without blocking: a FIFO planted at the path must not stall the reader.
    let (_, meta) =
        crate::files::open_regular(path, crate::files::Links::Follow).map_err(|e| match e {
            crate::files::ReadError::Io(io) => ReadError::from_io(path, io),
            other => ReadError::Other(path.to_path_buf(), other.to_string()),
        })?;
    if meta.len() == 0 {
        return Err(ReadError::Emptied(path.to_path_buf()));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = if immutable {
        Connection::open_with_flags(immutable_uri(path), flags | OpenFlags::SQLITE_OPEN_URI)
    } else {
        Connection::open_with_flags(path, flags)
    }
    .map_err(|e| ReadError::from_sqlite(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| ReadError::from_sqlite(path, e))?;
    // Belt and braces: refuse any statement that would write.
    conn.pragma_update(None, "query_only", true)
        .map_err(|e| ReadError::from_sqlite(path, e))?;
    Ok(conn)
}

/// `file:` URI for `path` with `immutable=1`; every byte but unreserved ones and `/` is
/// percent-encoded, so `?`, `#` or `%` in a path cannot add URI parameters.
fn immutable_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for &b in path.as_os_str().as_encoded_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            uri.push(b as char);
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    uri
}

/// Read all three tables inside one read transaction, so the snapshot is consistent even while
/// syspolicyd writes.
pub fn read_snapshot(conn: &Connection, path: &Path) -> Result<Snapshot, ReadError> {
    let err = |e| ReadError::from_sqlite(path, e);
    conn.execute_batch("BEGIN").map_err(err)?;
    let result = read_tables(conn).map_err(err);
    // Ending a read transaction cannot lose anything; a failure here would surface on the next read.
    let _ = conn.execute_batch("COMMIT");
    result
}

fn read_tables(conn: &Connection) -> rusqlite::Result<Snapshot> {
    let mut snap = Snapshot::default();
    let cols = ["team_id", "bundle_id", "allowed", "developer_name", "flags"];
    for row in select(conn, "kext_policy", &cols, &mut snap)? {
        let parsed = (|| {
            Some(Approval {
                team_id: text(&row[0])?,
                bundle_id: text(&row[1])?,
                allowed: boolean(&row[2])?,
                developer_name: text(&row[3])?,
                flags: int(&row[4])?,
            })
        })();
        match parsed {
            Some(a) => {
                snap.approvals
                    .insert((a.team_id.clone(), a.bundle_id.clone()), a);
            }
            None => snap.skipped_rows += 1,
        }
    }
    let cols = ["team_id", "bundle_id", "allowed", "payload_uuid"];
    for row in select(conn, "kext_policy_mdm", &cols, &mut snap)? {
        let parsed = (|| {
            Some(MdmApproval {
                team_id: text(&row[0])?,
                bundle_id: text(&row[1])?,
                allowed: boolean(&row[2])?,
                payload_uuid: text(&row[3])?,
            })
        })();
        match parsed {
            Some(a) => {
                snap.mdm.insert((a.team_id.clone(), a.bundle_id.clone()), a);
            }
            None => snap.skipped_rows += 1,
        }
    }
    let cols = [
        "path",
        "team_id",
        "bundle_id",
        "boot_uuid",
        "created_at",
        "last_seen",
        "flags",
        "cdhash",
    ];
    for row in select(conn, "kext_load_history_v3", &cols, &mut snap)? {
        let parsed = (|| {
            Some(LoadRecord {
                path: text(&row[0])??,
                team_id: text(&row[1])?,
                bundle_id: text(&row[2])?,
                boot_uuid: text(&row[3])?,
                created_at: text(&row[4])?,
                last_seen: text(&row[5])?,
                flags: int(&row[6])?,
                cdhash: text(&row[7])?,
            })
        })();
        match parsed {
            Some(r) => {
                snap.history.insert(r.path.clone(), r);
            }
            None => snap.skipped_rows += 1,
        }
    }
    Ok(snap)
}

/// An owned SQLite value (`ValueRef` cannot outlive its row).
type Cell = rusqlite::types::Value;

/// Select `cols` from `table`; a missing table yields no rows and a missing column NULLs, each with a
/// warning. Names are our constants, never input.
fn select(
    conn: &Connection,
    table: &str,
    cols: &[&str],
    snap: &mut Snapshot,
) -> rusqlite::Result<Vec<Vec<Cell>>> {
    let mut present = Vec::new();
    let mut stmt = conn.prepare(&format!("PRAGMA table_info(\"{table}\")"))?;
    let mut rows = stmt.query([])?;
    while let Some(r) = rows.next()? {
        present.push(r.get::<_, String>(1)?);
    }
    if present.is_empty() {
        snap.warnings.push(format!("table {table} is missing"));
        return Ok(Vec::new());
    }
    let exprs: Vec<String> = cols
        .iter()
        .map(|c| {
            if present.iter().any(|p| p.eq_ignore_ascii_case(c)) {
                format!("\"{c}\"")
            } else {
                // The 7-column history layout (before macOS 11) has no cdhash: expected, not a warning.
                if !(table == "kext_load_history_v3" && *c == "cdhash") {
                    snap.warnings.push(format!("column {table}.{c} is missing"));
                }
                "NULL".to_string()
            }
        })
        .collect();
    let mut stmt = conn.prepare(&format!("SELECT {} FROM \"{table}\"", exprs.join(", ")))?;
    let n = cols.len();
    let rows = stmt.query_map([], |r| {
        (0..n)
            .map(|i| r.get::<_, Cell>(i))
            .collect::<rusqlite::Result<Vec<Cell>>>()
    })?;
    rows.collect()
}

/// `Some(None)` for NULL, `Some(Some(s))` for text, `None` (skip the row) for anything else.
fn text(v: &Cell) -> Option<Option<String>> {
    match ValueRef::from(v) {
        ValueRef::Null => Some(None),
        ValueRef::Text(t) => Some(Some(String::from_utf8_lossy(t).into_owned())),
        _ => None,
    }
}

/// BOOLEAN columns hold 0/1; NULL reads as not allowed.
fn boolean(v: &Cell) -> Option<bool> {
    match ValueRef::from(v) {
        ValueRef::Null => Some(false),
        ValueRef::Integer(i) => Some(i != 0),
        ValueRef::Text(t) => match t {
            b"0" | b"false" | b"FALSE" => Some(false),
            b"1" | b"true" | b"TRUE" => Some(true),
            _ => None,
        },
        _ => None,
    }
}

fn int(v: &Cell) -> Option<Option<i64>> {
    match ValueRef::from(v) {
        ValueRef::Null => Some(None),
        ValueRef::Integer(i) => Some(Some(i)),
        ValueRef::Text(t) => std::str::from_utf8(t).ok()?.trim().parse().ok().map(Some),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_cannot_add_uri_parameters() {
        assert_eq!(
            immutable_uri(Path::new("/cases/a b/we?ird#%/KextPolicy-1.db")),
            "file:/cases/a%20b/we%3Fird%23%25/KextPolicy-1.db?immutable=1"
        );
    }

    #[test]
    fn permission_errors_name_full_disk_access() {
        let p = Path::new("/var/db/SystemPolicyConfiguration/KextPolicy");
        // EACCES (not root), and EPERM (how macOS reports a TCC refusal).
        for e in [
            io::Error::from_raw_os_error(13),
            io::Error::from_raw_os_error(1),
        ] {
            let err = ReadError::from_io(p, e);
            assert_eq!(err, ReadError::PermissionDenied(p.to_path_buf()));
            assert!(err.to_string().contains("Full Disk Access"));
        }
        assert_eq!(
            ReadError::from_io(p, io::Error::from_raw_os_error(2)),
            ReadError::Missing(p.to_path_buf())
        );
    }

    fn sqlite(code: std::ffi::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[test]
    fn sqlite_errors_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let present = dir.path().join("KextPolicy");
        std::fs::write(&present, b"").unwrap();
        let missing = dir.path().join("gone");
        let p = present.to_path_buf();
        use rusqlite::ffi;
        for code in [ffi::SQLITE_PERM, ffi::SQLITE_AUTH] {
            assert_eq!(
                ReadError::from_sqlite(&present, sqlite(code)),
                ReadError::PermissionDenied(p.clone())
            );
        }
        for code in [ffi::SQLITE_BUSY, ffi::SQLITE_LOCKED] {
            assert_eq!(
                ReadError::from_sqlite(&present, sqlite(code)),
                ReadError::Busy(p.clone())
            );
        }
        for code in [ffi::SQLITE_NOTADB, ffi::SQLITE_CORRUPT] {
            assert!(matches!(
                ReadError::from_sqlite(&present, sqlite(code)),
                ReadError::NotADatabase(..)
            ));
        }
        // CANTOPEN says little: the file system says whether the file is gone.
        assert_eq!(
            ReadError::from_sqlite(&missing, sqlite(ffi::SQLITE_CANTOPEN)),
            ReadError::Missing(missing.clone())
        );
        assert!(matches!(
            ReadError::from_sqlite(&present, sqlite(ffi::SQLITE_CANTOPEN)),
            ReadError::Other(..)
        ));
        assert!(matches!(
            ReadError::from_sqlite(&present, sqlite(ffi::SQLITE_IOERR)),
            ReadError::Other(..)
        ));
    }

    #[test]
    fn values_of_every_storage_class_are_read_or_refused() {
        use rusqlite::types::Value as V;
        let t = |s: &str| V::Text(s.into());
        for (v, want) in [
            (V::Null, Some(false)),
            (V::Integer(0), Some(false)),
            (V::Integer(2), Some(true)),
            (t("1"), Some(true)),
            (t("true"), Some(true)),
            (t("TRUE"), Some(true)),
            (t("0"), Some(false)),
            (t("false"), Some(false)),
            (t("FALSE"), Some(false)),
            (t("yes"), None),
            (V::Real(1.0), None),
            (V::Blob(vec![1]), None),
        ] {
            assert_eq!(boolean(&v), want, "{v:?}");
        }
        for (v, want) in [
            (V::Null, Some(None)),
            (V::Integer(-3), Some(Some(-3))),
            (t(" 7 "), Some(Some(7))),
            (t("seven"), None),
            (V::Real(7.0), None),
        ] {
            assert_eq!(int(&v), want, "{v:?}");
        }
        assert_eq!(text(&V::Null), Some(None));
        assert_eq!(text(&t("x")), Some(Some("x".into())));
        assert_eq!(text(&V::Integer(1)), None);
    }
}
