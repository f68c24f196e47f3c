//! The merged in-memory root tree of an image: its layer indexes applied in
//! order (entries, OCI whiteouts and opaque directories), before anything is
//! written to disk.
//!
//! Paths inside a layer may pass through symlinks that lower layers (or
//! earlier entries of the same layer) created. Like containerd and umoci, such
//! paths are resolved *inside the image*: an absolute target restarts at the
//! image root and `..` never climbs above it. Resolution happens here, in
//! memory, so that the materialising step only ever creates fresh names in
//! directories it created itself and never follows a symlink. It happens here
//! and not when a layer is imported because where a path leads depends on the
//! layers below, and a layer index is shared by every image that has the layer.
//!
//! A parent that is neither a directory nor a symlink (a file that a lower
//! layer, or an earlier entry, left where this entry needs a directory) is
//! replaced by a directory, as umoci does and as overlayfs shows it.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

use crate::store::{Entry, EntryKind, LayerIndex, Meta, ObjectId};

/// Symlinks followed while resolving one path before giving up (as Linux's ELOOP).
const MAX_SYMLINKS: usize = 40;

/// One node of the merged tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// What the node is.
    pub kind: NodeKind,
    /// Its owner, mode and extended attributes.
    pub meta: Meta,
    /// Hard-link group of a non-regular node (symlink, device, fifo) that the
    /// image hard-links; regular files share the object's inode instead.
    pub link_group: Option<u64>,
    /// This name came from a tar hard-link entry.
    pub via_hardlink: bool,
}

/// What a node is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// A directory and its entries, by name.
    Dir(BTreeMap<String, Node>),
    /// A regular file, stored as an object.
    File {
        /// The object holding its bytes.
        object: ObjectId,
        /// Its size, in bytes.
        size: u64,
    },
    /// A symbolic link.
    Symlink {
        /// What it points to, as written.
        target: String,
    },
    /// A character device.
    CharDevice {
        /// Major device number.
        major: u32,
        /// Minor device number.
        minor: u32,
    },
    /// A block device.
    BlockDevice {
        /// Major device number.
        major: u32,
        /// Minor device number.
        minor: u32,
    },
    /// A named pipe.
    Fifo,
}

impl Node {
    fn dir(meta: Meta) -> Node {
        Node { kind: NodeKind::Dir(BTreeMap::new()), meta, link_group: None, via_hardlink: false }
    }

    /// The children of a directory, `None` for any other kind.
    pub fn children(&self) -> Option<&BTreeMap<String, Node>> {
        match &self.kind {
            NodeKind::Dir(c) => Some(c),
            _ => None,
        }
    }

    fn children_mut(&mut self) -> Option<&mut BTreeMap<String, Node>> {
        match &mut self.kind {
            NodeKind::Dir(c) => Some(c),
            _ => None,
        }
    }
}

/// Metadata of directories that a layer implies without listing them
/// (`a/b/c` without an `a/b` entry), as other unpackers create them.
fn implied_dir_meta() -> Meta {
    Meta { mode: 0o755, ..Meta::default() }
}

/// The merged tree of one image.
#[derive(Clone, Debug)]
pub struct Tree {
    /// The root directory.
    pub root: Node,
    next_group: u64,
}

impl Default for Tree {
    fn default() -> Self {
        Tree::new()
    }
}

fn components(path: &str) -> Result<Vec<&str>> {
    if path.is_empty() {
        return Ok(Vec::new());
    }
    let comps: Vec<&str> = path.split('/').collect();
    for c in &comps {
        if c.is_empty() || *c == "." || *c == ".." || c.contains('\0') {
            bail!("invalid path {path:?} in layer index (component {c:?})");
        }
    }
    Ok(comps)
}

impl Tree {
    /// An empty tree: a root directory with mode 0755 owned by root.
    pub fn new() -> Tree {
        Tree { root: Node::dir(implied_dir_meta()), next_group: 0 }
    }

    /// Applies `layers` lowest first.
    pub fn from_layers(layers: &[LayerIndex]) -> Result<Tree> {
        let mut tree = Tree::new();
        for (i, layer) in layers.iter().enumerate() {
            tree.apply_layer(layer).with_context(|| format!("layer {} ({})", i + 1, layer.diff_id))?;
        }
        Ok(tree)
    }

