//! Image references: `[transport:]name[:tag][@digest]`, parsed purely.
//!
//! Transports: `registry:` (the default; `docker://` is a synonym), `oci:DIR[:TAG]`
//! (an OCI image layout directory) and `oci-archive:FILE[:TAG]` (a tar of one).
//! A string that is a docker reference by itself (`registry:2`) is read as
//! one, as podman does; `registry:` is a prefix only where it is not.
//!
//! Registry names are checked by distribution/reference's grammar
//! (the `grammar` module) and normalised as its `ParseNormalizedNamed`, like podman
//! and docker: a first component that looks like a host (has a `.` or `:`,
//! is `localhost`, or has an uppercase letter) is the registry, otherwise the
//! registry is `docker.io`, and a single-component name on `docker.io` gains
//! `library/`. A reference with neither tag nor digest means `:latest`.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

mod grammar;
#[cfg(test)]
mod upstream_tests;

/// The registry used for names without a registry part.
pub const DEFAULT_REGISTRY: &str = "docker.io";

/// Where an image comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum ImageRef {
    /// A repository in an OCI distribution registry.
    Registry(RegistryRef),
    /// An OCI image layout directory; `tag` selects by `org.opencontainers.image.ref.name`.
    OciDir {
        /// The layout directory.
        path: PathBuf,
        /// The `org.opencontainers.image.ref.name` to select; `None`: the only image, or every platform's.
        tag: Option<String>,
    },
    /// A tar archive of an OCI image layout.
    OciArchive {
        /// The archive.
        path: PathBuf,
        /// The `org.opencontainers.image.ref.name` to select; `None`: the only image, or every platform's.
        tag: Option<String>,
    },
}

/// A fully qualified registry reference.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RegistryRef {
    /// Registry host, with port when given (`docker.io`, `127.0.0.1:5000`).
    pub registry: String,
    /// Repository path (`library/alpine`).
    pub repository: String,
    /// Tag, if any. `None` with `digest: None` never happens after parsing: `latest` is filled in.
    pub tag: Option<String>,
    /// Digest pin, if any; it wins over the tag when fetching.
    pub digest: Option<Digest>,
}

/// Why a string is not a valid image reference; each names the part at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RefError {
    /// An empty string.
    #[error("empty image reference")]
    Empty,
    /// A `transport:` prefix hostctl does not know.
    #[error("unknown transport {0:?} (supported: registry:, docker://, oci:, oci-archive:)")]
    UnknownTransport(String),
    /// A transport without its path.
    #[error("{transport} reference needs a path")]
    MissingPath {
        /// The transport, with its colon (`oci:`, `oci-archive:`).
        transport: &'static str,
    },
    /// No image name.
    #[error("image reference {0:?} has no repository name")]
    NoName(String),
    /// A domain with no repository after it.
    #[error("image reference {0:?} names a registry host but no repository after it (HOST/REPOSITORY)")]
    MissingRepository(String),
    /// A bare image ID, which names no source.
    #[error("{0:?} is a 64-hex-digit image ID, not a repository name (docker and podman refuse it too)")]
    ImageId(String),
    /// A domain that is not a valid host name.
    #[error("invalid registry host {host:?}: {why}")]
    BadHost {
        /// The domain, as written.
        host: String,
        /// What is wrong with it.
        why: String,
    },
    /// A repository path that is not valid.
    #[error("invalid repository {repository:?}: {why}")]
    BadRepository {
        /// The path, as written.
        repository: String,
        /// What is wrong with it.
        why: String,
    },
    /// A tag that is not `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
    #[error("invalid tag {0:?}: a tag is 1-128 of [A-Za-z0-9_.-] and does not start with . or -")]
    BadTag(String),
    /// An `@` not followed by `algorithm:hex`.
    #[error("invalid digest {0:?} in reference: a digest is ALGORITHM:HEX, e.g. sha256:<64 hex digits>")]
    MalformedDigest(String),
    /// A digest algorithm other than sha256.
    #[error("digest algorithm {0:?} is not supported: hostctl pins images by sha256 digests only")]
    UnsupportedDigest(String),
    /// A digest that does not parse.
    #[error("invalid digest in reference: {0}")]
    BadDigest(#[from] crate::digest::DigestError),
}

impl RegistryRef {
    /// The string a registry is asked for: the digest when pinned, else the tag.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }

    /// `registry/repository`, the name a policy scope or auth.json key matches.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository pinned to `digest` (tag kept for display).
    pub fn with_digest(&self, digest: Digest) -> RegistryRef {
        RegistryRef { digest: Some(digest), ..self.clone() }
    }
}

