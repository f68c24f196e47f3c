//! The boot partition against what the deployments record: each boot entry
//! hostctl wrote (present, in `state.json`'s order, its `linux`, `initrd`
//! and `options` lines the ones the deployment's metadata gives; none for a
//! deployment the state does not list), and each kernel directory the
//! entries name (`vmlinuz` and `initramfs.img` present and matching the
//! checksum the deployment recorded; a damaged file is compared with the
//! deployment's own copy to say how it differs). Repairs rewrite the kernel
//! directory from the deployment's tree ([`kernel::reinstall`]) and the
//! entries as every command writes them ([`Deployer::write_boot_entries`]).

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::Damage;
use crate::boot::bls;
use crate::boot::kernel::{self, KernelSource, INITRAMFS, VMLINUZ};
use crate::deploy::deployment::Metadata;
use crate::deploy::stage::Deployer;
use crate::deploy::state::State;

/// A damaged part of the boot partition and how to repair it.
pub(super) struct BootDamage {
    pub damage: Damage,
    pub fix: BootFix,
}

/// How a boot-partition damage is repaired.
pub(super) enum BootFix {
    /// The boot entries are written again from the state.
    Entries,
    /// The kernel directory of this deployment is copied again from its tree.
    Kernel { id: String },
}

/// Checks the boot entries and kernels of `state`'s deployments.
pub(super) fn check(d: &Deployer, state: &State) -> Result<Vec<BootDamage>> {
    let mut out = Vec::new();
    let dir = bls::entries_dir(&d.boot);
    let existing = bls::list(&dir, &state.stateroot)?;
    let entry = |id: &str, path: PathBuf, problem: String| BootDamage {
        damage: Damage { path, kind: "boot-entry", deployment: Some(id.to_string()), problem },
        fix: BootFix::Entries,
    };
    let mut kernels_seen = Vec::new();
    for id in &state.deployments {
        let m = Metadata::load(&d.layout, id)?;
        let want = d.entry_for(state, &m);
        match existing.iter().find(|(n, _)| &n.deployment == id) {
            None => out.push(entry(
                id,
                dir.join(format!("hostctl-{}-*-{id}.conf", state.stateroot)),
                "missing: the deployment has no boot entry".into(),
            )),
            Some((_, path)) => {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                if let Some(problem) = entry_difference(&text, &want) {
                    out.push(entry(id, path.clone(), problem));
                }
            }
        }
        if !kernels_seen.contains(&m.kernel.checksum) {
            kernels_seen.push(m.kernel.checksum.clone());
            out.extend(check_kernel(d, state, &m)?);
        }
    }
    for (name, path) in &existing {
        if !state.deployments.contains(&name.deployment) {
            out.push(entry(
                &name.deployment,
                path.clone(),
                format!("names deployment {}, which state.json does not list", name.deployment),
            ));
        }
    }
    let order: Vec<&String> =
        existing.iter().map(|(n, _)| &n.deployment).filter(|id| state.deployments.contains(id)).collect();
    let complete = order.len() == state.deployments.len();
    if complete && order.iter().zip(&state.deployments).any(|(a, b)| *a != b) {
        let ids = |v: Vec<&String>| v.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
        out.push(entry(
            order[0],
            dir.clone(),
            format!(
                "the boot order is {} where state.json has {}",
                ids(order.clone()),
                ids(state.deployments.iter().collect())
            ),
        ));
    }
    Ok(out)
}

/// How many kernel directories the deployments with boot entries use.
pub(super) fn kernels(d: &Deployer, state: &State) -> Result<usize> {
    let mut seen = std::collections::BTreeSet::new();
    for id in &state.deployments {
        seen.insert(Metadata::load(&d.layout, id)?.kernel.checksum);
    }
    Ok(seen.len())
}

/// Which line of an entry differs from what the deployment gives, if any.
/// The title is left out: it only names the deployment in the menu, and an
/// older hostctl wrote it differently.
fn entry_difference(text: &str, want: &bls::BlsEntry) -> Option<String> {
    let Ok(have) = bls::BlsEntry::parse(text) else {
        return Some("not a boot entry hostctl can read (no `linux` line)".into());
    };
    let line = if have.linux != want.linux {
        "linux"
    } else if have.initrd != want.initrd {
        "initrd"
    } else if have.options != want.options {
        "options"
    } else {
        return None;
    };
    Some(format!("its `{line}` line differs from what the deployment records"))
}

