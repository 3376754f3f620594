//! The VRRP metrics, registered once into the registry the binary hands
//! over; each instance keeps its label-resolved handles, so counting a
//! packet is one atomic add, never a registry lookup.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::packet::Reject;
use crate::InstanceState;

#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    state: IntGaugeVec,
    priority: IntGaugeVec,
    transitions: IntCounterVec,
    adverts: IntCounterVec,
    invalid: IntCounterVec,
    conflicts: IntCounterVec,
    restored: IntCounterVec,
}

impl Metrics {
    pub(crate) fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = Metrics {
            state: IntGaugeVec::new(
                Opts::new(
                    "tandem_vrrp_state",
                    "1 for the state each VRRP instance is in, 0 for the others.",
                ),
                &["vrrp_instance", "state"],
            )?,
            priority: IntGaugeVec::new(
                Opts::new(
                    "tandem_vrrp_priority",
                    "The priority each VRRP instance advertises now (tracking included).",
                ),
                &["vrrp_instance"],
            )?,
            transitions: IntCounterVec::new(
                Opts::new(
                    "tandem_vrrp_transitions_total",
                    "State changes of each VRRP instance, by the state entered.",
                ),
                &["vrrp_instance", "to"],
            )?,
            adverts: IntCounterVec::new(
                Opts::new(
                    "tandem_vrrp_adverts_total",
                    "VRRP adverts sent, and valid ones received for the instance's VRID.",
                ),
                &["vrrp_instance", "direction"],
            )?,
            invalid: IntCounterVec::new(
                Opts::new(
                    "tandem_vrrp_invalid_packets_total",
                    "VRRP packets dropped by the receive checks, by reason.",
                ),
                &["vrrp_instance", "reason"],
            )?,
            conflicts: IntCounterVec::new(
                Opts::new(
                    "tandem_vrrp_master_conflicts_total",
                    "Adverts from another master heard while master (two masters for one VRID).",
                ),
                &["vrrp_instance"],
            )?,
            restored: IntCounterVec::new(
                Opts::new(
                    "tandem_vrrp_vip_restored_total",
                    "Virtual IPs put back on the interface while master, after something else removed them.",
                ),
                &["vrrp_instance"],
            )?,
        };
        registry.register(Box::new(m.state.clone()))?;
        registry.register(Box::new(m.priority.clone()))?;
        registry.register(Box::new(m.transitions.clone()))?;
        registry.register(Box::new(m.adverts.clone()))?;
        registry.register(Box::new(m.invalid.clone()))?;
        registry.register(Box::new(m.conflicts.clone()))?;
        registry.register(Box::new(m.restored.clone()))?;
        Ok(m)
    }

    /// Every series of one instance, created now so each reads 0 until it counts.
    pub(crate) fn instance(&self, name: &str) -> InstanceMetrics {
        InstanceMetrics {
            state: InstanceState::ALL.map(|s| self.state.with_label_values(&[name, s.as_str()])),
            priority: self.priority.with_label_values(&[name]),
            transitions: InstanceState::ALL
                .map(|s| self.transitions.with_label_values(&[name, s.as_str()])),
            sent: self.adverts.with_label_values(&[name, "sent"]),
            received: self.adverts.with_label_values(&[name, "received"]),
            invalid: Reject::ALL.map(|r| self.invalid.with_label_values(&[name, r.as_str()])),
            conflicts: self.conflicts.with_label_values(&[name]),
            restored: self.restored.with_label_values(&[name]),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct InstanceMetrics {
    state: [IntGauge; 4],
    pub(crate) priority: IntGauge,
    transitions: [IntCounter; 4],
    pub(crate) sent: IntCounter,
    pub(crate) received: IntCounter,
    invalid: [IntCounter; 9],
    pub(crate) conflicts: IntCounter,
    pub(crate) restored: IntCounter,
}

impl InstanceMetrics {
    /// Sets the state gauges; counts a transition when `counted`.
    pub(crate) fn enter(&self, state: InstanceState, counted: bool) {
        for (s, g) in InstanceState::ALL.iter().zip(&self.state) {
            g.set(i64::from(*s == state));
        }
        if counted {
            self.transitions[state.index()].inc();
        }
    }

    pub(crate) fn invalid(&self, reason: Reject) -> &IntCounter {
        let i = Reject::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        &self.invalid[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Encoder;

    #[test]
    fn every_series_exists_from_the_start_and_counts() {
        let registry = Registry::new();
        let m = Metrics::register(&registry).unwrap();
        let i = m.instance("vip");
        i.enter(InstanceState::Backup, true);
        i.invalid(Reject::Checksum).inc();
        i.priority.set(150);
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .unwrap();
        let text = String::from_utf8(out).unwrap();
        for line in [
            "tandem_vrrp_state{state=\"backup\",vrrp_instance=\"vip\"} 1",
            "tandem_vrrp_state{state=\"master\",vrrp_instance=\"vip\"} 0",
            "tandem_vrrp_transitions_total{to=\"backup\",vrrp_instance=\"vip\"} 1",
            "tandem_vrrp_invalid_packets_total{reason=\"checksum\",vrrp_instance=\"vip\"} 1",
            "tandem_vrrp_invalid_packets_total{reason=\"ttl\",vrrp_instance=\"vip\"} 0",
            "tandem_vrrp_adverts_total{direction=\"sent\",vrrp_instance=\"vip\"} 0",
            "tandem_vrrp_priority{vrrp_instance=\"vip\"} 150",
            "tandem_vrrp_master_conflicts_total{vrrp_instance=\"vip\"} 0",
            "tandem_vrrp_vip_restored_total{vrrp_instance=\"vip\"} 0",
            "tandem_vrrp_invalid_packets_total{reason=\"unknown_peer\",vrrp_instance=\"vip\"} 0",
        ] {
            assert!(text.contains(line), "missing {line}:\n{text}");
        }
        assert!(
            Metrics::register(&registry).is_err(),
            "registering twice is refused"
        );
    }
}
