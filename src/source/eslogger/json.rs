//! Decoding of eslogger JSON lines (`man eslogger`) into the event model.
//!
//! Apple says the format "is not API", so decoding is tolerant: unknown fields are skipped, unknown
//! event types are reported as such, and both known placements of a field are accepted. Decoding is
//! lazy: the envelope keeps `process` and `event` as raw JSON, and an event is fully decoded only when
//! the [`Interest`] says it can matter to detection. That keeps replay of noisy captures cheap.

use std::borrow::Cow;
use std::fmt;
use std::sync::LazyLock;

use memchr::memmem::Finder;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::event::{Event, EventKind, Exec, Interest, Process, NO_AUDIT_USER};

mod onepass;
mod scan;

use scan::Scan;

/// `es_event_type_t` numbers this decoder understands (endpoint-sec-sys `types.rs`).
pub mod event_type {
    pub const AUTH_EXEC: u32 = 0;
    pub const AUTH_KEXTLOAD: u32 = 2;
    pub const NOTIFY_EXEC: u32 = 9;
    pub const NOTIFY_FORK: u32 = 11;
    pub const NOTIFY_CLOSE: u32 = 12;
    pub const NOTIFY_CREATE: u32 = 13;
    pub const NOTIFY_EXIT: u32 = 15;
    pub const NOTIFY_KEXTLOAD: u32 = 17;
    pub const NOTIFY_KEXTUNLOAD: u32 = 18;
    pub const NOTIFY_RENAME: u32 = 25;
    pub const NOTIFY_SETEXTATTR: u32 = 27;
    pub const NOTIFY_SETMODE: u32 = 29;
    pub const NOTIFY_SETOWNER: u32 = 30;
    pub const NOTIFY_UNLINK: u32 = 32;
    pub const NOTIFY_WRITE: u32 = 33;
    pub const NOTIFY_LINK: u32 = 19;
    pub const NOTIFY_SETFLAGS: u32 = 28;
    pub const NOTIFY_TRUNCATE: u32 = 41;
    pub const NOTIFY_UTIMES: u32 = 59;
    pub const NOTIFY_CLONE: u32 = 61;
    pub const NOTIFY_DELETEEXTATTR: u32 = 70;
    pub const NOTIFY_SETACL: u32 = 82;
    pub const NOTIFY_SIGNAL: u32 = 31;
    pub const NOTIFY_SETTIME: u32 = 75;
    /// macOS 14+.
    pub const NOTIFY_PROFILE_REMOVE: u32 = 127;
    /// macOS 15.4+.
    pub const NOTIFY_TCC_MODIFY: u32 = 147;

    /// A readable name for summaries, for the types kextwatch decodes or commonly sees.
    pub fn name(t: u32) -> Option<&'static str> {
        Some(match t {
            AUTH_EXEC => "auth_exec",
            1 => "auth_open",
            AUTH_KEXTLOAD => "auth_kextload",
            NOTIFY_EXEC => "exec",
            10 => "open",
            NOTIFY_FORK => "fork",
            NOTIFY_CLOSE => "close",
            NOTIFY_CREATE => "create",
            NOTIFY_EXIT => "exit",
            NOTIFY_KEXTLOAD => "kextload",
            NOTIFY_KEXTUNLOAD => "kextunload",
            NOTIFY_RENAME => "rename",
            NOTIFY_SETEXTATTR => "setextattr",
            NOTIFY_SETMODE => "setmode",
            NOTIFY_SETOWNER => "setowner",
            NOTIFY_UNLINK => "unlink",
            NOTIFY_WRITE => "write",
            NOTIFY_LINK => "link",
            NOTIFY_SETFLAGS => "setflags",
            NOTIFY_TRUNCATE => "truncate",
            NOTIFY_UTIMES => "utimes",
            NOTIFY_CLONE => "clone",
            NOTIFY_DELETEEXTATTR => "deleteextattr",
            NOTIFY_SETACL => "setacl",
            NOTIFY_SIGNAL => "signal",
            NOTIFY_SETTIME => "settime",
            NOTIFY_PROFILE_REMOVE => "profile_remove",
            NOTIFY_TCC_MODIFY => "tcc_modify",
            _ => return None,
        })
    }
}

/// Envelope fields known for every line, decoded or not.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Meta {
    pub event_type: u32,
    pub version: u32,
    pub global_seq_num: Option<u64>,
}

impl Meta {
    /// As read from an envelope (no `version` is version 0).
    fn new(event_type: u32, version: Option<u32>, global_seq_num: Option<u64>) -> Meta {
        Meta {
            event_type,
            version: version.unwrap_or(0),
            global_seq_num,
        }
    }
}

#[derive(Debug)]
pub enum Decoded {
    /// A fully decoded event that detection should see.
    Event(Box<Event>),
    /// A well-formed line detection has no use for (noise or a type it does not handle).
    Skipped(Meta),
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("invalid JSON or unexpected field type: {0}")]
    Json(#[from] serde_json::Error),
    #[error("missing field `{0}`")]
    Missing(&'static str),
    #[error("bad timestamp {0:?}")]
    BadTime(String),
}

/// Decode one eslogger line (without its newline).
pub fn decode_line(line: &str, interest: &dyn Interest) -> Result<Decoded, DecodeError> {
    // Read once from the raw line for both shortcuts; `None` when unsure, and then neither applies.
    let raw_type = raw_event_type(line);
    if let Some(meta) = raw_type.and_then(|t| skip_unparsed(line, t, interest)) {
        return Ok(Decoded::Skipped(meta));
    }
    let ty = raw_type.map(|t| t.ty);
    if let Some(ev) = ty.and_then(|ty| lineage_event(line, ty, interest)) {
        return Ok(Decoded::Event(Box::new(ev)));
    }
    if let Some(decoded) = ty.and_then(|ty| create_in_one_pass(line, ty, interest)) {
        return Ok(decoded);
    }
    decode_parsed(line, interest)
}

/// The event type of a line that is one JSON object, from its first `event_type` key (a plain
/// number), found by a search for `"event` that counts the `"event":` keys on the way: only the
/// first is read, to spare a pass over the line. [`skip_unparsed`] goes on from there to check
/// there is no other before it trusts the type, and [`lineage_event`] that the envelope it reads
/// has this type.
fn raw_event_type(line: &str) -> Option<RawType> {
    // Only the start is looked at here: the end of a long line is not in the cache yet. The
    // one-pass reader checks the whole object, and `skip_unparsed` its closing brace.
    let b = line.trim_ascii_start().as_bytes();
    if b.first() != Some(&b'{') {
        return None;
    }
    let mut events_before = 0;
    for at in EVENT_PREFIX.find_iter(b) {
        match event_key(&b[at..]) {
            Some(EventKey::Type) => {
                let resume = at + EVENT_TYPE_KEY.len();
                return Some(RawType {
                    ty: u32::try_from(number_at(b, resume)?).ok()?,
                    events_before,
                    resume,
                });
            }
            Some(EventKey::Event) => events_before += 1,
            None => {}
        }
    }
    None
}

/// A line's type as [`raw_event_type`] read it, and where its search stopped.
#[derive(Clone, Copy)]
struct RawType {
    ty: u32,
    /// `"event":` keys before the type's key.
    events_before: u32,
    /// Just past the type's key (in the line without its leading blanks).
    resume: usize,
}

const EVENT_KEY: &[u8] = b"\"event\":";
const EVENT_TYPE_KEY: &[u8] = b"\"event_type\":";

enum EventKey {
    /// [`EVENT_KEY`].
    Event,
    /// [`EVENT_TYPE_KEY`].
    Type,
}

/// Which of the two keys starting `"event` starts `at`, if either.
fn event_key(at: &[u8]) -> Option<EventKey> {
    if at.starts_with(EVENT_KEY) {
        Some(EventKey::Event)
    } else if at.starts_with(EVENT_TYPE_KEY) {
        Some(EventKey::Type)
    } else {
        None
    }
}

/// The full decoder: every line the shortcuts above leave. The envelope is read in one pass where
/// [`onepass`] is sure of it, by serde_json otherwise; either way the event body is then decoded
/// alone, and the rest is the same.
fn decode_parsed(line: &str, interest: &dyn Interest) -> Result<Decoded, DecodeError> {
    if let Some(env) = onepass::envelope(line, onepass::process, Scan::raw) {
        let process = env.process;
        let parts = Parts {
            meta: Meta::new(env.event_type, env.version, env.global_seq_num),
            seq_num: env.seq_num,
            mach_time: env.mach_time,
            time: env.time,
            event: env.event,
        };
        return parts.decode(interest, || Ok(process));
    }
    decode_with_serde(line, interest)
}

/// [`decode_parsed`] when [`onepass`] is unsure: serde_json, whose answer is the reference.
fn decode_with_serde(line: &str, interest: &dyn Interest) -> Result<Decoded, DecodeError> {
    let env: Envelope = serde_json::from_str(line)?;
    let parts = Parts {
        meta: Meta::new(env.event_type, env.version, env.global_seq_num),
        seq_num: env.seq_num,
        mach_time: env.mach_time,
        time: env.time,
        event: env.event.map(RawValue::get),
    };
    parts.decode(interest, || {
        env.process
            .map(|p| serde_json::from_str(p.get()))
            .transpose()
            .map_err(DecodeError::from)
    })
}

/// An envelope however it was read, the event body still text.
struct Parts<'a> {
    meta: Meta,
    seq_num: Option<u64>,
    mach_time: Option<u64>,
    time: Option<Cow<'a, str>>,
    event: Option<&'a str>,
}

