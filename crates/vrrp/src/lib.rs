//! tandem's VRRP version 3 (RFC 9568): which node of a group holds each
//! virtual IP.
//!
//! Three layers, kept apart as in quinn:
//! - [`packet`]: the advert codec and the receive checks of RFC 9568 §7.1
//!   (TTL 255, version, type, length, address count, interval, checksum with
//!   the IPv6 pseudo-header, and for IPv4 either form, see [`VrrpChecksum`]).
//!   Pure, allocation-free per packet, never panics on any input.
//! - [`machine`]: the state machine (Initialize → Backup ⇄ Master) with
//!   every timer of the protocol. Sans IO: no sockets, no clock; the caller
//!   passes `now` and carries out [`machine::Action`]s.
//! - the Linux driver behind [`Vrrp`]: per instance a raw IP socket for
//!   protocol 112 (224.0.0.18 / ff02::12, or unicast peers), netlink
//!   (`tandem_netlink`) for the virtual IPs and host events, AF_PACKET / ICMPv6 for gratuitous ARP and unsolicited
//!   neighbour advertisements, notify hooks, metrics and a status view.
//!
//! Key types: [`Vrrp`] (built from the validated instances, `run` until
//! shutdown), [`VrrpHandle`] (tracking input and status, cloneable),
//! [`InstanceStatus`], [`machine::Machine`], [`tracking_warnings`] (for
//! `tandem check`).
//!
//! Invariants: a node removes only the virtual IPs it added itself (plus, at
//! start, those an earlier run left behind, unless it is the address owner);
//! a master that stops sends priority 0 and removes its VIPs before `run`
//! returns; the advertised priority of a non-owner stays within 1..=254
//! whatever the tracking does; every received packet is either used or
//! counted in `tandem_vrrp_invalid_packets_total` by reason.
//!
//! What it must not do: know about services or health checks (the binary
//! calls [`VrrpHandle::set_tracked_down`]); install signal handlers; use a
//! virtual MAC address (like keepalived's default: the interface's own MAC
//! answers for the VIP, see docs/vrrp.md); block for long (netlink calls are
//! bounded by a 2 s timeout); send anywhere but the configured interface.
//! `unsafe` lives only in `sys`.

pub mod machine;
pub mod packet;

#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;

mod driver;
mod metrics;
mod notify;
mod socket;
mod sys;
mod tracking;

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use prometheus::Registry;
use tandem_config::VrrpInstance;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use machine::{effective_priority, master_down_interval, skew_time};
pub use packet::VrrpChecksum;
pub use tracking::{tracking_warnings, ASSUMED_PEER_PRIORITY};

/// How long `run` waits, after the instances stopped, for notify hooks still queued.
const HOOK_DRAIN: Duration = Duration::from_secs(2);

/// What an instance is doing, as `/status` and `tandem_vrrp_state` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InstanceState {
    /// Not started, or stopped.
    Initialize,
    Backup,
    Master,
    /// The interface is missing or has no usable address; retried every second.
    Fault,
}

impl From<machine::State> for InstanceState {
    fn from(state: machine::State) -> Self {
        match state {
            machine::State::Initialize => InstanceState::Initialize,
            machine::State::Backup => InstanceState::Backup,
            machine::State::Master => InstanceState::Master,
        }
    }
}

impl InstanceState {
    pub const ALL: [InstanceState; 4] = [
        InstanceState::Initialize,
        InstanceState::Backup,
        InstanceState::Master,
        InstanceState::Fault,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Initialize => "initialize",
            InstanceState::Backup => "backup",
            InstanceState::Master => "master",
            InstanceState::Fault => "fault",
        }
    }

    fn index(self) -> usize {
        match self {
            InstanceState::Initialize => 0,
            InstanceState::Backup => 1,
            InstanceState::Master => 2,
            InstanceState::Fault => 3,
        }
    }
}

/// One instance as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceStatus {
    pub name: String,
    pub interface: String,
    pub virtual_router_id: u8,
    pub state: InstanceState,
    /// The priority advertised now: configured, moved by tracking.
    pub priority: u8,
    pub configured_priority: u8,
    /// The master as this node knows it (itself when master).
    pub master: Option<IpAddr>,
    /// When `state` was entered.
    pub since: SystemTime,
    /// Why the instance is in `Fault`.
    pub fault: Option<Fault>,
}

/// Why an instance cannot run (state `Fault`); it retries every second.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("cannot open netlink: {0}")]
    Netlink(String),
    #[error("interface `{0}` does not exist")]
    NoInterface(String),
    #[error("cannot look up interface `{interface}`: {error}")]
    LinkLookup { interface: String, error: String },
    #[error("cannot list the addresses of `{interface}`: {error}")]
    Addresses { interface: String, error: String },
    #[error("interface `{interface}` has no usable {family} address to send adverts from")]
    NoSourceAddress {
        interface: String,
        family: &'static str,
    },
    #[error("cannot open the VRRP socket on `{interface}`: {error}")]
    Socket { interface: String, error: String },
    #[error("interface `{0}` is down (no IFF_UP or no carrier)")]
    LinkDown(String),
    #[error("cannot watch the link and addresses of `{interface}`: {error}")]
    Events { interface: String, error: String },
}

