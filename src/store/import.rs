//! The layer pipeline: one streaming pass from the compressed blob to file
//! objects and a layer index.
//!
//! ```text
//! caller's thread:  blob ─ size cap ─┬─ gzip/zstd/plain decoder ─┬───────────────┐
//!                       copies of the │ compressed bytes         │ decompressed  │
//!                                     ▼ (bounded channel)        ▼ chunks (Arc)  │
//! hashing thread:   sha256 of the blob (blob digest), sha256 of the tar (diff_id)│
//! unpack thread:    tar entries ─ safety checks ─ objects (sha256 each) ─ entries ◀┘
//! ```
//! Decompressed chunks are shared (`Arc`, not copied) by the two consumers
//! and recycled once both are done with them; the compressed bytes are copied
//! in 256 KiB batches, which costs far less than hashing them. Three threads
//! rather than two because the work does not split evenly in two: for a gzip
//! layer the decoder takes about 40% of the CPU time, the unpack thread
//! (which hashes every file for its object id and waits on the kernel for file
//! creation) a third and the two whole-stream hashes the rest
//! (docs/benchmarks.md). Before 2026-11-26 the blob digest was computed on the
//! decoding thread, which made that thread the bottleneck of a gzip pull
//! (47% of the samples, on a 2-core machine). With the hashes on a thread of
//! their own the scheduler can spread the three over two cores, and the
//! queues smooth out the phases where the unpack thread is slow (thousands of
//! small files) or fast (large files).
//!
//! The index and the by-blob alias are committed only once both streams
//! reached EOF and both digests matched; on any failure the objects this
//! import created are removed again, and the rest of the blob is still read
//! (up to its declared size) so that tampered content is reported as a
//! digest mismatch rather than as whatever decoding error it caused.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, Sender, SyncSender};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};

use crate::digest::{Digest, Hasher};
use crate::error::DigestMismatch;
use crate::store::gzip::GzipDecoder;
use crate::store::objects::{Claims, ObjectMeta, ObjectWriter};
use crate::store::tarsafe::{normalise, parent, LayerPaths, Limits};
use crate::store::{Entry, EntryKind, LayerIndex, LayerSpec, Meta};

/// Size of the decompressed chunks handed to the unpack and hashing threads.
const CHUNK: usize = 256 * 1024;
/// Chunks queued for each consumer: decompressed chunks are shared by both
/// queues, and the hashing queue also carries the compressed batches (at most
/// 2 × 32 × 256 KiB = 16 MiB in flight).
const IN_FLIGHT: usize = 32;

/// A decompressed chunk, shared by the unpack and hashing threads.
type Chunk = Arc<Vec<u8>>;
/// Progress is reported in steps of at least this many compressed bytes (small
/// enough that a slow download is not taken for a stalled one: progress::watch).
const PROGRESS_STEP: u64 = 64 * 1024;

/// How a layer blob is compressed, from its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// Uncompressed.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// The compression of an OCI or Docker layer media type; an error for any other.
    pub fn from_media_type(media_type: &str) -> Result<Self> {
        Ok(match media_type {
            "application/vnd.oci.image.layer.v1.tar" | "application/vnd.docker.image.rootfs.diff.tar" => {
                Compression::None
            }
            "application/vnd.oci.image.layer.v1.tar+gzip" | "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
                Compression::Gzip
            }
            "application/vnd.oci.image.layer.v1.tar+zstd" | "application/vnd.docker.image.rootfs.diff.tar.zstd" => {
                Compression::Zstd
            }
            other => bail!("unsupported layer media type {other:?}"),
        })
    }
}

/// What happened to the compressed stream.
#[derive(Default)]
struct BlobState {
    /// The source itself failed (network, disk): not the content's fault.
    source_error: Option<io::Error>,
    /// More bytes than declared arrived.
    oversize: bool,
}

/// What the hashing thread hashes: compressed bytes for the blob digest,
/// decompressed chunks for the diff_id.
enum ToHash {
    Blob(Vec<u8>),
    Tar(Chunk),
}

