//! TLS between nodes, over real nodes on loopback: a TLS cluster forms and carries calls on every
//! lane, a plaintext node and a node certified by another CA are refused, and a packet capture
//! shows that neither a call's payload nor the cookie crosses the wire in the clear.
//!
//! Certificates are made here, per test, with rcgen: no key is ever committed.

mod support;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use support::*;
use switchboard::{Bytes, CallOptions, ClusterEvent, Node, NodeBuilder, NodeConfig, eventually};

const DEADLINE: Duration = Duration::from_secs(10);

/// A CA and one node certificate signed by it (naming `switchboard`, as every node's must), as
/// PEM files in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "switchboard test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let mut node_params = CertificateParams::new(vec!["switchboard".to_owned()]).unwrap();
        node_params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let node_key = KeyPair::generate().unwrap();
        let node = node_params.signed_by(&node_key, &ca).unwrap();
        std::fs::write(dir.path().join("ca.pem"), ca.pem()).unwrap();
        std::fs::write(dir.path().join("node.pem"), node.pem()).unwrap();
        std::fs::write(dir.path().join("node-key.pem"), node_key.serialize_pem()).unwrap();
        Self { dir }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// `config` with this PKI's files as its TLS settings.
    fn configure(&self, config: NodeConfig) -> NodeConfig {
        NodeConfig {
            tls_cert: Some(self.path("node.pem")),
            tls_key: Some(self.path("node-key.pem")),
            tls_ca: Some(self.path("ca.pem")),
            ..config
        }
    }
}

/// A node hosting `echo`, with TLS from `pki` if given.
async fn node(name: &str, seeds: &[&str], pki: Option<&Pki>) -> Node {
    let mut config = config(name, seeds);
    if let Some(pki) = pki {
        config = pki.configure(config);
    }
    started(config, name).await
}

/// Starts a node hosting `echo`, and `where`, which answers with the name of the thread that
/// served it (the bulk thread's is `bulk <node>`).
async fn started(config: NodeConfig, name: &str) -> Node {
    let thread_name = |_request: switchboard::Request| async {
        let name = std::thread::current().name().unwrap_or("").to_owned();
        Ok::<_, switchboard::ServiceError>(Bytes::from(name))
    };
    NodeBuilder::new("test", config, cookie())
        .service("echo", echo(name))
        .service("where", thread_name)
        .start()
        .await
        .unwrap()
}

/// Two TLS nodes that see each other up.
async fn tls_pair(pki: &Pki) -> (Node, Node) {
    let a = node("a@test", &[], Some(pki)).await;
    let b = node("b@test", &[a.address()], Some(pki)).await;
    assert!(
        eventually(DEADLINE, || async {
            sees_up(&a, &["b@test"]) && sees_up(&b, &["a@test"])
        })
        .await,
        "a sees {:?}, b sees {:?}",
        a.nodes(),
        b.nodes()
    );
    (a, b)
}

#[tokio::test]
async fn two_tls_nodes_link_and_call_each_other_on_every_lane() {
    let pki = Pki::new();
    let (a, b) = tls_pair(&pki).await;
    let options = || CallOptions::default().timeout(DEADLINE);
    for (caller, callee) in [(&a, "b@test"), (&b, "a@test")] {
        let small = caller
            .call_on(callee, "echo", "ping", "hello", options())
            .await
            .unwrap();
        assert_eq!(small, Bytes::from(format!("{callee}|hello")));
        // Over 64 KiB: the bulk lane, on its own TLS connection accepted on the bulk thread.
        let payload = vec![7u8; 1 << 20];
        let large = caller
            .call_on(callee, "echo", "ping", payload.clone(), options())
            .await
            .unwrap();
        assert_eq!(&large[..callee.len() + 1], format!("{callee}|").as_bytes());
        assert_eq!(&large[callee.len() + 1..], &payload[..]);
        let thread = caller
            .call_on(callee, "where", "run", vec![0u8; 1 << 17], options())
            .await
            .unwrap();
        assert_eq!(thread, Bytes::from(format!("bulk {callee}")));
    }
}

