//! rtnetlink answers (links, addresses, routes, acks), cut into datagrams: the harness and its properties are in `tandem_netlink::fuzzing::netlink_reply`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_netlink::fuzzing::netlink_reply(data));
