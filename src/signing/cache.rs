//! Identities cached by bundle path, keyed on the device, inode, mtime and size of its Info.plist and
//! its executable: a warm lookup is two `stat`s. A replaced bundle has new files, so new inodes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{read_identity, KextIdentity};
use crate::files::FileId;

type Stamp = Option<(FileId, i64, u64)>;

fn stamp(p: &Path) -> Stamp {
    let m = std::fs::metadata(p).ok()?;
    let mtime = m.modified().map_or(0, crate::wallclock::epoch_ns);
    Some((FileId::of(&m), mtime, m.len()))
}

fn stamps(bundle: &Path, executable: Option<&str>) -> [Stamp; 2] {
    let exe = executable
        .filter(|e| !e.contains('/'))
        .map(|e| bundle.join("Contents/MacOS").join(e));
    [
        stamp(&bundle.join("Contents/Info.plist")),
        exe.as_deref().and_then(stamp),
    ]
}

/// Bounded so a flood of distinct paths cannot grow memory: past it, the cache is cleared.
const MAX_ENTRIES: usize = 65_536;

#[derive(Default)]
pub struct IdentityCache {
    entries: HashMap<PathBuf, ([Stamp; 2], KextIdentity)>,
    pub hits: u64,
    pub misses: u64,
}

impl IdentityCache {
    pub fn new() -> IdentityCache {
        IdentityCache::default()
    }

    /// The identity of the bundle at `path`, read again only if one of its stamps changed.
    pub fn lookup(&mut self, path: &Path) -> KextIdentity {
        if let Some((st, id)) = self.entries.get(path) {
            if *st == stamps(path, id.executable.as_deref()) {
                self.hits += 1;
                return id.clone();
            }
        }
        self.misses += 1;
        let id = read_identity(path);
        let st = stamps(path, id.executable.as_deref());
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.clear();
        }
        self.entries.insert(path.to_path_buf(), (st, id.clone()));
        id
    }
}
