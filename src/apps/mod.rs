//! Apps: containers layered on the immutable OS, each a Podman Quadlet unit
//! in `/etc/containers/systemd/` (the persistent, merged side of `/etc`), run
//! by systemd and updated with a health gate that rolls back by itself.
//!
//! Files, one concept each: [`quadlet`] (the unit model, writer and reader),
//! [`record`] (what hostctl remembers of each app under `/var`), [`install`]
//! (install, with undo when the app does not come up; remove), [`generated`]
//! (a new app's units loaded without a daemon-reload), [`update`]
//! (digest check, pull, restart, roll back by digest), [`leftover`] (the
//! image a rolled-back update pulled, removed), [`remote`] (what an image
//! reference names at its registry now), [`room`] (the space check before a
//! pull), [`status`] (list and status). podman and systemd are reached only through [`crate::host`].

pub mod bound;
pub mod generated;
pub mod install;
pub mod leftover;
pub mod quadlet;
pub mod record;
pub mod remote;
pub mod room;
pub mod status;
pub mod update;

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::host::podman::{Podman, PullSettings};
use crate::host::units::{start_and_wait, Outcome, Units, WaitPolicy};
use quadlet::AppUnit;

/// The Quadlet file kinds an app may consist of.
pub const QUADLET_EXTENSIONS: [&str; 4] = ["container", "volume", "network", "image"];

/// Where apps live and the host tools that run them.
pub struct Apps<'a> {
    /// The running root (`--sysroot`): units under `etc/`, records under `var/`.
    pub root: PathBuf,
    /// The podman the apps' images and containers go through.
    pub podman: &'a dyn Podman,
    /// The systemd the apps' units run under.
    pub units: &'a dyn Units,
    /// Registry settings for pulls (the same files as for OS images).
    pub pull: PullSettings,
    /// How long an app gets to come up, and to stay up.
    pub wait: WaitPolicy,
    /// How many journal lines explain a failure.
    pub journal_lines: usize,
    /// Where images are looked up before a pull ([`remote`]: the space
    /// check, and whether an install's pull would change anything); `None`:
    /// no look, podman pulls.
    pub registry: Option<&'a dyn remote::RemoteImages>,
}

/// Checks an app name: it becomes a file name, a unit name and a container
/// name, so `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most 64 characters.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !ok {
        bail!("app name {name:?} is not valid: use 1-64 of [A-Za-z0-9_.-], starting with a letter or digit");
    }
    Ok(())
}

