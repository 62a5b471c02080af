//! The owned event model every source produces and detection consumes.
//!
//! It mirrors the part of Apple's `es_message_t` that detection needs. Every source produces it
//! (`source/`: eslogger JSON, the Endpoint Security adapter), so replay and the live daemon run the
//! same detection code. [`Interest`] is how detection tells sources what can matter.

mod interest;

pub use interest::{AllEvents, Interest};

/// An answer to an authorisation (enforce mode): allow or deny, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub allow: bool,
    pub reason: String,
}

/// What enforce mode asks when the kernel waits for an answer. Answered from memory, never
/// blocking (the kernel's deadline is short); detection implements it, the ES source asks it.
pub trait Authority: Send + Sync {
    /// May the kext with this bundle id load?
    fn kextload(&self, bundle_id: &str) -> Answer;
    /// May `actor` send `signal` to `target`?
    fn signal(&self, signal: i32, actor: &Process, target: &Process) -> Answer;
    /// May `actor` change (write, rename, remove) these paths?
    fn change(&self, actor: &Process, paths: &[&str]) -> Answer;
}

/// `audit_token.auid` value for "no audit user" (AU_DEFAUDITID).
pub const NO_AUDIT_USER: u32 = u32::MAX;

/// Code-signing flags from xnu `cs_blobs.h` that detection looks at.
pub mod cs_flags {
    pub const VALID: u32 = 0x1;
    pub const ADHOC: u32 = 0x2;
    pub const PLATFORM_BINARY: u32 = 0x0400_0000;
    pub const SIGNED: u32 = 0x2000_0000;
}

/// One decoded Endpoint Security message.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Event time in nanoseconds since the Unix epoch (the message's `time`).
    pub time_ns: i64,
    /// Message version (`version`): 4 = macOS 11 ... 10 = macOS 26.
    pub version: u32,
    pub seq_num: Option<u64>,
    pub global_seq_num: Option<u64>,
    /// The kernel's monotonic tick count at the event (`mach_time`), which setting the clock
    /// does not move.
    pub mach_time: Option<u64>,
    /// The process that caused the event (for exec: the image that called exec).
    pub process: Process,
    pub kind: EventKind,
}

/// Process attribution kept on every event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Process {
    pub pid: i32,
    pub pidversion: u32,
    pub ppid: i32,
    pub original_ppid: i32,
    /// pidversion from `parent_audit_token` (macOS 11+): with `ppid`, which image the parent was.
    pub parent_pidversion: Option<u32>,
    /// pid from `responsible_audit_token` (the app responsible for a helper), if present.
    pub responsible_pid: Option<i32>,
    pub responsible_pidversion: Option<u32>,
    /// Audit user id: the human who logged in (`NO_AUDIT_USER` when none).
    pub auid: u32,
    pub euid: u32,
    pub ruid: u32,
    /// Audit session id: processes started from one login or terminal share it.
    pub asid: i32,
    pub session_id: i32,
    pub group_id: i32,
    /// Path of the controlling terminal; `None` for non-interactive processes.
    pub tty: Option<String>,
    pub executable: String,
    pub signing_id: Option<String>,
    pub team_id: Option<String>,
    pub cdhash: Option<String>,
    pub cs_flags: u32,
    pub is_platform_binary: bool,
}

impl Process {
    /// Executable file name, as the last path component.
    pub fn name(&self) -> &str {
        self.executable
            .rsplit('/')
            .next()
            .unwrap_or(&self.executable)
    }

    pub fn is_interactive(&self) -> bool {
        self.tty.is_some()
    }

    /// Ad-hoc signed or not validly signed, and not Apple platform code.
    pub fn is_unsigned_or_adhoc(&self) -> bool {
        if self.is_platform_binary {
            return false;
        }
        self.cs_flags & cs_flags::ADHOC != 0 || self.cs_flags & cs_flags::VALID == 0
    }
}

