//! Which layer each file of a rechunked image goes to: a pure function of the
//! groups (Debian packages, and unowned files by directory) and their sizes,
//! chosen so that a change to one package changes as few layers as possible.
//!
//! With `--max-layers N`:
//! - the first layer holds every directory (so directories' owners and modes
//!   are set once, whatever layer a file lands in);
//! - of the other `N - 1`, `B = max(1, (N - 1) / 8)` are shared buckets and
//!   the rest, `K`, are one group each: the `K` largest groups (by bytes, ties
//!   by name) get a layer of their own;
//! - every other group goes to bucket `sha256(group name) mod B`, which does
//!   not depend on any other group.
//!
//! So a package whose files change changes its own layer (or one bucket) and
//! the directory layer only when directories change. What can move other
//! groups is a change in the ranking: a group that grows past the `K`-th
//! largest takes its place, and the one it displaces goes to a bucket.
//! `N = 1` puts everything in one layer.

use std::collections::BTreeMap;
use std::fmt;

use sha2::{Digest as _, Sha256};

use super::owners::Owners;

/// Layers a rechunked image has at most, unless `--max-layers` says otherwise.
pub const DEFAULT_MAX_LAYERS: usize = 64;
/// The largest `--max-layers` accepted (overlayfs stacks at most 128 lower layers in podman).
pub const MAX_LAYERS: usize = 127;
/// Components of the parent directory that name an unowned file's group.
const PATH_GROUP_DEPTH: usize = 3;

/// What files are grouped by.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    /// The files of one Debian package (`name` or `name:arch`).
    Package(String),
    /// Files no package owns, by the first components of their directory ("" for the root).
    Path(String),
}

impl fmt::Display for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Group::Package(p) => write!(f, "package {p}"),
            Group::Path(p) if p.is_empty() => f.write_str("path /"),
            Group::Path(p) => write!(f, "path /{p}"),
        }
    }
}

/// The group of the non-directory at `path`.
pub fn group_of(path: &str, owners: &Owners) -> Group {
    if let Some(pkg) = owners.owner(path) {
        return Group::Package(pkg.to_string());
    }
    let parent = path.rsplit_once('/').map_or("", |(p, _)| p);
    let dir: Vec<&str> = parent.split('/').filter(|c| !c.is_empty()).take(PATH_GROUP_DEPTH).collect();
    Group::Path(dir.join("/"))
}

/// One layer of the rechunked image, in the order they are stacked.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LayerKey {
    /// Every directory (and everything else when `--max-layers 1`).
    Base,
    /// One group alone.
    Own(Group),
    /// A shared bucket.
    Bucket(u32),
}

impl fmt::Display for LayerKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayerKey::Base => f.write_str("directories"),
            LayerKey::Own(g) => g.fmt(f),
            LayerKey::Bucket(b) => write!(f, "bucket {b}"),
        }
    }
}

/// Where each group goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Group → layer.
    pub layer_of: BTreeMap<Group, LayerKey>,
}

/// The bucket of `group` among `buckets`.
fn bucket(group: &Group, buckets: u32) -> u32 {
    let hash = Sha256::digest(group.to_string().as_bytes());
    let head = u64::from_be_bytes(hash[..8].try_into().expect("sha256 is 32 bytes"));
    (head % u64::from(buckets)) as u32
}

