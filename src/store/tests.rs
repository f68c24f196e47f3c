//! Unit tests of the store and its layer pipeline, with fixture layers built
//! in Rust; each hostile fixture is named after the attack or fault it models.

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::digest::Digest;
use crate::error::{exit_code, DigestMismatch};
use crate::store::{EntryKind, GcRoots, ImageRecord, LayerIndex, LayerSpec, Limits, Store};

const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
const PLAIN: &str = "application/vnd.oci.image.layer.v1.tar";

/// Builds fixture tars entry by entry, including names no well-behaved tool writes.
struct TarFixture {
    b: tar::Builder<Vec<u8>>,
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(size);
    h
}

/// Writes `name` into the header without the tar crate's path checks.
fn set_raw_name(h: &mut tar::Header, name: &[u8]) {
    let field = &mut h.as_old_mut().name;
    field.fill(0);
    field[..name.len()].copy_from_slice(name);
}

fn set_raw_link(h: &mut tar::Header, name: &[u8]) {
    let field = &mut h.as_old_mut().linkname;
    field.fill(0);
    field[..name.len()].copy_from_slice(name);
}

impl TarFixture {
    fn new() -> Self {
        TarFixture { b: tar::Builder::new(Vec::new()) }
    }
    fn dir(mut self, path: &str) -> Self {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        set_raw_name(&mut h, path.as_bytes());
        h.set_cksum();
        self.b.append(&h, &[][..]).unwrap();
        self
    }
    fn file_owned(mut self, path: &str, content: &[u8], mode: u32, uid: u64, gid: u64) -> Self {
        let mut h = header(tar::EntryType::Regular, mode, content.len() as u64);
        h.set_uid(uid);
        h.set_gid(gid);
        set_raw_name(&mut h, path.as_bytes());
        h.set_cksum();
        self.b.append(&h, content).unwrap();
        self
    }
    fn file(self, path: &str, content: &[u8]) -> Self {
        self.file_owned(path, content, 0o644, 0, 0)
    }
    fn link(mut self, kind: tar::EntryType, path: &str, target: &str) -> Self {
        let mut h = header(kind, 0o777, 0);
        set_raw_name(&mut h, path.as_bytes());
        set_raw_link(&mut h, target.as_bytes());
        h.set_cksum();
        self.b.append(&h, &[][..]).unwrap();
        self
    }
    fn symlink(self, path: &str, target: &str) -> Self {
        self.link(tar::EntryType::Symlink, path, target)
    }
    fn hardlink(self, path: &str, target: &str) -> Self {
        self.link(tar::EntryType::Link, path, target)
    }
    fn device(mut self, kind: tar::EntryType, path: &str, major: u32, minor: u32) -> Self {
        let mut h = header(kind, 0o600, 0);
        set_raw_name(&mut h, path.as_bytes());
        h.set_device_major(major).unwrap();
        h.set_device_minor(minor).unwrap();
        h.set_cksum();
        self.b.append(&h, &[][..]).unwrap();
        self
    }
    fn xattr_file(mut self, path: &str, content: &[u8], xattrs: &[(&str, &[u8])]) -> Self {
        let keys: Vec<String> = xattrs.iter().map(|(k, _)| format!("SCHILY.xattr.{k}")).collect();
        self.b.append_pax_extensions(keys.iter().map(|k| k.as_str()).zip(xattrs.iter().map(|(_, v)| *v))).unwrap();
        self.file(path, content)
    }
    /// A regular-file header claiming `size` bytes, followed by `data` only.
    fn lying_file(mut self, path: &str, size: u64, data: &[u8]) -> Self {
        let mut h = header(tar::EntryType::Regular, 0o644, size);
        set_raw_name(&mut h, path.as_bytes());
        h.set_cksum();
        self.b.get_mut().extend_from_slice(h.as_bytes());
        self.b.get_mut().extend_from_slice(data);
        self
    }
    fn finish(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

fn gzip(tar: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(tar).unwrap();
    e.finish().unwrap()
}

fn zstd(tar: &[u8]) -> Vec<u8> {
    zstd::encode_all(tar, 3).unwrap()
}

fn spec_for(tar: &[u8], blob: &[u8], media_type: &str) -> LayerSpec {
    LayerSpec {
        blob_digest: Digest::of(blob),
        size: blob.len() as u64,
        media_type: media_type.to_string(),
        diff_id: Digest::of(tar),
    }
}

fn store() -> (tempfile::TempDir, Store) {
    let d = tempfile::tempdir().unwrap();
    let s = Store::open_dir(&d.path().join("repo")).unwrap();
    (d, s)
}

fn import(store: &Store, spec: &LayerSpec, blob: &[u8]) -> anyhow::Result<LayerIndex> {
    let mut seen = 0u64;
    let r = store.import_layer(spec, &mut &blob[..], &mut |n| seen += n);
    if r.is_ok() {
        assert_eq!(seen, blob.len() as u64, "progress reports every compressed byte");
    }
    r
}

fn import_gz(store: &Store, tar: &[u8]) -> anyhow::Result<LayerIndex> {
    let blob = gzip(tar);
    import(store, &spec_for(tar, &blob, GZIP), &blob)
}

/// Files under `dir`, recursively (directories not counted).
fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            n += count_files(&e.path());
        } else {
            n += 1;
        }
    }
    n
}

