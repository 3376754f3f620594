//! End-to-end: client identity and admission. PROXY headers sent to nginx
//! (which parses them itself) and accepted from HAProxy (which writes them
//! itself), hand-made headers split, late, malformed or from an untrusted
//! address, allow/deny and per-source limits, with clients on distinct
//! loopback addresses (127.0.0.0/8 is all loopback), and a reload of the rules
//! that keeps open connections.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::{bin, http, sample};
use test_support::{free_addr, free_port, EchoServer, Peer, Tandem};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Connects from `source` (any 127.x.y.z, or ::1) to `to`.
async fn connect_from(source: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let source: IpAddr = source.parse().unwrap();
    let socket = if source.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(source, 0))?;
    tokio::time::timeout(Duration::from_secs(5), socket.connect(to))
        .await
        .map_err(|_| std::io::Error::other("connect timed out"))?
}

/// An HTTP/1.0 GET from `source`; the body, or the error.
async fn get_from(source: &str, to: SocketAddr) -> Result<String, String> {
    let mut s = connect_from(source, to).await.map_err(|e| e.to_string())?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: t\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .map_err(|_| "read timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    match text.split_once("\r\n\r\n") {
        Some((_, body)) if text.starts_with("HTTP/1.1 200") => Ok(body.trim().to_owned()),
        _ => Err(format!("not a 200 answer: {text:?}")),
    }
}

