//! The one home of service state: the snapshot the accept path loads once per
//! connection, the service-wide counters (TCP and UDP), and [`Services`], the
//! list the process runs now, which the metrics collector and the admin
//! endpoint read.
//!
//! Nothing here imports the accept loops or the metrics: they import this.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus::Histogram;
use tandem_config::Service;
use tandem_core::{Backend, BackendSet, ConnectFailure};
use tandem_scheduler::Scheduler;
use tracing::debug;

use crate::admission::{Refusals, SourceTable};

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
        let initially_up = config.health.starts_up();
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
                            kept.set_send_proxy(spec.send_proxy);
                            Arc::clone(kept)
                        }
                        _ => {
                            let new = Backend::new(
                                spec.address,
                                spec.name.as_deref(),
                                spec.weight,
                                spec.backup,
                                initially_up,
                            );
                            new.set_send_proxy(spec.send_proxy);
                            Arc::new(new)
                        }
                    },
                )
                .collect(),
        );
        let scheduler = tandem_scheduler::build(config.scheduler, config.hash_key, &backends);
        Snapshot {
            config,
            backends,
            scheduler,
        }
    }

    /// Records a failed connect (TCP) or refusal (UDP) to `backend` and
    /// applies passive ejection: `eject_after` failures in a row mark it down
    /// until the active health check brings it back.
    pub fn record_connect_failure(&self, backend: &Backend, kind: ConnectFailure) {
        let in_a_row = backend.record_connect_failure(kind);
        // The health checker logs the transition (one line, with the reason)
        // when it notices at its next probe; here it is only a debug line.
        if self.config.health.should_eject(in_a_row) && backend.set_up(false) {
            debug!(
                backend = %backend.label(),
                failures = in_a_row,
                "backend ejected after consecutive connect failures; health checks will bring it back"
            );
        }
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
    /// Turned away by `allow`/`deny`, `limits` or `proxy_protocol.accept`.
    pub refused: Refusals,
}

impl ServiceCounters {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }
}

/// Per-service UDP counters, read by the metrics collector.
#[derive(Debug, Default)]
pub struct UdpCounters {
    pub sessions_active: AtomicU64,
    pub sessions_total: AtomicU64,
    pub datagrams_in: AtomicU64,
    pub datagrams_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub dropped_max_sessions: AtomicU64,
    pub dropped_no_backend: AtomicU64,
    pub dropped_busy: AtomicU64,
    pub dropped_refused: AtomicU64,
    pub dropped_fd_budget: AtomicU64,
}

impl UdpCounters {
    /// Drop counters by reason, as exported.
    pub fn drops(&self) -> [(&'static str, u64); 5] {
        [
            ("max_sessions", self.dropped_max_sessions.load(Relaxed)),
            ("no_backend", self.dropped_no_backend.load(Relaxed)),
            ("busy", self.dropped_busy.load(Relaxed)),
            ("backend_refused", self.dropped_refused.load(Relaxed)),
            ("fd_budget", self.dropped_fd_budget.load(Relaxed)),
        ]
    }
}

/// A service as the running process holds it. Reload keeps this (and so its
/// counters) for a service whose name stays, and swaps in a new snapshot.
#[derive(Debug)]
pub struct ServiceState {
    pub name: String,
    pub snapshot: ArcSwap<Snapshot>,
    pub counters: ServiceCounters,
    /// Per-source counts for `limits`; kept across reloads.
    pub sources: Arc<SourceTable>,
    pub(crate) duration: Histogram,
}

impl ServiceState {
    /// `duration` is the service's connection-duration histogram
    /// ([`crate::ListenerMetrics::duration_of`]).
    pub fn new(config: Service, duration: Histogram) -> Arc<Self> {
        Arc::new(ServiceState {
            name: config.name.clone(),
            duration,
            snapshot: ArcSwap::from_pointee(Snapshot::build(config, None)),
            counters: ServiceCounters::default(),
            sources: Arc::default(),
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

/// The services the process runs now; replaced whole when a reload commits.
#[derive(Debug, Default)]
pub struct Services {
    list: ArcSwap<Vec<Arc<ServiceState>>>,
}

impl Services {
    pub fn new() -> Arc<Self> {
        Arc::new(Services::default())
    }

    pub fn load(&self) -> Arc<Vec<Arc<ServiceState>>> {
        self.list.load_full()
    }

    pub fn store(&self, services: Vec<Arc<ServiceState>>) {
        self.list.store(Arc::new(services));
    }

    pub fn find(&self, name: &str) -> Option<Arc<ServiceState>> {
        self.list.load().iter().find(|s| s.name == name).cloned()
    }
}
