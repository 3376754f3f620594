//! Test hosts in network namespaces, for what needs a real link: VRRP,
//! virtual IPs, failover.
//!
//! A [`Lab`] is one Ethernet segment: a switch namespace holding a bridge
//! (multicast snooping off, so VRRP's groups are flooded like on a plain
//! switch), and one namespace per [`Host`], each with an `eth0` veth whose
//! other end is a bridge port. Addresses come from 198.18.0.0/15 and, for
//! IPv6, 2001:2::/48 (the benchmarking ranges); no traffic leaves the lab.
//! Every name carries the process id and a counter, so parallel tests never
//! collide, and [`Lab`]'s `Drop` deletes every namespace it made (and with
//! them their links).
//!
//! Needs root. [`Lab::new`] returns `None`, after saying so loudly, when it
//! is not available, unless `TANDEM_REQUIRE_NETNS=1` (CI), which turns that
//! into a failure.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

static NEXT_LAB: AtomicU32 = AtomicU32::new(0);

/// One bridged segment with hosts on it; removed on drop.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    switch: String,
    hosts: Vec<String>,
}

/// A host on a [`Lab`]: a network namespace with `eth0` on the segment.
/// Cheap to clone; valid while its lab lives.
#[derive(Debug, Clone)]
pub struct Host {
    ns: String,
    /// The switch's namespace and this host's port on its bridge.
    switch: String,
    port: String,
}

/// Whether this process may build namespaces; `Err` says why not.
fn available() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if euid != "0" {
        return Err(format!("not root (euid {euid})"));
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("the `ip` command (iproute2) is missing".to_owned()),
    }
}

impl Lab {
    /// A new, empty segment; `test` names the caller in the skip message.
    pub fn new(test: &str) -> Option<Lab> {
        if let Err(why) = available() {
            if std::env::var("TANDEM_REQUIRE_NETNS").is_ok_and(|v| v == "1") {
                panic!("{test}: network namespaces are required (TANDEM_REQUIRE_NETNS=1) but unavailable: {why}");
            }
            eprintln!(
                "\n*** SKIPPED {test}: needs network namespaces: {why}. \
                 Run as root, or set TANDEM_REQUIRE_NETNS=1 to make this a failure. ***\n"
            );
            return None;
        }
        let n = NEXT_LAB.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("tdm{}-{n}", std::process::id());
        let switch = format!("{prefix}-sw");
        let lab = Lab {
            prefix,
            switch: switch.clone(),
            hosts: Vec::new(),
        };
        ip(&["netns", "add", &switch]);
        ip(&[
            "-n",
            &switch,
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "mcast_snooping",
            "0",
        ]);
        ip(&["-n", &switch, "link", "set", "br0", "up"]);
        Some(lab)
    }

