//! Booting deployments: kernels and initramfs on the boot partition, BLS type 1
//! entries, installation to disks, and the root set-up done in the initramfs.

pub mod bls;
pub mod kargs;
pub mod kernel;
