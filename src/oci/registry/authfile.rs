//! Registry credentials from containers `auth.json` files (and Docker's
//! `config.json`, same `auths` format).
//!
//! Written by hand: oci-client takes credentials as arguments and reads no
//! files. Search order: `RegistryOptions.authfile` (`--authfile`,
//! `REGISTRY_AUTH_FILE`) alone when given; otherwise `/etc/hostctl/auth.json`,
//! `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.docker/config.json`, first
//! match wins. Within a file the most specific key wins:
//! `registry/namespace/repo`, then each shorter namespace, then `registry`.
//! Docker-style keys (`https://registry/v1/`) are normalised to their host.
//!
//! Within one file: a `credHelpers` entry for the registry host means that
//! helper alone answers (containers-auth.json(5)); otherwise a `credsStore`
//! helper is asked first (as Docker does) and, when it has nothing, the
//! `auths` entries (`identitytoken`, else `auth`, base64 `user:password`).
//! Helpers run through [`super::credhelper`]. A file with nothing for the
//! registry passes the search on to the next file.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use serde::Deserialize;

use super::credhelper::{self, IDENTITY_TOKEN_USER};

/// A user name and password (or identity token). `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// [`IDENTITY_TOKEN_USER`] when `password` is an identity token.
    pub username: String,
    /// The password or token.
    pub password: String,
    /// Where the credentials came from: the file, or the helper and the file
    /// naming it (for messages).
    pub source: String,
}

impl Credentials {
    /// Whether the secret is an identity (OAuth2 refresh) token, to be
    /// exchanged at the token server rather than sent as a password.
    pub fn is_identity_token(&self) -> bool {
        self.username == IDENTITY_TOKEN_USER
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

/// The auth files consulted, in order.
#[derive(Clone, Debug)]
pub struct AuthSearch {
    /// The auth files, searched in order.
    pub files: Vec<PathBuf>,
    /// True when the file was named explicitly: then it must exist.
    pub explicit: bool,
}

impl AuthSearch {
    /// The search path for `authfile` (explicit) or the defaults from the environment.
    pub fn new(authfile: Option<&Path>) -> Self {
        if let Some(f) = authfile {
            return AuthSearch { files: vec![f.to_path_buf()], explicit: true };
        }
        let mut files = vec![PathBuf::from("/etc/hostctl/auth.json")];
        if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
            files.push(Path::new(&dir).join("containers/auth.json"));
        }
        if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
            files.push(Path::new(&home).join(".docker/config.json"));
        }
        AuthSearch { files, explicit: false }
    }

    /// Credentials for `registry/repository`, if any file has them.
    pub fn lookup(&self, registry: &str, repository: &str) -> Result<Option<Credentials>> {
        for file in &self.files {
            let text = match std::fs::read_to_string(file) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.explicit => continue,
                Err(e) => return Err(e).with_context(|| format!("reading auth file {}", file.display())),
            };
            if let Some(c) =
                lookup_in(&text, file, registry, repository).with_context(|| format!("auth file {}", file.display()))?
            {
                return Ok(Some(c));
            }
        }
        Ok(None)
    }

    /// The files, for messages.
    pub fn describe(&self) -> String {
        self.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
    }
}

#[derive(Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    /// Registry host → helper name (the part after `docker-credential-`).
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
    /// The helper for every registry without a `credHelpers` entry.
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
}

#[derive(Deserialize)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// Runs a credential helper: `(helper, registry)` → `(username, secret)`.
pub type HelperFn<'a> = &'a dyn Fn(&str, &str) -> Result<Option<(String, String)>>;

/// Normalises a key: `https://host/v1/` (Docker) → `host`; `index.docker.io` → `docker.io`.
fn normalise_key(key: &str) -> String {
    let key = match key.split_once("://") {
        // Scheme-prefixed keys are Docker's: only the host part counts.
        Some((_, rest)) => rest.split('/').next().unwrap_or(""),
        None => key.trim_end_matches('/'),
    };
    match key.split_once('/') {
        Some(("index.docker.io" | "registry-1.docker.io", rest)) => format!("docker.io/{rest}"),
        None if key == "index.docker.io" || key == "registry-1.docker.io" => "docker.io".to_string(),
        _ => key.to_string(),
    }
}

/// Looks `registry/repository` up in the text of one auth file (running the
/// credential helpers it names).
pub fn lookup_in(text: &str, file: &Path, registry: &str, repository: &str) -> Result<Option<Credentials>> {
    lookup_with(text, file, registry, repository, &credhelper::get)
}

