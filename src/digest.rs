//! Content digests (`sha256:<hex>`): parsing, display, the streaming
//! [`Hasher`], and the hashing stream adapters built on it (with
//! [`CountingWriter`], their plain sibling for a writer that needs only to
//! know where it is).
//!
//! Every blob hostctl accepts is checked against the digest that named it. The
//! adapters here hash bytes as they stream past, so verification never needs a
//! second pass over the data and no blob is held in memory. Code that gets
//! its bytes in pieces some other way (a channel of chunks, `io::copy` from a
//! file) feeds a [`Hasher`] directly.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// A validated `sha256:<64 lowercase hex>` content digest.
///
/// Only sha256 is accepted: it is what every registry and image tool in use
/// produces, and refusing the rest keeps the store keyed one way.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest {
    hex: String,
}

/// Why a string is not a digest hostctl accepts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    /// No `algorithm:` prefix.
    #[error("digest {0:?} has no algorithm prefix (expected sha256:<hex>)")]
    NoAlgorithm(String),
    /// An algorithm other than sha256.
    #[error("digest algorithm {0:?} is not supported (only sha256)")]
    UnsupportedAlgorithm(String),
    /// The hex part is not 64 lowercase hex digits.
    #[error("digest {0:?} must have 64 lowercase hex characters after sha256:")]
    BadHex(String),
}

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::from_sha256(Sha256::digest(bytes).into())
    }

    /// Builds a digest from a raw 32-byte sha256 value.
    pub fn from_sha256(raw: [u8; 32]) -> Self {
        Digest { hex: hex::encode(raw) }
    }

    /// The 64 hex characters, without the algorithm prefix.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The algorithm name (always `sha256`).
    pub fn algorithm(&self) -> &'static str {
        "sha256"
    }

    /// A short form for humans: the first 12 hex characters.
    pub fn short(&self) -> &str {
        &self.hex[..12]
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (alg, hex) = s.split_once(':').ok_or_else(|| DigestError::NoAlgorithm(s.to_string()))?;
        if alg != "sha256" {
            return Err(DigestError::UnsupportedAlgorithm(alg.to_string()));
        }
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(DigestError::BadHex(s.to_string()));
        }
        Ok(Digest { hex: hex.to_string() })
    }
}

impl TryFrom<String> for Digest {
    type Error = DigestError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.to_string()
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex)
    }
}

/// sha256 and a byte count over everything fed to it, in pieces.
///
/// Also a [`Write`] sink, so `io::copy(&mut file, &mut hasher)` hashes a file.
#[derive(Clone, Default)]
pub struct Hasher {
    sha: Sha256,
    count: u64,
}

impl Hasher {
    /// A hasher with nothing hashed yet.
    pub fn new() -> Self {
        Hasher::default()
    }

    /// Adds `bytes` to what is hashed.
    pub fn update(&mut self, bytes: &[u8]) {
        self.sha.update(bytes);
        self.count += bytes.len() as u64;
    }

    /// Bytes hashed so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The digest and byte count of everything hashed.
    pub fn finish(self) -> (Digest, u64) {
        (Digest::from_sha256(self.sha.finalize().into()), self.count)
    }
}

impl Write for Hasher {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A reader that hashes and counts every byte read through it.
///
/// Call [`HashingReader::finish`] once the inner stream is exhausted to get the
/// digest and length of what went past.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> HashingReader<R> {
    /// Hashes what is read from `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader { inner, hasher: Hasher::new() }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.hasher.count()
    }

    /// The digest and byte count of everything read, and the inner reader.
    pub fn finish(self) -> (Digest, u64, R) {
        let (digest, count) = self.hasher.finish();
        (digest, count, self.inner)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A writer that hashes and counts every byte written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: Write> HashingWriter<W> {
    /// Hashes what is written to `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Hasher::new() }
    }

    /// The digest and byte count of everything written, and the inner writer.
    pub fn finish(self) -> (Digest, u64, W) {
        let (digest, count) = self.hasher.finish();
        (digest, count, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A writer that counts the bytes written through it, without hashing them:
/// for a writer that must know its offset in the output as it goes (where a
/// frame starts), when the digest, if any, is taken further down the stream.
pub struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W: Write> CountingWriter<W> {
    /// Counts what is written to `inner`, from zero.
    pub fn new(inner: W) -> Self {
        CountingWriter { inner, count: 0 }
    }

    /// Bytes written so far: the offset the next byte will have.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The inner writer.
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        let s = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let d: Digest = s.parse().unwrap();
        assert_eq!(d.to_string(), s);
        assert_eq!(d, Digest::of(b""));
        assert_eq!(d.short(), "e3b0c44298fc");
    }

    #[test]
    fn rejects_bad_digests() {
        for (input, want) in [
            ("e3b0", DigestError::NoAlgorithm("e3b0".into())),
            ("sha512:abcd", DigestError::UnsupportedAlgorithm("sha512".into())),
            ("sha256:abcd", DigestError::BadHex("sha256:abcd".into())),
            (
                "sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
                DigestError::BadHex("sha256:E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855".into()),
            ),
        ] {
            assert_eq!(input.parse::<Digest>().unwrap_err(), want, "{input}");
        }
    }

    #[test]
    fn hasher_in_pieces_matches_one_shot_and_the_adapters() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut h = Hasher::new();
        for piece in data.chunks(4099) {
            h.update(piece);
        }
        assert_eq!(h.count(), 100_000);
        assert_eq!(h.finish(), (Digest::of(&data), 100_000));
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(&data).unwrap();
        let (d, n, inner) = w.finish();
        assert_eq!((d, n, inner), (Digest::of(&data), 100_000, data.clone()));
        let mut sink = Hasher::new();
        io::copy(&mut &data[..], &mut sink).unwrap();
        assert_eq!(sink.finish().0, Digest::of(&data));
    }

    #[test]
    fn hashing_reader_matches_one_shot() {
        let data = vec![7u8; 100_000];
        let mut r = HashingReader::new(&data[..]);
        io::copy(&mut r, &mut io::sink()).unwrap();
        let (d, n, _) = r.finish();
        assert_eq!(n, 100_000);
        assert_eq!(d, Digest::of(&data));
    }

    /// Only what the inner writer took is counted: a short write counts short.
    #[test]
    fn counting_writer_counts_what_the_inner_writer_took() {
        let mut w = CountingWriter::new(Vec::new());
        assert_eq!(w.count(), 0);
        w.write_all(b"hello, ").unwrap();
        w.write_all(b"world").unwrap();
        assert_eq!(w.count(), 12);
        assert_eq!(w.into_inner(), b"hello, world");

        let mut room = [0u8; 5];
        let mut w = CountingWriter::new(&mut room[..]);
        assert_eq!(w.write(b"abcdefgh").unwrap(), 5);
        assert_eq!(w.count(), 5);
        assert_eq!(w.write(b"more").unwrap(), 0, "the slice is full");
        assert_eq!(w.count(), 5);
        assert_eq!(&room, b"abcde");
    }
}
