//! Deployments: root trees checked out from the store, their metadata, the
//! deployment set's state (booted, staged, rollback, pins), the three-way /etc
//! merge and the persistent /var of each stateroot.

pub mod checkout;
pub mod etc_merge;
mod fsat;
pub mod tree;
