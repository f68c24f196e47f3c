//! The agent's loop: one [`Agent::step`] does the work of the current phase
//! (see [`super::state`]) and says when to step again; [`Agent::run`] steps
//! forever, or until it would have to wait (`--once`, for a timer).
//!
//! The update itself goes through the update flow's steps
//! ([`crate::deploy::upgrade::Update`]): check, pull, stage (held back from
//! the next boot), and — only once the reboot gate opens (a maintenance
//! window, a FleetLock slot) — finalize and reboot. After the reboot the
//! verdict of the health checks (`hostctl-health.service`'s record) decides:
//! healthy gives the slot back; unhealthy (the boot loader has rolled back)
//! keeps it, reports the host unhealthy and never takes that digest again.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result};
use time::{Duration, OffsetDateTime};

use super::clock::Clock;
use super::config::{AgentConfig, Strategy};
use super::state::{self, AgentState, Health, Phase, Target};
use crate::apps::bound::BoundImagesHook;
use crate::deploy::failed_before::FailedBeforeUpdate;
use crate::deploy::hooks::StageHook;
use crate::deploy::stage::{Deployer, StageOptions};
use crate::deploy::upgrade::{check_update, Update};
use crate::fleet::client::LockClient;
use crate::fleet::release;
use crate::fleet::waves::{eligibility, format_time, Eligibility, Position};
use crate::host::podman::{Podman, PullSettings};
use crate::host::reboot::Reboot;
use crate::host::units::Systemctl;
use crate::imgref::ImageRef;
use crate::pull::PullOptions;
use crate::sysroot::Sysroot;

/// The first retry delay after a failure; it doubles up to [`MAX_BACKOFF`].
pub const BASE_BACKOFF: Duration = Duration::seconds(10);
/// The longest delay between retries.
pub const MAX_BACKOFF: Duration = Duration::minutes(10);
/// How often the agent looks for the reboot and the health checks' verdict.
pub const POLL: Duration = Duration::seconds(15);

/// The delay before retry number `failures` (1-based).
pub fn backoff(failures: u32) -> Duration {
    let factor = 1i32 << failures.saturating_sub(1).min(10);
    (BASE_BACKOFF * factor).min(MAX_BACKOFF)
}

/// One host's agent.
pub struct Agent {
    /// The sysroot (`/` on a host); the agent's record and configuration are under it.
    pub root: PathBuf,
    /// The boot directory.
    pub boot: PathBuf,
    /// The configuration.
    pub config: AgentConfig,
    /// How to pull (registry options, platform, trust policy).
    pub pull: PullOptions,
    /// `--tls-verify` was given (else the tracked image's recorded choice holds).
    pub tls_verify_given: bool,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// How to reboot.
    pub reboot: Arc<dyn Reboot>,
    /// The host's identity (its machine-id): its place in every release, and its FleetLock id.
    pub machine_id: String,
    /// How long to wait for the sysroot lock.
    pub lock_wait: std::time::Duration,
    /// The podman that pulls and pins the new deployment's bound images when
    /// it is staged (as `upgrade` does); `None` stages without them.
    pub podman: Option<Arc<dyn Podman>>,
    /// Registry settings for those pulls.
    pub bound_pull: PullSettings,
}

/// The machine-id of the system under `root` (`etc/machine-id`).
pub fn machine_id(root: &std::path::Path) -> Result<String> {
    let p = root.join("etc/machine-id");
    let id = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    let id = id.trim().to_string();
    anyhow::ensure!(!id.is_empty(), "{} is empty", p.display());
    Ok(id)
}

impl Agent {
    fn lock_client(&self) -> Result<Option<LockClient>> {
        match &self.config.strategy {
            Strategy::FleetLock { url, group } => {
                Ok(Some(LockClient::with_tls(url, &self.machine_id, group, &self.config.lock_tls)?))
            }
            _ => Ok(None),
        }
    }

    fn open(&self) -> Result<(Sysroot, Deployer)> {
        let sysroot = Sysroot::open(&self.root)?;
        let d = Deployer::open(&sysroot, &self.boot)?;
        Ok((sysroot, d))
    }

