//! `hostctl image rm REF...` and `hostctl image prune`: forget images no
//! deployment uses (the rule is in [`crate::deploy::images`]); `cleanup`
//! then reclaims their layers and objects.

use std::io::Write;

use anyhow::Result;
use clap::Args;
use serde::Serialize;

use super::output::print_json;
use super::upgrade::open_locked;
use super::GlobalArgs;
use crate::deploy::images;
use crate::imgref::ImageRef;
use crate::oci::identity::ImageReference;
use crate::store::ImageRecord;

#[derive(Debug, Args)]
pub struct RmArgs {
    /// Image references as `image list` shows them.
    #[arg(required = true)]
    pub images: Vec<ImageRef>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What `image rm` and `image prune` removed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Removed {
    image: ImageReference,
    image_digest: crate::digest::Digest,
}

pub fn rm(g: &GlobalArgs, a: RmArgs) -> Result<()> {
    // As `image pull` recorded them: a layout's path absolute.
    let names =
        a.images.iter().map(|i| crate::oci::absolute_path(i).map(|i| i.to_string())).collect::<Result<Vec<_>>>()?;
    let (d, _lock) = open_locked(g)?;
    let records = d.store.list_images()?;
    let used = images::in_use(&d)?;
    let doomed = images::to_remove(&records, &names, &used)?;
    remove(&d, doomed, a.json)
}

pub fn prune(g: &GlobalArgs, a: PruneArgs) -> Result<()> {
    let (d, _lock) = open_locked(g)?;
    let records = d.store.list_images()?;
    let used = images::in_use(&d)?;
    remove(&d, images::unused(&records, &used), a.json)
}

fn remove(d: &crate::deploy::stage::Deployer, doomed: Vec<&ImageRecord>, json: bool) -> Result<()> {
    let mut removed = Vec::new();
    for r in doomed {
        d.store.remove_image(&r.imgref)?;
        removed.push(Removed { image: ImageReference::from_text(&r.imgref), image_digest: r.manifest_digest.clone() });
    }
    if json {
        return print_json(&removed);
    }
    let mut out = super::output::stdout();
    for r in &removed {
        writeln!(out, "Removed {}", r.image.image)?;
    }
    if removed.is_empty() {
        eprintln!("No image removed: every image the store holds is used by a deployment");
    } else {
        eprintln!("`hostctl cleanup` reclaims the layers and objects no other image or deployment uses");
    }
    Ok(())
}
