//! End-to-end: the real binary forwarding TCP between real sockets on 127.0.0.1.

mod common;

use std::time::{Duration, Instant};

use common::{bin, one_service, read_to_end, send_and_hash_reply};
use test_support::{
    free_addr, pattern, sha256_hex, Blackhole, DrainThenReply, EchoServer, HoldServer, NamedServer,
    Tandem,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MIB: usize = 1024 * 1024;

async fn echo_roundtrip(forwarding: &str, sizes: &[usize]) {
    let echo = EchoServer::start().await;
    let listen = free_addr();
    let mut tandem = Tandem::spawn(
        bin(),
        &one_service(listen, &[echo.addr()], &format!("forwarding: {forwarding}")),
    );
    tandem.wait_listening(listen);
    for (i, &size) in sizes.iter().enumerate() {
        let data = pattern(size, i as u64 + 7);
        let expected = sha256_hex(&data);
        let stream = TcpStream::connect(listen).await.unwrap();
        let (n, hash) = send_and_hash_reply(stream, &data).await;
        assert_eq!(n, size, "{forwarding}: bytes back for {size}");
        assert_eq!(hash, expected, "{forwarding}: sha256 for {size}");
    }
    let logs = tandem.logs();
    assert!(logs.contains("listening"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_round_trip_with_equal_sha256_splice() {
    echo_roundtrip("splice", &[1, MIB, 256 * MIB]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_round_trip_with_equal_sha256_copy() {
    echo_roundtrip("copy", &[1, MIB, 256 * MIB]).await;
}

async fn half_close(forwarding: &str) {
    let backend = DrainThenReply::start().await;
    let listen = free_addr();
    let mut tandem = Tandem::spawn(
        bin(),
        &one_service(
            listen,
            &[backend.addr()],
            &format!("forwarding: {forwarding}"),
        ),
    );
    tandem.wait_listening(listen);
    let data = pattern(3 * MIB + 17, 99);
    let mut stream = TcpStream::connect(listen).await.unwrap();
    stream.write_all(&data).await.unwrap();
    stream.shutdown().await.unwrap();
    let reply = read_to_end(&mut stream, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(reply).unwrap(),
        format!("{} {}\n", data.len(), sha256_hex(&data)),
        "{forwarding}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_passes_eof_and_keeps_reply_splice() {
    half_close("splice").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_passes_eof_and_keeps_reply_copy() {
    half_close("copy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_backend_falls_through_to_the_next() {
    let dead = free_addr();
    let alive = NamedServer::start("alive").await;
    let listen = free_addr();
    let mut tandem = Tandem::spawn(bin(), &one_service(listen, &[dead, alive.addr()], ""));
    tandem.wait_listening(listen);
    for _ in 0..4 {
        let mut s = TcpStream::connect(listen).await.unwrap();
        let got = read_to_end(&mut s, Duration::from_secs(5)).await.unwrap();
        assert_eq!(got, b"alive\n");
    }
    assert!(
        tandem.wait_log("backend connect failed"),
        "{}",
        tandem.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_backends_refusing_closes_the_client_promptly() {
    let listen = free_addr();
    let mut tandem = Tandem::spawn(bin(), &one_service(listen, &[free_addr(), free_addr()], ""));
    tandem.wait_listening(listen);
    let started = Instant::now();
    let mut s = TcpStream::connect(listen).await.unwrap();
    let got = read_to_end(&mut s, Duration::from_secs(5)).await.unwrap();
    assert!(got.is_empty());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(
        tandem.wait_log("every backend tried failed"),
        "{}",
        tandem.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_moves_on_from_a_silent_backend() {
    let hole = Blackhole::start().unwrap();
    let alive = NamedServer::start("alive").await;
    let listen = free_addr();
    let mut tandem = Tandem::spawn(
        bin(),
        &one_service(
            listen,
            &[hole.addr(), alive.addr()],
            "connect_timeout: 300ms",
        ),
    );
    tandem.wait_listening(listen);
    // Round robin starts at the blackhole for the first connection.
    for _ in 0..2 {
        let started = Instant::now();
        let mut s = TcpStream::connect(listen).await.unwrap();
        let got = read_to_end(&mut s, Duration::from_secs(5)).await.unwrap();
        assert_eq!(got, b"alive\n");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    assert!(
        tandem.wait_log("connect timed out after 300ms"),
        "{}",
        tandem.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_concurrent_connections_keep_every_byte() {
    let echoes = [
        EchoServer::start().await,
        EchoServer::start().await,
        EchoServer::start().await,
    ];
    let listen = free_addr();
    let addrs: Vec<_> = echoes.iter().map(|e| e.addr()).collect();
    let mut tandem = Tandem::spawn(bin(), &one_service(listen, &addrs, ""));
    tandem.wait_listening(listen);

    let mut clients = Vec::new();
    // Open all 1,000 first so they are concurrent, then transfer.
    for _ in 0..1000 {
        clients.push(TcpStream::connect(listen).await.unwrap());
    }
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            tokio::spawn(async move {
                let data = pattern(32 * 1024 + i, i as u64);
                let (n, hash) = send_and_hash_reply(s, &data).await;
                (n == data.len() && hash == sha256_hex(&data), i)
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let (good, i) = tokio::time::timeout(Duration::from_secs(60), t)
            .await
            .expect("transfers finish")
            .unwrap();
        assert!(good, "connection {i} corrupted");
        ok += 1;
    }
    assert_eq!(ok, 1000);
    let accepted: usize = echoes.iter().map(|e| e.accepted()).sum();
    assert_eq!(accepted, 1000);
    for e in &echoes {
        assert!(e.accepted() >= 300, "round robin spreads: {}", e.accepted());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_silent_connections_only() {
    let echo = EchoServer::start().await;
    let listen = free_addr();
    let mut tandem = Tandem::spawn(
        bin(),
        &one_service(listen, &[echo.addr()], "idle_timeout: 600ms"),
    );
    tandem.wait_listening(listen);

    let mut busy = TcpStream::connect(listen).await.unwrap();
    let mut silent = TcpStream::connect(listen).await.unwrap();
    let started = Instant::now();
    // The busy one talks every 200 ms for 1.4 s: longer than the idle timeout.
    for _ in 0..7 {
        busy.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        busy.read_exact(&mut buf).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got = read_to_end(&mut silent, Duration::from_secs(3))
        .await
        .unwrap();
    assert!(got.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(600));
    busy.write_all(b"pong").await.unwrap();
    let mut buf = [0u8; 4];
    busy.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong");
    assert!(tandem.wait_log("idle_timeout"), "{}", tandem.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_closes_excess_at_once_and_keeps_accepting() {
    let hold = HoldServer::start().await;
    let listen = free_addr();
    let mut tandem = Tandem::spawn(
        bin(),
        &one_service(listen, &[hold.addr()], "max_connections: 2"),
    );
    tandem.wait_listening(listen);

    let first = TcpStream::connect(listen).await.unwrap();
    let _second = TcpStream::connect(listen).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while hold.accepted() < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut third = TcpStream::connect(listen).await.unwrap();
    let started = Instant::now();
    let got = read_to_end(&mut third, Duration::from_secs(3)).await;
    assert!(matches!(got, Ok(ref v) if v.is_empty()), "{got:?}");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert!(
        tandem.wait_log("max_connections reached"),
        "{}",
        tandem.logs()
    );

    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = hold.accepted();
    let _fourth = TcpStream::connect(listen).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while hold.accepted() == before && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(hold.accepted(), before + 1, "a freed slot is usable again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_reset_is_passed_on_as_a_reset() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut b = [0u8; 1];
            let _ = s.read_exact(&mut b).await;
            socket2::SockRef::from(&s)
                .set_linger(Some(Duration::ZERO))
                .unwrap();
            drop(s);
        }
    });
    let listen = free_addr();
    let mut tandem = Tandem::spawn(bin(), &one_service(listen, &[backend], ""));
    tandem.wait_listening(listen);
    let mut s = TcpStream::connect(listen).await.unwrap();
    s.write_all(b"x").await.unwrap();
    let err = read_to_end(&mut s, Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reset_is_passed_on_to_the_backend() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        // Skip connections that send nothing (the readiness probe); report the
        // second read of the one that sent a byte.
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 16];
                if matches!(s.read(&mut buf).await, Ok(n) if n > 0) {
                    let r = s.read(&mut buf).await;
                    let _ = tx.send(r.map_err(|e| e.kind())).await;
                }
            });
        }
    });
    let listen = free_addr();
    let mut tandem = Tandem::spawn(bin(), &one_service(listen, &[backend], ""));
    tandem.wait_listening(listen);
    let mut s = TcpStream::connect(listen).await.unwrap();
    s.write_all(b"x").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(s);
    let seen = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen, Err(std::io::ErrorKind::ConnectionReset));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_transfer_in_progress_complete() {
    let echo = EchoServer::start().await;
    let listen = free_addr();
    let mut tandem = Tandem::spawn(
        bin(),
        &one_service(listen, &[echo.addr()], "drain_timeout: 20s"),
    );
    tandem.wait_listening(listen);

    let data = pattern(8 * MIB, 5);
    let stream = TcpStream::connect(listen).await.unwrap();
    let (mut r, mut w) = stream.into_split();
    w.write_all(&data[..MIB]).await.unwrap();
    let mut first = vec![0u8; MIB];
    r.read_exact(&mut first).await.unwrap();

    tandem.signal("TERM");
    assert!(tandem.wait_log("shutting down"), "{}", tandem.logs());
    // New connections are refused once the listener is closed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(listen).await.is_ok() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(TcpStream::connect(listen).await.is_err(), "listener closed");

    // The open connection still carries the rest, both ways.
    let writer = async {
        w.write_all(&data[MIB..]).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let reader = async {
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).await.unwrap();
        rest
    };
    let ((), rest) = tokio::join!(writer, reader);
    first.extend_from_slice(&rest);
    assert_eq!(sha256_hex(&first), sha256_hex(&data));

    let status = tandem
        .wait_exit(Duration::from_secs(10))
        .expect("exits after the drain");
    assert!(status.success(), "{status}: {}", tandem.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_cuts_what_is_left_and_exits_zero() {
    let hold = HoldServer::start().await;
    let listen = free_addr();
    let mut tandem = Tandem::spawn(
        bin(),
        &one_service(listen, &[hold.addr()], "drain_timeout: 500ms"),
    );
    tandem.wait_listening(listen);
    let mut held = TcpStream::connect(listen).await.unwrap();
    held.write_all(b"x").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    tandem.signal("TERM");
    let status = tandem.wait_exit(Duration::from_secs(10)).expect("exits");
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let got = read_to_end(&mut held, Duration::from_secs(2)).await;
    assert!(got.is_ok_and(|v| v.is_empty()));
    assert!(
        tandem.logs().contains("cut_connections=1"),
        "{}",
        tandem.logs()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_signal_exits_at_once() {
    let hold = HoldServer::start().await;
    let listen = free_addr();
    let mut tandem = Tandem::spawn(
        bin(),
        &one_service(listen, &[hold.addr()], "drain_timeout: 60s"),
    );
    tandem.wait_listening(listen);
    let mut held = TcpStream::connect(listen).await.unwrap();
    held.write_all(b"x").await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    tandem.signal("TERM");
    assert!(tandem.wait_log("draining"), "{}", tandem.logs());
    tandem.signal("INT");
    let status = tandem
        .wait_exit(Duration::from_secs(3))
        .expect("exits at once");
    assert!(!status.success());
    assert!(tandem.logs().contains("second signal"), "{}", tandem.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_does_not_kill_the_daemon() {
    let alive = NamedServer::start("alive").await;
    let listen = free_addr();
    let mut tandem = Tandem::spawn(bin(), &one_service(listen, &[alive.addr()], ""));
    tandem.wait_listening(listen);
    tandem.signal("HUP");
    assert!(tandem.wait_log("SIGHUP received"), "{}", tandem.logs());
    let mut s = TcpStream::connect(listen).await.unwrap();
    assert_eq!(
        read_to_end(&mut s, Duration::from_secs(5)).await.unwrap(),
        b"alive\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_pauses_accepting_and_recovers() {
    if std::process::Command::new("prlimit")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: prlimit (util-linux) is missing");
        return;
    }
    let alive = NamedServer::start_holding("alive").await;
    let listen = free_addr();
    // tandem under a hard limit of 64 descriptors: ~20 connections exhaust it.
    let yaml = one_service(listen, &[alive.addr()], "");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tandem.yaml");
    std::fs::write(&config, yaml).unwrap();
    let log = dir.path().join("log");
    let mut child = std::process::Command::new("prlimit")
        .args(["--nofile=64:64", "--"])
        .arg(bin())
        .args(["--log-level", "debug", "run", "-c"])
        .arg(&config)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let logs = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !logs().contains("tandem started") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut held = Vec::new();
    for _ in 0..60 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(listen)).await
        {
            held.push(s);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !logs().contains("accept failed, pausing 100ms") && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        logs().contains("accept failed, pausing 100ms"),
        "{}",
        logs()
    );
    // One line per pause, not a spin: at most ~10 per second.
    let pauses = logs().matches("accept failed").count();
    drop(held);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut s = TcpStream::connect(listen).await.unwrap();
    let mut line = [0u8; 6];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut line))
        .await
        .expect("served again after descriptors came back")
        .unwrap();
    assert_eq!(&line, b"alive\n");
    assert!(pauses < 200, "{pauses} accept failures logged: spinning?");
    let _ = child.kill();
    let _ = child.wait();
}
