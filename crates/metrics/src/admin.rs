//! The admin HTTP endpoint: a deliberately small HTTP/1.1 server (one request
//! per connection, `Connection: close`) for Prometheus, health probes, the
//! status page and the runtime API. Bodies are tiny; anything large or slow is
//! cut off by size and time limits so the endpoint cannot be used to pin memory.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{Encoder, Registry, TextEncoder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::status::Status;

/// What the admin endpoint asks of the running process.
pub trait AdminApi: Send + Sync + 'static {
    /// `Ok` once the config is loaded and every listener is bound; else why not.
    fn ready(&self) -> Result<(), String>;
    fn status(&self) -> Status;
    /// Starts (`true`) or ends an operator's drain of one backend.
    fn set_draining(&self, service: &str, backend: &str, draining: bool) -> Result<(), ApiError>;
    /// Reloads the config file; `Ok` carries a one-line summary of the change.
    fn reload(&self) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>>;
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
}

/// Who may call the mutating endpoints (drain, enable, reload).
#[derive(Debug, Clone)]
pub enum Access {
    /// Anyone who can connect: only used when the admin listener is on loopback.
    Loopback,
    /// Only requests with `Authorization: Bearer <token>`.
    Token(String),
    /// Nobody: the listener is not on loopback and no token is configured.
    ReadOnly,
}

impl Access {
    /// The rule for an admin listener on `listen` with an optional token.
    pub fn for_listener(listen: SocketAddr, token: Option<String>) -> Self {
        match token {
            Some(t) => Access::Token(t),
            None if listen.ip().is_loopback() => Access::Loopback,
            None => Access::ReadOnly,
        }
    }
}

const MAX_REQUEST: usize = 16 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
pub struct AdminServer<A: AdminApi> {
    pub listener: TcpListener,
    pub registry: Registry,
    pub api: Arc<A>,
    pub access: Access,
}

impl<A: AdminApi> AdminServer<A> {
    pub async fn run(self, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        let me = Arc::new(self);
        if let Ok(addr) = me.listener.local_addr() {
            info!(listen = %addr, "admin endpoint listening");
        }
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                a = me.listener.accept() => a,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let me = Arc::clone(&me);
                    tracker.spawn(async move {
                        if let Err(e) =
                            tokio::time::timeout(REQUEST_TIMEOUT, me.serve(stream)).await
                        {
                            debug!(client = %peer, error = %e, "admin request timed out");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        tracker.close();
        let _ = tokio::time::timeout(REQUEST_TIMEOUT, tracker.wait()).await;
    }

    async fn serve(&self, mut stream: TcpStream) {
        let response = match read_request(&mut stream).await {
            Ok(request) => self.route(&request).await,
            Err(message) => Response::text(400, message),
        };
        let _ = stream.write_all(&response.to_bytes()).await;
        let _ = stream.shutdown().await;
    }

    async fn route(&self, req: &Request) -> Response {
        let path = req.path.split('?').next().unwrap_or("");
        let query = req.path.split_once('?').map_or("", |(_, q)| q);
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (req.method.as_str(), segments.as_slice()) {
            ("GET", ["metrics"]) => self.metrics(),
            ("GET", ["healthz"]) => Response::text(200, "ok\n"),
            ("GET", ["readyz"]) => match self.api.ready() {
                Ok(()) => Response::text(200, "ready\n"),
                Err(why) => Response::text(503, format!("not ready: {why}\n")),
            },
            ("GET", ["status"]) => {
                let status = self.api.status();
                let wants_table = query.split('&').any(|p| p == "format=table")
                    || req.header("accept").is_some_and(|a| a.starts_with("text/plain"));
                if wants_table {
                    Response::text(200, status.to_table())
                } else {
                    Response::json(200, status.to_json())
                }
            }
            ("POST", ["backends", service, backend, action @ ("drain" | "enable")]) => {
                if let Some(denied) = self.authorize(req) {
                    return denied;
                }
                let draining = *action == "drain";
                match self.api.set_draining(service, backend, draining) {
                    Ok(()) => {
                        info!(service, backend, action = *action, "backend {action} by operator");
                        let done = if draining { "draining: no new connections" } else { "enabled" };
                        Response::text(200, format!("{service}/{backend}: {done}\n"))
                    }
                    Err(ApiError::NotFound(m)) => Response::text(404, format!("{m}\n")),
                }
            }
            ("POST", ["reload"]) => {
                if let Some(denied) = self.authorize(req) {
                    return denied;
                }
                match self.api.reload().await {
                    Ok(summary) => Response::text(200, format!("{summary}\n")),
                    Err(e) => Response::text(422, format!("reload failed, previous config still running:\n{e}\n")),
                }
            }
            (_, ["metrics" | "healthz" | "readyz" | "status" | "reload"])
            | (_, ["backends", _, _, "drain" | "enable"]) => {
                Response::text(405, "method not allowed\n")
            }
            _ => Response::text(
                404,
                "not found; try /metrics /healthz /readyz /status, POST /reload, POST /backends/SERVICE/BACKEND/drain|enable\n",
            ),
        }
    }

    fn metrics(&self) -> Response {
        let mut body = Vec::new();
        let encoder = TextEncoder::new();
        match encoder.encode(&self.registry.gather(), &mut body) {
            Ok(()) => Response {
                status: 200,
                content_type: encoder.format_type().to_owned(),
                body,
            },
            Err(e) => Response::text(500, format!("cannot encode metrics: {e}\n")),
        }
    }

    /// `None` when the request may mutate; else the refusal to send.
    fn authorize(&self, req: &Request) -> Option<Response> {
        match &self.access {
            Access::Loopback => None,
            Access::Token(token) => {
                let presented = req
                    .header("authorization")
                    .and_then(|h| h.strip_prefix("Bearer "))
                    .map(str::trim);
                if presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
                    None
                } else {
                    Some(Response::text(401, "missing or wrong bearer token\n"))
                }
            }
            Access::ReadOnly => Some(Response::text(
                403,
                "the admin endpoint is not on loopback and admin.token_file is not set: runtime changes are refused\n",
            )),
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug)]
struct Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

async fn read_request(stream: &mut TcpStream) -> Result<Request, &'static str> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let head_end = loop {
        let n = stream.read(&mut chunk).await.map_err(|_| "read error\n")?;
        if n == 0 {
            return Err("incomplete request\n");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        if buf.len() > MAX_REQUEST {
            return Err("request head too large\n");
        }
    };
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "request is not UTF-8\n")?;
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(path), Some(version)) = (first.next(), first.next(), first.next())
    else {
        return Err("malformed request line\n");
    };
    if !version.starts_with("HTTP/1.") {
        return Err("only HTTP/1.x is spoken here\n");
    }
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    Ok(Request {
        method: method.to_owned(),
        path: path.to_owned(),
        headers,
    })
}

struct Response {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Self {
        Response {
            status,
            content_type: "text/plain; charset=utf-8".to_owned(),
            body: body.into().into_bytes(),
        }
    }

    fn json(status: u16, body: String) -> Self {
        Response {
            status,
            content_type: "application/json".to_owned(),
            body: body.into_bytes(),
        }
    }

    fn to_bytes(&self) -> Vec<u8> {
        let reason = match self.status {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            422 => "Unprocessable Entity",
            503 => "Service Unavailable",
            _ => "Internal Server Error",
        };
        let mut out = format!(
            "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.content_type,
            self.body.len()
        );
        if self.status == 401 {
            out.push_str("WWW-Authenticate: Bearer\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }
}
