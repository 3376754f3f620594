//! Fuzz harnesses of the two parsers that read outside bytes: the advert
//! decoder ([`packet`]) and the netlink reply parser. Shared by the bolero
//! tests below (bounded, in `cargo test`) and the cargo-fuzz targets
//! `vrrp_packet` and `netlink_reply` (long runs, see docs/fuzzing.md).
//! Compiled only for tests and with the `fuzzing` feature.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::netlink;
use crate::packet::{self, AdvertFields, IpMeta, VrrpChecksum, HEADER_LEN};

/// One received packet. Input: a flags byte, then for the IPv4 raw-socket
/// path the whole IPv4 packet, else the source and destination addresses
/// (4 + 4 or 16 + 16 bytes) and the VRRP message. A flag asks the harness to
/// set a right checksum first, so the fuzzer gets past that check too.
///
/// Checked beyond "no panic": an accepted advert carries the count of
/// addresses its header says, an interval in 1..=4095, addresses of the
/// packet's family, and encodes back to the bytes it came from (reserved bits
/// and checksum aside).
pub fn decode_advert(input: &[u8]) {
    let Some((&flags, rest)) = input.split_first() else {
        return;
    };
    let mode = if flags & 1 == 0 {
        VrrpChecksum::PseudoHeader
    } else {
        VrrpChecksum::NoPseudoHeader
    };
    let fix_checksum = flags & 2 != 0;
    if flags & 4 != 0 {
        if let Ok((ip, payload)) = packet::split_ipv4(rest) {
            assert!(payload.len() <= rest.len());
            check_advert(payload, &ip, mode, fix_checksum);
        }
        return;
    }
    let ipv6 = flags & 8 != 0;
    let hop_limit = if flags & 16 == 0 { packet::TTL } else { flags };
    let size = if ipv6 { 16 } else { 4 };
    let Some((addrs, msg)) = rest.split_at_checked(2 * size) else {
        return;
    };
    let ip = |b: &[u8]| -> IpAddr {
        if ipv6 {
            let mut o = [0u8; 16];
            o.copy_from_slice(b);
            IpAddr::V6(Ipv6Addr::from(o))
        } else {
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        }
    };
    let meta = IpMeta {
        src: ip(&addrs[..size]),
        dst: ip(&addrs[size..]),
        hop_limit,
    };
    check_advert(msg, &meta, mode, fix_checksum);
}

fn check_advert(msg: &[u8], ip: &IpMeta, mode: VrrpChecksum, fix_checksum: bool) {
    let size = if ip.src.is_ipv6() { 16 } else { 4 };
    let mut owned;
    let mut msg = msg;
    if fix_checksum && msg.len() >= HEADER_LEN {
        let len = (HEADER_LEN + usize::from(msg[3]) * size).min(msg.len());
        owned = msg.to_vec();
        owned[6..8].copy_from_slice(&[0, 0]);
        let sum = packet::checksum(&owned[..len], ip.src, ip.dst, mode);
        owned[6..8].copy_from_slice(&sum.to_be_bytes());
        msg = &owned;
    }
    let Ok(advert) = packet::decode(msg, ip, mode) else {
        return;
    };
    let count = advert.address_count();
    assert_eq!(count, usize::from(msg[3]));
    assert!((1..=packet::MAX_INTERVAL_CS).contains(&advert.interval_cs));
    let addresses: Vec<IpAddr> = advert.addresses().collect();
    assert_eq!(addresses.len(), count);
    assert!(addresses.iter().all(|a| a.is_ipv6() == ip.src.is_ipv6()));
    let fields = AdvertFields {
        vrid: advert.vrid,
        priority: advert.priority,
        interval_cs: advert.interval_cs,
        addresses: &addresses,
    };
    let mut out = Vec::new();
    packet::encode(&fields, ip.src, ip.dst, mode, &mut out).expect("a decoded advert encodes");
    let len = HEADER_LEN + count * size;
    assert_eq!(out.len(), len);
    let mut original = msg[..len].to_vec();
    original[4] &= 0x0f; // reserved bits are ignored on receipt
    original[6..8].copy_from_slice(&out[6..8]);
    assert_eq!(out, original, "decode → encode changed the advert");
    assert!(packet::verifies(&out, ip.src, ip.dst, mode));
}

