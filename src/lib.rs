//! hostctl: make a Linux host's operating system a container image.
//!
//! The library holds everything; `main.rs` only parses arguments, runs
//! [`cli::run`] and turns errors into exit codes. Modules, by concept:
//!
//! - [`imgref`], [`digest`]: names and content identities.
//! - [`oci`]: getting images from registries, OCI layouts and archives.
//! - [`store`]: the deduplicating content store and its layer pipeline.
//! - [`pull`]: the pull orchestration from a reference into the store.
//! - [`trust`]: policies and signature verification.
//! - [`deploy`]: deployments, state, /etc merge, /var.
//! - [`lint`]: `container lint`, the checks of an OS image's tree at build time.
//! - [`boot`]: boot entries, kernels, boot counting and health checks, root set-up at boot.
//! - [`install`]: new sysroots on disks and file systems.
//! - [`host`]: the tools and kernel calls hostctl uses outside its store, each behind a trait.
//! - [`sysroot`], [`fsutil`]: the physical root, its lock, crash-safe writes.
//! - [`mod@format`]: the on-disk format versions, the refusal of newer ones, migrations.
//! - [`progress`], [`interrupt`]: what the user sees while a command runs, and how it ends early.
//! - [`apps`]: apps as Podman Quadlet units, installed, updated, rolled back.
//! - [`fleet`]: the FleetLock protocol, rollout metadata and waves.
//! - [`agent`]: the update agent: strategies, the state machine, the loop.
//! - [`rechunk`]: rewriting an OS image into content-stable layers (`image rechunk`).

// Here rather than in Cargo.toml's [lints.rust]: that table applies to every
// target, so it would also demand docs in main.rs and the integration tests.
#![warn(missing_docs)]

pub mod agent;
pub mod apps;
pub mod boot;
pub mod cli;
pub mod deploy;
pub mod digest;
pub mod error;
pub mod fleet;
pub mod format;
pub mod fsutil;
pub mod host;
pub mod imgref;
pub mod install;
pub mod interrupt;
pub mod lint;
pub mod oci;
pub mod progress;
pub mod pull;
pub mod rechunk;
pub mod store;
pub mod sysroot;
pub mod trust;
pub mod util;
