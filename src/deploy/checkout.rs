//! Building a deployment's root tree from an image's layer indexes.
//!
//! Two steps: the layers are merged in memory ([`Tree`]: whiteouts applied,
//! paths through symlinks resolved inside the image), then the result is
//! written once, depth first, with `*at` calls relative to directory file
//! descriptors this checkout created itself. Every name written is a single
//! fresh component in such a directory, so no symlink of the tree being built
//! is ever followed. Regular files are hard links to the store's objects
//! (which carry mode, ownership and xattrs; their mtime is 0); directories get
//! their ownership, mode and xattrs after their children are written.
//! Directory and symlink mtimes are the checkout time (so `/usr` is newer
//! than any earlier deployment's, as systemd's `ConditionNeedsUpdate=` wants).
//!
//! Nothing is fsynced here: the caller syncs the filesystem (`syncfs`) before
//! recording the deployment.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Uid, XattrFlags};
use serde::Serialize;

use crate::deploy::tree::{Node, NodeKind, Tree};
use crate::store::{LayerIndex, Meta, Store};

/// Options for a checkout.
#[derive(Clone, Debug, Default)]
pub struct CheckoutOptions {
    /// Move the image's `/etc` to `usr/etc` (the pristine defaults), as every
    /// deployment does; off to compare trees with other unpackers.
    pub relocate_etc: bool,
}

/// What a checkout produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CheckoutStats {
    /// Regular files (every name, hard-linked ones included).
    pub files: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symbolic links created.
    pub symlinks: u64,
    /// Names that the image declares as hard links to another name.
    pub hardlinks: u64,
    /// Device nodes and fifos.
    pub others: u64,
}

/// Checks out `layers` (lowest first) into `dest`, which must not exist yet:
/// whiteouts and opaque directories applied, regular files hardlinked from the
/// store's objects, directories, symlinks and device nodes created with their
/// metadata. Never follows a symlink of the tree being built.
///
/// Bad layer content is reported before `dest` is created; if writing fails
/// half way, the partial `dest` is removed.
pub fn checkout(store: &Store, layers: &[LayerIndex], dest: &Path, opts: &CheckoutOptions) -> Result<CheckoutStats> {
    let mut tree = Tree::from_layers(layers).context("merging the image's layers")?;
    if opts.relocate_etc {
        tree.relocate_etc()?;
    }
    checkout_tree(store, &tree, dest)
}

