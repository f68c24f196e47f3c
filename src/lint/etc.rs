//! Checks of `/etc`: what the three-way merge (src/deploy/etc_merge.rs) can
//! carry from deployment to deployment, and the users, groups and owners
//! whose numeric ids could differ between two builds of an image.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::root::show;
use super::{Check, Findings, Level, Root};

/// This group's checks.
pub const CHECKS: &[Check] = &[
    Check {
        name: "etc-merge",
        level: Level::Error,
        explanation:
            "/etc is a directory the three-way /etc merge can read (its scan of types, content, owners, xattrs)",
        run: etc_merge,
    },
    Check {
        name: "etc-hardlinks",
        level: Level::Warning,
        explanation: "no hard links between files in /etc: the merge writes real copies, so linked files come apart",
        run: etc_hardlinks,
    },
    Check {
        name: "buildah-injected",
        level: Level::Warning,
        explanation: "no empty /etc/hostname or /etc/resolv.conf, as a container build can leave behind",
        run: buildah_injected,
    },
    Check {
        name: "sysusers",
        level: Level::Warning,
        explanation:
            "users and groups with ids from 100 up are declared in sysusers.d (a host's edited /etc/passwd wins)",
        run: sysusers,
    },
    Check {
        name: "etc-uid-drift",
        level: Level::Warning,
        explanation: "/etc entries owned by ids from 100 up are pinned in sysusers.d or chowned by tmpfiles.d z/Z",
        run: etc_uid_drift,
    },
];

fn etc_merge(root: &Root) -> Findings {
    match root.lstat("etc")? {
        None => Ok(Vec::new()),
        Some(m) if !m.is_dir() => {
            Ok(vec!["/etc is not a directory: hostctl moves /etc to /usr/etc and merges it as a tree".into()])
        }
        Some(_) => Ok(match crate::deploy::etc_merge::scan(&root.path("etc")) {
            Ok(_) => Vec::new(),
            Err(e) => vec![format!("{e:#}")],
        }),
    }
}

fn etc_hardlinks(root: &Root) -> Findings {
    if root.lstat("etc")?.is_none() {
        return Ok(Vec::new());
    }
    let mut by_inode: BTreeMap<(u64, u64), Vec<&Path>> = BTreeMap::new();
    for e in root.entries_under("etc")? {
        if e.meta.is_file() && e.meta.nlink() > 1 {
            by_inode.entry((e.meta.dev(), e.meta.ino())).or_default().push(&e.path);
        }
    }
    Ok(by_inode
        .into_values()
        .filter(|paths| paths.len() > 1)
        .map(|paths| format!("{} are one file", paths.iter().map(|p| show(p)).collect::<Vec<_>>().join(", ")))
        .collect())
}

fn buildah_injected(root: &Root) -> Findings {
    let mut out = Vec::new();
    for f in ["etc/hostname", "etc/resolv.conf"] {
        // Mounted (as during a build's RUN): not part of the image.
        if let Some(m) = root.lstat(f)? {
            if m.is_file() && m.len() == 0 {
                out.push(format!("/{f} is empty: a container build may have made it; remove it or give it content"));
            }
        }
    }
    Ok(out)
}

/// Ids below 100 are Debian's static ones (base-passwd), the same in every
/// image; 65534 is nobody/nogroup. Other ids are allocated at install time
/// and may differ between two builds.
fn is_dynamic(id: u32) -> bool {
    (100..65534).contains(&id) || id > 65534
}

/// What sysusers.d declares: user and group names, and ids given as numbers.
#[derive(Default)]
struct Sysusers {
    users: BTreeSet<String>,
    groups: BTreeSet<String>,
    uids: BTreeSet<u32>,
    gids: BTreeSet<u32>,
}

