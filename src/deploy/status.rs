//! The host's status as a versioned, k8s-shaped document in the structure of
//! bootc's `BootcHost` (`apiVersion: hostctl.dev/v2`, `kind: Host`),
//! documented by `docs/status-schema.json`, and its human rendering.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::boot::counting::{self, Assessment, EntryAssessment};
use crate::boot::health::HealthRecord;
use crate::deploy::booted::BootedSource;
use crate::deploy::deployment::Metadata;
use crate::deploy::state::{self, State, TransportOptions};
use crate::oci::identity::{ImageIdentity, ImageReference};
use crate::trust::Verdict;

/// `apiVersion` of the status document; bumped on incompatible changes
/// (v2: the structure of bootc's `BootcHost`).
pub const API_VERSION: &str = "hostctl.dev/v2";

/// The document: bootc's `BootcHost` (`apiVersion`, `kind`, `metadata`,
/// `spec`, `status`) with hostctl's own `apiVersion` and `kind`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostStatus {
    /// [`API_VERSION`].
    pub api_version: &'static str,
    /// `Host`.
    pub kind: &'static str,
    /// The object's metadata.
    pub metadata: ObjectMeta,
    /// What the host is set to follow.
    pub spec: HostSpec,
    /// What the host has.
    pub status: HostState,
}

/// bootc's (k8s) object metadata: there is one object, `host`.
#[derive(Clone, Debug, Serialize)]
pub struct ObjectMeta {
    /// `host`.
    pub name: &'static str,
}

/// What the host is told to run (bootc's `HostSpec`).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostSpec {
    /// The tracked image, `null` before the first `switch`.
    pub image: Option<ImageReference>,
    /// `rollback` after `hostctl rollback` until the next boot or change,
    /// else `default`.
    pub boot_order: BootOrder,
    /// The registry transport options remembered with it (hostctl's
    /// addition), `null` before the first `switch`.
    pub transport_options: Option<TransportOptionsStatus>,
}

/// The transport options `switch` recorded, which `upgrade` uses again
/// ([`crate::deploy::state::TransportOptions`]).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransportOptionsStatus {
    /// False after `switch --tls-verify=false`.
    pub tls_verify: bool,
    /// The certificate directory pulls use, if set.
    pub cert_dir: Option<String>,
    /// The auth file pulls use, if set.
    pub authfile: Option<String>,
}

impl From<&TransportOptions> for TransportOptionsStatus {
    fn from(t: &TransportOptions) -> Self {
        let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
        TransportOptionsStatus { tls_verify: t.tls_verify, cert_dir: path(&t.cert_dir), authfile: path(&t.authfile) }
    }
}

/// bootc's `BootOrder`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum BootOrder {
    /// The staged or booted deployment boots next.
    Default,
    /// The rollback deployment boots next.
    Rollback,
}

/// bootc's `HostType`, under hostctl's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum HostType {
    /// A deployment managed by hostctl is booted.
    HostctlHost,
}

/// What the host runs (bootc's `HostStatus`, with hostctl's additions after
/// `type`).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostState {
    /// The deployment prepared for the next boot.
    pub staged: Option<DeploymentStatus>,
    /// The deployment running now.
    pub booted: Option<DeploymentStatus>,
    /// The deployment to go back to.
    pub rollback: Option<DeploymentStatus>,
    /// Deployments in none of the three roles (pinned ones); left out when empty, as bootc does.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other_deployments: Vec<DeploymentStatus>,
    /// The next boot goes to the rollback deployment.
    pub rollback_queued: bool,
    /// `hostctlHost` when a hostctl deployment is booted, else `null`.
    #[serde(rename = "type")]
    pub ty: Option<HostType>,
    // hostctl's additions.
    /// The stateroot described.
    pub stateroot: String,
    /// How the booted deployment was determined.
    pub booted_source: BootedSource,
    /// Every deployment, in boot order (an unfinalised staged one last).
    pub deployments: Vec<DeploymentStatus>,
    /// The staged deployment was downloaded with `--download-only`: it is not
    /// finalised at shutdown, only by the next `upgrade`/`switch`.
    pub staged_locked: bool,
    /// What boot counting says happened (automatic rollback, a deployment on
    /// trial), one sentence each; empty when there is nothing to say.
    pub boot_notes: Vec<String>,
}

