//! The driver's sockets: the raw IP socket for protocol 112 that carries the
//! adverts, and the sockets that announce the virtual IPs to the link
//! (gratuitous ARP through AF_PACKET for IPv4, unsolicited neighbour
//! advertisements through ICMPv6 for IPv6).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use socket2::{Domain, InterfaceIndexOrAddress, MsgHdr, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::packet::{self, IpMeta, MULTICAST_V4, MULTICAST_V6, TTL};
use crate::sys;

const ETH_P_ARP: u16 = 0x0806;

/// A raw socket for VRRP on one interface and address family, joined to the
/// VRRP group there, sending with TTL / hop limit 255 and without looping
/// its own multicast back.
#[derive(Debug)]
pub struct VrrpSocket {
    fd: AsyncFd<Socket>,
    ipv6: bool,
    ifindex: u32,
    rx: Vec<u8>,
    control: Vec<u8>,
    tx: Vec<u8>,
}

impl VrrpSocket {
    pub fn open(ifname: &str, ifindex: u32, ipv6: bool) -> io::Result<Self> {
        let proto = Some(Protocol::from(i32::from(packet::PROTOCOL)));
        let domain = if ipv6 { Domain::IPV6 } else { Domain::IPV4 };
        let socket = Socket::new(domain, Type::RAW.cloexec(), proto)?;
        socket.bind_device(Some(ifname.as_bytes()))?;
        if ipv6 {
            socket.join_multicast_v6(&MULTICAST_V6, ifindex)?;
            socket.set_multicast_if_v6(ifindex)?;
            socket.set_multicast_hops_v6(u32::from(TTL))?;
            socket.set_unicast_hops_v6(u32::from(TTL))?;
            socket.set_multicast_loop_v6(false)?;
            socket.set_recv_hoplimit_v6(true)?;
            sys::set_int_option(&socket, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
        } else {
            // We write the IP header: TTL 255 and the source address are ours to set.
            socket.set_header_included_v4(true)?;
            socket.join_multicast_v4_n(&MULTICAST_V4, &InterfaceIndexOrAddress::Index(ifindex))?;
            socket.set_multicast_loop_v4(false)?;
        }
        socket.set_nonblocking(true)?;
        Ok(VrrpSocket {
            fd: sys::async_fd(socket, Interest::READABLE)?,
            ipv6,
            ifindex,
            rx: vec![0; 65_536],
            control: vec![0; 256],
            tx: Vec::with_capacity(20 + packet::MAX_LEN),
        })
    }

    /// The next packet: what the IP layer says about it and the VRRP message.
    /// `Err(reject)` inside for an IPv4 packet whose header cannot be read.
    pub async fn recv(&mut self) -> io::Result<Result<(IpMeta, &[u8]), packet::Reject>> {
        let (n, meta) = loop {
            let mut guard = self.fd.readable().await?;
            let got = if self.ipv6 {
                guard.try_io(|s| {
                    let (n, clen, from) =
                        sys::recv_msg(s.get_ref(), &mut self.rx, &mut self.control)?;
                    Ok((n, Some(ipv6_meta(&from, &self.control[..clen]))))
                })
            } else {
                guard.try_io(|s| {
                    use std::io::Read;
                    let mut sock: &Socket = s.get_ref();
                    Ok((sock.read(&mut self.rx)?, None))
                })
            };
            match got {
                Ok(r) => break r?,
                Err(_would_block) => continue,
            }
        };
        let data = &self.rx[..n];
        Ok(match meta {
            Some(meta) => Ok((meta, data)),
            None => packet::split_ipv4(data),
        })
    }

    /// Sends one VRRP message from `src` to `dst` (the group or a unicast peer).
    pub fn send(&mut self, msg: &[u8], src: IpAddr, dst: IpAddr) -> io::Result<()> {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut head = [0u8; 20];
                packet::ipv4_header(s, d, msg.len(), &mut head);
                self.tx.clear();
                self.tx.extend_from_slice(&head);
                self.tx.extend_from_slice(msg);
                let to = SockAddr::from(SocketAddrV4::new(d, 0));
                self.fd.get_ref().send_to(&self.tx, &to)?;
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let scope = if is_link_scope(d) { self.ifindex } else { 0 };
                let to = SockAddr::from(SocketAddrV6::new(d, 0, 0, scope));
                let control = pktinfo6(s, self.ifindex);
                let bufs = [io::IoSlice::new(msg)];
                let m = MsgHdr::new()
                    .with_addr(&to)
                    .with_buffers(&bufs)
                    .with_control(&control);
                self.fd.get_ref().sendmsg(&m, 0)?;
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "source and destination of different families",
                ))
            }
        }
        Ok(())
    }
}

fn is_link_scope(a: Ipv6Addr) -> bool {
    let s = a.segments()[0];
    (s & 0xffc0) == 0xfe80 || (a.is_multicast() && (s & 0x000f) == 2)
}

