//! The config file as written, with spans for error messages, and its validation.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{
    normalize_root, AlertFormat, Allowlist, BundlePattern, Config, DaemonSettings,
    DetectionSettings, InitiatorEntry, Invalid, KextEntry, KextPolicySettings, TamperSettings,
};
use crate::alert::Severity;
use crate::layout;

type S = Spanned<String>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    allowlist: RawAllowlist,
    #[serde(default)]
    detection: RawDetection,
    #[serde(default)]
    kextpolicy: RawKextPolicy,
    #[serde(default)]
    daemon: RawDaemon,
    #[serde(default)]
    tamper: RawTamper,
    #[serde(default)]
    output: Vec<RawOutput>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTamper {
    executables: Option<Vec<S>>,
    team_id: Option<S>,
    protected_paths: Option<Vec<S>>,
    launchd_label: Option<S>,
    launchd_plist: Option<S>,
    system_extension: Option<S>,
    profile_identifier: Option<S>,
    memory_minutes: Option<Spanned<i64>>,
}

/// What the package installs (crate::layout).
pub(super) const DEFAULT_EXECUTABLES: [&str; 2] = [layout::BINARY, layout::SYSEXT_EXECUTABLE];
pub(super) const DEFAULT_PROTECTED_PATHS: [&str; 4] = [
    "/Library/Application Support/kextwatch",
    layout::LAUNCHD_PLIST,
    layout::APP,
    layout::LOG_DIR,
];

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawKextPolicy {
    enabled: Option<Spanned<bool>>,
    path: Option<S>,
    poll_interval_secs: Option<Spanned<i64>>,
    #[serde(default)]
    known_mdm_payloads: Vec<S>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDaemon {
    state_dir: Option<S>,
    heartbeat_minutes: Option<Spanned<i64>>,
    event_queue: Option<Spanned<i64>>,
    mode: Option<S>,
    fail_closed: Option<Spanned<bool>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAllowlist {
    #[serde(default)]
    team_ids: Vec<S>,
    #[serde(default)]
    kexts: Vec<RawKext>,
    #[serde(default)]
    initiators: Vec<RawInitiator>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKext {
    team_id: S,
    bundle_id: S,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInitiator {
    signing_id: S,
    team_id: S,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDetection {
    watched_roots: Option<Vec<S>>,
    correlation_window_secs: Option<Spanned<i64>>,
    fold_window_secs: Option<Spanned<i64>>,
    min_severity: Option<S>,
    protected_kexts: Option<Vec<S>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutput {
    #[serde(rename = "type")]
    pub(super) kind: S,
    pub(super) path: Option<S>,
    pub(super) format: Option<S>,
    pub(super) address: Option<S>,
    pub(super) transport: Option<S>,
    pub(super) payload: Option<S>,
    pub(super) framing: Option<S>,
    pub(super) facility: Option<S>,
    pub(super) max_datagram_bytes: Option<Spanned<i64>>,
    pub(super) tls_ca_file: Option<S>,
    pub(super) tls_client_cert: Option<S>,
    pub(super) tls_client_key: Option<S>,
    pub(super) tls_server_name: Option<S>,
    pub(super) tls_danger_accept_invalid_certs: Option<Spanned<bool>>,
    pub(super) spool_max_bytes: Option<Spanned<i64>>,
}

pub(super) const DEFAULT_WATCHED_ROOTS: [&str; 3] = [
    "/Library/Extensions",
    "/System/Library/Extensions",
    "/Library/StagedExtensions",
];

/// Kexts whose unloading turns off a security control.
pub(super) const DEFAULT_PROTECTED_KEXTS: [&str; 4] = [
    "com.apple.iokit.EndpointSecurity",
    "com.apple.security.sandbox",
    "com.apple.driver.AppleMobileFileIntegrity",
    "com.apple.security.quarantine",
];

pub(super) fn invalid(
    key: impl Into<String>,
    s: &Spanned<impl Sized>,
    message: impl Into<String>,
) -> Invalid {
    Invalid {
        key: key.into(),
        span: Some(s.span()),
        message: message.into(),
    }
}

/// Apple Team IDs are ten upper-case letters and digits.
fn team_id(key: String, s: &S) -> Result<String, Invalid> {
    let v = s.get_ref();
    if v.len() == 10
        && v.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        Ok(v.clone())
    } else {
        Err(invalid(
            key,
            s,
            format!("{v:?} is not a Team ID (10 upper-case letters or digits)"),
        ))
    }
}

fn identifier_chars_ok(v: &str) -> bool {
    !v.is_empty()
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

fn bundle_pattern(key: String, s: &S) -> Result<BundlePattern, Invalid> {
    let v = s.get_ref();
    let (body, prefix) = match v.strip_suffix('*') {
        Some(p) => (p, true),
        None => (v.as_str(), false),
    };
    if !identifier_chars_ok(body.trim_end_matches('.')) {
        return Err(invalid(
            key,
            s,
            format!("{v:?} is not a bundle id (letters, digits, '.', '-', '_'; a trailing '*' matches a prefix)"),
        ));
    }
    Ok(if prefix {
        BundlePattern::Prefix(body.to_string())
    } else {
        BundlePattern::Exact(body.to_string())
    })
}

fn absolute_path(key: &str, v: &Option<S>, default: &str) -> Result<PathBuf, Invalid> {
    match v {
        None => Ok(PathBuf::from(default)),
        Some(s) if s.get_ref().starts_with('/') => Ok(PathBuf::from(s.get_ref())),
        Some(s) => Err(invalid(
            key,
            s,
            format!("{:?} must be an absolute path", s.get_ref()),
        )),
    }
}

impl RawKextPolicy {
    fn validate(&self) -> Result<KextPolicySettings, Invalid> {
        let mut known = Vec::new();
        for (i, p) in self.known_mdm_payloads.iter().enumerate() {
            let v = p.get_ref();
            let uuid_shape = v.len() == 36
                && v.char_indices().all(|(i, c)| {
                    if matches!(i, 8 | 13 | 18 | 23) {
                        c == '-'
                    } else {
                        c.is_ascii_hexdigit()
                    }
                });
            if !uuid_shape {
                return Err(invalid(
                    format!("kextpolicy.known_mdm_payloads[{i}]"),
                    p,
                    format!("{v:?} is not a payload UUID (8-4-4-4-12 hex digits)"),
                ));
            }
            known.push(v.to_ascii_uppercase());
        }
        Ok(KextPolicySettings {
            enabled: self.enabled.as_ref().is_none_or(|e| *e.get_ref()),
            path: absolute_path(
                "kextpolicy.path",
                &self.path,
                crate::kextpolicy::DEFAULT_PATH,
            )?,
            poll_interval: window(
                "kextpolicy.poll_interval_secs",
                &self.poll_interval_secs,
                10,
            )?,
            known_mdm_payloads: known,
        })
    }
}

/// A list of absolute paths below `/`, normalised; `default` when the key is absent.
fn path_list(key: &str, v: &Option<Vec<S>>, default: &[&str]) -> Result<Vec<String>, Invalid> {
    let Some(list) = v else {
        return Ok(default.iter().map(|p| p.to_string()).collect());
    };
    list.iter()
        .enumerate()
        .map(|(i, p)| {
            normalize_root(p.get_ref())
                .filter(|n| n != "/")
                .ok_or_else(|| {
                    invalid(
                        format!("{key}[{i}]"),
                        p,
                        format!("{:?} must be an absolute path below /", p.get_ref()),
                    )
                })
        })
        .collect()
}

fn identifier(key: &str, v: &Option<S>, default: &str) -> Result<String, Invalid> {
    match v {
        None => Ok(default.to_string()),
        Some(s) if identifier_chars_ok(s.get_ref()) => Ok(s.get_ref().clone()),
        Some(s) => Err(invalid(
            key,
            s,
            format!(
                "{:?} is not an identifier (letters, digits, '.', '-', '_')",
                s.get_ref()
            ),
        )),
    }
}

impl RawTamper {
    fn validate(&self) -> Result<TamperSettings, Invalid> {
        let minutes = match &self.memory_minutes {
            None => 60,
            Some(m) if (1..=10_080).contains(m.get_ref()) => *m.get_ref() as u64,
            Some(m) => {
                return Err(invalid(
                    "tamper.memory_minutes",
                    m,
                    format!("{} is out of range (1 to 10080)", m.get_ref()),
                ))
            }
        };
        let team_id = match &self.team_id {
            Some(t) if !t.get_ref().is_empty() => Some(team_id("tamper.team_id".into(), t)?),
            _ => None,
        };
        let launchd_plist = absolute_path(
            "tamper.launchd_plist",
            &self.launchd_plist,
            layout::LAUNCHD_PLIST,
        )?;
        Ok(TamperSettings {
            executables: path_list(
                "tamper.executables",
                &self.executables,
                &DEFAULT_EXECUTABLES,
            )?,
            team_id,
            protected_paths: path_list(
                "tamper.protected_paths",
                &self.protected_paths,
                &DEFAULT_PROTECTED_PATHS,
            )?,
            launchd_label: identifier(
                "tamper.launchd_label",
                &self.launchd_label,
                layout::LAUNCHD_LABEL,
            )?,
            launchd_plist: normalize_root(&launchd_plist.to_string_lossy()).unwrap_or_default(),
            system_extension: identifier(
                "tamper.system_extension",
                &self.system_extension,
                layout::SYSEXT_BUNDLE_ID,
            )?,
            profile_identifier: identifier(
                "tamper.profile_identifier",
                &self.profile_identifier,
                "com.kextwatch",
            )?,
            memory: Duration::from_secs(minutes * 60),
        })
    }
}

impl RawDaemon {
    fn validate(&self) -> Result<DaemonSettings, Invalid> {
        let minutes = match &self.heartbeat_minutes {
            None => 15,
            Some(m) if (1..=1440).contains(m.get_ref()) => *m.get_ref() as u64,
            Some(m) => {
                return Err(invalid(
                    "daemon.heartbeat_minutes",
                    m,
                    format!("{} is out of range (1 to 1440)", m.get_ref()),
                ))
            }
        };
        let event_queue = match &self.event_queue {
            None => 16_384,
            Some(q) if (1..=1_048_576).contains(q.get_ref()) => *q.get_ref() as usize,
            Some(q) => {
                return Err(invalid(
                    "daemon.event_queue",
                    q,
                    "out of range (1 to 1048576)",
                ))
            }
        };
        let enforce = match self.mode.as_ref().map(|m| (m, m.get_ref().as_str())) {
            None | Some((_, "monitor")) => false,
            Some((_, "enforce")) => true,
            Some((m, other)) => {
                return Err(invalid(
                    "daemon.mode",
                    m,
                    format!("unknown mode {other:?}: expected \"monitor\" or \"enforce\""),
                ))
            }
        };
        Ok(DaemonSettings {
            state_dir: absolute_path("daemon.state_dir", &self.state_dir, layout::STATE_DIR)?,
            heartbeat_interval: Duration::from_secs(minutes * 60),
            event_queue,
            enforce,
            fail_closed: self.fail_closed.as_ref().is_some_and(|b| *b.get_ref()),
        })
    }
}

fn window(key: &str, v: &Option<Spanned<i64>>, default: u64) -> Result<Duration, Invalid> {
    match v {
        None => Ok(Duration::from_secs(default)),
        Some(s) => {
            let n = *s.get_ref();
            if (1..=86_400).contains(&n) {
                Ok(Duration::from_secs(n as u64))
            } else {
                Err(invalid(
                    key,
                    s,
                    format!("{n} is out of range (1 to 86400 seconds)"),
                ))
            }
        }
    }
}

pub(super) fn alert_format(key: String, v: &Option<S>) -> Result<AlertFormat, Invalid> {
    match v.as_ref().map(|s| (s, s.get_ref().as_str())) {
        None | Some((_, "json")) => Ok(AlertFormat::Json),
        Some((_, "text")) => Ok(AlertFormat::Text),
        Some((_, "cef")) => Ok(AlertFormat::Cef),
        Some((s, other)) => Err(invalid(
            key,
            s,
            format!("unknown format {other:?}: expected \"json\", \"text\" or \"cef\""),
        )),
    }
}

impl RawConfig {
    pub(super) fn validate(self) -> Result<Config, Invalid> {
        let a = self.allowlist;
        let mut allowlist = Allowlist::default();
        for (i, t) in a.team_ids.iter().enumerate() {
            allowlist
                .team_ids
                .insert(team_id(format!("allowlist.team_ids[{i}]"), t)?);
        }
        for (i, k) in a.kexts.iter().enumerate() {
            allowlist.kexts.push(KextEntry {
                team_id: team_id(format!("allowlist.kexts[{i}].team_id"), &k.team_id)?,
                bundle_id: bundle_pattern(format!("allowlist.kexts[{i}].bundle_id"), &k.bundle_id)?,
            });
        }
        for (i, e) in a.initiators.iter().enumerate() {
            let sid = e.signing_id.get_ref();
            if !identifier_chars_ok(sid) {
                return Err(invalid(
                    format!("allowlist.initiators[{i}].signing_id"),
                    &e.signing_id,
                    format!("{sid:?} is not a signing identifier"),
                ));
            }
            allowlist.initiators.push(InitiatorEntry {
                signing_id: sid.clone(),
                team_id: team_id(format!("allowlist.initiators[{i}].team_id"), &e.team_id)?,
            });
        }

        let d = self.detection;
        let watched_roots = match &d.watched_roots {
            None => DEFAULT_WATCHED_ROOTS
                .iter()
                .map(|r| r.to_string())
                .collect(),
            Some(roots) => {
                let mut out = Vec::new();
                for (i, r) in roots.iter().enumerate() {
                    let n = normalize_root(r.get_ref())
                        .filter(|n| n != "/")
                        .ok_or_else(|| {
                            invalid(
                                format!("detection.watched_roots[{i}]"),
                                r,
                                format!("{:?} must be an absolute path below /", r.get_ref()),
                            )
                        })?;
                    out.push(n);
                }
                out
            }
        };
        let min_severity = match &d.min_severity {
            None => Severity::Low,
            Some(s) => s
                .get_ref()
                .parse()
                .map_err(|m: String| invalid("detection.min_severity", s, m))?,
        };
        let protected_kexts = match &d.protected_kexts {
            None => DEFAULT_PROTECTED_KEXTS
                .iter()
                .map(|k| k.to_string())
                .collect(),
            Some(list) => {
                let mut out = Vec::new();
                for (i, k) in list.iter().enumerate() {
                    if !identifier_chars_ok(k.get_ref()) {
                        return Err(invalid(
                            format!("detection.protected_kexts[{i}]"),
                            k,
                            format!("{:?} is not a bundle id", k.get_ref()),
                        ));
                    }
                    out.push(k.get_ref().clone());
                }
                out
            }
        };
        let detection = DetectionSettings {
            watched_roots,
            correlation_window: window(
                "detection.correlation_window_secs",
                &d.correlation_window_secs,
                120,
            )?,
            fold_window: window("detection.fold_window_secs", &d.fold_window_secs, 300)?,
            min_severity,
            protected_kexts,
        };

        let mut outputs = Vec::new();
        for (i, o) in self.output.iter().enumerate() {
            outputs.push(super::output::validate(o, i)?);
        }
        Ok(Config {
            allowlist,
            detection,
            kextpolicy: self.kextpolicy.validate()?,
            daemon: self.daemon.validate()?,
            tamper: self.tamper.validate()?,
            outputs,
        })
    }
}
