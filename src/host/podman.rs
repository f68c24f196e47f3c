//! podman, as hostctl's apps need it: pull, inspect and tag images, inspect
//! containers, remove images and volumes, check Quadlet files with podman's
//! Quadlet generator in dry-run mode, and run that generator as systemd does.
//!
//! [`PodmanCli`] runs `podman` and reads its answers as typed JSON
//! (`podman ... inspect --format json`, `podman ps --format json`), never as
//! scraped text; only a failed pull's message is looked at, to tell a trust
//! policy refusal (exit code 4) and a full disk (6) from other failures.
//! [`FakePodman`] records the calls and keeps images, containers and a
//! "registry" in memory, for the unit tests of the decision logic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::error::PolicyRejected;
pub use crate::host::podman_storage::Storage;

/// An image in podman's storage (`podman image inspect`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ImageInfo {
    /// The image ID (config digest, hex).
    pub id: String,
    /// The manifest digest the image was pulled by (`sha256:...`).
    #[serde(default)]
    pub digest: String,
    /// `RepoTags`: the names it has.
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    /// `name@sha256:...` for each manifest digest podman knows the image by.
    #[serde(default)]
    pub repo_digests: Option<Vec<String>>,
}

impl ImageInfo {
    /// The manifest digests the image is known by (its own and any index's).
    pub fn digests(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        if !self.digest.is_empty() {
            out.push(self.digest.clone());
        }
        for rd in self.repo_digests.iter().flatten() {
            if let Some((_, d)) = rd.rsplit_once('@') {
                if !out.iter().any(|x| x == d) {
                    out.push(d.to_string());
                }
            }
        }
        out
    }
}

/// A container's health (`State.Health`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    /// `starting`, `healthy`, `unhealthy` (empty without a health check).
    #[serde(default)]
    pub status: String,
    /// `FailingStreak`: consecutive failed checks.
    #[serde(default)]
    pub failing_streak: i64,
}

/// A container's state (`State`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerState {
    /// `created`, `running`, `exited`, `stopped`...
    #[serde(default)]
    pub status: String,
    /// `ExitCode`: the main process's exit status, once it exited.
    #[serde(default)]
    pub exit_code: i64,
    /// `Health`, when the container has a health check.
    #[serde(default)]
    pub health: Option<Health>,
}

/// One host port a container port is published on.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct PortBinding {
    /// `HostIp`: the host address; empty for all.
    #[serde(default)]
    pub host_ip: String,
    /// `HostPort`, as a decimal string.
    #[serde(default)]
    pub host_port: String,
}

/// A mount of a container (`Mounts`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct Mount {
    /// `volume` or `bind`.
    #[serde(default, rename = "Type")]
    pub kind: String,
    /// The volume's name (volumes only).
    #[serde(default)]
    pub name: String,
    /// `Source`: the path on the host (for a volume, its directory).
    #[serde(default)]
    pub source: String,
    /// `Destination`: the path in the container.
    #[serde(default)]
    pub destination: String,
}

/// A container's `HostConfig`, the parts hostctl reads.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct HostConfig {
    /// `PortBindings`: container port (`80/tcp`) to its host bindings.
    #[serde(default)]
    pub port_bindings: Option<HashMap<String, Option<Vec<PortBinding>>>>,
}

/// A container's `Config`, the parts hostctl reads.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// `Labels`.
    #[serde(default)]
    pub labels: Option<HashMap<String, String>>,
}

/// A container (`podman container inspect`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerInfo {
    /// `Id`: the container's full ID.
    pub id: String,
    /// `Name`.
    pub name: String,
    /// The image ID the container runs.
    pub image: String,
    /// The reference the container was created from.
    #[serde(default)]
    pub image_name: String,
    /// `State`.
    #[serde(default)]
    pub state: ContainerState,
    /// `Config`.
    #[serde(default)]
    pub config: ContainerConfig,
    /// `HostConfig`.
    #[serde(default)]
    pub host_config: HostConfig,
    /// `Mounts`.
    #[serde(default)]
    pub mounts: Vec<Mount>,
}

impl ContainerInfo {
    /// Published ports as `HOST:CONTAINER/PROTO` (with `IP:` when bound to one), sorted.
    pub fn ports(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (cport, binds) in self.host_config.port_bindings.iter().flatten() {
            for b in binds.iter().flatten() {
                let ip = if b.host_ip.is_empty() { String::new() } else { format!("{}:", b.host_ip) };
                out.push(format!("{ip}{}:{cport}", b.host_port));
            }
        }
        out.sort();
        out
    }
}

