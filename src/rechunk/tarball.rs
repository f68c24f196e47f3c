//! Writing one layer of a rechunked image: a tar of the given tree nodes in
//! the order given, compressed with fixed settings, streamed to a file while
//! both digests (the blob's and the tar's, its diff_id) are computed. File
//! contents are read from the store's objects one at a time: no layer is
//! held in memory.
//!
//! Every header is written the same way whatever produced the source image:
//! numeric owners only (no user or group names), mtimes clamped to the
//! image's time, GNU long names for long paths, extended attributes as PAX
//! `SCHILY.xattr.` records. A file whose object already appeared in the same
//! layer is written as a hard link to its first path (a hard link never
//! crosses layers).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use anyhow::{Context, Result};

use crate::deploy::tree::{Node, NodeKind};
use crate::digest::{Digest, HashingWriter};
use crate::store::{ObjectId, Store};

/// How layers are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Compression {
    /// gzip, level 6 (every OCI tool reads it).
    Gzip,
    /// zstd, level 3, one frame, no checksum.
    Zstd,
    /// zstd:chunked: zstd, level 3, every file's content a frame of its own,
    /// with a table of contents, so that pulls fetch only the files they lack
    /// ([`super::zstd_chunked`]).
    #[value(name = "zstd:chunked")]
    ZstdChunked,
}