/// Nothing of a failed layer is left: no index, no alias, no object, no temp file.
fn assert_kept_nothing(store: &Store) {
    for sub in ["layers", "objects", "tmp"] {
        assert_eq!(count_files(&store.dir().join(sub)), 0, "{sub} must be empty after a refused layer");
    }
}

fn err_text(e: &anyhow::Error) -> String {
    format!("{e:#}")
}

fn entry<'a>(index: &'a LayerIndex, path: &str) -> &'a crate::store::Entry {
    index.entries.iter().find(|e| e.path == path).unwrap_or_else(|| panic!("no entry {path} in {index:#?}"))
}

#[test]
fn imports_files_dirs_symlinks_and_devices() {
    let (_d, store) = store();
    let tar = TarFixture::new()
        .dir("./")
        .dir("/")
        .dir("./usr/")
        .dir("./usr/bin/")
        .file_owned("./usr/bin/tool", b"#!/bin/sh\necho hi\n", 0o4755, 1000, 100)
        .symlink("./bin", "usr/bin")
        .device(tar::EntryType::Char, "dev/null", 1, 3)
        .device(tar::EntryType::Block, "dev/sda", 8, 0)
        .link(tar::EntryType::Fifo, "run/fifo", "")
        .finish();
    let index = import_gz(&store, &tar).unwrap();
    let paths: Vec<&str> = index.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["usr", "usr/bin", "usr/bin/tool", "bin", "dev/null", "dev/sda", "run/fifo"]);
    assert_eq!(entry(&index, "bin").kind, EntryKind::Symlink { target: "usr/bin".into() });
    assert_eq!(entry(&index, "dev/null").kind, EntryKind::CharDevice { major: 1, minor: 3 });
    assert_eq!(entry(&index, "dev/sda").kind, EntryKind::BlockDevice { major: 8, minor: 0 });
    assert_eq!(entry(&index, "run/fifo").kind, EntryKind::Fifo);
    let tool = entry(&index, "usr/bin/tool");
    assert_eq!((tool.meta.mode, tool.meta.uid, tool.meta.gid, tool.meta.mtime), (0o4755, 1000, 100, 1_700_000_000));
    let EntryKind::File { object, size } = &tool.kind else { panic!("not a file: {tool:?}") };
    assert_eq!(*size, 18);
    let path = store.object_path(object);
    assert_eq!(fs::read(&path).unwrap(), b"#!/bin/sh\necho hi\n");
    let m = fs::metadata(&path).unwrap();
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid(), m.mtime()), (0o4755, 1000, 100, 0));
    assert!(store.verify_object(object).unwrap());
    // The index round-trips through the store.
    assert_eq!(store.layer_index(&index.diff_id).unwrap(), index);
    assert_eq!(index.uncompressed_size, tar.len() as u64);
}

#[test]
fn records_whiteouts_and_opaque_dirs() {
    let (_d, store) = store();
    let tar = TarFixture::new()
        .dir("etc/")
        .file("etc/.wh.motd", b"")
        .file(".wh.oldfile", b"")
        .dir("var/cache/")
        .file("var/cache/.wh..wh..opq", b"")
        .file("var/cache/.wh..wh.plnk", b"")
        .finish();
    let index = import_gz(&store, &tar).unwrap();
    let got: Vec<(&str, &EntryKind)> = index.entries.iter().map(|e| (e.path.as_str(), &e.kind)).collect();
    assert_eq!(
        got,
        [
            ("etc", &EntryKind::Dir),
            ("etc/motd", &EntryKind::Whiteout),
            ("oldfile", &EntryKind::Whiteout),
            ("var/cache", &EntryKind::Dir),
            ("var/cache", &EntryKind::OpaqueWhiteout),
        ]
    );
    assert_eq!(count_files(&store.dir().join("objects")), 0, "whiteouts store no objects");
}

