//! Building a deployment's root tree from an image's layer indexes.
// CONTRACT (skeleton): the deployment-tree work fills this in.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::store::{LayerIndex, Store};

/// Options for a checkout.
#[derive(Clone, Debug, Default)]
pub struct CheckoutOptions {
    /// Move the image's `/etc` to `usr/etc` (the pristine defaults), as every
    /// deployment does; off to compare trees with other unpackers.
    pub relocate_etc: bool,
}

/// What a checkout produced.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CheckoutStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub others: u64,
}

/// Checks out `layers` (lowest first) into `dest`, which must not exist yet:
/// whiteouts and opaque directories applied, regular files hardlinked from the
/// store's objects, directories, symlinks and device nodes created with their
/// metadata. Never follows a symlink of the tree being built.
pub fn checkout(
    _store: &Store,
    _layers: &[LayerIndex],
    _dest: &Path,
    _opts: &CheckoutOptions,
) -> Result<CheckoutStats> {
    anyhow::bail!("checkout is not implemented yet")
}
