//! The TCP accept loop and what happens to each accepted connection: limit,
//! pick, connect with timeout and retry, relay.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tandem_core::{ActiveConnection, Backend, ConnectFailure};
use tandem_forward::{Ending, Forwarder, RelayOptions, Relayed};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use tandem_core::ProxyVersion;
use tandem_proxy_protocol::Header;

use crate::admission::{allowed, proxy_version, read_header, Refusal, SourceGuard};
use crate::bind::ListenerOptions;
use crate::service::{ServiceState, Snapshot};

/// The most the first write to a backend carries (header and client bytes).
const FIRST_WRITE: usize = 16 * 1024;

/// How long the accept loop pauses when the process is out of descriptors or memory.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

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
        let mut options = ListenerOptions::new(&self.listener);
        loop {
            let accepted = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                accepted = self.listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let snapshot = self.service.snapshot.load_full();
                    options.apply(&self.listener, &stream, snapshot.config.tcp_keepalive);
                    self.admit(stream, peer, snapshot);
                }
                Err(e) if is_resource_exhaustion(&e) => {
                    warn!(service = %self.service.name, listen = %local, error = %e, "accept failed, pausing 100ms");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
                Err(e) => debug!(service = %self.service.name, error = %e, "accept failed"),
            }
        }
        info!(service = %self.service.name, listen = %local, "stopped accepting");
    }

    fn admit(&self, stream: TcpStream, peer: SocketAddr, snapshot: Arc<Snapshot>) {
        let service = &self.service;
        service.counters.accepted.fetch_add(1, Relaxed);
        let Some(slot) = ConnectionSlot::take(service, &snapshot) else {
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
        self.tracker
            .spawn(self.connection(stream, peer, snapshot, slot));
    }

    /// The task of one admitted connection.
    fn connection(
        &self,
        stream: TcpStream,
        peer: SocketAddr,
        snapshot: Arc<Snapshot>,
        slot: ConnectionSlot,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        // Debug level: at info a span per connection costs more than the
        // proxying of a small request; warnings name service and client themselves.
        let span = tracing::debug_span!("conn", service = %self.service.name, client = %peer);
        let task = Connection {
            client: stream,
            peer,
            snapshot,
            slot,
            forwarder: self.forwarder.clone(),
            cut: self.cut.clone(),
        };
        serve(task).instrument(span)
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

/// What a connection's task owns. One struct moved into one `async fn`, so
/// the task's future stores each of these once.
struct Connection {
    client: TcpStream,
    peer: SocketAddr,
    snapshot: Arc<Snapshot>,
    /// Also holds the service.
    slot: ConnectionSlot,
    forwarder: Forwarder,
    cut: CancellationToken,
}

/// Connects to a backend and relays. Written as a function returning an
/// `async move` block rather than an `async fn`, and using the connection's
/// fields in place: an `async fn` copies its argument into a local, and a
/// local copy of a field lives in the task next to the original.
#[allow(clippy::manual_async_fn)] // on purpose, see above
fn serve(mut task: Connection) -> impl std::future::Future<Output = ()> + Send + 'static {
    async move {
        let started = Instant::now();
        // Admission (PROXY header, allow/deny, per-source limits): boxed, and
        // skipped when the service has no rules, so a connection without
        // them carries none of its state.
        let mut admitted = None;
        if !task.snapshot.config.admission.is_open() {
            match Box::pin(admit(&task)).await {
                Ok(a) => {
                    task.peer = a.client;
                    admitted = Some(Box::new(a));
                }
                Err(refusal) => {
                    task.refused(refusal);
                    return;
                }
            }
        }
        // The client leg's TCP_NODELAY and keepalive came with it from the
        // listening socket (see `ListenerOptions`).
        let connecting = connect_any(&task.slot.service.name, &task.snapshot, task.peer);
        // Boxed: the connect phase is larger than the relay and over soon;
        // inline it would stay in every connection's task for its lifetime.
        let Some((upstream, active)) = Box::pin(connecting).await else {
            task.connect_failed(started);
            return;
        };
        let version = active.backend().send_proxy();
        let mut sent_first = 0;
        if version.is_some() || admitted.as_ref().is_some_and(|a| !a.leftover.is_empty()) {
            let first = Box::pin(task.send_first(&upstream, version, admitted.as_deref_mut()));
            match first.await {
                Ok(n) => sent_first = n,
                Err(e) => {
                    let relayed = Relayed {
                        from_client: 0,
                        to_client: 0,
                        ending: Ending::BackendReset(e),
                    };
                    task.finished(started, active.backend(), &relayed, 0);
                    return;
                }
            }
            active.backend().add_bytes_from_client(sent_first);
        }
        let relayed = task
            .forwarder
            .relay(
                &task.client,
                &upstream,
                task.relay_options(),
                active.backend(),
                &task.cut,
            )
            .await;
        task.finished(started, active.backend(), &relayed, sent_first);
        // Counted open until here, and so is the source's slot.
        drop(active);
        drop(admitted);
    }
}

/// What admission found out about a connection.
struct Admitted {
    /// The client: from the PROXY header when one was accepted.
    client: SocketAddr,
    /// From the PROXY header: where the client connected to.
    destination: Option<SocketAddr>,
    /// The client's bytes that arrived with the PROXY header.
    leftover: Vec<u8>,
    /// Holds one of the source's `connections_per_source`.
    _source: Option<SourceGuard>,
}

/// Applies the service's admission rules to a new connection.
async fn admit(task: &Connection) -> Result<Admitted, Refusal> {
    let admission = &task.snapshot.config.admission;
    let mut client = task.peer;
    let mut destination = None;
    let mut leftover = Vec::new();
    if let Some(accept) = &admission.proxy_accept {
        if !accept.trusted.iter().any(|n| n.contains(task.peer.ip())) {
            return Err(Refusal::ProxyUntrusted);
        }
        let (header, rest) = read_header(&task.client, accept.timeout).await?;
        leftover = rest;
        // A LOCAL header (the proxy's own health check) keeps the socket's addresses.
        if let (Some(source), Some(a)) = (header.source(), header.addresses) {
            client = source;
            destination = Some(a.destination);
        }
    }
    if !allowed(admission, client.ip()) {
        return Err(Refusal::Denied);
    }
    let limits = &admission.limits;
    let source = if limits.is_off() {
        None
    } else {
        let table = &task.slot.service.sources;
        Some(table.admit(client.ip(), limits, std::time::Instant::now())?)
    };
    Ok(Admitted {
        client,
        destination,
        leftover,
        _source: source,
    })
}

impl Connection {
    fn relay_options(&self) -> RelayOptions {
        let config = &self.snapshot.config;
        RelayOptions {
            mode: config.forwarding,
            idle_timeout: config.idle_timeout,
            backend_keepalive: config.tcp_keepalive,
        }
    }

    /// Writes what goes to the backend before the relay: the PROXY header,
    /// the client bytes that came with an accepted header, and whatever the
    /// client has already sent, so that they leave in one segment. Returns
    /// how many client bytes it wrote.
    async fn send_first(
        &self,
        upstream: &TcpStream,
        version: Option<ProxyVersion>,
        admitted: Option<&mut Admitted>,
    ) -> io::Result<u64> {
        let mut first = Vec::with_capacity(FIRST_WRITE);
        let (leftover, destination) = match admitted {
            Some(a) => (std::mem::take(&mut a.leftover), a.destination),
            None => (Vec::new(), None),
        };
        if let Some(version) = version {
            let destination = match destination {
                Some(d) => d,
                None => self.client.local_addr()?,
            };
            let header = Header::tcp(self.peer, destination);
            tandem_proxy_protocol::encode(proxy_version(version), &header, &mut first);
        }
        let header_len = first.len();
        first.extend_from_slice(&leftover);
        if first.len() < FIRST_WRITE {
            // Not waiting: a client that speaks first has usually sent its
            // request by now. An end of file read here is read again by the relay.
            match self.client.try_read_buf(&mut first) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        upstream.writable().await?;
        let mut written = 0;
        while written < first.len() {
            match upstream.try_write(&first[written..]) {
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => upstream.writable().await?,
                Err(e) => return Err(e),
            }
        }
        Ok((first.len() - header_len) as u64)
    }

    fn refused(&self, refusal: Refusal) {
        let service = &self.slot.service;
        service
            .counters
            .refused
            .record(&service.name, self.peer, refusal);
        if self.snapshot.config.access_log {
            access_log(
                &service.name,
                self.peer,
                None,
                Duration::ZERO,
                0,
                0,
                refusal.as_str(),
            );
        }
    }

    fn connect_failed(&self, started: Instant) {
        let service = &self.slot.service;
        service.counters.no_backend.fetch_add(1, Relaxed);
        if self.snapshot.config.access_log {
            access_log(
                &service.name,
                self.peer,
                None,
                started.elapsed(),
                0,
                0,
                "connect_failed",
            );
        }
    }

    fn finished(&self, started: Instant, backend: &Backend, relayed: &Relayed, sent_first: u64) {
        let service = &self.slot.service;
        let elapsed = started.elapsed();
        service.duration.observe(elapsed.as_secs_f64());
        match &relayed.ending {
            Ending::Cut => {
                service.counters.cut_at_drain.fetch_add(1, Relaxed);
            }
            Ending::Internal(e) => {
                warn!(service = %service.name, client = %self.peer, backend = %backend.label(), error = %e, "connection closed: no pipe or buffer available");
            }
            _ => {}
        }
        if self.snapshot.config.access_log {
            access_log(
                &service.name,
                self.peer,
                Some(backend.label()),
                elapsed,
                relayed.from_client + sent_first,
                relayed.to_client,
                relayed.ending.as_str(),
            );
        } else {
            debug!(
                backend = %backend.label(),
                from_client = relayed.from_client + sent_first,
                to_client = relayed.to_client,
                ending = relayed.ending.as_str(),
                "connection ended"
            );
        }
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

/// How many tried backends a connection keeps without allocating.
const TRIED_INLINE: usize = 8;

/// The backends one connection has tried, in order: inline for the usual
/// few attempts, on the heap only beyond [`TRIED_INLINE`].
struct Tried {
    inline: [usize; TRIED_INLINE],
    len: usize,
    spilled: Vec<usize>,
}

impl Tried {
    fn new() -> Self {
        Tried {
            inline: [0; TRIED_INLINE],
            len: 0,
            spilled: Vec::new(),
        }
    }

    fn push(&mut self, index: usize) {
        if self.spilled.is_empty() && self.len < TRIED_INLINE {
            self.inline[self.len] = index;
            self.len += 1;
            return;
        }
        if self.spilled.is_empty() {
            self.spilled.extend_from_slice(&self.inline[..self.len]);
        }
        self.spilled.push(index);
    }

    fn as_slice(&self) -> &[usize] {
        if self.spilled.is_empty() {
            &self.inline[..self.len]
        } else {
            &self.spilled
        }
    }

    fn len(&self) -> usize {
        self.as_slice().len()
    }
}

/// Tries backends in the scheduler's order, never one twice, up to
/// `1 + connect_retries` attempts. `None` when no backend could be connected;
/// otherwise the stream and the connection counted open on its backend.
async fn connect_any(
    service: &str,
    snapshot: &Snapshot,
    peer: SocketAddr,
) -> Option<(TcpStream, ActiveConnection)> {
    let config = &snapshot.config;
    let attempts = 1 + config.connect_retries as usize;
    let mut tried = Tried::new();
    while tried.len() < attempts {
        let Some(index) = tandem_scheduler::pick(
            &*snapshot.scheduler,
            snapshot.config.on_all_down,
            &snapshot.backends,
            peer,
            tried.as_slice(),
        ) else {
            if tried.len() == 0 {
                warn!(service, client = %peer, "no backend available, connection closed");
            } else {
                warn!(
                    service,
                    client = %peer,
                    attempts = tried.len(),
                    "every backend tried failed, connection closed"
                );
            }
            return None;
        };
        tried.push(index);
        let backend = snapshot.backends.get(index)?;
        match connect(backend.address().socket_addr(), config.connect_timeout).await {
            Ok(stream) => {
                backend.record_connect_success();
                return Some((stream, backend.open_connection()));
            }
            Err(e) => {
                let kind = match e.kind() {
                    io::ErrorKind::ConnectionRefused => ConnectFailure::Refused,
                    io::ErrorKind::TimedOut => ConnectFailure::Timeout,
                    _ => ConnectFailure::Other,
                };
                warn!(service, client = %peer, backend = %backend.label(), attempt = tried.len(), error = %e, "backend connect failed");
                snapshot.record_connect_failure(backend, kind);
            }
        }
    }
    warn!(
        service,
        client = %peer,
        attempts = tried.len(),
        "connect retries exhausted, connection closed"
    );
    None
}

/// Connects the backend leg with TCP_NODELAY, set once before the handshake.
/// Its keepalive is switched on by the relay once the connection has lasted
/// a second (see `tandem_forward::KEEPALIVE_AFTER`).
async fn connect(address: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_nodelay(true)?;
    match tokio::time::timeout(timeout, socket.connect(address)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("connect timed out after {}", humanize(timeout)),
        )),
    }
}

fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ListenerMetrics, Services};

    #[test]
    fn tried_backends_stay_inline_then_spill_in_order() {
        let mut tried = Tried::new();
        for i in 0..TRIED_INLINE {
            tried.push(i * 10);
        }
        assert!(tried.spilled.is_empty());
        tried.push(7);
        tried.push(9);
        let want: Vec<usize> = (0..TRIED_INLINE).map(|i| i * 10).chain([7, 9]).collect();
        assert_eq!(tried.as_slice(), want.as_slice());
        assert_eq!(tried.len(), TRIED_INLINE + 2);
    }

    /// An idle connection costs its task (this future, tokio's header and
    /// trailer, rounded up to 128 bytes: 640 today) and the two sockets'
    /// registrations (256 bytes each). Above about 560 bytes the task takes
    /// the next 128; see docs/performance.md.
    #[tokio::test]
    async fn a_connection_task_is_small() {
        let config = tandem_config::parse(
            "services:\n  - { name: s, listen: 127.0.0.1:1, backends: [{ address: 127.0.0.1:2 }] }\n",
            "test",
        )
        .unwrap();
        let registry = prometheus::Registry::new();
        let forwarder = Forwarder::new();
        let metrics =
            ListenerMetrics::register(&registry, Services::new(), forwarder.clone()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, peer) = listener.accept().await.unwrap();
        let acceptor = TcpAcceptor {
            service: ServiceState::new(config.services[0].clone(), metrics.duration_of("s")),
            listener,
            forwarder,
            tracker: TaskTracker::new(),
            cut: CancellationToken::new(),
        };
        let snapshot = acceptor.service.snapshot.load_full();
        let slot = ConnectionSlot::take(&acceptor.service, &snapshot).unwrap();
        let task = acceptor.connection(stream, peer, snapshot, slot);
        let size = std::mem::size_of_val(&task);
        eprintln!("connection future: {size} bytes");
        assert!(size <= 560, "connection future grew to {size} bytes");
        drop(client);
    }
}
