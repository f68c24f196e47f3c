//! `checkout` against an independent unpacker: random images (several layers
//! of files, directories, symlinks, hard links, whiteouts, opaque directories,
//! modes, owners, xattrs, device nodes and fifos) are written as real tar
//! layers into an OCI layout, imported with the store's `import_layer` and
//! checked out, then compared with `umoci raw unpack` of the same layout.
//! mtimes are not compared: store objects all have mtime 0.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use hostctl::deploy::checkout::{checkout, CheckoutOptions};
use hostctl::digest::Digest;
use hostctl::store::{LayerIndex, LayerSpec, Store};
use hostctl::sysroot::Sysroot;

use crate::support::{require_tool, run};

const LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// splitmix64: a small seeded generator, so a failing case is replayed by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

#[derive(Clone, Debug)]
enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    Hardlink(String),
    CharDevice(u32, u32),
    Fifo,
    Whiteout,
    Opaque,
}

#[derive(Clone, Debug)]
struct GenEntry {
    path: String,
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    xattrs: Vec<(String, Vec<u8>)>,
}

/// What the generator believes the merged image holds (to aim whiteouts and links).
#[derive(Clone, Copy, PartialEq, Debug)]
enum ModelKind {
    Dir,
    NonDir,
}

const NAMES: &[&str] = &["a", "b", "etc", "bin", "lib", "x y", "dots.d", "élan", "z"];
/// `cap_net_bind_service=ep` as a v2 `security.capability` value.
const CAP_NET_BIND: [u8; 20] = [1, 0, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

fn owner(rng: &mut Rng) -> u32 {
    *rng.pick(&[0, 0, 1, 1000, 65534])
}

fn remove_below(model: &mut BTreeMap<String, ModelKind>, path: &str) {
    let prefix = format!("{path}/");
    model.retain(|p, _| p != path && !p.starts_with(&prefix));
}

/// Generates the layers of one image.
fn gen_image(seed: u64) -> Vec<Vec<GenEntry>> {
    let mut rng = Rng(seed);
    let mut model: BTreeMap<String, ModelKind> = BTreeMap::new();
    let mut layers = Vec::new();
    let mut serial = 0u32;
    let nlayers = 2 + rng.below(3);
    for li in 0..nlayers {
        let mut entries: Vec<GenEntry> = Vec::new();
        let entry = |path: &str, kind: Kind, mode: u32, rng: &mut Rng| GenEntry {
            path: path.to_string(),
            kind,
            mode,
            uid: owner(rng),
            gid: owner(rng),
            xattrs: Vec::new(),
        };
        if li > 0 {
            // Whiteouts and opaque directories aimed at lower layers' content.
            let lower: Vec<(String, ModelKind)> = model.iter().map(|(p, k)| (p.clone(), *k)).collect();
            for _ in 0..rng.below(3) {
                let (p, _) = rng.pick(&lower).clone();
                if model.contains_key(&p) {
                    remove_below(&mut model, &p);
                    entries.push(entry(&p, Kind::Whiteout, 0o644, &mut rng));
                }
            }
            for _ in 0..rng.below(2) {
                let (p, k) = rng.pick(&lower).clone();
                if k == ModelKind::Dir && model.get(&p) == Some(&ModelKind::Dir) {
                    let mode = *rng.pick(&[0o755, 0o750]);
                    entries.push(entry(&p, Kind::Dir, mode, &mut rng));
                    entries.push(entry(&p, Kind::Opaque, 0o644, &mut rng));
                    remove_below(&mut model, &p);
                    model.insert(p, ModelKind::Dir);
                }
            }
        }
        for _ in 0..(6 + rng.below(12)) {
            let dirs: Vec<&String> = model.iter().filter(|(_, k)| **k == ModelKind::Dir).map(|(p, _)| p).collect();
            let parent = if dirs.is_empty() || rng.chance(25) { String::new() } else { rng.pick(&dirs).to_string() };
            let name = rng.pick(NAMES);
            let path = if parent.is_empty() { name.to_string() } else { format!("{parent}/{name}") };
            let existing = model.get(&path).copied();
            let op = rng.below(100);
            let mut e = if op < 30 {
                // A directory, or new metadata for an existing one.
                if existing == Some(ModelKind::NonDir) {
                    continue;
                }
                let mode = *rng.pick(&[0o755, 0o700, 0o1777, 0o2775, 0o555]);
                model.insert(path.clone(), ModelKind::Dir);
                entry(&path, Kind::Dir, mode, &mut rng)
            } else {
                if existing == Some(ModelKind::Dir) {
                    continue;
                }
                serial += 1;
                let kind = if op < 65 {
                    let mut content = format!("layer {li} file {serial} of {path}\n").into_bytes();
                    if rng.chance(20) {
                        content.extend(std::iter::repeat_n(b'x', rng.below(70_000)));
                    }
                    Kind::File(content)
                } else if op < 78 {
                    let targets = ["../a", "/etc/passwd", "nowhere", "b", "/", "./x y"];
                    Kind::Symlink(rng.pick(&targets).to_string())
                } else if op < 90 {
                    let nondirs: Vec<&String> =
                        model.iter().filter(|(p, k)| **k == ModelKind::NonDir && **p != path).map(|(p, _)| p).collect();
                    if nondirs.is_empty() {
                        continue;
                    }
                    Kind::Hardlink(rng.pick(&nondirs).to_string())
                } else if op < 95 {
                    Kind::CharDevice(1, *rng.pick(&[3, 5, 7]))
                } else {
                    Kind::Fifo
                };
                let mode = match kind {
                    Kind::File(_) => *rng.pick(&[0o644, 0o755, 0o600, 0o4755, 0o2711, 0o444]),
                    Kind::Symlink(_) => 0o777,
                    _ => *rng.pick(&[0o666, 0o600, 0o640]),
                };
                model.insert(path.clone(), ModelKind::NonDir);
                entry(&path, kind, mode, &mut rng)
            };
            match e.kind {
                Kind::Dir | Kind::File(_) if rng.chance(25) => {
                    e.xattrs.push(("user.test".into(), format!("v{}", rng.next() % 1000).into_bytes()));
                }
                _ => {}
            }
            if matches!(e.kind, Kind::File(_)) && rng.chance(10) {
                e.xattrs.push(("security.capability".into(), CAP_NET_BIND.to_vec()));
            }
            entries.push(e);
        }
        layers.push(entries);
    }
    layers
}

/// A PAX extended header record (`"<len> key=value\n"`, len counting itself).
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = 3 + key.len() + value.len(); // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    r
}

