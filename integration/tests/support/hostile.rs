//! Hand-built layers and OCI layouts: tars no well-behaved tool writes
//! (escapes, writes through symlinks), big random-content layers, and an OCI
//! image layout assembled byte by byte so that nothing normalises them before
//! hostctl sees them. Push the layout with `images::push_with_skopeo`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// Layer compression of a hand-built layout.
#[derive(Clone, Copy, Debug)]
pub enum LayerCompression {
    Gzip,
    Plain,
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn write_blob(dir: &Path, bytes: &[u8]) -> String {
    let hex = sha256_hex(bytes);
    let blobs = dir.join("blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    fs::write(blobs.join(&hex), bytes).unwrap();
    format!("sha256:{hex}")
}

/// Writes an OCI image layout at `dir` with one image tagged `tag` whose layers
/// are `tars` (uncompressed tar streams), compressed as asked. Returns the
/// layers' compressed digests.
pub fn hand_layout(dir: &Path, tag: &str, tars: &[Vec<u8>], compression: LayerCompression) -> Vec<String> {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for tar in tars {
        diff_ids.push(format!("sha256:{}", sha256_hex(tar)));
        let (blob, media_type) = match compression {
            LayerCompression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(tar).unwrap();
                (e.finish().unwrap(), "application/vnd.oci.image.layer.v1.tar+gzip")
            }
            LayerCompression::Plain => (tar.clone(), "application/vnd.oci.image.layer.v1.tar"),
        };
        let digest = write_blob(dir, &blob);
        layers.push(serde_json::json!({ "mediaType": media_type, "digest": digest, "size": blob.len() }));
    }
    finish_layout(dir, tag, &layers, &diff_ids);
    layers.iter().map(|l| l["digest"].as_str().unwrap().to_string()).collect()
}

/// Like [`hand_layout`] with uncompressed layers read from files, streamed
/// (for layers too big to hold in memory). Returns the layers' digests.
pub fn hand_layout_from_files(dir: &Path, tag: &str, tars: &[&Path]) -> Vec<String> {
    fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
    fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for tar in tars {
        let mut h = Sha256::new();
        let mut f = fs::File::open(tar).unwrap();
        let size = std::io::copy(&mut f, &mut h).unwrap();
        let digest = format!("sha256:{}", hex::encode(h.finalize()));
        fs::copy(tar, dir.join("blobs/sha256").join(&digest[7..])).unwrap();
        diff_ids.push(digest.clone());
        layers.push(serde_json::json!({ "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest, "size": size }));
    }
    finish_layout(dir, tag, &layers, &diff_ids);
    diff_ids
}

fn finish_layout(dir: &Path, tag: &str, layers: &[serde_json::Value], diff_ids: &[String]) {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))
    .unwrap();
    let config_digest = write_blob(dir, &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len() },
        "layers": layers,
    }))
    .unwrap();
    let manifest_digest = write_blob(dir, &manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest.len(),
            "annotations": { "org.opencontainers.image.ref.name": tag },
        }],
    });
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
}

/// `oci:DIR:TAG`.
pub fn oci_ref(dir: &Path, tag: &str) -> String {
    format!("oci:{}:{tag}", dir.display())
}

/// A GNU tar header for `path` (written raw: no path checks, no cleaning;
/// root-owned, mode 755 for directories, else 644).
pub fn raw_header(kind: tar::EntryType, path: &str, link: &str, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(if kind == tar::EntryType::Directory { 0o755 } else { 0o644 });
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    let old = h.as_old_mut();
    old.name[..path.len()].copy_from_slice(path.as_bytes());
    old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_cksum();
    h
}

/// A tar of `(path, content)` regular files, names written raw.
pub fn files_tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, content) in files {
        b.append(&raw_header(tar::EntryType::Regular, path, "", content.len() as u64), *content).unwrap();
    }
    b.into_inner().unwrap()
}

/// A layer that tries to plant `etc/cron.d/evil` on the host through a symlink.
pub fn write_through_symlink_tar() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    b.append(&raw_header(tar::EntryType::Symlink, "etc", "/etc", 0), &[][..]).unwrap();
    let evil = b"* * * * * root sh -c 'id > /tmp/pwned'\n";
    b.append(&raw_header(tar::EntryType::Regular, "etc/cron.d/evil", "", evil.len() as u64), &evil[..]).unwrap();
    b.into_inner().unwrap()
}

/// A layer that climbs out of the root with `..`.
pub fn dotdot_escape_tar() -> Vec<u8> {
    files_tar(&[("usr/share/doc/readme", b"fine"), ("usr/../../../../tmp/escaped", b"evil")])
}

/// Writes a tar of `files` files of `file_size` pseudo-random bytes each to
/// `path` without holding it in memory; returns the path.
pub fn random_tar_file(path: &Path, files: usize, file_size: u64, seed: u64) -> PathBuf {
    let out = fs::File::create(path).unwrap();
    let mut b = tar::Builder::new(std::io::BufWriter::new(out));
    for i in 0..files {
        let h = raw_header(tar::EntryType::Regular, &format!("data/random-{i}"), "", file_size);
        b.append(&h, XorShift::new(seed + i as u64).take_bytes(file_size)).unwrap();
    }
    b.into_inner().unwrap().flush().unwrap();
    path.to_path_buf()
}

/// A small, fast pseudo-random byte stream (incompressible test data).
pub struct XorShift {
    state: u64,
    left: u64,
}

impl XorShift {
    pub fn new(seed: u64) -> Self {
        XorShift { state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1, left: u64::MAX }
    }
    fn take_bytes(mut self, n: u64) -> Self {
        self.left = n;
        self
    }
}

impl std::io::Read for XorShift {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.left) as usize / 8 * 8;
        let n = if n == 0 { (buf.len() as u64).min(self.left) as usize } else { n };
        for chunk in buf[..n].chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            let bytes = self.state.to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}
