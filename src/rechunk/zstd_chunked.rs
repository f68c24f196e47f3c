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
//! headers), so equal tars give equal blobs.
//!
//! Files larger than [`CHUNK_MIN`] are cut into chunks where their content
//! says (a gear rolling hash: a cut where its top bits are zero, so about
//! every [`CHUNK_AVG`] bytes, none shorter than [`CHUNK_MIN`] nor longer than
//! [`CHUNK_MAX`]), each in its own frame with its own `chunk` TOC entry and
//! sha256, as containers/storage does: an edit to one part of a large file
//! leaves its other chunks' digests as they were, and a partial pull copies
//! those from the file it already has ([`crate::store::chunks`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::digest::{CountingWriter, Digest, Hasher};

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
/// No chunk is shorter (but a file's last), and files up to this size are one chunk.
pub const CHUNK_MIN: u64 = 16 << 10;
/// About how long chunks are.
pub const CHUNK_AVG: u64 = 64 << 10;
/// No chunk is longer.
pub const CHUNK_MAX: u64 = 256 << 10;

/// The gear hash's table: 256 fixed pseudo-random words (splitmix64 from 0).
fn gear() -> &'static [u64; 256] {
    static TABLE: std::sync::OnceLock<[u64; 256]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let mut t = [0u64; 256];
        let mut x: u64 = 0;
        for v in &mut t {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            *v = z ^ (z >> 31);
        }
        t
    })
}

/// One chunk of a file: where it starts in the file, its size and sha256.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Chunk {
    offset: u64,
    size: u64,
    digest: Digest,
}

/// Cuts a stream of content into chunks as it is fed.
struct Chunker {
    hash: u64,
    start: u64,
    at: u64,
    sha: Hasher,
    chunks: Vec<Chunk>,
}

impl Chunker {
    fn new() -> Self {
        Chunker { hash: 0, start: 0, at: 0, sha: Hasher::new(), chunks: Vec::new() }
    }

    fn cut(&mut self) {
        let (digest, _) = std::mem::take(&mut self.sha).finish();
        self.chunks.push(Chunk { offset: self.start, size: self.at - self.start, digest });
        self.start = self.at;
        self.hash = 0;
    }

    fn feed(&mut self, mut buf: &[u8]) {
        // The top bits: each depends on the last 64 bytes (the low ones on fewer).
        let (gear, mask) = (gear(), (CHUNK_AVG - 1) << (64 - CHUNK_AVG.trailing_zeros()));
        while !buf.is_empty() {
            let mut n = 0;
            let mut cut = false;
            for &b in buf {
                n += 1;
                self.hash = (self.hash << 1).wrapping_add(gear[b as usize]);
                let len = self.at + n as u64 - self.start;
                if (len >= CHUNK_MIN && self.hash & mask == 0) || len >= CHUNK_MAX {
                    cut = true;
                    break;
                }
            }
            self.sha.update(&buf[..n]);
            self.at += n as u64;
            buf = &buf[n..];
            if cut {
                self.cut();
            }
        }
    }

    fn finish(mut self) -> Vec<Chunk> {
        if self.at > self.start || self.chunks.is_empty() {
            self.cut();
        }
        self.chunks
    }
}

