//! `hostctl trust verify-bundle`: check a sigstore bundle by hand, with the
//! arguments of the sigstore conformance suite's CLI protocol (so the suite
//! drives the same verifier `image pull` uses for bundle signatures).
//! `hostctl trust update-root`: refresh the pinned `trusted_root.json`
//! through TUF from a mirror ([`crate::trust::tuf`]).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::output::outln;
use super::GlobalArgs;
use crate::error::PolicyRejected;
use crate::trust::bundle::{BundleVerifier, CertIdentity, Match, RootSource, SanKind, Signer, Subject};

#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// Verify a sigstore bundle over a file or a sha256 digest, offline.
    VerifyBundle(VerifyBundleArgs),
    /// Refresh the pinned trusted_root.json through TUF from a mirror.
    UpdateRoot(UpdateRootArgs),
}

#[derive(Debug, Args)]
pub struct UpdateRootArgs {
    /// The TUF repository's base URL (metadata at URL/N.root.json, URL/timestamp.json…,
    /// targets at URL/targets/).
    #[arg(long, value_name = "URL")]
    pub mirror: String,
    /// The pinned TUF root.json trust starts from [default: SYSROOT/etc/hostctl/sigstore/tuf-root.json].
    #[arg(long, value_name = "FILE")]
    pub tuf_root: Option<PathBuf>,
    /// Where the TUF metadata last trusted is kept (for rollback checks)
    /// [default: SYSROOT/var/lib/hostctl/sigstore/tuf].
    #[arg(long, value_name = "DIR")]
    pub metadata_dir: Option<PathBuf>,
    /// The trusted_root.json to replace [default: SYSROOT/etc/hostctl/sigstore/trusted_root.json].
    #[arg(long, value_name = "FILE")]
    pub trusted_root: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("signer").required(true).args(["key", "certificate_identity", "certificate_identity_regexp"])))]
pub struct VerifyBundleArgs {
    /// Without --trusted-root: the built-in public-good staging root instead of production.
    #[arg(long)]
    pub staging: bool,
    /// The bundle (`*.sigstore.json`, v0.1 to v0.3).
    #[arg(long, value_name = "FILE")]
    pub bundle: PathBuf,
    /// The signing certificate's identity (SAN: email or URI), exactly.
    #[arg(long, value_name = "IDENTITY", conflicts_with = "key")]
    pub certificate_identity: Option<String>,
    /// The signing certificate's identity, as a regular expression matching all of it.
    #[arg(long, value_name = "REGEX", conflicts_with_all = ["key", "certificate_identity"])]
    pub certificate_identity_regexp: Option<String>,
    /// The OIDC issuer the certificate must name, exactly.
    #[arg(long, value_name = "URL")]
    pub certificate_oidc_issuer: Option<String>,
    /// The OIDC issuer, as a regular expression matching all of it.
    #[arg(long, value_name = "REGEX", conflicts_with = "certificate_oidc_issuer")]
    pub certificate_oidc_issuer_regexp: Option<String>,
    /// A PEM public key that signed (a bundle without certificate).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The trusted_root.json [default: SYSROOT/etc/hostctl/sigstore/trusted_root.json if
    /// present, else the public-good root built into hostctl].
    #[arg(long, value_name = "FILE")]
    pub trusted_root: Option<PathBuf>,
    /// The signed file, or its digest as `sha256:HEX`.
    #[arg(value_name = "FILE_OR_DIGEST")]
    pub artifact: String,
}

impl VerifyBundleArgs {
    fn signer(&self) -> Result<Signer> {
        if let Some(k) = &self.key {
            return Signer::key_file(k);
        }
        let subject = match (&self.certificate_identity, &self.certificate_identity_regexp) {
            (Some(s), _) => Match::Exact(s.clone()),
            (None, Some(r)) => Match::regex(r)?,
            (None, None) => unreachable!("clap requires one"),
        };
        let issuer = match (&self.certificate_oidc_issuer, &self.certificate_oidc_issuer_regexp) {
            (Some(s), _) => Match::Exact(s.clone()),
            (None, Some(r)) => Match::regex(r)?,
            (None, None) => {
                anyhow::bail!("--certificate-oidc-issuer (or -regexp) is required with a certificate identity")
            }
        };
        Ok(Signer::Identity(CertIdentity { kind: SanKind::Any, subject, issuer }))
    }

    fn root(&self, g: &GlobalArgs) -> RootSource {
        if let Some(p) = &self.trusted_root {
            return RootSource::File(p.clone());
        }
        let pinned = g.sysroot.join(crate::trust::PINNED_TRUSTED_ROOT);
        if !self.staging && pinned.exists() {
            return RootSource::File(pinned);
        }
        if self.staging {
            RootSource::Staging
        } else {
            RootSource::Production
        }
    }
}

pub async fn run(g: &GlobalArgs, c: TrustCommand) -> Result<()> {
    match c {
        TrustCommand::VerifyBundle(a) => verify_bundle(g, a),
        TrustCommand::UpdateRoot(a) => update_root(g, a).await,
    }
}

async fn update_root(g: &GlobalArgs, a: UpdateRootArgs) -> Result<()> {
    use crate::trust::tuf;
    let tuf_root = a.tuf_root.unwrap_or_else(|| g.sysroot.join(tuf::PINNED_TUF_ROOT));
    let metadata_dir = a.metadata_dir.unwrap_or_else(|| g.sysroot.join(tuf::TUF_METADATA_DIR));
    let out = a.trusted_root.unwrap_or_else(|| g.sysroot.join(crate::trust::PINNED_TRUSTED_ROOT));
    match tuf::update_root(&a.mirror, &tuf_root, &metadata_dir, &out).await {
        Ok(u) => {
            let what = if u.changed { "updated" } else { "unchanged" };
            outln!(
                "{}: {what} (TUF root version {}, targets version {}, from {}).",
                u.path.display(),
                u.root_version,
                u.targets_version,
                a.mirror
            )?;
            Ok(())
        }
        Err(tuf::UpdateError::Refused(reason)) => Err(PolicyRejected {
            image: tuf::TRUSTED_ROOT_TARGET.into(),
            rule: format!("TUF root {}", tuf_root.display()),
            reason: format!("{reason}; {} was left as it was", out.display()),
        }
        .into()),
        Err(tuf::UpdateError::Other(e)) => Err(e.context(format!("{} was left as it was", out.display()))),
    }
}

fn verify_bundle(g: &GlobalArgs, a: VerifyBundleArgs) -> Result<()> {
    let signer = a.signer()?;
    let verifier = BundleVerifier::new(&a.root(g))?;
    let bundle = std::fs::read(&a.bundle).with_context(|| format!("reading bundle {}", a.bundle.display()))?;
    let subject = Subject::from_arg(&a.artifact)?;
    match verifier.verify(&bundle, &subject, &signer) {
        Ok(who) => {
            outln!("Verified: {} signed by {who} (trusted root: {}).", a.artifact, verifier.root)?;
            Ok(())
        }
        Err(e) => Err(PolicyRejected {
            image: a.artifact.clone(),
            rule: format!("bundle {}", a.bundle.display()),
            reason: format!("{e:#}"),
        }
        .into()),
    }
}
