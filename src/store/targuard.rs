//! A reader that watches the tar block structure as it streams past and
//! refuses oversized extension records (PAX `x`/`g`, GNU long names `L`/`K`)
//! before the tar parser reads them.
//!
//! The tar crate reads each extension record into memory whole, sized by the
//! record's header: a few kilobytes of gzip can expand to a multi-gigabyte
//! PAX record. This guard follows the same framing as the parser (a 512-byte
//! header, then the entry's data padded to 512 bytes, with a preceding PAX
//! `size` record overriding the header's size) and fails the stream as soon
//! as an extension header announces more than [`MAX_EXTENSION`] bytes.
//! It stops watching at the first all-zero header (the end of the archive).
//!
//! A stream that ends right after its last entry's data, without the padding
//! and end-of-archive blocks (umoci writes such layers, and their diff_id is
//! over those exact bytes), gets the missing zero blocks supplied here so the
//! parser sees a complete archive; a stream cut inside a header or inside an
//! entry's data is still an error.

use std::io::{self, Read};

/// Largest extension record accepted: ample for long names and many xattrs.
pub const MAX_EXTENSION: u64 = 1 << 20;

const BLOCK: usize = 512;

/// See the module docs.
pub struct TarGuard<R> {
    inner: R,
    header: [u8; BLOCK],
    filled: usize,
    /// Bytes of entry data and padding still to pass before the next header.
    skip: u64,
    /// How many of the last `skip` bytes are padding.
    pad: u64,
    /// Zero bytes still to supply after a stream that ended between entries.
    synthetic: u64,
    /// Data bytes of the current PAX record still to capture.
    capture_left: u64,
    capturing: bool,
    ext: Vec<u8>,
    /// A PAX `size` for the next entry.
    pending_size: Option<u64>,
    done: bool,
}

impl<R: Read> TarGuard<R> {
    /// Guards the tar stream read from `inner`.
    pub fn new(inner: R) -> Self {
        TarGuard {
            inner,
            header: [0; BLOCK],
            filled: 0,
            skip: 0,
            pad: 0,
            synthetic: 0,
            capture_left: 0,
            capturing: false,
            ext: Vec::new(),
            pending_size: None,
            done: false,
        }
    }

    fn observe(&mut self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() && !self.done {
            if self.skip > 0 {
                let k = (self.skip.min(data.len() as u64)) as usize;
                if self.capturing {
                    let c = (self.capture_left.min(k as u64)) as usize;
                    self.ext.extend_from_slice(&data[..c]);
                    self.capture_left -= c as u64;
                }
                self.skip -= k as u64;
                data = &data[k..];
                if self.skip == 0 && self.capturing {
                    self.capturing = false;
                    self.pending_size = pax_size(&self.ext);
                    self.ext.clear();
                }
                continue;
            }
            let k = (BLOCK - self.filled).min(data.len());
            self.header[self.filled..self.filled + k].copy_from_slice(&data[..k]);
            self.filled += k;
            data = &data[k..];
            if self.filled == BLOCK {
                self.filled = 0;
                self.on_header()?;
            }
        }
        Ok(())
    }

    fn on_header(&mut self) -> io::Result<()> {
        if self.header.iter().all(|b| *b == 0) {
            self.done = true;
            return Ok(());
        }
        let h = tar::Header::from_byte_slice(&self.header);
        let size = h.entry_size().map_err(|e| io::Error::other(format!("invalid tar header size: {e}")))?;
        let t = h.entry_type();
        let is_ext =
            t.is_pax_local_extensions() || t.is_pax_global_extensions() || t.is_gnu_longname() || t.is_gnu_longlink();
        let size = if is_ext {
            if size > MAX_EXTENSION {
                return Err(io::Error::other(format!(
                    "a tar extension record of {size} bytes exceeds the limit of {MAX_EXTENSION} bytes"
                )));
            }
            if t.is_pax_local_extensions() {
                self.capturing = size > 0;
                self.capture_left = size;
            }
            size
        } else {
            self.pending_size.take().unwrap_or(size)
        };
        self.skip = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        self.pad = self.skip - size;
        if self.skip == 0 && self.capturing {
            self.capturing = false;
        }
        Ok(())
    }
}

/// The `size` record of a PAX extension, if present and valid.
fn pax_size(ext: &[u8]) -> Option<u64> {
    tar::PaxExtensions::new(ext)
        .filter_map(|e| e.ok())
        .find(|e| e.key_bytes() == b"size")
        .and_then(|e| e.value().ok().and_then(|v| v.parse().ok()))
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.synthetic > 0 {
            let n = (self.synthetic.min(buf.len() as u64)) as usize;
            buf[..n].fill(0);
            self.synthetic -= n as u64;
            return Ok(n);
        }
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() && !self.done && self.filled == 0 && self.skip <= self.pad {
            // Ended between entries: supply the padding and the end marker.
            self.done = true;
            self.synthetic = self.skip + 2 * BLOCK as u64;
            self.skip = 0;
            return self.read(buf);
        }
        self.observe(&buf[..n])?;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pax_bomb(len: u64) -> Vec<u8> {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_path("PaxHeaders/bomb").unwrap();
        h.set_size(len);
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.extend(std::iter::repeat_n(b'a', 4096));
        out
    }

    #[test]
    fn completes_a_stream_that_ends_after_the_last_entry_data() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(18);
        h.set_mode(0o644);
        b.append_data(&mut h, "usr/bin/hello", &b"#!/bin/sh\necho hi\n"[..]).unwrap();
        let full = b.into_inner().unwrap();
        let cut = &full[..512 + 18]; // no padding, no end-of-archive blocks
        let mut a = tar::Archive::new(TarGuard::new(cut));
        let names: Vec<String> =
            a.entries().unwrap().map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
        assert_eq!(names, ["usr/bin/hello"]);
        // Cut inside the data: still an error.
        let mut a = tar::Archive::new(TarGuard::new(&full[..512 + 10]));
        let r: Result<Vec<_>, _> =
            a.entries().unwrap().map(|e| e.and_then(|mut e| io::copy(&mut e, &mut io::sink()))).collect();
        assert!(r.is_err());
    }

    #[test]
    fn refuses_pax_record_bomb() {
        let tar = pax_bomb(8 << 30);
        let e = io::copy(&mut TarGuard::new(&tar[..]), &mut io::sink()).unwrap_err();
        assert!(e.to_string().contains("exceeds the limit"), "{e}");
    }

    #[test]
    fn follows_pax_sizes_and_long_names() {
        // A real archive with a PAX size-bearing entry, long names and xattrs
        // passes untouched, byte for byte.
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("SCHILY.xattr.user.a", &b"1"[..])]).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o644);
        b.append_data(&mut h, "x".repeat(300), &b"abc"[..]).unwrap();
        // The header says 0 bytes; the PAX record says the real size. What
        // follows is a header-shaped bomb that is this entry's data.
        let inner = pax_bomb(8 << 30);
        let size = inner.len().to_string();
        b.append_pax_extensions([("size", size.as_bytes())]).unwrap();
        let mut h = tar::Header::new_ustar();
        h.set_path("y").unwrap();
        h.set_size(0);
        h.set_mode(0o644);
        h.set_cksum();
        b.append(&h, &inner[..]).unwrap();
        // The same bomb inside an ordinary file's data is data too.
        let mut h = tar::Header::new_ustar();
        h.set_size(inner.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, "z", &inner[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let mut out = Vec::new();
        io::copy(&mut TarGuard::new(&tar[..]), &mut out).unwrap();
        assert_eq!(out, tar);
    }
}
