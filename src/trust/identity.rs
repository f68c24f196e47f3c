//! `signedIdentity`: whether the identity a signature claims
//! (`critical.identity.docker-reference`) fits the image being deployed.
//!
//! Semantics follow containers-policy.json(5). Note that cosign records the
//! repository without a tag, so images signed by `cosign sign` and pulled by
//! tag need `matchRepository` (or an exact form); the default
//! `matchRepoDigestOrExact` then only accepts them when pulled by digest.

use anyhow::{bail, ensure, Context, Result};
use serde::Deserialize;
use serde_json::Value;

use crate::imgref::ImageRef;

/// A docker reference as a signature states it, keeping whether a tag was written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerIdentity {
    /// `registry/repository`, normalised like image references.
    pub name: String,
    pub tag: Option<String>,
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
    MatchExact,
    MatchRepoDigestOrExact,
    MatchRepository,
    ExactReference(DockerIdentity),
    ExactRepository(String),
    RemapIdentity { prefix: String, signed_prefix: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawIdentity {
    #[serde(rename = "type")]
    ty: String,
    docker_reference: Option<String>,
    docker_repository: Option<String>,
    prefix: Option<String>,
    signed_prefix: Option<String>,
}

impl SignedIdentity {
    /// Parses a `signedIdentity` object.
    pub fn parse(v: &Value) -> Result<SignedIdentity> {
        let raw: RawIdentity = serde_json::from_value(v.clone()).context("invalid signedIdentity")?;
        let no_fields = |raw: &RawIdentity| {
            raw.docker_reference.is_none()
                && raw.docker_repository.is_none()
                && raw.prefix.is_none()
                && raw.signed_prefix.is_none()
        };
        let id = match raw.ty.as_str() {
            "matchExact" | "matchRepoDigestOrExact" | "matchRepository" => {
                ensure!(no_fields(&raw), "signedIdentity {} takes no other fields", raw.ty);
                match raw.ty.as_str() {
                    "matchExact" => SignedIdentity::MatchExact,
                    "matchRepoDigestOrExact" => SignedIdentity::MatchRepoDigestOrExact,
                    _ => SignedIdentity::MatchRepository,
                }
            }
            "exactReference" => {
                let r = raw.docker_reference.context("exactReference needs dockerReference")?;
                ensure!(raw.docker_repository.is_none() && raw.prefix.is_none() && raw.signed_prefix.is_none());
                let id = DockerIdentity::parse(&r)?;
                ensure!(!id.is_name_only(), "exactReference {r:?} needs a tag or digest");
                SignedIdentity::ExactReference(id)
            }
            "exactRepository" => {
                let r = raw.docker_repository.context("exactRepository needs dockerRepository")?;
                ensure!(raw.docker_reference.is_none() && raw.prefix.is_none() && raw.signed_prefix.is_none());
                let id = DockerIdentity::parse(&r)?;
                ensure!(id.is_name_only(), "exactRepository {r:?} must not have a tag or digest");
                SignedIdentity::ExactRepository(id.name)
            }
            "remapIdentity" => {
                let prefix = raw.prefix.context("remapIdentity needs prefix")?;
                let signed_prefix = raw.signed_prefix.context("remapIdentity needs signedPrefix")?;
                ensure!(raw.docker_reference.is_none() && raw.docker_repository.is_none());
                for p in [&prefix, &signed_prefix] {
                    let tagged = p.rsplit('/').next().is_some_and(|last| last.contains(':')) && p.contains('/');
                    ensure!(
                        !p.is_empty() && !p.contains('@') && !tagged,
                        "remapIdentity prefix {p:?} must be a host[:port] or a repository namespace without tag or digest"
                    );
                }
                SignedIdentity::RemapIdentity { prefix, signed_prefix }
            }
            other => bail!("unknown signedIdentity type {other:?}"),
        };
        Ok(id)
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
            json!({"type":"exactRepository","dockerRepository":"r.io/os:v1"}),
            json!({"type":"matchRepository","prefix":"x"}),
            json!({"type":"remapIdentity","prefix":"x"}),
            json!({"type":"matchAnything"}),
        ] {
            assert!(SignedIdentity::parse(&v).is_err(), "{v}");
        }
    }
}
