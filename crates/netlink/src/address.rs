//! Addresses of a link: list them, add one, delete one.

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    parse_ip, parse_u32, Emitable, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL, NLM_F_REQUEST,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeader, AddressHeaderFlags,
};
use netlink_packet_route::AddressFamily;

use crate::request::{attributes, os_error, Request};
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
        let request: Request<_, AddressAttribute> = Request {
            kind: libc::RTM_GETADDR,
            header: AddressHeader {
                family: family(ipv6),
                ..AddressHeader::default()
            },
            attributes: Vec::new(),
        };
        let mut out = Vec::new();
        let verdict = self.request(request, NLM_F_REQUEST | NLM_F_DUMP, |kind, body| {
            if kind == libc::RTM_NEWADDR {
                out.extend(
                    parse_address(body)
                        .filter(|(i, _)| *i == index)
                        .map(|(_, a)| a),
                );
            }
        })?;
        verdict.map_err(os_error)?;
        Ok(out)
    }

    /// Adds `address/prefix_len` to interface `index`. `Ok(false)`: it was
    /// already there (someone else's, then: the caller must not remove it later).
    pub fn add_address(&mut self, index: u32, address: IpAddr, prefix_len: u8) -> io::Result<bool> {
        let request = address_request(libc::RTM_NEWADDR, index, address, prefix_len);
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        match self.request(request, flags, |_, _| {})? {
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
        let request = address_request(libc::RTM_DELADDR, index, address, prefix_len);
        let flags = NLM_F_REQUEST | NLM_F_ACK;
        match self.request(request, flags, |_, _| {})? {
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

/// An RTM_NEWADDR (`adding`) or RTM_DELADDR request for one address.
fn address_request(
    kind: u16,
    index: u32,
    address: IpAddr,
    prefix_len: u8,
) -> Request<AddressHeader, AddressAttribute> {
    let adding = kind == libc::RTM_NEWADDR;
    let mut header = AddressHeader {
        family: family(address.is_ipv6()),
        prefix_len,
        index,
        ..AddressHeader::default()
    };
    let mut attributes = Vec::new();
    match address {
        IpAddr::V4(_) => {
            attributes.push(AddressAttribute::Local(address));
            if adding {
                attributes.push(AddressAttribute::Address(address));
            }
        }
        IpAddr::V6(_) => {
            attributes.push(AddressAttribute::Address(address));
            if adding {
                // Usable at once: no duplicate address detection, which would
                // also delay the unsolicited neighbour advertisements.
                header.flags = AddressHeaderFlags::Nodad;
                attributes.push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
        }
    }
    Request {
        kind,
        header,
        attributes,
    }
}

/// The interface index and address in the body of an RTM_NEWADDR or
/// RTM_DELADDR message. Attributes are read by their type and a value that
/// does not parse is skipped (the library's `AddressAttribute` parser would
/// refuse the whole message, and formats every error it meets).
pub(crate) fn parse_address(body: &[u8]) -> Option<(u32, Address)> {
    let header = AddressHeader::parse(body).ok()?;
    let mut flags = u32::from(header.flags.bits());
    let (mut local, mut address) = (None, None);
    for nla in attributes(body.get(header.buffer_len()..)?) {
        let value = nla.value();
        match nla.kind() {
            libc::IFA_LOCAL => local = parse_ip(value).ok().or(local),
            libc::IFA_ADDRESS => address = parse_ip(value).ok().or(address),
            // The 32-bit flags, of which the header holds the low 8.
            libc::IFA_FLAGS => flags = parse_u32(value).unwrap_or(flags),
            _ => {}
        }
    }
    let flags = AddressFlags::from_bits_retain(flags);
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

    use netlink_packet_route::address::AddressMessage;

    use super::*;
    use crate::request::tests::encode;

    #[test]
    fn an_added_address_parses_back_with_its_interface() {
        let v4: IpAddr = "198.18.0.100".parse().unwrap();
        let added = address_request(libc::RTM_NEWADDR, 3, v4, 24);
        let (index, a) = parse_address(&added.body()).unwrap();
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
        let added = address_request(libc::RTM_NEWADDR, 4, v6, 64);
        let (index, a) = parse_address(&added.body()).unwrap();
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

    /// In the test's own namespace: reads only, so no root needed.
    #[test]
    fn the_loopback_link_and_its_address_are_found_and_a_missing_link_is_none() {
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
