//! The registry source against a real `docker-registry`: anonymous, Basic over
//! TLS, Bearer tokens, multi-platform indexes, and faults injected by a proxy
//! (connections cut mid-blob, 5xx bursts, blobs longer than their descriptor).
//! Driven through the library API, `hostctl::oci::open_source`.

use std::path::Path;

use base64::Engine as _;
use hostctl::digest::Digest;
use hostctl::error::DigestMismatch;
use hostctl::imgref::ImageRef;
use hostctl::oci::platform::Platform;
use hostctl::oci::{open_source, ImageSource, RegistryOptions};
use oci_spec::image::{Descriptor, ImageConfiguration};
use tokio::io::AsyncReadExt;

use crate::support::images::{push_with_skopeo, Compression, Layout};
use crate::support::registry::{FaultProxy, Faults, Registry};
use crate::support::run;
use crate::support::tokenserver::TokenServer;

/// Builds a one-layer image (a text file plus `noise_len` random bytes under
/// `/etc`) in a umoci layout under `work`; returns the layout.
///
/// The layer tar is written by GNU tar and added with `umoci raw add-layer`:
/// umoci 0.4.7's own `insert` writes archives without the last entry's
/// padding and the end-of-archive blocks (GNU tar and the tar crate reject
/// them) and, at `/`, a "/" entry.
fn build_image(work: &Path, tag: &str, noise_len: usize) -> Layout {
    let tree = work.join(format!("tree-{tag}"));
    std::fs::create_dir_all(tree.join("etc")).unwrap();
    std::fs::write(tree.join("etc/os-release"), format!("ID=test\nVERSION_ID={tag}\n")).unwrap();
    std::fs::write(tree.join("etc/noise"), crate::support::noise(noise_len, tag.len() as u64 + 7)).unwrap();
    let layer = work.join(format!("layer-{tag}.tar"));
    run(std::process::Command::new("tar").arg("-C").arg(&tree).arg("-cf").arg(&layer).arg("etc"));
    let layout = Layout::new(&work.join("layout"), tag);
    run(std::process::Command::new("umoci")
        .args(["raw", "add-layer", "--image", &format!("{}:{tag}", layout.dir.display())])
        .arg(&layer));
    layout
}

/// Builds a one-layer image with `noise_len` bytes of noise ([`build_image`])
/// and pushes it with skopeo to `reg` as `repo_tag`, with `dest_flags`
/// (credentials, CA directory): its work dir (for auth files and the like)
/// and the image reference.
fn publish(
    reg: &Registry,
    repo_tag: &str,
    noise_len: usize,
    compression: Compression,
    dest_flags: &[&str],
) -> (tempfile::TempDir, String) {
    let work = tempfile::tempdir().unwrap();
    let image = reg.image(repo_tag);
    push_with_skopeo(&build_image(work.path(), "v1", noise_len).oci_ref(), &image, compression, dest_flags);
    (work, image)
}

/// [`publish`] of a small `os:v1` to the TLS registry `reg` with
/// `user:password` `creds`: (its work dir, the image, the registry's CA dir).
fn publish_with_creds(reg: &Registry, creds: &str) -> (tempfile::TempDir, String, String) {
    let cd = reg.cert_dir.clone().unwrap().to_str().unwrap().to_string();
    let (work, image) =
        publish(reg, "os:v1", 2048, Compression::Gzip, &["--dest-creds", creds, "--dest-cert-dir", &cd]);
    (work, image, cd)
}

fn source(image: &str, opts: &RegistryOptions) -> Box<dyn ImageSource> {
    let r: ImageRef = image.parse().unwrap();
    open_source(&r, opts).unwrap()
}

fn insecure() -> RegistryOptions {
    RegistryOptions { insecure: true, ..Default::default() }
}

fn amd64() -> Platform {
    "linux/amd64".parse().unwrap()
}

async fn read_blob(src: &dyn ImageSource, desc: &Descriptor, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let reader = src.open_blob(desc, offset).await.map_err(std::io::Error::other)?;
    match reader {
        hostctl::oci::BlobReader::Async(mut r) => {
            r.read_to_end(&mut out).await?;
        }
        hostctl::oci::BlobReader::Sync(mut r) => {
            r.read_to_end(&mut out)?;
        }
    }
    Ok(out)
}