/// glibc's `CMSG_ALIGN`, `CMSG_LEN` and `CMSG_SPACE` (libc has them as unsafe fns).
const fn cmsg_align(n: usize) -> usize {
    let a = std::mem::size_of::<usize>();
    (n + a - 1) & !(a - 1)
}

const fn cmsg_len(n: usize) -> usize {
    cmsg_align(std::mem::size_of::<libc::cmsghdr>()) + n
}

const fn cmsg_space(n: usize) -> usize {
    cmsg_align(std::mem::size_of::<libc::cmsghdr>()) + cmsg_align(n)
}

/// An `IPV6_PKTINFO` control message choosing the source address and interface.
fn pktinfo6(src: Ipv6Addr, ifindex: u32) -> Vec<u8> {
    let data_len = 20; // struct in6_pktinfo
    let space = cmsg_space(data_len);
    let mut buf = Vec::with_capacity(space);
    buf.extend_from_slice(&cmsg_len(data_len).to_ne_bytes());
    buf.extend_from_slice(&libc::IPPROTO_IPV6.to_ne_bytes());
    buf.extend_from_slice(&libc::IPV6_PKTINFO.to_ne_bytes());
    buf.resize(cmsg_len(0), 0);
    buf.extend_from_slice(&src.octets());
    buf.extend_from_slice(&ifindex.to_ne_bytes());
    buf.resize(space, 0);
    buf
}

/// The control messages in a received control buffer: (level, type, data).
/// Linux layout: `size_t len; int level; int type;` then the data, aligned.
pub(crate) fn cmsgs(buf: &[u8]) -> impl Iterator<Item = (i32, i32, &[u8])> {
    const W: usize = std::mem::size_of::<usize>();
    let header = cmsg_len(0);
    let mut rest = buf;
    std::iter::from_fn(move || {
        let head = rest.get(..header)?;
        let len = usize::from_ne_bytes(head[..W].try_into().ok()?);
        let level = i32::from_ne_bytes(head[W..W + 4].try_into().ok()?);
        let kind = i32::from_ne_bytes(head[W + 4..W + 8].try_into().ok()?);
        let data = rest.get(header..len.max(header))?;
        let next = cmsg_align(len).max(header);
        rest = rest.get(next.min(rest.len())..).unwrap_or_default();
        Some((level, kind, data))
    })
}

/// Source, destination and hop limit of an IPv6 packet from its sender
/// address and ancillary data. A missing hop limit reads as 0 and fails the
/// TTL check; a missing destination reads as unspecified and fails the checksum.
fn ipv6_meta(from: &SockAddr, control: &[u8]) -> IpMeta {
    let src = from
        .as_socket_ipv6()
        .map_or(Ipv6Addr::UNSPECIFIED, |a| *a.ip());
    let mut dst = Ipv6Addr::UNSPECIFIED;
    let mut hop_limit = 0u8;
    for (level, kind, data) in cmsgs(control) {
        if level != libc::IPPROTO_IPV6 {
            continue;
        }
        if kind == libc::IPV6_PKTINFO {
            if let Ok(b) = <[u8; 16]>::try_from(data.get(..16).unwrap_or_default()) {
                dst = Ipv6Addr::from(b);
            }
        } else if kind == libc::IPV6_HOPLIMIT {
            if let Some(b) = data.get(..4) {
                let v = i32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
                hop_limit = u8::try_from(v).unwrap_or(0);
            }
        }
    }
    IpMeta {
        src: IpAddr::V6(src),
        dst: IpAddr::V6(dst),
        hop_limit,
    }
}

/// Announces virtual IPs to the link: gratuitous ARP (IPv4) or unsolicited
/// neighbour advertisements (IPv6), from the interface's own MAC address
/// (tandem uses no virtual MAC, see docs/vrrp.md).
#[derive(Debug)]
pub enum Announcer {
    Arp {
        socket: Socket,
        mac: [u8; 6],
    },
    Ndp {
        socket: Socket,
        mac: [u8; 6],
        ifindex: u32,
    },
}

