//! File objects: how an object id is computed (a canonical metadata header
//! followed by the content), and how objects are written into
//! `repo/objects/` so that a crash or a kill can never leave a partial object
//! under its final name.
//!
//! Every object is written to a temporary file in `repo/tmp/`, given its
//! owner, mode, extended attributes and an mtime of 0, and only then renamed
//! to `objects/<2 hex>/<62 hex>`. An object therefore always matches its name.
//! Small files are hashed in memory first so that an object already present is
//! never written again; large files are streamed to the temporary file while
//! hashing and the copy is discarded when the object turns out to exist.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use rustix::fs::{Gid, Mode, RenameFlags, Timespec, Timestamps, Uid, XattrFlags};
use sha2::{Digest as _, Sha256};

use crate::digest::Digest;
use crate::store::ObjectId;

/// Files up to this size are read into memory and hashed before anything is
/// written; larger ones are streamed to a temporary file while hashing.
pub const SMALL_OBJECT_MAX: u64 = 1 << 20;

/// Magic that starts every object header; bump the version to change the format.
const HEADER_MAGIC: &[u8] = b"hostctl-object-v1\0";

/// The metadata that is part of an object's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Permission bits (`mode & 0o7777`).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Extended attributes, name → raw value (sorted by name).
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// The canonical header hashed before an object's content (docs/store.md):
/// magic, mode, uid, gid, content size, xattr count, then each xattr as
/// (name length, name, value length, value), all integers little-endian.
pub fn object_header(meta: &ObjectMeta, size: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(64);
    h.extend_from_slice(HEADER_MAGIC);
    h.extend_from_slice(&meta.mode.to_le_bytes());
    h.extend_from_slice(&meta.uid.to_le_bytes());
    h.extend_from_slice(&meta.gid.to_le_bytes());
    h.extend_from_slice(&size.to_le_bytes());
    h.extend_from_slice(&(meta.xattrs.len() as u32).to_le_bytes());
    for (name, value) in &meta.xattrs {
        h.extend_from_slice(&(name.len() as u32).to_le_bytes());
        h.extend_from_slice(name.as_bytes());
        h.extend_from_slice(&(value.len() as u32).to_le_bytes());
        h.extend_from_slice(value);
    }
    h
}

/// Computes the id of an object from its metadata and content (used by tests and `verify`).
pub fn object_id_of(meta: &ObjectMeta, content: &[u8]) -> ObjectId {
    let mut h = Sha256::new();
    h.update(object_header(meta, content.len() as u64));
    h.update(content);
    ObjectId(hex::encode(h.finalize()))
}

/// Who created which objects during in-flight imports of one store, so that
/// a failed import removes only objects that no other import has used.
#[derive(Debug, Default)]
pub struct Claims {
    /// object → (creating import, used by another import since).
    map: Mutex<HashMap<ObjectId, (u64, bool)>>,
    next_import: AtomicU64,
}

impl Claims {
    /// A number for a new import, unique among this store's.
    pub fn new_import(&self) -> u64 {
        self.next_import.fetch_add(1, Ordering::Relaxed)
    }

    /// Import `me` is about to rely on `id` being present.
    fn note_use(&self, me: u64, id: &ObjectId) {
        let mut map = self.map.lock().expect("claims lock");
        if let Some((creator, shared)) = map.get_mut(id) {
            if *creator != me {
                *shared = true;
            }
        }
    }

    fn note_created(&self, me: u64, id: &ObjectId) {
        self.map.lock().expect("claims lock").insert(id.clone(), (me, false));
    }

    /// Forgets the objects `created` by import `me`; when `remove` is set, also
    /// deletes those no other import used. Returns how many were deleted.
    pub fn release(&self, me: u64, created: &[ObjectId], objects: &Path, remove: bool) -> usize {
        let mut map = self.map.lock().expect("claims lock");
        let mut removed = 0;
        for id in created {
            if let Some((creator, shared)) = map.get(id).copied() {
                if creator != me {
                    continue;
                }
                if remove && !shared && fs::remove_file(object_path_in(objects, id)).is_ok() {
                    removed += 1;
                }
                map.remove(id);
            }
        }
        removed
    }
}

/// `objects/<2 hex>/<62 hex>`.
pub fn object_path_in(objects: &Path, id: &ObjectId) -> PathBuf {
    objects.join(&id.0[..2]).join(&id.0[2..])
}

