//! registries.conf (containers-registries.conf(5), version 2 TOML): which
//! files are read, and what they say about an image name: refusal
//! (`blocked`), the places to pull it from (mirrors in order, then the
//! primary `location`) and whether each is `insecure`.
//!
//! Supported per `[[registry]]`: `prefix` (`host[:port][/ns…]` or `*.host`),
//! `location`, `insecure`, `blocked`, `mirror-by-digest-only` and
//! `[[registry.mirror]]` (`location`, `insecure`, `pull-from-mirror`). Other
//! keys (`unqualified-search-registries`, `[aliases]`, …) are ignored: hostctl
//! takes fully qualified references only.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use tracing::warn;

use crate::imgref::RegistryRef;

/// The files read by default, in order (later files' entries win for the same
/// prefix): `$HOME/.config/containers/registries.conf` if it exists, else
/// `/etc/containers/registries.conf` and the drop-ins of
/// `/etc/containers/registries.conf.d/`; then the drop-ins of
/// `$HOME/.config/containers/registries.conf.d/`. Drop-ins are `*.conf`, by name.
pub fn default_files() -> Vec<PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from);
    let user_file = home.as_ref().map(|h| h.join(".config/containers/registries.conf"));
    let mut files = Vec::new();
    match user_file.filter(|f| f.exists()) {
        Some(f) => files.push(f),
        None => {
            files.push(PathBuf::from("/etc/containers/registries.conf"));
            files.extend(drop_ins(Path::new("/etc/containers/registries.conf.d")));
        }
    }
    if let Some(h) = &home {
        files.extend(drop_ins(&h.join(".config/containers/registries.conf.d")));
    }
    files
}

/// The `*.conf` files of `dir`, sorted by name (none when it cannot be read).
fn drop_ins(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "conf"))
        .collect();
    files.sort();
    files
}

/// When a mirror may serve a pull.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullFrom {
    /// Any pull (the default).
    All,
    /// `digest-only`: only pulls by digest.
    DigestOnly,
    /// `tag-only`: only pulls by tag.
    TagOnly,
}

/// One `[[registry.mirror]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror {
    /// Where the mirror is (`host[:port][/ns…]`).
    pub location: String,
    /// `insecure`: plain HTTP or unverified TLS are allowed.
    pub insecure: bool,
    /// Which pulls may use it (`pull-from-mirror`).
    pub pull_from: PullFrom,
}

/// One `[[registry]]`, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// `host[:port][/ns…]`, or `*.host` for a wildcard.
    pub prefix: String,
    /// Where the prefix's images really are (empty: where the name says).
    pub location: String,
    /// `insecure`: plain HTTP or unverified TLS are allowed.
    pub insecure: bool,
    /// `blocked`: pulls of the prefix's images are refused.
    pub blocked: bool,
    /// `[[registry.mirror]]`s, tried in order before `location`.
    pub mirrors: Vec<Mirror>,
    /// The file it came from (for messages).
    pub origin: PathBuf,
}

/// The merged configuration.
#[derive(Clone, Debug, Default)]
pub struct RegistriesConf {
    /// The `[[registry]]` entries of every file read.
    pub entries: Vec<Entry>,
}

/// One place to pull an image from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The image there (same tag or digest as asked for).
    pub reference: RegistryRef,
    /// Plain HTTP and unverified TLS allowed.
    pub insecure: bool,
    /// A mirror (tried before the primary location, which comes last).
    pub mirror: bool,
}

#[derive(Deserialize)]
struct RawFile {
    #[serde(default)]
    registry: Vec<RawRegistry>,
    /// The version 1 format's table, which is not read.
    #[serde(default)]
    registries: Option<toml::Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawRegistry {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror_by_digest_only: bool,
    #[serde(default)]
    mirror: Vec<RawMirror>,
}

#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct RawMirror {
    #[serde(default)]
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    pull_from_mirror: String,
}

