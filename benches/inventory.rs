//! Inventory of 1,000 kext bundles: cold (empty identity cache: every Info.plist and executable read
//! and parsed) versus warm (cached: three `stat`s per bundle), side by side in one run.
//!
//! `cargo bench --bench inventory`

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kextwatch::inventory::inventory;
use kextwatch::signing::IdentityCache;

const BUNDLES: usize = 1_000;

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap().flatten() {
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}

fn main() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kexts");
    let kinds = [
        "Developer",
        "Adhoc",
        "Unsigned",
        "Universal",
        "Universal64",
        "Mixed",
        "Codeless",
    ];
    let dir = tempfile::tempdir().unwrap();
    let root: PathBuf = dir.path().join("Library/Extensions");
    for i in 0..BUNDLES {
        let kind = kinds[i % kinds.len()];
        copy_dir(
            &fixtures.join(format!("{kind}.kext")),
            &root.join(format!("{kind}{i}.kext")),
        );
    }
    let roots = vec![root];

    let mut cache = IdentityCache::new();
    let t = Instant::now();
    let (cold, _) = inventory(&roots, &mut cache);
    let cold_time = t.elapsed();
    assert_eq!(cold.len(), BUNDLES);

    let mut warm_times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        let (warm, _) = inventory(&roots, &mut cache);
        warm_times.push(t.elapsed());
        assert_eq!(warm.len(), BUNDLES);
    }
    let warm_time = warm_times.iter().sum::<Duration>() / warm_times.len() as u32;
    println!("inventory of {BUNDLES} kext bundles (files in the page cache either way):");
    println!("  cold (empty identity cache):  {cold_time:>10.2?}");
    println!("  warm (cached identities):     {warm_time:>10.2?}   (mean of 5)");
    println!(
        "  warm costs {:.1} % of cold; cache hits {}, misses {}",
        warm_time.as_secs_f64() / cold_time.as_secs_f64() * 100.0,
        cache.hits,
        cache.misses
    );
}
