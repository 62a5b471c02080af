//! The embedded code signature: a SuperBlob of CodeDirectories, requirements, entitlements and the CMS
//! signature (xnu `cs_blobs.h`). All fields are big-endian. Every offset and length is checked
//! against the enclosing blob before use; nothing here can read outside the input or loop.

use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384};

pub const CSMAGIC_EMBEDDED_SIGNATURE: u32 = 0xfade_0cc0;
pub const CSMAGIC_CODEDIRECTORY: u32 = 0xfade_0c02;
pub const CSMAGIC_BLOBWRAPPER: u32 = 0xfade_0b01;
const CSSLOT_CODEDIRECTORY: u32 = 0;
const CSSLOT_ALTERNATE_CODEDIRECTORIES: u32 = 0x1000;
/// The last of the five alternate CodeDirectory slots (`CSSLOT_ALTERNATE_CODEDIRECTORY_MAX` = 5).
const ALTERNATE_CODEDIRECTORY_LAST: u32 = 0x1004;
const CSSLOT_SIGNATURESLOT: u32 = 0x10000;
/// CodeDirectory version that added `teamOffset`.
const CS_SUPPORTSTEAMID: u32 = 0x20200;

/// CodeDirectory flags worth reporting.
pub mod cd_flags {
    pub const ADHOC: u32 = 0x2;
    pub const RUNTIME: u32 = 0x1_0000;
    pub const LINKER_SIGNED: u32 = 0x2_0000;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    #[error("signature truncated: {0}")]
    Truncated(&'static str),
    #[error("bad magic {found:#010x} for {what}")]
    BadMagic { what: &'static str, found: u32 },
    #[error("{0}")]
    Malformed(String),
}

/// One CodeDirectory's identity.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CodeDirectory {
    pub version: u32,
    pub flags: u32,
    pub hash_type: &'static str,
    /// First 20 bytes of the CodeDirectory's digest, hex.
    pub cdhash: String,
    pub identifier: String,
    pub team_id: Option<String>,
    /// Non-zero for Apple platform code.
    pub platform: u8,
}

/// What the embedded signature says.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SignatureInfo {
    /// The CodeDirectory in slot 0, then alternates (slot 0x1000...).
    pub code_directories: Vec<CodeDirectory>,
    /// A CMS signature with content (an ad-hoc signature has none, or an empty wrapper).
    pub has_cms: bool,
    /// The CMS signature carries the digest of the slot-0 CodeDirectory (its `messageDigest`
    /// attribute): false when the CodeDirectory was edited after signing. The certificate chain is
    /// not checked here (that is `validity`, on macOS); this only ties the two halves together.
    pub cms_covers_code_directory: bool,
}

impl SignatureInfo {
    /// The CodeDirectory with the strongest hash (what current macOS uses for the cdhash).
    pub fn best(&self) -> Option<&CodeDirectory> {
        let rank = |h: &str| match h {
            "sha384" => 4,
            "sha256" => 3,
            "sha256-truncated" => 2,
            "sha1" => 1,
            _ => 0,
        };
        self.code_directories
            .iter()
            .max_by_key(|cd| rank(cd.hash_type))
    }
}

