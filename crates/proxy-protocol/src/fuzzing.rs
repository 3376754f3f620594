//! The fuzz harness of [`decode`], shared by the bolero test below (bounded,
//! in `cargo test`) and the cargo-fuzz target `proxy_protocol` (long runs,
//! see docs/fuzzing.md). Compiled only for tests and with the `fuzzing`
//! feature.
//!
//! Input: one byte of chunk plan, then the bytes a client sends. The bytes
//! arrive in chunks, as a listener reads them, and are decoded after every
//! chunk from the start of what has arrived. Checked beyond "no panic":
//! - the verdict does not depend on how the bytes were split (the first
//!   non-`Incomplete` answer is the answer for the whole input);
//! - a `Complete` header is at most [`MAX_HEADER_LEN`] and at most what arrived;
//! - `MAX_HEADER_LEN` bytes are always enough for a verdict;
//! - what was decoded encodes and decodes back to the same header.

use crate::{decode, encode, DecodeError, Decoded, Version, MAX_HEADER_LEN};

/// Runs one input; panics on a broken property.
pub fn decode_in_chunks(input: &[u8]) {
    let Some((&plan, bytes)) = input.split_first() else {
        return;
    };
    let whole = decode(bytes);
    check_bounds(bytes, &whole);
    let mut seen = 0;
    let mut verdict = None;
    for (i, chunk) in chunks(plan, bytes).enumerate() {
        seen += chunk.len();
        let got = decode(&bytes[..seen]);
        check_bounds(&bytes[..seen], &got);
        if got != Ok(Decoded::Incomplete) {
            verdict = Some(got);
            break;
        }
        assert!(i <= bytes.len(), "chunks must advance");
    }
    let verdict = verdict.unwrap_or(Ok(Decoded::Incomplete));
    assert_eq!(
        same_verdict(&verdict),
        same_verdict(&whole),
        "split reads and one read disagree on {bytes:?}"
    );
    if let Ok(Decoded::Complete { header, length }) = whole {
        let version = if bytes.starts_with(b"PROXY ") {
            Version::V1
        } else {
            Version::V2
        };
        let mut out = Vec::new();
        encode(version, &header, &mut out);
        let Ok(Decoded::Complete { header: back, .. }) = decode(&out) else {
            panic!("{header:?} encoded as {out:?} does not decode");
        };
        let mut again = Vec::new();
        encode(version, &back, &mut again);
        assert_eq!(out, again, "encode/decode is not stable for {header:?}");
        assert!(length <= bytes.len());
    }
}

/// An error is an error whatever its text: a longer read may find another fault first.
fn same_verdict(r: &Result<Decoded, DecodeError>) -> Result<Decoded, ()> {
    r.clone().map_err(|_| ())
}

fn check_bounds(buf: &[u8], got: &Result<Decoded, DecodeError>) {
    match got {
        Ok(Decoded::Complete { length, .. }) => {
            assert!(
                *length <= buf.len() && *length <= MAX_HEADER_LEN,
                "{length}"
            );
        }
        Ok(Decoded::Incomplete) => {
            assert!(
                buf.len() < MAX_HEADER_LEN,
                "incomplete after {} bytes",
                buf.len()
            );
        }
        Err(_) => {}
    }
}

/// Splits `bytes` into pieces of 1 to 16 bytes, their sizes drawn from `plan`.
fn chunks(plan: u8, bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut state = u32::from(plan) | 0x100;
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        // A small LCG: cheap, deterministic, varied sizes.
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let size = (1 + (state >> 16) % 16) as usize;
        let (head, tail) = rest.split_at(size.min(rest.len()));
        rest = tail;
        Some(head)
    })
}

#[cfg(test)]
mod tests {
    use super::decode_in_chunks;

    /// Real headers to mutate: random bytes alone seldom start with a signature.
    const SEEDS: [&[u8]; 6] = [
        b"PROXY TCP4 192.0.2.1 198.18.0.100 56324 443\r\nGET / HTTP/1.1\r\n",
        b"PROXY TCP6 2001:db8::1 2001:db8::2 4242 8443\r\n",
        b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\xc0\x00\x02\x01\xc6\x12\x00\x64\xdc\x04\x01\xbb",
        b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00hello",
        b"\r\n\r\n\0\r\nQUIT\n\x21\x21\x00\x27\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x02\x10\x92\x20\xfb\x01\x00\x00",
    ];

    #[test]
    fn random_bytes_in_chunks_keep_every_property() {
        bolero::check!()
            .with_iterations(5_000)
            .for_each(|input: &[u8]| decode_in_chunks(input));
    }

    #[test]
    fn mutated_real_headers_in_chunks_keep_every_property() {
        bolero::check!()
            .with_type::<(u8, u8, Vec<(u8, u8)>, Vec<u8>)>()
            .with_iterations(20_000)
            .for_each(|(plan, seed, edits, tail)| {
                let seed = SEEDS[usize::from(*seed) % SEEDS.len()];
                decode_in_chunks(&test_support::fuzz::mutated(*plan, seed, edits, 4, tail));
            });
    }

    #[test]
    fn a_lone_line_feed_ends_a_version_1_line_whatever_follows() {
        // Found by the property above: the whole input decoded as a header
        // while its prefix up to the LF was refused.
        for plan in 0..=255 {
            decode_in_chunks(&[&[plan][..], b"PROXY UNKNOWN \nxx\r\n"].concat());
        }
    }
}
