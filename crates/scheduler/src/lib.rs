//! tandem's backend selection.
//!
//! A [`Scheduler`] is built once per service snapshot from its [`BackendSet`]
//! (precomputing whatever tables it needs) and then picks an index into that
//! set for every new connection, lock-free: it reads the backends' atomics and
//! its own atomics, never a mutex.
//!
//! Every algorithm follows the same rules, enforced by [`Candidates`]:
//! - only available backends (up and not draining) are picked;
//! - a backend already tried for this connection is never picked again;
//! - `backup` backends are picked only when no primary can be.
//!
//! What to do when nothing is available (reject, or try every backend anyway)
//! is [`OnAllDown`], applied by [`pick`].

mod round_robin;

use std::fmt::Debug;
use std::net::SocketAddr;

use tandem_core::{Backend, BackendSet};

pub use round_robin::RoundRobin;

/// The algorithms a service can choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RoundRobin,
}

/// What to do with a connection when no backend is available.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnAllDown {
    Reject,
    TryAll,
}

/// Picks a backend for a new connection.
pub trait Scheduler: Send + Sync + Debug {
    /// The index of an available backend not in `tried`, or `None` when there is none.
    fn pick(&self, backends: &BackendSet, client: SocketAddr, tried: &[usize]) -> Option<usize>;
}

/// Builds the scheduler of `algorithm` for this set of backends.
pub fn build(algorithm: Algorithm, backends: &BackendSet) -> Box<dyn Scheduler> {
    match algorithm {
        Algorithm::RoundRobin => Box::new(RoundRobin::new(backends)),
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
}

#[cfg(test)]
pub(crate) mod testing {
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

    pub fn client() -> std::net::SocketAddr {
        ([127, 0, 0, 1], 40000).into()
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn backups_only_when_no_primary_is_available() {
        let set = set(&[1, 1, 1]);
        set.get(2).unwrap().set_backup(true);
        let rr = build(Algorithm::RoundRobin, &set);
        for _ in 0..10 {
            assert_ne!(rr.pick(&set, client(), &[]), Some(2));
        }
        set.get(0).unwrap().set_up(false);
        set.get(1).unwrap().set_draining(true);
        assert_eq!(rr.pick(&set, client(), &[]), Some(2));
        set.get(0).unwrap().set_up(true);
        assert_eq!(rr.pick(&set, client(), &[]), Some(0));
    }

    #[test]
    fn retries_fall_through_to_backups_after_every_primary_was_tried() {
        let set = set(&[1, 1, 1]);
        set.get(2).unwrap().set_backup(true);
        let rr = build(Algorithm::RoundRobin, &set);
        assert_eq!(rr.pick(&set, client(), &[0, 1]), Some(2));
        assert_eq!(rr.pick(&set, client(), &[0, 1, 2]), None);
    }

    #[test]
    fn all_down_rejects_or_tries_all_by_policy() {
        let set = set(&[1, 1]);
        for b in set.iter() {
            b.set_up(false);
        }
        let rr = build(Algorithm::RoundRobin, &set);
        assert_eq!(pick(&*rr, OnAllDown::Reject, &set, client(), &[]), None);
        assert_eq!(pick(&*rr, OnAllDown::TryAll, &set, client(), &[]), Some(0));
        assert_eq!(pick(&*rr, OnAllDown::TryAll, &set, client(), &[0]), Some(1));
        assert_eq!(pick(&*rr, OnAllDown::TryAll, &set, client(), &[0, 1]), None);
    }
}
