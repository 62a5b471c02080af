//! Detection: pure and deterministic. Events, KextPolicy changes and snapshots in; alerts out. It reads no clock
//! and does no I/O: all time comes from the events, so a replay gives the same alerts as the live run.

mod clock;
mod correlate;
pub mod enforce;
mod fold;
pub mod lineage;
pub mod policy;
pub mod rules;
pub mod sip;
pub mod staged;
pub mod tamper;
pub mod tools;
mod verdict;

use crate::alert::{
    ecs, Alert, CodeSignature, EventInfo, Evidence, Extra, Host, ParentInfo, ProcessInfo, Threat,
    UserId, UserInfo,
};
use crate::config::Config;
use crate::event::Interest;
use crate::event::{cs_flags, Event, EventKind, Process};
use crate::kextpolicy::{PolicyChange, PolicyFacts, Snapshot};
use crate::path;
use crate::signing::KextIdentity;
use crate::wallclock::format_time;
use std::collections::HashMap;

use correlate::Correlator;
use fold::Folder;
use rules::{BundleFacts, Finding, Rules};

/// What the engine wants decoded: exec of kext, policy and tamper tools, changes under watched roots
/// and to kextwatch's own files, kext events, signals to kextwatch and its eslogger.
pub struct KextInterest {
    roots: Vec<String>,
    /// kextwatch itself: its files, the TCC database, its executables as signal targets.
    surface: tamper::Surface,
}

impl KextInterest {
    pub fn new(config: &Config) -> KextInterest {
        KextInterest {
            roots: config.detection.watched_roots.clone(),
            surface: tamper::Surface::new(config),
        }
    }
}

/// The file paths a live source must deliver events for: the one list the ES file client's
/// inverted muting is built from, so a root added to detection is watched live too. (Execs are
/// not muted by path: lineage needs every one.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchList {
    /// Folders whose contents matter (file events under them): the watched roots and KextPolicy.
    pub prefixes: Vec<String>,
}

impl WatchList {
    pub fn new(config: &Config) -> WatchList {
        let mut prefixes = config.detection.watched_roots.clone();
        prefixes.push(config.kextpolicy.path.display().to_string());
        prefixes.extend(tamper::Surface::new(config).watched_paths());
        // ES reports real paths (/private/var, not /var): the stores are listed that way.
        prefixes.extend(path::KEXT_STORES.iter().map(|s| s.path.to_string()));
        prefixes.sort();
        prefixes.dedup();
        WatchList { prefixes }
    }
}

impl Interest for KextInterest {
    fn exec_matters(&self, path: &str, signing_id: Option<&str>) -> bool {
        tools::Tool::identify(path, signing_id).is_some()
            || tamper::TamperTool::identify(path, signing_id).is_some()
    }

    fn path_matters(&self, p: &str) -> bool {
        let n = path::normalize(p);
        self.roots.iter().any(|r| path::is_under(&n, r))
            || path::kext_store(&n).is_some()
            || self.surface.protected_file(&n).is_some()
    }

    fn signal_matters(&self, target: &str) -> bool {
        self.surface.signal_target_matters(target)
    }

    /// Lineage: every exec (without arguments unless it is a tool) and fork.
    fn lifecycle_matters(&self) -> bool {
        true
    }
}

/// Detection's memory that outlives the correlation window, as the daemon persists it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DurableMemory {
    pub stagings: Vec<staged::Staging>,
    #[serde(default)]
    pub tampers: Vec<tamper::TamperMark>,
}

impl DurableMemory {
    pub fn is_empty(&self) -> bool {
        self.stagings.is_empty() && self.tampers.is_empty()
    }
}

/// Counters the engine keeps, for summaries and health.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EngineStats {
    pub events: u64,
    pub findings: u64,
    pub below_min_severity: u64,
    pub folded: u64,
    pub signals_evicted: u64,
    pub unfolded_over_capacity: u64,
    /// Process images the lineage table forgot to stay bounded.
    pub processes_forgotten: u64,
    /// Remembered stagings forgotten to stay bounded.
    pub stagings_forgotten: u64,
}

