//! Byte ranges of a blob as one stream: the bytes of each wanted range, in
//! order, fetched with few multi-range requests (`Range: bytes=a-b,c-d,…`,
//! answered `206` with a `multipart/byteranges` body, or a single part).
//!
//! Wanted ranges that lie close together are asked for as one (the gap is
//! read and dropped), and at most [`MAX_RANGES_PER_REQUEST`] ranges go into
//! one request. A reply that breaks or ends early is asked again for what is
//! still missing, from the byte reached, with the bounds of
//! [`super::blob_stream`]. A registry that answers `200` (the whole blob: it
//! ignores `Range`) is refused with [`RangesIgnored`], so that the caller
//! can fetch the blob whole instead; so is a reply with other ranges than
//! those asked for.

use std::collections::VecDeque;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE};
use reqwest::StatusCode;
use tracing::warn;

use super::blob_stream::{MAX_RESUMES_TOTAL, MAX_RESUMES_WITHOUT_PROGRESS};
use super::client::{backoff, Client};
use crate::digest::Digest;

/// Ranges asked for in one request (the `Range` header stays a few KiB).
pub const MAX_RANGES_PER_REQUEST: usize = 200;
/// Wanted ranges this close are fetched as one, the gap dropped.
pub const COALESCE_GAP: u64 = 4096;
/// Longest header line of a multipart part.
const MAX_LINE: usize = 4096;

/// The registry ignored `Range` (or answered other ranges than asked for):
/// fetch the blob whole instead.
#[derive(Debug, thiserror::Error)]
#[error("registry {registry} does not serve byte ranges of blob {digest} ({why})")]
pub struct RangesIgnored {
    /// The registry.
    pub registry: String,
    /// The blob.
    pub digest: Digest,
    /// What it did instead.
    pub why: String,
}

type Body = BoxStream<'static, reqwest::Result<Bytes>>;

/// Turns sorted, non-overlapping `wanted` ranges into request ranges:
/// neighbours closer than [`COALESCE_GAP`] merged.
pub fn coalesce(wanted: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    for r in wanted {
        match out.last_mut() {
            Some(last) if r.start <= last.end + COALESCE_GAP => last.end = last.end.max(r.end),
            _ => out.push(r.clone()),
        }
    }
    out
}

/// The `Range` header value for `ranges` (end-exclusive ranges, written inclusive).
pub fn header(ranges: &[Range<u64>]) -> String {
    let parts: Vec<String> = ranges.iter().map(|r| format!("{}-{}", r.start, r.end - 1)).collect();
    format!("bytes={}", parts.join(","))
}

/// Parses `bytes START-END/TOTAL` into the end-exclusive range.
fn content_range(v: &str) -> Option<Range<u64>> {
    let (span, _) = v.trim().strip_prefix("bytes ")?.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    let (a, b) = (a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?);
    (b >= a).then(|| a..b + 1)
}

/// An incremental `multipart/byteranges` parser: feeds body bytes, yields
/// `(blob offset, bytes)` pieces without copying the data.
#[derive(Debug)]
pub struct Multipart {
    boundary: Vec<u8>,
    state: PartState,
    line: Vec<u8>,
}

#[derive(Debug, PartialEq, Eq)]
enum PartState {
    /// Looking for a boundary line.
    Delimiter,
    /// Reading a part's headers; the range once its Content-Range was seen.
    Headers(Option<Range<u64>>),
    /// Inside a part's data: next blob offset and bytes left.
    Data(u64, u64),
    /// After the closing boundary.
    End,
}

impl Multipart {
    /// A parser for the `boundary` of a `Content-Type` header.
    pub fn new(boundary: &str) -> Self {
        Multipart { boundary: format!("--{boundary}").into_bytes(), state: PartState::Delimiter, line: Vec::new() }
    }

