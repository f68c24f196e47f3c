//! Writing to a repository: blobs uploaded in one request (POST then PUT with
//! the digest, the spec's monolithic upload), from memory for small
//! documents (rollout metadata, referrers indexes) or streamed from a file
//! for image layers (`image rechunk` to a registry), never held whole; and
//! manifests PUT by tag or digest; authorised with a push scope.

use anyhow::{anyhow, bail, Context, Result};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use reqwest::{RequestBuilder, Response, StatusCode};

use super::client::{header_str, Client};
use crate::digest::Digest;

/// What a manifest PUT answered.
#[derive(Clone, Debug)]
pub struct PutManifest {
    /// The manifest's digest.
    pub digest: Digest,
    /// The registry answered with `OCI-Subject`: it indexes the manifest's
    /// `subject` for the referrers API by itself.
    pub subject_indexed: bool,
}

impl Client {
    fn push_scope(&self) -> String {
        format!("repository:{}:pull,push", self.repository)
    }

    /// Sends the request `build` makes, authorised for push, once more after
    /// a 401 that brings a challenge.
    async fn send_push(&self, what: &str, build: impl Fn() -> RequestBuilder) -> Result<Response> {
        let scope = self.push_scope();
        for attempt in 0..2 {
            let mut req = build();
            if let Some(h) = self.auth.header(&self.http, &scope).await? {
                req = req.header(AUTHORIZATION, h);
            }
            let resp = req.send().await.with_context(|| format!("{what} in {}", self.repository))?;
            if resp.status() == StatusCode::UNAUTHORIZED && attempt == 0 {
                let challenge = header_str(&resp, WWW_AUTHENTICATE).map(str::to_string);
                self.auth.record_challenge(challenge.as_deref()).await;
                self.auth.forget_token(&scope).await;
                if challenge.is_some() {
                    continue;
                }
            }
            return Ok(resp);
        }
        unreachable!("the loop returns")
    }

    /// Uploads `bytes` as a blob (skipped when the registry has it already).
    pub async fn push_blob(&self, bytes: &[u8]) -> Result<Digest> {
        let digest = Digest::of(bytes);
        let body = bytes.to_vec();
        self.upload(&digest, bytes.len() as u64, || Ok(reqwest::Body::from(body.clone()))).await?;
        Ok(digest)
    }

    /// Uploads the file at `path`, whose digest is `digest` and length
    /// `size`, as a blob, streamed (skipped when the registry has it
    /// already). The registry checks the digest; a file that changed under
    /// us is refused by it, not pushed under a wrong name.
    pub async fn push_blob_file(&self, path: &std::path::Path, digest: &Digest, size: u64) -> Result<()> {
        self.upload(digest, size, || {
            let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let stream = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file));
            Ok(reqwest::Body::wrap_stream(stream))
        })
        .await
    }

    /// The monolithic upload of blob `digest` (`size` bytes), its body made
    /// by `body` (once more if the PUT must be retried after a challenge).
    async fn upload(&self, digest: &Digest, size: u64, body: impl Fn() -> Result<reqwest::Body>) -> Result<()> {
        let base = self.base().await?.to_string();
        let repo = &self.repository;
        let blob_url = format!("{base}/v2/{repo}/blobs/{digest}");
        let head = self.send_push("checking a blob", || self.http.head(&blob_url)).await?;
        if head.status() == StatusCode::OK {
            return Ok(());
        }
        let start_url = format!("{base}/v2/{repo}/blobs/uploads/");
        let started = self.send_push("starting a blob upload", || self.http.post(&start_url)).await?;
        if started.status() != StatusCode::ACCEPTED {
            return Err(self.status_error(started, &format!("starting the upload of blob {digest}")).await);
        }
        let location = header_str(&started, LOCATION).context("the registry gave no upload location")?.to_string();
        let location = if location.starts_with('/') { format!("{base}{location}") } else { location };
        let sep = if location.contains('?') { '&' } else { '?' };
        let put_url = format!("{location}{sep}digest={digest}");
        body()?; // fails here, not inside the request, if the content cannot be read
        let put = self
            .send_push("uploading a blob", || {
                let req = self.http.put(&put_url).header(CONTENT_TYPE, "application/octet-stream");
                match body() {
                    Ok(b) => req.header(reqwest::header::CONTENT_LENGTH, size).body(b),
                    // Readable a moment ago; an empty body the registry refuses by its digest.
                    Err(_) => req.body(Vec::new()),
                }
            })
            .await?;
        if put.status() != StatusCode::CREATED {
            return Err(self.status_error(put, &format!("uploading blob {digest}")).await);
        }
        Ok(())
    }

    /// PUTs a manifest (or index) at `reference` (a tag, or its digest).
    pub async fn put_manifest(&self, reference: &str, media_type: &str, bytes: &[u8]) -> Result<PutManifest> {
        let digest = Digest::of(bytes);
        let url = format!("{}/v2/{}/manifests/{reference}", self.base().await?, self.repository);
        let body = bytes.to_vec();
        let resp = self
            .send_push("putting a manifest", || self.http.put(&url).header(CONTENT_TYPE, media_type).body(body.clone()))
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.status_error(resp, &format!("putting manifest {reference}")).await);
        }
        if let Some(d) = header_str(&resp, reqwest::header::HeaderName::from_static("docker-content-digest")) {
            if d != digest.to_string() {
                bail!("registry {} stored manifest {reference} as {d}, not {digest}", self.registry);
            }
        }
        let subject_indexed = resp.headers().contains_key("oci-subject");
        Ok(PutManifest { digest, subject_indexed })
    }

    /// Whether the registry serves the OCI 1.1 referrers API (asked about
    /// `subject`): 200 with an index yes; 404 (Distribution 2.x) no.
    pub async fn has_referrers_api(&self, subject: &Digest) -> Result<bool> {
        let resp = self.get(&format!("referrers/{subject}"), &[super::manifest::OCI_INDEX], None).await?;
        match resp.status() {
            StatusCode::OK => {
                let ct = header_str(&resp, CONTENT_TYPE).unwrap_or_default().to_string();
                Ok(ct.starts_with(super::manifest::OCI_INDEX))
            }
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED | StatusCode::NOT_IMPLEMENTED => Ok(false),
            s => Err(anyhow!("registry {} answered {s} for the referrers of {subject}", self.registry)),
        }
    }
}