/// The manifest digest skopeo sees for `image` (an independent tool's answer).
fn skopeo_digest(image: &str, extra: &[&str]) -> String {
    let out = run(std::process::Command::new("skopeo")
        .args(["inspect", "--format", "{{.Digest}}"])
        .args(extra)
        .arg(format!("docker://{image}")));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Resolves, fetches the config and every layer; checks every digest and size.
async fn pull_all(src: &dyn ImageSource) -> (hostctl::oci::ResolvedManifest, ImageConfiguration) {
    let resolved = src.resolve(&amd64()).await.unwrap();
    assert_eq!(resolved.raw.digest, Digest::of(&resolved.raw.bytes));
    let config_bytes = src.fetch_small_blob(resolved.manifest.config()).await.unwrap();
    assert_eq!(Digest::of(&config_bytes).to_string(), resolved.manifest.config().digest().to_string());
    let config: ImageConfiguration = serde_json::from_slice(&config_bytes).unwrap();
    assert_eq!(config.rootfs().diff_ids().len(), resolved.manifest.layers().len());
    for layer in resolved.manifest.layers() {
        let bytes = read_blob(src, layer, 0).await.unwrap();
        assert_eq!(bytes.len() as u64, layer.size());
        assert_eq!(Digest::of(&bytes).to_string(), layer.digest().to_string());
    }
    (resolved, config)
}

fn auth_json(dir: &Path, key: &str, user: &str, password: &str) -> std::path::PathBuf {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let path = dir.join(format!("auth-{user}-{}.json", password.len()));
    std::fs::write(&path, format!(r#"{{"auths":{{"{key}":{{"auth":"{auth}"}}}}}}"#)).unwrap();
    path
}

#[tokio::test]
async fn anonymous_pull_checks_digests_for_oci_and_docker_schema2() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = build_image(work.path(), "v1", 4096);
    layout.push(&reg.image("os:v1"), Compression::Gzip);
    push_with_skopeo(&layout.oci_ref(), &reg.image("os:docker"), Compression::Gzip, &["--format", "v2s2"]);

    let src = source(&reg.image("os:v1"), &insecure());
    let (resolved, _) = pull_all(src.as_ref()).await;
    assert_eq!(resolved.raw.media_type, "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(resolved.index_digest, None);
    assert_eq!(resolved.raw.digest.to_string(), skopeo_digest(&reg.image("os:v1"), &["--tls-verify=false"]));

    let docker = source(&reg.image("os:docker"), &insecure());
    let (resolved_d, _) = pull_all(docker.as_ref()).await;
    assert_eq!(resolved_d.raw.media_type, "application/vnd.docker.distribution.manifest.v2+json");
    assert_eq!(
        resolved_d.manifest.layers()[0].media_type().to_string(),
        "application/vnd.docker.image.rootfs.diff.tar.gzip"
    );

    // By digest: same bytes; unknown tags and digests are None, not errors.
    let by_digest = src.fetch_manifest(&resolved.raw.digest.to_string()).await.unwrap().unwrap();
    assert_eq!(by_digest.bytes, resolved.raw.bytes);
    assert!(src.fetch_manifest("no-such-tag").await.unwrap().is_none());
    assert!(src.fetch_manifest(&Digest::of(b"nothing").to_string()).await.unwrap().is_none());
    // Neither a tag nor a digest: refused before it reaches a URL.
    let e = format!("{:#}", src.fetch_manifest("../../v2/_catalog").await.unwrap_err());
    assert!(e.contains("invalid manifest reference"), "{e}");
    // Distribution 2.8 has no referrers API: an empty list.
    assert!(src.referrers(&resolved.raw.digest).await.unwrap().is_empty());
    // A missing tag is a clear error from resolve.
    let e = source(&reg.image("os:nope"), &insecure()).resolve(&amd64()).await.unwrap_err();
    assert!(format!("{e:#}").contains("not found"), "{e:#}");
}

#[tokio::test]
async fn blob_range_from_offset_returns_the_tail() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    build_image(work.path(), "v1", 50_000).push(&reg.image("os:v1"), Compression::None);
    let src = source(&reg.image("os:v1"), &insecure());
    let resolved = src.resolve(&amd64()).await.unwrap();
    let layer = &resolved.manifest.layers()[0];
    let whole = read_blob(src.as_ref(), layer, 0).await.unwrap();
    let tail = read_blob(src.as_ref(), layer, 12_345).await.unwrap();
    assert_eq!(tail, whole[12_345..]);
    assert!(read_blob(src.as_ref(), layer, layer.size()).await.unwrap().is_empty());
    assert!(src.open_blob(layer, layer.size() + 1).await.is_err());
}

#[tokio::test]
async fn basic_auth_over_tls_with_authfile_and_cert_dir() {
    let reg = Registry::start_tls_basic("alice", "s3cret-pw");
    let cert_dir = reg.cert_dir.clone().unwrap();
    let dest = ["--dest-creds", "alice:s3cret-pw", "--dest-cert-dir", cert_dir.to_str().unwrap()];
    let (work, image) = publish(&reg, "team/os:v1", 2048, Compression::Gzip, &dest);

    let good = auth_json(work.path(), &reg.addr, "alice", "s3cret-pw");
    let opts = RegistryOptions { cert_dir: Some(cert_dir.clone()), authfile: Some(good.clone()), ..Default::default() };
    let (resolved, _) = pull_all(source(&image, &opts).as_ref()).await;
    let expected = skopeo_digest(&image, &["--creds", "alice:s3cret-pw", "--cert-dir", cert_dir.to_str().unwrap()]);
    assert_eq!(resolved.raw.digest.to_string(), expected);

    // The most specific auth.json key wins over the registry-wide one.
    let mixed = work.path().join("mixed.json");
    let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    std::fs::write(
        &mixed,
        format!(
            r#"{{"auths":{{"{a}":{{"auth":"{}"}},"{a}/team/os":{{"auth":"{}"}}}}}}"#,
            enc("alice:wrong"),
            enc("alice:s3cret-pw"),
            a = reg.addr
        ),
    )
    .unwrap();
    let opts_mixed = RegistryOptions { authfile: Some(mixed), ..opts.clone() };
    source(&image, &opts_mixed).resolve(&amd64()).await.unwrap();

    // Wrong password: says which registry, that credentials were found and where; never the secret.
    let bad = auth_json(work.path(), &reg.addr, "alice", "not-the-password");
    let opts_bad = RegistryOptions { authfile: Some(bad.clone()), ..opts.clone() };
    let e = format!("{:#}", source(&image, &opts_bad).resolve(&amd64()).await.unwrap_err());
    assert!(e.contains(&reg.addr) && e.contains("401"), "{e}");
    assert!(e.contains("credentials for user \"alice\" were found in") && e.contains(bad.to_str().unwrap()), "{e}");
    assert!(!e.contains("not-the-password"), "the password leaked: {e}");

    // No credentials for this registry: said so.
    let other = auth_json(work.path(), "elsewhere.example:5000", "bob", "x");
    let opts_none = RegistryOptions { authfile: Some(other), ..opts.clone() };
    let e = format!("{:#}", source(&image, &opts_none).resolve(&amd64()).await.unwrap_err());
    assert!(e.contains("401") && e.contains(&format!("no credentials for {} were found", reg.addr)), "{e}");
}

#[tokio::test]
async fn untrusted_certificate_without_cert_dir_is_a_clear_tls_error() {
    let reg = Registry::start_tls_basic("alice", "pw");
    let work = tempfile::tempdir().unwrap();
    let authfile = auth_json(work.path(), &reg.addr, "alice", "pw");
    // The registry holds nothing: the TLS handshake is what is under test.
    let opts = RegistryOptions { authfile: Some(authfile.clone()), ..Default::default() };
    let e = format!("{:#}", source(&reg.image("os:v1"), &opts).resolve(&amd64()).await.unwrap_err());
    assert!(e.contains("over HTTPS") && e.contains("--cert-dir"), "{e}");
    assert!(e.to_lowercase().contains("certificate"), "no TLS reason given: {e}");
    // With --tls-verify=false the handshake passes (and then the tag is missing).
    let opts = RegistryOptions { insecure: true, authfile: Some(authfile), ..Default::default() };
    let e = format!("{:#}", source(&reg.image("os:v1"), &opts).resolve(&amd64()).await.unwrap_err());
    assert!(e.contains("not found"), "{e}");
    // A plain-HTTP registry is refused unless insecure.
    let plain = Registry::start();
    let e = format!(
        "{:#}",
        source(&plain.image("os:v1"), &RegistryOptions::default()).resolve(&amd64()).await.unwrap_err()
    );
    assert!(e.contains("over HTTPS"), "{e}");
}

#[tokio::test]
async fn bearer_token_flow_caches_tokens_and_reports_refusals() {
    let tokens = TokenServer::start("tess", "t0ken-pw", 300);
    let reg = Registry::start_tls_token(&tokens);
    let (work, _, _) = publish_with_creds(&reg, "tess:t0ken-pw");
    let cert_dir = reg.cert_dir.clone().unwrap();
    let before = tokens.requests().len();

    let authfile = auth_json(work.path(), &reg.addr, "tess", "t0ken-pw");
    let opts = RegistryOptions { cert_dir: Some(cert_dir.clone()), authfile: Some(authfile), ..Default::default() };
    pull_all(source(&reg.image("os:v1"), &opts).as_ref()).await;
    let ours: Vec<_> = tokens.requests().into_iter().skip(before).collect();
    // Manifest, config and layer requests shared one token for the pull scope.
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert!(ours[0].granted);
    assert_eq!(ours[0].scopes, ["repository:os:pull"]);
    assert_eq!(ours[0].service.as_deref(), Some(crate::support::tokenserver::SERVICE));

    // Wrong password: the token server's refusal is reported, with the credentials' origin.
    let bad = auth_json(work.path(), &reg.addr, "tess", "wrong-pw");
    let opts_bad = RegistryOptions { cert_dir: Some(cert_dir.clone()), authfile: Some(bad), ..Default::default() };
    let e = format!("{:#}", source(&reg.image("os:v1"), &opts_bad).resolve(&amd64()).await.unwrap_err());
    assert!(e.contains("token server") && e.contains("401") && e.contains(&tokens.realm()), "{e}");
    assert!(e.contains("credentials for user \"tess\" were found"), "{e}");
    assert!(!e.contains("wrong-pw"), "the password leaked: {e}");

    // Anonymous: the token grants nothing, so the registry refuses.
    let none = auth_json(work.path(), "elsewhere.example", "x", "y");
    let opts_none = RegistryOptions { cert_dir: Some(cert_dir), authfile: Some(none), ..Default::default() };
    let e = format!("{:#}", source(&reg.image("os:v1"), &opts_none).resolve(&amd64()).await.unwrap_err());
    assert!(e.contains("refused access") && e.contains("no credentials"), "{e}");
}

/// Pushes `os:amd` (linux/amd64) and `os:arm` (linux/arm64) and an OCI index
/// `os:multi` over both (PUT by hand with curl). Returns the raw manifests of
/// the two images (as skopeo reads them) and the index bytes.
fn push_two_platform_index(reg: &Registry, work: &Path) -> (Vec<u8>, Vec<u8>, String) {
    let amd = build_image(work, "amd", 1000);
    amd.push(&reg.image("os:amd"), Compression::Gzip);
    let arm = build_image(work, "arm", 1000);
    run(std::process::Command::new("umoci").args([
        "config",
        "--image",
        &format!("{}:arm", arm.dir.display()),
        "--architecture=arm64",
        "--os=linux",
    ]));
    arm.push(&reg.image("os:arm"), Compression::Gzip);
    let raw = |tag: &str| {
        run(std::process::Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{}", reg.image(tag))))
        .stdout
    };
    let (m_amd, m_arm) = (raw("os:amd"), raw("os:arm"));
    let entry = |m: &[u8], arch: &str, variant: &str| {
        format!(
            r#"{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{}","size":{},"platform":{{"architecture":"{arch}","os":"linux"{variant}}}}}"#,
            Digest::of(m),
            m.len()
        )
    };
    let index = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{},{}]}}"#,
        entry(&m_amd, "amd64", ""),
        entry(&m_arm, "arm64", r#","variant":"v8""#)
    );
    let index_file = work.join("index.json");
    std::fs::write(&index_file, &index).unwrap();
    run(std::process::Command::new("curl").args([
        "-sSf",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/vnd.oci.image.index.v1+json",
        "--data-binary",
        &format!("@{}", index_file.display()),
        &format!("http://{}/v2/os/manifests/multi", reg.addr),
    ]));
    (m_amd, m_arm, index)
}

