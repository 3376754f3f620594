//! End-to-end: the command line, `tandem check` on the config corpus and the
//! examples, `--version`, the demo, and the explained "address in use".

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{bin, http, one_service, read_to_end, succeeded};
use test_support::{free_addr, Tandem};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn check_rejects_every_bad_config_with_its_exact_errors() {
    let dir = repo().join("crates/config/tests/bad");
    let files = yaml_files(&dir);
    assert!(files.len() >= 20, "the corpus has {} files", files.len());
    for file in files {
        let name = file.file_name().unwrap().to_str().unwrap();
        let expected = std::fs::read_to_string(file.with_extension("expected")).unwrap();
        let out = Command::new(bin())
            .current_dir(&dir)
            .args(["check", "-c", name])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{name} must fail");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for line in expected.lines().filter(|l| !l.is_empty()) {
            assert!(
                stderr.contains(line),
                "{name}: missing `{line}` in:\n{stderr}"
            );
        }
        assert!(stderr.contains("configuration is not valid"), "{stderr}");
    }
}

#[test]
fn check_accepts_every_example() {
    let files = yaml_files(&repo().join("examples"));
    assert!(!files.is_empty());
    for file in files {
        let out = Command::new(bin())
            .args(["check", "-c"])
            .arg(&file)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: {}{}",
            file.display(),
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("configuration is valid"), "{stdout}");
        assert!(stdout.contains("SERVICE"), "{stdout}");
    }
}

#[test]
fn check_of_a_missing_file_says_so() {
    let out = Command::new(bin())
        .args(["check", "-c", "/nonexistent/tandem.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/tandem.yaml"), "{stderr}");
    assert!(stderr.contains("cannot read"), "{stderr}");
}

