//! Weights into slots: the kernel picks a number `0..N` (`numgen` or `jhash
//! ... mod N`) and a map sends each number to a backend. A backend of weight
//! `w` owns `w` slots of `N` (after dividing every weight by their greatest
//! common divisor), so its share is exact for round robin and random.
//!
//! Round robin interleaves the slots like the userspace smooth weighted round
//! robin (weights 2, 1 give A B A, not A A B), so that consecutive connections
//! spread. Source hash uses a fixed [`HASH_SLOTS`] slots assigned by weighted
//! rendezvous hashing: when a backend leaves, only its own slots move, so the
//! clients of the other backends keep theirs (the property Maglev gives the
//! userspace scheduler).

/// Slots of a source-hash map, whatever the weights.
pub const HASH_SLOTS: usize = 1024;

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

fn reduced(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().copied().fold(0, gcd).max(1);
    weights.iter().map(|w| w / g).collect()
}

/// Smooth weighted round robin over `weights` (each ≥ 1): one full cycle,
/// each index appearing its reduced weight times.
pub fn round_robin(weights: &[u32]) -> Vec<usize> {
    let weights = reduced(weights);
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        for (c, &w) in current.iter_mut().zip(&weights) {
            *c += i64::from(w);
        }
        let best = (0..current.len())
            .max_by_key(|&i| (current[i], std::cmp::Reverse(i)))
            .expect("round_robin is called with at least one weight");
        current[best] -= total;
        out.push(best);
    }
    out
}

/// Each index's reduced weight in slots, one block after the other: for a
/// random pick, where the order of slots does not matter and fewer map
/// elements are cheaper.
pub fn blocks(weights: &[u32]) -> Vec<usize> {
    reduced(weights)
        .iter()
        .enumerate()
        .flat_map(|(i, &w)| (0..w).map(move |_| i))
        .collect()
}

/// [`HASH_SLOTS`] slots, each given to the index with the highest weighted
/// rendezvous score for it; `keys` identify the backends (their addresses,
/// hashed), so a slot's owner does not depend on the order of the list.
pub fn hashed(keys: &[u64], weights: &[u32]) -> Vec<usize> {
    (0..HASH_SLOTS as u64)
        .map(|slot| {
            let score = |i: usize| {
                // A uniform value in (0, 1), then -w / ln(u): the weighted
                // rendezvous score (larger wins).
                let h = mix(keys[i] ^ mix(slot.wrapping_add(0x9e37_79b9_7f4a_7c15)));
                let u = ((h >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
                -f64::from(weights[i]) / u.ln()
            };
            (0..keys.len())
                .max_by(|&a, &b| score(a).total_cmp(&score(b)))
                .expect("hashed is called with at least one key")
        })
        .collect()
}

/// splitmix64's finaliser: a fixed, well-spread 64-bit mix.
pub fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Runs of equal slots as `(first, last, index)`, for a map with ranges.
pub fn ranges(slots: &[usize]) -> Vec<(usize, usize, usize)> {
    let mut out: Vec<(usize, usize, usize)> = Vec::new();
    for (n, &i) in slots.iter().enumerate() {
        match out.last_mut() {
            Some(last) if last.2 == i && last.1 + 1 == n => last.1 = n,
            _ => out.push((n, n, i)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn counts(slots: &[usize], n: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for &s in slots {
            c[s] += 1;
        }
        c
    }

    #[test]
    fn round_robin_interleaves() {
        assert_eq!(round_robin(&[2, 1]), vec![0, 1, 0]);
        assert_eq!(round_robin(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(round_robin(&[4, 4]), vec![0, 1], "divided by the gcd");
    }

    #[test]
    fn ranges_merge_neighbours_only() {
        assert_eq!(
            ranges(&[0, 0, 1, 0, 0]),
            vec![(0, 1, 0), (2, 2, 1), (3, 4, 0)]
        );
    }

    proptest! {
        #[test]
        fn round_robin_and_blocks_give_exact_shares(weights in prop::collection::vec(1u32..=256, 1..8)) {
            let g = weights.iter().copied().fold(0, gcd);
            for slots in [round_robin(&weights), blocks(&weights)] {
                let c = counts(&slots, weights.len());
                for (i, w) in weights.iter().enumerate() {
                    prop_assert_eq!(c[i] as u32, w / g);
                }
            }
        }

        #[test]
        fn hashed_shares_follow_weights_and_removal_moves_only_the_removed(
            weights in prop::collection::vec(1u32..=4, 2..6),
            gone in 0usize..6,
        ) {
            let keys: Vec<u64> = (0..weights.len() as u64).map(|k| mix(k + 1)).collect();
            let slots = hashed(&keys, &weights);
            let c = counts(&slots, weights.len());
            let total: u32 = weights.iter().sum();
            for (i, w) in weights.iter().enumerate() {
                let want = HASH_SLOTS as f64 * f64::from(*w) / f64::from(total);
                // Rendezvous hashing is random: a generous band, but every
                // backend has slots.
                prop_assert!(c[i] > 0 && (c[i] as f64 - want).abs() < want * 0.5 + 40.0,
                    "backend {} weight {} has {} slots, want about {}", i, w, c[i], want);
            }
            let gone = gone % weights.len();
            let mut k2 = keys.clone();
            let mut w2 = weights.clone();
            k2.remove(gone);
            w2.remove(gone);
            let after = hashed(&k2, &w2);
            for (slot, (&before, &now)) in slots.iter().zip(&after).enumerate() {
                if before != gone {
                    let now = if now >= gone { now + 1 } else { now };
                    prop_assert_eq!(before, now, "slot {} moved", slot);
                }
            }
        }
    }
}
