//! Endpoint Security adapter (macOS only). The only module that knows `endpoint_sec` types: each
//! message is converted into the shared event model, exactly what eslogger JSON decodes into, and
//! handed to `Hooks::event`, which must not block (the daemon `try_send`s and counts drops).
//!
//! A dedicated thread owns the `Client`s (they are `!Send`), one per concern. Recording clients (the
//! `Recorder` handler): file events, kext events (which have no target path, so path muting must
//! not touch them), and process lifecycle and tamper events. In enforce mode, authorising clients
//! (the `Authoriser` handler, answering from the `Authority`): AUTH_KEXTLOAD, and a guard on
//! kextwatch's own paths and signals. Handlers run on Endpoint Security's queue. On macOS 13+ the file
//! client inverts target-path muting so the kernel delivers only events whose target is a watched
//! root, a kext/policy tool or the KextPolicy database (and follows a reload); a userspace filter
//! (the same `Interest` as for eslogger) remains, and is the only filter on older systems.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use endpoint_sec::sys::{
    es_auth_result_t, es_event_type_t, es_mute_inversion_type_t, es_mute_path_type_t,
    NewClientError,
};
use endpoint_sec::{
    version, AuditToken, Client, Event as EsEvent, EventCreateDestinationFile,
    EventRenameDestinationFile, Message,
};

use crate::event::{Answer, Authority, Interest};
use crate::event::{Event, EventKind, Exec, Process};
use crate::source::Hooks;

/// File events: the client with inverted target-path muting (macOS 13+).
pub const FILE_SUBSCRIPTIONS: [es_event_type_t; 15] = [
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_DELETEEXTATTR,
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_SETFLAGS,
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_SETACL,
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_UTIMES,
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_TRUNCATE,
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_LINK,
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_CLONE,
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_CREATE,
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_WRITE,
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_CLOSE,
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_RENAME,
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_UNLINK,
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_SETMODE,
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_SETOWNER,
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_SETEXTATTR,
];

/// Process lifecycle for lineage: every exec and fork, so the process table knows each image
/// (exits are not needed: images are kept after exit, bounded by the table). Its own client,
/// without inverted muting (which would hide execs of other programs).
pub const LIFECYCLE_SUBSCRIPTIONS: [es_event_type_t; 2] = [
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_EXEC,
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_FORK,
];

/// Attempts to stop or mislead kextwatch that carry no path: signals (to kextwatch and its
/// eslogger) and clock changes. On the lifecycle client, which no path muting touches.
pub const TAMPER_SUBSCRIPTIONS: [es_event_type_t; 2] = [
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_SIGNAL,
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_SETTIME,
];

/// Kext events carry no target path, so path muting must not touch them: a second client, without
/// inversion (one client per concern). In enforce mode AUTH_KEXTLOAD has an authorising client.
pub const KEXT_SUBSCRIPTIONS: [es_event_type_t; 2] = [
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_KEXTLOAD,
    es_event_type_t::ES_EVENT_TYPE_NOTIFY_KEXTUNLOAD,
];

/// What to tell an admin when the client cannot be created.
pub fn explain(e: NewClientError) -> &'static str {
    match e {
        NewClientError::NotPrivileged => "not running as root: Endpoint Security clients must run as root",
        NewClientError::NotPermitted => {
            "Full Disk Access is missing: grant it to kextwatch (TCC / PPPC profile SystemPolicyAllFiles)"
        }
        NewClientError::NotEntitled => {
            "the binary lacks the com.apple.developer.endpoint-security.client entitlement; use --source eslogger"
        }
        NewClientError::TooManyClients => "too many Endpoint Security clients are connected",
        _ => "Endpoint Security refused the client (internal error or invalid argument)",
    }
}

/// Why the Endpoint Security clients could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum EsError {
    /// The kernel refused a client (explained for the person who must fix it).
    #[error("{0}")]
    Client(&'static str),
    /// A step of the set-up (muting, subscribing) failed; `detail` is endpoint-sec's error.
    #[error("{step}: {detail}")]
    Setup { step: String, detail: String },
    #[error("the Endpoint Security thread could not start: {0}")]
    Thread(std::io::Error),
    #[error("the Endpoint Security client did not start")]
    NoAnswer,
}

