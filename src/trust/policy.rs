//! containers-policy.json: parsing (strict: unknown fields are errors) and
//! scope matching (the most specific scope of the image's transport wins,
//! then the transport's `""` scope, then `default`).
//!
//! Requirement types hostctl cannot check (`signedBy`, `signedBaseLayer`,
//! `sigstoreSigned` with `pki`) parse, so that a host policy naming them for
//! other registries still loads, but refuse every image whose scope uses them:
//! they are never silently accepted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use serde_json::Value;

use super::identity::SignedIdentity;
use crate::imgref::ImageRef;

/// A parsed policy file.
#[derive(Clone, Debug)]
pub struct Policy {
    pub default: Vec<Requirement>,
    /// transport name → scope → requirements.
    pub transports: BTreeMap<String, BTreeMap<String, Vec<Requirement>>>,
}

/// One requirement; a scope's requirements must all be satisfied.
#[derive(Clone, Debug, PartialEq)]
pub enum Requirement {
    InsecureAcceptAnything,
    Reject,
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
    Path(PathBuf),
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
    /// Fulcio certificates chaining to `ca`, for this issuer and email, logged in
    /// a Rekor whose key is one of `rekor_keys`.
    Fulcio { ca: Material, oidc_issuer: String, subject_email: String, rekor_keys: Vec<Material> },
}

/// A `sigstoreSigned` requirement.
#[derive(Clone, Debug, PartialEq)]
pub struct SigstoreSigned {
    pub trust: Trust,
    pub signed_identity: SignedIdentity,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    default: Option<Vec<Value>>,
    #[serde(default)]
    transports: BTreeMap<String, BTreeMap<String, Vec<Value>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawSigstore {
    #[serde(rename = "type")]
    _type: String,
    key_path: Option<PathBuf>,
    key_paths: Option<Vec<PathBuf>>,
    key_data: Option<String>,
    key_datas: Option<Vec<String>>,
    fulcio: Option<RawFulcio>,
    pki: Option<Value>,
    rekor_public_key_path: Option<PathBuf>,
    rekor_public_key_paths: Option<Vec<PathBuf>>,
    rekor_public_key_data: Option<String>,
    rekor_public_key_datas: Option<Vec<String>>,
    signed_identity: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawFulcio {
    ca_path: Option<PathBuf>,
    ca_data: Option<String>,
    oidc_issuer: Option<String>,
    subject_email: Option<String>,
}

fn b64(s: &str, what: &str) -> Result<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s.trim()).with_context(|| format!("{what} is not valid base64"))
}

fn one_of_materials(
    path: Option<PathBuf>,
    paths: Option<Vec<PathBuf>>,
    data: Option<String>,
    datas: Option<Vec<String>>,
    names: [&str; 4],
) -> Result<Vec<Material>> {
    let given = [path.is_some(), paths.is_some(), data.is_some(), datas.is_some()].iter().filter(|b| **b).count();
    ensure!(given <= 1, "only one of {} may be set", names.join(", "));
    let mut out = Vec::new();
    if let Some(p) = path {
        out.push(Material::Path(p));
    }
    for p in paths.unwrap_or_default() {
        out.push(Material::Path(p));
    }
    if let Some(d) = data {
        out.push(Material::Data(b64(&d, names[2])?));
    }
    for d in datas.unwrap_or_default() {
        out.push(Material::Data(b64(&d, names[3])?));
    }
    if given == 1 {
        ensure!(!out.is_empty(), "{} must not be empty", names.join("/"));
    }
    Ok(out)
}

