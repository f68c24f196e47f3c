//! `hostctl completions SHELL` and `hostctl man DIR`: generated from the clap
//! definitions and the examples of [`super::help`].

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to generate completions for.
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// The directory to write `hostctl.1` and one page per subcommand into.
    pub dir: PathBuf,
}

pub fn completions(a: CompletionsArgs) -> Result<()> {
    let mut cmd = super::command();
    // Into a buffer first: clap_complete panics on a write error.
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "hostctl", &mut script);
    super::output::stdout().write_all(&script)?;
    Ok(())
}

pub fn man(a: ManArgs) -> Result<()> {
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    super::help::write_man_pages(&a.dir).with_context(|| format!("writing man pages to {}", a.dir.display()))?;
    Ok(())
}