    /// The image followed and the pull options for it.
    fn image(&self, d: &Deployer) -> Result<(ImageRef, PullOptions)> {
        let mut opts = self.pull.clone();
        let text = match &self.config.image {
            Some(i) => i.clone(),
            None => {
                let spec = d
                    .load_state()?
                    .spec
                    .context("no image to follow: set `image` in agent.toml or run `hostctl switch IMAGE` first")?;
                spec.transport_options.apply(&mut opts.registry, self.tls_verify_given);
                spec.image
            }
        };
        let imgref: ImageRef = text.parse().with_context(|| format!("the followed image {text:?}"))?;
        Ok((imgref, opts))
    }

    /// Runs steps until stopped; with `once`, until a step would have to wait.
    pub async fn run(&self, once: bool) -> Result<AgentState> {
        loop {
            let next = self.step().await?;
            let now = self.clock.now();
            if next <= now {
                continue;
            }
            if once || crate::interrupt::is_ending() {
                return self.load();
            }
            let wait = (next - now).min(Duration::minutes(5)).max(Duration::seconds(1));
            tokio::time::sleep(wait.unsigned_abs()).await;
        }
    }

    /// The record, or a fresh one.
    pub fn load(&self) -> Result<AgentState> {
        Ok(state::load(&self.root)?.unwrap_or_else(|| AgentState::new(self.clock.now())))
    }

    /// Does the current phase's work, writes the record, and says when to step again.
    pub async fn step(&self) -> Result<OffsetDateTime> {
        let before = state::load(&self.root)?;
        let mut s = before.clone().unwrap_or_else(|| AgentState::new(self.clock.now()));
        let now = self.clock.now();
        let next = match self.act(&mut s, now).await {
            Ok(next) => next,
            Err(e) => {
                s.failed(&e);
                now + backoff(s.failures)
            }
        };
        if next > now {
            s.next_attempt = Some(format_time(next));
        }
        // A step that decided nothing new (a wait not yet over) writes nothing.
        if before.as_ref() != Some(&s) {
            state::save(&self.root, &s)?;
        }
        Ok(next)
    }

    async fn act(&self, s: &mut AgentState, now: OffsetDateTime) -> Result<OffsetDateTime> {
        let interval = Duration::seconds(self.config.interval as i64);
        match s.phase {
            Phase::Steady => {
                let due = s.next_attempt.as_deref().and_then(parse_time).unwrap_or(now);
                if now < due {
                    return Ok(due);
                }
                s.transition(Phase::Checking, "time to check the followed image", now)?;
                Ok(now)
            }
            Phase::Checking => self.check(s, now, interval).await,
            Phase::UpdateAvailable => self.decide(s, now, interval).await,
            Phase::Downloading => self.download(s, now).await,
            Phase::Staged => {
                let gate = match &self.config.strategy {
                    Strategy::Immediate => "nothing (strategy immediate)".to_string(),
                    Strategy::Periodic { .. } => "a reboot window (strategy periodic)".to_string(),
                    Strategy::FleetLock { url, group } => format!("a reboot slot of group {group} from {url}"),
                };
                s.transition(Phase::Waiting, format!("staged; waiting for {gate}"), now)?;
                Ok(now)
            }
            Phase::Waiting => self.wait_for_gate(s, now).await,
            Phase::Rebooting => self.rebooted(s, now),
            Phase::CheckingHealth => self.health(s, now),
            Phase::Reporting => self.report(s, now, interval).await,
        }
    }

    fn to_steady(
        &self,
        s: &mut AgentState,
        why: String,
        now: OffsetDateTime,
        interval: Duration,
    ) -> Result<OffsetDateTime> {
        s.transition(Phase::Steady, why, now)?;
        Ok(now + interval)
    }

