//! The tree a lint checks: its directory, the mount points below it (which
//! are not part of the image: a build's `/proc`, `/etc/resolv.conf`, …) and
//! one shared walk over everything else.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result};

/// One entry met by the walk.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Relative to the root.
    pub path: PathBuf,
    /// Its metadata (not following symlinks).
    pub meta: std::fs::Metadata,
    /// A symlink's target.
    pub target: Option<PathBuf>,
}

/// The tree under check.
#[derive(Debug)]
pub struct Root {
    dir: PathBuf,
    /// Mount points strictly below `dir`, relative to it.
    mounts: Vec<PathBuf>,
    walk: OnceLock<std::result::Result<Vec<Entry>, String>>,
}

impl Root {
    /// The tree at `dir`, skipping what this process sees mounted below it
    /// (`/proc/self/mountinfo`).
    pub fn open(dir: &Path) -> Result<Root> {
        let dir = std::fs::canonicalize(dir).with_context(|| format!("opening the rootfs {}", dir.display()))?;
        anyhow::ensure!(dir.is_dir(), "the rootfs {} is not a directory", dir.display());
        let info = std::fs::read("/proc/self/mountinfo").unwrap_or_default();
        let mounts = mounts_below(&info, &dir);
        tracing::info!("linting {} (skipping {} mount point(s) below it)", dir.display(), mounts.len());
        Ok(Root::with_mounts(&dir, mounts))
    }

    /// The tree at `dir`, skipping the given relative mount points.
    pub fn with_mounts(dir: &Path, mounts: Vec<PathBuf>) -> Root {
        Root { dir: dir.to_path_buf(), mounts, walk: OnceLock::new() }
    }

    /// The root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The absolute path of `rel`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Whether `rel` is a mount point (or below one): not the image's content.
    pub fn is_mounted(&self, rel: &Path) -> bool {
        self.mounts.iter().any(|m| rel.starts_with(m))
    }

    /// `rel`'s metadata, not following a symlink; `None` when it is absent,
    /// below a mount point, or a file mounted over (a build's
    /// `/etc/hostname`). A directory mount point (a host's `/boot`) is a
    /// directory of the image: `Some`, though nothing below it is walked.
    pub fn lstat(&self, rel: &str) -> Result<Option<std::fs::Metadata>> {
        let rel_path = Path::new(rel);
        let mount_point = self.mounts.iter().any(|m| m == rel_path);
        if self.is_mounted(rel_path) && !mount_point {
            return Ok(None);
        }
        match std::fs::symlink_metadata(self.path(rel)) {
            Ok(m) if mount_point && !m.is_dir() => Ok(None),
            Ok(m) => Ok(Some(m)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading /{rel}")),
        }
    }

    /// Every entry of the tree (the root itself excepted), parents before
    /// children, mount points skipped. Walked once per lint.
    pub fn entries(&self) -> Result<&[Entry]> {
        let r = self.walk.get_or_init(|| {
            let mut out = Vec::new();
            walk(&self.dir, PathBuf::new(), &self.mounts, &mut out).map_err(|e| format!("{e:#}"))?;
            Ok(out)
        });
        r.as_deref().map_err(|e| anyhow::anyhow!("walking {}: {e}", self.dir.display()))
    }

    /// The entries below `top` (a relative directory).
    pub fn entries_under<'a>(&'a self, top: &'a str) -> Result<impl Iterator<Item = &'a Entry> + 'a> {
        Ok(self.entries()?.iter().filter(move |e| e.path.starts_with(top) && e.path != Path::new(top)))
    }
}

fn walk(dir: &Path, rel: PathBuf, mounts: &[PathBuf], out: &mut Vec<Entry>) -> Result<()> {
    let mut names: Vec<OsString> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("listing {}", dir.display()))?;
    names.sort();
    for name in names {
        let path = rel.join(&name);
        if mounts.iter().any(|m| path.starts_with(m)) {
            continue;
        }
        let abs = dir.join(&name);
        let meta = std::fs::symlink_metadata(&abs).with_context(|| format!("reading {}", abs.display()))?;
        let target = if meta.file_type().is_symlink() {
            Some(std::fs::read_link(&abs).with_context(|| format!("reading the link {}", abs.display()))?)
        } else {
            None
        };
        let is_dir = meta.is_dir();
        out.push(Entry { path: path.clone(), meta, target });
        if is_dir {
            walk(&abs, path, mounts, out)?;
        }
    }
    Ok(())
}

/// The mount points strictly below `root` in a mountinfo text, relative to it.
pub fn mounts_below(mountinfo: &[u8], root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for line in mountinfo.split(|b| *b == b'\n') {
        let Some(field) = line.split(|b| *b == b' ').nth(4) else { continue };
        let point = PathBuf::from(OsString::from_vec(unescape(field)));
        if let Ok(rel) = point.strip_prefix(root) {
            if !rel.as_os_str().is_empty() {
                out.push(rel.to_path_buf());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\' && i + 3 < field.len() && field[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (field[i + 1] - b'0') * 64 + (field[i + 2] - b'0') * 8 + (field[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    out
}

/// A path for a message: `/rel`, with bytes that are not UTF-8 escaped.
pub fn show(rel: &Path) -> String {
    let s = rel.as_os_str();
    match s.to_str() {
        Some(t) => format!("/{t}"),
        None => format!("/{}", s.as_bytes().escape_ascii()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_points_below_the_root() {
        // Lines as a podman build's RUN sees them (proc(5) format).
        let info = b"1183 1182 0:95 / / rw,relatime - overlay overlay rw\n\
1184 1183 0:97 / /proc rw,nosuid - proc proc rw\n\
1190 1183 0:99 /run/x/hostname /etc/hostname rw - tmpfs tmpfs rw\n\
1191 1183 0:99 / /srv/my\\040dir rw - tmpfs tmpfs rw\n";
        let got = mounts_below(info, Path::new("/"));
        assert_eq!(got, [PathBuf::from("etc/hostname"), "proc".into(), "srv/my dir".into()]);
        assert_eq!(mounts_below(info, Path::new("/srv")), [PathBuf::from("my dir")]);
        assert!(mounts_below(info, Path::new("/work")).is_empty());
    }

    #[test]
    fn mounted_paths_are_not_walked() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("proc/1")).unwrap();
        std::fs::write(t.path().join("proc/1/status"), "x").unwrap();
        std::fs::create_dir_all(t.path().join("etc")).unwrap();
        std::fs::write(t.path().join("etc/hostname"), "").unwrap();
        let root = Root::with_mounts(t.path(), vec!["proc".into(), "etc/hostname".into()]);
        let paths: Vec<_> = root.entries().unwrap().iter().map(|e| e.path.display().to_string()).collect();
        assert_eq!(paths, ["etc"]);
        assert!(root.lstat("etc/hostname").unwrap().is_none(), "a file mounted over");
        assert!(root.lstat("etc").unwrap().is_some());
        assert!(root.lstat("proc").unwrap().is_some_and(|m| m.is_dir()), "a directory mount point is a directory");
        assert!(root.lstat("proc/1").unwrap().is_none(), "below a mount point");
    }

    #[test]
    fn show_escapes_bytes_that_are_not_utf8() {
        let p = PathBuf::from(OsString::from_vec(b"tmp/a\xffb".to_vec()));
        assert_eq!(show(&p), "/tmp/a\\xffb");
    }
}
