//! One instance's I/O: it sets the interface up (or reports a fault and
//! retries), feeds the [`Machine`] with packets, timers and tracking
//! changes, and carries out its actions with sockets and netlink.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tandem_config::{IpPrefix, VrrpChecksum, VrrpInstance};
use tandem_netlink::{Address, HostEvent, HostEvents, Netlink};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::machine::{Action, Heard, Machine, Params};
use crate::metrics::InstanceMetrics;
use crate::packet::{self, AdvertFields, IpMeta, Reject};
use crate::socket::{Announcer, VrrpSocket};
use crate::{notify, Fault, InstanceState, Shared};

/// How often a faulty instance tries its interface again.
const RETRY: Duration = Duration::from_secs(1);
/// A repeated warning is logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub(crate) struct Driver {
    pub(crate) cfg: VrrpInstance,
    pub(crate) slot: usize,
    pub(crate) metrics: InstanceMetrics,
    pub(crate) shared: Arc<Shared>,
    pub(crate) adjustment: watch::Receiver<i32>,
    /// VRIDs of the other instances on this interface and family: their
    /// adverts are theirs, not unknown.
    pub(crate) siblings: Vec<u8>,
    pub(crate) hooks: mpsc::UnboundedSender<Vec<String>>,
    /// The notify commands, split once.
    pub(crate) notify: notify::Commands,
    /// The virtual IPs without prefixes, as adverts carry them.
    pub(crate) vip_addrs: Vec<IpAddr>,
}

/// What the instance holds once its interface is usable.
#[derive(Debug)]
struct Io {
    netlink: Netlink,
    /// Link and address changes, subscribed to before the link was looked up.
    events: HostEvents,
    ifindex: u32,
    socket: VrrpSocket,
    announcer: Option<Announcer>,
    primary: IpAddr,
}

/// A received packet, reduced to what is needed after the receive future ends.
#[derive(Debug, Clone, Copy)]
enum Packet {
    Valid {
        src: IpAddr,
        vrid: u8,
        priority: u8,
        interval_cs: u16,
        same_addresses: bool,
    },
    Invalid {
        reason: Reject,
        src: Option<IpAddr>,
        /// The checksum verifies the other way (see `checksum` in docs/vrrp.md).
        other_checksum: bool,
    },
}

enum Wake {
    Shutdown,
    Host(Vec<HostEvent>),
    Packet(Packet),
    RecvError(io::Error),
    Timer,
    Adjusted,
}

/// Why [`Driver::serve`] returned.
enum Stop {
    Shutdown,
    LinkDown,
}

/// The interface after a batch of host events.
#[derive(Debug, PartialEq, Eq)]
enum Health {
    Up,
    LinkDown,
}

/// What a rate-limited warning is about (no allocation to find out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Warn {
    Recv,
    OtherChecksum(Option<IpAddr>),
    Invalid(Reject),
    Vrid(u8),
    Interval(IpAddr, u16),
    Addresses(IpAddr),
    Owner(IpAddr),
    Send(IpAddr),
    Announce(IpAddr),
}

/// Per-instance state of the driver that outlives a wake-up.
#[derive(Debug, Default)]
struct Memory {
    /// The virtual IPs this node put on the interface: the only ones it removes.
    added: Vec<IpPrefix>,
    tx: Vec<u8>,
    warned: HashMap<Warn, Instant>,
    last: Option<(InstanceState, u8, Option<IpAddr>)>,
    fault: Option<Fault>,
}

impl Memory {
    /// Whether a warning with this key may be logged now.
    fn may_warn(&mut self, key: Warn) -> bool {
        let now = Instant::now();
        match self.warned.get(&key) {
            Some(t) if now.duration_since(*t) < LOG_EVERY => false,
            _ => {
                self.warned.insert(key, now);
                true
            }
        }
    }
}

impl Driver {
    pub(crate) async fn run(mut self, shutdown: CancellationToken) {
        let mut mem = Memory::default();
        let mut cleaned = false;
        // Bounded by shutdown: each pass ends with it or with a link going down.
        loop {
            let mut io = loop {
                match self.setup(&mut cleaned) {
                    Ok(io) => break io,
                    Err(why) => self.fault(&mut mem, why),
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(RETRY) => {}
                }
            };
            mem.fault = None;
            mem.last = None;
            info!(
                instance = %self.cfg.name,
                interface = %self.cfg.interface,
                vrid = self.cfg.virtual_router_id,
                source = %io.primary,
                priority = self.cfg.priority,
                "vrrp instance started"
            );
            match self.serve(&mut io, &mut mem, &shutdown).await {
                Stop::Shutdown => return,
                Stop::LinkDown => {
                    // Nothing can be sent on a link that is down: drop the
                    // addresses, report the fault, and start over once it is up.
                    self.remove_vips(&mut io, &mut mem);
                    self.fault(&mut mem, Fault::LinkDown(self.cfg.interface.clone()));
                }
            }
        }
    }

