//! Test servers on 127.0.0.1 and helpers shared by the integration tests.
//! Every server here listens on loopback only and every wait is bounded.

#![allow(dead_code)]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::crypto::ring;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tandem_config::{Health, HealthKind, InitialState, Tls};
use tandem_core::{Backend, BackendAddress};
use tandem_health::Transition;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The longest any test waits for anything.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn health(kind: HealthKind) -> Health {
    Health {
        kind,
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(500),
        rise: NonZeroU32::new(2).unwrap(),
        fall: NonZeroU32::new(2).unwrap(),
        initial: if kind == HealthKind::None {
            InitialState::Up
        } else {
            InitialState::Down
        },
        port: None,
        path: "/readyz".to_owned(),
        expect_status: vec![200],
        expect_body: None,
        host: None,
        send: None,
        expect: None,
        tls: Tls {
            verify: false,
            ca_file: None,
            server_name: None,
            cert_file: None,
            key_file: None,
        },
        eject_after: None,
    }
}

pub fn backend(addr: SocketAddr) -> Arc<Backend> {
    Arc::new(Backend::new(
        BackendAddress(addr),
        None,
        NonZeroU32::MIN,
        false,
        false,
    ))
}

pub fn n(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).unwrap()
}

/// Polls `cond` every 5 ms until it holds; panics after [`WAIT`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The next transition, or a panic after [`WAIT`].
pub async fn next_transition(rx: &mut broadcast::Receiver<Transition>) -> Transition {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("timed out waiting for a transition")
        .expect("transition channel closed or lagged")
}

pub async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn closed_tcp_port() -> SocketAddr {
    let l = std::net::TcpListener::bind((LOOPBACK, 0)).unwrap();
    l.local_addr().unwrap()
}

pub fn closed_udp_port() -> SocketAddr {
    let s = std::net::UdpSocket::bind((LOOPBACK, 0)).unwrap();
    s.local_addr().unwrap()
}

/// A TCP listener that accepts and holds connections without ever sending a byte.
pub async fn silent_tcp() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    (addr, task)
}

/// A listener whose accept queue is full, so that a new connect hangs in
/// SYN retransmits: a loopback address that never answers. Returns the
/// address and what must stay alive.
pub async fn unanswering_tcp() -> (SocketAddr, (TcpListener, Vec<TcpStream>)) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind((LOOPBACK, 0).into()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut held = Vec::new();
    for _ in 0..64 {
        match tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await {
            Ok(Ok(s)) => held.push(s),
            Ok(Err(e)) => panic!("filling the accept queue: {e}"),
            Err(_) => return (addr, (listener, held)),
        }
    }
    panic!("the accept queue of a listen(0) socket never filled");
}

/// A UDP server: replies `reply` to every datagram (or nothing when `None`).
pub async fn udp_server(
    reply: Option<&'static [u8]>,
) -> (SocketAddr, Arc<AtomicUsize>, JoinHandle<()>) {
    let socket = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    let addr = socket.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&received);
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((_, from)) = socket.recv_from(&mut buf).await {
            count.fetch_add(1, SeqCst);
            if let Some(reply) = reply {
                let _ = socket.send_to(reply, from).await;
            }
        }
    });
    (addr, received, task)
}

/// What an HTTP test server answers; changeable while it runs.
#[derive(Debug)]
pub struct HttpState {
    pub status: AtomicU16,
    pub body: Mutex<String>,
    /// Every request head received, in order.
    pub requests: Mutex<Vec<String>>,
    /// TLS connections the client closed with close_notify (a clean EOF).
    pub clean_closes: AtomicUsize,
    /// TLS handshakes that failed on the server side.
    pub handshake_errors: Mutex<Vec<String>>,
}

impl HttpState {
    pub fn new(status: u16, body: &str) -> Arc<Self> {
        Arc::new(HttpState {
            status: AtomicU16::new(status),
            body: Mutex::new(body.to_owned()),
            requests: Mutex::new(Vec::new()),
            clean_closes: AtomicUsize::new(0),
            handshake_errors: Mutex::new(Vec::new()),
        })
    }

