//! The deployment set's state (`<sysroot>/hostctl/state.json`) and the pure
//! decisions made from it: which deployment is booted, staged, the rollback,
//! the boot order, and which deployments a cleanup keeps.
//!
//! `state.json` is the single source of truth. Boot entries, deployment
//! directories and kernels on the boot partition are derived from it and are
//! reconciled to it by the next mutating command after a crash.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::imgref::ImageRef;
use crate::oci::RegistryOptions;

/// Version of the `state.json` format (defined with the other format versions).
pub use crate::format::STATE_VERSION;

/// The stateroot used unless one is named.
pub const DEFAULT_STATEROOT: &str = "default";

/// What the host follows (bootc's `spec`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// The tracked image reference, as given to `switch` (an `oci:` or
    /// `oci-archive:` path made absolute).
    pub image: String,
    /// How to reach the image's registry, as `switch` was told; `upgrade`
    /// uses it again. Absent from `state.json` when it is the default.
    #[serde(default, skip_serializing_if = "TransportOptions::is_default")]
    pub transport_options: TransportOptions,
}

impl Spec {
    /// Tracks `image` with the default transport options.
    pub fn new(image: impl Into<String>) -> Spec {
        Spec { image: image.into(), transport_options: TransportOptions::default() }
    }
}

/// The registry transport options remembered with the tracked image, as
/// bootc remembers the transport with its image: `switch --tls-verify=false`
/// (or `--cert-dir`, `--authfile`) is what `upgrade` and the update timer use
/// again, unless their own command line says otherwise. Paths are absolute.
/// registries.conf `insecure = true` needs nothing here: it is read at every
/// pull.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportOptions {
    /// False after `--tls-verify=false`: plain HTTP and unverified TLS allowed.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub tls_verify: bool,
    /// `--cert-dir`: the TLS directory used instead of the certs.d lookup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_dir: Option<PathBuf>,
    /// `--authfile` (or `REGISTRY_AUTH_FILE`): the auth.json to read credentials from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authfile: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

impl Default for TransportOptions {
    fn default() -> Self {
        TransportOptions { tls_verify: true, cert_dir: None, authfile: None }
    }
}

impl TransportOptions {
    /// Nothing but the defaults.
    pub fn is_default(&self) -> bool {
        *self == TransportOptions::default()
    }

    /// What a pull with `opts` of `imgref` leaves to remember: the options of
    /// a registry image (layouts and archives have none), paths made absolute.
    pub fn recorded(imgref: &ImageRef, opts: &RegistryOptions) -> Result<TransportOptions> {
        if !matches!(imgref, ImageRef::Registry(_)) {
            return Ok(TransportOptions::default());
        }
        let absolute = |p: &Option<PathBuf>| -> Result<Option<PathBuf>> {
            p.as_deref()
                .map(|p| std::path::absolute(p).with_context(|| format!("making {} absolute", p.display())))
                .transpose()
        };
        Ok(TransportOptions {
            tls_verify: !opts.insecure,
            cert_dir: absolute(&opts.cert_dir)?,
            authfile: absolute(&opts.authfile)?,
        })
    }

    /// Fills in `opts` from what was remembered, where the command line left
    /// it open: `tls_verify_given` says whether `--tls-verify` was given;
    /// `--cert-dir` and `--authfile` count as given when `opts` has them.
    pub fn apply(&self, opts: &mut RegistryOptions, tls_verify_given: bool) {
        if !tls_verify_given {
            opts.insecure = !self.tls_verify;
        }
        if opts.cert_dir.is_none() {
            opts.cert_dir = self.cert_dir.clone();
        }
        if opts.authfile.is_none() {
            opts.authfile = self.authfile.clone();
        }
    }

