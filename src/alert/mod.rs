//! The alert model and its encoders. The model is shaped for detection; `ecs` writes it as the ECS
//! document that is the JSON Lines contract the README documents.

pub mod attack;
pub mod ecs;
mod encode;

pub use attack::Threat;
pub use ecs::{EventClass, Host};
pub use encode::{write_json, write_text};

use serde::Serialize;

/// Alert severity, ordered from least to most severe. Its lowercase names are used everywhere: JSON,
/// the config, and the command line (`--min-severity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
#[value(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// One step more severe, saturating at critical.
    pub fn raised(self) -> Severity {
        match self {
            Severity::Info => Severity::Low,
            Severity::Low => Severity::Medium,
            Severity::Medium => Severity::High,
            Severity::High | Severity::Critical => Severity::Critical,
        }
    }

    /// One step less severe, saturating at info.
    pub fn lowered(self) -> Severity {
        match self {
            Severity::Info | Severity::Low => Severity::Info,
            Severity::Medium => Severity::Low,
            Severity::High => Severity::Medium,
            Severity::Critical => Severity::High,
        }
    }
}

impl std::str::FromStr for Severity {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Severity::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                format!("unknown severity {s:?}: expected info, low, medium, high or critical")
            })
    }
}

impl std::fmt::Display for Severity {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One alert (serialised by `ecs` as an ECS document).
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// RFC 3339 time of the triggering event (not of detection).
    pub timestamp: String,
    /// One readable line: the rule, what it is about, and the reason that set the severity.
    pub message: String,
    pub severity: Severity,
    pub rule: Rule,
    pub threat: Threat,
    /// Why this alert exists and why it has this severity, in words an analyst can act on.
    pub reasons: Vec<String>,
    pub event: EventInfo,
    /// Absent for alerts from KextPolicy changes, which no process event carries.
    pub process: Option<ProcessInfo>,
    pub file: Option<FileInfo>,
    pub user: Option<UserInfo>,
    pub host: Host,
    pub kextwatch: Extra,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rule {
    pub id: &'static str,
    pub name: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EventInfo {
    /// The ES event name of the triggering event (`exec`, `rename`, `kextload`, ...), or the
    /// KextPolicy change (`kextpolicy.approval_added`, ...).
    pub action: &'static str,
    pub class: EventClass,
    pub sequence: Option<u64>,
}

/// The acting process. For exec events this is the new image and `parent` is the image that called
/// exec (in the usual fork + exec, the parent's program); its identity is what the initiator allowlist
/// is checked against.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessInfo {
    pub pid: i32,
    pub executable: String,
    pub name: String,
    pub args: Option<Vec<String>>,
    pub working_directory: Option<String>,
    pub interactive: bool,
    /// The controlling terminal's path.
    pub tty: Option<String>,
    pub code_signature: CodeSignature,
    pub parent: ParentInfo,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ParentInfo {
    pub pid: i32,
    pub executable: Option<String>,
    pub code_signature: Option<CodeSignature>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CodeSignature {
    pub team_id: Option<String>,
    pub signing_id: Option<String>,
    pub cdhash: Option<String>,
    /// Signed at all (CS_SIGNED), ad-hoc included.
    pub signed: bool,
    /// Validly signed (CS_VALID).
    pub valid: bool,
    /// Ad-hoc signed (CS_ADHOC): no identity behind the signature.
    pub adhoc: bool,
    pub platform_binary: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FileInfo {
    pub path: String,
    /// Rename source, when the alert is about a rename.
    pub source_path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserInfo {
    /// The login (audit) user when there is one, else the effective user.
    pub id: String,
    pub effective: UserId,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UserId {
    pub id: String,
}

/// kextwatch-specific facts (with severity, reasons and what ECS has no field for, they make up
/// the document's `kextwatch.` object).
#[derive(Debug, Clone, PartialEq)]
pub struct Extra {
    pub kext: Option<KextInfo>,
    /// The process chain behind the action, acting process first, up to the initiator (or as far
    /// as known): each hop's image.
    pub lineage: Vec<LineageHop>,
    /// Every event behind the alert, oldest first, the triggering one last.
    pub evidence: Vec<Evidence>,
    /// Present on a follow-up alert that reports duplicates folded into an earlier one.
    pub folded: Option<Folded>,
    /// Set only on the synthetic alert of `kextwatch test-alert`.
    pub test: bool,
}

/// One process on an alert's lineage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineageHop {
    pub pid: i32,
    pub executable: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
}

/// Longest string from an event an alert carries, and most arguments: a 100 kB argument must not make
/// a 500 kB alert that SIEM relays split or drop. Clipped values end with a marker.
pub const MAX_FIELD_BYTES: usize = 4096;
pub const MAX_ARGS: usize = 256;

fn clip(s: &mut String) {
    if s.len() <= MAX_FIELD_BYTES {
        return;
    }
    let mut cut = MAX_FIELD_BYTES;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let dropped = s.len() - cut;
    s.truncate(cut);
    s.push_str(&format!("...[{dropped} more bytes clipped by kextwatch]"));
}

fn clip_args(args: &mut Option<Vec<String>>) {
    if let Some(a) = args {
        if a.len() > MAX_ARGS {
            let n = a.len() - MAX_ARGS;
            a.truncate(MAX_ARGS);
            a.push(format!("...[{n} more arguments clipped by kextwatch]"));
        }
        a.iter_mut().for_each(clip);
    }
}

impl Alert {
    /// Bound every string that came from an event (see [`MAX_FIELD_BYTES`]).
    pub fn clip_fields(&mut self) {
        clip(&mut self.message);
        self.reasons.iter_mut().for_each(clip);
        if let Some(p) = &mut self.process {
            clip(&mut p.executable);
            clip(&mut p.name);
            clip_args(&mut p.args);
            p.working_directory.as_mut().map(clip);
            p.parent.executable.as_mut().map(clip);
        }
        if let Some(f) = &mut self.file {
            clip(&mut f.path);
            f.source_path.as_mut().map(clip);
        }
        if let Some(k) = &mut self.kextwatch.kext {
            clip(&mut k.bundle_id);
        }
        for e in &mut self.kextwatch.evidence {
            e.executable.as_mut().map(clip);
            clip_args(&mut e.args);
            e.path.as_mut().map(clip);
            e.kext_bundle_id.as_mut().map(clip);
        }
    }
}

/// The clearly marked synthetic alert `kextwatch test-alert` sends from `host` to prove the route
/// to the SIEM.
pub fn test_alert(timestamp: String, host: Host) -> Alert {
    let reason = format!(
        "synthetic test alert sent by `kextwatch test-alert` on {}: it proves the route to the SIEM and needs no action",
        host.name.as_deref().unwrap_or("this host")
    );
    Alert {
        timestamp,
        message: format!("kextwatch test alert (synthetic): {reason}"),
        severity: Severity::Low,
        rule: Rule {
            id: "KW-0000",
            name: "kextwatch test alert (synthetic)",
        },
        threat: Threat::default(),
        reasons: vec![reason],
        event: EventInfo {
            action: "test-alert",
            class: ecs::class_of("test-alert"),
            sequence: None,
        },
        process: None,
        file: None,
        user: None,
        host,
        kextwatch: Extra {
            kext: None,
            lineage: Vec::new(),
            evidence: Vec::new(),
            folded: None,
            test: true,
        },
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KextInfo {
    pub bundle_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    #[serde(rename = "@timestamp")]
    pub timestamp: String,
    pub action: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub executable: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kext_bundle_id: Option<String>,
    pub team_id: Option<String>,
    pub signing_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub global_seq_num: Option<u64>,
}

impl Evidence {
    /// "EXECUTABLE (pid N)", or the source when no process is behind it.
    pub fn actor(&self) -> String {
        match (&self.executable, self.pid) {
            (Some(exe), Some(pid)) => format!("{exe} (pid {pid})"),
            (Some(exe), None) => exe.clone(),
            _ => match self.action {
                "sip-state" => "the SIP state".to_string(),
                "config-reload" => "a configuration reload".to_string(),
                "start-check" => "kextwatch's start-up check".to_string(),
                _ => "KextPolicy".to_string(),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Folded {
    /// How many identical alerts this one stands for (including the first, already emitted).
    pub count: u64,
    pub first: String,
    pub last: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_step_one_level_and_saturate() {
        use Severity::*;
        let all = [Info, Low, Medium, High, Critical];
        let up: Vec<Severity> = all.iter().map(|s| s.raised()).collect();
        let down: Vec<Severity> = all.iter().map(|s| s.lowered()).collect();
        assert_eq!(up, [Low, Medium, High, Critical, Critical]);
        assert_eq!(down, [Info, Info, Low, Medium, High]);
    }
}
