//! The agent's configuration: `/etc/hostctl/agent.toml`, then drop-ins
//! `*.toml` from `/usr/lib/hostctl/agent.d/` and `/etc/hostctl/agent.d/`
//! (systemd's precedence: a drop-in in `/etc` replaces the one of the same
//! name in `/usr/lib`; all are applied in file-name order, later settings
//! winning). Every file is parsed strictly: an unknown key or a bad value is
//! an error naming the file and line.
//!
//! ```toml
//! strategy = "fleet_lock"        # immediate | periodic | fleet_lock
//! interval = "5m"                # between checks
//! require_release = true         # take only images with verified rollout metadata
//! [fleet_lock]
//! url = "http://locks.example:8080"
//! group = "workers"
//! # For a server on https:// (optional): its CA, and for a server run with
//! # --client-ca, this host's certificate (its CN is the host's id) and key.
//! ca = "/etc/hostctl/fleet/ca.pem"
//! client_cert = "/etc/hostctl/fleet/host.pem"
//! client_key = "/etc/hostctl/fleet/host.key"
//! [periodic]
//! time_zone = "Europe/Berlin"    # an IANA name, "UTC" or "localtime"
//! [[periodic.download]]          # none: download at any time
//! days = ["Mon", "Tue", "Wed", "Thu", "Fri"]
//! start = "22:00"
//! length = "2h"
//! [[periodic.reboot]]
//! days = ["Sat", "Sun"]
//! start = "03:00"
//! length = "1h"
//! ```

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Deserializer};

use super::strategy::{Window, Windows};
use crate::fleet::client::ClientTls;
use crate::fleet::protocol::DEFAULT_GROUP;

/// The main file, relative to the root.
pub const MAIN_FILE: &str = "etc/hostctl/agent.toml";
/// Drop-in directories, lowest precedence first, relative to the root.
pub const DROPIN_DIRS: [&str; 2] = ["usr/lib/hostctl/agent.d", "etc/hostctl/agent.d"];
/// The check interval when none is configured.
pub const DEFAULT_INTERVAL: u64 = 300;

/// How the agent decides when to download and reboot.
#[derive(Clone, Debug, PartialEq)]
pub enum Strategy {
    /// As soon as an update may be taken.
    Immediate,
    /// Downloads and reboots only inside their maintenance windows.
    Periodic {
        /// When downloads may run; `None`: at any time.
        download: Option<Windows>,
        /// When reboots may happen.
        reboot: Windows,
    },
    /// Reboots only while holding a slot of a FleetLock server.
    FleetLock {
        /// The server's base URL.
        url: String,
        /// The reboot group.
        group: String,
    },
}

impl Strategy {
    /// Its name in the configuration.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Immediate => "immediate",
            Strategy::Periodic { .. } => "periodic",
            Strategy::FleetLock { .. } => "fleet_lock",
        }
    }
}

/// The merged configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentConfig {
    /// The strategy.
    pub strategy: Strategy,
    /// Seconds between checks.
    pub interval: u64,
    /// The image to follow; `None`: the tracked one (`hostctl switch`).
    pub image: Option<String>,
    /// Take only images with verified rollout metadata.
    pub require_release: bool,
    /// TLS with the lock server (`[fleet_lock]` `ca`, `client_cert`, `client_key`).
    pub lock_tls: ClientTls,
    /// The files read, in order (for `agent status`).
    pub files: Vec<PathBuf>,
}

