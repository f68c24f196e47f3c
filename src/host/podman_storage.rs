//! Where podman keeps images and which layer blobs it holds, read without
//! running podman (each podman run costs a start-up): the graph root as
//! podman would choose it, and the compressed digests of the layers in it,
//! from containers/storage's own layer list. Used to tell how much an app
//! pull will download before it starts ([`crate::apps::room`]).
//!
//! The graph root, first found wins (containers-storage.conf(5)): `--root`
//! among hostctl's podman options; `graphroot` in the file
//! `CONTAINERS_STORAGE_CONF` names, else in `/etc/containers/storage.conf`,
//! else in `/usr/share/containers/storage.conf`; else
//! `/var/lib/containers/storage`. Layers: every `DRIVER-layers/layers.json`
//! and `volatile-layers.json` in it (`compressed-diff-digest` of each
//! entry). A list that cannot be read counts as no layers, which can only
//! make the estimate of what a pull needs larger.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

/// podman's default graph root for root.
pub const DEFAULT_GRAPHROOT: &str = "/var/lib/containers/storage";

/// The storage.conf files podman reads when `CONTAINERS_STORAGE_CONF` is
/// not set, first found wins.
const STORAGE_CONFS: [&str; 2] = ["/etc/containers/storage.conf", "/usr/share/containers/storage.conf"];

/// podman's storage, as a pull sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Storage {
    /// The graph root, where layers are unpacked.
    pub graphroot: PathBuf,
    /// Where pulled blobs wait before they are unpacked (`TMPDIR`, else `/var/tmp`).
    pub tmpdir: PathBuf,
    /// The compressed digests (`sha256:…`) of the layers it holds.
    pub layers: HashSet<String>,
}

/// Reads podman's storage for a podman run with options `global`.
pub fn read(global: &[String]) -> Result<Storage> {
    let conf = std::env::var_os("CONTAINERS_STORAGE_CONF").map(PathBuf::from);
    let graphroot = graphroot(global, conf.as_deref())?;
    let layers = stored_layers(&graphroot);
    let tmpdir = std::env::var_os("TMPDIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/tmp"));
    Ok(Storage { graphroot, tmpdir, layers })
}

/// The graph root for options `global` and the storage.conf `conf` names.
pub fn graphroot(global: &[String], conf: Option<&Path>) -> Result<PathBuf> {
    let mut args = global.iter();
    while let Some(a) = args.next() {
        if let Some(root) = a.strip_prefix("--root=") {
            return Ok(PathBuf::from(root));
        }
        if a == "--root" {
            if let Some(root) = args.next() {
                return Ok(PathBuf::from(root));
            }
        }
    }
    let files: Vec<PathBuf> = match conf {
        Some(c) => vec![c.to_path_buf()],
        None => STORAGE_CONFS.iter().map(PathBuf::from).collect(),
    };
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
        };
        let table: toml::Table = toml::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
        let root = table.get("storage").and_then(|s| s.get("graphroot")).and_then(|g| g.as_str());
        // The first file found decides, with or without a graphroot in it.
        return Ok(PathBuf::from(root.filter(|r| !r.is_empty()).unwrap_or(DEFAULT_GRAPHROOT)));
    }
    Ok(PathBuf::from(DEFAULT_GRAPHROOT))
}

/// One entry of containers/storage's `layers.json`.
#[derive(Deserialize)]
struct LayerEntry {
    #[serde(rename = "compressed-diff-digest", default)]
    compressed_diff_digest: Option<String>,
}

/// The compressed digests of the layers in `graphroot`.
pub fn stored_layers(graphroot: &Path) -> HashSet<String> {
    let mut out = HashSet::new();
    let Ok(entries) = std::fs::read_dir(graphroot) else { return out };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().ends_with("-layers") {
            continue;
        }
        for list in ["layers.json", "volatile-layers.json"] {
            let Ok(text) = std::fs::read(entry.path().join(list)) else { continue };
            let Ok(layers) = serde_json::from_slice::<Vec<LayerEntry>>(&text) else {
                tracing::warn!(
                    "{}: not a layer list podman wrote; counted as empty",
                    entry.path().join(list).display()
                );
                continue;
            };
            out.extend(layers.into_iter().filter_map(|l| l.compressed_diff_digest));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn graphroot_follows_podman_s_order() {
        let d = tempfile::tempdir().unwrap();
        let conf = d.path().join("storage.conf");
        std::fs::write(&conf, "[storage]\ndriver = \"overlay\"\ngraphroot = \"/srv/podman\"\n").unwrap();
        // --root wins over any file, in both spellings.
        assert_eq!(graphroot(&s(&["--root=/a"]), Some(&conf)).unwrap(), PathBuf::from("/a"));
        assert_eq!(graphroot(&s(&["--runroot", "/r", "--root", "/b"]), Some(&conf)).unwrap(), PathBuf::from("/b"));
        assert_eq!(graphroot(&[], Some(&conf)).unwrap(), PathBuf::from("/srv/podman"));
        // A file without graphroot: podman's default, not the next file.
        std::fs::write(&conf, "[storage]\ndriver = \"vfs\"\n").unwrap();
        assert_eq!(graphroot(&[], Some(&conf)).unwrap(), PathBuf::from(DEFAULT_GRAPHROOT));
        // A named file that is absent: the default.
        assert_eq!(graphroot(&[], Some(&d.path().join("none"))).unwrap(), PathBuf::from(DEFAULT_GRAPHROOT));
        // A file that is not TOML is an error, as it is for podman.
        std::fs::write(&conf, "[storage\n").unwrap();
        assert!(graphroot(&[], Some(&conf)).is_err());
    }

    #[test]
    fn stored_layers_reads_every_driver_s_list_and_skips_what_it_cannot_read() {
        let d = tempfile::tempdir().unwrap();
        let g = d.path();
        std::fs::create_dir_all(g.join("overlay-layers")).unwrap();
        std::fs::create_dir_all(g.join("vfs-layers")).unwrap();
        std::fs::create_dir_all(g.join("overlay-images")).unwrap();
        std::fs::write(
            g.join("overlay-layers/layers.json"),
            r#"[{"id":"a","compressed-diff-digest":"sha256:aa","diff-size":3},{"id":"b"}]"#,
        )
        .unwrap();
        std::fs::write(g.join("overlay-layers/volatile-layers.json"), r#"[{"compressed-diff-digest":"sha256:cc"}]"#)
            .unwrap();
        std::fs::write(g.join("vfs-layers/layers.json"), "not json").unwrap();
        std::fs::write(g.join("overlay-images/layers.json"), r#"[{"compressed-diff-digest":"sha256:zz"}]"#).unwrap();
        let got = stored_layers(g);
        assert_eq!(got, ["sha256:aa", "sha256:cc"].iter().map(|x| x.to_string()).collect());
        assert!(stored_layers(&g.join("absent")).is_empty());
    }
}
