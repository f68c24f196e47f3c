//! Finding cosign signatures for a manifest digest, the two ways cosign and
//! containers/image store them: the `sha256-<hex>.sig` tag of the same
//! repository, and OCI 1.1 referrers whose artifact type is cosign's
//! signature type. Also the "simple signing" payload they sign.

use std::collections::BTreeMap;

use anyhow::{bail, ensure, Context, Result};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Deserialize;

use super::bundle::BUNDLE_MEDIA_TYPE_PREFIX;
use crate::digest::Digest;
use crate::oci::ImageSource;

/// Media type of a cosign signature layer (the payload).
pub const SIMPLESIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Artifact type of cosign signatures stored as OCI 1.1 referrers.
pub const SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.dev.cosign.artifact.sig.v1+json";
/// The OCI empty descriptor's media type.
const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// Layer annotations cosign writes.
pub const ANN_SIGNATURE: &str = "dev.cosignproject.cosign/signature";
/// Annotation holding the signing certificate (PEM).
pub const ANN_CERTIFICATE: &str = "dev.sigstore.cosign/certificate";
/// Annotation holding the certificate's chain (PEM).
pub const ANN_CHAIN: &str = "dev.sigstore.cosign/chain";
/// Annotation holding the Rekor bundle (JSON).
pub const ANN_BUNDLE: &str = "dev.sigstore.cosign/bundle";
/// The `critical.type` of an image signature payload.
pub const PAYLOAD_TYPE: &str = "cosign container image signature";
/// Signatures looked at per image at most (a registry could offer thousands).
pub const MAX_SIGNATURES: usize = 64;

/// One signature as found, not yet verified.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// Where it was found, for messages (`tag sha256-….sig, layer 1`).
    pub origin: String,
    /// The exact signed bytes.
    pub payload: Vec<u8>,
    /// Base64 signature over `payload`.
    pub signature: String,
    /// PEM leaf certificate (keyless signatures).
    pub certificate: Option<String>,
    /// PEM intermediate (and root) certificates.
    pub chain: Option<String>,
    /// Rekor bundle JSON (`SignedEntryTimestamp` + `Payload`).
    pub bundle: Option<String>,
}

/// The cosign signature tag for a manifest digest: `sha256-<hex>.sig`.
pub fn signature_tag(digest: &Digest) -> String {
    format!("{}.sig", digest.to_string().replacen(':', "-", 1))
}

/// The OCI 1.1 referrers tag-schema fallback tag for a digest: `sha256-<hex>`.
pub fn referrers_tag(digest: &Digest) -> String {
    digest.to_string().replacen(':', "-", 1)
}

/// A sigstore bundle found among a digest's referrers, not yet verified.
#[derive(Clone, Debug)]
pub struct BundleCandidate {
    /// Where it was found, for messages (`referrer sha256:…, layer 1`).
    pub origin: String,
    /// The bundle JSON.
    pub json: Vec<u8>,
}

/// Signatures found for `digest`, and what was searched (for "unsigned" messages).
pub struct Found {
    /// The signatures found.
    pub candidates: Vec<Candidate>,
    /// The sigstore bundles found (OCI referrers with a bundle artifact type).
    pub bundles: Vec<BundleCandidate>,
    /// The signature tags looked at, for messages.
    pub searched: Vec<String>,
}