/// One entry of `podman ps --format json`.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PsEntry {
    #[serde(default)]
    names: Vec<String>,
}

/// Registry settings a pull passes on to podman (the same files as for OS images).
#[derive(Clone, Debug, Default)]
pub struct PullSettings {
    /// `false` allows plain HTTP and unverified certificates (`--tls-verify=false`).
    pub tls_verify: bool,
    /// `--authfile`, if set.
    pub authfile: Option<PathBuf>,
    /// `--cert-dir`, if set.
    pub cert_dir: Option<PathBuf>,
    /// The trust policy (`--signature-policy`); podman's default when `None`.
    pub policy: Option<PathBuf>,
}

/// What podman's Quadlet generator said about a set of unit files.
#[derive(Clone, Debug)]
pub struct DryRun {
    /// Whether it converted every file without an error.
    pub ok: bool,
    /// The generated systemd units.
    pub generated: String,
    /// Its messages (errors and warnings).
    pub messages: String,
}

/// The podman operations hostctl's apps use.
pub trait Podman: Send + Sync {
    /// Pulls `reference` into podman's storage.
    fn pull(&self, reference: &str, settings: &PullSettings) -> Result<()>;
    /// The image `reference` (a name or an ID) names, if present.
    fn image(&self, reference: &str) -> Result<Option<ImageInfo>>;
    /// [`Podman::image`], read from podman's storage files without running
    /// podman when they tell ([`crate::host::podman_storage::stored_image`]);
    /// for a look before a pull, which podman's own lock then orders.
    fn image_quick(&self, reference: &str) -> Result<Option<ImageInfo>> {
        self.image(reference)
    }
    /// Points `reference` at the image with ID `id`.
    fn tag(&self, id: &str, reference: &str) -> Result<()>;
    /// Removes the image `reference` (a name removes only that name while others remain).
    fn remove_image(&self, reference: &str) -> Result<()>;
    /// The container called `name`, if it exists.
    fn container(&self, name: &str) -> Result<Option<ContainerInfo>>;
    /// The names of the containers (running or not) made from image `id`.
    fn containers_of_image(&self, id: &str) -> Result<Vec<String>>;
    /// Removes the named volume `name` (absent: nothing to do).
    fn remove_volume(&self, name: &str) -> Result<()>;
    /// Runs the Quadlet generator in dry-run mode over the files in `dir` only.
    fn quadlet_dryrun(&self, dir: &Path) -> Result<DryRun>;
    /// Where podman's storage is and which layers it holds.
    fn storage(&self) -> Result<Storage>;
    /// Runs the Quadlet generator as systemd runs it at a daemon-reload, over
    /// the Quadlet files of `units_dir`, writing the units it makes to `out`
    /// (an empty directory). `Ok(false)` when there is no such generator here.
    fn quadlet_generate(&self, units_dir: &Path, out: &Path) -> Result<bool>;
}

/// The system units directory Quadlet reads by default (with
/// `/usr/share/containers/systemd`), where hostctl's apps live.
pub const QUADLET_SYSTEM_DIR: &str = "/etc/containers/systemd";

/// The real thing: the `podman` on `PATH` and podman's Quadlet generator
/// (`/usr/libexec/podman/quadlet`, or `HOSTCTL_QUADLET`).
#[derive(Clone, Debug)]
pub struct PodmanCli {
    /// The podman executable.
    pub program: PathBuf,
    /// Options put before every podman command (tests: `--root`, `--runroot`).
    pub global: Vec<String>,
    /// The Quadlet generator, for dry runs.
    pub quadlet: PathBuf,
    /// The Quadlet generator as systemd runs it: its path in systemd's
    /// generator directory, which Quadlet writes into the header of every
    /// unit it makes (`# Automatically generated by PATH`), so that what
    /// hostctl generates is the same, byte for byte, as what the next
    /// daemon-reload does (`HOSTCTL_QUADLET_GENERATOR` overrides it).
    pub generator: PathBuf,
}