    /// The options as command-line flags (`--tls-verify=false --cert-dir=…`),
    /// for the human status; empty for the defaults.
    pub fn as_flags(&self) -> String {
        let mut v = Vec::new();
        if !self.tls_verify {
            v.push("--tls-verify=false".to_string());
        }
        if let Some(d) = &self.cert_dir {
            v.push(format!("--cert-dir={}", d.display()));
        }
        if let Some(f) = &self.authfile {
            v.push(format!("--authfile={}", f.display()));
        }
        v.join(" ")
    }
}

/// Contents of `state.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Format version of this file.
    pub version: u32,
    /// The stateroot it describes.
    pub stateroot: String,
    /// The image the host follows; `None` before the first deployment.
    #[serde(default)]
    pub spec: Option<Spec>,
    /// Bootable (finalised) deployments in boot order: `[0]` is the default,
    /// `[1]` the fallback. Each has a boot entry.
    #[serde(default)]
    pub deployments: Vec<String>,
    /// The deployment prepared for the next boot. When it is in
    /// `deployments` it is finalised (its /etc merged and boot entry written);
    /// otherwise it awaits `finalize_staged`.
    #[serde(default)]
    pub staged: Option<String>,
    /// Deployments `cleanup` keeps (`hostctl pin`).
    #[serde(default)]
    pub pinned: BTreeSet<String>,
    /// Serial of the next deployment (ids are `<short digest>.<serial>`).
    #[serde(default)]
    pub next_serial: u64,
    /// Kernel arguments of this host added to every entry before the image's
    /// own (`root=...` among them).
    #[serde(default)]
    pub local_kargs: Vec<String>,
    /// The staged deployment was downloaded with `--download-only`: the
    /// shutdown service leaves it unfinalised; `upgrade`/`switch` without
    /// that flag finalise it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub staged_locked: bool,
}

impl Default for State {
    fn default() -> Self {
        State {
            version: STATE_VERSION,
            stateroot: DEFAULT_STATEROOT.into(),
            spec: None,
            deployments: Vec::new(),
            staged: None,
            pinned: BTreeSet::new(),
            next_serial: 1,
            local_kargs: Vec::new(),
            staged_locked: false,
        }
    }
}

impl State {
    /// Reads `path`; a missing file is the empty state.
    pub fn load(path: &Path) -> Result<State> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(State::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let s: State = serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))?;
        crate::format::refuse_newer(path, "deployment state", s.version, STATE_VERSION, None)?;
        if s.version != STATE_VERSION {
            bail!("{} has format version {}, this hostctl reads {}", path.display(), s.version, STATE_VERSION);
        }
        s.check().with_context(|| format!("{} is inconsistent", path.display()))?;
        Ok(s)
    }

    /// Writes `path` atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.check()?;
        fsutil::write_json_atomic(path, self)
    }

    /// Invariants: ids unique; a stateroot name fit for file names.
    pub fn check(&self) -> Result<()> {
        let mut seen = BTreeSet::new();
        for d in &self.deployments {
            if !seen.insert(d) {
                bail!("deployment {d} is listed twice");
            }
        }
        if self.stateroot.is_empty() || self.stateroot.contains(['-', '/', '.']) {
            bail!("invalid stateroot name {:?}", self.stateroot);
        }
        Ok(())
    }

    /// Every deployment the state knows (bootable ones and an unfinalised staged one).
    pub fn all(&self) -> Vec<String> {
        let mut v = self.deployments.clone();
        if let Some(s) = &self.staged {
            if !v.contains(s) {
                v.push(s.clone());
            }
        }
        v
    }

    /// Whether the staged deployment still needs finalising.
    pub fn staged_unfinalized(&self) -> Option<&str> {
        self.staged.as_deref().filter(|s| !self.deployments.iter().any(|d| d == s))
    }
}

/// The roles of deployments, given the state and the booted deployment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Roles {
    /// The deployment running now.
    pub booted: Option<String>,
    /// The deployment prepared for the next boot.
    pub staged: Option<String>,
    /// The deployment to go back to.
    pub rollback: Option<String>,
    /// The default boot entry's deployment.
    pub default: Option<String>,
    /// The next boot goes to the rollback deployment (after `rollback`).
    pub rollback_queued: bool,
}

