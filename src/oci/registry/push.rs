//! Writing to a repository: small blobs uploaded in one request (POST then
//! PUT with the digest, the spec's monolithic upload) and manifests PUT by
//! tag or digest, authorised with a push scope. Only small documents are
//! pushed (rollout metadata, referrers indexes): no chunked uploads.

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
        let base = self.base().await?.to_string();
        let repo = &self.repository;
        let blob_url = format!("{base}/v2/{repo}/blobs/{digest}");
        let head = self.send_push("checking a blob", || self.http.head(&blob_url)).await?;
        if head.status() == StatusCode::OK {
            return Ok(digest);
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
        let body = bytes.to_vec();
        let put = self
            .send_push("uploading a blob", || {
                self.http.put(&put_url).header(CONTENT_TYPE, "application/octet-stream").body(body.clone())
            })
            .await?;
        if put.status() != StatusCode::CREATED {
            return Err(self.status_error(put, &format!("uploading blob {digest}")).await);
        }
        Ok(digest)
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