/// [`lookup_in`] with the helpers run by `helper`.
pub fn lookup_with(
    text: &str,
    file: &Path,
    registry: &str,
    repository: &str,
    helper: HelperFn,
) -> Result<Option<Credentials>> {
    let parsed: AuthFile = serde_json::from_str(text).context("not a valid auth.json (expected {\"auths\": {...}})")?;
    let ask = |name: &str| -> Result<Option<Credentials>> {
        let found = helper(name, registry)?;
        Ok(found.map(|(username, password)| Credentials {
            username,
            password,
            source: format!("{} (credential helper named in {})", credhelper::program(name), file.display()),
        }))
    };
    let helpers: BTreeMap<String, &String> = parsed.cred_helpers.iter().map(|(k, v)| (normalise_key(k), v)).collect();
    if let Some(name) = helpers.get(registry) {
        return ask(name);
    }
    if let Some(name) = parsed.creds_store.as_deref().filter(|n| !n.is_empty()) {
        // A default store for every registry: one that is not installed here
        // (a config copied from a desktop) must not break anonymous pulls.
        // A per-registry `credHelpers` entry, above, is meant and stays an error.
        match ask(name) {
            Ok(Some(c)) => return Ok(Some(c)),
            Ok(None) => {}
            Err(e) if e.is::<credhelper::HelperMissing>() => {
                tracing::warn!("{e} (credsStore in {}); trying the file's own entries", file.display())
            }
            Err(e) => return Err(e),
        }
    }
    let entries: BTreeMap<String, &AuthEntry> = parsed.auths.iter().map(|(k, v)| (normalise_key(k), v)).collect();
    // Most specific first: registry/a/b/c, registry/a/b, registry/a, registry.
    let mut candidates = Vec::new();
    let mut name = format!("{registry}/{repository}");
    loop {
        candidates.push(name.clone());
        match name.rsplit_once('/') {
            Some((shorter, _)) => name = shorter.to_string(),
            None => break,
        }
    }
    for key in candidates {
        let Some(entry) = entries.get(&key) else { continue };
        if let Some(token) = entry.identitytoken.as_deref().filter(|t| !t.is_empty()) {
            return Ok(Some(Credentials {
                username: IDENTITY_TOKEN_USER.to_string(),
                password: token.to_string(),
                source: file.display().to_string(),
            }));
        }
        let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) else { continue };
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .with_context(|| format!("the \"auth\" value for {key:?} is not base64"))?;
        let decoded =
            String::from_utf8(decoded).with_context(|| format!("the \"auth\" value for {key:?} is not UTF-8"))?;
        let Some((user, pass)) = decoded.split_once(':') else {
            bail!("the \"auth\" value for {key:?} is not base64 of user:password");
        };
        return Ok(Some(Credentials {
            username: user.to_string(),
            password: pass.to_string(),
            source: file.display().to_string(),
        }));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn most_specific_key_wins() {
        let text = format!(
            r#"{{"auths":{{"reg.io":{{"auth":"{}"}},"reg.io/team":{{"auth":"{}"}},"reg.io/team/os":{{"auth":"{}"}},"other.io":{{"auth":"{}"}}}}}}"#,
            b64("host:1"),
            b64("ns:2"),
            b64("repo:3"),
            b64("o:4")
        );
        let f = Path::new("/x/auth.json");
        let user = |reg: &str, repo: &str| lookup_in(&text, f, reg, repo).unwrap().map(|c| c.username);
        assert_eq!(user("reg.io", "team/os").as_deref(), Some("repo"));
        assert_eq!(user("reg.io", "team/app").as_deref(), Some("ns"));
        assert_eq!(user("reg.io", "solo").as_deref(), Some("host"));
        assert_eq!(user("nothere.io", "solo"), None);
        let c = lookup_in(&text, f, "reg.io", "team/os").unwrap().unwrap();
        assert_eq!(c.password, "3");
    }

    #[test]
    fn docker_style_keys_and_colons_in_passwords() {
        let text = format!(
            r#"{{"auths":{{"https://index.docker.io/v1/":{{"auth":"{}"}},"http://127.0.0.1:5000":{{"auth":"{}"}}}}}}"#,
            b64("dock:pa:ss"),
            b64("local:pw")
        );
        let f = Path::new("/x/config.json");
        let c = lookup_in(&text, f, "docker.io", "library/alpine").unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("dock", "pa:ss"));
        let c = lookup_in(&text, f, "127.0.0.1:5000", "os").unwrap().unwrap();
        assert_eq!(c.username, "local");
    }

    #[test]
    fn bad_files_are_clear_errors_and_debug_redacts() {
        let f = Path::new("/x/a.json");
        let e = lookup_in("{", f, "r", "p").unwrap_err();
        assert!(format!("{e:#}").contains("not a valid auth.json"), "{e:#}");
        let e = lookup_in(r#"{"auths":{"r":{"auth":"!!"}}}"#, f, "r", "p").unwrap_err();
        assert!(format!("{e:#}").contains("not base64"), "{e:#}");
        let text = format!(r#"{{"auths":{{"r":{{"auth":"{}"}}}}}}"#, b64("nocolon"));
        assert!(lookup_in(&text, f, "r", "p").is_err());
        let c = Credentials { username: "u".into(), password: "hunter2".into(), source: "/x/a.json".into() };
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn explicit_missing_file_is_an_error_default_missing_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        let s = AuthSearch { files: vec![missing.clone()], explicit: true };
        assert!(s.lookup("r", "p").is_err());
        let s = AuthSearch { files: vec![missing], explicit: false };
        assert_eq!(s.lookup("r", "p").unwrap(), None);
    }

    #[test]
    fn cred_helpers_then_creds_store_then_inline_auths() {
        let f = Path::new("/x/auth.json");
        let text = format!(
            r#"{{"auths":{{"reg.io":{{"auth":"{}"}},"plain.io":{{"auth":"{}"}},"tok.io":{{"identitytoken":"rt-1"}}}},
                "credHelpers":{{"reg.io":"special","https://hub.example/v1/":"hub"}},"credsStore":"store"}}"#,
            b64("inline:1"),
            b64("plain:2")
        );
        let calls = std::cell::RefCell::new(Vec::new());
        let helper = |name: &str, registry: &str| -> Result<Option<(String, String)>> {
            calls.borrow_mut().push(format!("{name}@{registry}"));
            Ok(match (name, registry) {
                ("special", "reg.io") => Some(("helped".into(), "pw".into())),
                ("hub", _) => None,
                ("store", "stored.io") => Some(("from-store".into(), "pw".into())),
                _ => None,
            })
        };
        let user = |reg: &str| lookup_with(&text, f, reg, "a/b", &helper).unwrap().map(|c| c.username);
        // credHelpers: the helper alone (its answer wins over the inline entry).
        assert_eq!(user("reg.io").as_deref(), Some("helped"));
        // credHelpers with nothing: no fallback to credsStore or inline auths.
        assert_eq!(user("hub.example"), None);
        // credsStore first, then inline auths when the store has nothing.
        assert_eq!(user("stored.io").as_deref(), Some("from-store"));
        assert_eq!(user("plain.io").as_deref(), Some("plain"));
        assert_eq!(*calls.borrow(), ["special@reg.io", "hub@hub.example", "store@stored.io", "store@plain.io"]);
        // An inline identity token.
        let c = lookup_with(&text, f, "tok.io", "a", &helper).unwrap().unwrap();
        assert!(c.is_identity_token() && c.password == "rt-1");
        let c = lookup_with(&text, f, "reg.io", "a", &helper).unwrap().unwrap();
        assert!(c.source.contains("docker-credential-special") && c.source.contains("/x/auth.json"), "{}", c.source);
        // A helper's failure is the lookup's.
        let failing = |_: &str, _: &str| -> Result<Option<(String, String)>> { anyhow::bail!("helper broke") };
        assert!(lookup_with(&text, f, "reg.io", "a", &failing).is_err());
        // A credsStore that is not installed is skipped; a credHelpers entry's absence is an error.
        let missing = |name: &str, _: &str| -> Result<Option<(String, String)>> {
            Err(credhelper::HelperMissing { program: credhelper::program(name) }.into())
        };
        let c = lookup_with(&text, f, "plain.io", "a", &missing).unwrap().unwrap();
        assert_eq!(c.username, "plain");
        assert_eq!(lookup_with(&text, f, "anon.io", "a", &missing).unwrap(), None);
        let e = lookup_with(&text, f, "reg.io", "a", &missing).unwrap_err();
        assert!(format!("{e:#}").contains("docker-credential-special is not installed"), "{e:#}");
    }
}
