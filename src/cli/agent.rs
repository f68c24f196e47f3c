//! `hostctl agent [--once]`: the update agent (a service, or one pass from a
//! timer); `hostctl agent status [--json]`: its phase, target and reasons.

use std::sync::Arc;

use anyhow::Result;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::output::{outln, print_json};
use super::upgrade::pull_options;
use super::GlobalArgs;
use crate::agent::clock::SystemClock;
use crate::agent::config::{self, AgentConfig, Strategy};
use crate::agent::run::{machine_id, Agent};
use crate::agent::state::{self, AgentState};
use crate::host::reboot::SystemctlReboot;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentArgs {
    #[command(subcommand)]
    pub command: Option<AgentCommand>,
    /// Do the work that is due now, then exit (for a timer) instead of running as a service.
    #[arg(long)]
    pub once: bool,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Show the agent's phase, the update it works on, and why.
    Status(StatusArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub async fn run(g: &GlobalArgs, a: AgentArgs) -> Result<()> {
    match a.command {
        Some(AgentCommand::Status(s)) => status(g, s),
        None => run_agent(g, a.once).await,
    }
}

async fn run_agent(g: &GlobalArgs, once: bool) -> Result<()> {
    let config = config::load(&g.sysroot)?;
    tracing::info!(
        "agent: strategy {}, checking every {}s, configuration from {}",
        config.strategy.name(),
        config.interval,
        describe_files(&config)
    );
    let agent = Agent {
        root: g.sysroot.clone(),
        boot: g.boot_dir(),
        pull: pull_options(g)?,
        tls_verify_given: g.tls_verify.is_some(),
        clock: Arc::new(SystemClock),
        reboot: Arc::new(SystemctlReboot),
        machine_id: machine_id(&g.sysroot)?,
        lock_wait: super::lock_wait(),
        podman: Some(Arc::new(crate::host::podman::PodmanCli::default())),
        bound_pull: super::app::pull_settings(g),
        config,
    };
    let s = agent.run(once).await?;
    outln!("agent: {}: {}", s.phase.name(), s.reason)?;
    Ok(())
}

fn describe_files(c: &AgentConfig) -> String {
    if c.files.is_empty() {
        return "defaults (no agent.toml)".into();
    }
    c.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
}

/// `agent status --json`: the record, and the configuration it runs under.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusReport {
    strategy: String,
    interval_seconds: u64,
    config_files: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    config_error: Option<String>,
    state: Option<AgentState>,
}

fn status(g: &GlobalArgs, a: StatusArgs) -> Result<()> {
    let s = state::load(&g.sysroot)?;
    let (cfg, err) = match config::load(&g.sysroot) {
        Ok(c) => (Some(c), None),
        Err(e) => (None, Some(format!("{e:#}"))),
    };
    let report = StatusReport {
        strategy: cfg.as_ref().map(|c| c.strategy.name().to_string()).unwrap_or_default(),
        interval_seconds: cfg.as_ref().map(|c| c.interval).unwrap_or_default(),
        config_files: cfg
            .as_ref()
            .map(|c| c.files.iter().map(|f| f.display().to_string()).collect())
            .unwrap_or_default(),
        config_error: err,
        state: s,
    };
    if a.json {
        return print_json(&report);
    }
    match &cfg {
        Some(c) => {
            let detail = match &c.strategy {
                Strategy::FleetLock { url, group } => format!(" (group {group} at {url})"),
                Strategy::Periodic { reboot, .. } => format!(" (time zone {})", reboot.zone_name()),
                Strategy::Immediate => String::new(),
            };
            outln!("Strategy:  {}{detail}, checking every {}s", c.strategy.name(), c.interval)?;
        }
        None => outln!("Configuration error: {}", report.config_error.as_deref().unwrap_or_default())?,
    }
    let Some(s) = &report.state else {
        outln!("The agent has not run yet.")?;
        return Ok(());
    };
    outln!("Phase:     {} since {}", s.phase.name(), s.since)?;
    outln!("Reason:    {}", s.reason)?;
    if let Some(t) = &s.target {
        outln!("Target:    {} at {}", t.image, t.digest)?;
        if let Some(id) = &t.deployment {
            outln!("Staged as: {id}")?;
        }
        outln!("Release:   {}", t.release.as_deref().unwrap_or("no verified rollout metadata"))?;
    }
    if s.holds_slot {
        outln!("Holds a reboot slot.")?;
    }
    if let Some(h) = &s.health {
        outln!("Health:    {} on {}: {}", if h.healthy { "healthy" } else { "UNHEALTHY" }, h.digest, h.detail)?;
    }
    if let Some(n) = &s.next_attempt {
        outln!("Next:      {n}")?;
    }
    if let Some(e) = &s.last_error {
        outln!("Last error ({} in a row): {e}", s.failures)?;
    }
    Ok(())
}
