//! A service's shared state: the snapshot the accept path loads once per
//! connection, and the service-wide counters.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus::Histogram;
use tandem_config::{HashKey, HealthKind, InitialState, SchedulerKind, Service};
use tandem_core::{Backend, BackendSet};
use tandem_scheduler::{Algorithm, OnAllDown, Scheduler};

use crate::metrics::ListenerMetrics;
use crate::udp::UdpCounters;

/// One consistent view of a service: its config, its backends and the scheduler
/// built for exactly those backends. Replaced whole, never mutated.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Service,
    pub backends: BackendSet,
    pub scheduler: Box<dyn Scheduler>,
}

impl Snapshot {
    /// Builds a snapshot; backends also in `previous` (same address) are reused
    /// with their health state and counters, and take the new weight.
    pub fn build(config: Service, previous: Option<&Snapshot>) -> Self {
        let initially_up = match config.health.kind {
            HealthKind::None => true,
            _ => config.health.initial == InitialState::Up,
        };
        let backends = BackendSet::new(
            config
                .backends
                .iter()
                .map(
                    |spec| match previous.and_then(|p| p.backends.find(spec.address)) {
                        Some(kept)
                            if kept.label()
                                == spec.name.as_deref().unwrap_or(&spec.address.to_string()) =>
                        {
                            kept.set_weight(spec.weight);
                            kept.set_backup(spec.backup);
                            Arc::clone(kept)
                        }
                        _ => Arc::new(Backend::new(
                            spec.address,
                            spec.name.as_deref(),
                            spec.weight,
                            spec.backup,
                            initially_up,
                        )),
                    },
                )
                .collect(),
        );
        let scheduler =
            tandem_scheduler::build(algorithm(config.scheduler, config.hash_key), &backends);
        Snapshot {
            config,
            backends,
            scheduler,
        }
    }

    pub fn on_all_down(&self) -> OnAllDown {
        match self.config.on_all_down {
            tandem_config::OnAllDown::Reject => OnAllDown::Reject,
            tandem_config::OnAllDown::TryAll => OnAllDown::TryAll,
        }
    }
}

/// Maps the configured scheduler to the scheduler crate's algorithm.
fn algorithm(kind: SchedulerKind, key: HashKey) -> Algorithm {
    match kind {
        SchedulerKind::RoundRobin => Algorithm::RoundRobin,
        SchedulerKind::LeastConnections => Algorithm::LeastConnections,
        SchedulerKind::SourceHash => Algorithm::SourceHash(match key {
            HashKey::SourceIp => tandem_scheduler::HashKey::SourceIp,
            HashKey::SourceIpPort => tandem_scheduler::HashKey::SourceIpPort,
        }),
        SchedulerKind::Random => Algorithm::Random,
    }
}

/// Counters of one service that belong to no backend.
#[derive(Debug, Default)]
pub struct ServiceCounters {
    pub accepted: AtomicU64,
    /// Closed at once because `max_connections` were open.
    pub rejected_over_limit: AtomicU64,
    /// Closed because no backend could be connected (none available, or all failed).
    pub no_backend: AtomicU64,
    /// Cut when the drain timeout ran out.
    pub cut_at_drain: AtomicU64,
    pub active: AtomicU64,
    /// UDP services only.
    pub udp: UdpCounters,
}

impl ServiceCounters {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }
}

/// A service as the running process holds it. Reload keeps this (and so its
/// counters) for a service whose name stays, and swaps in a new snapshot.
#[derive(Debug)]
pub struct ServiceState {
    pub name: String,
    pub snapshot: ArcSwap<Snapshot>,
    pub counters: ServiceCounters,
    pub(crate) duration: Histogram,
}

impl ServiceState {
    pub fn new(config: Service, metrics: &ListenerMetrics) -> Arc<Self> {
        Arc::new(ServiceState {
            name: config.name.clone(),
            duration: metrics.durations.with_label_values(&[config.name.as_str()]),
            snapshot: ArcSwap::from_pointee(Snapshot::build(config, None)),
            counters: ServiceCounters::default(),
        })
    }

    /// Applies a new config of the same service: backends that stay keep their
    /// state and counters; new connections see the new snapshot at once.
    pub fn update(&self, config: Service) {
        let previous = self.snapshot.load();
        let next = Snapshot::build(config, Some(&previous));
        self.snapshot.store(Arc::new(next));
    }
}
