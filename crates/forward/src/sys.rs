//! The only `unsafe` of the forwarder: pipe2(2) and splice(2), wrapped so the
//! rest of the crate handles owned descriptors and `io::Result`s.
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

/// Moves up to `len` bytes from `from` to `to` without copying them through
/// userspace; one of the two must be a pipe. Never blocks: a side that is not
/// ready gives `WouldBlock`. `Ok(0)` means end of file on `from`.
pub(crate) fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are borrowed, so open for the duration of the call;
    // null offsets are valid for pipes and sockets (they use their own position).
    let n = unsafe {
        libc::splice(
            from.as_raw_fd(),
            std::ptr::null_mut(),
            to.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
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
}
