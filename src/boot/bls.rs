//! Boot Loader Specification type 1 entries in `<boot>/loader/entries/`.
//!
//! hostctl names its entries `hostctl-<stateroot>-<priority>-<deployment id>.conf`.
//! It writes no `sort-key` or `version`, so systemd-boot orders them by file
//! name in descending version order: the entry with the highest priority is the
//! default and the next one is the fallback. Entries are never edited in
//! place: a new set gets priorities above every existing one and is written
//! default-first (each file atomically), then the old files are removed. A
//! crash at any instant therefore leaves a default that is either the old one
//! or the new one, never a half-written file, and the next run rewrites the set
//! from `state.json`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::fsutil;

/// `<boot>/loader/entries`.
pub fn entries_dir(boot: &Path) -> PathBuf {
    boot.join("loader/entries")
}

/// One BLS type 1 entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlsEntry {
    /// The entry's line in the boot menu.
    pub title: String,
    /// Path of the kernel relative to the boot directory, starting with `/`.
    pub linux: String,
    /// Path of the initramfs relative to the boot directory, starting with `/`; `None`: no `initrd` line.
    pub initrd: Option<String>,
    /// The kernel command line.
    pub options: String,
}

impl BlsEntry {
    /// The entry file's text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "title {}", self.title);
        let _ = writeln!(s, "linux {}", self.linux);
        if let Some(i) = &self.initrd {
            let _ = writeln!(s, "initrd {i}");
        }
        let _ = writeln!(s, "options {}", self.options);
        s
    }

    /// Parses an entry file (unknown keys and comments are ignored).
    pub fn parse(text: &str) -> Result<BlsEntry> {
        let (mut title, mut linux, mut initrd, mut options) = (None, None, None, None);
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let v = v.trim().to_string();
            match k {
                "title" => title = Some(v),
                "linux" => linux = Some(v),
                "initrd" => initrd = Some(v),
                "options" => options = Some(v),
                _ => {}
            }
        }
        Ok(BlsEntry {
            title: title.unwrap_or_default(),
            linux: linux.context("boot entry has no `linux` line")?,
            initrd,
            options: options.unwrap_or_default(),
        })
    }

    /// The value of kernel argument `key` (`hostctl`, `root`) in `options`.
    pub fn karg(&self, key: &str) -> Option<&str> {
        karg(&self.options, key)
    }
}

/// The value of `key=` in a kernel command line (the last one wins, as in the kernel).
pub fn karg<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline.split_whitespace().rev().find_map(|a| a.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
}

/// A hostctl entry file name, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryName {
    /// The stateroot the deployment belongs to.
    pub stateroot: String,
    /// Higher sorts first: the highest is the default, the next the fallback.
    pub priority: u64,
    /// The deployment's id.
    pub deployment: String,
}

impl EntryName {
    /// The entry's file name under `loader/entries/`.
    pub fn file_name(&self) -> String {
        format!("hostctl-{}-{}-{}.conf", self.stateroot, self.priority, self.deployment)
    }

    /// Parses `hostctl-<stateroot>-<priority>-<id>.conf` (a `+tries` counter suffix is allowed).
    /// Stateroot names may not contain `-` followed by digits and `-`; hostctl's own never do.
    pub fn parse(name: &str) -> Option<EntryName> {
        let rest = name.strip_prefix("hostctl-")?.strip_suffix(".conf")?;
        let rest = rest.split_once('+').map(|(a, _)| a).unwrap_or(rest);
        // <stateroot>-<priority>-<id>; the id has no `-`, so split from the right.
        let (head, id) = rest.rsplit_once('-')?;
        let (stateroot, prio) = head.rsplit_once('-')?;
        if stateroot.is_empty() || id.is_empty() {
            return None;
        }
        Some(EntryName { stateroot: stateroot.into(), priority: prio.parse().ok()?, deployment: id.into() })
    }
}