impl Default for PodmanCli {
    fn default() -> Self {
        let quadlet = std::env::var_os("HOSTCTL_QUADLET")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/libexec/podman/quadlet"));
        let generator = std::env::var_os("HOSTCTL_QUADLET_GENERATOR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/usr/lib/systemd/system-generators/podman-system-generator"));
        PodmanCli { program: PathBuf::from("podman"), global: Vec::new(), quadlet, generator }
    }
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

impl PodmanCli {
    fn output(&self, args: &[&str]) -> Result<Output> {
        let started = std::time::Instant::now();
        let out = Command::new(&self.program)
            .args(&self.global)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running podman {}", args.join(" ")))?;
        tracing::debug!("podman {}: {} in {:?}", args.join(" "), out.status, started.elapsed());
        Ok(out)
    }

    fn run(&self, args: &[&str]) -> Result<Vec<u8>> {
        let out = self.output(args)?;
        if !out.status.success() {
            bail!("podman {} failed ({}): {}", args.join(" "), out.status, stderr_of(&out));
        }
        Ok(out.stdout)
    }

    /// `podman ... exists NAME`: exit 0 yes, 1 no, anything else an error.
    fn exists(&self, what: &str, name: &str) -> Result<bool> {
        let out = self.output(&[what, "exists", name])?;
        match out.status.code() {
            Some(0) => Ok(true),
            Some(1) => Ok(false),
            _ => bail!("podman {what} exists {name} failed ({}): {}", out.status, stderr_of(&out)),
        }
    }
}

impl PodmanCli {
    /// `podman WHAT inspect --format json NAME`; `None` when there is no
    /// such thing. One podman run, not `exists` then `inspect`: each run of
    /// podman costs a start-up (≈0.2 s in the VM benchmark's guest), and
    /// between the two a `--rm` container of a unit whose process just
    /// exited could be removed by conmon anyway (seen in the VM during an
    /// app update to an image that exits at start). podman says "no such
    /// container NAME" and "NAME: image not known" (4.3 and 5.4 alike).
    fn inspect(&self, what: &str, name: &str) -> Result<Option<Vec<u8>>> {
        let args = [what, "inspect", "--format", "json", name];
        let out = self.output(&args)?;
        if out.status.success() {
            return Ok(Some(out.stdout));
        }
        let err = stderr_of(&out);
        if err.contains(&format!("no such {what}")) || err.contains(&format!("{what} not known")) {
            return Ok(None);
        }
        bail!("podman {} failed ({}): {err}", args.join(" "), out.status)
    }
}

/// Turns a failed pull's message into the typed error its cause deserves.
fn pull_error(reference: &str, message: &str) -> anyhow::Error {
    // containers/image's words for a policy refusal and for ENOSPC.
    if message.contains("Source image rejected") {
        return PolicyRejected {
            image: reference.to_string(),
            rule: "containers-policy.json (podman)".into(),
            reason: message.to_string(),
        }
        .into();
    }
    if message.contains("no space left on device") {
        return anyhow::Error::new(std::io::Error::from_raw_os_error(libc::ENOSPC))
            .context(format!("podman pull {reference}: {message}"));
    }
    anyhow::anyhow!("podman pull {reference} failed: {message}")
}

impl Podman for PodmanCli {
    fn pull(&self, reference: &str, s: &PullSettings) -> Result<()> {
        let mut args: Vec<String> = vec!["pull".into(), "--quiet".into()];
        if !s.tls_verify {
            args.push("--tls-verify=false".into());
        }
        if let Some(a) = &s.authfile {
            args.push(format!("--authfile={}", a.display()));
        }
        if let Some(c) = &s.cert_dir {
            args.push(format!("--cert-dir={}", c.display()));
        }
        if let Some(p) = &s.policy {
            args.push(format!("--signature-policy={}", p.display()));
        }
        args.push(reference.to_string());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.output(&refs)?;
        if !out.status.success() {
            return Err(pull_error(reference, &stderr_of(&out)));
        }
        Ok(())
    }

    fn image(&self, reference: &str) -> Result<Option<ImageInfo>> {
        let Some(out) = self.inspect("image", reference)? else { return Ok(None) };
        let mut list: Vec<ImageInfo> =
            serde_json::from_slice(&out).with_context(|| format!("parsing podman image inspect {reference}"))?;
        Ok(list.pop())
    }

