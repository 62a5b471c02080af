//! The KextPolicy database (`/var/db/SystemPolicyConfiguration/KextPolicy`, SQLite in WAL mode, owned by
//! syspolicyd): which teams and kexts users and MDM approved, and a history of loaded kexts with their
//! Team ID and cdhash. The best evidence of a kext's identity, and of policy weakening.
//!
//! - `read`: opens the database strictly read-only and reads a [`Snapshot`], tolerating schema drift.
//! - `diff`: two snapshots into [`PolicyChange`]s, which detection turns into alerts.
//! - `watch`: polls for changes at near-zero cost when nothing changed, and persists the last snapshot
//!   (`state`) so a restart reports what changed while kextwatch was down.

mod diff;
mod read;
mod show;
mod state;
mod wake;
mod watch;

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

pub use diff::diff;
pub use read::{open_once, open_read_only, read_snapshot, ReadError};

/// Read a snapshot of the database at `path` (read-only), e.g. a copy collected from a Mac.
pub fn read_file(path: &std::path::Path) -> Result<Snapshot, ReadError> {
    let conn = open_once(path)?;
    read_snapshot(&conn, path)
}
pub use show::render as render_table;
pub use state::StateStore;
pub use watch::{change_time, Poll, Poller, TimedChange, Watcher};

pub const DEFAULT_PATH: &str = "/var/db/SystemPolicyConfiguration/KextPolicy";

/// A row of `kext_policy`: a user's approval of a team's kext.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Approval {
    pub team_id: Option<String>,
    pub bundle_id: Option<String>,
    pub allowed: bool,
    pub developer_name: Option<String>,
    pub flags: Option<i64>,
}

/// A row of `kext_policy_mdm`: an approval delivered by an MDM profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MdmApproval {
    pub team_id: Option<String>,
    pub bundle_id: Option<String>,
    pub allowed: bool,
    pub payload_uuid: Option<String>,
}

/// A row of `kext_load_history_v3`: a kext bundle that was loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LoadRecord {
    pub path: String,
    pub team_id: Option<String>,
    pub bundle_id: Option<String>,
    pub boot_uuid: Option<String>,
    /// `YYYY-MM-DD HH:MM:SS`, UTC, as syspolicyd writes it.
    pub created_at: Option<String>,
    pub last_seen: Option<String>,
    pub flags: Option<i64>,
    /// macOS 11+ (8-column layout).
    pub cdhash: Option<String>,
}

pub type TeamBundle = (Option<String>, Option<String>);

/// The three tables, keyed as in the database.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub approvals: BTreeMap<TeamBundle, Approval>,
    pub mdm: BTreeMap<TeamBundle, MdmApproval>,
    pub history: BTreeMap<String, LoadRecord>,
    /// Rows skipped because a value had an unexpected type.
    pub skipped_rows: u64,
    /// Missing tables or columns, and other schema surprises.
    pub warnings: Vec<String>,
}

/// The tables as JSON: one array per table, named as in the database.
#[derive(Serialize)]
pub struct SnapshotTables<'a> {
    pub kext_policy: Vec<&'a Approval>,
    pub kext_policy_mdm: Vec<&'a MdmApproval>,
    pub kext_load_history_v3: Vec<&'a LoadRecord>,
    pub skipped_rows: u64,
    pub warnings: &'a [String],
}

/// What KextPolicy knows of a bundle id's team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KnownTeam {
    /// Recorded with this Team ID.
    Team(String),
    /// Recorded with no Team ID: loaded unsigned.
    Unsigned,
}

/// The part of a snapshot detection decides with (see [`Snapshot::facts`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyFacts {
    /// Bundle id → team, as [`Snapshot::teams_by_bundle`].
    pub teams: HashMap<String, KnownTeam>,
    /// (team, bundle id) pairs a user or MDM allowed.
    approved: HashSet<(String, String)>,
    /// Teams MDM allowed as a whole.
    approved_teams: HashSet<String>,
}

impl PolicyFacts {
    /// Whether a user or MDM approval covers this team's bundle: a third-party kext needs one to load.
    pub fn approved(&self, team: &str, bundle_id: &str) -> bool {
        self.approved_teams.contains(team)
            || self
                .approved
                .contains(&(team.to_string(), bundle_id.to_string()))
    }

    /// MDM approved whole teams: a kext of unknown team may be covered by one.
    pub fn has_team_approvals(&self) -> bool {
        !self.approved_teams.is_empty()
    }
}

impl Snapshot {
    /// Bundle id → team, from the load history (most recent load wins) and then the approvals.
    pub fn teams_by_bundle(&self) -> HashMap<String, KnownTeam> {
        let mut out: HashMap<String, (Option<&str>, KnownTeam)> = HashMap::new();
        for r in self.history.values() {
            let Some(b) = &r.bundle_id else { continue };
            let team = r
                .team_id
                .clone()
                .map_or(KnownTeam::Unsigned, KnownTeam::Team);
            let seen = r.last_seen.as_deref().or(r.created_at.as_deref());
            match out.get(b) {
                Some((prev, _)) if *prev >= seen => {}
                _ => {
                    out.insert(b.clone(), (seen, team));
                }
            }
        }
        let mut map: HashMap<String, KnownTeam> =
            out.into_iter().map(|(b, (_, t))| (b, t)).collect();
        for (team, bundle) in self.approvals.keys().chain(self.mdm.keys()) {
            if let (Some(t), Some(b)) = (team, bundle) {
                map.entry(b.clone())
                    .or_insert_with(|| KnownTeam::Team(t.clone()));
            }
        }
        map
    }

