//! The host boundary: everything hostctl runs or asks of the kernel outside
//! its own store — rebooting, mounting, disk tools, loop devices, systemd,
//! health-check scripts and podman. Each tool sits behind one trait with the
//! real implementation and a recording fake, so the layers above decide and
//! the unit tests check those decisions without touching the machine.
//!
//! - [`podman`]: images and containers in podman's storage, read as typed
//!   JSON, and podman's Quadlet generator in dry-run mode; [`podman_storage`]:
//!   where its storage is and which layers it holds, read from its files.
//! - [`units`]: systemd units (start, stop, restart, state, dependents,
//!   daemon-reload, the journal) and waiting for a start's result.

pub mod disk;
pub mod loopdev;
pub mod mount;
pub mod podman;
pub mod podman_storage;
pub mod reboot;
pub mod scripts;
pub mod systemd;
pub mod units;
