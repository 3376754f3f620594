//! The byte pump on real loopback sockets, in both modes.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tandem_core::{Backend, BackendAddress};
use tandem_forward::{Ending, Forwarder, Forwarding, RelayOptions, Relayed};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A client connected through `forwarder.relay` to a backend served by `backend_fn`.
struct Setup {
    client: TcpStream,
    relay: tokio::task::JoinHandle<Relayed>,
    stats: Arc<Backend>,
    cut: CancellationToken,
    /// The relay's backend-leg socket (a duplicate descriptor), to read its options.
    upstream: socket2::Socket,
}

async fn setup<F, Fut>(
    forwarder: &Forwarder,
    mode: Forwarding,
    idle: Duration,
    backend_fn: F,
) -> Setup
where
    F: FnOnce(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let backend_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend_listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (s, _) = backend_listener.accept().await.unwrap();
        backend_fn(s).await;
    });
    let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(front.local_addr().unwrap())
        .await
        .unwrap();
    let (accepted, _) = front.accept().await.unwrap();
    let upstream = std::net::TcpStream::connect(backend_addr).unwrap();
    upstream.set_nonblocking(true).unwrap();
    let upstream_probe = socket2::Socket::from(upstream.try_clone().unwrap());
    let upstream = TcpStream::from_std(upstream).unwrap();
    let stats = Arc::new(Backend::new(
        BackendAddress(backend_addr),
        None,
        NonZeroU32::MIN,
        false,
        true,
    ));
    let cut = CancellationToken::new();
    let relay = {
        let forwarder = forwarder.clone();
        let stats = Arc::clone(&stats);
        let cut = cut.clone();
        tokio::spawn(async move {
            let options = RelayOptions {
                mode,
                idle_timeout: idle,
                backend_keepalive: true,
            };
            forwarder
                .relay(&accepted, &upstream, options, &stats, &cut)
                .await
        })
    };
    Setup {
        client,
        relay,
        stats,
        cut,
        upstream: upstream_probe,
    }
}

async fn echo(mut s: TcpStream) {
    let (mut r, mut w) = s.split();
    let _ = tokio::io::copy(&mut r, &mut w).await;
    let _ = w.shutdown().await;
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

async fn round_trip(mode: Forwarding) {
    let forwarder = Forwarder::new();
    let payload = data(8 * 1024 * 1024 + 3);
    let s = setup(&forwarder, mode, Duration::from_secs(30), echo).await;
    let (mut r, mut w) = s.client.into_split();
    let p = payload.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&p).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::new();
    r.read_to_end(&mut back).await.unwrap();
    writer.await.unwrap();
    assert_eq!(Sha256::digest(&back), Sha256::digest(&payload));
    let relayed = s.relay.await.unwrap();
    assert_eq!(relayed.from_client, payload.len() as u64);
    assert_eq!(relayed.to_client, payload.len() as u64);
    assert!(
        matches!(relayed.ending, Ending::ClientClosed),
        "{:?}",
        relayed.ending
    );
    assert_eq!(s.stats.bytes_from_client(), payload.len() as u64);
    assert_eq!(s.stats.bytes_to_client(), payload.len() as u64);
    match mode {
        Forwarding::Splice => {
            // Bulk goes by splice; the first read of each burst is a copy.
            let moved = forwarder.spliced_bytes() + forwarder.copied_bytes();
            assert_eq!(moved, 2 * payload.len() as u64);
            assert!(
                forwarder.spliced_bytes() > payload.len() as u64,
                "spliced {} copied {}",
                forwarder.spliced_bytes(),
                forwarder.copied_bytes()
            );
            assert!(forwarder.idle_pipes() >= 1, "pipes go back to the pool");
        }
        Forwarding::Copy => {
            assert_eq!(forwarder.copied_bytes(), 2 * payload.len() as u64);
            assert_eq!(forwarder.spliced_bytes(), 0);
        }
        Forwarding::Nat => unreachable!("nat services have no relay; not a mode of this test"),
    }
}

#[tokio::test]
async fn splice_moves_every_byte_both_ways() {
    round_trip(Forwarding::Splice).await;
}

#[tokio::test]
async fn copy_moves_every_byte_both_ways() {
    round_trip(Forwarding::Copy).await;
}

#[tokio::test]
async fn small_messages_are_copied_even_in_splice_mode() {
    let forwarder = Forwarder::new();
    let s = setup(
        &forwarder,
        Forwarding::Splice,
        Duration::from_secs(30),
        echo,
    )
    .await;
    let mut client = s.client;
    for i in 0..50u32 {
        let msg = format!("request {i}\r\n");
        client.write_all(msg.as_bytes()).await.unwrap();
        let mut back = vec![0u8; msg.len()];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg.as_bytes());
    }
    client.shutdown().await.unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).await.unwrap();
    let relayed = s.relay.await.unwrap();
    assert_eq!(relayed.from_client, relayed.to_client);
    assert_eq!(forwarder.spliced_bytes(), 0);
    assert_eq!(forwarder.copied_bytes(), 2 * relayed.from_client);
    assert_eq!(forwarder.idle_pipes(), 0, "no pipe was ever taken");
}