#[derive(Debug, thiserror::Error)]
pub enum VrrpError {
    #[error("cannot register the vrrp metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("vrrp instance {instance}: notify.{key} `{command}`: {reason}")]
    Notify {
        instance: String,
        key: &'static str,
        command: String,
        reason: String,
    },
}

/// What the handle and the instances share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) status: watch::Sender<Vec<InstanceStatus>>,
    tracks: Vec<Track>,
}

#[derive(Debug)]
struct Track {
    services: Vec<String>,
    weight: i32,
    /// The tracked services that have no healthy backend now.
    down: Mutex<Vec<String>>,
    adjustment: watch::Sender<i32>,
}

/// The VRRP instances of one node, ready to run.
#[derive(Debug)]
pub struct Vrrp {
    drivers: Vec<driver::Driver>,
    hooks: Vec<(String, mpsc::UnboundedReceiver<Vec<String>>)>,
    handle: VrrpHandle,
}

impl Vrrp {
    /// Builds the instances of a validated configuration and registers the
    /// `tandem_vrrp_*` metrics into `registry` (once per registry). Touches
    /// no interface yet: that happens in [`Vrrp::run`].
    pub fn new(instances: &[VrrpInstance], registry: &Registry) -> Result<Vrrp, VrrpError> {
        let mut commands = instances
            .iter()
            .map(split_notify)
            .collect::<Result<Vec<_>, _>>()?
            .into_iter();
        let metrics = metrics::Metrics::register(registry)?;
        let now = SystemTime::now();
        let status: Vec<InstanceStatus> = instances
            .iter()
            .map(|i| InstanceStatus {
                name: i.name.clone(),
                interface: i.interface.clone(),
                virtual_router_id: i.virtual_router_id,
                state: InstanceState::Initialize,
                priority: i.priority,
                configured_priority: i.priority,
                master: None,
                since: now,
                fault: None,
            })
            .collect();
        let mut receivers = Vec::with_capacity(instances.len());
        let tracks = instances
            .iter()
            .map(|i| {
                let (tx, rx) = watch::channel(0);
                receivers.push(rx);
                Track {
                    services: i.track.services.clone(),
                    weight: i.track.weight,
                    down: Mutex::new(Vec::new()),
                    adjustment: tx,
                }
            })
            .collect();
        let shared = Arc::new(Shared {
            status: watch::Sender::new(status),
            tracks,
        });
        let mut drivers = Vec::with_capacity(instances.len());
        let mut hooks = Vec::with_capacity(instances.len());
        for (slot, (cfg, adjustment)) in instances.iter().zip(receivers).enumerate() {
            let ipv6 = is_ipv6(cfg);
            let siblings = instances
                .iter()
                .filter(|o| {
                    o.name != cfg.name && o.interface == cfg.interface && is_ipv6(o) == ipv6
                })
                .map(|o| o.virtual_router_id)
                .collect();
            let (tx, rx) = mpsc::unbounded_channel();
            hooks.push((cfg.name.clone(), rx));
            let m = metrics.instance(&cfg.name);
            m.enter(InstanceState::Initialize, false);
            m.priority.set(i64::from(cfg.priority));
            drivers.push(driver::Driver {
                cfg: cfg.clone(),
                slot,
                metrics: m,
                shared: shared.clone(),
                adjustment,
                siblings,
                hooks: tx,
                notify: commands.next().unwrap_or_default(),
                vip_addrs: cfg.virtual_ips.iter().map(|p| p.address).collect(),
            });
        }
        Ok(Vrrp {
            drivers,
            hooks,
            handle: VrrpHandle { shared },
        })
    }

    /// A handle for tracking and status; it stays valid after `run` returns.
    pub fn handle(&self) -> VrrpHandle {
        self.handle.clone()
    }

    /// The status of every instance, in configuration order, updated on
    /// every change of state, priority or master.
    pub fn subscribe(&self) -> watch::Receiver<Vec<InstanceStatus>> {
        self.handle.subscribe()
    }

    /// Runs every instance until `shutdown` is cancelled; then masters send
    /// priority 0 and remove their virtual IPs, and `run` returns.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut hooks = JoinSet::new();
        for (name, rx) in self.hooks {
            hooks.spawn(notify::run_queue(name, rx));
        }
        let mut instances = JoinSet::new();
        for d in self.drivers {
            instances.spawn(d.run(shutdown.clone()));
        }
        while let Some(r) = instances.join_next().await {
            if let Err(e) = r {
                tracing::error!(error = %e, "vrrp instance task failed");
            }
        }
        let drained = tokio::time::timeout(HOOK_DRAIN, async {
            while hooks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!("vrrp notify hooks still running at shutdown were killed");
            hooks.abort_all();
        }
    }
}

