//! Code-signing identity of kext bundles, read from the bundle on disk in portable Rust: the same code
//! runs in the daemon and on a responder's Linux machine over a collected `/Library/Extensions`.
//!
//! - `bundle`: `Contents/Info.plist` and the executable → [`KextIdentity`].
//! - `macho`: thin and universal Mach-O → slices and their `LC_CODE_SIGNATURE` bytes.
//! - `blob`: the SuperBlob → CodeDirectories (identifier, Team ID, flags, cdhash) and CMS presence.
//! - `plist_guard`: refuses plist bombs and nesting deep enough to exhaust a parser's stack.
//! - `cache`: identities cached by path + inode + mtime + size.
//! - `validity`: cryptographic validity through Security.framework on macOS; unknown elsewhere.

pub mod blob;
mod bundle;
mod cache;
pub mod macho;
mod plist_guard;
mod validity;

use serde::Serialize;

pub use bundle::{
    executable_signer, read_identity, BundleError, MAX_EXECUTABLE_BYTES, MAX_PLIST_BYTES,
};
pub use cache::IdentityCache;
pub use plist_guard::check as check_plist;
pub use validity::{check_validity, Validity};

/// How a kext (or one architecture of it) is signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Signature {
    /// The signature is structurally broken (or the bundle unreadable).
    Invalid,
    /// No code signature at all.
    Unsigned,
    /// Signed without an identity: ad hoc, linker-signed, or CMS without a Team ID.
    Adhoc,
    /// A developer's CMS signature with a Team ID.
    Developer,
    /// Apple platform code (CMS, no Team ID, Apple identifier or platform field).
    Apple,
}

impl Signature {
    pub fn as_str(self) -> &'static str {
        match self {
            Signature::Invalid => "invalid",
            Signature::Unsigned => "unsigned",
            Signature::Adhoc => "adhoc",
            Signature::Developer => "developer",
            Signature::Apple => "apple",
        }
    }

    /// No identity stands behind the code: critical context for a kext.
    pub fn lacks_identity(self) -> bool {
        matches!(
            self,
            Signature::Invalid | Signature::Unsigned | Signature::Adhoc
        )
    }
}

/// One architecture's signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SliceIdentity {
    pub arch: String,
    pub signature: Signature,
    pub identifier: Option<String>,
    pub team_id: Option<String>,
    pub cdhash: Option<String>,
    pub hash_type: Option<&'static str>,
    pub adhoc: bool,
    pub linker_signed: bool,
    pub runtime: bool,
    pub has_cms: bool,
    /// Why the slice is `invalid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What kextwatch knows of a kext bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KextIdentity {
    pub path: String,
    pub bundle_id: Option<String>,
    pub version: Option<String>,
    pub executable: Option<String>,
    pub os_bundle_required: Option<String>,
    pub team_id: Option<String>,
    pub signature: Signature,
    pub cdhash: Option<String>,
    pub arch: Vec<String>,
    pub validity: Validity,
    pub slices: Vec<SliceIdentity>,
    /// Why the bundle is `invalid`, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Classify one slice from its parsed signature.
pub fn classify_slice(
    arch: String,
    sig: Option<Result<blob::SignatureInfo, blob::BlobError>>,
) -> SliceIdentity {
    let mut s = SliceIdentity {
        arch,
        signature: Signature::Unsigned,
        identifier: None,
        team_id: None,
        cdhash: None,
        hash_type: None,
        adhoc: false,
        linker_signed: false,
        runtime: false,
        has_cms: false,
        error: None,
    };
    let info = match sig {
        None => return s,
        Some(Err(e)) => {
            s.signature = Signature::Invalid;
            s.error = Some(e.to_string());
            return s;
        }
        Some(Ok(info)) => info,
    };
    let Some(cd) = info.best() else {
        s.signature = Signature::Invalid;
        return s;
    };
    s.identifier = Some(cd.identifier.clone());
    s.team_id = cd.team_id.clone().filter(|t| !t.is_empty());
    s.cdhash = Some(cd.cdhash.clone());
    s.hash_type = Some(cd.hash_type);
    s.adhoc = cd.flags & blob::cd_flags::ADHOC != 0;
    s.linker_signed = cd.flags & blob::cd_flags::LINKER_SIGNED != 0;
    s.runtime = cd.flags & blob::cd_flags::RUNTIME != 0;
    s.has_cms = info.has_cms;
    // Alternate CodeDirectories must agree on who signed.
    if info
        .code_directories
        .iter()
        .any(|c| c.identifier != cd.identifier || c.team_id != cd.team_id)
    {
        s.signature = Signature::Invalid;
        s.error = Some("CodeDirectories disagree on identifier or Team ID".into());
        return s;
    }
    if s.has_cms && !info.cms_covers_code_directory {
        s.signature = Signature::Invalid;
        s.error = Some(
            "the CMS signature does not cover the CodeDirectory (edited after signing)".into(),
        );
        return s;
    }
    s.signature = if s.adhoc || !s.has_cms {
        Signature::Adhoc
    } else if s.team_id.is_some() {
        Signature::Developer
    } else if cd.platform != 0 || cd.identifier.starts_with("com.apple.") {
        Signature::Apple
    } else {
        Signature::Adhoc
    };
    s
}

/// The bundle's overall signature: any invalid slice makes it invalid, otherwise the weakest slice
/// decides; developer slices must share one Team ID.
pub fn combine(
    slices: &[SliceIdentity],
) -> (Signature, Option<String>, Option<String>, Option<String>) {
    if let Some(bad) = slices.iter().find(|s| s.signature == Signature::Invalid) {
        return (Signature::Invalid, None, None, bad.error.clone());
    }
    let teams: std::collections::BTreeSet<&String> =
        slices.iter().filter_map(|s| s.team_id.as_ref()).collect();
    if teams.len() > 1 {
        return (
            Signature::Invalid,
            None,
            None,
            Some("architectures are signed by different teams".into()),
        );
    }
    let weakest = slices
        .iter()
        .map(|s| s.signature)
        .min_by_key(|s| match s {
            Signature::Invalid => 0,
            Signature::Unsigned => 1,
            Signature::Adhoc => 2,
            Signature::Developer | Signature::Apple => 3,
        })
        .unwrap_or(Signature::Unsigned);
    // A Team ID stands for the bundle only when every architecture is signed by that team.
    let team = teams
        .into_iter()
        .next()
        .cloned()
        .filter(|_| weakest == Signature::Developer);
    let cdhash = slices.iter().find_map(|s| s.cdhash.clone());
    (weakest, team, cdhash, None)
}
