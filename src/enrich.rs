//! Enrichment: the I/O that detection must not do. Before an event is evaluated, the kext bundles it
//! stages or loads are looked up on disk (cached) and their identities handed to the engine.
//!
//! Paths in events are the Mac's. On the Mac the root is `/`; offline, a responder points it at a
//! collected copy (`replay --bundles-root DIR`), and event paths are looked up inside it.

use std::path::{Path, PathBuf};

use crate::detect::rules::referenced_bundles;
use crate::detect::Engine;
use crate::event::Event;
use crate::signing::IdentityCache;

pub struct BundleEnricher {
    root: PathBuf,
    cache: IdentityCache,
    /// Bundles looked up, and those found under the root.
    pub lookups: u64,
    pub found: u64,
}

impl BundleEnricher {
    pub fn new(root: &Path) -> std::io::Result<BundleEnricher> {
        Ok(BundleEnricher {
            root: root.canonicalize()?,
            cache: IdentityCache::new(),
            lookups: 0,
            found: 0,
        })
    }

    /// Look up the bundles `ev` refers to and tell `engine` what they are.
    pub fn enrich(&mut self, engine: &mut Engine, ev: &Event) {
        for bundle in referenced_bundles(engine.config(), ev) {
            self.lookups += 1;
            // `bundle` is normalised (no `..`); the canonical check also stops symlinked folders
            // inside the collected tree from leading out of it.
            let local = self.root.join(bundle.trim_start_matches('/'));
            let Ok(real) = local.canonicalize() else {
                continue;
            };
            if !real.starts_with(&self.root) {
                continue;
            }
            self.found += 1;
            let id = self.cache.lookup(&local);
            engine.set_bundle_identity(&bundle, &id);
        }
    }
}