/// Who is booted, staged and the rollback. `booted` is ignored unless the
/// state knows it.
pub fn roles(state: &State, booted: Option<&str>) -> Roles {
    let all = state.all();
    let booted = booted.filter(|b| all.iter().any(|d| d == b)).map(str::to_string);
    let staged = state.staged.clone().filter(|s| Some(s) != booted.as_ref());
    let default = state.deployments.first().cloned();
    // With nothing known to be booted, the default stands in for it, so the
    // rollback is the fallback entry.
    let current = booted.clone().or_else(|| default.clone());
    let rollback =
        state.deployments.iter().find(|d| Some(*d) != current.as_ref() && Some(*d) != staged.as_ref()).cloned();
    let rollback_queued = default.is_some() && default == rollback && booted.is_some();
    Roles { booted, staged, rollback, default, rollback_queued }
}

/// The state after staging `new` (not yet finalised): a previous staged
/// deployment that was never booted is replaced, as there is one next boot.
pub fn after_stage(state: &State, new: &str, booted: Option<&str>) -> State {
    let mut s = state.clone();
    if let Some(old) = s.staged.take() {
        if Some(old.as_str()) != booted {
            s.deployments.retain(|d| *d != old);
        }
    }
    s.staged = Some(new.to_string());
    s.staged_locked = false;
    s
}

/// The state after finalising the staged deployment: it becomes the default.
pub fn after_finalize(state: &State) -> Result<State> {
    let Some(staged) = state.staged.clone() else { bail!("there is no staged deployment to finalise") };
    let mut s = state.clone();
    s.deployments.retain(|d| *d != staged);
    s.deployments.insert(0, staged);
    s.staged_locked = false;
    Ok(s)
}

/// Raised when there is nothing to roll back to.
#[derive(Debug, thiserror::Error)]
#[error("there is no rollback deployment")]
pub struct NoRollback;

/// The state after `rollback`. With a staged update pending, the booted
/// deployment becomes the default again (the update is un-staged and stays as
/// the rollback); otherwise the rollback deployment becomes the default.
pub fn after_rollback(state: &State, booted: Option<&str>) -> Result<State> {
    let r = roles(state, booted);
    let target = match (&r.staged, &r.booted) {
        (Some(_), Some(b)) if state.deployments.contains(b) => b.clone(),
        _ => r.rollback.clone().ok_or(NoRollback)?,
    };
    let mut s = state.clone();
    // A staged deployment is un-staged; if it was finalised it stays in the
    // order (as the rollback), an unfinalised one is left for cleanup.
    s.staged = None;
    s.staged_locked = false;
    s.deployments.retain(|d| *d != target);
    s.deployments.insert(0, target);
    Ok(s)
}

/// The deployments a cleanup keeps: booted, staged, default, rollback and pinned.
pub fn retained(state: &State, booted: Option<&str>) -> BTreeSet<String> {
    let r = roles(state, booted);
    let mut keep: BTreeSet<String> = state.pinned.iter().filter(|p| state.all().contains(p)).cloned().collect();
    keep.extend([r.booted, r.staged, r.rollback, r.default].into_iter().flatten());
    keep
}

