//! Builds eslogger JSON lines in the full format eslogger writes (complete process objects with audit
//! tokens, stat blocks, exec env and fds), for tests, the bundled sample and the benchmark.
use serde_json::{json, Value};

pub const CS_VALID: u32 = 0x1;
pub const CS_ADHOC: u32 = 0x2;
pub const CS_HARD: u32 = 0x100;
pub const CS_KILL: u32 = 0x200;
pub const CS_RUNTIME: u32 = 0x10000;
pub const CS_PLATFORM_BINARY: u32 = 0x400_0000;
pub const CS_SIGNED: u32 = 0x2000_0000;
pub const NO_AUID: u32 = u32::MAX;

/// 2026-11-25T14:03:12Z
pub const BASE_NS: i64 = 1_795_615_392_000_000_000;

#[derive(Clone, Debug)]
pub struct Proc {
    pub pid: i32,
    pub pidversion: u32,
    pub ppid: i32,
    /// The parent image's pidversion (its `parent_audit_token`).
    pub ppidversion: u32,
    pub auid: u32,
    pub euid: u32,
    pub asid: i32,
    pub exe: String,
    pub signing_id: Option<String>,
    pub team_id: Option<String>,
    pub cdhash: String,
    pub flags: u32,
    pub platform: bool,
    pub tty: Option<String>,
}

/// The pidversion a fixture process starts with (a fresh process from fork).
fn pidversion_of(pid: i32) -> u32 {
    (pid as u32).wrapping_mul(7) + 100
}

fn cdhash_for(s: &str) -> String {
    // Stable fake 40-hex cdhash derived from the name (FNV-1a, repeated).
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    format!(
        "{:016x}{:016x}{:08x}",
        h,
        h.rotate_left(17),
        (h >> 7) as u32
    )
}

impl Proc {
    /// An Apple platform binary.
    pub fn apple(pid: i32, ppid: i32, exe: &str, signing_id: &str) -> Proc {
        Proc {
            pid,
            pidversion: pidversion_of(pid),
            ppid,
            ppidversion: pidversion_of(ppid),
            auid: NO_AUID,
            euid: 0,
            asid: 100_000,
            exe: exe.into(),
            signing_id: Some(signing_id.into()),
            team_id: None,
            cdhash: cdhash_for(exe),
            flags: CS_VALID | CS_SIGNED | CS_PLATFORM_BINARY | CS_HARD | CS_KILL | CS_RUNTIME,
            platform: true,
            tty: None,
        }
    }

    /// A Developer ID signed third-party binary.
    pub fn developer(pid: i32, ppid: i32, exe: &str, signing_id: &str, team: &str) -> Proc {
        Proc {
            team_id: Some(team.into()),
            flags: CS_VALID | CS_SIGNED | CS_HARD | CS_KILL | CS_RUNTIME,
            platform: false,
            ..Proc::apple(pid, ppid, exe, signing_id)
        }
    }

    /// An ad-hoc signed binary (no identity behind the signature).
    pub fn adhoc(pid: i32, ppid: i32, exe: &str) -> Proc {
        let name = exe.rsplit('/').next().unwrap_or(exe);
        Proc {
            signing_id: Some(format!("{name}-55554944{}", &cdhash_for(exe)[..8])),
            team_id: None,
            flags: CS_VALID | CS_SIGNED | CS_ADHOC,
            platform: false,
            ..Proc::apple(pid, ppid, exe, "")
        }
    }

    /// Run by a logged-in user from a terminal.
    pub fn in_terminal(mut self, uid: u32, euid: u32, tty: &str, asid: i32) -> Proc {
        self.auid = uid;
        self.euid = euid;
        self.tty = Some(tty.into());
        self.asid = asid;
        self
    }

