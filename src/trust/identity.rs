//! `signedIdentity`: whether the identity a signature claims
//! (`critical.identity.docker-reference`) fits the image being deployed.
//!
//! Semantics follow containers-policy.json(5). Note that cosign records the
//! repository without a tag, so images signed by `cosign sign` and pulled by
//! tag need `matchRepository` (or an exact form); the default
//! `matchRepoDigestOrExact` then only accepts them when pulled by digest.

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use super::policy::json::{Node, Obj};
use crate::imgref::ImageRef;

/// A docker reference as a signature states it, keeping whether a tag was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerIdentity {
    /// `registry/repository`, normalised like image references.
    pub name: String,
    /// The tag, if any.
    pub tag: Option<String>,
    /// The digest, if any.
    pub digest: Option<String>,
}

impl DockerIdentity {
    /// Parses `host/repo[:tag][@digest]` (normalised as podman does).
    pub fn parse(s: &str) -> Result<DockerIdentity> {
        let ImageRef::Registry(r) =
            format!("docker://{s}").parse::<ImageRef>().with_context(|| format!("invalid docker reference {s:?}"))?
        else {
            bail!("invalid docker reference {s:?}");
        };
        let without_digest = s.split('@').next().unwrap_or_default();
        let last = without_digest.rsplit('/').next().unwrap_or_default();
        let has_tag = last.contains(':');
        Ok(DockerIdentity {
            name: r.name(),
            tag: if has_tag { r.tag } else { None },
            digest: r.digest.map(|d| d.to_string()),
        })
    }

    /// The identity of an image reference being deployed (`None` for transports
    /// without a docker reference, such as `oci:`).
    pub fn of_image(imgref: &ImageRef) -> Option<DockerIdentity> {
        match imgref {
            ImageRef::Registry(r) => Some(DockerIdentity {
                name: r.name(),
                tag: r.tag.clone(),
                digest: r.digest.as_ref().map(|d| d.to_string()),
            }),
            _ => None,
        }
    }

    fn is_name_only(&self) -> bool {
        self.tag.is_none() && self.digest.is_none()
    }
}

impl std::fmt::Display for DockerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.name)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

/// How the signed identity must relate to the image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SignedIdentity {
    /// `matchExact`: the same reference, tag or digest included.
    MatchExact,
    /// `matchRepoDigestOrExact`: the same repository when pulled by digest, else the same reference.
    MatchRepoDigestOrExact,
    /// `matchRepository`: the same repository.
    MatchRepository,
    /// `exactReference`: this reference.
    ExactReference(DockerIdentity),
    /// `exactRepository`: this repository.
    ExactRepository(String),
    /// `remapIdentity`: as `matchRepoDigestOrExact`, after replacing `prefix` with `signed_prefix`.
    RemapIdentity {
        /// The prefix of the image's reference.
        prefix: String,
        /// What it is in the signed reference.
        signed_prefix: String,
    },
}

impl SignedIdentity {
    /// Parses a `signedIdentity` object held as a `serde_json::Value` (which
    /// cannot hold duplicate keys; policy files are read through [`Node`]).
    pub fn parse(v: &Value) -> Result<SignedIdentity> {
        SignedIdentity::from_node(&Node::from_value(v))
    }

