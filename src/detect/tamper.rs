//! Tampering with kextwatch itself: stopping its service, signalling it or its eslogger, changing
//! its files, removing its system extension or configuration profile, resetting its Full Disk Access,
//! setting the clock. What counts as kextwatch comes from `[tamper]` in the config; the decisions here
//! are pure, so replay and the daemon agree.
//!
//! A tamper signal is remembered for `tamper.memory_minutes` (and persisted by the daemon): kext
//! activity inside that time is critical, with the tampering as evidence.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::staged::SavedActor;
use crate::alert::Evidence;
use crate::config::Config;
use crate::event::{Answer, Process};
use crate::path::{is_under, normalize};

/// Where macOS keeps Full Disk Access grants; only tccd writes it.
pub const TCC_DB: &str = "/Library/Application Support/com.apple.TCC/TCC.db";

/// Apple's eslogger, which the daemon runs as its event source.
pub const ESLOGGER: &str = "/usr/bin/eslogger";

/// Programs that can stop or mislead kextwatch, by file name (or `com.apple.NAME` signing id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TamperTool {
    Launchctl,
    Kill,
    Killall,
    Pkill,
    Profiles,
    Tccutil,
    Date,
    Systemsetup,
}

const TOOLS: [(&str, TamperTool); 8] = [
    ("launchctl", TamperTool::Launchctl),
    ("kill", TamperTool::Kill),
    ("killall", TamperTool::Killall),
    ("pkill", TamperTool::Pkill),
    ("profiles", TamperTool::Profiles),
    ("tccutil", TamperTool::Tccutil),
    ("date", TamperTool::Date),
    ("systemsetup", TamperTool::Systemsetup),
];

impl TamperTool {
    pub fn identify(path: &str, signing_id: Option<&str>) -> Option<TamperTool> {
        super::tools::identify_in(&TOOLS, path, signing_id)
    }

    fn name(self) -> &'static str {
        super::tools::name_in(&TOOLS, self)
    }
}

/// What a tampering amounts to: the rule family member and the action in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TamperKind {
    /// The service stopped, disabled or its system extension removed.
    Stop,
    /// A signal that stops or suspends kextwatch or its eslogger.
    Signal,
    /// kextwatch's files changed.
    Files,
    /// Its configuration profile removed or its Full Disk Access reset.
    Permissions,
    /// The system clock set.
    Clock,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tamper {
    pub kind: TamperKind,
    /// The action in words (`launchctl bootout system/com.kextwatch.daemon`).
    pub what: String,
}

/// kextwatch as the config describes it. Owned, so the engine keeps one per config and the ES
/// thread can hold one for enforce mode.
#[derive(Debug, Clone)]
pub struct Surface {
    tamper: crate::config::TamperSettings,
    protected: Vec<String>,
    /// Management tools trusted to change kextwatch's files in enforce mode.
    initiators: Vec<crate::config::InitiatorEntry>,
}

/// Apple daemons that install and update software (platform binaries, by signing id): their
/// changes to kextwatch's files are an upgrade, not tampering, in enforce mode too.
const INSTALLERS: [&str; 5] = [
    "com.apple.installd",
    "com.apple.system_installd",
    "com.apple.softwareupdated",
    "com.apple.package_script_service",
    "com.apple.xpc.launchd",
];

/// Signals that only ask for a reload or information: not tampering.
const HARMLESS_SIGNALS: [i32; 3] = [0, 1, 29]; // none (probe), SIGHUP (reload), SIGINFO

pub fn signal_name(sig: i32) -> String {
    match sig {
        1 => "SIGHUP".into(),
        2 => "SIGINT".into(),
        3 => "SIGQUIT".into(),
        6 => "SIGABRT".into(),
        9 => "SIGKILL".into(),
        15 => "SIGTERM".into(),
        17 => "SIGSTOP".into(),
        18 => "SIGTSTP".into(),
        n => format!("signal {n}"),
    }
}

impl Surface {
    pub fn new(config: &Config) -> Surface {
        Surface {
            tamper: config.tamper.clone(),
            protected: config.protected_paths(),
            initiators: config.allowlist.initiators.clone(),
        }
    }

    /// What the enforce-mode guard client listens to: kextwatch's files, and its executables (a
    /// signal's target path is its target's image).
    pub fn guarded_paths(&self) -> Vec<String> {
        let mut v = self.protected.clone();
        v.extend(self.tamper.executables.iter().cloned());
        v
    }

    /// Enforce mode, AUTH_SIGNAL: a signal that would stop or suspend kextwatch is denied unless
    /// launchd (shutdown, a service stop it was asked for) or kextwatch itself sends it. Only the
    /// process's own signals are judged here: no lineage, the answer must be immediate.
    pub fn guard_signal(&self, sig: i32, sender: &Process, target: &Process) -> Answer {
        let allow = |reason: &str| Answer {
            allow: true,
            reason: reason.into(),
        };
        if !self.is_kextwatch_image(&target.executable) {
            return allow("not kextwatch");
        }
        if HARMLESS_SIGNALS.contains(&sig) {
            return allow("a reload or information request");
        }
        if self.is_kextwatch(sender) {
            return allow("kextwatch itself");
        }
        if sender.is_platform_binary
            && sender.signing_id.as_deref() == Some("com.apple.xpc.launchd")
        {
            return allow("launchd");
        }
        Answer {
            allow: false,
            reason: format!(
                "{} to kextwatch from {} denied (enforce mode)",
                signal_name(sig),
                sender.executable
            ),
        }
    }

