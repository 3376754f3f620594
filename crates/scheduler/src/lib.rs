//! tandem's backend selection.
//!
//! A [`Scheduler`] is built once per service snapshot from its [`BackendSet`]
//! (precomputing whatever tables it needs) and then picks an index into that
//! set for every new connection, lock-free: it reads the backends' atomics and
//! its own atomics, never a mutex, and allocates nothing.
//!
//! The algorithms, one module each:
//! - [`RoundRobin`]: smooth weighted round robin, nginx's order without its lock;
//! - [`LeastConnections`]: fewest active connections relative to weight;
//! - [`Maglev`]: consistent hashing of the client address (`source_hash`);
//! - [`PowerOfTwo`]: two weighted random choices, the less loaded wins (`random`).
//!
//! Every algorithm follows the same rules, enforced by [`Candidates`]:
//! - only available backends (up and not draining) are picked;
//! - a backend already tried for this connection is never picked again;
//! - `backup` backends are picked only when no primary can be.
//!
//! What to do when nothing is available (reject, or try every backend anyway)
//! is [`OnAllDown`], applied by [`pick`].
//!
//! This crate must not block, sleep, log or allocate on the pick path, and
//! must not build tables per pick: [`build`] runs once per snapshot.

mod least_connections;
mod maglev;
mod random;
mod round_robin;

use std::fmt::Debug;
use std::net::SocketAddr;

use tandem_core::{Backend, BackendSet};
pub use tandem_core::{HashKey, OnAllDown, SchedulerKind};

pub use least_connections::LeastConnections;
pub use maglev::Maglev;
pub use random::PowerOfTwo;
pub use round_robin::RoundRobin;

/// Picks a backend for a new connection.
pub trait Scheduler: Send + Sync + Debug {
    /// The index of an available backend not in `tried`, or `None` when there is none.
    fn pick(&self, backends: &BackendSet, client: SocketAddr, tried: &[usize]) -> Option<usize>;
}

/// Builds the scheduler of `kind` for this set of backends; `key` is what
/// `source_hash` hashes (the others ignore it).
pub fn build(kind: SchedulerKind, key: HashKey, backends: &BackendSet) -> Box<dyn Scheduler> {
    match kind {
        SchedulerKind::RoundRobin => Box::new(RoundRobin::new(backends)),
        SchedulerKind::LeastConnections => Box::new(LeastConnections::new(backends)),
        SchedulerKind::SourceHash => Box::new(Maglev::new(backends, key)),
        SchedulerKind::Random => Box::new(PowerOfTwo::new(backends)),
    }
}

/// Picks with `scheduler`; when nothing is available and the policy is
/// [`OnAllDown::TryAll`], falls back to the first untried backend in config
/// order, down or not.
pub fn pick(
    scheduler: &dyn Scheduler,
    on_all_down: OnAllDown,
    backends: &BackendSet,
    client: SocketAddr,
    tried: &[usize],
) -> Option<usize> {
    scheduler
        .pick(backends, client, tried)
        .or_else(|| match on_all_down {
            OnAllDown::Reject => None,
            OnAllDown::TryAll => (0..backends.len()).find(|i| !tried.contains(i)),
        })
}

/// The rule every algorithm applies to decide which backends it may pick now.
#[derive(Debug, Clone, Copy)]
pub struct Candidates<'a> {
    tried: &'a [usize],
    use_backups: bool,
}

impl<'a> Candidates<'a> {
    /// Backups become candidates only when no untried primary is available.
    pub fn new(backends: &BackendSet, tried: &'a [usize]) -> Self {
        let primary_left = backends
            .iter()
            .enumerate()
            .any(|(i, b)| !b.is_backup() && b.is_available() && !tried.contains(&i));
        Candidates {
            tried,
            use_backups: !primary_left,
        }
    }

    pub fn allows(&self, index: usize, backend: &Backend) -> bool {
        backend.is_available()
            && backend.is_backup() == self.use_backups
            && !self.tried.contains(&index)
    }

