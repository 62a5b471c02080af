//! Syslog messages: RFC 5424 (default) and RFC 3164, carrying the alert as JSON or CEF.
//!
//! Everything from events is escaped for where it lands: SD-PARAM values escape `"` `\` `]`, header
//! fields keep to printable ASCII, and no field can carry a control character, so no input can end a
//! frame early, forge a field or start a second message.

use std::fmt::Write as _;

use crate::alert::{Alert, Severity};
use crate::config::{SyslogFormat, SyslogPayload};

use super::cef;

/// IANA's documentation PEN (RFC 5612), until kextwatch has its own: `kextwatch@32473`.
pub const SD_ID: &str = "kextwatch@32473";
pub const APP_NAME: &str = "kextwatch";
/// Longest SD-PARAM value kept; the full values are in the payload.
const MAX_SD_VALUE: usize = 256;

/// RFC 5424 severity for an alert severity.
pub fn syslog_severity(s: Severity) -> u8 {
    match s {
        Severity::Critical => 2,
        Severity::High => 3,
        Severity::Medium => 4,
        Severity::Low => 5,
        Severity::Info => 6,
    }
}

/// MSGID by rule family, so receivers can route without parsing the payload.
pub fn msgid(rule_id: &str) -> &'static str {
    if rule_id == "KW-0000" {
        return "test";
    }
    match rule_id.get(..4) {
        Some("KW-1") => "kext-tool",
        Some("KW-2") => "kext-file",
        Some("KW-3") => "kext-load",
        Some("KW-4") => "policy",
        Some("KW-5") => "kextpolicy",
        Some("KW-9") => "correlation",
        _ => "alert",
    }
}

/// Printable ASCII (33-126) only, at most `max` bytes, `-` when empty (RFC 5424 header fields).
pub fn header_field(s: &str, max: usize) -> String {
    let v: String = s
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if v.is_empty() {
        "-".into()
    } else {
        v
    }
}