impl Apps<'_> {
    /// What `reference` names at its registry now; `None` when there is no
    /// registry to ask or it cannot tell (a short name, an unreachable
    /// registry: the pull then says what is wrong), with the reason logged.
    pub fn look(&self, reference: &str) -> Option<remote::RemoteImage> {
        match self.registry?.look(reference) {
            Ok(image) => Some(image),
            Err(e) => {
                tracing::debug!("{reference} not looked up before the pull: {e:#}");
                None
            }
        }
    }

    /// Refuses a pull of `reference` that cannot fit ([`room::ensure`]),
    /// before podman downloads anything. Returns what the registry said.
    pub fn ensure_room(&self, reference: &str) -> Result<Option<remote::RemoteImage>> {
        let image = self.look(reference);
        if let Some(i) = &image {
            room::ensure(self.podman, &i.layers, reference)?;
        }
        Ok(image)
    }

    /// `ROOT/etc/containers/systemd`: the system Quadlet directory.
    pub fn units_dir(&self) -> PathBuf {
        self.root.join("etc/containers/systemd")
    }

    /// `ROOT/var/lib/hostctl/apps`: one record per app.
    pub fn records_dir(&self) -> PathBuf {
        self.root.join("var/lib/hostctl/apps")
    }

    /// `ROOT/var/lib/hostctl/apps.lock`: held by every app command that
    /// changes something, so that two of them cannot interleave.
    pub fn lock_path(&self) -> PathBuf {
        self.root.join("var/lib/hostctl/apps.lock")
    }

    /// Takes the apps lock, waiting up to `wait` for another app command to
    /// finish (then [`LockHeld`](crate::sysroot::LockHeld): exit code 3).
    pub fn lock(&self, wait: std::time::Duration) -> Result<crate::sysroot::SysrootLock> {
        let path = self.lock_path();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        crate::sysroot::lock_file(&path, wait)
    }

    /// The systemd service Quadlet makes of `NAME.container`.
    pub fn service(name: &str) -> String {
        format!("{name}.service")
    }

    /// The installed apps: every `.container` file in the units directory, by name.
    pub fn names(&self) -> Result<Vec<String>> {
        let dir = self.units_dir();
        let mut names = Vec::new();
        for entry in crate::fsutil::read_dir_if_present(&dir)? {
            let file = entry.file_name().to_string_lossy().into_owned();
            if let Some(stem) = file.strip_suffix(".container") {
                names.push(stem.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// The `.image` units beside the apps, as `(file name, text)`.
    fn image_units(dir: &Path) -> Result<Vec<(String, String)>> {
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries {
                let entry = entry?;
                let file = entry.file_name().to_string_lossy().into_owned();
                if file.ends_with(".image") {
                    out.push((file, std::fs::read_to_string(entry.path())?));
                }
            }
        }
        Ok(out)
    }

    /// Starts (or restarts) app `name` and decides whether it came up: its
    /// unit must ([`start_and_wait`]), and then its container must be
    /// running. The unit alone is not enough: it stays active for seconds
    /// after its container died, while conmon (its main process) waits for
    /// podman's clean-up of the container (seen in the VM: an image that
    /// exits at start looked up for the whole settling time).
    pub fn come_up(&self, name: &str, restart: bool) -> Result<Outcome> {
        let service = Self::service(name);
        let outcome = start_and_wait(self.units, &service, restart, &self.wait)?;
        if outcome != Outcome::Up {
            return Ok(outcome);
        }
        let ctr = self.unit(name)?.container_name;
        let why = match self.podman.container(&ctr)? {
            Some(c) if c.state.status == "running" => return Ok(Outcome::Up),
            Some(c) => format!("its container {ctr} is {} (exit code {})", c.state.status, c.state.exit_code),
            None => format!("its container {ctr} is gone (it exited)"),
        };
        Ok(Outcome::Down { why, state: self.units.state(&service)? })
    }

    /// Reads the installed app `name`'s unit.
    pub fn unit(&self, name: &str) -> Result<AppUnit> {
        check_name(name)?;
        let path = self.units_dir().join(format!("{name}.container"));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("no app {name} is installed (no {})", path.display())
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        AppUnit::read(name, &text, &Self::image_units(&self.units_dir())?)
            .with_context(|| format!("reading {}", path.display()))
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! The fixture the apps' unit tests share: fakes and a temporary root.

    use super::*;
    use crate::host::podman::{ContainerInfo, ContainerState, FakePodman};
    use crate::host::units::FakeUnits;
    use std::time::Duration;

    /// A container of app `name` running image `id`, or in state `status`.
    pub fn container(name: &str, id: &str, status: &str) -> ContainerInfo {
        ContainerInfo {
            id: "0123456789abcdef".into(),
            name: name.into(),
            image: id.into(),
            state: ContainerState {
                status: status.into(),
                exit_code: if status == "running" { 0 } else { 3 },
                health: None,
            },
            ..Default::default()
        }
    }

    pub struct Fixture {
        pub dir: tempfile::TempDir,
        pub podman: FakePodman,
        pub units: FakeUnits,
    }

    impl Fixture {
        /// With app `web`'s container running image `id1`.
        pub fn new() -> Self {
            let f = Fixture { dir: tempfile::tempdir().unwrap(), podman: FakePodman::new(), units: FakeUnits::new() };
            f.podman.state.lock().unwrap().containers.insert("web".into(), container("web", "id1", "running"));
            f
        }

        pub fn apps(&self) -> Apps<'_> {
            Apps {
                root: self.dir.path().to_path_buf(),
                podman: &self.podman,
                units: &self.units,
                pull: PullSettings::default(),
                wait: WaitPolicy {
                    timeout: Duration::from_secs(1),
                    settle: Duration::from_millis(10),
                    poll: Duration::from_millis(1),
                },
                journal_lines: 5,
                registry: None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two app commands at once: the second waits, then fails with exit code 3.
    #[test]
    fn a_second_app_command_waits_for_the_first_then_fails_locked() {
        let f = testing::Fixture::new();
        let held = f.apps().lock(std::time::Duration::ZERO).unwrap();
        let e = f.apps().lock(std::time::Duration::from_millis(100)).unwrap_err();
        assert_eq!(crate::error::exit_code(&e), crate::error::code::LOCKED, "{e:#}");
        drop(held);
        f.apps().lock(std::time::Duration::ZERO).unwrap();
    }

    #[test]
    fn app_names() {
        for ok in ["web", "a", "web-1.prod_2", &"x".repeat(64)] {
            check_name(ok).unwrap();
        }
        for bad in ["", "-web", ".web", "we/b", "we b", "../x", &"x".repeat(65), "wéb"] {
            assert!(check_name(bad).is_err(), "{bad:?} accepted");
        }
    }
}
