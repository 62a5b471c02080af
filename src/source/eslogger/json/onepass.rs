//! The decoder's structures read in one pass with [`Scan`] instead of serde_json: the same
//! structures, the same meaning of every field (missing, `null`, the two audit token forms), but
//! `None` wherever the reader is unsure, and then the serde path decides.
//!
//! Only what the hot shortcuts need: an exec as lineage records it, and the process objects in it.

use std::borrow::Cow;

use super::scan::Scan;
use super::{
    AuditToken, RawCreate, RawDestination, RawExecTarget, RawFile, RawFork, RawForkChild,
    RawNewPath, RawProcess, Wrap,
};

/// Marks field `index` read; `None` the second time, as serde's derive refuses a field given twice.
fn first(seen: &mut u32, index: u32) -> Option<()> {
    let bit = 1 << index;
    if *seen & bit != 0 {
        return None;
    }
    *seen |= bit;
    Some(())
}

/// The envelope as [`super::Envelope`] reads it, with the process read by `process` ([`process`],
/// or [`process_text`] to keep it for later) and the event body by `body` ([`Scan::raw`] keeps
/// it as text, as `Envelope` does).
pub(super) struct Envelope<'a, P, B> {
    pub event_type: u32,
    pub version: Option<u32>,
    pub time: Option<Cow<'a, str>>,
    pub seq_num: Option<u64>,
    pub global_seq_num: Option<u64>,
    pub mach_time: Option<u64>,
    pub process: Option<P>,
    pub event: Option<B>,
}

impl<'a, P, B> Envelope<'a, P, B> {
    /// The same envelope, its process (if any) turned into another form by `read`; `None` if
    /// `read` is unsure.
    pub fn map_process<Q>(self, read: impl FnOnce(P) -> Option<Q>) -> Option<Envelope<'a, Q, B>> {
        Some(Envelope {
            event_type: self.event_type,
            version: self.version,
            time: self.time,
            seq_num: self.seq_num,
            global_seq_num: self.global_seq_num,
            mach_time: self.mach_time,
            process: match self.process {
                Some(p) => Some(read(p)?),
                None => None,
            },
            event: self.event,
        })
    }
}

/// A whole line. The process is read here, not kept as text, where one pass is the point.
pub(super) fn envelope<'a, P, B>(
    line: &'a str,
    process: impl FnOnce(&mut Scan<'a>) -> Option<P>,
    body: impl FnOnce(&mut Scan<'a>) -> Option<B>,
) -> Option<Envelope<'a, P, B>> {
    let mut scan = Scan::new(line);
    let mut body = Some(body);
    let mut process = Some(process);
    let mut env = Envelope {
        event_type: 0,
        version: None,
        time: None,
        seq_num: None,
        global_seq_num: None,
        mach_time: None,
        process: None,
        event: None,
    };
    let mut event_type = None;
    let mut seen = 0;
    scan.object(|scan, key| {
        match key {
            b"event_type" => {
                first(&mut seen, 0)?;
                event_type = Some(scan.int()?);
            }
            b"version" => {
                first(&mut seen, 1)?;
                env.version = scan.nullable(Scan::int)?;
            }
            b"time" => {
                first(&mut seen, 2)?;
                env.time = scan.nullable_str()?;
            }
            b"seq_num" => {
                first(&mut seen, 3)?;
                env.seq_num = scan.nullable(Scan::int)?;
            }
            b"global_seq_num" => {
                first(&mut seen, 4)?;
                env.global_seq_num = scan.nullable(Scan::int)?;
            }
            b"mach_time" => {
                first(&mut seen, 5)?;
                env.mach_time = scan.nullable(Scan::int)?;
            }
            b"process" => {
                first(&mut seen, 6)?;
                if scan.peek_is(b'n') {
                    scan.nullable(|_| None::<()>)?;
                } else {
                    env.process = Some(process.take()?(scan)?);
                }
            }
            b"event" => {
                first(&mut seen, 7)?;
                env.event = scan.nullable(body.take()?)?;
            }
            _ => scan.skip()?,
        }
        Some(())
    })?;
    scan.finish()?;
    env.event_type = event_type?;
    Some(env)
}

/// [`envelope`] of a line whose type the caller read from the raw line as `ty`: `None` if the
/// envelope says otherwise (the raw read takes the first `event_type` key it finds).
pub(super) fn envelope_of<'a, P, B>(
    line: &'a str,
    ty: u32,
    process: impl FnOnce(&mut Scan<'a>) -> Option<P>,
    body: impl FnOnce(&mut Scan<'a>) -> Option<B>,
) -> Option<Envelope<'a, P, B>> {
    envelope(line, process, body).filter(|env| env.event_type == ty)
}

/// A process object, read.
pub(super) fn process<'a>(scan: &mut Scan<'a>) -> Option<RawProcess<'a>> {
    let mut p = RawProcess::default();
    process_object(scan, &mut p)?;
    Some(p)
}

