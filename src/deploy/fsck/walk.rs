//! One deployment's tree compared with the tree its image records: each
//! recorded path's type, mode, owner, link target, device number and (for
//! directories, symlinks and special files) extended attributes; regular
//! files must still be their store object (the same inode), whose own
//! content, mode, owner and xattrs the store check verifies. Below `usr`
//! (read-only on a running host), entries the image does not have are
//! reported too, `usr/etc` excepted: staging adds to it (the bound images'
//! pins, docs/apps.md). Elsewhere only the `.tmp-fsck-*` directories that a
//! killed `fsck --repair` of an earlier hostctl left beside the path it was
//! rewriting are (today's write theirs in the stateroot's directory).

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{Damage, DeployedDamage, Fix};
use crate::deploy::tree::{Node, NodeKind};
use crate::store::fsck::StoreCheck;

/// Where entries the image does not have are reported (and its exception).
const EXTRAS_BELOW: &str = "usr";
const EXTRAS_EXCEPT: &str = "usr/etc";

/// The name a killed `fsck --repair` of an earlier hostctl left inside a tree.
const OLD_SCRATCH: &str = ".tmp-fsck-";

/// xattrs a labelling system adds by itself; compared only when recorded.
const SYSTEM_XATTRS: &[&str] = &["security.selinux"];

pub(super) struct Walker<'a> {
    pub store: &'a StoreCheck,
    pub id: &'a str,
    pub tree: &'a Path,
    pub found: &'a mut Vec<DeployedDamage>,
    pub paths: usize,
}

impl Walker<'_> {
    pub fn dir(&mut self, node: &Node, rel: &mut PathBuf) {
        let children = node.children();
        for (name, child) in children.into_iter().flatten() {
            rel.push(name);
            self.paths += 1;
            let ok = match self.compare(child, rel) {
                Some(problem) => {
                    self.report(rel, problem, Fix::Node(child.clone()));
                    false
                }
                None => true,
            };
            // A directory that is missing or no directory is recreated whole: its children need no report.
            let is_dir = std::fs::symlink_metadata(self.tree.join(&*rel)).map(|m| m.is_dir()).unwrap_or(false);
            if matches!(child.kind, NodeKind::Dir(_)) && (ok || is_dir) {
                self.dir(child, rel);
            }
            rel.pop();
        }
        let all = rel.starts_with(EXTRAS_BELOW) && !rel.starts_with(EXTRAS_EXCEPT);
        self.extras(node, rel, all);
    }

    fn report(&mut self, rel: &Path, problem: String, fix: Fix) {
        self.found.push(DeployedDamage {
            damage: Damage {
                path: self.tree.join(rel),
                kind: "deployed",
                deployment: Some(self.id.to_string()),
                problem,
            },
            tree: self.tree.to_path_buf(),
            rel: rel.to_path_buf(),
            fix,
        });
    }

    /// Entries of the directory `rel` that the recorded `node` does not have:
    /// all of them (`all`), or only the scratch directories a killed `fsck
    /// --repair` of an earlier hostctl left beside the path it rewrote.
    fn extras(&mut self, node: &Node, rel: &mut PathBuf, all: bool) {
        let Ok(rd) = std::fs::read_dir(self.tree.join(&*rel)) else { return };
        let mut names: Vec<_> = rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect();
        names.sort();
        let recorded = node.children();
        for name in names {
            let known = name.to_str().is_some_and(|n| recorded.is_some_and(|c| c.contains_key(n)));
            let old_scratch = name.to_string_lossy().starts_with(OLD_SCRATCH);
            if known || !(all || old_scratch) {
                continue;
            }
            rel.push(&name);
            let problem = if old_scratch {
                "not in the image: left by a killed `fsck --repair`".to_string()
            } else {
                "not in the image (an extra entry)".to_string()
            };
            self.paths += 1;
            self.report(rel, problem, Fix::Remove);
            rel.pop();
        }
    }

    /// What is wrong with the path `rel`, if anything.
    fn compare(&self, node: &Node, rel: &Path) -> Option<String> {
        let path = self.tree.join(rel);
        let m = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some("missing".into()),
            Err(e) => return Some(format!("cannot be read: {e}")),
        };
        let ft = m.file_type();
        let want = &node.meta;
        let (mode, owner) = (m.mode() & 0o7777, (m.uid(), m.gid()));
        let mode_problem = || {
            (mode != want.mode & 0o7777).then(|| format!("mode {mode:o} where {:o} was recorded", want.mode & 0o7777))
        };
        // Owner, then xattrs: what every kind but a regular file shares.
        let meta_problem = || {
            if owner != (want.uid, want.gid) {
                Some(format!("owner {}:{} where {}:{} was recorded", owner.0, owner.1, want.uid, want.gid))
            } else {
                xattr_problem(&path, &want.xattrs)
            }
        };
        match &node.kind {
            NodeKind::Dir(_) if !ft.is_dir() => Some("not a directory".into()),
            NodeKind::Dir(_) => mode_problem().or_else(meta_problem),
            NodeKind::File { object, size } => {
                if !ft.is_file() {
                    return Some("not a regular file".into());
                }
                if self.store.missing_objects.contains(object) {
                    return Some(format!("its object {object} is missing from the store"));
                }
                if self.store.bad_objects.contains(object) {
                    return Some(format!("its object {object} is damaged (see the object's own report)"));
                }
                match self.store.inodes.get(object) {
                    None => Some(format!("its object {object} is missing from the store")),
                    Some(ino) if *ino == (m.dev(), m.ino()) => None,
                    Some(_) if m.len() != *size => {
                        format!("size {} where {size} was recorded (not the store's object any more)", m.len()).into()
                    }
                    Some(_) if mode != want.mode & 0o7777 => Some(format!(
                        "mode {mode:o} where {:o} was recorded (not the store's object any more)",
                        want.mode & 0o7777
                    )),
                    Some(_) => Some(format!("not a hard link of its object {object} any more (replaced)")),
                }
            }
            NodeKind::Symlink { target } => {
                if !ft.is_symlink() {
                    return Some("not a symbolic link".into());
                }
                match std::fs::read_link(&path) {
                    Ok(t) if t.as_os_str() == target.as_str() => meta_problem(),
                    Ok(t) => Some(format!("points to {} where {target} was recorded", t.display())),
                    Err(e) => Some(format!("cannot be read: {e}")),
                }
            }
            NodeKind::CharDevice { major, minor } | NodeKind::BlockDevice { major, minor } => {
                let char_dev = matches!(node.kind, NodeKind::CharDevice { .. });
                if (char_dev && !ft.is_char_device()) || (!char_dev && !ft.is_block_device()) {
                    return Some("not the recorded kind of device".into());
                }
                if m.rdev() != rustix::fs::makedev(*major, *minor) {
                    return Some(format!("device number differs from the recorded {major}:{minor}"));
                }
                mode_problem().or_else(meta_problem)
            }
            NodeKind::Fifo if !ft.is_fifo() => Some("not a fifo".into()),
            NodeKind::Fifo => mode_problem().or_else(meta_problem),
        }
    }
}

