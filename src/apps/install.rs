//! `app install` and `app remove`.
//!
//! Install checks everything it can before it changes anything: the name
//! (no installed app or existing unit by that name), the published host
//! ports (free), the unit files (podman's Quadlet generator, dry-run, on a
//! scratch copy), then pulls the image with podman (unless podman holds the
//! registry's image under that name already and the trust policy accepts
//! it: [`super::remote`]). Only then are the files
//! written, the units made of them handed to systemd (without a
//! daemon-reload when they are all new: [`super::generated`]) and the unit
//! started; if the app does not come up, the error says why (its state and
//! last journal lines) and the install is undone: unit stopped, files
//! removed, systemd reloaded, and the image removed when the install pulled
//! it.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::generated::load_new_units;
use super::leftover::{remove_unused, Disposal};
use super::quadlet::{parse_publish, AppUnit, ContainerSpec};
use super::record::AppRecord;
use super::{check_name, Apps, QUADLET_EXTENSIONS};
use crate::host::units::{Outcome, UnitState};

/// What to install.
pub enum Source {
    /// `app install NAME IMAGE [options]`: hostctl writes the unit.
    Spec(ContainerSpec),
    /// `app install --file F...`: Quadlet files the user wrote; exactly one `.container`.
    Files(Vec<PathBuf>),
}

/// What `app install --json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct InstallReport {
    /// The app's name (its container's name too).
    pub name: String,
    /// The systemd unit Quadlet made of it (`NAME.service`).
    pub unit: String,
    /// The image reference, as given.
    pub image: String,
    /// The pulled image's ID.
    pub image_id: String,
    /// The pulled image's manifest digest (`sha256:…`).
    pub digest: String,
    /// The unit files written (file names in the units directory), the `.container` first.
    pub files: Vec<String>,
    /// `active` when started, `inactive` with `--no-start`.
    pub state: String,
}

/// An app that did not come up: why, its unit's state and last journal lines.
#[derive(Debug, thiserror::Error)]
#[error("{name} did not come up: {why}; unit {unit}: {}{}", .state.summary(), journal_text(.journal))]
pub struct AppDown {
    /// The app's name.
    pub name: String,
    /// Its systemd unit.
    pub unit: String,
    /// What went wrong, in a sentence.
    pub why: String,
    /// The unit's state when hostctl gave up on it.
    pub state: UnitState,
    /// The unit's last journal lines, oldest first.
    pub journal: Vec<String>,
}

fn journal_text(lines: &[String]) -> String {
    if lines.is_empty() {
        String::new()
    } else {
        format!("; last journal lines:\n  {}", lines.join("\n  "))
    }
}

/// The files of an install, as (file name, text), the `.container` first.
pub fn files_of(source: &Source) -> Result<(String, Vec<(String, String)>)> {
    match source {
        Source::Spec(spec) => {
            spec.validate()?;
            Ok((spec.name.clone(), vec![(format!("{}.container", spec.name), spec.render())]))
        }
        Source::Files(paths) => {
            let mut files = Vec::new();
            for p in paths {
                let file = p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
                let ext = file.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
                if !QUADLET_EXTENSIONS.contains(&ext) {
                    bail!("{}: a Quadlet file name ends in .container, .volume, .network or .image", p.display());
                }
                check_name(file.rsplit_once('.').map(|(s, _)| s).unwrap_or(""))
                    .with_context(|| format!("{}", p.display()))?;
                let text = std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
                super::quadlet::UnitFile::parse(&text).with_context(|| format!("{}", p.display()))?;
                if files.iter().any(|(f, _)| *f == file) {
                    bail!("{file} is given twice");
                }
                files.push((file, text));
            }
            let containers: Vec<&String> = files.iter().map(|(f, _)| f).filter(|f| f.ends_with(".container")).collect();
            let [container] = containers.as_slice() else {
                bail!("--file: give exactly one .container file (got {})", containers.len());
            };
            let name = container.trim_end_matches(".container").to_string();
            files.sort_by_key(|(f, _)| !f.ends_with(".container"));
            Ok((name, files))
        }
    }
}

