//! What `--help` and the man pages add to the argument definitions: one or
//! two examples per command (the end of each `--help`, the EXAMPLES section
//! of each man page) and the exit codes of docs/cli.md (EXIT STATUS).

use std::path::Path;

use anyhow::{Context, Result};
use clap::Command;
use clap_mangen::roff::{bold, roman, Roff};

use crate::error::code;

/// Examples by command path (`""` is `hostctl` itself): what it does, then
/// the command line.
const EXAMPLES: &[(&str, &[(&str, &str)])] = &[
    (
        "",
        &[
            ("Follow an OS image and boot into it", "hostctl switch --apply quay.io/example/os:stable"),
            ("See what is booted, staged and the rollback", "hostctl status"),
        ],
    ),
    (
        "image",
        &[
            ("Pull an image into the store", "hostctl image pull quay.io/example/os:stable"),
            ("List what the store holds", "hostctl image list"),
        ],
    ),
    (
        "image pull",
        &[
            ("Pull an image from a registry", "hostctl image pull quay.io/example/os:stable"),
            ("Pull an OCI layout directory's tag, as JSON", "hostctl image pull --json oci:/srv/os-layout:v2"),
        ],
    ),
    (
        "image inspect",
        &[
            ("Show the store's copy (or fetch manifest and config)", "hostctl image inspect quay.io/example/os:stable"),
            ("Ask the registry, as JSON", "hostctl image inspect --remote --json quay.io/example/os:stable"),
        ],
    ),
    ("image list", &[("List the store's images as JSON", "hostctl image list --json")]),
    (
        "image rm",
        &[(
            "Forget an image no deployment uses, then reclaim its space",
            "hostctl image rm quay.io/example/os:old && hostctl cleanup",
        )],
    ),
    ("image prune", &[("Forget every image no deployment uses, then reclaim", "hostctl image prune && hostctl cleanup")]),
    (
        "image rechunk",
        &[(
            "Rewrite a built image into one layer per package group, then push it",
            "hostctl image rechunk oci:/var/tmp/build:2 oci:/var/tmp/my-os:2",
        )],
    ),
    ("container", &[("Check the image being built (a Containerfile's last step: RUN …)", "hostctl container lint")]),
    (
        "container lint",
        &[
            ("Check the image being built (a Containerfile's last step: RUN …)", "hostctl container lint"),
            ("Check an unpacked tree, warnings fatal, as JSON", "hostctl container lint --rootfs ./rootfs --fatal-warnings --json"),
            ("The checks, with their levels", "hostctl container lint --list"),
        ],
    ),
    (
        "config-diff",
        &[
            ("What the booted /etc changed against the image", "hostctl config-diff"),
            ("The added files, for scripts", "hostctl config-diff --json | jq -r '.added[]'"),
        ],
    ),
    (
        "trust",
        &[(
            "Check a keyless bundle against the pinned trusted root",
            "hostctl trust verify-bundle --bundle os.sigstore.json --certificate-identity https://github.com/example/os/.github/workflows/release.yml@refs/heads/main --certificate-oidc-issuer https://token.actions.githubusercontent.com os.tar",
        )],
    ),
    (
        "trust verify-bundle",
        &[
            (
                "Check a keyless bundle over a file",
                "hostctl trust verify-bundle --bundle os.sigstore.json --certificate-identity release@example.com --certificate-oidc-issuer https://accounts.google.com os.tar",
            ),
            (
                "Check a keyed bundle over a digest, with a custom root",
                "hostctl trust verify-bundle --bundle b.json --key cosign.pub --trusted-root trusted_root.json sha256:8f4e…",
            ),
        ],
    ),
    (
        "trust update-root",
        &[
            (
                "Refresh the pinned trusted root through TUF from a mirror",
                "hostctl trust update-root --mirror https://tuf-mirror.example.com",
            ),
            (
                "Start from a TUF root.json you verified, and write the result elsewhere",
                "hostctl trust update-root --mirror https://tuf-mirror.example.com --tuf-root root.json --trusted-root /tmp/trusted_root.json",
            ),
        ],
    ),
    (
        "switch",
        &[
            ("Track an image and stage it for the next boot", "hostctl switch quay.io/example/os:stable"),
            ("Switch to a local OCI layout and reboot into it", "hostctl switch --apply oci:/srv/os-layout:v2"),
        ],
    ),
    (
        "upgrade",
        &[
            ("Say whether the tracked image has an update", "hostctl upgrade --check"),
            ("Stage the update and reboot into it", "hostctl upgrade --apply"),
        ],
    ),
    ("rollback", &[("Boot the previous deployment next time, then reboot", "hostctl rollback && systemctl reboot")]),
    (
        "status",
        &[
            ("Show the deployments", "hostctl status"),
            (
                "The booted image's digest, for scripts",
                "hostctl status --json | jq -r .status.booted.image.imageDigest",
            ),
        ],
    ),
    ("cleanup", &[("Remove what no deployment needs, as JSON", "hostctl cleanup --json")]),
    (
        "pin",
        &[
            ("Keep the booted deployment", "hostctl pin"),
            ("Keep a given deployment (ids from `hostctl status`)", "hostctl pin 3f1c2a9b0d4e.2"),
        ],
    ),
    ("unpin", &[("Let a deployment be collected again", "hostctl unpin 3f1c2a9b0d4e.2")]),
    (
        "usr-overlay",
        &[
            ("Install a debugging tool into /usr until the next boot", "hostctl usr-overlay && apt-get install strace"),
            ("A read-only overlay, as JSON", "hostctl usr-overlay --read-only --json"),
        ],
    ),
    (
        "fsck",
        &[
            ("Check every object, deployed file, boot entry and kernel; exit 8 if any is damaged", "hostctl fsck"),
            ("Fetch what is damaged again and rewrite it, as JSON", "hostctl fsck --repair --json"),
        ],
    ),
    (
        "install",
        &[(
            "Install onto a disk image file",
            "hostctl install to-disk --via-loopback --source-imgref quay.io/example/os:stable disk.img",
        )],
    ),
    (
        "install to-disk",
        &[
            (
                "Install onto a disk (everything on it is lost)",
                "hostctl install to-disk --source-imgref quay.io/example/os:stable /dev/vdb",
            ),
            (
                "Make an 8 GiB disk image file",
                "hostctl install to-disk --via-loopback --size 8G --source-imgref oci:/srv/os-layout disk.img",
            ),
        ],
    ),
    (
        "install to-filesystem",
        &[(
            "Install into a mounted root with its ESP",
            "hostctl install to-filesystem --boot-dir /mnt/boot/efi --source-imgref quay.io/example/os:stable /mnt",
        )],
    ),
    (
        "completions",
        &[("Install bash completions", "hostctl completions bash > /usr/share/bash-completion/completions/hostctl")],
    ),
    ("man", &[("Install the man pages", "hostctl man /usr/share/man/man1")]),
    (
        "app",
        &[
            ("Run a web server as an app on port 8080", "hostctl app install web --publish 8080:80 docker.io/library/nginx:stable"),
            ("Update every app, rolling back those that do not come up", "hostctl app update --all"),
        ],
    ),
    (
        "app install",
        &[
            (
                "An app with a named volume and a health check",
                "hostctl app install web --publish 8080:80 --volume webdata:/usr/share/nginx/html --health-cmd 'curl -f http://localhost/' docker.io/library/nginx:stable",
            ),
            ("Install a Quadlet file you wrote", "hostctl app install --file ./web.container"),
        ],
    ),
    ("app list", &[("The installed apps, as JSON", "hostctl app list --json")]),
    ("app status", &[("An app's image, state, health and last update", "hostctl app status web")]),
    ("app logs", &[("Follow an app's journal", "hostctl app logs -f web")]),
    ("app start", &[("Start an app and wait until it is up", "hostctl app start web")]),
    ("app stop", &[("Stop an app", "hostctl app stop web")]),
    ("app restart", &[("Restart an app and wait until it is up", "hostctl app restart web")]),
    ("app remove", &[("Remove an app with its volumes and image", "hostctl app remove --purge web")]),
    (
        "app update",
        &[
            ("Is there a new image for any app?", "hostctl app update --all --check"),
            ("Update one app, as JSON", "hostctl app update --json web"),
        ],
    ),
    (
        "fleet",
        &[
            ("Serve FleetLock with its state in etcd", "hostctl fleet server --etcd http://10.0.0.1:2379 --listen 0.0.0.0:8080"),
            ("Who reboots now, and is any release halted?", "hostctl fleet status --server http://fleetlock.example.org:8080"),
        ],
    ),
    (
        "fleet server",
        &[
            ("Two slots per group on a 3-member etcd", "hostctl fleet server --etcd http://10.0.0.1:2379,http://10.0.0.2:2379,http://10.0.0.3:2379 --listen 0.0.0.0:8080 --slots 2"),
            ("Silent holders lose their slot after an hour", "hostctl fleet server --etcd http://127.0.0.1:2379 --listen 127.0.0.1:8080 --holder-ttl 1h"),
            ("HTTPS; each host acts only as its client certificate's CN", "hostctl fleet server --etcd http://127.0.0.1:2379 --listen 0.0.0.0:8443 --tls-cert server.pem --tls-key server.key --client-ca fleet-ca.pem"),
        ],
    ),
    ("fleet status", &[("The fleet's holders, releases and halts, as JSON", "hostctl fleet status --json --server http://fleetlock.example.org:8080")]),
    ("fleet halt", &[("Stop a release from reaching more hosts", "hostctl fleet halt --etcd http://127.0.0.1:2379 sha256:0123…")]),
    ("fleet resume", &[("Let a halted release continue", "hostctl fleet resume --etcd http://127.0.0.1:2379 sha256:0123…")]),
    (
        "fleet release",
        &[(
            "Release an image in waves, halting after 2 unhealthy hosts",
            "hostctl fleet release registry.example/os:stable --waves 1h=1%,4h=5%,1d=15%,3d=100% --halt-after 2",
        )],
    ),
    ("fleet slots", &[("Let three hosts of group web reboot at once", "hostctl fleet slots --etcd http://127.0.0.1:2379 web 3")]),
    (
        "agent",
        &[
            ("Run the update agent (what hostctl-agent.service does)", "hostctl agent"),
            ("Do what is due now and exit (from a timer)", "hostctl agent --once"),
        ],
    ),
    ("agent status", &[("The agent's phase and why, as JSON", "hostctl agent status --json")]),
];

