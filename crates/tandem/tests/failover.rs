//! End-to-end in network namespaces: the kubeadm walk-through played by three
//! tandem nodes from `examples/kubeadm-ha.yaml` in front of TLS
//! kube-apiserver stand-ins, a client using the VIP, and the VIP holder dying.
//! Needs root; skips loudly without it unless TANDEM_REQUIRE_NETNS=1.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use common::bin;
use test_support::netns::{wait_for, Host, Lab};
use test_support::{https_server_on, HttpState, Pki, Tandem};

const VIP: &str = "198.18.0.100";
const ADVERT_MS: u64 = 100;

/// The example, adjusted for the lab: this node's priority, fast adverts and
/// probes, and `verify: false` (the stand-ins' CA is not /etc/kubernetes/pki).
fn node_config(priority: u8) -> String {
    let example = include_str!("../../../examples/kubeadm-ha.yaml");
    let mut text = String::new();
    let mut skip_tls = false;
    for line in example.lines() {
        let trimmed = line.trim_start();
        if skip_tls {
            if trimmed.starts_with("ca_file") || trimmed.starts_with("server_name") {
                continue;
            }
            skip_tls = false;
        }
        let replaced = if trimmed.starts_with("priority:") {
            format!("      priority: {priority}")
        } else if trimmed.starts_with("advert_interval:") {
            format!("      advert_interval: {ADVERT_MS}ms")
        } else if trimmed.starts_with("interval: 2s") {
            "      interval: 200ms".to_owned()
        } else if trimmed.starts_with("timeout: 1s") {
            "      timeout: 200ms".to_owned()
        } else if trimmed.starts_with("tls:") {
            skip_tls = true;
            "      tls: { verify: false }".to_owned()
        } else {
            line.to_owned()
        };
        text.push_str(&replaced);
        text.push('\n');
    }
    text
}

/// A TLS kube-apiserver stand-in (`/readyz`, `/version`) on `ip:6443` in `host`.
fn start_apiserver(host: &Host, ip: &str, pki: &Pki) -> tokio_util::sync::CancellationToken {
    let stop = tokio_util::sync::CancellationToken::new();
    let (stop2, config) = (stop.clone(), pki.server_config(false));
    let addr: SocketAddr = format!("{ip}:6443").parse().unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    host.spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (_, task) = https_server_on(addr, config, HttpState::new(200, "ok")).await;
            ready_tx.send(()).unwrap();
            stop2.cancelled().await;
            task.abort();
        });
    });
    ready_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("stand-in starts");
    stop
}

fn kubectl_version(client: &Host) -> Result<String, String> {
    let out = client
        .command("kubectl")
        .args([
            "--kubeconfig",
            "/dev/null",
            "--server",
            &format!("https://{VIP}:8443"),
            "--insecure-skip-tls-verify",
            "--token",
            "x",
            "--request-timeout",
            "5s",
            "version",
        ])
        .output()
        .map_err(|e| e.to_string())?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(text)
    }
}

#[test]
fn kubectl_reaches_the_apiservers_through_the_vip_before_and_after_the_holder_dies() {
    if Command::new("kubectl")
        .arg("version")
        .arg("--client")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "kubectl must be installed in CI"
        );
        eprintln!("SKIPPED: kubectl is not installed");
        return;
    }
    let Some(mut lab) = Lab::new("kubectl_through_the_vip") else {
        return;
    };
    let nodes: Vec<(Host, &str, u8)> = [
        ("198.18.0.11", 150u8),
        ("198.18.0.12", 140),
        ("198.18.0.13", 130),
    ]
    .into_iter()
    .map(|(ip, priority)| (lab.host(&[&format!("{ip}/24")]), ip, priority))
    .collect();
    let client = lab.host(&["198.18.0.50/24"]);
    let pki = Pki::new();
    let _apiservers: Vec<_> = nodes
        .iter()
        .map(|(h, ip, _)| start_apiserver(h, ip, &pki))
        .collect();
    let mut tandems: Vec<Tandem> = nodes
        .iter()
        .map(|(h, _, p)| Tandem::spawn_in_netns(h.ns(), bin(), &node_config(*p)))
        .collect();
    for t in &mut tandems {
        assert!(t.wait_log("tandem started"), "{}", t.logs());
    }

    // node1 (150) takes the VIP once its start-up hold-off has passed.
    let took = wait_for(Duration::from_secs(10), || nodes[0].0.has_address(VIP));
    assert!(
        took.is_some(),
        "node1 never held the VIP:\n{}",
        tandems[0].logs()
    );
    assert!(!nodes[1].0.has_address(VIP) && !nodes[2].0.has_address(VIP));
    // The health checks see all three apiservers.
    assert!(
        wait_for(Duration::from_secs(10), || tandems[0]
            .logs()
            .matches("down -> up")
            .count()
            >= 3)
        .is_some(),
        "{}",
        tandems[0].logs()
    );
    let before = wait_until_ok(&client);
    assert!(before.contains("v1.31.0-tandem-test"), "{before}");

    // node1 dies: its tandem is killed and its link goes down.
    tandems[0].signal("KILL");
    nodes[0].0.set_link(false);
    let died = Instant::now();
    let moved = wait_for(Duration::from_secs(5), || nodes[1].0.has_address(VIP));
    assert!(
        moved.is_some(),
        "node2 never took the VIP:\n{}",
        tandems[1].logs()
    );
    // Master_Down_Interval (3 × advert interval + skew, skew < one interval) + 500 ms.
    let limit = Duration::from_millis(3 * ADVERT_MS + ADVERT_MS + 500);
    assert!(
        died.elapsed() <= limit + Duration::from_millis(200),
        "failover took {:?}",
        died.elapsed()
    );
    let after = wait_until_ok(&client);
    assert!(after.contains("v1.31.0-tandem-test"), "{after}");
    assert!(!nodes[2].0.has_address(VIP), "only one holder");
}

