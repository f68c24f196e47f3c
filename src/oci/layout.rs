//! OCI image layout sources: `oci:DIR[:TAG]` directories and `oci-archive:FILE[:TAG]` tars.
//!
//! A layout is `oci-layout` (the version marker), `index.json` (the top-level
//! index, whose entries carry tags in `org.opencontainers.image.ref.name`
//! annotations) and `blobs/sha256/<hex>`. A directory is read in place; an
//! archive is a tar of the same tree, scanned once for its headers so that
//! every blob is then read straight out of the tar file at its offset: the
//! archive is never extracted.
//!
//! Safety: blob paths are derived from validated sha256 digests only, so no
//! name in `index.json` or a manifest can point outside `blobs/`. In a
//! directory, files are opened with `openat2(RESOLVE_BENEATH)` relative to the
//! layout's directory handle, so a symlink planted in the layout cannot lead
//! out of it either, and anything but a regular file is refused. Manifests and
//! configs are checked against their digests and sizes before they are used;
//! layer blobs are streamed and checked by the store.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path};
use std::sync::Arc;

use anyhow::{bail, ensure, Context, Result};
use async_trait::async_trait;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::digest::Digest;
use crate::error::DigestMismatch;
use crate::oci::descriptor_digest;
use crate::oci::platform::Platform;
use crate::oci::source::MAX_MANIFEST_SIZE;
use crate::oci::{BlobReader, ImageSource, RawManifest, ResolvedManifest};

/// The annotation that names a tag in a layout's `index.json`.
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// How deep indexes may nest (index.json → index → index → manifest).
const MAX_INDEX_DEPTH: usize = 4;

/// Most entries an archive may hold (a layout has a few per image; this only
/// bounds the memory a hostile archive can make the header scan use).
const MAX_ARCHIVE_ENTRIES: usize = 1_000_000;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// What a manifest-like blob is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Manifest,
    Index,
}

fn kind_of(media_type: &str) -> Option<Kind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Some(Kind::Manifest),
        OCI_INDEX | DOCKER_LIST => Some(Kind::Index),
        _ => None,
    }
}

/// An OCI image layout, as a directory or inside a tar archive.
pub struct OciLayoutSource {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for OciLayoutSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciLayoutSource").field("layout", &self.inner.describe()).finish_non_exhaustive()
    }
}

struct Inner {
    /// `oci:/path` or `oci-archive:/path`, for messages.
    name: String,
    tag: Option<String>,
    backing: Backing,
    /// The top-level `index.json`, parsed.
    index: ImageIndex,
}

enum Backing {
    /// The layout directory, opened once; files are opened beneath it.
    Dir(OwnedFd),
    /// The archive file and where each regular file's bytes are in it.
    Archive {
        file: Arc<File>,
        entries: HashMap<String, Section>,
        /// Why the archive may be truncated (no end-of-archive marker), said
        /// when a file the layout needs is missing from it.
        unterminated: Option<String>,
    },
}

/// A regular file's bytes inside an archive.
#[derive(Clone, Copy, Debug)]
struct Section {
    offset: u64,
    size: u64,
    /// A sparse member: its bytes at `offset` are not its content, so it is refused.
    sparse: bool,
}

impl OciLayoutSource {
    /// Opens the layout directory `path`; `tag` selects an image in it.
    pub fn open_dir(path: &Path, tag: Option<&str>) -> Result<Self> {
        let name = format!("oci:{}", path.display());
        let dir = rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .map_err(io::Error::from)
            .with_context(|| format!("opening OCI layout directory {}", path.display()))?;
        Inner::load(name, tag, Backing::Dir(dir))
    }

    /// Opens the OCI layout tar `path` (as `skopeo copy … oci-archive:` writes it);
    /// `tag` selects an image in it. Only the tar headers are read here.
    pub fn open_archive(path: &Path, tag: Option<&str>) -> Result<Self> {
        let name = format!("oci-archive:{}", path.display());
        let file = File::open(path).with_context(|| format!("opening OCI archive {}", path.display()))?;
        ensure!(file.metadata()?.file_type().is_file(), "OCI archive {} is not a regular file", path.display());
        let scan = scan_archive(&file).with_context(|| format!("reading OCI archive {}", path.display()))?;
        let backing = Backing::Archive { file: Arc::new(file), entries: scan.entries, unterminated: scan.unterminated };
        Inner::load(name, tag, backing)
    }

    /// The tags `index.json` names, in its order.
    pub fn tags(&self) -> Vec<String> {
        self.inner.tags()
    }
}

