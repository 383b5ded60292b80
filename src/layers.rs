//! Keeps the layers honest: reads every `src/**/*.rs`, collects the edges between modules
//! from their `crate::…` paths (and `super::…` paths between sibling submodules), and fails on
//! an import circle or on an edge that goes the wrong way (ARCHITECTURE.md, Layers).
//!
//! What counts: code outside comments and before a file's first `#[cfg(test)]` (unit tests
//! may reach across layers to build fixtures). Top-level modules are `src/NAME.rs` or
//! `src/NAME/`; their submodules are the files and folders directly under `src/NAME/`.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Edges that must not exist: (from, to) between top-level modules. Sources and storage are
/// below the service; the service is below the adapters (grpc, cli, server, client); the domain
/// model is below everything.
const FORBIDDEN: &[(&str, &str)] = &[
    ("sources", "service"),
    ("sources", "storage"),
    ("sources", "config"),
    ("sources", "grpc"),
    ("storage", "service"),
    ("storage", "sources"),
    ("storage", "config"),
    ("storage", "grpc"),
    ("service", "grpc"),
    ("service", "server"),
    ("service", "cli"),
    ("auth", "grpc"),
    ("grpc", "storage"),
    ("model", "storage"),
    ("model", "service"),
    ("model", "sources"),
    // The client library sits with the adapters: it speaks the generated types (`grpc`) and
    // the domain model, never the server's insides, nor the CLI that uses it.
    ("client", "storage"),
    ("client", "service"),
    ("client", "sources"),
    ("client", "server"),
    ("client", "cli"),
    ("client", "config"),
    ("service", "client"),
    ("storage", "client"),
    ("sources", "client"),
];

type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src/`: `grpc/mod.rs` → `["grpc"]`, `storage/group.rs` →
/// `["storage", "group"]`.
fn module_of(relative: &Path) -> Vec<String> {
    let mut parts: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The code of a file that counts: no comment lines, nothing from the first `#[cfg(test)]`.
fn counted_code(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    code.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first segments of every path after `prefix` (`crate::`, `super::`): `crate::a::b` gives
/// `a`; `crate::{a::x, b}` gives `a` and `b`.
fn targets(code: &str, prefix: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                if depth == 0 || (depth == 1 && c == ',') {
                    let first = item
                        .trim()
                        .split("::")
                        .next()
                        .unwrap_or_default()
                        .to_owned();
                    if !first.is_empty() {
                        found.push(first.trim_matches('{').trim().to_owned());
                    }
                    item.clear();
                    if depth == 0 {
                        break;
                    }
                } else if depth >= 1 {
                    item.push(c);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

/// The module graph of `src/`: top-level modules, and within each the submodules.
fn graphs() -> (Graph, BTreeMap<String, Graph>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let modules: Vec<(Vec<String>, String)> = files
        .iter()
        .map(|path| {
            let relative = path.strip_prefix(&src).expect("under src");
            let text = std::fs::read_to_string(path).expect("readable");
            (module_of(relative), counted_code(&text))
        })
        .filter(|(module, _)| !matches!(module[0].as_str(), "lib" | "main"))
        .collect();
    let tops: BTreeSet<String> = modules.iter().map(|(m, _)| m[0].clone()).collect();
    let mut subs: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, _) in &modules {
        if module.len() >= 2 {
            subs.entry(module[0].clone())
                .or_default()
                .insert(module[1].clone());
        }
    }
    let mut top = Graph::new();
    let mut inner: BTreeMap<String, Graph> = BTreeMap::new();
    for (module, code) in &modules {
        let from = &module[0];
        for target in targets(code, "crate::") {
            if tops.contains(&target) && &target != from {
                top.entry(from.clone()).or_default().insert(target);
            }
        }
        let Some(siblings) = subs.get(from) else {
            continue;
        };
        if module.len() < 2 {
            continue;
        }
        let own = &module[1];
        let mut named = targets(code, &format!("crate::{from}::"));
        if module.len() == 2 {
            named.extend(targets(code, "super::"));
        }
        for target in named {
            if siblings.contains(&target) && &target != own {
                inner
                    .entry(from.clone())
                    .or_default()
                    .entry(own.clone())
                    .or_default()
                    .insert(target);
            }
        }
    }
    (top, inner)
}

/// Every circle of `graph`, each as the path that closes it.
fn circles(graph: &Graph) -> Vec<Vec<String>> {
    fn visit(
        node: &str,
        graph: &Graph,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut circle = stack[at..].to_vec();
            circle.push(node.to_owned());
            found.push(circle);
            return;
        }
        if !done.insert(node.to_owned()) {
            return;
        }
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, stack, done, found);
        }
        stack.pop();
    }
    let mut found = Vec::new();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, graph, &mut Vec::new(), &mut done, &mut found);
    }
    found
}

#[test]
fn no_import_circle_between_modules() {
    let (top, inner) = graphs();
    assert!(top.contains_key("grpc"), "the graph was read: {top:?}");
    let mut found = circles(&top);
    for graph in inner.values() {
        found.extend(circles(graph));
    }
    assert!(found.is_empty(), "import circles: {found:?}");
}

#[test]
fn no_edge_goes_the_wrong_way() {
    let (top, _) = graphs();
    let wrong: Vec<_> = FORBIDDEN
        .iter()
        .filter(|(from, to)| top.get(*from).is_some_and(|targets| targets.contains(*to)))
        .collect();
    assert!(wrong.is_empty(), "edges against the layers: {wrong:?}");
}

#[test]
fn the_reader_finds_plain_grouped_and_relative_paths() {
    let code =
        "use crate::a::b;\nuse crate::{c::d, e};\nlet x = crate::f::g();\nuse super::{h, i::j};";
    assert_eq!(targets(code, "crate::"), ["a", "c", "e", "f"]);
    assert_eq!(targets(code, "super::"), ["h", "i"]);
    assert_eq!(
        counted_code("// crate::x\ncode\n#[cfg(test)]\ncrate::y"),
        "code"
    );
    let graph: Graph = [("a", "b"), ("b", "c"), ("c", "a")]
        .into_iter()
        .map(|(from, to)| (from.to_owned(), BTreeSet::from([to.to_owned()])))
        .collect();
    assert_eq!(circles(&graph), [vec!["a", "b", "c", "a"]]);
}
