//! `app update`: for each app that follows a tag, one manifest request to see
//! whether the tag's digest moved; if so, pull it with podman, restart the
//! unit and wait until it is up (active, or healthy with a health check). If
//! it does not come up, the previous image is put back under the reference
//! by its ID (re-tag), the unit is restarted, the units that depend on it
//! (`Requires=`, `BindsTo=`) are restarted too, and the app is reported
//! `rolled back` with the reason; the command then exits non-zero. The
//! image the failed update pulled is then removed when nothing uses it, or
//! kept in the app's record for `app remove --purge` ([`super::leftover`]).
//!
//! The report keeps podman auto-update's JSON fields and values (`Unit`,
//! `Container`, `ContainerName`, `ContainerID`, `Image`, `Policy`, `Updated`:
//! `true`, `false`, `pending`, `failed`, `rolled back`) and adds `FromDigest`,
//! `ToDigest` and `Reason`. A failed app keeps the error that failed it, so
//! that the command exits as that error calls for ([`failure`]: a full disk
//! while pulling is exit 6, a trust policy refusal 4).

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use serde::Serialize;

use super::bound::{PulledLedger, STATE_DIR};
use super::leftover::{remove_unused, Disposal};
use super::record::{now, AppRecord, FailedImage, UpdateRecord};
use super::Apps;
use crate::host::podman::ImageInfo;
use crate::host::units::{start_and_wait, Outcome, UnitState};

use crate::imgref::ImageRef;
use crate::oci::registry::RegistrySource;
use crate::oci::{ImageSource, RegistryOptions};

/// Where the digest a tag points at now comes from.
#[async_trait]
pub trait RemoteDigest: Send + Sync {
    /// The manifest digest `reference` names in its registry now.
    async fn digest(&self, reference: &str) -> Result<String>;
}

/// The real thing: one manifest request to the registry, through hostctl's
/// registry client (auth.json, certs.d, registries.conf, as for OS images).
pub struct RegistryDigest(pub RegistryOptions);

#[async_trait]
impl RemoteDigest for RegistryDigest {
    async fn digest(&self, reference: &str) -> Result<String> {
        let ImageRef::Registry(r) = reference.parse::<ImageRef>()? else {
            bail!("{reference} is not a registry reference");
        };
        let source = RegistrySource::new(r.clone(), &self.0)?;
        match source.fetch_manifest(&r.reference()).await? {
            Some(m) => Ok(m.digest.to_string()),
            None => bail!("{reference}: manifest unknown to the registry"),
        }
    }
}

/// What `app update` does.
#[derive(Clone, Copy, Debug, Default)]
pub struct UpdateOptions {
    /// Only look: `pending` when there is an update.
    pub check: bool,
    /// Pull, but do not restart (`pending`); the next `app update` applies it.
    pub download_only: bool,
}

/// One app's result, with podman auto-update's field names.
#[derive(Clone, Debug, Serialize)]
pub struct UpdateReport {
    /// The app's systemd unit.
    #[serde(rename = "Unit")]
    pub unit: String,
    /// `ID[:12] (NAME)`, as podman prints it.
    #[serde(rename = "Container")]
    pub container: String,
    /// The container's name.
    #[serde(rename = "ContainerName")]
    pub container_name: String,
    /// The container's full ID.
    #[serde(rename = "ContainerID")]
    pub container_id: String,
    /// The image reference in the unit.
    #[serde(rename = "Image")]
    pub image: String,
    /// The `AutoUpdate=` policy (`registry` or `local`).
    #[serde(rename = "Policy")]
    pub policy: String,
    /// `true`, `false`, `pending`, `failed` or `rolled back`.
    #[serde(rename = "Updated")]
    pub updated: String,
    /// The manifest digest before the update.
    #[serde(rename = "FromDigest", skip_serializing_if = "Option::is_none")]
    pub from_digest: Option<String>,
    /// The manifest digest after it (or that a check found).
    #[serde(rename = "ToDigest", skip_serializing_if = "Option::is_none")]
    pub to_digest: Option<String>,
    /// Why it failed or was rolled back, in a sentence.
    #[serde(rename = "Reason", skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The error that failed the pull, when that is what failed the app.
    #[serde(skip)]
    pub cause: Option<Arc<anyhow::Error>>,
}

