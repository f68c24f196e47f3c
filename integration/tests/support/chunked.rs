//! Hand-made zstd:chunked layers, laid out as containers/storage writes them
//! (every tar header and every file content in zstd frames of their own, the
//! TOC as a skippable frame near the end, then a footer frame), with extra
//! skippable frames between entries and file contents split over several
//! frames (bootc#2408: decoders that stop at the first frame). The TOC can be
//! edited before it is compressed and pinned by the annotations, to model an
//! image author whose TOC lies; and the image is uploaded to a registry with
//! the registry API (curl).

use std::io::Write;
use std::process::Command;

use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

use super::run;

const SKIPPABLE_MAGIC: [u8; 4] = [0x50, 0x2a, 0x4d, 0x18];

/// `sha256:<hex>` of `bytes`.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn frame(bytes: &[u8]) -> Vec<u8> {
    zstd::encode_all(bytes, 3).unwrap()
}

fn skippable(payload: &[u8]) -> Vec<u8> {
    let mut v = SKIPPABLE_MAGIC.to_vec();
    v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    v.extend_from_slice(payload);
    v
}

/// A zstd:chunked layer: its blob, the tar it decompresses to, and the
/// descriptor annotations that locate its TOC.
pub struct ChunkedLayer {
    pub blob: Vec<u8>,
    pub tar: Vec<u8>,
    pub annotations: Value,
}

/// Builds a layer of regular `files` (path, content, mode) plus a directory
/// `etc/`, with `edit_toc` applied to the TOC JSON before it is written.
pub fn chunked_layer(files: &[(&str, &[u8], u32)], edit_toc: impl FnOnce(&mut Value)) -> ChunkedLayer {
    let mut blob = Vec::new();
    let mut tar = Vec::new();
    let mut entries = vec![json!({"type": "dir", "name": "etc/", "mode": 0o755, "modtime": "2023-11-14T22:13:20Z"})];
    let mut dir = tar::Header::new_ustar();
    dir.set_path("etc/").unwrap();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_mode(0o755);
    dir.set_size(0);
    dir.set_mtime(1_700_000_000);
    dir.set_cksum();
    blob.extend(frame(dir.as_bytes()));
    tar.extend_from_slice(dir.as_bytes());
    for (i, (path, content, mode)) in files.iter().enumerate() {
        let mut h = tar::Header::new_ustar();
        h.set_path(path).unwrap();
        h.set_size(content.len() as u64);
        h.set_mode(*mode);
        h.set_mtime(1_700_000_000 + i as u64);
        h.set_cksum();
        blob.extend(frame(h.as_bytes()));
        blob.extend(skippable(b"between entries"));
        tar.extend_from_slice(h.as_bytes());
        let offset = blob.len();
        // The content in two frames with a skippable frame between them.
        let half = content.len() / 2;
        blob.extend(frame(&content[..half]));
        blob.extend(skippable(b"inside a file"));
        blob.extend(frame(&content[half..]));
        let end = blob.len();
        tar.extend_from_slice(content);
        let pad = (512 - content.len() % 512) % 512;
        blob.extend(frame(&vec![0u8; pad]));
        tar.extend(std::iter::repeat_n(0u8, pad));
        let when = time::OffsetDateTime::from_unix_timestamp(1_700_000_000 + i as i64).unwrap();
        entries.push(json!({
            "type": "reg", "name": path, "mode": mode, "size": content.len(),
            "modtime": when.format(&time::format_description::well_known::Rfc3339).unwrap(),
            "digest": sha256(content), "offset": offset, "endOffset": end,
        }));
    }
    blob.extend(frame(&[0u8; 1024]));
    tar.extend_from_slice(&[0u8; 1024]);
    let mut toc = json!({"version": 1, "entries": entries});
    edit_toc(&mut toc);
    let toc_json = serde_json::to_vec(&toc).unwrap();
    let toc_z = frame(&toc_json);
    let toc_offset = blob.len() + 8;
    blob.extend(skippable(&toc_z));
    let mut footer = Vec::new();
    for v in [toc_offset as u64, toc_z.len() as u64, toc_json.len() as u64, 1, 0, 0, 0] {
        footer.extend_from_slice(&v.to_le_bytes());
    }
    footer.extend_from_slice(b"GNUlInUx");
    blob.extend(skippable(&footer));
    let annotations = json!({
        "io.github.containers.zstd-chunked.manifest-checksum": sha256(&toc_z),
        "io.github.containers.zstd-chunked.manifest-position":
            format!("{toc_offset}:{}:{}:1", toc_z.len(), toc_json.len()),
    });
    ChunkedLayer { blob, tar, annotations }
}

/// Uploads a one-layer image (`tar+zstd`, with `annotations`) to
/// `host/repo:tag` over plain HTTP with the registry API.
pub fn upload(host: &str, repo: &str, tag: &str, layer: &ChunkedLayer, annotations: &Value) {
    upload_layers(host, repo, tag, &[(layer, annotations)]);
}

/// Uploads an image of `layers` (`tar+zstd`, each with its annotations; a
/// layer may be listed more than once) to `host/repo:tag` over plain HTTP
/// with the registry API.
pub fn upload_layers(host: &str, repo: &str, tag: &str, layers: &[(&ChunkedLayer, &Value)]) {
    let diff_ids: Vec<String> = layers.iter().map(|(l, _)| sha256(&l.tar)).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))
    .unwrap();
    upload_blob(host, repo, &config);
    for (layer, _) in layers {
        upload_blob(host, repo, &layer.blob);
    }
    let descriptors: Vec<Value> = layers
        .iter()
        .map(|(l, annotations)| {
            json!({ "mediaType": "application/vnd.oci.image.layer.v1.tar+zstd", "digest": sha256(&l.blob),
                    "size": l.blob.len(), "annotations": annotations })
        })
        .collect();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len() },
        "layers": descriptors,
    }))
    .unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    file.as_file().write_all(&manifest).unwrap();
    run(Command::new("curl")
        .args(["-sSf", "-X", "PUT", "-H", "Content-Type: application/vnd.oci.image.manifest.v1+json", "--data-binary"])
        .arg(format!("@{}", file.path().display()))
        .arg(format!("http://{host}/v2/{repo}/manifests/{tag}")));
}

fn upload_blob(host: &str, repo: &str, blob: &[u8]) {
    let file = tempfile::NamedTempFile::new().unwrap();
    file.as_file().write_all(blob).unwrap();
    super::images::upload_blob_file(host, repo, file.path(), &sha256(blob));
}
