//! Process lineage: which program is really behind an action.
//!
//! A bounded table of process images keyed by audit token (pid, pidversion) is fed by exec and
//! fork events, and seeded from every decoded event's process and parent token, so a capture
//! started mid-way still links what it can. An exec keeps the pid and bumps the pidversion, and the
//! `process` of an exec event is the image before it: the new image's parent is the old one's.
//!
//! The initiator of an action is the nearest image on the chain that is not Apple's plumbing:
//! shells, interpreters, `sudo`, `env`, `xpcproxy`, `cp` and every other Apple platform binary
//! that is not one of the system daemons pass through; a third-party program stops the walk (it
//! is the initiator), and so does launchd (everyone's ancestor vouches for no one). When the walk
//! reaches launchd without an initiator, the ES responsible process is asked instead.

use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;
use serde::Serialize;

use crate::event::{Event, EventKind, Process};

/// Images remembered. At ~200 bytes each this is a few MB however long the stream.
pub const CAPACITY: usize = 32_768;
/// Hops walked at most: deeper chains are cut (a fork bomb cannot make a walk long).
const MAX_DEPTH: usize = 24;
const LAUNCHD_PID: i32 = 1;

type Token = (i32, u32);

/// One image on a chain, as alerts show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Hop {
    pub pid: i32,
    pub executable: Arc<str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_id: Option<Arc<str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team_id: Option<Arc<str>>,
    pub platform_binary: bool,
    /// Ad-hoc or unsigned third-party code.
    pub unsigned_or_adhoc: bool,
}

impl Hop {
    pub fn of(p: &Process) -> Hop {
        Hop {
            pid: p.pid,
            executable: p.executable.as_str().into(),
            signing_id: p.signing_id.as_deref().map(Into::into),
            team_id: p.team_id.as_deref().map(Into::into),
            platform_binary: p.is_platform_binary,
            unsigned_or_adhoc: p.is_unsigned_or_adhoc(),
        }
    }

    /// The process object detection's trust checks take: identity fields only (no pid, which no
    /// check reads).
    pub fn as_process(&self) -> Process {
        Process {
            executable: self.executable.to_string(),
            signing_id: self.signing_id.as_deref().map(Into::into),
            team_id: self.team_id.as_deref().map(Into::into),
            is_platform_binary: self.platform_binary,
            ..Process::default()
        }
    }
}

#[derive(Debug, Clone)]
struct Node {
    hop: Hop,
    parent: Option<Token>,
    responsible: Option<Token>,
}

/// The bounded process table.
pub struct ProcessTable {
    nodes: LruCache<Token, Node>,
    /// Images forgotten to stay within `CAPACITY`.
    pub evicted: u64,
}

impl Default for ProcessTable {
    fn default() -> Self {
        ProcessTable::with_capacity(CAPACITY)
    }
}

fn token(p: &Process) -> Token {
    (p.pid, p.pidversion)
}

fn parent_token(p: &Process) -> Option<Token> {
    p.parent_pidversion.map(|v| (p.ppid, v))
}

fn responsible_token(p: &Process) -> Option<Token> {
    match (p.responsible_pid, p.responsible_pidversion) {
        // A process is its own responsible process when there is no other.
        (Some(pid), Some(v)) if (pid, v) != token(p) => Some((pid, v)),
        _ => None,
    }
}

