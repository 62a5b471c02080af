//! Kext bundle identity from real signed fixtures (scripts/make-kext-fixtures.sh), hostile bundles,
//! the identity cache, inventory and its allowlist baseline.

use std::path::{Path, PathBuf};

use kextwatch::config::{Config, KextTrust};
use kextwatch::inventory::{baseline_toml, find_kexts, inventory};
use kextwatch::signing::{read_identity, IdentityCache, Signature, Validity};

const TEAM: &str = "K3XW9TESTQ";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kexts")
}

fn fixture(name: &str) -> PathBuf {
    fixtures().join(format!("{name}.kext"))
}

/// A copy of a fixture bundle in a temp dir, to damage.
fn copy_bundle(name: &str, dir: &Path) -> PathBuf {
    let src = fixture(name);
    let dst = dir.join(format!("{name}.kext"));
    for rel in ["Contents/Info.plist", &format!("Contents/MacOS/{name}")] {
        let to = dst.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(src.join(rel), to).unwrap();
    }
    dst
}

#[test]
fn classifies_real_signatures() {
    let unsigned = read_identity(&fixture("Unsigned"));
    assert_eq!(
        (unsigned.signature, unsigned.arch.clone()),
        (Signature::Unsigned, vec!["x86_64".to_string()])
    );
    assert_eq!((unsigned.team_id, unsigned.cdhash), (None, None));
    assert_eq!(
        unsigned.bundle_id.as_deref(),
        Some("com.example.kextwatch.unsigned")
    );
    assert_eq!(unsigned.version.as_deref(), Some("1.4.2"));
    assert_eq!(unsigned.os_bundle_required.as_deref(), Some("Safe Boot"));

    // lld signs arm64 ad hoc; this bundle's Info.plist is a binary plist.
    let adhoc = read_identity(&fixture("Adhoc"));
    assert_eq!(adhoc.signature, Signature::Adhoc, "{adhoc:#?}");
    assert_eq!(
        adhoc.bundle_id.as_deref(),
        Some("com.example.kextwatch.adhoc")
    );
    let s = &adhoc.slices[0];
    assert!(s.adhoc && s.linker_signed && !s.has_cms, "{s:?}");
    assert_eq!(adhoc.cdhash.as_ref().map(String::len), Some(40));

    let dev = read_identity(&fixture("Developer"));
    assert_eq!(
        (dev.signature, dev.team_id.as_deref()),
        (Signature::Developer, Some(TEAM)),
        "{dev:#?}"
    );
    let s = &dev.slices[0];
    assert!(s.has_cms && s.runtime && !s.adhoc, "{s:?}");
    assert_eq!(
        s.identifier.as_deref(),
        Some("com.example.kextwatch.developer")
    );
    assert_eq!(s.hash_type, Some("sha256"));
    assert_eq!(dev.validity, Validity::Unknown);
    assert!(dev.error.is_none());
}

#[test]
fn universal_binaries_32_and_64_bit_headers() {
    for name in ["Universal", "Universal64"] {
        let k = read_identity(&fixture(name));
        assert_eq!(k.arch, ["x86_64", "arm64"], "{name}");
        assert_eq!(
            (k.signature, k.team_id.as_deref()),
            (Signature::Developer, Some(TEAM)),
            "{name}"
        );
        assert!(k.slices.iter().all(|s| s.team_id.as_deref() == Some(TEAM)));
        // Each architecture has its own CodeDirectory, so its own cdhash.
        assert_ne!(k.slices[0].cdhash, k.slices[1].cdhash);
    }
    // A developer x86_64 slice with an ad-hoc arm64 slice is only as trustworthy as its weakest part.
    let mixed = read_identity(&fixture("Mixed"));
    assert_eq!(
        (mixed.signature, mixed.team_id.clone()),
        (Signature::Adhoc, None)
    );
    assert_eq!(mixed.slices[0].signature, Signature::Developer);
}

#[test]
fn codeless_kext_is_identified_by_its_plist() {
    let k = read_identity(&fixture("Codeless"));
    assert_eq!(
        k.bundle_id.as_deref(),
        Some("com.example.kextwatch.codeless")
    );
    assert_eq!(
        (k.signature, k.executable.clone(), k.arch.len()),
        (Signature::Unsigned, None, 0)
    );
}

