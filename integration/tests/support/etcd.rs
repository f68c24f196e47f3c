//! Real etcd (Debian's `etcd-server`) on loopback for the fleet lock server's
//! tests and benchmark: one member or a cluster of several, each on random
//! ports with its data in a temp dir (on /dev/shm when there is one, so that
//! etcd's fsyncs cost nothing), stopped by PID on drop.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One etcd cluster started by a test.
pub struct EtcdCluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

fn port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl EtcdCluster {
    /// A single-member cluster.
    pub fn single() -> EtcdCluster {
        EtcdCluster::start(1)
    }

    /// A cluster of `n` members, all healthy when this returns.
    pub fn start(n: usize) -> EtcdCluster {
        let base = if std::path::Path::new("/dev/shm").is_dir() { "/dev/shm" } else { "/tmp" };
        let dir = tempfile::Builder::new().prefix("hostctl-etcd-").tempdir_in(base).unwrap();
        let members: Vec<Member> = (0..n)
            .map(|i| Member { name: format!("m{i}"), client_port: port(), peer_port: port(), child: None })
            .collect();
        let mut cluster = EtcdCluster { dir, members };
        for i in 0..n {
            cluster.spawn(i);
        }
        for i in 0..n {
            cluster.wait_healthy(i);
        }
        cluster
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) {
        let initial = self.initial_cluster();
        let m = &self.members[i];
        let data = self.dir.path().join(&m.name);
        let log = std::fs::File::create(self.dir.path().join(format!("{}.log", m.name))).unwrap();
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let child = Command::new("etcd")
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer, "--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial, "--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &format!("hostctl-{}", std::process::id())])
            // Quick elections on loopback, so that losing the leader costs a
            // test a fraction of a second.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--log-level", "warn", "--logger", "zap"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting etcd (integration/setup.sh installs etcd-server)");
        self.members[i].child = Some(child);
    }

    fn wait_healthy(&self, i: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if health(self.members[i].client_port) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("etcd member {} did not become healthy:\n{}", i, self.log(i));
    }

    /// The client URLs of the members, running or not.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| format!("http://127.0.0.1:{}", m.client_port)).collect()
    }

    /// The client URLs, comma-separated (for `--etcd`).
    pub fn endpoints_arg(&self) -> String {
        self.endpoints().join(",")
    }

    /// Kills member `i` (SIGKILL, by PID) and waits for it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The index of the member that leads the cluster now (asked through
    /// etcd's JSON gateway, `/v3/maintenance/status`).
    pub fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ids: Vec<Option<(String, String)>> = self
                .members
                .iter()
                .map(|m| {
                    m.child.as_ref()?;
                    let out = Command::new("curl")
                        .args(["-s", "-m", "2", "-X", "POST", "-d", "{}"])
                        .arg(format!("http://127.0.0.1:{}/v3/maintenance/status", m.client_port))
                        .output()
                        .ok()?;
                    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                    Some((v["header"]["member_id"].as_str()?.to_string(), v["leader"].as_str()?.to_string()))
                })
                .collect();
            for (i, id) in ids.iter().enumerate() {
                if let Some((me, leader)) = id {
                    if me == leader {
                        return i;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no etcd member says it leads: {ids:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Member `i`'s log.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("{}.log", self.members[i].name))).unwrap_or_default()
    }

    /// The directory the members' data and logs are in.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

/// Whether the member on `port` answers `/health` with `"health":"true"`.
fn health(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").is_err() {
        return false;
    }
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text.contains("\"health\":\"true\"")
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