    /// Parses a `signedIdentity` (or `baseLayerIdentity`) object as
    /// containers/image does: every field of its type present, no other field,
    /// references valid.
    pub fn from_node(node: &Node) -> Result<SignedIdentity> {
        let obj = Obj::of(node, "signedIdentity")?;
        let ty = match obj.get("type") {
            Some(Node::String(t)) => t.as_str(),
            Some(other) => bail!("signedIdentity \"type\" must be a string, not {}", other.kind()),
            None => bail!("signedIdentity needs a string \"type\""),
        };
        let fields: &[&str] = match ty {
            "matchExact" | "matchRepoDigestOrExact" | "matchRepository" => &["type"],
            "exactReference" => &["type", "dockerReference"],
            "exactRepository" => &["type", "dockerRepository"],
            "remapIdentity" => &["type", "prefix", "signedPrefix"],
            other => bail!("unknown signedIdentity type {other:?}"),
        };
        if let Some(k) = obj.keys().find(|k| !fields.contains(k)) {
            bail!("signedIdentity {ty} takes no field {k:?} (its fields: {})", fields.join(", "));
        }
        fn field<'a>(obj: Obj<'a>, ty: &str, name: &str) -> Result<&'a str> {
            obj.str(name)?.with_context(|| format!("signedIdentity {ty} needs {name:?}"))
        }
        let field = |name: &str| field(obj, ty, name);
        Ok(match ty {
            "matchExact" => SignedIdentity::MatchExact,
            "matchRepoDigestOrExact" => SignedIdentity::MatchRepoDigestOrExact,
            "matchRepository" => SignedIdentity::MatchRepository,
            "exactReference" => {
                let r = field("dockerReference")?;
                let id = DockerIdentity::parse(r).context("signedIdentity exactReference: dockerReference")?;
                ensure!(!id.is_name_only(), "exactReference {r:?} needs a tag or digest");
                SignedIdentity::ExactReference(id)
            }
            "exactRepository" => {
                // containers/image accepts a tag or digest here and compares
                // repositories only; so does hostctl.
                let r = field("dockerRepository")?;
                let id = DockerIdentity::parse(r).context("signedIdentity exactRepository: dockerRepository")?;
                SignedIdentity::ExactRepository(id.name)
            }
            _ => {
                let prefix = field("prefix")?;
                let signed_prefix = field("signedPrefix")?;
                check_remap_prefix(prefix).context("signedIdentity remapIdentity: prefix")?;
                check_remap_prefix(signed_prefix).context("signedIdentity remapIdentity: signedPrefix")?;
                SignedIdentity::RemapIdentity { prefix: prefix.to_string(), signed_prefix: signed_prefix.to_string() }
            }
        })
    }

    /// Whether a signature claiming `signed` may stand for `image`; `Err` says why not.
    pub fn check(&self, image: &ImageRef, signed: &DockerIdentity) -> Result<(), String> {
        let exact = |want: &DockerIdentity| {
            if want.name == signed.name && want.tag == signed.tag && want.digest == signed.digest {
                Ok(())
            } else {
                Err(format!("signed identity {signed} is not {want}"))
            }
        };
        let same_repo = |name: &str| {
            if name == signed.name {
                Ok(())
            } else {
                Err(format!("signed identity {signed} is not in repository {name}"))
            }
        };
        match self {
            SignedIdentity::ExactReference(want) => exact(want),
            SignedIdentity::ExactRepository(name) => same_repo(name),
            _ => {
                let Some(mut own) = DockerIdentity::of_image(image) else {
                    return Err(format!(
                        "{image} has no docker reference to match; use exactReference or exactRepository for it"
                    ));
                };
                match self {
                    SignedIdentity::MatchExact => exact(&own),
                    SignedIdentity::MatchRepository => same_repo(&own.name),
                    SignedIdentity::MatchRepoDigestOrExact => repo_digest_or_exact(&own, signed),
                    SignedIdentity::RemapIdentity { prefix, signed_prefix } => {
                        if let Some(rest) = strip_ref_prefix(&own.name, prefix) {
                            own.name = format!("{signed_prefix}{rest}");
                            // The remapped name must still be a valid reference.
                            if DockerIdentity::parse(&own.name).is_err() {
                                return Err(format!("remapping gives an invalid reference {}", own.name));
                            }
                        }
                        repo_digest_or_exact(&own, signed)
                    }
                    SignedIdentity::ExactReference(_) | SignedIdentity::ExactRepository(_) => unreachable!(),
                }
            }
        }
    }
}

fn repo_digest_or_exact(own: &DockerIdentity, signed: &DockerIdentity) -> Result<(), String> {
    if own.digest.is_some() {
        if own.name == signed.name {
            Ok(())
        } else {
            Err(format!("signed identity {signed} is not in repository {}", own.name))
        }
    } else if own.tag.is_some() && own.name == signed.name && own.tag == signed.tag && signed.digest.is_none() {
        Ok(())
    } else {
        Err(format!(
            "signed identity {signed} is not exactly {own} (matchRepoDigestOrExact; cosign signs repositories without tags: \
             use signedIdentity matchRepository, or deploy by digest)"
        ))
    }
}