/// One file's settings, all optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Partial {
    strategy: Option<StrategyName>,
    #[serde(default, deserialize_with = "duration")]
    interval: Option<u64>,
    image: Option<String>,
    require_release: Option<bool>,
    fleet_lock: Option<FleetLockPartial>,
    periodic: Option<PeriodicPartial>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum StrategyName {
    Immediate,
    Periodic,
    FleetLock,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FleetLockPartial {
    #[serde(default, deserialize_with = "url")]
    url: Option<String>,
    group: Option<String>,
    #[serde(default, deserialize_with = "absolute")]
    ca: Option<PathBuf>,
    #[serde(default, deserialize_with = "absolute")]
    client_cert: Option<PathBuf>,
    #[serde(default, deserialize_with = "absolute")]
    client_key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeriodicPartial {
    #[serde(default, deserialize_with = "time_zone")]
    time_zone: Option<String>,
    download: Option<Vec<Window>>,
    reboot: Option<Vec<Window>>,
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let s = String::deserialize(d)?;
    let secs = crate::fleet::waves::parse_duration(&s).map_err(serde::de::Error::custom)?;
    if secs == 0 {
        return Err(serde::de::Error::custom("the interval must be longer than 0"));
    }
    Ok(Some(secs))
}

fn url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    if !(s.starts_with("http://") || s.starts_with("https://")) || s.len() < "http://x".len() {
        return Err(serde::de::Error::custom(format!("{s:?} is not an http:// or https:// URL")));
    }
    Ok(Some(s))
}

fn absolute<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    let s = PathBuf::from(String::deserialize(d)?);
    if !s.is_absolute() {
        return Err(serde::de::Error::custom(format!("{} is not an absolute path", s.display())));
    }
    Ok(Some(s))
}

fn time_zone<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s = String::deserialize(d)?;
    super::strategy::zone(&s).map_err(serde::de::Error::custom)?;
    Ok(Some(s))
}

/// The files read for the root `root`, in order: the main file (if present),
/// then the drop-ins by name, `/etc`'s replacing `/usr/lib`'s of the same name.
pub fn files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let main = root.join(MAIN_FILE);
    if main.exists() {
        out.push(main);
    }
    let mut by_name = std::collections::BTreeMap::new();
    for dir in DROPIN_DIRS {
        for e in crate::fsutil::read_dir_if_present(&root.join(dir))? {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".toml") && !name.starts_with('.') {
                by_name.insert(name, e.path());
            }
        }
    }
    out.extend(by_name.into_values());
    Ok(out)
}

/// Reads and merges the configuration under `root` (`/` on a host).
pub fn load(root: &Path) -> Result<AgentConfig> {
    let files = files(root)?;
    let mut texts = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
        texts.push((f.clone(), text));
    }
    let mut cfg = parse(&texts)?;
    cfg.files = files;
    Ok(cfg)
}

/// Parses one file alone, as strictly as [`parse`] reads each file before
/// merging them: an unknown key or a bad value is an error naming `path` and
/// the line. Settings that only make sense together (`fleet_lock`'s `url`)
/// may come from another file, so they are not required here
/// (`container lint` checks an image's files with this).
pub fn check_file(path: &Path, text: &str) -> Result<()> {
    read_file(path, text).map(|_| ())
}

fn read_file(path: &Path, text: &str) -> Result<Partial> {
    toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        let at = line.map(|l| format!(":{l}")).unwrap_or_default();
        anyhow::anyhow!("{}{at}: {}", path.display(), e.message().trim())
    })
}

