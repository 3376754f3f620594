//! The PROXY protocol (HAProxy's specification, versions 1 and 2): the header
//! a proxy writes before the first byte of a connection to tell the next hop
//! who the client really is.
//!
//! Key items: [`decode`] reads a header from the bytes received so far and
//! says whether it is complete ([`Decoded::Complete`] with its length, so the
//! bytes after it are the client's own), needs more bytes
//! ([`Decoded::Incomplete`]), or can never become one ([`DecodeError`]);
//! [`encode`] writes a header of either [`Version`].
//!
//! Invariants: [`decode`] never reads past [`MAX_HEADER_LEN`] bytes, so a
//! caller that buffers until `Complete` or an error holds at most that much;
//! any prefix of a valid header decodes as `Incomplete`, never as an error;
//! what [`encode`] writes, [`decode`] reads back as the same header.
//!
//! This crate is pure: no I/O, no clock, std only. The caller bounds the time.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12 bytes every version 2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Version 1 headers are at most 107 bytes, CRLF included.
pub const V1_MAX_LEN: usize = 107;

/// The longest header accepted: 16 fixed bytes and up to 4 KiB of addresses
/// and TLVs (cloud load balancers add a few hundred bytes of TLVs).
pub const MAX_HEADER_LEN: usize = 16 + 4096;

/// Which header format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

impl Version {
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1 => "v1",
            Version::V2 => "v2",
        }
    }
}

/// `Proxy`: the connection was relayed for a client, whose address follows.
/// `Local`: the sender opened it on its own (a health check); the receiver
/// uses the connection's real addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Local,
    Proxy,
}

/// The client's transport (version 2 only says so; version 1 is TCP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Unspecified,
    Stream,
    Datagram,
}

/// A decoded header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub command: Command,
    pub transport: Transport,
    /// The client (source) and the address it connected to (destination);
    /// `None` for `LOCAL`, `UNKNOWN` and address families other than IP.
    pub addresses: Option<Addresses>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    pub source: SocketAddr,
    pub destination: SocketAddr,
}

impl Header {
    /// A `PROXY` header for a TCP connection from `source` to `destination`.
    pub fn tcp(source: SocketAddr, destination: SocketAddr) -> Self {
        Header {
            command: Command::Proxy,
            transport: Transport::Stream,
            addresses: Some(Addresses {
                source,
                destination,
            }),
        }
    }

    /// A `LOCAL` header: what a health check sends.
    pub fn local() -> Self {
        Header {
            command: Command::Local,
            transport: Transport::Unspecified,
            addresses: None,
        }
    }

    /// The client's address, when the header gives one to use.
    pub fn source(&self) -> Option<SocketAddr> {
        match self.command {
            Command::Proxy => self.addresses.map(|a| a.source),
            Command::Local => None,
        }
    }
}

/// What the bytes received so far hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    /// A whole header, `length` bytes long; the client's data follows it.
    Complete { header: Header, length: usize },
    /// A valid beginning: read more.
    Incomplete,
}

/// Why the bytes can never become a header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Neither `PROXY ` nor the version 2 signature.
    #[error("no proxy protocol header")]
    Missing,
    /// A version 1 line longer than 107 bytes, or a version 2 header longer than 4 KiB.
    #[error("proxy protocol header too long")]
    TooLong,
    /// A header that breaks the format; the text says where.
    #[error("malformed proxy protocol header: {0}")]
    Malformed(&'static str),
}

impl DecodeError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Missing => "proxy_missing",
            DecodeError::TooLong | DecodeError::Malformed(_) => "proxy_malformed",
        }
    }
}

/// Reads a header from the start of `buf`; see the crate doc.
pub fn decode(buf: &[u8]) -> Result<Decoded, DecodeError> {
    let v1 = b"PROXY ";
    if starts_like(buf, &V2_SIGNATURE) {
        decode_v2(buf)
    } else if starts_like(buf, v1) {
        decode_v1(buf)
    } else {
        Err(DecodeError::Missing)
    }
}

/// Whether `buf` and `prefix` agree on their common length.
fn starts_like(buf: &[u8], prefix: &[u8]) -> bool {
    let n = buf.len().min(prefix.len());
    buf[..n] == prefix[..n]
}