impl UpdateReport {
    /// Whether this app's update makes the command fail.
    pub fn is_failure(&self) -> bool {
        self.updated == "failed" || self.updated == "rolled back"
    }
}

/// Updates the apps `names` in turn; one app's failure does not stop the others.
pub async fn update(
    apps: &Apps<'_>,
    remote: &dyn RemoteDigest,
    names: &[String],
    opts: UpdateOptions,
) -> Result<Vec<UpdateReport>> {
    let mut reports = Vec::new();
    for name in names {
        reports.push(update_one(apps, remote, name, opts).await?);
    }
    Ok(reports)
}

fn down_text(why: &str, state: &UnitState) -> String {
    format!("{why} (unit {})", state.summary())
}

/// The unit's last journal lines, one per line and indented, after the
/// sentence they explain (`app status` shows them so, under the reason).
fn journal_block(journal: &[String]) -> String {
    match journal.is_empty() {
        true => String::new(),
        false => format!("\nlast journal lines:\n  {}", journal.join("\n  ")),
    }
}

async fn update_one(
    apps: &Apps<'_>,
    remote: &dyn RemoteDigest,
    name: &str,
    opts: UpdateOptions,
) -> Result<UpdateReport> {
    let unit = apps.unit(name)?;
    let service = Apps::service(name);
    let container = apps.podman.container(&unit.container_name)?;
    // The image the app runs now: the container's, else what the name points at.
    let current: Option<ImageInfo> = match &container {
        Some(c) => apps.podman.image(&c.image)?,
        None => apps.podman.image(&unit.image)?,
    };
    let (cid, cname) = container.as_ref().map(|c| (c.id.clone(), c.name.clone())).unwrap_or_default();
    let mut report = UpdateReport {
        unit: service.clone(),
        container: format!("{} ({cname})", &cid[..cid.len().min(12)]),
        container_name: cname,
        container_id: cid,
        image: unit.image.clone(),
        policy: "registry".into(),
        updated: "failed".into(),
        from_digest: current.as_ref().map(|i| i.digest.clone()).filter(|d| !d.is_empty()),
        to_digest: None,
        reason: None,
        cause: None,
    };
    if unit.image.contains('@') {
        report.updated = "false".into();
        report.reason = Some("pinned by digest: there is no tag to follow".into());
        return Ok(report);
    }
    let latest = match remote.digest(&unit.image).await {
        Ok(d) => d,
        Err(e) => {
            report.reason = Some(format!("checking {} (the app was left as it is): {e:#}", unit.image));
            return Ok(report);
        }
    };
    report.to_digest = Some(latest.clone());
    if current.as_ref().is_some_and(|i| i.digests().contains(&latest)) {
        report.updated = "false".into();
        return Ok(report);
    }
    if opts.check {
        report.updated = "pending".into();
        return Ok(report);
    }
    if let Err(e) = apps.ensure_room(&unit.image).and_then(|_| apps.podman.pull(&unit.image, &apps.pull)) {
        report.reason = Some(format!("pulling {} (the app was left as it is): {e:#}", unit.image));
        report.cause = Some(Arc::new(e));
        return finish(apps, name, report);
    }
    if opts.download_only {
        report.updated = "pending".into();
        report.reason = Some("downloaded; the next app update restarts the app on it".into());
        return Ok(report);
    }
    // What the pull brought: removed again if the update is rolled back.
    let pulled = apps.podman.image(&unit.image)?;
    // Asked now, while they run: once the restart has stopped them, systemd
    // may unload them, and then they no longer show as dependents.
    let dependents = apps.units.dependents(&service)?;
    apps.units.reset_failed(&service)?;
    let Outcome::Down { why, state } = apps.come_up(name, true)? else {
        report.updated = "true".into();
        if let (Some(prev), Some(new)) = (&current, &pulled) {
            if prev.id != new.id {
                report.reason = drop_replaced_image(apps, prev);
            }
        }
        return finish(apps, name, report);
    };
    let journal = apps.units.journal(&service, apps.journal_lines).unwrap_or_default();
    let failed = format!("{latest} did not come up: {}", down_text(&why, &state));
    let block = journal_block(&journal);
    let Some(previous) = current else {
        report.reason = Some(format!("{failed}; there is no previous image to go back to{block}"));
        return finish(apps, name, report);
    };
    report.reason = Some(match roll_back(apps, name, &unit.image, &previous, &dependents) {
        Ok(notes) => {
            report.updated = "rolled back".into();
            let cleaned = match pulled.filter(|p| p.id != previous.id) {
                Some(p) => drop_failed_image(apps, name, &p.id, &latest)?,
                None => String::new(),
            };
            format!("{failed}; rolled back to {}{notes}{cleaned}{block}", previous.digest)
        }
        Err(e) => format!("{failed}; rolling back to {} failed too: {e:#}{block}", previous.digest),
    });
    finish(apps, name, report)
}

