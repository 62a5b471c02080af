//! Correlation across events within a time window (event time, never the clock).
//!
//! Two signals are remembered host-wide: a kext bundle staged into a watched root, and a SIP or boot
//! policy weakening. A later load (or any kext activity, for weakening) inside the window turns into
//! one stronger alert that carries the earlier events as evidence. Host-wide, because a load is often
//! performed by a different process than the one that staged (kernelmanagerd for API loads); the
//! reasons say whether the events came from the same login session.

use std::collections::VecDeque;

use super::rules::{
    Activity, Finding, KEXT_AFTER_UNSIGNED_ROOT, KEXT_AFTER_WEAKENING, STAGED_THEN_APPROVED,
    STAGED_THEN_LOADED,
};
use crate::alert::{Evidence, Severity};
use crate::path::is_under;

/// Bound on remembered signals, so a flood cannot grow memory; the oldest go first (counted).
const MAX_SIGNALS: usize = 4096;

#[derive(Debug, Clone)]
enum SignalKind {
    Staged {
        bundle: String,
    },
    Weakened {
        what: String,
    },
    /// Unsigned or ad-hoc code started as root: what an IOKit API load (no kext tool) looks like.
    UnsignedRoot {
        executable: String,
    },
}

#[derive(Debug, Clone)]
struct Signal {
    time_ns: i64,
    /// The audit session of the process that raised it; `None` for KextPolicy and SIP state.
    asid: Option<i32>,
    kind: SignalKind,
    evidence: Evidence,
}

#[derive(Debug, Default)]
pub struct Correlator {
    window_ns: i64,
    signals: VecDeque<Signal>,
    pub evicted: u64,
}

impl Correlator {
    pub fn new(window_ns: i64) -> Correlator {
        Correlator {
            window_ns,
            ..Default::default()
        }
    }

    /// Forget signals older than the window. Signals arrive roughly in time order; a late one is
    /// kept until the ones before it expire, which only delays forgetting.
    pub fn expire(&mut self, now_ns: i64) {
        while let Some(front) = self.signals.front() {
            if now_ns.saturating_sub(front.time_ns) > self.window_ns {
                self.signals.pop_front();
            } else {
                break;
            }
        }
    }

    pub fn len(&self) -> usize {
        self.signals.len()
    }