#[test]
fn damaged_executables_are_invalid_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = copy_bundle("Developer", dir.path());
    let exe = bundle.join("Contents/MacOS/Developer");
    let good = std::fs::read(&exe).unwrap();

    // Truncated in the middle of the signature.
    std::fs::write(&exe, &good[..good.len() - 200]).unwrap();
    let k = read_identity(&bundle);
    assert_eq!(k.signature, Signature::Invalid);
    assert!(k.error.is_some());

    // Truncated in the header.
    std::fs::write(&exe, &good[..20]).unwrap();
    assert_eq!(read_identity(&bundle).signature, Signature::Invalid);

    // The SuperBlob declares a huge entry count / the CodeDirectory a huge length.
    let sig_at = find(&good, &[0xfa, 0xde, 0x0c, 0xc0]).unwrap();
    let mut bad = good.clone();
    bad[sig_at + 8..sig_at + 12].copy_from_slice(&0x4000_0000u32.to_be_bytes());
    std::fs::write(&exe, &bad).unwrap();
    let k = read_identity(&bundle);
    assert!(
        k.error.as_deref().unwrap().contains("entries"),
        "{:?}",
        k.error
    );
    let cd_at = find(&good, &[0xfa, 0xde, 0x0c, 0x02]).unwrap();
    let mut bad = good.clone();
    bad[cd_at + 4..cd_at + 8].copy_from_slice(&u32::MAX.to_be_bytes());
    std::fs::write(&exe, &bad).unwrap();
    let k = read_identity(&bundle);
    assert_eq!(k.signature, Signature::Invalid);
    assert!(
        k.error.as_deref().unwrap().contains("overruns"),
        "{:?}",
        k.error
    );

    // LC_CODE_SIGNATURE pointing past the end of the file.
    let lc = find(&good, &[0x1d, 0, 0, 0, 0x10, 0, 0, 0]).unwrap();
    let mut bad = good.clone();
    bad[lc + 8..lc + 12].copy_from_slice(&0xffff_ff00u32.to_le_bytes());
    std::fs::write(&exe, &bad).unwrap();
    let k = read_identity(&bundle);
    assert_eq!(k.signature, Signature::Invalid, "{k:?}");

    // Not a Mach-O at all.
    std::fs::write(&exe, b"#!/bin/sh\necho not a kext\n").unwrap();
    assert!(read_identity(&bundle)
        .error
        .unwrap()
        .contains("not a Mach-O"));
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn paths_never_leave_the_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = copy_bundle("Developer", dir.path());
    let plist = bundle.join("Contents/Info.plist");
    let text = std::fs::read_to_string(&plist).unwrap();

    // CFBundleExecutable naming a path.
    std::fs::write(
        &plist,
        text.replace(
            "<string>Developer</string>",
            "<string>../../../../etc/passwd</string>",
        ),
    )
    .unwrap();
    let k = read_identity(&bundle);
    assert!(k.error.unwrap().contains("leads outside the bundle"));

    // The executable is a symlink out of the bundle.
    std::fs::write(&plist, &text).unwrap();
    let exe = bundle.join("Contents/MacOS/Developer");
    std::fs::remove_file(&exe).unwrap();
    let outside = dir.path().join("elsewhere");
    std::fs::copy(
        fixture("Developer").join("Contents/MacOS/Developer"),
        &outside,
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, &exe).unwrap();
    assert!(read_identity(&bundle)
        .error
        .unwrap()
        .contains("outside the bundle"));

    // A symlink inside the bundle is fine.
    std::fs::remove_file(&exe).unwrap();
    std::fs::copy(&outside, bundle.join("Contents/MacOS/real")).unwrap();
    std::os::unix::fs::symlink("real", &exe).unwrap();
    assert_eq!(read_identity(&bundle).signature, Signature::Developer);

    // A symlinked bundle is not followed.
    let link = dir.path().join("Link.kext");
    std::os::unix::fs::symlink(&bundle, &link).unwrap();
    assert!(read_identity(&link)
        .error
        .unwrap()
        .contains("symlinked bundles are not followed"));
}

