//! Which Debian package owns each path of an image: dpkg's file lists
//! (`var/lib/dpkg/info/PKG.list`) read from the merged tree, with diversions
//! and merged-`/usr` symlinks applied, so that a path is found where the
//! file really is.
//!
//! - A list names paths as the package ships them (`/lib/x` on a merged-`/usr`
//!   system whose `lib` is a symlink to `usr/lib`): every directory of a
//!   listed path is resolved through the image's symlinks, inside the image.
//! - `var/lib/dpkg/diversions` holds (from, to, diverter) triples: a path that
//!   a package other than the diverter lists as `from` is really at `to`.
//! - A path two packages list (dpkg allows it through `Replaces`, and a hostile
//!   image may do anything) goes to the package whose name sorts first, so the
//!   choice never depends on reading order.
//! - dpkg's own records of a package (`info/PKG.md5sums`, `PKG.postinst`, …)
//!   go with the package, so they change in the layer that changes anyway.
//! - Alternatives (`etc/alternatives/*` and the links to them) are written by
//!   `update-alternatives`, not listed by any package: they count as unowned.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};

use anyhow::{Context, Result};

use crate::deploy::tree::{Node, NodeKind, Tree};
use crate::store::Store;

/// Where dpkg keeps its per-package records.
pub const DPKG_INFO: &str = "var/lib/dpkg/info";
/// dpkg's diversion records.
pub const DPKG_DIVERSIONS: &str = "var/lib/dpkg/diversions";

/// Symlinks followed while resolving one path (as Linux's ELOOP).
const MAX_SYMLINKS: usize = 40;

/// Package ownership of the image's paths.
#[derive(Debug, Default)]
pub struct Owners {
    /// Canonical path (relative, as in the tree) → owning package (`name` or `name:arch`).
    pub by_path: HashMap<String, String>,
    /// Packages that have a file list.
    pub packages: Vec<String>,
    /// Paths listed by more than one package (each went to the first by name).
    pub contested: usize,
}

impl Owners {
    /// The package owning `path`, if any.
    pub fn owner(&self, path: &str) -> Option<&str> {
        self.by_path.get(path).map(String::as_str)
    }
}

/// The node at `comps` beneath `root`, following no symlink.
fn node_at<'a>(root: &'a Node, comps: &[String]) -> Option<&'a Node> {
    let mut node = root;
    for c in comps {
        node = node.children()?.get(c)?;
    }
    Some(node)
}

/// `path` with every directory resolved through the tree's symlinks inside the
/// image (an absolute target restarts at the root, `..` stops at the root); the
/// last component too when `follow_last`. Missing components are kept as written.
pub fn resolve(tree: &Tree, path: &str, follow_last: bool) -> String {
    let mut pending: Vec<String> = path.split('/').rev().filter(|c| !c.is_empty()).map(str::to_string).collect();
    let mut done: Vec<String> = Vec::new();
    let mut links = 0;
    while let Some(c) = pending.pop() {
        match c.as_str() {
            "." => continue,
            ".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        let last = pending.is_empty();
        done.push(c);
        if last && !follow_last {
            break;
        }
        if let Some(Node { kind: NodeKind::Symlink { target }, .. }) = node_at(&tree.root, &done) {
            if links == MAX_SYMLINKS {
                continue; // a loop: kept as written from here on
            }
            links += 1;
            done.pop();
            if target.starts_with('/') {
                done.clear();
            }
            pending.extend(target.split('/').rev().filter(|c| !c.is_empty()).map(str::to_string));
        }
    }
    done.join("/")
}

/// One diversion: a package other than `diverter` that ships `from` has it at `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diversion {
    /// The path as packages ship it.
    pub from: String,
    /// Where it is put instead.
    pub to: String,
    /// The package that made the diversion (`:` for a local one).
    pub diverter: String,
}

/// Parses dpkg's `diversions` file: triples of lines (from, to, diverter). A
/// trailing incomplete triple is ignored.
pub fn parse_diversions(text: &str) -> Vec<Diversion> {
    let lines: Vec<&str> = text.lines().collect();
    lines
        .chunks_exact(3)
        .map(|t| Diversion { from: t[0].to_string(), to: t[1].to_string(), diverter: t[2].to_string() })
        .collect()
}

/// The package a file of `var/lib/dpkg/info` belongs to (`PKG.EXT` → `PKG`),
/// when that package has a list.
fn info_file_package<'a>(name: &str, packages: &'a BTreeMap<String, ()>) -> Option<&'a str> {
    let (pkg, _) = name.rsplit_once('.')?;
    packages.get_key_value(pkg).map(|(k, _)| k.as_str())
}