    /// The boundary of a `multipart/byteranges` content type, if it is one.
    pub fn boundary_of(content_type: &str) -> Option<String> {
        let (kind, params) = content_type.split_once(';')?;
        if !kind.trim().eq_ignore_ascii_case("multipart/byteranges") {
            return None;
        }
        params.split(';').find_map(|p| {
            let (k, v) = p.trim().split_once('=')?;
            k.trim().eq_ignore_ascii_case("boundary").then(|| v.trim().trim_matches('"').to_string())
        })
    }

    /// Whether the closing boundary was read.
    pub fn ended(&self) -> bool {
        self.state == PartState::End
    }

    /// Parses `input`, appending data pieces to `out`.
    pub fn feed(&mut self, mut input: Bytes, out: &mut Vec<(u64, Bytes)>) -> Result<(), String> {
        while !input.is_empty() {
            match &mut self.state {
                PartState::End => return Ok(()),
                PartState::Data(at, left) => {
                    let n = (*left).min(input.len() as u64) as usize;
                    out.push((*at, input.split_to(n)));
                    *at += n as u64;
                    *left -= n as u64;
                    if *left == 0 {
                        self.state = PartState::Delimiter;
                    }
                }
                _ => {
                    let Some(nl) = input.iter().position(|b| *b == b'\n') else {
                        self.line.extend_from_slice(&input);
                        if self.line.len() > MAX_LINE {
                            return Err("a multipart header line is too long".into());
                        }
                        return Ok(());
                    };
                    self.line.extend_from_slice(&input.split_to(nl + 1));
                    if self.line.len() > MAX_LINE {
                        return Err("a multipart header line is too long".into());
                    }
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\n").unwrap_or(&line);
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    self.line_done(line)?;
                }
            }
        }
        Ok(())
    }

    fn line_done(&mut self, line: &[u8]) -> Result<(), String> {
        match &mut self.state {
            PartState::Delimiter => {
                if line == self.boundary.as_slice() {
                    self.state = PartState::Headers(None);
                } else if line.strip_prefix(self.boundary.as_slice()) == Some(b"--") {
                    self.state = PartState::End;
                }
                // Anything else: preamble or the blank line before a boundary.
                Ok(())
            }
            PartState::Headers(range) => {
                if line.is_empty() {
                    let Some(r) = range.take() else { return Err("a part without Content-Range".into()) };
                    self.state = PartState::Data(r.start, r.end - r.start);
                    return Ok(());
                }
                let text = String::from_utf8_lossy(line);
                if let Some((k, v)) = text.split_once(':') {
                    if k.trim().eq_ignore_ascii_case("content-range") {
                        *range = Some(content_range(v).ok_or_else(|| format!("bad Content-Range {v:?}"))?);
                    }
                }
                Ok(())
            }
            PartState::Data(..) | PartState::End => Ok(()),
        }
    }
}

/// How one reply's body is read.
enum Reply {
    Single { at: u64 },
    Parts(Box<Multipart>),
}

struct State {
    client: Arc<Client>,
    digest: Digest,
    size: u64,
    /// What is still to be handed out, in order.
    wanted: VecDeque<Range<u64>>,
    body: Option<(Body, Reply)>,
    /// End of the last range asked for in the current request.
    asked_end: u64,
    ready: VecDeque<Bytes>,
    failures: u32,
    resumes: u32,
}

/// Opens a stream of the bytes of `wanted` (sorted, non-overlapping,
/// non-empty ranges inside the blob of `size` bytes), concatenated in order.
/// The first request is sent now, so a registry that ignores ranges is
/// found out here ([`RangesIgnored`] in the error chain).
pub async fn open(
    client: Arc<Client>,
    digest: Digest,
    size: u64,
    wanted: Vec<Range<u64>>,
) -> anyhow::Result<impl Stream<Item = io::Result<Bytes>> + Send + 'static> {
    for pair in wanted.windows(2) {
        anyhow::ensure!(pair[0].end <= pair[1].start, "blob {digest}: ranges {:?} out of order", pair);
    }
    anyhow::ensure!(
        wanted.iter().all(|r| r.start < r.end && r.end <= size),
        "blob {digest}: a range lies outside its {size} bytes"
    );
    let mut state = State {
        client,
        digest,
        size,
        wanted: wanted.into(),
        body: None,
        asked_end: 0,
        ready: VecDeque::new(),
        failures: 0,
        resumes: 0,
    };
    if !state.wanted.is_empty() {
        state.request().await?;
    }
    Ok(futures_util::stream::try_unfold(state, State::next_chunk))
}

