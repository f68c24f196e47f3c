//! Deployments: root trees checked out from the store, their metadata, the
//! deployment set's state (booted, staged, rollback, pins), the three-way /etc
//! merge and the persistent /var of each stateroot; the update flow as
//! explicit steps ([`upgrade`]), rollback and pins ([`rollback`]) and the
//! finalize-at-shutdown policy ([`finalize`]); the stage hook that records
//! the units already failed before an update ([`failed_before`]).

pub mod booted;
pub mod checkout;
pub mod cleanup;
pub mod config_diff;
pub mod deployment;
pub mod etc_merge;
pub mod failed_before;
pub mod finalize;
mod fsat;
pub mod fsck;
pub mod hooks;
pub mod images;
pub mod leftovers;
pub mod preflight;
pub mod rollback;
pub mod stage;
pub mod state;
pub mod status;
pub mod tree;
pub mod upgrade;
pub mod usr_overlay;
pub mod var;