impl Announcer {
    /// `source` is the link-local address NAs are sent from (IPv6 only).
    pub fn open(
        ifname: &str,
        ifindex: u32,
        mac: [u8; 6],
        ipv6_source: Option<Ipv6Addr>,
    ) -> io::Result<Self> {
        match ipv6_source {
            None => {
                let proto = Protocol::from(i32::from(ETH_P_ARP.to_be()));
                let socket = Socket::new(Domain::PACKET, Type::RAW.cloexec(), Some(proto))?;
                socket.bind(&sys::packet_addr(ifindex, ETH_P_ARP)?)?;
                socket.set_nonblocking(true)?;
                Ok(Announcer::Arp { socket, mac })
            }
            Some(src) => {
                let socket =
                    Socket::new(Domain::IPV6, Type::RAW.cloexec(), Some(Protocol::ICMPV6))?;
                socket.bind_device(Some(ifname.as_bytes()))?;
                // Neighbour discovery messages must carry hop limit 255 (RFC 4861 §7.1.2).
                socket.set_multicast_hops_v6(255)?;
                socket.set_multicast_if_v6(ifindex)?;
                socket.set_multicast_loop_v6(false)?;
                let from = SocketAddr::V6(SocketAddrV6::new(src, 0, 0, ifindex));
                socket.bind(&from.into())?;
                socket.set_nonblocking(true)?;
                Ok(Announcer::Ndp {
                    socket,
                    mac,
                    ifindex,
                })
            }
        }
    }

    /// Announces `ip` once.
    pub fn announce(&self, ip: IpAddr) -> io::Result<()> {
        match (self, ip) {
            (Announcer::Arp { socket, mac }, IpAddr::V4(v4)) => {
                socket.send(&arp_announcement(*mac, v4))?;
            }
            (
                Announcer::Ndp {
                    socket,
                    mac,
                    ifindex,
                },
                IpAddr::V6(v6),
            ) => {
                let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
                let to = SocketAddr::V6(SocketAddrV6::new(all_nodes, 0, 0, *ifindex));
                socket.send_to(&neighbour_advertisement(*mac, v6), &to.into())?;
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "virtual IP of the other family",
                ))
            }
        }
        Ok(())
    }
}

/// An Ethernet frame with a gratuitous ARP request for `ip` (an "ARP
/// announcement", RFC 5227 §2.3): sender and target protocol address both
/// `ip`, sent to the broadcast address from `mac`.
pub fn arp_announcement(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&ETH_P_ARP.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    // Target hardware address: zero, as the announcement asks nobody.
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// The ICMPv6 part of an unsolicited neighbour advertisement for `target`
/// (RFC 4861 §7.2.6): override set, solicited and router clear, with the
/// target link-layer address option. The kernel fills in the checksum.
pub fn neighbour_advertisement(mac: [u8; 6], target: Ipv6Addr) -> [u8; 32] {
    let mut m = [0u8; 32];
    m[0] = 136;
    m[4] = 0x20; // O
    m[8..24].copy_from_slice(&target.octets());
    m[24] = 2; // target link-layer address
    m[25] = 1; // in units of 8 bytes
    m[26..32].copy_from_slice(&mac);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arp_announcements_name_the_vip_twice() {
        let mac = [2, 0, 0, 0, 0, 1];
        let f = arp_announcement(mac, Ipv4Addr::new(198, 18, 0, 100));
        let want: Vec<u8> = [
            &[0xff; 6][..],
            &mac,
            &[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1],
            &mac,
            &[198, 18, 0, 100],
            &[0; 6],
            &[198, 18, 0, 100],
        ]
        .concat();
        assert_eq!(f.to_vec(), want);
    }

    #[test]
    fn neighbour_advertisements_override_with_our_mac() {
        let mac = [2, 0, 0, 0, 0, 1];
        let vip: Ipv6Addr = "2001:2::100".parse().unwrap();
        let m = neighbour_advertisement(mac, vip);
        assert_eq!(&m[..8], &[136, 0, 0, 0, 0x20, 0, 0, 0]);
        assert_eq!(&m[8..24], &vip.octets());
        assert_eq!(&m[24..], &[2, 1, 2, 0, 0, 0, 0, 1]);
    }

    #[test]
    fn pktinfo_control_messages_parse_back() {
        let src: Ipv6Addr = "fe80::1".parse().unwrap();
        let buf = pktinfo6(src, 4);
        let got: Vec<_> = cmsgs(&buf).collect();
        assert_eq!(got.len(), 1);
        let (level, kind, data) = got[0];
        assert_eq!((level, kind), (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO));
        assert_eq!(&data[..16], &src.octets());
        assert_eq!(&data[16..20], &4u32.to_ne_bytes());
        assert_eq!(cmsgs(&buf[..5]).count(), 0);
        let meta = ipv6_meta(
            &SockAddr::from(SocketAddrV6::new("fe80::2".parse().unwrap(), 0, 0, 4)),
            &buf,
        );
        assert_eq!(meta.dst, IpAddr::V6(src));
        assert_eq!(meta.hop_limit, 0, "no hop limit given: fails the TTL check");
    }

    #[test]
    fn link_scope_addresses_are_recognised() {
        assert!(is_link_scope("fe80::1".parse().unwrap()));
        assert!(is_link_scope(MULTICAST_V6));
        assert!(!is_link_scope("2001:2::1".parse().unwrap()));
        assert!(!is_link_scope("ff05::2".parse().unwrap()));
    }
}
