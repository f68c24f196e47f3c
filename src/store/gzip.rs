//! The gzip reader of the layer pipeline: RFC 1952 framing parsed here,
//! the deflate data inflated raw by flate2 (zlib-rs).
//!
//! Unlike flate2's `MultiGzDecoder`, it does not compute the CRC-32 of the
//! output: a layer's integrity is already established by the sha256 of its
//! compressed bytes (the blob digest) and of its uncompressed tar (the
//! diff_id), and the CRC took about 5 % of a pull's CPU time. The trailer's
//! ISIZE (output length modulo 2^32) is still checked, which costs nothing.
//!
//! Accepted input: one or more gzip members back to back (multi-member files
//! are legal and some tools write them), optionally followed by NUL bytes up
//! to the end, which GNU gzip also ignores (tape padding). Anything else after
//! a member, a reserved header flag, a method other than deflate, or a stream
//! that ends early is an error.

use std::io::{self, BufRead, Read};

use flate2::{Decompress, FlushDecompress, Status};

const FTEXT_FHCRC: u8 = 0x02;
const FEXTRA: u8 = 0x04;
const FNAME: u8 = 0x08;
const FCOMMENT: u8 = 0x10;
const FRESERVED: u8 = 0xe0;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Before the first member's header.
    Start,
    /// Inside a member's deflate data.
    Body,
    /// After a member's trailer: another member, NUL padding or the end.
    Between,
    /// Only NUL bytes may follow.
    Padding,
    Done,
}

/// Decompresses a (multi-member) gzip stream without checking its CRC-32; see the module docs.
pub struct GzipDecoder<R> {
    inner: R,
    inflate: Decompress,
    state: State,
    /// Bytes produced by the current member (for the ISIZE check).
    member_out: u64,
    members: u64,
}

fn bad(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn truncated(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, format!("the gzip stream ends inside {what}"))
}

impl<R: BufRead> GzipDecoder<R> {
    /// Decompresses `inner`.
    pub fn new(inner: R) -> Self {
        GzipDecoder { inner, inflate: Decompress::new(false), state: State::Start, member_out: 0, members: 0 }
    }