/// A binary plist whose 41 objects expand to 2^40 nodes: each array holds two references to the next.
fn plist_bomb() -> Vec<u8> {
    let levels = 40usize;
    let mut out = b"bplist00".to_vec();
    let mut offsets = Vec::new();
    for i in 0..levels {
        offsets.push(out.len());
        out.extend_from_slice(&[0xA2, (i + 1) as u8, (i + 1) as u8]);
    }
    offsets.push(out.len());
    out.extend_from_slice(&[0x51, b'x']);
    let table = out.len();
    for o in &offsets {
        out.extend_from_slice(&(*o as u16).to_be_bytes());
    }
    let mut trailer = vec![0u8; 6];
    trailer.extend_from_slice(&[2, 1]);
    trailer.extend_from_slice(&(offsets.len() as u64).to_be_bytes());
    trailer.extend_from_slice(&0u64.to_be_bytes());
    trailer.extend_from_slice(&(table as u64).to_be_bytes());
    out.extend_from_slice(&trailer);
    out
}

#[test]
fn plist_bombs_and_huge_plists_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = copy_bundle("Developer", dir.path());
    let plist = bundle.join("Contents/Info.plist");
    std::fs::write(&plist, plist_bomb()).unwrap();
    // 2^40 nodes when expanded: a guard that walked the expansion would never return (the test
    // then hangs, which CI reports), so no clock is needed to tell.
    let k = read_identity(&bundle);
    assert!(
        k.error.as_deref().unwrap().contains("expands to more than"),
        "{:?}",
        k.error
    );

    std::fs::write(&plist, vec![b' '; 2 * 1024 * 1024]).unwrap();
    assert!(read_identity(&bundle)
        .error
        .unwrap()
        .contains("exceeds the 1048576 byte limit"));

    std::fs::remove_file(&plist).unwrap();
    assert_eq!(read_identity(&bundle).signature, Signature::Invalid);
}

#[test]
fn cache_rereads_only_changed_bundles() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = copy_bundle("Developer", dir.path());
    let mut cache = IdentityCache::new();
    assert_eq!(cache.lookup(&bundle).signature, Signature::Developer);
    assert_eq!(cache.lookup(&bundle).signature, Signature::Developer);
    assert_eq!((cache.misses, cache.hits), (1, 1));
    // Replace the executable with the unsigned one: a new inode and size.
    let exe = bundle.join("Contents/MacOS/Developer");
    std::fs::remove_file(&exe).unwrap();
    std::fs::copy(fixture("Unsigned").join("Contents/MacOS/Unsigned"), &exe).unwrap();
    assert_eq!(cache.lookup(&bundle).signature, Signature::Unsigned);
    assert_eq!(cache.misses, 2);
}

#[test]
fn inventory_walks_on_past_bad_kexts_and_the_baseline_is_a_valid_config() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Library/Extensions");
    std::fs::create_dir_all(&root).unwrap();
    for k in ["Developer", "Unsigned", "Adhoc"] {
        copy_bundle(k, &root);
    }
    // A broken kext, a nested plug-in kext, and a symlink loop the walk must not follow.
    std::fs::create_dir_all(root.join("Broken.kext/Contents")).unwrap();
    let plugins = root.join("Developer.kext/Contents/PlugIns");
    std::fs::create_dir_all(&plugins).unwrap();
    copy_bundle("Universal", &plugins);
    std::os::unix::fs::symlink(&root, root.join("loop")).unwrap();

    let (found, errors) = find_kexts(dir.path());
    assert!(errors.is_empty(), "{errors:?}");
    let names: Vec<String> = found
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "Adhoc.kext",
            "Broken.kext",
            "Developer.kext",
            "Universal.kext",
            "Unsigned.kext"
        ]
    );

    let (kexts, _) = inventory(&[dir.path().to_path_buf()], &mut IdentityCache::new());
    let sigs: Vec<Signature> = kexts.iter().map(|k| k.signature).collect();
    use Signature::*;
    assert_eq!(sigs, [Adhoc, Invalid, Developer, Developer, Unsigned]);

    let toml = baseline_toml(&kexts, &[dir.path().to_path_buf()]);
    let config = Config::parse(&toml, "baseline").unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let a = &config.allowlist;
    assert_eq!(a.kexts.len(), 2);
    assert_eq!(
        a.kext_trust(Some(TEAM), "com.example.kextwatch.developer"),
        KextTrust::Allowlisted
    );
    assert_eq!(
        a.kext_trust(Some(TEAM), "com.example.other"),
        KextTrust::NotAllowlisted
    );
    assert!(toml.contains("# Not allowlisted"));
    assert!(
        toml.contains(
            "Unsigned.kext  bundle com.example.kextwatch.unsigned  team -  signature unsigned"
        ),
        "{toml}"
    );
}