/// Counts the compressed bytes, refusing more than the declared size, and
/// copies them in [`CHUNK`]-sized batches to the hashing thread (the copy
/// costs far less than the sha256 it takes off the decoding thread).
struct BlobReader<'a> {
    inner: &'a mut dyn Read,
    /// Compressed bytes not yet sent to the hashing thread.
    batch: Vec<u8>,
    /// None once [`BlobReader::finish`] ran.
    hash_tx: Option<SyncSender<ToHash>>,
    /// Batches the hashing thread is done with.
    spent: Receiver<Vec<u8>>,
    count: u64,
    limit: u64,
    state: BlobState,
    progress: &'a mut dyn FnMut(u64),
    unreported: u64,
}

impl Read for BlobReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.state.oversize {
            return Err(io::Error::other("blob is larger than its declared size"));
        }
        let n = match self.inner.read(buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                let msg = e.to_string();
                self.state.source_error = Some(e);
                return Err(io::Error::other(msg));
            }
        };
        self.tee(&buf[..n]);
        self.count += n as u64;
        self.unreported += n as u64;
        if self.unreported >= PROGRESS_STEP || n == 0 {
            (self.progress)(self.unreported);
            self.unreported = 0;
        }
        if self.count > self.limit {
            self.state.oversize = true;
            return Err(io::Error::other("blob is larger than its declared size"));
        }
        Ok(n)
    }
}

