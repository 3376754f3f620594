//! tandem VRRP nodes on a bridged segment of network namespaces: who holds
//! the VIP, failover on death, preemption, graceful handover, tracking,
//! active/active, IPv6, unicast, split brain, and the receive checks.
//! Needs root; see test_support::netns.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::{eventually, stays, Node};
use socket2::{Domain, Protocol, Socket, Type};
use tandem_vrrp::packet::{self, AdvertFields, VrrpChecksum};
use tandem_vrrp::{master_down_interval, InstanceState};
use test_support::netns::{wait_for, Lab};

const VIP: &str = "198.18.0.100";

fn instance(priority: u8, extra: &str) -> String {
    format!(
        "    - name: vip\n      interface: eth0\n      virtual_router_id: 51\n      priority: {priority}\n      advert_interval: 100ms\n      startup_delay: 0s\n      garp: {{ repeat: 2, interval: 100ms }}\n      virtual_ips: [{VIP}/24]\n{extra}"
    )
}

/// The time a backup at `priority` waits for a silent master, at 100 ms adverts.
fn down_interval(priority: u8) -> Duration {
    master_down_interval(priority, Duration::from_millis(100))
}

macro_rules! lab {
    () => {
        match Lab::new(module_path!()) {
            Some(lab) => lab,
            None => return,
        }
    };
}

#[test]
fn the_highest_priority_holds_the_vip_and_a_dead_masters_vip_moves_and_comes_back() {
    let mut lab = lab!();
    let (ha, hb, hc) = (
        lab.host(&["198.18.0.1/24"]),
        lab.host(&["198.18.0.2/24"]),
        lab.host(&["198.18.0.3/24"]),
    );
    let mut a = Node::start(&ha, &instance(150, ""));
    let b = Node::start(&hb, &instance(100, ""));
    let c = Node::start(&hc, &instance(50, ""));
    eventually("A holds the VIP", || ha.has_address(VIP));
    eventually("B and C are backups of A", || {
        b.state(0) == InstanceState::Backup
            && c.state(0) == InstanceState::Backup
            && b.master_of(0) == Some("198.18.0.1".parse().unwrap())
    });
    stays("only A holds the VIP", Duration::from_millis(500), || {
        ha.has_address(VIP) && !hb.has_address(VIP) && !hc.has_address(VIP)
    });

    // A dies: its task stops without priority 0 and its link goes down.
    a.kill();
    ha.set_link(false);
    let died = Instant::now();
    let limit = down_interval(100) + Duration::from_millis(500);
    wait_for(Duration::from_secs(5), || hb.has_address(VIP))
        .expect("B takes over from the dead master");
    let took = died.elapsed();
    println!("failover after death: {took:?} (limit {limit:?})");
    assert!(took <= limit, "{took:?}");
    assert!(!hc.has_address(VIP), "only the next priority takes over");

    // A comes back: its leftover VIP is removed at start, then it preempts.
    ha.set_link(true);
    assert!(ha.has_address(VIP), "a killed node leaves its VIP behind");
    let a2 = Node::start(&ha, &instance(150, ""));
    eventually("A is master again", || a2.state(0) == InstanceState::Master);
    eventually("B gave the VIP back", || !hb.has_address(VIP));
    assert!(ha.has_address(VIP));
    assert_eq!(b.state(0), InstanceState::Backup);
    assert_eq!(b.invalid_packets(), 0.0, "{}", b.metrics());
    assert!(b.metric("tandem_vrrp_transitions_total{to=\"master\",vrrp_instance=\"vip\"}") >= 1.0);
}