/// The kernel directory of `m` on the boot partition against its recorded checksum.
fn check_kernel(d: &Deployer, state: &State, m: &Metadata) -> Result<Vec<BootDamage>> {
    let dir = kernel::kernels_dir(&d.boot, &state.stateroot).join(&m.kernel.checksum);
    let on_esp = KernelSource {
        version: m.kernel.version.clone(),
        vmlinuz: dir.join(VMLINUZ),
        initramfs: m.kernel.has_initramfs.then(|| dir.join(INITRAMFS)),
    };
    let intact = on_esp.vmlinuz.is_file()
        && on_esp.initramfs.as_ref().is_none_or(|i| i.is_file())
        && on_esp.checksum().is_ok_and(|(c, _)| c == m.kernel.checksum);
    if intact {
        return Ok(Vec::new());
    }
    let tree = source(d, m);
    let mut out = Vec::new();
    let files = [(VMLINUZ, Some(tree.vmlinuz.clone())), (INITRAMFS, tree.initramfs.clone())];
    for (file, ours) in files.iter().filter(|(f, _)| *f == VMLINUZ || m.kernel.has_initramfs) {
        let path = dir.join(file);
        let problem = match (std::fs::symlink_metadata(&path), ours) {
            (Err(_), _) => Some("missing".to_string()),
            (Ok(meta), _) if !meta.is_file() => Some("not a regular file".into()),
            (Ok(meta), Some(ours)) => differs(&path, meta.len(), ours),
            (Ok(_), None) => None,
        };
        if let Some(problem) = problem {
            out.push(kernel_damage(m, path, problem));
        }
    }
    if out.is_empty() {
        // Each file matches the deployment's copy, yet not the record: the
        // deployment's own copy is damaged too (its own report says so).
        out.push(kernel_damage(m, dir, format!("does not match the recorded checksum {}", m.kernel.checksum)));
    }
    Ok(out)
}

fn kernel_damage(m: &Metadata, path: PathBuf, problem: String) -> BootDamage {
    BootDamage {
        damage: Damage { path, kind: "kernel", deployment: Some(m.id.clone()), problem },
        fix: BootFix::Kernel { id: m.id.clone() },
    }
}

/// The deployment's own kernel files, where staging copied them from.
pub(super) fn source(d: &Deployer, m: &Metadata) -> KernelSource {
    let modules = d.layout.tree(&m.id).join("usr/lib/modules").join(&m.kernel.version);
    KernelSource {
        version: m.kernel.version.clone(),
        vmlinuz: modules.join(VMLINUZ),
        initramfs: m.kernel.has_initramfs.then(|| modules.join(INITRAMFS)),
    }
}

/// How the file `path` (of `len` bytes) differs from the deployment's copy `ours`.
fn differs(path: &Path, len: u64, ours: &Path) -> Option<String> {
    let Ok(ours_len) = std::fs::metadata(ours).map(|m| m.len()) else {
        return Some("does not match the recorded checksum (the deployment's own copy is missing)".into());
    };
    if len < ours_len {
        return Some(format!("truncated: {len} bytes where the deployment's copy has {ours_len}"));
    }
    if len != ours_len {
        return Some(format!("size {len} where the deployment's copy has {ours_len}"));
    }
    match same_content(path, ours) {
        Ok(true) => None,
        Ok(false) => Some("altered: its content differs from the deployment's copy".into()),
        Err(e) => Some(format!("cannot be read: {e}")),
    }
}

fn same_content(a: &Path, b: &Path) -> std::io::Result<bool> {
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 256 * 1024], vec![0u8; 256 * 1024]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Repairs what [`check`] found: kernels first (entries name them), then the entries.
pub(super) fn repair(d: &Deployer, state: &State, found: &[BootDamage], errors: &mut Vec<String>) -> Result<()> {
    let mut done = Vec::new();
    for b in found {
        if let BootFix::Kernel { id } = &b.fix {
            if done.contains(id) {
                continue;
            }
            done.push(id.clone());
            let m = Metadata::load(&d.layout, id)?;
            if let Err(e) = kernel::reinstall(&source(d, &m), &d.boot, &state.stateroot, &m.kernel.checksum) {
                errors.push(format!("{}: {e:#}", b.damage.path.display()));
            }
        }
    }
    if found.iter().any(|b| matches!(b.fix, BootFix::Entries)) {
        if let Err(e) = d.write_boot_entries(state) {
            errors.push(format!("{}: {e:#}", bls::entries_dir(&d.boot).display()));
        }
    }
    Ok(())
}
