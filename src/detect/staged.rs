//! Durable memory of staged kext bundles.
//!
//! The correlation window ties a load to a staging minutes earlier; an attacker who stages a bundle
//! now and loads it an hour (or a reboot of kextwatch) later walks around it. Every bundle staged,
//! modified, moved in or re-permissioned by an untrusted actor is remembered here until it is
//! loaded or removed. A later load that names it, an approval, or a kext collection rebuild (which
//! can include any bundle in the extension folders) escalates with the staging as evidence. The
//! memory is bounded (least recently staged forgotten, counted) and the daemon persists it.

use std::num::NonZeroUsize;

use lru::LruCache;
use serde::{Deserialize, Serialize};

use super::rules::{
    bundle_key, Activity, Finding, RuleDef, STAGED_THEN_APPROVED, STAGED_THEN_LOADED,
};
use crate::alert::{Evidence, Severity};
use crate::path::is_under;

/// Bundles remembered at most.
pub const CAPACITY: usize = 4096;

/// Who did something detection remembers, in the form the daemon persists (the evidence fields
/// that outlive the event): shared by stagings and tamper marks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedActor {
    pub timestamp: String,
    pub action: String,
    pub pid: Option<i32>,
    pub executable: Option<String>,
    pub signing_id: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
}

impl SavedActor {
    pub fn of(e: &Evidence) -> SavedActor {
        SavedActor {
            timestamp: e.timestamp.clone(),
            action: e.action.to_string(),
            pid: e.pid,
            executable: e.executable.clone(),
            signing_id: e.signing_id.clone(),
            team_id: e.team_id.clone(),
            user_id: e.user_id.clone(),
        }
    }

    /// Evidence again, about `path` when there is one.
    pub fn evidence(&self, path: Option<String>) -> Evidence {
        Evidence {
            timestamp: self.timestamp.clone(),
            action: static_action(&self.action),
            pid: self.pid,
            executable: self.executable.clone(),
            args: None,
            path,
            kext_bundle_id: None,
            team_id: self.team_id.clone(),
            signing_id: self.signing_id.clone(),
            user_id: self.user_id.clone(),
            global_seq_num: None,
        }
    }
}

/// One remembered staging, in the form the daemon persists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Staging {
    /// The bundle's normalised path.
    pub bundle: String,
    /// Event times (ns) of the first and the latest change.
    pub first_ns: i64,
    pub last_ns: i64,
    /// Changes seen to it.
    pub changes: u64,
    /// The first change: who staged it.
    #[serde(flatten)]
    pub by: SavedActor,
}

impl Staging {
    fn evidence(&self) -> Evidence {
        self.by.evidence(Some(self.bundle.clone()))
    }
}

/// A remembered staging makes `f` untrusted and at least high, with `reason` and its evidence.
fn tell(f: &mut Finding, s: &Staging, reason: String) {
    f.trusted = false;
    f.floor(Severity::High, reason);
    f.related.push(s.evidence());
}

/// What was last read from a remembered bundle on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBack {
    pub bundle_id: Option<String>,
    /// Signed with a Team ID the allowlist trusts.
    pub allowlisted_signature: bool,
}

/// Evidence actions are static names; a restored one maps back to its name.
fn static_action(a: &str) -> &'static str {
    const ACTIONS: [&str; 16] = [
        "create",
        "write",
        "close",
        "rename",
        "setmode",
        "setowner",
        "setextattr",
        "deleteextattr",
        "setflags",
        "setacl",
        "truncate",
        "link",
        "clone",
        "unlink",
        "exec",
        "signal",
    ];
    ACTIONS
        .iter()
        .find(|n| **n == a)
        .copied()
        .unwrap_or("staged")
}

pub struct StagedMemory {
    bundles: LruCache<String, Staging>,
    /// Stagings forgotten to stay within the bound.
    pub forgotten: u64,
    /// Bumped by every change, so a persister saves only when something changed.
    pub generation: u64,
}

impl Default for StagedMemory {
    fn default() -> Self {
        StagedMemory::with_capacity(CAPACITY)
    }
}

fn hours(ns: i64) -> String {
    let mins = ns / 60_000_000_000;
    match mins {
        0..=119 => format!("{mins} min"),
        _ => format!("{} h", mins / 60),
    }
}

impl StagedMemory {
    pub fn with_capacity(capacity: usize) -> StagedMemory {
        StagedMemory {
            bundles: LruCache::new(NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN)),
            forgotten: 0,
            generation: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.bundles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bundles.is_empty()
    }