/// Waits until `node` has refused a peer's handshake (TLS or cookie).
async fn refusal(events: &mut tokio::sync::broadcast::Receiver<ClusterEvent>) {
    let refused = tokio::time::timeout(DEADLINE, async {
        loop {
            if let Ok(ClusterEvent::HandshakeRefused { .. }) = events.recv().await {
                return;
            }
        }
    })
    .await;
    assert!(refused.is_ok(), "the TLS node published a refusal");
}

/// Asserts that for a while, no node of `nodes` sees any other.
async fn nobody_links(nodes: &[&Node]) {
    let linked = eventually(Duration::from_secs(1), || async {
        nodes.iter().any(|n| n.nodes().len() > 1)
    })
    .await;
    assert!(
        !linked,
        "{:?}",
        nodes.iter().map(|n| n.nodes()).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_plaintext_node_and_a_tls_node_never_link_in_either_direction() {
    let pki = Pki::new();
    let secure = node("secure@test", &[], Some(&pki)).await;
    let mut events = secure.subscribe();
    // The plaintext node dials the TLS node (refused at TLS), and the TLS node, seeded with
    // the plaintext one, dials it (its ClientHello is no HTTP/2).
    let plain = node("plain@test", &[secure.address()], None).await;
    let secure_dialer = node("secure-dialer@test", &[plain.address()], Some(&pki)).await;
    refusal(&mut events).await;
    nobody_links(&[&plain, &secure_dialer]).await;
    assert!(!sees_up(&secure, &["plain@test"]));
    assert!(!sees_up(&plain, &["secure@test"]));
}

#[tokio::test]
async fn a_node_certified_by_another_ca_is_refused() {
    let pki = Pki::new();
    let other = Pki::new();
    let (a, b) = tls_pair(&pki).await;
    let mut events = a.subscribe();
    // A stranger trusting only its own CA refuses a's certificate, and a sees the handshake end.
    let stranger = node("stranger@test", &[a.address()], Some(&other)).await;
    refusal(&mut events).await;
    nobody_links(&[&stranger]).await;
    assert_eq!(a.nodes().len(), 2, "{:?}", a.nodes());
    assert_eq!(b.nodes().len(), 2, "{:?}", b.nodes());
}

#[tokio::test]
async fn the_acceptor_checks_the_dialers_certificate_too() {
    let pki = Pki::new();
    let other = Pki::new();
    let a = node("a@test", &[], Some(&pki)).await;
    let mut events = a.subscribe();
    // It trusts the cluster's CA, so it accepts a's certificate; its own is another CA's.
    let impostor = NodeConfig {
        tls_ca: Some(pki.path("ca.pem")),
        ..other.configure(config("impostor@test", &[a.address()]))
    };
    let impostor = started(impostor, "impostor@test").await;
    refusal(&mut events).await;
    nobody_links(&[&a, &impostor]).await;
}

#[tokio::test]
async fn tls_settings_come_all_three_or_none() {
    let pki = Pki::new();
    let half = NodeConfig {
        tls_ca: None,
        ..pki.configure(config("half@test", &[]))
    };
    let error = NodeBuilder::new("test", half, cookie())
        .start()
        .await
        .unwrap_err();
    assert!(error.to_string().contains("SWITCHBOARD_TLS_CA"), "{error}");
    // A key file that is no key: the error names the file, never its contents.
    std::fs::write(pki.path("node-key.pem"), "not a key at all").unwrap();
    let error = NodeBuilder::new("test", pki.configure(config("bad@test", &[])), cookie())
        .start()
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("node-key.pem"), "{error}");
    assert!(!error.contains("not a key at all"), "{error}");
}

/// A running `tcpdump` writing loopback packets of some ports to a file.
struct Capture {
    child: std::process::Child,
    file: PathBuf,
}

impl Capture {
    /// Starts capturing the traffic of `ports`, or says why it cannot.
    fn start(dir: &Path, ports: &[u16]) -> Result<Self, String> {
        let file = dir.join("capture.pcap");
        let filter = ports
            .iter()
            .map(|p| format!("port {p}"))
            .collect::<Vec<_>>()
            .join(" or ");
        let mut child = Command::new("tcpdump")
            // A large buffer: under a busy test run tcpdump may be scheduled late, and a packet
            // dropped from a small one would go unchecked.
            .args([
                "-i",
                "lo",
                "-U",
                "--immediate-mode",
                "-B",
                "65536",
                "-s",
                "0",
                "-w",
            ])
            .arg(&file)
            .arg(&filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("tcpdump cannot be run: {e}"))?;
        // tcpdump says "listening on lo" once the capture is open.
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            if stderr.read_line(&mut line).unwrap_or(0) == 0 {
                let _ = child.wait();
                return Err("tcpdump ended without capturing (no permission?)".into());
            }
            if line.contains("listening on") {
                break;
            }
        }
        // Keep draining stderr so tcpdump never blocks on it.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        Ok(Self { child, file })
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.file).unwrap_or_default()
    }

    /// Stops the capture and returns everything it wrote.
    fn finish(mut self) -> Vec<u8> {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        self.bytes()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port that was free a moment ago (the OS hands out ports in turn, so it is not
/// handed out again at once).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// [`node`] listening on `port`.
async fn node_on(name: &str, port: u16, seeds: &[&str], pki: Option<&Pki>) -> Node {
    let mut config = NodeConfig {
        listen: format!("127.0.0.1:{port}"),
        ..config(name, seeds)
    };
    if let Some(pki) = pki {
        config = pki.configure(config);
    }
    started(config, name).await
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Captures two nodes forming a link and exchanging a small and a large call that carry
/// `marker`; returns the capture, or `None` (with the reason printed) where tcpdump is missing
/// or not permitted.
async fn capture_exchange(pki: Option<&Pki>, marker: &str) -> Option<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    // Both listeners' ports are known before either node starts, so the capture sees every
    // connection of the pair (each dials the other) from its first byte, and nothing of other
    // processes on this machine.
    let [port_a, port_b] = [free_port(), free_port()];
    let capture = match Capture::start(dir.path(), &[port_a, port_b]) {
        Ok(capture) => capture,
        Err(reason) => {
            eprintln!("skipped: {reason}");
            return None;
        }
    };
    let a = node_on("a@test", port_a, &[], pki).await;
    let address = a.address().to_owned();
    let b = node_on("b@test", port_b, &[&address], pki).await;
    assert!(
        eventually(DEADLINE, || async {
            sees_up(&a, &["b@test"]) && sees_up(&b, &["a@test"])
        })
        .await
    );
    let options = || CallOptions::default().timeout(DEADLINE);
    let small = b
        .call_on("a@test", "echo", "ping", marker.to_owned(), options())
        .await
        .unwrap();
    assert!(contains(&small, marker.as_bytes()));
    let large = marker.repeat((128 * 1024) / marker.len());
    b.call_on("a@test", "echo", "ping", large.clone(), options())
        .await
        .unwrap();
    // Wait until the capture holds at least the large call's size, so what follows reads a
    // capture of the exchange, not of its start.
    assert!(
        eventually(DEADLINE, || async { capture.bytes().len() > large.len() }).await,
        "the capture saw the exchange: {} bytes",
        capture.bytes().len()
    );
    Some(capture.finish())
}

#[tokio::test]
async fn with_tls_neither_payloads_nor_the_cookie_cross_the_wire_in_the_clear() {
    let pki = Pki::new();
    let marker = "MARKER-7f3c2a9e-switchboard";
    let Some(capture) = capture_exchange(Some(&pki), marker).await else {
        return;
    };
    assert!(!contains(&capture, marker.as_bytes()), "the marker leaked");
    assert!(!contains(&capture, COOKIE.as_bytes()), "the cookie leaked");
}

#[tokio::test]
async fn without_tls_payloads_are_visible_but_the_cookie_is_never_sent() {
    let marker = "MARKER-1b8d4e60-switchboard";
    let Some(capture) = capture_exchange(None, marker).await else {
        return;
    };
    // The capture works: plaintext payloads are in it.
    assert!(
        contains(&capture, marker.as_bytes()),
        "the capture saw the call"
    );
    assert!(
        !contains(&capture, COOKIE.as_bytes()),
        "the cookie was sent"
    );
}