/// Puts `previous` back under `reference`, restarts the app and then the
/// units that depend on it: those that did before the update (`before`) and
/// those that do now. Returns notes on dependents that did not come up.
fn roll_back(apps: &Apps<'_>, name: &str, reference: &str, previous: &ImageInfo, before: &[String]) -> Result<String> {
    let service = &Apps::service(name);
    apps.podman.tag(&previous.id, reference).with_context(|| format!("tagging {} as {reference}", previous.id))?;
    apps.units.reset_failed(service)?;
    if let Outcome::Down { why, state } = apps.come_up(name, true)? {
        let journal = apps.units.journal(service, apps.journal_lines).unwrap_or_default();
        bail!("the previous image did not come up either: {}{}", down_text(&why, &state), journal_block(&journal));
    }
    let mut notes = String::new();
    let mut dependents = before.to_vec();
    for dep in apps.units.dependents(service)? {
        if !dependents.contains(&dep) {
            dependents.push(dep);
        }
    }
    for dep in dependents {
        apps.units.reset_failed(&dep)?;
        if let Outcome::Down { why, .. } = start_and_wait(apps.units, &dep, true, &apps.wait)? {
            notes.push_str(&format!("; dependent {dep} did not come back: {why}"));
        }
    }
    Ok(notes)
}

/// After a rollback: removes the image the failed update pulled (`id`, by
/// manifest digest `digest`) when nothing uses it, or records it in the
/// app's record for `app remove --purge`. Returns the note for the reason.
fn drop_failed_image(apps: &Apps<'_>, name: &str, id: &str, digest: &str) -> Result<String> {
    let short = &id[..id.len().min(12)];
    match remove_unused(apps.podman, id) {
        Disposal::Removed => Ok(format!("; removed the image it pulled ({short})")),
        Disposal::Gone => Ok(String::new()),
        Disposal::Kept(why) => {
            let dir = apps.records_dir();
            let mut record = AppRecord::load(&dir, name)?;
            if !record.failed_images.iter().any(|f| f.id == id) {
                record.failed_images.push(FailedImage { id: id.to_string(), digest: digest.to_string() });
                record.save(&dir, name)?;
            }
            Ok(format!("; kept the image it pulled ({short}), as {why}; app remove --purge removes it"))
        }
    }
}

/// After a successful update: removes the image the app ran before
/// (`previous`), nameless now, unless something still uses it: a container,
/// a name, or an OS deployment that binds it (hostctl's ledger of bound
/// images, by digest). Returns the note for the reason, if any.
fn drop_replaced_image(apps: &Apps<'_>, previous: &ImageInfo) -> Option<String> {
    let short = &previous.id[..previous.id.len().min(12)];
    let bound = match PulledLedger::load(&apps.root.join(STATE_DIR)) {
        Ok(ledger) => ledger
            .pulled
            .iter()
            .any(|r| r.rsplit_once('@').is_some_and(|(_, d)| previous.digests().iter().any(|p| p == d))),
        Err(e) => return Some(format!("kept the image it replaced ({short}): reading the bound images failed: {e:#}")),
    };
    if bound {
        return Some(format!("kept the image it replaced ({short}): an OS deployment binds it"));
    }
    match remove_unused(apps.podman, &previous.id) {
        Disposal::Removed => Some(format!("removed the image it replaced ({short})")),
        Disposal::Gone => None,
        Disposal::Kept(why) => Some(format!("kept the image it replaced ({short}), as {why}")),
    }
}