    /// Applies one layer: its whiteouts first (they only hide lower layers'
    /// content, per the OCI image spec), then its entries in tar order.
    pub fn apply_layer(&mut self, layer: &LayerIndex) -> Result<()> {
        for e in &layer.entries {
            match e.kind {
                EntryKind::Whiteout => self.whiteout(&e.path).with_context(|| format!("whiteout of {}", e.path))?,
                EntryKind::OpaqueWhiteout => {
                    self.opaque(&e.path).with_context(|| format!("opaque whiteout of {}", e.path))?
                }
                _ => {}
            }
        }
        for e in &layer.entries {
            if !matches!(e.kind, EntryKind::Whiteout | EntryKind::OpaqueWhiteout) {
                self.add(e).with_context(|| format!("entry {}", e.path))?;
            }
        }
        Ok(())
    }

    /// Resolves `comps` as a directory path inside the tree, following
    /// symlinks confined to the root. Components past the first missing one
    /// are returned literally (nothing below a missing name can be a symlink);
    /// a component that is neither a directory nor a symlink counts as missing
    /// ([`Tree::mkdir_p`] replaces it by a directory).
    fn resolve_dir(&self, comps: &[&str]) -> Result<Vec<String>> {
        let mut pending: Vec<String> = comps.iter().rev().map(|s| s.to_string()).collect();
        let mut out: Vec<String> = Vec::new();
        let mut followed = 0;
        // Whether `out` names a node that does not exist (yet).
        let mut missing = false;
        while let Some(c) = pending.pop() {
            if c == "." || c.is_empty() {
                continue;
            }
            if c == ".." {
                out.pop();
                missing = !self.is_dir(&out);
                continue;
            }
            if missing {
                out.push(c);
                continue;
            }
            let node = self.lookup(&out).expect("resolved prefix exists");
            let child = node.children().and_then(|ch| ch.get(&c));
            match child {
                None => {
                    missing = true;
                    out.push(c);
                }
                Some(n) => match &n.kind {
                    NodeKind::Dir(_) => out.push(c),
                    NodeKind::Symlink { target } => {
                        followed += 1;
                        if followed > MAX_SYMLINKS {
                            bail!("too many levels of symbolic links resolving {}", comps.join("/"));
                        }
                        if target.starts_with('/') {
                            out.clear();
                        }
                        for t in target.split('/').rev() {
                            pending.push(t.to_string());
                        }
                    }
                    _ => {
                        missing = true;
                        out.push(c);
                    }
                },
            }
        }
        Ok(out)
    }

    /// The node at the already resolved `comps`, if any.
    fn lookup(&self, comps: &[String]) -> Option<&Node> {
        let mut n = &self.root;
        for c in comps {
            n = n.children()?.get(c)?;
        }
        Some(n)
    }

    /// Whether the resolved `comps` name a directory.
    fn is_dir(&self, comps: &[String]) -> bool {
        matches!(self.lookup(comps), Some(Node { kind: NodeKind::Dir(_), .. }))
    }

    /// The directory at the resolved `comps`, creating missing ones and
    /// replacing what is not a directory (a resolved path holds no symlink).
    fn mkdir_p<S: AsRef<str>>(&mut self, comps: &[S]) -> &mut BTreeMap<String, Node> {
        let mut n = &mut self.root;
        for c in comps {
            let c = c.as_ref();
            let ch = n.children_mut().expect("resolved path is made of directories");
            if !matches!(ch.get(c), Some(Node { kind: NodeKind::Dir(_), .. })) {
                debug_assert!(!matches!(ch.get(c), Some(Node { kind: NodeKind::Symlink { .. }, .. })));
                ch.insert(c.to_string(), Node::dir(implied_dir_meta()));
            }
            n = ch.get_mut(c).expect("just ensured");
        }
        n.children_mut().expect("resolved path is made of directories")
    }

    /// Whether `comps` names existing directories only (no symlink to
    /// resolve): the common case, which needs no resolution.
    fn is_plain_dir(&self, comps: &[&str]) -> bool {
        let mut n = &self.root;
        for c in comps {
            match n.children().and_then(|ch| ch.get(*c)) {
                Some(ch @ Node { kind: NodeKind::Dir(_), .. }) => n = ch,
                _ => return false,
            }
        }
        true
    }