    /// What is remembered, oldest staging first (to persist).
    pub fn export(&self) -> Vec<Staging> {
        let mut v: Vec<Staging> = self.bundles.iter().map(|(_, s)| s.clone()).collect();
        v.sort_by_key(|s| (s.first_ns, s.bundle.clone()));
        v
    }

    /// Restore what a previous run persisted (same boot only: the caller checks).
    pub fn restore(&mut self, stagings: Vec<Staging>) {
        for s in stagings {
            self.put(s);
        }
    }

    fn put(&mut self, s: Staging) {
        let key = bundle_key(&s.bundle);
        if !self.bundles.contains(&key) && self.bundles.len() == self.bundles.cap().get() {
            self.forgotten += 1;
        }
        self.bundles.put(key, s);
        self.generation += 1;
    }

    /// Escalate `f` with a remembered staging it acts on, then remember or forget what `f` does.
    /// `read_back(bundle)` is what was last read from the bundle on disk, if anything, to match a
    /// load that names only a bundle id and to know whether a trusted load's trust rests on it.
    pub fn follow(
        &mut self,
        f: &mut Finding,
        now: i64,
        evidence: &Evidence,
        read_back: impl Fn(&str) -> Option<ReadBack>,
    ) {
        let recent = f.staging_correlated;
        match f.activity.clone() {
            Some(Activity::Staged { bundle }) if !f.trusted => {
                self.remember(&bundle, now, evidence)
            }
            Some(Activity::Removed { bundle }) => {
                let removed = self.bundles.pop(&bundle_key(&bundle)).is_some();
                self.generation += u64::from(removed);
            }
            Some(Activity::Load { paths, bundle_ids }) => {
                let hit = self
                    .bundles
                    .iter()
                    // A staging stamped after the load cannot explain it.
                    .filter(|(_, s)| s.first_ns <= now)
                    .find(|(key, s)| {
                        paths.iter().any(|p| is_under(p, key))
                            || read_back(&s.bundle)
                                .and_then(|r| r.bundle_id)
                                .is_some_and(|id| bundle_ids.contains(&id))
                    })
                    .map(|(k, s)| (k.clone(), s.clone()));
                let Some((key, s)) = hit else { return };
                // Loaded: remembered no longer (a new staging starts over).
                self.bundles.pop(&key);
                self.generation += 1;
                // A trusted load stays trusted only if its trust came from reading the bundle
                // as it is now (an allowlisted team in its signature), not from a record of it.
                let verified = read_back(&s.bundle).is_some_and(|r| r.allowlisted_signature);
                if recent || (f.trusted && verified) {
                    return;
                }
                self.escalate(f, &s, now, STAGED_THEN_LOADED);
            }
            Some(Activity::Approval) if !recent => {
                // The approval names a bundle id: the staging whose bundle says that id.
                let Some(id) = f.kext.as_ref().map(|k| k.bundle_id.clone()) else {
                    return;
                };
                let staged = self
                    .bundles
                    .iter()
                    .map(|(_, s)| s)
                    .find(|s| read_back(&s.bundle).and_then(|r| r.bundle_id) == Some(id.clone()))
                    .cloned();
                if let Some(s) = staged {
                    self.escalate(f, &s, now, STAGED_THEN_APPROVED);
                }
            }
            Some(Activity::Rebuild) => {
                if let Some(s) = self.latest() {
                    let reason = format!(
                        "the rebuilt collection can include {}, staged by {} {} earlier and not loaded since",
                        s.bundle,
                        s.evidence().actor(),
                        hours(now.saturating_sub(s.first_ns))
                    );
                    tell(f, &s, reason);
                }
            }
            _ => {}
        }
    }

    fn latest(&self) -> Option<Staging> {
        self.bundles
            .iter()
            .max_by_key(|(_, s)| s.last_ns)
            .map(|(_, s)| s.clone())
    }

    fn escalate(&self, f: &mut Finding, s: &Staging, now: i64, rule: RuleDef) {
        // A correlation rule already set (after weakening: critical) is stronger: keep it, and add
        // the staging to its story.
        if !f.rule.id.starts_with("KW-900") {
            f.rule = rule;
        }
        let reason = format!(
            "{} was staged by {} {} earlier ({} change{} since), beyond the correlation window",
            s.bundle,
            s.evidence().actor(),
            hours(now.saturating_sub(s.first_ns)),
            s.changes,
            if s.changes == 1 { "" } else { "s" }
        );
        tell(f, s, reason);
    }

