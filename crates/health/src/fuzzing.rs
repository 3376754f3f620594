//! The fuzz harness of the HTTP response reader of http and https probes,
//! shared by the bolero tests below (bounded, in `cargo test`) and the
//! cargo-fuzz target `health_http` (long runs, see docs/fuzzing.md). Compiled
//! only for tests and with the `fuzzing` feature.
//!
//! Input: one byte of chunk plan, then what a backend answers. The answer
//! arrives in chunks of 1 to 64 bytes from an in-memory stream, so every
//! read boundary of the reader is exercised without sockets. Checked beyond
//! "no panic": a response has a status in 100..=999 and at most `BODY_CAP`
//! bytes of body, and the result is the same as when the answer arrives in
//! one piece.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http::{self, BODY_CAP};

/// Runs one input; panics on a broken property.
pub fn response_in_chunks(input: &[u8]) {
    let Some((&plan, answer)) = input.split_first() else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime without drivers builds");
    let split = runtime.block_on(exchange(Peer::new(answer, plan)));
    let whole = runtime.block_on(exchange(Peer::new(answer, 0)));
    if let Ok(r) = &split {
        assert!((100..=999).contains(&r.status), "status {}", r.status);
        assert!(r.body.len() <= BODY_CAP);
    }
    assert_eq!(split, whole, "chunked and whole answers differ");
}

async fn exchange(mut peer: Peer<'_>) -> Result<http::Response, String> {
    let request = http::request("/readyz", "backend:6443");
    http::exchange(&mut peer, &request)
        .await
        .map_err(|e| e.to_string())
}

/// A backend that answers `answer`, `plan` deciding the chunk sizes (0: as
/// much as the reader asks for), then closes.
struct Peer<'a> {
    answer: &'a [u8],
    plan: u32,
}

impl<'a> Peer<'a> {
    fn new(answer: &'a [u8], plan: u8) -> Self {
        Peer {
            answer,
            plan: u32::from(plan),
        }
    }
}

impl AsyncRead for Peer<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut n = buf.remaining().min(self.answer.len());
        if self.plan != 0 {
            self.plan = self.plan.wrapping_mul(1_103_515_245).wrapping_add(12_345) | 1;
            n = n.min(1 + (self.plan >> 16) as usize % 64);
        }
        let (now, later) = self.answer.split_at(n);
        buf.put_slice(now);
        self.answer = later;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Peer<'_> {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::response_in_chunks;

    const SEEDS: [&[u8]; 5] = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n2\r\nde\r\n0\r\nT: 1\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nnope",
        b"HTTP/1.0 500 Oops\r\nServer: x\r\n\r\nuntil the end",
        b"HTTP/1.1 204 No Content\r\n\r\n",
    ];

    #[test]
    fn random_answers_keep_every_property() {
        bolero::check!()
            .with_iterations(3_000)
            .for_each(|input: &[u8]| response_in_chunks(input));
    }

    #[test]
    fn mutated_real_answers_in_chunks_keep_every_property() {
        bolero::check!()
            .with_type::<(u8, u8, Vec<(u8, u8)>, Vec<u8>)>()
            .with_iterations(5_000)
            .for_each(|(plan, seed, edits, tail)| {
                let seed = SEEDS[usize::from(*seed) % SEEDS.len()];
                response_in_chunks(&test_support::fuzz::mutated(*plan, seed, edits, 3, tail));
            });
    }

    #[test]
    fn line_and_chunk_verdicts_do_not_depend_on_how_the_bytes_arrive() {
        // Found by this harness: the end of a chunk and over-long lines were
        // judged on what had arrived so far, giving different errors.
        let mut long_line = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;".to_vec();
        long_line.extend([b'x'; 1100]);
        long_line.extend(b"\r\nz\r\n0\r\n\r\n");
        let data_too_long: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcdefgh\r\n0\r\n\r\n";
        for plan in 0..=255u8 {
            for answer in [&long_line[..], data_too_long] {
                response_in_chunks(&[&[plan][..], answer].concat());
            }
        }
    }
}
