//! Deployments: root trees checked out from the store, their metadata, the
//! deployment set's state (booted, staged, rollback, pins), the three-way /etc
//! merge and the persistent /var of each stateroot.

pub mod booted;
pub mod checkout;
pub mod cleanup;
pub mod deployment;
pub mod etc_merge;
mod fsat;
pub mod leftovers;
pub mod preflight;
pub mod reboot;
pub mod stage;
pub mod state;
pub mod status;
#[cfg(test)]
mod tar_compat;
pub mod tree;
pub mod upgrade;
pub mod var;