fn be32(data: &[u8], at: usize, what: &'static str) -> Result<u32, BlobError> {
    let b = data
        .get(at..at.checked_add(4).ok_or(BlobError::Truncated(what))?)
        .ok_or(BlobError::Truncated(what))?;
    Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn byte(data: &[u8], at: usize, what: &'static str) -> Result<u8, BlobError> {
    data.get(at).copied().ok_or(BlobError::Truncated(what))
}

/// A NUL-terminated string at `at` inside `blob`.
fn c_string(blob: &[u8], at: usize, what: &'static str) -> Result<String, BlobError> {
    let rest = blob.get(at..).ok_or(BlobError::Truncated(what))?;
    let end = rest
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| BlobError::Malformed(format!("{what} is not NUL-terminated")))?;
    Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// A sub-blob of `superblob` at `offset`: its magic and its bytes (bounded by its own length).
fn sub_blob(superblob: &[u8], offset: usize) -> Result<(u32, &[u8]), BlobError> {
    let magic = be32(superblob, offset, "blob header")?;
    let len = be32(superblob, offset + 4, "blob header")? as usize;
    if len < 8 {
        return Err(BlobError::Malformed(format!(
            "blob at {offset} declares length {len}"
        )));
    }
    let end = offset
        .checked_add(len)
        .ok_or(BlobError::Truncated("blob"))?;
    let bytes = superblob.get(offset..end).ok_or_else(|| {
        BlobError::Malformed(format!(
            "blob at {offset} of length {len} overruns the signature"
        ))
    })?;
    Ok((magic, bytes))
}

/// Parse an embedded signature (the bytes `LC_CODE_SIGNATURE` points at, or a detached
/// `_CodeSignature/CodeSignature` file).
pub fn parse_signature(data: &[u8]) -> Result<SignatureInfo, BlobError> {
    let magic = be32(data, 0, "superblob header")?;
    if magic != CSMAGIC_EMBEDDED_SIGNATURE {
        return Err(BlobError::BadMagic {
            what: "embedded signature",
            found: magic,
        });
    }
    let declared = be32(data, 4, "superblob header")? as usize;
    let blob = data.get(..declared).ok_or_else(|| {
        BlobError::Malformed(format!(
            "superblob declares {declared} bytes, {} present",
            data.len()
        ))
    })?;
    let count = be32(blob, 8, "superblob header")? as usize;
    // Each index entry is 8 bytes: a count that cannot fit is rejected before iterating.
    if count > (blob.len().saturating_sub(12)) / 8 {
        return Err(BlobError::Malformed(format!(
            "superblob declares {count} entries"
        )));
    }
    let mut info = SignatureInfo {
        code_directories: Vec::new(),
        has_cms: false,
        cms_covers_code_directory: false,
    };
    let mut primary = None;
    let mut primary_bytes: &[u8] = &[];
    let mut cms: &[u8] = &[];
    let mut alternates = Vec::new();
    for i in 0..count {
        let slot = be32(blob, 12 + i * 8, "index")?;
        let offset = be32(blob, 16 + i * 8, "index")? as usize;
        if offset < 12 + count * 8 {
            return Err(BlobError::Malformed(format!(
                "slot {slot:#x} points into the index"
            )));
        }
        let (magic, bytes) = sub_blob(blob, offset)?;
        match slot {
            CSSLOT_CODEDIRECTORY
            | CSSLOT_ALTERNATE_CODEDIRECTORIES..=ALTERNATE_CODEDIRECTORY_LAST => {
                if magic != CSMAGIC_CODEDIRECTORY {
                    return Err(BlobError::BadMagic {
                        what: "CodeDirectory",
                        found: magic,
                    });
                }
                let cd = parse_code_directory(bytes)?;
                if slot == CSSLOT_CODEDIRECTORY {
                    if primary.is_some() {
                        return Err(BlobError::Malformed("two CodeDirectories in slot 0".into()));
                    }
                    primary = Some(cd);
                    primary_bytes = bytes;
                } else {
                    alternates.push(cd);
                }
            }
            CSSLOT_SIGNATURESLOT => {
                if magic != CSMAGIC_BLOBWRAPPER {
                    return Err(BlobError::BadMagic {
                        what: "CMS wrapper",
                        found: magic,
                    });
                }
                cms = bytes.get(8..).unwrap_or_default();
                info.has_cms = !cms.is_empty();
            }
            _ => {}
        }
    }
    let Some(primary) = primary else {
        return Err(BlobError::Malformed("no CodeDirectory".into()));
    };
    info.code_directories.push(primary);
    info.code_directories.extend(alternates);
    info.cms_covers_code_directory = info.has_cms && cms_covers(cms, primary_bytes);
    Ok(info)
}

/// Whether the CMS message holds the digest of `code_directory` in any hash code signing uses
/// (SHA-256 today, SHA-1 for old signatures, SHA-384): the signed `messageDigest` attribute.
fn cms_covers(cms: &[u8], code_directory: &[u8]) -> bool {
    let digests: [Vec<u8>; 3] = [
        Sha256::digest(code_directory).to_vec(),
        Sha1::digest(code_directory).to_vec(),
        Sha384::digest(code_directory).to_vec(),
    ];
    digests
        .iter()
        .any(|d| memchr::memmem::find(cms, d).is_some())
}

fn parse_code_directory(cd: &[u8]) -> Result<CodeDirectory, BlobError> {
    let version = be32(cd, 8, "CodeDirectory")?;
    let flags = be32(cd, 12, "CodeDirectory")?;
    let ident_offset = be32(cd, 20, "CodeDirectory")? as usize;
    let hash_type = byte(cd, 37, "CodeDirectory")?;
    let platform = byte(cd, 38, "CodeDirectory")?;
    let team_id = if version >= CS_SUPPORTSTEAMID {
        match be32(cd, 48, "CodeDirectory team offset")? as usize {
            0 => None,
            at => Some(c_string(cd, at, "team identifier")?),
        }
    } else {
        None
    };
    let identifier = c_string(cd, ident_offset, "identifier")?;
    let (hash_type, digest): (&'static str, Vec<u8>) = match hash_type {
        1 => ("sha1", Sha1::digest(cd).to_vec()),
        2 => ("sha256", Sha256::digest(cd).to_vec()),
        3 => ("sha256-truncated", Sha256::digest(cd).to_vec()),
        4 => ("sha384", Sha384::digest(cd).to_vec()),
        other => return Err(BlobError::Malformed(format!("unknown hash type {other}"))),
    };
    let cdhash = digest.iter().take(20).map(|b| format!("{b:02x}")).collect();
    Ok(CodeDirectory {
        version,
        flags,
        hash_type,
        cdhash,
        identifier,
        team_id,
        platform,
    })
}
