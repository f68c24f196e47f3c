//! containers-policy.json: parsing, as strict as containers/image (duplicate
//! keys, unknown fields, invalid scopes and malformed requirements are errors
//! that name the file and the place), and scope matching (the most specific
//! scope of the image's transport wins, then the transport's `""` scope, then
//! `default`).
//!
//! [`json`] reads the document and refuses duplicate keys, [`scopes`] checks
//! each transport's scopes, [`requirements`] each requirement. Requirement
//! types hostctl cannot check (`signedBy`, `signedBaseLayer`, `sigstoreSigned`
//! with `pki`, …) are validated and load, so that a host policy naming them
//! for other registries still works, but refuse every image whose scope uses
//! them: they are never silently accepted.

pub mod json;
pub mod requirements;
pub mod scopes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};

use self::json::{Node, Obj};
use super::bundle::CertIdentity;
use super::identity::SignedIdentity;
use crate::imgref::ImageRef;

/// A parsed policy file.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Requirements for images no scope matches.
    pub default: Vec<Requirement>,
    /// transport name → scope → requirements.
    pub transports: BTreeMap<String, BTreeMap<String, Vec<Requirement>>>,
}

/// One requirement; a scope's requirements must all be satisfied.
#[derive(Clone, Debug, PartialEq)]
pub enum Requirement {
    /// `insecureAcceptAnything`: no check.
    InsecureAcceptAnything,
    /// `reject`: never.
    Reject,
    /// `sigstoreSigned`: a valid sigstore signature.
    SigstoreSigned(SigstoreSigned),
    /// A requirement type hostctl does not implement (named): refuses every image.
    Unsupported(String),
}

impl Requirement {
    /// The policy's name for this requirement type.
    pub fn type_name(&self) -> &str {
        match self {
            Requirement::InsecureAcceptAnything => "insecureAcceptAnything",
            Requirement::Reject => "reject",
            Requirement::SigstoreSigned(_) => "sigstoreSigned",
            Requirement::Unsupported(t) => t,
        }
    }
}

/// Bytes given in the policy either inline (base64) or by path.
#[derive(Clone, Debug, PartialEq)]
pub enum Material {
    /// A file to read.
    Path(PathBuf),
    /// Bytes given inline (base64-decoded).
    Data(Vec<u8>),
}

impl Material {
    /// The bytes, read now.
    pub fn load(&self) -> Result<Vec<u8>> {
        match self {
            Material::Path(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display())),
            Material::Data(d) => Ok(d.clone()),
        }
    }

    /// For messages: the path, or `inline data`.
    pub fn describe(&self) -> String {
        match self {
            Material::Path(p) => p.display().to_string(),
            Material::Data(_) => "inline keyData".to_string(),
        }
    }
}

/// Who may have signed, for `sigstoreSigned`.
#[derive(Clone, Debug, PartialEq)]
pub enum Trust {
    /// Public keys (`keyPath`, `keyPaths`, `keyData`, `keyDatas`): any one of them.
    Keys(Vec<Material>),
    /// Fulcio certificates for this identity: cosign's legacy signatures
    /// chaining to `ca` and logged in a Rekor whose key is one of
    /// `rekor_keys`; bundles against the trusted root.
    Fulcio {
        /// The Fulcio CA certificate (`caPath`/`caData`; hostctl allows none
        /// with `trustedRootPath`, then only bundles can be verified).
        ca: Option<Material>,
        /// The identity (SAN, OIDC issuer) the certificate must name.
        identity: CertIdentity,
        /// The Rekor public keys.
        rekor_keys: Vec<Material>,
    },
}

/// A `sigstoreSigned` requirement.
#[derive(Clone, Debug, PartialEq)]
pub struct SigstoreSigned {
    /// Who may have signed.
    pub trust: Trust,
    /// How the signed reference must relate to the image.
    pub signed_identity: SignedIdentity,
    /// hostctl's `trustedRootPath`: the sigstore trusted root for bundles
    /// [default: the sysroot's `etc/hostctl/sigstore/trusted_root.json`].
    pub trusted_root: Option<PathBuf>,
}

fn parse_list(node: &Node, where_: &str) -> Result<Vec<Requirement>> {
    let Node::Array(values) = node else {
        bail!("{where_}: a requirement list must be a JSON array, not {}", node.kind());
    };
    ensure!(!values.is_empty(), "{where_}: an empty requirement list is not allowed (use [{{\"type\":\"reject\"}}])");
    values
        .iter()
        .enumerate()
        .map(|(i, v)| requirements::parse(v).with_context(|| format!("{where_}, requirement {}", i + 1)))
        .collect()
}