/// The extended attributes of `path` itself (a symlink is not followed).
pub(super) fn read_xattrs(path: &Path) -> std::io::Result<BTreeMap<String, Vec<u8>>> {
    let mut names = vec![0u8; 64 * 1024];
    let n = rustix::fs::llistxattr(path, &mut names[..])?;
    let mut out = BTreeMap::new();
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        let mut value = vec![0u8; 64 * 1024];
        let len = rustix::fs::lgetxattr(path, name.as_str(), &mut value[..])?;
        value.truncate(len);
        out.insert(name, value);
    }
    Ok(out)
}

/// How `path`'s xattrs differ from the recorded ones (name → hex value).
fn xattr_problem(path: &Path, recorded: &BTreeMap<String, String>) -> Option<String> {
    let mut have = match read_xattrs(path) {
        Ok(x) => x,
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) && recorded.is_empty() => return None,
        Err(e) => return Some(format!("its xattrs cannot be read: {e}")),
    };
    have.retain(|k, _| !SYSTEM_XATTRS.contains(&k.as_str()) || recorded.contains_key(k));
    for (k, v) in recorded {
        match have.remove(k) {
            None => return Some(format!("xattr {k} is missing")),
            Some(got) if hex::encode(&got) != *v => return Some(format!("xattr {k} differs from the recorded value")),
            Some(_) => {}
        }
    }
    have.keys().next().map(|k| format!("has xattr {k}, which was not recorded"))
}

/// Gives `path` (a directory) the recorded xattrs and removes the others.
pub(super) fn restore_xattrs(path: &Path, recorded: &BTreeMap<String, String>) -> anyhow::Result<()> {
    use anyhow::Context;
    let have = read_xattrs(path).with_context(|| format!("reading the xattrs of {}", path.display()))?;
    for k in have.keys() {
        if !recorded.contains_key(k) && !SYSTEM_XATTRS.contains(&k.as_str()) {
            rustix::fs::lremovexattr(path, k.as_str()).with_context(|| format!("removing xattr {k}"))?;
        }
    }
    for (k, v) in recorded {
        let value = hex::decode(v).with_context(|| format!("xattr {k} is not hex in the layer index"))?;
        rustix::fs::lsetxattr(path, k.as_str(), &value, rustix::fs::XattrFlags::empty())
            .with_context(|| format!("setting xattr {k}"))?;
    }
    Ok(())
}
