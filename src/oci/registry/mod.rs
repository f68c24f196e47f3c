//! The registry source: an OCI distribution spec client for one repository,
//! with auth (anonymous, Basic, Bearer tokens; credentials from auth.json and
//! credential helpers), TLS options, registries.conf mirrors and rewrites,
//! retries and resumable, size-capped blob streams.
//!
//! Files, one concept each: [`registries_conf`] (blocked names, rewrites,
//! mirrors), [`endpoint`] (one place to pull from; digest-checked manifest
//! GETs), [`client`] (HTTP endpoint, authorised GETs, retries),
//! [`retry_after`] (`Retry-After` seconds and dates), [`auth`]
//! (Basic and Bearer flows, token cache), [`challenge`] (`WWW-Authenticate`
//! parsing), [`authfile`] (auth.json lookup), [`credhelper`]
//! (docker-credential-* helpers), [`certs_d`] (per-registry TLS
//! directories), [`tls`] (roots, client certificate, insecure), [`manifest`]
//! (media types, index resolution), [`blob_stream`] (resume with `Range`),
//! [`push`] (blob uploads and manifest PUTs, for `fleet release`).
//!
//! Why not oci-client's `Client` (read for this; it is in Cargo.toml for the
//! trust work's sigstore use): it reads manifests and referrer lists whole
//! with no size cap, discards token-server errors (so a wrong password would
//! surface as a bare 401 with no reason), has no retries or resume, fixes the
//! URL scheme at construction (no HTTPS→HTTP fallback for insecure
//! registries), and knows no auth files. Each of those is a requirement
//! here, so the protocol is spoken with reqwest, which oci-client wraps too.

pub mod auth;
pub mod authfile;
pub mod blob_stream;
pub mod certs_d;
pub mod challenge;
pub mod client;
pub mod credhelper;
pub mod endpoint;
pub mod manifest;
pub mod push;
pub mod registries_conf;
pub mod retry_after;
pub mod tls;

use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use oci_spec::image::Descriptor;
use reqwest::StatusCode;
use tokio::sync::OnceCell;
use tracing::{info, warn};

use crate::digest::Digest;
use crate::error::DigestMismatch;
use crate::imgref::RegistryRef;
use crate::oci::platform::Platform;
use crate::oci::source::MAX_MANIFEST_SIZE;
use crate::oci::{BlobReader, ImageSource, RawManifest, RegistryOptions, ResolvedManifest};
use client::Small;
use endpoint::Endpoint;
use manifest::Kind;
use registries_conf::RegistriesConf;

/// An image name in a registry, and the places it may be pulled from:
/// registries.conf mirrors in order, then the primary location. The first
/// that has the image's top manifest serves the pull; when that is a mirror
/// and it lacks (or fails to serve) an index's child manifest, the config or
/// a layer, that one item is asked of the endpoints after it in turn (the
/// next mirrors, then the primary), as containers/image does per request.
/// Whoever serves an item, its digest is checked against the descriptor that
/// named it.
pub struct RegistrySource {
    reference: RegistryRef,
    endpoints: Vec<Endpoint>,
    chosen: OnceCell<Chosen>,
}

/// The endpoint serving a source, and what choosing it found out.
struct Chosen {
    index: usize,
    /// The top manifest read while choosing (reused by `resolve`).
    top: Option<RawManifest>,
    /// What the mirrors passed over said (for messages).
    skipped: Vec<String>,
}

impl RegistrySource {
    /// Prepares a source under the registries.conf files of `opts` (a blocked
    /// name is refused here); nothing is contacted until the first request.
    pub fn new(reference: RegistryRef, opts: &RegistryOptions) -> Result<Self> {
        let conf = RegistriesConf::load(&opts.registries_conf)?;
        let endpoints = conf
            .endpoints(&reference, opts.insecure)?
            .into_iter()
            .map(|spec| Endpoint::new(spec, opts))
            .collect::<Result<Vec<_>>>()?;
        Ok(RegistrySource { reference, endpoints, chosen: OnceCell::new() })
    }

