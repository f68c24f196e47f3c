//! `hostctl usr-overlay [--read-only]`: a writable (or read-only) overlay on
//! the booted deployment's `/usr` until the next boot.

use anyhow::Result;
use clap::Args;

use super::output::{outln, print_json};
use super::GlobalArgs;
use crate::deploy::deployment::Layout;
use crate::deploy::state::State;
use crate::deploy::{booted, usr_overlay};
use crate::host::mount::SyscallMounter;

#[derive(Debug, Args)]
pub struct UsrOverlayArgs {
    /// Mount the overlay read-only (it can be remounted read-write in a private mount namespace).
    #[arg(long)]
    pub read_only: bool,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(g: &GlobalArgs, a: UsrOverlayArgs) -> Result<()> {
    let sysroot = g.open_sysroot()?;
    let state = State::load(&sysroot.state_path())?;
    let layout = Layout::new(&sysroot, &state.stateroot);
    let (booted, _) = booted::detect(&sysroot, &g.boot_dir(), &layout)?;
    let booted = booted.filter(|b| state.all().contains(b));
    let o = usr_overlay::usr_overlay(&sysroot, &layout, booted.as_deref(), a.read_only, &SyscallMounter)?;
    if a.json {
        return print_json(&o);
    }
    outln!("{}", usr_overlay::describe(&o))?;
    Ok(())
}