impl ProcessTable {
    pub fn with_capacity(capacity: usize) -> ProcessTable {
        ProcessTable {
            nodes: LruCache::new(NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN)),
            evicted: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn insert(&mut self, key: Token, node: Node) {
        if !self.nodes.contains(&key) && self.nodes.len() == self.nodes.cap().get() {
            self.evicted += 1;
        }
        self.nodes.put(key, node);
    }

    /// Remember the image `p`, whose parent is `parent` when `p` does not name one. A token names
    /// one image for its whole life (an exec bumps the pidversion), so the same image seen again is
    /// only marked recent and, if its parent was unknown, told it: no allocation per event. A
    /// different image under a known token (a capture that breaks the rule) replaces it.
    fn remember(&mut self, p: &Process, parent: Option<Token>) {
        let key = token(p);
        let parent = parent_token(p).or(parent);
        if let Some(known) = self.nodes.get_mut(&key) {
            if *known.hop.executable == *p.executable
                && known.hop.signing_id.as_deref() == p.signing_id.as_deref()
            {
                known.parent = parent.or(known.parent);
                return;
            }
        }
        let node = Node {
            hop: Hop::of(p),
            parent,
            responsible: responsible_token(p),
        };
        self.insert(key, node);
    }

    /// The latest image known under `pid` and its parent's executable (a `kill PID` names only
    /// the pid). Walks the table: for rare commands only.
    pub fn by_pid(&self, pid: i32) -> Option<(Hop, Option<Arc<str>>)> {
        let (_, node) = self
            .nodes
            .iter()
            .filter(|((p, _), _)| *p == pid)
            .max_by_key(|((_, version), _)| *version)?;
        let parent = node
            .parent
            .and_then(|t| self.nodes.peek(&t))
            .map(|n| n.hop.executable.clone());
        Some((node.hop.clone(), parent))
    }

    /// Learn from one event: its process, and the image an exec or fork creates.
    pub fn observe(&mut self, ev: &Event) {
        self.remember(&ev.process, None);
        match &ev.kind {
            // The new image's parent is the old image's parent (eslogger and ES say so too, but a
            // minimal process object may lack the token).
            EventKind::Exec(exec) => self.remember(&exec.target, parent_token(&ev.process)),
            EventKind::Fork {
                child_pid,
                child_pidversion,
            } => {
                let key = (*child_pid, *child_pidversion);
                // The child is an image of the parent: share its strings.
                let hop = match self.nodes.peek(&token(&ev.process)) {
                    Some(parent) => parent.hop.clone(),
                    None => Hop::of(&ev.process),
                };
                let node = Node {
                    hop: Hop {
                        pid: *child_pid,
                        ..hop
                    },
                    parent: Some(token(&ev.process)),
                    responsible: responsible_token(&ev.process),
                };
                self.insert(key, node);
            }
            // Kept after exit: a child's event may still name it as parent. The bound evicts it.
            _ => {}
        }
    }

    /// The chain from `p` up: `p` first, then each known parent, at most `MAX_DEPTH` hops.
    pub fn chain(&self, p: &Process) -> Vec<Hop> {
        let mut out = vec![Hop::of(p)];
        // A process object without a parent token: what a fork or exec event told the table.
        let mut next = parent_token(p).or_else(|| self.nodes.peek(&token(p))?.parent);
        while let Some(t) = next {
            if out.len() >= MAX_DEPTH {
                break;
            }
            let Some(node) = self.nodes.peek(&t) else {
                break;
            };
            out.push(node.hop.clone());
            if t.0 == LAUNCHD_PID {
                break;
            }
            next = node.parent;
        }
        out
    }

    /// The image responsible for `p` (ES `responsible_audit_token`), if known.
    pub fn responsible(&self, p: &Process) -> Option<Hop> {
        let t = responsible_token(p)
            .or_else(|| self.nodes.peek(&token(p)).and_then(|n| n.responsible))?;
        self.nodes.peek(&t).map(|n| n.hop.clone())
    }
}

/// Who is behind an action, as a walk up the chain found it.
#[derive(Debug, Clone, PartialEq)]
pub struct Lineage {
    /// The acting process first, then its ancestors as far as known.
    pub chain: Vec<Hop>,
    /// Index in `chain` of the initiator (`None`: only Apple plumbing up to launchd or the end of
    /// what is known).
    pub initiator: Option<usize>,
    /// The responsible process, asked when the chain has no initiator.
    pub responsible: Option<Hop>,
}

impl Lineage {
    /// Walk `table` from `p`; `is_trusted_system` names Apple daemons that are initiators
    /// themselves (installd, kernelmanagerd...).
    pub fn resolve(
        table: &ProcessTable,
        p: &Process,
        is_trusted_system: impl Fn(&Hop) -> bool,
    ) -> Lineage {
        let chain = table.chain(p);
        let initiator = chain
            .iter()
            .position(|h| h.pid != LAUNCHD_PID && (is_trusted_system(h) || !h.platform_binary));
        let responsible = match initiator {
            Some(_) => None,
            None => table.responsible(p),
        };
        Lineage {
            chain,
            initiator,
            responsible,
        }
    }