/// The state after a cleanup: deployments not retained are dropped from the order.
pub fn after_cleanup(state: &State, booted: Option<&str>) -> State {
    let keep = retained(state, booted);
    let mut s = state.clone();
    s.deployments.retain(|d| keep.contains(d));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(order: &[&str], staged: Option<&str>, pinned: &[&str]) -> State {
        State {
            deployments: order.iter().map(|s| s.to_string()).collect(),
            staged: staged.map(str::to_string),
            pinned: pinned.iter().map(|s| s.to_string()).collect(),
            ..State::default()
        }
    }

    fn o(s: Option<&str>) -> Option<String> {
        s.map(str::to_string)
    }

    #[test]
    fn roles_table() {
        // (order, staged, booted) -> (booted, staged, rollback, queued)
        type Case<'a> = (
            &'a [&'a str],
            Option<&'a str>,
            Option<&'a str>,
            (Option<&'a str>, Option<&'a str>, Option<&'a str>, bool),
        );
        let cases: &[Case] = &[
            (&[], None, None, (None, None, None, false)),
            (&["a"], None, Some("a"), (Some("a"), None, None, false)),
            (&["b", "a"], None, Some("b"), (Some("b"), None, Some("a"), false)),
            // Upgrade finalised, not rebooted yet.
            (&["b", "a"], Some("b"), Some("a"), (Some("a"), Some("b"), None, false)),
            // Staged and booted since: no longer staged.
            (&["b", "a"], Some("b"), Some("b"), (Some("b"), None, Some("a"), false)),
            // Download-only: staged but not in the boot order.
            (&["a"], Some("b"), Some("a"), (Some("a"), Some("b"), None, false)),
            // After `rollback`: the default is the older deployment.
            (&["a", "b"], None, Some("b"), (Some("b"), None, Some("a"), true)),
            // Booted unknown (a deployment removed meanwhile or none).
            (&["b", "a"], None, Some("zzz"), (None, None, Some("a"), false)),
            (&["b", "a"], Some("b"), None, (None, Some("b"), Some("a"), false)),
            (&["c", "b", "a"], None, Some("b"), (Some("b"), None, Some("c"), true)),
        ];
        for (order, staged, booted, want) in cases {
            let r = roles(&st(order, *staged, &[]), *booted);
            assert_eq!(
                (r.booted, r.staged, r.rollback, r.rollback_queued),
                (o(want.0), o(want.1), o(want.2), want.3),
                "{order:?} staged={staged:?} booted={booted:?}"
            );
        }
    }

    #[test]
    fn stage_finalize_rollback_cleanup_lifecycle() {
        let s = st(&["a"], None, &[]);
        let s = after_stage(&s, "b", Some("a"));
        assert_eq!(s.staged_unfinalized(), Some("b"));
        let s = after_finalize(&s).unwrap();
        assert_eq!(s.deployments, ["b", "a"]);
        assert_eq!(s.staged_unfinalized(), None);
        // Upgrade again before rebooting: the pending b is replaced by c.
        let s = after_finalize(&after_stage(&s, "c", Some("a"))).unwrap();
        assert_eq!(s.deployments, ["c", "a"]);
        assert_eq!(s.staged.as_deref(), Some("c"));
        // Rollback with a staged update: back to the booted one.
        let r = after_rollback(&s, Some("a")).unwrap();
        assert_eq!(r.deployments, ["a", "c"]);
        assert_eq!(r.staged, None);
        // Booted c: rollback makes a the default, and again toggles back.
        let r = after_rollback(&s, Some("c")).unwrap();
        assert_eq!(r.deployments, ["a", "c"]);
        let r2 = after_rollback(&r, Some("a")).unwrap();
        assert_eq!(r2.deployments, ["c", "a"]);
        assert!(after_rollback(&st(&["a"], None, &[]), Some("a")).unwrap_err().is::<NoRollback>());
        assert!(after_rollback(&st(&[], None, &[]), None).unwrap_err().is::<NoRollback>());
        assert!(after_finalize(&st(&["a"], None, &[])).is_err());
    }

    #[test]
    fn cleanup_table() {
        // (order, staged, pinned, booted) -> kept order
        type Case<'a> = (&'a [&'a str], Option<&'a str>, &'a [&'a str], Option<&'a str>, &'a [&'a str]);
        let cases: &[Case] = &[
            (&["c", "b", "a"], None, &[], Some("c"), &["c", "b"]),
            (&["c", "b", "a"], None, &["a"], Some("c"), &["c", "b", "a"]),
            (&["c", "b", "a"], Some("c"), &[], Some("b"), &["c", "b", "a"]),
            (&["d", "c", "b", "a"], Some("d"), &[], Some("b"), &["d", "c", "b"]),
            (&["c", "b", "a"], None, &[], None, &["c", "b"]),
            (&["a", "c", "b"], None, &[], Some("c"), &["a", "c"]),
        ];
        for (order, staged, pinned, booted, want) in cases {
            let s = after_cleanup(&st(order, *staged, pinned), *booted);
            assert_eq!(s.deployments, want.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "{order:?} {booted:?}");
        }
    }

    #[test]
    fn load_save_round_trip_and_refusals() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        assert_eq!(State::load(&p).unwrap(), State::default());
        let s = st(&["b", "a"], Some("b"), &["a"]);
        s.save(&p).unwrap();
        assert_eq!(State::load(&p).unwrap(), s);
        std::fs::write(&p, "{\"version\": 99, \"stateroot\": \"default\"}").unwrap();
        assert!(format!("{:#}", State::load(&p).unwrap_err()).contains("version 99"));
        std::fs::write(&p, "{ not json").unwrap();
        assert!(format!("{:#}", State::load(&p).unwrap_err()).contains("parsing"));
        assert!(st(&["a", "a"], None, &[]).save(&p).is_err());
    }

    #[test]
    fn transport_options_are_recorded_for_registry_images_and_filled_in_where_the_command_line_is_silent() {
        let reg: ImageRef = "127.0.0.1:5000/os".parse().unwrap();
        let layout: ImageRef = "oci:/srv/os".parse().unwrap();
        let given = RegistryOptions {
            insecure: true,
            cert_dir: Some("certs".into()),
            authfile: Some("/etc/auth.json".into()),
            ..Default::default()
        };
        let t = TransportOptions::recorded(&reg, &given).unwrap();
        assert!(!t.tls_verify);
        assert_eq!(t.cert_dir, Some(std::env::current_dir().unwrap().join("certs")), "made absolute");
        assert_eq!(t.authfile.as_deref(), Some(Path::new("/etc/auth.json")));
        assert_eq!(
            t.as_flags(),
            format!(
                "--tls-verify=false --cert-dir={} --authfile=/etc/auth.json",
                t.cert_dir.as_ref().unwrap().display()
            )
        );
        assert!(TransportOptions::recorded(&layout, &given).unwrap().is_default(), "layouts have no transport options");
        assert!(TransportOptions::recorded(&reg, &RegistryOptions::default()).unwrap().is_default());

        // Nothing on the command line: the record. --tls-verify given: it wins.
        let mut o = RegistryOptions::default();
        t.apply(&mut o, false);
        assert!(o.insecure && o.cert_dir == t.cert_dir && o.authfile == t.authfile);
        let mut o = RegistryOptions { authfile: Some("/other.json".into()), ..Default::default() };
        t.apply(&mut o, true);
        assert!(!o.insecure, "--tls-verify=true given to upgrade");
        assert_eq!(o.authfile.as_deref(), Some(Path::new("/other.json")), "--authfile given to upgrade");
    }

    #[test]
    fn spec_without_transport_options_reads_and_writes_as_before() {
        let old = r#"{"version":1,"stateroot":"default","spec":{"image":"registry:reg/os:latest"}}"#;
        let s: State = serde_json::from_str(old).unwrap();
        assert!(s.spec.as_ref().unwrap().transport_options.is_default());
        let text = serde_json::to_string(&s.spec).unwrap();
        assert_eq!(text, r#"{"image":"registry:reg/os:latest"}"#);
        let mut spec = Spec::new("reg/os");
        spec.transport_options.tls_verify = false;
        let text = serde_json::to_string(&spec).unwrap();
        assert_eq!(text, r#"{"image":"reg/os","transport_options":{"tls_verify":false}}"#);
        assert_eq!(serde_json::from_str::<Spec>(&text).unwrap(), spec);
    }
}
