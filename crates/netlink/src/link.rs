//! Links: an interface's index, hardware address and state, looked up by name.

use std::io;

use netlink_packet_core::{parse_mac, DefaultNla, Emitable, NLM_F_REQUEST};
use netlink_packet_route::link::{LinkFlags, LinkHeader};

use crate::request::{attributes, os_error, Request};
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
        let mut ifname = name.as_bytes().to_vec();
        ifname.push(0);
        let request = Request {
            kind: libc::RTM_GETLINK,
            header: LinkHeader::default(),
            attributes: vec![DefaultNla::new(libc::IFLA_IFNAME, ifname)],
        };
        let mut found = None;
        let verdict = self.request(request, NLM_F_REQUEST, |kind, body| {
            if kind == libc::RTM_NEWLINK {
                found = parse_link(body);
            }
        })?;
        match verdict {
            Ok(()) => Ok(found),
            Err(libc::ENODEV) => Ok(None),
            Err(e) => Err(os_error(e)),
        }
    }
}

/// The link in the body of an RTM_NEWLINK or RTM_DELLINK message. Only
/// IFLA_ADDRESS is read of its attributes, by its type: the library's
/// `LinkAttribute` parser reads every kind of link there is (bridges,
/// tunnels, SR-IOV, ...), about 250 KB of code for six bytes.
pub(crate) fn parse_link(body: &[u8]) -> Option<Link> {
    let header = LinkHeader::parse(body).ok()?;
    let mac = attributes(body.get(header.buffer_len()..)?)
        .find(|nla| nla.kind() == libc::IFLA_ADDRESS)
        .and_then(|nla| parse_mac(nla.value()).ok());
    let running = LinkFlags::Up | LinkFlags::Running;
    Some(Link {
        index: header.index,
        mac,
        up: header.flags.contains(running),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use netlink_packet_route::link::{LinkAttribute, LinkMessage};

    use super::*;
    use crate::request::tests::encode;

    /// An RTM_NEWLINK body as the library writes it.
    pub(crate) fn body(index: u32, flags: LinkFlags, attrs: Vec<LinkAttribute>) -> Vec<u8> {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = flags;
        m.attributes = attrs;
        encode(&m)
    }

    #[test]
    fn a_lookup_by_name_is_what_the_library_would_write() {
        let request = Request {
            kind: libc::RTM_GETLINK,
            header: LinkHeader::default(),
            attributes: vec![DefaultNla::new(libc::IFLA_IFNAME, b"eth0\0".to_vec())],
        };
        let mut m = LinkMessage::default();
        m.attributes = vec![LinkAttribute::IfName("eth0".into())];
        assert_eq!(request.body(), encode(&m));
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
}
