//! Per-event rules: what an event is, and the context that sets its severity.
//!
//! The seed's rule holds throughout: an action alone (a kext load, a file in /Library/Extensions) is
//! at most `info` or `low`; each piece of context that makes it suspicious raises it and is written
//! into `reasons`.

use super::lineage::{Hop, Lineage, ProcessTable};
use super::tamper;
use super::tools::{
    self, Invocation, KextAction, KextCommand, PolicyArea, PolicyChange, Tool, Weakening,
};
use super::verdict::Verdict;
use crate::alert::attack::{self, Technique};
use crate::alert::{Evidence, FileInfo, KextInfo, LineageHop, Severity};
use crate::config::{Config, KextTrust};
use crate::event::{Event, EventKind, Exec, Process, NO_AUDIT_USER};
use crate::kextpolicy::PolicyFacts;
use crate::path::{bundle_under, kext_store, normalize, resolve, unexpected_location};
use crate::signing::Signature;
use std::collections::HashMap;

const T_KEXT: &Technique = &attack::KERNEL_MODULES;
const T_IMPAIR_DEFENSES: &Technique = &attack::DISABLE_TOOLS;
const T_CODE_SIGNING_POLICY: &Technique = &attack::CODE_SIGNING_POLICY;
const T_GATEKEEPER: &Technique = &attack::GATEKEEPER_BYPASS;
const T_SYSTEM_DISCOVERY: &Technique = &attack::SYSTEM_INFORMATION_DISCOVERY;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleDef {
    pub id: &'static str,
    pub name: &'static str,
    /// Most specific first (sub-techniques where ATT&CK has one).
    pub techniques: &'static [&'static Technique],
}

macro_rules! rules {
    ($($c:ident = $id:literal, $name:literal, [$($t:expr),*];)*) => {
        $(pub const $c: RuleDef = RuleDef { id: $id, name: $name, techniques: &[$($t),*] };)*
        /// Every rule, for documentation and tests.
        pub const ALL_RULES: &[RuleDef] = &[$($c),*];
    };
}

rules! {
    DISCOVERY = "KW-1000", "Kext or security policy discovery", [T_SYSTEM_DISCOVERY];
    TOOL_LOAD = "KW-1001", "Kernel extension load requested with a kext tool", [T_KEXT];
    TOOL_UNLOAD = "KW-1002", "Kernel extension unload requested with a kext tool", [T_KEXT];
    TOOL_REBUILD = "KW-1003", "Kext collection or cache rebuilt", [T_KEXT];
    ROOT_CHANGE = "KW-2001", "Change under a kernel extension directory", [T_KEXT];
    STORE_CHANGE = "KW-2002", "Kext policy or collection store changed outside Apple's daemons", [T_KEXT, T_IMPAIR_DEFENSES];
    KEXT_LOADED = "KW-3001", "Kernel extension loaded", [T_KEXT];
    KEXT_UNLOADED = "KW-3002", "Kernel extension unloaded", [T_KEXT];
    KEXT_LOAD_DECISION = "KW-3003", "Kernel extension load answered by enforcement", [T_KEXT];
    SIP_CHANGE = "KW-4001", "System Integrity Protection change attempted", [T_IMPAIR_DEFENSES, T_CODE_SIGNING_POLICY];
    NVRAM_CHANGE = "KW-4002", "Boot arguments or SIP NVRAM variable changed", [T_CODE_SIGNING_POLICY, T_IMPAIR_DEFENSES];
    BOOT_POLICY_CHANGE = "KW-4003", "Boot security policy changed", [T_CODE_SIGNING_POLICY];
    KEXT_CONSENT_CHANGE = "KW-4004", "Kext user-consent policy changed", [T_CODE_SIGNING_POLICY, T_KEXT];
    GATEKEEPER_CHANGE = "KW-4005", "Gatekeeper policy changed", [T_GATEKEEPER, T_IMPAIR_DEFENSES];
    SIP_STATE = "KW-4007", "System Integrity Protection is weakened", [T_IMPAIR_DEFENSES, T_CODE_SIGNING_POLICY];
    SYSEXT_CHANGE = "KW-4006", "System extension policy changed", [T_IMPAIR_DEFENSES, T_CODE_SIGNING_POLICY];
    USER_APPROVAL = "KW-5001", "Kext approved in KextPolicy", [T_KEXT, T_CODE_SIGNING_POLICY];
    APPROVAL_WITHDRAWN = "KW-5002", "Kext approval revoked or removed", [T_KEXT];
    APPROVAL_MODIFIED = "KW-5003", "Kext approval record modified", [T_KEXT, T_CODE_SIGNING_POLICY];
    MDM_APPROVAL = "KW-5004", "Kext approval by MDM changed", [T_KEXT, T_CODE_SIGNING_POLICY];
    HISTORY_LOAD = "KW-5005", "Kext load recorded by KextPolicy", [T_KEXT];
    IDENTITY_CHANGED = "KW-5006", "Kext identity changed at a path", [T_KEXT];
    DATABASE_UNAVAILABLE = "KW-5007", "KextPolicy database unavailable", [T_IMPAIR_DEFENSES];
    STAGED_THEN_LOADED = "KW-9001", "Kernel extension staged then loaded", [T_KEXT];
    STAGED_THEN_APPROVED = "KW-9003", "Kernel extension approved shortly after being staged", [T_KEXT, T_CODE_SIGNING_POLICY];
    KEXT_AFTER_UNSIGNED_ROOT = "KW-9004", "Kext loaded shortly after unsigned code ran as root", [T_KEXT];
    KEXT_AFTER_WEAKENING = "KW-9002", "Kext activity after SIP or boot policy weakening", [T_KEXT, T_IMPAIR_DEFENSES, T_CODE_SIGNING_POLICY];
    TAMPER_STOP = "KW-6001", "kextwatch stopped, disabled or uninstalled", [T_IMPAIR_DEFENSES];
    TAMPER_SIGNAL = "KW-6002", "Signal sent to stop kextwatch or its event source", [T_IMPAIR_DEFENSES];
    TAMPER_FILES = "KW-6003", "kextwatch's files changed", [T_IMPAIR_DEFENSES];
    TAMPER_PERMISSIONS = "KW-6004", "kextwatch's profile or Full Disk Access removed", [T_IMPAIR_DEFENSES];
    TAMPER_CLOCK = "KW-6005", "System clock set", [T_IMPAIR_DEFENSES];
    CONFIG_WEAKENED = "KW-6006", "Detection weakened by a configuration reload", [T_IMPAIR_DEFENSES];
    START_CHECK = "KW-6007", "kextwatch's installation or state changed while it was not running", [T_IMPAIR_DEFENSES];
    KEXT_AFTER_TAMPER = "KW-9005", "Kext activity after tampering with kextwatch", [T_KEXT, T_IMPAIR_DEFENSES];
}

