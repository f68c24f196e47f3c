//! Partial pulls: a layer built from its zstd:chunked table of contents, with
//! only the file contents the store lacks fetched (as byte ranges of the
//! blob) — and of those, only the chunks the store does not hold — each
//! decompressed and checked against the TOC's sha256 before it becomes an
//! object.
//!
//! ```text
//! TOC (checked against the manifest's digest) ─ toc::plan ─┬─ contents the store has (by sha256): reused
//!                                                           └─ the others, piece by piece (store::chunks):
//!                                                              ├─ chunks the store holds intact: copied, re-hashed
//!                                                              └─ the rest: ranges ─ zstd frames
//!                                                              ─ sha256 check of the whole file ─ objects
//! entries of the TOC ─ the tar import's path checks ─ layer index (toc_digest, content_digests, chunks)
//! ```
//!
//! The store knows a content's sha256 from the `content_digests` of the
//! layer indexes (partial and full pulls), and chunks from the `chunks` of
//! those partial pulls wrote. A file whose content is known under other
//! metadata (owner, mode, xattrs) is copied from the existing object,
//! re-hashed on the way. Memory: one range stream's buffers, one small file
//! (≤ 1 MiB), the TOC, the index entries and the known digests.
//!
//! Nothing is committed unless every file matched its digest; on any failure
//! the objects this import created are removed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs;
use std::io::{self, BufReader, Read, Take};
use std::path::Path;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};

use crate::digest::{Digest, HashingReader};
use crate::error::DigestMismatch;
use crate::store::chunks::{self, Build, KnownChunks, Part};
use crate::store::import::whiteout_entry;
use crate::store::objects::{object_path_in, Claims, ObjectMeta, ObjectWriter};
use crate::store::tarsafe::{is_root, normalise, LayerPaths, Limits};
use crate::store::toc::{self, Plan, TocEntry, TocLocation};
use crate::store::{Chunk, Entry, EntryKind, LayerIndex, LayerSpec, Meta, ObjectId};

/// Contents and chunks the store has, by sha256.
#[derive(Debug, Default)]
pub struct Known {
    /// Contents: the objects holding them, with their metadata.
    contents: HashMap<Digest, Vec<(ObjectMeta, ObjectId)>>,
    /// Pieces of contents, from the chunk lists of the indexes.
    chunks: KnownChunks,
}

impl Known {
    /// Reads the content digests and chunk lists of every layer index in the store.
    pub fn load(repo: &Path) -> Result<Known> {
        let mut known = Known::default();
        let dir = repo.join("layers");
        for entry in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let Ok(bytes) = fs::read(&path) else { continue };
            // Indexes without content digests (full pulls by older hostctl) are parsed for nothing; cheap next to a download.
            let Ok(index) = serde_json::from_slice::<LayerIndex>(&bytes) else { continue };
            if index.content_digests.is_empty() {
                continue;
            }
            for e in &index.entries {
                let EntryKind::File { object, .. } = &e.kind else { continue };
                if let Some(digest) = index.content_digests.get(object) {
                    known.add(digest.clone(), object_meta(&e.meta)?, object.clone());
                }
            }
            known.chunks.add_index(&index);
        }
        Ok(known)
    }

    fn add(&mut self, digest: Digest, meta: ObjectMeta, id: ObjectId) {
        let list = self.contents.entry(digest).or_default();
        if !list.iter().any(|(_, i)| *i == id) {
            list.push((meta, id));
        }
    }

    /// Whether the store holds some object with this content.
    pub fn has(&self, digest: &Digest) -> bool {
        self.contents.contains_key(digest)
    }

    /// Where the store may hold `size` bytes hashing to `digest`: in chunk
    /// lists, or as an object's whole content.
    fn places(&self, digest: &Digest, size: u64) -> Vec<(&ObjectId, u64)> {
        let whole = self.contents.get(digest).into_iter().flatten().map(|(_, id)| (id, 0));
        self.chunks.places(digest, size).chain(whole).collect()
    }
}

