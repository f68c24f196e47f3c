//! Per-registry TLS directories, as containers-certs.d(5) lays them out:
//! which directory applies to a registry, and what its files mean (`*.crt`
//! extra CA roots, `*.cert` + `*.key` of the same stem a client certificate).
//!
//! Lookup: for registry `host[:port]`, the first existing `<root>/<host[:port]>/`
//! among the roots (by default [`default_roots`]). `--cert-dir DIR` replaces
//! the lookup: DIR itself is read, as skopeo does.
//!
//! More than one client certificate pair in a directory: containers-certs.d(5)
//! says pairs are used in alpha-numerical order. containers/image loads them
//! all into Go's `tls.Config.Certificates`, and Go's client offers the first
//! one that suits the server's certificate request (its acceptable CAs and
//! signature schemes). reqwest takes one client identity per HTTP client, so
//! hostctl offers the first pair in that order only, and the others are
//! listed in [`TlsFiles::unused_clients`] for a warning: where the first pair
//! is the one the server accepts, the outcome is the same as podman's; where
//! the server wants a later pair, podman would offer that one and hostctl
//! does not (the TLS error then names the pair offered and those left out).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The certs.d roots searched by default, in order: `/etc/containers/certs.d`,
/// `/etc/docker/certs.d`, then `$HOME/.config/containers/certs.d`.
pub fn default_roots() -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from("/etc/containers/certs.d"), PathBuf::from("/etc/docker/certs.d")];
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        roots.push(Path::new(&home).join(".config/containers/certs.d"));
    }
    roots
}

/// The directory for `registry` (`host[:port]`) under the first root that has one.
pub fn find(roots: &[PathBuf], registry: &str) -> Option<PathBuf> {
    // A registry name is a host and port, never a path; refuse anything that
    // could climb out of the root.
    if registry.is_empty() || registry.contains('/') || registry.starts_with('.') {
        return None;
    }
    roots.iter().map(|r| r.join(registry)).find(|d| d.is_dir())
}

/// What one TLS directory holds.
#[derive(Debug, Default)]
pub struct TlsFiles {
    /// PEM files of extra CA roots (`*.crt`), sorted.
    pub ca_files: Vec<PathBuf>,
    /// The client certificate and its key (`NAME.cert`, `NAME.key`) that is
    /// offered: the first pair in file-name order, if any.
    pub client: Option<(PathBuf, PathBuf)>,
    /// The `.cert` files of the other pairs, which are not offered (see the module docs).
    pub unused_clients: Vec<PathBuf>,
}

/// Lists `dir`'s TLS files, in file-name order. A `.cert` without its `.key`
/// (or the reverse) is an error.
pub fn scan(dir: &Path) -> Result<TlsFiles> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading certificate directory {}", dir.display()))?;
    let mut paths: Vec<PathBuf> = entries
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("listing {}", dir.display()))?;
    paths.sort();
    let has_ext = |p: &Path, ext: &str| p.extension().is_some_and(|e| e == ext);
    let mut files = TlsFiles::default();
    let mut pairs = Vec::new();
    for p in &paths {
        if has_ext(p, "crt") {
            files.ca_files.push(p.clone());
        } else if has_ext(p, "cert") {
            let key = p.with_extension("key");
            if !key.exists() {
                bail!(
                    "client certificate {} has no key {} (CA certificates are named *.crt)",
                    p.display(),
                    key.display()
                );
            }
            pairs.push((p.clone(), key));
        } else if has_ext(p, "key") && !p.with_extension("cert").exists() {
            bail!("key {} has no client certificate {}", p.display(), p.with_extension("cert").display());
        }
    }
    let mut pairs = pairs.into_iter();
    files.client = pairs.next();
    files.unused_clients = pairs.map(|(cert, _)| cert).collect();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_root_with_the_registry_wins() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        std::fs::create_dir(b.path().join("reg.example:5000")).unwrap();
        std::fs::create_dir(a.path().join("other.example")).unwrap();
        let roots = vec![a.path().to_path_buf(), b.path().to_path_buf()];
        assert_eq!(find(&roots, "reg.example:5000"), Some(b.path().join("reg.example:5000")));
        std::fs::create_dir(a.path().join("reg.example:5000")).unwrap();
        assert_eq!(find(&roots, "reg.example:5000"), Some(a.path().join("reg.example:5000")));
        assert_eq!(find(&roots, "nothere.example"), None);
        assert_eq!(find(&roots, ".."), None);
        assert_eq!(find(&roots, "a/../other.example"), None);
    }

    #[test]
    fn files_are_classified_and_unpaired_ones_refused() {
        let d = tempfile::tempdir().unwrap();
        for f in ["ca.crt", "b.crt", "client.cert", "client.key", "README"] {
            std::fs::write(d.path().join(f), "x").unwrap();
        }
        let files = scan(d.path()).unwrap();
        assert_eq!(files.ca_files, vec![d.path().join("b.crt"), d.path().join("ca.crt")]);
        assert_eq!(files.client, Some((d.path().join("client.cert"), d.path().join("client.key"))));

        std::fs::write(d.path().join("lonely.cert"), "x").unwrap();
        let e = format!("{:#}", scan(d.path()).unwrap_err());
        assert!(e.contains("lonely.cert") && e.contains("has no key"), "{e}");
        std::fs::remove_file(d.path().join("lonely.cert")).unwrap();

        std::fs::write(d.path().join("orphan.key"), "x").unwrap();
        let e = format!("{:#}", scan(d.path()).unwrap_err());
        assert!(e.contains("orphan.key") && e.contains("has no client certificate"), "{e}");
        std::fs::remove_file(d.path().join("orphan.key")).unwrap();
    }

    /// Several pairs: the first in file-name order is offered, whatever the
    /// order the directory lists them in; the rest are reported, not used.
    #[test]
    fn several_client_pairs_offer_the_first_by_name() {
        let d = tempfile::tempdir().unwrap();
        for stem in ["zeta", "alpha", "mid"] {
            std::fs::write(d.path().join(format!("{stem}.cert")), "x").unwrap();
            std::fs::write(d.path().join(format!("{stem}.key")), "x").unwrap();
        }
        let files = scan(d.path()).unwrap();
        assert_eq!(files.client, Some((d.path().join("alpha.cert"), d.path().join("alpha.key"))));
        assert_eq!(files.unused_clients, [d.path().join("mid.cert"), d.path().join("zeta.cert")]);
        // A lone .cert among pairs is still an error.
        std::fs::remove_file(d.path().join("mid.key")).unwrap();
        assert!(format!("{:#}", scan(d.path()).unwrap_err()).contains("has no key"));
    }
}
