//! End-to-end: UDP services with sessions, through the real binary.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{bin, http, sample};
use test_support::{free_addr, free_port, Tandem, UdpNamedEcho};
use tokio::net::UdpSocket;

fn udp_yaml(admin: SocketAddr, listen: SocketAddr, backends: &[SocketAddr], extra: &str) -> String {
    let mut y = format!("admin:\n  listen: {admin}\nservices:\n  - name: dns\n    protocol: udp\n    listen: {listen}\n");
    for line in extra.lines() {
        y.push_str(&format!("    {line}\n"));
    }
    y.push_str("    backends:\n");
    for b in backends {
        y.push_str(&format!("      - address: \"{b}\"\n"));
    }
    y
}

async fn three() -> Vec<UdpNamedEcho> {
    vec![
        UdpNamedEcho::start("a").await,
        UdpNamedEcho::start("b").await,
        UdpNamedEcho::start("c").await,
    ]
}

/// Sends `payload` and waits (bounded) for one reply.
async fn ask(socket: &UdpSocket, to: SocketAddr, payload: &[u8], wait: Duration) -> Option<String> {
    socket.send_to(payload, to).await.unwrap();
    let mut buf = [0u8; 2048];
    match tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
        Ok(Ok((n, from))) => {
            assert_eq!(from, to, "replies come from the listen address");
            Some(String::from_utf8_lossy(&buf[..n]).into_owned())
        }
        _ => None,
    }
}