impl Write for Chunker {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.feed(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Compresses `len` bytes of `from` as one zstd frame onto `out`; returns
/// the frame's range in the output.
fn frame<W: Write>(out: &mut CountingWriter<W>, from: &mut impl Read, len: u64) -> Result<std::ops::Range<u64>> {
    let start = out.count();
    let mut enc = zstd::stream::write::Encoder::new(&mut *out, LEVEL)?;
    enc.include_checksum(false)?;
    enc.include_contentsize(false)?;
    let copied = io::copy(&mut from.take(len), &mut enc)?;
    if copied != len {
        bail!("the tar ended {} bytes early", len - copied);
    }
    enc.finish()?;
    Ok(start..out.count())
}

fn skippable<W: Write>(out: &mut CountingWriter<W>, payload: &[u8]) -> Result<u64> {
    out.write_all(&SKIPPABLE_MAGIC)?;
    out.write_all(&u32::try_from(payload.len()).context("a skippable frame over 4 GiB")?.to_le_bytes())?;
    let at = out.count();
    out.write_all(payload)?;
    Ok(at)
}

/// One tar entry as the TOC will describe it, and where its content is in the tar.
struct Entry {
    toc: Value,
    /// Where the content starts in the tar, and its chunks (regular files
    /// with content only).
    content: Option<(u64, Vec<Chunk>)>,
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
                let mut hasher = Hasher::new();
                let mut chunker = Chunker::new();
                let mut buf = vec![0u8; 128 << 10];
                loop {
                    let got = entry.read(&mut buf)?;
                    if got == 0 {
                        break;
                    }
                    hasher.update(&buf[..got]);
                    if size > CHUNK_MIN {
                        chunker.feed(&buf[..got]);
                    }
                }
                let (digest, n) = hasher.finish();
                anyhow::ensure!(n == size, "{name}: {n} bytes of content, its header says {size}");
                let chunks = if size > CHUNK_MIN {
                    chunker.finish()
                } else {
                    vec![Chunk { offset: 0, size, digest: digest.clone() }]
                };
                toc["digest"] = json!(digest);
                toc["chunkSize"] = json!(chunks[0].size);
                toc["chunkDigest"] = json!(chunks[0].digest);
                content = Some((start, chunks));
            }
        }
        out.push(Entry { toc, content });
    }
    Ok(out)
}

