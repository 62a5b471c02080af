//! Configuration: TOML parsed into `raw` types (with spans), then validated into [`Config`].
//!
//! Every error names the file, the line and column, and the key, so an admin can fix an allowlist
//! without guessing. Unknown keys are errors.

mod output;
mod raw;

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::alert::Severity;
use crate::files::Links;
use crate::path::normalize;

/// The shipped default configuration, also used when no `--config` is given.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/kextwatch.toml");
/// A config or managed-preferences file larger than this is refused: real ones are a few KB.
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub allowlist: Allowlist,
    pub detection: DetectionSettings,
    pub kextpolicy: KextPolicySettings,
    pub daemon: DaemonSettings,
    pub tamper: TamperSettings,
    pub outputs: Vec<OutputSpec>,
}

/// What kextwatch itself is, so that attempts to stop, blind or mislead it are recognised.
#[derive(Debug, Clone, PartialEq)]
pub struct TamperSettings {
    /// kextwatch's own executables (normalised): processes running them are kextwatch.
    pub executables: Vec<String>,
    /// The Team ID kextwatch is signed with; when set, a process counts as kextwatch only with it.
    pub team_id: Option<String>,
    /// kextwatch's files and folders (normalised); `state_dir` and file outputs count too.
    pub protected_paths: Vec<String>,
    /// The LaunchDaemon's label and plist.
    pub launchd_label: String,
    pub launchd_plist: String,
    /// The system extension's bundle id.
    pub system_extension: String,
    /// Identifier prefix of kextwatch's configuration profiles.
    pub profile_identifier: String,
    /// How long kext activity after tampering is critical (remembered across restarts).
    pub memory: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KextPolicySettings {
    /// Watch the database (the daemon); off where there is none to watch.
    pub enabled: bool,
    /// The KextPolicy database, opened read-only.
    pub path: PathBuf,
    pub poll_interval: Duration,
    /// MDM profile payload UUIDs whose kext approvals are expected (upper-case).
    pub known_mdm_payloads: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DaemonSettings {
    /// Where kextwatch keeps its own state (the last KextPolicy snapshot, the alert spool, ...).
    pub state_dir: PathBuf,
    /// How often each syslog sink receives a heartbeat with counters.
    pub heartbeat_interval: Duration,
    /// Events buffered between the sources and detection; past it events are dropped and counted
    /// (a source never blocks, as the Endpoint Security callback must not).
    pub event_queue: usize,
    /// `enforce`: answer AUTH_KEXTLOAD, denying kexts whose identity is not allowlisted.
    pub enforce: bool,
    /// In enforce mode, deny kexts whose identity is unknown (default: allow them, fail open).
    pub fail_closed: bool,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Allowlist {
    /// Every kext of these developer teams is trusted.
    pub team_ids: BTreeSet<String>,
    pub kexts: Vec<KextEntry>,
    /// Management tools trusted to run kext and policy commands, by signing id and Team ID.
    pub initiators: Vec<InitiatorEntry>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KextEntry {
    pub team_id: String,
    pub bundle_id: BundlePattern,
}

/// A bundle id, or a prefix when written with a trailing `*` (`com.vmware.kext.*`).
#[derive(Debug, Clone, PartialEq)]
pub enum BundlePattern {
    Exact(String),
    Prefix(String),
}

/// As written in the config: the bundle id, or the prefix and `*`.
impl fmt::Display for BundlePattern {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            BundlePattern::Exact(id) => f.write_str(id),
            BundlePattern::Prefix(p) => write!(f, "{p}*"),
        }
    }
}

impl BundlePattern {
    pub fn matches(&self, bundle_id: &str) -> bool {
        match self {
            BundlePattern::Exact(b) => b == bundle_id,
            BundlePattern::Prefix(p) => bundle_id.starts_with(p.as_str()),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct InitiatorEntry {
    pub signing_id: String,
    pub team_id: String,
}

/// How much the allowlist trusts a kext identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KextTrust {
    /// The Team ID is known and allowlisted (by team, or by team and bundle id).
    Allowlisted,
    /// Only the bundle id is known and it matches an allowlist entry; the team is unverified.
    BundleMatchUnverified,
    NotAllowlisted,
}

impl Allowlist {
    pub fn kext_trust(&self, team_id: Option<&str>, bundle_id: &str) -> KextTrust {
        match team_id {
            Some(team) => {
                let listed = self.team_ids.contains(team)
                    || self
                        .kexts
                        .iter()
                        .any(|k| k.team_id == team && k.bundle_id.matches(bundle_id));
                if listed {
                    KextTrust::Allowlisted
                } else {
                    KextTrust::NotAllowlisted
                }
            }
            None if self.kexts.iter().any(|k| k.bundle_id.matches(bundle_id)) => {
                KextTrust::BundleMatchUnverified
            }
            None => KextTrust::NotAllowlisted,
        }
    }

    /// Both identifiers must match: a path or a name alone never makes an initiator trusted.
    pub fn initiator_allowed(&self, signing_id: Option<&str>, team_id: Option<&str>) -> bool {
        let (Some(sid), Some(team)) = (signing_id, team_id) else {
            return false;
        };
        self.initiators
            .iter()
            .any(|i| i.signing_id == sid && i.team_id == team)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DetectionSettings {
    /// Normalised absolute paths whose contents are kext locations.
    pub watched_roots: Vec<String>,
    pub correlation_window: Duration,
    pub fold_window: Duration,
    pub min_severity: Severity,
    /// Kexts whose unloading disables a security control.
    pub protected_kexts: Vec<String>,
}

/// How stdout and file outputs write alerts (also `--format` on the command line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AlertFormat {
    /// JSON Lines (the alert contract).
    Json,
    /// One readable line per alert.
    Text,
    /// ArcSight CEF, one line per alert.
    Cef,
}

#[derive(Debug, Clone, PartialEq)]
pub enum OutputSpec {
    Stdout { format: AlertFormat },
    File { path: PathBuf, format: AlertFormat },
    Syslog(SyslogSpec),
}

/// A syslog destination (RFC 5424/3164 over UDP, TCP or TLS).
#[derive(Debug, Clone, PartialEq)]
pub struct SyslogSpec {
    /// `host:port` as configured; also the sink's name in reports.
    pub address: String,
    pub host: String,
    pub port: u16,
    pub transport: SyslogTransport,
    pub format: SyslogFormat,
    pub payload: SyslogPayload,
    pub framing: Framing,
    /// Syslog facility number (0-23).
    pub facility: u8,
    /// UDP: larger messages are truncated with a marker (never split).
    pub max_datagram_bytes: usize,
    pub tls: TlsSpec,
    /// Cap of this sink's on-disk spool; the oldest alerts are evicted past it (counted).
    pub spool_max_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogTransport {
    Udp,
    Tcp,
    Tls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogFormat {
    Rfc5424,
    Rfc3164,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogPayload {
    Json,
    Cef,
}

/// TCP framing (RFC 6587). TLS always uses octet counting (RFC 5425).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    OctetCounting,
    Lf,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TlsSpec {
    /// Trust these CAs instead of the system roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    /// Name to verify the server certificate against (default: the address's host).
    pub server_name: Option<String>,
    /// Turns off certificate verification. Only for tests and emergencies; logged loudly.
    pub danger_accept_invalid_certs: bool,
}

/// A configuration error with its location.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct ConfigError {
    pub origin: String,
    /// 1-based; 0 when the error has no position (the file could not be read).
    pub line: usize,
    pub column: usize,
    /// Dotted key path, when known.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if let Some(k) = &self.key {
            write!(f, ": key `{k}`")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl Config {
    /// Where a command delivers alerts: the configured outputs or, with none, stdout as JSON Lines.
    pub fn command_outputs(&self) -> Vec<OutputSpec> {
        if self.outputs.is_empty() {
            vec![OutputSpec::Stdout {
                format: AlertFormat::Json,
            }]
        } else {
            self.outputs.clone()
        }
    }

    /// Where the daemon delivers alerts: the configured outputs or, with none, the alert log
    /// (`layout::ALERT_LOG`, rotated by the package's newsyslog rule). Never stdout by default:
    /// under launchd it is nobody's terminal, and a file nothing rotates.
    pub fn daemon_outputs(&self) -> Vec<OutputSpec> {
        if self.outputs.is_empty() {
            vec![OutputSpec::File {
                path: crate::layout::ALERT_LOG.into(),
                format: AlertFormat::Json,
            }]
        } else {
            self.outputs.clone()
        }
    }

    /// Every path whose change is tampering with kextwatch: the configured ones, `state_dir` and the
    /// daemon's alert files (normalised).
    pub fn protected_paths(&self) -> Vec<String> {
        let mut paths = self.tamper.protected_paths.clone();
        let outputs = self.daemon_outputs();
        let extra =
            std::iter::once(&self.daemon.state_dir).chain(outputs.iter().filter_map(|o| match o {
                OutputSpec::File { path, .. } => Some(path),
                _ => None,
            }));
        paths.extend(extra.filter_map(|p| normalize_root(&p.to_string_lossy())));
        paths.sort();
        paths.dedup();
        paths
    }

    /// Read and validate a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = crate::files::read_regular_text(path, MAX_CONFIG_BYTES, Links::Follow).map_err(
            |e| ConfigError {
                origin: origin.clone(),
                line: 0,
                column: 0,
                key: None,
                message: format!("cannot read: {e}"),
            },
        )?;
        Config::parse(&text, &origin)
    }

    /// The config MDM delivered (`kextwatch profile --config`: key `ConfigTOML` of the managed
    /// preferences plist) if there is one, else the file; with where it came from.
    pub fn load_managed_or_file(
        managed: &Path,
        file: &Path,
    ) -> Result<(Config, String), ConfigError> {
        if managed.exists() {
            let origin = format!("{} (ConfigTOML)", managed.display());
            let err = |message: String| ConfigError {
                origin: origin.clone(),
                line: 0,
                column: 0,
                key: None,
                message,
            };
            let bytes = crate::files::read_regular(managed, MAX_CONFIG_BYTES, Links::Follow)
                .map_err(|e| err(format!("cannot read: {e}")))?;
            crate::signing::check_plist(&bytes).map_err(|e| err(e.to_string()))?;
            let value = plist::Value::from_reader(std::io::Cursor::new(bytes))
                .map_err(|e| err(e.to_string()))?;
            if let Some(text) = value
                .as_dictionary()
                .and_then(|d| d.get("ConfigTOML"))
                .and_then(|v| v.as_string())
            {
                return Config::parse(text, &origin).map(|c| (c, origin));
            }
        }
        Config::load(file).map(|c| (c, file.display().to_string()))
    }

    /// The shipped default configuration.
    pub fn default_config() -> Config {
        match Config::parse(DEFAULT_CONFIG, "config/kextwatch.toml") {
            Ok(c) => c,
            // A test parses the shipped file; this cannot be reached by user input.
            Err(e) => panic!("shipped default config is invalid: {e}"),
        }
    }

    /// Parse and validate TOML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s));
            ConfigError {
                origin: origin.to_string(),
                line,
                column,
                key: toml_key_path(&e),
                message: e.message().trim_end().to_string(),
            }
        })?;
        raw.validate().map_err(|e| {
            let (line, column) = e.span.map_or((0, 0), |s| line_col(text, s));
            ConfigError {
                origin: origin.to_string(),
                line,
                column,
                key: Some(e.key),
                message: e.message,
            }
        })
    }
}

/// The key path a `toml` error is about (`detection.min_severity`). The crate keeps it private and
/// prints it only when the error carries no source excerpt, so it is read from that rendering.
fn toml_key_path(e: &toml::de::Error) -> Option<String> {
    let mut bare = e.clone();
    bare.set_input(None);
    let text = bare.to_string();
    let line = text.lines().rev().find(|l| l.starts_with("in `"))?;
    let key = line.strip_prefix("in `")?.strip_suffix('`')?;
    (!key.is_empty()).then(|| key.to_string())
}

/// Validation failure before it is placed in the file.
pub(crate) struct Invalid {
    pub key: String,
    pub span: Option<Range<usize>>,
    pub message: String,
}

fn line_col(text: &str, span: Range<usize>) -> (usize, usize) {
    let start = span.start.min(text.len());
    let before = text.get(..start).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

pub(crate) fn normalize_root(p: &str) -> Option<String> {
    p.starts_with('/').then(|| normalize(p).into_owned())
}