/// How the boot loader judges a deployment's entry (boot counting).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BootEntryStatus {
    /// `good` (booted and blessed, or never counted), `pending` (on trial)
    /// or `bad` (abandoned: the boot loader no longer picks it by default).
    pub assessment: &'static str,
    /// Tries left before it is abandoned (pending only).
    pub tries_left: Option<u32>,
    /// Boots attempted while it was counted (pending and bad).
    pub tries_done: Option<u32>,
}

impl From<&Assessment> for BootEntryStatus {
    fn from(a: &Assessment) -> Self {
        match *a {
            Assessment::Good => BootEntryStatus { assessment: "good", tries_left: None, tries_done: None },
            Assessment::Pending { left, done } => {
                BootEntryStatus { assessment: "pending", tries_left: Some(left), tries_done: Some(done) }
            }
            Assessment::Bad { done } => BootEntryStatus { assessment: "bad", tries_left: None, tries_done: Some(done) },
        }
    }
}

/// The last run of a deployment's health checks (`usr/lib/hostctl/health.d`).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthStatus {
    /// Every check passed.
    pub passed: bool,
    /// When the checks ran (RFC 3339, UTC).
    pub checked_at: String,
    /// The checks that ran, in order; the first failure ends the run.
    pub checks: Vec<HealthCheckStatus>,
}

/// One health check's result.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckStatus {
    /// The check's file name.
    pub name: String,
    /// It passed.
    pub passed: bool,
    /// Exit status, or why it could not run.
    pub detail: String,
    /// Its output (truncated).
    pub output: String,
}

impl From<HealthRecord> for HealthStatus {
    fn from(r: HealthRecord) -> Self {
        HealthStatus {
            passed: r.passed,
            checked_at: r.checked_at,
            checks: r
                .checks
                .into_iter()
                .map(|c| HealthCheckStatus { name: c.name, passed: c.passed, detail: c.detail, output: c.output })
                .collect(),
        }
    }
}

/// What the boot directory and the health records say, for [`build`].
#[derive(Clone, Debug, Default)]
pub struct BootFacts {
    /// The stateroot's entries in boot order (from [`counting::read`]).
    pub entries: Vec<EntryAssessment>,
    /// Why the entries could not be read, if they could not.
    pub entries_error: Option<String>,
    /// The health records of the deployments whose checks ever ran, by id.
    pub health: HashMap<String, HealthRecord>,
    /// The bound images each deployment was staged with, by id.
    pub bound_images: HashMap<String, Vec<crate::deploy::hooks::BoundImage>>,
}

impl BootFacts {
    /// No boot entries and no health records (a sysroot that was never booted).
    pub fn none() -> Self {
        BootFacts::default()
    }
}

/// One deployment: bootc's `BootEntry` (`image`, `cachedUpdate`,
/// `incompatible`, `pinned`, `softRebootCapable`, `downloadOnly`), then
/// hostctl's additions.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    /// The image it was deployed from; `null` when its metadata is unreadable.
    pub image: Option<ImageIdentity>,
    /// Always `null`: hostctl does not keep what `upgrade --check` saw.
    pub cached_update: Option<ImageIdentity>,
    /// Always `false`: hostctl has no origin settings it could fail to understand.
    pub incompatible: bool,
    /// `cleanup` keeps it (`hostctl pin`).
    pub pinned: bool,
    /// Always `false`: hostctl has no soft reboot.
    pub soft_reboot_capable: bool,
    /// Staged with `--download-only` and not finalised yet.
    pub download_only: bool,
    // hostctl's additions.
    /// The deployment's id (`<short digest>.<serial>`).
    pub id: String,
    /// When it was staged (RFC 3339, UTC).
    pub staged_at: Option<String>,
    /// Its /etc is merged and its boot entry written.
    pub finalized: bool,
    /// Its kernel version.
    pub kernel: Option<String>,
    /// Its boot entry's kernel arguments.
    pub kargs: Vec<String>,
    /// What the trust policy said of its image at pull time.
    pub verdict: Option<Verdict>,
    /// Its boot entry's assessment; `null` when it has no entry (not finalised).
    pub boot_entry: Option<BootEntryStatus>,
    /// Its last health-check run; `null` when the checks never ran for it.
    pub health: Option<HealthStatus>,
    /// The logically bound app images it runs, pinned by digest (docs/apps.md).
    pub bound_images: Vec<crate::deploy::hooks::BoundImage>,
    /// Why the metadata could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Builds the document. `meta` is the metadata of each id (or the error reading it).