fn read_sysusers(root: &Root) -> anyhow::Result<Sysusers> {
    let mut s = Sysusers::default();
    for dir in ["usr/lib/sysusers.d", "etc/sysusers.d"] {
        for text in conf_files(root, dir)? {
            for line in text.lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                let (Some(ty), Some(name)) = (f.first(), f.get(1)) else { continue };
                let id = f.get(2).copied().unwrap_or("-");
                let (uid, gid) = id.split_once(':').unwrap_or((id, id));
                match *ty {
                    "u" | "u!" => {
                        s.users.insert(name.to_string());
                        s.groups.insert(name.to_string());
                        s.uids.extend(uid.parse::<u32>().ok());
                        s.gids.extend(gid.parse::<u32>().ok());
                    }
                    "g" => {
                        s.groups.insert(name.to_string());
                        s.gids.extend(id.parse::<u32>().ok());
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(s)
}

/// The text of every `*.conf` in `dir` (relative), in name order.
fn conf_files(root: &Root, dir: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    if root.lstat(dir)?.is_none() {
        return Ok(out);
    }
    for e in root.entries_under(dir)? {
        if e.path.parent() == Some(Path::new(dir)) && e.path.extension().is_some_and(|x| x == "conf") {
            // Through symlinks (to /dev/null for a masked file: empty).
            out.push(std::fs::read_to_string(root.dir().join(&e.path)).unwrap_or_default());
        }
    }
    Ok(out)
}

/// (name, id) of each line of a passwd or group file.
fn id_entries(root: &Root, file: &str) -> anyhow::Result<Vec<(String, u32)>> {
    let Some(m) = root.lstat(file)? else { return Ok(Vec::new()) };
    if !m.is_file() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(root.path(file))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((f.first()?.to_string(), f.get(2)?.parse().ok()?))
        })
        .collect())
}

fn sysusers(root: &Root) -> Findings {
    let s = read_sysusers(root)?;
    let mut out = Vec::new();
    for (name, uid) in id_entries(root, "etc/passwd")? {
        if is_dynamic(uid) && !s.users.contains(&name) {
            out.push(format!("user {name} ({uid}) in /etc/passwd has no sysusers.d entry"));
        }
    }
    for (name, gid) in id_entries(root, "etc/group")? {
        if is_dynamic(gid) && !s.groups.contains(&name) {
            out.push(format!("group {name} ({gid}) in /etc/group has no sysusers.d entry"));
        }
    }
    Ok(out)
}

/// Paths tmpfiles.d chowns at boot: `z` lines (the path) and `Z` (recursive).
fn tmpfiles_chowned(root: &Root) -> anyhow::Result<(BTreeSet<PathBuf>, BTreeSet<PathBuf>)> {
    let (mut exact, mut recursive) = (BTreeSet::new(), BTreeSet::new());
    for dir in ["usr/lib/tmpfiles.d", "etc/tmpfiles.d"] {
        for text in conf_files(root, dir)? {
            for line in text.lines() {
                let f: Vec<&str> = line.split_whitespace().collect();
                let (Some(ty), Some(path)) = (f.first(), f.get(1)) else { continue };
                let path = PathBuf::from(path.trim_start_matches('/'));
                if ty.starts_with('z') {
                    exact.insert(path);
                } else if ty.starts_with('Z') {
                    recursive.insert(path);
                }
            }
        }
    }
    Ok((exact, recursive))
}

fn etc_uid_drift(root: &Root) -> Findings {
    if root.lstat("etc")?.is_none() {
        return Ok(Vec::new());
    }
    let s = read_sysusers(root)?;
    let (exact, recursive) = tmpfiles_chowned(root)?;
    let mut out = Vec::new();
    for e in root.entries_under("etc")? {
        if e.meta.file_type().is_symlink() {
            continue;
        }
        let (uid, gid) = (e.meta.uid(), e.meta.gid());
        let drifts = (is_dynamic(uid) && !s.uids.contains(&uid)) || (is_dynamic(gid) && !s.gids.contains(&gid));
        if drifts && !exact.contains(&e.path) && !recursive.iter().any(|r| e.path.starts_with(r)) {
            out.push(format!("{} (owner {uid}:{gid})", show(&e.path)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::super::testroot::{good, root, write};
    use super::*;

    #[test]
    fn etc_must_be_a_directory_the_merge_can_scan() {
        let t = good();
        assert!(etc_merge(&root(t.path())).unwrap().is_empty());
        std::fs::remove_dir_all(t.path().join("etc")).unwrap();
        symlink("usr/etc", t.path().join("etc")).unwrap();
        assert!(etc_merge(&root(t.path())).unwrap()[0].contains("not a directory"));
    }

    #[test]
    fn hard_links_in_etc_are_listed() {
        let t = good();
        write(t.path(), "etc/a", "same");
        std::fs::hard_link(t.path().join("etc/a"), t.path().join("etc/b")).unwrap();
        assert_eq!(etc_hardlinks(&root(t.path())).unwrap(), ["/etc/a, /etc/b are one file"]);
    }

    #[test]
    fn empty_hostname_and_resolv_conf_are_flagged_unless_mounted() {
        let t = good();
        write(t.path(), "etc/hostname", "");
        write(t.path(), "etc/resolv.conf", "");
        assert_eq!(buildah_injected(&root(t.path())).unwrap().len(), 2);
        let mounted = Root::with_mounts(t.path(), vec!["etc/hostname".into(), "etc/resolv.conf".into()]);
        assert!(buildah_injected(&mounted).unwrap().is_empty());
    }

    #[test]
    fn dynamic_users_need_sysusers_entries() {
        let t = good();
        write(
            t.path(),
            "etc/passwd",
            "root:x:0:0::/root:/bin/sh\n_apt:x:42:65534::/:/x\nsystemd-network:x:998:998::/:/x\nmyapp:x:500:500::/:/x\n",
        );
        write(t.path(), "etc/group", "root:x:0:\nusers:x:100:\nsystemd-network:x:998:\nmyapp:x:500:\n");
        write(t.path(), "usr/lib/sysusers.d/systemd-network.conf", "u systemd-network 998 \"Network\"\n");
        write(t.path(), "usr/lib/sysusers.d/basic.conf", "# comment\ng users 100\n");
        assert_eq!(
            sysusers(&root(t.path())).unwrap(),
            [
                "user myapp (500) in /etc/passwd has no sysusers.d entry",
                "group myapp (500) in /etc/group has no sysusers.d entry"
            ]
        );
    }

    #[test]
    fn etc_owned_by_dynamic_ids_needs_a_pin_or_a_chown() {
        let t = good();
        write(t.path(), "etc/app/conf", "x");
        write(t.path(), "etc/pinned", "x");
        write(t.path(), "etc/chowned/a", "x");
        write(t.path(), "etc/static", "x");
        let own = |p: &str, id: u32| std::os::unix::fs::lchown(t.path().join(p), Some(id), Some(id)).unwrap();
        own("etc/app/conf", 500);
        own("etc/pinned", 998);
        own("etc/chowned", 501);
        own("etc/chowned/a", 501);
        own("etc/static", 42);
        write(t.path(), "usr/lib/sysusers.d/net.conf", "u systemd-network 998:998\n");
        write(t.path(), "usr/lib/tmpfiles.d/app.conf", "Z /etc/chowned - app app -\n");
        assert_eq!(etc_uid_drift(&root(t.path())).unwrap(), ["/etc/app/conf (owner 500:500)"]);
    }
}
