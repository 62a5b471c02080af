//! Validation of `[[output]]` tables.

use std::path::PathBuf;

use toml::Spanned;

use super::raw::{alert_format, invalid, RawOutput};
use super::{
    Framing, Invalid, OutputSpec, SyslogFormat, SyslogPayload, SyslogSpec, SyslogTransport, TlsSpec,
};

const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clock", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

/// Fits one packet on IPv4 and IPv6 minimum-MTU paths (1280 bytes less IP and UDP headers), so
/// datagrams are never fragmented; raise it when the path is known.
pub const DEFAULT_MAX_DATAGRAM: usize = 1200;
pub const DEFAULT_SPOOL_BYTES: u64 = 64 * 1024 * 1024;

fn choice<T: Copy>(
    key: String,
    v: &Option<Spanned<String>>,
    default: T,
    options: &[(&str, T)],
) -> Result<T, Invalid> {
    let Some(s) = v else { return Ok(default) };
    options
        .iter()
        .find(|(n, _)| *n == s.get_ref())
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let names: Vec<String> = options.iter().map(|(n, _)| format!("\"{n}\"")).collect();
            invalid(
                key,
                s,
                format!(
                    "unknown value {:?}: expected {}",
                    s.get_ref(),
                    names.join(" or ")
                ),
            )
        })
}

pub(super) fn validate(o: &RawOutput, i: usize) -> Result<OutputSpec, Invalid> {
    let key = |k: &str| format!("output[{i}].{k}");
    let syslog_only: [(&str, Option<&Spanned<String>>); 9] = [
        ("address", o.address.as_ref()),
        ("transport", o.transport.as_ref()),
        ("payload", o.payload.as_ref()),
        ("framing", o.framing.as_ref()),
        ("facility", o.facility.as_ref()),
        ("tls_ca_file", o.tls_ca_file.as_ref()),
        ("tls_client_cert", o.tls_client_cert.as_ref()),
        ("tls_client_key", o.tls_client_key.as_ref()),
        ("tls_server_name", o.tls_server_name.as_ref()),
    ];
    let reject_syslog_keys = |kind: &str| -> Result<(), Invalid> {
        if let Some((name, v)) = syslog_only.iter().find_map(|(n, v)| v.map(|v| (n, v))) {
            return Err(invalid(
                key(name),
                v,
                format!("`{name}` applies to syslog outputs, not {kind}"),
            ));
        }
        for (name, v) in [
            ("max_datagram_bytes", &o.max_datagram_bytes),
            ("spool_max_bytes", &o.spool_max_bytes),
        ] {
            if let Some(v) = v {
                return Err(invalid(
                    key(name),
                    v,
                    format!("`{name}` applies to syslog outputs, not {kind}"),
                ));
            }
        }
        if let Some(v) = &o.tls_danger_accept_invalid_certs {
            return Err(invalid(
                key("tls_danger_accept_invalid_certs"),
                v,
                "applies to syslog outputs only",
            ));
        }
        Ok(())
    };
    match o.kind.get_ref().as_str() {
        "stdout" => {
            reject_syslog_keys("stdout")?;
            if let Some(p) = &o.path {
                return Err(invalid(key("path"), p, "stdout outputs take no path"));
            }
            Ok(OutputSpec::Stdout {
                format: alert_format(key("format"), &o.format)?,
            })
        }
        "file" => {
            reject_syslog_keys("file")?;
            let path = o
                .path
                .as_ref()
                .filter(|p| !p.get_ref().is_empty())
                .ok_or_else(|| invalid(key("type"), &o.kind, "a file output needs `path`"))?;
            Ok(OutputSpec::File {
                path: absolute(key("path"), path)?,
                format: alert_format(key("format"), &o.format)?,
            })
        }
        "syslog" => syslog(o, i).map(OutputSpec::Syslog),
        other => Err(invalid(
            key("type"),
            &o.kind,
            format!("unknown output type {other:?}: expected \"stdout\", \"file\" or \"syslog\""),
        )),
    }
}

