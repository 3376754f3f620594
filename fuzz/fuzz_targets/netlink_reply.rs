//! rtnetlink answers (links, addresses, acks), cut into datagrams: the harness and its properties are in `tandem_vrrp::fuzzing::netlink_reply`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_vrrp::fuzzing::netlink_reply(data));