impl<'a> Parts<'a> {
    /// The event, reading the process (`process`) only if the body says the event matters.
    fn decode(
        self,
        interest: &dyn Interest,
        process: impl FnOnce() -> Result<Option<RawProcess<'a>>, DecodeError>,
    ) -> Result<Decoded, DecodeError> {
        let body = self.event.ok_or(DecodeError::Missing("event"))?;
        let Some(kind) = decode_kind(self.meta.event_type, body, interest)? else {
            return Ok(Decoded::Skipped(self.meta));
        };
        let time = self.time.ok_or(DecodeError::Missing("time"))?;
        let time_ns = parse_time(&time)?;
        let process = process()?.ok_or(DecodeError::Missing("process"))?;
        Ok(Decoded::Event(Box::new(Event {
            time_ns,
            version: self.meta.version,
            seq_num: self.seq_num,
            global_seq_num: self.meta.global_seq_num,
            mach_time: self.mach_time,
            process: process.into_process(),
            kind,
        })))
    }
}

/// RFC 3339 (eslogger writes nanoseconds) to nanoseconds since the epoch.
pub fn parse_time(s: &str) -> Result<i64, DecodeError> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|_| DecodeError::BadTime(s.chars().take(64).collect()))?;
    i64::try_from(t.unix_timestamp_nanos()).map_err(|_| DecodeError::BadTime(s.to_string()))
}

/// Whether events of type `ty` can become events for detection (`decode_kind` returns `None` for
/// every other type, whatever the body; a test holds the two together).
fn decodes(ty: u32, interest: &dyn Interest) -> bool {
    use event_type::*;
    match ty {
        NOTIFY_FORK => interest.lifecycle_matters(),
        NOTIFY_EXIT => interest.exits_matter(),
        AUTH_EXEC
        | NOTIFY_EXEC
        | NOTIFY_CREATE
        | NOTIFY_WRITE
        | NOTIFY_UNLINK
        | NOTIFY_SETACL
        | NOTIFY_UTIMES
        | NOTIFY_TRUNCATE
        | NOTIFY_CLOSE
        | NOTIFY_SETMODE
        | NOTIFY_SETOWNER
        | NOTIFY_SETEXTATTR
        | NOTIFY_DELETEEXTATTR
        | NOTIFY_RENAME
        | NOTIFY_SETFLAGS
        | NOTIFY_LINK
        | NOTIFY_CLONE
        | AUTH_KEXTLOAD
        | NOTIFY_KEXTLOAD
        | NOTIFY_KEXTUNLOAD
        | NOTIFY_SIGNAL
        | NOTIFY_SETTIME
        | NOTIFY_PROFILE_REMOVE
        | NOTIFY_TCC_MODIFY => true,
        _ => false,
    }
}

// Searchers built once: building one costs more than a search through a short line.
static VERSION_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"version\":"));
static GLOBAL_SEQ_KEY: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(b"\"global_seq_num\":"));
/// Both `"event":` and `"event_type":`, told apart by what follows ([`event_key`]), so one pass
/// finds the type and counts both.
static EVENT_PREFIX: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"event"));
/// Searched with [`LetterRank`]: by default memchr looks for the needle's quote and colon, which
/// in JSON match every four-letter key (twice as slow over a write or close line).
static PATH_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| key_finder(b"\"path\":\""));
// A new file's name (see `no_path_matters`).
static FILENAME_KEY: LazyLock<Finder<'static>> = LazyLock::new(|| key_finder(b"\"filename\":\""));
static TARGET_FILENAME_KEY: LazyLock<Finder<'static>> =
    LazyLock::new(|| key_finder(b"\"target_filename\":\""));
static TARGET_NAME_KEY: LazyLock<Finder<'static>> =
    LazyLock::new(|| key_finder(b"\"target_name\":\""));

