//! Certificate authorities made with real openssl for the trust tests (a
//! Fulcio-like CA, a timestamp authority's root): a new key on a named curve
//! and a self-signed certificate valid for 30 days from now.

use std::path::Path;
use std::process::Command;

use super::run;

/// Runs `openssl ARGS` in `dir`, failing the test on a non-zero exit.
pub fn openssl(dir: &Path, args: &[&str]) {
    run(Command::new("openssl").current_dir(dir).args(args));
}

/// A self-signed CA in `dir`: the EC key `NAME.key` on `curve` (openssl's
/// name, e.g. `secp384r1`) and its certificate `NAME.pem` for `subject`,
/// with any `-addext` extensions in `exts`.
pub fn self_signed_ca(dir: &Path, name: &str, curve: &str, subject: &str, exts: &[&str]) {
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    openssl(dir, &["ecparam", "-name", curve, "-genkey", "-noout", "-out", &key]);
    let mut args = vec!["req", "-x509", "-new", "-key", &key, "-out", &pem, "-days", "30", "-subj", subject];
    for e in exts {
        args.extend(["-addext", e]);
    }
    openssl(dir, &args);
}
