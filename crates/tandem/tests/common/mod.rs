//! Shared pieces of the end-to-end tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub fn bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tandem"))
}

/// A one-service config: `extra` lines are indented service keys.
pub fn one_service(listen: SocketAddr, backends: &[SocketAddr], extra: &str) -> String {
    let mut yaml = format!("services:\n  - name: test\n    listen: {listen}\n");
    if !extra.contains("connect_timeout") {
        yaml.push_str("    connect_timeout: 1s\n");
    }
    for line in extra.lines().filter(|l| !l.trim().is_empty()) {
        yaml.push_str("    ");
        yaml.push_str(line.trim());
        yaml.push('\n');
    }
    yaml.push_str("    backends:\n");
    for b in backends {
        yaml.push_str(&format!("      - address: {b}\n"));
    }
    yaml
}

/// Sends `data`, shuts down the write side, and returns (bytes, sha256) of
/// everything read back until end of file. Reads and writes run concurrently.
pub async fn send_and_hash_reply(stream: TcpStream, data: &[u8]) -> (usize, String) {
    let (mut r, mut w) = stream.into_split();
    let reader = async move {
        let mut hasher = sha2::Sha256::new();
        let mut total = 0usize;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = r.read(&mut buf).await.expect("read through tandem");
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            total += n;
        }
        (total, test_support::hex(&hasher.finalize()))
    };
    let writer = async move {
        w.write_all(data).await.expect("write through tandem");
        w.shutdown().await.expect("shutdown write");
    };
    let ((total, hash), ()) = tokio::join!(reader, writer);
    (total, hash)
}

/// Reads until end of file (at most `timeout`), returning what came.
pub async fn read_to_end(stream: &mut TcpStream, timeout: Duration) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    tokio::time::timeout(timeout, stream.read_to_end(&mut out))
        .await
        .map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "no end of file in time")
        })??;
    Ok(out)
}
