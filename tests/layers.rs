//! The layer rules of ARCHITECTURE.md, kept: a module of the library imports only modules of lower
//! layers (read from every `crate::` path in its source), and every module has a layer.

use std::collections::BTreeMap;
use std::path::Path;

/// Lowest first; the same list is in ARCHITECTURE.md ("Layers").
const LAYERS: [&[&str]; 6] = [
    &["files", "layout", "path", "text", "wallclock"],
    &["event", "alert", "signing", "kextpolicy"],
    &["config", "host"],
    &["detect", "source", "output"],
    &["enrich"],
    &[
        "offline",
        "daemon",
        "doctor",
        "inventory",
        "profile",
        "sysext",
    ],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// The top-level modules each `crate::NAME` path in `text` names.
fn imports(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in text.match_indices("crate::") {
        // Not `kextwatch_crate::` or the like: `crate` starts a path.
        let before = text[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &text[i + "crate::".len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        assert!(
            !name.is_empty(),
            "write `use crate::module::...` per module, not a `crate::{{...}}` group, so this test can read it"
        );
        out.push(name);
    }
    out
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn every_module_imports_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut broken: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut modules = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let module = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        // The binary (main.rs and its cli module) may use anything.
        if matches!(module.as_str(), "main" | "lib" | "cli") {
            continue;
        }
        modules.push(module.clone());
        let Some(own) = layer_of(&module) else {
            broken
                .entry(module.clone())
                .or_default()
                .push("has no layer in LAYERS (and ARCHITECTURE.md)".into());
            continue;
        };
        for import in imports(&std::fs::read_to_string(f).unwrap()) {
            if import == module {
                continue;
            }
            match layer_of(&import) {
                Some(l) if l < own => {}
                _ => broken
                    .entry(rel.display().to_string())
                    .or_default()
                    .push(format!("imports {import}")),
            }
        }
    }
    assert!(broken.is_empty(), "layer rules broken: {broken:#?}");
    // The rules cover the crate as it is: every listed module exists.
    for m in LAYERS.iter().flat_map(|l| l.iter()) {
        assert!(
            modules.iter().any(|x| x == m),
            "{m} is listed but not in src/"
        );
    }
}

#[test]
fn an_upward_import_is_caught() {
    assert_eq!(
        imports("use crate::detect::Engine;\nlet x = crate::wallclock::now_ns();"),
        ["detect", "wallclock"]
    );
    assert!(imports("kextwatch_testkit::x; my_crate::y").is_empty());
    let source = layer_of("source").unwrap();
    assert!(
        layer_of("detect").unwrap() >= source,
        "siblings may not import each other"
    );
}