/// What the header scan found: each regular file's section, and, when the
/// archive ends without its end-of-archive marker, where it ends.
struct Scan {
    entries: HashMap<String, Section>,
    /// `Some(note)` when the file ends right after a member, without the two
    /// zero blocks that close a tar: it may have been cut at a member
    /// boundary. Not an error by itself (Go's archive/tar and Python's tarfile
    /// read such archives too), but said when something is then missing.
    unterminated: Option<String>,
}

/// Reads the headers of a tar file once (seeking over contents) and records
/// the offset and size of each regular file under its normalised path.
///
/// A truncated archive is reported as such, with the member it ends in: the
/// tar reader takes an end of file where a header should be for the end of
/// the archive, so without this check a cut archive would look like a layout
/// that lacks its last files.
fn scan_archive(file: &File) -> Result<Scan> {
    let len = file.metadata().context("reading the archive's size")?.len();
    let mut archive = tar::Archive::new(file);
    let mut entries = HashMap::new();
    // The last member seen and where the next header should start.
    let mut last: Option<String> = None;
    let mut next_header = 0u64;
    for entry in archive.entries_with_seek().context("reading tar headers")? {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) if next_header + 512 > len => match &last {
                Some(m) => bail!(
                    "the archive is truncated: it ends at byte {len}, inside the tar header at offset \
                     {next_header} after member {m} ({e})"
                ),
                None => bail!("not a tar archive: {len} bytes, less than one tar header"),
            },
            Err(e) => return Err(e).context("reading a tar header"),
        };
        let kind = entry.header().entry_type();
        let path = entry.path().context("reading a tar entry's name")?.into_owned();
        // The bytes stored for this member (a sparse member stores its map and
        // data chunks: the header's size, not the expanded one).
        let stored = if kind.is_gnu_sparse() { entry.header().entry_size()? } else { entry.size() };
        let data_at = entry.raw_file_position();
        if data_at.saturating_add(stored) > len {
            bail!(
                "the archive is truncated: it ends at byte {len}, inside member {} ({stored} bytes at offset \
                 {data_at}; {} of them present)",
                path.display(),
                len.saturating_sub(data_at)
            );
        }
        next_header = (data_at + stored).div_ceil(512) * 512;
        last = Some(path.display().to_string());
        if !(kind.is_file() || kind == tar::EntryType::Continuous || kind.is_gnu_sparse()) {
            continue; // directories, links and the rest are never blobs
        }
        // Sparse files store a map, not the content, at the offset.
        let sparse = kind.is_gnu_sparse()
            || match entry.pax_extensions().context("reading PAX headers")? {
                Some(exts) => exts.flatten().any(|e| e.key().is_ok_and(|k| k.starts_with("GNU.sparse."))),
                None => false,
            };
        let Some(key) = normalise_member(&path) else { continue };
        ensure!(entries.len() < MAX_ARCHIVE_ENTRIES, "more than {MAX_ARCHIVE_ENTRIES} files");
        let size = entry.size();
        entries.insert(key, Section { offset: data_at, size, sparse });
    }
    // The end-of-archive marker: two zero blocks where the next header would be.
    let mut marker = [0u8; 1024];
    let terminated = next_header + 1024 <= len
        && file.read_exact_at(&mut marker, next_header).is_ok()
        && marker.iter().all(|b| *b == 0);
    let unterminated = (!terminated).then(|| match &last {
        Some(m) => format!(
            "the archive may be truncated: it ends at byte {len}, right after member {m}, without the \
             end-of-archive marker"
        ),
        None => format!("the archive may be truncated: it ends at byte {len} and holds no member"),
    });
    Ok(Scan { entries, unterminated })
}

/// `./blobs/sha256/x` → `blobs/sha256/x`; names that climb out (`..`) are dropped.
fn normalise_member(path: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str()?),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// A reader over one section of a file, by positioned reads (shared file, no seeking).
struct SectionReader {
    file: Arc<File>,
    pos: u64,
    end: u64,
}

