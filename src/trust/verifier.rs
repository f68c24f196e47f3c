//! The policy verifier: picks the image's scope, then checks each of its
//! requirements. For `sigstoreSigned`, at least one found signature must pass
//! the cryptographic check, carry a well-formed payload naming the manifest
//! being deployed (or the index it was chosen from), and claim an identity the
//! requirement's `signedIdentity` accepts. Refusals name the rule and say, per
//! signature, why it did not count.

use anyhow::Result;
use async_trait::async_trait;

use std::path::{Path, PathBuf};

use super::bundle::{image_claim, BundleVerifier, RootSource, Signer, Subject};
use super::cosign::{find_signatures, parse_payload, BundleCandidate, Candidate, Found};
use super::identity::{DockerIdentity, SignedIdentity};
use super::keyed::KeySet;
use super::keyless::Keyless;
use super::policy::{Policy, Requirement, SigstoreSigned, Trust};
use super::{ImageVerifier, SignatureCheck, Verdict};
use crate::digest::Digest;
use crate::error::PolicyRejected;
use crate::imgref::ImageRef;
use crate::oci::{ImageSource, ResolvedManifest};

/// Verifies images under a parsed containers-policy.json.
pub struct PolicyVerifier {
    policy: Policy,
    /// The pinned trusted root for bundles when a requirement names none.
    pinned_root: Option<PathBuf>,
}

impl PolicyVerifier {
    /// A verifier enforcing `policy`.
    pub fn new(policy: Policy) -> PolicyVerifier {
        PolicyVerifier { policy, pinned_root: None }
    }

    /// Bundles are checked against `path` (when it exists) unless a
    /// requirement names its own `trustedRootPath`.
    pub fn with_pinned_root(mut self, path: PathBuf) -> PolicyVerifier {
        self.pinned_root = Some(path);
        self
    }
}

/// Refuses every legacy signature, saying why (a requirement that can only
/// verify bundles).
struct NoLegacy(&'static str);

impl SignatureCheck for NoLegacy {
    fn check(&self, _c: &Candidate) -> Result<String, String> {
        Err(self.0.to_string())
    }
}

/// Builds the cryptographic check a requirement asks for (legacy `.sig` signatures).
pub fn signature_check(req: &SigstoreSigned) -> Result<Box<dyn SignatureCheck>> {
    Ok(match &req.trust {
        Trust::Keys(keys) => Box::new(KeySet::load(keys)?),
        Trust::Fulcio { ca: Some(ca), identity, rekor_keys } if !rekor_keys.is_empty() => {
            Box::new(Keyless::load(ca, identity, rekor_keys)?)
        }
        Trust::Fulcio { .. } => Box::new(NoLegacy(
            "a legacy cosign signature needs the policy's fulcio caPath/caData and rekorPublicKey*; \
             this requirement names only a trusted root, for sigstore bundles",
        )),
    })
}

/// The trusted root and the signers a requirement accepts bundles from; an
/// error (a reason) when it cannot check bundles.
pub fn bundle_check(req: &SigstoreSigned, pinned: Option<&Path>) -> Result<(BundleVerifier, Vec<Signer>), String> {
    let root = match (&req.trusted_root, pinned) {
        (Some(p), _) => Some(RootSource::File(p.clone())),
        (None, Some(p)) if p.exists() => Some(RootSource::File(p.to_path_buf())),
        _ => None,
    };
    let signers = match &req.trust {
        // With a trusted root that lists logs, a keyed bundle's log entry is
        // verified against them (inclusion proof, checkpoint, entry
        // timestamp), as a keyless one's (see bundle::log_entry_required).
        // Without a root, as for legacy keyed signatures, nothing can check
        // the entry: it must only be consistent with the signature.
        Trust::Keys(keys) => {
            let keys = KeySet::load(keys).map_err(|e| format!("{e:#}"))?;
            let tlog = root.is_some();
            keys.keys.iter().map(|k| Signer::Key { der: k.der.clone(), tlog }).collect()
        }
        Trust::Fulcio { identity, .. } => vec![Signer::Identity(identity.clone())],
    };
    let verifier = match (root, &req.trust) {
        (Some(r), _) => BundleVerifier::new(&r).map_err(|e| format!("{e:#}"))?,
        // A managed key needs nothing from a root when no log entry is required.
        (None, Trust::Keys(_)) => BundleVerifier::empty().map_err(|e| format!("{e:#}"))?,
        (None, Trust::Fulcio { .. }) => {
            return Err(format!(
                "no sigstore trusted root to check a keyless bundle against (the policy's trustedRootPath, or {})",
                pinned.map(|p| p.display().to_string()).unwrap_or_else(|| super::PINNED_TRUSTED_ROOT.into())
            ))
        }
    };
    Ok((verifier, signers))
}

/// The first bundle that verifies for one of `digests` under one of
/// `signers`, states cosign's signing predicate for that digest, and names an
/// image `identity` accepts: `Ok(signer description)`; otherwise why each failed.
pub fn evaluate_bundles(
    imgref: &ImageRef,
    digests: &[Digest],
    bundles: &[BundleCandidate],
    check: Result<&(BundleVerifier, Vec<Signer>), &String>,
    identity: &SignedIdentity,
) -> Result<String, Vec<String>> {
    let mut reasons = Vec::new();
    for b in bundles {
        let why = match check {
            Err(why) => why.clone(),
            Ok((verifier, signers)) => match evaluate_bundle(imgref, digests, b, verifier, signers, identity) {
                Ok(who) => return Ok(who),
                Err(why) => why,
            },
        };
        reasons.push(format!("{}: {why}", b.origin));
    }
    Err(reasons)
}

fn evaluate_bundle(
    imgref: &ImageRef,
    digests: &[Digest],
    b: &BundleCandidate,
    verifier: &BundleVerifier,
    signers: &[Signer],
    identity: &SignedIdentity,
) -> Result<String, String> {
    let mut first_err = None;
    for d in digests {
        let Some(sha) = hex::decode(d.hex()).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()) else { continue };
        for signer in signers {
            match verifier.verify(&b.json, &Subject::Sha256(sha), signer) {
                Ok(who) => {
                    // Only now is the statement trusted enough to read.
                    let claim = image_claim(&b.json, d).map_err(|e| format!("{e:#}"))?;
                    let signed =
                        DockerIdentity::parse(&claim).map_err(|e| format!("malformed statement subject: {e:#}"))?;
                    identity.check(imgref, &signed)?;
                    return Ok(format!("{who}, signed as {signed} (sigstore bundle)"));
                }
                Err(e) => {
                    first_err.get_or_insert_with(|| format!("{e:#}"));
                }
            }
        }
    }
    Err(first_err.unwrap_or_else(|| "no digest to check the bundle against".into()))
}