/// Apple daemons that manage kexts, policy and installs as part of normal operation. Matched by
/// signing id on platform binaries only, so a renamed copy does not qualify.
const SYSTEM_ACTORS: [&str; 10] = [
    "com.apple.kernelmanagerd",
    "com.apple.kextd",
    "com.apple.syspolicyd",
    "com.apple.installd",
    "com.apple.system_installd",
    "com.apple.xpc.launchd",
    "com.apple.softwareupdated",
    // kernelmanagerd runs these to stage and rebuild; a person running them is caught at exec.
    "com.apple.kmutil",
    "com.apple.kextcache",
    "com.apple.kextload",
];

/// Apple daemons that maintain kextwatch's files or the TCC database as part of normal operation
/// (log rotation, TCC itself): their changes are not tampering. Platform binaries only.
const FILE_MAINTAINERS: [&str; 2] = ["com.apple.newsyslog", "com.apple.tccd"];

/// Kext activity an event represents, for correlation.
#[derive(Debug, Clone, PartialEq)]
pub enum Activity {
    /// A load, naming what it can: resolved paths and bundle ids.
    Load {
        paths: Vec<String>,
        bundle_ids: Vec<String>,
    },
    Unload,
    Rebuild,
    /// A bundle written or moved into a watched root.
    Staged {
        bundle: String,
    },
    /// A bundle deleted or moved out of a watched root (the bundle folder itself).
    Removed {
        bundle: String,
    },
    /// A kext approval granted (KextPolicy).
    Approval,
}

/// What one event amounts to before correlation and folding.
#[derive(Debug, Clone)]
pub struct Finding {
    pub rule: RuleDef,
    pub severity: Severity,
    pub reasons: Vec<String>,
    /// The reason that last set the severity (an index into `reasons`): the alert's message
    /// leads with it. None: the rule's own severity, explained by the first reason.
    pub headline: Option<usize>,
    /// Techniques beyond the rule's.
    pub extra_techniques: Vec<&'static Technique>,
    pub kext: Option<KextInfo>,
    pub file: Option<FileInfo>,
    /// What the alert is about, for folding duplicates ("/Library/Extensions/Foo.kext", "csrutil disable").
    pub subject: String,
    pub activity: Option<Activity>,
    /// The policy change, if this weakens protection (a correlation signal).
    pub weakening: Option<String>,
    /// The tampering with kextwatch, in words (a durable correlation signal).
    pub tamper: Option<String>,
    /// The actor or kext is trusted (Apple system daemon, allowlisted): no correlation either way.
    pub trusted: bool,
    /// Earlier events that correlation tied to this one.
    pub related: Vec<Evidence>,
    /// The process chain behind the action, when lineage resolved one beyond the acting process.
    pub lineage: Vec<LineageHop>,
    /// Correlation already tied this to a staging inside its window.
    pub staging_correlated: bool,
}

impl Finding {
    pub(crate) fn new(rule: RuleDef, severity: Severity, subject: String) -> Finding {
        Finding {
            rule,
            severity,
            reasons: Vec::new(),
            headline: None,
            extra_techniques: Vec::new(),
            kext: None,
            file: None,
            subject,
            activity: None,
            weakening: None,
            tamper: None,
            trusted: false,
            related: Vec::new(),
            lineage: Vec::new(),
            staging_correlated: false,
        }
    }

    /// One step more severe because of `reason`.
    pub(crate) fn raise(&mut self, reason: String) {
        self.settle(self.severity.raised(), reason);
    }

    /// At least `at_least` because of `reason` (the headline only if it raised the severity).
    pub(crate) fn floor(&mut self, at_least: Severity, reason: String) {
        if at_least > self.severity {
            self.settle(at_least, reason);
        } else {
            self.reasons.push(reason);
        }
    }

    /// Exactly `severity`, up or down, because of `reason`.
    pub(crate) fn settle(&mut self, severity: Severity, reason: String) {
        self.severity = severity;
        self.headline = Some(self.reasons.len());
        self.reasons.push(reason);
    }

    /// The reason the message leads with.
    pub fn main_reason(&self) -> Option<&str> {
        self.reasons
            .get(self.headline.unwrap_or(0))
            .map(String::as_str)
    }
}

/// Which initiator context raises severity (see `Rules::initiator_context`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Raise {
    UntrustedAndInteractive,
    Interactive,
    Nothing,
}

/// Who acted, as far as trust goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Actor {
    System,
    Allowlisted,
    Other,
}

pub fn is_system_actor(p: &Process) -> bool {
    p.is_platform_binary
        && p.signing_id
            .as_deref()
            .is_some_and(|s| SYSTEM_ACTORS.contains(&s))
}

/// Apple's MDM client, which installs and removes managed profiles for the fleet's MDM.
fn is_mdm_client(p: &Process) -> bool {
    p.is_platform_binary && p.signing_id.as_deref() == Some("com.apple.mdmclient")
}

