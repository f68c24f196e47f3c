//! The FleetLock v1 wire format (as Zincati and its lock servers speak it)
//! and hostctl's extensions to it, as serde types shared by the client in the
//! agent and the lock server.
//!
//! FleetLock v1: `POST /v1/pre-reboot` takes a reboot slot for a client,
//! `POST /v1/steady-state` gives it back. Every request carries the header
//! `fleet-lock-protocol: true` and the body `{"client_params":{"id","group"}}`;
//! a refusal is a non-2xx status with the body `{"kind","value"}`.
//! Extensions (hostctl's): `POST /v1/report` and `GET /v1/status`.

use serde::{Deserialize, Serialize};

/// The header every FleetLock request carries, with the value `true`.
pub const PROTOCOL_HEADER: &str = "fleet-lock-protocol";
/// The path that takes a reboot slot.
pub const PRE_REBOOT_PATH: &str = "/v1/pre-reboot";
/// The path that gives a reboot slot back.
pub const STEADY_STATE_PATH: &str = "/v1/steady-state";
/// hostctl's extension: a host reports its health after an update.
pub const REPORT_PATH: &str = "/v1/report";
/// hostctl's extension: holders, per-release health counts, halted releases.
pub const STATUS_PATH: &str = "/v1/status";
/// The group a client belongs to when its configuration names none
/// (Zincati's default).
pub const DEFAULT_GROUP: &str = "default";

/// Who is asking: the body's `client_params`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientParams {
    /// The host's identity; Zincati sends its app-specific machine id.
    pub id: String,
    /// The reboot group the host belongs to.
    pub group: String,
}

/// The body of `pre-reboot` and `steady-state` requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRequest {
    /// Who is asking.
    pub client_params: ClientParams,
}

/// The body of every refusal: a machine-readable kind and a human-readable
/// value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// What went wrong, as a stable word (`failed_lock`, `bad_request`, ...).
    pub kind: String,
    /// What went wrong, for a person.
    pub value: String,
}
