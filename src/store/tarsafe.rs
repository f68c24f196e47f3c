//! Tar safety: normalising entry paths and refusing entries that could escape
//! the root they are unpacked under or exhaust resources. Every refusal names
//! the entry.
//!
//! What is decided here depends on one layer alone, because a layer index is
//! keyed by its diff_id and shared by every image that has the layer: an
//! absolute name is taken relative to the layer root (as containerd, umoci and
//! moby do); `..` is refused. Where a name leads through a symlink depends on
//! the layers below, so paths beneath symlinks are recorded as written and
//! resolved, inside the image, by the checkout (`deploy::tree`).

use std::collections::HashMap;

use anyhow::{bail, Result};

use crate::store::EntryKind;

/// Limits an import enforces on one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest regular file.
    pub max_entry_size: u64,
    /// Largest uncompressed tar stream.
    pub max_layer_size: u64,
    /// Most entries in one layer (the index is held in memory).
    pub max_entries: usize,
    /// Longest normalised path, in bytes (Linux `PATH_MAX` less the NUL).
    pub max_path_len: usize,
    /// Longest path component, in bytes (`NAME_MAX`).
    pub max_component_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_entry_size: 64 << 30,
            max_layer_size: 512 << 30,
            max_entries: 4_000_000,
            max_path_len: 4095,
            max_component_len: 255,
        }
    }
}

/// Normalises a tar path: strips leading `/` (an absolute name is relative to
/// the layer root, as GNU tar `-P` and other tools write it) and `./` noise,
/// drops `.` and empty components; refuses `..`, NUL, non-UTF-8 and over-long
/// names. The layer root itself normalises to `""`.
pub fn normalise(raw: &[u8], limits: &Limits) -> Result<String> {
    let Ok(s) = std::str::from_utf8(raw) else {
        bail!("entry {:?}: path is not valid UTF-8", String::from_utf8_lossy(raw));
    };
    // A leading "/" is dropped with the other empty components below: "/etc/x"
    // is the layer's "etc/x" and "/" (umoci writes the root so) is the root.
    if s.contains('\0') {
        bail!("entry {s:?}: path contains a NUL byte");
    }
    let mut out = String::with_capacity(s.len());
    for comp in s.split('/') {
        match comp {
            "" | "." => continue,
            ".." => bail!("entry {s:?}: `..` component refused"),
            c => {
                if c.len() > limits.max_component_len {
                    bail!(
                        "entry {s:?}: a path component is {} bytes long (limit {})",
                        c.len(),
                        limits.max_component_len
                    );
                }
                if !out.is_empty() {
                    out.push('/');
                }
                out.push_str(c);
            }
        }
    }
    if out.len() > limits.max_path_len {
        bail!("entry {:?}...: path is {} bytes long (limit {})", &s[..64.min(s.len())], out.len(), limits.max_path_len);
    }
    Ok(out)
}

/// Whether a raw tar path names the layer root itself (`/`, `./`, `.`, `//`...).
pub fn is_root(raw: &[u8]) -> bool {
    raw.split(|b| *b == b'/').all(|c| c.is_empty() || c == b".")
}

/// The parent directory of a normalised path (`""` for top-level entries).
pub fn parent(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

/// What an earlier entry of this layer made a path into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Seen {
    Symlink,
    Dir,
    /// A file, hardlink, device or fifo: something a hardlink may point to.
    Linkable,
    Whiteout,
}

/// The entries seen so far in one layer, to check later entries against.
#[derive(Debug, Default)]
pub struct LayerPaths {
    seen: HashMap<String, Seen>,
    /// Whether any symlink was seen (skips the ancestor walk when not).
    any_symlink: bool,
}

impl LayerPaths {
    /// Refuses `path` if one of its ancestors is a symlink created earlier in
    /// this layer. Only whiteouts are checked so: they are applied before the
    /// layer's own entries (OCI image spec), so one placed beneath a symlink
    /// of the same layer would be resolved against a tree without that symlink.
    pub fn check_no_symlink_ancestor(&self, path: &str, what: &str) -> Result<()> {
        if !self.any_symlink {
            return Ok(());
        }
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            let ancestor = &path[..end + i];
            if self.seen.get(ancestor) == Some(&Seen::Symlink) {
                bail!("entry {path:?}: {what} through {ancestor:?}, a symlink created earlier in the same layer");
            }
            end += i + 1;
        }
        Ok(())
    }

    /// Checks a hardlink's normalised `target` for the entry at `path`.
    /// A target the layer has not seen is a link into a lower layer, or through
    /// a symlink: allowed here, resolved (inside the image) by the checkout.
    pub fn check_hardlink(&self, path: &str, target: &str) -> Result<()> {
        if target.is_empty() {
            bail!("entry {path:?}: hardlink to the layer root refused");
        }
        if target == path {
            bail!("entry {path:?}: hardlink to itself refused");
        }
        match self.seen.get(target) {
            Some(Seen::Dir) => bail!("entry {path:?}: hardlink to directory {target:?} refused"),
            Some(Seen::Whiteout) => bail!("entry {path:?}: hardlink to {target:?}, which this layer deletes"),
            _ => Ok(()),
        }
    }

    /// Records an accepted entry.
    pub fn record(&mut self, path: &str, kind: &EntryKind) {
        let seen = match kind {
            EntryKind::Symlink { .. } => {
                self.any_symlink = true;
                Seen::Symlink
            }
            EntryKind::Dir | EntryKind::OpaqueWhiteout => Seen::Dir,
            EntryKind::Whiteout => Seen::Whiteout,
            _ => Seen::Linkable,
        };
        if let Some(old) = self.seen.get_mut(path) {
            *old = seen;
        } else {
            self.seen.insert(path.to_string(), seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_dot_prefixes_and_slashes() {
        let l = Limits::default();
        assert_eq!(normalise(b"./usr//bin/./ls", &l).unwrap(), "usr/bin/ls");
        assert_eq!(normalise(b"./", &l).unwrap(), "");
        assert_eq!(normalise(b"etc/", &l).unwrap(), "etc");
        for root in [&b"/"[..], b"./", b".", b"//./"] {
            assert!(is_root(root), "{root:?}");
        }
        for not_root in [&b"/.."[..], b"..", b"/etc", b"./a"] {
            assert!(!is_root(not_root), "{not_root:?}");
        }
    }

    #[test]
    fn absolute_names_are_relative_to_the_layer_root_as_gnu_tar_p_writes_them() {
        let l = Limits::default();
        assert_eq!(normalise(b"/etc/passwd", &l).unwrap(), "etc/passwd");
        assert_eq!(normalise(b"//usr/./bin/", &l).unwrap(), "usr/bin");
    }

    #[test]
    fn refuses_escapes_and_long_names() {
        let l = Limits::default();
        // Regression: umoci's layers start with a "/" entry for the root.
        assert_eq!(normalise(b"/", &l).unwrap(), "");
        assert!(normalise(b"/../etc", &l).unwrap_err().to_string().contains(".."));
        assert!(normalise(b"a/../../etc", &l).unwrap_err().to_string().contains(".."));
        assert!(normalise(&[b'a'; 256], &l).unwrap_err().to_string().contains("component"));
        let long = "a/".repeat(2100);
        assert!(normalise(long.as_bytes(), &l).unwrap_err().to_string().contains("limit 4095"));
        assert!(normalise(b"\xff", &l).unwrap_err().to_string().contains("UTF-8"));
    }
}
