//! Rollout metadata in the registry: an OCI artifact whose `subject` is the
//! released image's manifest, holding the schedule (start and waves) and the
//! halt threshold. `hostctl fleet release` pushes it; the agent finds it
//! among the image's referrers (the OCI 1.1 referrers API, or the referrers
//! tag `sha256-<hex>` on registries without it), checks its signature under
//! the trust policy exactly as an image's (cosign signs it like an image),
//! and reads it. Metadata that is unsigned or tampered with is refused,
//! logged, and the image treated as not released.

use anyhow::{bail, ensure, Context, Result};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::{Deserialize, Serialize};

pub use super::protocol::HaltAfter;
use super::waves::{format_time, Schedule};
use crate::digest::Digest;
use crate::imgref::{ImageRef, RegistryRef};
use crate::oci::registry::client::Client;
use crate::oci::registry::manifest::{OCI_INDEX, OCI_MANIFEST};
use crate::oci::{ImageSource, RawManifest, ResolvedManifest};
use crate::trust::{ImageVerifier, Verdict};

/// The artifact type (and the metadata layer's media type) of rollout metadata.
pub const ARTIFACT_TYPE: &str = "application/vnd.hostctl.rollout.v1+json";
/// The OCI empty descriptor's media type (the artifact's config).
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// The OCI empty descriptor's content.
pub const EMPTY_JSON: &[u8] = b"{}";
/// The annotation with the artifact's creation time (the newest release wins).
pub const ANN_CREATED: &str = "org.opencontainers.image.created";
/// Rollout artifacts looked at per image at most.
pub const MAX_RELEASES: usize = 16;

/// The halt threshold as rollout metadata has always written it:
/// `{"hosts": N}` or `{"percent": P}` (the wire and the command line write
/// the same [`HaltAfter`] as `N` or `P%`). Signed metadata already pushed
/// must keep reading.
mod metadata_halt_after {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::HaltAfter;

    #[derive(Serialize, Deserialize)]
    #[serde(rename_all = "camelCase")]
    enum Written {
        Hosts(u64),
        Percent(f64),
    }

    pub fn serialize<S: Serializer>(h: &HaltAfter, s: S) -> Result<S::Ok, S::Error> {
        match *h {
            HaltAfter::Hosts(n) => Written::Hosts(u64::from(n)),
            HaltAfter::Percent(p) => Written::Percent(p),
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HaltAfter, D::Error> {
        let text = match Written::deserialize(d)? {
            Written::Hosts(n) => n.to_string(),
            Written::Percent(p) => format!("{p}%"),
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The metadata document (the artifact's one layer).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RolloutMetadata {
    /// Always 1.
    pub schema_version: u32,
    /// The released image's manifest digest (the artifact's subject).
    pub image_digest: String,
    /// When and how fast.
    #[serde(flatten)]
    pub schedule: Schedule,
    /// When the release halts itself.
    #[serde(with = "metadata_halt_after")]
    pub halt_after: HaltAfter,
}

impl RolloutMetadata {
    /// Parses a metadata document strictly (unknown fields are refused).
    pub fn parse(bytes: &[u8]) -> Result<RolloutMetadata> {
        let m: RolloutMetadata = serde_json::from_slice(bytes).context("malformed rollout metadata")?;
        ensure!(m.schema_version == 1, "rollout metadata schema version {} is not 1", m.schema_version);
        Ok(m)
    }
}

/// The manifest a release is for, as the artifact's `subject` names it.
#[derive(Clone, Debug)]
pub struct Subject {
    /// Its media type.
    pub media_type: String,
    /// Its digest.
    pub digest: Digest,
    /// Its size.
    pub size: u64,
}

impl Subject {
    /// The subject of a fetched manifest.
    pub fn of(raw: &RawManifest) -> Subject {
        Subject { media_type: raw.media_type.clone(), digest: raw.digest.clone(), size: raw.bytes.len() as u64 }
    }
}

/// The artifact's manifest bytes for `meta` about `subject`, with its two blobs.
pub fn artifact(meta: &RolloutMetadata, subject: &Subject, created: &str) -> Result<(Vec<u8>, Vec<u8>)> {
    let layer = serde_json::to_vec_pretty(meta)?;
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": EMPTY_MEDIA_TYPE, "digest": Digest::of(EMPTY_JSON).to_string(), "size": EMPTY_JSON.len(), "data": "e30="},
        "layers": [{"mediaType": ARTIFACT_TYPE, "digest": Digest::of(&layer).to_string(), "size": layer.len()}],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest.to_string(), "size": subject.size},
        "annotations": {ANN_CREATED: created},
    });
    Ok((serde_json::to_vec(&manifest)?, layer))
}

/// How the artifact was made findable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ReferrersMode {
    /// The registry serves the OCI 1.1 referrers API and indexes it itself.
    Api,
    /// The registry does not: the referrers tag `sha256-<hex>` was updated.
    TagSchema,
}

/// What `fleet release` pushed.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pushed {
    /// The artifact's repository reference by digest (what to sign).
    pub artifact: String,
    /// Its manifest digest.
    pub artifact_digest: Digest,
    /// The metadata.
    pub metadata: RolloutMetadata,
    /// How agents find it.
    pub referrers: ReferrersMode,
}

