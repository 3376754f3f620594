//! VRRPv3 advertisements on the wire (RFC 9568 §5): encode, decode and the
//! receive checks of §7.1, with no allocation per packet.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! |Version| Type  | Virtual Rtr ID|   Priority    |IPvX Addr Count|
//! |Reserve| Max Advertise Interval|          Checksum             |
//! |                       IPvX Address(es)                        |
//! ```
//!
//! The checksum is RFC 1071's over the message, preceded for IPv6 by the
//! RFC 8200 §8.1 pseudo-header. For IPv4 the implementations disagree (see
//! docs/vrrp.md): keepalived and FRR add an IPv4 pseudo-header (source,
//! destination, zero, protocol 112, length) by default, RFC 9568 §5.2.8 says
//! the message alone. [`VrrpChecksum`] picks one, per instance.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

pub use tandem_config::VrrpChecksum;

/// IP protocol number of VRRP.
pub const PROTOCOL: u8 = 112;
/// Where IPv4 adverts go (RFC 9568 §5.1.1.2).
pub const MULTICAST_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);
/// Where IPv6 adverts go (RFC 9568 §5.1.2.2).
pub const MULTICAST_V6: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0x12);
/// Adverts are sent with, and only accepted with, this TTL / hop limit.
pub const TTL: u8 = 255;
/// The fixed part of an advert.
pub const HEADER_LEN: usize = 8;
/// The largest advert: 255 IPv6 addresses.
pub const MAX_LEN: usize = HEADER_LEN + 255 * 16;
/// The largest interval the 12-bit field holds, in centiseconds.
pub const MAX_INTERVAL_CS: u16 = 4095;

const VERSION: u8 = 3;
const TYPE_ADVERTISEMENT: u8 = 1;

/// Why a received packet was dropped; one label value of
/// `tandem_vrrp_invalid_packets_total{reason}` each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reject {
    /// Shorter than its header or its address list, or a broken IP header.
    Length,
    /// TTL / hop limit other than 255: not from this link.
    Ttl,
    /// VRRP version other than 3 (version 2 is a different protocol on the wire).
    Version,
    /// Packet type other than 1 (advertisement).
    Type,
    /// An address count of zero.
    AddressCount,
    /// A max advertise interval of zero.
    Interval,
    /// The checksum does not verify.
    Checksum,
    /// A virtual router id no instance on this interface runs.
    Vrid,
    /// With `unicast_peers`: from an address that is not one of them.
    Peer,
}

impl Reject {
    pub const ALL: [Reject; 9] = [
        Reject::Length,
        Reject::Ttl,
        Reject::Version,
        Reject::Type,
        Reject::AddressCount,
        Reject::Interval,
        Reject::Checksum,
        Reject::Vrid,
        Reject::Peer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Length => "length",
            Reject::Ttl => "ttl",
            Reject::Version => "version",
            Reject::Type => "type",
            Reject::AddressCount => "address_count",
            Reject::Interval => "interval",
            Reject::Checksum => "checksum",
            Reject::Vrid => "vrid",
            Reject::Peer => "unknown_peer",
        }
    }
}

/// What the IP layer says about a received advert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpMeta {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// TTL (IPv4) or hop limit (IPv6).
    pub hop_limit: u8,
}

/// A received advert that passed every check, borrowing its addresses from
/// the receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advert<'a> {
    pub vrid: u8,
    pub priority: u8,
    /// Max Advertise Interval, in centiseconds (1..=4095).
    pub interval_cs: u16,
    addresses: &'a [u8],
    ipv6: bool,
}

impl<'a> Advert<'a> {
    pub fn interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.interval_cs) * 10)
    }

    pub fn address_count(&self) -> usize {
        self.addresses.len() / if self.ipv6 { 16 } else { 4 }
    }

    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + 'a {
        let ipv6 = self.ipv6;
        let size = if ipv6 { 16 } else { 4 };
        self.addresses.chunks_exact(size).map(move |c| {
            if ipv6 {
                let mut b = [0u8; 16];
                b.copy_from_slice(c);
                IpAddr::V6(Ipv6Addr::from(b))
            } else {
                IpAddr::V4(Ipv4Addr::new(c[0], c[1], c[2], c[3]))
            }
        })
    }
}