    fn remember(&mut self, bundle: &str, now: i64, e: &Evidence) {
        if let Some(s) = self.bundles.get_mut(&bundle_key(bundle)) {
            s.last_ns = s.last_ns.max(now);
            s.changes += 1;
            self.generation += 1;
            return;
        }
        self.put(Staging {
            bundle: bundle.to_string(),
            first_ns: now,
            last_ns: now,
            changes: 1,
            by: SavedActor::of(e),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::rules::{KEXT_LOADED, ROOT_CHANGE, USER_APPROVAL};

    const HOUR: i64 = 3_600_000_000_000;

    fn evidence(action: &'static str) -> Evidence {
        Evidence {
            timestamp: "2026-11-25T14:03:12Z".into(),
            action,
            pid: Some(4100),
            executable: Some("/bin/cp".into()),
            args: None,
            path: None,
            kext_bundle_id: None,
            team_id: None,
            signing_id: Some("com.apple.cp".into()),
            user_id: Some("501".into()),
            global_seq_num: Some(7),
        }
    }

    fn staged(m: &mut StagedMemory, bundle: &str, at: i64, action: &'static str) {
        let mut f = Finding::new(ROOT_CHANGE, Severity::Medium, bundle.into());
        f.activity = Some(Activity::Staged {
            bundle: bundle.into(),
        });
        m.follow(&mut f, at, &evidence(action), |_| None);
    }

    fn load(m: &mut StagedMemory, path: &str, at: i64) -> Finding {
        let mut f = Finding::new(KEXT_LOADED, Severity::Info, path.into());
        f.activity = Some(Activity::Load {
            paths: vec![path.into()],
            bundle_ids: Vec::new(),
        });
        m.follow(&mut f, at, &evidence("exec"), |_| None);
        f
    }

    #[test]
    fn a_restored_staging_escalates_a_later_load_with_its_first_evidence() {
        let mut before = StagedMemory::default();
        assert!(before.is_empty());
        staged(&mut before, "/Library/Extensions/Evil.kext", HOUR, "create");
        staged(
            &mut before,
            "/Library/Extensions/Evil.kext",
            HOUR + 1,
            "write",
        );
        staged(
            &mut before,
            "/Library/Extensions/Odd.kext",
            HOUR + 2,
            "chflags",
        );
        assert_eq!((before.len(), before.generation), (2, 3));
        // Persisted as JSON and restored by the next run.
        let saved = serde_json::to_string(&before.export()).unwrap();
        let mut after = StagedMemory::default();
        after.restore(serde_json::from_str(&saved).unwrap());
        assert_eq!(after.export(), before.export());
        assert_eq!(after.len(), 2);
        assert!(!after.is_empty());

        let f = load(&mut after, "/Library/Extensions/Evil.kext", 4 * HOUR);
        assert_eq!((f.rule.id, f.severity), ("KW-9001", Severity::High));
        assert_eq!(
            f.reasons,
            ["/Library/Extensions/Evil.kext was staged by /bin/cp (pid 4100) 3 h earlier (2 changes since), beyond the correlation window"]
        );
        // The evidence is the first change, action name and all.
        assert_eq!(f.related.len(), 1);
        assert_eq!(f.related[0].action, "create");
        assert_eq!(
            f.related[0].path.as_deref(),
            Some("/Library/Extensions/Evil.kext")
        );
        // Loaded: forgotten, so a second load tells nothing more.
        assert_eq!(after.len(), 1);
        assert!(load(&mut after, "/Library/Extensions/Evil.kext", 5 * HOUR)
            .related
            .is_empty());
        // An action name that is not one of the known ones comes back as "staged".
        let odd = load(&mut after, "/Library/Extensions/Odd.kext", 5 * HOUR);
        assert_eq!(odd.related[0].action, "staged");
        assert!(after.is_empty());
    }

    #[test]
    fn within_two_hours_the_age_is_told_in_minutes() {
        assert_eq!(hours(119 * 60_000_000_000), "119 min");
        assert_eq!(hours(120 * 60_000_000_000), "2 h");
        assert_eq!(hours(59_999_999_999), "0 min");
    }

    #[test]
    fn the_memory_is_bounded_and_counts_what_it_forgets() {
        let mut m = StagedMemory::with_capacity(2);
        for (i, b) in ["/L/A.kext", "/L/B.kext", "/L/C.kext"].iter().enumerate() {
            staged(&mut m, b, i as i64, "create");
        }
        assert_eq!((m.len(), m.forgotten, m.generation), (2, 1, 3));
        // The least recently staged (A) went; staging a remembered one again forgets nothing.
        let kept: Vec<String> = m.export().into_iter().map(|s| s.bundle).collect();
        assert_eq!(kept, ["/L/B.kext", "/L/C.kext"]);
        m.restore(m.export());
        assert_eq!((m.len(), m.forgotten, m.generation), (2, 1, 5));
    }

    fn read_back(id: &'static str, allowlisted: bool) -> impl Fn(&str) -> Option<ReadBack> {
        move |_| {
            Some(ReadBack {
                bundle_id: Some(id.into()),
                allowlisted_signature: allowlisted,
            })
        }
    }

    #[test]
    fn an_approval_of_a_remembered_bundle_escalates_unless_the_window_already_told_it() {
        let approval = |m: &mut StagedMemory, id: &str, recent: bool| {
            let mut f = Finding::new(USER_APPROVAL, Severity::Medium, id.into());
            f.activity = Some(Activity::Approval);
            f.staging_correlated = recent;
            f.kext = Some(crate::alert::KextInfo {
                bundle_id: id.into(),
                team_id: None,
            });
            m.follow(
                &mut f,
                5 * HOUR,
                &evidence("exec"),
                read_back("com.evil.kext", false),
            );
            f
        };
        let mut m = StagedMemory::default();
        staged(&mut m, "/Library/Extensions/Evil.kext", HOUR, "create");
        // Another kext's approval: nothing to tell.
        assert_eq!(approval(&mut m, "com.other.kext", false).rule.id, "KW-5001");
        // Inside the correlation window the window's own rule told it already.
        let f = approval(&mut m, "com.evil.kext", true);
        assert_eq!((f.rule.id, f.related.len()), ("KW-5001", 0));
        let f = approval(&mut m, "com.evil.kext", false);
        assert_eq!((f.rule.id, f.severity), ("KW-9003", Severity::High));
        assert!(f.reasons[0].starts_with(
            "/Library/Extensions/Evil.kext was staged by /bin/cp (pid 4100) 4 h earlier"
        ));
        // An approval does not use the staging up: the load that follows still escalates.
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn a_trusted_load_stays_trusted_only_if_the_bundle_read_now_is_allowlisted() {
        let trusted_load = |allowlisted: bool| {
            let mut m = StagedMemory::default();
            staged(&mut m, "/Library/Extensions/Evil.kext", HOUR, "create");
            let mut f = Finding::new(KEXT_LOADED, Severity::Info, "com.evil.kext".into());
            f.trusted = true;
            f.activity = Some(Activity::Load {
                paths: Vec::new(),
                bundle_ids: vec!["com.evil.kext".into()],
            });
            m.follow(
                &mut f,
                3 * HOUR,
                &evidence("exec"),
                read_back("com.evil.kext", allowlisted),
            );
            (f, m)
        };
        let (f, m) = trusted_load(true);
        assert!(f.trusted && f.related.is_empty());
        assert!(m.is_empty(), "loaded: forgotten either way");
        // Trusted from a record (KextPolicy), but what is on disk now is not the allowlisted code.
        let (f, _) = trusted_load(false);
        assert!(!f.trusted);
        assert_eq!(f.rule.id, "KW-9001");
    }

    #[test]
    fn every_change_to_the_memory_bumps_the_generation_the_daemon_saves_by() {
        let mut m = StagedMemory::default();
        staged(&mut m, "/Library/Extensions/A.kext", 1, "create");
        staged(&mut m, "/Library/Extensions/A.kext", 2, "write");
        assert_eq!((m.generation, m.export()[0].changes), (2, 2));
        // Removing what is not remembered changes nothing.
        let removed = |m: &mut StagedMemory, b: &str| {
            let mut f = Finding::new(ROOT_CHANGE, Severity::Low, b.into());
            f.activity = Some(Activity::Removed { bundle: b.into() });
            m.follow(&mut f, 3, &evidence("unlink"), |_| None);
        };
        removed(&mut m, "/Library/Extensions/B.kext");
        assert_eq!(m.generation, 2);
        removed(&mut m, "/Library/Extensions/A.kext");
        assert_eq!((m.generation, m.len()), (3, 0));
        staged(&mut m, "/Library/Extensions/C.kext", 4, "create");
        load(&mut m, "/Library/Extensions/C.kext", 5);
        assert_eq!((m.generation, m.len()), (5, 0));
    }
}
