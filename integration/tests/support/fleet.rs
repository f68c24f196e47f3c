//! `hostctl fleet server` as a process for the lock server's tests, and a
//! small FleetLock client over reqwest for the simulated hosts.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

/// One lock server replica, stopped by PID on drop.
pub struct FleetServer {
    child: Option<Child>,
    /// Its base URL.
    pub url: String,
    log: tempfile::NamedTempFile,
}

impl FleetServer {
    /// Starts `hostctl fleet server --etcd ENDPOINTS` on a free loopback port
    /// with `extra` arguments, and waits until it answers (over HTTPS when
    /// `extra` has `--tls-cert`).
    pub fn start(etcd: &str, extra: &[&str]) -> FleetServer {
        let scheme = if extra.contains(&"--tls-cert") { "https" } else { "http" };
        let port = super::registry::free_port();
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = Command::new(super::hostctl_bin())
            .args(["fleet", "server", "--etcd", etcd, "--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("RUST_LOG", "hostctl=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log.reopen().unwrap())
            .spawn()
            .expect("starting hostctl fleet server");
        let server = FleetServer { child: Some(child), url: format!("{scheme}://127.0.0.1:{port}"), log };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let out = Command::new("curl")
                // -k: only whether it answers; the tests check its certificate.
                .args(["-s", "-k", "-o", "/dev/null", "-w", "%{http_code}"])
                .arg(format!("{}/v1/status", server.url))
                .output()
                .unwrap();
            if out.stdout == b"200" {
                return server;
            }
            assert!(Instant::now() < deadline, "the fleet server did not come up:\n{}", server.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// What it logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Kills it (SIGKILL, by PID).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for FleetServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A FleetLock request from a simulated host: the status code.
pub async fn fleetlock(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    id: &str,
    group: &str,
    digest: Option<&str>,
) -> reqwest::Result<u16> {
    let mut req = http
        .post(format!("{base}{path}"))
        .header("fleet-lock-protocol", "true")
        .json(&json!({"client_params": {"id": id, "group": group}}));
    if let Some(d) = digest {
        req = req.header("hostctl-release-digest", d);
    }
    Ok(req.send().await?.status().as_u16())
}

/// `POST /v1/report`: the status code and body.
pub async fn report(http: &reqwest::Client, base: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    let r =
        http.post(format!("{base}/v1/report")).header("fleet-lock-protocol", "true").json(&body).send().await.unwrap();
    let code = r.status().as_u16();
    (code, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// `GET /v1/status`.
pub async fn status(http: &reqwest::Client, base: &str) -> serde_json::Value {
    http.get(format!("{base}/v1/status")).send().await.unwrap().json().await.unwrap()
}

/// The ids holding a slot of `group` in a status.
pub fn holders(status: &serde_json::Value, group: &str) -> Vec<String> {
    status["groups"][group]["holders"]
        .as_array()
        .map(|a| a.iter().map(|h| h["id"].as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// A current-thread runtime for a test's simulated hosts.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}