/// The exit codes (docs/cli.md).
const EXIT_STATUS: &[(i32, &str)] = &[
    (code::OK, "success (also when the reader of stdout went away)"),
    (code::FAILURE, "failure without a more specific code"),
    (code::USAGE, "bad command line"),
    (code::LOCKED, "another hostctl command holds the sysroot lock"),
    (code::REJECTED, "the trust policy refused the image"),
    (code::INTEGRITY, "content did not match its digest (tampered or corrupted data)"),
    (code::NO_SPACE, "not enough disk space"),
    (code::DAMAGED, "fsck found damage (without --repair nothing was changed)"),
    (code::REPAIRED, "fsck --repair repaired all the damage it found"),
    (code::UNREPAIRED, "fsck --repair could not repair some damage (its source is gone)"),
    (code::FORMAT_TOO_NEW, "the sysroot was written by a newer hostctl (a newer on-disk format); nothing was changed"),
    (crate::interrupt::SIGINT.exit_code, "interrupted by SIGINT (Ctrl-C)"),
    (crate::interrupt::SIGTERM.exit_code, "interrupted by SIGTERM"),
];

fn examples(path: &str) -> &'static [(&'static str, &'static str)] {
    EXAMPLES.iter().find(|(p, _)| *p == path).map_or(&[], |(_, e)| e)
}

