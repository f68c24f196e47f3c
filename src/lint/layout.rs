//! Checks of the root's layout: the directories hostctl and systemd mount
//! over, and content in `/run`, `/tmp` and `/var`, which a deployment does
//! not carry the way it carries `/usr`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::root::show;
use super::{Check, Findings, Level, Root};

/// This group's checks.
pub const CHECKS: &[Check] = &[
    Check {
        name: "api-base-directories",
        level: Level::Error,
        explanation: "/dev, /proc, /sys, /run, /tmp and /var exist as directories (systemd's API file systems)",
        run: api_dirs,
    },
    Check {
        name: "sysroot",
        level: Level::Error,
        explanation: "/sysroot is an empty directory and /hostctl is absent: the boot mounts and links them",
        run: sysroot,
    },
    Check {
        name: "var-run",
        level: Level::Error,
        explanation: "/var/run, if present, is a symlink (to /run), not a directory",
        run: var_run,
    },
    Check {
        name: "etc-usretc",
        level: Level::Error,
        explanation: "not both /etc and /usr/etc: hostctl moves /etc to /usr/etc and refuses an image that has both",
        run: etc_usretc,
    },
    Check {
        name: "run-tmp",
        level: Level::Warning,
        explanation: "no files in /run or /tmp: tmpfs is mounted over both at boot, hiding them",
        run: run_tmp,
    },
    Check {
        name: "var-content",
        level: Level::Warning,
        explanation:
            "files in /var are copied only when a stateroot's /var is first made, never updated: use tmpfiles.d",
        run: var_content,
    },
    Check {
        name: "var-log",
        level: Level::Warning,
        explanation: "no non-empty log files in /var/log: build logs are per-build state, not image content",
        run: var_log,
    },
];

/// The API file systems (systemd.io/API_FILE_SYSTEMS) plus /var, as bootc lists them.
const API_DIRS: &[&str] = &["dev", "proc", "sys", "run", "tmp", "var"];

fn api_dirs(root: &Root) -> Findings {
    let mut out = Vec::new();
    for d in API_DIRS {
        match root.lstat(d)? {
            None => out.push(format!("/{d} is missing")),
            Some(m) if !m.is_dir() => out.push(format!("/{d} is not a directory")),
            Some(_) => {}
        }
    }
    Ok(out)
}

fn sysroot(root: &Root) -> Findings {
    let mut out = Vec::new();
    match root.lstat("sysroot")? {
        None => out.push("/sysroot is missing: the physical root is mounted there at boot".into()),
        Some(m) if !m.is_dir() => out.push("/sysroot is not a directory".into()),
        Some(_) => out.extend(
            root.entries_under("sysroot")?
                .filter(|e| e.path.parent() == Some(Path::new("sysroot")))
                .map(|e| format!("{}: /sysroot is hidden by the physical root at boot", show(&e.path))),
        ),
    }
    if root.lstat("hostctl")?.is_some() {
        out.push("/hostctl exists: it is made at boot as a symlink to sysroot/hostctl".into());
    }
    Ok(out)
}

fn var_run(root: &Root) -> Findings {
    Ok(match root.lstat("var/run")? {
        Some(m) if !m.file_type().is_symlink() => vec!["/var/run is not a symlink (make it one to /run)".into()],
        _ => Vec::new(),
    })
}

fn etc_usretc(root: &Root) -> Findings {
    Ok(if root.lstat("etc")?.is_some() && root.lstat("usr/etc")?.is_some() {
        vec!["both /etc and /usr/etc exist: put configuration defaults in /etc only".into()]
    } else {
        Vec::new()
    })
}

fn run_tmp(root: &Root) -> Findings {
    let mut out = Vec::new();
    for top in ["run", "tmp"] {
        if root.lstat(top)?.is_none() {
            continue;
        }
        // Directories and symlinks are the skeleton tmpfiles.d makes anyway
        // (Debian ships /run/lock and /run/shm -> /dev/shm); files are lost.
        out.extend(
            root.entries_under(top)?
                .filter(|e| !e.meta.is_dir() && !e.meta.file_type().is_symlink())
                .map(|e| show(&e.path)),
        );
    }
    Ok(out)
}

