//! Layer tars read as the ecosystem reads them (issue #10): the breakout and
//! unpack cases of containerd (`archive/tar_test.go`: `TestBreakouts`,
//! `TestApplyTar`), moby (`pkg/archive/archive_test.go`:
//! `TestUntarInvalidFilenames`, `TestUntarHardlinkToSymlink`,
//! `TestUntarInvalidHardlink`, `TestUntarInvalidSymlink`) and umoci
//! (`oci/layer/tar_extract_test.go`), as one table. Each row's layers go
//! through the real pipeline: imported into a store (`Store::import_layer`),
//! then checked out (`checkout`), through the library. Beside each row: the
//! upstream expectation, and the reason wherever hostctl differs on purpose.
//! (It was a unit test, `src/deploy/tar_compat.rs`; it lives here to share
//! `support::hostile`'s raw tar headers.)
//!
//! Every row, whatever it expects, also checks that nothing outside the
//! checkout changed: the case runs in a directory that holds a `victim`
//! directory next to the checkout's root, as moby's `testBreakout` does.
//! `{victim}` in a name or target stands for that directory's absolute path.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use hostctl::deploy::checkout::{checkout, CheckoutOptions};
use hostctl::digest::Digest;
use hostctl::store::{LayerIndex, LayerSpec, Store};

use crate::support::hostile::raw_header;