/// Splits an instance's notify commands, or says which one cannot be split.
fn split_notify(i: &VrrpInstance) -> Result<notify::Commands, VrrpError> {
    let split = |key: &'static str, cmd: &Option<String>| {
        cmd.as_ref()
            .map(|command| {
                tandem_config::split_command(command).map_err(|reason| VrrpError::Notify {
                    instance: i.name.clone(),
                    key,
                    command: command.clone(),
                    reason,
                })
            })
            .transpose()
    };
    let n = &i.notify;
    Ok(notify::Commands {
        master: split("master", &n.master)?,
        backup: split("backup", &n.backup)?,
        fault: split("fault", &n.fault)?,
    })
}

fn is_ipv6(i: &VrrpInstance) -> bool {
    i.virtual_ips.first().is_some_and(|p| p.address.is_ipv6())
}

/// Tells the instances about tracked services and shows their status.
/// Cheap to clone; every clone talks to the same instances.
#[derive(Debug, Clone)]
pub struct VrrpHandle {
    shared: Arc<Shared>,
}

impl VrrpHandle {
    /// Marks `service` as having no healthy backend (`down: true`) or at
    /// least one again. Every instance tracking it takes `weight` off (well,
    /// adds it to) its priority while any of its tracked services is down.
    /// Unknown services are ignored; repeating a state changes nothing.
    pub fn set_tracked_down(&self, service: &str, down: bool) {
        for t in &self.shared.tracks {
            if !t.services.iter().any(|s| s == service) {
                continue;
            }
            let mut set = t.down.lock().unwrap_or_else(PoisonError::into_inner);
            let present = set.iter().position(|s| s == service);
            match (down, present) {
                (true, None) => set.push(service.to_owned()),
                (false, Some(i)) => {
                    set.swap_remove(i);
                }
                _ => {}
            }
            let adjustment = if set.is_empty() { 0 } else { t.weight };
            t.adjustment.send_if_modified(|a| {
                let changed = *a != adjustment;
                *a = adjustment;
                changed
            });
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<Vec<InstanceStatus>> {
        self.shared.status.subscribe()
    }

    /// The status now.
    pub fn status(&self) -> Vec<InstanceStatus> {
        self.shared.status.borrow().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_config::{Garp, IpPrefix, Notify, Track as TrackCfg};

    fn instance(name: &str, services: &[&str], weight: i32) -> VrrpInstance {
        VrrpInstance {
            name: name.to_owned(),
            interface: "eth0".to_owned(),
            virtual_router_id: 51,
            priority: 150,
            advert_interval: Duration::from_secs(1),
            preempt: true,
            preempt_delay: Duration::ZERO,
            virtual_ips: vec![IpPrefix {
                address: "198.18.0.100".parse().unwrap(),
                prefix_len: 24,
            }],
            track: TrackCfg {
                services: services.iter().map(|s| s.to_string()).collect(),
                weight,
                peer_priorities: Vec::new(),
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
    fn tracking_applies_the_weight_while_any_tracked_service_is_down() {
        let v = Vrrp::new(
            &[
                instance("a", &["api", "dns"], -60),
                instance("b", &["dns"], -10),
            ],
            &Registry::new(),
        )
        .unwrap();
        let h = v.handle();
        let adj = |i: usize| *v.drivers[i].adjustment.borrow();
        h.set_tracked_down("api", true);
        assert_eq!((adj(0), adj(1)), (-60, 0));
        h.set_tracked_down("dns", true);
        assert_eq!((adj(0), adj(1)), (-60, -10));
        h.set_tracked_down("api", false);
        assert_eq!((adj(0), adj(1)), (-60, -10), "dns is still down");
        h.set_tracked_down("dns", false);
        h.set_tracked_down("dns", false);
        h.set_tracked_down("unknown", true);
        assert_eq!((adj(0), adj(1)), (0, 0));
    }

    #[test]
    fn status_starts_in_initialize_with_the_configured_priority() {
        let v = Vrrp::new(&[instance("a", &[], 0)], &Registry::new()).unwrap();
        let s = v.subscribe().borrow().clone();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].state, InstanceState::Initialize);
        assert_eq!((s[0].priority, s[0].master), (150, None));
    }

    #[test]
    fn a_notify_command_that_cannot_be_split_is_refused() {
        let mut i = instance("a", &[], 0);
        i.notify.master = Some("/bin/notify 'open".to_owned());
        let e = Vrrp::new(&[i], &Registry::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "vrrp instance a: notify.master `/bin/notify 'open`: unterminated single quote"
        );
    }

    #[test]
    fn metrics_register_once_per_registry() {
        let r = Registry::new();
        Vrrp::new(&[], &r).unwrap();
        assert!(matches!(Vrrp::new(&[], &r), Err(VrrpError::Metrics(_))));
    }
}
