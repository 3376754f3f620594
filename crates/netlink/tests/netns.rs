//! tandem-netlink against a real kernel, in a network namespace of its own:
//! routes in a table of their own, checked with `ip route` too; addresses
//! and their flags; host events.
//! Needs root; see test_support::netns.

use std::net::IpAddr;
use std::time::Duration;

use tandem_netlink::{HostEvent, HostEvents, Netlink, Route, RouteKind, LOCAL_TABLE};
use test_support::netns::{Host, Lab};

macro_rules! lab {
    () => {
        match Lab::new(module_path!()) {
            Some(lab) => lab,
            None => return,
        }
    };
}

const TABLE: u32 = 4242;
const PROTOCOL: u8 = 250;

/// `ip ARGS` in `host`; its output, or a panic with its error.
fn ip(host: &Host, args: &[&str]) -> String {
    let mut argv = vec!["ip"];
    argv.extend_from_slice(args);
    let out = host.sh(&argv);
    assert!(out.status.success(), "{argv:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn route(destination: &str, prefix_len: u8, ifindex: u32) -> Route {
    Route {
        destination: destination.parse::<IpAddr>().unwrap(),
        prefix_len,
        table: TABLE,
        protocol: PROTOCOL,
        ifindex,
        kind: RouteKind::Unicast,
    }
}

#[test]
fn routes_are_replaced_listed_by_table_and_protocol_and_deleted() {
    let mut lab = lab!();
    let host = lab.host(&["198.18.0.1/24", "2001:2::1/64"]);
    let mut nl = host
        .spawn(|| Netlink::open().expect("netlink in the host"))
        .join()
        .unwrap();
    // The socket stays in the namespace it was opened in.
    let eth0 = nl.link("eth0").unwrap().expect("the host has eth0");
    let v4 = route("198.18.7.1", 32, eth0.index);
    let v6 = route("2001:2::7:1", 128, eth0.index);

    for r in [v4, v6] {
        nl.replace_route(&r).unwrap();
        nl.replace_route(&r).expect("replacing is idempotent");
    }
    assert_eq!(nl.routes(TABLE, PROTOCOL).unwrap(), vec![v4, v6]);
    let shown = ip(&host, &["route", "show", "table", "4242"]);
    assert!(
        shown.contains("198.18.7.1 dev eth0 proto 250 scope link"),
        "{shown}"
    );
    let shown = ip(&host, &["-6", "route", "show", "table", "4242"]);
    assert!(shown.contains("2001:2::7:1 dev eth0 proto 250"), "{shown}");

    // Someone else's routes: another protocol in the table, the same
    // protocol in another table. Neither is listed or deleted as ours.
    ip(
        &host,
        &[
            "route",
            "add",
            "198.18.7.2/32",
            "dev",
            "eth0",
            "table",
            "4242",
            "proto",
            "static",
        ],
    );
    ip(
        &host,
        &[
            "route",
            "add",
            "198.18.7.3/32",
            "dev",
            "eth0",
            "table",
            "4243",
            "proto",
            "250",
        ],
    );
    assert_eq!(nl.routes(TABLE, PROTOCOL).unwrap(), vec![v4, v6]);
    let statics = nl.routes(TABLE, 4).unwrap();
    assert_eq!(
        statics,
        vec![Route {
            protocol: 4,
            ..route("198.18.7.2", 32, eth0.index)
        }]
    );
    assert!(!nl
        .delete_route(&route("198.18.7.2", 32, eth0.index))
        .unwrap());
    assert!(!nl
        .delete_route(&route("198.18.7.3", 32, eth0.index))
        .unwrap());

    // A replace moves the destination to another interface.
    let lo = nl.link("lo").unwrap().unwrap();
    let moved = route("198.18.7.1", 32, lo.index);
    nl.replace_route(&moved).unwrap();
    assert_eq!(nl.routes(TABLE, PROTOCOL).unwrap(), vec![moved, v6]);
    let shown = ip(&host, &["route", "show", "table", "4242"]);
    assert!(
        shown.contains("198.18.7.1 dev lo proto 250 scope link"),
        "{shown}"
    );

    assert!(nl.delete_route(&moved).unwrap());
    assert!(!nl.delete_route(&moved).unwrap(), "already gone");
    assert!(nl.delete_route(&v6).unwrap());
    assert!(!nl.delete_route(&v6).unwrap(), "already gone");
    assert_eq!(nl.routes(TABLE, PROTOCOL).unwrap(), vec![]);
    let shown = ip(&host, &["route", "show", "table", "4242"]);
    assert_eq!(
        shown.trim(),
        "198.18.7.2 dev eth0 proto static scope link",
        "only the other protocol's route is left"
    );
    assert_eq!(
        ip(&host, &["-6", "route", "show", "table", "4242"]).trim(),
        ""
    );
}

#[test]
fn a_route_the_kernel_refuses_is_an_error_with_its_errno() {
    let mut lab = lab!();
    let host = lab.host(&["198.18.0.1/24"]);
    let mut nl = host.spawn(|| Netlink::open().unwrap()).join().unwrap();
    // Host bits set under the prefix length: EINVAL.
    let bad = route("198.18.7.1", 24, nl.link("eth0").unwrap().unwrap().index);
    let e = nl.replace_route(&bad).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
    // No such interface: ENODEV.
    let e = nl
        .replace_route(&route("198.18.7.1", 32, 9999))
        .unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENODEV), "{e}");
}