/// Pushes `meta` as an artifact about `subject` into `client`'s repository
/// and makes it findable: by the registry's referrers API when it has one,
/// else by adding it to the referrers tag's index.
pub async fn push(client: &Client, subject: &Subject, meta: &RolloutMetadata) -> Result<Pushed> {
    let created = crate::util::now_rfc3339();
    let (manifest, layer) = artifact(meta, subject, &created)?;
    client.push_blob(EMPTY_JSON).await.context("pushing the empty config")?;
    client.push_blob(&layer).await.context("pushing the rollout metadata")?;
    let digest = Digest::of(&manifest);
    let put = client.put_manifest(&digest.to_string(), OCI_MANIFEST, &manifest).await?;
    let referrers = if put.subject_indexed || client.has_referrers_api(&subject.digest).await? {
        ReferrersMode::Api
    } else {
        add_to_referrers_tag(client, &subject.digest, &digest, manifest.len() as u64, &created).await?;
        ReferrersMode::TagSchema
    };
    Ok(Pushed {
        artifact: format!("{}/{}@{digest}", client.registry, client.repository),
        artifact_digest: digest,
        metadata: meta.clone(),
        referrers,
    })
}

/// The referrers tag schema (OCI distribution spec 1.1): the index at tag
/// `sha256-<hex>` of the subject lists its referrers; a client pushing one
/// fetches it, adds the new descriptor, and puts it back.
async fn add_to_referrers_tag(
    client: &Client,
    subject: &Digest,
    artifact: &Digest,
    size: u64,
    created: &str,
) -> Result<()> {
    let tag = crate::trust::cosign::referrers_tag(subject);
    let what = format!("referrers tag {tag}");
    let mut manifests: Vec<serde_json::Value> = match client
        .get_small(&format!("manifests/{tag}"), &[OCI_INDEX], crate::oci::source::MAX_MANIFEST_SIZE, &what)
        .await?
    {
        crate::oci::registry::client::Small::Body { bytes, .. } => {
            let v: serde_json::Value = serde_json::from_slice(&bytes).with_context(|| format!("{what} is not JSON"))?;
            v.get("manifests").and_then(|m| m.as_array()).cloned().unwrap_or_default()
        }
        crate::oci::registry::client::Small::Other(r) if r.status() == reqwest::StatusCode::NOT_FOUND => Vec::new(),
        crate::oci::registry::client::Small::Other(r) => return Err(client.status_error(r, &what).await),
    };
    if !manifests.iter().any(|m| m.get("digest").and_then(|d| d.as_str()) == Some(&artifact.to_string())) {
        manifests.push(serde_json::json!({
            "mediaType": OCI_MANIFEST, "digest": artifact.to_string(), "size": size,
            "artifactType": ARTIFACT_TYPE, "annotations": {ANN_CREATED: created},
        }));
    }
    let index = serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests});
    client
        .put_manifest(&tag, OCI_INDEX, &serde_json::to_vec(&index)?)
        .await
        .with_context(|| format!("updating {what}"))?;
    Ok(())
}