/// Reads the ownership of every path of `tree` from the dpkg records in it
/// (objects read from `store`). An image without dpkg has no owners.
pub fn read(tree: &Tree, store: &Store) -> Result<Owners> {
    let mut owners = Owners::default();
    let info_path = resolve(tree, DPKG_INFO, true);
    let info_comps: Vec<String> = info_path.split('/').map(str::to_string).collect();
    let Some(info) = node_at(&tree.root, &info_comps).and_then(Node::children) else {
        return Ok(owners);
    };
    let read_object = |node: &Node| -> Result<Option<std::fs::File>> {
        match &node.kind {
            NodeKind::File { object, .. } => {
                let path = store.object_path(object);
                Ok(Some(std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?))
            }
            _ => Ok(None),
        }
    };

    let div_path = resolve(tree, DPKG_DIVERSIONS, true);
    let div_comps: Vec<String> = div_path.split('/').map(str::to_string).collect();
    let mut diversions: HashMap<String, Diversion> = HashMap::new();
    if let Some(node) = node_at(&tree.root, &div_comps) {
        if let Some(f) = read_object(node)? {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::Read::take(f, 16 << 20), &mut text)
                .context("reading dpkg's diversions")?;
            for d in parse_diversions(&text) {
                diversions.insert(d.from.clone(), d);
            }
        }
    }

    let packages: BTreeMap<String, ()> =
        info.keys().filter_map(|n| n.strip_suffix(".list")).map(|p| (p.to_string(), ())).collect();
    // Claims in package-name order: the first claim of a path stands.
    for (pkg, ()) in &packages {
        let Some(f) = read_object(&info[&format!("{pkg}.list")])? else { continue };
        for line in BufReader::new(f).lines() {
            let line = line.with_context(|| format!("reading dpkg's file list of {pkg}"))?;
            let listed = line.trim_end_matches('\n');
            if listed.is_empty() || listed == "/." {
                continue;
            }
            let shipped = match diversions.get(listed) {
                Some(d) if d.diverter != *pkg => d.to.as_str(),
                _ => listed,
            };
            let path = resolve(tree, shipped, false);
            if path.is_empty() {
                continue;
            }
            match owners.by_path.get(&path) {
                Some(first) if first != pkg => owners.contested += 1,
                Some(_) => {}
                None => {
                    owners.by_path.insert(path, pkg.clone());
                }
            }
        }
    }
    for name in info.keys() {
        if let Some(pkg) = info_file_package(name, &packages) {
            owners.by_path.entry(format!("{info_path}/{name}")).or_insert_with(|| pkg.to_string());
        }
    }
    owners.packages = packages.into_keys().collect();
    Ok(owners)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Entry, EntryKind, LayerIndex, Meta};

    fn tree(entries: &[(&str, EntryKind)]) -> Tree {
        let layer = LayerIndex {
            version: crate::store::layer_index::LAYER_INDEX_VERSION,
            diff_id: crate::digest::Digest::of(b""),
            blob_digest: crate::digest::Digest::of(b""),
            media_type: String::new(),
            compressed_size: 0,
            uncompressed_size: 0,
            entries: entries
                .iter()
                .map(|(p, k)| Entry { path: p.to_string(), kind: k.clone(), meta: Meta::default() })
                .collect(),
            toc_digest: None,
            content_digests: Default::default(),
            chunks: Default::default(),
        };
        Tree::from_layers(&[layer]).unwrap()
    }

    fn link(t: &str) -> EntryKind {
        EntryKind::Symlink { target: t.into() }
    }

    #[test]
    fn listed_paths_resolve_through_merged_usr_symlinks() {
        let t = tree(&[
            ("usr/lib/x", EntryKind::Dir),
            ("lib", link("usr/lib")),
            ("bin", link("/usr/bin")),
            ("usr/bin", EntryKind::Dir),
            ("usr/lib/up", link("../../usr/bin")),
            ("loop", link("loop")),
        ]);
        for (path, follow_last, want) in [
            ("/lib/x/mod.ko", false, "usr/lib/x/mod.ko"),
            ("/bin/sh", false, "usr/bin/sh"),
            ("/bin", false, "bin"),
            ("/bin", true, "usr/bin"),
            ("/lib/up/tool", false, "usr/bin/tool"),
            ("/usr/../../etc/passwd", false, "etc/passwd"),
            ("/missing/dir/f", false, "missing/dir/f"),
            // A symlink loop is followed MAX_SYMLINKS times, then kept as written.
            ("/loop/f", false, "loop/f"),
        ] {
            assert_eq!(resolve(&t, path, follow_last), want, "{path}");
        }
    }

    #[test]
    fn diversions_are_triples_and_a_partial_one_is_ignored() {
        let d = parse_diversions("/bin/sh\n/bin/sh.distrib\ndash\n/usr/bin/x\n/usr/bin/x.real\n:\n/half\n");
        assert_eq!(d.len(), 2);
        assert_eq!(d[0], Diversion { from: "/bin/sh".into(), to: "/bin/sh.distrib".into(), diverter: "dash".into() });
        assert_eq!(d[1].diverter, ":");
    }

    #[test]
    fn info_files_go_to_their_package_when_it_has_a_list() {
        let pkgs: BTreeMap<String, ()> = [("libc6:amd64".to_string(), ()), ("dash".to_string(), ())].into();
        assert_eq!(info_file_package("libc6:amd64.md5sums", &pkgs), Some("libc6:amd64"));
        assert_eq!(info_file_package("dash.postinst", &pkgs), Some("dash"));
        assert_eq!(info_file_package("format", &pkgs), None);
        assert_eq!(info_file_package("gone.list", &pkgs), None);
    }
}
