//! Quadlet unit files: the `.container` unit `hostctl app install NAME IMAGE`
//! writes, and a minimal reader of the systemd unit syntax that finds the
//! keys hostctl acts on (`Image=`, `PublishPort=`, `Volume=`, ...) in files
//! hostctl wrote and in files users wrote. Whether a file is valid Quadlet is
//! podman's Quadlet generator's to say (dry-run, before anything is written);
//! this reader only refuses what would make hostctl misread a file.

use anyhow::{bail, Result};

/// The label hostctl puts on the containers of apps it wrote the unit for.
pub const APP_LABEL: &str = "io.hostctl.app";

/// Seconds between two runs of an app's health check (`HealthInterval=`).
pub const HEALTH_INTERVAL_SECS: u64 = 5;
/// Failed checks in a row that make a container unhealthy (`HealthRetries=`).
pub const HEALTH_RETRIES: u64 = 3;
/// The grace period after a container's start during which failed checks do
/// not count (`HealthStartPeriod=`), unless `--health-start-period` says
/// otherwise. A check that passes makes the container healthy at once, so
/// it costs a healthy app nothing; it delays the kill of one that does not
/// answer (podman counts it from the container's start).
pub const DEFAULT_HEALTH_START_PERIOD_SECS: u64 = 30;
/// What systemd's start timeout (`TimeoutStartSec=`) allows beyond the
/// latest moment a failing health check kills the container: creating and
/// starting the container (the image is already pulled).
pub const START_TIMEOUT_MARGIN_SECS: u64 = 60;

/// What `hostctl app install NAME IMAGE [options]` asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    /// The app's name: its unit is `NAME.service`, its container `NAME`.
    pub name: String,
    /// The image reference the container runs.
    pub image: String,
    /// `[IP:]HOST:CONTAINER[/PROTO]`, as podman's `--publish`.
    pub publish: Vec<String>,
    /// `KEY=VALUE`.
    pub env: Vec<String>,
    /// `SRC:DST[:OPTS]`, as podman's `--volume`.
    pub volumes: Vec<String>,
    /// The container's health check command (`HealthCmd=`).
    pub health_cmd: Option<String>,
    /// `HealthStartPeriod=` in seconds (with a health check only);
    /// [`DEFAULT_HEALTH_START_PERIOD_SECS`] when `None`.
    pub health_start_period: Option<u64>,
    /// Whether podman auto-update may update it (`AutoUpdate=registry`).
    pub auto_update: bool,
}

/// A published port, parsed: the host side hostctl checks is free.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    /// The host address to bind; `None`: all addresses.
    pub host_ip: Option<String>,
    /// The port on the host.
    pub host_port: u16,
    /// The port in the container.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub proto: String,
}

/// Parses `[IP:]HOST:CONTAINER[/tcp|/udp]` (no ranges).
pub fn parse_publish(s: &str) -> Result<Publish> {
    let (spec, proto) = match s.rsplit_once('/') {
        Some((spec, p)) if p == "tcp" || p == "udp" => (spec, p.to_string()),
        Some(_) => bail!("--publish {s}: the protocol must be tcp or udp"),
        None => (s, "tcp".to_string()),
    };
    let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
    let port = |p: &str| -> Result<u16> {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => bail!("--publish {s}: {p:?} is not a port number (1-65535)"),
        }
    };
    match parts.as_slice() {
        [c, h] => Ok(Publish { host_ip: None, host_port: port(h)?, container_port: port(c)?, proto }),
        [c, h, ip] => {
            let ip = ip.trim_start_matches('[').trim_end_matches(']');
            if ip.parse::<std::net::IpAddr>().is_err() {
                bail!("--publish {s}: {ip:?} is not an IP address");
            }
            Ok(Publish { host_ip: Some(ip.to_string()), host_port: port(h)?, container_port: port(c)?, proto })
        }
        _ => bail!("--publish {s}: expected [IP:]HOST_PORT:CONTAINER_PORT[/PROTO]"),
    }
}

