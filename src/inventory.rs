//! `kextwatch inventory`: every kext under the given roots with its signing identity, and an allowlist
//! baseline admins can start from.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::signing::{IdentityCache, KextIdentity, Signature};
use crate::text::{cell, escape_controls};

/// Kexts nest (`Contents/PlugIns/*.kext`); real trees are shallow, so deeper ones are not walked.
const MAX_DEPTH: usize = 12;

fn is_kext_dir(p: &Path) -> bool {
    p.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("kext"))
}

/// Kext bundles under `root` (or `root` itself), in path order. Symlinks are never followed.
/// Unreadable directories are reported, and the walk goes on.
pub fn find_kexts(root: &Path) -> (Vec<PathBuf>, Vec<String>) {
    let mut found = Vec::new();
    let mut errors = Vec::new();
    // (path, depth, known to be a real directory from its directory entry)
    let mut stack = vec![(root.to_path_buf(), 0usize, false)];
    while let Some((dir, depth, known_dir)) = stack.pop() {
        if !known_dir {
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => continue,
                // A kext without plug-ins is the common case, not an error.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && depth > 0 => continue,
                Err(e) => {
                    errors.push(format!("{}: {e}", dir.display()));
                    continue;
                }
            }
        }
        if depth >= MAX_DEPTH {
            if is_kext_dir(&dir) {
                found.push(dir);
            } else {
                errors.push(format!(
                    "{}: deeper than {MAX_DEPTH} levels, not searched",
                    dir.display()
                ));
            }
            continue;
        }
        if is_kext_dir(&dir) {
            // Inside a kext, only plug-ins can hold further kexts.
            stack.push((dir.join("Contents/PlugIns"), depth + 1, false));
            found.push(dir);
            continue;
        }
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) => {
                errors.push(format!("{}: {e}", dir.display()));
                continue;
            }
        };
        for entry in entries.flatten() {
            // The entry's own type: a symlink is never a directory here, so it is never followed.
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push((entry.path(), depth + 1, true));
            }
        }
    }
    found.sort();
    (found, errors)
}

/// The identity of every kext under `roots`.
pub fn inventory(roots: &[PathBuf], cache: &mut IdentityCache) -> (Vec<KextIdentity>, Vec<String>) {
    let mut kexts = Vec::new();
    let mut errors = Vec::new();
    for root in roots {
        let (found, errs) = find_kexts(root);
        errors.extend(errs);
        kexts.extend(found.iter().map(|k| cache.lookup(k)));
    }
    (kexts, errors)
}

/// One aligned row per kext.
pub fn render_table(kexts: &[KextIdentity]) -> String {
    let header = [
        "path",
        "bundle_id",
        "version",
        "team_id",
        "signature",
        "arch",
        "cdhash",
    ];
    let rows: Vec<[String; 7]> = kexts
        .iter()
        .map(|k| {
            [
                escape_controls(&k.path).into_owned(),
                cell(k.bundle_id.as_deref()),
                cell(k.version.as_deref()),
                cell(k.team_id.as_deref()),
                k.signature.as_str().to_string(),
                if k.arch.is_empty() {
                    "-".into()
                } else {
                    k.arch.join(",")
                },
                cell(k.cdhash.as_deref()),
            ]
        })
        .collect();
    crate::text::table(&header, &rows, 0, 2)
}

fn valid_team(t: &str) -> bool {
    t.len() == 10
        && t.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn valid_bundle(b: &str) -> bool {
    !b.is_empty()
        && b.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_'))
}

/// An `[allowlist]` block listing each developer-signed kext by Team ID and bundle id, with comments
/// naming it; kexts that cannot be allowlisted (no Team ID) are listed as comments. `check-config`
/// accepts the output.
pub fn baseline_toml(kexts: &[KextIdentity], roots: &[PathBuf]) -> String {
    let mut out = String::new();
    let roots: Vec<String> = roots
        .iter()
        .map(|r| escape_controls(&r.display().to_string()).into_owned())
        .collect();
    let _ = writeln!(
        out,
        "# Allowlist baseline from `kextwatch inventory --baseline` over: {}",
        roots.join(", ")
    );
    let _ = writeln!(
        out,
        "# Review it: each entry trusts that team's kext with that bundle id."
    );
    out.push_str("[allowlist]\nkexts = [\n");
    let mut skipped = Vec::new();
    for k in kexts {
        match (k.signature, k.team_id.as_deref(), k.bundle_id.as_deref()) {
            (Signature::Developer, Some(t), Some(b)) if valid_team(t) && valid_bundle(b) => {
                let _ = writeln!(
                    out,
                    "    {{ team_id = \"{t}\", bundle_id = \"{b}\" }}, # {} {}",
                    escape_controls(&k.path),
                    cell(k.version.as_deref())
                );
            }
            (Signature::Apple, ..) => {}
            _ => skipped.push(k),
        }
    }
    out.push_str("]\n");
    if !skipped.is_empty() {
        out.push_str("# Not allowlisted (no developer Team ID, or an identity that cannot be written here):\n");
        for k in skipped {
            let _ = writeln!(
                out,
                "#   {}  bundle {}  team {}  signature {}",
                escape_controls(&k.path),
                cell(k.bundle_id.as_deref()),
                cell(k.team_id.as_deref()),
                k.signature.as_str()
            );
        }
    }
    out
}