impl RegistriesConf {
    /// Reads `files` in order (missing ones are skipped); a later `[[registry]]`
    /// with the same prefix replaces an earlier one.
    pub fn load(files: &[PathBuf]) -> Result<RegistriesConf> {
        let mut conf = RegistriesConf::default();
        for file in files {
            let text = match std::fs::read_to_string(file) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
            };
            conf.merge(Self::parse(&text, file)?);
        }
        Ok(conf)
    }

    /// Parses one file's text.
    pub fn parse(text: &str, origin: &Path) -> Result<RegistriesConf> {
        let raw: RawFile = toml::from_str(text).with_context(|| format!("{} is not valid TOML", origin.display()))?;
        if raw.registries.is_some() {
            warn!("{}: the version 1 [registries.*] tables are not read; use [[registry]] tables", origin.display());
        }
        let entries = raw
            .registry
            .into_iter()
            .map(|r| check(r, origin))
            .collect::<Result<Vec<_>>>()
            .with_context(|| format!("registries configuration {}", origin.display()))?;
        Ok(RegistriesConf { entries })
    }

    fn merge(&mut self, other: RegistriesConf) {
        for e in other.entries {
            match self.entries.iter_mut().find(|o| o.prefix == e.prefix) {
                Some(old) => *old = e,
                None => self.entries.push(e),
            }
        }
    }

    /// The entry whose prefix matches `r`'s name longest, and the length of
    /// the part of the name it matched.
    fn find(&self, r: &RegistryRef) -> Option<(&Entry, usize)> {
        let name = format!("{}/{}", r.registry, r.repository);
        self.entries
            .iter()
            .filter_map(|e| matched_len(&e.prefix, &r.registry, &name).map(|n| (e, n)))
            .max_by_key(|(e, _)| e.prefix.len())
    }

    /// Where to pull `r` from, in order: the mirrors that apply, then the
    /// primary location. `insecure` (`--tls-verify=false`) applies to all.
    /// A blocked registry is an error.
    pub fn endpoints(&self, r: &RegistryRef, insecure: bool) -> Result<Vec<Endpoint>> {
        let Some((entry, matched)) = self.find(r) else {
            return Ok(vec![Endpoint { reference: r.clone(), insecure, mirror: false }]);
        };
        if entry.blocked {
            bail!(
                "pulling {} is blocked by registries.conf ({}: prefix {:?} has blocked = true)",
                r.name(),
                entry.origin.display(),
                entry.prefix
            );
        }
        let rest = &format!("{}/{}", r.registry, r.repository)[matched..];
        let by_digest = r.digest.is_some();
        let mut out = Vec::new();
        for m in &entry.mirrors {
            let wanted = match m.pull_from {
                PullFrom::All => true,
                PullFrom::DigestOnly => by_digest,
                PullFrom::TagOnly => !by_digest,
            };
            if wanted {
                let reference = relocate(r, &m.location, rest).with_context(|| format!("mirror {:?}", m.location))?;
                out.push(Endpoint { reference, insecure: insecure || m.insecure, mirror: true });
            }
        }
        let primary = if entry.location.is_empty() {
            r.clone()
        } else {
            relocate(r, &entry.location, rest).with_context(|| format!("location {:?}", entry.location))?
        };
        out.push(Endpoint { reference: primary, insecure: insecure || entry.insecure, mirror: false });
        Ok(out)
    }
}

/// How much of `name` (`registry/repository`) `prefix` matches, if it does:
/// all of a wildcard's registry (`*.example.com` matches `a.example.com[:port]`),
/// else the prefix, which must end at a path boundary.
fn matched_len(prefix: &str, registry: &str, name: &str) -> Option<usize> {
    if let Some(domain) = prefix.strip_prefix('*') {
        let host = registry.split(':').next().unwrap_or(registry);
        return host.ends_with(domain).then_some(registry.len());
    }
    match name.strip_prefix(prefix) {
        Some("") => Some(prefix.len()),
        Some(rest) if rest.starts_with('/') => Some(prefix.len()),
        _ => None,
    }
}

/// `r` with its name's matched part replaced by `location`.
fn relocate(r: &RegistryRef, location: &str, rest: &str) -> Result<RegistryRef> {
    let name = format!("{location}{rest}");
    let Some((registry, repository)) = name.split_once('/') else {
        bail!("rewriting {} gives {name:?}, which has no repository", r.name());
    };
    Ok(RegistryRef {
        registry: registry.to_string(),
        repository: repository.to_string(),
        tag: r.tag.clone(),
        digest: r.digest.clone(),
    })
}

