//! Manifest media types, telling an image manifest from an index, parsing
//! Docker schema 2 and OCI manifests into one type, and choosing an index
//! entry for a platform. Pure functions over bytes.

use anyhow::{bail, Context, Result};
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};
use serde::Deserialize;

use crate::oci::platform::Platform;

/// The OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// The Docker schema 2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The Docker schema 2 manifest list media type.
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// The `Accept` list for manifest requests (image manifests and indexes, OCI and Docker).
pub const ACCEPT: &[&str] = &[OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// What a manifest is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// An image manifest.
    Image,
    /// An index (manifest list) of per-platform manifests.
    Index,
}

#[derive(Deserialize)]
struct Probe {
    #[serde(rename = "mediaType", default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<serde_json::Value>,
    #[serde(default)]
    layers: Option<serde_json::Value>,
}

/// The media type of a manifest: its own `mediaType` field (covered by the
/// digest) first, then the `Content-Type` the registry sent, then its shape.
pub fn media_type(bytes: &[u8], content_type: Option<&str>) -> Result<String> {
    let probe: Probe = serde_json::from_slice(bytes).context("the manifest is not a JSON object")?;
    if let Some(mt) = probe.media_type.filter(|m| !m.is_empty()) {
        return Ok(mt);
    }
    let ct = content_type.map(|c| c.split(';').next().unwrap_or("").trim().to_string());
    if let Some(ct) = ct.filter(|c| ACCEPT.contains(&c.as_str())) {
        return Ok(ct);
    }
    match (probe.manifests.is_some(), probe.layers.is_some()) {
        (true, false) => Ok(OCI_INDEX.to_string()),
        (false, true) => Ok(OCI_MANIFEST.to_string()),
        _ => bail!("cannot tell what kind of manifest this is (no mediaType, no known Content-Type)"),
    }
}

/// Whether `media_type` is an image manifest or an index hostctl understands.
pub fn kind(media_type: &str) -> Result<Kind> {
    match media_type {
        OCI_MANIFEST | DOCKER_MANIFEST => Ok(Kind::Image),
        OCI_INDEX | DOCKER_LIST => Ok(Kind::Index),
        "application/vnd.docker.distribution.manifest.v1+json"
        | "application/vnd.docker.distribution.manifest.v1+prettyjws" => {
            bail!("Docker schema 1 manifests are not supported (re-push the image with a current tool)")
        }
        other => bail!("unsupported manifest media type {other:?}"),
    }
}

/// Parses an OCI or Docker schema 2 image manifest.
pub fn parse_image(bytes: &[u8]) -> Result<ImageManifest> {
    let m: ImageManifest = serde_json::from_slice(bytes).context("parsing the image manifest")?;
    if m.schema_version() != 2 {
        bail!("unsupported manifest schemaVersion {}", m.schema_version());
    }
    Ok(m)
}

/// Parses an OCI index or Docker manifest list.
pub fn parse_index(bytes: &[u8]) -> Result<ImageIndex> {
    let i: ImageIndex = serde_json::from_slice(bytes).context("parsing the image index")?;
    if i.schema_version() != 2 {
        bail!("unsupported index schemaVersion {}", i.schema_version());
    }
    Ok(i)
}

