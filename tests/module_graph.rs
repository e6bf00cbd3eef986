//! The crate's modules depend on each other in the order a request meets them, with no cycle:
//! this reads `src/` as `../shared/tools/modgraph.py` does (the `crate::x` paths in code, not in
//! comments or test modules) and fails on a cycle or on a module that reaches up the request's
//! path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The crate root, the fuzz shims and the documentation include sit above every module.
const ABOVE_ALL: [&str; 3] = ["lib", "fuzzing", "guide"];

/// Module -> the modules it names.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules: BTreeSet<String> = std::fs::read_dir(&src)
        .unwrap()
        .map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            name.trim_end_matches(".rs").to_owned()
        })
        .filter(|name| !ABOVE_ALL.contains(&name.as_str()))
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = vec![src.clone()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let relative = path.strip_prefix(&src).unwrap();
        let top = relative.components().next().unwrap().as_os_str();
        let top = top.to_str().unwrap().trim_end_matches(".rs").to_owned();
        if ABOVE_ALL.contains(&top.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
        let named = edges.entry(top.clone()).or_default();
        let code: String = code
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        for (at, _) in code.match_indices("crate::") {
            let rest = &code[at + "crate::".len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                // `use crate::{a, b::c}`, over one line or several.
                Some(group) => group[..group.find('}').unwrap_or(group.len())]
                    .split(',')
                    .map(|part| part.trim().split("::").next().unwrap())
                    .collect(),
                None => vec![
                    rest.split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                        .next()
                        .unwrap(),
                ],
            };
            for name in names {
                if name != top && modules.contains(name) {
                    named.insert(name.to_owned());
                }
            }
        }
    }
    edges
}

/// A cycle, if there is one, as the modules along it.
fn cycle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| n == node) {
            let mut cycle = path[at..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

#[test]
fn the_modules_form_no_cycle() {
    let edges = graph();
    assert!(edges.len() > 10, "read the modules: {edges:?}");
    if let Some(cycle) = cycle(&edges) {
        panic!("module cycle: {}", cycle.join(" -> "));
    }
}

#[test]
fn no_module_reaches_up_the_request_path() {
    let edges = graph();
    // The layers, in the order a request meets them, and the policy that builds them.
    let layers = [
        "propagate",
        "jwt",
        "authz",
        "claims",
        "rate_limit",
        "policy",
    ];
    for (i, layer) in layers.iter().enumerate() {
        for later in &layers[i + 1..] {
            assert!(
                !edges[*layer].contains(*later),
                "{layer} names {later}, which a request meets after it"
            );
        }
    }
    // The shared parts below the layers name none of them.
    for below in [
        "decision",
        "reject",
        "telemetry",
        "route",
        "net",
        "claim_path",
        "token",
        "keys",
    ] {
        for layer in layers {
            assert!(
                !edges[below].contains(layer),
                "{below} sits below the layers but names {layer}"
            );
        }
    }
}

#[test]
fn the_reader_sees_edges_and_would_see_a_cycle() {
    let edges = graph();
    assert!(edges["jwt"].contains("route"), "{:?}", edges["jwt"]);
    assert!(edges["authz"].contains("jwt"), "{:?}", edges["authz"]);
    let mut with_cycle = edges.clone();
    with_cycle
        .get_mut("route")
        .unwrap()
        .insert("authz".to_owned());
    assert!(cycle(&with_cycle).is_some());
}