impl BlobReader<'_> {
    fn tee(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let n = bytes.len().min(CHUNK - self.batch.len());
            self.batch.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.batch.len() == CHUNK {
                self.send_batch();
            }
        }
    }

    fn send_batch(&mut self) {
        let fresh = self.spent.try_recv().unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let full = std::mem::replace(&mut self.batch, fresh);
        if let Some(tx) = &self.hash_tx {
            // A hashing thread that is gone is reported when it is joined.
            let _ = tx.send(ToHash::Blob(full));
        }
    }

    /// Sends the last compressed bytes and lets the hashing thread finish.
    fn finish(&mut self) {
        if !self.batch.is_empty() {
            self.send_batch();
        }
        self.hash_tx = None;
    }

    /// Reads whatever is left, up to one byte past the declared size.
    fn drain(&mut self) {
        let mut buf = vec![0u8; CHUNK];
        while !self.state.oversize && self.state.source_error.is_none() {
            match self.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

/// The unpack thread's reader: decompressed chunks from the channel.
struct ChunkReader {
    rx: Receiver<Result<Chunk, String>>,
    recycle: Sender<Chunk>,
    cur: Chunk,
    pos: usize,
    eof: bool,
}

impl ChunkReader {
    /// Takes the chunks after the end of the archive, without copying them.
    fn drain(&mut self) -> io::Result<()> {
        self.pos = self.cur.len();
        loop {
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    let _ = self.recycle.send(chunk);
                }
                Ok(Err(msg)) => return Err(io::Error::other(msg)),
                Err(_) => return Ok(()),
            }
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.eof {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Ok(chunk)) => {
                    let old = std::mem::replace(&mut self.cur, chunk);
                    if !old.is_empty() {
                        let _ = self.recycle.send(old);
                    }
                    self.pos = 0;
                }
                Ok(Err(msg)) => return Err(io::Error::other(msg)),
                Err(_) => {
                    self.eof = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// What the unpack thread hands back, success or not.
struct Unpacked {
    entries: Result<Vec<Entry>>,
    created: Vec<crate::store::ObjectId>,
    /// The sha256 of each file content, for the layer index.
    content_digests: BTreeMap<crate::store::ObjectId, Digest>,
}

/// The two digests of a layer and the length of its tar stream.
struct Hashed {
    blob: Digest,
    diff_id: Digest,
    tar_size: u64,
}

/// The hashing thread: the blob digest over the compressed batches and the
/// diff_id over the decompressed chunks, handing both back for reuse.
fn hash_streams(rx: Receiver<ToHash>, recycle: Sender<Chunk>, spent: Sender<Vec<u8>>) -> Hashed {
    let (mut blob, mut tar) = (Hasher::new(), Hasher::new());
    for msg in rx {
        match msg {
            ToHash::Blob(mut batch) => {
                blob.update(&batch);
                batch.clear();
                let _ = spent.send(batch);
            }
            ToHash::Tar(chunk) => {
                tar.update(&chunk);
                let _ = recycle.send(chunk);
            }
        }
    }
    let (diff_id, tar_size) = tar.finish();
    Hashed { blob: blob.finish().0, diff_id, tar_size }
}

/// Imports one layer; see the module docs. `repo` is the repository directory.
pub fn import_layer(
    repo: &Path,
    claims: &Arc<Claims>,
    limits: &Limits,
    spec: &LayerSpec,
    blob: &mut dyn Read,
    progress: &mut dyn FnMut(u64),
) -> Result<LayerIndex> {
    let compression = Compression::from_media_type(&spec.media_type)?;
    let what = format!("layer {} (diff_id {})", spec.blob_digest, spec.diff_id);
    let me = claims.new_import();
    let (hash_tx, hash_rx) = sync_channel::<ToHash>(IN_FLIGHT);
    let (spent_tx, spent_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let mut blob = BlobReader {
        inner: blob,
        batch: Vec::with_capacity(CHUNK),
        hash_tx: Some(hash_tx.clone()),
        spent: spent_rx,
        count: 0,
        limit: spec.size,
        state: BlobState::default(),
        progress,
        unreported: 0,
    };

    let (tx, rx) = sync_channel::<Result<Chunk, String>>(IN_FLIGHT);
    let (recycle_tx, recycle_rx) = std::sync::mpsc::channel::<Chunk>();
    let hash_recycle = recycle_tx.clone();
    let (decode_result, unpacked, hashed) = std::thread::scope(|s| {
        let unpack = std::thread::Builder::new().name("layer-unpack".into()).spawn_scoped(s, || {
            let reader = ChunkReader { rx, recycle: recycle_tx, cur: Arc::default(), pos: 0, eof: false };
            unpack(repo, claims, me, limits, reader)
        })?;
        let hash = std::thread::Builder::new()
            .name("layer-hash".into())
            .spawn_scoped(s, move || hash_streams(hash_rx, hash_recycle, spent_tx))?;
        let decode_result = decode(compression, &mut blob, &tx, &hash_tx, &recycle_rx, limits);
        if let Err(e) = &decode_result {
            let _ = tx.send(Err(format!("{e:#}")));
        }
        drop((tx, hash_tx));
        let unpacked = unpack.join().unwrap_or_else(|_| Unpacked {
            entries: Err(anyhow!("the unpack thread panicked")),
            created: Vec::new(),
            content_digests: BTreeMap::new(),
        });
        // Read the rest of the blob (up to its declared size) so that
        // tampering is told apart from a layer that is authentic but
        // unusable; bytes after the end of the compressed stream count too.
        // Not when the disk is full: that is no fault of the content, and
        // downloading the rest would only delay the error.
        if !unpacked.entries.as_ref().is_err_and(crate::error::is_no_space) {
            blob.drain();
        }
        blob.finish();
        let panicked = Digest::of(b"the hashing thread panicked");
        let hashed = hash.join().unwrap_or_else(|_| Hashed { blob: panicked.clone(), diff_id: panicked, tar_size: 0 });
        io::Result::Ok((decode_result, unpacked, hashed))
    })
    .context("starting the unpack threads")?;

    let (actual_blob, uncompressed_size) = (hashed.blob, hashed.tar_size);
    let tar = (&hashed.diff_id, uncompressed_size);
    let Unpacked { entries, created, content_digests } = unpacked;
    let verdict = judge(spec, &what, &blob.state, blob.count, &actual_blob, decode_result, entries, tar);
    let entries = match verdict {
        Ok(entries) => entries,
        Err(e) => {
            claims.release(me, &created, &repo.join("objects"), true);
            return Err(e);
        }
    };

    let index = crate::store::LayerIndex {
        version: crate::store::layer_index::LAYER_INDEX_VERSION,
        diff_id: spec.diff_id.clone(),
        blob_digest: spec.blob_digest.clone(),
        media_type: spec.media_type.clone(),
        compressed_size: blob.count,
        uncompressed_size,
        entries,
        toc_digest: None,
        content_digests,
        chunks: BTreeMap::new(),
    };
    let committed = crate::store::repo::commit_index(repo, &index);
    claims.release(me, &created, &repo.join("objects"), committed.is_err());
    committed.with_context(|| format!("committing the index of {what}"))?;
    Ok(index)
}

/// Decides whether an import may be committed (returning its entries), and
/// which error to report if not: a full disk and source failures first, then
/// the blob's size and digest, then decoding and unsafe entries, then the
/// diff_id. The unpack thread's error is passed on whole (not as text), so
/// that callers still find its cause (ENOSPC: exit code 6).
#[allow(clippy::too_many_arguments)]
fn judge(
    spec: &LayerSpec,
    what: &str,
    state: &BlobState,
    count: u64,
    actual_blob: &Digest,
    decode_result: Result<u64>,
    entries: Result<Vec<Entry>>,
    (diff_id, uncompressed_size): (&Digest, u64),
) -> Result<Vec<Entry>> {
    let entries = match entries {
        Err(e) if crate::error::is_no_space(&e) => return Err(e.context(what.to_string())),
        other => other,
    };
    if let Some(e) = &state.source_error {
        bail!("{what}: reading the blob failed after {count} bytes: {e}");
    }
    if state.oversize {
        return Err(anyhow::Error::new(DigestMismatch {
            what: format!("{what}: more than the declared {} bytes; digest of the first {count} bytes", spec.size),
            expected: spec.blob_digest.clone(),
            actual: actual_blob.clone(),
        }));
    }
    if *actual_blob != spec.blob_digest {
        return Err(anyhow::Error::new(DigestMismatch {
            what: format!("{what}: compressed blob ({count} bytes)"),
            expected: spec.blob_digest.clone(),
            actual: actual_blob.clone(),
        }));
    }
    if count != spec.size {
        bail!("{what}: the blob has {count} bytes but its descriptor declares {}", spec.size);
    }
    decode_result.with_context(|| format!("decompressing {what}"))?;
    let entries = entries.map_err(|e| e.context(what.to_string()))?;
    if *diff_id != spec.diff_id {
        return Err(anyhow::Error::new(DigestMismatch {
            what: format!("{what}: uncompressed tar ({uncompressed_size} bytes)"),
            expected: spec.diff_id.clone(),
            actual: diff_id.clone(),
        }));
    }
    Ok(entries)
}

/// Decompresses `blob` into chunks for the unpack and hashing threads;
/// returns the decompressed size. Stops early when the unpack thread has gone.
fn decode(
    compression: Compression,
    blob: &mut BlobReader<'_>,
    tx: &SyncSender<Result<Chunk, String>>,
    hash_tx: &SyncSender<ToHash>,
    recycle: &Receiver<Chunk>,
    limits: &Limits,
) -> Result<u64> {
    let mut decoder: Box<dyn Read + '_> = match compression {
        Compression::None => Box::new(blob),
        Compression::Gzip => Box::new(GzipDecoder::new(io::BufReader::with_capacity(CHUNK, blob))),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(blob).context("starting the zstd decoder")?),
    };
    let mut total = 0u64;
    loop {
        let mut chunk = reusable(recycle);
        chunk.resize(CHUNK, 0);
        let mut filled = 0;
        while filled < CHUNK {
            match decoder.read(&mut chunk[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
        chunk.truncate(filled);
        total += filled as u64;
        if total > limits.max_layer_size {
            bail!("the uncompressed layer exceeds the limit of {} bytes", limits.max_layer_size);
        }
        if filled == 0 {
            return Ok(total);
        }
        let chunk = Arc::new(chunk);
        if hash_tx.send(ToHash::Tar(chunk.clone())).is_err() || tx.send(Ok(chunk)).is_err() {
            // The unpack thread stopped (it refused the layer); its error is reported.
            return Ok(total);
        }
    }
}

/// A chunk buffer both consumers are done with, or a new one. Each chunk
/// comes back twice; only the second return finds it unshared.
fn reusable(recycle: &Receiver<Chunk>) -> Vec<u8> {
    while let Ok(chunk) = recycle.try_recv() {
        if let Ok(v) = Arc::try_unwrap(chunk) {
            return v;
        }
    }
    Vec::with_capacity(CHUNK)
}

/// The unpack thread: turns tar entries into objects and index entries.
fn unpack(repo: &Path, claims: &Arc<Claims>, me: u64, limits: &Limits, mut reader: ChunkReader) -> Unpacked {
    let mut writer = ObjectWriter::new(repo, claims, me);
    writer.record_content_digests();
    let entries = read_entries(&mut reader, &mut writer, limits).and_then(|entries| {
        // The rest of the stream (padding after the end marker) still counts for the diff_id, which
        // the other thread hashes; taking it here lets the decoder finish and report its errors.
        reader.drain().context("reading past the end of the tar archive")?;
        Ok(entries)
    });
    Unpacked {
        entries,
        created: std::mem::take(&mut writer.created),
        content_digests: writer.content_digests.take().unwrap_or_default(),
    }
}

/// Reads every tar entry, checks it and stores its content.
fn read_entries(r: &mut dyn Read, writer: &mut ObjectWriter<'_>, limits: &Limits) -> Result<Vec<Entry>> {
    let mut guarded = crate::store::targuard::TarGuard::new(r);
    let mut archive = tar::Archive::new(&mut guarded as &mut dyn Read);
    let mut entries = Vec::new();
    let mut paths = LayerPaths::default();
    for item in archive.entries().context("reading the tar archive")? {
        let mut item = item.context("reading a tar entry header")?;
        if entries.len() >= limits.max_entries {
            bail!("the layer has more than {} entries", limits.max_entries);
        }
        if let Some(entry) = read_entry(&mut item, writer, limits, &mut paths)? {
            paths.record(&entry.path, &entry.kind);
            entries.push(entry);
        }
    }
    Ok(entries)
}

/// Turns one tar entry into an index entry (None for entries that carry
/// nothing: the layer root, global PAX headers, aufs metadata).
fn read_entry(
    item: &mut tar::Entry<'_, &mut dyn Read>,
    writer: &mut ObjectWriter<'_>,
    limits: &Limits,
    paths: &mut LayerPaths,
) -> Result<Option<Entry>> {
    let etype = item.header().entry_type();
    if etype.is_pax_global_extensions() {
        return Ok(None);
    }
    let raw_path = item.path_bytes().into_owned();
    if etype.is_dir() && crate::store::tarsafe::is_root(&raw_path) {
        // `./` or `/` (umoci writes the latter): the layer root carries nothing.
        return Ok(None);
    }
    let path = normalise(&raw_path, limits)?;
    let name_for_errors = path.clone();
    let result = (|| {
        let meta = read_meta(item).context("reading its metadata")?;
        let header = item.header();
        if let Some(whiteout) = whiteout_entry(&path, meta.clone(), paths)? {
            return Ok(whiteout);
        }
        if path.is_empty() {
            if etype.is_dir() {
                return Ok(None);
            }
            bail!("a non-directory entry at the layer root");
        }
        let kind = match etype {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = item.size();
                if size > limits.max_entry_size {
                    bail!("file of {size} bytes exceeds the limit of {} bytes", limits.max_entry_size);
                }
                let om = ObjectMeta {
                    mode: meta.mode,
                    uid: meta.uid,
                    gid: meta.gid,
                    xattrs: meta
                        .xattrs
                        .iter()
                        .map(|(k, v)| (k.clone(), hex::decode(v).expect("hex we encoded")))
                        .collect(),
                };
                let object = writer.store(&om, size, item).context("storing its content")?;
                EntryKind::File { object, size }
            }
            tar::EntryType::Link => {
                let raw = item.link_name_bytes().context("hardlink without a target")?;
                let target = normalise(&raw, limits).context("its hardlink target")?;
                paths.check_hardlink(&path, &target)?;
                EntryKind::Hardlink { target }
            }
            tar::EntryType::Symlink => {
                let raw = item.link_name_bytes().context("symlink without a target")?;
                let target = String::from_utf8(raw.into_owned()).map_err(|_| anyhow!("symlink target is not UTF-8"))?;
                if target.is_empty() || target.len() > limits.max_path_len || target.contains('\0') {
                    bail!("symlink target is empty, too long or contains NUL");
                }
                EntryKind::Symlink { target }
            }
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Fifo => EntryKind::Fifo,
            tar::EntryType::Char | tar::EntryType::Block => {
                let major = header.device_major().context("device major")?.unwrap_or(0);
                let minor = header.device_minor().context("device minor")?.unwrap_or(0);
                if etype == tar::EntryType::Char {
                    EntryKind::CharDevice { major, minor }
                } else {
                    EntryKind::BlockDevice { major, minor }
                }
            }
            tar::EntryType::GNUSparse => bail!("sparse files are not supported"),
            other => bail!("unsupported entry type {:?}", other.as_byte() as char),
        };
        Ok(Some(Entry { path: path.clone(), kind, meta }))
    })();
    result.with_context(|| format!("entry {name_for_errors:?}"))
}

/// The entry an OCI whiteout name stands for: `None` when `path` is no
/// whiteout, `Some(None)` for one that carries nothing (aufs metadata).
/// Whiteouts are recognised by name, whatever their type.
pub(crate) fn whiteout_entry(path: &str, meta: Meta, paths: &LayerPaths) -> Result<Option<Option<Entry>>> {
    let base = path.rsplit('/').next().unwrap_or("");
    let Some(hidden) = base.strip_prefix(".wh.") else { return Ok(None) };
    paths.check_no_symlink_ancestor(path, "whiteout placed")?;
    if hidden == ".wh..opq" {
        return Ok(Some(Some(Entry { path: parent(path).to_string(), kind: EntryKind::OpaqueWhiteout, meta })));
    }
    if hidden.starts_with(".wh.") {
        return Ok(Some(None));
    }
    if hidden.is_empty() || hidden == "." || hidden == ".." {
        bail!("whiteout of an invalid name");
    }
    let parent = parent(path);
    let target = if parent.is_empty() { hidden.to_string() } else { format!("{parent}/{hidden}") };
    Ok(Some(Some(Entry { path: target, kind: EntryKind::Whiteout, meta })))
}

/// Mode, owner, mtime and xattrs, with PAX records taking precedence.
fn read_meta(item: &mut tar::Entry<'_, &mut dyn Read>) -> Result<Meta> {
    let header = item.header();
    let mode = header.mode().context("mode")? & 0o7777;
    let old = header.as_old();
    let mut uid = if blank_numeric(&old.uid) { 0 } else { header.uid().context("uid")? };
    let mut gid = if blank_numeric(&old.gid) { 0 } else { header.gid().context("gid")? };
    let mut mtime = header.mtime().map(|m| m as i64).unwrap_or(0);
    let mut xattrs = BTreeMap::new();
    if let Some(exts) = item.pax_extensions().context("PAX records")? {
        for ext in exts {
            let ext = ext.context("a PAX record")?;
            let Ok(key) = ext.key() else { continue };
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                if name.is_empty() {
                    bail!("an xattr with an empty name");
                }
                xattrs.insert(name.to_string(), hex::encode(ext.value_bytes()));
            } else if key == "uid" || key == "gid" {
                // PAX carries ids too large for the header's octal field.
                let v = ext.value().with_context(|| format!("PAX {key}"))?;
                let id: u64 = v.parse().with_context(|| format!("PAX {key} {v:?}"))?;
                if key == "uid" {
                    uid = id
                } else {
                    gid = id
                }
            } else if key == "mtime" {
                let v = ext.value().context("PAX mtime")?;
                let secs = v.split('.').next().unwrap_or("");
                mtime = secs.parse().with_context(|| format!("PAX mtime {v:?}"))?;
            }
        }
    }
    let uid = u32::try_from(uid).context("uid out of range")?;
    let gid = u32::try_from(gid).context("gid out of range")?;
    Ok(Meta { mode, uid, gid, mtime, xattrs })
}

/// An all-NUL or all-space numeric header field, which GNU tar and Go's
/// archive/tar read as 0 (some writers leave uid/gid empty).
fn blank_numeric(field: &[u8]) -> bool {
    field.iter().all(|&b| b == 0 || b == b' ')
}