    /// The same process after exec of `target`: the pid is kept and the pidversion bumped, as xnu does.
    pub fn exec_into(&self, exe: &str, signing_id: &str) -> Proc {
        Proc {
            pidversion: self.pidversion + 1,
            exe: exe.into(),
            signing_id: Some(signing_id.into()),
            team_id: None,
            cdhash: cdhash_for(exe),
            flags: CS_VALID | CS_SIGNED | CS_PLATFORM_BINARY | CS_HARD | CS_KILL | CS_RUNTIME,
            platform: true,
            ..self.clone()
        }
    }

    fn token(&self, pid: i32, pidversion: u32, version: u32) -> Value {
        let (auid, euid) = (self.auid, self.euid);
        if version == 10 {
            json!([auid, euid, 0, euid, 0, pid, self.asid, pidversion])
        } else {
            json!({"auid": auid, "euid": euid, "egid": 0, "ruid": euid, "rgid": 0, "pid": pid,
                   "asid": self.asid, "pidversion": pidversion})
        }
    }

    /// The child of a fork: an image of this process with a new pid, before it execs anything.
    pub fn forked(&self, child_pid: i32) -> Proc {
        Proc {
            pid: child_pid,
            pidversion: pidversion_of(child_pid),
            ppid: self.pid,
            ppidversion: self.pidversion,
            ..self.clone()
        }
    }

    pub fn json(&self, version: u32) -> Value {
        let mut p = json!({
            "audit_token": self.token(self.pid, self.pidversion, version),
            "ppid": self.ppid,
            "original_ppid": self.ppid,
            "group_id": self.pid,
            "session_id": self.asid,
            "codesigning_flags": self.flags,
            "is_platform_binary": self.platform,
            "is_es_client": false,
            "cdhash": self.cdhash,
            "signing_id": self.signing_id,
            "team_id": self.team_id,
            "executable": file(&self.exe, 0o100755, 0),
            "tty": self.tty.as_ref().map(|t| file(t, 0o20620, self.auid)),
            "start_time": "2026-11-20T13:58:01.004512000Z",
            "parent_audit_token": self.token(self.ppid, self.ppidversion, version),
            "responsible_audit_token": self.token(self.pid, self.pidversion, version),
        });
        if version >= 10 {
            p["cs_validation_category"] = json!(if self.platform { 1 } else { 3 });
        }
        p
    }
}

/// An `es_file_t` with a stat block.
pub fn file(path: &str, mode: u32, uid: u32) -> Value {
    let t = "2026-11-18T09:12:44.000000000Z";
    json!({
        "path": path,
        "path_truncated": false,
        "stat": {
            "st_dev": 16777232, "st_ino": 1152921500312459226u64, "st_mode": mode, "st_nlink": 1,
            "st_uid": uid, "st_gid": 0, "st_rdev": 0, "st_atimespec": t, "st_mtimespec": t,
            "st_ctimespec": t, "st_birthtimespec": t, "st_size": 154624, "st_blocks": 304,
            "st_blksize": 4096, "st_flags": 0, "st_gen": 0
        }
    })
}

