//! The crate's shape, checked: no circle between modules, no file of runaway length, and a
//! product core that never reaches into the tools. These rules are what keeps a change in one
//! room from rippling through the house (see the Code map in `src/lib.rs`), so they are tested
//! like behaviour, on the source as written.
//!
//! Module references are read from the text: `crate::a::b`, `super::x` and `self::x` paths,
//! including `use` groups. A reference counts between the two modules that sit side by side
//! under the closest common parent (a child using its parent's items, or a parent its
//! children's, is how Rust modules are built and is not an edge). Test modules (everything
//! from a file's first `#[cfg(test)]` on) are left out: they may look anywhere.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Lines a file may have before its test module.
const MAX_LINES: usize = 800;

/// One source file of the library, as a module path (`pipeline::feed`) and its product code.
struct Module {
    path: Vec<String>,
    file: PathBuf,
    code: String,
}

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// `src/…` rather than the whole path, in failure messages.
fn shown(file: &Path) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    file.strip_prefix(root)
        .unwrap_or(file)
        .display()
        .to_string()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/a/b.rs` → `[a, b]`, `src/a/mod.rs` → `[a]`, `src/lib.rs` → `[]`; `None` for the binary.
fn module_path(file: &Path) -> Option<Vec<String>> {
    let rel = file.strip_prefix(src_dir()).ok()?;
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?;
    match last.as_str() {
        "main.rs" if parts.is_empty() => None,
        "lib.rs" if parts.is_empty() => Some(parts),
        "mod.rs" => Some(parts),
        name => {
            parts.push(name.trim_end_matches(".rs").to_owned());
            Some(parts)
        }
    }
}

/// The file's code before its test module, without comments (doc links are not uses).
fn product_code(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("#[cfg(test)]") {
            break;
        }
        let code = match line.find("//") {
            // A `//` inside a string literal ("http://…") is not a comment.
            Some(i) if line[..i].matches('"').count() % 2 == 0 => &line[..i],
            _ => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

fn modules() -> Vec<Module> {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    files
        .into_iter()
        .filter_map(|file| {
            let path = module_path(&file)?;
            let text = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
            Some(Module {
                path,
                code: product_code(&text),
                file,
            })
        })
        .collect()
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Expands a path that may end in a `{…}` group into plain paths, one level of nesting deep
/// per recursion: `a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`.
fn expand(path: &str) -> Vec<String> {
    let Some(open) = path.find('{') else {
        return vec![path.to_owned()];
    };
    let prefix = &path[..open];
    let mut depth = 0;
    let mut end = path.len();
    for (i, c) in path[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    end = open + i;
                    break;
                }
            }
            _ => {}
        }
    }
    let inner = &path[open + 1..end.min(path.len())];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .flat_map(|item| expand(&format!("{prefix}{item}")))
        .collect()
}

/// Every `crate::…`, `super::…` and `self::…` path in `code`, with `use` groups expanded and
/// whitespace removed, as segments.
fn referenced_paths(code: &str) -> Vec<Vec<String>> {
    // White space goes where it cannot separate words (around `::`, braces and commas), so
    // groups spread over lines read as one path while `use super` stays two words.
    let mut compact = String::with_capacity(code.len());
    let mut pending_space = false;
    for c in code.chars() {
        if c.is_whitespace() {
            pending_space = true;
            continue;
        }
        let joins = |c: char| matches!(c, ':' | '{' | '}' | ',' | '*');
        if pending_space && !joins(c) && !compact.ends_with(joins) && !compact.is_empty() {
            compact.push(' ');
        }
        pending_space = false;
        compact.push(c);
    }
    let mut found = Vec::new();
    for root in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(at) = compact[from..].find(root) {
            let start = from + at;
            from = start + root.len();
            if compact[..start].chars().next_back().is_some_and(is_ident) {
                continue; // `mycrate::`, `notsuper::`
            }
            // The path runs over identifiers, `::` and balanced `{…}` groups.
            let mut depth = 0;
            let mut end = start;
            for (i, c) in compact[start..].char_indices() {
                let ok = match c {
                    '{' => {
                        depth += 1;
                        true
                    }
                    '}' if depth > 0 => {
                        depth -= 1;
                        true
                    }
                    ':' => true,
                    ',' | '*' if depth > 0 => true,
                    c => is_ident(c),
                };
                if !ok {
                    break;
                }
                end = start + i + c.len_utf8();
            }
            for path in expand(&compact[start..end]) {
                let segments: Vec<String> = path
                    .split("::")
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect();
                found.push(segments);
            }
        }
    }
    found
}

/// Resolves a referenced path, seen from `here`, to the deepest module it names.
fn resolve(here: &[String], path: &[String], known: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    // `super` in `a/b.rs` (module a::b) is `a`; in `a/mod.rs` (module a) it is the crate: the
    // module path already says which.
    let mut base: Vec<String> = here.to_vec();
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => {
            base.clear();
            rest = &path[1..];
        }
        Some("self") => rest = &path[1..],
        Some("super") => {
            while rest.first().map(String::as_str) == Some("super") {
                base.pop()?;
                rest = &rest[1..];
            }
        }
        _ => return None,
    }
    let mut target = base;
    for segment in rest {
        let mut next = target.clone();
        next.push(segment.clone());
        if known.contains(&next) {
            target = next;
        } else {
            break;
        }
    }
    Some(target)
}