/// What goes into an advert we send.
#[derive(Debug, Clone, Copy)]
pub struct AdvertFields<'a> {
    pub vrid: u8,
    pub priority: u8,
    /// Centiseconds, 1..=4095.
    pub interval_cs: u16,
    pub addresses: &'a [IpAddr],
}

/// An advert that cannot be sent as asked (a bug in the caller: validated
/// configuration never asks for these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("an advert carries 1 to 255 addresses, got {0}")]
    AddressCount(usize),
    #[error("the advert interval must be 1 to 4095 centiseconds, got {0}")]
    Interval(u16),
    #[error("the source, destination and every address must be of one family")]
    Family,
}

/// Writes the advert for `fields`, sent from `src` to `dst`, into `out`
/// (cleared first; its capacity is reused).
pub fn encode(
    fields: &AdvertFields<'_>,
    src: IpAddr,
    dst: IpAddr,
    mode: VrrpChecksum,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let count = fields.addresses.len();
    if count == 0 || count > 255 {
        return Err(EncodeError::AddressCount(count));
    }
    if fields.interval_cs == 0 || fields.interval_cs > MAX_INTERVAL_CS {
        return Err(EncodeError::Interval(fields.interval_cs));
    }
    let ipv6 = src.is_ipv6();
    if dst.is_ipv6() != ipv6 || fields.addresses.iter().any(|a| a.is_ipv6() != ipv6) {
        return Err(EncodeError::Family);
    }
    out.clear();
    out.push((VERSION << 4) | TYPE_ADVERTISEMENT);
    out.push(fields.vrid);
    out.push(fields.priority);
    out.push(count as u8); // at most 255, checked above
    out.extend_from_slice(&(fields.interval_cs & 0x0fff).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    for a in fields.addresses {
        match a {
            IpAddr::V4(v4) => out.extend_from_slice(&v4.octets()),
            IpAddr::V6(v6) => out.extend_from_slice(&v6.octets()),
        }
    }
    let sum = checksum(out, src, dst, mode);
    out[6..8].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

/// Checks a received VRRP message (the IP payload) as RFC 9568 §7.1 asks, in
/// its order, and returns the advert. The VRID check is the caller's: it
/// knows which routers run on the interface. Never panics, whatever the bytes.
pub fn decode<'a>(msg: &'a [u8], ip: &IpMeta, mode: VrrpChecksum) -> Result<Advert<'a>, Reject> {
    if ip.hop_limit != TTL {
        return Err(Reject::Ttl);
    }
    let Some(head) = msg.get(..HEADER_LEN) else {
        return Err(Reject::Length);
    };
    if head[0] >> 4 != VERSION {
        return Err(Reject::Version);
    }
    if head[0] & 0x0f != TYPE_ADVERTISEMENT {
        return Err(Reject::Type);
    }
    let count = usize::from(head[3]);
    if count == 0 {
        return Err(Reject::AddressCount);
    }
    // The top four bits are reserved: ignored on receipt (§5.2.6).
    let interval_cs = u16::from_be_bytes([head[4], head[5]]) & 0x0fff;
    if interval_cs == 0 {
        return Err(Reject::Interval);
    }
    let ipv6 = ip.src.is_ipv6();
    let len = HEADER_LEN + count * if ipv6 { 16 } else { 4 };
    // Anything after the address list (VRRPv2's authentication data, say) is
    // not part of the message.
    let Some(msg) = msg.get(..len) else {
        return Err(Reject::Length);
    };
    if ip.dst.is_ipv6() != ipv6 || !verifies(msg, ip.src, ip.dst, mode) {
        return Err(Reject::Checksum);
    }
    Ok(Advert {
        vrid: head[1],
        priority: head[2],
        interval_cs,
        addresses: &msg[HEADER_LEN..],
        ipv6,
    })
}

