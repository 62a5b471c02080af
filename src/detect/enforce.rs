//! Enforcement decisions for `AUTH_KEXTLOAD` (`daemon.mode = "enforce"`): answered inside the ES
//! handler from this in-memory snapshot, with no I/O. Apple kexts and kexts whose recorded Team ID
//! is allowlisted load; a known other team or an unsigned kext is denied; an unknown identity fails
//! open unless `fail_closed` is set.

use std::collections::HashMap;

use crate::config::{Allowlist, KextTrust};
use crate::event::Answer;
use crate::kextpolicy::KnownTeam;

#[derive(Debug, Clone, Default)]
pub struct EnforcementPolicy {
    pub allowlist: Allowlist,
    /// Bundle id → team as KextPolicy recorded it.
    pub teams: HashMap<String, KnownTeam>,
    pub fail_closed: bool,
}

impl EnforcementPolicy {
    pub fn decide(&self, identifier: &str) -> Answer {
        let known = self.teams.get(identifier);
        let (allow, reason) = match known {
            Some(KnownTeam::Unsigned) => (
                false,
                format!("{identifier} is recorded with no Team ID (unsigned)"),
            ),
            Some(KnownTeam::Team(t)) if identifier.starts_with("com.apple.") => (
                false,
                format!("{identifier} claims an Apple bundle id but is signed by team {t}"),
            ),
            Some(KnownTeam::Team(t)) => match self.allowlist.kext_trust(Some(t), identifier) {
                KextTrust::Allowlisted => (true, format!("{identifier}: team {t} is allowlisted")),
                _ => (false, format!("{identifier}: team {t} is not allowlisted")),
            },
            None if identifier.starts_with("com.apple.") => {
                (true, format!("{identifier}: Apple kext"))
            }
            None if self.fail_closed => (
                false,
                format!("{identifier}: identity unknown (fail closed)"),
            ),
            None => (
                true,
                format!("{identifier}: identity unknown, allowed (fail open)"),
            ),
        };
        Answer { allow, reason }
    }
}

/// Enforce mode's answers, for the ES source: kext loads from the policy snapshot the engine keeps
/// current, attempts on kextwatch from its tamper surface.
pub struct Enforcer {
    pub policy: std::sync::Arc<std::sync::RwLock<EnforcementPolicy>>,
    pub surface: super::tamper::Surface,
}

impl crate::event::Authority for Enforcer {
    fn kextload(&self, bundle_id: &str) -> Answer {
        // No I/O and no waiting: a snapshot being replaced right now fails open.
        match self.policy.try_read() {
            Ok(p) => p.decide(bundle_id),
            Err(_) => Answer {
                allow: true,
                reason: "policy busy (fail open)".into(),
            },
        }
    }
    fn signal(
        &self,
        signal: i32,
        actor: &crate::event::Process,
        target: &crate::event::Process,
    ) -> Answer {
        self.surface.guard_signal(signal, actor, target)
    }
    fn change(&self, actor: &crate::event::Process, paths: &[&str]) -> Answer {
        self.surface.guard_change(actor, paths)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions() {
        let mut p = EnforcementPolicy::default();
        p.allowlist.team_ids.insert("VB5E2TV963".into());
        p.teams.insert(
            "org.virtualbox.kext.VBoxDrv".into(),
            KnownTeam::Team("VB5E2TV963".into()),
        );
        p.teams
            .insert("com.evil".into(), KnownTeam::Team("ZZZZZZZZZZ".into()));
        p.teams.insert("com.legacy".into(), KnownTeam::Unsigned);
        p.teams.insert(
            "com.apple.fake".into(),
            KnownTeam::Team("ZZZZZZZZZZ".into()),
        );
        assert!(p.decide("org.virtualbox.kext.VBoxDrv").allow);
        assert!(!p.decide("com.evil").allow);
        assert!(!p.decide("com.legacy").allow);
        assert!(!p.decide("com.apple.fake").allow);
        assert!(p.decide("com.apple.driver.AppleHDA").allow);
        assert!(p.decide("com.never.seen").allow);
        p.fail_closed = true;
        assert!(!p.decide("com.never.seen").allow);
        // Apple's own kexts load even when failing closed; an Apple bundle id recorded with a team
        // is refused even when that team is allowlisted.
        assert!(p.decide("com.apple.driver.AppleHDA").allow);
        p.teams.insert(
            "com.apple.driver.Fake".into(),
            KnownTeam::Team("VB5E2TV963".into()),
        );
        let d = p.decide("com.apple.driver.Fake");
        assert!(!d.allow);
        assert!(
            d.reason.contains("claims an Apple bundle id"),
            "{}",
            d.reason
        );
    }
}
