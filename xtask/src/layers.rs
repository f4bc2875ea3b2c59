//! `cargo xtask layers` (also a step of `cargo xtask ci`): the layering of the workspace.
//!
//! - Crates: the library crates are the workspace members under `crates/`, lowest first in the
//!   order the root manifest lists them. A crate may depend (normally, for its build, or for its
//!   tests) only on crates listed before it, and on itself (a dev-dependency that turns on its
//!   own features).
//! - Files: within each crate, no source files import each other in a circle. An import is a
//!   `use` of a path inside the crate (`crate::`, `super::`, `self::` or a child module) or such
//!   a path written in code; `mod` declarations are not imports, and a path through a
//!   `pub use` re-export counts as an import of the file that defines the item. Test modules
//!   (from the first `#[cfg(test)]` of a file on) are left out.
//!
//! Plain text reading of manifests and sources: no parser dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Runs both checks on the workspace at `root`; the error lists every violation.
pub fn check(root: &Path) -> Result<(), String> {
    let crates = library_crates(root)?;
    let mut problems = crate_order_violations(root, &crates)?;
    for name in &crates {
        let src = root.join("crates").join(name).join("src");
        for cycle in file_cycles(&src)? {
            problems.push(format!("{name}: source files import each other in a circle: {}", cycle.join(" -> ")));
        }
    }
    if problems.is_empty() {
        println!("layers: {} crates in order ({}), no import circles", crates.len(), crates.join(" < "));
        Ok(())
    } else {
        Err(format!("layering check failed:\n  {}", problems.join("\n  ")))
    }
}

fn read(path: &Path) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The library crates, lowest first: the `crates/<name>` members of the root manifest in order.
fn library_crates(root: &Path) -> Result<Vec<String>, String> {
    let manifest = read(&root.join("Cargo.toml"))?;
    let start = manifest.find("members").ok_or("Cargo.toml: no `members` in [workspace]")?;
    let end = manifest[start..].find(']').ok_or("Cargo.toml: `members` is not closed")? + start;
    Ok(manifest[start..end]
        .split('"')
        .filter_map(|item| item.strip_prefix("crates/"))
        .map(|name| name.trim_end_matches('/').to_string())
        .collect())
}

/// Every dependency of a workspace crate on one not below it.
fn crate_order_violations(root: &Path, crates: &[String]) -> Result<Vec<String>, String> {
    let mut problems = Vec::new();
    for (rank, name) in crates.iter().enumerate() {
        let path = root.join("crates").join(name).join("Cargo.toml");
        for (section, dep) in workspace_dependencies(&read(&path)?, crates) {
            let allowed = crates[..rank].contains(&dep) || (dep == *name && section.contains("dev-dependencies"));
            if !allowed {
                problems.push(format!(
                    "{name} [{section}] depends on {dep}, which is not below it (order: {})",
                    crates.join(" < ")
                ));
            }
        }
    }
    Ok(problems)
}

/// `(section, crate)` for each dependency of a manifest on one of `crates`.
fn workspace_dependencies(manifest: &str, crates: &[String]) -> Vec<(String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = header.to_string();
            continue;
        }
        if !section.ends_with("dependencies") || line.starts_with('#') {
            continue;
        }
        let key = line.split(['=', '.', ' ']).next().unwrap_or("").trim();
        if crates.iter().any(|c| c == key) {
            out.push((section.clone(), key.to_string()));
        }
    }
    out
}

/// One source file: its module path, the child modules it declares, its imports and the
/// re-exports it makes (`name -> path`).
struct SourceFile {
    path: PathBuf,
    module: Vec<String>,
    children: Vec<String>,
    imports: Vec<Vec<String>>,
    reexports: BTreeMap<String, Vec<String>>,
}

/// The module tree of the crate whose sources are in `src`, from `lib.rs` or `main.rs`.
fn module_tree(src: &Path) -> Result<Vec<SourceFile>, String> {
    let root = ["lib.rs", "main.rs"].iter().map(|f| src.join(f)).find(|p| p.is_file());
    let root = root.ok_or_else(|| format!("{}: no lib.rs or main.rs", src.display()))?;
    let mut files = Vec::new();
    let mut pending = vec![(root, Vec::<String>::new())];
    while let Some((path, module)) = pending.pop() {
        let text = code_only(&read(&path)?);
        let dir = match path.file_name().and_then(|f| f.to_str()) {
            Some("lib.rs" | "main.rs" | "mod.rs") => path.parent().map(Path::to_path_buf).unwrap_or_default(),
            _ => path.with_extension(""),
        };
        let children = declared_modules(&text);
        for child in &children {
            let file =
                [dir.join(format!("{child}.rs")), dir.join(child).join("mod.rs")].into_iter().find(|p| p.is_file());
            let file = file.ok_or_else(|| format!("{}: `mod {child};` has no file", path.display()))?;
            pending.push((file, module.iter().cloned().chain([child.clone()]).collect()));
        }
        let (imports, reexports) = imports_of(&text);
        files.push(SourceFile { path, module, children, imports, reexports });
    }
    Ok(files)
}

