//! `hostctl fleet …`: the FleetLock lock server on etcd and its
//! administration (status, halt, resume, slots per group).

use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};

use super::output::outln;
use super::GlobalArgs;
use crate::fleet::protocol::{HaltAfter, StatusResponse, STATUS_PATH};
use crate::fleet::server::tls::TlsFiles;
use crate::fleet::server::{self, etcd::DEFAULT_PREFIX, ServerConfig};

/// A `hostctl fleet` command.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Serve FleetLock (and hostctl's report and status extensions) with all state in etcd.
    Server(ServerArgs),
    /// Show who holds the slots, how each release fares and which are halted.
    Status(StatusArgs),
    /// Halt a release: the lock server refuses reboots into it.
    Halt(HaltArgs),
    /// Lift a release's halt; its earlier unhealthy reports no longer count.
    Resume(HaltArgs),
    /// Set how many hosts of a group may hold a reboot slot at once.
    Slots(SlotsArgs),
    /// Push an image's rollout metadata (waves, start, halt threshold), signed like the image.
    Release(super::fleet_release::ReleaseArgs),
}

/// Where the fleet's state lives in etcd.
#[derive(Debug, Args, Clone)]
pub struct EtcdArgs {
    /// etcd client URLs, comma-separated (http://HOST:PORT).
    #[arg(long, env = "HOSTCTL_FLEET_ETCD", value_delimiter = ',', required = true, value_name = "ENDPOINTS")]
    pub etcd: Vec<String>,
    /// The key prefix the fleet's state lives under.
    #[arg(long, default_value = DEFAULT_PREFIX, value_name = "PREFIX")]
    pub etcd_prefix: String,
}

/// `hostctl fleet server`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// The address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    pub listen: String,
    /// How many hosts of a group may hold a reboot slot at once, unless `fleet slots` says otherwise.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub slots: u32,
    /// How long a holder that goes silent keeps its slot (e.g. 90s, 30m, 2h).
    #[arg(long, default_value = "30m", value_parser = parse_duration, value_name = "DURATION")]
    pub holder_ttl: Duration,
    /// How many unhealthy hosts (N) or what share of reporting hosts (P%) halt a release whose
    /// reports carry no threshold of their own.
    #[arg(long, default_value = "1", value_name = "N|P%")]
    pub halt_after: HaltAfter,
    /// Serve HTTPS with this certificate chain (PEM, leaf first).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Require client certificates signed by these CAs (PEM): a host may lock, release and report
    /// only for the id its certificate's subject CN names (needs --tls-cert).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub client_ca: Option<std::path::PathBuf>,
}

/// `hostctl fleet status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// A lock server's base URL (any replica).
    #[arg(long, env = "HOSTCTL_FLEET_SERVER", value_name = "URL")]
    pub server: String,
    /// Print the status as JSON (the `/v1/status` body).
    #[arg(long)]
    pub json: bool,
    /// Trust these CA certificates (PEM) for an https:// server, instead of the system's.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
}

/// `hostctl fleet halt|resume`.
#[derive(Debug, Args)]
pub struct HaltArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// The release: its image manifest digest (sha256:…).
    #[arg(value_name = "DIGEST")]
    pub digest: crate::digest::Digest,
}

/// `hostctl fleet slots`.
#[derive(Debug, Args)]
pub struct SlotsArgs {
    #[command(flatten)]
    pub etcd: EtcdArgs,
    /// The group (^[a-zA-Z0-9.-]+$).
    #[arg(value_name = "GROUP")]
    pub group: String,
    /// How many of its hosts may hold a slot at once.
    #[arg(value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub slots: u32,
}

