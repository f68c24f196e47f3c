//! `hostctl image rechunk SRC DST`: rewrite an OS image into content-stable
//! layers (the work is in [`crate::rechunk`]).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

use super::output::{outln, print_json};
use super::GlobalArgs;
use crate::imgref::{ImageRef, RegistryRef};
use crate::pull::PullOptions;
use crate::rechunk::{plan, Compression, Options};
use crate::util::human_bytes;

#[derive(Debug, Args)]
pub struct RechunkArgs {
    /// The image to rewrite: [registry:|docker://|oci:|oci-archive:]NAME[:TAG][@DIGEST].
    pub source: ImageRef,
    /// Where to write it: oci:DIR[:TAG], or a registry ([registry:|docker://]NAME[:TAG]).
    #[arg(value_parser = parse_destination)]
    pub destination: Destination,
    /// Layers at most, the directory layer included (1–127).
    #[arg(long, default_value_t = plan::DEFAULT_MAX_LAYERS, value_parser = parse_max_layers)]
    pub max_layers: usize,
    /// Layer compression.
    #[arg(long, value_enum, default_value = "gzip")]
    pub compression: Compression,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Where the rechunked image goes.
#[derive(Clone, Debug)]
pub enum Destination {
    /// An OCI layout directory and the tag to give the image there.
    Layout(PathBuf, Option<String>),
    /// A registry repository (and tag: none pushes by digest only).
    Registry(RegistryRef),
}

/// `oci:DIR[:TAG]` or a registry reference; not an archive, nor a digest to push to.
fn parse_destination(s: &str) -> Result<Destination, String> {
    match s.parse::<ImageRef>().map_err(|e| format!("{e:#}"))? {
        ImageRef::OciDir { path, tag } => Ok(Destination::Layout(path, tag)),
        ImageRef::Registry(r) if r.digest.is_some() => {
            Err(format!("{s}: push to a tag (or to the repository), not to a digest: the digest is the result"))
        }
        ImageRef::Registry(r) => Ok(Destination::Registry(r)),
        ImageRef::OciArchive { .. } => {
            Err(format!("{s}: rechunk writes to an OCI layout (oci:DIR[:TAG]) or a registry, not an archive"))
        }
    }
}

fn parse_max_layers(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=plan::MAX_LAYERS).contains(&n) => Ok(n),
        _ => Err(format!("{s}: give a number of layers from 1 to {}", plan::MAX_LAYERS)),
    }
}

/// `SOURCE_DATE_EPOCH`, when set to a number of seconds.
fn source_date_epoch() -> Result<Option<i64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.is_empty() => Ok(Some(
            v.trim().parse().map_err(|_| anyhow::anyhow!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds"))?,
        )),
        _ => Ok(None),
    }
}

pub async fn rechunk(g: &GlobalArgs, a: RechunkArgs) -> Result<()> {
    let progress = g.progress();
    let pull = PullOptions {
        registry: g.registry_options(),
        platform: g.platform(),
        progress: progress.clone(),
        verifier: g.verifier()?,
    };
    let opts =
        Options { max_layers: a.max_layers, compression: a.compression, source_date_epoch: source_date_epoch()? };
    let started = std::time::Instant::now();
    let done = match &a.destination {
        Destination::Layout(dir, tag) => crate::rechunk::rechunk(&a.source, dir, tag.as_deref(), &pull, &opts).await?,
        Destination::Registry(dest) => {
            // Written to a layout in /var/tmp (not /tmp, often a RAM disk), pushed from there.
            let scratch = tempfile::Builder::new()
                .prefix("hostctl-rechunk-")
                .tempdir_in("/var/tmp")
                .context("creating a scratch directory in /var/tmp")?;
            let done = crate::rechunk::rechunk(&a.source, scratch.path(), None, &pull, &opts).await?;
            crate::rechunk::push::push_layout(scratch.path(), &done.manifest_digest, dest, &g.registry_options())
                .await?;
            done
        }
    };
    if a.json {
        print_json(&done)?;
    } else {
        let total: u64 = done.layers.iter().map(|l| l.size).sum();
        eprintln!(
            "Rechunked {} into {} layers ({}, {} packages) in {:.1}s",
            a.source,
            done.layers.len(),
            human_bytes(total),
            done.packages,
            started.elapsed().as_secs_f64()
        );
        outln!("{}", done.manifest_digest)?;
    }
    Ok(())
}