#[tokio::test]
async fn index_with_two_platforms_resolves_by_platform_and_lists_offers() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let (m_amd, m_arm, index) = push_two_platform_index(&reg, work.path());
    let multi = source(&reg.image("os:multi"), &insecure());
    let r = multi.resolve(&amd64()).await.unwrap();
    assert_eq!(r.raw.digest, Digest::of(&m_amd));
    assert_eq!(r.raw.bytes, m_amd);
    assert_eq!(r.index_digest, Some(Digest::of(index.as_bytes())));
    let r = multi.resolve(&"linux/arm64".parse().unwrap()).await.unwrap();
    assert_eq!(r.raw.digest, Digest::of(&m_arm));
    let r = multi.resolve(&"linux/arm64/v8".parse().unwrap()).await.unwrap();
    assert_eq!(r.raw.digest, Digest::of(&m_arm));
    let e = format!("{:#}", multi.resolve(&"linux/riscv64".parse().unwrap()).await.unwrap_err());
    assert!(e.contains("linux/riscv64") && e.contains("offers: linux/amd64, linux/arm64/v8"), "{e}");
}

#[tokio::test]
async fn tampered_config_and_substituted_manifest_are_refused_as_digest_mismatch() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    build_image(work.path(), "v1", 100).push(&reg.image("os:v1"), Compression::Gzip);
    build_image(work.path(), "v2", 100).push(&reg.image("os:v2"), Compression::Gzip);
    let src = source(&reg.image("os:v1"), &insecure());
    let resolved = src.resolve(&amd64()).await.unwrap();

    // A config blob altered on the registry's disk (same length, valid JSON).
    let config_digest = resolved.manifest.config().digest().to_string();
    let hex = config_digest.strip_prefix("sha256:").unwrap();
    let path = reg.data_dir().join(format!("docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]));
    let text = std::fs::read_to_string(&path).unwrap();
    let altered = text.replacen("\"amd64\"", "\"arm64\"", 1);
    assert_ne!(altered, text);
    std::fs::write(&path, altered).unwrap();
    let e = src.fetch_small_blob(resolved.manifest.config()).await.unwrap_err();
    assert!(e.chain().any(|c| c.is::<DigestMismatch>()), "{e:#}");

    // A registry that answers a digest request with another manifest (v2's).
    let digest = resolved.raw.digest.to_string();
    let proxy = FaultProxy::start(
        &reg.addr,
        Faults {
            path_match: format!("/manifests/{digest}"),
            rewrite: Some((digest.clone(), "v2".into())),
            ..Default::default()
        },
    );
    let via = source(&format!("{}/os:v1", proxy.addr), &insecure());
    let e = via.fetch_manifest(&digest).await.unwrap_err();
    assert!(e.chain().any(|c| c.is::<DigestMismatch>()), "{e:#}");
    let pinned = source(&format!("{}/os@{digest}", proxy.addr), &insecure());
    let e = pinned.resolve(&amd64()).await.unwrap_err();
    assert!(e.chain().any(|c| c.is::<DigestMismatch>()), "{e:#}");
    assert_eq!(proxy.matching_requests().len(), 2);
}

/// Pushes an image whose layer is about 600 KB of noise, uncompressed so
/// sizes are predictable; returns the registry, the layer and the source via `proxy`.
async fn noisy_layer(reg: &Registry) -> Descriptor {
    let work = tempfile::tempdir().unwrap();
    build_image(work.path(), "v1", 600_000).push(&reg.image("os:v1"), Compression::None);
    let src = source(&reg.image("os:v1"), &insecure());
    src.resolve(&amd64()).await.unwrap().manifest.layers()[0].clone()
}

#[tokio::test]
async fn blob_cut_mid_stream_resumes_with_range() {
    let reg = Registry::start();
    let layer = noisy_layer(&reg).await;
    let digest = layer.digest().to_string();
    let proxy = FaultProxy::start(
        &reg.addr,
        Faults { path_match: format!("/blobs/{digest}"), cuts: 1, cut_after: 200_000, ..Default::default() },
    );
    let src = source(&format!("{}/os:v1", proxy.addr), &insecure());
    let bytes = read_blob(src.as_ref(), &layer, 0).await.unwrap();
    assert_eq!(bytes.len() as u64, layer.size());
    assert_eq!(Digest::of(&bytes).to_string(), digest);
    let reqs = proxy.matching_requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert!(!reqs[0].contains("\r\nrange:"), "{}", reqs[0]);
    let range = reqs[1].lines().find(|l| l.starts_with("range:")).expect("the resume asks for a range");
    let from: u64 = range.trim_start_matches("range: bytes=").trim_end_matches('-').parse().unwrap();
    assert!(from > 0 && from < 200_000, "resumed from {from}");
}

#[tokio::test]
async fn blob_cut_when_registry_ignores_range_skips_resent_bytes() {
    let reg = Registry::start();
    let layer = noisy_layer(&reg).await;
    let digest = layer.digest().to_string();
    let proxy = FaultProxy::start(
        &reg.addr,
        Faults {
            path_match: format!("/blobs/{digest}"),
            cuts: 1,
            cut_after: 150_000,
            strip_range: true,
            ..Default::default()
        },
    );
    let src = source(&format!("{}/os:v1", proxy.addr), &insecure());
    let bytes = read_blob(src.as_ref(), &layer, 0).await.unwrap();
    assert_eq!(Digest::of(&bytes).to_string(), digest);
    // The proxy records heads as received: the resume asked for a range, which
    // the "registry" ignored (so a full 200 came back and the prefix was skipped).
    let reqs = proxy.matching_requests();
    assert!(reqs.len() >= 2 && reqs[1].contains("\r\nrange:"), "{reqs:?}");
}

#[tokio::test]
async fn blob_5xx_burst_is_retried_and_an_endless_one_gives_up() {
    let reg = Registry::start();
    let layer = noisy_layer(&reg).await;
    let digest = layer.digest().to_string();
    let proxy = FaultProxy::start(
        &reg.addr,
        Faults { path_match: format!("/blobs/{digest}"), fail_503: 3, ..Default::default() },
    );
    let src = source(&format!("{}/os:v1", proxy.addr), &insecure());
    let bytes = read_blob(src.as_ref(), &layer, 0).await.unwrap();
    assert_eq!(Digest::of(&bytes).to_string(), digest);
    assert_eq!(proxy.matching_requests().len(), 4);

    let proxy = FaultProxy::start(
        &reg.addr,
        Faults { path_match: format!("/blobs/{digest}"), fail_503: 1000, ..Default::default() },
    );
    let src = source(&format!("{}/os:v1", proxy.addr), &insecure());
    let e = format!("{:#}", src.open_blob(&layer, 0).await.err().expect("an endless 503 burst must fail"));
    assert!(e.contains("503") && e.contains("5 times"), "{e}");
    assert_eq!(proxy.matching_requests().len(), 5);
}

#[tokio::test]
async fn blob_longer_than_its_descriptor_is_refused() {
    let reg = Registry::start();
    let layer = noisy_layer(&reg).await;
    let src = source(&reg.image("os:v1"), &insecure());
    let mut short = layer.clone();
    short.set_size(layer.size() - 100);
    let e = read_blob(src.as_ref(), &short, 0).await.unwrap_err();
    assert!(e.to_string().contains("descriptor says"), "{e}");
    let e = src.fetch_small_blob(&short).await.unwrap_err();
    assert!(format!("{e:#}").contains("more than the"), "{e:#}");

    // Shorter than its descriptor: the stream tries to resume past the end
    // and fails with the registry's answer instead of ending quietly.
    let mut long = layer.clone();
    long.set_size(layer.size() + 100);
    let e = read_blob(src.as_ref(), &long, 0).await.unwrap_err();
    let want = format!("stopped at byte {} of {} and could not resume", layer.size(), layer.size() + 100);
    assert!(e.to_string().contains(&want), "{e}");
}

#[tokio::test]
async fn bearer_token_is_reused_until_it_expires_then_renewed() {
    // Tokens said to live 4 s are renewed 2 s early (half the lifetime, at most 5 s).
    let tokens = TokenServer::start("tess", "pw", 4);
    let reg = Registry::start_tls_token(&tokens);
    let (work, _, _) = publish_with_creds(&reg, "tess:pw");
    let cert_dir = reg.cert_dir.clone().unwrap();
    let authfile = auth_json(work.path(), &reg.addr, "tess", "pw");
    let opts = RegistryOptions { cert_dir: Some(cert_dir), authfile: Some(authfile), ..Default::default() };
    let src = source(&reg.image("os:v1"), &opts);
    let before = tokens.requests().len();
    src.fetch_manifest("v1").await.unwrap().unwrap();
    src.fetch_manifest("v1").await.unwrap().unwrap();
    assert_eq!(tokens.requests().len() - before, 1, "the token was not reused");
    tokio::time::sleep(std::time::Duration::from_millis(2300)).await;
    src.fetch_manifest("v1").await.unwrap().unwrap();
    assert_eq!(tokens.requests().len() - before, 2, "the expired token was not renewed");
}

/// A hostile "registry" behind the proxy: every manifest request gets `response`.
fn hostile_manifest_source(reg: &Registry, response: Vec<u8>) -> (FaultProxy, Box<dyn ImageSource>) {
    let proxy = FaultProxy::start(
        &reg.addr,
        Faults { path_match: "/manifests/".into(), respond: Some(std::sync::Arc::new(response)), ..Default::default() },
    );
    let src = source(&format!("{}/os:v1", proxy.addr), &insecure());
    (proxy, src)
}

#[tokio::test]
async fn oversized_manifest_is_refused_with_or_without_content_length() {
    let reg = Registry::start();
    let big = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","annotations":{{"pad":"{}"}}}}"#,
        "x".repeat(5 << 20)
    );
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n";
    let with_length = format!("{head}Content-Length: {}\r\n\r\n{big}", big.len()).into_bytes();
    let (_p, src) = hostile_manifest_source(&reg, with_length);
    let e = format!("{:#}", src.fetch_manifest("v1").await.unwrap_err());
    assert!(e.contains("more than the 4194304 bytes allowed"), "{e}");

    // Chunked, so the size is only known by reading: the cap stops the read.
    let mut chunked = format!("{head}Transfer-Encoding: chunked\r\n\r\n").into_bytes();
    for piece in big.as_bytes().chunks(64 * 1024) {
        chunked.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        chunked.extend_from_slice(piece);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let (_p, src) = hostile_manifest_source(&reg, chunked);
    let e = format!("{:#}", src.fetch_manifest("v1").await.unwrap_err());
    assert!(e.contains("more than the 4194304 bytes allowed"), "{e}");
}

#[tokio::test]
async fn lying_docker_content_digest_header_is_a_digest_mismatch() {
    let reg = Registry::start();
    let body = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},"layers":[]}"#;
    let claimed = Digest::of(b"something else");
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nDocker-Content-Digest: {claimed}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (_p, src) = hostile_manifest_source(&reg, response.clone().into_bytes());
    let e = src.fetch_manifest("v1").await.unwrap_err();
    let mismatch = e.chain().find_map(|c| c.downcast_ref::<DigestMismatch>()).unwrap_or_else(|| panic!("{e:#}"));
    assert_eq!(mismatch.expected, claimed);
    assert_eq!(mismatch.actual, Digest::of(body.as_bytes()));

    // The same reply with an honest header is accepted (the check is not a blanket refusal).
    let honest = response.replace(&claimed.to_string(), &Digest::of(body.as_bytes()).to_string());
    let (_p, src) = hostile_manifest_source(&reg, honest.into_bytes());
    let m = src.fetch_manifest("v1").await.unwrap().unwrap();
    assert_eq!(m.bytes, body.as_bytes());
}

