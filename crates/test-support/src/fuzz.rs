//! What the bolero tests of the parsers share: a real example with a few
//! bytes overwritten, so that random inputs get past a format's first checks.

/// `plan` (the harness's first byte, which chooses the chunk sizes), then
/// `seed` with at most `max_edits` of `edits` applied (`(offset, byte)`, the
/// offset taken modulo the input, never the plan byte), then `tail`.
pub fn mutated(
    plan: u8,
    seed: &[u8],
    edits: &[(u8, u8)],
    max_edits: usize,
    tail: &[u8],
) -> Vec<u8> {
    let mut input = vec![plan];
    input.extend_from_slice(seed);
    for &(at, byte) in edits.iter().take(max_edits) {
        let at = 1 + usize::from(at) % (input.len() - 1);
        input[at] = byte;
    }
    input.extend_from_slice(tail);
    input
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_land_after_the_plan_byte_and_the_tail_follows() {
        let input = mutated(7, b"abc", &[(0, b'x'), (5, b'y'), (1, b'z')], 2, b"!");
        assert_eq!(input, b"\x07xby!");
    }
}
