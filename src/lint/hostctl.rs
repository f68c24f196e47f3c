//! Checks of hostctl's own parts in an image: its binary, initramfs hook and
//! enabled units, and the logically bound images' Quadlet links.

use std::path::{Component, Path, PathBuf};

use super::root::show;
use super::{Check, Findings, Level, Root};
use crate::apps::quadlet::UnitFile;

/// This group's checks.
pub const CHECKS: &[Check] = &[
    Check {
        name: "hostctl",
        level: Level::Error,
        explanation:
            "/usr/bin/hostctl, its initramfs hook, and its finalize-staged and health units, present and enabled",
        run: hostctl,
    },
    Check {
        name: "bound-images",
        level: Level::Error,
        explanation: "each link in usr/lib/{hostctl,bootc}/bound-images.d points at a .container or .image with Image=",
        run: bound_images,
    },
];

/// The units an image must ship and enable for deployments to finalise and
/// boots to be judged (integration/vm/build-base.sh enables them).
pub const UNITS: &[&str] = &["hostctl-finalize-staged.service", "hostctl-health.service"];

/// Where systemd units are shipped and enabled.
const UNIT_DIRS: &[&str] = &["usr/lib/systemd/system", "etc/systemd/system"];

fn hostctl(root: &Root) -> Findings {
    let mut out = Vec::new();
    for (file, what) in [
        ("usr/bin/hostctl", "the hostctl binary"),
        ("usr/share/initramfs-tools/hooks/hostctl", "hostctl's initramfs hook (it mounts the deployment as /)"),
    ] {
        if !root.lstat(file)?.is_some_and(|m| m.is_file()) {
            out.push(format!("/{file} is missing: {what}"));
        }
    }
    let entries = root.entries()?;
    for unit in UNITS {
        if !UNIT_DIRS.iter().any(|d| entries.iter().any(|e| e.path == Path::new(d).join(unit))) {
            out.push(format!("{unit} is missing from /usr/lib/systemd/system"));
            continue;
        }
        let enabled = entries.iter().any(|e| {
            e.target.is_some()
                && e.path.file_name().is_some_and(|n| n == *unit)
                && e.path.parent().is_some_and(|p| {
                    UNIT_DIRS.iter().any(|d| p.parent() == Some(Path::new(d)))
                        && p.extension().is_some_and(|x| x == "wants" || x == "requires")
                })
        });
        if !enabled {
            out.push(format!("{unit} is not enabled: link it from /usr/lib/systemd/system/multi-user.target.wants/"));
        }
    }
    Ok(out)
}

/// Where bound-image links are read (bootc's directory too, so bootc images carry over).
const BOUND_DIRS: &[&str] = &["usr/lib/hostctl/bound-images.d", "usr/lib/bootc/bound-images.d"];

fn bound_images(root: &Root) -> Findings {
    let mut out = Vec::new();
    for dir in BOUND_DIRS {
        if root.lstat(dir)?.is_none() {
            continue;
        }
        for e in root.entries_under(dir)? {
            if e.path.parent() != Some(Path::new(dir)) {
                continue;
            }
            if let Err(why) = bound_image(root, dir, e.target.as_deref()) {
                out.push(format!("{}: {why}", show(&e.path)));
            }
        }
    }
    Ok(out)
}

fn bound_image(root: &Root, dir: &str, target: Option<&Path>) -> Result<(), String> {
    let Some(target) = target else {
        return Err("not a symlink (link to the Quadlet file instead)".into());
    };
    let section = match target.extension().and_then(|x| x.to_str()) {
        Some("container") => "Container",
        Some("image") => "Image",
        _ => return Err(format!("points at {}, not a .container or .image file", target.display())),
    };
    let resolved = if target.is_absolute() { lexical(target) } else { lexical(&Path::new(dir).join(target)) };
    let Some(rel) = resolved else {
        return Err(format!("{} leads outside the image", target.display()));
    };
    let shown = show(&rel);
    match root.lstat(&rel.to_string_lossy()).map_err(|e| format!("{e:#}"))? {
        Some(m) if m.is_file() => {}
        Some(_) => return Err(format!("{shown} is not a regular file")),
        None => return Err(format!("{shown} does not exist")),
    }
    let text = std::fs::read_to_string(root.dir().join(&rel)).map_err(|e| format!("reading {shown}: {e}"))?;
    let unit = UnitFile::parse(&text).map_err(|e| format!("{shown}: {e:#}"))?;
    match unit.last(section, "Image") {
        Some(image) if !image.is_empty() => Ok(()),
        _ => Err(format!("{shown} has no Image= in [{section}]")),
    }
}