/// One Mach-O slice as rcodesign read it (tests/fixtures/kexts/oracle, recorded when the fixtures
/// were built): the independent reading kextwatch's must agree with.
#[derive(Debug, Default)]
struct Recorded {
    file_sha256: String,
    identifier: Option<String>,
    team: Option<String>,
    digest_type: Option<String>,
    flags: String,
    /// The slot-0 CodeDirectory blob's digests: (sha1, sha256).
    cd_digests: Option<(String, String)>,
    has_cms: bool,
}

fn recorded(name: &str) -> Vec<Recorded> {
    let text =
        std::fs::read_to_string(fixtures().join(format!("oracle/{name}.rcodesign.yaml"))).unwrap();
    let mut slices: Vec<Recorded> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim();
        let value = |key: &str| {
            t.strip_prefix(key)
                .map(|v| v.trim().trim_matches('\'').to_string())
        };
        if t.starts_with("- path:") {
            slices.push(Recorded::default());
        }
        let Some(s) = slices.last_mut() else { continue };
        if let Some(v) = value("file_sha256:") {
            s.file_sha256 = v;
        } else if t == "- slot: CodeDirectory (0)" {
            let mut sha1 = String::new();
            let mut sha256 = String::new();
            while let Some(next) = lines.peek() {
                let n = next.trim();
                if !["magic:", "length:", "sha1:", "sha256:"]
                    .iter()
                    .any(|k| n.starts_with(k))
                {
                    break;
                }
                if let Some(v) = n.strip_prefix("sha1:") {
                    sha1 = v.trim().into();
                } else if let Some(v) = n.strip_prefix("sha256:") {
                    sha256 = v.trim().into();
                }
                lines.next();
            }
            s.cd_digests = Some((sha1, sha256));
        } else if t == "- slot: CMS Signature (65536)" {
            s.has_cms = true;
        } else if let Some(v) = value("identifier:") {
            s.identifier = Some(v);
        } else if let Some(v) = value("team_name:") {
            s.team = Some(v);
        } else if let Some(v) = value("digest_type:") {
            s.digest_type = Some(v);
        } else if let Some(v) = value("flags: CodeSignatureFlags(") {
            s.flags = v.trim_end_matches(')').to_string();
        }
    }
    slices
}

#[test]
fn every_signature_reads_as_rcodesign_read_it() {
    use sha2::{Digest, Sha256};
    // Universal64's slices are Universal's (rcodesign cannot read 64-bit universal headers).
    for (name, recording) in [
        ("Unsigned", "Unsigned"),
        ("Adhoc", "Adhoc"),
        ("Developer", "Developer"),
        ("Universal", "Universal"),
        ("Universal64", "Universal"),
        ("Mixed", "Mixed"),
    ] {
        let theirs = recorded(recording);
        let exe = fixture(name).join(format!("Contents/MacOS/{name}"));
        if name == recording {
            let sha: String = Sha256::digest(std::fs::read(&exe).unwrap())
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            assert!(
                theirs.iter().all(|t| t.file_sha256 == sha),
                "{name}: the recording is of other bytes; run scripts/record-signing-oracle.sh"
            );
        }
        let ours = read_identity(&fixture(name));
        assert_eq!(ours.slices.len(), theirs.len(), "{name}: slice count");
        for (i, (o, t)) in ours.slices.iter().zip(&theirs).enumerate() {
            let at = format!("{name} slice {i} ({})", o.arch);
            assert_eq!(o.identifier, t.identifier, "{at}: identifier");
            assert_eq!(o.team_id, t.team, "{at}: Team ID");
            assert_eq!(
                o.hash_type.map(String::from),
                t.digest_type,
                "{at}: hash type"
            );
            assert_eq!(o.has_cms, t.has_cms, "{at}: CMS");
            let flag = |f: &str| t.flags.split(" | ").any(|x| x == f);
            assert_eq!(
                (o.adhoc, o.linker_signed, o.runtime),
                (flag("ADHOC"), flag("LINKER_SIGNED"), flag("RUNTIME")),
                "{at}: flags {}",
                t.flags
            );
            // The cdhash: the CodeDirectory's digest in its own hash type, first 20 bytes.
            let expected =
                t.cd_digests
                    .as_ref()
                    .map(|(sha1, sha256)| match t.digest_type.as_deref() {
                        Some("sha1") => sha1[..40].to_string(),
                        _ => sha256[..40].to_string(),
                    });
            assert_eq!(o.cdhash, expected, "{at}: cdhash");
        }
        // And the verdicts those readings imply, written out.
        let verdict = match name {
            "Unsigned" => Signature::Unsigned,
            "Adhoc" | "Mixed" => Signature::Adhoc,
            _ => Signature::Developer,
        };
        assert_eq!(ours.signature, verdict, "{name}");
    }
}

