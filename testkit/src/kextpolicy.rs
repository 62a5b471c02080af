//! KextPolicy fixture databases built from the DDL seen on real systems (macOS 10.13; macOS 11+ adds
//! `cdhash` as the 8th history column), in WAL mode as syspolicyd keeps it.
use std::path::Path;

use rusqlite::{params, Connection};

pub const DDL_COMMON: &str = "
CREATE TABLE kext_policy ( team_id TEXT, bundle_id TEXT, allowed BOOLEAN, developer_name TEXT, flags INTEGER, PRIMARY KEY (team_id, bundle_id) );
CREATE TABLE kext_policy_mdm ( team_id TEXT, bundle_id TEXT, allowed BOOLEAN, payload_uuid TEXT, PRIMARY KEY (team_id, bundle_id) );
CREATE TABLE settings ( name TEXT, value TEXT, PRIMARY KEY (name) );
";
pub const DDL_HISTORY_7: &str = "CREATE TABLE kext_load_history_v3 ( path TEXT PRIMARY KEY, team_id TEXT, bundle_id TEXT, boot_uuid TEXT, created_at TEXT, last_seen TEXT, flags INTEGER );";
pub const DDL_HISTORY_8: &str = "CREATE TABLE kext_load_history_v3 ( path TEXT PRIMARY KEY, team_id TEXT, bundle_id TEXT, boot_uuid TEXT, created_at TEXT, last_seen TEXT, flags INTEGER, cdhash TEXT );";

pub const BOOT: &str = "7F1C2A44-0B8E-4C59-9C0B-3E5D1A2B9F10";

/// Create a KextPolicy database at `path` with the 7- or 8-column history layout.
pub fn create(path: &Path, history_columns: usize) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.execute_batch(DDL_COMMON).unwrap();
    conn.execute_batch(if history_columns == 8 {
        DDL_HISTORY_8
    } else {
        DDL_HISTORY_7
    })
    .unwrap();
    conn.execute("INSERT INTO settings VALUES ('version', '3')", [])
        .unwrap();
    conn
}

pub fn approve(conn: &Connection, team: &str, bundle: &str, developer: &str, allowed: bool) {
    conn.execute(
        "INSERT OR REPLACE INTO kext_policy VALUES (?1, ?2, ?3, ?4, 1)",
        params![team, bundle, allowed, developer],
    )
    .unwrap();
}

pub fn mdm(conn: &Connection, team: &str, bundle: Option<&str>, payload: &str) {
    conn.execute(
        "INSERT OR REPLACE INTO kext_policy_mdm VALUES (?1, ?2, 1, ?3)",
        params![team, bundle, payload],
    )
    .unwrap();
}

/// A load-history row; `cdhash` is ignored for the 7-column layout.
pub fn loaded(
    conn: &Connection,
    path: &str,
    team: Option<&str>,
    bundle: &str,
    last_seen: &str,
    cdhash: Option<&str>,
) {
    let cols: i64 = conn
        .query_row(
            "SELECT count(*) FROM pragma_table_info('kext_load_history_v3')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    if cols >= 8 {
        conn.execute(
            "INSERT OR REPLACE INTO kext_load_history_v3 VALUES (?1, ?2, ?3, ?4, '2026-10-02 08:11:40', ?5, 0, ?6)",
            params![path, team, bundle, BOOT, last_seen, cdhash],
        )
        .unwrap();
    } else {
        conn.execute(
            "INSERT OR REPLACE INTO kext_load_history_v3 VALUES (?1, ?2, ?3, ?4, '2026-10-02 08:11:40', ?5, 0)",
            params![path, team, bundle, BOOT, last_seen],
        )
        .unwrap();
    }
}

/// A realistic Mac: VirtualBox and VMware approved and loaded, an MDM-approved team, one kext of a
/// team nobody allowlisted, and a legacy unsigned kext with no Team ID.
pub fn realistic(path: &Path, history_columns: usize) -> Connection {
    let c = create(path, history_columns);
    approve(
        &c,
        "VB5E2TV963",
        "org.virtualbox.kext.VBoxDrv",
        "Oracle America, Inc.",
        true,
    );
    approve(
        &c,
        "EG7KH642X6",
        "com.vmware.kext.vmx86",
        "VMware, Inc.",
        true,
    );
    approve(
        &c,
        "9PTGMPNXZ2",
        "com.symantec.kext.SymAPComm",
        "Symantec",
        false,
    );
    mdm(
        &c,
        "483DWKW443",
        None,
        "3C1F6F0A-6D0B-4D3E-9E57-0D6B3F0E2A11",
    );
    loaded(
        &c,
        "/Library/Application Support/VirtualBox/VBoxDrv.kext",
        Some("VB5E2TV963"),
        "org.virtualbox.kext.VBoxDrv",
        "2026-11-20 09:00:12",
        Some("8d2f0a6b3c1e4f5a6b7c8d9e0f1a2b3c4d5e6f70"),
    );
    loaded(
        &c,
        "/Library/Extensions/vmx86.kext",
        Some("EG7KH642X6"),
        "com.vmware.kext.vmx86",
        "2026-11-19 17:45:03",
        Some("1a2b3c4d5e6f708192a3b4c5d6e7f80912a3b4c5"),
    );
    loaded(
        &c,
        "/Library/Extensions/Unknown.kext",
        Some("Z9Y8X7W6V5"),
        "com.unknown.driver",
        "2026-11-18 12:00:00",
        Some("aa11bb22cc33dd44ee55ff6600112233445566ff"),
    );
    loaded(
        &c,
        "/Library/Extensions/Legacy.kext",
        None,
        "com.legacy.unsigned",
        "2026-11-17 07:30:00",
        None,
    );
    c
}