#[test]
fn without_preempt_a_returning_higher_priority_node_stays_backup() {
    let mut lab = lab!();
    let (ha, hb) = (lab.host(&["198.18.0.1/24"]), lab.host(&["198.18.0.2/24"]));
    let b = Node::start(&hb, &instance(100, ""));
    eventually("B holds the VIP alone", || hb.has_address(VIP));
    let a = Node::start(&ha, &instance(150, "      preempt: false\n"));
    eventually("A is backup", || a.state(0) == InstanceState::Backup);
    stays("B keeps the VIP", 4 * down_interval(150), || {
        hb.has_address(VIP) && !ha.has_address(VIP)
    });
    // With preemption the same node would take over.
    drop(a);
    let a = Node::start(&ha, &instance(150, ""));
    eventually("A preempts", || ha.has_address(VIP) && !hb.has_address(VIP));
    assert_eq!(a.state(0), InstanceState::Master);
    assert_eq!(b.state(0), InstanceState::Backup);
}

#[test]
fn preempt_delay_postpones_the_takeover() {
    let mut lab = lab!();
    let (ha, hb) = (lab.host(&["198.18.0.1/24"]), lab.host(&["198.18.0.2/24"]));
    let _b = Node::start(&hb, &instance(100, ""));
    eventually("B holds the VIP", || hb.has_address(VIP));
    let started = Instant::now();
    let _a = Node::start(&ha, &instance(150, "      preempt_delay: 1s\n"));
    eventually("A preempts after its delay", || ha.has_address(VIP));
    let took = started.elapsed();
    println!("preempted after {took:?}");
    assert!(took >= Duration::from_secs(1), "{took:?}");
    assert!(took <= Duration::from_secs(1) + down_interval(150) + Duration::from_millis(600));
}

#[test]
fn a_graceful_shutdown_hands_over_within_about_one_interval() {
    let mut lab = lab!();
    let (ha, hb) = (lab.host(&["198.18.0.1/24"]), lab.host(&["198.18.0.2/24"]));
    let slow = |p| instance(p, "").replace("advert_interval: 100ms", "advert_interval: 300ms");
    let mut a = Node::start(&ha, &slow(150));
    let b = Node::start(&hb, &slow(100));
    eventually("A holds the VIP", || ha.has_address(VIP));
    eventually("B is A's backup", || b.master_of(0).is_some());
    let stopped = Instant::now();
    a.stop();
    assert!(!ha.has_address(VIP), "A removed its VIP before returning");
    wait_for(Duration::from_secs(5), || hb.has_address(VIP)).expect("B takes over");
    let took = stopped.elapsed();
    // Skew_Time of B: (256 − 100) × 300 ms / 256 = 183 ms; a silent death would take 1.08 s.
    println!("graceful handover: {took:?}");
    assert!(took <= Duration::from_millis(300 + 150), "{took:?}");
}

#[test]
fn a_tracked_service_without_backends_moves_the_vip_and_back() {
    let mut lab = lab!();
    let (ha, hb) = (lab.host(&["198.18.0.1/24"]), lab.host(&["198.18.0.2/24"]));
    let track = "      track: { services: [api], weight: -60 }\n";
    let a = Node::start(&ha, &instance(150, track));
    let b = Node::start(&hb, &instance(100, track));
    eventually("A holds the VIP", || ha.has_address(VIP));
    eventually("B is backup", || b.state(0) == InstanceState::Backup);

    a.handle.set_tracked_down("api", true);
    let t = eventually("the VIP moves to B", || {
        hb.has_address(VIP) && !ha.has_address(VIP)
    });
    println!("tracking failover: {t:?}");
    assert_eq!(a.state(0), InstanceState::Backup);
    assert_eq!(a.status()[0].priority, 90);
    assert_eq!(
        a.metric("tandem_vrrp_priority{vrrp_instance=\"vip\"}"),
        90.0
    );

    a.handle.set_tracked_down("api", false);
    eventually("the VIP comes back to A", || {
        ha.has_address(VIP) && !hb.has_address(VIP)
    });
    assert_eq!(a.status()[0].priority, 150);
}

