//! Platforms (`os/architecture[/variant]`): choosing a manifest from an index,
//! and checking an image's config against the platform wanted.
//!
//! An index says which platform each of its manifests is for; a single
//! manifest says it only in its config. [`check_config`] compares the config's
//! `os`/`architecture`/`variant` with the wanted platform after normalising
//! both as containerd does (`x86_64` is `amd64`, `aarch64` is `arm64`, `armhf`
//! is `arm/v7`, …), so a single-platform image for another machine is refused
//! before any layer is downloaded.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An image platform as written in OCI indexes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// The OS, as in `GOOS` (`linux`).
    pub os: String,
    /// The CPU architecture, as in `GOARCH` (`amd64`, `arm64`).
    pub architecture: String,
    /// The CPU variant (`v8`), when one matters.
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of the running host, in OCI (GOARCH) spelling.
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "powerpc64" => "ppc64le",
            "riscv64" => "riscv64",
            "s390x" => "s390x",
            other => other,
        };
        let variant = (architecture == "arm64").then(|| "v8".to_string());
        Platform { os: "linux".into(), architecture: architecture.into(), variant }
    }

    /// Whether an index entry's platform fits this one. A missing variant on
    /// either side matches any variant (as containers/image does for arm64).
    pub fn matches(&self, os: &str, architecture: &str, variant: Option<&str>) -> bool {
        self.os == os
            && self.architecture == architecture
            && match (&self.variant, variant) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    /// The platform in normal form, as containerd's `platforms.Normalize`
    /// writes it: lower case, `x86_64`/`x86-64` → `amd64`, `aarch64` → `arm64`
    /// (variant `v8` dropped: it is the only one), `i386` → `386`, `armhf` →
    /// `arm/v7`, `armel` → `arm/v6`, and `arm` without a variant is `arm/v7`.
    pub fn normalized(&self) -> Platform {
        let os = match self.os.to_ascii_lowercase().as_str() {
            "macos" => "darwin".to_string(),
            other => other.to_string(),
        };
        let arch = self.architecture.to_ascii_lowercase();
        let variant = self.variant.as_deref().map(str::to_ascii_lowercase).filter(|v| !v.is_empty());
        let (architecture, variant) = match (arch.as_str(), variant.as_deref()) {
            ("i386", _) => ("386".to_string(), None),
            ("x86_64" | "x86-64" | "amd64", Some("v1")) => ("amd64".to_string(), None),
            ("x86_64" | "x86-64" | "amd64", v) => ("amd64".to_string(), v.map(str::to_string)),
            ("aarch64" | "arm64", Some("8" | "v8")) => ("arm64".to_string(), None),
            ("aarch64" | "arm64", v) => ("arm64".to_string(), v.map(str::to_string)),
            ("armhf", _) => ("arm".to_string(), Some("v7".to_string())),
            ("armel", _) => ("arm".to_string(), Some("v6".to_string())),
            ("arm", None | Some("7")) => ("arm".to_string(), Some("v7".to_string())),
            ("arm", Some(v @ ("5" | "6" | "8"))) => ("arm".to_string(), Some(format!("v{v}"))),
            (a, v) => (a.to_string(), v.map(str::to_string)),
        };
        Platform { os, architecture, variant }
    }

    /// Whether an image built for `image` (its config's platform) runs on this
    /// wanted platform: the same OS and architecture once both are normalised,
    /// and the same variant when both name one.
    pub fn accepts(&self, image: &Platform) -> bool {
        let (want, have) = (self.normalized(), image.normalized());
        want.os == have.os
            && want.architecture == have.architecture
            && match (&want.variant, &have.variant) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }

    /// The platform an image config declares.
    pub fn of_config(config: &oci_spec::image::ImageConfiguration) -> Platform {
        Platform {
            os: config.os().to_string(),
            architecture: config.architecture().to_string(),
            variant: config.variant().clone().filter(|v| !v.is_empty()),
        }
    }
}

/// An image built for another platform than the one wanted (`--platform`,
/// by default the host's).
#[derive(Debug, thiserror::Error)]
#[error("image is {image}, wanted {wanted}; refused (to take it for a {image} machine, pass --platform {image})")]
pub struct PlatformMismatch {
    /// The platform the image's config declares.
    pub image: Platform,
    /// The platform asked for.
    pub wanted: Platform,
}