/// Refuses a health start period so long that hostctl would give up waiting
/// before podman could have decided that the app is unhealthy.
fn check_wait_covers_health(spec: &ContainerSpec, timeout: std::time::Duration) -> Result<()> {
    if let Some(deadline) = spec.health_kill_deadline() {
        if timeout.as_secs() < deadline {
            bail!(
                "--health-start-period {}: an app whose health check fails is only killed up to {deadline} s \
                 after its start, longer than --timeout {}; give --timeout {deadline} or more",
                spec.health_start_period.unwrap_or(super::quadlet::DEFAULT_HEALTH_START_PERIOD_SECS),
                timeout.as_secs()
            );
        }
    }
    Ok(())
}

/// Refuses a published host port that something already listens on.
fn check_port_free(publish: &str) -> Result<()> {
    let p = parse_publish(publish)?;
    let ip = p.host_ip.as_deref().unwrap_or("0.0.0.0");
    let addr = (ip, p.host_port);
    let free = if p.proto == "udp" {
        std::net::UdpSocket::bind(addr).map(drop)
    } else {
        std::net::TcpListener::bind(addr).map(drop)
    };
    match free {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            bail!("port {}/{} is already in use on {ip} (--publish {publish})", p.host_port, p.proto)
        }
        Err(e) => Err(e).with_context(|| format!("checking that port {} is free", p.host_port)),
    }
}

/// Installs an app and, unless `start` is false, starts it and waits until it is up.
pub fn install(apps: &Apps, source: Source, start: bool) -> Result<InstallReport> {
    let (name, files) = files_of(&source)?;
    if let (Source::Spec(spec), true) = (&source, start) {
        check_wait_covers_health(spec, apps.wait.timeout)?;
    }
    let unit_name = Apps::service(&name);
    let dir = apps.units_dir();
    for (file, _) in &files {
        if dir.join(file).exists() {
            if file.ends_with(".container") {
                bail!("app {name} is already installed ({})", dir.join(file).display());
            }
            bail!("{} already exists", dir.join(file).display());
        }
    }
    let images: Vec<(String, String)> = files.iter().filter(|(f, _)| f.ends_with(".image")).cloned().collect();
    let unit = AppUnit::read(&name, &files[0].1, &images).with_context(|| format!("reading {}", files[0].0))?;
    for p in &unit.publish {
        check_port_free(p)?;
    }
    // Four looks that do not depend on each other run side by side: whether
    // systemd knows the name, whether the image is there already (the undo
    // keeps it then), what the registry has under the reference and whether
    // it fits (the space check: `room`), and the dry run.
    let (existing, had_image, checked, remote) = std::thread::scope(|s| {
        let existing = s.spawn(|| apps.units.state(&unit_name));
        let had_image = s.spawn(|| apps.podman.image_quick(&unit.image));
        let remote = s.spawn(|| apps.ensure_room(&unit.image));
        let checked = dry_run(apps, &files);
        (joined(existing), joined(had_image), checked, joined(remote))
    });
    let existing = existing?;
    if existing.exists() {
        bail!("a systemd unit {unit_name} already exists ({}); choose another app name", existing.load_state);
    }
    checked?;

    // The image, with podman's own registry and trust settings, unless
    // podman holds the registry's image under that name already and the
    // trust policy accepts it: then a pull would change nothing (`remote`).
    let had_image = had_image?;
    let remote = remote?; // the space check, asked beside the looks above
    let held = match (&had_image, &remote) {
        (Some(local), Some(remote)) => remote.pull_changes_nothing(local).map(|verdict| (local, verdict)),
        _ => None,
    };
    match held {
        Some((local, verdict)) => tracing::debug!(
            "not pulling {}: podman holds the registry's {} already, and the trust policy accepts it ({})",
            unit.image,
            local.digest,
            verdict.rule
        ),
        None => apps.podman.pull(&unit.image, &apps.pull).with_context(|| format!("pulling {}", unit.image))?,
    }
    let current = held.map(|(local, _)| local.clone());
    let had_image = had_image.is_some();

    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written: Vec<String> = Vec::new();
    let result = (|| -> Result<crate::host::podman::ImageInfo> {
        for (file, text) in &files {
            crate::fsutil::write_atomic(&dir.join(file), text.as_bytes())?;
            written.push(file.clone());
        }
        let reloaded = load_units(apps, &unit_name)?;
        if start {
            if reloaded {
                apps.units.reset_failed(&unit_name)?;
            }
            let mut outcome = apps.come_up(&name, false)?;
            if let (false, Outcome::Down { state, .. }) = (reloaded, &outcome) {
                if !state.exists() {
                    // systemd did not pick the new unit up by itself: reload after all.
                    tracing::debug!("{unit_name} was not found without a daemon-reload: reloading");
                    apps.units.daemon_reload()?;
                    outcome = apps.come_up(&name, false)?;
                }
            }
            if let Outcome::Down { why, state } = outcome {
                let journal = apps.units.journal(&unit_name, apps.journal_lines).unwrap_or_default();
                return Err(AppDown { name: name.clone(), unit: unit_name.clone(), why, state, journal }.into());
            }
        }
        AppRecord { files: written.clone(), ..Default::default() }.save(&apps.records_dir(), &name)?;
        // Read after the start, which it need not delay: the pulled image's
        // ID and digest, for the report.
        match current {
            Some(image) => Ok(image),
            None => apps
                .podman
                .image(&unit.image)?
                .with_context(|| format!("{} is not in podman's storage after the pull", unit.image)),
        }
    })();
    let image = match result {
        Ok(image) => image,
        Err(err) => {
            let undo = undo_install(apps, &unit_name, &written, (!had_image).then_some(unit.image.as_str()));
            return Err(match undo {
                Ok(()) => err.context(format!("installing {name} (undone: nothing of it is left)")),
                Err(u) => err.context(format!("installing {name} (undoing it failed too: {u:#})")),
            });
        }
    };
    Ok(InstallReport {
        name,
        unit: unit_name,
        image: unit.image,
        image_id: image.id.clone(),
        digest: image.digest.clone(),
        files: written,
        state: if start { "active".into() } else { "inactive".into() },
    })
}