fn setup<E: std::fmt::Debug>(step: impl Into<String>) -> impl FnOnce(E) -> EsError {
    let step = step.into();
    move |e| EsError::Setup {
        step,
        detail: format!("{e:?}"),
    }
}

pub struct EsSettings {
    pub interest: Box<dyn Interest + Send + Sync>,
    /// Folders whose file events detection needs (for inverted target-path muting); replaced on
    /// a config reload, and applied to the running client.
    pub watched_prefixes: Arc<std::sync::RwLock<Vec<String>>>,
    /// Enforce mode: who answers AUTH_KEXTLOAD and, on the guard client, attempts on kextwatch.
    pub authority: Option<Arc<dyn Authority>>,
    /// Enforce mode: kextwatch's files and folders, guarded by a client of their own.
    pub guarded_paths: Vec<String>,
}

/// What enforce mode protects kextwatch from: signals and changes to its files (answered by the
/// `Authority`), on a client of its own, inverted-muted to kextwatch's paths.
pub const GUARD_SUBSCRIPTIONS: [es_event_type_t; 5] = [
    es_event_type_t::ES_EVENT_TYPE_AUTH_SIGNAL,
    es_event_type_t::ES_EVENT_TYPE_AUTH_UNLINK,
    es_event_type_t::ES_EVENT_TYPE_AUTH_RENAME,
    es_event_type_t::ES_EVENT_TYPE_AUTH_TRUNCATE,
    es_event_type_t::ES_EVENT_TYPE_AUTH_OPEN,
];

/// `FWRITE` in an open's `fflag` (sys/fcntl.h).
const FWRITE: u32 = 0x0002;

/// Where a rename puts its file.
fn rename_destination(e: &endpoint_sec::EventRename<'_>) -> Option<String> {
    Some(match e.destination()? {
        EventRenameDestinationFile::ExistingFile { file, .. } => lossy(file.path()),
        EventRenameDestinationFile::NewPath {
            directory,
            filename,
            ..
        } => join(directory.path(), filename),
        _ => return None,
    })
}

fn lossy(s: &OsStr) -> String {
    String::from_utf8_lossy(s.as_bytes()).into_owned()
}

fn non_empty(s: &OsStr) -> Option<String> {
    (!s.is_empty()).then(|| lossy(s))
}

fn process(p: &endpoint_sec::Process<'_>) -> Process {
    let t = p.audit_token();
    let cdhash = p.cdhash();
    Process {
        pid: t.pid(),
        pidversion: t.pidversion() as u32,
        ppid: p.ppid(),
        original_ppid: p.original_ppid(),
        parent_pidversion: p.parent_audit_token().map(|r| r.pidversion() as u32),
        responsible_pid: p.responsible_audit_token().map(|r| r.pid()),
        responsible_pidversion: p.responsible_audit_token().map(|r| r.pidversion() as u32),
        auid: t.auid(),
        euid: t.euid(),
        ruid: t.ruid(),
        asid: t.asid(),
        session_id: p.session_id(),
        group_id: p.group_id(),
        tty: p.tty().map(|f| lossy(f.path())),
        executable: lossy(p.executable().path()),
        signing_id: non_empty(p.signing_id()),
        team_id: non_empty(p.team_id()),
        cdhash: cdhash
            .iter()
            .any(|b| *b != 0)
            .then(|| cdhash.iter().map(|b| format!("{b:02x}")).collect()),
        cs_flags: p.codesigning_flags(),
        is_platform_binary: p.is_platform_binary(),
    }
}

/// A link or clone of `source` as `dir/name`: (source, destination) when either side matters.
fn copy_in(
    interest: &dyn Interest,
    source: &endpoint_sec::File<'_>,
    dir: &OsStr,
    name: &OsStr,
) -> Option<(String, String)> {
    let destination = join(dir, name);
    let source = lossy(source.path());
    (interest.path_matters(&destination) || interest.path_matters(&source))
        .then_some((source, destination))
}