/// A path the daemon opens: absolute, since it runs from `/` under launchd and a relative path
/// would land somewhere nobody looks.
fn absolute(key: String, v: &Spanned<String>) -> Result<PathBuf, Invalid> {
    if v.get_ref().starts_with('/') {
        Ok(PathBuf::from(v.get_ref()))
    } else {
        Err(invalid(
            key,
            v,
            format!(
                "{:?} must be an absolute path (the daemon runs from /)",
                v.get_ref()
            ),
        ))
    }
}

fn syslog(o: &RawOutput, i: usize) -> Result<SyslogSpec, Invalid> {
    let key = |k: &str| format!("output[{i}].{k}");
    if let Some(p) = &o.path {
        return Err(invalid(
            key("path"),
            p,
            "syslog outputs take `address`, not `path`",
        ));
    }
    let (address, host, port) = address(o, i)?;
    let transport = choice(
        key("transport"),
        &o.transport,
        SyslogTransport::Tcp,
        &[
            ("udp", SyslogTransport::Udp),
            ("tcp", SyslogTransport::Tcp),
            ("tls", SyslogTransport::Tls),
        ],
    )?;
    let format = choice(
        key("format"),
        &o.format,
        SyslogFormat::Rfc5424,
        &[
            ("rfc5424", SyslogFormat::Rfc5424),
            ("rfc3164", SyslogFormat::Rfc3164),
        ],
    )?;
    let payload = choice(
        key("payload"),
        &o.payload,
        SyslogPayload::Json,
        &[("json", SyslogPayload::Json), ("cef", SyslogPayload::Cef)],
    )?;
    // In the order the keys are reported when several are wrong.
    let framing = framing(o, i, transport)?;
    let facility = facility(o, i)?;
    let max_datagram_bytes = max_datagram_bytes(o, i, transport)?;
    let spool_max_bytes = spool_max_bytes(o, i)?;
    Ok(SyslogSpec {
        address,
        host,
        port,
        transport,
        format,
        payload,
        framing,
        facility,
        max_datagram_bytes,
        tls: tls(o, i, transport)?,
        spool_max_bytes,
    })
}

/// `address = "host:port"` (an IPv6 host in brackets).
fn address(o: &RawOutput, i: usize) -> Result<(String, String, u16), Invalid> {
    let key = |k: &str| format!("output[{i}].{k}");
    let address = o.address.as_ref().ok_or_else(|| {
        invalid(
            key("type"),
            &o.kind,
            "a syslog output needs `address = \"host:port\"`",
        )
    })?;
    let (host, port) = address
        .get_ref()
        .rsplit_once(':')
        .and_then(|(h, p)| {
            Some((
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse::<u16>().ok()?,
            ))
        })
        .filter(|(h, p)| !h.is_empty() && *p != 0)
        .ok_or_else(|| {
            invalid(
                key("address"),
                address,
                format!("{:?} is not host:port", address.get_ref()),
            )
        })?;
    Ok((address.get_ref().clone(), host.to_string(), port))
}

/// TCP framing; TLS is always octet counting (RFC 5425), UDP has none.
fn framing(o: &RawOutput, i: usize, transport: SyslogTransport) -> Result<Framing, Invalid> {
    let key = |k: &str| format!("output[{i}].{k}");
    let framing = choice(
        key("framing"),
        &o.framing,
        Framing::OctetCounting,
        &[
            ("octet-counting", Framing::OctetCounting),
            ("lf", Framing::Lf),
        ],
    )?;
    if let Some(f) = &o.framing {
        match transport {
            SyslogTransport::Udp => {
                return Err(invalid(
                    key("framing"),
                    f,
                    "UDP sends one message per datagram: no framing",
                ))
            }
            SyslogTransport::Tls if framing == Framing::Lf => {
                return Err(invalid(
                    key("framing"),
                    f,
                    "TLS syslog (RFC 5425) requires octet counting",
                ))
            }
            _ => {}
        }
    }
    Ok(if transport == SyslogTransport::Tls {
        Framing::OctetCounting
    } else {
        framing
    })
}