/// Writes one layer as an uncompressed tar, as image builders do.
fn tar_layer(entries: &[GenEntry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        if !e.xattrs.is_empty() {
            let data: Vec<u8> =
                e.xattrs.iter().flat_map(|(k, v)| pax_record(&format!("SCHILY.xattr.{k}"), v)).collect();
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::XHeader);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_path("PaxHeaders/x").unwrap();
            h.set_cksum();
            b.append(&h, data.as_slice()).unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.mode);
        h.set_uid(e.uid as u64);
        h.set_gid(e.gid as u64);
        h.set_mtime(1_700_000_000);
        let (dir, name) = match e.path.rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n.to_string()),
            None => (String::new(), e.path.clone()),
        };
        let mut data: &[u8] = &[];
        let path = match &e.kind {
            Kind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                format!("{}/", e.path)
            }
            Kind::File(c) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(c.len() as u64);
                data = c;
                e.path.clone()
            }
            Kind::Symlink(t) | Kind::Hardlink(t) => {
                let sym = matches!(e.kind, Kind::Symlink(_));
                h.set_entry_type(if sym { tar::EntryType::Symlink } else { tar::EntryType::Link });
                h.set_link_name(t).unwrap();
                e.path.clone()
            }
            Kind::CharDevice(ma, mi) => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_device_major(*ma).unwrap();
                h.set_device_minor(*mi).unwrap();
                e.path.clone()
            }
            Kind::Fifo => {
                h.set_entry_type(tar::EntryType::Fifo);
                e.path.clone()
            }
            Kind::Whiteout => {
                h.set_entry_type(tar::EntryType::Regular);
                format!("{dir}.wh.{name}")
            }
            Kind::Opaque => {
                h.set_entry_type(tar::EntryType::Regular);
                format!("{}/.wh..wh..opq", e.path)
            }
        };
        h.set_path(&path).unwrap();
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn put_blob(layout: &Path, bytes: &[u8]) -> Digest {
    let d = Digest::of(bytes);
    let p = layout.join("blobs/sha256").join(d.hex());
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
    d
}

/// Assembles an OCI image layout by hand: layer blobs, config, manifest, index.
fn write_layout(layout: &Path, tag: &str, layers: &[Vec<u8>]) -> Vec<LayerSpec> {
    let specs: Vec<LayerSpec> = layers
        .iter()
        .map(|l| {
            let d = put_blob(layout, l);
            LayerSpec { blob_digest: d.clone(), size: l.len() as u64, media_type: LAYER_TAR.into(), diff_id: d }
        })
        .collect();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": specs.iter().map(|s| s.diff_id.to_string()).collect::<Vec<_>>()},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_digest = put_blob(layout, &config);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest.to_string(), "size": config.len()},
        "layers": specs.iter().map(|s| serde_json::json!({"mediaType": LAYER_TAR, "digest": s.blob_digest.to_string(), "size": s.size})).collect::<Vec<_>>(),
    });
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let manifest_digest = put_blob(layout, &manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest.to_string(),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    });
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(layout.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    specs
}

/// Everything compared about one path.
#[derive(Debug, PartialEq, Eq)]
struct Desc {
    kind: String,
    mode: u32,
    uid: u32,
    gid: u32,
    xattrs: Vec<(String, Vec<u8>)>,
}