#[test]
fn apple_is_cms_without_a_team_on_an_apple_or_platform_identity() {
    use kextwatch::signing::blob::{CodeDirectory, SignatureInfo};
    use kextwatch::signing::{classify_slice, combine};
    let info = |identifier: &str, team: Option<&str>, platform: u8, flags: u32, cms: bool| {
        Some(Ok(SignatureInfo {
            code_directories: vec![CodeDirectory {
                version: 0x20400,
                flags,
                hash_type: "sha256",
                cdhash: "0123456789abcdef0123456789abcdef01234567".into(),
                identifier: identifier.into(),
                team_id: team.map(String::from),
                platform,
            }],
            has_cms: cms,
            cms_covers_code_directory: cms,
        }))
    };
    let class = |i| classify_slice("arm64".into(), i).signature;
    // Apple's kexts: CMS, no Team ID, and an Apple identifier or the platform field.
    assert_eq!(
        class(info("com.apple.driver.AppleHDA", None, 0, 0, true)),
        Signature::Apple
    );
    assert_eq!(class(info("AppleHDA", None, 2, 0, true)), Signature::Apple);
    // The same with a Team ID is a developer's, whatever it calls itself.
    assert_eq!(
        class(info(
            "com.apple.driver.AppleHDA",
            Some("ZZZZZ99999"),
            2,
            0,
            true
        )),
        Signature::Developer
    );
    // CMS without a Team ID on anyone else's identity is no identity at all.
    assert_eq!(
        class(info("com.evil.driver", None, 0, 0, true)),
        Signature::Adhoc
    );
    // Ad hoc (flag 0x2) or no CMS: ad hoc, even with an Apple identifier.
    assert_eq!(
        class(info("com.apple.driver.AppleHDA", None, 2, 0x2, true)),
        Signature::Adhoc
    );
    assert_eq!(
        class(info("com.apple.driver.AppleHDA", None, 2, 0, false)),
        Signature::Adhoc
    );
    // A bundle of Apple slices is Apple, with no Team ID to stand for it.
    let slices = [
        classify_slice(
            "x86_64".into(),
            info("com.apple.driver.AppleHDA", None, 2, 0, true),
        ),
        classify_slice(
            "arm64".into(),
            info("com.apple.driver.AppleHDA", None, 2, 0, true),
        ),
    ];
    let (signature, team, _, error) = combine(&slices);
    assert_eq!((signature, team, error), (Signature::Apple, None, None));
}

#[test]
fn code_directories_that_disagree_on_who_signed_are_invalid() {
    use kextwatch::signing::blob::{CodeDirectory, SignatureInfo};
    use kextwatch::signing::classify_slice;
    let cd = |hash_type: &'static str, identifier: &str, team: &str| CodeDirectory {
        version: 0x20400,
        flags: 0,
        hash_type,
        cdhash: "0123456789abcdef0123456789abcdef01234567".into(),
        identifier: identifier.into(),
        team_id: Some(team.into()),
        platform: 0,
    };
    let class = |alternate: CodeDirectory| {
        let s = classify_slice(
            "x86_64".into(),
            Some(Ok(SignatureInfo {
                code_directories: vec![cd("sha1", "com.example.kext", "K3XW9TESTQ"), alternate],
                has_cms: true,
                cms_covers_code_directory: true,
            })),
        );
        (s.signature, s.error)
    };
    // A sha256 alternate of the same identity: a developer's signature.
    assert_eq!(
        class(cd("sha256", "com.example.kext", "K3XW9TESTQ")),
        (Signature::Developer, None)
    );
    // Another team, or another identifier, in the alternate: no single signer.
    for alternate in [
        cd("sha256", "com.example.kext", "ZZZZZ99999"),
        cd("sha256", "com.example.other", "K3XW9TESTQ"),
    ] {
        let (signature, error) = class(alternate);
        assert_eq!(signature, Signature::Invalid);
        assert!(error.unwrap().contains("disagree"));
    }
}

