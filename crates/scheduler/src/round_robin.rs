//! Smooth weighted round robin, as nginx does it: with weights 5,1,1 the order
//! is a a b a c a a, interleaved rather than five in a row.
//!
//! nginx updates per-backend "current weights" under a lock at every pick. We
//! compute one full cycle of that sequence when the scheduler is built and walk
//! it with one atomic counter, which gives the same order without a lock.
//!
//! Primaries and backups get a cycle each, so that backups do not cost turns
//! while primaries serve. A backend that cannot be picked is skipped and its
//! turn is consumed: the counter jumps past it, so the backends still
//! available keep exactly their weighted shares (with a,b,c equal and b down:
//! a c a c, not a c c a c c).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use tandem_core::BackendSet;

use crate::{Candidates, Scheduler};

/// Upper bound of the precomputed cycle, whatever the weights.
const MAX_CYCLE: usize = 1 << 20;

#[derive(Debug)]
pub struct RoundRobin {
    primary: Cycle,
    backup: Cycle,
}

/// One class of backends (primaries or backups) in smooth weighted order.
#[derive(Debug)]
struct Cycle {
    /// Indexes into the backend set.
    order: Vec<u32>,
    next: AtomicUsize,
}

impl RoundRobin {
    pub fn new(backends: &BackendSet) -> Self {
        let class = |backup: bool| {
            let members: Vec<(u32, u64)> = backends
                .iter()
                .enumerate()
                .filter(|(_, b)| b.is_backup() == backup)
                .map(|(i, b)| (index_u32(i), u64::from(b.weight().get())))
                .collect();
            let weights: Vec<u64> = members.iter().map(|&(_, w)| w).collect();
            Cycle {
                order: smooth_cycle(&weights)
                    .into_iter()
                    .map(|local| members[local as usize].0)
                    .collect(),
                next: AtomicUsize::new(0),
            }
        };
        RoundRobin {
            primary: class(false),
            backup: class(true),
        }
    }
}

pub(crate) fn index_u32(index: usize) -> u32 {
    u32::try_from(index).expect("a service has fewer than 2^32 backends")
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// One cycle of nginx's smooth weighted round robin over `weights` (indexes
/// into `weights`), reduced by their greatest common divisor.
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
        cycle.push(index_u32(best));
    }
    cycle
}

impl Cycle {
    fn pick(&self, backends: &BackendSet, candidates: &Candidates<'_>) -> Option<usize> {
        let len = self.order.len();
        if len == 0 {
            return None;
        }
        let start = self.next.fetch_add(1, Relaxed);
        let (skipped, index) = (0..len).find_map(|step| {
            let index = self.order[start.wrapping_add(step) % len] as usize;
            let backend = backends.get(index)?;
            candidates.allows(index, backend).then_some((step, index))
        })?;
        if skipped > 0 {
            // The skipped turns are used up, so the next pick continues after
            // this one instead of landing on the same backend again.
            self.next.fetch_add(skipped, Relaxed);
        }
        Some(index)
    }
}

impl Scheduler for RoundRobin {
    fn pick(&self, backends: &BackendSet, _client: SocketAddr, tried: &[usize]) -> Option<usize> {
        let candidates = Candidates::new(backends, tried);
        let (first, other) = if candidates.uses_backups() {
            // Rare (no primary left): check there is anything at all before
            // walking cycles that may be long.
            if !backends
                .iter()
                .enumerate()
                .any(|(i, b)| candidates.allows(i, b))
            {
                return None;
            }
            (&self.backup, &self.primary)
        } else {
            (&self.primary, &self.backup)
        };
        // `other` only matters if a reload flipped a backup flag in place
        // without rebuilding the scheduler; it costs nothing otherwise.
        first
            .pick(backends, &candidates)
            .or_else(|| other.pick(backends, &candidates))
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
        let picks: Vec<_> = (0..6)
            .map(|_| rr.pick(&set, client(), &[]).unwrap())
            .collect();
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

    #[test]
    fn a_down_backends_turns_are_shared_not_given_to_its_neighbour() {
        let set = set(&[1, 1, 1]);
        set.get(1).unwrap().set_up(false);
        let rr = RoundRobin::new(&set);
        let picks: Vec<_> = (0..6)
            .map(|_| rr.pick(&set, client(), &[]).unwrap())
            .collect();
        assert_eq!(picks, vec![0, 2, 0, 2, 0, 2]);
    }

    #[test]
    fn backups_rotate_among_themselves_when_primaries_are_down() {
        let set = set(&[1, 1, 2, 1]);
        set.get(1).unwrap().set_backup(true);
        set.get(2).unwrap().set_backup(true);
        let rr = RoundRobin::new(&set);
        set.get(0).unwrap().set_up(false);
        set.get(3).unwrap().set_up(false);
        let mut counts = [0; 4];
        for _ in 0..30 {
            counts[rr.pick(&set, client(), &[]).unwrap()] += 1;
        }
        assert_eq!(counts, [0, 10, 20, 0]);
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
        fn shares_of_the_available_match_their_weights(
            weights in prop::collection::vec(1u32..=10, 2..8),
            down in prop::collection::vec(any::<bool>(), 8),
        ) {
            let set = set(&weights);
            for (b, d) in set.iter().zip(&down) {
                b.set_up(!d);
            }
            let rr = RoundRobin::new(&set);
            let total: u32 = weights.iter().sum();
            let up_total: u32 = weights.iter().zip(&down).filter(|(_, d)| !**d).map(|(w, _)| w).sum();
            prop_assume!(up_total > 0);
            // Each pick uses up its own turn plus the skipped ones, so `up_total`
            // picks walk one cycle of `total` turns: exact shares again.
            let cycles = 3;
            let mut counts = vec![0u32; weights.len()];
            for _ in 0..up_total * cycles {
                counts[rr.pick(&set, client(), &[]).unwrap()] += 1;
            }
            for i in 0..weights.len() {
                let expected = if down[i] { 0 } else { weights[i] * cycles };
                prop_assert_eq!(counts[i], expected, "total {}", total);
            }
        }
    }
}