/// Apple's own `kextload`, `kextutil` or `kextunload` (a copy elsewhere, or not platform code, is not).
fn is_kext_shim(p: &Process) -> bool {
    match Tool::identify(&p.executable, p.signing_id.as_deref()) {
        Some(t @ (Tool::Kextload | Tool::Kextutil | Tool::Kextunload)) => {
            tools::masquerade_reason(t, p).is_none()
        }
        _ => false,
    }
}

fn hop(h: &Hop) -> LineageHop {
    LineageHop {
        pid: h.pid,
        executable: h.executable.to_string(),
        signing_id: h.signing_id.as_deref().map(Into::into),
        team_id: h.team_id.as_deref().map(Into::into),
    }
}

pub fn user_label(p: &Process) -> String {
    if p.auid != NO_AUDIT_USER {
        p.auid.to_string()
    } else {
        p.euid.to_string()
    }
}

fn identity(p: &Process) -> String {
    match (&p.signing_id, &p.team_id) {
        (Some(s), Some(t)) => format!("{s}, team {t}"),
        (Some(s), None) if p.is_platform_binary => format!("{s}, Apple"),
        (Some(s), None) => format!("{s}, no team"),
        (None, _) => "no signing id".to_string(),
    }
}

/// Signing facts about a kext bundle, keyed by its normalised path (lower-case).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFacts {
    /// The bundle's path as the event named it (normalised, case kept), for reasons.
    pub path: String,
    pub signature: Signature,
    pub team_id: Option<String>,
    pub bundle_id: Option<String>,
    /// Security.framework rejected the signature (the OSStatus): the code was changed after
    /// signing. Only known on macOS; `None` elsewhere or when it verified.
    pub rejected: Option<i32>,
    /// Why the bundle could not be read, when it could not (e.g. an Info.plist built to crash a
    /// parser): the reason it counts as invalid.
    pub problem: Option<String>,
}

impl BundleFacts {
    /// The reason this bundle has no developer identity, if it has none.
    pub(crate) fn no_identity(&self, path: &str) -> Option<String> {
        if !self.signature.lacks_identity() {
            return None;
        }
        let what = self.signature.as_str();
        Some(match self.problem.as_deref() {
            Some(problem) if self.signature == Signature::Invalid => {
                format!("kext bundle {path} is {what} (no developer identity): {problem}")
            }
            _ => format!("kext bundle {path} is {what} (no developer identity)"),
        })
    }
}

/// The key a bundle path is known by: normalised, ASCII lower-case (APFS ignores case).
pub fn bundle_key(path: &str) -> String {
    normalize(path).trim_end_matches('/').to_ascii_lowercase()
}

/// What a file event changed under a watched root: (verb, path, other path, whether it stages).
fn file_change_target<'e>(
    kind: &'e EventKind,
    roots: &[String],
) -> Option<(&'static str, &'e str, Option<&'e str>, bool)> {
    Some(match kind {
        EventKind::Create { path } => ("created", path, None, true),
        EventKind::Write { path } => ("written", path, None, true),
        EventKind::Close {
            path,
            modified: true,
        } => ("modified", path, None, true),
        EventKind::SetMode { path, .. } => ("permissions changed", path, None, true),
        EventKind::SetOwner { path, .. } => ("ownership changed", path, None, true),
        EventKind::SetExtattr { path, .. } => ("extended attribute set", path, None, true),
        // Removing quarantine, unlocking with chflags, opening the ACL or backdating times
        // prepares a bundle as much as writing it does.
        EventKind::DeleteExtattr { path, name } if name == "com.apple.quarantine" => {
            ("quarantine removed", path, None, true)
        }
        EventKind::DeleteExtattr { path, .. } => ("extended attribute removed", path, None, true),
        EventKind::SetFlags { path, .. } => ("file flags changed", path, None, true),
        EventKind::SetAcl { path } => ("access control list changed", path, None, true),
        EventKind::Utimes { path } => ("timestamps set", path, None, true),
        EventKind::Truncate { path } => ("truncated", path, None, true),
        EventKind::Link {
            source,
            destination,
        } => ("hard-linked in", destination, Some(source.as_str()), true),
        EventKind::Clone {
            source,
            destination,
        } => ("cloned in", destination, Some(source.as_str()), true),
        EventKind::Unlink { path } => ("deleted", path, None, false),
        EventKind::Rename {
            source,
            destination,
        } => {
            let dest = normalize(destination);
            if bundle_under(&dest, roots).is_some() || kext_store(&dest).is_some() {
                ("moved in", destination, Some(source.as_str()), true)
            } else {
                ("moved out", source, Some(destination.as_str()), false)
            }
        }
        _ => return None,
    })
}

/// Kext paths a tool invocation names, resolved against its working directory.
fn resolved_paths(cmd: &KextCommand, exec: &Exec) -> Vec<String> {
    cmd.paths
        .iter()
        .map(|p| resolve(p, exec.cwd.as_deref()))
        .collect()
}

/// Kext bundles an event stages or loads by path (normalised, as written): what identity lookups
/// should read before the event is evaluated.
pub fn referenced_bundles(config: &Config, ev: &Event) -> Vec<String> {
    match &ev.kind {
        EventKind::Exec(exec) => {
            let Some(tool) =
                Tool::identify(&exec.target.executable, exec.target.signing_id.as_deref())
            else {
                return Vec::new();
            };
            match tools::classify(tool, &exec.args) {
                Invocation::Kext(cmd) if cmd.action == KextAction::Load => {
                    resolved_paths(&cmd, exec)
                }
                _ => Vec::new(),
            }
        }
        kind => {
            let roots = &config.detection.watched_roots;
            match file_change_target(kind, roots) {
                Some((_, path, _, true)) => bundle_under(&normalize(path), roots)
                    .map(|(_, b)| vec![b.to_string()])
                    .unwrap_or_default(),
                _ => Vec::new(),
            }
        }
    }
}

