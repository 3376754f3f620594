//! Spreading probes in time: a random first offset and ±10 % on every
//! interval, so that the probes of many backends do not line up.
//!
//! Not cryptographic: splitmix64 seeded from std's per-process random hash
//! keys, which is all a schedule needs and saves a dependency.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

#[derive(Debug, Clone)]
pub(crate) struct Jitter {
    state: u64,
}

impl Jitter {
    pub(crate) fn new() -> Self {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(0x7461_6e64_656d);
        Jitter { state: h.finish() }
    }

    #[cfg(test)]
    fn seeded(seed: u64) -> Self {
        Jitter { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The wait before a backend's first probe: anywhere in [0, interval).
    pub(crate) fn first(&mut self, interval: Duration) -> Duration {
        interval.mul_f64(self.unit())
    }

    /// One interval with ±10 % jitter.
    pub(crate) fn interval(&mut self, interval: Duration) -> Duration {
        interval.mul_f64(0.9 + 0.2 * self.unit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_stay_within_ten_percent_and_spread() {
        let mut j = Jitter::seeded(1);
        let base = Duration::from_secs(2);
        let mut min = Duration::MAX;
        let mut max = Duration::ZERO;
        for _ in 0..10_000 {
            let d = j.interval(base);
            assert!(d >= Duration::from_millis(1800) && d <= Duration::from_millis(2200));
            min = min.min(d);
            max = max.max(d);
        }
        assert!(min < Duration::from_millis(1820) && max > Duration::from_millis(2180));
    }

    #[test]
    fn first_offsets_cover_the_interval() {
        let mut j = Jitter::seeded(2);
        let base = Duration::from_secs(1);
        let mut buckets = [0u32; 10];
        for _ in 0..10_000 {
            let d = j.first(base);
            assert!(d < base);
            buckets[(d.as_millis() / 100) as usize] += 1;
        }
        assert!(buckets.iter().all(|&n| n > 800), "{buckets:?}");
    }
}