/// The `--help` ending of the command at `path`.
fn after_help(path: &str) -> Option<String> {
    let ex = examples(path);
    if ex.is_empty() {
        return None;
    }
    let mut s = String::from("Examples:\n");
    for (what, line) in ex {
        s.push_str(&format!("  # {what}\n  {line}\n"));
    }
    if path.is_empty() {
        s.push_str(
            "\n`hostctl COMMAND --help` shows a command's own options first; `hostctl man DIR` writes man pages.",
        );
    }
    Some(s)
}

/// `cmd` (whose path is `path`) and its subcommands with their examples.
fn with_examples(mut cmd: Command, path: &str) -> Command {
    if let Some(text) = after_help(path) {
        cmd = cmd.after_help(text);
    }
    let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_string()).collect();
    for name in names {
        let sub_path = if path.is_empty() { name.clone() } else { format!("{path} {name}") };
        cmd = cmd.mut_subcommand(&name, |s| with_examples(s, &sub_path));
    }
    cmd
}

/// The command line's definition with the examples added: what `main`
/// parses with, and what the man pages and completions are made from.
pub fn command() -> Command {
    with_examples(<super::Cli as clap::CommandFactory>::command(), "")
}

/// Writes `hostctl.1` and one page per visible subcommand into `dir`, each
/// with EXAMPLES and EXIT STATUS sections.
pub fn write_man_pages(dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    let mut cmd = command().disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    write_page(&cmd, "", dir, &mut written)?;
    Ok(written)
}

