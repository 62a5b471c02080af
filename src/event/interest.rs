//! Which events detection can use: sources ask before the expensive part of decoding or converting an
//! event, so the many that cannot matter cost almost nothing.

/// What detection can use.
pub trait Interest {
    /// Can an exec of this image matter? (`path` and `signing_id` of the new image, untrusted.)
    fn exec_matters(&self, path: &str, signing_id: Option<&str>) -> bool;
    /// Can a change to this path matter?
    fn path_matters(&self, path: &str) -> bool;
    /// Are every exec and fork wanted (process lineage)?
    fn lifecycle_matters(&self) -> bool {
        false
    }
    /// Are exit events wanted? (Lineage keeps images after exit: a child's event may still name
    /// its exited parent, so an exit tells it nothing.)
    fn exits_matter(&self) -> bool {
        false
    }
    /// Can a signal sent to a process running this image matter? (kextwatch and its eslogger.)
    fn signal_matters(&self, _target: &str) -> bool {
        false
    }
}

/// A shared interest the daemon replaces on SIGHUP, so sources decode what the current config says
/// matters (a watched root added by a reload is decoded from the next event on).
impl<I: Interest> Interest for std::sync::RwLock<I> {
    fn exec_matters(&self, path: &str, signing_id: Option<&str>) -> bool {
        current(self).exec_matters(path, signing_id)
    }
    fn path_matters(&self, path: &str) -> bool {
        current(self).path_matters(path)
    }
    fn lifecycle_matters(&self) -> bool {
        current(self).lifecycle_matters()
    }
    fn exits_matter(&self) -> bool {
        current(self).exits_matter()
    }
    fn signal_matters(&self, target: &str) -> bool {
        current(self).signal_matters(target)
    }
}

/// The interest as last replaced (a writer that panicked left a whole value behind).
fn current<I>(lock: &std::sync::RwLock<I>) -> std::sync::RwLockReadGuard<'_, I> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

impl<I: Interest + ?Sized> Interest for std::sync::Arc<I> {
    fn exec_matters(&self, path: &str, signing_id: Option<&str>) -> bool {
        (**self).exec_matters(path, signing_id)
    }
    fn path_matters(&self, path: &str) -> bool {
        (**self).path_matters(path)
    }
    fn lifecycle_matters(&self) -> bool {
        (**self).lifecycle_matters()
    }
    fn exits_matter(&self) -> bool {
        (**self).exits_matter()
    }
    fn signal_matters(&self, target: &str) -> bool {
        (**self).signal_matters(target)
    }
}

/// Decode everything (tests, tooling).
pub struct AllEvents;

impl Interest for AllEvents {
    fn exec_matters(&self, _: &str, _: Option<&str>) -> bool {
        true
    }
    fn path_matters(&self, _: &str) -> bool {
        true
    }
    fn lifecycle_matters(&self) -> bool {
        true
    }
    fn exits_matter(&self) -> bool {
        true
    }
    fn signal_matters(&self, _: &str) -> bool {
        true
    }
}
