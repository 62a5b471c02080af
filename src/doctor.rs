//! `kextwatch doctor`: checks what the daemon needs, and says how to fix each failure.

use std::path::Path;

use crate::config::{Config, OutputSpec, SyslogTransport};
use crate::kextpolicy::{read_file, ReadError};
use crate::output::Transport;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub verdict: Verdict,
    pub detail: String,
    /// What to do about a warning or failure.
    pub fix: Option<String>,
}

fn check(name: &str, verdict: Verdict, detail: impl Into<String>, fix: Option<&str>) -> Check {
    Check {
        name: name.into(),
        verdict,
        detail: detail.into(),
        fix: fix.map(String::from),
    }
}

/// Every check, in the order an admin should fix them.
pub fn run(config_path: &Path, eslogger: &Path) -> Vec<Check> {
    let mut out = vec![running_as_root()];
    let config = match Config::load(config_path) {
        Ok(c) => {
            out.push(check(
                "config",
                Verdict::Ok,
                format!("{} is valid", config_path.display()),
                None,
            ));
            c
        }
        Err(e) => {
            out.push(check(
                "config",
                Verdict::Fail,
                e.to_string(),
                Some("fix the line and key named above, then kextwatch check-config"),
            ));
            return out;
        }
    };
    out.push(kextpolicy_readable(&config));
    out.push(endpoint_security());
    out.push(eslogger_present(eslogger));
    #[cfg(target_os = "macos")]
    out.push(sip_readable());
    out.extend(config.daemon_outputs().iter().map(output));
    out.push(state_dir_writable(&config));
    out
}

fn running_as_root() -> Check {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        check("running as root", Verdict::Ok, "euid 0", None)
    } else {
        check(
            "running as root",
            Verdict::Fail,
            format!("euid {euid}"),
            Some("run kextwatch (and this check) as root: sudo kextwatch doctor"),
        )
    }
}

fn kextpolicy_readable(config: &Config) -> Check {
    match read_file(&config.kextpolicy.path) {
        Ok(s) => check("KextPolicy readable (Full Disk Access)", Verdict::Ok, format!("{} rows", s.rows()), None),
        Err(ReadError::PermissionDenied(_)) => check(
            "KextPolicy readable (Full Disk Access)",
            Verdict::Fail,
            "permission denied",
            Some("grant Full Disk Access: deploy the profile from `kextwatch profile` (TCC SystemPolicyAllFiles)"),
        ),
        Err(ReadError::Missing(p)) => check(
            "KextPolicy readable (Full Disk Access)",
            if cfg!(target_os = "macos") { Verdict::Fail } else { Verdict::Warn },
            format!("{} does not exist", p.display()),
            Some("on a Mac this file always exists; elsewhere set [kextpolicy] enabled = false"),
        ),
        Err(e) => check("KextPolicy readable (Full Disk Access)", Verdict::Fail, e.to_string(), None),
    }
}

fn endpoint_security() -> Check {
    #[cfg(target_os = "macos")]
    return match crate::source::es::check_client() {
        Ok(()) => check("Endpoint Security client", Verdict::Ok, "created", None),
        Err(e) => check(
            "Endpoint Security client",
            Verdict::Warn,
            e.to_string(),
            Some("fix as said, or run with --source eslogger"),
        ),
    };
    #[cfg(not(target_os = "macos"))]
    check(
        "Endpoint Security client",
        Verdict::Warn,
        "not available on this OS",
        Some("run the daemon on macOS; here use --source replay:PATH"),
    )
}

fn eslogger_present(eslogger: &Path) -> Check {
    if eslogger.exists() {
        check(
            "eslogger",
            Verdict::Ok,
            format!("{} present", eslogger.display()),
            None,
        )
    } else {
        check(
            "eslogger",
            Verdict::Warn,
            format!("{} not found", eslogger.display()),
            Some("eslogger ships with macOS 13+; needed for --source eslogger only"),
        )
    }
}

#[cfg(target_os = "macos")]
fn sip_readable() -> Check {
    match crate::source::sip::active_config() {
        Err(rc) => check(
            "SIP status readable",
            Verdict::Fail,
            format!("csr_get_active_config returned {rc}"),
            None,
        ),
        Ok(0) => check(
            "SIP status readable",
            Verdict::Ok,
            "SIP fully enabled",
            None,
        ),
        Ok(flags) => check(
            "SIP status readable",
            Verdict::Warn,
            format!(
                "SIP weakened: {}",
                crate::detect::sip::flag_names(flags).join(", ")
            ),
            Some("re-enable from recoveryOS: csrutil enable"),
        ),
    }
}

fn output(o: &OutputSpec) -> Check {
    match o {
            OutputSpec::Stdout { .. } => check("output stdout", Verdict::Warn, "alerts go to the daemon's stdout, which launchd discards", Some("use a file or syslog output (with no [[output]], the daemon writes /var/log/kextwatch/alerts.jsonl)")),
            OutputSpec::File { path, .. } => match std::fs::OpenOptions::new().create(true).append(true).open(path) {
                Ok(_) => check(&format!("output {}", path.display()), Verdict::Ok, "writable", None),
                Err(e) => check(&format!("output {}", path.display()), Verdict::Fail, e.to_string(), Some("create the directory, or fix its permissions")),
            },
            OutputSpec::Syslog(s) => {
                let name = format!("output syslog {}", s.address);
                match Transport::new(s).and_then(|mut t| t.probe()) {
                    Ok(()) if s.transport == SyslogTransport::Udp => check(&name, Verdict::Ok, "UDP socket ready (UDP cannot confirm a receiver; use test-alert)", None),
                    Ok(()) => check(&name, Verdict::Ok, "connected", None),
                    Err(e) => check(&name, Verdict::Fail, e.to_string(), Some("check the address, firewall and certificates; alerts are spooled meanwhile")),
                }
            }
        }
}

fn state_dir_writable(config: &Config) -> Check {
    let dir = &config.daemon.state_dir;
    let probe = dir.join(".doctor-write-test");
    match std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&probe, b"ok")) {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            check(
                "state directory writable",
                Verdict::Ok,
                dir.display().to_string(),
                None,
            )
        }
        Err(e) => check(
            "state directory writable",
            Verdict::Fail,
            format!("{}: {e}", dir.display()),
            Some("run as root, or set [daemon] state_dir"),
        ),
    }
}
