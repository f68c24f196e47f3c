//! One place an image is pulled from (the primary location or a mirror):
//! the physical reference, its HTTP client, and manifest GETs whose bytes are
//! capped and digest-checked whichever endpoint served them.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;

use super::client::{Client, Small};
use super::manifest;
use super::registries_conf;
use crate::digest::Digest;
use crate::error::DigestMismatch;
use crate::imgref::RegistryRef;
use crate::oci::source::MAX_MANIFEST_SIZE;
use crate::oci::{RawManifest, RegistryOptions};

/// A repository at one registry.
pub struct Endpoint {
    /// The image here: the name after registries.conf rewrites, the tag or digest asked for.
    pub reference: RegistryRef,
    /// The client for this repository, with this location's TLS setting.
    pub client: Arc<Client>,
    /// A mirror rather than the primary location.
    pub mirror: bool,
}

impl Endpoint {
    /// The endpoint `spec` describes, with `opts` but `spec`'s insecure setting.
    pub fn new(spec: registries_conf::Endpoint, opts: &RegistryOptions) -> Result<Self> {
        let opts = RegistryOptions { insecure: spec.insecure, ..opts.clone() };
        let client = Client::new(&spec.reference.registry, &spec.reference.repository, &opts)?;
        Ok(Endpoint { reference: spec.reference, client, mirror: spec.mirror })
    }

    fn describe(&self) -> String {
        format!("registry {}", self.reference.name())
    }

    /// GETs a manifest by tag or digest: `None` on 404. The bytes are capped,
    /// their digest must match a digest reference and the registry's
    /// `Docker-Content-Digest` header.
    pub async fn get_manifest(&self, reference: &str) -> Result<Option<RawManifest>> {
        let what = format!("manifest {reference}");
        let pinned = match reference.parse::<Digest>() {
            Ok(d) => Some(d),
            Err(_) if is_tag(reference) => None,
            Err(e) => bail!("invalid manifest reference {reference:?}: neither a tag nor a digest ({e})"),
        };
        let (headers, bytes) = match self
            .client
            .get_small(&format!("manifests/{reference}"), manifest::ACCEPT, MAX_MANIFEST_SIZE, &what)
            .await?
        {
            Small::Body { headers, bytes } => (headers, bytes),
            Small::Other(resp) if resp.status() == StatusCode::NOT_FOUND => return Ok(None),
            Small::Other(resp) => return Err(self.client.status_error(resp, &what).await),
        };
        let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok());
        let header_digest = headers.get("docker-content-digest").and_then(|v| v.to_str().ok());
        let digest = Digest::of(&bytes);
        if let Some(expected) = pinned {
            if expected != digest {
                return Err(DigestMismatch { what, expected, actual: digest }.into());
            }
        }
        if let Some(h) = header_digest {
            // Only sha256 can be checked; other algorithms are left to the
            // digest pin (if any) checked above.
            if let Ok(claimed) = h.parse::<Digest>() {
                if claimed != digest {
                    return Err(DigestMismatch {
                        what: format!("{what} (Docker-Content-Digest header of {})", self.describe()),
                        expected: claimed,
                        actual: digest,
                    }
                    .into());
                }
            }
        }
        let media_type = manifest::media_type(&bytes, content_type).with_context(|| what.clone())?;
        Ok(Some(RawManifest { digest, media_type, bytes }))
    }
}

/// A tag as the distribution spec defines it: `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`
/// (checked before it goes into a URL path).
fn is_tag(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::is_tag;

    #[test]
    fn tags_are_checked_before_they_reach_a_url() {
        for ok in ["latest", "v1.2.3", "_x", "sha256-abc.sig", &"a".repeat(128)] {
            assert!(is_tag(ok), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a?b", "../x", "a b", "sha256:abc", &"a".repeat(129)] {
            assert!(!is_tag(bad), "{bad}");
        }
    }
}
