//! The SIP configuration (`csr-active-config` bits, xnu `csr.h`) as read on the Mac: which protections
//! are off, and how much that matters for kexts.

use super::rules::{Finding, SIP_STATE};
use crate::alert::Severity;

pub const SIP_FLAGS: [(u32, &str); 12] = [
    (0x1, "ALLOW_UNTRUSTED_KEXTS"),
    (0x2, "ALLOW_UNRESTRICTED_FS"),
    (0x4, "ALLOW_TASK_FOR_PID"),
    (0x8, "ALLOW_KERNEL_DEBUGGER"),
    (0x10, "ALLOW_APPLE_INTERNAL"),
    (0x20, "ALLOW_UNRESTRICTED_DTRACE"),
    (0x40, "ALLOW_UNRESTRICTED_NVRAM"),
    (0x80, "ALLOW_DEVICE_CONFIGURATION"),
    (0x100, "ALLOW_ANY_RECOVERY_OS"),
    (0x200, "ALLOW_UNAPPROVED_KEXTS"),
    (0x400, "ALLOW_EXECUTABLE_POLICY_OVERRIDE"),
    (0x800, "ALLOW_UNAUTHENTICATED_ROOT"),
];
/// Flags that let kexts load without Apple's checks: ALLOW_UNTRUSTED_KEXTS (0x1) and
/// ALLOW_UNAPPROVED_KEXTS (0x200).
const KEXT_FLAGS: u32 = 0x201;

/// Names of the protections turned off by `flags` (unknown bits as hex).
pub fn flag_names(flags: u32) -> Vec<String> {
    let mut names: Vec<String> = SIP_FLAGS
        .iter()
        .filter(|(b, _)| flags & b != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    let known: u32 = SIP_FLAGS.iter().map(|(b, _)| b).sum();
    if flags & !known != 0 {
        names.push(format!("{:#x}", flags & !known));
    }
    names
}

pub fn evaluate(flags: u32) -> Finding {
    let names = flag_names(flags);
    let subject = format!("{flags:#x}");
    if flags == 0 {
        let mut f = Finding::new(SIP_STATE, Severity::Info, subject);
        f.reasons
            .push("System Integrity Protection is fully enabled".into());
        f.trusted = true;
        return f;
    }
    let severity = if flags & KEXT_FLAGS != 0 {
        Severity::Critical
    } else {
        Severity::High
    };
    let mut f = Finding::new(SIP_STATE, severity, subject);
    f.reasons.push(format!(
        "System Integrity Protection is weakened (csr-active-config {flags:#x}): {}",
        names.join(", ")
    ));
    if flags & KEXT_FLAGS != 0 {
        f.reasons
            .push("kexts can load without Apple's signing and approval checks".into());
    }
    f.weakening = Some(format!("SIP configuration {flags:#x}"));
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_severity() {
        assert_eq!(
            flag_names(0x77),
            [
                "ALLOW_UNTRUSTED_KEXTS",
                "ALLOW_UNRESTRICTED_FS",
                "ALLOW_TASK_FOR_PID",
                "ALLOW_APPLE_INTERNAL",
                "ALLOW_UNRESTRICTED_DTRACE",
                "ALLOW_UNRESTRICTED_NVRAM"
            ]
        );
        assert_eq!(evaluate(0).severity, Severity::Info);
        assert_eq!(evaluate(0x77).severity, Severity::Critical);
        assert_eq!(evaluate(0x2).severity, Severity::High);
        assert!(flag_names(0x1_0000).contains(&"0x10000".to_string()));
    }
}