impl Read for SectionReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end - self.pos;
        if left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "OCI archive ends inside a blob"));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Inner {
    fn load(name: String, tag: Option<&str>, backing: Backing) -> Result<OciLayoutSource> {
        let mut inner = Inner { name, tag: tag.map(str::to_string), backing, index: ImageIndex::default() };
        let marker = inner.read_small("oci-layout", 4096)?.with_context(|| {
            format!("{} is not an OCI image layout: it has no oci-layout file{}", inner.name, inner.hint())
        })?;
        let marker: serde_json::Value =
            serde_json::from_slice(&marker).with_context(|| format!("{}: oci-layout is not JSON", inner.name))?;
        let version = marker.get("imageLayoutVersion").and_then(|v| v.as_str()).unwrap_or("");
        ensure!(
            version.split('.').next() == Some("1"),
            "{}: unsupported imageLayoutVersion {version:?} in oci-layout (expected 1.x)",
            inner.name
        );
        let index = inner.read_small("index.json", MAX_MANIFEST_SIZE)?.with_context(|| {
            format!("{} is not an OCI image layout: it has no index.json{}", inner.name, inner.hint())
        })?;
        inner.index = serde_json::from_slice(&index)
            .with_context(|| format!("{}: index.json is not a valid OCI index", inner.name))?;
        Ok(OciLayoutSource { inner: Arc::new(inner) })
    }

    /// `"; the archive may be truncated: …"` for an archive without its
    /// end-of-archive marker, else nothing: appended where a file is missing.
    fn hint(&self) -> String {
        match &self.backing {
            Backing::Archive { unterminated: Some(note), .. } => format!("; {note}"),
            _ => String::new(),
        }
    }

    fn describe(&self) -> String {
        match &self.tag {
            Some(t) => format!("{}:{t}", self.name),
            None => self.name.clone(),
        }
    }

    fn tags(&self) -> Vec<String> {
        let mut tags = Vec::new();
        for d in self.index.manifests() {
            if let Some(t) = ref_name(d) {
                if !tags.iter().any(|x| x == t) {
                    tags.push(t.to_string());
                }
            }
        }
        tags
    }

    /// Opens `rel` (a path inside the layout); `None` when it does not exist.
    fn open(&self, rel: &str) -> Result<Option<(Box<dyn Read + Send>, u64)>> {
        self.open_at(rel, 0)
    }

    /// Opens `rel` positioned at byte `offset` (at most its size); returns the reader and the full size.
    fn open_at(&self, rel: &str, offset: u64) -> Result<Option<(Box<dyn Read + Send>, u64)>> {
        match &self.backing {
            Backing::Dir(dir) => {
                let fd = match rustix::fs::openat2(
                    dir,
                    rel,
                    OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
                    Mode::empty(),
                    ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
                ) {
                    Ok(fd) => fd,
                    Err(rustix::io::Errno::NOENT) => return Ok(None),
                    Err(rustix::io::Errno::XDEV) => {
                        bail!("{}: {rel} leads outside the layout directory (a symlink out of it); refused", self.name)
                    }
                    Err(e) => return Err(io::Error::from(e)).with_context(|| format!("{}: opening {rel}", self.name)),
                };
                let mut file = File::from(fd);
                let meta = file.metadata().with_context(|| format!("{}: stat {rel}", self.name))?;
                ensure!(meta.file_type().is_file(), "{}: {rel} is not a regular file", self.name);
                // Regular files ignore O_NONBLOCK; it only kept a FIFO from blocking the open.
                ensure!(offset <= meta.len(), "{}: offset {offset} is past the end of {rel}", self.name);
                if offset > 0 {
                    file.seek(SeekFrom::Start(offset))?;
                }
                Ok(Some((Box::new(file), meta.len())))
            }
            Backing::Archive { file, entries, .. } => {
                let Some(s) = entries.get(rel) else { return Ok(None) };
                ensure!(!s.sparse, "{}: {rel} is a sparse file in the archive; refused", self.name);
                ensure!(offset <= s.size, "{}: offset {offset} is past the end of {rel}", self.name);
                let r = SectionReader { file: file.clone(), pos: s.offset + offset, end: s.offset + s.size };
                Ok(Some((Box::new(r), s.size)))
            }
        }
    }

    /// Reads `rel` whole, refusing more than `max` bytes; `None` when missing.
    fn read_small(&self, rel: &str, max: u64) -> Result<Option<Vec<u8>>> {
        let Some((reader, size)) = self.open(rel)? else { return Ok(None) };
        ensure!(size <= max, "{}: {rel} is {size} bytes, more than the {max} allowed", self.name);
        let mut bytes = Vec::with_capacity(size as usize);
        reader.take(max + 1).read_to_end(&mut bytes).with_context(|| format!("{}: reading {rel}", self.name))?;
        ensure!(bytes.len() as u64 <= max, "{}: {rel} is more than the {max} bytes allowed", self.name);
        Ok(Some(bytes))
    }

    /// A small blob named by `desc`, checked against its size and digest.
    fn small_blob(&self, desc: &Descriptor, what: &str) -> Result<Vec<u8>> {
        let digest = descriptor_digest(desc)?;
        ensure!(
            desc.size() <= MAX_MANIFEST_SIZE,
            "{}: {what} {digest} is {} bytes, more than the {MAX_MANIFEST_SIZE} allowed",
            self.name,
            desc.size()
        );
        let bytes = self.read_small(&blob_path(&digest), MAX_MANIFEST_SIZE)?.with_context(|| {
            format!("{}: {what} {digest} is missing (no {}){}", self.name, blob_path(&digest), self.hint())
        })?;
        ensure!(
            bytes.len() as u64 == desc.size(),
            "{}: {what} {digest} is {} bytes but its descriptor says {}",
            self.name,
            bytes.len(),
            desc.size()
        );
        check_digest(&bytes, &digest, what)?;
        Ok(bytes)
    }

    /// Fetches the manifest or index `desc` names and checks its declared media type.
    fn manifest_blob(&self, desc: &Descriptor) -> Result<(RawManifest, Kind)> {
        let media_type = desc.media_type().to_string();
        let kind = kind_of(&media_type).with_context(|| {
            format!("{}: {} has unsupported manifest media type {media_type:?}", self.name, desc.digest())
        })?;
        let bytes = self.small_blob(desc, if kind == Kind::Index { "index" } else { "manifest" })?;
        let digest = descriptor_digest(desc)?;
        check_embedded_media_type(&bytes, &media_type, &digest)?;
        Ok((RawManifest { digest, media_type, bytes }, kind))
    }

    /// The entries of `index.json` the reference selects.
    fn selected(&self) -> Result<Vec<&Descriptor>> {
        let all = self.index.manifests();
        ensure!(!all.is_empty(), "{}: index.json lists no images", self.name);
        let tags = || {
            let t = self.tags();
            if t.is_empty() {
                "none".to_string()
            } else {
                t.join(", ")
            }
        };
        match &self.tag {
            Some(tag) => {
                let hits: Vec<_> = all.iter().filter(|d| ref_name(d) == Some(tag.as_str())).collect();
                ensure!(!hits.is_empty(), "{}: no image tagged {tag:?}; tags: {}", self.name, tags());
                Ok(hits)
            }
            None if all.len() == 1 => Ok(vec![&all[0]]),
            None if all.iter().all(|d| d.platform().is_some()) => Ok(all.iter().collect()),
            None => {
                bail!("{} holds {} images: name one by tag ({}:TAG); tags: {}", self.name, all.len(), self.name, tags())
            }
        }
    }

    fn resolve(&self, platform: &Platform) -> Result<ResolvedManifest> {
        let selected = self.selected()?;
        let (desc, index_digest) = if selected.len() == 1 {
            let desc = selected[0];
            match kind_of(desc.media_type().as_ref()) {
                Some(Kind::Index) => {
                    let (raw, _) = self.manifest_blob(desc)?;
                    let index = parse_index(&raw)?;
                    let mut offered = Vec::new();
                    let found = self.find_in_index(&index.manifests().clone(), platform, 1, &mut offered)?;
                    let chosen = found.with_context(|| no_platform(&self.describe(), platform, &offered))?;
                    (chosen, Some(raw.digest))
                }
                _ => (desc.clone(), None),
            }
        } else {
            // Several entries share the tag (or no tag and all have platforms):
            // index.json itself acts as the platform index.
            let entries: Vec<Descriptor> = selected.into_iter().cloned().collect();
            let mut offered = Vec::new();
            let found = self.find_in_index(&entries, platform, 0, &mut offered)?;
            let chosen = found.with_context(|| no_platform(&self.describe(), platform, &offered))?;
            (chosen, None)
        };
        let (raw, kind) = self.manifest_blob(&desc)?;
        ensure!(kind == Kind::Manifest, "{}: {} is not an image manifest", self.name, raw.digest);
        let manifest: ImageManifest = serde_json::from_slice(&raw.bytes)
            .with_context(|| format!("{}: parsing image manifest {}", self.name, raw.digest))?;
        Ok(ResolvedManifest { raw, manifest, index_digest })
    }

    /// Picks the image manifest for `platform` among `entries`, descending into
    /// nested indexes; records the platforms seen in `offered`.
    fn find_in_index(
        &self,
        entries: &[Descriptor],
        platform: &Platform,
        depth: usize,
        offered: &mut Vec<String>,
    ) -> Result<Option<Descriptor>> {
        ensure!(depth <= MAX_INDEX_DEPTH, "{}: indexes nest deeper than {MAX_INDEX_DEPTH} levels", self.name);
        let fits = |d: &Descriptor| {
            d.platform()
                .as_ref()
                .map(|p| platform.matches(&p.os().to_string(), &p.architecture().to_string(), p.variant().as_deref()))
        };
        for d in entries.iter().filter(|d| kind_of(d.media_type().as_ref()) == Some(Kind::Manifest)) {
            if let Some(p) = d.platform() {
                let mut s = format!("{}/{}", p.os(), p.architecture());
                if let Some(v) = p.variant() {
                    s = format!("{s}/{v}");
                }
                if !offered.contains(&s) {
                    offered.push(s);
                }
            }
            if fits(d) == Some(true) {
                return Ok(Some(d.clone()));
            }
        }
        for d in entries.iter().filter(|d| kind_of(d.media_type().as_ref()) == Some(Kind::Index)) {
            if fits(d) == Some(false) {
                continue;
            }
            let (raw, _) = self.manifest_blob(d)?;
            let nested = parse_index(&raw)?;
            if let Some(found) = self.find_in_index(nested.manifests(), platform, depth + 1, offered)? {
                return Ok(Some(found));
            }
        }
        // A single image without a declared platform (as single-arch tools write
        // them): the image config, checked later, says what it is for.
        let manifests: Vec<_> =
            entries.iter().filter(|d| kind_of(d.media_type().as_ref()) == Some(Kind::Manifest)).collect();
        if manifests.len() == 1 && manifests[0].platform().is_none() {
            return Ok(Some(manifests[0].clone()));
        }
        Ok(None)
    }

    fn fetch_manifest(&self, reference: &str) -> Result<Option<RawManifest>> {
        if reference.contains(':') {
            let digest: Digest = reference.parse().with_context(|| format!("manifest reference {reference:?}"))?;
            let Some(bytes) = self.read_small(&blob_path(&digest), MAX_MANIFEST_SIZE)? else { return Ok(None) };
            check_digest(&bytes, &digest, "manifest")?;
            let media_type = match embedded_media_type(&bytes) {
                Some(m) => m,
                None => {
                    let known = self.index.manifests().iter().find(|d| d.digest().to_string() == reference);
                    match known {
                        Some(d) => d.media_type().to_string(),
                        None => sniff_media_type(&bytes)
                            .with_context(|| format!("{}: blob {digest} is not a manifest", self.name))?,
                    }
                }
            };
            ensure!(
                kind_of(&media_type).is_some(),
                "{}: {digest} has unsupported media type {media_type:?}",
                self.name
            );
            return Ok(Some(RawManifest { digest, media_type, bytes }));
        }
        let hits: Vec<_> = self.index.manifests().iter().filter(|d| ref_name(d) == Some(reference)).collect();
        let Some(first) = hits.first() else { return Ok(None) };
        ensure!(
            hits.iter().all(|d| d.digest() == first.digest()),
            "{}: tag {reference:?} names {} different manifests",
            self.name,
            hits.len()
        );
        Ok(Some(self.manifest_blob(first)?.0))
    }

    fn open_blob(&self, desc: &Descriptor, offset: u64) -> Result<Box<dyn Read + Send>> {
        let digest = descriptor_digest(desc)?;
        let path = blob_path(&digest);
        let (reader, size) = self
            .open_at(&path, offset.min(desc.size()))?
            .with_context(|| format!("{}: blob {digest} is missing (no {path}){}", self.name, self.hint()))?;
        ensure!(
            size == desc.size(),
            "{}: blob {digest} is {size} bytes but its descriptor says {}",
            self.name,
            desc.size()
        );
        ensure!(offset <= size, "{}: offset {offset} is past the end of blob {digest} ({size} bytes)", self.name);
        Ok(reader)
    }
}

fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations().as_ref()?.get(REF_NAME_ANNOTATION).map(String::as_str)
}

/// `blobs/sha256/<hex>`: the only kind of blob path a layout source opens.
/// `Digest` admits only `sha256:` and 64 lowercase hex digits, so no index
/// or manifest can name a path outside `blobs/`.
fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm(), digest.hex())
}

fn check_digest(bytes: &[u8], expected: &Digest, what: &str) -> Result<()> {
    let actual = Digest::of(bytes);
    if &actual != expected {
        return Err(DigestMismatch { what: what.to_string(), expected: expected.clone(), actual }.into());
    }
    Ok(())
}

fn embedded_media_type(bytes: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
    }
    serde_json::from_slice::<Probe>(bytes).ok()?.media_type
}

fn sniff_media_type(bytes: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    if v.get("manifests").is_some() {
        Some(OCI_INDEX.to_string())
    } else if v.get("layers").is_some() && v.get("config").is_some() {
        Some(OCI_MANIFEST.to_string())
    } else {
        None
    }
}

/// A manifest that states its own media type must agree with its descriptor,
/// so that a blob cannot be read as one kind and signed as another.
fn check_embedded_media_type(bytes: &[u8], declared: &str, digest: &Digest) -> Result<()> {
    if let Some(inside) = embedded_media_type(bytes) {
        ensure!(inside == declared, "manifest {digest} says it is {inside:?} but its descriptor says {declared:?}");
    }
    Ok(())
}

