//! A black-box fuzz harness of the admin endpoint: it starts an
//! [`AdminServer`] on a 127.0.0.1 listener with a small fake [`AdminApi`]
//! and sends the input over a real TCP connection, in chunks. It uses only
//! the crate's public API, so it keeps working whatever serves HTTP inside.
//! Shared by the bolero tests below (bounded, in `cargo test`) and the
//! cargo-fuzz target `admin_request` (long runs, see docs/fuzzing.md).
//! Compiled only for tests and with the `fuzzing` feature.
//!
//! Input: one byte of chunk plan, then the request bytes; after the last
//! chunk the client closes its sending side. Checked: the server answers an
//! HTTP/1.1 status line, or resets the connection, within its time limit
//! plus a second; it never just closes without answering (a panicking
//! handler does that) and never stays silent.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use prometheus::{IntCounter, Registry};
use tokio_util::sync::CancellationToken;

use crate::{
    Access, AdminApi, AdminServer, ApiError, BackendStatus, ServiceStatus, Status, VrrpStatus,
};

/// The admin endpoint cuts a request off after 5 s; a second more for the answer.
const ANSWER_WITHIN: Duration = Duration::from_secs(6);

/// Runs one input; panics on a broken property.
pub fn request_in_chunks(input: &[u8]) {
    let Some((&plan, bytes)) = input.split_first() else {
        return;
    };
    let started = Instant::now();
    let mut stream = TcpStream::connect(server()).expect("the fuzzed admin server accepts");
    stream.set_nodelay(true).expect("set TCP_NODELAY");
    stream
        .set_read_timeout(Some(ANSWER_WITHIN))
        .expect("set a read timeout");
    stream
        .set_write_timeout(Some(ANSWER_WITHIN))
        .expect("set a write timeout");
    let mut reset = false;
    for chunk in chunks(plan, bytes) {
        // The server may answer and close before reading everything.
        if stream.write_all(chunk).is_err() {
            reset = true;
            break;
        }
    }
    let _ = stream.shutdown(Shutdown::Write);
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("no answer within {ANSWER_WITHIN:?} to {bytes:?}")
            }
            Err(_) => {
                reset = true;
                break;
            }
        }
        assert!(answer.len() <= 1 << 20, "answer larger than 1 MiB");
    }
    assert!(
        started.elapsed() <= ANSWER_WITHIN,
        "answered after {:?}",
        started.elapsed()
    );
    if answer.is_empty() {
        // A client that closes before a whole request head gets no answer
        // (as from nginx or HAProxy); one that sent a head always gets one.
        // Empty lines before a request line are skipped (RFC 9112 §2.2).
        let start = bytes.iter().position(|b| !matches!(b, b'\r' | b'\n'));
        // An HTTP/2 client (its preface) cannot read an HTTP/1 answer: the
        // HTTP/1-only endpoint closes on it, as hyper does.
        let http2 = start.is_some_and(|i| bytes[i..].starts_with(b"PRI * HTTP/2"));
        let whole_head =
            !http2 && start.is_some_and(|i| bytes[i..].windows(4).any(|w| w == b"\r\n\r\n"));
        assert!(
            reset || !whole_head,
            "closed without an answer to {bytes:?}"
        );
        return;
    }
    let head = &answer[..answer.len().min(13)];
    let status_line_ok = head.len() == 13
        && (head.starts_with(b"HTTP/1.1 ") || head.starts_with(b"HTTP/1.0 "))
        && head[9..12].iter().all(u8::is_ascii_digit)
        && head[12] == b' ';
    assert!(
        status_line_ok,
        "not a status line: {:?}",
        String::from_utf8_lossy(head)
    );
}

/// Pieces of 1 to 64 bytes, their sizes drawn from `plan`; plan 0: one piece.
fn chunks(plan: u8, bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut state = u32::from(plan) | 0x100;
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let size = match plan {
            0 => rest.len(),
            _ => 1 + (state >> 16) as usize % 64,
        };
        let (head, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        Some(head)
    })
}

