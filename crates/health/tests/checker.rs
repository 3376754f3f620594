//! The checker as the binary runs it: transitions, subscription, passive
//! ejection, reload, shutdown, log lines.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use common::*;
use tandem_config::{HealthKind, InitialState};
use tandem_core::{Backend, BackendState};
use tandem_health::{Checker, ProbeReport};
use tokio::net::TcpListener;
use tokio::sync::broadcast::error::TryRecvError;
use tokio_util::sync::CancellationToken;

/// A TCP listener that accepts and closes, counting connections.
async fn counting_tcp() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind((LOOPBACK, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&count);
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            c.fetch_add(1, SeqCst);
            drop(s);
        }
    });
    (addr, count)
}

fn start(checker: Checker) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let run = tokio::spawn(checker.run(stop.clone()));
    (stop, run)
}

async fn finish(stop: CancellationToken, run: tokio::task::JoinHandle<()>) {
    stop.cancel();
    bounded("checker to stop", run).await.unwrap();
}

#[tokio::test]
async fn subscription_receives_exactly_one_transition_per_change() {
    let state = HttpState::new(200, "ok");
    let (addr, _server) = http_server(state.clone()).await;
    let b = backend(addr);
    let checker = Checker::new("web", &health(HealthKind::Http), vec![b.clone()]).unwrap();
    let mut rx = checker.subscribe();
    let mut rx2 = checker.handle().subscribe();
    let (stop, run) = start(checker);

    let mut seen = Vec::new();
    seen.push(next_transition(&mut rx).await);
    state.set(503);
    seen.push(next_transition(&mut rx).await);
    state.set(200);
    seen.push(next_transition(&mut rx).await);
    // Several more intervals with no change: nothing more arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));

    let pairs: Vec<_> = seen.iter().map(|t| (t.from, t.to)).collect();
    use BackendState::{Down, Up};
    assert_eq!(pairs, [(Down, Up), (Up, Down), (Down, Up)]);
    assert_eq!(seen[1].reason, "status 503");
    for t in &seen {
        assert_eq!(
            &rx2.try_recv().unwrap(),
            t,
            "every subscriber sees the same"
        );
    }
    assert!(matches!(rx2.try_recv(), Err(TryRecvError::Empty)));
    assert!(b.is_up());
    finish(stop, run).await;
}

/// What the listener does on a failed connect.
fn listener_connect_failed(b: &Backend, h: &tandem_config::Health) {
    if h.should_eject(b.record_connect_failure(tandem_core::ConnectFailure::Refused)) {
        b.set_up(false);
    }
}

#[tokio::test]
async fn passive_ejection_is_noticed_and_recovered_after_rise_probes() {
    let (addr, _) = counting_tcp().await;
    let mut h = health(HealthKind::Tcp);
    h.initial = InitialState::Up;
    h.rise = n(3);
    h.eject_after = Some(n(3));
    let b = backend(addr);
    let checker = Checker::new("api", &h, vec![b.clone()]).unwrap();
    let reports: Arc<Mutex<Vec<ProbeReport>>> = Arc::default();
    let r = Arc::clone(&reports);
    checker
        .handle()
        .set_probe_observer(Some(Arc::new(move |p: &ProbeReport| {
            r.lock().unwrap().push(p.clone())
        })));
    let mut rx = checker.subscribe();
    let (stop, run) = start(checker);
    wait_until("a first probe", || !reports.lock().unwrap().is_empty()).await;

    listener_connect_failed(&b, &h);
    listener_connect_failed(&b, &h);
    assert!(b.is_up(), "two failures are below eject_after");
    listener_connect_failed(&b, &h);
    assert!(!b.is_up(), "the third failure ejects");

    let t = next_transition(&mut rx).await;
    assert_eq!((t.from, t.to), (BackendState::Up, BackendState::Down));
    assert_eq!(t.reason, "ejected after 3 consecutive connect failures");
    let t2 = next_transition(&mut rx).await;
    assert_eq!((t2.from, t2.to), (BackendState::Down, BackendState::Up));
    assert_eq!(t2.reason, "connected");
    assert!(b.is_up());

    // Only successful probes after the ejection, at least `rise` of them,
    // the last one bringing it up.
    let after: Vec<ProbeReport> = reports
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p.at >= t.at)
        .cloned()
        .collect();
    let until_up = after.iter().position(|p| p.up).expect("a report with up") + 1;
    assert!(until_up >= 3, "{after:?}");
    assert!(after[..until_up].iter().all(|p| p.ok));
    // Recovery resets the listener's count: one more failure does not eject.
    listener_connect_failed(&b, &h);
    assert!(b.is_up());
    finish(stop, run).await;
}

#[tokio::test]
async fn update_keeps_backends_that_stay_and_stops_removed_ones() {
    let (a1, _) = counting_tcp().await;
    let (a2, count2) = counting_tcp().await;
    let (a3, _) = counting_tcp().await;
    let (b1, b2, b3) = (backend(a1), backend(a2), backend(a3));
    let h = health(HealthKind::Tcp);
    let checker = Checker::new("svc", &h, vec![b1.clone(), b2.clone()]).unwrap();
    let handle = checker.handle();
    let mut rx = checker.subscribe();
    let (stop, run) = start(checker);
    wait_until("both up", || b1.is_up() && b2.is_up()).await;
    next_transition(&mut rx).await;
    next_transition(&mut rx).await;

    let mut h2 = h.clone();
    h2.rise = n(4);
    h2.fall = n(5);
    handle.update(&h2, vec![b1.clone(), b3.clone()]).unwrap();
    assert!(b1.is_up(), "a backend that stays keeps its state");
    assert!(!b3.is_up(), "a new backend starts at `initial`");
    let t = next_transition(&mut rx).await;
    assert_eq!(t.backend, a3.to_string());
    assert_eq!(t.to, BackendState::Up);

    // b2 is no longer probed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let frozen = count2.load(SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(count2.load(SeqCst), frozen);
    let results: Vec<String> = handle
        .last_results()
        .into_iter()
        .map(|r| r.backend)
        .collect();
    assert_eq!(results, [a1.to_string(), a3.to_string()]);
    assert!(
        matches!(rx.try_recv(), Err(TryRecvError::Empty)),
        "b1 did not flap"
    );
    finish(stop, run).await;
}

