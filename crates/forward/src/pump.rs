//! One direction of a relayed connection, as a small state machine polled by
//! the relay: no future of its own, so a connection's two directions cost a
//! few words each while idle.
//!
//! Small messages are read into a per-thread scratch buffer and sent on at
//! once: one recv(2) and one send(2) each, nothing taken from a pool. Bytes
//! the destination cannot take yet move into a pooled carrier until they can.
//! In splice mode a direction switches to splice(2) once a read is large
//! (bulk transfer), and back to copying when reads stay small (a few splices
//! in a row, not one: a bulk reader that woke early sees a small one): for a
//! few hundred bytes the two splice calls plus the one that finds the socket
//! empty cost more than a copy both ways.

use std::cell::RefCell;
use std::io;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

use tokio::net::TcpStream;

use crate::carrier::{peer_finished, read_some, write_some, CopyBuffer, SplicePipe, COPY_BUFFER};
use crate::Inner;

/// A read at least this large switches a splice-mode direction to splice;
/// [`SMALL_SPLICES`] smaller splices in a row switch it back to copying.
pub(crate) const SPLICE_FROM: usize = 16 * 1024;

/// How many small splices in a row mean the stream now carries small
/// messages. One is not enough: a bulk transfer whose reader wakes up early
/// often finds less than [`SPLICE_FROM`] waiting, and flipping it to copying
/// (16 KiB per read) and back cost up to 50% more CPU per byte with four
/// iperf3 streams.
pub(crate) const SMALL_SPLICES: u8 = 4;

thread_local! {
    /// One scratch buffer per worker thread: bytes are read into it and
    /// written on without awaiting in between, so no two directions ever
    /// share it at once.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0u8; COPY_BUFFER].into_boxed_slice());
}

/// How one direction ended.
pub(crate) enum OneWay {
    /// End of file read; the relay passes it on.
    Eof,
    /// Reading from the source failed (usually a reset).
    ReadFailed(io::Error),
    /// Writing to the destination failed (it reset or went away).
    WriteFailed(io::Error),
    /// No pipe or buffer could be had (out of file descriptors).
    NoCarrier(io::Error),
}

/// Bytes in flight: read from the source, not yet written to the destination.
/// Boxed (and pooled boxed) so that a pump is a few words.
#[derive(Debug)]
enum Held {
    Pipe(Box<SplicePipe>),
    Buffer(Box<CopyBuffer>),
}

/// Which way a pump moves bytes, for the backend's counters.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Side {
    FromClient,
    ToClient,
}

/// What a pump works with; borrowed from the relay at each poll.
pub(crate) struct Lane<'a> {
    pub src: &'a TcpStream,
    pub dst: &'a TcpStream,
    pub inner: &'a Inner,
    pub stats: &'a tandem_core::Backend,
    pub side: Side,
}

impl Lane<'_> {
    fn count(&self, n: usize, spliced: bool) {
        let n = n as u64;
        match self.side {
            Side::FromClient => self.stats.add_bytes_from_client(n),
            Side::ToClient => self.stats.add_bytes_to_client(n),
        }
        let method = if spliced {
            &self.inner.spliced
        } else {
            &self.inner.copied
        };
        method.fetch_add(n, Relaxed);
    }
}

/// One direction's state.
#[derive(Debug)]
pub(crate) struct Pump {
    held: Option<Held>,
    /// Bytes written to the destination so far.
    pub(crate) moved: u64,
    /// Whether this direction may splice at all (splice mode).
    may_splice: bool,
    /// Whether the next read is a splice.
    splicing: bool,
    /// Small splices in a row (see [`SMALL_SPLICES`]).
    small_splices: u8,
    /// Whether the source's end of file was read (bytes may still be in the pipe).
    src_eof: bool,
    /// Whether bytes moved since the relay's last idle check.
    touched: bool,
    /// Whether the direction has ended (end of file or an error).
    done: bool,
}

/// What one attempt to read did.
enum Fill {
    Moved,
    Eof,
    /// Nothing to read now; the stream's read readiness is cleared.
    Empty,
    Failed(OneWay),
}

/// Where a run of the pump stopped.
enum Step {
    /// Waiting; the wakeups it needs are registered.
    Pending,
    /// The other way of moving bytes suits the stream now; the carrier is empty.
    Switch,
    End(OneWay),
}

