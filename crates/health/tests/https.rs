//! The kube-apiserver probe: `https` GET /readyz against a tokio-rustls server
//! with a CA and a leaf for `kubernetes` and 127.0.0.1 made by rcgen.

mod common;

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use common::*;
use tandem_config::{Health, HealthKind, InitialState};
use tandem_core::{BackendAddress, BackendState};
use tandem_health::{Checker, Prober};
use tokio_util::sync::CancellationToken;

fn https(pki: &Pki, verify: bool) -> Health {
    let mut h = health(HealthKind::Https);
    h.tls.verify = verify;
    if verify {
        h.tls.ca_file = Some(pki.ca_file.clone());
    }
    h
}

#[tokio::test]
async fn readyz_toggling_drives_the_backend_down_and_up() {
    let pki = Pki::new();
    let state = HttpState::new(200, "ok");
    let (addr, _server) = https_server(pki.server_config(false), state.clone()).await;
    let mut h = https(&pki, true);
    h.tls.server_name = Some("kubernetes".to_owned());
    h.expect_body = Some("ok".to_owned());
    h.rise = n(2);
    h.fall = n(3);
    let b = backend(addr);
    let checker = Checker::new("kube-apiserver", &h, vec![b.clone()]).unwrap();
    let handle = checker.handle();
    let mut rx = checker.subscribe();
    let stop = CancellationToken::new();
    let run = tokio::spawn(checker.run(stop.clone()));

    assert!(!b.is_up(), "a probed backend starts down");
    let t = next_transition(&mut rx).await;
    assert_eq!((t.from, t.to), (BackendState::Down, BackendState::Up));
    assert_eq!(t.reason, "status 200");
    assert!(b.is_up());
    let ok_before = state.requests().len();
    assert!(ok_before >= 2, "rise 2 needs two successful probes");

    state.set(500);
    let t = next_transition(&mut rx).await;
    assert_eq!((t.from, t.to), (BackendState::Up, BackendState::Down));
    assert_eq!(t.reason, "status 500");
    assert_eq!(t.service, "kube-apiserver");
    assert_eq!(t.backend, addr.to_string());
    assert_eq!(t.address, BackendAddress(addr));
    assert!(!b.is_up());
    // fall 3: at least three failing probes after the toggle.
    let reports = handle.last_results();
    assert_eq!(reports.len(), 1);
    assert!(!reports[0].ok && !reports[0].up);
    assert_eq!(reports[0].reason, "status 500");

    state.set(200);
    let t = next_transition(&mut rx).await;
    assert_eq!((t.from, t.to), (BackendState::Down, BackendState::Up));
    assert!(b.is_up());

    // Every probe ended with close_notify from the client.
    let requests = state.requests();
    assert!(requests[0].starts_with("GET /readyz HTTP/1.1\r\n"));
    assert!(requests[0].contains(&format!("\r\nHost: kubernetes:{}\r\n", addr.port())));
    wait_until("the server to see clean TLS closes", || {
        state.clean_closes.load(SeqCst) + 1 >= state.requests().len()
    })
    .await;
    assert!(state.handshake_errors.lock().unwrap().is_empty());

    stop.cancel();
    bounded("checker to stop", run).await.unwrap();
}

/// Runs a checker that starts up with fall 1 and returns the first transition.
async fn first_transition(h: &Health, addr: std::net::SocketAddr) -> tandem_health::Transition {
    let mut h = h.clone();
    h.initial = InitialState::Up;
    h.fall = n(1);
    h.rise = n(1);
    let b = backend(addr);
    let checker = Checker::new("kube-apiserver", &h, vec![b.clone()]).unwrap();
    let mut rx = checker.subscribe();
    let stop = CancellationToken::new();
    let run = tokio::spawn(checker.run(stop.clone()));
    let t = next_transition(&mut rx).await;
    stop.cancel();
    bounded("checker to stop", run).await.unwrap();
    assert_eq!(b.is_up(), t.to == BackendState::Up);
    t
}

#[tokio::test]
async fn wrong_ca_marks_the_backend_down_with_the_tls_error() {
    let pki = Pki::new();
    let (addr, _server) = https_server(pki.server_config(false), HttpState::new(200, "ok")).await;
    let mut h = https(&pki, true);
    h.tls.ca_file = Some(pki.other_ca_file.clone());
    let t = first_transition(&h, addr).await;
    assert_eq!((t.from, t.to), (BackendState::Up, BackendState::Down));
    assert_eq!(t.reason, "tls: invalid peer certificate: UnknownIssuer");
}

