//! The health checker's metrics, registered by this crate as every component
//! registers its own: how long probes take and why they fail.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

use crate::{ProbeObserver, ProbeReport};

/// `tandem_health_check_duration_seconds{service, backend}` and
/// `tandem_health_check_failures_total{service, backend, reason}`.
#[derive(Debug, Clone)]
pub struct HealthMetrics {
    durations: HistogramVec,
    failures: IntCounterVec,
}

impl HealthMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let durations = HistogramVec::new(
            HistogramOpts::new(
                "tandem_health_check_duration_seconds",
                "How long health probes took, successful or not.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ]),
            &["service", "backend"],
        )?;
        let failures = IntCounterVec::new(
            Opts::new(
                "tandem_health_check_failures_total",
                "Failed health probes, by reason (refused, timeout, closed, io, tls, status, body, reply, malformed).",
            ),
            &["service", "backend", "reason"],
        )?;
        registry.register(Box::new(durations.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        Ok(HealthMetrics {
            durations,
            failures,
        })
    }

    /// Records one probe.
    pub fn observe(&self, report: &ProbeReport) {
        let (service, backend) = (report.service.as_str(), report.backend.as_str());
        self.durations
            .with_label_values(&[service, backend])
            .observe(report.duration.as_secs_f64());
        if let Some(failure) = &report.failure {
            self.failures
                .with_label_values(&[service, backend, failure.kind()])
                .inc();
        }
    }

    /// An observer for [`crate::Handle::set_probe_observer`] that records every probe.
    pub fn observer(&self) -> ProbeObserver {
        let metrics = self.clone();
        std::sync::Arc::new(move |report: &ProbeReport| metrics.observe(report))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::ProbeFailure;

    fn report(failure: Option<ProbeFailure>) -> ProbeReport {
        ProbeReport {
            service: "api".into(),
            backend: "b1".into(),
            address: tandem_core::BackendAddress(([127, 0, 0, 1], 1).into()),
            ok: failure.is_none(),
            reason: failure
                .as_ref()
                .map_or("connected".into(), ToString::to_string),
            failure,
            at: SystemTime::now(),
            duration: Duration::from_millis(3),
            up: true,
        }
    }

    #[test]
    fn failures_are_counted_by_reason_and_every_probe_is_timed() {
        let registry = Registry::new();
        let metrics = HealthMetrics::register(&registry).unwrap();
        metrics.observe(&report(None));
        metrics.observe(&report(Some(ProbeFailure::Status(500))));
        metrics.observe(&report(Some(ProbeFailure::Status(503))));
        metrics.observe(&report(Some(ProbeFailure::Refused)));
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(text.contains(r#"tandem_health_check_failures_total{backend="b1",reason="status",service="api"} 2"#), "{text}");
        assert!(text.contains(r#"tandem_health_check_failures_total{backend="b1",reason="refused",service="api"} 1"#), "{text}");
        assert!(
            text.contains(
                r#"tandem_health_check_duration_seconds_count{backend="b1",service="api"} 4"#
            ),
            "{text}"
        );
    }

    #[test]
    fn every_failure_kind_is_listed() {
        let all = [
            ProbeFailure::Refused,
            ProbeFailure::Timeout {
                after: Duration::from_secs(1),
                phase: crate::Phase::Connecting,
            },
            ProbeFailure::Closed { step: "response" },
            ProbeFailure::Io {
                step: "connect",
                text: "network is unreachable".into(),
            },
            ProbeFailure::Tls("x".into()),
            ProbeFailure::Status(500),
            ProbeFailure::Body("ok".into()),
            ProbeFailure::Reply("pong".into()),
            ProbeFailure::Malformed("x".into()),
        ];
        let kinds: Vec<_> = all.iter().map(ProbeFailure::kind).collect();
        assert_eq!(kinds, ProbeFailure::KINDS);
        assert_eq!(all[1].to_string(), "timed out after 1s while connecting");
    }
}