/// hostctl's entries for `stateroot` in `dir`, highest priority (the default) first.
pub fn list(dir: &Path, stateroot: &str) -> Result<Vec<(EntryName, PathBuf)>> {
    let mut out = Vec::new();
    for e in crate::fsutil::read_dir_if_present(dir)? {
        if let Some(n) = EntryName::parse(&e.file_name().to_string_lossy()) {
            if n.stateroot == stateroot {
                out.push((n, e.path()));
            }
        }
    }
    sort_default_first(&mut out);
    Ok(out)
}

/// Orders entries as the boot menu shows them: highest priority first.
pub fn sort_default_first<T>(entries: &mut [(EntryName, T)]) {
    entries.sort_by(|a, b| b.0.priority.cmp(&a.0.priority).then_with(|| b.0.deployment.cmp(&a.0.deployment)));
}

/// Replaces hostctl's entries for `stateroot` with `desired` (boot order,
/// default first; each with its deployment id). Does nothing when the
/// directory already holds exactly this set in this order.
pub fn sync(dir: &Path, stateroot: &str, desired: &[(String, BlsEntry)]) -> Result<()> {
    sync_counted(dir, stateroot, desired, None)
}

/// [`sync`] with boot counting (see [`crate::boot::counting`]): an entry
/// written for a deployment that has none yet gets the counter `+tries` when
/// `new_tries` is set; an existing entry keeps its counter suffix (or its
/// absence: a blessed deployment stays blessed) when it is rewritten.
pub fn sync_counted(dir: &Path, stateroot: &str, desired: &[(String, BlsEntry)], new_tries: Option<u32>) -> Result<()> {
    if stateroot.is_empty() || stateroot.contains(['-', '/']) {
        bail!("invalid stateroot name {stateroot:?}");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fsutil::remove_tmp_leftovers(dir)?;
    let existing = list(dir, stateroot)?;
    if existing.len() == desired.len() {
        let mut same = true;
        for ((name, path), (id, entry)) in existing.iter().zip(desired) {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if &name.deployment != id || text != entry.render() {
                same = false;
                break;
            }
        }
        if same {
            return Ok(());
        }
    }
    let base = existing.iter().map(|(n, _)| n.priority).max().unwrap_or(0);
    let n = desired.len() as u64;
    // Default first: from the first write on, the default is the new one (or
    // still the old one), and every old entry stays bootable until the new set is complete.
    for (i, (id, entry)) in desired.iter().enumerate() {
        let name = EntryName { stateroot: stateroot.into(), priority: base + n - i as u64, deployment: id.clone() };
        let suffix = match existing.iter().find(|(n, _)| &n.deployment == id) {
            Some((_, path)) => {
                crate::boot::counting::suffix_of(&path.file_name().unwrap_or_default().to_string_lossy())
            }
            None => new_tries.map(|t| format!("+{t}")).unwrap_or_default(),
        };
        let file = name.file_name().replace(".conf", &format!("{suffix}.conf"));
        fsutil::write_atomic(&dir.join(file), entry.render().as_bytes())?;
    }
    for (_, path) in existing {
        std::fs::remove_file(&path).with_context(|| format!("removing old boot entry {}", path.display()))?;
    }
    fsutil::sync_dir(dir)
}

/// The deployment id of the default (highest-priority) entry, if any.
pub fn default_deployment(dir: &Path, stateroot: &str) -> Result<Option<String>> {
    Ok(list(dir, stateroot)?.into_iter().next().map(|(n, _)| n.deployment))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> BlsEntry {
        BlsEntry {
            title: format!("OS {id}"),
            linux: "/hostctl/default/abc/vmlinuz".into(),
            initrd: Some("/hostctl/default/abc/initramfs.img".into()),
            options: format!("root=LABEL=r rw hostctl=/hostctl/deploy/default/{id} quiet"),
        }
    }

    #[test]
    fn entry_round_trips_and_reads_kargs() {
        let e = entry("aaa.1");
        let parsed = BlsEntry::parse(&e.render()).unwrap();
        assert_eq!(parsed, e);
        assert_eq!(parsed.karg("hostctl"), Some("/hostctl/deploy/default/aaa.1"));
        assert_eq!(parsed.karg("root"), Some("LABEL=r"));
        assert_eq!(parsed.karg("ro"), None);
        assert_eq!(karg("a=1 b=2 a=3", "a"), Some("3"));
        assert!(BlsEntry::parse("title x\n").is_err());
    }

    #[test]
    fn entry_names_table() {
        let cases = [
            ("hostctl-default-3-abc.1.conf", Some(("default", 3, "abc.1"))),
            ("hostctl-default-3-abc.1+3.conf", Some(("default", 3, "abc.1"))),
            ("hostctl-default-x-abc.1.conf", None),
            ("hostctl-default-3.conf", None),
            ("other-default-3-abc.conf", None),
            ("hostctl-default-3-abc.1.conf.bak", None),
        ];
        for (name, want) in cases {
            let got = EntryName::parse(name).map(|n| (n.stateroot, n.priority, n.deployment));
            assert_eq!(got, want.map(|(s, p, d): (&str, u64, &str)| (s.to_string(), p, d.to_string())), "{name}");
        }
        let n = EntryName { stateroot: "default".into(), priority: 12, deployment: "f00.2".into() };
        assert_eq!(EntryName::parse(&n.file_name()), Some(n));
    }

    #[test]
    fn sync_orders_replaces_and_is_idempotent() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        sync(dir, "default", &[("a.1".into(), entry("a.1"))]).unwrap();
        assert_eq!(default_deployment(dir, "default").unwrap().as_deref(), Some("a.1"));
        sync(dir, "default", &[("b.2".into(), entry("b.2")), ("a.1".into(), entry("a.1"))]).unwrap();
        let l: Vec<_> = list(dir, "default").unwrap().into_iter().map(|(n, _)| n.deployment).collect();
        assert_eq!(l, ["b.2", "a.1"]);
        let before: Vec<_> = list(dir, "default").unwrap().into_iter().map(|(n, _)| n.file_name()).collect();
        sync(dir, "default", &[("b.2".into(), entry("b.2")), ("a.1".into(), entry("a.1"))]).unwrap();
        let after: Vec<_> = list(dir, "default").unwrap().into_iter().map(|(n, _)| n.file_name()).collect();
        assert_eq!(before, after, "an unchanged set is not rewritten");
        // Rollback: swap.
        sync(dir, "default", &[("a.1".into(), entry("a.1")), ("b.2".into(), entry("b.2"))]).unwrap();
        let l: Vec<_> = list(dir, "default").unwrap().into_iter().map(|(n, _)| n.deployment).collect();
        assert_eq!(l, ["a.1", "b.2"]);
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 2, "old files removed, no temp files");
        // Other stateroots and foreign entries are left alone.
        std::fs::write(dir.join("hostctl-other-1-z.1.conf"), entry("z.1").render()).unwrap();
        std::fs::write(dir.join("fedora.conf"), "title f\nlinux /x\n").unwrap();
        sync(dir, "default", &[]).unwrap();
        assert!(list(dir, "default").unwrap().is_empty());
        assert_eq!(std::fs::read_dir(dir).unwrap().count(), 2);
        assert!(sync(dir, "bad-name", &[]).is_err());
    }

    #[test]
    fn crash_between_writes_keeps_a_bootable_default() {
        // Simulate a crash after the first new file of a rollback was written:
        // the new default exists and the old entries are still there.
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        sync(dir, "default", &[("b.2".into(), entry("b.2")), ("a.1".into(), entry("a.1"))]).unwrap();
        let crashed = EntryName { stateroot: "default".into(), priority: 4, deployment: "a.1".into() };
        std::fs::write(dir.join(crashed.file_name()), entry("a.1").render()).unwrap();
        assert_eq!(default_deployment(dir, "default").unwrap().as_deref(), Some("a.1"));
        // The next run rewrites the set cleanly.
        sync(dir, "default", &[("a.1".into(), entry("a.1")), ("b.2".into(), entry("b.2"))]).unwrap();
        let l: Vec<_> = list(dir, "default").unwrap().into_iter().map(|(n, _)| n.deployment).collect();
        assert_eq!(l, ["a.1", "b.2"]);
    }
}
