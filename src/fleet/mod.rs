//! Fleet rollout from the registry: the FleetLock protocol hostctl speaks as
//! a client and serves as a lock server, the rollout metadata a release
//! carries in the registry, and the waves that decide when a host may take it.
//!
//! - [`protocol`]: FleetLock v1 and hostctl's extensions, as wire types.
//! - [`server`]: the lock server on etcd (`hostctl fleet server`).
//! - [`waves`]: the pure eligibility function over (position, schedule, now).
//! - [`release`]: the signed rollout metadata artifact: pushed, found, verified.
//! - [`client`]: the FleetLock client the agent takes and gives back slots with.

pub mod client;
pub mod protocol;
pub mod release;
pub mod server;
pub mod waves;
