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
        h.set_size(0);
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

/// What the cases exercised, to show the generator reaches every feature.
#[derive(Default, Debug)]
struct Coverage {
    whiteouts: usize,
    opaques: usize,
    link_groups: usize,
    symlinks: usize,
    devices: usize,
    fifos: usize,
    caps: usize,
    user_xattrs: usize,
    special_modes: usize,
}

/// Generates, builds, unpacks both ways and compares one case.
fn check_case(seed: u64, cov: &mut Coverage) {
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
    for l in &layers {
        cov.whiteouts += l.iter().filter(|e| matches!(e.kind, Kind::Whiteout)).count();
        cov.opaques += l.iter().filter(|e| matches!(e.kind, Kind::Opaque)).count();
    }
    cov.link_groups += got_groups.len();
    for d in got.values() {
        cov.symlinks += d.kind.starts_with("symlink") as usize;
        cov.devices += d.kind.starts_with("char") as usize;
        cov.fifos += (d.kind == "fifo") as usize;
        cov.caps += d.xattrs.iter().any(|(k, _)| k == "security.capability") as usize;
        cov.user_xattrs += d.xattrs.iter().any(|(k, _)| k.starts_with("user.")) as usize;
        cov.special_modes += (d.mode & 0o7000 != 0) as usize;
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
    let mut cov = Coverage::default();
    for i in 0..cases() {
        check_case(base + i, &mut cov);
    }
    let c = &cov;
    let all =
        [c.whiteouts, c.opaques, c.link_groups, c.symlinks, c.devices, c.fifos, c.caps, c.user_xattrs, c.special_modes];
    assert!(all.iter().all(|n| *n > 0), "the generated images missed a feature: {cov:?}");
    eprintln!("checkout property test coverage: {cov:?}");
}

fn inode_set(root: &Path) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            if md.is_dir() {
                stack.push(e.path());
            } else if md.is_file() {
                out.insert(md.ino(), e.path().display().to_string());
            }
        }
    }
    out
}

/// Two real images through the store: v1 checked out and its /etc made live
/// and edited by the admin, v2 checked out and merged. The merged /etc keeps
/// the admin's edits, follows v2 elsewhere, and shares no inode with the store.
#[test]
fn etc_merge_between_two_checked_out_images_copies_never_links() {
    use hostctl::deploy::etc_merge::{apply, plan};
    let work = tempfile::tempdir().unwrap();
    let f = |path: &str, content: &str, mode: u32| GenEntry {
        path: path.into(),
        kind: Kind::File(content.as_bytes().to_vec()),
        mode,
        uid: 0,
        gid: 0,
        xattrs: Vec::new(),
    };
    let d =
        |path: &str| GenEntry { path: path.into(), kind: Kind::Dir, mode: 0o755, uid: 0, gid: 0, xattrs: Vec::new() };
    let v1 = vec![
        d("etc"),
        f("etc/hostname", "image\n", 0o644),
        f("etc/motd", "welcome to v1\n", 0o644),
        f("etc/shadow", "root:*:1::::::\n", 0o640),
        f("etc/issue", "v1\n", 0o644),
        d("usr"),
        f("usr/os-release", "VERSION=1\n", 0o644),
    ];
    let mut v2 = v1.clone();
    v2[2] = f("etc/motd", "welcome to v2\n", 0o644);
    v2[4] = f("etc/issue", "v2\n", 0o644);
    v2.push(f("etc/new-in-v2", "hello\n", 0o644));
    let sysroot = work.path().join("sysroot");
    std::fs::create_dir(&sysroot).unwrap();
    let store = store_in(&sysroot);
    let mut trees = Vec::new();
    for (tag, layer) in [("v1", &v1), ("v2", &v2)] {
        let layout = work.path().join(format!("layout-{tag}"));
        let specs = write_layout(&layout, tag, &[tar_layer(layer)]);
        let idx = import(&store, &layout, &specs);
        let dest = work.path().join(tag);
        checkout(&store, &idx, &dest, &CheckoutOptions { relocate_etc: true }).unwrap();
        assert!(!dest.join("etc").exists() && dest.join("usr/etc/motd").is_file());
        trees.push(dest);
    }
    let (old_defaults, new_defaults) = (trees[0].join("usr/etc"), trees[1].join("usr/etc"));
    // First boot of v1: its live /etc is a copy of its defaults (an empty plan).
    let live = trees[0].join("etc");
    let first = plan(&old_defaults, &old_defaults, &old_defaults).unwrap();
    assert!(first.keep_local.is_empty() && first.keep_deleted.is_empty() && first.conflicts.is_empty());
    apply(&first, &old_defaults, &old_defaults, &live).unwrap();
    // The admin's edits.
    std::fs::write(live.join("hostname"), "myhost\n").unwrap();
    std::fs::write(live.join("issue"), "local\n").unwrap();
    std::fs::write(live.join("local.conf"), "mine\n").unwrap();

    let p = plan(&old_defaults, &live, &new_defaults).unwrap();
    let names = |v: &[PathBuf]| v.iter().map(|p| p.display().to_string()).collect::<Vec<_>>();
    assert_eq!(names(&p.keep_local), ["hostname", "issue", "local.conf"]);
    assert_eq!(p.conflicts.iter().map(|c| c.path.display().to_string()).collect::<Vec<_>>(), ["issue"]);
    let merged = trees[1].join("etc");
    apply(&p, &live, &new_defaults, &merged).unwrap();
    let read = |n: &str| std::fs::read_to_string(merged.join(n)).unwrap();
    assert_eq!(read("hostname"), "myhost\n");
    assert_eq!(read("issue"), "local\n");
    assert_eq!(read("local.conf"), "mine\n");
    assert_eq!(read("motd"), "welcome to v2\n");
    assert_eq!(read("new-in-v2"), "hello\n");
    assert_eq!(std::fs::metadata(merged.join("shadow")).unwrap().mode() & 0o7777, 0o640);

    // The defaults are hard links to store objects; the live /etc never is.
    let objects = inode_set(&store.dir().join("objects"));
    assert!(objects.contains_key(&std::fs::metadata(new_defaults.join("motd")).unwrap().ino()));
    for etc in [&live, &merged] {
        for (ino, path) in inode_set(etc) {
            assert!(!objects.contains_key(&ino), "{path} is a hard link into the store");
            assert_eq!(std::fs::metadata(&path).unwrap().nlink(), 1, "{path}");
        }
    }
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, f64) {
    let t = std::time::Instant::now();
    let r = f();
    (r, t.elapsed().as_secs_f64())
}