    /// Adds a host with these addresses on `eth0` (`198.18.0.11/24`,
    /// `2001:2::11/64`); IPv6 duplicate address detection is off.
    pub fn host(&mut self, addresses: &[&str]) -> Host {
        let i = self.hosts.len();
        let ns = format!("{}-h{i}", self.prefix);
        ip(&["netns", "add", &ns]);
        self.hosts.push(ns.clone());
        let port = format!("p{i}");
        let host = Host {
            ns: ns.clone(),
            switch: self.switch.clone(),
            port: port.clone(),
        };
        // No duplicate address detection: addresses are usable at once (no procps needed).
        let dad = host.sh(&[
            "sh",
            "-c",
            "echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad && \
             echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad",
        ]);
        assert!(dad.status.success(), "turn DAD off in {ns}: {dad:?}");
        ip(&[
            "link",
            "add",
            "eth0",
            "netns",
            &ns,
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &self.switch,
        ]);
        ip(&[
            "-n",
            &self.switch,
            "link",
            "set",
            &port,
            "master",
            "br0",
            "up",
        ]);
        ip(&["-n", &ns, "link", "set", "lo", "up"]);
        ip(&["-n", &ns, "link", "set", "eth0", "up"]);
        for a in addresses {
            let mut args = vec!["-n", ns.as_str(), "addr", "add", a, "dev", "eth0"];
            if a.contains(':') {
                args.push("nodad");
            }
            ip(&args);
        }
        host
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain(std::iter::once(&self.switch)) {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Host {
    /// The namespace's name, for `ip -n` and `ip netns exec`.
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// `program` run inside this host (`ip netns exec NS program`).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns, program]);
        c
    }

    /// Runs a command inside this host and returns its output; panics when
    /// it cannot start.
    pub fn sh(&self, argv: &[&str]) -> Output {
        let (program, args) = argv.split_first().expect("a command");
        self.command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {argv:?} in {}: {e}", self.ns))
    }

    /// The addresses on `eth0`, as `ip -o addr` prints them (`198.18.0.100/24`).
    pub fn addresses(&self) -> Vec<String> {
        let out = Command::new("ip")
            .args(["-n", &self.ns, "-o", "addr", "show", "dev", "eth0"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        out.lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                w.find(|t| *t == "inet" || *t == "inet6")?;
                w.next().map(str::to_owned)
            })
            .collect()
    }

    /// Whether `ip` (without prefix) is on `eth0`.
    pub fn has_address(&self, ip: &str) -> bool {
        self.addresses()
            .iter()
            .any(|a| a.split('/').next() == Some(ip))
    }

    /// Takes `eth0` down (a dead node's link) or back up.
    pub fn set_link(&self, up: bool) {
        ip(&[
            "-n",
            &self.ns,
            "link",
            "set",
            "eth0",
            if up { "up" } else { "down" },
        ]);
    }

    /// Cuts this host off the segment (or joins it again) with its own link
    /// staying up: its port leaves the switch's bridge. A partition, where
    /// [`Host::set_link`] is a dead link.
    pub fn cut_off(&self, cut: bool) {
        let mut args = vec!["-n", &self.switch, "link", "set", &self.port];
        if cut {
            args.push("nomaster");
        } else {
            args.extend(["master", "br0"]);
        }
        ip(&args);
    }

    /// Moves the calling thread into this host's network namespace; sockets
    /// it opens afterwards (and processes it starts) live there.
    pub fn enter(&self) -> io::Result<()> {
        let f = File::open(format!("/run/netns/{}", self.ns))?;
        // SAFETY: setns only reads the descriptor, which `f` keeps open for
        // the call, and changes the calling thread's namespace, nothing else.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Runs `f` on a new thread inside this host.
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let host = self.clone();
        std::thread::spawn(move || {
            host.enter()
                .unwrap_or_else(|e| panic!("enter {}: {e}", host.ns));
            f()
        })
    }
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes; returns how
/// long it took, `None` on timeout.
pub fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs `ip ARGS` and panics with its error output when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_reach_each_other_and_threads_enter_them() {
        let Some(mut lab) = Lab::new("hosts_reach_each_other_and_threads_enter_them") else {
            return;
        };
        let a = lab.host(&["198.18.0.1/24", "2001:2::1/64"]);
        let b = lab.host(&["198.18.0.2/24"]);
        assert!(a.has_address("198.18.0.1"));
        assert!(a.has_address("2001:2::1"));
        assert!(!a.has_address("198.18.0.2"));
        // A datagram from a to b crosses the bridge.
        let rx = b
            .spawn(|| std::net::UdpSocket::bind("198.18.0.2:9999").unwrap())
            .join()
            .unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        a.spawn(|| {
            let tx = std::net::UdpSocket::bind("198.18.0.1:0").unwrap();
            tx.send_to(b"hi", "198.18.0.2:9999").unwrap();
        })
        .join()
        .unwrap();
        let mut buf = [0u8; 8];
        let (n, from) = rx.recv_from(&mut buf).unwrap();
        assert_eq!(
            (&buf[..n], from.ip().to_string().as_str()),
            (&b"hi"[..], "198.18.0.1")
        );
        // setns: the thread sees the host's eth0 and only that host's addresses.
        let dev = b
            .spawn(|| std::fs::read_to_string("/proc/thread-self/net/if_inet6").unwrap_or_default())
            .join()
            .unwrap();
        assert!(dev.contains("eth0"), "{dev}");
        let names = (lab.switch.clone(), a.ns().to_owned());
        drop(lab);
        let list = Command::new("ip").args(["netns", "list"]).output().unwrap();
        let list = String::from_utf8_lossy(&list.stdout);
        assert!(
            !list.contains(&names.0) && !list.contains(&names.1),
            "{list}"
        );
    }

    #[test]
    fn wait_for_is_bounded() {
        assert!(wait_for(Duration::from_millis(30), || false).is_none());
        assert!(wait_for(Duration::from_secs(1), || true).is_some());
    }
}
