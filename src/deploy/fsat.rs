//! Directory-fd-relative file operations for the /etc merge: walking a tree,
//! reading a node's metadata and xattrs, and copying one node (a real copy,
//! never a hard link) without following symlinks anywhere on the way.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path};

use anyhow::{bail, Context, Result};
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Stat, Timestamps, Uid, XattrFlags};

/// Opens a directory without following a symlink at its final component.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &Path) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Opens a top directory (symlinks in `path` itself are the caller's choice).
pub fn open_dir(path: &Path) -> Result<OwnedFd> {
    rustix::fs::open(path, OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .with_context(|| format!("opening directory {}", path.display()))
}

/// Opens the directory holding `rel` beneath `root`, refusing symlinks and
/// non-directories on the way; returns it with the final name. `rel` must be
/// relative, without `.` or `..`, and not empty.
pub fn open_parent(root: BorrowedFd<'_>, rel: &Path) -> Result<(OwnedFd, OsString)> {
    let mut comps: Vec<&std::ffi::OsStr> = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => comps.push(n),
            _ => bail!("invalid relative path {}", rel.display()),
        }
    }
    let Some((name, parents)) = comps.split_last() else { bail!("empty relative path") };
    let mut fd = rustix::io::dup(root)?;
    for p in parents {
        fd = open_dir_at(fd.as_fd(), Path::new(p))
            .with_context(|| format!("opening {} (a symlink or not a directory?)", rel.display()))?;
    }
    Ok((fd, name.to_os_string()))
}

/// `lstat` of `name` in `dir`.
pub fn lstat_at(dir: BorrowedFd<'_>, name: &Path) -> rustix::io::Result<Stat> {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
}

/// A `/proc/self/fd` path naming `name` in `dir`, for the `l*xattr` calls
/// (which have no `*at` form); the final component is never followed.
fn proc_path(dir: BorrowedFd<'_>, name: &Path) -> OsString {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.as_os_str().as_bytes());
    OsString::from_vec(p)
}

/// All xattrs of `name` in `dir`, sorted by name.
pub fn xattrs_at(dir: BorrowedFd<'_>, name: &Path) -> Result<Vec<(OsString, Vec<u8>)>> {
    let path = proc_path(dir, name);
    let path = Path::new(&path);
    let size = rustix::fs::llistxattr_query(path).context("listing xattrs")?;
    if size == 0 {
        return Ok(Vec::new());
    }
    let mut list = vec![0u8; size];
    let n = rustix::fs::llistxattr(path, &mut list[..]).context("listing xattrs")?;
    let mut out = Vec::new();
    for key in list[..n].split(|b| *b == 0).filter(|k| !k.is_empty()) {
        let key = OsString::from_vec(key.to_vec());
        let len = rustix::fs::lgetxattr_query(path, key.as_os_str()).context("reading an xattr")?;
        let mut v = vec![0u8; len];
        let n = rustix::fs::lgetxattr(path, key.as_os_str(), &mut v[..]).context("reading an xattr")?;
        v.truncate(n);
        out.push((key, v));
    }
    out.sort();
    Ok(out)
}

fn set_xattrs_at(dir: BorrowedFd<'_>, name: &Path, xattrs: &[(OsString, Vec<u8>)]) -> Result<()> {
    let path = proc_path(dir, name);
    for (k, v) in xattrs {
        rustix::fs::lsetxattr(Path::new(&path), k.as_os_str(), v, XattrFlags::empty())
            .with_context(|| format!("setting xattr {}", k.to_string_lossy()))?;
    }
    Ok(())
}

/// The names in a directory, sorted, without `.` and `..`.
pub fn list_dir(dir: BorrowedFd<'_>) -> Result<Vec<OsString>> {
    let mut names = Vec::new();
    for e in rustix::fs::Dir::read_from(dir).context("reading a directory")? {
        let e = e.context("reading a directory")?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsString::from_vec(n.to_vec()));
        }
    }
    names.sort();
    Ok(names)
}

/// Removes `name` in `dir`, recursively if it is a directory; absent is fine.
pub fn remove_at(dir: BorrowedFd<'_>, name: &Path) -> Result<()> {
    let st = match lstat_at(dir, name) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
        let sub = open_dir_at(dir, name)?;
        for child in list_dir(sub.as_fd())? {
            remove_at(sub.as_fd(), Path::new(&child))?;
        }
        rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    } else {
        rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
    }
    Ok(())
}

