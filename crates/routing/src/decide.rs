//! Which VIPs to announce, as a pure function of what the daemon knows:
//! the services that have an available backend, the node's maintenance
//! switch, and whether it is stopping. Kept apart from netlink so every
//! rule is a table test.

use std::collections::HashSet;
use std::net::IpAddr;

use tandem_config::RoutedVip;

/// Why a VIP is not announced (or `Announced`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Announced,
    /// The daemon is shutting down: the first thing it does is withdraw.
    Stopping,
    /// An operator put the node in maintenance (`tandem maintenance on`).
    Maintenance,
    /// This service has no backend that is up and not draining.
    Unavailable(String),
}

impl Verdict {
    pub fn is_announced(&self) -> bool {
        matches!(self, Verdict::Announced)
    }

    /// Words for `tandem status` and the logs.
    pub fn reason(&self) -> String {
        match self {
            Verdict::Announced => "announced".to_owned(),
            Verdict::Stopping => "withdrawn: stopping".to_owned(),
            Verdict::Maintenance => "withdrawn: node in maintenance".to_owned(),
            Verdict::Unavailable(s) => {
                format!("withdrawn: service `{s}` has no available backend")
            }
        }
    }
}

/// What the decision is made from.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// Services with at least one backend up and not draining. A service
    /// not (yet) reported counts as unavailable: nothing is announced
    /// before health says it may be.
    pub available: HashSet<String>,
    pub maintenance: bool,
    pub stopping: bool,
}

/// The verdict for `vip`: stopping wins over maintenance, which wins over
/// health; among services, the first unavailable one in the VIP's list.
pub fn decide(vip: &RoutedVip, inputs: &Inputs) -> Verdict {
    if inputs.stopping {
        return Verdict::Stopping;
    }
    if inputs.maintenance {
        return Verdict::Maintenance;
    }
    match vip
        .services
        .iter()
        .find(|s| !inputs.available.contains(s.as_str()))
    {
        Some(s) => Verdict::Unavailable(s.clone()),
        None => Verdict::Announced,
    }
}

/// Every VIP's verdict, in the configuration's order.
pub fn decide_all(vips: &[RoutedVip], inputs: &Inputs) -> Vec<(IpAddr, Verdict)> {
    vips.iter()
        .map(|v| (v.address, decide(v, inputs)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vip(services: &[&str]) -> RoutedVip {
        RoutedVip {
            address: "198.18.100.1".parse().unwrap(),
            services: services.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn inputs(available: &[&str], maintenance: bool, stopping: bool) -> Inputs {
        Inputs {
            available: available.iter().map(|s| (*s).to_owned()).collect(),
            maintenance,
            stopping,
        }
    }

    #[test]
    fn the_rules_in_order() {
        use Verdict::*;
        let cases = [
            (vec!["api"], inputs(&["api"], false, false), Announced),
            (
                vec!["api", "dns"],
                inputs(&["api", "dns"], false, false),
                Announced,
            ),
            (
                vec!["api", "dns"],
                inputs(&["api"], false, false),
                Unavailable("dns".into()),
            ),
            (
                vec!["api", "dns"],
                inputs(&[], false, false),
                Unavailable("api".into()),
            ),
            (vec!["api"], inputs(&["api"], true, false), Maintenance),
            (vec!["api"], inputs(&[], true, false), Maintenance),
            (vec!["api"], inputs(&["api"], true, true), Stopping),
            (vec!["api"], inputs(&["api"], false, true), Stopping),
        ];
        for (services, inputs, want) in cases {
            assert_eq!(
                decide(&vip(&services), &inputs),
                want,
                "{services:?} {inputs:?}"
            );
        }
    }

    #[test]
    fn reasons_read_as_sentences() {
        assert_eq!(
            Verdict::Unavailable("api".into()).reason(),
            "withdrawn: service `api` has no available backend"
        );
        assert_eq!(Verdict::Announced.reason(), "announced");
    }

    proptest! {
        /// Announced exactly when not stopping, not in maintenance and every
        /// service it follows is available.
        #[test]
        fn announced_iff_everything_it_follows_is_available(
            follows in proptest::collection::vec(0..6u8, 1..4),
            available in proptest::collection::hash_set(0..6u8, 0..6),
            maintenance: bool,
            stopping: bool,
        ) {
            let names = |v: &mut dyn Iterator<Item = &u8>| v.map(|n| format!("s{n}")).collect::<Vec<_>>();
            let v = RoutedVip { address: "2001:2::1".parse().unwrap(), services: names(&mut follows.iter()) };
            let i = Inputs { available: names(&mut available.iter()).into_iter().collect(), maintenance, stopping };
            let want = !stopping && !maintenance && follows.iter().all(|n| available.contains(n));
            prop_assert_eq!(decide(&v, &i).is_announced(), want);
        }
    }
}