#[test]
fn active_active_puts_each_vip_on_its_preferred_node() {
    let mut lab = lab!();
    let (ha, hb) = (lab.host(&["198.18.0.1/24"]), lab.host(&["198.18.0.2/24"]));
    let pair = |pa: u8, pb: u8| {
        format!(
            "{}{}",
            instance(pa, "").replace("name: vip", "name: vip-a"),
            instance(pb, "")
                .replace("name: vip", "name: vip-b")
                .replace("virtual_router_id: 51", "virtual_router_id: 52")
                .replace(VIP, "198.18.0.101")
        )
    };
    let mut a = Node::start(&ha, &pair(150, 100));
    let b = Node::start(&hb, &pair(100, 150));
    eventually("each node holds its own VIP", || {
        ha.has_address(VIP)
            && hb.has_address("198.18.0.101")
            && !ha.has_address("198.18.0.101")
            && !hb.has_address(VIP)
    });
    assert_eq!(
        a.invalid_packets() + b.invalid_packets(),
        0.0,
        "siblings are not unknown VRIDs"
    );
    a.stop();
    eventually("B holds both", || {
        hb.has_address(VIP) && hb.has_address("198.18.0.101")
    });
}

#[test]
fn an_ipv6_instance_fails_over() {
    let mut lab = lab!();
    let (ha, hb) = (lab.host(&["2001:2::1/64"]), lab.host(&["2001:2::2/64"]));
    let v6 = |p| instance(p, "").replace(&format!("{VIP}/24"), "\"2001:2::100/64\"");
    let mut a = Node::start(&ha, &v6(150));
    let b = Node::start(&hb, &v6(100));
    eventually("A holds the IPv6 VIP", || ha.has_address("2001:2::100"));
    eventually("B follows A", || {
        b.state(0) == InstanceState::Backup && b.master_of(0).is_some()
    });
    assert!(
        b.master_of(0)
            .is_some_and(|m| m.to_string().starts_with("fe80:")),
        "link-local source"
    );
    stays("only A holds it", Duration::from_millis(300), || {
        !hb.has_address("2001:2::100")
    });
    a.kill();
    ha.set_link(false);
    let took = eventually("B takes the IPv6 VIP", || hb.has_address("2001:2::100"));
    println!("IPv6 failover after death: {took:?}");
    assert!(took <= down_interval(100) + Duration::from_millis(500));
    assert_eq!(b.invalid_packets(), 0.0, "{}", b.metrics());
}

#[test]
fn unicast_peers_elect_without_multicast() {
    let mut lab = lab!();
    let (ha, hb) = (lab.host(&["198.18.0.1/24"]), lab.host(&["198.18.0.2/24"]));
    let a = Node::start(&ha, &instance(150, "      unicast_peers: [198.18.0.2]\n"));
    let b = Node::start(&hb, &instance(100, "      unicast_peers: [198.18.0.1]\n"));
    eventually("A holds the VIP", || ha.has_address(VIP));
    eventually("B hears A by unicast", || {
        b.master_of(0) == Some("198.18.0.1".parse().unwrap())
    });
    stays("B stays backup", Duration::from_millis(500), || {
        !hb.has_address(VIP)
    });
    assert_eq!(b.invalid_packets(), 0.0, "{}", b.metrics());
    assert!(a.metric("tandem_vrrp_adverts_total{direction=\"sent\",vrrp_instance=\"vip\"}") > 3.0);

    // A third host, not among B's peers, claims the VIP with a higher priority
    // by unicast to B: counted as an unknown peer, and B stays backup.
    let hx = lab.host(&["198.18.0.9/24"]);
    let vips = [IpAddr::from(Ipv4Addr::new(198, 18, 0, 100))];
    let (src, to_b) = (
        IpAddr::from(Ipv4Addr::new(198, 18, 0, 9)),
        Ipv4Addr::new(198, 18, 0, 2),
    );
    let f = AdvertFields {
        vrid: 51,
        priority: 254,
        interval_cs: 10,
        addresses: &vips,
    };
    let mut claim = Vec::new();
    packet::encode(&f, src, to_b.into(), VrrpChecksum::PseudoHeader, &mut claim).unwrap();
    inject_to(&hx, to_b, vec![(255, claim.clone()), (255, claim)]);
    let unknown =
        "tandem_vrrp_invalid_packets_total{reason=\"unknown_peer\",vrrp_instance=\"vip\"}";
    eventually("both counted as from an unknown peer", || {
        b.metric(unknown) >= 2.0
    });
    assert_eq!(b.master_of(0), Some("198.18.0.1".parse().unwrap()));
    assert!(ha.has_address(VIP) && !hb.has_address(VIP));
}

