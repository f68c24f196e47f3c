//! The HTTP client's TLS set-up for one registry: verified TLS with the system
//! roots by default, plus the registry's TLS directory (`--cert-dir`, or its
//! containers-certs.d(5) directory): extra CA roots and a client certificate;
//! unverified TLS only when the registry is explicitly insecure.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tracing::warn;

use super::certs_d;
use crate::oci::RegistryOptions;

/// How long a connection attempt may take before it counts as failed (and is retried).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a read may stall before the connection counts as broken (and the blob resumes).
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The TLS directory that applies to `registry`: `--cert-dir` when given,
/// else the first certs.d root holding `<registry>/`.
pub fn tls_dir(opts: &RegistryOptions, registry: &str) -> Option<PathBuf> {
    match &opts.cert_dir {
        Some(dir) => Some(dir.clone()),
        None => certs_d::find(&opts.certs_d, registry),
    }
}

/// Reads PEM CA certificates (bundles allowed) from each file.
fn load_roots(files: &[PathBuf]) -> Result<Vec<reqwest::Certificate>> {
    let mut certs = Vec::new();
    for p in files {
        let pem = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
        let found = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{} is not a PEM certificate file", p.display()))?;
        if found.is_empty() {
            bail!("{} holds no PEM certificate", p.display());
        }
        certs.extend(found);
    }
    Ok(certs)
}

/// Reads a client certificate (PEM, chain allowed) and its PEM private key.
fn load_identity(cert: &Path, key: &Path) -> Result<reqwest::Identity> {
    let mut pem = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
    pem.push(b'\n');
    pem.extend(std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?);
    reqwest::Identity::from_pem(&pem).with_context(|| {
        format!(
            "{} and {} are not a PEM client certificate and its private key (PKCS#8, RSA or SEC1)",
            cert.display(),
            key.display()
        )
    })
}

/// Builds the HTTP client for `registry` under `opts`, and says which TLS
/// files it uses (for messages), if any.
pub fn http_client(opts: &RegistryOptions, registry: &str) -> Result<(reqwest::Client, Option<String>)> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("hostctl/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT);
    let mut note = None;
    if let Some(dir) = tls_dir(opts, registry) {
        let files = certs_d::scan(&dir).with_context(|| format!("TLS settings for registry {registry}"))?;
        builder = builder.tls_certs_merge(load_roots(&files.ca_files)?);
        if let Some((cert, key)) = &files.client {
            builder = builder.identity(load_identity(cert, key)?);
        }
        let unused: Vec<String> = files.unused_clients.iter().map(|c| c.display().to_string()).collect();
        if !unused.is_empty() {
            // Only one identity fits a reqwest client: see certs_d's module docs.
            warn!(
                "{} holds {} client certificates; only the first by name, {}, is offered to {registry} (not: {})",
                dir.display(),
                unused.len() + 1,
                files.client.as_ref().map(|(c, _)| c.display().to_string()).unwrap_or_default(),
                unused.join(", ")
            );
        }
        note = Some(format!(
            "TLS files from {}: {} CA file(s), {}{}",
            dir.display(),
            files.ca_files.len(),
            match &files.client {
                Some((cert, _)) => format!("client certificate {}", cert.display()),
                None => "no client certificate".to_string(),
            },
            if unused.is_empty() { String::new() } else { format!(" (not offered: {})", unused.join(", ")) }
        ));
    }
    if opts.insecure {
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    Ok((builder.build().context("building the HTTP client")?, note))
}
