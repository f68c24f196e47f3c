//! Reboot slots: a counting semaphore per group, kept in etcd, taken by
//! `pre-reboot` and given back by `steady-state` (FleetLock's RecursiveLock
//! and UnlockIfHeld).
//!
//! A lock reads the group's holders, its slot count and its sequence key in
//! one transaction, then writes the holder in a second one that only passes
//! if the sequence key, the slot count and the halt mark are as read and the
//! holder is still absent; it also rewrites the sequence key, so of two locks
//! that read the same count only one passes (the other reads again). A holder
//! that expires only lowers the count, which the next lock reads. Each
//! holder's key rides on its own lease: a host that dies holding a slot
//! frees it after the holder TTL.

use std::time::Duration;

use anyhow::Result;
use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};

use super::etcd::{now_rfc3339, Etcd, HolderRecord};

/// How often a lock reads and tries again when other locks of its group
/// won the race in between.
const MAX_ATTEMPTS: usize = 64;

/// What a lock came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Locked {
    /// The host took a free slot.
    Taken,
    /// The host already held a slot (locks are recursive).
    AlreadyHeld,
}

/// Why a lock was refused.
#[derive(Debug, thiserror::Error)]
pub enum LockRefused {
    /// Every slot of the group is held.
    #[error("all {slots} slot(s) of group {group:?} are held")]
    Full {
        /// The group.
        group: String,
        /// Its slot count.
        slots: u32,
    },
    /// The release the host wants to reboot into is halted.
    #[error("release {digest} is halted: {reason}")]
    Halted {
        /// The release.
        digest: String,
        /// Why it was halted.
        reason: String,
    },
    /// Too many other locks of the group won the race, again and again.
    #[error("group {group:?} is too busy; try again")]
    Busy {
        /// The group.
        group: String,
    },
}

/// The slots of every group, in etcd.
#[derive(Clone)]
pub struct Slots {
    etcd: Etcd,
    default_slots: u32,
    ttl: Duration,
}

impl Slots {
    /// Slots kept in `etcd`, `default_slots` per group unless `fleet slots`
    /// set another count, each holder's lease lasting `ttl`.
    pub fn new(etcd: Etcd, default_slots: u32, ttl: Duration) -> Slots {
        Slots { etcd, default_slots, ttl }
    }

    /// The key of `id`'s slot in `group`.
    pub fn holder_key(&self, group: &str, id: &str) -> String {
        self.etcd.key(&format!("holders/{group}/{id}"))
    }

    /// The slot count of `group` stored in etcd, if `fleet slots` set one
    /// (else the server's `--slots`).
    pub fn slots_of(&self, stored: Option<&[u8]>) -> u32 {
        stored.and_then(|v| std::str::from_utf8(v).ok()).and_then(|v| v.parse().ok()).unwrap_or(self.default_slots)
    }

    /// The default slot count.
    pub fn default_slots(&self) -> u32 {
        self.default_slots
    }

    /// Takes a slot of `group` for `id` (`pre-reboot`), unless the group is
    /// full or the release `digest` (when given) is halted.
    pub async fn lock(&self, group: &str, id: &str, digest: Option<&str>) -> Result<Locked> {
        let holder = self.holder_key(group, id);
        let holders = self.etcd.key(&format!("holders/{group}/"));
        let seq = self.etcd.key(&format!("seq/{group}"));
        let slots_key = self.etcd.key(&format!("slots/{group}"));
        let halted = digest.map(|d| self.etcd.key(&format!("halted/{d}")));
        let mut lease: Option<i64> = None;
        let outcome = async {
            for _ in 0..MAX_ATTEMPTS {
                let mut reads = vec![
                    TxnOp::get(holder.as_str(), Some(GetOptions::new().with_keys_only())),
                    TxnOp::get(holders.as_str(), Some(GetOptions::new().with_prefix().with_count_only())),
                    TxnOp::get(seq.as_str(), None),
                    TxnOp::get(slots_key.as_str(), None),
                ];
                if let Some(h) = &halted {
                    reads.push(TxnOp::get(h.as_str(), None));
                }
                let read = self.etcd.txn("read slots", Txn::new().and_then(reads)).await?;
                let r = read.op_responses();
                let (held, count, seq_rev, (slots_rev, slots_value), halt) =
                    (range_kvs(&r[0]), range_count(&r[1]), mod_rev(&r[2]), value(&r[3]), r.get(4).map(value));
                if !held.is_empty() {
                    return Ok(Locked::AlreadyHeld);
                }
                if let (Some(d), Some((rev, v))) = (digest, &halt) {
                    if *rev != 0 {
                        let reason =
                            serde_json::from_slice::<super::etcd::HaltRecord>(v.as_deref().unwrap_or_default())
                                .map(|h| h.reason)
                                .unwrap_or_else(|_| "halted".into());
                        return Err(LockRefused::Halted { digest: d.to_string(), reason }.into());
                    }
                }
                let slots = self.slots_of(slots_value.as_deref());
                if count >= i64::from(slots) {
                    return Err(LockRefused::Full { group: group.to_string(), slots }.into());
                }
                let lease_id = match lease {
                    Some(l) => l,
                    None => {
                        let ttl = self.ttl.as_secs().max(1) as i64;
                        let granted = self
                            .etcd
                            .retry("grant a lease", |mut c| async move { c.lease_grant(ttl, None).await })
                            .await?;
                        *lease.insert(granted.id())
                    }
                };
                let record =
                    HolderRecord { since: now_rfc3339(), digest: digest.map(str::to_string), unhealthy: false };
                let mut guards = vec![
                    Compare::version(holder.as_str(), CompareOp::Equal, 0),
                    Compare::mod_revision(seq.as_str(), CompareOp::Equal, seq_rev),
                    Compare::mod_revision(slots_key.as_str(), CompareOp::Equal, slots_rev),
                ];
                if let Some(h) = &halted {
                    guards.push(Compare::version(h.as_str(), CompareOp::Equal, 0));
                }
                let writes = vec![
                    TxnOp::put(
                        holder.as_str(),
                        serde_json::to_vec(&record)?,
                        Some(PutOptions::new().with_lease(lease_id)),
                    ),
                    TxnOp::put(seq.as_str(), "", None),
                ];
                let txn = Txn::new().when(guards).and_then(writes);
                let done = self.etcd.txn("take a slot", txn.clone()).await?;
                if done.succeeded() {
                    lease = None;
                    return Ok(Locked::Taken);
                }
            }
            Err(LockRefused::Busy { group: group.to_string() }.into())
        }
        .await;
        if let Some(unused) = lease {
            self.revoke_later(unused);
        }
        outcome
    }