#[test]
fn two_masters_meet_and_the_lower_one_yields_at_once() {
    let mut lab = lab!();
    let (ha, hb) = (lab.host(&["198.18.0.1/24"]), lab.host(&["198.18.0.2/24"]));
    // B starts cut off from A (its link up): both become master.
    hb.cut_off(true);
    let a = Node::start(&ha, &instance(150, ""));
    let b = Node::start(&hb, &instance(100, ""));
    eventually("both are master", || {
        a.state(0) == InstanceState::Master && b.state(0) == InstanceState::Master
    });
    hb.cut_off(false);
    eventually("B yields", || {
        b.state(0) == InstanceState::Backup && !hb.has_address(VIP)
    });
    assert!(ha.has_address(VIP));
    let conflicts = "tandem_vrrp_master_conflicts_total{vrrp_instance=\"vip\"}";
    // B always hears A's higher advert while it is master; A hears B's
    // only if B's advert got out before B yielded.
    eventually("two masters were counted", || b.metric(conflicts) >= 1.0);
    assert_eq!(a.state(0), InstanceState::Master);
}

/// Sends hand-made VRRP packets from a raw socket on `host` to the group.
fn inject(host: &test_support::netns::Host, packets: Vec<(u8, Vec<u8>)>) {
    inject_to(host, Ipv4Addr::new(224, 0, 0, 18), packets)
}

/// Sends hand-made VRRP packets `(ttl, message)` from 198.18.0.9 to `dst`.
fn inject_to(host: &test_support::netns::Host, dst: Ipv4Addr, packets: Vec<(u8, Vec<u8>)>) {
    host.spawn(move || {
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(112))).unwrap();
        s.set_header_included_v4(true).unwrap();
        s.bind_device(Some(b"eth0")).unwrap();
        for (ttl, msg) in packets {
            let mut head = [0u8; 20];
            packet::ipv4_header(Ipv4Addr::new(198, 18, 0, 9), dst, msg.len(), &mut head);
            head[8] = ttl;
            let mut p = head.to_vec();
            p.extend_from_slice(&msg);
            s.send_to(&p, &std::net::SocketAddr::from((dst, 0)).into())
                .unwrap();
        }
    })
    .join()
    .unwrap();
}

#[test]
fn every_invalid_packet_is_counted_by_reason_and_ignored() {
    let mut lab = lab!();
    let (ha, hx) = (lab.host(&["198.18.0.1/24"]), lab.host(&["198.18.0.9/24"]));
    let a = Node::start(&ha, &instance(100, ""));
    eventually("A holds the VIP", || ha.has_address(VIP));
    let vips = [IpAddr::from(Ipv4Addr::new(198, 18, 0, 100))];
    let src = IpAddr::from(Ipv4Addr::new(198, 18, 0, 9));
    let dst = IpAddr::from(Ipv4Addr::new(224, 0, 0, 18));
    let advert = |vrid: u8, priority: u8, mode| {
        let f = AdvertFields {
            vrid,
            priority,
            interval_cs: 10,
            addresses: &vips,
        };
        let mut out = Vec::new();
        packet::encode(&f, src, dst, mode, &mut out).unwrap();
        out
    };
    let good = advert(51, 200, VrrpChecksum::PseudoHeader);
    let mut v2 = good.clone();
    v2[0] = 0x21;
    let mut bad_sum = good.clone();
    bad_sum[6] ^= 0xff;
    let mut not_an_advert = good.clone();
    not_an_advert[0] = 0x32;
    let mut no_addresses = good.clone();
    no_addresses[3] = 0;
    inject(
        &hx,
        vec![
            (64, good.clone()),
            (255, v2),
            (255, bad_sum),
            (255, advert(51, 200, VrrpChecksum::NoPseudoHeader)),
            (255, advert(77, 200, VrrpChecksum::PseudoHeader)),
            (255, good[..6].to_vec()),
            (255, not_an_advert),
            (255, no_addresses),
        ],
    );
    let reason = |r: &str| {
        a.metric(&format!(
            "tandem_vrrp_invalid_packets_total{{reason=\"{r}\",vrrp_instance=\"vip\"}}"
        ))
    };
    eventually("all eight counted", || a.invalid_packets() >= 8.0);
    assert_eq!(
        [
            reason("ttl"),
            reason("version"),
            reason("checksum"),
            reason("vrid"),
            reason("length"),
            reason("type"),
            reason("address_count"),
        ],
        [1.0, 1.0, 2.0, 1.0, 1.0, 1.0, 1.0],
        "{}",
        a.metrics()
    );
    // None of them, though each claimed priority 200, moved the VIP.
    assert_eq!(a.state(0), InstanceState::Master);
    assert!(ha.has_address(VIP));
}

