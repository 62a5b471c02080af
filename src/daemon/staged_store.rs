//! Persisting detection's memory of staged kext bundles in `state_dir`, so a restart of kextwatch
//! (which an attacker can force) does not forget a bundle staged before it. The memory is for one
//! boot: a bundle staged before a reboot is either loaded at boot (KextPolicy records it) or not.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::detect::DurableMemory;

pub const FILE: &str = "staged-bundles.json";
/// A state file bigger than this is not ours to read (4,096 stagings are well under it).
const MAX_BYTES: u64 = 16 << 20;

#[derive(Serialize, Deserialize)]
struct Saved {
    boot_session: Option<String>,
    #[serde(flatten)]
    memory: DurableMemory,
}

pub struct StagedStore {
    path: PathBuf,
    boot_session: Option<String>,
    last_saved: DurableMemory,
}

impl StagedStore {
    pub fn new(state_dir: &Path, boot_session: Option<String>) -> StagedStore {
        StagedStore {
            path: state_dir.join(FILE),
            boot_session,
            last_saved: DurableMemory::default(),
        }
    }

    /// What a previous run of this boot saved; nothing from another boot or an unreadable file
    /// (which is logged, not fatal: the memory starts empty).
    pub fn load(&mut self) -> DurableMemory {
        let bytes = match read_bounded(&self.path) {
            Ok(Some(b)) => b,
            Ok(None) => return DurableMemory::default(),
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "staged-bundle memory not read");
                return DurableMemory::default();
            }
        };
        let saved: Saved = match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "staged-bundle memory not read");
                return DurableMemory::default();
            }
        };
        if saved.boot_session.is_none() || saved.boot_session != self.boot_session {
            tracing::info!("staged-bundle memory is from another boot: starting empty");
            return DurableMemory::default();
        }
        self.last_saved = saved.memory.clone();
        saved.memory
    }

    /// Save `now` if it differs from what was last saved (write to a temporary file, then rename).
    pub fn save_if_changed(&mut self, now: DurableMemory) -> std::io::Result<bool> {
        if now == self.last_saved {
            return Ok(false);
        }
        let saved = Saved {
            boot_session: self.boot_session.clone(),
            memory: now,
        };
        let bytes = serde_json::to_vec(&saved).map_err(std::io::Error::other)?;
        crate::files::replace_file(&self.path, &bytes, 0o600, crate::files::Durability::Synced)?;
        self.last_saved = saved.memory;
        Ok(true)
    }
}

/// The file's bytes, `None` if it does not exist; refuses anything but a regular file of bounded
/// size (a FIFO or /dev/zero planted there must not hang or exhaust the daemon).
fn read_bounded(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    match crate::files::read_regular(path, MAX_BYTES, crate::files::Links::Refuse) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(crate::files::ReadError::Io(e)) => Err(e),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::staged::{SavedActor, Staging};
    use crate::detect::tamper::TamperMark;

    fn by(exe: &str, sid: &str, action: &str) -> SavedActor {
        SavedActor {
            timestamp: "2026-11-25T14:03:12Z".into(),
            action: action.into(),
            pid: Some(4100),
            executable: Some(exe.into()),
            signing_id: Some(sid.into()),
            team_id: None,
            user_id: Some("501".into()),
        }
    }

    fn staging(bundle: &str) -> Staging {
        Staging {
            bundle: bundle.into(),
            first_ns: 1,
            last_ns: 2,
            changes: 3,
            by: by("/bin/cp", "com.apple.cp", "create"),
        }
    }

    #[test]
    fn a_restart_in_the_same_boot_remembers_and_another_boot_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let boot = Some("B1".to_string());
        let mut store = StagedStore::new(dir.path(), boot.clone());
        assert!(store.load().is_empty());
        let v = DurableMemory {
            stagings: vec![staging("/Library/Extensions/Evil.kext")],
            tampers: vec![TamperMark {
                time_ns: 5,
                what: "launchctl bootout system/com.kextwatch.daemon".into(),
                by: by("/bin/launchctl", "com.apple.xpc.launchctl", "exec"),
            }],
        };
        assert!(store.save_if_changed(v.clone()).unwrap());
        assert!(
            !store.save_if_changed(v.clone()).unwrap(),
            "unchanged: not rewritten"
        );

        assert_eq!(StagedStore::new(dir.path(), boot).load(), v);
        assert!(StagedStore::new(dir.path(), Some("B2".into()))
            .load()
            .is_empty());
        assert!(StagedStore::new(dir.path(), None).load().is_empty());
    }

    #[test]
    fn a_file_from_before_tamper_memory_loads_its_stagings() {
        let dir = tempfile::tempdir().unwrap();
        let old = serde_json::json!({"boot_session": "B1", "stagings": [staging("/Library/Extensions/A.kext")]});
        std::fs::write(dir.path().join(FILE), old.to_string()).unwrap();
        let m = StagedStore::new(dir.path(), Some("B1".into())).load();
        assert_eq!((m.stagings.len(), m.tampers.len()), (1, 0));
    }

    #[test]
    fn a_damaged_or_planted_state_file_starts_the_memory_empty() {
        let dir = tempfile::tempdir().unwrap();
        let boot = Some("B1".to_string());
        std::fs::write(dir.path().join(FILE), b"{ not json").unwrap();
        assert!(StagedStore::new(dir.path(), boot.clone()).load().is_empty());
        #[cfg(unix)]
        {
            std::fs::remove_file(dir.path().join(FILE)).unwrap();
            std::os::unix::fs::symlink("/dev/zero", dir.path().join(FILE)).unwrap();
            assert!(StagedStore::new(dir.path(), boot).load().is_empty());
        }
    }
}