fn xattrs(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut list = vec![0u8; 4096];
    let n = rustix::fs::llistxattr(path, &mut list[..]).unwrap();
    let mut out = Vec::new();
    for k in list[..n].split(|b| *b == 0).filter(|k| !k.is_empty()) {
        let mut v = vec![0u8; 4096];
        let m = rustix::fs::lgetxattr(path, k, &mut v[..]).unwrap();
        v.truncate(m);
        out.push((String::from_utf8_lossy(k).into_owned(), v));
    }
    out.sort();
    out
}

/// Every path of a tree (root included as ""), and its hard-link groups.
fn describe(root: &Path) -> (BTreeMap<String, Desc>, BTreeSet<Vec<String>>) {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let full = root.join(&rel);
        let md = std::fs::symlink_metadata(&full).unwrap();
        let ft = md.file_type();
        let key = rel.to_string_lossy().into_owned();
        let kind = if ft.is_dir() {
            for e in std::fs::read_dir(&full).unwrap() {
                stack.push(rel.join(e.unwrap().file_name()));
            }
            "dir".to_string()
        } else if ft.is_file() {
            let c = std::fs::read(&full).unwrap();
            format!("file {} bytes {}", c.len(), Digest::of(&c).short())
        } else if ft.is_symlink() {
            format!("symlink -> {}", std::fs::read_link(&full).unwrap().display())
        } else if ft.is_char_device() {
            format!("char {:x}", md.rdev())
        } else if ft.is_fifo() {
            "fifo".to_string()
        } else {
            format!("other {ft:?}")
        };
        if !ft.is_dir() {
            inodes.entry(md.ino()).or_default().push(key.clone());
        }
        let mode = if ft.is_symlink() { 0 } else { md.mode() & 0o7777 };
        out.insert(key, Desc { kind, mode, uid: md.uid(), gid: md.gid(), xattrs: xattrs(&full) });
    }
    let groups = inodes
        .into_values()
        .filter(|g| g.len() > 1)
        .map(|mut g| {
            g.sort();
            g
        })
        .collect();
    (out, groups)
}

fn store_in(dir: &Path) -> Store {
    Store::open(&Sysroot::open(dir).unwrap()).unwrap()
}

fn import(store: &Store, layout: &Path, specs: &[LayerSpec]) -> Vec<LayerIndex> {
    specs
        .iter()
        .map(|s| {
            let mut f = std::fs::File::open(layout.join("blobs/sha256").join(s.blob_digest.hex())).unwrap();
            store.import_layer(s, &mut f, &mut |_| {}).unwrap()
        })
        .collect()
}

/// Generates, builds, unpacks both ways and compares one case.
fn check_case(seed: u64) {
    let work = tempfile::tempdir().unwrap();
    let layers = gen_image(seed);
    let tars: Vec<Vec<u8>> = layers.iter().map(|l| tar_layer(l)).collect();
    let layout = work.path().join("layout");
    let specs = write_layout(&layout, "t", &tars);

    let reference = work.path().join("umoci");
    run(Command::new("umoci")
        .args(["raw", "unpack", "--image"])
        .arg(format!("{}:t", layout.display()))
        .arg(&reference));

    let sysroot = work.path().join("sysroot");
    std::fs::create_dir(&sysroot).unwrap();
    let store = store_in(&sysroot);
    let indexes = import(&store, &layout, &specs);
    let dest = work.path().join("checkout");
    checkout(&store, &indexes, &dest, &CheckoutOptions { relocate_etc: false }).unwrap();

    let (want, want_groups) = describe(&reference);
    let (got, got_groups) = describe(&dest);
    let mut diffs = Vec::new();
    for p in want.keys().chain(got.keys()).collect::<BTreeSet<_>>() {
        if p.is_empty() {
            continue; // umoci's rootfs directory is its own, not the image's
        }
        if want.get(p) != got.get(p) {
            diffs.push(format!("/{p}:\n  umoci:    {:?}\n  checkout: {:?}", want.get(p), got.get(p)));
        }
    }
    if want_groups != got_groups {
        diffs.push(format!("hard-link groups:\n  umoci:    {want_groups:?}\n  checkout: {got_groups:?}"));
    }
    if !diffs.is_empty() {
        let listing: Vec<String> = layers
            .iter()
            .enumerate()
            .flat_map(|(i, l)| {
                l.iter().map(move |e| {
                    format!("  L{i} {} {:?} {:o} {}:{} {:?}", e.path, e.kind, e.mode, e.uid, e.gid, e.xattrs)
                })
            })
            .map(|s| s.chars().take(160).collect())
            .collect();
        panic!(
            "seed {seed}: checkout differs from umoci raw unpack\n{}\nimage:\n{}",
            diffs.join("\n"),
            listing.join("\n")
        );
    }
}

/// Cases in the default run; `HOSTCTL_CHECKOUT_CASES` asks for more.
fn cases() -> u64 {
    std::env::var("HOSTCTL_CHECKOUT_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24)
}

#[test]
fn checkout_matches_umoci_raw_unpack_on_random_images() {
    require_tool("umoci");
    let base: u64 = std::env::var("HOSTCTL_CHECKOUT_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0x5eed);
    for i in 0..cases() {
        check_case(base + i);
    }
}
