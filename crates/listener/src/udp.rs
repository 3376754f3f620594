//! UDP load balancing with sessions, the way nginx's stream module and Envoy's
//! udp_proxy do it: the first datagram of a client address picks a backend,
//! later datagrams of that client go to the same backend through the session's
//! own connected upstream socket, and replies go back to the client from the
//! listen address.
//!
//! Why this shape: the session map is owned by the one task that receives on
//! the listen socket, so looking a client up takes no lock; each session's
//! replies are pumped by a task of its own that never touches the map. Buffers
//! are one per receive loop and one per worker thread for replies: nothing is
//! allocated per datagram. A session ends when it has been idle for
//! `session_timeout`, after `replies_per_request` replies per request, when its
//! backend refuses (ICMP port unreachable, counted as a passive failure), or
//! when it is cut after a drain.

use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tandem_core::{Backend, ConnectFailure};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::recvmmsg::{send_batch, RecvBatch, SEND_BATCH};
use socket2::SockRef;
use std::io::IoSlice;
use tandem_proxy_protocol::{Addresses, Command, Header, Transport};

use crate::admission::{allowed, proxy_version, Refusal, SourceGuard};
use crate::budget::{BudgetGuard, SessionBudget};
use crate::service::{ServiceState, Snapshot};

/// The largest UDP payload.
const MAX_DATAGRAM: usize = 65_535;
/// Datagrams taken per receive call.
const BATCH: usize = 32;
/// How often the receive loop forgets sessions that have ended.
const SWEEP: Duration = Duration::from_secs(1);

/// Receives datagrams for one UDP service until told to stop.
#[derive(Debug)]
pub struct UdpAcceptor {
    pub service: Arc<ServiceState>,
    pub socket: Arc<UdpSocket>,
    /// The same socket as a plain non-blocking std socket: replies are sent
    /// with one direct syscall, never waiting on tokio's readiness state.
    pub sender: Arc<std::net::UdpSocket>,
    pub tracker: TaskTracker,
    /// Cancelled when this service's sessions must end (after a drain).
    pub cut: CancellationToken,
    /// The process's share of descriptors for UDP sessions, across services.
    pub budget: Arc<SessionBudget>,
}

/// What the receive loop keeps of a session.
struct Session {
    /// The session's connected upstream socket, shared with its reply task
    /// (one descriptor per session); sent on directly, one syscall each.
    upstream: Arc<UdpSocket>,
    backend: Arc<Backend>,
    shared: Arc<SessionShared>,
    /// `proxy_protocol.send: v2`: the header sent in front of every datagram.
    proxy_header: Option<Box<[u8]>>,
}

/// What the receive loop and the session's reply task share.
struct SessionShared {
    started: Instant,
    /// Milliseconds since `started` of the last datagram either way.
    last_ms: AtomicU64,
    requests: AtomicU64,
    ended: AtomicBool,
}

impl SessionShared {
    /// Notes a datagram at `now` (one clock reading serves a whole batch).
    fn touch(&self, now: Instant) {
        self.last_ms.store(
            now.saturating_duration_since(self.started).as_millis() as u64,
            Relaxed,
        );
    }
}

