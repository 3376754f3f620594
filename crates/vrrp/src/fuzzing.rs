//! The fuzz harness of the parser that reads outside bytes: the advert
//! decoder ([`packet`]). Shared by the bolero tests below (bounded, in
//! `cargo test`) and the cargo-fuzz target `vrrp_packet` (long runs, see
//! docs/fuzzing.md); the netlink answers are tandem-netlink's, fuzzed there.
//! Compiled only for tests and with the `fuzzing` feature.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

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
}