/// What a partial pull fetches: the contents the store lacks, in blob order,
/// each with where its pieces come from, and the byte ranges to fetch.
#[derive(Debug, Default)]
pub struct Missing {
    /// The contents to build.
    pub builds: Vec<Build>,
    /// The ranges of their fetched pieces, in order.
    pub ranges: Vec<std::ops::Range<u64>>,
}

impl Missing {
    /// Bytes of the lacking contents copied from stored chunks rather than fetched.
    pub fn reused(&self) -> u64 {
        self.builds.iter().map(Build::reused).sum()
    }
}

/// The contents of `plan` the store in `repo` lacks, with the pieces of them
/// it holds as chunks of other contents (read and checked here), and the
/// byte ranges to fetch for the rest.
pub fn missing(repo: &Path, plan: &Plan, known: &Known) -> Missing {
    let objects = repo.join("objects");
    let mut builds: Vec<Build> = plan
        .contents
        .values()
        .filter(|c| !known.has(&c.digest))
        .map(|c| chunks::plan_build(c, &objects, |d, size| known.places(d, size)))
        .collect();
    // The fetched stream serves the contents one after the other: in blob order.
    builds.sort_by_key(|b| b.ranges().next().map(|r| r.start).unwrap_or(0));
    let ranges = builds.iter().flat_map(Build::ranges).collect();
    Missing { builds, ranges }
}

/// Checks the compressed TOC bytes against the manifest's digest and plans the layer.
pub fn read_toc(loc: &TocLocation, compressed: &[u8], blob_size: u64) -> Result<Plan> {
    let actual = Digest::of(compressed);
    if actual != loc.digest {
        return Err(DigestMismatch { what: "zstd:chunked TOC".into(), expected: loc.digest.clone(), actual }.into());
    }
    let parsed = toc::parse(compressed, loc.uncompressed)?;
    toc::plan(&parsed, blob_size, &loc.range())
}

/// Builds the layer `spec` from `plan`: the `missing` contents are built, in
/// order, from `fetched` (the concatenated bytes of their ranges) and the
/// stored chunks they reuse, the others come from the store. Commits the index (with `toc_digest`) only
/// when every entry passed the tar import's checks and every file its digest.
#[allow(clippy::too_many_arguments)]
pub fn import(
    repo: &Path,
    claims: &Arc<Claims>,
    limits: &Limits,
    spec: &LayerSpec,
    toc_digest: &Digest,
    plan: &Plan,
    mut known: Known,
    missing: &[Build],
    fetched: &mut dyn Read,
) -> Result<LayerIndex> {
    let what = format!("layer {} (zstd:chunked TOC {toc_digest})", spec.blob_digest);
    let me = claims.new_import();
    let mut writer = ObjectWriter::new(repo, claims, me);
    let result = build(repo, limits, plan, &mut known, missing, fetched, &mut writer);
    let (entries, content_digests, chunks) = match result {
        Ok(built) => built,
        Err(e) => {
            claims.release(me, &writer.created, &repo.join("objects"), true);
            return Err(e.context(what));
        }
    };
    let uncompressed_size = entries
        .iter()
        .map(|e| match &e.kind {
            EntryKind::File { size, .. } => *size,
            _ => 0,
        })
        .sum();
    let index = LayerIndex {
        version: crate::store::layer_index::LAYER_INDEX_VERSION,
        diff_id: spec.diff_id.clone(),
        blob_digest: spec.blob_digest.clone(),
        media_type: spec.media_type.clone(),
        compressed_size: spec.size,
        uncompressed_size,
        entries,
        toc_digest: Some(toc_digest.clone()),
        content_digests,
        chunks,
    };
    let committed = crate::store::repo::commit_index(repo, &index);
    claims.release(me, &writer.created, &repo.join("objects"), committed.is_err());
    committed.with_context(|| format!("committing the index of {what}"))?;
    Ok(index)
}

type Built = (Vec<Entry>, BTreeMap<ObjectId, Digest>, BTreeMap<ObjectId, Vec<Chunk>>);