fn mac_of(host: &test_support::netns::Host) -> String {
    let out = host.sh(&["ip", "-o", "link", "show", "eth0"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut words = text.split_whitespace();
    words.find(|w| *w == "link/ether");
    words.next().expect("a MAC address").to_owned()
}

fn neighbour(host: &test_support::netns::Host, ip: &str) -> String {
    let out = host.sh(&["ip", "neigh", "show", ip, "dev", "eth0"]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_new_master_announces_its_vips_to_the_neighbours() {
    let mut lab = lab!();
    let (ha, hb) = (
        lab.host(&["198.18.0.1/24", "2001:2::1/64"]),
        lab.host(&["198.18.0.2/24", "2001:2::2/64"]),
    );
    // B knows the VIPs at a stale, wrong MAC address: only an announcement fixes that.
    for ip in [VIP, "2001:2::100"] {
        let add = hb.sh(&[
            "ip",
            "neigh",
            "add",
            ip,
            "lladdr",
            "02:00:00:00:00:99",
            "dev",
            "eth0",
            "nud",
            "stale",
        ]);
        assert!(add.status.success(), "{add:?}");
    }
    let v6 = instance(150, "")
        .replace("name: vip", "name: vip6")
        .replace(&format!("{VIP}/24"), "\"2001:2::100/64\"");
    let _a = Node::start(&ha, &format!("{}{v6}", instance(150, "")));
    eventually("A holds both VIPs", || {
        ha.has_address(VIP) && ha.has_address("2001:2::100")
    });
    let mac = mac_of(&ha);
    eventually("B learnt the IPv4 VIP's MAC from gratuitous ARP", || {
        neighbour(&hb, VIP).contains(&mac)
    });
    eventually("B learnt the IPv6 VIP's MAC from an unsolicited NA", || {
        neighbour(&hb, "2001:2::100").contains(&mac)
    });
}

/// A `notify` line whose hooks append `echo ARGS` to `log`, per state.
fn notify_lines(log: &std::path::Path, hooks: &[(&str, &str)]) -> String {
    let hooks: Vec<String> = hooks
        .iter()
        .map(|(state, args)| {
            let command = format!("sh -c 'echo {args} >> {}'", log.display());
            format!("{state}: \"{}\"", command.replace('"', "\\\""))
        })
        .collect();
    format!("      notify: {{ {} }}\n", hooks.join(", "))
}

#[test]
fn notify_hooks_run_with_instance_and_state() {
    let mut lab = lab!();
    let ha = lab.host(&["198.18.0.1/24"]);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hooks");
    let extra = notify_lines(
        &log,
        &[("master", "M \"$0\" \"$1\""), ("backup", "B \"$0\" \"$1\"")],
    );
    let _a = Node::start(&ha, &instance(150, &extra));
    eventually("both hooks ran", || {
        std::fs::read_to_string(&log).unwrap_or_default() == "B vip backup\nM vip master\n"
    });
}

#[test]
fn a_missing_interface_is_a_fault_that_is_retried() {
    let mut lab = lab!();
    let ha = lab.host(&["198.18.0.1/24"]);
    let a = Node::start(
        &ha,
        &instance(150, "").replace("interface: eth0", "interface: eth9"),
    );
    eventually("the instance is in fault", || {
        a.state(0) == InstanceState::Fault
    });
    let why = a.status()[0]
        .fault
        .as_ref()
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(why.contains("`eth9` does not exist"), "{why}");
    assert_eq!(
        a.metric("tandem_vrrp_state{state=\"fault\",vrrp_instance=\"vip\"}"),
        1.0
    );
    // The interface appears (renamed here): the next retry starts the instance.
    ha.set_link(false);
    let r = ha.sh(&["ip", "link", "set", "eth0", "name", "eth9"]);
    assert!(r.status.success(), "{r:?}");
    let r = ha.sh(&["ip", "link", "set", "eth9", "up"]);
    assert!(r.status.success(), "{r:?}");
    eventually("it recovers and becomes master", || {
        a.state(0) == InstanceState::Master
    });
}

#[test]
fn a_masters_link_going_down_is_a_fault_that_releases_the_vip_and_it_comes_back() {
    let mut lab = lab!();
    let (ha, hb) = (lab.host(&["198.18.0.1/24"]), lab.host(&["198.18.0.2/24"]));
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hooks");
    let extra = notify_lines(&log, &[("master", "master"), ("fault", "fault")]);
    let a = Node::start(&ha, &instance(150, &extra));
    let b = Node::start(&hb, &instance(100, ""));
    eventually("A holds the VIP", || {
        ha.has_address(VIP) && a.state(0) == InstanceState::Master
    });
    eventually("B is backup", || b.state(0) == InstanceState::Backup);

    let down = Instant::now();
    ha.set_link(false);
    eventually("A is in fault and has released the VIP", || {
        a.state(0) == InstanceState::Fault && !ha.has_address(VIP)
    });
    println!("link down to fault: {:?}", down.elapsed());
    let why = a.status()[0].fault.as_ref().map(ToString::to_string);
    assert!(
        why.as_deref().unwrap_or("").contains("`eth0` is down"),
        "{why:?}"
    );
    let series = |s: &str| a.metric(&format!("{s},vrrp_instance=\"vip\"}}"));
    assert_eq!(series("tandem_vrrp_state{state=\"fault\""), 1.0);
    assert_eq!(series("tandem_vrrp_transitions_total{to=\"fault\""), 1.0);
    eventually("B takes over", || hb.has_address(VIP));
    eventually("the fault hook ran", || {
        std::fs::read_to_string(&log).unwrap_or_default() == "master\nfault\n"
    });

    // The link comes back: A starts over, hears B, and preempts it.
    ha.set_link(true);
    eventually("A is master again", || {
        a.state(0) == InstanceState::Master && ha.has_address(VIP)
    });
    eventually("B gave the VIP back", || !hb.has_address(VIP));
    assert_eq!(b.state(0), InstanceState::Backup);
    assert_eq!(series("tandem_vrrp_state{state=\"fault\""), 0.0);
}

#[test]
fn a_vip_removed_by_hand_under_a_master_is_put_back() {
    let mut lab = lab!();
    let ha = lab.host(&["198.18.0.1/24"]);
    let a = Node::start(&ha, &instance(150, ""));
    eventually("A holds the VIP", || ha.has_address(VIP));
    let restored = "tandem_vrrp_vip_restored_total{vrrp_instance=\"vip\"}";
    assert_eq!(a.metric(restored), 0.0);
    for round in 1..=2 {
        let r = ha.sh(&["ip", "addr", "del", &format!("{VIP}/24"), "dev", "eth0"]);
        assert!(r.status.success(), "{r:?}");
        let gone = Instant::now();
        eventually("the VIP is back", || ha.has_address(VIP));
        println!("VIP back after {:?}", gone.elapsed());
        eventually("counted", || a.metric(restored) == f64::from(round));
    }
    assert_eq!(a.state(0), InstanceState::Master);
    // A backup holds no VIP, so one added and removed by hand is not its to restore.
}