async fn client() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_sticks_to_one_backend_and_gets_its_own_replies() {
    let backends = three().await;
    let (admin, listen) = (free_addr(), free_addr());
    let addrs: Vec<_> = backends.iter().map(|b| b.addr()).collect();
    let mut tandem = Tandem::spawn(bin(), &udp_yaml(admin, listen, &addrs, ""));
    tandem.wait_listening(listen);

    let mut per_backend = BTreeMap::new();
    for c in 0..30 {
        let socket = client().await;
        let mut names = Vec::new();
        for i in 0..5 {
            let payload = format!("client{c}-msg{i}");
            let reply = ask(&socket, listen, payload.as_bytes(), Duration::from_secs(2))
                .await
                .expect("a reply");
            let (name, echoed) = reply.split_once(':').unwrap();
            assert_eq!(echoed, payload, "the reply is this client's own");
            names.push(name.to_owned());
        }
        assert!(
            names.iter().all(|n| n == &names[0]),
            "client {c}: {names:?}"
        );
        *per_backend.entry(names[0].clone()).or_insert(0) += 1;
    }
    assert_eq!(
        per_backend.values().copied().collect::<Vec<_>>(),
        [10, 10, 10],
        "round robin over sessions"
    );
    let (_, metrics) = http(admin, "GET", "/metrics", &[]).await;
    assert_eq!(
        sample(
            &metrics,
            r#"tandem_udp_datagrams_total{service="dns",direction="in"}"#
        ),
        Some(150.0)
    );
    assert_eq!(
        sample(
            &metrics,
            r#"tandem_udp_datagrams_total{service="dns",direction="out"}"#
        ),
        Some(150.0)
    );
    assert_eq!(
        sample(&metrics, r#"tandem_udp_sessions_active{service="dns"}"#),
        Some(30.0)
    );
    let (_, status) = http(admin, "GET", "/status?format=table", &[]).await;
    assert!(status.contains("(30 sessions)"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_sessions_expire_and_the_next_datagram_picks_again() {
    let backends = three().await;
    let (admin, listen) = (free_addr(), free_addr());
    let addrs: Vec<_> = backends.iter().map(|b| b.addr()).collect();
    let mut tandem = Tandem::spawn(
        bin(),
        &udp_yaml(admin, listen, &addrs, "udp: { session_timeout: 300ms }"),
    );
    tandem.wait_listening(listen);
    let socket = client().await;
    let first = ask(&socket, listen, b"x", Duration::from_secs(2))
        .await
        .unwrap();
    let again = ask(&socket, listen, b"x", Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(first, again, "same session");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (_, metrics) = http(admin, "GET", "/metrics", &[]).await;
    assert_eq!(
        sample(&metrics, r#"tandem_udp_sessions_active{service="dns"}"#),
        Some(0.0)
    );
    let after = ask(&socket, listen, b"x", Duration::from_secs(2))
        .await
        .unwrap();
    assert_ne!(first, after, "a new session, round robin moved on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_sessions_drops_and_counts_the_excess() {
    let backends = three().await;
    let (admin, listen) = (free_addr(), free_addr());
    let addrs: Vec<_> = backends.iter().map(|b| b.addr()).collect();
    let mut tandem = Tandem::spawn(
        bin(),
        &udp_yaml(admin, listen, &addrs, "udp: { max_sessions: 2 }"),
    );
    tandem.wait_listening(listen);
    let (c1, c2, c3) = (client().await, client().await, client().await);
    assert!(ask(&c1, listen, b"1", Duration::from_secs(2))
        .await
        .is_some());
    assert!(ask(&c2, listen, b"2", Duration::from_secs(2))
        .await
        .is_some());
    assert!(ask(&c3, listen, b"3", Duration::from_millis(300))
        .await
        .is_none());
    assert!(
        ask(&c1, listen, b"1", Duration::from_secs(2))
            .await
            .is_some(),
        "existing sessions go on"
    );
    let (_, metrics) = http(admin, "GET", "/metrics", &[]).await;
    assert_eq!(
        sample(
            &metrics,
            r#"tandem_udp_dropped_total{service="dns",reason="max_sessions"}"#
        ),
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_per_request_ends_the_session_after_the_answer() {
    let backends = three().await;
    let (admin, listen) = (free_addr(), free_addr());
    let addrs: Vec<_> = backends.iter().map(|b| b.addr()).collect();
    let mut tandem = Tandem::spawn(
        bin(),
        &udp_yaml(admin, listen, &addrs, "udp: { replies_per_request: 1 }"),
    );
    tandem.wait_listening(listen);
    for _ in 0..5 {
        let socket = client().await;
        assert!(ask(&socket, listen, b"q", Duration::from_secs(2))
            .await
            .is_some());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, metrics) = http(admin, "GET", "/metrics", &[]).await;
    assert_eq!(
        sample(&metrics, r#"tandem_udp_sessions_active{service="dns"}"#),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_backend_is_counted_as_a_failure() {
    let alive = UdpNamedEcho::start("alive").await;
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (admin, listen) = (free_addr(), free_addr());
    let mut tandem = Tandem::spawn(bin(), &udp_yaml(admin, listen, &[dead, alive.addr()], ""));
    tandem.wait_listening(listen);
    // Round robin: the first session goes to the dead backend; its ICMP refusal ends it.
    let c1 = client().await;
    assert!(ask(&c1, listen, b"1", Duration::from_millis(500))
        .await
        .is_none());
    let c2 = client().await;
    assert_eq!(
        ask(&c2, listen, b"2", Duration::from_secs(2))
            .await
            .unwrap(),
        "alive:2"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (_, metrics) = http(admin, "GET", "/metrics", &[]).await;
    let label = format!(
        r#"tandem_connect_errors_total{{service="dns",backend="{dead}",reason="refused"}}"#
    );
    assert_eq!(sample(&metrics, &label), Some(1.0), "{metrics}");
    assert!(tandem.wait_log("udp backend refused"), "{}", tandem.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_udp_services_share_a_port() {
    let udp_backend = UdpNamedEcho::start("udp").await;
    let tcp_backend = test_support::NamedServer::start("tcp").await;
    let port = free_port();
    let listen = SocketAddr::from(([127, 0, 0, 1], port));
    let yaml = format!(
        "services:\n  - name: dns-udp\n    protocol: udp\n    listen: {listen}\n    backends:\n      - address: \"{}\"\n  - name: dns-tcp\n    protocol: tcp\n    listen: {listen}\n    backends:\n      - address: \"{}\"\n",
        udp_backend.addr(),
        tcp_backend.addr()
    );
    let mut tandem = Tandem::spawn(bin(), &yaml);
    tandem.wait_listening(listen);
    let socket = client().await;
    assert_eq!(
        ask(&socket, listen, b"hi", Duration::from_secs(2))
            .await
            .unwrap(),
        "udp:hi"
    );
    let mut s = tokio::net::TcpStream::connect(listen).await.unwrap();
    let got = common::read_to_end(&mut s, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(got, b"tcp\n");
}

/// nsd serving a one-record zone on 127.0.0.1:PORT, killed on drop.
struct Nsd {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Nsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_nsd(port: u16) -> Option<Nsd> {
    if Command::new("nsd").arg("-v").output().is_err()
        || Command::new("dig").arg("-v").output().is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "nsd and dig must be installed in CI"
        );
        eprintln!("SKIPPED: nsd or dig missing (apt-get install nsd bind9-dnsutils)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("example.test.zone"),
        "$ORIGIN example.test.\n$TTL 300\n@ IN SOA ns hostmaster 1 3600 600 86400 300\n@ IN NS ns\nns IN A 198.18.0.53\nwww IN A 198.18.0.80\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("nsd.conf"),
        format!(
            "server:\n  ip-address: 127.0.0.1@{port}\n  username: \"\"\n  chroot: \"\"\n  zonesdir: \"{d}\"\n  database: \"\"\n  zonelistfile: \"{d}/zone.list\"\n  xfrdfile: \"{d}/xfrd.state\"\n  pidfile: \"{d}/nsd.pid\"\n  logfile: \"{d}/nsd.log\"\n  server-count: 1\n  rrl-ratelimit: 0\nremote-control:\n  control-enable: no\nzone:\n  name: example.test\n  zonefile: example.test.zone\n"
        ),
    )
    .unwrap();
    let child = Command::new("nsd")
        .args(["-d", "-c"])
        .arg(dir.path().join("nsd.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Some(Nsd { child, _dir: dir })
}

fn dig(server: SocketAddr, name: &str, tcp: bool) -> String {
    let mut cmd = Command::new("dig");
    cmd.args([
        &format!("@{}", server.ip()),
        "-p",
        &server.port().to_string(),
        name,
        "A",
        "+short",
        "+tries=1",
        "+time=2",
    ]);
    if tcp {
        cmd.arg("+tcp");
    }
    String::from_utf8_lossy(&cmd.output().unwrap().stdout)
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_dns_answers_through_tandem_over_udp_and_tcp() {
    let nsd_port = free_port();
    let Some(_nsd) = start_nsd(nsd_port) else {
        return;
    };
    let nsd = SocketAddr::from(([127, 0, 0, 1], nsd_port));
    // Wait (bounded) for nsd to answer directly.
    let mut ready = false;
    for _ in 0..50 {
        if dig(nsd, "www.example.test", false) == "198.18.0.80" {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "nsd did not start");
    let port = free_port();
    let listen = SocketAddr::from(([127, 0, 0, 1], port));
    let yaml = format!(
        "services:\n  - name: dns-udp\n    protocol: udp\n    listen: {listen}\n    udp: {{ replies_per_request: 1 }}\n    backends:\n      - address: \"{nsd}\"\n  - name: dns-tcp\n    listen: {listen}\n    backends:\n      - address: \"{nsd}\"\n"
    );
    let mut tandem = Tandem::spawn(bin(), &yaml);
    tandem.wait_listening(listen);
    let dig_udp = tokio::task::spawn_blocking(move || dig(listen, "www.example.test", false));
    assert_eq!(dig_udp.await.unwrap(), "198.18.0.80");
    let dig_tcp = tokio::task::spawn_blocking(move || dig(listen, "ns.example.test", true));
    assert_eq!(dig_tcp.await.unwrap(), "198.18.0.53");
}

/// 25,000 sources, each opening a session with one datagram, against a daemon
/// limited to 4,096 descriptors: UDP sessions stop at their share (half of the
/// limit, less the daemon's reserve) and the TCP service in the same process
/// answers every connection throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udp_flood_from_25000_sources_leaves_tcp_its_descriptors() {
    const NOFILE: u64 = 4096;
    const SOURCES: u32 = 25_000;
    let budget = tandem_listener::SessionBudget::for_open_file_limit(NOFILE).max();
    let api = test_support::NamedServer::start("api").await;
    let dns = UdpNamedEcho::start("dns").await;
    let (admin, udp_listen, tcp_listen) = (free_addr(), free_addr(), free_addr());
    let yaml = format!(
        "admin:\n  listen: {admin}\nservices:\n  - name: api\n    listen: {tcp_listen}\n    backends: [{{ address: \"{}\" }}]\n  - name: dns\n    protocol: udp\n    listen: {udp_listen}\n    udp: {{ session_timeout: 60s }}\n    backends: [{{ address: \"{}\" }}]\n",
        api.addr(),
        dns.addr()
    );
    let Some(mut tandem) = Tandem::spawn_with_open_file_limit(bin(), &yaml, NOFILE) else {
        eprintln!("SKIPPED: prlimit (util-linux) is missing");
        return;
    };
    tandem.wait_listening(tcp_listen);

    let flooding = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let tcp_client = {
        let flooding = std::sync::Arc::clone(&flooding);
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            // Bounded: the flood ends within the test's time, and so does this.
            for attempt in 0..20_000u32 {
                let done = !flooding.load(std::sync::atomic::Ordering::SeqCst);
                let answer = tokio::time::timeout(Duration::from_secs(2), async {
                    use tokio::io::AsyncReadExt;
                    let mut s = tokio::net::TcpStream::connect(tcp_listen).await?;
                    let mut line = [0u8; 4];
                    s.read_exact(&mut line).await?;
                    Ok::<_, std::io::Error>(line)
                })
                .await;
                match answer {
                    Ok(Ok(line)) if &line == b"api\n" => ok += 1,
                    other => failed.push(format!("attempt {attempt}: {other:?}")),
                }
                if done {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (ok, failed)
        })
    };
    let flood = tokio::task::spawn_blocking(move || {
        for i in 0..SOURCES {
            let source = std::net::Ipv4Addr::new(127, 1, (i / 250) as u8, (i % 250 + 1) as u8);
            let socket = std::net::UdpSocket::bind((source, 0)).unwrap();
            let _ = socket.send_to(b"query", udp_listen);
            if i % 1000 == 999 {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    });
    flood.await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    flooding.store(false, std::sync::atomic::Ordering::SeqCst);
    let (ok, failed) = tcp_client.await.unwrap();
    assert!(
        failed.is_empty(),
        "tcp failed during the flood ({ok} ok): {failed:?}"
    );
    assert!(
        ok >= 10,
        "only {ok} tcp connections were tried during the flood"
    );

    let (_, metrics) = http(admin, "GET", "/metrics", &[]).await;
    let active = sample(&metrics, r#"tandem_udp_sessions_active{service="dns"}"#).unwrap();
    let over = sample(
        &metrics,
        r#"tandem_udp_dropped_total{service="dns",reason="fd_budget"}"#,
    )
    .unwrap();
    assert!(
        active <= budget as f64,
        "{active} sessions, budget {budget}"
    );
    assert!(
        active >= budget as f64 * 0.9,
        "{active} sessions, budget {budget}: the flood did not reach it"
    );
    assert!(over >= 1.0, "no datagram counted over the budget");
    let logs = tandem.logs();
    let lines = logs.matches("udp datagram dropped").count();
    assert!(
        (1..=30).contains(&lines),
        "{lines} budget lines logged:\n{logs}"
    );
    assert!(
        !logs.contains("accept failed"),
        "tcp accept ran out of descriptors:\n{logs}"
    );
}
