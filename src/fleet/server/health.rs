//! Health reports and halts: `POST /v1/report` records a host's last word on
//! a release; when the unhealthy reports on it reach its threshold the
//! release is halted in etcd, and `pre-reboot` for it is refused until an
//! administrator resumes it (`hostctl fleet resume`).
//!
//! The threshold is the release's own, from its signed rollout metadata
//! (`hostctl fleet release --halt-after`): the agent read and verified it,
//! and sends it with each report; a report without one (another client) is
//! judged by the server's `--halt-after`. After a resume, only reports made
//! since count towards the threshold again.

use anyhow::Result;
use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};

use super::etcd::{now_rfc3339, Etcd, HaltRecord, ReportRecord};
use crate::fleet::protocol::HaltAfter;

/// What a report came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    /// The release is halted now.
    pub halted: bool,
}

/// Reports and halts, in etcd.
#[derive(Clone)]
pub struct Health {
    etcd: Etcd,
    default_halt_after: HaltAfter,
}

/// The unhealthy and total reports on a release since its last resume.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Hosts whose last report was unhealthy.
    pub unhealthy: u64,
    /// Hosts that reported.
    pub reported: u64,
}

impl Health {
    /// Reports kept in `etcd`, judged by `default_halt_after` when a report
    /// carries no threshold.
    pub fn new(etcd: Etcd, default_halt_after: HaltAfter) -> Health {
        Health { etcd, default_halt_after }
    }

    /// Records `id`'s report on `digest` and halts the release when the
    /// unhealthy reports reach the threshold.
    pub async fn report(
        &self,
        id: &str,
        group: &str,
        digest: &str,
        healthy: bool,
        detail: &str,
        halt_after: Option<HaltAfter>,
    ) -> Result<Reported> {
        let record = ReportRecord { group: group.into(), healthy, detail: detail.into(), at: now_rfc3339() };
        let key = self.etcd.key(&format!("reports/{digest}/{id}"));
        let value = serde_json::to_vec(&record)?;
        self.etcd.put("record a report", &key, value.clone()).await?;
        let threshold = halt_after.unwrap_or(self.default_halt_after);
        if self.halt_reason(digest).await?.is_some() {
            return Ok(Reported { halted: true });
        }
        if healthy {
            return Ok(Reported { halted: false });
        }
        let tally = self.tally(digest).await?;
        if !threshold.reached(tally.unhealthy, tally.reported) {
            tracing::info!(
                "release {digest}: {} of {} host(s) unhealthy, below the threshold {threshold}",
                tally.unhealthy,
                tally.reported
            );
            return Ok(Reported { halted: false });
        }
        let reason = format!(
            "{} of {} reporting host(s) unhealthy (threshold {threshold}); last: {id}: {detail}",
            tally.unhealthy, tally.reported
        );
        tracing::warn!("halting release {digest}: {reason}");
        self.halt(digest, &reason).await?;
        Ok(Reported { halted: true })
    }

    /// The unhealthy and total reports on `digest` since it was last resumed.
    pub async fn tally(&self, digest: &str) -> Result<Tally> {
        let prefix = self.etcd.key(&format!("reports/{digest}/"));
        let resumed = self.etcd.key(&format!("resumed/{digest}"));
        let reads = Txn::new().and_then(vec![
            TxnOp::get(resumed.as_str(), None),
            TxnOp::get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
        ]);
        let got = self.etcd.txn("count reports", reads.clone()).await?;
        let r = got.op_responses();
        let kvs = |i: usize| match &r[i] {
            etcd_client::TxnOpResponse::Get(g) => g.kvs().to_vec(),
            _ => Vec::new(),
        };
        let since = kvs(0).first().map(|kv| kv.mod_revision()).unwrap_or(0);
        let mut tally = Tally::default();
        for kv in kvs(1).iter().filter(|kv| kv.mod_revision() > since) {
            let Ok(report) = serde_json::from_slice::<ReportRecord>(kv.value()) else { continue };
            tally.reported += 1;
            tally.unhealthy += u64::from(!report.healthy);
        }
        Ok(tally)
    }

    /// Halts `digest` (unless it is halted already: the first reason stays).
    pub async fn halt(&self, digest: &str, reason: &str) -> Result<bool> {
        let key = self.etcd.key(&format!("halted/{digest}"));
        let value = serde_json::to_vec(&HaltRecord { reason: reason.into(), at: now_rfc3339() })?;
        let txn = Txn::new()
            .when(vec![Compare::version(key.as_str(), CompareOp::Equal, 0)])
            .and_then(vec![TxnOp::put(key.as_str(), value, None)]);
        Ok(self.etcd.txn("halt a release", txn.clone()).await?.succeeded())
    }

    /// Lifts the halt of `digest`; the unhealthy reports made so far no
    /// longer count towards its threshold. Whether it was halted.
    pub async fn resume(&self, digest: &str) -> Result<bool> {
        let halted = self.etcd.key(&format!("halted/{digest}"));
        let resumed = self.etcd.key(&format!("resumed/{digest}"));
        let txn = Txn::new()
            .and_then(vec![TxnOp::delete(halted.as_str(), None), TxnOp::put(resumed.as_str(), now_rfc3339(), None)]);
        let done = self.etcd.txn("resume a release", txn.clone()).await?;
        Ok(matches!(done.op_responses().first(), Some(etcd_client::TxnOpResponse::Delete(d)) if d.deleted() > 0))
    }

    /// Why `digest` is halted, if it is.
    pub async fn halt_reason(&self, digest: &str) -> Result<Option<String>> {
        let key = self.etcd.key(&format!("halted/{digest}"));
        let mut got = self.etcd.get("read a halt", &key, None).await?;
        Ok(got.take_kvs().first().map(|kv| {
            serde_json::from_slice::<HaltRecord>(kv.value()).map(|h| h.reason).unwrap_or_else(|_| "halted".into())
        }))
    }
}
