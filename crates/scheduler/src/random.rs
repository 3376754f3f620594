//! Power of two random choices (`scheduler: random`): draw two distinct
//! backends at random, in proportion to their weights, and keep the one with
//! fewer active connections relative to its weight.
//!
//! Why: several tandems in front of the same backends each see only their own
//! connections, so a shared rotation or "least" would have them all pile onto
//! the same backend at the same moment. Random draws do not synchronise, and
//! comparing just two draws avoids the worst-loaded backends
//! (Mitzenmacher, 2001) at a constant cost whatever the number of backends.
//!
//! The draws are O(1): a Walker/Vose alias table per class (primaries,
//! backups), built with integers once per snapshot; the random numbers come
//! from a per-thread wyrand generator, so a pick takes no lock, touches no
//! shared cache line and allocates nothing. A drawn backend that cannot be
//! picked is drawn again a few times, then a scan from a random start decides.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use tandem_core::BackendSet;

use crate::least_connections::less_loaded;
use crate::round_robin::index_u32;
use crate::{Candidates, Scheduler};

/// Draws before falling back to a scan, per choice.
const DRAWS: usize = 16;

#[derive(Debug)]
pub struct PowerOfTwo {
    primary: Alias,
    backup: Alias,
}

/// Walker's alias table: draw a bucket uniformly, then keep it with
/// probability `keep / total`, else take its alias. Exact, with integers.
#[derive(Debug)]
struct Alias {
    /// Indexes into the backend set.
    members: Vec<u32>,
    keep: Vec<u64>,
    /// Positions in `members`.
    alias: Vec<u32>,
    total: u64,
}

impl PowerOfTwo {
    pub fn new(backends: &BackendSet) -> Self {
        let class = |backup: bool| {
            let (members, weights): (Vec<u32>, Vec<u64>) = backends
                .iter()
                .enumerate()
                .filter(|(_, b)| b.is_backup() == backup)
                .map(|(i, b)| (index_u32(i), u64::from(b.weight().get())))
                .unzip();
            Alias::new(members, &weights)
        };
        PowerOfTwo {
            primary: class(false),
            backup: class(true),
        }
    }
}

impl Alias {
    fn new(members: Vec<u32>, weights: &[u64]) -> Alias {
        let n = weights.len() as u64;
        let total: u64 = weights.iter().sum();
        // Bucket j holds `scaled[j] / total` of one n-th of the mass.
        let mut scaled: Vec<u64> = weights.iter().map(|w| w * n).collect();
        let mut keep = vec![total; weights.len()];
        let mut alias: Vec<u32> = (0..weights.len()).map(index_u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..weights.len()).partition(|&j| scaled[j] < total);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            keep[s] = scaled[s];
            alias[s] = index_u32(l);
            scaled[l] -= total - scaled[s];
            if scaled[l] < total {
                large.pop();
                small.push(l);
            }
        }
        // Whatever is left holds exactly `total` (up to rounding, which
        // integers do not have): kept with certainty, as initialised.
        Alias {
            members,
            keep,
            alias,
            total,
        }
    }

    fn draw(&self) -> Option<usize> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let bucket = below(next_u64(), n as u64) as usize;
        let position = if below(next_u64(), self.total) < self.keep[bucket] {
            bucket
        } else {
            self.alias[bucket] as usize
        };
        Some(self.members[position] as usize)
    }

    /// A weighted draw among the backends that may be picked, other than `not`.
    fn draw_candidate(
        &self,
        backends: &BackendSet,
        candidates: &Candidates<'_>,
        not: Option<usize>,
    ) -> Option<usize> {
        (0..DRAWS).find_map(|_| {
            let index = self.draw()?;
            let backend = backends.get(index)?;
            (Some(index) != not && candidates.allows(index, backend)).then_some(index)
        })
    }
}

/// The first candidate other than `not`, scanning from a random start.
fn scan(backends: &BackendSet, candidates: &Candidates<'_>, not: Option<usize>) -> Option<usize> {
    let n = backends.len();
    if n == 0 {
        return None;
    }
    let start = below(next_u64(), n as u64) as usize;
    (0..n)
        .map(|step| (start + step) % n)
        .find(|&i| Some(i) != not && backends.get(i).is_some_and(|b| candidates.allows(i, b)))
}

impl Scheduler for PowerOfTwo {
    fn pick(&self, backends: &BackendSet, _client: SocketAddr, tried: &[usize]) -> Option<usize> {
        let candidates = Candidates::new(backends, tried);
        let table = if candidates.uses_backups() {
            &self.backup
        } else {
            &self.primary
        };
        let choose = |not| {
            table
                .draw_candidate(backends, &candidates, not)
                .or_else(|| scan(backends, &candidates, not))
        };
        let first = choose(None)?;
        let Some(second) = choose(Some(first)) else {
            return Some(first);
        };
        let load = |i: usize| {
            backends.get(i).map_or((u64::MAX, 1), |b| {
                (b.active_connections(), b.weight().get())
            })
        };
        let ((a1, w1), (a2, w2)) = (load(first), load(second));
        // On a tie the first draw wins, so idle backends are shared by weight.
        Some(if less_loaded(a2, w2, a1, w1) {
            second
        } else {
            first
        })
    }
}