/// Writes an already merged tree to `dest` (which must not exist).
pub fn checkout_tree(store: &Store, tree: &Tree, dest: &Path) -> Result<CheckoutStats> {
    let objects_dir = store.dir().join("objects");
    let objects =
        match rustix::fs::open(&objects_dir, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) {
            Ok(fd) => Some(fd),
            // A store without objects can still check out a tree without regular files.
            Err(rustix::io::Errno::NOENT) => None,
            Err(e) => {
                return Err(e).with_context(|| format!("opening the store's objects at {}", objects_dir.display()))
            }
        };
    match std::fs::symlink_metadata(dest) {
        Ok(_) => bail!("checkout destination {} already exists", dest.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("checking {}", dest.display())),
    }
    std::fs::create_dir(dest).with_context(|| format!("creating {}", dest.display()))?;
    let result = (|| -> Result<CheckoutStats> {
        let root = rustix::fs::open(
            dest,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let mut w = Writer {
            root: rustix::io::dup(&root)?,
            objects,
            stats: CheckoutStats::default(),
            groups: HashMap::new(),
            path: PathBuf::new(),
            object_rel: String::new(),
        };
        w.write_dir(root.as_fd(), &tree.root)?;
        set_meta_fd(root.as_fd(), &tree.root.meta).context("setting the root directory's metadata")?;
        w.stats.dirs += 1;
        Ok(w.stats)
    })();
    if result.is_err() {
        // Only ever a directory this call created.
        let _ = std::fs::remove_dir_all(dest);
    }
    result.with_context(|| format!("checking out into {}", dest.display()))
}

struct Writer {
    /// `dest`.
    root: OwnedFd,
    objects: Option<OwnedFd>,
    stats: CheckoutStats,
    /// First written path (relative to `dest`) of each link group of
    /// non-regular nodes: later members are linked to it. Every directory on
    /// that path was created by this checkout, so none is a symlink.
    groups: HashMap<u64, PathBuf>,
    /// Path being written, for error messages.
    path: PathBuf,
    /// Reused buffer for `xx/yyyy…` object paths.
    object_rel: String,
}

impl Writer {
    fn write_dir(&mut self, dir: BorrowedFd<'_>, node: &Node) -> Result<()> {
        let children = node.children().expect("write_dir on a directory");
        for (name, child) in children {
            self.path.push(name);
            self.write_node(dir, name, child).with_context(|| format!("writing /{}", self.path.display()))?;
            self.path.pop();
        }
        Ok(())
    }

    fn write_node(&mut self, dir: BorrowedFd<'_>, name: &str, node: &Node) -> Result<()> {
        if let Some(g) = node.link_group {
            if let Some(first) = self.groups.get(&g) {
                rustix::fs::linkat(&self.root, first, dir, name, AtFlags::empty())
                    .context("hard-linking to an earlier name")?;
                self.count(node);
                return Ok(());
            }
        }
        match &node.kind {
            NodeKind::Dir(_) => {
                rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700))?;
                let fd = rustix::fs::openat(
                    dir,
                    name,
                    OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                self.write_dir(fd.as_fd(), node)?;
                set_meta_fd(fd.as_fd(), &node.meta)?;
            }
            NodeKind::File { object, .. } => {
                if object.0.len() != 64 || !object.0.bytes().all(|b| b.is_ascii_hexdigit()) {
                    bail!("invalid object id {object:?} in the layer index");
                }
                let rel = &mut self.object_rel;
                rel.clear();
                rel.push_str(&object.0[..2]);
                rel.push('/');
                rel.push_str(&object.0[2..]);
                let objects =
                    self.objects.as_ref().with_context(|| format!("object {object} is missing from the store"))?;
                rustix::fs::linkat(objects, self.object_rel.as_str(), dir, name, AtFlags::empty())
                    .with_context(|| format!("hard-linking object {object} (is it missing from the store?)"))?;
            }
            NodeKind::Symlink { target } => {
                rustix::fs::symlinkat(target.as_str(), dir, name)?;
                chown_at(dir, name, &node.meta)?;
                set_xattrs_at(dir, name, &node.meta)?;
            }
            NodeKind::CharDevice { major, minor } | NodeKind::BlockDevice { major, minor } => {
                let ft = if matches!(node.kind, NodeKind::CharDevice { .. }) {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                rustix::fs::mknodat(dir, name, ft, Mode::from_raw_mode(0o600), rustix::fs::makedev(*major, *minor))?;
                set_special_meta(dir, name, &node.meta)?;
            }
            NodeKind::Fifo => {
                rustix::fs::mknodat(dir, name, FileType::Fifo, Mode::from_raw_mode(0o600), 0)?;
                set_special_meta(dir, name, &node.meta)?;
            }
        }
        if let Some(g) = node.link_group {
            self.groups.insert(g, self.path.clone());
        }
        self.count(node);
        Ok(())
    }

    fn count(&mut self, node: &Node) {
        let s = &mut self.stats;
        match node.kind {
            NodeKind::Dir(_) => s.dirs += 1,
            NodeKind::File { .. } => s.files += 1,
            NodeKind::Symlink { .. } => s.symlinks += 1,
            _ => s.others += 1,
        }
        if node.via_hardlink {
            s.hardlinks += 1;
        }
    }
}

/// The owner to set, or `None` when a new node already has it: nodes are
/// created with the process's effective ids (no parent has a setgid bit yet,
/// as directory modes are applied after their children are written).
fn ids(meta: &Meta) -> Option<(Option<Uid>, Option<Gid>)> {
    static PROCESS_IDS: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    let ours = *PROCESS_IDS.get_or_init(|| (rustix::process::geteuid().as_raw(), rustix::process::getegid().as_raw()));
    if (meta.uid, meta.gid) == ours {
        return None;
    }
    Some((Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid))))
}

fn xattrs(meta: &Meta) -> impl Iterator<Item = Result<(&str, Vec<u8>)>> {
    meta.xattrs.iter().map(|(k, v)| {
        let value = hex::decode(v).with_context(|| format!("xattr {k} is not hex in the layer index"))?;
        Ok((k.as_str(), value))
    })
}

/// Ownership, then mode (chown clears setuid bits), then xattrs (chown clears
/// `security.capability`) of an open directory.
fn set_meta_fd(fd: BorrowedFd<'_>, meta: &Meta) -> Result<()> {
    if let Some((u, g)) = ids(meta) {
        rustix::fs::fchown(fd, u, g).context("chown")?;
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(meta.mode & 0o7777)).context("chmod")?;
    for x in xattrs(meta) {
        let (k, v) = x?;
        rustix::fs::fsetxattr(fd, k, &v, XattrFlags::empty()).with_context(|| format!("setting xattr {k}"))?;
    }
    Ok(())
}

