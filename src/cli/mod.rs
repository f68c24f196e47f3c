//! The command line: argument definitions and dispatch to one file per verb.
//! Output conventions: results on stdout (`--json` where offered), diagnostics
//! and progress bars on stderr, exit codes from [`crate::error::code`].

mod agent;
mod app;
mod cleanup;
mod completion;
mod config_diff;
mod container;
mod fleet;
mod fleet_release;
mod fsck;
mod help;
mod image;
mod image_rechunk;
mod image_rm;
mod install;
mod internal;
mod output;
mod pin;
mod rollback;
mod status;
mod switch;
mod trust;
mod upgrade;
mod usr_overlay;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::oci::platform::Platform;
use crate::oci::RegistryOptions;
use crate::progress::{Progress, ProgressMode};
use crate::sysroot::Sysroot;

/// hostctl: your host's operating system as a container image.
#[derive(Debug, Parser)]
#[command(name = "hostctl", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Options for every command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command understands. In a command's `--help` they come
/// after its own options, under their own headings.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// The physical root holding hostctl's store and deployments.
    #[arg(long, global = true, default_value = "/", env = "HOSTCTL_SYSROOT", value_name = "DIR")]
    pub sysroot: PathBuf,
    /// The boot directory (ESP or /boot) for kernels and boot entries [default: SYSROOT/boot].
    #[arg(long, global = true, value_name = "DIR")]
    pub boot_dir: Option<PathBuf>,
    /// More log output (-v info, -vv debug, -vvv trace). `RUST_LOG` also works.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// How to show progress.
    #[arg(long, global = true, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
    #[arg(help_heading = REGISTRY_OPTIONS)]
    /// Require HTTPS and verify registry certificates (`false` also allows plain HTTP)
    /// [default: true; for `upgrade`, what `switch` was given].
    #[arg(long, global = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub tls_verify: Option<bool>,
    #[arg(help_heading = REGISTRY_OPTIONS)]
    /// A TLS directory used for every registry instead of the certs.d lookup: `*.crt` CA
    /// certificates, `NAME.cert` + `NAME.key` a client certificate.
    #[arg(long, global = true, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    #[arg(help_heading = REGISTRY_OPTIONS)]
    /// An auth.json to read registry credentials from instead of the default search path.
    #[arg(long, global = true, value_name = "FILE", env = "REGISTRY_AUTH_FILE")]
    pub authfile: Option<PathBuf>,
    #[arg(help_heading = REGISTRY_OPTIONS)]
    /// The platform to pull from a multi-platform image [default: the host's].
    #[arg(long, global = true, value_name = "OS/ARCH[/VARIANT]")]
    pub platform: Option<Platform>,
    #[arg(help_heading = REGISTRY_OPTIONS)]
    /// Read every layer whole and check its uncompressed digest (diff_id); no partial
    /// pulls of zstd:chunked layers, and layers built from one are fetched again.
    #[arg(long, global = true, env = "HOSTCTL_REQUIRE_FULL_LAYER_DIGEST")]
    pub require_full_layer_digest: bool,
    #[arg(help_heading = TRUST_OPTIONS)]
    /// The trust policy [default: SYSROOT/etc/containers/policy.json].
    #[arg(long, global = true, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    #[arg(help_heading = TRUST_OPTIONS)]
    /// Refuse to work under a policy whose default accepts anything.
    #[arg(long, global = true)]
    pub enforce_signature_policy: bool,
    /// The command's one progress sink, made on first use (clones share it).
    #[arg(skip)]
    pub sink: ProgressSink,
}

/// One [`Progress`] per command, shared by every clone of the [`GlobalArgs`]
/// (so that `main` can end it when a signal interrupts the command).
#[derive(Clone, Default)]
pub struct ProgressSink(std::sync::Arc<std::sync::OnceLock<Progress>>);

impl std::fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressSink")
    }
}

/// The help heading of the global options that say how to reach registries.
const REGISTRY_OPTIONS: &str = "Global registry options";
/// The help heading of the global options about the trust policy.
const TRUST_OPTIONS: &str = "Global trust options";

/// The command line's definition, with each command's examples (what `main`
/// parses with; the man pages and completions are made from it too).
pub fn command() -> clap::Command {
    help::command()
}

impl GlobalArgs {
    /// How to reach registries: `--tls-verify`, `--cert-dir`, `--authfile`, and the host's certs.d and registries.conf files.
    pub fn registry_options(&self) -> RegistryOptions {
        RegistryOptions {
            insecure: self.tls_verify == Some(false),
            cert_dir: self.cert_dir.clone(),
            certs_d: certs_d_roots(),
            registries_conf: registries_conf_files(),
            authfile: self.authfile.clone(),
            max_concurrent_downloads: None,
            require_full_layer_digest: self.require_full_layer_digest,
        }
    }

    /// The command's progress sink (one per command line: every caller shares it).
    pub fn progress(&self) -> Progress {
        self.sink.0.get_or_init(|| Progress::new(self.progress)).clone()
    }

    /// The platform to pull: `--platform`, else the host's.
    pub fn platform(&self) -> Platform {
        self.platform.clone().unwrap_or_else(Platform::host)
    }

    /// Opens the sysroot at `--sysroot`.
    pub fn open_sysroot(&self) -> Result<Sysroot> {
        tracing::info!("sysroot {}, boot directory {}", self.sysroot.display(), self.boot_dir().display());
        let sysroot = Sysroot::open(&self.sysroot)?;
        // A sysroot of a newer format is refused by every command (exit 7).
        crate::format::check_sysroot(&sysroot.hostctl_dir())?;
        Ok(sysroot)
    }