/// `app update` failed for some apps: the message names them, and the
/// error's chain carries the first cause that calls for its own exit code
/// (`crate::error::exit_code`: a full disk 6, a trust policy refusal 4).
#[derive(Debug)]
pub struct UpdateFailed {
    /// `not every app was updated: UNIT UPDATED, ...`.
    pub message: String,
    /// The error behind one of the failures, when it has its own exit code.
    pub cause: Option<Arc<anyhow::Error>>,
}

impl std::fmt::Display for UpdateFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UpdateFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        let cause: &(dyn std::error::Error + Send + Sync + 'static) = self.cause.as_deref()?.as_ref();
        Some(cause)
    }
}

/// The error `app update` ends with, or `None` when no app failed.
pub fn failure(reports: &[UpdateReport]) -> Option<UpdateFailed> {
    let failed: Vec<&UpdateReport> = reports.iter().filter(|r| r.is_failure()).collect();
    if failed.is_empty() {
        return None;
    }
    let names: Vec<String> = failed.iter().map(|r| format!("{} {}", r.unit, r.updated)).collect();
    let cause = failed
        .iter()
        .filter_map(|r| r.cause.clone())
        .find(|c| crate::error::exit_code(c) != crate::error::code::FAILURE);
    Some(UpdateFailed { message: format!("not every app was updated: {}", names.join(", ")), cause })
}