fn build(
    repo: &Path,
    limits: &Limits,
    plan: &Plan,
    known: &mut Known,
    missing: &[Build],
    fetched: &mut dyn Read,
    writer: &mut ObjectWriter<'_>,
) -> Result<Built> {
    // First metadata each content is used with: the fetched ones are stored so.
    let mut first_meta: HashMap<&Digest, &TocEntry> = HashMap::new();
    for (e, d) in &plan.entries {
        if let Some(d) = d {
            first_meta.entry(d).or_insert(e);
        }
    }
    let objects = repo.join("objects");
    let mut src = Some(fetched);
    for build in missing {
        let digest = &build.digest;
        let content = plan.contents.get(digest).ok_or_else(|| anyhow!("content {digest} is not in the TOC"))?;
        let entry = first_meta.get(digest).ok_or_else(|| anyhow!("content {digest} is used by no entry"))?;
        let meta = object_meta(&toc_meta(entry)?)?;
        let reader = ContentReader::new(src.take().expect("put back"), &objects, &build.parts);
        let mut reader = HashingReader::new(reader);
        let id = writer.store(&meta, content.size, &mut reader).with_context(|| format!("file {:?}", entry.name))?;
        let (actual, _, rest) = reader.finish();
        src = Some(rest.finish().with_context(|| format!("file {:?}", entry.name))?);
        if actual != *digest {
            return Err(DigestMismatch {
                what: format!("file {:?} (from the TOC)", entry.name),
                expected: digest.clone(),
                actual,
            }
            .into());
        }
        known.add(digest.clone(), meta, id);
    }

    let mut entries = Vec::new();
    let mut content_digests = BTreeMap::new();
    let mut chunk_lists = BTreeMap::new();
    let mut paths = LayerPaths::default();
    for (e, digest) in &plan.entries {
        if entries.len() >= limits.max_entries {
            bail!("the layer has more than {} entries", limits.max_entries);
        }
        let made = entry(repo, limits, e, digest.as_ref(), known, writer, &mut paths)
            .with_context(|| format!("TOC entry {:?}", e.name))?;
        if let Some(entry) = made {
            if let (EntryKind::File { object, .. }, Some(d)) = (&entry.kind, digest) {
                content_digests.insert(object.clone(), d.clone());
                let list = chunks::index_chunks(&plan.contents[d]);
                if !list.is_empty() {
                    chunk_lists.insert(object.clone(), list);
                }
            }
            paths.record(&entry.path, &entry.kind);
            entries.push(entry);
        }
    }
    Ok((entries, content_digests, chunk_lists))
}

/// One TOC entry as an index entry, with the tar import's checks.
fn entry(
    repo: &Path,
    limits: &Limits,
    e: &TocEntry,
    digest: Option<&Digest>,
    known: &mut Known,
    writer: &mut ObjectWriter<'_>,
    paths: &mut LayerPaths,
) -> Result<Option<Entry>> {
    if e.kind == "dir" && is_root(e.name.as_bytes()) {
        return Ok(None);
    }
    let path = normalise(e.name.as_bytes(), limits)?;
    let meta = toc_meta(e)?;
    if let Some(whiteout) = whiteout_entry(&path, meta.clone(), paths)? {
        return Ok(whiteout);
    }
    if path.is_empty() {
        if e.kind == "dir" {
            return Ok(None);
        }
        bail!("a non-directory entry at the layer root");
    }
    let kind = match e.kind.as_str() {
        "reg" => {
            let size = e.size as u64;
            if size > limits.max_entry_size {
                bail!("file of {size} bytes exceeds the limit of {} bytes", limits.max_entry_size);
            }
            let om = object_meta(&meta)?;
            let object = match digest {
                None => writer.store(&om, 0, &mut io::empty())?,
                Some(d) => object_for(repo, d, size, &om, known, writer)?,
            };
            EntryKind::File { object, size }
        }
        "hardlink" => {
            let target = normalise(e.link_name.as_bytes(), limits).context("its hardlink target")?;
            paths.check_hardlink(&path, &target)?;
            EntryKind::Hardlink { target }
        }
        "symlink" => {
            let target = e.link_name.clone();
            if target.is_empty() || target.len() > limits.max_path_len || target.contains('\0') {
                bail!("symlink target is empty, too long or contains NUL");
            }
            EntryKind::Symlink { target }
        }
        "dir" => EntryKind::Dir,
        "fifo" => EntryKind::Fifo,
        "char" | "block" => {
            let major = u32::try_from(e.dev_major).context("device major")?;
            let minor = u32::try_from(e.dev_minor).context("device minor")?;
            if e.kind == "char" {
                EntryKind::CharDevice { major, minor }
            } else {
                EntryKind::BlockDevice { major, minor }
            }
        }
        other => bail!("unsupported entry type {other:?}"),
    };
    Ok(Some(Entry { path, kind, meta }))
}