/// The files of /var, grouped by their directory up to `var/a/b`, with counts.
fn var_content(root: &Root) -> Findings {
    if root.lstat("var")?.is_none() {
        return Ok(Vec::new());
    }
    let mut groups: BTreeMap<PathBuf, usize> = BTreeMap::new();
    for e in root.entries_under("var")? {
        if e.meta.is_dir() || e.path == Path::new("var/run") || e.path == Path::new("var/lock") {
            continue;
        }
        let parent = e.path.parent().unwrap_or(Path::new("var"));
        let group: PathBuf = parent.components().take(3).collect();
        *groups.entry(group).or_default() += 1;
    }
    Ok(groups
        .into_iter()
        .map(|(g, n)| format!("{} ({n} {})", show(&g), if n == 1 { "file" } else { "files" }))
        .collect())
}

fn var_log(root: &Root) -> Findings {
    if root.lstat("var/log")?.is_none() {
        return Ok(Vec::new());
    }
    Ok(root.entries_under("var/log")?.filter(|e| e.meta.is_file() && e.meta.len() > 0).map(|e| show(&e.path)).collect())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::super::testroot::{good, root, write};
    use super::*;

    #[test]
    fn api_directories_must_be_directories() {
        let t = good();
        std::fs::remove_dir(t.path().join("proc")).unwrap();
        std::fs::remove_dir(t.path().join("tmp")).unwrap();
        write(t.path(), "tmp", "a file");
        assert_eq!(api_dirs(&root(t.path())).unwrap(), ["/proc is missing", "/tmp is not a directory"]);
        // A directory mount point (a build's /proc) is a directory of the image.
        std::fs::create_dir(t.path().join("proc")).unwrap();
        let mounted = Root::with_mounts(t.path(), vec!["proc".into()]);
        assert_eq!(api_dirs(&mounted).unwrap(), ["/tmp is not a directory"]);
    }

    #[test]
    fn sysroot_is_empty_and_hostctl_absent() {
        let t = good();
        write(t.path(), "sysroot/x", "");
        symlink("sysroot/hostctl", t.path().join("hostctl")).unwrap();
        let f = sysroot(&root(t.path())).unwrap();
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f[0].starts_with("/sysroot/x") && f[1].starts_with("/hostctl exists"), "{f:?}");
        std::fs::remove_dir_all(t.path().join("sysroot")).unwrap();
        assert!(sysroot(&root(t.path())).unwrap()[0].contains("missing"));
    }

    #[test]
    fn var_run_must_be_a_symlink() {
        let t = good();
        assert!(var_run(&root(t.path())).unwrap().is_empty());
        std::fs::remove_file(t.path().join("var/run")).unwrap();
        assert!(var_run(&root(t.path())).unwrap().is_empty(), "absent is fine");
        std::fs::create_dir(t.path().join("var/run")).unwrap();
        assert_eq!(var_run(&root(t.path())).unwrap().len(), 1);
    }

    #[test]
    fn etc_and_usr_etc_together_are_refused() {
        let t = good();
        std::fs::create_dir_all(t.path().join("usr/etc")).unwrap();
        assert_eq!(etc_usretc(&root(t.path())).unwrap().len(), 1);
        std::fs::remove_dir_all(t.path().join("etc")).unwrap();
        assert!(etc_usretc(&root(t.path())).unwrap().is_empty());
    }

    #[test]
    fn files_in_run_and_tmp_are_listed() {
        let t = good();
        std::fs::create_dir_all(t.path().join("run/lock")).unwrap();
        symlink("/dev/shm", t.path().join("run/shm")).unwrap();
        write(t.path(), "run/app.pid", "1");
        write(t.path(), "tmp/build/out.o", "");
        assert_eq!(run_tmp(&root(t.path())).unwrap(), ["/run/app.pid", "/tmp/build/out.o"]);
    }

    #[test]
    fn var_content_is_listed_by_directory() {
        let t = good();
        write(t.path(), "var/lib/dpkg/status", "x");
        write(t.path(), "var/lib/dpkg/info/a.list", "x");
        write(t.path(), "var/cache/x", "x");
        std::fs::create_dir_all(t.path().join("var/lib/empty")).unwrap();
        assert_eq!(var_content(&root(t.path())).unwrap(), ["/var/cache (1 file)", "/var/lib/dpkg (2 files)"]);
    }

    #[test]
    fn var_log_lists_non_empty_logs() {
        let t = good();
        write(t.path(), "var/log/dpkg.log", "installed");
        write(t.path(), "var/log/wtmp", "");
        assert_eq!(var_log(&root(t.path())).unwrap(), ["/var/log/dpkg.log"]);
    }
}
