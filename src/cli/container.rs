//! `hostctl container lint`: the checks of [`crate::lint`] against the
//! running root (the last `RUN` of a Containerfile) or `--rootfs DIR`.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};

use super::output::print_json;
use super::GlobalArgs;
use crate::lint::{self, Level, Status};

#[derive(Debug, Subcommand)]
pub enum ContainerCommand {
    /// Check an OS image's tree as its build's last step: kernel, /boot, /etc, /var, hostctl's units, …
    Lint(LintArgs),
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// The tree to check: the image being built when run in it (a Containerfile's `RUN`).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub rootfs: PathBuf,
    /// Print the result (or, with --list, the checks) as JSON.
    #[arg(long)]
    pub json: bool,
    /// Fail (exit 1) on warnings too, not only on errors.
    #[arg(long)]
    pub fatal_warnings: bool,
    /// Do not run this check (repeatable; --list shows the names).
    #[arg(long, value_name = "NAME", hide_possible_values = true,
          value_parser = clap::builder::PossibleValuesParser::new(lint::names()))]
    pub skip: Vec<String>,
    /// List the checks (name, level, explanation) instead of running them.
    #[arg(long)]
    pub list: bool,
}

pub async fn run(_g: &GlobalArgs, c: ContainerCommand) -> Result<()> {
    match c {
        ContainerCommand::Lint(a) => lint_cmd(a),
    }
}

/// Findings shown per check on a terminal; --json lists all.
const SHOWN: usize = 10;

fn lint_cmd(a: LintArgs) -> Result<()> {
    let mut out = super::output::stdout();
    if a.list {
        let checks = lint::checks();
        if a.json {
            return print_json(&checks);
        }
        for c in checks {
            writeln!(out, "{:<22} {:<8} {}", c.name, c.level.name(), c.explanation)?;
        }
        return Ok(());
    }
    let root = lint::Root::open(&a.rootfs)?;
    let skip: BTreeSet<String> = a.skip.into_iter().collect();
    let report = lint::run(&root, &skip);
    if a.json {
        print_json(&report)?;
    } else {
        for c in report.checks.iter().filter(|c| c.status == Status::Failed) {
            let (n, what) = (c.findings.len(), if c.level == Level::Info { "listed" } else { "found" });
            writeln!(out, "{} {}: {} ({n} {what})", c.level.name(), c.name, c.explanation)?;
            for f in lint::truncated(&c.findings, SHOWN) {
                writeln!(out, "  {f}")?;
            }
        }
        let count = |s: Status| report.checks.iter().filter(|c| c.status == s).count();
        writeln!(
            out,
            "{}: {} checks passed, {} errors, {} warnings, {} infos, {} skipped",
            report.rootfs,
            count(Status::Passed),
            report.errors,
            report.warnings,
            report.infos,
            count(Status::Skipped)
        )?;
    }
    if report.failed(a.fatal_warnings) {
        let warnings = if a.fatal_warnings { format!(" and {} warning(s)", report.warnings) } else { String::new() };
        bail!("container lint: {} error(s){warnings} in {}", report.errors, report.rootfs);
    }
    Ok(())
}