    /// Enforce mode, AUTH_UNLINK / AUTH_RENAME / AUTH_TRUNCATE / AUTH_OPEN for writing: a change
    /// to kextwatch's files is denied unless kextwatch, Apple's installer daemons or log rotation,
    /// or an allowlisted management tool itself makes it.
    pub fn guard_change(&self, actor: &Process, paths: &[&str]) -> Answer {
        let Some(path) = paths
            .iter()
            .find(|p| self.protected.iter().any(|r| is_under(&normalize(p), r)))
        else {
            return Answer {
                allow: true,
                reason: "not kextwatch's".into(),
            };
        };
        let sid = actor.signing_id.as_deref().unwrap_or("");
        let trusted = self.is_kextwatch(actor)
            || (actor.is_platform_binary
                && (INSTALLERS.contains(&sid) || sid == "com.apple.newsyslog"))
            || self.initiators.iter().any(|i| {
                i.signing_id == sid && actor.team_id.as_deref() == Some(i.team_id.as_str())
            });
        Answer {
            allow: trusted,
            reason: if trusted {
                format!("{} may change kextwatch's files", actor.executable)
            } else {
                format!(
                    "change to {path} by {} denied (enforce mode)",
                    actor.executable
                )
            },
        }
    }

    /// Is `p` kextwatch itself: one of its executables, with its Team ID when one is configured?
    pub fn is_kextwatch(&self, p: &Process) -> bool {
        let t = &self.tamper;
        self.is_kextwatch_image(&p.executable)
            && t.team_id
                .as_ref()
                .is_none_or(|team| p.team_id.as_deref() == Some(team.as_str()))
    }

    /// Can a signal to a process running `path` be tampering? (kextwatch, or an eslogger.)
    pub fn signal_target_matters(&self, path: &str) -> bool {
        normalize(path).eq_ignore_ascii_case(ESLOGGER) || self.is_kextwatch_image(path)
    }

    /// Is `path` one of kextwatch's executables?
    fn is_kextwatch_image(&self, path: &str) -> bool {
        let exe = normalize(path);
        self.tamper
            .executables
            .iter()
            .any(|e| exe.eq_ignore_ascii_case(e))
    }

    /// What a change to `path` touches, if it is kextwatch's or the TCC database.
    pub fn protected_file(&self, path: &str) -> Option<&str> {
        let n = normalize(path);
        if n.eq_ignore_ascii_case(TCC_DB) {
            return Some(TCC_DB);
        }
        self.protected
            .iter()
            .find(|p| is_under(&n, p))
            .map(String::as_str)
    }

    /// Folders and files a live source must deliver changes for (the ES file client's muting).
    pub fn watched_paths(&self) -> Vec<String> {
        let mut v = self.protected.clone();
        v.push(TCC_DB.to_string());
        v
    }

    /// A signal from `sender` to `target`: tampering unless harmless, sent by kextwatch (to its own
    /// eslogger), or aimed at an eslogger that is not kextwatch's (`target_parent`: the target's
    /// parent image, when lineage knows it).
    pub fn signal(
        &self,
        sig: i32,
        sender: &Process,
        target: &Process,
        target_parent: Option<&str>,
    ) -> Option<Tamper> {
        if HARMLESS_SIGNALS.contains(&sig) || self.is_kextwatch(sender) {
            return None;
        }
        let whom = if normalize(&target.executable).eq_ignore_ascii_case(ESLOGGER) {
            // An eslogger whose parent is unknown (started before the capture) counts as ours:
            // killing an eslogger as root is rare enough to report.
            if target_parent.is_some_and(|p| !self.is_kextwatch_image(p)) {
                return None;
            }
            format!("kextwatch's eslogger (pid {})", target.pid)
        } else if self.is_kextwatch_image(&target.executable) {
            format!("kextwatch (pid {})", target.pid)
        } else {
            return None;
        };
        Some(Tamper {
            kind: TamperKind::Signal,
            what: format!("{} sent to {whom}", signal_name(sig)),
        })
    }

