//! The Grafana dashboard (deploy/grafana/tandem.json) against a real
//! Prometheus (Debian's package) scraping a running tandem every second:
//! every panel's query must parse and return data. Both run in a network
//! namespace, so that tandem can run a VRRP instance (on the namespace's own
//! `eth0`) and a routing section, and their panels have data too. Skips
//! loudly without root or /usr/bin/prometheus, unless
//! `TANDEM_REQUIRE_NETNS=1` (CI).

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{bin, echo_ok, http};
use serde_json::Value;
use test_support::netns::Lab;
use test_support::{free_addr, installed_or_skip, EchoServer, Tandem, UdpNamedEcho};

const PROMETHEUS: &str = "/usr/bin/prometheus";

/// Prometheus on 127.0.0.1 with a temporary config and storage; killed on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: tandem\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        )
        .unwrap();
        let addr = free_addr();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("log")).unwrap(),
            ))
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            addr,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("log")).unwrap_or_default()
    }

    /// `/api/v1/query` for `expr`: the whole answer, or `None` while Prometheus
    /// is not up yet.
    async fn query(&self, expr: &str) -> Option<Value> {
        tokio::net::TcpStream::connect(self.addr).await.ok()?;
        let (_, body) = http(
            self.addr,
            "GET",
            &format!("/api/v1/query?query={}", encode(expr)),
            &[],
        )
        .await;
        serde_json::from_str(&body).ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes everything but unreserved characters.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Every `expr` of every panel, with the panel's title; `$job` as Grafana
/// would fill it in.
fn panel_queries() -> Vec<(String, String)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/tandem.json"
    );
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap().replace("$job", "tandem");
            out.push((panel["title"].as_str().unwrap().to_owned(), expr));
        }
    }
    out
}

#[test]
fn every_panel_has_a_query_and_a_unique_id() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/tandem.json"
    );
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids: Vec<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), panels.len(), "panel ids are unique");
    for p in panels.iter().filter(|p| p["type"] != "row") {
        assert!(p["targets"][0]["expr"].is_string(), "{}", p["title"]);
    }
    assert!(panel_queries().len() >= 20);
}

#[test]
fn every_dashboard_query_parses_and_returns_data_from_a_real_prometheus() {
    let test = "every_dashboard_query_parses_and_returns_data_from_a_real_prometheus";
    if !installed_or_skip(test, &[PROMETHEUS], "prometheus") {
        return;
    }
    let Some(mut lab) = Lab::new(test) else {
        return;
    };
    let host = lab.host(&["198.18.0.11/24"]);
    // Everything below runs in the namespace: the backends, tandem, Prometheus.
    host.spawn(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(scrape_and_query_every_panel())
    })
    .join()
    .unwrap();
}

async fn scrape_and_query_every_panel() {
    let (e1, e2) = (EchoServer::start().await, EchoServer::start().await);
    let udp_backend = UdpNamedEcho::start("u1").await;
    let dead = free_addr();
    let (admin, web, raw, dns) = (free_addr(), free_addr(), free_addr(), free_addr());
    // web: health checked, one backend dead (health failures);
    // raw: no health, a dead backend first (connect errors, then a retry);
    // dns: UDP; a VRRP instance tracking web, master on its own; web's VIP
    // routed (table 250).
    let yaml = format!(
        "admin:\n  listen: {admin}\nservices:\n  - name: web\n    listen: {web}\n    health: {{ type: tcp, interval: 300ms, timeout: 200ms, rise: 1, fall: 1 }}\n    backends:\n      - {{ address: \"{}\", name: e1 }}\n      - {{ address: \"{dead}\", name: dead }}\n  - name: raw\n    listen: {raw}\n    connect_retries: 2\n    backends:\n      - {{ address: \"{dead}\", name: dead }}\n      - {{ address: \"{}\", name: e2 }}\n  - name: dns\n    protocol: udp\n    listen: {dns}\n    backends:\n      - {{ address: \"{}\", name: u1 }}\nvrrp:\n  instances:\n    - {{ name: vip, interface: eth0, virtual_router_id: 7, priority: 150, advert_interval: 100ms, virtual_ips: [198.18.0.100/24], track: {{ services: [web], weight: -60 }} }}\nrouting:\n  vips: [{{ address: 198.18.100.1, services: [web] }}]\n",
        e1.addr(),
        e2.addr(),
        udp_backend.addr()
    );
    let mut tandem = Tandem::spawn(bin(), &yaml);
    tandem.wait_listening(web);
    let prometheus = Prometheus::start(admin);

    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let traffic = || async {
        for _ in 0..4 {
            echo_ok(web, b"dashboard").await;
            echo_ok(raw, b"dashboard").await;
        }
        udp.send_to(b"query", dns).await.unwrap();
        let mut buf = [0u8; 512];
        let _ = tokio::time::timeout(Duration::from_secs(1), udp.recv_from(&mut buf)).await;
    };

    // Bounded: Prometheus up, scraping, with a few samples for rate().
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        traffic().await;
        let samples = prometheus
            .query("count_over_time(tandem_connections_total{service=\"raw\",backend=\"e2\"}[1m])")
            .await;
        let enough = samples.as_ref().and_then(|v| {
            v["data"]["result"][0]["value"][1]
                .as_str()?
                .parse::<f64>()
                .ok()
        });
        if enough.is_some_and(|n| n >= 4.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus has no samples of tandem after 60s: {samples:?}\n{}",
            prometheus.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    traffic().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let mut failures = Vec::new();
    for (title, expr) in panel_queries() {
        let answer = prometheus.query(&expr).await.expect("prometheus answers");
        if answer["status"] != "success" {
            failures.push(format!("{title}: `{expr}` does not parse: {answer}"));
            continue;
        }
        let empty = answer["data"]["result"]
            .as_array()
            .is_none_or(Vec::is_empty);
        if empty {
            failures.push(format!("{title}: `{expr}` returned no data"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    drop(tandem);
}
