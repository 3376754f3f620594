//! `tandem_routing_*`: whether each VIP is announced, how often that
//! changed, and failed route updates.

use std::collections::HashMap;
use std::net::IpAddr;

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use tandem_config::RoutedVip;

#[derive(Debug)]
struct PerVip {
    announced: IntGauge,
    to_announced: IntCounter,
    to_withdrawn: IntCounter,
    errors: IntCounter,
}

#[derive(Debug)]
pub(crate) struct Metrics {
    vips: HashMap<IpAddr, PerVip>,
}

impl Metrics {
    pub(crate) fn register(registry: &Registry, vips: &[RoutedVip]) -> prometheus::Result<Self> {
        let announced = IntGaugeVec::new(
            Opts::new(
                "tandem_routing_announced",
                "1 while the VIP's route is in tandem's routing table (announced by the routing daemon), else 0.",
            ),
            &["vip"],
        )?;
        let changes = IntCounterVec::new(
            Opts::new(
                "tandem_routing_changes_total",
                "Announcements and withdrawals of each VIP's route.",
            ),
            &["vip", "to"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new(
                "tandem_routing_errors_total",
                "Route updates the kernel refused (retried every second).",
            ),
            &["vip"],
        )?;
        registry.register(Box::new(announced.clone()))?;
        registry.register(Box::new(changes.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        let vips = vips
            .iter()
            .map(|v| {
                let label = v.address.to_string();
                let per = PerVip {
                    announced: announced.with_label_values(&[&label]),
                    to_announced: changes.with_label_values(&[&label, "announced"]),
                    to_withdrawn: changes.with_label_values(&[&label, "withdrawn"]),
                    errors: errors.with_label_values(&[&label]),
                };
                (v.address, per)
            })
            .collect();
        Ok(Metrics { vips })
    }

    pub(crate) fn changed(&self, vip: IpAddr, announced: bool) {
        if let Some(m) = self.vips.get(&vip) {
            m.announced.set(i64::from(announced));
            if announced {
                m.to_announced.inc();
            } else {
                m.to_withdrawn.inc();
            }
        }
    }

    pub(crate) fn error(&self, vip: IpAddr) {
        if let Some(m) = self.vips.get(&vip) {
            m.errors.inc();
        }
    }
}