#[test]
fn records_xattrs_on_index_and_object() {
    let (_d, store) = store();
    let cap: &[u8] = &[1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    let tar = TarFixture::new()
        .xattr_file("usr/bin/ping", b"ping", &[("security.capability", cap), ("user.origin", b"debian")])
        .file("usr/bin/plain", b"ping")
        .finish();
    let index = import_gz(&store, &tar).unwrap();
    let ping = entry(&index, "usr/bin/ping");
    assert_eq!(ping.meta.xattrs.get("user.origin").map(String::as_str), Some(hex::encode("debian").as_str()));
    assert_eq!(ping.meta.xattrs.get("security.capability").map(String::as_str), Some(hex::encode(cap).as_str()));
    let (EntryKind::File { object: a, .. }, EntryKind::File { object: b, .. }) =
        (&ping.kind, &entry(&index, "usr/bin/plain").kind)
    else {
        panic!("files expected")
    };
    assert_ne!(a, b, "xattrs are part of an object's identity");
    let mut buf = [0u8; 64];
    let n = rustix::fs::getxattr(store.object_path(a), "user.origin", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], b"debian");
    assert!(store.verify_object(a).unwrap());
}

#[test]
fn records_hardlinks_within_and_below_the_layer() {
    let (_d, store) = store();
    let tar = TarFixture::new()
        .file("usr/bin/gzip", b"gzip binary")
        .hardlink("usr/bin/gunzip", "./usr/bin/gzip")
        .hardlink("usr/bin/zcat", "usr/bin/lower-layer-file")
        .finish();
    let index = import_gz(&store, &tar).unwrap();
    assert_eq!(entry(&index, "usr/bin/gunzip").kind, EntryKind::Hardlink { target: "usr/bin/gzip".into() });
    assert_eq!(entry(&index, "usr/bin/zcat").kind, EntryKind::Hardlink { target: "usr/bin/lower-layer-file".into() });
}

#[test]
fn same_file_in_two_layers_is_one_object() {
    let (_d, store) = store();
    let big = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect::<Vec<u8>>();
    let one = TarFixture::new().file("a/small", b"shared").file("a/big", &big).finish();
    let two = TarFixture::new().file("b/small-copy", b"shared").file("b/big-copy", &big).file("b/new", b"x").finish();
    let i1 = import_gz(&store, &one).unwrap();
    let i2 = import_gz(&store, &two).unwrap();
    assert_eq!(count_files(&store.dir().join("objects")), 3);
    let obj = |i: &LayerIndex, p: &str| match &entry(i, p).kind {
        EntryKind::File { object, .. } => object.clone(),
        k => panic!("{k:?}"),
    };
    assert_eq!(obj(&i1, "a/small"), obj(&i2, "b/small-copy"));
    assert_eq!(obj(&i1, "a/big"), obj(&i2, "b/big-copy"));
    assert_eq!(fs::read(store.object_path(&obj(&i2, "b/big-copy"))).unwrap(), big);
    assert!(store.verify_object(&obj(&i1, "a/big")).unwrap());
    // Each index knows the plain sha256 of its files' contents (streamed and
    // small ones, new objects and ones the store had), for later partial pulls.
    for (i, small, big_path) in [(&i1, "a/small", "a/big"), (&i2, "b/small-copy", "b/big-copy")] {
        assert_eq!(i.content_digests.get(&obj(i, small)), Some(&Digest::of(b"shared")), "{small}");
        assert_eq!(i.content_digests.get(&obj(i, big_path)), Some(&Digest::of(&big)), "{big_path}");
    }
    assert_eq!(i2.content_digests.get(&obj(&i2, "b/new")), Some(&Digest::of(b"x")));
    assert_eq!(i2.content_digests.len(), 3, "one per object: {:?}", i2.content_digests);
}

#[test]
fn gzip_zstd_and_plain_give_identical_indexes() {
    let tar = TarFixture::new().dir("etc").file("etc/hostname", b"box\n").symlink("etc/mtab", "/proc/mounts").finish();
    let mut entries = Vec::new();
    for (media, blob) in [(GZIP, gzip(&tar)), (ZSTD, zstd(&tar)), (PLAIN, tar.clone())] {
        let (_d, store) = store();
        let index = import(&store, &spec_for(&tar, &blob, media), &blob).unwrap();
        assert_eq!(index.media_type, media);
        assert!(store.has_layer(&Digest::of(&blob), &Digest::of(&tar)));
        assert!(!store.has_layer(&Digest::of(&blob), &Digest::of(b"other")), "an alias to another diff_id is no match");
        entries.push(index.entries);
    }
    assert_eq!(entries[0], entries[1]);
    assert_eq!(entries[0], entries[2]);
}

