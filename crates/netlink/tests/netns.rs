//! tandem-netlink against a real kernel, in a network namespace of its own:
//! routes in a table of their own, checked with `ip route` too.
//! Needs root; see test_support::netns.

use std::net::IpAddr;

use tandem_netlink::{Netlink, Route};
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
