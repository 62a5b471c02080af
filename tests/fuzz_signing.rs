//! Property tests: damaged Mach-O files, signatures and Info.plists never panic the parsers, and
//! bundles with them never classify better than the undamaged original (`Signature` is ordered
//! from least to most trusted), so damage never buys trust. Longer runs: PROPTEST_CASES=200000.

use std::path::Path;

use kextwatch::signing::blob::parse_signature;
use kextwatch::signing::macho::slices;
use kextwatch::signing::{classify_slice, combine, read_identity, Signature};
use proptest::prelude::*;

fn fixture_exe(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "tests/fixtures/kexts/{name}.kext/Contents/MacOS/{name}"
    ));
    std::fs::read(p).unwrap()
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512)
}

/// Classify an executable the way `read_identity` does, in memory: the bundle-level verdict.
fn identity_of(bytes: &[u8]) -> Signature {
    match slices(bytes) {
        Ok(s) => {
            let slices: Vec<_> = s
                .into_iter()
                .map(|s| classify_slice(s.arch, s.signature.map(parse_signature)))
                .collect();
            combine(&slices).0
        }
        Err(_) => Signature::Invalid,
    }
}

fn mutate(mut bytes: Vec<u8>, edits: &[(usize, u8, u8)], cut: Option<usize>) -> Vec<u8> {
    for (pos, byte, op) in edits {
        if bytes.is_empty() {
            break;
        }
        let p = pos % bytes.len();
        match op {
            0 => bytes[p] = *byte,
            1 => {
                // Big-endian field clobbered with an extreme value, as a hostile signer would.
                let end = (p + 4).min(bytes.len());
                bytes[p..end].fill(0xff);
            }
            _ => {
                bytes.remove(p);
            }
        }
    }
    if let Some(c) = cut {
        if !bytes.is_empty() {
            bytes.truncate(c % bytes.len());
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_are_never_signed(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        // Noise is not a Mach-O, or one without a signature: never an identity.
        prop_assert!(identity_of(&bytes) <= Signature::Unsigned);
        if let Ok(info) = parse_signature(&bytes) {
            prop_assert!(!info.has_cms);
        }
    }

    #[test]
    fn damaged_signed_binaries_never_classify_better(
        which in 0usize..4,
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..12),
        cut in any::<Option<usize>>(),
        in_signature in any::<bool>(),
    ) {
        let name = ["Developer", "Adhoc", "Universal", "Universal64"][which];
        let good = fixture_exe(name);
        // Aim half the edits at the signature, where the hand-written parser works.
        let edits: Vec<(usize, u8, u8)> = if in_signature {
            let sig = good.windows(4).position(|w| w == [0xfa, 0xde, 0x0c, 0xc0]).unwrap();
            edits.into_iter().map(|(p, b, o)| (sig + p % (good.len() - sig), b, o)).collect()
        } else {
            edits
        };
        let original = identity_of(&good);
        prop_assert!(original >= Signature::Adhoc, "{name}: {original:?}");
        let bad = mutate(good, &edits, cut);
        let damaged = identity_of(&bad);
        prop_assert!(damaged <= original, "{name}: {original:?} became {damaged:?}");
    }

    #[test]
    fn damaged_superblobs_never_gain_an_identity(
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..16),
        cut in any::<Option<usize>>(),
    ) {
        let good = fixture_exe("Developer");
        let sig = good.windows(4).position(|w| w == [0xfa, 0xde, 0x0c, 0xc0]).unwrap();
        let blob = mutate(good[sig..].to_vec(), &edits, cut);
        // The undamaged blob is a developer's (CMS, Team ID); damage may lose either, never make
        // it look like Apple's (CMS without a Team ID on a `com.apple.` or platform identity).
        if let Ok(info) = parse_signature(&blob) {
            let slice = classify_slice("x86_64".into(), Some(Ok(info)));
            prop_assert!(slice.signature <= Signature::Developer, "{:?}", slice);
        }
    }
}

proptest! {
    // Each case writes a bundle to disk: fewer cases.
    #![proptest_config(ProptestConfig { cases: cases().min(2000) / 4, ..ProptestConfig::default() })]

    #[test]
    fn damaged_info_plists_never_change_the_verdict(
        binary in any::<bool>(),
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..12),
        cut in any::<Option<usize>>(),
    ) {
        let name = if binary { "Adhoc" } else { "Developer" };
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/kexts/{name}.kext"));
        let dir = tempfile::tempdir().unwrap();
        let b = dir.path().join("X.kext");
        std::fs::create_dir_all(b.join("Contents/MacOS")).unwrap();
        let plist = std::fs::read(src.join("Contents/Info.plist")).unwrap();
        std::fs::write(b.join("Contents/Info.plist"), mutate(plist, &edits, cut)).unwrap();
        std::fs::copy(src.join(format!("Contents/MacOS/{name}")), b.join(format!("Contents/MacOS/{name}"))).unwrap();
        let k = read_identity(&b);
        // Whatever the plist says, the verdict comes from the executable: the original's, or a
        // weaker one when the plist no longer names it (a codeless bundle is unsigned).
        let original = read_identity(&src).signature;
        prop_assert!(
            k.signature <= original,
            "{name}: {original:?} became {:?} ({:?})", k.signature, k.error
        );
    }
}

/// The targeted form of the damage random edits rarely find: a developer's CodeDirectory whose
/// version is lowered below Team ID support and whose platform byte is set. A CMS signature without
/// a Team ID on platform code reads as Apple's, so this must not read as anything above what the
/// original was.
#[test]
fn a_developer_signature_edited_to_look_like_apple_is_not_trusted_more() {
    let good = fixture_exe("Developer");
    let original = identity_of(&good);
    assert_eq!(original, Signature::Developer);
    let mut bad = good.clone();
    // Every CodeDirectory (magic 0xfade0c02): version 0x20100, platform 1.
    let mut at = 0;
    let mut edited = 0;
    while let Some(p) = bad[at..]
        .windows(4)
        .position(|w| w == [0xfa, 0xde, 0x0c, 0x02])
    {
        let cd = at + p;
        bad[cd + 8..cd + 12].copy_from_slice(&0x20100u32.to_be_bytes());
        bad[cd + 38] = 1;
        edited += 1;
        at = cd + 4;
    }
    assert!(edited > 0);
    let damaged = identity_of(&bad);
    assert!(damaged <= original, "Developer became {damaged:?}");
}
