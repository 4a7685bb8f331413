//! The proxy's layering, read from its own source. `src/` holds the shared
//! vocabulary at its root and four wings above it: `ingress/` and `routing/`
//! use only the root; the two roles, `sidecar/` and `gateway/`, use the root,
//! `ingress/` and `routing/`, never each other. `lib.rs` and `fuzzing.rs` are
//! the entry points: they may use anything and nothing uses them.
//!
//! Every `crate::`, `super::` and `self::` path is an import, in `use` items and
//! in code alike (paths inside macro invocations are not read). Tests follow the
//! same layers, with one allowance: routing's tests may stand a sidecar's real
//! ingress at the far end of a call. Besides the layers, the imports between the
//! parts of one folder (its files and subfolders, and its `mod.rs`) must not form
//! a cycle, at every depth but inside the CRDT types, which are one recursive
//! whole (an ORMap holds CRDTs).

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use syn::visit::Visit;

/// A wing: the layers it may import besides its own, and those its tests may
/// import besides.
struct Wing {
    name: &'static str,
    imports: &'static [&'static str],
    tests_import: &'static [&'static str],
}

const WINGS: &[Wing] = &[
    Wing {
        name: "ingress",
        imports: &[ROOT],
        tests_import: &[],
    },
    Wing {
        name: "routing",
        imports: &[ROOT],
        tests_import: &["ingress"],
    },
    Wing {
        name: "sidecar",
        imports: &[ROOT, "ingress", "routing"],
        tests_import: &[],
    },
    Wing {
        name: "gateway",
        imports: &[ROOT, "ingress", "routing"],
        tests_import: &[],
    },
];
/// The layer of the files directly in `src/`.
const ROOT: &str = "the root";
/// The modules that may import anything and are imported by nothing.
const ENTRY_POINTS: &[&str] = &["", "fuzzing"];
/// Folders whose parts may refer to each other: one component, checked as one.
const WHOLES: &[&str] = &["sidecar::entity::crdt"];

type Module = Vec<String>;

/// Every module of a crate (inline ones included), the file it is in, and
/// which are compiled for tests only.
struct Tree {
    files: BTreeMap<Module, PathBuf>,
    tests: BTreeSet<Module>,
}

impl Tree {
    fn read(src: &Path) -> Tree {
        let mut tree = Tree {
            files: BTreeMap::new(),
            tests: BTreeSet::new(),
        };
        tree.add_file(Vec::new(), &src.join("lib.rs"), true);
        tree
    }

    fn add_file(&mut self, module: Module, file: &Path, owns_folder: bool) {
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let parsed = syn::parse_file(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let folder = if owns_folder {
            file.parent().unwrap().to_path_buf()
        } else {
            file.with_extension("")
        };
        self.files.insert(module.clone(), file.to_path_buf());
        self.add_items(&module, file, &folder, &parsed.items);
    }

    fn add_items(&mut self, module: &Module, file: &Path, folder: &Path, items: &[syn::Item]) {
        for item in items {
            let syn::Item::Mod(declared) = item else { continue };
            let child = child(module, &declared.ident.to_string());
            if self.tests.contains(module) || is_cfg_test(&declared.attrs) {
                self.tests.insert(child.clone());
            }
            match &declared.content {
                Some((_, inline)) => {
                    self.files.insert(child.clone(), file.to_path_buf());
                    self.add_items(&child, file, &folder.join(declared.ident.to_string()), inline);
                }
                None => {
                    let name = declared.ident.to_string();
                    let (path, owns_folder) = match path_attribute(&declared.attrs) {
                        // Relative to the folder of the declaring file.
                        Some(path) => (file.parent().unwrap().join(path), false),
                        None if folder.join(format!("{name}.rs")).exists() => {
                            (folder.join(format!("{name}.rs")), false)
                        }
                        None => (folder.join(&name).join("mod.rs"), true),
                    };
                    self.add_file(child, &path, owns_folder);
                }
            }
        }
    }

    fn is_module(&self, module: &[String]) -> bool {
        self.files.contains_key(module)
    }

    /// The module a path names, or the module of the item it names.
    fn resolve(&self, from: &[String], segments: &[String]) -> Option<Module> {
        let (mut at, rest): (Module, &[String]) = match segments.first().map(String::as_str) {
            Some("crate") => (Vec::new(), &segments[1..]),
            Some("self") => (from.to_vec(), &segments[1..]),
            Some("super") => {
                let mut at = from.to_vec();
                let mut rest = segments;
                while rest.first().map(String::as_str) == Some("super") {
                    at.pop()?;
                    rest = &rest[1..];
                }
                (at, rest)
            }
            // A child module named without `self::` (needs a `::` after it).
            Some(first) if segments.len() > 1 && self.is_module(&child(from, first)) => (from.to_vec(), segments),
            _ => return None,
        };
        for segment in rest {
            at.push(segment.clone());
            if !self.is_module(&at) {
                at.pop();
                break;
            }
        }
        Some(at)
    }
}

fn child(module: &[String], name: &str) -> Module {
    let mut child = module.to_vec();
    child.push(name.to_string());
    child
}

fn is_cfg_test(attrs: &[syn::Attribute]) -> bool {
    attrs
        .iter()
        .any(|a| a.path().is_ident("cfg") && a.parse_args::<syn::Ident>().is_ok_and(|cfg| cfg == "test"))
}

fn path_attribute(attrs: &[syn::Attribute]) -> Option<String> {
    attrs
        .iter()
        .find(|a| a.path().is_ident("path"))
        .and_then(|a| match &a.meta {
            syn::Meta::NameValue(syn::MetaNameValue {
                value:
                    syn::Expr::Lit(syn::ExprLit {
                        lit: syn::Lit::Str(path),
                        ..
                    }),
                ..
            }) => Some(path.value()),
            _ => None,
        })
}

/// One import: the module it is in, the module it names, and how it was written.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Import {
    from: Module,
    to: Module,
    written: String,
}

