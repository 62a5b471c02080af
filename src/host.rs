//! Facts about the Mac kextwatch runs on, as its alerts and heartbeats name it: host names, the
//! hardware UUID, the OS version and architecture, and this boot's identity.

use crate::alert::Host;

/// This machine as ECS `host.*` describes it. Facts the OS does not give are left out.
pub fn this_host() -> Host {
    let hostname = gethostname::gethostname().to_string_lossy().into_owned();
    let mut host = Host::named(&hostname);
    host.id = hardware_uuid();
    host.architecture = Some(architecture().to_string());
    host.os.version = os_version();
    host
}

/// The CPU architecture as macOS names it (`arm64`, `x86_64`).
fn architecture() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        other => other,
    }
}

/// This boot's identity: `kern.bootsessionuuid` on macOS, the kernel's boot id on Linux.
pub fn boot_session() -> Option<String> {
    #[cfg(target_os = "macos")]
    {
        sysctl_string(c"kern.bootsessionuuid")
    }
    #[cfg(not(target_os = "macos"))]
    {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_string())
    }
}

/// The macOS product version (`14.5`); None elsewhere.
fn os_version() -> Option<String> {
    #[cfg(target_os = "macos")]
    {
        sysctl_string(c"kern.osproductversion")
    }
    #[cfg(not(target_os = "macos"))]
    {
        None
    }
}

/// The Mac's hardware UUID (what System Information shows as "Hardware UUID"); None elsewhere.
fn hardware_uuid() -> Option<String> {
    #[cfg(target_os = "macos")]
    {
        let mut id = [0u8; 16];
        // Zero would mean waiting without limit for the answer.
        let wait = libc::timespec {
            tv_sec: 2,
            tv_nsec: 0,
        };
        // SAFETY: `id` has the 16 bytes a uuid_t holds; `wait` outlives the call.
        if unsafe { libc::gethostuuid(id.as_mut_ptr(), &wait) } != 0 {
            return None;
        }
        Some(format_uuid(&id))
    }
    #[cfg(not(target_os = "macos"))]
    {
        None
    }
}

/// Upper-case, hyphenated, as macOS prints a UUID.
#[cfg_attr(not(target_os = "macos"), allow(dead_code))]
fn format_uuid(b: &[u8; 16]) -> String {
    let hex: String = b.iter().map(|x| format!("{x:02X}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A string sysctl (`kern.osproductversion`), trimmed at its NUL.
#[cfg(target_os = "macos")]
fn sysctl_string(name: &std::ffi::CStr) -> Option<String> {
    let mut buf = [0u8; 256];
    let mut len = buf.len();
    // SAFETY: `buf` has `len` writable bytes; the name is NUL-terminated; no new value is set.
    let r = unsafe {
        libc::sysctlbyname(
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if r != 0 {
        return None;
    }
    let s = buf.get(..len)?;
    let s = s.split(|b| *b == 0).next().unwrap_or(s);
    Some(String::from_utf8_lossy(s).trim().to_string()).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_print_as_macos_prints_them() {
        let b = [
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
            0xcd, 0xef,
        ];
        assert_eq!(format_uuid(&b), "12345678-9ABC-DEF0-0123-456789ABCDEF");
    }

    #[test]
    fn this_host_names_the_machine_and_its_architecture() {
        let h = this_host();
        let name = gethostname::gethostname().to_string_lossy().into_owned();
        assert_eq!(h.name.as_deref(), Some(name.as_str()));
        assert_eq!(h.hostname, h.name);
        let arch = h.architecture.unwrap();
        assert!(arch == "arm64" || arch == std::env::consts::ARCH, "{arch}");
        assert_ne!(arch, "aarch64");
    }
}
