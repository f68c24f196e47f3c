//! Results on stdout: the one writer every command prints through, so that a
//! reader going away (`hostctl status | head`) ends the command quietly and
//! is never confused with a broken pipe anywhere else (a registry's socket).

use std::io::Write;

use anyhow::Result;

use crate::error::StdoutClosed;

/// stdout, locked, with a closed reader reported as [`StdoutClosed`].
pub struct Stdout(std::io::StdoutLock<'static>);

/// The writer for a command's results.
pub fn stdout() -> Stdout {
    Stdout(std::io::stdout().lock())
}

/// Tags a broken pipe on stdout so that `main` can tell it from other ones.
fn tag(err: std::io::Error) -> std::io::Error {
    if err.kind() == std::io::ErrorKind::BrokenPipe {
        std::io::Error::new(std::io::ErrorKind::BrokenPipe, StdoutClosed)
    } else {
        err
    }
}

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(tag)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().map_err(tag)
    }
}

/// `println!` through [`stdout`]: evaluates to `std::io::Result<()>`
/// instead of panicking when the reader has gone.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!($crate::cli::output::stdout(), $($arg)*)
    }};
}
pub(crate) use outln;

/// Prints `text` as it is on stdout.
pub fn print(text: &str) -> std::io::Result<()> {
    stdout().write_all(text.as_bytes())
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    // Serialised first: serde_json's error would hide the StdoutClosed tag.
    let text = serde_json::to_string_pretty(value)?;
    outln!("{text}")?;
    Ok(())
}
