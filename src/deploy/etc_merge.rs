//! The three-way /etc merge: the new image's defaults plus the admin's local
//! changes relative to the previous deployment's defaults.
//!
//! Three steps, so that conflicts are known before anything is written:
//! [`scan`] reads a tree's metadata (type, content digest, mode, ownership,
//! symlink target, device number, xattrs; never mtimes) without following
//! symlinks; [`plan_snapshots`] is a pure function over three such
//! snapshots; [`apply`] writes the result as real copies. The rules are in
//! docs/etc-merge.md.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rustix::fs::{FileType, Mode, OFlags};
use serde::Serialize;

use crate::deploy::fsat;
use crate::digest::{Digest, Hasher};

/// A path where the admin's change and the new image's change collide.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Conflict {
    /// Relative to /etc.
    pub path: PathBuf,
    /// Human explanation and which side wins (documented in docs/etc-merge.md).
    pub resolution: String,
}

/// What the merge will do; computed before anything is written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EtcMergePlan {
    /// Paths (relative to /etc) whose local version is carried over. For a
    /// directory, its ownership, mode and xattrs (its entries are listed on
    /// their own). The empty path is /etc itself. Sorted, parents first.
    pub keep_local: Vec<PathBuf>,
    /// Paths the admin deleted, which stay deleted (with everything below).
    pub keep_deleted: Vec<PathBuf>,
    /// Paths changed both locally and in the new image; the local version wins.
    pub conflicts: Vec<Conflict>,
}

/// What a node is, for comparison.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// The digest of the content.
    File(Digest),
    /// A symbolic link to the target.
    Symlink(OsString),
    /// A character device with this device number.
    CharDevice(u64),
    /// A block device with this device number.
    BlockDevice(u64),
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
}

impl Kind {
    fn name(&self) -> &'static str {
        match self {
            Kind::Dir => "directory",
            Kind::File(_) => "file",
            Kind::Symlink(_) => "symlink",
            Kind::CharDevice(_) | Kind::BlockDevice(_) => "device",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
        }
    }
}

/// Everything the merge compares about one node (mtimes and inode numbers are not).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    /// What the item is.
    pub kind: Kind,
    /// Permission bits (`mode & 0o7777`); 0 for symlinks.
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Extended attributes, as (name, value).
    pub xattrs: Vec<(OsString, Vec<u8>)>,
}

/// A tree's items by path relative to its top (the empty path is the top).
pub type Snapshot = BTreeMap<PathBuf, Item>;

/// Reads the metadata of the tree at `dir` (which itself may be reached
/// through symlinks; nothing inside is followed). A missing `dir` is an
/// empty tree.
pub fn scan(dir: &Path) -> Result<Snapshot> {
    let mut snap = Snapshot::new();
    let top = match rustix::fs::open(dir, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT) => return Ok(snap),
        Err(e) => return Err(e).with_context(|| format!("opening {}", dir.display())),
    };
    // The top's own metadata, through its fd.
    let dot = Path::new(".");
    snap.insert(PathBuf::new(), item_at(top.as_fd(), dot)?);
    scan_dir(top.as_fd(), &PathBuf::new(), &mut snap).with_context(|| format!("scanning {}", dir.display()))?;
    Ok(snap)
}

fn scan_dir(dir: BorrowedFd<'_>, rel: &Path, snap: &mut Snapshot) -> Result<()> {
    for name in fsat::list_dir(dir)? {
        let name = Path::new(&name);
        let path = rel.join(name);
        let item = item_at(dir, name).with_context(|| format!("reading {}", path.display()))?;
        let is_dir = item.kind == Kind::Dir;
        snap.insert(path.clone(), item);
        if is_dir {
            let sub = fsat::open_dir_at(dir, name).with_context(|| format!("opening {}", path.display()))?;
            scan_dir(sub.as_fd(), &path, snap)?;
        }
    }
    Ok(())
}