#[tokio::test]
async fn a_direction_that_splices_goes_back_to_copying_small_messages() {
    let forwarder = Forwarder::new();
    let s = setup(
        &forwarder,
        Forwarding::Splice,
        Duration::from_secs(30),
        echo,
    )
    .await;
    let mut client = s.client;
    let bulk = data(4 * 1024 * 1024);
    let mut back = vec![0u8; bulk.len()];
    let (mut r, mut w) = client.split();
    let (wrote, read) = tokio::join!(w.write_all(&bulk), r.read_exact(&mut back));
    wrote.unwrap();
    read.unwrap();
    assert_eq!(back, bulk);
    let spliced = forwarder.spliced_bytes();
    assert!(spliced > 0);
    for i in 0..20u32 {
        let msg = format!("small {i}");
        client.write_all(msg.as_bytes()).await.unwrap();
        let mut echo = vec![0u8; msg.len()];
        client.read_exact(&mut echo).await.unwrap();
        assert_eq!(echo, msg.as_bytes());
    }
    // At most the first four small messages of each direction (SMALL_SPLICES)
    // may still be spliced; the other sixteen are copied.
    let late = forwarder.spliced_bytes() - spliced;
    assert!(
        late <= 2 * 4 * "small 0".len() as u64,
        "{late} bytes spliced"
    );
    drop(client);
    s.relay.await.unwrap();
}

async fn half_close(mode: Forwarding) {
    let forwarder = Forwarder::new();
    let s = setup(
        &forwarder,
        mode,
        Duration::from_secs(30),
        |mut b| async move {
            let mut got = Vec::new();
            b.read_to_end(&mut got).await.unwrap();
            b.write_all(format!("got {}", got.len()).as_bytes())
                .await
                .unwrap();
            b.shutdown().await.unwrap();
        },
    )
    .await;
    let mut client = s.client;
    client.write_all(&data(100_000)).await.unwrap();
    client.shutdown().await.unwrap();
    let mut reply = String::new();
    client.read_to_string(&mut reply).await.unwrap();
    assert_eq!(reply, "got 100000");
    let relayed = s.relay.await.unwrap();
    assert!(matches!(relayed.ending, Ending::ClientClosed));
}

/// A backend that answers, shuts down writing at once (its answer and FIN
/// reach the relay together) and still reads, as an HTTP server's lingering
/// close does: the client gets the answer and end of file, and every byte it
/// sends afterwards still reaches the backend.
#[tokio::test]
async fn backend_answer_and_fin_together_leave_the_upload_flowing() {
    for mode in [Forwarding::Splice, Forwarding::Copy] {
        let forwarder = Forwarder::new();
        let (got_tx, got_rx) = tokio::sync::oneshot::channel();
        let s = setup(
            &forwarder,
            mode,
            Duration::from_secs(30),
            |mut b| async move {
                b.write_all(b"early answer").await.unwrap();
                b.shutdown().await.unwrap();
                let mut got = Vec::new();
                b.read_to_end(&mut got).await.unwrap();
                let _ = got_tx.send(got);
            },
        )
        .await;
        let mut client = s.client;
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut answer))
            .await
            .expect("answer and end of file within 5 s")
            .unwrap();
        assert_eq!(answer, b"early answer", "{mode:?}");
        let upload = data(50_000);
        client.write_all(&upload).await.unwrap();
        client.shutdown().await.unwrap();
        let relayed = s.relay.await.unwrap();
        assert!(matches!(relayed.ending, Ending::BackendClosed), "{mode:?}");
        assert_eq!(relayed.from_client, 50_000);
        // The relay's streams are closed; the probe's duplicate descriptor
        // would keep the backend leg open.
        drop(s.upstream);
        let got = tokio::time::timeout(Duration::from_secs(5), got_rx)
            .await
            .expect("backend read to end within 5 s")
            .unwrap();
        assert!(got == upload, "{mode:?}: upload differs");
    }
}

#[tokio::test]
async fn half_close_passes_eof_and_keeps_reply_splice() {
    half_close(Forwarding::Splice).await;
}

#[tokio::test]
async fn half_close_passes_eof_and_keeps_reply_copy() {
    half_close(Forwarding::Copy).await;
}

#[tokio::test]
async fn idle_connection_is_closed_after_idle_timeout() {
    for mode in [Forwarding::Splice, Forwarding::Copy] {
        let forwarder = Forwarder::new();
        let s = setup(&forwarder, mode, Duration::from_millis(200), echo).await;
        let started = tokio::time::Instant::now();
        let relayed = tokio::time::timeout(Duration::from_secs(5), s.relay)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(relayed.ending, Ending::IdleTimeout));
        assert!(started.elapsed() >= Duration::from_millis(200));
        drop(s.client);
    }
}