/// Whether the checksum of a whole message (checksum field included) is right.
pub fn verifies(msg: &[u8], src: IpAddr, dst: IpAddr, mode: VrrpChecksum) -> bool {
    fold(pseudo_sum(src, dst, msg.len(), mode) + sum(msg)) == 0xffff
}

/// The checksum of `msg` (whose checksum field must be zero).
pub fn checksum(msg: &[u8], src: IpAddr, dst: IpAddr, mode: VrrpChecksum) -> u16 {
    !fold(pseudo_sum(src, dst, msg.len(), mode) + sum(msg))
}

/// The one's complement sum of the pseudo-header's 16-bit words, before folding.
fn pseudo_sum(src: IpAddr, dst: IpAddr, len: usize, mode: VrrpChecksum) -> u64 {
    let proto = u64::from(PROTOCOL);
    match (src, dst) {
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            // RFC 8200 §8.1: source, destination, 32-bit length, 24 zero bits, next header.
            let len = len as u64;
            sum(&s.octets()) + sum(&d.octets()) + (len >> 16) + (len & 0xffff) + proto
        }
        (IpAddr::V4(s), IpAddr::V4(d)) => match mode {
            VrrpChecksum::NoPseudoHeader => 0,
            // RFC 768's layout: source, destination, zero, protocol, 16-bit length.
            VrrpChecksum::PseudoHeader => {
                sum(&s.octets()) + sum(&d.octets()) + proto + (len as u64 & 0xffff)
            }
        },
        // Mixed families never verify; decode reports them as bad checksums.
        _ => 0x1_0000,
    }
}

