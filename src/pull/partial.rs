//! One layer's partial pull: its zstd:chunked TOC read with a byte-range
//! request, then only the byte ranges of the files the store lacks, streamed
//! into the store (`store::partial`), which checks every file against the TOC
//! and the TOC against the manifest's digest.

use std::io::{self, Read};
use std::sync::Arc;

use anyhow::{ensure, Context, Result};
use oci_spec::image::Descriptor;
use serde_json::json;

use crate::oci::{BlobReader, ImageSource};
use crate::progress::Progress;
use crate::store::toc::TocLocation;
use crate::store::{LayerSpec, Store};

/// Pulls the layer `spec` from its TOC at `loc`: `Ok(Some(bytes fetched))`
/// once its index is committed, `Ok(None)` when the source serves no byte
/// ranges. An error leaves nothing of the layer in the store; the caller may
/// then read the layer whole.
pub async fn pull_layer(
    store: &Store,
    source: &Arc<dyn ImageSource>,
    desc: &Descriptor,
    spec: &LayerSpec,
    loc: &TocLocation,
    progress: &Progress,
    from: &str,
) -> Result<Option<u64>> {
    let what = format!("the zstd:chunked TOC of layer {}", spec.blob_digest);
    let Some(reader) =
        progress.waiting(format!("{from} ({what})"), source.open_ranges(desc, vec![loc.range()])).await?
    else {
        return Ok(None);
    };
    let (s, sp, l) = (store.clone(), spec.clone(), loc.clone());
    let (plan, known, missing) = tokio::task::spawn_blocking(move || {
        let mut compressed = Vec::new();
        reader.into_sync().take(l.length + 1).read_to_end(&mut compressed).context("reading the TOC")?;
        ensure!(compressed.len() as u64 == l.length, "the TOC range has {} bytes, not {}", compressed.len(), l.length);
        let plan = crate::store::partial::read_toc(&l, &compressed, sp.size)?;
        let known = s.known_contents()?;
        let missing = s.missing_contents(&plan, &known);
        anyhow::Ok((plan, known, missing))
    })
    .await
    .context("TOC task panicked")?
    .with_context(|| what.clone())?;

    let total: u64 = missing.ranges.iter().map(|r| r.end - r.start).sum();
    let reused = missing.reused();
    let files = plan.contents.len();
    let n_missing = missing.builds.len();
    let reused_note = if reused > 0 {
        format!(", {} of them in stored chunks", crate::util::human_bytes(reused))
    } else {
        String::new()
    };
    progress.event(
        "layer-partial",
        json!({ "digest": spec.blob_digest.to_string(), "contents": files, "missing": n_missing, "bytes": total,
                "reusedBytes": reused,
                "message": format!("Layer {}: {n_missing} of {files} file contents to build ({} to fetch{reused_note})",
                                   spec.blob_digest.short(), crate::util::human_bytes(total)) }),
    );
    let ranges = missing.ranges.clone();
    let fetched = if ranges.is_empty() {
        BlobReader::Sync(Box::new(io::empty()))
    } else {
        let open = source.open_ranges(desc, ranges);
        progress
            .waiting(format!("{from} (files of layer {})", spec.blob_digest), open)
            .await?
            .context("the source stopped serving byte ranges")?
    };
    let (store, spec, progress, from, toc_digest) =
        (store.clone(), spec.clone(), progress.clone(), from.to_string(), loc.digest.clone());
    tokio::task::spawn_blocking(move || {
        let mut transfer = progress.transfer(spec.blob_digest.short(), total, &from);
        let started = std::time::Instant::now();
        let mut reader = Counting { inner: fetched.into_sync(), report: &mut |n| transfer.inc(n) };
        let result = store.import_partial(&spec, &toc_digest, &plan, known, &missing.builds, &mut reader);
        if result.is_ok() {
            tracing::info!(
                "layer {} built from its TOC: {n_missing} of {files} contents built ({} fetched, {} copied from stored chunks) in {:.1}s",
                spec.blob_digest,
                crate::util::human_bytes(total),
                crate::util::human_bytes(reused),
                started.elapsed().as_secs_f64()
            );
        }
        transfer.finish(if result.is_ok() { "done" } else { "failed" });
        result
    })
    .await
    .context("layer import task panicked")??;
    Ok(Some(loc.length + total))
}

/// Reports the bytes read through it.
struct Counting<'a> {
    inner: Box<dyn Read + Send>,
    report: &'a mut dyn FnMut(u64),
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.report)(n as u64);
        Ok(n)
    }
}