/// A process object kept as text, its audit tokens and files passed over as lineage's readers
/// pass those it does not read: for a line that may turn out not to matter.
pub(super) fn process_text<'a>(scan: &mut Scan<'a>) -> Option<&'a str> {
    scan.span(|scan| {
        scan.object(|scan, key| match key {
            b"audit_token" | b"parent_audit_token" | b"responsible_audit_token" => {
                scan.pass_over_flat()
            }
            b"executable" | b"tty" => pass_over_file(scan),
            _ => scan.skip(),
        })
    })
}

/// The process [`process_text`] kept, read.
pub(super) fn process_from_text(text: &str) -> Option<RawProcess<'_>> {
    let mut scan = Scan::new(text);
    let p = process(&mut scan)?;
    scan.finish()?;
    Some(p)
}

/// `{"exec": {"target": {...}, ...}}`: the first entry's value, whatever its key, as [`Wrap`] reads it.
pub(super) fn exec_body<'a>(scan: &mut Scan<'a>) -> Option<Wrap<RawExecTarget<'a>>> {
    let mut target = None;
    first_entry(scan, |scan| {
        let mut seen = 0;
        scan.object(|scan, key| match key {
            b"target" => {
                first(&mut seen, 0)?;
                process_object(scan, target.insert(RawProcess::default()))?;
                Some(())
            }
            b"cwd" => pass_over_file(scan),
            b"env" | b"args" => scan.pass_over_flat(),
            _ => scan.skip(),
        })
    })?;
    Some(Wrap {
        body: RawExecTarget { target: target? },
    })
}

/// `{"fork": {"child": {...}, ...}}`, as `Wrap<RawFork>` reads it: of the child, only its audit
/// token (its other tokens, flat, passed over).
pub(super) fn fork_body(scan: &mut Scan<'_>) -> Option<Wrap<RawFork>> {
    let mut child = None;
    first_entry(scan, |scan| {
        let mut seen = 0;
        scan.object(|scan, key| match key {
            b"child" => {
                first(&mut seen, 0)?;
                let mut audit_token = None;
                let mut seen_token = 0;
                scan.object(|scan, key| match key {
                    b"audit_token" => {
                        first(&mut seen_token, 0)?;
                        audit_token = scan.nullable(audit_token_value)?;
                        Some(())
                    }
                    b"executable" | b"tty" => pass_over_file(scan),
                    b"parent_audit_token" | b"responsible_audit_token" => scan.pass_over_flat(),
                    _ => scan.skip(),
                })?;
                child = Some(RawForkChild { audit_token });
                Some(())
            }
            _ => scan.skip(),
        })
    })?;
    Some(Wrap {
        body: RawFork { child: child? },
    })
}

/// `{"create": {"destination_type": ..., "destination": {...}}}`, as `Wrap<RawCreate>` reads it
/// (the destination nested or, as one public parser writes it, directly in the body).
pub(super) fn create_body<'a>(scan: &mut Scan<'a>) -> Option<Wrap<RawCreate<'a>>> {
    let mut create = None;
    first_entry(scan, |scan| {
        let (mut destination, mut existing_file, mut new_path) = (None, None, None);
        let mut seen = 0;
        scan.object(|scan, key| {
            match key {
                b"destination" => {
                    first(&mut seen, 0)?;
                    destination = scan.nullable(destination_object)?;
                }
                b"existing_file" => {
                    first(&mut seen, 1)?;
                    existing_file = scan.nullable(file)?;
                }
                b"new_path" => {
                    first(&mut seen, 2)?;
                    new_path = scan.nullable(new_path_object)?;
                }
                _ => scan.skip()?,
            }
            Some(())
        })?;
        create = Some(RawCreate {
            destination,
            existing_file,
            new_path,
        });
        Some(())
    })?;
    Some(Wrap { body: create? })
}

fn destination_object<'a>(scan: &mut Scan<'a>) -> Option<RawDestination<'a>> {
    let mut d = RawDestination::default();
    let mut seen = 0;
    scan.object(|scan, key| {
        match key {
            b"existing_file" => {
                first(&mut seen, 0)?;
                d.existing_file = scan.nullable(file)?;
            }
            b"new_path" => {
                first(&mut seen, 1)?;
                d.new_path = scan.nullable(new_path_object)?;
            }
            _ => scan.skip()?,
        }
        Some(())
    })?;
    Some(d)
}

/// `{"dir": {...}, "filename": ...}`, both required.
fn new_path_object<'a>(scan: &mut Scan<'a>) -> Option<RawNewPath<'a>> {
    let (mut dir, mut filename) = (None, None);
    let mut seen = 0;
    scan.object(|scan, key| {
        match key {
            b"dir" => {
                first(&mut seen, 0)?;
                dir = Some(file(scan)?);
            }
            b"filename" => {
                first(&mut seen, 1)?;
                filename = Some(scan.str()?);
            }
            _ => scan.skip()?,
        }
        Some(())
    })?;
    Some(RawNewPath {
        dir: dir?,
        filename: filename?,
    })
}

