//! tandem's TCP byte pump.
//!
//! [`Forwarder::relay`] moves bytes both ways between an accepted client and a
//! connected backend until both sides have closed. On Linux the default
//! [`Forwarding::Splice`] moves bulk transfers socket → pipe → socket with
//! non-blocking splice(2) driven by tokio readiness, so their payload never
//! enters userspace, and copies small messages (one recv(2) and one send(2)
//! beat two splice calls and the one that finds the socket empty); each
//! direction switches on the size of its reads. [`Forwarding::Copy`] always copies.
//! Both modes run the same pump code and pass the same tests.
//!
//! A relayed connection is one small state machine, [`Relay`] (two pump
//! directions, one idle timer, the cut watch), polled by its task; while idle
//! it holds no pipe, no buffer, and about 330 bytes of future. The numbers
//! behind these choices are in docs/performance.md.
//!
//! Invariants:
//! - a pipe or buffer is taken from the pool only while bytes are in flight and
//!   goes back empty; one that still holds bytes when its connection fails is
//!   dropped (closed), never reused;
//! - end of file on one side becomes shutdown(SHUT_WR) on the other (half-close),
//!   and the other direction keeps flowing; the second end of file is passed
//!   on by the caller's close of both streams, which ends the relay anyway;
//! - a reset on one side becomes a reset on the other (SO_LINGER 0, then close);
//! - a connection with no bytes either way for `idle_timeout` is closed (within
//!   a quarter of `idle_timeout` after that: idleness is checked four times per
//!   `idle_timeout`, so moving bytes reads no clock).
//!
//! This crate knows nothing of services, schedulers or configuration files; it
//! counts bytes into the [`Backend`] it is handed.

mod carrier;
mod pump;
mod sys;

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use pin_project_lite::pin_project;
use socket2::{SockRef, TcpKeepalive};
use tandem_core::Backend;
pub use tandem_core::Forwarding;
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

use carrier::Pool;
pub(crate) use carrier::{CopyBuffer, SplicePipe};
use pump::{Lane, OneWay, Pump, Side};

#[derive(Debug, Clone, Copy)]
pub struct RelayOptions {
    pub mode: Forwarding,
    pub idle_timeout: Duration,
    /// Switch TCP keepalive ([`keepalive_params`]) on for the backend leg
    /// once the connection has lasted [`KEEPALIVE_AFTER`].
    pub backend_keepalive: bool,
}

/// Keepalive on both legs: first probe after a minute of silence, then every
/// 10 s, dropped after 6 unanswered probes. Finds dead peers of silent streams
/// (`kubectl logs -f`, `exec`) long before `idle_timeout`.
pub const KEEPALIVE_TIME: Duration = Duration::from_secs(60);
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const KEEPALIVE_RETRIES: u32 = 6;

/// The backend leg's keepalive is switched on when its connection has lasted
/// this long. Most connections of a busy service end sooner and never idle
/// for [`KEEPALIVE_TIME`], so they are spared the four setsockopt(2) calls;
/// a long one gets its first probe at most this much later than a minute.
/// (The client leg inherits keepalive from the listening socket for free.)
pub const KEEPALIVE_AFTER: Duration = Duration::from_secs(1);

/// The keepalive settings of both legs, for socket2.
pub fn keepalive_params() -> TcpKeepalive {
    TcpKeepalive::new()
        .with_time(KEEPALIVE_TIME)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES)
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

/// Idleness is checked this many times per `idle_timeout`: a silent
/// connection is closed between `idle_timeout` and 1.25 × `idle_timeout`
/// after its last byte.
const IDLE_CHECKS: u32 = 4;

/// The shared pools and counters of the byte pump; cheap to clone.
#[derive(Debug, Clone)]
pub struct Forwarder {
    inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pipes: Pool<Box<SplicePipe>>,
    buffers: Pool<Box<CopyBuffer>>,
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

    /// Bytes moved through userspace since start, both directions.
    pub fn copied_bytes(&self) -> u64 {
        self.inner.copied.load(Relaxed)
    }

    /// Pipes waiting in the pool (each holds no bytes).
    pub fn idle_pipes(&self) -> usize {
        self.inner.pipes.idle()
    }