/// The referrers of `subject` with the rollout artifact type, newest first:
/// from the referrers API, else from the referrers tag.
pub async fn list(source: &dyn ImageSource, subject: &Digest) -> Result<Vec<Descriptor>> {
    let mut referrers = source.referrers(subject).await.with_context(|| format!("listing referrers of {subject}"))?;
    if referrers.is_empty() {
        let tag = crate::trust::cosign::referrers_tag(subject);
        if let Some(raw) = source.fetch_manifest(&tag).await.with_context(|| format!("fetching referrers tag {tag}"))? {
            let index: ImageIndex = serde_json::from_slice(&raw.bytes)
                .with_context(|| format!("referrers tag {tag} is not an image index"))?;
            referrers = index.manifests().clone();
        }
    }
    let created =
        |d: &Descriptor| d.annotations().as_ref().and_then(|a| a.get(ANN_CREATED).cloned()).unwrap_or_default();
    let mut ours: Vec<Descriptor> = referrers
        .into_iter()
        .filter(|d| d.artifact_type().as_ref().map(|t| t.to_string()).as_deref() == Some(ARTIFACT_TYPE))
        .collect();
    ours.sort_by_key(|d| std::cmp::Reverse(created(d)));
    ours.truncate(MAX_RELEASES);
    Ok(ours)
}

/// Rollout metadata that passed the trust policy.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    /// The artifact's digest.
    pub artifact_digest: Digest,
    /// The metadata.
    pub metadata: RolloutMetadata,
    /// The policy's verdict on the artifact.
    pub verdict: Verdict,
}

/// What the search for a release found: the newest metadata that verified,
/// and why each other candidate was refused.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Search {
    /// The metadata used, if any.
    pub found: Option<Verified>,
    /// Candidates refused, each with the reason.
    pub refused: Vec<String>,
}