impl Pump {
    pub(crate) fn new(may_splice: bool) -> Self {
        Pump {
            held: None,
            moved: 0,
            may_splice,
            splicing: false,
            small_splices: 0,
            src_eof: false,
            touched: false,
            done: false,
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done
    }

    /// Whether bytes moved since the last call.
    pub(crate) fn take_touched(&mut self) -> bool {
        std::mem::take(&mut self.touched)
    }

    fn count(&mut self, n: usize, spliced: bool, lane: &Lane<'_>) {
        self.moved += n as u64;
        self.touched = true;
        lane.count(n, spliced);
    }

    /// Moves bytes until the source has nothing more to give or the
    /// destination is full (`Pending`, wakeups registered), or the direction
    /// ends (`Ready`). End of file is not passed on here: the relay does it.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>, lane: &Lane<'_>) -> Poll<OneWay> {
        let end = loop {
            let step = match self.held.take() {
                Some(Held::Pipe(pipe)) => self.poll_pipe(cx, lane, pipe),
                None if self.splicing => {
                    // Take a pipe only when there is something to put in it.
                    match lane.src.poll_read_ready(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Err(e)) => break OneWay::ReadFailed(e),
                        Poll::Ready(Ok(())) => {}
                    }
                    match lane.inner.pipes.take_or(|| SplicePipe::new().map(Box::new)) {
                        Ok(pipe) => self.poll_pipe(cx, lane, pipe),
                        Err(e) => Step::End(OneWay::NoCarrier(e)),
                    }
                }
                held => {
                    self.held = held;
                    self.poll_copy(cx, lane)
                }
            };
            match step {
                Step::Pending => return Poll::Pending,
                Step::Switch => {}
                Step::End(end) => break end,
            }
        };
        self.done = true;
        self.release(lane.inner);
        Poll::Ready(end)
    }

    /// Splices source → pipe → destination: fill the empty pipe with what the
    /// source has, drain it, again. (Filling a pipe that still holds bytes
    /// while the destination is full was measured: more, smaller splices and
    /// 6–15% more CPU per byte.)
    fn poll_pipe(
        &mut self,
        cx: &mut Context<'_>,
        lane: &Lane<'_>,
        mut pipe: Box<SplicePipe>,
    ) -> Step {
        let step = loop {
            let mut progress = false;
            if !self.src_eof && pipe.pending() == 0 {
                match lane.src.poll_read_ready(cx) {
                    Poll::Pending => {}
                    Poll::Ready(Err(e)) => break Step::End(OneWay::ReadFailed(e)),
                    Poll::Ready(Ok(())) => {
                        match pipe.fill_from(lane.src) {
                            Ok(0) => self.src_eof = true,
                            Ok(n) if n >= SPLICE_FROM => self.small_splices = 0,
                            Ok(_) => {
                                self.small_splices += 1;
                                self.splicing = self.small_splices < SMALL_SPLICES;
                            }
                            // Readiness cleared: poll again to register the wakeup.
                            Err(e) if is_retry(&e) => {}
                            Err(e) => break Step::End(OneWay::ReadFailed(e)),
                        }
                        progress = true;
                    }
                }
            }
            if pipe.pending() > 0 {
                match pipe.drain_into(lane.dst) {
                    Ok(n) => {
                        self.count(n, true, lane);
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        match lane.dst.poll_write_ready(cx) {
                            Poll::Pending => {}
                            Poll::Ready(Ok(())) => progress = true,
                            Poll::Ready(Err(e)) => break Step::End(OneWay::WriteFailed(e)),
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                    Err(e) => break Step::End(OneWay::WriteFailed(e)),
                }
            }
            if pipe.pending() == 0 {
                if self.src_eof {
                    break Step::End(OneWay::Eof);
                }
                if !self.splicing {
                    break Step::Switch;
                }
            }
            if !progress {
                break Step::Pending;
            }
        };
        if pipe.pending() == 0 {
            // Nothing in flight: the pipe goes back while we wait.
            lane.inner.pipes.put(pipe);
        } else if matches!(step, Step::Pending) {
            self.held = Some(Held::Pipe(pipe));
        }
        // A pipe that still holds bytes of a failed connection is closed.
        step
    }

    /// Copies source → destination through the thread's scratch buffer, or
    /// through a pooled buffer while the destination is full.
    fn poll_copy(&mut self, cx: &mut Context<'_>, lane: &Lane<'_>) -> Step {
        loop {
            if let Some(Held::Buffer(buffer)) = self.held.as_mut() {
                while buffer.pending() > 0 {
                    match buffer.drain_into(lane.dst) {
                        Ok(n) => {
                            self.moved += n as u64;
                            self.touched = true;
                            lane.count(n, false);
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            match lane.dst.poll_write_ready(cx) {
                                Poll::Pending => return Step::Pending,
                                Poll::Ready(Ok(())) => {}
                                Poll::Ready(Err(e)) => return Step::End(OneWay::WriteFailed(e)),
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Step::End(OneWay::WriteFailed(e)),
                    }
                }
            }
            if self.splicing {
                self.release(lane.inner);
                return Step::Switch;
            }
            match lane.src.poll_read_ready(cx) {
                Poll::Pending => {
                    // Nothing in flight: give the buffer back while we wait.
                    self.release(lane.inner);
                    return Step::Pending;
                }
                Poll::Ready(Err(e)) => return Step::End(OneWay::ReadFailed(e)),
                Poll::Ready(Ok(())) => {}
            }
            match self.copy_fill(lane) {
                Fill::Moved | Fill::Empty => {}
                Fill::Eof => return Step::End(OneWay::Eof),
                Fill::Failed(end) => return Step::End(end),
            }
        }
    }

    fn copy_fill(&mut self, lane: &Lane<'_>) -> Fill {
        if let Some(Held::Buffer(buffer)) = self.held.as_mut() {
            // A busy direction keeps its buffer until the source runs dry.
            return match buffer.fill_from(lane.src) {
                Ok(0) => Fill::Eof,
                Ok(n) => {
                    self.splicing = self.may_splice && n >= SPLICE_FROM;
                    self.small_splices = 0;
                    Fill::Moved
                }
                Err(e) => classify_read_error(e),
            };
        }
        // Asked before the read, which clears read readiness (see `peer_finished`).
        let last = peer_finished(lane.src);
        SCRATCH.with(|cell| {
            let mut scratch = cell.borrow_mut();
            let n = match read_some(lane.src, &mut scratch) {
                Ok(0) => return Fill::Eof,
                Ok(n) => n,
                Err(e) => return classify_read_error(e),
            };
            self.splicing = self.may_splice && n >= SPLICE_FROM;
            self.small_splices = 0;
            // When the source's end of file is already here (`last`), the relay
            // passes it on right after this send: MSG_MORE lets the kernel put these
            // bytes and the FIN in one segment (a request or response followed
            // by a close, the usual end of a short connection), one segment
            // and one wakeup of the peer fewer.
            let sent = match write_some(lane.dst, &scratch[..n], last) {
                Ok(sent) => sent,
                Err(e) if is_retry(&e) => 0,
                Err(e) => return Fill::Failed(OneWay::WriteFailed(e)),
            };
            if sent > 0 {
                self.count(sent, false, lane);
            }
            if sent < n {
                // The destination is full: keep the rest until it drains.
                let mut buffer = match lane.inner.buffers.take_or(|| Ok(Box::default())) {
                    Ok(b) => b,
                    Err(e) => return Fill::Failed(OneWay::NoCarrier(e)),
                };
                buffer.keep(&scratch[sent..n]);
                self.held = Some(Held::Buffer(buffer));
            }
            Fill::Moved
        })
    }

    /// Gives an empty carrier back to its pool; one that still holds bytes is
    /// dropped (closed) with the pump instead.
    pub(crate) fn release(&mut self, inner: &Inner) {
        match self.held.take() {
            Some(Held::Pipe(p)) if p.pending() == 0 => inner.pipes.put(p),
            Some(Held::Buffer(b)) if b.pending() == 0 => inner.buffers.put(b),
            other => self.held = other,
        }
    }
}

fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

fn classify_read_error(e: io::Error) -> Fill {
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Fill::Empty,
        _ => Fill::Failed(OneWay::ReadFailed(e)),
    }
}
