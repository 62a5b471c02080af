//! The Team ID verdict on a kext load: who signed the kext (from the bundle on disk or KextPolicy's
//! record), whether that team is allowlisted, and whether KextPolicy holds the approval a third-party
//! kext needs to load. Every load rule (`KW-1001` tool loads, `KW-3001` load events) asks here, so one
//! kext gets one verdict whichever way its load was seen.
//!
//! | What is known                                            | Severity at least |
//! |----------------------------------------------------------|-------------------|
//! | unsigned, ad-hoc or broken signature; recorded unsigned  | critical          |
//! | signature that does not verify (code changed, macOS)     | critical          |
//! | `com.apple.*` id with a Team ID, or from outside /System | critical          |
//! | team on disk differs from the team KextPolicy recorded   | critical          |
//! | Team ID not allowlisted                                  | high              |
//! | KextPolicy readable, no user or MDM approval for it      | high              |
//! | identity unknown, bundle id not allowlisted              | medium            |
//! | allowlisted team, approved                               | info (trusted)    |

use super::rules::{bundle_key, BundleFacts, Finding, Rules};
use crate::alert::{KextInfo, Severity};
use crate::config::KextTrust;
use crate::kextpolicy::KnownTeam;
use crate::path::normalize;

/// What the verdict concluded; the rule decides what that means for trust.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// An Apple kext where Apple's kexts live.
    Apple,
    /// Signed by an allowlisted team (and approved, when KextPolicy is known).
    Allowlisted,
    /// Only the bundle id matches the allowlist; the team could not be checked.
    BundleMatchUnverified,
    /// Nothing tells who signed it.
    Unknown,
    /// Known bad: severity was floored at high or critical.
    Untrusted,
}

/// Where the kext's team came from, for reasons.
fn source(disk: Option<(&str, &BundleFacts)>) -> String {
    match disk {
        Some((path, _)) => format!("from the bundle at {path}"),
        None => "from KextPolicy".into(),
    }
}