impl UdpAcceptor {
    pub async fn run(self, stop: CancellationToken) {
        let local = self
            .socket
            .local_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string());
        let mut sessions: HashMap<SocketAddr, Session> = HashMap::new();
        // One recvmmsg(2) takes up to BATCH datagrams per wake-up.
        let mut batch = RecvBatch::new(BATCH, MAX_DATAGRAM);
        let mut sweep = tokio::time::interval(SWEEP);
        loop {
            tokio::select! {
                biased;
                () = stop.cancelled() => break,
                ready = self.socket.readable() => {
                    if ready.is_err() {
                        break;
                    }
                    let received = self
                        .socket
                        .try_io(Interest::READABLE, || batch.recv(self.socket.as_fd()));
                    match received {
                        Ok(n) => {
                            let now = Instant::now();
                            let (mut datagrams, mut bytes) = (0, 0);
                            for i in 0..n {
                                if let Some((datagram, client)) = batch.get(i) {
                                    datagrams += 1;
                                    bytes += datagram.len() as u64;
                                    self.forward(&mut sessions, client, datagram, now);
                                }
                            }
                            // Counted once per batch; only this loop writes them.
                            let counters = &self.service.counters.udp;
                            counters.datagrams_in.fetch_add(datagrams, Relaxed);
                            counters.bytes_in.fetch_add(bytes, Relaxed);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => {
                            // ECONNREFUSED and friends can surface on an unconnected
                            // socket; nothing to do but carry on.
                            debug!(service = %self.service.name, error = %e, "udp receive failed");
                        }
                    }
                }
                _ = sweep.tick() => sessions.retain(|_, s| !s.shared.ended.load(Relaxed)),
            }
        }
        info!(service = %self.service.name, listen = %local, sessions = sessions.len(), "stopped receiving");
    }

    fn forward(
        &self,
        sessions: &mut HashMap<SocketAddr, Session>,
        client: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) {
        let counters = &self.service.counters.udp;
        // One hash lookup per datagram: a live session is used as is; a
        // missing or ended one is (re)opened in the same entry.
        let session = match sessions.entry(client) {
            Entry::Occupied(existing) if !existing.get().shared.ended.load(Relaxed) => {
                existing.into_mut()
            }
            entry => {
                let snapshot = self.service.snapshot.load();
                let admission = &snapshot.config.admission;
                let mut source = None;
                if !admission.is_open() {
                    let admitted = if !allowed(admission, client.ip()) {
                        Err(Refusal::Denied)
                    } else if admission.limits.is_off() {
                        Ok(None)
                    } else {
                        let now = std::time::Instant::now();
                        self.service
                            .sources
                            .admit(client.ip(), &admission.limits, now)
                            .map(Some)
                    };
                    match admitted {
                        Ok(guard) => source = guard,
                        Err(refusal) => {
                            let name = &self.service.name;
                            self.service.counters.refused.record(name, client, refusal);
                            return;
                        }
                    }
                }
                if let Some(max) = snapshot.config.udp.max_sessions {
                    if counters.sessions_active.load(Relaxed) >= u64::from(max.get()) {
                        counters.dropped_max_sessions.fetch_add(1, Relaxed);
                        return;
                    }
                }
                let Some(share) = self.budget.take(&self.service.name) else {
                    counters.dropped_fd_budget.fetch_add(1, Relaxed);
                    return;
                };
                let opened = match self.open_session(&snapshot, client, source, share) {
                    Ok(Some(session)) => session,
                    Ok(None) => {
                        counters.dropped_no_backend.fetch_add(1, Relaxed);
                        return;
                    }
                    Err(e) => {
                        warn!(service = %self.service.name, error = %e, "cannot open an upstream udp socket");
                        counters.dropped_busy.fetch_add(1, Relaxed);
                        return;
                    }
                };
                match entry {
                    Entry::Occupied(mut ended) => {
                        ended.insert(opened);
                        ended.into_mut()
                    }
                    Entry::Vacant(vacant) => vacant.insert(opened),
                }
            }
        };
        session.shared.requests.fetch_add(1, Relaxed);
        session.shared.touch(now);
        let upstream = SockRef::from(session.upstream.as_ref());
        let sent = match &session.proxy_header {
            None => upstream.send(datagram),
            Some(header) => upstream
                .send_vectored(&[IoSlice::new(header), IoSlice::new(datagram)])
                .map(|n| n.saturating_sub(header.len())),
        };
        match sent {
            Ok(n) => session.backend.add_bytes_from_client(n as u64),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                // An earlier datagram drew an ICMP port unreachable.
                counters.dropped_refused.fetch_add(1, Relaxed);
                session.shared.ended.store(true, Relaxed);
            }
            Err(_) => {
                counters.dropped_busy.fetch_add(1, Relaxed);
            }
        }
    }

    /// Picks a backend and starts the session's reply task; `Ok(None)` when no
    /// backend is available.
    fn open_session(
        &self,
        snapshot: &Arc<Snapshot>,
        client: SocketAddr,
        source: Option<SourceGuard>,
        share: BudgetGuard,
    ) -> io::Result<Option<Session>> {
        let Some(index) = tandem_scheduler::pick(
            &*snapshot.scheduler,
            snapshot.config.on_all_down,
            &snapshot.backends,
            client,
            &[],
        ) else {
            return Ok(None);
        };
        let Some(backend) = snapshot.backends.get(index).cloned() else {
            return Ok(None);
        };
        let target = backend.address().socket_addr();
        let bind: SocketAddr = if target.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let std_socket = std::net::UdpSocket::bind(bind)?;
        std_socket.connect(target)?;
        std_socket.set_nonblocking(true)?;
        let upstream = Arc::new(UdpSocket::from_std(std_socket)?);
        let shared = Arc::new(SessionShared {
            started: Instant::now(),
            last_ms: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            ended: AtomicBool::new(false),
        });
        let counters = &self.service.counters.udp;
        counters.sessions_active.fetch_add(1, Relaxed);
        counters.sessions_total.fetch_add(1, Relaxed);
        let task = ReplyTask {
            service: Arc::clone(&self.service),
            snapshot: Arc::clone(snapshot),
            backend: Arc::clone(&backend),
            client,
            listen: Arc::clone(&self.sender),
            upstream: Arc::clone(&upstream),
            shared: Arc::clone(&shared),
            cut: self.cut.clone(),
            _source: source,
            _share: share,
        };
        self.tracker.spawn(task.run());
        let proxy_header = match backend.send_proxy() {
            Some(version) => {
                let header = Header {
                    command: Command::Proxy,
                    transport: Transport::Datagram,
                    addresses: Some(Addresses {
                        source: client,
                        destination: self.socket.local_addr()?,
                    }),
                };
                let mut bytes = Vec::with_capacity(64);
                tandem_proxy_protocol::encode(proxy_version(version), &header, &mut bytes);
                Some(bytes.into_boxed_slice())
            }
            None => None,
        };
        Ok(Some(Session {
            upstream,
            backend,
            shared,
            proxy_header,
        }))
    }
}