    /// What detection keeps of a snapshot: the team behind each bundle id and which loads are approved.
    pub fn facts(&self) -> PolicyFacts {
        let mut facts = PolicyFacts {
            teams: self.teams_by_bundle(),
            ..PolicyFacts::default()
        };
        let user = self.approvals.iter().map(|(k, a)| (k, a.allowed));
        let mdm = self.mdm.iter().map(|(k, a)| (k, a.allowed));
        for ((team, bundle), allowed) in user.chain(mdm) {
            let (Some(team), true) = (team, allowed) else {
                continue;
            };
            match bundle.as_deref().filter(|b| !b.is_empty()) {
                Some(b) => {
                    facts.approved.insert((team.clone(), b.to_string()));
                }
                // An MDM team entry (AllowedTeamIdentifiers) approves every kext of the team.
                None => {
                    facts.approved_teams.insert(team.clone());
                }
            }
        }
        facts
    }

    pub fn tables(&self) -> SnapshotTables<'_> {
        SnapshotTables {
            kext_policy: self.approvals.values().collect(),
            kext_policy_mdm: self.mdm.values().collect(),
            kext_load_history_v3: self.history.values().collect(),
            skipped_rows: self.skipped_rows,
            warnings: &self.warnings,
        }
    }

    pub fn rows(&self) -> usize {
        self.approvals.len() + self.mdm.len() + self.history.len()
    }
}

/// One change between two snapshots, or a change in the database's availability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum PolicyChange {
    ApprovalAdded {
        approval: Approval,
    },
    ApprovalRemoved {
        approval: Approval,
    },
    ApprovalChanged {
        old: Approval,
        new: Approval,
    },
    MdmApprovalAdded {
        approval: MdmApproval,
    },
    MdmApprovalRemoved {
        approval: MdmApproval,
    },
    MdmApprovalChanged {
        old: MdmApproval,
        new: MdmApproval,
    },
    /// A path seen for the first time in the load history.
    KextRecorded {
        record: LoadRecord,
    },
    /// `last_seen` advanced: the kext was loaded again.
    KextLoaded {
        record: LoadRecord,
        previous_last_seen: Option<String>,
    },
    /// Team ID or cdhash changed for a path.
    KextIdentityChanged {
        old: LoadRecord,
        new: LoadRecord,
    },
    /// The database disappeared, or was emptied to zero bytes (it is SIP-protected: either needs
    /// SIP off or a compromise).
    DatabaseVanished {
        path: String,
        emptied: bool,
    },
    /// The database cannot be read; `reason` says why and what to do.
    DatabaseUnreadable {
        path: String,
        reason: String,
    },
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) to nanoseconds since the epoch.
pub fn parse_policy_time(s: &str) -> Option<i64> {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second]");
    let t = time::PrimitiveDateTime::parse(s.trim(), &fmt)
        .ok()?
        .assume_utc();
    i64::try_from(t.unix_timestamp_nanos()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str, team: Option<&str>, bundle: &str, last_seen: &str) -> LoadRecord {
        LoadRecord {
            path: path.into(),
            team_id: team.map(Into::into),
            bundle_id: Some(bundle.into()),
            boot_uuid: None,
            created_at: Some("2026-01-01 00:00:00".into()),
            last_seen: Some(last_seen.into()),
            flags: Some(1),
            cdhash: None,
        }
    }

    #[test]
    fn the_most_recent_load_of_a_bundle_id_names_its_team_whatever_the_path_order() {
        // Two copies of one bundle id: the path sorting first was loaded last, and the other way round.
        for (first, second) in [
            ("2026-11-20 10:00:00", "2026-11-19 10:00:00"),
            ("2026-11-19 10:00:00", "2026-11-20 10:00:00"),
        ] {
            let mut s = Snapshot::default();
            for r in [
                record(
                    "/Library/Extensions/A.kext",
                    Some("AAAAAAAAAA"),
                    "com.x.drv",
                    first,
                ),
                record("/Library/Extensions/B.kext", None, "com.x.drv", second),
            ] {
                s.history.insert(r.path.clone(), r);
            }
            let want = if first > second {
                KnownTeam::Team("AAAAAAAAAA".into())
            } else {
                KnownTeam::Unsigned
            };
            assert_eq!(
                s.teams_by_bundle()["com.x.drv"],
                want,
                "{first} vs {second}"
            );
        }
    }

    #[test]
    fn approvals_name_a_team_only_for_bundles_never_loaded() {
        let mut s = Snapshot::default();
        let r = record(
            "/Library/Extensions/A.kext",
            None,
            "com.x.loaded",
            "2026-11-20 10:00:00",
        );
        s.history.insert(r.path.clone(), r);
        for (team, bundle) in [
            ("BBBBBBBBBB", "com.x.loaded"),
            ("CCCCCCCCCC", "com.x.approved"),
        ] {
            s.approvals.insert(
                (Some(team.into()), Some(bundle.into())),
                Approval {
                    team_id: Some(team.into()),
                    bundle_id: Some(bundle.into()),
                    allowed: true,
                    developer_name: None,
                    flags: None,
                },
            );
        }
        let teams = s.teams_by_bundle();
        assert_eq!(teams["com.x.loaded"], KnownTeam::Unsigned);
        assert_eq!(
            teams["com.x.approved"],
            KnownTeam::Team("CCCCCCCCCC".into())
        );
        assert_eq!(teams.len(), 2);
    }
}