/// Records the result as the app's last update.
fn finish(apps: &Apps<'_>, name: &str, report: UpdateReport) -> Result<UpdateReport> {
    let dir = apps.records_dir();
    let mut record = AppRecord::load(&dir, name)?;
    record.last_update = Some(UpdateRecord {
        time: now(),
        updated: report.updated.clone(),
        from_digest: report.from_digest.clone(),
        to_digest: report.to_digest.clone(),
        reason: report.reason.clone(),
    });
    record.save(&dir, name)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::apps::install::{install, Source};
    use crate::apps::quadlet::ContainerSpec;
    use crate::apps::testing::{container, Fixture};
    use crate::host::podman::{fake_image, Podman};
    use crate::host::units::{state, JobResult};

    const IMG: &str = "127.0.0.1:5000/apps/web:stable";

    /// Digests by reference; a missing one is "registry unreachable". Counts requests.
    #[derive(Default)]
    struct FakeRemote {
        digests: HashMap<String, String>,
        requests: Mutex<usize>,
    }

    #[async_trait]
    impl RemoteDigest for FakeRemote {
        async fn digest(&self, reference: &str) -> Result<String> {
            *self.requests.lock().unwrap() += 1;
            self.digests.get(reference).cloned().context("connection refused")
        }
    }

    fn remote(digest: &str) -> FakeRemote {
        FakeRemote { digests: HashMap::from([(IMG.to_string(), digest.to_string())]), ..Default::default() }
    }

    /// `web` installed and running image id1 (digest d1); the registry now has id2 (d2).
    fn installed() -> Fixture {
        let f = Fixture::new();
        {
            let mut st = f.podman.state.lock().unwrap();
            st.registry.insert(IMG.into(), fake_image("id1", "sha256:d1"));
        }
        let spec = ContainerSpec { name: "web".into(), image: IMG.into(), ..Default::default() };
        install(&f.apps(), Source::Spec(spec), true).unwrap();
        let mut st = f.podman.state.lock().unwrap();
        st.containers.insert("web".into(), container("web", "id1", "running"));
        st.registry.insert(IMG.into(), fake_image("id2", "sha256:d2"));
        drop(st);
        f
    }

    fn names() -> Vec<String> {
        vec!["web".to_string()]
    }

    #[tokio::test]
    async fn nothing_new_is_one_request_and_no_pull() {
        let f = installed();
        let r = remote("sha256:d1");
        let reports = update(&f.apps(), &r, &names(), UpdateOptions::default()).await.unwrap();
        assert_eq!(reports[0].updated, "false");
        assert_eq!(reports[0].container, "0123456789ab (web)");
        assert_eq!(*r.requests.lock().unwrap(), 1);
        assert_eq!(f.podman.calls().iter().filter(|c| c.starts_with("pull")).count(), 1, "only the install's pull");
    }

    #[tokio::test]
    async fn check_and_download_only_do_not_restart() {
        let f = installed();
        let before = f.units.calls().len();
        let r = update(&f.apps(), &remote("sha256:d2"), &names(), UpdateOptions { check: true, ..Default::default() })
            .await
            .unwrap();
        assert_eq!((r[0].updated.as_str(), r[0].to_digest.as_deref()), ("pending", Some("sha256:d2")));
        let r = update(&f.apps(), &remote("sha256:d2"), &names(), UpdateOptions { download_only: true, check: false })
            .await
            .unwrap();
        assert_eq!(r[0].updated, "pending");
        assert_eq!(f.podman.calls().last().unwrap(), &format!("pull {IMG}"));
        assert_eq!(f.units.calls().len(), before, "no unit touched");
    }

    #[tokio::test]
    async fn a_new_image_that_comes_up_is_updated() {
        let f = installed();
        let r = update(&f.apps(), &remote("sha256:d2"), &names(), UpdateOptions::default()).await.unwrap();
        assert_eq!(r[0].updated, "true");
        assert_eq!((r[0].from_digest.as_deref(), r[0].to_digest.as_deref()), (Some("sha256:d1"), Some("sha256:d2")));
        assert_eq!(f.units.calls().last().unwrap(), "restart web.service");
        let rec = AppRecord::load(&f.apps().records_dir(), "web").unwrap();
        assert_eq!(rec.last_update.unwrap().updated, "true");
    }

    /// After an update: the image the app ran before goes, unless something
    /// still uses it (here the fake's container keeps running id1 until the
    /// queue says otherwise) or an OS deployment binds it.
    #[tokio::test]
    async fn after_an_update_the_replaced_image_goes_unless_a_container_or_an_os_deployment_uses_it() {
        let f = installed();
        let r = update(&f.apps(), &remote("sha256:d2"), &names(), UpdateOptions::default()).await.unwrap();
        assert_eq!(r[0].updated, "true");
        assert_eq!(r[0].reason.as_deref(), Some("kept the image it replaced (id1), as container web uses it"));
        assert!(f.podman.image("id1").unwrap().is_some());

        // id2 -> id3: the container runs id3 once restarted, so id2 is removed.
        let next = [container("web", "id2", "running"), container("web", "id3", "running")];
        {
            let mut st = f.podman.state.lock().unwrap();
            st.registry.insert(IMG.into(), fake_image("id3", "sha256:d3"));
            st.container_next.insert("web".into(), next.into_iter().collect());
        }
        let r = update(&f.apps(), &remote("sha256:d3"), &names(), UpdateOptions::default()).await.unwrap();
        assert_eq!(r[0].reason.as_deref(), Some("removed the image it replaced (id2)"));
        assert!(f.podman.image("id2").unwrap().is_none());

        // id3 -> id4, but an OS deployment binds id3 (by digest): kept.
        let ledger = PulledLedger { pulled: ["127.0.0.1:5000/apps/web@sha256:d3".to_string()].into() };
        ledger.save(&f.apps().root.join(STATE_DIR)).unwrap();
        let next = [container("web", "id3", "running"), container("web", "id4", "running")];
        {
            let mut st = f.podman.state.lock().unwrap();
            st.registry.insert(IMG.into(), fake_image("id4", "sha256:d4"));
            st.container_next.insert("web".into(), next.into_iter().collect());
        }
        let r = update(&f.apps(), &remote("sha256:d4"), &names(), UpdateOptions::default()).await.unwrap();
        assert_eq!(r[0].reason.as_deref(), Some("kept the image it replaced (id3): an OS deployment binds it"));
        assert!(f.podman.image("id3").unwrap().is_some());
    }

    #[tokio::test]
    async fn update_to_an_image_that_exits_at_start_rolls_back_and_restarts_dependents() {
        let f = installed();
        f.units.on_next_start(
            "web.service",
            JobResult::Done,
            vec![state("active", "running"), state("failed", "failed")],
        );
        f.units.set_journal("web.service", &["app v2 is broken on purpose"]);
        f.units.set_dependents("web.service", &["web-client.service"]);
        // As in the VM: the failed restart's stop unloads the dependent, and
        // web.service no longer lists it afterwards.
        f.units.unload_dependents_on_restart("web.service");
        let r = update(&f.apps(), &remote("sha256:d2"), &names(), UpdateOptions::default()).await.unwrap();
        let r = &r[0];
        assert_eq!(r.updated, "rolled back");
        assert!(r.is_failure());
        let reason = r.reason.as_deref().unwrap();
        assert!(reason.contains("sha256:d2 did not come up: it started but did not stay up"), "{reason}");
        assert!(reason.contains("app v2 is broken on purpose"), "{reason}");
        assert!(reason.contains("rolled back to sha256:d1"), "{reason}");
        // The journal lines come last, one per line, indented (not joined with " | ").
        assert!(reason.ends_with("\nlast journal lines:\n  app v2 is broken on purpose"), "{reason}");
        // The old image is back under the reference, by its ID.
        assert_eq!(f.podman.image(IMG).unwrap().unwrap().id, "id1");
        assert!(f.podman.calls().contains(&format!("tag id1 {IMG}")));
        let calls = f.units.calls();
        let tail: Vec<&str> = calls.iter().rev().take(5).rev().map(String::as_str).collect();
        assert_eq!(
            tail,
            [
                "restart web.service",
                "reset-failed web.service",
                "restart web.service",
                "reset-failed web-client.service",
                "restart web-client.service"
            ]
        );
        let rec = AppRecord::load(&f.apps().records_dir(), "web").unwrap().last_update.unwrap();
        assert_eq!((rec.updated.as_str(), rec.reason.as_deref()), ("rolled back", r.reason.as_deref()));
    }

    /// The image a rolled-back update pulled stayed in podman's storage,
    /// nameless, and not even `app remove --purge` removed it. Now the
    /// rollback removes it when nothing uses it, and says so.
    #[tokio::test]
    async fn a_rollback_removes_the_image_the_failed_update_pulled() {
        let f = installed();
        f.units.on_next_start("web.service", JobResult::Failed("Job failed".into()), vec![state("failed", "failed")]);
        let r = update(&f.apps(), &remote("sha256:d2"), &names(), UpdateOptions::default()).await.unwrap();
        assert_eq!(r[0].updated, "rolled back", "{:?}", r[0].reason);
        let reason = r[0].reason.as_deref().unwrap();
        assert!(reason.contains("rolled back to sha256:d1; removed the image it pulled (id2)"), "{reason}");
        assert!(f.podman.calls().contains(&"rmi id2".to_string()), "{:?}", f.podman.calls());
        assert!(f.podman.image("id2").unwrap().is_none());
        assert_eq!(f.podman.image(IMG).unwrap().unwrap().id, "id1", "the app's image stays");
        assert!(AppRecord::load(&f.apps().records_dir(), "web").unwrap().failed_images.is_empty());
    }

    /// When something still uses the failed image, or podman will not remove
    /// it, the rollback stands and the image is kept, recorded, and said so;
    /// `app remove --purge` removes it once nothing uses it.
    #[tokio::test]
    async fn a_failed_image_in_use_is_kept_recorded_and_purged_with_the_app() {
        let f = installed();
        f.podman.state.lock().unwrap().containers.insert("debug".into(), container("debug", "id2", "exited"));
        f.units.on_next_start("web.service", JobResult::Failed("Job failed".into()), vec![state("failed", "failed")]);
        let r = update(&f.apps(), &remote("sha256:d2"), &names(), UpdateOptions::default()).await.unwrap();
        assert_eq!(r[0].updated, "rolled back", "{:?}", r[0].reason);
        let reason = r[0].reason.as_deref().unwrap();
        assert!(
            reason
                .contains("kept the image it pulled (id2), as container debug uses it; app remove --purge removes it"),
            "{reason}"
        );
        assert!(f.podman.image("id2").unwrap().is_some());
        let rec = AppRecord::load(&f.apps().records_dir(), "web").unwrap();
        assert_eq!(rec.failed_images, [FailedImage { id: "id2".into(), digest: "sha256:d2".into() }]);

        // Without --purge it stays; with --purge, once the container is gone, it goes.
        f.podman.state.lock().unwrap().containers.clear();
        let rm = crate::apps::install::remove(&f.apps(), "web", true).unwrap();
        assert_eq!(rm.failed_images_removed, ["id2"]);
        assert!(rm.failed_images_kept.is_empty());
        assert!(f.podman.image("id2").unwrap().is_none());
        assert_eq!(rm.image_removed.as_deref(), Some(IMG));
    }

    #[tokio::test]
    async fn podman_refusing_to_remove_the_failed_image_does_not_fail_the_rollback() {
        let f = installed();
        f.podman.state.lock().unwrap().remove_errors.insert("id2".into(), "image is being used".into());
        f.units.on_next_start("web.service", JobResult::Failed("Job failed".into()), vec![state("failed", "failed")]);
        let r = update(&f.apps(), &remote("sha256:d2"), &names(), UpdateOptions::default()).await.unwrap();
        assert_eq!(r[0].updated, "rolled back", "{:?}", r[0].reason);
        let reason = r[0].reason.as_deref().unwrap();
        assert!(reason.contains("kept the image it pulled (id2), as podman did not remove it"), "{reason}");
        assert!(reason.contains("image is being used"), "{reason}");
        assert_eq!(AppRecord::load(&f.apps().records_dir(), "web").unwrap().failed_images.len(), 1);
        // A purge that podman refuses too says so and does not fail.
        let rm = crate::apps::install::remove(&f.apps(), "web", true).unwrap();
        assert_eq!(rm.failed_images_kept.len(), 1, "{rm:?}");
        assert!(rm.failed_images_kept[0].starts_with("id2 (sha256:d2): podman did not remove it"), "{rm:?}");
    }

    /// A new manifest whose image has the ID the app already runs (the same
    /// image, pushed again): the rollback must not remove it.
    #[tokio::test]
    async fn a_rollback_never_removes_the_image_it_rolled_back_to() {
        let f = installed();
        f.podman.state.lock().unwrap().registry.insert(IMG.into(), fake_image("id1", "sha256:d2"));
        f.units.on_next_start("web.service", JobResult::Failed("Job failed".into()), vec![state("failed", "failed")]);
        let r = update(&f.apps(), &remote("sha256:d2"), &names(), UpdateOptions::default()).await.unwrap();
        assert_eq!(r[0].updated, "rolled back", "{:?}", r[0].reason);
        assert!(!f.podman.calls().iter().any(|c| c.starts_with("rmi")), "{:?}", f.podman.calls());
        assert!(f.podman.image("id1").unwrap().is_some());
    }

    #[tokio::test]
    async fn update_to_an_image_whose_container_dies_while_its_unit_still_looks_active_rolls_back() {
        // Seen in the VM: conmon keeps the unit active for seconds after the
        // container exited, longer than the settling time.
        let f = installed();
        f.podman.state.lock().unwrap().container_next.insert(
            "web".into(),
            std::collections::VecDeque::from([
                container("web", "id1", "running"), // before the update
                container("web", "id2", "exited"),  // after the restart, the unit still active
                container("web", "id1", "running"), // after the rollback
            ]),
        );
        let r = update(&f.apps(), &remote("sha256:d2"), &names(), UpdateOptions::default()).await.unwrap();
        assert_eq!(r[0].updated, "rolled back", "{:?}", r[0].reason);
        let reason = r[0].reason.as_deref().unwrap();
        assert!(reason.contains("its container web is exited (exit code 3)"), "{reason}");
        assert_eq!(f.podman.image(IMG).unwrap().unwrap().id, "id1");
    }

    #[tokio::test]
    async fn update_to_an_image_whose_health_check_fails_rolls_back() {
        // With Notify=healthy the restart job only completes once healthy: it times out.
        let f = installed();
        f.units.on_next_start("web.service", JobResult::TimedOut, vec![state("activating", "start")]);
        let r = update(&f.apps(), &remote("sha256:d2"), &names(), UpdateOptions::default()).await.unwrap();
        assert_eq!(r[0].updated, "rolled back");
        assert!(r[0].reason.as_deref().unwrap().contains("did not come up within 1 s"), "{:?}", r[0].reason);
    }

    #[tokio::test]
    async fn a_rollback_that_fails_too_is_failed() {
        let f = installed();
        for _ in 0..2 {
            f.units.on_next_start(
                "web.service",
                JobResult::Failed("Job failed".into()),
                vec![state("failed", "failed")],
            );
        }
        let r = update(&f.apps(), &remote("sha256:d2"), &names(), UpdateOptions::default()).await.unwrap();
        assert_eq!(r[0].updated, "failed");
        assert!(r[0].reason.as_deref().unwrap().contains("previous image did not come up either"), "{:?}", r[0].reason);
    }

    #[tokio::test]
    async fn registry_down_or_pull_failure_leaves_the_app_untouched() {
        let f = installed();
        let before = (f.units.calls().len(), f.podman.calls().len());
        let r = update(&f.apps(), &FakeRemote::default(), &names(), UpdateOptions::default()).await.unwrap();
        assert_eq!(r[0].updated, "failed");
        assert!(r[0].reason.as_deref().unwrap().contains("connection refused"));
        assert_eq!((f.units.calls().len(), f.podman.calls().len()), before);
        f.podman.state.lock().unwrap().pull_errors.insert(IMG.into(), "no space left on device".into());
        let r = update(&f.apps(), &remote("sha256:d2"), &names(), UpdateOptions::default()).await.unwrap();
        assert_eq!(r[0].updated, "failed");
        assert_eq!(f.units.calls().len(), before.0, "no restart after a failed pull");
        assert_eq!(f.podman.image(IMG).unwrap().unwrap().id, "id1");
    }

    /// `app update` with the disk full exited 1 (the pull's ENOSPC became a
    /// reason string), where every
    /// other command that fills the disk exits 6 (with the hint); the app
    /// kept running on its image.
    #[tokio::test]
    async fn app_update_with_the_disk_full_exits_6_and_leaves_the_app_running() {
        let f = installed();
        let units_before = f.units.calls().len();
        let msg = "copying system image from manifest list: writing blob: storing blob to file \
                   \"/var/tmp/container_images_storage1/1\": write /var/tmp/container_images_storage1/1: \
                   no space left on device";
        f.podman.state.lock().unwrap().pull_errors.insert(IMG.into(), msg.into());
        let r = update(&f.apps(), &remote("sha256:d2"), &names(), UpdateOptions::default()).await.unwrap();
        assert_eq!(r[0].updated, "failed");
        assert_eq!(f.units.calls().len(), units_before, "the app is not restarted");
        assert_eq!(f.podman.image(IMG).unwrap().unwrap().id, "id1");
        let err = anyhow::Error::new(failure(&r).unwrap());
        assert_eq!(crate::error::exit_code(&err), crate::error::code::NO_SPACE, "{err:#}");
        assert!(crate::error::hint(&err).is_some());
        let text = format!("{err:#}");
        assert!(text.starts_with("not every app was updated: web.service failed: podman pull"), "{text}");
        assert!(text.contains("no space left on device"), "{text}");

        // A trust policy refusal is exit 4, as for install and the OS.
        f.podman.state.lock().unwrap().pull_errors.insert(IMG.into(), "Source image rejected: signed by nobody".into());
        let r = update(&f.apps(), &remote("sha256:d2"), &names(), UpdateOptions::default()).await.unwrap();
        let err = anyhow::Error::new(failure(&r).unwrap());
        assert_eq!(crate::error::exit_code(&err), crate::error::code::REJECTED, "{err:#}");

        // The registry down, and a rollback, are exit 1; nothing failed, no error.
        let r = update(&f.apps(), &FakeRemote::default(), &names(), UpdateOptions::default()).await.unwrap();
        let err = anyhow::Error::new(failure(&r).unwrap());
        assert_eq!(crate::error::exit_code(&err), crate::error::code::FAILURE, "{err:#}");
        let r = update(&f.apps(), &remote("sha256:d1"), &names(), UpdateOptions::default()).await.unwrap();
        assert!(failure(&r).is_none());
    }

    #[test]
    fn report_uses_podman_auto_update_field_names() {
        let r = UpdateReport {
            unit: "web.service".into(),
            container: "0123456789ab (web)".into(),
            container_name: "web".into(),
            container_id: "0123456789abcdef".into(),
            image: IMG.into(),
            policy: "registry".into(),
            updated: "rolled back".into(),
            from_digest: Some("sha256:d1".into()),
            to_digest: Some("sha256:d2".into()),
            reason: Some("x".into()),
            cause: None,
        };
        let v = serde_json::to_value(&r).unwrap();
        for k in [
            "Unit",
            "Container",
            "ContainerName",
            "ContainerID",
            "Image",
            "Policy",
            "Updated",
            "FromDigest",
            "ToDigest",
            "Reason",
        ] {
            assert!(v.get(k).is_some(), "{k} missing from {v}");
        }
    }
}
