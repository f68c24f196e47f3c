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
//!
//! Images: an image found by its full name (`registry/repository:tag`, as
//! podman records names) in the `DRIVER-images/images.json` lists
//! ([`stored_image`]). Not found there means absent only when nothing else
//! could hold it: a full name, lists that read, and no other image store
//! (no `imagestore`/`additionalimagestores` in the storage.conf that
//! decides, none in podman's options, no storage.conf drop-in directory);
//! else the lists do not tell and the caller asks podman.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

use super::podman::ImageInfo;

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
    let graphroot = podman_graphroot(global)?;
    let layers = stored_layers(&graphroot);
    let tmpdir = std::env::var_os("TMPDIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/tmp"));
    Ok(Storage { graphroot, tmpdir, layers })
}

/// The graph root of a podman run with options `global`, in this environment.
pub fn podman_graphroot(global: &[String]) -> Result<PathBuf> {
    let conf = std::env::var_os("CONTAINERS_STORAGE_CONF").map(PathBuf::from);
    graphroot(global, conf.as_deref())
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
    // The file that decides, with or without a graphroot in it.
    let Some(table) = storage_conf(conf)? else { return Ok(PathBuf::from(DEFAULT_GRAPHROOT)) };
    let root = table.get("storage").and_then(|s| s.get("graphroot")).and_then(|g| g.as_str());
    Ok(PathBuf::from(root.filter(|r| !r.is_empty()).unwrap_or(DEFAULT_GRAPHROOT)))
}

/// The storage.conf podman reads (`conf`, else the first of
/// [`STORAGE_CONFS`] found), parsed; `None` when there is none.
fn storage_conf(conf: Option<&Path>) -> Result<Option<toml::Table>> {
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
        return toml::from_str(&text).map(Some).with_context(|| format!("parsing {}", file.display()));
    }
    Ok(None)
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

/// One entry of containers/storage's `images.json`.
#[derive(Deserialize)]
struct ImageEntry {
    id: String,
    #[serde(default)]
    digest: String,
    #[serde(default)]
    digests: Vec<String>,
    #[serde(default)]
    names: Vec<String>,
}

/// What podman's image lists say of an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stored {
    /// Held, under that name.
    Found(ImageInfo),
    /// Not held under that name.
    Absent,
    /// The lists do not tell: ask podman.
    Unknown,
}

/// Whether podman with options `global` may keep images outside the graph
/// root's own lists (see the module's doc); `true` when that cannot be told.
pub fn other_image_stores(global: &[String], conf: Option<&Path>) -> bool {
    if global.iter().any(|a| a.contains("imagestore") || a.starts_with("--storage-opt")) {
        return true;
    }
    let drop_ins = ["/etc/containers/storage.conf.d", "/usr/share/containers/storage.conf.d"];
    if drop_ins.iter().any(|d| std::fs::read_dir(d).is_ok_and(|mut e| e.next().is_some())) {
        return true;
    }
    let table = match storage_conf(conf) {
        Ok(Some(table)) => table,
        Ok(None) => return false,
        Err(_) => return true,
    };
    let storage = table.get("storage");
    let set = |v: Option<&toml::Value>| match v {
        None => false,
        Some(toml::Value::String(s)) => !s.is_empty(),
        Some(toml::Value::Array(a)) => !a.is_empty(),
        Some(_) => true,
    };
    let options = storage.and_then(|s| s.get("options"));
    set(storage.and_then(|s| s.get("imagestore")))
        || set(options.and_then(|o| o.get("imagestore")))
        || set(options.and_then(|o| o.get("additionalimagestores")))
}

/// The name podman records for `reference`, when it can be told without
/// podman's short-name rules: a registry host first, a tag, no digest.
fn recorded_name(reference: &str) -> Option<String> {
    let (host, path) = reference.split_once('/')?;
    let is_host = host.contains('.') || host.contains(':') || host == "localhost";
    if !is_host || reference.contains('@') || host == "index.docker.io" {
        return None;
    }
    let last = path.rsplit('/').next()?;
    let tagged = if last.contains(':') { reference.to_string() } else { format!("{reference}:latest") };
    match (host, path.contains('/')) {
        ("docker.io", false) => Some(tagged.replacen("docker.io/", "docker.io/library/", 1)),
        _ => Some(tagged),
    }
}

