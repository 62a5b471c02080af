//! Recognising kext and policy tools and what an invocation does, from the exec'd image and its
//! arguments. The image is identified by file name or Apple signing id, never trusted by path alone:
//! a copy outside its system directory, or one that is not Apple platform code, is itself suspicious.

use crate::event::Process;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Kextload,
    Kextunload,
    Kextutil,
    Kmutil,
    Kextcache,
    Kextstat,
    Kextfind,
    Kextlibs,
    Csrutil,
    Nvram,
    Bputil,
    Spctl,
    Systemextensionsctl,
    /// Only when it names the KextPolicy database.
    Sqlite3,
}

const TOOLS: [(&str, Tool); 14] = [
    ("kextload", Tool::Kextload),
    ("kextunload", Tool::Kextunload),
    ("kextutil", Tool::Kextutil),
    ("kmutil", Tool::Kmutil),
    ("kextcache", Tool::Kextcache),
    ("kextstat", Tool::Kextstat),
    ("kextfind", Tool::Kextfind),
    ("kextlibs", Tool::Kextlibs),
    ("csrutil", Tool::Csrutil),
    ("nvram", Tool::Nvram),
    ("bputil", Tool::Bputil),
    ("spctl", Tool::Spctl),
    ("systemextensionsctl", Tool::Systemextensionsctl),
    ("sqlite3", Tool::Sqlite3),
];

/// Directories Apple installs these tools in.
const SYSTEM_DIRS: [&str; 4] = ["/sbin", "/usr/sbin", "/usr/bin", "/bin"];

