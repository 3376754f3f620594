//! Single probes of each type against real listeners on 127.0.0.1.

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use common::*;
use tandem_config::HealthKind;
use tandem_core::BackendAddress;
use tandem_health::{Outcome, Prober};

async fn probe(health: &tandem_config::Health, addr: std::net::SocketAddr) -> Outcome {
    let prober = Prober::new(health).unwrap();
    bounded("probe", prober.probe(BackendAddress(addr))).await
}

#[tokio::test]
async fn tcp_probe_succeeds_against_a_listener() {
    let listener = tokio::net::TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let got = probe(&health(HealthKind::Tcp), listener.local_addr().unwrap()).await;
    assert!(got.ok, "{got:?}");
    assert_eq!(got.reason, "connected");
}

#[tokio::test]
async fn tcp_probe_to_a_closed_port_is_refused() {
    let got = probe(&health(HealthKind::Tcp), test_support::free_addr()).await;
    assert!(!got.ok);
    assert_eq!(got.reason, "connection refused");
}

#[tokio::test]
async fn tcp_probe_times_out_when_the_connect_hangs() {
    let blackhole = test_support::Blackhole::start().unwrap();
    let addr = blackhole.addr();
    let mut h = health(HealthKind::Tcp);
    h.timeout = Duration::from_millis(200);
    let got = probe(&h, addr).await;
    assert!(!got.ok);
    assert_eq!(got.reason, "timed out after 200ms while connecting");
    assert!(got.duration >= Duration::from_millis(200) && got.duration < Duration::from_secs(2));
}

#[tokio::test]
async fn tcp_probe_uses_the_port_override() {
    let listener = tokio::net::TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let mut h = health(HealthKind::Tcp);
    h.port = Some(listener.local_addr().unwrap().port());
    // The backend's own port is closed; the override is open.
    let got = probe(&h, test_support::free_addr()).await;
    assert!(got.ok, "{got:?}");
}

#[tokio::test]
async fn http_probe_sends_get_with_host_and_connection_close() {
    let state = HttpState::new(200, "ok");
    let (addr, _server) = http_server(state.clone()).await;
    let got = probe(&health(HealthKind::Http), addr).await;
    assert!(got.ok, "{got:?}");
    assert_eq!(got.reason, "status 200");
    let req = &state.requests()[0];
    assert!(req.starts_with("GET /readyz HTTP/1.1\r\n"), "{req}");
    assert!(req.contains(&format!("\r\nHost: {addr}\r\n")), "{req}");
    assert!(req.contains("\r\nConnection: close\r\n"), "{req}");

    let mut h = health(HealthKind::Http);
    h.host = Some("api.example".to_owned());
    h.path = "/healthz?verbose=1".to_owned();
    assert!(probe(&h, addr).await.ok);
    let req = &state.requests()[1];
    assert!(
        req.starts_with("GET /healthz?verbose=1 HTTP/1.1\r\n"),
        "{req}"
    );
    assert!(req.contains("\r\nHost: api.example\r\n"), "{req}");
}

#[tokio::test]
async fn http_probe_checks_the_status_against_the_list() {
    let state = HttpState::new(200, "ok");
    let (addr, _server) = http_server(state.clone()).await;
    let cases: &[(u16, &[u16], Result<&str, &str>)] = &[
        (200, &[200], Ok("status 200")),
        (500, &[200], Err("status 500")),
        (204, &[200, 204], Ok("status 204")),
        (301, &[200, 204], Err("status 301")),
        (401, &[200, 401, 403], Ok("status 401")),
        (503, &[503], Ok("status 503")),
    ];
    for (status, expect, want) in cases {
        state.set(*status);
        let mut h = health(HealthKind::Http);
        h.expect_status = expect.to_vec();
        let got = probe(&h, addr).await;
        let got = if got.ok {
            Ok(got.reason)
        } else {
            Err(got.reason)
        };
        assert_eq!(
            got.as_ref().map(String::as_str).map_err(String::as_str),
            *want,
            "status {status}, expect {expect:?}"
        );
    }
}

#[tokio::test]
async fn http_probe_checks_the_body() {
    let state = HttpState::new(200, "[+]ping ok\n[-]etcd failed\nreadyz check failed");
    let (addr, _server) = http_server(state.clone()).await;
    let mut h = health(HealthKind::Http);
    h.expect_body = Some("etcd failed".to_owned());
    let got = probe(&h, addr).await;
    assert!(got.ok, "{got:?}");
    h.expect_body = Some("all ok".to_owned());
    let got = probe(&h, addr).await;
    assert!(!got.ok);
    assert_eq!(got.reason, "body does not contain \"all ok\"");
}