/// The result of a scoped thread; its panic goes on here.
fn joined<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Makes systemd see the units of an app whose files were just written:
/// without a daemon-reload when only new units come of them
/// ([`load_new_units`]), else with one. Returns whether systemd was reloaded.
fn load_units(apps: &Apps, service: &str) -> Result<bool> {
    let why = match load_new_units(apps, service) {
        Ok(None) => return Ok(false),
        Ok(Some(why)) => why,
        Err(e) => format!("{e:#}"),
    };
    tracing::debug!("systemctl daemon-reload, since {service} could not be loaded alone: {why}");
    apps.units.daemon_reload()?;
    Ok(true)
}

/// Checks `files` with podman's Quadlet generator in dry-run mode, in a
/// scratch directory with the `.volume`, `.network` and `.image` units
/// already installed (a new `.container` may use them).
fn dry_run(apps: &Apps, files: &[(String, String)]) -> Result<()> {
    let scratch = tempfile::tempdir().context("creating a scratch directory for the Quadlet dry run")?;
    if let Ok(entries) = std::fs::read_dir(apps.units_dir()) {
        for entry in entries {
            let entry = entry?;
            let f = entry.file_name().to_string_lossy().into_owned();
            if [".volume", ".network", ".image"].iter().any(|e| f.ends_with(e)) {
                std::fs::copy(entry.path(), scratch.path().join(&f))?;
            }
        }
    }
    for (file, text) in files {
        std::fs::write(scratch.path().join(file), text)?;
    }
    let verdict = apps.podman.quadlet_dryrun(scratch.path())?;
    if !verdict.ok {
        let msg = verdict.messages.replace(&scratch.path().display().to_string(), "");
        bail!("podman's Quadlet generator refused the unit (nothing was written):\n{}", msg.trim());
    }
    Ok(())
}

/// Takes back what an install did: stops the unit, removes the files written
/// and the image pulled (when the install pulled it).
fn undo_install(apps: &Apps, unit: &str, written: &[String], pulled: Option<&str>) -> Result<()> {
    let dir = apps.units_dir();
    let stopped = apps.units.stop(unit);
    for file in written {
        crate::fsutil::remove_file_if_present(&dir.join(file))?;
    }
    apps.units.daemon_reload()?;
    apps.units.reset_failed(unit)?;
    stopped?;
    if let Some(image) = pulled {
        apps.podman.remove_image(image)?;
    }
    Ok(())
}

