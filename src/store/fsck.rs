//! Checking the store against itself: every blob re-hashed against its name,
//! every layer index parsed and matched to its diff_id, every object
//! re-hashed (content and metadata) against its id, and every object a
//! layer index names present. What is found is a list of [`Found`], each
//! naming the path at fault; repairing it is `deploy::fsck`'s business (it
//! needs the images' sources).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::digest::Digest;
use crate::store::{blobs, objects, EntryKind, LayerIndex, ObjectId, Store};

/// What is wrong with one path of the store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "what")]
pub enum StoreDamage {
    /// A manifest, index or config whose bytes no longer hash to its name.
    Blob {
        /// The blob's digest.
        digest: Digest,
    },
    /// A layer index that cannot be read, or describes another layer.
    LayerIndex {
        /// The layer's diff_id.
        diff_id: Digest,
    },
    /// An object whose content or metadata no longer hashes to its id, or
    /// that is missing although a layer index names it.
    Object {
        /// The object's id.
        id: ObjectId,
        /// Layers whose index names it.
        layers: Vec<Digest>,
    },
}

/// One damaged path of the store and what is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Found {
    /// The path at fault.
    pub path: PathBuf,
    /// What it is.
    #[serde(flatten)]
    pub damage: StoreDamage,
    /// What is wrong, in words.
    pub problem: String,
}

/// The result of checking a store.
#[derive(Clone, Debug, Default)]
pub struct StoreCheck {
    /// Damaged paths.
    pub found: Vec<Found>,
    /// Blobs checked.
    pub blobs: usize,
    /// Layer indexes read.
    pub layers: usize,
    /// Objects re-hashed.
    pub objects: usize,
    /// The layer indexes that could be read, by diff_id.
    pub indexes: BTreeMap<Digest, LayerIndex>,
    /// Objects found damaged or missing.
    pub bad_objects: BTreeSet<ObjectId>,
    /// Objects a layer index names that are not there at all.
    pub missing_objects: BTreeSet<ObjectId>,
    /// Inode (device, number) of every intact object, for the deployments' hardlinks.
    pub inodes: BTreeMap<ObjectId, (u64, u64)>,
}

/// Checks every blob, layer index and object of `store`.
pub fn check(store: &Store) -> Result<StoreCheck> {
    let repo = store.dir();
    let mut c = StoreCheck::default();
    for digest in blobs::list_blobs(repo)? {
        c.blobs += 1;
        if let Err(e) = store.read_blob(&digest) {
            c.found.push(Found {
                path: blobs::blob_path(repo, &digest),
                damage: StoreDamage::Blob { digest },
                problem: format!("{e:#}"),
            });
        }
    }

    // Layer indexes, and which layers name which object.
    let mut named_by: BTreeMap<ObjectId, Vec<Digest>> = BTreeMap::new();
    for diff_id in list_indexes(store)? {
        c.layers += 1;
        match store.layer_index(&diff_id) {
            Ok(index) => {
                for e in &index.entries {
                    if let EntryKind::File { object, .. } = &e.kind {
                        let v = named_by.entry(object.clone()).or_default();
                        if v.last() != Some(&diff_id) {
                            v.push(diff_id.clone());
                        }
                    }
                }
                c.indexes.insert(diff_id, index);
            }
            Err(e) => c.found.push(Found {
                path: store.index_file(&diff_id),
                damage: StoreDamage::LayerIndex { diff_id },
                problem: format!("{e:#}"),
            }),
        }
    }

    // Every object on disk, then every object an index names but the disk lacks.
    let objects_dir = repo.join("objects");
    let mut seen = BTreeSet::new();
    for fan in crate::fsutil::read_dir_if_present(&objects_dir)? {
        if !fan.file_type()?.is_dir() {
            continue;
        }
        let prefix = fan.file_name().to_string_lossy().into_owned();
        for entry in fs::read_dir(fan.path()).with_context(|| format!("listing {}", fan.path().display()))? {
            let entry = entry?;
            let id = ObjectId(format!("{prefix}{}", entry.file_name().to_string_lossy()));
            if id.0.len() != 64 || !id.0.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            c.objects += 1;
            let path = entry.path();
            let problem = match fs::symlink_metadata(&path) {
                Ok(m) if !m.is_file() => Some("not a regular file".to_string()),
                Ok(m) => match objects::verify_object(&path, &id) {
                    Ok(true) => {
                        c.inodes.insert(id.clone(), (m.dev(), m.ino()));
                        None
                    }
                    Ok(false) => Some(describe_mismatch(&path, &id, &c.indexes, &named_by)),
                    Err(e) => Some(format!("cannot be read: {e:#}")),
                },
                Err(e) => Some(format!("cannot be read: {e}")),
            };
            seen.insert(id.clone());
            if let Some(problem) = problem {
                let layers = named_by.get(&id).cloned().unwrap_or_default();
                c.bad_objects.insert(id.clone());
                c.found.push(Found { path, damage: StoreDamage::Object { id, layers }, problem });
            }
        }
    }
    for (id, layers) in &named_by {
        if !seen.contains(id) {
            c.bad_objects.insert(id.clone());
            c.missing_objects.insert(id.clone());
            c.found.push(Found {
                path: store.object_path(id),
                damage: StoreDamage::Object { id: id.clone(), layers: layers.clone() },
                problem: "missing (a layer index names it)".into(),
            });
        }
    }
    Ok(c)
}

/// Why an object no longer matches its id, as precisely as its layer index
/// allows: size and mode are recorded there; otherwise the content changed.
fn describe_mismatch(
    path: &std::path::Path,
    id: &ObjectId,
    indexes: &BTreeMap<Digest, LayerIndex>,
    named_by: &BTreeMap<ObjectId, Vec<Digest>>,
) -> String {
    let Ok(m) = fs::symlink_metadata(path) else { return "does not match its id".into() };
    let recorded = named_by.get(id).and_then(|layers| layers.first()).and_then(|l| indexes.get(l)).and_then(|i| {
        i.entries.iter().find_map(|e| match &e.kind {
            EntryKind::File { object, size } if object == id => Some((*size, e.meta.mode, e.meta.uid, e.meta.gid)),
            _ => None,
        })
    });
    match recorded {
        Some((size, _, _, _)) if size != m.size() => format!("size {} where {size} was recorded", m.size()),
        Some((_, mode, _, _)) if mode & 0o7777 != m.mode() & 0o7777 => {
            format!("mode {:o} where {:o} was recorded", m.mode() & 0o7777, mode & 0o7777)
        }
        Some((_, _, uid, gid)) if (uid, gid) != (m.uid(), m.gid()) => {
            format!("owner {}:{} where {uid}:{gid} was recorded", m.uid(), m.gid())
        }
        _ => "content does not match its id (changed in place)".into(),
    }
}

/// diff_ids of every layer index file.
fn list_indexes(store: &Store) -> Result<Vec<Digest>> {
    let dir = store.dir().join("layers");
    let mut out = Vec::new();
    for e in crate::fsutil::read_dir_if_present(&dir)? {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(hex) = name.strip_suffix(".json") {
            if let Ok(d) = format!("sha256:{hex}").parse::<Digest>() {
                out.push(d);
            }
        }
    }
    out.sort();
    Ok(out)
}
