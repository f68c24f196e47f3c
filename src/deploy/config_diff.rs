//! `config-diff`: what a deployment's live `/etc` changed against its
//! image's defaults (`usr/etc`), as the three-way merge sees it: the plan
//! [`etc_merge::plan_snapshots`] makes when the new image's defaults are the
//! old ones, i.e. exactly the local changes the next upgrade carries over.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use serde::Serialize;

use crate::deploy::etc_merge::{self, Item, Kind, Snapshot};

/// One path the admin changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Modified {
    /// Relative to /etc (empty: /etc itself).
    pub path: PathBuf,
    /// What differs: `type`, `content`, `target`, `device`, `mode`, `owner`, `xattrs`.
    pub changes: Vec<&'static str>,
}

/// Local changes of `/etc` against the image's defaults.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EtcDiff {
    /// Paths the admin added (an added directory and everything in it).
    pub added: Vec<PathBuf>,
    /// Paths present in both whose type, content or metadata differ.
    pub modified: Vec<Modified>,
    /// Paths of the defaults the admin deleted (a deleted directory once, not its entries).
    pub removed: Vec<PathBuf>,
}

impl EtcDiff {
    /// Whether `/etc` is as the image shipped it.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }
}

/// The diff of the deployment tree at `tree`: its `etc` against its `usr/etc`.
pub fn deployment(tree: &Path) -> Result<EtcDiff> {
    let current = tree.join("etc");
    if !current.is_dir() {
        bail!("{} is not a directory", current.display());
    }
    Ok(diff(&etc_merge::scan(&tree.join("usr/etc"))?, &etc_merge::scan(&current)?))
}

/// The diff of two snapshots (pure): the merge's plan with the defaults as
/// both the old and the new image.
pub fn diff(defaults: &Snapshot, current: &Snapshot) -> EtcDiff {
    let plan = etc_merge::plan_snapshots(defaults, current, defaults);
    let mut d = EtcDiff { removed: plan.keep_deleted, ..EtcDiff::default() };
    for p in plan.keep_local {
        match (defaults.get(&p), current.get(&p)) {
            (Some(o), Some(c)) => d.modified.push(Modified { changes: changes(o, c), path: p }),
            _ => d.added.push(p),
        }
    }
    d
}

fn changes(o: &Item, c: &Item) -> Vec<&'static str> {
    let mut out = Vec::new();
    match (&o.kind, &c.kind) {
        (Kind::File(a), Kind::File(b)) if a != b => out.push("content"),
        (Kind::Symlink(a), Kind::Symlink(b)) if a != b => out.push("target"),
        (Kind::CharDevice(a), Kind::CharDevice(b)) | (Kind::BlockDevice(a), Kind::BlockDevice(b)) if a != b => {
            out.push("device")
        }
        (a, b) if std::mem::discriminant(a) != std::mem::discriminant(b) => out.push("type"),
        _ => {}
    }
    if o.mode != c.mode {
        out.push("mode");
    }
    if (o.uid, o.gid) != (c.uid, c.gid) {
        out.push("owner");
    }
    if o.xattrs != c.xattrs {
        out.push("xattrs");
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn write(root: &Path, rel: &str, content: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    #[test]
    fn added_modified_and_removed_on_disk() {
        let t = tempfile::tempdir().unwrap();
        let tree = t.path();
        for rel in ["usr/etc", "etc"] {
            write(tree, &format!("{rel}/passwd"), "root:x:0:0\n");
            write(tree, &format!("{rel}/motd"), "hello\n");
            write(tree, &format!("{rel}/ssh/sshd_config"), "Port 22\n");
            write(tree, &format!("{rel}/ssh/moduli"), "m\n");
            write(tree, &format!("{rel}/issue"), "Debian\n");
            std::os::unix::fs::symlink("/run/os-release", tree.join(rel).join("os-release")).unwrap();
        }
        assert!(deployment(tree).unwrap().is_empty());
        write(tree, "etc/passwd", "root:x:0:0\nalice:x:1000:1000\n");
        std::fs::set_permissions(tree.join("etc/issue"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::remove_file(tree.join("etc/os-release")).unwrap();
        std::os::unix::fs::symlink("/usr/lib/os-release", tree.join("etc/os-release")).unwrap();
        std::fs::remove_file(tree.join("etc/motd")).unwrap();
        std::fs::remove_dir_all(tree.join("etc/ssh")).unwrap();
        write(tree, "etc/sudoers.d/alice", "alice ALL=(ALL) ALL\n");
        let d = deployment(tree).unwrap();
        assert_eq!(d.added, [PathBuf::from("sudoers.d"), "sudoers.d/alice".into()]);
        assert_eq!(d.removed, [PathBuf::from("motd"), "ssh".into()], "a deleted directory once");
        let m: Vec<(String, Vec<&str>)> =
            d.modified.iter().map(|m| (m.path.display().to_string(), m.changes.clone())).collect();
        assert_eq!(
            m,
            [
                ("issue".to_string(), vec!["mode"]),
                ("os-release".to_string(), vec!["target"]),
                ("passwd".to_string(), vec!["content"])
            ]
        );
        // A file turned into a directory is a type change.
        std::fs::remove_file(tree.join("etc/issue")).unwrap();
        write(tree, "etc/issue/x", "");
        let d = deployment(tree).unwrap();
        assert!(d.modified.iter().any(|m| m.path == Path::new("issue") && m.changes.contains(&"type")), "{d:?}");
        assert!(d.added.contains(&PathBuf::from("issue/x")));
    }

    #[test]
    fn a_tree_without_etc_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        assert!(deployment(t.path()).unwrap_err().to_string().contains("not a directory"));
    }
}
