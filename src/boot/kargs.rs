//! Kernel arguments shipped by an image in `usr/lib/hostctl/kargs.d/*.toml`.
//!
//! The format follows bootc's: each file holds `kargs = ["a", "b=c"]` and may
//! restrict itself with `match-architectures = ["x86_64", "aarch64"]`
//! (Rust's architecture names). Files are read in file-name order; arguments
//! keep their order within a file. Unknown keys are refused so that a typo does
//! not silently drop an argument.

use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

/// Where an image keeps its kernel argument files, relative to its root.
pub const KARGS_DIR: &str = "usr/lib/hostctl/kargs.d";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct KargsFile {
    kargs: Vec<String>,
    #[serde(default)]
    match_architectures: Option<Vec<String>>,
}

/// Parses one kargs.d file; returns its arguments if it applies to `arch`.
pub fn parse(text: &str, arch: &str) -> Result<Vec<String>> {
    let f: KargsFile = toml::from_str(text).context("parsing kargs.d file")?;
    if let Some(archs) = &f.match_architectures {
        if !archs.iter().any(|a| a == arch) {
            return Ok(Vec::new());
        }
    }
    for k in &f.kargs {
        anyhow::ensure!(
            !k.is_empty() && !k.chars().any(char::is_whitespace),
            "kernel argument {k:?} is empty or contains whitespace"
        );
    }
    Ok(f.kargs)
}

/// Reads every `*.toml` file of `root`'s kargs.d in name order, for this machine's architecture.
pub fn read_image_kargs(root: &Path) -> Result<Vec<String>> {
    read_kargs_dir(&root.join(KARGS_DIR), std::env::consts::ARCH)
}

/// Reads every `*.toml` file of `dir` in name order for `arch`; a missing directory means none.
pub fn read_kargs_dir(dir: &Path, arch: &str) -> Result<Vec<String>> {
    let mut names: Vec<_> = crate::fsutil::read_dir_if_present(dir)?.iter().map(|e| e.file_name()).collect();
    names.retain(|n| n.to_string_lossy().ends_with(".toml"));
    names.sort();
    let mut out = Vec::new();
    for n in names {
        let p = dir.join(&n);
        let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        out.extend(parse(&text, arch).with_context(|| format!("in {}", p.display()))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        type Case<'a> = (&'a str, &'a str, Result<&'a [&'a str], &'a str>);
        let cases: &[Case] = &[
            ("kargs = [\"quiet\", \"console=ttyS0\"]", "x86_64", Ok(&["quiet", "console=ttyS0"])),
            ("kargs = []", "x86_64", Ok(&[])),
            ("kargs = [\"a\"]\nmatch-architectures = [\"aarch64\"]", "x86_64", Ok(&[])),
            ("kargs = [\"a\"]\nmatch-architectures = [\"aarch64\", \"x86_64\"]", "x86_64", Ok(&["a"])),
            ("kargs = [\"a b\"]", "x86_64", Err("whitespace")),
            ("karg = [\"a\"]", "x86_64", Err("parsing")),
            ("kargs = \"a\"", "x86_64", Err("parsing")),
        ];
        for (text, arch, want) in cases {
            let got = parse(text, arch);
            match want {
                Ok(w) => assert_eq!(got.unwrap(), w.iter().map(|s| s.to_string()).collect::<Vec<_>>(), "{text}"),
                Err(msg) => {
                    let e = format!("{:#}", got.unwrap_err());
                    assert!(e.contains(msg), "{text}: {e}");
                }
            }
        }
    }

    #[test]
    fn dir_is_read_in_name_order_and_skips_other_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("20-b.toml"), "kargs = [\"b\"]").unwrap();
        std::fs::write(d.path().join("10-a.toml"), "kargs = [\"a1\", \"a2\"]").unwrap();
        std::fs::write(d.path().join("README"), "not toml").unwrap();
        assert_eq!(read_kargs_dir(d.path(), "x86_64").unwrap(), ["a1", "a2", "b"]);
        assert!(read_kargs_dir(&d.path().join("missing"), "x86_64").unwrap().is_empty());
        std::fs::write(d.path().join("30-bad.toml"), "kargs = 3").unwrap();
        let e = format!("{:#}", read_kargs_dir(d.path(), "x86_64").unwrap_err());
        assert!(e.contains("30-bad.toml"), "{e}");
    }
}