    /// Relays until both sides close, one resets, the connection is idle for
    /// `idle_timeout`, or `cut` is cancelled. The caller drops both streams
    /// afterwards: after a reset their linger is zero so the drop sends RST;
    /// after both ends of file the drop sends the second FIN.
    pub fn relay<'a>(
        &'a self,
        client: &'a TcpStream,
        backend: &'a TcpStream,
        options: RelayOptions,
        stats: &'a Backend,
        cut: &'a CancellationToken,
    ) -> Relay<'a> {
        let may_splice = options.mode == Forwarding::Splice;
        let period = idle_check_period(options.idle_timeout);
        // The keepalive timer comes first when it is due before the first
        // idle check; otherwise keepalive is switched on at once.
        let keepalive_due = options.backend_keepalive && period > KEEPALIVE_AFTER;
        if options.backend_keepalive && !keepalive_due {
            set_keepalive(backend);
        }
        let first_tick = if keepalive_due {
            KEEPALIVE_AFTER
        } else {
            period
        };
        Relay {
            inner: &self.inner,
            client,
            backend,
            stats,
            cut,
            up: Pump::new(may_splice),
            down: Pump::new(may_splice),
            idle_timeout: options.idle_timeout,
            quiet_checks: 0,
            first_eof: None,
            keepalive_due,
            watching: None,
            idle: tokio::time::sleep(first_tick),
            cancelled: cut.cancelled(),
        }
    }
}

fn idle_check_period(idle_timeout: Duration) -> Duration {
    (idle_timeout / IDLE_CHECKS).max(Duration::from_millis(1))
}

pin_project! {
    /// One relayed connection: a state machine over its two directions, its
    /// idle check and the cut watch, polled by the connection's task. Its size
    /// is most of what an idle connection costs, so it holds no pipe, no
    /// buffer and no clock reading while idle.
    #[must_use = "a relay moves nothing unless awaited"]
    pub struct Relay<'a> {
        inner: &'a Inner,
        client: &'a TcpStream,
        backend: &'a TcpStream,
        stats: &'a Backend,
        cut: &'a CancellationToken,
        up: Pump,
        down: Pump,
        idle_timeout: Duration,
        // Consecutive idle checks that found no byte moved.
        quiet_checks: u32,
        first_eof: Option<Side>,
        // The idle timer's first tick is the backend keepalive's, not an idle check.
        keepalive_due: bool,
        // The waker the cut watch was registered with: polling the watch again
        // takes a lock shared by every connection of the service, so only a
        // new waker (the relay moved to another task) registers again.
        watching: Option<Waker>,
        #[pin]
        idle: Sleep,
        #[pin]
        cancelled: WaitForCancellationFuture<'a>,
    }
}

impl std::fmt::Debug for Relay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("from_client", &self.up.moved)
            .field("to_client", &self.down.moved)
            .field("idle_timeout", &self.idle_timeout)
            .finish_non_exhaustive()
    }
}

