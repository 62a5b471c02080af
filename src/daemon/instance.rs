//! One daemon per state directory, and proof of life: the daemon holds an exclusive `flock` on
//! `state_dir/kextwatch.lock` for as long as it runs. The kernel drops the lock when the process
//! dies, however it dies, so `kextwatch status` can tell a running daemon from a status file a
//! SIGKILLed one left saying "running". The state directory itself must not be writable by anyone
//! else: whoever can write there could plant the files kextwatch trusts.

use std::fs::File;
use std::path::{Path, PathBuf};

pub const LOCK_FILE: &str = "kextwatch.lock";

#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("another kextwatch daemon is running with state directory {0}")]
    AlreadyRunning(PathBuf),
    #[error("state directory {0} is writable by other users (mode {1:o}); it must be writable only by its owner")]
    Writable(PathBuf, u32),
    #[error("state directory {0} belongs to uid {1}, not to this daemon's uid {2}")]
    Owner(PathBuf, u32, u32),
}

/// Held while the daemon runs; dropping it (or dying) releases the lock.
#[derive(Debug)]
pub struct InstanceLock {
    _file: File,
}

#[cfg(unix)]
fn open_lock(path: &Path, create: bool) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut o = std::fs::OpenOptions::new();
    o.read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    if create {
        o.write(true).create(true).mode(0o600);
    }
    o.open(path)
}

#[cfg(unix)]
fn try_flock(f: &File, op: libc::c_int) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd as _;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Refuse a state directory that others can write or that belongs to someone else.
#[cfg(unix)]
pub fn check_state_dir(dir: &Path) -> Result<(), InstanceError> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(dir).map_err(|e| InstanceError::Io(dir.to_path_buf(), e))?;
    let mode = m.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(InstanceError::Writable(dir.to_path_buf(), mode));
    }
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if m.uid() != me {
        return Err(InstanceError::Owner(dir.to_path_buf(), m.uid(), me));
    }
    Ok(())
}

#[cfg(not(unix))]
pub fn check_state_dir(_dir: &Path) -> Result<(), InstanceError> {
    Ok(())
}

impl InstanceLock {
    /// Take the lock of `state_dir`, or say that another daemon holds it.
    #[cfg(unix)]
    pub fn acquire(state_dir: &Path) -> Result<InstanceLock, InstanceError> {
        let path = state_dir.join(LOCK_FILE);
        let file = open_lock(&path, true).map_err(|e| InstanceError::Io(path.clone(), e))?;
        match try_flock(&file, libc::LOCK_EX) {
            Ok(true) => Ok(InstanceLock { _file: file }),
            Ok(false) => Err(InstanceError::AlreadyRunning(state_dir.to_path_buf())),
            Err(e) => Err(InstanceError::Io(path, e)),
        }
    }

    #[cfg(not(unix))]
    pub fn acquire(state_dir: &Path) -> Result<InstanceLock, InstanceError> {
        let path = state_dir.join(LOCK_FILE);
        let file = File::create(&path).map_err(|e| InstanceError::Io(path, e))?;
        Ok(InstanceLock { _file: file })
    }

    /// Whether a live daemon holds the lock of `state_dir`.
    #[cfg(unix)]
    pub fn is_held(state_dir: &Path) -> bool {
        let Ok(file) = open_lock(&state_dir.join(LOCK_FILE), false) else {
            return false;
        };
        // A shared lock is granted only when no daemon holds the exclusive one; dropping the file
        // releases it at once.
        matches!(try_flock(&file, libc::LOCK_SH), Ok(false))
    }

    #[cfg(not(unix))]
    pub fn is_held(_state_dir: &Path) -> bool {
        true
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn one_daemon_per_state_dir_and_the_lock_dies_with_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!InstanceLock::is_held(dir.path()), "no lock file yet");
        let held = InstanceLock::acquire(dir.path()).unwrap();
        assert!(InstanceLock::is_held(dir.path()));
        assert!(matches!(
            InstanceLock::acquire(dir.path()),
            Err(InstanceError::AlreadyRunning(_))
        ));
        drop(held);
        assert!(!InstanceLock::is_held(dir.path()));
        assert!(InstanceLock::acquire(dir.path()).is_ok());
    }

    #[test]
    fn a_state_dir_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        for (mode, ok) in [
            (0o700, true),
            (0o755, true),
            (0o775, false),
            (0o777, false),
            (0o1777, false),
        ] {
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
            assert_eq!(check_state_dir(dir.path()).is_ok(), ok, "{mode:o}");
        }
    }
}
