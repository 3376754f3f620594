//! The only `unsafe` of the forwarder: pipe2(2), fcntl(F_SETPIPE_SZ),
//! splice(2), recv(2) and send(2), wrapped so the rest of the crate handles
//! owned descriptors, slices and `io::Result`s.
//!
//! splice, recv and send go through syscall(2) rather than their C library
//! wrappers: those are thread cancellation points, and switching the
//! cancellation state in and out around every call was 1–2% of the CPU of a
//! proxied small request. tandem never cancels threads.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A pipe's read and write ends, both non-blocking and close-on-exec.
pub(crate) fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: `fds` is a valid array of two c_ints that pipe2 fills in on success.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    Ok((read, write))
}

/// Asks the kernel to make the pipe behind `fd` hold at least `size` bytes;
/// returns the capacity it got (a power of two of pages, at least `size`).
/// Fails with `EPERM` when an unprivileged user would go over
/// /proc/sys/fs/pipe-max-size or its pipe-user-pages limits, and with `EBUSY`
/// when the pipe holds more than `size` bytes already.
pub(crate) fn set_pipe_size(fd: BorrowedFd<'_>, size: usize) -> io::Result<usize> {
    let size =
        libc::c_int::try_from(size).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: the descriptor is borrowed, so open for the duration of the call;
    // F_SETPIPE_SZ takes an int and touches no memory of ours.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, size) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc as usize)
    }
}

/// Moves up to `len` bytes from `from` to `to` without copying them through
/// userspace; one of the two must be a pipe. Never blocks: a side that is not
/// ready gives `WouldBlock`. `Ok(0)` means end of file on `from`.
pub(crate) fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are borrowed, so open for the duration of the call;
    // null offsets are valid for pipes and sockets (they use their own position).
    let n = unsafe {
        libc::syscall(
            libc::SYS_splice,
            from.as_raw_fd(),
            std::ptr::null_mut::<libc::loff_t>(),
            to.as_raw_fd(),
            std::ptr::null_mut::<libc::loff_t>(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    result(n)
}

/// Receives into `buf` from a connected socket. `Ok(0)` is end of file (or an
/// empty `buf`); a non-blocking socket with nothing to read gives `WouldBlock`.
pub(crate) fn recv(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the descriptor is borrowed, so open for the duration of the call;
    // `buf` is valid for writes of `buf.len()` bytes and the kernel writes no
    // more; null address arguments are valid for a connected socket.
    let n = unsafe {
        libc::syscall(
            libc::SYS_recvfrom,
            fd.as_raw_fd(),
            buf.as_mut_ptr(),
            buf.len(),
            0,
            std::ptr::null_mut::<libc::sockaddr>(),
            std::ptr::null_mut::<libc::socklen_t>(),
        )
    };
    result(n)
}

/// Sends from `buf` on a connected socket; returns how much went. No SIGPIPE:
/// a peer that went away gives `BrokenPipe`. With `more` (MSG_MORE) the kernel
/// holds a short segment back until the next send, shutdown or close, so that
/// bytes known to be followed by the end of file leave with its FIN.
pub(crate) fn send(fd: BorrowedFd<'_>, buf: &[u8], more: bool) -> io::Result<usize> {
    let flags = if more {
        libc::MSG_NOSIGNAL | libc::MSG_MORE
    } else {
        libc::MSG_NOSIGNAL
    };
    // SAFETY: the descriptor is borrowed, so open for the duration of the call;
    // `buf` is valid for reads of `buf.len()` bytes; a null address is valid
    // for a connected socket.
    let n = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            fd.as_raw_fd(),
            buf.as_ptr(),
            buf.len(),
            flags,
            std::ptr::null::<libc::sockaddr>(),
            0 as libc::socklen_t,
        )
    };
    result(n)
}

fn result(n: libc::c_long) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn pipe_is_nonblocking_and_cloexec() {
        let (r, w) = pipe().unwrap();
        for fd in [&r, &w] {
            // SAFETY (test): fcntl on an open descriptor we own.
            let fl = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
            assert!(fl & libc::O_NONBLOCK != 0);
            let fdfl = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
            assert!(fdfl & libc::FD_CLOEXEC != 0);
        }
    }

    #[test]
    fn pipe_size_grows_to_what_was_asked_and_is_reported() {
        let (r, w) = pipe().unwrap();
        let got = set_pipe_size(w.as_fd(), 256 * 1024).unwrap();
        assert!(got >= 256 * 1024, "{got}");
        // SAFETY (test): fcntl(F_GETPIPE_SZ) on an open pipe we own.
        let now = unsafe { libc::fcntl(r.as_raw_fd(), libc::F_GETPIPE_SZ) };
        assert_eq!(now as usize, got);
        let e = set_pipe_size(w.as_fd(), usize::MAX).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn splice_moves_bytes_socket_to_pipe_to_socket_and_reports_eof() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let (c, mut d) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let (pr, pw) = pipe().unwrap();

        // Empty source: would block, not EOF.
        let e = splice(b.as_fd(), pw.as_fd(), 4096).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);

        a.write_all(b"hello splice").unwrap();
        let n = splice(b.as_fd(), pw.as_fd(), 4096).unwrap();
        assert_eq!(n, 12);
        assert_eq!(splice(pr.as_fd(), c.as_fd(), n).unwrap(), 12);
        let mut got = [0u8; 12];
        d.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello splice");

        drop(a);
        assert_eq!(splice(b.as_fd(), pw.as_fd(), 4096).unwrap(), 0);
    }

    #[test]
    fn send_and_recv_move_bytes_and_report_would_block_eof_and_broken_pipe() {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 16];
        let e = recv(b.as_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert_eq!(send(a.as_fd(), b"hello", false).unwrap(), 5);
        assert_eq!(recv(b.as_fd(), &mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"hello");
        drop(b);
        // No SIGPIPE (which would end this test process): an error instead.
        let e = send(a.as_fd(), b"gone", false).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::BrokenPipe);
        let (c, d) = UnixStream::pair().unwrap();
        drop(c);
        assert_eq!(recv(d.as_fd(), &mut buf).unwrap(), 0, "end of file");
    }

    #[test]
    fn more_holds_a_short_send_until_shutdown_sends_it_with_the_fin() {
        use std::net::{Shutdown, TcpListener, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        a.set_nodelay(true).unwrap();
        b.set_nonblocking(true).unwrap();
        assert_eq!(send(a.as_fd(), b"last words", true).unwrap(), 10);
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut buf = [0u8; 32];
        let e = recv(b.as_fd(), &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "held back, not sent");
        a.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        let mut eof = false;
        for _ in 0..200 {
            match recv(b.as_fd(), &mut buf) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, b"last words");
        assert!(eof, "no end of file within a second");
    }
}
