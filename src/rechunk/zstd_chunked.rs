//! Writing a tar as a zstd:chunked blob (the format of containers/storage's
//! `pkg/chunked`, which hostctl's partial pulls read: [`crate::store::toc`]):
//! an ordinary `tar+zstd` stream in which every regular file's content is a
//! zstd frame of its own, so that a puller can fetch and check one file by a
//! byte range; then the table of contents (TOC: every entry's metadata, its
//! content digest and where its frame is) as zstd-compressed JSON in a
//! skippable frame; then a footer frame that points at the TOC. Any zstd
//! decoder reads the blob as the tar (skippable frames are skipped); the
//! layer descriptor's annotations locate the TOC and pin its digest.
//!
//! Two passes over a finished tar file, so nothing is held in memory but one
//! entry's metadata at a time and the TOC: the first reads the entries and
//! hashes each file's content; the second compresses the tar, cutting a
//! frame at the start and at the end of every file's content. The output
//! depends on the tar alone (fixed level, no checksums or sizes in frame
//! headers), so equal tars give equal blobs. Each file is one chunk: no
//! chunk entries (a partial pull then reuses whole files only).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

/// The zstd level of every frame.
const LEVEL: i32 = 3;
/// A skippable frame's magic number, little-endian.
const SKIPPABLE_MAGIC: [u8; 4] = [0x50, 0x2a, 0x4d, 0x18];
/// The footer's own magic, at its end.
const FOOTER_MAGIC: &[u8; 8] = b"GNUlInUx";
/// The TOC type containers/storage calls CRFS, the only one there is.
const TOC_TYPE: u64 = 1;
/// The annotation prefixes: podman 4.x reads the first, later releases the second.
const PREFIXES: [&str; 2] = ["io.containers.zstd-chunked.", "io.github.containers.zstd-chunked."];

/// A writer that counts what passes through it.
struct Counting<W> {
    inner: W,
    written: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Compresses `len` bytes of `from` as one zstd frame onto `out`; returns
/// the frame's range in the output.
fn frame<W: Write>(out: &mut Counting<W>, from: &mut impl Read, len: u64) -> Result<std::ops::Range<u64>> {
    let start = out.written;
    let mut enc = zstd::stream::write::Encoder::new(&mut *out, LEVEL)?;
    enc.include_checksum(false)?;
    enc.include_contentsize(false)?;
    let copied = io::copy(&mut from.take(len), &mut enc)?;
    if copied != len {
        bail!("the tar ended {} bytes early", len - copied);
    }
    enc.finish()?;
    Ok(start..out.written)
}

fn skippable<W: Write>(out: &mut Counting<W>, payload: &[u8]) -> Result<u64> {
    out.write_all(&SKIPPABLE_MAGIC)?;
    out.write_all(&u32::try_from(payload.len()).context("a skippable frame over 4 GiB")?.to_le_bytes())?;
    let at = out.written;
    out.write_all(payload)?;
    Ok(at)
}

/// One tar entry as the TOC will describe it, and where its content is in the tar.
struct Entry {
    toc: Value,
    /// The content's range in the tar (regular files with content only).
    content: Option<std::ops::Range<u64>>,
}

/// Reads the entries of the tar at `path`, hashing each file's content.
fn read_entries(path: &Path) -> Result<Vec<Entry>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut archive = tar::Archive::new(BufReader::new(file));
    let mut out = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let h = entry.header().clone();
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = match h.entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => "reg",
            tar::EntryType::Directory => "dir",
            tar::EntryType::Symlink => "symlink",
            tar::EntryType::Link => "hardlink",
            tar::EntryType::Char => "char",
            tar::EntryType::Block => "block",
            tar::EntryType::Fifo => "fifo",
            other => bail!("{name}: tar entry type {other:?} has no place in a zstd:chunked TOC"),
        };
        let mtime = i64::try_from(h.mtime()?).unwrap_or(i64::MAX);
        let modtime = jiff::Timestamp::from_second(mtime).with_context(|| format!("{name}: mtime {mtime}"))?;
        let mut toc = json!({
            "type": kind, "name": name, "mode": h.mode()?, "uid": h.uid()?, "gid": h.gid()?,
            "modtime": modtime.to_string(),
        });
        if let Some(link) = entry.link_name_bytes() {
            toc["linkName"] = json!(String::from_utf8_lossy(&link));
        }
        if matches!(kind, "char" | "block") {
            toc["devMajor"] = json!(h.device_major()?.unwrap_or(0));
            toc["devMinor"] = json!(h.device_minor()?.unwrap_or(0));
        }
        let mut xattrs = BTreeMap::new();
        if let Some(pax) = entry.pax_extensions()? {
            for ext in pax {
                let ext = ext?;
                if let Some(key) = ext.key_bytes().strip_prefix(b"SCHILY.xattr.") {
                    let value = base64::engine::general_purpose::STANDARD.encode(ext.value_bytes());
                    xattrs.insert(String::from_utf8_lossy(key).into_owned(), value);
                }
            }
        }
        if !xattrs.is_empty() {
            toc["xattrs"] = json!(xattrs);
        }
        let mut content = None;
        if kind == "reg" {
            let size = entry.size();
            toc["size"] = json!(size);
            if size > 0 {
                let start = entry.raw_file_position();
                let mut hasher = Sha256::new();
                let n = io::copy(&mut entry, &mut hasher)?;
                anyhow::ensure!(n == size, "{name}: {n} bytes of content, its header says {size}");
                let digest = format!("sha256:{}", hex::encode(hasher.finalize()));
                toc["digest"] = json!(digest);
                toc["chunkSize"] = json!(size);
                toc["chunkDigest"] = json!(digest);
                content = Some(start..start + size);
            }
        }
        out.push(Entry { toc, content });
    }
    Ok(out)
}