    /// The trust policy's verifier, for `PullOptions::verifier`.
    pub fn verifier(&self) -> Result<std::sync::Arc<dyn crate::trust::ImageVerifier>> {
        crate::trust::verifier_from_policy(&self.sysroot, self.policy.as_deref(), self.enforce_signature_policy)
    }

    /// The boot partition's mount point (`--boot-dir`).
    pub fn boot_dir(&self) -> PathBuf {
        self.boot_dir.clone().unwrap_or_else(|| self.sysroot.join("boot"))
    }
}

/// A hostctl command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Apps: containers as Podman Quadlet units, with health-gated updates that roll back.
    #[command(subcommand)]
    App(app::AppCommand),
    /// Work with images in the store (pull, inspect, list).
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Track a new image and stage a deployment of it for the next boot.
    Switch(switch::SwitchArgs),
    /// Fetch the tracked image's update and stage it.
    Upgrade(upgrade::UpgradeArgs),
    /// Make the previous deployment the default for the next boot.
    Rollback(rollback::RollbackArgs),
    /// Show the tracked image and the booted, staged and rollback deployments.
    Status(status::StatusArgs),
    /// Show what the booted /etc changed against its image's defaults.
    ConfigDiff(config_diff::ConfigDiffArgs),
    /// Build-time commands for OS images (`container lint`).
    #[command(subcommand)]
    Container(container::ContainerCommand),
    /// Remove deployments, layers and objects that nothing needs any more.
    Cleanup(cleanup::CleanupArgs),
    /// Keep a deployment from being garbage-collected.
    Pin(pin::PinArgs),
    /// Let a pinned deployment be garbage-collected again.
    Unpin(pin::PinArgs),
    /// Check the store, every deployment and the boot partition against what was recorded; repair them.
    Fsck(fsck::FsckArgs),
    /// Make the booted /usr writable until the next boot (an overlay on a tmpfs).
    UsrOverlay(usr_overlay::UsrOverlayArgs),
    /// Install an OS image to a disk or a prepared filesystem.
    #[command(subcommand)]
    Install(install::InstallCommand),
    /// Fleet rollout: releases with their waves, the FleetLock lock server on etcd, halts, resumes and slots.
    #[command(subcommand)]
    Fleet(fleet::FleetCommand),
    /// Check signatures by hand (sigstore bundles).
    #[command(subcommand)]
    Trust(trust::TrustCommand),
    /// Print shell completions.
    Completions(completion::CompletionsArgs),
    /// Write man pages to a directory.
    Man(completion::ManArgs),
    /// The update agent: follows the tracked image through its rollout waves, reboots and reports health.
    Agent(agent::AgentArgs),
    /// Commands the host's units run, hidden from help.
    #[command(flatten)]
    Internal(internal::InternalCommand),
}

/// The containers-certs.d(5) roots: `HOSTCTL_CERTS_D` (colon-separated; empty
/// means none) when set, else the standard ones.
fn certs_d_roots() -> Vec<PathBuf> {
    match std::env::var_os("HOSTCTL_CERTS_D") {
        Some(v) => std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()).collect(),
        None => crate::oci::registry::certs_d::default_roots(),
    }
}

/// The registries.conf files: `CONTAINERS_REGISTRIES_CONF` alone when set
/// (empty: none), else the standard ones with their drop-ins.
fn registries_conf_files() -> Vec<PathBuf> {
    match std::env::var_os("CONTAINERS_REGISTRIES_CONF") {
        Some(f) if f.is_empty() => Vec::new(),
        Some(f) => vec![PathBuf::from(f)],
        None => crate::oci::registry::registries_conf::default_files(),
    }
}

/// How long a mutating command waits for another one to release the sysroot
/// lock before failing with exit code 3 (`HOSTCTL_LOCK_TIMEOUT` seconds, default 30).
pub fn lock_wait() -> std::time::Duration {
    let secs = std::env::var("HOSTCTL_LOCK_TIMEOUT").ok().and_then(|s| s.parse().ok()).unwrap_or(30);
    std::time::Duration::from_secs(secs)
}

/// Runs a parsed command line and ends its progress with the terminal event
/// (`done`, or `error` with the message and exit code).
pub async fn run(cli: Cli) -> Result<()> {
    let progress = cli.global.progress();
    let result = dispatch(cli).await;
    match &result {
        Ok(()) => progress.end_ok(),
        Err(e) if crate::error::is_stdout_closed(e) => {}
        Err(e) => progress.fail(&format!("{e:#}"), crate::error::exit_code(e), "cancelled", false),
    }
    result
}

async fn dispatch(cli: Cli) -> Result<()> {
    let g = &cli.global;
    match cli.command {
        Command::App(c) => app::run(g, c).await,
        Command::Image(c) => image::run(g, c).await,
        Command::Switch(a) => switch::run(g, a).await,
        Command::Upgrade(a) => upgrade::run(g, a).await,
        Command::Rollback(a) => rollback::run(g, a).await,
        Command::Status(a) => status::run(g, a).await,
        Command::ConfigDiff(a) => config_diff::run(g, a).await,
        Command::Container(c) => container::run(g, c).await,
        Command::Cleanup(a) => cleanup::run(g, a).await,
        Command::Pin(a) => pin::run(g, a, true).await,
        Command::Unpin(a) => pin::run(g, a, false).await,
        Command::Fsck(a) => fsck::run(g, a).await,
        Command::UsrOverlay(a) => usr_overlay::run(g, a).await,
        Command::Install(c) => install::run(g, c).await,
        Command::Fleet(c) => fleet::run(g, c).await,
        Command::Trust(c) => trust::run(g, c).await,
        Command::Completions(a) => completion::completions(a),
        Command::Man(a) => completion::man(a),
        Command::Internal(c) => internal::run(g, c).await,
        Command::Agent(a) => agent::run(g, a).await,
    }
}
