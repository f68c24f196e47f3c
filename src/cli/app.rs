//! `hostctl app install|list|status|logs|start|stop|restart|remove|update`:
//! apps as Podman Quadlet units (docs/apps.md). The work is in
//! [`crate::apps`]; this file parses options and prints results.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand};

use super::output::{outln, print, print_json};
use super::GlobalArgs;
use crate::apps::bound::{self, ImageCleanup};
use crate::apps::install::{files_of, install, remove, AppDown, Source};
use crate::apps::quadlet::ContainerSpec;
use crate::apps::remote::RegistryImages;
use crate::apps::status::{list, render, status};
use crate::apps::update::{update, RegistryDigest, UpdateOptions};
use crate::apps::Apps;
use crate::deploy::stage::Deployer;
use crate::host::podman::{Podman, PodmanCli, PullSettings};
use crate::host::units::{Outcome, Systemctl, Units, WaitPolicy};

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Install an app as a Quadlet unit, pull its image, start it and wait until it is up.
    Install(InstallArgs),
    /// List the installed apps.
    List(JsonArg),
    /// Show an app's image, digest, state, health, ports, volumes and last update.
    Status(NameJson),
    /// Show an app's journal.
    Logs(LogsArgs),
    /// Start an app and wait until it is up.
    Start(NameWait),
    /// Stop an app.
    Stop(Name),
    /// Restart an app and wait until it is up.
    Restart(NameWait),
    /// Remove an app (its unit files; with --purge also its volumes and image).
    Remove(RemoveArgs),
    /// Update apps that follow a tag; roll back by themselves when the new image does not come up.
    Update(UpdateArgs),
}