/// Looks for signatures of `digest` at its signature tag and among its referrers.
pub async fn find_signatures(source: &dyn ImageSource, digest: &Digest) -> Result<Found> {
    let mut candidates = Vec::new();
    let mut searched = Vec::new();
    let tag = signature_tag(digest);
    searched.push(format!("tag {tag}"));
    if let Some(raw) = source.fetch_manifest(&tag).await.with_context(|| format!("fetching signature tag {tag}"))? {
        collect(source, &raw.bytes, &format!("tag {tag}"), &mut candidates).await?;
    }
    searched.push("OCI referrers".to_string());
    let mut referrers = source.referrers(digest).await.with_context(|| format!("listing referrers of {digest}"))?;
    if referrers.is_empty() {
        // Registries without the referrers API: the spec's fallback is an index
        // at the tag `sha256-<hex>` that clients (cosign among them) keep up to date.
        let fallback = referrers_tag(digest);
        searched.push(format!("referrers tag {fallback}"));
        if let Some(raw) =
            source.fetch_manifest(&fallback).await.with_context(|| format!("fetching referrers tag {fallback}"))?
        {
            let index: ImageIndex = serde_json::from_slice(&raw.bytes)
                .with_context(|| format!("referrers tag {fallback} is not an image index"))?;
            referrers = index.manifests().clone();
        }
    }
    let mut bundles = Vec::new();
    for desc in referrers.iter().take(MAX_SIGNATURES) {
        let mut ty = desc.artifact_type().as_ref().map(|t| t.to_string()).unwrap_or_default();
        // cosign 2.5 (go-containerregistry) lists its bundle manifests in the
        // referrers tag index with the config's `application/vnd.oci.empty.v1+json`
        // as artifact type; the manifest itself has the right one, so such
        // entries are opened and their own artifactType read.
        let unknown = ty.is_empty() || ty == EMPTY_MEDIA_TYPE;
        if ty != SIGNATURE_ARTIFACT_TYPE && !ty.starts_with(BUNDLE_MEDIA_TYPE_PREFIX) && !unknown {
            continue;
        }
        let reference = desc.digest().to_string();
        let Some(raw) =
            source.fetch_manifest(&reference).await.with_context(|| format!("fetching referrer {reference}"))?
        else {
            continue; // listed but gone: nothing to verify
        };
        if unknown {
            let v: serde_json::Value = serde_json::from_slice(&raw.bytes).unwrap_or_default();
            ty = v["artifactType"].as_str().unwrap_or_default().to_string();
        }
        let is_bundle = ty.starts_with(BUNDLE_MEDIA_TYPE_PREFIX);
        if ty != SIGNATURE_ARTIFACT_TYPE && !is_bundle {
            continue;
        }
        if is_bundle {
            collect_bundles(source, &raw.bytes, &format!("referrer {reference}"), &mut bundles).await?;
        } else {
            collect(source, &raw.bytes, &format!("referrer {reference}"), &mut candidates).await?;
        }
    }
    Ok(Found { candidates, bundles, searched })
}

/// The bundle layers of a referrer manifest (cosign's layout: one layer whose
/// media type is the bundle's).
async fn collect_bundles(
    source: &dyn ImageSource,
    manifest: &[u8],
    origin: &str,
    out: &mut Vec<BundleCandidate>,
) -> Result<()> {
    let manifest: ImageManifest =
        serde_json::from_slice(manifest).with_context(|| format!("{origin} is not an image manifest"))?;
    for (i, layer) in manifest.layers().iter().enumerate() {
        if !layer.media_type().to_string().starts_with(BUNDLE_MEDIA_TYPE_PREFIX) {
            continue;
        }
        ensure!(out.len() < MAX_SIGNATURES, "more than {MAX_SIGNATURES} bundles: refusing to look at more");
        let origin = format!("{origin}, layer {}", i + 1);
        let json = fetch_payload(source, layer).await.with_context(|| format!("{origin}: fetching the bundle"))?;
        out.push(BundleCandidate { origin, json });
    }
    Ok(())
}

