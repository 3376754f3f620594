//! What holds bytes between a read from one socket and the write to the other:
//! a kernel pipe for splice(2), or a userspace buffer for the copy path. Both are
//! pooled and taken only while bytes are in flight, so an idle connection holds
//! neither.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;

use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::sys;

/// Bytes read from one socket and not yet written to the other.
pub(crate) trait Carrier: Send + Sized {
    /// Reads from `src` into the (empty) carrier. `Ok(0)` is end of file.
    fn fill_from(&mut self, src: &TcpStream) -> io::Result<usize>;
    /// Writes pending bytes to `dst`; returns how many went.
    fn drain_into(&mut self, dst: &TcpStream) -> io::Result<usize>;
    fn pending(&self) -> usize;
}

/// How much one splice moves at most: the default pipe capacity on Linux.
pub(crate) const PIPE_CAPACITY: usize = 64 * 1024;

/// A pipe pair that owns its descriptors (closed on drop) and counts the bytes
/// still inside it, so a pipe with data in it is never handed to another connection.
#[derive(Debug)]
pub struct SplicePipe {
    read: OwnedFd,
    write: OwnedFd,
    pending: usize,
}

impl SplicePipe {
    pub fn new() -> io::Result<Self> {
        let (read, write) = sys::pipe()?;
        Ok(SplicePipe {
            read,
            write,
            pending: 0,
        })
    }
}

impl Carrier for SplicePipe {
    fn fill_from(&mut self, src: &TcpStream) -> io::Result<usize> {
        debug_assert_eq!(self.pending, 0);
        let n = src.try_io(Interest::READABLE, || {
            sys::splice(src.as_fd(), self.write.as_fd(), PIPE_CAPACITY)
        })?;
        self.pending += n;
        Ok(n)
    }

    fn drain_into(&mut self, dst: &TcpStream) -> io::Result<usize> {
        let n = dst.try_io(Interest::WRITABLE, || {
            sys::splice(self.read.as_fd(), dst.as_fd(), self.pending)
        })?;
        self.pending -= n;
        Ok(n)
    }

    fn pending(&self) -> usize {
        self.pending
    }
}

/// Size of a userspace copy buffer.
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
}

impl Default for CopyBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl Carrier for CopyBuffer {
    fn fill_from(&mut self, src: &TcpStream) -> io::Result<usize> {
        debug_assert_eq!(self.pending(), 0);
        let n = src.try_read(&mut self.buf)?;
        self.start = 0;
        self.end = n;
        Ok(n)
    }

    fn drain_into(&mut self, dst: &TcpStream) -> io::Result<usize> {
        let n = dst.try_write(&self.buf[self.start..self.end])?;
        self.start += n;
        Ok(n)
    }

    fn pending(&self) -> usize {
        self.end - self.start
    }
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