/// The text before the first `#[cfg(test)]`, without `//` comments.
fn code_only(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines().map(|l| l.find("//").map_or(l, |i| &l[..i])).collect::<Vec<_>>().join("\n")
}

/// The names of `mod name;` declarations (inline `mod name { .. }` blocks are part of the file).
fn declared_modules(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest =
                l.strip_prefix("pub mod ").or_else(|| l.strip_prefix("pub(crate) mod ")).or(l.strip_prefix("mod "))?;
            rest.strip_suffix(';').map(|name| name.trim().to_string())
        })
        .collect()
}

/// The paths a file uses (`use` trees expanded, and `crate::`/`super::`/`self::` paths in
/// code), and its `pub use` re-exports by the name they export.
fn imports_of(text: &str) -> (Vec<Vec<String>>, BTreeMap<String, Vec<String>>) {
    let mut imports = Vec::new();
    let mut reexports = BTreeMap::new();
    let mut rest = text;
    let mut code = String::new();
    while let Some(at) = find_use(rest) {
        code.push_str(&rest[..at.0]);
        let statement = &rest[at.1..];
        let end = statement.find(';').unwrap_or(statement.len());
        for path in expand_use_tree(&statement[..end]) {
            if at.2 {
                let name = path.last().cloned().unwrap_or_default();
                reexports.insert(name, path.clone());
            }
            imports.push(path);
        }
        rest = &statement[(end + 1).min(statement.len())..];
    }
    code.push_str(rest);
    for start in ["crate::", "super::", "self::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let at = from + i;
            from = at + start.len();
            let before = code[..at].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue; // part of another word, or `$crate` inside a macro definition
            }
            let path: String =
                code[at..].chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
            imports.push(path.split("::").filter(|s| !s.is_empty()).map(String::from).collect());
        }
    }
    (imports, reexports)
}

/// The next `use` statement of `text`: (where it starts, where its tree starts, whether `pub`).
fn find_use(text: &str) -> Option<(usize, usize, bool)> {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        for (prefix, public) in [("use ", false), ("pub use ", true), ("pub(crate) use ", false)] {
            if trimmed.starts_with(prefix) {
                return Some((offset, offset + indent + prefix.len(), public));
            }
        }
        offset += line.len();
    }
    None
}

/// `a::{b, c::{d, e as f}}` -> `[a, b]`, `[a, c, d]`, `[a, c, e]`.
fn expand_use_tree(tree: &str) -> Vec<Vec<String>> {
    // `a as b` becomes `a@b` before the whitespace goes, so that the alias can be cut off.
    let tree = tree.split_whitespace().collect::<Vec<_>>().join(" ").replace(" as ", "@");
    let tree: String = tree.chars().filter(|c| !c.is_whitespace()).collect();
    let mut out = Vec::new();
    expand_into(&tree, &mut Vec::new(), &mut out);
    out
}

fn expand_into(tree: &str, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match tree.find('{') {
        Some(open) => {
            let head: Vec<String> = tree[..open].split("::").filter(|s| !s.is_empty()).map(String::from).collect();
            let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
            let depth = prefix.len();
            prefix.extend(head);
            for item in split_top_level(inner) {
                expand_into(item, prefix, out);
            }
            prefix.truncate(depth);
        }
        None => {
            let path = tree.split('@').next().unwrap_or(tree);
            let mut full = prefix.clone();
            full.extend(path.split("::").filter(|s| !s.is_empty() && *s != "*" && *s != "self").map(String::from));
            if !full.is_empty() {
                out.push(full);
            }
        }
    }
}

/// Splits `a, b::{c, d}, e` at the commas outside braces.
fn split_top_level(list: &str) -> Vec<&str> {
    let (mut depth, mut start, mut items) = (0, 0, Vec::new());
    for (i, c) in list.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&list[start..]);
    items.into_iter().filter(|s| !s.is_empty()).collect()
}

/// The file that defines what `path`, written in module `context`, names; `None` for paths
/// outside the crate.
fn resolve(files: &[SourceFile], context: &[String], path: &[String], depth: usize) -> Option<usize> {
    let find = |module: &[String]| files.iter().position(|f| f.module == module);
    let mut module: Vec<String> = context.to_vec();
    let mut segments = path;
    match segments.first().map(String::as_str) {
        Some("crate") => {
            module.clear();
            segments = &segments[1..];
        }
        Some("self") => segments = &segments[1..],
        Some("super") => {
            while segments.first().map(String::as_str) == Some("super") {
                module.pop();
                segments = &segments[1..];
            }
        }
        Some(first) => {
            let here = &files[find(&module)?];
            if !here.children.iter().any(|c| c == first) && !here.reexports.contains_key(first) {
                return None; // an external crate, or a name from the prelude
            }
        }
        None => return None,
    }
    for (i, segment) in segments.iter().enumerate() {
        let here = &files[find(&module)?];
        if here.children.contains(segment) {
            module.push(segment.clone());
        } else if let Some(target) = here.reexports.get(segment).filter(|_| depth < 8) {
            let target: Vec<String> = target.iter().chain(&segments[i + 1..]).cloned().collect();
            // A re-export of another crate's item (`pub use vit_rng::SharedRng`) is no
            // import of a file of this crate.
            return resolve(files, &module, &target, depth + 1);
        } else {
            break;
        }
    }
    find(&module)
}