/// Checkout speed on a real OS tree, side by side with `ostree checkout -H`
/// of the same tree on the same filesystem (warm cache, best of 3 each).
/// Needs a debootstrap rootfs: `HOSTCTL_BENCH_ROOTFS` (default
/// /var/cache/hostctl-bench/rootfs, made by the bench scripts). Run with
/// `cargo test --release --test integration checkout_speed -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark: needs a debootstrap rootfs and ~3 GB of disk"]
fn checkout_speed_vs_ostree_on_debootstrap_tree() {
    use hostctl::digest::HashingReader;
    require_tool("ostree");
    let rootfs = PathBuf::from(
        std::env::var("HOSTCTL_BENCH_ROOTFS").unwrap_or_else(|_| "/var/cache/hostctl-bench/rootfs".into()),
    );
    assert!(rootfs.is_dir(), "no rootfs at {}", rootfs.display());
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    let tar = work.path().join("layer.tar");
    run(Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-C"])
        .arg(&rootfs)
        .arg("-cf")
        .arg(&tar)
        .arg("."));
    let mut r = HashingReader::new(std::fs::File::open(&tar).unwrap());
    std::io::copy(&mut r, &mut std::io::sink()).unwrap();
    let (digest, size, _) = r.finish();
    let spec = LayerSpec { blob_digest: digest.clone(), size, media_type: LAYER_TAR.into(), diff_id: digest };
    let sysroot = work.path().join("sysroot");
    std::fs::create_dir(&sysroot).unwrap();
    let store = store_in(&sysroot);
    let (index, import_s) = timed(|| {
        let mut f = std::fs::File::open(&tar).unwrap();
        store.import_layer(&spec, &mut f, &mut |_| {}).unwrap()
    });
    std::fs::remove_file(&tar).unwrap();
    let layers = [index];

    let mut ours = f64::MAX;
    let mut stats = None;
    for i in 0..3 {
        let dest = sysroot.join(format!("co{i}"));
        let (s, t) = timed(|| checkout(&store, &layers, &dest, &CheckoutOptions { relocate_etc: true }).unwrap());
        ours = ours.min(t);
        stats = Some(s);
    }
    let (merge_only, merge_s) = timed(|| hostctl::deploy::tree::Tree::from_layers(&layers).unwrap());
    drop(merge_only);

    // ostree stores no device nodes: commit our third checkout without them.
    let src = sysroot.join("co2");
    for e in std::fs::read_dir(src.join("dev")).unwrap() {
        let e = e.unwrap();
        if !e.file_type().unwrap().is_dir() {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    let repo = sysroot.join("ostree-repo");
    run(Command::new("ostree").arg("init").arg(format!("--repo={}", repo.display())).arg("--mode=bare"));
    let (_, commit_s) = timed(|| {
        run(Command::new("ostree")
            .arg("commit")
            .arg(format!("--repo={}", repo.display()))
            .args(["-b", "os"])
            .arg(format!("--tree=dir={}", src.display())))
    });
    let mut ostree = f64::MAX;
    for i in 0..3 {
        let dest = sysroot.join(format!("ostree-co{i}"));
        let (_, t) = timed(|| {
            run(Command::new("ostree")
                .arg("checkout")
                .arg(format!("--repo={}", repo.display()))
                .args(["-H", "os"])
                .arg(&dest))
        });
        ostree = ostree.min(t);
    }

    // The checkout is the same tree as the rootfs, /etc moved to /usr/etc.
    let co = sysroot.join("co0");
    std::fs::rename(co.join("usr/etc"), co.join("etc")).unwrap();
    let (want, want_groups) = describe(&rootfs);
    let (got, got_groups) = describe(&co);
    let differing: Vec<&String> =
        want.keys().filter(|p| !p.is_empty() && want.get(*p) != got.get(*p)).take(5).collect();
    assert!(differing.is_empty() && want.len() == got.len(), "checkout differs from the rootfs at {differing:?}");
    // Identical files share one object, so the checkout's link groups may be
    // larger than the rootfs's; every rootfs group must be inside one of them.
    for g in &want_groups {
        assert!(got_groups.iter().any(|h| g.iter().all(|p| h.contains(p))), "hard links {g:?} split");
    }
    eprintln!(
        "debootstrap tree: {stats:?}\n  import_layer {import_s:.2}s (ostree commit {commit_s:.2}s)\n  \
         checkout {ours:.3}s (of which in-memory merge {merge_s:.3}s) vs ostree checkout -H {ostree:.3}s: ratio {:.2}",
        ours / ostree
    );
}

/// Attack: a layer plants `a -> /etc` and `up -> ../../../..`, the next layer
/// writes `a/passwd` and `up/escaped`, hoping the unpacker follows them out of
/// the tree. Both land inside the deployment (resolved in the image, like
/// umoci), and nothing outside changes.
#[test]
fn checkout_symlink_escape_attack_stays_inside() {
    let work = tempfile::tempdir().unwrap();
    let outside = work.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let e =
        |path: &str, kind: Kind| GenEntry { path: path.into(), kind, mode: 0o644, uid: 0, gid: 0, xattrs: Vec::new() };
    let l1 = vec![
        e("etc", Kind::Dir),
        e("a", Kind::Symlink("/etc".into())),
        e("up", Kind::Symlink("../../../../../..".into())),
        e("out", Kind::Symlink(outside.display().to_string())),
    ];
    let l2 = vec![
        e("a/passwd", Kind::File(b"evil:x:0:0\n".to_vec())),
        e("up/escaped", Kind::File(b"x\n".to_vec())),
        e("out/planted", Kind::File(b"x\n".to_vec())),
    ];
    let layout = work.path().join("layout");
    let specs = write_layout(&layout, "t", &[tar_layer(&l1), tar_layer(&l2)]);
    let sysroot = work.path().join("sysroot");
    std::fs::create_dir(&sysroot).unwrap();
    let store = store_in(&sysroot);
    let indexes = import(&store, &layout, &specs);
    let passwd_before = std::fs::read("/etc/passwd").unwrap();
    let dest = work.path().join("deploy");
    checkout(&store, &indexes, &dest, &CheckoutOptions { relocate_etc: false }).unwrap();
    assert_eq!(std::fs::read("/etc/passwd").unwrap(), passwd_before);
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "wrote through a symlink");
    assert!(!Path::new("/escaped").exists());
    assert_eq!(std::fs::read(dest.join("etc/passwd")).unwrap(), b"evil:x:0:0\n");
    assert!(dest.join("escaped").is_file());
    assert!(dest.join(outside.strip_prefix("/").unwrap()).join("planted").is_file());
    // The reference unpacker agrees.
    let reference = work.path().join("umoci");
    run(Command::new("umoci")
        .args(["raw", "unpack", "--image"])
        .arg(format!("{}:t", layout.display()))
        .arg(&reference));
    let (want, _) = describe(&reference);
    let (got, _) = describe(&dest);
    assert_eq!(want.keys().collect::<Vec<_>>(), got.keys().collect::<Vec<_>>());
}