#[tokio::test]
async fn wrong_server_name_marks_the_backend_down_with_the_tls_error() {
    let pki = Pki::new();
    let (addr, _server) = https_server(pki.server_config(false), HttpState::new(200, "ok")).await;
    let mut h = https(&pki, true);
    h.tls.server_name = Some("etcd.example".to_owned());
    let t = first_transition(&h, addr).await;
    assert_eq!(t.to, BackendState::Down);
    assert!(
        t.reason.starts_with(
            "tls: invalid peer certificate: certificate not valid for name \"etcd.example\""
        ),
        "{}",
        t.reason
    );
}

#[tokio::test]
async fn right_ca_and_name_pass_verification() {
    let pki = Pki::new();
    let (addr, _server) = https_server(pki.server_config(false), HttpState::new(200, "ok")).await;
    for name in [Some("kubernetes"), None] {
        // Without server_name the backend's IP is verified (the leaf has 127.0.0.1).
        let mut h = https(&pki, true);
        h.tls.server_name = name.map(str::to_owned);
        let got = Prober::new(&h).unwrap().probe(BackendAddress(addr)).await;
        assert!(got.ok, "{name:?}: {got:?}");
        assert_eq!(got.reason, "status 200");
    }
}

#[tokio::test]
async fn verify_false_accepts_any_certificate() {
    let pki = Pki::new();
    let (addr, _server) = https_server(pki.server_config(false), HttpState::new(200, "ok")).await;
    let mut h = https(&pki, false);
    h.tls.server_name = Some("not-in-the-certificate.example".to_owned());
    let got = Prober::new(&h).unwrap().probe(BackendAddress(addr)).await;
    assert!(got.ok, "{got:?}");

    // The checker brings it up.
    let b = backend(addr);
    let checker = Checker::new("api", &https(&pki, false), vec![b.clone()]).unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(checker.run(stop.clone()));
    wait_until("backend up", || b.is_up()).await;
    stop.cancel();
    bounded("checker to stop", run).await.unwrap();
}

#[tokio::test]
async fn client_certificate_required_by_the_server() {
    let pki = Pki::new();
    let state = HttpState::new(200, "ok");
    let (addr, _server) = https_server(pki.server_config(true), state.clone()).await;

    let mut with_cert = https(&pki, true);
    with_cert.tls.server_name = Some("kubernetes".to_owned());
    with_cert.tls.cert_file = Some(pki.client_cert_file.clone());
    with_cert.tls.key_file = Some(pki.client_key_file.clone());
    let b = backend(addr);
    let checker = Checker::new("api", &with_cert, vec![b.clone()]).unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(checker.run(stop.clone()));
    wait_until("backend with a client certificate up", || b.is_up()).await;
    stop.cancel();
    bounded("checker to stop", run).await.unwrap();

    let mut without = with_cert.clone();
    without.tls.cert_file = None;
    without.tls.key_file = None;
    let t = first_transition(&without, addr).await;
    assert_eq!(t.to, BackendState::Down);
    assert!(
        t.reason
            .starts_with("tls: received fatal alert: CertificateRequired"),
        "{}",
        t.reason
    );
    assert!(!state.handshake_errors.lock().unwrap().is_empty());
}

#[tokio::test]
async fn https_probe_times_out_in_the_handshake() {
    let server = test_support::HoldServer::start().await;
    let addr = server.addr();
    let mut h = health(HealthKind::Https);
    h.timeout = Duration::from_millis(150);
    let got = Prober::new(&h).unwrap().probe(BackendAddress(addr)).await;
    assert!(!got.ok);
    assert_eq!(got.reason, "timed out after 150ms in the tls handshake");
}

#[tokio::test]
async fn https_probe_to_a_plain_http_server_fails_cleanly() {
    // What a plain HTTP server answers to a ClientHello: a 400, then close.
    let listener = tokio::net::TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        }
    });
    let got = Prober::new(&health(HealthKind::Https))
        .unwrap()
        .probe(BackendAddress(addr))
        .await;
    assert!(!got.ok);
    assert!(
        got.reason.starts_with("tls: received corrupt message"),
        "{}",
        got.reason
    );
}

#[tokio::test]
async fn unreadable_ca_file_is_an_error_at_build_time() {
    let mut h = health(HealthKind::Https);
    h.tls.verify = true;
    h.tls.ca_file = Some("/nonexistent/pki/ca.crt".into());
    let b = backend(test_support::free_addr());
    let e = Checker::new("api", &h, vec![b]).unwrap_err().to_string();
    assert!(e.contains("/nonexistent/pki/ca.crt"), "{e}");
}