fn parse_sigstore(v: &Value) -> Result<Requirement> {
    let raw: RawSigstore = serde_json::from_value(v.clone()).context("invalid sigstoreSigned requirement")?;
    if raw.pki.is_some() {
        return Ok(Requirement::Unsupported("sigstoreSigned with pki".into()));
    }
    let keys = one_of_materials(
        raw.key_path,
        raw.key_paths,
        raw.key_data,
        raw.key_datas,
        ["keyPath", "keyPaths", "keyData", "keyDatas"],
    )?;
    let rekor = one_of_materials(
        raw.rekor_public_key_path,
        raw.rekor_public_key_paths,
        raw.rekor_public_key_data,
        raw.rekor_public_key_datas,
        ["rekorPublicKeyPath", "rekorPublicKeyPaths", "rekorPublicKeyData", "rekorPublicKeyDatas"],
    )?;
    let trust = match (keys.is_empty(), raw.fulcio) {
        (false, Some(_)) => bail!("sigstoreSigned: keys and fulcio are mutually exclusive"),
        (true, None) => bail!("sigstoreSigned needs one of keyPath, keyPaths, keyData, keyDatas or fulcio"),
        (false, None) => {
            // With a Rekor key containers/image also requires a log entry for
            // keyed signatures. hostctl does not check those, so the scope
            // refuses every image rather than ignoring the requirement.
            if !rekor.is_empty() {
                return Ok(Requirement::Unsupported("sigstoreSigned with keys and rekorPublicKey*".into()));
            }
            Trust::Keys(keys)
        }
        (true, Some(f)) => {
            let ca = match (f.ca_path, f.ca_data) {
                (Some(p), None) => Material::Path(p),
                (None, Some(d)) => Material::Data(b64(&d, "fulcio.caData")?),
                _ => bail!("fulcio needs exactly one of caPath and caData"),
            };
            let oidc_issuer = f.oidc_issuer.filter(|s| !s.is_empty()).context("fulcio.oidcIssuer is required")?;
            let subject_email = f.subject_email.filter(|s| !s.is_empty()).context("fulcio.subjectEmail is required")?;
            ensure!(
                !rekor.is_empty(),
                "fulcio needs rekorPublicKeyPath, rekorPublicKeyPaths, rekorPublicKeyData or rekorPublicKeyDatas"
            );
            Trust::Fulcio { ca, oidc_issuer, subject_email, rekor_keys: rekor }
        }
    };
    let signed_identity = match &raw.signed_identity {
        None => SignedIdentity::MatchRepoDigestOrExact,
        Some(v) => SignedIdentity::parse(v)?,
    };
    Ok(Requirement::SigstoreSigned(SigstoreSigned { trust, signed_identity }))
}

fn parse_requirement(v: &Value) -> Result<Requirement> {
    let ty = v.get("type").and_then(Value::as_str).context("a requirement needs a string \"type\"")?;
    let obj = v.as_object().context("a requirement must be an object")?;
    let only_type = || -> Result<()> {
        if let Some(k) = obj.keys().find(|k| *k != "type") {
            bail!("{ty} takes no field {k:?}");
        }
        Ok(())
    };
    match ty {
        "insecureAcceptAnything" => only_type().map(|_| Requirement::InsecureAcceptAnything),
        "reject" => only_type().map(|_| Requirement::Reject),
        "sigstoreSigned" => parse_sigstore(v),
        // Known to containers/image, not implemented by hostctl (GPG signatures,
        // base-layer checks): kept so the scope refuses instead of accepting.
        "signedBy" | "signedBaseLayer" => Ok(Requirement::Unsupported(ty.to_string())),
        other => bail!("unknown requirement type {other:?}"),
    }
}

fn parse_list(values: &[Value], where_: &str) -> Result<Vec<Requirement>> {
    ensure!(!values.is_empty(), "{where_}: an empty requirement list is not allowed (use [{{\"type\":\"reject\"}}])");
    values
        .iter()
        .enumerate()
        .map(|(i, v)| parse_requirement(v).with_context(|| format!("{where_}, requirement {}", i + 1)))
        .collect()
}

impl Policy {
    /// Parses policy JSON.
    pub fn parse(bytes: &[u8]) -> Result<Policy> {
        let raw: RawPolicy = serde_json::from_slice(bytes).context("not a valid containers-policy.json")?;
        let default = parse_list(&raw.default.context("the policy has no \"default\"")?, "default")?;
        let mut transports = BTreeMap::new();
        for (transport, scopes) in raw.transports {
            let mut parsed = BTreeMap::new();
            for (scope, reqs) in scopes {
                let list = parse_list(&reqs, &format!("transport {transport:?} scope {scope:?}"))?;
                parsed.insert(scope, list);
            }
            transports.insert(transport, parsed);
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
            let mut p = Some(abs.as_path());
            while let Some(dir) = p {
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
            r#"{"type":"sigstoreSigned","pki":{"caRootsPath":"/ca"}}"#,
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
                ca: Material::Data(b"ca".to_vec()),
                oidc_issuer: "https://issuer".into(),
                subject_email: "me@x.io".into(),
                rekor_keys: vec![Material::Data(b"rekor".to_vec())],
            }
        );
        assert_eq!(s.signed_identity, SignedIdentity::MatchRepoDigestOrExact);
    }
}