fn write_page(cmd: &Command, path: &str, dir: &Path, written: &mut Vec<std::path::PathBuf>) -> Result<()> {
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let sub_path = if path.is_empty() { sub.get_name().to_string() } else { format!("{path} {}", sub.get_name()) };
        write_page(sub, &sub_path, dir, written)?;
    }
    // The examples are a section of their own here, not the after-help text.
    let man = clap_mangen::Man::new(cmd.clone().after_help(None::<&str>));
    let file = dir.join(man.get_filename());
    let mut page = Vec::new();
    man.render(&mut page)?;
    let mut page = String::from_utf8(page).context("man page text")?;
    // The sections go before VERSION (the last one); each rendering starts
    // with the same preamble, which the page already has.
    let extra = extra_sections(path).render();
    let extra = extra.strip_prefix(&Roff::new().render()).unwrap_or(&extra).to_string();
    let at = page.find("\n.SH VERSION").map_or(page.len(), |i| i + 1);
    page.insert_str(at, &extra);
    std::fs::write(&file, page).with_context(|| format!("writing {}", file.display()))?;
    written.push(file);
    Ok(())
}

/// EXAMPLES (when the command has some) and EXIT STATUS.
fn extra_sections(path: &str) -> Roff {
    let mut roff = Roff::new();
    let ex = examples(path);
    if !ex.is_empty() {
        roff.control("SH", ["EXAMPLES"]);
        for (what, line) in ex {
            roff.control("TP", []);
            roff.text([roman(*what)]);
            roff.text([bold(*line)]);
        }
    }
    roff.control("SH", ["EXIT STATUS"]);
    for (c, meaning) in EXIT_STATUS {
        roff.control("TP", []);
        roff.text([bold(c.to_string())]);
        roff.text([roman(*meaning)]);
    }
    roff
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every visible command has examples, and every example names a command that exists.
    #[test]
    fn every_command_ends_its_help_with_examples() {
        fn walk(cmd: &Command, path: &str, seen: &mut Vec<String>) {
            if !cmd.is_hide_set() {
                assert!(!examples(path).is_empty(), "`hostctl {path}` has no examples");
                seen.push(path.to_string());
            }
            for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
                let p = if path.is_empty() { sub.get_name().to_string() } else { format!("{path} {}", sub.get_name()) };
                walk(sub, &p, seen);
            }
        }
        let mut cmd = command();
        cmd.build();
        let mut seen = Vec::new();
        walk(&cmd, "", &mut seen);
        for (path, ex) in EXAMPLES {
            assert!(seen.iter().any(|s| s == path), "examples for a command that does not exist: {path:?}");
            for (_, line) in ex.iter() {
                assert!(line.starts_with(&format!("hostctl {path}").trim_end().to_string()), "{path}: {line}");
            }
        }
        let help = cmd.find_subcommand_mut("switch").unwrap().render_help().to_string();
        assert!(help.trim_end().ends_with("hostctl switch --apply oci:/srv/os-layout:v2"), "{help}");
    }

    /// `hostctl man DIR`: a page per visible command, each with EXAMPLES
    /// and EXIT STATUS before VERSION, and none for the hidden ones.
    #[test]
    fn man_pages_have_examples_and_exit_status() {
        let dir = tempfile::tempdir().unwrap();
        let written = write_man_pages(dir.path()).unwrap();
        let names: Vec<String> =
            written.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
        for want in ["hostctl.1", "hostctl-switch.1", "hostctl-image-pull.1", "hostctl-install-to-disk.1"] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        assert!(!names.iter().any(|n| n.contains("finalize") || n.contains("health")), "{names:?}");
        for page in &written {
            let text = std::fs::read_to_string(page).unwrap();
            let (ex, exit, version) =
                (text.find(".SH EXAMPLES"), text.find(".SH \"EXIT STATUS\""), text.find(".SH VERSION"));
            assert!(ex.is_some() && exit.is_some() && version.is_some(), "{}: {text}", page.display());
            assert!(ex < exit && exit < version, "{}", page.display());
            assert!(!text.contains(".SH EXTRA"), "examples twice in {}", page.display());
        }
        let switch = std::fs::read_to_string(dir.path().join("hostctl-switch.1")).unwrap();
        assert!(switch.contains("hostctl switch \\-\\-apply oci:/srv/os\\-layout:v2"), "{switch}");
    }

    /// The exit codes in the man pages are docs/cli.md's table.
    #[test]
    fn exit_status_matches_the_documented_table() {
        let doc = include_str!("../../docs/cli.md");
        for (c, _) in EXIT_STATUS {
            assert!(doc.contains(&format!("\n| {c} | ")), "exit code {c} is not in docs/cli.md");
        }
        let documented = doc.lines().filter(|l| l.starts_with("| ") && l[2..3].parse::<u8>().is_ok()).count();
        assert_eq!(documented, EXIT_STATUS.len());
    }
}
