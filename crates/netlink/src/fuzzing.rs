//! The fuzz harness of what reads the kernel's bytes: the answer loop
//! ([`absorb`]), the link, address and route parsers and the event parser.
//! Shared by the bolero tests below (bounded, in `cargo test`) and the
//! cargo-fuzz target `netlink_reply` (long runs, see docs/fuzzing.md).
//! Compiled only for tests and with the `fuzzing` feature.

use crate::address::parse_address;
use crate::events::parse_events;
use crate::link::parse_link;
use crate::request::absorb;
use crate::route::parse_route;

/// The kernel's answers to one request. Input: a byte of datagram plan, then
/// the bytes, cut into datagrams as `recv` would hand them over (plan 0: one);
/// every message is parsed as a link, an address and a route, and every
/// datagram as a batch of events too.
///
/// Checked beyond "no panic, no hang": at most one message, and one event, per
/// 16 bytes of datagram; a parsed route's prefix fits its family.
pub fn netlink_reply(input: &[u8]) {
    let Some((&plan, bytes)) = input.split_first() else {
        return;
    };
    let mut rest = bytes;
    let mut state = u32::from(plan) | 0x100;
    while !rest.is_empty() {
        // Plan 0: the whole input is one datagram, as the seeds captured from the kernel are.
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let size = match plan {
            0 => rest.len(),
            _ => 16 + ((state >> 16) as usize % 4096),
        };
        let (datagram, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        let mut messages = 0;
        let verdict = absorb(datagram, 1, |_, body| {
            messages += 1;
            let _ = parse_link(body);
            let _ = parse_address(body);
            if let Some(route) = parse_route(body) {
                let max = if route.destination.is_ipv4() { 32 } else { 128 };
                assert!(route.prefix_len <= max, "{route:?}");
            }
        });
        assert!(messages <= datagram.len() / 16);
        assert!(parse_events(datagram).len() <= datagram.len() / 16);
        if verdict.is_some() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_netlink_replies_parse_without_panic_or_hang() {
        bolero::check!()
            .with_iterations(20_000)
            .for_each(|input: &[u8]| netlink_reply(input));
    }

    /// An RTM_NEWADDR answer (seq 1, part of a dump) for 198.18.0.100/24 on
    /// interface 3, then NLMSG_DONE: what the kernel sends.
    fn address_dump() -> Vec<u8> {
        let mut body = vec![2u8, 24, 0, 0, 3, 0, 0, 0];
        for (kind, data) in [(2u16, &[198u8, 18, 0, 100][..]), (1, &[198, 18, 0, 100])] {
            body.extend_from_slice(&8u16.to_ne_bytes());
            body.extend_from_slice(&kind.to_ne_bytes());
            body.extend_from_slice(data);
        }
        let mut out = Vec::new();
        for (kind, flags, payload) in [(20u16, 2u16, &body[..]), (3, 2, &[0u8; 4][..])] {
            out.extend_from_slice(&(16 + payload.len() as u32).to_ne_bytes());
            out.extend_from_slice(&kind.to_ne_bytes());
            out.extend_from_slice(&flags.to_ne_bytes());
            out.extend_from_slice(&1u32.to_ne_bytes());
            out.extend_from_slice(&0u32.to_ne_bytes());
            out.extend_from_slice(payload);
        }
        out
    }

    /// An RTM_NEWROUTE answer (seq 1, part of a dump): 198.18.7.1/32 in
    /// table 4242 (RTA_TABLE), protocol 250, scope link, out of interface 3.
    fn route_dump() -> Vec<u8> {
        let mut body = vec![2u8, 32, 0, 0, 0, 250, 253, 1, 0, 0, 0, 0];
        for (kind, data) in [
            (15u16, 4242u32.to_ne_bytes()),
            (1, [198, 18, 7, 1]),
            (4, 3u32.to_ne_bytes()),
        ] {
            body.extend_from_slice(&8u16.to_ne_bytes());
            body.extend_from_slice(&kind.to_ne_bytes());
            body.extend_from_slice(&data);
        }
        let mut out = (16 + body.len() as u32).to_ne_bytes().to_vec();
        out.extend_from_slice(&24u16.to_ne_bytes());
        out.extend_from_slice(&2u16.to_ne_bytes());
        out.extend_from_slice(&1u32.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn the_seeds_parse_to_what_they_say() {
        let dump = address_dump();
        let (index, a) = parse_address(&dump[16..16 + 24]).unwrap();
        assert_eq!(
            (index, a.address.to_string(), a.prefix_len),
            (3, "198.18.0.100".into(), 24)
        );
        assert_eq!(absorb(&dump, 1, |_, _| {}), Some(Ok(())));
        let route = parse_route(&route_dump()[16..]).unwrap();
        assert_eq!(
            (
                route.destination.to_string(),
                route.table,
                route.protocol,
                route.ifindex
            ),
            ("198.18.7.1".into(), 4242, 250, 3)
        );
    }

    #[test]
    fn mutated_netlink_replies_parse_without_panic_or_hang() {
        let seeds = [address_dump(), route_dump()];
        bolero::check!()
            .with_type::<(u8, u8, Vec<(u8, u8)>, Vec<u8>)>()
            .with_iterations(20_000)
            .for_each(|(plan, seed, edits, tail)| {
                let seed = &seeds[usize::from(*seed) % seeds.len()];
                netlink_reply(&test_support::fuzz::mutated(*plan, seed, edits, 4, tail));
            });
    }

    #[test]
    fn the_committed_corpus_parses_without_panic_or_hang() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fuzz/corpus/netlink_reply"
        );
        let mut n = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            netlink_reply(&std::fs::read(entry.unwrap().path()).unwrap());
            n += 1;
        }
        assert!(n > 0, "no corpus in {dir}");
    }

    #[test]
    fn an_attribute_shorter_than_its_header_ends_the_list() {
        // Found by vrrp's netlink harness: an rtattr length of 0 to 3 did not
        // advance, and parsing the message spun for ever.
        let mut input = vec![7];
        input.extend(address_dump());
        input[1 + 16 + 8] = 0; // first attribute's length, low byte
        netlink_reply(&input);
        // A broken length ends the list: the address attributes after it are not read.
        assert!(parse_address(&input[1 + 16..1 + 16 + 24]).is_none());
    }

    #[test]
    fn an_error_ack_with_errno_i32_min_is_eio() {
        // Found by the cargo-fuzz target netlink_reply: `-errno` overflowed.
        let mut ack = vec![0u8; 20];
        ack[..4].copy_from_slice(&20u32.to_ne_bytes());
        ack[4..6].copy_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
        ack[8..12].copy_from_slice(&1u32.to_ne_bytes());
        ack[16..20].copy_from_slice(&i32::MIN.to_ne_bytes());
        assert_eq!(absorb(&ack, 1, |_, _| {}), Some(Err(libc::EIO)));
        ack[16..20].copy_from_slice(&(-libc::EEXIST).to_ne_bytes());
        assert_eq!(absorb(&ack, 1, |_, _| {}), Some(Err(libc::EEXIST)));
    }
}
