//! stderr as a terminal for `--progress=bar` when it is not one: indicatif
//! draws through this with the usual control codes (cursor up, clear line),
//! so a log file or a CI console that renders them shows the bars as a
//! terminal would. The width is `COLUMNS`, else 80.

use std::io::{self, Write};

use indicatif::TermLike;

/// stderr, treated as a terminal of a fixed width.
#[derive(Debug)]
pub struct ForcedStderr {
    width: u16,
}

impl ForcedStderr {
    pub fn new() -> Self {
        let width = std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).filter(|w| *w >= 20).unwrap_or(80);
        ForcedStderr { width }
    }

    fn write(&self, s: &str) -> io::Result<()> {
        io::stderr().lock().write_all(s.as_bytes())
    }

    fn code(&self, n: usize, letter: char) -> io::Result<()> {
        if n == 0 {
            return Ok(());
        }
        self.write(&format!("\x1b[{n}{letter}"))
    }
}

impl TermLike for ForcedStderr {
    fn width(&self) -> u16 {
        self.width
    }

    fn move_cursor_up(&self, n: usize) -> io::Result<()> {
        self.code(n, 'A')
    }

    fn move_cursor_down(&self, n: usize) -> io::Result<()> {
        self.code(n, 'B')
    }

    fn move_cursor_right(&self, n: usize) -> io::Result<()> {
        self.code(n, 'C')
    }

    fn move_cursor_left(&self, n: usize) -> io::Result<()> {
        self.code(n, 'D')
    }

    fn write_line(&self, s: &str) -> io::Result<()> {
        self.write(&format!("{s}\n"))
    }

    fn write_str(&self, s: &str) -> io::Result<()> {
        self.write(s)
    }

    fn clear_line(&self) -> io::Result<()> {
        self.write("\r\x1b[2K")
    }

    fn flush(&self) -> io::Result<()> {
        io::stderr().flush()
    }
}
