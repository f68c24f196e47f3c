//! The reference parser against distribution/reference's own test tables
//! (`reference_test.go`, `normalize_test.go`, `regexp_test.go`), row by row,
//! with upstream's expectation beside hostctl's and the reason wherever the
//! two differ on purpose; then hostctl's transport prefixes, and round trips.
//!
//! hostctl always normalises as upstream's `ParseNormalizedNamed` does (a
//! name without a host is on docker.io, a single component there gains
//! `library/`) and, as `ParseDockerRef`, fills in `latest` when a reference
//! has neither tag nor digest.

use super::*;

/// What distribution/reference says of an input.
#[derive(Debug)]
enum Up {
    /// Accepted; the name upstream's test gives ("" where it gives none).
    V(String),
    /// Refused with this error.
    X(&'static str),
}
use Up::X;

impl std::fmt::Display for Up {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Up::V(name) => write!(f, "valid {name:?}"),
            Up::X(err) => write!(f, "refused ({err})"),
        }
    }
}

fn v(name: impl Into<String>) -> Up {
    Up::V(name.into())
}

/// Which part of a reference an error blames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Empty,
    Transport,
    Path,
    NoName,
    NoRepository,
    ImageId,
    Host,
    Repository,
    Tag,
    Digest,
    Unsupported,
}

fn part(e: &RefError) -> Part {
    match e {
        RefError::Empty => Part::Empty,
        RefError::UnknownTransport(_) => Part::Transport,
        RefError::MissingPath { .. } => Part::Path,
        RefError::NoName(_) => Part::NoName,
        RefError::MissingRepository(_) => Part::NoRepository,
        RefError::ImageId(_) => Part::ImageId,
        RefError::BadHost { .. } => Part::Host,
        RefError::BadRepository { .. } => Part::Repository,
        RefError::BadTag(_) => Part::Tag,
        RefError::MalformedDigest(_) | RefError::BadDigest(_) => Part::Digest,
        RefError::UnsupportedDigest(_) => Part::Unsupported,
    }
}