    /// Gives back `id`'s slot in `group` if it holds one (`steady-state`);
    /// whether it held one. Another host's slot is never touched: the key
    /// is the caller's own.
    pub async fn unlock(&self, group: &str, id: &str) -> Result<bool> {
        let holder = self.holder_key(group, id);
        let mut deleted = self
            .etcd
            .retry("release a slot", |mut c| {
                let key = holder.clone();
                async move { c.delete(key, Some(etcd_client::DeleteOptions::new().with_prev_key())).await }
            })
            .await?;
        let prev = deleted.take_prev_kvs();
        for kv in &prev {
            if kv.lease() != 0 {
                self.revoke_later(kv.lease());
            }
        }
        Ok(!prev.is_empty())
    }

    /// Keeps `id`'s slot in `group` for good (no lease) because it reported
    /// itself unhealthy: a bad release must not free slots for more hosts
    /// of the group to reboot into it. Whether it held a slot.
    pub async fn keep(&self, group: &str, id: &str) -> Result<bool> {
        let holder = self.holder_key(group, id);
        for _ in 0..MAX_ATTEMPTS {
            let mut got = self.etcd.get("read a holder", &holder, None).await?;
            let Some(kv) = got.take_kvs().into_iter().next() else { return Ok(false) };
            let mut record: HolderRecord = serde_json::from_slice(kv.value()).unwrap_or(HolderRecord {
                since: now_rfc3339(),
                digest: None,
                unhealthy: false,
            });
            if record.unhealthy && kv.lease() == 0 {
                return Ok(true);
            }
            record.unhealthy = true;
            let txn = Txn::new()
                .when(vec![Compare::mod_revision(holder.as_str(), CompareOp::Equal, kv.mod_revision())])
                .and_then(vec![TxnOp::put(holder.as_str(), serde_json::to_vec(&record)?, None)]);
            if self.etcd.txn("keep a slot", txn.clone()).await?.succeeded() {
                if kv.lease() != 0 {
                    self.revoke_later(kv.lease());
                }
                return Ok(true);
            }
        }
        Err(LockRefused::Busy { group: group.to_string() }.into())
    }

    /// Sets `group`'s slot count (`fleet slots`).
    pub async fn set_slots(&self, group: &str, slots: u32) -> Result<()> {
        let key = self.etcd.key(&format!("slots/{group}"));
        self.etcd.put("set slots", &key, slots.to_string().into()).await?;
        Ok(())
    }

    /// Revokes a lease nobody needs any more, without waiting: its keys are
    /// gone or moved, and if the revoke fails the lease just runs out.
    fn revoke_later(&self, lease: i64) {
        let mut c = self.etcd.client();
        tokio::spawn(async move {
            if let Err(e) = c.lease_revoke(lease).await {
                tracing::debug!("revoking lease {lease:x}: {e}");
            }
        });
    }
}

fn range_kvs(r: &TxnOpResponse) -> Vec<etcd_client::KeyValue> {
    match r {
        TxnOpResponse::Get(g) => g.kvs().to_vec(),
        _ => Vec::new(),
    }
}

fn range_count(r: &TxnOpResponse) -> i64 {
    match r {
        TxnOpResponse::Get(g) => g.count(),
        _ => 0,
    }
}

fn mod_rev(r: &TxnOpResponse) -> i64 {
    range_kvs(r).first().map(|kv| kv.mod_revision()).unwrap_or(0)
}

/// A single key's mod revision (0 if absent) and value.
fn value(r: &TxnOpResponse) -> (i64, Option<Vec<u8>>) {
    match range_kvs(r).into_iter().next() {
        Some(kv) => (kv.mod_revision(), Some(kv.value().to_vec())),
        None => (0, None),
    }
}