fn decode_v1(buf: &[u8]) -> Result<Decoded, DecodeError> {
    let window = &buf[..buf.len().min(V1_MAX_LEN)];
    // The first LF ends the line, and it must follow a CR: looking for CRLF
    // instead would accept a lone LF when the rest arrives in the same read
    // but refuse it when the read stops after it.
    let Some(lf) = window.iter().position(|&b| b == b'\n') else {
        return if buf.len() >= V1_MAX_LEN {
            Err(DecodeError::TooLong)
        } else {
            Ok(Decoded::Incomplete)
        };
    };
    let Some(end) = lf.checked_sub(1).filter(|&cr| window[cr] == b'\r') else {
        return Err(DecodeError::Malformed("line ends without CR"));
    };
    let line = std::str::from_utf8(&buf[6..end])
        .map_err(|_| DecodeError::Malformed("version 1 line is not text"))?;
    let length = end + 2;
    let mut words = line.split(' ');
    let family = words.next().unwrap_or("");
    if family == "UNKNOWN" {
        // The rest of the line is to be ignored (spec, 2.1).
        return Ok(Decoded::Complete {
            header: Header {
                command: Command::Proxy,
                transport: Transport::Stream,
                addresses: None,
            },
            length,
        });
    }
    let v6 = match family {
        "TCP4" => false,
        "TCP6" => true,
        _ => {
            return Err(DecodeError::Malformed(
                "version 1 family is not TCP4, TCP6 or UNKNOWN",
            ))
        }
    };
    let fields: Vec<&str> = words.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(DecodeError::Malformed(
            "version 1 needs two addresses and two ports",
        ));
    };
    let ip = |text: &str| -> Result<IpAddr, DecodeError> {
        let ip: IpAddr = text
            .parse()
            .map_err(|_| DecodeError::Malformed("version 1 address does not parse"))?;
        if ip.is_ipv6() == v6 {
            Ok(ip)
        } else {
            Err(DecodeError::Malformed(
                "version 1 address is not of its family",
            ))
        }
    };
    let port = |text: &str| -> Result<u16, DecodeError> {
        let digits_only = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
        let leading_zero = text.len() > 1 && text.starts_with('0');
        match text.parse() {
            Ok(p) if digits_only && !leading_zero => Ok(p),
            _ => Err(DecodeError::Malformed("version 1 port is not 0..65535")),
        }
    };
    Ok(Decoded::Complete {
        header: Header::tcp(
            SocketAddr::new(ip(src)?, port(sport)?),
            SocketAddr::new(ip(dst)?, port(dport)?),
        ),
        length,
    })
}

fn decode_v2(buf: &[u8]) -> Result<Decoded, DecodeError> {
    if buf.len() < 16 {
        return Ok(Decoded::Incomplete);
    }
    let (version, command) = (buf[12] >> 4, buf[12] & 0x0f);
    if version != 2 {
        return Err(DecodeError::Malformed(
            "version 2 signature with another version",
        ));
    }
    let command = match command {
        0 => Command::Local,
        1 => Command::Proxy,
        _ => {
            return Err(DecodeError::Malformed(
                "version 2 command is not LOCAL or PROXY",
            ))
        }
    };
    let (family, transport) = (buf[13] >> 4, buf[13] & 0x0f);
    let transport = match transport {
        0 => Transport::Unspecified,
        1 => Transport::Stream,
        2 => Transport::Datagram,
        _ => return Err(DecodeError::Malformed("version 2 transport is unknown")),
    };
    let body_len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let length = 16 + body_len;
    if length > MAX_HEADER_LEN {
        return Err(DecodeError::TooLong);
    }
    let address_len = match family {
        0 => 0,
        1 => 12,
        2 => 36,
        3 => 216,
        _ => {
            return Err(DecodeError::Malformed(
                "version 2 address family is unknown",
            ))
        }
    };
    if body_len < address_len {
        return Err(DecodeError::Malformed(
            "version 2 length is shorter than its addresses",
        ));
    }
    if buf.len() < length {
        return Ok(Decoded::Incomplete);
    }
    let body = &buf[16..length];
    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
    let addresses = match family {
        1 => {
            let ip = |at: usize| Ipv4Addr::new(body[at], body[at + 1], body[at + 2], body[at + 3]);
            Some(Addresses {
                source: SocketAddr::new(ip(0).into(), port(8)),
                destination: SocketAddr::new(ip(4).into(), port(10)),
            })
        }
        2 => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&body[at..at + 16]);
                Ipv6Addr::from(octets)
            };
            Some(Addresses {
                source: SocketAddr::new(ip(0).into(), port(32)),
                destination: SocketAddr::new(ip(16).into(), port(34)),
            })
        }
        _ => None,
    };
    Ok(Decoded::Complete {
        header: Header {
            command,
            transport,
            addresses,
        },
        length,
    })
}