/// A uniform number below `bound` (Lemire's multiply-shift; the bias is
/// below 2^-32 for any bound a scheduler uses).
fn below(random: u64, bound: u64) -> u64 {
    ((u128::from(random) * u128::from(bound)) >> 64) as u64
}

thread_local! {
    static STATE: Cell<u64> = const { Cell::new(0) };
}

/// wyrand: one add and one 128-bit multiply per number.
fn next_u64() -> u64 {
    STATE.with(|state| {
        let mut s = state.get();
        if s == 0 {
            s = seed();
        }
        s = s.wrapping_add(0xa076_1d64_78bd_642f);
        state.set(s);
        let t = u128::from(s) * u128::from(s ^ 0xe703_7ed1_a0b4_28db);
        ((t >> 64) as u64) ^ (t as u64)
    })
}

/// A different seed per thread and per process: a counter, the clock and a
/// stack address, mixed. Nothing here needs to be unpredictable, only unshared.
fn seed() -> u64 {
    static THREADS: AtomicU64 = AtomicU64::new(0);
    let thread = THREADS.fetch_add(1, Relaxed);
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let local = 0u8;
    let address = std::ptr::addr_of!(local) as usize as u64;
    let mut x = thread.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ clock ^ address.rotate_left(32);
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
    x ^= x >> 33;
    x | 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::*;
    use proptest::prelude::*;

    fn alias_probabilities(weights: &[u64]) -> Vec<f64> {
        let a = Alias::new((0..weights.len()).map(index_u32).collect(), weights);
        let n = weights.len() as f64;
        let mut p = vec![0.0; weights.len()];
        for j in 0..weights.len() {
            let keep = a.keep[j] as f64 / a.total as f64;
            p[j] += keep / n;
            p[a.alias[j] as usize] += (1.0 - keep) / n;
        }
        p
    }

    #[test]
    fn the_less_loaded_of_two_wins() {
        let set = set(&[1, 1]);
        let p2 = PowerOfTwo::new(&set);
        let _held = set.get(0).unwrap().open_connection();
        // With two candidates both are always drawn: no randomness left.
        for _ in 0..200 {
            assert_eq!(p2.pick(&set, client(), &[]), Some(1));
        }
    }

    #[test]
    fn load_is_compared_relative_to_weight() {
        let set = set(&[4, 1]);
        let p2 = PowerOfTwo::new(&set);
        let _held: Vec<_> = (0..3)
            .map(|_| set.get(0).unwrap().open_connection())
            .collect();
        let _one = set.get(1).unwrap().open_connection();
        // 3/4 < 1/1
        for _ in 0..200 {
            assert_eq!(p2.pick(&set, client(), &[]), Some(0));
        }
    }

    #[test]
    fn generator_differs_between_threads() {
        let here: Vec<u64> = (0..4).map(|_| next_u64()).collect();
        let there = std::thread::spawn(|| (0..4).map(|_| next_u64()).collect::<Vec<u64>>())
            .join()
            .unwrap();
        assert_ne!(here, there);
    }

    proptest! {
        #[test]
        fn alias_table_is_exact(weights in prop::collection::vec(1u64..=1000, 1..20)) {
            let total: u64 = weights.iter().sum();
            for (p, w) in alias_probabilities(&weights).iter().zip(&weights) {
                prop_assert!((p - *w as f64 / total as f64).abs() < 1e-9);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Short connections (nothing held open): every draw is a tie, the
        /// first draw wins, so shares are the weights (within 2 %: 20,000
        /// picks, 0.7 % is 2 sigma).
        #[test]
        fn idle_shares_follow_the_weights(weights in prop::collection::vec(1u32..=10, 1..8)) {
            let set = set(&weights);
            let p2 = PowerOfTwo::new(&set);
            let total: u32 = weights.iter().sum();
            let picks = 20_000;
            let mut counts = vec![0u32; weights.len()];
            for _ in 0..picks {
                counts[p2.pick(&set, client(), &[]).unwrap()] += 1;
            }
            for (c, w) in counts.iter().zip(&weights) {
                let share = f64::from(*c) / f64::from(picks);
                let expected = f64::from(*w) / f64::from(total);
                prop_assert!((share - expected).abs() <= 0.02, "weights {:?}: {} expected {}", weights, share, expected);
            }
        }

        /// Long connections, all held open: active counts follow the weights
        /// to within 1 % of all connections (measured: 0.1 % at worst).
        #[test]
        fn held_connections_follow_the_weights(weights in prop::collection::vec(1u32..=10, 2..8)) {
            let set = set(&weights);
            let p2 = PowerOfTwo::new(&set);
            let total: u32 = weights.iter().sum();
            let picks = 100 * total;
            let mut guards = Vec::new();
            for _ in 0..picks {
                let i = p2.pick(&set, client(), &[]).unwrap();
                guards.push(set.get(i).unwrap().open_connection());
            }
            for (b, w) in set.iter().zip(&weights) {
                let share = b.active_connections() as f64 / f64::from(picks);
                let expected = f64::from(*w) / f64::from(total);
                prop_assert!((share - expected).abs() <= 0.01, "weights {:?}: {} expected {}", weights, share, expected);
            }
        }
    }
}
