//! Weighted least connections: the backend with the fewest active connections
//! relative to its weight, `active / weight`, compared by cross-multiplication
//! so there are no floats and no rounding.
//!
//! Why: kube clients hold watches open for hours, so connection counts, not
//! connection rates, are the load; an apiserver that comes back (or a new one)
//! has none and gets the new connections until it has caught up.
//!
//! Ties are common (every backend idle, or a burst accepted before any of its
//! connections is counted). The tied backends take turns, counted by one
//! atomic, instead of the first in config order taking the whole burst. (A
//! rotating scan start would not do: the turn of a backend that is not among
//! the least would go to its neighbour, twice as often as to the others.)

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use tandem_core::BackendSet;

use crate::{Candidates, Scheduler};

#[derive(Debug, Default)]
pub struct LeastConnections {
    next: AtomicUsize,
}

impl LeastConnections {
    pub fn new(_backends: &BackendSet) -> Self {
        LeastConnections::default()
    }
}

/// True when `a_active / a_weight < b_active / b_weight`.
pub(crate) fn less_loaded(a_active: u64, a_weight: u32, b_active: u64, b_weight: u32) -> bool {
    u128::from(a_active) * u128::from(b_weight) < u128::from(b_active) * u128::from(a_weight)
}

impl Scheduler for LeastConnections {
    fn pick(&self, backends: &BackendSet, _client: SocketAddr, tried: &[usize]) -> Option<usize> {
        let candidates = Candidates::new(backends, tried);
        let load = |index: usize| {
            let backend = backends.get(index)?;
            candidates
                .allows(index, backend)
                .then(|| (backend.active_connections(), backend.weight().get()))
        };
        // One pass for the least load and how many backends share it.
        let mut best: Option<(usize, u64, u32)> = None;
        let mut ties = 0;
        for index in 0..backends.len() {
            let Some((active, weight)) = load(index) else {
                continue;
            };
            match best {
                Some((_, best_active, best_weight)) => {
                    if less_loaded(active, weight, best_active, best_weight) {
                        best = Some((index, active, weight));
                        ties = 1;
                    } else if !less_loaded(best_active, best_weight, active, weight) {
                        ties += 1;
                    }
                }
                None => {
                    best = Some((index, active, weight));
                    ties = 1;
                }
            }
        }
        let (first, best_active, best_weight) = best?;
        if ties == 1 {
            return Some(first);
        }
        // Several share it: take them in turn. The counter is only touched
        // on ties, the case a burst of new connections hits.
        let turn = self.next.fetch_add(1, Relaxed) % ties;
        if turn == 0 {
            return Some(first);
        }
        (first + 1..backends.len())
            .filter(|&index| {
                load(index).is_some_and(|(active, weight)| {
                    !less_loaded(active, weight, best_active, best_weight)
                        && !less_loaded(best_active, best_weight, active, weight)
                })
            })
            .nth(turn - 1)
            // Loads moved since the first pass: the first of the least is as good.
            .or(Some(first))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use proptest::prelude::*;

    #[test]
    fn cross_multiplication_compares_ratios() {
        assert!(less_loaded(1, 2, 1, 1)); // 0.5 < 1
        assert!(!less_loaded(2, 2, 1, 1)); // 1 == 1
        assert!(less_loaded(0, 1, 1, 100));
        assert!(!less_loaded(u64::MAX, 1, u64::MAX, 1));
        assert!(less_loaded(u64::MAX - 1, 1, u64::MAX, 1));
    }

    #[test]
    fn new_connections_avoid_the_backend_holding_open_ones() {
        let set = set(&[1, 1, 1]);
        let lc = LeastConnections::new(&set);
        let _held: Vec<_> = (0..5)
            .map(|_| set.get(0).unwrap().open_connection())
            .collect();
        let mut guards = Vec::new();
        for _ in 0..8 {
            let i = lc.pick(&set, client(), &[]).unwrap();
            assert_ne!(i, 0);
            guards.push(set.get(i).unwrap().open_connection());
        }
        assert_eq!(set.get(1).unwrap().active_connections(), 4);
        assert_eq!(set.get(2).unwrap().active_connections(), 4);
    }

    #[test]
    fn a_burst_with_no_active_connections_spreads_over_all_backends() {
        let set = set(&[1, 1, 1, 1]);
        let lc = LeastConnections::new(&set);
        // Nothing is opened between picks: what a burst accepted faster than
        // its connects complete looks like.
        let mut counts = [0; 4];
        for _ in 0..40 {
            counts[lc.pick(&set, client(), &[]).unwrap()] += 1;
        }
        assert_eq!(counts, [10, 10, 10, 10]);
    }

    #[test]
    fn a_burst_among_equally_loaded_backends_spreads_over_them() {
        let set = set(&[1, 1, 1]);
        let lc = LeastConnections::new(&set);
        let _held: Vec<_> = set.iter().map(|b| b.open_connection()).collect();
        let _more = set.get(2).unwrap().open_connection();
        let mut counts = [0; 3];
        for _ in 0..20 {
            counts[lc.pick(&set, client(), &[]).unwrap()] += 1;
        }
        assert_eq!(counts, [10, 10, 0]);
    }

    #[test]
    fn a_recovered_backend_gets_the_new_connections() {
        let set = set(&[1, 1, 1]);
        let lc = LeastConnections::new(&set);
        set.get(2).unwrap().set_up(false);
        let mut guards = Vec::new();
        for _ in 0..10 {
            let i = lc.pick(&set, client(), &[]).unwrap();
            guards.push(set.get(i).unwrap().open_connection());
        }
        set.get(2).unwrap().set_up(true);
        for _ in 0..5 {
            let i = lc.pick(&set, client(), &[]).unwrap();
            assert_eq!(i, 2);
            guards.push(set.get(i).unwrap().open_connection());
        }
    }

    proptest! {
        /// Holding every picked connection open, after `k * total_weight` picks
        /// each backend holds `k * weight` connections, give or take the number
        /// of backends (ties at zero go round, whatever the weights).
        #[test]
        fn held_connections_follow_the_weights(
            weights in prop::collection::vec(1u32..=10, 1..8),
            k in 1u32..20,
        ) {
            let set = set(&weights);
            let lc = LeastConnections::new(&set);
            let total: u32 = weights.iter().sum();
            let mut guards = Vec::new();
            for _ in 0..k * total {
                let i = lc.pick(&set, client(), &[]).unwrap();
                guards.push(set.get(i).unwrap().open_connection());
            }
            let tolerance = weights.len() as i64;
            for (b, w) in set.iter().zip(&weights) {
                let expected = i64::from(k * w);
                let active = b.active_connections() as i64;
                prop_assert!((active - expected).abs() <= tolerance,
                    "weights {:?} k {}: {} active, expected {}", weights, k, active, expected);
            }
        }

        /// Picks are spread by weight while connections come and go.
        #[test]
        fn shares_follow_the_weights_with_churn(
            weights in prop::collection::vec(1u32..=10, 2..8),
        ) {
            let set = set(&weights);
            let lc = LeastConnections::new(&set);
            let total: u32 = weights.iter().sum();
            let mut open: std::collections::VecDeque<(usize, _)> = Default::default();
            let mut counts = vec![0u64; weights.len()];
            let picks = 200 * total as usize;
            // Long enough that one connection more or less is a small share.
            let lifetime = 1000;
            for step in 0..picks {
                while open.front().is_some_and(|(end, _)| *end <= step) {
                    open.pop_front();
                }
                let i = lc.pick(&set, client(), &[]).unwrap();
                counts[i] += 1;
                // Every connection lives as long, so the queue stays in end order.
                open.push_back((step + lifetime, set.get(i).unwrap().open_connection()));
            }
            for (c, w) in counts.iter().zip(&weights) {
                let share = *c as f64 / picks as f64;
                let expected = f64::from(*w) / f64::from(total);
                prop_assert!((share - expected).abs() <= 0.02,
                    "weights {:?}: share {} expected {}", weights, share, expected);
            }
        }
    }
}
