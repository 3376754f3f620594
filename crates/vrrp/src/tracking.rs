//! The tracking arithmetic, checked before it is needed.
//!
//! keepalived's classic trap: a master at 150 tracks a check with `weight -2`
//! over a backup at 100. The check fails, the master advertises 148, still
//! above 100, and the VIP never moves. [`tracking_warnings`] finds this from
//! one node's file. The other nodes' priorities are not in that file, so it
//! uses `track.peer_priorities` when the operator wrote them down, and
//! otherwise compares with 100 (the default priority of tandem and
//! keepalived, what an unset backup has) and says so. See docs/vrrp.md.

use tandem_config::VrrpInstance;

use crate::machine::effective_priority;

/// The priority assumed for the other nodes when `track.peer_priorities` is
/// empty: the one they have when their configuration sets none.
pub const ASSUMED_PEER_PRIORITY: u8 = tandem_config::DEFAULT_VRRP_PRIORITY;

/// Warnings about `instance`'s tracking, for `tandem check` to print; empty
/// when a tracked failure moves the VIP as intended (or nothing is tracked).
pub fn tracking_warnings(instance: &VrrpInstance) -> Vec<String> {
    let mut out = Vec::new();
    let track = &instance.track;
    if track.services.is_empty() || track.weight == 0 {
        return out;
    }
    let name = &instance.name;
    let p = instance.priority;
    let w = track.weight;
    let services = track.services.join(", ");
    if p == 255 {
        out.push(format!(
            "vrrp {name}: priority 255 (address owner) is never adjusted, so tracking {services} \
             has no effect; use a priority of 254 or lower"
        ));
        return out;
    }
    if w > 0 {
        out.push(format!(
            "vrrp {name}: weight +{w} raises the priority from {p} to {} while {services} has no \
             healthy backend, pulling the VIP towards the node that cannot serve it; use a \
             negative weight",
            effective_priority(p, w)
        ));
        return out;
    }
    let failed = effective_priority(p, w);
    let (highest, source) = match track.peer_priorities.iter().max() {
        Some(&m) => (m, "the highest of track.peer_priorities"),
        None => (
            ASSUMED_PEER_PRIORITY,
            "the default priority a backup node has (track.peer_priorities is not set)",
        ),
    };
    if p <= highest {
        // This node is not the preferred master: a failure only lowers it further.
        return out;
    }
    if failed > highest {
        out.push(format!(
            "vrrp {name}: when {services} has no healthy backend the priority drops from {p} by \
             {} to {failed}, still above {highest}, {source}: the VIP stays on this node; use a \
             weight of {} or lower",
            -w,
            i32::from(highest) - i32::from(p) - 1
        ));
    } else if failed == highest {
        out.push(format!(
            "vrrp {name}: when {services} has no healthy backend the priority drops from {p} to \
             {failed}, equal to {highest}, {source}: the higher primary address then wins and \
             the VIP may stay; use a weight of {} or lower",
            i32::from(highest) - i32::from(p) - 1
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tandem_config::{Garp, Notify, Track, VrrpChecksum};

    fn instance(priority: u8, weight: i32, peers: &[u8]) -> VrrpInstance {
        VrrpInstance {
            name: "vip".to_owned(),
            interface: "eth0".to_owned(),
            virtual_router_id: 51,
            priority,
            advert_interval: Duration::from_secs(1),
            preempt: true,
            preempt_delay: Duration::ZERO,
            virtual_ips: Vec::new(),
            track: Track {
                services: vec!["api".to_owned()],
                weight,
                peer_priorities: peers.to_vec(),
            },
            notify: Notify::default(),
            unicast_peers: Vec::new(),
            startup_delay: Duration::ZERO,
            garp: Garp {
                repeat: 1,
                interval: Duration::ZERO,
                refresh: Duration::ZERO,
            },
            checksum: VrrpChecksum::PseudoHeader,
        }
    }

    #[test]
    fn the_keepalived_weight_trap_is_reported_with_its_numbers() {
        let w = tracking_warnings(&instance(150, -2, &[100]));
        assert_eq!(
            w,
            vec![
                "vrrp vip: when api has no healthy backend the priority drops from 150 by 2 to \
                 148, still above 100, the highest of track.peer_priorities: the VIP stays on \
                 this node; use a weight of -51 or lower"
            ]
        );
    }

    #[test]
    fn without_peer_priorities_the_default_backup_priority_is_assumed() {
        let w = tracking_warnings(&instance(200, -60, &[]));
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("to 140, still above 100"), "{w:?}");
        assert!(w[0].contains("track.peer_priorities is not set"), "{w:?}");
        assert!(tracking_warnings(&instance(150, -60, &[])).is_empty());
    }

    #[test]
    fn a_weight_that_moves_the_vip_gives_no_warning() {
        assert!(tracking_warnings(&instance(150, -60, &[140, 130])).is_empty());
        assert!(tracking_warnings(&instance(150, -51, &[100])).is_empty());
        // A backup node: a failure only lowers it further.
        assert!(tracking_warnings(&instance(100, -2, &[150])).is_empty());
        let mut untracked = instance(150, -2, &[100]);
        untracked.track = Track::default();
        assert!(tracking_warnings(&untracked).is_empty());
    }

    #[test]
    fn ties_owners_and_positive_weights_are_reported() {
        let tie = tracking_warnings(&instance(150, -50, &[100]));
        assert!(tie[0].contains("equal to 100"), "{tie:?}");
        let owner = tracking_warnings(&instance(255, -60, &[100]));
        assert!(owner[0].contains("never adjusted"), "{owner:?}");
        let up = tracking_warnings(&instance(150, 10, &[100]));
        assert!(
            up[0].contains("raises the priority from 150 to 160"),
            "{up:?}"
        );
    }
}