#[test]
fn an_empty_cms_wrapper_is_no_signature_not_an_error() {
    use kextwatch::signing::blob::parse_signature;
    use kextwatch::signing::classify_slice;
    // codesign writes ad hoc signatures with an empty CMS wrapper (just its 8-byte header): take
    // the developer fixture's signature and empty its wrapper the same way.
    let exe = std::fs::read(fixture("Developer").join("Contents/MacOS/Developer")).unwrap();
    let sb = exe
        .windows(4)
        .position(|w| w == [0xfa, 0xde, 0x0c, 0xc0])
        .unwrap();
    let mut sig = exe[sb..].to_vec();
    let be = |b: &[u8], at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    let count = be(&sig, 8);
    let wrapper = (0..count)
        .find(|i| be(&sig, 12 + i * 8) == 0x10000)
        .map(|i| be(&sig, 16 + i * 8))
        .unwrap();
    assert_eq!(be(&sig, wrapper), 0xfade_0b01);
    sig[wrapper + 4..wrapper + 8].copy_from_slice(&8u32.to_be_bytes());
    let info = parse_signature(&sig).expect("an empty wrapper is well-formed");
    assert!(!info.has_cms && !info.cms_covers_code_directory);
    let slice = classify_slice("x86_64".into(), Some(Ok(info)));
    assert_eq!((slice.signature, slice.error), (Signature::Adhoc, None));
}

/// A SuperBlob as macOS signs apps today, built from the developer fixture's CodeDirectory: a SHA-1
/// CodeDirectory in slot 0, the SHA-256 one as alternate, requirements, entitlements (XML and DER)
/// and an empty CMS wrapper; `pad` bytes at the end. Returns the bytes and the SHA-256 cdhash.
fn six_blob_signature(pad: usize) -> (Vec<u8>, String) {
    use sha2::{Digest, Sha256};
    let exe = std::fs::read(fixture("Developer").join("Contents/MacOS/Developer")).unwrap();
    let sb = exe
        .windows(4)
        .position(|w| w == [0xfa, 0xde, 0x0c, 0xc0])
        .unwrap();
    let be = |b: &[u8], at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    let cd_at = sb + be(&exe, sb + 16); // slot 0 is the first index entry
    let sha256_cd = exe[cd_at..cd_at + be(&exe, cd_at + 4)].to_vec();
    let mut sha1_cd = sha256_cd.clone();
    sha1_cd[37] = 1; // hash type SHA-1
    let blob = |magic: u32, body: &[u8]| {
        let mut b = magic.to_be_bytes().to_vec();
        b.extend_from_slice(&(8 + body.len() as u32).to_be_bytes());
        b.extend_from_slice(body);
        b
    };
    let blobs: Vec<(u32, Vec<u8>)> = vec![
        (0, sha1_cd),
        (2, blob(0xfade_0c01, &[0, 0, 0, 0])),
        (5, blob(0xfade_7171, b"<plist/>")),
        (7, blob(0xfade_7172, &[])),
        (0x1000, sha256_cd.clone()),
        (0x10000, blob(0xfade_0b01, &[])),
    ];
    let mut offset = 12 + 8 * blobs.len();
    let mut index = Vec::new();
    let mut body = Vec::new();
    for (slot, b) in &blobs {
        index.extend_from_slice(&slot.to_be_bytes());
        index.extend_from_slice(&(offset as u32).to_be_bytes());
        offset += b.len();
        body.extend_from_slice(b);
    }
    body.extend(std::iter::repeat_n(0u8, pad));
    let total = 12 + index.len() + body.len();
    let mut out = 0xfade_0cc0u32.to_be_bytes().to_vec();
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(blobs.len() as u32).to_be_bytes());
    out.extend(index);
    out.extend(body);
    let cdhash = Sha256::digest(&sha256_cd)[..20]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (out, cdhash)
}