pub struct Engine {
    config: Config,
    /// kextwatch itself as `config` describes it (tamper rules).
    surface: tamper::Surface,
    /// The Mac the events come from, as every alert names it.
    host: Host,
    /// What the latest KextPolicy snapshot says (None: no KextPolicy, identities are unknown).
    policy: Option<PolicyFacts>,
    /// Kext bundle identities read from disk, by `rules::bundle_key`.
    bundles: HashMap<String, BundleFacts>,
    /// Process images, for lineage.
    processes: lineage::ProcessTable,
    /// Bundles staged and not yet loaded or removed, beyond the correlation window.
    staged: staged::StagedMemory,
    /// Recent tampering with kextwatch, for `tamper.memory`.
    tampers: tamper::TamperMemory,
    correlator: Correlator,
    folder: Folder,
    /// Event time that setting the wall clock does not move: windows run on it.
    clock: clock::EventClock,
    /// Latest event time seen: windows expire against it, so out-of-order events never move time back.
    now_ns: i64,
    next_expiry_ns: i64,
    events: u64,
    findings: u64,
    below_min: u64,
}

/// Bundle identities kept; past it the map starts over (identities are re-read on the next event).
const MAX_BUNDLES: usize = 16_384;

/// How close a signal event must be to the death it explains.
const SIGNAL_MATCH_NS: i64 = 10_000_000_000;

/// How often (in event time) windows are swept.
const SWEEP_NS: i64 = 1_000_000_000;