/// One tar entry; names and targets are written raw (no checks, no cleaning).
#[derive(Clone, Copy, Debug)]
enum E {
    Dir(&'static str),
    File(&'static str, &'static str),
    Sym(&'static str, &'static str),
    Link(&'static str, &'static str),
}

/// What must hold in the checked-out root (paths relative to it, never
/// through a symlink).
#[derive(Clone, Copy, Debug)]
enum Check {
    File(&'static str, &'static str),
    Dir(&'static str),
    Symlink(&'static str, &'static str),
    /// The two names are one inode (a hard link; for symlinks, a link group).
    Same(&'static str, &'static str),
    NotSame(&'static str, &'static str),
    Absent(&'static str),
}

#[derive(Clone, Copy, Debug)]
enum Expect {
    Lands(&'static [Check]),
    /// `image pull` refuses the layer (the import), with this in the error.
    Refused(&'static str),
    /// `switch` refuses the image (the checkout), with this in the error.
    CheckoutError(&'static str),
}

struct Case {
    /// Upstream project and test, which is the tool behaviour matched.
    name: &'static str,
    /// What the upstream test expects.
    upstream: &'static str,
    /// Content present before the layer (upstream `apply`): a lower layer.
    lower: &'static [E],
    layer: &'static [E],
    expect: Expect,
    /// Why hostctl differs from upstream, where it does.
    differs: Option<&'static str>,
}

use Check as C;
use Expect::{CheckoutError, Lands, Refused};
use E::{Dir, File, Link, Sym};

const DOTDOT: &str = "a `..` component is refused at import, as moby refuses it (TestUntarInvalidFilenames, \
                      TestUntarInvalidHardlink): no image tool writes one, and clamping it would hide an attack";

const BASE: &[E] = &[Dir("etc"), File("etc/passwd", "inside")];
const ALL_USERS: &[E] =
    &[Dir("etc"), File("etc/passwd", "all users"), File("etc/whitedout", "x"), Sym("localetc", "/etc")];

#[rustfmt::skip]
const CASES: &[Case] = &[
    // containerd archive/tar_test.go TestBreakouts
    Case { name: "containerd TestBreakouts/SymlinkAbsolute", upstream: "lands at etc/unbroken",
        lower: &[], layer: &[Dir("etc"), Sym("localetc", "/etc"), File("/localetc/unbroken", "unbroken")],
        expect: Lands(&[C::File("etc/unbroken", "unbroken"), C::Symlink("localetc", "/etc")]), differs: None },
    Case { name: "containerd TestBreakouts/SymlinkUpAndOut", upstream: "lands at etc/unbroken",
        lower: &[], layer: &[Dir("etc"), Dir("dummy"), Sym("localetc", "/dummy/../etc"), File("/localetc/unbroken", "unbroken")],
        expect: Lands(&[C::File("etc/unbroken", "unbroken")]), differs: None },
    Case { name: "containerd TestBreakouts/SymlinkMultipleAbsolute", upstream: "lands at etc/unbroken",
        lower: &[], layer: &[Dir("etc"), Dir("dummy"), Sym("/dummy/etc", "/etc"), Sym("localetc", "/dummy/etc"), File("/dummy/etc/unbroken", "unbroken")],
        expect: Lands(&[C::File("etc/unbroken", "unbroken")]), differs: None },
    Case { name: "containerd TestBreakouts/SymlinkMultipleRelative", upstream: "lands at etc/unbroken",
        lower: &[], layer: &[Dir("etc"), Dir("dummy"), Sym("/dummy/etc", "/etc"), Sym("localetc", "./dummy/etc"), File("/dummy/etc/unbroken", "unbroken")],
        expect: Lands(&[C::File("etc/unbroken", "unbroken")]), differs: None },
    Case { name: "containerd TestBreakouts/SymlinkEmptyFile", upstream: "etc/emptied becomes empty",
        lower: &[], layer: &[Dir("etc"), File("etc/emptied", "notempty"), Sym("localetc", "/etc"), File("/localetc/emptied", "")],
        expect: Lands(&[C::File("etc/emptied", "")]), differs: None },
    Case { name: "containerd TestBreakouts/HardlinkRelative", upstream: "breakouts/mypasswd is etc/passwd",
        lower: &[], layer: &[Dir("etc"), File("/etc/passwd", "inside"), Dir("breakouts"), Sym("breakouts/d1", "../../etc"), Link("breakouts/mypasswd", "/breakouts/d1/passwd")],
        expect: Lands(&[C::Same("breakouts/mypasswd", "etc/passwd")]), differs: None },
    Case { name: "containerd TestBreakouts/HardlinkDownAndOut", upstream: "breakouts/mypasswd is etc/passwd",
        lower: &[], layer: &[Dir("etc"), File("/etc/passwd", "inside"), Dir("breakouts"), Dir("downandout"), Sym("breakouts/d1", "../downandout/../../etc"), Link("breakouts/mypasswd", "/breakouts/d1/passwd")],
        expect: Lands(&[C::Same("breakouts/mypasswd", "etc/passwd")]), differs: None },
    Case { name: "containerd TestBreakouts/HardlinkAbsolute", upstream: "localpasswd is etc/passwd",
        lower: &[], layer: &[Dir("etc"), File("/etc/passwd", "inside"), Sym("localetc", "/etc"), Link("localpasswd", "/localetc/passwd")],
        expect: Lands(&[C::Same("localpasswd", "etc/passwd")]), differs: None },
    Case { name: "containerd TestBreakouts/HardlinkRelativeLong", upstream: "localpasswd is etc/passwd",
        lower: &[], layer: &[Dir("etc"), File("/etc/passwd", "inside"), Sym("localetc", "../../../../../../../etc"), Link("localpasswd", "/localetc/passwd")],
        expect: Lands(&[C::Same("localpasswd", "etc/passwd")]), differs: None },
    Case { name: "containerd TestBreakouts/HardlinkRelativeUpAndOut", upstream: "localpasswd is etc/passwd",
        lower: &[], layer: &[Dir("etc"), File("/etc/passwd", "inside"), Sym("localetc", "upandout/../../../etc"), Link("localpasswd", "/localetc/passwd")],
        expect: Lands(&[C::Same("localpasswd", "etc/passwd")]), differs: None },
    Case { name: "containerd TestBreakouts/HardlinkDirectRelative", upstream: "localpasswd is etc/passwd (`..` clamped at the root)",
        lower: &[], layer: &[Dir("etc"), File("/etc/passwd", "inside"), Link("localpasswd", "../../../../../etc/passwd")],
        expect: Refused("`..` component refused"), differs: Some(DOTDOT) },
    Case { name: "containerd TestBreakouts/HardlinkDirectAbsolute", upstream: "localpasswd is etc/passwd",
        lower: &[], layer: &[Dir("etc"), File("/etc/passwd", "inside"), Link("localpasswd", "/etc/passwd")],
        expect: Lands(&[C::Same("localpasswd", "etc/passwd"), C::File("localpasswd", "inside")]), differs: None },
    Case { name: "containerd TestBreakouts/SymlinkParentDirectory", upstream: "the `..` symlink is skipped; localpasswd is etc/passwd",
        lower: &[], layer: &[Dir("etc"), File("/etc/passwd", "inside"), Sym("..", "/etc/"), Link("localpasswd", "/etc/passwd")],
        expect: Refused("`..` component refused"), differs: Some(DOTDOT) },
    Case { name: "containerd TestBreakouts/SymlinkEmptyFilename", upstream: "the symlink named \"\" is skipped; localpasswd is etc/passwd",
        lower: &[], layer: &[Dir("etc"), File("/etc/passwd", "inside"), Sym("", "/etc/"), Link("localpasswd", "/etc/passwd")],
        expect: Refused("a non-directory entry at the layer root"),
        differs: Some("an entry that would replace the image root by a non-directory is refused with an error rather than skipped silently") },
    Case { name: "containerd TestBreakouts/SymlinkParentRelative", upstream: "localetc -> /etc/; localetc/localpasswd is etc/passwd",
        lower: &[], layer: &[Dir("etc"), File("/etc/passwd", "inside"), Sym("localetc/sub/..", "/etc/"), Link("/localetc/localpasswd", "/etc/passwd")],
        expect: Refused("`..` component refused"), differs: Some(DOTDOT) },
    Case { name: "containerd TestBreakouts/SymlinkSlashEnded", upstream: "localetc/localpasswd is etc/passwd",
        lower: &[], layer: &[Dir("etc"), File("/etc/passwd", "inside"), Dir("localetc/"), Link("/localetc/localpasswd", "/etc/passwd")],
        expect: Lands(&[C::Dir("localetc"), C::Same("localetc/localpasswd", "etc/passwd")]), differs: None },
    Case { name: "containerd TestBreakouts/SymlinkOverrideDirectory", upstream: "the symlink replaces the directory; the link lands in etc",
        lower: &[Dir("etc"), File("etc/passwd", "inside"), Dir("localetc")], layer: &[Sym("localetc", "/etc"), Link("/localetc/localpasswd", "/etc/passwd")],
        expect: Lands(&[C::Symlink("localetc", "/etc"), C::Same("etc/localpasswd", "etc/passwd")]), differs: None },
    Case { name: "containerd TestBreakouts/SymlinkOverrideDirectoryRelative", upstream: "the symlink replaces the directory; the link lands in etc",
        lower: &[Dir("etc"), File("etc/passwd", "inside"), Dir("localetc")], layer: &[Sym("localetc", "../../etc"), Link("/localetc/localpasswd", "/etc/passwd")],
        expect: Lands(&[C::Symlink("localetc", "../../etc"), C::Same("etc/localpasswd", "etc/passwd")]), differs: None },
    Case { name: "containerd TestBreakouts/DirectoryOverrideSymlink", upstream: "the directory replaces the symlink; localetc/localpasswd is etc/passwd",
        lower: &[Dir("etc"), File("etc/passwd", "inside"), Sym("localetc", "/etc")], layer: &[Dir("/localetc/"), Link("/localetc/localpasswd", "/etc/passwd")],
        expect: Lands(&[C::Dir("localetc"), C::Same("localetc/localpasswd", "etc/passwd"), C::Absent("etc/localpasswd")]), differs: None },
    Case { name: "containerd TestBreakouts/DirectoryOverrideSymlinkAndHardlink", upstream: "localetc/localpasswd is a new file, not etc/passwd",
        lower: &[Dir("etc"), File("etc/passwd", "inside"), Sym("localetc", "etc"), Link("/localetc/localpasswd", "/etc/passwd")],
        layer: &[Dir("/localetc/"), File("/localetc/localpasswd", "different")],
        expect: Lands(&[C::NotSame("localetc/localpasswd", "etc/passwd"), C::File("localetc/localpasswd", "different"), C::File("etc/passwd", "inside"), C::Same("etc/localpasswd", "etc/passwd")]),
        differs: None },
    Case { name: "containerd TestBreakouts/WhiteoutRootParent", upstream: "error (invalid archive)",
        lower: BASE, layer: &[File(".wh...", "")], expect: Refused("whiteout of an invalid name"), differs: None },
    Case { name: "containerd TestBreakouts/WhiteoutParent", upstream: "error (invalid archive)",
        lower: BASE, layer: &[File("etc/.wh...", "")], expect: Refused("whiteout of an invalid name"), differs: None },
    Case { name: "containerd TestBreakouts/WhiteoutRoot", upstream: "error (invalid archive)",
        lower: BASE, layer: &[File(".wh..", "")], expect: Refused("whiteout of an invalid name"), differs: None },
    Case { name: "containerd TestBreakouts/WhiteoutCurrentDirectory", upstream: "error (invalid archive)",
        lower: BASE, layer: &[File("etc/.wh..", "")], expect: Refused("whiteout of an invalid name"), differs: None },
    Case { name: "containerd TestBreakouts/WhiteoutSymlink", upstream: "the symlink goes, etc/passwd stays",
        lower: ALL_USERS, layer: &[File(".wh.localetc", "")],
        expect: Lands(&[C::File("etc/passwd", "all users"), C::Absent("localetc")]), differs: None },
    Case { name: "containerd TestBreakouts/WhiteoutSymlinkPath", upstream: "etc/whitedout goes (resolved through the lower symlink)",
        lower: ALL_USERS, layer: &[File("localetc/.wh.whitedout", "")],
        expect: Lands(&[C::File("etc/passwd", "all users"), C::Absent("etc/whitedout")]), differs: None },
    Case { name: "containerd TestBreakouts/WhiteoutDirectoryName", upstream: "a file .wh.etc/somefile, not a whiteout",
        lower: ALL_USERS, layer: &[File(".wh.etc/somefile", "non-empty")],
        expect: Lands(&[C::File("etc/passwd", "all users"), C::File(".wh.etc/somefile", "non-empty")]), differs: None },
    Case { name: "containerd TestBreakouts/WhiteoutDeadSymlinkParent", upstream: "no-op",
        lower: &[Dir("etc"), File("etc/passwd", "all users"), Sym("localetc", "/dne")], layer: &[File("localetc/.wh.etc", "")],
        expect: Lands(&[C::File("etc/passwd", "all users"), C::Symlink("localetc", "/dne")]), differs: None },
    Case { name: "containerd TestBreakouts/WhiteoutRelativePath", upstream: "removes etc (`dne/..` cleaned away)",
        lower: &[Dir("etc"), File("etc/passwd", "all users"), Sym("localetc", "/dne")], layer: &[File("dne/../.wh.etc", "")],
        expect: Refused("`..` component refused"), differs: Some(DOTDOT) },
    Case { name: "containerd TestBreakouts/HardlinkSymlinkBeforeCreateTarget", upstream: "localpasswd-dup is the symlink localpasswd (same inode), which leads to etc/passwd",
        lower: &[], layer: &[Dir("etc"), Sym("localpasswd", "/etc/passwd"), Link("localpasswd-dup", "localpasswd"), File("/etc/passwd", "after")],
        expect: Lands(&[C::Symlink("localpasswd-dup", "/etc/passwd"), C::Same("localpasswd-dup", "localpasswd"), C::File("etc/passwd", "after")]), differs: None },
    Case { name: "containerd TestBreakouts/HardlinkSymlinkRelative", upstream: "localpasswd is the symlink passwdlink (same inode)",
        lower: &[], layer: &[Dir("etc"), File("/etc/passwd", "inside"), Sym("passwdlink", "../../../../../etc/passwd"), Link("localpasswd", "/passwdlink")],
        expect: Lands(&[C::Symlink("localpasswd", "../../../../../etc/passwd"), C::Same("localpasswd", "passwdlink")]), differs: None },
    Case { name: "containerd TestBreakouts/HardlinkSymlinkAbsolute", upstream: "localpasswd is the symlink passwdlink (same inode)",
        lower: &[], layer: &[Dir("etc"), File("/etc/passwd", "inside"), Sym("passwdlink", "/etc/passwd"), Link("localpasswd", "/passwdlink")],
        expect: Lands(&[C::Symlink("localpasswd", "/etc/passwd"), C::Same("localpasswd", "passwdlink")]), differs: None },
    Case { name: "containerd TestBreakouts/HardlinkSymlinkChmod", upstream: "no change outside the root (perm400 keeps mode 0400)",
        lower: &[], layer: &[Sym("{victim}/also-exists-outside-root", "{victim}/perm400"), Link("sketchylink", "{victim}/also-exists-outside-root")],
        expect: Lands(&[C::Same("sketchylink", "{victim}/also-exists-outside-root"), C::Symlink("sketchylink", "{victim}/perm400")]), differs: None },
    // containerd archive/tar_test.go TestApplyTar
    Case { name: "containerd TestApplyTar/DirectoryCreation", upstream: "every directory exists, missing parents made",
        lower: &[Dir("etc")], layer: &[Dir("/etc/subdir"), Dir("/etc/subdir2/"), Dir("/etc/subdir2/more"), Dir("/other/noparent-1/1"), Dir("/other/noparent-2/2/")],
        expect: Lands(&[C::Dir("etc/subdir"), C::Dir("etc/subdir2/more"), C::Dir("other/noparent-1/1"), C::Dir("other/noparent-2/2")]), differs: None },
    // umoci oci/layer/tar_extract_test.go
    Case { name: "umoci TestUnpackEntrySanitiseScoping/GarbagePrefix", upstream: "lands at file (`/..` clamped), the host file unchanged",
        lower: &[], layer: &[File("/../file", "container content")], expect: Refused("`..` component refused"), differs: Some(DOTDOT) },
    Case { name: "umoci TestUnpackEntrySanitiseScoping/DotDotPrefix", upstream: "lands at file (`..` clamped), the host file unchanged",
        lower: &[], layer: &[File("../file", "container content")], expect: Refused("`..` component refused"), differs: Some(DOTDOT) },
    Case { name: "umoci TestUnpackEntrySymlinkScoping/RootPrefix", upstream: "link -> /; link/file lands at file",
        lower: &[Sym("link", "/")], layer: &[File("link/file", "c")], expect: Lands(&[C::File("file", "c")]), differs: None },
    Case { name: "umoci TestUnpackEntrySymlinkScoping/GarbagePrefix1", upstream: "link -> /../; link/file lands at file",
        lower: &[Sym("link", "/../")], layer: &[File("link/file", "c")], expect: Lands(&[C::File("file", "c")]), differs: None },
    Case { name: "umoci TestUnpackEntrySymlinkScoping/GarbagePrefix2", upstream: "link -> /../../..(x15)/; link/file lands at file",
        lower: &[Sym("link", "/../../../../../../../../../../../../../../../")], layer: &[File("link/file", "c")], expect: Lands(&[C::File("file", "c")]), differs: None },
    Case { name: "umoci TestUnpackEntrySymlinkScoping/GarbagePrefix3", upstream: "link -> /./.././..(x9)/; link/file lands at file",
        lower: &[Sym("link", "/./.././.././.././.././.././.././.././.././../")], layer: &[File("link/file", "c")], expect: Lands(&[C::File("file", "c")]), differs: None },
    Case { name: "umoci TestUnpackEntrySymlinkScoping/DotDotPrefix", upstream: "link -> ..; link/file lands at file",
        lower: &[Sym("link", "..")], layer: &[File("link/file", "c")], expect: Lands(&[C::File("file", "c")]), differs: None },
    Case { name: "umoci TestUnpackEntrySymlinkScoping/DotDotPrefix in the same layer", upstream: "(umoci makes the link on disk first) link/file lands at file",
        lower: &[], layer: &[Sym("link", ".."), File("link/file", "c")], expect: Lands(&[C::File("file", "c"), C::Symlink("link", "..")]), differs: None },
    Case { name: "umoci TestUnpackEntryNonDirParent (umoci#546)", upstream: "nondir becomes a directory holding foo/bar/baz (containerd: ENOTDIR)",
        lower: &[], layer: &[File("nondir", "x"), File("nondir/foo/bar/baz", "y")],
        expect: Lands(&[C::Dir("nondir"), C::Dir("nondir/foo/bar"), C::File("nondir/foo/bar/baz", "y")]), differs: None },
    Case { name: "umoci TestUnpackEntryParentDir", upstream: "a/b/c/file with its parents made",
        lower: &[], layer: &[File("a/b/c/file", "creating parentdirs")], expect: Lands(&[C::File("a/b/c/file", "creating parentdirs")]), differs: None },
    Case { name: "umoci TestUnpackEntryWhiteout/EmptyWhiteoutName", upstream: "error (invalid whiteout)",
        lower: &[Dir("some/path")], layer: &[File("some/path/.wh.", "")], expect: Refused("whiteout of an invalid name"), differs: None },
    Case { name: "umoci TestUnpackEntryWhiteout/HiddenFileInSubdir", upstream: "the file goes, its directory stays",
        lower: &[File("another/path/.hiddenfile", "v")], layer: &[File("another/path/.wh..hiddenfile", "")],
        expect: Lands(&[C::Absent("another/path/.hiddenfile"), C::Dir("another/path")]), differs: None },
    Case { name: "umoci TestUnpackEntryWhiteout/HiddenDirInRoot", upstream: "the directory and everything below it go",
        lower: &[Dir(".hiddenroot"), File(".hiddenroot/file1", "v"), Dir(".hiddenroot/.subdir"), File(".hiddenroot/.subdir/file3", "v")],
        layer: &[File(".wh..hiddenroot", "")], expect: Lands(&[C::Absent(".hiddenroot")]), differs: None },
    Case { name: "umoci TestUnpackHardlink (absolute target)", upstream: "\"hard link\" -> /regular is regular's inode",
        lower: &[], layer: &[File("regular", "some content"), Link("hard link", "/regular"), Sym("link", "../../../regular")],
        expect: Lands(&[C::Same("hard link", "regular"), C::Symlink("link", "../../../regular")]), differs: None },
    Case { name: "umoci TestUnpackHardlink (`..` target)", upstream: "\"hard link to symlink\" -> ../../../link is link's inode",
        lower: &[], layer: &[File("regular", "some content"), Sym("link", "../../../regular"), Link("hard link to symlink", "../../../link")],
        expect: Refused("`..` component refused"), differs: Some(DOTDOT) },
    // moby pkg/archive/archive_test.go (testBreakout: an error, or nothing outside changed)
    Case { name: "moby TestUntarInvalidFilenames/dotdot", upstream: "error (breakout)",
        lower: &[], layer: &[File("../victim/dotdot", "x")], expect: Refused("`..` component refused"), differs: None },
    Case { name: "moby TestUntarInvalidFilenames/slash-dotdot", upstream: "error (breakout)",
        lower: &[], layer: &[File("/../victim/slash-dotdot", "x")], expect: Refused("`..` component refused"), differs: None },
    Case { name: "moby TestUntarHardlinkToSymlink", upstream: "no write outside; symlink2 is the symlink symlink1",
        lower: &[], layer: &[Sym("symlink1", "regfile"), Link("symlink2", "symlink1"), File("regfile", "")],
        expect: Lands(&[C::Same("symlink1", "symlink2"), C::Symlink("symlink2", "regfile")]), differs: None },
    Case { name: "moby TestUntarInvalidHardlink/dotdot", upstream: "error (breakout)",
        lower: &[], layer: &[Link("dotdot", "../victim/hello")], expect: Refused("`..` component refused"), differs: None },
    Case { name: "moby TestUntarInvalidHardlink/slash-dotdot", upstream: "error (breakout)",
        lower: &[], layer: &[Link("slash-dotdot", "/../victim/hello")], expect: Refused("`..` component refused"), differs: None },
    Case { name: "moby TestUntarInvalidHardlink/loophole-victim file", upstream: "error (breakout)",
        lower: &[], layer: &[Link("loophole-victim", "../victim"), File("loophole-victim/file", "x")], expect: Refused("`..` component refused"), differs: None },
    Case { name: "moby TestUntarInvalidSymlink/dotdot", upstream: "error (symlink target outside)",
        lower: &[], layer: &[Sym("dotdot", "../victim/hello")], expect: Lands(&[C::Symlink("dotdot", "../victim/hello")]),
        differs: Some("a symlink's target is data, kept as written (as containerd and umoci keep it): it is never followed when the tree is written, and in the booted system it resolves inside the new root") },
    Case { name: "moby TestUntarInvalidSymlink/loophole-victim file", upstream: "error (breakout)",
        lower: &[], layer: &[Sym("loophole-victim", "../victim"), File("loophole-victim/file", "x")],
        expect: Lands(&[C::File("victim/file", "x"), C::Symlink("loophole-victim", "../victim")]),
        differs: Some("resolved inside the image as containerd and umoci do: the file lands at the image's victim/file, nothing outside is written") },
    Case { name: "moby TestUntarInvalidSymlink/loophole-victim hardlink", upstream: "error (breakout)",
        lower: &[], layer: &[Sym("loophole-victim", "../victim"), Link("hardlink", "loophole-victim/hello")],
        expect: CheckoutError("hard link target loophole-victim/hello does not exist"), differs: None },
    Case { name: "moby TestUntarInvalidSymlink/removing victim directory", upstream: "no write outside",
        lower: &[], layer: &[Sym("loophole-victim", "../victim"), File("loophole-victim", "x")],
        expect: Lands(&[C::File("loophole-victim", "x")]), differs: None },
    Case { name: "moby TestUntarInvalidSymlink/symlink in the path", upstream: "error (breakout)",
        lower: &[], layer: &[Sym("dir/loophole", "../../victim"), File("dir/loophole/newdir/newfile", "x")],
        expect: Lands(&[C::File("victim/newdir/newfile", "x")]),
        differs: Some("resolved inside the image as containerd and umoci do: nothing outside is written") },
    // Replacing one kind by another across layers (umoci, overlayfs).
    Case { name: "umoci/overlayfs: a directory where a lower layer had a file", upstream: "umoci: the file is removed and the directory made; overlayfs shows the upper directory",
        lower: &[Dir("opt"), File("opt/app", "old")], layer: &[Dir("opt/app"), File("opt/app/x", "new")],
        expect: Lands(&[C::Dir("opt/app"), C::File("opt/app/x", "new")]), differs: None },
    Case { name: "umoci/overlayfs: an implied directory where a lower layer had a file", upstream: "umoci (#546): the file is replaced by a directory (containerd: ENOTDIR)",
        lower: &[Dir("opt"), File("opt/app", "old")], layer: &[File("opt/app/bin/x", "new")],
        expect: Lands(&[C::Dir("opt/app/bin"), C::File("opt/app/bin/x", "new")]), differs: None },
    Case { name: "umoci/overlayfs: a file where a lower layer had a directory", upstream: "the directory and its content are removed",
        lower: &[Dir("d"), File("d/x", "old")], layer: &[File("d", "new")],
        expect: Lands(&[C::File("d", "new"), C::Absent("d/x")]), differs: None },
    Case { name: "umoci/overlayfs: a symlink where a lower layer had a directory", upstream: "the directory is replaced; later entries go through the symlink",
        lower: &[Dir("usr/lib"), Dir("lib"), File("lib/x", "old")], layer: &[Sym("lib", "usr/lib"), File("lib/y", "new")],
        expect: Lands(&[C::Symlink("lib", "usr/lib"), C::File("usr/lib/y", "new"), C::Absent("usr/lib/x")]), differs: None },
    // hostctl's own hostile fixture (integration/tests/support/hostile.rs write_through_symlink_tar).
    Case { name: "hostile write_through_symlink_tar: etc -> /etc, then etc/cron.d/evil", upstream: "containerd and umoci: an error (the symlink loops: it names itself inside the root)",
        lower: &[], layer: &[Sym("etc", "/etc"), File("etc/cron.d/evil", "* * * * * root sh")],
        expect: CheckoutError("too many levels of symbolic links"), differs: None },
];

fn tar_of(entries: &[E], victim: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let (kind, name, link, data) = match *e {
            Dir(n) => (tar::EntryType::Directory, n, "", ""),
            File(n, d) => (tar::EntryType::Regular, n, "", d),
            Sym(n, t) => (tar::EntryType::Symlink, n, t, ""),
            Link(n, t) => (tar::EntryType::Link, n, t, ""),
        };
        let (name, link) = (name.replace("{victim}", victim), link.replace("{victim}", victim));
        b.append(&raw_header(kind, &name, &link, data.len() as u64), data.as_bytes()).unwrap();
    }
    b.into_inner().unwrap()
}

fn import(store: &Store, tar: &[u8]) -> anyhow::Result<LayerIndex> {
    let spec = LayerSpec {
        blob_digest: Digest::of(tar),
        size: tar.len() as u64,
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        diff_id: Digest::of(tar),
    };
    store.import_layer(&spec, &mut &tar[..], &mut |_| {})
}

/// Every path under `dir` with its kind, mode, size and content or target.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in walkdir(dir) {
        let m = std::fs::symlink_metadata(&e).unwrap();
        let what = if m.is_symlink() {
            format!("l {}", std::fs::read_link(&e).unwrap().display())
        } else if m.is_file() {
            format!("f {:o} {:?}", m.permissions().mode(), std::fs::read(&e).unwrap())
        } else {
            format!("d {:o}", m.permissions().mode())
        };
        out.insert(e.strip_prefix(dir).unwrap().display().to_string(), what);
    }
    out
}

fn walkdir(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.clone());
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            out.extend(walkdir(&p));
        }
    }
    out
}

