//! Quadlet unit files: the `.container` unit `hostctl app install NAME IMAGE`
//! writes, and a minimal reader of the systemd unit syntax that finds the
//! keys hostctl acts on (`Image=`, `PublishPort=`, `Volume=`, ...) in files
//! hostctl wrote and in files users wrote. Whether a file is valid Quadlet is
//! podman's Quadlet generator's to say (dry-run, before anything is written);
//! this reader only refuses what would make hostctl misread a file.

use anyhow::{bail, Result};

/// The label hostctl puts on the containers of apps it wrote the unit for.
pub const APP_LABEL: &str = "io.hostctl.app";

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
        Ok(())
    }

    /// The `.container` unit. The container is named after the app; with a
    /// health command the unit only counts as started once the container is
    /// healthy (`Notify=healthy`); `[Install]` starts it at every boot.
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
            s.push_str(&format!("HealthCmd={h}\nHealthInterval=5s\nHealthRetries=3\nNotify=healthy\n"));
        }
        if self.auto_update {
            s.push_str("AutoUpdate=registry\n");
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
            auto_update: true,
        }
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
