//! The host boundary: everything hostctl runs or asks of the kernel outside
//! its own store — rebooting, mounting, disk tools, loop devices, systemd and
//! health-check scripts. Each tool sits behind one trait with the real
//! implementation and a recording fake, so the layers above decide and the
//! unit tests check those decisions without touching the machine.

pub mod disk;
pub mod loopdev;
pub mod mount;
pub mod reboot;
pub mod scripts;
pub mod systemd;