/// Writes objects for one import.
pub struct ObjectWriter<'a> {
    objects: PathBuf,
    tmp: PathBuf,
    claims: &'a Arc<Claims>,
    me: u64,
    seq: u64,
    /// This process's id, for temporary file names (one `getpid` per import, not per object).
    pid: u32,
    /// Owner and group that files created in `tmp/` get, learnt from the first
    /// one: `fchown` to the same ids is skipped (most objects are root's).
    new_owner: Option<(u32, u32)>,
    buf: Vec<u8>,
    /// Objects this import created (removed again if it fails).
    pub created: Vec<ObjectId>,
    /// Bytes of new objects written.
    pub bytes_written: u64,
    /// The plain sha256 of each stored object's content, when asked for
    /// ([`ObjectWriter::record_content_digests`]): what a layer index keeps
    /// so that later partial pulls find these contents by a TOC's digests.
    pub content_digests: Option<BTreeMap<ObjectId, Digest>>,
}

impl<'a> ObjectWriter<'a> {
    /// A writer for import `me` (from [`Claims::new_import`]) into the store at `repo`.
    pub fn new(repo: &Path, claims: &'a Arc<Claims>, me: u64) -> Self {
        ObjectWriter {
            objects: repo.join("objects"),
            tmp: repo.join("tmp"),
            claims,
            me,
            seq: 0,
            pid: std::process::id(),
            new_owner: None,
            buf: Vec::new(),
            created: Vec::new(),
            bytes_written: 0,
            content_digests: None,
        }
    }

    /// From now on, also hashes each stored content on its own (sha256, one
    /// more pass over the bytes already in hand) into
    /// [`ObjectWriter::content_digests`].
    pub fn record_content_digests(&mut self) {
        self.content_digests.get_or_insert_with(BTreeMap::new);
    }

    fn note_content(&mut self, id: &ObjectId, content: Option<Sha256>) {
        if let (Some(h), Some(map)) = (content, self.content_digests.as_mut()) {
            map.insert(id.clone(), Digest::from_sha256(h.finalize().into()));
        }
    }

    /// This import relies on the existing object `id` (a failing import
    /// running beside it will not remove it).
    pub fn note_use(&self, id: &ObjectId) {
        self.claims.note_use(self.me, id);
    }

    /// Stores `size` bytes read from `content` as an object with `meta`; returns its id.
    /// Fails if `content` ends before `size` bytes.
    pub fn store(&mut self, meta: &ObjectMeta, size: u64, content: &mut dyn Read) -> Result<ObjectId> {
        let mut hasher = Sha256::new();
        hasher.update(object_header(meta, size));
        let mut content_hasher = self.content_digests.is_some().then(Sha256::new);
        if size <= SMALL_OBJECT_MAX {
            self.buf.clear();
            let n = content.take(size).read_to_end(&mut self.buf).context("reading file content")?;
            if n as u64 != size {
                anyhow::bail!("file content ended after {n} of {size} bytes");
            }
            hasher.update(&self.buf);
            if let Some(h) = content_hasher.as_mut() {
                h.update(&self.buf);
            }
            let id = ObjectId(hex::encode(hasher.finalize()));
            self.note_content(&id, content_hasher);
            self.claims.note_use(self.me, &id);
            if self.present(&id, size) {
                return Ok(id);
            }
            let (tmp_path, mut file) = self.create_tmp()?;
            let buf = std::mem::take(&mut self.buf);
            let r = file.write_all(&buf).with_context(|| format!("writing {}", tmp_path.display()));
            self.buf = buf;
            if let Err(e) = r {
                let _ = fs::remove_file(&tmp_path);
                return Err(e);
            }
            self.commit(&tmp_path, file, meta, &id, size)?;
            Ok(id)
        } else {
            let (tmp_path, mut file) = self.create_tmp()?;
            let r = copy_hashing(content, &mut file, [Some(&mut hasher), content_hasher.as_mut()], size, &mut self.buf);
            if let Err(e) = r {
                let _ = fs::remove_file(&tmp_path);
                return Err(e).with_context(|| format!("writing {}", tmp_path.display()));
            }
            let id = ObjectId(hex::encode(hasher.finalize()));
            self.note_content(&id, content_hasher);
            self.claims.note_use(self.me, &id);
            if self.present(&id, size) {
                let _ = fs::remove_file(&tmp_path);
                return Ok(id);
            }
            self.commit(&tmp_path, file, meta, &id, size)?;
            Ok(id)
        }
    }

