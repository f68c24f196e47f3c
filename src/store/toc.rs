//! zstd:chunked layers: the descriptor annotations that locate a layer's table
//! of contents (TOC), the TOC itself, and the checks that make it safe to
//! build a layer from it instead of from the tar stream.
//!
//! Format facts (containers/storage `pkg/chunked`): a zstd:chunked blob is an
//! ordinary `tar+zstd` stream in which every regular file's content starts a
//! zstd frame of its own (large files are cut into several "chunks", each in
//! its own frames), followed by skippable frames holding the TOC (zstd
//! compressed JSON), the tar-split and a footer. The descriptor's annotations
//! `…zstd-chunked.manifest-position` (`offset:length:uncompressed length:type`,
//! the offset of the compressed TOC bytes inside the blob) and
//! `…zstd-chunked.manifest-checksum` (sha256 of those compressed bytes) pin the
//! TOC: the manifest, which signatures cover, names its digest. podman 4.x
//! writes the keys with the prefix `io.containers.`, later releases with
//! `io.github.containers.`; both are read.
//!
//! Everything here is pure: parsing takes bytes, [`plan`] takes a parsed TOC
//! and the blob's size and returns, per distinct file content, the byte ranges
//! to fetch, or refuses a TOC that lies (ranges outside the blob or over the
//! TOC itself, ranges shared by different contents, sizes that do not add up,
//! duplicate paths, unknown entry types).

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;

use crate::digest::Digest;

/// Annotation prefixes of zstd:chunked keys: podman 4.x, then later releases.
const PREFIXES: [&str; 2] = ["io.containers.zstd-chunked.", "io.github.containers.zstd-chunked."];
/// The one TOC type there is (CRFS-compatible JSON).
const TOC_TYPE_CRFS: u64 = 1;
/// Largest compressed or uncompressed TOC accepted (containers/storage: 150 MiB).
pub const MAX_TOC_SIZE: u64 = 150 << 20;

/// Where a layer's TOC is and what it must hash to, from its descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TocLocation {
    /// sha256 of the compressed TOC bytes (`manifest-checksum`).
    pub digest: Digest,
    /// Offset of the compressed TOC in the blob.
    pub offset: u64,
    /// Its compressed length.
    pub length: u64,
    /// Its uncompressed length.
    pub uncompressed: u64,
}

impl TocLocation {
    /// The byte range of the compressed TOC in the blob.
    pub fn range(&self) -> Range<u64> {
        self.offset..self.offset + self.length
    }
}

/// The TOC location of a zstd layer's descriptor annotations: `Ok(None)` for
/// a layer without them (an ordinary zstd or gzip layer); an error for
/// annotations that are present but malformed, or that point outside a blob
/// of `blob_size` bytes.
pub fn location(annotations: Option<&HashMap<String, String>>, blob_size: u64) -> Result<Option<TocLocation>> {
    let Some(annotations) = annotations else { return Ok(None) };
    let get = |key: &str| PREFIXES.iter().find_map(|p| annotations.get(&format!("{p}{key}")));
    let (Some(checksum), Some(position)) = (get("manifest-checksum"), get("manifest-position")) else {
        return Ok(None);
    };
    let digest: Digest = checksum.parse().with_context(|| format!("zstd:chunked manifest-checksum {checksum:?}"))?;
    let fields: Vec<u64> = position
        .split(':')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .with_context(|| format!("zstd:chunked manifest-position {position:?}"))?;
    let [offset, length, uncompressed, kind] = fields[..] else {
        bail!("zstd:chunked manifest-position {position:?}: four numbers expected");
    };
    ensure!(kind == TOC_TYPE_CRFS, "zstd:chunked manifest-position {position:?}: unknown TOC type {kind}");
    ensure!(
        length > 0 && length <= MAX_TOC_SIZE && uncompressed <= MAX_TOC_SIZE,
        "zstd:chunked TOC of {length} bytes ({uncompressed} uncompressed): over the {MAX_TOC_SIZE}-byte limit or empty"
    );
    ensure!(
        offset.checked_add(length).is_some_and(|end| end <= blob_size),
        "zstd:chunked TOC at {offset}+{length} lies outside the {blob_size}-byte blob"
    );
    Ok(Some(TocLocation { digest, offset, length, uncompressed }))
}