async fn collect(source: &dyn ImageSource, manifest: &[u8], origin: &str, out: &mut Vec<Candidate>) -> Result<()> {
    let manifest: ImageManifest =
        serde_json::from_slice(manifest).with_context(|| format!("{origin} is not an image manifest"))?;
    for (i, layer) in manifest.layers().iter().enumerate() {
        if layer.media_type().to_string() != SIMPLESIGNING_MEDIA_TYPE {
            continue;
        }
        ensure!(out.len() < MAX_SIGNATURES, "more than {MAX_SIGNATURES} signatures: refusing to look at more");
        let origin = format!("{origin}, layer {}", i + 1);
        let ann: BTreeMap<String, String> = layer.annotations().clone().unwrap_or_default().into_iter().collect();
        let Some(signature) = ann.get(ANN_SIGNATURE) else {
            bail!("{origin}: signature layer without a {ANN_SIGNATURE} annotation");
        };
        let payload = fetch_payload(source, layer).await.with_context(|| format!("{origin}: fetching the payload"))?;
        out.push(Candidate {
            origin,
            payload,
            signature: signature.clone(),
            certificate: ann.get(ANN_CERTIFICATE).filter(|s| !s.is_empty()).cloned(),
            chain: ann.get(ANN_CHAIN).filter(|s| !s.is_empty()).cloned(),
            bundle: ann.get(ANN_BUNDLE).filter(|s| !s.is_empty()).cloned(),
        });
    }
    Ok(())
}

async fn fetch_payload(source: &dyn ImageSource, layer: &Descriptor) -> Result<Vec<u8>> {
    let bytes = source.fetch_small_blob(layer).await?;
    // Sources check digests, but the payload is what trust rests on: check again.
    let want: Digest = layer.digest().to_string().parse()?;
    let got = Digest::of(&bytes);
    ensure!(got == want, "payload digest mismatch: expected {want}, got {got}");
    Ok(bytes)
}

/// The parts of a simple-signing payload hostctl checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payload {
    /// `critical.identity.docker-reference`: the reference signed.
    pub docker_reference: String,
    /// `critical.image.docker-manifest-digest`: the manifest digest signed.
    pub manifest_digest: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPayload {
    critical: RawCritical,
    #[allow(dead_code)]
    optional: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCritical {
    identity: RawIdentity,
    image: RawImage,
    #[serde(rename = "type")]
    ty: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIdentity {
    #[serde(rename = "docker-reference")]
    docker_reference: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    #[serde(rename = "docker-manifest-digest")]
    docker_manifest_digest: String,
}

/// Parses a payload (only after its signature was verified).
pub fn parse_payload(bytes: &[u8]) -> Result<Payload> {
    let raw: RawPayload = serde_json::from_slice(bytes).context("malformed signature payload")?;
    ensure!(raw.critical.ty == PAYLOAD_TYPE, "malformed signature payload: critical.type is {:?}", raw.critical.ty);
    Ok(Payload {
        docker_reference: raw.critical.identity.docker_reference,
        manifest_digest: raw.critical.image.docker_manifest_digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_tags_follow_cosign() {
        let d = Digest::of(b"m");
        assert_eq!(signature_tag(&d), format!("sha256-{}.sig", d.to_string().strip_prefix("sha256:").unwrap()));
    }

    #[test]
    fn payloads_parse_strictly() {
        let good = br#"{"critical":{"identity":{"docker-reference":"r.io/os"},"image":{"docker-manifest-digest":"sha256:ab"},"type":"cosign container image signature"},"optional":{"creator":"x"}}"#;
        assert_eq!(
            parse_payload(good).unwrap(),
            Payload { docker_reference: "r.io/os".into(), manifest_digest: "sha256:ab".into() }
        );
        for bad in [
            &b"not json"[..],
            br#"{"critical":{"identity":{"docker-reference":"r.io/os"},"type":"cosign container image signature"}}"#,
            br#"{"critical":{"identity":{"docker-reference":"r.io/os"},"image":{"docker-manifest-digest":"sha256:ab"},"type":"something else"}}"#,
            br#"{"critical":{"identity":{"docker-reference":"r.io/os"},"image":{"docker-manifest-digest":"sha256:ab","x":1},"type":"cosign container image signature"}}"#,
            br#"{"critical":{"identity":{"docker-reference":"r.io/os"},"image":{"docker-manifest-digest":"sha256:ab"},"type":"cosign container image signature"},"extra":1}"#,
        ] {
            let err = format!("{:#}", parse_payload(bad).unwrap_err());
            assert!(err.contains("malformed signature payload"), "{err}");
        }
    }
}