/// Refuses an image whose config declares another platform than `wanted`.
/// Called once the config is fetched and before any layer is, for single
/// manifests as for index entries (an index entry's platform can disagree with
/// its config; the config is what the binaries are built for).
pub fn check_config(config: &oci_spec::image::ImageConfiguration, wanted: &Platform) -> anyhow::Result<()> {
    let image = Platform::of_config(config);
    if wanted.accepts(&image) {
        Ok(())
    } else {
        Err(PlatformMismatch { image, wanted: wanted.clone() }.into())
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        self.variant.iter().try_for_each(|v| write!(f, "/{v}"))
    }
}

impl FromStr for Platform {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => {
                Ok(Platform { os: os.to_string(), architecture: arch.to_string(), variant: None })
            }
            [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => {
                Ok(Platform { os: os.to_string(), architecture: arch.to_string(), variant: Some(v.to_string()) })
            }
            _ => Err(format!("invalid platform {s:?}: expected os/arch[/variant], e.g. linux/amd64")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_match() {
        let p: Platform = "linux/arm64/v8".parse().unwrap();
        assert!(p.matches("linux", "arm64", None));
        assert!(p.matches("linux", "arm64", Some("v8")));
        assert!(!p.matches("linux", "arm64", Some("v7")));
        assert!(!p.matches("linux", "amd64", None));
        assert_eq!(p.to_string(), "linux/arm64/v8");
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux//x".parse::<Platform>().is_err());
        if cfg!(target_arch = "x86_64") {
            assert_eq!(Platform::host().to_string(), "linux/amd64");
        }
    }

    fn p(os: &str, arch: &str, variant: &str) -> Platform {
        Platform {
            os: os.into(),
            architecture: arch.into(),
            variant: Some(variant.to_string()).filter(|v| !v.is_empty()),
        }
    }

    /// containerd/platforms `TestParseSelector`: each wanted platform (the
    /// `--platform` value) and image platforms its matcher accepts. Same
    /// expectation here, for the config check.
    #[test]
    fn wanted_platform_accepts_what_containerd_matches() {
        type Images = &'static [(&'static str, &'static str, &'static str)];
        let table: &[(&str, Images)] = &[
            ("linux/arm64", &[("linux", "aarch64", ""), ("linux", "aarch64", "v8"), ("linux", "arm64", "v8")]),
            ("linux/arm64/v8", &[("linux", "aarch64", ""), ("linux", "aarch64", "v8"), ("linux", "arm64", "")]),
            ("linux/arm", &[("linux", "arm", "v7"), ("linux", "armhf", ""), ("linux", "arm", "7")]),
            ("linux/arm/v6", &[("linux", "armel", "")]),
            ("linux/arm/v7", &[("linux", "arm", ""), ("linux", "armhf", "")]),
            ("Linux/x86_64", &[("linux", "amd64", "")]),
            ("linux/amd64", &[("linux", "x86_64", ""), ("linux", "amd64", "v1")]),
            ("linux/386", &[("linux", "i386", "")]),
            ("linux/s390x", &[("linux", "s390x", "")]),
        ];
        for (wanted, images) in table {
            let w: Platform = wanted.parse().unwrap();
            for (os, arch, variant) in *images {
                assert!(w.accepts(&p(os, arch, variant)), "{wanted} should accept {os}/{arch}/{variant}");
            }
        }
    }

    /// What hostctl refuses (the reason for issue #11: an unbootable release
    /// staged without a word). containerd's matcher gives the same answers.
    #[test]
    fn wanted_platform_refuses_another_os_architecture_or_variant() {
        let table = [
            ("linux/arm64", ("linux", "amd64", "")),
            ("linux/amd64", ("linux", "arm64", "v8")),
            ("linux/amd64", ("windows", "amd64", "")),
            ("linux/arm/v6", ("linux", "arm", "")),
            ("linux/arm/v7", ("linux", "armel", "")),
            ("linux/arm64", ("linux", "arm", "v8")),
            ("linux/ppc64le", ("linux", "ppc64", "")),
        ];
        for (wanted, (os, arch, variant)) in table {
            let w: Platform = wanted.parse().unwrap();
            assert!(!w.accepts(&p(os, arch, variant)), "{wanted} should refuse {os}/{arch}/{variant}");
        }
    }

    #[test]
    fn config_of_another_platform_is_refused_naming_both() {
        let config: oci_spec::image::ImageConfiguration =
            serde_json::from_str(r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#)
                .unwrap();
        let e = check_config(&config, &"linux/arm64".parse().unwrap()).unwrap_err();
        assert!(e.to_string().starts_with("image is linux/amd64, wanted linux/arm64"), "{e}");
        check_config(&config, &"linux/amd64".parse().unwrap()).unwrap();
        check_config(&config, &"linux/x86_64".parse().unwrap()).unwrap();
    }
}