/// What `app remove --json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct RemoveReport {
    /// The app's name.
    pub name: String,
    /// The unit files removed (file names in the units directory).
    pub files_removed: Vec<String>,
    /// The named volumes removed (with `--purge`; bind mounts are never removed).
    pub volumes_removed: Vec<String>,
    /// The image removed (with `--purge`, when no other container used it).
    pub image_removed: Option<String>,
    /// With `--purge`: the IDs of images that rolled-back updates of the app
    /// pulled and left behind, removed now.
    pub failed_images_removed: Vec<String>,
    /// With `--purge`: those left behind still, each with why.
    pub failed_images_kept: Vec<String>,
}

/// Removes an app: stops it, removes its unit files and record; `purge`
/// also removes its named volumes, its image when no container uses it, and
/// the images its rolled-back updates left behind (recorded in its record)
/// when nothing uses them.
pub fn remove(apps: &Apps, name: &str, purge: bool) -> Result<RemoveReport> {
    let unit = apps.unit(name)?;
    let service = Apps::service(name);
    apps.units.stop(&service)?;
    let record = AppRecord::load(&apps.records_dir(), name)?;
    let mut files = record.files.clone();
    let container = format!("{name}.container");
    if !files.contains(&container) {
        files.push(container);
    }
    let dir = apps.units_dir();
    for f in &files {
        crate::fsutil::remove_file_if_present(&dir.join(f))?;
    }
    apps.units.daemon_reload()?;
    apps.units.reset_failed(&service)?;
    AppRecord::remove(&apps.records_dir(), name)?;
    let mut report = RemoveReport {
        name: name.into(),
        files_removed: files,
        volumes_removed: vec![],
        image_removed: None,
        failed_images_removed: vec![],
        failed_images_kept: vec![],
    };
    if purge {
        for v in &unit.volumes {
            let src = v.split(':').next().unwrap_or("");
            if src.starts_with('/') || src.is_empty() {
                continue; // a bind mount: the host's files, never removed
            }
            // A `.volume` unit's volume is named systemd-NAME by Quadlet.
            let vol = match src.strip_suffix(".volume") {
                Some(stem) => format!("systemd-{stem}"),
                None => src.to_string(),
            };
            apps.podman.remove_volume(&vol)?;
            report.volumes_removed.push(vol);
        }
        if let Some(img) = apps.podman.image(&unit.image)? {
            if apps.podman.containers_of_image(&img.id)?.is_empty() {
                apps.podman.remove_image(&unit.image)?;
                report.image_removed = Some(unit.image.clone());
            }
        }
        for failed in &record.failed_images {
            match remove_unused(apps.podman, &failed.id) {
                Disposal::Removed => report.failed_images_removed.push(failed.id.clone()),
                Disposal::Gone => {}
                Disposal::Kept(why) => {
                    report.failed_images_kept.push(format!("{} ({}): {why}", failed.id, failed.digest))
                }
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apps::testing::Fixture;
    use crate::host::podman::fake_image;
    use crate::host::units::{state, JobResult, UnitState};

    const IMG: &str = "127.0.0.1:5000/apps/web:1";

    fn spec() -> ContainerSpec {
        ContainerSpec {
            name: "web".into(),
            image: IMG.into(),
            volumes: vec!["webdata:/www/data".into()],
            ..Default::default()
        }
    }

    fn fixture() -> Fixture {
        let f = Fixture::new();
        f.podman.state.lock().unwrap().registry.insert(IMG.into(), fake_image("id1", "sha256:d1"));
        f
    }

    #[test]
    fn install_checks_pulls_writes_reloads_starts_and_records() {
        let f = fixture();
        let apps = f.apps();
        let r = install(&apps, Source::Spec(spec()), true).unwrap();
        assert_eq!((r.image_id.as_str(), r.digest.as_str(), r.state.as_str()), ("id1", "sha256:d1", "active"));
        assert_eq!(f.podman.calls(), ["quadlet -dryrun web.container", &format!("pull {IMG}")]);
        assert_eq!(f.units.calls(), ["daemon-reload", "reset-failed web.service", "start web.service"]);
        assert!(apps.units_dir().join("web.container").is_file());
        assert_eq!(AppRecord::load(&apps.records_dir(), "web").unwrap().files, ["web.container"]);
        // A second install of the same name is refused, and changes nothing.
        let err = install(&apps, Source::Spec(spec()), true).unwrap_err();
        assert!(err.to_string().contains("app web is already installed"), "{err:#}");
        assert_eq!(f.units.calls().len(), 3);
    }

    /// With systemd's generator directory at hand, a new app's units go
    /// there, made by the generator as systemd would, and no daemon-reload
    /// is needed: systemd loads a unit it does not know from disk on demand.
    #[test]
    fn a_new_app_is_started_without_a_daemon_reload() {
        let f = fixture();
        let gen = f.dir.path().join("run/systemd/generator");
        std::fs::create_dir_all(&gen).unwrap();
        std::fs::write(gen.join("other.service"), "not Quadlet's\n").unwrap();
        f.units.set_generator_dir(&gen);
        let apps = f.apps();
        install(&apps, Source::Spec(spec()), true).unwrap();
        assert_eq!(f.units.calls(), ["unit-dirs-changed", "start web.service"]);
        assert_eq!(f.podman.calls()[2], "quadlet generate");
        let unit = std::fs::read_to_string(gen.join("web.service")).unwrap();
        assert_eq!(unit, format!("# generated from web.container\n{}", spec().render()));
        assert!(gen.join("multi-user.target.wants/web.service").is_file());
        assert_eq!(std::fs::read_to_string(gen.join("other.service")).unwrap(), "not Quadlet's\n");
        // The scratch directory the generator wrote into is gone.
        let left: Vec<_> = std::fs::read_dir(gen.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, ["generator"]);
    }

    /// A generated unit of that name left from before (an app removed
    /// without a reload) differs from the new one: systemd would keep what
    /// it loaded, so it is reloaded, and the stale file is left to the reload.
    #[test]
    fn a_stale_generated_unit_or_no_generator_means_a_daemon_reload() {
        let f = fixture();
        let gen = f.dir.path().join("run/systemd/generator");
        std::fs::create_dir_all(&gen).unwrap();
        std::fs::write(gen.join("web.service"), "an older web\n").unwrap();
        f.units.set_generator_dir(&gen);
        install(&f.apps(), Source::Spec(spec()), true).unwrap();
        assert_eq!(f.units.calls(), ["daemon-reload", "reset-failed web.service", "start web.service"]);
        assert_eq!(std::fs::read_to_string(gen.join("web.service")).unwrap(), "an older web\n");
        // No Quadlet generator where systemd runs it.
        let f = fixture();
        f.units.set_generator_dir(f.dir.path());
        f.podman.state.lock().unwrap().no_generator = true;
        install(&f.apps(), Source::Spec(spec()), true).unwrap();
        assert_eq!(f.units.calls(), ["daemon-reload", "reset-failed web.service", "start web.service"]);
    }

    /// Should systemd not find the unit written for it, the install
    /// reloads systemd after all and starts it again.
    #[test]
    fn a_unit_systemd_did_not_find_is_started_again_after_a_reload() {
        let f = fixture();
        f.units.set_generator_dir(f.dir.path());
        let not_found =
            UnitState { load_state: "not-found".into(), active_state: "inactive".into(), ..Default::default() };
        f.units.on_next_start("web.service", JobResult::Failed("Unit web.service not found.".into()), vec![not_found]);
        let r = install(&f.apps(), Source::Spec(spec()), true).unwrap();
        assert_eq!(r.state, "active");
        assert_eq!(f.units.calls(), ["unit-dirs-changed", "start web.service", "daemon-reload", "start web.service"]);
    }

    #[test]
    fn an_app_that_does_not_come_up_is_explained_and_undone() {
        let f = fixture();
        let apps = f.apps();
        f.units.on_next_start(
            "web.service",
            JobResult::Done,
            vec![state("active", "running"), state("failed", "failed")],
        );
        f.units.set_journal(
            "web.service",
            &["httpd: bind: Address in use", "web.service: Failed with result 'exit-code'."],
        );
        let err = install(&apps, Source::Spec(spec()), true).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("web did not come up: it started but did not stay up"), "{msg}");
        assert!(msg.contains("failed (failed, result exit-code, exit status 1)"), "{msg}");
        assert!(msg.contains("httpd: bind: Address in use"), "{msg}");
        assert!(msg.contains("undone"), "{msg}");
        assert!(err.chain().any(|c| c.is::<AppDown>()));
        assert!(!apps.units_dir().join("web.container").exists());
        assert!(AppRecord::load(&apps.records_dir(), "web").unwrap().files.is_empty());
        assert_eq!(
            f.units.calls(),
            [
                "daemon-reload",
                "reset-failed web.service",
                "start web.service",
                "stop web.service",
                "daemon-reload",
                "reset-failed web.service"
            ]
        );
        // The install pulled the image, so the undo removes it.
        assert_eq!(f.podman.calls().last().unwrap(), &format!("rmi {IMG}"));
    }

    #[test]
    fn install_of_an_image_that_exits_at_start_is_undone_even_while_its_unit_looks_active() {
        let f = fixture();
        f.podman.state.lock().unwrap().containers.remove("web");
        let err = install(&f.apps(), Source::Spec(spec()), true).unwrap_err();
        assert!(format!("{err:#}").contains("its container web is gone (it exited)"), "{err:#}");
        assert!(!f.apps().units_dir().join("web.container").exists());
    }

    #[test]
    fn an_image_that_was_there_before_is_kept_by_the_undo() {
        let f = fixture();
        f.podman.state.lock().unwrap().images.insert(IMG.into(), fake_image("id0", "sha256:d0"));
        f.units.on_next_start("web.service", JobResult::TimedOut, vec![state("activating", "start")]);
        let err = install(&f.apps(), Source::Spec(spec()), true).unwrap_err();
        assert!(format!("{err:#}").contains("did not come up within 1 s"), "{err:#}");
        assert!(!f.podman.calls().iter().any(|c| c.starts_with("rmi")), "{:?}", f.podman.calls());
    }

    #[test]
    fn refusals_before_anything_is_written() {
        // The Quadlet generator refuses the unit.
        let f = fixture();
        f.podman.state.lock().unwrap().quadlet_error = Some("unsupported key 'Imgae' in group 'Container'".into());
        let err = install(&f.apps(), Source::Spec(spec()), true).unwrap_err();
        assert!(format!("{err:#}").contains("unsupported key 'Imgae'"), "{err:#}");
        assert_eq!(f.podman.calls().len(), 1, "no pull after a refused dry run");
        // The image does not exist.
        let f = Fixture::new();
        let err = install(&f.apps(), Source::Spec(spec()), true).unwrap_err();
        assert!(format!("{err:#}").contains("manifest unknown"), "{err:#}");
        // A unit by that name exists already.
        let f = fixture();
        f.units.set_state("web.service", state("active", "running"));
        let err = install(&f.apps(), Source::Spec(spec()), true).unwrap_err();
        assert!(err.to_string().contains("a systemd unit web.service already exists"), "{err:#}");
        assert!(f.units.calls().is_empty());
        assert!(!f.apps().units_dir().exists());
    }

    /// An image whose layers cannot fit where podman keeps them: refused
    /// before podman pulls (exit code 6), nothing written.
    #[test]
    fn an_image_that_cannot_fit_is_refused_before_the_pull() {
        use crate::apps::remote::{testing::FakeRemote, LayerBlob};
        let f = fixture();
        let d = tempfile::tempdir().unwrap();
        f.podman.state.lock().unwrap().storage.graphroot = d.path().to_path_buf();
        f.podman.state.lock().unwrap().storage.tmpdir = d.path().to_path_buf();
        let huge = LayerBlob { digest: "sha256:h".into(), size: u64::MAX / 8, compressed: true };
        let registry = FakeRemote::with_layers(IMG, vec![huge]);
        let apps = Apps { registry: Some(&registry), ..f.apps() };
        let err = install(&apps, Source::Spec(spec()), true).unwrap_err();
        assert_eq!(crate::error::exit_code(&err), crate::error::code::NO_SPACE, "{err:#}");
        assert!(!f.podman.calls().iter().any(|c| c.starts_with("pull")), "{:?}", f.podman.calls());
        assert!(f.units.calls().is_empty());
        assert!(!f.apps().units_dir().exists());
    }

    /// The image podman holds under the name is the registry's, and the
    /// trust policy accepts it: no pull (a pull would change nothing), and
    /// the report names that image. Any other answer, a pull as before.
    #[test]
    fn a_pull_that_would_change_nothing_is_skipped_and_any_doubt_pulls() {
        use crate::apps::remote::{testing::FakeRemote, RemoteImage};
        let accepted = Some(crate::trust::Verdict {
            rule: "default: insecureAcceptAnything".into(),
            signature_verified: false,
            signers: vec![],
        });
        let cases = [
            ("the registry's image, accepted", "sha256:d1", accepted.clone(), false),
            ("the tag moved on", "sha256:d2", accepted, true),
            ("the policy did not accept it here", "sha256:d1", None, true),
        ];
        for (case, digest, verdict, pulls) in cases {
            let f = fixture();
            f.podman.state.lock().unwrap().images.insert(IMG.into(), fake_image("id1", "sha256:d1"));
            let remote = RemoteImage { digests: vec![digest.into()], layers: vec![], accepted: verdict };
            let registry = FakeRemote([(IMG.to_string(), remote)].into());
            let apps = Apps { registry: Some(&registry), ..f.apps() };
            let r = install(&apps, Source::Spec(spec()), true).unwrap();
            let pulled = f.podman.calls().iter().any(|c| c.starts_with("pull"));
            assert_eq!(pulled, pulls, "{case}: {:?}", f.podman.calls());
            assert_eq!((r.image_id.as_str(), r.digest.as_str()), ("id1", "sha256:d1"), "{case}");
            // The undo of a failed install would keep the image: it was there.
            remove(&apps, "web", false).unwrap();
        }
        // No registry to ask: a pull.
        let f = fixture();
        f.podman.state.lock().unwrap().images.insert(IMG.into(), fake_image("id1", "sha256:d1"));
        install(&f.apps(), Source::Spec(spec()), true).unwrap();
        assert!(f.podman.calls().iter().any(|c| c.starts_with("pull")), "{:?}", f.podman.calls());
    }

    /// hostctl would give up before podman kills an app whose health check
    /// fails: refused before anything is done, naming the --timeout needed.
    #[test]
    fn a_health_start_period_longer_than_the_wait_is_refused_before_anything() {
        let f = fixture(); // waits 1 s
        let mut s = spec();
        s.health_cmd = Some("true".into());
        s.health_start_period = Some(300);
        let err = install(&f.apps(), Source::Spec(s.clone()), true).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("--health-start-period 300") && msg.contains("give --timeout 320 or more"), "{msg}");
        assert!(f.podman.calls().is_empty() && f.units.calls().is_empty());
        // Not started: nothing to wait for.
        install(&f.apps(), Source::Spec(s), false).unwrap();
    }

    #[test]
    fn a_port_already_in_use_is_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let f = fixture();
        let mut s = spec();
        s.publish = vec![format!("127.0.0.1:{port}:80")];
        let err = install(&f.apps(), Source::Spec(s), true).unwrap_err();
        assert!(err.to_string().contains(&format!("port {port}/tcp is already in use")), "{err:#}");
        assert!(f.podman.calls().is_empty());
    }

    #[test]
    fn user_files_install_and_remove_with_purge() {
        let f = fixture();
        let apps = f.apps();
        let src = tempfile::tempdir().unwrap();
        let c = src.path().join("web.container");
        std::fs::write(&c, format!("[Container]\nImage={IMG}\nVolume=web.volume:/data\n")).unwrap();
        let v = src.path().join("web.volume");
        std::fs::write(&v, "[Volume]\n").unwrap();
        let r = install(&apps, Source::Files(vec![v.clone(), c.clone()]), false).unwrap();
        assert_eq!(r.files, ["web.container", "web.volume"]);
        assert_eq!(r.state, "inactive");
        assert_eq!(f.podman.calls()[0], "quadlet -dryrun web.container web.volume");
        // Stopping the unit removes its container (Quadlet runs it with --rm).
        f.podman.state.lock().unwrap().containers.clear();
        let rm = remove(&apps, "web", true).unwrap();
        assert_eq!(rm.volumes_removed, ["systemd-web"]);
        assert_eq!(rm.image_removed.as_deref(), Some(IMG));
        assert!(!apps.units_dir().join("web.volume").exists());
        assert!(remove(&apps, "web", false).unwrap_err().to_string().contains("no app web is installed"));
        // Two .container files, or none, are refused.
        let err = install(&apps, Source::Files(vec![v]), false).unwrap_err();
        assert!(err.to_string().contains("exactly one .container"), "{err:#}");
    }
}
