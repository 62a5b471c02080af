//! The active SIP configuration (macOS only), read from the kernel.

extern "C" {
    fn csr_get_active_config(config: *mut u32) -> libc::c_int;
}

/// The `csr-active-config` bits in force, or the call's error code.
pub fn active_config() -> Result<u32, i32> {
    let mut flags: u32 = 0;
    // SAFETY: the call writes one u32 through a valid pointer.
    let rc = unsafe { csr_get_active_config(&mut flags) };
    if rc == 0 {
        Ok(flags)
    } else {
        Err(rc)
    }
}
