//! Which image something is: the one image-identity type shared by a
//! deployment's metadata, `status` and `image inspect`, shaped as bootc's
//! `ImageStatus` (`{image: {image, transport}, imageDigest, version,
//! timestamp, architecture}`) with hostctl's `configDigest` beside it.

use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::imgref::ImageRef;

/// An image reference split as bootc's `ImageReference`: the transport
/// (`registry`, `oci`, `oci-archive`) and the reference without it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageReference {
    /// `registry.example.com/os:stable`, or a layout's `/path[:tag]`.
    pub image: String,
    /// `registry`, `oci` or `oci-archive` (bootc's transport names).
    pub transport: String,
}

impl ImageReference {
    /// Splits a reference as hostctl writes it (`oci:/p:tag`,
    /// `registry:r.io/os:1`, or a bare registry name). A string that does not
    /// parse keeps its text with an empty transport, so that old records
    /// still show what they say.
    pub fn from_text(text: &str) -> ImageReference {
        match text.parse::<ImageRef>() {
            Ok(r) => ImageReference::from(&r),
            Err(_) => ImageReference { image: text.to_string(), transport: String::new() },
        }
    }

    /// The reference as hostctl's command line takes it (the registry
    /// transport left implicit).
    pub fn to_text(&self) -> String {
        match self.transport.as_str() {
            "registry" | "" => self.image.clone(),
            t => format!("{t}:{}", self.image),
        }
    }
}

impl From<&ImageRef> for ImageReference {
    fn from(r: &ImageRef) -> Self {
        let (transport, image) = match r {
            ImageRef::Registry(reg) => ("registry", reg.to_string()),
            ImageRef::OciDir { .. } => ("oci", r.to_string().trim_start_matches("oci:").to_string()),
            ImageRef::OciArchive { .. } => {
                ("oci-archive", r.to_string().trim_start_matches("oci-archive:").to_string())
            }
        };
        ImageReference { image, transport: transport.into() }
    }
}

impl std::fmt::Display for ImageReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// Which image, exactly: bootc's `ImageStatus` plus the config digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageIdentity {
    /// The reference it came from.
    pub image: ImageReference,
    /// The manifest digest (bootc's name for it).
    pub image_digest: Digest,
    /// The config blob's digest (hostctl's addition).
    pub config_digest: Digest,
    /// The `org.opencontainers.image.version` label.
    pub version: Option<String>,
    /// The config's `created` time (RFC 3339).
    pub timestamp: Option<String>,
    /// The config's architecture (`amd64`, `arm64`); `None` only for
    /// deployments recorded before hostctl kept it.
    pub architecture: Option<String>,
}

impl ImageIdentity {
    /// The identity of the image `imgref` whose manifest is `manifest_digest`
    /// and whose config (at `config_digest`) is `config`.
    pub fn new(
        imgref: &ImageRef,
        manifest_digest: Digest,
        config_digest: Digest,
        config: &ImageConfiguration,
    ) -> ImageIdentity {
        ImageIdentity {
            image: imgref.into(),
            image_digest: manifest_digest,
            config_digest,
            version: super::image_version(config),
            timestamp: config.created().clone(),
            architecture: Some(config.architecture().to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// bootc's transports for the references hostctl takes (bootc's
    /// `spec-via-local-oci.yaml` records `{image: /var/mnt/osupdate:latest,
    /// transport: oci}`; `registry` is its default).
    #[test]
    fn references_split_into_bootc_transports_and_back() {
        let table = [
            ("quay.io/example/someimage:latest", "registry", "quay.io/example/someimage:latest"),
            ("registry:quay.io/example/someimage:latest", "registry", "quay.io/example/someimage:latest"),
            ("docker://127.0.0.1:5000/os", "registry", "127.0.0.1:5000/os:latest"),
            ("oci:/var/mnt/osupdate:latest", "oci", "/var/mnt/osupdate:latest"),
            ("oci:/var/mnt/osupdate", "oci", "/var/mnt/osupdate"),
            ("oci-archive:/tmp/os.tar:v2", "oci-archive", "/tmp/os.tar:v2"),
        ];
        for (text, transport, image) in table {
            let r = ImageReference::from_text(text);
            assert_eq!((r.transport.as_str(), r.image.as_str()), (transport, image), "{text}");
            let back: ImageRef = r.to_text().parse().unwrap();
            assert_eq!(back, text.parse::<ImageRef>().unwrap(), "{text} round trip");
        }
        let odd = ImageReference::from_text("dir:/x");
        assert_eq!((odd.transport.as_str(), odd.image.as_str()), ("", "dir:/x"), "kept as written");
        assert_eq!(odd.to_text(), "dir:/x");
    }
}