fn assert_refused(tar: &[u8], needle: &str) {
    let (_d, store) = store();
    let e = import_gz(&store, tar).expect_err("the layer must be refused");
    let text = err_text(&e);
    assert!(text.contains(needle), "error {text:?} should mention {needle:?}");
    assert_kept_nothing(&store);
}

#[test]
fn refuses_dotdot_escape() {
    assert_refused(&TarFixture::new().file("ok", b"1").file("usr/../../etc/shadow", b"x").finish(), "`..`");
}

/// Issue #10: an absolute name (GNU tar `-P`, Go's archive/tar writers) is
/// the same name relative to the layer root, for entries and hard-link
/// targets alike, as containerd, umoci and moby read it. Refused before.
#[test]
fn absolute_names_are_recorded_relative_to_the_layer_root_as_gnu_tar_p_writes_them() {
    let (_d, store) = store();
    let tar = TarFixture::new()
        .dir("/usr/bin/")
        .file("/usr/bin/a", b"x")
        .hardlink("/usr/bin/b", "/usr/bin/a")
        .symlink("/bin", "/usr/bin")
        .finish();
    let index = import_gz(&store, &tar).unwrap();
    let paths: Vec<&str> = index.entries.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["usr/bin", "usr/bin/a", "usr/bin/b", "bin"]);
    assert_eq!(entry(&index, "usr/bin/b").kind, EntryKind::Hardlink { target: "usr/bin/a".into() });
    // A symlink's target is data, kept as written; the checkout resolves it inside the image.
    assert_eq!(entry(&index, "bin").kind, EntryKind::Symlink { target: "/usr/bin".into() });
    // A leading slash does not make `..` acceptable (moby "slash-dotdot").
    assert_refused(&TarFixture::new().file("/../victim/slash-dotdot", b"x").finish(), "`..`");
}

/// Issue #10: an entry beneath a symlink made earlier in the same layer
/// (`a -> /usr/lib`, then `a/file`) is recorded as written. Where it lands
/// depends on the layers below (is `usr/lib` itself a symlink?), and the index
/// is shared by every image with this layer, so the checkout resolves it,
/// inside the image (`deploy::tree`). Refused before.
#[test]
fn entries_below_a_symlink_of_the_same_layer_are_recorded_for_the_checkout_to_resolve() {
    let (_d, store) = store();
    let tar = TarFixture::new()
        .symlink("etc", "/etc")
        .file("etc/cron.d/evil", b"* * * * * root sh")
        .symlink("host", "/")
        .hardlink("shadow", "host/etc/shadow")
        .finish();
    let index = import_gz(&store, &tar).unwrap();
    assert_eq!(entry(&index, "etc/cron.d/evil").path, "etc/cron.d/evil");
    assert_eq!(entry(&index, "shadow").kind, EntryKind::Hardlink { target: "host/etc/shadow".into() });
}

/// Whiteouts apply before the layer's own entries (OCI image spec), so one
/// beneath a symlink the same layer creates would be resolved against a tree
/// without that symlink: refused rather than guessed.
#[test]
fn refuses_whiteout_below_a_symlink_of_the_same_layer() {
    let tar = TarFixture::new().symlink("etc", "usr/etc").file("etc/.wh.passwd", b"").finish();
    assert_refused(&tar, "whiteout placed through \"etc\", a symlink");
}

#[test]
fn allows_replacing_a_symlink_by_a_directory() {
    let (_d, store) = store();
    let tar = TarFixture::new().symlink("lib", "usr/lib").dir("lib").file("lib/x", b"1").finish();
    import_gz(&store, &tar).unwrap();
}

#[test]
fn refuses_hardlink_escape() {
    assert_refused(&TarFixture::new().hardlink("passwd", "../../etc/passwd").finish(), "hardlink target");
    // Before issue #10 the second row was "/etc/passwd", now the layer's own
    // etc/passwd; the same escape with a leading slash is still refused.
    assert_refused(&TarFixture::new().hardlink("passwd", "/../etc/passwd").finish(), "hardlink target");
}

#[test]
fn refuses_hardlink_to_directory() {
    assert_refused(&TarFixture::new().dir("etc").hardlink("etc2", "etc").finish(), "hardlink to directory");
}

#[test]
fn refuses_absurd_size() {
    // A header claiming a petabyte file; the data never comes.
    let tar = TarFixture::new().lying_file("huge", 1 << 50, b"").finish();
    assert_refused(&tar, "exceeds the limit");
}

#[test]
fn refuses_layer_over_the_size_limit() {
    let (_d, store) = store();
    let store = store.with_limits(Limits { max_layer_size: 64 * 1024, ..Limits::default() });
    let tar = TarFixture::new().file("a", &vec![7u8; 100_000]).finish();
    let e = import_gz(&store, &tar).unwrap_err();
    assert!(err_text(&e).contains("exceeds the limit of 65536 bytes"), "{e:#}");
    assert_kept_nothing(&store);
}

