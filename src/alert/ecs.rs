//! The alert as an Elastic Common Schema document: every field an ECS field of the ECS type, or under
//! `kextwatch.`. The Rust model ([`Alert`]) stays shaped for detection; this is the one place that
//! decides where each fact goes in the JSON, so the README's "Alert format" table and the ECS field
//! check in the tests have a single thing to describe.

use serde::Serialize;

use super::{
    attack::Threat, Alert, CodeSignature, Evidence, Folded, KextInfo, LineageHop, ParentInfo,
    ProcessInfo, Rule, Severity, UserInfo,
};

/// The ECS version the documents conform to (the field table in the tests is written from it).
pub const ECS_VERSION: &str = "8.17.0";

/// `event.module`, and the prefix of `event.dataset`.
pub const MODULE: &str = "kextwatch";

/// `event.severity`: the label as a number, on the scale Elastic's detection rules use for risk
/// scores (low 21, medium 47, high 73, critical 99), so SIEM content can sort and threshold on it.
pub fn severity_number(s: Severity) -> u8 {
    match s {
        Severity::Info => 1,
        Severity::Low => 21,
        Severity::Medium => 47,
        Severity::High => 73,
        Severity::Critical => 99,
    }
}

/// ECS `event.category` and `event.type` of an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventClass {
    pub category: &'static [&'static str],
    pub types: &'static [&'static str],
}

const fn class(category: &'static [&'static str], types: &'static [&'static str]) -> EventClass {
    EventClass { category, types }
}

/// The class of an event action (the `event.action` values kextwatch writes). A kext load answered
/// by enforcement is classed by [`decision_class`] instead.
pub fn class_of(action: &str) -> EventClass {
    match action {
        "exec" | "fork" => class(&["process"], &["start"]),
        "exit" => class(&["process"], &["end"]),
        // A signal acts on a running process: kextwatch or its eslogger (tampering).
        "signal" => class(&["process"], &["change"]),
        "settime" => class(&["host"], &["change"]),
        "profile_remove" => class(&["configuration"], &["deletion"]),
        "tcc_modify" => class(&["configuration"], &["change"]),
        "config-reload" => class(&["configuration"], &["change"]),
        "start-check" => class(&["host"], &["info"]),
        "create" | "link" | "clone" => class(&["file"], &["creation"]),
        "unlink" => class(&["file"], &["deletion"]),
        "write" | "close" | "rename" | "setmode" | "setowner" | "setextattr" | "deleteextattr"
        | "setflags" | "setacl" | "utimes" | "truncate" => class(&["file"], &["change"]),
        "kextload" => class(&["driver"], &["start"]),
        "kextunload" => class(&["driver"], &["end"]),
        "kextpolicy.approval_added"
        | "kextpolicy.mdm_approval_added"
        | "kextpolicy.kext_recorded" => class(&["configuration"], &["creation"]),
        "kextpolicy.approval_removed"
        | "kextpolicy.mdm_approval_removed"
        | "kextpolicy.database_vanished" => class(&["configuration"], &["deletion"]),
        "kextpolicy.approval_changed"
        | "kextpolicy.mdm_approval_changed"
        | "kextpolicy.kext_identity_changed" => class(&["configuration"], &["change"]),
        // KextPolicy's record of a load: the load itself was not observed, only its trace.
        "kextpolicy.kext_loaded" => class(&["driver"], &["info"]),
        "kextpolicy.database_unreadable" | "sip-state" => class(&["configuration"], &["info"]),
        "test-alert" => class(&["intrusion_detection"], &["info"]),
        "heartbeat" => class(&["host"], &["info"]),
        _ => class(&["host"], &["info"]),
    }
}

/// A kext load that enforcement answered: allowed (the driver starts) or denied.
pub fn decision_class(allowed: bool) -> EventClass {
    if allowed {
        class(&["driver", "intrusion_detection"], &["start", "allowed"])
    } else {
        class(&["driver", "intrusion_detection"], &["denied"])
    }
}

/// `agent.*`: the software that wrote the document.
#[derive(Debug, Serialize)]
struct Agent<'a> {
    name: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    version: &'static str,
    /// This run of kextwatch (heartbeats only).
    #[serde(skip_serializing_if = "Option::is_none")]
    ephemeral_id: Option<&'a str>,
}

const AGENT: Agent<'static> = Agent {
    name: "kextwatch",
    kind: "kextwatch",
    version: env!("CARGO_PKG_VERSION"),
    ephemeral_id: None,
};

/// `host.*` with the boot it is in (heartbeats).
#[derive(Serialize)]
struct BootedHost<'a> {
    #[serde(flatten)]
    host: &'a Host,
    #[serde(skip_serializing_if = "Option::is_none")]
    boot: Option<Boot<'a>>,
}

