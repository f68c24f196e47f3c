//! Running health-check scripts: an executable with no input, its output
//! captured (the first 4 KiB) and a time limit, behind [`ScriptRunner`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How one run went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScriptRun {
    /// It exited 0 within the time limit.
    pub passed: bool,
    /// Exit status, or why it could not run or finish.
    pub detail: String,
    /// stdout and stderr together (truncated, trailing white space trimmed).
    pub output: String,
}

impl ScriptRun {
    fn failed(detail: String) -> Self {
        ScriptRun { passed: false, detail, output: String::new() }
    }
}

/// Runs scripts.
pub trait ScriptRunner {
    /// Runs `path` with stdin closed, killing it after `timeout`.
    fn run(&self, path: &Path, timeout: Duration) -> ScriptRun;
}

/// A child process per script.
pub struct ProcessRunner;

impl ScriptRunner for ProcessRunner {
    fn run(&self, path: &Path, timeout: Duration) -> ScriptRun {
        let mut log = match tempfile::tempfile() {
            Ok(f) => f,
            Err(e) => return ScriptRun::failed(format!("temp file: {e}")),
        };
        let spawn = log.try_clone().and_then(|f| {
            let f2 = f.try_clone()?;
            Command::new(path).stdin(std::process::Stdio::null()).stdout(f).stderr(f2).spawn()
        });
        let mut child = match spawn {
            Ok(c) => c,
            Err(e) => return ScriptRun::failed(format!("could not run: {e}")),
        };
        let start = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Ok(st),
                Ok(None) if start.elapsed() > timeout => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(format!("timed out after {}s", timeout.as_secs()));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(e) => break Err(format!("waiting: {e}")),
            }
        };
        let mut output = String::new();
        {
            use std::io::{Read, Seek};
            let _ = log.seek(std::io::SeekFrom::Start(0));
            let mut buf = Vec::new();
            let _ = log.take(4096).read_to_end(&mut buf);
            output.push_str(String::from_utf8_lossy(&buf).trim_end());
        }
        match status {
            Ok(st) => ScriptRun { passed: st.success(), detail: st.to_string(), output },
            Err(detail) => ScriptRun { passed: false, detail, output },
        }
    }
}

/// Records the scripts run and answers from a table by file name; a script
/// not in the table passes (tests).
#[derive(Default)]
pub struct RecordingRunner {
    /// Script file name -> what running it gives.
    pub results: HashMap<String, ScriptRun>,
    /// The scripts run, in order.
    pub calls: Mutex<Vec<PathBuf>>,
}

impl ScriptRunner for RecordingRunner {
    fn run(&self, path: &Path, _timeout: Duration) -> ScriptRun {
        self.calls.lock().expect("poisoned").push(path.into());
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        self.results.get(name.as_ref()).cloned().unwrap_or(ScriptRun {
            passed: true,
            detail: "exit status: 0".into(),
            output: String::new(),
        })
    }
}