/// The object with content `digest` and metadata `meta`: one the store has,
/// or a new one copied (and re-hashed) from an object with that content.
fn object_for(
    repo: &Path,
    digest: &Digest,
    size: u64,
    meta: &ObjectMeta,
    known: &mut Known,
    writer: &mut ObjectWriter<'_>,
) -> Result<ObjectId> {
    let candidates =
        known.contents.get(digest).ok_or_else(|| anyhow!("content {digest} was neither in the store nor fetched"))?;
    let objects = repo.join("objects");
    if let Some((_, id)) = candidates.iter().find(|(m, id)| m == meta && present(&objects, id, size)) {
        writer.note_use(id);
        return Ok(id.clone());
    }
    let (_, source) = candidates
        .iter()
        .find(|(_, id)| present(&objects, id, size))
        .ok_or_else(|| anyhow!("no object with content {digest} is left in the store"))?;
    let path = object_path_in(&objects, source);
    let file = fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = HashingReader::new(file);
    let id = writer.store(meta, size, &mut reader)?;
    let (actual, _, _) = reader.finish();
    if actual != *digest {
        return Err(DigestMismatch {
            what: format!("stored object {}", path.display()),
            expected: digest.clone(),
            actual,
        }
        .into());
    }
    known.add(digest.clone(), meta.clone(), id.clone());
    Ok(id)
}

fn present(objects: &Path, id: &ObjectId, size: u64) -> bool {
    fs::symlink_metadata(object_path_in(objects, id)).is_ok_and(|m| m.is_file() && m.len() == size)
}

