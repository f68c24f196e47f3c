//! Partial pulls: a layer built from its zstd:chunked table of contents, with
//! only the file contents the store lacks fetched (as byte ranges of the
//! blob), each decompressed and checked against the TOC's sha256 before it
//! becomes an object.
//!
//! ```text
//! TOC (checked against the manifest's digest) ─ toc::plan ─┬─ contents the store has (by sha256): reused
//!                                                           └─ the others: ranges ─ zstd frames ─ sha256 check ─ objects
//! entries of the TOC ─ the tar import's path checks ─ layer index (toc_digest, content_digests)
//! ```
//!
//! The store knows a content's sha256 from the `content_digests` of the
//! layer indexes that partial pulls wrote. A file whose content is known
//! under other metadata (owner, mode, xattrs) is copied from the existing
//! object, re-hashed on the way. Memory: one range stream's buffers, one
//! small file (≤ 1 MiB), the TOC and the index entries.
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
use crate::store::import::whiteout_entry;
use crate::store::objects::{object_path_in, Claims, ObjectMeta, ObjectWriter};
use crate::store::tarsafe::{is_root, normalise, LayerPaths, Limits};
use crate::store::toc::{self, Piece, Plan, TocEntry, TocLocation};
use crate::store::{Entry, EntryKind, LayerIndex, LayerSpec, Meta, ObjectId};

/// Contents the store has, by sha256: the objects holding them, with their metadata.
#[derive(Debug, Default)]
pub struct Known(HashMap<Digest, Vec<(ObjectMeta, ObjectId)>>);

impl Known {
    /// Reads the content digests of every layer index in the store.
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
        }
        Ok(known)
    }

    fn add(&mut self, digest: Digest, meta: ObjectMeta, id: ObjectId) {
        let list = self.0.entry(digest).or_default();
        if !list.iter().any(|(_, i)| *i == id) {
            list.push((meta, id));
        }
    }

    /// Whether the store holds some object with this content.
    pub fn has(&self, digest: &Digest) -> bool {
        self.0.contains_key(digest)
    }
}

/// The contents of `plan` the store lacks, in blob order, and their byte ranges.
pub fn missing(plan: &Plan, known: &Known) -> (Vec<Digest>, Vec<std::ops::Range<u64>>) {
    let mut lacking: Vec<&toc::Content> = plan.contents.values().filter(|c| !known.has(&c.digest)).collect();
    lacking.sort_by_key(|c| c.ranges().next().map(|r| r.start).unwrap_or(0));
    let ranges = lacking.iter().flat_map(|c| c.ranges()).collect();
    (lacking.into_iter().map(|c| c.digest.clone()).collect(), ranges)
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

/// Builds the layer `spec` from `plan`: the `missing` contents are read, in
/// order, from `fetched` (the concatenated bytes of their ranges), the
/// others come from the store. Commits the index (with `toc_digest`) only
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
    missing: &[Digest],
    fetched: &mut dyn Read,
) -> Result<LayerIndex> {
    let what = format!("layer {} (zstd:chunked TOC {toc_digest})", spec.blob_digest);
    let me = claims.new_import();
    let mut writer = ObjectWriter::new(repo, claims, me);
    let result = build(repo, limits, plan, &mut known, missing, fetched, &mut writer);
    let (entries, content_digests) = match result {
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
    };
    let committed = crate::store::repo::commit_index(repo, &index);
    claims.release(me, &writer.created, &repo.join("objects"), committed.is_err());
    committed.with_context(|| format!("committing the index of {what}"))?;
    Ok(index)
}

type Built = (Vec<Entry>, BTreeMap<ObjectId, Digest>);

fn build(
    repo: &Path,
    limits: &Limits,
    plan: &Plan,
    known: &mut Known,
    missing: &[Digest],
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
    let mut src = Some(fetched);
    for digest in missing {
        let content = &plan.contents[digest];
        let entry = first_meta.get(digest).ok_or_else(|| anyhow!("content {digest} is used by no entry"))?;
        let meta = object_meta(&toc_meta(entry)?)?;
        let mut reader = HashingReader::new(ContentReader::new(src.take().expect("put back"), &content.pieces));
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
            }
            paths.record(&entry.path, &entry.kind);
            entries.push(entry);
        }
    }
    Ok((entries, content_digests))
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
        known.0.get(digest).ok_or_else(|| anyhow!("content {digest} was neither in the store nor fetched"))?;
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

/// One file's content from the fetched ranges: each piece's zstd frames
/// (skippable ones skipped) decompressed, or zeros; every piece must
/// decompress to exactly its size and use exactly its range.
struct ContentReader<'a> {
    src: Option<&'a mut dyn Read>,
    pieces: VecDeque<Piece>,
    cur: Option<(Option<Frames<'a>>, u64)>,
}

impl<'a> ContentReader<'a> {
    fn new(src: &'a mut dyn Read, pieces: &[Piece]) -> Self {
        ContentReader { src: Some(src), pieces: pieces.iter().cloned().collect(), cur: None }
    }

    /// The source back, once every piece was read whole.
    fn finish(mut self) -> io::Result<&'a mut dyn Read> {
        let mut rest = [0u8; 1];
        if self.read(&mut rest)? != 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the file is longer than the TOC says"));
        }
        Ok(self.src.take().expect("not inside a piece"))
    }

    /// Ends the current piece: its frames must end with its range.
    fn end_piece(&mut self) -> io::Result<()> {
        let Some((frames, _)) = self.cur.take() else { return Ok(()) };
        let Some(mut frames) = frames else { return Ok(()) };
        let mut extra = [0u8; 1];
        if frames.read(&mut extra)? != 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a chunk decompresses to more bytes than the TOC says",
            ));
        }
        let take = frames.finish().into_inner();
        if take.limit() != 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "a chunk's frames end before its range does"));
        }
        self.src = Some(take.into_inner());
        Ok(())
    }
}

impl Read for ContentReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some((frames, left)) = &mut self.cur {
                if *left == 0 {
                    self.end_piece()?;
                    continue;
                }
                let want = buf.len().min(*left as usize);
                let n = match frames {
                    Some(f) => f.read(&mut buf[..want])?,
                    None => {
                        buf[..want].fill(0);
                        want
                    }
                };
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a chunk decompresses to fewer bytes than the TOC says",
                    ));
                }
                *left -= n as u64;
                return Ok(n);
            }
            let Some(piece) = self.pieces.pop_front() else { return Ok(0) };
            self.cur = Some(match piece {
                Piece::Zeros { size } => (None, size),
                Piece::Frames { range, size } => {
                    let src = self.src.take().expect("between pieces");
                    let take = src.take(range.end - range.start);
                    let frames = zstd::stream::read::Decoder::with_buffer(BufReader::with_capacity(64 * 1024, take))?;
                    (Some(frames), size)
                }
            });
        }
    }
}
