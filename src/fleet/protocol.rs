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

/// hostctl's addition to `pre-reboot`: the digest of the release the host is
/// about to reboot into. A server that knows the release is halted refuses
/// the slot; other FleetLock servers ignore the header, and a request
/// without it (Zincati's) is never refused for a halt.
pub const RELEASE_HEADER: &str = "hostctl-release-digest";

/// The `kind` of each refusal hostctl's server sends (a small, fixed set, as
/// the protocol asks).
pub mod kind {
    /// Every slot of the group is held by other hosts.
    pub const SEMAPHORE_FULL: &str = "failed_lock_semaphore_full";
    /// The release named by [`super::RELEASE_HEADER`] is halted.
    pub const RELEASE_HALTED: &str = "failed_lock_release_halted";
    /// The request lacks the `fleet-lock-protocol: true` header.
    pub const MISSING_HEADER: &str = "missing_protocol_header";
    /// The body is not the JSON the path expects, or a field is invalid.
    pub const BAD_REQUEST: &str = "bad_request";
    /// The path exists but not for this method.
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    /// No such path.
    pub const NOT_FOUND: &str = "not_found";
    /// The client certificate names another host than the body's id (403).
    pub const FORBIDDEN: &str = "forbidden_client_id";
    /// The server checks client certificates and the client presented none
    /// it could read a host id from (403).
    pub const CERTIFICATE_REQUIRED: &str = "client_certificate_required";
    /// The server could not reach etcd (retrying later may help).
    pub const STATE_UNAVAILABLE: &str = "state_unavailable";
}

/// How many unhealthy hosts halt a release: a count (`3`) or a share of the
/// hosts that reported on it (`2.5%`), written as `--halt-after` takes it.
/// One type for every side: `fleet release` writes it into the signed rollout
/// metadata, the agent sends it in its reports, the server judges by it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HaltAfter {
    /// Halt when this many hosts report the release unhealthy.
    Hosts(u32),
    /// Halt when at least this percentage (above 0, at most 100) of the hosts
    /// that reported on the release report it unhealthy (and at least one does).
    Percent(f64),
}

impl Default for HaltAfter {
    /// The first unhealthy host halts the release.
    fn default() -> Self {
        HaltAfter::Hosts(1)
    }
}

impl HaltAfter {
    /// Whether `unhealthy` unhealthy reports out of `reported` reach the threshold.
    pub fn reached(self, unhealthy: u64, reported: u64) -> bool {
        match self {
            HaltAfter::Hosts(n) => unhealthy >= u64::from(n.max(1)),
            HaltAfter::Percent(p) => unhealthy > 0 && unhealthy as f64 * 100.0 >= p * reported as f64,
        }
    }

    /// The threshold in words (`2 unhealthy host(s)`, `2.5% of the hosts that reported`).
    pub fn describe(self) -> String {
        match self {
            HaltAfter::Hosts(n) => format!("{n} unhealthy host(s)"),
            HaltAfter::Percent(p) => format!("{p}% unhealthy hosts of those that reported"),
        }
    }
}

impl std::fmt::Display for HaltAfter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HaltAfter::Hosts(n) => write!(f, "{n}"),
            HaltAfter::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl std::str::FromStr for HaltAfter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("{s:?} is not a halt threshold: write a number of hosts (3) or a percentage above 0 and at most 100 (2.5%)")
        };
        match s.strip_suffix('%') {
            // Digits and a decimal point only: no signs, exponents, NaN or inf.
            Some(p) if !p.bytes().all(|b| b.is_ascii_digit() || b == b'.') => Err(bad()),
            Some(p) => match p.parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 100.0 => Ok(HaltAfter::Percent(p)),
                _ => Err(bad()),
            },
            None => match s.parse::<u32>() {
                Ok(n @ 1..) => Ok(HaltAfter::Hosts(n)),
                _ => Err(bad()),
            },
        }
    }
}

impl Serialize for HaltAfter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HaltAfter {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The body of `POST /v1/report`: how a host fares on a release after it
/// booted into it. The agent's client sends it, the server reads it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    /// Who reports.
    pub client_params: ClientParams,
    /// The release (image manifest digest, `sha256:…`) the host runs or tried.
    pub digest: String,
    /// Whether its health checks passed.
    pub healthy: bool,
    /// What failed, or anything worth showing in `fleet status`.
    #[serde(default)]
    pub detail: String,
    /// The release's halt threshold as its signed rollout metadata gives it;
    /// absent: the server's `--halt-after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halt_after: Option<HaltAfter>,
}