    /// A command line (`args` with `argv[0]`) of a tamper tool.
    pub fn command(&self, tool: TamperTool, args: &[String]) -> Option<Tamper> {
        let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
        let line = || format!("{} {}", tool.name(), rest.join(" "));
        let t = &self.tamper;
        let kind = match tool {
            TamperTool::Launchctl => {
                let verb = rest.first().copied().unwrap_or("");
                let stops = matches!(
                    verb,
                    "bootout" | "unload" | "disable" | "kill" | "remove" | "stop"
                ) || (verb == "kickstart" && rest.contains(&"-k"));
                let names_us = rest.iter().any(|a| {
                    *a == t.launchd_label
                        || a.ends_with(&format!("/{}", t.launchd_label))
                        || normalize(a).eq_ignore_ascii_case(&t.launchd_plist)
                });
                // `launchctl kill HUP ...` asks for a reload.
                let harmless = verb == "kill"
                    && rest
                        .get(1)
                        .and_then(|s| signal_number(s))
                        .is_some_and(|s| HARMLESS_SIGNALS.contains(&s));
                if !(stops && names_us) || harmless {
                    return None;
                }
                TamperKind::Stop
            }
            TamperTool::Kill | TamperTool::Killall | TamperTool::Pkill => {
                if kill_signal(&rest).is_some_and(|s| HARMLESS_SIGNALS.contains(&s)) {
                    return None;
                }
                // `kill PID` is seen as the signal event it causes; by name only killall/pkill.
                let names_us = tool != TamperTool::Kill
                    && rest.iter().any(|a| {
                        let a = a.to_ascii_lowercase();
                        !a.starts_with('-') && (a.contains("kextwatch") || a.contains("eslogger"))
                    });
                if !names_us {
                    return None;
                }
                TamperKind::Signal
            }
            TamperTool::Profiles => {
                let removes = rest.iter().any(|a| {
                    matches!(*a, "remove" | "-R" | "-D" | "-r") || a.eq_ignore_ascii_case("-all")
                });
                let everything = rest
                    .iter()
                    .any(|a| *a == "-D" || a.eq_ignore_ascii_case("-all"));
                let ours = rest.iter().any(|a| a.starts_with(&t.profile_identifier))
                    || rest.iter().any(|a| {
                        a.strip_prefix("-identifier=")
                            .is_some_and(|v| v.starts_with(&t.profile_identifier))
                    });
                if !(removes && (everything || ours)) {
                    return None;
                }
                TamperKind::Permissions
            }
            TamperTool::Tccutil => {
                let service = rest.get(1).copied().unwrap_or("");
                let reset = rest
                    .first()
                    .is_some_and(|v| v.eq_ignore_ascii_case("reset"));
                let fda = service.eq_ignore_ascii_case("SystemPolicyAllFiles")
                    || service.eq_ignore_ascii_case("All");
                let ours = match rest.get(2) {
                    None => true,
                    Some(bundle) => {
                        bundle.starts_with("com.kextwatch")
                            || bundle.starts_with(&t.system_extension)
                    }
                };
                if !(reset && fda && ours) {
                    return None;
                }
                TamperKind::Permissions
            }
            TamperTool::Date => {
                if rest.iter().any(|a| a.starts_with('-') && a.contains('j')) {
                    return None;
                }
                if !rest.iter().any(|a| is_date_operand(a)) {
                    return None;
                }
                TamperKind::Clock
            }
            TamperTool::Systemsetup => {
                let sets = rest.iter().enumerate().any(|(i, a)| {
                    let a = a.to_ascii_lowercase();
                    matches!(
                        a.as_str(),
                        "-settime" | "-setdate" | "-setnetworktimeserver"
                    ) || (a == "-setusingnetworktime"
                        && rest
                            .get(i + 1)
                            .is_some_and(|v| v.eq_ignore_ascii_case("off")))
                });
                if !sets {
                    return None;
                }
                TamperKind::Clock
            }
        };
        Some(Tamper { kind, what: line() })
    }

    /// A configuration profile removed (the ES event): kextwatch's (by identifier prefix).
    pub fn profile_removed(&self, identifier: &str) -> Option<Tamper> {
        identifier
            .starts_with(&self.tamper.profile_identifier)
            .then(|| Tamper {
                kind: TamperKind::Permissions,
                what: format!("configuration profile {identifier} removed"),
            })
    }

    /// A TCC change (the ES event): Full Disk Access taken from kextwatch (its app, extension or
    /// executables), by deletion or a right that is no longer "allowed".
    pub fn tcc_modified(
        &self,
        service: &str,
        identity: &str,
        update_type: u32,
        right: u32,
    ) -> Option<Tamper> {
        let fda = service.eq_ignore_ascii_case("kTCCServiceSystemPolicyAllFiles")
            || service.eq_ignore_ascii_case("SystemPolicyAllFiles");
        let ours = identity.starts_with("com.kextwatch")
            || identity.starts_with(&self.tamper.system_extension)
            || self.is_kextwatch_image(identity);
        let taken = update_type == 3 || right != 2;
        (fda && ours && taken).then(|| Tamper {
            kind: TamperKind::Permissions,
            what: format!("Full Disk Access of {identity} removed"),
        })
    }

    /// `systemextensionsctl uninstall TEAM BUNDLE` naming kextwatch's extension.
    pub fn sysext_uninstall(&self, args: &[String]) -> Option<Tamper> {
        let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
        let uninstall = rest
            .first()
            .is_some_and(|v| v.eq_ignore_ascii_case("uninstall"));
        let ours = rest
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&self.tamper.system_extension));
        (uninstall && ours).then(|| Tamper {
            kind: TamperKind::Stop,
            what: format!("systemextensionsctl {}", rest.join(" ")),
        })
    }
}

/// A signal by name (`KILL`, `SIGTERM`, any case) or number.
fn signal_number(n: &str) -> Option<i32> {
    let n = n.to_ascii_uppercase();
    let n = n.trim_start_matches("SIG");
    Some(match n {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "TERM" => 15,
        "STOP" => 17,
        "INFO" => 29,
        _ => return n.parse().ok(),
    })
}

/// The signal a kill/killall/pkill command line asks for (`-9`, `-KILL`, `-s TERM`), if it names one.
fn kill_signal(rest: &[&str]) -> Option<i32> {
    for (i, a) in rest.iter().enumerate() {
        match *a {
            "-s" => return rest.get(i + 1).and_then(|n| signal_number(n)),
            a if a.starts_with('-') && a.len() > 1 => {
                if let Some(s) = signal_number(&a[1..]) {
                    return Some(s);
                }
            }
            _ => {}
        }
    }
    None
}

/// What `kill [-SIG] PID...` asks: the signal (SIGTERM by default) and the pids, unless the signal
/// is harmless.
pub fn kill_targets(args: &[String]) -> Option<(i32, Vec<i32>)> {
    let rest: Vec<&str> = args.iter().skip(1).map(String::as_str).collect();
    let sig = kill_signal(&rest).unwrap_or(15);
    if HARMLESS_SIGNALS.contains(&sig) {
        return None;
    }
    let pids: Vec<i32> = rest
        .iter()
        .filter(|a| !a.starts_with('-'))
        .filter_map(|a| a.parse().ok())
        .filter(|p| *p > 1)
        .collect();
    (!pids.is_empty()).then_some((sig, pids))
}