// ---- `hostctl image pull` end to end (registry source + store) ----

fn pull_json(sysroot: &Path, args: &[&str]) -> serde_json::Value {
    let out = crate::support::hostctl_ok(sysroot, args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn cli_pull_over_tls_with_basic_auth_from_authfile() {
    let reg = Registry::start_tls_basic("alice", "s3cret-pw");
    let cert_dir = reg.cert_dir.clone().unwrap();
    let cd = cert_dir.to_str().unwrap();
    let dest = ["--dest-creds", "alice:s3cret-pw", "--dest-cert-dir", cd];
    let (work, image) = publish(&reg, "os:v1", 300_000, Compression::Gzip, &dest);
    let expected = skopeo_digest(&image, &["--creds", "alice:s3cret-pw", "--cert-dir", cd]);
    let authfile = auth_json(work.path(), &reg.addr, "alice", "s3cret-pw");

    let sysroot = tempfile::tempdir().unwrap();
    let v = pull_json(
        sysroot.path(),
        &["--cert-dir", cd, "--authfile", authfile.to_str().unwrap(), "image", "pull", "--json", &image],
    );
    assert_eq!(v["image"]["imageDigest"], expected, "{v}");
    assert_eq!(v["layersDownloaded"], 1, "{v}");

    // REGISTRY_AUTH_FILE names the auth file too.
    let sysroot2 = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::support::hostctl_bin())
        .env("REGISTRY_AUTH_FILE", &authfile)
        .arg("--sysroot")
        .arg(sysroot2.path())
        .args(["--cert-dir", cd, "image", "pull", "--json", &image])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Wrong password: a failure naming the registry and the auth file, not the secret.
    let bad = auth_json(work.path(), &reg.addr, "alice", "wrong-password");
    let out = crate::support::hostctl(
        sysroot.path(),
        &["--cert-dir", cd, "--authfile", bad.to_str().unwrap(), "image", "pull", "--json", &reg.image("os:v1")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("401") && stderr.contains(&reg.addr) && stderr.contains(bad.to_str().unwrap()), "{stderr}");
    assert!(!stderr.contains("wrong-password"), "the password leaked: {stderr}");
}

#[test]
fn cli_pull_over_bearer_tokens() {
    let tokens = TokenServer::start("tess", "t0ken-pw", 300);
    let reg = Registry::start_tls_token(&tokens);
    let cert_dir = reg.cert_dir.clone().unwrap();
    let cd = cert_dir.to_str().unwrap();
    let dest = ["--dest-creds", "tess:t0ken-pw", "--dest-cert-dir", cd];
    let (work, image) = publish(&reg, "os:v1", 300_000, Compression::Zstd, &dest);
    let expected = skopeo_digest(&image, &["--creds", "tess:t0ken-pw", "--cert-dir", cd]);
    let authfile = auth_json(work.path(), &reg.addr, "tess", "t0ken-pw");
    let before = tokens.requests().len();

    let sysroot = tempfile::tempdir().unwrap();
    let args = ["--cert-dir", cd, "--authfile", authfile.to_str().unwrap(), "image", "pull", "--json", &image];
    let v = pull_json(sysroot.path(), &args);
    assert_eq!(v["image"]["imageDigest"], expected, "{v}");
    assert_eq!(v["layersDownloaded"], 1, "{v}");
    let granted = tokens.requests().into_iter().skip(before).filter(|r| r.granted).count();
    assert_eq!(granted, 1, "one token for the whole pull");
    let v = pull_json(sysroot.path(), &args);
    assert_eq!(v["layersDownloaded"], 0, "{v}");
}

#[test]
fn cli_pull_chooses_platform_from_an_index() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let (_m_amd, m_arm, _index) = push_two_platform_index(&reg, work.path());
    let sysroot = tempfile::tempdir().unwrap();
    let image = reg.image("os:multi");
    let v = pull_json(
        sysroot.path(),
        &["--tls-verify=false", "--platform", "linux/arm64", "image", "pull", "--json", &image],
    );
    assert_eq!(v["image"]["imageDigest"], Digest::of(&m_arm).to_string(), "{v}");

    let out = crate::support::hostctl(
        sysroot.path(),
        &["--tls-verify=false", "--platform", "linux/ppc64le", "image", "pull", "--json", &image],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("linux/ppc64le") && stderr.contains("offers: linux/amd64, linux/arm64/v8"), "{stderr}");
}

#[tokio::test]
async fn small_blob_cut_mid_body_is_read_again() {
    let reg = Registry::start();
    let layer = noisy_layer(&reg).await; // ~600 KB: under the small-document cap
    let digest = layer.digest().to_string();
    let proxy = FaultProxy::start(
        &reg.addr,
        Faults { path_match: format!("/blobs/{digest}"), cuts: 1, cut_after: 200_000, ..Default::default() },
    );
    let src = source(&format!("{}/os:v1", proxy.addr), &insecure());
    let bytes = src.fetch_small_blob(&layer).await.unwrap();
    assert_eq!(Digest::of(&bytes).to_string(), digest);
    assert_eq!(proxy.matching_requests().len(), 2);
}

/// Measurement, not a check: streams a 100 MB blob through `open_blob` and
/// with `curl` from the same loopback registry, and prints both rates.
/// `cargo test --test integration -- --ignored registry_blob_throughput --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement"]
async fn registry_blob_throughput() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let data = crate::support::noise(100 << 20, 42);
    let digest = Digest::of(&data);
    let file = work.path().join("blob");
    std::fs::write(&file, &data).unwrap();
    drop(data);
    // Monolithic upload: POST then PUT with the digest.
    let out = run(std::process::Command::new("curl").args([
        "-sS",
        "-o",
        "/dev/null",
        "-D",
        "-",
        "-X",
        "POST",
        &format!("http://{}/v2/os/blobs/uploads/", reg.addr),
    ]));
    let headers = String::from_utf8(out.stdout).unwrap();
    let location = headers
        .lines()
        .find_map(|l| l.strip_prefix("Location: ").or_else(|| l.strip_prefix("location: ")))
        .unwrap()
        .trim()
        .to_string();
    let sep = if location.contains('?') { '&' } else { '?' };
    run(std::process::Command::new("curl").args([
        "-sSf",
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/octet-stream",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("{location}{sep}digest={digest}"),
    ]));
    let size = std::fs::metadata(&file).unwrap().len();
    let desc = Descriptor::new(
        oci_spec::image::MediaType::ImageLayer,
        size,
        oci_spec::image::Digest::try_from(digest.to_string()).unwrap(),
    );
    let src = source(&reg.image("os:v1"), &insecure());
    let mut best_ours = f64::MAX;
    let mut best_curl = f64::MAX;
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let mut r = match src.open_blob(&desc, 0).await.unwrap() {
            hostctl::oci::BlobReader::Async(r) => r,
            hostctl::oci::BlobReader::Sync(_) => unreachable!(),
        };
        let n = tokio::io::copy(&mut r, &mut tokio::io::sink()).await.unwrap();
        assert_eq!(n, size);
        best_ours = best_ours.min(t.elapsed().as_secs_f64());
        let t = std::time::Instant::now();
        run(std::process::Command::new("curl").args([
            "-sSf",
            "-o",
            "/dev/null",
            &format!("http://{}/v2/os/blobs/{digest}", reg.addr),
        ]));
        best_curl = best_curl.min(t.elapsed().as_secs_f64());
    }
    let mb = size as f64 / 1e6;
    eprintln!(
        "blob {mb:.0} MB: open_blob {:.0} MB/s, curl {:.0} MB/s, ratio {:.2}",
        mb / best_ours,
        mb / best_curl,
        best_ours / best_curl
    );
}

