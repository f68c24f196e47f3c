//! The boundary to the tools hostctl runs on the host: each tool behind one
//! trait, with the real implementation (which runs the tool) and a recording
//! fake (which the unit tests of the decision logic above it drive).
//!
//! - [`podman`]: images and containers in podman's storage, read as typed
//!   JSON, and podman's Quadlet generator in dry-run mode.
//! - [`units`]: systemd units (start, stop, restart, state, dependents,
//!   daemon-reload, the journal) and waiting for a start's result.

pub mod podman;
pub mod units;