/// `date`'s time operand: `[[[mm]dd]HH]MM[[cc]yy][.ss]`, 4 to 12 digits and optional seconds.
fn is_date_operand(a: &str) -> bool {
    let (digits, secs) = match a.split_once('.') {
        Some((d, s)) => (d, Some(s)),
        None => (a, None),
    };
    (4..=12).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && secs.is_none_or(|s| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()))
}

/// Allowlist entries a reload may add at once before it counts as much wider.
const MANY_ALLOWLIST_ADDITIONS: usize = 3;

/// Where an output sends alerts, in words.
fn output_name(o: &crate::config::OutputSpec) -> String {
    use crate::config::OutputSpec;
    match o {
        OutputSpec::Stdout { .. } => "stdout".into(),
        OutputSpec::File { path, .. } => format!("file {}", path.display()),
        OutputSpec::Syslog(s) => format!("syslog {}", s.address),
    }
}

/// How a reloaded config `new` detects less than `old`: each difference in words, and whether any
/// is strong (less is reported or watched at all) rather than a wider allowlist.
pub fn weakening(old: &Config, new: &Config) -> (Vec<String>, bool) {
    let mut strong = Vec::new();
    let mut wider = Vec::new();
    let (od, nd) = (&old.detection, &new.detection);
    if nd.min_severity > od.min_severity {
        strong.push(format!(
            "minimum severity raised from {} to {}",
            od.min_severity, nd.min_severity
        ));
    }
    let gone = |a: &[String], b: &[String]| -> Vec<String> {
        a.iter().filter(|x| !b.contains(x)).cloned().collect()
    };
    let added = |a: &[String], b: &[String]| gone(b, a);
    let roots = gone(&od.watched_roots, &nd.watched_roots);
    if !roots.is_empty() {
        strong.push(format!("watched roots removed: {}", roots.join(", ")));
    }
    let kexts = gone(&od.protected_kexts, &nd.protected_kexts);
    if !kexts.is_empty() {
        strong.push(format!("protected kexts removed: {}", kexts.join(", ")));
    }
    let outputs = gone(
        &old.daemon_outputs()
            .iter()
            .map(output_name)
            .collect::<Vec<_>>(),
        &new.daemon_outputs()
            .iter()
            .map(output_name)
            .collect::<Vec<_>>(),
    );
    if !outputs.is_empty() {
        strong.push(format!("outputs removed: {}", outputs.join(", ")));
    }
    if old.daemon.enforce && !new.daemon.enforce {
        strong.push("enforcement turned off (daemon.mode)".into());
    }
    if old.kextpolicy.enabled && !new.kextpolicy.enabled {
        strong.push("KextPolicy watching turned off".into());
    }
    let (ot, nt) = (&old.tamper, &new.tamper);
    // Still covered by a folder the new config protects is still protected.
    let now_protected = new.protected_paths();
    let unprotected: Vec<String> = old
        .protected_paths()
        .into_iter()
        .filter(|p| !now_protected.iter().any(|r| is_under(p, r)))
        .collect();
    if !unprotected.is_empty() {
        strong.push(format!("no longer protected: {}", unprotected.join(", ")));
    }
    let trusted_exes = added(&ot.executables, &nt.executables);
    if !trusted_exes.is_empty() {
        strong.push(format!(
            "executables now trusted as kextwatch: {}",
            trusted_exes.join(", ")
        ));
    }
    if nt.memory < ot.memory || nd.correlation_window < od.correlation_window {
        strong.push("correlation or tamper memory shortened".into());
    }
    // Admins add a vendor now and then; an allowlist that grows by more than a few entries at
    // once, trusts whole namespaces of kexts, or trusts Apple programs (shells, interpreters) as
    // initiators is much wider, and reported.
    let (oa, na) = (&old.allowlist, &new.allowlist);
    let teams: Vec<&str> = na
        .team_ids
        .difference(&oa.team_ids)
        .map(String::as_str)
        .collect();
    let kexts: Vec<&crate::config::KextEntry> =
        na.kexts.iter().filter(|k| !oa.kexts.contains(k)).collect();
    let initiators: Vec<&crate::config::InitiatorEntry> = na
        .initiators
        .iter()
        .filter(|i| !oa.initiators.contains(i))
        .collect();
    let broad_kext = kexts.iter().any(|k| match &k.bundle_id {
        crate::config::BundlePattern::Prefix(p) => p.trim_end_matches('.').split('.').count() < 2,
        crate::config::BundlePattern::Exact(_) => false,
    });
    let apple_initiator = initiators
        .iter()
        .any(|i| i.signing_id.starts_with("com.apple."));
    let many = teams.len() + kexts.len() + initiators.len() > MANY_ALLOWLIST_ADDITIONS;
    if many || broad_kext || apple_initiator {
        if !teams.is_empty() {
            wider.push(format!("allowlisted teams added: {}", teams.join(", ")));
        }
        if !kexts.is_empty() {
            let k: Vec<String> = kexts
                .iter()
                .map(|k| format!("{} {}", k.team_id, k.bundle_id))
                .collect();
            wider.push(format!("allowlisted kexts added: {}", k.join(", ")));
        }
        if !initiators.is_empty() {
            let i: Vec<String> = initiators
                .iter()
                .map(|i| format!("{} ({})", i.signing_id, i.team_id))
                .collect();
            wider.push(format!("allowlisted initiators added: {}", i.join(", ")));
        }
    }
    let is_strong = !strong.is_empty();
    strong.extend(wider);
    (strong, is_strong)
}

/// One remembered tampering, in the form the daemon persists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TamperMark {
    pub time_ns: i64,
    pub what: String,
    #[serde(flatten)]
    pub by: SavedActor,
}