/// Which entry of `table` an exec'd image is: by its file name (any case) or its Apple signing id
/// (`com.apple.NAME`). Kext tools and tamper tools are recognised alike.
pub fn identify_in<T: Copy>(
    table: &[(&'static str, T)],
    path: &str,
    signing_id: Option<&str>,
) -> Option<T> {
    let file = path.rsplit('/').next().unwrap_or(path);
    let by_name = table.iter().find(|(n, _)| file.eq_ignore_ascii_case(n));
    let by_sid = || {
        let sid = signing_id?.strip_prefix("com.apple.")?;
        table.iter().find(|(n, _)| sid == *n)
    };
    by_name.or_else(by_sid).map(|(_, t)| *t)
}

/// The name `table` gives `t`.
pub fn name_in<T: Copy + PartialEq>(table: &[(&'static str, T)], t: T) -> &'static str {
    table.iter().find(|(_, x)| *x == t).map_or("?", |(n, _)| n)
}

impl Tool {
    pub fn name(self) -> &'static str {
        name_in(&TOOLS, self)
    }

    /// Identify a tool from an exec'd image's path (file name, any case) or Apple signing id.
    pub fn identify(path: &str, signing_id: Option<&str>) -> Option<Tool> {
        identify_in(&TOOLS, path, signing_id)
    }
}

/// Why the image run as `tool` does not look like Apple's copy, if it does not.
pub fn masquerade_reason(tool: Tool, image: &Process) -> Option<String> {
    let norm = crate::path::normalize(&image.executable);
    let dir = norm.rsplit_once('/').map_or("", |(d, _)| d);
    let in_system_dir = SYSTEM_DIRS.contains(&dir);
    match (in_system_dir, image.is_platform_binary) {
        (true, true) => None,
        (false, _) => Some(format!(
            "{} was executed from {}, not from a system directory",
            tool.name(),
            image.executable
        )),
        (true, false) => Some(format!(
            "{} at {} is not Apple platform code",
            tool.name(),
            image.executable
        )),
    }
}

/// What an invocation does.
#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    /// Read-only: listing, status, validation without loading.
    Discovery { what: String },
    /// Loading, unloading or rebuilding kexts and kext collections.
    Kext(KextCommand),
    /// Weakening SIP, boot policy, kext consent, Gatekeeper or system-extension policy.
    PolicyChange(PolicyChange),
    /// A general tool (sqlite3) used for something else.
    Unrelated,
}

#[derive(Debug, Clone, PartialEq)]
pub struct KextCommand {
    pub action: KextAction,
    /// Kext paths named on the command line (as written; resolve against the cwd).
    pub paths: Vec<String>,
    pub bundle_ids: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KextAction {
    Load,
    Unload,
    /// Kext collection or cache rebuild (`kmutil create|install`, `kextcache`).
    Rebuild,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PolicyChange {
    pub area: PolicyArea,
    /// The change in words: "csrutil disable".
    pub what: String,
    /// Does it lower protection (as opposed to restoring it or an unclassified change)?
    pub weakens: Weakening,
    /// Team ID a consent change names (`spctl kext-consent add TEAMID`).
    pub team_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Weakening {
    /// Restores or tightens protection.
    None,
    /// A change whose effect is unclear or limited.
    Partial,
    /// Turns a protection off.
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyArea {
    Sip,
    Nvram,
    BootPolicy,
    KextConsent,
    /// The KextPolicy database itself, opened by a general tool.
    KextPolicyStore,
    Gatekeeper,
    SystemExtensions,
}

/// Classify an invocation of `tool` with `args` (argv including `argv[0]`).
pub fn classify(tool: Tool, args: &[String]) -> Invocation {
    let rest: &[String] = args.get(1..).unwrap_or(&[]);
    let lower: Vec<String> = rest.iter().map(|a| a.to_ascii_lowercase()).collect();
    let words: Vec<&str> = lower.iter().map(String::as_str).collect();
    match tool {
        Tool::Kextstat | Tool::Kextfind | Tool::Kextlibs => discovery(tool, &words),
        Tool::Kextload | Tool::Kextutil => {
            // kextutil -n / -no-load only validates.
            if words
                .iter()
                .any(|w| matches!(*w, "-n" | "-no-load" | "-help" | "--help"))
            {
                return discovery(tool, &words);
            }
            kext(KextAction::Load, rest, &["-b", "-bundle-id"])
        }
        Tool::Kextunload => kext(
            KextAction::Unload,
            rest,
            &["-b", "-bundle-id", "-c", "-class"],
        ),
        Tool::Kextcache => kext(KextAction::Rebuild, rest, &[]),
        Tool::Kmutil => kmutil(rest, &words),
        Tool::Csrutil => csrutil(&words),
        Tool::Nvram => nvram(rest, &words),
        Tool::Bputil => bputil(&words),
        Tool::Spctl => spctl(rest, &words),
        Tool::Systemextensionsctl => sysext(&words),
        Tool::Sqlite3 => sqlite3(rest),
    }
}

/// sqlite3 naming the KextPolicy database: kext approvals read or edited outside syspolicyd (the
/// database is SIP-protected; only root with Full Disk Access gets this far).
fn sqlite3(rest: &[String]) -> Invocation {
    let db = rest.iter().find(|a| {
        let n = crate::path::normalize(a).to_ascii_lowercase();
        n.ends_with("/systempolicyconfiguration/kextpolicy") || n == "kextpolicy"
    });
    match db {
        Some(db) => change(
            PolicyArea::KextPolicyStore,
            format!("sqlite3 {db}"),
            Weakening::Full,
        ),
        None => Invocation::Unrelated,
    }
}

fn discovery(tool: Tool, words: &[&str]) -> Invocation {
    let mut what = tool.name().to_string();
    for w in words.iter().take(3) {
        what.push(' ');
        what.push_str(w);
    }
    Invocation::Discovery { what }
}

fn change(area: PolicyArea, what: String, weakens: Weakening) -> Invocation {
    Invocation::PolicyChange(PolicyChange {
        area,
        what,
        weakens,
        team_id: None,
    })
}

/// Collect kext paths and bundle ids: `id_flags` take a bundle id (or class) value; other flags that
/// take a value (`-p`, `--path`, `-d`, `-r`, ...) name paths; bare words naming a `.kext` are paths.
fn kext(action: KextAction, rest: &[String], id_flags: &[&str]) -> Invocation {
    let path_flags = [
        "-p",
        "--path",
        "-d",
        "-dependency",
        "-r",
        "-repository",
        "-i",
        "-invalidate",
    ];
    let mut cmd = KextCommand {
        action,
        paths: Vec::new(),
        bundle_ids: Vec::new(),
    };
    let mut it = rest.iter();
    while let Some(a) = it.next() {
        let lower = a.to_ascii_lowercase();
        // `--flag=value`; an argument without a leading '-' never names a flag, '=' or not.
        let (flag, inline) = match lower.split_once('=') {
            Some((f, _)) => (f.to_string(), a.split_once('=').map(|(_, v)| v.to_string())),
            None => (lower.clone(), None),
        };
        let is_id = id_flags.contains(&flag.as_str()) || flag == "--bundle-identifier";
        let is_path = path_flags.contains(&flag.as_str());
        if is_id || is_path {
            let Some(v) = inline.or_else(|| it.next().cloned()) else {
                break;
            };
            if is_id {
                cmd.bundle_ids.push(v);
            } else {
                cmd.paths.push(v);
            }
        } else if !a.starts_with('-')
            && (a.contains('/') || lower.ends_with(".kext") || lower.ends_with(".kext/"))
        {
            cmd.paths.push(a.clone());
        }
    }
    Invocation::Kext(cmd)
}

fn first_word<'a>(words: &[&'a str]) -> &'a str {
    words
        .iter()
        .copied()
        .find(|w| !w.starts_with('-'))
        .unwrap_or("")
}

fn kmutil(rest: &[String], words: &[&str]) -> Invocation {
    let sub = first_word(words);
    let action = match sub {
        "load" => KextAction::Load,
        "unload" => KextAction::Unload,
        "create" | "install" | "rebuild" | "clear-staging" | "migrate" | "configure-boot" => {
            KextAction::Rebuild
        }
        // showloaded, find, inspect, libraries, print-diagnostics, check, log, dumpstate, emit-macho,
        // or no subcommand (help).
        _ => return discovery(Tool::Kmutil, words),
    };
    let after_sub: Vec<String> = rest
        .iter()
        .skip_while(|a| !a.eq_ignore_ascii_case(sub))
        .skip(1)
        .cloned()
        .collect();
    kext(action, &after_sub, &["-b", "--bundle-identifier"])
}

fn csrutil(words: &[&str]) -> Invocation {
    let sub = first_word(words);
    let next = words
        .iter()
        .skip_while(|w| **w != sub)
        .nth(1)
        .copied()
        .unwrap_or("");
    let what = format!("csrutil {}", words.join(" "));
    // `--without kext` turns off kext signing protection: as much as `disable` for kexts.
    let without = |what: &str| words.windows(2).any(|w| w == ["--without", what]);
    let weakens = match (sub, next) {
        ("disable", _) => Weakening::Full,
        ("enable", _) if without("kext") => Weakening::Full,
        ("enable", _) if words.contains(&"--without") => Weakening::Partial,
        ("enable", _) => Weakening::None,
        ("clear", _) => Weakening::Partial,
        ("authenticated-root", "disable") => Weakening::Full,
        ("authenticated-root", "enable") => Weakening::None,
        ("netboot", "add") => Weakening::Partial,
        ("allow-research-guests", "enable") => Weakening::Partial,
        // status, report, netboot list, authenticated-root status, no arguments.
        _ => return discovery(Tool::Csrutil, words),
    };
    change(PolicyArea::Sip, what.trim_end().to_string(), weakens)
}

/// boot-args flags that turn off code-signing or kext enforcement.
const WEAK_BOOT_ARGS: [&str; 6] = [
    "amfi_get_out_of_my_way",
    "amfi_allow_any_signature",
    "cs_enforcement_disable",
    "kext-dev-mode",
    "debug=",
    "amfi=",
];

fn nvram(rest: &[String], words: &[&str]) -> Invocation {
    let mut worst: Option<(Weakening, String)> = None;
    let mut note = |w: Weakening, what: String| {
        if worst.as_ref().is_none_or(|(cur, _)| w > *cur) {
            worst = Some((w, what));
        }
    };
    let mut deleting = false;
    let mut options = rest.iter().zip(words);
    while let Some((raw, lower)) = options.next() {
        match *lower {
            "-d" => {
                deleting = true;
                continue;
            }
            // Clearing every variable drops boot-args (whatever they held) on the next boot.
            "-c" => {
                note(
                    Weakening::Partial,
                    "nvram -c (clears every variable, boot-args included)".into(),
                );
                continue;
            }
            // Variables set from a file: its contents are not in the event, so assume the worst
            // that stays plausible (boot-args) and say so.
            "-f" => {
                let file = options.next().map_or("", |(r, _)| r.as_str());
                note(
                    Weakening::Partial,
                    format!("nvram -f {file} (sets variables from a file the event does not show)"),
                );
                continue;
            }
            _ => {}
        }
        if lower.starts_with('-') {
            continue;
        }
        // Variables may carry a GUID namespace: 7C436110-...:csr-active-config=...
        let (name, value) = match lower.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (*lower, None),
        };
        let name = name.rsplit(':').next().unwrap_or(name);
        match (name, value, deleting) {
            ("csr-active-config", Some(_), _) => note(Weakening::Full, format!("nvram {raw}")),
            ("csr-active-config", None, true) => {
                note(Weakening::Partial, format!("nvram -d {raw}"))
            }
            // Deleting boot-args removes whatever weakening flags they held.
            ("boot-args", None, true) => note(Weakening::None, format!("nvram -d {raw}")),
            ("boot-args", Some(v), _) => {
                if let Some(flag) = WEAK_BOOT_ARGS.iter().find(|f| v.contains(*f)) {
                    note(
                        Weakening::Full,
                        format!("nvram {raw} (sets {})", flag.trim_end_matches('=')),
                    );
                } else {
                    note(Weakening::Partial, format!("nvram {raw}"));
                }
            }
            _ => {}
        }
    }
    match worst {
        Some((w, what)) => change(PolicyArea::Nvram, what, w),
        None => discovery(Tool::Nvram, words),
    }
}

fn bputil(words: &[&str]) -> Invocation {
    let what = format!("bputil {}", words.join(" "));
    let lowering = [
        "-n",
        "--reduced-security",
        "-p",
        "--permissive-security",
        "-k",
        "--enable-kexts",
        "-c",
        "--disable-kernel-ctrr",
        "-s",
        "--disable-ssv",
        "-a",
        "--enable-mdm",
        "--disable-boot-args-restriction",
    ];
    if words.iter().any(|w| lowering.contains(w)) {
        return change(PolicyArea::BootPolicy, what, Weakening::Full);
    }
    if words.iter().any(|w| matches!(*w, "-f" | "--full-security")) {
        return change(PolicyArea::BootPolicy, what, Weakening::None);
    }
    if words.is_empty()
        || words.iter().any(|w| {
            matches!(
                *w,
                "-d" | "--display-policy" | "-e" | "--display-all-policies" | "-h" | "--help"
            )
        })
    {
        return discovery(Tool::Bputil, words);
    }
    change(PolicyArea::BootPolicy, what, Weakening::Partial)
}

fn spctl(rest: &[String], words: &[&str]) -> Invocation {
    if let Some(i) = words.iter().position(|w| *w == "kext-consent") {
        let sub = words.get(i + 1).copied().unwrap_or("");
        let what = format!("spctl {}", words.join(" "));
        let (weakens, team_id) = match sub {
            "disable" => (Weakening::Full, None),
            "add" => (Weakening::Partial, rest.get(i + 2).cloned()),
            "remove" | "enable" => (Weakening::None, None),
            _ => return discovery(Tool::Spctl, words),
        };
        return Invocation::PolicyChange(PolicyChange {
            area: PolicyArea::KextConsent,
            what,
            weakens,
            team_id,
        });
    }
    if words
        .iter()
        .any(|w| matches!(*w, "--master-disable" | "--global-disable" | "--disable"))
    {
        return change(
            PolicyArea::Gatekeeper,
            format!("spctl {}", words.join(" ")),
            Weakening::Full,
        );
    }
    if words.iter().any(|w| matches!(*w, "--add" | "--remove")) {
        return change(
            PolicyArea::Gatekeeper,
            format!("spctl {}", words.join(" ")),
            Weakening::Partial,
        );
    }
    discovery(Tool::Spctl, words)
}

fn sysext(words: &[&str]) -> Invocation {
    let sub = first_word(words);
    let what = format!("systemextensionsctl {}", words.join(" "));
    let weakens = match (sub, words.get(1).copied().unwrap_or("")) {
        ("developer", "on") => Weakening::Full,
        ("developer", "off") => Weakening::None,
        ("reset", _) => Weakening::Full,
        ("uninstall", _) => Weakening::Partial,
        _ => return discovery(Tool::Systemextensionsctl, words),
    };
    change(PolicyArea::SystemExtensions, what, weakens)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn identify_by_name_or_signing_id() {
        assert_eq!(Tool::identify("/sbin/kextload", None), Some(Tool::Kextload));
        assert_eq!(Tool::identify("/usr/bin/KMUTIL", None), Some(Tool::Kmutil));
        assert_eq!(
            Tool::identify("/tmp/x", Some("com.apple.csrutil")),
            Some(Tool::Csrutil)
        );
        assert_eq!(Tool::identify("/bin/ls", Some("com.apple.ls")), None);
    }

    #[test]
    fn kmutil_subcommands() {
        let Invocation::Kext(k) = classify(
            Tool::Kmutil,
            &args("kmutil load -p /Library/Extensions/SoftRAID.kext"),
        ) else {
            panic!()
        };
        assert_eq!(
            (k.action, k.paths),
            (
                KextAction::Load,
                vec!["/Library/Extensions/SoftRAID.kext".to_string()]
            )
        );
        let Invocation::Kext(k) = classify(
            Tool::Kmutil,
            &args("kmutil unload --bundle-identifier=com.x.y"),
        ) else {
            panic!()
        };
        assert_eq!(
            (k.action, k.bundle_ids),
            (KextAction::Unload, vec!["com.x.y".to_string()])
        );
        assert!(matches!(
            classify(Tool::Kmutil, &args("kmutil showloaded --list-only")),
            Invocation::Discovery { .. }
        ));
        assert!(matches!(
            classify(Tool::Kmutil, &args("kmutil")),
            Invocation::Discovery { .. }
        ));
    }

    /// (weakening, what) of a policy-changing command; `None` for anything else.
    fn change_of(tool: Tool, s: &str) -> Option<(Weakening, String)> {
        match classify(tool, &args(s)) {
            Invocation::PolicyChange(p) => Some((p.weakens, p.what)),
            _ => None,
        }
    }

    #[test]
    fn every_policy_form_has_its_own_verdict() {
        let w = |tool, s: &str| change_of(tool, s).map(|c| c.0);
        // csrutil: each subcommand, not a fallback to discovery.
        assert_eq!(w(Tool::Csrutil, "csrutil clear"), Some(Weakening::Partial));
        assert_eq!(
            w(Tool::Csrutil, "csrutil authenticated-root enable"),
            Some(Weakening::None)
        );
        assert_eq!(
            w(Tool::Csrutil, "csrutil allow-research-guests enable"),
            Some(Weakening::Partial)
        );
        // spctl kext-consent remove/enable tighten consent: a change, not discovery.
        for s in [
            "spctl kext-consent remove ABCDE12345",
            "spctl kext-consent enable",
        ] {
            assert_eq!(w(Tool::Spctl, s), Some(Weakening::None), "{s}");
        }
        // nvram: deleting the SIP variable is partial, setting it (namespaced or not) full.
        assert_eq!(
            change_of(Tool::Nvram, "nvram -d csr-active-config"),
            Some((Weakening::Partial, "nvram -d csr-active-config".into()))
        );
        assert_eq!(
            w(
                Tool::Nvram,
                "nvram 7C436110-AB2A-4BBB-A880-FE41995C9F82:csr-active-config=%7f%00%00%00"
            ),
            Some(Weakening::Full)
        );
        assert_eq!(
            w(Tool::Nvram, "nvram boot-args=amfi_get_out_of_my_way=1"),
            Some(Weakening::Full)
        );
        // Several variables: the worst one is reported, and the first of equals.
        assert_eq!(
            change_of(
                Tool::Nvram,
                "nvram csr-active-config=%7f%00%00%00 boot-args=amfi_get_out_of_my_way=1"
            )
            .map(|c| c.1),
            Some("nvram csr-active-config=%7f%00%00%00".into())
        );
        assert_eq!(
            change_of(
                Tool::Nvram,
                "nvram -d csr-active-config boot-args=amfi_get_out_of_my_way=1"
            )
            .map(|c| c.0),
            Some(Weakening::Full)
        );
    }

    #[test]
    fn system_extension_policy_forms() {
        let w = |s: &str| change_of(Tool::Systemextensionsctl, s).map(|c| c.0);
        assert_eq!(w("systemextensionsctl developer on"), Some(Weakening::Full));
        assert_eq!(
            w("systemextensionsctl developer off"),
            Some(Weakening::None)
        );
        assert_eq!(
            w("systemextensionsctl uninstall ABCDE12345 com.example.ext"),
            Some(Weakening::Partial)
        );
        assert_eq!(w("systemextensionsctl list"), None);
    }

    #[test]
    fn tool_names_and_paths_with_equals_signs() {
        assert_eq!(Tool::Kextload.name(), "kextload");
        assert_eq!(Tool::Csrutil.name(), "csrutil");
        // A path that contains '=' is a path, not a `--flag=value`.
        let Invocation::Kext(k) = classify(
            Tool::Kextload,
            &args("kextload /Library/Extensions/a=b.kext"),
        ) else {
            panic!()
        };
        assert_eq!(k.paths, ["/Library/Extensions/a=b.kext"]);
    }

    #[test]
    fn csrutil_forms() {
        let weak = |s: &str| match classify(Tool::Csrutil, &args(s)) {
            Invocation::PolicyChange(p) => Some(p.weakens),
            _ => None,
        };
        assert_eq!(weak("csrutil disable"), Some(Weakening::Full));
        assert_eq!(weak("csrutil enable --without kext"), Some(Weakening::Full));
        assert_eq!(
            weak("csrutil enable --without fs --without kext"),
            Some(Weakening::Full)
        );
        assert_eq!(
            weak("csrutil enable --without dtrace"),
            Some(Weakening::Partial)
        );
        assert_eq!(
            weak("csrutil enable --without kexts"),
            Some(Weakening::Partial)
        );
        assert_eq!(
            weak("csrutil authenticated-root disable"),
            Some(Weakening::Full)
        );
        assert_eq!(
            weak("csrutil netboot add 10.0.0.1"),
            Some(Weakening::Partial)
        );
        assert_eq!(weak("csrutil enable"), Some(Weakening::None));
        assert_eq!(weak("csrutil status"), None);
        assert_eq!(weak("csrutil authenticated-root status"), None);
        assert_eq!(weak("csrutil"), None);
    }

    #[test]
    fn nvram_forms() {
        let weak = |s: &str| match classify(Tool::Nvram, &args(s)) {
            Invocation::PolicyChange(p) => Some(p.weakens),
            _ => None,
        };
        assert_eq!(
            weak("nvram boot-args=amfi_get_out_of_my_way=1"),
            Some(Weakening::Full)
        );
        assert_eq!(
            weak("nvram 7C436110-AB2A-4BBB-A880-FE41995C9F82:csr-active-config=%7f%00%00%00"),
            Some(Weakening::Full)
        );
        assert_eq!(weak("nvram boot-args=-v"), Some(Weakening::Partial));
        assert_eq!(weak("nvram -p"), None);
        assert_eq!(weak("nvram -c"), Some(Weakening::Partial));
        assert_eq!(weak("nvram -f /tmp/vars.txt"), Some(Weakening::Partial));
        assert_eq!(weak("nvram -d boot-args"), Some(Weakening::None));
        assert_eq!(weak("nvram -d SystemAudioVolume"), None);
        // The file named by -f is not a variable to read.
        match classify(
            Tool::Nvram,
            &args("nvram -f boot-args=amfi_get_out_of_my_way=1"),
        ) {
            Invocation::PolicyChange(p) => {
                assert!(p.what.starts_with("nvram -f boot-args="), "{}", p.what)
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(weak("nvram boot-args"), None);
    }

    #[test]
    fn spctl_and_sysext() {
        let Invocation::PolicyChange(p) =
            classify(Tool::Spctl, &args("spctl kext-consent add ABCDE12345"))
        else {
            panic!()
        };
        assert_eq!(
            (p.area, p.team_id.as_deref()),
            (PolicyArea::KextConsent, Some("ABCDE12345"))
        );
        assert!(matches!(
            classify(Tool::Spctl, &args("spctl kext-consent status")),
            Invocation::Discovery { .. }
        ));
        assert!(matches!(
            classify(Tool::Spctl, &args("spctl --master-disable")),
            Invocation::PolicyChange(PolicyChange {
                area: PolicyArea::Gatekeeper,
                ..
            })
        ));
        assert!(matches!(
            classify(Tool::Spctl, &args("spctl --status")),
            Invocation::Discovery { .. }
        ));
        assert!(matches!(
            classify(
                Tool::Systemextensionsctl,
                &args("systemextensionsctl developer on")
            ),
            Invocation::PolicyChange(PolicyChange {
                weakens: Weakening::Full,
                ..
            })
        ));
        assert!(matches!(
            classify(Tool::Systemextensionsctl, &args("systemextensionsctl list")),
            Invocation::Discovery { .. }
        ));
    }
}
