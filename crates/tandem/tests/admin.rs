//! End-to-end: the admin endpoint, metrics, `tandem status`, drain and tokens.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::{bin, echo_ok, http, sample, succeeded};
use test_support::{free_addr, pattern, EchoServer, Tandem};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(
    admin: SocketAddr,
    listen: SocketAddr,
    backends: &[(&str, SocketAddr)],
    extra: &str,
) -> String {
    let mut y = format!("admin:\n  listen: {admin}\n{extra}services:\n  - name: web\n    listen: {listen}\n    access_log: true\n    backends:\n");
    for (name, addr) in backends {
        y.push_str(&format!(
            "      - {{ address: \"{addr}\", name: {name} }}\n"
        ));
    }
    y
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_connections_and_bytes_exactly() {
    let echo = EchoServer::start().await;
    let (admin, listen) = (free_addr(), free_addr());
    let mut tandem = Tandem::spawn(bin(), &config(admin, listen, &[("e1", echo.addr())], ""));
    tandem.wait_listening(listen);
    let data = pattern(10_000, 1);
    for _ in 0..7 {
        assert!(echo_ok(listen, &data).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (code, body) = http(admin, "GET", "/metrics", &[]).await;
    assert_eq!(code, 200);
    let sb = r#"service="web",backend="e1""#;
    assert_eq!(
        sample(&body, &format!("tandem_connections_total{{{sb}}}")),
        Some(7.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, &format!("tandem_active_connections{{{sb}}}")),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &body,
            &format!(r#"tandem_bytes_total{{{sb},direction="in"}}"#)
        ),
        Some(70_000.0)
    );
    assert_eq!(
        sample(
            &body,
            &format!(r#"tandem_bytes_total{{{sb},direction="out"}}"#)
        ),
        Some(70_000.0)
    );
    assert_eq!(
        sample(&body, &format!("tandem_backend_up{{{sb}}}")),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &body,
            r#"tandem_connection_duration_seconds_count{service="web"}"#
        ),
        Some(7.0)
    );
    assert_eq!(
        sample(&body, r#"tandem_config_reloads_total{result="failure"}"#),
        Some(0.0)
    );
    assert!(
        body.contains("process_resident_memory_bytes"),
        "process metrics"
    );
    // The access log has one line per connection, with the bytes.
    let logs = tandem.logs();
    assert_eq!(
        logs.matches("bytes_in=10000 bytes_out=10000").count(),
        7,
        "{logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_exposition() {
    if Command::new("promtool").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing in CI (apt-get install prometheus)"
        );
        eprintln!("SKIPPED: promtool not installed (apt-get install prometheus)");
        return;
    }
    let echo = EchoServer::start().await;
    let (admin, listen) = (free_addr(), free_addr());
    let mut tandem = Tandem::spawn(bin(), &config(admin, listen, &[("e1", echo.addr())], ""));
    tandem.wait_listening(listen);
    assert!(echo_ok(listen, b"hello").await);
    let (_, body) = http(admin, "GET", "/metrics", &[]).await;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_and_status_endpoints_answer() {
    let echo = EchoServer::start().await;
    let (admin, listen) = (free_addr(), free_addr());
    let mut tandem = Tandem::spawn(bin(), &config(admin, listen, &[("e1", echo.addr())], ""));
    tandem.wait_listening(listen);
    assert_eq!(http(admin, "GET", "/healthz", &[]).await.0, 200);
    assert_eq!(http(admin, "GET", "/readyz", &[]).await.0, 200);
    let (code, json) = http(admin, "GET", "/status", &[]).await;
    assert_eq!(code, 200);
    assert!(json.contains(r#""name":"web""#), "{json}");
    assert!(json.contains(r#""state":"up""#), "{json}");
    assert_eq!(http(admin, "GET", "/nope", &[]).await.0, 404);
    assert_eq!(http(admin, "DELETE", "/status", &[]).await.0, 405);

    let table = succeeded(
        Command::new(bin())
            .args(["status", "--admin", &admin.to_string()])
            .output()
            .unwrap(),
    );
    let header = table.lines().next().unwrap();
    for col in [
        "SERVICE",
        "LISTEN",
        "SCHEDULER",
        "BACKEND",
        "STATE",
        "ACTIVE",
        "TOTAL",
        "BYTES IN",
        "BYTES OUT",
        "LAST CHECK",
    ] {
        assert!(header.contains(col), "{table}");
    }
    assert!(table.contains(&format!("e1 ({})", echo.addr())), "{table}");
    let out = Command::new(bin())
        .args(["status", "--json", "--admin", &admin.to_string()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("{\"version\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_stops_new_connections_while_an_open_one_keeps_flowing() {
    let (e1, e2) = (EchoServer::start().await, EchoServer::start().await);
    let (admin, listen) = (free_addr(), free_addr());
    let mut tandem = Tandem::spawn(
        bin(),
        &config(admin, listen, &[("e1", e1.addr()), ("e2", e2.addr())], ""),
    );
    tandem.wait_listening(listen);
    // Round robin: the first connection lands on e1 and stays open.
    let mut open = TcpStream::connect(listen).await.unwrap();
    open.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    open.read_exact(&mut buf).await.unwrap();
    assert_eq!(e1.accepted(), 1);

    succeeded(
        Command::new(bin())
            .args(["drain", "web", "e1", "--admin", &admin.to_string()])
            .output()
            .unwrap(),
    );
    for _ in 0..6 {
        assert!(echo_ok(listen, b"x").await);
    }
    assert_eq!(e1.accepted(), 1, "no new connection to a draining backend");
    assert_eq!(e2.accepted(), 6);
    open.write_all(b"pong").await.unwrap();
    open.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"pong", "the open connection keeps flowing");
    let (_, json) = http(admin, "GET", "/status", &[]).await;
    assert!(json.contains(r#""state":"draining""#), "{json}");

    let (code, _) = http(admin, "POST", "/backends/web/e1/enable", &[]).await;
    assert_eq!(code, 200);
    for _ in 0..4 {
        assert!(echo_ok(listen, b"x").await);
    }
    assert!(e1.accepted() > 1);
    assert_eq!(
        http(admin, "POST", "/backends/web/nope/drain", &[]).await.0,
        404
    );
    assert_eq!(
        http(admin, "POST", "/backends/nope/e1/drain", &[]).await.0,
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutations_need_the_token_when_one_is_configured() {
    let echo = EchoServer::start().await;
    let (admin, listen) = (free_addr(), free_addr());
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let extra = String::new();
    let yaml = config(admin, listen, &[("e1", echo.addr())], &extra).replacen(
        "admin:\n",
        &format!("admin:\n  token_file: {}\n", token_file.display()),
        1,
    );
    let mut tandem = Tandem::spawn(bin(), &yaml);
    tandem.wait_listening(listen);
    let path = "/backends/web/e1/drain";
    assert_eq!(http(admin, "POST", path, &[]).await.0, 401);
    assert_eq!(
        http(admin, "POST", path, &[("Authorization", "Bearer wrong")])
            .await
            .0,
        401
    );
    let (_, json) = http(admin, "GET", "/status", &[]).await;
    assert!(json.contains(r#""state":"up""#), "nothing changed: {json}");
    assert_eq!(
        http(admin, "POST", path, &[("Authorization", "Bearer s3cret")])
            .await
            .0,
        200
    );
    let (_, json) = http(admin, "GET", "/status", &[]).await;
    assert!(json.contains(r#""state":"draining""#), "{json}");
    // The CLI reads the token file named in the config.
    succeeded(
        Command::new(bin())
            .args(["enable", "web", "e1", "-c"])
            .arg(tandem.config_path())
            .output()
            .unwrap(),
    );
}