#[test]
fn a_six_blob_signature_reads_its_strongest_code_directory() {
    use kextwatch::signing::blob::parse_signature;
    // Every padding, so the SuperBlob's length takes every remainder modulo the index entry size.
    for pad in 0..8 {
        let (sig, cdhash) = six_blob_signature(pad);
        let info = parse_signature(&sig).unwrap_or_else(|e| panic!("pad {pad}: {e}"));
        let hashes: Vec<&str> = info.code_directories.iter().map(|c| c.hash_type).collect();
        assert_eq!(hashes, ["sha1", "sha256"]);
        let best = info.best().unwrap();
        assert_eq!(
            (best.hash_type, best.cdhash.as_str()),
            ("sha256", cdhash.as_str())
        );
        // The developer fixture's cdhash as rcodesign recorded it.
        assert_eq!(cdhash, "1ce47dad8124d292bfcddb0844077f73b2880da5");
        assert!(!info.has_cms);
    }
    // An index entry pointing back into the index is refused, and says so.
    let (mut sig, _) = six_blob_signature(0);
    sig[16..20].copy_from_slice(&40u32.to_be_bytes());
    let err = parse_signature(&sig).unwrap_err().to_string();
    assert!(err.contains("points into the index"), "{err}");
    // More entries than the blob can hold is refused before any is read.
    let (mut sig, _) = six_blob_signature(0);
    sig[8..12].copy_from_slice(&400u32.to_be_bytes());
    let err = parse_signature(&sig).unwrap_err().to_string();
    assert!(err.contains("declares 400 entries"), "{err}");
}

#[test]
fn the_strongest_known_hash_is_the_code_directory_that_counts() {
    use kextwatch::signing::blob::{CodeDirectory, SignatureInfo};
    let cd = |hash_type: &'static str| CodeDirectory {
        version: 0x20400,
        flags: 0,
        hash_type,
        cdhash: hash_type.into(),
        identifier: "com.example.kext".into(),
        team_id: None,
        platform: 0,
    };
    let best = |types: &[&'static str]| {
        SignatureInfo {
            code_directories: types.iter().map(|t| cd(t)).collect(),
            has_cms: false,
            cms_covers_code_directory: false,
        }
        .best()
        .map(|c| c.hash_type)
    };
    // Strength order: sha384 > sha256 > sha256-truncated > sha1 > anything unknown, in any order.
    assert_eq!(
        best(&["sha1", "sha384", "sha256", "sha256-truncated"]),
        Some("sha384")
    );
    assert_eq!(
        best(&["sha256", "sha1", "sha256-truncated"]),
        Some("sha256")
    );
    assert_eq!(
        best(&["sha256-truncated", "sha1"]),
        Some("sha256-truncated")
    );
    assert_eq!(best(&["sha1", "sha512"]), Some("sha1"));
    assert_eq!(best(&[]), None);
}

#[test]
fn size_limits_hold_at_their_exact_edges() {
    use kextwatch::signing::{MAX_EXECUTABLE_BYTES, MAX_PLIST_BYTES};
    assert_eq!(
        (MAX_PLIST_BYTES, MAX_EXECUTABLE_BYTES),
        (1 << 20, 256 << 20)
    );
    let dir = tempfile::tempdir().unwrap();
    let bundle = copy_bundle("Developer", dir.path());
    let plist = bundle.join("Contents/Info.plist");
    let original = std::fs::read(&plist).unwrap();
    // A valid Info.plist padded with trailing whitespace to exactly the limit is read whole...
    let mut padded = original.clone();
    padded.resize(MAX_PLIST_BYTES as usize, b'\n');
    std::fs::write(&plist, &padded).unwrap();
    let k = read_identity(&bundle);
    assert_eq!(k.error, None);
    assert_eq!(
        k.bundle_id.as_deref(),
        Some("com.example.kextwatch.developer")
    );
    // ...and one byte more is refused.
    padded.push(b'\n');
    std::fs::write(&plist, &padded).unwrap();
    assert!(read_identity(&bundle)
        .error
        .unwrap()
        .contains("exceeds the 1048576 byte limit"));
    std::fs::write(&plist, &original).unwrap();

    // An executable of a few MB (signature offsets unchanged, zeros after) is read...
    let exe = bundle.join("Contents/MacOS/Developer");
    let f = std::fs::OpenOptions::new().write(true).open(&exe).unwrap();
    f.set_len(4 << 20).unwrap();
    assert_eq!(read_identity(&bundle).signature, Signature::Developer);
    // ...one over 256 MiB (sparse: no disk used) is refused before reading.
    f.set_len(MAX_EXECUTABLE_BYTES + 1).unwrap();
    let k = read_identity(&bundle);
    assert_eq!(k.signature, Signature::Invalid);
    assert!(
        k.error
            .as_deref()
            .unwrap()
            .contains("exceeds the 268435456 byte limit"),
        "{:?}",
        k.error
    );
}

