//! A minimal FleetLock v1 server over real HTTP/1.1 on loopback, for the
//! agent's tests until the etcd-backed `hostctl fleet server` is merged:
//! slots per group, the protocol header required, `report` counting
//! unhealthy hosts per digest and halting a digest at a threshold, `status`
//! listing holders and halted digests. It records the most slots ever held
//! at once per group, which the fleet test asserts on.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// What the server knows.
#[derive(Default, Debug)]
pub struct LockState {
    /// Holders per group.
    pub holders: BTreeMap<String, BTreeSet<String>>,
    /// The most holders a group ever had at once.
    pub max_held: BTreeMap<String, usize>,
    /// Unhealthy reporters per digest.
    pub unhealthy: BTreeMap<String, BTreeSet<String>>,
    /// Healthy reporters per digest.
    pub healthy: BTreeMap<String, BTreeSet<String>>,
    /// Halted digests.
    pub halted: BTreeSet<String>,
    /// Requests refused for want of the protocol header.
    pub missing_header: usize,
}

/// The server; it stops serving when dropped (its listener thread ends with the process).
pub struct LockServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its state.
    pub state: Arc<Mutex<LockState>>,
    up: Arc<std::sync::atomic::AtomicBool>,
}

impl LockServer {
    /// Serves `slots` per group; a digest halts after `halt_after` unhealthy reports.
    pub fn start(slots: usize, halt_after: usize) -> LockServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state: Arc<Mutex<LockState>> = Arc::default();
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (st, up2) = (state.clone(), up.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if !up2.load(std::sync::atomic::Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || serve(conn, &st, slots, halt_after));
            }
        });
        LockServer { url, state, up }
    }

    /// The most holders group `group` ever had at once.
    pub fn max_held(&self, group: &str) -> usize {
        self.state.lock().unwrap().max_held.get(group).copied().unwrap_or(0)
    }

    /// Whether `digest` is halted.
    pub fn is_halted(&self, digest: &str) -> bool {
        self.state.lock().unwrap().halted.contains(digest)
    }
}

impl Drop for LockServer {
    fn drop(&mut self) {
        self.up.store(false, std::sync::atomic::Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

fn serve(conn: TcpStream, st: &Mutex<LockState>, slots: usize, halt_after: usize) {
    let mut r = BufReader::new(conn.try_clone().unwrap());
    let mut w = conn;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (Some(method), Some(path)) = (parts.next(), parts.next()) else { return };
        let (method, path) = (method.to_string(), path.to_string());
        let (mut len, mut header) = (0usize, false);
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse().unwrap_or(0),
                    "fleet-lock-protocol" => header = v.trim() == "true",
                    _ => {}
                }
            }
        }
        let mut body = vec![0; len];
        if r.read_exact(&mut body).is_err() {
            return;
        }
        let (code, reply) = handle(st, slots, halt_after, &method, &path, header, &body);
        let out = format!(
            "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
            reply.len()
        );
        if w.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}

fn handle(
    st: &Mutex<LockState>,
    slots: usize,
    halt_after: usize,
    method: &str,
    path: &str,
    header: bool,
    body: &[u8],
) -> (u16, String) {
    let err =
        |code: u16, kind: &str, value: String| (code, serde_json::json!({"kind": kind, "value": value}).to_string());
    let mut s = st.lock().unwrap();
    if !header {
        s.missing_header += 1;
        return err(400, "missing_header", "the fleet-lock-protocol header is missing".into());
    }
    if method == "GET" && path == "/v1/status" {
        let halted: Vec<&String> = s.halted.iter().collect();
        return (200, serde_json::json!({"holders": s.holders, "halted": halted}).to_string());
    }
    let Ok(req) = serde_json::from_slice::<serde_json::Value>(body) else {
        return err(400, "bad_request", "malformed JSON".into());
    };
    let (Some(id), Some(group)) = (req["client_params"]["id"].as_str(), req["client_params"]["group"].as_str()) else {
        return err(400, "bad_request", "client_params.id and .group are required".into());
    };
    let (id, group) = (id.to_string(), group.to_string());
    match path {
        "/v1/pre-reboot" => {
            let held = s.holders.entry(group.clone()).or_default();
            if !held.contains(&id) && held.len() >= slots {
                return err(409, "failed_lock", format!("all {slots} slots of group {group} are held"));
            }
            held.insert(id);
            let n = held.len();
            let max = s.max_held.entry(group).or_default();
            *max = (*max).max(n);
            (200, String::new())
        }
        "/v1/steady-state" => {
            s.holders.entry(group).or_default().remove(&id);
            (200, String::new())
        }
        "/v1/report" => {
            let digest = req["digest"].as_str().unwrap_or_default().to_string();
            if req["healthy"].as_bool() == Some(true) {
                s.healthy.entry(digest).or_default().insert(id);
            } else {
                let bad = s.unhealthy.entry(digest.clone()).or_default();
                bad.insert(id);
                if bad.len() >= halt_after {
                    s.halted.insert(digest);
                }
            }
            (200, String::new())
        }
        _ => err(404, "not_found", format!("no such path {path}")),
    }
}