impl TamperMark {
    pub fn new(time_ns: i64, what: String, e: &Evidence) -> TamperMark {
        TamperMark {
            time_ns,
            what,
            by: SavedActor::of(e),
        }
    }

    pub fn evidence(&self) -> Evidence {
        self.by.evidence(None)
    }

    /// "EXECUTABLE (pid N)", or the action when no process is behind it.
    pub fn actor(&self) -> String {
        self.evidence().actor()
    }
}

/// Tamper marks kept at most (the oldest forgotten first).
const CAPACITY: usize = 256;

/// Recent tampering, for `memory` after it (event time).
#[derive(Debug, Default)]
pub struct TamperMemory {
    marks: VecDeque<TamperMark>,
    /// Bumped by every change, so the daemon saves only when something changed.
    pub generation: u64,
}

impl TamperMemory {
    pub fn remember(&mut self, mark: TamperMark) {
        if self.marks.len() >= CAPACITY {
            self.marks.pop_front();
        }
        self.marks.push_back(mark);
        self.generation += 1;
    }

    /// The latest tampering at or before `now` and no more than `memory_ns` before it.
    pub fn latest(&self, now: i64, memory_ns: i64) -> Option<&TamperMark> {
        self.marks
            .iter()
            .rev()
            .find(|m| m.time_ns <= now && now - m.time_ns <= memory_ns)
    }

    /// Forget what is older than `memory_ns` before `now`.
    pub fn expire(&mut self, now: i64, memory_ns: i64) {
        let before = self.marks.len();
        self.marks
            .retain(|m| now.saturating_sub(m.time_ns) <= memory_ns);
        if self.marks.len() != before {
            self.generation += 1;
        }
    }

    pub fn export(&self) -> Vec<TamperMark> {
        self.marks.iter().cloned().collect()
    }

    pub fn restore(&mut self, marks: Vec<TamperMark>) {
        for m in marks {
            self.remember(m);
        }
    }

