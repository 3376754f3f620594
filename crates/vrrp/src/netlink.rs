//! The rtnetlink requests the driver needs, written by hand over a
//! NETLINK_ROUTE socket: look up a link by name, list its addresses, add and
//! delete an address; and [`HostEvents`], a second socket subscribed to link
//! and address changes, so that an interface going down or a virtual IP
//! removed by hand is noticed at once. Safe code: messages are built and
//! parsed as bytes.
//!
//! Calls block for at most [`TIMEOUT`]; the kernel answers these in
//! microseconds, so the driver makes them on its task.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tandem_config::IpPrefix;

/// Longest wait for the kernel's answer.
pub const TIMEOUT: Duration = Duration::from_secs(2);

const NLMSG_HDR: usize = 16;
const IFINFOMSG: usize = 16;
const IFADDRMSG: usize = 8;

/// An interface, as the kernel names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    /// Its hardware address, when it has an Ethernet one.
    pub mac: Option<[u8; 6]>,
    /// Administratively up and with a carrier (IFF_UP and IFF_RUNNING).
    pub up: bool,
}

/// One address on an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Address {
    pub address: IpAddr,
    pub prefix_len: u8,
    /// IPv4: not the primary address of its subnet.
    pub secondary: bool,
    /// IPv6: still in (or failed) duplicate address detection: unusable as a source.
    pub tentative: bool,
}