/// An SD-PARAM value: `"`, `\` and `]` escaped, control characters replaced, length bounded.
pub fn sd_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len().min(MAX_SD_VALUE) + 8);
    for c in s.chars().take(MAX_SD_VALUE) {
        match c {
            '"' | '\\' | ']' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// RFC 5424 allows at most 6 fractional digits: `2026-11-25T14:03:12.123456789Z` → `...12.123456Z`.
fn rfc5424_time(ts: &str) -> String {
    match ts.split_once('.') {
        Some((head, frac)) => {
            let digits: String = frac
                .chars()
                .take_while(char::is_ascii_digit)
                .take(6)
                .collect();
            let zone = frac.trim_start_matches(|c: char| c.is_ascii_digit());
            if digits.is_empty() {
                format!("{head}{zone}")
            } else {
                format!("{head}.{digits}{zone}")
            }
        }
        None => ts.to_string(),
    }
}

/// RFC 3164 `Mmm dd hh:mm:ss` from an RFC 3339 UTC time.
fn rfc3164_time(ts: &str) -> String {
    let t = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {:>2} {:02}:{:02}:{:02}",
        MONTHS[t.month() as usize - 1],
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// Builds messages for one sink.
#[derive(Debug, Clone)]
pub struct Encoder {
    pub format: SyslogFormat,
    pub payload: SyslogPayload,
    pub facility: u8,
    pub hostname: String,
    pub procid: String,
}

impl Encoder {
    pub fn new(format: SyslogFormat, payload: SyslogPayload, facility: u8) -> Encoder {
        let host = gethostname::gethostname().to_string_lossy().into_owned();
        Encoder {
            format,
            payload,
            facility,
            hostname: header_field(&host, 255),
            procid: std::process::id().to_string(),
        }
    }

    /// One alert as one syslog message (without transport framing).
    pub fn alert(&self, a: &Alert) -> Vec<u8> {
        let body = match self.payload {
            SyslogPayload::Json => {
                serde_json::to_string(a).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
            }
            SyslogPayload::Cef => cef::alert(a),
        };
        let mut sd = format!(
            "[{SD_ID} rule=\"{}\" severity=\"{}\" technique=\"{}\"",
            sd_value(a.rule.id),
            a.severity,
            sd_value(&a.threat.ids().join(","))
        );
        let team = a
            .process
            .as_ref()
            .and_then(|p| p.code_signature.team_id.as_deref())
            .or(a.kextwatch.kext.as_ref().and_then(|k| k.team_id.as_deref()));
        if let Some(t) = team {
            let _ = write!(sd, " team_id=\"{}\"", sd_value(t));
        }
        if let Some(f) = &a.file {
            let _ = write!(sd, " path=\"{}\"", sd_value(&f.path));
        }
        sd.push(']');
        self.message(a.severity, &a.timestamp, msgid(a.rule.id), &sd, &body)
    }

    /// A heartbeat (`counters_json`: the counters as JSON), in the sink's payload: the JSON
    /// itself, or a CEF line carrying it.
    pub fn heartbeat(&self, timestamp: &str, counters_json: &str) -> Vec<u8> {
        let sd = format!("[{SD_ID} type=\"heartbeat\"]");
        let body = match self.payload {
            SyslogPayload::Json => counters_json.to_string(),
            SyslogPayload::Cef => cef::heartbeat(timestamp, counters_json, Some(&self.hostname)),
        };
        self.message(Severity::Info, timestamp, "heartbeat", &sd, &body)
    }

    /// A message with a given severity, time, MSGID, structured data and body.
    pub fn message(
        &self,
        severity: Severity,
        timestamp: &str,
        msgid: &str,
        sd: &str,
        body: &str,
    ) -> Vec<u8> {
        let pri = u16::from(self.facility) * 8 + u16::from(syslog_severity(severity));
        match self.format {
            SyslogFormat::Rfc5424 => format!(
                "<{pri}>1 {} {} {APP_NAME} {} {} {sd} {body}",
                rfc5424_time(timestamp),
                self.hostname,
                header_field(&self.procid, 128),
                header_field(msgid, 32),
            )
            .into_bytes(),
            // RFC 3164 has no structured data: the payload carries everything.
            SyslogFormat::Rfc3164 => format!(
                "<{pri}>{} {} {APP_NAME}[{}]: {body}",
                rfc3164_time(timestamp),
                self.hostname,
                header_field(&self.procid, 16)
            )
            .into_bytes(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pri_is_facility_times_eight_plus_the_severity_table() {
        // RFC 5424 §6.2.1 and the README's table, written out: local4 is 20, local0 16.
        let cases = [
            (20, Severity::Critical, 162),
            (20, Severity::High, 163),
            (20, Severity::Medium, 164),
            (20, Severity::Low, 165),
            (20, Severity::Info, 166),
            (16, Severity::Critical, 130),
            (16, Severity::Info, 134),
        ];
        for (facility, severity, pri) in cases {
            let e = Encoder {
                format: SyslogFormat::Rfc5424,
                payload: SyslogPayload::Json,
                facility,
                hostname: "mac-17".into(),
                procid: "412".into(),
            };
            let m = e.message(severity, "2026-11-25T14:03:12Z", "policy", "-", "{}");
            assert_eq!(
                String::from_utf8(m).unwrap(),
                format!("<{pri}>1 2026-11-25T14:03:12Z mac-17 kextwatch 412 policy - {{}}"),
                "{severity:?}"
            );
        }
    }

    #[test]
    fn msgid_by_rule_family() {
        for (rule, id) in [
            ("KW-0000", "test"),
            ("KW-1001", "kext-tool"),
            ("KW-2001", "kext-file"),
            ("KW-3003", "kext-load"),
            ("KW-4007", "policy"),
            ("KW-5006", "kextpolicy"),
            ("KW-9002", "correlation"),
            ("KW-7", "alert"),
            ("", "alert"),
        ] {
            assert_eq!(msgid(rule), id, "{rule}");
        }
    }

    #[test]
    fn escaping() {
        assert_eq!(sd_value("a\"b\\c]d\ne"), "a\\\"b\\\\c\\]d e");
        assert_eq!(header_field("my host\n", 255), "myhost");
        assert_eq!(header_field("", 32), "-");
        assert_eq!(
            rfc5424_time("2026-11-25T14:03:12.123456789Z"),
            "2026-11-25T14:03:12.123456Z"
        );
        assert_eq!(rfc5424_time("2026-11-25T14:03:12Z"), "2026-11-25T14:03:12Z");
        assert_eq!(rfc3164_time("2026-11-05T04:03:02.5Z"), "Nov  5 04:03:02");
    }
}