/// A parsed TOC.
#[derive(Clone, Debug, Deserialize)]
pub struct Toc {
    /// Format version (1).
    pub version: u32,
    /// Entries in tar order.
    #[serde(default)]
    pub entries: Vec<TocEntry>,
}

/// One TOC entry, as containers/storage writes it (a tar header's metadata
/// plus where a file's content is in the blob).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TocEntry {
    /// `reg`, `chunk`, `dir`, `symlink`, `hardlink`, `char`, `block`, `fifo`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The tar name (`./usr/bin/x`).
    pub name: String,
    /// Symlink or hardlink target.
    #[serde(default)]
    pub link_name: String,
    /// Mode bits.
    #[serde(default)]
    pub mode: i64,
    /// Regular file size.
    #[serde(default)]
    pub size: i64,
    /// Owner user id.
    #[serde(default)]
    pub uid: i64,
    /// Owner group id.
    #[serde(default)]
    pub gid: i64,
    /// RFC 3339 modification time.
    #[serde(default, rename = "modtime")]
    pub mod_time: Option<String>,
    /// Device major number.
    #[serde(default)]
    pub dev_major: i64,
    /// Device minor number.
    #[serde(default)]
    pub dev_minor: i64,
    /// Extended attributes: name → base64 value.
    #[serde(default)]
    pub xattrs: BTreeMap<String, String>,
    /// `sha256:<hex>` of the whole file's content (regular files).
    #[serde(default)]
    pub digest: String,
    /// Start of the (first) compressed frame(s) in the blob.
    #[serde(default)]
    pub offset: i64,
    /// End of them.
    #[serde(default)]
    pub end_offset: i64,
    /// With chunks: this chunk's uncompressed size.
    #[serde(default)]
    pub chunk_size: i64,
    /// With chunks: where this chunk starts in the file.
    #[serde(default)]
    pub chunk_offset: i64,
    /// `""` (data) or `zeros` (a hole: no bytes in the blob).
    #[serde(default)]
    pub chunk_type: String,
    /// With chunks: `sha256:<hex>` of this chunk's uncompressed bytes (what a
    /// later pull finds unchanged chunks of a changed file by).
    #[serde(default)]
    pub chunk_digest: String,
}

/// Decompresses (at most `uncompressed` bytes) and parses a TOC whose
/// compressed bytes were already checked against [`TocLocation::digest`].
pub fn parse(compressed: &[u8], uncompressed: u64) -> Result<Toc> {
    let mut json = Vec::new();
    let decoder = zstd::stream::read::Decoder::new(compressed).context("starting the TOC's zstd decoder")?;
    std::io::Read::read_to_end(&mut std::io::Read::take(decoder, uncompressed + 1), &mut json)
        .context("decompressing the TOC")?;
    ensure!(
        json.len() as u64 == uncompressed,
        "the TOC decompresses to {}{} bytes but its annotation says {uncompressed}",
        if json.len() as u64 > uncompressed { "more than " } else { "" },
        json.len().min(uncompressed as usize)
    );
    let toc: Toc = serde_json::from_slice(&json).context("parsing the TOC")?;
    ensure!(toc.version == 1, "TOC version {} (this hostctl reads version 1)", toc.version);
    Ok(toc)
}

/// One piece of a file's content in the blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Compressed bytes (one or more zstd frames) decompressing to `size` bytes.
    Frames {
        /// The bytes in the blob.
        range: Range<u64>,
        /// What they decompress to.
        size: u64,
    },
    /// `size` zero bytes, not stored in the blob.
    Zeros {
        /// How many.
        size: u64,
    },
}