    /// The underlying reader.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn read_exact_or(&mut self, buf: &mut [u8], what: &str) -> io::Result<()> {
        match self.inner.read_exact(buf) {
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(truncated(what)),
            r => r,
        }
    }

    /// Skips bytes up to and including the next NUL (FNAME, FCOMMENT).
    fn skip_zero_terminated(&mut self, what: &str) -> io::Result<()> {
        loop {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                return Err(truncated(what));
            }
            if let Some(i) = buf.iter().position(|&b| b == 0) {
                self.inner.consume(i + 1);
                return Ok(());
            }
            let n = buf.len();
            self.inner.consume(n);
        }
    }

    fn skip(&mut self, mut n: u64, what: &str) -> io::Result<()> {
        while n > 0 {
            let buf = self.inner.fill_buf()?;
            if buf.is_empty() {
                return Err(truncated(what));
            }
            let k = (buf.len() as u64).min(n) as usize;
            self.inner.consume(k);
            n -= k as u64;
        }
        Ok(())
    }

    /// Parses a member header (RFC 1952 section 2.3) and readies the inflater.
    fn header(&mut self) -> io::Result<()> {
        let member = self.members + 1;
        let mut fixed = [0u8; 10];
        // The magic first, so that a short tail of garbage is reported as such.
        self.read_exact_or(&mut fixed[..2], "a member header")?;
        if fixed[0] != 0x1f || fixed[1] != 0x8b {
            return Err(bad(format!("gzip member {member} does not start with the gzip magic")));
        }
        self.read_exact_or(&mut fixed[2..], "a member header")?;
        if fixed[2] != 8 {
            return Err(bad(format!("gzip member {member} uses compression method {}, not deflate", fixed[2])));
        }
        let flags = fixed[3];
        if flags & FRESERVED != 0 {
            return Err(bad(format!("gzip member {member} sets reserved header flags ({flags:#04x})")));
        }
        if flags & FEXTRA != 0 {
            let mut xlen = [0u8; 2];
            self.read_exact_or(&mut xlen, "a header's extra field")?;
            self.skip(u16::from_le_bytes(xlen) as u64, "a header's extra field")?;
        }
        if flags & FNAME != 0 {
            self.skip_zero_terminated("a header's file name")?;
        }
        if flags & FCOMMENT != 0 {
            self.skip_zero_terminated("a header's comment")?;
        }
        if flags & FTEXT_FHCRC != 0 {
            // The header's own CRC-16: not checked, like the data's CRC-32.
            self.skip(2, "a header's CRC")?;
        }
        self.inflate.reset(false);
        self.member_out = 0;
        self.state = State::Body;
        Ok(())
    }

    /// Reads a member's trailer: CRC-32 (ignored) and ISIZE (checked).
    fn trailer(&mut self) -> io::Result<()> {
        let mut t = [0u8; 8];
        self.read_exact_or(&mut t, "a member trailer")?;
        let isize = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
        self.members += 1;
        if isize != self.member_out as u32 {
            return Err(bad(format!(
                "gzip member {} declares {isize} bytes (mod 2^32) but inflated to {}",
                self.members, self.member_out
            )));
        }
        self.state = State::Between;
        Ok(())
    }

    /// Inflates into `out` (not empty); 0 once the member's deflate data has ended.
    fn inflate_into(&mut self, out: &mut [u8]) -> io::Result<usize> {
        loop {
            let input = self.inner.fill_buf()?;
            let at_eof = input.is_empty();
            let (in0, out0) = (self.inflate.total_in(), self.inflate.total_out());
            let status = self
                .inflate
                .decompress(input, out, FlushDecompress::None)
                .map_err(|e| bad(format!("gzip member {}: invalid deflate data: {e}", self.members + 1)))?;
            let consumed = (self.inflate.total_in() - in0) as usize;
            let produced = (self.inflate.total_out() - out0) as usize;
            self.inner.consume(consumed);
            self.member_out += produced as u64;
            if status == Status::StreamEnd {
                self.state = State::Between; // provisional: the trailer is read next
                return Ok(produced);
            }
            if produced > 0 {
                return Ok(produced);
            }
            if at_eof {
                return Err(truncated("deflate data"));
            }
            if consumed == 0 {
                // Neither input taken nor output made with both available: cannot happen
                // with a conforming inflater, but must not loop forever.
                return Err(bad("gzip: the inflater made no progress".into()));
            }
        }
    }
}

