//! Property tests: damaged Mach-O files, signatures and Info.plists never panic the parsers, and
//! bundles with them come out `invalid` (or a weaker signature), never trusted by accident.
//! Longer runs: PROPTEST_CASES=200000.

use std::path::Path;

use kextwatch::signing::blob::parse_signature;
use kextwatch::signing::macho::slices;
use kextwatch::signing::{classify_slice, read_identity, Signature};
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

/// Parse everything the way `read_identity` does, in memory.
fn identity_of(bytes: &[u8]) -> Vec<Signature> {
    match slices(bytes) {
        Ok(s) => s
            .into_iter()
            .map(|s| classify_slice(s.arch, s.signature.map(parse_signature)).signature)
            .collect(),
        Err(_) => vec![Signature::Invalid],
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
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = identity_of(&bytes);
        let _ = parse_signature(&bytes);
    }

    #[test]
    fn damaged_signed_binaries_never_panic(
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
        let bad = mutate(good, &edits, cut);
        let _ = identity_of(&bad);
    }

    #[test]
    fn damaged_superblobs_never_panic(
        edits in prop::collection::vec((any::<usize>(), any::<u8>(), 0u8..3), 1..16),
        cut in any::<Option<usize>>(),
    ) {
        let good = fixture_exe("Developer");
        let sig = good.windows(4).position(|w| w == [0xfa, 0xde, 0x0c, 0xc0]).unwrap();
        let blob = mutate(good[sig..].to_vec(), &edits, cut);
        let _ = parse_signature(&blob);
    }
}

proptest! {
    // Each case writes a bundle to disk: fewer cases.
    #![proptest_config(ProptestConfig { cases: cases().min(2000) / 4, ..ProptestConfig::default() })]

    #[test]
    fn damaged_info_plists_never_panic(
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
        // Whatever the plist says, the signature verdict comes from the executable or is invalid.
        prop_assert!(k.error.is_some() || k.signature != Signature::Apple);
    }
}