    fn image_quick(&self, reference: &str) -> Result<Option<ImageInfo>> {
        use crate::host::podman_storage::{other_image_stores, podman_graphroot, stored_image, Stored};
        let Ok(graphroot) = podman_graphroot(&self.global) else { return self.image(reference) };
        let conf = std::env::var_os("CONTAINERS_STORAGE_CONF").map(PathBuf::from);
        match stored_image(&graphroot, reference, !other_image_stores(&self.global, conf.as_deref())) {
            Stored::Found(image) => Ok(Some(image)),
            Stored::Absent => Ok(None),
            Stored::Unknown => self.image(reference),
        }
    }

    fn tag(&self, id: &str, reference: &str) -> Result<()> {
        self.run(&["tag", id, reference]).map(drop)
    }

    fn remove_image(&self, reference: &str) -> Result<()> {
        self.run(&["rmi", reference]).map(drop)
    }

    fn container(&self, name: &str) -> Result<Option<ContainerInfo>> {
        let Some(out) = self.inspect("container", name)? else { return Ok(None) };
        let mut list: Vec<ContainerInfo> =
            serde_json::from_slice(&out).with_context(|| format!("parsing podman container inspect {name}"))?;
        Ok(list.pop())
    }

    fn containers_of_image(&self, id: &str) -> Result<Vec<String>> {
        let filter = format!("ancestor={id}");
        let out = self.run(&["ps", "-a", "--filter", &filter, "--format", "json"])?;
        let list: Vec<PsEntry> = serde_json::from_slice(&out).context("parsing podman ps")?;
        Ok(list.into_iter().flat_map(|e| e.names).collect())
    }

    fn remove_volume(&self, name: &str) -> Result<()> {
        if !self.exists("volume", name)? {
            return Ok(());
        }
        self.run(&["volume", "rm", name]).map(drop)
    }

    fn storage(&self) -> Result<Storage> {
        crate::host::podman_storage::read(&self.global)
    }

    fn quadlet_dryrun(&self, dir: &Path) -> Result<DryRun> {
        let started = std::time::Instant::now();
        let out = Command::new(&self.quadlet)
            .arg("-dryrun")
            .env("QUADLET_UNIT_DIRS", dir)
            .stdin(Stdio::null())
            .output()
            .with_context(|| {
                format!("running {} (podman's Quadlet generator, podman >= 4.4)", self.quadlet.display())
            })?;
        tracing::debug!("quadlet -dryrun: {} in {:?}", out.status, started.elapsed());
        Ok(DryRun {
            ok: out.status.success(),
            generated: String::from_utf8_lossy(&out.stdout).into_owned(),
            messages: stderr_of(&out),
        })
    }

    fn quadlet_generate(&self, units_dir: &Path, out: &Path) -> Result<bool> {
        if !self.generator.is_file() {
            return Ok(false);
        }
        let started = std::time::Instant::now();
        // As systemd runs it: by its path there (its argv[0], which goes into
        // the units' header), with the output directory as first argument.
        // Only a units directory elsewhere than the system one is named with
        // QUADLET_UNIT_DIRS, which replaces the default directories.
        let mut cmd = Command::new(&self.generator);
        cmd.arg("-no-kmsg-log").arg(out).env_remove("QUADLET_UNIT_DIRS").stdin(Stdio::null());
        if units_dir != Path::new(QUADLET_SYSTEM_DIR) {
            cmd.env("QUADLET_UNIT_DIRS", units_dir);
        }
        let res = cmd.output().with_context(|| format!("running {}", self.generator.display()))?;
        tracing::debug!("quadlet generator {}: {} in {:?}", self.generator.display(), res.status, started.elapsed());
        if !res.status.success() {
            bail!("{} failed ({}): {}", self.generator.display(), res.status, stderr_of(&res));
        }
        Ok(true)
    }
}

/// A recording fake. `registry` holds what a pull of a reference would get;
/// `pull` copies it into `images` (replacing the name's previous image, which
/// stays reachable by its ID, as in podman).
#[derive(Default)]
pub struct FakePodman {
    calls: Mutex<Vec<String>>,
    /// Its storage and registry, for tests to set up and inspect.
    pub state: Mutex<FakePodmanState>,
}