impl Policy {
    /// Parses policy JSON: duplicate keys anywhere, unknown fields, invalid
    /// scopes and malformed requirements are errors.
    pub fn parse(bytes: &[u8]) -> Result<Policy> {
        let root = json::parse(bytes).context("not a valid containers-policy.json")?;
        let top = Obj::of(&root, "the policy")?;
        top.only(&["default", "transports"])?;
        let default = parse_list(top.get("default").context("the policy has no \"default\"")?, "default")?;
        let mut transports = BTreeMap::new();
        if let Some(node) = top.get("transports") {
            for (transport, scopes) in Obj::of(node, "\"transports\"")?.members() {
                let what = format!("transport {transport:?}");
                let mut parsed = BTreeMap::new();
                for (scope, reqs) in Obj::of(scopes, &what)?.members() {
                    scopes::validate(transport, scope)
                        .with_context(|| format!("invalid {transport} scope {scope:?}"))?;
                    let list = parse_list(reqs, &format!("transport {transport:?} scope {scope:?}"))?;
                    parsed.insert(scope.clone(), list);
                }
                transports.insert(transport.clone(), parsed);
            }
        }
        Ok(Policy { default, transports })
    }

    /// Reads and parses a policy file.
    pub fn load(path: &Path) -> Result<Policy> {
        let bytes = std::fs::read(path).with_context(|| format!("reading trust policy {}", path.display()))?;
        Policy::parse(&bytes).with_context(|| format!("trust policy {}", path.display()))
    }

    /// The requirements for `imgref` and a description of the rule they came
    /// from (e.g. `docker scope "127.0.0.1:5000/os"`).
    pub fn requirements_for(&self, imgref: &ImageRef) -> (String, &[Requirement]) {
        let (transport, candidates) = scope_candidates(imgref);
        if let Some(scopes) = self.transports.get(transport) {
            for c in candidates.iter().chain(std::iter::once(&String::new())) {
                if let Some(reqs) = scopes.get(c) {
                    let name = if c.is_empty() {
                        format!("{transport} transport default")
                    } else {
                        format!("{transport} scope {c:?}")
                    };
                    return (name, reqs);
                }
            }
        }
        ("default".to_string(), &self.default)
    }
}