#[tokio::test]
async fn referrers_are_listed_when_the_registry_has_the_api() {
    // Distribution 2.8 lacks the referrers API (empty list, tested above), so
    // the reply of a registry that has it is played by the proxy.
    let reg = Registry::start();
    let subject = Digest::of(b"subject manifest");
    let sig = Digest::of(b"signature manifest");
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{sig}","size":123,"artifactType":"application/vnd.dev.cosign.artifact.sig.v1+json"}}]}}"#
    );
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.index.v1+json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let proxy = FaultProxy::start(
        &reg.addr,
        Faults {
            path_match: format!("/referrers/{subject}"),
            respond: Some(std::sync::Arc::new(reply.into_bytes())),
            ..Default::default()
        },
    );
    let src = source(&format!("{}/os:v1", proxy.addr), &insecure());
    let found = src.referrers(&subject).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].digest().to_string(), sig.to_string());
    assert_eq!(found[0].size(), 123);
    assert_eq!(proxy.matching_requests().len(), 1);
}

#[tokio::test]
async fn retry_after_from_a_busy_registry_is_honoured() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    build_image(work.path(), "v1", 100).push(&reg.image("os:v1"), Compression::Gzip);
    let proxy = FaultProxy::start(
        &reg.addr,
        Faults { path_match: "/manifests/v1".into(), fail_503: 1, retry_after: Some(2), ..Default::default() },
    );
    let src = source(&format!("{}/os:v1", proxy.addr), &insecure());
    let started = std::time::Instant::now();
    src.fetch_manifest("v1").await.unwrap().unwrap();
    // The first retry would come after 200 ms; the registry asked for 2 s.
    assert!(started.elapsed() >= std::time::Duration::from_secs(2), "{:?}", started.elapsed());
    assert_eq!(proxy.matching_requests().len(), 2);
}

/// `app update --check` and `upgrade --check` ask the registry once per
/// image: the manifest request goes out first, with no `GET /v2/` ping before
/// it (the distribution spec's flow: a client learns the auth challenge from
/// the resource's own 401). The insecure registry here speaks plain HTTP, so
/// that one request also found the endpoint after HTTPS failed. Before: 2
/// requests (`integration/bench/apps.sh` counted 40 for 20 apps).
#[tokio::test]
async fn a_manifest_check_is_one_request_with_no_ping_before_it() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    build_image(work.path(), "v1", 100).push(&reg.image("os:v1"), Compression::Gzip);
    let proxy = FaultProxy::start(&reg.addr, Faults { path_match: "/v2/".into(), ..Default::default() });
    let src = source(&format!("{}/os:v1", proxy.addr), &insecure());
    src.fetch_manifest("v1").await.unwrap().expect("the manifest");
    let reqs = proxy.matching_requests();
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
    assert!(reqs[0].lines().next().unwrap().contains("/v2/os/manifests/v1"), "{reqs:#?}");
    // The endpoint is remembered: the next request is one request too.
    src.fetch_manifest("v1").await.unwrap().expect("the manifest");
    assert_eq!(proxy.matching_requests().len(), 2);
}

// ---- client certificates (containers-certs.d(5)) ----

#[test]
fn cli_pull_with_client_certificate_from_cert_dir_or_certs_d() {
    let reg = Registry::start_tls_mutual();
    let client_dir = reg.client_cert_dir.clone().unwrap();
    let ca_only = reg.cert_dir.clone().unwrap();
    let (client_cd, ca_cd) = (client_dir.to_str().unwrap(), ca_only.to_str().unwrap());
    let (_work, image) = publish(&reg, "os:v1", 2048, Compression::Gzip, &["--dest-cert-dir", client_cd]);
    let expected = skopeo_digest(&image, &["--cert-dir", client_cd]);
    let sysroot = tempfile::tempdir().unwrap();
    let pull = |env: &[(&str, &std::ffi::OsStr)], extra: &[&str]| {
        let args: Vec<&str> = extra.iter().copied().chain(["image", "pull", "--json", &image]).collect();
        crate::support::hostctl_env(sysroot.path(), env, &args)
    };

    // The server CA alone: the registry refuses the connection without a client certificate.
    let out = pull(&[], &["--cert-dir", ca_cd]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains(&format!("cannot reach registry {}", reg.addr)), "{stderr}");
    assert!(stderr.contains("no client certificate"), "no TLS reason given: {stderr}");

    // --cert-dir with the client certificate and key.
    let out = pull(&[], &["--cert-dir", client_cd]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["image"]["imageDigest"], expected, "{v}");

    // A certs.d root holding `127.0.0.1:PORT/` (the second root; the first lacks the registry).
    let roots = tempfile::tempdir().unwrap();
    let empty_root = roots.path().join("empty");
    let root = roots.path().join("certs.d");
    let per_registry = root.join(&reg.addr);
    std::fs::create_dir_all(&per_registry).unwrap();
    std::fs::create_dir_all(&empty_root).unwrap();
    for f in ["ca.crt", "client.cert", "client.key"] {
        std::fs::copy(client_dir.join(f), per_registry.join(f)).unwrap();
    }
    let certs_d = std::env::join_paths([&empty_root, &root]).unwrap();
    let sysroot2 = tempfile::tempdir().unwrap();
    let out = crate::support::hostctl_env(
        sysroot2.path(),
        &[("HOSTCTL_CERTS_D", &certs_d)],
        &["image", "pull", "--json", &image],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["image"]["imageDigest"], expected, "{v}");

    // A certificate without its key is a clear error naming the file.
    std::fs::rename(per_registry.join("client.key"), per_registry.join("other.name")).unwrap();
    let out = pull(&[("HOSTCTL_CERTS_D", &certs_d)], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("client.cert") && stderr.contains("has no key") && stderr.contains(&reg.addr), "{stderr}");
}

/// containers-certs.d(5) uses pairs in alpha-numerical order; hostctl can
/// offer one client certificate, so it offers the first by name and warns
/// about the others (src/oci/registry/certs_d.rs says why).
#[test]
fn cli_pull_with_several_client_certificates_offers_the_first_by_name() {
    let reg = Registry::start_tls_mutual();
    let client_dir = reg.client_cert_dir.clone().unwrap();
    let (work, image) =
        publish(&reg, "os:v1", 2048, Compression::Gzip, &["--dest-cert-dir", client_dir.to_str().unwrap()]);
    // The server CA, the registry's client pair as `client.*`, and a pair
    // from a CA the registry does not trust as `other.*` (after it by name).
    let dir = work.path().join("certs");
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["ca.crt", "client.cert", "client.key"] {
        std::fs::copy(client_dir.join(f), dir.join(f)).unwrap();
    }
    crate::support::registry::untrusted_client_pair(work.path(), &dir, "other");
    let sysroot = tempfile::tempdir().unwrap();
    let pull =
        || crate::support::hostctl(sysroot.path(), &["--cert-dir", dir.to_str().unwrap(), "image", "pull", &image]);
    let (client, other) = (dir.join("client.cert"), dir.join("other.cert"));

    let out = pull();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let warning =
        format!("only the first by name, {}, is offered to {} (not: {})", client.display(), reg.addr, other.display());
    assert!(stderr.contains(&warning), "{stderr}");

    // Renamed to sort first, the untrusted pair is the one offered: the
    // handshake fails, and the error names the pair offered and the one left out.
    for ext in ["cert", "key"] {
        std::fs::rename(dir.join(format!("other.{ext}")), dir.join(format!("a-other.{ext}"))).unwrap();
    }
    let out = pull();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let note = format!("client certificate {} (not offered: {})", dir.join("a-other.cert").display(), client.display());
    assert!(stderr.contains(&format!("cannot reach registry {}", reg.addr)) && stderr.contains(&note), "{stderr}");
}

