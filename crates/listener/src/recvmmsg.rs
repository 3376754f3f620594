//! recvmmsg(2) and sendmmsg(2): many UDP datagrams in one system call each
//! way. The only `unsafe` of the listener, wrapped so the UDP code sees slices
//! and socket addresses.
#![allow(unsafe_code)]

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Buffers for up to `capacity` datagrams of up to `size` bytes, reused for
/// every call: receiving allocates nothing.
pub(crate) struct RecvBatch {
    size: usize,
    data: Vec<u8>,
    iovecs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
    headers: Vec<libc::mmsghdr>,
}

// SAFETY: the raw pointers inside `iovecs` and `headers` only ever point into
// this struct's own heap buffers, and are rebuilt before every use.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    pub(crate) fn new(capacity: usize, size: usize) -> Self {
        // SAFETY: all-zero is a valid value for these plain C structs.
        let zero_addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let zero_header: libc::mmsghdr = unsafe { std::mem::zeroed() };
        RecvBatch {
            size,
            data: vec![0; capacity * size],
            iovecs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                capacity
            ],
            addrs: vec![zero_addr; capacity],
            headers: vec![zero_header; capacity],
        }
    }

    /// Receives what is waiting (at most the capacity) without blocking;
    /// returns how many datagrams came. `WouldBlock` when none is waiting.
    pub(crate) fn recv(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        let capacity = self.headers.len();
        for i in 0..capacity {
            self.iovecs[i] = libc::iovec {
                iov_base: self.data[i * self.size..].as_mut_ptr().cast(),
                iov_len: self.size,
            };
            let h = &mut self.headers[i].msg_hdr;
            h.msg_name = (&mut self.addrs[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut self.iovecs[i];
            h.msg_iovlen = 1;
            h.msg_control = std::ptr::null_mut();
            h.msg_controllen = 0;
            h.msg_flags = 0;
            self.headers[i].msg_len = 0;
        }
        // SAFETY: every header points at a live iovec and address slot of
        // this struct, each iovec at `size` bytes of `data`; the kernel writes
        // only within those; the descriptor is borrowed for the call.
        let n = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                self.headers.as_mut_ptr(),
                capacity as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// The `i`th datagram of the last [`RecvBatch::recv`] and its source.
    pub(crate) fn get(&self, i: usize) -> Option<(&[u8], SocketAddr)> {
        let header = self.headers.get(i)?;
        let len = (header.msg_len as usize).min(self.size);
        let from = to_socket_addr(&self.addrs[i])?;
        Some((&self.data[i * self.size..i * self.size + len], from))
    }
}

/// The most datagrams [`send_batch`] sends in one call.
pub(crate) const SEND_BATCH: usize = 8;

/// Sends each of `datagrams` (at most [`SEND_BATCH`]) to `to` with one
/// sendmmsg(2), without blocking; returns how many were sent.
pub(crate) fn send_batch(
    fd: BorrowedFd<'_>,
    to: SocketAddr,
    datagrams: &[&[u8]],
) -> io::Result<usize> {
    let count = datagrams.len().min(SEND_BATCH);
    let address = socket2::SockAddr::from(to);
    // SAFETY: all-zero is a valid value for these plain C structs.
    let mut iovecs: [libc::iovec; SEND_BATCH] = unsafe { std::mem::zeroed() };
    let mut headers: [libc::mmsghdr; SEND_BATCH] = unsafe { std::mem::zeroed() };
    for i in 0..count {
        iovecs[i] = libc::iovec {
            iov_base: datagrams[i].as_ptr() as *mut libc::c_void,
            iov_len: datagrams[i].len(),
        };
        let h = &mut headers[i].msg_hdr;
        h.msg_name = address.as_ptr() as *mut libc::c_void;
        h.msg_namelen = address.len();
        h.msg_iov = &mut iovecs[i];
        h.msg_iovlen = 1;
    }
    // SAFETY: each header points at a live iovec (over a borrowed slice the
    // kernel only reads) and at `address`, all alive for the call; the
    // descriptor is borrowed for the call.
    let n = unsafe {
        libc::sendmmsg(
            fd.as_raw_fd(),
            headers.as_mut_ptr(),
            count as libc::c_uint,
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn to_socket_addr(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which
            // is smaller than sockaddr_storage and suitably aligned within it.
            let a =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let a = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn receives_a_batch_with_each_source() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = server.local_addr().unwrap();
        let mut batch = RecvBatch::new(4, 2048);
        let e = batch.recv(server.as_fd()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        for (s, msg) in [(&a, "one"), (&b, "two"), (&a, "three")] {
            s.send_to(msg.as_bytes(), to).unwrap();
        }
        let n = batch.recv(server.as_fd()).unwrap();
        assert_eq!(n, 3);
        let got: Vec<_> = (0..n).map(|i| batch.get(i).unwrap()).collect();
        assert_eq!(got[0], (&b"one"[..], a.local_addr().unwrap()));
        assert_eq!(got[1], (&b"two"[..], b.local_addr().unwrap()));
        assert_eq!(got[2], (&b"three"[..], a.local_addr().unwrap()));
    }

    #[test]
    fn sends_a_batch_to_one_destination_in_order() {
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let sent = send_batch(
            server.as_fd(),
            client.local_addr().unwrap(),
            &[b"a", b"bb", b"ccc"],
        )
        .unwrap();
        assert_eq!(sent, 3);
        let mut buf = [0u8; 8];
        for expected in [&b"a"[..], b"bb", b"ccc"] {
            let (n, from) = client.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], expected);
            assert_eq!(from, server.local_addr().unwrap());
        }
    }

    #[test]
    fn reads_ipv6_sources_and_caps_at_capacity() {
        let Ok(server) = std::net::UdpSocket::bind("[::1]:0") else {
            return; // no IPv6 loopback on this host
        };
        let c = std::net::UdpSocket::bind("[::1]:0").unwrap();
        for _ in 0..5 {
            c.send_to(b"x", server.local_addr().unwrap()).unwrap();
        }
        let mut batch = RecvBatch::new(2, 16);
        assert_eq!(batch.recv(server.as_fd()).unwrap(), 2);
        assert_eq!(batch.get(1).unwrap().1, c.local_addr().unwrap());
        assert_eq!(batch.recv(server.as_fd()).unwrap(), 2);
        assert_eq!(batch.recv(server.as_fd()).unwrap(), 1);
    }
}