/// Checks one `[[registry]]` table: a prefix or location is needed, neither
/// may hold a scheme, a tag or a digest, and wildcards are `*.host` only.
fn check(raw: RawRegistry, origin: &Path) -> Result<Entry> {
    let prefix = if raw.prefix.is_empty() { raw.location.clone() } else { raw.prefix.clone() };
    if prefix.is_empty() {
        bail!("a [[registry]] table has neither prefix nor location");
    }
    check_name(&prefix, "prefix")?;
    if !raw.location.is_empty() {
        check_name(&raw.location, "location")?;
    }
    if let Some(domain) = prefix.strip_prefix("*.") {
        if domain.is_empty() || domain.contains(['/', ':', '*']) {
            bail!("prefix {prefix:?}: a wildcard prefix is *.host, without port or path");
        }
        if !raw.location.is_empty() {
            bail!("prefix {prefix:?}: a wildcard prefix cannot have a location");
        }
    } else if prefix.contains('*') {
        bail!("prefix {prefix:?}: a wildcard may only begin a prefix (*.host)");
    }
    let mut mirrors = Vec::new();
    for m in raw.mirror {
        if m.location.is_empty() {
            bail!("prefix {prefix:?}: a [[registry.mirror]] table has no location");
        }
        check_name(&m.location, "mirror location")?;
        let pull_from = match m.pull_from_mirror.as_str() {
            "" | "all" => PullFrom::All,
            "digest-only" => PullFrom::DigestOnly,
            "tag-only" => PullFrom::TagOnly,
            other => bail!("prefix {prefix:?}: pull-from-mirror {other:?} is not all, digest-only or tag-only"),
        };
        if raw.mirror_by_digest_only && !m.pull_from_mirror.is_empty() {
            bail!("prefix {prefix:?}: pull-from-mirror cannot be set when mirror-by-digest-only is");
        }
        let pull_from = if raw.mirror_by_digest_only { PullFrom::DigestOnly } else { pull_from };
        mirrors.push(Mirror { location: m.location, insecure: m.insecure, pull_from });
    }
    Ok(Entry {
        location: if prefix.starts_with("*.") { String::new() } else { raw.location },
        prefix,
        insecure: raw.insecure,
        blocked: raw.blocked,
        mirrors,
        origin: origin.to_path_buf(),
    })
}

