//! Unchanged chunks of changed files, for partial pulls: which chunks (pieces
//! of a file's content named by their sha256 in a zstd:chunked TOC) the store
//! holds and where, and, for each file content a partial pull lacks, which of
//! its pieces are copied from stored objects and which are fetched.
//!
//! A chunk is found by its sha256 in the `chunks` lists of the layer indexes
//! that partial pulls wrote (object, offset, size), or as the whole content of
//! an object (`content_digests`). Objects hold a file's bytes and nothing
//! else, so a chunk is the byte range `offset..offset + size` of the object's
//! file. Stored bytes are not trusted: a chunk is reused only when it hashes
//! to its digest when the pull is planned (a damaged object's chunk is
//! fetched instead), and it is hashed again as it is copied (a mismatch then
//! fails the layer, which the pull reads whole).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::Range;
use std::path::Path;

use crate::digest::{Digest, HashingReader};
use crate::store::objects::object_path_in;
use crate::store::toc::{Content, Piece};
use crate::store::{Chunk, LayerIndex, ObjectId};

/// Chunks the store holds, by sha256: the objects and offsets holding them.
#[derive(Debug, Default)]
pub struct KnownChunks(HashMap<Digest, Vec<(ObjectId, u64, u64)>>);

impl KnownChunks {
    /// Adds the chunk lists of `index`.
    pub fn add_index(&mut self, index: &LayerIndex) {
        for (object, chunks) in &index.chunks {
            for c in chunks {
                self.add(c.digest.clone(), object.clone(), c.offset, c.size);
            }
        }
    }

    fn add(&mut self, digest: Digest, object: ObjectId, offset: u64, size: u64) {
        let list = self.0.entry(digest).or_default();
        // A few places are enough to find one intact copy.
        if list.len() < 4 && !list.iter().any(|(o, at, _)| *o == object && *at == offset) {
            list.push((object, offset, size));
        }
    }

    /// Where the store holds a chunk of `size` bytes with this digest, as
    /// `(object, offset)`, most likely first; whole objects are the caller's.
    pub fn places(&self, digest: &Digest, size: u64) -> impl Iterator<Item = (&ObjectId, u64)> + '_ {
        self.0.get(digest).into_iter().flatten().filter(move |(_, _, s)| *s == size).map(|(o, at, _)| (o, *at))
    }

    /// How many chunk digests are known.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Where one piece of a file to build comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// Fetched: zstd frames at `range` of the blob, decompressing to `size` bytes.
    Fetch {
        /// The bytes in the blob.
        range: Range<u64>,
        /// What they decompress to.
        size: u64,
    },
    /// `size` zero bytes.
    Zeros {
        /// How many.
        size: u64,
    },
    /// Copied from a stored object, checked against `digest` on the way.
    Copy {
        /// The object.
        object: ObjectId,
        /// Where the chunk starts in it.
        offset: u64,
        /// Its length.
        size: u64,
        /// Its sha256.
        digest: Digest,
    },
}

/// A file content the store lacks, and where each of its pieces comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Build {
    /// The content's sha256.
    pub digest: Digest,
    /// Its pieces, in file order.
    pub parts: Vec<Part>,
}

impl Build {
    /// The byte ranges of the blob it needs, in order.
    pub fn ranges(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.parts.iter().filter_map(|p| match p {
            Part::Fetch { range, .. } => Some(range.clone()),
            _ => None,
        })
    }

    /// The bytes copied from the store.
    pub fn reused(&self) -> u64 {
        self.parts.iter().map(|p| if let Part::Copy { size, .. } = p { *size } else { 0 }).sum()
    }
}

/// Plans `content`: each data piece whose digest `find` places in a stored
/// object that holds exactly those bytes now (read and hashed here) is
/// copied, the others are fetched. `find` lists the candidate places
/// `(object, offset)` of a chunk digest and size.
pub fn plan_build<'k>(
    content: &Content,
    objects: &Path,
    find: impl Fn(&Digest, u64) -> Vec<(&'k ObjectId, u64)>,
) -> Build {
    let mut parts = Vec::with_capacity(content.pieces.len());
    for (_, piece, digest) in content.pieces_at() {
        let part = match piece {
            Piece::Zeros { size } => Part::Zeros { size: *size },
            Piece::Frames { range, size } => {
                let stored = digest.and_then(|d| {
                    find(d, *size)
                        .into_iter()
                        .find(|(o, at)| stored_chunk_is(objects, o, *at, *size, d))
                        .map(|(o, at)| Part::Copy { object: o.clone(), offset: at, size: *size, digest: d.clone() })
                });
                stored.unwrap_or(Part::Fetch { range: range.clone(), size: *size })
            }
        };
        parts.push(part);
    }
    Build { digest: content.digest.clone(), parts }
}

/// Whether `size` bytes at `offset` of the stored object `id` hash to `digest`.
fn stored_chunk_is(objects: &Path, id: &ObjectId, offset: u64, size: u64, digest: &Digest) -> bool {
    let Ok(mut reader) = open_chunk(objects, id, offset, size) else { return false };
    let mut hashing = HashingReader::new(&mut reader);
    let copied = io::copy(&mut hashing, &mut io::sink());
    let (actual, n, _) = hashing.finish();
    copied.is_ok() && n == size && actual == *digest
}

/// The `size` bytes at `offset` of the stored object `id`; refused when the
/// object is not a regular file that long.
pub fn open_chunk(objects: &Path, id: &ObjectId, offset: u64, size: u64) -> io::Result<io::Take<File>> {
    let path = object_path_in(objects, id);
    let mut file = File::open(&path)?;
    let md = file.metadata()?;
    let end = offset.checked_add(size).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "chunk past 2^64"))?;
    if !md.is_file() || md.len() < end {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("stored object {id} has {} bytes, too few for a chunk at {offset}+{size}", md.len()),
        ));
    }
    file.seek(SeekFrom::Start(offset))?;
    Ok(file.take(size))
}