/// Refuses values that would break the line they are written on.
fn one_line(what: &str, v: &str) -> Result<()> {
    if v.contains('\n') || v.contains('\r') {
        bail!("{what} {v:?}: must be on one line");
    }
    Ok(())
}

/// Quotes a value for a systemd list setting (`Environment=`): double quotes
/// when it has blanks, quotes or backslashes, with those escaped.
fn quote(v: &str) -> String {
    if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c == '"' || c == '\'' || c == '\\') {
        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        v.to_string()
    }
}

impl ContainerSpec {
    /// Checks every field; the error names the option at fault.
    pub fn validate(&self) -> Result<()> {
        super::check_name(&self.name)?;
        one_line("IMAGE", &self.image)?;
        if self.image.is_empty() || self.image.contains(char::is_whitespace) {
            bail!("image reference {:?} is not valid", self.image);
        }
        for p in &self.publish {
            parse_publish(p)?;
        }
        for e in &self.env {
            one_line("--env", e)?;
            match e.split_once('=') {
                Some((k, _)) if !k.is_empty() && !k.contains(char::is_whitespace) => {}
                _ => bail!("--env {e:?}: expected KEY=VALUE"),
            }
        }
        for v in &self.volumes {
            one_line("--volume", v)?;
            let parts: Vec<&str> = v.split(':').collect();
            if !(2..=3).contains(&parts.len()) || parts[0].is_empty() || !parts[1].starts_with('/') {
                bail!("--volume {v:?}: expected SOURCE:/CONTAINER/PATH[:OPTIONS]");
            }
        }
        if let Some(h) = &self.health_cmd {
            one_line("--health-cmd", h)?;
        }
        if let (Some(p), None) = (self.health_start_period, &self.health_cmd) {
            bail!("--health-start-period {p}: there is no health check (give --health-cmd)");
        }
        Ok(())
    }

    /// With a health check: the most seconds after its container started
    /// that a container whose check never passes lives before podman kills
    /// it (`HealthOnFailure=kill`): the start period, then `HealthRetries=`
    /// failed checks, plus one interval for the check that was under way
    /// when the start period ended.
    pub fn health_kill_deadline(&self) -> Option<u64> {
        self.health_cmd.as_ref()?;
        let start = self.health_start_period.unwrap_or(DEFAULT_HEALTH_START_PERIOD_SECS);
        Some(start + (HEALTH_RETRIES + 1) * HEALTH_INTERVAL_SECS)
    }

    /// The `.container` unit. The container is named after the app;
    /// `[Install]` starts it at every boot. With a health command the unit
    /// only counts as started once the container is healthy
    /// (`Notify=healthy`); a container that turns unhealthy is killed
    /// (`HealthOnFailure=kill`), so that a start that will never be healthy
    /// fails once the start period and the retries are over instead of at
    /// systemd's start timeout, and a running app that turns unhealthy is
    /// restarted by systemd (`Restart=on-failure`). `TimeoutStartSec=`
    /// leaves room for the start period, which may be longer than systemd's
    /// default of 90 s.
    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str("# Written by `hostctl app install`. hostctl reads Image=, PublishPort=, Volume=,\n");
        s.push_str("# HealthCmd= and AutoUpdate= back from this file; edit it with care.\n");
        s.push_str(&format!("[Unit]\nDescription=hostctl app {}\n\n[Container]\n", self.name));
        s.push_str(&format!("Image={}\nContainerName={}\nLabel={APP_LABEL}={}\n", self.image, self.name, self.name));
        for p in &self.publish {
            s.push_str(&format!("PublishPort={p}\n"));
        }
        for e in &self.env {
            s.push_str(&format!("Environment={}\n", quote(e)));
        }
        for v in &self.volumes {
            s.push_str(&format!("Volume={v}\n"));
        }
        if let Some(h) = &self.health_cmd {
            let start = self.health_start_period.unwrap_or(DEFAULT_HEALTH_START_PERIOD_SECS);
            s.push_str(&format!(
                "HealthCmd={h}\nHealthInterval={HEALTH_INTERVAL_SECS}s\nHealthRetries={HEALTH_RETRIES}\n\
                 HealthStartPeriod={start}s\nHealthOnFailure=kill\nNotify=healthy\n"
            ));
        }
        if self.auto_update {
            s.push_str("AutoUpdate=registry\n");
        }
        if let Some(deadline) = self.health_kill_deadline() {
            let timeout = deadline + START_TIMEOUT_MARGIN_SECS;
            s.push_str(&format!("\n[Service]\nRestart=on-failure\nTimeoutStartSec={timeout}\n"));
        }
        s.push_str("\n[Install]\nWantedBy=multi-user.target\n");
        s
    }
}

