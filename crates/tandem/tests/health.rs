//! End-to-end: health checks through the real binary, and traffic following them.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{bin, http, read_to_end, sample};
use test_support::{
    free_addr, free_port, https_server, HttpState, NamedServer, Pki, Tandem, UdpNamedEcho,
};
use tokio::net::TcpStream;

/// `curl -sk https://ADDR/` through tandem: the body names the backend.
async fn curl_name(addr: SocketAddr) -> String {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("curl")
            .args(["-sk", "--max-time", "5", &format!("https://{addr}/")])
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .unwrap()
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_going_red_moves_traffic_away_and_back() {
    let pki = Pki::new();
    let (a_state, b_state) = (HttpState::new(200, "a"), HttpState::new(200, "b"));
    let (a, _sa) = https_server(pki.server_config(false), a_state.clone()).await;
    let (b, _sb) = https_server(pki.server_config(false), b_state.clone()).await;
    let (admin, listen) = (free_addr(), free_addr());
    let yaml = format!(
        "admin: {{ listen: {admin} }}\nservices:\n  - name: api\n    listen: {listen}\n    backends:\n      - {{ address: \"{a}\", name: a }}\n      - {{ address: \"{b}\", name: b }}\n    health:\n      type: https\n      path: /readyz\n      interval: 100ms\n      timeout: 100ms\n      rise: 2\n      fall: 2\n      tls:\n        ca_file: {}\n        server_name: kubernetes\n",
        pki.ca_file.display()
    );
    let mut tandem = Tandem::spawn(bin(), &yaml);
    tandem.wait_listening(listen);
    assert!(
        tandem.wait_log("backend=b") && tandem.wait_log("down -> up"),
        "{}",
        tandem.logs()
    );
    wait_for("both up", || {
        tandem.logs().matches("down -> up").count() >= 2
    })
    .await;
    let mut names = Vec::new();
    for _ in 0..4 {
        names.push(curl_name(listen).await);
    }
    assert!(
        names.contains(&"a".to_owned()) && names.contains(&"b".to_owned()),
        "{names:?}"
    );

    b_state.set(500);
    assert!(tandem.wait_log("up -> down"), "{}", tandem.logs());
    let logs = tandem.logs();
    let line = logs.lines().find(|l| l.contains("up -> down")).unwrap();
    assert!(
        line.contains("service=api") && line.contains("backend=b") && line.contains("status 500"),
        "{line}"
    );
    for _ in 0..6 {
        assert_eq!(curl_name(listen).await, "a", "traffic follows health");
    }
    let (_, metrics) = http(admin, "GET", "/metrics", &[]).await;
    assert_eq!(
        sample(&metrics, r#"tandem_backend_up{service="api",backend="b"}"#),
        Some(0.0)
    );
    assert!(metrics
        .contains("tandem_health_check_duration_seconds_bucket{backend=\"b\",service=\"api\""));
    let (_, status) = http(admin, "GET", "/status?format=table", &[]).await;
    assert!(status.contains("status 500"), "{status}");

    b_state.set(200);
    wait_for("b back up", || {
        tandem.logs().matches("down -> up").count() >= 3
    })
    .await;
    let mut names = Vec::new();
    for _ in 0..4 {
        names.push(curl_name(listen).await);
    }
    assert!(names.contains(&"b".to_owned()), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_keeps_the_backend_down_with_the_tls_error_in_the_log() {
    let pki = Pki::new();
    let (a, _sa) = https_server(pki.server_config(false), HttpState::new(200, "a")).await;
    let listen = free_addr();
    let yaml = format!(
        "services:\n  - name: api\n    listen: {listen}\n    backends:\n      - address: \"{a}\"\n    health:\n      type: https\n      path: /readyz\n      interval: 100ms\n      timeout: 100ms\n      initial: up\n      fall: 1\n      tls: {{ ca_file: {} }}\n",
        pki.other_ca_file.display()
    );
    let mut tandem = Tandem::spawn(bin(), &yaml);
    tandem.wait_listening(listen);
    assert!(tandem.wait_log("UnknownIssuer"), "{}", tandem.logs());
    assert!(tandem.logs().contains("up -> down"));
    let mut s = TcpStream::connect(listen).await.unwrap();
    let got = read_to_end(&mut s, Duration::from_secs(3)).await.unwrap();
    assert!(got.is_empty(), "no healthy backend: closed at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backend_under_load_costs_at_most_the_connections_in_flight() {
    let servers = [
        NamedServer::start("a").await,
        NamedServer::start("b").await,
        NamedServer::start("c").await,
    ];
    let (admin, listen) = (free_addr(), free_addr());
    let mut yaml = format!("admin: {{ listen: {admin} }}\nservices:\n  - name: web\n    listen: {listen}\n    connect_retries: 0\n    health: {{ type: tcp, interval: 200ms, timeout: 100ms, rise: 1, fall: 1, initial: up }}\n    backends:\n");
    for (s, name) in servers.iter().zip(["a", "b", "c"]) {
        yaml.push_str(&format!(
            "      - {{ address: \"{}\", name: {name} }}\n",
            s.addr()
        ));
    }
    let mut tandem = Tandem::spawn(bin(), &yaml);
    tandem.wait_listening(listen);

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let ok = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (stop, failures, ok) = (stop.clone(), failures.clone(), ok.clone());
        clients.push(tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !stop.load(SeqCst) && Instant::now() < deadline {
                let got = match TcpStream::connect(listen).await {
                    Ok(mut s) => read_to_end(&mut s, Duration::from_secs(2))
                        .await
                        .unwrap_or_default(),
                    Err(_) => Vec::new(),
                };
                if got.is_empty() {
                    failures.fetch_add(1, SeqCst);
                } else {
                    ok.fetch_add(1, SeqCst);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let [a, b, c] = servers;
    drop(c);
    let killed = Instant::now();
    wait_for("c marked down", || tandem.logs().contains("up -> down")).await;
    let detection = killed.elapsed();
    let failed_by_detection = failures.load(SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, SeqCst);
    for c in clients {
        c.await.unwrap();
    }
    let logs = tandem.logs();
    let line = logs.lines().find(|l| l.contains("up -> down")).unwrap();
    assert!(line.contains("backend=c"), "{line}");
    // Failures stop once the probe has seen c die: within one interval (200 ms)
    // plus the probe timeout, and nothing fails afterwards.
    assert!(detection < Duration::from_millis(800), "{detection:?}");
    assert_eq!(
        failures.load(SeqCst),
        failed_by_detection,
        "no failure after detection"
    );
    // Each failure was a connection in flight to c when it died (at most one
    // per client) or a connect to c refused before detection.
    let (_, metrics) = http(admin, "GET", "/metrics", &[]).await;
    let refused = sample(
        &metrics,
        r#"tandem_connect_errors_total{service="web",backend="c",reason="refused"}"#,
    )
    .unwrap() as usize;
    assert!(
        failed_by_detection >= refused && failed_by_detection <= refused + 4,
        "failures {failed_by_detection}, refused connects {refused}"
    );
    assert!(ok.load(SeqCst) > 0);
    drop((a, b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_ejection_takes_a_refusing_backend_out_at_once() {
    let alive = NamedServer::start("alive").await;
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let (admin, listen) = (free_addr(), free_addr());
    let yaml = format!(
        "admin: {{ listen: {admin} }}\nservices:\n  - name: web\n    listen: {listen}\n    health: {{ type: tcp, interval: 30s, timeout: 1s, initial: up, eject_after: 1 }}\n    backends:\n      - address: \"{dead}\"\n      - address: \"{}\"\n",
        alive.addr()
    );
    let mut tandem = Tandem::spawn(bin(), &yaml);
    tandem.wait_listening(listen);
    for _ in 0..6 {
        let mut s = TcpStream::connect(listen).await.unwrap();
        assert_eq!(
            read_to_end(&mut s, Duration::from_secs(5)).await.unwrap(),
            b"alive\n"
        );
    }
    let (_, metrics) = http(admin, "GET", "/metrics", &[]).await;
    let label = format!(
        r#"tandem_connect_errors_total{{service="web",backend="{dead}",reason="refused"}}"#
    );
    assert_eq!(
        sample(&metrics, &label),
        Some(1.0),
        "ejected after the first failure"
    );
    assert_eq!(
        sample(
            &metrics,
            &format!(r#"tandem_backend_up{{service="web",backend="{dead}"}}"#)
        ),
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_probes_keep_new_sessions_off_a_dead_udp_backend() {
    let alive = UdpNamedEcho::start("alive").await;
    let dead = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let listen = free_addr();
    let yaml = format!(
        "services:\n  - name: dns\n    protocol: udp\n    listen: {listen}\n    health: {{ type: udp, send: ping, expect: \":ping\", interval: 100ms, timeout: 100ms, rise: 1, fall: 1 }}\n    backends:\n      - address: \"{dead}\"\n      - address: \"{}\"\n",
        alive.addr()
    );
    let mut tandem = Tandem::spawn(bin(), &yaml);
    tandem.wait_listening(listen);
    wait_for("alive up", || tandem.logs().contains("down -> up")).await;
    for i in 0..6 {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket
            .send_to(format!("q{i}").as_bytes(), listen)
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf))
            .await
            .expect("every session lands on the healthy backend")
            .unwrap();
        assert_eq!(&buf[..n], format!("alive:q{i}").as_bytes());
    }
}
