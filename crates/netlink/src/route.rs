//! Routes tandem owns, out of one interface and marked with a route
//! protocol number so that a dump can tell them from the rest of the table:
//! unicast (scope link) routes to announce, and local (scope host) routes
//! that make the host accept an address without it being on an interface.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    parse_ip, parse_u32, DefaultNla, Emitable, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::route::{RouteHeader, RouteScope, RouteType};
use netlink_packet_route::AddressFamily;

use crate::request::{attributes, os_error, Request};
use crate::Netlink;

/// A route tandem owns: `destination/prefix_len` in kernel table `table`, route protocol `protocol`, out of interface `ifindex`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    pub destination: IpAddr,
    pub prefix_len: u8,
    pub table: u32,
    pub protocol: u8,
    pub ifindex: u32,
    pub kind: RouteKind,
}

/// The route types tandem installs (`rtm_type`), and the rest as found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteKind {
    /// Scope link: a route to announce.
    Unicast,
    /// Scope host, usually in the `local` table (255): packets to the
    /// destination are delivered to this host (`ip route add local …`).
    Local,
    /// Any other type (blackhole, broadcast, …), by its number.
    Other(u8),
}

/// The kernel's `local` table (RT_TABLE_LOCAL).
pub const LOCAL_TABLE: u32 = 255;

impl Netlink {
    /// Adds `route`, or replaces the route to the same destination in its
    /// table (whoever's it was).
    pub fn replace_route(&mut self, route: &Route) -> io::Result<()> {
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
        self.request(route_request(libc::RTM_NEWROUTE, route), flags, |_, _| {})?
            .map_err(os_error)
    }

    /// Removes `route` (it matches on destination, table, protocol and
    /// interface). `Ok(false)`: there was no such route.
    pub fn delete_route(&mut self, route: &Route) -> io::Result<bool> {
        let request = route_request(libc::RTM_DELROUTE, route);
        match self.request(request, NLM_F_REQUEST | NLM_F_ACK, |_, _| {})? {
            Ok(()) => Ok(true),
            Err(libc::ESRCH | libc::ENOENT) => Ok(false),
            Err(e) => Err(os_error(e)),
        }
    }

    /// Every IPv4 and IPv6 route in `table` with route protocol `protocol`,
    /// whatever its kind, in the kernel's order (IPv4 first).
    pub fn routes(&mut self, table: u32, protocol: u8) -> io::Result<Vec<Route>> {
        let mut out = Vec::new();
        for family in [AddressFamily::Inet, AddressFamily::Inet6] {
            let request: Request<_, DefaultNla> = Request {
                kind: libc::RTM_GETROUTE,
                header: RouteHeader {
                    address_family: family,
                    ..RouteHeader::default()
                },
                attributes: Vec::new(),
            };
            let verdict = self.request(request, NLM_F_REQUEST | NLM_F_DUMP, |kind, body| {
                if kind == libc::RTM_NEWROUTE {
                    out.extend(
                        parse_route(body).filter(|r| r.table == table && r.protocol == protocol),
                    );
                }
            })?;
            verdict.map_err(os_error)?;
        }
        Ok(out)
    }
}