/// Collects the paths of one file, knowing which inline module each is in.
struct Paths<'a> {
    tree: &'a Tree,
    module: Module,
    found: Vec<Import>,
}

impl Paths<'_> {
    fn add(&mut self, segments: Vec<String>) {
        if let Some(to) = self.tree.resolve(&self.module, &segments) {
            self.found.push(Import {
                from: self.module.clone(),
                to,
                written: segments.join("::"),
            });
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.use_tree(prefix, &path.tree);
                prefix.pop();
            }
            syn::UseTree::Name(name) if name.ident == "self" => self.add(prefix.clone()),
            syn::UseTree::Name(name) => self.add([prefix.as_slice(), &[name.ident.to_string()]].concat()),
            syn::UseTree::Rename(rename) => self.add([prefix.as_slice(), &[rename.ident.to_string()]].concat()),
            syn::UseTree::Glob(_) => self.add([prefix.as_slice(), &["*".to_string()]].concat()),
            syn::UseTree::Group(group) => {
                for tree in &group.items {
                    self.use_tree(prefix, tree);
                }
            }
        }
    }
}

impl<'ast> Visit<'ast> for Paths<'_> {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        self.module.push(item.ident.to_string());
        syn::visit::visit_item_mod(self, item);
        self.module.pop();
    }

    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.segments.len() > 1 {
            self.add(path.segments.iter().map(|s| s.ident.to_string()).collect());
        }
        syn::visit::visit_path(self, path);
    }
}

/// Every import of the crate whose `lib.rs` is in `src`.
fn imports(tree: &Tree) -> Vec<Import> {
    let files: BTreeSet<(&PathBuf, &Module)> = tree
        .files
        .iter()
        .filter(|(module, file)| {
            // Only the module a file starts with; inline ones are visited inside it.
            module.is_empty() || tree.files.get(&module[..module.len() - 1]) != Some(file)
        })
        .map(|(module, file)| (file, module))
        .collect();
    let mut found = Vec::new();
    for (file, module) in files {
        let parsed = syn::parse_file(&std::fs::read_to_string(file).unwrap()).unwrap();
        let mut paths = Paths {
            tree,
            module: module.clone(),
            found: Vec::new(),
        };
        paths.visit_file(&parsed);
        found.extend(paths.found);
    }
    found
}

/// The layer of a module: its wing, the root, or (`None`) an entry point.
fn layer(module: &[String]) -> Option<&'static str> {
    let first = module.first().map_or("", String::as_str);
    if ENTRY_POINTS.contains(&first) {
        return None;
    }
    Some(
        WINGS
            .iter()
            .find(|wing| wing.name == first)
            .map_or(ROOT, |wing| wing.name),
    )
}

/// What breaks the layering: imports that point up or across, and cycles.
fn problems(src: &Path) -> Vec<String> {
    let tree = Tree::read(src);
    let imports = imports(&tree);
    let mut problems = Vec::new();
    let name = |module: &[String]| {
        if module.is_empty() {
            "lib.rs".to_string()
        } else {
            module.join("::")
        }
    };
    // --- the layers
    for import in &imports {
        if tree.files[&import.from] == tree.files[&import.to] {
            continue;
        }
        let (Some(from), to) = (layer(&import.from), layer(&import.to)) else {
            continue;
        };
        let in_tests = tree.tests.contains(&import.from);
        let allowed = match to {
            None => false,
            Some(to) if to == from => true,
            Some(to) => WINGS
                .iter()
                .find(|wing| wing.name == from)
                .is_some_and(|wing| wing.imports.contains(&to) || (in_tests && wing.tests_import.contains(&to))),
        };
        if !allowed {
            problems.push(format!(
                "{} ({}) imports {} ({}) as {}",
                name(&import.from),
                from,
                name(&import.to),
                to.unwrap_or("an entry point"),
                import.written
            ));
        }
    }
    // --- cycles between the parts of each folder
    let mut graphs: BTreeMap<Module, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for import in &imports {
        if tree.files[&import.from] == tree.files[&import.to] {
            continue;
        }
        let common = import.from.iter().zip(&import.to).take_while(|(a, b)| a == b).count();
        let part = |module: &Module| module.get(common).cloned().unwrap_or_else(|| "mod.rs".into());
        let (from, to) = (part(&import.from), part(&import.to));
        if from != to {
            let folder = import.from[..common].to_vec();
            graphs.entry(folder).or_default().entry(from).or_default().insert(to);
        }
    }
    for (folder, graph) in &graphs {
        if WHOLES.iter().any(|whole| name(folder).starts_with(whole)) {
            continue;
        }
        if let Some(cycle) = find_cycle(graph) {
            problems.push(format!("a cycle in {}: {}", name(folder), cycle.join(" -> ")));
        }
    }
    problems
}

