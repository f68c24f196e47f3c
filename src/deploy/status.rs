//! The host's status as a versioned, k8s-shaped document
//! (`apiVersion: hostctl.dev/v1`, `kind: Host`), documented by
//! `docs/status-schema.json`, and its human rendering.

use std::fmt::Write as _;

use serde::Serialize;

use crate::deploy::booted::BootedSource;
use crate::deploy::deployment::Metadata;
use crate::deploy::state::{self, State};
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
) -> HostStatus {
    let r = state::roles(state, booted);
    let one = |id: &str| -> DeploymentStatus {
        let pinned = state.pinned.contains(id);
        let finalized = state.deployments.iter().any(|d| d == id);
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
                error: Some(e),
            },
        }
    };
    HostStatus {
        api_version: API_VERSION,
        kind: "Host",
        spec: HostSpec { image: state.spec.as_ref().map(|s| s.image.clone()) },
        status: HostState {
            stateroot: state.stateroot.clone(),
            booted: r.booted.as_deref().map(one),
            staged: r.staged.as_deref().map(one),
            rollback: r.rollback.as_deref().map(one),
            rollback_queued: r.rollback_queued,
            booted_source: source,
            deployments: state.all().iter().map(|id| one(id)).collect(),
        },
    }
}

/// The human view.
pub fn render_human(h: &HostStatus) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Tracking: {}", h.spec.image.as_deref().unwrap_or("(nothing; use `hostctl switch IMAGE`)"));
    let slots = [("Booted", &h.status.booted), ("Staged", &h.status.staged), ("Rollback", &h.status.rollback)];
    for (name, d) in slots {
        let _ = write!(s, "\n{name}:");
        match d {
            None => {
                let _ = writeln!(s, " none");
            }
            Some(d) => {
                let _ = writeln!(s, " {}{}", d.id, if d.pinned { " (pinned)" } else { "" });
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
                if !d.finalized {
                    let _ = writeln!(s, "    (downloaded, not finalised)");
                }
            }
        }
    }
    if h.status.rollback_queued {
        let _ = writeln!(s, "\nThe next boot goes to the rollback deployment.");
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

    #[test]
    fn document_has_roles_and_schema_fields() {
        let state = State {
            deployments: vec!["b.2".into(), "a.1".into()],
            staged: Some("b.2".into()),
            pinned: ["a.1".to_string()].into(),
            spec: Some(crate::deploy::state::Spec { image: "reg/os:latest".into() }),
            ..State::default()
        };
        let h = build(&state, Some("a.1"), BootedSource::Environment, &meta);
        let v = serde_json::to_value(&h).unwrap();
        assert_eq!(v["apiVersion"], API_VERSION);
        assert_eq!(v["spec"]["image"], "reg/os:latest");
        assert_eq!(v["status"]["booted"]["id"], "a.1");
        assert_eq!(v["status"]["booted"]["pinned"], true);
        assert_eq!(v["status"]["staged"]["version"], "v-b.2");
        assert!(v["status"]["rollback"].is_null());
        assert_eq!(v["status"]["bootedSource"], "environment");
        assert_eq!(v["status"]["deployments"].as_array().unwrap().len(), 2);
        let text = render_human(&h);
        assert!(text.contains("Booted: a.1 (pinned)") && text.contains("version:  v-b.2"), "{text}");

        let state = State { deployments: vec!["bad.9".into()], ..State::default() };
        let h = build(&state, Some("bad.9"), BootedSource::DefaultBootEntry, &meta);
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
        let doc = serde_json::to_value(build(&state, Some("a.1"), BootedSource::KernelCmdline, &meta)).unwrap();
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