    /// True when only backups may be picked (no untried primary is available),
    /// so a scheduler with per-class tables can look in the right one first.
    pub fn uses_backups(&self) -> bool {
        self.use_backups
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use std::net::SocketAddr;
    use std::num::NonZeroU32;
    use std::sync::Arc;

    use tandem_core::{Backend, BackendAddress, BackendSet};

    /// Backends on 127.0.0.1 ports 1.., with these weights, all up, none backup.
    pub fn set(weights: &[u32]) -> BackendSet {
        BackendSet::new(
            weights
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    Arc::new(Backend::new(
                        BackendAddress(([127, 0, 0, 1], i as u16 + 1).into()),
                        None,
                        NonZeroU32::new(*w).expect("test weights are positive"),
                        false,
                        true,
                    ))
                })
                .collect(),
        )
    }

    pub fn client() -> SocketAddr {
        ([127, 0, 0, 1], 40000).into()
    }

    /// `count` client addresses spread over IPv4 and IPv6, the same every run
    /// (splitmix64 from a fixed seed).
    pub fn clients(count: usize, seed: u64) -> Vec<SocketAddr> {
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        (0..count)
            .map(|i| {
                let r = next();
                let port = (r >> 48) as u16;
                if i % 4 == 3 {
                    let hi = next();
                    let ip = std::net::Ipv6Addr::from(((hi as u128) << 64) | r as u128);
                    SocketAddr::from((ip, port))
                } else {
                    SocketAddr::from(((r as u32).to_be_bytes(), port))
                }
            })
            .collect()
    }

    /// Asserts what every pick must satisfy: available, untried, and a backup
    /// only when no untried primary is available; `None` only when nothing is.
    pub fn check_pick(
        set: &BackendSet,
        tried: &[usize],
        picked: Option<usize>,
    ) -> Result<(), String> {
        let primary_left = set
            .iter()
            .enumerate()
            .any(|(i, b)| !b.is_backup() && b.is_available() && !tried.contains(&i));
        let any_left = set
            .iter()
            .enumerate()
            .any(|(i, b)| b.is_available() && !tried.contains(&i));
        match picked {
            Some(i) => {
                let b = set.get(i).ok_or("index out of range")?;
                if !b.is_available() {
                    return Err(format!("picked unavailable backend {i}"));
                }
                if tried.contains(&i) {
                    return Err(format!("picked tried backend {i}"));
                }
                if b.is_backup() && primary_left {
                    return Err(format!("picked backup {i} while a primary is available"));
                }
                Ok(())
            }
            None if any_left => Err("returned None with a candidate left".into()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    use proptest::prelude::*;

    const ALL: [(SchedulerKind, HashKey); 5] = [
        (SchedulerKind::RoundRobin, HashKey::SourceIp),
        (SchedulerKind::LeastConnections, HashKey::SourceIp),
        (SchedulerKind::SourceHash, HashKey::SourceIp),
        (SchedulerKind::SourceHash, HashKey::SourceIpPort),
        (SchedulerKind::Random, HashKey::SourceIp),
    ];

    fn build(algorithm: (SchedulerKind, HashKey), set: &BackendSet) -> Box<dyn Scheduler> {
        super::build(algorithm.0, algorithm.1, set)
    }

    proptest! {
        /// The rules of [`Candidates`], for every algorithm: whatever is down,
        /// draining, backup, held open or already tried, a pick is available,
        /// untried, and a backup only when no primary can be picked.
        #[test]
        fn never_picks_unavailable_tried_or_needless_backups(
            algorithm in prop::sample::select(ALL.to_vec()),
            weights in prop::collection::vec(1u32..=5, 1..8),
            down in prop::collection::vec(any::<bool>(), 8),
            draining in prop::collection::vec(any::<bool>(), 8),
            backup in prop::collection::vec(any::<bool>(), 8),
            held in prop::collection::vec(0usize..4, 8),
            tried in prop::collection::vec(0usize..8, 0..3),
            seed in any::<u64>(),
        ) {
            let set = set(&weights);
            for (i, b) in set.iter().enumerate() {
                b.set_backup(backup[i]);
            }
            // Built before the states change, as a snapshot is: health and
            // drains move under a running scheduler.
            let s = build(algorithm, &set);
            let mut guards = Vec::new();
            for (i, b) in set.iter().enumerate() {
                b.set_up(!down[i]);
                b.set_draining(draining[i]);
                guards.extend((0..held[i]).map(|_| b.open_connection()));
            }
            for c in clients(50, seed) {
                let picked = s.pick(&set, c, &tried);
                let verdict = check_pick(&set, &tried, picked);
                prop_assert!(verdict.is_ok(), "{:?}: {:?}", algorithm, verdict);
            }
        }
    }

    #[test]
    fn backups_only_when_no_primary_is_available() {
        for algorithm in ALL {
            let set = set(&[1, 1, 1]);
            set.get(2).unwrap().set_backup(true);
            let s = build(algorithm, &set);
            for _ in 0..10 {
                assert_ne!(s.pick(&set, client(), &[]), Some(2), "{algorithm:?}");
            }
            set.get(0).unwrap().set_up(false);
            set.get(1).unwrap().set_draining(true);
            assert_eq!(s.pick(&set, client(), &[]), Some(2), "{algorithm:?}");
            set.get(0).unwrap().set_up(true);
            assert_eq!(s.pick(&set, client(), &[]), Some(0), "{algorithm:?}");
        }
    }

    #[test]
    fn retries_fall_through_to_backups_after_every_primary_was_tried() {
        for algorithm in ALL {
            let set = set(&[1, 1, 1]);
            set.get(2).unwrap().set_backup(true);
            let s = build(algorithm, &set);
            assert_eq!(s.pick(&set, client(), &[0, 1]), Some(2), "{algorithm:?}");
            assert_eq!(s.pick(&set, client(), &[0, 1, 2]), None, "{algorithm:?}");
        }
    }

    #[test]
    fn retries_never_pick_the_same_backend_twice() {
        for algorithm in ALL {
            let set = set(&[3, 1, 2, 1]);
            set.get(3).unwrap().set_backup(true);
            let s = build(algorithm, &set);
            let mut tried = Vec::new();
            while let Some(i) = s.pick(&set, client(), &tried) {
                assert!(!tried.contains(&i), "{algorithm:?} picked {i} twice");
                tried.push(i);
            }
            assert_eq!(tried.len(), 4, "{algorithm:?}");
            assert_eq!(tried[3], 3, "{algorithm:?}: the backup comes last");
        }
    }

    #[test]
    fn all_down_rejects_or_tries_all_by_policy() {
        for algorithm in ALL {
            let set = set(&[1, 1]);
            for b in set.iter() {
                b.set_up(false);
            }
            let s = build(algorithm, &set);
            assert_eq!(pick(&*s, OnAllDown::Reject, &set, client(), &[]), None);
            assert_eq!(pick(&*s, OnAllDown::TryAll, &set, client(), &[]), Some(0));
            assert_eq!(pick(&*s, OnAllDown::TryAll, &set, client(), &[0]), Some(1));
            assert_eq!(pick(&*s, OnAllDown::TryAll, &set, client(), &[0, 1]), None);
        }
    }

    #[test]
    fn empty_set_picks_nothing() {
        for algorithm in ALL {
            let set = BackendSet::default();
            let s = build(algorithm, &set);
            assert_eq!(s.pick(&set, client(), &[]), None, "{algorithm:?}");
        }
    }

    #[test]
    fn draining_backends_take_no_new_connections() {
        for algorithm in ALL {
            let set = set(&[1, 1, 1]);
            set.get(1).unwrap().set_draining(true);
            let s = build(algorithm, &set);
            for c in clients(300, 7) {
                assert_ne!(s.pick(&set, c, &[]), Some(1), "{algorithm:?}");
            }
        }
    }

    #[test]
    fn concurrent_picks_stay_valid_and_reach_every_available_backend() {
        for algorithm in ALL {
            let set = set(&[1, 2, 1, 3, 1]);
            set.get(1).unwrap().set_up(false);
            set.get(4).unwrap().set_backup(true);
            let s = build(algorithm, &set);
            let counts = std::thread::scope(|scope| {
                let workers: Vec<_> = (0..4u64)
                    .map(|t| {
                        let (s, set) = (&s, &set);
                        scope.spawn(move || {
                            let mut counts = [0u32; 5];
                            let mut guards = Vec::new();
                            for c in clients(2000, t) {
                                let i = s.pick(set, c, &[]).expect("three primaries are up");
                                counts[i] += 1;
                                guards.push(set.get(i).unwrap().open_connection());
                            }
                            counts
                        })
                    })
                    .collect();
                workers.into_iter().fold([0u32; 5], |mut sum, w| {
                    for (s, c) in sum.iter_mut().zip(w.join().unwrap()) {
                        *s += c;
                    }
                    sum
                })
            });
            assert_eq!(counts[1], 0, "{algorithm:?}: down backend picked");
            assert_eq!(counts[4], 0, "{algorithm:?}: backup picked");
            for i in [0, 2, 3] {
                assert!(counts[i] > 0, "{algorithm:?}: {counts:?}");
            }
        }
    }
}