    /// An object is trusted as present when a regular file of the right size
    /// has its name (a crash can only ever leave complete renamed objects; the
    /// size check also catches files emptied by a power loss before sync).
    fn present(&self, id: &ObjectId, size: u64) -> bool {
        match fs::symlink_metadata(object_path_in(&self.objects, id)) {
            Ok(m) => m.is_file() && m.size() == size,
            Err(_) => false,
        }
    }

    fn create_tmp(&mut self) -> Result<(PathBuf, File)> {
        self.seq += 1;
        let name = format!("{}obj-{}-{}-{}", crate::fsutil::TMP_PREFIX, self.pid, self.me, self.seq);
        let path = self.tmp.join(name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        if self.new_owner.is_none() {
            let m = file.metadata().with_context(|| format!("reading the owner of {}", path.display()))?;
            self.new_owner = Some((m.uid(), m.gid()));
        }
        Ok((path, file))
    }

    /// Sets owner, mode, xattrs and mtime on the temporary file and renames it into place.
    fn commit(&mut self, tmp_path: &Path, file: File, meta: &ObjectMeta, id: &ObjectId, size: u64) -> Result<()> {
        let chown = self.new_owner != Some((meta.uid, meta.gid));
        let r = apply_meta(&file, meta, chown).with_context(|| format!("setting metadata on {}", tmp_path.display()));
        drop(file);
        if let Err(e) = r {
            let _ = fs::remove_file(tmp_path);
            return Err(e);
        }
        let dest = object_path_in(&self.objects, id);
        let mut renamed = rename_noreplace(tmp_path, &dest);
        if renamed == Err(rustix::io::Errno::NOENT) {
            // Fan-out directories are created on first use.
            match fs::create_dir(dest.parent().expect("objects have a parent")) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => {
                    let _ = fs::remove_file(tmp_path);
                    return Err(e).with_context(|| format!("creating the directory of {}", dest.display()));
                }
            }
            renamed = rename_noreplace(tmp_path, &dest);
        }
        match renamed {
            Ok(()) => {
                self.claims.note_created(self.me, id);
                self.created.push(id.clone());
                self.bytes_written += size;
                Ok(())
            }
            Err(rustix::io::Errno::EXIST) => {
                // Another import stored it meanwhile, or a damaged copy is there.
                if !self.present(id, size) {
                    fs::rename(tmp_path, &dest)
                        .with_context(|| format!("replacing damaged object {}", dest.display()))?;
                    self.claims.note_created(self.me, id);
                    self.created.push(id.clone());
                    self.bytes_written += size;
                } else {
                    let _ = fs::remove_file(tmp_path);
                }
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_file(tmp_path);
                Err(io::Error::from(e)).with_context(|| format!("renaming object into {}", dest.display()))
            }
        }
    }
}

fn rename_noreplace(from: &Path, to: &Path) -> rustix::io::Result<()> {
    rustix::fs::renameat_with(rustix::fs::CWD, from, rustix::fs::CWD, to, RenameFlags::NOREPLACE)
}

/// Copies exactly `size` bytes from `r` to `w`, hashing them.
fn copy_hashing(
    r: &mut dyn Read,
    w: &mut File,
    mut hashers: [Option<&mut Sha256>; 2],
    size: u64,
    buf: &mut Vec<u8>,
) -> Result<()> {
    buf.resize(256 * 1024, 0);
    let mut left = size;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = r.read(&mut buf[..want])?;
        if n == 0 {
            anyhow::bail!("file content ended after {} of {size} bytes", size - left);
        }
        for h in hashers.iter_mut().flatten() {
            h.update(&buf[..n]);
        }
        w.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// Gives a file the owner (unless `chown` is false: it already has it), mode,
/// xattrs and zero timestamps of an object. Ownership first: chown clears
/// setuid bits and file capabilities.
fn apply_meta(file: &File, meta: &ObjectMeta, chown: bool) -> Result<()> {
    if chown {
        rustix::fs::fchown(file, Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid)))
            .map_err(io::Error::from)
            .with_context(|| format!("chown to {}:{}", meta.uid, meta.gid))?;
    }
    rustix::fs::fchmod(file, Mode::from_raw_mode(meta.mode & 0o7777))
        .map_err(io::Error::from)
        .with_context(|| format!("chmod to {:o}", meta.mode))?;
    for (name, value) in &meta.xattrs {
        rustix::fs::fsetxattr(file, name.as_str(), value, XattrFlags::empty())
            .map_err(io::Error::from)
            .with_context(|| format!("setting xattr {name}"))?;
    }
    let zero = Timespec { tv_sec: 0, tv_nsec: 0 };
    rustix::fs::futimens(file, &Timestamps { last_access: zero, last_modification: zero })
        .map_err(io::Error::from)
        .context("setting mtime 0")?;
    Ok(())
}