/// Writes the tar at `tar` to `out` as a zstd:chunked blob; returns `out`
/// and the annotations the layer descriptor must carry.
pub fn encode<W: Write>(tar: &Path, out: W) -> Result<(W, BTreeMap<String, String>)> {
    let mut entries = read_entries(tar)?;
    let mut file = File::open(tar).with_context(|| format!("opening {}", tar.display()))?;
    let tar_len = file.metadata()?.len();
    file.seek(SeekFrom::Start(0))?;
    let mut input = BufReader::new(file);
    let mut out = Counting { inner: out, written: 0 };
    let mut at = 0u64; // in the tar
    for e in &mut entries {
        let Some(content) = e.content.clone() else { continue };
        if content.start > at {
            frame(&mut out, &mut input, content.start - at)?;
        }
        let range = frame(&mut out, &mut input, content.end - content.start)?;
        e.toc["offset"] = json!(range.start);
        e.toc["endOffset"] = json!(range.end);
        at = content.end;
    }
    if tar_len > at {
        frame(&mut out, &mut input, tar_len - at)?;
    }
    let toc: Vec<Value> = entries.into_iter().map(|e| e.toc).collect();
    let toc_json = serde_json::to_vec(&json!({"version": 1, "entries": toc}))?;
    let toc_z = zstd::bulk::compress(&toc_json, LEVEL)?;
    let toc_offset = skippable(&mut out, &toc_z)?;
    let mut footer = Vec::with_capacity(64);
    for v in [toc_offset, toc_z.len() as u64, toc_json.len() as u64, TOC_TYPE, 0, 0, 0] {
        footer.extend_from_slice(&v.to_le_bytes());
    }
    footer.extend_from_slice(FOOTER_MAGIC);
    skippable(&mut out, &footer)?;
    let checksum = format!("sha256:{}", hex::encode(Sha256::digest(&toc_z)));
    let position = format!("{toc_offset}:{}:{}:{TOC_TYPE}", toc_z.len(), toc_json.len());
    let mut annotations = BTreeMap::new();
    for prefix in PREFIXES {
        annotations.insert(format!("{prefix}manifest-checksum"), checksum.clone());
        annotations.insert(format!("{prefix}manifest-position"), position.clone());
    }
    Ok((out.inner, annotations))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::toc;

    fn tar_of(files: &[(&str, &[u8])]) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        let mut b = tar::Builder::new(f.reopen().unwrap());
        let mut d = tar::Header::new_gnu();
        d.set_entry_type(tar::EntryType::Directory);
        d.set_mode(0o755);
        d.set_size(0);
        d.set_uid(0);
        d.set_gid(0);
        d.set_mtime(1_700_000_000);
        b.append_data(&mut d, "etc/", io::empty()).unwrap();
        for (path, content) in files {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            h.set_size(content.len() as u64);
            h.set_mtime(1_700_000_000);
            h.set_uid(1000);
            h.set_gid(1000);
            b.append_data(&mut h, path, *content).unwrap();
        }
        let mut l = tar::Header::new_gnu();
        l.set_entry_type(tar::EntryType::Link);
        l.set_size(0);
        l.set_mode(0o644);
        l.set_uid(0);
        l.set_gid(0);
        l.set_mtime(1_700_000_000);
        b.append_link(&mut l, "etc/again", "etc/a").unwrap();
        b.into_inner().unwrap().flush().unwrap();
        f
    }

    /// What hostctl's partial pull reads of the blob: the annotations find
    /// and pin the TOC, every file's range decompresses to its content, and
    /// the whole blob decompresses to the tar.
    #[test]
    fn the_blob_is_the_tar_and_its_toc_locates_every_file() {
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let files: [(&str, &[u8]); 4] =
            [("etc/a", b"alpha\n"), ("etc/empty", b""), ("usr/big", &big), ("etc/a-copy", b"alpha\n")];
        let tar = tar_of(&files);
        let (blob, annotations) = encode(tar.path(), Vec::new()).unwrap();
        assert_eq!(zstd::decode_all(blob.as_slice()).unwrap(), std::fs::read(tar.path()).unwrap());

        let map: std::collections::HashMap<String, String> = annotations.clone().into_iter().collect();
        let loc = toc::location(Some(&map), blob.len() as u64).unwrap().expect("the annotations locate a TOC");
        let range = loc.range();
        let compressed = &blob[range.start as usize..range.end as usize];
        assert_eq!(crate::digest::Digest::of(compressed), loc.digest);
        let parsed = toc::parse(compressed, loc.uncompressed).unwrap();
        let plan = toc::plan(&parsed, blob.len() as u64, &range).unwrap();
        assert_eq!(plan.entries.len(), 6, "etc/, four files, the hard link");
        for (path, content) in files.iter().filter(|(_, c)| !c.is_empty()) {
            let digest = crate::digest::Digest::of(content);
            let c = &plan.contents[&digest];
            let mut got = Vec::new();
            for r in c.ranges() {
                got.extend(zstd::decode_all(&blob[r.start as usize..r.end as usize]).unwrap());
            }
            assert_eq!(&got, content, "{path}");
        }
        let link = &parsed.entries.iter().find(|e| e.name == "etc/again").unwrap();
        assert_eq!((link.kind.as_str(), link.link_name.as_str()), ("hardlink", "etc/a"));
        // Equal tars give equal blobs.
        let again = encode(tar_of(&files).path(), Vec::new()).unwrap();
        assert_eq!((again.0, again.1), (blob, annotations));
    }
}