/// A unit file read as (section, key, value) entries, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UnitFile {
    /// (section, key, value), in the order written.
    pub entries: Vec<(String, String, String)>,
}

impl UnitFile {
    /// Parses the systemd unit syntax: `[Section]` headers, `Key=Value`
    /// lines, `#`/`;` comments, and lines continued with a trailing `\`.
    pub fn parse(text: &str) -> Result<UnitFile> {
        let mut entries = Vec::new();
        let mut section: Option<String> = None;
        let mut lines = text.lines().enumerate();
        while let Some((n, raw)) = lines.next() {
            let mut line = raw.trim().to_string();
            while line.ends_with('\\') {
                line.pop();
                match lines.next() {
                    Some((_, more)) => {
                        line.push(' ');
                        line.push_str(more.trim());
                    }
                    None => break,
                }
            }
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if line.starts_with('[') {
                if !line.ends_with(']') || line.len() < 3 {
                    bail!("line {}: bad section header {line:?}", n + 1);
                }
                section = Some(line[1..line.len() - 1].to_string());
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                bail!("line {}: expected Key=Value, got {line:?}", n + 1);
            };
            let Some(sec) = &section else {
                bail!("line {}: {k:?} comes before any [Section]", n + 1);
            };
            entries.push((sec.clone(), k.trim().to_string(), v.trim().to_string()));
        }
        Ok(UnitFile { entries })
    }

    /// Every value of `key` in `section`, in order.
    pub fn all(&self, section: &str, key: &str) -> Vec<String> {
        self.entries.iter().filter(|(s, k, _)| s == section && k == key).map(|(_, _, v)| v.clone()).collect()
    }

    /// The last value of `key` in `section` (the one systemd uses).
    pub fn last(&self, section: &str, key: &str) -> Option<String> {
        self.all(section, key).pop()
    }
}

/// What hostctl needs to know of an app, read back from its `.container` file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppUnit {
    /// `Image=`: the image reference.
    pub image: String,
    /// `ContainerName=`.
    pub container_name: String,
    /// `PublishPort=` values, in order.
    pub publish: Vec<String>,
    /// `Volume=` values, in order.
    pub volumes: Vec<String>,
    /// `HealthCmd=`, when set.
    pub health_cmd: Option<String>,
    /// `AutoUpdate=`, when set (`registry` or `local`).
    pub auto_update: Option<String>,
}