/// What hostctl does with it.
#[derive(Debug)]
enum Want {
    /// Parses to the reference that displays so.
    Is(String),
    /// Refuses it, blaming this part, with an error message containing the text.
    No(Part, &'static str),
}

fn is(s: impl Into<String>) -> Want {
    Want::Is(s.into())
}

fn no(p: Part, names: &'static str) -> Want {
    Want::No(p, names)
}

struct Row {
    input: String,
    up: Up,
    want: Want,
    /// Why hostctl differs from upstream here; "" where it agrees.
    why: &'static str,
}

fn r(input: impl Into<String>, up: Up, want: Want, why: &'static str) -> Row {
    Row { input: input.into(), up, want, why }
}

/// How a table's upstream names compare with hostctl's references.
#[derive(PartialEq)]
enum Names {
    /// `Parse`'s names, not normalised: compared through the `Want` column only.
    Parse,
    /// Normalised names (`ParseNormalizedNamed`, `ParseDockerRef`): hostctl's
    /// reference is the name, plus a tag or digest the name leaves out.
    Normalised,
}

fn check(table: &str, names: Names, rows: Vec<Row>) {
    let mut failures = Vec::new();
    for row in &rows {
        let got = row.input.parse::<ImageRef>();
        let matches = match (&row.want, &got) {
            (Want::Is(s), Ok(r)) => r.to_string() == *s,
            (Want::No(p, text), Err(e)) => part(e) == *p && e.to_string().contains(text),
            _ => false,
        };
        if !matches {
            let got = got.as_ref().map(ToString::to_string).map_err(|e| format!("{:?}: {e}", part(e)));
            failures.push(format!("{:?}: want {:?}, got {got:?}", row.input, row.want));
        }
        if row.why.is_empty() {
            let agree = matches!(row.up, Up::V(_)) == matches!(row.want, Want::Is(_));
            if !agree {
                failures.push(format!("{:?}: upstream {}, hostctl {:?}, and no reason", row.input, row.up, row.want));
            }
            if let (Names::Normalised, Up::V(name), Want::Is(s)) = (&names, &row.up, &row.want) {
                let same = s == name || s.starts_with(&format!("{name}:")) || s.starts_with(&format!("{name}@"));
                if !name.is_empty() && !same {
                    failures.push(format!("{:?}: upstream names it {name}, hostctl {s}, and no reason", row.input));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{table}:\n{}", failures.join("\n"));
}

const F64: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
const IMAGE_ID: &str = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a";

fn ff(n: usize) -> String {
    "f".repeat(n)
}

#[test]
fn reference_test_go_test_reference_parse() {
    use Part::*;
    let d = format!("sha256:{F64}");
    let a255 = "a".repeat(255);
    check(
        "TestReferenceParse",
        Names::Parse,
        vec![
            r("test_com", v("test_com"), is("docker.io/library/test_com:latest"), ""),
            r("test.com:tag", v("test.com"), is("docker.io/library/test.com:tag"), ""),
            r("test.com:5000", v("test.com"), is("docker.io/library/test.com:5000"), ""),
            r("test.com/repo:tag", v("test.com/repo"), is("test.com/repo:tag"), ""),
            r("test:5000/repo", v("test:5000/repo"), is("test:5000/repo:latest"), ""),
            r("test:5000/repo:tag", v("test:5000/repo"), is("test:5000/repo:tag"), ""),
            r(format!("test:5000/repo@{d}"), v("test:5000/repo"), is(format!("test:5000/repo@{d}")), ""),
            r(format!("test:5000/repo:tag@{d}"), v("test:5000/repo"), is(format!("test:5000/repo:tag@{d}")), ""),
            r("", X("ErrNameEmpty"), no(Empty, "empty"), ""),
            r(":justtag", X("ErrReferenceInvalidFormat"), no(NoName, ":justtag"), ""),
            r(format!("@{d}"), X("ErrReferenceInvalidFormat"), no(NoName, "has no repository name"), ""),
            r(format!("repo@sha256:{}", ff(34)), X("ErrDigestInvalidLength"), no(Digest, "64"), ""),
            r(
                format!("validname@invaliddigest:{F64}"),
                X("ErrDigestUnsupported"),
                no(Unsupported, "invaliddigest"),
                "",
            ),
            r(
                format!("validname@sha512:{}", ff(128)),
                X("ErrDigestUnsupported"),
                no(Unsupported, "\"sha512\" is not supported"),
                "",
            ),
            r("Uppercase:tag", X("ErrNameContainsUppercase"), no(Repository, "\"Uppercase\" has uppercase"), ""),
            r("test:5000/Uppercase/lowercase:tag", X("ErrNameContainsUppercase"), no(Repository, "\"Uppercase\""), ""),
            r("lowercase:Uppercase", v("lowercase"), is("docker.io/library/lowercase:Uppercase"), ""),
            r(format!("domain/{}:tag", "a".repeat(256)), X("ErrNameTooLong"), no(Repository, "the limit is 255"), ""),
            // Upstream's Parse takes `a` as the host; normalised it is not one,
            // and the path is then exactly 255 characters.
            r(
                format!("{}a:tag-puts-this-over-max", "a/".repeat(127)),
                v(""),
                is(format!("docker.io/{}a:tag-puts-this-over-max", "a/".repeat(127))),
                "",
            ),
            r("aa/asdf$$^/aa", X("ErrReferenceInvalidFormat"), no(Repository, "\"asdf$$^\" holds '$'"), ""),
            r(
                "sub-dom1.foo.com/bar/baz/quux",
                v("sub-dom1.foo.com/bar/baz/quux"),
                is("sub-dom1.foo.com/bar/baz/quux:latest"),
                "",
            ),
            r(
                "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
                v("sub-dom1.foo.com/bar/baz/quux"),
                is("sub-dom1.foo.com/bar/baz/quux:some-long-tag"),
                "",
            ),
            r(
                "b.gcr.io/test.example.com/my-app:test.example.com",
                v("b.gcr.io/test.example.com/my-app"),
                is("b.gcr.io/test.example.com/my-app:test.example.com"),
                "",
            ),
            r("xn--n3h.com/myimage:xn--n3h.com", v("xn--n3h.com/myimage"), is("xn--n3h.com/myimage:xn--n3h.com"), ""),
            r(
                format!("xn--7o8h.com/myimage:xn--7o8h.com@{d}"),
                v("xn--7o8h.com/myimage"),
                is(format!("xn--7o8h.com/myimage:xn--7o8h.com@{d}")),
                "",
            ),
            r("foo_bar.com:8080", v("foo_bar.com"), is("docker.io/library/foo_bar.com:8080"), ""),
            r("foo/foo_bar.com:8080", v("foo/foo_bar.com"), is("docker.io/foo/foo_bar.com:8080"), ""),
            r("192.168.1.1", v("192.168.1.1"), is("docker.io/library/192.168.1.1:latest"), ""),
            r("192.168.1.1:tag", v("192.168.1.1"), is("docker.io/library/192.168.1.1:tag"), ""),
            r("192.168.1.1:5000", v("192.168.1.1"), is("docker.io/library/192.168.1.1:5000"), ""),
            r("192.168.1.1/repo", v("192.168.1.1/repo"), is("192.168.1.1/repo:latest"), ""),
            r("192.168.1.1:5000/repo", v("192.168.1.1:5000/repo"), is("192.168.1.1:5000/repo:latest"), ""),
            r("192.168.1.1:5000/repo:5050", v("192.168.1.1:5000/repo"), is("192.168.1.1:5000/repo:5050"), ""),
            r("[2001:db8::1]", X("ErrReferenceInvalidFormat"), no(NoRepository, "[2001:db8::1]"), ""),
            r("[2001:db8::1]:5000", X("ErrReferenceInvalidFormat"), no(NoRepository, "[2001:db8::1]:5000"), ""),
            r("[2001:db8::1]:tag", X("ErrReferenceInvalidFormat"), no(NoRepository, "[2001:db8::1]:tag"), ""),
            r("[2001:db8::1]/repo", v("[2001:db8::1]/repo"), is("[2001:db8::1]/repo:latest"), ""),
            r(
                "[2001:db8:1:2:3:4:5:6]/repo:tag",
                v("[2001:db8:1:2:3:4:5:6]/repo"),
                is("[2001:db8:1:2:3:4:5:6]/repo:tag"),
                "",
            ),
            r("[2001:db8::1]:5000/repo", v("[2001:db8::1]:5000/repo"), is("[2001:db8::1]:5000/repo:latest"), ""),
            r("[2001:db8::1]:5000/repo:tag", v("[2001:db8::1]:5000/repo"), is("[2001:db8::1]:5000/repo:tag"), ""),
            r(
                format!("[2001:db8::1]:5000/repo@{d}"),
                v("[2001:db8::1]:5000/repo"),
                is(format!("[2001:db8::1]:5000/repo@{d}")),
                "",
            ),
            r(
                format!("[2001:db8::1]:5000/repo:tag@{d}"),
                v("[2001:db8::1]:5000/repo"),
                is(format!("[2001:db8::1]:5000/repo:tag@{d}")),
                "",
            ),
            r("[2001:db8::]:5000/repo", v("[2001:db8::]:5000/repo"), is("[2001:db8::]:5000/repo:latest"), ""),
            r("[::1]:5000/repo", v("[::1]:5000/repo"), is("[::1]:5000/repo:latest"), ""),
            r("[fe80::1%eth0]:5000/repo", X("ErrReferenceInvalidFormat"), no(Host, "zone index \"%eth0\""), ""),
            // The `@` starts the digest, so what follows it is blamed.
            r(
                "[fe80::1%@invalidzone]:5000/repo",
                X("ErrReferenceInvalidFormat"),
                no(Digest, "invalidzone]:5000/repo"),
                "",
            ),
            r(format!("example.com/{a255}:tag"), v(""), is(format!("example.com/{a255}:tag")), ""),
        ],
    );
}

#[test]
fn normalize_test_go_test_validate_reference_name_and_remote_name() {
    use Part::*;
    let song = "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev";
    let long_namespace = "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255/docker";
    check(
        "TestValidateReferenceName, TestValidateRemoteName",
        Names::Normalised,
        vec![
            // TestValidateReferenceName: validRepoNames.
            r("docker/docker", v(""), is("docker.io/docker/docker:latest"), ""),
            r("library/debian", v(""), is("docker.io/library/debian:latest"), ""),
            r("debian", v(""), is("docker.io/library/debian:latest"), ""),
            r("localhost/library/debian", v(""), is("localhost/library/debian:latest"), ""),
            r("localhost/debian", v(""), is("localhost/debian:latest"), ""),
            r("LOCALDOMAIN/library/debian", v(""), is("LOCALDOMAIN/library/debian:latest"), ""),
            r("LOCALDOMAIN/debian", v(""), is("LOCALDOMAIN/debian:latest"), ""),
            r("docker.io/docker/docker", v(""), is("docker.io/docker/docker:latest"), ""),
            r("docker.io/library/debian", v(""), is("docker.io/library/debian:latest"), ""),
            r("docker.io/debian", v(""), is("docker.io/library/debian:latest"), ""),
            r("index.docker.io/docker/docker", v(""), is("docker.io/docker/docker:latest"), ""),
            r("index.docker.io/library/debian", v(""), is("docker.io/library/debian:latest"), ""),
            r("index.docker.io/debian", v(""), is("docker.io/library/debian:latest"), ""),
            r("127.0.0.1:5000/docker/docker", v(""), is("127.0.0.1:5000/docker/docker:latest"), ""),
            r("127.0.0.1:5000/library/debian", v(""), is("127.0.0.1:5000/library/debian:latest"), ""),
            r("127.0.0.1:5000/debian", v(""), is("127.0.0.1:5000/debian:latest"), ""),
            r("192.168.0.1", v(""), is("docker.io/library/192.168.0.1:latest"), ""),
            r("192.168.0.1:80", v(""), is("docker.io/library/192.168.0.1:80"), ""),
            r("192.168.0.1:8/debian", v(""), is("192.168.0.1:8/debian:latest"), ""),
            r("192.168.0.2:25000/debian", v(""), is("192.168.0.2:25000/debian:latest"), ""),
            r(song, v(""), is(format!("docker.io/library/{song}:latest")), ""),
            r("[fc00::1]:5000/docker", v(""), is("[fc00::1]:5000/docker:latest"), ""),
            r("[fc00::1]:5000/docker/docker", v(""), is("[fc00::1]:5000/docker/docker:latest"), ""),
            r(
                "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
                v(""),
                is("[fc00:1:2:3:4:5:6:7]:5000/library/debian:latest"),
                "",
            ),
            r(format!("docker.io/{IMAGE_ID}"), v(""), is(format!("docker.io/library/{IMAGE_ID}:latest")), ""),
            r("Docker/docker", v(""), is("Docker/docker:latest"), ""),
            r("DOCKER/docker", v(""), is("DOCKER/docker:latest"), ""),
            // TestValidateReferenceName: invalidRepoNames.
            r("https://github.com/docker/docker", X("invalid"), no(Transport, "\"https\""), ""),
            r("docker/Docker", X("invalid"), no(Repository, "\"Docker\" has uppercase"), ""),
            r("-docker", X("invalid"), no(Repository, "\"-docker\" must start and end"), ""),
            r("-docker/docker", X("invalid"), no(Repository, "\"-docker\""), ""),
            r("-docker.io/docker/docker", X("invalid"), no(Host, "label \"-docker\" starts or ends with '-'"), ""),
            r("docker///docker", X("invalid"), no(Repository, "empty"), ""),
            r("docker.io/docker/Docker", X("invalid"), no(Repository, "\"Docker\""), ""),
            r("docker.io/docker///docker", X("invalid"), no(Repository, "empty"), ""),
            r("[fc00::1]", X("invalid"), no(NoRepository, "[fc00::1]"), ""),
            r("[fc00::1]:5000", X("invalid"), no(NoRepository, "[fc00::1]:5000"), ""),
            r("fc00::1:5000/debian", X("invalid"), no(Host, "in brackets"), ""),
            r("[fe80::1%eth0]:5000/debian", X("invalid"), no(Host, "\"%eth0\""), ""),
            r("[2001:db8:3:4::192.0.2.33]:5000/debian", X("invalid"), no(Host, "holds '.'"), ""),
            r(IMAGE_ID, X("cannot specify 64-byte hexadecimal strings"), no(ImageId, IMAGE_ID), ""),
            // TestValidateRemoteName: valid.
            r("docker-rules/docker", v(""), is("docker.io/docker-rules/docker:latest"), ""),
            r("docker---rules/docker", v(""), is("docker.io/docker---rules/docker:latest"), ""),
            r("doc/docker", v(""), is("docker.io/doc/docker:latest"), ""),
            r("d/docker", v(""), is("docker.io/d/docker:latest"), ""),
            r("jess/t", v(""), is("docker.io/jess/t:latest"), ""),
            r("dock__er/docker", v(""), is("docker.io/dock__er/docker:latest"), ""),
            // TestValidateRemoteName: invalid.
            r("docker-/docker", X("invalid"), no(Repository, "\"docker-\""), ""),
            r("-docker-/docker", X("invalid"), no(Repository, "\"-docker-\""), ""),
            r("____/____", X("invalid"), no(Repository, "\"____\""), ""),
            r("_docker/_docker", X("invalid"), no(Repository, "\"_docker\""), ""),
            r("dock..er/docker", X("invalid"), no(Host, "empty"), ""),
            r("dock_.er/docker", X("invalid"), no(Host, "label \"dock_\" holds '_'"), ""),
            r("dock-.er/docker", X("invalid"), no(Host, "label \"dock-\""), ""),
            r("docker/", X("invalid"), no(Repository, "empty"), ""),
            r(long_namespace, X("ErrNameTooLong"), no(Repository, "the limit is 255"), ""),
        ],
    );
}

#[test]
fn normalize_test_go_full_names() {
    // TestParseRepositoryInfo: the familiar, full and ambiguous names of
    // each case all parse to its full name.
    let repository_info: &[(&[&str], &str)] = &[
        (&["localhost/fooo"], "localhost/fooo"),
        (&["localhost/fooo/bar"], "localhost/fooo/bar"),
        (&["LOCALDOMAIN/fooo"], "LOCALDOMAIN/fooo"),
        (&["LOCALDOMAIN/fooo/bar"], "LOCALDOMAIN/fooo/bar"),
        (&["fooo/bar", "docker.io/fooo/bar", "index.docker.io/fooo/bar"], "docker.io/fooo/bar"),
        (&["ubuntu", "docker.io/library/ubuntu", "library/ubuntu"], "docker.io/library/ubuntu"),
        (&["nonlibrary/ubuntu", "docker.io/nonlibrary/ubuntu"], "docker.io/nonlibrary/ubuntu"),
        (&["other/library", "docker.io/other/library"], "docker.io/other/library"),
        (&["127.0.0.1:8000/private/moonbase"], "127.0.0.1:8000/private/moonbase"),
        (&["127.0.0.1:8000/privatebase"], "127.0.0.1:8000/privatebase"),
        (&["example.com/private/moonbase"], "example.com/private/moonbase"),
        (&["example.com/privatebase"], "example.com/privatebase"),
        (&["example.com:8000/private/moonbase"], "example.com:8000/private/moonbase"),
        (&["example.com:8000/privatebasee"], "example.com:8000/privatebasee"),
        (
            &["ubuntu-12.04-base", "docker.io/library/ubuntu-12.04-base", "index.docker.io/library/ubuntu-12.04-base"],
            "docker.io/library/ubuntu-12.04-base",
        ),
        (&["foo", "docker.io/library/foo", "docker.io/foo"], "docker.io/library/foo"),
        (&["library/foo/bar", "docker.io/library/foo/bar"], "docker.io/library/foo/bar"),
        (&["store/foo/bar", "docker.io/store/foo/bar"], "docker.io/store/foo/bar"),
        (&["Foo/bar"], "Foo/bar"),
        (&["FOO/bar"], "FOO/bar"),
    ];
    let mut rows = Vec::new();
    for (inputs, full) in repository_info {
        for input in *inputs {
            rows.push(r(*input, v(*full), is(format!("{full}:latest")), ""));
        }
    }
    // TestNormalizedSplitHostname and TestDomainAndPath: domain + "/" + path.
    for (input, full) in [
        ("test.com/foo", "test.com/foo"),
        ("test_com/foo", "docker.io/test_com/foo"),
        ("docker/migrator", "docker.io/docker/migrator"),
        ("test.com:8080/foo", "test.com:8080/foo"),
        ("test-com:8080/foo", "test-com:8080/foo"),
        ("foo", "docker.io/library/foo"),
        ("xn--n3h.com/foo", "xn--n3h.com/foo"),
        ("xn--n3h.com:18080/foo", "xn--n3h.com:18080/foo"),
        ("docker.io/foo", "docker.io/library/foo"),
        ("docker.io/library/foo", "docker.io/library/foo"),
        ("docker.io/library/foo/bar", "docker.io/library/foo/bar"),
        ("test:8080/foo", "test:8080/foo"),
    ] {
        rows.push(r(input, v(full), is(format!("{full}:latest")), ""));
    }
    // TestParseAnyReference (the named rows) and TestParseReferenceWithTagAndDigest.
    let redis = "sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c";
    let busybox = "sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa";
    for (input, full) in [
        ("redis".to_string(), "docker.io/library/redis".to_string()),
        ("redis:latest".into(), "docker.io/library/redis:latest".into()),
        ("docker.io/library/redis:latest".into(), "docker.io/library/redis:latest".into()),
        (format!("redis@{redis}"), format!("docker.io/library/redis@{redis}")),
        (format!("docker.io/library/redis@{redis}"), format!("docker.io/library/redis@{redis}")),
        ("dmcgowan/myapp".into(), "docker.io/dmcgowan/myapp".into()),
        ("dmcgowan/myapp:latest".into(), "docker.io/dmcgowan/myapp:latest".into()),
        ("docker.io/mcgowan/myapp:latest".into(), "docker.io/mcgowan/myapp:latest".into()),
        (format!("dmcgowan/myapp@{redis}"), format!("docker.io/dmcgowan/myapp@{redis}")),
        (format!("docker.io/dmcgowan/myapp@{redis}"), format!("docker.io/dmcgowan/myapp@{redis}")),
        (redis[7..70].to_string(), format!("docker.io/library/{}", &redis[7..70])),
        ("dbcc1".into(), "docker.io/library/dbcc1".into()),
        (format!("busybox:latest@{busybox}"), format!("docker.io/library/busybox:latest@{busybox}")),
    ] {
        let want = if full.contains([':', '@']) { full.clone() } else { format!("{full}:latest") };
        rows.push(r(input, v(full), is(want), ""));
    }
    use Part::*;
    rows.push(r(
        &redis[7..],
        v("sha256:dbcc1c35…"),
        no(ImageId, &redis[7..]),
        "ParseAnyReference reads 64 hex digits as an image ID; hostctl pulls by name only and refuses it, as ParseNormalizedNamed does",
    ));
    rows.push(r(
        redis,
        v("sha256:dbcc1c35…"),
        is(format!("docker.io/library/{redis}")),
        "ParseAnyReference reads a bare digest as a digest reference; hostctl reads it as ParseNormalizedNamed does, image `sha256` with that tag",
    ));
    check("TestParseRepositoryInfo, TestNormalizedSplitHostname, TestParseAnyReference", Names::Normalised, rows);
}

#[test]
fn normalize_test_go_test_parse_docker_ref() {
    let d = "sha256:e6693c20186f837fc393390135d8a598a96a833917917789d63766cab6c59582";
    let mut rows: Vec<Row> = [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:latest", "docker.io/library/busybox:latest"),
        ("library/busybox", "docker.io/library/busybox:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("docker.io/library/busybox", "docker.io/library/busybox:latest"),
        ("docker.io/busybox:latest", "docker.io/library/busybox:latest"),
        ("library/busybox:latest", "docker.io/library/busybox:latest"),
        ("docker.io/library/busybox:latest", "docker.io/library/busybox:latest"),
        ("gcr.io/library/busybox", "gcr.io/library/busybox:latest"),
    ]
    .into_iter()
    .map(|(input, want)| r(input, v(want), is(want), ""))
    .collect();
    let digest_only = format!("docker.io/library/busybox@{d}");
    rows.push(r(format!("busybox@{d}"), v(&digest_only), is(&digest_only), ""));
    rows.push(r(
        format!("gcr.io/library/busybox:latest@{d}"),
        v("gcr.io/library/busybox@sha256:e6693c…"),
        is(format!("gcr.io/library/busybox:latest@{d}")),
        "ParseDockerRef drops the tag beside a digest; hostctl keeps it for display and fetches by the digest",
    ));
    check("TestParseDockerRef", Names::Normalised, rows);
}

#[test]
fn regexp_test_go_test_full_name_regexp() {
    use Part::*;
    let p = |i: &str| format!("docker.io/{i}:latest");
    check(
        "TestFullNameRegexp",
        Names::Parse,
        vec![
            r("", X("no match"), no(Empty, "empty"), ""),
            r("short", v("short"), is("docker.io/library/short:latest"), ""),
            r("simple/name", v("simple/name"), is(p("simple/name")), ""),
            r("library/ubuntu", v("library/ubuntu"), is(p("library/ubuntu")), ""),
            r("docker/stevvooe/app", v("docker/stevvooe/app"), is(p("docker/stevvooe/app")), ""),
            r(
                "aa/aa/aa/aa/aa/aa/aa/aa/aa/bb/bb/bb/bb/bb/bb",
                v(""),
                is(p("aa/aa/aa/aa/aa/aa/aa/aa/aa/bb/bb/bb/bb/bb/bb")),
                "",
            ),
            r("aa/aa/bb/bb/bb", v(""), is(p("aa/aa/bb/bb/bb")), ""),
            r("a/a/a/a", v(""), is(p("a/a/a/a")), ""),
            r("a/a/a/a/", X("no match"), no(Repository, "empty"), ""),
            r("a//a/a", X("no match"), no(Repository, "empty"), ""),
            r("a", v(""), is("docker.io/library/a:latest"), ""),
            r("a/aa", v(""), is(p("a/aa")), ""),
            r("a/aa/a", v(""), is(p("a/aa/a")), ""),
            r("foo.com", v(""), is("docker.io/library/foo.com:latest"), ""),
            r("foo.com/", X("no match"), no(NoRepository, "foo.com/"), ""),
            r("foo.com:8080/bar", v(""), is("foo.com:8080/bar:latest"), ""),
            r("foo.com:http/bar", X("no match"), no(Host, "port \"http\" is not a number"), ""),
            r("foo.com/bar", v(""), is("foo.com/bar:latest"), ""),
            r("foo.com/bar/baz", v(""), is("foo.com/bar/baz:latest"), ""),
            r("localhost:8080/bar", v(""), is("localhost:8080/bar:latest"), ""),
            r("sub-dom1.foo.com/bar/baz/quux", v(""), is("sub-dom1.foo.com/bar/baz/quux:latest"), ""),
            r("blog.foo.com/bar/baz", v(""), is("blog.foo.com/bar/baz:latest"), ""),
            r("a^a", X("no match"), no(Repository, "'^'"), ""),
            r("aa/asdf$$^/aa", X("no match"), no(Repository, "'$'"), ""),
            r("asdf$$^/aa", X("no match"), no(Repository, "'$'"), ""),
            r("aa-a/a", v(""), is(p("aa-a/a")), ""),
            r(
                format!("{}a", "a/".repeat(128)),
                v("a + a/…/a"),
                no(Repository, "257 characters"),
                "upstream's regexp takes `a` as a host and has no length limit; normalised, `a` is no host, and the \
                 257-character path is over the limit (ParseNormalizedNamed refuses it too)",
            ),
            r("a-/a/a/a", X("no match"), no(Repository, "\"a-\""), ""),
            r("foo.com/a-/a/a", X("no match"), no(Repository, "\"a-\""), ""),
            r("-foo/bar", X("no match"), no(Repository, "\"-foo\""), ""),
            r("foo/bar-", X("no match"), no(Repository, "\"bar-\""), ""),
            r("foo-/bar", X("no match"), no(Repository, "\"foo-\""), ""),
            r("foo/-bar", X("no match"), no(Repository, "\"-bar\""), ""),
            r("_foo/bar", X("no match"), no(Repository, "\"_foo\""), ""),
            r("foo_bar", v(""), is("docker.io/library/foo_bar:latest"), ""),
            r("foo_bar.com", v(""), is("docker.io/library/foo_bar.com:latest"), ""),
            r(
                "foo_bar.com:8080",
                X("no match"),
                is("docker.io/library/foo_bar.com:8080"),
                "the name regexp has no tag; as a whole reference `:8080` is a tag (TestReferenceParse accepts it)",
            ),
            r("foo_bar.com:8080/app", X("no match"), no(Host, "\"foo_bar\" holds '_'"), ""),
            r("foo.com/foo_bar", v(""), is("foo.com/foo_bar:latest"), ""),
            r("____/____", X("no match"), no(Repository, "\"____\""), ""),
            r("_docker/_docker", X("no match"), no(Repository, "\"_docker\""), ""),
            r("docker_/docker_", X("no match"), no(Repository, "\"docker_\""), ""),
            r("b.gcr.io/test.example.com/my-app", v(""), is("b.gcr.io/test.example.com/my-app:latest"), ""),
            r("xn--n3h.com/myimage", v(""), is("xn--n3h.com/myimage:latest"), ""),
            r("xn--7o8h.com/myimage", v(""), is("xn--7o8h.com/myimage:latest"), ""),
            r("example.com/xn--7o8h.com/myimage", v(""), is("example.com/xn--7o8h.com/myimage:latest"), ""),
            r(
                "example.com/some_separator__underscore/myimage",
                v(""),
                is("example.com/some_separator__underscore/myimage:latest"),
                "",
            ),
            r("example.com/__underscore/myimage", X("no match"), no(Repository, "\"__underscore\""), ""),
            r("example.com/..dots/myimage", X("no match"), no(Repository, "\"..dots\""), ""),
            r("example.com/.dots/myimage", X("no match"), no(Repository, "\".dots\""), ""),
            r("example.com/nodouble..dots/myimage", X("no match"), no(Repository, "\"..\""), ""),
            r("docker./docker", X("no match"), no(Host, "\"docker.\": a DNS label is empty"), ""),
            r(".docker/docker", X("no match"), no(Host, "\".docker\": a DNS label is empty"), ""),
            r("docker-/docker", X("no match"), no(Repository, "\"docker-\""), ""),
            r("-docker/docker", X("no match"), no(Repository, "\"-docker\""), ""),
            r("do..cker/docker", X("no match"), no(Host, "\"do..cker\": a DNS label is empty"), ""),
            r("do__cker:8080/docker", X("no match"), no(Host, "\"do__cker\" holds '_'"), ""),
            r("do__cker/docker", v(""), is(p("do__cker/docker")), ""),
            r(
                "registry.io/foo/project--id.module--name.ver---sion--name",
                v(""),
                is("registry.io/foo/project--id.module--name.ver---sion--name:latest"),
                "",
            ),
            r("Asdf.com/foo/bar", v(""), is("Asdf.com/foo/bar:latest"), ""),
            r("Foo/FarB", X("no match"), no(Repository, "\"FarB\" has uppercase"), ""),
        ],
    );
}

#[test]
fn regexp_test_go_test_reference_regexp() {
    use Part::*;
    let d = "sha256:be178c0543eb17f5f3043021c9e5fcf30285e557a4fc309cce97ff9ca6182912";
    check(
        "TestReferenceRegexp",
        Names::Parse,
        vec![
            r("registry.com:8080/myapp:tag", v(""), is("registry.com:8080/myapp:tag"), ""),
            r(format!("registry.com:8080/myapp@{d}"), v(""), is(format!("registry.com:8080/myapp@{d}")), ""),
            r(format!("registry.com:8080/myapp:tag2@{d}"), v(""), is(format!("registry.com:8080/myapp:tag2@{d}")), ""),
            r("registry.com:8080/myapp@sha256:badbadbadbad", X("no match"), no(Digest, "sha256:badbadbadbad"), ""),
            r("registry.com:8080/myapp:invalid~tag", X("no match"), no(Tag, "\"invalid~tag\""), ""),
            r("bad_hostname.com:8080/myapp:tag", X("no match"), no(Host, "\"bad_hostname\" holds '_'"), ""),
            // `localhost` alone is a name, and 8080 its tag.
            r(format!("localhost:8080@{d}"), v("localhost"), is(format!("docker.io/library/localhost:8080@{d}")), ""),
            r(format!("localhost:8080/name@{d}"), v(""), is(format!("localhost:8080/name@{d}")), ""),
            r(format!("localhost:http/name@{d}"), X("no match"), no(Host, "port \"http\""), ""),
            r(format!("localhost@{d}"), v("localhost"), is(format!("docker.io/library/localhost@{d}")), ""),
            r("registry.com:8080/myapp@bad", X("no match"), no(Digest, "\"bad\""), ""),
            r("registry.com:8080/myapp@2bad", X("no match"), no(Digest, "\"2bad\""), ""),
        ],
    );
}

/// TestDomainRegexp, through the host check alone, plus hostctl's own rows
/// for the cases issue #10 names (marked "grammar": upstream's expectation
/// is what its `domainAndPort` expression gives).
#[test]
fn regexp_test_go_test_domain_regexp() {
    let out_of_range = "port out of range; upstream's regexp leaves ports to a later validation (its comment: \"it will fail on validation\")";
    let rows: &[(&str, bool, bool, &str)] = &[
        // (host, upstream matches, hostctl accepts, why they differ)
        ("test.com", true, true, ""),
        ("test.com:10304", true, true, ""),
        ("test.com:http", false, false, ""),
        ("localhost", true, true, ""),
        ("localhost:8080", true, true, ""),
        ("a", true, true, ""),
        ("a.b", true, true, ""),
        ("ab.cd.com", true, true, ""),
        ("a-b.com", true, true, ""),
        ("-ab.com", false, false, ""),
        ("ab-.com", false, false, ""),
        ("ab.c-om", true, true, ""),
        ("ab.-com", false, false, ""),
        ("ab.com-", false, false, ""),
        ("0101.com", true, true, ""),
        ("001a.com", true, true, ""),
        ("b.gbc.io:443", true, true, ""),
        ("b.gbc.io", true, true, ""),
        ("xn--n3h.com", true, true, ""),
        ("Asdf.com", true, true, ""),
        ("192.168.1.1:75050", true, false, out_of_range),
        ("192.168.1.1:750050", true, false, out_of_range),
        ("[fd00:1:2::3]:75050", true, false, out_of_range),
        ("[fd00:1:2::3]75050", false, false, ""),
        ("[fd00:1:2::3]::75050", false, false, ""),
        ("[fd00:1:2::3%eth0]:75050", false, false, ""),
        (
            "[fd00123123123]:75050",
            true,
            false,
            "not an IPv6 address; upstream's regexp takes any hex and colons (\"will fail in validation\")",
        ),
        ("[2001:0db8:85a3:0000:0000:8a2e:0370:7334]:75050", true, false, out_of_range),
        ("[2001:0db8:85a3:0000:0000:8a2e:0370:7334]:750505", true, false, out_of_range),
        ("fd00:1:2::3:75050", false, false, ""),
        // grammar: issue #10's hosts and the edges of ports and IPv6 literals.
        ("dock..er", false, false, ""),
        (".docker", false, false, ""),
        ("docker.", false, false, ""),
        ("", false, false, ""),
        ("docker.io:0", true, true, ""),
        ("docker.io:65535", true, true, ""),
        ("docker.io:00080", true, true, ""),
        ("docker.io:65536", true, false, out_of_range),
        ("docker.io:", false, false, ""),
        ("docker.io:+80", false, false, ""),
        ("[2001:db8::1]", true, true, ""),
        ("[2001:db8::1]:5000", true, true, ""),
        ("[2001:0db8:85a3:0000:0000:8a2e:0370:7334]:5000", true, true, ""),
        ("[::1]", true, true, ""),
        ("[::]:0", true, true, ""),
        ("[FD00::1]", true, true, ""),
        ("[fe80::1%25eth0]", false, false, ""),
        ("[::ffff:192.0.2.1]", false, false, ""),
        ("[]", false, false, ""),
        ("[2001:db8::1", false, false, ""),
        ("2001:db8::1]", false, false, ""),
        ("[:]", true, false, "not an IPv6 address (upstream's regexp takes any hex and colons)"),
        ("[1:2:3:4:5:6:7:8:9]", true, false, "not an IPv6 address (nine groups)"),
        ("[2001:db8::1]:", false, false, ""),
        ("[2001:db8::1]:http", false, false, ""),
    ];
    let mut failures = Vec::new();
    for (host, upstream, accepts, why) in rows {
        let got = grammar::check_domain(host);
        if got.is_ok() != *accepts {
            failures.push(format!("{host:?}: want accepted={accepts}, got {got:?}"));
        }
        if why.is_empty() && upstream != accepts {
            failures.push(format!("{host:?}: upstream {upstream}, hostctl {accepts}, and no reason"));
        }
        if let Err(e) = got {
            assert!(e.to_string().contains(&format!("{host:?}")), "{e} does not name {host:?}");
        }
    }
    assert!(failures.is_empty(), "TestDomainRegexp:\n{}", failures.join("\n"));
}

/// hostctl's transport prefixes (containers-transports(5) names where they
/// exist). Upstream's column is what distribution/reference says of the
/// whole string, as podman reads a string without a transport it knows.
#[test]
fn transports() {
    use Part::*;
    const NOT: &str = "not a docker reference";
    let rows = vec![
        r("docker://alpine", X(NOT), is("docker.io/library/alpine:latest"), "the docker:// transport"),
        r("docker://127.0.0.1:5000/os:v2", X(NOT), is("127.0.0.1:5000/os:v2"), "the docker:// transport"),
        r("docker://[::1]:5000/os", X(NOT), is("[::1]:5000/os:latest"), "the docker:// transport"),
        r("docker://", X(NOT), no(Empty, "empty"), ""),
        r("docker://[::1]/Os", X(NOT), no(Repository, "\"Os\""), ""),
        r("registry:127.0.0.1:5000/os", X(NOT), is("127.0.0.1:5000/os:latest"), "hostctl's registry: transport"),
        r("registry://127.0.0.1:5000/os", X(NOT), is("127.0.0.1:5000/os:latest"), "hostctl's registry: transport"),
        r(
            "registry:quay.io/fedora/fedora-bootc:42",
            X(NOT),
            is("quay.io/fedora/fedora-bootc:42"),
            "hostctl's registry: transport",
        ),
        r("registry:[::1]:5000/os", X(NOT), is("[::1]:5000/os:latest"), "hostctl's registry: transport"),
        r("registry:docker.io/library/registry:2", X(NOT), is("docker.io/library/registry:2"), "the stored form"),
        r("registry:quay.io/Os", X(NOT), no(Repository, "\"Os\""), ""),
        r("registry:2", v("docker.io/library/registry:2"), is("docker.io/library/registry:2"), ""),
        r("registry:5000/os", v("registry:5000/os"), is("registry:5000/os:latest"), ""),
        r("registry:alpine", v("docker.io/library/registry:alpine"), is("docker.io/library/registry:alpine"), ""),
        r("oci:/tmp/layout:v1", X(NOT), is("oci:/tmp/layout:v1"), "the oci: transport"),
        r("oci:rel/dir", X(NOT), is("oci:rel/dir"), "the oci: transport; the parser keeps a relative path as given"),
        r("oci:5000/os", v("oci:5000/os"), is("oci:5000/os"), "oci: is a transport for podman and skopeo too"),
        r("oci-archive:/tmp/a.tar:latest", X(NOT), is("oci-archive:/tmp/a.tar:latest"), "the oci-archive: transport"),
        r("oci-archive:/tmp/a.tar", X(NOT), is("oci-archive:/tmp/a.tar"), "the oci-archive: transport"),
        r("oci:", X(NOT), no(Path, "oci: reference needs a path"), ""),
        r("oci-archive::tag", X(NOT), no(Path, "oci-archive:"), ""),
        r("oci:/x:", X(NOT), no(Tag, "\"\""), ""),
        r(
            "containers-storage:foo",
            v(""),
            no(Transport, "\"containers-storage\""),
            "a containers-transports(5) name, as podman reads it",
        ),
        r("docker-archive:/x.tar", X(NOT), no(Transport, "\"docker-archive\""), ""),
        r("dir:/x", X(NOT), no(Transport, "\"dir\""), ""),
        r(
            "docker-daemon:x",
            v(""),
            no(Transport, "\"docker-daemon\""),
            "a containers-transports(5) name, as podman reads it",
        ),
        r("ostree:x", v(""), no(Transport, "\"ostree\""), "a containers-transports(5) name, as podman reads it"),
        r("https://quay.io/os", X(NOT), no(Transport, "\"https\""), ""),
    ];
    check("transports", Names::Parse, rows);
    // The kinds, which Display alone does not tell apart for registries.
    assert!(matches!("registry:2".parse::<ImageRef>(), Ok(ImageRef::Registry(_))));
    assert!(matches!("oci:5000/os".parse::<ImageRef>(), Ok(ImageRef::OciDir { .. })));
    assert!(matches!("oci-archive:/a.tar".parse::<ImageRef>(), Ok(ImageRef::OciArchive { .. })));
}

#[test]
fn pull_registry_2_is_the_registry_image_as_podman_reads_it() {
    let RegistryRef { registry, repository, tag, .. } = match "registry:2".parse::<ImageRef>().unwrap() {
        ImageRef::Registry(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!((registry.as_str(), repository.as_str(), tag.as_deref()), ("docker.io", "library/registry", Some("2")));
}

#[test]
fn pull_from_an_ipv6_registry_without_a_port_parses() {
    let r = match "[2001:db8::1]/repo".parse::<ImageRef>().unwrap() {
        ImageRef::Registry(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!((r.registry.as_str(), r.repository.as_str()), ("[2001:db8::1]", "repo"));
}

#[test]
fn sha512_pin_says_sha512_is_unsupported_not_invalid() {
    let e = format!("quay.io/a/b@sha512:{}", ff(128)).parse::<ImageRef>().unwrap_err().to_string();
    assert!(e.contains("\"sha512\" is not supported") && !e.contains("invalid"), "{e}");
}

mod round_trip {
    use proptest::prelude::*;

    use super::super::*;

    fn host() -> impl Strategy<Value = String> {
        let label = "[A-Za-z0-9]([A-Za-z0-9-]{0,8}[A-Za-z0-9])?";
        // A lone `dir`, `oci`... before a port would read as a transport.
        let dns = proptest::collection::vec(label, 1..4)
            .prop_map(|l| l.join("."))
            .prop_filter("transport name", |h| !matches!(h.as_str(), "dir" | "oci" | "ostree" | "registry"));
        let ipv4 = any::<[u8; 4]>().prop_map(|b| std::net::Ipv4Addr::from(b).to_string());
        // std's Display compresses zeros and writes IPv4-mapped addresses
        // dotted, which the grammar refuses; filter those.
        let ipv6 = any::<[u16; 8]>()
            .prop_map(|s| format!("[{}]", std::net::Ipv6Addr::from(s)))
            .prop_filter("dotted IPv6", |s| !s.contains('.'));
        let bare = prop_oneof![dns, ipv4, ipv6, Just("localhost".to_string())];
        (bare, proptest::option::of(any::<u16>())).prop_map(|(h, p)| match p {
            Some(p) => format!("{h}:{p}"),
            None => h,
        })
    }

    fn path() -> impl Strategy<Value = String> {
        let component = "[a-z0-9]{1,4}(([._]|__|-{1,3})[a-z0-9]{1,4}){0,2}";
        proptest::collection::vec(component, 1..4).prop_map(|c| c.join("/"))
    }

    fn reference() -> impl Strategy<Value = String> {
        let tag = "[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}";
        let digest = "[0-9a-f]{64}".prop_map(|h| format!("sha256:{h}"));
        (proptest::option::of(host()), path(), proptest::option::of(tag), proptest::option::of(digest)).prop_map(
            |(h, p, t, d)| {
                // Without a host, a first component with a '.' would read as one.
                let h = h.or_else(|| p.split('/').next().filter(|c| c.contains('.')).map(|_| "docker.io".into()));
                let mut s = h.map(|h| format!("{h}/")).unwrap_or_default() + &p;
                if let Some(t) = t {
                    s = format!("{s}:{t}");
                }
                if let Some(d) = d {
                    s = format!("{s}@{d}");
                }
                s
            },
        )
    }

    proptest! {
        #[test]
        fn valid_references_parse_display_and_parse_back(s in reference()) {
            let r: ImageRef = s.parse().map_err(|e| TestCaseError::fail(format!("{s:?}: {e}")))?;
            let again: ImageRef = r.to_string().parse().map_err(|e| TestCaseError::fail(format!("{r}: {e}")))?;
            prop_assert_eq!(&again, &r);
            let stored: ImageRef = String::from(r.clone()).parse().unwrap();
            prop_assert_eq!(stored, r);
        }

        /// Any text at all is parsed or refused, never a panic (byte offsets
        /// in multi-byte text, an unclosed '[', a lone ':').
        #[test]
        fn any_text_is_parsed_or_refused(s in any::<String>()) {
            let _ = s.parse::<ImageRef>();
        }

        /// Anything accepted is stored (`String::from`) in a form that parses back the same.
        #[test]
        fn whatever_parses_is_stored_as_the_same_reference(s in "[a-zA-Z0-9:/@._%\\[\\]-]{0,40}") {
            if let Ok(r) = s.parse::<ImageRef>() {
                let stored = String::from(r.clone());
                let again: ImageRef = stored.parse().map_err(|e| TestCaseError::fail(format!("{s:?} -> {stored}: {e}")))?;
                prop_assert_eq!(again, r);
            }
        }
    }
}
