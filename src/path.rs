//! Paths from events are untrusted: they may carry `..`, doubled slashes, another letter case (APFS is
//! case-insensitive by default) or the Data-volume firmlink prefix. Everything here compares paths
//! after lexical normalisation and ignoring ASCII case.

use std::borrow::Cow;

/// The Data volume's firmlinked view of `/Library`, `/Users`, ... (`/System/Volumes/Data/Library/X`
/// is `/Library/X`).
const DATA_VOLUME: &str = "/System/Volumes/Data";

/// Whether an absolute path has a component that normalising changes: empty (`//`, a trailing
/// `/` other than the root's), `.` or `..`. One pass over the bytes: this runs for every path of
/// every file event.
fn has_dot_or_empty_component(p: &[u8]) -> bool {
    p.iter().enumerate().any(|(i, &b)| {
        b == b'/'
            && match &p[i + 1..] {
                [] => i > 0,
                [b'/', ..] | [b'.'] | [b'.', b'/', ..] | [b'.', b'.'] | [b'.', b'.', b'/', ..] => {
                    true
                }
                _ => false,
            }
    })
}

/// Lexically normalise an absolute path: collapse `//` and `.`, resolve `..` (never above `/`), drop a
/// trailing `/`, and map the Data-volume prefix to the root. Relative paths are returned as they are.
pub fn normalize(p: &str) -> Cow<'_, str> {
    if !p.starts_with('/') {
        return Cow::Borrowed(p);
    }
    if !has_dot_or_empty_component(p.as_bytes()) && !starts_with_ignore_case(p, DATA_VOLUME) {
        return Cow::Borrowed(p);
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    // Strip the firmlink prefix: System/Volumes/Data/<rest> -> <rest>.
    if parts.len() >= 3
        && parts[0].eq_ignore_ascii_case("System")
        && parts[1].eq_ignore_ascii_case("Volumes")
        && parts[2].eq_ignore_ascii_case("Data")
    {
        parts.drain(..3);
    }
    let mut out = String::with_capacity(p.len());
    for c in &parts {
        out.push('/');
        out.push_str(c);
    }
    if out.is_empty() {
        out.push('/');
    }
    Cow::Owned(out)
}

/// Resolve a command-line path argument against the process's working directory.
pub fn resolve(arg: &str, cwd: Option<&str>) -> String {
    if arg.starts_with('/') {
        normalize(arg).into_owned()
    } else {
        let base = cwd.unwrap_or("/");
        normalize(&format!("{}/{arg}", base.trim_end_matches('/'))).into_owned()
    }
}

fn starts_with_ignore_case(s: &str, prefix: &str) -> bool {
    s.len() >= prefix.len() && s.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
}

/// Is normalised `path` the root itself or inside it (ASCII case-insensitive)?
pub fn is_under(path: &str, root: &str) -> bool {
    starts_with_ignore_case(path, root)
        && (path.len() == root.len() || path.as_bytes().get(root.len()) == Some(&b'/'))
}

/// If `path` is inside one of `roots`, the root and the first component below it (the bundle, e.g.
/// `/Library/Extensions/Foo.kext`), as written in the path.
pub fn bundle_under<'a>(path: &'a str, roots: &[String]) -> Option<(&'a str, &'a str)> {
    let root = roots.iter().find(|r| is_under(path, r))?;
    let rest = path.get(root.len()..)?.trim_start_matches('/');
    let first = rest.split('/').next().unwrap_or("");
    let bundle_end = path.len() - rest.len() + first.len();
    Some((&path[..root.len()], &path[..bundle_end]))
}

/// Locations a legitimate kext is never loaded or installed from: temporary, per-user and removable.
const UNEXPECTED_PREFIXES: [&str; 8] = [
    "/tmp",
    "/private/tmp",
    "/var/tmp",
    "/private/var/tmp",
    "/var/folders",
    "/private/var/folders",
    "/Users",
    "/Volumes",
];

