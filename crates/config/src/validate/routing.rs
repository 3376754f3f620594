//! The `routing` section: VIPs announced through a kernel table that a
//! routing daemon exports (docs/bgp.md), and the checks against the services
//! they follow and the VRRP instances they must not share an address with.

use std::collections::HashMap;

use super::vrrp::interface;
use super::*;

/// Route protocol numbers that belong to someone else (linux/rtnetlink.h
/// and iproute2's rt_protos): a route of theirs in our table would be
/// flushed as ours, and ours would look like theirs to their daemon.
const TAKEN_PROTOCOLS: &[(u8, &str)] = &[
    (0, "unspec"),
    (1, "redirect"),
    (2, "kernel"),
    (3, "boot"),
    (4, "static"),
    (8, "gated"),
    (9, "ra"),
    (10, "mrt"),
    (11, "zebra (FRR)"),
    (12, "bird"),
    (13, "dnrouted"),
    (14, "xorp"),
    (15, "ntk"),
    (16, "dhcp"),
    (17, "mrouted"),
    (18, "keepalived"),
    (42, "babel"),
    (186, "bgp (FRR)"),
    (187, "isis (FRR)"),
    (188, "ospf (FRR)"),
    (189, "rip (FRR)"),
    (192, "eigrp (FRR)"),
];

/// Tables the kernel itself uses (0 is "unspecified").
const TAKEN_TABLES: &[(i64, &str)] = &[
    (0, "unspec"),
    (253, "default"),
    (254, "main"),
    (255, "local"),
];

