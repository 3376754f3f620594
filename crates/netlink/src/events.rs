//! Host events: a socket subscribed to link and address changes, so that an
//! interface going down or an address removed by hand is noticed at once.

use std::io;
use std::net::IpAddr;

use netlink_sys::{protocols::NETLINK_ROUTE, Socket};
use tokio::io::unix::AsyncFd;

use crate::address::parse_address;
use crate::link::parse_link;
use crate::request::messages;

/// A change on the host that a listener must react to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostEvent {
    /// A link's state now (RTM_NEWLINK), or its removal (RTM_DELLINK: down).
    Link { index: u32, up: bool },
    /// An address left interface `index` (RTM_DELADDR).
    AddressRemoved { index: u32, address: IpAddr },
    /// The kernel dropped events (ENOBUFS): the listener must look again.
    Overrun,
}

/// A NETLINK_ROUTE socket subscribed to link and address changes.
#[derive(Debug)]
pub struct HostEvents {
    socket: AsyncFd<Socket>,
    buf: Vec<u8>,
}

impl HostEvents {
    /// Subscribes in the calling thread's namespace; needs a tokio runtime.
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        // Multicast groups deliver only to a bound socket.
        socket.bind_auto()?;
        for group in [
            libc::RTNLGRP_LINK,
            libc::RTNLGRP_IPV4_IFADDR,
            libc::RTNLGRP_IPV6_IFADDR,
        ] {
            socket.add_membership(group)?;
        }
        socket.set_non_blocking(true)?;
        Ok(HostEvents {
            socket: crate::sys::async_fd(socket)?,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Waits for changes, then returns every one the socket holds.
    pub async fn next(&mut self) -> io::Result<Vec<HostEvent>> {
        let mut events = Vec::new();
        loop {
            let mut ready = self.socket.readable().await?;
            // Bounded by what the socket holds: each read takes a batch of messages.
            loop {
                match ready.get_inner().recv(&mut &mut self.buf[..], 0) {
                    Ok(n) => events.extend(parse_events(&self.buf[..n.min(self.buf.len())])),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        ready.clear_ready();
                        break;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
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

/// The link and address changes in one datagram of netlink messages.
pub(crate) fn parse_events(datagram: &[u8]) -> Vec<HostEvent> {
    messages(datagram)
        .filter_map(|m| match m.kind {
            libc::RTM_NEWLINK | libc::RTM_DELLINK => {
                parse_link(m.body).map(|link| HostEvent::Link {
                    index: link.index,
                    up: m.kind == libc::RTM_NEWLINK && link.up,
                })
            }
            libc::RTM_DELADDR => {
                parse_address(m.body).map(|(index, a)| HostEvent::AddressRemoved {
                    index,
                    address: a.address,
                })
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use netlink_packet_core::Emitable;
    use netlink_packet_route::address::{AddressAttribute, AddressMessage};
    use netlink_packet_route::link::{LinkFlags, LinkMessage};

    use super::*;
    use crate::request::tests::message;

    fn link(index: u32, flags: LinkFlags) -> Vec<u8> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = flags;
        let mut buf = vec![0; m.buffer_len()];
        m.emit(&mut buf);
        buf
    }

    #[test]
    fn link_and_address_changes_are_read_from_a_batch() {
        let up = link(7, LinkFlags::Up | LinkFlags::Running);
        let no_carrier = link(7, LinkFlags::Up);
        let mut addr = AddressMessage::default();
        addr.header.index = 7;
        addr.attributes = vec![AddressAttribute::Local("198.18.0.100".parse().unwrap())];
        let mut addr_body = vec![0; addr.buffer_len()];
        addr.emit(&mut addr_body);
        let mut batch = message(libc::RTM_NEWLINK, 0, 0, &up);
        batch.extend(message(libc::RTM_NEWLINK, 0, 0, &no_carrier));
        batch.extend(message(libc::RTM_DELLINK, 0, 0, &up));
        batch.extend(message(libc::RTM_NEWADDR, 0, 0, &addr_body));
        batch.extend(message(libc::RTM_DELADDR, 0, 0, &addr_body));
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
}