/// An RTM_NEWROUTE or RTM_DELROUTE request for `route`. Its attributes are
/// plain ones: the library's `RouteAttribute` emitter matches on every kind
/// of route attribute (MPLS, SRv6, tunnels, multipath, ...) and would link
/// all of their code for a table, a destination and an interface.
fn route_request(kind: u16, route: &Route) -> Request<RouteHeader, DefaultNla> {
    let (scope, route_type) = match route.kind {
        RouteKind::Unicast => (RouteScope::Link, RouteType::Unicast),
        RouteKind::Local => (RouteScope::Host, RouteType::Local),
        RouteKind::Other(n) => (RouteScope::Universe, RouteType::from(n)),
    };
    let header = RouteHeader {
        address_family: match route.destination {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        },
        destination_prefix_length: route.prefix_len,
        // rtm_table has 8 bits; RTA_TABLE (sent always) has the whole number.
        table: u8::try_from(route.table).unwrap_or(RouteHeader::RT_TABLE_UNSPEC),
        protocol: route.protocol.into(),
        scope,
        kind: route_type,
        ..RouteHeader::default()
    };
    let destination = match route.destination {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    Request {
        kind,
        header,
        attributes: vec![
            DefaultNla::new(libc::RTA_TABLE, route.table.to_ne_bytes().to_vec()),
            DefaultNla::new(libc::RTA_DST, destination),
            DefaultNla::new(libc::RTA_OIF, route.ifindex.to_ne_bytes().to_vec()),
        ],
    }
}

/// The route in the body of an RTM_NEWROUTE message, when it is an IPv4 or
/// IPv6 one. Attributes are read by their type, and a value that does not
/// parse is skipped. Without RTA_DST it is a default route; without RTA_OIF
/// (a multipath route) its `ifindex` is 0.
pub(crate) fn parse_route(body: &[u8]) -> Option<Route> {
    let header = RouteHeader::parse(body).ok()?;
    let (unspecified, max_len) = match header.address_family {
        AddressFamily::Inet => (IpAddr::V4(Ipv4Addr::UNSPECIFIED), 32),
        AddressFamily::Inet6 => (IpAddr::V6(Ipv6Addr::UNSPECIFIED), 128),
        _ => return None,
    };
    if header.destination_prefix_length > max_len {
        return None;
    }
    let mut route = Route {
        destination: unspecified,
        prefix_len: header.destination_prefix_length,
        table: u32::from(header.table),
        protocol: header.protocol.into(),
        ifindex: 0,
        kind: match header.kind {
            RouteType::Unicast => RouteKind::Unicast,
            RouteType::Local => RouteKind::Local,
            other => RouteKind::Other(other.into()),
        },
    };
    for nla in attributes(body.get(header.buffer_len()..)?) {
        let value = nla.value();
        match nla.kind() {
            libc::RTA_TABLE => route.table = parse_u32(value).unwrap_or(route.table),
            libc::RTA_DST => match parse_ip(value) {
                Ok(a) if a.is_ipv4() == unspecified.is_ipv4() => route.destination = a,
                _ => {}
            },
            libc::RTA_OIF => route.ifindex = parse_u32(value).unwrap_or(route.ifindex),
            _ => {}
        }
    }
    Some(route)
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};

    use super::*;
    use crate::request::tests::encode;

    #[test]
    fn a_route_encodes_and_parses_back_with_its_long_table() {
        for route in [
            Route {
                destination: "198.18.7.0".parse().unwrap(),
                prefix_len: 24,
                table: 4242,
                protocol: 250,
                ifindex: 3,
                kind: RouteKind::Unicast,
            },
            Route {
                destination: "2001:2::7:1".parse().unwrap(),
                prefix_len: 128,
                table: 100,
                protocol: 186,
                ifindex: 9,
                kind: RouteKind::Unicast,
            },
            Route {
                destination: "198.18.100.1".parse().unwrap(),
                prefix_len: 32,
                table: LOCAL_TABLE,
                protocol: 250,
                ifindex: 1,
                kind: RouteKind::Local,
            },
        ] {
            let body = route_request(libc::RTM_NEWROUTE, &route).body();
            // rtm_table holds the table only when it fits in 8 bits.
            let rtm_table = if route.table < 256 { route.table } else { 0 };
            assert_eq!(u32::from(body[4]), rtm_table);
            assert_eq!(parse_route(&body), Some(route));
        }
    }

    #[test]
    fn a_request_is_what_the_library_would_write() {
        let route = Route {
            destination: "2001:2::7:1".parse().unwrap(),
            prefix_len: 128,
            table: 4242,
            protocol: 250,
            ifindex: 9,
            kind: RouteKind::Unicast,
        };
        let request = route_request(libc::RTM_NEWROUTE, &route);
        let mut m = RouteMessage::default();
        m.header = request.header.clone();
        m.attributes = vec![
            RouteAttribute::Table(4242),
            RouteAttribute::Destination(RouteAddress::from(route.destination)),
            RouteAttribute::Oif(9),
        ];
        assert_eq!(request.body(), encode(&m));
    }

    #[test]
    fn without_rta_table_or_rta_dst_the_header_says_it() {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.table = RouteHeader::RT_TABLE_MAIN;
        m.header.protocol = 4.into();
        m.attributes = vec![RouteAttribute::Oif(2)];
        assert_eq!(
            parse_route(&encode(&m)),
            Some(Route {
                destination: "0.0.0.0".parse().unwrap(),
                prefix_len: 0,
                table: 254,
                protocol: 4,
                ifindex: 2,
                kind: RouteKind::Other(0),
            })
        );
    }

    #[test]
    fn odd_families_prefixes_and_attributes_are_not_routes_or_are_skipped() {
        let mut m = RouteMessage::default();
        m.header.address_family = AddressFamily::Inet;
        m.header.destination_prefix_length = 33;
        assert_eq!(parse_route(&encode(&m)), None);
        m.header.address_family = AddressFamily::Mpls;
        m.header.destination_prefix_length = 20;
        assert_eq!(parse_route(&encode(&m)), None);
        assert_eq!(parse_route(&[2, 32, 0]), None);
        // A 3-byte RTA_DST does not parse: skipped, the RTA_OIF after it counts.
        let mut body = vec![2u8, 32, 0, 0, 254, 250, 253, 1, 0, 0, 0, 0];
        body.extend([7, 0, 1, 0, 198, 18, 7, 0]);
        body.extend([8, 0, 4, 0, 5, 0, 0, 0]);
        let r = parse_route(&body).unwrap();
        assert_eq!(
            (r.destination, r.ifindex, r.protocol),
            ("0.0.0.0".parse().unwrap(), 5, 250)
        );
    }
}