pub fn build(
    state: &State,
    booted: Option<&str>,
    source: BootedSource,
    meta: &dyn Fn(&str) -> Result<Metadata, String>,
    boot: &BootFacts,
) -> HostStatus {
    let r = state::roles(state, booted);
    let locked = state.staged_locked.then(|| state.staged_unfinalized()).flatten();
    let one = |id: &str| -> DeploymentStatus {
        let (m, error) = match meta(id) {
            Ok(m) => (Some(m), None),
            Err(e) => (None, Some(e)),
        };
        DeploymentStatus {
            cached_update: None,
            incompatible: false,
            pinned: state.pinned.contains(id),
            soft_reboot_capable: false,
            download_only: locked == Some(id),
            id: id.into(),
            staged_at: m.as_ref().map(|m| m.staged_at.clone()),
            finalized: state.deployments.iter().any(|d| d == id),
            kernel: m.as_ref().map(|m| m.kernel.version.clone()),
            kargs: m.as_ref().map(|m| m.kargs.clone()).unwrap_or_default(),
            verdict: m.as_ref().and_then(|m| m.verdict.clone()),
            boot_entry: boot.entries.iter().find(|e| e.deployment == id).map(|e| (&e.assessment).into()),
            health: boot.health.get(id).cloned().map(HealthStatus::from),
            bound_images: boot.bound_images.get(id).cloned().unwrap_or_default(),
            image: m.map(|m| m.image),
            error,
        }
    };
    let in_role = [&r.booted, &r.staged, &r.rollback];
    HostStatus {
        api_version: API_VERSION,
        kind: "Host",
        metadata: ObjectMeta { name: "host" },
        spec: HostSpec {
            image: state.spec.as_ref().map(|s| ImageReference::from_text(&s.image)),
            boot_order: if r.rollback_queued { BootOrder::Rollback } else { BootOrder::Default },
            transport_options: state.spec.as_ref().map(|s| (&s.transport_options).into()),
        },
        status: HostState {
            staged: r.staged.as_deref().map(one),
            booted: r.booted.as_deref().map(one),
            rollback: r.rollback.as_deref().map(one),
            other_deployments: state
                .all()
                .iter()
                .filter(|id| !in_role.iter().any(|role| role.as_deref() == Some(id.as_str())))
                .map(|id| one(id))
                .collect(),
            rollback_queued: r.rollback_queued,
            ty: r.booted.as_ref().map(|_| HostType::HostctlHost),
            stateroot: state.stateroot.clone(),
            booted_source: source,
            deployments: state.all().iter().map(|id| one(id)).collect(),
            staged_locked: locked.is_some(),
            boot_notes: match &boot.entries_error {
                Some(e) => vec![format!("the boot entries could not be read: {e}")],
                None => counting::explain(&boot.entries, booted),
            },
        },
    }
}