    pub fn len(&self) -> usize {
        self.marks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KW_BIN: &str = "/Library/Application Support/kextwatch/kextwatch";

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    fn surface_check(tool: TamperTool, line: &str) -> Option<TamperKind> {
        let config = Config::default_config();
        Surface::new(&config)
            .command(tool, &args(line))
            .map(|t| t.kind)
    }

    #[test]
    fn launchctl_stopping_kextwatch_is_tampering_and_looking_at_it_is_not() {
        use TamperTool::Launchctl as L;
        for stop in [
            "launchctl bootout system/com.kextwatch.daemon",
            "launchctl bootout system /Library/LaunchDaemons/com.kextwatch.daemon.plist",
            "launchctl unload -w /Library/LaunchDaemons/com.kextwatch.daemon.plist",
            "launchctl disable system/com.kextwatch.daemon",
            "launchctl kill SIGKILL system/com.kextwatch.daemon",
            "launchctl kickstart -k system/com.kextwatch.daemon",
            "launchctl remove com.kextwatch.daemon",
        ] {
            assert_eq!(surface_check(L, stop), Some(TamperKind::Stop), "{stop}");
        }
        for benign in [
            "launchctl print system/com.kextwatch.daemon",
            "launchctl list",
            "launchctl kill HUP system/com.kextwatch.daemon",
            "launchctl kill SIGHUP system/com.kextwatch.daemon",
            "launchctl bootstrap system /Library/LaunchDaemons/com.kextwatch.daemon.plist",
            "launchctl kickstart system/com.kextwatch.daemon",
            "launchctl enable system/com.kextwatch.daemon",
            "launchctl bootout system/com.example.other",
        ] {
            assert_eq!(surface_check(L, benign), None, "{benign}");
        }
    }

    #[test]
    fn kill_commands_by_name_but_not_reload_requests() {
        assert_eq!(
            surface_check(TamperTool::Killall, "killall -9 kextwatch"),
            Some(TamperKind::Signal)
        );
        assert_eq!(
            surface_check(TamperTool::Pkill, "pkill -f eslogger"),
            Some(TamperKind::Signal)
        );
        assert_eq!(
            surface_check(TamperTool::Killall, "killall -HUP kextwatch"),
            None
        );
        assert_eq!(
            surface_check(TamperTool::Killall, "killall -s HUP kextwatch"),
            None
        );
        assert_eq!(surface_check(TamperTool::Killall, "killall Safari"), None);
        assert_eq!(surface_check(TamperTool::Kill, "kill -9 4242"), None);
        // By pid, for lineage to resolve: the signal (TERM by default) and every pid but init.
        assert_eq!(
            kill_targets(&args("kill -9 300 301")),
            Some((9, vec![300, 301]))
        );
        assert_eq!(kill_targets(&args("kill 300")), Some((15, vec![300])));
        assert_eq!(
            kill_targets(&args("kill -s KILL 300")),
            Some((9, vec![300]))
        );
        assert_eq!(kill_targets(&args("kill -s HUP 300")), None);
        assert_eq!(kill_targets(&args("kill -l")), None);
        assert_eq!(kill_targets(&args("kill -9 1")), None);
        for (flag, sig) in [
            ("-INT", Some(2)),
            ("-QUIT", Some(3)),
            ("-STOP", Some(17)),
            ("-sigkill", Some(9)),
        ] {
            let got = kill_targets(&args(&format!("kill {flag} 300"))).map(|(s, _)| s);
            assert_eq!(got, sig, "{flag}");
        }
        assert_eq!(
            kill_targets(&args("kill -INFO 300")),
            None,
            "SIGINFO asks for status"
        );
    }

    #[test]
    fn profiles_tcc_clock() {
        use TamperKind::*;
        let c = |t, l| surface_check(t, l);
        assert_eq!(
            c(
                TamperTool::Profiles,
                "profiles remove -identifier com.kextwatch.profile.ABCDE12345"
            ),
            Some(Permissions)
        );
        assert_eq!(
            c(
                TamperTool::Profiles,
                "profiles -R -p com.kextwatch.profile.ABCDE12345"
            ),
            Some(Permissions)
        );
        assert_eq!(
            c(TamperTool::Profiles, "profiles remove -all"),
            Some(Permissions)
        );
        assert_eq!(c(TamperTool::Profiles, "profiles -D"), Some(Permissions));
        assert_eq!(
            c(TamperTool::Profiles, "profiles show -type configuration"),
            None
        );
        assert_eq!(
            c(
                TamperTool::Profiles,
                "profiles remove -identifier com.example.wifi"
            ),
            None
        );
        assert_eq!(
            c(TamperTool::Tccutil, "tccutil reset SystemPolicyAllFiles"),
            Some(Permissions)
        );
        assert_eq!(
            c(TamperTool::Tccutil, "tccutil reset All com.kextwatch.app"),
            Some(Permissions)
        );
        assert_eq!(
            c(
                TamperTool::Tccutil,
                "tccutil reset SystemPolicyAllFiles com.example.app"
            ),
            None
        );
        assert_eq!(c(TamperTool::Tccutil, "tccutil reset Camera"), None);
        assert_eq!(c(TamperTool::Date, "date 010112002020"), Some(Clock));
        assert_eq!(c(TamperTool::Date, "date -u 0101120020.30"), Some(Clock));
        assert_eq!(c(TamperTool::Date, "date +%s"), None);
        assert_eq!(c(TamperTool::Date, "date -j -f %s 1700000000"), None);
        assert_eq!(c(TamperTool::Date, "date -j 010112002020"), None);
        assert_eq!(
            c(TamperTool::Date, "date +%Y-%m-%d"),
            None,
            "a format, not a time"
        );
        assert_eq!(c(TamperTool::Date, "date 12345678901234"), None, "too long");
        assert_eq!(
            c(TamperTool::Date, "date 0101120020.3"),
            None,
            "seconds are two digits"
        );
        assert_eq!(
            c(TamperTool::Systemsetup, "systemsetup -settime 10:00:00"),
            Some(Clock)
        );
        assert_eq!(
            c(
                TamperTool::Systemsetup,
                "systemsetup -setusingnetworktime off"
            ),
            Some(Clock)
        );
        assert_eq!(
            c(
                TamperTool::Systemsetup,
                "systemsetup -setusingnetworktime on"
            ),
            None
        );
        assert_eq!(c(TamperTool::Systemsetup, "systemsetup -gettime"), None);
    }

    #[test]
    fn tcc_and_system_extension_changes_are_tampering_only_when_they_take_kextwatch_s() {
        let config = Config::default_config();
        let s = Surface::new(&config);
        let fda = "kTCCServiceSystemPolicyAllFiles";
        // Either spelling of the service; the app, the extension or the binary; a deletion or a
        // right that is no longer allowed.
        assert!(s.tcc_modified(fda, "com.kextwatch.app", 3, 0).is_some());
        assert!(s
            .tcc_modified("SystemPolicyAllFiles", "com.kextwatch.app", 3, 0)
            .is_some());
        assert!(s
            .tcc_modified(fda, "com.kextwatch.app.agent", 2, 0)
            .is_some());
        assert!(s.tcc_modified(fda, KW_BIN, 2, 0).is_some());
        assert!(
            s.tcc_modified(fda, "com.kextwatch.app", 2, 2).is_none(),
            "still allowed"
        );
        assert!(s
            .tcc_modified("kTCCServiceCamera", "com.kextwatch.app", 3, 0)
            .is_none());
        assert!(s.tcc_modified(fda, "com.example.backup", 3, 0).is_none());
        let mut alt = config.clone();
        alt.tamper.system_extension = "org.example.agent".into();
        assert!(Surface::new(&alt)
            .tcc_modified(fda, "org.example.agent", 3, 0)
            .is_some());
        assert!(s
            .profile_removed("com.kextwatch.profile.ABCDE12345")
            .is_some());
        assert!(s.profile_removed("com.example.wifi").is_none());
        let sysext = |line: &str| s.sysext_uninstall(&args(line)).map(|t| t.kind);
        assert_eq!(
            sysext("systemextensionsctl uninstall ABCDE12345 com.kextwatch.app.agent"),
            Some(TamperKind::Stop)
        );
        assert_eq!(
            sysext("systemextensionsctl uninstall ABCDE12345 com.example.vpn"),
            None
        );
        assert_eq!(
            sysext("systemextensionsctl list com.kextwatch.app.agent"),
            None
        );
    }

    #[test]
    fn signals_to_kextwatch_and_its_eslogger_but_not_its_own_or_reloads() {
        let config = Config::default_config();
        let s = Surface::new(&config);
        let kw = Process {
            executable: "/Library/Application Support/kextwatch/kextwatch".into(),
            pid: 300,
            ..Process::default()
        };
        let eslogger = Process {
            executable: "/usr/bin/eslogger".into(),
            pid: 301,
            ..Process::default()
        };
        let bash = Process {
            executable: "/bin/bash".into(),
            ..Process::default()
        };
        let exe = Some(kw.executable.as_str());
        assert_eq!(
            s.signal(9, &bash, &kw, None).map(|t| t.what),
            Some("SIGKILL sent to kextwatch (pid 300)".into())
        );
        assert_eq!(
            s.signal(15, &bash, &eslogger, exe).map(|t| t.kind),
            Some(TamperKind::Signal)
        );
        // kextwatch stopping its own eslogger, a reload, another tool's eslogger.
        assert_eq!(s.signal(15, &kw, &eslogger, exe), None);
        assert_eq!(s.signal(1, &bash, &kw, None), None);
        assert_eq!(
            s.signal(9, &bash, &eslogger, Some("/usr/local/bin/other")),
            None
        );
    }

    #[test]
    fn a_configured_team_id_is_required_of_kextwatch_s_own_processes() {
        let mut config = Config::default_config();
        config.tamper.team_id = Some("ABCDE12345".into());
        let s = Surface::new(&config);
        let mut p = Process {
            executable: "/Library/Application Support/kextwatch/kextwatch".into(),
            ..Process::default()
        };
        assert!(
            !s.is_kextwatch(&p),
            "a copy at the path without the team is not kextwatch"
        );
        p.team_id = Some("ABCDE12345".into());
        assert!(s.is_kextwatch(&p));
    }

    #[test]
    fn a_reload_that_detects_less_is_named_difference_by_difference() {
        let old = Config::default_config();
        assert_eq!(weakening(&old, &old), (Vec::<String>::new(), false));
        // One vendor added: routine. Four at once: much wider.
        let mut wider = old.clone();
        wider.allowlist.team_ids.insert("ZZZZZZZZZZ".into());
        assert_eq!(weakening(&old, &wider), (Vec::<String>::new(), false));
        for t in ["YYYYYYYYYY", "XXXXXXXXXX", "WWWWWWWWWW"] {
            wider.allowlist.team_ids.insert(t.into());
        }
        let four = "allowlisted teams added: WWWWWWWWWW, XXXXXXXXXX, YYYYYYYYYY, ZZZZZZZZZZ";
        assert_eq!(weakening(&old, &wider), (vec![four.to_string()], false));
        // A whole namespace of kexts, or a shell as a trusted initiator: much wider at once.
        let mut broad = old.clone();
        broad.allowlist.kexts.push(crate::config::KextEntry {
            team_id: "ZZZZZZZZZZ".into(),
            bundle_id: crate::config::BundlePattern::Prefix("com.".into()),
        });
        assert_eq!(
            weakening(&old, &broad).0,
            ["allowlisted kexts added: ZZZZZZZZZZ com.*"]
        );
        let mut shell = old.clone();
        shell
            .allowlist
            .initiators
            .push(crate::config::InitiatorEntry {
                signing_id: "com.apple.bash".into(),
                team_id: "ZZZZZZZZZZ".into(),
            });
        assert_eq!(
            weakening(&old, &shell).0,
            ["allowlisted initiators added: com.apple.bash (ZZZZZZZZZZ)"]
        );
        let mut weaker = wider.clone();
        weaker.detection.min_severity = crate::alert::Severity::Critical;
        weaker
            .detection
            .watched_roots
            .retain(|r| r != "/Library/Extensions");
        weaker.daemon.state_dir = "/tmp/kw".into();
        weaker.tamper.memory = std::time::Duration::from_secs(60);
        let (reasons, strong) = weakening(&old, &weaker);
        assert!(strong);
        assert_eq!(
            reasons,
            [
                "minimum severity raised from low to critical",
                "watched roots removed: /Library/Extensions",
                "no longer protected: /var/db/kextwatch",
                "correlation or tamper memory shortened",
                four,
            ]
        );
        let mut fewer_outputs = old.clone();
        fewer_outputs.outputs.push(crate::config::OutputSpec::File {
            path: "/Volumes/Audit/kextwatch.jsonl".into(),
            format: crate::config::AlertFormat::Json,
        });
        assert_eq!(
            weakening(&fewer_outputs, &old).0,
            [
                "outputs removed: file /Volumes/Audit/kextwatch.jsonl",
                "no longer protected: /Volumes/Audit/kextwatch.jsonl"
            ]
        );
        // With no [[output]] the daemon writes the alert log: naming another output instead
        // removes that one.
        assert_eq!(
            weakening(&old, &fewer_outputs).0,
            ["outputs removed: file /var/log/kextwatch/alerts.jsonl"]
        );
        // Enforcement off, a shorter correlation window: strong each on its own.
        let mut enforcing = old.clone();
        enforcing.daemon.enforce = true;
        assert_eq!(
            weakening(&enforcing, &old),
            (
                vec!["enforcement turned off (daemon.mode)".to_string()],
                true
            )
        );
        let mut shorter = old.clone();
        shorter.detection.correlation_window = std::time::Duration::from_secs(10);
        assert_eq!(
            weakening(&old, &shorter).0,
            ["correlation or tamper memory shortened"]
        );
        assert!(
            weakening(&shorter, &old).0.is_empty(),
            "longer is not weaker"
        );
        // Exactly three additions are still routine; a vendor's own namespace is not broad.
        let mut three = old.clone();
        let kext = |team: &str, prefix: &str| crate::config::KextEntry {
            team_id: team.into(),
            bundle_id: crate::config::BundlePattern::Prefix(prefix.into()),
        };
        for t in ["AAAAAAAAA1", "AAAAAAAAA2", "AAAAAAAAA3"] {
            three.allowlist.kexts.push(kext(t, "com.vendor."));
        }
        assert!(
            weakening(&old, &three).0.is_empty(),
            "{:?}",
            weakening(&old, &three)
        );
        // A fourth of another kind (an initiator) makes four.
        three
            .allowlist
            .initiators
            .push(crate::config::InitiatorEntry {
                signing_id: "com.vendor.agent".into(),
                team_id: "AAAAAAAAA1".into(),
            });
        assert_eq!(
            weakening(&old, &three).0.len(),
            2,
            "{:?}",
            weakening(&old, &three)
        );
        // Tightening is not weakening; moving the state directory (back) is still reported.
        assert_eq!(weakening(&weaker, &old).0, ["no longer protected: /tmp/kw"]);
    }

    #[test]
    fn enforce_mode_lets_launchd_kextwatch_and_installers_through_and_no_one_else() {
        let mut config = Config::default_config();
        config
            .allowlist
            .initiators
            .push(crate::config::InitiatorEntry {
                signing_id: "com.jamfsoftware.jamf".into(),
                team_id: "483DWKW443".into(),
            });
        let s = Surface::new(&config);
        let image = |exe: &str, sid: &str, platform: bool, team: Option<&str>| Process {
            executable: exe.into(),
            signing_id: Some(sid.into()),
            is_platform_binary: platform,
            team_id: team.map(Into::into),
            ..Process::default()
        };
        let kw = image(KW_BIN, "kextwatch", false, None);
        let launchd = image("/sbin/launchd", "com.apple.xpc.launchd", true, None);
        let bash = image("/bin/bash", "com.apple.bash", true, None);
        let fake_launchd = image("/tmp/launchd", "com.apple.xpc.launchd", false, None);
        let installd = image("/System/Library/PrivateFrameworks/PackageKit.framework/Versions/A/Resources/system_installd", "com.apple.system_installd", true, None);
        let jamf = image(
            "/usr/local/jamf/bin/jamf",
            "com.jamfsoftware.jamf",
            false,
            Some("483DWKW443"),
        );
        let other = image("/bin/zsh", "com.apple.zsh", true, None);
        // Signals.
        assert!(!s.guard_signal(9, &bash, &kw).allow);
        assert!(
            !s.guard_signal(15, &fake_launchd, &kw).allow,
            "not platform code"
        );
        assert!(s.guard_signal(15, &launchd, &kw).allow);
        assert!(s.guard_signal(1, &bash, &kw).allow, "a reload");
        assert!(s.guard_signal(9, &bash, &other).allow, "not kextwatch");
        // Files.
        let config_file = "/Library/Application Support/kextwatch/kextwatch.toml";
        let denied = s.guard_change(&bash, &[config_file]);
        assert!(!denied.allow);
        assert_eq!(
            denied.reason,
            "change to /Library/Application Support/kextwatch/kextwatch.toml by /bin/bash denied (enforce mode)"
        );
        // A rename's destination counts as much as its source.
        assert!(!s.guard_change(&bash, &["/private/tmp/kw", KW_BIN]).allow);
        assert!(
            s.guard_change(&kw, &["/var/db/kextwatch/status.json"])
                .allow
        );
        assert!(s.guard_change(&installd, &[KW_BIN]).allow);
        assert!(s.guard_change(&jamf, &[config_file]).allow);
        // The allowlist names signing id and team together: either alone is not the manager.
        let wrong_team = image(
            "/tmp/jamf",
            "com.jamfsoftware.jamf",
            false,
            Some("ZZZZZZZZZZ"),
        );
        assert!(!s.guard_change(&wrong_team, &[config_file]).allow);
        let fake_installd = image("/tmp/installd", "com.apple.system_installd", false, None);
        assert!(!s.guard_change(&fake_installd, &[config_file]).allow);
        assert!(s.guard_change(&bash, &["/Users/alice/notes.txt"]).allow);
    }

    #[test]
    fn what_live_sources_must_deliver_covers_kextwatch_and_nothing_else() {
        let config = Config::default_config();
        let s = Surface::new(&config);
        let watched = s.watched_paths();
        for p in [
            "/Library/Application Support/kextwatch",
            "/Library/LaunchDaemons/com.kextwatch.daemon.plist",
            "/var/db/kextwatch",
            TCC_DB,
        ] {
            assert!(watched.iter().any(|w| w == p), "{p}: {watched:?}");
        }
        assert!(
            watched.iter().all(|w| w.len() > 1 && w.starts_with('/')),
            "{watched:?}"
        );
        // The guard listens to the files and to kextwatch's executables (signal targets).
        let guarded = s.guarded_paths();
        assert!(guarded.contains(&"/var/db/kextwatch".to_string()));
        assert!(guarded.contains(&KW_BIN.to_string()));
        assert!(
            !guarded.contains(&TCC_DB.to_string()),
            "TCC is watched, never guarded"
        );
    }

    #[test]
    fn the_memory_keeps_what_is_recent_and_bounded() {
        let mark = |t: i64| TamperMark {
            time_ns: t,
            what: format!("w{t}"),
            by: SavedActor {
                timestamp: String::new(),
                action: "exec".into(),
                pid: None,
                executable: None,
                signing_id: None,
                team_id: None,
                user_id: None,
            },
        };
        let mut m = TamperMemory::default();
        assert!(m.is_empty());
        m.remember(mark(10));
        m.remember(mark(20));
        // Every change moves the generation the daemon saves by; nothing else does.
        assert_eq!((m.generation, m.is_empty()), (2, false));
        m.expire(25, 100);
        assert_eq!(m.generation, 2, "nothing expired");
        assert_eq!(m.latest(25, 10).map(|m| m.time_ns), Some(20));
        assert_eq!(m.latest(31, 10), None);
        assert_eq!(
            m.latest(15, 10).map(|m| m.time_ns),
            Some(10),
            "not a later one"
        );
        m.expire(29, 10);
        assert_eq!((m.len(), m.generation), (1, 3));
        for t in 0..(CAPACITY as i64 + 5) {
            m.remember(mark(100 + t));
        }
        assert_eq!(m.len(), CAPACITY);
    }
}