/// Refuses what containers/image refuses as a `remapIdentity` `prefix` or
/// `signedPrefix`: it must be a registry host (`host[:port]`, as in
/// distribution/reference) or `host[:port]/path` with repository path
/// components only (no tag, digest, upper case or trailing `/`).
fn check_remap_prefix(s: &str) -> Result<()> {
    let namespace =
        || s.split_once('/').is_some_and(|(host, path)| is_domain(host) && path.split('/').all(is_path_component));
    ensure!(
        is_domain(s) || namespace(),
        "{s:?} is neither a registry host[:port] nor a host/namespace without tag or digest"
    );
    Ok(())
}

/// distribution/reference's domain: DNS-like labels or a bracketed IPv6
/// literal, then an optional `:port`.
fn is_domain(s: &str) -> bool {
    let (host, port) = if s.starts_with('[') {
        match s.find(']') {
            Some(i) => (&s[..=i], &s[i + 1..]),
            None => return false,
        }
    } else {
        s.split_at(s.find(':').unwrap_or(s.len()))
    };
    let port_ok = port.is_empty()
        || port.strip_prefix(':').is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => !v6.is_empty() && v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':'),
        None => host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        }),
    };
    host_ok && port_ok
}

/// distribution/reference's path component: lowercase letters and digits,
/// separated by `.`, `_`, `__` or runs of `-`.
fn is_path_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let b = c.as_bytes();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    c.split(|ch: char| ch.is_ascii_lowercase() || ch.is_ascii_digit())
        .filter(|sep| !sep.is_empty())
        .all(|sep| matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-'))
}

