//! HTTP and HTTPS test servers, and a test PKI made with rcgen: stand-ins for
//! kube-apiservers (`/readyz` switchable between 200 and 500, `/version` for
//! kubectl). Loopback only; every wait bounded.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::crypto::ring;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// What `GET /version` answers: enough for `kubectl version`.
const VERSION: &str =
    r#"{"major":"1","minor":"31","gitVersion":"v1.31.0-tandem-test","platform":"linux/amd64"}"#;

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
    let (status, body) = if req.starts_with(b"GET /version ") || req.starts_with(b"GET /version?") {
        (200, VERSION.to_owned())
    } else {
        (
            state.status.load(SeqCst),
            state.body.lock().unwrap().clone(),
        )
    };
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
#[allow(missing_debug_implementations)]
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
    #[allow(clippy::new_without_default)]
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

/// An HTTPS server (tokio-rustls) on 127.0.0.1 answering every request from `state`.
pub async fn https_server(
    config: Arc<ServerConfig>,
    state: Arc<HttpState>,
) -> (SocketAddr, JoinHandle<()>) {
    https_server_on(SocketAddr::new(LOOPBACK, 0), config, state).await
}

/// The same server on `addr` (e.g. a namespace host's address).
pub async fn https_server_on(
    addr: SocketAddr,
    config: Arc<ServerConfig>,
    state: Arc<HttpState>,
) -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind(addr).await.unwrap();
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