/// Appends `header` in `version`'s format to `out`. Version 1 cannot say
/// `LOCAL`: it writes `PROXY UNKNOWN`, which receivers treat alike. Two
/// addresses of different families are written as IPv6 (IPv4-mapped).
pub fn encode(version: Version, header: &Header, out: &mut Vec<u8>) {
    let addresses = match header.command {
        Command::Proxy => header.addresses.map(same_family),
        Command::Local => None,
    };
    match version {
        Version::V1 => {
            let Some(a) = addresses else {
                out.extend_from_slice(b"PROXY UNKNOWN\r\n");
                return;
            };
            let family = if a.source.is_ipv4() { "TCP4" } else { "TCP6" };
            out.extend_from_slice(
                format!(
                    "PROXY {family} {} {} {} {}\r\n",
                    a.source.ip(),
                    a.destination.ip(),
                    a.source.port(),
                    a.destination.port()
                )
                .as_bytes(),
            );
        }
        Version::V2 => {
            out.extend_from_slice(&V2_SIGNATURE);
            let command = match header.command {
                Command::Local => 0x20,
                Command::Proxy => 0x21,
            };
            let transport = match header.transport {
                Transport::Unspecified => 0,
                Transport::Stream => 1,
                Transport::Datagram => 2,
            };
            out.push(command);
            match addresses.map(|a| (a.source.ip(), a.destination.ip(), a)) {
                Some((IpAddr::V4(s), IpAddr::V4(d), a)) => {
                    out.extend_from_slice(&[0x10 | transport, 0, 12]);
                    out.extend_from_slice(&s.octets());
                    out.extend_from_slice(&d.octets());
                    out.extend_from_slice(&a.source.port().to_be_bytes());
                    out.extend_from_slice(&a.destination.port().to_be_bytes());
                }
                Some((s, d, a)) => {
                    out.extend_from_slice(&[0x20 | transport, 0, 36]);
                    out.extend_from_slice(&v6(s).octets());
                    out.extend_from_slice(&v6(d).octets());
                    out.extend_from_slice(&a.source.port().to_be_bytes());
                    out.extend_from_slice(&a.destination.port().to_be_bytes());
                }
                None => out.extend_from_slice(&[transport, 0, 0]),
            }
        }
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn same_family(a: Addresses) -> Addresses {
    if a.source.is_ipv4() == a.destination.is_ipv4() {
        return a;
    }
    let map = |s: SocketAddr| SocketAddr::new(v6(s.ip()).into(), s.port());
    Addresses {
        source: map(a.source),
        destination: map(a.destination),
    }
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.command, self.addresses) {
            (Command::Local, _) => f.write_str("LOCAL"),
            (Command::Proxy, None) => f.write_str("PROXY UNKNOWN"),
            (Command::Proxy, Some(a)) => write!(f, "PROXY {} -> {}", a.source, a.destination),
        }
    }
}

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn complete(buf: &[u8]) -> (Header, usize) {
        match decode(buf) {
            Ok(Decoded::Complete { header, length }) => (header, length),
            other => panic!("{other:?} for {buf:?}"),
        }
    }

    #[test]
    fn version_1_lines_from_the_spec() {
        let (h, n) = complete(b"PROXY TCP4 192.0.2.1 198.18.0.100 56324 443\r\nGET /");
        assert_eq!(n, 45);
        assert_eq!(h.source(), Some("192.0.2.1:56324".parse().unwrap()));
        assert_eq!(
            h.addresses.unwrap().destination,
            "198.18.0.100:443".parse().unwrap()
        );
        let (h, _) = complete(b"PROXY TCP6 2001:db8::1 ::1 65535 0\r\n");
        assert_eq!(h.source(), Some("[2001:db8::1]:65535".parse().unwrap()));
        let (h, n) = complete(b"PROXY UNKNOWN ffff::1 whatever\r\n");
        assert_eq!((h.source(), n), (None, 32));
    }

    #[test]
    fn broken_headers_are_refused_with_a_reason() {
        let cases: &[(&[u8], DecodeError)] = &[
            (b"GET / HTTP/1.1\r\n", DecodeError::Missing),
            (b"\x16\x03\x01", DecodeError::Missing),
            (
                b"PROXY TCP5 1.2.3.4 1.2.3.4 1 2\r\n",
                DecodeError::Malformed("version 1 family is not TCP4, TCP6 or UNKNOWN"),
            ),
            (
                b"PROXY TCP4 ::1 1.2.3.4 1 2\r\n",
                DecodeError::Malformed("version 1 address is not of its family"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 1.2.3.4 1 65536\r\n",
                DecodeError::Malformed("version 1 port is not 0..65535"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 1.2.3.4 01 2\r\n",
                DecodeError::Malformed("version 1 port is not 0..65535"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 1.2.3.4 1\r\n",
                DecodeError::Malformed("version 1 needs two addresses and two ports"),
            ),
            (
                b"PROXY TCP4  1.2.3.4 1.2.3.4 1 2\r\n",
                DecodeError::Malformed("version 1 needs two addresses and two ports"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 1.2.3.4 1 2\n",
                DecodeError::Malformed("line ends without CR"),
            ),
            (
                b"\r\n\r\n\0\r\nQUIT\n\x31\x11\0\x0c",
                DecodeError::Malformed("version 2 signature with another version"),
            ),
            (
                b"\r\n\r\n\0\r\nQUIT\n\x22\x11\0\x0c",
                DecodeError::Malformed("version 2 command is not LOCAL or PROXY"),
            ),
            (
                b"\r\n\r\n\0\r\nQUIT\n\x21\x11\0\x0b",
                DecodeError::Malformed("version 2 length is shorter than its addresses"),
            ),
            (
                b"\r\n\r\n\0\r\nQUIT\n\x21\x41\0\x0c",
                DecodeError::Malformed("version 2 address family is unknown"),
            ),
            (
                b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x10\x01",
                DecodeError::TooLong,
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                decode(bytes).as_ref(),
                Err(want),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        assert_eq!(decode(&long), Err(DecodeError::TooLong));
        assert_eq!(DecodeError::Missing.kind(), "proxy_missing");
        assert_eq!(DecodeError::TooLong.kind(), "proxy_malformed");
    }

    #[test]
    fn version_2_local_and_tlvs() {
        let mut local = Vec::new();
        encode(Version::V2, &Header::local(), &mut local);
        assert_eq!(local.len(), 16);
        let (h, n) = complete(&local);
        assert_eq!((h.command, h.source(), n), (Command::Local, None, 16));
        // A PROXY header with a TLV after the addresses: skipped, counted in the length.
        let mut with_tlv = Vec::new();
        encode(
            Version::V2,
            &Header::tcp(
                "192.0.2.1:1000".parse().unwrap(),
                "198.18.0.1:443".parse().unwrap(),
            ),
            &mut with_tlv,
        );
        with_tlv[15] += 4;
        with_tlv.extend_from_slice(&[0x04, 0x00, 0x01, 0x00]);
        let (h, n) = complete(&with_tlv);
        assert_eq!(
            (h.source(), n),
            (Some("192.0.2.1:1000".parse().unwrap()), 32)
        );
        let mut v1_local = Vec::new();
        encode(Version::V1, &Header::local(), &mut v1_local);
        assert_eq!(v1_local, b"PROXY UNKNOWN\r\n");
    }

    fn socket_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>()).prop_map(|(ip, p)| SocketAddr::from((ip, p))),
            (any::<[u8; 16]>(), any::<u16>())
                .prop_map(|(ip, p)| SocketAddr::from((Ipv6Addr::from(ip), p))),
        ]
    }

    proptest! {
        /// What encode writes decodes to the same client, at any split: every
        /// prefix is Incomplete, the whole is Complete, and bytes after it are
        /// not part of it.
        #[test]
        fn encode_then_decode_round_trips_at_every_split(
            source in socket_addr(),
            destination in socket_addr(),
            v2 in any::<bool>(),
            trailer in prop::collection::vec(any::<u8>(), 0..20),
        ) {
            let version = if v2 { Version::V2 } else { Version::V1 };
            let mut bytes = Vec::new();
            encode(version, &Header::tcp(source, destination), &mut bytes);
            let len = bytes.len();
            prop_assert!(len <= V1_MAX_LEN || v2);
            for cut in 0..len {
                prop_assert_eq!(decode(&bytes[..cut]), Ok(Decoded::Incomplete), "cut {}", cut);
            }
            bytes.extend_from_slice(&trailer);
            let (header, length) = complete(&bytes);
            prop_assert_eq!(length, len);
            let want = same_family(Addresses { source, destination });
            prop_assert_eq!(header.source(), Some(want.source));
            prop_assert_eq!(header.addresses.unwrap().destination, want.destination);
        }

        /// Arbitrary bytes never panic and never claim more than they hold.
        #[test]
        fn any_bytes_decode_without_panicking(bytes in prop::collection::vec(any::<u8>(), 0..300), signature in any::<bool>()) {
            let bytes = if signature { [V2_SIGNATURE.as_slice(), &bytes].concat() } else { bytes };
            if let Ok(Decoded::Complete { length, .. }) = decode(&bytes) {
                prop_assert!(length <= bytes.len());
                prop_assert!(length <= MAX_HEADER_LEN);
            }
        }
    }
}