fn join(dir: &OsStr, name: &OsStr) -> String {
    format!("{}/{}", lossy(dir).trim_end_matches('/'), lossy(name))
}

/// Convert a message into the event model; `None` for what detection has no use for.
pub fn convert(msg: &Message, interest: &dyn Interest) -> Option<Event> {
    // This runs for every delivered message: nothing is allocated until the event is known to matter
    // (a UTF-8 path is checked borrowed).
    let wanted = |path: &OsStr| {
        let p = path.to_string_lossy();
        interest.path_matters(&p).then(|| p.into_owned())
    };
    let kind = match msg.event()? {
        EsEvent::NotifyExec(e) => {
            let target = e.target();
            let exe = target.executable().path().to_string_lossy();
            let sid = target.signing_id().to_str().filter(|s| !s.is_empty());
            if !interest.exec_matters(&exe, sid) {
                if !interest.lifecycle_matters() {
                    return None;
                }
                // Lineage needs every new image, but not its arguments.
                return Some(event(
                    msg,
                    EventKind::Exec(Exec {
                        target: process(&target),
                        args: Vec::new(),
                        cwd: None,
                    }),
                ));
            }
            EventKind::Exec(Exec {
                target: process(&target),
                args: e.args().map(lossy).collect(),
                cwd: e.cwd().map(|f| lossy(f.path())),
            })
        }
        EsEvent::NotifyFork(e) if interest.lifecycle_matters() => {
            let child = e.child().audit_token();
            EventKind::Fork {
                child_pid: child.pid(),
                child_pidversion: child.pidversion() as u32,
            }
        }
        EsEvent::NotifyExit(e) if interest.lifecycle_matters() => {
            EventKind::Exit { status: e.stat() }
        }
        EsEvent::NotifyCreate(e) => {
            let path = match e.destination()? {
                EventCreateDestinationFile::ExistingFile { file, .. } => lossy(file.path()),
                EventCreateDestinationFile::NewPath {
                    directory,
                    filename,
                    ..
                } => join(directory.path(), filename),
                _ => return None,
            };
            if !interest.path_matters(&path) {
                return None;
            }
            EventKind::Create { path }
        }
        EsEvent::NotifyWrite(e) => EventKind::Write {
            path: wanted(e.target().path())?,
        },
        EsEvent::NotifyClose(e) => EventKind::Close {
            path: wanted(e.target().path())?,
            modified: e.modified(),
        },
        EsEvent::NotifyUnlink(e) => EventKind::Unlink {
            path: wanted(e.target().path())?,
        },
        EsEvent::NotifyRename(e) => {
            let source = lossy(e.source().path());
            let destination = rename_destination(&e)?;
            if !interest.path_matters(&source) && !interest.path_matters(&destination) {
                return None;
            }
            EventKind::Rename {
                source,
                destination,
            }
        }
        EsEvent::NotifySetMode(e) => EventKind::SetMode {
            path: wanted(e.target().path())?,
            mode: u32::from(e.mode()),
        },
        EsEvent::NotifySetOwner(e) => EventKind::SetOwner {
            path: wanted(e.target().path())?,
            uid: e.uid(),
            gid: e.gid(),
        },
        EsEvent::NotifySetExtAttr(e) => EventKind::SetExtattr {
            path: wanted(e.target().path())?,
            name: lossy(e.extattr()),
        },
        EsEvent::NotifyDeleteExtAttr(e) => EventKind::DeleteExtattr {
            path: wanted(e.target().path())?,
            name: lossy(e.extattr()),
        },
        EsEvent::NotifySetFlags(e) => EventKind::SetFlags {
            path: wanted(e.target().path())?,
            flags: e.flags(),
        },
        EsEvent::NotifySetAcl(e) => EventKind::SetAcl {
            path: wanted(e.target().path())?,
        },
        EsEvent::NotifyUTimes(e) => EventKind::Utimes {
            path: wanted(e.target().path())?,
        },
        EsEvent::NotifyTruncate(e) => EventKind::Truncate {
            path: wanted(e.target().path())?,
        },
        EsEvent::NotifyLink(e) => {
            let (source, destination) = copy_in(
                interest,
                &e.source(),
                e.target_dir().path(),
                e.target_filename(),
            )?;
            EventKind::Link {
                source,
                destination,
            }
        }
        EsEvent::NotifyClone(e) => {
            let (source, destination) = copy_in(
                interest,
                &e.source(),
                e.target_dir().path(),
                e.target_name(),
            )?;
            EventKind::Clone {
                source,
                destination,
            }
        }
        EsEvent::NotifySignal(e) => {
            let target = e.target();
            if !interest.signal_matters(&target.executable().path().to_string_lossy()) {
                return None;
            }
            EventKind::Signal {
                signal: e.sig(),
                target: Box::new(process(&target)),
            }
        }
        EsEvent::NotifySetTime(_) => EventKind::SetTime,
        EsEvent::NotifyKextLoad(e) => EventKind::KextLoad {
            identifier: lossy(e.identifier()),
        },
        EsEvent::NotifyKextUnload(e) => EventKind::KextUnload {
            identifier: lossy(e.identifier()),
        },
        _ => return None,
    };
    Some(event(msg, kind))
}