    async fn check(&self, s: &mut AgentState, now: OffsetDateTime, interval: Duration) -> Result<OffsetDateTime> {
        let (_sysroot, d) = self.open()?;
        let (imgref, opts) = self.image(&d)?;
        let booted = d.booted()?;
        let c = check_update(&d, booted.as_deref(), &imgref, &opts).await?;
        let manifest = c.latest().to_string();
        let subject = c.image.manifest.index_digest.clone().unwrap_or_else(|| c.latest().clone());
        if !c.update_available() {
            return self.to_steady(s, format!("{imgref} is at {subject}, which this host has"), now, interval);
        }
        let digest = subject.to_string();
        if s.unhealthy.contains(&digest) {
            return self.to_steady(
                s,
                format!("{imgref} is at {digest}, which failed its health check on this host: not taking it again"),
                now,
                interval,
            );
        }
        if let Some(lock) = self.lock_client()? {
            match lock.is_halted(&digest).await {
                Ok(true) => {
                    return self.to_steady(
                        s,
                        format!("the release {digest} is halted by the lock server"),
                        now,
                        interval,
                    )
                }
                Ok(false) => {}
                Err(e) => tracing::warn!("cannot ask the lock server whether {digest} is halted: {e}"),
            }
        }
        let search = match &imgref {
            ImageRef::Registry(r) => {
                release::find(c.image.source.as_ref(), opts.verifier.as_ref(), r, &subject).await?
            }
            _ => release::Search::default(),
        };
        let position = Position::of(&self.machine_id, &digest);
        let schedule = search.found.as_ref().map(|v| v.metadata.schedule.clone());
        let e = eligibility(position, schedule.as_ref(), now);
        let mut why = format!("{imgref} is at {digest}; position {:.6}; {e}", position.value());
        if !search.refused.is_empty() {
            why.push_str(&format!("; refused rollout metadata: {}", search.refused.join("; ")));
        }
        s.target = Some(Target {
            image: imgref.to_string(),
            digest,
            manifest_digest: manifest,
            deployment: None,
            release: search.found.as_ref().map(|v| v.artifact_digest.to_string()),
            schedule,
            halt_after: search.found.as_ref().map(|v| v.metadata.halt_after),
            position: position.value(),
        });
        s.transition(Phase::UpdateAvailable, why, now)?;
        Ok(now)
    }

    async fn decide(&self, s: &mut AgentState, now: OffsetDateTime, interval: Duration) -> Result<OffsetDateTime> {
        let t = s.target.clone().context("update available without a target")?;
        let recheck = parse_time(&s.since).unwrap_or(now) + interval;
        let e = eligibility(Position::new(t.position), t.schedule.as_ref(), now);
        let wait = |s: &mut AgentState, why: String, until: OffsetDateTime| -> Result<OffsetDateTime> {
            if now >= recheck {
                s.transition(Phase::Checking, format!("re-checking the image after the interval ({why})"), now)?;
                return Ok(now);
            }
            s.stay(why);
            Ok(until.min(recheck))
        };
        let released = match &e {
            Eligibility::NotReleased if self.config.require_release => {
                return wait(
                    s,
                    format!("{} has no verified rollout metadata and require_release is set", t.digest),
                    recheck,
                )
            }
            Eligibility::NotReleased => "no rollout metadata (require_release is off)".to_string(),
            Eligibility::Eligible { .. } => e.to_string(),
            Eligibility::BeforeStart { eligible_at, .. } | Eligibility::Waiting { eligible_at, .. } => {
                return wait(s, format!("not this host's turn: {e}"), *eligible_at)
            }
        };
        if let Strategy::Periodic { download: Some(w), .. } = &self.config.strategy {
            if w.open_until(now).is_none() {
                let next = w.next_open(now).unwrap_or(recheck);
                return wait(s, format!("outside the download windows; the next opens at {}", format_time(next)), next);
            }
        }
        // The release may have been halted while this host waited for its turn.
        if let Some(lock) = self.lock_client()? {
            match lock.is_halted(&t.digest).await {
                Ok(true) => {
                    s.transition(
                        Phase::Checking,
                        format!("the release {} was halted by the lock server", t.digest),
                        now,
                    )?;
                    return Ok(now);
                }
                Ok(false) => {}
                Err(e) => tracing::warn!("cannot ask the lock server whether {} is halted: {e}", t.digest),
            }
        }
        s.transition(Phase::Downloading, format!("downloading {}: {released}", t.digest), now)?;
        Ok(now)
    }