impl State {
    /// Asks for the next ranges still wanted.
    async fn request(&mut self) -> anyhow::Result<()> {
        let wanted: Vec<Range<u64>> = self.wanted.iter().cloned().collect();
        let mut ask = coalesce(&wanted);
        ask.truncate(MAX_RANGES_PER_REQUEST);
        self.asked_end = ask.last().map(|r| r.end).unwrap_or(0);
        let resp = self.client.get_range(&format!("blobs/{}", self.digest), &[], Some(&header(&ask))).await?;
        let ignored =
            |why: String| RangesIgnored { registry: self.client.registry.clone(), digest: self.digest.clone(), why };
        let reply = match resp.status() {
            StatusCode::PARTIAL_CONTENT => {
                let ctype = resp.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
                if let Some(boundary) = Multipart::boundary_of(ctype) {
                    Reply::Parts(Box::new(Multipart::new(&boundary)))
                } else {
                    let range = resp.headers().get(CONTENT_RANGE).and_then(|v| v.to_str().ok()).and_then(content_range);
                    match range {
                        Some(r) if r.end <= self.size => Reply::Single { at: r.start },
                        other => return Err(ignored(format!("a 206 reply with Content-Range {other:?}")).into()),
                    }
                }
            }
            StatusCode::OK => return Err(ignored("it answered 200 with the whole blob".into()).into()),
            _ => return Err(self.client.status_error(resp, &format!("byte ranges of blob {}", self.digest)).await),
        };
        self.body = Some((resp.bytes_stream().boxed(), reply));
        Ok(())
    }

    async fn next_chunk(mut self) -> io::Result<Option<(Bytes, State)>> {
        loop {
            if let Some(b) = self.ready.pop_front() {
                return Ok(Some((b, self)));
            }
            let Some((body, reply)) = self.body.as_mut() else {
                if self.wanted.is_empty() {
                    return Ok(None);
                }
                if self.failures > 0 {
                    tokio::time::sleep(backoff(self.failures)).await;
                }
                if let Err(e) = self.request().await {
                    return Err(io::Error::other(format!("{e:#}")));
                }
                continue;
            };
            match body.next().await {
                Some(Ok(chunk)) => {
                    let mut pieces = Vec::new();
                    match reply {
                        Reply::Single { at } => {
                            pieces.push((*at, chunk.clone()));
                            *at += chunk.len() as u64;
                        }
                        Reply::Parts(parser) => {
                            parser.feed(chunk, &mut pieces).map_err(|e| self.invalid(e))?;
                        }
                    }
                    let before = self.wanted.front().map(|r| r.start);
                    for (at, bytes) in pieces {
                        self.take(at, bytes)?;
                    }
                    if self.wanted.front().map(|r| r.start) != before {
                        self.failures = 0;
                    }
                }
                Some(Err(e)) => {
                    self.body = None;
                    self.note_failure(&format!("{:#}", anyhow::Error::new(e)))?;
                }
                None => {
                    self.body = None;
                    // Ranges after the ones asked for come with the next request.
                    if self.wanted.front().is_some_and(|r| r.start < self.asked_end) {
                        self.note_failure("the reply ended before the ranges asked for")?;
                    }
                }
            }
        }
    }

