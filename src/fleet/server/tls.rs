//! TLS for the lock server (`--tls-cert`, `--tls-key`) and, with
//! `--client-ca`, client certificates: who a host is comes from the
//! certificate it presents, not from the request body.
//!
//! A host's id is its certificate's subject **Common Name** (CN), which must
//! be there exactly once; the agent's id is the host's machine-id, so a
//! host's certificate carries `CN=<machine-id>`. The certificate must chain
//! to a CA in the `--client-ca` file and be valid for client authentication
//! (webpki's checks: validity period, key usage, signatures).
//!
//! The TLS handshake also lets a client in without a certificate, so that
//! `GET /v1/status` stays readable by any client that trusts the server and
//! a FleetLock request without one gets a FleetLock refusal (403) that says
//! why, rather than a bare handshake failure.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio_rustls::TlsAcceptor;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::Decode;

/// The subject attribute a host's id is read from: commonName (2.5.4.3).
pub const ID_ATTRIBUTE: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.4.3");

/// The server's TLS files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) that sign the hosts' client certificates;
    /// `None`: no client certificates, the body's id is trusted.
    pub client_ca: Option<PathBuf>,
}

/// Who is asking, as far as TLS says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// The server checks no client certificates (no `--client-ca`): the
    /// body's id is trusted, as FleetLock clients expect.
    Anyone,
    /// A verified client certificate naming this id.
    Certified(String),
    /// `--client-ca` is set but the client presented no usable certificate (why).
    Uncertified(String),
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("reading {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: not PEM certificates", path.display()))?;
    if certs.is_empty() {
        bail!("{}: no certificate in it", path.display());
    }
    Ok(certs)
}

/// The acceptor for `files`.
pub fn acceptor(files: &TlsFiles) -> Result<TlsAcceptor> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain = certs(&files.cert).context("--tls-cert")?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("--tls-key {}: no PEM private key in it", files.key.display()))?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in certs(ca).context("--client-ca")? {
                roots
                    .add(c)
                    .with_context(|| format!("--client-ca {}: a certificate is not a usable CA", ca.display()))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .with_context(|| format!("--client-ca {}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .with_context(|| format!("--tls-cert {} with --tls-key {}", files.cert.display(), files.key.display()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Who the client of a finished handshake is: `checks_clients` says whether
/// the server runs with `--client-ca` (the verifier has then already checked
/// the chain of whatever certificate was presented).
pub fn caller(conn: &rustls::ServerConnection, checks_clients: bool) -> Caller {
    if !checks_clients {
        return Caller::Anyone;
    }
    let Some(leaf) = conn.peer_certificates().and_then(|c| c.first()) else {
        return Caller::Uncertified("no client certificate was presented (this server runs with --client-ca)".into());
    };
    match id_of(leaf.as_ref()) {
        Ok(id) => Caller::Certified(id),
        Err(e) => Caller::Uncertified(format!("{e:#}")),
    }
}

/// The host id a certificate (DER) names: its one subject CN.
pub fn id_of(der: &[u8]) -> Result<String> {
    let cert = x509_cert::Certificate::from_der(der).context("the client certificate cannot be parsed")?;
    let subject = cert.tbs_certificate().subject();
    let mut cns = subject.iter().filter(|a| a.oid == ID_ATTRIBUTE);
    let (Some(cn), None) = (cns.next(), cns.next()) else {
        bail!("the client certificate's subject ({subject}) must hold exactly one CN, the host's id");
    };
    let value = x509_cert::ext::pkix::name::DirectoryString::try_from(&cn.value)
        .context("the client certificate's CN is not a string")?;
    let id = value.value().into_owned();
    if id.is_empty() {
        bail!("the client certificate's CN is empty");
    }
    Ok(id)
}