/// Writes the tar at `tar` to `out` as a zstd:chunked blob; returns `out`
/// and the annotations the layer descriptor must carry.
pub fn encode<W: Write>(tar: &Path, out: W) -> Result<(W, BTreeMap<String, String>)> {
    let entries = read_entries(tar)?;
    let mut file = File::open(tar).with_context(|| format!("opening {}", tar.display()))?;
    let tar_len = file.metadata()?.len();
    file.seek(SeekFrom::Start(0))?;
    let mut input = BufReader::new(file);
    let mut out = CountingWriter::new(out);
    let mut at = 0u64; // in the tar
    let mut toc: Vec<Value> = Vec::with_capacity(entries.len());
    for e in entries {
        let mut entry = e.toc;
        let Some((start, chunks)) = e.content else {
            toc.push(entry);
            continue;
        };
        if start > at {
            frame(&mut out, &mut input, start - at)?;
        }
        let name = entry["name"].clone();
        let size = entry["size"].clone();
        let mut more = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let range = frame(&mut out, &mut input, c.size)?;
            if i == 0 {
                entry["offset"] = json!(range.start);
                entry["endOffset"] = json!(range.end);
            } else {
                more.push(json!({
                    "type": "chunk", "name": name, "size": size, "offset": range.start, "endOffset": range.end,
                    "chunkOffset": c.offset, "chunkSize": c.size, "chunkDigest": c.digest,
                }));
            }
        }
        at = start + chunks.iter().map(|c| c.size).sum::<u64>();
        toc.push(entry);
        toc.extend(more);
    }
    if tar_len > at {
        frame(&mut out, &mut input, tar_len - at)?;
    }
    let toc_json = serde_json::to_vec(&json!({"version": 1, "entries": toc}))?;
    let toc_z = zstd::bulk::compress(&toc_json, LEVEL)?;
    let toc_offset = skippable(&mut out, &toc_z)?;
    let mut footer = Vec::with_capacity(64);
    for v in [toc_offset, toc_z.len() as u64, toc_json.len() as u64, TOC_TYPE, 0, 0, 0] {
        footer.extend_from_slice(&v.to_le_bytes());
    }
    footer.extend_from_slice(FOOTER_MAGIC);
    skippable(&mut out, &footer)?;
    let checksum = Digest::of(&toc_z).to_string();
    let position = format!("{toc_offset}:{}:{}:{TOC_TYPE}", toc_z.len(), toc_json.len());
    let mut annotations = BTreeMap::new();
    for prefix in PREFIXES {
        annotations.insert(format!("{prefix}manifest-checksum"), checksum.clone());
        annotations.insert(format!("{prefix}manifest-position"), position.clone());
    }
    Ok((out.into_inner(), annotations))
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

    fn chunks_of(data: &[u8]) -> Vec<Chunk> {
        let mut c = Chunker::new();
        // Fed in odd pieces: where the cuts fall must not depend on them.
        for piece in data.chunks(7919) {
            c.feed(piece);
        }
        c.finish()
    }

    /// Cuts depend on the content only: they tile the data, respect the
    /// bounds, and an append or an edit in the middle leaves the chunks
    /// before it (and, after an edit, those a little after it) unchanged.
    #[test]
    fn chunks_are_cut_where_the_content_says() {
        let data = crate::util::noise(3 << 20, 7);
        let a = chunks_of(&data);
        assert_eq!(a.iter().map(|c| c.size).sum::<u64>(), data.len() as u64);
        assert!(a.windows(2).all(|w| w[0].offset + w[0].size == w[1].offset));
        assert!(a[..a.len() - 1].iter().all(|c| (CHUNK_MIN..=CHUNK_MAX).contains(&c.size)), "{a:?}");
        let avg = data.len() as u64 / a.len() as u64;
        assert!((CHUNK_AVG / 2..=CHUNK_AVG * 2).contains(&avg), "average chunk {avg} bytes");
        assert_eq!(a[0].digest, Digest::of(&data[..a[0].size as usize]));

        let mut appended = data.clone();
        appended.extend_from_slice(b"one more line\n");
        let b = chunks_of(&appended);
        assert_eq!(&b[..a.len() - 1], &a[..a.len() - 1], "an append changes the last chunk only");

        let mut edited = data.clone();
        edited[1 << 20] ^= 0xff;
        let e = chunks_of(&edited);
        let same = a.iter().filter(|c| e.contains(c)).count();
        assert!(same >= a.len() - 2, "{same} of {} chunks kept by a one-byte edit", a.len());
    }

    /// What hostctl's partial pull reads of the blob: the annotations find
    /// and pin the TOC, every file's range decompresses to its content, and
    /// the whole blob decompresses to the tar.
    #[test]
    fn the_blob_is_the_tar_and_its_toc_locates_every_file() {
        let big = crate::util::noise(600_000, 3);
        let files: [(&str, &[u8]); 4] =
            [("etc/a", b"alpha\n"), ("etc/empty", b""), ("usr/big", &big), ("etc/a-copy", b"alpha\n")];
        let tar = tar_of(&files);
        let (blob, annotations) = encode(tar.path(), Vec::new()).unwrap();
        assert_eq!(zstd::decode_all(blob.as_slice()).unwrap(), std::fs::read(tar.path()).unwrap());

        let map: std::collections::HashMap<String, String> = annotations.clone().into_iter().collect();
        let loc = toc::location(Some(&map), blob.len() as u64).unwrap().expect("the annotations locate a TOC");
        let range = loc.range();
        let compressed = &blob[range.start as usize..range.end as usize];
        assert_eq!(Digest::of(compressed), loc.digest);
        let parsed = toc::parse(compressed, loc.uncompressed).unwrap();
        let plan = toc::plan(&parsed, blob.len() as u64, &range).unwrap();
        assert_eq!(plan.entries.len(), 6, "etc/, four files, the hard link");
        let chunks = parsed.entries.iter().filter(|e| e.kind == "chunk").count();
        assert!(chunks >= 2, "usr/big is cut into several chunks: {chunks} chunk entries");
        assert_eq!(plan.contents[&Digest::of(&big)].pieces.len(), chunks + 1);
        for (path, content) in files.iter().filter(|(_, c)| !c.is_empty()) {
            let digest = Digest::of(content);
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