    /// The endpoint for this pull. With mirrors, each is asked for the
    /// reference's manifest in turn and the first that has it is chosen; any
    /// failure moves on to the next. The primary location comes last and is
    /// chosen whatever it answers.
    async fn chosen(&self) -> Result<&Chosen> {
        self.chosen
            .get_or_try_init(|| async {
                if self.endpoints.len() == 1 {
                    return Ok(Chosen { index: 0, top: None, skipped: Vec::new() });
                }
                let mut skipped = Vec::new();
                for (index, ep) in self.endpoints.iter().enumerate() {
                    let found = ep.get_manifest(&ep.reference.reference()).await;
                    if !ep.mirror {
                        let top = found.map_err(|e| {
                            if skipped.is_empty() {
                                e
                            } else {
                                e.context(format!("mirrors tried first: {}", skipped.join("; ")))
                            }
                        })?;
                        return Ok(Chosen { index, top, skipped });
                    }
                    match found {
                        Ok(Some(top)) => {
                            info!("pulling {} from mirror {}", self.reference, ep.reference);
                            return Ok(Chosen { index, top: Some(top), skipped });
                        }
                        Ok(None) => skipped.push(format!("{}: not found", ep.reference)),
                        Err(e) => {
                            warn!("mirror {} of {}: {e:#}", ep.reference, self.reference);
                            skipped.push(format!("{}: {e:#}", ep.reference));
                        }
                    }
                }
                bail!("no primary location for {}", self.reference)
            })
            .await
    }

    async fn endpoint(&self) -> Result<&Endpoint> {
        Ok(&self.endpoints[self.chosen().await?.index])
    }

    /// Gets `what` from the serving endpoint with `get`; while the endpoint
    /// asked is a mirror that has no `what` (`Ok(None)`) or fails, asks the
    /// endpoints after it, up to the primary location, whose answer is final
    /// (its errors say what the mirrors said). `get` checks what it receives,
    /// so a mirror that serves wrong bytes is passed over like one that fails.
    async fn with_fallback<'a, T, F, Fut>(&'a self, what: &str, get: F) -> Result<Option<T>>
    where
        F: Fn(&'a Endpoint) -> Fut,
        Fut: std::future::Future<Output = Result<Option<T>>>,
    {
        let start = self.chosen().await?.index;
        let mut passed: Vec<String> = Vec::new();
        for ep in &self.endpoints[start..] {
            let got = get(ep).await;
            if !ep.mirror {
                return match got {
                    Ok(Some(v)) if !passed.is_empty() => {
                        info!(
                            "{what} of {}: served by {} ({})",
                            self.reference,
                            ep.reference.name(),
                            passed.join("; ")
                        );
                        Ok(Some(v))
                    }
                    Err(e) if !passed.is_empty() => {
                        Err(e.context(format!("mirrors tried first: {}", passed.join("; "))))
                    }
                    Ok(None) if !passed.is_empty() => {
                        bail!("{what} not found in {} (mirrors: {})", self.describe(), passed.join("; "))
                    }
                    other => other,
                };
            }
            match got {
                Ok(Some(v)) => {
                    if !passed.is_empty() {
                        info!("{what} of {}: served by mirror {}", self.reference, ep.reference.name());
                    }
                    return Ok(Some(v));
                }
                Ok(None) => passed.push(format!("{}: not found", ep.reference.name())),
                Err(e) => {
                    warn!("mirror {} of {}: {what}: {e:#}", ep.reference.name(), self.reference);
                    passed.push(format!("{}: {e:#}", ep.reference.name()));
                }
            }
        }
        bail!("no primary location for {}", self.reference)
    }

    /// The top manifest of the reference (`None`: not found anywhere).
    async fn top(&self) -> Result<Option<RawManifest>> {
        let chosen = self.chosen().await?;
        match &chosen.top {
            Some(m) => Ok(Some(m.clone())),
            None => self.endpoints[chosen.index].get_manifest(&self.reference.reference()).await,
        }
    }
}

#[async_trait]
impl ImageSource for RegistrySource {
    fn describe(&self) -> String {
        let ep = self.chosen.get().map(|c| &self.endpoints[c.index]);
        match ep {
            Some(ep) if ep.mirror => format!("registry {} (mirror {})", self.reference.name(), ep.reference.name()),
            Some(ep) if ep.reference.name() != self.reference.name() => {
                format!("registry {} (at {})", self.reference.name(), ep.reference.name())
            }
            _ => format!("registry {}", self.reference.name()),
        }
    }