/// Re-hashes a stored object from its on-disk metadata and content and says
/// whether it still matches its name.
pub fn verify_object(path: &Path, id: &ObjectId) -> Result<bool> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let m = file.metadata()?;
    let mut xattrs = BTreeMap::new();
    let mut names = vec![0u8; 64 * 1024];
    let n = rustix::fs::flistxattr(&file, &mut names[..]).map_err(io::Error::from)?;
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        let mut value = vec![0u8; 64 * 1024];
        let len = rustix::fs::fgetxattr(&file, name.as_str(), &mut value[..]).map_err(io::Error::from)?;
        value.truncate(len);
        xattrs.insert(name, value);
    }
    let meta = ObjectMeta { mode: m.mode() & 0o7777, uid: m.uid(), gid: m.gid(), xattrs };
    let mut hasher = Sha256::new();
    hasher.update(object_header(&meta, m.size()));
    let mut r = file;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = r.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()) == id.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> ObjectMeta {
        ObjectMeta { mode: 0o644, uid: 0, gid: 0, xattrs: BTreeMap::new() }
    }

    fn repo() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for sub in ["objects", "tmp"] {
            fs::create_dir(d.path().join(sub)).unwrap();
        }
        d
    }

    #[test]
    fn failed_import_keeps_objects_a_concurrent_import_relies_on() {
        let d = repo();
        let claims = Arc::new(Claims::default());
        let objects = d.path().join("objects");
        for big in [false, true] {
            let content = vec![b'x'; if big { 2 << 20 } else { 10 }];
            let (a, b) = (claims.new_import(), claims.new_import());
            let mut wa = ObjectWriter::new(d.path(), &claims, a);
            let mut wb = ObjectWriter::new(d.path(), &claims, b);
            let shared = wa.store(&meta(), content.len() as u64, &mut &content[..]).unwrap();
            let own = wa.store(&meta(), 3, &mut &b"own"[..]).unwrap();
            assert_eq!(wb.store(&meta(), content.len() as u64, &mut &content[..]).unwrap(), shared);
            assert!(wb.created.is_empty(), "the second import found the object present");
            // Import a fails: its own object goes, the one b relies on stays.
            assert_eq!(claims.release(a, &wa.created, &objects, true), 1);
            assert!(object_path_in(&objects, &shared).is_file());
            assert!(!object_path_in(&objects, &own).exists());
            assert!(verify_object(&object_path_in(&objects, &shared), &shared).unwrap());
            fs::remove_file(object_path_in(&objects, &shared)).unwrap();
        }
        assert_eq!(fs::read_dir(d.path().join("tmp")).unwrap().count(), 0, "no temp file left");
    }

    #[test]
    fn short_content_is_an_error_and_leaves_nothing() {
        let d = repo();
        let claims = Arc::new(Claims::default());
        let mut w = ObjectWriter::new(d.path(), &claims, claims.new_import());
        for size in [100, 3 << 20] {
            let e = w.store(&meta(), size, &mut &b"short"[..]).unwrap_err();
            assert!(format!("{e:#}").contains("ended after 5"), "{e:#}");
        }
        assert_eq!(fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
        assert!(w.created.is_empty());
    }

    #[test]
    fn object_id_covers_metadata_and_content() {
        let base = object_id_of(&meta(), b"abc");
        let mut m = meta();
        m.mode = 0o755;
        assert_ne!(object_id_of(&m, b"abc"), base);
        let mut m = meta();
        m.uid = 1;
        assert_ne!(object_id_of(&m, b"abc"), base);
        let mut m = meta();
        m.xattrs.insert("user.a".into(), b"1".to_vec());
        assert_ne!(object_id_of(&m, b"abc"), base);
        assert_ne!(object_id_of(&meta(), b"abd"), base);
        assert_eq!(object_id_of(&meta(), b"abc"), base);
    }
}