/// Merges the files `(path, text)` in order (the pure part of [`load`]).
pub fn parse(files: &[(PathBuf, String)]) -> Result<AgentConfig> {
    let mut strategy: Option<(StrategyName, &Path)> = None;
    let mut interval = None;
    let mut image = None;
    let mut require_release = None;
    let (mut url, mut group) = (None, None);
    let mut tls = ClientTls::default();
    let mut tls_from: Option<&Path> = None;
    let (mut tz, mut download, mut reboot) = (None, None, None);
    for (path, text) in files {
        let p = read_file(path, text)?;
        if let Some(s) = p.strategy {
            strategy = Some((s, path.as_path()));
        }
        interval = p.interval.or(interval);
        image = p.image.or(image);
        require_release = p.require_release.or(require_release);
        if let Some(f) = p.fleet_lock {
            url = f.url.or(url);
            group = f.group.or(group);
            if f.client_cert.is_some() || f.client_key.is_some() {
                tls_from = Some(path.as_path());
            }
            tls.ca = f.ca.or(tls.ca);
            tls.cert = f.client_cert.or(tls.cert);
            tls.key = f.client_key.or(tls.key);
        }
        if let Some(per) = p.periodic {
            tz = per.time_zone.or(tz);
            download = per.download.or(download);
            reboot = per.reboot.or(reboot);
        }
    }
    if let (Some(from), true) = (tls_from, tls.cert.is_some() != tls.key.is_some()) {
        bail!(
            "{}: [fleet_lock] client_cert and client_key go together (only {} is set in any file)",
            from.display(),
            if tls.cert.is_some() { "client_cert" } else { "client_key" }
        );
    }
    let tz = tz.unwrap_or_else(|| "UTC".into());
    let strategy = match strategy {
        None | Some((StrategyName::Immediate, _)) => Strategy::Immediate,
        Some((StrategyName::Periodic, from)) => {
            let Some(reboot) = reboot.filter(|r: &Vec<Window>| !r.is_empty()) else {
                bail!(
                    "{}: strategy \"periodic\" needs at least one [[periodic.reboot]] window (none is set in any file)",
                    from.display()
                )
            };
            Strategy::Periodic {
                download: download.filter(|d: &Vec<Window>| !d.is_empty()).map(|d| Windows::new(&tz, d)).transpose()?,
                reboot: Windows::new(&tz, reboot)?,
            }
        }
        Some((StrategyName::FleetLock, from)) => {
            let Some(url) = url else {
                bail!("{}: strategy \"fleet_lock\" needs [fleet_lock] url (none is set in any file)", from.display())
            };
            Strategy::FleetLock { url, group: group.unwrap_or_else(|| DEFAULT_GROUP.into()) }
        }
    };
    Ok(AgentConfig {
        strategy,
        interval: interval.unwrap_or(DEFAULT_INTERVAL),
        image,
        require_release: require_release.unwrap_or(false),
        lock_tls: tls,
        files: files.iter().map(|(p, _)| p.clone()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Result<AgentConfig> {
        parse(&[(PathBuf::from("/etc/hostctl/agent.toml"), text.to_string())])
    }

    #[test]
    fn nothing_configured_is_immediate_every_five_minutes() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.strategy, Strategy::Immediate);
        assert_eq!(c.interval, 300);
        assert!(!c.require_release);
    }

    #[test]
    fn a_full_file_parses() {
        let c = one(r#"
strategy = "periodic"
interval = "1h30m"
require_release = true
image = "r.io/os:stable"
[periodic]
time_zone = "Europe/Berlin"
[[periodic.download]]
days = ["Mon", "Tue"]
start = "22:00"
length = "2h"
[[periodic.reboot]]
days = ["Sat"]
start = "03:30"
length = "45m"
"#)
        .unwrap();
        assert_eq!(c.interval, 5400);
        assert!(c.require_release);
        assert_eq!(c.image.as_deref(), Some("r.io/os:stable"));
        let Strategy::Periodic { download, reboot } = c.strategy else { panic!() };
        assert_eq!(download.unwrap().windows().len(), 1);
        assert_eq!(reboot.windows()[0].length_minutes(), 45);
    }

    #[test]
    fn dropins_override_in_name_order_and_etc_replaces_usr_lib() {
        let dir = tempfile::tempdir().unwrap();
        let w = |p: &str, t: &str| {
            let p = dir.path().join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, t).unwrap();
        };
        w(MAIN_FILE, "strategy = \"immediate\"\ninterval = \"10m\"\n");
        w("usr/lib/hostctl/agent.d/10-fleet.toml", "strategy = \"fleet_lock\"\n[fleet_lock]\nurl = \"http://a:1\"\n");
        w("usr/lib/hostctl/agent.d/20-group.toml", "[fleet_lock]\ngroup = \"vendor\"\n");
        w("etc/hostctl/agent.d/20-group.toml", "[fleet_lock]\ngroup = \"local\"\n");
        w("etc/hostctl/agent.d/30-url.toml", "[fleet_lock]\nurl = \"http://b:2\"\n");
        w("etc/hostctl/agent.d/README", "not toml, not read");
        let c = load(dir.path()).unwrap();
        assert_eq!(c.strategy, Strategy::FleetLock { url: "http://b:2".into(), group: "local".into() });
        assert_eq!(c.lock_tls, ClientTls::default());
        assert_eq!(c.interval, 600);
        let names: Vec<_> = c.files.iter().map(|f| f.strip_prefix(dir.path()).unwrap().display().to_string()).collect();
        assert_eq!(
            names,
            [
                MAIN_FILE,
                "usr/lib/hostctl/agent.d/10-fleet.toml",
                "etc/hostctl/agent.d/20-group.toml",
                "etc/hostctl/agent.d/30-url.toml"
            ]
        );
    }

    #[test]
    fn tls_files_for_the_lock_server_merge_across_files() {
        let c = parse(&[
            (
                PathBuf::from("/etc/hostctl/agent.toml"),
                "strategy = \"fleet_lock\"\n[fleet_lock]\nurl = \"https://l:8443\"\nca = \"/etc/ca.pem\"\n".into(),
            ),
            (
                PathBuf::from("/etc/hostctl/agent.d/50-cert.toml"),
                "[fleet_lock]\nclient_cert = \"/etc/h.pem\"\nclient_key = \"/etc/h.key\"\n".into(),
            ),
        ])
        .unwrap();
        let want = ClientTls {
            ca: Some("/etc/ca.pem".into()),
            cert: Some("/etc/h.pem".into()),
            key: Some("/etc/h.key".into()),
        };
        assert_eq!(c.lock_tls, want);
    }

    /// Malformed files: each error names the file, the line and the fault.
    #[test]
    fn malformed_agent_toml_names_file_and_line() {
        for (text, line, why) in [
            ("strategy = \"immediate\"\nstrateg = \"periodic\"\n", 2, "unknown field `strateg`"),
            ("strategy = \"weekly\"\n", 1, "unknown variant `weekly`"),
            ("interval = \"5x\"\n", 1, "no unit"),
            ("interval = \"0\"\n", 1, "longer than 0"),
            ("\n\n[fleet_lock]\nurl = \"ftp://x\"\n", 4, "not an http:// or https:// URL"),
            ("[fleet_lock]\nurl = \"http://x:1\"\ngroups = \"a\"\n", 3, "unknown field `groups`"),
            ("[periodic]\ntime_zone = \"Mars/Olympus\"\n", 2, "Mars/Olympus"),
            ("[[periodic.reboot]]\ndays = [\"Someday\"]\nstart = \"03:00\"\nlength = \"1h\"\n", 2, "Someday"),
            ("[[periodic.reboot]]\ndays = [\"Sat\"]\nstart = \"25:00\"\nlength = \"1h\"\n", 3, "25:00"),
            ("[[periodic.reboot]]\ndays = [\"Sat\"]\nstart = \"03:00\"\nlength = \"8d\"\n", 4, "at most 7 days"),
            ("[[periodic.reboot]]\ndays = [\"Sat\"]\nstart = \"03:00\"\n", 1, "missing field `length`"),
            ("require_release = \"yes\"\n", 1, "invalid type"),
            ("strategy = \n", 1, ""),
        ] {
            let err = format!("{:#}", one(text).unwrap_err());
            assert!(err.starts_with(&format!("/etc/hostctl/agent.toml:{line}: ")), "{text:?}: {err}");
            assert!(err.contains(why), "{text:?}: {err}");
        }
        // Settings that only make sense together name the file that chose the strategy.
        let err = one("strategy = \"fleet_lock\"\n").unwrap_err().to_string();
        assert!(err.contains("/etc/hostctl/agent.toml: strategy \"fleet_lock\" needs [fleet_lock] url"), "{err}");
        let err = one("[fleet_lock]\nurl = \"https://x:1\"\nclient_cert = \"/h.pem\"\n").unwrap_err().to_string();
        assert!(err.contains("agent.toml: [fleet_lock] client_cert and client_key go together"), "{err}");
        let err = format!("{:#}", one("[fleet_lock]\nca = \"ca.pem\"\n").unwrap_err());
        assert!(err.contains("agent.toml:2: ca.pem is not an absolute path"), "{err}");
        let err = one("strategy = \"periodic\"\n").unwrap_err().to_string();
        assert!(err.contains("needs at least one [[periodic.reboot]] window"), "{err}");
    }
}