fn key_finder(needle: &'static [u8]) -> Finder<'static> {
    memchr::memmem::FinderBuilder::new().build_forward_with_ranker(LetterRank, needle)
}

/// How common a byte is in eslogger's JSON, for memchr's choice of the two needle bytes it looks
/// for first: punctuation and digits everywhere, letters by their English frequency.
struct LetterRank;

impl memchr::arch::all::packedpair::HeuristicFrequencyRank for LetterRank {
    fn rank(&self, byte: u8) -> u8 {
        const BY_FREQUENCY: &[u8; 26] = b"etaoinshrdlcumwfgypbvkjxqz";
        if !byte.is_ascii_alphabetic() {
            return 255;
        }
        let lower = byte.to_ascii_lowercase();
        let place = BY_FREQUENCY.iter().position(|&l| l == lower).unwrap_or(0);
        250 - 8 * place as u8
    }
}

/// The value of the top-level number field `key` (given with its quotes and colon): `None` when
/// absent, `Some(None)` when the line is not one this shortcut can be sure of (the key twice, or
/// not followed by digits).
fn raw_number(line: &[u8], key: &Finder<'static>) -> Option<Option<u64>> {
    let mut found = key.find_iter(line);
    let at = found.next()? + key.needle().len();
    if found.next().is_some() {
        return Some(None);
    }
    Some(number_at(line, at))
}

/// The plain number (digits, then `,` or `}`) at `at`, or `None`.
fn number_at(line: &[u8], at: usize) -> Option<u64> {
    let digits = line[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    let end = line.get(at + digits);
    if digits == 0 || digits > 19 || !matches!(end, Some(b',' | b'}')) {
        return None;
    }
    std::str::from_utf8(&line[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// Exactly one `"event":` key and one `"event_type":` key in the line (without its leading
/// blanks), counted on from where [`raw_event_type`] stopped.
fn one_event_and_type(line: &[u8], raw_type: RawType) -> bool {
    let (mut event, mut event_type) = (raw_type.events_before, 1);
    let rest = &line[raw_type.resume..];
    for at in EVENT_PREFIX.find_iter(rest) {
        match event_key(&rest[at..]) {
            Some(EventKey::Event) => event += 1,
            Some(EventKey::Type) => event_type += 1,
            None => {}
        }
    }
    event == 1 && event_type == 1
}

/// An exec or fork as lineage records it (an exec's new image without arguments, a fork's child),
/// read in one pass over the line instead of capturing `event` and `process` first and parsing
/// them after: execs are half of a busy Mac's bytes. Only the common case: anything else (a tool,
/// unsigned code as root, a line that does not parse this way) is left to the full decoder, which
/// gives its answer or error.
fn lineage_event(line: &str, ty: u32, interest: &dyn Interest) -> Option<Event> {
    use event_type::*;
    if !interest.lifecycle_matters() {
        return None;
    }
    match ty {
        NOTIFY_EXEC | AUTH_EXEC => {
            let mut env = onepass::envelope_of(line, ty, onepass::process, onepass::exec_body)?;
            let target = env.event.take()?.body.target.into_process();
            let unsigned_root = target.euid == 0 && target.is_unsigned_or_adhoc();
            if unsigned_root
                || interest.exec_matters(&target.executable, target.signing_id.as_deref())
            {
                return None;
            }
            let kind = EventKind::Exec(Exec {
                target,
                args: Vec::new(),
                cwd: None,
            });
            envelope_event(env, kind)
        }
        NOTIFY_FORK => {
            let mut env = onepass::envelope_of(line, ty, onepass::process, onepass::fork_body)?;
            let child = env.event.take()?.body.child.audit_token.unwrap_or_default();
            let kind = EventKind::Fork {
                child_pid: child.pid,
                child_pidversion: child.pidversion,
            };
            envelope_event(env, kind)
        }
        _ => None,
    }
}

/// The event an envelope read in one pass carries, if it has the fields every event needs.
fn envelope_event<B>(
    env: onepass::Envelope<'_, RawProcess<'_>, B>,
    kind: EventKind,
) -> Option<Event> {
    Some(Event {
        time_ns: parse_time(&env.time?).ok()?,
        version: env.version.unwrap_or(0),
        seq_num: env.seq_num,
        global_seq_num: env.global_seq_num,
        mach_time: env.mach_time,
        process: env.process?.into_process(),
        kind,
    })
}

/// A file creation (a busy Mac makes them everywhere), read in one pass as [`lineage_event`] reads
/// execs; whatever this is unsure of (including a creation without a destination, an error) is
/// the full decoder's.
fn create_in_one_pass(line: &str, ty: u32, interest: &dyn Interest) -> Option<Decoded> {
    if ty != event_type::NOTIFY_CREATE {
        return None;
    }
    // The process is read only for a creation that matters: most do not.
    let mut env = onepass::envelope_of(line, ty, onepass::process_text, onepass::create_body)?;
    let meta = Meta::new(ty, env.version, env.global_seq_num);
    let path = env.event.take()?.body.path()?;
    if !interest.path_matters(&path) {
        return Some(Decoded::Skipped(meta));
    }
    let kind = EventKind::Create {
        path: path.into_owned(),
    };
    let env = env.map_process(onepass::process_from_text)?;
    envelope_event(env, kind).map(|e| Decoded::Event(Box::new(e)))
}

/// Events whose body is one file (`target`), which `decode_kind` keeps only if its path matters.
fn one_file(ty: u32) -> bool {
    use event_type::*;
    matches!(
        ty,
        NOTIFY_WRITE
            | NOTIFY_CLOSE
            | NOTIFY_UNLINK
            | NOTIFY_SETACL
            | NOTIFY_UTIMES
            | NOTIFY_TRUNCATE
            | NOTIFY_SETMODE
            | NOTIFY_SETOWNER
            | NOTIFY_SETEXTATTR
            | NOTIFY_DELETEEXTATTR
    )
}

/// Whether the line has paths and none of them matters, nor any of them joined with any new
/// file's name that `new_file_names` find (a creation's or rename's `filename`, a link's
/// `target_filename`, a clone's `target_name`: a new file is a directory's path and a name,
/// joined as the decoder joins them). Then neither does the event's target, source or
/// destination, wherever its key order put them: most file events are caches, temporary files
/// and atomic saves all over the disk (reading a creation's process object to find that out was
/// a tenth of replay's decoding, and renames, links and clones went to serde_json). Paths and
/// names are read with their escapes (eslogger writes `\/`); one this cannot decode, or a line of
/// more paths than eslogger writes in any of these events, makes the answer no (unsure).
fn no_path_matters(
    line: &str,
    interest: &dyn Interest,
    new_file_names: &[&Finder<'static>],
) -> bool {
    const MOST_PATHS: usize = 8;
    let mut paths: [Cow<str>; MOST_PATHS] = Default::default();
    let mut count = 0;
    for path in raw_strings(line, &PATH_KEY) {
        match (path, paths.get_mut(count)) {
            (Some(path), Some(slot)) if !interest.path_matters(&path) => *slot = path,
            _ => return false,
        }
        count += 1;
    }
    count > 0
        && new_file_names
            .iter()
            .flat_map(|key| raw_strings(line, key))
            .all(|name| {
                name.is_some_and(|name| {
                    paths[..count]
                        .iter()
                        .all(|dir| !interest.path_matters(&join_new_path(dir, &name)))
                })
            })
}

/// The string values of the keys `key` finds in the raw line, decoded; `None` for one this cannot
/// decode (unsure).
fn raw_strings<'a>(
    line: &'a str,
    key: &'a Finder<'static>,
) -> impl Iterator<Item = Option<Cow<'a, str>>> + 'a {
    key.find_iter(line.as_bytes()).map(move |at| {
        let rest = &line[at + key.needle().len()..];
        scan::unescape(&rest[..string_end(rest.as_bytes())?])
    })
}

/// Where the string whose contents start `rest` ends (its closing quote), escapes passed over.
fn string_end(rest: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        at += memchr::memchr2(b'"', b'\\', &rest[at..])?;
        if rest[at] == b'"' {
            return Some(at);
        }
        at += 2;
        if at > rest.len() {
            return None;
        }
    }
}

/// A line of a type detection never uses (`open`, `exit`, ... : most of a busy Mac's events), or a
/// change to a file no path of which can matter (writes, closes, creations, renames, links and
/// clones all over the disk), counted without parsing its JSON: its type, version and sequence
/// number read from the raw line. Anything this cannot be sure of (the line not an object, a key
/// twice or not a plain number, no `event`) goes to the full decoder, which judges it as always.
fn skip_unparsed(line: &str, raw_type: RawType, interest: &dyn Interest) -> Option<Meta> {
    let event_type = raw_type.ty;
    let b = line.trim_ascii_start().as_bytes();
    // Paths are searched for only in a line of a type detection decodes.
    let cannot_matter = || match event_type {
        ty if one_file(ty) => no_path_matters(line, interest, &[]),
        event_type::NOTIFY_CREATE | event_type::NOTIFY_RENAME => {
            no_path_matters(line, interest, &[&FILENAME_KEY])
        }
        event_type::NOTIFY_LINK | event_type::NOTIFY_CLONE => {
            no_path_matters(line, interest, &[&TARGET_FILENAME_KEY, &TARGET_NAME_KEY])
        }
        _ => false,
    };
    if decodes(event_type, interest) && !cannot_matter() {
        return None;
    }
    // Keys may not repeat, and these are only ever top-level: one each, or unsure (this is also
    // what makes the type read from the first `event_type` the line's).
    if !one_event_and_type(b, raw_type) {
        return None;
    }
    let version = match raw_number(b, &VERSION_KEY) {
        None => None,
        Some(v) => Some(u32::try_from(v?).ok()?),
    };
    let global_seq_num = match raw_number(b, &GLOBAL_SEQ_KEY) {
        None => None,
        Some(v) => Some(v?),
    };
    // A whole object as far as this tier checks: it starts with `{` (`raw_event_type`) and ends
    // with `}` (looked at last, once the searches above have brought the line into the cache).
    if b.trim_ascii_end().last() != Some(&b'}') {
        return None;
    }
    Some(Meta::new(event_type, version, global_seq_num))
}

/// Decode the event body, or `None` when it cannot matter.
fn decode_kind(
    ty: u32,
    body: &str,
    interest: &dyn Interest,
) -> Result<Option<EventKind>, DecodeError> {
    use event_type::*;
    let path_kind = |path: Cow<str>, make: &dyn Fn(String) -> EventKind| {
        interest
            .path_matters(&path)
            .then(|| make(path.into_owned()))
    };
    Ok(match ty {
        AUTH_EXEC | NOTIFY_EXEC => {
            if interest.lifecycle_matters() {
                // Lineage needs every new image, but not its arguments: the target, read once,
                // also says whether the exec is one of the tools...
                let lite: Wrap<RawExecTarget> = serde_json::from_str(body)?;
                let target = lite.body.target.into_process();
                let tool = interest.exec_matters(&target.executable, target.signing_id.as_deref());
                // ...or unsigned code run as root, which a later kext load may be tied to (both
                // rare, so parsing again for the arguments costs nothing measurable).
                let unsigned_root = target.euid == 0 && target.is_unsigned_or_adhoc();
                if !(tool || unsigned_root) {
                    return Ok(Some(EventKind::Exec(Exec {
                        target,
                        args: Vec::new(),
                        cwd: None,
                    })));
                }
            } else {
                let peek: Wrap<ExecPeek> = serde_json::from_str(body)?;
                let target = &peek.body.target;
                let path = target.executable.as_ref().map(|f| &*f.path).unwrap_or("");
                if !interest.exec_matters(path, target.signing_id.as_deref()) {
                    return Ok(None);
                }
            }
            let full: Wrap<RawExec> = serde_json::from_str(body)?;
            let exec = full.body;
            Some(EventKind::Exec(Exec {
                target: exec.target.into_process(),
                args: exec
                    .args
                    .unwrap_or_default()
                    .into_iter()
                    .map(Cow::into_owned)
                    .collect(),
                cwd: exec.cwd.map(|f| f.path.into_owned()),
            }))
        }
        NOTIFY_CREATE => {
            let w: Wrap<RawCreate> = serde_json::from_str(body)?;
            let path = w
                .body
                .path()
                .ok_or(DecodeError::Missing("create.destination"))?;
            path_kind(path, &|path| EventKind::Create { path })
        }
        NOTIFY_WRITE | NOTIFY_UNLINK | NOTIFY_SETACL | NOTIFY_UTIMES | NOTIFY_TRUNCATE => {
            // Events whose body is only the file they touched.
            let w: Wrap<RawTarget> = serde_json::from_str(body)?;
            let make: fn(String) -> EventKind = match ty {
                NOTIFY_WRITE => |path| EventKind::Write { path },
                NOTIFY_UNLINK => |path| EventKind::Unlink { path },
                NOTIFY_SETACL => |path| EventKind::SetAcl { path },
                NOTIFY_UTIMES => |path| EventKind::Utimes { path },
                _ => |path| EventKind::Truncate { path },
            };
            path_kind(w.body.target.path, &make)
        }
        NOTIFY_CLOSE => {
            let w: Wrap<RawClose> = serde_json::from_str(body)?;
            let modified = w.body.modified.unwrap_or(false);
            path_kind(w.body.target.path, &|path| EventKind::Close {
                path,
                modified,
            })
        }
        NOTIFY_SETMODE => {
            let w: Wrap<RawSetMode> = serde_json::from_str(body)?;
            let mode = w.body.mode.unwrap_or(0);
            path_kind(w.body.target.path, &|path| EventKind::SetMode {
                path,
                mode,
            })
        }
        NOTIFY_SETOWNER => {
            let w: Wrap<RawSetOwner> = serde_json::from_str(body)?;
            let (uid, gid) = (
                w.body.uid.unwrap_or(u32::MAX),
                w.body.gid.unwrap_or(u32::MAX),
            );
            path_kind(w.body.target.path, &|path| EventKind::SetOwner {
                path,
                uid,
                gid,
            })
        }
        NOTIFY_SETEXTATTR | NOTIFY_DELETEEXTATTR => {
            let w: Wrap<RawSetExtattr> = serde_json::from_str(body)?;
            let name = w.body.extattr.map(Cow::into_owned).unwrap_or_default();
            path_kind(w.body.target.path, &|path| {
                let name = name.clone();
                if ty == NOTIFY_SETEXTATTR {
                    EventKind::SetExtattr { path, name }
                } else {
                    EventKind::DeleteExtattr { path, name }
                }
            })
        }
        NOTIFY_RENAME => {
            let mut w: Wrap<RawRename> = serde_json::from_str(body)?;
            let destination = w
                .body
                .destination()
                .ok_or(DecodeError::Missing("rename.destination"))?;
            let source = w.body.source.path;
            (interest.path_matters(&source) || interest.path_matters(&destination)).then(|| {
                EventKind::Rename {
                    source: source.into_owned(),
                    destination: destination.into_owned(),
                }
            })
        }
        NOTIFY_SETFLAGS => {
            let w: Wrap<RawSetFlags> = serde_json::from_str(body)?;
            let flags = w.body.flags.unwrap_or(0);
            path_kind(w.body.target.path, &|path| EventKind::SetFlags {
                path,
                flags,
            })
        }
        NOTIFY_LINK | NOTIFY_CLONE => {
            let w: Wrap<RawLinkOrClone> = serde_json::from_str(body)?;
            let name = w
                .body
                .target_filename
                .or(w.body.target_name)
                .ok_or(DecodeError::Missing("target_filename"))?;
            let destination = join_new_path(&w.body.target_dir.path, &name);
            let source = w.body.source.path;
            (interest.path_matters(&source) || interest.path_matters(&destination)).then(|| {
                let (source, destination) = (source.into_owned(), destination);
                if ty == NOTIFY_LINK {
                    EventKind::Link {
                        source,
                        destination,
                    }
                } else {
                    EventKind::Clone {
                        source,
                        destination,
                    }
                }
            })
        }
        AUTH_KEXTLOAD | NOTIFY_KEXTLOAD => {
            let w: Wrap<RawKext> = serde_json::from_str(body)?;
            Some(EventKind::KextLoad {
                identifier: w.body.identifier.into_owned(),
            })
        }
        NOTIFY_KEXTUNLOAD => {
            let w: Wrap<RawKext> = serde_json::from_str(body)?;
            Some(EventKind::KextUnload {
                identifier: w.body.identifier.into_owned(),
            })
        }
        NOTIFY_FORK if interest.lifecycle_matters() => {
            let w: Wrap<RawFork> = serde_json::from_str(body)?;
            let child = w.body.child.audit_token.unwrap_or_default();
            Some(EventKind::Fork {
                child_pid: child.pid,
                child_pidversion: child.pidversion,
            })
        }
        NOTIFY_SIGNAL => {
            let peek: Wrap<SignalPeek> = serde_json::from_str(body)?;
            let path = peek
                .body
                .target
                .executable
                .as_ref()
                .map_or("", |f| &*f.path);
            if !interest.signal_matters(path) {
                return Ok(None);
            }
            let w: Wrap<RawSignal> = serde_json::from_str(body)?;
            Some(EventKind::Signal {
                signal: w.body.sig.ok_or(DecodeError::Missing("signal.sig"))?,
                target: Box::new(w.body.target.into_process()),
            })
        }
        NOTIFY_SETTIME => Some(EventKind::SetTime),
        NOTIFY_PROFILE_REMOVE => {
            let w: Wrap<RawProfileRemove> = serde_json::from_str(body)?;
            Some(EventKind::ProfileRemoved {
                identifier: w.body.profile.identifier.into_owned(),
                // es_profile_source_t: 0 managed (MDM), 1 installed by hand.
                managed: w.body.profile.install_source == Some(0),
                instigator: w.body.instigator.map(|p| Box::new(p.into_process())),
            })
        }
        NOTIFY_TCC_MODIFY => {
            let w: Wrap<RawTccModify> = serde_json::from_str(body)?;
            let b = w.body;
            Some(EventKind::TccModified {
                service: b.service.into_owned(),
                identity: b.identity.into_owned(),
                update_type: b.update_type.unwrap_or(0),
                right: b.right.unwrap_or(1),
                instigator: b.instigator.map(|p| Box::new(p.into_process())),
            })
        }
        NOTIFY_EXIT if interest.exits_matter() => {
            let w: Wrap<RawExit> = serde_json::from_str(body)?;
            Some(EventKind::Exit {
                status: w.body.stat.unwrap_or(0),
            })
        }
        _ => None,
    })
}

#[derive(Deserialize)]
struct Envelope<'a> {
    event_type: u32,
    #[serde(default)]
    version: Option<u32>,
    #[serde(default, borrow)]
    time: Option<Cow<'a, str>>,
    #[serde(default)]
    seq_num: Option<u64>,
    #[serde(default)]
    global_seq_num: Option<u64>,
    #[serde(default)]
    mach_time: Option<u64>,
    #[serde(default, borrow)]
    process: Option<&'a RawValue>,
    #[serde(default, borrow)]
    event: Option<&'a RawValue>,
}

/// `{"<event name>": body}`: the single key is whatever the event is called, so it is read positionally.
struct Wrap<T> {
    body: T,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Wrap<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Wrap<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object with one event body")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let Some((_, body)) = map.next_entry::<IgnoredAny, T>()? else {
                    return Err(de::Error::custom("empty event object"));
                };
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Wrap { body })
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct RawFile<'a> {
    #[serde(borrow)]
    path: Cow<'a, str>,
}

#[derive(Deserialize)]
struct RawNewPath<'a> {
    #[serde(borrow)]
    dir: RawFile<'a>,
    #[serde(borrow)]
    filename: Cow<'a, str>,
}