fn parse_index(raw: &RawManifest) -> Result<ImageIndex> {
    serde_json::from_slice(&raw.bytes).with_context(|| format!("parsing image index {}", raw.digest))
}

fn no_platform(name: &str, platform: &Platform, offered: &[String]) -> String {
    let offered = if offered.is_empty() { "no platforms declared".to_string() } else { offered.join(", ") };
    format!("{name} has no image for {platform}; offered: {offered}")
}

/// Runs blocking layout work off the async runtime.
async fn blocking<T: Send + 'static>(
    inner: &Arc<Inner>,
    f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
) -> Result<T> {
    let inner = inner.clone();
    tokio::task::spawn_blocking(move || f(&inner)).await.context("layout task panicked")?
}

#[async_trait]
impl ImageSource for OciLayoutSource {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn resolve(&self, platform: &Platform) -> Result<ResolvedManifest> {
        let platform = platform.clone();
        blocking(&self.inner, move |i| i.resolve(&platform)).await
    }
    async fn fetch_manifest(&self, reference: &str) -> Result<Option<RawManifest>> {
        let reference = reference.to_string();
        blocking(&self.inner, move |i| i.fetch_manifest(&reference)).await
    }
    async fn referrers(&self, _subject: &Digest) -> Result<Vec<Descriptor>> {
        // Layouts have no referrers API; signatures travel as tags, if at all.
        Ok(Vec::new())
    }
    async fn fetch_small_blob(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        let desc = desc.clone();
        blocking(&self.inner, move |i| i.small_blob(&desc, "blob")).await
    }
    async fn open_blob(&self, desc: &Descriptor, offset: u64) -> Result<BlobReader> {
        let desc = desc.clone();
        Ok(BlobReader::Sync(blocking(&self.inner, move |i| i.open_blob(&desc, offset)).await?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A layout built by hand in a temp dir: what the hostile cases need.
    struct Fixture {
        dir: tempfile::TempDir,
        index: Vec<serde_json::Value>,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("blobs/sha256")).unwrap();
            std::fs::write(dir.path().join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
            Fixture { dir, index: Vec::new() }
        }

        fn blob(&self, bytes: &[u8]) -> (Digest, u64) {
            let d = Digest::of(bytes);
            std::fs::write(self.dir.path().join(blob_path(&d)), bytes).unwrap();
            (d, bytes.len() as u64)
        }

        fn desc(media_type: &str, (d, size): (Digest, u64)) -> serde_json::Value {
            json!({"mediaType": media_type, "digest": d.to_string(), "size": size})
        }

        /// An image with one layer of `content`; returns its manifest descriptor.
        fn image(&self, content: &[u8]) -> serde_json::Value {
            let layer = self.blob(content);
            let config = self.blob(
                json!({"architecture": "amd64", "os": "linux",
                       "rootfs": {"type": "layers", "diff_ids": [layer.0.to_string()]}})
                .to_string()
                .as_bytes(),
            );
            let manifest = json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": Self::desc("application/vnd.oci.image.config.v1+json", config),
                "layers": [Self::desc("application/vnd.oci.image.layer.v1.tar", layer)]});
            Self::desc(OCI_MANIFEST, self.blob(manifest.to_string().as_bytes()))
        }

        fn index_blob(&self, entries: Vec<serde_json::Value>) -> serde_json::Value {
            let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries});
            Self::desc(OCI_INDEX, self.blob(index.to_string().as_bytes()))
        }

        fn add(&mut self, mut desc: serde_json::Value, tag: Option<&str>) {
            if let Some(t) = tag {
                desc["annotations"] = json!({ REF_NAME_ANNOTATION: t });
            }
            self.index.push(desc);
        }

        fn write_index(&self) {
            let index = json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.index});
            std::fs::write(self.dir.path().join("index.json"), index.to_string()).unwrap();
        }

        fn open(&self, tag: Option<&str>) -> Result<OciLayoutSource> {
            self.write_index();
            OciLayoutSource::open_dir(self.dir.path(), tag)
        }

        /// The layout as a tar (as skopeo writes `oci-archive:`), with a `./` prefix on names.
        fn archive(&self) -> tempfile::NamedTempFile {
            self.write_index();
            let file = tempfile::NamedTempFile::new().unwrap();
            let mut b = tar::Builder::new(file.reopen().unwrap());
            b.append_dir_all(".", self.dir.path()).unwrap();
            b.finish().unwrap();
            file
        }
    }

    fn with_platform(mut d: serde_json::Value, os: &str, arch: &str) -> serde_json::Value {
        d["platform"] = json!({"os": os, "architecture": arch});
        d
    }

    fn amd64() -> Platform {
        "linux/amd64".parse().unwrap()
    }

    fn resolve(src: &OciLayoutSource, p: &Platform) -> Result<ResolvedManifest> {
        src.inner.resolve(p)
    }

    fn read_all(src: &OciLayoutSource, desc: &Descriptor, offset: u64) -> Vec<u8> {
        let mut out = Vec::new();
        src.inner.open_blob(desc, offset).unwrap().read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn tags_select_images_and_a_missing_tag_lists_the_tags() {
        let mut f = Fixture::new();
        let (a, b) = (f.image(b"layer a"), f.image(b"layer b"));
        f.add(a.clone(), Some("v1"));
        f.add(b.clone(), Some("v2"));
        let got = resolve(&f.open(Some("v2")).unwrap(), &amd64()).unwrap();
        assert_eq!(got.raw.digest.to_string(), b["digest"]);
        assert_eq!(got.index_digest, None);
        let err = format!("{:#}", resolve(&f.open(Some("v3")).unwrap(), &amd64()).unwrap_err());
        assert!(err.contains("no image tagged \"v3\"") && err.contains("tags: v1, v2"), "{err}");
        let err = format!("{:#}", f.open(None).and_then(|s| resolve(&s, &amd64())).unwrap_err());
        assert!(err.contains("holds 2 images") && err.contains("v1, v2"), "{err}");
        assert_eq!(f.open(None).unwrap().tags(), ["v1", "v2"]);
    }

    #[test]
    fn the_only_image_needs_no_tag() {
        let mut f = Fixture::new();
        let a = f.image(b"only");
        f.add(a.clone(), None);
        let got = resolve(&f.open(None).unwrap(), &amd64()).unwrap();
        assert_eq!(got.raw.digest.to_string(), a["digest"]);
        assert_eq!(got.manifest.layers().len(), 1);
    }

    #[test]
    fn nested_indexes_resolve_by_platform_and_errors_name_the_offered_platforms() {
        let mut f = Fixture::new();
        let arm = with_platform(f.image(b"arm"), "linux", "arm64");
        let x86 = with_platform(f.image(b"x86"), "linux", "amd64");
        let inner = f.index_blob(vec![x86.clone()]);
        let outer = f.index_blob(vec![arm.clone(), inner]);
        f.add(outer.clone(), Some("multi"));
        let src = f.open(Some("multi")).unwrap();
        let got = resolve(&src, &amd64()).unwrap();
        assert_eq!(got.raw.digest.to_string(), x86["digest"]);
        assert_eq!(got.index_digest.unwrap().to_string(), outer["digest"]);
        let got = resolve(&src, &"linux/arm64".parse().unwrap()).unwrap();
        assert_eq!(got.raw.digest.to_string(), arm["digest"]);
        let err = format!("{:#}", resolve(&src, &"linux/s390x".parse().unwrap()).unwrap_err());
        assert!(err.contains("no image for linux/s390x") && err.contains("linux/arm64, linux/amd64"), "{err}");
    }

    #[test]
    fn tampered_manifest_is_a_digest_mismatch() {
        let mut f = Fixture::new();
        let a = f.image(b"x");
        let d: Digest = a["digest"].as_str().unwrap().parse().unwrap();
        let path = f.dir.path().join(blob_path(&d));
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n - 2] = b' ';
        std::fs::write(&path, bytes).unwrap();
        f.add(a, None);
        let err = resolve(&f.open(None).unwrap(), &amd64()).unwrap_err();
        assert!(err.chain().any(|c| c.is::<DigestMismatch>()), "{err:#}");
    }

    #[test]
    fn manifest_media_type_must_agree_with_its_descriptor() {
        let mut f = Fixture::new();
        let mut a = f.image(b"x");
        a["mediaType"] = json!(DOCKER_MANIFEST);
        f.add(a, None);
        let err = format!("{:#}", resolve(&f.open(None).unwrap(), &amd64()).unwrap_err());
        assert!(err.contains("says it is"), "{err}");
    }

    #[test]
    fn hostile_index_with_a_path_for_a_digest_is_refused() {
        let mut f = Fixture::new();
        f.add(json!({"mediaType": OCI_MANIFEST, "digest": "sha256:../../../../etc/passwd", "size": 10}), None);
        let err = format!("{:#}", f.open(None).expect_err("must fail"));
        assert!(err.contains("index.json is not a valid OCI index"), "{err}");
        let mut f = Fixture::new();
        f.add(json!({"mediaType": OCI_MANIFEST, "digest": "sha512:abcd", "size": 10}), None);
        let err = format!("{:#}", f.open(None).and_then(|s| resolve(&s, &amd64())).expect_err("must fail"));
        assert!(err.contains("sha512") || err.contains("not a valid OCI index"), "{err}");
    }

    #[test]
    fn hostile_blob_symlink_out_of_the_layout_is_refused() {
        let mut f = Fixture::new();
        let a = f.image(b"x");
        let d: Digest = a["digest"].as_str().unwrap().parse().unwrap();
        let path = f.dir.path().join(blob_path(&d));
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::copy(&path, outside.path()).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(outside.path(), &path).unwrap();
        f.add(a, None);
        let err = format!("{:#}", resolve(&f.open(None).unwrap(), &amd64()).unwrap_err());
        assert!(err.contains("leads outside the layout"), "{err}");
    }

    #[test]
    fn not_a_layout_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let err = format!("{:#}", OciLayoutSource::open_dir(dir.path(), None).err().unwrap());
        assert!(err.contains("no oci-layout file"), "{err}");
        let err = format!("{:#}", OciLayoutSource::open_dir(&dir.path().join("nope"), None).err().unwrap());
        assert!(err.contains("opening OCI layout directory"), "{err}");
    }

    #[test]
    fn archive_blobs_are_read_in_place_at_any_offset() {
        let mut f = Fixture::new();
        let content: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let a = f.image(&content);
        f.add(a, Some("v1"));
        let tar = f.archive();
        let src = OciLayoutSource::open_archive(tar.path(), Some("v1")).unwrap();
        let got = resolve(&src, &amd64()).unwrap();
        let layer = &got.manifest.layers()[0];
        assert_eq!(read_all(&src, layer, 0), content);
        assert_eq!(read_all(&src, layer, 12_345), content[12_345..]);
        assert_eq!(read_all(&src, layer, content.len() as u64), b"");
        assert!(src.inner.open_blob(layer, content.len() as u64 + 1).is_err());
        let config = src.inner.small_blob(got.manifest.config(), "config").unwrap();
        assert!(String::from_utf8(config).unwrap().contains("diff_ids"));
        let missing = OciLayoutSource::open_archive(&f.dir.path().join("oci-layout"), None);
        assert!(missing.is_err(), "a non-tar must not open as an archive");
    }

    /// An archive cut anywhere is refused as truncated, naming where; one
    /// that only lacks its end-of-archive marker is read (as Go's
    /// archive/tar and Python's tarfile read it).
    #[test]
    fn truncated_archive_is_reported_as_truncated_with_the_member_and_offset() {
        let mut f = Fixture::new();
        let content: Vec<u8> = (0..20_000u32).map(|i| (i * 13 % 251) as u8).collect();
        let a = f.image(&content);
        f.add(a, Some("v1"));
        let tar = f.archive();
        let whole = std::fs::read(tar.path()).unwrap();
        let cut_to = |n: usize| {
            std::fs::write(tar.path(), &whole[..n]).unwrap();
            OciLayoutSource::open_archive(tar.path(), Some("v1")).map(|_| ()).map_err(|e| format!("{e:#}"))
        };
        // Find the layer's data by its first bytes.
        let at = whole.windows(64).position(|w| w == &content[..64]).unwrap();
        let e = cut_to(at + 5000).unwrap_err();
        assert!(e.contains(&format!("the archive is truncated: it ends at byte {}, inside member ", at + 5000)), "{e}");
        assert!(e.contains(&format!("(20000 bytes at offset {at}; 5000 of them present)")), "{e}");
        // Inside the header that follows the layer.
        let next = (at + 20_000).div_ceil(512) * 512;
        let e = cut_to(next + 10).unwrap_err();
        assert!(e.contains(&format!("inside the tar header at offset {next} after member ")), "{e}");
        // Without the two zero blocks (and the builder's padding): complete, so read.
        let end = whole.len() - whole.iter().rev().take_while(|b| **b == 0).count();
        let end = end.div_ceil(512) * 512;
        cut_to(end).unwrap();
        cut_to(whole.len()).unwrap();
        let e = cut_to(100).unwrap_err();
        assert!(e.contains("not a tar archive"), "{e}");
    }

    #[test]
    fn archive_members_climbing_out_are_ignored() {
        assert_eq!(normalise_member(Path::new("./blobs/sha256/ab")).as_deref(), Some("blobs/sha256/ab"));
        assert_eq!(normalise_member(Path::new("/index.json")).as_deref(), Some("index.json"));
        assert_eq!(normalise_member(Path::new("blobs/../../index.json")), None);
        assert_eq!(normalise_member(Path::new(".")), None);
    }

    #[test]
    fn fetch_manifest_by_tag_and_digest() {
        let mut f = Fixture::new();
        let a = f.image(b"x");
        f.add(a.clone(), Some("v1"));
        let src = f.open(None).unwrap();
        let by_tag = src.inner.fetch_manifest("v1").unwrap().unwrap();
        assert_eq!(by_tag.digest.to_string(), a["digest"]);
        let by_digest = src.inner.fetch_manifest(a["digest"].as_str().unwrap()).unwrap().unwrap();
        assert_eq!(by_digest.bytes, by_tag.bytes);
        assert_eq!(by_digest.media_type, OCI_MANIFEST);
        assert!(src.inner.fetch_manifest("v2").unwrap().is_none());
        assert!(src.inner.fetch_manifest(&Digest::of(b"nothing").to_string()).unwrap().is_none());
    }
}
