//! Typed errors that callers branch on, and the exit codes scripts can trust.
//!
//! Everything else travels as `anyhow::Error` with context. `exit_code` looks
//! through an error chain for the first typed error and maps it to the
//! documented code (docs/cli.md).

use std::path::PathBuf;

use crate::digest::Digest;

/// Exit codes, documented in docs/cli.md.
pub mod code {
    /// Success.
    pub const OK: i32 = 0;
    /// Any failure without a more specific code.
    pub const FAILURE: i32 = 1;
    /// Bad command line (clap's own code).
    pub const USAGE: i32 = 2;
    /// Another hostctl holds the sysroot lock.
    pub const LOCKED: i32 = 3;
    /// The trust policy refused the image.
    pub const REJECTED: i32 = 4;
    /// Content did not match its digest (tampered or corrupted data).
    pub const INTEGRITY: i32 = 5;
    /// Not enough disk space.
    pub const NO_SPACE: i32 = 6;
    /// The sysroot was written by a newer hostctl (an on-disk format version
    /// newer than this one reads); nothing was changed.
    pub const FORMAT_TOO_NEW: i32 = 7;
    /// `fsck` found damage (without `--repair`: nothing was changed).
    pub const DAMAGED: i32 = 8;
    /// `fsck --repair` found damage and repaired all of it.
    pub const REPAIRED: i32 = 9;
    /// `fsck --repair` could not repair some of the damage (its source gone).
    pub const UNREPAIRED: i32 = 10;
}

/// Bytes that do not hash to the digest that named them.
#[derive(Debug, thiserror::Error)]
#[error("{what}: digest mismatch: expected {expected}, got {actual}")]
pub struct DigestMismatch {
    /// What was checked (a blob, a manifest, a layer), for the message.
    pub what: String,
    /// The digest it should have.
    pub expected: Digest,
    /// The digest it has.
    pub actual: Digest,
}

/// The trust policy refused an image.
#[derive(Debug, thiserror::Error)]
#[error("{image} was refused by the trust policy ({rule}): {reason}")]
pub struct PolicyRejected {
    /// The image reference rejected.
    pub image: String,
    /// Which policy rule refused (e.g. `docker scope "127.0.0.1:5000/os": sigstoreSigned`).
    pub rule: String,
    /// Why, in a sentence.
    pub reason: String,
}

/// A preflight or a write found too little space.
#[derive(Debug, thiserror::Error)]
#[error("not enough space on {path}: {needed} bytes needed, {available} available")]
pub struct InsufficientSpace {
    /// Where the space is needed.
    pub path: PathBuf,
    /// Bytes needed.
    pub needed: u64,
    /// Bytes available.
    pub available: u64,
}

/// A file of the sysroot has an on-disk format version newer than this
/// hostctl reads: it was written by a newer hostctl (before a rollback to an
/// older image, say). Nothing is changed.
#[derive(Debug, thiserror::Error)]
#[error(
    "{path} has {what} format version {found}{by}, but this hostctl reads version {supported} at most; \
     nothing was changed: use a hostctl at least as new as the one that wrote it",
    by = written_by.as_deref().map(|w| format!(" (written by {w})")).unwrap_or_default()
)]
pub struct FormatTooNew {
    /// The file that carries the version.
    pub path: PathBuf,
    /// Whose format (`store`, `deployment state`, `deployment metadata`, `layer index`).
    pub what: String,
    /// The version found.
    pub found: u32,
    /// The newest version this hostctl reads.
    pub supported: u32,
    /// The hostctl that wrote it, when the file says.
    pub written_by: Option<String>,
}

/// `hostctl fsck` found damage; `code` is [`code::DAMAGED`],
/// [`code::REPAIRED`] or [`code::UNREPAIRED`].
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct FsckOutcome {
    /// What to say (`3 damaged path(s) found; run hostctl fsck --repair`).
    pub message: String,
    /// The exit code.
    pub code: i32,
}

/// stdout's reader went away (`hostctl status | head`): the command ends
/// quietly with success, as coreutils do. Only `cli::output` raises it, so
/// a broken pipe elsewhere (a registry closing its socket) stays an error.
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed by its reader")]
pub struct StdoutClosed;

