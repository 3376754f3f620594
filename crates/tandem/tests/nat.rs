//! `forwarding: nat` end to end, in network namespaces: a client host, a node
//! running tandem that holds the service address, and three backend hosts on
//! one segment. The kernel forwards; tandem keeps the nftables table in step
//! with health and drains, and leaves it for conntrack when killed.
//! Needs root (and nftables); skips loudly without it unless
//! TANDEM_REQUIRE_NETNS=1.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::bin;
use test_support::netns::{wait_for, Host, Lab};
use test_support::Tandem;

const NODE: &str = "198.18.0.1";
const VIP: &str = "198.18.0.100";
const CLIENT: &str = "198.18.0.2";
const BACKENDS: [&str; 3] = ["198.18.0.11", "198.18.0.12", "198.18.0.13"];
const PORT: u16 = 8080;
const UDP_PORT: u16 = 5353;

fn vip(port: u16) -> SocketAddr {
    format!("{VIP}:{port}").parse().unwrap()
}

/// What `nft` is needed for: without it the test cannot run, like without root.
fn nft_or_skip(test: &str) -> bool {
    if Command::new("nft").arg("--version").output().is_ok() {
        return true;
    }
    if std::env::var("TANDEM_REQUIRE_NETNS").is_ok_and(|v| v == "1") {
        panic!("{test}: TANDEM_REQUIRE_NETNS=1 but `nft` (nftables) is missing");
    }
    eprintln!("\n*** SKIPPED {test}: needs nftables' `nft` ***\n");
    false
}

fn config() -> String {
    let backends: String = BACKENDS
        .iter()
        .enumerate()
        .map(|(i, b)| format!("      - {{ name: b{}, address: \"{b}:{PORT}\" }}\n", i + 1))
        .collect();
    let udp_backends: String = BACKENDS[..2]
        .iter()
        .map(|b| format!("      - {{ address: \"{b}:{UDP_PORT}\" }}\n"))
        .collect();
    format!(
        "admin: {{ listen: 127.0.0.1:9901 }}
defaults: {{ forwarding: nat }}
services:
  - name: web
    listen: {VIP}:{PORT}
    health: {{ type: tcp, interval: 100ms, timeout: 100ms, rise: 1, fall: 1, initial: up }}
    backends:
{backends}  - name: dns
    protocol: udp
    listen: {VIP}:53
    backends:
{udp_backends}"
    )
}

/// A backend: each line it reads is answered with its name, except
/// `bulk N`, answered with N bytes of [`pattern`] and a close. UDP datagrams
/// are answered with its name too.
fn start_backend(host: &Host, name: &'static str, ip: &'static str) {
    let (tx, rx) = std::sync::mpsc::channel();
    host.spawn(move || {
        let listener = TcpListener::bind((ip, PORT)).unwrap();
        let udp = UdpSocket::bind((ip, UDP_PORT)).unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((_, from)) = udp.recv_from(&mut buf) {
                let _ = udp.send_to(name.as_bytes(), from);
            }
        });
        tx.send(()).unwrap();
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream, name));
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
}

fn serve(stream: TcpStream, name: &str) {
    let mut writer = stream.try_clone().unwrap();
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        if let Some(n) = line.strip_prefix("bulk ") {
            let n: usize = n.parse().unwrap();
            let mut sent = 0;
            while sent < n {
                let chunk: Vec<u8> = (sent..n.min(sent + 65536)).map(pattern).collect();
                if writer.write_all(&chunk).is_err() {
                    return;
                }
                sent += chunk.len();
            }
            return;
        }
        if writer.write_all(format!("{name}\n").as_bytes()).is_err() {
            return;
        }
    }
}

fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(31) ^ (i >> 12)) as u8
}

/// Which backend answers a new connection from the client.
fn who(client: &Host) -> Result<String, String> {
    ask(client, vip(PORT))
}

