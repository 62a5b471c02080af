//! Reading a file that outside input names or that someone else may have replaced: a kext's
//! Info.plist and executable, the config, the managed preferences, status and state files.
//!
//! A FIFO planted there must not block the reader (an open for reading waits for a writer), a device
//! such as /dev/zero must not be read forever, and a huge file must not be loaded. So: open without
//! blocking, check the type on the opened descriptor (not on the path, which can change in between),
//! and cap the read.

use std::io::{self, Read as _};
use std::path::Path;

/// Which file a path names (device and inode): a file replaced or rotated under the same path has
/// another. Always equal where the OS has no inodes (not a Unix), so nothing looks replaced there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    pub fn of(m: &std::fs::Metadata) -> FileId {
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            FileId {
                dev: m.dev(),
                ino: m.ino(),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = m;
            FileId { dev: 0, ino: 0 }
        }
    }
}

/// Whether the last component may be a symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Follow a symlink (an admin may link the config); the target is still checked.
    Follow,
    /// Refuse a symlink (files kextwatch writes itself: one there was planted).
    Refuse,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not a regular file (a {0})")]
    NotRegular(&'static str),
    #[error("{size} bytes exceeds the {limit} byte limit")]
    TooLarge { size: u64, limit: u64 },
}

impl ReadError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io(e) if e.kind() == io::ErrorKind::NotFound)
    }
}

fn kind(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        let t = meta.file_type();
        if t.is_fifo() {
            return "FIFO";
        }
        if t.is_char_device() || t.is_block_device() {
            return "device";
        }
        if t.is_socket() {
            return "socket";
        }
    }
    if meta.is_dir() {
        "directory"
    } else {
        "special file"
    }
}

/// Open `path` for reading without blocking and make sure it is a regular file.
pub fn open_regular(
    path: &Path,
    links: Links,
) -> Result<(std::fs::File, std::fs::Metadata), ReadError> {
    #[cfg(unix)]
    let file = {
        use std::os::unix::fs::OpenOptionsExt as _;
        let nofollow = match links {
            Links::Follow => 0,
            Links::Refuse => libc::O_NOFOLLOW,
        };
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | nofollow)
            .open(path)?
    };
    #[cfg(not(unix))]
    let file = {
        let _ = links;
        std::fs::File::open(path)?
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular(kind(&meta)));
    }
    Ok((file, meta))
}

