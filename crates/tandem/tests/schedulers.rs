//! End-to-end: each scheduler through the real binary, with real backends that
//! answer with their name.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::{bin, one_service, read_to_end};
use test_support::{free_addr, NamedServer, Tandem};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

async fn three(holding: bool) -> Vec<NamedServer> {
    let mut v = Vec::new();
    for name in ["a", "b", "c"] {
        v.push(if holding {
            NamedServer::start_holding(name).await
        } else {
            NamedServer::start(name).await
        });
    }
    v
}

fn addrs(servers: &[NamedServer]) -> Vec<SocketAddr> {
    servers.iter().map(|s| s.addr()).collect()
}

/// Connects (from `source` when given) and returns the name of the backend reached.
async fn name_via(listen: SocketAddr, source: Option<SocketAddr>) -> String {
    let stream = match source {
        Some(src) => {
            let socket = TcpSocket::new_v4().unwrap();
            socket.bind(src).unwrap();
            socket.connect(listen).await.unwrap()
        }
        None => TcpStream::connect(listen).await.unwrap(),
    };
    let mut stream = stream;
    let got = read_to_end(&mut stream, Duration::from_secs(5))
        .await
        .unwrap();
    String::from_utf8(got).unwrap().trim().to_owned()
}

/// Opens a connection that stays open and returns it with the backend's name.
async fn held_via(listen: SocketAddr) -> (BufReader<TcpStream>, String) {
    let mut reader = BufReader::new(TcpStream::connect(listen).await.unwrap());
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    (reader, line.trim().to_owned())
}

fn tally(names: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for n in names {
        *m.entry(n.clone()).or_default() += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_gives_each_backend_its_turn() {
    let servers = three(false).await;
    let listen = free_addr();
    let mut tandem = Tandem::spawn(
        bin(),
        &one_service(listen, &addrs(&servers), "scheduler: round_robin"),
    );
    tandem.wait_listening(listen);
    let mut names = Vec::new();
    for _ in 0..30 {
        names.push(name_via(listen, None).await);
    }
    assert_eq!(
        names[..3]
            .iter()
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        3
    );
    assert_eq!(
        tally(&names).values().copied().collect::<Vec<_>>(),
        [10, 10, 10]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_round_robin_follows_the_weights() {
    let a = NamedServer::start("a").await;
    let b = NamedServer::start("b").await;
    let listen = free_addr();
    let yaml = format!(
        "services:\n  - name: w\n    listen: {listen}\n    backends:\n      - {{ address: \"{}\", weight: 3 }}\n      - {{ address: \"{}\", weight: 1 }}\n",
        a.addr(),
        b.addr()
    );
    let mut tandem = Tandem::spawn(bin(), &yaml);
    tandem.wait_listening(listen);
    let mut names = Vec::new();
    for _ in 0..40 {
        names.push(name_via(listen, None).await);
    }
    let t = tally(&names);
    assert_eq!((t["a"], t["b"]), (30, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_connections_avoids_the_backend_holding_connections() {
    let servers = three(true).await;
    let listen = free_addr();
    let mut tandem = Tandem::spawn(
        bin(),
        &one_service(listen, &addrs(&servers), "scheduler: least_connections"),
    );
    tandem.wait_listening(listen);

    // Six held connections spread two per backend.
    let mut held = Vec::new();
    for _ in 0..6 {
        held.push(held_via(listen).await);
    }
    let t = tally(&held.iter().map(|(_, n)| n.clone()).collect::<Vec<_>>());
    assert_eq!(t.values().copied().collect::<Vec<_>>(), [2, 2, 2], "{t:?}");
    // Keep only backend a's two open.
    held.retain(|(_, n)| n == "a");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // New connections, one at a time, all go to b and c.
    let mut names = Vec::new();
    for _ in 0..10 {
        let (conn, name) = held_via(listen).await;
        drop(conn);
        names.push(name);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = tally(&names);
    assert!(!t.contains_key("a"), "{t:?}");
    assert!(
        t.get("b").is_some_and(|&n| n >= 3) && t.get("c").is_some_and(|&n| n >= 3),
        "{t:?}"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_hash_keeps_each_client_address_on_one_backend() {
    let servers = three(false).await;
    let listen = free_addr();
    let mut tandem = Tandem::spawn(
        bin(),
        &one_service(listen, &addrs(&servers), "scheduler: source_hash"),
    );
    tandem.wait_listening(listen);
    // Clients from 20 loopback addresses, 127.0.0.10 .. 127.0.0.29, five connections each.
    let mut seen = std::collections::BTreeSet::new();
    for host in 10..30u8 {
        let mut names = Vec::new();
        for _ in 0..5 {
            let src = SocketAddr::from(([127, 0, 0, host], 0));
            names.push(name_via(listen, Some(src)).await);
        }
        assert!(
            names.iter().all(|n| n == &names[0]),
            "127.0.0.{host}: {names:?}"
        );
        seen.insert(names[0].clone());
    }
    assert_eq!(
        seen.len(),
        3,
        "20 addresses spread over all three: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_two_choices_uses_every_backend() {
    let servers = three(false).await;
    let listen = free_addr();
    let mut tandem = Tandem::spawn(
        bin(),
        &one_service(listen, &addrs(&servers), "scheduler: random"),
    );
    tandem.wait_listening(listen);
    let mut names = Vec::new();
    for _ in 0..60 {
        names.push(name_via(listen, None).await);
    }
    let t = tally(&names);
    assert_eq!(t.len(), 3, "{t:?}");
    assert!(t.values().all(|&n| n >= 8), "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_serves_only_after_every_primary_failed() {
    let primary = NamedServer::start("primary").await;
    let backup = NamedServer::start("backup").await;
    let dead = free_addr();
    let listen = free_addr();
    let yaml = format!(
        "services:\n  - name: b\n    listen: {listen}\n    connect_retries: 2\n    backends:\n      - address: \"{}\"\n      - address: \"{dead}\"\n      - {{ address: \"{}\", backup: true }}\n",
        primary.addr(),
        backup.addr()
    );
    let mut tandem = Tandem::spawn(bin(), &yaml);
    tandem.wait_listening(listen);
    for _ in 0..6 {
        assert_eq!(name_via(listen, None).await, "primary");
    }
    drop(primary);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Both primaries now refuse: after trying them, the backup takes the connection.
    for _ in 0..3 {
        assert_eq!(name_via(listen, None).await, "backup");
    }
}