fn facility(o: &RawOutput, i: usize) -> Result<u8, Invalid> {
    let key = |k: &str| format!("output[{i}].{k}");
    let facility = match &o.facility {
        None => 20, // local4
        Some(f) => FACILITIES.iter().position(|n| n == f.get_ref()).ok_or_else(|| {
            invalid(key("facility"), f, format!("unknown facility {:?}: expected kern, user, daemon, auth, authpriv, local0..local7, ...", f.get_ref()))
        })? as u8,
    };
    Ok(facility)
}

fn max_datagram_bytes(
    o: &RawOutput,
    i: usize,
    transport: SyslogTransport,
) -> Result<usize, Invalid> {
    let key = |k: &str| format!("output[{i}].{k}");
    let max_datagram_bytes = match &o.max_datagram_bytes {
        None => DEFAULT_MAX_DATAGRAM,
        Some(v) if transport != SyslogTransport::Udp => {
            return Err(invalid(key("max_datagram_bytes"), v, "applies to UDP only"));
        }
        Some(v) if (480..=65_000).contains(v.get_ref()) => *v.get_ref() as usize,
        Some(v) => {
            return Err(invalid(
                key("max_datagram_bytes"),
                v,
                "out of range (480 to 65000)",
            ))
        }
    };
    Ok(max_datagram_bytes)
}

fn spool_max_bytes(o: &RawOutput, i: usize) -> Result<u64, Invalid> {
    let key = |k: &str| format!("output[{i}].{k}");
    let spool_max_bytes = match &o.spool_max_bytes {
        None => DEFAULT_SPOOL_BYTES,
        Some(v) if (4096..=(1_i64 << 40)).contains(v.get_ref()) => *v.get_ref() as u64,
        Some(v) => {
            return Err(invalid(
                key("spool_max_bytes"),
                v,
                "out of range (4096 to 1 TiB)",
            ))
        }
    };
    Ok(spool_max_bytes)
}

/// The TLS keys: only with `transport = "tls"`, and a client certificate only with its key.
fn tls(o: &RawOutput, i: usize, transport: SyslogTransport) -> Result<TlsSpec, Invalid> {
    let key = |k: &str| format!("output[{i}].{k}");
    let tls_keys = [
        ("tls_ca_file", &o.tls_ca_file),
        ("tls_client_cert", &o.tls_client_cert),
        ("tls_client_key", &o.tls_client_key),
        ("tls_server_name", &o.tls_server_name),
    ];
    if transport != SyslogTransport::Tls {
        if let Some((name, v)) = tls_keys
            .iter()
            .find_map(|(n, v)| v.as_ref().map(|v| (n, v)))
        {
            return Err(invalid(key(name), v, "applies to transport = \"tls\" only"));
        }
        if let Some(v) = &o.tls_danger_accept_invalid_certs {
            return Err(invalid(
                key("tls_danger_accept_invalid_certs"),
                v,
                "applies to transport = \"tls\" only",
            ));
        }
    }
    if o.tls_client_cert.is_some() != o.tls_client_key.is_some() {
        let v = o.tls_client_cert.as_ref().or(o.tls_client_key.as_ref());
        if let Some(v) = v {
            return Err(invalid(
                key("tls_client_cert"),
                v,
                "mutual TLS needs both tls_client_cert and tls_client_key",
            ));
        }
    }
    let path =
        |k: &str, v: &Option<Spanned<String>>| v.as_ref().map(|s| absolute(key(k), s)).transpose();
    Ok(TlsSpec {
        ca_file: path("tls_ca_file", &o.tls_ca_file)?,
        client_cert: path("tls_client_cert", &o.tls_client_cert)?,
        client_key: path("tls_client_key", &o.tls_client_key)?,
        server_name: o.tls_server_name.as_ref().map(|s| s.get_ref().clone()),
        danger_accept_invalid_certs: o
            .tls_danger_accept_invalid_certs
            .as_ref()
            .is_some_and(|b| *b.get_ref()),
    })
}