impl fmt::Display for RegistryRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageRef::Registry(r) => write!(f, "{r}"),
            ImageRef::OciDir { path, tag } => {
                write!(f, "oci:{}", path.display())?;
                tag.iter().try_for_each(|t| write!(f, ":{t}"))
            }
            ImageRef::OciArchive { path, tag } => {
                write!(f, "oci-archive:{}", path.display())?;
                tag.iter().try_for_each(|t| write!(f, ":{t}"))
            }
        }
    }
}

impl From<ImageRef> for String {
    fn from(r: ImageRef) -> String {
        match &r {
            // Stored references keep their transport so they parse back the same.
            ImageRef::Registry(reg) => format!("registry:{reg}"),
            _ => r.to_string(),
        }
    }
}

impl TryFrom<String> for ImageRef {
    type Error = RefError;
    fn try_from(s: String) -> Result<Self, RefError> {
        s.parse()
    }
}

impl FromStr for ImageRef {
    type Err = RefError;
    fn from_str(s: &str) -> Result<Self, RefError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(RefError::Empty);
        }
        if let Some(rest) = s.strip_prefix("docker://") {
            return parse_registry(rest).map(ImageRef::Registry);
        }
        if let Some(rest) = s.strip_prefix("registry:") {
            // `registry:2` is the `registry` image and `registry:5000/os` a
            // host named `registry`, as podman reads them: the prefix is
            // hostctl's transport only where the whole is no docker reference.
            return match parse_registry(s) {
                Ok(r) => Ok(ImageRef::Registry(r)),
                Err(_) => parse_registry(rest.trim_start_matches("//")).map(ImageRef::Registry),
            };
        }
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (path, tag) = split_path_tag(rest, "oci-archive:")?;
            return Ok(ImageRef::OciArchive { path, tag });
        }
        if let Some(rest) = s.strip_prefix("oci:") {
            let (path, tag) = split_path_tag(rest, "oci:")?;
            return Ok(ImageRef::OciDir { path, tag });
        }
        // `name:tag` also has a colon; a transport is a known word before `:`
        // (containers-transports(5)), or any URL scheme before `://`.
        if let Some((word, after)) = s.split_once(':') {
            let transport =
                matches!(word, "containers-storage" | "docker-archive" | "dir" | "docker-daemon" | "ostree")
                    || !word.is_empty()
                        && after.starts_with("//")
                        && word.bytes().all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b));
            if transport {
                return Err(RefError::UnknownTransport(word.to_string()));
            }
        }
        parse_registry(s).map(ImageRef::Registry)
    }
}

/// `PATH[:TAG]` as skopeo reads it for `oci:`: the path ends at the first colon.
fn split_path_tag(rest: &str, transport: &'static str) -> Result<(PathBuf, Option<String>), RefError> {
    let (path, tag) = match rest.split_once(':') {
        Some((p, t)) => (p, Some(t.to_string())),
        None => (rest, None),
    };
    if path.is_empty() {
        return Err(RefError::MissingPath { transport });
    }
    if let Some(t) = &tag {
        if t.is_empty() {
            return Err(RefError::BadTag(String::new()));
        }
    }
    Ok((PathBuf::from(path), tag))
}

