//! Passive ejection as the checker reports it. The rule itself is
//! `tandem_config::Health::should_eject`, which the listener applies.

use tandem_config::{Health, HealthKind};

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
