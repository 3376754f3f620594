//! Test helpers for tandem's end-to-end tests: backends that echo, answer with
//! their name or hash what they received; a blackhole that never completes a
//! handshake; and [`Tandem`], the real binary run with a YAML config.
//!
//! Everything listens on 127.0.0.1, on ephemeral ports or on ports that
//! [`free_port`] found; nothing here sends traffic anywhere else. Every wait is
//! bounded.

mod backends;
pub mod fuzz;
pub mod netns;
mod peers;
mod process;
mod tls;
pub mod webdriver;

pub use backends::{Blackhole, DrainThenReply, EchoServer, HoldServer, NamedServer, UdpNamedEcho};
pub use peers::Peer;
pub use process::Tandem;
pub use tls::{http_server, https_server, https_server_on, HttpState, Pki};

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicU32, Ordering};

/// A port on 127.0.0.1 that was free for TCP and UDP a moment ago (bound, then
/// released). Connecting to it is refused, which also makes it a dead backend.
///
/// It comes from below the kernel's ephemeral range
/// (`net.ipv4.ip_local_port_range`), so no outgoing connection can take it
/// between now and the test binding it: after a benchmark, tens of thousands of
/// sockets in TIME_WAIT keep the ephemeral range nearly full, and a port the
/// kernel handed out and took back was soon some connect's local port.
/// Candidates start at a place that depends on the process, and then follow a
/// counter, so test threads and test binaries running side by side do not pick
/// the same one.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let (low, high) = below_ephemeral_range();
    let span = u32::from(high - low);
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..span {
        let offset = start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = low + offset as u16;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if TcpListener::bind(addr).is_ok() && UdpSocket::bind(addr).is_ok() {
            return port;
        }
    }
    panic!("no free port on 127.0.0.1 between {low} and {high}");
}

/// Ports from 26000 up to the first ephemeral one (32768 by default): above
/// the fixed ports of benches/l4 (15201–25099), so a test run beside a
/// benchmark takes none of them. Where the ephemeral range starts below 27000
/// the two overlap and a port may again be taken by a connect.
fn below_ephemeral_range() -> (u16, u16) {
    let first_ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    (26_000, first_ephemeral.max(27_000))
}

/// 127.0.0.1 with a port that was free a moment ago.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// SHA-256 of `data` as lowercase hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(data))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Deterministic pseudo-random bytes (xorshift), cheap enough for hundreds of MiB.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Whether every program in `paths` is installed. When one is missing: under
/// `TANDEM_REQUIRE_NETNS=1` (CI) a panic; otherwise `false` after a loud skip
/// message naming the Debian `packages` to install.
pub fn installed_or_skip(test: &str, paths: &[&str], packages: &str) -> bool {
    let missing: Vec<&str> = paths
        .iter()
        .copied()
        .filter(|p| !std::path::Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("TANDEM_REQUIRE_NETNS").is_ok_and(|v| v == "1") {
        panic!("{test}: {missing:?} required (TANDEM_REQUIRE_NETNS=1) but not installed (apt-get install {packages})");
    }
    eprintln!(
        "\n*** SKIPPED {test}: {missing:?} not installed (apt-get install {packages}); \
         set TANDEM_REQUIRE_NETNS=1 to make this a failure. ***\n"
    );
    false
}
