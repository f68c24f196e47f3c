//! Building test images with real tools: umoci assembles OCI layouts from
//! directory trees (one layer per change), skopeo pushes them to a registry.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::run;

/// Layer compression for a push, as skopeo spells it.
#[derive(Clone, Copy, Debug)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

/// An OCI layout directory holding one image tag built layer by layer with umoci.
pub struct Layout {
    pub dir: PathBuf,
    pub tag: String,
}

impl Layout {
    /// `umoci init` + `umoci new` in `dir` (created) for `tag`.
    pub fn new(dir: &Path, tag: &str) -> Layout {
        super::require_tool("umoci");
        let dir = dir.to_path_buf();
        if !dir.join("index.json").exists() {
            run(Command::new("umoci").arg("init").arg("--layout").arg(&dir));
        }
        run(Command::new("umoci").arg("new").arg("--image").arg(format!("{}:{tag}", dir.display())));
        Layout { dir, tag: tag.to_string() }
    }

    /// `oci:DIR:TAG`, for hostctl and skopeo.
    pub fn oci_ref(&self) -> String {
        format!("oci:{}:{}", self.dir.display(), self.tag)
    }

    /// Adds `tree` (a directory) as a new layer at `/`: `umoci unpack`, copy the
    /// tree over the bundle's rootfs, `umoci repack` (which writes the diff).
    /// Not `umoci insert`: umoci 0.4.7's insert writes a truncated tar (no
    /// padding, no end-of-archive blocks) that GNU tar and Python reject too.
    pub fn add_layer(&self, tree: &Path) -> &Self {
        self.change_rootfs(|rootfs| {
            run(Command::new("cp").arg("-a").arg(format!("{}/.", tree.display())).arg(rootfs));
        })
    }

    /// Adds a layer that deletes `path` (umoci writes a `.wh.` whiteout for it).
    pub fn add_whiteout(&self, path: &str) -> &Self {
        let path = path.trim_start_matches('/').to_string();
        self.change_rootfs(move |rootfs| {
            let p = rootfs.join(&path);
            if p.is_dir() {
                std::fs::remove_dir_all(&p).unwrap();
            } else {
                std::fs::remove_file(&p).unwrap();
            }
        })
    }

    /// Unpacks the image, lets `change` edit its rootfs, and repacks the
    /// difference as a new layer.
    pub fn change_rootfs(&self, change: impl FnOnce(&Path)) -> &Self {
        let bundle = tempfile::tempdir().unwrap();
        let bundle_dir = bundle.path().join("bundle");
        let image = format!("{}:{}", self.dir.display(), self.tag);
        run(Command::new("umoci").args(["unpack", "--image", &image]).arg(&bundle_dir));
        change(&bundle_dir.join("rootfs"));
        run(Command::new("umoci").args(["repack", "--image", &image]).arg(&bundle_dir));
        self
    }

    /// Sets a config label (`umoci config --config.label`).
    pub fn label(&self, key: &str, value: &str) -> &Self {
        run(Command::new("umoci")
            .arg("config")
            .arg("--image")
            .arg(format!("{}:{}", self.dir.display(), self.tag))
            .arg(format!("--config.label={key}={value}")));
        self
    }

    /// Lists the last layer again at the end of the image, as buildah writes
    /// two steps with identical diffs: the manifest repeats its descriptor,
    /// the config its diff_id and history entry; the new config, manifest
    /// and index.json entry get their digests fixed.
    pub fn repeat_last_layer(&self) -> &Self {
        let mut index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(self.dir.join("index.json")).unwrap()).unwrap();
        let entry = index["manifests"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == self.tag.as_str())
            .expect("the tag in index.json");
        let mut manifest = self.read_blob(entry["digest"].as_str().unwrap());
        let mut config = self.read_blob(manifest["config"]["digest"].as_str().unwrap());
        let layers = manifest["layers"].as_array_mut().unwrap();
        layers.push(layers.last().expect("a layer to repeat").clone());
        let diff_ids = config["rootfs"]["diff_ids"].as_array_mut().unwrap();
        diff_ids.push(diff_ids.last().unwrap().clone());
        if let Some(history) = config["history"].as_array_mut() {
            let last = history.iter().rev().find(|h| h["empty_layer"] != true).expect("a layer's history").clone();
            history.push(last);
        }
        let (digest, size) = self.write_blob(&config);
        manifest["config"]["digest"] = digest.into();
        manifest["config"]["size"] = size.into();
        let (digest, size) = self.write_blob(&manifest);
        entry["digest"] = digest.into();
        entry["size"] = size.into();
        std::fs::write(self.dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        self
    }