    pub fn initiator(&self) -> Option<&Hop> {
        self.initiator
            .and_then(|i| self.chain.get(i))
            .or(self.responsible.as_ref())
    }

    /// Unsigned or ad-hoc code between the actor and the initiator (inclusive).
    pub fn taint(&self) -> Option<&Hop> {
        let end = self.initiator.map_or(self.chain.len(), |i| i + 1);
        self.chain[..end].iter().find(|h| h.unsigned_or_adhoc)
    }

    /// `a → b → c`, acting process first, for reasons.
    pub fn describe(&self) -> String {
        let end = self.initiator.map_or(self.chain.len(), |i| i + 1);
        self.chain[..end]
            .iter()
            .map(|h| {
                h.executable
                    .rsplit('/')
                    .next()
                    .unwrap_or(&h.executable)
                    .to_string()
            })
            .collect::<Vec<_>>()
            .join(" ← ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Exec, Process};

    fn proc(
        pid: i32,
        pidversion: u32,
        ppid: i32,
        parent_v: u32,
        exe: &str,
        apple: bool,
    ) -> Process {
        Process {
            pid,
            pidversion,
            ppid,
            parent_pidversion: Some(parent_v),
            executable: exe.into(),
            signing_id: Some(exe.rsplit('/').next().unwrap().into()),
            team_id: (!apple).then(|| "AAAAAAAAAA".into()),
            cs_flags: 0x1,
            is_platform_binary: apple,
            ..Process::default()
        }
    }

    fn ev(process: Process, kind: EventKind) -> Event {
        Event::at(0, process, kind)
    }

    fn exec(before: &Process, exe: &str, apple: bool) -> (Event, Process) {
        let mut after = proc(
            before.pid,
            before.pidversion + 1,
            before.ppid,
            before.parent_pidversion.unwrap(),
            exe,
            apple,
        );
        after.parent_pidversion = before.parent_pidversion;
        let e = ev(
            before.clone(),
            EventKind::Exec(Exec {
                target: after.clone(),
                args: Vec::new(),
                cwd: None,
            }),
        );
        (e, after)
    }

    fn fork(parent: &Process, child_pid: i32, child_v: u32) -> (Event, Process) {
        let e = ev(
            parent.clone(),
            EventKind::Fork {
                child_pid,
                child_pidversion: child_v,
            },
        );
        let mut child = parent.clone();
        child.pid = child_pid;
        child.pidversion = child_v;
        child.ppid = parent.pid;
        child.parent_pidversion = Some(parent.pidversion);
        (e, child)
    }

    #[test]
    fn fork_and_exec_chains_lead_to_the_program_behind_them() {
        let mut t = ProcessTable::default();
        let launchd = proc(1, 1, 0, 0, "/sbin/launchd", true);
        let agent = proc(300, 10, 1, 1, "/usr/local/jamf/bin/jamf", false);
        t.observe(&ev(launchd.clone(), EventKind::Exit { status: 0 }));
        t.observe(&ev(agent.clone(), EventKind::Exit { status: 0 }));
        // jamf forks; the child (a jamf image) execs sh; sh forks; that child execs kmutil.
        let (e, child) = fork(&agent, 400, 20);
        t.observe(&e);
        let (e, sh) = exec(&child, "/bin/sh", true);
        t.observe(&e);
        let (e, sh_child) = fork(&sh, 401, 30);
        t.observe(&e);
        let (e, _kmutil) = exec(&sh_child, "/usr/bin/kmutil", true);
        t.observe(&e);

        // The exec event's process is the sh child before the exec.
        let l = Lineage::resolve(&t, &sh_child, |_| false);
        let names: Vec<&str> = l.chain.iter().map(|h| &*h.executable).collect();
        // The exec replaced the forked jamf child (400, 20) with sh (400, 21), whose parent is the
        // jamf agent itself.
        assert_eq!(
            names,
            [
                "/bin/sh",
                "/bin/sh",
                "/usr/local/jamf/bin/jamf",
                "/sbin/launchd"
            ]
        );
        let init = l.initiator().unwrap();
        assert_eq!(
            (init.pid, &*init.executable),
            (300, "/usr/local/jamf/bin/jamf")
        );
        assert_eq!(l.describe(), "sh ← sh ← jamf");
        assert_eq!(l.taint(), None);
    }

    #[test]
    fn events_out_of_order_link_up_once_the_earlier_ones_arrive() {
        let mut t = ProcessTable::default();
        let agent = proc(300, 10, 1, 1, "/usr/local/jamf/bin/jamf", false);
        let (fork_child, child) = fork(&agent, 400, 20);
        let (exec_sh, sh) = exec(&child, "/bin/sh", true);
        let (fork_sh, sh_child) = fork(&sh, 401, 30);
        // The last event first: only what it carries is known.
        t.observe(&fork_sh);
        assert_eq!(Lineage::resolve(&t, &sh_child, |_| false).initiator(), None);
        for e in [&exec_sh, &fork_child] {
            t.observe(e);
        }
        // jamf itself is known once any event of it arrives.
        t.observe(&ev(agent.clone(), EventKind::Exit { status: 0 }));
        let l = Lineage::resolve(&t, &sh_child, |_| false);
        assert_eq!(l.initiator().map(|h| h.pid), Some(300));
    }

    #[test]
    fn an_exec_bumps_pidversion_so_the_old_image_stays_distinct() {
        let mut t = ProcessTable::default();
        let zsh = proc(500, 7, 1, 1, "/bin/zsh", true);
        let (e, _ls) = exec(&zsh, "/Users/a/evil", false);
        t.observe(&e);
        assert_eq!(t.len(), 2);
        assert_eq!(
            &*t.nodes.peek(&(500, 7)).unwrap().hop.executable,
            "/bin/zsh"
        );
        assert_eq!(
            &*t.nodes.peek(&(500, 8)).unwrap().hop.executable,
            "/Users/a/evil"
        );
    }

    #[test]
    fn unsigned_code_on_the_way_taints_and_launchd_vouches_for_no_one() {
        let mut t = ProcessTable::default();
        let launchd = proc(1, 1, 0, 0, "/sbin/launchd", true);
        t.observe(&ev(launchd.clone(), EventKind::Exit { status: 0 }));
        let mut dropper = proc(600, 3, 1, 1, "/private/tmp/x", false);
        dropper.cs_flags = 0x2 | 0x1; // ad hoc
        dropper.team_id = None;
        t.observe(&ev(dropper.clone(), EventKind::Exit { status: 0 }));
        let sh = proc(601, 5, 600, 3, "/bin/sh", true);
        let l = Lineage::resolve(&t, &sh, |h| &*h.executable == "/sbin/launchd");
        assert_eq!(l.initiator().unwrap().pid, 600);
        assert_eq!(l.taint().unwrap().pid, 600);

        // Only Apple plumbing up to launchd: no initiator, even if launchd counts as trusted.
        let term = proc(
            700,
            9,
            1,
            1,
            "/System/Applications/Utilities/Terminal.app/Contents/MacOS/Terminal",
            true,
        );
        t.observe(&ev(term.clone(), EventKind::Exit { status: 0 }));
        let zsh = proc(701, 2, 700, 9, "/bin/zsh", true);
        let l = Lineage::resolve(&t, &zsh, |h| &*h.executable == "/sbin/launchd");
        assert_eq!(l.initiator(), None);
        assert_eq!(l.chain.len(), 3);
    }

    #[test]
    fn a_helper_started_by_launchd_is_traced_to_its_responsible_app() {
        let mut t = ProcessTable::default();
        let app = proc(
            800,
            4,
            1,
            1,
            "/Applications/Tool.app/Contents/MacOS/Tool",
            false,
        );
        t.observe(&ev(app.clone(), EventKind::Exit { status: 0 }));
        let mut helper = proc(
            801,
            6,
            1,
            1,
            "/Library/PrivilegedHelperTools/com.apple.fakehelper",
            true,
        );
        helper.responsible_pid = Some(800);
        helper.responsible_pidversion = Some(4);
        let l = Lineage::resolve(&t, &helper, |_| false);
        assert_eq!(l.initiator().unwrap().pid, 800);
    }

    #[test]
    fn the_table_is_bounded_and_counts_what_it_forgets() {
        let mut t = ProcessTable::with_capacity(100);
        for pid in 0..250 {
            let p = proc(pid + 2, 1, 1, 1, "/bin/sh", true);
            t.observe(&ev(p, EventKind::Exit { status: 0 }));
        }
        assert_eq!((t.len(), t.evicted), (100, 150));
        // The most recent are kept.
        assert!(t.nodes.contains(&(251, 1)) && !t.nodes.contains(&(2, 1)));
    }

    #[test]
    fn unknown_parents_and_cycles_end_the_walk() {
        let t = ProcessTable::default();
        let orphan = proc(900, 1, 899, 4, "/bin/sh", true);
        assert_eq!(t.chain(&orphan).len(), 1);
        // A (corrupt) capture whose tokens loop: the depth bound ends it.
        let mut t = ProcessTable::default();
        let a = proc(10, 1, 11, 1, "/bin/sh", true);
        let b = proc(11, 1, 10, 1, "/bin/sh", true);
        t.observe(&ev(a.clone(), EventKind::Exit { status: 0 }));
        t.observe(&ev(b, EventKind::Exit { status: 0 }));
        assert_eq!(t.chain(&a).len(), MAX_DEPTH);
    }

    #[test]
    fn a_forked_child_that_never_execs_is_its_own_hop() {
        let mut t = ProcessTable::default();
        assert!(t.is_empty());
        let sh = proc(400, 21, 300, 10, "/bin/sh", true);
        // sh forks 401 (a subshell), which forks 402, which execs kmutil.
        let (e, sub) = fork(&sh, 401, 30);
        t.observe(&e);
        assert!(!t.is_empty());
        let (e, grandchild) = fork(&sub, 402, 31);
        t.observe(&e);
        let pids: Vec<i32> = t.chain(&grandchild).iter().map(|h| h.pid).collect();
        assert_eq!(pids, [402, 401, 400]);
    }

    #[test]
    fn a_fork_links_the_child_when_process_objects_name_no_parent_token() {
        // Older captures carry no parent_audit_token: only the fork event says whose child it is.
        let mut t = ProcessTable::default();
        let mut agent = proc(300, 10, 1, 1, "/usr/local/jamf/bin/jamf", false);
        agent.parent_pidversion = None;
        t.observe(&ev(agent.clone(), EventKind::Exit { status: 0 }));
        let (e, mut child) = fork(&agent, 400, 20);
        t.observe(&e);
        child.parent_pidversion = None;
        let l = Lineage::resolve(&t, &child, |_| false);
        let pids: Vec<i32> = l.chain.iter().map(|h| h.pid).collect();
        assert_eq!(pids, [400, 300]);
    }

    #[test]
    fn a_different_image_under_a_known_token_replaces_it() {
        // Captures that break the one-token-one-image rule: the latest image wins.
        let mut t = ProcessTable::default();
        let a = proc(500, 7, 1, 1, "/bin/zsh", true);
        t.observe(&ev(a.clone(), EventKind::Exit { status: 0 }));
        let exe_of = |t: &ProcessTable| t.nodes.peek(&(500, 7)).unwrap().hop.executable.to_string();
        let other_exe = proc(500, 7, 1, 1, "/tmp/zsh", false);
        t.observe(&ev(other_exe, EventKind::Exit { status: 0 }));
        assert_eq!(exe_of(&t), "/tmp/zsh");
        // Same path, another signing identity: replaced too.
        let mut resigned = proc(500, 7, 1, 1, "/tmp/zsh", false);
        resigned.signing_id = Some("com.evil.zsh".into());
        t.observe(&ev(resigned, EventKind::Exit { status: 0 }));
        let node = t.nodes.peek(&(500, 7)).unwrap();
        assert_eq!(node.hop.signing_id.as_deref(), Some("com.evil.zsh"));
        // The same image again only fills in a parent it lacked.
        assert_eq!(t.len(), 1);
    }
}
