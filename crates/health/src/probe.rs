//! One probe of one backend: connect, maybe TLS, maybe a request, within the
//! timeout. A probe never fails with an error: it ends in an [`Outcome`]
//! whose reason is what an operator reads in the log, and, when it failed, a
//! [`ProbeFailure`] whose [`ProbeFailure::kind`] labels
//! `tandem_health_check_failures_total`.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::time::{Duration, Instant};

use tandem_config::{Health, HealthKind, ProxyVersion};
use tandem_core::BackendAddress;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

use crate::error::io_text;
use crate::http::{self, HttpError};
use crate::tls::TlsProbe;
use crate::HealthError;

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `failure.is_none()`.
    pub ok: bool,
    /// Why it failed (`status 500`, `connection refused`, …: the failure's
    /// text) or, when it succeeded, what was seen (`status 200`, `connected`).
    pub reason: String,
    pub failure: Option<ProbeFailure>,
    /// From the start of the connect to the end of the probe.
    pub duration: Duration,
}

/// Where a probe was when its time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Binding,
    Connecting,
    Handshake,
    Response,
    Reply,
}

impl Phase {
    fn as_str(self) -> &'static str {
        match self {
            Phase::Binding => "while binding a socket",
            Phase::Connecting => "while connecting",
            Phase::Handshake => "in the tls handshake",
            Phase::Response => "waiting for the response",
            Phase::Reply => "waiting for a reply",
        }
    }
}

/// Why a probe failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeFailure {
    #[error("connection refused")]
    Refused,
    #[error("timed out after {} {}", humantime::format_duration(*after), phase.as_str())]
    Timeout { after: Duration, phase: Phase },
    /// The backend closed the connection before answering.
    #[error("{step}: connection closed by the backend")]
    Closed { step: &'static str },
    /// Any other OS error, at `step` (`connect`, `send`, `receive`, `response`, `bind`).
    #[error("{step}: {text}")]
    Io { step: &'static str, text: String },
    /// The TLS handshake or session failed (rustls's words).
    #[error("tls: {0}")]
    Tls(String),
    /// An HTTP status not in `expect_status`.
    #[error("status {0}")]
    Status(u16),
    /// The HTTP body lacks `expect_body`.
    #[error("body does not contain {0:?}")]
    Body(String),
    /// The UDP reply lacks `expect`.
    #[error("reply does not contain {0:?}")]
    Reply(String),
    /// Not an HTTP response this parser accepts.
    #[error("bad response: {0}")]
    Malformed(String),
}

impl ProbeFailure {
    /// Every value of [`ProbeFailure::kind`], for metrics that start at zero.
    pub const KINDS: [&'static str; 9] = [
        "refused",
        "timeout",
        "closed",
        "io",
        "tls",
        "status",
        "body",
        "reply",
        "malformed",
    ];

    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ProbeFailure::Refused => "refused",
            ProbeFailure::Timeout { .. } => "timeout",
            ProbeFailure::Closed { .. } => "closed",
            ProbeFailure::Io { .. } => "io",
            ProbeFailure::Tls(_) => "tls",
            ProbeFailure::Status(_) => "status",
            ProbeFailure::Body(_) => "body",
            ProbeFailure::Reply(_) => "reply",
            ProbeFailure::Malformed(_) => "malformed",
        }
    }
}

/// Probes backends as one service's `health` section says. Built once (TLS
/// files are read then), shared by all of the service's backends.
#[derive(Debug, Clone)]
pub struct Prober {
    kind: Kind,
    timeout: Duration,
    port: Option<u16>,
}

#[derive(Debug, Clone)]
enum Kind {
    None,
    Tcp,
    Http(HttpCheck),
    Https(HttpCheck, TlsProbe),
    Udp(UdpCheck),
}

#[derive(Debug, Clone)]
struct HttpCheck {
    path: String,
    host: Option<String>,
    expect_status: Vec<u16>,
    expect_body: Option<String>,
}

#[derive(Debug, Clone)]
struct UdpCheck {
    send: Vec<u8>,
    expect: Option<String>,
}

/// Where a probe was when its time ran out, for the timeout reason.
const CONNECTING: u8 = 0;
const HANDSHAKE: u8 = 1;
const RESPONSE: u8 = 2;

impl Prober {
    /// Reads the TLS files of an `https` check; a file that cannot be used is
    /// an error naming it.
    pub fn new(health: &Health) -> Result<Self, HealthError> {
        let kind = match health.kind {
            HealthKind::None => Kind::None,
            HealthKind::Tcp => Kind::Tcp,
            HealthKind::Http => Kind::Http(HttpCheck::new(health)?),
            HealthKind::Https => Kind::Https(HttpCheck::new(health)?, TlsProbe::new(&health.tls)?),
            HealthKind::Udp => Kind::Udp(UdpCheck {
                send: health.send.clone().unwrap_or_default().into_bytes(),
                expect: health.expect.clone(),
            }),
        };
        Ok(Prober {
            kind,
            timeout: health.timeout,
            port: health.port,
        })
    }

