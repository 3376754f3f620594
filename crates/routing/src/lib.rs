//! Scale-out behind one VIP: every healthy node announces the VIP and the
//! upstream router spreads flows over them by ECMP. tandem speaks no BGP
//! itself; it installs `VIP/32` (or `/128`) into a kernel routing table of
//! its own, with a route protocol number of its own, while the services the
//! VIP follows are available, and a routing daemon people already run
//! (BIRD, FRR) exports that table to the router. Why this split and how to
//! set up the speaker: docs/bgp.md.
//!
//! The parts:
//! - [`decide`]: which VIPs to announce, a pure function (health,
//!   maintenance, stopping);
//! - [`RouteDevice`]: the interface the routes point at, created by the
//!   process and gone with it, so a crashed tandem announces nothing;
//! - [`Routing`]: the component. [`Routing::start`] creates the device,
//!   makes the host accept the VIPs (a `local` route on `vip_interface`, see
//!   below) and flushes whatever the table held; [`Routing::run`] keeps the table equal to the decision until
//!   stopped, withdraws everything first thing when stopped, and hands back
//!   the [`Leftovers`] to release after the listeners have drained.

//!
//! The VIP is a `local` route (`ip route add local VIP/32 dev lo table local
//! proto 250`), not an address on `lo`: an address would also be a connected
//! route, which FRR prefers over the imported table route and so never
//! announces; the local route makes the host accept the VIP just the same,
//! and BIRD and FRR both see only the route in tandem's table.

pub mod decide;
mod device;
mod metrics;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus::Registry;
use tandem_netlink::{Netlink, Route, RouteKind, LOCAL_TABLE};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub use decide::{Inputs, Verdict};
pub use device::RouteDevice;
use metrics::Metrics;

/// How often the table is compared with the decision even when nothing
/// changed: a route removed by hand, or a failed update, is redone.
const RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RoutingError {
    #[error("cannot open a netlink socket: {0}")]
    Netlink(std::io::Error),
    #[error("cannot create the route device `{device}`: {source}{hint}")]
    Device {
        device: String,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("no interface `{0}` for the VIPs (routing.vip_interface)")]
    NoVipInterface(String),
    #[error("cannot make {address} local on `{interface}`: {source}")]
    AddVip {
        address: IpAddr,
        interface: String,
        source: std::io::Error,
    },
    #[error("cannot read or flush routing table {table}: {source}")]
    Flush { table: u32, source: std::io::Error },
    #[error("cannot register routing metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// One VIP as `tandem status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipStatus {
    pub address: IpAddr,
    pub services: Vec<String>,
    pub verdict: Verdict,
    /// The route is in the table now (the verdict may be newer while an
    /// update fails).
    pub installed: bool,
}

/// What the daemon tells the component, and what it reads back.
#[derive(Debug, Default)]
struct Shared {
    available: Mutex<HashSet<String>>,
    maintenance: AtomicBool,
    status: Mutex<Vec<VipStatus>>,
    changed: Notify,
}

/// The daemon's side: report service health, switch maintenance, read status.
#[derive(Debug, Clone)]
pub struct RoutingHandle {
    shared: Arc<Shared>,
}

impl RoutingHandle {
    /// Whether `service` has a backend that is up and not draining.
    pub fn set_service_available(&self, service: &str, available: bool) {
        let mut set = self.shared.available.lock().expect("routing state");
        let changed = if available {
            set.insert(service.to_owned())
        } else {
            set.remove(service)
        };
        drop(set);
        if changed {
            self.shared.changed.notify_one();
        }
    }

    /// Node maintenance: withdraw every VIP (`true`) or let health decide again.
    pub fn set_maintenance(&self, on: bool) {
        if self.shared.maintenance.swap(on, Relaxed) != on {
            self.shared.changed.notify_one();
        }
    }

    pub fn maintenance(&self) -> bool {
        self.shared.maintenance.load(Relaxed)
    }

    pub fn status(&self) -> Vec<VipStatus> {
        self.shared.status.lock().expect("routing state").clone()
    }
}

/// The running component; see the module doc.
#[derive(Debug)]
pub struct Routing {
    config: tandem_config::Routing,
    netlink: Netlink,
    device: RouteDevice,
    device_index: u32,
    vip_index: u32,
    /// The routes in the table now, as far as this process knows.
    installed: HashSet<IpAddr>,
    shared: Arc<Shared>,
    metrics: Metrics,
}