#[derive(Serialize)]
struct Boot<'a> {
    id: &'a str,
}

#[derive(Debug, Serialize)]
struct Ecs {
    version: &'static str,
}

/// `host.*`: the Mac the events came from. Every alert has the OS fields; the daemon adds the
/// names, the hardware UUID and the OS version; a replay adds the name it is given.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Host {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The Mac's hardware UUID.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    pub os: HostOs,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostOs {
    #[serde(rename = "type")]
    kind: &'static str,
    family: &'static str,
    platform: &'static str,
    name: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

impl Default for HostOs {
    fn default() -> Self {
        HostOs {
            kind: "macos",
            family: "macos",
            platform: "darwin",
            name: "macOS",
            version: None,
        }
    }
}

impl Host {
    /// A host known only by the name given (a capture replayed from elsewhere).
    pub fn named(name: &str) -> Host {
        Host {
            name: Some(name.to_string()),
            hostname: Some(name.to_string()),
            ..Host::default()
        }
    }
}

#[derive(Serialize)]
struct EventDoc<'a> {
    kind: &'static str,
    category: &'static [&'static str],
    #[serde(rename = "type")]
    types: &'static [&'static str],
    action: &'a str,
    module: &'static str,
    dataset: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    severity: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sequence: Option<u64>,
}

#[derive(Serialize)]
struct SignatureDoc<'a> {
    exists: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    signing_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    team_id: Option<&'a str>,
    valid: bool,
}

#[derive(Serialize)]
struct HashDoc<'a> {
    cdhash: &'a str,
}

fn hash(sig: &CodeSignature) -> Option<HashDoc<'_>> {
    sig.cdhash.as_deref().map(|cdhash| HashDoc { cdhash })
}

impl<'a> From<&'a CodeSignature> for SignatureDoc<'a> {
    fn from(c: &'a CodeSignature) -> Self {
        SignatureDoc {
            exists: c.signed,
            signing_id: c.signing_id.as_deref(),
            team_id: c.team_id.as_deref(),
            valid: c.valid,
        }
    }
}

#[derive(Serialize)]
struct ParentDoc<'a> {
    pid: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    executable: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    code_signature: Option<SignatureDoc<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<HashDoc<'a>>,
}

#[derive(Serialize)]
struct ProcessDoc<'a> {
    pid: i32,
    executable: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    args: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    args_count: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    working_directory: Option<&'a str>,
    interactive: bool,
    code_signature: SignatureDoc<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hash: Option<HashDoc<'a>>,
    parent: ParentDoc<'a>,
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl<'a> From<&'a ProcessInfo> for ProcessDoc<'a> {
    fn from(p: &'a ProcessInfo) -> Self {
        let parent: &ParentInfo = &p.parent;
        ProcessDoc {
            pid: p.pid,
            executable: &p.executable,
            name: &p.name,
            args: p.args.as_deref(),
            args_count: p.args.as_ref().map(Vec::len),
            working_directory: p.working_directory.as_deref(),
            interactive: p.interactive,
            code_signature: (&p.code_signature).into(),
            hash: hash(&p.code_signature),
            parent: ParentDoc {
                pid: parent.pid,
                executable: parent.executable.as_deref(),
                name: parent.executable.as_deref().map(file_name),
                code_signature: parent.code_signature.as_ref().map(Into::into),
                hash: parent.code_signature.as_ref().and_then(hash),
            },
        }
    }
}

/// Code-signing facts ECS has no field for.
#[derive(Serialize)]
struct SignatureExtraDoc {
    /// Ad-hoc signed (CS_ADHOC): no identity behind the signature.
    adhoc: bool,
    platform_binary: bool,
}

impl From<&CodeSignature> for SignatureExtraDoc {
    fn from(c: &CodeSignature) -> Self {
        SignatureExtraDoc {
            adhoc: c.adhoc,
            platform_binary: c.platform_binary,
        }
    }
}

#[derive(Serialize)]
struct ParentExtraDoc {
    code_signature: SignatureExtraDoc,
}

#[derive(Serialize)]
struct ProcessExtraDoc<'a> {
    /// The controlling terminal's path (ECS's `process.tty` is an object of device numbers).
    #[serde(skip_serializing_if = "Option::is_none")]
    tty: Option<&'a str>,
    code_signature: SignatureExtraDoc,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent: Option<ParentExtraDoc>,
}

#[derive(Serialize)]
struct FileDoc<'a> {
    path: &'a str,
    name: &'a str,
}

#[derive(Serialize)]
struct FileExtraDoc<'a> {
    /// The rename's source (ECS has no field for it).
    source_path: &'a str,
}