#[test]
fn addresses_are_added_once_listed_with_their_flags_and_deleted_once() {
    let mut lab = lab!();
    let host = lab.host(&["198.18.0.1/24"]);
    let mut nl = host.spawn(|| Netlink::open().unwrap()).join().unwrap();
    let eth0 = nl.link("eth0").unwrap().unwrap().index;
    let vip: IpAddr = "198.18.0.100".parse().unwrap();
    assert!(nl.add_address(eth0, vip, 24).unwrap());
    assert!(
        !nl.add_address(eth0, vip, 24).unwrap(),
        "EEXIST: already there"
    );
    assert!(host.has_address("198.18.0.100"));
    let v4 = nl.addresses(eth0, false).unwrap();
    let listed: Vec<_> = v4
        .iter()
        .map(|a| (a.address.to_string(), a.prefix_len, a.secondary))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("198.18.0.1".into(), 24, false),
            ("198.18.0.100".into(), 24, true)
        ],
        "the second address of a subnet is secondary"
    );
    // Duplicate address detection on (the lab turns it off): tentative.
    host.sh(&[
        "sh",
        "-c",
        "echo 1 > /proc/sys/net/ipv6/conf/eth0/accept_dad",
    ]);
    ip(&host, &["addr", "add", "2001:2::5/64", "dev", "eth0"]);
    let v6: IpAddr = "2001:2::100".parse().unwrap();
    assert!(nl.add_address(eth0, v6, 64).unwrap());
    let v6s = nl.addresses(eth0, true).unwrap();
    let find = |s: &str| v6s.iter().find(|a| a.address.to_string() == s).copied();
    assert!(find("2001:2::5").expect("listed").tentative, "{v6s:?}");
    assert!(
        !find("2001:2::100").expect("listed").tentative,
        "ours skip DAD: {v6s:?}"
    );

    assert!(nl.delete_address(eth0, vip, 24).unwrap());
    assert!(!nl.delete_address(eth0, vip, 24).unwrap(), "already gone");
    assert!(nl.delete_address(eth0, v6, 64).unwrap());
    assert!(!nl.delete_address(eth0, v6, 64).unwrap(), "already gone");
    assert!(!host.has_address("198.18.0.100") && !host.has_address("2001:2::100"));
    assert!(nl.link("eth0").unwrap().unwrap().up);
}

#[test]
fn a_removed_address_and_a_link_going_down_are_reported() {
    let mut lab = lab!();
    let host = lab.host(&["198.18.0.1/24"]);
    let h = host.clone();
    let seen = host
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut nl = Netlink::open().unwrap();
                let mut events = HostEvents::open().unwrap();
                let eth0 = nl.link("eth0").unwrap().unwrap().index;
                let vip: IpAddr = "198.18.0.100".parse().unwrap();
                assert!(nl.add_address(eth0, vip, 32).unwrap());
                assert!(nl.delete_address(eth0, vip, 32).unwrap());
                h.set_link(false);
                let wanted = [
                    HostEvent::AddressRemoved {
                        index: eth0,
                        address: vip,
                    },
                    HostEvent::Link {
                        index: eth0,
                        up: false,
                    },
                ];
                let mut seen = Vec::new();
                let found = tokio::time::timeout(Duration::from_secs(5), async {
                    while !wanted.iter().all(|w| seen.contains(w)) {
                        seen.extend(events.next().await.unwrap());
                    }
                })
                .await;
                (found.is_ok(), seen)
            })
        })
        .join()
        .unwrap();
    assert!(seen.0, "{:?}", seen.1);
}

#[test]
fn a_local_route_makes_the_host_accept_an_address_it_does_not_carry() {
    let mut lab = lab!();
    let host = lab.host(&["198.18.0.1/24"]);
    let bound = host
        .spawn(|| {
            let mut nl = Netlink::open().unwrap();
            let lo = nl.link("lo").unwrap().expect("lo");
            let vip = Route {
                destination: "198.18.100.1".parse().unwrap(),
                prefix_len: 32,
                table: LOCAL_TABLE,
                protocol: PROTOCOL,
                ifindex: lo.index,
                kind: RouteKind::Local,
            };
            let before = std::net::TcpListener::bind("198.18.100.1:0").is_ok();
            nl.replace_route(&vip).unwrap();
            let after = std::net::TcpListener::bind("198.18.100.1:0").is_ok();
            let listed = nl.routes(LOCAL_TABLE, PROTOCOL).unwrap();
            assert!(nl.delete_route(&vip).unwrap());
            let gone = std::net::TcpListener::bind("198.18.100.1:0").is_err();
            (before, after, listed == vec![vip], gone)
        })
        .join()
        .unwrap();
    assert_eq!(bound, (false, true, true, true));
}