/// Where macOS keeps what decides which kexts load: written only by Apple's daemons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KextStore {
    /// The folder or database (a database also matches its `-wal`, `-shm` and `-journal`).
    pub path: &'static str,
    pub what: &'static str,
    /// The database of consents: writing it is approving kexts behind the user's back.
    pub consent: bool,
}

/// (`/Library/StagedExtensions` is a watched root instead: what lands there is a staged bundle.)
pub const KEXT_STORES: [KextStore; 3] = [
    KextStore {
        path: "/private/var/db/SystemPolicyConfiguration/KextPolicy",
        what: "the KextPolicy database (kext approvals and load history)",
        consent: true,
    },
    KextStore {
        path: "/Library/KernelCollections",
        what: "the auxiliary kernel collection",
        consent: false,
    },
    KextStore {
        path: "/private/var/db/KernelExtensionManagement",
        what: "kernelmanagerd's staging and collection state",
        consent: false,
    },
];

/// The store a (normalised) path belongs to. `/var` is matched as `/private/var`, its real path.
pub fn kext_store(path: &str) -> Option<&'static KextStore> {
    // Compared without the `/private` of `/private/var`, so the `/var` symlink matches too. No
    // allocation: this runs for every file event the decoder sees.
    let strip = |p: &'static str| p.strip_prefix("/private").unwrap_or(p);
    let path = match path.get(..13) {
        Some(p) if p.eq_ignore_ascii_case("/private/var/") => &path[8..],
        _ => path,
    };
    KEXT_STORES.iter().find(|s| {
        let store = strip(s.path);
        is_under(path, store)
            || (starts_with_ignore_case(path, store)
                && ["-wal", "-shm", "-journal"]
                    .iter()
                    .any(|x| path.as_bytes()[store.len()..].eq_ignore_ascii_case(x.as_bytes())))
    })
}

