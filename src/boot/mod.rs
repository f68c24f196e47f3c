//! Booting deployments: kernels and initramfs on the boot partition, BLS type 1
//! entries, boot counting and health checks, and the
//! root set-up done in the initramfs.

pub mod bls;
pub mod counting;
pub mod entry;
pub mod health;
pub mod kargs;
pub mod kernel;
pub mod prepare_root;