    /// False for `type: none`: nothing to run.
    pub fn is_active(&self) -> bool {
        !matches!(self.kind, Kind::None)
    }

    /// Where the probe goes: the backend's address, with the `port` override.
    pub fn target(&self, address: BackendAddress) -> SocketAddr {
        let mut target = address.socket_addr();
        if let Some(port) = self.port {
            target.set_port(port);
        }
        target
    }

    /// Probes one backend; takes at most the configured timeout.
    pub async fn probe(&self, address: BackendAddress) -> Outcome {
        self.probe_with(address, None).await
    }

    /// Probes one backend that takes a PROXY header of `proxy` on its
    /// traffic port: a probe to that port (no `port` override) starts with a
    /// `LOCAL` header, as a backend that requires the header expects.
    pub async fn probe_with(
        &self,
        address: BackendAddress,
        proxy: Option<ProxyVersion>,
    ) -> Outcome {
        let header = match (proxy, self.port) {
            (Some(version), None) => {
                let mut bytes = Vec::with_capacity(16);
                let version = match version {
                    ProxyVersion::V1 => tandem_proxy_protocol::Version::V1,
                    ProxyVersion::V2 => tandem_proxy_protocol::Version::V2,
                };
                tandem_proxy_protocol::encode(
                    version,
                    &tandem_proxy_protocol::Header::local(),
                    &mut bytes,
                );
                bytes
            }
            _ => Vec::new(),
        };
        let header = header.as_slice();
        let target = self.target(address);
        let start = Instant::now();
        let phase = AtomicU8::new(CONNECTING);
        let result = match &self.kind {
            Kind::None => Ok("no active check".to_owned()),
            // Without `expect`, silence until the timeout is success: that
            // probe bounds itself.
            Kind::Udp(check) if check.expect.is_none() => {
                self.udp_silence(check, target, header).await
            }
            kind => {
                let run = self.run(kind, target, &phase, header);
                match tokio::time::timeout(self.timeout, run).await {
                    Ok(result) => result,
                    Err(_) => Err(ProbeFailure::Timeout {
                        after: self.timeout,
                        phase: match (kind, phase.load(Relaxed)) {
                            (Kind::Udp(_), _) => Phase::Reply,
                            (_, CONNECTING) => Phase::Connecting,
                            (_, HANDSHAKE) => Phase::Handshake,
                            _ => Phase::Response,
                        },
                    }),
                }
            }
        };
        let duration = start.elapsed();
        match result {
            Ok(reason) => Outcome {
                ok: true,
                reason,
                failure: None,
                duration,
            },
            Err(failure) => Outcome {
                ok: false,
                reason: failure.to_string(),
                failure: Some(failure),
                duration,
            },
        }
    }

    async fn run(
        &self,
        kind: &Kind,
        target: SocketAddr,
        phase: &AtomicU8,
        header: &[u8],
    ) -> Result<String, ProbeFailure> {
        match kind {
            Kind::None => Ok("no active check".to_owned()),
            Kind::Tcp => {
                let mut stream = connect(target).await?;
                if !header.is_empty() {
                    stream
                        .write_all(header)
                        .await
                        .map_err(|e| io_reason("send", &e))?;
                }
                drop(stream);
                Ok("connected".to_owned())
            }
            Kind::Http(check) => {
                let mut stream = connect(target).await?;
                phase.store(RESPONSE, Relaxed);
                let request = [header, &check.request(target, None)].concat();
                let response = http::exchange(&mut stream, &request)
                    .await
                    .map_err(|e| http_reason(&e));
                let _ = stream.shutdown().await;
                check.judge(response?)
            }
            Kind::Https(check, tls) => {
                let mut tcp = connect(target).await?;
                if !header.is_empty() {
                    tcp.write_all(header)
                        .await
                        .map_err(|e| io_reason("send", &e))?;
                }
                phase.store(HANDSHAKE, Relaxed);
                let name = tls.server_name(target.ip());
                let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                let mut stream = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| io_reason("tls handshake", &e))?;
                phase.store(RESPONSE, Relaxed);
                let request = check.request(target, tls.server_name.as_ref());
                let response = http::exchange(&mut stream, &request)
                    .await
                    .map_err(|e| http_reason(&e));
                // close_notify, so the server sees an orderly TLS close rather
                // than "EOF" (kube-apiserver logs those as handshake errors).
                let _ = stream.shutdown().await;
                check.judge(response?)
            }
            Kind::Udp(check) => {
                let socket = udp_connect(target).await?;
                socket
                    .send(&[header, &check.send].concat())
                    .await
                    .map_err(|e| io_reason("send", &e))?;
                let expect = check.expect.as_deref().unwrap_or("");
                let mut buf = vec![0u8; 64 * 1024];
                let n = socket
                    .recv(&mut buf)
                    .await
                    .map_err(|e| io_reason("receive", &e))?;
                if contains(&buf[..n], expect.as_bytes()) {
                    Ok(format!("reply contains {expect:?}"))
                } else {
                    Err(ProbeFailure::Reply(expect.to_owned()))
                }
            }
        }
    }

    /// UDP without `expect`: up unless the port is refused (ICMP port
    /// unreachable, seen as ECONNREFUSED on a connected socket) within the timeout.
    async fn udp_silence(
        &self,
        check: &UdpCheck,
        target: SocketAddr,
        header: &[u8],
    ) -> Result<String, ProbeFailure> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let socket = tokio::time::timeout_at(deadline, udp_connect(target))
            .await
            .map_err(|_| ProbeFailure::Timeout {
                after: self.timeout,
                phase: Phase::Binding,
            })??;
        socket
            .send(&[header, &check.send].concat())
            .await
            .map_err(|e| io_reason("send", &e))?;
        let mut buf = [0u8; 1];
        match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
            Ok(Ok(_)) => Ok("reply received".to_owned()),
            Ok(Err(e)) => Err(io_reason("receive", &e)),
            Err(_) => Ok(format!(
                "no refusal within {}",
                humantime::format_duration(self.timeout)
            )),
        }
    }
}