    /// Hands out the part of `bytes` (at blob offset `at`) that is wanted.
    fn take(&mut self, mut at: u64, mut bytes: Bytes) -> io::Result<()> {
        while !bytes.is_empty() {
            let Some(w) = self.wanted.front_mut() else { return Ok(()) };
            if at > w.start {
                let why = format!("bytes from {at} came before the wanted {}", w.start);
                return Err(self.invalid(why));
            }
            let end = at + bytes.len() as u64;
            if end <= w.start {
                return Ok(()); // a gap between coalesced ranges
            }
            let _ = bytes.split_to((w.start - at) as usize);
            at = w.start;
            let n = (w.end - w.start).min(bytes.len() as u64) as usize;
            self.ready.push_back(bytes.split_to(n));
            at += n as u64;
            w.start += n as u64;
            if w.start == w.end {
                self.wanted.pop_front();
            }
        }
        Ok(())
    }

    fn invalid(&self, why: String) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            RangesIgnored { registry: self.client.registry.clone(), digest: self.digest.clone(), why },
        )
    }

    fn note_failure(&mut self, why: &str) -> io::Result<()> {
        self.failures += 1;
        self.resumes += 1;
        let at = self.wanted.front().map(|r| r.start).unwrap_or(self.size);
        if crate::interrupt::is_ending()
            || self.failures > MAX_RESUMES_WITHOUT_PROGRESS
            || self.resumes > MAX_RESUMES_TOTAL
        {
            return Err(io::Error::other(format!(
                "blob {}: fetching byte ranges failed at byte {at} after {} resumes: {why}",
                self.digest,
                self.resumes - 1
            )));
        }
        warn!("blob {}: {why} at byte {at}; asking again for the rest", self.digest);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_ranges_are_coalesced_and_far_ones_are_not() {
        let got = coalesce(&[0..10, 20..30, 10_000..10_010, 10_010..10_020]);
        assert_eq!(got, vec![0..30, 10_000..10_020]);
        assert_eq!(header(&got), "bytes=0-29,10000-10019");
    }

    #[test]
    fn multipart_byteranges_split_anywhere_yield_the_parts() {
        // As Go's net/http (docker-registry) writes it.
        let body = b"--XYZ\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 0-4/100\r\n\r\nhello\r\n\
--XYZ\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes 50-52/100\r\n\r\nabc\r\n--XYZ--\r\n";
        for split in 1..body.len() {
            let mut p = Multipart::new("XYZ");
            let mut out = Vec::new();
            p.feed(Bytes::copy_from_slice(&body[..split]), &mut out).unwrap();
            p.feed(Bytes::copy_from_slice(&body[split..]), &mut out).unwrap();
            assert!(p.ended());
            let mut joined: Vec<(u64, Vec<u8>)> = Vec::new();
            for (at, b) in out {
                match joined.last_mut() {
                    Some((start, v)) if *start + v.len() as u64 == at => v.extend_from_slice(&b),
                    _ => joined.push((at, b.to_vec())),
                }
            }
            assert_eq!(joined, vec![(0, b"hello".to_vec()), (50, b"abc".to_vec())], "split at {split}");
        }
    }

    #[test]
    fn multipart_parts_without_content_range_or_with_endless_lines_are_refused() {
        let mut p = Multipart::new("XYZ");
        let e = p.feed(Bytes::from_static(b"--XYZ\r\nContent-Type: x\r\n\r\ndata"), &mut Vec::new()).unwrap_err();
        assert!(e.contains("without Content-Range"), "{e}");
        let mut p = Multipart::new("XYZ");
        let e = p.feed(Bytes::from(vec![b'a'; MAX_LINE + 10]), &mut Vec::new()).unwrap_err();
        assert!(e.contains("too long"), "{e}");
    }

    #[test]
    fn boundary_is_read_from_the_content_type() {
        assert_eq!(Multipart::boundary_of("multipart/byteranges; boundary=abc").as_deref(), Some("abc"));
        assert_eq!(Multipart::boundary_of("multipart/byteranges; boundary=\"q\"").as_deref(), Some("q"));
        assert_eq!(Multipart::boundary_of("application/octet-stream"), None);
        assert_eq!(content_range("bytes 5-9/100"), Some(5..10));
        assert_eq!(content_range("bytes 9-5/100"), None);
    }
}