/// The one server of this process, on its own thread and runtime.
fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the fuzzed admin server");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind 127.0.0.1:0");
                tx.send(
                    listener
                        .local_addr()
                        .expect("a bound listener has an address"),
                )
                .expect("the caller waits for the address");
                let registry = Registry::new();
                let counter = IntCounter::new("tandem_fuzz_requests_total", "requests")
                    .expect("a valid counter");
                registry
                    .register(Box::new(counter))
                    .expect("registered once");
                let server = AdminServer {
                    listener,
                    registry,
                    api: Arc::new(FakeApi),
                    access: Access::Loopback,
                };
                server.run(CancellationToken::new()).await;
            });
        });
        rx.recv().expect("the admin server thread starts")
    })
}

/// One service with one backend, one VRRP instance; reload and drain succeed
/// for the names it knows.
#[derive(Debug)]
struct FakeApi;

impl AdminApi for FakeApi {
    type ReloadError = std::io::Error;

    fn ready(&self) -> Result<(), crate::NotReady> {
        Ok(())
    }

    fn status(&self) -> Status {
        Status {
            version: "0.0.0-fuzz".to_owned(),
            config_file: "/etc/tandem/tandem.yaml".to_owned(),
            services: vec![ServiceStatus {
                name: "web".to_owned(),
                protocol: "tcp".to_owned(),
                listen: "127.0.0.1:8080".to_owned(),
                scheduler: "round_robin".to_owned(),
                backends: vec![BackendStatus {
                    name: "a".to_owned(),
                    address: "127.0.0.1:9000".to_owned(),
                    state: "up".to_owned(),
                    weight: 1,
                    ..BackendStatus::default()
                }],
                ..ServiceStatus::default()
            }],
            vrrp: vec![VrrpStatus {
                instance: "vip".to_owned(),
                state: "backup".to_owned(),
                ..VrrpStatus::default()
            }],
            ..Status::default()
        }
    }

    fn set_draining(&self, service: &str, backend: &str, _: bool) -> Result<(), ApiError> {
        if (service, backend) == ("web", "a") {
            Ok(())
        } else {
            Err(ApiError::NotFound(format!(
                "no backend {service}/{backend}"
            )))
        }
    }

    fn set_maintenance(&self, _: bool) -> Result<(), ApiError> {
        Ok(())
    }

    async fn reload(&self) -> Result<String, std::io::Error> {
        // A real reload takes a moment: long enough for a half-closed
        // client's end of file to arrive before the answer.
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        Ok("no change".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::request_in_chunks;

    const SEEDS: [&[u8]; 6] = [
        b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9901\r\n\r\n",
        b"GET /status?format=table HTTP/1.1\r\nAccept: text/plain\r\n\r\n",
        b"POST /backends/web/a/drain HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        b"POST /reload HTTP/1.1\r\nAuthorization: Bearer x\r\n\r\n",
        b"GET /readyz HTTP/1.0\r\n\r\n",
        b"DELETE /healthz HTTP/1.1\r\n\r\nbody",
    ];

    /// Found by cargo-fuzz: empty lines alone are not a request, and a
    /// client that sends only them and closes gets no answer (as from nginx).
    #[test]
    fn empty_lines_then_a_close_need_no_answer() {
        request_in_chunks(b"\x04\r\n\r\n");
        request_in_chunks(b"\x00\r\n\r\nGET /healthz HTTP/1.1\r\n\r\n");
        request_in_chunks(b"\xe8PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    }

    /// Found by this harness after the move to hyper: a client that shuts
    /// down its write side after the request got no answer.
    #[test]
    fn a_half_closed_client_still_gets_its_answer() {
        for seed in SEEDS {
            let mut input = vec![0u8];
            input.extend_from_slice(seed);
            request_in_chunks(&input);
        }
    }

    #[test]
    fn random_requests_are_answered_in_time() {
        bolero::check!()
            .with_iterations(300)
            .for_each(|input: &[u8]| request_in_chunks(input));
    }

    #[test]
    fn mutated_real_requests_in_chunks_are_answered_in_time() {
        bolero::check!()
            .with_type::<(u8, u8, Vec<(u8, u8)>, Vec<u8>)>()
            .with_iterations(700)
            .for_each(|(plan, seed, edits, tail)| {
                let seed = SEEDS[usize::from(*seed) % SEEDS.len()];
                request_in_chunks(&test_support::fuzz::mutated(*plan, seed, edits, 3, tail));
            });
    }
}