/// A cycle in a directed graph, as the nodes along it (the first repeated last).
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| n == node) {
            let mut cycle = path[start..].to_vec();
            cycle.push(node.to_string());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_proxy_keeps_its_layers_and_has_no_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let problems = problems(&src);
    assert!(
        problems.is_empty(),
        "the proxy's layering is broken:\n{}",
        problems.join("\n")
    );
}

/// A throwaway crate laid out like the proxy, with `files` as (path, source).
fn crate_of(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, source) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, source).unwrap();
    }
    dir
}

#[test]
fn an_import_up_or_across_the_wings_is_reported() {
    let dir = crate_of(&[
        (
            "lib.rs",
            "mod call; mod ingress; mod sidecar; mod gateway; pub mod fuzzing;",
        ),
        ("call.rs", "pub struct Call; pub fn open() { crate::ingress::serve(); }"),
        ("ingress/mod.rs", "pub fn serve() { let _ = crate::call::Call; }"),
        ("sidecar/mod.rs", "use crate::{call::Call, ingress};"),
        (
            "gateway/mod.rs",
            "use crate::sidecar as role; fn f() { crate::fuzzing::run(); }",
        ),
        (
            "fuzzing.rs",
            "pub fn run() { crate::sidecar::go(); crate::call::open(); }",
        ),
    ]);
    assert_eq!(
        problems(dir.path()),
        [
            "call (the root) imports ingress (ingress) as crate::ingress::serve",
            "gateway (gateway) imports sidecar (sidecar) as crate::sidecar",
            "gateway (gateway) imports fuzzing (an entry point) as crate::fuzzing::run",
            // Both directions between the root and a wing: a cycle too.
            "a cycle in lib.rs: call -> ingress -> call",
        ]
        .map(String::from)
    );
}

#[test]
fn a_cycle_between_the_files_of_a_wing_is_reported() {
    let dir = crate_of(&[
        ("lib.rs", "mod ingress;"),
        (
            "ingress/mod.rs",
            "mod grpc; mod http; mod exchange; pub use exchange::Ingress; fn f() { http::serve(); }",
        ),
        ("ingress/exchange.rs", "pub struct Ingress;"),
        ("ingress/grpc.rs", "use super::exchange::Ingress; pub fn frame() {}"),
        (
            "ingress/http.rs",
            "use crate::ingress::Ingress; pub fn serve() { super::grpc::frame(); }",
        ),
    ]);
    assert_eq!(
        problems(dir.path()),
        ["a cycle in ingress: http -> mod.rs -> http".to_string()]
    );
    // The same, naming the file that defines what it imports: no cycle.
    std::fs::write(
        dir.path().join("ingress/http.rs"),
        "use super::exchange::Ingress; pub fn serve() { super::grpc::frame(); }",
    )
    .unwrap();
    assert_eq!(problems(dir.path()), Vec::<String>::new());
}

#[test]
fn only_routings_tests_may_use_the_ingress() {
    let dir = crate_of(&[
        ("lib.rs", "mod ingress; mod routing; mod gateway;"),
        ("ingress/mod.rs", "pub fn serve() {}"),
        (
            "routing/mod.rs",
            "#[cfg(test)] #[path = \"far_end.rs\"] mod far_end; #[cfg(test)] mod tests { use crate::ingress::serve; }",
        ),
        ("routing/far_end.rs", "fn sidecar() { crate::ingress::serve(); }"),
        (
            "gateway/mod.rs",
            "#[cfg(test)] mod tests { use crate::ingress::serve; }",
        ),
    ]);
    assert_eq!(problems(dir.path()), Vec::<String>::new());
    std::fs::write(
        dir.path().join("routing/mod.rs"),
        "fn route() { crate::ingress::serve(); }",
    )
    .unwrap();
    assert_eq!(
        problems(dir.path()),
        ["routing (routing) imports ingress (ingress) as crate::ingress::serve".to_string()]
    );
}
