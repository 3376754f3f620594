//! VRRP adverts (raw IPv4 packets, IPv4 and IPv6 messages): the harness and its properties are in `tandem_vrrp::fuzzing::decode_advert`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tandem_vrrp::fuzzing::decode_advert(data));