/// The chunk list a layer index keeps for `content`: its data pieces with a
/// digest, when it has more than one piece (else empty).
pub fn index_chunks(content: &Content) -> Vec<Chunk> {
    if content.pieces.len() < 2 {
        return Vec::new();
    }
    content
        .pieces_at()
        .filter_map(|(offset, piece, digest)| match (piece, digest) {
            (Piece::Frames { size, .. }, Some(d)) => Some(Chunk { offset, size: *size, digest: d.clone() }),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn content(chunks: &[&[u8]]) -> Content {
        let whole: Vec<u8> = chunks.concat();
        let mut at = 0;
        let mut pieces = Vec::new();
        for c in chunks {
            pieces.push(Piece::Frames { range: at..at + 10, size: c.len() as u64 });
            at += 10;
        }
        Content {
            digest: Digest::of(&whole),
            size: whole.len() as u64,
            pieces,
            chunk_digests: chunks.iter().map(|c| Some(Digest::of(c))).collect(),
        }
    }

    fn write_object(objects: &Path, id: &ObjectId, bytes: &[u8]) {
        let path = object_path_in(objects, id);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn a_chunk_is_found_by_its_digest_and_size_in_an_index_chunk_list() {
        let v1 = content(&[b"aaaa", b"bbbbbb", b"cc"]);
        let index_chunks = index_chunks(&v1);
        assert_eq!(index_chunks.iter().map(|c| (c.offset, c.size)).collect::<Vec<_>>(), vec![(0, 4), (4, 6), (10, 2)]);
        let id = ObjectId("ab".repeat(32));
        let mut index: LayerIndex = serde_json::from_value(serde_json::json!({
            "version": 1, "diff_id": Digest::of(b"").to_string(), "blob_digest": Digest::of(b"").to_string(),
            "media_type": "", "compressed_size": 0, "uncompressed_size": 0, "entries": [],
        }))
        .unwrap();
        assert!(index.chunks.is_empty(), "an index of an older hostctl has no chunks");
        index.chunks.insert(id.clone(), index_chunks);
        let mut known = KnownChunks::default();
        known.add_index(&index);
        assert_eq!(known.len(), 3);
        assert_eq!(known.places(&Digest::of(b"bbbbbb"), 6).collect::<Vec<_>>(), vec![(&id, 4)]);
        assert_eq!(known.places(&Digest::of(b"bbbbbb"), 7).count(), 0, "another size is another chunk");
        assert_eq!(known.places(&Digest::of(b"dd"), 2).count(), 0);

        // v2 changed the last chunk: the first two are copied, the last fetched.
        let dir = tempfile::tempdir().unwrap();
        write_object(dir.path(), &id, b"aaaabbbbbbcc");
        let v2 = content(&[b"aaaa", b"bbbbbb", b"cc!"]);
        let build = plan_build(&v2, dir.path(), |d, s| known.places(d, s).collect());
        let copy = |offset, size: usize, d: &[u8]| Part::Copy {
            object: id.clone(),
            offset,
            size: size as u64,
            digest: Digest::of(d),
        };
        assert_eq!(
            build.parts,
            vec![copy(0, 4, b"aaaa"), copy(4, 6, b"bbbbbb"), Part::Fetch { range: 20..30, size: 3 }]
        );
        assert_eq!(build.reused(), 10);
        assert_eq!(build.ranges().collect::<Vec<_>>(), vec![20..30]);
    }

    #[test]
    fn a_damaged_or_missing_stored_chunk_is_fetched_instead() {
        let id = ObjectId("cd".repeat(32));
        let mut known = KnownChunks::default();
        known.add(Digest::of(b"aaaa"), id.clone(), 0, 4);
        known.add(Digest::of(b"bbbbbb"), id.clone(), 4, 6);
        let v2 = content(&[b"aaaa", b"bbbbbb"]);
        let dir = tempfile::tempdir().unwrap();
        let fetch_all = vec![Part::Fetch { range: 0..10, size: 4 }, Part::Fetch { range: 10..20, size: 6 }];
        // Not in the store (collected since).
        assert_eq!(plan_build(&v2, dir.path(), |d, s| known.places(d, s).collect()).parts, fetch_all);
        // Changed in place (a hardlinked deployment's file edited): the
        // second chunk no longer hashes to its digest.
        write_object(dir.path(), &id, b"aaaabbbXbb");
        let parts = plan_build(&v2, dir.path(), |d, s| known.places(d, s).collect()).parts;
        assert!(matches!(parts[0], Part::Copy { offset: 0, .. }), "{parts:?}");
        assert_eq!(parts[1], fetch_all[1]);
        // Truncated: the chunk lies past its end.
        write_object(dir.path(), &id, b"aaaabb");
        let parts = plan_build(&v2, dir.path(), |d, s| known.places(d, s).collect()).parts;
        assert_eq!(parts[1], fetch_all[1]);
        assert!(open_chunk(dir.path(), &id, 4, 6).unwrap_err().to_string().contains("too few"));
    }

    #[test]
    fn chunks_without_a_digest_are_fetched_and_not_recorded() {
        let mut c = content(&[b"aaaa", b"bbbbbb"]);
        c.chunk_digests[1] = None;
        assert_eq!(index_chunks(&c), vec![Chunk { offset: 0, size: 4, digest: Digest::of(b"aaaa") }]);
        let one = content(&[b"whole"]);
        assert_eq!(index_chunks(&one), Vec::new(), "a one-chunk file's chunk is its content");
    }
}
