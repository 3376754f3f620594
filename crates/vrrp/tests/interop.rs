//! tandem and keepalived (`vrrp_version 3`) in one virtual router, on a
//! bridged segment of network namespaces: each accepts the other's adverts,
//! and the VIP fails over both ways. Also decodes a captured keepalived
//! advert and checks its checksum.
//!
//! Needs root and keepalived; without keepalived the tests skip loudly,
//! unless `TANDEM_REQUIRE_KEEPALIVED=1` makes that a failure.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, stays, Node};
use socket2::{Domain, InterfaceIndexOrAddress, Protocol, Socket, Type};
use tandem_vrrp::packet::{self, VrrpChecksum};
use tandem_vrrp::{master_down_interval, InstanceState};
use test_support::netns::{wait_for, Host, Lab};

const VIP: &str = "198.18.0.100";
const KA: &str = "198.18.0.1";

/// keepalived run in the foreground in a host; killed on drop.
struct Keepalived {
    child: Child,
    dir: tempfile::TempDir,
    log: PathBuf,
}

impl Keepalived {
    fn start(host: &Host, priority: u8) -> Keepalived {
        Self::start_with(host, priority, &format!("{VIP}/24"))
    }

    fn start_with(host: &Host, priority: u8, vip: &str) -> Keepalived {
        let dir = tempfile::tempdir().expect("temporary directory");
        let conf = dir.path().join("keepalived.conf");
        std::fs::write(
            &conf,
            format!(
                "global_defs {{\n  router_id ka\n  vrrp_version 3\n  script_user root\n  enable_script_security\n}}\n\
                 vrrp_instance vip {{\n  state BACKUP\n  interface eth0\n  virtual_router_id 51\n  priority {priority}\n  \
                 advert_int 0.1\n  virtual_ipaddress {{\n    {vip}\n  }}\n}}\n"
            ),
        )
        .expect("write keepalived.conf");
        let log = dir.path().join("keepalived.log");
        let out = std::fs::File::create(&log).expect("log file");
        let child = host
            .command("keepalived")
            .args(["-n", "-l", "-D", "-P", "-f"])
            .arg(&conf)
            .arg("-p")
            .arg(dir.path().join("keepalived.pid"))
            .arg("-r")
            .arg(dir.path().join("vrrp.pid"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone log"))
            .stderr(out)
            .spawn()
            .expect("start keepalived");
        let k = Keepalived { child, dir, log };
        eventually("keepalived started", || {
            k.log().contains("Startup complete")
        });
        k
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM: keepalived resigns with priority 0 and removes its VIP.
    fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// [`Keepalived::terminate`] and wait until it has exited.
    fn stop(&mut self) {
        self.terminate();
        let exited = wait_for(Duration::from_secs(5), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        assert!(exited.is_some(), "keepalived did not stop:\n{}", self.log());
    }

    /// Dies without a word: its VRRP process and then itself get SIGKILL.
    fn kill(&mut self) {
        let vrrp = std::fs::read_to_string(self.dir.path().join("vrrp.pid")).unwrap_or_default();
        if let Ok(pid) = vrrp.trim().parse::<u32>() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Lines where keepalived complains about a packet it received.
    fn complaints(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| {
                let l = l.to_lowercase();
                [
                    "checksum",
                    "invalid",
                    "bogus",
                    "ttl",
                    "wrong",
                    "mismatch",
                    "not present",
                    "too short",
                    "malformed",
                ]
                .iter()
                .any(|w| l.contains(w))
            })
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Keepalived {
    fn drop(&mut self) {
        self.kill();
    }
}

fn keepalived_available(test: &str) -> bool {
    let found = Command::new("keepalived")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !found {
        if std::env::var("TANDEM_REQUIRE_KEEPALIVED").is_ok_and(|v| v == "1") {
            panic!(
                "{test}: keepalived is required (TANDEM_REQUIRE_KEEPALIVED=1) but not installed"
            );
        }
        eprintln!(
            "\n*** SKIPPED {test}: keepalived is not installed (apt-get install keepalived) ***\n"
        );
    }
    found
}

macro_rules! lab {
    () => {{
        if !keepalived_available(module_path!()) {
            return;
        }
        match Lab::new(module_path!()) {
            Some(lab) => lab,
            None => return,
        }
    }};
}

fn tandem(priority: u8) -> String {
    format!(
        "    - name: vip\n      interface: eth0\n      virtual_router_id: 51\n      priority: {priority}\n      advert_interval: 100ms\n      startup_delay: 0s\n      virtual_ips: [{VIP}/24]\n"
    )
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn keepalived_master_and_tandem_backup_fail_over_both_ways() {
    let mut lab = lab!();
    let (hk, ht) = (lab.host(&["198.18.0.1/24"]), lab.host(&["198.18.0.2/24"]));
    let mut ka = Keepalived::start(&hk, 150);
    eventually("keepalived holds the VIP", || hk.has_address(VIP));
    let t = Node::start(&ht, &tandem(100));
    eventually("tandem follows keepalived", || {
        t.state(0) == InstanceState::Backup && t.master_of(0) == Some(ip(KA))
    });
    stays("tandem stays backup", Duration::from_millis(600), || {
        !ht.has_address(VIP)
    });
    assert_eq!(
        t.invalid_packets(),
        0.0,
        "keepalived's adverts are valid:\n{}",
        t.metrics()
    );
    assert!(
        t.metric("tandem_vrrp_adverts_total{direction=\"received\",vrrp_instance=\"vip\"}") >= 5.0
    );

    // keepalived stops: its priority 0 hands over after tandem's Skew_Time.
    let stopped = Instant::now();
    ka.terminate();
    eventually("tandem takes over", || ht.has_address(VIP));
    let took = stopped.elapsed();
    println!("keepalived stop -> tandem master: {took:?}");
    ka.stop();
    assert!(!hk.has_address(VIP));
    assert!(
        took < Duration::from_millis(100 + 300),
        "priority 0 hands over at once: {took:?}"
    );

    // keepalived returns with the higher priority and preempts tandem.
    let ka2 = Keepalived::start(&hk, 150);
    eventually("keepalived takes the VIP back", || {
        hk.has_address(VIP) && !ht.has_address(VIP)
    });
    assert_eq!(t.state(0), InstanceState::Backup);

    // keepalived dies (link down, SIGKILL): tandem takes over within its Master_Down_Interval.
    let mut ka2 = ka2;
    hk.set_link(false);
    ka2.kill();
    let died = Instant::now();
    eventually("tandem takes over from a dead keepalived", || {
        ht.has_address(VIP)
    });
    let took = died.elapsed();
    let limit = master_down_interval(100, Duration::from_millis(100)) + Duration::from_millis(500);
    println!("keepalived death -> tandem master: {took:?} (limit {limit:?})");
    assert!(took <= limit, "{took:?}");
    assert_eq!(t.invalid_packets(), 0.0, "{}", t.metrics());
    assert!(ka.complaints().is_empty(), "{:?}", ka.complaints());
    assert!(ka2.complaints().is_empty(), "{:?}", ka2.complaints());
}

#[test]
fn tandem_master_and_keepalived_backup_fail_over_both_ways() {
    let mut lab = lab!();
    let (hk, ht) = (lab.host(&["198.18.0.1/24"]), lab.host(&["198.18.0.2/24"]));
    let mut t = Node::start(&ht, &tandem(150));
    eventually("tandem holds the VIP", || ht.has_address(VIP));
    let mut ka = Keepalived::start(&hk, 100);
    // keepalived accepts our adverts: it stays backup and never takes the VIP.
    stays("keepalived stays backup", Duration::from_secs(1), || {
        !hk.has_address(VIP) && ht.has_address(VIP)
    });
    assert!(ka.log().contains("Entering BACKUP STATE"), "{}", ka.log());
    assert!(!ka.log().contains("Entering MASTER STATE"), "{}", ka.log());

    // tandem stops gracefully: keepalived takes over on our priority 0.
    let stopped = Instant::now();
    t.stop();
    eventually("keepalived takes over", || hk.has_address(VIP));
    println!("tandem stop -> keepalived master: {:?}", stopped.elapsed());
    assert!(!ht.has_address(VIP));

    // tandem returns with the higher priority: keepalived yields to it.
    let mut t2 = Node::start(&ht, &tandem(150));
    eventually("tandem takes the VIP back", || {
        ht.has_address(VIP) && !hk.has_address(VIP)
    });
    assert_eq!(t2.state(0), InstanceState::Master);

    // tandem dies without priority 0, link down: keepalived takes over.
    t2.kill();
    ht.set_link(false);
    let died = Instant::now();
    eventually("keepalived takes over from a dead tandem", || {
        hk.has_address(VIP)
    });
    println!("tandem death -> keepalived master: {:?}", died.elapsed());
    let complaints = ka.complaints();
    assert!(
        complaints.is_empty(),
        "keepalived complained about our adverts: {complaints:?}"
    );
    assert_eq!(t2.invalid_packets(), 0.0, "{}", t2.metrics());
    ka.stop();
}

/// Receives one VRRP packet on `host` (joined to 224.0.0.18).
fn capture(host: &Host) -> Vec<u8> {
    host.spawn(|| {
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::from(112))).unwrap();
        s.bind_device(Some(b"eth0")).unwrap();
        s.join_multicast_v4_n(
            &Ipv4Addr::new(224, 0, 0, 18),
            &InterfaceIndexOrAddress::Address(Ipv4Addr::new(198, 18, 0, 2)),
        )
        .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 1500];
        let n = std::io::Read::read(&mut &s, &mut buf).expect("a VRRP packet within 5s");
        buf[..n].to_vec()
    })
    .join()
    .unwrap()
}

#[test]
fn a_captured_keepalived_advert_decodes_and_its_checksum_verifies() {
    let mut lab = lab!();
    let (hk, hc) = (lab.host(&["198.18.0.1/24"]), lab.host(&["198.18.0.2/24"]));
    let _ka = Keepalived::start(&hk, 150);
    eventually("keepalived is master", || hk.has_address(VIP));
    let raw = capture(&hc);
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    println!("captured from keepalived: {hex}");
    let (meta, msg) = packet::split_ipv4(&raw).unwrap();
    assert_eq!(meta.src, ip(KA));
    assert_eq!(meta.dst, ip("224.0.0.18"));
    assert_eq!(meta.hop_limit, 255);
    let a = packet::decode(msg, &meta, VrrpChecksum::PseudoHeader)
        .expect("valid with the pseudo-header");
    assert_eq!((a.vrid, a.priority, a.interval_cs), (51, 150, 10));
    assert_eq!(a.addresses().collect::<Vec<_>>(), vec![ip(VIP)]);
    assert!(
        packet::decode(msg, &meta, VrrpChecksum::NoPseudoHeader).is_err(),
        "keepalived 2.2.7 always includes the IPv4 pseudo-header"
    );
    // The same advert built by tandem is byte for byte keepalived's.
    let mut ours = Vec::new();
    let f = packet::AdvertFields {
        vrid: 51,
        priority: 150,
        interval_cs: 10,
        addresses: &[ip(VIP)],
    };
    packet::encode(
        &f,
        ip(KA),
        ip("224.0.0.18"),
        VrrpChecksum::PseudoHeader,
        &mut ours,
    )
    .unwrap();
    assert_eq!(ours, msg);
}

#[test]
fn ipv6_adverts_interoperate_both_ways() {
    let mut lab = lab!();
    let (hk, ht) = (lab.host(&["2001:2::1/64"]), lab.host(&["2001:2::2/64"]));
    let v6 = |p| tandem(p).replace(&format!("{VIP}/24"), "\"2001:2::100/64\"");
    // keepalived master, tandem backup.
    let mut ka = Keepalived::start_with(&hk, 150, "2001:2::100/64");
    eventually("keepalived holds the IPv6 VIP", || {
        hk.has_address("2001:2::100")
    });
    let mut t = Node::start(&ht, &v6(100));
    eventually("tandem follows keepalived", || {
        t.state(0) == InstanceState::Backup
            && t.master_of(0)
                .is_some_and(|m| m.to_string().starts_with("fe80:"))
    });
    stays("tandem stays backup", Duration::from_millis(500), || {
        !ht.has_address("2001:2::100")
    });
    assert_eq!(t.invalid_packets(), 0.0, "{}", t.metrics());
    // keepalived leaves: tandem takes over; keepalived returns as a backup below tandem.
    ka.stop();
    eventually("tandem takes over", || ht.has_address("2001:2::100"));
    let mut ka = Keepalived::start_with(&hk, 100, "2001:2::100/64");
    stays(
        "keepalived accepts tandem as master",
        Duration::from_secs(1),
        || !hk.has_address("2001:2::100") && ht.has_address("2001:2::100"),
    );
    t.stop();
    eventually("keepalived takes over", || hk.has_address("2001:2::100"));
    let complaints = ka.complaints();
    assert!(complaints.is_empty(), "{complaints:?}");
    ka.stop();
}