thread_local! {
    /// One reply buffer per worker thread: a reply is received and sent on
    /// without awaiting in between, so no two sessions ever share it at once.
    static REPLY_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0u8; SEND_BATCH * MAX_DATAGRAM]);
}

struct ReplyTask {
    service: Arc<ServiceState>,
    snapshot: Arc<Snapshot>,
    backend: Arc<Backend>,
    client: SocketAddr,
    listen: Arc<std::net::UdpSocket>,
    upstream: Arc<UdpSocket>,
    shared: Arc<SessionShared>,
    cut: CancellationToken,
    /// Holds one of the source's `connections_per_source` while the session lives.
    _source: Option<SourceGuard>,
    /// Holds the session's descriptor in the process's budget.
    _share: BudgetGuard,
}

/// Why a session ended, for the access log.
#[derive(Debug, Clone, Copy)]
enum SessionEnd {
    Idle,
    Replied,
    Refused,
    Cut,
    Error,
}

impl SessionEnd {
    fn as_str(self) -> &'static str {
        match self {
            SessionEnd::Idle => "idle_timeout",
            SessionEnd::Replied => "replied",
            SessionEnd::Refused => "backend_refused",
            SessionEnd::Cut => "cut",
            SessionEnd::Error => "error",
        }
    }
}

