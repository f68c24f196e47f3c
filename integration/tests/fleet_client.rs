//! The agent's FleetLock client (`hostctl::fleet::client::LockClient`)
//! against the real `hostctl fleet server` on a real etcd: the release it
//! names on `pre-reboot` and the threshold it sends in reports, and
//! `--client-ca` with certificates made by openssl here: a host acts only
//! for the id its certificate's CN names.

use std::path::{Path, PathBuf};
use std::process::Command;

use hostctl::fleet::client::{ClientTls, LockClient, LockError};
use hostctl::fleet::protocol::{kind, HaltAfter};
use serde_json::json;

use crate::support::etcd::EtcdCluster;
use crate::support::fleet::{fleetlock, holders, runtime, status, FleetServer};
use crate::support::{require_tool, run};

const DIGEST_A: &str = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const DIGEST_B: &str = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// The refusal's (HTTP status, kind), or a panic naming what came instead.
fn refused(r: Result<(), LockError>) -> (u16, String) {
    match r {
        Err(LockError::Refused { status, kind, .. }) => (status, kind),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// A report's threshold is the release's own (from its signed metadata),
/// not the server's `--halt-after`; once halted, `pre-reboot` naming the
/// release is refused with `failed_lock_release_halted`, which the agent
/// reads as "halted" (not as "retry").
#[test]
fn the_agents_client_names_the_release_and_sends_its_halt_threshold() {
    let etcd = EtcdCluster::single();
    // The server alone would halt after the first unhealthy host.
    let server = FleetServer::start(&etcd.endpoints_arg(), &["--slots", "10", "--halt-after", "1"]);
    let rt = runtime();
    let client = |id: &str| LockClient::new(&server.url, id, "web").unwrap();
    let http = reqwest::Client::new();
    rt.block_on(async {
        for id in ["h1", "h2", "h3"] {
            client(id).pre_reboot(Some(DIGEST_A)).await.unwrap();
        }
        let st = status(&http, &server.url).await;
        assert_eq!(st["groups"]["web"]["holders"][0]["digest"], DIGEST_A, "the slot records the release: {st}");
        // The release says 3 hosts: two unhealthy reports do not halt it.
        let three = Some(HaltAfter::Hosts(3));
        client("h1").report(DIGEST_A, false, "web.service failed", three).await.unwrap();
        client("h2").report(DIGEST_A, false, "web.service failed", three).await.unwrap();
        assert_eq!(status(&http, &server.url).await["halted"], json!([]), "2 of the release's 3");
        client("h4").pre_reboot(Some(DIGEST_A)).await.unwrap();
        client("h3").report(DIGEST_A, false, "web.service failed", three).await.unwrap();
        assert_eq!(status(&http, &server.url).await["halted"], json!([DIGEST_A]));
        // Halted: pre-reboot into it is refused, and the client says why.
        let err = client("h5").pre_reboot(Some(DIGEST_A)).await.unwrap_err();
        assert!(err.is_release_halted(), "{err}");
        assert_eq!(refused(Err(err)), (409, kind::RELEASE_HALTED.to_string()));
        // Another release, and a client that names none (Zincati), still lock.
        client("h5").pre_reboot(Some(DIGEST_B)).await.unwrap();
        client("h6").pre_reboot(None).await.unwrap();
        // A percentage from the metadata: 50 % of the reporters of B.
        let half = Some(HaltAfter::Percent(50.0));
        client("h5").report(DIGEST_B, true, "ok", half).await.unwrap();
        client("h6").report(DIGEST_B, true, "ok", half).await.unwrap();
        client("h7").report(DIGEST_B, false, "bad", half).await.unwrap();
        assert_eq!(status(&http, &server.url).await["halted"], json!([DIGEST_A]), "1 of 3 is below 50 %");
        client("h8").report(DIGEST_B, false, "bad", half).await.unwrap();
        assert_eq!(status(&http, &server.url).await["halted"], json!([DIGEST_A, DIGEST_B]), "2 of 4 is 50 %");
    });
}

/// A CA, a server certificate for 127.0.0.1, and host certificates, made by openssl.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        require_tool("openssl");
        let pki = Pki { dir: tempfile::tempdir().unwrap() };
        pki.ca("ca");
        pki.ca("rogue-ca");
        pki.leaf("ca", "server", "/CN=fleet-lock-server", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth");
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn openssl(&self) -> Command {
        let mut c = Command::new("openssl");
        c.current_dir(self.dir.path());
        c
    }

    fn ca(&self, name: &str) {
        run(self
            .openssl()
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"])
            .args([
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ]));
    }

    /// A certificate `name.pem` (key `name.key`) for `subject`, signed by `ca`.
    fn leaf(&self, ca: &str, name: &str, subject: &str, ext: &str) {
        std::fs::write(self.path(&format!("{name}.ext")), format!("basicConstraints=CA:FALSE\n{ext}\n")).unwrap();
        run(self.openssl().args(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]).args([
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            subject,
        ]));
        run(self.openssl().args(["x509", "-req", "-days", "2", "-set_serial", "0x1234"]).args([
            "-in",
            &format!("{name}.csr"),
            "-CA",
            &format!("{ca}.pem"),
            "-CAkey",
            &format!("{ca}.key"),
            "-extfile",
            &format!("{name}.ext"),
            "-out",
            &format!("{name}.pem"),
        ]));
    }

    /// A client certificate for the host `id` (as its CN), signed by `ca`.
    fn host(&self, ca: &str, name: &str, id: &str) {
        self.leaf(ca, name, &format!("/CN={id}"), "extendedKeyUsage=clientAuth");
    }

    /// The agent's TLS settings with host certificate `name` (none: CA only).
    fn tls(&self, name: Option<&str>) -> ClientTls {
        ClientTls {
            ca: Some(self.path("ca.pem")),
            cert: name.map(|n| self.path(&format!("{n}.pem"))),
            key: name.map(|n| self.path(&format!("{n}.key"))),
        }
    }

    fn server_args(&self, client_ca: bool) -> Vec<String> {
        let mut v = vec![
            "--tls-cert".to_string(),
            self.path("server.pem").display().to_string(),
            "--tls-key".into(),
            self.path("server.key").display().to_string(),
        ];
        if client_ca {
            v.extend(["--client-ca".into(), self.path("ca.pem").display().to_string()]);
        }
        v
    }
}

/// curl over HTTPS trusting `ca`: a Zincati-style request (no client
/// certificate); the status code.
fn curl_https(ca: &Path, url: &str, id: &str) -> String {
    let body = json!({"client_params": {"id": id, "group": "g"}}).to_string();
    let out = run(Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
        .arg(ca)
        .args(["-H", "fleet-lock-protocol: true", "-H", "content-type: application/json", "--data", &body])
        .arg(format!("{url}/v1/pre-reboot")));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `--client-ca`: host A (certificate CN=host-a) locks, releases and reports
/// for itself, but cannot release or report for host B, whose slot stays
/// held; a client without a certificate is refused with 403 and a FleetLock
/// error body; a certificate from another CA fails the handshake. Without
/// `--client-ca` (HTTPS only, or plain HTTP) Zincati-style clients act for
/// any id, as before.
#[test]
fn with_client_ca_a_host_acts_only_for_the_id_its_certificate_names() {
    require_tool("curl");
    let pki = Pki::new();
    pki.host("ca", "host-a", "host-a");
    pki.host("ca", "host-b", "host-b");
    pki.host("rogue-ca", "rogue-b", "host-b");
    let etcd = EtcdCluster::single();
    let args = pki.server_args(true);
    let args: Vec<&str> = args.iter().map(String::as_str).chain(["--slots", "2"]).collect();
    let server = FleetServer::start(&etcd.endpoints_arg(), &args);
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let url = server.url.as_str();
    let rt = runtime();
    let a = LockClient::with_tls(url, "host-a", "g", &pki.tls(Some("host-a"))).unwrap();
    let b = LockClient::with_tls(url, "host-b", "g", &pki.tls(Some("host-b"))).unwrap();
    // Host A's certificate, claiming to be host B.
    let a_as_b = LockClient::with_tls(url, "host-b", "g", &pki.tls(Some("host-a"))).unwrap();
    let no_cert = LockClient::with_tls(url, "host-a", "g", &pki.tls(None)).unwrap();
    let rogue = LockClient::with_tls(url, "host-b", "g", &pki.tls(Some("rogue-b"))).unwrap();
    let https = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&std::fs::read(pki.path("ca.pem")).unwrap()).unwrap()])
        .build()
        .unwrap();
    rt.block_on(async {
        a.pre_reboot(Some(DIGEST_A)).await.unwrap();
        b.pre_reboot(Some(DIGEST_A)).await.unwrap();
        let forbidden = (403, kind::FORBIDDEN.to_string());
        assert_eq!(refused(a_as_b.steady_state().await), forbidden, "A releases B's slot");
        assert_eq!(refused(a_as_b.report(DIGEST_A, false, "lies", None).await), forbidden, "A reports for B");
        assert_eq!(refused(a_as_b.pre_reboot(None).await), forbidden, "A locks for B");
        let st = status(&https, url).await;
        assert_eq!(holders(&st, "g"), ["host-a", "host-b"], "B's slot is still held: {st}");
        assert_eq!(st["releases"], json!({}), "no report was recorded: {st}");
        // The refusal is FleetLock's error body, saying whose certificate it is.
        match a_as_b.steady_state().await.unwrap_err() {
            LockError::Refused { value, .. } => {
                assert!(value.contains("names \"host-a\", not \"host-b\""), "{value}")
            }
            e => panic!("{e}"),
        }
        // No certificate: refused, with the reason.
        match no_cert.steady_state().await.unwrap_err() {
            LockError::Refused { status: 403, kind, value, .. } => {
                assert_eq!(kind, kind::CERTIFICATE_REQUIRED);
                assert!(value.contains("no client certificate"), "{value}");
            }
            e => panic!("{e}"),
        }
        // A certificate from another CA: the handshake fails.
        let e = rogue.steady_state().await.unwrap_err();
        assert!(!e.is_refusal(), "{e}");
        // Each host for itself: reports and releases work.
        a.report(DIGEST_A, true, "ok", None).await.unwrap();
        a.steady_state().await.unwrap();
        b.report(DIGEST_A, true, "ok", None).await.unwrap();
        b.steady_state().await.unwrap();
        let st = status(&https, url).await;
        assert_eq!(holders(&st, "g"), Vec::<String>::new(), "{st}");
        assert_eq!(st["releases"][DIGEST_A]["healthy"], 2, "{st}");
    });
    // `fleet status` reads an https server with --ca.
    let out = run(Command::new(crate::support::hostctl_bin())
        .args(["fleet", "status", "--json", "--server", url, "--ca"])
        .arg(pki.path("ca.pem")));
    let st: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(st["releases"][DIGEST_A]["healthy"], 2);
    // curl without a client certificate (a Zincati-style client): refused.
    assert_eq!(curl_https(&pki.path("ca.pem"), url, "host-a"), "403");

    // The default: HTTPS without --client-ca, and plain HTTP, trust the body's id.
    let args = pki.server_args(false);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let tls_only = FleetServer::start(&etcd.endpoints_arg(), &args);
    assert_eq!(curl_https(&pki.path("ca.pem"), &tls_only.url, "zincati-1"), "200");
    let a_as_b = LockClient::with_tls(&tls_only.url, "host-b", "g2", &pki.tls(Some("host-a"))).unwrap();
    rt.block_on(async { a_as_b.pre_reboot(None).await.unwrap() });
    let plain = FleetServer::start(&etcd.endpoints_arg(), &[]);
    rt.block_on(async {
        let http = reqwest::Client::new();
        assert_eq!(fleetlock(&http, &plain.url, "/v1/steady-state", "host-b", "g2", None).await.unwrap(), 200);
        assert_eq!(holders(&status(&http, &plain.url).await, "g2"), Vec::<String>::new());
    });
}
