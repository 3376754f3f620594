//! tandem's TCP byte pump.
//!
//! [`Forwarder::relay`] moves bytes both ways between an accepted client and a
//! connected backend until both sides have closed. On Linux the default
//! [`Mode::Splice`] moves them socket → pipe → socket with non-blocking
//! splice(2) driven by tokio readiness, so payload never enters userspace;
//! [`Mode::Copy`] does the same through a userspace buffer. Both modes run the
//! same pump code and pass the same tests.
//!
//! Invariants:
//! - a pipe or buffer is taken from the pool only while bytes are in flight and
//!   goes back empty; one that still holds bytes when its connection fails is
//!   dropped (closed), never reused;
//! - end of file on one side becomes shutdown(SHUT_WR) on the other (half-close),
//!   and the other direction keeps flowing;
//! - a reset on one side becomes a reset on the other (SO_LINGER 0, then close);
//! - a connection with no bytes either way for `idle_timeout` is closed.
//!
//! This crate knows nothing of services, schedulers or configuration files; it
//! counts bytes into the [`Backend`] it is handed.

mod carrier;
mod sys;

use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use socket2::SockRef;
use tandem_core::Backend;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use carrier::{Carrier, Pool};
pub use carrier::{CopyBuffer, SplicePipe};

/// How bytes are moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Splice,
    Copy,
}

#[derive(Debug, Clone, Copy)]
pub struct RelayOptions {
    pub mode: Mode,
    pub idle_timeout: Duration,
}

/// Why a relayed connection ended, for logs and the access log.
#[derive(Debug)]
pub enum Ending {
    /// Both sides closed; the client sent its end of file first.
    ClientClosed,
    /// Both sides closed; the backend sent its end of file first.
    BackendClosed,
    /// The client reset the connection (or failed); the backend was reset too.
    ClientReset(io::Error),
    /// The backend reset the connection (or failed); the client was reset too.
    BackendReset(io::Error),
    IdleTimeout,
    /// Cut by the caller (drain timeout at shutdown).
    Cut,
    /// No pipe or buffer could be had (out of file descriptors).
    Internal(io::Error),
}

impl Ending {
    /// A short word for logs: `client_closed`, `backend_reset`, `idle_timeout`, …
    pub fn as_str(&self) -> &'static str {
        match self {
            Ending::ClientClosed => "client_closed",
            Ending::BackendClosed => "backend_closed",
            Ending::ClientReset(_) => "client_reset",
            Ending::BackendReset(_) => "backend_reset",
            Ending::IdleTimeout => "idle_timeout",
            Ending::Cut => "cut",
            Ending::Internal(_) => "internal_error",
        }
    }
}

/// What one relayed connection did.
#[derive(Debug)]
pub struct Relayed {
    pub from_client: u64,
    pub to_client: u64,
    pub ending: Ending,
}

/// Idle pipes kept for reuse; each is two descriptors.
const PIPES_KEPT: usize = 256;
const BUFFERS_KEPT: usize = 256;

/// The shared pools and counters of the byte pump; cheap to clone.
#[derive(Debug, Clone)]
pub struct Forwarder {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pipes: Pool<SplicePipe>,
    buffers: Pool<CopyBuffer>,
    spliced: AtomicU64,
    copied: AtomicU64,
}

impl Default for Forwarder {
    fn default() -> Self {
        Self::new()
    }
}

impl Forwarder {
    pub fn new() -> Self {
        Forwarder {
            inner: Arc::new(Inner {
                pipes: Pool::new(PIPES_KEPT),
                buffers: Pool::new(BUFFERS_KEPT),
                spliced: AtomicU64::new(0),
                copied: AtomicU64::new(0),
            }),
        }
    }

    /// Bytes moved by splice(2) since start, both directions.
    pub fn spliced_bytes(&self) -> u64 {
        self.inner.spliced.load(Relaxed)
    }

    /// Bytes moved through userspace buffers since start, both directions.
    pub fn copied_bytes(&self) -> u64 {
        self.inner.copied.load(Relaxed)
    }

    /// Pipes waiting in the pool (each holds no bytes).
    pub fn idle_pipes(&self) -> usize {
        self.inner.pipes.idle()
    }