#[derive(Debug, Args)]
pub struct JsonArg {
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct Name {
    pub name: String,
}

#[derive(Debug, Args)]
pub struct NameJson {
    pub name: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct NameWait {
    pub name: String,
    /// Seconds the app gets to come up.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub name: String,
    /// Keep showing new lines.
    #[arg(short, long)]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    pub name: String,
    /// Also remove the app's named volumes, and its image when nothing else uses it.
    #[arg(long)]
    pub purge: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The app's name (its unit is NAME.service, its container NAME).
    #[arg(required_unless_present = "file")]
    pub name: Option<String>,
    /// The image, fully qualified (`registry/repo:tag`).
    #[arg(required_unless_present = "file")]
    pub image: Option<String>,
    /// Quadlet files to install instead (.container, and .volume, .network, .image beside it).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["name", "image", "publish", "env", "volume", "health_cmd", "health_start_period", "auto_update"])]
    pub file: Vec<PathBuf>,
    /// Publish a port: [IP:]HOST_PORT:CONTAINER_PORT[/PROTO].
    #[arg(short, long, value_name = "H:C")]
    pub publish: Vec<String>,
    /// Set an environment variable.
    #[arg(short, long, value_name = "K=V")]
    pub env: Vec<String>,
    /// Mount a volume: SOURCE:/PATH[:OPTIONS] (a name is a podman volume, a path a bind mount).
    /// (No `-v`: that is hostctl's --verbose.)
    #[arg(long, value_name = "SRC:DST[:OPTS]")]
    pub volume: Vec<String>,
    /// A health check: the app counts as up only once it passes (Notify=healthy);
    /// a container whose check keeps failing is killed (HealthOnFailure=kill).
    #[arg(long, value_name = "CMD")]
    pub health_cmd: Option<String>,
    /// Seconds after the container's start during which failed health checks
    /// do not count (HealthStartPeriod=; default 30): give a slow app time to answer.
    #[arg(long, value_name = "SECS", requires = "health_cmd")]
    pub health_start_period: Option<u64>,
    /// Mark the app for automatic updates (AutoUpdate=registry).
    #[arg(long)]
    pub auto_update: bool,
    /// Write and check the unit, pull the image, but do not start it.
    #[arg(long)]
    pub no_start: bool,
    /// Seconds the app gets to come up.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub timeout: u64,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// The apps to update.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub names: Vec<String>,
    /// Every installed app.
    #[arg(long)]
    pub all: bool,
    /// Only check whether there are updates (`pending`).
    #[arg(long, conflicts_with = "download_only")]
    pub check: bool,
    /// Pull updates without restarting the apps.
    #[arg(long)]
    pub download_only: bool,
    /// Seconds each app gets to come up on its new image.
    #[arg(long, default_value_t = 120, value_name = "SECS")]
    pub timeout: u64,
    /// Print JSON (podman auto-update's fields, plus FromDigest, ToDigest, Reason).
    #[arg(long)]
    pub json: bool,
}

fn wait(timeout: u64) -> WaitPolicy {
    // How long a unit must stay up after its start job (HOSTCTL_APP_SETTLE seconds, default 3).
    let settle = std::env::var("HOSTCTL_APP_SETTLE").ok().and_then(|s| s.parse().ok()).unwrap_or(3);
    WaitPolicy { timeout: Duration::from_secs(timeout), settle: Duration::from_secs(settle), ..WaitPolicy::default() }
}

/// podman's pull settings from the global options (the same files as for OS images).
pub(super) fn pull_settings(g: &GlobalArgs) -> PullSettings {
    PullSettings {
        tls_verify: g.tls_verify != Some(false),
        authfile: g.authfile.clone(),
        cert_dir: g.cert_dir.clone(),
        policy: g.policy.clone(),
    }
}

fn apps<'a>(g: &GlobalArgs, podman: &'a PodmanCli, units: &'a Systemctl, timeout: u64) -> Apps<'a> {
    Apps {
        root: g.sysroot.clone(),
        podman,
        units,
        pull: pull_settings(g),
        wait: wait(timeout),
        journal_lines: 10,
        registry: None,
    }
}

/// The registry; with `policy`, also the trust policy podman's pulls check
/// against (`--policy`, else the host's `/etc/containers/policy.json`) when
/// that file is there and reads: without it podman refuses every pull, so
/// no pull is ever skipped as needless ([`crate::apps::remote`]), and a
/// policy hostctl cannot read is left to podman to report.
fn registry_images(g: &GlobalArgs, policy: bool) -> RegistryImages {
    let file = g.policy.clone().unwrap_or_else(|| g.sysroot.join("etc/containers/policy.json"));
    let verifier = match (policy, file.exists()) {
        (true, true) => g.verifier().map_err(|e| tracing::debug!("no policy check before the pull: {e:#}")).ok(),
        _ => None,
    };
    RegistryImages { options: g.registry_options(), verifier }
}

pub async fn run(g: &GlobalArgs, cmd: AppCommand) -> Result<()> {
    let (podman, units) = (PodmanCli::default(), Systemctl);
    // Every command that changes an app holds the apps lock (reading ones do
    // not), taken once its arguments are checked: bad input writes nothing.
    let lock = || apps(g, &podman, &units, 0).lock(super::lock_wait());
    match cmd {
        AppCommand::Install(a) => {
            let source = if a.file.is_empty() {
                Source::Spec(ContainerSpec {
                    name: a.name.unwrap_or_default(),
                    image: a.image.unwrap_or_default(),
                    publish: a.publish,
                    env: a.env,
                    volumes: a.volume,
                    health_cmd: a.health_cmd,
                    health_start_period: a.health_start_period,
                    auto_update: a.auto_update,
                })
            } else {
                Source::Files(a.file)
            };
            files_of(&source)?;
            let _lock = lock()?;
            // Looked up before the pull: for the space check, and whether the pull would change anything.
            let registry = registry_images(g, true);
            let ap = Apps { registry: Some(&registry), ..apps(g, &podman, &units, a.timeout) };
            let r = install(&ap, source, !a.no_start)?;
            if a.json {
                print_json(&r)?;
            } else {
                outln!("Installed {} ({}, {}): {}", r.name, r.image, r.digest, r.state)?;
            }
        }
        AppCommand::List(a) => {
            let all = list(&apps(g, &podman, &units, 0))?;
            if a.json {
                print_json(&all)?;
            } else {
                for s in &all {
                    outln!("{:<20} {:<10} {:<10} {}", s.name, s.state, s.health.as_deref().unwrap_or("-"), s.image)?;
                }
            }
        }
        AppCommand::Status(a) => {
            let s = status(&apps(g, &podman, &units, 0), &a.name, true)?;
            if a.json {
                print_json(&s)?;
            } else {
                print(&render(&s))?;
            }
        }
        AppCommand::Logs(a) => {
            let ap = apps(g, &podman, &units, 0);
            ap.unit(&a.name)?;
            units.show_journal(&Apps::service(&a.name), a.follow)?;
        }
        AppCommand::Start(a) => start(g, &podman, &units, a, false)?,
        AppCommand::Restart(a) => start(g, &podman, &units, a, true)?,
        AppCommand::Stop(a) => {
            apps(g, &podman, &units, 0).unit(&a.name)?;
            let _lock = lock()?;
            units.stop(&Apps::service(&a.name))?;
        }
        AppCommand::Remove(a) => {
            apps(g, &podman, &units, 0).unit(&a.name)?;
            let _lock = lock()?;
            let r = remove(&apps(g, &podman, &units, 0), &a.name, a.purge)?;
            if a.json {
                print_json(&r)?;
            } else {
                outln!("Removed {}", r.name)?;
                for kept in &r.failed_images_kept {
                    outln!("  kept an image a rolled-back update left: {kept}")?;
                }
            }
        }
        AppCommand::Update(a) => {
            let registry = registry_images(g, false); // for the space check
            let ap = Apps { registry: Some(&registry), ..apps(g, &podman, &units, a.timeout) };
            let names = if a.all { ap.names()? } else { a.names };
            for n in &names {
                ap.unit(n)?;
            }
            let _lock = ap.lock(super::lock_wait())?;
            let opts = UpdateOptions { check: a.check, download_only: a.download_only };
            let reports = update(&ap, &RegistryDigest(g.registry_options()), &names, opts).await?;
            if a.json {
                print_json(&reports)?;
            } else {
                for r in &reports {
                    outln!("{:<24} {:<24} {:<40} {:<9} {}", r.unit, r.container, r.image, r.policy, r.updated)?;
                    if let Some(reason) = &r.reason {
                        outln!("  {}", reason.replace('\n', "\n  "))?;
                    }
                }
            }
            if let Some(failed) = crate::apps::update::failure(&reports) {
                return Err(failed.into());
            }
        }
    }
    Ok(())
}

/// `cleanup`'s part for apps: the bound images that no deployment kept in
/// the state and no installed app uses leave podman's storage.
pub(super) fn cleanup_bound_images(g: &GlobalArgs, d: &Deployer) -> Result<ImageCleanup> {
    let state_dir = g.sysroot.join(bound::STATE_DIR);
    if bound::PulledLedger::load(&state_dir)?.pulled.is_empty() {
        return Ok(ImageCleanup::default()); // nothing of hostctl's: podman is not asked
    }
    let (podman, units) = (PodmanCli::default(), Systemctl);
    let ap = apps(g, &podman, &units, 0);
    let mut app_images = Vec::new();
    for name in ap.names()? {
        let unit = ap.unit(&name)?;
        if let Some(c) = podman.container(&unit.container_name)? {
            app_images.push(c.image);
        }
        app_images.push(unit.image);
    }
    let trees: Vec<PathBuf> = d.load_state()?.all().iter().map(|id| d.layout.tree(id)).collect();
    bound::cleanup_images(&podman, &state_dir, &trees, &app_images)
}

fn start(g: &GlobalArgs, podman: &PodmanCli, units: &Systemctl, a: NameWait, restart: bool) -> Result<()> {
    let ap = apps(g, podman, units, a.timeout);
    ap.unit(&a.name)?;
    let _lock = ap.lock(super::lock_wait())?;
    let service = Apps::service(&a.name);
    units.reset_failed(&service)?;
    if let Outcome::Down { why, state } = ap.come_up(&a.name, restart)? {
        let journal = units.journal(&service, ap.journal_lines).unwrap_or_default();
        return Err(AppDown { name: a.name, unit: service, why, state, journal }.into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::cli::{Cli, Command};

    #[test]
    fn app_install_options_do_not_clash_with_global_ones() {
        // `-v` was both --volume and the global --verbose: clap panicked on
        // every `hostctl app install` before the short flag was dropped.
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "hostctl",
            "-v",
            "app",
            "install",
            "web",
            "registry.example/web:1",
            "-p",
            "8080:80",
            "-e",
            "A=1",
            "--volume",
            "data:/data",
            "--health-cmd",
            "true",
            "--no-start",
        ])
        .unwrap();
        assert_eq!(cli.global.verbose, 1);
        let Command::App(AppCommand::Install(a)) = cli.command else { panic!("not app install") };
        assert_eq!(
            (a.publish, a.env, a.volume),
            (vec!["8080:80".to_string()], vec!["A=1".to_string()], vec!["data:/data".to_string()])
        );
        assert!(a.no_start);
        // --file excludes NAME IMAGE; update needs names or --all.
        assert!(Cli::try_parse_from(["hostctl", "app", "install", "--file", "a.container", "web"]).is_err());
        assert!(Cli::try_parse_from(["hostctl", "app", "update"]).is_err());
        // A health start period needs a health check.
        let i = ["hostctl", "app", "install", "web", "r.example/web:1", "--health-start-period", "60"];
        assert!(Cli::try_parse_from(i).is_err());
        assert!(Cli::try_parse_from([&i[..], &["--health-cmd", "true"]].concat()).is_ok());
        assert!(Cli::try_parse_from(["hostctl", "app", "update", "--all", "web"]).is_err());
        assert!(Cli::try_parse_from(["hostctl", "app", "update", "--all", "--check"]).is_ok());
    }
}