    fn read_blob(&self, digest: &str) -> serde_json::Value {
        let path = self.dir.join("blobs/sha256").join(digest.trim_start_matches("sha256:"));
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    /// Writes `value` as a blob; returns its digest and size.
    fn write_blob(&self, value: &serde_json::Value) -> (String, usize) {
        use sha2::{Digest as _, Sha256};
        let bytes = serde_json::to_vec(value).unwrap();
        let hex = hex::encode(Sha256::digest(&bytes));
        std::fs::write(self.dir.join("blobs/sha256").join(&hex), &bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    }

    /// Pushes to `dest` (`127.0.0.1:PORT/repo:tag`) over plain HTTP with skopeo,
    /// recompressing layers as asked.
    pub fn push(&self, dest: &str, compression: Compression) {
        push_with_skopeo(&self.oci_ref(), dest, compression, &[]);
    }
}

/// Pushes `src` to `docker://DEST` (plain HTTP) with the layer compression asked for.
///
/// gzip and zstd go through `skopeo copy --dest-compress-format`. Uncompressed
/// layers cannot be pushed by skopeo 1.9 (`--dest-decompress` only applies to
/// `dir:`), nor by buildah 1.28 (`--disable-compression` still sent gzip here),
/// so skopeo decompresses into a `dir:` copy, which is then uploaded with the
/// registry API (monolithic blob uploads and a manifest PUT, via curl).
pub fn push_with_skopeo(src: &str, dest: &str, compression: Compression, extra: &[&str]) {
    super::require_tool("skopeo");
    if let Compression::None = compression {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("image");
        let mut cmd = Command::new("skopeo");
        cmd.args(["copy", "--quiet", "--dest-decompress"]).args(extra).arg(src).arg(format!("dir:{}", copy.display()));
        run(&mut cmd);
        upload_dir(&copy, dest);
        return;
    }
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
    match compression {
        Compression::Gzip => cmd.args(["--dest-compress-format", "gzip"]),
        Compression::Zstd => cmd.args(["--dest-compress-format", "zstd"]),
        Compression::None => unreachable!(),
    };
    cmd.args(extra).arg(src).arg(format!("docker://{dest}"));
    run(&mut cmd);
}

/// Uploads a skopeo `dir:` copy to `DEST` (`HOST:PORT/REPO:TAG`) over plain HTTP.
fn upload_dir(dir: &Path, dest: &str) {
    let (host, rest) = dest.split_once('/').expect("HOST:PORT/REPO:TAG");
    let (repo, tag) = rest.rsplit_once(':').expect("a tag");
    let manifest = std::fs::read(dir.join("manifest.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let mut blobs = vec![parsed["config"]["digest"].as_str().unwrap().to_string()];
    blobs.extend(parsed["layers"].as_array().unwrap().iter().map(|l| l["digest"].as_str().unwrap().to_string()));
    for digest in blobs {
        upload_blob_file(host, repo, &dir.join(digest.trim_start_matches("sha256:")), &digest);
    }
    let media_type = parsed["mediaType"].as_str().unwrap_or("application/vnd.oci.image.manifest.v1+json");
    run(Command::new("curl")
        .args(["-sSf", "-X", "PUT", "-H"])
        .arg(format!("Content-Type: {media_type}"))
        .arg("--data-binary")
        .arg(format!("@{}", dir.join("manifest.json").display()))
        .arg(format!("http://{host}/v2/{repo}/manifests/{tag}")));
}

/// Uploads the blob in `file`, whose digest is `digest`, to `repo` on the
/// registry at `host` (plain HTTP): a POST for the upload session, then one PUT.
pub fn upload_blob_file(host: &str, repo: &str, file: &Path, digest: &str) {
    let out = run(Command::new("curl")
        .args(["-sSf", "-X", "POST", "-D", "-", "-o", "/dev/null"])
        .arg(format!("http://{host}/v2/{repo}/blobs/uploads/")));
    let headers = String::from_utf8_lossy(&out.stdout);
    let location = headers
        .lines()
        .find_map(|l| l.strip_prefix("Location: ").or_else(|| l.strip_prefix("location: ")))
        .expect("upload location")
        .trim()
        .to_string();
    let url = if location.starts_with("http") { location } else { format!("http://{host}{location}") };
    let sep = if url.contains('?') { '&' } else { '?' };
    run(Command::new("curl")
        .args(["-sSf", "-X", "PUT", "-H", "Content-Type: application/octet-stream", "--data-binary"])
        .arg(format!("@{}", file.display()))
        .arg(format!("{url}{sep}digest={digest}")));
}

/// Writes `files` (relative path → content) under `root`, creating directories.
pub fn write_tree(root: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
}

/// Writes an OCI layout at `layout` holding one image of one uncompressed
/// layer made of `files` (path, content, mode), labelled with `version`, and
/// pushes it with skopeo to `dest` (`HOST/REPO:TAG`, plain HTTP). Returns the
/// manifest digest, which `--preserve-digests` keeps in the registry.
pub fn push_one_layer(layout: &Path, dest: &str, version: &str, files: &[(&str, &str, u32)]) -> String {
    use sha2::{Digest as _, Sha256};
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |bytes: &[u8]| -> (String, usize) {
        let hex = hex::encode(Sha256::digest(bytes));
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let mut tar = tar::Builder::new(Vec::new());
    for (path, content, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(*mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        tar.append_data(&mut h, path, content.as_bytes()).unwrap();
    }
    let (layer_digest, layer_size) = put(&tar.into_inner().unwrap());
    let config = serde_json::json!({
        "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        "os": "linux",
        "config": {"Labels": {"org.opencontainers.image.version": version}},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]}
    });
    let (config_digest, config_size) = put(&serde_json::to_vec(&config).unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}]
    });
    let (m_digest, m_size) = put(&serde_json::to_vec(&manifest).unwrap());
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m_digest, "size": m_size,
        "annotations": {"org.opencontainers.image.ref.name": "t"}}]});
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    run(Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false", "--preserve-digests"])
        .arg(format!("oci:{}:t", layout.display()))
        .arg(format!("docker://{dest}")));
    m_digest
}
