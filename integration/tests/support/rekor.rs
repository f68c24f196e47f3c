//! A transparency log on loopback for the tests, standing in for Rekor v1
//! (Debian packages `rekor-cli` but neither the Rekor server nor Trillian's
//! log server). It speaks the part of Rekor's REST API that `cosign sign` and
//! `cosign attest` use when they upload (`POST /api/v1/log/entries` with a
//! `dsse` v0.0.1 or `hashedrekord` v0.0.1 proposed entry), plus
//! `GET /api/v1/log` and `GET /api/v1/log/publicKey`, and keeps a real log:
//! * entries are canonicalized as Rekor does (RFC 8785 JSON of the canonical
//!   entry: a DSSE entry keeps its payload and envelope hashes and its
//!   signatures with their verifiers, not the envelope);
//! * leaves go into an RFC 6962 Merkle tree (leaf `SHA-256(0x00 || body)`,
//!   node `SHA-256(0x01 || l || r)`), and each answer carries the inclusion
//!   proof of the new leaf in the tree as it now is;
//! * the proof's tree head is a signed checkpoint (a signed note, as Rekor's:
//!   origin, size, root, signed with this log's own ECDSA P-256 key, whose key
//!   hint is the first 4 bytes of the SHA-256 of its SubjectPublicKeyInfo);
//! * the signed entry timestamp signs the canonical JSON of body,
//!   integratedTime, logID and logIndex with the same key, and the log ID is
//!   the SHA-256 of that key.
//!
//! Unlike Rekor it does not check the entry's signature against its verifier
//! (the verifier under test checks the bundle's signature itself) and keeps
//! everything in memory. [`Fault`] makes it answer one upload with a broken
//! inclusion proof, as a misbehaving log would. Std threads; stops accepting
//! when dropped.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use sigstore_crypto::KeyPair;

use super::http1::{read_request, respond};

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// How the next upload is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Honestly.
    None,
    /// With an inclusion proof whose first hash is changed (the checkpoint and
    /// the entry timestamp stay genuine): the proof no longer leads from the
    /// leaf to the signed root.
    BadInclusionProof,
}

/// The RFC 6962 hash of a leaf.
pub fn leaf_hash(data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

fn node_hash(l: &[u8; 32], r: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(l);
    h.update(r);
    h.finalize().into()
}

/// The largest power of two smaller than `n` (n > 1), RFC 6962's split point.
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

/// RFC 6962 `MTH(D[n])` over leaf hashes.
pub fn tree_head(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        0 => Sha256::digest([]).into(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&tree_head(&leaves[..k]), &tree_head(&leaves[k..]))
        }
    }
}

/// RFC 6962 `PATH(m, D[n])`: the audit path of leaf `m`, bottom up.
pub fn audit_path(m: usize, leaves: &[[u8; 32]]) -> Vec<[u8; 32]> {
    let n = leaves.len();
    if n <= 1 {
        return Vec::new();
    }
    let k = split(n);
    if m < k {
        let mut p = audit_path(m, &leaves[..k]);
        p.push(tree_head(&leaves[k..]));
        p
    } else {
        let mut p = audit_path(m - k, &leaves[k..]);
        p.push(tree_head(&leaves[..k]));
        p
    }
}

struct Log {
    key: KeyPair,
    /// SubjectPublicKeyInfo DER of `key`.
    spki: Vec<u8>,
    origin: String,
    leaves: Vec<[u8; 32]>,
    fault: Fault,
}

impl Log {
    fn log_id(&self) -> [u8; 32] {
        Sha256::digest(&self.spki).into()
    }

    fn sign(&self, data: &[u8]) -> Vec<u8> {
        self.key.sign(data).expect("signing with the log key").as_bytes().to_vec()
    }

    /// The signed note for the current tree head.
    fn checkpoint(&self) -> String {
        let body = format!("{}\n{}\n{}\n", self.origin, self.leaves.len(), b64(&tree_head(&self.leaves)));
        let mut sig = self.log_id()[..4].to_vec();
        sig.extend(self.sign(body.as_bytes()));
        let name = self.origin.split(" - ").next().unwrap_or(&self.origin);
        format!("{body}\n\u{2014} {name} {}\n", b64(&sig))
    }