fn chown_at(dir: BorrowedFd<'_>, name: &str, meta: &Meta) -> Result<()> {
    match ids(meta) {
        Some((u, g)) => rustix::fs::chownat(dir, name, u, g, AtFlags::SYMLINK_NOFOLLOW).context("chown"),
        None => Ok(()),
    }
}

/// xattrs of a just created symlink or special file, through procfs so that
/// the final name is not followed (`lsetxattr`) and the directory is the fd.
fn set_xattrs_at(dir: BorrowedFd<'_>, name: &str, meta: &Meta) -> Result<()> {
    if meta.xattrs.is_empty() {
        return Ok(());
    }
    let path = format!("/proc/self/fd/{}/{}", dir.as_raw_fd(), name);
    for x in xattrs(meta) {
        let (k, v) = x?;
        rustix::fs::lsetxattr(path.as_str(), k, &v, XattrFlags::empty())
            .with_context(|| format!("setting xattr {k}"))?;
    }
    Ok(())
}

fn set_special_meta(dir: BorrowedFd<'_>, name: &str, meta: &Meta) -> Result<()> {
    chown_at(dir, name, meta)?;
    // The name is the device or fifo just created, not a symlink.
    rustix::fs::chmodat(dir, name, Mode::from_raw_mode(meta.mode & 0o7777), AtFlags::empty()).context("chmod")?;
    set_xattrs_at(dir, name, meta)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

    use super::*;
    use crate::digest::Digest;
    use crate::store::{Entry, EntryKind, ObjectId};
    use crate::sysroot::Sysroot;

    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        store: Store,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let store = Store::open(&Sysroot::open(&root).unwrap()).unwrap();
        Fixture { _dir: dir, root, store }
    }

    fn meta(mode: u32, uid: u32) -> Meta {
        Meta { mode, uid, gid: uid, ..Meta::default() }
    }

    /// Writes an object the way the store does (metadata set, mtime 0).
    fn object(store: &Store, content: &[u8], meta: &Meta) -> EntryKind {
        let id = ObjectId(Digest::of(&[content, format!("{meta:?}").as_bytes()].concat()).hex().to_string());
        let p = store.object_path(&id);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        std::os::unix::fs::chown(&p, Some(meta.uid), Some(meta.gid)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(meta.mode)).unwrap();
        EntryKind::File { object: id, size: content.len() as u64 }
    }

    fn layer(entries: Vec<Entry>) -> LayerIndex {
        LayerIndex {
            version: 1,
            diff_id: Digest::of(b"d"),
            blob_digest: Digest::of(b"b"),
            media_type: String::new(),
            compressed_size: 0,
            uncompressed_size: 0,
            entries,
            toc_digest: None,
            content_digests: Default::default(),
            chunks: Default::default(),
        }
    }

    fn e(path: &str, kind: EntryKind, meta: Meta) -> Entry {
        Entry { path: path.into(), kind, meta }
    }

    #[test]
    fn writes_every_kind_with_metadata() {
        let f = fixture();
        let fm = meta(0o4750, 7);
        let obj = object(&f.store, b"hello", &fm);
        let mut xdir = meta(0o1777, 3);
        xdir.xattrs = BTreeMap::from([("user.note".to_string(), hex::encode(b"v"))]);
        let layers = [
            layer(vec![
                e("usr", EntryKind::Dir, meta(0o755, 0)),
                e("usr/bin", EntryKind::Dir, meta(0o555, 0)),
                e("usr/bin/tool", obj.clone(), fm.clone()),
                e("usr/bin/alias", EntryKind::Hardlink { target: "usr/bin/tool".into() }, meta(0, 0)),
                e("tmp", EntryKind::Dir, xdir),
                e("bin", EntryKind::Symlink { target: "usr/bin".into() }, meta(0o777, 5)),
                e("dev", EntryKind::Dir, meta(0o755, 0)),
                e("dev/null", EntryKind::CharDevice { major: 1, minor: 3 }, meta(0o666, 0)),
                e("dev/pipe", EntryKind::Fifo, meta(0o620, 9)),
                e("dev/pipe2", EntryKind::Hardlink { target: "dev/pipe".into() }, meta(0, 0)),
            ]),
            layer(vec![e("etc/motd", obj, fm)]),
        ];
        let dest = f.root.join("deploy");
        let stats = checkout(&f.store, &layers, &dest, &CheckoutOptions { relocate_etc: true }).unwrap();
        assert_eq!(stats, CheckoutStats { files: 3, dirs: 6, symlinks: 1, hardlinks: 2, others: 3 });
        let tool = std::fs::symlink_metadata(dest.join("usr/bin/tool")).unwrap();
        let obj_ino = std::fs::metadata(f.store.object_path(match &layers[0].entries[2].kind {
            EntryKind::File { object, .. } => object,
            _ => unreachable!(),
        }))
        .unwrap()
        .ino();
        assert_eq!(tool.ino(), obj_ino);
        assert_eq!(std::fs::symlink_metadata(dest.join("usr/bin/alias")).unwrap().ino(), obj_ino);
        assert_eq!(std::fs::symlink_metadata(dest.join("usr/etc/motd")).unwrap().ino(), obj_ino);
        assert!(!dest.join("etc").exists());
        let bin = std::fs::symlink_metadata(dest.join("usr/bin")).unwrap();
        assert_eq!(bin.mode() & 0o7777, 0o555);
        let tmp = std::fs::symlink_metadata(dest.join("tmp")).unwrap();
        assert_eq!((tmp.mode() & 0o7777, tmp.uid(), tmp.gid()), (0o1777, 3, 3));
        let mut buf = [0u8; 8];
        let n = rustix::fs::lgetxattr(dest.join("tmp").as_path(), "user.note", &mut buf[..]).unwrap();
        assert_eq!(&buf[..n], b"v");
        assert_eq!(std::fs::read_link(dest.join("bin")).unwrap(), Path::new("usr/bin"));
        assert_eq!(std::fs::symlink_metadata(dest.join("bin")).unwrap().uid(), 5);
        let null = std::fs::symlink_metadata(dest.join("dev/null")).unwrap();
        assert!(null.file_type().is_char_device());
        assert_eq!((null.rdev(), null.mode() & 0o7777), (rustix::fs::makedev(1, 3), 0o666));
        let pipe = std::fs::symlink_metadata(dest.join("dev/pipe")).unwrap();
        assert!(pipe.file_type().is_fifo());
        assert_eq!((pipe.mode() & 0o7777, pipe.uid(), pipe.nlink()), (0o620, 9, 2));
        assert_eq!(std::fs::symlink_metadata(dest.join("dev/pipe2")).unwrap().ino(), pipe.ino());
    }

    #[test]
    fn symlink_to_outside_is_never_followed() {
        let f = fixture();
        let outside = tempfile::tempdir().unwrap();
        let obj = object(&f.store, b"root:x:0:0", &meta(0o644, 0));
        let target = outside.path().to_str().unwrap().to_string();
        let layers = [
            layer(vec![e("a", EntryKind::Symlink { target: target.clone() }, meta(0o777, 0))]),
            layer(vec![e("a/passwd", obj, meta(0o644, 0))]),
        ];
        let dest = f.root.join("deploy");
        checkout(&f.store, &layers, &dest, &CheckoutOptions::default()).unwrap();
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0, "wrote outside dest");
        assert_eq!(std::fs::read(dest.join(target.trim_start_matches('/')).join("passwd")).unwrap(), b"root:x:0:0");
    }

    #[test]
    fn existing_dest_and_missing_objects_are_errors_that_leave_nothing() {
        let f = fixture();
        let dest = f.root.join("deploy");
        std::fs::create_dir(&dest).unwrap();
        let err = checkout(&f.store, &[], &dest, &CheckoutOptions::default()).unwrap_err();
        assert!(err.to_string().contains("already exists"), "{err:#}");
        std::fs::remove_dir(&dest).unwrap();
        object(&f.store, b"x", &meta(0o644, 0)); // creates the objects dir
        let missing = EntryKind::File { object: ObjectId("ab".repeat(32)), size: 1 };
        let layers = [layer(vec![e("d", EntryKind::Dir, meta(0o755, 0)), e("d/f", missing, meta(0o644, 0))])];
        let err = checkout(&f.store, &layers, &dest, &CheckoutOptions::default()).unwrap_err();
        assert!(format!("{err:#}").contains("missing from the store"), "{err:#}");
        assert!(format!("{err:#}").contains("/d/f"), "{err:#}");
        assert!(!dest.exists());
        let err =
            checkout(&f.store, &[layer(vec![e("../x", EntryKind::Dir, meta(0o755, 0))])], &dest, &Default::default())
                .unwrap_err();
        assert!(format!("{err:#}").contains("invalid path"), "{err:#}");
        assert!(!dest.exists());
        // An object id naming a path outside the objects directory.
        let evil = EntryKind::File { object: ObjectId(format!("../../../../{}", "a".repeat(52))), size: 1 };
        let err =
            checkout(&f.store, &[layer(vec![e("f", evil, meta(0o644, 0))])], &dest, &Default::default()).unwrap_err();
        assert!(format!("{err:#}").contains("invalid object id"), "{err:#}");
        assert!(!dest.exists());
    }
}
