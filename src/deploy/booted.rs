//! Which deployment is running now.
//!
//! The rule (docs/deployments.md):
//! 1. `HOSTCTL_BOOTED=<id>` (or `none`) in the environment wins: tests and
//!    tooling use it to simulate a machine that has not rebooted yet.
//! 2. When the sysroot is `/`, the `hostctl=` argument of `/proc/cmdline`.
//! 3. For any other sysroot, the deployment of the default boot entry counts
//!    as booted, as if the machine had rebooted after every change.

use std::path::Path;

use anyhow::{Context, Result};

use crate::boot::bls;
use crate::deploy::deployment::{DeploymentId, Layout};
use crate::sysroot::Sysroot;

/// The environment variable that overrides booted detection.
pub const BOOTED_ENV: &str = "HOSTCTL_BOOTED";

/// Where the answer came from (shown by `status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum BootedSource {
    /// From `HOSTCTL_BOOTED` in the environment.
    Environment,
    /// From the `hostctl=` argument of `/proc/cmdline` (the sysroot is `/`).
    KernelCmdline,
    /// From the default boot entry (any other sysroot).
    DefaultBootEntry,
}

/// The inputs of the decision, gathered by [`detect`].
#[derive(Clone, Debug, Default)]
pub struct BootedInputs<'a> {
    /// `HOSTCTL_BOOTED`'s value, if set.
    pub env: Option<&'a str>,
    /// The sysroot is `/`.
    pub sysroot_is_root: bool,
    /// `/proc/cmdline`, read when the sysroot is `/`.
    pub cmdline: Option<&'a str>,
    /// The default boot entry's deployment id, for any other sysroot.
    pub default_entry: Option<&'a str>,
}

/// The pure decision.
pub fn decide(layout: &Layout, i: &BootedInputs) -> Result<(Option<String>, BootedSource)> {
    if let Some(v) = i.env {
        if v == "none" || v.is_empty() {
            return Ok((None, BootedSource::Environment));
        }
        DeploymentId::parse(v).with_context(|| format!("${BOOTED_ENV}"))?;
        return Ok((Some(v.to_string()), BootedSource::Environment));
    }
    if i.sysroot_is_root {
        let id = i.cmdline.and_then(|c| bls::karg(c, "hostctl")).and_then(|v| layout.id_from_karg(v)).map(String::from);
        return Ok((id, BootedSource::KernelCmdline));
    }
    Ok((i.default_entry.map(str::to_string), BootedSource::DefaultBootEntry))
}

/// Finds the booted deployment of `layout`'s stateroot.
pub fn detect(sysroot: &Sysroot, boot: &Path, layout: &Layout) -> Result<(Option<String>, BootedSource)> {
    let env = std::env::var(BOOTED_ENV).ok();
    let is_root = sysroot.is_running_root();
    let cmdline = if is_root && env.is_none() {
        Some(std::fs::read_to_string("/proc/cmdline").context("reading /proc/cmdline")?)
    } else {
        None
    };
    let default_entry = if !is_root && env.is_none() {
        bls::default_deployment(&bls::entries_dir(boot), &layout.stateroot)?
    } else {
        None
    };
    let decided = decide(
        layout,
        &BootedInputs {
            env: env.as_deref(),
            sysroot_is_root: is_root,
            cmdline: cmdline.as_deref(),
            default_entry: default_entry.as_deref(),
        },
    );
    if let Ok((id, source)) = &decided {
        tracing::info!("booted deployment: {} (from {source:?})", id.as_deref().unwrap_or("none"));
    }
    decided
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decide_table() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = Layout::new(&Sysroot::open(tmp.path()).unwrap(), "default");
        let cl = "root=UUID=x rw hostctl=/hostctl/deploy/default/abc123.4 quiet";
        let other = "root=UUID=x hostctl=/hostctl/deploy/other/abc123.4";
        type Case<'a> = (Option<&'a str>, bool, Option<&'a str>, Option<&'a str>, Option<&'a str>, BootedSource);
        let cases: &[Case] = &[
            (Some("fff.2"), true, Some(cl), Some("aaa.1"), Some("fff.2"), BootedSource::Environment),
            (Some("none"), false, None, Some("aaa.1"), None, BootedSource::Environment),
            (None, true, Some(cl), Some("aaa.1"), Some("abc123.4"), BootedSource::KernelCmdline),
            (None, true, Some(other), None, None, BootedSource::KernelCmdline),
            (None, true, Some("quiet"), None, None, BootedSource::KernelCmdline),
            (None, false, None, Some("aaa.1"), Some("aaa.1"), BootedSource::DefaultBootEntry),
            (None, false, None, None, None, BootedSource::DefaultBootEntry),
        ];
        for (env, root, cmdline, entry, want, src) in cases {
            let i = BootedInputs { env: *env, sysroot_is_root: *root, cmdline: *cmdline, default_entry: *entry };
            assert_eq!(decide(&layout, &i).unwrap(), (want.map(str::to_string), *src), "{i:?}");
        }
        let bad = BootedInputs { env: Some("../x"), ..Default::default() };
        assert!(decide(&layout, &bad).is_err());
    }
}
