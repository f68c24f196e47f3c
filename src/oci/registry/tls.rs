//! The HTTP client's TLS set-up: verified TLS with the system roots by
//! default, extra CA roots from `--cert-dir` (`*.crt`, as containers'
//! `certs.d` directories hold them), and unverified TLS only when the
//! registry is explicitly insecure (`--tls-verify=false`).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::oci::RegistryOptions;

/// How long a connection attempt may take before it counts as failed (and is retried).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a read may stall before the connection counts as broken (and the blob resumes).
pub const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads every `*.crt` file of `dir` as PEM CA certificates (bundles allowed).
pub fn load_cert_dir(dir: &Path) -> Result<Vec<reqwest::Certificate>> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading certificate directory {}", dir.display()))?;
    let mut paths: Vec<_> = entries
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .with_context(|| format!("listing {}", dir.display()))?;
    paths.retain(|p| p.extension().is_some_and(|e| e == "crt"));
    paths.sort();
    let mut certs = Vec::new();
    for p in &paths {
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

/// Builds the HTTP client for `opts`.
pub fn http_client(opts: &RegistryOptions) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("hostctl/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT);
    if let Some(dir) = &opts.cert_dir {
        builder = builder.tls_certs_merge(load_cert_dir(dir)?);
    }
    if opts.insecure {
        builder = builder.danger_accept_invalid_certs(true);
    }
    builder.build().context("building the HTTP client")
}