/// Finds and verifies the rollout metadata of the image `image` (its
/// repository) at `subject`. A candidate the policy refuses, or whose content
/// does not match what was signed or is not about `subject`, is refused and
/// logged; registry errors are errors.
pub async fn find(
    source: &dyn ImageSource,
    verifier: &dyn ImageVerifier,
    image: &RegistryRef,
    subject: &Digest,
) -> Result<Search> {
    let mut search = Search::default();
    for desc in list(source, subject).await? {
        let digest: Digest = desc.digest().to_string().parse().context("referrer digest")?;
        match check_one(source, verifier, image, subject, &digest).await {
            Ok(Some(v)) => {
                tracing::info!(
                    "rollout metadata {digest} for {subject}: start {}, waves {}, halt after {} ({})",
                    format_time(v.metadata.schedule.start),
                    v.metadata.schedule.waves,
                    v.metadata.halt_after.describe(),
                    v.verdict.rule
                );
                search.found = Some(v);
                break;
            }
            Ok(None) => {}
            Err(e) if e.is::<crate::error::PolicyRejected>() || e.is::<Refused>() => {
                tracing::warn!("rollout metadata {digest} for {subject} refused: {e:#}");
                search.refused.push(format!("{digest}: {e:#}"));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(search)
}

/// Metadata that is not what was signed or not about this image.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(String);

async fn check_one(
    source: &dyn ImageSource,
    verifier: &dyn ImageVerifier,
    image: &RegistryRef,
    subject: &Digest,
    digest: &Digest,
) -> Result<Option<Verified>> {
    // Digest-checked by the source: the manifest is the one the referrer names.
    let Some(raw) = source.fetch_manifest(&digest.to_string()).await? else { return Ok(None) };
    let manifest: ImageManifest =
        serde_json::from_slice(&raw.bytes).map_err(|e| Refused(format!("not an OCI manifest: {e}")))?;
    let about = manifest.subject().as_ref().map(|s| s.digest().to_string());
    if about.as_deref() != Some(&subject.to_string()) {
        return Err(Refused(format!("its subject is {about:?}, not {subject}")).into());
    }
    // The signature check: the same policy and code as for the image.
    let imgref = ImageRef::Registry(RegistryRef {
        registry: image.registry.clone(),
        repository: image.repository.clone(),
        tag: None,
        digest: Some(digest.clone()),
    });
    let resolved = ResolvedManifest { raw, manifest: manifest.clone(), index_digest: None };
    let verdict = verifier.verify(&imgref, &resolved, source).await?;
    let [layer] = manifest.layers().as_slice() else {
        return Err(Refused(format!("{} layers, not 1", manifest.layers().len())).into());
    };
    if layer.media_type().to_string() != ARTIFACT_TYPE {
        return Err(Refused(format!("its layer is {}, not {ARTIFACT_TYPE}", layer.media_type())).into());
    }
    // The blob's digest is checked against the signed manifest's descriptor.
    let bytes = source.fetch_small_blob(layer).await.context("fetching the rollout metadata")?;
    ensure!(Digest::of(&bytes).to_string() == layer.digest().to_string(), "rollout metadata digest mismatch");
    let metadata = RolloutMetadata::parse(&bytes).map_err(|e| Refused(format!("{e:#}")))?;
    if metadata.image_digest != subject.to_string() {
        bail!(Refused(format!("it is about image {}, not {subject}", metadata.image_digest)));
    }
    Ok(Some(Verified { artifact_digest: digest.clone(), metadata, verdict }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halt_after_parses_hosts_and_percentages() {
        assert_eq!("3".parse::<HaltAfter>().unwrap(), HaltAfter::Hosts(3));
        assert_eq!("5%".parse::<HaltAfter>().unwrap(), HaltAfter::Percent(5.0));
        for bad in ["0", "0%", "101%", "-1", "x", "x%"] {
            assert!(bad.parse::<HaltAfter>().is_err(), "{bad}");
        }
    }

    #[test]
    fn metadata_keeps_writing_and_reading_halt_after_as_it_always_has() {
        // (as written in signed metadata, the threshold it means)
        let table = [
            (r#"{"hosts":1}"#, Some(HaltAfter::Hosts(1))),
            (r#"{"hosts":3}"#, Some(HaltAfter::Hosts(3))),
            (r#"{"percent":2.5}"#, Some(HaltAfter::Percent(2.5))),
            (r#"{"percent":100.0}"#, Some(HaltAfter::Percent(100.0))),
            (r#"{"hosts":0}"#, None),
            (r#"{"percent":0.0}"#, None),
            (r#"{"percent":150.0}"#, None),
            (r#""3""#, None),
        ];
        for (written, want) in table {
            let doc = format!(
                r#"{{"schemaVersion":1,"imageDigest":"sha256:00","start":"2026-12-07T10:00:00Z","waves":[{{"afterSeconds":0,"percent":100.0}}],"haltAfter":{written}}}"#
            );
            let got = RolloutMetadata::parse(doc.as_bytes()).map(|m| m.halt_after);
            assert_eq!(got.as_ref().ok(), want.as_ref(), "{written}: {got:?}");
            if let Ok(m) = RolloutMetadata::parse(doc.as_bytes()) {
                let again = serde_json::to_value(&m).unwrap();
                assert_eq!(again["haltAfter"], serde_json::from_str::<serde_json::Value>(written).unwrap());
            }
        }
    }

    #[test]
    fn metadata_round_trips_and_parses_strictly() {
        let meta = RolloutMetadata {
            schema_version: 1,
            image_digest: Digest::of(b"m").to_string(),
            schedule: Schedule {
                start: time::macros::datetime!(2026-12-07 10:00 UTC),
                waves: "1h=10%,2h=100%".parse().unwrap(),
            },
            halt_after: HaltAfter::Percent(2.5),
        };
        let subject = Subject { media_type: OCI_MANIFEST.into(), digest: Digest::of(b"m"), size: 1 };
        let (manifest, layer) = artifact(&meta, &subject, "2026-12-07T09:00:00Z").unwrap();
        assert_eq!(RolloutMetadata::parse(&layer).unwrap(), meta);
        let text = String::from_utf8(layer.clone()).unwrap();
        assert!(text.contains("\"start\": \"2026-12-07T10:00:00Z\""), "{text}");
        assert!(text.contains("\"afterSeconds\": 3600"), "{text}");
        let m: ImageManifest = serde_json::from_slice(&manifest).unwrap();
        assert_eq!(m.subject().as_ref().unwrap().digest().to_string(), Digest::of(b"m").to_string());
        assert_eq!(m.artifact_type().as_ref().unwrap().to_string(), ARTIFACT_TYPE);
        for bad in [
            text.replace("\"schemaVersion\": 1", "\"schemaVersion\": 2"),
            text.replace("\"haltAfter\"", "\"extra\": 1, \"haltAfter\""),
            text.replace("\"percent\": 100.0", "\"percent\": 50.0"),
        ] {
            assert!(RolloutMetadata::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