impl<R: BufRead> Read for GzipDecoder<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        loop {
            match self.state {
                State::Start => {
                    if self.inner.fill_buf()?.is_empty() {
                        return Err(truncated("its first header (it is empty)"));
                    }
                    self.header()?;
                }
                State::Body => {
                    let n = self.inflate_into(out)?;
                    if self.state == State::Between {
                        self.trailer()?;
                    }
                    if n > 0 {
                        return Ok(n);
                    }
                }
                State::Between => match self.inner.fill_buf()?.first() {
                    None => self.state = State::Done,
                    Some(0) => self.state = State::Padding,
                    Some(_) => self.header()?,
                },
                State::Padding => {
                    let buf = self.inner.fill_buf()?;
                    if buf.is_empty() {
                        self.state = State::Done;
                    } else if let Some(i) = buf.iter().position(|&b| b != 0) {
                        return Err(bad(format!(
                            "unexpected byte {:#04x} in the padding after gzip member {}",
                            buf[i], self.members
                        )));
                    } else {
                        let n = buf.len();
                        self.inner.consume(n);
                    }
                }
                State::Done => return Ok(0),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Deterministic, partly compressible test data.
    fn data(len: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                if i % 3 == 0 {
                    b'a' + (i % 7) as u8
                } else {
                    x as u8
                }
            })
            .collect()
    }

    fn gz(content: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(content).unwrap();
        e.finish().unwrap()
    }

    fn decode(blob: &[u8]) -> io::Result<Vec<u8>> {
        // A small buffer so that headers and trailers straddle refills.
        let mut d = GzipDecoder::new(io::BufReader::with_capacity(7, blob));
        let mut out = Vec::new();
        d.read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn decodes_what_flate2_encodes() {
        for len in [0, 1, 1000, 300_000] {
            let content = data(len, len as u32);
            assert_eq!(decode(&gz(&content)).unwrap(), content, "{len} bytes");
        }
    }

    #[test]
    fn decodes_every_member_of_a_multi_member_stream() {
        let (a, b, c) = (data(70_000, 1), data(0, 2), data(5, 3));
        let mut blob = gz(&a);
        blob.extend(gz(&b));
        blob.extend(gz(&c));
        assert_eq!(decode(&blob).unwrap(), [a, b, c].concat());
    }

    #[test]
    fn skips_name_comment_extra_and_header_crc() {
        let content = data(50_000, 4);
        let mut e = flate2::GzBuilder::new()
            .filename("layer.tar")
            .comment("built by a test")
            .extra(vec![b'A', b'B', 3, 0, 1, 2, 3])
            .mtime(1_700_000_000)
            .write(Vec::new(), flate2::Compression::fast());
        e.write_all(&content).unwrap();
        let mut blob = e.finish().unwrap();
        assert_eq!(blob[3], FEXTRA | FNAME | FCOMMENT);
        // flate2 cannot write FHCRC: add it by hand (the CRC-16 is not checked).
        let header_end = 10 + 2 + 7 + "layer.tar\0".len() + "built by a test\0".len();
        blob[3] |= FTEXT_FHCRC;
        blob.splice(header_end..header_end, [0xab, 0xcd]);
        assert_eq!(decode(&blob).unwrap(), content);
        // Also as the second member.
        let mut two = gz(b"first");
        two.extend(&blob);
        assert_eq!(decode(&two).unwrap(), [&b"first"[..], &content].concat());
    }

    #[test]
    fn tolerates_nul_padding_after_the_last_member_only() {
        let content = data(10_000, 5);
        let mut blob = gz(&content);
        blob.extend([0u8; 512]);
        assert_eq!(decode(&blob).unwrap(), content);
        blob.push(1);
        let e = decode(&blob).unwrap_err();
        assert!(e.to_string().contains("in the padding after gzip member 1"), "{e}");
    }

    #[test]
    fn refuses_garbage_after_a_member() {
        let mut blob = gz(b"content");
        blob.extend(b"PK\x03\x04");
        let e = decode(&blob).unwrap_err();
        assert!(e.to_string().contains("gzip member 2 does not start with the gzip magic"), "{e}");
    }

    #[test]
    fn refuses_bad_headers() {
        let good = gz(b"content");
        let e = decode(&[]).unwrap_err();
        assert!(e.to_string().contains("empty"), "{e}");
        let mut b = good.clone();
        b[0] = 0x1e;
        assert!(decode(&b).unwrap_err().to_string().contains("magic"));
        let mut b = good.clone();
        b[2] = 7;
        assert!(decode(&b).unwrap_err().to_string().contains("method 7"));
        let mut b = good.clone();
        b[3] |= 0x20;
        assert!(decode(&b).unwrap_err().to_string().contains("reserved header flags"));
    }

    #[test]
    fn a_truncated_stream_is_a_clear_error() {
        let mut multi = gz(&data(200_000, 6));
        multi.extend(gz(&data(1000, 7)));
        let first_len = gz(&data(200_000, 6)).len();
        for cut in [0, 1, 5, 10, 100, first_len / 2, first_len - 8, first_len - 3, first_len + 4, multi.len() - 1] {
            let e = decode(&multi[..cut]).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "cut at {cut}: {e}");
            assert!(e.to_string().starts_with("the gzip stream ends inside"), "cut at {cut}: {e}");
        }
    }

    #[test]
    fn checks_isize_but_not_crc() {
        let content = data(3000, 8);
        let blob = gz(&content);
        let n = blob.len();
        let mut crc_wrong = blob.clone();
        crc_wrong[n - 8] ^= 0xff;
        assert_eq!(decode(&crc_wrong).unwrap(), content, "the CRC-32 is not checked");
        let mut size_wrong = blob.clone();
        size_wrong[n - 4] ^= 0x01;
        let e = decode(&size_wrong).unwrap_err();
        assert!(e.to_string().contains("declares"), "{e}");
    }

    #[test]
    fn corrupt_deflate_data_is_an_error() {
        let mut blob = gz(&data(100_000, 9));
        for b in &mut blob[20..60] {
            *b = 0xff;
        }
        let e = decode(&blob).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }
}