pub async fn run(g: &GlobalArgs, c: FleetCommand) -> Result<()> {
    match c {
        FleetCommand::Server(a) => {
            let config = ServerConfig {
                etcd: a.etcd.etcd,
                prefix: a.etcd.etcd_prefix,
                slots: a.slots,
                holder_ttl: a.holder_ttl,
                halt_after: a.halt_after,
                tls: match (a.tls_cert, a.tls_key) {
                    (Some(cert), Some(key)) => Some(TlsFiles { cert, key, client_ca: a.client_ca }),
                    _ => None,
                },
            };
            server::run(config, &a.listen).await
        }
        FleetCommand::Status(a) => status(a).await,
        FleetCommand::Release(a) => super::fleet_release::run(g, a).await,
        FleetCommand::Halt(a) => {
            let s = admin(&a.etcd).await?;
            let done =
                s.health().halt(&a.digest.to_string(), "halted by an administrator (hostctl fleet halt)").await?;
            Ok(outln!("Release {} is halted{}.", a.digest, if done { "" } else { " already" })?)
        }
        FleetCommand::Resume(a) => {
            let s = admin(&a.etcd).await?;
            let was = s.health().resume(&a.digest.to_string()).await?;
            Ok(outln!("Release {} {}.", a.digest, if was { "is resumed" } else { "was not halted" })?)
        }
        FleetCommand::Slots(a) => {
            let p = crate::fleet::protocol::ClientParams { id: "admin".into(), group: a.group.clone() };
            server::http::check_client(p).map_err(|r| anyhow::anyhow!("{r}"))?;
            let s = admin(&a.etcd).await?;
            s.slots().set_slots(&a.group, a.slots).await?;
            Ok(outln!("Group {} has {} slot(s).", a.group, a.slots)?)
        }
    }
}

/// A server handle for administration: the same state, no listener.
async fn admin(e: &EtcdArgs) -> Result<server::Server> {
    let config = ServerConfig {
        etcd: e.etcd.clone(),
        prefix: e.etcd_prefix.clone(),
        slots: 1,
        holder_ttl: Duration::from_secs(60),
        halt_after: HaltAfter::Hosts(1),
        tls: None,
    };
    server::Server::connect(&config).await
}

async fn status(a: StatusArgs) -> Result<()> {
    let url = format!("{}{STATUS_PATH}", a.server.trim_end_matches('/'));
    let mut http = reqwest::Client::builder();
    if let Some(ca) = &a.ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("--ca {}: not PEM certificates", ca.display()))?;
        http = http.tls_certs_only(certs);
    }
    let resp = http.build()?.get(&url).send().await.with_context(|| format!("asking {url}"))?;
    let code = resp.status();
    let text = resp.text().await.with_context(|| format!("reading {url}"))?;
    anyhow::ensure!(code.is_success(), "{url} answered {code}: {text}");
    let st: StatusResponse = serde_json::from_str(&text).with_context(|| format!("{url} sent no fleet status"))?;
    if a.json {
        return super::output::print_json(&st);
    }
    if st.groups.is_empty() {
        outln!("No group holds a slot.")?;
    }
    for (name, g) in &st.groups {
        outln!("Group {name}: {} of {} slot(s) held", g.holders.len(), g.slots)?;
        for h in &g.holders {
            let what = h.digest.as_deref().map(|d| format!(" for {d}")).unwrap_or_default();
            let sick = if h.unhealthy { " (unhealthy: kept)" } else { "" };
            outln!("  {} since {}{what}{sick}", h.id, h.since)?;
        }
    }
    for (digest, r) in &st.releases {
        let halt = match (&r.halted, &r.halt_reason) {
            (true, Some(why)) => format!(", HALTED: {why}"),
            (true, None) => ", HALTED".into(),
            _ => String::new(),
        };
        outln!("Release {digest}: {} healthy, {} unhealthy{halt}", r.healthy, r.unhealthy)?;
    }
    Ok(())
}

/// Parses `90`, `90s`, `30m`, `2h` or `1d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration: write e.g. 90s, 30m, 2h");
    let (num, unit) = s.find(|c: char| !c.is_ascii_digit()).map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => return Err(bad()),
    };
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_units_an_admin_writes() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