    /// Strengthen `f` with what came before, then remember what `f` signals.
    /// `asid` is the audit session of the acting process, when there is one.
    pub fn correlate(&mut self, f: &mut Finding, now: i64, asid: Option<i32>, evidence: &Evidence) {
        if f.trusted {
            return;
        }
        let how_close = |s: &Signal| {
            let secs = (now - s.time_ns) / 1_000_000_000;
            // Session 0 (or a missing one) is no login session: nothing in common to report.
            let same = matches!((s.asid, asid), (Some(a), Some(b)) if a == b && a > 0);
            let session = if same {
                "in the same login session"
            } else {
                "by another session"
            };
            format!("{secs} s earlier, {session}")
        };

        let staged_rule = match &f.activity {
            Some(Activity::Load { .. }) => Some(STAGED_THEN_LOADED),
            Some(Activity::Approval) => Some(STAGED_THEN_APPROVED),
            _ => None,
        };
        let no_paths = Vec::new();
        let paths = match &f.activity {
            Some(Activity::Load { paths, .. }) => paths,
            _ => &no_paths,
        };
        if let Some(rule) = staged_rule {
            // Prefer a staged bundle the load names; else any staging in the window.
            let staged = self
                .signals
                .iter()
                .rev()
                .filter(|s| self.in_window(s, now))
                .filter_map(|s| match &s.kind {
                    SignalKind::Staged { bundle } => Some((s, bundle)),
                    _ => None,
                });
            let mut named = None;
            let mut any = None;
            for (s, bundle) in staged {
                if paths.iter().any(|p| is_under(p, bundle)) {
                    named = Some((s, bundle));
                    break;
                }
                any = any.or(Some((s, bundle)));
            }
            if let Some((s, bundle)) = named.or(if paths.is_empty() { any } else { None }) {
                f.rule = rule;
                f.staging_correlated = true;
                f.floor(
                    Severity::High,
                    format!(
                        "{bundle} was staged by {} {}",
                        s.evidence.actor(),
                        how_close(s)
                    ),
                );
                f.related.push(s.evidence.clone());
            }
        }

        // A load event that no tool explains (no paths: the kernel's record of an API load) and no
        // staging explains: unsigned code that just ran as root is the likely loader.
        if let (Some(Activity::Load { paths, .. }), false) = (&f.activity, f.staging_correlated) {
            let root = paths.is_empty().then(|| {
                self.latest_in_window(now, |k| match k {
                    SignalKind::UnsignedRoot { executable } => Some(executable),
                    _ => None,
                })
            });
            if let Some(Some((s, exe))) = root {
                f.rule = KEXT_AFTER_UNSIGNED_ROOT;
                f.floor(
                    Severity::High,
                    format!("unsigned or ad-hoc code {exe} ran as root {}", how_close(s)),
                );
                f.related.push(s.evidence.clone());
            }
        }

        if f.activity.is_some() {
            let weakened = self.latest_in_window(now, |k| match k {
                SignalKind::Weakened { what } => Some(what),
                _ => None,
            });
            if let Some((s, what)) = weakened {
                f.rule = KEXT_AFTER_WEAKENING;
                f.floor(
                    Severity::Critical,
                    format!(
                        "follows `{what}` by {} {}",
                        s.evidence.actor(),
                        how_close(s)
                    ),
                );
                f.related.insert(0, s.evidence.clone());
            }
        }

        let kind = match (&f.activity, &f.weakening) {
            (_, Some(what)) => Some(SignalKind::Weakened { what: what.clone() }),
            (Some(Activity::Staged { bundle }), None) => Some(SignalKind::Staged {
                bundle: bundle.clone(),
            }),
            _ => None,
        };
        if let Some(kind) = kind {
            self.remember(Signal {
                time_ns: now,
                asid,
                kind,
                evidence: evidence.clone(),
            });
        }
    }

    /// Raised at or before `now`, and no more than the window before it.
    fn in_window(&self, s: &Signal, now: i64) -> bool {
        s.time_ns <= now && now - s.time_ns <= self.window_ns
    }

    /// The most recent signal inside the window before `now` that `pick` accepts.
    fn latest_in_window<'s, T>(
        &'s self,
        now: i64,
        pick: impl Fn(&'s SignalKind) -> Option<T>,
    ) -> Option<(&'s Signal, T)> {
        self.signals
            .iter()
            .rev()
            .filter(|s| self.in_window(s, now))
            .find_map(|s| pick(&s.kind).map(|t| (s, t)))
    }

    /// Unsigned or ad-hoc code was started as root (an exec event).
    pub fn unsigned_root_ran(&mut self, now: i64, asid: Option<i32>, evidence: &Evidence) {
        let executable = evidence.executable.clone().unwrap_or_default();
        self.remember(Signal {
            time_ns: now,
            asid,
            kind: SignalKind::UnsignedRoot { executable },
            evidence: evidence.clone(),
        });
    }

    fn remember(&mut self, signal: Signal) {
        // Staging a bundle is many file events, and a root helper may run in a loop: keep one
        // signal per bundle or executable, refreshed.
        let same = |a: &SignalKind, b: &SignalKind| match (a, b) {
            (SignalKind::Staged { bundle: x }, SignalKind::Staged { bundle: y }) => x == y,
            (
                SignalKind::UnsignedRoot { executable: x },
                SignalKind::UnsignedRoot { executable: y },
            ) => x == y,
            _ => false,
        };
        if !matches!(signal.kind, SignalKind::Weakened { .. }) {
            if let Some(pos) = self
                .signals
                .iter()
                .rposition(|s| same(&s.kind, &signal.kind))
            {
                self.signals.remove(pos);
            }
        }
        if self.signals.len() >= MAX_SIGNALS {
            self.signals.pop_front();
            self.evicted += 1;
        }
        self.signals.push_back(signal);
    }
}