#[tokio::test]
async fn cut_ends_the_relay_at_once() {
    let forwarder = Forwarder::new();
    let s = setup(
        &forwarder,
        Forwarding::Splice,
        Duration::from_secs(30),
        echo,
    )
    .await;
    s.cut.cancel();
    let relayed = tokio::time::timeout(Duration::from_secs(2), s.relay)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(relayed.ending, Ending::Cut));
    drop(s.client);
}

/// A backend that resets, right away or just after an answer (its answer and
/// RST back to back): the relay ends as a backend reset and the client sees a
/// reset too, never an orderly end of file, in both modes. (An answer may or
/// may not arrive before the reset; it can be dropped with it.)
#[tokio::test]
async fn backend_reset_becomes_client_reset() {
    for answer in [&b""[..], b"answer"] {
        for mode in [Forwarding::Splice, Forwarding::Copy] {
            let forwarder = Forwarder::new();
            let s = setup(
                &forwarder,
                mode,
                Duration::from_secs(30),
                move |mut b| async move {
                    let mut one = [0u8; 1];
                    b.read_exact(&mut one).await.unwrap();
                    b.write_all(answer).await.unwrap();
                    socket2::SockRef::from(&b)
                        .set_linger(Some(Duration::ZERO))
                        .unwrap();
                },
            )
            .await;
            let mut client = s.client;
            client.write_all(b"x").await.unwrap();
            let relayed = tokio::time::timeout(Duration::from_secs(5), s.relay)
                .await
                .expect("relay ends within 5 s")
                .unwrap();
            assert!(
                matches!(relayed.ending, Ending::BackendReset(_)),
                "{mode:?}, answer {answer:?}: {:?}",
                relayed.ending
            );
            let mut buf = Vec::new();
            let err = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut buf))
                .await
                .expect("client sees the end within 5 s")
                .unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{mode:?}");
        }
    }
}

#[tokio::test]
async fn backend_keepalive_is_switched_on_once_the_connection_lasts() {
    let forwarder = Forwarder::new();
    let mut s = setup(
        &forwarder,
        Forwarding::Splice,
        Duration::from_secs(30),
        echo,
    )
    .await;
    s.client.write_all(b"ping").await.unwrap();
    let mut got = [0u8; 4];
    s.client.read_exact(&mut got).await.unwrap();
    assert!(
        !s.upstream.keepalive().unwrap(),
        "a short connection is spared it"
    );
    // Bounded: 3 s at most.
    let mut on = false;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if s.upstream.keepalive().unwrap() {
            on = true;
            break;
        }
    }
    assert!(on, "keepalive still off after 3 s");
    assert_eq!(
        s.upstream.keepalive_time().unwrap(),
        tandem_forward::KEEPALIVE_TIME
    );
    assert_eq!(
        s.upstream.keepalive_interval().unwrap(),
        tandem_forward::KEEPALIVE_INTERVAL
    );
    assert_eq!(
        s.upstream.keepalive_retries().unwrap(),
        tandem_forward::KEEPALIVE_RETRIES
    );
    // The idle checks still run on their own schedule: the relay is alive.
    s.client.write_all(b"pong").await.unwrap();
    s.client.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"pong");
    s.cut.cancel();
    s.relay.await.unwrap();
}

#[tokio::test]
async fn backend_keepalive_is_on_at_once_when_idle_checks_come_sooner() {
    let forwarder = Forwarder::new();
    // idle_timeout 2 s: idle checks every 0.5 s, before the keepalive timer.
    let s = setup(&forwarder, Forwarding::Copy, Duration::from_secs(2), echo).await;
    let mut on = false;
    for _ in 0..20 {
        if s.upstream.keepalive().unwrap() {
            on = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(on, "keepalive not set within 200 ms");
    s.cut.cancel();
    s.relay.await.unwrap();
}

/// A response followed at once by the backend's close reaches the client
/// whole, then end of file, in both modes (the relay sends such last bytes
/// with MSG_MORE so that they leave with the FIN).
#[tokio::test]
async fn last_bytes_then_close_arrive_whole_then_eof() {
    for mode in [Forwarding::Splice, Forwarding::Copy] {
        for size in [1usize, 145, 16 * 1024 - 1, 16 * 1024, 100 * 1024] {
            let forwarder = Forwarder::new();
            let body: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let sent = body.clone();
            let mut s = setup(
                &forwarder,
                mode,
                Duration::from_secs(30),
                move |mut b| async move {
                    let mut req = [0u8; 3];
                    b.read_exact(&mut req).await.unwrap();
                    b.write_all(&sent).await.unwrap();
                    // Dropped: data and FIN back to back.
                },
            )
            .await;
            s.client.write_all(b"GET").await.unwrap();
            let mut got = Vec::new();
            tokio::time::timeout(Duration::from_secs(5), s.client.read_to_end(&mut got))
                .await
                .expect("end of file within 5 s")
                .unwrap();
            assert_eq!(got.len(), size, "{mode:?} {size}");
            assert!(got == body, "{mode:?} {size}: bytes differ");
            drop(s.client);
            let relayed = s.relay.await.unwrap();
            assert_eq!(relayed.to_client, size as u64);
        }
    }
}