impl HttpCheck {
    fn new(health: &Health) -> Result<Self, HealthError> {
        let clean = |key: &'static str, value: &str| {
            if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
                Err(HealthError::RequestText {
                    key,
                    value: value.to_owned(),
                })
            } else {
                Ok(())
            }
        };
        clean("path", &health.path)?;
        if let Some(host) = &health.host {
            clean("host", host)?;
        }
        Ok(HttpCheck {
            path: health.path.clone(),
            host: health.host.clone(),
            expect_status: health.expect_status.clone(),
            expect_body: health.expect_body.clone(),
        })
    }

    /// Host header: `host` if set, else the TLS server name, else the address probed.
    fn request(
        &self,
        target: SocketAddr,
        server_name: Option<&rustls_pki_types::ServerName<'static>>,
    ) -> Vec<u8> {
        let host = match (&self.host, server_name) {
            (Some(host), _) => host.clone(),
            (None, Some(rustls_pki_types::ServerName::DnsName(name))) => {
                format!("{}:{}", name.as_ref(), target.port())
            }
            _ => target.to_string(),
        };
        http::request(&self.path, &host)
    }

    fn judge(&self, response: http::Response) -> Result<String, ProbeFailure> {
        let status = response.status;
        if !self.expect_status.contains(&status) {
            return Err(ProbeFailure::Status(status));
        }
        if let Some(want) = &self.expect_body {
            if !contains(&response.body, want.as_bytes()) {
                return Err(ProbeFailure::Body(want.clone()));
            }
        }
        Ok(format!("status {status}"))
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

async fn connect(target: SocketAddr) -> Result<TcpStream, ProbeFailure> {
    let stream = TcpStream::connect(target)
        .await
        .map_err(|e| io_reason("connect", &e))?;
    // A request is one small write: send it now rather than after Nagle's delay.
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

async fn udp_connect(target: SocketAddr) -> Result<UdpSocket, ProbeFailure> {
    let local: SocketAddr = if target.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)
        .await
        .map_err(|e| io_reason("bind", &e))?;
    // Connected, so that an ICMP port unreachable comes back as ECONNREFUSED
    // and only the backend's own replies are received.
    socket
        .connect(target)
        .await
        .map_err(|e| io_reason("connect", &e))?;
    Ok(socket)
}

fn http_reason(e: &HttpError) -> ProbeFailure {
    match e {
        HttpError::Io(e) => io_reason("response", e),
        HttpError::Malformed(m) => ProbeFailure::Malformed(m.to_string()),
    }
}

/// A short lowercase reason: the rustls error when there is one, else the
/// OS error without its number.
pub(crate) fn io_reason(step: &'static str, e: &io::Error) -> ProbeFailure {
    if let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return ProbeFailure::Tls(tls.to_string());
    }
    match e.kind() {
        io::ErrorKind::ConnectionRefused => ProbeFailure::Refused,
        io::ErrorKind::UnexpectedEof => ProbeFailure::Closed { step },
        _ => ProbeFailure::Io {
            step,
            text: io_text(e),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_reasons_are_short_and_lowercase() {
        let refused = io::Error::from_raw_os_error(111);
        assert_eq!(io_reason("connect", &refused), ProbeFailure::Refused);
        assert_eq!(
            io_reason("connect", &refused).to_string(),
            "connection refused"
        );
        let reset = io::Error::from_raw_os_error(104);
        assert_eq!(
            io_reason("response", &reset).to_string(),
            "response: connection reset by peer"
        );
        let tls = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert_eq!(
            io_reason("tls handshake", &tls).to_string(),
            "tls: invalid peer certificate: UnknownIssuer"
        );
    }

    #[test]
    fn contains_finds_substrings() {
        assert!(contains(b"ok", b""));
        assert!(contains(b"[+]ping ok", b"ok"));
        assert!(!contains(b"o", b"ok"));
    }
}
