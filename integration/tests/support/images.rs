//! Building test images with real tools: umoci assembles OCI layouts from
//! directory trees (one layer per tree), skopeo pushes them to a registry.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::run;

/// Layer compression for a push, as skopeo spells it.
#[derive(Clone, Copy, Debug)]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

/// An OCI layout directory holding one image tag built layer by layer with umoci.
pub struct Layout {
    pub dir: PathBuf,
    pub tag: String,
}

impl Layout {
    /// `umoci init` + `umoci new` in `dir` (created) for `tag`.
    pub fn new(dir: &Path, tag: &str) -> Layout {
        super::require_tool("umoci");
        let dir = dir.to_path_buf();
        if !dir.join("index.json").exists() {
            run(Command::new("umoci").arg("init").arg("--layout").arg(&dir));
        }
        run(Command::new("umoci").arg("new").arg("--image").arg(format!("{}:{tag}", dir.display())));
        Layout { dir, tag: tag.to_string() }
    }

    /// `oci:DIR:TAG`, for hostctl and skopeo.
    pub fn oci_ref(&self) -> String {
        format!("oci:{}:{}", self.dir.display(), self.tag)
    }

    /// Adds `tree` (a directory) as a new layer at `/` (`umoci insert`).
    /// umoci records ownership and modes as they are on disk.
    pub fn add_layer(&self, tree: &Path) -> &Self {
        run(Command::new("umoci")
            .arg("insert")
            .arg("--image")
            .arg(format!("{}:{}", self.dir.display(), self.tag))
            .arg(tree)
            .arg("/"));
        self
    }

    /// Adds a layer with a whiteout for `path` (`umoci insert --whiteout`).
    pub fn add_whiteout(&self, path: &str) -> &Self {
        run(Command::new("umoci")
            .arg("insert")
            .arg("--image")
            .arg(format!("{}:{}", self.dir.display(), self.tag))
            .arg("--whiteout")
            .arg(path));
        self
    }

    /// Sets a config label (`umoci config --config.label`).
    pub fn label(&self, key: &str, value: &str) -> &Self {
        run(Command::new("umoci")
            .arg("config")
            .arg("--image")
            .arg(format!("{}:{}", self.dir.display(), self.tag))
            .arg(format!("--config.label={key}={value}")));
        self
    }

    /// Pushes to `dest` (`127.0.0.1:PORT/repo:tag`) over plain HTTP with skopeo,
    /// recompressing layers as asked.
    pub fn push(&self, dest: &str, compression: Compression) {
        push_with_skopeo(&self.oci_ref(), dest, compression, &[]);
    }
}

/// `skopeo copy SRC docker://DEST` with `--dest-tls-verify=false` and the compression asked for.
pub fn push_with_skopeo(src: &str, dest: &str, compression: Compression, extra: &[&str]) {
    super::require_tool("skopeo");
    let mut cmd = Command::new("skopeo");
    cmd.args(["copy", "--quiet", "--dest-tls-verify=false"]);
    match compression {
        Compression::Gzip => cmd.args(["--dest-compress-format", "gzip"]),
        Compression::Zstd => cmd.args(["--dest-compress-format", "zstd"]),
        Compression::None => cmd.arg("--dest-decompress"),
    };
    cmd.args(extra).arg(src).arg(format!("docker://{dest}"));
    run(&mut cmd);
}

/// Writes `files` (relative path → content) under `root`, creating directories.
pub fn write_tree(root: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }
}
