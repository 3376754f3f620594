//! Test helpers for tandem's end-to-end tests: backends that echo, answer with
//! their name or hash what they received; a blackhole that never completes a
//! handshake; and [`Tandem`], the real binary run with a YAML config.
//!
//! Everything listens on 127.0.0.1 with ephemeral ports; nothing here sends
//! traffic anywhere else. Every wait is bounded.

mod backends;
pub mod netns;
mod process;
mod tls;

pub use backends::{Blackhole, DrainThenReply, EchoServer, HoldServer, NamedServer, UdpNamedEcho};
pub use process::Tandem;
pub use tls::{http_server, https_server, https_server_on, HttpState, Pki};

use std::net::{SocketAddr, TcpListener};

/// A port on 127.0.0.1 that was free a moment ago (bound, then released).
/// Connecting to it is refused, which also makes it a dead backend.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
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
