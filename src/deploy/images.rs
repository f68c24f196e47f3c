//! Which of the store's images the deployments use: what `image rm` refuses
//! to remove and what `image prune` keeps. An image record is in use when a
//! deployment of the stateroot (booted, staged, rollback, pinned or queued:
//! every one in `state.json`) was made from its manifest. Removing a record
//! frees nothing by itself; the next `cleanup` collects the layers and
//! objects no remaining record or deployment reaches.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use crate::deploy::deployment::Metadata;
use crate::deploy::stage::Deployer;
use crate::digest::Digest;
use crate::store::ImageRecord;

/// Manifest digest → the deployments made from it.
pub type InUse = BTreeMap<Digest, Vec<String>>;

/// The manifests the stateroot's deployments were made from.
pub fn in_use(d: &Deployer) -> Result<InUse> {
    let mut used = InUse::new();
    for id in d.load_state()?.all() {
        let m = Metadata::load(&d.layout, &id)?;
        used.entry(m.image.image_digest.clone()).or_default().push(id);
    }
    Ok(used)
}

/// The records `image rm` removes for `names` (each an image reference as
/// the store records it). All or nothing: a name the store does not hold, or
/// an image a deployment uses, refuses the whole command.
pub fn to_remove<'a>(records: &'a [ImageRecord], names: &[String], used: &InUse) -> Result<Vec<&'a ImageRecord>> {
    let mut out: Vec<&ImageRecord> = Vec::new();
    for name in names {
        let Some(r) = records.iter().find(|r| &r.imgref == name) else {
            bail!("no image {name} in the store (`hostctl image list` shows what it holds)");
        };
        if let Some(ids) = used.get(&r.manifest_digest) {
            bail!(
                "image {name} ({}) is used by deployment {}: it stays while a deployment needs it \
                 (`hostctl cleanup` removes deployments nothing keeps; `hostctl unpin` releases a pinned one)",
                r.manifest_digest,
                ids.join(", ")
            );
        }
        if !out.iter().any(|o| o.imgref == r.imgref) {
            out.push(r);
        }
    }
    Ok(out)
}

/// The records no deployment uses (what `image prune` removes).
pub fn unused<'a>(records: &'a [ImageRecord], used: &InUse) -> Vec<&'a ImageRecord> {
    records.iter().filter(|r| !used.contains_key(&r.manifest_digest)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(name: &str, manifest: &str) -> ImageRecord {
        ImageRecord {
            imgref: name.into(),
            manifest_digest: Digest::of(manifest.as_bytes()),
            config_digest: Digest::of(b"c"),
            index_digest: None,
            pulled_at: "2026-01-01T00:00:00Z".into(),
            layers: Vec::new(),
        }
    }

    #[test]
    fn rm_refuses_used_and_unknown_images_and_prune_keeps_used_ones() {
        // Two references to one manifest: both are in use.
        let records = vec![rec("r/os:v1", "m1"), rec("r/os:stable", "m1"), rec("r/os:v2", "m2"), rec("r/app:1", "m3")];
        let used: InUse = [(Digest::of(b"m1"), vec!["abc.1".to_string()])].into();
        let names = |v: Vec<&ImageRecord>| v.iter().map(|r| r.imgref.clone()).collect::<Vec<_>>();

        let r = to_remove(&records, &["r/os:v2".into(), "r/app:1".into(), "r/os:v2".into()], &used).unwrap();
        assert_eq!(names(r), ["r/os:v2", "r/app:1"]);
        let err = to_remove(&records, &["r/os:v2".into(), "r/os:stable".into()], &used).unwrap_err().to_string();
        assert!(err.contains("image r/os:stable") && err.contains("used by deployment abc.1"), "{err}");
        let err = to_remove(&records, &["r/nope:1".into()], &used).unwrap_err().to_string();
        assert!(err.contains("no image r/nope:1 in the store"), "{err}");

        assert_eq!(names(unused(&records, &used)), ["r/os:v2", "r/app:1"]);
        assert_eq!(unused(&records, &InUse::new()).len(), 4);
    }
}
