//! The TCP accept loop and what happens to each accepted connection: limit,
//! pick, connect with timeout and retry, relay.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tandem_config::{Forwarding, HealthKind};
use tandem_core::{Backend, ConnectFailure};
use tandem_forward::{Ending, Forwarder, Mode, RelayOptions};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use crate::service::{ServiceState, Snapshot};

/// How long the accept loop pauses when the process is out of descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Keepalive on both legs: first probe after a minute of silence, then every
/// 10 s, dropped after 6 unanswered probes. Finds dead peers of silent streams
/// (`kubectl logs -f`, `exec`) long before `idle_timeout`.
const KEEPALIVE_TIME: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 6;

/// Accepts connections for one TCP service until told to stop.
#[derive(Debug)]
pub struct TcpAcceptor {
    pub service: Arc<ServiceState>,
    pub listener: TcpListener,
    pub forwarder: Forwarder,
    /// Every connection task is spawned on this tracker, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Cancelled when this service's open connections must be cut.
    pub cut: CancellationToken,
}

impl TcpAcceptor {
    /// Accepts until `stop` is cancelled, then closes the listening socket.
    /// Open connections keep flowing: the caller decides when to cut them
    /// (see [`drain_then_cut`]); a service whose listener merely moved on
    /// reload never cuts them.
    pub async fn run(self, stop: CancellationToken) {
        let local = self
            .listener
            .local_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string());
        loop {
            let accepted = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) if is_resource_exhaustion(&e) => {
                    warn!(service = %self.service.name, listen = %local, error = %e, "accept failed, pausing 100ms");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                Err(e) => debug!(service = %self.service.name, error = %e, "accept failed"),
            }
        }
        info!(service = %self.service.name, listen = %local, "stopped accepting");
    }

    fn admit(&self, stream: TcpStream, peer: SocketAddr) {
        let service = Arc::clone(&self.service);
        let snapshot = service.snapshot.load_full();
        service.counters.accepted.fetch_add(1, Relaxed);
        let Some(slot) = ConnectionSlot::take(&service, &snapshot) else {
            service.counters.rejected_over_limit.fetch_add(1, Relaxed);
            debug!(service = %service.name, client = %peer, "max_connections reached, closed");
            if snapshot.config.access_log {
                access_log(
                    &service.name,
                    peer,
                    None,
                    Duration::ZERO,
                    0,
                    0,
                    "max_connections",
                );
            }
            return;
        };
        let forwarder = self.forwarder.clone();
        let cut = self.cut.clone();
        let span = tracing::info_span!("conn", service = %service.name, client = %peer);
        self.tracker.spawn(
            async move {
                let _slot = slot;
                serve(stream, peer, &service, &snapshot, &forwarder, &cut).await;
            }
            .instrument(span),
        );
    }
}

/// Lets the service's open connections finish for its `drain_timeout`, then
/// cancels `cut`, which closes whatever is still open.
pub fn drain_then_cut(service: &ServiceState, cut: CancellationToken) {
    let drain = service.snapshot.load().config.drain_timeout;
    let open = service.counters.active.load(Relaxed);
    if open > 0 {
        info!(service = %service.name, open_connections = open, drain_timeout = ?drain, "draining");
    }
    tokio::spawn(async move {
        tokio::time::sleep(drain).await;
        cut.cancel();
    });
}

fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// One of the service's `max_connections`, given back on drop.
struct ConnectionSlot {
    service: Arc<ServiceState>,
}

