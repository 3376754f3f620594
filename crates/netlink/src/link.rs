//! Links: an interface's index, hardware address and state, looked up by name.

use std::io;

use netlink_packet_core::ParseableParametrized;
use netlink_packet_core::{Emitable, NLM_F_REQUEST};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkHeader, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;

use crate::request::{attributes, os_error};
use crate::Netlink;

/// An interface, as the kernel names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    /// Its hardware address, when it has an Ethernet one.
    pub mac: Option<[u8; 6]>,
    /// Administratively up and with a carrier (IFF_UP and IFF_RUNNING).
    pub up: bool,
}

impl Netlink {
    /// The interface called `name`; `None` when there is none.
    pub fn link(&mut self, name: &str) -> io::Result<Option<Link>> {
        let mut message = LinkMessage::default();
        message
            .attributes
            .push(LinkAttribute::IfName(name.to_owned()));
        let mut found = None;
        let verdict = self.request(
            RouteNetlinkMessage::GetLink(message),
            NLM_F_REQUEST,
            |kind, body| {
                if kind == libc::RTM_NEWLINK {
                    found = parse_link(body);
                }
            },
        )?;
        match verdict {
            Ok(()) => Ok(found),
            Err(libc::ENODEV) => Ok(None),
            Err(e) => Err(os_error(e)),
        }
    }
}

/// The link in the body of an RTM_NEWLINK or RTM_DELLINK message;
/// attributes that do not parse are skipped.
pub(crate) fn parse_link(body: &[u8]) -> Option<Link> {
    let header = LinkHeader::parse(body).ok()?;
    let mac = attributes(body.get(header.buffer_len()..)?).find_map(|nla| {
        match LinkAttribute::parse_with_param(&nla, header.interface_family) {
            Ok(LinkAttribute::Address(a)) => <[u8; 6]>::try_from(a.as_slice()).ok(),
            _ => None,
        }
    });
    let running = LinkFlags::Up | LinkFlags::Running;
    Some(Link {
        index: header.index,
        mac,
        up: header.flags.contains(running),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(index: u32, flags: LinkFlags, attrs: Vec<LinkAttribute>) -> Vec<u8> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = flags;
        m.attributes = attrs;
        let mut buf = vec![0; m.buffer_len()];
        m.emit(&mut buf);
        buf
    }

    #[test]
    fn a_link_is_up_with_a_carrier_only() {
        let mac = vec![2, 0, 0, 0, 0, 7];
        let up = body(
            7,
            LinkFlags::Up | LinkFlags::Running,
            vec![
                LinkAttribute::IfName("eth0".into()),
                LinkAttribute::Address(mac),
            ],
        );
        assert_eq!(
            parse_link(&up),
            Some(Link {
                index: 7,
                mac: Some([2, 0, 0, 0, 0, 7]),
                up: true
            })
        );
        let no_carrier = parse_link(&body(7, LinkFlags::Up, vec![])).unwrap();
        assert!(!no_carrier.up && no_carrier.mac.is_none());
        // An IPv4 tunnel's "hardware address" is 4 bytes: no MAC.
        let tunnel = body(8, LinkFlags::Up, vec![LinkAttribute::Address(vec![1; 4])]);
        assert_eq!(parse_link(&tunnel).unwrap().mac, None);
        assert!(parse_link(&[0; 8]).is_none());
    }

    #[test]
    fn the_loopback_link_is_found_and_a_missing_one_is_none() {
        let Ok(mut nl) = Netlink::open() else {
            eprintln!("SKIP: no netlink socket here");
            return;
        };
        let lo = nl.link("lo").unwrap().expect("every namespace has lo");
        assert!(lo.index > 0);
        assert!(lo.up, "lo is up here");
        assert!(nl.link("no-such-if0").unwrap().is_none());
    }
}
