//! Building a deployment's BLS entry: its kernel's paths on the boot
//! partition (where [`kernel::install`] puts them) and its kernel command
//! line, from plain inputs so that `boot/` knows nothing of deployments.

use crate::boot::bls::BlsEntry;
use crate::boot::kernel;

/// Kernel argument used for `root=` when nothing better is known (see docs/deployments.md).
pub const DEFAULT_ROOT_KARG: &str = "root=LABEL=hostctl-root";

/// What an entry is made of.
#[derive(Clone, Debug)]
pub struct EntryInputs<'a> {
    /// The menu title.
    pub title: String,
    /// The stateroot the deployment belongs to.
    pub stateroot: &'a str,
    /// The kernel's checksum: its directory on the boot partition.
    pub kernel_checksum: &'a str,
    /// Whether the kernel comes with an initramfs (an `initrd` line).
    pub has_initramfs: bool,
    /// The host's own arguments (`root=` among them, else [`DEFAULT_ROOT_KARG`] is used).
    pub local_kargs: &'a [String],
    /// `hostctl=`'s value: the deployment's path from the sysroot's root.
    pub deployment_path: String,
    /// The image's `kargs.d` arguments, last.
    pub image_kargs: &'a [String],
}

/// The entry: local arguments, `hostctl=`, then the image's.
pub fn build(i: &EntryInputs) -> BlsEntry {
    let mut opts: Vec<String> = i.local_kargs.to_vec();
    if !opts.iter().any(|k| k.starts_with("root=")) {
        opts.insert(0, DEFAULT_ROOT_KARG.to_string());
    }
    opts.push(format!("hostctl={}", i.deployment_path));
    opts.extend(i.image_kargs.iter().cloned());
    BlsEntry {
        title: i.title.clone(),
        linux: kernel::boot_path(i.stateroot, i.kernel_checksum, kernel::VMLINUZ),
        initrd: i.has_initramfs.then(|| kernel::boot_path(i.stateroot, i.kernel_checksum, kernel::INITRAMFS)),
        options: opts.join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_match_where_the_kernel_is_installed() {
        let image_kargs = ["quiet".to_string()];
        let mut i = EntryInputs {
            title: "os 1.0".into(),
            stateroot: "default",
            kernel_checksum: "k1",
            has_initramfs: true,
            local_kargs: &[],
            deployment_path: "/hostctl/deploy/default/abc.1".into(),
            image_kargs: &image_kargs,
        };
        let e = build(&i);
        assert_eq!(e.linux, "/hostctl/default/k1/vmlinuz");
        assert_eq!(e.initrd.as_deref(), Some("/hostctl/default/k1/initramfs.img"));
        assert_eq!(e.options, "root=LABEL=hostctl-root hostctl=/hostctl/deploy/default/abc.1 quiet");
        let local = ["root=UUID=x".to_string(), "rw".to_string()];
        i.local_kargs = &local;
        i.has_initramfs = false;
        let e = build(&i);
        assert_eq!(e.options, "root=UUID=x rw hostctl=/hostctl/deploy/default/abc.1 quiet");
        assert_eq!(e.initrd, None);
    }
}
