//! What holds bytes between a read from one socket and the write to the other:
//! a kernel pipe for splice(2), or a userspace buffer. Both are pooled and
//! taken only while bytes are in flight, so an idle connection holds neither.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;
use std::task::{Context, Poll, Waker};

use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::sys;

/// How much a pipe holds: more than the default 64 KiB, so a bulk transfer
/// needs fewer splice calls (and fewer readiness round trips) per byte. Only
/// the pages actually in flight use memory; an empty pipe costs its ring of
/// slot descriptors. Where the kernel refuses (an unprivileged user over
/// /proc/sys/fs/pipe-max-size or pipe-user-pages-soft), pipes keep the size
/// they were made with.
pub(crate) const PIPE_SIZE: usize = 1024 * 1024;

/// A pipe pair that owns its descriptors (closed on drop) and counts the bytes
/// still inside it, so a pipe with data in it is never handed to another connection.
#[derive(Debug)]
pub struct SplicePipe {
    read: OwnedFd,
    write: OwnedFd,
    pending: usize,
    capacity: usize,
}

impl SplicePipe {
    pub fn new() -> io::Result<Self> {
        let (read, write) = sys::pipe()?;
        // 64 KiB is what Linux gives a new pipe (less for a user over its soft limit).
        let capacity = sys::set_pipe_size(write.as_fd(), PIPE_SIZE).unwrap_or(64 * 1024);
        Ok(SplicePipe {
            read,
            write,
            pending: 0,
            capacity,
        })
    }

    /// Splices what `src` has into the pipe, as much as fits. `Ok(0)` is end
    /// of file.
    pub(crate) fn fill_from(&mut self, src: &TcpStream) -> io::Result<usize> {
        let room = self.capacity - self.pending;
        let n = src.try_io(Interest::READABLE, || {
            sys::splice(src.as_fd(), self.write.as_fd(), room)
        })?;
        self.pending += n;
        Ok(n)
    }

    /// Splices pending bytes to `dst`; returns how many went.
    pub(crate) fn drain_into(&mut self, dst: &TcpStream) -> io::Result<usize> {
        let n = dst.try_io(Interest::WRITABLE, || {
            sys::splice(self.read.as_fd(), dst.as_fd(), self.pending)
        })?;
        self.pending -= n;
        Ok(n)
    }

    pub(crate) fn pending(&self) -> usize {
        self.pending
    }
}

/// Size of a userspace buffer: one read at most. Like HAProxy's default
/// bufsize and nginx's proxy_buffer_size for streams.
pub(crate) const COPY_BUFFER: usize = 16 * 1024;

/// A userspace buffer with the unsent part `start..end`.
#[derive(Debug)]
pub struct CopyBuffer {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl CopyBuffer {
    pub fn new() -> Self {
        CopyBuffer {
            buf: vec![0; COPY_BUFFER].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// Reads what `src` has into the empty buffer; `Ok(0)` is end of file.
    pub(crate) fn fill_from(&mut self, src: &TcpStream) -> io::Result<usize> {
        debug_assert_eq!(self.pending(), 0);
        let n = read_some(src, &mut self.buf)?;
        self.start = 0;
        self.end = n;
        Ok(n)
    }

    /// Keeps `bytes` (at most [`COPY_BUFFER`]) to send later; the buffer must be empty.
    pub(crate) fn keep(&mut self, bytes: &[u8]) {
        debug_assert_eq!(self.pending(), 0);
        self.buf[..bytes.len()].copy_from_slice(bytes);
        self.start = 0;
        self.end = bytes.len();
    }

    /// Writes pending bytes to `dst`; returns how many went.
    pub(crate) fn drain_into(&mut self, dst: &TcpStream) -> io::Result<usize> {
        let n = write_some(dst, &self.buf[self.start..self.end], false)?;
        self.start += n;
        Ok(n)
    }

    pub(crate) fn pending(&self) -> usize {
        self.end - self.start
    }
}

impl Default for CopyBuffer {
    fn default() -> Self {
        Self::new()
    }
}

/// One read(2) from `src` into `buf`. A read that returns less than `buf`
/// holds has emptied the socket's receive queue, so the stream's read
/// readiness is cleared at once, as tokio's own `poll_read` does: the next
/// wait goes to epoll instead of costing a read(2) that fails with EAGAIN.
/// End of file is not lost: tokio keeps the read-closed readiness that
/// EPOLLRDHUP set, so a later wait returns at once and the read returns 0.
pub(crate) fn read_some(src: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    let result = src.try_io(Interest::READABLE, || {
        got = sys::recv(src.as_fd(), buf)?;
        if got > 0 && got < buf.len() {
            // try_io clears the readiness it saw when the closure says
            // WouldBlock; a wakeup that came in meanwhile is kept.
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(got)
        }
    });
    match result {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
        other => other,
    }
}

/// One send(2) of `buf` to `dst`, driven by tokio's write readiness; `more`
/// says the end of file follows at once (see [`sys::send`]).
pub(crate) fn write_some(dst: &TcpStream, buf: &[u8], more: bool) -> io::Result<usize> {
    dst.try_io(Interest::WRITABLE, || sys::send(dst.as_fd(), buf, more))
}

/// Whether epoll has already reported the peer's end of file on `src`
/// (EPOLLRDHUP or EPOLLHUP, which a reset also brings): the bytes read from it
/// now are its last. tokio keeps this readiness until the stream is dropped.
/// Asked while read readiness is still set (before the read that clears it),
/// tokio answers from an atomic load; the future's drop still takes the
/// socket's waiter lock once. Polled with a no-op waker: the answer is all
/// that is wanted, never a wakeup.
pub(crate) fn peer_finished(src: &TcpStream) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let ready = std::pin::pin!(src.ready(Interest::READABLE));
    matches!(ready.poll(&mut cx), Poll::Ready(Ok(r)) if r.is_read_closed())
}

/// A bounded stack of idle carriers. Taking one is a short uncontended lock,
/// done once per burst of bytes, not per byte; carriers beyond `keep` are freed.
#[derive(Debug)]
pub(crate) struct Pool<C> {
    idle: Mutex<Vec<C>>,
    keep: usize,
}

impl<C> Pool<C> {
    pub(crate) fn new(keep: usize) -> Self {
        Pool {
            idle: Mutex::new(Vec::new()),
            keep,
        }
    }

    pub(crate) fn take_or(&self, make: impl FnOnce() -> io::Result<C>) -> io::Result<C> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match pooled {
            Some(c) => Ok(c),
            None => make(),
        }
    }

    /// Returns an empty carrier; the caller drops carriers that still hold bytes.
    pub(crate) fn put(&self, carrier: C) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < self.keep {
            idle.push(carrier);
        }
    }

    pub(crate) fn idle(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}