fn check_name(value: &str, what: &str) -> Result<()> {
    if value.contains("://") {
        bail!("{what} {value:?} must not name a scheme (write host[:port][/namespace])");
    }
    let last = value.rsplit('/').next().unwrap_or(value);
    if value.contains('@') || (value.contains('/') && last.contains(':')) {
        bail!("{what} {value:?}: prefixes and locations with a tag or digest are not supported");
    }
    if value.ends_with('/') {
        bail!("{what} {value:?} must not end with /");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(text: &str) -> RegistriesConf {
        RegistriesConf::parse(text, Path::new("/test/registries.conf")).unwrap()
    }

    fn r(s: &str) -> RegistryRef {
        match s.parse::<crate::imgref::ImageRef>().unwrap() {
            crate::imgref::ImageRef::Registry(r) => r,
            other => panic!("{other:?}"),
        }
    }

    fn names(eps: &[Endpoint]) -> Vec<String> {
        eps.iter().map(|e| format!("{}{}", e.reference, if e.insecure { " (insecure)" } else { "" })).collect()
    }

    #[test]
    fn longest_prefix_wins_and_rewrites_the_name() {
        let c = conf(
            r#"
            unqualified-search-registries = ["example.com"]
            [[registry]]
            prefix = "example.com"
            location = "all.internal"
            [[registry]]
            prefix = "example.com/foo"
            location = "internal.net:5000/bar"
            insecure = true
            [aliases]
            "x" = "example.com/x"
            "#,
        );
        assert_eq!(
            names(&c.endpoints(&r("example.com/foo/img:1"), false).unwrap()),
            ["internal.net:5000/bar/img:1 (insecure)"]
        );
        assert_eq!(names(&c.endpoints(&r("example.com/foobar:1"), false).unwrap()), ["all.internal/foobar:1"]);
        // Not a path boundary: example.com does not match example.com:5000.
        assert_eq!(names(&c.endpoints(&r("example.com:5000/x:1"), false).unwrap()), ["example.com:5000/x:1"]);
        // --tls-verify=false applies everywhere.
        assert_eq!(names(&c.endpoints(&r("other.io/x:1"), true).unwrap()), ["other.io/x:1 (insecure)"]);
    }

    #[test]
    fn mirrors_come_first_and_follow_pull_from_mirror() {
        let c = conf(
            r#"
            [[registry]]
            location = "reg.io/team"
            [[registry.mirror]]
            location = "m1.io/cache"
            insecure = true
            [[registry.mirror]]
            location = "m2.io"
            pull-from-mirror = "digest-only"
            [[registry.mirror]]
            location = "m3.io/t"
            pull-from-mirror = "tag-only"
            "#,
        );
        let d = "sha256:".to_string() + &"a".repeat(64);
        let by_tag = c.endpoints(&r("reg.io/team/os:v1"), false).unwrap();
        assert_eq!(names(&by_tag), ["m1.io/cache/os:v1 (insecure)", "m3.io/t/os:v1", "reg.io/team/os:v1"]);
        assert_eq!(by_tag.iter().map(|e| e.mirror).collect::<Vec<_>>(), [true, true, false]);
        let by_digest = c.endpoints(&r(&format!("reg.io/team/os@{d}")), false).unwrap();
        assert_eq!(
            names(&by_digest),
            [format!("m1.io/cache/os@{d} (insecure)"), format!("m2.io/os@{d}"), format!("reg.io/team/os@{d}")]
        );
        let digest_only = conf(
            r#"
            [[registry]]
            prefix = "reg.io"
            mirror-by-digest-only = true
            [[registry.mirror]]
            location = "m1.io"
            "#,
        );
        assert_eq!(names(&digest_only.endpoints(&r("reg.io/os:v1"), false).unwrap()), ["reg.io/os:v1"]);
    }

    #[test]
    fn wildcards_and_blocked() {
        let c = conf(
            r#"
            [[registry]]
            prefix = "*.corp.example"
            insecure = true
            [[registry.mirror]]
            location = "mirror.local:5000/corp"
            [[registry]]
            prefix = "bad.io/evil"
            blocked = true
            "#,
        );
        assert_eq!(
            names(&c.endpoints(&r("a.b.corp.example:8443/os:v1"), false).unwrap()),
            ["mirror.local:5000/corp/os:v1", "a.b.corp.example:8443/os:v1 (insecure)"]
        );
        assert_eq!(names(&c.endpoints(&r("corp.example/os:v1"), false).unwrap()), ["corp.example/os:v1"]);
        let e = format!("{:#}", c.endpoints(&r("bad.io/evil/x:1"), false).unwrap_err());
        assert!(e.contains("blocked") && e.contains("/test/registries.conf") && e.contains("bad.io/evil"), "{e}");
        assert!(c.endpoints(&r("bad.io/good:1"), false).is_ok());
    }

    #[test]
    fn later_files_replace_the_same_prefix() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a.conf"), d.path().join("b.conf"));
        std::fs::write(&a, "[[registry]]\nprefix = \"x.io\"\nblocked = true\n[[registry]]\nprefix = \"y.io\"\n")
            .unwrap();
        std::fs::write(&b, "[[registry]]\nprefix = \"x.io\"\nlocation = \"z.io\"\n").unwrap();
        let c = RegistriesConf::load(&[a, d.path().join("missing.conf"), b]).unwrap();
        assert_eq!(c.entries.len(), 2);
        assert_eq!(names(&c.endpoints(&r("x.io/os:1"), false).unwrap()), ["z.io/os:1"]);
    }

    #[test]
    fn invalid_tables_are_clear_errors() {
        let bad = |text: &str, want: &str| {
            let e = format!("{:#}", RegistriesConf::parse(text, Path::new("/t.conf")).unwrap_err());
            assert!(e.contains(want) && e.contains("/t.conf"), "{text}: {e}");
        };
        bad("[[registry]]\ninsecure = true\n", "neither prefix nor location");
        bad("[[registry]]\nlocation = \"https://x.io\"\n", "scheme");
        bad("[[registry]]\nprefix = \"x.io/a:tag\"\n", "tag or digest");
        bad("[[registry]]\nprefix = \"x.*.io\"\n", "wildcard");
        bad("[[registry]]\nprefix = \"*.x.io\"\nlocation = \"y.io\"\n", "cannot have a location");
        bad("[[registry]]\nprefix = \"x.io\"\n[[registry.mirror]]\nlocation = \"m.io\"\npull-from-mirror = \"sometimes\"\n", "sometimes");
        bad(
            "[[registry]]\nprefix = \"x.io\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"m.io\"\npull-from-mirror = \"all\"\n",
            "mirror-by-digest-only",
        );
        bad("[[registry]\n", "not valid TOML");
        // Rewriting a whole name to a bare host leaves no repository.
        let c = conf("[[registry]]\nprefix = \"x.io/os\"\nlocation = \"y.io\"\n");
        assert!(format!("{:#}", c.endpoints(&r("x.io/os:1"), false).unwrap_err()).contains("no repository"));
    }
}
