//! Test servers on 127.0.0.1 and helpers shared by the integration tests.
//! Every server here listens on loopback only and every wait is bounded.

#![allow(dead_code, unused_imports)]

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use tandem_config::{Health, HealthKind, InitialState, Tls};
use tandem_core::{Backend, BackendAddress};
use tandem_health::Transition;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UdpSocket};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

pub const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The longest any test waits for anything.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn health(kind: HealthKind) -> Health {
    let mut h = Health::defaults(kind);
    h.interval = Duration::from_millis(50);
    h.timeout = Duration::from_millis(500);
    h.fall = NonZeroU32::new(2).unwrap();
    h.path = "/readyz".to_owned();
    h.tls.verify = false;
    h
}

pub fn backend(addr: SocketAddr) -> Arc<Backend> {
    Arc::new(Backend::new(
        BackendAddress(addr),
        None,
        NonZeroU32::MIN,
        false,
        false,
    ))
}

pub fn n(v: u32) -> NonZeroU32 {
    NonZeroU32::new(v).unwrap()
}

/// Polls `cond` every 5 ms until it holds; panics after [`WAIT`].
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The next transition, or a panic after [`WAIT`].
pub async fn next_transition(rx: &mut broadcast::Receiver<Transition>) -> Transition {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("timed out waiting for a transition")
        .expect("transition channel closed or lagged")
}

pub async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

pub fn closed_udp_port() -> SocketAddr {
    let s = std::net::UdpSocket::bind((LOOPBACK, 0)).unwrap();
    s.local_addr().unwrap()
}

/// A UDP server: replies `reply` to every datagram (or nothing when `None`).
pub async fn udp_server(
    reply: Option<&'static [u8]>,
) -> (SocketAddr, Arc<AtomicUsize>, JoinHandle<()>) {
    let socket = UdpSocket::bind((LOOPBACK, 0)).await.unwrap();
    let addr = socket.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&received);
    let task = tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((_, from)) = socket.recv_from(&mut buf).await {
            count.fetch_add(1, SeqCst);
            if let Some(reply) = reply {
                let _ = socket.send_to(reply, from).await;
            }
        }
    });
    (addr, received, task)
}

pub use test_support::{http_server, https_server, HttpState, Pki};