/// The fake's storage and registry.
#[derive(Default)]
pub struct FakePodmanState {
    /// reference or ID -> image.
    pub images: HashMap<String, ImageInfo>,
    /// reference -> what pulling it gets; absent: the pull fails "not found".
    pub registry: HashMap<String, ImageInfo>,
    /// reference -> message a pull fails with.
    pub pull_errors: HashMap<String, String>,
    /// reference or ID -> message `rmi` of it fails with.
    pub remove_errors: HashMap<String, String>,
    /// name -> container.
    pub containers: HashMap<String, ContainerInfo>,
    /// name -> what the next inspections of it see, in turn (then `containers` again).
    pub container_next: HashMap<String, std::collections::VecDeque<ContainerInfo>>,
    /// The dry-run's verdict: `Some(message)` fails it.
    pub quadlet_error: Option<String>,
    /// What [`Podman::storage`] answers.
    pub storage: Storage,
    /// Whether the Quadlet generator is missing (`quadlet_generate` says so).
    pub no_generator: bool,
}

/// An image for fakes: ID `id`, pulled by manifest digest `digest`.
pub fn fake_image(id: &str, digest: &str) -> ImageInfo {
    ImageInfo { id: id.into(), digest: digest.into(), repo_tags: None, repo_digests: None }
}

impl FakePodman {
    /// A fake with no images, containers or calls.
    pub fn new() -> Self {
        Self::default()
    }

    /// The calls made so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn record(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

impl Podman for FakePodman {
    fn pull(&self, reference: &str, _s: &PullSettings) -> Result<()> {
        self.record(format!("pull {reference}"));
        let mut st = self.state.lock().unwrap();
        if let Some(msg) = st.pull_errors.get(reference) {
            return Err(pull_error(reference, msg));
        }
        // By digest: whatever the registry has with that manifest digest.
        let by_digest = reference.split_once('@').and_then(|(repo, d)| {
            st.registry.iter().find(|(k, v)| k.starts_with(repo) && v.digest == d).map(|(_, v)| v.clone())
        });
        let Some(img) = st.registry.get(reference).cloned().or(by_digest) else {
            bail!("podman pull {reference} failed: manifest unknown");
        };
        st.images.insert(img.id.clone(), img.clone());
        st.images.insert(reference.to_string(), img);
        Ok(())
    }

    fn image(&self, reference: &str) -> Result<Option<ImageInfo>> {
        Ok(self.state.lock().unwrap().images.get(reference).cloned())
    }

    fn tag(&self, id: &str, reference: &str) -> Result<()> {
        self.record(format!("tag {id} {reference}"));
        let mut st = self.state.lock().unwrap();
        let Some(img) = st.images.get(id).cloned() else { bail!("podman tag: no image {id}") };
        st.images.insert(reference.to_string(), img);
        Ok(())
    }

    fn remove_image(&self, reference: &str) -> Result<()> {
        self.record(format!("rmi {reference}"));
        let mut st = self.state.lock().unwrap();
        if let Some(msg) = st.remove_errors.get(reference) {
            bail!("podman rmi {reference} failed: {msg}");
        }
        let Some(img) = st.images.remove(reference) else { bail!("podman rmi: no image {reference}") };
        let still_named = st.images.iter().any(|(k, v)| v.id == img.id && *k != img.id);
        if !still_named {
            st.images.remove(&img.id);
        }
        Ok(())
    }

    fn container(&self, name: &str) -> Result<Option<ContainerInfo>> {
        let mut st = self.state.lock().unwrap();
        if let Some(next) = st.container_next.get_mut(name).and_then(|q| q.pop_front()) {
            st.containers.insert(name.to_string(), next);
        }
        Ok(st.containers.get(name).cloned())
    }

    fn containers_of_image(&self, id: &str) -> Result<Vec<String>> {
        let st = self.state.lock().unwrap();
        let mut names: Vec<String> = st.containers.values().filter(|c| c.image == id).map(|c| c.name.clone()).collect();
        names.sort();
        Ok(names)
    }

    fn remove_volume(&self, name: &str) -> Result<()> {
        self.record(format!("volume rm {name}"));
        Ok(())
    }

    fn quadlet_dryrun(&self, dir: &Path) -> Result<DryRun> {
        let mut files: Vec<String> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        files.sort();
        self.record(format!("quadlet -dryrun {}", files.join(" ")));
        let err = self.state.lock().unwrap().quadlet_error.clone();
        Ok(DryRun { ok: err.is_none(), generated: String::new(), messages: err.unwrap_or_default() })
    }

    fn storage(&self) -> Result<Storage> {
        Ok(self.state.lock().unwrap().storage.clone())
    }

