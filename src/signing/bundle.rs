//! A kext bundle on disk: `Contents/Info.plist`, the executable under `Contents/MacOS/`, and its
//! signature. Every path is checked to stay inside the bundle, and every read is size-bounded.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::blob::parse_signature;
use super::macho::slices;
use super::{classify_slice, combine, KextIdentity, Signature, SliceIdentity, Validity};

/// Info.plist files are a few KB; a larger one is refused rather than parsed.
pub const MAX_PLIST_BYTES: u64 = 1024 * 1024;
/// Kext executables are at most tens of MB.
pub const MAX_EXECUTABLE_BYTES: u64 = 256 * 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("{0}")]
    Io(String),
    #[error("{path}: {size} bytes exceeds the {limit} byte limit")]
    TooLarge { path: String, size: u64, limit: u64 },
    #[error("{0} leads outside the bundle")]
    Escapes(String),
    #[error("Info.plist: {0}")]
    Plist(String),
}

#[derive(Deserialize, Default)]
struct InfoPlist {
    #[serde(rename = "CFBundleIdentifier")]
    bundle_id: Option<String>,
    #[serde(rename = "CFBundleExecutable")]
    executable: Option<String>,
    #[serde(rename = "CFBundleVersion")]
    version: Option<String>,
    #[serde(rename = "CFBundleShortVersionString")]
    short_version: Option<String>,
    #[serde(rename = "OSBundleRequired")]
    os_bundle_required: Option<String>,
}

/// Resolve `rel` inside `bundle`: symlinks may point anywhere inside the bundle, never out of it.
fn inside(bundle: &Path, rel: &Path) -> Result<PathBuf, BundleError> {
    let p = bundle.join(rel);
    let root = bundle
        .canonicalize()
        .map_err(|e| BundleError::Io(format!("{}: {e}", bundle.display())))?;
    let real = p
        .canonicalize()
        .map_err(|e| BundleError::Io(format!("{}: {e}", p.display())))?;
    if real.starts_with(&root) {
        Ok(real)
    } else {
        Err(BundleError::Escapes(rel.display().to_string()))
    }
}

/// Read at most `limit` bytes of a regular file, refusing larger ones and anything else (a FIFO
/// planted as Info.plist must not hang the reader).
fn read_bounded(path: &Path, limit: u64) -> Result<Vec<u8>, BundleError> {
    use crate::files::{read_regular, Links, ReadError};
    // Symlinks were resolved (and kept inside the bundle) by `inside`.
    read_regular(path, limit, Links::Follow).map_err(|e| match e {
        ReadError::TooLarge { size, limit } => BundleError::TooLarge {
            path: path.display().to_string(),
            size,
            limit,
        },
        e => BundleError::Io(format!("{}: {e}", path.display())),
    })
}

fn read_info_plist(bundle: &Path) -> Result<InfoPlist, BundleError> {
    let path = inside(bundle, Path::new("Contents/Info.plist"))?;
    let bytes = read_bounded(&path, MAX_PLIST_BYTES)?;
    super::plist_guard::check(&bytes).map_err(|e| BundleError::Plist(e.to_string()))?;
    plist::from_bytes(&bytes).map_err(|e| BundleError::Plist(e.to_string()))
}

/// The executable named by `CFBundleExecutable`: a bare file name, never a path.
fn executable_path(bundle: &Path, name: &str) -> Result<PathBuf, BundleError> {
    let mut comps = Path::new(name).components();
    match (comps.next(), comps.next()) {
        (Some(Component::Normal(_)), None) => {
            inside(bundle, &Path::new("Contents/MacOS").join(name))
        }
        _ => Err(BundleError::Escapes(format!("CFBundleExecutable {name:?}"))),
    }
}

fn signature_slices(bytes: &[u8]) -> Result<Vec<SliceIdentity>, String> {
    let slices = slices(bytes).map_err(|e| e.to_string())?;
    Ok(slices
        .into_iter()
        .map(|s| classify_slice(s.arch, s.signature.map(parse_signature)))
        .collect())
}

/// Who signed a Mach-O executable: its overall signature and Team ID (the bundle rules: every
/// architecture must agree).
pub fn executable_signer(path: &Path) -> Result<(Signature, Option<String>), BundleError> {
    let bytes = read_bounded(path, MAX_EXECUTABLE_BYTES)?;
    let slices = signature_slices(&bytes).map_err(BundleError::Io)?;
    let (signature, team, _, _) = combine(&slices);
    Ok((signature, team))
}

/// Read a kext bundle's identity. Never fails: problems make it `invalid` with an `error`.
pub fn read_identity(bundle: &Path) -> KextIdentity {
    let mut id = KextIdentity {
        path: bundle.display().to_string(),
        bundle_id: None,
        version: None,
        executable: None,
        os_bundle_required: None,
        team_id: None,
        signature: Signature::Invalid,
        cdhash: None,
        arch: Vec::new(),
        validity: Validity::Unknown,
        slices: Vec::new(),
        error: None,
    };
    let result = (|| -> Result<(), String> {
        let meta =
            std::fs::symlink_metadata(bundle).map_err(|e| format!("{}: {e}", bundle.display()))?;
        if !meta.is_dir() {
            return Err("not a bundle directory (symlinked bundles are not followed)".into());
        }
        let info = read_info_plist(bundle).map_err(|e| e.to_string())?;
        id.bundle_id = info.bundle_id;
        id.version = info.version.or(info.short_version);
        id.os_bundle_required = info.os_bundle_required;
        id.executable = info.executable.clone();
        id.slices = match &info.executable {
            Some(name) => {
                let exe = executable_path(bundle, name).map_err(|e| e.to_string())?;
                let bytes = read_bounded(&exe, MAX_EXECUTABLE_BYTES).map_err(|e| e.to_string())?;
                signature_slices(&bytes)?
            }
            // A codeless kext: signed, if at all, by a detached signature file.
            None => match inside(bundle, Path::new("Contents/_CodeSignature/CodeSignature")) {
                Ok(p) => {
                    let bytes = read_bounded(&p, MAX_PLIST_BYTES).map_err(|e| e.to_string())?;
                    vec![classify_slice("none".into(), Some(parse_signature(&bytes)))]
                }
                Err(_) => vec![classify_slice("none".into(), None)],
            },
        };
        Ok(())
    })();
    match result {
        Err(e) => id.error = Some(e),
        Ok(()) => {
            let (signature, team, cdhash, error) = combine(&id.slices);
            id.signature = signature;
            id.team_id = team;
            id.cdhash = cdhash;
            id.error = error;
            id.arch = id
                .slices
                .iter()
                .filter(|s| s.arch != "none")
                .map(|s| s.arch.clone())
                .collect();
            id.validity = super::check_validity(bundle);
        }
    }
    id
}
