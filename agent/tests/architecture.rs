//! Layering checks on the agent's source, no build of anything needed: no import cycle between
//! modules. For every pair of sibling modules (children of the same parent) an edge A → B exists
//! when code in A's subtree names an item in B's subtree (`use crate::…`, `super::…`, inline
//! `crate::…` paths); the graph of each parent's children must be acyclic. A child naming its
//! own ancestors (`super::Engine` from `engine::llama`) is the normal shape of a module tree and
//! is not an edge. docs/architecture.md says which way each layer may point.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

/// Module path of a source file: `src/engine/llama/worker.rs` → `["engine", "llama", "worker"]`.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().unwrap();
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" && stem != "main" {
        parts.push(stem.to_owned());
    }
    parts
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Code without comments and string literals (good enough for paths: they never span those).
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            _ => out.push(c),
        }
    }
    out
}

/// Expands a `use` tree (`crate::{a::b, c::{d, e}}`) into its paths.
fn expand(tree: &str) -> Vec<String> {
    let tree: String = tree.split_whitespace().collect();
    fn go(prefix: &str, t: &str, out: &mut Vec<String>) {
        match t.find('{') {
            None => out.push(format!("{prefix}{t}")),
            Some(open) => {
                let head = &t[..open];
                let inner = &t[open + 1..t.len() - 1];
                let mut depth = 0;
                let mut start = 0;
                for (i, c) in inner.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            go(&format!("{prefix}{head}"), &inner[start..i], out);
                            start = i + 1;
                        }
                        _ => {}
                    }
                }
                if start < inner.len() {
                    go(&format!("{prefix}{head}"), &inner[start..], out);
                }
            }
        }
    }
    let mut out = Vec::new();
    go("", &tree, &mut out);
    out
}

/// Every module path `code` (in module `at`) refers to, resolved to an absolute path.
fn references(code: &str, at: &[String]) -> Vec<Vec<String>> {
    let mut paths = Vec::new();
    // `use` statements, possibly spanning lines.
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let before = rest[..i].chars().last();
        rest = &rest[i + 4..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(end) = rest.find(';') {
            paths.extend(expand(&rest[..end]));
        }
    }
    // Inline `crate::a::b` and `super::a` paths.
    for start in ["crate::", "super::"] {
        let mut rest = code;
        while let Some(i) = rest.find(start) {
            let before = rest[..i].chars().last();
            let tail = &rest[i..];
            let end = tail.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(tail.len());
            if !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                paths.push(tail[..end].trim_end_matches(':').to_owned());
            }
            rest = &tail[start.len()..];
        }
    }
    let mut out = Vec::new();
    for p in paths {
        let segs: Vec<&str> = p.split("::").filter(|s| !s.is_empty()).collect();
        let abs: Vec<String> = match segs.first() {
            Some(&"crate") => segs[1..].iter().map(|s| (*s).to_owned()).collect(),
            Some(&"super") => {
                let mut base = at.to_vec();
                let mut i = 0;
                while segs.get(i) == Some(&"super") {
                    base.pop();
                    i += 1;
                }
                base.extend(segs[i..].iter().map(|s| (*s).to_owned()));
                base
            }
            Some(&"self") => {
                let mut base = at.to_vec();
                base.extend(segs[1..].iter().map(|s| (*s).to_owned()));
                base
            }
            _ => continue,
        };
        out.push(abs);
    }
    out
}

#[test]
fn no_import_cycle_between_agent_modules() {
    // At run time (cargo sets it): a build cached from another clone would bake in that clone's path.
    let src = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")), std::path::PathBuf::from)
        .join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let modules: BTreeSet<Vec<String>> = all.iter().map(|f| module_of(&src, f)).collect();
    // Longest known module prefix of a path (the rest are items).
    let resolve = |p: &[String]| -> Vec<String> {
        (0..=p.len()).rev().map(|n| p[..n].to_vec()).find(|m| modules.contains(m)).unwrap_or_default()
    };
    // parent → child → children it depends on
    let mut graphs: BTreeMap<Vec<String>, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for f in &all {
        let at = module_of(&src, f);
        let text = code(&std::fs::read_to_string(f).unwrap());
        for target in references(&text, &at) {
            let target = resolve(&target);
            let common = at.iter().zip(&target).take_while(|(a, b)| a == b).count();
            // An ancestor or the module itself: not an edge between siblings.
            if common == target.len() || common == at.len() {
                continue;
            }
            let parent = at[..common].to_vec();
            graphs.entry(parent).or_default().entry(at[common].clone()).or_default().insert(target[common].clone());
        }
    }
    for (parent, g) in &graphs {
        // Depth-first search for a cycle, reporting its path.
        fn visit(
            n: &str,
            g: &BTreeMap<String, BTreeSet<String>>,
            stack: &mut Vec<String>,
            done: &mut BTreeSet<String>,
        ) -> Option<Vec<String>> {
            if let Some(i) = stack.iter().position(|s| s == n) {
                let mut cycle = stack[i..].to_vec();
                cycle.push(n.to_owned());
                return Some(cycle);
            }
            if done.contains(n) {
                return None;
            }
            stack.push(n.to_owned());
            for m in g.get(n).into_iter().flatten() {
                if let Some(c) = visit(m, g, stack, done) {
                    return Some(c);
                }
            }
            stack.pop();
            done.insert(n.to_owned());
            None
        }
        let mut done = BTreeSet::new();
        for n in g.keys() {
            if let Some(cycle) = visit(n, g, &mut Vec::new(), &mut done) {
                panic!("import cycle under crate::{}: {}", parent.join("::"), cycle.join(" -> "));
            }
        }
    }
    // The check sees the tree: the layers it guards exist.
    for m in [["api"], ["serve"], ["sched"], ["engine"], ["models"]] {
        assert!(modules.contains(m.map(str::to_owned).as_slice()), "module {m:?} not found");
    }
}

#[test]
fn use_trees_expand() {
    assert_eq!(expand("crate::{a::b, c::{d, e}}"), ["crate::a::b", "crate::c::d", "crate::c::e"]);
    assert_eq!(expand("super::x"), ["super::x"]);
}