/// What stays after the withdrawal: the VIPs' local routes (the listeners
/// drain on them) and the device. [`Leftovers::release`] removes both; it
/// runs after the drain.
#[derive(Debug)]
pub struct Leftovers {
    netlink: Netlink,
    device: RouteDevice,
    local: Vec<Route>,
    vip_interface: String,
    withdrawn: usize,
}

impl Routing {
    /// Creates the route device, makes every VIP local on `vip_interface`
    /// and flushes the table of routes with tandem's protocol (a previous
    /// run's, or someone's by hand). Nothing is announced until [`Routing::run`]
    /// hears that the services are available.
    pub fn start(
        config: &tandem_config::Routing,
        registry: &Registry,
    ) -> Result<Routing, RoutingError> {
        let metrics = Metrics::register(registry, &config.vips)?;
        let mut netlink = Netlink::open().map_err(RoutingError::Netlink)?;
        let device = RouteDevice::create(&config.device).map_err(|source| {
            let hint = match source.raw_os_error() {
                Some(libc::EBUSY) => " (an interface of that name exists: is another tandem running, or set routing.device)",
                Some(libc::EPERM) => " (creating interfaces needs CAP_NET_ADMIN)",
                Some(libc::ENOENT) => " (/dev/net/tun is missing: load the tun module)",
                _ => "",
            };
            RoutingError::Device {
                device: config.device.clone(),
                source,
                hint,
            }
        })?;
        let device_index = netlink
            .link(&config.device)
            .map_err(RoutingError::Netlink)?
            .ok_or_else(|| RoutingError::Device {
                device: config.device.clone(),
                source: std::io::Error::from_raw_os_error(libc::ENODEV),
                hint: " (created, then not found)",
            })?
            .index;
        let vip_index = netlink
            .link(&config.vip_interface)
            .map_err(RoutingError::Netlink)?
            .ok_or_else(|| RoutingError::NoVipInterface(config.vip_interface.clone()))?
            .index;
        let flush = |table| move |source| RoutingError::Flush { table, source };
        let local: Vec<Route> = config
            .vips
            .iter()
            .map(|v| local_route(v.address, config.protocol, vip_index))
            .collect();
        let stale_local: Vec<Route> = netlink
            .routes(LOCAL_TABLE, config.protocol)
            .map_err(flush(LOCAL_TABLE))?
            .into_iter()
            .filter(|r| !local.contains(r))
            .collect();
        for route in &stale_local {
            netlink.delete_route(route).map_err(flush(LOCAL_TABLE))?;
        }
        for (vip, route) in config.vips.iter().zip(&local) {
            netlink
                .replace_route(route)
                .map_err(|source| RoutingError::AddVip {
                    address: vip.address,
                    interface: config.vip_interface.clone(),
                    source,
                })?;
        }
        let mut stale = netlink
            .routes(config.table, config.protocol)
            .map_err(flush(config.table))?;
        for route in &stale {
            netlink.delete_route(route).map_err(flush(config.table))?;
        }
        stale.extend(stale_local);
        if !stale.is_empty() {
            info!(
                table = config.table,
                routes = stale.len(),
                "routing: flushed routes left from an earlier run"
            );
        }
        let shared = Arc::new(Shared::default());
        *shared.status.lock().expect("routing state") = config
            .vips
            .iter()
            .map(|v| VipStatus {
                address: v.address,
                services: v.services.clone(),
                verdict: decide::decide(v, &Inputs::default()),
                installed: false,
            })
            .collect();
        Ok(Routing {
            config: config.clone(),
            netlink,
            device,
            device_index,
            vip_index,
            installed: HashSet::new(),
            shared,
            metrics,
        })
    }