/// The first candidate that passes `check` and whose payload names one of
/// `digests` with an identity `identity` accepts: `Ok(signer description)`;
/// otherwise why each one failed.
pub fn evaluate(
    imgref: &ImageRef,
    digests: &[Digest],
    candidates: &[Candidate],
    check: &dyn SignatureCheck,
    identity: &SignedIdentity,
) -> Result<String, Vec<String>> {
    let mut reasons = Vec::new();
    for c in candidates {
        let why = match check.check(c) {
            Err(why) => why,
            Ok(who) => match parse_payload(&c.payload) {
                Err(e) => format!("{e:#}"),
                Ok(p) if !digests.iter().any(|d| d.to_string() == p.manifest_digest) => format!(
                    "signed for manifest {}, not {} (a signature of another image)",
                    p.manifest_digest, digests[0]
                ),
                Ok(p) => match DockerIdentity::parse(&p.docker_reference) {
                    Err(e) => format!("malformed signature payload: {e:#}"),
                    Ok(signed) => match identity.check(imgref, &signed) {
                        Err(why) => why,
                        Ok(()) => return Ok(format!("{who}, signed as {signed}")),
                    },
                },
            },
        };
        reasons.push(format!("{}: {why}", c.origin));
    }
    Err(reasons)
}

#[async_trait]
impl ImageVerifier for PolicyVerifier {
    async fn verify(
        &self,
        imgref: &ImageRef,
        resolved: &ResolvedManifest,
        source: &dyn ImageSource,
    ) -> Result<Verdict> {
        let (scope, reqs) = self.policy.requirements_for(imgref);
        let types: Vec<&str> = reqs.iter().map(Requirement::type_name).collect();
        let rule = format!("{scope}: {}", types.join(" + "));
        let reject = |rule: String, reason: String| -> anyhow::Error {
            PolicyRejected { image: imgref.to_string(), rule, reason }.into()
        };
        let mut digests = vec![resolved.raw.digest.clone()];
        digests.extend(resolved.index_digest.clone());
        let mut found: Option<Found> = None;
        let mut signers = Vec::new();
        for req in reqs {
            match req {
                Requirement::InsecureAcceptAnything => {}
                Requirement::Reject => {
                    return Err(reject(
                        format!("{scope}: reject"),
                        "the policy rejects every image in this scope".into(),
                    ))
                }
                Requirement::Unsupported(ty) => {
                    return Err(reject(
                        format!("{scope}: {ty}"),
                        format!("hostctl does not support {ty} requirements, so it cannot accept this image"),
                    ))
                }
                Requirement::SigstoreSigned(s) => {
                    let check = signature_check(s)?;
                    if found.is_none() {
                        let mut all = Found { candidates: Vec::new(), bundles: Vec::new(), searched: Vec::new() };
                        for d in &digests {
                            match find_signatures(source, d).await {
                                Ok(f) => {
                                    all.candidates.extend(f.candidates);
                                    all.bundles.extend(f.bundles);
                                    all.searched.extend(f.searched.into_iter().map(|s| format!("{s} of {d}")));
                                }
                                // Not a verdict: the registry could not be asked (exit 1,
                                // worth retrying), unlike a refusal (exit 4).
                                Err(e) => {
                                    return Err(e.context(format!(
                                    "reading the signatures of {imgref} for the trust policy ({scope}: sigstoreSigned)"
                                )))
                                }
                            }
                        }
                        found = Some(all);
                    }
                    let f = found.as_ref().expect("filled above");
                    if f.candidates.is_empty() && f.bundles.is_empty() {
                        return Err(reject(
                            format!("{scope}: sigstoreSigned"),
                            format!("the image is not signed (looked at {})", f.searched.join(", ")),
                        ));
                    }
                    let legacy = evaluate(imgref, &digests, &f.candidates, check.as_ref(), &s.signed_identity);
                    let bundled = match legacy {
                        Ok(who) => Ok(who),
                        Err(mut reasons) if !f.bundles.is_empty() => {
                            let bc = bundle_check(s, self.pinned_root.as_deref());
                            match evaluate_bundles(imgref, &digests, &f.bundles, bc.as_ref(), &s.signed_identity) {
                                Ok(who) => Ok(who),
                                Err(more) => {
                                    reasons.extend(more);
                                    Err(reasons)
                                }
                            }
                        }
                        Err(reasons) => Err(reasons),
                    };
                    match bundled {
                        Ok(who) => signers.push(who),
                        Err(reasons) => {
                            return Err(reject(
                                format!("{scope}: sigstoreSigned"),
                                format!("no signature is acceptable: {}", reasons.join("; ")),
                            ))
                        }
                    }
                }
            }
        }
        Ok(Verdict { rule, signature_verified: !signers.is_empty(), signers })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use base64::Engine;
    use oci_spec::image::{Descriptor, DescriptorBuilder, ImageManifest, MediaType};
    use serde_json::json;
    use sigstore::crypto::SigningScheme;

    use super::*;
    use crate::error::exit_code;
    use crate::oci::source::BlobReader;
    use crate::oci::RawManifest;

    /// An in-memory source: manifests by tag or digest, blobs by digest, referrers.
    #[derive(Default)]
    struct MemSource {
        manifests: HashMap<String, Vec<u8>>,
        blobs: HashMap<String, Vec<u8>>,
        referrers: Vec<Descriptor>,
    }

    #[async_trait]
    impl ImageSource for MemSource {
        fn describe(&self) -> String {
            "memory".into()
        }
        async fn resolve(&self, _p: &crate::oci::platform::Platform) -> Result<ResolvedManifest> {
            unimplemented!("tests pass the resolved manifest")
        }
        async fn fetch_manifest(&self, reference: &str) -> Result<Option<RawManifest>> {
            Ok(self.manifests.get(reference).map(|b| RawManifest {
                digest: Digest::of(b),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                bytes: b.clone(),
            }))
        }
        async fn referrers(&self, _subject: &Digest) -> Result<Vec<Descriptor>> {
            Ok(self.referrers.clone())
        }
        async fn fetch_small_blob(&self, desc: &Descriptor) -> Result<Vec<u8>> {
            self.blobs.get(&desc.digest().to_string()).cloned().ok_or_else(|| anyhow::anyhow!("no blob"))
        }
        async fn open_blob(&self, _d: &Descriptor, _o: u64) -> Result<BlobReader> {
            unimplemented!()
        }
    }

    fn resolved(bytes: &[u8]) -> ResolvedManifest {
        let manifest: ImageManifest = serde_json::from_value(json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::of(b"{}").to_string(), "size": 2},
            "layers": []
        }))
        .unwrap();
        ResolvedManifest {
            raw: RawManifest {
                digest: Digest::of(bytes),
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                bytes: bytes.to_vec(),
            },
            manifest,
            index_digest: None,
        }
    }

    fn payload(reference: &str, digest: &Digest) -> Vec<u8> {
        serde_json::to_vec(&json!({"critical": {"identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest.to_string()}, "type": "cosign container image signature"},
            "optional": null}))
        .unwrap()
    }

    /// Stores a signature manifest (one layer per (payload, signature)) and returns its bytes.
    fn signature_manifest(src: &mut MemSource, sigs: &[(Vec<u8>, String)]) -> Vec<u8> {
        let layers: Vec<_> = sigs
            .iter()
            .map(|(p, s)| {
                let d = Digest::of(p);
                src.blobs.insert(d.to_string(), p.clone());
                json!({"mediaType": crate::trust::cosign::SIMPLESIGNING_MEDIA_TYPE, "digest": d.to_string(),
                       "size": p.len(), "annotations": {"dev.cosignproject.cosign/signature": s}})
            })
            .collect();
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": Digest::of(b"{}").to_string(), "size": 2},
            "layers": layers}))
        .unwrap()
    }

    struct Signer {
        signer: sigstore::crypto::SigStoreSigner,
        pem: String,
    }

    impl Signer {
        fn new() -> Signer {
            let signer = SigningScheme::ECDSA_P256_SHA256_ASN1.create_signer().unwrap();
            let pem = signer.to_sigstore_keypair().unwrap().public_key_to_pem().unwrap();
            Signer { signer, pem }
        }
        fn sign(&self, payload: &[u8]) -> String {
            base64::engine::general_purpose::STANDARD.encode(self.signer.sign(payload).unwrap())
        }
    }

    fn policy_for(pem: &str, identity: &str) -> Policy {
        let key = base64::engine::general_purpose::STANDARD.encode(pem);
        Policy::parse(
            json!({"default": [{"type": "reject"}], "transports": {"docker": {"r.io/os": [
                {"type": "sigstoreSigned", "keyData": key, "signedIdentity": {"type": identity}}]}}})
            .to_string()
            .as_bytes(),
        )
        .unwrap()
    }

    async fn verify(policy: Policy, image: &str, manifest: &[u8], src: &MemSource) -> Result<Verdict> {
        PolicyVerifier::new(policy).verify(&image.parse().unwrap(), &resolved(manifest), src).await
    }

    fn rejection(e: &anyhow::Error) -> String {
        assert_eq!(exit_code(e), crate::error::code::REJECTED, "{e:#}");
        format!("{e:#}")
    }

    #[tokio::test]
    async fn signed_at_the_sig_tag_and_trusted() {
        let key = Signer::new();
        let manifest = b"manifest v1";
        let d = Digest::of(manifest);
        let p = payload("r.io/os", &d);
        let mut src = MemSource::default();
        let m = signature_manifest(&mut src, &[(p.clone(), key.sign(&p))]);
        src.manifests.insert(crate::trust::cosign::signature_tag(&d), m);
        let v = verify(policy_for(&key.pem, "matchRepository"), "r.io/os:v1", manifest, &src).await.unwrap();
        assert!(v.signature_verified);
        assert_eq!(v.rule, "docker scope \"r.io/os\": sigstoreSigned");
        assert!(v.signers[0].starts_with("key SHA256:") && v.signers[0].ends_with("signed as r.io/os"), "{v:?}");
        // cosign's tagless identity does not satisfy the default identity rule for a tag pull.
        let e = verify(policy_for(&key.pem, "matchRepoDigestOrExact"), "r.io/os:v1", manifest, &src).await.unwrap_err();
        assert!(rejection(&e).contains("is not exactly r.io/os:v1"), "{e:#}");
    }

    #[tokio::test]
    async fn found_through_referrers() {
        let key = Signer::new();
        let manifest = b"manifest v1";
        let d = Digest::of(manifest);
        let p = payload("r.io/os", &d);
        let mut src = MemSource::default();
        let m = signature_manifest(&mut src, &[(p.clone(), key.sign(&p))]);
        let md = Digest::of(&m);
        src.manifests.insert(md.to_string(), m.clone());
        let desc = DescriptorBuilder::default()
            .media_type(MediaType::ImageManifest)
            .digest(md.to_string().parse::<oci_spec::image::Digest>().unwrap())
            .size(m.len() as u64)
            .artifact_type(MediaType::Other(crate::trust::cosign::SIGNATURE_ARTIFACT_TYPE.into()))
            .build()
            .unwrap();
        src.referrers.push(desc);
        let v = verify(policy_for(&key.pem, "matchRepository"), "r.io/os:v1", manifest, &src).await.unwrap();
        assert!(v.signature_verified, "{v:?}");
    }

    #[tokio::test]
    async fn refusals_name_the_rule_and_the_reason() {
        let key = Signer::new();
        let other = Signer::new();
        let manifest = b"manifest v1";
        let d = Digest::of(manifest);
        let tag = crate::trust::cosign::signature_tag(&d);
        let policy = || policy_for(&key.pem, "matchRepository");

        // Unsigned.
        let e = verify(policy(), "r.io/os:v1", manifest, &MemSource::default()).await.unwrap_err();
        let msg = rejection(&e);
        assert!(msg.contains("docker scope \"r.io/os\": sigstoreSigned") && msg.contains("not signed"), "{msg}");

        // Signed by another key.
        let p = payload("r.io/os", &d);
        let mut src = MemSource::default();
        let m = signature_manifest(&mut src, &[(p.clone(), other.sign(&p))]);
        src.manifests.insert(tag.clone(), m);
        let msg = rejection(&verify(policy(), "r.io/os:v1", manifest, &src).await.unwrap_err());
        assert!(msg.contains("not signed by any trusted key"), "{msg}");

        // A valid signature of another manifest replayed onto this one's tag.
        let p = payload("r.io/os", &Digest::of(b"manifest v0"));
        let mut src = MemSource::default();
        let m = signature_manifest(&mut src, &[(p.clone(), key.sign(&p))]);
        src.manifests.insert(tag.clone(), m);
        let msg = rejection(&verify(policy(), "r.io/os:v1", manifest, &src).await.unwrap_err());
        assert!(msg.contains("a signature of another image"), "{msg}");

        // Signed identity of another repository.
        let p = payload("r.io/evil", &d);
        let mut src = MemSource::default();
        let m = signature_manifest(&mut src, &[(p.clone(), key.sign(&p))]);
        src.manifests.insert(tag.clone(), m);
        let msg = rejection(&verify(policy(), "r.io/os:v1", manifest, &src).await.unwrap_err());
        assert!(msg.contains("not in repository r.io/os"), "{msg}");

        // Malformed payload, correctly signed.
        let p = br#"{"critical":{}}"#.to_vec();
        let mut src = MemSource::default();
        let m = signature_manifest(&mut src, &[(p.clone(), key.sign(&p))]);
        src.manifests.insert(tag.clone(), m);
        let msg = rejection(&verify(policy(), "r.io/os:v1", manifest, &src).await.unwrap_err());
        assert!(msg.contains("malformed signature payload"), "{msg}");

        // One bad and one good signature: the good one counts.
        let good = payload("r.io/os", &d);
        let mut src = MemSource::default();
        let m = signature_manifest(&mut src, &[(good.clone(), other.sign(&good)), (good.clone(), key.sign(&good))]);
        src.manifests.insert(tag.clone(), m);
        assert!(verify(policy(), "r.io/os:v1", manifest, &src).await.unwrap().signature_verified);

        // reject and unsupported scopes.
        let msg = rejection(&verify(policy(), "r.io/other:v1", manifest, &src).await.unwrap_err());
        assert!(msg.contains("(default: reject)"), "{msg}");
        let gpg = Policy::parse(br#"{"default":[{"type":"signedBy","keyType":"GPGKeys","keyPath":"/k"}]}"#).unwrap();
        let msg = rejection(&verify(gpg, "r.io/os:v1", manifest, &src).await.unwrap_err());
        assert!(msg.contains("does not support signedBy"), "{msg}");
    }

    #[tokio::test]
    async fn a_signed_index_covers_the_platform_manifest_chosen_from_it() {
        let key = Signer::new();
        let manifest = b"platform manifest";
        let index = Digest::of(b"index");
        let p = payload("r.io/os", &index);
        let mut src = MemSource::default();
        let m = signature_manifest(&mut src, &[(p.clone(), key.sign(&p))]);
        src.manifests.insert(crate::trust::cosign::signature_tag(&index), m);
        let mut r = resolved(manifest);
        let verifier = PolicyVerifier::new(policy_for(&key.pem, "matchRepository"));
        let image: ImageRef = "r.io/os:v1".parse().unwrap();
        // Without the index in the picture the same signature is for "another image".
        let e = verifier.verify(&image, &r, &src).await.unwrap_err();
        assert!(rejection(&e).contains("not signed"), "{e:#}");
        r.index_digest = Some(index);
        assert!(verifier.verify(&image, &r, &src).await.unwrap().signature_verified);
    }

    #[tokio::test]
    async fn accept_anything_records_no_signature() {
        let p = Policy::parse(br#"{"default":[{"type":"insecureAcceptAnything"}]}"#).unwrap();
        let v = verify(p, "r.io/os:v1", b"m", &MemSource::default()).await.unwrap();
        assert_eq!(
            v,
            Verdict { rule: "default: insecureAcceptAnything".into(), signature_verified: false, signers: vec![] }
        );
    }
}
