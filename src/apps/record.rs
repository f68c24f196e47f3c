//! What hostctl remembers of each app, in `/var/lib/hostctl/apps/NAME.json`
//! (persistent `/var`, so it survives OS upgrades and rollbacks): the files
//! the install wrote, the last update's result, and the images that updates
//! which were rolled back pulled and that could not be removed then. The
//! unit file stays the source of truth for everything else.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// One app's record.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct AppRecord {
    /// The unit files the install wrote (file names in the units directory).
    #[serde(default)]
    pub files: Vec<String>,
    /// The app's last update, if it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_update: Option<UpdateRecord>,
    /// Images that updates pulled and then rolled back from, which were left
    /// in podman's storage (a container used them, or podman refused to
    /// remove them); `app remove --purge` removes them once nothing uses them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_images: Vec<FailedImage>,
}

/// An image a rolled-back update pulled, left in podman's storage.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FailedImage {
    /// The image ID (what it is removed by: it has no name any more).
    pub id: String,
    /// The manifest digest the update pulled it by.
    pub digest: String,
}

/// The outcome of the last `app update` that did more than check.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct UpdateRecord {
    /// RFC 3339, UTC.
    pub time: String,
    /// podman auto-update's `Updated` value: `true`, `rolled back`, `failed`...
    pub updated: String,
    /// The manifest digest before the update.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_digest: Option<String>,
    /// The manifest digest after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_digest: Option<String>,
    /// Why it failed or was rolled back, in a sentence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl AppRecord {
    /// The record of `name` in `dir`; none yet is an empty record.
    pub fn load(dir: &Path, name: &str) -> Result<AppRecord> {
        let path = dir.join(format!("{name}.json"));
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AppRecord::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Writes the record atomically.
    pub fn save(&self, dir: &Path, name: &str) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        crate::fsutil::write_json_atomic(&dir.join(format!("{name}.json")), self)
    }

    /// Removes `name`'s record.
    pub fn remove(dir: &Path, name: &str) -> Result<()> {
        crate::fsutil::remove_file_if_present(&dir.join(format!("{name}.json")))
    }
}

/// Now, RFC 3339 in UTC.
pub fn now() -> String {
    time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip_and_missing_is_empty() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(AppRecord::load(d.path(), "web").unwrap(), AppRecord::default());
        let r = AppRecord {
            files: vec!["web.container".into()],
            last_update: Some(UpdateRecord {
                time: now(),
                updated: "rolled back".into(),
                from_digest: Some("sha256:aa".into()),
                to_digest: Some("sha256:bb".into()),
                reason: Some("it exited".into()),
            }),
            failed_images: vec![FailedImage { id: "id2".into(), digest: "sha256:bb".into() }],
        };
        r.save(&d.path().join("apps"), "web").unwrap();
        assert_eq!(AppRecord::load(&d.path().join("apps"), "web").unwrap(), r);
        // A record from before failed images were kept still reads.
        std::fs::write(d.path().join("old.json"), r#"{"files":["old.container"]}"#).unwrap();
        assert!(AppRecord::load(d.path(), "old").unwrap().failed_images.is_empty());
        AppRecord::remove(&d.path().join("apps"), "web").unwrap();
        assert_eq!(AppRecord::load(&d.path().join("apps"), "web").unwrap(), AppRecord::default());
    }
}