/// An entry's metadata, as the tar import records it.
fn toc_meta(e: &TocEntry) -> Result<Meta> {
    use base64::Engine;
    let mut xattrs = BTreeMap::new();
    for (name, value) in &e.xattrs {
        if name.is_empty() {
            bail!("an xattr with an empty name");
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(value)
            .with_context(|| format!("xattr {name}: not base64"))?;
        xattrs.insert(name.clone(), hex::encode(raw));
    }
    Ok(Meta {
        mode: (e.mode & 0o7777) as u32,
        uid: u32::try_from(e.uid).context("uid out of range")?,
        gid: u32::try_from(e.gid).context("gid out of range")?,
        mtime: toc::mtime(e)?,
        xattrs,
    })
}

/// The object metadata of an index entry's metadata.
fn object_meta(m: &Meta) -> Result<ObjectMeta> {
    let xattrs = m
        .xattrs
        .iter()
        .map(|(k, v)| Ok((k.clone(), hex::decode(v).with_context(|| format!("xattr {k}"))?)))
        .collect::<Result<_>>()?;
    Ok(ObjectMeta { mode: m.mode, uid: m.uid, gid: m.gid, xattrs })
}

type Frames<'a> = zstd::stream::read::Decoder<'static, BufReader<Take<&'a mut dyn Read>>>;

/// The piece being read.
enum Cur<'a> {
    /// Zstd frames of the fetched stream, with the bytes they still owe.
    Frames(Frames<'a>, u64),
    /// Zeros still owed.
    Zeros(u64),
    /// A stored chunk being copied and hashed, with the bytes it still owes
    /// and where it is from.
    Copy(HashingReader<Take<fs::File>>, u64, Digest, ObjectId, u64),
}

/// One file's content from its parts: fetched pieces' zstd frames (skippable
/// ones skipped) decompressed from the fetched ranges, zeros, or stored
/// chunks copied; every fetched piece must decompress to exactly its size
/// and use exactly its range, every copied one must hash to its digest.
struct ContentReader<'a, 'o> {
    src: Option<&'a mut dyn Read>,
    objects: &'o Path,
    parts: VecDeque<Part>,
    cur: Option<Cur<'a>>,
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

impl<'a, 'o> ContentReader<'a, 'o> {
    fn new(src: &'a mut dyn Read, objects: &'o Path, parts: &[Part]) -> Self {
        ContentReader { src: Some(src), objects, parts: parts.iter().cloned().collect(), cur: None }
    }

    /// The source back, once every piece was read whole.
    fn finish(mut self) -> io::Result<&'a mut dyn Read> {
        let mut rest = [0u8; 1];
        if self.read(&mut rest)? != 0 {
            return Err(invalid("the file is longer than the TOC says".into()));
        }
        Ok(self.src.take().expect("not inside a piece"))
    }

    /// Ends the current piece: fetched frames must end with their range, a
    /// copied chunk must match its digest.
    fn end_piece(&mut self) -> io::Result<()> {
        match self.cur.take() {
            None | Some(Cur::Zeros(_)) => Ok(()),
            Some(Cur::Frames(mut frames, _)) => {
                let mut extra = [0u8; 1];
                if frames.read(&mut extra)? != 0 {
                    return Err(invalid("a chunk decompresses to more bytes than the TOC says".into()));
                }
                let take = frames.finish().into_inner();
                if take.limit() != 0 {
                    return Err(invalid("a chunk's frames end before its range does".into()));
                }
                self.src = Some(take.into_inner());
                Ok(())
            }
            Some(Cur::Copy(hashing, _, digest, object, offset)) => {
                let (actual, _, _) = hashing.finish();
                if actual != digest {
                    return Err(invalid(format!(
                        "the chunk at {offset} of stored object {object} hashes to {actual}, not {digest} \
                         (the store is damaged; `hostctl fsck` names what)"
                    )));
                }
                Ok(())
            }
        }
    }

    fn start(&mut self, part: Part) -> io::Result<Cur<'a>> {
        Ok(match part {
            Part::Zeros { size } => Cur::Zeros(size),
            Part::Fetch { range, size } => {
                let src = self.src.take().expect("between pieces");
                let take = src.take(range.end - range.start);
                Cur::Frames(zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(64 * 1024, take))?, size)
            }
            Part::Copy { object, offset, size, digest } => {
                let chunk = chunks::open_chunk(self.objects, &object, offset, size)?;
                Cur::Copy(HashingReader::new(chunk), size, digest, object, offset)
            }
        })
    }
}