/// `p` made relative to the image's root with `.` and `..` resolved
/// lexically; `None` if `..` would climb above the root.
pub(super) fn lexical(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(n) => out.push(n),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::super::testroot::{good, root, write};
    use super::*;

    #[test]
    fn hostctl_binary_hook_and_units_are_required_and_enabled() {
        let t = good();
        assert!(hostctl(&root(t.path())).unwrap().is_empty());
        std::fs::remove_file(t.path().join("usr/bin/hostctl")).unwrap();
        std::fs::remove_file(t.path().join("usr/lib/systemd/system/multi-user.target.wants/hostctl-health.service"))
            .unwrap();
        std::fs::remove_file(t.path().join("usr/lib/systemd/system/hostctl-finalize-staged.service")).unwrap();
        let f = hostctl(&root(t.path())).unwrap();
        assert_eq!(f.len(), 3, "{f:?}");
        assert!(f[0].starts_with("/usr/bin/hostctl is missing"), "{f:?}");
        assert!(f[1].starts_with("hostctl-finalize-staged.service is missing"), "{f:?}");
        assert!(f[2].starts_with("hostctl-health.service is not enabled"), "{f:?}");
        // Enabled from /etc (systemctl enable in a RUN) counts too.
        std::fs::create_dir_all(t.path().join("etc/systemd/system/boot-complete.target.requires")).unwrap();
        symlink(
            "/usr/lib/systemd/system/hostctl-health.service",
            t.path().join("etc/systemd/system/boot-complete.target.requires/hostctl-health.service"),
        )
        .unwrap();
        assert_eq!(hostctl(&root(t.path())).unwrap().len(), 2);
    }

    #[test]
    fn bound_image_links_need_a_quadlet_file_with_an_image() {
        let t = good();
        let r = t.path();
        write(r, "usr/share/containers/systemd/web.container", "[Container]\nImage=quay.io/example/web:1\n");
        write(r, "usr/share/containers/systemd/db.image", "[Image]\nImage=quay.io/example/db:1\n");
        write(r, "usr/share/containers/systemd/noimage.container", "[Container]\nExec=sleep 1\n");
        write(r, "usr/share/containers/systemd/broken.container", "Image=no section\n");
        let d = r.join("usr/lib/bootc/bound-images.d");
        std::fs::create_dir_all(&d).unwrap();
        symlink("/usr/share/containers/systemd/web.container", d.join("web.container")).unwrap();
        symlink("../../../share/containers/systemd/db.image", d.join("db.image")).unwrap();
        assert!(bound_images(&root(r)).unwrap().is_empty());

        let h = r.join("usr/lib/hostctl/bound-images.d");
        std::fs::create_dir_all(&h).unwrap();
        symlink("/usr/share/containers/systemd/noimage.container", h.join("a.container")).unwrap();
        symlink("/usr/share/containers/systemd/broken.container", h.join("b.container")).unwrap();
        symlink("/usr/share/containers/systemd/gone.container", h.join("c.container")).unwrap();
        symlink("/etc/motd", h.join("d.container")).unwrap();
        symlink("../../../../../../x.image", h.join("e.image")).unwrap();
        write(r, "usr/lib/hostctl/bound-images.d/f.container", "[Container]\nImage=x\n");
        let f = bound_images(&root(r)).unwrap();
        assert_eq!(f.len(), 6, "{f:#?}");
        assert!(f[0].contains("a.container: /usr/share/containers/systemd/noimage.container has no Image="), "{f:?}");
        assert!(f[1].contains("b.container: /usr/share/containers/systemd/broken.container: line 1"), "{f:?}");
        assert!(f[2].contains("gone.container does not exist"), "{f:?}");
        assert!(f[3].contains("not a .container or .image"), "{f:?}");
        assert!(f[4].contains("leads outside the image"), "{f:?}");
        assert!(f[5].contains("f.container: not a symlink"), "{f:?}");
    }
}
