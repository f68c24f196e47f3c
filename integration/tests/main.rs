//! hostctl's integration tests, as one test binary (one link step for all):
//! the CLI against a real registry and images made by real tools.

mod support;

mod apps;
mod authoring;
mod checkout;
mod chunked;
mod cli;
mod deploy;
mod failures;
mod fleet;
mod fleet_client;
mod fleet_server;
mod format;
mod fsck;
mod imgref;
mod install;
mod layout;
mod pull;
mod rechunk;
mod registry;
mod sources;
mod store;
mod tar_compat;
mod tar_table;
mod trust;
mod trust_bundles;
mod trust_update_root;
mod usr_overlay;