#[test]
fn the_cache_keeps_many_bundles_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let a = copy_bundle("Developer", dir.path());
    let other = tempfile::tempdir().unwrap();
    let b = copy_bundle("Unsigned", other.path());
    let mut cache = IdentityCache::new();
    for _ in 0..3 {
        cache.lookup(&a);
        cache.lookup(&b);
    }
    assert_eq!((cache.misses, cache.hits), (2, 4));
}

/// An Info.plist whose `IOKitPersonalities` nests `levels` arrays: small enough to pass the size
/// cap, deep enough to overflow the stack of a recursive parser.
fn deep_info_plist(levels: usize) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<plist version="1.0">
<dict>
	<key>CFBundleIdentifier</key>
	<string>com.example.deep</string>
	<key>CFBundleExecutable</key>
	<string>Developer</string>
	<key>IOKitPersonalities</key>
	{}<string>x</string>{}
</dict>
</plist>
"#,
        "<array>".repeat(levels),
        "</array>".repeat(levels)
    )
}

#[test]
fn a_bundle_built_to_crash_a_parser_reads_as_invalid_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = copy_bundle("Developer", dir.path());
    let plist = deep_info_plist(69_000);
    assert!(plist.len() < kextwatch::signing::MAX_PLIST_BYTES as usize);
    std::fs::write(bundle.join("Contents/Info.plist"), plist).unwrap();
    let id = read_identity(&bundle);
    assert_eq!(id.signature, Signature::Invalid);
    assert_eq!((id.bundle_id, id.team_id), (None, None));
    let error = id.error.unwrap();
    assert!(
        error.starts_with("Info.plist: ") && error.contains("plist nests deeper than 64 levels"),
        "{error}"
    );
    // A real kext's nesting (a few levels) still reads.
    std::fs::write(bundle.join("Contents/Info.plist"), deep_info_plist(8)).unwrap();
    let id = read_identity(&bundle);
    assert_eq!(
        id.bundle_id.as_deref(),
        Some("com.example.deep"),
        "{:?}",
        id.error
    );
}

#[cfg(unix)]
fn mkfifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
}

#[cfg(unix)]
#[test]
fn a_fifo_planted_as_info_plist_or_executable_is_refused_not_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("Extensions");
    std::fs::create_dir(&root).unwrap();
    // No writer ever opens these FIFOs: a blocking open would hang here for good.
    let plist = copy_bundle("Developer", &root);
    mkfifo(&plist.join("Contents/Info.plist"));
    let id = read_identity(&plist);
    assert_eq!(id.signature, Signature::Invalid);
    assert!(
        id.error
            .as_deref()
            .unwrap()
            .ends_with("Info.plist: not a regular file (a FIFO)"),
        "{:?}",
        id.error
    );
    let other = root.join("Other");
    std::fs::create_dir(&other).unwrap();
    let exe = copy_bundle("Unsigned", &other);
    mkfifo(&exe.join("Contents/MacOS/Unsigned"));
    let id = read_identity(&exe);
    assert_eq!(id.signature, Signature::Invalid);
    assert!(
        id.error
            .as_deref()
            .unwrap()
            .ends_with("MacOS/Unsigned: not a regular file (a FIFO)"),
        "{:?}",
        id.error
    );
    // The inventory goes on past both and lists them as invalid.
    let (kexts, _) = inventory(&[root], &mut IdentityCache::new());
    assert_eq!(kexts.len(), 2);
    assert!(kexts.iter().all(|k| k.signature == Signature::Invalid));
}

#[test]
fn folders_deeper_than_the_walk_goes_are_reported_not_skipped_silently() {
    let dir = tempfile::tempdir().unwrap();
    let mut deep = dir.path().to_path_buf();
    for i in 0..14 {
        deep.push(format!("d{i}"));
    }
    copy_bundle("Developer", &deep);
    // A kext at an ordinary depth is found as usual.
    copy_bundle("Unsigned", &dir.path().join("d0"));
    let (found, errors) = find_kexts(dir.path());
    assert_eq!(found, [dir.path().join("d0/Unsigned.kext")]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].ends_with("d11: deeper than 12 levels, not searched"),
        "{errors:?}"
    );
}
