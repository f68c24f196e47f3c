//! Transport scopes: which keys of `transports.<name>` a policy may use, per
//! transport, as containers-policy.json(5) and containers/image define them.
//!
//! A scope that can never match is worse than useless: the admin meant a rule
//! and the transport's default applies instead. So an invalid scope makes the
//! whole policy an error, naming the transport and the scope. The `""` scope
//! is valid everywhere.
//!
//! * `docker`: `host[:port]`, `host[:port]/namespace…`, a repository, a
//!   repository with `:tag` or `@digest`, all fully expanded as image
//!   references are normalised (`docker.io/library/busybox`, not `busybox`),
//!   and wildcard hosts `*.example.com` (no port: containers/image matches
//!   them against the host name only). containers/image loads any string
//!   here (unmatchable ones included); hostctl refuses what cannot match.
//! * `oci`, `oci-archive`, `dir`: an absolute, clean path (no empty, `.` or
//!   `..` component, no trailing `/`), never `/` itself (it would shadow
//!   `""`), as containers/image checks them. For `oci`/`oci-archive`, hostctl
//!   also reads `PATH:TAG` (the tag after the first `:`, as in references).
//! * `docker-archive`, `docker-daemon`, `sif`, `tarball`: only `""`.
//! * Other transports (`containers-storage`, `atomic`, `ostree`, unknown
//!   names): hostctl never consults them and does not check their scopes;
//!   their requirements are still validated.

use anyhow::{bail, ensure, Context, Result};

use super::super::identity::DockerIdentity;
use crate::imgref::{ImageRef, DEFAULT_REGISTRY};

/// Checks one scope of `transport`.
pub fn validate(transport: &str, scope: &str) -> Result<()> {
    if scope.is_empty() {
        return Ok(());
    }
    match transport {
        "docker" => docker(scope),
        "oci" | "oci-archive" => match scope.split_once(':') {
            Some((dir, tag)) => {
                path(dir)?;
                oci_ref_name(tag)
            }
            None => path(scope),
        },
        "dir" => path(scope),
        "docker-archive" | "docker-daemon" | "sif" | "tarball" => {
            bail!("the {transport} transport has no scopes but the default \"\"")
        }
        _ => Ok(()),
    }
}

fn docker(scope: &str) -> Result<()> {
    if let Some(suffix) = scope.strip_prefix("*.") {
        ensure!(!suffix.contains(':'), "a wildcard scope names hosts without a port (the port is not matched)");
        ensure!(
            !suffix.is_empty() && suffix.split('.').all(dns_label),
            "a wildcard scope is *. followed by a DNS domain (such as *.example.com)"
        );
        return Ok(());
    }
    if !scope.contains('/') {
        // A registry host: read it as the host of a reference, as images are.
        let host = match format!("docker://{scope}/x").parse::<ImageRef>() {
            Ok(ImageRef::Registry(r)) => r.registry,
            _ => bail!("not a registry host[:port], repository or reference"),
        };
        ensure!(
            host == scope,
            "not a registry host (a host has a '.' or a ':port', or is localhost{}): no image can match it",
            if host == DEFAULT_REGISTRY && scope != "index.docker.io" {
                String::new()
            } else {
                format!("; write {host}")
            }
        );
        return Ok(());
    }
    let id = DockerIdentity::parse(scope).context("not a valid repository or reference")?;
    ensure!(
        !(id.tag.is_some() && id.digest.is_some()),
        "a scope names a tag or a digest, not both: no image can match it"
    );
    let canonical = id.to_string();
    ensure!(
        canonical == scope,
        "scopes are fully expanded, as image names are matched: no image can match it; write {canonical:?}"
    );
    Ok(())
}

/// A DNS label as distribution/reference accepts one in a host name.
fn dns_label(l: &str) -> bool {
    let b = l.as_bytes();
    !b.is_empty() && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-') && b[0] != b'-' && b[b.len() - 1] != b'-'
}

/// containers/image's rule for path scopes (`filepath.Clean(scope) == scope`
/// for an absolute path other than `/`).
fn path(p: &str) -> Result<()> {
    ensure!(p.starts_with('/'), "must be an absolute path");
    ensure!(p != "/", "\"/\" is not a scope: use the transport's default scope \"\"");
    let mut clean: Vec<&str> = Vec::new();
    for c in p[1..].split('/') {
        match c {
            "" | "." => {}
            ".." => {
                clean.pop();
            }
            c => clean.push(c),
        }
    }
    let clean = format!("/{}", clean.join("/"));
    ensure!(
        clean == p,
        "not a canonical path (an empty, . or .. component, or a trailing /): no image can match it; write {clean:?}"
    );
    Ok(())
}