fn item_at(dir: BorrowedFd<'_>, name: &Path) -> Result<Item> {
    let st = fsat::lstat_at(dir, name)?;
    let ft = FileType::from_raw_mode(st.st_mode);
    let kind = match ft {
        FileType::Directory => Kind::Dir,
        FileType::RegularFile => {
            let fd = rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
            let mut h = Hasher::new();
            std::io::copy(&mut File::from(fd), &mut h)?;
            Kind::File(h.finish().0)
        }
        FileType::Symlink => {
            Kind::Symlink(OsString::from_vec(rustix::fs::readlinkat(dir, name, Vec::new())?.into_bytes()))
        }
        FileType::CharacterDevice => Kind::CharDevice(st.st_rdev),
        FileType::BlockDevice => Kind::BlockDevice(st.st_rdev),
        FileType::Fifo => Kind::Fifo,
        FileType::Socket => Kind::Socket,
        FileType::Unknown => bail!("unknown file type"),
    };
    let mode = if ft == FileType::Symlink { 0 } else { st.st_mode & 0o7777 };
    Ok(Item { kind, mode, uid: st.st_uid, gid: st.st_gid, xattrs: fsat::xattrs_at(dir, name)? })
}

/// Plans the merge from the previous deployment's defaults (`old_defaults`,
/// its `usr/etc`), its live `/etc` (`current`) and the new defaults (`new_defaults`).
/// A missing `old_defaults` or `new_defaults` is an empty tree; a missing
/// `current` is an error (it would read as "the admin deleted everything").
pub fn plan(old_defaults: &Path, current: &Path, new_defaults: &Path) -> Result<EtcMergePlan> {
    if !current.is_dir() {
        bail!("the current /etc {} is not a directory", current.display());
    }
    Ok(plan_snapshots(&scan(old_defaults)?, &scan(current)?, &scan(new_defaults)?))
}

fn describe(i: Option<&Item>) -> String {
    match i {
        None => "absent".to_string(),
        Some(i) => i.kind.name().to_string(),
    }
}