/// The import circles among the source files under `src`, each as a list of files.
fn file_cycles(src: &Path) -> Result<Vec<Vec<String>>, String> {
    let files = module_tree(src)?;
    let mut edges: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); files.len()];
    for (i, file) in files.iter().enumerate() {
        for path in &file.imports {
            if let Some(j) = resolve(&files, &file.module, path, 0).filter(|&j| j != i) {
                edges[i].insert(j);
            }
        }
    }
    let name = |i: usize| files[i].path.strip_prefix(src).unwrap_or(&files[i].path).display().to_string();
    let mut cycles: Vec<Vec<String>> = strongly_connected(&edges)
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let mut names: Vec<String> = c.into_iter().map(name).collect();
            names.sort();
            names
        })
        .collect();
    cycles.sort();
    Ok(cycles)
}

/// Tarjan's strongly connected components of a graph given as adjacency sets.
fn strongly_connected(edges: &[BTreeSet<usize>]) -> Vec<Vec<usize>> {
    struct Walk<'a> {
        edges: &'a [BTreeSet<usize>],
        index: Vec<Option<usize>>,
        low: Vec<usize>,
        on_stack: Vec<bool>,
        stack: Vec<usize>,
        next: usize,
        components: Vec<Vec<usize>>,
    }
    fn visit(w: &mut Walk, v: usize) {
        w.index[v] = Some(w.next);
        w.low[v] = w.next;
        w.next += 1;
        w.stack.push(v);
        w.on_stack[v] = true;
        for &u in w.edges[v].clone().iter() {
            match w.index[u] {
                None => {
                    visit(w, u);
                    w.low[v] = w.low[v].min(w.low[u]);
                }
                Some(iu) if w.on_stack[u] => w.low[v] = w.low[v].min(iu),
                _ => {}
            }
        }
        if Some(w.low[v]) == w.index[v] {
            let mut component = Vec::new();
            while let Some(u) = w.stack.pop() {
                w.on_stack[u] = false;
                component.push(u);
                if u == v {
                    break;
                }
            }
            component.sort_unstable();
            w.components.push(component);
        }
    }
    let n = edges.len();
    let mut w = Walk {
        edges,
        index: vec![None; n],
        low: vec![0; n],
        on_stack: vec![false; n],
        stack: Vec::new(),
        next: 0,
        components: Vec::new(),
    };
    for v in 0..n {
        if w.index[v].is_none() {
            visit(&mut w, v);
        }
    }
    w.components
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, files: &[(&str, &str)]) {
        for (name, text) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("xtask-layers-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_circle_through_use_trees_and_re_exports_is_found_and_a_chain_is_not() {
        let dir = tmp("cycle");
        write(
            &dir,
            &[
                ("lib.rs", "mod a;\nmod b;\npub mod c;\npub use b::Bee;\n"),
                ("a.rs", "use crate::{Bee, c::Sea as Ocean};\n"),
                ("b.rs", "pub struct Bee;\nfn f() { crate::a::g(); }\n"),
                ("c/mod.rs", "mod d;\npub use d::Sea;\n"),
                ("c/d.rs", "pub struct Sea;\n#[cfg(test)]\nmod tests { use crate::a::X; }\n"),
            ],
        );
        let cycles = file_cycles(&dir).unwrap();
        assert_eq!(cycles, vec![vec!["a.rs".to_string(), "b.rs".to_string()]]);
        // Without the call back from b to a, nothing circles (lib re-exports b; a reaches d
        // through c's re-export; the test module of d is left out).
        write(&dir, &[("b.rs", "pub struct Bee;\n")]);
        assert!(file_cycles(&dir).unwrap().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_crate_that_depends_on_one_above_it_is_reported() {
        let dir = tmp("order");
        write(
            &dir,
            &[
                (
                    "Cargo.toml",
                    "[workspace]\nmembers = [\n    \"crates/low\",\n    \"crates/high\",\n    \"xtask\",\n]\n",
                ),
                (
                    "crates/low/Cargo.toml",
                    "[dependencies]\nhigh.workspace = true\n\n[dev-dependencies]\nlow = { path = \".\" }\n",
                ),
                ("crates/high/Cargo.toml", "[dependencies]\nlow = { workspace = true, features = [\"x\"] }\n"),
            ],
        );
        let crates = library_crates(&dir).unwrap();
        assert_eq!(crates, ["low", "high"]);
        let problems = crate_order_violations(&dir, &crates).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("low [dependencies] depends on high"), "{problems:?}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
