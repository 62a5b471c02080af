//! The active SIP configuration (macOS only), read from the kernel, and polled for changes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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

/// Read the SIP configuration at once and every minute until `stop`, calling `report` with the
/// flags and the time when they are first read and whenever they change; stops when `report`
/// returns false.
pub fn poll(mut report: impl FnMut(u32, i64) -> bool, stop: &AtomicBool) {
    let mut last: Option<u32> = None;
    while !stop.load(Ordering::Relaxed) {
        if let Ok(flags) = active_config() {
            if last != Some(flags) {
                last = Some(flags);
                if !report(flags, crate::wallclock::now_ns()) {
                    return;
                }
            }
        }
        for _ in 0..600 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}