/// The merge decision over three snapshots (pure; see docs/etc-merge.md).
///
/// A path the admin did not change (same in `old` and `cur`) follows the new
/// image. A path the admin changed keeps the local version (or stays deleted);
/// if the image changed it too, differently, that is a conflict, and the
/// local version still wins. Entries of the new image below a path the admin
/// deleted or turned into a non-directory are not installed (a conflict when
/// the image changed them). A directory the new image removes or replaces but
/// that holds local changes stays a directory (a conflict).
pub fn plan_snapshots(old: &Snapshot, cur: &Snapshot, new: &Snapshot) -> EtcMergePlan {
    let paths: BTreeSet<&PathBuf> = old.keys().chain(cur.keys()).chain(new.keys()).collect();
    let mut keep_local: BTreeSet<PathBuf> = BTreeSet::new();
    let mut keep_deleted = Vec::new();
    let mut conflicts = Vec::new();
    // Paths whose subtree in the result is the admin's non-directory or absence.
    let mut shadows: Vec<(&PathBuf, &'static str)> = Vec::new();
    for p in paths {
        while shadows.last().is_some_and(|(s, _)| !p.starts_with(s)) {
            shadows.pop();
        }
        let (o, c, n) = (old.get(p), cur.get(p), new.get(p));
        if let Some((s, why)) = shadows.last() {
            if n.is_some() && n != o {
                conflicts.push(Conflict {
                    path: p.clone(),
                    resolution: format!(
                        "the new image changes it, but /etc/{} was {why} locally: the local change wins, it is not installed",
                        s.display()
                    ),
                });
            }
            continue;
        }
        if o == c {
            continue; // not changed by the admin: follows the image
        }
        let image_changed = o != n;
        match c {
            None => {
                if p.as_os_str().is_empty() {
                    continue; // cannot happen: scan always has the top
                }
                if n.is_some() {
                    keep_deleted.push(p.clone());
                    if image_changed {
                        conflicts.push(Conflict {
                            path: p.clone(),
                            resolution: format!(
                                "deleted locally, changed by the new image (now a {}): the local change wins, it stays deleted",
                                describe(n)
                            ),
                        });
                    }
                }
                shadows.push((p, "deleted"));
            }
            Some(ci) => {
                if n != c {
                    keep_local.insert(p.clone());
                    if image_changed {
                        let what = match (o, n) {
                            (_, None) => "deleted by the new image".to_string(),
                            (None, Some(_)) => "also added by the new image".to_string(),
                            (Some(oi), Some(ni)) if oi.kind.name() != ni.kind.name() => {
                                format!("turned from a {} into a {} by the new image", oi.kind.name(), ni.kind.name())
                            }
                            _ => "also changed by the new image".to_string(),
                        };
                        let local = match o {
                            Some(oi) if oi.kind.name() != ci.kind.name() => {
                                format!("turned into a {} locally", ci.kind.name())
                            }
                            None => "added locally".to_string(),
                            _ => "changed locally".to_string(),
                        };
                        conflicts.push(Conflict {
                            path: p.clone(),
                            resolution: format!("{local}, {what}: the local version wins"),
                        });
                    }
                }
                if ci.kind != Kind::Dir {
                    shadows.push((p, "replaced by a non-directory"));
                }
            }
        }
    }
    // Local changes need their parents to be directories in the result.
    let mut extra = Vec::new();
    for p in &keep_local {
        for a in p.ancestors().skip(1) {
            if a.as_os_str().is_empty() {
                break;
            }
            if keep_local.contains(a) || extra.iter().any(|(e, _): &(PathBuf, _)| e == a) {
                continue;
            }
            let n = new.get(a);
            if n.is_some_and(|i| i.kind == Kind::Dir) {
                continue;
            }
            extra.push((
                a.to_path_buf(),
                format!(
                    "the new image {} this directory, but local changes below it are kept: it stays a directory",
                    if n.is_none() { "removes" } else { "replaces" }
                ),
            ));
        }
    }
    for (a, resolution) in extra {
        keep_local.insert(a.clone());
        conflicts.push(Conflict { path: a, resolution });
    }
    conflicts.sort_by(|a, b| a.path.cmp(&b.path));
    EtcMergePlan { keep_local: keep_local.into_iter().collect(), keep_deleted, conflicts }
}

/// Writes the new `/etc` (`new_etc`, must not exist): a real copy of
/// `new_defaults` (never hardlinks into the store) with the plan applied from
/// `current`. Nothing inside the three trees is followed if it is a symlink.
/// The result is synced to disk (`syncfs`) before this returns. If writing
/// fails, the partial `new_etc` is removed.
pub fn apply(plan: &EtcMergePlan, current: &Path, new_defaults: &Path, new_etc: &Path) -> Result<()> {
    match std::fs::symlink_metadata(new_etc) {
        Ok(_) => bail!("{} already exists", new_etc.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("checking {}", new_etc.display())),
    }
    std::fs::create_dir(new_etc).with_context(|| format!("creating {}", new_etc.display()))?;
    let r = apply_into(plan, current, new_defaults, new_etc).and_then(|()| {
        // The copies' data must be on disk before the caller renames the
        // result into place: one syncfs instead of an fsync per file.
        let fd = fsat::open_dir(new_etc)?;
        rustix::fs::syncfs(&fd).context("syncing the filesystem")
    });
    if r.is_err() {
        let _ = std::fs::remove_dir_all(new_etc); // only ever the directory created above
    }
    r.with_context(|| format!("writing the merged /etc {}", new_etc.display()))
}

/// The first `/etc` of a stateroot (no previous deployment to merge from): a
/// real copy of `new_defaults` with its metadata and xattrs, synced.
pub fn copy_defaults(new_defaults: &Path, new_etc: &Path) -> Result<()> {
    apply(&EtcMergePlan::default(), new_defaults, new_defaults, new_etc)
}

fn apply_into(plan: &EtcMergePlan, current: &Path, new_defaults: &Path, new_etc: &Path) -> Result<()> {
    let dst = fsat::open_dir(new_etc)?;
    let cur = fsat::open_dir(current)?;
    let dot = Path::new(".");
    match rustix::fs::open(new_defaults, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) {
        Ok(src) => {
            fsat::copy_tree_contents(src.as_fd(), dst.as_fd())
                .with_context(|| format!("copying {}", new_defaults.display()))?;
            fsat::copy_dir_meta(src.as_fd(), dst.as_fd(), dot)?;
        }
        Err(rustix::io::Errno::NOENT) => {
            rustix::fs::fchmod(&dst, Mode::from_raw_mode(0o755))?;
        }
        Err(e) => return Err(e).with_context(|| format!("opening {}", new_defaults.display())),
    }
    for p in &plan.keep_deleted {
        let (dir, name) = fsat::open_parent(dst.as_fd(), p)?;
        fsat::remove_at(dir.as_fd(), Path::new(&name)).with_context(|| format!("removing {}", p.display()))?;
    }
    // Directories get their metadata after their content, deepest first.
    let mut dirs: Vec<&PathBuf> = Vec::new();
    for p in &plan.keep_local {
        if p.as_os_str().is_empty() {
            dirs.push(p);
            continue;
        }
        let r = (|| -> Result<bool> {
            let (sdir, name) = fsat::open_parent(cur.as_fd(), p)?;
            let name = Path::new(&name);
            let (ddir, _) = fsat::open_parent(dst.as_fd(), p)?;
            let st = fsat::lstat_at(sdir.as_fd(), name).context("the local version vanished since planning")?;
            let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
            if is_dir {
                match fsat::lstat_at(ddir.as_fd(), name) {
                    Ok(d) if FileType::from_raw_mode(d.st_mode) == FileType::Directory => {}
                    _ => {
                        fsat::remove_at(ddir.as_fd(), name)?;
                        fsat::mkdir_at(ddir.as_fd(), name)?;
                    }
                }
            } else {
                fsat::remove_at(ddir.as_fd(), name)?;
                fsat::copy_node_at(sdir.as_fd(), ddir.as_fd(), name)?;
            }
            Ok(is_dir)
        })()
        .with_context(|| format!("keeping the local /etc/{}", p.display()))?;
        if r {
            dirs.push(p);
        }
    }
    for p in dirs.into_iter().rev() {
        let r = if p.as_os_str().is_empty() {
            fsat::copy_dir_meta(cur.as_fd(), dst.as_fd(), dot)
        } else {
            let (sdir, name) = fsat::open_parent(cur.as_fd(), p)?;
            let (ddir, _) = fsat::open_parent(dst.as_fd(), p)?;
            fsat::copy_dir_meta(sdir.as_fd(), ddir.as_fd(), Path::new(&name))
        };
        r.with_context(|| format!("keeping the metadata of /etc/{}", p.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    fn f(content: &str) -> Item {
        Item { kind: Kind::File(Digest::of(content.as_bytes())), mode: 0o644, uid: 0, gid: 0, xattrs: Vec::new() }
    }
    fn d() -> Item {
        Item { kind: Kind::Dir, mode: 0o755, uid: 0, gid: 0, xattrs: Vec::new() }
    }
    fn l(t: &str) -> Item {
        Item { kind: Kind::Symlink(t.into()), mode: 0, uid: 0, gid: 0, xattrs: Vec::new() }
    }
    fn mode(mut i: Item, m: u32) -> Item {
        i.mode = m;
        i
    }
    fn snap(items: &[(&str, Item)]) -> Snapshot {
        let mut s: Snapshot = items.iter().map(|(p, i)| (PathBuf::from(p), i.clone())).collect();
        s.insert(PathBuf::new(), d());
        s
    }
    fn paths(v: &[PathBuf]) -> Vec<String> {
        v.iter().map(|p| p.display().to_string()).collect()
    }
    fn conflicts(p: &EtcMergePlan) -> Vec<String> {
        p.conflicts.iter().map(|c| c.path.display().to_string()).collect()
    }

    /// (name, old, current, new, keep_local, keep_deleted, conflicts)
    type Case<'a> = (
        &'a str,
        Vec<(&'a str, Item)>,
        Vec<(&'a str, Item)>,
        Vec<(&'a str, Item)>,
        Vec<&'a str>,
        Vec<&'a str>,
        Vec<&'a str>,
    );

    #[test]
    fn plan_table() {
        let cases: Vec<Case> = vec![
            (
                "untouched follows the image",
                vec![("a", f("1"))],
                vec![("a", f("1"))],
                vec![("a", f("2"))],
                vec![],
                vec![],
                vec![],
            ),
            ("image deletion of untouched", vec![("a", f("1"))], vec![("a", f("1"))], vec![], vec![], vec![], vec![]),
            (
                "local edit kept",
                vec![("a", f("1"))],
                vec![("a", f("L"))],
                vec![("a", f("1"))],
                vec!["a"],
                vec![],
                vec![],
            ),
            (
                "local edit vs image edit",
                vec![("a", f("1"))],
                vec![("a", f("L"))],
                vec![("a", f("2"))],
                vec!["a"],
                vec![],
                vec!["a"],
            ),
            (
                "same change on both sides",
                vec![("a", f("1"))],
                vec![("a", f("2"))],
                vec![("a", f("2"))],
                vec![],
                vec![],
                vec![],
            ),
            (
                "local chmod",
                vec![("a", f("1"))],
                vec![("a", mode(f("1"), 0o600))],
                vec![("a", f("1"))],
                vec!["a"],
                vec![],
                vec![],
            ),
            ("local add", vec![], vec![("new", f("L"))], vec![], vec!["new"], vec![], vec![]),
            ("both add differently", vec![], vec![("x", f("L"))], vec![("x", f("I"))], vec!["x"], vec![], vec!["x"]),
            ("local delete", vec![("a", f("1"))], vec![], vec![("a", f("1"))], vec![], vec!["a"], vec![]),
            (
                "local delete vs image edit",
                vec![("a", f("1"))],
                vec![],
                vec![("a", f("2"))],
                vec![],
                vec!["a"],
                vec!["a"],
            ),
            ("both delete", vec![("a", f("1"))], vec![], vec![], vec![], vec![], vec![]),
            (
                "local edit vs image delete",
                vec![("a", f("1"))],
                vec![("a", f("L"))],
                vec![],
                vec!["a"],
                vec![],
                vec!["a"],
            ),
            (
                "symlink retarget",
                vec![("s", l("x"))],
                vec![("s", l("y"))],
                vec![("s", l("x"))],
                vec!["s"],
                vec![],
                vec![],
            ),
            (
                "type change by image",
                vec![("s", l("x"))],
                vec![("s", l("y"))],
                vec![("s", f("1"))],
                vec!["s"],
                vec![],
                vec!["s"],
            ),
            (
                "dir chmod kept, children follow image",
                vec![("d", d()), ("d/a", f("1"))],
                vec![("d", mode(d(), 0o700)), ("d/a", f("1"))],
                vec![("d", d()), ("d/a", f("2")), ("d/b", f("3"))],
                vec!["d"],
                vec![],
                vec![],
            ),
            (
                "local dir delete hides image additions below",
                vec![("d", d()), ("d/a", f("1"))],
                vec![],
                vec![("d", d()), ("d/a", f("1")), ("d/new", f("3"))],
                vec![],
                vec!["d"],
                vec!["d/new"],
            ),
            (
                "local dir replaced by symlink",
                vec![("d", d()), ("d/a", f("1"))],
                vec![("d", l("/elsewhere"))],
                vec![("d", d()), ("d/a", f("2"))],
                vec!["d"],
                vec![],
                vec!["d/a"],
            ),
            (
                "local addition in a dir the image removes",
                vec![("d", d()), ("d/a", f("1"))],
                vec![("d", d()), ("d/a", f("1")), ("d/mine", f("L"))],
                vec![],
                vec!["d", "d/mine"],
                vec![],
                vec!["d"],
            ),
            (
                "admin-added directory tree",
                vec![],
                vec![("x", d()), ("x/y", d()), ("x/y/z", f("L"))],
                vec![("other", f("1"))],
                vec!["x", "x/y", "x/y/z"],
                vec![],
                vec![],
            ),
        ];
        for (name, o, c, n, kl, kd, cf) in cases {
            let p = plan_snapshots(&snap(&o), &snap(&c), &snap(&n));
            assert_eq!(paths(&p.keep_local), kl, "{name}: keep_local");
            assert_eq!(paths(&p.keep_deleted), kd, "{name}: keep_deleted");
            assert_eq!(conflicts(&p), cf, "{name}: conflicts {:?}", p.conflicts);
        }
    }

    #[test]
    fn xattr_and_owner_changes_are_local_changes() {
        let mut x = f("1");
        x.xattrs.push(("user.a".into(), b"v".to_vec()));
        let mut o = f("1");
        o.uid = 1000;
        let p = plan_snapshots(
            &snap(&[("a", f("1")), ("b", f("1"))]),
            &snap(&[("a", x), ("b", o)]),
            &snap(&[("a", f("1")), ("b", f("1"))]),
        );
        assert_eq!(paths(&p.keep_local), ["a", "b"]);
    }

    fn write(root: &Path, rel: &str, content: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    #[test]
    fn merge_on_disk() {
        let t = tempfile::tempdir().unwrap();
        let (old, cur, new, out) =
            (t.path().join("old"), t.path().join("cur"), t.path().join("new"), t.path().join("out"));
        for root in [&old, &new] {
            write(root, "hostname", "image\n");
            write(root, "passwd", "root:x:0:0\n");
            write(root, "motd", "v1\n");
            write(root, "ssh/sshd_config", "Port 22\n");
            write(root, "issue", "v1\n");
            std::os::unix::fs::symlink("../usr/lib/os-release", root.join("os-release")).unwrap();
            std::fs::create_dir(root.join("sudoers.d")).unwrap();
        }
        // The new image changes motd and issue, adds a file, drops hostname.
        write(&new, "motd", "v2\n");
        write(&new, "issue", "v2\n");
        write(&new, "added-by-image", "x\n");
        std::fs::remove_file(new.join("hostname")).unwrap();
        std::fs::set_permissions(new.join("ssh/sshd_config"), std::fs::Permissions::from_mode(0o600)).unwrap();
        // The admin's /etc: starts as a copy of the old defaults.
        std::fs::create_dir(&cur).unwrap();
        fsat::copy_tree_contents(fsat::open_dir(&old).unwrap().as_fd(), fsat::open_dir(&cur).unwrap().as_fd()).unwrap();
        write(&cur, "passwd", "root:x:0:0\nalice:x:1000:1000\n"); // modified
        write(&cur, "sudoers.d/alice", "alice ALL=(ALL) ALL\n"); // added
        std::fs::remove_file(cur.join("motd")).unwrap(); // deleted, image changed it: conflict
        write(&cur, "issue", "local\n"); // modified, image changed it: conflict
        std::fs::set_permissions(cur.join("sudoers.d"), std::fs::Permissions::from_mode(0o750)).unwrap(); // chmod
        std::fs::remove_file(cur.join("os-release")).unwrap();
        std::os::unix::fs::symlink("/run/os-release", cur.join("os-release")).unwrap(); // symlink change

        let plan = plan(&old, &cur, &new).unwrap();
        assert_eq!(paths(&plan.keep_local), ["issue", "os-release", "passwd", "sudoers.d", "sudoers.d/alice"]);
        assert_eq!(paths(&plan.keep_deleted), ["motd"]);
        assert_eq!(conflicts(&plan), ["issue", "motd"]);
        assert!(plan.conflicts[0].resolution.contains("local version wins"), "{:?}", plan.conflicts);
        apply(&plan, &cur, &new, &out).unwrap();

        let read = |p: &str| std::fs::read_to_string(out.join(p)).unwrap();
        assert_eq!(read("passwd"), "root:x:0:0\nalice:x:1000:1000\n");
        assert_eq!(read("sudoers.d/alice"), "alice ALL=(ALL) ALL\n");
        assert_eq!(read("issue"), "local\n");
        assert_eq!(read("added-by-image"), "x\n");
        assert!(!out.join("motd").exists());
        assert!(!out.join("hostname").exists(), "the image dropped it and the admin did not touch it");
        assert_eq!(std::fs::read_link(out.join("os-release")).unwrap(), Path::new("/run/os-release"));
        assert_eq!(std::fs::metadata(out.join("sudoers.d")).unwrap().mode() & 0o7777, 0o750);
        assert_eq!(std::fs::metadata(out.join("ssh/sshd_config")).unwrap().mode() & 0o7777, 0o600);
        // Real copies: no name of the result shares an inode with the inputs.
        for (p, src) in [("passwd", &cur), ("added-by-image", &new), ("ssh/sshd_config", &new)] {
            let a = std::fs::metadata(out.join(p)).unwrap();
            assert_eq!(a.nlink(), 1, "{p}");
            assert_ne!(a.ino(), std::fs::metadata(src.join(p)).unwrap().ino(), "{p}");
        }
        // The merged result, compared as a whole with what the plan promised.
        let got = scan(&out).unwrap();
        let want_new = scan(&new).unwrap();
        assert_eq!(got.get(Path::new("ssh/sshd_config")), want_new.get(Path::new("ssh/sshd_config")));
        assert!(apply(&plan, &cur, &new, &out).unwrap_err().to_string().contains("already exists"));
    }

    #[test]
    fn merge_on_disk_with_type_changes() {
        let t = tempfile::tempdir().unwrap();
        let (old, cur, new, out) =
            (t.path().join("old"), t.path().join("cur"), t.path().join("new"), t.path().join("out"));
        for root in [&old, &new] {
            write(root, "conf.d/default.conf", "d\n");
            write(root, "profile", "p\n");
            write(root, "gone.d/x", "x\n");
        }
        // The image turns conf.d into a symlink and drops gone.d entirely.
        std::fs::remove_dir_all(new.join("conf.d")).unwrap();
        std::os::unix::fs::symlink("../usr/lib/conf.d", new.join("conf.d")).unwrap();
        std::fs::remove_dir_all(new.join("gone.d")).unwrap();
        std::fs::create_dir(&cur).unwrap();
        fsat::copy_tree_contents(fsat::open_dir(&old).unwrap().as_fd(), fsat::open_dir(&cur).unwrap().as_fd()).unwrap();
        // The admin adds a file in conf.d, turns the profile file into a directory
        // and adds a fifo in gone.d.
        write(&cur, "conf.d/local.conf", "mine\n");
        std::fs::remove_file(cur.join("profile")).unwrap();
        write(&cur, "profile/custom.sh", "export A=1\n");
        rustix::fs::mknodat(
            fsat::open_dir(&cur.join("gone.d")).unwrap(),
            "pipe",
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();

        let plan = plan(&old, &cur, &new).unwrap();
        assert_eq!(
            paths(&plan.keep_local),
            ["conf.d", "conf.d/local.conf", "gone.d", "gone.d/pipe", "profile", "profile/custom.sh"]
        );
        assert_eq!(conflicts(&plan), ["conf.d", "gone.d"]);
        apply(&plan, &cur, &new, &out).unwrap();
        assert!(std::fs::symlink_metadata(out.join("conf.d")).unwrap().is_dir());
        assert_eq!(std::fs::read_to_string(out.join("conf.d/local.conf")).unwrap(), "mine\n");
        assert!(!out.join("conf.d/default.conf").exists(), "the image removed it");
        assert_eq!(std::fs::read_to_string(out.join("profile/custom.sh")).unwrap(), "export A=1\n");
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(
            &std::fs::symlink_metadata(out.join("gone.d/pipe")).unwrap().file_type()
        ));
        assert!(!out.join("gone.d/x").exists());
        // Applying a plan whose local source vanished is an error that leaves nothing.
        let out2 = t.path().join("out2");
        std::fs::remove_file(cur.join("conf.d/local.conf")).unwrap();
        let err = apply(&plan, &cur, &new, &out2).unwrap_err();
        assert!(format!("{err:#}").contains("conf.d/local.conf"), "{err:#}");
        assert!(!out2.exists());
    }

    fn state(i: usize) -> Option<Item> {
        match i {
            0 => None,
            1 => Some(f("1")),
            2 => Some(f("2")),
            3 => Some(mode(f("1"), 0o600)),
            4 => Some(l("a")),
            _ => Some(l("b")),
        }
    }

    proptest::proptest! {
        /// For independent files: the result is the local version where the
        /// admin changed something, the new image's elsewhere; conflicts are
        /// exactly the paths all three disagree on.
        #[test]
        fn plan_follows_the_three_way_rule(states in proptest::collection::vec((0..6usize, 0..6usize, 0..6usize), 1..12)) {
            let (mut o, mut c, mut n) = (snap(&[]), snap(&[]), snap(&[]));
            for (i, (a, b, d)) in states.iter().enumerate() {
                let p = PathBuf::from(format!("f{i}"));
                for (s, v) in [(&mut o, a), (&mut c, b), (&mut n, d)] {
                    if let Some(item) = state(*v) {
                        s.insert(p.clone(), item);
                    }
                }
            }
            let plan = plan_snapshots(&o, &c, &n);
            let mut result = n.clone();
            for p in &plan.keep_deleted {
                result.remove(p);
            }
            for p in &plan.keep_local {
                result.insert(p.clone(), c[p].clone());
            }
            for (i, _) in states.iter().enumerate() {
                let p = PathBuf::from(format!("f{i}"));
                let (oi, ci, ni) = (o.get(&p), c.get(&p), n.get(&p));
                let want = if ci != oi { ci } else { ni };
                proptest::prop_assert_eq!(result.get(&p), want, "{}", p.display());
                let conflict = ci != oi && ni != oi && ni != ci;
                proptest::prop_assert_eq!(plan.conflicts.iter().any(|x| x.path == p), conflict, "{}", p.display());
            }
        }
    }

    #[test]
    fn copy_defaults_is_a_real_copy_with_xattrs() {
        let t = tempfile::tempdir().unwrap();
        let (src, out) = (t.path().join("defaults"), t.path().join("etc"));
        write(&src, "ssh/sshd_config", "Port 22\n");
        std::fs::set_permissions(src.join("ssh"), std::fs::Permissions::from_mode(0o700)).unwrap();
        rustix::fs::setxattr(
            src.join("ssh/sshd_config").as_path(),
            "user.origin",
            b"image",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        copy_defaults(&src, &out).unwrap();
        assert_eq!(scan(&src).unwrap(), scan(&out).unwrap());
        let (a, b) = (
            std::fs::metadata(src.join("ssh/sshd_config")).unwrap(),
            std::fs::metadata(out.join("ssh/sshd_config")).unwrap(),
        );
        assert_ne!(a.ino(), b.ino());
    }

    #[test]
    fn missing_current_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let err = plan(t.path(), &t.path().join("nope"), t.path()).unwrap_err();
        assert!(err.to_string().contains("not a directory"));
    }
}