    /// Runs the state machine on a usable interface until shutdown (after
    /// which nothing of ours is left on it) or until the link goes down.
    async fn serve(&mut self, io: &mut Io, mem: &mut Memory, shutdown: &CancellationToken) -> Stop {
        let mut machine = Machine::new(Params::from_instance(&self.cfg), io.primary);
        let adjustment = *self.adjustment.borrow_and_update();
        machine.set_adjustment(Instant::now(), adjustment);
        machine.startup(Instant::now());
        self.apply(&mut machine, io, mem);
        self.publish(&machine, mem);

        let vips = self.vip_addrs.clone();
        let mode = self.cfg.checksum;
        let own = io.primary;
        loop {
            let deadline = machine.poll_timeout();
            let wake = tokio::select! {
                biased;
                _ = shutdown.cancelled() => Wake::Shutdown,
                r = io.events.next() => match r {
                    Ok(events) => Wake::Host(events),
                    Err(e) => Wake::RecvError(e),
                },
                r = io.socket.recv() => match r {
                    Ok(Ok((meta, msg))) if meta.src == own => {
                        debug!(instance = %self.cfg.name, len = msg.len(), "own advert looped back");
                        continue;
                    }
                    Ok(Ok((meta, msg))) => Wake::Packet(classify(&meta, msg, mode, &vips, &self.cfg.unicast_peers)),
                    Ok(Err(reason)) => Wake::Packet(Packet::Invalid { reason, src: None, other_checksum: false }),
                    Err(e) => Wake::RecvError(e),
                },
                _ = sleep_until(deadline) => Wake::Timer,
                _ = self.adjustment.changed() => Wake::Adjusted,
            };
            let now = Instant::now();
            match wake {
                Wake::Shutdown => {
                    machine.shutdown(now);
                    self.apply(&mut machine, io, mem);
                    // Nothing of ours may stay behind, whatever the state was.
                    self.remove_vips(io, mem);
                    self.publish(&machine, mem);
                    info!(instance = %self.cfg.name, "vrrp instance stopped");
                    return Stop::Shutdown;
                }
                Wake::Host(events) => {
                    if self.on_host_events(io, mem, &events) == Health::LinkDown {
                        warn!(
                            instance = %self.cfg.name,
                            interface = %self.cfg.interface,
                            state = InstanceState::from(machine.state()).as_str(),
                            "vrrp interface went down: virtual IPs released, instance in fault until it is back"
                        );
                        return Stop::LinkDown;
                    }
                }
                Wake::Packet(p) => self.on_packet(&mut machine, mem, now, p),
                Wake::RecvError(e) => {
                    if mem.may_warn(Warn::Recv) {
                        warn!(instance = %self.cfg.name, error = %e, "vrrp socket receive failed");
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Wake::Timer => machine.handle_timeout(now),
                Wake::Adjusted => {
                    let adj = *self.adjustment.borrow_and_update();
                    let before = machine.priority();
                    machine.set_adjustment(now, adj);
                    if machine.priority() != before {
                        info!(
                            instance = %self.cfg.name,
                            from = before,
                            to = machine.priority(),
                            "vrrp priority changed by tracking"
                        );
                    }
                }
            }
            self.apply(&mut machine, io, mem);
            self.publish(&machine, mem);
        }
    }

    /// Reacts to link and address changes: a link down ends the run; a
    /// virtual IP of ours removed by someone else is put back (we hold it only
    /// while master, so it is put back only then).
    fn on_host_events(&self, io: &mut Io, mem: &mut Memory, events: &[HostEvent]) -> Health {
        let mut look_again = false;
        for event in events {
            match *event {
                HostEvent::Link { index, up: false } if index == io.ifindex => {
                    return Health::LinkDown;
                }
                HostEvent::AddressRemoved { index, address } if index == io.ifindex => {
                    look_again |= mem.added.iter().any(|v| v.address == address);
                }
                HostEvent::Overrun => {
                    // Some changes were lost: look at the link and every VIP.
                    match io.netlink.link(&self.cfg.interface) {
                        Ok(Some(link)) if link.index == io.ifindex && link.up => {}
                        Ok(_) => return Health::LinkDown,
                        Err(e) => {
                            warn!(instance = %self.cfg.name, error = %e, "cannot look the vrrp interface up again")
                        }
                    }
                    look_again = true;
                }
                _ => {}
            }
        }
        if look_again {
            self.restore_vips(io, mem);
        }
        Health::Up
    }

    /// Adds back every virtual IP this node holds that is missing from the
    /// interface; an add that finds the address there changes nothing.
    fn restore_vips(&self, io: &mut Io, mem: &mut Memory) {
        let mut restored = false;
        for vip in mem.added.clone() {
            match io
                .netlink
                .add_address(io.ifindex, vip.address, vip.prefix_len)
            {
                Ok(true) => {
                    restored = true;
                    self.metrics.restored.inc();
                    warn!(
                        instance = %self.cfg.name,
                        vip = %vip.address,
                        interface = %self.cfg.interface,
                        "virtual IP was removed from the interface while this node is master: added it back"
                    );
                }
                Ok(false) => {}
                Err(e) => {
                    error!(instance = %self.cfg.name, vip = %vip.address, error = %e, "cannot add the removed virtual IP back")
                }
            }
        }
        if restored {
            self.announce(io, mem);
        }
    }

    /// Finds the interface and its source address, clears virtual IPs an
    /// earlier run left behind, opens the sockets.
    fn setup(&self, cleaned: &mut bool) -> Result<Io, Fault> {
        let name = &self.cfg.interface;
        let ipv6 = crate::is_ipv6(&self.cfg);
        let mut netlink = Netlink::open().map_err(|e| Fault::Netlink(e.to_string()))?;
        let events = HostEvents::open().map_err(|e| Fault::Events {
            interface: name.clone(),
            error: e.to_string(),
        })?;
        let link = netlink
            .link(name)
            .map_err(|e| Fault::LinkLookup {
                interface: name.clone(),
                error: e.to_string(),
            })?
            .ok_or_else(|| Fault::NoInterface(name.clone()))?;
        if !link.up {
            return Err(Fault::LinkDown(name.clone()));
        }
        let addrs = netlink
            .addresses(link.index, ipv6)
            .map_err(|e| Fault::Addresses {
                interface: name.clone(),
                error: e.to_string(),
            })?;
        let primary = self.primary(&addrs).ok_or_else(|| Fault::NoSourceAddress {
            interface: name.clone(),
            family: family(ipv6),
        })?;
        if !*cleaned {
            self.remove_leftovers(&mut netlink, link.index, &addrs);
            *cleaned = true;
        }
        let socket = VrrpSocket::open(name, link.index, ipv6).map_err(|e| Fault::Socket {
            interface: name.clone(),
            error: e.to_string(),
        })?;
        let link_local = addrs
            .iter()
            .find(|a| !a.tentative && is_link_local(a.address))
            .and_then(|a| match a.address {
                IpAddr::V6(v6) => Some(v6),
                IpAddr::V4(_) => None,
            });
        let announcer = match (link.mac, ipv6, link_local) {
            (None, _, _) => {
                warn!(instance = %self.cfg.name, interface = %name, "interface has no MAC address: no gratuitous ARP / neighbour advertisements");
                None
            }
            (Some(_), true, None) => {
                warn!(instance = %self.cfg.name, interface = %name, "interface has no link-local IPv6 address: no unsolicited neighbour advertisements");
                None
            }
            (Some(mac), _, ll) => match Announcer::open(name, link.index, mac, ll.filter(|_| ipv6))
            {
                Ok(a) => Some(a),
                Err(e) => {
                    warn!(instance = %self.cfg.name, interface = %name, error = %e, "cannot open the announcement socket");
                    None
                }
            },
        };
        Ok(Io {
            netlink,
            events,
            ifindex: link.index,
            socket,
            announcer,
            primary,
        })
    }

    /// The interface's primary address, never one of our virtual IPs. IPv4:
    /// the first primary (non-secondary) address. IPv6: the link-local
    /// address (RFC 9568 §5.1.2.1), or with global unicast peers the first
    /// global address, which is what those peers are configured with.
    fn primary(&self, addrs: &[Address]) -> Option<IpAddr> {
        let usable = |a: &&Address| {
            !a.tentative && !self.cfg.virtual_ips.iter().any(|v| v.address == a.address)
        };
        let first = addrs.first()?.address;
        if first.is_ipv4() {
            return addrs
                .iter()
                .filter(usable)
                .find(|a| !a.secondary)
                .or_else(|| addrs.iter().find(usable))
                .map(|a| a.address);
        }
        let global_peers = self.cfg.unicast_peers.iter().any(|p| !is_link_local(*p));
        addrs
            .iter()
            .filter(usable)
            .find(|a| is_link_local(a.address) != global_peers)
            .map(|a| a.address)
    }

    /// A node killed while master leaves its VIPs behind (so does
    /// keepalived): remove them before this node may become master again.
    /// The address owner keeps addresses it finds, which may be its own.
    fn remove_leftovers(&self, netlink: &mut Netlink, index: u32, addrs: &[Address]) {
        if self.cfg.priority == 255 {
            return;
        }
        for a in addrs {
            if !self.cfg.virtual_ips.iter().any(|v| v.address == a.address) {
                continue;
            }
            match netlink.delete_address(index, a.address, a.prefix_len) {
                Ok(_) => info!(
                    instance = %self.cfg.name,
                    vip = %a.address,
                    "removed a virtual IP left on the interface by an earlier run"
                ),
                Err(e) => {
                    warn!(instance = %self.cfg.name, vip = %a.address, error = %e, "cannot remove a leftover virtual IP")
                }
            }
        }
    }

    fn fault(&self, mem: &mut Memory, why: Fault) {
        if mem.fault.as_ref() != Some(&why) {
            error!(instance = %self.cfg.name, "vrrp instance cannot run, retrying every second: {why}");
        }
        let entering = mem.fault.is_none();
        mem.fault = Some(why.clone());
        self.metrics.enter(InstanceState::Fault, entering);
        if entering {
            self.hook(InstanceState::Fault);
        }
        let cfg_priority = self.cfg.priority;
        self.shared.status.send_modify(|all| {
            if let Some(s) = all.get_mut(self.slot) {
                s.state = InstanceState::Fault;
                s.priority = cfg_priority;
                s.master = None;
                s.fault = Some(why);
                if entering {
                    s.since = SystemTime::now();
                }
            }
        });
    }

    fn on_packet(&self, machine: &mut Machine, mem: &mut Memory, now: Instant, p: Packet) {
        let name = &self.cfg.name;
        match p {
            Packet::Invalid {
                reason,
                src,
                other_checksum,
            } => {
                self.metrics.invalid(reason).inc();
                if other_checksum {
                    let other = self.cfg.checksum.other().as_str();
                    if mem.may_warn(Warn::OtherChecksum(src)) {
                        warn!(
                            instance = %name,
                            peer = ?src,
                            "vrrp advert dropped: its checksum is computed the other way; if that \
                             peer is a router of this instance, set `checksum: {other}` (docs/vrrp.md)"
                        );
                    }
                } else if mem.may_warn(Warn::Invalid(reason)) {
                    warn!(instance = %name, peer = ?src, reason = reason.as_str(), "invalid vrrp packet dropped");
                }
            }
            Packet::Valid {
                src,
                vrid,
                priority,
                interval_cs,
                same_addresses,
            } => {
                if vrid != self.cfg.virtual_router_id {
                    if !self.siblings.contains(&vrid) {
                        self.metrics.invalid(Reject::Vrid).inc();
                        if mem.may_warn(Warn::Vrid(vrid)) {
                            debug!(instance = %name, peer = %src, vrid, "advert for a virtual router not run here");
                        }
                    }
                    return;
                }
                self.metrics.received.inc();
                let ours = packet::interval_cs(self.cfg.advert_interval);
                if interval_cs != ours && mem.may_warn(Warn::Interval(src, interval_cs)) {
                    warn!(
                        instance = %name,
                        peer = %src,
                        theirs_cs = interval_cs,
                        ours_cs = ours,
                        "vrrp advert interval differs from this node's (RFC 9568 §7.1); backups time a master by its own interval"
                    );
                }
                if !same_addresses && mem.may_warn(Warn::Addresses(src)) {
                    warn!(instance = %name, peer = %src, "vrrp advert lists other virtual IPs than this node's: check both configs");
                }
                if priority == 255 && self.cfg.priority == 255 && mem.may_warn(Warn::Owner(src)) {
                    warn!(instance = %name, peer = %src, "two nodes claim to own the virtual IPs (priority 255); the higher address wins");
                }
                let heard = Heard {
                    src,
                    priority,
                    interval: Duration::from_millis(u64::from(interval_cs) * 10),
                };
                machine.receive(now, &heard);
            }
        }
    }

    fn apply(&self, machine: &mut Machine, io: &mut Io, mem: &mut Memory) {
        while let Some(action) = machine.poll_action() {
            match action {
                Action::SendAdvert { priority } => self.send_advert(io, mem, priority),
                Action::AddVips => self.add_vips(io, mem),
                Action::RemoveVips => self.remove_vips(io, mem),
                Action::SendGarp => self.announce(io, mem),
                Action::Transition(state) => {
                    let s = InstanceState::from(state);
                    self.metrics.enter(s, true);
                    info!(
                        instance = %self.cfg.name,
                        state = s.as_str(),
                        priority = machine.priority(),
                        master = ?machine.master(),
                        "vrrp state changed"
                    );
                    self.shared.status.send_modify(|all| {
                        if let Some(st) = all.get_mut(self.slot) {
                            st.state = s;
                            st.since = SystemTime::now();
                            st.fault = None;
                        }
                    });
                    self.hook(s);
                }
                Action::Conflict {
                    peer,
                    peer_priority,
                    yielded,
                } => {
                    self.metrics.conflicts.inc();
                    warn!(
                        instance = %self.cfg.name,
                        vrid = self.cfg.virtual_router_id,
                        peer = %peer,
                        peer_priority,
                        priority = machine.priority(),
                        "two masters for one virtual router: {}",
                        if yielded {
                            "the other wins, this node becomes backup"
                        } else {
                            "this node wins, it re-asserts with an advert and gratuitous ARP"
                        }
                    );
                }
            }
        }
    }

    fn send_advert(&self, io: &mut Io, mem: &mut Memory, priority: u8) {
        let group = if io.primary.is_ipv6() {
            IpAddr::V6(packet::MULTICAST_V6)
        } else {
            IpAddr::V4(packet::MULTICAST_V4)
        };
        let peers = &self.cfg.unicast_peers;
        let targets = if peers.is_empty() {
            std::slice::from_ref(&group)
        } else {
            peers.as_slice()
        };
        let vips = &self.vip_addrs;
        let fields = AdvertFields {
            vrid: self.cfg.virtual_router_id,
            priority,
            interval_cs: packet::interval_cs(self.cfg.advert_interval),
            addresses: vips,
        };
        for dst in targets {
            let mut tx = std::mem::take(&mut mem.tx);
            let sent = packet::encode(&fields, io.primary, *dst, self.cfg.checksum, &mut tx)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
                .and_then(|()| io.socket.send(&tx, io.primary, *dst));
            mem.tx = tx;
            match sent {
                Ok(()) => self.metrics.sent.inc(),
                Err(e) => {
                    if mem.may_warn(Warn::Send(*dst)) {
                        warn!(instance = %self.cfg.name, to = %dst, error = %e, "cannot send vrrp advert");
                    }
                }
            }
        }
    }

    fn add_vips(&self, io: &mut Io, mem: &mut Memory) {
        for vip in &self.cfg.virtual_ips {
            if mem.added.contains(vip) {
                continue;
            }
            match io
                .netlink
                .add_address(io.ifindex, vip.address, vip.prefix_len)
            {
                Ok(true) => mem.added.push(*vip),
                Ok(false) => warn!(
                    instance = %self.cfg.name,
                    vip = %vip.address,
                    "virtual IP is already on the interface and was not added by tandem: it will not be removed"
                ),
                Err(e) => {
                    error!(instance = %self.cfg.name, vip = %vip.address, error = %e, "cannot add virtual IP")
                }
            }
        }
    }

    fn remove_vips(&self, io: &mut Io, mem: &mut Memory) {
        for vip in std::mem::take(&mut mem.added) {
            if let Err(e) = io
                .netlink
                .delete_address(io.ifindex, vip.address, vip.prefix_len)
            {
                error!(instance = %self.cfg.name, vip = %vip.address, error = %e, "cannot remove virtual IP");
            }
        }
    }

    fn announce(&self, io: &mut Io, mem: &mut Memory) {
        let Some(a) = &io.announcer else {
            return;
        };
        for vip in &self.cfg.virtual_ips {
            if let Err(e) = a.announce(vip.address) {
                if mem.may_warn(Warn::Announce(vip.address)) {
                    warn!(instance = %self.cfg.name, vip = %vip.address, error = %e, "cannot announce virtual IP");
                }
            }
        }
    }

    fn hook(&self, state: InstanceState) {
        if let Some(argv) = self.notify.argv(state, &self.cfg.name) {
            let _ = self.hooks.send(argv);
        }
    }

    /// Publishes priority and master when they changed (state changes are
    /// published as they happen).
    fn publish(&self, machine: &Machine, mem: &mut Memory) {
        let state = InstanceState::from(machine.state());
        let now = (state, machine.priority(), machine.master());
        if mem.last == Some(now) {
            return;
        }
        mem.last = Some(now);
        self.metrics.priority.set(i64::from(machine.priority()));
        self.shared.status.send_modify(|all| {
            if let Some(s) = all.get_mut(self.slot) {
                s.priority = now.1;
                s.master = now.2;
            }
        });
    }
}

/// Checks a received message and keeps what the machine needs, so the
/// receive buffer is free again. No allocation.
fn classify(
    meta: &IpMeta,
    msg: &[u8],
    mode: VrrpChecksum,
    vips: &[IpAddr],
    peers: &[IpAddr],
) -> Packet {
    if !peers.is_empty() && !peers.contains(&meta.src) {
        // keepalived drops these too: with unicast peers, only they count.
        return Packet::Invalid {
            reason: Reject::Peer,
            src: Some(meta.src),
            other_checksum: false,
        };
    }
    match packet::decode(msg, meta, mode) {
        Ok(a) => Packet::Valid {
            src: meta.src,
            vrid: a.vrid,
            priority: a.priority,
            interval_cs: a.interval_cs,
            same_addresses: a.addresses().eq(vips.iter().copied()),
        },
        Err(reason) => {
            let other = mode.other();
            let other_checksum = reason == Reject::Checksum
                && meta.src.is_ipv4()
                && packet::decode(msg, meta, other).is_ok();
            Packet::Invalid {
                reason,
                src: Some(meta.src),
                other_checksum,
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
        None => std::future::pending().await,
    }
}

fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        IpAddr::V4(_) => false,
    }
}

fn family(ipv6: bool) -> &'static str {
    if ipv6 {
        "IPv6"
    } else {
        "IPv4"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_reports_the_other_checksum_form() {
        let vips = ["198.18.0.100".parse::<IpAddr>().unwrap()];
        let meta = IpMeta {
            src: "198.18.0.1".parse().unwrap(),
            dst: IpAddr::V4(packet::MULTICAST_V4),
            hop_limit: 255,
        };
        let f = AdvertFields {
            vrid: 1,
            priority: 100,
            interval_cs: 100,
            addresses: &vips,
        };
        let mut msg = Vec::new();
        packet::encode(
            &f,
            meta.src,
            meta.dst,
            VrrpChecksum::NoPseudoHeader,
            &mut msg,
        )
        .unwrap();
        match classify(&meta, &msg, VrrpChecksum::PseudoHeader, &vips, &[]) {
            Packet::Invalid {
                reason: Reject::Checksum,
                other_checksum: true,
                ..
            } => {}
            p => panic!("{p:?}"),
        }
        match classify(&meta, &msg, VrrpChecksum::NoPseudoHeader, &vips[..0], &[]) {
            Packet::Valid {
                same_addresses: false,
                vrid: 1,
                ..
            } => {}
            p => panic!("{p:?}"),
        }
        let peers = ["198.18.0.2".parse().unwrap(), meta.src];
        match classify(&meta, &msg, VrrpChecksum::NoPseudoHeader, &vips, &peers) {
            Packet::Valid { .. } => {}
            p => panic!("{p:?}"),
        }
        match classify(
            &meta,
            &msg,
            VrrpChecksum::NoPseudoHeader,
            &vips,
            &peers[..1],
        ) {
            Packet::Invalid {
                reason: Reject::Peer,
                ..
            } => {}
            p => panic!("{p:?}"),
        }
    }

    #[test]
    fn link_local_addresses_are_told_apart() {
        assert!(is_link_local("fe80::1".parse().unwrap()));
        assert!(!is_link_local("2001:2::1".parse().unwrap()));
        assert!(!is_link_local("198.18.0.1".parse().unwrap()));
    }
}
