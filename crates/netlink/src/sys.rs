//! The one call that needs `unsafe`: registering the event socket with
//! tokio's reactor (the safe constructors are deprecated as unsound: they
//! cannot know that the descriptor stays open). Everything else in the crate
//! is safe code.
#![allow(unsafe_code)]

use std::io;

use netlink_sys::Socket;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// Registers `socket` with the tokio reactor of the current runtime, for reading.
pub(crate) fn async_fd(socket: Socket) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: the Socket owns its descriptor and moves into the AsyncFd,
    // which keeps it open, and as_raw_fd returning the same descriptor,
    // until the AsyncFd is dropped (netlink_sys::Socket closes it in Drop).
    unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }.map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::time::Duration;

    use netlink_sys::protocols::NETLINK_ROUTE;
    use netlink_sys::SocketAddr;

    use super::*;

    #[tokio::test]
    async fn a_registered_socket_reports_readiness_and_keeps_its_descriptor() {
        let mut socket = Socket::new(NETLINK_ROUTE).unwrap();
        socket.bind_auto().unwrap();
        socket.set_non_blocking(true).unwrap();
        let fd = socket.as_raw_fd();
        let registered = async_fd(socket).unwrap();
        assert_eq!(registered.get_ref().as_raw_fd(), fd);
        // A request the kernel answers: an empty RTM_GETLINK dump of family AF_UNSPEC.
        let mut req = vec![0u8; 32];
        req[..4].copy_from_slice(&32u32.to_ne_bytes());
        req[4..6].copy_from_slice(&libc::RTM_GETLINK.to_ne_bytes());
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
        req[6..8].copy_from_slice(&flags.to_ne_bytes());
        registered
            .get_ref()
            .send_to(&req, &SocketAddr::new(0, 0), 0)
            .unwrap();
        let ready = tokio::time::timeout(Duration::from_secs(5), registered.readable()).await;
        assert!(ready.unwrap().unwrap().ready().is_readable());
    }
}