impl ReplyTask {
    async fn run(self) {
        let _active = self.backend.open_connection();
        let config = &self.snapshot.config;
        let timeout = config.udp.session_timeout;
        let per_request = config.udp.replies_per_request.map(|n| u64::from(n.get()));
        let counters = &self.service.counters.udp;
        let mut replies = 0u64;
        let mut bytes_out = 0u64;
        let idle = tokio::time::sleep(timeout);
        tokio::pin!(idle);
        let end = loop {
            if self.shared.ended.load(Relaxed) {
                break SessionEnd::Refused;
            }
            tokio::select! {
                // ICMP errors (port unreachable) raise EPOLLERR, not EPOLLIN.
                ready = self.upstream.ready(Interest::READABLE | Interest::ERROR) => {
                    let Ok(ready) = ready else {
                        break SessionEnd::Error;
                    };
                    let result = if ready.is_error() {
                        match self.upstream.take_error() {
                            Ok(Some(e)) => Err(e),
                            _ => Err(io::Error::other("socket error")),
                        }
                    } else {
                        self.pump_replies(&mut replies, &mut bytes_out)
                    };
                    match result {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                            counters.dropped_refused.fetch_add(1, Relaxed);
                            warn!(service = %self.service.name, backend = %self.backend.label(), "udp backend refused (ICMP port unreachable)");
                            self.snapshot.record_connect_failure(&self.backend, ConnectFailure::Refused);
                            break SessionEnd::Refused;
                        }
                        Err(_) => break SessionEnd::Error,
                    }
                    if per_request.is_some_and(|per| replies >= per * self.shared.requests.load(Relaxed)) {
                        break SessionEnd::Replied;
                    }
                }
                () = &mut idle => {
                    let last = self.shared.started + Duration::from_millis(self.shared.last_ms.load(Relaxed));
                    if last.elapsed() >= timeout {
                        break SessionEnd::Idle;
                    }
                    idle.as_mut().reset(last + timeout);
                }
                () = self.cut.cancelled() => break SessionEnd::Cut,
            }
        };
        self.shared.ended.store(true, Relaxed);
        counters.sessions_active.fetch_sub(1, Relaxed);
        if config.access_log {
            info!(
                target: "tandem::access",
                client = %self.client,
                service = %self.service.name,
                backend = %self.backend.label(),
                requests = self.shared.requests.load(Relaxed),
                replies,
                bytes_out,
                ending = end.as_str(),
                "udp session"
            );
        }
    }

    /// Moves every reply waiting on the upstream socket to the client.
    fn pump_replies(&self, replies: &mut u64, bytes_out: &mut u64) -> io::Result<()> {
        let counters = &self.service.counters.udp;
        REPLY_BUFFER.with(|cell| {
            let mut buf = cell.borrow_mut();
            loop {
                // Take what the backend has sent (up to a batch), then pass it
                // on to the client with one sendmmsg(2).
                let mut lens = [0usize; SEND_BATCH];
                let mut taken = 0;
                let mut failure = None;
                while taken < SEND_BATCH {
                    let slot = &mut buf[taken * MAX_DATAGRAM..(taken + 1) * MAX_DATAGRAM];
                    match self.upstream.try_recv(slot) {
                        Ok(n) => {
                            lens[taken] = n;
                            taken += 1;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                if taken > 0 {
                    self.shared.touch(Instant::now());
                    let datagrams: [&[u8]; SEND_BATCH] =
                        std::array::from_fn(|i| &buf[i * MAX_DATAGRAM..i * MAX_DATAGRAM + lens[i]]);
                    let bytes: usize = lens[..taken].iter().sum();
                    *replies += taken as u64;
                    *bytes_out += bytes as u64;
                    self.backend.add_bytes_to_client(bytes as u64);
                    let sent = send_batch(self.listen.as_fd(), self.client, &datagrams[..taken])
                        .unwrap_or(0);
                    let sent_bytes: usize = lens[..sent].iter().sum();
                    counters.datagrams_out.fetch_add(sent as u64, Relaxed);
                    counters.bytes_out.fetch_add(sent_bytes as u64, Relaxed);
                    counters
                        .dropped_busy
                        .fetch_add((taken - sent) as u64, Relaxed);
                }
                if let Some(e) = failure {
                    return Err(e);
                }
                if taken < SEND_BATCH {
                    return Ok(());
                }
            }
        })
    }
}