#[derive(Serialize)]
struct ExtraDoc<'a> {
    severity: Severity,
    reasons: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    kext: Option<&'a KextInfo>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    lineage: &'a [LineageHop],
    evidence: &'a [Evidence],
    #[serde(skip_serializing_if = "Option::is_none")]
    folded: Option<&'a Folded>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    test: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    process: Option<ProcessExtraDoc<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<FileExtraDoc<'a>>,
}

#[derive(Serialize)]
struct AlertDoc<'a> {
    #[serde(rename = "@timestamp")]
    timestamp: &'a str,
    message: &'a str,
    ecs: Ecs,
    event: EventDoc<'a>,
    rule: &'a Rule,
    #[serde(skip_serializing_if = "Threat::is_empty")]
    threat: &'a Threat,
    host: &'a Host,
    agent: Agent<'static>,
    #[serde(skip_serializing_if = "Option::is_none")]
    process: Option<ProcessDoc<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<FileDoc<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a UserInfo>,
    kextwatch: ExtraDoc<'a>,
}

impl Serialize for Alert {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let a = self;
        let process_extra = a.process.as_ref().map(|p| ProcessExtraDoc {
            tty: p.tty.as_deref(),
            code_signature: (&p.code_signature).into(),
            parent: p.parent.code_signature.as_ref().map(|c| ParentExtraDoc {
                code_signature: c.into(),
            }),
        });
        AlertDoc {
            timestamp: &a.timestamp,
            message: &a.message,
            ecs: Ecs {
                version: ECS_VERSION,
            },
            event: EventDoc {
                kind: "alert",
                category: a.event.class.category,
                types: a.event.class.types,
                action: a.event.action,
                module: MODULE,
                dataset: "kextwatch.alert",
                severity: Some(severity_number(a.severity)),
                sequence: a.event.sequence,
            },
            rule: &a.rule,
            threat: &a.threat,
            host: &a.host,
            agent: AGENT,
            process: a.process.as_ref().map(Into::into),
            file: a.file.as_ref().map(|f| FileDoc {
                path: &f.path,
                name: file_name(&f.path),
            }),
            user: a.user.as_ref(),
            kextwatch: ExtraDoc {
                severity: a.severity,
                reasons: &a.reasons,
                kext: a.kextwatch.kext.as_ref(),
                lineage: &a.kextwatch.lineage,
                evidence: &a.kextwatch.evidence,
                folded: a.kextwatch.folded.as_ref(),
                test: a.kextwatch.test,
                process: process_extra,
                file: a
                    .file
                    .as_ref()
                    .and_then(|f| f.source_path.as_deref())
                    .map(|source_path| FileExtraDoc { source_path }),
            },
        }
        .serialize(s)
    }
}

/// What tells heartbeats apart: this run of kextwatch (`agent.ephemeral_id`, new at every start), the
/// count of beats in it (`event.sequence`, from 1) and the boot (`host.boot.id`). A SIEM that stops
/// receiving beats from a host, or sees the count start over, knows kextwatch was silenced or
/// restarted.
#[derive(Debug, Clone, PartialEq)]
pub struct Beat {
    pub run_id: String,
    pub sequence: u64,
    pub boot_id: Option<String>,
}

impl Beat {
    /// A new run: a random run id, no beat yet.
    pub fn new_run(boot_id: Option<String>) -> Beat {
        Beat {
            run_id: uuid::Uuid::new_v4().to_string(),
            sequence: 0,
            boot_id,
        }
    }

    /// The next beat of this run.
    pub fn advance(&mut self) -> &Beat {
        self.sequence += 1;
        self
    }
}

/// A heartbeat as an ECS document (`event.kind: metric`): `counters` go under `kextwatch.`.
pub fn heartbeat(
    timestamp: &str,
    host: &Host,
    beat: &Beat,
    message: &str,
    counters: serde_json::Value,
) -> serde_json::Value {
    let class = class_of("heartbeat");
    let event = EventDoc {
        kind: "metric",
        category: class.category,
        types: class.types,
        action: "heartbeat",
        module: MODULE,
        dataset: "kextwatch.heartbeat",
        severity: None,
        sequence: Some(beat.sequence),
    };
    let host = BootedHost {
        host,
        boot: beat.boot_id.as_deref().map(|id| Boot { id }),
    };
    let agent = Agent {
        ephemeral_id: Some(&beat.run_id),
        ..AGENT
    };
    serde_json::json!({
        "@timestamp": timestamp,
        "message": message,
        "ecs": Ecs { version: ECS_VERSION },
        "event": event,
        "host": host,
        "agent": agent,
        "kextwatch": counters,
    })
}