/// The bytes of the regular file at `path`, at most `limit` of them.
pub fn read_regular(path: &Path, limit: u64, links: Links) -> Result<Vec<u8>, ReadError> {
    let (file, meta) = open_regular(path, links)?;
    if meta.len() > limit {
        return Err(ReadError::TooLarge {
            size: meta.len(),
            limit,
        });
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    // `take` bounds the read even if the file grows meanwhile.
    file.take(limit + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 > limit {
        return Err(ReadError::TooLarge {
            size: buf.len() as u64,
            limit,
        });
    }
    Ok(buf)
}

/// As `read_regular`, as UTF-8 text.
pub fn read_regular_text(path: &Path, limit: u64, links: Links) -> Result<String, ReadError> {
    String::from_utf8(read_regular(path, limit, links)?)
        .map_err(|_| ReadError::Io(io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text")))
}

/// Whether a replaced file must reach the disk before it replaces the old one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Synced first: state a restart relies on (the staged-bundle memory).
    Synced,
    /// Left to the page cache: a file rewritten every few seconds (status.json), where syncing
    /// would cost a disk flush each time and a crash loses nothing the next write does not redo.
    Cached,
}

/// Replace the file at `path` with `bytes` atomically: a temporary file beside it, created afresh
/// (a symlink planted at its name is removed, never followed) with `mode`, then renamed over
/// `path`. For kextwatch's own state files, which run as root.
pub fn replace_file(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    durability: Durability,
) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    // Whatever is there goes; if it cannot, creating below fails and says so.
    let _ = std::fs::remove_file(&tmp);
    let mut o = std::fs::OpenOptions::new();
    // O_CREAT | O_EXCL: fails on anything already there, a symlink included (never followed).
    o.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = o.open(&tmp)?;
    io::Write::write_all(&mut f, bytes)?;
    if durability == Durability::Synced {
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Make sure the file kextwatch keeps at `path` (a SQLite database it then opens) exists and is
/// readable by its owner only; an existing one with a wider mode is narrowed. A symlink there is
/// refused.
pub fn ensure_private(path: &Path) -> io::Result<()> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK);
    }
    let f = o.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let meta = f.metadata()?;
        if !meta.is_file() {
            return Err(io::Error::other(format!(
                "not a regular file (a {})",
                kind(&meta)
            )));
        }
        // New or older and wider: owner-only either way.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Make a FIFO at `path` (tests of code that must not wait on one).
#[cfg(all(test, unix))]
pub(crate) fn make_fifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path we own.
    assert_eq!(
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) },
        0,
        "mkfifo {}",
        path.display()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regular_file_is_read_up_to_its_limit_and_refused_past_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"12345").unwrap();
        assert_eq!(read_regular(&p, 5, Links::Refuse).unwrap(), b"12345");
        assert!(matches!(
            read_regular(&p, 4, Links::Refuse),
            Err(ReadError::TooLarge { size: 5, limit: 4 })
        ));
        assert!(read_regular(&dir.path().join("missing"), 5, Links::Follow)
            .unwrap_err()
            .is_not_found());
        assert!(!read_regular(&p, 4, Links::Refuse)
            .unwrap_err()
            .is_not_found());
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_a_device_a_directory_and_a_refused_symlink_are_errors_not_hangs() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        make_fifo(&fifo);
        // No writer ever opens it: a blocking open would hang this test.
        let e = read_regular(&fifo, 1 << 20, Links::Follow).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (a FIFO)");
        let e = read_regular(Path::new("/dev/zero"), 1 << 20, Links::Follow).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (a device)");
        let e = read_regular(dir.path(), 1 << 20, Links::Follow).unwrap_err();
        assert_eq!(e.to_string(), "not a regular file (a directory)");
        // A symlink to /dev/zero: followed, the target is still refused.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        assert!(matches!(
            read_regular(&link, 1 << 20, Links::Follow),
            Err(ReadError::NotRegular("device"))
        ));
        let target = dir.path().join("target");
        std::fs::write(&target, b"x").unwrap();
        let link = dir.path().join("link2");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(read_regular(&link, 10, Links::Follow).unwrap(), b"x");
        assert!(read_regular(&link, 10, Links::Refuse).is_err());
    }

    #[cfg(unix)]
    #[test]
    fn state_files_are_private_and_never_written_through_a_planted_symlink() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let status = dir.path().join("status.json");
        // An attacker plants the temporary file's name as a link to something root can write.
        std::os::unix::fs::symlink(&victim, dir.path().join("status.json.tmp")).unwrap();
        replace_file(&status, b"{}", 0o640, Durability::Cached).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(&status).unwrap(), b"{}");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&status), 0o640);
        // A database file created, or an old world-readable one narrowed, to owner-only.
        let db = dir.path().join("spool.sqlite");
        ensure_private(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        ensure_private(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        let link = dir.path().join("link.sqlite");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(ensure_private(&link).is_err());
        // A FIFO planted there: refused, not waited on (no reader ever comes).
        let fifo = dir.path().join("fifo.sqlite");
        make_fifo(&fifo);
        assert!(ensure_private(&fifo).is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_file_longer_than_its_stated_size_is_still_capped() {
        // /proc files say they are empty and are not: the cap holds on what is read, not on what
        // fstat claimed.
        let p = Path::new("/proc/self/status");
        assert_eq!(std::fs::metadata(p).unwrap().len(), 0);
        assert!(matches!(
            read_regular(p, 10, Links::Follow),
            Err(ReadError::TooLarge {
                size: 11,
                limit: 10
            })
        ));
        assert!(read_regular(p, 1 << 20, Links::Follow).unwrap().len() > 10);
    }
}