    async fn download(&self, s: &mut AgentState, now: OffsetDateTime) -> Result<OffsetDateTime> {
        let mut t = s.target.clone().context("downloading without a target")?;
        let (sysroot, d) = self.open()?;
        let _lock = sysroot.lock(self.lock_wait)?;
        let (imgref, opts) = self.image(&d)?;
        let mut u = Update::begin(&d)?;
        let c = u.check(&imgref, &opts).await?;
        if c.latest().to_string() != t.manifest_digest {
            if let Some(id) =
                u.pending().filter(|_| c.current.as_ref().map(|d| d.to_string()) == Some(t.manifest_digest.clone()))
            {
                // Staged before a crash: carry on from there.
                t.deployment = Some(id.to_string());
                s.target = Some(t);
                s.transition(Phase::Staged, format!("deployment {id} was staged before the agent restarted"), now)?;
                return Ok(now);
            }
            let why = format!(
                "{imgref} moved from {} to {} while downloading; checking again",
                t.manifest_digest,
                c.latest()
            );
            s.transition(Phase::Steady, why, now)?;
            return Ok(now);
        }
        if !c.update_available() {
            if let Some(id) = u.pending() {
                t.deployment = Some(id.to_string());
                s.target = Some(t);
                s.transition(Phase::Staged, format!("deployment {id} was staged before the agent restarted"), now)?;
                return Ok(now);
            }
            s.transition(Phase::Steady, format!("{} is already deployed", t.manifest_digest), now)?;
            return Ok(now);
        }
        let pulled = u.pull(c, &opts).await?;
        // Staged locked, as `upgrade --download-only` does: a reboot for any
        // other reason does not boot it before the gate opens.
        let bound = self.podman.as_deref().map(|podman| BoundImagesHook {
            podman,
            pull: self.bound_pull.clone(),
            state_dir: self.root.join(crate::apps::bound::STATE_DIR),
        });
        let failed_before = FailedBeforeUpdate { units: &Systemctl };
        let mut hooks: Vec<&dyn StageHook> = bound.iter().map(|h| h as &dyn StageHook).collect();
        hooks.push(&failed_before);
        let staged = u.stage(&pulled, StageOptions { spec: None, locked: true }, &hooks)?;
        let id = staged.id.to_string();
        t.deployment = Some(id.clone());
        s.target = Some(t);
        s.transition(
            Phase::Staged,
            format!("staged deployment {id}, held back from the next boot until the reboot gate opens"),
            now,
        )?;
        Ok(now)
    }

    async fn wait_for_gate(&self, s: &mut AgentState, now: OffsetDateTime) -> Result<OffsetDateTime> {
        let t = s.target.clone().context("waiting without a target")?;
        let why = match &self.config.strategy {
            Strategy::Immediate => "strategy immediate".to_string(),
            Strategy::Periodic { reboot, .. } => match reboot.open_until(now) {
                Some(close) => format!("inside a reboot window (until {})", format_time(close)),
                None => {
                    let next = reboot.next_open(now).unwrap_or(now + Duration::days(1));
                    s.stay(format!("outside the reboot windows; the next opens at {}", format_time(next)));
                    return Ok(next);
                }
            },
            Strategy::FleetLock { url, group } => {
                if !s.holds_slot {
                    let lock = self.lock_client()?.expect("strategy fleet_lock");
                    let outcome = match lock.is_halted(&t.digest).await {
                        Ok(true) => None,
                        _ => match lock.pre_reboot(Some(&t.digest)).await {
                            Ok(()) => Some(Ok(())),
                            Err(e) if e.is_release_halted() => None,
                            Err(e) => Some(Err(e)),
                        },
                    };
                    let Some(taken) = outcome else {
                        s.transition(
                            Phase::Steady,
                            format!(
                                "the release {} was halted by the lock server: not rebooting into deployment {} \
                                 (it stays staged, held back, until a newer image replaces it)",
                                t.digest,
                                t.deployment.as_deref().unwrap_or("?")
                            ),
                            now,
                        )?;
                        return Ok(now + Duration::seconds(self.config.interval as i64));
                    };
                    if let Err(e) = taken {
                        s.failures += 1;
                        let retry = backoff(s.failures);
                        let what = if e.is_refusal() { "refused a slot" } else { "is down" };
                        s.last_error = Some(e.to_string());
                        s.stay(format!(
                            "the lock server {what}: keeping deployment {} staged, not rebooting; retrying in {}s (attempt {})",
                            t.deployment.as_deref().unwrap_or("?"),
                            retry.whole_seconds(),
                            s.failures
                        ));
                        tracing::warn!("{e}");
                        return Ok(now + retry);
                    }
                    s.holds_slot = true;
                }
                format!("holding a reboot slot of group {group} from {url}")
            }
        };
        let (sysroot, d) = self.open()?;
        let lock = sysroot.lock(self.lock_wait)?;
        let mut u = Update::begin(&d)?;
        let f = u.finalize()?;
        if !f.boots_next() {
            drop(lock);
            s.transition(Phase::Steady, "the staged deployment is gone (removed by hand?); checking again", now)?;
            return Ok(now);
        }
        s.transition(
            Phase::Rebooting,
            format!("rebooting into deployment {}: {why}", t.deployment.as_deref().unwrap_or("?")),
            now,
        )?;
        // Written before the reboot: the next start resumes from here.
        state::save(&self.root, s)?;
        drop(lock);
        u.reboot(self.reboot.as_ref())?;
        Ok(now + POLL)
    }