impl Rules<'_> {
    /// A bundle read from disk with this bundle id (a load event names only the id).
    fn bundle_by_id(&self, id: &str) -> Option<(&str, &BundleFacts)> {
        // Loads are rare and the map is bounded; a scan costs less than a second index to keep.
        self.bundles
            .iter()
            .filter(|(_, b)| b.bundle_id.as_deref() == Some(id))
            .min_by(|a, b| a.0.cmp(b.0))
            .map(|(_, b)| (b.path.as_str(), b))
    }

    /// Judge the kext a load names by `path` (tool loads) and/or `bundle_id`, flooring `f`'s severity
    /// and stating why. `vouched`: the initiator is trusted, so an unknown identity is only stated.
    pub(super) fn load_verdict(
        &self,
        f: &mut Finding,
        path: Option<&str>,
        bundle_id: Option<&str>,
        vouched: bool,
    ) -> Verdict {
        let disk = path
            .and_then(|p| self.bundles.get(&bundle_key(p)).map(|b| (p, b)))
            .or_else(|| bundle_id.and_then(|id| self.bundle_by_id(id)));
        let id = bundle_id.or_else(|| disk.and_then(|(_, b)| b.bundle_id.as_deref()));
        let recorded = id.and_then(|i| self.policy.and_then(|p| p.teams.get(i)));
        let disk_team = disk.and_then(|(_, b)| b.team_id.as_deref());
        let team = disk_team.or(match recorded {
            Some(KnownTeam::Team(t)) => Some(t.as_str()),
            _ => None,
        });
        if let (Some(id), None) = (id, &f.kext) {
            f.kext = Some(KextInfo {
                bundle_id: id.to_string(),
                team_id: None,
            });
        }
        if let (Some(k), Some(t)) = (f.kext.as_mut(), team) {
            if id == Some(k.bundle_id.as_str()) {
                k.team_id = Some(t.to_string());
            }
        }
        let name = id.or(path).unwrap_or("the kext");

        // No identity at all.
        if let Some(reason) = disk.and_then(|(p, b)| b.no_identity(p)) {
            f.floor(Severity::Critical, reason);
            return Verdict::Untrusted;
        }
        // Signed, but the code no longer matches its signature: modified after signing.
        if let Some((p, status)) = disk.and_then(|(p, b)| b.rejected.map(|s| (p, s))) {
            f.floor(
                Severity::Critical,
                format!(
                    "the signature of the kext bundle {p} does not verify (Security.framework status {status}): its code was changed after signing"
                ),
            );
            return Verdict::Untrusted;
        }
        if recorded == Some(&KnownTeam::Unsigned) {
            f.floor(
                Severity::Critical,
                format!("KextPolicy recorded {name} with no Team ID: the kext is unsigned"),
            );
            return Verdict::Untrusted;
        }

        // Apple's kexts carry no Team ID and live under /System.
        if id.is_some_and(|i| i.starts_with("com.apple.")) {
            let outside = disk
                .map(|(p, _)| normalize(p).to_ascii_lowercase())
                .filter(|p| !p.starts_with("/system/"));
            let spoof = match (team, outside) {
                (Some(t), _) => Some(format!(
                    "{name} claims an Apple bundle id but is signed by team {t} ({})",
                    source(disk.filter(|_| disk_team.is_some()))
                )),
                (None, Some(p)) => Some(format!(
                    "{name} claims an Apple bundle id but its bundle is at {p}, outside /System"
                )),
                (None, None) => None,
            };
            return match spoof {
                Some(reason) => {
                    f.floor(Severity::Critical, reason);
                    Verdict::Untrusted
                }
                None => {
                    f.reasons.push(format!("Apple kext {name}"));
                    Verdict::Apple
                }
            };
        }

        // Two sources that disagree: the bundle on disk is not what was approved and recorded.
        if let (Some(d), Some(KnownTeam::Team(r))) = (disk_team, recorded) {
            if d != r {
                f.floor(
                    Severity::Critical,
                    format!(
                        "the bundle on disk is signed by team {d} but KextPolicy recorded {name} with team {r}: the bundle was replaced"
                    ),
                );
                return Verdict::Untrusted;
            }
        }

        let Some(team) = team else {
            return self.unknown_identity(f, path, id, vouched);
        };
        let mut verdict = match self
            .config
            .allowlist
            .kext_trust(Some(team), id.unwrap_or(""))
        {
            KextTrust::Allowlisted => {
                f.reasons.push(format!(
                    "kext {name} is signed by allowlisted team {team} ({})",
                    source(disk.filter(|_| disk_team.is_some()))
                ));
                Verdict::Allowlisted
            }
            _ => {
                f.floor(
                    Severity::High,
                    format!(
                        "kext {name} is signed by team {team} ({}), which is not allowlisted",
                        source(disk.filter(|_| disk_team.is_some()))
                    ),
                );
                Verdict::Untrusted
            }
        };
        if let (Some(policy), Some(id)) = (self.policy, id) {
            if !policy.approved(team, id) {
                f.floor(
                    Severity::High,
                    format!(
                        "KextPolicy holds no user or MDM approval for {id} (team {team}): the load bypassed user approval"
                    ),
                );
                verdict = Verdict::Untrusted;
            }
        }
        verdict
    }

    /// No team from disk or KextPolicy: say how to find out, and weigh the bundle id alone.
    fn unknown_identity(
        &self,
        f: &mut Finding,
        path: Option<&str>,
        id: Option<&str>,
        vouched: bool,
    ) -> Verdict {
        let Some(id) = id else {
            let reason = format!(
                "who signed {} is unknown: its bundle was not read (in replay, --bundles-root reads a collected copy)",
                path.unwrap_or("the kext")
            );
            if vouched {
                f.reasons.push(reason);
            } else {
                f.floor(Severity::Medium, reason);
            }
            return Verdict::Unknown;
        };
        if self.config.allowlist.kext_trust(None, id) != KextTrust::NotAllowlisted {
            f.reasons.push(format!(
                "bundle id {id} matches the allowlist; its Team ID is not verified (a kext load event carries only the identifier)"
            ));
            return Verdict::BundleMatchUnverified;
        }
        let reason = match self.policy {
            // Every third-party load needs an approval, and approvals name the bundle or the team.
            Some(p) if !p.has_team_approvals() => {
                f.floor(
                    Severity::High,
                    format!(
                        "kext {id} is not in the allowlist and KextPolicy holds no approval or load record for it: the load bypassed user approval"
                    ),
                );
                return Verdict::Untrusted;
            }
            Some(_) => format!(
                "kext {id} is not in the allowlist and KextPolicy has no record of its Team ID"
            ),
            None => format!(
                "kext {id} is not in the allowlist and its Team ID is unknown: replay with --kext-policy (a copy of /var/db/SystemPolicyConfiguration/KextPolicy) or --bundles-root (a copy of the extension folders) to check who signed it"
            ),
        };
        if vouched {
            f.reasons.push(reason);
        } else {
            f.floor(Severity::Medium, reason);
        }
        Verdict::Unknown
    }
}