pub struct Rules<'a> {
    pub config: &'a Config,
    /// What KextPolicy says (None without it): teams behind bundle ids, approvals.
    pub policy: Option<&'a PolicyFacts>,
    /// Bundle identities read from disk, by `bundle_key`.
    pub bundles: &'a HashMap<String, BundleFacts>,
    /// Process images seen so far, for resolving who is behind an action.
    pub lineage: &'a ProcessTable,
    /// What kextwatch itself is (tampering).
    pub surface: &'a tamper::Surface,
}

impl Rules<'_> {
    pub fn evaluate(&self, ev: &Event) -> Option<Finding> {
        match &ev.kind {
            EventKind::Exec(exec) => self.exec(ev, exec),
            EventKind::KextLoad { identifier } => Some(self.kext_loaded(ev, identifier)),
            EventKind::KextUnload { identifier } => Some(self.kext_unloaded(ev, identifier)),
            EventKind::KextLoadDecision {
                identifier,
                allowed,
                reason,
            } => {
                let mut f = Finding::new(KEXT_LOAD_DECISION, Severity::Info, identifier.clone());
                f.kext = Some(KextInfo {
                    bundle_id: identifier.clone(),
                    team_id: None,
                });
                if *allowed {
                    f.trusted = true;
                    let why = format!("load allowed: {reason}");
                    if reason.contains("fail open") {
                        f.settle(Severity::Medium, why);
                    } else {
                        f.reasons.push(why);
                    }
                } else {
                    f.floor(
                        Severity::High,
                        format!("load denied by kextwatch: {reason}"),
                    );
                }
                Some(f)
            }
            EventKind::Signal { signal, target } => {
                let parent = self
                    .lineage
                    .chain(target)
                    .get(1)
                    .map(|h| h.executable.clone());
                let t = self
                    .surface
                    .signal(*signal, &ev.process, target, parent.as_deref())?;
                self.tamper(ev, t, None)
            }
            EventKind::SetTime => {
                // Apple's time daemon keeps the clock right; anyone else setting it is noted.
                let p = &ev.process;
                if p.is_platform_binary && p.signing_id.as_deref() == Some("com.apple.timed") {
                    return None;
                }
                let what = "the system clock was set".to_string();
                let t = tamper::Tamper {
                    kind: tamper::TamperKind::Clock,
                    what,
                };
                self.tamper(ev, t, None)
            }
            EventKind::ProfileRemoved {
                identifier,
                managed,
                instigator,
            } => {
                let t = self.surface.profile_removed(identifier)?;
                let actor = instigator.as_deref().unwrap_or(&ev.process);
                // MDM taking back a profile it installed is the fleet's own decision.
                if *managed && is_mdm_client(actor) {
                    return None;
                }
                self.tamper_by(actor, t, None)
            }
            EventKind::TccModified {
                service,
                identity,
                update_type,
                right,
                instigator,
            } => {
                let t = self
                    .surface
                    .tcc_modified(service, identity, *update_type, *right)?;
                let actor = instigator.as_deref().unwrap_or(&ev.process);
                self.tamper_by(actor, t, None)
            }
            // Fork and exit feed lineage only: `file_change` finds no path in them.
            _ => self.tamper_file(ev).or_else(|| self.file_change(ev)),
        }
    }

    fn actor(&self, p: &Process) -> Actor {
        if is_system_actor(p) {
            Actor::System
        } else if self
            .config
            .allowlist
            .initiator_allowed(p.signing_id.as_deref(), p.team_id.as_deref())
        {
            Actor::Allowlisted
        } else {
            Actor::Other
        }
    }

    /// Who is behind `p`'s action: `p` itself when it is trusted or third-party code, else the
    /// initiator lineage finds above it (see `lineage`). Sets `f.lineage` when the walk went past
    /// `p`; an initiator that is unsigned or ad-hoc code comes back as the taint.
    fn resolve_initiator(
        &self,
        f: &mut Finding,
        p: &Process,
    ) -> (Actor, Option<Process>, Option<String>) {
        let own = self.actor(p);
        if own != Actor::Other {
            return (own, None, None);
        }
        let l = Lineage::resolve(self.lineage, p, |h| {
            self.actor(&h.as_process()) != Actor::Other
        });
        if l.initiator == Some(0) {
            // Third-party code acting itself: it is the initiator, with no one to vouch for it.
            return (Actor::Other, None, None);
        }
        let end = l.initiator.map_or(l.chain.len(), |i| i + 1);
        if end > 1 || l.responsible.is_some() {
            f.lineage = l.chain[..end]
                .iter()
                .chain(l.responsible.as_ref())
                .map(hop)
                .collect();
        }
        let Some(init) = l.initiator() else {
            return (Actor::Other, None, None);
        };
        let via = l.describe();
        if let Some(t) = l.taint().filter(|t| t.pid != p.pid) {
            let taint = format!(
                "started by unsigned or ad-hoc code {} ({via})",
                t.executable
            );
            return (Actor::Other, Some(t.as_process()), Some(taint));
        }
        let who = init.as_process();
        let actor = self.actor(&who);
        match actor {
            Actor::System => f.reasons.push(format!(
                "run on behalf of Apple's {} ({via})",
                who.executable
            )),
            Actor::Allowlisted => f.reasons.push(format!(
                "initiated by allowlisted management tool {} ({}) through {via}",
                who.executable,
                identity(&who)
            )),
            Actor::Other => {}
        }
        (actor, Some(who), None)
    }

    /// Apply what the initiator tells: trusted actors mark the finding trusted; for others, `raise`
    /// says which context raises severity (the rest is only stated). An unsigned initiator always
    /// makes it at least high.
    fn initiator_context(&self, f: &mut Finding, p: &Process, raise: Raise) -> Actor {
        let (actor, behind, taint) = self.resolve_initiator(f, p);
        match actor {
            Actor::System => f.trusted = true,
            Actor::Allowlisted => {
                f.trusted = true;
                if behind.is_none() {
                    f.reasons.push(format!(
                        "initiated by allowlisted management tool {} ({})",
                        p.executable,
                        identity(p)
                    ));
                }
            }
            Actor::Other => {
                // Name the program behind the action when lineage found one, else the actor.
                let named = behind.as_ref().unwrap_or(p);
                let who = format!(
                    "initiator {} ({}) is not an allowlisted management tool",
                    named.executable,
                    identity(named)
                );
                let tty = p.tty.as_ref().map(|tty| {
                    format!(
                        "run interactively from a terminal ({tty}) by user {}",
                        user_label(p)
                    )
                });
                for (reason, raises) in [
                    (Some(who), raise == Raise::UntrustedAndInteractive),
                    (tty, raise != Raise::Nothing),
                ] {
                    match reason {
                        Some(r) if raises => f.raise(r),
                        Some(r) => f.reasons.push(r),
                        None => {}
                    }
                }
                if p.is_unsigned_or_adhoc() {
                    f.floor(
                        Severity::High,
                        format!("initiator {} is unsigned or ad-hoc signed", p.executable),
                    );
                }
                if let Some(t) = taint {
                    f.floor(Severity::High, t);
                }
            }
        }
        actor
    }

    /// What the bundle's signature says: no identity is critical, an unlisted team high, an
    /// allowlisted team lowers severity.
    fn bundle_context(&self, f: &mut Finding, path: &str) {
        let Some(b) = self.bundles.get(&bundle_key(path)) else {
            return;
        };
        if f.kext.is_none() {
            f.kext = b.bundle_id.clone().map(|bundle_id| KextInfo {
                bundle_id,
                team_id: b.team_id.clone(),
            });
        }
        let apple_id = b
            .bundle_id
            .as_deref()
            .filter(|id| id.starts_with("com.apple."));
        if let Some(id) =
            apple_id.filter(|_| !normalize(path).to_ascii_lowercase().starts_with("/system/"))
        {
            f.trusted = false;
            f.floor(
                Severity::Critical,
                format!("kext bundle {path} claims the Apple bundle id {id} outside /System"),
            );
        }
        if let Some(status) = b.rejected {
            f.trusted = false;
            f.floor(
                Severity::Critical,
                format!(
                    "the signature of the kext bundle {path} does not verify (Security.framework status {status}): its code was changed after signing"
                ),
            );
            // Whoever signed it once no longer stands behind this code: no allowlist lowering.
            return;
        }
        if let Some(reason) = b.no_identity(path) {
            f.trusted = false;
            f.floor(Severity::Critical, reason);
            return;
        }
        let (Signature::Developer, Some(team)) = (b.signature, &b.team_id) else {
            return;
        };
        let bundle_id = b.bundle_id.as_deref().unwrap_or("");
        if self.config.allowlist.kext_trust(Some(team), bundle_id) == KextTrust::Allowlisted {
            // The allowlist vouches for the vendor's code, not for how it arrived: a vendor-signed
            // kext dropped by unsigned code or moved in from /tmp (a vulnerable driver brought
            // along) keeps its high severity.
            let why = format!("kext bundle {path} is signed by allowlisted team {team}");
            if f.severity < Severity::High {
                f.settle(f.severity.lowered(), why);
            } else {
                f.reasons
                    .push(format!("{why}, which does not excuse how it arrived"));
            }
        } else {
            f.trusted = false;
            f.floor(
                Severity::High,
                format!("kext bundle {path} is signed by team {team}, which is not allowlisted"),
            );
        }
    }

    fn exec(&self, ev: &Event, exec: &Exec) -> Option<Finding> {
        let target = &exec.target;
        let surface = self.surface;
        if let Some(tool) =
            tamper::TamperTool::identify(&target.executable, target.signing_id.as_deref())
        {
            let t = surface
                .command(tool, &exec.args)
                .or_else(|| self.kill_by_pid(tool, exec))?;
            return self.tamper(ev, t, None);
        }
        let tool = Tool::identify(&target.executable, target.signing_id.as_deref())?;
        if tool == Tool::Systemextensionsctl {
            if let Some(t) = surface.sysext_uninstall(&exec.args) {
                return self.tamper(ev, t, None);
            }
        }
        if tool == Tool::Kmutil && is_kext_shim(&ev.process) {
            // Apple's kextload/kextutil/kextunload run kmutil to do their work: that command was
            // reported when the shim itself ran, so its kmutil is not a second alert.
            return None;
        }
        let masquerade = tools::masquerade_reason(tool, target);
        let mut f = match tools::classify(tool, &exec.args) {
            Invocation::Discovery { what } => {
                let mut f = Finding::new(DISCOVERY, Severity::Info, what.clone());
                f.reasons.push(format!("discovery only: {what}"));
                f.trusted = true;
                if let Some(m) = masquerade {
                    f.floor(Severity::Medium, m);
                }
                return Some(f);
            }
            Invocation::Kext(cmd) => self.kext_command(ev, exec, tool, cmd),
            Invocation::PolicyChange(change) => self.policy_change(ev, change),
            Invocation::Unrelated => return None,
        };
        if let Some(m) = masquerade {
            f.trusted = false;
            f.floor(Severity::High, m);
        }
        Some(f)
    }

    fn kext_command(&self, ev: &Event, exec: &Exec, tool: Tool, cmd: KextCommand) -> Finding {
        let rule = match cmd.action {
            KextAction::Load => TOOL_LOAD,
            KextAction::Unload => TOOL_UNLOAD,
            KextAction::Rebuild => TOOL_REBUILD,
        };
        let subject = exec.args.get(1..).unwrap_or(&[]).join(" ");
        let mut f = Finding::new(rule, Severity::Info, format!("{} {subject}", tool.name()));
        let actor = self.initiator_context(&mut f, &ev.process, Raise::UntrustedAndInteractive);

        let paths = resolved_paths(&cmd, exec);
        for p in &paths {
            if let Some(place) = unexpected_location(p) {
                f.trusted = false;
                f.floor(
                    Severity::High,
                    format!("kext path {p} is in {place}, not an extensions folder"),
                );
            }
        }
        if cmd.action == KextAction::Load {
            let vouched = actor != Actor::Other;
            let named = paths.iter().map(|p| (Some(p.as_str()), None));
            let ids = cmd.bundle_ids.iter().map(|id| (None, Some(id.as_str())));
            for (path, id) in named.chain(ids) {
                if self.load_verdict(&mut f, path, id, vouched) == Verdict::Untrusted {
                    f.trusted = false;
                }
            }
        }
        // Loads were judged by the verdict above; unloads and rebuilds only by the allowlist.
        let not_listed: Vec<&str> = cmd
            .bundle_ids
            .iter()
            .map(String::as_str)
            .filter(|id| {
                !id.starts_with("com.apple.")
                    && self.config.allowlist.kext_trust(None, id) == KextTrust::NotAllowlisted
            })
            .collect();
        if !not_listed.is_empty() && actor == Actor::Other && cmd.action != KextAction::Load {
            f.raise(format!(
                "kext {} is not in the allowlist",
                not_listed.join(", ")
            ));
        }
        if cmd.action == KextAction::Unload {
            let protected = self.protected_kext(&cmd.bundle_ids, &paths);
            if let Some(id) = protected {
                f.trusted = false;
                f.extra_techniques.push(T_IMPAIR_DEFENSES);
                f.floor(
                    Severity::High,
                    format!("unloading {id} turns off a security control"),
                );
            }
        }
        if f.kext.is_none() {
            f.kext = cmd.bundle_ids.first().map(|b| KextInfo {
                bundle_id: b.clone(),
                team_id: None,
            });
        }
        f.file = paths.first().map(|p| FileInfo {
            path: p.clone(),
            source_path: None,
        });
        f.activity = Some(match cmd.action {
            KextAction::Load => Activity::Load {
                paths,
                bundle_ids: cmd.bundle_ids,
            },
            KextAction::Unload => Activity::Unload,
            KextAction::Rebuild => Activity::Rebuild,
        });
        f
    }

    /// A protected kext named by bundle id, or by a path whose bundle name is its last id component.
    fn protected_kext<'a>(&'a self, ids: &[String], paths: &[String]) -> Option<&'a str> {
        self.config
            .detection
            .protected_kexts
            .iter()
            .map(String::as_str)
            .find(|p| {
                let stem = p.rsplit('.').next().unwrap_or(p);
                ids.iter().any(|id| id.eq_ignore_ascii_case(p))
                    || paths.iter().any(|path| {
                        let file = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
                        file.strip_suffix(".kext")
                            .is_some_and(|n| n.eq_ignore_ascii_case(stem))
                    })
            })
    }

    fn policy_change(&self, ev: &Event, change: PolicyChange) -> Finding {
        let rule = match change.area {
            PolicyArea::Sip => SIP_CHANGE,
            PolicyArea::Nvram => NVRAM_CHANGE,
            PolicyArea::BootPolicy => BOOT_POLICY_CHANGE,
            PolicyArea::KextConsent | PolicyArea::KextPolicyStore => KEXT_CONSENT_CHANGE,
            PolicyArea::Gatekeeper => GATEKEEPER_CHANGE,
            PolicyArea::SystemExtensions => SYSEXT_CHANGE,
        };
        let base = match change.weakens {
            Weakening::Full => Severity::High,
            Weakening::Partial => Severity::Medium,
            Weakening::None => Severity::Info,
        };
        let mut f = Finding::new(rule, base, change.what.clone());
        f.reasons.push(match (change.weakens, change.area) {
            (Weakening::None, _) => format!("{} restores or tightens protection", change.what),
            (_, PolicyArea::KextPolicyStore) => format!(
                "{} opens the KextPolicy database, which only syspolicyd maintains: kext approvals read or edited behind the user's back",
                change.what
            ),
            (_, PolicyArea::Sip) | (_, PolicyArea::KextConsent) => format!(
                "{} weakens protection (it only takes effect from recoveryOS; the attempt itself is the signal)",
                change.what
            ),
            (Weakening::Full, _) => format!("{} turns a protection off", change.what),
            (Weakening::Partial, _) => format!("{} lowers protection", change.what),
        });
        if let Some(team) = &change.team_id {
            if self.config.allowlist.team_ids.contains(team) {
                f.settle(
                    Severity::Low,
                    format!("consent is for allowlisted team {team}"),
                );
            } else {
                f.raise(format!(
                    "consent is for team {team}, which is not allowlisted"
                ));
            }
        }
        // The weakening itself sets severity; who ran it is stated, not added.
        match self.initiator_context(&mut f, &ev.process, Raise::Nothing) {
            Actor::Allowlisted if f.severity > Severity::Low => {
                // Trusted managers do change policy; keep it visible (never below low), one step lower.
                f.severity = f.severity.lowered();
            }
            _ => {}
        }
        if change.weakens > Weakening::None && !is_system_actor(&ev.process) {
            f.weakening = Some(change.what);
        }
        f
    }

    /// A write to where macOS keeps kext approvals and collections, by anyone but Apple's daemons.
    fn store_change(&self, ev: &Event, verb: &str, path: &str) -> Option<Finding> {
        let norm = normalize(path);
        let store = kext_store(&norm)?;
        if is_system_actor(&ev.process) {
            return None;
        }
        let (severity, whose) = if store.consent {
            (Severity::Critical, "syspolicyd")
        } else {
            (Severity::High, "kernelmanagerd and kmutil")
        };
        let mut f = Finding::new(STORE_CHANGE, severity, store.path.to_string());
        f.reasons.push(format!(
            "{norm} ({}) {verb} by {} ({}); only {whose} write it",
            store.what,
            ev.process.executable,
            identity(&ev.process)
        ));
        f.file = Some(FileInfo {
            path: norm.into_owned(),
            source_path: None,
        });
        // Who was behind it is stated; no initiator makes this trusted.
        let _ = self.resolve_initiator(&mut f, &ev.process);
        f.activity = store.consent.then_some(Activity::Approval);
        Some(f)
    }

    /// `kill PID` where lineage knows the pid is kextwatch or its eslogger: the command, for
    /// captures that lack the signal event it causes.
    fn kill_by_pid(&self, tool: tamper::TamperTool, exec: &Exec) -> Option<tamper::Tamper> {
        if tool != tamper::TamperTool::Kill {
            return None;
        }
        let (sig, pids) = tamper::kill_targets(&exec.args)?;
        pids.into_iter().find_map(|pid| {
            let (hop, parent) = self.lineage.by_pid(pid)?;
            let target = Process {
                pid,
                executable: hop.executable.to_string(),
                ..Process::default()
            };
            self.surface
                .signal(sig, &exec.target, &target, parent.as_deref())
                .map(|t| tamper::Tamper {
                    what: format!("{} ({})", t.what, exec.args.join(" ")),
                    ..t
                })
        })
    }

    /// A change to kextwatch's files (or the TCC database) by anyone but kextwatch and the
    /// daemons that maintain them.
    fn tamper_file(&self, ev: &Event) -> Option<Finding> {
        let (verb, path, other, _) = file_change_target(&ev.kind, &[])?;
        if matches!(
            ev.kind,
            EventKind::SetExtattr { .. }
                | EventKind::DeleteExtattr { .. }
                | EventKind::Utimes { .. }
        ) {
            return None;
        }
        let surface = self.surface;
        let p = &ev.process;
        let maintainer = p.is_platform_binary
            && p.signing_id
                .as_deref()
                .is_some_and(|s| FILE_MAINTAINERS.contains(&s));
        if surface.is_kextwatch(p) || maintainer {
            return None;
        }
        let (hit, touched) = [Some(path), other]
            .into_iter()
            .flatten()
            .find_map(|x| surface.protected_file(x).map(|h| (h, x)))?;
        let touched = normalize(touched).into_owned();
        let what = if hit == tamper::TCC_DB {
            format!("the TCC database (Full Disk Access grants) {verb}")
        } else {
            format!("{touched} {verb}")
        };
        let kind = if hit == tamper::TCC_DB {
            tamper::TamperKind::Permissions
        } else {
            tamper::TamperKind::Files
        };
        let file = FileInfo {
            path: touched,
            source_path: other.map(|o| normalize(o).into_owned()),
        };
        self.tamper(ev, tamper::Tamper { kind, what }, Some(file))
    }

    /// A tampering: high (the clock: medium) when anyone but Apple's installer or an allowlisted
    /// management tool is behind it, and remembered for escalation; maintenance otherwise.
    fn tamper(&self, ev: &Event, t: tamper::Tamper, file: Option<FileInfo>) -> Option<Finding> {
        self.tamper_by(&ev.process, t, file)
    }

    /// A tampering whose actor is `actor` (the event's process, or an instigator it names).
    fn tamper_by(
        &self,
        actor: &Process,
        t: tamper::Tamper,
        file: Option<FileInfo>,
    ) -> Option<Finding> {
        use tamper::TamperKind as K;
        let (rule, base) = match t.kind {
            K::Stop => (TAMPER_STOP, Severity::High),
            K::Signal => (TAMPER_SIGNAL, Severity::High),
            K::Files => (TAMPER_FILES, Severity::High),
            K::Permissions => (TAMPER_PERMISSIONS, Severity::High),
            K::Clock => (TAMPER_CLOCK, Severity::Medium),
        };
        let mut f = Finding::new(rule, base, t.what.clone());
        f.reasons.push(format!(
            "{} by {} ({})",
            t.what,
            actor.executable,
            identity(actor)
        ));
        f.file = file;
        match self.initiator_context(&mut f, actor, Raise::Nothing) {
            Actor::Other => f.tamper = Some(t.what),
            Actor::System | Actor::Allowlisted => f.settle(
                Severity::Info,
                "done for Apple's installer or an allowlisted management tool: maintenance".into(),
            ),
        }
        Some(f)
    }

    fn file_change(&self, ev: &Event) -> Option<Finding> {
        let roots = &self.config.detection.watched_roots;
        let (verb, path, source, staged) = file_change_target(&ev.kind, roots)?;
        if let Some(f) = self.store_change(ev, verb, path) {
            return Some(f);
        }
        let norm = normalize(path);
        let (root, bundle) = bundle_under(&norm, roots)?;
        let mut f = Finding::new(ROOT_CHANGE, Severity::Low, bundle.to_string());
        f.reasons.push(format!(
            "{norm} {verb} under {root} by {} ({})",
            ev.process.executable,
            identity(&ev.process)
        ));
        if self.initiator_context(&mut f, &ev.process, Raise::Interactive) != Actor::Other {
            f.severity = Severity::Info;
        }
        if let Some(src) = source.filter(|_| staged) {
            let src = normalize(src);
            if let Some(place) = unexpected_location(&src) {
                f.trusted = false;
                f.floor(Severity::High, format!("moved in from {src}, in {place}"));
            }
        }
        if staged {
            self.bundle_context(&mut f, bundle);
        }
        f.file = Some(FileInfo {
            path: norm.to_string(),
            source_path: source.map(|s| normalize(s).into_owned()),
        });
        if staged {
            f.activity = Some(Activity::Staged {
                bundle: bundle.to_string(),
            });
        } else if bundle_key(path) == bundle_key(bundle) {
            f.activity = Some(Activity::Removed {
                bundle: bundle.to_string(),
            });
        }
        Some(f)
    }

    fn kext_loaded(&self, ev: &Event, id: &str) -> Finding {
        let mut f = Finding::new(KEXT_LOADED, Severity::Info, id.to_string());
        let loader_trusted = self.actor(&ev.process) != Actor::Other;
        // The kernel loads for whoever asked; the load event names no initiator to vouch for it.
        let verdict = self.load_verdict(&mut f, None, Some(id), false);
        if loader_trusted && matches!(verdict, Verdict::Allowlisted | Verdict::Apple) {
            f.trusted = true;
            return f;
        }
        if !loader_trusted {
            f.raise(format!(
                "loaded by {} ({}), not by the system kext daemon",
                ev.process.executable,
                identity(&ev.process)
            ));
        }
        // Untrusted from here on: a correlation signal.
        f.activity = Some(Activity::Load {
            paths: Vec::new(),
            bundle_ids: vec![id.to_string()],
        });
        f
    }

    fn kext_unloaded(&self, ev: &Event, id: &str) -> Finding {
        let mut f = Finding::new(KEXT_UNLOADED, Severity::Info, id.to_string());
        f.kext = Some(KextInfo {
            bundle_id: id.to_string(),
            team_id: None,
        });
        if let Some(p) = self.protected_kext(&[id.to_string()], &[]) {
            f.extra_techniques.push(T_IMPAIR_DEFENSES);
            f.floor(
                Severity::High,
                format!("unloading {p} turns off a security control"),
            );
            f.reasons.push(format!(
                "unloaded by {} ({})",
                ev.process.executable,
                identity(&ev.process)
            ));
        } else {
            f.trusted = true;
            f.reasons.push(format!("kext {id} unloaded"));
        }
        f.activity = Some(Activity::Unload);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::cs_flags;

    /// An Apple platform binary, run by root from a terminal (a person at a shell).
    fn apple(pid: i32, exe: &str, signing_id: &str) -> Process {
        Process {
            pid,
            pidversion: 1,
            ppid: 1,
            auid: 501,
            euid: 0,
            asid: 100_017,
            tty: Some("/dev/ttys003".into()),
            executable: exe.into(),
            signing_id: Some(signing_id.into()),
            cs_flags: cs_flags::VALID | cs_flags::SIGNED | cs_flags::PLATFORM_BINARY,
            is_platform_binary: true,
            ..Process::default()
        }
    }

    fn event(process: Process, kind: EventKind) -> Event {
        Event::at(1_795_000_000_000_000_000, process, kind)
    }

    fn exec_of(exe: &str, signing_id: &str, args: &[&str]) -> Event {
        let shell = apple(4100, "/bin/zsh", "com.apple.zsh");
        let target = Process {
            pidversion: 2,
            ..apple(4100, exe, signing_id)
        };
        event(
            shell,
            EventKind::Exec(Exec {
                target,
                args: args.iter().map(|a| a.to_string()).collect(),
                cwd: Some("/".into()),
            }),
        )
    }

    /// The rules for the shipped config, with no KextPolicy, bundles or lineage known.
    fn evaluate(ev: &Event) -> Option<Finding> {
        let config = Config::default_config();
        let bundles = HashMap::new();
        let lineage = ProcessTable::default();
        let surface = tamper::Surface::new(&config);
        Rules {
            config: &config,
            policy: None,
            bundles: &bundles,
            lineage: &lineage,
            surface: &surface,
        }
        .evaluate(ev)
    }

    #[test]
    fn listing_kexts_is_discovery_and_loading_one_from_a_terminal_is_a_tool_load() {
        let f = evaluate(&exec_of(
            "/usr/bin/kmutil",
            "com.apple.kmutil",
            &["kmutil", "showloaded"],
        ))
        .unwrap();
        assert_eq!((f.rule.id, f.severity), (DISCOVERY.id, Severity::Info));
        let f = evaluate(&exec_of(
            "/usr/bin/kmutil",
            "com.apple.kmutil",
            &["kmutil", "load", "-p", "/Library/Extensions/Evil.kext"],
        ))
        .unwrap();
        assert_eq!(f.rule.id, TOOL_LOAD.id);
        assert!(f.severity >= Severity::Medium, "{:?}", f.severity);
        assert!(matches!(
            f.activity,
            Some(Activity::Load { ref paths, .. }) if paths == &["/Library/Extensions/Evil.kext"]
        ));
    }

    #[test]
    fn an_unrelated_program_raises_nothing_and_a_renamed_tool_is_not_trusted_by_its_name() {
        assert!(evaluate(&exec_of("/bin/ls", "com.apple.ls", &["ls"])).is_none());
        // "kmutil" by name but not Apple's platform binary: judged, and said so.
        let mut ev = exec_of("/tmp/kmutil", "kmutil", &["kmutil", "load", "-b", "x.y"]);
        if let EventKind::Exec(e) = &mut ev.kind {
            e.target.is_platform_binary = false;
            e.target.cs_flags = cs_flags::ADHOC;
        }
        let f = evaluate(&ev).unwrap();
        assert!(f.severity >= Severity::High, "{:?}", f.reasons);
    }

    #[test]
    fn a_bundle_written_into_a_watched_root_is_staged_under_its_bundle_folder() {
        let cp = apple(4200, "/bin/cp", "com.apple.cp");
        let ev = event(
            cp,
            EventKind::Create {
                path: "/Library/Extensions/Evil.kext/Contents/Info.plist".into(),
            },
        );
        let f = evaluate(&ev).unwrap();
        assert_eq!(f.rule.id, ROOT_CHANGE.id);
        assert!(matches!(
            f.activity,
            Some(Activity::Staged { ref bundle }) if bundle == "/Library/Extensions/Evil.kext"
        ));
        // Outside the watched roots: nothing.
        let ev = event(
            apple(4201, "/bin/cp", "com.apple.cp"),
            EventKind::Create {
                path: "/tmp/Evil.kext/Contents/Info.plist".into(),
            },
        );
        assert!(evaluate(&ev).is_none());
    }
}