/// Whether `err` is only that stdout's reader went away ([`StdoutClosed`]).
pub fn is_stdout_closed(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.is::<StdoutClosed>()
            || c.downcast_ref::<std::io::Error>()
                .and_then(|e| e.get_ref())
                .is_some_and(|inner| inner.is::<StdoutClosed>())
    })
}

/// The exit code for an error chain.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if cause.is::<crate::sysroot::LockHeld>() {
            return code::LOCKED;
        }
        if cause.is::<PolicyRejected>() {
            return code::REJECTED;
        }
        if cause.is::<DigestMismatch>() {
            return code::INTEGRITY;
        }
        if cause.is::<InsufficientSpace>() || io_no_space(cause) {
            return code::NO_SPACE;
        }
        if cause.is::<FormatTooNew>() {
            return code::FORMAT_TOO_NEW;
        }
        if let Some(f) = cause.downcast_ref::<FsckOutcome>() {
            return f.code;
        }
    }
    code::FAILURE
}

/// Whether a write failed because its filesystem is full (ENOSPC) or a
/// quota is used up (EDQUOT), anywhere in the chain. Wrappers that keep the
/// error kind but not the errno (tempfile's) count too.
pub fn is_no_space(err: &anyhow::Error) -> bool {
    err.chain().any(io_no_space)
}

fn io_no_space(cause: &(dyn std::error::Error + 'static)) -> bool {
    let Some(io) = cause.downcast_ref::<std::io::Error>() else { return false };
    matches!(io.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) || io.kind() == std::io::ErrorKind::StorageFull
}

/// A line of advice printed after some errors: what a full disk leaves and
/// what to do about it.
pub fn hint(err: &anyhow::Error) -> Option<&'static str> {
    if is_no_space(err) {
        return Some(
            "the disk is full: free some space (`hostctl cleanup` removes what no deployment needs) and run the \
             command again; what was written for it has been removed, layers it completed stay in the store",
        );
    }
    err.chain().any(|c| c.is::<InsufficientSpace>()).then_some(
        "there is not enough free space for this: free some space (`hostctl cleanup` removes what no deployment \
         needs) and run the command again; it was refused before it filled the disk",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_errors_map_through_context() {
        let e = anyhow::Error::new(DigestMismatch {
            what: "layer".into(),
            expected: Digest::of(b"a"),
            actual: Digest::of(b"b"),
        })
        .context("pulling x");
        assert_eq!(exit_code(&e), code::INTEGRITY);
        let e = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::ENOSPC)).context("writing");
        assert_eq!(exit_code(&e), code::NO_SPACE);
        // tempfile wraps the errno in an error of its own that keeps the kind.
        let wrapped = std::io::Error::new(std::io::ErrorKind::StorageFull, "creating /x/.tmp-1");
        assert_eq!(exit_code(&anyhow::Error::new(wrapped).context("writing")), code::NO_SPACE);
        let quota = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::EDQUOT));
        assert_eq!(exit_code(&quota), code::NO_SPACE);
        assert!(hint(&quota).is_some() && hint(&anyhow::anyhow!("other")).is_none());
        assert_eq!(exit_code(&anyhow::anyhow!("other")), code::FAILURE);
    }

    #[test]
    fn only_a_tagged_broken_pipe_is_a_closed_stdout() {
        use std::io::{Error, ErrorKind};
        // A registry's socket closing under a request: an error, whatever its kind.
        let network = anyhow::Error::new(Error::from(ErrorKind::BrokenPipe)).context("cannot reach registry x");
        assert!(!is_stdout_closed(&network));
        assert_eq!(exit_code(&network), code::FAILURE);
        // What cli::output's writer returns when stdout's reader has gone.
        let stdout = anyhow::Error::new(Error::new(ErrorKind::BrokenPipe, StdoutClosed));
        assert!(is_stdout_closed(&stdout));
        assert!(is_stdout_closed(&stdout.context("printing the status")));
    }
}
