//! `GET /v1/status`: who holds the slots of each group, how each release
//! fares (healthy and unhealthy hosts by their last report) and which
//! releases are halted, read from etcd in one consistent snapshot.

use anyhow::Result;
use etcd_client::GetOptions;

use super::etcd::{Etcd, HaltRecord, HolderRecord, ReportRecord};
use crate::fleet::protocol::{GroupStatus, Holder, ReleaseStatus, StatusResponse};

/// Reads the fleet's state under the prefix; groups without a slot setting
/// show `default_slots`.
pub async fn read(etcd: &Etcd, default_slots: u32) -> Result<StatusResponse> {
    let prefix = etcd.prefix().to_string();
    let mut got = etcd
        .retry("read the fleet's state", |mut c| {
            let p = prefix.clone();
            async move { c.get(p, Some(GetOptions::new().with_prefix())).await }
        })
        .await?;
    let mut status = StatusResponse::default();
    let mut reports = Vec::new();
    for kv in got.take_kvs() {
        let Ok(key) = kv.key_str() else { continue };
        let Some(rest) = key.strip_prefix(prefix.as_str()) else { continue };
        let Some((kind, rest)) = rest.split_once('/') else { continue };
        match kind {
            "holders" => {
                let Some((group, id)) = rest.split_once('/') else { continue };
                let record: Option<HolderRecord> = serde_json::from_slice(kv.value()).ok();
                let g = group_entry(&mut status, group, default_slots);
                g.holders.push(Holder {
                    id: id.to_string(),
                    since: record.as_ref().map(|r| r.since.clone()).unwrap_or_default(),
                    digest: record.as_ref().and_then(|r| r.digest.clone()),
                    unhealthy: record.is_some_and(|r| r.unhealthy),
                });
            }
            "slots" => {
                let n = kv.value_str().ok().and_then(|v| v.parse().ok()).unwrap_or(default_slots);
                group_entry(&mut status, rest, default_slots).slots = n;
            }
            "reports" => {
                let Some((digest, _id)) = rest.split_once('/') else { continue };
                if let Ok(r) = serde_json::from_slice::<ReportRecord>(kv.value()) {
                    reports.push((digest.to_string(), r.healthy));
                }
            }
            "halted" => {
                let reason = serde_json::from_slice::<HaltRecord>(kv.value()).map(|h| h.reason).ok();
                let r = status.releases.entry(rest.to_string()).or_default();
                r.halted = true;
                r.halt_reason = reason;
                status.halted.push(rest.to_string());
            }
            _ => {}
        }
    }
    for (digest, healthy) in reports {
        let r: &mut ReleaseStatus = status.releases.entry(digest).or_default();
        if healthy {
            r.healthy += 1;
        } else {
            r.unhealthy += 1;
        }
    }
    for g in status.groups.values_mut() {
        g.holders.sort_by(|a, b| a.id.cmp(&b.id));
    }
    status.halted.sort();
    Ok(status)
}

fn group_entry<'a>(status: &'a mut StatusResponse, group: &str, default_slots: u32) -> &'a mut GroupStatus {
    status.groups.entry(group.to_string()).or_insert_with(|| GroupStatus { slots: default_slots, holders: Vec::new() })
}