fn event(msg: &Message, kind: EventKind) -> Event {
    let time_ns = crate::wallclock::epoch_ns(msg.time());
    Event {
        time_ns,
        version: msg.version(),
        seq_num: msg.seq_num(),
        global_seq_num: msg.global_seq_num(),
        mach_time: Some(msg.raw_mach_time()),
        process: process(&msg.process()),
        kind,
    }
}

/// Can a client be created here (root, Full Disk Access, entitlement)? For `kextwatch doctor`.
pub fn check_client() -> Result<(), EsError> {
    let macos = macos_version();
    version::set_runtime_version(macos.0, macos.1, macos.2);
    let client = Client::new(|_: &mut Client<'_>, _: Message| {})
        .map_err(|e| EsError::Client(explain(e)))?;
    drop(client);
    Ok(())
}

/// The running macOS version, for `version::set_runtime_version`.
fn macos_version() -> (u64, u64, u64) {
    let out = std::process::Command::new("/usr/bin/sw_vers")
        .arg("-productVersion")
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut parts = text
        .trim()
        .split('.')
        .map(|p| p.parse::<u64>().unwrap_or(0));
    (
        parts.next().unwrap_or(11),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    )
}

/// Reports a gap in a client's sequence numbers (they are per client, so each keeps its own).
fn count_gap(last_seq: &AtomicU64, msg: &Message, hooks: &dyn Hooks) {
    if let Some(seq) = msg.global_seq_num() {
        let last = last_seq.swap(seq, Ordering::Relaxed);
        if last != 0 && seq > last + 1 {
            hooks.sequence_gap(seq - last - 1);
        }
    }
}

/// The recording clients' handler: converts what detection can use and hands it off.
struct Recorder {
    interest: Box<dyn Interest + Send + Sync>,
    hooks: Arc<dyn Hooks>,
}

impl Recorder {
    /// Runs on the ES queue: never blocks.
    fn handle(&self, last_seq: &AtomicU64, msg: Message) {
        count_gap(last_seq, &msg, &*self.hooks);
        if let Some(ev) = convert(&msg, self.interest.as_ref()) {
            self.hooks.event(ev);
        }
    }
}

/// The authorising clients' handler (enforce mode): answers AUTH_KEXTLOAD and attempts on
/// kextwatch from the `Authority`, and hands each answer to detection as an event.
struct Authoriser {
    authority: Arc<dyn Authority>,
    hooks: Arc<dyn Hooks>,
}

impl Authoriser {
    /// Answers the guard client's authorisations; false for any other message. A denial is
    /// handed to detection as the event it stopped, so it is also an alert.
    fn guard(&self, guard: &dyn Authority, client: &mut Client<'_>, msg: &Message) -> bool {
        // Only for the guard's own messages: every other message passes through here too.
        if !matches!(
            msg.event(),
            Some(
                EsEvent::AuthSignal(_)
                    | EsEvent::AuthUnlink(_)
                    | EsEvent::AuthTruncate(_)
                    | EsEvent::AuthRename(_)
                    | EsEvent::AuthOpen(_)
            )
        ) {
            return false;
        }
        let actor = process(&msg.process());
        let (decision, denied_kind, flags) = match msg.event() {
            Some(EsEvent::AuthSignal(e)) => {
                let target = process(&e.target());
                let d = guard.signal(e.sig(), &actor, &target);
                let kind = EventKind::Signal {
                    signal: e.sig(),
                    target: Box::new(target),
                };
                (d, kind, None)
            }
            Some(EsEvent::AuthUnlink(e)) => {
                let path = lossy(e.target().path());
                (
                    guard.change(&actor, &[&path]),
                    EventKind::Unlink { path },
                    None,
                )
            }
            Some(EsEvent::AuthTruncate(e)) => {
                let path = lossy(e.target().path());
                (
                    guard.change(&actor, &[&path]),
                    EventKind::Truncate { path },
                    None,
                )
            }
            Some(EsEvent::AuthRename(e)) => {
                let source = lossy(e.source().path());
                let destination = rename_destination(&e).unwrap_or_default();
                let d = guard.change(&actor, &[&source, &destination]);
                (
                    d,
                    EventKind::Rename {
                        source,
                        destination,
                    },
                    None,
                )
            }
            Some(EsEvent::AuthOpen(e)) => {
                let fflag = e.fflag() as u32;
                let path = lossy(e.file().path());
                let d = if fflag & FWRITE == 0 {
                    Answer {
                        allow: true,
                        reason: "read only".into(),
                    }
                } else {
                    guard.change(&actor, &[&path])
                };
                (d, EventKind::Write { path }, Some(fflag))
            }
            _ => return false,
        };
        let answered = match flags {
            // An open is answered with the flags it may have: without FWRITE when denied.
            Some(fflag) => {
                let allowed = if decision.allow {
                    fflag
                } else {
                    fflag & !FWRITE
                };
                client.respond_flags_result(msg, allowed, false)
            }
            None => {
                let result = if decision.allow {
                    es_auth_result_t::ES_AUTH_RESULT_ALLOW
                } else {
                    es_auth_result_t::ES_AUTH_RESULT_DENY
                };
                client.respond_auth_result(msg, result, false)
            }
        };
        if let Err(e) = answered {
            tracing::error!(error = ?e, "could not answer a self-protection authorisation");
        }
        if !decision.allow {
            tracing::warn!(reason = %decision.reason, "tampering denied");
            self.hooks.event(event(msg, denied_kind));
        }
        true
    }

    /// Runs on the ES queue: answers from memory, never blocks.
    fn handle(&self, last_seq: &AtomicU64, client: &mut Client<'_>, msg: Message) {
        count_gap(last_seq, &msg, &*self.hooks);
        let authority = &*self.authority;
        if self.guard(authority, client, &msg) {
            return;
        }
        if let Some(EsEvent::AuthKextLoad(e)) = msg.event() {
            let identifier = lossy(e.identifier());
            let decision = authority.kextload(&identifier);
            let result = if decision.allow {
                es_auth_result_t::ES_AUTH_RESULT_ALLOW
            } else {
                es_auth_result_t::ES_AUTH_RESULT_DENY
            };
            if let Err(e) = client.respond_auth_result(&msg, result, false) {
                tracing::error!(error = ?e, "could not answer AUTH_KEXTLOAD");
            }
            tracing::info!(kext = %identifier, allowed = decision.allow, reason = %decision.reason, "AUTH_KEXTLOAD answered");
            self.hooks.event(Event {
                time_ns: crate::wallclock::epoch_ns(msg.time()),
                version: msg.version(),
                seq_num: msg.seq_num(),
                global_seq_num: msg.global_seq_num(),
                mach_time: Some(msg.raw_mach_time()),
                process: process(&msg.process()),
                kind: EventKind::KextLoadDecision {
                    identifier,
                    allowed: decision.allow,
                    reason: decision.reason,
                },
            });
        }
    }
}

/// A client recording for detection.
fn recording_client<'b>(recorder: &Arc<Recorder>) -> Result<Client<'b>, EsError> {
    // AssertUnwindSafe: the hooks are plain closures over atomics and channels; a panic in one is
    // caught by endpoint-sec and leaves nothing half-updated that matters.
    let recorder = AssertUnwindSafe(recorder.clone());
    let last_seq = AtomicU64::new(0);
    Client::new(move |_, m| {
        let r = &recorder;
        r.0.handle(&last_seq, m)
    })
    .map_err(|e| EsError::Client(explain(e)))
}

/// A client answering authorisations (enforce mode).
fn authorising_client<'b>(authoriser: &Arc<Authoriser>) -> Result<Client<'b>, EsError> {
    // AssertUnwindSafe: as above; the authority answers from snapshots behind locks.
    let authoriser = AssertUnwindSafe(authoriser.clone());
    let last_seq = AtomicU64::new(0);
    Client::new(move |c, m| {
        let a = &authoriser;
        a.0.handle(&last_seq, c, m)
    })
    .map_err(|e| EsError::Client(explain(e)))
}

fn mute_self(client: &mut Client<'_>) -> Result<(), EsError> {
    // Our own file activity (state, spool, logs) is not interesting.
    if let Ok(me) = AuditToken::from_pid(std::process::id() as i32) {
        client.mute_process(&me).map_err(setup("mute self"))?;
    }
    Ok(())
}

fn current_prefixes(shared: &std::sync::RwLock<Vec<String>>) -> Vec<String> {
    shared.read().unwrap_or_else(|p| p.into_inner()).clone()
}

/// A reload changed the watched folders: the file client's inverted muting follows, so a folder
/// added is delivered from now on and one removed no longer is.
fn rewatch(files: &mut Client<'_>, old: &[String], new: &[String]) {
    let ty = es_mute_path_type_t::ES_MUTE_PATH_TYPE_TARGET_PREFIX;
    for p in new.iter().filter(|p| !old.contains(p)) {
        match files.mute_path(OsStr::new(p), ty) {
            Ok(()) => tracing::info!(path = %p, "now watched"),
            Err(e) => tracing::warn!(path = %p, error = ?e, "cannot watch"),
        }
    }
    for p in old.iter().filter(|p| !new.contains(p)) {
        match files.unmute_path(OsStr::new(p), ty) {
            Ok(()) => tracing::info!(path = %p, "no longer watched"),
            Err(e) => tracing::warn!(path = %p, error = ?e, "cannot stop watching"),
        }
    }
}

/// Start both clients on their own thread; returns once they are subscribed (or failed to be).
pub fn start(
    settings: EsSettings,
    hooks: Arc<dyn Hooks>,
    stop: Arc<AtomicBool>,
) -> Result<(), EsError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), EsError>>();
    std::thread::Builder::new()
        .name("es-client".into())
        .spawn(move || {
            let macos = macos_version();
            version::set_runtime_version(macos.0, macos.1, macos.2);
            let enforce = settings.authority.is_some();
            let shared_watched = settings.watched_prefixes.clone();
            let mut watched = current_prefixes(&shared_watched);
            let guarded = if enforce {
                settings.guarded_paths.clone()
            } else {
                Vec::new()
            };
            let recorder = Arc::new(Recorder {
                interest: settings.interest,
                hooks: hooks.clone(),
            });
            let authoriser = settings.authority.map(|authority| {
                Arc::new(Authoriser {
                    authority,
                    hooks: hooks.clone(),
                })
            });
            type Clients = (
                Client<'static>,
                Client<'static>,
                Client<'static>,
                Vec<Client<'static>>,
            );
            let clients = (|| -> Result<Clients, EsError> {
                // Answering clients: AUTH_KEXTLOAD, and the guard on kextwatch's own paths.
                let mut authorising = Vec::new();
                let mut files = recording_client(&recorder)?;
                mute_self(&mut files)?;
                if macos >= (13, 0, 0) {
                    files
                        .invert_muting(es_mute_inversion_type_t::ES_MUTE_INVERSION_TYPE_TARGET_PATH)
                        .map_err(setup("invert muting"))?;
                    for p in &watched {
                        files
                            .mute_path(
                                OsStr::new(p),
                                es_mute_path_type_t::ES_MUTE_PATH_TYPE_TARGET_PREFIX,
                            )
                            .map_err(setup(format!("watch {p}")))?;
                    }
                }
                files
                    .subscribe(&FILE_SUBSCRIPTIONS)
                    .map_err(setup("subscribe"))?;

                let mut kexts = recording_client(&recorder)?;
                mute_self(&mut kexts)?;
                kexts
                    .subscribe(&KEXT_SUBSCRIPTIONS)
                    .map_err(setup("subscribe"))?;
                if let Some(authoriser) = &authoriser {
                    let mut k = authorising_client(authoriser)?;
                    mute_self(&mut k)?;
                    k.subscribe(&[es_event_type_t::ES_EVENT_TYPE_AUTH_KEXTLOAD])
                        .map_err(setup("subscribe AUTH_KEXTLOAD"))?;
                    authorising.push(k);
                }
                if let Some(authoriser) = authoriser.as_ref().filter(|_| !guarded.is_empty()) {
                    let mut g = authorising_client(authoriser)?;
                    // kextwatch's own signals and writes are never asked about.
                    mute_self(&mut g)?;
                    g.invert_muting(es_mute_inversion_type_t::ES_MUTE_INVERSION_TYPE_TARGET_PATH)
                        .map_err(setup("invert muting"))?;
                    for p in &guarded {
                        g.mute_path(
                            OsStr::new(p),
                            es_mute_path_type_t::ES_MUTE_PATH_TYPE_TARGET_PREFIX,
                        )
                        .map_err(setup(format!("guard {p}")))?;
                    }
                    g.subscribe(&GUARD_SUBSCRIPTIONS)
                        .map_err(setup("subscribe guard"))?;
                    authorising.push(g);
                }
                let mut lifecycle = recording_client(&recorder)?;
                mute_self(&mut lifecycle)?;
                lifecycle
                    .subscribe(&LIFECYCLE_SUBSCRIPTIONS)
                    .map_err(setup("subscribe"))?;
                lifecycle
                    .subscribe(&TAMPER_SUBSCRIPTIONS)
                    .map_err(setup("subscribe"))?;
                Ok((files, kexts, lifecycle, authorising))
            })();
            let clients = match clients {
                Ok(c) => {
                    let _ = ready_tx.send(Ok(()));
                    c
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            // The clients live as long as this thread (they are !Send).
            let (mut files, kexts, lifecycle, authorising) = clients;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                if macos >= (13, 0, 0) {
                    let now = current_prefixes(&shared_watched);
                    if now != watched {
                        rewatch(&mut files, &watched, &now);
                        watched = now;
                    }
                }
            }
            drop((files, kexts, lifecycle, authorising));
        })
        .map_err(EsError::Thread)?;
    ready_rx
        .recv_timeout(Duration::from_secs(30))
        .map_err(|_| EsError::NoAnswer)?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One list of events, two clients of it: what the daemon subscribes to through Endpoint
    /// Security is what it asks eslogger for (eslogger's event numbers are ES's event types).
    #[test]
    fn es_subscribes_to_exactly_the_events_eslogger_is_asked_for() {
        let mut es: Vec<&str> = FILE_SUBSCRIPTIONS
            .iter()
            .chain(&LIFECYCLE_SUBSCRIPTIONS)
            .chain(&TAMPER_SUBSCRIPTIONS)
            .chain(&KEXT_SUBSCRIPTIONS)
            .map(|t| crate::source::eslogger::event_type::name(t.0).unwrap_or("unknown"))
            .collect();
        es.sort_unstable();
        let mut eslogger = crate::source::eslogger::ESLOGGER_EVENTS.to_vec();
        eslogger.sort_unstable();
        assert_eq!(es, eslogger);
    }
}