#[tokio::test]
async fn update_with_an_unusable_ca_file_changes_nothing() {
    let (addr, _) = counting_tcp().await;
    let b = backend(addr);
    let checker = Checker::new("svc", &health(HealthKind::Tcp), vec![b.clone()]).unwrap();
    let handle = checker.handle();
    let (stop, run) = start(checker);
    wait_until("up", || b.is_up()).await;
    let mut bad = health(HealthKind::Https);
    bad.tls.verify = true;
    bad.tls.ca_file = Some("/nonexistent/ca.crt".into());
    let other = backend(test_support::free_addr());
    let e = handle.update(&bad, vec![other.clone()]).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/ca.crt"));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(b.is_up());
    assert_eq!(handle.last_results().len(), 1);
    assert_eq!(handle.last_results()[0].backend, addr.to_string());
    finish(stop, run).await;
}

#[tokio::test]
async fn switching_to_none_brings_down_backends_up() {
    let b = backend(test_support::free_addr());
    let checker = Checker::new("svc", &health(HealthKind::Tcp), vec![b.clone()]).unwrap();
    let handle = checker.handle();
    let mut rx = checker.subscribe();
    let (stop, run) = start(checker);
    wait_until("a failed probe", || !handle.last_results().is_empty()).await;
    assert!(!b.is_up());
    handle
        .update(&health(HealthKind::None), vec![b.clone()])
        .unwrap();
    let t = next_transition(&mut rx).await;
    assert_eq!(t.to, BackendState::Up);
    assert_eq!(t.reason, "health checks turned off");
    assert!(b.is_up());
    finish(stop, run).await;
}

#[tokio::test]
async fn none_runs_no_probes_and_leaves_backends_up() {
    let (addr, count) = counting_tcp().await;
    let b = backend(addr);
    let checker = Checker::new("svc", &health(HealthKind::None), vec![b.clone()]).unwrap();
    assert!(b.is_up(), "`initial` is up for `none`");
    let handle = checker.handle();
    let mut rx = checker.subscribe();
    let (stop, run) = start(checker);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(count.load(SeqCst), 0);
    assert!(handle.last_results().is_empty());
    assert!(b.is_up());
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    finish(stop, run).await;
}

#[tokio::test]
async fn shutdown_drops_a_probe_in_flight() {
    let server = test_support::HoldServer::start().await;
    let addr = server.addr();
    let mut h = health(HealthKind::Http);
    h.interval = Duration::from_millis(1);
    h.timeout = Duration::from_secs(30);
    let checker = Checker::new("svc", &h, vec![backend(addr)]).unwrap();
    let (stop, run) = start(checker);
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(2), run)
        .await
        .expect("run ends promptly")
        .unwrap();
}

#[tokio::test]
async fn first_probes_of_many_backends_are_spread() {
    let (addr, _) = counting_tcp().await;
    let mut h = health(HealthKind::Tcp);
    h.interval = Duration::from_millis(400);
    let backends: Vec<_> = (0..20).map(|_| backend(addr)).collect();
    let checker = Checker::new("svc", &h, backends).unwrap();
    let handle = checker.handle();
    let t0 = SystemTime::now();
    let (stop, run) = start(checker);
    wait_until("every backend probed", || handle.last_results().len() == 20).await;
    let firsts: Vec<Duration> = handle
        .last_results()
        .iter()
        .map(|r| r.at.duration_since(t0).unwrap())
        .collect();
    let spread = *firsts.iter().max().unwrap() - *firsts.iter().min().unwrap();
    assert!(spread > Duration::from_millis(40), "{firsts:?}");
    assert!(handle
        .last_results()
        .iter()
        .all(|r| r.ok && r.duration < Duration::from_millis(400)));
    finish(stop, run).await;
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn each_transition_is_one_log_line_at_warn_or_info() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    // Current-thread test runtime: every task logs on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);

    let state = HttpState::new(200, "ok");
    let (addr, _server) = http_server(state.clone()).await;
    let b = Arc::new(Backend::new(
        tandem_core::BackendAddress(addr),
        Some("apiserver-1"),
        n(1),
        false,
        false,
    ));
    let mut h = health(HealthKind::Http);
    h.expect_body = Some("ok".to_owned());
    let checker = Checker::new("kube-apiserver", &h, vec![b.clone()]).unwrap();
    let mut rx = checker.subscribe();
    let (stop, run) = start(checker);
    next_transition(&mut rx).await;
    *state.body.lock().unwrap() = "not yet".to_owned();
    next_transition(&mut rx).await;
    finish(stop, run).await;

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains(" -> ")).collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].contains(" INFO "), "{}", lines[0]);
    assert!(
        lines[0].ends_with(
            "backend down -> up service=kube-apiserver backend=apiserver-1 reason=\"status 200\""
        ),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains(" WARN "), "{}", lines[1]);
    assert!(
        lines[1].ends_with(
            "backend up -> down service=kube-apiserver backend=apiserver-1 reason=\"body does not contain \\\"ok\\\"\""
        ),
        "{}",
        lines[1]
    );
    println!("{text}");
}