    /// The directory holding `path` (resolved, created if missing) and the final name.
    fn parent_of<'a>(&mut self, path: &'a str) -> Result<(&mut BTreeMap<String, Node>, &'a str)> {
        let comps = components(path)?;
        let (name, parent) = comps.split_last().context("the root cannot be replaced")?;
        if self.is_plain_dir(parent) {
            return Ok((self.mkdir_p(parent), name));
        }
        let resolved = self.resolve_dir(parent)?;
        Ok((self.mkdir_p(&resolved), name))
    }

    fn whiteout(&mut self, path: &str) -> Result<()> {
        let comps = components(path)?;
        let Some((name, parent)) = comps.split_last() else { bail!("a whiteout cannot remove the root") };
        let resolved = self.resolve_dir(parent)?;
        // Only an existing directory can hold what is whited out; nothing is
        // created or replaced for a whiteout.
        if self.is_dir(&resolved) {
            self.mkdir_p(&resolved).remove(*name);
        }
        Ok(())
    }

    fn opaque(&mut self, path: &str) -> Result<()> {
        let comps = components(path)?;
        let resolved = self.resolve_dir(&comps)?;
        if let Some(Node { kind: NodeKind::Dir(_), .. }) = self.lookup(&resolved) {
            self.mkdir_p(&resolved).clear();
        }
        Ok(())
    }

    fn add(&mut self, e: &Entry) -> Result<()> {
        if e.path.is_empty() {
            return match e.kind {
                EntryKind::Dir => {
                    self.root.meta = e.meta.clone();
                    Ok(())
                }
                _ => bail!("the image root must be a directory"),
            };
        }
        let node = match &e.kind {
            EntryKind::Dir => Node::dir(e.meta.clone()),
            EntryKind::File { object, size } => Node {
                kind: NodeKind::File { object: object.clone(), size: *size },
                meta: e.meta.clone(),
                link_group: None,
                via_hardlink: false,
            },
            EntryKind::Symlink { target } => Node {
                kind: NodeKind::Symlink { target: target.clone() },
                meta: e.meta.clone(),
                link_group: None,
                via_hardlink: false,
            },
            EntryKind::CharDevice { major, minor } => Node {
                kind: NodeKind::CharDevice { major: *major, minor: *minor },
                meta: e.meta.clone(),
                link_group: None,
                via_hardlink: false,
            },
            EntryKind::BlockDevice { major, minor } => Node {
                kind: NodeKind::BlockDevice { major: *major, minor: *minor },
                meta: e.meta.clone(),
                link_group: None,
                via_hardlink: false,
            },
            EntryKind::Fifo => {
                Node { kind: NodeKind::Fifo, meta: e.meta.clone(), link_group: None, via_hardlink: false }
            }
            EntryKind::Hardlink { target } => self.link_target(target)?,
            EntryKind::Whiteout | EntryKind::OpaqueWhiteout => unreachable!("whiteouts are applied first"),
        };
        let (dir, name) = self.parent_of(&e.path)?;
        match (dir.get_mut(name), node.kind) {
            // A directory over a directory only updates its metadata.
            (Some(existing @ Node { kind: NodeKind::Dir(_), .. }), NodeKind::Dir(_)) => {
                existing.meta = node.meta;
            }
            (_, kind) => {
                dir.insert(name.to_string(), Node { kind, ..node });
            }
        }
        Ok(())
    }

    /// The node a hard link to `target` (a path of the image) gets: a copy of
    /// the target, in the same link group.
    fn link_target(&mut self, target: &str) -> Result<Node> {
        let comps = components(target)?;
        let (name, parent) = comps.split_last().context("a hard link cannot point to the root")?;
        let resolved = self.resolve_dir(parent)?;
        if !self.is_dir(&resolved) {
            bail!("hard link target {target} does not exist");
        }
        let group = self.next_group;
        let dir = self.mkdir_p(&resolved);
        let Some(t) = dir.get_mut(*name) else { bail!("hard link target {target} does not exist") };
        match t.kind {
            NodeKind::Dir(_) => bail!("hard link target {target} is a directory"),
            NodeKind::File { .. } => {}
            _ => {
                if t.link_group.is_none() {
                    t.link_group = Some(group);
                    self.next_group += 1;
                }
            }
        }
        let dir = self.mkdir_p(&resolved);
        let mut n = dir[*name].clone();
        n.via_hardlink = true;
        Ok(n)
    }

    /// Moves the image's `etc` to `usr/etc` (the pristine defaults).
    pub fn relocate_etc(&mut self) -> Result<()> {
        let root = self.root.children_mut().expect("root is a directory");
        let Some(etc) = root.remove("etc") else { return Ok(()) };
        if !matches!(etc.kind, NodeKind::Dir(_)) {
            bail!("the image's /etc is not a directory");
        }
        let usr = root.entry("usr".to_string()).or_insert_with(|| Node::dir(implied_dir_meta()));
        let Some(usr) = usr.children_mut() else { bail!("the image's /usr is not a directory") };
        if usr.contains_key("etc") {
            bail!("the image has both /etc and /usr/etc; cannot move /etc to /usr/etc");
        }
        usr.insert("etc".to_string(), etc);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    fn meta(mode: u32) -> Meta {
        Meta { mode, ..Meta::default() }
    }
    fn e(path: &str, kind: EntryKind) -> Entry {
        let mode = if matches!(kind, EntryKind::Dir) { 0o755 } else { 0o644 };
        Entry { path: path.into(), kind, meta: meta(mode) }
    }
    fn file(path: &str, obj: &str) -> Entry {
        e(path, EntryKind::File { object: ObjectId(obj.repeat(64 / obj.len())), size: 1 })
    }
    fn dir(path: &str) -> Entry {
        e(path, EntryKind::Dir)
    }
    fn sym(path: &str, t: &str) -> Entry {
        e(path, EntryKind::Symlink { target: t.into() })
    }
    fn link(path: &str, t: &str) -> Entry {
        e(path, EntryKind::Hardlink { target: t.into() })
    }
    fn layer(entries: Vec<Entry>) -> LayerIndex {
        LayerIndex {
            version: 1,
            diff_id: Digest::of(b"x"),
            blob_digest: Digest::of(b"y"),
            media_type: String::new(),
            compressed_size: 0,
            uncompressed_size: 0,
            entries,
            toc_digest: None,
            content_digests: Default::default(),
            chunks: Default::default(),
        }
    }
    /// Flattened listing: "path kind".
    fn list(t: &Tree) -> Vec<String> {
        fn walk(prefix: &str, n: &Node, out: &mut Vec<String>) {
            if let Some(ch) = n.children() {
                for (name, c) in ch {
                    let p = if prefix.is_empty() { name.clone() } else { format!("{prefix}/{name}") };
                    let k = match &c.kind {
                        NodeKind::Dir(_) => "d".to_string(),
                        NodeKind::File { object, .. } => format!("f:{}", &object.0[..1]),
                        NodeKind::Symlink { target } => format!("l:{target}"),
                        _ => "o".to_string(),
                    };
                    out.push(format!("{p} {k}"));
                    walk(&p, c, out);
                }
            }
        }
        let mut out = Vec::new();
        walk("", &t.root, &mut out);
        out
    }

    #[test]
    fn whiteout_removes_path_and_below_from_lower_layers_only() {
        let t = Tree::from_layers(&[
            layer(vec![dir("a"), file("a/x", "1"), dir("a/sub"), file("a/sub/y", "2"), file("b", "3")]),
            layer(vec![e("a/sub", EntryKind::Whiteout), e("b", EntryKind::Whiteout), file("b", "4")]),
        ])
        .unwrap();
        assert_eq!(list(&t), ["a d", "a/x f:1", "b f:4"]);
    }

    #[test]
    fn opaque_whiteout_hides_lower_content_keeps_dir_and_same_layer_entries() {
        let t = Tree::from_layers(&[
            layer(vec![dir("a"), file("a/old", "1"), dir("a/d"), file("a/d/z", "2")]),
            layer(vec![file("a/new", "3"), e("a", EntryKind::OpaqueWhiteout)]),
        ])
        .unwrap();
        assert_eq!(list(&t), ["a d", "a/new f:3"]);
    }

    #[test]
    fn symlinked_parent_resolves_inside_the_image() {
        // a -> /etc; a/passwd lands in etc/passwd of the image, never outside.
        let t = Tree::from_layers(&[
            layer(vec![dir("etc"), sym("a", "/etc"), sym("up", "../../..")]),
            layer(vec![file("a/passwd", "1"), file("up/escape", "2")]),
        ])
        .unwrap();
        assert_eq!(list(&t), ["a l:/etc", "escape f:2", "etc d", "etc/passwd f:1", "up l:../../.."]);
    }

    #[test]
    fn symlink_loops_are_errors() {
        let err = Tree::from_layers(&[layer(vec![sym("a", "b"), sym("b", "a"), file("a/x", "1")])]).unwrap_err();
        assert!(format!("{err:#}").contains("too many levels"), "{err:#}");
    }

    #[test]
    fn file_as_a_parent_is_replaced_by_a_directory_as_umoci_unpacks_it() {
        // umoci TestUnpackEntryNonDirParent (umoci#546): "nondir", then
        // "nondir/foo/bar/baz" in the same layer. Before issue #10 this was
        // the error "nondir is not a directory".
        let t = Tree::from_layers(&[layer(vec![file("nondir", "1"), file("nondir/foo/bar/baz", "2")])]).unwrap();
        assert_eq!(list(&t), ["nondir d", "nondir/foo d", "nondir/foo/bar d", "nondir/foo/bar/baz f:2"]);
        // A later layer over a lower layer's file, and through a symlink to it.
        let t = Tree::from_layers(&[
            layer(vec![file("opt/app", "1"), sym("link", "/opt/app")]),
            layer(vec![file("opt/app/bin/x", "2"), file("link/y", "3")]),
        ])
        .unwrap();
        assert_eq!(
            list(&t),
            ["link l:/opt/app", "opt d", "opt/app d", "opt/app/bin d", "opt/app/bin/x f:2", "opt/app/y f:3"]
        );
        // A whiteout below a file removes nothing and makes no directory.
        let t = Tree::from_layers(&[layer(vec![file("f", "1")]), layer(vec![e("f/x", EntryKind::Whiteout)])]).unwrap();
        assert_eq!(list(&t), ["f f:1"]);
        // A hard link below a file has no target.
        let err = Tree::from_layers(&[layer(vec![file("f", "1"), link("l", "f/x")])]).unwrap_err();
        assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
    }

    #[test]
    fn hardlinks_copy_target_and_survive_target_replacement() {
        let mut t = Tree::from_layers(&[
            layer(vec![file("a", "1"), link("b", "a"), sym("s", "a"), link("s2", "s")]),
            layer(vec![file("a", "2"), link("c", "b")]),
        ])
        .unwrap();
        assert_eq!(list(&t), ["a f:2", "b f:1", "c f:1", "s l:a", "s2 l:a"]);
        let root = t.root.children().unwrap();
        assert_eq!(root["s"].link_group, root["s2"].link_group);
        assert!(root["s"].link_group.is_some());
        assert!(root["c"].via_hardlink && !root["a"].via_hardlink);
        let err = Tree::from_layers(&[layer(vec![dir("d"), link("x", "d")])]).unwrap_err();
        assert!(format!("{err:#}").contains("is a directory"));
        let err = Tree::from_layers(&[layer(vec![link("x", "nope")])]).unwrap_err();
        assert!(format!("{err:#}").contains("does not exist"));
        t.relocate_etc().unwrap();
    }

    #[test]
    fn type_changes_replace_and_dir_over_dir_keeps_children() {
        let mut d = dir("a");
        d.meta.mode = 0o700;
        let t = Tree::from_layers(&[
            layer(vec![dir("a"), file("a/x", "1"), dir("b"), file("b/y", "2"), file("c", "3")]),
            layer(vec![d, file("b", "4"), dir("c"), file("implied/deep/f", "5")]),
        ])
        .unwrap();
        assert_eq!(list(&t), ["a d", "a/x f:1", "b f:4", "c d", "implied d", "implied/deep d", "implied/deep/f f:5"]);
        assert_eq!(t.root.children().unwrap()["a"].meta.mode, 0o700);
    }

    #[test]
    fn relocate_etc_moves_and_refuses_both() {
        let mut t = Tree::from_layers(&[layer(vec![dir("etc"), file("etc/os-release", "1")])]).unwrap();
        t.relocate_etc().unwrap();
        assert_eq!(list(&t), ["usr d", "usr/etc d", "usr/etc/os-release f:1"]);
        let mut t = Tree::from_layers(&[layer(vec![dir("etc"), dir("usr"), dir("usr/etc")])]).unwrap();
        let err = t.relocate_etc().unwrap_err();
        assert!(err.to_string().contains("both /etc and /usr/etc"));
    }

    #[test]
    fn bad_paths_are_refused() {
        for p in ["../x", "a//b", "a/./b", "/abs"] {
            assert!(Tree::from_layers(&[layer(vec![file(p, "1")])]).is_err(), "{p}");
        }
    }
}