#[test]
fn refuses_absurd_path_length() {
    let mut b = tar::Builder::new(Vec::new());
    let long = "d/".repeat(2500) + "f";
    let mut h = header(tar::EntryType::Regular, 0o644, 1);
    b.append_data(&mut h, &long, &b"x"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    assert_refused(&tar, "limit 4095");
}

#[test]
fn refuses_too_many_entries() {
    let (_d, store) = store();
    let store = store.with_limits(Limits { max_entries: 3, ..Limits::default() });
    let tar = TarFixture::new().dir("a").dir("b").dir("c").dir("d").finish();
    let e = import_gz(&store, &tar).unwrap_err();
    assert!(err_text(&e).contains("more than 3 entries"), "{e:#}");
}

#[test]
fn truncated_gzip_keeps_nothing() {
    let (_d, store) = store();
    let tar = TarFixture::new().file("a", b"one").file("b", &vec![1u8; 200_000]).finish();
    let blob = gzip(&tar);
    let spec = spec_for(&tar, &blob, GZIP);
    // The registry (or the network) delivered only the first half.
    let e = import(&store, &spec, &blob[..blob.len() / 2]).unwrap_err();
    let m = e.downcast_ref::<DigestMismatch>().expect("a digest mismatch");
    assert_eq!(m.expected, spec.blob_digest);
    assert!(err_text(&e).contains(&spec.diff_id.to_string()), "names the diff_id: {e:#}");
    assert_eq!(exit_code(&e), crate::error::code::INTEGRITY);
    assert_kept_nothing(&store);
}

#[test]
fn tampered_blob_keeps_nothing() {
    let (_d, store) = store();
    let tar = TarFixture::new().file("a", b"one").file("b", &vec![1u8; 200_000]).finish();
    let blob = gzip(&tar);
    let spec = spec_for(&tar, &blob, GZIP);
    let mut bad = blob.clone();
    let i = bad.len() / 2;
    bad[i] ^= 0x55;
    let e = import(&store, &spec, &bad).unwrap_err();
    let m = e.downcast_ref::<DigestMismatch>().expect("a digest mismatch");
    assert_eq!((&m.expected, &m.actual), (&spec.blob_digest, &Digest::of(&bad)));
    assert_eq!(exit_code(&e), crate::error::code::INTEGRITY);
    assert_kept_nothing(&store);
    // The authentic blob then imports fine.
    import(&store, &spec, &blob).unwrap();
}

#[test]
fn oversize_blob_is_refused() {
    let (_d, store) = store();
    let tar = TarFixture::new().file("a", b"one").finish();
    let mut blob = gzip(&tar);
    let spec = spec_for(&tar, &blob, GZIP);
    blob.extend_from_slice(&[0u8; 4096]);
    let e = import(&store, &spec, &blob).unwrap_err();
    assert!(err_text(&e).contains("more than the declared"), "{e:#}");
    assert_eq!(exit_code(&e), crate::error::code::INTEGRITY);
    assert_kept_nothing(&store);
}

#[test]
fn wrong_diff_id_keeps_nothing() {
    let (_d, store) = store();
    let tar = TarFixture::new().file("a", b"one").file("b", b"two").finish();
    let blob = gzip(&tar);
    let mut spec = spec_for(&tar, &blob, GZIP);
    spec.diff_id = Digest::of(b"a config that lies");
    let e = import(&store, &spec, &blob).unwrap_err();
    let m = e.downcast_ref::<DigestMismatch>().expect("a digest mismatch");
    assert_eq!((&m.expected, &m.actual), (&spec.diff_id, &Digest::of(&tar)));
    assert!(err_text(&e).contains(&spec.blob_digest.to_string()), "names the blob digest: {e:#}");
    assert_kept_nothing(&store);
}

#[test]
fn altered_content_inside_valid_gzip_is_refused_by_the_diff_id() {
    // The gzip CRC-32 is not checked: a blob whose deflate data still decodes
    // but to other bytes (here a stored block with one byte changed) must be
    // caught by the diff_id, even when the blob digest matches the bytes sent.
    let (_d, store) = store();
    let tar = TarFixture::new().file("a", &vec![b'a'; 5000]).finish();
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    e.write_all(&tar).unwrap();
    let mut blob = e.finish().unwrap();
    let spec = spec_for(&tar, &blob, GZIP);
    let i = blob.windows(100).position(|w| w.iter().all(|&b| b == b'a')).expect("the content, stored verbatim");
    blob[i + 50] = b'b';
    let spec = LayerSpec { blob_digest: Digest::of(&blob), ..spec };
    let e = import(&store, &spec, &blob).unwrap_err();
    let m = e.downcast_ref::<DigestMismatch>().expect("a digest mismatch");
    assert_eq!(m.expected, spec.diff_id);
    assert_ne!(m.actual, spec.diff_id);
    assert!(err_text(&e).contains(&spec.blob_digest.to_string()), "names the blob digest: {e:#}");
    assert_eq!(exit_code(&e), crate::error::code::INTEGRITY);
    assert_kept_nothing(&store);
}

#[test]
fn multi_member_and_padded_gzip_layers_import() {
    let (_d, store) = store();
    let tar = TarFixture::new().file("a", b"one").file("b", &vec![7u8; 100_000]).finish();
    let (head, tail) = tar.split_at(3000);
    let mut blob = gzip(head);
    blob.extend(gzip(tail));
    blob.extend([0u8; 1024]);
    let spec = spec_for(&tar, &blob, GZIP);
    let index = import(&store, &spec, &blob).unwrap();
    assert!(matches!(entry(&index, "b").kind, EntryKind::File { size: 100_000, .. }));
}

/// (The failing entry was "/abs" until issue #10 made absolute names valid.)
#[test]
fn failed_import_keeps_objects_of_earlier_layers() {
    let (_d, store) = store();
    let good = TarFixture::new().file("shared", b"shared content").finish();
    let index = import_gz(&store, &good).unwrap();
    let EntryKind::File { object, .. } = &entry(&index, "shared").kind else { panic!() };
    let bad = TarFixture::new().file("shared", b"shared content").file("new", b"new").file("../up", b"x").finish();
    import_gz(&store, &bad).unwrap_err();
    assert!(store.object_path(object).is_file(), "the earlier layer's object stays");
    assert_eq!(count_files(&store.dir().join("objects")), 1, "the failed layer's new object went");
}

#[test]
fn open_clears_leftovers_of_interrupted_imports() {
    let (_d, store) = store();
    // A writer that died (pid far beyond pid_max), a writer still running (a
    // child we start), and junk.
    let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
    let live = format!("tmp/.tmp-obj-{}-0-1", child.id());
    fs::write(store.dir().join("tmp/.tmp-obj-99999999-2-3"), b"half an object").unwrap();
    fs::write(store.dir().join(&live), b"being written").unwrap();
    fs::create_dir(store.dir().join("tmp/junk")).unwrap();
    let again = Store::open_dir(store.dir()).unwrap();
    let left: Vec<_> = fs::read_dir(again.dir().join("tmp")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(left, [again.dir().join(&live)], "only the live writer's file stays");
    child.kill().unwrap();
    child.wait().unwrap();
    Store::open_dir(store.dir()).unwrap();
    assert_eq!(fs::read_dir(again.dir().join("tmp")).unwrap().count(), 0);
}

#[test]
fn blobs_are_checked_on_write_and_read() {
    let (_d, store) = store();
    let d = Digest::of(b"{\"manifest\":1}");
    store.put_blob(&d, b"{\"manifest\":1}").unwrap();
    assert_eq!(store.read_blob(&d).unwrap(), b"{\"manifest\":1}");
    let e = store.put_blob(&d, b"{\"manifest\":2}").unwrap_err();
    assert!(e.downcast_ref::<DigestMismatch>().is_some());
    fs::write(store.dir().join("blobs/sha256").join(d.hex()), b"rotten").unwrap();
    let e = store.read_blob(&d).unwrap_err();
    assert_eq!(exit_code(&e), crate::error::code::INTEGRITY);
    assert!(err_text(&store.read_blob(&Digest::of(b"none")).unwrap_err()).contains("not in the store"));
}

fn record(imgref: &str, manifest: &Digest, config: &Digest, layers: Vec<Digest>) -> ImageRecord {
    ImageRecord {
        imgref: imgref.into(),
        manifest_digest: manifest.clone(),
        config_digest: config.clone(),
        index_digest: None,
        pulled_at: "2026-11-25T22:00:00Z".into(),
        layers,
    }
}

#[test]
fn images_are_recorded_listed_and_removed() {
    let (_d, store) = store();
    let (m, c) = (Digest::of(b"m"), Digest::of(b"c"));
    store.record_image(&record("registry:b.example/os:v1", &m, &c, vec![])).unwrap();
    store.record_image(&record("registry:a.example/os:v1", &m, &c, vec![Digest::of(b"l")])).unwrap();
    store.record_image(&record("registry:b.example/os:v1", &c, &m, vec![])).unwrap();
    let list = store.list_images().unwrap();
    assert_eq!(
        list.iter().map(|r| r.imgref.as_str()).collect::<Vec<_>>(),
        ["registry:a.example/os:v1", "registry:b.example/os:v1"]
    );
    assert_eq!(list[1].manifest_digest, c, "recording again replaces");
    assert!(store.remove_image("registry:a.example/os:v1").unwrap());
    assert!(!store.remove_image("registry:a.example/os:v1").unwrap());
    assert_eq!(store.list_images().unwrap().len(), 1);
}

#[test]
fn gc_keeps_what_images_and_roots_reach() {
    let (_d, store) = store();
    let kept_tar = TarFixture::new().file("kept", b"kept").file("both", b"both").finish();
    let rooted_tar = TarFixture::new().file("rooted", b"rooted").finish();
    let gone_tar = TarFixture::new().file("gone", b"gone!").file("both", b"both").finish();
    let kept = import_gz(&store, &kept_tar).unwrap();
    let rooted = import_gz(&store, &rooted_tar).unwrap();
    let gone = import_gz(&store, &gone_tar).unwrap();
    let (m, c, loose) = (b"manifest".as_slice(), b"config".as_slice(), b"loose".as_slice());
    for b in [m, c, loose] {
        store.put_blob(&Digest::of(b), b).unwrap();
    }
    store
        .record_image(&record("registry:x/os:v1", &Digest::of(m), &Digest::of(c), vec![kept.diff_id.clone()]))
        .unwrap();
    let roots = GcRoots { blobs: vec![], diff_ids: vec![rooted.diff_id.clone()] };
    let gone_index_len =
        fs::metadata(store.dir().join("layers").join(format!("{}.json", gone.diff_id.hex()))).unwrap().len();
    let stats = store.gc(&roots).unwrap();
    assert_eq!((stats.blobs, stats.layers, stats.objects), (1, 1, 1));
    assert_eq!(stats.bytes, loose.len() as u64 + gone_index_len + b"gone!".len() as u64);
    assert!(store.has_layer(&kept.blob_digest, &kept.diff_id));
    assert!(store.has_layer(&rooted.blob_digest, &rooted.diff_id));
    assert!(!store.has_layer(&gone.blob_digest, &gone.diff_id));
    assert!(store.layer_index(&gone.diff_id).is_err());
    assert_eq!(count_files(&store.dir().join("objects")), 3, "kept, both, rooted");
    assert!(store.read_blob(&Digest::of(loose)).is_err());
    assert_eq!(store.read_blob(&Digest::of(m)).unwrap(), m);
    // Nothing more to collect the second time.
    assert_eq!(store.gc(&roots).unwrap(), crate::store::GcStats::default());
    // Dropping the image frees its layer.
    store.remove_image("registry:x/os:v1").unwrap();
    let stats = store.gc(&roots).unwrap();
    assert_eq!((stats.blobs, stats.layers, stats.objects), (2, 1, 2));
}

#[test]
fn refuses_pax_record_bomb() {
    // An 8 GiB PAX record would be read into memory whole by the tar parser.
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_path("PaxHeaders/bomb").unwrap();
    h.set_size(8 << 30);
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend(std::iter::repeat_n(b'a', 1 << 20));
    assert_refused(&tar, "exceeds the limit of 1048576 bytes");
}

#[test]
fn multi_member_gzip_imports_like_one_member() {
    let (_d, store) = store();
    let tar = TarFixture::new().file("a", &vec![3u8; 50_000]).file("b", b"bee").finish();
    let mut blob = gzip(&tar[..tar.len() / 3]);
    blob.extend(gzip(&tar[tar.len() / 3..]));
    let index = import(&store, &spec_for(&tar, &blob, GZIP), &blob).unwrap();
    assert_eq!(index.entries.len(), 2);
}

#[test]
fn garbage_after_the_gzip_stream_is_refused() {
    let (_d, store) = store();
    let tar = TarFixture::new().file("a", b"aaa").finish();
    let mut blob = gzip(&tar);
    blob.extend_from_slice(b"not gzip at all");
    // The descriptor matches these bytes: the blob is authentic but not a valid layer.
    let e = import(&store, &spec_for(&tar, &blob, GZIP), &blob).unwrap_err();
    assert!(err_text(&e).contains("decompressing layer"), "{e:#}");
    assert_kept_nothing(&store);
}

/// Regression: a writer that leaves uid/gid empty (all NUL) made the import
/// fail; GNU tar and Go read such fields as 0. PAX `uid`/`gid` records carry
/// ids too large for the octal field and win over it.
#[test]
fn blank_owner_fields_read_as_root_and_pax_ids_win() {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = header(tar::EntryType::Regular, 0o644, 1);
    h.as_old_mut().uid.fill(0);
    h.as_old_mut().gid.fill(0);
    set_raw_name(&mut h, b"blank");
    h.set_cksum();
    b.append(&h, &b"x"[..]).unwrap();
    let records: [(&str, &[u8]); 2] = [("uid", b"4000000"), ("gid", b"4000001")];
    b.append_pax_extensions(records).unwrap();
    let mut h = header(tar::EntryType::Regular, 0o644, 1);
    set_raw_name(&mut h, b"big-ids");
    h.set_cksum();
    b.append(&h, &b"y"[..]).unwrap();
    let tar = b.into_inner().unwrap();

    let (_d, store) = store();
    let index = import_gz(&store, &tar).unwrap();
    let blank = &entry(&index, "blank").meta;
    assert_eq!((blank.uid, blank.gid), (0, 0));
    let big = &entry(&index, "big-ids").meta;
    assert_eq!((big.uid, big.gid), (4_000_000, 4_000_001));
}

/// What a power cut can leave of an unsynced layer, per filesystem: an object
/// emptied (ext4 with delayed allocation), one of the right size but zeroed
/// (as XFS can), one whose rename never reached the disk.
fn damage_like_a_power_cut(store: &Store, index: &LayerIndex, files: [&str; 3]) {
    let object = |path| match &entry(index, path).kind {
        EntryKind::File { object, .. } => store.object_path(object),
        other => panic!("{path} is {other:?}"),
    };
    fs::OpenOptions::new().write(true).truncate(true).open(object(files[0])).unwrap();
    let zeroed = object(files[1]);
    let len = fs::metadata(&zeroed).unwrap().len() as usize;
    fs::write(&zeroed, vec![0u8; len]).unwrap();
    fs::remove_file(object(files[2])).unwrap();
}

/// Rewrites the layer's mark as an earlier boot would have left it.
fn mark_as_earlier_boot(store: &Store, diff_id: &Digest) {
    let mark = store.dir().join("unsynced").join(diff_id.hex());
    assert!(mark.is_file(), "a committed layer is marked until the store is synced");
    fs::write(mark, "11111111-2222-3333-4444-555555555555\n").unwrap();
}

fn four_files() -> Vec<u8> {
    TarFixture::new()
        .dir("etc/")
        .file("etc/a", b"first file")
        .file("etc/b", b"second file, longer")
        .file("etc/c", b"third")
        .file("etc/d", b"the one that survives")
        .finish()
}

#[test]
fn unsynced_layer_damaged_by_a_crash_is_dropped_and_pulled_again() {
    let (_d, store) = store();
    let tar = four_files();
    let index = import_gz(&store, &tar).unwrap();
    let spec = spec_for(&tar, &gzip(&tar), GZIP);
    mark_as_earlier_boot(&store, &index.diff_id);
    damage_like_a_power_cut(&store, &index, ["etc/a", "etc/b", "etc/c"]);

    let r = store.recover().unwrap();
    assert_eq!((r.layers_checked, r.layers_dropped.clone(), r.objects_lost), (1, vec![index.diff_id.clone()], 3));
    assert!(!store.has_layer(&spec.blob_digest, &spec.diff_id), "the layer must be downloaded again");
    assert!(!store.dir().join("unsynced").join(index.diff_id.hex()).exists());
    assert_eq!(count_files(&store.dir().join("objects")), 1, "damaged objects are removed, the intact one stays");

    let again = import_gz(&store, &tar).unwrap();
    assert_eq!(again, index);
    for e in &again.entries {
        if let EntryKind::File { object, .. } = &e.kind {
            assert!(store.verify_object(object).unwrap(), "{} is whole again", e.path);
        }
    }
    assert_eq!(store.recover().unwrap(), Default::default(), "a mark of this boot is not suspect");
}

#[test]
fn unsynced_layer_that_survived_a_reboot_is_kept() {
    let (_d, store) = store();
    let tar = four_files();
    let index = import_gz(&store, &tar).unwrap();
    mark_as_earlier_boot(&store, &index.diff_id);
    let r = store.recover().unwrap();
    assert_eq!((r.layers_checked, r.layers_dropped.len(), r.objects_lost), (1, 0, 0));
    assert!(store.has_layer(&index.blob_digest, &index.diff_id));
    assert_eq!(store.recover().unwrap().layers_checked, 0, "checked once");
}

#[test]
fn sync_makes_committed_layers_trusted_across_reboots() {
    let (_d, store) = store();
    let index = import_gz(&store, &four_files()).unwrap();
    store.sync().unwrap();
    assert!(!store.dir().join("unsynced").join(index.diff_id.hex()).exists());
    assert_eq!(store.recover().unwrap(), Default::default());
}