/// An event object: its first entry's value read by `read`, whatever the key; the rest passed
/// over. An empty object is unsure (serde_json refuses it).
fn first_entry<'a>(
    scan: &mut Scan<'a>,
    mut read: impl FnMut(&mut Scan<'a>) -> Option<()>,
) -> Option<()> {
    let mut entries = 0;
    scan.object(|scan, _| {
        entries += 1;
        if entries > 1 {
            return scan.skip();
        }
        read(scan)
    })?;
    (entries > 0).then_some(())
}

/// An eslogger process object (never `null` where this is used).
fn process_object<'a>(scan: &mut Scan<'a>, p: &mut RawProcess<'a>) -> Option<()> {
    let mut seen = 0;
    scan.object(|scan, key| {
        match key {
            b"audit_token" => {
                first(&mut seen, 0)?;
                p.audit_token = scan.nullable(audit_token_value)?;
            }
            b"parent_audit_token" => {
                first(&mut seen, 1)?;
                p.parent_audit_token = scan.nullable(audit_token_value)?;
            }
            b"responsible_audit_token" => {
                first(&mut seen, 2)?;
                p.responsible_audit_token = scan.nullable(audit_token_value)?;
            }
            b"ppid" => {
                first(&mut seen, 3)?;
                p.ppid = scan.nullable(Scan::int)?;
            }
            b"original_ppid" => {
                first(&mut seen, 4)?;
                p.original_ppid = scan.nullable(Scan::int)?;
            }
            b"group_id" => {
                first(&mut seen, 5)?;
                p.group_id = scan.nullable(Scan::int)?;
            }
            b"session_id" => {
                first(&mut seen, 6)?;
                p.session_id = scan.nullable(Scan::int)?;
            }
            b"codesigning_flags" => {
                first(&mut seen, 7)?;
                p.codesigning_flags = scan.nullable(Scan::int)?;
            }
            b"is_platform_binary" => {
                first(&mut seen, 8)?;
                p.is_platform_binary = scan.nullable(Scan::bool)?;
            }
            b"cdhash" => {
                first(&mut seen, 9)?;
                p.cdhash = scan.nullable_str()?;
            }
            b"signing_id" => {
                first(&mut seen, 10)?;
                p.signing_id = scan.nullable_str()?;
            }
            b"team_id" => {
                first(&mut seen, 11)?;
                p.team_id = scan.nullable_str()?;
            }
            b"executable" => {
                first(&mut seen, 12)?;
                p.executable = scan.nullable(file)?;
            }
            b"tty" => {
                first(&mut seen, 13)?;
                p.tty = scan.nullable(file)?;
            }
            _ => scan.skip()?,
        }
        Some(())
    })
}

/// `{"path": ..., "stat": ...}` (the stat block passed over unchecked: [`Scan::pass_over_flat`]).
fn file<'a>(scan: &mut Scan<'a>) -> Option<RawFile<'a>> {
    let mut path = None;
    scan.object(|scan, key| match key {
        b"path" if path.is_none() => {
            path = Some(scan.str()?);
            Some(())
        }
        b"path" => None,
        b"stat" => scan.pass_over_flat(),
        _ => scan.skip(),
    })?;
    Some(RawFile { path: path? })
}

/// A file nothing reads (an exec's `cwd`, a fork child's executable): passed over, its stat
/// block as [`file`] passes it, its path not decoded.
fn pass_over_file(scan: &mut Scan<'_>) -> Option<()> {
    if !scan.peek_is(b'{') {
        return scan.skip();
    }
    scan.object(|scan, key| match key {
        b"stat" => scan.pass_over_flat(),
        _ => scan.skip(),
    })
}

/// An audit token in either form [`AuditToken`]'s deserializer takes: an object (a key given twice
/// counts the last time, as there), or an array of exactly eight integers.
fn audit_token_value(scan: &mut Scan<'_>) -> Option<AuditToken> {
    if scan.peek_is(b'[') {
        let mut v = [0i64; 8];
        let mut n = 0;
        scan.array(|scan| {
            *v.get_mut(n)? = scan.int()?;
            n += 1;
            Some(())
        })?;
        return (n == 8).then(|| AuditToken::from_array(v));
    }
    let mut t = AuditToken::default();
    if scan
        .compact_ints(|key, v| {
            let _ = t.read_field(key, || Ok::<_, ()>(v));
        })
        .is_some()
    {
        return Some(t);
    }
    t = AuditToken::default();
    scan.object(|scan, key| {
        if !t.read_field(key, || scan.int().ok_or(())).ok()? {
            scan.skip()?;
        }
        Some(())
    })?;
    Some(t)
}