impl RawNewPath<'_> {
    fn join(self) -> Cow<'static, str> {
        Cow::Owned(join_new_path(&self.dir.path, &self.filename))
    }
}

/// The path of a new file, from its directory's path and its name.
fn join_new_path(dir: &str, filename: &str) -> String {
    format!("{}/{filename}", dir.trim_end_matches('/'))
}

/// `existing_file` / `new_path` as found under `destination`, or (seen in one public parser) directly
/// under the event body.
#[derive(Deserialize, Default)]
struct RawDestination<'a> {
    #[serde(default, borrow)]
    existing_file: Option<RawFile<'a>>,
    #[serde(default, borrow)]
    new_path: Option<RawNewPath<'a>>,
}

impl<'a> RawDestination<'a> {
    fn path(self) -> Option<Cow<'a, str>> {
        match (self.existing_file, self.new_path) {
            (Some(f), _) => Some(f.path),
            (None, Some(n)) => Some(n.join()),
            (None, None) => None,
        }
    }
}

#[derive(Deserialize)]
struct RawCreate<'a> {
    #[serde(default, borrow)]
    destination: Option<RawDestination<'a>>,
    #[serde(default, borrow)]
    existing_file: Option<RawFile<'a>>,
    #[serde(default, borrow)]
    new_path: Option<RawNewPath<'a>>,
}