impl Future for Relay<'_> {
    type Output = Relayed;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Relayed> {
        let mut this = self.project();
        let ending = 'ending: {
            if this.cut.is_cancelled() {
                break 'ending Ending::Cut;
            }
            if !this
                .watching
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                if this.cancelled.as_mut().poll(cx).is_ready() {
                    break 'ending Ending::Cut;
                }
                *this.watching = Some(cx.waker().clone());
            }
            let (client, backend) = (*this.client, *this.backend);
            if !this.up.is_done() {
                let lane = Lane {
                    src: client,
                    dst: backend,
                    inner: this.inner,
                    stats: this.stats,
                    side: Side::FromClient,
                };
                if let Poll::Ready(end) = this.up.poll(cx, &lane) {
                    match end {
                        OneWay::Eof => {
                            this.first_eof.get_or_insert(Side::FromClient);
                            pass_eof(backend, this.down.is_done());
                        }
                        OneWay::ReadFailed(e) => {
                            reset(backend);
                            break 'ending Ending::ClientReset(e);
                        }
                        OneWay::WriteFailed(e) => {
                            reset(client);
                            break 'ending Ending::BackendReset(e);
                        }
                        OneWay::NoCarrier(e) => break 'ending Ending::Internal(e),
                    }
                }
            }
            if !this.down.is_done() {
                let lane = Lane {
                    src: backend,
                    dst: client,
                    inner: this.inner,
                    stats: this.stats,
                    side: Side::ToClient,
                };
                if let Poll::Ready(end) = this.down.poll(cx, &lane) {
                    match end {
                        OneWay::Eof => {
                            this.first_eof.get_or_insert(Side::ToClient);
                            pass_eof(client, this.up.is_done());
                        }
                        OneWay::ReadFailed(e) => {
                            reset(client);
                            break 'ending Ending::BackendReset(e);
                        }
                        OneWay::WriteFailed(e) => {
                            reset(backend);
                            break 'ending Ending::ClientReset(e);
                        }
                        OneWay::NoCarrier(e) => break 'ending Ending::Internal(e),
                    }
                }
            }
            if this.up.is_done() && this.down.is_done() {
                break 'ending match this.first_eof {
                    Some(Side::ToClient) => Ending::BackendClosed,
                    _ => Ending::ClientClosed,
                };
            }
            // A check that finds bytes moved since the previous one starts the
            // count again: the connection was busy at most one period ago.
            // `IDLE_CHECKS` quiet checks in a row span at least `idle_timeout`.
            while this.idle.as_mut().poll(cx).is_ready() {
                let period = idle_check_period(*this.idle_timeout);
                if std::mem::take(this.keepalive_due) {
                    set_keepalive(backend);
                    // Idle checks keep their times: the first at one period.
                    let next = this.idle.deadline() + (period - KEEPALIVE_AFTER);
                    this.idle.as_mut().reset(next);
                    continue;
                }
                let moved = this.up.take_touched() | this.down.take_touched();
                *this.quiet_checks = if moved { 0 } else { *this.quiet_checks + 1 };
                if *this.quiet_checks >= IDLE_CHECKS {
                    break 'ending Ending::IdleTimeout;
                }
                let next = this.idle.deadline() + period;
                this.idle.as_mut().reset(next);
            }
            return Poll::Pending;
        };
        this.up.release(this.inner);
        this.down.release(this.inner);
        Poll::Ready(Relayed {
            from_client: this.up.moved,
            to_client: this.down.moved,
            ending,
        })
    }
}

/// Passes an end of file on as shutdown(SHUT_WR) on `dst`, unless the other
/// direction has ended too: then the relay is over and the caller's close of
/// `dst` sends the FIN, one system call fewer per connection. (Every byte
/// from `dst` was read to its end of file, so that close is orderly, not a
/// reset.)
fn pass_eof(dst: &TcpStream, other_way_done: bool) {
    if !other_way_done {
        let _ = SockRef::from(dst).shutdown(Shutdown::Write);
    }
}

fn set_keepalive(stream: &TcpStream) {
    // A socket that refuses (it is being reset) ends soon anyway.
    let _ = SockRef::from(stream).set_tcp_keepalive(&keepalive_params());
}

/// Sets SO_LINGER to zero so that closing the socket sends RST, as the other side did.
fn reset(stream: &TcpStream) {
    let _ = SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;
    use tandem_core::BackendAddress;

    /// A relayed connection's future is most of what an idle connection
    /// costs in memory: keep it small.
    #[tokio::test]
    async fn relay_future_is_small() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (backend, _) = listener.accept().await.unwrap();
        let forwarder = Forwarder::new();
        let stats = Backend::new(BackendAddress(addr), None, NonZeroU32::MIN, false, true);
        let cut = CancellationToken::new();
        let options = RelayOptions {
            mode: Forwarding::Splice,
            idle_timeout: Duration::from_secs(60),
            backend_keepalive: true,
        };
        let relay = forwarder.relay(&client, &backend, options, &stats, &cut);
        let size = std::mem::size_of_val(&relay);
        eprintln!("relay future: {size} bytes");
        // 112 of them are tokio's Sleep, 72 the cut watch, 2 × 32 the pumps.
        assert!(size <= 352, "relay future grew to {size} bytes");
    }
}