/// Why a (normalised) path is an unexpected place for a kext, if it is.
pub fn unexpected_location(path: &str) -> Option<&'static str> {
    if UNEXPECTED_PREFIXES.iter().any(|p| is_under(path, p)) {
        if path.split('/').any(|c| c.eq_ignore_ascii_case("Downloads")) {
            return Some("a Downloads folder");
        }
        return Some(if is_under(path, "/Volumes") {
            "a mounted volume"
        } else if is_under(path, "/Users") {
            "a user's home folder"
        } else {
            "a temporary folder"
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_already_normal_is_returned_without_a_copy() {
        // Every file event's path goes through here: the common case must not allocate.
        for p in ["/", "/Library/Extensions/Foo.kext", "/a"] {
            assert!(matches!(normalize(p), Cow::Borrowed(_)), "{p}");
        }
        for p in [
            "/Library/Extensions/",
            "//Library",
            "/System/Volumes/Data/Library",
        ] {
            assert!(matches!(normalize(p), Cow::Owned(_)), "{p}");
        }
    }

    #[test]
    fn the_one_pass_check_finds_exactly_the_components_normalising_changes() {
        // Every path of up to 7 characters from `/`, `.` and `a`, against the definition.
        let definition = |p: &str| {
            p.contains("//")
                || p.contains("/./")
                || p.contains("/../")
                || p.ends_with("/.")
                || p.ends_with("/..")
                || (p.len() > 1 && p.ends_with('/'))
        };
        let mut paths = vec![String::from("/")];
        for _ in 0..6 {
            let longer: Vec<String> = paths
                .iter()
                .flat_map(|p| ["/", ".", "a"].map(|c| format!("{p}{c}")))
                .collect();
            for p in &longer {
                assert_eq!(
                    has_dot_or_empty_component(p.as_bytes()),
                    definition(p),
                    "{p}"
                );
            }
            paths = longer;
        }
    }

    #[test]
    fn normalize_defeats_path_tricks() {
        assert_eq!(
            normalize("/Library/Extensions/A.kext"),
            "/Library/Extensions/A.kext"
        );
        assert_eq!(
            normalize("//Library///Extensions/./A.kext/"),
            "/Library/Extensions/A.kext"
        );
        assert_eq!(
            normalize("/tmp/../Library/Extensions/A.kext"),
            "/Library/Extensions/A.kext"
        );
        assert_eq!(normalize("/../../Library"), "/Library");
        assert_eq!(
            normalize("/System/Volumes/Data/Library/Extensions/A.kext"),
            "/Library/Extensions/A.kext"
        );
        assert_eq!(normalize("/"), "/");
        assert_eq!(normalize("rel/x"), "rel/x");
        // Each trick alone (a fast path skips clean paths, so every trigger must be seen).
        for (tricky, clean) in [
            ("/Library//Extensions", "/Library/Extensions"),
            ("/Library/./Extensions", "/Library/Extensions"),
            ("/Library/X/../Extensions", "/Library/Extensions"),
            ("/Library/Extensions/.", "/Library/Extensions"),
            ("/Library/Extensions/A.kext/..", "/Library/Extensions"),
            ("/Library/Extensions/", "/Library/Extensions"),
            (
                "/system/volumes/data/Library/Extensions",
                "/Library/Extensions",
            ),
        ] {
            assert_eq!(normalize(tricky), clean, "{tricky}");
        }
    }

    #[test]
    fn kext_stores_match_their_database_files_and_real_paths() {
        let db = "/private/var/db/SystemPolicyConfiguration/KextPolicy";
        for p in [
            db.to_string(),
            format!("{db}-wal"),
            format!("{db}-SHM"),
            format!("{db}-journal"),
            "/var/db/SystemPolicyConfiguration/KextPolicy".to_string(),
            "/VAR/db/SystemPolicyConfiguration/KextPolicy-wal".to_string(),
        ] {
            assert!(kext_store(&p).is_some_and(|s| s.consent), "{p}");
        }
        for p in [
            format!("{db}-backup"),
            format!("{db}.old"),
            "/private/var/db/SystemPolicyConfiguration/KextPolicyX".to_string(),
            "/private/var/db/SystemPolicyConfiguration".to_string(),
            "/variant/db/SystemPolicyConfiguration/KextPolicy".to_string(),
        ] {
            assert!(kext_store(&p).is_none(), "{p}");
        }
        let kc = kext_store("/Library/KernelCollections/AuxiliaryKernelExtensions.kc").unwrap();
        assert!(!kc.consent);
        assert!(kext_store("/Library/KernelCollectionsOld/x").is_none());
    }

    #[test]
    fn under_root_ignores_case_but_not_sibling_names() {
        let roots = vec!["/Library/Extensions".to_string()];
        assert!(is_under(
            "/library/extensions/Evil.kext",
            "/Library/Extensions"
        ));
        assert!(!is_under(
            "/Library/ExtensionsBackup/Evil.kext",
            "/Library/Extensions"
        ));
        assert_eq!(
            bundle_under("/Library/Extensions/Evil.kext/Contents/MacOS/Evil", &roots),
            Some(("/Library/Extensions", "/Library/Extensions/Evil.kext"))
        );
        assert_eq!(bundle_under("/Library/Other/x", &roots), None);
    }

    #[test]
    fn unexpected_locations() {
        assert_eq!(
            unexpected_location("/private/tmp/x.kext"),
            Some("a temporary folder")
        );
        assert_eq!(
            unexpected_location("/Users/bob/Downloads/x.kext"),
            Some("a Downloads folder")
        );
        assert_eq!(
            unexpected_location("/Volumes/USB/x.kext"),
            Some("a mounted volume")
        );
        assert_eq!(unexpected_location("/Library/Extensions/x.kext"), None);
        assert_eq!(unexpected_location("/tmpfoo/x.kext"), None);
    }

    #[test]
    fn resolve_relative_against_cwd() {
        assert_eq!(
            resolve("SoftRAID.kext", Some("/Library/Extensions")),
            "/Library/Extensions/SoftRAID.kext"
        );
        assert_eq!(resolve("../x.kext", Some("/tmp/a")), "/tmp/x.kext");
        assert_eq!(resolve("/tmp/x.kext", None), "/tmp/x.kext");
    }
}