    pub fn handle(&self) -> RoutingHandle {
        RoutingHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Keeps the table equal to the decision until `stop`; then withdraws
    /// every route before returning (the daemon stops accepting only after).
    pub async fn run(mut self, stop: CancellationToken) -> Leftovers {
        let mut tick = tokio::time::interval(RECHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            self.apply(false);
            tokio::select! {
                () = stop.cancelled() => break,
                () = self.shared.changed.notified() => {}
                _ = tick.tick() => {}
            }
        }
        let announced = self.installed.len();
        self.apply(true);
        Leftovers {
            withdrawn: announced,
            netlink: self.netlink,
            device: self.device,
            local: self
                .config
                .vips
                .iter()
                .map(|v| local_route(v.address, self.config.protocol, self.vip_index))
                .collect(),
            vip_interface: self.config.vip_interface,
        }
    }

    /// One pass: decide, read the table, then add and delete routes until
    /// it agrees (a route removed or added by hand is put right here too).
    fn apply(&mut self, stopping: bool) {
        let inputs = Inputs {
            available: self.shared.available.lock().expect("routing state").clone(),
            maintenance: self.shared.maintenance.load(Relaxed),
            stopping,
        };
        let verdicts: HashMap<IpAddr, Verdict> = decide::decide_all(&self.config.vips, &inputs)
            .into_iter()
            .collect();
        let present: Vec<Route> = match self.netlink.routes(self.config.table, self.config.protocol)
        {
            Ok(routes) => routes,
            Err(e) => {
                warn!(table = self.config.table, error = %e, "routing: cannot read the table; retrying every second");
                return;
            }
        };
        // Ours, but for no VIP of this configuration: not announced by us.
        for stray in present
            .iter()
            .filter(|r| !verdicts.contains_key(&r.destination) || r.ifindex != self.device_index)
        {
            if let Err(e) = self.netlink.delete_route(stray) {
                warn!(route = %stray.destination, table = self.config.table, error = %e, "routing: cannot remove a stray route");
            }
        }
        for vip in &self.config.vips {
            let verdict = &verdicts[&vip.address];
            let route = Route {
                destination: vip.address,
                prefix_len: host_prefix(vip.address),
                table: self.config.table,
                protocol: self.config.protocol,
                ifindex: self.device_index,
                kind: RouteKind::Unicast,
            };
            let was = self.installed.contains(&vip.address);
            let there = present.contains(&route);
            let outcome = match (verdict.is_announced(), there) {
                (true, false) => {
                    if was {
                        warn!(vip = %vip.address, table = self.config.table, "routing: the route was removed by something else; putting it back");
                    }
                    self.netlink.replace_route(&route).map(|()| true)
                }
                (false, true) => self.netlink.delete_route(&route).map(|_| false),
                (announced, _) => Ok(announced),
            };
            match outcome {
                Ok(true) => self.installed.insert(vip.address),
                Ok(false) => self.installed.remove(&vip.address),
                Err(e) => {
                    self.metrics.error(vip.address);
                    warn!(vip = %vip.address, table = self.config.table, error = %e, "routing: cannot update the route; retrying every second");
                    false
                }
            };
            let now = self.installed.contains(&vip.address);
            if now != was {
                self.metrics.changed(vip.address, now);
                info!(vip = %vip.address, table = self.config.table, "routing: {}", verdict.reason());
            }
        }
        let mut status = self.shared.status.lock().expect("routing state");
        *status = self
            .config
            .vips
            .iter()
            .map(|v| VipStatus {
                address: v.address,
                services: v.services.clone(),
                verdict: verdicts[&v.address].clone(),
                installed: self.installed.contains(&v.address),
            })
            .collect();
    }
}

impl Leftovers {
    /// How many routes the stop withdrew (announced until then).
    pub fn withdrawn(&self) -> usize {
        self.withdrawn
    }

    /// Removes the VIPs' local routes and deletes the device.
    pub fn release(mut self) {
        for route in &self.local {
            if let Err(e) = self.netlink.delete_route(route) {
                warn!(vip = %route.destination, interface = %self.vip_interface, error = %e, "routing: cannot remove the VIP");
            }
        }
        info!(
            device = self.device.name(),
            "routing: VIPs removed, route device deleted"
        );
    }
}

/// Removes every route of `protocol` from `table`, and the VIPs' local
/// routes: what `tandem flush-routes` runs after a crash (systemd's
/// `ExecStopPost`). Returns how many.
pub fn flush(table: u32, protocol: u8) -> std::io::Result<usize> {
    let mut netlink = Netlink::open()?;
    let mut routes = netlink.routes(table, protocol)?;
    routes.extend(netlink.routes(LOCAL_TABLE, protocol)?);
    for route in &routes {
        netlink.delete_route(route)?;
    }
    Ok(routes.len())
}

/// `local VIP dev INTERFACE table local proto PROTOCOL`: the host accepts the VIP.
fn local_route(vip: IpAddr, protocol: u8, ifindex: u32) -> Route {
    Route {
        destination: vip,
        prefix_len: host_prefix(vip),
        table: LOCAL_TABLE,
        protocol,
        ifindex,
        kind: RouteKind::Local,
    }
}

fn host_prefix(ip: IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}