    /// Appends `body` (canonical JSON) and answers as Rekor's `LogEntry`.
    fn append(&mut self, body: Vec<u8>) -> (String, Value) {
        let leaf = leaf_hash(&body);
        let index = self.leaves.len();
        self.leaves.push(leaf);
        let integrated = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let log_id = hex::encode(self.log_id());
        let body_b64 = b64(&body);
        let set_payload = json!({"body": body_b64, "integratedTime": integrated, "logID": log_id, "logIndex": index});
        let set = self.sign(&serde_json_canonicalizer::to_vec(&set_payload).unwrap());
        let mut hashes: Vec<String> = audit_path(index, &self.leaves).iter().map(hex::encode).collect();
        if std::mem::replace(&mut self.fault, Fault::None) == Fault::BadInclusionProof {
            match hashes.first_mut() {
                Some(h) => *h = hex::encode(Sha256::digest(h.as_bytes())),
                None => hashes.push(hex::encode([0u8; 32])),
            }
        }
        let uuid = hex::encode(leaf);
        let entry = json!({
            "body": body_b64,
            "integratedTime": integrated,
            "logID": log_id,
            "logIndex": index,
            "verification": {
                "inclusionProof": {
                    "checkpoint": self.checkpoint(),
                    "hashes": hashes,
                    "logIndex": index,
                    "rootHash": hex::encode(tree_head(&self.leaves)),
                    "treeSize": self.leaves.len(),
                },
                "signedEntryTimestamp": b64(&set),
            }
        });
        (uuid, entry)
    }
}

/// Rekor's canonical entry for a proposed one, as canonical JSON bytes.
fn canonicalize(proposed: &Value) -> Result<Vec<u8>, String> {
    let kind = proposed["kind"].as_str().unwrap_or_default();
    let version = proposed["apiVersion"].as_str().unwrap_or_default();
    let spec = &proposed["spec"];
    let canonical = match (kind, version) {
        ("dsse", "0.0.1") => {
            let content = &spec["proposedContent"];
            let envelope = content["envelope"].as_str().ok_or("dsse: proposedContent.envelope missing")?;
            let verifiers: Vec<&str> = content["verifiers"]
                .as_array()
                .ok_or("dsse: proposedContent.verifiers missing")?
                .iter()
                .filter_map(Value::as_str)
                .collect();
            let env: Value = serde_json::from_str(envelope).map_err(|e| format!("dsse: envelope: {e}"))?;
            let payload = base64::engine::general_purpose::STANDARD
                .decode(env["payload"].as_str().ok_or("dsse: envelope has no payload")?)
                .map_err(|e| format!("dsse: payload: {e}"))?;
            let sigs = env["signatures"].as_array().ok_or("dsse: envelope has no signatures")?;
            if sigs.len() != verifiers.len() || sigs.is_empty() {
                return Err(format!("dsse: {} signatures but {} verifiers", sigs.len(), verifiers.len()));
            }
            let signatures: Vec<Value> =
                sigs.iter().zip(&verifiers).map(|(s, v)| json!({"signature": s["sig"], "verifier": v})).collect();
            json!({"apiVersion": "0.0.1", "kind": "dsse", "spec": {
                "envelopeHash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(envelope.as_bytes()))},
                "payloadHash": {"algorithm": "sha256", "value": hex::encode(Sha256::digest(&payload))},
                "signatures": signatures}})
        }
        ("hashedrekord", "0.0.1") => {
            json!({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
                "data": {"hash": {"algorithm": spec["data"]["hash"]["algorithm"], "value": spec["data"]["hash"]["value"]}},
                "signature": {"content": spec["signature"]["content"],
                              "publicKey": {"content": spec["signature"]["publicKey"]["content"]}}}})
        }
        _ => return Err(format!("kind {kind} {version} is not served by this log")),
    };
    serde_json_canonicalizer::to_vec(&canonical).map_err(|e| e.to_string())
}

/// A running log.
pub struct Rekor {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    log: Arc<Mutex<Log>>,
    stop: Arc<AtomicBool>,
}

impl Rekor {
    /// A new, empty log with a fresh key, listening on a free loopback port.
    pub fn start() -> Rekor {
        let key = KeyPair::generate_ecdsa_p256().unwrap();
        let spki = key.public_key_der().unwrap().as_bytes().to_vec();
        let tree_id: u64 = rand_u64();
        let log = Log {
            key,
            spki,
            origin: format!("rekor.hostctl.test - {tree_id}"),
            leaves: Vec::new(),
            fault: Fault::None,
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(log));
        let stop = Arc::new(AtomicBool::new(false));
        let (l2, s2) = (log.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s2.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let l3 = l2.clone();
                    std::thread::spawn(move || serve(conn, &l3));
                }
            }
        });
        Rekor { url, log, stop }
    }

    /// Answers the next upload with `fault`.
    pub fn set_fault(&self, fault: Fault) {
        self.log.lock().unwrap().fault = fault;
    }

    /// The log's public key, SubjectPublicKeyInfo DER.
    pub fn public_key_der(&self) -> Vec<u8> {
        self.log.lock().unwrap().spki.clone()
    }

    /// How many entries the log holds.
    pub fn size(&self) -> usize {
        self.log.lock().unwrap().leaves.len()
    }

    /// The `tlogs` entry of a sigstore `trusted_root.json` for this log.
    pub fn trusted_root_tlog(&self) -> Value {
        let spki = self.public_key_der();
        json!({
            "baseUrl": self.url,
            "hashAlgorithm": "SHA2_256",
            "publicKey": {"rawBytes": b64(&spki), "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                          "validFor": {"start": "2020-01-01T00:00:00Z"}},
            "logId": {"keyId": b64(&Sha256::digest(&spki))}
        })
    }
}

