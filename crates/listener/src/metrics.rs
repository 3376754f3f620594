//! The listener's metrics. Per-backend counters are read from the backends'
//! atomics when Prometheus scrapes (a custom collector), so the data path never
//! touches the registry; the one histogram is resolved to a handle per service
//! when the service is created, never looked up per connection.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Histogram, HistogramOpts, HistogramVec, Registry};
use tandem_core::{Backend, ConnectFailure, Protocol};
use tandem_forward::Forwarder;

use crate::service::Services;

/// Handles the listener keeps for its metrics.
#[derive(Debug, Clone)]
pub struct ListenerMetrics {
    durations: HistogramVec,
}

impl ListenerMetrics {
    /// Registers the listener's metric families into `registry`.
    pub fn register(
        registry: &Registry,
        services: Arc<Services>,
        forwarder: Forwarder,
    ) -> prometheus::Result<Self> {
        let durations = HistogramVec::new(
            HistogramOpts::new(
                "tandem_connection_duration_seconds",
                "How long proxied TCP connections lasted, from accept to close.",
            )
            .buckets(vec![
                0.001, 0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 30.0, 60.0, 300.0, 1800.0, 3600.0,
                14400.0, 86400.0,
            ]),
            &["service"],
        )?;
        registry.register(Box::new(durations.clone()))?;
        registry.register(Box::new(BackendCollector::new(services, forwarder)?))?;
        Ok(ListenerMetrics { durations })
    }

    /// The connection-duration histogram of one service, for [`crate::ServiceState::new`].
    pub fn duration_of(&self, service: &str) -> Histogram {
        self.durations.with_label_values(&[service])
    }

    /// Metrics that go nowhere, for tests and tools that do not scrape.
    pub fn unregistered() -> Self {
        ListenerMetrics {
            durations: HistogramVec::new(
                HistogramOpts::new("tandem_connection_duration_seconds", "unregistered"),
                &["service"],
            )
            .expect("static histogram options are valid"),
        }
    }
}

struct Family {
    desc: Desc,
    kind: MetricType,
}

struct BackendCollector {
    services: Arc<Services>,
    forwarder: Forwarder,
    forwarded: Family,
    connections: Family,
    active: Family,
    bytes: Family,
    connect_errors: Family,
    up: Family,
    draining: Family,
    rejected: Family,
    udp_sessions: Family,
    udp_datagrams: Family,
    udp_bytes: Family,
    udp_dropped: Family,
}

impl BackendCollector {
    fn new(services: Arc<Services>, forwarder: Forwarder) -> prometheus::Result<Self> {
        let family =
            |name: &str, help: &str, labels: &[&str], kind| -> prometheus::Result<Family> {
                Ok(Family {
                    desc: Desc::new(
                        name.to_owned(),
                        help.to_owned(),
                        labels.iter().map(|l| (*l).to_owned()).collect(),
                        Default::default(),
                    )?,
                    kind,
                })
            };
        let sb = &["service", "backend"];
        Ok(BackendCollector {
            services,
            forwarder,
            forwarded: family(
                "tandem_forwarded_bytes_total",
                "TCP payload bytes moved, both directions, by method: splice (zero copy) or copy (userspace).",
                &["method"],
                MetricType::COUNTER,
            )?,
            connections: family(
                "tandem_connections_total",
                "TCP connections proxied to a backend (counted when the backend connect succeeds).",
                sb,
                MetricType::COUNTER,
            )?,
            active: family(
                "tandem_active_connections",
                "TCP connections open to a backend now.",
                sb,
                MetricType::GAUGE,
            )?,
            bytes: family(
                "tandem_bytes_total",
                "Bytes proxied; direction `in` is client to backend, `out` is backend to client.",
                &["service", "backend", "direction"],
                MetricType::COUNTER,
            )?,
            connect_errors: family(
                "tandem_connect_errors_total",
                "Failed connects to a backend, by reason (refused, timeout, other).",
                &["service", "backend", "reason"],
                MetricType::COUNTER,
            )?,
            up: family(
                "tandem_backend_up",
                "1 when the backend is up (healthy), 0 when down.",
                sb,
                MetricType::GAUGE,
            )?,
            draining: family(
                "tandem_backend_draining",
                "1 while an operator drains the backend (no new connections).",
                sb,
                MetricType::GAUGE,
            )?,
            rejected: family(
                "tandem_connections_rejected_total",
                "Client connections closed without a backend, by reason (max_connections, no_backend, denied, proxy_untrusted, proxy_missing, proxy_malformed, proxy_timeout, source_connections, source_rate).",
                &["service", "reason"],
                MetricType::COUNTER,
            )?,
            udp_sessions: family(
                "tandem_udp_sessions_active",
                "UDP sessions (client address and port to one backend) open now.",
                &["service"],
                MetricType::GAUGE,
            )?,
            udp_datagrams: family(
                "tandem_udp_datagrams_total",
                "UDP datagrams relayed; direction `in` is client to backend, `out` is backend to client.",
                &["service", "direction"],
                MetricType::COUNTER,
            )?,
            udp_bytes: family(
                "tandem_udp_bytes_total",
                "UDP payload bytes relayed, by direction.",
                &["service", "direction"],
                MetricType::COUNTER,
            )?,
            udp_dropped: family(
                "tandem_udp_dropped_total",
                "UDP datagrams dropped, by reason (max_sessions, fd_budget, no_backend, busy, backend_refused, and the admission reasons: denied, source_connections, source_rate).",
                &["service", "reason"],
                MetricType::COUNTER,
            )?,
        })
    }
}

fn labels(pairs: &[(&str, &str)]) -> Vec<LabelPair> {
    pairs
        .iter()
        .map(|(n, v)| {
            let mut l = LabelPair::default();
            l.set_name((*n).to_owned());
            l.set_value((*v).to_owned());
            l
        })
        .collect()
}

