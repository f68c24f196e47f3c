//! Getting images from where they are published: references' transports,
//! registries (OCI distribution spec), OCI layout directories and archives.

pub mod identity;
pub mod layout;
pub mod platform;
pub mod registry;
pub mod source;

use anyhow::{Context, Result};

use crate::imgref::ImageRef;
pub use source::{descriptor_digest, BlobReader, ImageSource, RawManifest, ResolvedManifest};

/// The config label that carries an image's version (shown by `status`, boot menus, `inspect`).
pub const VERSION_LABEL: &str = "org.opencontainers.image.version";

/// The value of config label `key`, if the image has it.
pub fn config_label(config: &oci_spec::image::ImageConfiguration, key: &str) -> Option<String> {
    config.config().as_ref().and_then(|c| c.labels().as_ref()).and_then(|l| l.get(key).cloned())
}

/// The image's version label ([`VERSION_LABEL`]), if any.
pub fn image_version(config: &oci_spec::image::ImageConfiguration) -> Option<String> {
    config_label(config, VERSION_LABEL)
}

/// Connection options for registries, as skopeo and podman spell them.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// `--tls-verify=false`: allow plain HTTP and unverified TLS.
    pub insecure: bool,
    /// `--cert-dir`: the TLS directory for every registry (`*.crt` CA roots,
    /// `*.cert`/`*.key` client certificate) instead of the [`RegistryOptions::certs_d`] lookup.
    pub cert_dir: Option<std::path::PathBuf>,
    /// containers-certs.d(5) roots searched for `<host[:port]>/` when `cert_dir`
    /// is not given; empty: none (the CLI passes [`registry::certs_d::default_roots`]).
    pub certs_d: Vec<std::path::PathBuf>,
    /// registries.conf files read in order (missing ones skipped); empty:
    /// none (the CLI passes [`registry::registries_conf::default_files`]).
    pub registries_conf: Vec<std::path::PathBuf>,
    /// `--authfile`: an auth.json to use instead of the default search path.
    pub authfile: Option<std::path::PathBuf>,
    /// Layers downloaded at once.
    pub max_concurrent_downloads: Option<usize>,
    /// `--require-full-layer-digest`: read every layer whole and check its
    /// digest and diff_id, never building one from a zstd:chunked TOC.
    pub require_full_layer_digest: bool,
}

/// `imgref` with a relative `oci:`/`oci-archive:` path made absolute against
/// the current directory; other references unchanged.
///
/// Every reference that is recorded (the tracked image in `state.json`, a
/// deployment's metadata, the store's image records) goes through this first,
/// so that `upgrade` from another directory, or from the update timer, opens
/// the same layout. The path is made absolute lexically, without resolving
/// symlinks: a symlink the admin points at the next release is followed again
/// by each `upgrade`, as the name typed meant.
pub fn absolute_path(imgref: &ImageRef) -> Result<ImageRef> {
    let absolute = |path: &std::path::Path| -> Result<std::path::PathBuf> {
        if path.is_absolute() {
            return Ok(path.to_path_buf());
        }
        let abs = std::path::absolute(path)
            .with_context(|| format!("making {} absolute (is the current directory still there?)", path.display()))?;
        // A reference ends its path at the first colon: a path with one could
        // not be read back from where it is recorded.
        anyhow::ensure!(
            abs.to_str().is_some_and(|s| !s.contains(':')),
            "{} cannot be recorded in an image reference (it holds a colon or is not UTF-8); give the path without them",
            abs.display()
        );
        Ok(abs)
    };
    Ok(match imgref {
        ImageRef::Registry(_) => imgref.clone(),
        ImageRef::OciDir { path, tag } => ImageRef::OciDir { path: absolute(path)?, tag: tag.clone() },
        ImageRef::OciArchive { path, tag } => ImageRef::OciArchive { path: absolute(path)?, tag: tag.clone() },
    })
}

/// Opens the source an image reference names.
pub fn open_source(imgref: &ImageRef, opts: &RegistryOptions) -> Result<Box<dyn ImageSource>> {
    Ok(match imgref {
        ImageRef::Registry(r) => Box::new(registry::RegistrySource::new(r.clone(), opts)?),
        ImageRef::OciDir { path, tag } => Box::new(layout::OciLayoutSource::open_dir(path, tag.as_deref())?),
        ImageRef::OciArchive { path, tag } => Box::new(layout::OciLayoutSource::open_archive(path, tag.as_deref())?),
    })
}