/// The edge a reference from `from` to `to` makes: the two children of their closest common
/// parent on each side, or none when one contains the other.
fn edge(from: &[String], to: &[String]) -> Option<(Vec<String>, Vec<String>)> {
    let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
    if common == from.len() || common == to.len() {
        return None;
    }
    Some((from[..=common].to_vec(), to[..=common].to_vec()))
}

fn graph() -> BTreeMap<Vec<String>, BTreeMap<Vec<String>, String>> {
    let modules = modules();
    let known: BTreeSet<Vec<String>> = modules.iter().map(|m| m.path.clone()).collect();
    let mut edges: BTreeMap<Vec<String>, BTreeMap<Vec<String>, String>> = BTreeMap::new();
    for module in &modules {
        for path in referenced_paths(&module.code) {
            let Some(target) = resolve(&module.path, &path, &known) else {
                continue;
            };
            if let Some((a, b)) = edge(&module.path, &target) {
                edges.entry(a).or_default().entry(b).or_insert_with(|| {
                    format!("{} uses {}", module.path.join("::"), path.join("::"))
                });
            }
        }
    }
    edges
}

fn name(path: &[String]) -> String {
    if path.is_empty() {
        "crate".into()
    } else {
        path.join("::")
    }
}

/// Every circle, as the modules on it and why each step is there.
fn circles(edges: &BTreeMap<Vec<String>, BTreeMap<Vec<String>, String>>) -> Vec<String> {
    let mut found = Vec::new();
    let mut reported = BTreeSet::new();
    for start in edges.keys() {
        // Depth-first search for a way back to `start`.
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((node, trail)) = stack.pop() {
            for next in edges.get(&node).map(|m| m.keys()).into_iter().flatten() {
                if next == start {
                    let mut members: Vec<_> = trail.clone();
                    members.sort();
                    if reported.insert(members) {
                        let mut steps = Vec::new();
                        for pair in trail.windows(2) {
                            steps.push(edges[&pair[0]][&pair[1]].clone());
                        }
                        steps.push(edges[trail.last().unwrap()][start].clone());
                        let ring: Vec<String> = trail.iter().map(|p| name(p)).collect();
                        found.push(format!(
                            "{} → {} ({})",
                            ring.join(" → "),
                            name(start),
                            steps.join("; ")
                        ));
                    }
                } else if seen.insert(next.clone()) {
                    let mut longer = trail.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    found
}

#[test]
fn module_graph_has_no_circle() {
    let edges = graph();
    assert!(
        edges.values().map(BTreeMap::len).sum::<usize>() > 20,
        "the reader found almost no references: it is broken, not the code"
    );
    let found = circles(&edges);
    assert!(
        found.is_empty(),
        "modules in a circle (a change to one ripples through the other):\n{}",
        found.join("\n")
    );
}

#[test]
fn no_file_runs_past_800_lines_before_its_tests() {
    let long: Vec<String> = modules()
        .iter()
        .filter_map(|m| {
            let lines = m.code.lines().count();
            (lines > MAX_LINES).then(|| format!("{}: {lines} lines", shown(&m.file)))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files of more than {MAX_LINES} lines before their tests (one concern each?):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_core_never_uses_the_tools() {
    let edges = graph();
    let tools = vec!["tools".to_owned()];
    let users: Vec<String> = edges
        .iter()
        // The command line names the tools' subcommands: it wires, like `main`.
        .filter(|(from, _)| !matches!(from.first().map(String::as_str), Some("tools" | "cli")))
        .filter(|(_, to)| to.contains_key(&tools))
        .map(|(from, to)| to[&tools].clone() + &format!(" (in {})", name(from)))
        .collect();
    assert!(
        users.is_empty(),
        "the product core reaches into src/tools:\n{}",
        users.join("\n")
    );
}

#[test]
fn the_reader_sees_groups_and_relative_paths() {
    let paths = referenced_paths(
        "use super::{feed::{self, Feed}, Health};\nlet x = crate::chat::now_ms();",
    );
    let shown: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        shown,
        [
            "crate::chat::now_ms",
            "super::feed::self",
            "super::feed::Feed",
            "super::Health"
        ]
    );
    let known: BTreeSet<Vec<String>> = [
        vec!["pipeline".into()],
        vec!["pipeline".into(), "feed".into()],
    ]
    .into_iter()
    .collect();
    let here = vec!["pipeline".to_owned(), "conductor".to_owned()];
    let feed = resolve(&here, &paths[1], &known).unwrap();
    assert_eq!(feed, ["pipeline", "feed"]);
    assert_eq!(
        edge(&here, &feed),
        Some((here.clone(), vec!["pipeline".into(), "feed".into()]))
    );
    assert_eq!(edge(&here, &["pipeline".to_owned()]), None);
}
