//! A new app's units loaded without `systemctl daemon-reload`.
//!
//! A daemon-reload re-runs every generator and reloads every unit: the
//! slowest step of `app install` (5 s of 19 under TCG in the VM benchmark).
//! A new app only needs the units Quadlet makes of its files, so hostctl runs
//! Quadlet's generator itself, as systemd does (same path, same directories,
//! so the same bytes), into a scratch directory, and moves what is new into
//! systemd's generator directory (`/run/systemd/generator`). systemd loads a
//! unit it has not loaded yet from disk when it is first asked for, and it
//! loads again one that it found missing before, once its unit directories
//! changed on disk: their modification times are what it checks, and it
//! leaves its generator directories out of that check (seen in the VM,
//! systemd 257: the start found no unit), so hostctl then touches one it
//! does check ([`crate::host::units::Units::unit_dirs_changed`]). The next
//! real daemon-reload regenerates the same files.
//!
//! Only additions go this way. When anything the generator makes differs
//! from what is in systemd's generator directory already (an app file edited
//! since the last reload, a unit left from an app removed without one), or
//! the generator is not there, [`load_new_units`] says why and the caller
//! reloads systemd instead.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::Apps;

/// One thing the generator made that systemd's generator directory lacks
/// (paths relative to both).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A directory (`multi-user.target.wants`).
    Dir(PathBuf),
    /// A unit file, or a symbolic link (`NAME.service` in a `.wants`).
    File(PathBuf),
}

/// What a generator run adds to systemd's generator directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// These entries are new; everything else is there already, byte for byte.
    Add(Vec<Entry>),
    /// Something is there already and differs: only a daemon-reload may replace it.
    Reload(String),
}

/// Compares the generator's output `new` with systemd's generator
/// directory `live`.
pub fn plan(new: &Path, live: &Path) -> Result<Plan> {
    let mut add = Vec::new();
    if let Some(why) = walk(new, live, Path::new(""), &mut add)? {
        return Ok(Plan::Reload(why));
    }
    Ok(Plan::Add(add))
}

fn walk(new: &Path, live: &Path, rel: &Path, add: &mut Vec<Entry>) -> Result<Option<String>> {
    let dir = new.join(rel);
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let rel = rel.join(entry.file_name());
        let (made, there) = (new.join(&rel), live.join(&rel));
        let kind = entry.file_type()?;
        let existing = match std::fs::symlink_metadata(&there) {
            Ok(m) => Some(m.file_type()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", there.display())),
        };
        let same = match existing {
            None if kind.is_dir() => {
                add.push(Entry::Dir(rel.clone()));
                if let Some(why) = walk(new, live, &rel, add)? {
                    return Ok(Some(why));
                }
                continue;
            }
            None => {
                add.push(Entry::File(rel));
                continue;
            }
            Some(e) if kind.is_dir() && e.is_dir() => {
                if let Some(why) = walk(new, live, &rel, add)? {
                    return Ok(Some(why));
                }
                continue;
            }
            Some(e) if kind.is_symlink() && e.is_symlink() => std::fs::read_link(&made)? == std::fs::read_link(&there)?,
            Some(e) if kind.is_file() && e.is_file() => std::fs::read(&made)? == std::fs::read(&there)?,
            Some(_) => false,
        };
        if !same {
            return Ok(Some(format!("{} differs from what the generator makes now", there.display())));
        }
    }
    Ok(None)
}

/// Moves the `add` entries from `new` into `live` (renamed when both are on
/// one filesystem, else copied), directories first, files in the order given.
pub fn apply(new: &Path, live: &Path, add: &[Entry]) -> Result<()> {
    for entry in add {
        match entry {
            Entry::Dir(rel) => {
                let there = live.join(rel);
                std::fs::create_dir(&there).with_context(|| format!("creating {}", there.display()))?;
            }
            Entry::File(rel) => {
                let (made, there) = (new.join(rel), live.join(rel));
                if std::fs::rename(&made, &there).is_err() {
                    copy(&made, &there).with_context(|| format!("writing {}", there.display()))?;
                }
            }
        }
    }
    Ok(())
}

fn copy(from: &Path, to: &Path) -> std::io::Result<()> {
    if std::fs::symlink_metadata(from)?.file_type().is_symlink() {
        return std::os::unix::fs::symlink(std::fs::read_link(from)?, to);
    }
    std::fs::copy(from, to).map(drop)
}