impl ConnectionSlot {
    fn take(service: &Arc<ServiceState>, snapshot: &Snapshot) -> Option<Self> {
        let before = service.counters.active.fetch_add(1, Relaxed);
        if let Some(max) = snapshot.config.max_connections {
            if before >= u64::from(max.get()) {
                service.counters.active.fetch_sub(1, Relaxed);
                return None;
            }
        }
        Some(ConnectionSlot {
            service: Arc::clone(service),
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.service.counters.active.fetch_sub(1, Relaxed);
    }
}

async fn serve(
    client: TcpStream,
    peer: SocketAddr,
    service: &ServiceState,
    snapshot: &Snapshot,
    forwarder: &Forwarder,
    cut: &CancellationToken,
) {
    let started = Instant::now();
    let config = &snapshot.config;
    tune(&client, config.tcp_keepalive);
    let Some((upstream, backend)) = connect_any(snapshot, peer).await else {
        service.counters.no_backend.fetch_add(1, Relaxed);
        if config.access_log {
            access_log(
                &service.name,
                peer,
                None,
                started.elapsed(),
                0,
                0,
                "connect_failed",
            );
        }
        return;
    };
    let active = backend.open_connection();
    let options = RelayOptions {
        mode: match config.forwarding {
            Forwarding::Splice => Mode::Splice,
            Forwarding::Copy => Mode::Copy,
        },
        idle_timeout: config.idle_timeout,
    };
    let relayed = forwarder
        .relay(&client, &upstream, options, &backend, cut)
        .await;
    drop(active);
    let elapsed = started.elapsed();
    service.duration.observe(elapsed.as_secs_f64());
    match &relayed.ending {
        Ending::Cut => {
            service.counters.cut_at_drain.fetch_add(1, Relaxed);
        }
        Ending::Internal(e) => {
            warn!(backend = %backend.label(), error = %e, "connection closed: no pipe or buffer available");
        }
        _ => {}
    }
    if config.access_log {
        access_log(
            &service.name,
            peer,
            Some(backend.label()),
            elapsed,
            relayed.from_client,
            relayed.to_client,
            relayed.ending.as_str(),
        );
    } else {
        debug!(
            backend = %backend.label(),
            from_client = relayed.from_client,
            to_client = relayed.to_client,
            ending = relayed.ending.as_str(),
            "connection ended"
        );
    }
}

/// One line per finished connection, like HAProxy's `option tcplog`.
fn access_log(
    service: &str,
    client: SocketAddr,
    backend: Option<&str>,
    duration: Duration,
    bytes_in: u64,
    bytes_out: u64,
    ending: &str,
) {
    info!(
        target: "tandem::access",
        client = %client,
        service,
        backend = backend.unwrap_or("-"),
        duration_ms = duration.as_millis() as u64,
        bytes_in,
        bytes_out,
        ending,
        "connection"
    );
}

/// Tries backends in the scheduler's order, never one twice, up to
/// `1 + connect_retries` attempts. `None` when no backend could be connected.
async fn connect_any(snapshot: &Snapshot, peer: SocketAddr) -> Option<(TcpStream, Arc<Backend>)> {
    let config = &snapshot.config;
    let attempts = 1 + config.connect_retries as usize;
    let mut tried = Vec::with_capacity(attempts.min(snapshot.backends.len()));
    while tried.len() < attempts {
        let Some(index) = tandem_scheduler::pick(
            &*snapshot.scheduler,
            snapshot.on_all_down(),
            &snapshot.backends,
            peer,
            &tried,
        ) else {
            if tried.is_empty() {
                warn!("no backend available, connection closed");
            } else {
                warn!(
                    attempts = tried.len(),
                    "every backend tried failed, connection closed"
                );
            }
            return None;
        };
        tried.push(index);
        let backend = snapshot.backends.get(index)?;
        match connect(
            backend.address().socket_addr(),
            config.connect_timeout,
            config.tcp_keepalive,
        )
        .await
        {
            Ok(stream) => {
                backend.record_connect_success();
                return Some((stream, Arc::clone(backend)));
            }
            Err(e) => {
                let kind = match e.kind() {
                    io::ErrorKind::ConnectionRefused => ConnectFailure::Refused,
                    io::ErrorKind::TimedOut => ConnectFailure::Timeout,
                    _ => ConnectFailure::Other,
                };
                let in_a_row = backend.record_connect_failure(kind);
                warn!(backend = %backend.label(), attempt = tried.len(), error = %e, "backend connect failed");
                eject_if_failing(snapshot, backend, in_a_row);
            }
        }
    }
    warn!(
        attempts = tried.len(),
        "connect retries exhausted, connection closed"
    );
    None
}

/// Passive ejection: `eject_after` consecutive connect failures on real
/// traffic mark the backend down; the active health check brings it back
/// (validation only allows `eject_after` with an active check).
pub(crate) fn eject_if_failing(snapshot: &Snapshot, backend: &Backend, in_a_row: u32) {
    let health = &snapshot.config.health;
    let Some(limit) = health.eject_after else {
        return;
    };
    // The health checker logs the transition (one line, with this reason) when
    // it notices at its next probe; here it is only a debug line.
    if health.kind != HealthKind::None && in_a_row >= limit.get() && backend.set_up(false) {
        debug!(
            backend = %backend.label(),
            failures = in_a_row,
            "backend ejected after consecutive connect failures; health checks will bring it back"
        );
    }
}

async fn connect(address: SocketAddr, timeout: Duration, keepalive: bool) -> io::Result<TcpStream> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_nodelay(true)?;
    let stream = match tokio::time::timeout(timeout, socket.connect(address)).await {
        Ok(result) => result?,
        Err(_) => {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect timed out after {}", humanize(timeout)),
            ))
        }
    };
    tune(&stream, keepalive);
    Ok(stream)
}

fn tune(stream: &TcpStream, keepalive: bool) {
    let _ = stream.set_nodelay(true);
    if keepalive {
        let params = TcpKeepalive::new()
            .with_time(KEEPALIVE_TIME)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_RETRIES);
        let _ = SockRef::from(stream).set_tcp_keepalive(&params);
    }
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}