    pub fn set(&self, status: u16) {
        self.status.store(status, SeqCst);
    }

    pub fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

async fn serve_http<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    state: &HttpState,
) -> std::io::Result<()> {
    let mut req = Vec::new();
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        req.extend_from_slice(&buf[..n]);
    }
    state
        .requests
        .lock()
        .unwrap()
        .push(String::from_utf8_lossy(&req).into_owned());
    let status = state.status.load(SeqCst);
    let body = state.body.lock().unwrap().clone();
    let response = format!(
        "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(response.as_bytes()).await?;
    s.flush().await
}

/// A plain HTTP server answering every request from `state`.
pub async fn http_server(state: Arc<HttpState>) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let _ = serve_http(&mut s, &state).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (addr, task)
}

/// A test PKI: a CA, a server leaf for `kubernetes` and 127.0.0.1, a client
/// leaf, and a second CA that signed nothing here. PEM files in a temp dir.
pub struct Pki {
    pub dir: tempfile::TempDir,
    pub ca_file: PathBuf,
    pub other_ca_file: PathBuf,
    pub client_cert_file: PathBuf,
    pub client_key_file: PathBuf,
    pub server_chain: Vec<CertificateDer<'static>>,
    pub server_key_der: Vec<u8>,
    pub ca_der: CertificateDer<'static>,
}

impl Pki {
    pub fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
            KeyUsagePurpose, SanType,
        };
        let ca = |name: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, name);
            p.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let key = KeyPair::generate().unwrap();
            let cert = p.self_signed(&key).unwrap();
            (cert, key)
        };
        let (ca_cert, ca_key) = ca("tandem test ca");
        let (other_ca, _) = ca("some other ca");

        let mut server = CertificateParams::new(vec!["kubernetes".to_owned()]).unwrap();
        server.subject_alt_names.push(SanType::IpAddress(LOOPBACK));
        server
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate().unwrap();
        let server_cert = server.signed_by(&server_key, &ca_cert, &ca_key).unwrap();

        let mut client = CertificateParams::new(Vec::<String>::new()).unwrap();
        client
            .distinguished_name
            .push(DnType::CommonName, "tandem-health");
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_key = KeyPair::generate().unwrap();
        let client_cert = client.signed_by(&client_key, &ca_cert, &ca_key).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        Pki {
            ca_file: write("ca.crt", ca_cert.pem()),
            other_ca_file: write("other-ca.crt", other_ca.pem()),
            client_cert_file: write("client.crt", client_cert.pem()),
            client_key_file: write("client.key", client_key.serialize_pem()),
            server_chain: vec![server_cert.der().clone()],
            server_key_der: server_key.serialize_der(),
            ca_der: ca_cert.der().clone(),
            dir,
        }
    }

    /// A rustls server config; with `require_client_cert`, clients must
    /// present a certificate signed by the test CA.
    pub fn server_config(&self, require_client_cert: bool) -> Arc<ServerConfig> {
        let provider = Arc::new(ring::default_provider());
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if require_client_cert {
            let mut roots = RootCertStore::empty();
            roots.add(self.ca_der.clone()).unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key_der.clone()));
        Arc::new(
            builder
                .with_single_cert(self.server_chain.clone(), key)
                .unwrap(),
        )
    }
}

/// An HTTPS server (tokio-rustls) answering every request from `state`.
pub async fn https_server(
    config: Arc<ServerConfig>,
    state: Arc<HttpState>,
) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let task = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let state = Arc::clone(&state);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let mut tls = match acceptor.accept(s).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        state.handshake_errors.lock().unwrap().push(e.to_string());
                        return;
                    }
                };
                if serve_http(&mut tls, &state).await.is_err() {
                    return;
                }
                // Wait for the client's close: Ok(0) only after a close_notify.
                let mut rest = [0u8; 64];
                if let Ok(Ok(0)) =
                    tokio::time::timeout(Duration::from_secs(2), tls.read(&mut rest)).await
                {
                    state.clean_closes.fetch_add(1, SeqCst);
                }
                let _ = tls.shutdown().await;
            });
        }
    });
    (addr, task)
}