/// Makes systemd able to start `service`, the unit of a newly written app,
/// without a daemon-reload. `Ok(None)`: done; `Ok(Some(why))`: not done, and
/// why a daemon-reload is needed instead (nothing was changed then).
pub fn load_new_units(apps: &Apps, service: &str) -> Result<Option<String>> {
    let Some(live) = apps.units.generator_dir() else {
        return Ok(Some("systemd's generator directory is not there".into()));
    };
    // The scratch directory beside it, so that its files move in by rename.
    let parent = live.parent().unwrap_or(Path::new("/run"));
    let scratch = tempfile::Builder::new()
        .prefix(".hostctl-quadlet-")
        .tempdir_in(parent)
        .with_context(|| format!("creating a scratch directory in {}", parent.display()))?;
    if !apps.podman.quadlet_generate(&apps.units_dir(), scratch.path())? {
        return Ok(Some("podman's Quadlet generator is not in systemd's generator directory".into()));
    }
    if !scratch.path().join(service).is_file() {
        return Ok(Some(format!("the Quadlet generator made no {service}")));
    }
    match plan(scratch.path(), &live)? {
        Plan::Reload(why) => Ok(Some(why)),
        Plan::Add(add) => {
            apply(scratch.path(), &live, &add)?;
            apps.units.unit_dirs_changed()?;
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree(root: &Path, files: &[(&str, &str)], links: &[(&str, &str)]) {
        for (path, text) in files {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        for (path, target) in links {
            let p = root.join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            symlink(target, p).unwrap();
        }
    }

    #[test]
    fn only_what_is_new_is_added_and_it_arrives_byte_for_byte() {
        let (new, live) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        tree(
            new.path(),
            &[("web.service", "web\n"), ("db.service", "db\n")],
            &[
                ("multi-user.target.wants/web.service", "../web.service"),
                ("multi-user.target.wants/db.service", "../db.service"),
            ],
        );
        tree(
            live.path(),
            &[("db.service", "db\n"), ("other-generator.service", "x\n")],
            &[("multi-user.target.wants/db.service", "../db.service")],
        );
        let Plan::Add(add) = plan(new.path(), live.path()).unwrap() else { panic!("expected additions") };
        assert_eq!(add, [Entry::File("multi-user.target.wants/web.service".into()), Entry::File("web.service".into())]);
        apply(new.path(), live.path(), &add).unwrap();
        assert_eq!(std::fs::read_to_string(live.path().join("web.service")).unwrap(), "web\n");
        assert_eq!(
            std::fs::read_link(live.path().join("multi-user.target.wants/web.service")).unwrap(),
            Path::new("../web.service")
        );
        assert_eq!(std::fs::read_to_string(live.path().join("other-generator.service")).unwrap(), "x\n");
        // Nothing new now.
        assert_eq!(plan(new.path(), live.path()).unwrap(), Plan::Add(vec![]));
    }

    #[test]
    fn a_missing_directory_is_made_before_what_goes_in_it() {
        let (new, live) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        tree(new.path(), &[("web.service", "web\n")], &[("multi-user.target.wants/web.service", "../web.service")]);
        let Plan::Add(add) = plan(new.path(), live.path()).unwrap() else { panic!("expected additions") };
        assert_eq!(
            add,
            [
                Entry::Dir("multi-user.target.wants".into()),
                Entry::File("multi-user.target.wants/web.service".into()),
                Entry::File("web.service".into())
            ]
        );
        apply(new.path(), live.path(), &add).unwrap();
        assert!(live.path().join("multi-user.target.wants/web.service").is_file());
    }

    /// A unit file left from an app removed without a reload, or one whose
    /// `.container` was edited since: only a daemon-reload may replace it.
    #[test]
    fn anything_that_differs_calls_for_a_reload_and_nothing_is_changed() {
        let (new, live) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        tree(new.path(), &[("web.service", "web v2\n"), ("a.service", "a\n")], &[]);
        tree(live.path(), &[("web.service", "web v1\n")], &[]);
        let Plan::Reload(why) = plan(new.path(), live.path()).unwrap() else { panic!("expected a reload") };
        assert!(why.contains("web.service differs"), "{why}");
        // A link that points elsewhere, or a file where a link was, too.
        let (new, live) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        tree(new.path(), &[], &[("t.wants/web.service", "../web.service")]);
        tree(live.path(), &[], &[("t.wants/web.service", "../old.service")]);
        assert!(matches!(plan(new.path(), live.path()).unwrap(), Plan::Reload(_)));
        let live2 = tempfile::tempdir().unwrap();
        tree(live2.path(), &[("t.wants/web.service", "x")], &[]);
        assert!(matches!(plan(new.path(), live2.path()).unwrap(), Plan::Reload(_)));
    }
}
