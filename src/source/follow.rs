//! eslogger JSON from a path: a file is read once; a FIFO is reopened after each writer closes it
//! (follow mode), so captures can be fed to a running daemon one after another.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::{read_lines, Hooks};
use crate::event::Interest;

fn is_fifo(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

/// Read `path` (and, for a FIFO, every writer after) until `stop`.
pub fn follow(path: &Path, interest: &dyn Interest, hooks: &dyn Hooks, stop: &AtomicBool) {
    loop {
        hooks.state(format!("reading {}", path.display()));
        match std::fs::File::open(path) {
            Ok(f) => read_lines(f, interest, hooks, stop),
            Err(e) => {
                // Said as a failure, and kept: not "finished", which reads as all went well.
                hooks.state(format!("failed: cannot open {}: {e}", path.display()));
                tracing::error!(path = %path.display(), error = %e, "replay source cannot open its input");
                if !is_fifo(path) {
                    return;
                }
                std::thread::sleep(Duration::from_secs(1));
            }
        }
        if stop.load(Ordering::Relaxed) {
            return;
        }
        if !is_fifo(path) {
            hooks.state(format!("finished {}", path.display()));
            return;
        }
    }
}