    async fn resolve(&self, platform: &Platform) -> Result<ResolvedManifest> {
        let reference = self.reference.reference();
        let top = self.top().await?.with_context(|| {
            let skipped = &self.chosen.get().expect("chosen by top()").skipped;
            let mirrors =
                if skipped.is_empty() { String::new() } else { format!(" (mirrors: {})", skipped.join("; ")) };
            format!("manifest {reference} not found in {}{mirrors}", self.describe())
        })?;
        match manifest::kind(&top.media_type)? {
            Kind::Image => {
                let parsed = manifest::parse_image(&top.bytes).with_context(|| format!("manifest {}", top.digest))?;
                Ok(ResolvedManifest { raw: top, manifest: parsed, index_digest: None })
            }
            Kind::Index => {
                let index = manifest::parse_index(&top.bytes).with_context(|| format!("index {}", top.digest))?;
                let entry = manifest::choose(&index, platform).with_context(|| format!("index {}", top.digest))?;
                let digest: Digest = entry.digest().to_string().parse().context("index entry digest")?;
                let (what, reference) = (format!("manifest {digest} (for {platform})"), digest.to_string());
                let raw = self
                    .with_fallback(&what, |ep| ep.get_manifest(&reference))
                    .await?
                    .with_context(|| format!("{what} not found in {}", self.describe()))?;
                if raw.bytes.len() as u64 != entry.size() {
                    bail!("manifest {digest} is {} bytes but the index says {}", raw.bytes.len(), entry.size());
                }
                if manifest::kind(&raw.media_type)? != Kind::Image {
                    bail!("index {} entry {digest} for {platform} is not an image manifest", top.digest);
                }
                let parsed = manifest::parse_image(&raw.bytes).with_context(|| format!("manifest {digest}"))?;
                Ok(ResolvedManifest { raw, manifest: parsed, index_digest: Some(top.digest) })
            }
        }
    }

    async fn fetch_manifest(&self, reference: &str) -> Result<Option<RawManifest>> {
        self.endpoint().await?.get_manifest(reference).await
    }

    async fn referrers(&self, subject: &Digest) -> Result<Vec<Descriptor>> {
        let what = format!("referrers of {subject}");
        let client = &self.endpoint().await?.client;
        let bytes = match client
            .get_small(&format!("referrers/{subject}"), &[manifest::OCI_INDEX], MAX_MANIFEST_SIZE, &what)
            .await?
        {
            Small::Body { bytes, .. } => bytes,
            // Registries without the referrers API answer 404 (or 405/501).
            Small::Other(resp)
                if matches!(
                    resp.status(),
                    StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED
                ) =>
            {
                return Ok(Vec::new())
            }
            Small::Other(resp) => return Err(client.status_error(resp, &what).await),
        };
        let index = manifest::parse_index(&bytes).with_context(|| what.clone())?;
        Ok(index.manifests().clone())
    }

    async fn fetch_small_blob(&self, desc: &Descriptor) -> Result<Vec<u8>> {
        let digest: Digest = desc.digest().to_string().parse().context("blob digest")?;
        let size = desc.size();
        if size > MAX_MANIFEST_SIZE {
            bail!("blob {digest} is {size} bytes, more than the {MAX_MANIFEST_SIZE} allowed for a config or payload");
        }
        let what = format!("blob {digest}");
        let get = |ep: &Endpoint| {
            let (client, what, digest) = (ep.client.clone(), what.clone(), digest.clone());
            async move {
                let bytes = match client.get_small(&format!("blobs/{digest}"), &[], size, &what).await? {
                    Small::Body { bytes, .. } => bytes,
                    Small::Other(resp) => return Err(client.status_error(resp, &what).await),
                };
                if bytes.len() as u64 != size {
                    bail!("{what} is {} bytes but its descriptor says {size}", bytes.len());
                }
                let actual = Digest::of(&bytes);
                if actual != digest {
                    return Err(DigestMismatch { what, expected: digest, actual }.into());
                }
                Ok(Some(bytes))
            }
        };
        // `get` never answers `None`: a blob that is not there is an error (404).
        self.with_fallback(&what, get).await?.with_context(|| format!("{what} not found"))
    }

    /// The stream's bytes are checked against the digest by the reader (the
    /// store's import), after the stream is chosen: an endpoint is passed
    /// over here when it cannot open the blob, and by the stream when it
    /// fails for good mid-download (the stream carries on at the endpoints
    /// after it from the same byte).
    async fn open_blob(&self, desc: &Descriptor, offset: u64) -> Result<BlobReader> {
        let digest: Digest = desc.digest().to_string().parse().context("blob digest")?;
        let get = |ep: &Endpoint| {
            let (client, digest) = (ep.client.clone(), digest.clone());
            let at = self.endpoints.iter().position(|e| std::ptr::eq(e, ep)).expect("one of this source's endpoints");
            let fallbacks = self.endpoints[at + 1..].iter().map(|e| e.client.clone()).collect();
            async move { blob_stream::open(client, fallbacks, digest, desc.size(), offset).await.map(Some) }
        };
        let what = format!("blob {digest}");
        let stream = self.with_fallback(&what, get).await?.with_context(|| format!("{what} not found"))?;
        Ok(BlobReader::Async(Box::pin(tokio_util::io::StreamReader::new(stream))))
    }
}