/// The kernel's answers to one request. Input: a byte of datagram plan, then
/// the bytes, cut into datagrams as `recv` would hand them over (plan 0: one); every
/// message is parsed as a link and as an address, as the driver does.
/// Checked: no panic, no hang, and parsing ends after at most one message
/// per 16 bytes.
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
        let outcome = netlink::absorb(datagram, 1, |_, payload| {
            messages += 1;
            let _ = netlink::parse_link(payload);
            let _ = netlink::parse_address(payload);
        });
        assert!(messages <= datagram.len() / 16);
        // The same bytes as a multicast batch of link and address events.
        assert!(netlink::parse_events(datagram).len() <= datagram.len() / 16);
        if outcome.is_some() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An advert as keepalived sends it (v3, VRID 51, priority 150, 1 s,
    /// VIP 198.18.0.100, from 198.18.0.11), behind the flags byte and the addresses.
    const ADVERT_V4: &[u8] = &[
        0, 198, 18, 0, 11, 224, 0, 0, 18, 0x31, 51, 150, 1, 0, 100, 0, 0, 198, 18, 0, 100,
    ];

    #[test]
    fn random_adverts_keep_every_property() {
        bolero::check!()
            .with_iterations(5_000)
            .for_each(|input: &[u8]| decode_advert(input));
    }

    #[test]
    fn mutated_adverts_with_right_checksums_keep_every_property() {
        bolero::check!()
            .with_type::<(u8, Vec<(u8, u8)>, Vec<u8>)>()
            .with_iterations(20_000)
            .for_each(|(flags, edits, tail)| {
                let mut input = ADVERT_V4.to_vec();
                // Never the raw-IPv4 or IPv6 bits: those need other layouts.
                input[0] = (flags & !12) | 2;
                for &(at, byte) in edits.iter().take(3) {
                    let at = 9 + usize::from(at) % (input.len() - 9);
                    input[at] = byte;
                }
                input.extend_from_slice(tail);
                decode_advert(&input);
            });
    }

    #[test]
    fn random_netlink_replies_parse_without_panic_or_hang() {
        bolero::check!()
            .with_iterations(20_000)
            .for_each(|input: &[u8]| netlink_reply(input));
    }

    /// An RTM_NEWADDR answer (seq 1, part of a dump) for 198.18.0.100/24 on
    /// interface 3, then NLMSG_DONE: what the kernel sends, behind a plan byte.
    fn address_dump() -> Vec<u8> {
        let mut body = vec![2u8, 24, 0, 0, 3, 0, 0, 0];
        for (kind, data) in [(2u16, &[198u8, 18, 0, 100][..]), (1, &[198, 18, 0, 100])] {
            body.extend_from_slice(&8u16.to_ne_bytes());
            body.extend_from_slice(&kind.to_ne_bytes());
            body.extend_from_slice(data);
        }
        let mut out = vec![7u8];
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

    #[test]
    fn mutated_netlink_replies_parse_without_panic_or_hang() {
        let seed = address_dump();
        bolero::check!()
            .with_type::<(Vec<(u8, u8)>, Vec<u8>)>()
            .with_iterations(20_000)
            .for_each(|(edits, tail)| {
                let mut input = seed.clone();
                for &(at, byte) in edits.iter().take(4) {
                    let at = usize::from(at) % input.len();
                    input[at] = byte;
                }
                input.extend_from_slice(tail);
                netlink_reply(&input);
            });
    }

    #[test]
    fn an_attribute_shorter_than_its_header_ends_the_list() {
        // Found by the netlink harness: an rtattr length of 0 to 3 did not
        // advance, and parsing the message spun for ever.
        let mut input = address_dump();
        input[1 + 16 + 8] = 0; // first attribute's length, low byte
        netlink_reply(&input);
        // A broken length ends the list: the address attributes after it are not read.
        assert!(netlink::parse_address(&input[1 + 16..1 + 16 + 24]).is_none());
    }

    #[test]
    fn an_error_ack_with_errno_i32_min_is_eio() {
        // Found by the cargo-fuzz target netlink_reply: `-errno` overflowed.
        let mut ack = vec![0u8; 20];
        ack[..4].copy_from_slice(&20u32.to_ne_bytes());
        ack[4..6].copy_from_slice(&2u16.to_ne_bytes()); // NLMSG_ERROR
        ack[8..12].copy_from_slice(&1u32.to_ne_bytes());
        ack[16..20].copy_from_slice(&i32::MIN.to_ne_bytes());
        assert_eq!(netlink::absorb(&ack, 1, |_, _| {}), Some(Err(libc::EIO)));
        ack[16..20].copy_from_slice(&(-libc::EEXIST).to_ne_bytes());
        assert_eq!(netlink::absorb(&ack, 1, |_, _| {}), Some(Err(libc::EEXIST)));
    }
}
