//! `hostctl usr-overlay`: a writable `/usr` for this boot only (bootc's
//! `usr-overlay`, ostree's `admin unlock`). An overlayfs is mounted over the
//! booted deployment's `/usr` with its upper and work directories on a tmpfs
//! of their own, so writes land in memory: the deployment's files stay as
//! they are, and the next boot has the image's `/usr` again.
//!
//! On the running system (`--sysroot /`) the overlay goes on `/usr` and the
//! tmpfs on `/run/hostctl/usr-overlay`; with another sysroot, on the booted
//! deployment's `usr` in it and `<sysroot>/run/hostctl/usr-overlay` (what
//! the tests use, in a mount namespace of their own).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::deploy::deployment::Layout;
use crate::host::mount::{MountOp, Mounter};
use crate::sysroot::Sysroot;

/// Where the overlay's tmpfs goes, below the sysroot.
pub const RUN_DIR: &str = "run/hostctl/usr-overlay";

/// What [`usr_overlay`] mounted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Overlaid {
    /// The deployment whose `/usr` is overlaid.
    pub deployment: String,
    /// The overlaid directory.
    pub usr: PathBuf,
    /// Where the changes go (on the tmpfs).
    pub upper: PathBuf,
    /// Whether the overlay is read-only.
    pub read_only: bool,
}

/// Mounts the overlay on the booted deployment's `/usr`. Refuses when no
/// hostctl deployment is booted, or when `/usr` is an overlay already.
pub fn usr_overlay(
    sysroot: &Sysroot,
    layout: &Layout,
    booted: Option<&str>,
    read_only: bool,
    m: &dyn Mounter,
) -> Result<Overlaid> {
    let Some(booted) = booted else {
        bail!(
            "not running on a booted hostctl deployment (no hostctl= on the kernel command line): there is no \
             deployment's /usr to overlay"
        );
    };
    let usr = if sysroot.is_running_root() { PathBuf::from("/usr") } else { layout.tree(booted).join("usr") };
    if !usr.is_dir() {
        bail!("{} is not a directory: deployment {booted} has no /usr", usr.display());
    }
    if m.fs_type_at(&usr)?.as_deref() == Some("overlay") {
        bail!(
            "{} is an overlay already (hostctl usr-overlay ran since this boot); it is gone at the next boot",
            usr.display()
        );
    }
    let run = sysroot.root().join(RUN_DIR);
    std::fs::create_dir_all(&run).with_context(|| format!("creating {}", run.display()))?;
    if m.fs_type_at(&run)?.is_none() {
        m.apply(&MountOp::Tmpfs { dst: run.clone() })?;
    }
    let (upper, work) = (run.join("upper"), run.join("work"));
    for d in [&upper, &work] {
        // Left by an attempt that failed before its overlay was mounted.
        if d.exists() {
            std::fs::remove_dir_all(d).with_context(|| format!("removing {}", d.display()))?;
        }
        std::fs::create_dir(d).with_context(|| format!("creating {}", d.display()))?;
    }
    m.apply(&MountOp::Overlay { lower: usr.clone(), upper: upper.clone(), work, dst: usr.clone(), read_only })?;
    Ok(Overlaid { deployment: booted.to_string(), usr, upper, read_only })
}

/// `usr` of a sysroot's deployment, for messages.
pub fn describe(o: &Overlaid) -> String {
    let mode = if o.read_only { "read-only" } else { "writable" };
    format!(
        "{} is now a {mode} overlay of deployment {}: changes go to a tmpfs ({}) and are gone at the next boot; \
         the deployment's files are not touched",
        o.usr.display(),
        o.deployment,
        o.upper.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::mount::RecordingMounter;

    fn sysroot_with(id: &str) -> (tempfile::TempDir, Sysroot, Layout) {
        let d = tempfile::tempdir().unwrap();
        let s = Sysroot::open(d.path()).unwrap();
        let l = Layout::new(&s, "default");
        std::fs::create_dir_all(l.tree(id).join("usr")).unwrap();
        (d, s, l)
    }

    #[test]
    fn mounts_a_tmpfs_then_an_overlay_on_the_booted_usr_and_refuses_a_second_time() {
        let (d, s, l) = sysroot_with("abc.1");
        let m = RecordingMounter::default();
        let o = usr_overlay(&s, &l, Some("abc.1"), false, &m).unwrap();
        let run = d.path().join(RUN_DIR);
        let usr = l.tree("abc.1").join("usr");
        assert_eq!(
            *m.ops.lock().unwrap(),
            vec![
                MountOp::Tmpfs { dst: run.clone() },
                MountOp::Overlay {
                    lower: usr.clone(),
                    upper: run.join("upper"),
                    work: run.join("work"),
                    dst: usr.clone(),
                    read_only: false
                },
            ]
        );
        assert_eq!(o, Overlaid { deployment: "abc.1".into(), usr, upper: run.join("upper"), read_only: false });
        let e = usr_overlay(&s, &l, Some("abc.1"), false, &m).unwrap_err();
        assert!(format!("{e}").contains("is an overlay already"), "{e}");
        assert_eq!(m.ops.lock().unwrap().len(), 2, "nothing mounted the second time");
    }

    #[test]
    fn refuses_without_a_booted_deployment_and_mounts_nothing() {
        let (_d, s, l) = sysroot_with("abc.1");
        let m = RecordingMounter::default();
        let e = usr_overlay(&s, &l, None, false, &m).unwrap_err();
        assert!(format!("{e}").contains("not running on a booted hostctl deployment"), "{e}");
        let e = usr_overlay(&s, &l, Some("def.2"), true, &m).unwrap_err();
        assert!(format!("{e}").contains("has no /usr"), "{e}");
        assert!(m.ops.lock().unwrap().is_empty());
    }

    #[test]
    fn read_only_asks_for_a_read_only_overlay() {
        let (_d, s, l) = sysroot_with("abc.1");
        let m = RecordingMounter::default();
        assert!(usr_overlay(&s, &l, Some("abc.1"), true, &m).unwrap().read_only);
        assert!(matches!(m.ops.lock().unwrap()[1], MountOp::Overlay { read_only: true, .. }));
    }
}