/// Whether tandem closes a connection from `source` before answering `data`.
async fn closed_without_answer(mut s: TcpStream, data: &[u8]) -> bool {
    let _ = s.write_all(data).await;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// nginx answering every request with the client address its PROXY header
/// gave, on 127.0.0.1:`v4` and [::1]:`v6`, each requiring the header.
fn nginx_reporting_the_proxied_client(v4: u16, v6: u16) -> Option<Peer> {
    Peer::nginx(
        &format!(
            "  server {{\n    listen 127.0.0.1:{v4} proxy_protocol;\n    listen [::1]:{v6} proxy_protocol;\n    location / {{ return 200 \"$proxy_protocol_addr $proxy_protocol_port\\n\"; }}\n  }}"
        ),
        SocketAddr::from(([127, 0, 0, 1], v4)),
    )
}

async fn rejected(admin: SocketAddr, reason: &str) -> f64 {
    let (_, metrics) = http(admin, "GET", "/metrics", &[]).await;
    sample(
        &metrics,
        &format!(r#"tandem_connections_rejected_total{{service="s",reason="{reason}"}}"#),
    )
    .unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_v1_and_v2_give_nginx_the_true_client_over_ipv4_and_ipv6() {
    let (n4, n6) = (free_port(), free_port());
    let Some(nginx) = nginx_reporting_the_proxied_client(n4, n6) else {
        return;
    };
    let (v1, v2, v6) = (free_addr(), free_addr(), free_port());
    let v6_listen = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, v6));
    // The http health check goes to the traffic port: only a LOCAL header
    // first makes nginx answer it, so the backends come up only with one.
    let health = "    health: { type: http, interval: 200ms, timeout: 150ms, rise: 1 }\n";
    let yaml = format!(
        "services:\n  - name: v1\n    listen: {v1}\n    proxy_protocol: {{ send: v1 }}\n{health}    backends: [{{ address: \"127.0.0.1:{n4}\" }}]\n  - name: v2\n    listen: {v2}\n    proxy_protocol: {{ send: v2 }}\n{health}    backends: [{{ address: \"127.0.0.1:{n4}\" }}]\n  - name: v6\n    listen: \"{v6_listen}\"\n    proxy_protocol: {{ send: v2 }}\n{health}    backends: [{{ address: \"[::1]:{n6}\" }}]\n"
    );
    let mut tandem = Tandem::spawn(bin(), &yaml);
    tandem.wait_listening(v1);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answers = Vec::new();
    while Instant::now() < deadline {
        answers = vec![
            get_from("127.0.0.7", v1).await,
            get_from("127.0.0.8", v2).await,
            get_from("::1", v6_listen).await,
        ];
        if answers.iter().all(Result::is_ok) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let answers: Vec<String> = answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|e| panic!("{e}\n{}\n{}", tandem.logs(), nginx.logs())))
        .collect();
    assert!(answers[0].starts_with("127.0.0.7 "), "{answers:?}");
    assert!(answers[1].starts_with("127.0.0.8 "), "{answers:?}");
    assert!(answers[2].starts_with("::1 "), "{answers:?}");
    // The port nginx was told is the client's own, not tandem's.
    let port: u16 = answers[0].split(' ').nth(1).unwrap().parse().unwrap();
    assert_ne!(port, n4);
    assert!(!nginx.logs().contains("broken header"), "{}", nginx.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_takes_the_client_from_haproxy_v1_and_v2_and_passes_it_on() {
    let (n4, n6) = (free_port(), free_port());
    let Some(_nginx) = nginx_reporting_the_proxied_client(n4, n6) else {
        return;
    };
    let (listen, admin) = (free_addr(), free_addr());
    let yaml = format!(
        "admin: {{ listen: \"{admin}\" }}\nservices:\n  - name: s\n    listen: {listen}\n    proxy_protocol: {{ accept: true, trusted: [127.0.0.1/32], send: v1 }}\n    backends: [{{ address: \"127.0.0.1:{n4}\" }}]\n"
    );
    let mut tandem = Tandem::spawn(bin(), &yaml);
    tandem.wait_listening(listen);
    let (h1, h2) = (free_addr(), free_addr());
    let Some(_haproxy) = Peer::haproxy(
        &format!(
            "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\nfrontend f1\n  bind {h1}\n  default_backend b1\nbackend b1\n  server t {listen} send-proxy\nfrontend f2\n  bind {h2}\n  default_backend b2\nbackend b2\n  server t {listen} send-proxy-v2\n"
        ),
        h1,
    ) else {
        return;
    };
    let via_v1 = get_from("127.0.0.11", h1).await.unwrap();
    let via_v2 = get_from("127.0.0.12", h2).await.unwrap();
    assert!(
        via_v1.starts_with("127.0.0.11 "),
        "{via_v1}\n{}",
        tandem.logs()
    );
    assert!(
        via_v2.starts_with("127.0.0.12 "),
        "{via_v2}\n{}",
        tandem.logs()
    );
    assert_eq!(rejected(admin, "proxy_missing").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accepted_headers_split_late_malformed_or_untrusted() {
    let echo = EchoServer::start().await;
    let (listen, admin) = (free_addr(), free_addr());
    let yaml = format!(
        "admin: {{ listen: \"{admin}\" }}\nservices:\n  - name: s\n    listen: {listen}\n    proxy_protocol: {{ accept: true, trusted: [127.0.0.1/32, 127.0.0.2/32], timeout: 400ms }}\n    backends: [{{ address: \"{}\" }}]\n",
        echo.addr()
    );
    let mut tandem = Tandem::spawn(bin(), &yaml);
    tandem.wait_listening(listen);

    // Split over several segments, with the client's data right after it:
    // the header is taken off, the data reaches the backend.
    let mut s = connect_from("127.0.0.2", listen).await.unwrap();
    let header = b"PROXY TCP4 198.18.0.9 198.18.0.100 4000 443\r\n";
    for chunk in header.chunks(7) {
        s.write_all(chunk).await.unwrap();
        s.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.write_all(b"after the header").await.unwrap();
    let mut buf = [0u8; 16];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"after the header");
    // The header and data in one segment, v2 this time.
    let mut v2 = Vec::new();
    tandem_proxy_protocol::encode(
        tandem_proxy_protocol::Version::V2,
        &tandem_proxy_protocol::Header::tcp(
            "198.18.0.9:4001".parse().unwrap(),
            "198.18.0.100:443".parse().unwrap(),
        ),
        &mut v2,
    );
    v2.extend_from_slice(b"same segment");
    let mut s = connect_from("127.0.0.1", listen).await.unwrap();
    s.write_all(&v2).await.unwrap();
    let mut buf = [0u8; 12];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"same segment");

    // Late: half a header, then nothing until the timeout has passed.
    let mut late = connect_from("127.0.0.1", listen).await.unwrap();
    late.write_all(&header[..10]).await.unwrap();
    let t0 = Instant::now();
    assert!(closed_without_answer(late, b"").await);
    let waited = t0.elapsed();
    assert!(waited >= Duration::from_millis(350), "{waited:?}");
    assert!(waited < Duration::from_secs(3), "{waited:?}");
    // Missing, malformed, and from an address not trusted.
    let s = connect_from("127.0.0.1", listen).await.unwrap();
    assert!(closed_without_answer(s, b"GET / HTTP/1.0\r\n\r\n").await);
    let s = connect_from("127.0.0.1", listen).await.unwrap();
    assert!(closed_without_answer(s, b"PROXY TCP4 198.18.0.9 nowhere 1 2\r\nhello").await);
    let s = connect_from("127.0.0.3", listen).await.unwrap();
    assert!(closed_without_answer(s, header).await);

    for (reason, want) in [
        ("proxy_timeout", 1.0),
        ("proxy_missing", 1.0),
        ("proxy_malformed", 1.0),
        ("proxy_untrusted", 1.0),
    ] {
        assert_eq!(
            rejected(admin, reason).await,
            want,
            "{reason}\n{}",
            tandem.logs()
        );
    }
    assert!(
        tandem.logs().contains(
            "connection refused: connection from an address not in proxy_protocol.trusted"
        ),
        "{}",
        tandem.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_deny_and_limits_per_source_then_a_reload_that_keeps_connections() {
    let echo = EchoServer::start().await;
    let (listen, admin) = (free_addr(), free_addr());
    let service = |rules: &str| {
        format!(
            "admin: {{ listen: \"{admin}\" }}\nservices:\n  - name: s\n    listen: {listen}\n{rules}    backends: [{{ address: \"{}\" }}]\n",
            echo.addr()
        )
    };
    let rules = "    allow: [127.0.0.0/24]\n    deny: [127.0.0.66]\n    limits: { connections_per_source: 2, new_connections_per_source: 4/m }\n";
    let mut tandem = Tandem::spawn(bin(), &service(rules));
    tandem.wait_listening(listen);

    async fn echoes(s: &mut TcpStream) -> bool {
        let mut buf = [0u8; 4];
        s.write_all(b"ping").await.is_ok()
            && matches!(
                tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await,
                Ok(Ok(_))
            )
    }

    // allow / deny.
    assert!(closed_without_answer(connect_from("127.0.0.66", listen).await.unwrap(), b"x").await);
    assert!(closed_without_answer(connect_from("127.0.1.5", listen).await.unwrap(), b"x").await);
    // Three sources, two connections each: all served, and held open.
    let mut held = Vec::new();
    for source in ["127.0.0.21", "127.0.0.22", "127.0.0.23"] {
        for _ in 0..2 {
            let mut s = connect_from(source, listen).await.unwrap();
            assert!(echoes(&mut s).await, "{source}");
            held.push(s);
        }
    }
    // The third from one source is closed at once; the others are unaffected.
    assert!(closed_without_answer(connect_from("127.0.0.21", listen).await.unwrap(), b"x").await);
    for s in &mut held {
        assert!(echoes(s).await);
    }
    // A slot given back is usable again, within the rate: 4 admitted per
    // minute (a refused one takes no token), so after 2 held and 2 more the
    // next one is over the rate.
    held.remove(0);
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut again = connect_from("127.0.0.21", listen).await.unwrap();
        assert!(echoes(&mut again).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(closed_without_answer(connect_from("127.0.0.21", listen).await.unwrap(), b"x").await);
    let mut fresh = connect_from("127.0.0.24", listen).await.unwrap();
    assert!(echoes(&mut fresh).await, "a new source has its own bucket");
    assert_eq!(rejected(admin, "denied").await, 2.0);
    assert_eq!(rejected(admin, "source_connections").await, 1.0);
    assert_eq!(rejected(admin, "source_rate").await, 1.0);

    // Reload: .22 is now denied. Its open connections keep flowing; its new ones are refused.
    std::fs::write(tandem.config_path(), service("    deny: [127.0.0.22]\n")).unwrap();
    let (code, body) = http(admin, "POST", "/reload", &[]).await;
    assert_eq!(code, 200, "{body}");
    for s in &mut held {
        assert!(echoes(s).await, "open connections survive the reload");
    }
    assert!(closed_without_answer(connect_from("127.0.0.22", listen).await.unwrap(), b"x").await);
    let mut s = connect_from("127.0.0.21", listen).await.unwrap();
    assert!(echoes(&mut s).await, "limits are gone with the reload");
    assert_eq!(rejected(admin, "denied").await, 3.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_sessions_carry_a_v2_header_and_obey_allow() {
    let backend = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend.local_addr().unwrap();
    let (listen, admin) = (free_addr(), free_addr());
    let yaml = format!(
        "admin: {{ listen: \"{admin}\" }}\nservices:\n  - name: s\n    protocol: udp\n    listen: {listen}\n    deny: [127.0.0.66]\n    proxy_protocol: {{ send: v2 }}\n    backends: [{{ address: \"{backend_addr}\" }}]\n"
    );
    let mut tandem = Tandem::spawn(bin(), &yaml);
    tandem.wait_listening(listen);
    let client = tokio::net::UdpSocket::bind("127.0.0.31:0").await.unwrap();
    let denied = tokio::net::UdpSocket::bind("127.0.0.66:0").await.unwrap();
    denied.send_to(b"let me in", listen).await.unwrap();
    client.send_to(b"query", listen).await.unwrap();
    let mut buf = [0u8; 512];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), backend.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let got = &buf[..n];
    let tandem_proxy_protocol::Decoded::Complete { header, length } =
        tandem_proxy_protocol::decode(got).unwrap()
    else {
        panic!("no whole header in {got:?}")
    };
    assert_eq!(&got[..12], &tandem_proxy_protocol::V2_SIGNATURE);
    assert_eq!(header.transport, tandem_proxy_protocol::Transport::Datagram);
    assert_eq!(header.source(), Some(client.local_addr().unwrap()));
    assert_eq!(&got[length..], b"query");
    backend.send_to(b"answer", from).await.unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"answer", "replies come back without a header");
    // The denied client never reached the backend.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), backend.recv_from(&mut buf))
            .await
            .is_err()
    );
    let (_, metrics) = http(admin, "GET", "/metrics", &[]).await;
    assert_eq!(
        sample(
            &metrics,
            r#"tandem_udp_dropped_total{service="s",reason="denied"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
}

/// A backend in `host` on `addr` that reads tandem's PROXY v1 line, answers
/// with the client address in it, and holds the connection until the client
/// closes. Stops accepting after `for_how_long`.
fn proxy_echo_in(host: &test_support::netns::Host, addr: SocketAddr, for_how_long: Duration) {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    host.spawn(move || {
        let listener = std::net::TcpListener::bind(addr).expect("bind the backend");
        // accept(2) honours SO_RCVTIMEO: the loop below ends at its deadline.
        socket2::SockRef::from(&listener)
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        ready_tx.send(()).unwrap();
        let deadline = std::time::Instant::now() + for_how_long;
        while std::time::Instant::now() < deadline {
            let Ok((mut s, _)) = listener.accept() else {
                continue;
            };
            std::thread::spawn(move || {
                use std::io::{BufRead, Write};
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let mut reader = std::io::BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                // PROXY TCP4 <source> <destination> <sport> <dport>
                let source = line.split(' ').nth(2).unwrap_or("?").to_owned();
                let _ = s.write_all(format!("{source}\n").as_bytes());
                let mut sink = [0u8; 64];
                while matches!(std::io::Read::read(&mut reader, &mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("backend starts");
}

/// From `host`: connects to `to` and returns the first line it gets, or
/// `None` when the connection is closed (or reset) without one. The stream
/// is returned too, to hold the connection open.
fn first_line_from(
    host: &test_support::netns::Host,
    to: SocketAddr,
) -> (Option<String>, Option<std::net::TcpStream>) {
    host.spawn(move || {
        use std::io::BufRead;
        let Ok(s) = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(3)) else {
            return (None, None);
        };
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut line = String::new();
        match std::io::BufReader::new(s.try_clone().unwrap()).read_line(&mut line) {
            Ok(n) if n > 0 => (Some(line.trim().to_owned()), Some(s)),
            _ => (None, None),
        }
    })
    .join()
    .unwrap()
}

/// The same rules with clients that are really different hosts: three client
/// namespaces and a denied one, tandem and the backend on a fourth.
#[test]
fn clients_in_namespaces_are_told_apart_by_address() {
    let Some(mut lab) = test_support::netns::Lab::new("admission_by_address") else {
        return;
    };
    let node = lab.host(&["198.18.0.1/24"]);
    let clients: Vec<_> = (2..=5)
        .map(|i| lab.host(&[&format!("198.18.0.{i}/24")]))
        .collect();
    let backend: SocketAddr = "198.18.0.1:9000".parse().unwrap();
    let listen: SocketAddr = "198.18.0.1:8080".parse().unwrap();
    proxy_echo_in(&node, backend, Duration::from_secs(60));
    let yaml = format!(
        "admin:\n  listen: 127.0.0.1:9901\nservices:\n  - name: api\n    listen: {listen}\n    allow: [198.18.0.0/24]\n    deny: [198.18.0.5/32]\n    limits: {{ connections_per_source: 2 }}\n    proxy_protocol: {{ send: v1 }}\n    backends: [{{ address: \"{backend}\" }}]\n"
    );
    let mut tandem = Tandem::spawn_in_netns(node.ns(), common::bin(), &yaml);
    tandem.wait_listening(listen);

    // Each client is seen as itself, through tandem's PROXY header.
    let (a1, held_a1) = first_line_from(&clients[0], listen);
    let (a2, held_a2) = first_line_from(&clients[0], listen);
    let (b, _held_b) = first_line_from(&clients[1], listen);
    let (c, _held_c) = first_line_from(&clients[2], listen);
    assert_eq!(a1.as_deref(), Some("198.18.0.2"), "{}", tandem.logs());
    assert_eq!(a2.as_deref(), Some("198.18.0.2"));
    assert_eq!(b.as_deref(), Some("198.18.0.3"));
    assert_eq!(c.as_deref(), Some("198.18.0.4"));
    // The first client's third connection is over its limit; the others are not affected.
    let (a3, _) = first_line_from(&clients[0], listen);
    assert_eq!(a3, None, "a third connection from 198.18.0.2 got through");
    let (b2, _held_b2) = first_line_from(&clients[1], listen);
    assert_eq!(b2.as_deref(), Some("198.18.0.3"));
    // The denied host never reaches the backend.
    let (d, _) = first_line_from(&clients[3], listen);
    assert_eq!(d, None, "198.18.0.5 is denied");
    let metrics = node.sh(&["curl", "-s", "http://127.0.0.1:9901/metrics"]);
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    let rejected = |reason: &str| {
        common::sample(
            &metrics,
            &format!("tandem_connections_rejected_total{{service=\"api\",reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(rejected("denied"), Some(1.0), "{metrics}");
    assert_eq!(rejected("source_connections"), Some(1.0), "{metrics}");

    // A closed connection frees the source's slot (once tandem has seen the close).
    drop((held_a1, held_a2));
    let freed = test_support::netns::wait_for(Duration::from_secs(5), || {
        first_line_from(&clients[0], listen).0.as_deref() == Some("198.18.0.2")
    });
    assert!(freed.is_some(), "{}", tandem.logs());
}