/// Ownership, mode, xattrs and mtime of `st` (from `src_dir/name`) onto the
/// node `dst_dir/name`. chown first: it clears setuid bits and capabilities.
fn copy_meta(src_dir: BorrowedFd<'_>, dst_dir: BorrowedFd<'_>, name: &Path, st: &Stat, ft: FileType) -> Result<()> {
    let (u, g) = (Some(Uid::from_raw(st.st_uid)), Some(Gid::from_raw(st.st_gid)));
    rustix::fs::chownat(dst_dir, name, u, g, AtFlags::SYMLINK_NOFOLLOW).context("chown")?;
    if ft != FileType::Symlink {
        // The name is the node this copy created, not a symlink.
        rustix::fs::chmodat(dst_dir, name, Mode::from_raw_mode(st.st_mode & 0o7777), AtFlags::empty())
            .context("chmod")?;
    }
    set_xattrs_at(dst_dir, name, &xattrs_at(src_dir, name)?)?;
    let times = Timestamps {
        last_access: rustix::fs::Timespec { tv_sec: st.st_atime as _, tv_nsec: st.st_atime_nsec as _ },
        last_modification: rustix::fs::Timespec { tv_sec: st.st_mtime as _, tv_nsec: st.st_mtime_nsec as _ },
    };
    rustix::fs::utimensat(dst_dir, name, &times, AtFlags::SYMLINK_NOFOLLOW).context("setting times")?;
    Ok(())
}

/// Copies the non-directory `name` from `src_dir` into `dst_dir` (where it
/// must not exist) with its metadata: regular files get new inodes and copied
/// bytes, symlinks, devices, fifos and sockets are recreated.
pub fn copy_node_at(src_dir: BorrowedFd<'_>, dst_dir: BorrowedFd<'_>, name: &Path) -> Result<()> {
    let st = lstat_at(src_dir, name)?;
    let ft = FileType::from_raw_mode(st.st_mode);
    match ft {
        FileType::RegularFile => {
            let src =
                rustix::fs::openat(src_dir, name, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
            let dst = rustix::fs::openat(
                dst_dir,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?;
            let (mut src, mut dst) = (File::from(src), File::from(dst));
            std::io::copy(&mut src, &mut dst).context("copying content")?;
        }
        FileType::Symlink => {
            let target = rustix::fs::readlinkat(src_dir, name, Vec::new())?;
            rustix::fs::symlinkat(target.as_c_str(), dst_dir, name)?;
        }
        FileType::CharacterDevice | FileType::BlockDevice | FileType::Fifo | FileType::Socket => {
            rustix::fs::mknodat(dst_dir, name, ft, Mode::from_raw_mode(0o600), st.st_rdev)?;
        }
        FileType::Directory => bail!("copy_node_at called on a directory"),
        FileType::Unknown => bail!("unknown file type"),
    }
    copy_meta(src_dir, dst_dir, name, &st, ft)
}

/// Creates the directory `name` in `dst_dir` (mode 0700 until [`copy_dir_meta`]).
pub fn mkdir_at(dst_dir: BorrowedFd<'_>, name: &Path) -> Result<()> {
    rustix::fs::mkdirat(dst_dir, name, Mode::from_raw_mode(0o700))?;
    Ok(())
}

/// Copies a directory's ownership, mode, xattrs and mtime.
pub fn copy_dir_meta(src_dir: BorrowedFd<'_>, dst_dir: BorrowedFd<'_>, name: &Path) -> Result<()> {
    let st = lstat_at(src_dir, name)?;
    copy_meta(src_dir, dst_dir, name, &st, FileType::Directory)
}

/// Recursively copies the contents of `src` into the existing, empty `dst`
/// (real copies), then `src`'s own metadata onto `dst` via their parents.
pub fn copy_tree_contents(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> Result<()> {
    for name in list_dir(src)? {
        let name = Path::new(&name);
        let st = lstat_at(src, name)?;
        let r = if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
            mkdir_at(dst, name).and_then(|()| {
                let s = open_dir_at(src, name)?;
                let d = open_dir_at(dst, name)?;
                copy_tree_contents(s.as_fd(), d.as_fd())?;
                copy_dir_meta(src, dst, name)
            })
        } else {
            copy_node_at(src, dst, name)
        };
        r.with_context(|| format!("copying {}", name.display()))?;
    }
    Ok(())
}