#[test]
fn version_prints_the_crate_version() {
    let out = Command::new(bin()).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("tandem {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn run_with_a_bad_config_exits_64_and_names_the_error() {
    let dir = tempfile_dir();
    let path = dir.join("bad.yaml");
    std::fs::write(&path, "services:\n  - name: x\n    listn: 127.0.0.1:1\n").unwrap();
    let out = Command::new(bin())
        .args(["run", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "EX_USAGE, as linkerd2-proxy");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.yaml:3:5"), "{stderr}");
    assert!(stderr.contains("listen"), "{stderr}");
}

fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tandem-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn address_in_use_names_the_process_holding_it() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = taken.local_addr().unwrap();
    let mut tandem = Tandem::spawn(bin(), &one_service(listen, &[free_addr()], ""));
    let status = tandem.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(1));
    let logs = tandem.logs();
    assert!(logs.contains("address already in use"), "{logs}");
    assert!(
        logs.contains(&format!("pid {}", std::process::id())),
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_6443_in_use_gives_the_kubeadm_advice() {
    // Only when 6443 is free on this machine; loopback only.
    let Ok(taken) = std::net::TcpListener::bind("127.0.0.1:6443") else {
        eprintln!("127.0.0.1:6443 is busy here; skipping the 6443 advice test");
        return;
    };
    let listen = taken.local_addr().unwrap();
    let mut tandem = Tandem::spawn(bin(), &one_service(listen, &[free_addr()], ""));
    let status = tandem.wait_exit(Duration::from_secs(10)).expect("exits");
    assert_eq!(status.code(), Some(1));
    let logs = tandem.logs();
    assert!(logs.contains("--bind-address"), "{logs}");
    assert!(logs.contains("8443"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_answers_with_each_backend_name_in_turn() {
    let (port, admin_port) = (free_addr().port(), free_addr().port());
    let mut child = tokio::process::Command::new(bin())
        .args(["demo", "--port", &port.to_string()])
        .args(["--admin-port", &admin_port.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let admin = std::net::SocketAddr::from(([127, 0, 0, 1], admin_port));
    let mut names = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while names.len() < 3 && std::time::Instant::now() < deadline {
        let Ok(mut s) = TcpStream::connect(addr).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        s.write_all(b"GET / HTTP/1.1\r\nHost: demo\r\n\r\n")
            .await
            .unwrap();
        let reply = read_to_end(&mut s, Duration::from_secs(5)).await.unwrap();
        let reply = String::from_utf8(reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
        names.push(reply.lines().last().unwrap().to_owned());
    }
    names.sort();
    assert_eq!(names, ["backend-1", "backend-2", "backend-3"]);

    // The admin endpoint answers: status, metrics, the page, drain and enable.
    let (code, json) = http(admin, "GET", "/status", &[]).await;
    assert_eq!(code, 200);
    assert_eq!(json.matches(r#""state":"up""#).count(), 3, "{json}");
    let (code, metrics) = http(admin, "GET", "/metrics", &[]).await;
    assert_eq!(code, 200);
    assert!(metrics.contains(r#"tandem_backend_up{service="demo",backend="backend-1"} 1"#));
    let (code, page) = http(admin, "GET", "/", &[]).await;
    assert_eq!(code, 200);
    assert!(page.contains(r#"data-access="loopback""#));
    let drain = "/backends/demo/backend-2/drain";
    assert_eq!(http(admin, "POST", drain, &[]).await.0, 200);
    let (_, json) = http(admin, "GET", "/status", &[]).await;
    assert!(json.contains(r#""state":"draining""#), "{json}");
    let enable = "/backends/demo/backend-2/enable";
    assert_eq!(http(admin, "POST", enable, &[]).await.0, 200);

    // "1" on stdin stops backend-1: its health check takes it down; "1" again
    // starts it and it comes back up.
    let mut stdin = child.stdin.take().unwrap();
    let state_of_1 = || async {
        let (_, json) = http(admin, "GET", "/status", &[]).await;
        let at = json
            .find(r#""name":"backend-1""#)
            .expect("backend-1 in status");
        let rest = &json[at..];
        let state = rest.split(r#""state":""#).nth(1).unwrap();
        state[..state.find('"').unwrap()].to_owned()
    };
    for want in ["down", "up"] {
        stdin.write_all(b"1\n").await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let state = state_of_1().await;
            if state == want {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "backend-1 is {state}, not {want}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    child.start_kill().unwrap();
    let _ = child.wait().await;
}

#[test]
fn init_config_prints_a_valid_kubeadm_config_differing_only_by_priority() {
    let run = |priority: &str| {
        let out = Command::new(bin())
            .args([
                "init-config",
                "--vip",
                "198.18.0.100/24",
                "--interface",
                "eth0",
                "--backends",
                "198.18.0.11:6443,198.18.0.12:6443,198.18.0.13:6443",
                "--priority",
                priority,
            ])
            .output()
            .unwrap();
        succeeded(out)
    };
    let (node1, node2) = (run("150"), run("140"));
    let differing: Vec<_> = node1
        .lines()
        .zip(node2.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(differing, [("      priority: 150", "      priority: 140")]);
    assert!(node1.contains("listen: 198.18.0.100:8443"));
    assert_checks(&node1);
}

/// Writes `yaml` to a file and asserts that `tandem check` accepts it.
fn assert_checks(yaml: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tandem.yaml");
    std::fs::write(&path, yaml).unwrap();
    succeeded(
        Command::new(bin())
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .unwrap(),
    );
}

#[test]
fn init_config_refuses_host_names() {
    let out = Command::new(bin())
        .args([
            "init-config",
            "--vip",
            "198.18.0.100/24",
            "--interface",
            "eth0",
            "--backends",
            "node1:6443",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("host names are not resolved"));
}

fn migrate(files: &[&str]) -> std::process::Output {
    let dir = repo().join("crates/tandem/tests/migrate");
    Command::new(bin())
        .arg("migrate")
        .args(files.iter().map(|f| dir.join(f)))
        .output()
        .unwrap()
}

#[test]
fn migrate_converts_the_kubeadm_guide_files_into_a_config_that_checks() {
    let out = migrate(&["keepalived.conf", "haproxy.cfg"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let yaml = String::from_utf8(out.stdout).unwrap();
    for expected in [
        "listen: 198.18.0.100:8443",
        "virtual_ips: [198.18.0.100/32]",
        "virtual_router_id: 51",
        "priority: 101",
        "address: \"198.18.0.11:6443\", name: node1",
        "address: \"198.18.0.13:6443\", name: node3",
        "type: https",
        "path: /healthz",
        "expect_status: [200]",
        "tls: { verify: false }",
        "track: { services: [apiserver], weight: -2 }",
        "connect_timeout: 5s",
    ] {
        assert!(yaml.contains(expected), "missing `{expected}` in:\n{yaml}");
    }
    assert!(
        stderr.contains("note: vrrp_instance VI_1: `authentication` dropped"),
        "{stderr}"
    );
    assert!(stderr.contains("/readyz"), "{stderr}");
    assert_checks(&yaml);
}

#[test]
fn migrate_reads_the_older_haproxy_form() {
    let yaml = succeeded(migrate(&["haproxy-old.cfg"]));
    assert!(yaml.contains("scheduler: least_connections"), "{yaml}");
    assert!(yaml.contains("backup: true"), "{yaml}");
    assert!(
        yaml.contains("interval: 3s") && yaml.contains("path: /healthz"),
        "{yaml}"
    );
}

#[test]
fn migrate_refuses_what_it_cannot_convert_and_says_where() {
    let out = migrate(&["haproxy-http.cfg"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "haproxy-http.cfg:1: frontend web: `mode http`",
        "haproxy-http.cfg:5: frontend web: `use_backend`",
        "haproxy-http.cfg:9: backend web: `balance uri` has no tandem equivalent",
        "`web1.example:8080` is not IP:PORT",
        "nothing was written",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
    assert!(out.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let listen = free_addr();
    let mut tandem = Tandem::spawn_with_args(
        bin(),
        &one_service(listen, &[free_addr()], ""),
        &["--log-format", "json"],
    );
    tandem.wait_listening(listen);
    let logs = tandem.logs();
    let started = logs
        .lines()
        .find(|l| l.contains("tandem started"))
        .expect("a start line");
    assert!(
        started.starts_with('{') && started.ends_with('}'),
        "{started}"
    );
    assert!(started.contains(r#""level":"INFO""#), "{started}");
    assert!(
        started.contains(r#""message":"tandem started""#),
        "{started}"
    );
    for line in logs.lines().filter(|l| !l.is_empty()) {
        assert!(line.starts_with('{'), "every line is JSON: {line}");
    }
}