impl Drop for Rekor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.url.trim_start_matches("http://"));
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b)).unwrap();
    u64::from_le_bytes(b) >> 1
}

fn serve(conn: TcpStream, log: &Mutex<Log>) {
    let Some(req) = read_request(&conn) else { return };
    let (status, ctype, extra, out) = answer(&req.method, &req.path, &req.body, log);
    respond(conn, &status, ctype, &extra, &out);
}

fn error(status: &str, message: &str) -> (String, &'static str, String, Vec<u8>) {
    let code: u16 = status.split(' ').next().unwrap().parse().unwrap();
    (
        status.into(),
        "application/json",
        String::new(),
        json!({"code": code, "message": message}).to_string().into_bytes(),
    )
}

fn answer(method: &str, path: &str, body: &[u8], log: &Mutex<Log>) -> (String, &'static str, String, Vec<u8>) {
    match (method, path) {
        ("POST", "/api/v1/log/entries") => {
            let proposed: Value = match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return error("400 Bad Request", &format!("not JSON: {e}")),
            };
            let canonical = match canonicalize(&proposed) {
                Ok(c) => c,
                Err(e) => return error("400 Bad Request", &e),
            };
            let mut log = log.lock().unwrap();
            let leaf = leaf_hash(&canonical);
            if log.leaves.contains(&leaf) {
                return error("409 Conflict", "an equivalent entry already exists in the transparency log");
            }
            let (uuid, entry) = log.append(canonical);
            let location = format!("Location: /api/v1/log/entries/{uuid}\r\nETag: {uuid}\r\n");
            ("201 Created".into(), "application/json", location, json!({ uuid: entry }).to_string().into_bytes())
        }
        ("GET", "/api/v1/log") => {
            let log = log.lock().unwrap();
            let info = json!({"rootHash": hex::encode(tree_head(&log.leaves)), "treeSize": log.leaves.len(),
                              "signedTreeHead": log.checkpoint(),
                              "treeID": log.origin.rsplit(' ').next().unwrap_or_default()});
            ("200 OK".into(), "application/json", String::new(), info.to_string().into_bytes())
        }
        ("GET", "/api/v1/log/publicKey") => {
            let pem = pem::encode(&pem::Pem::new("PUBLIC KEY", log.lock().unwrap().spki.clone()));
            ("200 OK".into(), "application/x-pem-file", String::new(), pem.into_bytes())
        }
        _ => error("404 Not Found", "not served by this test log"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6962's tree head and audit paths, checked against sigstore-rust's
    /// inclusion-proof verifier (the one the verifier under test uses) for
    /// every leaf of trees of 1 to 9 leaves, and a changed path refused.
    #[test]
    fn audit_paths_verify_for_every_leaf_of_small_trees() {
        use sigstore_verify::types::Sha256Hash;
        for n in 1..=9usize {
            let leaves: Vec<[u8; 32]> = (0..n).map(|i| leaf_hash(format!("leaf {i}").as_bytes())).collect();
            let root = Sha256Hash::new(tree_head(&leaves));
            for m in 0..n {
                let mut path: Vec<Sha256Hash> = audit_path(m, &leaves).into_iter().map(Sha256Hash::new).collect();
                let leaf = Sha256Hash::new(leaves[m]);
                sigstore_merkle::verify_inclusion_proof(&leaf, m as u64, n as u64, &path, &root)
                    .unwrap_or_else(|e| panic!("leaf {m} of {n}: {e}"));
                if let Some(first) = path.first_mut() {
                    *first = Sha256Hash::new(leaf_hash(b"other"));
                    assert!(sigstore_merkle::verify_inclusion_proof(&leaf, m as u64, n as u64, &path, &root).is_err());
                }
            }
        }
    }
}
