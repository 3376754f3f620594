//! The admin HTTP endpoint, on hyper's HTTP/1.1 server: one request per
//! connection (`Connection: close`), for Prometheus, health probes, the status
//! page and the runtime API. Bodies are tiny; a request head over 16 KiB is
//! refused and a connection is cut after 5 s, so the endpoint cannot be used to
//! pin memory or connections.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::page;
use crate::status::Status;

/// What the admin endpoint asks of the running process.
pub trait AdminApi: Send + Sync + 'static {
    /// Why a reload changed nothing; its `Display` is sent to the operator.
    type ReloadError: std::error::Error + Send;
    /// `Ok` once the config is loaded and every listener is bound; else why not.
    fn ready(&self) -> Result<(), NotReady>;
    fn status(&self) -> Status;
    /// Starts (`true`) or ends an operator's drain of one backend.
    fn set_draining(&self, service: &str, backend: &str, draining: bool) -> Result<(), ApiError>;
    /// Starts (`true`) or ends the node's maintenance: every routed VIP withdrawn.
    fn set_maintenance(&self, on: bool) -> Result<(), ApiError>;
    /// Reloads the config file; `Ok` carries a one-line summary of the change.
    fn reload(&self) -> impl Future<Output = Result<String, Self::ReloadError>> + Send;
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    NotFound(String),
}

/// Why `/readyz` answers 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NotReady {
    #[error("starting: listeners not bound yet")]
    Starting,
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

    /// How the status page offers drain/enable: `loopback`, `token` or `readonly`.
    fn page_mode(&self) -> &'static str {
        match self {
            Access::Loopback => "loopback",
            Access::Token(_) => "token",
            Access::ReadOnly => "readonly",
        }
    }
}

/// The largest request head read; hyper answers 431 beyond it.
const MAX_REQUEST: usize = 16 * 1024;
/// A connection, request and response together, lasts at most this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