pub(super) fn routing(
    r: &mut Report,
    at: &FieldPath,
    raw: Option<&file::Routing>,
    services: &[Service],
    vrrp: &Vrrp,
) -> Option<Routing> {
    let raw = raw?;
    let table = match raw.table {
        None => default::ROUTING_TABLE,
        Some(t) => match TAKEN_TABLES.iter().find(|(n, _)| *n == t) {
            Some((_, name)) => {
                r.value(
                    &at.key("table"),
                    format!("table {t} is the kernel's `{name}` table; pick a table of tandem's own (e.g. {})", default::ROUTING_TABLE),
                );
                default::ROUTING_TABLE
            }
            None => values::between::<u32>(r, &at.key("table"), t, 1, i64::from(u32::MAX))
                .unwrap_or(default::ROUTING_TABLE),
        },
    };
    let protocol = match raw.protocol {
        None => default::ROUTING_PROTOCOL,
        Some(p) => {
            match values::between::<u8>(r, &at.key("protocol"), p, 0, 255) {
                Some(p) => match TAKEN_PROTOCOLS.iter().find(|(n, _)| *n == p) {
                    Some((_, owner)) => {
                        r.value(
                        &at.key("protocol"),
                        format!("route protocol {p} is `{owner}`'s; pick an unused number such as {}", default::ROUTING_PROTOCOL),
                    );
                        default::ROUTING_PROTOCOL
                    }
                    None => p,
                },
                None => default::ROUTING_PROTOCOL,
            }
        }
    };
    let vip_interface = raw
        .vip_interface
        .as_deref()
        .and_then(|i| interface(r, &at.key("vip_interface"), i))
        .unwrap_or_else(|| default::ROUTING_VIP_INTERFACE.to_owned());
    let device = match raw.device.as_deref() {
        None => default::ROUTING_DEVICE.to_owned(),
        Some(d) => match interface(r, &at.key("device"), d) {
            Some(d) if d == vip_interface || d == "lo" => {
                r.value(
                    &at.key("device"),
                    format!("`{d}` is an existing interface; the device is one tandem creates for its routes (e.g. {})", default::ROUTING_DEVICE),
                );
                default::ROUTING_DEVICE.to_owned()
            }
            Some(d) => d,
            None => default::ROUTING_DEVICE.to_owned(),
        },
    };
    let withdraw_delay = raw
        .withdraw_delay
        .as_ref()
        .and_then(|d| values::duration(r, &at.key("withdraw_delay"), d))
        .unwrap_or(default::ROUTING_WITHDRAW_DELAY);

    let vips_at = at.key("vips");
    let raw_vips = raw.vips.as_deref().unwrap_or_default();
    if raw_vips.is_empty() {
        r.value(
            &vips_at,
            "missing or empty; list the addresses to announce, e.g. `vips: [{ address: 198.18.100.1 }]`",
        );
    }
    let vrrp_vips: HashMap<IpAddr, &str> = vrrp
        .instances
        .iter()
        .flat_map(|i| i.virtual_ips.iter().map(|v| (v.address, i.name.as_str())))
        .collect();
    let mut seen: HashMap<IpAddr, FieldPath> = HashMap::new();
    let mut vips = Vec::with_capacity(raw_vips.len());
    for (i, v) in raw_vips.iter().enumerate() {
        let at = vips_at.index(i);
        let address = match &v.address {
            Some(a) => values::ip_addr(r, &at.key("address"), a),
            None => {
                r.value(
                    &at.key("address"),
                    "missing; the address to announce (e.g. 198.18.100.1)",
                );
                None
            }
        };
        let Some(address) = address else { continue };
        if let Some(first) = seen.get(&address) {
            let line = r.line(first);
            r.value(
                &at.key("address"),
                format!("`{address}` is already announced (line {line})"),
            );
            continue;
        }
        seen.insert(address, at.key("address"));
        if let Some(instance) = vrrp_vips.get(&address) {
            r.value(
                &at.key("address"),
                format!("`{address}` is a virtual IP of VRRP instance `{instance}`; an address moves by VRRP or is announced by routing, not both"),
            );
        }
        let names = match &v.services {
            Some(list) => {
                let mut names = Vec::with_capacity(list.len());
                for (j, name) in list.iter().enumerate() {
                    if services.iter().any(|s| &s.name == name) {
                        names.push(name.clone());
                    } else {
                        let known: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
                        r.value(
                            &at.key("services").index(j),
                            suggest::unknown("service", name, &known),
                        );
                    }
                }
                if list.is_empty() {
                    r.value(
                        &at.key("services"),
                        "empty; name the services this address follows, or leave the key out for those listening on it",
                    );
                }
                names
            }
            None => {
                let names: Vec<String> = services
                    .iter()
                    .filter(|s| s.listen.socket_addr().ip() == address)
                    .map(|s| s.name.clone())
                    .collect();
                if names.is_empty() {
                    r.value(
                        &at.key("services"),
                        format!("no service listens on `{address}`; name the services this address follows"),
                    );
                }
                names
            }
        };
        vips.push(RoutedVip {
            address,
            services: names,
        });
    }
    Some(Routing {
        table,
        protocol,
        device,
        vip_interface,
        withdraw_delay,
        vips,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;

    const SERVICES: &str = "services:\n  - name: api\n    listen: 198.18.100.1:8443\n    backends:\n      - address: 127.0.0.1:6443\n  - name: dns\n    protocol: udp\n    listen: 0.0.0.0:53\n    backends:\n      - address: 127.0.0.1:5353\n";

    fn ok(routing: &str) -> Routing {
        parse(&format!("{SERVICES}{routing}"), "t.yaml")
            .unwrap_or_else(|e| panic!("must parse:\n{e}"))
            .routing
            .expect("a routing section")
    }

    fn errors(routing: &str) -> Vec<String> {
        match parse(&format!("{SERVICES}{routing}"), "t.yaml") {
            Ok(_) => panic!("must not parse:\n{routing}"),
            Err(e) => {
                e.0.iter()
                    .map(|e| e.to_string().replacen("t.yaml:", "", 1))
                    .collect()
            }
        }
    }

    #[test]
    fn defaults_and_the_services_listening_on_the_address() {
        let r = ok("routing:\n  vips:\n    - address: 198.18.100.1\n");
        assert_eq!(r.table, 250);
        assert_eq!(r.protocol, 250);
        assert_eq!(r.device, "tandem-routes");
        assert_eq!(r.vip_interface, "lo");
        assert_eq!(r.withdraw_delay, Duration::from_secs(2));
        assert_eq!(
            r.vips,
            [RoutedVip {
                address: "198.18.100.1".parse().unwrap(),
                services: vec!["api".to_owned()],
            }]
        );
    }

    #[test]
    fn every_key_is_read() {
        let r = ok("routing:\n  table: 100\n  protocol: 201\n  device: bgp0\n  vip_interface: dummy0\n  withdraw_delay: 500ms\n  vips:\n    - { address: \"2001:2::1\", services: [api, dns] }\n");
        assert_eq!(
            (
                r.table,
                r.protocol,
                r.device.as_str(),
                r.vip_interface.as_str()
            ),
            (100, 201, "bgp0", "dummy0")
        );
        assert_eq!(r.withdraw_delay, Duration::from_millis(500));
        assert_eq!(r.vips[0].services, ["api", "dns"]);
    }

    #[test]
    fn no_section_no_routing() {
        let c = parse(SERVICES, "t.yaml").unwrap();
        assert_eq!(c.routing, None);
    }

    #[test]
    fn wrong_values_are_named_with_their_place() {
        let e = errors("routing:\n  table: 254\n  protocol: 12\n  device: lo\n  vips:\n    - address: 198.18.100.1\n      services: [apx]\n    - address: 198.18.100.1\n    - address: 198.18.100.9\n    - address: nope\n");
        let joined = e.join("\n");
        assert!(
            joined.contains("12:10: routing.table: table 254 is the kernel's `main` table"),
            "{joined}"
        );
        assert!(
            joined.contains("13:13: routing.protocol: route protocol 12 is `bird`'s"),
            "{joined}"
        );
        assert!(
            joined.contains("14:11: routing.device: `lo` is an existing interface"),
            "{joined}"
        );
        assert!(
            joined.contains(
                "routing.vips[0].services[0]: unknown service `apx`, did you mean `api`?"
            ),
            "{joined}"
        );
        assert!(
            joined
                .contains("routing.vips[1].address: `198.18.100.1` is already announced (line 16)"),
            "{joined}"
        );
        assert!(
            joined.contains("routing.vips[2].services: no service listens on `198.18.100.9`"),
            "{joined}"
        );
        assert!(
            joined.contains("routing.vips[3].address: `nope` is not an IP address"),
            "{joined}"
        );
        assert_eq!(e.len(), 7, "{joined}");
    }

    #[test]
    fn an_empty_list_of_vips_is_refused() {
        let e = errors("routing:\n  table: 100\n");
        assert!(e[0].contains("routing.vips: missing or empty"), "{e:?}");
    }

    #[test]
    fn an_address_is_vrrps_or_announced_not_both() {
        let e = errors("vrrp:\n  instances:\n    - { name: v, interface: eth0, virtual_router_id: 1, virtual_ips: [198.18.100.1] }\nrouting:\n  vips:\n    - address: 198.18.100.1\n");
        assert!(
            e[0].contains("is a virtual IP of VRRP instance `v`"),
            "{e:?}"
        );
    }
}
