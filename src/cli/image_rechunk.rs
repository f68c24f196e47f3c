//! `hostctl image rechunk SRC DST`: rewrite an OS image into content-stable
//! layers (the work is in [`crate::rechunk`]).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use super::output::{outln, print_json};
use super::GlobalArgs;
use crate::imgref::ImageRef;
use crate::pull::PullOptions;
use crate::rechunk::{plan, Compression, Options};
use crate::util::human_bytes;

#[derive(Debug, Args)]
pub struct RechunkArgs {
    /// The image to rewrite: [registry:|docker://|oci:|oci-archive:]NAME[:TAG][@DIGEST].
    pub source: ImageRef,
    /// Where to write it: oci:DIR[:TAG] (push it on with skopeo copy).
    #[arg(value_parser = parse_destination)]
    pub destination: (PathBuf, Option<String>),
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

/// `oci:DIR[:TAG]`, the only destination rechunk writes.
fn parse_destination(s: &str) -> Result<(PathBuf, Option<String>), String> {
    match s.parse::<ImageRef>().map_err(|e| format!("{e:#}"))? {
        ImageRef::OciDir { path, tag } => Ok((path, tag)),
        _ => Err(format!(
            "{s}: rechunk writes to an OCI layout directory (oci:DIR[:TAG]); copy it to a registry with skopeo copy"
        )),
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
    let (dir, tag) = a.destination;
    let started = std::time::Instant::now();
    let done = crate::rechunk::rechunk(&a.source, &dir, tag.as_deref(), &pull, &opts).await?;
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