fn metric(kind: MetricType, pairs: &[(&str, &str)], value: f64) -> Metric {
    let mut m = Metric::default();
    m.set_label(labels(pairs));
    match kind {
        MetricType::COUNTER => {
            let mut c = Counter::default();
            c.set_value(value);
            m.set_counter(c);
        }
        _ => {
            let mut g = Gauge::default();
            g.set_value(value);
            m.set_gauge(g);
        }
    }
    m
}

impl Family {
    fn start(&self) -> MetricFamily {
        let mut f = MetricFamily::default();
        f.set_name(self.desc.fq_name.clone());
        f.set_help(self.desc.help.clone());
        f.set_field_type(self.kind);
        f
    }
}

impl Collector for BackendCollector {
    fn desc(&self) -> Vec<&Desc> {
        [
            &self.forwarded,
            &self.connections,
            &self.active,
            &self.bytes,
            &self.connect_errors,
            &self.up,
            &self.draining,
            &self.rejected,
            &self.udp_sessions,
            &self.udp_datagrams,
            &self.udp_bytes,
            &self.udp_dropped,
        ]
        .into_iter()
        .map(|f| &f.desc)
        .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut forwarded = self.forwarded.start();
        for (method, value) in [
            ("splice", self.forwarder.spliced_bytes()),
            ("copy", self.forwarder.copied_bytes()),
        ] {
            forwarded.mut_metric().push(metric(
                MetricType::COUNTER,
                &[("method", method)],
                value as f64,
            ));
        }
        let mut connections = self.connections.start();
        let mut active = self.active.start();
        let mut bytes = self.bytes.start();
        let mut errors = self.connect_errors.start();
        let mut up = self.up.start();
        let mut draining = self.draining.start();
        let mut rejected = self.rejected.start();
        let mut udp_sessions = self.udp_sessions.start();
        let mut udp_datagrams = self.udp_datagrams.start();
        let mut udp_bytes = self.udp_bytes.start();
        let mut udp_dropped = self.udp_dropped.start();
        for service in self.services.load().iter() {
            let s = service.name.as_str();
            let snapshot = service.snapshot.load();
            for backend in snapshot.backends.iter() {
                let b = backend.label();
                let sb = [("service", s), ("backend", b)];
                let count = |v: u64| v as f64;
                connections.mut_metric().push(metric(
                    MetricType::COUNTER,
                    &sb,
                    count(backend.total_connections()),
                ));
                active.mut_metric().push(metric(
                    MetricType::GAUGE,
                    &sb,
                    count(backend.active_connections()),
                ));
                push_bytes(&mut bytes, s, backend);
                for kind in ConnectFailure::ALL {
                    errors.mut_metric().push(metric(
                        MetricType::COUNTER,
                        &[("service", s), ("backend", b), ("reason", kind.as_str())],
                        count(backend.connect_failures_of(kind)),
                    ));
                }
                up.mut_metric().push(metric(
                    MetricType::GAUGE,
                    &sb,
                    f64::from(u8::from(backend.is_up())),
                ));
                draining.mut_metric().push(metric(
                    MetricType::GAUGE,
                    &sb,
                    f64::from(u8::from(backend.is_draining())),
                ));
            }
            let c = &service.counters;
            if snapshot.config.protocol == Protocol::Udp {
                let u = &c.udp;
                udp_sessions.mut_metric().push(metric(
                    MetricType::GAUGE,
                    &[("service", s)],
                    u.sessions_active.load(Relaxed) as f64,
                ));
                for (direction, datagrams, bytes) in [
                    ("in", &u.datagrams_in, &u.bytes_in),
                    ("out", &u.datagrams_out, &u.bytes_out),
                ] {
                    let labels = [("service", s), ("direction", direction)];
                    udp_datagrams.mut_metric().push(metric(
                        MetricType::COUNTER,
                        &labels,
                        datagrams.load(Relaxed) as f64,
                    ));
                    udp_bytes.mut_metric().push(metric(
                        MetricType::COUNTER,
                        &labels,
                        bytes.load(Relaxed) as f64,
                    ));
                }
                for (reason, value) in u.drops().into_iter().chain(c.refused.counts()) {
                    udp_dropped.mut_metric().push(metric(
                        MetricType::COUNTER,
                        &[("service", s), ("reason", reason)],
                        value as f64,
                    ));
                }
                continue;
            }
            let limits = [
                ("max_connections", c.rejected_over_limit.load(Relaxed)),
                ("no_backend", c.no_backend.load(Relaxed)),
            ];
            for (reason, value) in limits.into_iter().chain(c.refused.counts()) {
                rejected.mut_metric().push(metric(
                    MetricType::COUNTER,
                    &[("service", s), ("reason", reason)],
                    value as f64,
                ));
            }
        }
        let families = [
            forwarded,
            connections,
            active,
            bytes,
            errors,
            up,
            draining,
            rejected,
            udp_sessions,
            udp_datagrams,
            udp_bytes,
            udp_dropped,
        ];
        // An empty family is not exposed (promtool wants samples under every HELP).
        families
            .into_iter()
            .filter(|f| !f.get_metric().is_empty())
            .collect()
    }
}

fn push_bytes(family: &mut MetricFamily, service: &str, backend: &Backend) {
    for (direction, value) in [
        ("in", backend.bytes_from_client()),
        ("out", backend.bytes_to_client()),
    ] {
        family.mut_metric().push(metric(
            MetricType::COUNTER,
            &[
                ("service", service),
                ("backend", backend.label()),
                ("direction", direction),
            ],
            value as f64,
        ));
    }
}
