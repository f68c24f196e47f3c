//! `app list` and `app status`: what each app runs (reference, image ID and
//! digest), its unit's state, its health, ports, volumes, auto-update policy
//! and the last update's result; for an app that is not up, why (the unit's
//! state and its last journal lines).

use anyhow::Result;
use serde::Serialize;

use super::record::{AppRecord, UpdateRecord};
use super::Apps;

/// One app, as `app status --json` prints it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct AppStatus {
    /// The app's name.
    pub name: String,
    /// Its systemd unit.
    pub unit: String,
    /// The reference in the unit's `Image=`.
    pub image: String,
    /// The image the container runs (or, when it is not running, the one the reference names).
    pub image_id: Option<String>,
    /// The image's manifest digest, when known.
    pub digest: Option<String>,
    /// The unit's `ActiveState` and `SubState`.
    pub state: String,
    /// The unit's `SubState` (`running`, `dead`, …).
    pub sub_state: String,
    /// `healthy`, `unhealthy`, `starting`; `None` without a health check.
    pub health: Option<String>,
    /// Published ports, as in `PublishPort=`.
    pub ports: Vec<String>,
    /// Volumes, as in `Volume=`.
    pub volumes: Vec<String>,
    /// `AutoUpdate=`, when set.
    pub auto_update: Option<String>,
    /// The app's last update, if it had one.
    pub last_update: Option<UpdateRecord>,
    /// When the unit is not active: its state and last journal lines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why_down: Option<String>,
}

/// The status of app `name`; `explain` adds the journal lines of an app that is down.
pub fn status(apps: &Apps, name: &str, explain: bool) -> Result<AppStatus> {
    let unit = apps.unit(name)?;
    let service = Apps::service(name);
    let st = apps.units.state(&service)?;
    let container = apps.podman.container(&unit.container_name)?;
    let image = match &container {
        Some(c) => apps.podman.image(&c.image)?,
        None => apps.podman.image(&unit.image)?,
    };
    let why_down = if st.is_active() || !explain {
        None
    } else {
        let lines = apps.units.journal(&service, apps.journal_lines).unwrap_or_default();
        let mut s = format!("unit {}", st.summary());
        if !lines.is_empty() {
            s.push_str(&format!("; last journal lines:\n  {}", lines.join("\n  ")));
        }
        Some(s)
    };
    Ok(AppStatus {
        name: name.to_string(),
        unit: service,
        image: unit.image.clone(),
        image_id: image.as_ref().map(|i| i.id.clone()),
        digest: image.as_ref().map(|i| i.digest.clone()).filter(|d| !d.is_empty()),
        state: st.active_state.clone(),
        sub_state: st.sub_state.clone(),
        health: container
            .as_ref()
            .and_then(|c| c.state.health.as_ref())
            .map(|h| h.status.clone())
            .filter(|h| !h.is_empty()),
        ports: match &container {
            Some(c) if !c.ports().is_empty() => c.ports(),
            _ => unit.publish.clone(),
        },
        volumes: unit.volumes.clone(),
        auto_update: unit.auto_update.clone(),
        last_update: AppRecord::load(&apps.records_dir(), name)?.last_update,
        why_down,
    })
}

/// Every installed app's status, by name.
pub fn list(apps: &Apps) -> Result<Vec<AppStatus>> {
    apps.names()?.iter().map(|n| status(apps, n, false)).collect()
}

/// `app status` for people: one `key: value` per line.
pub fn render(s: &AppStatus) -> String {
    let mut out = format!("App: {}\n  Unit: {} ({} {})\n  Image: {}\n", s.name, s.unit, s.state, s.sub_state, s.image);
    if let Some(d) = &s.digest {
        out.push_str(&format!("  Digest: {d}\n"));
    }
    if let Some(h) = &s.health {
        out.push_str(&format!("  Health: {h}\n"));
    }
    if !s.ports.is_empty() {
        out.push_str(&format!("  Ports: {}\n", s.ports.join(", ")));
    }
    if !s.volumes.is_empty() {
        out.push_str(&format!("  Volumes: {}\n", s.volumes.join(", ")));
    }
    out.push_str(&format!("  Auto-update: {}\n", s.auto_update.as_deref().unwrap_or("no")));
    if let Some(u) = &s.last_update {
        out.push_str(&format!("  Last update: {} at {}", u.updated, u.time));
        if let (Some(f), Some(t)) = (&u.from_digest, &u.to_digest) {
            out.push_str(&format!(" ({f} -> {t})"));
        }
        out.push('\n');
        if let Some(r) = &u.reason {
            // A reason's journal lines are on lines of their own, indented under it.
            out.push_str(&format!("    Reason: {}\n", r.replace('\n', "\n      ")));
        }
    }
    if let Some(w) = &s.why_down {
        out.push_str(&format!("  Down: {w}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::install::{install, Source};
    use crate::apps::quadlet::ContainerSpec;
    use crate::apps::testing::Fixture;
    use crate::host::podman::fake_image;
    use crate::host::units::state;

    #[test]
    fn status_of_an_app_that_is_down_says_why() {
        let f = Fixture::new();
        let img = "127.0.0.1:5000/apps/web:1";
        f.podman.state.lock().unwrap().registry.insert(img.into(), fake_image("id1", "sha256:d1"));
        let spec = ContainerSpec {
            name: "web".into(),
            image: img.into(),
            publish: vec!["18080:80".into()],
            auto_update: true,
            ..Default::default()
        };
        install(&f.apps(), Source::Spec(spec), false).unwrap();
        f.units.set_state("web.service", state("failed", "failed"));
        f.units.set_journal("web.service", &["web.service: Main process exited, code=exited, status=1/FAILURE"]);
        let s = status(&f.apps(), "web", true).unwrap();
        assert_eq!((s.state.as_str(), s.digest.as_deref()), ("failed", Some("sha256:d1")));
        assert_eq!(s.ports, ["18080:80"]);
        assert_eq!(s.auto_update.as_deref(), Some("registry"));
        let text = render(&s);
        assert!(text.contains("Down: unit failed (failed, result exit-code, exit status 1)"), "{text}");
        assert!(text.contains("status=1/FAILURE"), "{text}");
        assert_eq!(list(&f.apps()).unwrap().len(), 1);
        assert!(list(&f.apps()).unwrap()[0].why_down.is_none());
    }

    /// `app status` after an update that rolled back: the reason's journal
    /// lines were joined with " | " on one line; now each is on its own line,
    /// indented under the reason.
    #[test]
    fn app_status_after_a_rolled_back_update_shows_the_journal_lines_one_per_line() {
        let s = AppStatus {
            name: "web".into(),
            unit: "web.service".into(),
            image: "reg/web:1".into(),
            image_id: None,
            digest: None,
            state: "active".into(),
            sub_state: "running".into(),
            health: None,
            ports: vec![],
            volumes: vec![],
            auto_update: None,
            last_update: Some(UpdateRecord {
                time: "2026-12-07T07:00:00Z".into(),
                updated: "rolled back".into(),
                from_digest: None,
                to_digest: None,
                reason: Some(
                    "sha256:d2 did not come up; rolled back to sha256:d1\nlast journal lines:\n  one\n  two".into(),
                ),
            }),
            why_down: None,
        };
        let text = render(&s);
        assert!(
            text.contains(
                "    Reason: sha256:d2 did not come up; rolled back to sha256:d1\n      last journal lines:\n        one\n        two\n"
            ),
            "{text}"
        );
    }
}
