//! A blob download as a stream that survives broken connections: when the
//! body fails or ends early, the request is reopened with
//! `Range: bytes=N-` after a backoff and the stream carries on where it
//! stopped. A `206` reply continues at N; a `200` reply (range ignored) is the
//! whole blob again, so its first N bytes are skipped. Attempts are bounded,
//! and the stream refuses more bytes than the descriptor's size.
//!
//! When the blob comes from a registries.conf mirror and that mirror fails
//! for good mid-download (attempts used up, or it can no longer be asked),
//! the stream carries on from the same byte at the endpoints after it: the
//! next mirrors, then the primary location, each with attempts of its own.
//!
//! Written by hand: oci-client can start a blob at an offset but neither
//! resumes by itself nor caps a stream at the descriptor's size.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use reqwest::header::CONTENT_RANGE;
use reqwest::StatusCode;
use tracing::warn;

use super::client::{backoff, Client};
use crate::digest::Digest;

/// Failed reopen/resume attempts in a row (without a byte of progress) before giving up.
pub const MAX_RESUMES_WITHOUT_PROGRESS: u32 = 5;
/// Resumes over the whole download before giving up.
pub const MAX_RESUMES_TOTAL: u32 = 50;

type Body = BoxStream<'static, reqwest::Result<Bytes>>;

struct State {
    /// The endpoint the bytes come from now.
    client: Arc<Client>,
    /// The endpoints to carry on from if it fails for good, in order.
    fallbacks: VecDeque<Arc<Client>>,
    /// What the endpoints given up on said (for the final error).
    given_up: Vec<String>,
    digest: Digest,
    size: u64,
    /// Absolute offset of the next byte to hand out.
    pos: u64,
    body: Option<Body>,
    /// Bytes still to discard from `body` (a 200 reply to a range request).
    skip: u64,
    failures: u32,
    resumes: u32,
}

/// Opens the blob at `offset` at `client` and returns a resuming stream of
/// its bytes, which carries on at `fallbacks` in turn if `client` fails for
/// good mid-download. Errors on opening (not found, unauthorized, too
/// large) are returned now.
pub async fn open(
    client: Arc<Client>,
    fallbacks: Vec<Arc<Client>>,
    digest: Digest,
    size: u64,
    offset: u64,
) -> anyhow::Result<impl Stream<Item = io::Result<Bytes>> + Send + 'static> {
    anyhow::ensure!(offset <= size, "blob {digest}: offset {offset} is past its size {size}");
    let mut state = State {
        client,
        fallbacks: fallbacks.into(),
        given_up: Vec::new(),
        digest,
        size,
        pos: offset,
        body: None,
        skip: 0,
        failures: 0,
        resumes: 0,
    };
    if offset < size {
        let (body, skip) = request(&state.client, &state.digest, size, offset).await?;
        state.body = Some(body);
        state.skip = skip;
    }
    Ok(futures_util::stream::try_unfold(state, State::next_chunk))
}

/// One GET of `digest` from `pos`: the body and how many leading bytes to skip.
/// (A free function: the stream state holds a body that is not `Sync`.)
async fn request(client: &Client, digest: &Digest, size: u64, pos: u64) -> anyhow::Result<(Body, u64)> {
    let path = format!("blobs/{digest}");
    let resp = client.get(&path, &[], Some(pos)).await?;
    let remaining = size - pos;
    let skip = match resp.status() {
        StatusCode::PARTIAL_CONTENT => {
            let start = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.parse::<u64>().ok());
            if start != Some(pos) {
                anyhow::bail!("blob {digest}: asked for bytes from {pos}, got Content-Range {start:?}");
            }
            if let Some(len) = resp.content_length().filter(|l| *l > remaining) {
                anyhow::bail!(too_long(digest, size, pos + len));
            }
            0
        }
        StatusCode::OK => {
            if let Some(len) = resp.content_length().filter(|l| *l > size) {
                anyhow::bail!(too_long(digest, size, len));
            }
            pos
        }
        _ => return Err(client.status_error(resp, &format!("blob {digest}")).await),
    };
    Ok((resp.bytes_stream().boxed(), skip))
}

impl State {
    async fn next_chunk(mut self) -> io::Result<Option<(Bytes, State)>> {
        loop {
            let Some(body) = self.body.as_mut() else {
                if self.pos == self.size {
                    return Ok(None);
                }
                self.reopen().await?;
                continue;
            };
            match body.next().await {
                Some(Ok(mut chunk)) => {
                    if self.skip > 0 {
                        let n = self.skip.min(chunk.len() as u64) as usize;
                        let _ = chunk.split_to(n);
                        self.skip -= n as u64;
                    }
                    if chunk.is_empty() {
                        continue;
                    }
                    let end = self.pos + chunk.len() as u64;
                    if end > self.size {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, too_long(&self.digest, self.size, end)));
                    }
                    self.pos = end;
                    self.failures = 0;
                    return Ok(Some((chunk, self)));
                }
                Some(Err(e)) => {
                    self.body = None;
                    self.note_failure(&format!("{:#}", anyhow::Error::new(e)))?;
                }
                None => {
                    self.body = None;
                    if self.pos < self.size {
                        self.note_failure("the connection ended early")?;
                    }
                }
            }
        }
    }

    fn note_failure(&mut self, why: &str) -> io::Result<()> {
        if crate::interrupt::is_ending() {
            // The command failed or was interrupted: no resume, no fallback.
            return Err(io::Error::other(format!("blob {}: {why} (not resumed: the command is ending)", self.digest)));
        }
        self.failures += 1;
        self.resumes += 1;
        if self.failures > MAX_RESUMES_WITHOUT_PROGRESS || self.resumes > MAX_RESUMES_TOTAL {
            let why = format!(
                "blob {}: download failed at byte {} of {} after {} resumes: {why}",
                self.digest,
                self.pos,
                self.size,
                self.resumes - 1
            );
            return self.give_up(why);
        }
        warn!("blob {}: {why} at byte {} of {}; resuming", self.digest, self.pos, self.size);
        Ok(())
    }

    async fn reopen(&mut self) -> io::Result<()> {
        tokio::time::sleep(backoff(self.failures.max(1))).await;
        match request(&self.client, &self.digest, self.size, self.pos).await {
            Ok((body, skip)) => {
                self.body = Some(body);
                self.skip = skip;
                Ok(())
            }
            Err(e) => self.give_up(format!(
                "blob {}: the download stopped at byte {} of {} and could not resume: {e:#}",
                self.digest, self.pos, self.size
            )),
        }
    }

    /// The current endpoint has failed for good (`why`): carries on at the
    /// next fallback from the same byte (the caller then reopens), or, with
    /// none left, fails saying what every endpoint said.
    fn give_up(&mut self, why: String) -> io::Result<()> {
        let here = format!("{}/{}", self.client.registry, self.client.repository);
        let Some(next) = self.fallbacks.pop_front() else {
            return Err(io::Error::other(if self.given_up.is_empty() {
                why
            } else {
                format!("{why} (given up before: {})", self.given_up.join("; "))
            }));
        };
        warn!(
            "blob {}: {here} failed at byte {} of {} ({why}); carrying on from {}/{}",
            self.digest, self.pos, self.size, next.registry, next.repository
        );
        self.given_up.push(format!("{here}: {why}"));
        self.client = next;
        (self.body, self.skip, self.failures, self.resumes) = (None, 0, 0, 0);
        Ok(())
    }
}

fn too_long(digest: &Digest, size: u64, got: u64) -> String {
    format!("blob {digest}: the registry sent at least {got} bytes but its descriptor says {size}: refused")
}