/// `[HOST[:PORT]/]PATH[:TAG][@DIGEST]`, normalised as distribution/reference's
/// `ParseNormalizedNamed` does, with `latest` for a reference without tag or digest.
fn parse_registry(s: &str) -> Result<RegistryRef, RefError> {
    if s.is_empty() {
        return Err(RefError::Empty);
    }
    if grammar::is_image_id(s) {
        return Err(RefError::ImageId(s.to_string()));
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(grammar::parse_digest(d)?)),
        None => (s, None),
    };
    // `[::1]:5000` alone would split at its last colon as `[:` and a tag.
    if rest.starts_with('[') && !rest.contains('/') {
        return Err(RefError::MissingRepository(s.to_string()));
    }
    // A tag is after the last colon that comes after the last slash.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(rest[last_slash + i + 1..].to_string())),
        None => (rest, None),
    };
    if name.is_empty() {
        return Err(RefError::NoName(s.to_string()));
    }
    if let Some(t) = &tag {
        grammar::check_tag(t)?;
    }
    let (registry, repository) = match name.split_once('/') {
        Some((first, remainder))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first, remainder)
        }
        _ => (DEFAULT_REGISTRY, name),
    };
    if repository.is_empty() {
        return Err(RefError::MissingRepository(s.to_string()));
    }
    grammar::check_domain(registry)?;
    let registry = if registry == "index.docker.io" { DEFAULT_REGISTRY } else { registry };
    let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository.to_string()
    };
    grammar::check_repository(&repository)?;
    let tag = match (&tag, &digest) {
        (None, None) => Some("latest".to_string()),
        _ => tag,
    };
    Ok(RegistryRef { registry: registry.to_string(), repository, tag, digest })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(s: &str) -> RegistryRef {
        match s.parse::<ImageRef>().unwrap() {
            ImageRef::Registry(r) => r,
            other => panic!("{s} parsed as {other:?}"),
        }
    }

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn registry_references_normalise_like_podman() {
        for (input, want) in [
            ("alpine", "docker.io/library/alpine:latest"),
            ("alpine:3.20", "docker.io/library/alpine:3.20"),
            ("library/alpine", "docker.io/library/alpine:latest"),
            ("docker.io/alpine", "docker.io/library/alpine:latest"),
            ("index.docker.io/alpine", "docker.io/library/alpine:latest"),
            ("quay.io/fedora/fedora-bootc:42", "quay.io/fedora/fedora-bootc:42"),
            ("localhost/os", "localhost/os:latest"),
            ("localhost:5000/os:v1", "localhost:5000/os:v1"),
            ("127.0.0.1:5000/a/b/c:v1", "127.0.0.1:5000/a/b/c:v1"),
            ("docker://127.0.0.1:5000/os:v2", "127.0.0.1:5000/os:v2"),
            ("registry:127.0.0.1:5000/os", "127.0.0.1:5000/os:latest"),
            ("registry://127.0.0.1:5000/os", "127.0.0.1:5000/os:latest"),
            ("user/my-app__x.y", "docker.io/user/my-app__x.y:latest"),
        ] {
            assert_eq!(reg(input).to_string(), want, "{input}");
        }
    }

    #[test]
    fn digests_pin_and_keep_tags() {
        let r = reg(&format!("quay.io/a/b@{D}"));
        assert_eq!(r.tag, None);
        assert_eq!(r.reference(), D);
        let r = reg(&format!("quay.io/a/b:v1@{D}"));
        assert_eq!(r.tag.as_deref(), Some("v1"));
        assert_eq!(r.reference(), D);
        assert_eq!(r.to_string(), format!("quay.io/a/b:v1@{D}"));
    }

    #[test]
    fn oci_transports() {
        assert_eq!(
            "oci:/tmp/layout:v1".parse::<ImageRef>().unwrap(),
            ImageRef::OciDir { path: "/tmp/layout".into(), tag: Some("v1".into()) }
        );
        assert_eq!("oci:rel/dir".parse::<ImageRef>().unwrap(), ImageRef::OciDir { path: "rel/dir".into(), tag: None });
        assert_eq!(
            "oci-archive:/tmp/a.tar:latest".parse::<ImageRef>().unwrap(),
            ImageRef::OciArchive { path: "/tmp/a.tar".into(), tag: Some("latest".into()) }
        );
    }

    #[test]
    fn bad_references_say_what_is_wrong() {
        for (input, want) in [
            ("", RefError::Empty),
            ("  ", RefError::Empty),
            ("oci:", RefError::MissingPath { transport: "oci:" }),
            ("oci-archive::tag", RefError::MissingPath { transport: "oci-archive:" }),
            ("containers-storage:foo", RefError::UnknownTransport("containers-storage".into())),
            ("alpine:", RefError::BadTag("".into())),
            ("alpine:-x", RefError::BadTag("-x".into())),
            ("alpine:a/b", RefError::BadHost { host: "alpine:a".into(), why: String::new() }),
        ] {
            let got = input.parse::<ImageRef>().unwrap_err();
            match (&got, &want) {
                (RefError::BadHost { host: a, .. }, RefError::BadHost { host: b, .. }) => assert_eq!(a, b),
                _ => assert_eq!(got, want, "{input:?}"),
            }
        }
        for bad in ["a//b", "a/B", "a/-b", "a/b-", "a/b..c", "a/b___c", "bad host/x"] {
            let got = bad.parse::<ImageRef>();
            assert!(matches!(got, Err(RefError::BadRepository { .. })), "{bad} should be a bad repository: {got:?}");
        }
        assert!(matches!("host:99999999/x".parse::<ImageRef>(), Err(RefError::BadHost { .. })), "a bad host");
        assert!(matches!(format!("a@{}", "sha256:zz").parse::<ImageRef>(), Err(RefError::BadDigest(_))));
    }

    #[test]
    fn round_trips_through_serde() {
        for s in ["127.0.0.1:5000/os:v1", "oci:/x/y:t", "oci-archive:/a.tar"] {
            let r: ImageRef = s.parse().unwrap();
            let json = serde_json::to_string(&r).unwrap();
            assert_eq!(serde_json::from_str::<ImageRef>(&json).unwrap(), r);
        }
    }
}
