//! Smooth weighted round robin, as nginx does it: with weights 5,1,1 the order
//! is a a b a c a a, interleaved rather than five in a row.
//!
//! nginx updates per-backend "current weights" under a lock at every pick. We
//! compute one full cycle of that sequence when the scheduler is built and walk
//! it with one atomic counter, which gives the same order without a lock.
//! Backends that cannot be picked are skipped; their turns go to the next
//! entries of the cycle.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use tandem_core::BackendSet;

use crate::{Candidates, Scheduler};

/// Upper bound of the precomputed cycle, whatever the weights.
const MAX_CYCLE: usize = 1 << 20;

#[derive(Debug)]
pub struct RoundRobin {
    cycle: Vec<u32>,
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn new(backends: &BackendSet) -> Self {
        let weights: Vec<u64> = backends.iter().map(|b| b.weight().get() as u64).collect();
        RoundRobin {
            cycle: smooth_cycle(&weights),
            next: AtomicUsize::new(0),
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// One cycle of nginx's smooth weighted round robin over `weights`, reduced by
/// their greatest common divisor.
fn smooth_cycle(weights: &[u64]) -> Vec<u32> {
    let divisor = weights.iter().copied().fold(0, gcd).max(1);
    let weights: Vec<i64> = weights.iter().map(|w| (w / divisor) as i64).collect();
    let total: i64 = weights.iter().sum();
    let len = (total as usize).min(MAX_CYCLE);
    let mut current = vec![0i64; weights.len()];
    let mut cycle = Vec::with_capacity(len);
    for _ in 0..len {
        let mut best = 0;
        for i in 0..weights.len() {
            current[i] += weights[i];
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        cycle.push(best as u32);
    }
    cycle
}

impl Scheduler for RoundRobin {
    fn pick(&self, backends: &BackendSet, _client: SocketAddr, tried: &[usize]) -> Option<usize> {
        if self.cycle.is_empty() {
            return None;
        }
        let candidates = Candidates::new(backends, tried);
        let start = self.next.fetch_add(1, Relaxed);
        (0..self.cycle.len()).find_map(|step| {
            let index = self.cycle[(start.wrapping_add(step)) % self.cycle.len()] as usize;
            let backend = backends.get(index)?;
            candidates.allows(index, backend).then_some(index)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use proptest::prelude::*;

    #[test]
    fn weights_five_one_one_interleave_like_nginx() {
        assert_eq!(smooth_cycle(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn equal_weights_rotate() {
        let set = set(&[1, 1, 1]);
        let rr = RoundRobin::new(&set);
        let picks: Vec<_> = (0..6).map(|_| rr.pick(&set, client(), &[]).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn down_backends_are_skipped() {
        let set = set(&[1, 1, 1]);
        set.get(1).unwrap().set_up(false);
        let rr = RoundRobin::new(&set);
        for _ in 0..9 {
            assert_ne!(rr.pick(&set, client(), &[]), Some(1));
        }
    }

    proptest! {
        #[test]
        fn shares_match_weights_over_full_cycles(weights in prop::collection::vec(1u32..=20, 1..8)) {
            let set = set(&weights);
            let rr = RoundRobin::new(&set);
            let total: u32 = weights.iter().sum();
            let cycles = 3;
            let mut counts = vec![0u32; weights.len()];
            for _ in 0..total * cycles {
                counts[rr.pick(&set, client(), &[]).unwrap()] += 1;
            }
            // Over whole cycles, shares are exact.
            for (c, w) in counts.iter().zip(&weights) {
                prop_assert_eq!(*c, w * cycles);
            }
        }

        #[test]
        fn never_picks_unavailable_or_tried(
            weights in prop::collection::vec(1u32..=5, 1..8),
            down in prop::collection::vec(any::<bool>(), 8),
            tried in prop::collection::vec(0usize..8, 0..3),
        ) {
            let set = set(&weights);
            for (b, d) in set.iter().zip(&down) {
                b.set_up(!d);
            }
            let rr = RoundRobin::new(&set);
            for _ in 0..50 {
                match rr.pick(&set, client(), &tried) {
                    Some(i) => {
                        prop_assert!(set.get(i).unwrap().is_available());
                        prop_assert!(!tried.contains(&i));
                    }
                    None => prop_assert!(set
                        .iter()
                        .enumerate()
                        .all(|(i, b)| !b.is_available() || tried.contains(&i))),
                }
            }
        }
    }
}