/// Where one distinct file content is, and what it hashes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Content {
    /// sha256 of the content.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
    /// Its pieces, in file order.
    pub pieces: Vec<Piece>,
    /// The sha256 of each piece's bytes where the TOC gives one (its
    /// `chunkDigest`; a one-piece file's is its content digest), beside `pieces`.
    pub chunk_digests: Vec<Option<Digest>>,
}

impl Piece {
    /// How many bytes of the file it makes.
    pub fn size(&self) -> u64 {
        match self {
            Piece::Frames { size, .. } | Piece::Zeros { size } => *size,
        }
    }
}

impl Content {
    /// Each piece with where it starts in the file and its digest, if the TOC gave one.
    pub fn pieces_at(&self) -> impl Iterator<Item = (u64, &Piece, Option<&Digest>)> + '_ {
        let starts = self.pieces.iter().scan(0u64, |at, p| {
            let start = *at;
            *at += p.size();
            Some(start)
        });
        starts.zip(&self.pieces).zip(&self.chunk_digests).map(|((at, p), d)| (at, p, d.as_ref()))
    }

    /// The compressed byte ranges to fetch.
    pub fn ranges(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Frames { range, .. } => Some(range.clone()),
            Piece::Zeros { .. } => None,
        })
    }
}

/// A checked TOC: its entries (chunk entries folded into their files) and
/// every distinct non-empty file content with its ranges.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The non-chunk entries, in TOC order, with each regular file's digest
    /// (None for empty files).
    pub entries: Vec<(TocEntry, Option<Digest>)>,
    /// Distinct contents by digest.
    pub contents: BTreeMap<Digest, Content>,
}

