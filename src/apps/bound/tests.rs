//! Unit tests of bound images: bootc's rules for reading the links (as a
//! table), the pull-and-pin hook and the image cleanup, with the fake podman.

use std::os::unix::fs::symlink;

use super::*;
use crate::host::podman::{fake_image, FakePodman};

const HOSTCTL: &str = BOUND_DIRS[0];
const BOOTC: &str = BOUND_DIRS[1];

/// A tree with `files` (path, text) and `links` (dir, name, target).
fn tree(files: &[(&str, &str)], links: &[(&str, &str, &str)]) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    for (p, text) in files {
        let p = t.path().join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    for (dir, name, target) in links {
        std::fs::create_dir_all(t.path().join(dir)).unwrap();
        symlink(target, t.path().join(dir).join(name)).unwrap();
    }
    t
}

/// bootc's `query_bound_images` cases (crates/lib/src/boundimage.rs tests),
/// with bootc's expectation beside each, and where hostctl differs, why.
#[test]
fn bound_links_follow_bootcs_rules() {
    let web = (concat!("usr/share/containers/systemd/", "web.container"), "[Container]\nImage=quay.io/a/web:1\n");
    let db = (concat!("usr/share/containers/systemd/", "db.image"), "[Image]\nImage=quay.io/a/db:16\n");
    type Case<'a> =
        (&'a str, Vec<(&'a str, &'a str)>, Vec<(&'a str, &'a str, &'a str)>, Result<Vec<(&'a str, &'a str)>, &'a str>);
    let cases: Vec<Case> = vec![
        // bootc: no directory, or an empty one: no images.
        ("no directory", vec![], vec![], Ok(vec![])),
        // bootc: an absolute link to a .image, another to a .container: both, by Image=.
        (
            "absolute links",
            vec![web, db],
            vec![
                (HOSTCTL, "db.image", "/usr/share/containers/systemd/db.image"),
                (HOSTCTL, "web.container", "/usr/share/containers/systemd/web.container"),
            ],
            Ok(vec![("db.image", "quay.io/a/db:16"), ("web.container", "quay.io/a/web:1")]),
        ),
        // hostctl: relative links resolve from the link's directory (bootc reads them the same way).
        (
            "relative link in bootc's directory",
            vec![web],
            vec![(BOOTC, "web.container", "../../../share/containers/systemd/web.container")],
            Ok(vec![("web.container", "quay.io/a/web:1")]),
        ),
        // hostctl: the same unit linked from both directories counts once.
        (
            "linked from both directories",
            vec![web],
            vec![
                (HOSTCTL, "web.container", "/usr/share/containers/systemd/web.container"),
                (BOOTC, "web.container", "/usr/share/containers/systemd/web.container"),
            ],
            Ok(vec![("web.container", "quay.io/a/web:1")]),
        ),
        // bootc: a link that leads nowhere is an error.
        ("dangling link", vec![], vec![(HOSTCTL, "blah.image", "./blah")], Err("blah.image")),
        // bootc: "Not a symlink".
        (
            "regular file",
            vec![("usr/lib/hostctl/bound-images.d/web.container", web.1)],
            vec![],
            Err("not a symbolic link"),
        ),
        // bootc: "Invalid file extension".
        (
            "other extension",
            vec![("usr/share/containers/systemd/web.volume", "[Volume]\n")],
            vec![(HOSTCTL, "web.volume", "/usr/share/containers/systemd/web.volume")],
            Err(".container or .image"),
        ),
        // bootc: "Missing Image field".
        (
            "no Image=",
            vec![("error.image", "[Image]\n")],
            vec![(HOSTCTL, "error.image", "/error.image")],
            Err("no Image="),
        ),
        // bootc: "AuthFile is not supported by bound bootc images".
        (
            "AuthFile=",
            vec![("a.image", "[Image]\nImage=quay.io/a/a:1\nAuthFile=/x\n")],
            vec![(HOSTCTL, "a.image", "/a.image")],
            Err("AuthFile"),
        ),
        // bootc: specifiers are refused.
        (
            "specifier",
            vec![("a.image", "[Image]\nImage=quay.io/foo/%foo:latest\n")],
            vec![(HOSTCTL, "a.image", "/a.image")],
            Err("specifier"),
        ),
        // bootc: "%%" is a "%" (here the result is not a valid reference, which the pull would say).
        (
            "%% is %",
            vec![("a.image", "[Image]\nImage=quay.io/foo/%%foo:latest\n")],
            vec![(HOSTCTL, "a.image", "/a.image")],
            Ok(vec![("a.image", "quay.io/foo/%foo:latest")]),
        ),
        // hostctl (bootc would try to pull "db.image"): a .container that uses a .image unit is refused with what to do.
        (
            "Image= names a .image",
            vec![("w.container", "[Container]\nImage=db.image\n")],
            vec![(HOSTCTL, "w.container", "/w.container")],
            Err("bind that .image"),
        ),
        // hostctl (bootc passes it to podman): a short name is refused; no terminal can answer podman's question.
        (
            "short name",
            vec![("w.container", "[Container]\nImage=web:1\n")],
            vec![(HOSTCTL, "w.container", "/w.container")],
            Err("must name its registry"),
        ),
        // hostctl: the same name in both directories with different images.
        (
            "two different units of one name",
            vec![web, ("other/web.container", "[Container]\nImage=quay.io/b/web:2\n")],
            vec![
                (HOSTCTL, "web.container", "/usr/share/containers/systemd/web.container"),
                (BOOTC, "web.container", "/other/web.container"),
            ],
            Err("bound twice"),
        ),
    ];
    for (what, files, links, expect) in cases {
        let t = tree(&files, &links);
        match (scan(t.path()), expect) {
            (Ok(got), Ok(want)) => {
                let got: Vec<(String, String)> = got.into_iter().map(|b| (b.unit, b.image)).collect();
                let want: Vec<(String, String)> = want.iter().map(|(u, i)| (u.to_string(), i.to_string())).collect();
                assert_eq!(got, want, "{what}");
            }
            (Err(e), Err(want)) => assert!(format!("{e:#}").contains(want), "{what}: {e:#}"),
            (got, want) => panic!("{what}: got {got:?}, expected {want:?}"),
        }
    }
}

