//! The registry source: an OCI distribution spec client for one repository,
//! with auth (anonymous, Basic, Bearer tokens; credentials from auth.json and
//! credential helpers),
//! TLS options, retries and resumable, size-capped blob streams.
//!
//! Files, one concept each: [`client`] (endpoint, authorised GETs, retries),
//! [`auth`] (Basic and Bearer flows, token cache), [`challenge`]
//! (`WWW-Authenticate` parsing), [`authfile`] (auth.json lookup), [`credhelper`]
//! (docker-credential-* helpers), [`certs_d`]
//! (per-registry TLS directories), [`tls`] (roots, client certificate, insecure), [`manifest`] (media types, index
//! resolution), [`blob_stream`] (resume with `Range`).
//!
//! Why not oci-client's `Client` (read for this; it is in Cargo.toml for the
//! trust work's sigstore use): it reads manifests and referrer lists whole
//! with no size cap, discards token-server errors (so a wrong password would
//! surface as a bare 401 with no reason), has no retries or resume, fixes the
//! URL scheme at construction (no HTTPS→HTTP fallback for insecure
//! registries), and knows no auth files. Each of those is a requirement
//! here, so the protocol is spoken with reqwest, which oci-client wraps too.

pub mod auth;
pub mod authfile;
pub mod blob_stream;
pub mod certs_d;
pub mod challenge;
pub mod client;
pub mod credhelper;
pub mod manifest;
pub mod tls;

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use oci_spec::image::Descriptor;
use reqwest::header::CONTENT_TYPE;
use reqwest::StatusCode;

use crate::digest::Digest;
use crate::error::DigestMismatch;
use crate::imgref::RegistryRef;
use crate::oci::platform::Platform;
use crate::oci::source::MAX_MANIFEST_SIZE;
use crate::oci::{BlobReader, ImageSource, RawManifest, RegistryOptions, ResolvedManifest};
use client::{Client, Small};
use manifest::Kind;

/// A repository in a registry.
pub struct RegistrySource {
    reference: RegistryRef,
    client: Arc<Client>,
}

impl RegistrySource {
    /// Prepares a source; nothing is contacted until the first request.
    pub fn new(reference: RegistryRef, opts: &RegistryOptions) -> Result<Self> {
        let client = Client::new(&reference.registry, &reference.repository, opts)?;
        Ok(RegistrySource { reference, client })
    }

    /// GETs a manifest by tag or digest: `None` on 404. The bytes are capped,
    /// their digest must match a digest reference and the registry's
    /// `Docker-Content-Digest` header.
    async fn get_manifest(&self, reference: &str) -> Result<Option<RawManifest>> {
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

#[async_trait]
impl ImageSource for RegistrySource {
    fn describe(&self) -> String {
        format!("registry {}", self.reference.name())
    }

    async fn resolve(&self, platform: &Platform) -> Result<ResolvedManifest> {
        let reference = self.reference.reference();
        let top = self
            .get_manifest(&reference)
            .await?
            .with_context(|| format!("manifest {reference} not found in {}", self.describe()))?;
        match manifest::kind(&top.media_type)? {
            Kind::Image => {
                let parsed = manifest::parse_image(&top.bytes).with_context(|| format!("manifest {}", top.digest))?;
                Ok(ResolvedManifest { raw: top, manifest: parsed, index_digest: None })
            }
            Kind::Index => {
                let index = manifest::parse_index(&top.bytes).with_context(|| format!("index {}", top.digest))?;
                let entry = manifest::choose(&index, platform).with_context(|| format!("index {}", top.digest))?;
                let digest: Digest = entry.digest().to_string().parse().context("index entry digest")?;
                let raw = self
                    .get_manifest(&digest.to_string())
                    .await?
                    .with_context(|| format!("manifest {digest} (for {platform}) not found in {}", self.describe()))?;
                if raw.bytes.len() as u64 != entry.size() {
                    bail!("manifest {digest} is {} bytes but the index says {}", raw.bytes.len(), entry.size());
                }
                if manifest::kind(&raw.media_type)? != Kind::Image {
                    bail!("index {} entry {digest} for {platform} is not an image manifest", top.digest);
                }
                let parsed = manifest::parse_image(&raw.bytes).with_context(|| format!("manifest {digest}"))?;
                Ok(ResolvedManifest { raw, manifest: parsed, index_digest: Some(top.digest) })
            }
        }
    }

    async fn fetch_manifest(&self, reference: &str) -> Result<Option<RawManifest>> {
        self.get_manifest(reference).await
    }

    async fn referrers(&self, subject: &Digest) -> Result<Vec<Descriptor>> {
        let what = format!("referrers of {subject}");
        let bytes = match self
            .client
            .get_small(&format!("referrers/{subject}"), &[manifest::OCI_INDEX], MAX_MANIFEST_SIZE, &what)
            .await?
        {
            Small::Body { bytes, .. } => bytes,
            // Registries without the referrers API answer 404 (or 405/501).
            Small::Other(resp)
                if matches!(
                    resp.status(),
                    StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED
                ) =>
            {
                return Ok(Vec::new())
            }
            Small::Other(resp) => return Err(self.client.status_error(resp, &what).await),
        };
        let index = manifest::parse_index(&bytes).with_context(|| what.clone())?;
        Ok(index.manifests().clone())
    }

    async fn fetch_small_blob(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        let digest: Digest = desc.digest().to_string().parse().context("blob digest")?;
        let size = desc.size();
        if size > MAX_MANIFEST_SIZE {
            bail!("blob {digest} is {size} bytes, more than the {MAX_MANIFEST_SIZE} allowed for a config or payload");
        }
        let what = format!("blob {digest}");
        let bytes = match self.client.get_small(&format!("blobs/{digest}"), &[], size, &what).await? {
            Small::Body { bytes, .. } => bytes,
            Small::Other(resp) => return Err(self.client.status_error(resp, &what).await),
        };
        if bytes.len() as u64 != size {
            bail!("{what} is {} bytes but its descriptor says {size}", bytes.len());
        }
        let actual = Digest::of(&bytes);
        if actual != digest {
            return Err(DigestMismatch { what, expected: digest, actual }.into());
        }
        Ok(bytes)
    }

    async fn open_blob(&self, desc: &Descriptor, offset: u64) -> Result<BlobReader> {
        let digest: Digest = desc.digest().to_string().parse().context("blob digest")?;
        let stream = blob_stream::open(self.client.clone(), digest, desc.size(), offset).await?;
        Ok(BlobReader::Async(Box::pin(tokio_util::io::StreamReader::new(stream))))
    }
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