/// Checks `toc` against a blob of `blob_size` bytes whose TOC occupies
/// `toc_range`, and lists what to fetch. Refused: unknown entry types,
/// duplicate names, negative or inconsistent sizes and offsets, chunks that
/// do not tile their file, ranges outside the blob or overlapping the TOC,
/// one content digest with two sizes, and ranges of different contents that
/// overlap.
pub fn plan(toc: &Toc, blob_size: u64, toc_range: &Range<u64>) -> Result<Plan> {
    let mut entries: Vec<(TocEntry, Option<Digest>)> = Vec::new();
    let mut contents: BTreeMap<Digest, Content> = BTreeMap::new();
    let mut names = std::collections::HashSet::new();
    let mut i = 0;
    while i < toc.entries.len() {
        let e = &toc.entries[i];
        let what = || format!("TOC entry {:?}", e.name);
        match e.kind.as_str() {
            "reg" => {}
            "dir" | "symlink" | "hardlink" | "char" | "block" | "fifo" => {
                ensure!(names.insert(e.name.trim_end_matches('/')), "{}: the TOC names it twice", what());
                entries.push((e.clone(), None));
                i += 1;
                continue;
            }
            "chunk" => bail!("{}: a chunk entry without its file", what()),
            other => bail!("{}: unknown entry type {other:?}", what()),
        }
        ensure!(names.insert(e.name.trim_end_matches('/')), "{}: the TOC names it twice", what());
        ensure!(e.size >= 0, "{}: negative size {}", what(), e.size);
        let size = e.size as u64;
        // The file's chunk entries follow it.
        let mut j = i + 1;
        while j < toc.entries.len() && toc.entries[j].kind == "chunk" {
            j += 1;
        }
        let chunks = &toc.entries[i..j];
        if size == 0 {
            ensure!(chunks.len() == 1, "{}: an empty file with chunks", what());
            entries.push((e.clone(), None));
            i = j;
            continue;
        }
        let digest: Digest = e.digest.parse().with_context(|| format!("{}: content digest {:?}", what(), e.digest))?;
        let mut pieces = Vec::new();
        let mut chunk_digests = Vec::new();
        let mut at = 0u64;
        // Where chunk `n`'s frames end: its own `endOffset` where it has one
        // that stops before the next chunk, else the next chunk's start, else
        // the file's `endOffset` (podman 4.x writes chunk entries with an
        // offset only, the file's `endOffset` after its last chunk, and
        // `zeros` chunks as frames of their own, which are not fetched).
        let end_of = |n: usize| -> i64 {
            let next = chunks[n + 1..].iter().find(|c| c.offset > 0).map(|c| c.offset);
            let own = Some(chunks[n].end_offset).filter(|e| *e > chunks[n].offset);
            match (own, next) {
                (Some(e), Some(next)) => e.min(next),
                (Some(e), None) => e,
                (None, Some(next)) => next,
                (None, None) => e.end_offset,
            }
        };
        for (n, c) in chunks.iter().enumerate() {
            let chunked = chunks.len() > 1;
            let (csize, coffset) = if chunked { (c.chunk_size, c.chunk_offset) } else { (e.size, 0) };
            ensure!(
                csize > 0 && coffset >= 0 && coffset as u64 == at,
                "{}: chunk {n} at {coffset} of {csize} bytes does not continue the file at {at}",
                what()
            );
            let csize = csize as u64;
            at = at.checked_add(csize).context("chunk sizes overflow")?;
            chunk_digests.push(match (chunked, c.chunk_digest.as_str()) {
                (false, _) => Some(digest.clone()),
                (true, "") => None,
                (true, d) => Some(d.parse().with_context(|| format!("{}: chunk {n}'s digest {d:?}", what()))?),
            });
            match c.chunk_type.as_str() {
                "zeros" => pieces.push(Piece::Zeros { size: csize }),
                "" => {
                    let end = end_of(n);
                    ensure!(c.offset >= 0 && end > c.offset, "{}: chunk {n} has the range {}..{end}", what(), c.offset);
                    let range = c.offset as u64..end as u64;
                    ensure!(
                        range.end <= blob_size,
                        "{}: its content at {range:?} lies outside the {blob_size}-byte blob",
                        what()
                    );
                    ensure!(
                        range.end <= toc_range.start || range.start >= toc_range.end,
                        "{}: its content at {range:?} overlaps the TOC at {toc_range:?}",
                        what()
                    );
                    pieces.push(Piece::Frames { range, size: csize });
                }
                other => bail!("{}: unknown chunk type {other:?}", what()),
            }
        }
        ensure!(at == size, "{}: its chunks hold {at} bytes but its size is {size}", what());
        let content = Content { digest: digest.clone(), size, pieces, chunk_digests };
        // Files with the same content each have their own frames in the
        // blob; the first one's are fetched.
        match contents.get(&digest) {
            Some(seen) => ensure!(
                seen.size == content.size,
                "{}: content {digest} has {} bytes here and {} elsewhere",
                what(),
                content.size,
                seen.size
            ),
            None => {
                contents.insert(digest.clone(), content);
            }
        }
        entries.push((e.clone(), Some(digest)));
        i = j;
    }
    // A content's ranges follow each other, and the spans of different
    // contents do not overlap: one byte belongs to one content, so a lie
    // about an offset is caught by a digest, and the ranges of the contents
    // to fetch are in blob order.
    let mut spans: Vec<(Range<u64>, &Digest)> = Vec::new();
    for c in contents.values() {
        let ranges: Vec<Range<u64>> = c.ranges().collect();
        for pair in ranges.windows(2) {
            ensure!(pair[1].start >= pair[0].end, "content {}: its chunks at {:?} are out of order", c.digest, pair);
        }
        if let (Some(first), Some(last)) = (ranges.first(), ranges.last()) {
            spans.push((first.start..last.end, &c.digest));
        }
    }
    spans.sort_by_key(|(r, _)| (r.start, r.end));
    for pair in spans.windows(2) {
        let ((a, da), (b, db)) = (&pair[0], &pair[1]);
        ensure!(b.start >= a.end, "the TOC's ranges {a:?} (content {da}) and {b:?} (content {db}) overlap");
    }
    Ok(Plan { entries, contents })
}