/// The policy transport of a reference and its scopes, most specific first
/// (the transport's `""` scope is tried after these).
pub fn scope_candidates(imgref: &ImageRef) -> (&'static str, Vec<String>) {
    match imgref {
        ImageRef::Registry(r) => {
            let mut out = Vec::new();
            let name = r.name();
            if let Some(d) = &r.digest {
                out.push(format!("{name}@{d}"));
            }
            if let Some(t) = &r.tag {
                out.push(format!("{name}:{t}"));
            }
            // The repository, then each namespace above it, then the host.
            let mut prefix = name.as_str();
            loop {
                out.push(prefix.to_string());
                match prefix.rfind('/') {
                    Some(i) => prefix = &prefix[..i],
                    None => break,
                }
            }
            // Wildcard host scopes: `*.example.com`, then `*.com`.
            let host = r.registry.split(':').next().unwrap_or_default();
            let mut rest = host;
            while let Some(i) = rest.find('.') {
                rest = &rest[i + 1..];
                out.push(format!("*.{rest}"));
            }
            ("docker", out)
        }
        ImageRef::OciDir { path, tag } | ImageRef::OciArchive { path, tag } => {
            let transport = if matches!(imgref, ImageRef::OciDir { .. }) { "oci" } else { "oci-archive" };
            let abs = std::path::absolute(path).unwrap_or_else(|_| path.clone());
            let mut out = Vec::new();
            if let Some(t) = tag {
                out.push(format!("{}:{t}", abs.display()));
            }
            // Each directory up to, not including, `/` (a scope that is refused,
            // as containers/image refuses it: it would shadow `""`).
            let mut p = Some(abs.as_path());
            while let Some(dir) = p.filter(|d| d.parent().is_some()) {
                out.push(dir.display().to_string());
                p = dir.parent();
            }
            (transport, out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(policy: &str, image: &str) -> (String, Vec<String>) {
        let p = Policy::parse(policy.as_bytes()).unwrap();
        let (name, reqs) = p.requirements_for(&image.parse().unwrap());
        (name, reqs.iter().map(|r| r.type_name().to_string()).collect())
    }

    const SCOPED: &str = r#"{
        "default": [{"type": "reject"}],
        "transports": {
            "docker": {
                "": [{"type": "insecureAcceptAnything"}],
                "reg.example.com": [{"type": "reject"}],
                "reg.example.com/os": [{"type": "sigstoreSigned", "keyPath": "/k.pub"}],
                "reg.example.com/os:dev": [{"type": "insecureAcceptAnything"}],
                "*.mirror.example.com": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/g"}]
            },
            "oci": { "/media/usb": [{"type": "sigstoreSigned", "keyPath": "/k.pub"}] }
        }
    }"#;

    #[test]
    fn most_specific_scope_wins() {
        for (image, want_rule, want) in [
            ("reg.example.com/os:dev", "docker scope \"reg.example.com/os:dev\"", "insecureAcceptAnything"),
            ("reg.example.com/os:v1", "docker scope \"reg.example.com/os\"", "sigstoreSigned"),
            ("reg.example.com/os/sub:v1", "docker scope \"reg.example.com/os\"", "sigstoreSigned"),
            ("reg.example.com/osx:v1", "docker scope \"reg.example.com\"", "reject"),
            ("eu.mirror.example.com/os", "docker scope \"*.mirror.example.com\"", "signedBy"),
            ("quay.io/x/y", "docker transport default", "insecureAcceptAnything"),
            ("oci:/media/usb/os:v1", "oci scope \"/media/usb\"", "sigstoreSigned"),
            ("oci:/srv/os", "default", "reject"),
            ("oci-archive:/media/usb/os.tar", "default", "reject"),
        ] {
            let (name, types) = rule(SCOPED, image);
            assert_eq!((name.as_str(), types[0].as_str()), (want_rule, want), "{image}");
        }
    }

    #[test]
    fn digest_scope_is_most_specific() {
        let d = crate::digest::Digest::of(b"x");
        let policy = format!(
            r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{"r.io/a@{d}":[{{"type":"insecureAcceptAnything"}}]}}}}}}"#
        );
        assert_eq!(rule(&policy, &format!("r.io/a:v1@{d}")).1, ["insecureAcceptAnything"]);
        assert_eq!(rule(&policy, "r.io/a:v1").1, ["reject"]);
    }

    #[test]
    fn bad_policies_say_what_is_wrong() {
        for (policy, want) in [
            ("{", "not a valid containers-policy.json"),
            (r#"{"transports":{}}"#, "no \"default\""),
            (r#"{"default":[]}"#, "empty requirement list"),
            (r#"{"default":[{"type":"acceptIfSunny"}]}"#, "unknown requirement type \"acceptIfSunny\""),
            (r#"{"default":[{"type":"reject","x":1}]}"#, "reject takes no field \"x\""),
            (r#"{"default":[{"type":"reject"}],"extra":1}"#, "unknown field `extra`"),
            (r#"{"default":[{"type":"sigstoreSigned"}]}"#, "needs one of keyPath"),
            (r#"{"default":[{"type":"sigstoreSigned","keyPath":"/a","keyData":"YQ=="}]}"#, "only one of"),
            (r#"{"default":[{"type":"sigstoreSigned","keyData":"%%"}]}"#, "keyData is not valid base64"),
            (r#"{"default":[{"type":"sigstoreSigned","keyPath":"/a","keyPth":"/b"}]}"#, "unknown field `keyPth`"),
            (
                r#"{"default":[{"type":"sigstoreSigned","fulcio":{"caPath":"/ca","oidcIssuer":"i","subjectEmail":"e"}}]}"#,
                "fulcio needs rekorPublicKeyPath",
            ),
            (
                r#"{"default":[{"type":"sigstoreSigned","keyPath":"/a","signedIdentity":{"type":"matchEverything"}}]}"#,
                "unknown signedIdentity type \"matchEverything\"",
            ),
        ] {
            let err = format!("{:#}", Policy::parse(policy.as_bytes()).unwrap_err());
            assert!(err.contains(want), "{policy}: {err}");
        }
    }

    #[test]
    fn unsupported_sigstore_variants_refuse_instead_of_failing_the_policy() {
        for req in [
            r#"{"type":"sigstoreSigned","keyPath":"/k","rekorPublicKeyPath":"/r"}"#,
            r#"{"type":"sigstoreSigned","pki":{"caRootsPath":"/ca","subjectHostname":"h.example.com"}}"#,
        ] {
            let p = Policy::parse(format!(r#"{{"default":[{req}]}}"#).as_bytes()).unwrap();
            assert!(
                matches!(&p.default[0], Requirement::Unsupported(t) if t.starts_with("sigstoreSigned with")),
                "{req}"
            );
        }
    }

    proptest::proptest! {
        /// Hostile policy files are errors, never panics.
        #[test]
        fn arbitrary_policy_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = Policy::parse(&bytes);
        }

        /// A scope naming the exact repository always wins over the host's.
        #[test]
        fn repository_scope_beats_host_scope(repo in "[a-z][a-z0-9]{0,8}(/[a-z][a-z0-9]{0,8}){0,3}", tag in "[a-z0-9]{1,8}") {
            let policy = format!(
                r#"{{"default":[{{"type":"reject"}}],"transports":{{"docker":{{"r.io":[{{"type":"reject"}}],"r.io/{repo}":[{{"type":"insecureAcceptAnything"}}]}}}}}}"#
            );
            let (name, types) = rule(&policy, &format!("r.io/{repo}:{tag}"));
            proptest::prop_assert_eq!(name, format!("docker scope \"r.io/{repo}\""));
            proptest::prop_assert_eq!(types, vec!["insecureAcceptAnything".to_string()]);
        }
    }

    #[test]
    fn sigstore_requirements_parse() {
        let p = Policy::parse(
            br#"{"default":[{"type":"sigstoreSigned","keyPaths":["/a","/b"],
                 "signedIdentity":{"type":"matchRepository"}}],
                 "transports":{"docker":{"x.io":[{"type":"sigstoreSigned",
                   "fulcio":{"caData":"Y2E=","oidcIssuer":"https://issuer","subjectEmail":"me@x.io"},
                   "rekorPublicKeyData":"cmVrb3I="}]}}}"#,
        )
        .unwrap();
        let Requirement::SigstoreSigned(s) = &p.default[0] else { panic!() };
        assert_eq!(s.trust, Trust::Keys(vec![Material::Path("/a".into()), Material::Path("/b".into())]));
        assert_eq!(s.signed_identity, SignedIdentity::MatchRepository);
        let Requirement::SigstoreSigned(s) = &p.transports["docker"]["x.io"][0] else { panic!() };
        assert_eq!(
            s.trust,
            Trust::Fulcio {
                ca: Some(Material::Data(b"ca".to_vec())),
                identity: CertIdentity {
                    kind: crate::trust::bundle::SanKind::Email,
                    subject: crate::trust::bundle::Match::Exact("me@x.io".into()),
                    issuer: crate::trust::bundle::Match::Exact("https://issuer".into()),
                },
                rekor_keys: vec![Material::Data(b"rekor".to_vec())],
            }
        );
        assert_eq!(s.signed_identity, SignedIdentity::MatchRepoDigestOrExact);
    }

    /// The whole-policy cases of containers/image's `policy_config_test.go`
    /// (`TestPolicyUnmarshalJSON`, `TestPolicyTransportScopesWithTransportUnmarshalJSON`,
    /// `TestPolicyRequirementsUnmarshalJSON`): (policy, upstream accepts, an
    /// error word or "" when hostctl loads it).
    #[test]
    fn policies_as_containers_image_reads_them() {
        let valid_req = r#"{"type":"signedBy","keyType":"GPGKeys","keyData":"YWJj"}"#;
        let transports = format!(
            r#"{{"docker":{{"docker.io/library/busybox":[{valid_req}],"registry.access.redhat.com":[{valid_req}],"":[{valid_req}]}},
                "atomic":{{"registry.access.redhat.com/rhel7":[{valid_req}]}},
                "unknown":{{"registry.access.redhat.com/rhel7":[{valid_req}]}}}}"#
        );
        let with = |default: &str, transports: &str| {
            format!(
                r#"{{"default":{default}{}}}"#,
                if transports.is_empty() { String::new() } else { format!(r#","transports":{transports}"#) }
            )
        };
        let valid_default = format!("[{valid_req}]");
        for (policy, upstream, word) in [
            (with(&valid_default, &transports), true, ""),
            (with(&valid_default, ""), true, ""),
            (with(&valid_default, "{}"), true, ""),
            (format!(r#"{{"transports":{transports}}}"#), false, "no \"default\""),
            (format!(r#"{{"default":{valid_default},"unexpected":1}}"#), false, "unknown field `unexpected`"),
            (with("1", ""), false, "must be a JSON array, not a number"),
            (with("{}", ""), false, "must be a JSON array, not an object"),
            (with("null", ""), false, "must be a JSON array, not null"),
            (with("[]", ""), false, "empty requirement list"),
            (with("[1]", ""), false, "must be a JSON object, not a number"),
            (with(&valid_default, "1"), false, "\"transports\" must be a JSON object"),
            (with(&valid_default, "[]"), false, "\"transports\" must be a JSON object"),
            (with(&valid_default, r#"{"docker":{"docker.io/library/busybox":1}}"#), false, "must be a JSON array"),
            (with(&valid_default, r#"{"docker":{"docker.io/library/busybox":{}}}"#), false, "must be a JSON array"),
            (with(&valid_default, r#"{"docker":{"":1}}"#), false, "must be a JSON array"),
            (with(&valid_default, r#"{"docker":{"":[]}}"#), false, "empty requirement list"),
            (with(&valid_default, r#"{"docker":{}}"#), true, ""),
            // Docker scopes are relative paths, which the dir transport refuses.
            (
                with(&valid_default, r#"{"dir":{"docker.io/library/busybox":[{"type":"reject"}]}}"#),
                false,
                "invalid dir scope",
            ),
            (with(&valid_default, r#"{"oci":{"/":[{"type":"reject"}]}}"#), false, "invalid oci scope \"/\""),
            (
                with(
                    &valid_default,
                    r#"{"docker":{"x.io":[{"type":"signedBy","keyType":"this is invalid","keyPath":"/k"}]}}"#,
                ),
                false,
                "keyType",
            ),
            ("".to_string(), false, "not a valid containers-policy.json"),
            ("&".to_string(), false, "not a valid containers-policy.json"),
            ("1".to_string(), false, "the policy must be a JSON object"),
        ] {
            match Policy::parse(policy.as_bytes()) {
                Ok(_) => assert!(upstream, "{policy} loaded; containers/image refuses it"),
                Err(e) => {
                    let e = format!("{e:#}");
                    assert!(!upstream, "{policy} refused; containers/image accepts it: {e}");
                    assert!(e.contains(word), "{policy}: {e} should say {word:?}");
                }
            }
        }
    }

    /// Every `duplicateFields` list of containers/image's
    /// `policy_config_test.go` and `policy_config_sigstore_test.go`: the
    /// member is written twice, as `addExtraJSONMember` does, and the policy
    /// is refused naming the key and where it is.
    #[test]
    fn duplicate_fields_are_refused_where_containers_image_refuses_them() {
        let fulcio =
            r#"{"caPath":"/ca.pem","oidcIssuer":"https://github.com/login/oauth","subjectEmail":"mitr@redhat.com"}"#;
        let fulcio_data =
            r#"{"caData":"YWJj","oidcIssuer":"https://github.com/login/oauth","subjectEmail":"mitr@redhat.com"}"#;
        let pki = r#"{"caRootsPath":"/r.pem","caIntermediatesPath":"/i.pem","subjectHostname":"myhost.example.com","subjectEmail":"qiwan@redhat.com"}"#;
        let pki_data = r#"{"caRootsData":"YWJj","caIntermediatesData":"ZGVm","subjectHostname":"myhost.example.com","subjectEmail":"qiwan@redhat.com"}"#;
        let reqs: Vec<(String, &str)> = vec![
            (r#"{"type":"insecureAcceptAnything"}"#.into(), "type"),
            (r#"{"type":"reject"}"#.into(), "type"),
            (r#"{"type":"signedBy","keyType":"GPGKeys","keyData":"YWJj","signedIdentity":{"type":"matchRepoDigestOrExact"}}"#.into(), "type keyType keyData signedIdentity"),
            (r#"{"type":"signedBy","keyType":"GPGKeys","keyPath":"/foo/bar","signedIdentity":{"type":"matchRepoDigestOrExact"}}"#.into(), "type keyType keyPath signedIdentity"),
            (r#"{"type":"signedBy","keyType":"GPGKeys","keyPaths":["/1","/2"],"signedIdentity":{"type":"matchRepoDigestOrExact"}}"#.into(), "type keyType keyPaths signedIdentity"),
            (r#"{"type":"signedBaseLayer","baseLayerIdentity":{"type":"exactReference","dockerReference":"registry.access.redhat.com/rhel7/rhel:7.2.3"}}"#.into(), "type baseLayerIdentity"),
            (r#"{"type":"sigstoreSigned","keyData":"YWJj","signedIdentity":{"type":"matchRepoDigestOrExact"}}"#.into(), "type keyData signedIdentity"),
            (r#"{"type":"sigstoreSigned","keyPath":"/foo/bar","signedIdentity":{"type":"matchRepoDigestOrExact"}}"#.into(), "type keyPath signedIdentity"),
            (r#"{"type":"sigstoreSigned","keyPaths":["/foo/bar","/foo/baz"],"signedIdentity":{"type":"matchRepoDigestOrExact"}}"#.into(), "type keyPaths signedIdentity"),
            (r#"{"type":"sigstoreSigned","keyDatas":["YWJj","ZGVm"],"signedIdentity":{"type":"matchRepoDigestOrExact"}}"#.into(), "type keyDatas signedIdentity"),
            (format!(r#"{{"type":"sigstoreSigned","fulcio":{fulcio},"rekorPublicKeyPath":"/foo/rekor","signedIdentity":{{"type":"matchRepoDigestOrExact"}}}}"#), "type fulcio rekorPublicKeyPath signedIdentity"),
            (r#"{"type":"sigstoreSigned","keyPath":"/foo/bar","rekorPublicKeyPaths":["/baz/a","/baz/b"],"signedIdentity":{"type":"matchRepoDigestOrExact"}}"#.into(), "type keyPath rekorPublicKeyPaths signedIdentity"),
            (r#"{"type":"sigstoreSigned","keyPath":"/foo/bar","rekorPublicKeyData":"Zm9v","signedIdentity":{"type":"matchRepoDigestOrExact"}}"#.into(), "type keyPath rekorPublicKeyData signedIdentity"),
            (r#"{"type":"sigstoreSigned","keyPath":"/foo/bar","rekorPublicKeyDatas":["Zm9v","YmFy"],"signedIdentity":{"type":"matchRepoDigestOrExact"}}"#.into(), "type keyPath rekorPublicKeyDatas signedIdentity"),
            (format!(r#"{{"type":"sigstoreSigned","pki":{pki},"signedIdentity":{{"type":"matchRepoDigestOrExact"}}}}"#), "type pki signedIdentity"),
        ];
        // Nested objects: (requirement with `{}` where the object goes, the object, its name, its duplicate fields).
        let keyed = r#"{"type":"sigstoreSigned","keyPath":"/k","signedIdentity":{}}"#;
        let nested: Vec<(&str, &str, &str, &str)> = vec![
            (
                r#"{"type":"sigstoreSigned","fulcio":{},"rekorPublicKeyPath":"/r"}"#,
                fulcio,
                "fulcio",
                "caPath oidcIssuer subjectEmail",
            ),
            (
                r#"{"type":"sigstoreSigned","fulcio":{},"rekorPublicKeyPath":"/r"}"#,
                fulcio_data,
                "fulcio",
                "caData oidcIssuer subjectEmail",
            ),
            (
                r#"{"type":"sigstoreSigned","pki":{}}"#,
                pki,
                "pki",
                "caRootsPath caIntermediatesPath subjectHostname subjectEmail",
            ),
            (
                r#"{"type":"sigstoreSigned","pki":{}}"#,
                pki_data,
                "pki",
                "caRootsData caIntermediatesData subjectHostname subjectEmail",
            ),
            (
                keyed,
                r#"{"type":"exactReference","dockerReference":"library/busybox:latest"}"#,
                "signedIdentity",
                "type dockerReference",
            ),
            (
                keyed,
                r#"{"type":"exactRepository","dockerRepository":"library/busybox:latest"}"#,
                "signedIdentity",
                "type dockerRepository",
            ),
            (
                keyed,
                r#"{"type":"remapIdentity","prefix":"example.com/docker-library","signedPrefix":"docker.io/library"}"#,
                "signedIdentity",
                "type prefix signedPrefix",
            ),
            (keyed, r#"{"type":"matchRepository"}"#, "signedIdentity", "type"),
        ];
        // addExtraJSONMember: `"name": <the same value>` appended to the object.
        let duplicate = |object: &str, field: &str| -> String {
            let v: serde_json::Value = serde_json::from_str(object).unwrap();
            let extra = serde_json::to_string(&v[field]).unwrap();
            format!("{},\"{field}\":{extra}}}", object.strip_suffix('}').unwrap())
        };
        for (req, fields) in &reqs {
            assert!(Policy::parse(format!(r#"{{"default":[{req}]}}"#).as_bytes()).is_ok(), "{req}");
            for field in fields.split_whitespace() {
                let policy = format!(r#"{{"default":[{{"type":"reject"}},{}]}}"#, duplicate(req, field));
                let err = format!("{:#}", Policy::parse(policy.as_bytes()).unwrap_err());
                assert!(err.contains(&format!("duplicate key {field:?} in default, requirement 2")), "{policy}: {err}");
            }
        }
        for (template, inner, at, fields) in &nested {
            let req = template.replacen("{}", inner, 1);
            assert!(Policy::parse(format!(r#"{{"default":[{req}]}}"#).as_bytes()).is_ok(), "{req}");
            for field in fields.split_whitespace() {
                let policy = format!(r#"{{"default":[{}]}}"#, template.replacen("{}", &duplicate(inner, field), 1));
                let err = format!("{:#}", Policy::parse(policy.as_bytes()).unwrap_err());
                assert!(
                    err.contains(&format!("duplicate key {field:?} in default, requirement 1, field {at:?}")),
                    "{policy}: {err}"
                );
            }
        }
        // TestPolicyUnmarshalJSON and TestPolicyTransportScopesWithTransportUnmarshalJSON.
        for (policy, want) in [
            (r#"{"default":[{"type":"reject"}],"default":[{"type":"reject"}]}"#, r#"duplicate key "default""#),
            (r#"{"default":[{"type":"reject"}],"transports":{},"transports":{}}"#, r#"duplicate key "transports""#),
            (
                r#"{"default":[{"type":"reject"}],"transports":{"docker":{"docker.io/library/busybox":[{"type":"reject"}],"docker.io/library/busybox":[{"type":"reject"}]}}}"#,
                r#"scope "docker.io/library/busybox" is given twice in transport "docker""#,
            ),
            (
                r#"{"default":[{"type":"reject"}],"transports":{"docker":{"":[{"type":"reject"}],"":[{"type":"insecureAcceptAnything"}]}}}"#,
                r#"scope "" is given twice in transport "docker""#,
            ),
        ] {
            let err = format!("{:#}", Policy::parse(policy.as_bytes()).unwrap_err());
            assert!(err.contains(want), "{policy}: {err}");
        }
    }

    /// The security bug of issue #10: two `type` keys used to load as the last
    /// one, "accept anything", so an unsigned image was pulled.
    #[test]
    fn duplicate_type_key_does_not_turn_reject_into_accept_anything() {
        let err = Policy::parse(br#"{"default":[{"type":"reject","type":"insecureAcceptAnything"}]}"#).unwrap_err();
        assert!(format!("{err:#}").contains(r#"duplicate key "type" in default, requirement 1"#), "{err:#}");
        let err = Policy::parse(
            br#"{"default":[{"type":"reject"}],"transports":{"docker":{
                "r.io/os":[{"type":"reject"}],"r.io/os":[{"type":"insecureAcceptAnything"}]}}}"#,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains(r#"scope "r.io/os" is given twice"#), "{err:#}");
    }

    /// An `oci` scope of `/` used to match every layout, and one with a
    /// trailing slash none: both are now load errors naming transport and scope.
    #[test]
    fn oci_scopes_that_match_everything_or_nothing_are_refused() {
        for scope in ["/", "/media/usb/", "media/usb", "/media//usb", "/media/./usb", "/media/x/../usb"] {
            let policy = format!(
                r#"{{"default":[{{"type":"insecureAcceptAnything"}}],"transports":{{"oci":{{"{scope}":[{{"type":"reject"}}]}}}}}}"#
            );
            let err = format!("{:#}", Policy::parse(policy.as_bytes()).unwrap_err());
            assert!(err.contains(&format!("invalid oci scope {scope:?}")), "{scope}: {err}");
        }
    }

    /// Like containers/image's `PolicyConfigurationNamespaces`, the oci
    /// candidates stop before `/` (a scope that is refused anyway).
    #[test]
    fn oci_candidates_stop_before_the_root() {
        let (transport, c) = scope_candidates(&"oci:/media/usb/os:v1".parse().unwrap());
        assert_eq!(
            (transport, c),
            ("oci", vec!["/media/usb/os:v1".into(), "/media/usb/os".into(), "/media/usb".into(), "/media".into()])
        );
    }

    /// containers/image's `fixtures/policy.json` (as `policyFixtureContents`
    /// describes it) loads, except that its two docker scopes written as short
    /// names (`bogus/…`) are refused by hostctl: no image name can match them
    /// (containers/image loads them and never matches them). Fully expanded,
    /// the file loads.
    #[test]
    fn containers_image_fixture_policy_loads() {
        let fixture = r#"{
            "default": [{"type": "reject"}],
            "transports": {
                "dir": {"": [{"type": "insecureAcceptAnything"}]},
                "docker": {
                    "example.com/playground": [{"type": "insecureAcceptAnything"}],
                    "example.com/production": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/keys/employee-gpg-keyring"}],
                    "example.com/hardened": [
                        {"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/keys/employee-gpg-keyring",
                         "signedIdentity": {"type": "matchRepository"}},
                        {"type": "signedBy", "keyType": "signedByGPGKeys", "keyPath": "/keys/public-key-signing-gpg-keyring",
                         "signedIdentity": {"type": "matchExact"}},
                        {"type": "signedBaseLayer", "baseLayerIdentity": {"type": "exactRepository",
                         "dockerRepository": "registry.access.redhat.com/rhel7/rhel"}}],
                    "example.com/hardened-x509": [
                        {"type": "signedBy", "keyType": "X509Certificates", "keyPath": "/keys/employee-cert-file",
                         "signedIdentity": {"type": "matchRepository"}},
                        {"type": "signedBy", "keyType": "signedByX509CAs", "keyPath": "/keys/public-key-signing-ca-file"}],
                    "registry.access.redhat.com": [{"type": "signedBy", "keyType": "signedByGPGKeys",
                        "keyPath": "/keys/RH-key-signing-key-gpg-keyring", "signedIdentity": {"type": "matchRepoDigestOrExact"}}],
                    "registry.redhat.io/beta": [{"type": "signedBy", "keyType": "GPGKeys",
                        "keyPaths": ["/keys/RH-production-signing-key-gpg-keyring", "/keys/RH-beta-signing-key-gpg-keyring"]}],
                    "private-mirror:5000/vendor-mirror": [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": "/keys/vendor-gpg-keyring",
                        "signedIdentity": {"type": "remapIdentity", "prefix": "private-mirror:5000/vendor-mirror",
                                           "signedPrefix": "vendor.example.com"}}],
                    "*.access.redhat.com": [{"type": "signedBy", "keyType": "signedByGPGKeys", "keyPath": "/keys/RH-key-signing-key-gpg-keyring"}],
                    "*.redhat.com": [{"type": "signedBy", "keyType": "signedByGPGKeys", "keyPath": "/keys/RH-key-signing-key-gpg-keyring"}],
                    "*.com": [{"type": "signedBy", "keyType": "signedByGPGKeys", "keyPath": "/keys/RH-key-signing-key-gpg-keyring"}],
                    "BOGUS/key-data-example": [{"type": "signedBy", "keyType": "signedByGPGKeys", "keyData": "bm9uc2Vuc2U="}],
                    "BOGUS/signed-identity-example": [{"type": "signedBaseLayer", "baseLayerIdentity": {"type": "exactReference",
                        "dockerReference": "registry.access.redhat.com/rhel7/rhel:latest"}}],
                    "example.com/sigstore/key-data-example": [{"type": "sigstoreSigned", "keyData": "bm9uc2Vuc2U="}],
                    "example.com/sigstore/key-path-example": [{"type": "sigstoreSigned", "keyPath": "/keys/public-key",
                        "signedIdentity": {"type": "matchRepository"}}]
                }
            }
        }"#;
        let upstream = fixture.replace("BOGUS/", "bogus/");
        let err = format!("{:#}", Policy::parse(upstream.as_bytes()).unwrap_err());
        assert!(err.contains("invalid docker scope \"bogus/"), "{err}");
        assert!(err.contains("write \"docker.io/bogus/"), "{err}");
        let expanded = fixture.replace("BOGUS/", "docker.io/bogus/");
        let p = Policy::parse(expanded.as_bytes()).unwrap();
        assert_eq!(p.transports["docker"].len(), 14);
        let types =
            |scope: &str| p.transports["docker"][scope].iter().map(|r| r.type_name().to_string()).collect::<Vec<_>>();
        assert_eq!(types("example.com/hardened"), ["signedBy", "signedBy", "signedBaseLayer"]);
        assert_eq!(types("example.com/sigstore/key-path-example"), ["sigstoreSigned"]);
        assert_eq!(p.transports["dir"][""], [Requirement::InsecureAcceptAnything]);
    }
}