#[test]
fn pinned_references() {
    for (image, pinned) in [
        ("quay.io/a/web:1", "quay.io/a/web@sha256:d"),
        ("quay.io/a/web", "quay.io/a/web@sha256:d"),
        ("127.0.0.1:5000/a/web:stable", "127.0.0.1:5000/a/web@sha256:d"),
        ("127.0.0.1:5000/a/web", "127.0.0.1:5000/a/web@sha256:d"),
        ("quay.io/a/web:1@sha256:d", "quay.io/a/web@sha256:d"),
    ] {
        assert_eq!(pinned_reference(image, "sha256:d"), pinned, "{image}");
    }
}

fn web_tree() -> tempfile::TempDir {
    tree(
        &[
            ("usr/share/containers/systemd/web.container", "[Container]\nImage=reg.example/apps/web:stable\n"),
            ("usr/share/containers/systemd/db.image", "[Image]\nImage=reg.example/apps/db:16\n"),
        ],
        &[
            (HOSTCTL, "web.container", "/usr/share/containers/systemd/web.container"),
            (BOOTC, "db.image", "/usr/share/containers/systemd/db.image"),
        ],
    )
}

fn hook<'a>(podman: &'a FakePodman, state: &Path) -> BoundImagesHook<'a> {
    BoundImagesHook { podman, pull: PullSettings::default(), state_dir: state.to_path_buf() }
}

#[test]
fn staging_pulls_every_bound_image_and_pins_it_by_digest() {
    let (t, state) = (web_tree(), tempfile::tempdir().unwrap());
    let podman = FakePodman::new();
    {
        let mut st = podman.state.lock().unwrap();
        st.registry.insert("reg.example/apps/web:stable".into(), fake_image("w1", "sha256:aa"));
        st.registry.insert("reg.example/apps/db:16".into(), fake_image("d1", "sha256:bb"));
    }
    let got = hook(&podman, state.path()).pin_tree(t.path()).unwrap();
    assert_eq!(
        podman.calls(),
        [
            "pull reg.example/apps/web:stable",
            "pull reg.example/apps/web@sha256:aa",
            "pull reg.example/apps/db:16",
            "pull reg.example/apps/db@sha256:bb"
        ]
    );
    let pin =
        std::fs::read_to_string(t.path().join(format!("usr/etc/containers/systemd/web.container.d/{PIN_DROPIN}")))
            .unwrap();
    assert!(pin.contains("[Container]\nImage=reg.example/apps/web@sha256:aa\n"), "{pin}");
    let pin =
        std::fs::read_to_string(t.path().join(format!("usr/etc/containers/systemd/db.image.d/{PIN_DROPIN}"))).unwrap();
    assert!(
        pin.contains(
            "[Image]\nImage=reg.example/apps/db@sha256:bb\n\n\
             [Service]\nExecCondition=/bin/sh -c '! podman image exists reg.example/apps/db@sha256:bb'\n"
        ),
        "{pin}"
    );
    assert_eq!(read_bound_images(t.path()).unwrap(), got);
    assert_eq!(got[0].pinned, "reg.example/apps/web@sha256:aa");
    let ledger = PulledLedger::load(state.path()).unwrap();
    assert_eq!(
        ledger.pulled.into_iter().collect::<Vec<_>>(),
        ["reg.example/apps/db@sha256:bb", "reg.example/apps/web@sha256:aa"]
    );

    // The tag moves on: a new deployment gets the new digest; the old tree keeps its own.
    let t2 = web_tree();
    podman.state.lock().unwrap().registry.insert("reg.example/apps/web:stable".into(), fake_image("w2", "sha256:cc"));
    hook(&podman, state.path()).pin_tree(t2.path()).unwrap();
    assert_eq!(read_bound_images(t2.path()).unwrap()[0].digest, "sha256:cc");
    assert_eq!(read_bound_images(t.path()).unwrap()[0].digest, "sha256:aa");
}