type Response = hyper::Response<Full<Bytes>>;

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
                        match tokio::time::timeout(REQUEST_TIMEOUT, me.serve(stream)).await {
                            Err(_) => debug!(client = %peer, "admin request timed out"),
                            Ok(Err(e)) => {
                                debug!(client = %peer, error = %e, "admin request failed")
                            }
                            Ok(Ok(())) => {}
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

    async fn serve(self: &Arc<Self>, stream: TcpStream) -> hyper::Result<()> {
        let me = Arc::clone(self);
        let service = service_fn(move |req| {
            let me = Arc::clone(&me);
            async move { Ok::<_, Infallible>(me.route(&req).await) }
        });
        http1::Builder::new()
            .max_buf_size(MAX_REQUEST)
            .keep_alive(false)
            // A client may shut down its write side and wait for the answer
            // (`nc -N`, scripts); without this hyper drops the request.
            .half_close(true)
            .serve_connection(TokioIo::new(stream), service)
            .await
    }

    async fn route(&self, req: &hyper::Request<Incoming>) -> Response {
        let path = req.uri().path();
        let query = req.uri().query().unwrap_or("");
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let method = req.method();
        match (method, segments.as_slice()) {
            (&Method::GET, [""]) => {
                let mut r = respond(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    page::render(self.access.page_mode()),
                );
                r.headers_mut()
                    .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                r
            }
            (&Method::GET, ["metrics"]) => self.metrics(),
            (&Method::GET, ["healthz"]) => text(StatusCode::OK, "ok\n"),
            (&Method::GET, ["readyz"]) => match self.api.ready() {
                Ok(()) => text(StatusCode::OK, "ready\n"),
                Err(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("not ready: {why}\n"),
                ),
            },
            (&Method::GET, ["status"]) => {
                let status = self.api.status();
                let wants_table = query.split('&').any(|p| p == "format=table")
                    || header(req, ACCEPT).is_some_and(|a| a.starts_with("text/plain"));
                if wants_table {
                    text(StatusCode::OK, status.to_table())
                } else {
                    let mut r = respond(StatusCode::OK, "application/json", status.to_json());
                    r.headers_mut()
                        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
                    r
                }
            }
            (&Method::POST, ["backends", service, backend, action @ ("drain" | "enable")]) => {
                if let Some(denied) = self.authorize(req) {
                    return denied;
                }
                let draining = *action == "drain";
                match self.api.set_draining(service, backend, draining) {
                    Ok(()) => {
                        info!(service, backend, action = *action, "backend {action} by operator");
                        let done = if draining {
                            "draining: no new connections"
                        } else {
                            "enabled"
                        };
                        text(StatusCode::OK, format!("{service}/{backend}: {done}\n"))
                    }
                    Err(ApiError::NotFound(m)) => text(StatusCode::NOT_FOUND, format!("{m}\n")),
                }
            }
            (&Method::POST, ["maintenance", action @ ("on" | "off")]) => {
                if let Some(denied) = self.authorize(req) {
                    return denied;
                }
                let on = *action == "on";
                match self.api.set_maintenance(on) {
                    Ok(()) => {
                        info!(action = *action, "maintenance {action} by operator");
                        let done = if on {
                            "maintenance on: routes withdrawn\n"
                        } else {
                            "maintenance off: routes follow health again\n"
                        };
                        text(StatusCode::OK, done)
                    }
                    Err(ApiError::NotFound(m)) => text(StatusCode::NOT_FOUND, format!("{m}\n")),
                }
            }
            (&Method::POST, ["reload"]) => {
                if let Some(denied) = self.authorize(req) {
                    return denied;
                }
                match self.api.reload().await {
                    Ok(summary) => text(StatusCode::OK, format!("{summary}\n")),
                    Err(e) => text(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("reload failed, previous config still running:\n{e}\n"),
                    ),
                }
            }
            (_, ["" | "metrics" | "healthz" | "readyz" | "status" | "reload"])
            | (_, ["backends", _, _, "drain" | "enable"])
            | (_, ["maintenance", "on" | "off"]) => {
                text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "not found; try / /metrics /healthz /readyz /status, POST /reload, POST /backends/SERVICE/BACKEND/drain|enable, POST /maintenance/on|off\n",
            ),
        }
    }

    fn metrics(&self) -> Response {
        let mut body = Vec::new();
        let encoder = TextEncoder::new();
        match encoder.encode(&self.registry.gather(), &mut body) {
            Ok(()) => respond(StatusCode::OK, prometheus::TEXT_FORMAT, body),
            Err(e) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot encode metrics: {e}\n"),
            ),
        }
    }

    /// `None` when the request may mutate; else the refusal to send.
    fn authorize(&self, req: &hyper::Request<Incoming>) -> Option<Response> {
        match &self.access {
            Access::Loopback => None,
            Access::Token(token) => {
                let presented = header(req, AUTHORIZATION)
                    .and_then(|h| h.strip_prefix("Bearer "))
                    .map(str::trim);
                if presented.is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes())) {
                    None
                } else {
                    let mut r = text(StatusCode::UNAUTHORIZED, "missing or wrong bearer token\n");
                    r.headers_mut().insert(
                        hyper::header::WWW_AUTHENTICATE,
                        HeaderValue::from_static("Bearer"),
                    );
                    Some(r)
                }
            }
            Access::ReadOnly => Some(text(
                StatusCode::FORBIDDEN,
                "the admin endpoint is not on loopback and admin.token_file is not set: runtime changes are refused\n",
            )),
        }
    }
}

fn header(req: &hyper::Request<Incoming>, name: hyper::header::HeaderName) -> Option<&str> {
    req.headers().get(name).and_then(|v| v.to_str().ok())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    respond(status, "text/plain; charset=utf-8", body.into())
}

fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Response {
    let mut r = hyper::Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A process with one service `web` and backend `b1`, whose reload fails.
    #[derive(Debug, Default)]
    struct Fixed {
        draining: std::sync::atomic::AtomicBool,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("services[web].listen: invalid socket address")]
    struct BadFile;

    impl AdminApi for Fixed {
        type ReloadError = BadFile;
        fn ready(&self) -> Result<(), NotReady> {
            Err(NotReady::Starting)
        }
        fn status(&self) -> Status {
            Status {
                version: "test".into(),
                ..Status::default()
            }
        }
        fn set_draining(&self, service: &str, backend: &str, d: bool) -> Result<(), ApiError> {
            if (service, backend) != ("web", "b1") {
                return Err(ApiError::NotFound(format!("no {service}/{backend}")));
            }
            self.draining.store(d, std::sync::atomic::Ordering::Relaxed);
            Ok(())
        }
        fn set_maintenance(&self, on: bool) -> Result<(), ApiError> {
            if on {
                Ok(())
            } else {
                Err(ApiError::NotFound("no routing section".into()))
            }
        }
        async fn reload(&self) -> Result<String, BadFile> {
            Err(BadFile)
        }
    }

    async fn start(access: Access) -> (SocketAddr, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = AdminServer {
            listener,
            registry: Registry::new(),
            api: Arc::new(Fixed::default()),
            access,
        };
        let stop = CancellationToken::new();
        tokio::spawn(server.run(stop.clone()));
        (addr, stop)
    }

    /// Sends `request` as is and returns the whole response.
    async fn raw(addr: SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out))
            .await
            .expect("the server closes within its time limit")
            .unwrap();
        String::from_utf8_lossy(&out).into_owned()
    }

    fn status_line(response: &str) -> &str {
        response.lines().next().unwrap_or("")
    }

    #[tokio::test]
    async fn answers_each_route_with_its_status_and_closes() {
        let (addr, stop) = start(Access::Loopback).await;
        let r = raw(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(status_line(&r), "HTTP/1.1 200 OK");
        assert!(r.to_ascii_lowercase().contains("connection: close"), "{r}");
        let r = raw(addr, b"GET /readyz HTTP/1.1\r\n\r\n").await;
        assert_eq!(status_line(&r), "HTTP/1.1 503 Service Unavailable");
        assert!(
            r.ends_with("not ready: starting: listeners not bound yet\n"),
            "{r}"
        );
        let r = raw(addr, b"POST /reload HTTP/1.1\r\n\r\n").await;
        assert_eq!(status_line(&r), "HTTP/1.1 422 Unprocessable Entity");
        assert!(r.contains("services[web].listen"), "{r}");
        let r = raw(addr, b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(r.contains("text/html"), "{r}");
        assert!(r.contains(r#"data-access="loopback""#), "{r}");
        let r = raw(addr, b"POST /backends/web/b1/drain HTTP/1.1\r\n\r\n").await;
        assert_eq!(status_line(&r), "HTTP/1.1 200 OK");
        let r = raw(addr, b"POST /backends/web/b2/drain HTTP/1.1\r\n\r\n").await;
        assert_eq!(status_line(&r), "HTTP/1.1 404 Not Found");
        let r = raw(addr, b"PUT /status HTTP/1.1\r\n\r\n").await;
        assert_eq!(status_line(&r), "HTTP/1.1 405 Method Not Allowed");
        let r = raw(addr, b"POST /maintenance/on HTTP/1.1\r\n\r\n").await;
        assert_eq!(status_line(&r), "HTTP/1.1 200 OK");
        assert!(r.ends_with("maintenance on: routes withdrawn\n"), "{r}");
        let r = raw(addr, b"POST /maintenance/off HTTP/1.1\r\n\r\n").await;
        assert_eq!(status_line(&r), "HTTP/1.1 404 Not Found");
        assert!(r.ends_with("no routing section\n"), "{r}");
        let r = raw(addr, b"GET /maintenance/on HTTP/1.1\r\n\r\n").await;
        assert_eq!(status_line(&r), "HTTP/1.1 405 Method Not Allowed");
        let r = raw(addr, b"GET /status?format=table HTTP/1.1\r\n\r\n").await;
        assert!(r.contains("SERVICE"), "{r}");
        let r = raw(addr, b"GET /status HTTP/1.0\r\n\r\n").await;
        assert!(r.contains(r#"{"version":"test""#), "{r}");
        stop.cancel();
    }

    #[tokio::test]
    async fn malformed_and_oversized_requests_are_refused() {
        let (addr, stop) = start(Access::Loopback).await;
        let r = raw(addr, b"GARBAGE\r\n\r\n").await;
        assert_eq!(status_line(&r), "HTTP/1.1 400 Bad Request");
        let r = raw(addr, b"GET / HTTP/2.0\r\n\r\n").await;
        assert_eq!(status_line(&r), "HTTP/1.1 400 Bad Request");
        let mut big = b"GET /status HTTP/1.1\r\nX-Pad: ".to_vec();
        big.extend(std::iter::repeat_n(b'a', MAX_REQUEST + 1024));
        big.extend_from_slice(b"\r\n\r\n");
        let r = raw(addr, &big).await;
        assert_eq!(
            status_line(&r),
            "HTTP/1.1 431 Request Header Fields Too Large"
        );
        // A head just under the limit is still read.
        let mut fits = b"GET /healthz HTTP/1.1\r\nX-Pad: ".to_vec();
        fits.extend(std::iter::repeat_n(b'a', MAX_REQUEST - 1024));
        fits.extend_from_slice(b"\r\n\r\n");
        assert_eq!(status_line(&raw(addr, &fits).await), "HTTP/1.1 200 OK");
        stop.cancel();
    }

    #[tokio::test]
    async fn a_silent_client_is_cut_off_after_the_request_time() {
        let (addr, stop) = start(Access::Loopback).await;
        let started = std::time::Instant::now();
        let r = raw(addr, b"GET /healthz HTTP/1.1\r\n").await;
        assert_eq!(r, "", "nothing is answered to an unfinished head");
        let took = started.elapsed();
        assert!(
            took >= REQUEST_TIMEOUT - Duration::from_millis(100),
            "{took:?}"
        );
        stop.cancel();
    }

    #[tokio::test]
    async fn tokens_and_read_only_guard_the_mutations() {
        let (addr, stop) = start(Access::Token("s3cret".into())).await;
        let r = raw(addr, b"POST /backends/web/b1/drain HTTP/1.1\r\n\r\n").await;
        assert_eq!(status_line(&r), "HTTP/1.1 401 Unauthorized");
        assert!(
            r.to_ascii_lowercase().contains("www-authenticate: bearer"),
            "{r}"
        );
        let r = raw(
            addr,
            b"POST /backends/web/b1/drain HTTP/1.1\r\nAuthorization: Bearer s3cre\r\n\r\n",
        )
        .await;
        assert_eq!(status_line(&r), "HTTP/1.1 401 Unauthorized");
        let r = raw(
            addr,
            b"POST /backends/web/b1/drain HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n",
        )
        .await;
        assert_eq!(status_line(&r), "HTTP/1.1 200 OK");
        let r = raw(addr, b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(r.contains(r#"data-access="token""#), "{r}");
        stop.cancel();

        let (addr, stop) = start(Access::ReadOnly).await;
        let r = raw(addr, b"POST /reload HTTP/1.1\r\n\r\n").await;
        assert_eq!(status_line(&r), "HTTP/1.1 403 Forbidden");
        let r = raw(addr, b"POST /maintenance/on HTTP/1.1\r\n\r\n").await;
        assert_eq!(status_line(&r), "HTTP/1.1 403 Forbidden");
        let r = raw(addr, b"GET / HTTP/1.1\r\n\r\n").await;
        assert!(r.contains(r#"data-access="readonly""#), "{r}");
        stop.cancel();
    }

    #[test]
    fn constant_time_eq_compares_whole_values() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
