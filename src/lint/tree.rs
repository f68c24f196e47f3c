//! Checks over every entry of the tree: file names the store cannot record,
//! and setuid/setgid programs listed for review.

use std::os::unix::fs::PermissionsExt;

use super::root::show;
use super::{Check, Findings, Level, Root};

/// This group's checks.
pub const CHECKS: &[Check] = &[
    Check {
        name: "utf8",
        level: Level::Error,
        explanation: "every file name and symlink target is UTF-8: the store's layer indexes record paths as text",
        run: utf8,
    },
    Check {
        name: "setuid",
        level: Level::Info,
        explanation: "setuid and setgid files, listed for review",
        run: setuid,
    },
];

fn utf8(root: &Root) -> Findings {
    let mut out = Vec::new();
    for e in root.entries()? {
        if e.path.to_str().is_none() {
            out.push(format!("{}: the name is not UTF-8", show(&e.path)));
        } else if e.target.as_ref().is_some_and(|t| t.to_str().is_none()) {
            out.push(format!("{}: the symlink's target is not UTF-8", show(&e.path)));
        }
    }
    Ok(out)
}

fn setuid(root: &Root) -> Findings {
    let mut out = Vec::new();
    for e in root.entries()? {
        let mode = e.meta.permissions().mode();
        if !e.meta.is_file() || mode & 0o6000 == 0 {
            continue;
        }
        let what = match (mode & 0o4000 != 0, mode & 0o2000 != 0) {
            (true, true) => "setuid+setgid",
            (true, false) => "setuid",
            _ => "setgid",
        };
        out.push(format!("{} ({what}, mode {:04o})", show(&e.path), mode & 0o7777));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::symlink;

    use super::super::testroot::{good, root, write};
    use super::*;

    #[test]
    fn names_and_targets_that_are_not_utf8() {
        let t = good();
        std::fs::write(t.path().join("tmp").join(OsStr::from_bytes(b"caf\xe9")), "").unwrap();
        symlink(OsStr::from_bytes(b"/x\xff"), t.path().join("usr/bin/bad-link")).unwrap();
        assert_eq!(
            utf8(&root(t.path())).unwrap(),
            ["/tmp/caf\\xe9: the name is not UTF-8", "/usr/bin/bad-link: the symlink's target is not UTF-8"]
        );
    }

    #[test]
    fn setuid_and_setgid_files_are_listed() {
        let t = good();
        write(t.path(), "usr/bin/su", "");
        write(t.path(), "usr/bin/wall", "");
        std::fs::set_permissions(t.path().join("usr/bin/su"), std::fs::Permissions::from_mode(0o4755)).unwrap();
        std::fs::set_permissions(t.path().join("usr/bin/wall"), std::fs::Permissions::from_mode(0o2755)).unwrap();
        // A setgid directory is not a setgid program.
        std::fs::set_permissions(t.path().join("var"), std::fs::Permissions::from_mode(0o2775)).unwrap();
        assert_eq!(
            setuid(&root(t.path())).unwrap(),
            ["/usr/bin/su (setuid, mode 4755)", "/usr/bin/wall (setgid, mode 2755)"]
        );
    }
}