/// The name the backend behind `to` answers to a connection from `host`.
fn ask(host: &Host, to: SocketAddr) -> Result<String, String> {
    host.spawn(move || {
        let mut s =
            TcpStream::connect_timeout(&to, Duration::from_secs(2)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.write_all(b"who\n").map_err(|e| e.to_string())?;
        let mut line = String::new();
        BufReader::new(s)
            .read_line(&mut line)
            .map_err(|e| e.to_string())?;
        Ok(line.trim().to_owned())
    })
    .join()
    .unwrap()
}

/// A lab with one host, the node, holding `addresses`.
fn one_host(test: &str, addresses: &[&str]) -> Option<(Lab, Host)> {
    if !nft_or_skip(test) {
        return None;
    }
    let mut lab = Lab::new(test)?;
    let node = lab.host(addresses);
    Some((lab, node))
}

fn names(client: &Host, n: usize) -> std::collections::BTreeMap<String, usize> {
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..n {
        let name = who(client).unwrap_or_else(|e| format!("error: {e}"));
        *seen.entry(name).or_default() += 1;
    }
    seen
}

fn table(node: &Host) -> Option<String> {
    let out = node.sh(&["nft", "list", "table", "inet", "tandem"]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The backend addresses `service_0` may send a new flow to: the chains its
/// vmap jumps to, and the address each of them DNATs to.
fn dnat_targets(table: &str) -> Vec<&str> {
    let service = table.split("chain service_0 {").nth(1).unwrap_or("");
    let vmap = service.lines().find(|l| l.contains("vmap")).unwrap_or("");
    let mut out = Vec::new();
    for jump in vmap.split("jump ").skip(1) {
        let chain = jump.split([',', ' ']).next().unwrap_or("");
        let body = table
            .split(&format!("chain {chain} {{"))
            .nth(1)
            .unwrap_or("");
        let dnat = body.lines().find(|l| l.contains(" dnat ")).unwrap_or("");
        let to = dnat.rsplit(" to ").next().unwrap_or("");
        let ip = to.rsplit_once(':').map_or(to, |(ip, _)| ip);
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

fn curl(node: &Host, args: &[&str]) -> String {
    let mut argv = vec!["curl", "-sS", "--max-time", "5"];
    argv.extend(args);
    let out = node.sh(&argv);
    assert!(out.status.success(), "curl {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Setup {
    _lab: Lab,
    client: Host,
    node: Host,
    backends: Vec<Host>,
}

fn setup(test: &str) -> Option<Setup> {
    if !nft_or_skip(test) {
        return None;
    }
    let mut lab = Lab::new(test)?;
    let node = lab.host(&[&format!("{NODE}/24"), &format!("{VIP}/24")]);
    let client = lab.host(&[&format!("{CLIENT}/24")]);
    let backends: Vec<Host> = BACKENDS
        .iter()
        .map(|b| lab.host(&[&format!("{b}/24")]))
        .collect();
    // The node forwards what it DNATs; its redirects would only confuse.
    let sysctl = node.sh(&[
        "sh",
        "-c",
        "echo 1 > /proc/sys/net/ipv4/ip_forward && \
         echo 0 > /proc/sys/net/ipv4/conf/all/send_redirects && \
         echo 0 > /proc/sys/net/ipv4/conf/eth0/send_redirects",
    ]);
    assert!(sysctl.status.success(), "{sysctl:?}");
    for (i, host) in backends.iter().enumerate() {
        start_backend(host, ["b1", "b2", "b3"][i], BACKENDS[i]);
    }
    Some(Setup {
        _lab: lab,
        client,
        node,
        backends,
    })
}

fn start(node: &Host) -> Tandem {
    let mut tandem = Tandem::spawn_in_netns(node.ns(), bin(), &config());
    tandem.wait_listening(vip(PORT));
    tandem
}

#[test]
fn nat_spreads_follows_health_and_drains_without_cutting() {
    let Some(s) = setup("nat_spreads_follows_health_and_drains_without_cutting") else {
        return;
    };
    let tandem = start(&s.node);
    assert!(
        !s.node
            .sh(&["ss", "-Htln"])
            .stdout
            .windows(format!("{VIP}:{PORT}").len())
            .any(|w| w == format!("{VIP}:{PORT}").as_bytes()),
        "nat mode must not listen in userspace"
    );

    // Round robin over three equal backends: each gets a third.
    let seen = names(&s.client, 30);
    assert_eq!(
        seen.values().copied().collect::<Vec<_>>(),
        vec![10, 10, 10],
        "{seen:?}\n{}",
        tandem.logs()
    );

    // UDP through the kernel too.
    let answer = s
        .client
        .spawn(|| {
            let sock = UdpSocket::bind((CLIENT, 0)).unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            sock.send_to(b"q", vip(53)).unwrap();
            let mut buf = [0u8; 64];
            let (n, _) = sock.recv_from(&mut buf).map_err(|e| e.to_string())?;
            Ok::<_, String>(String::from_utf8_lossy(&buf[..n]).into_owned())
        })
        .join()
        .unwrap();
    assert!(matches!(answer.as_deref(), Ok("b1" | "b2")), "{answer:?}");

    // b3 fails its health check: it leaves the map.
    s.backends[2].cut_off(true);
    let gone = wait_for(Duration::from_secs(10), || {
        table(&s.node).is_some_and(|t| {
            let to = dnat_targets(&t);
            !to.contains(&BACKENDS[2]) && to.contains(&BACKENDS[0])
        })
    });
    assert!(
        gone.is_some(),
        "b3 stayed in the map:\n{:?}",
        table(&s.node)
    );
    let seen = names(&s.client, 20);
    assert_eq!(seen.get("b1"), Some(&10), "{seen:?}");
    assert_eq!(seen.get("b2"), Some(&10), "{seen:?}");

    // A connection held to b2 while b2 is drained keeps working; new ones
    // all go to b1.
    let (to_main, from_main) = std::sync::mpsc::channel::<()>();
    let (to_test, from_held) = std::sync::mpsc::channel::<String>();
    let held = s.client.spawn(move || {
        for _ in 0..10 {
            let mut stream = TcpStream::connect(vip(PORT)).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            stream.write_all(b"who\n").unwrap();
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.trim() != "b2" {
                continue;
            }
            to_test.send("b2".into()).unwrap();
            from_main.recv_timeout(Duration::from_secs(20)).unwrap();
            stream.write_all(b"who\n").unwrap();
            let mut again = String::new();
            reader.read_line(&mut again).unwrap();
            return again.trim().to_owned();
        }
        "never reached b2".to_owned()
    });
    assert_eq!(
        from_held.recv_timeout(Duration::from_secs(10)).unwrap(),
        "b2"
    );
    let drained = curl(
        &s.node,
        &["-X", "POST", "http://127.0.0.1:9901/backends/web/b2/drain"],
    );
    assert!(drained.contains("draining"), "{drained}");
    let left = wait_for(Duration::from_secs(5), || {
        table(&s.node).is_some_and(|t| !dnat_targets(&t).contains(&BACKENDS[1]))
    });
    assert!(left.is_some(), "b2 stayed in the map while draining");
    let seen = names(&s.client, 6);
    assert_eq!(seen.get("b1"), Some(&6), "{seen:?}");
    to_main.send(()).unwrap();
    assert_eq!(held.join().unwrap(), "b2", "the drained flow was cut");

    // The kernel's counters reach the metrics.
    let metrics = wait_for(Duration::from_secs(5), || {
        curl(&s.node, &["http://127.0.0.1:9901/metrics"])
            .lines()
            .any(|l| {
                l.starts_with("tandem_connections_total{service=\"web\",backend=\"b1\"}")
                    && l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) >= Some(10.0)
            })
    });
    assert!(
        metrics.is_some(),
        "{}",
        curl(&s.node, &["http://127.0.0.1:9901/metrics"])
    );

    // A clean stop removes the table.
    tandem.signal("TERM");
    let mut tandem = tandem;
    assert!(tandem.wait_exit(Duration::from_secs(10)).is_some());
    assert!(table(&s.node).is_none(), "the table outlived a clean stop");
}

#[test]
fn nat_flow_survives_kill_9_and_a_restart_reconciles_the_table() {
    let Some(s) = setup("nat_flow_survives_kill_9_and_a_restart_reconciles_the_table") else {
        return;
    };
    let mut tandem = start(&s.node);
    const TOTAL: usize = 48 << 20;
    let (progress_tx, progress) = std::sync::mpsc::channel::<usize>();
    let transfer = s.client.spawn(move || {
        let mut stream = TcpStream::connect(vip(PORT)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(format!("bulk {TOTAL}\n").as_bytes())
            .unwrap();
        let mut got = 0usize;
        let mut wrong = 0usize;
        let mut buf = vec![0u8; 65536];
        // Bounded: TOTAL bytes, or an error, or the read timeout.
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => panic!("transfer broke after {got} bytes: {e}"),
            };
            wrong += buf[..n]
                .iter()
                .enumerate()
                .filter(|(k, &b)| b != pattern(got + k))
                .count();
            got += n;
            let _ = progress_tx.send(got);
            // Slow enough that the kill and the restart fall mid-transfer.
            std::thread::sleep(Duration::from_millis(4));
        }
        (got, wrong)
    });
    let mut got = 0;
    while got < 4 << 20 {
        got = progress.recv_timeout(Duration::from_secs(10)).unwrap();
    }
    let kill = Command::new("kill")
        .args(["-9", &tandem.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    assert!(tandem.wait_exit(Duration::from_secs(5)).is_some());
    assert!(table(&s.node).is_some(), "kill -9 must leave the table");

    // A stale table with something tandem would never write: the next start
    // replaces it whole, while the flow goes on.
    let junk = s
        .node
        .sh(&["nft", "add", "chain", "inet", "tandem", "stale_junk"]);
    assert!(junk.status.success(), "{junk:?}");
    let tandem2 = start(&s.node);
    let t = table(&s.node).expect("the restart writes the table");
    assert!(!t.contains("stale_junk"), "{t}");
    assert!(t.contains("chain service_0"), "{t}");
    let so_far = progress.try_iter().last().unwrap_or(got);
    assert!(
        so_far < TOTAL,
        "the transfer ended before the restart: the test proves nothing"
    );
    let (got, wrong) = transfer.join().unwrap();
    assert_eq!(got, TOTAL, "bytes received");
    assert_eq!(wrong, 0, "bytes that differ from what the backend sent");
    drop(tandem2);
}

fn write_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("tandem.yaml");
    std::fs::write(&path, config()).unwrap();
    path
}

#[test]
fn nat_without_nft_or_cap_net_admin_says_so_and_applies_nothing() {
    let Some((_lab, node)) = one_host(
        "nat_without_nft_or_cap_net_admin_says_so_and_applies_nothing",
        &[&format!("{NODE}/24"), &format!("{VIP}/24")],
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let config = config.to_str().unwrap();
    let tandem = bin().to_str().unwrap();

    // No nft on PATH.
    for command in ["check", "run"] {
        let out = node
            .command("env")
            .args(["PATH=/nonexistent", tandem, command, "-c", config])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(
            !out.status.success(),
            "{command} without nft succeeded: {text}"
        );
        assert!(
            text.contains("`nft` command, not found in PATH"),
            "{command}: {text}"
        );
    }

    // No CAP_NET_ADMIN (dropped from the bounding set, so root loses it at exec).
    if Command::new("capsh").arg("--help").output().is_ok() {
        for command in ["check", "run"] {
            let line = format!("{tandem} {command} -c {config}");
            let out = node
                .command("capsh")
                .args(["--drop=cap_net_admin", "--", "-c", &line])
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stderr).into_owned()
                + &String::from_utf8_lossy(&out.stdout);
            assert!(
                !out.status.success(),
                "{command} without CAP_NET_ADMIN succeeded: {text}"
            );
            assert!(text.contains("needs CAP_NET_ADMIN"), "{command}: {text}");
        }
    } else {
        eprintln!("capsh missing: the CAP_NET_ADMIN half of this test did not run");
    }
    assert!(table(&node).is_none(), "a failed start left a table");

    // With both, check passes and says the file is valid.
    let out = node
        .command(tandem)
        .args(["check", "-c", config])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

/// Clients on the node itself (the output hook) reaching a backend on the
/// node's loopback: nothing to masquerade there (loopback addresses have host
/// scope, masquerade would drop the packets).
#[test]
fn nat_serves_clients_and_backends_on_the_nodes_loopback() {
    let Some((_lab, node)) = one_host(
        "nat_serves_clients_and_backends_on_the_nodes_loopback",
        &[&format!("{NODE}/24")],
    ) else {
        return;
    };
    start_loopback_backend(&node);
    let yaml = "defaults: { forwarding: nat }\nservices:\n  - { name: lo, listen: 127.0.0.1:7001, backends: [{ address: \"127.0.0.1:7002\" }] }\n";
    let mut tandem = Tandem::spawn_in_netns(node.ns(), bin(), yaml);
    tandem.wait_listening("127.0.0.1:7001".parse().unwrap());
    let answer = ask(&node, "127.0.0.1:7001".parse().unwrap());
    assert_eq!(answer.as_deref(), Ok("lo"), "{}", tandem.logs());
}

/// `nat_byte_counters: false` on every service: flows are still counted
/// (in the nat chains) and reach `tandem_connections_total`, bytes are not,
/// and the table hooks no filter chain, so no rule of tandem's runs on the
/// packets after a flow's first.
#[test]
fn nat_without_byte_counters_counts_flows_and_hooks_no_filter_chain() {
    let test = "nat_without_byte_counters_counts_flows_and_hooks_no_filter_chain";
    let Some((_lab, node)) = one_host(test, &[&format!("{NODE}/24")]) else {
        return;
    };
    start_loopback_backend(&node);
    let yaml = "admin: { listen: 127.0.0.1:9901 }\ndefaults: { forwarding: nat, nat_byte_counters: false }\nservices:\n  - { name: lo, listen: 127.0.0.1:7001, backends: [{ address: \"127.0.0.1:7002\" }] }\n";
    let mut tandem = Tandem::spawn_in_netns(node.ns(), bin(), yaml);
    tandem.wait_listening("127.0.0.1:7001".parse().unwrap());
    for _ in 0..3 {
        let answer = ask(&node, "127.0.0.1:7001".parse().unwrap());
        assert_eq!(answer.as_deref(), Ok("lo"), "{}", tandem.logs());
    }
    let rules = table(&node).expect("tandem's table");
    assert!(!rules.contains("type filter hook"), "{rules}");
    assert!(rules.contains("counter name \"s0_b0_new\" dnat"), "{rules}");
    assert!(!rules.contains("s0_b0_orig"), "{rules}");

    let value = |metrics: &str, prefix: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(prefix))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let counted = wait_for(Duration::from_secs(5), || {
        let m = curl(&node, &["http://127.0.0.1:9901/metrics"]);
        value(&m, "tandem_connections_total{service=\"lo\"") >= 3.0
    });
    let metrics = curl(&node, &["http://127.0.0.1:9901/metrics"]);
    assert!(counted.is_some(), "{metrics}");
    assert_eq!(
        value(&metrics, "tandem_bytes_total{service=\"lo\""),
        0.0,
        "{metrics}"
    );
}

fn start_loopback_backend(host: &Host) {
    let (tx, rx) = std::sync::mpsc::channel();
    host.spawn(move || {
        let listener = TcpListener::bind("127.0.0.1:7002").unwrap();
        tx.send(()).unwrap();
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || serve(stream, "lo"));
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
}
