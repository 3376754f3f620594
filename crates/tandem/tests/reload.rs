//! End-to-end: reload (POST /reload and SIGHUP) applies the difference without
//! losing a connection, and an invalid file changes nothing.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{bin, echo_ok, http, read_to_end, sample};
use test_support::{free_addr, pattern, EchoServer, HoldServer, NamedServer, Tandem};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A service: name, listen address, and (backend, weight) pairs.
type ServiceSpec<'a> = (&'a str, SocketAddr, &'a [(SocketAddr, u32)]);

fn yaml(admin: SocketAddr, services: &[ServiceSpec<'_>], extra: &str) -> String {
    let mut y = format!("admin:\n  listen: {admin}\nservices:\n");
    for (name, listen, backends) in services {
        y.push_str(&format!(
            "  - name: {name}\n    listen: {listen}\n{extra}    backends:\n"
        ));
        for (addr, weight) in *backends {
            y.push_str(&format!(
                "      - {{ address: \"{addr}\", weight: {weight} }}\n"
            ));
        }
    }
    y
}

async fn reload(admin: SocketAddr) -> (u16, String) {
    http(admin, "POST", "/reload", &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_reloads_under_load_lose_nothing() {
    let e = [
        EchoServer::start().await,
        EchoServer::start().await,
        EchoServer::start().await,
    ];
    let (admin, listen) = (free_addr(), free_addr());
    let a = yaml(
        admin,
        &[("web", listen, &[(e[0].addr(), 1), (e[1].addr(), 2)])],
        "",
    );
    let b = yaml(
        admin,
        &[("web", listen, &[(e[1].addr(), 3), (e[2].addr(), 1)])],
        "    scheduler: least_connections\n",
    );
    let mut tandem = Tandem::spawn(bin(), &a);
    tandem.wait_listening(listen);

    // A long-lived connection open across every reload.
    let mut long = TcpStream::connect(listen).await.unwrap();
    long.write_all(b"hello").await.unwrap();
    let mut buf = [0u8; 5];
    long.read_exact(&mut buf).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for c in 0..8u64 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let data = pattern(16 * 1024, c);
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(SeqCst) && Instant::now() < deadline {
                if echo_ok(listen, &data).await {
                    ok.fetch_add(1, SeqCst);
                } else {
                    failed.fetch_add(1, SeqCst);
                }
            }
        }));
    }
    for i in 0..100 {
        std::fs::write(tandem.config_path(), if i % 2 == 0 { &b } else { &a }).unwrap();
        let (code, body) = reload(admin).await;
        assert_eq!(code, 200, "reload {i}: {body}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(failed.load(SeqCst), 0, "failed or corrupted transfers");
    assert!(ok.load(SeqCst) > 100, "load ran: {}", ok.load(SeqCst));
    long.write_all(b"still").await.unwrap();
    long.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still");
    let (_, metrics) = http(admin, "GET", "/metrics", &[]).await;
    assert_eq!(
        sample(&metrics, r#"tandem_config_reloads_total{result="success"}"#),
        Some(100.0)
    );
    // Backend e1 (in both files) kept its counters across all reloads.
    let label = format!(
        r#"tandem_connections_total{{service="web",backend="{}"}}"#,
        e[1].addr()
    );
    assert_eq!(sample(&metrics, &label), Some(e[1].accepted() as f64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_file_changes_nothing_and_the_next_valid_one_applies() {
    let (n1, n2) = (
        NamedServer::start("one").await,
        NamedServer::start("two").await,
    );
    let (admin, listen) = (free_addr(), free_addr());
    let mut tandem = Tandem::spawn(
        bin(),
        &yaml(admin, &[("web", listen, &[(n1.addr(), 1)])], ""),
    );
    tandem.wait_listening(listen);

    std::fs::write(
        tandem.config_path(),
        format!("admin:\n  listen: {admin}\nservices:\n  - name: web\n    listen: {listen}\n    backends:\n      - address: \"{}\"\n        weight: 0\n", n2.addr()),
    )
    .unwrap();
    let (code, body) = reload(admin).await;
    assert_eq!(code, 422);
    assert!(
        body.contains("tandem.yaml:8:17: services[web].backends[0].weight"),
        "{body}"
    );
    for _ in 0..3 {
        let mut s = TcpStream::connect(listen).await.unwrap();
        assert_eq!(
            read_to_end(&mut s, Duration::from_secs(5)).await.unwrap(),
            b"one\n"
        );
    }
    assert_eq!(http(admin, "GET", "/readyz", &[]).await.0, 200);
    let (_, status) = http(admin, "GET", "/status", &[]).await;
    assert!(
        status.contains(r#""last_error":"#) && status.contains("must be between 1 and 256"),
        "{status}"
    );
    let (_, metrics) = http(admin, "GET", "/metrics", &[]).await;
    assert_eq!(
        sample(&metrics, r#"tandem_config_reloads_total{result="failure"}"#),
        Some(1.0)
    );
    assert!(tandem
        .logs()
        .contains("reload failed, still running the previous configuration"));

    // SIGHUP with a valid file: now only "two" answers.
    std::fs::write(
        tandem.config_path(),
        yaml(admin, &[("web", listen, &[(n2.addr(), 1)])], ""),
    )
    .unwrap();
    tandem.signal("HUP");
    assert!(tandem.wait_log("reload: updated web"), "{}", tandem.logs());
    let mut s = TcpStream::connect(listen).await.unwrap();
    assert_eq!(
        read_to_end(&mut s, Duration::from_secs(5)).await.unwrap(),
        b"two\n"
    );
    let (_, status) = http(admin, "GET", "/status", &[]).await;
    assert!(status.contains(r#""last_error":null"#), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_service_drains_its_open_connection_then_closes_it() {
    let hold = HoldServer::start().await;
    let echo = EchoServer::start().await;
    let (admin, gone, stays) = (free_addr(), free_addr(), free_addr());
    let both = yaml(
        admin,
        &[
            ("gone", gone, &[(echo.addr(), 1)]),
            ("stays", stays, &[(hold.addr(), 1)]),
        ],
        "    drain_timeout: 1500ms\n",
    );
    let mut tandem = Tandem::spawn(bin(), &both);
    tandem.wait_listening(gone);
    let mut open = TcpStream::connect(gone).await.unwrap();
    open.write_all(b"ab").await.unwrap();
    let mut buf = [0u8; 2];
    open.read_exact(&mut buf).await.unwrap();

    std::fs::write(
        tandem.config_path(),
        yaml(
            admin,
            &[("stays", stays, &[(hold.addr(), 1)])],
            "    drain_timeout: 1500ms\n",
        ),
    )
    .unwrap();
    let started = Instant::now();
    let (code, body) = reload(admin).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("removed gone"), "{body}");
    assert!(
        TcpStream::connect(gone).await.is_err(),
        "the removed service stops accepting"
    );
    // Still flowing during the drain...
    open.write_all(b"cd").await.unwrap();
    open.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"cd");
    // ...and closed once drain_timeout has passed.
    let rest = read_to_end(&mut open, Duration::from_secs(5))
        .await
        .unwrap();
    assert!(rest.is_empty());
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(1400), "{waited:?}");
    assert!(waited < Duration::from_secs(4), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_listen_address_moves_the_listener_and_keeps_open_connections() {
    let echo = EchoServer::start().await;
    let (admin, old, new) = (free_addr(), free_addr(), free_addr());
    let mut tandem = Tandem::spawn(
        bin(),
        &yaml(admin, &[("web", old, &[(echo.addr(), 1)])], ""),
    );
    tandem.wait_listening(old);
    let mut open = TcpStream::connect(old).await.unwrap();
    open.write_all(b"12").await.unwrap();
    let mut buf = [0u8; 2];
    open.read_exact(&mut buf).await.unwrap();

    std::fs::write(
        tandem.config_path(),
        yaml(admin, &[("web", new, &[(echo.addr(), 1)])], ""),
    )
    .unwrap();
    let (code, body) = reload(admin).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains(&format!("moved web ({old} -> {new})")),
        "{body}"
    );
    assert!(
        echo_ok(new, &pattern(5000, 3)).await,
        "the new address accepts"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        TcpStream::connect(old).await.is_err(),
        "the old address stopped"
    );
    open.write_all(b"34").await.unwrap();
    open.read_exact(&mut buf).await.unwrap();
    assert_eq!(
        &buf, b"34",
        "the connection through the old address lives on"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_service_starts_listening() {
    let echo = EchoServer::start().await;
    let (admin, first, second) = (free_addr(), free_addr(), free_addr());
    let mut tandem = Tandem::spawn(
        bin(),
        &yaml(admin, &[("one", first, &[(echo.addr(), 1)])], ""),
    );
    tandem.wait_listening(first);
    std::fs::write(
        tandem.config_path(),
        yaml(
            admin,
            &[
                ("one", first, &[(echo.addr(), 1)]),
                ("two", second, &[(echo.addr(), 1)]),
            ],
            "",
        ),
    )
    .unwrap();
    let (code, body) = reload(admin).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("added two"), "{body}");
    assert!(echo_ok(second, b"new service").await);
    assert!(echo_ok(first, b"old service").await);
}

/// What a named server answers on a new connection to `at`.
async fn name_at(at: SocketAddr) -> Vec<u8> {
    let mut s = TcpStream::connect(at).await.unwrap();
    read_to_end(&mut s, Duration::from_secs(5)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_that_cannot_bind_changes_nothing_and_drops_no_service() {
    let (n1, n2) = (
        NamedServer::start("one").await,
        NamedServer::start("two").await,
    );
    let echo = EchoServer::start().await;
    let (admin, web, api, more) = (free_addr(), free_addr(), free_addr(), free_addr());
    let old = [
        ("web", web, &[(n1.addr(), 1)][..]),
        ("api", api, &[(echo.addr(), 1)][..]),
    ];
    let mut tandem = Tandem::spawn(bin(), &yaml(admin, &old, ""));
    tandem.wait_listening(web);
    tandem.wait_listening(api);
    let mut open = TcpStream::connect(api).await.unwrap();
    open.write_all(b"before").await.unwrap();
    let mut buf = [0u8; 6];
    open.read_exact(&mut buf).await.unwrap();

    // The port the reload wants for `api` is taken by someone else.
    let taken = std::net::TcpListener::bind(free_addr()).unwrap();
    let wanted = taken.local_addr().unwrap();
    let new = [
        ("web", web, &[(n2.addr(), 1)][..]),
        ("api", wanted, &[(echo.addr(), 1)][..]),
        ("more", more, &[(n2.addr(), 1)][..]),
    ];
    std::fs::write(tandem.config_path(), yaml(admin, &new, "")).unwrap();
    let (code, body) = reload(admin).await;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("service api"), "{body}");
    assert!(body.contains("address already in use"), "{body}");

    // Nothing of the new file applies: web keeps its old backend, api its
    // old address, `more` does not exist, and the open connection flows.
    assert_eq!(name_at(web).await, b"one\n");
    assert!(echo_ok(api, b"still at the old address").await);
    assert!(
        TcpStream::connect(more).await.is_err(),
        "more was not added"
    );
    open.write_all(b"after").await.unwrap();
    let mut buf = [0u8; 5];
    open.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"after");
    let (_, metrics) = http(admin, "GET", "/metrics", &[]).await;
    assert_eq!(
        sample(&metrics, r#"tandem_config_reloads_total{result="failure"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, r#"tandem_config_reloads_total{result="success"}"#),
        Some(0.0)
    );
    let (_, status) = http(admin, "GET", "/status", &[]).await;
    assert!(status.contains("address already in use"), "{status}");
    assert!(
        status.contains(r#""name":"web""#) && status.contains(r#""name":"api""#),
        "{status}"
    );

    // Once the port is free, the same file applies whole.
    drop(taken);
    let (code, body) = reload(admin).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("added more"), "{body}");
    assert_eq!(name_at(web).await, b"two\n");
    assert!(echo_ok(wanted, b"at the new address").await);
    assert_eq!(name_at(more).await, b"two\n");
    open.write_all(b"moved").await.unwrap();
    open.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"moved", "a move never cuts open connections");
}
