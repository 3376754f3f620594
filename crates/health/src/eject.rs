//! Passive ejection: the listener's side of health. Pure.

use tandem_config::{Health, HealthKind};

/// Whether the listener should mark a backend down (`backend.set_up(false)`)
/// after `consecutive_failures` failed connects in a row
/// (`Backend::record_connect_failure` returns that count).
///
/// True only when `eject_after` is set, the count has reached it, **and** the
/// service has an active probe: with `type: none` nothing would ever bring the
/// backend back, so it is never ejected. The [`crate::Checker`] notices the
/// ejection at the backend's next probe, logs and publishes it once, and
/// brings the backend back after `rise` successful probes.
pub fn should_eject(consecutive_failures: u32, health: &Health) -> bool {
    let probed = health.kind != HealthKind::None;
    match health.eject_after {
        Some(limit) => probed && consecutive_failures >= limit.get(),
        None => false,
    }
}

/// The reason logged and published when an ejection is noticed.
pub(crate) fn ejection_reason(health: &Health) -> String {
    match health.eject_after {
        Some(n) if health.kind != HealthKind::None => {
            format!("ejected after {n} consecutive connect failures")
        }
        _ => "marked down outside the health checker".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::health;
    use std::num::NonZeroU32;

    #[test]
    fn ejects_only_with_eject_after_and_an_active_probe() {
        let cases = [
            (HealthKind::Tcp, Some(3), 2, false),
            (HealthKind::Tcp, Some(3), 3, true),
            (HealthKind::Https, Some(3), 4, true),
            (HealthKind::Udp, Some(1), 1, true),
            (HealthKind::Tcp, None, 100, false),
            (HealthKind::None, Some(3), 100, false),
            (HealthKind::Http, Some(1), 0, false),
        ];
        for (kind, eject_after, failures, want) in cases {
            let mut h = health(kind);
            h.eject_after = eject_after.and_then(NonZeroU32::new);
            assert_eq!(
                should_eject(failures, &h),
                want,
                "{kind:?} eject_after={eject_after:?} failures={failures}"
            );
        }
    }

    #[test]
    fn reason_names_the_count() {
        let mut h = health(HealthKind::Tcp);
        h.eject_after = NonZeroU32::new(3);
        assert_eq!(
            ejection_reason(&h),
            "ejected after 3 consecutive connect failures"
        );
        h.eject_after = None;
        assert_eq!(
            ejection_reason(&h),
            "marked down outside the health checker"
        );
    }
}
