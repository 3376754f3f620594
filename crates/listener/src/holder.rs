//! Who holds a port: read /proc/net/{tcp,tcp6,udp,udp6} for the socket bound to
//! it, then /proc/*/fd for the process that owns that socket. Best effort: any
//! file we cannot read just means we cannot say.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tandem_core::Protocol;

/// A process found holding a socket on the port we wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortHolder {
    /// The address the other socket is bound to (often 0.0.0.0 or ::).
    pub bound: SocketAddr,
    /// `None` when the socket was found but not its process (another user's, without privilege).
    pub process: Option<(u32, String)>,
}

/// Finds a socket bound to `port` (listening, for TCP) and, where readable, its process.
pub fn find(protocol: Protocol, port: u16) -> Option<PortHolder> {
    let tables: &[&str] = match protocol {
        Protocol::Tcp => &["/proc/net/tcp", "/proc/net/tcp6"],
        Protocol::Udp => &["/proc/net/udp", "/proc/net/udp6"],
    };
    for table in tables {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
        };
        for (bound, state, inode) in text.lines().skip(1).filter_map(parse_socket_line) {
            // TCP_LISTEN is 0x0A; an unconnected UDP socket is TCP_CLOSE, 0x07.
            let wanted_state = match protocol {
                Protocol::Tcp => 0x0A,
                Protocol::Udp => 0x07,
            };
            if bound.port() == port && state == wanted_state {
                return Some(PortHolder {
                    bound,
                    process: process_owning(inode),
                });
            }
        }
    }
    None
}

/// Parses `sl local_address rem_address st ... inode` of a /proc/net table.
fn parse_socket_line(line: &str) -> Option<(SocketAddr, u8, u64)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let local = *fields.get(1)?;
    let state = u8::from_str_radix(fields.get(3)?, 16).ok()?;
    let inode = fields.get(9)?.parse().ok()?;
    let (addr_hex, port_hex) = local.split_once(':')?;
    let port = u16::from_str_radix(port_hex, 16).ok()?;
    let ip = parse_proc_ip(addr_hex)?;
    Some((SocketAddr::new(ip, port), state, inode))
}

/// /proc/net prints addresses as 32-bit words in host (little-endian) byte order.
fn parse_proc_ip(hex: &str) -> Option<IpAddr> {
    let word = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::from_be);
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(hex)?.to_be_bytes()))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                let w = word(hex.get(i * 8..i * 8 + 8)?)?;
                bytes[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

fn process_owning(inode: u64) -> Option<(u32, String)> {
    let target = format!("socket:[{inode}]");
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str()) {
                let comm = fs::read_to_string(entry.path().join("comm"))
                    .map(|c| c.trim().to_owned())
                    .unwrap_or_else(|_| "?".to_owned());
                return Some((pid, comm));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_lines() {
        let v4 = "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0";
        let (addr, st, inode) = parse_socket_line(v4).unwrap();
        assert_eq!(addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(st, 0x0A);
        assert_eq!(inode, 12345);
        let v6 = "   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1";
        let (addr, _, _) = parse_socket_line(v6).unwrap();
        assert_eq!(addr, "[::1]:8080".parse().unwrap());
    }

    #[test]
    fn finds_our_own_listener_and_process() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let holder = find(Protocol::Tcp, port).expect("our listener is in /proc/net/tcp");
        assert_eq!(holder.bound, l.local_addr().unwrap());
        let (pid, _comm) = holder.process.expect("we can read our own fds");
        assert_eq!(pid, std::process::id());
    }
}