    /// Relays until both sides close, one resets, the connection is idle for
    /// `idle_timeout`, or `cut` is cancelled. The caller drops both streams
    /// afterwards; after a reset their linger is zero so the drop sends RST.
    pub async fn relay(
        &self,
        client: &TcpStream,
        backend: &TcpStream,
        options: RelayOptions,
        stats: &Backend,
        cut: &CancellationToken,
    ) -> Relayed {
        match options.mode {
            Mode::Splice => {
                self.relay_with(
                    client,
                    backend,
                    options.idle_timeout,
                    stats,
                    cut,
                    &self.inner.pipes,
                    SplicePipe::new,
                    &self.inner.spliced,
                )
                .await
            }
            Mode::Copy => {
                self.relay_with(
                    client,
                    backend,
                    options.idle_timeout,
                    stats,
                    cut,
                    &self.inner.buffers,
                    || Ok(CopyBuffer::new()),
                    &self.inner.copied,
                )
                .await
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn relay_with<C: Carrier>(
        &self,
        client: &TcpStream,
        backend: &TcpStream,
        idle_timeout: Duration,
        stats: &Backend,
        cut: &CancellationToken,
        pool: &Pool<C>,
        make: fn() -> io::Result<C>,
        moved: &AtomicU64,
    ) -> Relayed {
        let activity = Activity::new();
        let upstream = one_way(client, backend, pool, make, &activity, &activity.up, |n| {
            stats.add_bytes_from_client(n);
            moved.fetch_add(n, Relaxed);
        });
        let downstream = one_way(
            backend,
            client,
            pool,
            make,
            &activity,
            &activity.down,
            |n| {
                stats.add_bytes_to_client(n);
                moved.fetch_add(n, Relaxed);
            },
        );
        tokio::pin!(upstream, downstream);

        let mut from_client = None::<u64>;
        let mut to_client = None::<u64>;
        let mut first_eof = None;
        let idle = tokio::time::sleep(idle_timeout);
        tokio::pin!(idle);

        let ending = loop {
            tokio::select! {
                (n, end) = &mut upstream, if from_client.is_none() => {
                    from_client = Some(n);
                    match end {
                        OneWay::Eof => { first_eof.get_or_insert(Ending::ClientClosed); }
                        OneWay::ReadFailed(e) => { reset(backend); break Ending::ClientReset(e); }
                        OneWay::WriteFailed(e) => { reset(client); break Ending::BackendReset(e); }
                        OneWay::NoCarrier(e) => break Ending::Internal(e),
                    }
                }
                (n, end) = &mut downstream, if to_client.is_none() => {
                    to_client = Some(n);
                    match end {
                        OneWay::Eof => { first_eof.get_or_insert(Ending::BackendClosed); }
                        OneWay::ReadFailed(e) => { reset(client); break Ending::BackendReset(e); }
                        OneWay::WriteFailed(e) => { reset(backend); break Ending::ClientReset(e); }
                        OneWay::NoCarrier(e) => break Ending::Internal(e),
                    }
                }
                () = &mut idle => {
                    let quiet_since = activity.last();
                    if quiet_since.elapsed() >= idle_timeout {
                        break Ending::IdleTimeout;
                    }
                    idle.as_mut().reset(quiet_since + idle_timeout);
                }
                () = cut.cancelled() => break Ending::Cut,
            }
            if from_client.is_some() && to_client.is_some() {
                break first_eof.unwrap_or(Ending::ClientClosed);
            }
        };
        Relayed {
            from_client: from_client.unwrap_or(activity.up.load(Relaxed)),
            to_client: to_client.unwrap_or(activity.down.load(Relaxed)),
            ending,
        }
    }
}

/// Sets SO_LINGER to zero so that closing the socket sends RST, as the other side did.
fn reset(stream: &TcpStream) {
    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

/// When bytes last moved (either way), and how many moved each way so far,
/// shared by the two directions of one connection.
struct Activity {
    start: Instant,
    last_ms: AtomicU64,
    up: AtomicU64,
    down: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Relaxed))
    }
}

/// How one direction ended.
enum OneWay {
    /// End of file read and passed on as shutdown(SHUT_WR).
    Eof,
    /// Reading from the source failed (usually a reset).
    ReadFailed(io::Error),
    /// Writing to the destination failed (it reset or went away).
    WriteFailed(io::Error),
    NoCarrier(io::Error),
}

/// Pumps `src` → `dst` until end of file or an error; returns the bytes moved
/// (also added to `moved` as they go, for a relay that ends early).
async fn one_way<C: Carrier>(
    src: &TcpStream,
    dst: &TcpStream,
    pool: &Pool<C>,
    make: fn() -> io::Result<C>,
    activity: &Activity,
    moved: &AtomicU64,
    count: impl Fn(u64),
) -> (u64, OneWay) {
    let mut total = 0u64;
    let mut held: Option<C> = None;
    loop {
        if let Err(e) = src.readable().await {
            return (total, OneWay::ReadFailed(e));
        }
        let carrier = match held.as_mut() {
            Some(c) => c,
            None => match pool.take_or(make) {
                Ok(c) => held.insert(c),
                Err(e) => return (total, OneWay::NoCarrier(e)),
            },
        };
        let n = match carrier.fill_from(src) {
            Ok(0) => {
                if let Some(c) = held.take() {
                    pool.put(c);
                }
                let _ = SockRef::from(dst).shutdown(Shutdown::Write);
                return (total, OneWay::Eof);
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Nothing in flight: give the carrier back while we wait.
                if let Some(c) = held.take() {
                    pool.put(c);
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return (total, OneWay::ReadFailed(e)),
        };
        while carrier.pending() > 0 {
            if let Err(e) = dst.writable().await {
                return (total, OneWay::WriteFailed(e));
            }
            match carrier.drain_into(dst) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return (total, OneWay::WriteFailed(e)),
            }
        }
        total += n as u64;
        moved.fetch_add(n as u64, Relaxed);
        count(n as u64);
        activity.touch();
    }
}
