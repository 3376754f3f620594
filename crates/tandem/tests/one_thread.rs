//! End-to-end: `runtime.worker_threads: 1` runs the whole daemon on one
//! thread (tokio's current-thread runtime). Everything that shares that
//! thread with the data path (health checks, the admin endpoint, UDP sessions,
//! reload and shutdown) still works.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{bin, http, sample, send_and_hash_reply};
use test_support::{free_addr, pattern, sha256_hex, EchoServer, HoldServer, Tandem, UdpNamedEcho};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UdpSocket};

fn yaml(
    admin: SocketAddr,
    tcp: (SocketAddr, SocketAddr),
    udp: (SocketAddr, SocketAddr),
    more: &str,
) -> String {
    format!(
        "admin:\n  listen: {admin}\nruntime:\n  worker_threads: 1\nservices:\n  \
         - name: web\n    listen: {}\n    drain_timeout: 1s\n    health: {{ type: tcp, interval: 200ms, timeout: 200ms }}\n    \
         backends:\n      - {{ address: \"{}\", name: echo }}\n  \
         - name: dns\n    protocol: udp\n    drain_timeout: 1s\n    listen: {}\n    backends:\n      - address: \"{}\"\n{more}",
        tcp.0, tcp.1, udp.0, udp.1
    )
}

async fn ask_udp(to: SocketAddr, payload: &[u8]) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(payload, to).await.unwrap();
    let mut buf = [0u8; 2048];
    match tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_worker_thread_serves_tcp_udp_admin_reload_and_shutdown() {
    let echo = EchoServer::start().await;
    let hold = HoldServer::start().await;
    let named = UdpNamedEcho::start("ns").await;
    let (admin, web, dns, extra) = (free_addr(), free_addr(), free_addr(), free_addr());
    let config = yaml(admin, (web, echo.addr()), (dns, named.addr()), "");
    let mut tandem = Tandem::spawn(bin(), &config);
    tandem.wait_listening(web);
    // Backends start down until their health checks pass (bounded: 5 s).
    let mut up = false;
    for _ in 0..50 {
        let (_, status) = http(admin, "GET", "/status", &[]).await;
        let echo_backend = status.split(r#""name":"echo""#).nth(1).unwrap_or("");
        let echo_backend = echo_backend.split(r#""name":"#).next().unwrap_or("");
        if echo_backend.contains(r#""state":"up""#) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the backend never came up: {}", tandem.logs());

    // TCP: 8 MiB both ways, three connections at once, every byte intact.
    let data = pattern(8 << 20, 7);
    let want = sha256_hex(&data);
    let mut transfers = Vec::new();
    for _ in 0..3 {
        let data = data.clone();
        transfers.push(tokio::spawn(async move {
            let stream = TcpStream::connect(web).await.unwrap();
            send_and_hash_reply(stream, &data).await
        }));
    }
    for t in transfers {
        let (n, hash) = t.await.unwrap();
        assert_eq!((n, hash.as_str()), (data.len(), want.as_str()));
    }

    // UDP on the same thread.
    assert_eq!(ask_udp(dns, b"q1").await.as_deref(), Some(&b"ns:q1"[..]));

    // Health checks ran, and the admin endpoint answers.
    let (code, status) = http(admin, "GET", "/status", &[]).await;
    assert_eq!(code, 200);
    assert!(status.contains(r#""last_check":{"ok":true"#), "{status}");
    let (_, metrics) = http(admin, "GET", "/metrics", &[]).await;
    assert_eq!(
        sample(
            &metrics,
            r#"tandem_connections_total{service="web",backend="echo"}"#
        ),
        Some(3.0),
        "{metrics}"
    );

    // SIGHUP adds a service; the old ones keep serving.
    let added = format!(
        "  - name: extra\n    listen: {extra}\n    drain_timeout: 1s\n    backends:\n      - address: \"{}\"\n",
        hold.addr()
    );
    std::fs::write(
        tandem.config_path(),
        yaml(admin, (web, echo.addr()), (dns, named.addr()), &added),
    )
    .unwrap();
    tandem.signal("HUP");
    assert!(tandem.wait_log("reload: added extra"), "{}", tandem.logs());
    let mut held = TcpStream::connect(extra).await.unwrap();
    held.write_all(b"open").await.unwrap();
    assert_eq!(ask_udp(dns, b"q2").await.as_deref(), Some(&b"ns:q2"[..]));

    // SIGTERM: drains for drain_timeout (1 s), cuts the held connection, exits 0.
    tokio::time::sleep(Duration::from_millis(200)).await;
    tandem.signal("TERM");
    let status = tandem
        .wait_exit(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still running 10 s after SIGTERM:\n{}", tandem.logs()));
    assert!(status.success(), "{status:?}\n{}", tandem.logs());
    assert!(
        tandem.logs().contains("cut_connections=1"),
        "{}",
        tandem.logs()
    );
}
