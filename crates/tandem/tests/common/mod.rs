//! Shared pieces of the end-to-end tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Asserts that a finished `tandem` command exited 0 (showing its stderr if
/// not) and returns its standard output.
pub fn succeeded(out: std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

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

/// One HTTP/1.1 request to the admin endpoint; returns (status, body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr)
        .await
        .expect("connect to admin endpoint");
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: tandem\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let raw = read_to_end(&mut s, Duration::from_secs(30)).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    (code, body.to_owned())
}

/// The value of one sample in a Prometheus text exposition, e.g.
/// `tandem_connections_total{service="x",backend="y"}`: labels must match exactly.
pub fn sample(exposition: &str, name_and_labels: &str) -> Option<f64> {
    exposition.lines().find_map(|l| {
        let (key, value) = l.rsplit_once(' ')?;
        (key == name_and_labels).then(|| value.parse().ok())?
    })
}

/// Echoes `data` through a fresh connection and checks it came back intact.
pub async fn echo_ok(addr: SocketAddr, data: &[u8]) -> bool {
    let Ok(stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let (n, hash) = send_and_hash_reply_checked(stream, data).await;
    n == data.len() && hash == test_support::sha256_hex(data)
}

async fn send_and_hash_reply_checked(stream: TcpStream, data: &[u8]) -> (usize, String) {
    let (mut r, mut w) = stream.into_split();
    let reader = async move {
        let mut hasher = sha2::Sha256::new();
        let mut total = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    hasher.update(&buf[..n]);
                    total += n;
                }
            }
        }
        (total, test_support::hex(&hasher.finalize()))
    };
    let writer = async move {
        if w.write_all(data).await.is_ok() {
            let _ = w.shutdown().await;
        }
    };
    let ((total, hash), ()) = tokio::join!(reader, writer);
    (total, hash)
}
