//! `hostctl prepare-root`: run in the initramfs (an initramfs-tools
//! `local-bottom` script, see `integration/vm/files/`) after the physical root
//! filesystem is mounted at `ROOT` (`/root`), before `init` switches to it.
//!
//! It reads `hostctl=/hostctl/deploy/<stateroot>/<id>` from the kernel
//! command line and rearranges the mounts so that:
//! - the deployment's tree is `ROOT` (the future `/`), writable for `/etc`;
//! - `ROOT/usr` is a read-only bind mount of the deployment's `usr`;
//! - `ROOT/var` is the stateroot's persistent `/var`;
//! - the physical root is at `ROOT/sysroot`, and `ROOT/hostctl` is a symlink
//!   to `sysroot/hostctl`, so hostctl on the booted system finds its store
//!   and state with the default `--sysroot /`.
//!
//! Without `hostctl=` it does nothing (the system was not booted by hostctl).
//! A missing, unfinalised or malformed deployment is an error with a message
//! naming what is wrong; the initramfs script prints it on the console and
//! panics (which reboots with `panic=N`, letting boot counting fall back).
//! The plan is computed by a pure function and carried out through
//! [`Mounter`], so the unit tests check every step without mounting.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::boot::bls;
use crate::host::mount::{MountOp, Mounter};

/// Where the physical root is parked while the deployment is mounted at `ROOT`
/// (in the initramfs's own root file system).
pub const PARK_DIR: &str = "/run/hostctl-sysroot";

/// What [`plan`] found and decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The `hostctl=` value: the deployment's path inside the physical root.
    pub deployment: String,
    /// The stateroot of the deployment to boot.
    pub stateroot: String,
    /// The deployment's id.
    pub id: String,
    /// Mount operations, in order.
    pub ops: Vec<MountOp>,
    /// Directories to create inside the physical root before mounting (absolute paths).
    pub mkdirs: Vec<PathBuf>,
}

/// Checks the deployment named by `cmdline` under the physical root mounted at
/// `root` and computes the mounts; `Ok(None)` without `hostctl=`. `park` is
/// where the physical root goes while the deployment takes its place.
pub fn plan(cmdline: &str, root: &Path, park: &Path) -> Result<Option<Plan>> {
    let Some(value) = bls::karg(cmdline, "hostctl") else { return Ok(None) };
    let rel = value.trim_end_matches('/');
    let parts: Vec<&str> = rel.split('/').collect();
    // "", "hostctl", "deploy", <stateroot>, <id>
    let ok = parts.len() == 5 && parts[0].is_empty() && parts[1] == crate::sysroot::HOSTCTL_DIR && parts[2] == "deploy";
    if !ok {
        bail!("hostctl={value}: expected hostctl=/hostctl/deploy/<stateroot>/<deployment id>");
    }
    let (stateroot, id) = (parts[3], parts[4]);
    crate::sysroot::DeploymentId::parse(id).with_context(|| format!("hostctl={value}"))?;
    if stateroot.is_empty() || stateroot.starts_with('.') {
        bail!("hostctl={value}: bad stateroot name {stateroot:?}");
    }
    let tree = root.join(&rel[1..]);
    if !tree.is_dir() {
        bail!(
            "deployment {id} does not exist: {} is not a directory on the root file system \
             (was it removed by `hostctl cleanup`? pick another boot entry)",
            tree.display()
        );
    }
    for sub in ["usr", "etc"] {
        if !tree.join(sub).is_dir() {
            let why = if sub == "etc" { " (the deployment was never finalised)" } else { "" };
            bail!("deployment {id} is incomplete: {} is missing{why}", tree.join(sub).display());
        }
    }
    let var = root.join("hostctl/deploy").join(stateroot).join("var");
    let p = |base: &Path, rel: &str| base.join(rel);
    let parked_tree = park.join(&rel[1..]);
    let parked_var = park.join("hostctl/deploy").join(stateroot).join("var");
    let mut mkdirs = vec![var.clone()];
    for d in ["sysroot", "var", "usr", "dev", "proc", "sys", "run"] {
        if !tree.join(d).is_dir() {
            mkdirs.push(tree.join(d));
        }
    }
    let ops = vec![
        MountOp::Move { src: root.to_path_buf(), dst: park.to_path_buf() },
        MountOp::Bind { src: parked_tree.clone(), dst: root.to_path_buf() },
        MountOp::Bind { src: p(root, "usr"), dst: p(root, "usr") },
        MountOp::ReadOnly { path: p(root, "usr") },
        MountOp::Bind { src: parked_var, dst: p(root, "var") },
        MountOp::Move { src: park.to_path_buf(), dst: p(root, "sysroot") },
    ];
    Ok(Some(Plan { deployment: value.to_string(), stateroot: stateroot.into(), id: id.into(), ops, mkdirs }))
}