#[cfg(test)]
mod tests {
    use super::super::rules::{KEXT_LOADED, ROOT_CHANGE, SIP_CHANGE};
    use super::*;

    const S: i64 = 1_000_000_000;

    fn evidence(exe: &str) -> Evidence {
        Evidence {
            timestamp: crate::wallclock::format_time(0),
            action: "exec",
            pid: Some(42),
            executable: Some(exe.into()),
            args: None,
            path: None,
            kext_bundle_id: None,
            team_id: None,
            signing_id: None,
            user_id: None,
            global_seq_num: None,
        }
    }

    fn staged(bundle: &str) -> Finding {
        let mut f = Finding::new(ROOT_CHANGE, Severity::Medium, bundle.into());
        f.activity = Some(Activity::Staged {
            bundle: bundle.into(),
        });
        f
    }

    fn load(paths: &[&str]) -> Finding {
        let mut f = Finding::new(KEXT_LOADED, Severity::Medium, "com.example.kext".into());
        f.activity = Some(Activity::Load {
            paths: paths.iter().map(|p| p.to_string()).collect(),
            bundle_ids: Vec::new(),
        });
        f
    }

    #[test]
    fn a_load_of_what_was_staged_inside_the_window_becomes_one_stronger_alert() {
        let mut c = Correlator::new(120 * S);
        let bundle = "/Library/Extensions/Evil.kext";
        c.correlate(&mut staged(bundle), 0, Some(7), &evidence("/bin/cp"));
        let mut f = load(&[bundle]);
        c.correlate(&mut f, 30 * S, Some(7), &evidence("/sbin/kmutil"));
        assert_eq!(f.rule.id, STAGED_THEN_LOADED.id);
        assert!(f.severity >= Severity::High);
        assert!(
            f.reasons
                .iter()
                .any(|r| r.contains("30 s earlier, in the same login session")),
            "{:?}",
            f.reasons
        );
        assert_eq!(f.related.len(), 1);
    }

    #[test]
    fn outside_the_window_or_another_bundle_nothing_is_tied() {
        let mut c = Correlator::new(120 * S);
        c.correlate(
            &mut staged("/Library/Extensions/Evil.kext"),
            0,
            None,
            &evidence("/bin/cp"),
        );
        let mut late = load(&["/Library/Extensions/Evil.kext"]);
        c.correlate(&mut late, 121 * S, None, &evidence("/sbin/kmutil"));
        assert_eq!(late.rule.id, KEXT_LOADED.id);
        let mut other = load(&["/Library/Extensions/Other.kext"]);
        c.correlate(&mut other, 10 * S, None, &evidence("/sbin/kmutil"));
        assert_eq!(
            other.rule.id, KEXT_LOADED.id,
            "the load names another bundle"
        );
        c.expire(121 * S);
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn weakening_makes_later_kext_activity_critical_and_trusted_findings_take_no_part() {
        let mut c = Correlator::new(120 * S);
        // A trusted change (an allowlisted manager) does not arm correlation.
        let mut admin = Finding::new(SIP_CHANGE, Severity::Medium, "csrutil disable".into());
        admin.weakening = Some("csrutil disable".into());
        admin.trusted = true;
        c.correlate(&mut admin, 0, None, &evidence("/usr/bin/csrutil"));
        let mut f = load(&[]);
        c.correlate(&mut f, S, None, &evidence("/sbin/kmutil"));
        assert_eq!(f.rule.id, KEXT_LOADED.id);

        let mut attack = Finding::new(SIP_CHANGE, Severity::High, "csrutil disable".into());
        attack.weakening = Some("csrutil disable".into());
        c.correlate(&mut attack, 2 * S, Some(3), &evidence("/usr/bin/csrutil"));
        let mut f = load(&[]);
        c.correlate(&mut f, 3 * S, Some(4), &evidence("/sbin/kmutil"));
        assert_eq!(f.rule.id, KEXT_AFTER_WEAKENING.id);
        assert_eq!(f.severity, Severity::Critical);
        assert!(f.reasons.iter().any(|r| r.contains("by another session")));
    }
}