/// The seconds since the epoch of a TOC time (RFC 3339); 0 when absent.
pub fn mtime(entry: &TocEntry) -> Result<i64> {
    let Some(t) = entry.mod_time.as_deref() else { return Ok(0) };
    let parsed = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("TOC entry {:?}: modtime {t:?}", entry.name))?;
    Ok(parsed.unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(name: &str, digest: &Digest, size: i64, (offset, end_offset): (i64, i64)) -> TocEntry {
        TocEntry {
            kind: "reg".into(),
            name: name.into(),
            size,
            digest: digest.to_string(),
            offset,
            end_offset,
            ..TocEntry::default()
        }
    }

    fn toc(entries: Vec<TocEntry>) -> Toc {
        Toc { version: 1, entries }
    }

    #[test]
    fn annotations_of_both_prefixes_locate_the_toc() {
        for prefix in PREFIXES {
            let mut a = HashMap::new();
            a.insert(format!("{prefix}manifest-checksum"), Digest::of(b"x").to_string());
            a.insert(format!("{prefix}manifest-position"), "100:20:64:1".to_string());
            let loc = location(Some(&a), 200).unwrap().unwrap();
            assert_eq!((loc.offset, loc.length, loc.uncompressed), (100, 20, 64));
            assert_eq!(loc.range(), 100..120);
        }
        assert_eq!(location(None, 10).unwrap(), None);
        assert_eq!(location(Some(&HashMap::new()), 10).unwrap(), None);
    }

    #[test]
    fn toc_position_outside_the_blob_or_of_another_type_is_refused() {
        let cases = [("190:20:64:1", "outside"), ("1:20:64:2", "unknown TOC type"), ("1:20", "four numbers")];
        for (position, want) in cases {
            let mut a = HashMap::new();
            a.insert("io.github.containers.zstd-chunked.manifest-checksum".into(), Digest::of(b"x").to_string());
            a.insert("io.github.containers.zstd-chunked.manifest-position".into(), position.to_string());
            let e = location(Some(&a), 200).unwrap_err();
            assert!(format!("{e:#}").contains(want), "{position}: {e:#}");
        }
    }

    #[test]
    fn lying_tocs_are_refused() {
        let (a, b) = (Digest::of(b"a"), Digest::of(b"b"));
        let toc_range = 900..1000;
        // (what the TOC says, the refusal expected)
        let cases: Vec<(Vec<TocEntry>, &str)> = vec![
            (vec![reg("x", &a, 5, (10, 2000))], "outside the 1000-byte blob"),
            (vec![reg("x", &a, 5, (950, 960))], "overlaps the TOC"),
            (vec![reg("x", &a, 5, (10, 20)), reg("y", &b, 5, (15, 30))], "overlap"),
            (vec![reg("x", &a, 5, (10, 20)), reg("x", &b, 5, (30, 40))], "names it twice"),
            (vec![reg("x", &a, 5, (10, 20)), reg("y", &a, 6, (30, 40))], "has 6 bytes here and 5 elsewhere"),
            (vec![reg("x", &a, -1, (10, 20))], "negative size"),
            (vec![reg("x", &a, 5, (20, 10))], "has the range"),
            (vec![TocEntry { kind: "whatever".into(), name: "x".into(), ..TocEntry::default() }], "unknown entry type"),
            (vec![TocEntry { kind: "chunk".into(), name: "x".into(), ..TocEntry::default() }], "without its file"),
        ];
        for (entries, want) in cases {
            let e = plan(&toc(entries), 1000, &toc_range).unwrap_err();
            assert!(format!("{e:#}").contains(want), "want {want:?}: {e:#}");
        }
    }

    #[test]
    fn chunks_must_tile_their_file() {
        let a = Digest::of(b"a");
        let mut file = reg("x", &a, 10, (0, 5));
        file.chunk_size = 4;
        let chunk = |off: i64, size: i64, range: Range<i64>, kind: &str| TocEntry {
            kind: "chunk".into(),
            name: "x".into(),
            chunk_offset: off,
            chunk_size: size,
            offset: range.start,
            end_offset: range.end,
            chunk_type: kind.into(),
            ..TocEntry::default()
        };
        let good = toc(vec![file.clone(), chunk(4, 3, 0..0, "zeros"), chunk(7, 3, 5..9, "")]);
        let p = plan(&good, 100, &(90..100)).unwrap();
        let c = &p.contents[&a];
        assert_eq!(
            c.pieces,
            vec![
                Piece::Frames { range: 0..5, size: 4 },
                Piece::Zeros { size: 3 },
                Piece::Frames { range: 5..9, size: 3 }
            ]
        );
        let gap = toc(vec![file.clone(), chunk(5, 3, 5..9, ""), chunk(8, 2, 9..12, "")]);
        assert!(format!("{:#}", plan(&gap, 100, &(90..100)).unwrap_err()).contains("does not continue"));
        let short = toc(vec![file, chunk(4, 3, 5..9, "")]);
        assert!(format!("{:#}", plan(&short, 100, &(90..100)).unwrap_err()).contains("hold 7 bytes"));
    }

    fn chunk(name: &str, off: i64, size: i64, range: Range<i64>, digest: &[u8]) -> TocEntry {
        TocEntry {
            kind: "chunk".into(),
            name: name.into(),
            chunk_offset: off,
            chunk_size: size,
            offset: range.start,
            end_offset: range.end,
            chunk_digest: Digest::of(digest).to_string(),
            ..TocEntry::default()
        }
    }

    #[test]
    fn chunk_digests_are_kept_beside_their_pieces_and_a_one_chunk_file_has_its_content_digest() {
        let a = Digest::of(b"a");
        let mut file = reg("x", &a, 10, (0, 5));
        (file.chunk_size, file.chunk_digest) = (4, Digest::of(b"first").to_string());
        let p = plan(&toc(vec![file, chunk("x", 4, 6, 5..9, b"second")]), 100, &(90..100)).unwrap();
        let c = &p.contents[&a];
        assert_eq!(c.chunk_digests, vec![Some(Digest::of(b"first")), Some(Digest::of(b"second"))]);
        let starts: Vec<u64> = c.pieces_at().map(|(at, _, _)| at).collect();
        assert_eq!(starts, vec![0, 4]);
        let b = Digest::of(b"b");
        let p = plan(&toc(vec![reg("y", &b, 3, (0, 5))]), 100, &(90..100)).unwrap();
        assert_eq!(p.contents[&b].chunk_digests, vec![Some(b)]);
    }

    #[test]
    fn hostile_chunk_lists_are_refused() {
        let a = Digest::of(b"a");
        let mut file = reg("x", &a, 10, (0, 5));
        (file.chunk_size, file.chunk_digest) = (4, Digest::of(b"first").to_string());
        // (the chunks after the file's first one, the refusal expected)
        let cases: Vec<(Vec<TocEntry>, &str)> = vec![
            // Sizes that do not add up to the file's: too few bytes, too many.
            (vec![chunk("x", 4, 3, 5..9, b"s")], "hold 7 bytes but its size is 10"),
            (vec![chunk("x", 4, 6, 5..9, b"s"), chunk("x", 10, 2, 9..12, b"t")], "hold 12 bytes but its size is 10"),
            // Overlapping in the file: the second chunk starts inside the first.
            (vec![chunk("x", 2, 8, 5..9, b"s")], "chunk 1 at 2 of 8 bytes does not continue the file at 4"),
            // Overlapping in the blob: the second chunk's frames start before the first's.
            (vec![chunk("x", 4, 6, 0..3, b"s")], "out of order"),
            (vec![chunk("x", 4, 3, 5..9, b"s"), chunk("x", 7, 3, 2..4, b"t")], "has the range"),
            // A chunk digest that is not one.
            (vec![TocEntry { chunk_digest: "sha256:nothex".into(), ..chunk("x", 4, 6, 5..9, b"s") }], "digest"),
            // A chunk of size 0 (it would never end).
            (vec![chunk("x", 4, 0, 5..9, b"s"), chunk("x", 4, 6, 9..12, b"t")], "does not continue"),
        ];
        for (chunks, want) in cases {
            let mut entries = vec![file.clone()];
            entries.extend(chunks);
            let e = plan(&toc(entries), 100, &(90..100)).unwrap_err();
            assert!(format!("{e:#}").contains(want), "want {want:?}: {e:#}");
        }
    }

    #[test]
    fn chunks_without_end_offsets_end_where_the_next_one_starts_as_podman_4_writes_them() {
        // From a podman 4.3 `--compression-format zstd:chunked` push: the file's
        // endOffset is after its last chunk; chunk entries have an offset only.
        let a = Digest::of(b"a");
        let mut file = reg("x", &a, 32890, (1765, 3169));
        file.chunk_size = 19161;
        let chunk = TocEntry {
            kind: "chunk".into(),
            name: "x".into(),
            offset: 2764,
            chunk_size: 13729,
            chunk_offset: 19161,
            ..TocEntry::default()
        };
        let p = plan(&toc(vec![file.clone(), chunk.clone()]), 4000, &(3900..4000)).unwrap();
        assert_eq!(
            p.contents[&a].pieces,
            vec![Piece::Frames { range: 1765..2764, size: 19161 }, Piece::Frames { range: 2764..3169, size: 13729 }]
        );
        // Its `zeros` chunks have frames in the blob too (a kernel image's holes):
        // the data chunk before one ends where its frame starts.
        let mut file = reg("x", &a, 32890 + 1480, (1765, 3169));
        file.chunk_size = 19161;
        let zeros = TocEntry {
            kind: "chunk".into(),
            name: "x".into(),
            offset: 2700,
            chunk_size: 1480,
            chunk_offset: 19161,
            chunk_type: "zeros".into(),
            ..TocEntry::default()
        };
        let last = TocEntry { chunk_offset: 19161 + 1480, ..chunk };
        let p = plan(&toc(vec![file, zeros, last]), 4000, &(3900..4000)).unwrap();
        assert_eq!(
            p.contents[&a].pieces,
            vec![
                Piece::Frames { range: 1765..2700, size: 19161 },
                Piece::Zeros { size: 1480 },
                Piece::Frames { range: 2764..3169, size: 13729 }
            ]
        );
    }

    #[test]
    fn the_same_content_twice_is_fetched_once() {
        let a = Digest::of(b"a");
        let p = plan(&toc(vec![reg("x", &a, 1, (10, 20)), reg("y", &a, 1, (30, 40))]), 100, &(90..100)).unwrap();
        assert_eq!(p.contents.len(), 1);
        assert_eq!(p.contents[&a].ranges().collect::<Vec<_>>(), vec![10..20], "the first file's frames");
        assert_eq!(p.entries.len(), 2);
    }

    #[test]
    fn toc_times_are_seconds_since_the_epoch() {
        let mut e = TocEntry { mod_time: Some("2023-05-10T12:40:45Z".into()), ..TocEntry::default() };
        assert_eq!(mtime(&e).unwrap(), 1_683_722_445);
        e.mod_time = Some("2023-05-10T12:40:45.75+00:00".into());
        assert_eq!(mtime(&e).unwrap(), 1_683_722_445);
        e.mod_time = None;
        assert_eq!(mtime(&e).unwrap(), 0);
    }
}