impl<'a> RawCreate<'a> {
    fn path(self) -> Option<Cow<'a, str>> {
        resolve_destination(self.destination, self.existing_file, self.new_path)
    }
}

/// The destination under `destination`, else the one placed directly in the body.
fn resolve_destination<'a>(
    nested: Option<RawDestination<'a>>,
    existing_file: Option<RawFile<'a>>,
    new_path: Option<RawNewPath<'a>>,
) -> Option<Cow<'a, str>> {
    nested.and_then(RawDestination::path).or_else(|| {
        RawDestination {
            existing_file,
            new_path,
        }
        .path()
    })
}

#[derive(Deserialize)]
struct RawRename<'a> {
    #[serde(borrow)]
    source: RawFile<'a>,
    #[serde(default, borrow)]
    destination: Option<RawDestination<'a>>,
    #[serde(default, borrow)]
    existing_file: Option<RawFile<'a>>,
    #[serde(default, borrow)]
    new_path: Option<RawNewPath<'a>>,
}

impl<'a> RawRename<'a> {
    fn destination(&mut self) -> Option<Cow<'a, str>> {
        resolve_destination(
            self.destination.take(),
            self.existing_file.take(),
            self.new_path.take(),
        )
    }
}

#[derive(Deserialize)]
struct RawTarget<'a> {
    #[serde(borrow)]
    target: RawFile<'a>,
}

#[derive(Deserialize)]
struct RawSetFlags<'a> {
    #[serde(borrow)]
    target: RawFile<'a>,
    #[serde(default)]
    flags: Option<u32>,
}

/// `link` names the new file `target_filename`, `clone` names it `target_name`.
#[derive(Deserialize)]
struct RawLinkOrClone<'a> {
    #[serde(borrow)]
    source: RawFile<'a>,
    #[serde(borrow)]
    target_dir: RawFile<'a>,
    #[serde(default, borrow)]
    target_filename: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    target_name: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawClose<'a> {
    #[serde(borrow)]
    target: RawFile<'a>,
    #[serde(default)]
    modified: Option<bool>,
}

#[derive(Deserialize)]
struct RawSetMode<'a> {
    #[serde(borrow)]
    target: RawFile<'a>,
    #[serde(default)]
    mode: Option<u32>,
}

#[derive(Deserialize)]
struct RawSetOwner<'a> {
    #[serde(borrow)]
    target: RawFile<'a>,
    #[serde(default)]
    uid: Option<u32>,
    #[serde(default)]
    gid: Option<u32>,
}

#[derive(Deserialize)]
struct RawSetExtattr<'a> {
    #[serde(borrow)]
    target: RawFile<'a>,
    #[serde(default, borrow)]
    extattr: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawKext<'a> {
    #[serde(borrow)]
    identifier: Cow<'a, str>,
}

#[derive(Deserialize)]
struct RawFork {
    child: RawForkChild,
}

#[derive(Deserialize)]
struct RawForkChild {
    #[serde(default)]
    audit_token: Option<AuditToken>,
}

#[derive(Deserialize)]
struct RawExit {
    #[serde(default)]
    stat: Option<i32>,
}

/// Just enough of an exec to decide whether it matters.
#[derive(Deserialize)]
struct ExecPeek<'a> {
    #[serde(borrow)]
    target: PeekProcess<'a>,
}

#[derive(Deserialize)]
struct PeekProcess<'a> {
    #[serde(default, borrow)]
    executable: Option<RawFile<'a>>,
    #[serde(default, borrow)]
    signing_id: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct RawExec<'a> {
    #[serde(borrow)]
    target: RawProcess<'a>,
    #[serde(default, borrow)]
    args: Option<Vec<Cow<'a, str>>>,
    #[serde(default, borrow)]
    cwd: Option<RawFile<'a>>,
}

#[derive(Deserialize)]
struct RawProfile<'a> {
    #[serde(borrow)]
    identifier: Cow<'a, str>,
    #[serde(default)]
    install_source: Option<u32>,
}

#[derive(Deserialize)]
struct RawProfileRemove<'a> {
    #[serde(default, borrow)]
    instigator: Option<RawProcess<'a>>,
    #[serde(borrow)]
    profile: RawProfile<'a>,
}

#[derive(Deserialize)]
struct RawTccModify<'a> {
    #[serde(borrow)]
    service: Cow<'a, str>,
    #[serde(borrow)]
    identity: Cow<'a, str>,
    #[serde(default)]
    update_type: Option<u32>,
    #[serde(default)]
    right: Option<u32>,
    #[serde(default, borrow)]
    instigator: Option<RawProcess<'a>>,
}

#[derive(Deserialize)]
struct SignalPeek<'a> {
    #[serde(borrow)]
    target: PeekProcess<'a>,
}

#[derive(Deserialize)]
struct RawSignal<'a> {
    #[serde(default)]
    sig: Option<i32>,
    #[serde(borrow)]
    target: RawProcess<'a>,
}

#[derive(Deserialize)]
struct RawExecTarget<'a> {
    #[serde(borrow)]
    target: RawProcess<'a>,
}

#[derive(Deserialize, Default)]
struct RawProcess<'a> {
    #[serde(default)]
    audit_token: Option<AuditToken>,
    #[serde(default)]
    parent_audit_token: Option<AuditToken>,
    #[serde(default)]
    responsible_audit_token: Option<AuditToken>,
    #[serde(default)]
    ppid: Option<i32>,
    #[serde(default)]
    original_ppid: Option<i32>,
    #[serde(default)]
    group_id: Option<i32>,
    #[serde(default)]
    session_id: Option<i32>,
    #[serde(default)]
    codesigning_flags: Option<i64>,
    #[serde(default)]
    is_platform_binary: Option<bool>,
    #[serde(default, borrow)]
    cdhash: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    signing_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    team_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    executable: Option<RawFile<'a>>,
    #[serde(default, borrow)]
    tty: Option<RawFile<'a>>,
}

impl RawProcess<'_> {
    fn into_process(self) -> Process {
        let token = self.audit_token.unwrap_or_default();
        let non_empty = |s: Option<Cow<str>>| s.filter(|s| !s.is_empty()).map(Cow::into_owned);
        Process {
            pid: token.pid,
            pidversion: token.pidversion,
            ppid: self.ppid.unwrap_or(0),
            original_ppid: self.original_ppid.unwrap_or(0),
            parent_pidversion: self.parent_audit_token.map(|t| t.pidversion),
            responsible_pid: self.responsible_audit_token.map(|t| t.pid),
            responsible_pidversion: self.responsible_audit_token.map(|t| t.pidversion),
            auid: token.auid,
            euid: token.euid,
            ruid: token.ruid,
            asid: token.asid,
            session_id: self.session_id.unwrap_or(0),
            group_id: self.group_id.unwrap_or(0),
            tty: self
                .tty
                .map(|f| f.path.into_owned())
                .filter(|p| !p.is_empty()),
            executable: self
                .executable
                .map(|f| f.path.into_owned())
                .unwrap_or_default(),
            signing_id: non_empty(self.signing_id),
            team_id: non_empty(self.team_id),
            cdhash: non_empty(self.cdhash),
            // Bit flags: a value written as signed is the same bits.
            cs_flags: self.codesigning_flags.unwrap_or(0) as u32,
            is_platform_binary: self.is_platform_binary.unwrap_or(false),
        }
    }
}

/// `audit_token_t`, written by eslogger as an object, or (message version 10) as an array of the same
/// eight integers in the order auid, euid, egid, ruid, rgid, pid, asid, pidversion.
#[derive(Debug, Clone, Copy)]
struct AuditToken {
    auid: u32,
    euid: u32,
    ruid: u32,
    pid: i32,
    asid: i32,
    pidversion: u32,
}

impl Default for AuditToken {
    fn default() -> Self {
        AuditToken {
            auid: NO_AUDIT_USER,
            euid: 0,
            ruid: 0,
            pid: -1,
            asid: -1,
            pidversion: 0,
        }
    }
}