/// `kubectl version` through the VIP, retried for a few seconds (ARP caches
/// follow the gratuitous ARP; the first try may race it).
fn wait_until_ok(client: &Host) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match kubectl_version(client) {
            Ok(text) => return text,
            Err(e) if Instant::now() >= deadline => {
                panic!("kubectl version through the VIP failed: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// Two nodes, each balancing only to its own stand-in, tracking that service.
fn tracking_config(priority: u8) -> String {
    format!(
        "services:\n  - name: api\n    listen: {VIP}:8443\n    backends: [{{ address: \"127.0.0.1:6443\" }}]\n    health: {{ type: tcp, interval: 100ms, timeout: 100ms, rise: 1, fall: 1 }}\nvrrp:\n  instances:\n    - name: vip\n      interface: eth0\n      virtual_router_id: 52\n      priority: {priority}\n      advert_interval: {ADVERT_MS}ms\n      virtual_ips: [{VIP}/24]\n      track: {{ services: [api], weight: -60 }}\n"
    )
}

#[test]
fn tracked_service_down_moves_the_vip_and_sigterm_hands_over_at_once() {
    let Some(mut lab) = Lab::new("tracking_and_sigterm") else {
        return;
    };
    let n1 = lab.host(&["198.18.0.21/24"]);
    let n2 = lab.host(&["198.18.0.22/24"]);
    let pki = Pki::new();
    let stop1 = start_apiserver(&n1, "127.0.0.1", &pki);
    let _stop2 = start_apiserver(&n2, "127.0.0.1", &pki);
    let t1 = Tandem::spawn_in_netns(n1.ns(), bin(), &tracking_config(150));
    let mut t2 = Tandem::spawn_in_netns(n2.ns(), bin(), &tracking_config(120));
    assert!(t1.wait_log("tandem started") && t2.wait_log("tandem started"));
    assert!(
        wait_for(Duration::from_secs(10), || n1.has_address(VIP)).is_some(),
        "{}",
        t1.logs()
    );

    // node1's only backend dies: 150 - 60 = 90 < 120, node2 preempts.
    stop1.cancel();
    assert!(
        wait_for(Duration::from_secs(5), || n2.has_address(VIP)).is_some(),
        "node2 never took the VIP:\n{}",
        t2.logs()
    );
    assert!(
        wait_for(Duration::from_secs(2), || !n1.has_address(VIP)).is_some(),
        "node1 gave the VIP up"
    );

    // SIGTERM on the master (node2): priority 0, node1 takes over about one
    // skew time later (well within one advert interval plus slack).
    let stopped = Instant::now();
    t2.signal("TERM");
    let took = wait_for(Duration::from_secs(3), || n1.has_address(VIP));
    assert!(
        took.is_some(),
        "node1 never took the VIP back:\n{}",
        t1.logs()
    );
    assert!(
        stopped.elapsed() < Duration::from_millis(ADVERT_MS * 3),
        "handover took {:?}",
        stopped.elapsed()
    );
    let status = t2.wait_exit(Duration::from_secs(10)).expect("node2 exits");
    assert!(status.success());
    assert!(!n2.has_address(VIP), "a stopped node leaves no VIP behind");
}