    fn rebooted(&self, s: &mut AgentState, now: OffsetDateTime) -> Result<OffsetDateTime> {
        let t = s.target.clone().context("rebooting without a target")?;
        let id = t.deployment.clone().context("rebooting without a deployment")?;
        let (_sysroot, d) = self.open()?;
        let booted = d.booted()?;
        if booted.as_deref() == Some(id.as_str()) {
            s.transition(Phase::CheckingHealth, format!("booted deployment {id}"), now)?;
            return Ok(now);
        }
        if crate::boot::health::read_record(&self.root, &id).is_some_and(|r| !r.passed) {
            s.transition(
                Phase::CheckingHealth,
                format!(
                    "deployment {id} failed its health check and the host rolled back to {}",
                    booted.as_deref().unwrap_or("?")
                ),
                now,
            )?;
            return Ok(now);
        }
        s.stay(format!("waiting for the reboot into {id}"));
        Ok(now + POLL)
    }

    fn health(&self, s: &mut AgentState, now: OffsetDateTime) -> Result<OffsetDateTime> {
        let t = s.target.clone().context("checking health without a target")?;
        let id = t.deployment.clone().context("checking health without a deployment")?;
        let Some(rec) = crate::boot::health::read_record(&self.root, &id) else {
            s.stay(format!("waiting for the health checks of deployment {id} (hostctl-health.service)"));
            return Ok(now + POLL);
        };
        let detail = match rec.checks.iter().find(|c| !c.passed) {
            Some(c) => format!("health check {} failed: {}", c.name, c.detail),
            None => format!("all {} health check(s) passed", rec.checks.len()),
        };
        s.health =
            Some(Health { digest: t.digest.clone(), deployment: id, healthy: rec.passed, detail: detail.clone() });
        let verdict = if rec.passed { "healthy" } else { "unhealthy" };
        s.transition(Phase::Reporting, format!("{}: {verdict}: {detail}", t.digest), now)?;
        Ok(now)
    }

    async fn report(&self, s: &mut AgentState, now: OffsetDateTime, interval: Duration) -> Result<OffsetDateTime> {
        let h = s.health.clone().context("reporting without a verdict")?;
        if let Some(lock) = self.lock_client()? {
            let halt_after = s.target.as_ref().filter(|t| t.digest == h.digest).and_then(|t| t.halt_after);
            lock.report(&h.digest, h.healthy, &h.detail, halt_after).await?;
            if h.healthy && s.holds_slot {
                lock.steady_state().await?;
                s.holds_slot = false;
            }
        }
        let why = if h.healthy {
            format!("{} is healthy ({}); reboot slot released", h.digest, h.detail)
        } else {
            s.unhealthy.push(h.digest.clone());
            let slot = if s.holds_slot {
                "; the reboot slot is kept, so this release cannot take down more hosts of the group"
            } else {
                ""
            };
            format!("{} is unhealthy ({}) and was rolled back{slot}", h.digest, h.detail)
        };
        self.to_steady(s, why, now, interval)
    }
}

fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_ten_minutes() {
        assert_eq!(backoff(1), Duration::seconds(10));
        assert_eq!(backoff(2), Duration::seconds(20));
        assert_eq!(backoff(4), Duration::seconds(80));
        assert_eq!(backoff(7), Duration::minutes(10));
        assert_eq!(backoff(100), Duration::minutes(10));
    }
}
