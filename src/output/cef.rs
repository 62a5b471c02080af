//! ArcSight CEF payload: `CEF:0|Vendor|Product|Version|SignatureID|Name|Severity|Extension`.
//!
//! Mapping (documented in README.md): `rt` event time (ms), `act` event action, `dproc`/`dpid` the
//! acting process, `sproc`/`spid` its parent (the initiator for exec), `suid` user, `filePath` file,
//! `cs1` reasons, `cs2` ATT&CK techniques, `cs3` Team ID, `cs4` signing id, `cs5` kext bundle id,
//! `cs6` parent signing id, `cnt` folded count. Severity 0-10: info 1, low 3, medium 5, high 8,
//! critical 10.

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

pub fn alert(a: &Alert) -> String {
    let mut out = format!(
        "CEF:0|kextwatch|kextwatch|{}|{}|{}|{}|",
        header(env!("CARGO_PKG_VERSION")),
        header(a.rule.id),
        header(a.rule.name),
        cef_severity(a.severity)
    );
    let mut ext: Vec<(&str, String)> = Vec::new();
    if let Ok(t) =
        time::OffsetDateTime::parse(&a.timestamp, &time::format_description::well_known::Rfc3339)
    {
        ext.push(("rt", (t.unix_timestamp_nanos() / 1_000_000).to_string()));
    }
    ext.push(("act", a.event.action.to_string()));
    if let Some(p) = &a.process {
        ext.push(("dproc", p.executable.clone()));
        ext.push(("dpid", p.pid.to_string()));
        if let Some(exe) = &p.parent.executable {
            ext.push(("sproc", exe.clone()));
        }
        ext.push(("spid", p.parent.pid.to_string()));
        if let Some(t) = &p.code_signature.team_id {
            ext.push(("cs3Label", "teamId".into()));
            ext.push(("cs3", t.clone()));
        }
        if let Some(s) = &p.code_signature.signing_id {
            ext.push(("cs4Label", "signingId".into()));
            ext.push(("cs4", s.clone()));
        }
        if let Some(s) = p
            .parent
            .code_signature
            .as_ref()
            .and_then(|c| c.signing_id.clone())
        {
            ext.push(("cs6Label", "parentSigningId".into()));
            ext.push(("cs6", s));
        }
    }
    if let Some(u) = &a.user {
        ext.push(("suid", u.id.clone()));
    }
    if let Some(f) = &a.file {
        ext.push(("filePath", f.path.clone()));
    }
    ext.push(("cs1Label", "reasons".into()));
    ext.push(("cs1", a.reasons.join("; ")));
    ext.push(("cs2Label", "attackTechniques".into()));
    ext.push(("cs2", a.threat.technique.id.join(",")));
    if let Some(k) = &a.kextwatch.kext {
        ext.push(("cs5Label", "kextBundleId".into()));
        ext.push(("cs5", k.bundle_id.clone()));
    }
    if let Some(f) = &a.kextwatch.folded {
        ext.push(("cnt", f.count.to_string()));
    }
    for (i, (k, v)) in ext.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let _ = write!(out, "{k}={}", value(v));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(header("a|b\\c\nd"), "a\\|b\\\\c d");
        assert_eq!(value("x=1 \\ y\nz|"), "x\\=1 \\\\ y\\nz|");
    }
}