pub fn rfc3339(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(ns as i128)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// The tick count (`mach_time`) at event time `ns`: 125/3 ns per tick (Apple silicon), the Mac
/// booted 14 h before `BASE_NS`.
pub fn mach_ticks(ns: i64) -> u64 {
    let since_boot = ns - BASE_NS + 14 * 3_600_000_000_000;
    (since_boot.max(0) as u64) * 3 / 125
}

/// Writes a stream of messages with consistent sequence numbers.
pub struct Capture {
    pub version: u32,
    pub now_ns: i64,
    /// How far the Mac's wall clock is off true time (someone set it): `time` moves with it,
    /// `mach_time` does not.
    pub wall_skew_ns: i64,
    pub seq: u64,
    pub out: String,
}

impl Capture {
    pub fn new(version: u32) -> Capture {
        Capture {
            version,
            now_ns: BASE_NS,
            wall_skew_ns: 0,
            seq: 1000,
            out: String::new(),
        }
    }

    /// Advance event time by `ms` milliseconds.
    pub fn after_ms(&mut self, ms: i64) -> &mut Self {
        self.now_ns += ms * 1_000_000 + 123_456;
        self
    }

    pub fn message(
        &mut self,
        event_type: u32,
        process: &Proc,
        name: &str,
        body: Value,
    ) -> &mut Self {
        self.seq += 1;
        let mut ev = serde_json::Map::new();
        ev.insert(name.to_string(), body);
        let v = json!({
            "schema_version": 1,
            // Apple silicon's 24 MHz ticks since a boot, moving with event time as a real Mac's do.
            "mach_time": mach_ticks(self.now_ns),
            "event_type": event_type,
            "thread": {"thread_id": 1_234_567u64 + self.seq},
            "version": self.version,
            "seq_num": self.seq,
            "global_seq_num": self.seq,
            "action_type": 1,
            "action": {"result": {"result_type": 0, "result": {"auth": 0}}},
            "time": rfc3339(self.now_ns + self.wall_skew_ns),
            "process": process.json(self.version),
            "event": Value::Object(ev),
        });
        // eslogger writes each object's keys in an order of its own (its dictionaries' order, not
        // sorted: two audit tokens in one real line differ), so a decoder that only does well
        // on one order would look faster here than on a Mac.
        let mut order = KeyOrder(fastrand::Rng::with_seed(self.seq));
        let mut line = String::new();
        order.write(&v, &mut line);
        // eslogger escapes every slash (`"\/usr\/bin\/git"`); outside strings JSON has none.
        self.out.push_str(&line.replace('/', "\\/"));
        self.out.push('\n');
        self
    }

    pub fn exec(&mut self, caller: &Proc, target: &Proc, args: &[&str], cwd: &str) -> &mut Self {
        let body = json!({
            "target": target.json(self.version),
            "args": args,
            "env": ["PATH=/usr/bin:/bin:/usr/sbin:/sbin", "SHELL=/bin/zsh", "LANG=en_US.UTF-8",
                    format!("HOME=/Users/{}", if target.auid == 501 { "alice" } else { "root" }),
                    "TERM=xterm-256color", "__CFBundleIdentifier=com.apple.Terminal"],
            "cwd": file(cwd, 0o40755, 0),
            "script": null,
            "fds": [{"fd": 0, "fdtype": 1}, {"fd": 1, "fdtype": 1}, {"fd": 2, "fdtype": 1}],
            "dyld_exec_path": target.exe,
            "image_cputype": 16777228,
            "image_cpusubtype": 2,
            "last_fd": 2,
        });
        self.message(9, caller, "exec", body)
    }

    /// `args` typed at the terminal (`cast::terminal_zsh`) running `exe`.
    pub fn in_terminal(&mut self, exe: &str, sid: &str, args: &[&str], cwd: &str) -> &mut Self {
        let zsh = cast::terminal_zsh();
        self.exec(&zsh, &zsh.exec_into(exe, sid), args, cwd)
    }

    pub fn create(&mut self, p: &Proc, dir: &str, filename: &str) -> &mut Self {
        let body = json!({"destination_type": 1,
            "destination": {"new_path": {"dir": file(dir, 0o40755, 0), "filename": filename, "mode": 420}},
            "acl": null});
        self.message(13, p, "create", body)
    }

    pub fn write(&mut self, p: &Proc, path: &str) -> &mut Self {
        self.message(33, p, "write", json!({"target": file(path, 0o100644, 0)}))
    }

    pub fn close(&mut self, p: &Proc, path: &str, modified: bool) -> &mut Self {
        self.message(12, p, "close", json!({"modified": modified, "target": file(path, 0o100644, 0), "was_mapped_writable": false}))
    }

    pub fn open(&mut self, p: &Proc, path: &str) -> &mut Self {
        self.message(
            10,
            p,
            "open",
            json!({"fflag": 1, "file": file(path, 0o100644, 0)}),
        )
    }

    pub fn rename(&mut self, p: &Proc, source: &str, dest_dir: &str, filename: &str) -> &mut Self {
        let body = json!({"source": file(source, 0o40755, 0), "destination_type": 1,
            "destination": {"new_path": {"dir": file(dest_dir, 0o40755, 0), "filename": filename}}});
        self.message(25, p, "rename", body)
    }

    pub fn unlink(&mut self, p: &Proc, path: &str, parent: &str) -> &mut Self {
        self.message(
            32,
            p,
            "unlink",
            json!({"target": file(path, 0o100644, 0), "parent_dir": file(parent, 0o40755, 0)}),
        )
    }

    pub fn setowner(&mut self, p: &Proc, path: &str, uid: u32, gid: u32) -> &mut Self {
        self.message(
            30,
            p,
            "setowner",
            json!({"uid": uid, "gid": gid, "target": file(path, 0o40755, 501)}),
        )
    }

    pub fn setmode(&mut self, p: &Proc, path: &str, mode: u32) -> &mut Self {
        self.message(
            29,
            p,
            "setmode",
            json!({"mode": mode, "target": file(path, 0o40755, 0)}),
        )
    }

    /// `xattr -d NAME PATH`.
    pub fn deleteextattr(&mut self, p: &Proc, path: &str, name: &str) -> &mut Self {
        let body = json!({"target": file(path, 0o40755, 0), "extattr": name});
        self.message(70, p, "deleteextattr", body)
    }

    /// `chflags`: `flags` as st_flags (0x2 UF_IMMUTABLE, 0x8000 UF_HIDDEN, 0x20000 SF_IMMUTABLE).
    pub fn setflags(&mut self, p: &Proc, path: &str, flags: u32) -> &mut Self {
        self.message(
            28,
            p,
            "setflags",
            json!({"target": file(path, 0o40755, 0), "flags": flags}),
        )
    }

    pub fn setacl(&mut self, p: &Proc, path: &str) -> &mut Self {
        let body = json!({"target": file(path, 0o40755, 0), "set_or_clear": 0, "acl": null});
        self.message(82, p, "setacl", body)
    }

    /// `touch -t`: both times set to a date in the past.
    pub fn utimes(&mut self, p: &Proc, path: &str) -> &mut Self {
        let t = "2019-03-14T10:00:00.000000000Z";
        let body = json!({"target": file(path, 0o100644, 0), "atime": t, "mtime": t});
        self.message(59, p, "utimes", body)
    }

    pub fn truncate(&mut self, p: &Proc, path: &str) -> &mut Self {
        self.message(
            41,
            p,
            "truncate",
            json!({"target": file(path, 0o100644, 0)}),
        )
    }

    /// `ln SOURCE DIR/NAME`.
    pub fn link(&mut self, p: &Proc, source: &str, dir: &str, name: &str) -> &mut Self {
        let body = json!({"source": file(source, 0o100644, 0), "target_dir": file(dir, 0o40755, 0),
            "target_filename": name});
        self.message(19, p, "link", body)
    }

    /// `cp -c` (clonefile) of SOURCE to DIR/NAME.
    pub fn clone_file(&mut self, p: &Proc, source: &str, dir: &str, name: &str) -> &mut Self {
        let body = json!({"source": file(source, 0o40755, 0), "target_dir": file(dir, 0o40755, 0),
            "target_name": name});
        self.message(61, p, "clone", body)
    }

    pub fn setextattr(&mut self, p: &Proc, path: &str, name: &str) -> &mut Self {
        self.message(
            27,
            p,
            "setextattr",
            json!({"target": file(path, 0o40755, 0), "extattr": name}),
        )
    }

    pub fn kextload(&mut self, p: &Proc, id: &str) -> &mut Self {
        self.message(17, p, "kextload", json!({"identifier": id}))
    }

    pub fn kextunload(&mut self, p: &Proc, id: &str) -> &mut Self {
        self.message(18, p, "kextunload", json!({"identifier": id}))
    }

    pub fn fork(&mut self, p: &Proc, child: &Proc) -> &mut Self {
        let body = json!({"child": child.json(self.version)});
        self.message(11, p, "fork", body)
    }

    /// What Apple's `kextload`, `kextutil` and `kextunload` do: fork, and the child (an image of the
    /// tool until it execs) runs `kmutil` with `args`.
    pub fn shim_runs_kmutil(&mut self, tool: &Proc, child_pid: i32, args: &[&str]) -> &mut Self {
        let child = tool.forked(child_pid);
        self.fork(tool, &child);
        let kmutil = child.exec_into("/usr/bin/kmutil", "com.apple.kmutil");
        self.exec(&child, &kmutil, args, "/")
    }

    /// `parent` forks `child_pid`, and the child execs `exe` with `args`. Returns the new image.
    pub fn spawn(
        &mut self,
        parent: &Proc,
        child_pid: i32,
        exe: &str,
        sid: &str,
        args: &[&str],
    ) -> Proc {
        let child = parent.forked(child_pid);
        self.fork(parent, &child);
        self.after_ms(1);
        let image = child.exec_into(exe, sid);
        self.exec(&child, &image, args, "/");
        self.after_ms(1);
        image
    }

    /// `sender` sends signal `sig` to `target` (kill(2)); macOS 15.4+ adds the instigator (null
    /// for a direct signal).
    pub fn signal(&mut self, sender: &Proc, target: &Proc, sig: i32) -> &mut Self {
        let body = json!({"sig": sig, "target": target.json(self.version), "instigator": null});
        self.message(31, sender, "signal", body)
    }

    /// A configuration profile removed (macOS 14+; `managed`: installed by MDM), `instigator`
    /// the process that asked.
    pub fn profile_remove(
        &mut self,
        p: &Proc,
        identifier: &str,
        managed: bool,
        instigator: Option<&Proc>,
    ) -> &mut Self {
        let body = json!({
            "instigator": instigator.map(|i| i.json(self.version)),
            "profile": {"identifier": identifier, "uuid": "8C1D3F52-1B6E-4C11-9A0B-2B0E6F1A7D11",
                        "install_source": if managed { 0 } else { 1 }, "organization": "Example Corp",
                        "display_name": "kextwatch", "scope": "System"},
        });
        self.message(127, p, "profile_remove", body)
    }

    /// A TCC permission changed (macOS 15.4+).
    pub fn tcc_modify(
        &mut self,
        p: &Proc,
        service: &str,
        identity: &str,
        update_type: u32,
        right: u32,
        instigator: Option<&Proc>,
    ) -> &mut Self {
        let body = json!({
            "service": service, "identity": identity, "identity_type": 0,
            "update_type": update_type, "right": right, "reason": 2,
            "instigator": instigator.map(|i| i.json(self.version)),
            "responsible": null,
        });
        self.message(147, p, "tcc_modify", body)
    }

    /// `p` set the system clock (the event has no fields).
    pub fn settime(&mut self, p: &Proc) -> &mut Self {
        self.message(75, p, "settime", json!({}))
    }

    pub fn exit(&mut self, p: &Proc) -> &mut Self {
        self.message(15, p, "exit", json!({"stat": 0}))
    }

    /// Copy a kext bundle into a folder the way `cp -R` does: directories and files created, written
    /// and closed, one event each.
    pub fn copy_bundle(&mut self, p: &Proc, into: &str, name: &str) -> &mut Self {
        let b = format!("{into}/{name}.kext");
        self.create(p, into, &format!("{name}.kext"));
        self.create(p, &b, "Contents");
        self.create(p, &format!("{b}/Contents"), "MacOS");
        for f in ["Info.plist", &format!("MacOS/{name}")] {
            let path = format!("{b}/Contents/{f}");
            let (dir, file_name) = path.rsplit_once('/').unwrap();
            self.create(p, dir, file_name);
            self.write(p, &path);
            self.close(p, &path, true);
        }
        self
    }
}

/// The usual cast.
pub mod cast {
    use super::Proc;

    pub fn terminal_zsh() -> Proc {
        Proc::apple(4100, 4099, "/bin/zsh", "com.apple.zsh").in_terminal(
            501,
            501,
            "/dev/ttys003",
            100_017,
        )
    }
    pub fn sudo() -> Proc {
        Proc::apple(4120, 4100, "/usr/bin/sudo", "com.apple.sudo").in_terminal(
            501,
            0,
            "/dev/ttys003",
            100_017,
        )
    }
    pub fn kernelmanagerd() -> Proc {
        Proc::apple(
            331,
            1,
            "/usr/libexec/kernelmanagerd",
            "com.apple.kernelmanagerd",
        )
    }
    pub fn jamf() -> Proc {
        Proc::developer(
            2210,
            1,
            "/usr/local/jamf/bin/jamf",
            "com.jamfsoftware.jamf",
            "483DWKW443",
        )
    }
    /// The kextwatch daemon, as the pkg installs it (launchd's child).
    pub fn kextwatch() -> Proc {
        Proc::developer(300, 1, kextwatch::layout::BINARY, "kextwatch", "KXWATCH123")
    }
    /// The eslogger the daemon runs.
    pub fn kextwatch_eslogger() -> Proc {
        Proc::apple(301, 300, "/usr/bin/eslogger", "com.apple.eslogger")
    }
    pub fn system_installd() -> Proc {
        Proc::apple(640, 1, "/System/Library/PrivateFrameworks/PackageKit.framework/Versions/A/Resources/system_installd", "com.apple.system_installd")
    }
    pub fn newsyslog() -> Proc {
        Proc::apple(910, 1, "/usr/sbin/newsyslog", "com.apple.newsyslog")
    }
    pub fn tccd() -> Proc {
        Proc::apple(
            420,
            1,
            "/System/Library/PrivateFrameworks/TCC.framework/Support/tccd",
            "com.apple.tccd",
        )
    }
    pub fn timed() -> Proc {
        Proc::apple(233, 1, "/usr/libexec/timed", "com.apple.timed")
    }
    pub fn backupd() -> Proc {
        Proc::apple(
            1290,
            1,
            "/System/Library/CoreServices/backupd.bundle/Contents/Resources/backupd",
            "com.apple.backupd",
        )
    }
    pub fn launchd() -> Proc {
        Proc::apple(1, 0, "/sbin/launchd", "com.apple.xpc.launchd")
    }
    pub fn mdworker() -> Proc {
        Proc::apple(7001, 1, "/System/Library/Frameworks/CoreServices.framework/Frameworks/Metadata.framework/Versions/A/Support/mdworker_shared", "com.apple.mdworker_shared")
    }
    pub fn safari() -> Proc {
        Proc::apple(
            880,
            1,
            "/Applications/Safari.app/Contents/MacOS/Safari",
            "com.apple.Safari",
        )
        .in_terminal(501, 501, "", 100_010)
        .without_tty()
    }
    pub fn slack() -> Proc {
        Proc::developer(
            1433,
            1,
            "/Applications/Slack.app/Contents/MacOS/Slack",
            "com.tinyspeck.slackmacgap",
            "BQR82RBBHL",
        )
    }
}

impl Proc {
    pub fn without_tty(mut self) -> Proc {
        self.tty = None;
        self
    }
}

/// Writes JSON with every object's keys in a pseudo-random order of its own, the same for the same
/// seed (so captures stay reproducible).
struct KeyOrder(fastrand::Rng);

impl KeyOrder {
    fn write(&mut self, value: &Value, out: &mut String) {
        match value {
            Value::Object(map) => {
                let mut entries: Vec<_> = map.iter().collect();
                self.0.shuffle(&mut entries);
                out.push('{');
                for (n, (key, value)) in entries.into_iter().enumerate() {
                    if n > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(key).unwrap());
                    out.push(':');
                    self.write(value, out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (n, item) in items.iter().enumerate() {
                    if n > 0 {
                        out.push(',');
                    }
                    self.write(item, out);
                }
                out.push(']');
            }
            scalar => out.push_str(&serde_json::to_string(scalar).unwrap()),
        }
    }
}