/// The human view.
pub fn render_human(h: &HostStatus) -> String {
    let mut s = String::new();
    let tracking = h.spec.image.as_ref().map(ImageReference::to_text);
    let _ = writeln!(s, "Tracking: {}", tracking.as_deref().unwrap_or("(nothing; use `hostctl switch IMAGE`)"));
    if let Some(t) = &h.spec.transport_options {
        let flags = TransportOptions {
            tls_verify: t.tls_verify,
            cert_dir: t.cert_dir.as_ref().map(Into::into),
            authfile: t.authfile.as_ref().map(Into::into),
        }
        .as_flags();
        if !flags.is_empty() {
            let _ = writeln!(s, "  with:   {flags}");
        }
    }
    match h.status.booted_source {
        BootedSource::DefaultBootEntry => {
            let _ = writeln!(
                s,
                "(This sysroot is not the running system: \"Booted\" means the deployment of the default boot entry.)"
            );
        }
        BootedSource::Environment => {
            let _ = writeln!(s, "(\"Booted\" is the deployment named by ${}.)", crate::deploy::booted::BOOTED_ENV);
        }
        BootedSource::KernelCmdline => {}
    }
    let slots = [("Booted", &h.status.booted), ("Staged", &h.status.staged), ("Rollback", &h.status.rollback)];
    for (name, d) in slots {
        let _ = write!(s, "\n{name}:");
        match d {
            None => {
                let _ = writeln!(s, " none");
            }
            Some(d) => {
                let abandoned = d.boot_entry.as_ref().is_some_and(|b| b.assessment == "bad");
                let _ = writeln!(
                    s,
                    " {}{}{}",
                    d.id,
                    if d.pinned { " (pinned)" } else { "" },
                    if abandoned { " (failed to boot: abandoned)" } else { "" }
                );
                let Some(image) = &d.image else {
                    let _ = writeln!(s, "    error:    {}", d.error.as_deref().unwrap_or("no metadata"));
                    continue;
                };
                let f = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
                let _ = writeln!(s, "    image:    {}", image.image.to_text());
                let _ = writeln!(s, "    digest:   {}", image.image_digest);
                let _ = writeln!(s, "    version:  {}", f(&image.version));
                let _ = writeln!(s, "    created:  {}", f(&image.timestamp));
                let _ = writeln!(s, "    kernel:   {}", f(&d.kernel));
                if let Some(v) = &d.verdict {
                    let signed = if v.signature_verified { "signature verified" } else { "not signed" };
                    let _ = writeln!(s, "    trust:    {} ({signed})", v.rule);
                    for who in &v.signers {
                        let _ = writeln!(s, "    signer:   {who}");
                    }
                }
                if d.download_only {
                    let _ = writeln!(s, "    (downloaded with --download-only; `hostctl upgrade` finalises it)");
                } else if !d.finalized {
                    let _ = writeln!(s, "    (downloaded, not finalised)");
                }
            }
        }
    }
    if h.status.rollback_queued {
        let _ = writeln!(s, "\nThe next boot goes to the rollback deployment.");
    }
    for note in &h.status.boot_notes {
        let _ = writeln!(s, "\n{note}");
    }
    // Why an abandoned deployment failed, when its health checks say so.
    for d in &h.status.deployments {
        let abandoned = d.boot_entry.as_ref().is_some_and(|b| b.assessment == "bad");
        let Some(health) = d.health.as_ref().filter(|_| abandoned) else { continue };
        for c in health.checks.iter().filter(|c| !c.passed) {
            let _ = writeln!(
                s,
                "    {}: health check {} failed ({}) at {}: {}",
                d.id, c.name, c.detail, health.checked_at, c.output
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::deployment::{KernelInfo, METADATA_VERSION};
    use crate::digest::Digest;

    fn meta(id: &str) -> Result<Metadata, String> {
        if id == "bad.9" {
            return Err("unreadable".into());
        }
        Ok(Metadata {
            version: METADATA_VERSION,
            id: id.into(),
            stateroot: "default".into(),
            image: ImageIdentity {
                image: ImageReference::from_text("r.io/os:latest"),
                image_digest: Digest::of(id.as_bytes()),
                config_digest: Digest::of(b"c"),
                version: Some(format!("v-{id}")),
                timestamp: Some("2026-01-01T00:00:00Z".into()),
                architecture: Some("arm64".into()),
            },
            layers: vec![],
            kernel: KernelInfo { version: "6.1".into(), checksum: "x".into(), has_initramfs: true },
            kargs: vec!["quiet".into()],
            verdict: None,
            staged_at: "2026-01-02T00:00:00Z".into(),
            finalized_at: None,
        })
    }

    /// b.2 was abandoned after its health check failed; the machine fell back to a.1.
    fn fell_back() -> BootFacts {
        BootFacts {
            entries: vec![
                EntryAssessment { deployment: "b.2".into(), assessment: Assessment::Bad { done: 1 } },
                EntryAssessment { deployment: "a.1".into(), assessment: Assessment::Good },
            ],
            entries_error: None,
            bound_images: HashMap::new(),
            health: [failed_record("b.2", "90-broken", "broken on purpose")].into_iter().collect(),
        }
    }

    /// The record of `id`, whose check `check` failed saying `output`.
    fn failed_record(id: &str, check: &str, output: &str) -> (String, HealthRecord) {
        use crate::boot::health::CheckResult;
        let record = HealthRecord {
            deployment: Some(id.into()),
            passed: false,
            checked_at: "2026-01-03T00:00:00Z".into(),
            checks: vec![CheckResult {
                name: check.into(),
                path: format!("/usr/lib/hostctl/health.d/{check}").into(),
                passed: false,
                detail: "exit status: 1".into(),
                output: output.into(),
            }],
        };
        (id.into(), record)
    }

    #[test]
    fn automatic_rollback_is_in_the_document_and_the_human_view() {
        let state = State { deployments: vec!["b.2".into(), "a.1".into()], ..State::default() };
        let h = build(&state, Some("a.1"), BootedSource::KernelCmdline, &meta, &fell_back());
        let v = serde_json::to_value(&h).unwrap();
        let b2 = &v["status"]["deployments"][0];
        assert_eq!(b2["id"], "b.2");
        assert_eq!(b2["bootEntry"]["assessment"], "bad");
        assert_eq!(b2["bootEntry"]["triesDone"], 1);
        assert_eq!(b2["health"]["passed"], false);
        assert_eq!(b2["health"]["checks"][0]["name"], "90-broken");
        assert_eq!(v["status"]["booted"]["bootEntry"]["assessment"], "good");
        assert!(v["status"]["booted"]["health"].is_null());
        let notes = v["status"]["bootNotes"].as_array().unwrap();
        assert_eq!(notes.len(), 1);
        assert!(notes[0].as_str().unwrap().contains("deployment b.2 failed to boot"), "{notes:?}");
        assert!(notes[0].as_str().unwrap().contains("fell back to a.1"), "{notes:?}");
        let text = render_human(&h);
        assert!(text.contains("b.2: health check 90-broken failed (exit status: 1)"), "{text}");
        let state = State { staged: Some("b.2".into()), ..state };
        let text = render_human(&build(&state, Some("a.1"), BootedSource::KernelCmdline, &meta, &fell_back()));
        assert!(text.contains("Staged: b.2 (failed to boot: abandoned)"), "{text}");

        let broken = BootFacts { entries_error: Some("permission denied".into()), ..BootFacts::none() };
        let h = build(&state, Some("a.1"), BootedSource::KernelCmdline, &meta, &broken);
        assert_eq!(h.status.boot_notes, vec!["the boot entries could not be read: permission denied".to_string()]);
    }

    /// The failed checks shown are those of abandoned deployments, found by
    /// their entry's assessment (not by the wording of the notes): two
    /// abandoned deployments each get their own; a deployment on trial with
    /// an old failed record gets none.
    #[test]
    fn failed_health_checks_are_shown_for_each_abandoned_deployment() {
        let state = State { deployments: vec!["c.3".into(), "b.2".into(), "a.1".into()], ..State::default() };
        let facts = BootFacts {
            entries: vec![
                EntryAssessment { deployment: "c.3".into(), assessment: Assessment::Bad { done: 3 } },
                EntryAssessment { deployment: "b.2".into(), assessment: Assessment::Bad { done: 1 } },
                EntryAssessment { deployment: "a.1".into(), assessment: Assessment::Pending { left: 2, done: 1 } },
            ],
            entries_error: None,
            bound_images: HashMap::new(),
            health: [
                failed_record("c.3", "10-net", "no route"),
                failed_record("b.2", "90-broken", "broken on purpose"),
                failed_record("a.1", "50-old", "an earlier run"),
            ]
            .into_iter()
            .collect(),
        };
        let text = render_human(&build(&state, Some("a.1"), BootedSource::KernelCmdline, &meta, &facts));
        assert!(text.contains("c.3: health check 10-net failed (exit status: 1) at 2026-01-03T00:00:00Z: no route"));
        assert!(text.contains("b.2: health check 90-broken failed"), "{text}");
        assert!(!text.contains("50-old"), "a.1 is on trial, not abandoned: {text}");
        // No record: the note alone.
        let facts = BootFacts { health: HashMap::new(), ..facts };
        let text = render_human(&build(&state, Some("a.1"), BootedSource::KernelCmdline, &meta, &facts));
        assert!(text.contains("deployment c.3 failed to boot") && !text.contains(": health check"), "{text}");
    }

    #[test]
    fn document_has_roles_and_schema_fields() {
        let state = State {
            deployments: vec!["b.2".into(), "a.1".into()],
            staged: Some("b.2".into()),
            pinned: ["a.1".to_string()].into(),
            spec: Some(crate::deploy::state::Spec::new("r.io/os:latest")),
            ..State::default()
        };
        let h = build(&state, Some("a.1"), BootedSource::Environment, &meta, &BootFacts::none());
        let v = serde_json::to_value(&h).unwrap();
        assert_eq!(v["apiVersion"], API_VERSION);
        assert_eq!(v["spec"]["image"], serde_json::json!({"image": "r.io/os:latest", "transport": "registry"}));
        assert_eq!(v["spec"]["transportOptions"]["tlsVerify"], true);
        assert_eq!(v["status"]["booted"]["id"], "a.1");
        assert_eq!(v["status"]["booted"]["pinned"], true);
        assert_eq!(v["status"]["staged"]["image"]["version"], "v-b.2");
        assert!(v["status"]["rollback"].is_null());
        assert_eq!(v["status"]["bootedSource"], "environment");
        assert_eq!(v["status"]["deployments"].as_array().unwrap().len(), 2);
        let text = render_human(&h);
        assert!(text.contains("Booted: a.1 (pinned)") && text.contains("version:  v-b.2"), "{text}");

        let state = State { deployments: vec!["bad.9".into()], ..State::default() };
        let h = build(&state, Some("bad.9"), BootedSource::DefaultBootEntry, &meta, &BootFacts::none());
        assert_eq!(h.status.booted.as_ref().unwrap().error.as_deref(), Some("unreadable"));
        assert!(render_human(&h).contains("error:    unreadable"));
    }

    /// `hostctl --sysroot /mnt status` on a disk that is not the running
    /// system: "Booted" is the default boot entry's deployment, and says so.
    #[test]
    fn status_of_a_sysroot_that_is_not_running_says_what_booted_means() {
        let state = State { deployments: vec!["a.1".into()], ..State::default() };
        let text = render_human(&build(&state, Some("a.1"), BootedSource::DefaultBootEntry, &meta, &BootFacts::none()));
        assert!(
            text.contains("not the running system: \"Booted\" means the deployment of the default boot entry"),
            "{text}"
        );
        let text = render_human(&build(&state, Some("a.1"), BootedSource::KernelCmdline, &meta, &BootFacts::none()));
        assert!(!text.contains("default boot entry"), "{text}");
        let text = render_human(&build(&state, Some("a.1"), BootedSource::Environment, &meta, &BootFacts::none()));
        assert!(text.contains("named by $HOSTCTL_BOOTED"), "{text}");
    }

    /// A host in every role bootc has: booted b.2, rollback a.1, a pinned
    /// p.0 in none of them, c.3 staged with --download-only.
    fn every_role() -> HostStatus {
        let state = State {
            deployments: vec!["b.2".into(), "a.1".into(), "f.0".into()],
            staged: Some("c.3".into()),
            staged_locked: true,
            pinned: ["f.0".to_string()].into(),
            spec: Some(crate::deploy::state::Spec::new("r.io/os:latest")),
            ..State::default()
        };
        build(&state, Some("b.2"), BootedSource::KernelCmdline, &meta, &BootFacts::none())
    }

    /// The JSON type of a value, as bootc's fixtures can show it.
    fn kind(v: &serde_json::Value) -> &'static str {
        match v {
            serde_json::Value::Null => "null",
            serde_json::Value::Bool(_) => "boolean",
            serde_json::Value::Number(_) => "number",
            serde_json::Value::String(_) => "string",
            serde_json::Value::Array(_) => "array",
            serde_json::Value::Object(_) => "object",
        }
    }

    /// Every leaf and object path of `v` (arrays: their first item, as `[0]`).
    fn paths(v: &serde_json::Value, at: &str, out: &mut Vec<(String, serde_json::Value)>) {
        match v {
            serde_json::Value::Object(o) => {
                for (k, sub) in o {
                    let p = if at.is_empty() { k.clone() } else { format!("{at}.{k}") };
                    out.push((p.clone(), sub.clone()));
                    paths(sub, &p, out);
                }
            }
            serde_json::Value::Array(a) if !a.is_empty() => {
                let p = format!("{at}[0]");
                out.push((p.clone(), a[0].clone()));
                paths(&a[0], &p, out);
            }
            _ => {}
        }
    }

    fn get<'a>(v: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
        path.split('.').try_fold(v, |v, part| match part.strip_suffix("[0]") {
            Some(k) => v.get(k)?.get(0),
            None => v.get(part),
        })
    }

    /// bootc's `BootcHost` (crates/lib/src/spec.rs), field by field: the
    /// path, the JSON type bootc gives it, and where hostctl differs, why.
    /// `-` in the type: bootc has the field and hostctl leaves it out.
    const BOOTC_FIELDS: &[(&str, &str, &str)] = &[
        ("apiVersion", "string", "hostctl.dev/v2, not org.containers.bootc/v1: hostctl's own API"),
        ("kind", "string", "Host, not BootcHost"),
        ("metadata.name", "string", ""),
        ("spec.image", "object", "null before the first switch, as bootc"),
        ("spec.image.image", "string", ""),
        ("spec.image.transport", "string", "registry, oci or oci-archive"),
        ("spec.image.signature", "-", "bootc's per-image verification setting; hostctl's is policy.json"),
        ("spec.bootOrder", "string", ""),
        ("status.staged", "object", ""),
        ("status.booted", "object", ""),
        ("status.rollback", "object", ""),
        ("status.otherDeployments", "array", "left out when empty, as bootc"),
        ("status.rollbackQueued", "boolean", ""),
        ("status.type", "string", "hostctlHost, not bootcHost"),
        ("status.booted.image", "object", ""),
        ("status.booted.image.image.image", "string", ""),
        ("status.booted.image.image.transport", "string", ""),
        ("status.booted.image.version", "string", ""),
        ("status.booted.image.timestamp", "string", ""),
        ("status.booted.image.imageDigest", "string", ""),
        ("status.booted.image.architecture", "string", "null for deployments staged before hostctl recorded it"),
        ("status.booted.cachedUpdate", "null", "always null: hostctl does not keep what upgrade --check saw"),
        ("status.booted.incompatible", "boolean", ""),
        ("status.booted.pinned", "boolean", ""),
        ("status.booted.softRebootCapable", "boolean", "always false"),
        ("status.booted.downloadOnly", "boolean", ""),
        ("status.booted.store", "-", "bootc's storage backend (ostreeContainer); hostctl has one store"),
        ("status.booted.ostree", "-", "hostctl deployments are not ostree commits"),
        ("status.booted.composefs", "-", "hostctl deployments are not composefs images"),
        ("status.staged.downloadOnly", "boolean", ""),
        ("status.otherDeployments[0].pinned", "boolean", ""),
    ];

    #[test]
    fn status_json_has_bootc_fields_with_bootc_types() {
        let doc = serde_json::to_value(every_role()).unwrap();
        for (path, want, why) in BOOTC_FIELDS {
            match (*want, get(&doc, path)) {
                ("-", None) => {}
                ("-", Some(v)) => panic!("{path}: bootc-only field present ({v}); {why}"),
                (_, None) => panic!("{path}: missing from ours ({why})"),
                (want, Some(v)) => assert_eq!(kind(v), want, "{path}: {v} ({why})"),
            }
        }
        assert_eq!(doc["status"]["staged"]["downloadOnly"], true);
        assert_eq!(doc["status"]["booted"]["downloadOnly"], false);
        assert_eq!(doc["status"]["otherDeployments"][0]["id"], "f.0");
        assert_eq!(doc["status"]["otherDeployments"].as_array().unwrap().len(), 1);
        assert_eq!(doc["status"]["type"], "hostctlHost");
        assert_eq!(doc["spec"]["bootOrder"], "default");
        assert_eq!(doc["metadata"]["name"], "host");

        // bootc's spec-v1-null.json: nothing deployed.
        let empty = serde_json::to_value(build(
            &State::default(),
            None,
            BootedSource::KernelCmdline,
            &meta,
            &BootFacts::none(),
        ))
        .unwrap();
        let bootc: serde_json::Value = serde_json::from_str(include_str!("fixtures/bootc-spec-v1-null.json")).unwrap();
        for (path, value) in [
            ("spec.image", &bootc["spec"]["image"]),
            ("spec.bootOrder", &bootc["spec"]["bootOrder"]),
            ("status.staged", &bootc["status"]["staged"]),
            ("status.booted", &bootc["status"]["booted"]),
            ("status.rollback", &bootc["status"]["rollback"]),
            ("status.rollbackQueued", &bootc["status"]["rollbackQueued"]),
            ("status.type", &bootc["status"]["type"]),
        ] {
            assert_eq!(get(&empty, path), Some(value), "{path}");
        }
        assert!(empty["status"].get("otherDeployments").is_none(), "left out when empty, as bootc does");
    }

    /// Every path in bootc's own status fixtures is in our document with the
    /// same JSON type (a null on either side stands for a value that can be
    /// absent), except the bootc-only ones listed in [`BOOTC_FIELDS`] and
    /// fields older bootc versions had.
    #[test]
    fn bootc_fixture_paths_exist_in_ours_with_the_same_type() {
        let ours = serde_json::to_value(every_role()).unwrap();
        let fixtures = [
            ("spec-booted-with-update.yaml", include_str!("fixtures/bootc-spec-booted-with-update.yaml")),
            ("spec-booted-pinned.yaml", include_str!("fixtures/bootc-spec-booted-pinned.yaml")),
            ("spec-staged-download-only.yaml", include_str!("fixtures/bootc-spec-staged-download-only.yaml")),
            ("spec-via-local-oci.yaml", include_str!("fixtures/bootc-spec-via-local-oci.yaml")),
        ];
        // Fields of bootc's v1alpha1 that its current spec.rs no longer has.
        let retired = ["status.isContainer"];
        let bootc_only: Vec<String> = BOOTC_FIELDS
            .iter()
            .filter(|f| f.1 == "-")
            .map(|f| f.0.rsplit_once('.').map_or(f.0, |(_, last)| last).to_string())
            .collect();
        let mut checked = 0;
        for (name, text) in fixtures {
            let bootc: serde_json::Value = serde_yaml_ng::from_str(text).unwrap();
            let mut all = Vec::new();
            paths(&bootc, "", &mut all);
            for (path, value) in all {
                if retired.contains(&path.as_str()) || path.split('.').any(|p| bootc_only.iter().any(|b| b == p)) {
                    continue;
                }
                // Below a value that is null in ours (cachedUpdate), nothing to compare.
                let parents: Vec<&str> = path.match_indices('.').map(|(i, _)| &path[..i]).collect();
                if parents.iter().any(|p| get(&ours, p).is_some_and(|v| v.is_null())) {
                    continue;
                }
                let mine = get(&ours, &path).unwrap_or_else(|| panic!("{name}: {path} is missing from ours"));
                if !value.is_null() && !mine.is_null() {
                    // bootc's timestamps parse as YAML strings here too.
                    assert_eq!(kind(mine), kind(&value), "{name}: {path}: ours {mine}, bootc's {value}");
                }
                checked += 1;
            }
        }
        assert!(checked > 60, "only {checked} paths checked");
        // The oci transport spelled as bootc spells it.
        let oci = ImageReference::from_text("oci:/var/mnt/osupdate:latest");
        assert_eq!((oci.transport.as_str(), oci.image.as_str()), ("oci", "/var/mnt/osupdate:latest"));
    }

    /// Every object in the document has exactly the keys the schema allows
    /// and all it requires (a small structural check of docs/status-schema.json).
    #[test]
    fn document_matches_the_published_schema() {
        let schema: serde_json::Value = serde_json::from_str(include_str!("../../docs/status-schema.json")).unwrap();
        let state =
            State { deployments: vec!["b.2".into(), "a.1".into()], staged: Some("b.2".into()), ..State::default() };
        let doc =
            serde_json::to_value(build(&state, Some("a.1"), BootedSource::KernelCmdline, &meta, &fell_back())).unwrap();
        fn check(doc: &serde_json::Value, schema: &serde_json::Value, root: &serde_json::Value, at: &str) {
            let schema = match schema.get("$ref").and_then(|r| r.as_str()) {
                Some(r) => &root["$defs"][r.trim_start_matches("#/$defs/")],
                None => schema,
            };
            if let Some(alts) = schema.get("oneOf").and_then(|a| a.as_array()) {
                if doc.is_null() {
                    return;
                }
                let obj = alts.iter().find(|a| a.get("type") != Some(&serde_json::json!("null"))).unwrap();
                return check(doc, obj, root, at);
            }
            let (Some(obj), Some(props)) = (doc.as_object(), schema.get("properties").and_then(|p| p.as_object()))
            else {
                return;
            };
            for req in schema["required"].as_array().unwrap() {
                assert!(obj.contains_key(req.as_str().unwrap()), "{at}: missing {req}");
            }
            for (k, v) in obj {
                let sub = props.get(k).unwrap_or_else(|| panic!("{at}: {k} is not in the schema"));
                if let Some(items) = sub.get("items") {
                    for (i, item) in v.as_array().unwrap().iter().enumerate() {
                        check(item, items, root, &format!("{at}.{k}[{i}]"));
                    }
                } else {
                    check(v, sub, root, &format!("{at}.{k}"));
                }
            }
        }
        check(&doc, &schema, &schema, "$");
        assert_eq!(doc["apiVersion"], schema["properties"]["apiVersion"]["const"]);
        let doc = serde_json::to_value(every_role()).unwrap();
        assert!(doc["status"]["otherDeployments"].is_array());
        check(&doc, &schema, &schema, "$");
    }
}