// ---- credential helpers (containers-auth.json(5)) ----

/// Writes `dir/docker-credential-NAME`: a shell script that records the
/// registry it was asked about in `dir/NAME.asked` and runs `body`.
fn credential_helper(dir: &Path, name: &str, body: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(format!("docker-credential-{name}"));
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\n[ \"$1\" = get ] || exit 9\nread -r registry\necho \"$registry\" >> {}/{name}.asked\n{body}\n",
            dir.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// PATH with `dir` first.
fn path_with(dir: &Path) -> std::ffi::OsString {
    let old = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&old))).unwrap()
}

#[test]
fn cli_pull_with_credentials_from_credential_helpers() {
    let reg = Registry::start_tls_basic("alice", "helper-pw");
    let (work, image, cd) = publish_with_creds(&reg, "alice:helper-pw");
    let cd = cd.as_str();
    let helpers = tempfile::tempdir().unwrap();
    let ok = r#"printf '{"ServerURL":"%s","Username":"alice","Secret":"helper-pw"}' "$registry""#;
    credential_helper(helpers.path(), "good", ok);
    credential_helper(helpers.path(), "empty", "echo 'credentials not found in native keychain'; exit 1");
    credential_helper(helpers.path(), "broken", "echo 'the keyring is locked' >&2; exit 3");
    let path = path_with(helpers.path());
    let sysroot = tempfile::tempdir().unwrap();
    let pull = |auth: &str| {
        let file = work.path().join(format!("auth-{}.json", auth.len()));
        std::fs::write(&file, auth).unwrap();
        let out = crate::support::hostctl_env(
            sysroot.path(),
            &[("PATH", &path)],
            &["--cert-dir", cd, "--authfile", file.to_str().unwrap(), "image", "pull", "--json", &image],
        );
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let asked = |name: &str| std::fs::read_to_string(helpers.path().join(format!("{name}.asked"))).unwrap_or_default();

    // credHelpers names the helper for this registry; the inline entry (a wrong password) is not used.
    let wrong = base64::engine::general_purpose::STANDARD.encode("alice:wrong");
    let (ok, stderr) =
        pull(&format!(r#"{{"auths":{{"{a}":{{"auth":"{wrong}"}}}},"credHelpers":{{"{a}":"good"}}}}"#, a = reg.addr));
    assert!(ok, "{stderr}");
    assert_eq!(asked("good"), format!("{}\n", reg.addr), "the helper gets the registry host on stdin");

    // credsStore serves registries without a credHelpers entry.
    let (ok, stderr) = pull(r#"{"auths":{},"credsStore":"good"}"#);
    assert!(ok, "{stderr}");

    // "credentials not found": no credentials, so the registry's 401 is reported as such.
    let (ok, stderr) = pull(&format!(r#"{{"credHelpers":{{"{}":"empty"}}}}"#, reg.addr));
    assert!(!ok);
    assert!(
        stderr.contains("401") && stderr.contains(&format!("no credentials for {} were found", reg.addr)),
        "{stderr}"
    );
    assert_eq!(asked("empty"), format!("{}\n", reg.addr));

    // Any other failure is an error naming the helper and what it said.
    let (ok, stderr) = pull(&format!(r#"{{"credHelpers":{{"{}":"broken"}}}}"#, reg.addr));
    assert!(!ok);
    assert!(
        stderr.contains("docker-credential-broken")
            && stderr.contains("the keyring is locked")
            && stderr.contains("exit status: 3"),
        "{stderr}"
    );

    // A helper that is not installed is a clear error too.
    let (ok, stderr) = pull(&format!(r#"{{"credHelpers":{{"{}":"absent"}}}}"#, reg.addr));
    assert!(!ok);
    assert!(stderr.contains("docker-credential-absent") && stderr.contains("PATH"), "{stderr}");

    // A password the registry refuses: the error names the helper, never the secret.
    credential_helper(helpers.path(), "stale", r#"echo '{"Username":"alice","Secret":"stale-secret-pw"}'"#);
    let (ok, stderr) = pull(&format!(r#"{{"credHelpers":{{"{}":"stale"}}}}"#, reg.addr));
    assert!(!ok);
    assert!(stderr.contains("401") && stderr.contains("docker-credential-stale"), "{stderr}");
    assert!(!stderr.contains("stale-secret-pw"), "the secret leaked: {stderr}");

    // An identity token cannot answer a Basic challenge: said so, without the token.
    credential_helper(helpers.path(), "idtoken", r#"echo '{"Username":"<token>","Secret":"some-refresh-token"}'"#);
    let (ok, stderr) = pull(&format!(r#"{{"credHelpers":{{"{}":"idtoken"}}}}"#, reg.addr));
    assert!(!ok);
    assert!(stderr.contains("Basic") && stderr.contains("identity token"), "{stderr}");
    assert!(!stderr.contains("some-refresh-token"), "the token leaked: {stderr}");
}

/// `os:v1` in a TLS registry behind `tokens`, pulled by the CLI with an
/// auth.json naming one credential helper: `idtoken` answers the identity
/// token `refresh-me-42`, `badtoken` a revoked one.
struct IdentityTokenPull {
    reg: Registry,
    work: tempfile::TempDir,
    image: String,
    cert_dir: String,
    path: std::ffi::OsString,
    _helpers: tempfile::TempDir,
    sysroot: tempfile::TempDir,
}

impl IdentityTokenPull {
    fn new(tokens: &TokenServer) -> IdentityTokenPull {
        let reg = Registry::start_tls_token(tokens);
        let (work, image, cert_dir) = publish_with_creds(&reg, "tess:t0ken-pw");
        let helpers = tempfile::tempdir().unwrap();
        credential_helper(helpers.path(), "idtoken", r#"echo '{"Username":"<token>","Secret":"refresh-me-42"}'"#);
        credential_helper(helpers.path(), "badtoken", r#"echo '{"Username":"<token>","Secret":"revoked-token"}'"#);
        let path = path_with(helpers.path());
        IdentityTokenPull { reg, work, image, cert_dir, path, _helpers: helpers, sysroot: tempfile::tempdir().unwrap() }
    }

    fn pull(&self, helper: &str) -> std::process::Output {
        let file = self.work.path().join(format!("auth-{helper}.json"));
        std::fs::write(&file, format!(r#"{{"credHelpers":{{"{}":"{helper}"}}}}"#, self.reg.addr)).unwrap();
        crate::support::hostctl_env(
            self.sysroot.path(),
            &[("PATH", &self.path)],
            &[
                "--cert-dir",
                &self.cert_dir,
                "--authfile",
                file.to_str().unwrap(),
                "image",
                "pull",
                "--json",
                &self.image,
            ],
        )
    }
}

#[test]
fn cli_pull_with_an_identity_token_from_a_credential_helper() {
    let tokens = TokenServer::start_with_refresh_token("tess", "t0ken-pw", 300, Some("refresh-me-42"));
    let t = IdentityTokenPull::new(&tokens);
    let before = tokens.requests().len();
    let out = t.pull("idtoken");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ours: Vec<_> = tokens.requests().into_iter().skip(before).collect();
    assert!(!ours.is_empty());
    for r in &ours {
        // Exchanged with the OAuth2 refresh-token grant, never sent as a password.
        assert_eq!((r.method.as_str(), r.grant_type.as_deref()), ("POST", Some("refresh_token")), "{r:?}");
        assert!(r.granted && r.scopes == ["repository:os:pull"], "{r:?}");
    }

    // A revoked token: the token server's refusal, with where the token came from, not the token.
    let out = t.pull("badtoken");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("token server") && stderr.contains("401") && stderr.contains("identity token"), "{stderr}");
    assert!(!stderr.contains("revoked-token"), "the token leaked: {stderr}");
}

/// A token server without the OAuth2 endpoint answers the refresh-token POST
/// with 404: the identity token is then sent on the token spec's GET (as the
/// Basic password of `<token>`), once per process; a token the GET refuses
/// is reported with both answers.
#[test]
fn identity_token_falls_back_to_the_get_token_request_when_the_oauth2_post_is_404() {
    let tokens = TokenServer::start_without_oauth2("tess", "t0ken-pw", 300, "refresh-me-42");
    let t = IdentityTokenPull::new(&tokens);
    let before = tokens.requests().len();
    let out = t.pull("idtoken");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ours: Vec<_> = tokens.requests().into_iter().skip(before).collect();
    let posts: Vec<_> = ours.iter().filter(|r| r.method == "POST").collect();
    assert_eq!(posts.len(), 1, "the 404 is remembered: {ours:?}");
    assert!(!posts[0].granted && posts[0].grant_type.as_deref() == Some("refresh_token"), "{ours:?}");
    assert_eq!(ours[0].method, "POST", "the OAuth2 POST comes first: {ours:?}");
    let gets: Vec<_> = ours.iter().filter(|r| r.method == "GET").collect();
    assert!(!gets.is_empty() && gets.iter().all(|r| r.granted && r.scopes == ["repository:os:pull"]), "{ours:?}");

    let out = t.pull("badtoken");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("401 Unauthorized")
            && stderr.contains("to the GET token request, after 404 Not Found to the OAuth2 POST")
            && stderr.contains("identity token"),
        "{stderr}"
    );
    assert!(!stderr.contains("revoked-token"), "the token leaked: {stderr}");
}

// ---- registries.conf (containers-registries.conf(5)) ----

/// Writes a registries.conf and returns options that read only it.
fn with_registries_conf(dir: &Path, text: &str) -> RegistryOptions {
    let file = dir.join(format!("registries-{}.conf", text.len()));
    std::fs::write(&file, text).unwrap();
    RegistryOptions { registries_conf: vec![file], ..Default::default() }
}

/// An address where nothing listens (a registry that is down).
fn down_registry() -> String {
    format!("127.0.0.1:{}", crate::support::registry::free_port())
}

#[tokio::test]
async fn mirror_serves_the_pull_while_the_primary_is_down() {
    let mirror = Registry::start();
    let work = tempfile::tempdir().unwrap();
    build_image(work.path(), "v1", 4096).push(&mirror.image("cache/team/os:v1"), Compression::Gzip);
    let primary = down_registry();
    let opts = with_registries_conf(
        work.path(),
        &format!(
            "[[registry]]\nprefix = \"{primary}/team\"\ninsecure = true\n\
             [[registry.mirror]]\nlocation = \"{}/cache/team\"\ninsecure = true\n",
            mirror.addr
        ),
    );
    // By tag: every manifest and blob digest is checked (pull_all), whoever served them.
    let src = source(&format!("{primary}/team/os:v1"), &opts);
    let (resolved, _) = pull_all(src.as_ref()).await;
    assert_eq!(
        resolved.raw.digest.to_string(),
        skopeo_digest(&mirror.image("cache/team/os:v1"), &["--tls-verify=false"])
    );
    assert!(src.describe().contains(&format!("mirror {}/cache/team/os", mirror.addr)), "{}", src.describe());
    // By digest too.
    let pinned = source(&format!("{primary}/team/os@{}", resolved.raw.digest), &opts);
    assert_eq!(pinned.resolve(&amd64()).await.unwrap().raw.digest, resolved.raw.digest);

    // A mirror without the image is passed over; with the primary down too,
    // the error names the primary and what the mirror said.
    let missing = source(&format!("{primary}/team/os:v9"), &opts);
    let e = format!("{:#}", missing.resolve(&amd64()).await.unwrap_err());
    assert!(e.contains(&primary) && e.contains(&format!("{}/cache/team/os:v9: not found", mirror.addr)), "{e}");
}

#[tokio::test]
async fn lying_mirror_is_refused_by_digest_and_the_primary_serves() {
    let primary = Registry::start();
    let liar = Registry::start();
    let work = tempfile::tempdir().unwrap();
    build_image(work.path(), "v1", 100).push(&primary.image("os:v1"), Compression::Gzip);
    build_image(work.path(), "v2", 100).push(&liar.image("os:v2"), Compression::Gzip);
    let digest = source(&primary.image("os:v1"), &insecure()).resolve(&amd64()).await.unwrap().raw.digest.to_string();
    // The mirror answers the digest request with v2's manifest.
    let proxy = FaultProxy::start(
        &liar.addr,
        Faults {
            path_match: format!("/manifests/{digest}"),
            rewrite: Some((digest.clone(), "v2".into())),
            ..Default::default()
        },
    );
    let mut opts = with_registries_conf(
        work.path(),
        &format!("[[registry]]\nprefix = \"{}\"\n[[registry.mirror]]\nlocation = \"{}\"\n", primary.addr, proxy.addr),
    );
    opts.insecure = true;
    let src = source(&format!("{}/os@{digest}", primary.addr), &opts);
    let r = src.resolve(&amd64()).await.unwrap();
    assert_eq!(r.raw.digest.to_string(), digest);
    assert_eq!(proxy.matching_requests().len(), 1, "the mirror was asked first");
    assert_eq!(src.describe(), format!("registry {}/os", primary.addr));
}

/// `DELETE /v2/REPO/KIND/DIGEST` on `reg` (KIND `manifests` or `blobs`; the
/// test registries have deletes enabled): the registry then answers 404 for it.
fn delete_from(reg: &Registry, repo: &str, kind: &str, digest: &str) {
    run(std::process::Command::new("curl").args([
        "-sSf",
        "-X",
        "DELETE",
        &format!("http://{}/v2/{repo}/{kind}/{digest}", reg.addr),
    ]));
}

/// A mirror that serves the index but has lost one child manifest and one
/// layer: each of those is fetched from the primary, the rest from the
/// mirror; a mirror that answers with the wrong child manifest is passed over
/// the same way (digests are checked whoever serves).
#[tokio::test]
async fn mirror_lacking_a_child_manifest_or_a_blob_falls_back_for_that_item() {
    let upstream = Registry::start();
    let mirror = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let (m_amd, m_arm, index) = push_two_platform_index(&upstream, work.path());
    run(std::process::Command::new("skopeo")
        .args(["copy", "-q", "--all", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false"])
        .arg(format!("docker://{}", upstream.image("os:multi")))
        .arg(format!("docker://{}", mirror.image("os:multi"))));
    let (amd, arm) = (Digest::of(&m_amd).to_string(), Digest::of(&m_arm).to_string());
    let amd_layer =
        serde_json::from_slice::<oci_spec::image::ImageManifest>(&m_amd).unwrap().layers()[0].digest().to_string();
    delete_from(&mirror, "os", "manifests", &arm);
    delete_from(&mirror, "os", "blobs", &amd_layer);
    // The primary location, behind a proxy that records what it is asked.
    let primary = FaultProxy::start(&upstream.addr, Faults { path_match: "/v2/os/".into(), ..Default::default() });
    let conf = |mirror: &str| {
        format!(
            "[[registry]]\nprefix = \"{}\"\ninsecure = true\n[[registry.mirror]]\nlocation = \"{mirror}\"\ninsecure = true\n",
            primary.addr
        )
    };
    let opts = with_registries_conf(work.path(), &conf(&mirror.addr));
    let image = format!("{}/os:multi", primary.addr);

    // amd64: index, manifest and config from the mirror; the layer from the
    // primary (pull_all checks every digest and size).
    let src = source(&image, &opts);
    let (r, _) = pull_all(src.as_ref()).await;
    assert_eq!((r.raw.digest.to_string(), r.index_digest), (amd.clone(), Some(Digest::of(index.as_bytes()))));
    assert!(src.describe().contains(&format!("mirror {}/os", mirror.addr)), "{}", src.describe());
    let asked = primary.matching_requests();
    assert!(!asked.is_empty() && asked.iter().all(|r| r.contains(&format!("/blobs/{amd_layer}"))), "{asked:#?}");

    // arm64: its manifest from the primary.
    let r = src.resolve(&"linux/arm64".parse().unwrap()).await.unwrap();
    assert_eq!(r.raw.digest.to_string(), arm);
    assert!(primary.matching_requests().iter().any(|r| r.contains(&format!("/manifests/{arm}"))));

    // A mirror that answers arm64's digest with amd64's manifest: refused by
    // digest, and the primary serves it.
    let liar = FaultProxy::start(
        &mirror.addr,
        Faults { path_match: format!("/manifests/{arm}"), rewrite: Some((arm.clone(), amd)), ..Default::default() },
    );
    let opts = with_registries_conf(work.path(), &format!("{}\n", conf(&liar.addr)));
    let r = source(&image, &opts).resolve(&"linux/arm64".parse().unwrap()).await.unwrap();
    assert_eq!(r.raw.digest.to_string(), arm);
    assert_eq!(liar.matching_requests().len(), 1, "the mirror was asked first");

    // With the primary down too, the error says what the mirror said.
    let down = down_registry();
    let opts = with_registries_conf(
        work.path(),
        &format!("[[registry]]\nprefix = \"{down}\"\ninsecure = true\n[[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\n", mirror.addr),
    );
    let e = source(&format!("{down}/os:multi"), &opts).resolve(&"linux/arm64".parse().unwrap()).await.unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("mirrors tried first") && e.contains(&format!("{}/os: not found", mirror.addr)), "{e}");
}

/// A mirror that fails for good in the middle of a layer (it cuts the body,
/// then answers 503 to every resume): the download carries on at the primary
/// location from the byte it had reached, with a `Range` request, and the
/// layer's digest still checks.
#[tokio::test]
async fn mirror_failing_mid_layer_hands_the_rest_to_the_primary() {
    let upstream = Registry::start();
    let mirror = Registry::start();
    let work = tempfile::tempdir().unwrap();
    build_image(work.path(), "v1", 1 << 20).push(&upstream.image("os:v1"), Compression::Gzip);
    run(std::process::Command::new("skopeo")
        .args(["copy", "-q", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false"])
        .arg(format!("docker://{}", upstream.image("os:v1")))
        .arg(format!("docker://{}", mirror.image("os:v1"))));
    let layer =
        source(&upstream.image("os:v1"), &insecure()).resolve(&amd64()).await.unwrap().manifest.layers()[0].clone();
    let blob = format!("/blobs/{}", layer.digest());
    let primary = FaultProxy::start(&upstream.addr, Faults { path_match: blob.clone(), ..Default::default() });
    let failing = FaultProxy::start(
        &mirror.addr,
        Faults { path_match: blob.clone(), cuts: 1, cut_after: 64 * 1024, down_after_cuts: true, ..Default::default() },
    );
    let opts = with_registries_conf(
        work.path(),
        &format!(
            "[[registry]]\nprefix = \"{}\"\ninsecure = true\n[[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\n",
            primary.addr, failing.addr
        ),
    );
    let src = source(&format!("{}/os:v1", primary.addr), &opts);
    pull_all(src.as_ref()).await;
    assert!(src.describe().contains(&format!("mirror {}/os", failing.addr)), "{}", src.describe());
    assert!(failing.matching_requests().len() > 1, "the mirror was asked to resume first");
    // The primary was asked only for the rest of the layer.
    let asked = primary.matching_requests();
    let from: Vec<u64> =
        asked.iter().filter_map(|r| r.split("\r\nrange: bytes=").nth(1)?.split('-').next()?.parse().ok()).collect();
    assert!(asked.len() == 1 && from.len() == 1, "{asked:#?}");
    assert!(from[0] > 0 && from[0] < layer.size(), "{from:?} of {}", layer.size());

    // With the primary down too, the error says where each endpoint stopped.
    let down = down_registry();
    let failing = FaultProxy::start(
        &mirror.addr,
        Faults { path_match: blob, cuts: 1, cut_after: 64 * 1024, down_after_cuts: true, ..Default::default() },
    );
    let opts = with_registries_conf(
        work.path(),
        &format!(
            "[[registry]]\nprefix = \"{down}\"\ninsecure = true\n[[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\n",
            failing.addr
        ),
    );
    let src = source(&format!("{down}/os:v1"), &opts);
    let e = read_blob(src.as_ref(), &layer, 0).await.unwrap_err().to_string();
    assert!(e.contains("could not resume") && e.contains(&format!("given up before: {}/os:", failing.addr)), "{e}");
}

#[tokio::test]
async fn digest_only_mirror_is_skipped_for_tags() {
    let primary = Registry::start();
    let mirror = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let layout = build_image(work.path(), "v1", 100);
    layout.push(&primary.image("os:v1"), Compression::Gzip);
    layout.push(&mirror.image("os:v1"), Compression::Gzip);
    let proxy = FaultProxy::start(&mirror.addr, Faults::default());
    let opts = with_registries_conf(
        work.path(),
        &format!(
            "[[registry]]\nprefix = \"{}\"\ninsecure = true\n\
             [[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\npull-from-mirror = \"digest-only\"\n",
            primary.addr, proxy.addr
        ),
    );
    let by_tag = source(&primary.image("os:v1"), &opts);
    let (resolved, _) = pull_all(by_tag.as_ref()).await;
    assert!(proxy.requests().is_empty(), "a tag pull asked the digest-only mirror: {:?}", proxy.requests());
    // A pull by digest goes to the mirror.
    let by_digest = source(&format!("{}/os@{}", primary.addr, resolved.raw.digest), &opts);
    pull_all(by_digest.as_ref()).await;
    assert!(proxy.requests().iter().any(|r| r.contains(&format!("/manifests/{}", resolved.raw.digest))));
    assert!(by_digest.describe().contains("mirror"), "{}", by_digest.describe());
}

#[tokio::test]
async fn blocked_prefix_is_refused_and_location_rewrites_the_name() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    build_image(work.path(), "v1", 100).push(&reg.image("real/os:v1"), Compression::Gzip);
    let opts = with_registries_conf(
        work.path(),
        &format!(
            "[[registry]]\nprefix = \"registry.invalid/team\"\nlocation = \"{}/real\"\ninsecure = true\n\
             [[registry]]\nprefix = \"{}/forbidden\"\nblocked = true\n",
            reg.addr, reg.addr
        ),
    );
    // The logical name does not resolve; the location does, and is insecure (plain HTTP).
    let src = source("registry.invalid/team/os:v1", &opts);
    pull_all(src.as_ref()).await;
    assert_eq!(src.describe(), format!("registry registry.invalid/team/os (at {}/real/os)", reg.addr));

    let r: ImageRef = reg.image("forbidden/os:v1").parse().unwrap();
    let e = format!("{:#}", open_source(&r, &opts).err().expect("a blocked name must be refused"));
    assert!(e.contains("blocked") && e.contains(&format!("{}/forbidden", reg.addr)), "{e}");
    // Outside the blocked prefix: allowed.
    assert!(open_source(&reg.image("real/os:v1").parse().unwrap(), &opts).is_ok());
}

#[test]
fn cli_pull_reads_containers_registries_conf() {
    let mirror = Registry::start();
    let work = tempfile::tempdir().unwrap();
    build_image(work.path(), "v1", 2048).push(&mirror.image("os:v1"), Compression::Gzip);
    let primary = down_registry();
    let conf = work.path().join("registries.conf");
    std::fs::write(
        &conf,
        format!(
            "[[registry]]\nprefix = \"{primary}\"\n[[registry.mirror]]\nlocation = \"{}\"\ninsecure = true\n\
             [[registry]]\nprefix = \"{}/blocked\"\nblocked = true\n",
            mirror.addr, mirror.addr
        ),
    )
    .unwrap();
    let sysroot = tempfile::tempdir().unwrap();
    let env = [("CONTAINERS_REGISTRIES_CONF", conf.as_os_str())];
    let out =
        crate::support::hostctl_env(sysroot.path(), &env, &["image", "pull", "--json", &format!("{primary}/os:v1")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["image"]["imageDigest"], skopeo_digest(&mirror.image("os:v1"), &["--tls-verify=false"]), "{v}");

    let out = crate::support::hostctl_env(
        sysroot.path(),
        &env,
        &["--tls-verify=false", "image", "pull", &mirror.image("blocked/os:v1")],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("blocked by registries.conf") && stderr.contains(conf.to_str().unwrap()), "{stderr}");
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_honoured() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    build_image(work.path(), "v1", 100).push(&reg.image("os:v1"), Compression::Gzip);
    // Three seconds from now, in whole seconds: the wait is between 2 and 3 s
    // from here, however long the proxy below takes to start.
    let started = std::time::Instant::now();
    let when = std::time::SystemTime::now() + std::time::Duration::from_secs(3);
    let secs = when.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let date = time::OffsetDateTime::from_unix_timestamp(secs).unwrap();
    let http_date = date
        .format(time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        ))
        .unwrap();
    let proxy = FaultProxy::start(
        &reg.addr,
        Faults {
            path_match: "/manifests/v1".into(),
            fail_503: 1,
            retry_after_text: Some(http_date.clone()),
            ..Default::default()
        },
    );
    let src = source(&format!("{}/os:v1", proxy.addr), &insecure());
    src.fetch_manifest("v1").await.unwrap().unwrap();
    let waited = started.elapsed();
    assert!(waited >= std::time::Duration::from_millis(1900), "{http_date}: waited {waited:?}");
    assert!(waited < std::time::Duration::from_secs(10), "{http_date}: waited {waited:?}");
    assert_eq!(proxy.matching_requests().len(), 2);
}
