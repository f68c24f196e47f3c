//! Checks of what boots: the kernel and initramfs, `/boot`, kernel arguments.

use std::path::Path;

use super::{Check, Findings, Level, Root};

/// This group's checks.
pub const CHECKS: &[Check] = &[
    Check {
        name: "kernel",
        level: Level::Error,
        explanation: "exactly one kernel, usr/lib/modules/<kver>/vmlinuz, with its initramfs.img beside it",
        run: kernel,
    },
    Check {
        name: "nonempty-boot",
        level: Level::Warning,
        explanation: "/boot is an empty directory: the boot partition is mounted over it, hiding anything there",
        run: nonempty_boot,
    },
    Check {
        name: "kargs",
        level: Level::Error,
        explanation: "every usr/lib/hostctl/kargs.d/*.toml parses (kargs = [...], match-architectures = [...])",
        run: kargs,
    },
];

fn kernel(root: &Root) -> Findings {
    let modules = "usr/lib/modules";
    let mut kernels = Vec::new();
    let mut out = Vec::new();
    if root.lstat(modules)?.is_some() {
        for e in root.entries_under(modules)? {
            if e.path.parent() != Some(Path::new(modules)) || !e.meta.is_dir() {
                continue;
            }
            let is_file =
                |name: &str| std::fs::symlink_metadata(root.dir().join(&e.path).join(name)).is_ok_and(|m| m.is_file());
            if is_file("vmlinuz") {
                let kver = e.path.file_name().unwrap_or_default().to_string_lossy().into_owned();
                if !is_file("initramfs.img") {
                    out.push(format!("/{modules}/{kver} has a vmlinuz but no initramfs.img regular file"));
                }
                kernels.push(kver);
            }
        }
    }
    match kernels.len() {
        0 => out.push(format!("no kernel: no /{modules}/<kver>/vmlinuz regular file")),
        1 => {}
        _ => out.push(format!(
            "{} kernels ({}): hostctl boots only the highest; remove the others' /{modules}/<kver>",
            kernels.len(),
            kernels.join(", ")
        )),
    }
    Ok(out)
}

fn nonempty_boot(root: &Root) -> Findings {
    match root.lstat("boot")? {
        None => return Ok(vec!["/boot is missing: create it as an empty directory".into()]),
        Some(m) if !m.is_dir() => return Ok(vec!["/boot is not a directory".into()]),
        Some(_) => {}
    }
    Ok(root
        .entries_under("boot")?
        .filter(|e| e.path.parent() == Some(Path::new("boot")))
        .map(|e| super::root::show(&e.path))
        .collect())
}

fn kargs(root: &Root) -> Findings {
    let dir = crate::boot::kargs::KARGS_DIR;
    let mut out = Vec::new();
    if root.lstat(dir)?.is_none() {
        return Ok(out);
    }
    for e in root.entries_under(dir)? {
        if e.path.parent() != Some(Path::new(dir)) || e.path.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let p = root.dir().join(&e.path);
        let r = std::fs::read_to_string(&p)
            .map_err(anyhow::Error::from)
            .and_then(|text| crate::boot::kargs::parse(&text, std::env::consts::ARCH));
        if let Err(err) = r {
            out.push(format!("{}: {err:#}", super::root::show(&e.path)));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::testroot::{good, root, write};
    use super::*;

    #[test]
    fn kernel_finds_none_two_and_a_missing_initramfs() {
        let t = good();
        assert!(kernel(&root(t.path())).unwrap().is_empty());
        write(t.path(), "usr/lib/modules/6.1.0/vmlinuz", "old");
        let f = kernel(&root(t.path())).unwrap();
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f[0].contains("6.1.0 has a vmlinuz but no initramfs.img"), "{f:?}");
        assert!(f[1].contains("2 kernels (6.1.0, 6.12.1)"), "{f:?}");
        // A modules directory without a kernel (modules left behind) is no kernel.
        std::fs::remove_file(t.path().join("usr/lib/modules/6.1.0/vmlinuz")).unwrap();
        assert!(kernel(&root(t.path())).unwrap().is_empty());
        std::fs::remove_dir_all(t.path().join("usr/lib/modules")).unwrap();
        assert!(kernel(&root(t.path())).unwrap()[0].starts_with("no kernel"));
    }

    #[test]
    fn boot_must_be_an_empty_directory() {
        let t = good();
        write(t.path(), "boot/vmlinuz-6.12.1", "k");
        assert_eq!(nonempty_boot(&root(t.path())).unwrap(), ["/boot/vmlinuz-6.12.1"]);
        // On a running host the boot partition is mounted there: not the image's content.
        assert!(nonempty_boot(&Root::with_mounts(t.path(), vec!["boot".into()])).unwrap().is_empty());
        std::fs::remove_dir_all(t.path().join("boot")).unwrap();
        assert!(nonempty_boot(&root(t.path())).unwrap()[0].contains("missing"));
    }

    #[test]
    fn kargs_files_must_parse() {
        let t = good();
        write(t.path(), "usr/lib/hostctl/kargs.d/20-bad.toml", "kargs = \"not a list\"\n");
        write(t.path(), "usr/lib/hostctl/kargs.d/30-space.toml", "kargs = [\"a b\"]\n");
        write(t.path(), "usr/lib/hostctl/kargs.d/README", "not read");
        let f = kargs(&root(t.path())).unwrap();
        assert_eq!(f.len(), 2, "{f:?}");
        assert!(f[0].starts_with("/usr/lib/hostctl/kargs.d/20-bad.toml: parsing"), "{f:?}");
        assert!(f[1].contains("whitespace"), "{f:?}");
    }
}
