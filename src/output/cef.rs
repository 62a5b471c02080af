//! ArcSight CEF payload: `CEF:0|Vendor|Product|Version|SignatureID|Name|Severity|Extension`.
//!
//! Mapping (documented in README.md): `rt` event time (ms), `dvchost` the host the alert names, `act`
//! event action, `msg` the alert's message, `dproc`/`dpid` the
//! acting process, `sproc`/`spid` its parent (the initiator for exec), `suid` user, `filePath` file,
//! `cs1` reasons, `cs2` ATT&CK techniques, `cs3` Team ID, `cs4` signing id, `cs5` kext bundle id,
//! `cs6` parent signing id, `flexString1` the kext's Team ID, `cnt` folded count. Severity 0-10:
//! info 1, low 3, medium 5, high 8, critical 10. A key with no value is left out, and values are cut
//! to the lengths the CEF dictionary gives (with a marker), so no receiver truncates them silently.

use std::fmt::Write as _;

use crate::alert::{Alert, Severity};

pub fn cef_severity(s: Severity) -> u8 {
    match s {
        Severity::Info => 1,
        Severity::Low => 3,
        Severity::Medium => 5,
        Severity::High => 8,
        Severity::Critical => 10,
    }
}

/// Header fields escape `\` and `|`; line breaks become spaces.
fn header(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '|' => out.push_str("\\|"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Extension values escape `\`, `=`, CR and LF; other control characters become spaces.
fn value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// Appended to a value cut to its CEF length limit.
const CLIPPED: &str = "...[clipped]";

/// The CEF dictionary's length limit for each extension key kextwatch writes (characters).
fn limit(key: &str) -> usize {
    match key {
        "act" => 63,
        "cs1" | "cs2" | "cs3" | "cs4" | "cs5" | "cs6" => 4000,
        _ => 1023,
    }
}

/// `v` cut to `max` characters, the marker included, on a character boundary.
fn clipped(v: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if v.chars().count() <= max {
        return std::borrow::Cow::Borrowed(v);
    }
    let keep = max.saturating_sub(CLIPPED.len());
    let mut out: String = v.chars().take(keep).collect();
    out.push_str(CLIPPED);
    std::borrow::Cow::Owned(out)
}

/// CEF extension pairs in order; a key without a value is never added (nor the label naming it).
#[derive(Default)]
struct Extension(Vec<(&'static str, String)>);

impl Extension {
    fn put(&mut self, key: &'static str, value: String) {
        if !value.is_empty() {
            self.0.push((key, value));
        }
    }

    /// A custom field and the label that says what it holds (`cs1Label=reasons cs1=...`).
    fn labeled(&mut self, keys: (&'static str, &'static str), label: &str, value: String) {
        if !value.is_empty() {
            self.0.push((keys.0, label.to_string()));
            self.0.push((keys.1, value));
        }
    }

    /// Written out after `out`: each value cut to its dictionary limit and escaped.
    fn write(&self, out: &mut String) {
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            let _ = write!(out, "{k}={}", value(&clipped(v, limit(k))));
        }
    }
}

fn epoch_ms(rfc3339: &str) -> Option<String> {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000).to_string())
}

/// A heartbeat as CEF (SignatureID `heartbeat`, severity 0): its counters, as JSON, in `cs1`.
pub fn heartbeat(timestamp: &str, counters_json: &str, dvchost: Option<&str>) -> String {
    let mut out = format!(
        "CEF:0|kextwatch|kextwatch|{}|heartbeat|kextwatch heartbeat|0|",
        header(env!("CARGO_PKG_VERSION"))
    );
    let mut ext = Extension::default();
    ext.put("rt", epoch_ms(timestamp).unwrap_or_default());
    ext.put("dvchost", dvchost.unwrap_or_default().to_string());
    ext.labeled(("cs1Label", "cs1"), "counters", counters_json.to_string());
    ext.write(&mut out);
    out
}

/// One alert as CEF; `dvchost` is the host the alert names (the daemon's Mac, or the name a replay
/// was given), left out when it names none.
pub fn alert(a: &Alert) -> String {
    let mut out = format!(
        "CEF:0|kextwatch|kextwatch|{}|{}|{}|{}|",
        header(env!("CARGO_PKG_VERSION")),
        header(a.rule.id),
        header(a.rule.name),
        cef_severity(a.severity)
    );
    let mut ext = Extension::default();
    ext.put("rt", epoch_ms(&a.timestamp).unwrap_or_default());
    ext.put("dvchost", a.host.hostname.clone().unwrap_or_default());
    ext.put("act", a.event.action.to_string());
    ext.put("msg", a.message.clone());
    if let Some(p) = &a.process {
        ext.put("dproc", p.executable.clone());
        ext.put("dpid", p.pid.to_string());
        ext.put("sproc", p.parent.executable.clone().unwrap_or_default());
        ext.put("spid", p.parent.pid.to_string());
        let sig = &p.code_signature;
        ext.labeled(
            ("cs3Label", "cs3"),
            "teamId",
            sig.team_id.clone().unwrap_or_default(),
        );
        ext.labeled(
            ("cs4Label", "cs4"),
            "signingId",
            sig.signing_id.clone().unwrap_or_default(),
        );
        let parent_signing_id = p
            .parent
            .code_signature
            .as_ref()
            .and_then(|c| c.signing_id.clone());
        ext.labeled(
            ("cs6Label", "cs6"),
            "parentSigningId",
            parent_signing_id.unwrap_or_default(),
        );
    }
    if let Some(u) = &a.user {
        ext.put("suid", u.id.clone());
    }
    if let Some(f) = &a.file {
        ext.put("filePath", f.path.clone());
    }
    ext.labeled(("cs1Label", "cs1"), "reasons", a.reasons.join("; "));
    ext.labeled(
        ("cs2Label", "cs2"),
        "attackTechniques",
        a.threat.ids().join(","),
    );
    if let Some(k) = &a.kextwatch.kext {
        ext.labeled(("cs5Label", "cs5"), "kextBundleId", k.bundle_id.clone());
        // The kext's signer, not the acting process's (cs3): what a KextPolicy alert is about.
        let team = k.team_id.clone().unwrap_or_default();
        ext.labeled(("flexString1Label", "flexString1"), "kextTeamId", team);
    }
    if let Some(f) = &a.kextwatch.folded {
        ext.put("cnt", f.count.to_string());
    }
    ext.write(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs_of(cef: &str) -> Vec<(String, String)> {
        let ext = cef.splitn(8, '|').nth(7).unwrap();
        let mut pairs: Vec<(String, String)> = Vec::new();
        for token in ext.split(' ') {
            match token.split_once('=') {
                Some((k, v)) if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric()) => {
                    pairs.push((k.into(), v.into()))
                }
                _ => {
                    let last = pairs.last_mut().unwrap();
                    last.1.push(' ');
                    last.1.push_str(token);
                }
            }
        }
        pairs
    }

    #[test]
    fn no_key_without_a_value_and_every_value_within_its_dictionary_limit() {
        let mut a = crate::alert::test_alert("2026-11-25T14:03:12Z".into(), Default::default());
        a.reasons.clear();
        a.file = Some(crate::alert::FileInfo {
            path: "/tmp/".to_string() + &"x".repeat(5000),
            source_path: None,
        });
        a.kextwatch.kext = Some(crate::alert::KextInfo {
            bundle_id: "com.example.driver".into(),
            team_id: Some("ABCDE12345".into()),
        });
        let pairs = pairs_of(&alert(&a));
        for (k, v) in &pairs {
            assert!(!v.is_empty(), "{k} is empty");
            assert!(
                v.chars().count() <= limit(k),
                "{k}: {} chars",
                v.chars().count()
            );
        }
        let get = |k: &str| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        // No reasons, no techniques and no host: neither the values nor their labels.
        assert_eq!(
            (get("cs1"), get("cs1Label"), get("cs2"), get("cs2Label")),
            (None, None, None, None)
        );
        assert_eq!(get("dvchost"), None);
        a.host = crate::alert::Host::named("mac-17");
        assert_eq!(
            pairs_of(&alert(&a)).iter().find(|(k, _)| k == "dvchost"),
            Some(&("dvchost".to_string(), "mac-17".to_string()))
        );
        let path = get("filePath").unwrap();
        assert_eq!(path.chars().count(), 1023);
        assert!(path.starts_with("/tmp/xxx") && path.ends_with("...[clipped]"));
        assert_eq!(get("flexString1Label"), Some("kextTeamId"));
        assert_eq!(get("flexString1"), Some("ABCDE12345"));
        // Multi-byte characters are cut on a character boundary.
        assert_eq!(clipped(&"é".repeat(70), 63).chars().count(), 63);
        assert_eq!(clipped("short", 63), "short");
    }

    #[test]
    fn escaping() {
        assert_eq!(header("a|b\\c\nd"), "a\\|b\\\\c d");
        assert_eq!(value("x=1 \\ y\nz|"), "x\\=1 \\\\ y\\nz|");
    }
}
