//! Fleet rollout from the registry: the FleetLock protocol hostctl speaks as
//! a client and serves as a lock server, the rollout metadata a release
//! carries in the registry, and the waves that decide when a host may take it.
//!
//! - [`protocol`]: FleetLock v1 and hostctl's extensions, as wire types.
//! - [`server`]: the lock server on etcd (`hostctl fleet server`).

pub mod protocol;
pub mod server;