impl AuditToken {
    /// The array form (message version 10): auid, euid, egid, ruid, rgid, pid, asid, pidversion.
    fn from_array(v: [i64; 8]) -> AuditToken {
        AuditToken {
            auid: id_bits(v[0]),
            euid: id_bits(v[1]),
            ruid: id_bits(v[3]),
            pid: id_bits(v[5]) as i32,
            asid: id_bits(v[6]) as i32,
            pidversion: id_bits(v[7]),
        }
    }

    /// The object form's field `key`, its value read by `value` only if it is one this keeps
    /// (egid and rgid are not); `Ok(false)` for any other key, whose value is the caller's to pass.
    fn read_field<E>(
        &mut self,
        key: &[u8],
        value: impl FnOnce() -> Result<i64, E>,
    ) -> Result<bool, E> {
        match key {
            b"auid" => self.auid = id_bits(value()?),
            b"euid" => self.euid = id_bits(value()?),
            b"ruid" => self.ruid = id_bits(value()?),
            b"pid" => self.pid = id_bits(value()?) as i32,
            b"asid" => self.asid = id_bits(value()?) as i32,
            b"pidversion" => self.pidversion = id_bits(value()?),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Ids are 32-bit; eslogger writes them as unsigned or signed, so take the bits.
fn id_bits(v: i64) -> u32 {
    v as u32
}

impl<'de> Deserialize<'de> for AuditToken {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = AuditToken;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an audit token object or an array of 8 integers")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<AuditToken, A::Error> {
                let mut v = [0i64; 8];
                for (i, slot) in v.iter_mut().enumerate() {
                    *slot = seq
                        .next_element()?
                        .ok_or_else(|| de::Error::invalid_length(i, &self))?;
                }
                if seq.next_element::<IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(9, &self));
                }
                Ok(AuditToken::from_array(v))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AuditToken, A::Error> {
                let mut t = AuditToken::default();
                while let Some(key) = map.next_key::<Cow<str>>()? {
                    if !t.read_field(key.as_bytes(), || map.next_value())? {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(t)
            }
        }
        d.deserialize_any(V)
    }
}

/// The property tests' settings: the same cases on every run (a seed fixed, so CI cannot fail by
/// chance), and a longer or different search with `PROPTEST_CASES` and `PROPTEST_RNG_SEED`.
#[cfg(test)]
fn property_config(cases: u32) -> proptest::prelude::ProptestConfig {
    let default = proptest::prelude::ProptestConfig::default();
    proptest::prelude::ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        rng_seed: match std::env::var_os("PROPTEST_RNG_SEED") {
            Some(_) => default.rng_seed,
            None => proptest::test_runner::RngSeed::Fixed(0x6b65_7874),
        },
        ..default
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::Strategy;
    use proptest::prelude::*;

    /// Detection's interest in miniature: paths under /Library/Extensions matter, no exec is a
    /// tool, and lineage (every exec and fork, no exits) is on or off.
    struct Watching {
        lineage: bool,
    }
    impl Interest for Watching {
        fn exec_matters(&self, _: &str, _: Option<&str>) -> bool {
            false
        }
        fn path_matters(&self, p: &str) -> bool {
            p.starts_with("/Library/Extensions")
        }
        fn lifecycle_matters(&self) -> bool {
            self.lineage
        }
    }
    const LINEAGE: Watching = Watching { lineage: true };
    const NO_LINEAGE: Watching = Watching { lineage: false };

    /// The shortcut as `decode_line` takes it.
    fn skip(line: &str, interest: &dyn Interest) -> Option<Meta> {
        skip_unparsed(line, raw_event_type(line)?, interest)
    }

    fn lineage_in_one_pass(line: &str, interest: &dyn Interest) -> Option<Event> {
        lineage_event(line, raw_event_type(line)?.ty, interest)
    }

    #[test]
    fn the_types_skipped_unparsed_are_exactly_those_the_decoder_never_uses() {
        for interest in [&LINEAGE as &dyn Interest, &crate::event::AllEvents] {
            for ty in 0..256 {
                let decoded = decode_kind(ty, "{}", interest);
                if decodes(ty, interest) {
                    assert!(!matches!(decoded, Ok(None)), "type {ty} is decoded");
                } else {
                    assert!(matches!(decoded, Ok(None)), "type {ty} is never decoded");
                }
            }
        }
    }

    #[test]
    fn a_skipped_line_counts_as_the_full_decoder_would_and_anything_unsure_goes_to_it() {
        let line = r#"{"event":{"open":{"fflag":1,"file":{"path":"/x"}}},"event_type":10,"global_seq_num":77,"process":{"executable":{"path":"/bin/ls"}},"time":"2026-11-25T14:03:12Z","version":7}"#;
        let fast = skip(line, &LINEAGE).unwrap();
        assert_eq!(
            (fast.event_type, fast.version, fast.global_seq_num),
            (10, 7, Some(77))
        );
        // What the full decoder says of the same line.
        let env: Envelope = serde_json::from_str(line).unwrap();
        assert_eq!(
            (env.event_type, env.version, env.global_seq_num),
            (10, Some(7), Some(77))
        );
        // Keys in another order, blanks around the line: the same.
        let reordered = r#" {"event_type":10,"version":7,"global_seq_num":77,"event":{"open":{"fflag":1,"file":{"path":"/x"}}},"process":{"executable":{"path":"/bin/ls"}},"time":"2026-11-25T14:03:12Z"}	"#;
        let fast = skip(reordered, &LINEAGE).unwrap();
        assert_eq!(
            (fast.event_type, fast.version, fast.global_seq_num),
            (10, 7, Some(77))
        );
        // A type detection uses, a truncated line, a repeated key (before or after the type), a
        // value that is not a plain number, no event: not decided here.
        for unsure in [
            line.replace("\"event_type\":10", "\"event_type\":9"),
            line[..line.len() - 1].to_string(),
            line.replace("\"version\":7}", "\"version\":7,\"version\":8}"),
            line.replace("\"version\":7}", "\"version\":7,\"event\":{}}"),
            line.replace("\"version\":7}", "\"version\":7,\"event_type\":10}"),
            line.replace("{\"event\":", "{\"event\":{},\"event\":"),
            line.replace("{\"event\":", "{\"event_type\":9,\"event\":"),
            reordered.replace("\"version\":7,", "\"version\":7,\"event\":{},"),
            reordered.replace("\"version\":7,", "\"version\":7,\"event_type\":10,"),
            line.replace("\"global_seq_num\":77", "\"global_seq_num\":\"77\""),
            line.replace("\"event\":{\"open\"", "\"evt\":{\"open\""),
        ] {
            assert!(skip(&unsure, &LINEAGE).is_none(), "{unsure}");
        }
    }

    #[test]
    fn a_change_to_a_file_that_cannot_matter_is_skipped_unparsed_and_any_doubt_parses() {
        let write = |target: &str, exe: &str| {
            format!(
                r#"{{"event":{{"write":{{"target":{{"path":"{target}","path_truncated":false}}}}}},"event_type":33,"global_seq_num":5,"process":{{"executable":{{"path":"{exe}"}}}},"time":"2026-11-25T14:03:12Z","version":7}}"#
            )
        };
        let skipped = |line: &str| skip(line, &NO_LINEAGE).is_some();
        assert!(skipped(&write("/Users/a/notes.txt", "/usr/bin/vim")));
        // The full decoder gives the same answer for it: skipped.
        assert!(matches!(
            decode_kind(
                33,
                r#"{"write":{"target":{"path":"/Users/a/notes.txt"}}}"#,
                &NO_LINEAGE
            ),
            Ok(None)
        ));
        assert!(!skipped(&write(
            "/Library/Extensions/A.kext/x",
            "/usr/bin/vim"
        )));
        // A path that matters anywhere in the line: parsed.
        assert!(!skipped(&write("/Users/a/x", "/Library/Extensions/helper")));
        // Paths as eslogger writes them (every slash escaped) are read decoded...
        assert!(skipped(&write(
            r"\/Users\/a\/notes.txt",
            r"\/usr\/bin\/vim"
        )));
        assert!(skipped(&write(r#"/Users/a/q\"x\\"#, "/usr/bin/vim")));
        assert!(!skipped(&write(
            r"\/Library\/Extensions\/A.kext",
            "/usr/bin/vim"
        )));
        // ...but a `\u` escape, or a broken one, is left to the full decoder.
        assert!(!skipped(&write(r"\/Users\/a\/\u00e9", "/usr/bin/vim")));
        assert!(!skipped(&write(r"/Users/a/\q", "/usr/bin/vim")));
    }

    #[test]
    fn a_new_file_no_path_of_which_can_matter_is_skipped_unparsed() {
        // A new file (`dir` and `filename`, as eslogger writes it) or an existing one.
        let create = |dir: &str, filename: &str, exe: &str| {
            format!(
                r#"{{"event":{{"create":{{"destination_type":1,"destination":{{"new_path":{{"dir":{{"path":"{dir}","path_truncated":false}},"filename":"{filename}","mode":420}}}}}}}},"event_type":13,"global_seq_num":5,"process":{{"executable":{{"path":"{exe}"}}}},"time":"2026-11-25T14:03:12Z","version":7}}"#
            )
        };
        let existing = |path: &str| {
            format!(
                r#"{{"event":{{"create":{{"destination_type":0,"destination":{{"existing_file":{{"path":"{path}"}}}}}}}},"event_type":13,"global_seq_num":5,"process":{{"executable":{{"path":"\/usr\/bin\/touch"}}}},"time":"2026-11-25T14:03:12Z","version":7}}"#
            )
        };
        let rename = |source: &str, dir: &str, filename: &str| {
            format!(
                r#"{{"event":{{"rename":{{"source":{{"path":"{source}","path_truncated":false}},"destination_type":1,"destination":{{"new_path":{{"dir":{{"path":"{dir}"}},"filename":"{filename}"}}}}}}}},"event_type":25,"global_seq_num":5,"process":{{"executable":{{"path":"\/bin\/mv"}}}},"time":"2026-11-25T14:03:12Z","version":7}}"#
            )
        };
        // A hard link names its file `target_filename`, a clone `target_name`.
        let link = |ty: u32, source: &str, dir: &str, name: &str| {
            let (kind, key) = match ty {
                event_type::NOTIFY_LINK => ("link", "target_filename"),
                _ => ("clone", "target_name"),
            };
            format!(
                r#"{{"event":{{"{kind}":{{"source":{{"path":"{source}"}},"target_dir":{{"path":"{dir}"}},"{key}":"{name}"}}}},"event_type":{ty},"global_seq_num":5,"process":{{"executable":{{"path":"\/bin\/cp"}}}},"time":"2026-11-25T14:03:12Z","version":7}}"#
            )
        };
        let (link_, clone) = (event_type::NOTIFY_LINK, event_type::NOTIFY_CLONE);
        for interest in [&LINEAGE, &NO_LINEAGE] {
            let raw = |line: &str| skip(line, interest).is_some();
            // serde_json's answer, the reference.
            let decoded = |line: &str| match decode_parsed(line, interest) {
                Ok(Decoded::Skipped(_)) => "skipped",
                Ok(Decoded::Event(_)) => "event",
                Err(_) => "error",
            };
            // Skipped from the raw line, and the full decoder agrees.
            for line in [
                create(r"\/Users\/a\/Library\/Caches", "c26", "/usr/bin/vim"),
                existing(r"\/private\/tmp\/x"),
                // An editor's atomic save.
                rename(r"\/Users\/a\/.notes.txt.swp", r"\/Users\/a", "notes.txt"),
                link(link_, "/Users/a/x", "/Users/a", "y"),
                link(clone, "/Users/a/x.mov", "/Users/a/Movies", "x.mov"),
            ] {
                assert!(raw(&line), "{line}");
                assert_eq!(decoded(&line), "skipped", "{line}");
            }
            // The new file's path matters, though neither part does alone, or the existing
            // file's does: an event.
            for line in [
                create(r"\/Library\/", "Extensions", "/usr/bin/vim"),
                create("/Library/Extensions", "A.kext", "/usr/bin/vim"),
                existing("/Library/Extensions/A.kext"),
                // A kext moved into place, or out of it.
                rename("/private/tmp/A.kext", r"\/Library\/Extensions", "A.kext"),
                rename("/Library/Extensions/A.kext", "/private/tmp", "A.kext"),
                // Only the new file's whole path matters.
                link(link_, "/private/tmp/kext", r"\/Library", "Extensions"),
                link(clone, "/private/tmp/x", "/Library/", "Extensions"),
            ] {
                assert!(!raw(&line), "{line}");
                assert_eq!(decoded(&line), "event", "{line}");
            }
            // Another path in the line matters, or a name or path this cannot decode: the full
            // decoder's to judge.
            for line in [
                create("/tmp", "x", "/Library/Extensions/helper"),
                create("/tmp", r"\u0041", "/usr/bin/vim"),
                create(r"\u002ftmp", "x", "/usr/bin/vim"),
            ] {
                assert!(!raw(&line), "{line}");
                assert_eq!(decoded(&line), "skipped", "{line}");
            }
        }
    }

    /// Test lines: the bundled sample's (generated as eslogger writes them), a real capture's, and
    /// the real capture's again with audit tokens as arrays (message version 10).
    fn corpus() -> Vec<String> {
        let sample = include_str!("../../../examples/kext-attack.jsonl");
        let real = include_str!("../../../tests/fixtures/eslogger-public/mullvadvpn-app.jsonl");
        fn tokens_as_arrays(v: &mut serde_json::Value) {
            match v {
                serde_json::Value::Object(map) => {
                    for (key, value) in map.iter_mut() {
                        if key.ends_with("audit_token") && value.is_object() {
                            let field = |k: &str| value[k].clone();
                            *value = serde_json::Value::Array(
                                [
                                    "auid",
                                    "euid",
                                    "egid",
                                    "ruid",
                                    "rgid",
                                    "pid",
                                    "asid",
                                    "pidversion",
                                ]
                                .map(field)
                                .to_vec(),
                            );
                        } else {
                            tokens_as_arrays(value);
                        }
                    }
                }
                serde_json::Value::Array(items) => items.iter_mut().for_each(tokens_as_arrays),
                _ => {}
            }
        }
        let version_10 = real.lines().map(|line| {
            let mut v: serde_json::Value = serde_json::from_str(line).unwrap();
            tokens_as_arrays(&mut v);
            v["version"] = 10.into();
            serde_json::to_string(&v).unwrap().replace('/', "\\/")
        });
        sample
            .lines()
            .chain(real.lines())
            .map(String::from)
            .chain(version_10)
            .collect()
    }

    /// [`corpus`] lines, each also with a byte or two replaced, inserted or removed, so that many
    /// are broken in some way and many more are valid JSON of an unexpected shape.
    fn lines_and_mutants() -> impl Strategy<Value = String> {
        let lines = corpus();
        let byte = prop::sample::select(b"\"\\/{}[],:0123456789.eE-+ \tfnul\x01\x7fa".to_vec());
        // 0: replace, 1: insert before, 2: remove.
        let edit = (any::<prop::sample::Index>(), 0..3u8, byte);
        (
            prop::sample::select(lines),
            prop::collection::vec(edit, 0..3),
        )
            .prop_map(|(line, edits)| {
                let mut bytes = line.as_bytes().to_vec();
                for (at, how, byte) in edits {
                    let i = at.index(bytes.len());
                    match how {
                        0 => bytes[i] = byte,
                        1 => bytes.insert(i, byte),
                        _ => {
                            bytes.remove(i);
                        }
                    }
                }
                String::from_utf8_lossy(&bytes).into_owned()
            })
    }

    /// `line` with every value emptied that the one-pass reader may pass over without checking
    /// its tokens (`Scan::pass_over_flat`: a `stat` block, an exec's `env` or `args`, an audit
    /// token, up to their first closing bracket, if nothing before it is a bracket or an escape
    /// but `\/`, and quotes are paired) and that is not valid JSON: the line as that reader sees
    /// it.
    fn flat_values_emptied(line: &str) -> String {
        let flat = |inside: &str| {
            let b = inside.as_bytes();
            let escapes_ok = (0..b.len()).all(|i| b[i] != b'\\' || b.get(i + 1) == Some(&b'/'));
            inside.matches('"').count() % 2 == 0
                && !inside.contains(['{', '[', '}', ']'])
                && escapes_ok
        };
        let mut line = line.to_string();
        let passed_over = [
            ("\"stat\":{", '}'),
            ("\"env\":[", ']'),
            ("\"args\":[", ']'),
            ("\"audit_token\":{", '}'),
            ("\"audit_token\":[", ']'),
            ("\"parent_audit_token\":{", '}'),
            ("\"parent_audit_token\":[", ']'),
            ("\"responsible_audit_token\":{", '}'),
            ("\"responsible_audit_token\":[", ']'),
        ];
        for (key, close) in passed_over {
            let (mut out, mut rest) = (String::new(), line.as_str());
            while let Some(at) = rest.find(key) {
                let (before, value) = rest.split_at(at + key.len());
                out.push_str(before);
                let valid = |end: usize| {
                    let whole = &rest[at + key.len() - 1..][..end + 2];
                    serde_json::from_str::<IgnoredAny>(whole).is_ok()
                };
                rest = match value.find(close) {
                    Some(end) if flat(&value[..end]) && !valid(end) => &value[end..],
                    _ => value,
                };
            }
            line = out + rest;
        }
        line
    }

    /// Every one-pass reading of `line` (the envelope, the lineage and create shortcuts) that is
    /// sure of itself gives what serde_json gives, or, for a line serde_json refuses, what it
    /// gives with the values passed over unchecked emptied; the difference otherwise.
    fn one_pass_agrees_with_serde_json(line: &str, interest: &dyn Interest) -> Result<(), String> {
        // Emptying moves what follows, so an error there is compared without its position.
        fn unplaced(answer: &str) -> String {
            match answer.split_once(", line: ") {
                Some((before, after)) => {
                    before.to_string() + after.trim_start_matches(|c| c != ')')
                }
                None => answer.to_string(),
            }
        }
        let serde = decode_with_serde(line, interest);
        let lenient = match &serde {
            Err(_) => unplaced(&format!(
                "{:?}",
                decode_with_serde(&flat_values_emptied(line), interest)
            )),
            Ok(_) => String::new(),
        };
        let reference = format!("{serde:?}");
        let mut answers = vec![("envelope", format!("{:?}", decode_parsed(line, interest)))];
        if let Some(ty) = raw_event_type(line).map(|t| t.ty) {
            if let Some(event) = lineage_event(line, ty, interest) {
                let event: Result<Decoded, DecodeError> = Ok(Decoded::Event(Box::new(event)));
                answers.push(("lineage", format!("{event:?}")));
            }
            if let Some(decoded) = create_in_one_pass(line, ty, interest) {
                answers.push(("create", format!("{:?}", Ok::<_, DecodeError>(decoded))));
            }
        }
        // The raw-line tier checks no tokens at all, so it answers for valid lines only.
        if let (Ok(_), Some(meta)) = (&serde, skip(line, interest)) {
            answers.push((
                "raw line",
                format!("{:?}", Ok::<_, DecodeError>(Decoded::Skipped(meta))),
            ));
        }
        let differs = |answer: &String| *answer != reference && unplaced(answer) != lenient;
        match answers.into_iter().find(|(_, answer)| differs(answer)) {
            Some((path, answer)) => Err(format!(
                "{path}: {answer}\nserde_json: {reference}\nflat values emptied: {lenient}\nline: {line}"
            )),
            None => Ok(()),
        }
    }

    proptest::proptest! {
        #![proptest_config(property_config(3000))]
        /// Whatever the one-pass reader is sure of, serde_json decodes to the same event, skip or
        /// error; and the lineage exec it reads is the event serde_json makes.
        #[test]
        fn the_one_pass_reader_decodes_as_serde_json_does(line in lines_and_mutants()) {
            for interest in [&LINEAGE as &dyn Interest, &NO_LINEAGE, &crate::event::AllEvents] {
                if let Err(difference) = one_pass_agrees_with_serde_json(&line, interest) {
                    proptest::prop_assert!(false, "{}", difference);
                }
            }
        }
    }

    /// Where each number in a JSON line is (outside strings), as byte ranges.
    fn number_spans(line: &str) -> Vec<std::ops::Range<usize>> {
        let b = line.as_bytes();
        let (mut spans, mut in_string, mut i) = (Vec::new(), false, 0);
        while i < b.len() {
            match b[i] {
                b'\\' if in_string => i += 1,
                b'"' => in_string = !in_string,
                b'-' | b'0'..=b'9' if !in_string => {
                    let start = i;
                    while i < b.len()
                        && matches!(b[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                    {
                        i += 1;
                    }
                    spans.push(start..i);
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
        spans
    }

    #[test]
    fn every_number_replaced_by_an_edge_case_decodes_as_serde_json_does() {
        // One line of each event type and message version in the corpus: each number in turn
        // becomes a value at or past some boundary serde_json draws.
        let corpus = corpus();
        let mut seen = std::collections::BTreeSet::new();
        let lines = corpus.iter().filter(|l| {
            let version = l.contains(r#""version":10"#);
            seen.insert((raw_event_type(l).map(|t| t.ty), version))
        });
        let edges = [
            "-0",
            "0",
            "-1",
            "1.0",
            "1e2",
            "-0.0",
            "2147483648",
            "4294967296",
            "-2147483649",
            "9223372036854775808",
            "18446744073709551616",
            "null",
            "true",
            "\"7\"",
            "[]",
            "{}",
        ];
        let mut compared = 0;
        for line in lines {
            for span in number_spans(line) {
                for edge in edges {
                    let changed = format!("{}{edge}{}", &line[..span.start], &line[span.end..]);
                    for interest in [&LINEAGE as &dyn Interest, &crate::event::AllEvents] {
                        one_pass_agrees_with_serde_json(&changed, interest).unwrap();
                        compared += 1;
                    }
                }
            }
        }
        assert!(compared > 10_000, "{compared}");
    }

    #[test]
    fn an_exec_or_fork_read_in_one_pass_is_the_event_the_full_decoder_makes() {
        // Real eslogger lines (their own key order), the same with array audit tokens, and the
        // sample's; every exec variant the shortcut must leave alone below.
        let real = include_str!("../../../tests/fixtures/eslogger-public/mullvadvpn-app.jsonl");
        let mut one_pass = std::collections::BTreeSet::new();
        for line in corpus() {
            let Some(fast) = lineage_in_one_pass(&line, &LINEAGE) else {
                continue;
            };
            one_pass.insert((
                raw_event_type(&line).map(|t| t.ty),
                line.contains(r#""version":10"#),
            ));
            match decode_parsed(&line, &LINEAGE).unwrap() {
                Decoded::Event(full) => assert_eq!(fast, *full),
                Decoded::Skipped(_) => panic!("the full decoder skips {line}"),
            }
        }
        // (The real capture's fork is version 10 already.)
        let taken = [(Some(9), false), (Some(9), true), (Some(11), true)];
        assert!(taken.iter().all(|t| one_pass.contains(t)), "{one_pass:?}");
        let creates = corpus()
            .iter()
            .filter(|l| {
                create_in_one_pass(l, raw_event_type(l).map_or(0, |t| t.ty), &LINEAGE).is_some()
            })
            .count();
        assert!(creates > 50, "{creates} creations read in one pass");
        // A tool's exec needs its arguments: the full decoder reads it.
        for line in real.lines().filter(|l| l.contains("\"event_type\":9")) {
            assert!(
                lineage_in_one_pass(line, &crate::event::AllEvents).is_none(),
                "a tool: {line}"
            );
        }
        // No lineage (an interest without it): never.
        for line in real.lines() {
            assert!(lineage_in_one_pass(line, &NO_LINEAGE).is_none());
        }
    }

    #[test]
    fn audit_token_array_and_object_agree() {
        let obj: AuditToken = serde_json::from_str(
            r#"{"auid":501,"euid":0,"egid":0,"ruid":0,"rgid":0,"pid":812,"asid":100017,"pidversion":2301}"#,
        )
        .unwrap();
        let arr: AuditToken = serde_json::from_str("[501,0,0,0,0,812,100017,2301]").unwrap();
        assert_eq!(
            (obj.auid, obj.pid, obj.asid, obj.pidversion),
            (501, 812, 100017, 2301)
        );
        assert_eq!(
            (arr.auid, arr.pid, arr.asid, arr.pidversion),
            (501, 812, 100017, 2301)
        );
        assert!(serde_json::from_str::<AuditToken>("[1,2,3]").is_err());
        assert!(serde_json::from_str::<AuditToken>("[1,2,3,4,5,6,7,8,9]").is_err());
    }

    #[test]
    fn auid_unset_is_all_ones() {
        let t: AuditToken = serde_json::from_str(
            r#"{"auid":4294967295,"euid":0,"ruid":0,"pid":1,"asid":0,"pidversion":1}"#,
        )
        .unwrap();
        assert_eq!(t.auid, NO_AUDIT_USER);
    }
}