/// `name` without `prefix` when `prefix` is the whole name or ends at a `/` boundary.
fn strip_ref_prefix<'a>(name: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = name.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/')).then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn id(v: Value) -> SignedIdentity {
        SignedIdentity::parse(&v).unwrap()
    }

    fn ok(policy: &SignedIdentity, image: &str, signed: &str) -> bool {
        policy.check(&image.parse().unwrap(), &DockerIdentity::parse(signed).unwrap()).is_ok()
    }

    #[test]
    fn docker_identity_keeps_missing_tags_missing() {
        assert_eq!(DockerIdentity::parse("r.io:5000/os").unwrap().tag, None);
        assert_eq!(DockerIdentity::parse("r.io:5000/os:v1").unwrap().tag.as_deref(), Some("v1"));
        assert_eq!(DockerIdentity::parse("alpine").unwrap().name, "docker.io/library/alpine");
        assert_eq!(DockerIdentity::parse(&format!("r.io/os@{D}")).unwrap().digest.as_deref(), Some(D));
        assert!(DockerIdentity::parse("Bad Ref").is_err());
    }

    #[test]
    fn identity_rules_table() {
        let repo_or_exact = SignedIdentity::MatchRepoDigestOrExact;
        let repo = SignedIdentity::MatchRepository;
        let exact = SignedIdentity::MatchExact;
        let digest_ref = format!("r.io/os@{D}");
        let cases: Vec<(&SignedIdentity, &str, &str, bool)> = vec![
            (&repo_or_exact, "r.io/os:v1", "r.io/os:v1", true),
            (&repo_or_exact, "r.io/os:v1", "r.io/os:v2", false),
            (&repo_or_exact, "r.io/os:v1", "r.io/os", false), // cosign's tagless identity
            (&repo_or_exact, &digest_ref, "r.io/os", true),
            (&repo_or_exact, &digest_ref, "r.io/other", false),
            (&repo, "r.io/os:v1", "r.io/os", true),
            (&repo, "r.io/os:v1", "r.io/os:v9", true),
            (&repo, "r.io/os:v1", "r.io/os2", false),
            (&repo, "r.io/os:v1", "evil.io/os", false),
            (&exact, "r.io/os:v1", "r.io/os:v1", true),
            (&exact, "r.io/os:v1", "r.io/os", false),
        ];
        for (policy, image, signed, want) in cases {
            assert_eq!(ok(policy, image, signed), want, "{policy:?} {image} signed as {signed}");
        }
        let exact_ref = id(json!({"type":"exactReference","dockerReference":"build.io/os:stable"}));
        assert!(ok(&exact_ref, "mirror.io/anything:v1", "build.io/os:stable"));
        assert!(!ok(&exact_ref, "mirror.io/anything:v1", "build.io/os:v2"));
        let exact_repo = id(json!({"type":"exactRepository","dockerRepository":"build.io/os"}));
        assert!(ok(&exact_repo, "mirror.io/x:v1", "build.io/os"));
        assert!(!ok(&exact_repo, "mirror.io/x:v1", "build.io/os2"));
        let remap = id(json!({"type":"remapIdentity","prefix":"mirror.io/os","signedPrefix":"build.io/os"}));
        assert!(ok(&remap, "mirror.io/os:v1", "build.io/os:v1"));
        assert!(ok(&remap, "mirror.io/os/sub:v1", "build.io/os/sub:v1"));
        assert!(!ok(&remap, "mirror.io/os:v1", "mirror.io/os:v2"));
        assert!(!ok(&remap, "mirror.io/osx:v1", "build.io/osx:v1"), "prefix must end at a / boundary");
        assert!(ok(&remap, "mirror.io/osx:v1", "mirror.io/osx:v1"), "unmapped names match as themselves");
    }

    #[test]
    fn oci_images_need_explicit_identities() {
        let image: ImageRef = "oci:/media/usb/os:v1".parse().unwrap();
        let signed = DockerIdentity::parse("build.io/os").unwrap();
        assert!(SignedIdentity::MatchRepository.check(&image, &signed).unwrap_err().contains("exactRepository"));
        let exact_repo = id(json!({"type":"exactRepository","dockerRepository":"build.io/os"}));
        assert!(exact_repo.check(&image, &signed).is_ok());
    }

    #[test]
    fn bad_identities_are_errors() {
        for v in [
            json!({"type":"exactReference","dockerReference":"r.io/os"}),
            json!({"type":"matchRepository","prefix":"x"}),
            json!({"type":"remapIdentity","prefix":"x"}),
            json!({"type":"matchAnything"}),
        ] {
            assert!(SignedIdentity::parse(&v).is_err(), "{v}");
        }
    }

    /// Accepted by containers/image, refused by hostctl before this row was
    /// dropped from `bad_identities_are_errors`: a tagged `dockerRepository`
    /// names its repository, and only the repository is compared.
    #[test]
    fn exact_repository_with_a_tag_is_accepted_as_containers_image_does() {
        let tagged = id(json!({"type":"exactRepository","dockerRepository":"r.io/os:v1"}));
        assert_eq!(tagged, SignedIdentity::ExactRepository("r.io/os".into()));
        assert!(ok(&tagged, "mirror.io/x:v1", "r.io/os:v9"));
        assert!(!ok(&tagged, "mirror.io/x:v1", "r.io/other:v1"));
        let digested = id(json!({"type":"exactRepository","dockerRepository":format!("r.io/os@{D}")}));
        assert_eq!(digested, SignedIdentity::ExactRepository("r.io/os".into()));
    }

    /// containers/image's `TestValidateIdentityRemappingPrefix`, through a
    /// whole `remapIdentity` (both `prefix` and `signedPrefix`).
    #[test]
    fn remap_prefixes_as_containers_image_checks_them() {
        // (prefix, upstream accepts)
        for (prefix, upstream) in [
            ("localhost", true),
            ("example.com", true),
            ("example.com:80", true),
            ("example.com/repo", true),
            ("example.com/ns1/ns2/ns3/repo.with.dots-dashes_underscores", true),
            ("example.com:80/ns1/ns2/ns3/repo.with.dots-dashes_underscores", true),
            // Upstream notes these never match but accepts them; so does hostctl.
            ("shortname", true),
            ("ns/shortname", true),
            ("[2001:db8::1]:5000/ns", true),
            ("", false),
            ("repo_with_underscores", false), // not a DNS name
            ("example.com/", false),
            ("example.com/UPPERCASEISINVALID", false),
            ("example.com/repo/", false),
            ("example.com/repo:tag", false),
            ("example.com/repo@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", false),
            ("example.com/repo:tag@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", false),
            ("-example.com", false),
            ("example.com:port", false),
        ] {
            for (p, sp) in [(prefix, "docker.io/library"), ("example.com/docker-library", prefix)] {
                let v = json!({"type":"remapIdentity","prefix":p,"signedPrefix":sp});
                let got = SignedIdentity::parse(&v);
                assert_eq!(got.is_ok(), upstream, "{v}: {got:?}");
                if let Err(e) = got {
                    let field = if p == prefix { "prefix" } else { "signedPrefix" };
                    assert!(format!("{e:#}").contains(&format!("remapIdentity: {field}")), "{v}: {e:#}");
                }
            }
        }
    }

    /// containers/image's `policy_config_test.go` cases for each
    /// `signedIdentity` type (`TestPRM*UnmarshalJSON`, `TestNewPRMExact*`,
    /// `TestNewPRMRemapIdentity`), plus the duplicate-key rows, which the
    /// policy reader refuses before any of this runs (see `policy::json`).
    #[test]
    fn signed_identity_objects_as_containers_image_reads_them() {
        // (object, upstream accepts, a word the error must contain)
        let cases: Vec<(Value, bool, &str)> = vec![
            (json!({"type":"matchExact"}), true, ""),
            (json!({"type":"matchRepoDigestOrExact"}), true, ""),
            (json!({"type":"matchRepository"}), true, ""),
            (json!({}), false, "needs a string \"type\""),
            (json!({"type":1}), false, "must be a string, not a number"),
            (json!({"type":"this is invalid"}), false, "unknown signedIdentity type"),
            (json!({"type":"matchExact","unknown":"foo"}), false, "takes no field \"unknown\""),
            (json!({"type":"matchRepoDigestOrExact","unknown":"foo"}), false, "\"unknown\""),
            (json!({"type":"matchRepository","unknown":"foo"}), false, "\"unknown\""),
            (json!(null), false, "not null"),
            (json!("this is invalid"), false, "not a string"),
            (json!({"type":"exactReference","dockerReference":"library/busybox:latest"}), true, ""),
            (json!({"type":"exactReference","dockerReference":""}), false, "dockerReference"),
            (json!({"type":"exactReference","dockerReference":"INVALIDUPPERCASE:latest"}), false, "dockerReference"),
            (json!({"type":"exactReference","dockerReference":"library/busybox"}), false, "needs a tag or digest"),
            (json!({"type":"exactReference"}), false, "needs \"dockerReference\""),
            (json!({"type":"exactReference","dockerReference":1}), false, "\"dockerReference\" must be a string"),
            (
                json!({"type":"exactReference","dockerReference":"library/busybox:latest","unexpected":1}),
                false,
                "takes no field \"unexpected\"",
            ),
            (json!({"type":"exactRepository","dockerRepository":"library/busybox:latest"}), true, ""),
            (json!({"type":"exactRepository","dockerRepository":""}), false, "dockerRepository"),
            (json!({"type":"exactRepository","dockerRepository":"INVALIDUPPERCASE"}), false, "dockerRepository"),
            (json!({"type":"exactRepository"}), false, "needs \"dockerRepository\""),
            (json!({"type":"exactRepository","dockerRepository":1}), false, "must be a string"),
            (
                json!({"type":"exactRepository","dockerRepository":"library/busybox","unexpected":1}),
                false,
                "\"unexpected\"",
            ),
            (
                json!({"type":"remapIdentity","prefix":"example.com/docker-library","signedPrefix":"docker.io/library"}),
                true,
                "",
            ),
            (json!({"type":"remapIdentity","signedPrefix":"docker.io/library"}), false, "needs \"prefix\""),
            (json!({"type":"remapIdentity","prefix":"example.com/docker-library"}), false, "needs \"signedPrefix\""),
            (json!({"type":"remapIdentity","prefix":1,"signedPrefix":"docker.io/library"}), false, "must be a string"),
            (
                json!({"type":"remapIdentity","prefix":"this is invalid","signedPrefix":"docker.io/library"}),
                false,
                "remapIdentity: prefix",
            ),
            (
                json!({"type":"remapIdentity","prefix":"example.com/docker-library","signedPrefix":"this is invalid"}),
                false,
                "remapIdentity: signedPrefix",
            ),
            (
                json!({"type":"remapIdentity","prefix":"example.com","signedPrefix":"docker.io","unexpected":1}),
                false,
                "\"unexpected\"",
            ),
        ];
        for (v, upstream, word) in cases {
            match SignedIdentity::parse(&v) {
                Ok(_) => assert!(upstream, "{v} loaded; containers/image refuses it"),
                Err(e) => {
                    assert!(!upstream, "{v} refused; containers/image accepts it: {e:#}");
                    assert!(format!("{e:#}").contains(word), "{v}: {e:#} should say {word:?}");
                }
            }
        }
    }
}