impl Engine {
    pub fn new(config: Config) -> Engine {
        let window = config.detection.correlation_window.as_nanos() as i64;
        let fold = config.detection.fold_window.as_nanos() as i64;
        Engine {
            surface: tamper::Surface::new(&config),
            config,
            host: Host::default(),
            clock: clock::EventClock::default(),
            policy: None,
            bundles: HashMap::new(),
            processes: lineage::ProcessTable::default(),
            staged: staged::StagedMemory::default(),
            tampers: tamper::TamperMemory::default(),
            correlator: Correlator::new(window),
            folder: Folder::new(fold),
            now_ns: i64::MIN,
            next_expiry_ns: i64::MIN,
            events: 0,
            findings: 0,
            below_min: 0,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Name the Mac the events come from in every alert (the OS fields are always there).
    pub fn set_host(&mut self, host: Host) {
        self.host = host;
    }

    pub fn host(&self) -> &Host {
        &self.host
    }

    /// What `AUTH_KEXTLOAD` answers are decided from: the allowlist and the KextPolicy teams.
    pub fn enforcement_policy(&self) -> enforce::EnforcementPolicy {
        enforce::EnforcementPolicy {
            allowlist: self.config.allowlist.clone(),
            teams: self
                .policy
                .as_ref()
                .map(|p| p.teams.clone())
                .unwrap_or_default(),
            fail_closed: self.config.daemon.fail_closed,
        }
    }

    /// A new configuration (SIGHUP): the next decisions use it; correlation and fold windows already
    /// open are kept, so a reload does not forget what came before. Window lengths apply to new
    /// windows.
    pub fn reload(&mut self, config: Config) {
        self.surface = tamper::Surface::new(&config);
        self.config = config;
    }

    /// A new configuration (SIGHUP), reported first when it detects less than the current one
    /// (judged by the current minimum severity, so raising it cannot hide its own alert), then
    /// applied as [`Engine::reload`] does. `origin` says where it came from.
    pub fn reload_reporting(
        &mut self,
        config: Config,
        origin: &str,
        time_ns: i64,
        out: &mut Vec<Alert>,
    ) {
        let (reasons, strong) = tamper::weakening(&self.config, &config);
        if !reasons.is_empty() {
            let severity = if strong {
                crate::alert::Severity::High
            } else {
                crate::alert::Severity::Medium
            };
            let mut f = Finding::new(rules::CONFIG_WEAKENED, severity, origin.to_string());
            f.reasons.push(format!(
                "the configuration reloaded from {origin} detects less"
            ));
            f.reasons.extend(reasons);
            if strong {
                f.tamper = Some(format!(
                    "a configuration reload from {origin} weakened detection"
                ));
            }
            self.process_unattributed(f, "config-reload", time_ns, out);
        }
        self.reload(config);
    }

    /// Use a KextPolicy snapshot to tell the Team ID behind a kext load event's bundle id, and
    /// whether the load was approved.
    pub fn set_kext_policy(&mut self, snapshot: &Snapshot) {
        self.policy = Some(snapshot.facts());
    }

    /// Remember a kext bundle's identity (read from disk by the caller: detection does no I/O).
    pub fn set_bundle_identity(&mut self, path: &str, id: &KextIdentity) {
        // Bounded: a flood of distinct bundles cannot grow memory without limit.
        if self.bundles.len() >= MAX_BUNDLES {
            self.bundles.clear();
        }
        self.bundles.insert(
            rules::bundle_key(path),
            BundleFacts {
                path: path::normalize(path).trim_end_matches('/').to_string(),
                signature: id.signature,
                team_id: id.team_id.clone(),
                bundle_id: id.bundle_id.clone(),
                rejected: match id.validity {
                    crate::signing::Validity::Invalid(status) => Some(status),
                    _ => None,
                },
                problem: id.error.clone(),
            },
        );
    }

    /// Feed one event; alerts it completes are appended to `out`.
    pub fn process(&mut self, ev: &Event, out: &mut Vec<Alert>) {
        self.events += 1;
        let now = self.clock.time(ev.time_ns, ev.mach_time);
        self.advance(now, out);
        self.processes.observe(ev);
        if let EventKind::Exec(e) = &ev.kind {
            if e.target.euid == 0 && e.target.is_unsigned_or_adhoc() {
                let evidence = Evidence {
                    timestamp: format_time(ev.time_ns),
                    action: "exec",
                    pid: Some(e.target.pid),
                    executable: Some(e.target.executable.clone()),
                    args: (!e.args.is_empty()).then(|| e.args.clone()),
                    path: None,
                    kext_bundle_id: None,
                    team_id: e.target.team_id.clone(),
                    signing_id: e.target.signing_id.clone(),
                    user_id: Some(rules::user_label(&e.target)),
                    global_seq_num: ev.global_seq_num,
                };
                self.correlator
                    .unsigned_root_ran(now, Some(ev.process.asid), &evidence);
            }
        }
        let rules = Rules {
            config: &self.config,
            policy: self.policy.as_ref(),
            bundles: &self.bundles,
            lineage: &self.processes,
            surface: &self.surface,
        };
        let Some(finding) = rules.evaluate(ev) else {
            return;
        };
        let evidence = evidence_of(ev, &finding);
        let key = fold_key(Some(&ev.process), &finding);
        let (time, asid) = (now, Some(ev.process.asid));
        self.report(
            finding,
            evidence,
            time,
            asid,
            key,
            out,
            |f, evidence, host| build_alert(ev, f, evidence, host),
        );
    }

    /// Feed one KextPolicy change observed at `time_ns`.
    pub fn process_policy(&mut self, change: &PolicyChange, time_ns: i64, out: &mut Vec<Alert>) {
        let finding = policy::evaluate(&self.config, change);
        self.process_unattributed(finding, policy::action(change), time_ns, out);
    }

    /// kextwatch's eslogger (pid `pid`) ended by `signal` at `time_ns` and was restarted: events
    /// between are missing. Tampering, naming who sent the signal when a signal event showed it.
    pub fn process_source_killed(
        &mut self,
        pid: u32,
        signal: i32,
        time_ns: i64,
        out: &mut Vec<Alert>,
    ) {
        let what = format!(
            "kextwatch's eslogger (pid {pid}) ended by {}",
            tamper::signal_name(signal)
        );
        let mut f = Finding::new(
            rules::TAMPER_SIGNAL,
            crate::alert::Severity::High,
            what.clone(),
        );
        f.reasons.push(format!(
            "{what} and was restarted: events in between are missing"
        ));
        // The signal event itself, if eslogger reported it before it died.
        let named = format!("(pid {pid})");
        let killer = self
            .tampers
            .latest(self.clock.time(time_ns, None), SIGNAL_MATCH_NS)
            .filter(|m| m.what.contains(&named) && m.what.contains("eslogger"));
        if let Some(m) = killer {
            f.reasons
                .push(format!("the signal was sent by {}", m.actor()));
            f.related.push(m.evidence());
        }
        f.tamper = Some(what);
        self.process_unattributed(f, "signal", time_ns, out);
    }

    /// What the daemon found at start that is not as it should be: its binary, LaunchDaemon or
    /// state files (`problems`, each in words). Tampering while it was not running.
    pub fn process_start_check(&mut self, problems: &[String], time_ns: i64, out: &mut Vec<Alert>) {
        if problems.is_empty() {
            return;
        }
        let mut f = Finding::new(
            rules::START_CHECK,
            crate::alert::Severity::High,
            "kextwatch start".into(),
        );
        f.reasons.extend(problems.iter().cloned());
        f.tamper = Some(format!("kextwatch found at start: {}", problems.join("; ")));
        self.process_unattributed(f, "start-check", time_ns, out);
    }

    /// The SIP configuration read on the Mac at `time_ns` (at start, and when it changes).
    pub fn process_sip(&mut self, flags: u32, time_ns: i64, out: &mut Vec<Alert>) {
        self.process_unattributed(sip::evaluate(flags), "sip-state", time_ns, out);
    }

    /// A finding no process event carries (KextPolicy, SIP state): evidence from the finding itself.
    fn process_unattributed(
        &mut self,
        finding: Finding,
        action: &'static str,
        time_ns: i64,
        out: &mut Vec<Alert>,
    ) {
        self.events += 1;
        let now = self.clock.time(time_ns, None);
        self.advance(now, out);
        let evidence = Evidence {
            timestamp: format_time(time_ns),
            action,
            pid: None,
            executable: None,
            args: None,
            path: finding.file.as_ref().map(|f| f.path.clone()),
            kext_bundle_id: finding.kext.as_ref().map(|k| k.bundle_id.clone()),
            team_id: finding.kext.as_ref().and_then(|k| k.team_id.clone()),
            signing_id: None,
            user_id: None,
            global_seq_num: None,
        };
        let key = fold_key(None, &finding);
        let info = EventInfo {
            action,
            class: ecs::class_of(action),
            sequence: None,
        };
        self.report(
            finding,
            evidence,
            now,
            None,
            key,
            out,
            |f, evidence, host| alert_from(f, evidence, time_ns, info, None, None, host),
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        &mut self,
        mut finding: Finding,
        evidence: Evidence,
        time_ns: i64,
        asid: Option<i32>,
        key: String,
        out: &mut Vec<Alert>,
        build: impl FnOnce(Finding, Evidence, &Host) -> Alert,
    ) {
        self.findings += 1;
        self.correlator
            .correlate(&mut finding, time_ns, asid, &evidence);
        let (bundles, allowlist) = (&self.bundles, &self.config.allowlist);
        self.staged
            .follow(&mut finding, time_ns, &evidence, |bundle| {
                let b = bundles.get(&rules::bundle_key(bundle))?;
                let allowlisted_signature = b.signature == crate::signing::Signature::Developer
                    && b.rejected.is_none()
                    && allowlist
                        .kext_trust(b.team_id.as_deref(), b.bundle_id.as_deref().unwrap_or(""))
                        == crate::config::KextTrust::Allowlisted;
                Some(staged::ReadBack {
                    bundle_id: b.bundle_id.clone(),
                    allowlisted_signature,
                })
            });
        self.follow_tampering(&mut finding, time_ns, &evidence);
        if finding.severity < self.config.detection.min_severity {
            self.below_min += 1;
            return;
        }
        let alert = build(finding, evidence, &self.host);
        self.folder.offer(key, alert, time_ns, out);
    }

    /// Kext activity inside `tamper.memory` after tampering is critical, with the tampering as
    /// evidence; a tampering is remembered.
    fn follow_tampering(&mut self, f: &mut Finding, time_ns: i64, evidence: &Evidence) {
        if f.trusted {
            return;
        }
        let memory = self.tamper_memory_ns();
        if f.activity.is_some() && f.tamper.is_none() {
            if let Some(m) = self.tampers.latest(time_ns, memory) {
                let mins = (time_ns - m.time_ns) / 60_000_000_000;
                let secs = (time_ns - m.time_ns) / 1_000_000_000 % 60;
                f.rule = rules::KEXT_AFTER_TAMPER;
                f.floor(
                    crate::alert::Severity::Critical,
                    format!(
                        "follows tampering with kextwatch: `{}` by {} {mins} min {secs} s earlier",
                        m.what,
                        m.actor()
                    ),
                );
                f.related.insert(0, m.evidence());
            }
        }
        if let Some(what) = &f.tamper {
            self.tampers
                .remember(tamper::TamperMark::new(time_ns, what.clone(), evidence));
        }
    }

    fn tamper_memory_ns(&self) -> i64 {
        i64::try_from(self.config.tamper.memory.as_nanos()).unwrap_or(i64::MAX)
    }

    /// What the daemon persists so a restart (which an attacker can force) forgets nothing:
    /// stagings not yet loaded or removed, and recent tampering.
    pub fn durable_memory(&self) -> DurableMemory {
        DurableMemory {
            stagings: self.staged.export(),
            tampers: self.tampers.export(),
        }
    }

    /// Changes to the durable memory so far: persist it only when this moved.
    pub fn durable_generation(&self) -> u64 {
        self.staged.generation + self.tampers.generation
    }

    /// Remember what a previous run persisted.
    pub fn restore_durable_memory(&mut self, m: DurableMemory) {
        self.staged.restore(m.stagings);
        self.tampers.restore(m.tampers);
    }

    /// End of input: report what is still folded.
    pub fn finish(&mut self, out: &mut Vec<Alert>) {
        self.folder.finish(out);
    }

    pub fn stats(&self) -> EngineStats {
        EngineStats {
            events: self.events,
            findings: self.findings,
            below_min_severity: self.below_min,
            folded: self.folder.folded,
            signals_evicted: self.correlator.evicted,
            unfolded_over_capacity: self.folder.unfolded_over_capacity,
            processes_forgotten: self.processes.evicted,
            stagings_forgotten: self.staged.forgotten,
        }
    }

    /// Correlation signals and fold windows currently held (memory stays bounded by these).
    pub fn open_state(&self) -> (usize, usize) {
        (self.correlator.len(), self.folder.open_windows())
    }

    fn advance(&mut self, t: i64, out: &mut Vec<Alert>) {
        if t > self.now_ns {
            self.now_ns = t;
        }
        if self.now_ns >= self.next_expiry_ns {
            self.correlator.expire(self.now_ns);
            let memory = self.tamper_memory_ns();
            self.tampers.expire(self.now_ns, memory);
            self.folder.expire(self.now_ns, out);
            self.next_expiry_ns = self.now_ns.saturating_add(SWEEP_NS);
        }
    }
}

/// Alerts with the same rule, severity, actor, user and subject within the fold window are duplicates.
fn fold_key(actor: Option<&Process>, f: &Finding) -> String {
    let (exe, sid, user) = match actor {
        Some(p) => (
            p.executable.as_str(),
            p.signing_id.as_deref().unwrap_or(""),
            rules::user_label(p),
        ),
        None => ("", "", String::new()),
    };
    format!(
        "{}\x1f{:?}\x1f{exe}\x1f{sid}\x1f{user}\x1f{}",
        f.rule.id, f.severity, f.subject
    )
}

fn signature(p: &Process) -> CodeSignature {
    CodeSignature {
        team_id: p.team_id.clone(),
        signing_id: p.signing_id.clone(),
        cdhash: p.cdhash.clone(),
        signed: p.cs_flags & (cs_flags::SIGNED | cs_flags::VALID) != 0,
        valid: p.cs_flags & cs_flags::VALID != 0,
        adhoc: p.cs_flags & cs_flags::ADHOC != 0,
        platform_binary: p.is_platform_binary,
    }
}

fn evidence_of(ev: &Event, f: &Finding) -> Evidence {
    let (actor, args) = match &ev.kind {
        EventKind::Exec(e) => (&e.target, Some(e.args.clone())),
        _ => (&ev.process, None),
    };
    Evidence {
        timestamp: format_time(ev.time_ns),
        action: ev.kind.action(),
        pid: Some(actor.pid),
        executable: Some(actor.executable.clone()),
        args,
        path: f.file.as_ref().map(|f| f.path.clone()),
        kext_bundle_id: f.kext.as_ref().map(|k| k.bundle_id.clone()),
        team_id: actor.team_id.clone(),
        signing_id: actor.signing_id.clone(),
        user_id: Some(rules::user_label(actor)),
        global_seq_num: ev.global_seq_num,
    }
}

fn build_alert(ev: &Event, f: Finding, evidence: Evidence, host: &Host) -> Alert {
    let (proc_, parent, args, cwd) = match &ev.kind {
        EventKind::Exec(e) => (
            &e.target,
            ParentInfo {
                pid: e.target.ppid,
                executable: Some(ev.process.executable.clone()),
                code_signature: Some(signature(&ev.process)),
            },
            Some(e.args.clone()),
            e.cwd.clone(),
        ),
        _ => (
            &ev.process,
            ParentInfo {
                pid: ev.process.ppid,
                executable: None,
                code_signature: None,
            },
            None,
            None,
        ),
    };
    let process = ProcessInfo {
        pid: proc_.pid,
        executable: proc_.executable.clone(),
        name: proc_.name().to_string(),
        args,
        working_directory: cwd,
        interactive: ev.process.is_interactive(),
        tty: ev.process.tty.clone(),
        code_signature: signature(proc_),
        parent,
    };
    let user = UserInfo {
        id: rules::user_label(proc_),
        effective: UserId {
            id: proc_.euid.to_string(),
        },
    };
    let action = ev.kind.action();
    let info = EventInfo {
        action,
        class: match &ev.kind {
            EventKind::KextLoadDecision { allowed, .. } => ecs::decision_class(*allowed),
            _ => ecs::class_of(action),
        },
        sequence: ev.global_seq_num,
    };
    alert_from(
        f,
        evidence,
        ev.time_ns,
        info,
        Some(process),
        Some(user),
        host,
    )
}

/// "RULE NAME (SUBJECT): MAIN REASON", the subject left out when the reason already says it.
fn message(f: &Finding) -> String {
    let name = f.rule.name;
    match f.main_reason() {
        Some(r) if r.contains(&f.subject) => format!("{name}: {r}"),
        Some(r) => format!("{name} ({}): {r}", f.subject),
        None => format!("{name}: {}", f.subject),
    }
}

#[allow(clippy::too_many_arguments)]
fn alert_from(
    f: Finding,
    evidence: Evidence,
    time_ns: i64,
    event: EventInfo,
    process: Option<ProcessInfo>,
    user: Option<UserInfo>,
    host: &Host,
) -> Alert {
    let mut threat = Threat::default();
    for t in f.rule.techniques.iter().chain(&f.extra_techniques) {
        threat.add(t);
    }
    let message = message(&f);
    let mut all_evidence = f.related;
    all_evidence.push(evidence);
    let mut alert = Alert {
        timestamp: format_time(time_ns),
        message,
        severity: f.severity,
        rule: crate::alert::Rule {
            id: f.rule.id,
            name: f.rule.name,
        },
        threat,
        reasons: f.reasons,
        event,
        process,
        file: f.file,
        user,
        host: host.clone(),
        kextwatch: Extra {
            kext: f.kext,
            lineage: f.lineage,
            evidence: all_evidence,
            folded: None,
            test: false,
        },
    };
    alert.clip_fields();
    alert
}

#[cfg(test)]
mod watch_tests {
    use super::*;

    #[test]
    fn the_live_watch_list_is_what_detection_is_interested_in() {
        let config = Config::default_config();
        let watch = WatchList::new(&config);
        let interest = KextInterest::new(&config);
        for root in &config.detection.watched_roots {
            assert!(watch.prefixes.contains(root), "{root}");
            assert!(interest.path_matters(&format!("{root}/X.kext/Contents/Info.plist")));
        }
        assert!(watch
            .prefixes
            .contains(&"/var/db/SystemPolicyConfiguration/KextPolicy".to_string()));
        // Every exec and the process lifecycle are wanted, so lineage sees each image.
        assert!(interest.lifecycle_matters());
    }
}

#[cfg(test)]
mod message_tests {
    use super::*;
    use crate::alert::Severity;

    #[test]
    fn the_message_leads_with_the_reason_that_set_the_severity() {
        let mut f = Finding::new(
            rules::ROOT_CHANGE,
            Severity::Low,
            "/Library/Extensions/X.kext".into(),
        );
        f.reasons
            .push("/Library/Extensions/X.kext created by /bin/cp".into());
        // The rule's own severity: the first reason, which names the subject.
        assert_eq!(
            message(&f),
            "Change under a kernel extension directory: /Library/Extensions/X.kext created by /bin/cp"
        );
        f.floor(Severity::High, "moved in from /tmp/X.kext".into());
        f.floor(Severity::Medium, "not decisive".into());
        f.reasons.push("context only".into());
        assert_eq!(f.main_reason(), Some("moved in from /tmp/X.kext"));
        // A reason that does not name the subject gets it in brackets.
        assert_eq!(
            message(&f),
            "Change under a kernel extension directory (/Library/Extensions/X.kext): moved in from /tmp/X.kext"
        );
        f.raise("an unsigned initiator".into());
        assert_eq!(
            (f.severity, f.main_reason()),
            (Severity::Critical, Some("an unsigned initiator"))
        );
        // Lowering is decisive too.
        f.settle(
            Severity::Low,
            "signed by allowlisted team AAAAAAAAAA".into(),
        );
        assert_eq!(
            f.main_reason(),
            Some("signed by allowlisted team AAAAAAAAAA")
        );
        assert_eq!(f.reasons.len(), 6);
    }
}

#[cfg(test)]
mod engine_tests {
    use super::*;
    use crate::kextpolicy::{Approval, LoadRecord};
    use crate::signing::Signature;

    fn snapshot() -> Snapshot {
        let mut s = Snapshot::default();
        s.history.insert(
            "/Library/Extensions/U.kext".into(),
            LoadRecord {
                path: "/Library/Extensions/U.kext".into(),
                team_id: None,
                bundle_id: Some("com.x.unsigned".into()),
                boot_uuid: None,
                created_at: None,
                last_seen: Some("2026-11-20 10:00:00".into()),
                flags: None,
                cdhash: None,
            },
        );
        for bundle in ["com.x.drv", "com.x.drv2"] {
            s.approvals.insert(
                (Some("AAAAAAAAAA".into()), Some(bundle.into())),
                Approval {
                    team_id: Some("AAAAAAAAAA".into()),
                    bundle_id: Some(bundle.into()),
                    allowed: true,
                    developer_name: None,
                    flags: None,
                },
            );
        }
        s
    }

    fn load_event(id: &str, time_ns: i64) -> Event {
        let kernelmanagerd = Process {
            executable: "/usr/libexec/kernelmanagerd".into(),
            signing_id: Some("com.apple.kernelmanagerd".into()),
            is_platform_binary: true,
            ..Process::default()
        };
        let kind = EventKind::KextLoad {
            identifier: id.into(),
        };
        Event::at(time_ns, kernelmanagerd, kind)
    }

    #[test]
    fn stats_count_events_findings_and_what_stayed_below_the_minimum() {
        let mut engine = Engine::new(Config::default_config());
        engine.set_kext_policy(&snapshot());
        let mut out = Vec::new();
        // An Apple kext (info: below the default minimum), two loads of an unlisted team's kext
        // (the second folded), and a KextPolicy change.
        engine.process(&load_event("com.apple.iokit.IOAVBFamily", 1), &mut out);
        engine.process(&load_event("com.x.drv", 2), &mut out);
        engine.process(&load_event("com.x.drv", 3), &mut out);
        engine.process_sip(0, 4, &mut out);
        let s = engine.stats();
        assert_eq!(
            (s.events, s.findings, s.below_min_severity, s.folded),
            (4, 4, 2, 1)
        );
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn enforcement_decides_from_the_engines_allowlist_teams_and_fail_mode() {
        let mut config = Config::default_config();
        config.daemon.fail_closed = true;
        config.allowlist.team_ids.insert("AAAAAAAAAA".into());
        let mut engine = Engine::new(config);
        engine.set_kext_policy(&snapshot());
        let policy = engine.enforcement_policy();
        assert!(policy.fail_closed);
        assert!(policy.decide("com.x.drv").allow);
        assert!(!policy.decide("com.x.unsigned").allow);
        assert!(!policy.decide("com.x.never.seen").allow, "fail closed");
    }

    #[test]
    fn a_reload_changes_the_next_verdict() {
        // Two kexts of one team, so folding cannot hide the second answer.
        let load = |engine: &mut Engine, id: &str| {
            let mut out = Vec::new();
            engine.process(&load_event(id, 1), &mut out);
            out.first().map(|a| a.severity)
        };
        let mut engine = Engine::new(Config::default_config());
        engine.set_kext_policy(&snapshot());
        assert_eq!(
            load(&mut engine, "com.x.drv"),
            Some(crate::alert::Severity::High)
        );
        let mut config = Config::default_config();
        config.allowlist.team_ids.insert("AAAAAAAAAA".into());
        engine.reload(config);
        // Allowlisted and approved: info, below the default minimum severity.
        assert_eq!(load(&mut engine, "com.x.drv2"), None);
    }

    #[test]
    fn bundle_identities_are_remembered_up_to_the_bound_then_forgotten_together() {
        let mut engine = Engine::new(Config::default_config());
        let id = |n: usize| KextIdentity {
            path: format!("/Library/Extensions/K{n}.kext"),
            bundle_id: Some(format!("com.x.k{n}")),
            signature: Signature::Developer,
            version: None,
            executable: None,
            os_bundle_required: None,
            team_id: Some("AAAAAAAAAA".into()),
            cdhash: None,
            arch: vec!["arm64e".into()],
            validity: crate::signing::Validity::Unknown,
            slices: Vec::new(),
            error: None,
        };
        for n in 0..MAX_BUNDLES {
            engine.set_bundle_identity(&format!("/Library/Extensions/K{n}.kext"), &id(n));
        }
        assert_eq!(engine.bundles.len(), MAX_BUNDLES);
        assert!(engine.bundles.contains_key("/library/extensions/k0.kext"));
        engine.set_bundle_identity("/Library/Extensions/New.kext", &id(MAX_BUNDLES));
        assert_eq!(engine.bundles.len(), 1);
        assert!(engine.bundles.contains_key("/library/extensions/new.kext"));
    }
}