#[tokio::test]
async fn http_probe_to_a_closed_port_is_refused() {
    let got = probe(&health(HealthKind::Http), test_support::free_addr()).await;
    assert!(!got.ok);
    assert_eq!(got.reason, "connection refused");
}

#[tokio::test]
async fn http_probe_times_out_when_the_server_never_answers() {
    let server = test_support::HoldServer::start().await;
    let addr = server.addr();
    let mut h = health(HealthKind::Http);
    h.timeout = Duration::from_millis(150);
    let got = probe(&h, addr).await;
    assert!(!got.ok);
    assert_eq!(got.reason, "timed out after 150ms waiting for the response");
}

#[tokio::test]
async fn http_probe_reports_a_non_http_answer() {
    let listener = tokio::net::TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.write_all(b"SSH-2.0-OpenSSH_9.2\r\n").await;
        }
    });
    let got = probe(&health(HealthKind::Http), addr).await;
    assert!(!got.ok);
    assert_eq!(
        got.reason,
        "bad response: not an HTTP response: `SSH-2.0-OpenSSH_9.2`"
    );
}

#[tokio::test]
async fn http_probe_refuses_a_path_that_would_break_the_request() {
    let mut h = health(HealthKind::Http);
    h.path = "/x HTTP/1.1\r\nEvil: 1".to_owned();
    let e = Prober::new(&h).unwrap_err().to_string();
    assert!(e.starts_with("path `"), "{e}");
}

#[tokio::test]
async fn udp_probe_with_expect_needs_a_matching_reply() {
    let (addr, received, _server) = udp_server(Some(b"pong from backend")).await;
    let mut h = health(HealthKind::Udp);
    h.send = Some("ping".to_owned());
    h.expect = Some("pong".to_owned());
    let got = probe(&h, addr).await;
    assert!(got.ok, "{got:?}");
    assert_eq!(got.reason, "reply contains \"pong\"");
    assert_eq!(received.load(SeqCst), 1);

    h.expect = Some("PONG".to_owned());
    let got = probe(&h, addr).await;
    assert!(!got.ok);
    assert_eq!(got.reason, "reply does not contain \"PONG\"");
}

#[tokio::test]
async fn udp_probe_with_expect_times_out_on_silence() {
    let (addr, received, _server) = udp_server(None).await;
    let mut h = health(HealthKind::Udp);
    h.send = Some("ping".to_owned());
    h.expect = Some("pong".to_owned());
    h.timeout = Duration::from_millis(150);
    let got = probe(&h, addr).await;
    assert!(!got.ok);
    assert_eq!(got.reason, "timed out after 150ms waiting for a reply");
    assert_eq!(received.load(SeqCst), 1);
}

#[tokio::test]
async fn udp_probe_without_expect_accepts_silence_but_not_refusal() {
    let (addr, received, _server) = udp_server(None).await;
    let mut h = health(HealthKind::Udp);
    h.timeout = Duration::from_millis(150);
    let got = probe(&h, addr).await;
    assert!(got.ok, "{got:?}");
    assert_eq!(got.reason, "no refusal within 150ms");
    assert!(got.duration >= Duration::from_millis(150));
    assert_eq!(received.load(SeqCst), 1, "an empty datagram is still sent");

    let got = probe(&h, closed_udp_port()).await;
    assert!(!got.ok, "{got:?}");
    assert_eq!(got.reason, "connection refused");
    assert!(got.duration < Duration::from_secs(1));
}

#[tokio::test]
async fn udp_probe_with_expect_to_a_closed_port_is_refused() {
    let mut h = health(HealthKind::Udp);
    h.send = Some("ping".to_owned());
    h.expect = Some("pong".to_owned());
    let got = probe(&h, closed_udp_port()).await;
    assert!(!got.ok);
    assert_eq!(got.reason, "connection refused");
}

#[tokio::test]
async fn udp_probe_without_expect_takes_any_reply() {
    let (addr, _, _server) = udp_server(Some(b"whatever")).await;
    let got = probe(&health(HealthKind::Udp), addr).await;
    assert!(got.ok);
    assert_eq!(got.reason, "reply received");
}

#[tokio::test]
async fn none_probe_does_nothing() {
    let h = health(HealthKind::None);
    let prober = Prober::new(&h).unwrap();
    assert!(!prober.is_active());
}
