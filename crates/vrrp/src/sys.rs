//! The few calls socket2 does not offer safely, each a small wrapper with
//! its own test. Everything else in the crate is safe code.
#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, MaybeUninit};
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::AsRawFd;

use socket2::{MaybeUninitSlice, MsgHdrMut, SockAddr, Socket};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// `setsockopt(level, name, &value)` for an `int` option socket2 has no setter for.
pub(crate) fn set_int_option(
    socket: &Socket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the descriptor is borrowed from a live Socket for the call;
    // the option value points at a c_int on this stack frame with its exact size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `getsockopt(level, name)` for an `int` option; used by the tests.
#[cfg(test)]
pub(crate) fn int_option(
    socket: &Socket,
    level: libc::c_int,
    name: libc::c_int,
) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the descriptor is live for the call; value and len are valid,
    // writable and sized for an int, which the kernel writes at most.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(value)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A `sockaddr_ll` for an AF_PACKET socket on interface `ifindex` carrying
/// `ethertype`, to bind to.
pub(crate) fn packet_addr(ifindex: u32, ethertype: u16) -> io::Result<SockAddr> {
    let index = libc::c_int::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index too large"))?;
    // SAFETY: try_init hands over zeroed storage of sockaddr_storage size and
    // alignment, which holds a sockaddr_ll (20 bytes); we write only its
    // fields through a pointer of that type and report its exact length.
    let ((), addr) = unsafe {
        SockAddr::try_init(|storage, len| {
            let ll = storage.cast::<libc::sockaddr_ll>();
            (*ll).sll_family = libc::AF_PACKET as libc::c_ushort;
            (*ll).sll_protocol = ethertype.to_be();
            (*ll).sll_ifindex = index;
            *len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            Ok(())
        })
    }?;
    Ok(addr)
}

/// Registers `socket` with the tokio reactor of the current runtime.
pub(crate) fn async_fd(socket: Socket, interest: Interest) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: the Socket owns its descriptor and moves into the AsyncFd,
    // which keeps it open, and as_raw_fd returning the same descriptor, until
    // the AsyncFd is dropped.
    unsafe { AsyncFd::register_with_interest(socket, interest) }.map_err(io::Error::from)
}

/// `recvmsg` on an IPv6 socket into initialised buffers: the datagram into
/// `buf`, ancillary data into `control`. Returns the datagram's length, the control data's
/// length and the sender.
pub(crate) fn recv_msg(
    socket: &Socket,
    buf: &mut [u8],
    control: &mut [u8],
) -> io::Result<(usize, usize, SockAddr)> {
    // SAFETY: u8 and MaybeUninit<u8> have the same size and alignment; both
    // slices are initialised and stay so, since recvmsg only stores bytes in them.
    let data = unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) };
    // SAFETY: as above.
    let ctrl = unsafe { &mut *(control as *mut [u8] as *mut [MaybeUninit<u8>]) };
    // IPv6 sockets only: the kernel writes a sockaddr_in6 over this one.
    let mut from = SockAddr::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0));
    let mut bufs = [MaybeUninitSlice::new(data)];
    let mut msg = MsgHdrMut::new()
        .with_addr(&mut from)
        .with_buffers(&mut bufs)
        .with_control(ctrl);
    let n = socket.recvmsg(&mut msg, 0)?;
    let control_len = msg.control_len();
    Ok((n, control_len, from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Protocol, Type};
    use std::net::SocketAddr;

    #[test]
    fn int_options_are_set_and_read_back() {
        let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        set_int_option(&s, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1).unwrap();
        assert_eq!(
            int_option(&s, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO).unwrap(),
            1
        );
        let e = set_int_option(&s, libc::IPPROTO_IPV6, 9999, 1).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOPROTOOPT));
    }

    #[test]
    fn packet_addresses_carry_family_index_and_ethertype() {
        let a = packet_addr(7, 0x0806).unwrap();
        assert_eq!(a.family(), libc::AF_PACKET as libc::sa_family_t);
        assert_eq!(a.len() as usize, size_of::<libc::sockaddr_ll>());
        // sockaddr_ll: family (2), protocol (2, big endian), ifindex (4, native).
        let raw = a.as_ptr().cast::<u8>();
        // SAFETY: (test) the address is at least 8 bytes long; read in place.
        let head = unsafe { std::slice::from_raw_parts(raw, 8) };
        assert_eq!(&head[2..4], &[0x08, 0x06]);
        assert_eq!(i32::from_ne_bytes([head[4], head[5], head[6], head[7]]), 7);
        assert!(packet_addr(u32::MAX, 0x0806).is_err());
    }

    #[tokio::test]
    async fn sockets_register_with_the_reactor_and_report_readiness() {
        let rx = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        let any: SocketAddr = (Ipv6Addr::LOCALHOST, 0).into();
        rx.bind(&any.into()).unwrap();
        rx.set_nonblocking(true).unwrap();
        let to = rx.local_addr().unwrap();
        let fd = async_fd(rx, Interest::READABLE).unwrap();
        let tx = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        tx.send_to(b"x", &to).unwrap();
        let ready = tokio::time::timeout(std::time::Duration::from_secs(5), fd.readable()).await;
        assert!(ready.unwrap().unwrap().ready().is_readable());
    }

    #[test]
    fn recv_msg_returns_datagram_control_data_and_sender() {
        let rx = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        let any: SocketAddr = (Ipv6Addr::LOCALHOST, 0).into();
        rx.bind(&any.into()).unwrap();
        set_int_option(&rx, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1).unwrap();
        let tx = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        tx.bind(&any.into()).unwrap();
        tx.send_to(b"hello", &rx.local_addr().unwrap()).unwrap();
        let mut buf = [0u8; 64];
        let mut control = [0u8; 128];
        let (n, clen, from) = recv_msg(&rx, &mut buf, &mut control).unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert_eq!(
            from.as_socket().unwrap(),
            tx.local_addr().unwrap().as_socket().unwrap()
        );
        let cmsgs = crate::socket::cmsgs(&control[..clen]).collect::<Vec<_>>();
        let (level, kind, data) = cmsgs[0];
        assert_eq!((level, kind), (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO));
        assert_eq!(&data[..16], &Ipv6Addr::LOCALHOST.octets());
    }
}