#[derive(Debug)]
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> io::Result<Self> {
        let socket = Socket::new(
            Domain::from(libc::AF_NETLINK),
            Type::RAW.cloexec(),
            Some(Protocol::from(libc::NETLINK_ROUTE)),
        )?;
        socket.set_read_timeout(Some(TIMEOUT))?;
        Ok(Netlink {
            socket,
            seq: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    /// The interface called `name`; `None` when there is none.
    pub fn link(&mut self, name: &str) -> io::Result<Option<Link>> {
        let mut body = vec![0u8; IFINFOMSG];
        body[0] = libc::AF_UNSPEC as u8;
        let mut ifname = name.as_bytes().to_vec();
        ifname.push(0);
        push_attr(&mut body, libc::IFLA_IFNAME, &ifname);
        let seq = self.send(libc::RTM_GETLINK, libc::NLM_F_REQUEST as u16, &body)?;
        let mut found = None;
        let outcome = self.receive(seq, |kind, payload| {
            if kind == libc::RTM_NEWLINK {
                found = parse_link(payload);
            }
        })?;
        match outcome {
            Ok(()) => Ok(found),
            Err(e) if e == libc::ENODEV => Ok(None),
            Err(e) => Err(io::Error::from_raw_os_error(e)),
        }
    }

    /// Every address of one family on interface `index`, in the kernel's order.
    pub fn addresses(&mut self, index: u32, ipv6: bool) -> io::Result<Vec<Address>> {
        let mut body = vec![0u8; IFADDRMSG];
        body[0] = family(ipv6);
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16;
        let seq = self.send(libc::RTM_GETADDR, flags, &body)?;
        let mut out = Vec::new();
        let outcome = self.receive(seq, |kind, payload| {
            if kind == libc::RTM_NEWADDR {
                if let Some((i, a)) = parse_address(payload) {
                    if i == index {
                        out.push(a);
                    }
                }
            }
        })?;
        outcome.map_err(io::Error::from_raw_os_error)?;
        Ok(out)
    }

    /// Adds `prefix` to interface `index`. `Ok(false)`: it was already there
    /// (someone else's, then: the caller must not remove it later).
    pub fn add_address(&mut self, index: u32, prefix: IpPrefix) -> io::Result<bool> {
        let body = address_body(index, prefix, true);
        let flags =
            (libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE | libc::NLM_F_EXCL) as u16;
        let seq = self.send(libc::RTM_NEWADDR, flags, &body)?;
        match self.receive(seq, |_, _| {})? {
            Ok(()) => Ok(true),
            Err(e) if e == libc::EEXIST => Ok(false),
            Err(e) => Err(io::Error::from_raw_os_error(e)),
        }
    }

    /// Removes `prefix` from interface `index`. `Ok(false)`: it was not there.
    pub fn delete_address(&mut self, index: u32, prefix: IpPrefix) -> io::Result<bool> {
        let body = address_body(index, prefix, false);
        let flags = (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16;
        let seq = self.send(libc::RTM_DELADDR, flags, &body)?;
        match self.receive(seq, |_, _| {})? {
            Ok(()) => Ok(true),
            Err(e) if e == libc::EADDRNOTAVAIL || e == libc::ENOENT || e == libc::ESRCH => {
                Ok(false)
            }
            Err(e) => Err(io::Error::from_raw_os_error(e)),
        }
    }

    fn send(&mut self, kind: u16, flags: u16, body: &[u8]) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let len = NLMSG_HDR + body.len();
        let mut msg = Vec::with_capacity(len);
        msg.extend_from_slice(&(len as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        // An unconnected netlink socket sends to the kernel.
        self.socket.send(&msg)?;
        Ok(self.seq)
    }

    /// Reads answers to request `seq` until its ack, error or end of dump,
    /// handing every other message to `each`. The outer error is the
    /// socket's; the inner one the kernel's errno for the request.
    fn receive(
        &mut self,
        seq: u32,
        mut each: impl FnMut(u16, &[u8]),
    ) -> io::Result<Result<(), i32>> {
        loop {
            let n = recv_into(&self.socket, &mut self.buf)?;
            if let Some(outcome) = absorb(&self.buf[..n], seq, &mut each) {
                return Ok(outcome);
            }
        }
    }
}

/// One datagram of answers to request `seq`: hands every message but the
/// last to `each`; `Some` with the kernel's verdict once the answer is
/// complete (ack, error or end of dump), `None` when more is to come.
pub(crate) fn absorb(
    datagram: &[u8],
    seq: u32,
    mut each: impl FnMut(u16, &[u8]),
) -> Option<Result<(), i32>> {
    let mut rest = datagram;
    while let Some((m, next)) = next_message(rest) {
        rest = next;
        if m.seq != seq {
            continue;
        }
        let (flags, payload) = (m.flags, m.payload);
        match m.kind {
            k if k == libc::NLMSG_ERROR as u16 => {
                let errno = payload
                    .get(..4)
                    .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(-libc::EIO);
                // The kernel sends a negated errno; anything else (i32::MIN
                // has no negation) is no errno at all.
                return Some(match errno {
                    0 => Ok(()),
                    e => Err(e.checked_neg().filter(|e| *e > 0).unwrap_or(libc::EIO)),
                });
            }
            k if k == libc::NLMSG_DONE as u16 => return Some(Ok(())),
            k => {
                each(k, payload);
                if flags & libc::NLM_F_MULTI as u16 == 0 {
                    return Some(Ok(()));
                }
            }
        }
    }
    None
}

/// A change on the host that an instance must react to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostEvent {
    /// A link's state now (RTM_NEWLINK), or its removal (RTM_DELLINK: down).
    Link { index: u32, up: bool },
    /// An address left interface `index` (RTM_DELADDR).
    AddressRemoved { index: u32, address: IpAddr },
    /// The kernel dropped events (ENOBUFS): the listener must look again.
    Overrun,
}

/// Multicast groups of NETLINK_ROUTE (`RTNLGRP_*` in linux/rtnetlink.h).
const RTNLGRP_LINK: libc::c_int = 1;
const RTNLGRP_IPV4_IFADDR: libc::c_int = 5;
const RTNLGRP_IPV6_IFADDR: libc::c_int = 9;

/// A NETLINK_ROUTE socket subscribed to link and address changes.
#[derive(Debug)]
pub struct HostEvents {
    socket: tokio::io::unix::AsyncFd<Socket>,
    buf: Vec<u8>,
}

impl HostEvents {
    /// Subscribes in the calling thread's namespace; needs a tokio runtime.
    pub fn open() -> io::Result<Self> {
        let socket = Socket::new(
            Domain::from(libc::AF_NETLINK),
            Type::RAW.nonblocking().cloexec(),
            Some(Protocol::from(libc::NETLINK_ROUTE)),
        )?;
        socket.bind(&crate::sys::netlink_addr()?)?;
        for group in [RTNLGRP_LINK, RTNLGRP_IPV4_IFADDR, RTNLGRP_IPV6_IFADDR] {
            crate::sys::set_int_option(
                &socket,
                libc::SOL_NETLINK,
                libc::NETLINK_ADD_MEMBERSHIP,
                group,
            )?;
        }
        Ok(HostEvents {
            socket: crate::sys::async_fd(socket, tokio::io::Interest::READABLE)?,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Waits for changes, then returns every one the socket holds.
    pub async fn next(&mut self) -> io::Result<Vec<HostEvent>> {
        let mut events = Vec::new();
        loop {
            let mut ready = self.socket.readable().await?;
            // Bounded by what the socket holds: each read takes a message batch.
            loop {
                match recv_into(ready.get_inner(), &mut self.buf) {
                    Ok(n) => events.extend(parse_events(&self.buf[..n])),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        ready.clear_ready();
                        break;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                        events.push(HostEvent::Overrun)
                    }
                    Err(e) => return Err(e),
                }
            }
            if !events.is_empty() {
                return Ok(events);
            }
        }
    }
}

/// The link and address changes in one buffer of netlink messages.
pub fn parse_events(buf: &[u8]) -> Vec<HostEvent> {
    let mut out = Vec::new();
    let mut rest = buf;
    while let Some((m, next)) = next_message(rest) {
        rest = next;
        match m.kind {
            libc::RTM_NEWLINK | libc::RTM_DELLINK => {
                if let Some(link) = parse_link(m.payload) {
                    let up = m.kind == libc::RTM_NEWLINK && link.up;
                    out.push(HostEvent::Link {
                        index: link.index,
                        up,
                    });
                }
            }
            libc::RTM_DELADDR => {
                if let Some((index, a)) = parse_address(m.payload) {
                    out.push(HostEvent::AddressRemoved {
                        index,
                        address: a.address,
                    });
                }
            }
            _ => {}
        }
    }
    out
}

fn recv_into(socket: &Socket, buf: &mut [u8]) -> io::Result<usize> {
    use std::io::Read;
    let mut s: &Socket = socket;
    s.read(buf)
}

fn family(ipv6: bool) -> u8 {
    if ipv6 {
        libc::AF_INET6 as u8
    } else {
        libc::AF_INET as u8
    }
}

fn address_body(index: u32, prefix: IpPrefix, adding: bool) -> Vec<u8> {
    let ipv6 = prefix.address.is_ipv6();
    let mut body = vec![0u8; IFADDRMSG];
    body[0] = family(ipv6);
    body[1] = prefix.prefix_len;
    body[4..8].copy_from_slice(&index.to_ne_bytes());
    match prefix.address {
        IpAddr::V4(a) => {
            push_attr(&mut body, libc::IFA_LOCAL, &a.octets());
            if adding {
                push_attr(&mut body, libc::IFA_ADDRESS, &a.octets());
            }
        }
        IpAddr::V6(a) => {
            push_attr(&mut body, libc::IFA_ADDRESS, &a.octets());
            if adding {
                // Usable at once: no duplicate address detection, which would
                // also delay the unsolicited neighbour advertisements.
                body[2] = libc::IFA_F_NODAD as u8;
                push_attr(&mut body, libc::IFA_FLAGS, &libc::IFA_F_NODAD.to_ne_bytes());
            }
        }
    }
    body
}

/// Appends an rtattr, padded to 4 bytes.
fn push_attr(buf: &mut Vec<u8>, kind: u16, data: &[u8]) {
    let len = 4 + data.len();
    buf.extend_from_slice(&(len as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(data);
    buf.resize(buf.len() + (align4(len) - len), 0);
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One netlink message in a receive buffer.
struct Message<'a> {
    kind: u16,
    flags: u16,
    seq: u32,
    payload: &'a [u8],
}

/// The first message of `buf` and the rest of the buffer after it.
fn next_message(buf: &[u8]) -> Option<(Message<'_>, &[u8])> {
    let head = buf.get(..NLMSG_HDR)?;
    let len = u32::from_ne_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if len < NLMSG_HDR {
        return None;
    }
    let msg = Message {
        kind: u16::from_ne_bytes([head[4], head[5]]),
        flags: u16::from_ne_bytes([head[6], head[7]]),
        seq: u32::from_ne_bytes([head[8], head[9], head[10], head[11]]),
        payload: buf.get(NLMSG_HDR..len)?,
    };
    let rest = buf.get(align4(len).min(buf.len())..).unwrap_or_default();
    Some((msg, rest))
}

/// The attributes after a fixed header of `skip` bytes: (type, data).
fn attrs(payload: &[u8], skip: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = payload.get(skip..).unwrap_or_default();
    std::iter::from_fn(move || {
        let head = rest.get(..4)?;
        let len = usize::from(u16::from_ne_bytes([head[0], head[1]]));
        let kind = u16::from_ne_bytes([head[2], head[3]]) & 0x3fff;
        // Shorter than its own header: broken, and it would never advance.
        if len < 4 {
            return None;
        }
        let data = rest.get(4..len)?;
        rest = rest.get(align4(len).min(rest.len())..).unwrap_or_default();
        Some((kind, data))
    })
}

pub(crate) fn parse_link(payload: &[u8]) -> Option<Link> {
    let head = payload.get(..IFINFOMSG)?;
    let index = i32::from_ne_bytes([head[4], head[5], head[6], head[7]]);
    let flags = u32::from_ne_bytes([head[8], head[9], head[10], head[11]]);
    let running = (libc::IFF_UP | libc::IFF_RUNNING) as u32;
    let mac = attrs(payload, IFINFOMSG)
        .find(|(k, _)| *k == libc::IFLA_ADDRESS)
        .and_then(|(_, d)| <[u8; 6]>::try_from(d).ok());
    Some(Link {
        index: u32::try_from(index).ok()?,
        mac,
        up: flags & running == running,
    })
}

pub(crate) fn parse_address(payload: &[u8]) -> Option<(u32, Address)> {
    let head = payload.get(..IFADDRMSG)?;
    let prefix_len = head[1];
    let mut flags = u32::from(head[2]);
    let index = u32::from_ne_bytes([head[4], head[5], head[6], head[7]]);
    let (mut local, mut address) = (None, None);
    for (kind, data) in attrs(payload, IFADDRMSG) {
        match kind {
            libc::IFA_LOCAL => local = ip(data),
            libc::IFA_ADDRESS => address = ip(data),
            libc::IFA_FLAGS if data.len() >= 4 => {
                flags = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]);
            }
            _ => {}
        }
    }
    // IPv4 point-to-point links put the peer in IFA_ADDRESS.
    let address = local.or(address)?;
    Some((
        index,
        Address {
            address,
            prefix_len,
            secondary: flags & libc::IFA_F_SECONDARY != 0,
            tentative: flags & (libc::IFA_F_TENTATIVE | libc::IFA_F_DADFAILED) != 0,
        },
    ))
}

fn ip(data: &[u8]) -> Option<IpAddr> {
    if let Ok(b) = <[u8; 4]>::try_from(data) {
        return Some(IpAddr::V4(Ipv4Addr::from(b)));
    }
    <[u8; 16]>::try_from(data)
        .ok()
        .map(|b| IpAddr::V6(Ipv6Addr::from(b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_parsed_back() {
        let mut buf = vec![0u8; IFADDRMSG];
        push_attr(&mut buf, libc::IFA_LOCAL, &[198, 18, 0, 100]);
        push_attr(&mut buf, 99, &[1, 2, 3]);
        push_attr(
            &mut buf,
            libc::IFA_FLAGS,
            &libc::IFA_F_SECONDARY.to_ne_bytes(),
        );
        assert_eq!(buf.len(), IFADDRMSG + 8 + 8 + 8);
        let got: Vec<_> = attrs(&buf, IFADDRMSG).collect();
        assert_eq!(
            got,
            vec![
                (libc::IFA_LOCAL, &[198u8, 18, 0, 100][..]),
                (99, &[1, 2, 3][..]),
                (libc::IFA_FLAGS, &libc::IFA_F_SECONDARY.to_ne_bytes()[..])
            ]
        );
        buf[1] = 24;
        buf[4..8].copy_from_slice(&3u32.to_ne_bytes());
        let (index, a) = parse_address(&buf).unwrap();
        assert_eq!(index, 3);
        assert_eq!(a.address, "198.18.0.100".parse::<IpAddr>().unwrap());
        assert_eq!(a.prefix_len, 24);
        assert!(a.secondary && !a.tentative);
    }

    #[test]
    fn truncated_or_garbage_messages_parse_to_nothing() {
        assert!(next_message(&[1, 2, 3]).is_none());
        let mut m = vec![0u8; 16];
        m[0] = 8; // shorter than a header
        assert!(next_message(&m).is_none());
        m[0] = 40; // longer than the buffer
        assert!(next_message(&m).is_none());
        assert!(parse_address(&[0; 4]).is_none());
        assert!(parse_link(&[0; 8]).is_none());
        let broken = [0u8, 0, 0, 0, 0, 0, 0, 0, 200, 0, 1, 0];
        assert_eq!(attrs(&broken, 8).count(), 0);
    }

    fn message(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&((NLMSG_HDR + payload.len()) as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(payload);
        m
    }

    #[test]
    fn link_and_address_changes_are_read_from_a_batch() {
        let mut link = vec![0u8; IFINFOMSG];
        link[4..8].copy_from_slice(&7i32.to_ne_bytes());
        let up = (libc::IFF_UP | libc::IFF_RUNNING) as u32;
        link[8..12].copy_from_slice(&up.to_ne_bytes());
        let mut no_carrier = link.clone();
        no_carrier[8..12].copy_from_slice(&(libc::IFF_UP as u32).to_ne_bytes());
        let mut addr = vec![0u8; IFADDRMSG];
        addr[4..8].copy_from_slice(&7u32.to_ne_bytes());
        push_attr(&mut addr, libc::IFA_LOCAL, &[198, 18, 0, 100]);
        let mut batch = message(libc::RTM_NEWLINK, &link);
        batch.extend(message(libc::RTM_NEWLINK, &no_carrier));
        batch.extend(message(libc::RTM_DELLINK, &link));
        batch.extend(message(libc::RTM_NEWADDR, &addr));
        batch.extend(message(libc::RTM_DELADDR, &addr));
        batch.extend([1, 2, 3]);
        assert_eq!(
            parse_events(&batch),
            vec![
                HostEvent::Link { index: 7, up: true },
                HostEvent::Link {
                    index: 7,
                    up: false
                },
                HostEvent::Link {
                    index: 7,
                    up: false
                },
                HostEvent::AddressRemoved {
                    index: 7,
                    address: "198.18.0.100".parse().unwrap()
                },
            ]
        );
    }

    #[tokio::test]
    async fn an_address_removed_from_lo_is_reported() {
        let (Ok(mut nl), Ok(mut events)) = (Netlink::open(), HostEvents::open()) else {
            eprintln!("SKIP: no netlink socket here");
            return;
        };
        let lo = nl.link("lo").unwrap().expect("every namespace has lo");
        let p = IpPrefix {
            address: "127.0.0.213".parse().unwrap(),
            prefix_len: 32,
        };
        if !matches!(nl.add_address(lo.index, p), Ok(true)) {
            eprintln!("SKIP: cannot add an address to lo here (not root?)");
            return;
        }
        assert!(nl.delete_address(lo.index, p).unwrap());
        let wanted = HostEvent::AddressRemoved {
            index: lo.index,
            address: p.address,
        };
        let found = tokio::time::timeout(Duration::from_secs(5), async {
            for _ in 0..100 {
                if events.next().await.unwrap().contains(&wanted) {
                    return true;
                }
            }
            false
        })
        .await;
        assert_eq!(found, Ok(true));
    }

    #[test]
    fn the_loopback_link_and_its_address_are_found() {
        let Ok(mut nl) = Netlink::open() else {
            eprintln!("SKIP: no netlink socket here");
            return;
        };
        let lo = nl.link("lo").unwrap().expect("every namespace has lo");
        assert!(lo.index > 0);
        assert!(lo.up, "lo is up here");
        assert!(nl.link("no-such-if0").unwrap().is_none());
        let addrs = nl.addresses(lo.index, false).unwrap();
        assert!(
            addrs
                .iter()
                .any(|a| a.address == IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{addrs:?}"
        );
    }
}