fn ino(root: &Path, path: &str) -> u64 {
    std::fs::symlink_metadata(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}")).ino()
}

/// Runs one case; returns what went wrong, if anything.
fn run(case: &Case) -> Result<(), String> {
    let work = tempfile::tempdir().unwrap();
    let victim = work.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::write(victim.join("hello"), "host content").unwrap();
    std::fs::write(victim.join("perm400"), "...").unwrap();
    std::fs::set_permissions(victim.join("perm400"), std::fs::Permissions::from_mode(0o400)).unwrap();
    std::fs::write(victim.join("also-exists-outside-root"), "...").unwrap();
    let before = snapshot(work.path());
    let victim_abs = victim.to_str().unwrap().to_string();
    let victim_rel = victim_abs.trim_start_matches('/').to_string();

    let store = Store::open_dir(&work.path().join("repo")).unwrap();
    let mut layers = Vec::new();
    let mut outcome = Ok(());
    for (i, entries) in [case.lower, case.layer].iter().enumerate() {
        if entries.is_empty() {
            continue;
        }
        match import(&store, &tar_of(entries, &victim_abs)) {
            Ok(l) => layers.push(l),
            Err(e) if i == 0 => return Err(format!("the lower layer was refused: {e:#}")),
            Err(e) => {
                outcome = Err(("import", format!("{e:#}")));
                break;
            }
        }
    }
    let dest = work.path().join("root");
    if outcome.is_ok() {
        if let Err(e) = checkout(&store, &layers, &dest, &CheckoutOptions::default()) {
            outcome = Err(("checkout", format!("{e:#}")));
        }
    }
    // Nothing outside the checkout and the store changed, whatever happened.
    let mut after = snapshot(work.path());
    after.retain(|k, _| !k.starts_with("repo") && !k.starts_with("root"));
    let mut before = before;
    before.retain(|k, _| !k.starts_with("repo"));
    if after != before {
        return Err(format!("the world outside the root changed: {before:#?} -> {after:#?}"));
    }
    let sub = |p: &str| p.replace("{victim}", &victim_rel);
    match (case.expect, outcome) {
        (Lands(checks), Ok(())) => {
            for c in checks {
                let ok = match *c {
                    C::File(p, want) => {
                        std::fs::symlink_metadata(dest.join(sub(p))).is_ok_and(|m| m.is_file())
                            && std::fs::read(dest.join(sub(p))).unwrap() == want.as_bytes()
                    }
                    C::Dir(p) => std::fs::symlink_metadata(dest.join(sub(p))).is_ok_and(|m| m.is_dir()),
                    C::Symlink(p, t) => std::fs::read_link(dest.join(sub(p)))
                        .is_ok_and(|got| got.to_str() == Some(&t.replace("{victim}", &victim_abs))),
                    C::Same(a, b) => ino(&dest, &sub(a)) == ino(&dest, &sub(b)),
                    C::NotSame(a, b) => ino(&dest, &sub(a)) != ino(&dest, &sub(b)),
                    C::Absent(p) => std::fs::symlink_metadata(dest.join(sub(p))).is_err(),
                };
                if !ok {
                    return Err(format!("{c:?} does not hold in {:#?}", snapshot(&dest)));
                }
            }
            Ok(())
        }
        (Refused(needle), Err(("import", e))) | (CheckoutError(needle), Err(("checkout", e))) if e.contains(needle) => {
            if dest.exists() {
                return Err("a refused image left a partial root".into());
            }
            Ok(())
        }
        (want, got) => Err(format!("expected {want:?}, got {got:?}")),
    }
}

#[test]
fn layer_tars_read_as_containerd_umoci_and_moby_read_them() {
    let mut failures = Vec::new();
    for case in CASES {
        if let Err(e) = run(case) {
            failures.push(format!(
                "{}\n  upstream: {}\n  hostctl differs: {}\n  {e}",
                case.name,
                case.upstream,
                case.differs.unwrap_or("no")
            ));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), CASES.len(), failures.join("\n"));
    // Every deliberate difference is stated, and only where the row's result
    // is not upstream's: a refused row whose upstream succeeds says why.
    for case in CASES {
        let upstream_errs = case.upstream.starts_with("error") || case.upstream.contains("an error");
        let hostctl_errs = !matches!(case.expect, Lands(_));
        if upstream_errs != hostctl_errs {
            assert!(case.differs.is_some(), "{}: differs from upstream without a reason", case.name);
        }
    }
}