/// The entry of `index` for `platform`: the first image manifest entry whose
/// platform fits. The error lists every platform offered.
pub fn choose<'a>(index: &'a ImageIndex, platform: &Platform) -> Result<&'a Descriptor> {
    let mut offered = Vec::new();
    for d in index.manifests() {
        let mt = d.media_type().to_string();
        let Some(p) = d.platform() else { continue };
        let (os, arch) = (p.os().to_string(), p.architecture().to_string());
        if mt != OCI_MANIFEST && mt != DOCKER_MANIFEST {
            continue;
        }
        if os == "unknown" && arch == "unknown" {
            continue; // buildkit attestation manifests
        }
        if platform.matches(&os, &arch, p.variant().as_deref()) {
            return Ok(d);
        }
        offered.push(match p.variant() {
            Some(v) => format!("{os}/{arch}/{v}"),
            None => format!("{os}/{arch}"),
        });
    }
    if offered.is_empty() {
        bail!("the image index has no image manifest for any platform (wanted {platform})");
    }
    bail!("the image index has no manifest for platform {platform}; it offers: {}", offered.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCKER_V2: &str = r#"{
      "schemaVersion": 2,
      "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
      "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1469,
                 "digest": "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
      "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 2811969,
                  "digest": "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"}]
    }"#;

    fn index(entries: &[(&str, &str, Option<&str>)]) -> String {
        let ms: Vec<String> = entries
            .iter()
            .enumerate()
            .map(|(i, (os, arch, v))| {
                let var = v.map(|v| format!(r#","variant":"{v}""#)).unwrap_or_default();
                format!(
                    r#"{{"mediaType":"{OCI_MANIFEST}","size":10,"digest":"sha256:{}","platform":{{"os":"{os}","architecture":"{arch}"{var}}}}}"#,
                    format!("{i:x}").repeat(64).chars().take(64).collect::<String>()
                )
            })
            .collect();
        format!(r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{}]}}"#, ms.join(","))
    }

    #[test]
    fn docker_schema2_parses_into_oci_manifest() {
        let mt = media_type(DOCKER_V2.as_bytes(), Some("application/json")).unwrap();
        assert_eq!(mt, DOCKER_MANIFEST);
        assert_eq!(kind(&mt).unwrap(), Kind::Image);
        let m = parse_image(DOCKER_V2.as_bytes()).unwrap();
        assert_eq!(m.layers().len(), 1);
        assert_eq!(m.layers()[0].media_type().to_string(), "application/vnd.docker.image.rootfs.diff.tar.gzip");
        assert_eq!(m.config().media_type().to_string(), "application/vnd.docker.container.image.v1+json");
        assert_eq!(m.config().size(), 1469);
    }

    #[test]
    fn media_type_falls_back_to_content_type_then_shape() {
        let no_mt = r#"{"schemaVersion":2,"config":{},"layers":[]}"#;
        assert_eq!(
            media_type(no_mt.as_bytes(), Some(&format!("{OCI_MANIFEST}; charset=utf-8"))).unwrap(),
            OCI_MANIFEST
        );
        assert_eq!(media_type(no_mt.as_bytes(), None).unwrap(), OCI_MANIFEST);
        assert_eq!(media_type(br#"{"schemaVersion":2,"manifests":[]}"#, None).unwrap(), OCI_INDEX);
        assert!(media_type(b"[]", None).is_err());
        assert!(media_type(b"{}", None).is_err());
        assert!(kind("application/vnd.docker.distribution.manifest.v1+prettyjws")
            .unwrap_err()
            .to_string()
            .contains("schema 1"));
        assert!(kind("text/html").is_err());
    }

    #[test]
    fn choose_picks_platform_and_lists_offers() {
        let text = index(&[("unknown", "unknown", None), ("linux", "amd64", None), ("linux", "arm64", Some("v8"))]);
        let idx = parse_index(text.as_bytes()).unwrap();
        let amd = choose(&idx, &"linux/amd64".parse().unwrap()).unwrap();
        assert!(amd.digest().to_string().ends_with(&"1".repeat(64)));
        let arm = choose(&idx, &"linux/arm64/v8".parse().unwrap()).unwrap();
        assert!(arm.digest().to_string().ends_with(&"2".repeat(64)));
        let e = choose(&idx, &"linux/s390x".parse().unwrap()).unwrap_err().to_string();
        assert!(e.contains("linux/s390x") && e.contains("linux/amd64, linux/arm64/v8"), "{e}");
        assert!(!e.contains("unknown"), "{e}");
    }
}
