//! Addresses of a link: list them, add one, delete one.

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    Emitable, Parseable, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeader, AddressHeaderFlags, AddressMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::request::{attributes, os_error};
use crate::Netlink;

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

impl Netlink {
    /// Every address of one family on interface `index`, in the kernel's order.
    pub fn addresses(&mut self, index: u32, ipv6: bool) -> io::Result<Vec<Address>> {
        let mut message = AddressMessage::default();
        message.header.family = family(ipv6);
        let mut out = Vec::new();
        let verdict = self.request(
            RouteNetlinkMessage::GetAddress(message),
            NLM_F_REQUEST | NLM_F_DUMP,
            |kind, body| {
                if kind == libc::RTM_NEWADDR {
                    out.extend(
                        parse_address(body)
                            .filter(|(i, _)| *i == index)
                            .map(|(_, a)| a),
                    );
                }
            },
        )?;
        verdict.map_err(os_error)?;
        Ok(out)
    }

    /// Adds `address/prefix_len` to interface `index`. `Ok(false)`: it was
    /// already there (someone else's, then: the caller must not remove it later).
    pub fn add_address(&mut self, index: u32, address: IpAddr, prefix_len: u8) -> io::Result<bool> {
        let message = address_message(index, address, prefix_len, true);
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        match self.request(RouteNetlinkMessage::NewAddress(message), flags, |_, _| {})? {
            Ok(()) => Ok(true),
            Err(libc::EEXIST) => Ok(false),
            Err(e) => Err(os_error(e)),
        }
    }

    /// Removes `address/prefix_len` from interface `index`. `Ok(false)`: it was not there.
    pub fn delete_address(
        &mut self,
        index: u32,
        address: IpAddr,
        prefix_len: u8,
    ) -> io::Result<bool> {
        let message = address_message(index, address, prefix_len, false);
        let flags = NLM_F_REQUEST | NLM_F_ACK;
        match self.request(RouteNetlinkMessage::DelAddress(message), flags, |_, _| {})? {
            Ok(()) => Ok(true),
            Err(libc::EADDRNOTAVAIL | libc::ENOENT | libc::ESRCH) => Ok(false),
            Err(e) => Err(os_error(e)),
        }
    }
}

fn family(ipv6: bool) -> AddressFamily {
    if ipv6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    }
}

fn address_message(index: u32, address: IpAddr, prefix_len: u8, adding: bool) -> AddressMessage {
    let mut message = AddressMessage::default();
    message.header.family = family(address.is_ipv6());
    message.header.prefix_len = prefix_len;
    message.header.index = index;
    let attrs = &mut message.attributes;
    match address {
        IpAddr::V4(_) => {
            attrs.push(AddressAttribute::Local(address));
            if adding {
                attrs.push(AddressAttribute::Address(address));
            }
        }
        IpAddr::V6(_) => {
            attrs.push(AddressAttribute::Address(address));
            if adding {
                // Usable at once: no duplicate address detection, which would
                // also delay the unsolicited neighbour advertisements.
                message.header.flags = AddressHeaderFlags::Nodad;
                attrs.push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
        }
    }
    message
}

/// The interface index and address in the body of an RTM_NEWADDR or
/// RTM_DELADDR message; attributes that do not parse are skipped.
pub(crate) fn parse_address(body: &[u8]) -> Option<(u32, Address)> {
    let header = AddressHeader::parse(body).ok()?;
    let mut flags = AddressFlags::from_bits_retain(u32::from(header.flags.bits()));
    let (mut local, mut address) = (None, None);
    for nla in attributes(body.get(header.buffer_len()..)?) {
        match AddressAttribute::parse(&nla) {
            Ok(AddressAttribute::Local(a)) => local = Some(a),
            Ok(AddressAttribute::Address(a)) => address = Some(a),
            // The 32-bit flags, of which the header holds the low 8.
            Ok(AddressAttribute::Flags(f)) => flags = f,
            _ => {}
        }
    }
    // IPv4 point-to-point links put the peer in IFA_ADDRESS.
    let address = local.or(address)?;
    Some((
        header.index,
        Address {
            address,
            prefix_len: header.prefix_len,
            secondary: flags.contains(AddressFlags::Secondary),
            tentative: flags.intersects(AddressFlags::Tentative | AddressFlags::Dadfailed),
        },
    ))
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;

    fn encode(message: &AddressMessage) -> Vec<u8> {
        let mut buf = vec![0; message.buffer_len()];
        message.emit(&mut buf);
        buf
    }

    #[test]
    fn an_added_address_parses_back_with_its_interface() {
        let v4: IpAddr = "198.18.0.100".parse().unwrap();
        let (index, a) = parse_address(&encode(&address_message(3, v4, 24, true))).unwrap();
        assert_eq!(index, 3);
        assert_eq!(
            a,
            Address {
                address: v4,
                prefix_len: 24,
                secondary: false,
                tentative: false
            }
        );
        let v6: IpAddr = "2001:2::100".parse().unwrap();
        let (index, a) = parse_address(&encode(&address_message(4, v6, 64, true))).unwrap();
        assert_eq!((index, a.address, a.prefix_len), (4, v6, 64));
    }

    #[test]
    fn flags_come_from_ifa_flags_over_the_header_and_the_local_address_wins() {
        let mut m = AddressMessage::default();
        m.header.family = AddressFamily::Inet;
        m.header.flags = AddressHeaderFlags::Secondary;
        m.attributes = vec![
            AddressAttribute::Address(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 2))),
            AddressAttribute::Local(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1))),
        ];
        let (_, a) = parse_address(&encode(&m)).unwrap();
        assert!(a.secondary && !a.tentative);
        assert_eq!(a.address, IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)));
        m.attributes
            .push(AddressAttribute::Flags(AddressFlags::Dadfailed));
        let (_, a) = parse_address(&encode(&m)).unwrap();
        assert!(!a.secondary && a.tentative);
    }

    #[test]
    fn a_message_without_an_address_or_header_is_none() {
        let mut m = AddressMessage::default();
        m.attributes = vec![AddressAttribute::Label("eth0".into())];
        assert_eq!(parse_address(&encode(&m)), None);
        assert_eq!(parse_address(&[0; 4]), None);
        // A 3-byte IFA_LOCAL is skipped; the IFA_ADDRESS after it counts.
        let mut body = vec![2u8, 24, 0, 0, 3, 0, 0, 0];
        body.extend([7, 0, 2, 0, 198, 18, 0, 0]);
        body.extend([8, 0, 1, 0, 198, 18, 0, 9]);
        let (_, a) = parse_address(&body).unwrap();
        assert_eq!(a.address, IpAddr::V4(Ipv4Addr::new(198, 18, 0, 9)));
    }

    #[test]
    fn the_loopback_address_is_listed() {
        let Ok(mut nl) = Netlink::open() else {
            eprintln!("SKIP: no netlink socket here");
            return;
        };
        let lo = nl.link("lo").unwrap().expect("every namespace has lo");
        let addrs = nl.addresses(lo.index, false).unwrap();
        assert!(
            addrs
                .iter()
                .any(|a| a.address == IpAddr::V4(Ipv4Addr::LOCALHOST)),
            "{addrs:?}"
        );
    }
}
