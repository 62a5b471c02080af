//! Waking the poller early when the database files change. On macOS a kqueue watches the database
//! and its `-wal` for writes, renames and deletion, so a change is read at once rather than at the
//! next interval; elsewhere the poller just sleeps. Either way the poll itself decides what changed.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

pub use imp::FileWaker;

#[cfg(target_os = "macos")]
mod imp {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;

    use super::*;

    pub struct FileWaker {
        kq: OwnedFd,
        /// Kept open (O_EVTONLY: no read access, does not block unmounting) while watched.
        _files: Vec<OwnedFd>,
    }

    impl FileWaker {
        /// Watch `paths`; a path that does not exist (no `-wal` yet) is skipped.
        pub fn new(paths: &[PathBuf]) -> io::Result<FileWaker> {
            // SAFETY: kqueue takes no arguments; the result is checked before use.
            let raw = unsafe { libc::kqueue() };
            if raw < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `raw` is a new descriptor that nothing else owns.
            let kq = unsafe { OwnedFd::from_raw_fd(raw) };
            let mut files = Vec::new();
            let mut changes = Vec::new();
            for p in paths {
                let c = CString::new(p.as_os_str().as_bytes())?;
                // SAFETY: `c` is a valid NUL-terminated path; the result is checked.
                let fd = unsafe { libc::open(c.as_ptr(), libc::O_EVTONLY) };
                if fd < 0 {
                    continue;
                }
                // SAFETY: `fd` is a new descriptor that nothing else owns.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                changes.push(libc::kevent {
                    ident: fd.as_raw_fd() as libc::uintptr_t,
                    filter: libc::EVFILT_VNODE,
                    flags: libc::EV_ADD | libc::EV_CLEAR,
                    fflags: libc::NOTE_WRITE
                        | libc::NOTE_EXTEND
                        | libc::NOTE_DELETE
                        | libc::NOTE_RENAME
                        | libc::NOTE_ATTRIB,
                    data: 0,
                    udata: std::ptr::null_mut(),
                });
                files.push(fd);
            }
            // SAFETY: `changes` holds `changes.len()` initialised events; no event list is read.
            let r = unsafe {
                libc::kevent(
                    kq.as_raw_fd(),
                    changes.as_ptr(),
                    changes.len() as libc::c_int,
                    std::ptr::null_mut(),
                    0,
                    std::ptr::null(),
                )
            };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(FileWaker { kq, _files: files })
        }

        /// Wait up to `timeout`; true if a watched file changed.
        pub fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
            let ts = libc::timespec {
                tv_sec: timeout.as_secs() as libc::time_t,
                tv_nsec: timeout.subsec_nanos() as libc::c_long,
            };
            // SAFETY: an all-zero kevent is a valid value for the kernel to overwrite.
            let mut event: libc::kevent = unsafe { std::mem::zeroed() };
            // SAFETY: one writable event slot, a valid timeout, no changes submitted.
            let n = unsafe {
                libc::kevent(self.kq.as_raw_fd(), std::ptr::null(), 0, &mut event, 1, &ts)
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return if e.kind() == io::ErrorKind::Interrupted {
                    Ok(false)
                } else {
                    Err(e)
                };
            }
            Ok(n > 0)
        }
    }
}

#[cfg(not(target_os = "macos"))]
mod imp {
    use super::*;

    /// No file notifications here: waiting is sleeping.
    pub struct FileWaker;

    impl FileWaker {
        pub fn new(_paths: &[PathBuf]) -> io::Result<FileWaker> {
            Ok(FileWaker)
        }

        pub fn wait(&mut self, timeout: Duration) -> io::Result<bool> {
            std::thread::sleep(timeout);
            Ok(false)
        }
    }
}
