//! Docker credential helpers (`docker-credential-<name> get`), as auth.json's
//! `credHelpers` and `credsStore` name them: the protocol of
//! docker-credential-helpers, which podman and skopeo speak too.
//!
//! The helper, found on `PATH`, gets the registry host on stdin and answers
//! `{"ServerURL":…,"Username":…,"Secret":…}` on stdout; "credentials not
//! found" (with a non-zero exit) means it has none. The secret never appears
//! in errors or logs.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// The user name a helper answers with when the secret is an identity
/// (OAuth2 refresh) token rather than a password.
pub const IDENTITY_TOKEN_USER: &str = "<token>";

/// What a helper answered.
#[derive(Deserialize)]
struct Reply {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// The program that implements helper `name`.
pub fn program(name: &str) -> String {
    format!("docker-credential-{name}")
}

/// The helper program is not installed (not on `PATH`).
#[derive(Debug, thiserror::Error)]
#[error("credential helper {program} is not installed (not found on PATH)")]
pub struct HelperMissing {
    /// The helper's program name (`docker-credential-…`).
    pub program: String,
}

/// Asks helper `name` for `registry`'s credentials: `(username, secret)`, or
/// `None` when it has none.
pub fn get(name: &str, registry: &str) -> Result<Option<(String, String)>> {
    let program = program(name);
    if name.is_empty() || name.contains('/') {
        bail!("invalid credential helper name {name:?}");
    }
    let mut child = Command::new(&program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => anyhow::Error::new(HelperMissing { program: program.clone() }),
            _ => anyhow::Error::new(e).context(format!("running credential helper {program}")),
        })?;
    // A helper that exits without reading its input closes the pipe: its exit
    // status and output then tell what happened.
    let _ = child.stdin.take().expect("stdin is piped").write_all(format!("{registry}\n").as_bytes());
    let out = child.wait_with_output().with_context(|| format!("waiting for credential helper {program}"))?;
    if !out.status.success() {
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if stdout.contains("credentials not found") || stderr.contains("credentials not found") {
            return Ok(None);
        }
        // What a failing helper says is a message, not a secret; still, one
        // line at most, shortened.
        let said = [stdout.trim(), stderr.trim()]
            .into_iter()
            .find_map(|s| s.lines().map(str::trim).find(|l| !l.is_empty()))
            .map(|l| format!(": {}", l.chars().take(200).collect::<String>()))
            .unwrap_or_default();
        bail!("credential helper {program} failed for {registry} ({}{said})", out.status);
    }
    // The reply holds the secret: parse errors must not quote it.
    let reply: Reply = serde_json::from_slice(&out.stdout).map_err(|e| {
        anyhow::anyhow!(
            "credential helper {program} sent a reply for {registry} that is not the expected JSON \
             (line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    if reply.username.is_empty() && reply.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some((reply.username, reply.secret)))
}
