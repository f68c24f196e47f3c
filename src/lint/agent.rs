//! The fleet agent's configuration an image ships: `/etc/hostctl/agent.toml`
//! and the `agent.d` drop-ins, each parsed by the agent's own strict parser
//! ([`crate::agent::config::check_file`]).

use std::path::{Path, PathBuf};

use super::hostctl::lexical;
use super::root::show;
use super::{Check, Findings, Level, Root};
use crate::agent::config::{check_file, DROPIN_DIRS, MAIN_FILE};

/// This group's checks.
pub const CHECKS: &[Check] = &[Check {
    name: "agent-toml",
    level: Level::Error,
    explanation: "/etc/hostctl/agent.toml and every agent.d/*.toml parse with the agent's strict parser",
    run: agent_toml,
}];

fn agent_toml(root: &Root) -> Findings {
    let mut files = vec![PathBuf::from(MAIN_FILE)];
    for dir in DROPIN_DIRS {
        if !root.lstat(dir)?.is_some_and(|m| m.is_dir()) {
            continue;
        }
        for e in root.entries_under(dir)? {
            let name = e.path.file_name().unwrap_or_default().to_string_lossy();
            // The files the agent reads: `*.toml`, not hidden, directly in the directory.
            if e.path.parent() == Some(Path::new(dir)) && name.ends_with(".toml") && !name.starts_with('.') {
                files.push(e.path.clone());
            }
        }
    }
    let mut out = Vec::new();
    for rel in files {
        let shown = show(&rel);
        let Some(meta) = root.lstat(&rel.to_string_lossy())? else { continue };
        // The agent follows a symlink; inside the image, so does the lint.
        let file = if meta.file_type().is_symlink() {
            let target = std::fs::read_link(root.dir().join(&rel))?;
            let parent = rel.parent().unwrap_or(Path::new(""));
            match lexical(&if target.is_absolute() { target.clone() } else { parent.join(&target) }) {
                Some(t) => t,
                None => {
                    out.push(format!("{shown}: the symlink to {} leads outside the image", target.display()));
                    continue;
                }
            }
        } else {
            rel.clone()
        };
        if !root.lstat(&file.to_string_lossy())?.is_some_and(|m| m.is_file()) {
            out.push(format!("{shown}: not a regular file (the agent reads it as one)"));
            continue;
        }
        match std::fs::read_to_string(root.dir().join(&file)) {
            Ok(text) => {
                if let Err(e) = check_file(Path::new(&shown), &text) {
                    out.push(format!("{e:#}"));
                }
            }
            Err(e) => out.push(format!("{shown}: {e}")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::super::testroot::{good, root, write};
    use super::*;

    #[test]
    fn every_agent_file_is_parsed_and_errors_name_file_and_line() {
        let t = good();
        let r = t.path();
        write(r, "etc/hostctl/agent.toml", "strategy = \"fleet_lock\"\ninterval = \"10m\"\n");
        // Settings that belong together may come from different files (or the host's own).
        write(r, "usr/lib/hostctl/agent.d/10-lock.toml", "[fleet_lock]\ngroup = \"workers\"\n");
        write(r, "usr/lib/hostctl/agent.d/README", "not read by the agent");
        write(r, "etc/hostctl/agent.d/.hidden.toml", "not = read\n");
        write(r, "usr/share/hostctl/agent/20-site.toml", "image = \"r.io/os:stable\"\n");
        symlink("/usr/share/hostctl/agent/20-site.toml", r.join("usr/lib/hostctl/agent.d/20-site.toml")).unwrap();
        assert_eq!(agent_toml(&root(r)).unwrap(), Vec::<String>::new());

        write(r, "etc/hostctl/agent.toml", "strategy = \"fleet_lock\"\n\nintervall = \"10m\"\n");
        write(r, "etc/hostctl/agent.d/30-windows.toml", "[[periodic.reboot]]\ndays = [\"Sat\"]\nstart = \"25:00\"\n");
        std::fs::create_dir_all(r.join("usr/lib/hostctl/agent.d/40-dir.toml")).unwrap();
        symlink("../../../../../x.toml", r.join("usr/lib/hostctl/agent.d/50-out.toml")).unwrap();
        let f = agent_toml(&root(r)).unwrap();
        assert_eq!(f.len(), 4, "{f:#?}");
        assert!(f[0].starts_with("/etc/hostctl/agent.toml:3: unknown field `intervall`"), "{f:?}");
        assert!(f[1].starts_with("/usr/lib/hostctl/agent.d/40-dir.toml: not a regular file"), "{f:?}");
        assert!(f[2].starts_with("/usr/lib/hostctl/agent.d/50-out.toml: the symlink"), "{f:?}");
        assert!(f[3].starts_with("/etc/hostctl/agent.d/30-windows.toml:3: "), "{f:?}");
        assert!(f[3].contains("25:00"), "{f:?}");
    }
}