    /// Makes `NAME.service` of each `NAME.container` (a header, then the
    /// file) and `NAME-volume.service` of each `NAME.volume`, and links a
    /// `.container` that is `WantedBy=multi-user.target` into that target's
    /// `.wants`, as Quadlet does.
    fn quadlet_generate(&self, units_dir: &Path, out: &Path) -> Result<bool> {
        self.record("quadlet generate".into());
        if self.state.lock().unwrap().no_generator {
            return Ok(false);
        }
        for entry in std::fs::read_dir(units_dir)? {
            let file = entry?.file_name().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(units_dir.join(&file))?;
            let service = match file.rsplit_once('.') {
                Some((stem, "container")) => format!("{stem}.service"),
                Some((stem, "volume")) => format!("{stem}-volume.service"),
                _ => continue,
            };
            std::fs::write(out.join(&service), format!("# generated from {file}\n{text}"))?;
            if file.ends_with(".container") && text.contains("WantedBy=multi-user.target") {
                let wants = out.join("multi-user.target.wants");
                std::fs::create_dir_all(&wants)?;
                std::os::unix::fs::symlink(format!("../{service}"), wants.join(&service))?;
            }
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_inspect_json_parses() {
        // Trimmed from `podman container inspect --format json` (podman 5.4).
        let json = r#"[{"Id":"abc","Name":"web","Image":"img1","ImageName":"127.0.0.1:5000/web:1",
          "State":{"Status":"running","Running":true,"ExitCode":0,"Health":{"Status":"healthy","FailingStreak":0,"Log":null}},
          "Config":{"Labels":{"PODMAN_SYSTEMD_UNIT":"web.service"}},
          "HostConfig":{"PortBindings":{"80/tcp":[{"HostIp":"","HostPort":"8080"}]}},
          "Mounts":[{"Type":"volume","Name":"webdata","Source":"/var/lib/containers/storage/volumes/webdata/_data","Destination":"/www/data"}]}]"#;
        let list: Vec<ContainerInfo> = serde_json::from_str(json).unwrap();
        let c = &list[0];
        assert_eq!(c.state.health.as_ref().unwrap().status, "healthy");
        assert_eq!(c.ports(), ["8080:80/tcp"]);
        assert_eq!(c.mounts[0].name, "webdata");
        assert_eq!(c.config.labels.as_ref().unwrap()["PODMAN_SYSTEMD_UNIT"], "web.service");
    }

    #[test]
    fn image_digests_include_repo_digests() {
        let json = r#"[{"Id":"i1","Digest":"sha256:aa","RepoTags":["x/y:1"],"RepoDigests":["x/y@sha256:aa","x/y@sha256:bb"]}]"#;
        let list: Vec<ImageInfo> = serde_json::from_str(json).unwrap();
        assert_eq!(list[0].digests(), ["sha256:aa", "sha256:bb"]);
    }

    /// An app update to an image that exits at start: podman removed the
    /// `--rm` container between `container exists` and `container inspect`,
    /// and `app update` failed with "no such container" instead of rolling
    /// back (seen in the VM). Now the container counts as gone.
    #[test]
    fn a_container_removed_between_exists_and_inspect_is_gone_not_an_error() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("podman");
        std::fs::write(
            &fake,
            "#!/bin/sh
case \"$1 $2\" in
  \"container exists\") exit 0 ;;
  \"image exists\") exit 0 ;;
  \"container inspect\") echo \"Error: no such container $5\" >&2; exit 125 ;;
  *) echo \"Error: something else broke\" >&2; exit 125 ;;
esac
",
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let p = PodmanCli { program: fake, ..PodmanCli::default() };
        assert_eq!(p.container("web").unwrap(), None);
        // Any other failure is still an error, with podman's message.
        let e = p.image("reg/web:1").unwrap_err();
        assert!(format!("{e:#}").contains("something else broke"), "{e:#}");
    }

    #[test]
    fn pull_failures_are_classified() {
        let e = pull_error("r", "Error: Source image rejected: A signature was required, but no signature exists");
        assert_eq!(crate::error::exit_code(&e), crate::error::code::REJECTED);
        let e = pull_error("r", "writing blob: write /var/tmp/x: no space left on device");
        assert_eq!(crate::error::exit_code(&e), crate::error::code::NO_SPACE);
        assert_eq!(crate::error::exit_code(&pull_error("r", "manifest unknown")), crate::error::code::FAILURE);
    }
}