/// What happened. Paths are as the event reported them; detection normalises before trusting them.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    Exec(Exec),
    Create {
        path: String,
    },
    Write {
        path: String,
    },
    Close {
        path: String,
        modified: bool,
    },
    Rename {
        source: String,
        destination: String,
    },
    Unlink {
        path: String,
    },
    SetMode {
        path: String,
        mode: u32,
    },
    SetOwner {
        path: String,
        uid: u32,
        gid: u32,
    },
    SetExtattr {
        path: String,
        name: String,
    },
    /// An extended attribute removed (`xattr -d com.apple.quarantine`).
    DeleteExtattr {
        path: String,
        name: String,
    },
    /// File flags changed (`chflags`).
    SetFlags {
        path: String,
        flags: u32,
    },
    /// The access control list set or cleared.
    SetAcl {
        path: String,
    },
    /// Access/modification times set (`touch -t`: timestomping).
    Utimes {
        path: String,
    },
    Truncate {
        path: String,
    },
    /// A hard link to `source` made at `destination`.
    Link {
        source: String,
        destination: String,
    },
    /// A copy-on-write clone of `source` made at `destination`.
    Clone {
        source: String,
        destination: String,
    },
    KextLoad {
        identifier: String,
    },
    /// An `AUTH_KEXTLOAD` kextwatch answered (enforcement mode), with its answer.
    KextLoadDecision {
        identifier: String,
        allowed: bool,
        reason: String,
    },
    /// A signal sent (kill(2)): `process` sent `signal` to `target`.
    Signal {
        signal: i32,
        target: Box<Process>,
    },
    /// The system clock was set (settimeofday): `process` set it.
    SetTime,
    /// A configuration profile removed (macOS 14+): `process` (or the instigator) removed it.
    ProfileRemoved {
        identifier: String,
        /// Installed by MDM (`install_source` managed) rather than by hand.
        managed: bool,
        instigator: Option<Box<Process>>,
    },
    /// A TCC permission changed (macOS 15.4+): `identity` lost or gained `service`.
    TccModified {
        service: String,
        identity: String,
        /// `update_type`: 1 create, 2 modify, 3 delete.
        update_type: u32,
        /// `right`: 0 denied, 1 unknown, 2 allowed, 3 limited.
        right: u32,
        instigator: Option<Box<Process>>,
    },
    KextUnload {
        identifier: String,
    },
    /// The child is an image of `process` with its own audit token.
    Fork {
        child_pid: i32,
        child_pidversion: u32,
    },
    Exit {
        status: i32,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Exec {
    /// The new image.
    pub target: Process,
    pub args: Vec<String>,
    pub cwd: Option<String>,
}

#[cfg(test)]
impl Event {
    /// An event as the unit tests need it: who, what and when, no sequence numbers.
    pub(crate) fn at(time_ns: i64, process: Process, kind: EventKind) -> Event {
        Event {
            time_ns,
            version: 8,
            seq_num: None,
            global_seq_num: None,
            mach_time: None,
            process,
            kind,
        }
    }
}

impl EventKind {
    /// ECS `event.action` name, also the eslogger event name.
    pub fn action(&self) -> &'static str {
        match self {
            EventKind::Exec(_) => "exec",
            EventKind::Create { .. } => "create",
            EventKind::Write { .. } => "write",
            EventKind::Close { .. } => "close",
            EventKind::Rename { .. } => "rename",
            EventKind::Unlink { .. } => "unlink",
            EventKind::SetMode { .. } => "setmode",
            EventKind::SetOwner { .. } => "setowner",
            EventKind::SetExtattr { .. } => "setextattr",
            EventKind::DeleteExtattr { .. } => "deleteextattr",
            EventKind::SetFlags { .. } => "setflags",
            EventKind::SetAcl { .. } => "setacl",
            EventKind::Utimes { .. } => "utimes",
            EventKind::Truncate { .. } => "truncate",
            EventKind::Link { .. } => "link",
            EventKind::Clone { .. } => "clone",
            EventKind::KextLoad { .. } => "kextload",
            EventKind::KextLoadDecision { .. } => "kextload-decision",
            EventKind::KextUnload { .. } => "kextunload",
            EventKind::Fork { .. } => "fork",
            EventKind::Exit { .. } => "exit",
            EventKind::Signal { .. } => "signal",
            EventKind::SetTime => "settime",
            EventKind::ProfileRemoved { .. } => "profile_remove",
            EventKind::TccModified { .. } => "tcc_modify",
        }
    }
}
