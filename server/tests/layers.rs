//! The server's module graph, read from its source: imports only point
//! down (the graph has no cycle, so no module imports one that imports it),
//! the pure core (`verify`, `clock`) imports nothing else of the server and
//! does no I/O, and the store depends only on the records it persists.
//! ARCHITECTURE.md states these rules; this test keeps them true.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`attest::session`) → source file, for every module of `src/`.
fn modules() -> BTreeMap<String, PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&src, &mut files);
    let mut mods = BTreeMap::new();
    for file in files {
        let rel = file
            .strip_prefix(&src)
            .expect("under src/")
            .with_extension("");
        let mut parts: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        let name = parts.join("::");
        if name != "lib" && name != "main" {
            mods.insert(name, file);
        }
    }
    mods
}

/// The code of a module without its unit tests and comments.
fn production_code(file: &Path) -> String {
    let text = std::fs::read_to_string(file).expect("a module is readable");
    let code = match text.find("#[cfg(test)]\nmod tests") {
        Some(at) => &text[..at],
        None => &text[..],
    };
    code.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The server modules a piece of code names (`crate::a::b`, `super::c`,
/// `super::super::d`).
fn imports(module: &str, code: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let own: Vec<&str> = module.split("::").collect();
    let mut out = BTreeSet::new();
    for prefix in ["crate::", "super::"] {
        for (at, _) in code.match_indices(prefix) {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue; // part of another path (`notcrate::`, `super::super::`)
            }
            let mut rest = &code[at..];
            let mut base: Vec<&str> = Vec::new();
            if prefix == "super::" {
                let mut up = 0;
                while let Some(r) = rest.strip_prefix("super::") {
                    up += 1;
                    rest = r;
                }
                base = own[..own.len().saturating_sub(up)].to_vec();
            } else {
                rest = &rest[prefix.len()..];
            }
            let path: String = rest
                .chars()
                .take_while(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_' || *c == ':'
                })
                .collect();
            let mut parts = base;
            parts.extend(path.split("::").filter(|p| !p.is_empty()));
            // The longest prefix that is a module.
            while !parts.is_empty() {
                let candidate = parts.join("::");
                if known.contains(&candidate) {
                    if candidate != module {
                        out.insert(candidate);
                    }
                    break;
                }
                parts.pop();
            }
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let mods = modules();
    let known: BTreeSet<String> = mods.keys().cloned().collect();
    mods.iter()
        .map(|(m, file)| (m.clone(), imports(m, &production_code(file), &known)))
        .collect()
}

/// Does `to` name `module` itself or a module inside it?
fn within(to: &str, module: &str) -> bool {
    to == module || to.starts_with(&format!("{module}::"))
}

#[test]
fn imports_only_point_down() {
    let g = graph();
    assert!(g.len() > 20, "the source was not found: {g:?}");
    // Depth-first search for a cycle; a parent module declaring its children
    // (`mod x;`) is not an import, so only `crate::`/`super::` paths count.
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(m) {
            return;
        }
        if let Some(at) = path.iter().position(|p| p == m) {
            panic!("import cycle: {} -> {m}", path[at..].join(" -> "));
        }
        path.push(m.to_string());
        for next in g.get(m).into_iter().flatten() {
            visit(next, g, path, done);
        }
        path.pop();
        done.insert(m.to_string());
    }
    let mut done = BTreeSet::new();
    for m in g.keys() {
        visit(m, &g, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_pure_core_imports_only_itself_and_does_no_io() {
    let mods = modules();
    let g = graph();
    for (m, deps) in &g {
        if within(m, "verify") || m == "clock" {
            for d in deps {
                assert!(
                    within(d, "verify"),
                    "{m} imports {d}: the pure core must not depend on the rest of the server"
                );
            }
        }
        if within(m, "verify") {
            let code = production_code(&mods[m]);
            for io in [
                "std::fs",
                "std::net",
                "tokio",
                "sqlx",
                "tonic",
                "std::time::SystemTime",
                "std::thread",
            ] {
                assert!(
                    !code.contains(io),
                    "{m} uses {io}: the verdict must stay free of I/O"
                );
            }
        }
    }
}

#[test]
fn the_store_depends_only_on_the_records_it_persists() {
    for (m, deps) in graph() {
        if within(&m, "store") {
            for d in deps {
                assert!(
                    within(&d, "store") || within(&d, "verify") || d == "clock",
                    "{m} imports {d}: the store must not know the layers above it"
                );
            }
        }
    }
}

#[test]
fn a_cycle_would_be_found() {
    // The checker itself: a module naming its importer is reported.
    let known: BTreeSet<String> = ["a", "b", "b::c"].iter().map(|s| s.to_string()).collect();
    assert_eq!(
        imports("a", "use crate::b::c::Thing;", &known),
        BTreeSet::from(["b::c".to_string()])
    );
    assert_eq!(
        imports(
            "b::c",
            "use super::super::a; fn f() { crate::a::x() }",
            &known
        ),
        BTreeSet::from(["a".to_string()])
    );
    assert!(imports("a", "let x = notcrate::b;", &known).is_empty());
}