#[test]
fn a_bound_image_refused_or_missing_fails_the_staging_and_pins_nothing() {
    let state = tempfile::tempdir().unwrap();
    let web = || ("reg.example/apps/web:stable".to_string(), fake_image("w1", "sha256:aa"));
    // Refused by the trust policy: exit code 4, as for the OS.
    let (t, podman) = (web_tree(), FakePodman::new());
    {
        let mut st = podman.state.lock().unwrap();
        st.registry.extend([web()]);
        st.pull_errors.insert(
            "reg.example/apps/db:16".into(),
            "Error: Source image rejected: A signature was required, but no signature exists".into(),
        );
    }
    let e = hook(&podman, state.path()).pin_tree(t.path()).unwrap_err();
    assert_eq!(crate::error::exit_code(&e), crate::error::code::REJECTED, "{e:#}");
    assert!(format!("{e:#}").contains("db.image"), "{e:#}");
    assert!(!t.path().join("usr/etc").exists(), "nothing pinned");
    // Does not exist: exit 1.
    let (t, podman) = (web_tree(), FakePodman::new());
    podman.state.lock().unwrap().registry.extend([web()]);
    let e = hook(&podman, state.path()).pin_tree(t.path()).unwrap_err();
    assert_eq!(crate::error::exit_code(&e), crate::error::code::FAILURE);
    assert!(format!("{e:#}").contains("manifest unknown"), "{e:#}");
    assert!(read_bound_images(t.path()).unwrap().is_empty());
    // What was pulled before the failure is in the ledger, for cleanup.
    assert!(PulledLedger::load(state.path()).unwrap().pulled.contains("reg.example/apps/web@sha256:aa"));
}

#[test]
fn a_tree_without_bound_images_calls_no_podman() {
    let (t, state, podman) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), FakePodman::new());
    assert!(hook(&podman, state.path()).pin_tree(t.path()).unwrap().is_empty());
    assert!(podman.calls().is_empty());
    assert!(!t.path().join(BOUND_IMAGES_RECORD).exists());
}

#[test]
fn cleanup_removes_only_bound_images_nothing_uses() {
    let state = tempfile::tempdir().unwrap();
    let podman = FakePodman::new();
    {
        let mut st = podman.state.lock().unwrap();
        for (r, id, d) in [
            ("reg/web@sha256:old", "w1", "sha256:old"),
            ("reg/web@sha256:new", "w2", "sha256:new"),
            ("reg/app@sha256:a", "a1", "sha256:a"),
            ("reg/gone@sha256:g", "g1", "sha256:g"),
            ("reg/mine:1", "m1", "sha256:m"),
        ] {
            st.images.insert(r.into(), fake_image(id, d));
            st.images.insert(id.into(), fake_image(id, d));
        }
        // An installed app runs reg/app, which a removed deployment had bound too.
        st.images.insert("reg/app:1".into(), fake_image("a1", "sha256:a"));
        // Someone else's container runs the image of reg/gone.
        st.containers.insert("theirs".into(), crate::apps::testing::container("theirs", "g1", "running"));
    }
    PulledLedger {
        pulled: [
            "reg/web@sha256:old",
            "reg/web@sha256:new",
            "reg/app@sha256:a",
            "reg/gone@sha256:g",
            "reg/vanished@sha256:v",
        ]
        .map(String::from)
        .into(),
    }
    .save(state.path())
    .unwrap();
    let kept_tree = tree(&[], &[]);
    write_pins(
        kept_tree.path(),
        &[BoundImage {
            unit: "web.container".into(),
            image: "reg/web:s".into(),
            digest: "sha256:new".into(),
            pinned: "reg/web@sha256:new".into(),
        }],
    )
    .unwrap();
    let r = cleanup_images(&podman, state.path(), &[kept_tree.path().to_path_buf()], &["reg/app:1".into()]).unwrap();
    assert_eq!(r.removed, ["reg/web@sha256:old"]);
    assert_eq!(r.kept.len(), 1, "{:?}", r.kept);
    assert!(r.kept[0].contains("reg/gone") && r.kept[0].contains("container"), "{:?}", r.kept);
    assert_eq!(podman.calls(), ["rmi w1"]);
    let left = PulledLedger::load(state.path()).unwrap().pulled;
    assert_eq!(left.into_iter().collect::<Vec<_>>(), ["reg/app@sha256:a", "reg/gone@sha256:g", "reg/web@sha256:new"]);
    // Nothing pulled as a bound image: podman is not even asked.
    let (empty, podman2) = (tempfile::tempdir().unwrap(), FakePodman::new());
    assert_eq!(cleanup_images(&podman2, empty.path(), &[], &[]).unwrap(), ImageCleanup::default());
}
