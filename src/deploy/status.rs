//! The host's status as a versioned, k8s-shaped document
//! (`apiVersion: hostctl.dev/v1`, `kind: Host`), documented by
//! `docs/status-schema.json`, and its human rendering.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::boot::counting::{self, Assessment, EntryAssessment};
use crate::boot::health::HealthRecord;
use crate::deploy::booted::BootedSource;
use crate::deploy::deployment::Metadata;
use crate::deploy::state::{self, State, TransportOptions};
use crate::trust::Verdict;

/// `apiVersion` of the status document; bumped on incompatible changes.
pub const API_VERSION: &str = "hostctl.dev/v1";

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostStatus {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub spec: HostSpec,
    pub status: HostState,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostSpec {
    /// The tracked image, `null` before the first `switch`.
    pub image: Option<String>,
    /// The registry transport options remembered with it, `null` before the
    /// first `switch`.
    pub transport_options: Option<TransportOptionsStatus>,
}

/// The transport options `switch` recorded, which `upgrade` uses again
/// ([`crate::deploy::state::TransportOptions`]).
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TransportOptionsStatus {
    /// False after `switch --tls-verify=false`.
    pub tls_verify: bool,
    pub cert_dir: Option<String>,
    pub authfile: Option<String>,
}

impl From<&TransportOptions> for TransportOptionsStatus {
    fn from(t: &TransportOptions) -> Self {
        let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
        TransportOptionsStatus { tls_verify: t.tls_verify, cert_dir: path(&t.cert_dir), authfile: path(&t.authfile) }
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HostState {
    pub stateroot: String,
    pub booted: Option<DeploymentStatus>,
    pub staged: Option<DeploymentStatus>,
    pub rollback: Option<DeploymentStatus>,
    /// The next boot goes to the rollback deployment.
    pub rollback_queued: bool,
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
    pub passed: bool,
    pub checked_at: String,
    /// The checks that ran, in order; the first failure ends the run.
    pub checks: Vec<HealthCheckStatus>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckStatus {
    pub name: String,
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
}

impl BootFacts {
    /// No boot entries and no health records (a sysroot that was never booted).
    pub fn none() -> Self {
        BootFacts::default()
    }
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatus {
    pub id: String,
    pub image: Option<String>,
    pub manifest_digest: Option<String>,
    pub config_digest: Option<String>,
    pub version: Option<String>,
    /// The image's creation time.
    pub timestamp: Option<String>,
    pub staged_at: Option<String>,
    pub finalized: bool,
    pub kernel: Option<String>,
    pub kargs: Vec<String>,
    pub pinned: bool,
    pub verdict: Option<Verdict>,
    /// Its boot entry's assessment; `null` when it has no entry (not finalised).
    pub boot_entry: Option<BootEntryStatus>,
    /// Its last health-check run; `null` when the checks never ran for it.
    pub health: Option<HealthStatus>,
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
    let one = |id: &str| -> DeploymentStatus {
        let pinned = state.pinned.contains(id);
        let finalized = state.deployments.iter().any(|d| d == id);
        let boot_entry = boot.entries.iter().find(|e| e.deployment == id).map(|e| (&e.assessment).into());
        let health = boot.health.get(id).cloned().map(HealthStatus::from);
        match meta(id) {
            Ok(m) => DeploymentStatus {
                id: id.into(),
                image: Some(m.image),
                manifest_digest: Some(m.manifest_digest.to_string()),
                config_digest: Some(m.config_digest.to_string()),
                version: m.image_version,
                timestamp: m.image_created,
                staged_at: Some(m.staged_at),
                finalized,
                kernel: Some(m.kernel.version),
                kargs: m.kargs,
                pinned,
                verdict: m.verdict,
                boot_entry,
                health,
                error: None,
            },
            Err(e) => DeploymentStatus {
                id: id.into(),
                image: None,
                manifest_digest: None,
                config_digest: None,
                version: None,
                timestamp: None,
                staged_at: None,
                finalized,
                kernel: None,
                kargs: Vec::new(),
                pinned,
                verdict: None,
                boot_entry,
                health,
                error: Some(e),
            },
        }
    };
    HostStatus {
        api_version: API_VERSION,
        kind: "Host",
        spec: HostSpec {
            image: state.spec.as_ref().map(|s| s.image.clone()),
            transport_options: state.spec.as_ref().map(|s| (&s.transport_options).into()),
        },
        status: HostState {
            stateroot: state.stateroot.clone(),
            booted: r.booted.as_deref().map(one),
            staged: r.staged.as_deref().map(one),
            rollback: r.rollback.as_deref().map(one),
            rollback_queued: r.rollback_queued,
            booted_source: source,
            deployments: state.all().iter().map(|id| one(id)).collect(),
            staged_locked: state.staged_locked && state.staged_unfinalized().is_some(),
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
    let _ = writeln!(s, "Tracking: {}", h.spec.image.as_deref().unwrap_or("(nothing; use `hostctl switch IMAGE`)"));
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
                if let Some(e) = &d.error {
                    let _ = writeln!(s, "    error:    {e}");
                    continue;
                }
                let f = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
                let _ = writeln!(s, "    image:    {}", f(&d.image));
                let _ = writeln!(s, "    digest:   {}", f(&d.manifest_digest));
                let _ = writeln!(s, "    version:  {}", f(&d.version));
                let _ = writeln!(s, "    created:  {}", f(&d.timestamp));
                let _ = writeln!(s, "    kernel:   {}", f(&d.kernel));
                if let Some(v) = &d.verdict {
                    let signed = if v.signature_verified { "signature verified" } else { "not signed" };
                    let _ = writeln!(s, "    trust:    {} ({signed})", v.rule);
                    for who in &v.signers {
                        let _ = writeln!(s, "    signer:   {who}");
                    }
                }
                if !d.finalized && h.status.staged_locked && name == "Staged" {
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
            image: "reg/os:latest".into(),
            manifest_digest: Digest::of(id.as_bytes()),
            config_digest: Digest::of(b"c"),
            layers: vec![],
            image_version: Some(format!("v-{id}")),
            image_created: Some("2026-01-01T00:00:00Z".into()),
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
            spec: Some(crate::deploy::state::Spec::new("reg/os:latest")),
            ..State::default()
        };
        let h = build(&state, Some("a.1"), BootedSource::Environment, &meta, &BootFacts::none());
        let v = serde_json::to_value(&h).unwrap();
        assert_eq!(v["apiVersion"], API_VERSION);
        assert_eq!(v["spec"]["image"], "reg/os:latest");
        assert_eq!(v["spec"]["transportOptions"]["tlsVerify"], true);
        assert_eq!(v["status"]["booted"]["id"], "a.1");
        assert_eq!(v["status"]["booted"]["pinned"], true);
        assert_eq!(v["status"]["staged"]["version"], "v-b.2");
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
    }
}