/// RFC 1071: big-endian 16-bit words, an odd last byte padded with zero.
fn sum(data: &[u8]) -> u64 {
    let mut chunks = data.chunks_exact(2);
    let mut acc: u64 = chunks
        .by_ref()
        .map(|w| u64::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// The IPv4 header of a packet read from a raw socket (which hands the
/// header over as it came off the wire), and the payload it carries.
pub fn split_ipv4(packet: &[u8]) -> Result<(IpMeta, &[u8]), Reject> {
    let Some(head) = packet.get(..20) else {
        return Err(Reject::Length);
    };
    let ihl = usize::from(head[0] & 0x0f) * 4;
    if head[0] >> 4 != 4 || ihl < 20 {
        return Err(Reject::Length);
    }
    let total = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let end = total.min(packet.len());
    let Some(payload) = packet.get(ihl..end) else {
        return Err(Reject::Length);
    };
    let meta = IpMeta {
        src: IpAddr::V4(Ipv4Addr::new(head[12], head[13], head[14], head[15])),
        dst: IpAddr::V4(Ipv4Addr::new(head[16], head[17], head[18], head[19])),
        hop_limit: head[8],
    };
    Ok((meta, payload))
}

/// Writes the 20-byte IPv4 header an advert is sent with (`IP_HDRINCL`): TTL
/// 255, protocol 112, TOS "internetwork control" like other routing
/// protocols. The kernel fills in the identification and the header checksum.
pub fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, payload_len: usize, out: &mut [u8; 20]) {
    let total = (20 + payload_len).min(usize::from(u16::MAX)) as u16;
    out[0] = 0x45;
    out[1] = 0xc0;
    out[2..4].copy_from_slice(&total.to_be_bytes());
    out[4..8].copy_from_slice(&[0, 0, 0, 0]);
    out[8] = TTL;
    out[9] = PROTOCOL;
    out[10..12].copy_from_slice(&[0, 0]);
    out[12..16].copy_from_slice(&src.octets());
    out[16..20].copy_from_slice(&dst.octets());
}

/// Centiseconds for an interval the config validated (10 ms steps, ≤ 40.95 s).
pub fn interval_cs(interval: Duration) -> u16 {
    (interval.as_millis() / 10).clamp(1, u128::from(MAX_INTERVAL_CS)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v4(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn meta(src: &str, dst: &str) -> IpMeta {
        IpMeta {
            src: v4(src),
            dst: v4(dst),
            hop_limit: 255,
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Vectors computed outside this code (by hand-checked Python, see
    /// docs/vrrp.md "checksum"): VRID 51, priority 150, 100 cs, VIP
    /// 198.18.0.100, from 198.18.0.11 to 224.0.0.18.
    #[test]
    fn ipv4_checksum_matches_independent_vectors() {
        let vips = [v4("198.18.0.100")];
        let f = AdvertFields {
            vrid: 51,
            priority: 150,
            interval_cs: 100,
            addresses: &vips,
        };
        let (src, dst) = (v4("198.18.0.11"), v4("224.0.0.18"));
        let mut out = Vec::new();
        encode(&f, src, dst, VrrpChecksum::PseudoHeader, &mut out).unwrap();
        assert_eq!(out, hex("31 33 96 01 00 64 cb 43 c6 12 00 64"));
        encode(&f, src, dst, VrrpChecksum::NoPseudoHeader, &mut out).unwrap();
        assert_eq!(out, hex("31 33 96 01 00 64 71 f0 c6 12 00 64"));
    }

    #[test]
    fn ipv6_checksum_matches_an_independent_vector() {
        let vips = [v4("2001:2::100")];
        let f = AdvertFields {
            vrid: 7,
            priority: 100,
            interval_cs: 10,
            addresses: &vips,
        };
        let (src, dst) = (v4("fe80::1"), IpAddr::V6(MULTICAST_V6));
        let mut out = Vec::new();
        // The IPv4 setting has no say over IPv6: both give the same bytes.
        encode(&f, src, dst, VrrpChecksum::NoPseudoHeader, &mut out).unwrap();
        let want = hex("31 07 64 01 00 0a 4b cb 2001 0002 0000 0000 0000 0000 0000 0100");
        assert_eq!(out, want);
        encode(&f, src, dst, VrrpChecksum::PseudoHeader, &mut out).unwrap();
        assert_eq!(out, want);
    }

    /// A packet keepalived 2.2.7 sent (`vrrp_version 3`, VRID 51, priority
    /// 150, advert_int 0.1, VIP 198.18.0.100) from 198.18.0.1 to 224.0.0.18,
    /// as tests/interop.rs captured it, IP header included.
    #[test]
    fn a_captured_keepalived_advert_decodes_and_verifies() {
        let raw = hex("45c0 0020 0002 0000 ff70 1486 c612 0001 e000 0012
             3133 9601 000a cba7 c612 0064");
        let (m, msg) = split_ipv4(&raw).unwrap();
        assert_eq!(m, meta("198.18.0.1", "224.0.0.18"));
        let a = decode(msg, &m, VrrpChecksum::PseudoHeader).unwrap();
        assert_eq!((a.vrid, a.priority, a.interval_cs), (51, 150, 10));
        assert_eq!(a.addresses().collect::<Vec<_>>(), vec![v4("198.18.0.100")]);
        assert_eq!(
            decode(msg, &m, VrrpChecksum::NoPseudoHeader),
            Err(Reject::Checksum),
            "keepalived 2.2.7 always adds the IPv4 pseudo-header"
        );
        // tandem builds the very same bytes.
        let vips = [v4("198.18.0.100")];
        let f = AdvertFields {
            vrid: 51,
            priority: 150,
            interval_cs: 10,
            addresses: &vips,
        };
        let mut ours = Vec::new();
        encode(&f, m.src, m.dst, VrrpChecksum::PseudoHeader, &mut ours).unwrap();
        assert_eq!(ours, msg);
    }

    #[test]
    fn every_receive_check_rejects_with_its_reason() {
        let vips = [v4("198.18.0.100"), v4("198.18.0.101")];
        let f = AdvertFields {
            vrid: 9,
            priority: 100,
            interval_cs: 10,
            addresses: &vips,
        };
        let m = meta("198.18.0.2", "224.0.0.18");
        let mode = VrrpChecksum::PseudoHeader;
        let mut good = Vec::new();
        encode(&f, m.src, m.dst, mode, &mut good).unwrap();
        assert!(decode(&good, &m, mode).is_ok());

        let ttl = IpMeta {
            hop_limit: 254,
            ..m
        };
        assert_eq!(decode(&good, &ttl, mode), Err(Reject::Ttl));
        assert_eq!(decode(&good[..7], &m, mode), Err(Reject::Length));
        assert_eq!(decode(&good[..15], &m, mode), Err(Reject::Length));
        let mut v2 = good.clone();
        v2[0] = 0x21;
        assert_eq!(decode(&v2, &m, mode), Err(Reject::Version));
        let mut ty = good.clone();
        ty[0] = 0x32;
        assert_eq!(decode(&ty, &m, mode), Err(Reject::Type));
        let mut zero = good.clone();
        zero[3] = 0;
        assert_eq!(decode(&zero, &m, mode), Err(Reject::AddressCount));
        let mut iv = good.clone();
        iv[4] = 0xf0; // reserved bits set, interval zero
        iv[5] = 0;
        assert_eq!(decode(&iv, &m, mode), Err(Reject::Interval));
        let mut sum = good.clone();
        sum[2] = 101;
        assert_eq!(decode(&sum, &m, mode), Err(Reject::Checksum));
        // The checksum covers the source: a packet claiming another sender fails.
        let forged = meta("198.18.0.3", "224.0.0.18");
        assert_eq!(decode(&good, &forged, mode), Err(Reject::Checksum));
    }

    #[test]
    fn reserved_bits_and_trailing_bytes_are_ignored() {
        let vips = [v4("198.18.0.100")];
        let f = AdvertFields {
            vrid: 1,
            priority: 1,
            interval_cs: 4095,
            addresses: &vips,
        };
        let m = meta("198.18.0.2", "198.18.0.3");
        let mode = VrrpChecksum::NoPseudoHeader;
        let mut msg = Vec::new();
        encode(&f, m.src, m.dst, mode, &mut msg).unwrap();
        msg.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0]);
        let a = decode(&msg, &m, mode).unwrap();
        assert_eq!(a.interval(), Duration::from_millis(40_950));
        assert_eq!(a.address_count(), 1);
    }

    #[test]
    fn encode_refuses_what_cannot_be_sent() {
        let mut out = Vec::new();
        let src = v4("198.18.0.1");
        let dst = IpAddr::V4(MULTICAST_V4);
        let mode = VrrpChecksum::PseudoHeader;
        let none = AdvertFields {
            vrid: 1,
            priority: 1,
            interval_cs: 100,
            addresses: &[],
        };
        assert_eq!(
            encode(&none, src, dst, mode, &mut out),
            Err(EncodeError::AddressCount(0))
        );
        let mixed = [v4("2001:2::1")];
        let f = AdvertFields {
            addresses: &mixed,
            ..none
        };
        assert_eq!(
            encode(&f, src, dst, mode, &mut out),
            Err(EncodeError::Family)
        );
        let one = [v4("198.18.0.100")];
        let slow = AdvertFields {
            addresses: &one,
            interval_cs: 4096,
            ..none
        };
        assert_eq!(
            encode(&slow, src, dst, mode, &mut out),
            Err(EncodeError::Interval(4096))
        );
    }

    #[test]
    fn ipv4_headers_split_and_build() {
        let mut head = [0u8; 20];
        ipv4_header(Ipv4Addr::new(198, 18, 0, 1), MULTICAST_V4, 12, &mut head);
        let mut packet = head.to_vec();
        packet.extend_from_slice(&[1; 12]);
        packet.extend_from_slice(&[9; 4]); // link padding beyond total length
        let (m, payload) = split_ipv4(&packet).unwrap();
        assert_eq!(m, meta("198.18.0.1", "224.0.0.18"));
        assert_eq!(payload, &[1; 12]);
        assert_eq!(split_ipv4(&packet[..19]), Err(Reject::Length));
        let mut v6 = packet.clone();
        v6[0] = 0x65;
        assert_eq!(split_ipv4(&v6), Err(Reject::Length));
    }

    #[test]
    fn intervals_convert_to_centiseconds() {
        assert_eq!(interval_cs(Duration::from_millis(10)), 1);
        assert_eq!(interval_cs(Duration::from_secs(1)), 100);
        assert_eq!(interval_cs(Duration::from_millis(40_950)), 4095);
        assert_eq!(interval_cs(Duration::from_secs(100)), 4095);
    }

    fn addresses() -> impl Strategy<Value = (IpAddr, IpAddr, Vec<IpAddr>)> {
        prop_oneof![
            (
                any::<u32>(),
                any::<u32>(),
                prop::collection::vec(any::<u32>(), 1..=255)
            )
                .prop_map(|(s, d, a)| {
                    let ip = |x: u32| IpAddr::V4(Ipv4Addr::from(x));
                    (ip(s), ip(d), a.into_iter().map(ip).collect())
                }),
            (
                any::<u128>(),
                any::<u128>(),
                prop::collection::vec(any::<u128>(), 1..=255)
            )
                .prop_map(|(s, d, a)| {
                    let ip = |x: u128| IpAddr::V6(Ipv6Addr::from(x));
                    (ip(s), ip(d), a.into_iter().map(ip).collect())
                }),
        ]
    }

    fn mode() -> impl Strategy<Value = VrrpChecksum> {
        prop_oneof![
            Just(VrrpChecksum::PseudoHeader),
            Just(VrrpChecksum::NoPseudoHeader)
        ]
    }

    proptest! {
        #[test]
        fn adverts_round_trip(
            vrid in any::<u8>(),
            priority in any::<u8>(),
            interval_cs in 1u16..=4095,
            (src, dst, addrs) in addresses(),
            mode in mode(),
        ) {
            let f = AdvertFields { vrid, priority, interval_cs, addresses: &addrs };
            let mut out = Vec::new();
            encode(&f, src, dst, mode, &mut out).unwrap();
            prop_assert!(out.len() <= MAX_LEN);
            let m = IpMeta { src, dst, hop_limit: 255 };
            let a = decode(&out, &m, mode).unwrap();
            prop_assert_eq!((a.vrid, a.priority, a.interval_cs), (vrid, priority, interval_cs));
            prop_assert_eq!(a.addresses().collect::<Vec<_>>(), addrs);
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(
            bytes in prop::collection::vec(any::<u8>(), 0..600),
            (src, dst, _) in addresses(),
            hop_limit in prop_oneof![Just(255u8), any::<u8>()],
            mode in mode(),
        ) {
            let m = IpMeta { src, dst, hop_limit };
            if let Ok(a) = decode(&bytes, &m, mode) {
                prop_assert!(a.address_count() >= 1);
                prop_assert_eq!(a.addresses().count(), a.address_count());
            }
            let _ = split_ipv4(&bytes);
        }

        #[test]
        fn a_flipped_bit_is_caught(
            (src, dst, addrs) in addresses(),
            bit in 0usize..(8 * 12),
            mode in mode(),
        ) {
            let f = AdvertFields { vrid: 1, priority: 100, interval_cs: 100, addresses: &addrs };
            let mut out = Vec::new();
            encode(&f, src, dst, mode, &mut out).unwrap();
            out[bit / 8] ^= 1 << (bit % 8);
            let m = IpMeta { src, dst, hop_limit: 255 };
            prop_assert!(decode(&out, &m, mode).is_err());
        }
    }
}