impl Compression {
    /// The OCI media type of a layer compressed this way.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd | Compression::ZstdChunked => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// A written layer.
#[derive(Clone, Debug)]
pub struct WrittenLayer {
    /// The compressed blob's digest.
    pub blob_digest: Digest,
    /// Its size.
    pub size: u64,
    /// The tar's digest (`rootfs.diff_ids`).
    pub diff_id: Digest,
    /// The tar's size.
    pub tar_size: u64,
    /// The annotations its descriptor must carry (zstd:chunked: where its TOC is).
    pub annotations: BTreeMap<String, String>,
}

/// One PAX record: `LEN key=value\n`, where LEN counts the whole record.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + body.to_string().len();
    if len.to_string().len() != body.to_string().len() {
        len += 1;
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// Writes the nodes `entries` (path, node) as one layer to `out`.
pub fn write_layer(
    store: &Store,
    entries: &[(&str, &Node)],
    clamp: i64,
    compression: Compression,
    out: &Path,
) -> Result<WrittenLayer> {
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let blob = HashingWriter::new(io::BufWriter::new(file));
    let mut annotations = BTreeMap::new();
    let (blob, diff_id, tar_size) = match compression {
        Compression::Gzip => {
            let enc = flate2::GzBuilder::new().mtime(0).write(blob, flate2::Compression::new(6));
            let (enc, diff_id, tar_size) = write_tar(store, entries, clamp, enc)?;
            (enc.finish()?, diff_id, tar_size)
        }
        Compression::Zstd => {
            let mut enc = zstd::Encoder::new(blob, 3)?;
            enc.include_checksum(false)?;
            enc.include_contentsize(false)?;
            let (enc, diff_id, tar_size) = write_tar(store, entries, clamp, enc)?;
            (enc.finish()?, diff_id, tar_size)
        }
        Compression::ZstdChunked => {
            // The tar first (plain, beside the blob), then its frames and TOC.
            let tar_path = out.with_extension("tar");
            let tar = File::create(&tar_path).with_context(|| format!("creating {}", tar_path.display()))?;
            let (tar, diff_id, tar_size) = write_tar(store, entries, clamp, io::BufWriter::new(tar))?;
            tar.into_inner().map_err(|e| e.into_error())?;
            let encoded = super::zstd_chunked::encode(&tar_path, blob);
            std::fs::remove_file(&tar_path).with_context(|| format!("removing {}", tar_path.display()))?;
            let (blob, a) = encoded.context("writing the zstd:chunked blob")?;
            annotations = a;
            (blob, diff_id, tar_size)
        }
    };
    let (blob_digest, size, mut buf) = blob.finish();
    buf.flush()?;
    let file = buf.into_inner().map_err(|e| e.into_error())?;
    file.sync_all().with_context(|| format!("syncing {}", out.display()))?;
    Ok(WrittenLayer { blob_digest, size, diff_id, tar_size, annotations })
}

fn write_tar<W: Write>(store: &Store, entries: &[(&str, &Node)], clamp: i64, out: W) -> Result<(W, Digest, u64)> {
    let mut tar = tar::Builder::new(HashingWriter::new(out));
    let mut first_path: HashMap<&ObjectId, &str> = HashMap::new();
    for (path, node) in entries {
        append(&mut tar, store, path, node, clamp, &mut first_path).with_context(|| format!("writing {path}"))?;
    }
    let (diff_id, tar_size, out) = tar.into_inner()?.finish();
    Ok((out, diff_id, tar_size))
}

fn append<'a, W: Write>(
    tar: &mut tar::Builder<W>,
    store: &Store,
    path: &'a str,
    node: &'a Node,
    clamp: i64,
    first_path: &mut HashMap<&'a ObjectId, &'a str>,
) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_mode(node.meta.mode & 0o7777);
    h.set_uid(u64::from(node.meta.uid));
    h.set_gid(u64::from(node.meta.gid));
    h.set_mtime(node.meta.mtime.clamp(0, clamp.max(0)) as u64);
    h.set_size(0);
    if !node.meta.xattrs.is_empty() {
        let mut records = Vec::new();
        for (name, hex_value) in &node.meta.xattrs {
            let value = hex::decode(hex_value).with_context(|| format!("xattr {name} of {path}"))?;
            records.extend(pax_record(&format!("SCHILY.xattr.{name}"), &value));
        }
        let mut x = tar::Header::new_ustar();
        x.set_entry_type(tar::EntryType::XHeader);
        x.set_mode(0o644);
        x.set_mtime(0);
        x.set_size(records.len() as u64);
        x.set_path("PaxHeaders/xattrs")?;
        x.set_cksum();
        tar.append(&x, records.as_slice())?;
    }
    match &node.kind {
        NodeKind::Dir(_) => {
            h.set_entry_type(tar::EntryType::Directory);
            tar.append_data(&mut h, format!("{path}/"), io::empty())?;
        }
        NodeKind::File { object, size } => {
            if let Some(first) = first_path.get(object) {
                h.set_entry_type(tar::EntryType::Link);
                tar.append_link(&mut h, path, first)?;
                return Ok(());
            }
            first_path.insert(object, path);
            let opath = store.object_path(object);
            let f = File::open(&opath).with_context(|| format!("opening object {}", opath.display()))?;
            let len = f.metadata()?.len();
            anyhow::ensure!(len == *size, "object {object} holds {len} bytes, the layer says {size}");
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(*size);
            tar.append_data(&mut h, path, f)?;
        }
        NodeKind::Symlink { target } => {
            h.set_entry_type(tar::EntryType::Symlink);
            tar.append_link(&mut h, path, target)?;
        }
        NodeKind::CharDevice { major, minor } | NodeKind::BlockDevice { major, minor } => {
            let kind = if matches!(node.kind, NodeKind::CharDevice { .. }) {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            };
            h.set_entry_type(kind);
            h.set_device_major(*major)?;
            h.set_device_minor(*minor)?;
            tar.append_data(&mut h, path, io::empty())?;
        }
        NodeKind::Fifo => {
            h.set_entry_type(tar::EntryType::Fifo);
            tar.append_data(&mut h, path, io::empty())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_records_count_their_own_length() {
        // The examples of POSIX pax: "30 mtime=1350244992.023960108\n" is 30 bytes.
        assert_eq!(pax_record("mtime", b"1350244992.023960108"), b"30 mtime=1350244992.023960108\n");
        for n in 0..300 {
            let r = pax_record("k", &vec![b'v'; n]);
            let len: usize =
                std::str::from_utf8(&r[..r.iter().position(|b| *b == b' ').unwrap()]).unwrap().parse().unwrap();
            assert_eq!(len, r.len(), "value of {n} bytes");
        }
    }
}