/// What the image lists of podman's storage under `graphroot` say of the
/// image named `reference`; `only_store`: no other image store exists
/// ([`other_image_stores`]), so a name not found is absent.
pub fn stored_image(graphroot: &Path, reference: &str, only_store: bool) -> Stored {
    let Some(name) = recorded_name(reference) else { return Stored::Unknown };
    let Ok(dirs) = std::fs::read_dir(graphroot) else { return Stored::Unknown };
    let (mut found, mut lists) = (Vec::new(), 0);
    for entry in dirs.flatten() {
        if !entry.file_name().to_string_lossy().ends_with("-images") {
            continue;
        }
        let Ok(text) = std::fs::read(entry.path().join("images.json")) else { continue };
        let Ok(images) = serde_json::from_slice::<Vec<ImageEntry>>(&text) else { return Stored::Unknown };
        lists += 1;
        found.extend(images.into_iter().filter(|i| i.names.contains(&name)));
    }
    match <[ImageEntry; 1]>::try_from(found) {
        Ok([image]) => {
            let repo = name.rsplit_once(':').map_or(name.as_str(), |(r, _)| r);
            let repo_digests = image.digests.iter().map(|d| format!("{repo}@{d}")).collect();
            Stored::Found(ImageInfo {
                id: image.id,
                digest: image.digest,
                repo_tags: Some(image.names),
                repo_digests: Some(repo_digests),
            })
        }
        Err(found) if found.is_empty() && lists > 0 && only_store => Stored::Absent,
        // Two drivers' lists naming it (which one podman uses is not told
        // here), or no list at all.
        Err(_) => Stored::Unknown,
    }
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

    #[test]
    fn recorded_names_are_podman_s_full_names_or_none() {
        let cases = [
            ("10.0.2.100:5000/bench/web:stable", Some("10.0.2.100:5000/bench/web:stable")),
            ("quay.io/org/app", Some("quay.io/org/app:latest")),
            ("localhost/app:1", Some("localhost/app:1")),
            ("docker.io/nginx:1", Some("docker.io/library/nginx:1")),
            ("docker.io/org/app:1", Some("docker.io/org/app:1")),
            ("nginx:1", None),
            ("org/app:1", None),
            ("quay.io/org/app@sha256:aa", None),
            ("index.docker.io/nginx", None),
        ];
        for (reference, name) in cases {
            assert_eq!(recorded_name(reference).as_deref(), name, "{reference}");
        }
    }

    #[test]
    fn stored_image_is_found_by_its_full_name_and_absent_only_when_nothing_else_could_hold_it() {
        let d = tempfile::tempdir().unwrap();
        let g = d.path();
        assert_eq!(stored_image(g, "r.io/a/web:stable", true), Stored::Unknown, "no list yet");
        std::fs::create_dir_all(g.join("overlay-images")).unwrap();
        std::fs::write(
            g.join("overlay-images/images.json"),
            r#"[{"id":"i1","digest":"sha256:m1","digests":["sha256:m1","sha256:x1"],"names":["r.io/a/web:1","r.io/a/web:stable"],"layer":"l"},
               {"id":"i2","digest":"sha256:m2","names":["r.io/a/db:1"]}]"#,
        )
        .unwrap();
        let Stored::Found(web) = stored_image(g, "r.io/a/web:stable", true) else { panic!("web not found") };
        assert_eq!((web.id.as_str(), web.digest.as_str()), ("i1", "sha256:m1"));
        assert_eq!(web.digests(), ["sha256:m1", "sha256:x1"]);
        assert!(matches!(stored_image(g, "r.io/a/db:1", false), Stored::Found(i) if i.id == "i2"));
        assert_eq!(stored_image(g, "r.io/a/web:2", true), Stored::Absent);
        assert_eq!(stored_image(g, "r.io/a/web:2", false), Stored::Unknown, "another store may hold it");
        assert_eq!(stored_image(g, "web:stable", true), Stored::Unknown, "a short name is podman's to resolve");
        // Named in two drivers' lists: not told.
        std::fs::create_dir_all(g.join("vfs-images")).unwrap();
        std::fs::write(g.join("vfs-images/images.json"), r#"[{"id":"i3","names":["r.io/a/db:1"]}]"#).unwrap();
        assert_eq!(stored_image(g, "r.io/a/db:1", true), Stored::Unknown);
        // A list that is not podman's: not told.
        std::fs::write(g.join("vfs-images/images.json"), "not json").unwrap();
        assert_eq!(stored_image(g, "r.io/a/web:stable", true), Stored::Unknown);
        assert_eq!(stored_image(g, "r.io/a/web:2", true), Stored::Unknown);
        assert_eq!(stored_image(&g.join("absent"), "r.io/a/web:stable", true), Stored::Unknown);
    }

    #[test]
    fn other_image_stores_are_seen_in_options_and_in_the_storage_conf() {
        let d = tempfile::tempdir().unwrap();
        let conf = d.path().join("storage.conf");
        let drop_in = ["/etc/containers/storage.conf.d", "/usr/share/containers/storage.conf.d"]
            .iter()
            .any(|d| std::fs::read_dir(d).is_ok_and(|mut e| e.next().is_some()));
        std::fs::write(&conf, "[storage]\ndriver = \"overlay\"\n").unwrap();
        assert_eq!(other_image_stores(&[], Some(&conf)), drop_in);
        assert!(other_image_stores(&s(&["--storage-opt=overlay.imagestore=/x"]), Some(&conf)));
        // Debian's own file names them in comments only.
        std::fs::write(&conf, "[storage.options]\n#additionalimagestores = [\n#]\nadditionalimagestores = []\n")
            .unwrap();
        assert_eq!(other_image_stores(&[], Some(&conf)), drop_in);
        std::fs::write(&conf, "[storage.options]\nadditionalimagestores = [\"/ro\"]\n").unwrap();
        assert!(other_image_stores(&[], Some(&conf)));
        std::fs::write(&conf, "[storage]\nimagestore = \"/img\"\n").unwrap();
        assert!(other_image_stores(&[], Some(&conf)));
        std::fs::write(&conf, "[storage\n").unwrap();
        assert!(other_image_stores(&[], Some(&conf)), "unreadable: not told");
        assert_eq!(other_image_stores(&[], Some(&d.path().join("none"))), drop_in);
    }
}