/// The answer to `POST /v1/report`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportResponse {
    /// Whether the release is halted now (by this report or before it).
    pub halted: bool,
    /// Whether the host keeps its slot because it reported itself unhealthy.
    pub slot_kept: bool,
}

/// The answer to `GET /v1/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    /// Every group with a slot setting or a holder, by name.
    pub groups: std::collections::BTreeMap<String, GroupStatus>,
    /// Every release a host reported on, by digest.
    pub releases: std::collections::BTreeMap<String, ReleaseStatus>,
    /// The halted releases' digests, sorted.
    pub halted: Vec<String>,
}

/// One group in [`StatusResponse`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// How many hosts may hold a slot at once.
    pub slots: u32,
    /// Who holds one now, sorted by id.
    pub holders: Vec<Holder>,
}

/// A host holding a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The host's id.
    pub id: String,
    /// When it took the slot (RFC 3339, UTC).
    pub since: String,
    /// The release it took the slot for, when it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// It reported itself unhealthy, so it keeps the slot until it releases
    /// it (no TTL).
    pub unhealthy: bool,
}

/// One release in [`StatusResponse`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseStatus {
    /// Hosts whose last report on it was healthy.
    pub healthy: u64,
    /// Hosts whose last report on it was unhealthy.
    pub unhealthy: u64,
    /// Whether it is halted.
    pub halted: bool,
    /// Why it was halted, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub halt_reason: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halt_thresholds_parse_as_fleet_release_writes_them() {
        assert_eq!("3".parse(), Ok(HaltAfter::Hosts(3)));
        assert_eq!("10%".parse(), Ok(HaltAfter::Percent(10.0)));
        assert_eq!("100%".parse(), Ok(HaltAfter::Percent(100.0)));
        // Fractions as rollout metadata has always allowed them (`--halt-after 2.5%`).
        assert_eq!("2.5%".parse(), Ok(HaltAfter::Percent(2.5)));
        for bad in ["0", "0%", "101%", "-1", "", "%", "3 hosts", "NaN%", "inf%", "1e1%", "-0.5%"] {
            assert!(bad.parse::<HaltAfter>().is_err(), "{bad:?} was accepted");
        }
        let json = serde_json::to_string(&HaltAfter::Percent(25.0)).unwrap();
        assert_eq!(json, "\"25%\"");
        assert_eq!(serde_json::from_str::<HaltAfter>(&json).unwrap(), HaltAfter::Percent(25.0));
        assert_eq!(serde_json::to_string(&HaltAfter::Percent(2.5)).unwrap(), "\"2.5%\"");
    }

    #[test]
    fn halt_thresholds_are_reached_by_unhealthy_reports() {
        // (threshold, unhealthy, reported, halts)
        let table = [
            (HaltAfter::Hosts(2), 0, 5, false),
            (HaltAfter::Hosts(2), 1, 5, false),
            (HaltAfter::Hosts(2), 2, 5, true),
            (HaltAfter::Hosts(1), 1, 1, true),
            (HaltAfter::Percent(10.0), 0, 0, false),
            (HaltAfter::Percent(10.0), 1, 11, false),
            (HaltAfter::Percent(10.0), 1, 10, true),
            (HaltAfter::Percent(50.0), 1, 1, true),
            (HaltAfter::Percent(100.0), 9, 10, false),
            (HaltAfter::Percent(2.5), 1, 40, true),
            (HaltAfter::Percent(2.5), 1, 41, false),
        ];
        for (t, unhealthy, reported, halts) in table {
            assert_eq!(t.reached(unhealthy, reported), halts, "{t} with {unhealthy} of {reported}");
        }
    }

    #[test]
    fn a_report_with_an_unknown_field_is_refused() {
        let ok = r#"{"client_params":{"id":"h","group":"g"},"digest":"sha256:00","healthy":true}"#;
        let r: ReportRequest = serde_json::from_str(ok).unwrap();
        assert_eq!((r.detail.as_str(), r.halt_after), ("", None));
        let extra = r#"{"client_params":{"id":"h","group":"g"},"digest":"sha256:00","healthy":true,"healty":false}"#;
        assert!(serde_json::from_str::<ReportRequest>(extra).is_err());
    }
}