/// Carries out `plan`: creates the directories, the `hostctl` symlink in the
/// deployment, then the mounts.
pub fn apply(plan: &Plan, root: &Path, park: &Path, m: &dyn Mounter) -> Result<()> {
    for d in &plan.mkdirs {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let tree = root.join(plan.deployment.trim_start_matches('/'));
    let link = tree.join(crate::sysroot::HOSTCTL_DIR);
    match link.symlink_metadata() {
        Ok(md) if md.file_type().is_symlink() => {}
        Ok(_) => bail!("{} exists and is not a symlink; the image must not ship /hostctl", link.display()),
        Err(_) => std::os::unix::fs::symlink("sysroot/hostctl", &link)
            .with_context(|| format!("creating the symlink {}", link.display()))?,
    }
    std::fs::create_dir_all(park).with_context(|| format!("creating {}", park.display()))?;
    for op in &plan.ops {
        m.apply(op)?;
    }
    Ok(())
}

/// The whole step: reads the command line, plans and applies. Prints what it
/// did (the initramfs shows it on the console).
pub fn run(cmdline: &str, root: &Path, m: &dyn Mounter) -> Result<Option<Plan>> {
    let park = Path::new(PARK_DIR);
    let Some(p) = plan(cmdline, root, park)? else {
        eprintln!("hostctl prepare-root: no hostctl= on the kernel command line; leaving the root as it is");
        return Ok(None);
    };
    apply(&p, root, park, m)?;
    eprintln!(
        "hostctl prepare-root: booting deployment {} of stateroot {} (/usr read-only, /var persistent, physical root at /sysroot)",
        p.id, p.stateroot
    );
    Ok(Some(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::mount::RecordingMounter;

    fn fake_root(finalised: bool) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let tree = t.path().join("hostctl/deploy/default/abc123.2");
        std::fs::create_dir_all(tree.join("usr/bin")).unwrap();
        if finalised {
            std::fs::create_dir_all(tree.join("etc")).unwrap();
        }
        t
    }

    #[test]
    fn plans_the_mounts_in_order() {
        let t = fake_root(true);
        let park = t.path().join("park");
        let cl = "root=UUID=x rw hostctl=/hostctl/deploy/default/abc123.2 quiet";
        let p = plan(cl, t.path(), &park).unwrap().unwrap();
        assert_eq!((p.stateroot.as_str(), p.id.as_str()), ("default", "abc123.2"));
        let r = t.path();
        assert_eq!(
            p.ops,
            vec![
                MountOp::Move { src: r.into(), dst: park.clone() },
                MountOp::Bind { src: park.join("hostctl/deploy/default/abc123.2"), dst: r.into() },
                MountOp::Bind { src: r.join("usr"), dst: r.join("usr") },
                MountOp::ReadOnly { path: r.join("usr") },
                MountOp::Bind { src: park.join("hostctl/deploy/default/var"), dst: r.join("var") },
                MountOp::Move { src: park.clone(), dst: r.join("sysroot") },
            ]
        );
        let m = RecordingMounter::default();
        apply(&p, r, &park, &m).unwrap();
        assert_eq!(m.ops.lock().unwrap().len(), 6);
        let tree = r.join("hostctl/deploy/default/abc123.2");
        assert!(tree.join("sysroot").is_dir() && tree.join("var").is_dir());
        assert!(r.join("hostctl/deploy/default/var").is_dir());
        assert_eq!(std::fs::read_link(tree.join("hostctl")).unwrap(), Path::new("sysroot/hostctl"));
        // Idempotent on the symlink (a second boot of the same deployment).
        apply(&p, r, &park, &m).unwrap();
    }

    #[test]
    fn no_karg_means_nothing_to_do() {
        let t = fake_root(true);
        assert_eq!(plan("root=/dev/vda2 rw quiet", t.path(), Path::new("/x")).unwrap(), None);
    }

    #[test]
    fn bad_deployments_are_errors_that_say_why() {
        let t = fake_root(false);
        let park = Path::new("/park");
        let cases = [
            ("hostctl=/hostctl/deploy/default/abc123.2", "never finalised"),
            ("hostctl=/hostctl/deploy/default/fff.9", "does not exist"),
            ("hostctl=/hostctl/deploy/default/../../etc", "expected hostctl="),
            ("hostctl=/hostctl/deploy/default/..", "not a deployment id"),
            ("hostctl=/somewhere/else", "expected hostctl="),
            ("hostctl=/hostctl/deploy/default", "expected hostctl="),
        ];
        for (cl, want) in cases {
            let e = format!("{:#}", plan(cl, t.path(), park).unwrap_err());
            assert!(e.contains(want), "{cl}: {e}");
        }
    }

    #[test]
    fn an_image_shipping_hostctl_as_a_directory_is_refused() {
        let t = fake_root(true);
        std::fs::create_dir_all(t.path().join("hostctl/deploy/default/abc123.2/hostctl")).unwrap();
        let park = t.path().join("park");
        let p = plan("hostctl=/hostctl/deploy/default/abc123.2", t.path(), &park).unwrap().unwrap();
        let e = apply(&p, t.path(), &park, &RecordingMounter::default()).unwrap_err();
        assert!(format!("{e:#}").contains("not a symlink"));
    }
}