/// An image name in an OCI layout (`org.opencontainers.image.ref.name`), with
/// the grammar containers/image checks: components of letters and digits
/// joined by `-._:@+` or `--`, separated by `/`.
fn oci_ref_name(tag: &str) -> Result<()> {
    let component = |c: &str| {
        let b = c.as_bytes();
        !b.is_empty()
            && b[0].is_ascii_alphanumeric()
            && b[b.len() - 1].is_ascii_alphanumeric()
            && c.split(|ch: char| ch.is_ascii_alphanumeric())
                .filter(|sep| !sep.is_empty())
                .all(|sep| sep == "--" || (sep.len() == 1 && "-._:@+".contains(sep)))
    };
    ensure!(tag.split('/').all(component), "{tag:?} after the path is not a valid image name in an OCI layout");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// containers/image's `TestTransportValidatePolicyConfigurationScope`
    /// (oci/layout, oci/archive, directory) rows, then hostctl's `PATH:TAG`.
    #[test]
    fn path_scopes_as_containers_image_validates_them() {
        // (scope, upstream accepts, why hostctl differs)
        for (scope, upstream, differs) in [
            ("/etc", true, ""),
            ("/this/does/not/exist", true, ""),
            ("relative/path", false, ""),
            ("/", false, ""),
            ("/double//slashes", false, ""),
            ("/has/./dot", false, ""),
            ("/has/dot/../dot", false, ""),
            ("/trailing/slash/", false, ""),
            ("/media/usb:v1", true, ""),
            ("/media/usb:notlatest:image", true, ""),
            ("/media/usb:", true, "an empty tag: no hostctl reference can match it"),
            ("/media/usb:bad'name!", true, "not an OCI image name: nothing can match it"),
            ("/media/usb/:v1", false, ""),
        ] {
            for transport in ["oci", "oci-archive"] {
                let got = validate(transport, scope);
                assert_eq!(got.is_ok(), upstream && differs.is_empty(), "{transport} {scope:?}: {got:?} ({differs})");
            }
            if !scope.contains(':') {
                assert_eq!(validate("dir", scope).is_ok(), upstream, "dir {scope:?}");
            }
        }
        let err = format!("{:#}", validate("oci", "/trailing/slash/").unwrap_err());
        assert!(err.contains("write \"/trailing/slash\""), "{err}");
        let err = format!("{:#}", validate("oci", "/").unwrap_err());
        assert!(err.contains("default scope \"\""), "{err}");
    }

    /// containers-policy.json(5)'s docker scope forms. containers/image loads
    /// every string here (its docker transport checks nothing); hostctl refuses
    /// the ones no image name can ever match, which is the difference noted.
    #[test]
    fn docker_scopes() {
        let by_digest = format!("docker.io/library/busybox@{D}");
        let both = format!("r.io/os:v1@{D}");
        // (scope, hostctl accepts; upstream accepts all)
        for (scope, ok) in [
            ("docker.io", true),
            ("registry.example.com:5000", true),
            ("localhost", true),
            ("localhost:5000", true),
            ("127.0.0.1:5000", true),
            ("[2001:db8::1]:5000", true),
            ("example.com/playground", true),
            ("registry.redhat.io/beta", true),
            ("private-mirror:5000/vendor-mirror", true),
            ("docker.io/library/busybox", true),
            ("docker.io/library/busybox:latest", true),
            (by_digest.as_str(), true),
            ("*.access.redhat.com", true),
            ("*.com", true),
            ("busybox", false), // a short name: images are matched by docker.io/library/busybox
            ("library/busybox", false), // likewise
            ("docker.io/busybox", false), // docker.io/library/busybox
            ("index.docker.io/library/x", false), // docker.io/library/x
            ("example.com/UPPER", false),
            ("example.com/os/", false),
            ("example.com//os", false),
            (both.as_str(), false),
            ("*.example.com:5000", false),
            ("*.", false),
            ("*.-bad.com", false),
            ("*example.com", false),
            ("foo", false), // not a host: foo/x is docker.io/foo/x
        ] {
            let got = validate("docker", scope);
            assert_eq!(got.is_ok(), ok, "{scope:?}: {got:?}");
        }
        let err = format!("{:#}", validate("docker", "docker.io/busybox").unwrap_err());
        assert!(err.contains("write \"docker.io/library/busybox\""), "{err}");
        let err = format!("{:#}", validate("docker", "index.docker.io").unwrap_err());
        assert!(err.contains("write docker.io"), "{err}");
    }

    #[test]
    fn other_transports() {
        for t in ["docker-archive", "docker-daemon", "sif", "tarball"] {
            assert!(validate(t, "").is_ok());
            assert!(validate(t, "/some/file").is_err(), "{t}: upstream has no scopes but \"\"");
        }
        // Not consulted by hostctl, not checked (containers/image has its own rules).
        assert!(validate("containers-storage", "[overlay@/var/lib/containers/storage]docker.io/x").is_ok());
        assert!(validate("unknown", "anything at all").is_ok());
    }
}