impl AppUnit {
    /// Reads `NAME.container`'s text. `image_units` resolves an `Image=` that
    /// names a `.image` unit (`(file name, text)` of the `.image` files).
    pub fn read(name: &str, text: &str, image_units: &[(String, String)]) -> Result<AppUnit> {
        let f = UnitFile::parse(text)?;
        let Some(mut image) = f.last("Container", "Image") else {
            bail!("{name}.container has no Image= in its [Container] section");
        };
        if image.ends_with(".image") {
            let Some((_, t)) = image_units.iter().find(|(n, _)| *n == image) else {
                bail!("{name}.container uses {image}, which is not there");
            };
            match UnitFile::parse(t)?.last("Image", "Image") {
                Some(i) => image = i,
                None => bail!("{image} has no Image= in its [Image] section"),
            }
        }
        Ok(AppUnit {
            image,
            // Quadlet's default container name.
            container_name: f.last("Container", "ContainerName").unwrap_or_else(|| format!("systemd-{name}")),
            publish: f.all("Container", "PublishPort"),
            volumes: f.all("Container", "Volume"),
            health_cmd: f.last("Container", "HealthCmd"),
            auto_update: f.last("Container", "AutoUpdate"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ContainerSpec {
        ContainerSpec {
            name: "web".into(),
            image: "127.0.0.1:5000/apps/web:1".into(),
            publish: vec!["127.0.0.1:8080:80".into()],
            env: vec!["GREETING=hello world".into(), "A=1".into()],
            volumes: vec!["webdata:/www/data".into()],
            health_cmd: Some("/bin/busybox wget -q -O /dev/null http://127.0.0.1:80/".into()),
            health_start_period: None,
            auto_update: true,
        }
    }

    /// A health check that fails kills the container (`HealthOnFailure=kill`):
    /// without it, a start that never turns healthy lasted until systemd's
    /// start timeout, and `app install`'s wait and `app update`'s rollback
    /// with it. Failed checks count only after the start period; the start
    /// timeout leaves room for it; a running app killed for turning
    /// unhealthy is restarted by systemd.
    #[test]
    fn a_failing_health_check_kills_the_container_after_the_start_period() {
        let text = spec().render();
        let f = UnitFile::parse(&text).unwrap();
        let c = |k: &str| f.last("Container", k);
        assert_eq!(c("HealthCmd"), spec().health_cmd);
        assert_eq!(c("HealthInterval").as_deref(), Some("5s"));
        assert_eq!(c("HealthRetries").as_deref(), Some("3"));
        assert_eq!(c("HealthStartPeriod").as_deref(), Some("30s"));
        assert_eq!(c("HealthOnFailure").as_deref(), Some("kill"));
        assert_eq!(c("Notify").as_deref(), Some("healthy"));
        assert_eq!(f.last("Service", "Restart").as_deref(), Some("on-failure"));
        // Killed at the latest 30 + (3 + 1) * 5 = 50 s after the start; systemd waits 60 s more.
        assert_eq!(spec().health_kill_deadline(), Some(50));
        assert_eq!(f.last("Service", "TimeoutStartSec").as_deref(), Some("110"));
        // [Service] comes before [Install], after every [Container] key.
        let service = text.find("\n[Service]\n").unwrap();
        assert!(text.find("HealthOnFailure=kill").unwrap() < service && service < text.find("[Install]").unwrap());

        // A slow app gets a longer start period, and systemd's start timeout grows with it
        // (past its default of 90 s, which would otherwise end the start first).
        let slow = ContainerSpec { health_start_period: Some(300), ..spec() };
        slow.validate().unwrap();
        let f = UnitFile::parse(&slow.render()).unwrap();
        assert_eq!(f.last("Container", "HealthStartPeriod").as_deref(), Some("300s"));
        assert_eq!(f.last("Service", "TimeoutStartSec").as_deref(), Some("380"));
        // No start period at all: killed after the retries alone.
        let eager = ContainerSpec { health_start_period: Some(0), ..spec() };
        assert_eq!(eager.health_kill_deadline(), Some(20));
        assert!(eager.render().contains("HealthStartPeriod=0s\n"));
    }

    /// Without a health check the unit has none of it: no kill, no restart
    /// policy of hostctl's, systemd's own start timeout.
    #[test]
    fn an_app_without_a_health_check_gets_no_health_keys_and_no_service_section() {
        let s = ContainerSpec { health_cmd: None, ..spec() };
        s.validate().unwrap();
        let text = s.render();
        for k in ["Health", "Notify=", "[Service]", "Restart=", "TimeoutStartSec="] {
            assert!(!text.contains(&format!("\n{k}")), "{k} in {text}");
        }
        assert_eq!(s.health_kill_deadline(), None);
    }

    #[test]
    fn rendered_unit_reads_back() {
        let s = spec();
        s.validate().unwrap();
        let text = s.render();
        assert!(text.contains("Environment=\"GREETING=hello world\"\n"), "{text}");
        assert!(text.contains("Notify=healthy\n"));
        assert!(text.contains("[Install]\nWantedBy=multi-user.target\n"));
        let u = AppUnit::read("web", &text, &[]).unwrap();
        assert_eq!(u.image, s.image);
        assert_eq!(u.container_name, "web");
        assert_eq!(u.publish, s.publish);
        assert_eq!(u.volumes, s.volumes);
        assert_eq!(u.health_cmd, s.health_cmd);
        assert_eq!(u.auto_update.as_deref(), Some("registry"));
    }

    #[test]
    fn bad_options_are_refused_with_the_option_named() {
        type Change = fn(&mut ContainerSpec);
        let cases: &[(Change, &str)] = &[
            (|s| s.name = "../etc".into(), "app name"),
            (|s| s.publish = vec!["80".into()], "--publish 80"),
            (|s| s.publish = vec!["0:80".into()], "not a port number"),
            (|s| s.publish = vec!["x.y:80:80".into()], "not an IP address"),
            (|s| s.publish = vec!["80:80/sctp".into()], "tcp or udp"),
            (|s| s.env = vec!["NOVALUE".into()], "--env"),
            (|s| s.env = vec!["A=1\nExecStartPre=/bin/evil".into()], "one line"),
            (|s| s.volumes = vec!["data".into()], "--volume"),
            (|s| s.volumes = vec!["data:relative".into()], "--volume"),
            (|s| s.image = "a b".into(), "image reference"),
            (
                |s| {
                    s.health_cmd = None;
                    s.health_start_period = Some(10);
                },
                "--health-start-period 10: there is no health check",
            ),
        ];
        for (change, expect) in cases {
            let mut s = spec();
            change(&mut s);
            let err = format!("{:#}", s.validate().unwrap_err());
            assert!(err.contains(expect), "{err} (expected {expect:?})");
        }
    }

    #[test]
    fn publish_forms() {
        assert_eq!(parse_publish("8080:80").unwrap().host_port, 8080);
        let p = parse_publish("127.0.0.1:8080:80/udp").unwrap();
        assert_eq!((p.host_ip.as_deref(), p.container_port, p.proto.as_str()), (Some("127.0.0.1"), 80, "udp"));
    }

    #[test]
    fn user_written_file_with_image_unit_and_default_container_name() {
        let text = "# mine\n[Unit]\nDescription=x\n[Container]\nImage=db.image\nPublishPort=5432:5432\n\
                    Exec=/bin/sh -c \\\n  'sleep infinity'\n";
        let images = vec![("db.image".to_string(), "[Image]\nImage=quay.io/x/db:16\n".to_string())];
        let u = AppUnit::read("db", text, &images).unwrap();
        assert_eq!(u.image, "quay.io/x/db:16");
        assert_eq!(u.container_name, "systemd-db");
        assert!(AppUnit::read("db", text, &[]).unwrap_err().to_string().contains("db.image"));
        assert!(AppUnit::read("x", "[Container]\nPublishPort=1:1\n", &[])
            .unwrap_err()
            .to_string()
            .contains("no Image="));
    }

    #[test]
    fn syntax_errors_name_the_line() {
        assert!(UnitFile::parse("[Container\nImage=x\n").unwrap_err().to_string().contains("line 1"));
        assert!(UnitFile::parse("Image=x\n").unwrap_err().to_string().contains("before any [Section]"));
        assert!(UnitFile::parse("[Container]\nImage\n").unwrap_err().to_string().contains("line 2"));
    }
}