impl Read for ContentReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(cur) = &mut self.cur else {
                let Some(part) = self.parts.pop_front() else { return Ok(0) };
                self.cur = Some(self.start(part)?);
                continue;
            };
            let (left, n, short) = match cur {
                Cur::Frames(_, left) | Cur::Zeros(left) | Cur::Copy(_, left, ..) if *left == 0 => {
                    self.end_piece()?;
                    continue;
                }
                Cur::Frames(frames, left) => {
                    let want = buf.len().min(*left as usize);
                    (left, frames.read(&mut buf[..want])?, "a chunk decompresses to fewer bytes than the TOC says")
                }
                Cur::Zeros(left) => {
                    let want = buf.len().min(*left as usize);
                    buf[..want].fill(0);
                    (left, want, "")
                }
                Cur::Copy(chunk, left, ..) => {
                    let want = buf.len().min(*left as usize);
                    (left, chunk.read(&mut buf[..want])?, "a stored chunk ended early")
                }
            };
            if n == 0 {
                return Err(invalid(short.into()));
            }
            *left -= n as u64;
            return Ok(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::toc::Toc;
    use crate::store::Store;

    /// A blob of one zstd frame per chunk of each file, and its TOC (as
    /// containers/storage writes it: the file entry is its first chunk, the
    /// others follow as `chunk` entries). The blob ends with one byte that
    /// stands for the TOC.
    fn layer(files: &[(&str, Vec<Vec<u8>>)]) -> Layer {
        let mut blob = Vec::new();
        let mut entries = Vec::new();
        for (name, chunks) in files {
            let whole = chunks.concat();
            let mut at = 0;
            for (n, c) in chunks.iter().enumerate() {
                let start = blob.len() as i64;
                blob.extend(zstd::encode_all(&c[..], 1).unwrap());
                let mut e = TocEntry {
                    kind: if n == 0 { "reg" } else { "chunk" }.into(),
                    name: name.to_string(),
                    offset: start,
                    end_offset: blob.len() as i64,
                    chunk_offset: at,
                    chunk_size: c.len() as i64,
                    chunk_digest: Digest::of(c).to_string(),
                    ..TocEntry::default()
                };
                if n == 0 {
                    (e.size, e.mode, e.digest) = (whole.len() as i64, 0o644, Digest::of(&whole).to_string());
                }
                at += c.len() as i64;
                entries.push(e);
            }
        }
        blob.push(0);
        (blob, Toc { version: 1, entries })
    }

    /// A partial pull of `(blob, toc)` into `store`: the bytes fetched, the
    /// bytes reused, and the result of the import (after `before_import`).
    fn pull(
        store: &Store,
        tag: &str,
        (blob, toc): &Layer,
        before_import: impl FnOnce(),
    ) -> (u64, u64, Result<LayerIndex>) {
        let size = blob.len() as u64;
        let plan = toc::plan(toc, size, &(size - 1..size)).unwrap();
        let known = store.known_contents().unwrap();
        let missing = store.missing_contents(&plan, &known);
        let fetched: Vec<u8> =
            missing.ranges.iter().flat_map(|r| blob[r.start as usize..r.end as usize].to_vec()).collect();
        let spec = LayerSpec {
            blob_digest: Digest::of(blob),
            size,
            media_type: "application/vnd.oci.image.layer.v1.tar+zstd".into(),
            diff_id: Digest::of(tag.as_bytes()),
        };
        before_import();
        let index =
            store.import_partial(&spec, &Digest::of(tag.as_bytes()), &plan, known, &missing.builds, &mut &fetched[..]);
        (fetched.len() as u64, missing.reused(), index)
    }

    fn object_of(index: &LayerIndex, path: &str) -> ObjectId {
        match &index.entries.iter().find(|e| e.path == path).unwrap().kind {
            EntryKind::File { object, .. } => object.clone(),
            k => panic!("{path}: {k:?}"),
        }
    }

    /// A layer's blob and its TOC.
    type Layer = (Vec<u8>, Toc);

    /// v1 with a file of three chunks, v2 with bytes appended to its last
    /// one, and v2's content of that file.
    fn v1_v2() -> (Layer, Layer, Vec<u8>) {
        let (a, b, c) = (crate::util::noise(300_000, 1), crate::util::noise(200_000, 2), crate::util::noise(50_000, 3));
        let v1 = layer(&[("big", vec![a.clone(), b.clone(), c.clone()]), ("small", vec![b"v1".to_vec()])]);
        let mut c2 = c.clone();
        c2.extend_from_slice(b"# v2\n");
        let v2 = layer(&[("big", vec![a.clone(), b.clone(), c2.clone()]), ("small", vec![b"v2".to_vec()])]);
        (v1, v2, [a, b, c2].concat())
    }

    fn count_objects(store: &Store) -> usize {
        let fans = fs::read_dir(store.dir().join("objects")).unwrap();
        fans.map(|f| fs::read_dir(f.unwrap().path()).unwrap().count()).sum()
    }

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open_dir(&d.path().join("repo")).unwrap();
        (d, s)
    }

    #[test]
    fn a_changed_file_reuses_its_unchanged_chunks_from_the_store() {
        let (_d, store) = store();
        let (v1, v2, big2) = v1_v2();
        let (fetched1, reused1, index1) = pull(&store, "v1", &v1, || {});
        let index1 = index1.unwrap();
        assert_eq!((fetched1, reused1), (v1.0.len() as u64 - 1, 0), "an empty store fetches everything");
        let big1 = object_of(&index1, "big");
        let sizes: Vec<(u64, u64)> = index1.chunks[&big1].iter().map(|c| (c.offset, c.size)).collect();
        assert_eq!(sizes, vec![(0, 300_000), (300_000, 200_000), (500_000, 50_000)]);
        assert_eq!(index1.chunks.len(), 1, "one-chunk files have no list: {:?}", index1.chunks.keys());

        let (fetched2, reused2, index2) = pull(&store, "v2", &v2, || {});
        let index2 = index2.unwrap();
        assert_eq!(reused2, 500_000, "the first two chunks come from the store");
        assert!(fetched2 < 60_000, "fetched {fetched2} bytes: the last chunk and the small file only");
        let big2_id = object_of(&index2, "big");
        assert_eq!(fs::read(store.object_path(&big2_id)).unwrap(), big2);
        assert_eq!(index2.content_digests[&big2_id], Digest::of(&big2));
        assert_eq!(index2.chunks[&big2_id].len(), 3, "v2's chunks are recorded too");
        // The index round-trips through its file with the chunk lists.
        assert_eq!(store.layer_index(&index2.diff_id).unwrap(), index2);
    }

    #[test]
    fn a_stored_chunk_damaged_before_the_pull_is_fetched_instead() {
        let (_d, store) = store();
        let (v1, v2, big2) = v1_v2();
        let index1 = pull(&store, "v1", &v1, || {}).2.unwrap();
        let path = store.object_path(&object_of(&index1, "big"));
        let mut bytes = fs::read(&path).unwrap();
        bytes[10] ^= 1; // inside the first chunk
        fs::write(&path, &bytes).unwrap();
        let (fetched, reused, index2) = pull(&store, "v2", &v2, || {});
        let index2 = index2.unwrap();
        assert_eq!(reused, 200_000, "only the intact chunk is copied");
        assert!(fetched > 300_000, "the damaged chunk is fetched: {fetched}");
        assert_eq!(fs::read(store.object_path(&object_of(&index2, "big"))).unwrap(), big2);
    }

    #[test]
    fn a_toc_that_names_a_stored_chunk_for_other_bytes_fails_the_file_digest_and_keeps_nothing() {
        let (_d, store) = store();
        let (v1, _, _) = v1_v2();
        pull(&store, "v1", &v1, || {}).2.unwrap();
        let objects_before = count_objects(&store);
        // v2's first chunk has new bytes, but its TOC names v1's first chunk
        // for them: the stored chunk is copied, and the file is not the one
        // the TOC's content digest names.
        let (a, a2) = (crate::util::noise(300_000, 1), crate::util::noise(300_000, 9));
        let mut v2 = layer(&[("big", vec![a2, crate::util::noise(200_000, 2), crate::util::noise(50_000, 3)])]);
        v2.1.entries[0].chunk_digest = Digest::of(&a).to_string();
        let (_, reused, index2) = pull(&store, "v2", &v2, || {});
        assert_eq!(reused, 550_000, "the lie finds the stored chunk (the other two are intact)");
        let e = format!("{:#}", index2.unwrap_err());
        assert!(e.contains("file \"big\" (from the TOC): digest mismatch"), "{e}");
        assert!(store.layer_index(&Digest::of(b"v2")).is_err(), "no index of the failed layer");
        assert_eq!(count_objects(&store), objects_before, "objects of the failed layer kept");
    }

    #[test]
    fn a_stored_chunk_damaged_while_the_pull_runs_fails_the_layer_and_keeps_nothing() {
        let (_d, store) = store();
        let (v1, v2, _) = v1_v2();
        let index1 = pull(&store, "v1", &v1, || {}).2.unwrap();
        let path = store.object_path(&object_of(&index1, "big"));
        let objects_before = count_objects(&store);
        let (_, reused, index2) = pull(&store, "v2", &v2, || {
            let mut bytes = fs::read(&path).unwrap();
            bytes[300_010] ^= 1; // inside the second chunk, after it was checked
            fs::write(&path, &bytes).unwrap();
        });
        assert_eq!(reused, 500_000);
        let e = format!("{:#}", index2.unwrap_err());
        assert!(e.contains("hashes to") && e.contains("damaged"), "{e}");
        assert!(store.layer_index(&Digest::of(b"v2")).is_err(), "no index of the failed layer");
        assert_eq!(count_objects(&store), objects_before, "objects of the failed layer kept");
    }
}