/// Assigns groups (with their sizes in bytes) to at most `max_layers` layers.
pub fn plan(sizes: &BTreeMap<Group, u64>, max_layers: usize) -> Plan {
    let max_layers = max_layers.clamp(1, MAX_LAYERS);
    if max_layers == 1 {
        return Plan { layer_of: sizes.keys().map(|g| (g.clone(), LayerKey::Base)).collect() };
    }
    let rest = max_layers - 1;
    let buckets = (rest / 8).max(1);
    let own = rest - buckets;
    let mut ranked: Vec<(&Group, u64)> = sizes.iter().map(|(g, s)| (g, *s)).collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let layer_of = ranked
        .iter()
        .enumerate()
        .map(|(i, (g, _))| {
            let key = if i < own { LayerKey::Own((*g).clone()) } else { LayerKey::Bucket(bucket(g, buckets as u32)) };
            ((*g).clone(), key)
        })
        .collect();
    Plan { layer_of }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(n: &str) -> Group {
        Group::Package(n.to_string())
    }

    fn sizes(n: usize) -> BTreeMap<Group, u64> {
        (0..n).map(|i| (pkg(&format!("p{i:03}")), 1000 + (i as u64 * 7919) % 5000)).collect()
    }

    fn layers(p: &Plan) -> std::collections::BTreeSet<LayerKey> {
        p.layer_of.values().cloned().collect()
    }

    #[test]
    fn at_most_max_layers_counting_the_directory_layer() {
        let s = sizes(200);
        for n in [1, 2, 3, 9, 16, 64, 127] {
            let p = plan(&s, n);
            let mut used = layers(&p);
            used.insert(LayerKey::Base);
            assert!(used.len() <= n, "{n}: {} layers", used.len());
        }
        assert_eq!(layers(&plan(&s, 1)), [LayerKey::Base].into());
    }

    #[test]
    fn largest_groups_get_their_own_layer_the_rest_share_buckets() {
        let mut s = sizes(100);
        s.insert(pkg("linux-image"), 400_000_000);
        s.insert(Group::Path("var/cache/apt".into()), 70_000_000);
        let p = plan(&s, 16); // 15 = 1 bucket + 14 own
        assert_eq!(p.layer_of[&pkg("linux-image")], LayerKey::Own(pkg("linux-image")));
        assert!(matches!(p.layer_of[&Group::Path("var/cache/apt".into())], LayerKey::Own(_)));
        assert_eq!(p.layer_of.values().filter(|k| matches!(k, LayerKey::Own(_))).count(), 14);
        assert_eq!(p.layer_of.values().filter(|k| matches!(k, LayerKey::Bucket(0))).count(), 88);
    }

    #[test]
    fn changing_one_packages_size_moves_no_other_group() {
        let s = sizes(150);
        let before = plan(&s, 64);
        for changed in ["p007", "p100", "p149"] {
            let mut s2 = s.clone();
            // Within its rank: a few bytes more, as a patched package.
            *s2.get_mut(&pkg(changed)).unwrap() += 3;
            let after = plan(&s2, 64);
            let moved: Vec<_> = s.keys().filter(|g| before.layer_of[*g] != after.layer_of[*g]).collect();
            assert!(moved.is_empty(), "{changed}: {moved:?} moved");
        }
    }

    #[test]
    fn adding_a_small_package_moves_no_other_group() {
        let s = sizes(150);
        let before = plan(&s, 64);
        let mut s2 = s.clone();
        s2.insert(pkg("new-tiny"), 10);
        let after = plan(&s2, 64);
        assert!(s.keys().all(|g| before.layer_of[g] == after.layer_of[g]));
        assert!(matches!(after.layer_of[&pkg("new-tiny")], LayerKey::Bucket(_)));
    }

    #[test]
    fn a_bucket_depends_on_the_group_name_alone() {
        // Fixed values: a change here changes every rechunked image's layers.
        // (sha256 of "package coreutils", first 8 bytes big-endian, mod 7, by Python's hashlib.)
        assert_eq!(bucket(&pkg("coreutils"), 7), 1);
        assert_eq!(bucket(&pkg("libc6:amd64"), 7), 0);
        assert_eq!(bucket(&Group::Path("var/lib/dpkg".into()), 7), 2);
        let spread: std::collections::BTreeSet<u32> = (0..100).map(|i| bucket(&pkg(&format!("p{i}")), 7)).collect();
        assert_eq!(spread.len(), 7, "100 names reach every bucket");
    }

    #[test]
    fn unowned_files_group_by_their_first_three_directories() {
        let o = Owners::default();
        assert_eq!(group_of("var/lib/apt/lists/x", &o), Group::Path("var/lib/apt".into()));
        assert_eq!(group_of("usr/lib/modules/6.1/initramfs.img", &o), Group::Path("usr/lib/modules".into()));
        assert_eq!(group_of("etc/passwd", &o), Group::Path("etc".into()));
        assert_eq!(group_of("init", &o), Group::Path(String::new()));
        assert_eq!(Group::Path(String::new()).to_string(), "path /");
        let mut owned = Owners::default();
        owned.by_path.insert("usr/bin/ls".into(), "coreutils".into());
        assert_eq!(group_of("usr/bin/ls", &owned), pkg("coreutils"));
    }
}
